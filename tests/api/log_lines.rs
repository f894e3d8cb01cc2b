//! The log lines of the real binary besides failures' (`logs.rs`): the effective
//! configuration at start-up, and the access-log line of a request that got no answer.

use std::thread;
use std::time::Duration;

use crate::helpers::{send_partial, KeepAlive, RunningBinary, Stub};

#[test]
fn a_request_whose_client_goes_away_still_gets_its_access_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Stub::start();
    let slow = format!("slow={}", upstream.url("delay=5000"));
    let bin = RunningBinary::start(dir.path(), &[("TROUPE_UPSTREAMS", &slow)]);
    let addr = bin.socket_addr();

    // No body: the client hangs up while the handler waits for an upstream.
    let waiting = send_partial(
        addr,
        "GET",
        "/aggregate?sources=slow",
        &[("x-request-id", "gone-get")],
        0,
        b"",
    );
    // A body: the client hangs up half-way through a form upload.
    let form_head =
        "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n";
    let mut part = form_head.as_bytes().to_vec();
    part.extend(std::iter::repeat_n(b'z', 5000));
    let uploading = send_partial(
        addr,
        "POST",
        "/upload",
        &[
            ("Content-Type", "multipart/form-data; boundary=XyZ"),
            ("x-request-id", "gone-upload"),
        ],
        100_000,
        &part,
    );
    thread::sleep(Duration::from_millis(500));
    drop((waiting, uploading));

    let get = bin
        .wait_for_line("request_id=gone-get", Duration::from_secs(10))
        .expect("no access-log line for the GET");
    assert!(
        get.contains("GET /aggregate 499 ")
            && get.contains("ms outcome=client_gone body_bytes=0 request_id=gone-get"),
        "{get}"
    );
    let upload = bin
        .wait_for_line("request_id=gone-upload", Duration::from_secs(10))
        .expect("no access-log line for the upload");
    assert!(
        upload.contains("POST /upload 499 ")
            && upload.contains(&format!(
                "ms outcome=client_gone body_bytes={} request_id=gone-upload",
                part.len()
            )),
        "{upload}"
    );
    // A request without a body keeps the short line; one with a body says what it read.
    let mut client = KeepAlive::new(addr);
    let ping = client
        .send("GET", "/ping", &[("x-request-id", "plain-ping")], b"")
        .unwrap();
    assert_eq!(ping.status, 200);
    assert!(client.is_connected(), "the connection was not kept alive");
    let user = br#"{"name":"A","email":"a@example.com"}"#;
    let created = client
        .send(
            "POST",
            "/users",
            &[
                ("Content-Type", "application/json"),
                ("x-request-id", "plain-post"),
            ],
            user,
        )
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.json());
    let ping = bin
        .wait_for_line("request_id=plain-ping", Duration::from_secs(10))
        .unwrap();
    assert!(
        ping.contains("GET /ping 200 ") && !ping.contains("body_bytes"),
        "{ping}"
    );
    let post = bin
        .wait_for_line("request_id=plain-post", Duration::from_secs(10))
        .unwrap();
    let read = format!("ms body_bytes={} request_id=plain-post", user.len());
    assert!(
        post.contains("POST /users 201 ") && post.contains(&read),
        "{post}"
    );
}

#[test]
fn start_up_logs_the_effective_configuration_once_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let bin = RunningBinary::start(
        dir.path(),
        &[
            (
                "TROUPE_UPSTREAMS",
                "a=http://127.0.0.1:9/a?api_key=s3cr3t-value&tag=x",
            ),
            ("TROUPE_DRAIN_MS", "1234"),
        ],
    );
    let config: Vec<String> = bin
        .lines()
        .into_iter()
        .filter(|l| l.contains("configuration: "))
        .collect();
    assert_eq!(config.len(), 1, "{config:?}");
    let line = &config[0];
    assert!(!line.contains("s3cr3t"), "{line}");
    for part in [
        "DATABASE_URL=sqlite://data/troupe.db ",
        "TROUPE_DRAIN_MS=1234 ",
        "TROUPE_SHUTDOWN_TIMEOUT_MS=30000 ",
        "TROUPE_UPSTREAMS=a=http://127.0.0.1:9/a?api_key=***&tag=x ",
    ] {
        assert!(line.contains(part), "{part} not in {line}");
    }
}
