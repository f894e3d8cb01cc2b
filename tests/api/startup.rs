//! The binary itself: bad settings and an unreachable database stop it with one clear line;
//! with nothing set it serves on an SQLite file under ./data/.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::helpers::troupe;

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = troupe()
        .current_dir(dir.path())
        .env("TROUPE_DB_POOL_SIZE", "zero")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("TROUPE_DB_POOL_SIZE"), "{stderr}");
}

#[test]
fn an_unreachable_database_stops_start_up_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let out = troupe()
        .current_dir(dir.path())
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
}

#[test]
fn with_nothing_set_it_serves_on_an_sqlite_file_under_data_and_logs_each_request() {
    let dir = tempfile::tempdir().unwrap();
    // Port 0 only so that the test never collides with a troupe already on 8080.
    let mut child = troupe()
        .current_dir(dir.path())
        .env("TROUPE_BIND", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Lines arrive through a channel so that a missing one fails the test instead of
    // blocking on a server that is still running.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line_with = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        None
    };
    let serving = next_line_with("serving on");
    let access = serving.as_deref().and_then(|line| {
        let port = line.split("127.0.0.1:").nth(1)?.split(' ').next()?;
        let mut conn = TcpStream::connect(format!("127.0.0.1:{port}")).ok()?;
        conn.write_all(
            b"GET /ping HTTP/1.1\r\nHost: x\r\nx-request-id: probe-42\r\nConnection: close\r\n\r\n",
        )
        .ok()?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).ok()?;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("x-request-id: probe-42"), "{answer}");
        next_line_with("request_id=probe-42")
    });
    let _ = child.kill();
    let _ = child.wait();
    let serving = serving.expect("the server never said it was serving");
    assert!(serving.contains("sqlite"), "{serving}");
    assert!(dir.path().join("data/troupe.db").exists());
    // The access log line: method, path, status, latency and the request id.
    let access = access.expect("no access-log line for the request");
    assert!(access.contains("GET /ping 200 "), "{access}");
    assert!(access.contains("ms request_id=probe-42"), "{access}");
}
