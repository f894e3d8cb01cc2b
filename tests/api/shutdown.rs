//! Graceful shutdown of the real binary, by a real signal: under keep-alive load nobody is
//! reset or left without an answer, `/readyz` says `draining` while troupe drains, a tus
//! PATCH cut by the shutdown timeout keeps its bytes, SIGINT skips the drain.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::helpers::{
    ends_unanswered, send_partial, Backend, Failure, KeepAlive, PgTestDb, RunningBinary, Stub,
};

/// Long enough for any shutdown here; none takes more than a few seconds.
const EXIT_WAIT: Duration = Duration::from_secs(60);

/// What the load clients saw.
#[derive(Default)]
struct Seen {
    answered: usize,
    /// Answers that closed their connection (`Connection: close`).
    closing: usize,
    failures: Vec<(String, Failure)>,
    /// Answers with a status the request should never get.
    wrong: Vec<String>,
}

/// One keep-alive client behind a load balancer: it sends requests back to back on its
/// connection, and opens a new one when an answer closes it, for as long as the balancer
/// keeps troupe in rotation. (Once troupe is out of rotation no new connection goes to it,
/// as in a rolling restart: a connection opened in the very instant a listener closes is
/// reset by the kernel, whatever the server does.)
fn load_client(
    addr: std::net::SocketAddr,
    user_path: String,
    n: usize,
    in_rotation: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let mut client = KeepAlive::new(addr);
    let give_up = Instant::now() + EXIT_WAIT;
    for i in 0.. {
        if (!client.is_connected() && !in_rotation.load(Ordering::SeqCst))
            || Instant::now() > give_up
        {
            return;
        }
        let email = format!("load-{n}-{i}@example.com");
        let body = format!(r#"{{"name":"Load","email":"{email}"}}"#);
        let (label, sent, expected) = match i % 4 {
            0 => ("GET /ping", client.send("GET", "/ping", &[], b""), 200),
            1 => (
                "GET /users/{id}",
                client.send("GET", &user_path, &[], b""),
                200,
            ),
            2 => (
                "POST /users",
                client.send(
                    "POST",
                    "/users",
                    &[("Content-Type", "application/json")],
                    body.as_bytes(),
                ),
                201,
            ),
            _ => (
                "GET /healthz",
                client.send("GET", "/healthz", &[], b""),
                200,
            ),
        };
        let mut seen = seen.lock().unwrap();
        match sent {
            Ok(answer) => {
                seen.answered += 1;
                if answer.closes() {
                    seen.closing += 1;
                }
                if answer.status != expected {
                    seen.wrong.push(format!("{label}: {}", answer.status));
                }
            }
            Err(failure) => {
                seen.failures.push((label.to_owned(), failure));
                return;
            }
        }
    }
}

/// The balancer's health check: `/readyz` every 50 ms on a fresh connection; takes troupe
/// out of rotation at the first `draining`, and answers that answer.
fn health_check(addr: std::net::SocketAddr, in_rotation: Arc<AtomicBool>) -> serde_json::Value {
    let deadline = Instant::now() + EXIT_WAIT;
    while Instant::now() < deadline {
        let answer = KeepAlive::new(addr)
            .send("GET", "/readyz", &[("Connection", "close")], b"")
            .expect("the health check got no answer while troupe was in rotation");
        if answer.status == 503 && answer.json()["code"] == "draining" {
            in_rotation.store(false, Ordering::SeqCst);
            let mut body = answer.json();
            body["status_code"] = answer.status.into();
            body["retry_after"] = answer.header("retry-after").unwrap_or_default().into();
            return body;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("/readyz never said draining");
}

#[test]
fn sigterm_under_keep_alive_load_drains_and_nobody_is_reset_or_left_unanswered() {
    let dir = tempfile::tempdir().unwrap();
    // A request that outlasts the drain: in flight when the listener closes, it finishes.
    let upstream = Stub::start();
    let slow = format!("slow={}", upstream.url("delay=2500"));
    let mut bin = RunningBinary::start(
        dir.path(),
        &[
            ("TROUPE_WORKERS", "2"),
            ("TROUPE_DRAIN_MS", "1500"),
            ("TROUPE_SHUTDOWN_TIMEOUT_MS", "20000"),
            ("TROUPE_UPSTREAMS", &slow),
        ],
    );
    let addr = bin.socket_addr();
    let user = KeepAlive::new(addr)
        .send(
            "POST",
            "/users",
            &[("Content-Type", "application/json")],
            br#"{"name":"Kept","email":"kept@example.com"}"#,
        )
        .unwrap();
    assert_eq!(user.status, 201);
    let user_path = format!("/users/{}", user.json()["id"]);

    let in_rotation = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients: Vec<_> = (0..8)
        .map(|n| {
            let (path, rotation, seen) = (user_path.clone(), in_rotation.clone(), seen.clone());
            thread::spawn(move || load_client(addr, path, n, rotation, seen))
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let before = seen.lock().unwrap().answered;
    assert!(before > 0, "no load before the signal");

    bin.signal(libc::SIGTERM);
    let long = thread::spawn(move || {
        KeepAlive::new(addr).send("GET", "/aggregate?sources=slow", &[], b"")
    });
    let checked = {
        let rotation = in_rotation.clone();
        thread::spawn(move || health_check(addr, rotation))
    };
    let draining = checked.join().unwrap();
    for client in clients {
        client.join().unwrap();
    }
    let long = long.join().unwrap();
    let status = bin.wait_exit(EXIT_WAIT).expect("troupe did not exit");

    assert_eq!(status.code(), Some(0), "{}", bin.lines().join("\n"));
    // Readiness flipped at once, while troupe still served.
    assert_eq!(draining["status_code"], 503, "{draining}");
    assert_eq!(draining["code"], "draining", "{draining}");
    assert_eq!(draining["status"], "draining", "{draining}");
    assert_eq!(draining["retry_after"], "1", "{draining}");
    let seen = seen.lock().unwrap();
    assert!(
        seen.failures.is_empty(),
        "requests failed: {:?}",
        seen.failures
    );
    assert!(seen.wrong.is_empty(), "wrong answers: {:?}", seen.wrong);
    assert!(seen.answered > before, "nothing answered after the signal");
    // Every client was told to go by an answer that closed its connection.
    assert!(seen.closing >= 8, "{} closing answers", seen.closing);
    // The request in flight when the listener closed finished, and closed its connection.
    let long = long.expect("the slow request got no answer");
    assert_eq!(long.status, 200, "{:?}", long.json());
    assert!(long.closes());
    assert!(long.json().get("slow").is_some(), "{:?}", long.json());
    // Nothing listens any more.
    assert_eq!(
        TcpStream::connect(addr).map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    // One line per phase, in order.
    bin.wait_for_line("exiting with status 0", Duration::from_secs(5))
        .expect("no exit line");
    let at = bin.line_positions(&[
        "SIGTERM: draining for 1500 ms",
        "listener closed; ",
        "requests in flight finished in ",
        "actors stopped in ",
        "exiting with status 0",
    ]);
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "phases out of order: {at:?}"
    );
    assert!(!bin.lines().iter().any(|l| l.contains("requests cut")));
}

#[test]
fn sigint_shuts_down_at_once_without_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    // A drain far longer than this test may take: only skipping it lets troupe exit.
    let mut bin = RunningBinary::start(dir.path(), &[("TROUPE_DRAIN_MS", "600000")]);
    let mut idle = KeepAlive::new(bin.socket_addr());
    assert_eq!(idle.send("GET", "/ping", &[], b"").unwrap().status, 200);

    bin.signal(libc::SIGINT);
    let status = bin.wait_exit(Duration::from_secs(30));

    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        bin.lines().join("\n")
    );
    bin.wait_for_line("exiting with status 0", Duration::from_secs(5))
        .expect("no exit line");
    let at = bin.line_positions(&[
        "SIGINT: shutting down without a drain",
        "listener closed; ",
        "requests in flight finished in ",
        "actors stopped in ",
        "exiting with status 0",
    ]);
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "phases out of order: {at:?}"
    );
    assert!(!bin.lines().iter().any(|l| l.contains("draining for")));
}

/// A PATCH holding part of its body when SIGTERM comes, past a short shutdown timeout: it
/// is cut, and its bytes are kept. A new binary on the same files and database reports them.
async fn a_patch_cut_by_the_shutdown_keeps_its_bytes(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (url, _pg) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("t.db").display()),
            None,
        ),
        Backend::Postgres => {
            let Some(pg) = PgTestDb::create().await else {
                return;
            };
            (pg.url.clone(), Some(pg))
        }
    };
    let vars = [
        ("DATABASE_URL", url.as_str()),
        ("TROUPE_DRAIN_MS", "200"),
        ("TROUPE_SHUTDOWN_TIMEOUT_MS", "500"),
    ];
    let mut bin = RunningBinary::start(dir.path(), &vars);
    let tus = [("Tus-Resumable", "1.0.0")];
    let created = KeepAlive::new(bin.socket_addr())
        .send(
            "POST",
            "/files/",
            &[("Tus-Resumable", "1.0.0"), ("Upload-Length", "100000")],
            b"",
        )
        .unwrap();
    assert_eq!(created.status, 201);
    let location = created.header("location").unwrap().to_owned();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sent = 30_000;
    let mut patch = send_partial(
        bin.socket_addr(),
        "PATCH",
        &location,
        &[
            ("Tus-Resumable", "1.0.0"),
            ("Upload-Offset", "0"),
            ("Content-Type", "application/offset+octet-stream"),
            ("x-request-id", "cut-patch"),
        ],
        data.len(),
        &data[..sent],
    );
    // Loopback delivers the bytes at once; give the handler time to read them.
    thread::sleep(Duration::from_millis(500));

    bin.signal(libc::SIGTERM);
    let status = bin.wait_exit(EXIT_WAIT).expect("troupe did not exit");

    assert_eq!(status.code(), Some(0), "{}", bin.lines().join("\n"));
    assert!(ends_unanswered(&mut patch, Duration::from_secs(5)));
    bin.wait_for_line("exiting with status 0", Duration::from_secs(5))
        .expect("no exit line");
    let cut = bin
        .wait_for_line("request_id=cut-patch", Duration::from_secs(1))
        .expect("no access-log line for the cut PATCH");
    assert!(
        cut.contains(" 499 ")
            && cut.contains("outcome=cut_by_shutdown")
            && cut.contains(&format!("body_bytes={sent} ")),
        "{cut}"
    );
    bin.line_positions(&["shutdown timeout of 500 ms ran out: 1 requests cut"]);
    drop(bin);

    let bin = RunningBinary::start(dir.path(), &vars);
    let head = KeepAlive::new(bin.socket_addr())
        .send("HEAD", &location, &tus, b"")
        .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("upload-offset"),
        Some(sent.to_string().as_str())
    );
    let id = location.trim_start_matches("/files/");
    let on_disk = std::fs::read(dir.path().join("data/uploads/tus").join(id)).unwrap();
    assert_eq!(&on_disk[..sent], &data[..sent]);
    // The upload goes on from there.
    let rest = KeepAlive::new(bin.socket_addr())
        .send(
            "PATCH",
            &location,
            &[
                ("Tus-Resumable", "1.0.0"),
                ("Upload-Offset", &sent.to_string()),
                ("Content-Type", "application/offset+octet-stream"),
            ],
            &data[sent..],
        )
        .unwrap();
    assert_eq!(rest.status, 204, "{:?}", rest.json());
    assert_eq!(rest.header("upload-offset"), Some("100000"));
}

crate::both_backends!(cut_patch_keeps_its_bytes => a_patch_cut_by_the_shutdown_keeps_its_bytes);
