//! Three troupe processes on one PostgreSQL database and one store, behind HAProxy (the
//! committed `deploy/haproxy.cfg`), all on loopback, acting as one service: what one
//! replica writes every other reads, any replica takes any tus upload, a replica killed
//! mid-upload loses no acknowledged upload or user, and a rolling restart under load fails
//! no request.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::helpers::{
    files_under, logged_status, sha256_hex, tuspy_python, Answer, Haproxy, KeepAlive, Noise,
    Replicas, Storage,
};

const MIB: usize = 1 << 20;
/// Long enough for HAProxy to see any replica come up or go down here.
const STATE_WAIT: Duration = Duration::from_secs(30);

/// Three replicas on the shared upload directory, with `vars`, and HAProxy in front of them
/// with every replica UP; `None` when PostgreSQL or HAProxy is skipped.
async fn service(vars: &[(&str, &str)]) -> Option<(Replicas, Haproxy)> {
    let replicas = Replicas::start(3, Storage::SharedDir, vars).await?;
    let haproxy = Haproxy::start(&replicas.ports())?;
    haproxy.wait_all_up(replicas.len(), STATE_WAIT);
    Some((replicas, haproxy))
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    KeepAlive::new(addr)
        .send(method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e:?}"))
}

fn user_body(email: &str) -> String {
    format!(r#"{{"name":"Replica","email":"{email}"}}"#)
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// `POST /users` with `email`: the new user's id, and the answer.
fn create_user(addr: SocketAddr, email: &str) -> (i64, Answer) {
    let answer = send(addr, "POST", "/users", &[JSON], user_body(email).as_bytes());
    assert_eq!(answer.status, 201, "{:?}", answer.json());
    let id = answer.json()["id"].as_i64().expect("a numeric id");
    (id, answer)
}

#[actix::test]
async fn users_written_through_any_replica_are_read_through_every_other() {
    let Some((replicas, haproxy)) = service(&[]).await else {
        return;
    };
    let mut through: Vec<(String, SocketAddr)> = (0..replicas.len())
        .map(|n| (format!("troupe{}", n + 1), replicas.addr(n)))
        .collect();
    through.push(("haproxy".into(), haproxy.addr));

    let mut written = Vec::new();
    let mut served_by = BTreeSet::new();
    for (name, addr) in &through {
        for k in 0..3 {
            let email = format!("{name}-{k}@example.com");
            let (id, answer) = create_user(*addr, &email);
            if name == "haproxy" {
                served_by.insert(answer.header("x-served-by").unwrap_or_default().to_owned());
            }
            written.push((id, email));
        }
    }
    // Round robin: three writes through HAProxy went to the three replicas.
    assert_eq!(
        served_by,
        BTreeSet::from(["troupe1".into(), "troupe2".into(), "troupe3".into()]),
        "{:?}",
        haproxy.lines()
    );
    for (name, addr) in &through {
        for (id, email) in &written {
            let answer = send(*addr, "GET", &format!("/users/{id}"), &[], b"");
            assert_eq!(answer.status, 200, "user {id} through {name}");
            assert_eq!(answer.json()["email"], email.as_str(), "through {name}");
        }
        let list = send(*addr, "GET", "/users?limit=1000", &[], b"");
        assert_eq!(list.status, 200);
        let listed: BTreeSet<i64> = list.json()["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u["id"].as_i64())
            .collect();
        for (id, _) in &written {
            assert!(listed.contains(id), "{name} does not list user {id}");
        }
    }
}

const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");
const OCTETS: (&str, &str) = ("Content-Type", "application/offset+octet-stream");

/// `HEAD` of a tus upload through `addr`: its `Upload-Offset`.
fn offset_through(addr: SocketAddr, location: &str) -> usize {
    let answer = send(addr, "HEAD", location, &[TUS], b"");
    assert_eq!(answer.status, 200, "HEAD {location} through {addr}");
    answer
        .header("upload-offset")
        .and_then(|o| o.parse().ok())
        .expect("an Upload-Offset")
}

/// Every complete upload `addr` lists (`GET /uploads`), by id.
fn listed_uploads(addr: SocketAddr) -> BTreeMap<String, serde_json::Value> {
    let answer = send(addr, "GET", "/uploads?limit=1000", &[], b"");
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    answer.json()["uploads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["id"].as_str().unwrap().to_owned(), u.clone()))
        .collect()
}

#[actix::test]
async fn a_tus_upload_created_on_one_replica_is_patched_on_the_others_and_listed_by_all() {
    let Some(replicas) = Replicas::start(3, Storage::SharedDir, &[]).await else {
        return;
    };
    let data = Noise::new(12).chunk(3 * MIB + 777);
    let length = data.len().to_string();
    let created = send(
        replicas.addr(0),
        "POST",
        "/files/",
        &[
            TUS,
            ("Upload-Length", &length),
            ("Upload-Metadata", "filename cmVwbGljYXMuYmlu"),
        ],
        b"",
    );
    assert_eq!(created.status, 201, "{:?}", created.json());
    let location = created.header("location").unwrap().to_owned();
    let id = location.trim_start_matches("/files/").to_owned();

    // Replica 2, then 3, then 2 again: the last PATCH lands on a replica whose own last
    // PATCH of this upload ended elsewhere than where this one starts.
    let cuts = [0, MIB + 5, 2 * MIB + 11, data.len()];
    for (part, patcher) in [1, 2, 1].into_iter().enumerate() {
        let (from, to) = (cuts[part], cuts[part + 1]);
        let offset = from.to_string();
        let answer = send(
            replicas.addr(patcher),
            "PATCH",
            &location,
            &[TUS, OCTETS, ("Upload-Offset", &offset)],
            &data[from..to],
        );
        assert_eq!(
            answer.status,
            204,
            "PATCH {part} on replica {patcher}: {:?}",
            answer.json()
        );
        assert_eq!(
            answer.header("upload-offset"),
            Some(to.to_string().as_str())
        );
        for n in 0..replicas.len() {
            assert_eq!(
                offset_through(replicas.addr(n), &location),
                to,
                "replica {n}"
            );
        }
    }

    let sha256 = sha256_hex(&data);
    for n in 0..replicas.len() {
        let addr = replicas.addr(n);
        let meta = send(addr, "GET", &format!("/uploads/{id}"), &[], b"");
        assert_eq!(meta.status, 200, "replica {n}: {:?}", meta.json());
        assert_eq!(meta.json()["sha256"], sha256.as_str(), "replica {n}");
        assert_eq!(meta.json()["size"], data.len(), "replica {n}");
        assert_eq!(meta.json()["filename"], "replicas.bin");
        let listed = listed_uploads(addr);
        assert_eq!(
            listed.get(&id).map(|u| &u["sha256"]),
            Some(&sha256.as_str().into()),
            "replica {n}"
        );
        let content = send(addr, "GET", &format!("/uploads/{id}/content"), &[], b"");
        assert_eq!(content.status, 200);
        assert_eq!(
            sha256_hex(&content.body),
            sha256,
            "content through replica {n}"
        );
    }
}

/// The pause before each request of a load client: continuous load that leaves the cores
/// to the tests running beside it.
const LOAD_PAUSE: Duration = Duration::from_millis(2);

/// What the writers creating users during a test saw.
#[derive(Default)]
struct Writes {
    /// Users created and acknowledged (201): id and email.
    acknowledged: Vec<(i64, String)>,
    /// Answers by the replica that gave them (`X-Served-By`).
    by_replica: BTreeMap<String, usize>,
    answered: usize,
    /// Requests that got no answer, and answers that are not 2xx.
    failed: Vec<String>,
}

/// Loads `addr` until `stop`: client `n` on one keep-alive connection sending, in turn,
/// `GET /ping`, `GET {read}` and `POST /users` (`POST /users` only when `read` is `None`),
/// a request every [`LOAD_PAUSE`] or as fast as they are answered.
fn load(
    addr: SocketAddr,
    n: usize,
    read: Option<String>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Writes>>,
) {
    let mut client = KeepAlive::new(addr);
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        thread::sleep(LOAD_PAUSE);
        let email = format!("load-{n}-{i}@example.com");
        let body = user_body(&email);
        let (label, sent) = match (&read, i % 3) {
            (Some(_), 0) => (
                "GET /ping".to_owned(),
                client.send("GET", "/ping", &[], b""),
            ),
            (Some(path), 1) => (format!("GET {path}"), client.send("GET", path, &[], b"")),
            _ => (
                "POST /users".to_owned(),
                client.send("POST", "/users", &[JSON], body.as_bytes()),
            ),
        };
        let mut seen = seen.lock().unwrap();
        match sent {
            Ok(answer) => {
                seen.answered += 1;
                let by = answer.header("x-served-by").unwrap_or("none").to_owned();
                *seen.by_replica.entry(by.clone()).or_default() += 1;
                if !(200..300).contains(&answer.status) {
                    seen.failed.push(format!(
                        "{label} #{i} of client {n}: {} from {by} {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    ));
                } else if label == "POST /users" {
                    let id = answer.json()["id"].as_i64().expect("an id");
                    seen.acknowledged.push((id, email));
                }
            }
            Err(failure) => seen
                .failed
                .push(format!("{label} #{i} of client {n}: {failure:?}")),
        }
    }
}

/// Starts `clients` load clients on `addr`; answers what stops them and what they saw.
fn start_load(
    addr: SocketAddr,
    clients: usize,
    read: Option<String>,
) -> (
    Arc<AtomicBool>,
    Arc<Mutex<Writes>>,
    Vec<thread::JoinHandle<()>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Writes::default()));
    let handles = (0..clients)
        .map(|n| {
            let (read, stop, seen) = (read.clone(), stop.clone(), seen.clone());
            thread::spawn(move || load(addr, n, read, stop, seen))
        })
        .collect();
    (stop, seen, handles)
}

/// Every acknowledged user is there, read through `addr`.
fn assert_users_kept(addr: SocketAddr, acknowledged: &[(i64, String)]) {
    let mut client = KeepAlive::new(addr);
    for (id, email) in acknowledged {
        let answer = client
            .send("GET", &format!("/users/{id}"), &[], b"")
            .unwrap();
        assert_eq!(answer.status, 200, "acknowledged user {id} is missing");
        assert_eq!(answer.json()["email"], email.as_str());
    }
}

/// tuspy, unchanged, uploading `path` in `chunk`-byte PATCHes with its own retries (one a
/// second, up to ten); prints the upload's URL.
const TUSPY_SCRIPT: &str = r#"
import sys
from tusclient import client
url, path, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
uploader = client.TusClient(url).uploader(
    file_path=path, chunk_size=chunk, retries=10, retry_delay=1,
    metadata={"filename": "failover.bin"})
uploader.upload()
print(uploader.url, flush=True)
"#;

#[actix::test]
async fn tuspy_through_haproxy_survives_the_sigkill_of_the_replica_taking_its_upload() {
    let Some(python) = tuspy_python() else {
        return;
    };
    // Each upload goes at 8 MiB/s while other requests are served (the users written
    // meanwhile): slow enough to be killed in the middle of a PATCH.
    let Some((mut replicas, haproxy)) = service(&[("TROUPE_UPLOAD_SHARED_RATE_MIB", "8")]).await
    else {
        return;
    };
    let data = Noise::new(33).chunk(40 * MIB + 3);
    let source = replicas.dir.path().join("failover-source.bin");
    std::fs::write(&source, &data).unwrap();
    let script = replicas.dir.path().join("tuspy_failover.py");
    std::fs::write(&script, TUSPY_SCRIPT).unwrap();

    let (stop, writes, writers) = start_load(haproxy.addr, 2, None);
    let chunk = 8 * MIB;
    let mut tuspy = Command::new(&python)
        .arg(&script)
        .arg(format!("http://{}/files/", haproxy.addr))
        .arg(&source)
        .arg(chunk.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Inside the second PATCH (its first 8 MiB are recorded, the next ones not yet):
    // the replica writing the file is the one to kill.
    let tus_dir = replicas.dir.path().join("uploads").join("tus");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (file, size) = loop {
        let growing = files_under(&tus_dir).into_iter().find_map(|f| {
            let len = std::fs::metadata(&f).ok()?.len() as usize;
            (len >= chunk + chunk / 2).then_some((f, len))
        });
        if let Some(found) = growing {
            break found;
        }
        assert!(
            tuspy.try_wait().unwrap().is_none(),
            "tuspy ended before the kill"
        );
        assert!(Instant::now() < deadline, "the upload never reached 12 MiB");
        thread::sleep(Duration::from_millis(5));
    };
    assert!(
        size < 2 * chunk,
        "the second PATCH was already over: {size} bytes"
    );
    let victim = replicas
        .holding(&file)
        .expect("a replica is writing the upload");
    let killed = replicas.kill(victim);
    let victim_name = format!("troupe{}", victim + 1);

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = tuspy.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "tuspy never finished");
        thread::sleep(Duration::from_millis(50));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    tuspy
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    tuspy
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().unwrap();
    }
    assert!(
        status.success(),
        "tuspy failed: {stdout}\n{stderr}\nHAProxy:\n{}\nkilled {victim_name}:\n{}",
        haproxy.lines().join("\n"),
        killed.join("\n")
    );

    let id = stdout.trim().rsplit('/').next().unwrap().to_owned();
    let sha256 = sha256_hex(&data);
    let meta = send(haproxy.addr, "GET", &format!("/uploads/{id}"), &[], b"");
    assert_eq!(meta.status, 200, "{:?}", meta.json());
    assert_eq!(meta.json()["sha256"], sha256.as_str());
    assert_eq!(meta.json()["size"], data.len());
    // The PATCH cut by the kill was answered by HAProxy, not by troupe, and another
    // replica took the upload over from its recorded offset.
    let patches: Vec<String> = haproxy
        .lines()
        .into_iter()
        .filter(|l| l.contains(&format!("PATCH /files/{id}")))
        .collect();
    assert!(
        patches
            .iter()
            .any(|l| l.contains(&format!("tus/{victim_name}")) && logged_status(l) != Some("204")),
        "no cut PATCH on {victim_name}: {patches:#?}"
    );

    // Nothing acknowledged is missing, through HAProxy and through the replica brought back.
    let writes = writes.lock().unwrap();
    assert!(
        writes.acknowledged.len() > 10,
        "{} users",
        writes.acknowledged.len()
    );
    assert_users_kept(haproxy.addr, &writes.acknowledged);
    replicas.restart(victim);
    haproxy.wait_for(&victim_name, true, STATE_WAIT);
    assert_users_kept(replicas.addr(victim), &writes.acknowledged);
    for n in 0..replicas.len() {
        let listed = listed_uploads(replicas.addr(n));
        assert_eq!(
            listed.get(&id).map(|u| &u["sha256"]),
            Some(&sha256.as_str().into()),
            "replica {n}"
        );
    }
    eprintln!(
        "killed {victim_name} at {size} bytes; writers: {} answered, {} failed: {:?}",
        writes.answered,
        writes.failed.len(),
        writes.failed
    );
}

#[actix::test]
async fn a_rolling_restart_under_load_through_haproxy_fails_no_request() {
    // The drain (3 s) outlasts HAProxy's way to DOWN: inter 1 s + fastinter 250 ms, each
    // check up to timeout check 1 s.
    let Some((mut replicas, haproxy)) = service(&[("TROUPE_DRAIN_MS", "3000")]).await else {
        return;
    };
    let (seed, _) = create_user(haproxy.addr, "seed@example.com");
    let (stop, seen, clients) = start_load(haproxy.addr, 6, Some(format!("/users/{seed}")));
    thread::sleep(Duration::from_millis(500));

    let mut answered_before = Vec::new();
    for n in 0..replicas.len() {
        let name = format!("troupe{}", n + 1);
        let (status, lines) = replicas.terminate(n);
        assert_eq!(status.code(), Some(0), "{name}:\n{}", lines.join("\n"));
        // It left rotation during its drain, before its listener closed.
        let down = haproxy
            .servers()
            .into_iter()
            .filter(|s| s.server == name)
            .all(|s| s.status.starts_with("DOWN"));
        assert!(
            down,
            "{name} exited but HAProxy has it {:?}",
            haproxy.servers()
        );
        replicas.restart(n);
        haproxy.wait_for(&name, true, STATE_WAIT);
        answered_before.push(
            seen.lock()
                .unwrap()
                .by_replica
                .get(&name)
                .copied()
                .unwrap_or(0),
        );
        thread::sleep(Duration::from_millis(700));
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }

    let seen = seen.lock().unwrap();
    assert!(
        seen.failed.is_empty(),
        "{} of {} requests failed: {:#?}\nHAProxy:\n{}",
        seen.failed.len(),
        seen.answered + seen.failed.len(),
        seen.failed,
        haproxy.unusual_lines().join("\n")
    );
    // Every replica took requests again once it was back.
    for (n, before) in answered_before.iter().enumerate() {
        let name = format!("troupe{}", n + 1);
        let after = seen.by_replica.get(&name).copied().unwrap_or(0);
        assert!(
            after > *before,
            "{name} served nothing after its restart: {:?}",
            seen.by_replica
        );
    }
    assert!(seen.answered > 300, "only {} answers", seen.answered);
    assert_users_kept(haproxy.addr, &seen.acknowledged);
    eprintln!(
        "rolling restart: {} answers, by replica {:?}",
        seen.answered, seen.by_replica
    );
}
