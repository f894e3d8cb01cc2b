//! Several real troupe processes (replicas) on one PostgreSQL database and one upload
//! directory, the tus requests a test sends each of them over raw sockets, and the upload
//! locks the database holds for them.

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::helpers::raw_http::{answer_on, Answer, KeepAlive};
use crate::helpers::{send_partial, PgTestDb, RunningBinary};

/// The `application_name` prefix of every replica's lock connection.
const LOCK_SESSION: &str = "troupe upload locks";

/// Replicas sharing a database and `uploads/` under a scratch dir; each is stopped (SIGKILL)
/// when dropped, before the database is.
pub struct LockReplicas {
    pub replicas: Vec<RunningBinary>,
    pub pg: PgTestDb,
    pub dir: TempDir,
}

impl LockReplicas {
    /// `n` replicas on a fresh PostgreSQL database; `None` when PostgreSQL is skipped.
    pub async fn start(n: usize) -> Option<Self> {
        troupe::install_crypto_provider();
        let pg = PgTestDb::create().await?;
        let dir = tempfile::tempdir().expect("tempdir");
        let uploads = dir.path().join("uploads");
        let replicas = (0..n)
            .map(|i| {
                let home = dir.path().join(format!("replica-{i}"));
                std::fs::create_dir_all(&home).unwrap();
                RunningBinary::start(
                    &home,
                    &[
                        ("DATABASE_URL", &pg.url),
                        ("TROUPE_UPLOAD_DIR", uploads.to_str().unwrap()),
                        ("TROUPE_WORKERS", "2"),
                        ("TROUPE_DB_POOL_SIZE", "4"),
                        ("TROUPE_CPU_THREADS", "2"),
                        ("RUST_LOG", "info"),
                    ],
                )
            })
            .collect();
        Some(Self { replicas, pg, dir })
    }

    /// The bytes on disk of the unfinished tus upload at `location`.
    pub fn tus_bytes(&self, location: &str) -> Vec<u8> {
        std::fs::read(self.tus_path(location)).unwrap_or_default()
    }

    /// Where the unfinished tus upload at `location` is written.
    pub fn tus_path(&self, location: &str) -> PathBuf {
        self.dir
            .path()
            .join("uploads/tus")
            .join(location.trim_start_matches("/files/"))
    }

    /// Waits until the file of the upload at `location` holds at least `len` bytes.
    pub fn wait_for_tus_len(&self, location: &str, len: usize) {
        let path = self.tus_path(location);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&path).map_or(0, |m| m.len()) < len as u64 {
            assert!(Instant::now() < deadline, "never {len} bytes in {path:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The offset the database records for the upload at `location` (no request asked).
    pub async fn recorded_offset(&self, location: &str) -> usize {
        let id = location.trim_start_matches("/files/");
        let offset: i64 = self
            .pg
            .client()
            .await
            .query_one("SELECT upload_offset FROM uploads WHERE id = $1", &[&id])
            .await
            .expect("the upload's row")
            .get(0);
        usize::try_from(offset).unwrap()
    }

    /// Each replica's lock connection on the database: its server process and the advisory
    /// locks it holds.
    pub async fn lock_sessions(&self) -> Vec<(i32, i64)> {
        let pattern = format!("{LOCK_SESSION}%");
        self.pg
            .client()
            .await
            .query(
                "SELECT a.pid, count(l.pid) FILTER (WHERE l.locktype = 'advisory' AND l.granted) \
                 FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid \
                 WHERE a.datname = $1 AND a.application_name LIKE $2 GROUP BY a.pid",
                &[&self.pg.name, &pattern],
            )
            .await
            .expect("lock sessions")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }

    /// The advisory locks every replica holds, together.
    pub async fn locks_held(&self) -> i64 {
        self.lock_sessions().await.iter().map(|(_, n)| n).sum()
    }

    /// Waits until the replicas hold `n` advisory locks together (a lease is released just
    /// after its PATCH is answered).
    pub async fn wait_until_locks_held(&self, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let held = self.locks_held().await;
            if held == n {
                return;
            }
            assert!(Instant::now() < deadline, "{held} locks held, not {n}");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends every replica's lock connection (`pg_terminate_backend`, found by its
    /// `application_name`) and waits until each has exited; answers how many there were.
    pub async fn terminate_lock_sessions(&self) -> i64 {
        let pattern = format!("{LOCK_SESSION}%");
        self.pg
            .client()
            .await
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) \
                 FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE $2",
                &[&self.pg.name, &pattern],
            )
            .await
            .expect("terminate lock sessions")
            .get(0)
    }
}

impl Drop for LockReplicas {
    fn drop(&mut self) {
        // Before the database goes: a replica's pool would only log its loss.
        self.replicas.clear();
    }
}

/// tus requests to one replica, over a raw socket each.
impl RunningBinary {
    /// One request with `Tus-Resumable: 1.0.0`, on a connection of its own.
    pub fn tus(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut all = vec![("Tus-Resumable", "1.0.0")];
        all.extend_from_slice(headers);
        KeepAlive::new(self.socket_addr())
            .send(method, path, &all, body)
            .unwrap_or_else(|failure| panic!("{method} {path} on {}: {failure:?}", self.address))
    }

    /// Creates an upload of `length` bytes; answers its location (`/files/{id}`).
    pub fn tus_create(&self, length: usize) -> String {
        let answer = self.tus(
            "POST",
            "/files/",
            &[("Upload-Length", &length.to_string())],
            &[],
        );
        assert_eq!(answer.status, 201, "{:?}", answer.json());
        answer.header("location").unwrap().to_owned()
    }

    /// `HEAD` of the upload at `location`.
    pub fn tus_head(&self, location: &str) -> Answer {
        self.tus("HEAD", location, &[], &[])
    }

    /// The offset `HEAD` answers, or `None` with its status.
    pub fn tus_offset(&self, location: &str) -> Result<usize, u16> {
        let answer = self.tus_head(location);
        match answer.status {
            200 => Ok(answer.header("upload-offset").unwrap().parse().unwrap()),
            other => Err(other),
        }
    }

    /// A whole PATCH of `data` at `offset`.
    pub fn tus_patch(&self, location: &str, offset: usize, data: &[u8]) -> Answer {
        self.tus(
            "PATCH",
            location,
            &[
                ("Upload-Offset", &offset.to_string()),
                ("Content-Type", "application/offset+octet-stream"),
            ],
            data,
        )
    }

    /// A PATCH at `offset` that declares `declared` bytes, sends `part` of them and then
    /// holds its connection (a client gone silent); [`answer_on`] reads what it is told.
    pub fn start_patch(
        &self,
        location: &str,
        offset: usize,
        declared: usize,
        part: &[u8],
    ) -> TcpStream {
        send_partial(
            self.socket_addr(),
            "PATCH",
            location,
            &[
                ("Tus-Resumable", "1.0.0"),
                ("Upload-Offset", &offset.to_string()),
                ("Content-Type", "application/offset+octet-stream"),
            ],
            declared,
            part,
        )
    }

    /// `GET path` as JSON.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let answer = KeepAlive::new(self.socket_addr())
            .send("GET", path, &[], &[])
            .unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.json());
        answer.json()
    }
}

/// What a stalled PATCH's connection is answered.
pub fn patch_answer(stream: &mut TcpStream) -> Answer {
    answer_on(stream).unwrap_or_else(|failure| panic!("the PATCH got no answer: {failure:?}"))
}
