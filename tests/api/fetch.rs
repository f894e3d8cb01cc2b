//! `/aggregate` and `/parallel` over HTTP against real upstream servers on loopback, with
//! every fault. Fetch does not touch the database: SQLite only.

use std::time::{Duration, Instant};

use awc::http::Method;

use crate::helpers::{
    header, refused_url, request_id, spawn_app_with, troupe, Backend, Event, Stub, TestApp,
};

/// The app with `TROUPE_UPSTREAMS` built from `sources` and `vars` on top.
async fn app_with(sources: &[(&str, String)], vars: &[(&str, &str)]) -> TestApp {
    let upstreams = sources
        .iter()
        .map(|(name, url)| format!("{name}={url}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut all = vec![("TROUPE_UPSTREAMS", upstreams.as_str())];
    all.extend_from_slice(vars);
    spawn_app_with(Backend::Sqlite, &all).await.unwrap()
}

#[actix_web::test]
async fn aggregate_answers_the_seed_shape_when_every_source_answers() {
    let stub = Stub::start();
    let app = app_with(
        &[("a", stub.url("tag=a")), ("b", stub.url("tag=b&delay=50"))],
        &[],
    )
    .await;

    let (status, headers, body) = app
        .send(
            Method::GET,
            "/aggregate",
            &[("x-request-id", "trace-42")],
            vec![],
        )
        .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({
            "a": {"tag": "a", "status": 200},
            "b": {"tag": "b", "status": 200},
        })
    );
    assert_eq!(header(&headers, "x-aggregate-complete"), "true");
    assert!(header(&headers, "content-type").starts_with("application/json"));
    // One id follows the request to every source.
    assert_eq!(stub.request_id("tag=a").as_deref(), Some("trace-42"));
    assert_eq!(stub.request_id("tag=b").as_deref(), Some("trace-42"));
}

#[actix_web::test]
async fn parallel_answers_results_in_configured_order_or_the_requested_one() {
    let stub = Stub::start();
    // The first source is the slower one: the order is the configuration's, not arrival's.
    let app = app_with(
        &[
            ("second", stub.url("tag=2&delay=80")),
            ("first", stub.url("tag=1")),
        ],
        &[],
    )
    .await;

    let (status, _, body) = app.parallel("").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"results": [
            {"tag": "2", "status": 200},
            {"tag": "1", "status": 200},
        ]})
    );

    let (status, _, body) = app.parallel("sources=first,second").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["tag"], "1");
    assert_eq!(body["results"][1]["tag"], "2");

    let (status, _, body) = app.aggregate("sources=first").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"first": {"tag": "1", "status": 200}})
    );
}

#[actix_web::test]
async fn aggregate_marks_a_partial_answer_incomplete_with_a_stable_code_per_failed_source() {
    let stub = Stub::start();
    let app = app_with(
        &[
            ("ok", stub.url("tag=ok&key=secret")),
            ("slow", stub.url("delay=5000&key=secret")),
            ("hanging", stub.url("hang=1")),
            ("e500", stub.url("status=500")),
            ("e503", stub.url("status=503")),
            ("e404", stub.url("status=404")),
            ("garbage", stub.url("body=garbage")),
            ("big", stub.url("big=200000")),
            ("chunked", stub.url("chunked=200000")),
            ("closed", stub.url("close=1")),
            ("refused", refused_url()),
            ("redirect", stub.url("redirect=1")),
        ],
        &[
            ("TROUPE_UPSTREAM_TIMEOUT_MS", "700"),
            ("TROUPE_UPSTREAM_MAX_BYTES", "65536"),
        ],
    )
    .await;

    let started = Instant::now();
    let (status, headers, body) = app.aggregate("").await;
    let elapsed = started.elapsed();

    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-aggregate-complete"), "false");
    assert_eq!(body["ok"]["tag"], "ok");
    let errors = body["_errors"].as_object().expect("_errors");
    for (source, code) in [
        ("slow", "upstream_timeout"),
        ("hanging", "upstream_timeout"),
        ("e500", "upstream_status"),
        ("e503", "upstream_status"),
        ("e404", "upstream_status"),
        ("redirect", "upstream_status"),
        ("garbage", "upstream_invalid_json"),
        ("big", "upstream_too_large"),
        ("chunked", "upstream_too_large"),
        ("closed", "upstream_unreachable"),
        ("refused", "upstream_unreachable"),
    ] {
        assert_eq!(errors[source]["code"], code, "{source}: {body}");
        assert!(errors[source]["message"].is_string(), "{source}: {body}");
        assert!(body.get(source).is_none(), "{source} is not a success");
    }
    assert_eq!(errors.len(), 11, "{body}");
    // Every source ran to its own end, and no further: the 700 ms timeout bounds the slowest.
    assert!(elapsed < Duration::from_millis(3000), "{elapsed:?}");
    // Redirects are not followed; nothing about the sources' URLs is shown.
    assert_eq!(stub.requests("tag=redirected"), 0);
    let text = body.to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains("secret"),
        "{text}"
    );
}

