//! A PostgreSQL database of its own for each test, created on the server that
//! `TROUPE_TEST_PG_URL` names and dropped with the test.

use std::time::Duration;

/// The server tests create their databases on (`TROUPE_TEST_PG_URL`, a maintenance
/// database such as `postgres`).
pub fn pg_admin_url() -> String {
    std::env::var("TROUPE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn postgres_required() -> bool {
    std::env::var("TROUPE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// A database of its own for one test, dropped (with force) when this is dropped.
pub struct PgTestDb {
    pub name: String,
    pub url: String,
}

impl PgTestDb {
    /// Creates a fresh database, or `None` (with one line on stderr) when PostgreSQL is not
    /// reachable and not required.
    pub async fn create() -> Option<Self> {
        let admin = pg_admin_url();
        let client = match connect(&admin).await {
            Ok(client) => client,
            Err(err) if postgres_required() => {
                panic!("PostgreSQL required but not reachable at {admin}: {err}")
            }
            Err(err) => {
                super::skip(
                    "PostgreSQL not reachable",
                    format_args!("{admin}: {err}; TROUPE_REQUIRE_POSTGRES=1 makes this fail"),
                );
                return None;
            }
        };
        let name = format!("troupe_test_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE failed");
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        Some(Self {
            url: format!("{base}/{name}"),
            name,
        })
    }

    /// Runs SQL on the maintenance database (for `ALTER DATABASE`, terminating backends).
    pub async fn admin(&self, sql: &str) {
        let client = connect(&pg_admin_url())
            .await
            .expect("connect to admin database");
        client.batch_execute(sql).await.expect("admin SQL failed");
    }

    /// Makes the database unreachable: no new connections, and every session ended, again
    /// until none is left (a connection being set up while the first round ran survives it).
    pub async fn cut_off(&self) {
        let name = &self.name;
        let admin = connect(&pg_admin_url())
            .await
            .expect("connect to admin database");
        admin
            .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
            .await
            .expect("refuse connections");
        for _ in 0..50 {
            let left: i64 = admin
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[name],
                )
                .await
                .expect("terminate sessions")
                .get(0);
            if left == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("sessions on {name} keep coming back");
    }

    /// Takes an exclusive lock on `users` in an open transaction of the test's own, so that
    /// the app's queries on it wait; `ROLLBACK` on the returned client lets them go.
    pub async fn lock_users(&self) -> tokio_postgres::Client {
        let locker = self.client().await;
        locker
            .batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("lock users");
        locker
    }

    /// A connection of the test's own to this database.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await.expect("connect to test database")
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a thread of its own may block on its own.
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                // A plain tokio runtime: the driver goes on `tokio::spawn`, not actix's spawn.
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    if let Err(err) = client.batch_execute(&sql).await {
                        eprintln!("could not drop test database {name}: {err}");
                    }
                }
            });
        });
        let _ = dropper.join();
    }
}

/// A tokio-postgres connection whose driver runs on the current runtime.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .unwrap_or_else(|_| panic!("connecting to {url} timed out"))?;
    actix_web::rt::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

impl PgTestDb {
    /// Ends every session on this database (troupe's pooled connections) and waits until
    /// each has exited; answers how many there were. The database stays open to new ones.
    pub async fn terminate_sessions(&self) -> i64 {
        let admin = connect(&pg_admin_url())
            .await
            .expect("connect to admin database");
        admin
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) \
                 FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .await
            .expect("terminate sessions")
            .get(0)
    }

    /// Waits until a session on this database waits for a lock, ends it, and waits until it
    /// has exited: a statement cut off by the server after it was sent.
    pub async fn terminate_a_waiting_session(&self) {
        let admin = connect(&pg_admin_url())
            .await
            .expect("connect to admin database");
        for _ in 0..100 {
            let ended: i64 = admin
                .query_one(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) \
                     FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
                    &[&self.name],
                )
                .await
                .expect("terminate a waiting session")
                .get(0);
            if ended > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no session on {} ever waited for a lock", self.name);
    }
}

/// A PostgreSQL server of the test's own (`initdb` + `pg_ctl` from
/// `/usr/lib/postgresql/*/bin`) on a free port in a temp dir, for tests that stop and start
/// the database itself; stopped and removed when dropped. As root, it runs as `postgres`
/// (initdb refuses root).
pub struct PrivateCluster {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
}

