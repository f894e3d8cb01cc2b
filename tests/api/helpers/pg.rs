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