#[actix_web::test]
async fn aggregate_is_502_when_every_source_fails_and_504_when_every_one_timed_out() {
    let stub = Stub::start();
    let app = app_with(
        &[
            ("bad", stub.url("status=500")),
            ("garbage", stub.url("body=garbage")),
            ("hang1", stub.url("hang=1&n=1")),
            ("hang2", stub.url("hang=1&n=2")),
        ],
        &[("TROUPE_UPSTREAM_TIMEOUT_MS", "300")],
    )
    .await;

    let (status, headers, body) = app.aggregate("sources=bad,garbage").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error");
    assert_eq!(
        body["error"]["sources"]["bad"]["code"], "upstream_status",
        "{body}"
    );
    assert_eq!(
        body["error"]["sources"]["garbage"]["code"],
        "upstream_invalid_json"
    );
    let request_id = request_id(&headers);
    assert_eq!(body["error"]["request_id"], request_id);

    let (status, _, body) = app.aggregate("sources=hang1,hang2").await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert_eq!(
        body["error"]["sources"]["hang2"]["code"],
        "upstream_timeout"
    );

    // A timeout among other failures is not "all timed out".
    let (status, _, body) = app.aggregate("sources=hang1,bad").await;
    assert_eq!(status, 502, "{body}");
}

#[actix_web::test]
async fn parallel_first_failure_answers_at_once_and_drops_the_calls_still_running() {
    let stub = Stub::start();
    let app = app_with(
        &[
            ("slow1", stub.url("delay=5000&tag=slow1")),
            ("failing", stub.url("delay=300&body=garbage")),
            ("slow2", stub.url("delay=5000&tag=slow2")),
            ("hanging", stub.url("hang=1&tag=hanging")),
        ],
        &[("TROUPE_UPSTREAM_TIMEOUT_MS", "10000")],
    )
    .await;

    let started = Instant::now();
    let (status, _, body) = app.parallel("").await;
    let elapsed = started.elapsed();

    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error");
    assert_eq!(body["error"]["source"], "failing");
    assert_eq!(
        body["error"]["sources"]["failing"]["code"],
        "upstream_invalid_json"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("failing"),
        "{body}"
    );
    // Answered soon after the failure at ~300 ms, long before the 5 s sleepers would end.
    assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2000), "{elapsed:?}");
    // The others' connections were closed, not awaited.
    for tag in ["tag=slow1", "tag=slow2", "tag=hanging"] {
        let after = stub
            .wait_dropped(tag, Duration::from_secs(3))
            .await
            .unwrap_or_else(|| panic!("{tag} never saw its connection dropped"));
        assert!(after < Duration::from_millis(2500), "{tag}: {after:?}");
    }
}

#[actix_web::test]
async fn parallel_timeout_of_one_source_is_504_naming_it() {
    let stub = Stub::start();
    let app = app_with(
        &[("ok", stub.url("tag=ok")), ("hanging", stub.url("hang=1"))],
        &[("TROUPE_UPSTREAM_TIMEOUT_MS", "300")],
    )
    .await;

    let (status, _, body) = app.parallel("").await;

    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert_eq!(body["error"]["source"], "hanging");
}

