//! The real binary's log as JSON (`TROUPE_LOG_FORMAT=json`): every line of a whole run is one
//! object with the common fields, the access line has its own, the lines an actor writes for
//! a request name it, keys are named and never shown; a bad format stops start-up; an
//! invalid `RUST_LOG` gets one warning and the default level; the text access line of a
//! client that went away names its key.

use std::thread;
use std::time::Duration;

use serde_json::Value;
use troupe::auth::{entry_line, Scope, Scopes};

use crate::helpers::{content_type, form, refused_url, send_partial, KeepAlive, RunningBinary};

const CI_KEY: &str = "json-logs-test-key-ci-0123456789abcdef";
const VIEWER_KEY: &str = "json-logs-test-key-viewer-0123456789abcdef";

/// `TROUPE_API_KEYS` with `ci` (admin) and `viewer` (users:read).
fn keys() -> String {
    format!(
        "{},{}",
        entry_line("ci", Scopes::of(&[Scope::Admin]), CI_KEY),
        entry_line("viewer", Scopes::of(&[Scope::UsersRead]), VIEWER_KEY)
    )
}

/// The lines so far, each parsed; the test fails naming a line that is not a JSON object.
fn objects(bin: &RunningBinary) -> Vec<serde_json::Map<String, Value>> {
    bin.lines()
        .iter()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(object)) => object,
            _ => panic!("a log line that is not a JSON object: {line}"),
        })
        .collect()
}