/// What a TLS-only [`PrivateCluster`] serves, in PEM: a certificate and its key.
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl PrivateCluster {
    /// Creates and starts a cluster, or `None` (with one line on stderr) when the server's
    /// binaries are not installed and PostgreSQL is not required.
    pub fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// A cluster with `ssl=on` serving `cert`, whose `pg_hba.conf` takes TCP connections
    /// only over TLS (`hostssl`): a plain one is refused with "no encryption".
    pub fn start_tls_only(cert: &ServerCert) -> Option<Self> {
        Self::start_with(Some((cert, "hostssl", "")))
    }

    /// A cluster with `ssl=on` serving `cert` that offers TLS but only TLS 1.0 and 1.1,
    /// which no client of troupe's speaks: every handshake fails. Plain connections are
    /// taken.
    pub fn start_tls_unusable(cert: &ServerCert) -> Option<Self> {
        let old = " -c ssl_min_protocol_version=TLSv1 -c ssl_max_protocol_version=TLSv1.1";
        Self::start_with(Some((cert, "host", old)))
    }

    /// `tls`: the certificate, the `pg_hba.conf` connection type for TCP (`host` or
    /// `hostssl`), and more server settings.
    fn start_with(tls: Option<(&ServerCert, &str, &str)>) -> Option<Self> {
        let Some(bin) = pg_bin_dir() else {
            if postgres_required() {
                panic!("PostgreSQL required but no /usr/lib/postgresql/*/bin/initdb");
            }
            super::skip(
                "no PostgreSQL server binaries",
                "no /usr/lib/postgresql/*/bin/initdb (Debian: apt-get install postgresql); \
                 TROUPE_REQUIRE_POSTGRES=1 makes this fail",
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        if as_root() {
            let owner = std::ffi::CString::new(dir.path().to_string_lossy().as_bytes()).unwrap();
            let user = postgres_ids().expect("running as root, but no postgres user");
            // SAFETY: a valid NUL-terminated path; chown has no other preconditions.
            assert_eq!(unsafe { libc::chown(owner.as_ptr(), user.0, user.1) }, 0);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cluster = Self {
            bin,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            cluster.dir.path().display()
        );
        if let Some((cert, tcp, settings)) = tls {
            let (crt, key) = (
                cluster.dir.path().join("server.crt"),
                cluster.dir.path().join("server.key"),
            );
            std::fs::write(&crt, &cert.cert_pem).unwrap();
            std::fs::write(&key, &cert.key_pem).unwrap();
            // The server refuses a key others may read, or (as root) one it does not own.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            if as_root() {
                let user = postgres_ids().expect("running as root, but no postgres user");
                for file in [&crt, &key] {
                    std::os::unix::fs::chown(file, Some(user.0), Some(user.1)).unwrap();
                }
            }
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}{settings}",
                crt.display(),
                key.display()
            ));
            std::fs::write(
                std::path::Path::new(&data).join("pg_hba.conf"),
                format!("local all all trust\n{tcp} all all 127.0.0.1/32 trust\n"),
            )
            .unwrap();
        }
        std::fs::write(cluster.dir.path().join("options"), &options).unwrap();
        cluster.start_again();
        Some(cluster)
    }

    /// Stops the server (`pg_ctl stop -m fast`: every session is ended), waiting until it is.
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Starts the stopped server again, waiting until it accepts connections.
    pub fn start_again(&self) {
        let options = std::fs::read_to_string(self.dir.path().join("options")).unwrap();
        let log = self.dir.path().join("log").to_string_lossy().into_owned();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    fn command(&self, tool: &str) -> std::process::Command {
        let tool = self.bin.join(tool);
        let mut cmd = if as_root() {
            let mut cmd = std::process::Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(tool);
            cmd
        } else {
            std::process::Command::new(tool)
        };
        cmd.stdout(std::process::Stdio::null());
        cmd
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The newest `/usr/lib/postgresql/*/bin` with an `initdb`.
fn pg_bin_dir() -> Option<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    dirs.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The `postgres` user's uid and gid.
fn postgres_ids() -> Option<(libc::uid_t, libc::gid_t)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let mut fields = line.split(':').skip(2);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}
