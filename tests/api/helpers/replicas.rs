//! Several real troupe processes ([`RunningBinary`]) on one PostgreSQL test database, as
//! replicas behind a load balancer are: each on a fixed loopback port of its own (a
//! restarted replica comes back where the balancer looks for it), all sharing one store for
//! the bytes ([`Storage`]): one upload directory, or one bucket of an S3-compatible server
//! ([`Moto`]). What the database knows of the uploads (recorded offsets, which replica's
//! lock session holds an upload) is read from it directly.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;

use tempfile::TempDir;

use crate::helpers::{Moto, PgTestDb, RunningBinary};

/// How long a replica gets to exit after SIGTERM or SIGKILL.
const EXIT_WAIT: Duration = Duration::from_secs(60);

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Where the replicas keep uploaded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// One upload directory every replica uses (`TROUPE_UPLOAD_DIR`, the file store): its
    /// `flock`s work across processes on one host.
    SharedDir,
    /// One bucket of one S3-compatible server (moto, started with the replicas and stopped
    /// after them) every replica writes to (`TROUPE_STORAGE=s3://…`, `AWS_*`), as replicas
    /// on several hosts do. [`Replicas::bucket`] reads it through the S3 API.
    S3,
}

/// The variables that point a replica at its store: the upload directory under the scratch
/// dir `dir`, or `moto`'s bucket.
fn storage_vars(moto: Option<&Moto>, dir: &std::path::Path) -> Vec<(String, String)> {
    match moto {
        None => vec![(
            "TROUPE_UPLOAD_DIR".into(),
            dir.join("uploads").to_string_lossy().into_owned(),
        )],
        Some(moto) => moto
            .vars()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    }
}

/// Starts one replica in `dir` with `vars`, on loopback `port`, and waits until it serves.
fn launch(dir: &std::path::Path, vars: &[(String, String)], port: u16) -> RunningBinary {
    let bind = format!("127.0.0.1:{port}");
    let mut vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vars.push(("TROUPE_BIND", &bind));
    RunningBinary::start(dir, &vars)
}

/// Replicas of troupe on one database, stopped when dropped (before the database is).
pub struct Replicas {
    replicas: Vec<Replica>,
    /// What every replica is started with, but its `TROUPE_BIND`.
    vars: Vec<(String, String)>,
    /// Scratch space: the shared upload dir, files for clients.
    pub dir: TempDir,
    /// The S3-compatible server of [`Storage::S3`], stopped once no replica uses it.
    moto: Option<Moto>,
    /// Dropped last, once no replica uses it.
    db: PgTestDb,
}

struct Replica {
    port: u16,
    running: Option<RunningBinary>,
}

