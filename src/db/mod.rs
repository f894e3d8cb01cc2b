//! The database: one pool enum over PostgreSQL and SQLite, one query body per operation.
//!
//! [`with_conn!`](crate::with_conn) checks a connection out of whichever pool is configured and runs the same
//! diesel expression against it, so every query in `db::*` is written once for both backends.

pub mod page;
pub mod schema;
pub mod uploads;
pub mod users;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;
use diesel::Connection as _;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolError, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures::FutureExt;

use crate::config::{Config, DatabaseUrl};
use crate::error::{error_chain, AppError};

/// The SQLite connection type the pool holds: diesel's sync connection on blocking threads.
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// The connection pool, over whichever backend `DATABASE_URL` picked.
#[derive(Clone)]
pub struct DbPool {
    backend: Backend,
    health: Arc<PoolHealth>,
}

/// The pool of one backend; `with_conn!` matches on it.
#[derive(Clone)]
pub enum Backend {
    /// PostgreSQL through tokio-postgres.
    Pg(Pool<AsyncPgConnection>),
    /// SQLite through the sync connection on blocking threads.
    Sqlite(Pool<SqliteConn>),
}

/// When the pool last failed to open a connection: tells "the database is down" apart from
/// "every connection is busy" when a checkout times out (bb8 reports both as a timeout).
#[derive(Debug)]
struct PoolHealth {
    started: Instant,
    /// Milliseconds after `started` of the last failed connect, 0 if none.
    last_connect_error_ms: AtomicU64,
}

#[derive(Debug, Clone)]
struct ErrorLog(Arc<PoolHealth>);

impl bb8::ErrorSink<PoolError> for ErrorLog {
    fn sink(&self, err: PoolError) {
        log::warn!("database connection failed: {err}");
        let ms = self.0.started.elapsed().as_millis() as u64;
        self.0
            .last_connect_error_ms
            .store(ms.max(1), Ordering::Relaxed);
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<PoolError>> {
        Box::new(self.clone())
    }
}

/// Runs `$body` with `$conn` bound to a `&mut` connection of whichever backend is configured.
/// The body is compiled once per backend, so it must be backend-neutral diesel.
#[macro_export]
macro_rules! with_conn {
    ($pool:expr, |$conn:ident| $body:expr) => {
        match $pool.backend() {
            $crate::db::Backend::Pg(pool) => {
                let mut guard = $pool.checkout(pool).await?;
                let $conn = &mut *guard;
                $body
            }
            $crate::db::Backend::Sqlite(pool) => {
                let mut guard = $pool.checkout(pool).await?;
                let $conn = &mut *guard;
                $body
            }
        }
    };
}

impl DbPool {
    /// Runs the migrations of the configured backend, then builds the pool. Fails with the
    /// driver's own cause (refused, unknown host, auth) when the database cannot be reached.
    pub async fn connect(config: &Config) -> Result<Self, ConnectError> {
        Self::migrate(config).await?;
        Ok(Self::build(config))
    }

    /// Runs the migrations of the configured backend; fails with the driver's own cause
    /// when the database cannot be reached.
    pub async fn migrate(config: &Config) -> Result<(), ConnectError> {
        run_migrations(
            &config.database,
            config.db_timeout.max(Duration::from_secs(10)),
        )
        .await
    }

    /// Builds the pool without connecting: connections open on first use, on the thread
    /// that asks for one (a PostgreSQL connection's socket is then driven by a task on that
    /// thread). No migrations.
    pub fn build(config: &Config) -> Self {
        let health = Arc::new(PoolHealth {
            started: Instant::now(),
            last_connect_error_ms: AtomicU64::new(0),
        });
        fn builder<C>(
            config: &Config,
            health: &Arc<PoolHealth>,
        ) -> bb8::Builder<AsyncDieselConnectionManager<C>>
        where
            C: diesel_async::pooled_connection::PoolableConnection + 'static,
            AsyncDieselConnectionManager<C>: bb8::ManageConnection<Error = PoolError>,
        {
            bb8::Pool::builder()
                .max_size(config.db_pool_size)
                .min_idle(Some(config.db_pool_size.min(2)))
                .connection_timeout(config.db_timeout)
                // Connections are checked by `is_broken` when returned; a per-checkout
                // `SELECT 1` would double every request's round trips.
                .test_on_check_out(false)
                .idle_timeout(Some(Duration::from_secs(300)))
                .error_sink(Box::new(ErrorLog(health.clone())))
        }
        let backend = match &config.database {
            DatabaseUrl::Postgres(url) => {
                let mut manager_config = ManagerConfig::default();
                manager_config.recycling_method = RecyclingMethod::Fast;
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
                    url,
                    manager_config,
                );
                Backend::Pg(builder(config, &health).build_unchecked(manager))
            }
            DatabaseUrl::Sqlite(path) => {
                let mut manager_config = ManagerConfig::<SqliteConn>::default();
                manager_config.recycling_method = RecyclingMethod::Fast;
                manager_config.custom_setup = Box::new(|url| {
                    let url = url.to_owned();
                    async move {
                        let mut conn = SqliteConn::establish(&url).await?;
                        conn.batch_execute(SQLITE_PRAGMAS)
                            .await
                            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                        Ok(conn)
                    }
                    .boxed()
                });
                let url = path.to_string_lossy().into_owned();
                let manager = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(
                    url,
                    manager_config,
                );
                Backend::Sqlite(builder(config, &health).build_unchecked(manager))
            }
        };
        Self { backend, health }
    }

