//! Rate limits over HTTP: 429 `rate_limited` with `Retry-After` past the burst, back after
//! the wait, per key or per address, `X-Forwarded-For` believed only from a trusted proxy,
//! the public routes exempt, and the CORS headers on a 429.

use std::time::Duration;

use awc::http::Method;
use troupe::auth::{entry_line, Scopes};

use crate::both_backends;
use crate::helpers::{header, spawn_app_with, Backend, Reply, TestApp};

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Reply {
    app.send(Method::GET, path, headers, vec![]).await
}

async fn limited_after_the_burst_and_back_after_the_wait(backend: Backend) {
    let vars = [("TROUPE_RATE_LIMIT", "1/s"), ("TROUPE_RATE_BURST", "2")];
    let Some(app) = spawn_app_with(backend, &vars).await else {
        return;
    };
    for _ in 0..2 {
        assert_eq!(get(&app, "/users", &[]).await.0, 200);
    }
    let (status, h, json) = get(&app, "/users", &[]).await;
    assert_eq!(status, 429, "{json}");
    assert_eq!(json["error"]["code"], "rate_limited", "{json}");
    assert_eq!(header(&h, "retry-after"), "1");
    // The public routes are not counted, nor refused.
    for _ in 0..5 {
        assert_eq!(get(&app, "/ping", &[]).await.0, 200);
        assert_eq!(get(&app, "/healthz", &[]).await.0, 200);
    }
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&app, "/users", &[]).await.0, 200);
}

const ALICE: &str = "alice-rate-key-0123456789abcdefghijk";
const BOB: &str = "bob-rate-key-0123456789abcdefghijklmn";

async fn each_key_has_its_own_bucket(backend: Backend) {
    let users = Scopes::parse("users:read").unwrap();
    let keys = [
        entry_line("alice", users, ALICE),
        entry_line("bob", users, BOB),
    ]
    .join(",");
    let vars = [
        ("TROUPE_API_KEYS", keys.as_str()),
        ("TROUPE_RATE_LIMIT", "1/m"),
        ("TROUPE_RATE_BURST", "2"),
        ("TROUPE_CORS_ORIGINS", "https://app.example.com"),
    ];
    let Some(app) = spawn_app_with(backend, &vars).await else {
        return;
    };
    let alice = format!("Bearer {ALICE}");
    let bob = format!("Bearer {BOB}");
    let origin = ("Origin", "https://app.example.com");
    for _ in 0..2 {
        assert_eq!(
            get(&app, "/users", &[("Authorization", &alice)]).await.0,
            200
        );
    }
    let (status, h, _) = get(&app, "/users", &[("Authorization", &alice), origin]).await;
    assert_eq!(status, 429);
    let wait: u64 = header(&h, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        "https://app.example.com"
    );
    // Bob's key, and a request without a key (counted by address), are not Alice's.
    assert_eq!(get(&app, "/users", &[("Authorization", &bob)]).await.0, 200);
    assert_eq!(get(&app, "/users", &[]).await.0, 401);
}

async fn forwarded_for_counts_only_from_a_trusted_proxy(backend: Backend) {
    let limit = [("TROUPE_RATE_LIMIT", "1/m"), ("TROUPE_RATE_BURST", "1")];
    // Untrusted: whatever X-Forwarded-For says, the client is the peer.
    let Some(app) = spawn_app_with(backend, &limit).await else {
        return;
    };
    let from = |ip: &'static str| [("X-Forwarded-For", ip)];
    assert_eq!(get(&app, "/users", &from("203.0.113.1")).await.0, 200);
    assert_eq!(get(&app, "/users", &from("203.0.113.2")).await.0, 429);
    drop(app);
    // Trusted: the right-most untrusted entry is the client.
    let vars = [
        limit[0],
        limit[1],
        ("TROUPE_TRUSTED_PROXIES", "127.0.0.1/32"),
    ];
    let Some(app) = spawn_app_with(backend, &vars).await else {
        return;
    };
    assert_eq!(get(&app, "/users", &from("203.0.113.1")).await.0, 200);
    assert_eq!(get(&app, "/users", &from("203.0.113.1")).await.0, 429);
    assert_eq!(get(&app, "/users", &from("203.0.113.2")).await.0, 200);
    let chain = [("X-Forwarded-For", "203.0.113.1, 198.51.100.7")];
    assert_eq!(get(&app, "/users", &chain).await.0, 200);
}

both_backends!(
    burst => limited_after_the_burst_and_back_after_the_wait,
    per_key => each_key_has_its_own_bucket,
    forwarded_for => forwarded_for_counts_only_from_a_trusted_proxy,
);
