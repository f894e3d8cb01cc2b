//! The binary itself: bad settings and an unreachable database stop it with one clear line;
//! with nothing set it serves on an SQLite file under ./data/.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn troupe() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_troupe"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TROUPE_") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

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
fn with_nothing_set_it_serves_on_an_sqlite_file_under_data() {
    let dir = tempfile::tempdir().unwrap();
    // Port 0 only so that the test never collides with a troupe already on 8080.
    let mut child = troupe()
        .current_dir(dir.path())
        .env("TROUPE_BIND", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut serving = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if line.contains("serving on") {
            serving = Some(line);
            break;
        }
        assert!(Instant::now() < deadline, "no 'serving on' line");
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = serving.expect("the server never said it was serving");
    assert!(line.contains("sqlite"), "{line}");
    assert!(dir.path().join("data/troupe.db").exists());
}