#[actix_web::test]
async fn the_request_deadline_holds_with_a_hanging_upstream() {
    let stub = Stub::start();
    // The per-source timeout alone would wait 20 s; the request's deadline is 600 ms.
    let app = app_with(
        &[("ok", stub.url("tag=ok")), ("hanging", stub.url("hang=1"))],
        &[
            ("TROUPE_UPSTREAM_TIMEOUT_MS", "20000"),
            ("TROUPE_UPSTREAM_DEADLINE_MS", "600"),
        ],
    )
    .await;

    let started = Instant::now();
    let (status, headers, body) = app.aggregate("").await;
    let elapsed = started.elapsed();

    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-aggregate-complete"), "false");
    assert_eq!(body["_errors"]["hanging"]["code"], "upstream_timeout");
    assert!(
        body["_errors"]["hanging"]["message"]
            .as_str()
            .unwrap()
            .contains("deadline"),
        "{body}"
    );
    assert!(elapsed >= Duration::from_millis(590), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    assert!(stub
        .wait_dropped("hang=1", Duration::from_secs(2))
        .await
        .is_some());
}

#[actix_web::test]
async fn a_client_that_goes_away_cancels_its_upstream_calls() {
    let stub = Stub::start();
    let app = app_with(
        &[("slow", stub.url("delay=8000&tag=slow"))],
        &[("TROUPE_UPSTREAM_TIMEOUT_MS", "20000")],
    )
    .await;
    let impatient = awc::Client::builder()
        .timeout(Duration::from_millis(300))
        .finish();

    for route in ["/aggregate", "/parallel"] {
        let err = impatient.get(app.url(route)).send().await;
        assert!(err.is_err(), "{route} answered before the client gave up");
    }

    // Both requests' upstream calls were dropped soon after their clients went.
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let drops = stub
            .events()
            .iter()
            .filter(|e| matches!(e, Event::Dropped(t, _) if t.contains("tag=slow")))
            .count();
        if drops == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "dropped calls: {drops}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn one_retry_cures_a_single_5xx_and_no_source_is_called_more_than_twice() {
    let stub = Stub::start();
    let app = app_with(
        &[
            ("flaky", stub.url("flaky=1&tag=flaky")),
            ("down", stub.url("status=503&tag=down")),
            ("notfound", stub.url("status=404&tag=notfound")),
        ],
        &[],
    )
    .await;

    let (status, headers, body) = app.aggregate("").await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-aggregate-complete"), "false");
    assert_eq!(body["flaky"]["tag"], "flaky", "{body}");
    assert_eq!(stub.requests("tag=flaky"), 2);
    assert_eq!(body["_errors"]["down"]["code"], "upstream_status");
    assert_eq!(stub.requests("tag=down"), 2, "one retry at most");
    // A 4xx will not change on a second try.
    assert_eq!(stub.requests("tag=notfound"), 1);
}

#[actix_web::test]
async fn the_breaker_opens_after_consecutive_failures_and_a_trial_closes_it() {
    let stub = Stub::start();
    let app = app_with(
        &[
            ("ok", stub.url("tag=ok")),
            ("sw", stub.url("switch=1&tag=sw")),
        ],
        &[
            ("TROUPE_UPSTREAM_BREAKER_FAILURES", "2"),
            // Long enough for the checks below to run while it is open, on a busy machine.
            ("TROUPE_UPSTREAM_BREAKER_COOLDOWN_MS", "1500"),
        ],
    )
    .await;
    stub.set_failing(true);

    for _ in 0..2 {
        let (status, _, body) = app.aggregate("").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["_errors"]["sw"]["code"], "upstream_status", "{body}");
    }
    let calls_before = stub.requests("tag=sw");

    // Open: the source fails at once without being called; readiness is not affected.
    let (status, _, body) = app.aggregate("").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["_errors"]["sw"]["code"], "circuit_open", "{body}");
    let (status, _, body) = app.parallel("sources=sw").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["sources"]["sw"]["code"], "circuit_open");
    assert_eq!(stub.requests("tag=sw"), calls_before);
    let (status, _, ready) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    let sw = &ready["components"]["upstreams"]["sw"];
    assert_eq!(sw["breaker"], "open", "{ready}");
    assert_eq!(sw["consecutive_failures"], 2, "{ready}");
    assert_eq!(ready["components"]["upstreams"]["ok"]["breaker"], "closed");

    // After the cool-down one trial goes through; it succeeds and closes the breaker.
    stub.set_failing(false);
    actix_rt::time::sleep(Duration::from_millis(1600)).await;
    let (_, _, ready) = app.get_json("/readyz").await;
    assert_eq!(
        ready["components"]["upstreams"]["sw"]["breaker"], "half_open",
        "{ready}"
    );
    let (status, headers, body) = app.aggregate("").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-aggregate-complete"), "true");
    assert_eq!(body["sw"]["tag"], "sw");
    let (_, _, ready) = app.get_json("/readyz").await;
    let sw = &ready["components"]["upstreams"]["sw"];
    assert_eq!(sw["breaker"], "closed", "{ready}");
    assert_eq!(sw["consecutive_failures"], 0);
    assert!(sw["calls"].as_u64().unwrap() >= 3, "{ready}");
    assert!(sw["latency_ms"]["p50"].as_f64().is_some(), "{ready}");
}

#[actix_web::test]
async fn a_failed_trial_opens_the_breaker_again() {
    let stub = Stub::start();
    let app = app_with(
        &[("sw", stub.url("switch=1&tag=sw"))],
        &[
            ("TROUPE_UPSTREAM_BREAKER_FAILURES", "1"),
            ("TROUPE_UPSTREAM_BREAKER_COOLDOWN_MS", "1000"),
        ],
    )
    .await;
    stub.set_failing(true);

    let (status, _, body) = app.aggregate("").await;
    assert_eq!(status, 502, "{body}");
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    let (_, _, body) = app.aggregate("").await;
    assert_eq!(body["error"]["sources"]["sw"]["code"], "upstream_status");
    let (_, _, body) = app.aggregate("").await;
    assert_eq!(body["error"]["sources"]["sw"]["code"], "circuit_open");
}

