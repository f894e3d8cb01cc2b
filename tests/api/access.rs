//! Access control over HTTP: every route with no key, an unknown key, a key without the
//! route's scope and a key with it, on both backends; the public routes open to all;
//! `troupe hash-key`'s key accepted by the binary started with its entry, and no key in
//! that run's log.

use std::time::Duration;

use awc::http::Method;
use troupe::auth::{entry_line, Scope, Scopes};

use crate::both_backends;
use crate::helpers::{header, spawn_app_with, Backend, Reply, RunningBinary, TestApp};

/// The key of the test key holding only `scope` (its name is the scope's, `:` as `-`).
fn key_for(scope: Scope) -> String {
    format!("test-key-for-{}-0123456789abcdef", name_for(scope))
}

fn name_for(scope: Scope) -> String {
    scope.as_str().replace(':', "-")
}

/// `TROUPE_API_KEYS` with one key per scope, `admin` included.
fn one_key_per_scope() -> String {
    Scope::ALL
        .iter()
        .map(|&s| entry_line(&name_for(s), Scopes::of(&[s]), &key_for(s)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A scope other than `scope` (and other than `admin`).
fn another(scope: Scope) -> Scope {
    if scope == Scope::Fetch {
        Scope::UsersRead
    } else {
        Scope::Fetch
    }
}

const UPLOAD_ID: &str = "0b5f1f5e-8d4c-4a3b-9b7e-1c2d3e4f5a6b";

/// One request: method, path, the scope it needs, extra headers, a body.
type Call = (
    Method,
    String,
    Scope,
    Vec<(&'static str, &'static str)>,
    Vec<u8>,
);

/// Every protected route: method, path, the scope it needs, extra headers and a body.
fn protected() -> Vec<Call> {
    let json = vec![("Content-Type", "application/json")];
    let tus = vec![("Tus-Resumable", "1.0.0")];
    let user = br#"{"name":"Ada","email":"ada@example.com"}"#.to_vec();
    let up = format!("/uploads/{UPLOAD_ID}");
    vec![
        (
            Method::GET,
            "/users".into(),
            Scope::UsersRead,
            vec![],
            vec![],
        ),
        (
            Method::HEAD,
            "/users".into(),
            Scope::UsersRead,
            vec![],
            vec![],
        ),
        (
            Method::POST,
            "/users".into(),
            Scope::UsersWrite,
            json.clone(),
            user.clone(),
        ),
        (
            Method::GET,
            "/users/1".into(),
            Scope::UsersRead,
            vec![],
            vec![],
        ),
        (
            Method::PATCH,
            "/users/1".into(),
            Scope::UsersWrite,
            json.clone(),
            b"{}".to_vec(),
        ),
        (
            Method::DELETE,
            "/users/1".into(),
            Scope::UsersWrite,
            vec![],
            vec![],
        ),
        (
            Method::GET,
            "/aggregate".into(),
            Scope::Fetch,
            vec![],
            vec![],
        ),
        (
            Method::GET,
            "/parallel".into(),
            Scope::Fetch,
            vec![],
            vec![],
        ),
        (
            Method::POST,
            "/upload".into(),
            Scope::UploadsWrite,
            vec![],
            vec![],
        ),
        (
            Method::GET,
            "/uploads".into(),
            Scope::UploadsRead,
            vec![],
            vec![],
        ),
        (Method::GET, up.clone(), Scope::UploadsRead, vec![], vec![]),
        (
            Method::DELETE,
            up.clone(),
            Scope::UploadsWrite,
            vec![],
            vec![],
        ),
        (
            Method::GET,
            format!("{up}/content"),
            Scope::UploadsRead,
            vec![],
            vec![],
        ),
        (
            Method::POST,
            "/files/".into(),
            Scope::UploadsWrite,
            tus.clone(),
            vec![],
        ),
        (
            Method::HEAD,
            "/files/nope".into(),
            Scope::UploadsWrite,
            tus.clone(),
            vec![],
        ),
        (
            Method::PATCH,
            "/files/nope".into(),
            Scope::UploadsWrite,
            tus.clone(),
            vec![],
        ),
        (
            Method::DELETE,
            "/files/nope".into(),
            Scope::UploadsWrite,
            tus.clone(),
            vec![],
        ),
        (
            Method::OPTIONS,
            "/files/".into(),
            Scope::UploadsWrite,
            vec![],
            vec![],
        ),
        (
            Method::GET,
            "/metrics".into(),
            Scope::Metrics,
            vec![],
            vec![],
        ),
        // The test builds' fault route: breaking an actor is `admin`'s alone.
        (
            Method::POST,
            "/_test/fault/db/no-such-fault".into(),
            Scope::Admin,
            vec![],
            vec![],
        ),
    ]
}

async fn send(
    app: &TestApp,
    method: &Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    auth: Option<&str>,
) -> (u16, awc::http::header::HeaderMap, serde_json::Value) {
    let bearer = auth.map(|key| format!("Bearer {key}"));
    let mut all = headers.to_vec();
    if let Some(bearer) = &bearer {
        all.push(("Authorization", bearer.as_str()));
    }
    app.send(method.clone(), path, &all, body.to_vec()).await
}

async fn every_route_asks_for_its_scope(backend: Backend) {
    let keys = one_key_per_scope();
    let Some(app) = spawn_app_with(backend, &[("TROUPE_API_KEYS", &keys)]).await else {
        return;
    };
    for (method, path, scope, headers, body) in protected() {
        let what = format!("{method} {path}");
        let (status, h, json) = send(&app, &method, &path, &headers, &body, None).await;
        assert_eq!(status, 401, "{what} without a key: {json}");
        assert_eq!(
            header(&h, "www-authenticate"),
            r#"Bearer realm="troupe""#,
            "{what}"
        );
        if method != Method::HEAD {
            assert_eq!(json["error"]["code"], "unauthorized", "{what}: {json}");
        }

        let unknown = "not-a-configured-key-at-all-0123456789";
        let (status, h, json) = send(&app, &method, &path, &headers, &body, Some(unknown)).await;
        assert_eq!(status, 401, "{what} with an unknown key: {json}");
        assert_eq!(
            header(&h, "www-authenticate"),
            r#"Bearer realm="troupe", error="invalid_token""#,
            "{what}"
        );

        let other = key_for(another(scope));
        let (status, h, json) = send(&app, &method, &path, &headers, &body, Some(&other)).await;
        assert_eq!(status, 403, "{what} with a key without {scope}: {json}");
        assert!(h.get("www-authenticate").is_none(), "{what}");
        if method != Method::HEAD {
            assert_eq!(json["error"]["code"], "forbidden", "{what}: {json}");
            let message = json["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(scope.as_str()), "{what}: {json}");
        }

        for key in [key_for(scope), key_for(Scope::Admin)] {
            let (status, _, json) = send(&app, &method, &path, &headers, &body, Some(&key)).await;
            assert!(
                status != 401 && status != 403,
                "{what} with {key}: {status} {json}"
            );
        }
    }
    for path in ["/ping", "/healthz", "/readyz", "/openapi.json", "/docs/"] {
        let (status, _, json) = app.get_json(path).await;
        assert_eq!(status, 200, "{path} without a key: {json}");
    }
    // A route that does not exist is 404 with or without a key.
    let (status, _, _) = app.get_json("/nothing-here").await;
    assert_eq!(status, 404);
}

async fn a_key_does_what_its_scope_allows(backend: Backend) {
    let keys = one_key_per_scope();
    let Some(app) = spawn_app_with(backend, &[("TROUPE_API_KEYS", &keys)]).await else {
        return;
    };
    let json = [("Content-Type", "application/json")];
    let body = br#"{"name":"Ada","email":"ada@example.com"}"#;
    let writer = key_for(Scope::UsersWrite);
    let (status, _, user) = send(&app, &Method::POST, "/users", &json, body, Some(&writer)).await;
    assert_eq!(status, 201, "{user}");
    let path = format!("/users/{}", user["id"]);
    let reader = key_for(Scope::UsersRead);
    let (status, _, got) = send(&app, &Method::GET, &path, &[], b"", Some(&reader)).await;
    assert_eq!((status, &got["email"]), (200, &user["email"]), "{got}");
    // The reader may not delete it; the user is still there.
    let (status, _, _) = send(&app, &Method::DELETE, &path, &[], b"", Some(&reader)).await;
    assert_eq!(status, 403);
    let (status, _, _) = send(&app, &Method::GET, &path, &[], b"", Some(&reader)).await;
    assert_eq!(status, 200);
}

both_backends!(
    every_route => every_route_asks_for_its_scope,
    scopes_at_work => a_key_does_what_its_scope_allows,
);

/// The two lines `troupe hash-key NAME SCOPES` prints: the key, then the entry.
fn hash_key(name: &str, scopes: &str) -> (String, String) {
    let out = crate::helpers::troupe()
        .args(["hash-key", name, scopes])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    (lines[0].to_owned(), lines[1].to_owned())
}

#[test]
fn hash_key_refuses_a_bad_name_or_scope_with_exit_2() {
    for args in [
        ["hash-key", "bad name", "admin"],
        ["hash-key", "ci", "users:rule"],
    ] {
        let out = crate::helpers::troupe().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = crate::helpers::troupe()
        .args(["hash-key"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[actix::test]
async fn the_binary_accepts_a_hash_key_key_and_logs_its_name_never_the_key() {
    let (key, entry) = hash_key("ci", "users:read+users:write");
    assert!(key.len() >= 43, "{key}");
    assert!(entry.starts_with("ci:users:read+users:write:"), "{entry}");
    let (other_key, other_entry) = hash_key("viewer", "users:read");
    let dir = tempfile::tempdir().unwrap();
    let keys = format!("{entry},{other_entry}");
    let bin = RunningBinary::start(dir.path(), &[("TROUPE_API_KEYS", &keys)]);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let url = format!("{}/users", bin.address);
    let call = |auth: Option<String>, method: Method| {
        let mut req = client.request(method, &url);
        if let Some(auth) = auth {
            req = req.insert_header(("Authorization", auth));
        }
        req
    };
    let res = call(Some(format!("Bearer {key}")), Method::POST)
        .send_json(&serde_json::json!({"name": "Bo", "email": "bo@example.com"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let res = call(Some(format!("Bearer {other_key}")), Method::POST)
        .send_json(&serde_json::json!({"name": "Cy", "email": "cy@example.com"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    let res = call(Some(format!("Bearer {other_key}")), Method::GET)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let res = call(None, Method::GET).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let wrong = format!("Bearer {key}x");
    let res = call(Some(wrong), Method::GET).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);

    // An access line is written as its answer goes out: the last may trail the answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = bin.lines();
        let count = lines.iter().filter(|l| l.contains("/users ")).count();
        if count >= 5 || std::time::Instant::now() > deadline {
            break lines;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    };
    let access: Vec<&String> = lines.iter().filter(|l| l.contains("/users ")).collect();
    assert_eq!(access.len(), 5, "{lines:#?}");
    assert!(
        access[0].contains(" 201 ") && access[0].contains(" key=ci "),
        "{access:?}"
    );
    assert!(
        access[1].contains(" 403 ") && access[1].contains(" key=viewer "),
        "{access:?}"
    );
    assert!(
        access[2].contains(" 200 ") && access[2].contains(" key=viewer "),
        "{access:?}"
    );
    assert!(
        access[3].contains(" 401 ") && !access[3].contains("key="),
        "{access:?}"
    );
    assert!(
        access[4].contains(" 401 ") && !access[4].contains("key="),
        "{access:?}"
    );
    let log = lines.join("\n");
    assert!(log.contains("TROUPE_API_KEYS=ci,viewer"), "{log}");
    for secret in [&key, &other_key] {
        assert!(!log.contains(secret.as_str()), "a key in the log:\n{log}");
    }
    let digest = entry.rsplit(':').next().unwrap();
    assert!(!log.contains(digest), "a digest in the log:\n{log}");
}

#[test]
fn a_malformed_key_entry_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::helpers::troupe()
        .current_dir(dir.path())
        .env("TROUPE_API_KEYS", "ci:users:read:not-a-digest")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("TROUPE_API_KEYS") && stderr.contains("ci"),
        "{stderr}"
    );
}

#[test]
fn without_keys_it_refuses_a_non_loopback_address_naming_troupe_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::helpers::troupe()
        .current_dir(dir.path())
        .env("TROUPE_BIND", "0.0.0.0:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("TROUPE_API_KEYS"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "it started anyway");
}

#[actix::test]
async fn auth_off_serves_open_on_any_address_with_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let bin = RunningBinary::start(
        dir.path(),
        &[("TROUPE_BIND", "0.0.0.0:0"), ("TROUPE_AUTH", "off")],
    );
    let client = awc::Client::default();
    let res = client
        .get(format!("{}/users", bin.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let lines = bin.lines();
    let warnings: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("TROUPE_AUTH=off"))
        .collect();
    // The warning, and the configuration line that lists TROUPE_AUTH=off among the rest.
    assert_eq!(warnings.len(), 2, "{lines:#?}");
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("WARN") && l.contains("anyone")),
        "{lines:#?}"
    );
}

const APP_ORIGIN: &str = "https://app.example.com";

async fn preflight(app: &TestApp, path: &str, origin: &str, method: &str, headers: &str) -> Reply {
    app.send(
        Method::OPTIONS,
        path,
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", method),
            ("Access-Control-Request-Headers", headers),
        ],
        vec![],
    )
    .await
}

async fn cors_comes_before_the_key_check(backend: Backend) {
    let keys = one_key_per_scope();
    let vars = [
        ("TROUPE_API_KEYS", keys.as_str()),
        ("TROUPE_CORS_ORIGINS", APP_ORIGIN),
    ];
    let Some(app) = spawn_app_with(backend, &vars).await else {
        return;
    };
    // Preflights from the allowed origin are answered without a key.
    for (path, method, headers) in [
        ("/users", "POST", "authorization, content-type"),
        (
            "/files/",
            "POST",
            "authorization, tus-resumable, upload-length, upload-metadata",
        ),
        (
            "/files/0b5f1f5e-8d4c-4a3b-9b7e-1c2d3e4f5a6b",
            "PATCH",
            "authorization, tus-resumable, upload-offset, content-type",
        ),
    ] {
        let (status, h, json) = preflight(&app, path, APP_ORIGIN, method, headers).await;
        assert_eq!(status, 200, "{path}: {json}");
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            APP_ORIGIN,
            "{path}"
        );
        assert!(
            header(&h, "access-control-allow-methods").contains(method),
            "{path}"
        );
        let allowed = header(&h, "access-control-allow-headers").to_ascii_lowercase();
        assert!(allowed.contains("authorization"), "{path}: {allowed}");
        assert!(
            h.get("access-control-allow-credentials").is_none(),
            "{path}"
        );
    }
    // From another origin: refused, and nothing a browser could act on.
    for path in ["/users", "/files/"] {
        let (status, h, _) = preflight(
            &app,
            path,
            "https://evil.example.com",
            "POST",
            "authorization",
        )
        .await;
        assert_ne!(status, 200, "{path}");
        assert!(h.get("access-control-allow-origin").is_none(), "{path}");
    }
    // A 401 and a 403 carry the CORS headers, so the page can read why.
    let origin = [("Origin", APP_ORIGIN)];
    let (status, h, _) = app.send(Method::GET, "/users", &origin, vec![]).await;
    assert_eq!(status, 401);
    assert_eq!(header(&h, "access-control-allow-origin"), APP_ORIGIN);
    let exposed = header(&h, "access-control-expose-headers").to_ascii_lowercase();
    assert!(
        exposed.contains("www-authenticate") && exposed.contains("x-request-id"),
        "{exposed}"
    );
    let other = format!("Bearer {}", key_for(Scope::Fetch));
    let with_key = [("Origin", APP_ORIGIN), ("Authorization", other.as_str())];
    let (status, h, _) = app.send(Method::GET, "/users", &with_key, vec![]).await;
    assert_eq!(status, 403);
    assert_eq!(header(&h, "access-control-allow-origin"), APP_ORIGIN);
    // Another origin's plain request is answered, without CORS headers.
    let (status, h, _) = app
        .send(
            Method::GET,
            "/ping",
            &[("Origin", "https://evil.example.com")],
            vec![],
        )
        .await;
    assert_eq!(status, 200);
    assert!(h.get("access-control-allow-origin").is_none());
}

async fn no_cors_headers_unless_origins_are_set(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &[]).await else {
        return;
    };
    for path in ["/ping", "/users"] {
        let (status, h, _) = app
            .send(Method::GET, path, &[("Origin", APP_ORIGIN)], vec![])
            .await;
        assert_eq!(status, 200, "{path}");
        assert!(h.get("access-control-allow-origin").is_none(), "{path}");
    }
}

both_backends!(
    cors_before_keys => cors_comes_before_the_key_check,
    cors_off_by_default => no_cors_headers_unless_origins_are_set,
);
