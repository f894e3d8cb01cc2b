//! `spawn_app()`: the real troupe on port 0, over a fresh SQLite file or a fresh PostgreSQL
//! database, and an HTTP client that speaks to it.

use std::process::Command;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use tempfile::TempDir;
use troupe::config::Config;
use troupe::services::Shared;
use troupe::startup::Application;

use crate::helpers::PgTestDb;

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
    pub services: Shared,
    pub db: TestDb,
    /// Scratch space for the test (upload dirs etc.); removed on drop.
    pub dir: TempDir,
    pub handle: ServerHandle,
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
/// the test's scratch dir unless `vars` say otherwise (`TROUPE_STORAGE` names another place).
pub fn test_config(db: &TestDb, dir: &TempDir, vars: &[(&str, &str)]) -> Config {
    let mut all = base_vars(&db.url());
    if !vars.iter().any(|(k, _)| *k == "TROUPE_STORAGE") {
        let upload_dir = dir.path().join("uploads");
        all.push((
            "TROUPE_UPLOAD_DIR".into(),
            upload_dir.to_string_lossy().into_owned(),
        ));
    }
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
    let services = app.shared().clone();
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
    /// The same app, whose client sends `Authorization: Bearer {key}` on every request, so
    /// every helper below speaks as that key.
    pub fn presenting(mut self, key: &str) -> Self {
        self.client = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .add_default_header(("Authorization", format!("Bearer {key}")))
            .finish();
        self
    }

    /// Stops the server and gives back its database and scratch dir, for a restart.
    pub async fn stop(self) -> (TestDb, TempDir) {
        self.handle.stop(true).await;
        (self.db, self.dir)
    }
}

/// The binary, with no `TROUPE_*`, `AWS_*` or `DATABASE_URL` from the environment.
pub fn troupe() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_troupe"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TROUPE_") || key.starts_with("AWS_") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}