impl Replicas {
    /// Starts `count` replicas at once on a fresh PostgreSQL database, with `storage` and
    /// `vars` on top of small test settings, and waits until each serves; `None` when
    /// PostgreSQL (or, for [`Storage::S3`], the S3-compatible server) is skipped.
    pub async fn start(count: usize, storage: Storage, vars: &[(&str, &str)]) -> Option<Self> {
        // The test reads the bucket with an S3 client of its own, over rustls.
        troupe::install_crypto_provider();
        let moto = match storage {
            Storage::SharedDir => None,
            Storage::S3 => Some(Moto::start().await?),
        };
        let db = PgTestDb::create().await?;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut all: Vec<(String, String)> = [
            ("DATABASE_URL", db.url.as_str()),
            ("TROUPE_WORKERS", "2"),
            ("TROUPE_DB_POOL_SIZE", "4"),
            ("TROUPE_CPU_THREADS", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        all.extend(storage_vars(moto.as_ref(), dir.path()));
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut replicas = Self {
            replicas: (0..count)
                .map(|_| Replica {
                    port: free_port(),
                    running: None,
                })
                .collect(),
            vars: all,
            dir,
            moto,
            db,
        };
        // All at once, as an orchestrator starts them: the first start on an empty database
        // runs the migrations while the others start too.
        let started: Vec<RunningBinary> = std::thread::scope(|scope| {
            let (dir, vars) = (replicas.dir.path(), &replicas.vars);
            let handles: Vec<_> = replicas
                .ports()
                .into_iter()
                .map(|port| scope.spawn(move || launch(dir, vars, port)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (replica, running) in replicas.replicas.iter_mut().zip(started) {
            replica.running = Some(running);
        }
        Some(replicas)
    }

    /// How many replicas there are.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// Each replica's port, in order (replica `n` is HAProxy's `troupe{n+1}`).
    pub fn ports(&self) -> Vec<u16> {
        self.replicas.iter().map(|r| r.port).collect()
    }

    /// Replica `n`'s address.
    pub fn addr(&self, n: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.replicas[n].port))
    }

    /// Where they keep uploaded bytes.
    pub fn storage(&self) -> Storage {
        if self.moto.is_some() {
            Storage::S3
        } else {
            Storage::SharedDir
        }
    }

    /// The bucket of [`Storage::S3`], read through the S3 API.
    pub fn bucket(&self) -> &Moto {
        self.moto
            .as_ref()
            .expect("the replicas store into a bucket")
    }

    /// The offset the database records for upload `id` (no replica asked).
    pub async fn recorded_offset(&self, id: &str) -> usize {
        let offset: i64 = self
            .db
            .client()
            .await
            .query_one("SELECT upload_offset FROM uploads WHERE id = $1", &[&id])
            .await
            .expect("the upload's row")
            .get(0);
        usize::try_from(offset).unwrap()
    }

    /// The ids of the uploads not complete yet (tus uploads under way), oldest first.
    pub async fn unfinished_uploads(&self) -> Vec<String> {
        self.db
            .client()
            .await
            .query(
                "SELECT id FROM uploads WHERE NOT complete ORDER BY created_at, id",
                &[],
            )
            .await
            .expect("the unfinished uploads")
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// Which running replica holds upload `id`'s lock (a PATCH of it runs there): the
    /// replica whose lock session (`application_name` `troupe upload locks <pid>`) has the
    /// upload's advisory lock granted, whatever the store.
    pub async fn locking(&self, id: &str) -> Option<usize> {
        let key = troupe::db::locks::key_of(id.parse().expect("an upload id"));
        let holders: Vec<String> = self
            .db
            .client()
            .await
            .query(
                "SELECT a.application_name FROM pg_locks l \
                 JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
                 AND (l.classid::bigint << 32) | l.objid::bigint = $1 AND a.datname = $2",
                &[&key, &self.db.name],
            )
            .await
            .expect("the upload's lock")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert!(holders.len() <= 1, "one upload locked twice: {holders:?}");
        let pid: u32 = holders
            .first()?
            .strip_prefix(troupe::db::locks::APPLICATION_NAME)?
            .trim()
            .parse()
            .ok()?;
        (0..self.len()).find(|&n| {
            self.replicas[n]
                .running
                .as_ref()
                .is_some_and(|bin| bin.pid() == pid)
        })
    }

    /// SIGKILL to replica `n`, and waits until it is gone; answers its log.
    pub fn kill(&mut self, n: usize) -> Vec<String> {
        let mut bin = self.replicas[n].running.take().expect("running");
        bin.signal(libc::SIGKILL);
        bin.wait_exit(EXIT_WAIT).expect("a killed replica exits");
        bin.lines()
    }

    /// SIGTERM to replica `n` (its drain, then its shutdown), and waits until it exits;
    /// answers how it exited and its log.
    pub fn terminate(&mut self, n: usize) -> (ExitStatus, Vec<String>) {
        let mut bin = self.replicas[n].running.take().expect("running");
        bin.signal(libc::SIGTERM);
        let status = bin
            .wait_exit(EXIT_WAIT)
            .unwrap_or_else(|| panic!("replica {n} did not exit:\n{}", bin.lines().join("\n")));
        (status, bin.lines())
    }

    /// Starts replica `n` again, on its port, and waits until it serves.
    pub fn restart(&mut self, n: usize) {
        assert!(self.replicas[n].running.is_none(), "replica {n} still runs");
        let running = launch(self.dir.path(), &self.vars, self.replicas[n].port);
        self.replicas[n].running = Some(running);
    }
}