#[actix_web::test]
async fn unknown_or_malformed_source_lists_are_refused_before_any_call() {
    let stub = Stub::start();
    let app = app_with(&[("a", stub.url("tag=a")), ("b", stub.url("tag=b"))], &[]).await;

    for route in ["/aggregate", "/parallel"] {
        for query in [
            "?sources=a,nope",
            "?sources=",
            "?sources=a,a",
            "?sources=a,,b",
        ] {
            let (status, _, body) = app.get_json(&format!("{route}{query}")).await;
            assert_eq!(status, 422, "{route}{query}: {body}");
            assert_eq!(body["error"]["code"], "validation_failed");
            assert_eq!(body["error"]["fields"][0]["field"], "sources");
        }
    }
    assert_eq!(stub.requests("tag="), 0);
    // A parameter troupe does not know is ignored: `?source=a` (no s) calls every source.
    let (status, _, body) = app.get_json("/aggregate?source=a&x=1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stub.requests("tag=a"), 1);
    assert_eq!(stub.requests("tag=b"), 1);
}

#[actix_web::test]
async fn with_no_sources_configured_the_answers_are_empty() {
    let app = spawn_app_with(Backend::Sqlite, &[]).await.unwrap();

    let (status, headers, body) = app.aggregate("").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({}));
    assert_eq!(header(&headers, "x-aggregate-complete"), "true");
    let (status, _, body) = app.parallel("").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"results": []}));
}

#[actix_web::test]
async fn readyz_lists_a_dead_upstream_but_stays_ready() {
    let app = app_with(&[("dead", refused_url())], &[]).await;

    let (status, _, _) = app.aggregate("").await;
    assert_eq!(status, 502);
    let (status, _, body) = app.get_json("/readyz").await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["components"]["fetch_actor"]["state"], "up");
    let dead = &body["components"]["upstreams"]["dead"];
    assert_eq!(dead["failures"], 1, "{body}");
    assert_eq!(dead["last_error"], "upstream_unreachable");
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");
}

#[actix_web::test]
async fn https_sources_are_called_over_tls() {
    // The stub speaks plain HTTP: it records the ClientHello and closes. A build without a
    // TLS connector would never send one.
    let stub = Stub::start();
    let url = format!("https://127.0.0.1:{}/x", stub.addr.port());
    let app = app_with(&[("secure", url)], &[]).await;

    let (status, _, body) = app.aggregate("").await;

    assert_eq!(status, 502, "{body}");
    assert_eq!(
        body["error"]["sources"]["secure"]["code"],
        "upstream_unreachable"
    );
    assert!(stub.saw_tls(), "no TLS ClientHello reached the upstream");
}

#[test]
fn a_bad_upstream_entry_stops_start_up_with_one_line_naming_it_but_not_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let out = troupe()
        .current_dir(dir.path())
        .env(
            "TROUPE_UPSTREAMS",
            "a=http://127.0.0.1:1/x,b=ftp://user:secret@h/",
        )
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("TROUPE_UPSTREAMS: entry 2"), "{stderr}");
    assert!(stderr.contains("\"b\""), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

#[actix_web::test]
async fn an_https_source_signed_by_the_configured_ca_answers() {
    let (stub, ca_pem) = Stub::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let url = format!("https://127.0.0.1:{}/x?tag=secure", stub.addr.port());
    let app = app_with(
        &[("secure", url)],
        &[("TROUPE_UPSTREAM_CA_FILE", ca_file.to_str().unwrap())],
    )
    .await;

    let (status, _, body) = app.aggregate("").await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["secure"]["tag"], "secure");
    assert_eq!(stub.requests("tag=secure"), 1);
}

#[actix_web::test]
async fn an_https_source_with_an_untrusted_certificate_is_unreachable() {
    let (stub, _ca_pem) = Stub::start_tls();
    let url = format!("https://127.0.0.1:{}/x?tag=secure", stub.addr.port());
    let app = app_with(&[("secure", url)], &[]).await;

    let (status, _, body) = app.aggregate("").await;

    assert_eq!(status, 502, "{body}");
    assert_eq!(
        body["error"]["sources"]["secure"]["code"],
        "upstream_unreachable"
    );
    assert_eq!(
        stub.requests("tag=secure"),
        0,
        "no request over an untrusted TLS"
    );
}
