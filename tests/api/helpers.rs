//! `spawn_app()`: the real troupe on port 0, over a fresh SQLite file or a fresh PostgreSQL
//! database, and an HTTP client that speaks to it.

use std::time::Duration;

use actix_web::dev::ServerHandle;
use tempfile::TempDir;
use troupe::config::Config;
use troupe::services::Services;
use troupe::startup::Application;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running troupe and what it stands on; dropping it stops the server and drops its
/// database.
pub struct TestApp {
    pub address: String,
    pub client: awc::Client,
    pub services: Services,
    pub db: TestDb,
    /// Scratch space for the test (upload dirs etc.); removed on drop.
    pub dir: TempDir,
    pub handle: ServerHandle,
}

impl TestApp {
    /// `address` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// GET `path`, returning status, headers and the body as JSON (`Null` when empty or not JSON).
    pub async fn get_json(
        &self,
        path: &str,
    ) -> (u16, awc::http::header::HeaderMap, serde_json::Value) {
        let res = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request failed");
        read_json(res).await
    }

    /// Sends `body` as JSON with `method` to `path`.
    pub async fn send_json(
        &self,
        method: awc::http::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, awc::http::header::HeaderMap, serde_json::Value) {
        let res = self
            .client
            .request(method, self.url(path))
            .send_json(body)
            .await
            .expect("request failed");
        read_json(res).await
    }
}

/// The `x-request-id` a response carries.
pub fn request_id<S>(res: &awc::ClientResponse<S>) -> String {
    res.headers()
        .get("x-request-id")
        .expect("x-request-id header")
        .to_str()
        .expect("ASCII request id")
        .to_owned()
}

/// Reads a response's status, headers and JSON body (`Null` when empty or not JSON).
pub async fn read_json<S>(
    mut res: awc::ClientResponse<S>,
) -> (u16, awc::http::header::HeaderMap, serde_json::Value)
where
    S: futures::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res
        .body()
        .limit(64 * 1024 * 1024)
        .await
        .expect("body failed");
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

/// The database under a test app.
pub enum TestDb {
    Sqlite(std::path::PathBuf),
    Postgres(PgTestDb),
}

impl TestDb {
    /// The `DATABASE_URL` the app was given.
    pub fn url(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(pg) => pg.url.clone(),
        }
    }

    /// The PostgreSQL database, for tests that act on it from outside.
    pub fn pg(&self) -> &PgTestDb {
        match self {
            Self::Postgres(pg) => pg,
            Self::Sqlite(_) => panic!("not a PostgreSQL test"),
        }
    }
}

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
                eprintln!("skipping PostgreSQL case: not reachable at {admin} ({err})");
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

/// Settings every test app starts with; `vars` override or add.
fn base_vars(db_url: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", db_url),
        ("TROUPE_BIND", "127.0.0.1:0"),
        ("TROUPE_WORKERS", "2"),
        ("TROUPE_DB_POOL_SIZE", "4"),
        ("TROUPE_DB_TIMEOUT_MS", "1000"),
        ("TROUPE_CPU_THREADS", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The app on `backend` with default test settings; `None` when PostgreSQL is skipped.
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, &[]).await
}

/// The app on `backend` with `vars` set on top of the test defaults.
pub async fn spawn_app_with(backend: Backend, vars: &[(&str, &str)]) -> Option<TestApp> {
    let (db, dir) = test_db(backend).await?;
    Some(start(db, dir, vars).await)
}

/// A fresh database on `backend` (an SQLite file in a new scratch dir, or a new PostgreSQL
/// database), with nothing running on it; `None` when PostgreSQL is skipped.
pub async fn test_db(backend: Backend) -> Option<(TestDb, TempDir)> {
    troupe::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = match backend {
        Backend::Sqlite => TestDb::Sqlite(dir.path().join("troupe.db")),
        Backend::Postgres => TestDb::Postgres(PgTestDb::create().await?),
    };
    Some((db, dir))
}

/// The test configuration for `db`, with `vars` on top of the defaults; uploads stay inside
/// the test's scratch dir unless `vars` say otherwise.
pub fn test_config(db: &TestDb, dir: &TempDir, vars: &[(&str, &str)]) -> Config {
    let mut all = base_vars(&db.url());
    let upload_dir = dir.path().join("uploads");
    all.push((
        "TROUPE_UPLOAD_DIR".into(),
        upload_dir.to_string_lossy().into_owned(),
    ));
    all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::from_vars(all).expect("test config")
}

/// Starts a server on an existing database and scratch dir (restarts reuse both).
pub async fn start(db: TestDb, dir: TempDir, vars: &[(&str, &str)]) -> TestApp {
    let config = test_config(&db, &dir, vars);
    let app = Application::build(config)
        .await
        .expect("app failed to start");
    let address = format!("http://127.0.0.1:{}", app.port());
    let services = app.services().clone();
    let handle = app.handle();
    actix_web::rt::spawn(app.run());
    TestApp {
        address,
        client: awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish(),
        services,
        db,
        dir,
        handle,
    }
}

impl TestApp {
    /// Stops the server and gives back its database and scratch dir, for a restart.
    pub async fn stop(self) -> (TestDb, TempDir) {
        self.handle.stop(true).await;
        (self.db, self.dir)
    }
}

/// Declares one test per backend: `both_backends!(name, async_fn)` makes `name::sqlite`
/// and `name::postgres`, each calling `async_fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident => $body:ident),* $(,)?) => {
        $(
            mod $name {
                #[actix::test]
                async fn sqlite() {
                    super::$body($crate::helpers::Backend::Sqlite).await
                }
                #[actix::test]
                async fn postgres() {
                    super::$body($crate::helpers::Backend::Postgres).await
                }
            }
        )*
    };
}