/// The access line of the request `id`, waiting for it (it may trail the answer).
fn access_line(bin: &RunningBinary, id: &str) -> serde_json::Map<String, Value> {
    let needle = format!("\"request_id\":\"{id}\"");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = objects(bin)
            .into_iter()
            .find(|o| o["target"] == "troupe::access" && o["request_id"] == id);
        if let Some(line) = found {
            return line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access line with {needle} in:\n{}",
            bin.lines().join("\n")
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_line_of_a_json_run_is_one_object_and_the_access_line_has_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let sources = format!("gone={}", refused_url());
    let mut bin = RunningBinary::start(
        dir.path(),
        &[
            ("TROUPE_LOG_FORMAT", "json"),
            ("TROUPE_API_KEYS", &keys()),
            ("TROUPE_UPSTREAMS", &sources),
        ],
    );
    let addr = bin.socket_addr();
    let ci = format!("Bearer {CI_KEY}");
    let viewer = format!("Bearer {VIEWER_KEY}");
    let mut client = KeepAlive::new(addr);
    let mut send =
        |method: &str, path: &str, id: &str, auth: &str, extra: &[(&str, &str)], body: &[u8]| {
            let mut headers = vec![
                ("x-request-id", id),
                ("user-agent", "json-logs/1.0 \"quoted\""),
            ];
            if !auth.is_empty() {
                headers.push(("authorization", auth));
            }
            headers.extend_from_slice(extra);
            client.send(method, path, &headers, body).unwrap()
        };
    assert_eq!(send("GET", "/ping", "j-ping", "", &[], b"").status, 200);
    assert_eq!(send("GET", "/users", "j-list", &ci, &[], b"").status, 200);
    assert_eq!(
        send("GET", "/users/12345", "j-404", &viewer, &[], b"").status,
        404
    );
    assert_eq!(
        send("GET", "/no/such/route", "j-unrouted", &ci, &[], b"").status,
        404
    );
    let user = br#"{"name":"Jo","email":"jo@example.com"}"#;
    let json = [("content-type", "application/json")];
    assert_eq!(
        send("POST", "/users", "j-403", &viewer, &json, user).status,
        403
    );
    assert_eq!(send("POST", "/users", "j-401", "", &json, user).status, 401);
    let upload = form("j.bin", &[7u8; 3000]);
    let multipart = content_type();
    let form_type = [("content-type", multipart.as_str())];
    let uploaded = send("POST", "/upload", "j-upload", &ci, &form_type, &upload);
    assert_eq!(uploaded.status, 201);
    let content = format!(
        "/uploads/{}/content",
        uploaded.json()["id"].as_str().unwrap()
    );
    let got = send("GET", &content, "j-download", &ci, &[], b"");
    assert_eq!((got.status, got.body.len()), (200, 3000));
    assert_eq!(send("HEAD", &content, "j-head", &ci, &[], b"").status, 200);
    assert_eq!(
        send("GET", "/aggregate", "j-502", &ci, &[], b"").status,
        502
    );
    let panicked = send(
        "POST",
        "/_test/fault/none/handler_panic",
        "j-panic",
        &ci,
        &[],
        b"",
    );
    assert_eq!(panicked.status, 500);

    // A client that goes away half-way through its upload's body, with its key.
    let part = {
        let mut part = form("gone.bin", &[1u8; 4000]);
        part.truncate(2500);
        part
    };
    let gone = send_partial(
        addr,
        "POST",
        "/upload",
        &[
            ("content-type", multipart.as_str()),
            ("authorization", ci.as_str()),
            ("x-request-id", "j-gone"),
            ("user-agent", "json-logs/1.0 \"quoted\""),
        ],
        100_000,
        &part,
    );
    thread::sleep(Duration::from_millis(300));
    drop(gone);
    let gone = access_line(&bin, "j-gone");

    // The other access lines, each with every field.
    let fields = [
        "timestamp",
        "level",
        "target",
        "message",
        "request_id",
        "method",
        "route",
        "path",
        "status",
        "duration_ms",
        "bytes_in",
        "bytes_out",
        "client",
        "user_agent",
        "key_name",
        "outcome",
    ];
    let ids = [
        "j-ping",
        "j-list",
        "j-404",
        "j-unrouted",
        "j-403",
        "j-401",
        "j-upload",
        "j-download",
        "j-head",
        "j-502",
        "j-panic",
    ];
    let mut access: std::collections::HashMap<&str, _> =
        ids.iter().map(|&id| (id, access_line(&bin, id))).collect();
    access.insert("j-gone", gone);
    for (id, line) in &access {
        for field in fields {
            assert!(line.contains_key(field), "{id}: no {field} in {line:?}");
        }
        assert_eq!(line["level"], "INFO", "{line:?}");
        assert!(
            line["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
            "{line:?}"
        );
        assert!(
            line["bytes_in"].is_u64() && line["bytes_out"].is_u64(),
            "{line:?}"
        );
        assert_eq!(line["client"], "127.0.0.1", "{line:?}");
        assert_eq!(line["user_agent"], "json-logs/1.0 \"quoted\"", "{line:?}");
    }
    let expect = |id: &str, method: &str, route: Value, path: &str, status: u16, key: Value| {
        let line = &access[id];
        assert_eq!(line["method"], method, "{line:?}");
        assert_eq!(line["route"], route, "{line:?}");
        assert_eq!(line["path"], path, "{line:?}");
        assert_eq!(line["status"], status, "{line:?}");
        assert_eq!(line["key_name"], key, "{line:?}");
    };
    let named = |name: &str| Value::from(name);
    expect("j-ping", "GET", named("/ping"), "/ping", 200, Value::Null);
    expect("j-list", "GET", named("/users"), "/users", 200, named("ci"));
    expect(
        "j-404",
        "GET",
        named("/users/{id}"),
        "/users/12345",
        404,
        named("viewer"),
    );
    // No route matched, so no access check ran: nobody to name.
    expect(
        "j-unrouted",
        "GET",
        Value::Null,
        "/no/such/route",
        404,
        Value::Null,
    );
    expect(
        "j-403",
        "POST",
        named("/users"),
        "/users",
        403,
        named("viewer"),
    );
    expect("j-401", "POST", named("/users"), "/users", 401, Value::Null);
    expect(
        "j-upload",
        "POST",
        named("/upload"),
        "/upload",
        201,
        named("ci"),
    );
    expect(
        "j-502",
        "GET",
        named("/aggregate"),
        "/aggregate",
        502,
        named("ci"),
    );
    expect(
        "j-gone",
        "POST",
        named("/upload"),
        "/upload",
        499,
        named("ci"),
    );
    assert_eq!(
        access["j-upload"]["bytes_in"],
        upload.len(),
        "{:?}",
        access["j-upload"]
    );
    assert_eq!(
        access["j-403"]["bytes_in"], 0,
        "read nothing of a refused body"
    );
    assert!(access["j-upload"]["bytes_out"].as_u64() > Some(0));
    assert_eq!(
        access["j-ping"]["bytes_out"],
        br#"{"message":"pong"}"#.len()
    );
    assert_eq!(access["j-gone"]["outcome"], "client_gone");
    assert_eq!(access["j-gone"]["bytes_in"], part.len());
    assert_eq!(access["j-gone"]["bytes_out"], 0);
    assert_eq!(access["j-ping"]["outcome"], Value::Null);
    assert_eq!(access["j-download"]["bytes_out"], 3000);
    assert_eq!(access["j-download"]["route"], "/uploads/{id}/content");
    assert_eq!(access["j-head"]["bytes_out"], 0);

    // The lines written for a request besides its access line name it: the fan-out
    // actor's line about the failed source, and each 5xx's cause.
    let lines = objects(&bin);
    let of = |id: &str| -> Vec<&serde_json::Map<String, Value>> {
        lines
            .iter()
            .filter(|o| o.get("request_id") == Some(&Value::from(id)))
            .filter(|o| o["target"] != "troupe::access")
            .collect()
    };
    let failed = of("j-502");
    assert!(
        failed
            .iter()
            .any(|o| o["target"] == "troupe::fetch::call" && o["level"] == "WARN"),
        "no line from the fan-out actor naming the request: {failed:?}"
    );
    assert!(
        failed.iter().any(|o| o["message"]
            .as_str()
            .is_some_and(|m| m.contains("answered 502 upstream_error"))),
        "{failed:?}"
    );
    let panic_cause = of("j-panic");
    assert!(
        panic_cause.iter().any(|o| o["level"] == "ERROR"
            && o["message"]
                .as_str()
                .is_some_and(|m| m.contains("answered 500 internal"))),
        "{panic_cause:?}"
    );
    // The panic itself, which the default hook would print as plain text.
    assert!(
        lines.iter().any(|o| o["target"] == "troupe::panic"
            && o["message"]
                .as_str()
                .is_some_and(|m| m.contains("injected panic in an HTTP handler"))),
        "no JSON line for the panic"
    );

    // Shut down: the whole run, start to exit, is JSON.
    bin.signal(libc::SIGINT);
    let status = bin
        .wait_exit(Duration::from_secs(30))
        .expect("still running");
    assert!(status.success(), "{status:?}");
    bin.wait_for_line("exiting with status 0", Duration::from_secs(5))
        .expect("no last line");
    let lines = objects(&bin);
    for needle in [
        "configuration: ",
        "serving on",
        "SIGINT",
        "exiting with status 0",
    ] {
        assert!(
            lines
                .iter()
                .any(|o| o["message"].as_str().is_some_and(|m| m.contains(needle))),
            "no line with {needle:?}"
        );
    }
    for line in &lines {
        let stamp = line["timestamp"].as_str().unwrap_or_default();
        let parsed = chrono::DateTime::parse_from_rfc3339(stamp);
        assert!(
            parsed.is_ok_and(|t| t.offset().local_minus_utc() == 0) && stamp.ends_with('Z'),
            "not an RFC 3339 UTC timestamp: {line:?}"
        );
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                .contains(&line["level"].as_str().unwrap_or("")),
            "{line:?}"
        );
        assert!(
            line["target"].is_string() && line["message"].is_string(),
            "{line:?}"
        );
    }
    let log = bin.lines().join("\n");
    for secret in [CI_KEY, VIEWER_KEY] {
        assert!(!log.contains(secret), "a key in the log:\n{log}");
        let entry = entry_line("x", Scopes::of(&[Scope::Admin]), secret);
        let digest = entry.rsplit(':').next().unwrap();
        assert!(!log.contains(digest), "a key's digest in the log:\n{log}");
    }
}

#[test]
fn a_bad_log_format_stops_start_up_with_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::helpers::troupe()
        .current_dir(dir.path())
        .env("TROUPE_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        "troupe: invalid configuration: TROUPE_LOG_FORMAT: expected text (the default) or json, got \"xml\"",
    );
    assert!(!dir.path().join("data").exists(), "it started anyway");
}

