//! The database: one pool enum over PostgreSQL and SQLite, one query body per operation.
//!
//! [`with_conn!`](crate::with_conn) checks a connection out of whichever pool is configured and runs the same
//! diesel expression against it, so every query in `db::*` is written once for both backends.
//!
//! Every operation runs within a [`Budget`]: its wait for a connection
//! (`TROUPE_DB_TIMEOUT_MS`), then its statement (`TROUPE_DB_STATEMENT_TIMEOUT_MS`), which
//! the database itself ends when it runs over (PostgreSQL's `statement_timeout` and
//! SQLite's `busy_timeout`, set on every connection). Whoever asks waits longer than the
//! whole budget ([`DbPool::answer_within`]), so the answer it gets is what happened: a 503
//! on a write means the write was not made.

pub mod page;
pub mod schema;
pub mod uploads;
pub mod users;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::result::{DatabaseErrorKind, Error as DieselError, QueryResult};
use diesel::sqlite::SqliteConnection;
use diesel::Connection as _;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolError, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection, TransactionManager};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures::FutureExt;

use crate::config::{Config, DatabaseUrl};
use crate::error::{error_chain, AppError};

/// The SQLite connection type the pool holds: diesel's sync connection on blocking threads.
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// How long past its budget an operation waits for the database's own answer (the error
/// that ended its statement) before it gives up on the connection.
const GUARD_MARGIN: Duration = Duration::from_millis(250);

/// What the caller adds to [`GUARD_MARGIN`] for the hop to the actor and back.
const CALLER_MARGIN: Duration = Duration::from_millis(250);

/// The connection pool, over whichever backend `DATABASE_URL` picked.
#[derive(Clone)]
pub struct DbPool {
    backend: Backend,
    health: Arc<PoolHealth>,
    /// `TROUPE_DB_TIMEOUT_MS`: the longest wait for a connection.
    checkout_timeout: Duration,
    /// `TROUPE_DB_STATEMENT_TIMEOUT_MS`: the longest a statement runs, lock waits included.
    statement_timeout: Duration,
}

/// The pool of one backend; `with_conn!` matches on it.
#[derive(Clone)]
pub enum Backend {
    /// PostgreSQL through tokio-postgres.
    Pg(Pool<AsyncPgConnection>),
    /// SQLite through the sync connection on blocking threads.
    Sqlite(Pool<SqliteConn>),
}

/// The time one operation has: a connection wait, then a statement that the database ends
/// by `end` at the latest.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    end: Instant,
}

impl Budget {
    /// A budget starting now: at most `checkout` waiting for a connection, then `statement`.
    pub fn new(checkout: Duration, statement: Duration) -> Self {
        Self {
            end: Instant::now() + checkout + statement,
        }
    }

    /// When troupe stops waiting for the database's answer.
    pub fn guard_until(&self) -> Instant {
        self.end + GUARD_MARGIN
    }
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

/// Runs `$body` with `$conn` bound to a `&mut` connection of whichever backend is configured,
/// within the pool's [`Budget`]. The body is compiled once per backend, so it must be
/// backend-neutral diesel.
#[macro_export]
macro_rules! with_conn {
    ($pool:expr, |$conn:ident| $body:expr) => {{
        let budget = $pool.budget();
        match $pool.backend() {
            $crate::db::Backend::Pg(backend) => {
                $crate::with_conn!(@attempt $pool, backend, budget, |$conn| $body)
            }
            $crate::db::Backend::Sqlite(backend) => {
                $crate::with_conn!(@attempt $pool, backend, budget, |$conn| $body)
            }
        }
    }};
    (@attempt $pool:expr, $backend:ident, $budget:ident, |$conn:ident| $body:expr) => {{
        let mut guard = $pool.checkout($backend).await?;
        let outcome = $pool
            .guarded(&$budget, async {
                let $conn = &mut *guard;
                $body
            })
            .await;
        $crate::db::settle(&mut *guard, outcome)?
    }};
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
        let (checkout_timeout, statement_timeout) =
            (config.db_timeout, config.db_statement_timeout);
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
                manager_config.custom_setup = Box::new(move |url| {
                    let attempt =
                        connect_postgres(url.to_owned(), statement_timeout, checkout_timeout);
                    async move {
                        attempt
                            .await
                            .map_err(diesel::ConnectionError::BadConnection)
                    }
                    .boxed()
                });
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
                    url,
                    manager_config,
                );
                Backend::Pg(builder(config, &health).build_unchecked(manager))
            }
            DatabaseUrl::Sqlite(path) => {
                let mut manager_config = ManagerConfig::<SqliteConn>::default();
                manager_config.recycling_method = RecyclingMethod::Fast;
                manager_config.custom_setup = Box::new(move |url| {
                    let attempt = connect_sqlite(url.to_owned(), statement_timeout);
                    async move {
                        attempt
                            .await
                            .map_err(diesel::ConnectionError::BadConnection)
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
        Self {
            backend,
            health,
            checkout_timeout,
            statement_timeout,
        }
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

    /// The budget of one operation starting now.
    pub fn budget(&self) -> Budget {
        Budget::new(self.checkout_timeout, self.statement_timeout)
    }

    /// How long a caller must be ready to wait for an operation's answer: its budget, the
    /// wait for the database's own answer, and the hop to the actor. A caller that gave up
    /// sooner could not tell a write that was made from one that was not.
    pub fn answer_within(&self) -> Duration {
        self.checkout_timeout + self.statement_timeout + GUARD_MARGIN + CALLER_MARGIN
    }

    /// Runs `query` until the budget's guard: past it, the database has not even answered
    /// that it ended the statement, and the operation fails as unavailable.
    pub async fn guarded<T>(
        &self,
        budget: &Budget,
        query: impl Future<Output = QueryResult<T>>,
    ) -> Result<QueryResult<T>, AppError> {
        tokio::time::timeout_at(budget.guard_until().into(), query)
            .await
            .map_err(|_| {
                AppError::database_unavailable(
                    "a database statement",
                    "no answer from the database within the statement timeout",
                )
            })
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
            diesel_async::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), conn).await
        })
        .map_err(db_error)?;
        Ok(())
    }
}

