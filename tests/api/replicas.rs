//! Three troupe processes on one PostgreSQL database and one S3-compatible server (moto, one
//! bucket), behind HAProxy (the committed `deploy/haproxy.cfg`), all on loopback, acting as
//! one service: what one replica writes every other reads, any replica takes any tus upload,
//! a replica killed mid-upload loses no acknowledged upload or user, and a rolling restart
//! under load fails no request. What is stored is checked in the bucket, through the S3 API.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::helpers::{
    content_type, form, logged_status, sha256_hex, tuspy_python, Answer, Haproxy, KeepAlive, Moto,
    Noise, Replicas, Storage,
};

const MIB: usize = 1 << 20;
/// Long enough for HAProxy to see any replica come up or go down here.
const STATE_WAIT: Duration = Duration::from_secs(30);

/// Three replicas on `storage`, with `vars`, and HAProxy in front of them with every
/// replica UP; `None` when PostgreSQL, the S3 server or HAProxy is skipped.
async fn service(storage: Storage, vars: &[(&str, &str)]) -> Option<(Replicas, Haproxy)> {
    let replicas = Replicas::start(3, storage, vars).await?;
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
    let Some((replicas, haproxy)) = service(Storage::S3, &[]).await else {
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
    a_tus_upload_moves_across_replicas_on(Storage::S3).await;
}

/// The same on one upload directory the replicas share (a file store on one host).
#[actix::test]
async fn a_tus_upload_moves_across_replicas_on_a_shared_directory() {
    a_tus_upload_moves_across_replicas_on(Storage::SharedDir).await;
}

/// Scenario (a) on `storage`: created through replica 1, PATCHed through replicas 2, 3 and
/// 2 again, complete with the right sha256 and listed by all three; on [`Storage::S3`] its
/// object holds the bytes, and nothing else is left in the bucket.
async fn a_tus_upload_moves_across_replicas_on(storage: Storage) {
    let Some(replicas) = Replicas::start(3, storage, &[]).await else {
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
    if storage == Storage::S3 {
        // One object, the upload's, byte for byte: no part, tail or multipart upload left.
        let bucket = replicas.bucket();
        let key = Moto::key_of(&id);
        let stored = bucket.object(&key).await.expect("the upload's object");
        assert_eq!(sha256_hex(&stored), sha256, "{key} in the bucket");
        bucket.assert_left_only(&[key]).await;
    }
}

/// The pause before each request of a load client: continuous load that leaves the cores
/// to the tests running beside it.
const LOAD_PAUSE: Duration = Duration::from_millis(2);
/// A load client sends its mix's uploads on one pass in this many.
const UPLOAD_EVERY: usize = 8;

/// One of the requests a load client sends in turn.
#[derive(Debug, Clone)]
enum Request {
    /// `GET /ping`.
    Ping,
    /// `GET` of this path.
    Read(String),
    /// `POST /users`.
    CreateUser,
    /// `POST /upload` of a small form (a single PUT on S3).
    FormUpload,
    /// A small tus upload: `POST /files/`, then one `PATCH` with all of it.
    TusUpload,
}

/// What the load clients of a test saw.
#[derive(Default)]
struct Writes {
    /// Users created and acknowledged (201): id and email.
    acknowledged: Vec<(i64, String)>,
    /// Uploads completed and acknowledged (a form's 201, a tus PATCH's 204 at the end): id
    /// and sha256.
    uploads: Vec<(String, String)>,
    /// Answers by the replica that gave them (`X-Served-By`).
    by_replica: BTreeMap<String, usize>,
    answered: usize,
    /// Requests that got no answer, and answers that are not 2xx.
    failed: Vec<String>,
}

impl Writes {
    /// Counts `sent` (the request `label` of client `n`), a failure unless a 2xx; answers
    /// the answer when it is one.
    fn record(&mut self, label: &str, sent: Result<Answer, String>) -> Option<Answer> {
        let answer = match sent {
            Ok(answer) => answer,
            Err(failure) => {
                self.failed.push(format!("{label}: {failure}"));
                return None;
            }
        };
        self.answered += 1;
        let by = answer.header("x-served-by").unwrap_or("none").to_owned();
        *self.by_replica.entry(by.clone()).or_default() += 1;
        if (200..300).contains(&answer.status) {
            Some(answer)
        } else {
            self.failed.push(format!(
                "{label}: {} from {by} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
            None
        }
    }
}

/// Loads `addr` until `stop`: client `n` on one keep-alive connection sending `mix` in
/// turn, a request every [`LOAD_PAUSE`] or as fast as they are answered.
fn load(addr: SocketAddr, n: usize, mix: &[Request], stop: &AtomicBool, seen: &Mutex<Writes>) {
    let mut client = KeepAlive::new(addr);
    let form_type = content_type();
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        thread::sleep(LOAD_PAUSE);
        let request = &mix[i % mix.len()];
        // Uploads on one pass through the mix in eight: each is read back afterwards.
        let upload = matches!(request, Request::FormUpload | Request::TusUpload);
        if upload && !(i / mix.len()).is_multiple_of(UPLOAD_EVERY) {
            continue;
        }
        let label = format!("{request:?} #{i} of client {n}");
        let mut send = |method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
            let sent = client
                .send(method, path, headers, body)
                .map_err(|failure| format!("{method} {path}: {failure:?}"));
            seen.lock().unwrap().record(&label, sent)
        };
        match request {
            Request::Ping => drop(send("GET", "/ping", &[], b"")),
            Request::Read(path) => drop(send("GET", path, &[], b"")),
            Request::CreateUser => {
                let email = format!("load-{n}-{i}@example.com");
                if let Some(answer) = send("POST", "/users", &[JSON], user_body(&email).as_bytes())
                {
                    let id = answer.json()["id"].as_i64().expect("an id");
                    seen.lock().unwrap().acknowledged.push((id, email));
                }
            }
            Request::FormUpload => {
                let data = Noise::new((n * 1_000_000 + i) as u64).chunk(16_000 + i % 1000);
                let body = form("load.bin", &data);
                if let Some(answer) =
                    send("POST", "/upload", &[("Content-Type", &form_type)], &body)
                {
                    let id = answer.json()["id"].as_str().expect("an id").to_owned();
                    assert_eq!(answer.json()["sha256"], sha256_hex(&data), "upload {id}");
                    seen.lock().unwrap().uploads.push((id, sha256_hex(&data)));
                }
            }
            Request::TusUpload => {
                let data = Noise::new((n * 1_000_000 + i) as u64).chunk(50_000 + i % 1000);
                let length = data.len().to_string();
                let Some(created) =
                    send("POST", "/files/", &[TUS, ("Upload-Length", &length)], b"")
                else {
                    continue;
                };
                let location = created.header("location").expect("a Location").to_owned();
                let patched = send(
                    "PATCH",
                    &location,
                    &[TUS, OCTETS, ("Upload-Offset", "0")],
                    &data,
                );
                if patched.is_some() {
                    let id = location.trim_start_matches("/files/").to_owned();
                    seen.lock().unwrap().uploads.push((id, sha256_hex(&data)));
                }
            }
        }
    }
}

/// Starts `clients` load clients on `addr`, each sending `mix`; answers what stops them and
/// what they saw.
fn start_load(
    addr: SocketAddr,
    clients: usize,
    mix: Vec<Request>,
) -> (
    Arc<AtomicBool>,
    Arc<Mutex<Writes>>,
    Vec<thread::JoinHandle<()>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Writes::default()));
    let handles = (0..clients)
        .map(|n| {
            let (mix, stop, seen) = (mix.clone(), stop.clone(), seen.clone());
            thread::spawn(move || load(addr, n, &mix, &stop, &seen))
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

/// Every acknowledged upload is there with its bytes: read through `addr`, and in the
/// bucket (through the S3 API) when the replicas store on S3.
async fn assert_uploads_kept(replicas: &Replicas, addr: SocketAddr, uploads: &[(String, String)]) {
    let mut client = KeepAlive::new(addr);
    for (id, sha256) in uploads {
        let answer = client
            .send("GET", &format!("/uploads/{id}/content"), &[], b"")
            .unwrap();
        assert_eq!(answer.status, 200, "acknowledged upload {id} is missing");
        assert_eq!(&sha256_hex(&answer.body), sha256, "upload {id}");
    }
    if replicas.storage() == Storage::S3 {
        for (id, sha256) in uploads {
            let key = Moto::key_of(id);
            let stored = replicas.bucket().object(&key).await;
            assert_eq!(
                stored.as_deref().map(sha256_hex).as_ref(),
                Some(sha256),
                "{key} in the bucket"
            );
        }
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
    tuspy_survives_a_sigkill_on(Storage::S3).await;
}

/// Scenario (b) on `storage`: tuspy uploads through HAProxy while users and form uploads are
/// written; the replica running its second PATCH gets SIGKILL; tuspy resumes elsewhere and
/// completes, and nothing acknowledged is missing.
async fn tuspy_survives_a_sigkill_on(storage: Storage) {
    let Some(python) = tuspy_python() else {
        return;
    };
    // Each upload goes at 8 MiB/s while other requests are served (the writes meanwhile):
    // slow enough to be killed in the middle of a PATCH.
    let Some((mut replicas, haproxy)) =
        service(storage, &[("TROUPE_UPLOAD_SHARED_RATE_MIB", "8")]).await
    else {
        return;
    };
    let data = Noise::new(33).chunk(40 * MIB + 3);
    let source = replicas.dir.path().join("failover-source.bin");
    std::fs::write(&source, &data).unwrap();
    let script = replicas.dir.path().join("tuspy_failover.py");
    std::fs::write(&script, TUSPY_SCRIPT).unwrap();

    let mix = vec![Request::CreateUser, Request::FormUpload];
    let (stop, writes, writers) = start_load(haproxy.addr, 2, mix);
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

    // Inside the second PATCH (the first one's 8 MiB are recorded, the next ones not yet):
    // the replica whose lock session holds the upload is the one writing it, and the one
    // to kill, once that PATCH has run a while (it takes about a second).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (id, writer) = loop {
        if let Some(id) = replicas.unfinished_uploads().await.pop() {
            let offset = replicas.recorded_offset(&id).await;
            assert!(
                offset < 2 * chunk,
                "the second PATCH ended unseen: {offset}"
            );
            if offset >= chunk {
                if let Some(writer) = replicas.locking(&id).await {
                    break (id, writer);
                }
            }
        }
        assert!(
            tuspy.try_wait().unwrap().is_none(),
            "tuspy ended before the kill"
        );
        assert!(Instant::now() < deadline, "the second PATCH never began");
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    };
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let victim = replicas
        .locking(&id)
        .await
        .expect("the second PATCH ended before the kill");
    assert_eq!(victim, writer, "the upload moved before the kill");
    let killed = replicas.kill(victim);
    let killed_at = replicas.recorded_offset(&id).await;
    let victim_name = format!("troupe{}", victim + 1);

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = tuspy.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "tuspy never finished");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
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

    assert_eq!(
        stdout.trim().rsplit('/').next(),
        Some(id.as_str()),
        "tuspy uploaded another upload"
    );
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
    let writes = std::mem::take(&mut *writes.lock().unwrap());
    assert!(
        writes.acknowledged.len() > 10 && writes.uploads.len() > 10,
        "{} users, {} uploads",
        writes.acknowledged.len(),
        writes.uploads.len()
    );
    let mut uploads = writes.uploads.clone();
    uploads.push((id.clone(), sha256.clone()));
    assert_users_kept(haproxy.addr, &writes.acknowledged);
    assert_uploads_kept(&replicas, haproxy.addr, &uploads).await;
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
    if storage == Storage::S3 {
        // The killed replica's multipart upload went on elsewhere, or is gone.
        let open = replicas.bucket().unfinished_multipart_uploads().await;
        assert!(open.is_empty(), "multipart uploads left open: {open:?}");
    }
    eprintln!(
        "killed {victim_name} with {killed_at} bytes recorded; writers: {} answered, {} failed: {:?}",
        writes.answered,
        writes.failed.len(),
        writes.failed
    );
}

#[actix::test]
async fn a_rolling_restart_under_load_through_haproxy_fails_no_request() {
    // The drain (3 s) outlasts HAProxy's way to DOWN: inter 1 s + fastinter 250 ms, each
    // check up to timeout check 1 s.
    let Some((mut replicas, haproxy)) = service(Storage::S3, &[("TROUPE_DRAIN_MS", "3000")]).await
    else {
        return;
    };
    let (seed, _) = create_user(haproxy.addr, "seed@example.com");
    let mix = vec![
        Request::Ping,
        Request::Read(format!("/users/{seed}")),
        Request::CreateUser,
        Request::FormUpload,
        Request::TusUpload,
    ];
    let (stop, seen, clients) = start_load(haproxy.addr, 6, mix);
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

    let seen = std::mem::take(&mut *seen.lock().unwrap());
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
    assert!(
        seen.uploads.len() > 30,
        "only {} uploads",
        seen.uploads.len()
    );
    assert_users_kept(haproxy.addr, &seen.acknowledged);
    assert_uploads_kept(&replicas, haproxy.addr, &seen.uploads).await;
    // Nothing failed, so the bucket holds exactly the acknowledged uploads: no object
    // written for an upload that was not kept, no multipart upload left open.
    let keys: Vec<String> = seen
        .uploads
        .iter()
        .map(|(id, _)| Moto::key_of(id))
        .collect();
    replicas.bucket().assert_left_only(&keys).await;
    eprintln!(
        "rolling restart: {} answers, {} uploads, by replica {:?}",
        seen.answered,
        seen.uploads.len(),
        seen.by_replica
    );
}