    /// The backend's pool, for `with_conn!`.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Pg(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    /// Checks a connection out of `pool`, mapping a timed-out wait to 503: `overloaded` when
    /// the connections are merely busy, `database_unavailable` when connecting has failed.
    pub async fn checkout<'a, C>(
        &self,
        pool: &'a Pool<C>,
    ) -> Result<bb8::PooledConnection<'a, AsyncDieselConnectionManager<C>>, AppError>
    where
        C: diesel_async::pooled_connection::PoolableConnection + 'static,
        AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = PoolError>,
    {
        pool.get().await.map_err(|err| match err {
            bb8::RunError::User(err) => {
                AppError::database_unavailable("connecting to the database", err)
            }
            bb8::RunError::TimedOut if self.recently_failed() => AppError::database_unavailable(
                "connecting to the database",
                "every recent attempt failed",
            ),
            bb8::RunError::TimedOut => {
                AppError::overloaded("the database pool", "no connection free in time")
            }
        })
    }

    fn recently_failed(&self) -> bool {
        let last = self.health.last_connect_error_ms.load(Ordering::Relaxed);
        last != 0 && self.health.started.elapsed().as_millis() as u64 <= last + 10_000
    }

    /// Answers whether the database takes a query now.
    pub async fn check(&self) -> Result<(), AppError> {
        with_conn!(self, |conn| {
            diesel_async::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), conn)
                .await
                .map_err(db_error)?;
        });
        Ok(())
    }
}

/// Per-connection SQLite settings: WAL for readers beside a writer, a busy timeout instead
/// of instant `database is locked`, foreign keys enforced.
/// `busy_timeout` comes first so that the pragmas after it wait for a lock too.
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";

/// Why the database could not be reached or migrated at start-up.
#[derive(Debug, thiserror::Error)]
#[error("database ({backend}): {cause}")]
pub struct ConnectError {
    /// `postgres` or `sqlite`.
    pub backend: &'static str,
    /// The driver's own message.
    pub cause: String,
}

/// Connects once with tokio-postgres itself, whose error keeps its cause chain
/// ("error connecting to server: Connection refused"), where diesel-async's keeps only
/// the first line.
async fn preflight_postgres(url: &str) -> Result<(), String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|err| error_chain(&err))?;
    drop(client);
    let _ = connection.await;
    Ok(())
}

async fn run_migrations(database: &DatabaseUrl, limit: Duration) -> Result<(), ConnectError> {
    let backend = database.backend();
    let fail = move |cause: String| ConnectError { backend, cause };
    if let DatabaseUrl::Postgres(url) = database {
        match tokio::time::timeout(limit, preflight_postgres(url)).await {
            Err(_) => return Err(fail(format!("no answer within {} ms", limit.as_millis()))),
            Ok(Err(cause)) => return Err(fail(cause)),
            Ok(Ok(())) => {}
        }
    }
    let database = database.clone();
    let task = tokio::task::spawn_blocking(move || -> Result<usize, String> {
        match database {
            DatabaseUrl::Postgres(url) => {
                type Wrapper = diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
                    AsyncPgConnection,
                >;
                let mut conn =
                    <Wrapper as diesel::Connection>::establish(&url).map_err(|e| e.to_string())?;
                conn.run_pending_migrations(PG_MIGRATIONS)
                    .map(|v| v.len())
                    .map_err(|e| e.to_string())
            }
            DatabaseUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())
                    .map_err(|e| e.to_string())?;
                diesel::connection::SimpleConnection::batch_execute(&mut conn, SQLITE_PRAGMAS)
                    .map_err(|e| e.to_string())?;
                conn.run_pending_migrations(SQLITE_MIGRATIONS)
                    .map(|v| v.len())
                    .map_err(|e| e.to_string())
            }
        }
    });
    match tokio::time::timeout(limit, task).await {
        Err(_) => Err(fail(format!("no answer within {} ms", limit.as_millis()))),
        Ok(Err(join)) => Err(fail(format!("migration task failed: {join}"))),
        Ok(Ok(Err(cause))) => Err(fail(cause.trim().to_owned())),
        Ok(Ok(Ok(applied))) => {
            log::info!("database ({backend}) ready, {applied} migration(s) applied");
            Ok(())
        }
    }
}

/// Maps a query error to what the client should see; the cause is kept for the log only.
pub fn db_error(err: DieselError) -> AppError {
    match err {
        DieselError::NotFound => AppError::NotFound("not found".into()),
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            AppError::Conflict("a unique value is already taken".into())
        }
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
            AppError::database_unavailable("a database connection closed", info.message())
        }
        DieselError::DatabaseError(_, ref info) if is_busy(info.message()) => {
            AppError::overloaded("the database is busy", info.message())
        }
        DieselError::DatabaseError(_, ref info) if is_lost(info.message()) => {
            AppError::database_unavailable("the database went away", info.message())
        }
        other => AppError::internal("a database query failed", other),
    }
}

fn is_busy(message: &str) -> bool {
    message.contains("database is locked") || message.contains("database is busy")
}

/// PostgreSQL going away mid-query (shutdown, restart, a killed backend) is an outage,
/// not a bug: the broken connection is dropped by the pool and the next request reconnects.
fn is_lost(message: &str) -> bool {
    [
        "terminating connection",
        "connection closed",
        "error communicating",
        "server closed the connection",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}