#[test]
fn an_invalid_rust_log_gets_one_warning_and_the_default_level() {
    let dir = tempfile::tempdir().unwrap();
    // `lots` would be read as a module name, silencing every line; the server still says
    // it serves (`start` waits for that line) and logs its requests.
    let bin = RunningBinary::start(dir.path(), &[("RUST_LOG", "lots")]);
    let mut client = KeepAlive::new(bin.socket_addr());
    let ping = client
        .send("GET", "/ping", &[("x-request-id", "lots-ping")], b"")
        .unwrap();
    assert_eq!(ping.status, 200);
    bin.wait_for_line("request_id=lots-ping", Duration::from_secs(10))
        .expect("no access line at the default level");
    let lines = bin.lines();
    let warnings: Vec<&String> = lines.iter().filter(|l| l.contains("RUST_LOG")).collect();
    assert_eq!(warnings.len(), 1, "{lines:#?}");
    assert!(
        warnings[0].contains("WARN")
            && warnings[0].contains("\"lots\" is not a level")
            && warnings[0].contains("logging at info"),
        "{}",
        warnings[0]
    );
}

#[test]
fn a_valid_rust_log_still_filters() {
    let dir = tempfile::tempdir().unwrap();
    let mut bin = RunningBinary::start(
        dir.path(),
        &[
            ("RUST_LOG", "info,troupe::access=off"),
            ("TROUPE_LOG_FORMAT", "json"),
        ],
    );
    let mut client = KeepAlive::new(bin.socket_addr());
    for id in ["quiet-1", "quiet-2"] {
        let ping = client
            .send("GET", "/ping", &[("x-request-id", id)], b"")
            .unwrap();
        assert_eq!(ping.status, 200);
    }
    // Every line of the run is in once it has said its last.
    bin.signal(libc::SIGINT);
    assert!(bin
        .wait_exit(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    bin.wait_for_line("exiting with status 0", Duration::from_secs(5))
        .expect("no last line");
    let lines = objects(&bin);
    assert!(lines.len() > 5, "{lines:?}");
    assert!(
        lines.iter().all(|o| o["target"] != "troupe::access"),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|o| !o["message"]
            .as_str()
            .is_some_and(|m| m.contains("RUST_LOG"))),
        "a warning about a valid RUST_LOG: {lines:?}"
    );
}

#[test]
fn the_text_line_of_a_client_gone_mid_body_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let bin = RunningBinary::start(dir.path(), &[("TROUPE_API_KEYS", &keys())]);
    let auth = format!("Bearer {CI_KEY}");
    let mut part = form("gone.bin", &[1u8; 4000]);
    part.truncate(2500);
    let gone = send_partial(
        bin.socket_addr(),
        "POST",
        "/upload",
        &[
            ("content-type", content_type().as_str()),
            ("authorization", auth.as_str()),
            ("x-request-id", "text-gone"),
        ],
        100_000,
        &part,
    );
    thread::sleep(Duration::from_millis(300));
    drop(gone);
    let line = bin
        .wait_for_line("request_id=text-gone", Duration::from_secs(10))
        .expect("no access line");
    let expected = format!(
        "ms outcome=client_gone body_bytes={} key=ci request_id=text-gone",
        part.len()
    );
    assert!(
        line.contains("POST /upload 499 ") && line.ends_with(&expected),
        "{line}"
    );
    assert!(!bin.lines().join("\n").contains(CI_KEY));
}
