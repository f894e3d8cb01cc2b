//! Several real troupe processes ([`RunningBinary`]) on one PostgreSQL test database, as
//! replicas behind a load balancer are: each on a fixed loopback port of its own (a
//! restarted replica comes back where the balancer looks for it), all sharing one store for
//! the bytes ([`Storage`]).

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;

use tempfile::TempDir;

use crate::helpers::{PgTestDb, RunningBinary};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// One upload directory every replica uses (`TROUPE_UPLOAD_DIR`, the file store): its
    /// `flock`s work across processes on one host. An object store is another variant,
    /// whose variables (`TROUPE_STORAGE`, `AWS_*`) [`Storage::vars`] gives.
    SharedDir,
}

impl Storage {
    /// The variables that point a replica at this store, under the scratch dir `dir`.
    fn vars(&self, dir: &std::path::Path) -> Vec<(String, String)> {
        match self {
            Self::SharedDir => vec![(
                "TROUPE_UPLOAD_DIR".into(),
                dir.join("uploads").to_string_lossy().into_owned(),
            )],
        }
    }
}

/// Replicas of troupe on one database, stopped when dropped (before the database is).
pub struct Replicas {
    replicas: Vec<Replica>,
    /// What every replica is started with, but its `TROUPE_BIND`.
    vars: Vec<(String, String)>,
    /// Scratch space: the shared upload dir, files for clients.
    pub dir: TempDir,
    /// Dropped last, once no replica uses it.
    _db: PgTestDb,
}

struct Replica {
    port: u16,
    running: Option<RunningBinary>,
}

impl Replicas {
    /// Starts `count` replicas at once on a fresh PostgreSQL database, with `storage` and
    /// `vars` on top of small test settings, and waits until each serves; `None` when
    /// PostgreSQL is skipped.
    pub async fn start(count: usize, storage: Storage, vars: &[(&str, &str)]) -> Option<Self> {
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
        all.extend(storage.vars(dir.path()));
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
            _db: db,
        };
        // All at once, as an orchestrator starts them: the first start on an empty database
        // runs the migrations while the others start too.
        let started: Vec<RunningBinary> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..count)
                .map(|n| {
                    let replicas = &replicas;
                    scope.spawn(move || replicas.launch(n))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (replica, running) in replicas.replicas.iter_mut().zip(started) {
            replica.running = Some(running);
        }
        Some(replicas)
    }

    fn launch(&self, n: usize) -> RunningBinary {
        let bind = format!("127.0.0.1:{}", self.replicas[n].port);
        let mut vars: Vec<(&str, &str)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        vars.push(("TROUPE_BIND", &bind));
        RunningBinary::start(self.dir.path(), &vars)
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

    /// Which running replica has `path` open (a file it is writing), by its open files.
    pub fn holding(&self, path: &std::path::Path) -> Option<usize> {
        (0..self.len()).find(|&n| {
            self.replicas[n]
                .running
                .as_ref()
                .is_some_and(|bin| bin.has_open(path))
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
        let running = self.launch(n);
        self.replicas[n].running = Some(running);
    }
}