/// What an attempt left on its connection: one that did not answer in time is marked
/// broken, so that bb8 discards it when it is returned.
pub fn settle<C: AsyncConnection, T>(
    conn: &mut C,
    outcome: Result<QueryResult<T>, AppError>,
) -> Result<QueryResult<T>, AppError> {
    if outcome.is_err() {
        C::TransactionManager::transaction_manager_status_mut(conn).set_in_error();
    }
    outcome
}

/// Opens a PostgreSQL connection whose statements the server ends after
/// `statement_timeout`, giving up after `within`; the error keeps the driver's cause chain
/// ("error connecting to server: Connection refused"), where diesel-async keeps only the
/// first line.
async fn connect_postgres(
    url: String,
    statement_timeout: Duration,
    within: Duration,
) -> Result<AsyncPgConnection, String> {
    let attempt = async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map_err(|err| error_chain(&err))?;
        let mut conn = AsyncPgConnection::try_from_client_and_connection(client, connection)
            .await
            .map_err(|err| err.to_string())?;
        let set = format!("SET statement_timeout = {}", statement_timeout.as_millis());
        conn.batch_execute(&set)
            .await
            .map_err(|err| err.to_string())?;
        Ok(conn)
    };
    tokio::time::timeout(within, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", within.as_millis())))
}

/// Opens an SQLite connection with troupe's pragmas, waiting at most `busy` for a lock.
async fn connect_sqlite(path: String, busy: Duration) -> Result<SqliteConn, String> {
    let mut conn = SqliteConn::establish(&path)
        .await
        .map_err(|err| err.to_string())?;
    conn.batch_execute(&sqlite_pragmas(busy))
        .await
        .map_err(|err| err.to_string())?;
    Ok(conn)
}

/// Per-connection SQLite settings: WAL for readers beside a writer, a busy timeout (`busy`)
/// instead of instant `database is locked`, foreign keys enforced.
/// `busy_timeout` comes first so that the pragmas after it wait for a lock too.
fn sqlite_pragmas(busy: Duration) -> String {
    format!(
        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        busy.as_millis()
    )
}

/// Migrations wait this long for a lock another process holds.
const MIGRATION_BUSY: Duration = Duration::from_secs(5);

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
                diesel::connection::SimpleConnection::batch_execute(
                    &mut conn,
                    &sqlite_pragmas(MIGRATION_BUSY),
                )
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
        DieselError::DatabaseError(_, ref info) if is_cancelled(info.message()) => {
            AppError::overloaded("the database ended a statement", info.message())
        }
        DieselError::DatabaseError(_, ref info) if is_lost(info.message()) => {
            AppError::database_unavailable("the database went away", info.message())
        }
        other => AppError::internal("a database query failed", other),
    }
}

/// SQLite's answer when `busy_timeout` ran out: the statement did nothing.
fn is_busy(message: &str) -> bool {
    message.contains("database is locked") || message.contains("database is busy")
}

/// PostgreSQL's answer when it ended a statement (`statement_timeout`, a lock timeout, a
/// cancel): the statement and its implicit transaction did nothing.
fn is_cancelled(message: &str) -> bool {
    message.starts_with("canceling statement due to")
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
