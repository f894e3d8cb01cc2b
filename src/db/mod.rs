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
//!
//! Connections: one found closed at checkout is dropped and another taken (no round trip:
//! its driver already knows); a read that loses its connection runs once more on a fresh one;
//! a write is never sent twice. While the database is known to be down ([`circuit`]), a
//! checkout that would wait for a new connection fails at once with `database_unavailable`.

pub mod circuit;
pub mod locks;
pub mod page;
pub mod postgres;
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
    AsyncDieselConnectionManager, ManagerConfig, PoolError, PoolableConnection, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection, TransactionManager};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures::FutureExt;

use crate::config::{Config, DatabaseUrl};
use crate::error::AppError;
use crate::metrics::Occupancy;
use circuit::{Circuit, Probe};
use postgres::PgTarget;

/// The SQLite connection type the pool holds: diesel's sync connection on blocking threads.
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// The PostgreSQL advisory lock (one `bigint` key, "troupemi" in ASCII) that replicas
/// starting at once on one database take in turn around their migrations: without it,
/// two of them creating the same table fail (`duplicate key value violates unique
/// constraint "pg_type_typname_nsp_index"`) and exit.
const PG_MIGRATION_LOCK: i64 = 0x7472_6f75_7065_6d69;

/// How long past its budget an operation waits for the database's own answer (the error
/// that ended its statement) before it gives up on the connection.
const GUARD_MARGIN: Duration = Duration::from_millis(250);

/// What the caller adds to [`GUARD_MARGIN`] for the hop to the actor and back.
const CALLER_MARGIN: Duration = Duration::from_millis(250);

/// Readiness checks wait this long for a connection, and this long for `SELECT 1`: well
/// inside `/readyz`'s one second, so the check itself says why it failed.
const CHECK_CHECKOUT: Duration = Duration::from_millis(300);
const CHECK_STATEMENT: Duration = Duration::from_millis(200);

/// The connection pool, over whichever backend `DATABASE_URL` picked.
#[derive(Clone)]
pub struct DbPool {
    backend: Backend,
    circuit: Arc<Circuit>,
    /// `TROUPE_DB_TIMEOUT_MS`: the longest wait for a connection.
    checkout_timeout: Duration,
    /// `TROUPE_DB_STATEMENT_TIMEOUT_MS`: the longest a statement runs, lock waits included.
    statement_timeout: Duration,
    /// `TROUPE_DB_POOL_SIZE`.
    max_size: u32,
    /// Checkouts waiting now, and those that found no connection in time (`/metrics`).
    waiting: Occupancy,
    wait_timeouts: Arc<AtomicU64>,
}

/// The pool's figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    /// Connections open.
    pub connections: u32,
    /// Of which idle.
    pub idle: u32,
    /// The pool's size.
    pub max: u32,
    /// Checkouts under way now (waiting for a connection, or about to get one).
    pub waiting: usize,
    /// Checkouts that waited for a connection and got one.
    pub waited: u64,
    /// Checkouts that found no connection free in time.
    pub wait_timeouts: u64,
    /// Connections opened.
    pub opened: u64,
}

/// The pool of one backend; `with_conn!` matches on it.
#[derive(Clone)]
pub enum Backend {
    /// PostgreSQL through tokio-postgres.
    Pg(Pool<AsyncPgConnection>),
    /// SQLite through the sync connection on blocking threads.
    Sqlite(Pool<SqliteConn>),
}

/// Whether an operation may run twice: a read may, a write must not (it may have been made
/// the first time, for all troupe can tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Runs once more on a fresh connection when its connection is lost under it.
    Read,
    /// Sent once, and only on a connection not known to be closed.
    Write,
}

/// The time one operation has: a connection wait, then a statement that the database ends
/// by `end` at the latest.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    end: Instant,
    statement: Duration,
}

impl Budget {
    /// A budget starting now: at most `checkout` waiting for a connection, then `statement`.
    pub fn new(checkout: Duration, statement: Duration) -> Self {
        Self {
            end: Instant::now() + checkout + statement,
            statement,
        }
    }

    /// The last moment to wait for a connection: the rest is the statement's.
    pub fn checkout_until(&self) -> Instant {
        self.end.checked_sub(self.statement).unwrap_or(self.end)
    }

    /// When troupe stops waiting for the database's answer.
    pub fn guard_until(&self) -> Instant {
        self.end + GUARD_MARGIN
    }

    /// Whether one more attempt still has its statement's whole time ahead.
    pub fn can_retry(&self) -> bool {
        Instant::now() < self.checkout_until()
    }
}

/// Runs `$body` with `$conn` bound to a `&mut` connection of whichever backend is configured,
/// within the pool's [`Budget`]. `read` bodies run once more on a fresh connection when theirs
/// is lost under them; `write` bodies run at most once. The body is compiled once per
/// backend, so it must be backend-neutral diesel; a `read` body must not move its values.
#[macro_export]
macro_rules! with_conn {
    ($pool:expr, read, |$conn:ident| $body:expr) => {
        $crate::with_conn!(@run $pool, $pool.budget(), read, |$conn| $body)
    };
    ($pool:expr, write, |$conn:ident| $body:expr) => {
        $crate::with_conn!(@run $pool, $pool.budget(), write, |$conn| $body)
    };
    (@run $pool:expr, $budget:expr, $access:ident, |$conn:ident| $body:expr) => {{
        let budget = $budget;
        match $pool.backend() {
            $crate::db::Backend::Pg(backend) => {
                $crate::with_conn!(@$access $pool, backend, budget, |$conn| $body)
            }
            $crate::db::Backend::Sqlite(backend) => {
                $crate::with_conn!(@$access $pool, backend, budget, |$conn| $body)
            }
        }
    }};
    // Not the `@read` loop with its retry switched off: a write body may move its values,
    // which no loop allows.
    (@write $pool:expr, $backend:ident, $budget:ident, |$conn:ident| $body:expr) => {{
        let mut guard = $pool
            .checkout($backend, &$budget, $crate::db::Access::Write)
            .await?;
        let outcome = $pool
            .guarded(&$budget, async {
                let $conn = &mut *guard;
                $body
            })
            .await;
        $crate::db::settle(&mut *guard, outcome)?
    }};
    (@read $pool:expr, $backend:ident, $budget:ident, |$conn:ident| $body:expr) => {{
        let mut retried = false;
        loop {
            let mut guard = $pool
                .checkout($backend, &$budget, $crate::db::Access::Read)
                .await?;
            let outcome = $pool
                .guarded(&$budget, async {
                    let $conn = &mut *guard;
                    $body
                })
                .await;
            match $crate::db::settle(&mut *guard, outcome)? {
                Err(err) if !retried && $budget.can_retry() && $crate::db::is_connection_lost(&err) => {
                    drop(guard);
                    $crate::db::note_retry(&err);
                    retried = true;
                }
                outcome => break outcome,
            }
        }
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
        let (checkout_timeout, statement_timeout) =
            (config.db_timeout, config.db_statement_timeout);
        let (backend, circuit) = match &config.database {
            DatabaseUrl::Postgres(url) => {
                // Read once; `migrate` has already refused a URL this fails on, so an error
                // here only reaches the pool's connects (503 `database_unavailable`).
                let target = PgTarget::parse(url).map(Arc::new);
                let (pool, circuit) = pool_over(config, url, move |_| {
                    let target = target.clone();
                    async move {
                        let target = target?;
                        connect_postgres(&target, Some(statement_timeout), checkout_timeout).await
                    }
                });
                (Backend::Pg(pool), circuit)
            }
            DatabaseUrl::Sqlite(path) => {
                let url = path.to_string_lossy();
                let (pool, circuit) = pool_over(config, &url, move |url| {
                    connect_sqlite(url, statement_timeout)
                });
                (Backend::Sqlite(pool), circuit)
            }
        };
        Self {
            backend,
            circuit,
            checkout_timeout,
            statement_timeout,
            max_size: config.db_pool_size,
            waiting: Occupancy::default(),
            wait_timeouts: Arc::default(),
        }
    }

    /// The pool's figures now.
    pub fn stats(&self) -> PoolStats {
        let state = match &self.backend {
            Backend::Pg(pool) => pool.state(),
            Backend::Sqlite(pool) => pool.state(),
        };
        PoolStats {
            connections: state.connections,
            idle: state.idle_connections,
            max: self.max_size,
            waiting: self.waiting.now(),
            waited: state.statistics.get_waited,
            wait_timeouts: self.wait_timeouts.load(Ordering::Relaxed),
            opened: state.statistics.connections_created,
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

    /// Checks a connection out of `pool` by the budget's `checkout_until`. A connection
    /// whose server has closed it is dropped and another taken. Fails with 503:
    /// `database_unavailable` at once while the database is known to be down (unless a
    /// connection is idle), `overloaded` when every connection stays busy.
    pub async fn checkout<'a, C>(
        &self,
        pool: &'a Pool<C>,
        budget: &Budget,
        access: Access,
    ) -> Result<bb8::PooledConnection<'a, AsyncDieselConnectionManager<C>>, AppError>
    where
        C: PoolableConnection + 'static,
        AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = PoolError>,
    {
        loop {
            let opened = self.circuit.opened();
            if self.circuit.is_down() && pool.state().idle_connections == 0 {
                return Err(self.unreachable());
            }
            let waiting = self.waiting.enter();
            let got = tokio::select! {
                biased;
                got = pool.get() => got,
                () = opened => return Err(self.unreachable()),
                () = tokio::time::sleep_until(budget.checkout_until().into()) => {
                    Err(bb8::RunError::TimedOut)
                }
            };
            drop(waiting);
            let mut conn = match got {
                Ok(conn) => conn,
                Err(_) if self.circuit.is_down() => return Err(self.unreachable()),
                Err(bb8::RunError::User(err)) => {
                    return Err(AppError::database_unavailable(
                        "connecting to the database",
                        err,
                    ))
                }
                Err(bb8::RunError::TimedOut) => {
                    self.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(AppError::overloaded(
                        "the database pool",
                        "no connection free in time",
                    ));
                }
            };
            if access == Access::Write {
                // A write goes out once, so not on a connection the server has already
                // closed: this lets the connection's driver read whatever arrived first
                // (a termination notice), so that `is_broken` below knows of it.
                tokio::task::yield_now().await;
            }
            if PoolableConnection::is_broken(&mut *conn) {
                // Dropped here, bb8 sees it broken and discards it.
                log::info!("a pooled database connection was closed by the server; taking another");
                continue;
            }
            return Ok(conn);
        }
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

    fn unreachable(&self) -> AppError {
        self.circuit.ensure_probe();
        AppError::database_unavailable("the database is unreachable", self.circuit.cause())
    }

    /// Answers whether the database takes a query now, within well under a second.
    pub async fn check(&self) -> Result<(), AppError> {
        let budget = Budget::new(
            self.checkout_timeout.min(CHECK_CHECKOUT),
            self.statement_timeout.min(CHECK_STATEMENT),
        );
        with_conn!(@run self, budget, read, |conn| {
            diesel_async::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), conn).await
        })
        .map_err(db_error)?;
        Ok(())
    }
}

/// What an attempt left on its connection: one that is lost or did not answer in time is
/// marked broken, so that bb8 discards it when it is returned.
pub fn settle<C: AsyncConnection, T>(
    conn: &mut C,
    outcome: Result<QueryResult<T>, AppError>,
) -> Result<QueryResult<T>, AppError> {
    let broken = match &outcome {
        Err(_) => true,
        Ok(Err(err)) => is_connection_lost(err),
        Ok(Ok(_)) => false,
    };
    if broken {
        C::TransactionManager::transaction_manager_status_mut(conn).set_in_error();
    }
    outcome
}

/// Whether `err` says the connection itself is gone (closed, reset, ended by the server),
/// as opposed to the statement failing on a working connection.
pub fn is_connection_lost(err: &DieselError) -> bool {
    match err {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => true,
        DieselError::DatabaseError(_, info) => is_lost(info.message()),
        _ => false,
    }
}

/// The log line of a read that runs again (within the request's scope: it names the request).
pub fn note_retry(err: &DieselError) {
    log::info!("a read lost its database connection ({err}); reading again on a fresh one");
}

/// A bb8 pool of `C` whose connections `connect` opens, each attempt reported to the
/// circuit it answers with; the circuit's probe is `connect` too.
fn pool_over<C, F, Fut>(config: &Config, url: &str, connect: F) -> (Pool<C>, Arc<Circuit>)
where
    C: PoolableConnection + 'static,
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = PoolError>,
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<C, String>> + Send + 'static,
{
    let connect = Arc::new(connect);
    let probe: Probe = {
        let (connect, url) = (connect.clone(), url.to_owned());
        Arc::new(move || {
            let attempt = connect(url.clone());
            Box::pin(async move { attempt.await.map(drop) })
        })
    };
    // The probe's own attempts are bounded inside `connect`; this is a backstop.
    let circuit = Circuit::new(probe, config.db_timeout + Duration::from_secs(1));
    let mut manager_config = ManagerConfig::<C>::default();
    manager_config.recycling_method = RecyclingMethod::Fast;
    let setup_circuit = circuit.clone();
    manager_config.custom_setup = Box::new(move |url| {
        let (circuit, attempt) = (setup_circuit.clone(), connect(url.to_owned()));
        async move {
            let attempt = attempt.await;
            circuit.record(&attempt);
            attempt.map_err(diesel::ConnectionError::BadConnection)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::<C>::new_with_config(url, manager_config);
    let pool = bb8::Pool::builder()
        .max_size(config.db_pool_size)
        .min_idle(Some(config.db_pool_size.min(2)))
        .connection_timeout(config.db_timeout)
        // A failed connect opens the circuit, whose probe finds out when the database is
        // back; bb8 retrying by itself would only hold the waiting requests longer.
        .retry_connection(false)
        // Connections are checked by `is_broken` at checkout and when returned; a
        // per-checkout `SELECT 1` would double every request's round trips.
        .test_on_check_out(false)
        .idle_timeout(Some(Duration::from_secs(300)))
        .build_unchecked(manager);
    (pool, circuit)
}

/// Opens a PostgreSQL connection (over TLS as `sslmode` says) whose statements the server
/// ends after `statement_timeout`, if given, giving up after `within`; the error keeps the
/// driver's cause chain ("error connecting to server: Connection refused"), where
/// diesel-async keeps only the first line.
async fn connect_postgres(
    target: &PgTarget,
    statement_timeout: Option<Duration>,
    within: Duration,
) -> Result<AsyncPgConnection, String> {
    let attempt = async {
        let mut conn = target.open().await?;
        if let Some(timeout) = statement_timeout {
            let set = format!("SET statement_timeout = {}", timeout.as_millis());
            conn.batch_execute(&set)
                .await
                .map_err(|err| err.to_string())?;
        }
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

/// The connection migrations run on: PostgreSQL's opened here, on the async side, through
/// the same [`PgTarget`] the pool uses (TLS included); SQLite's opened on the blocking thread.
enum MigrationConn {
    Pg(Box<AsyncPgConnection>),
    Sqlite(std::path::PathBuf),
}

/// Whether this session is encrypted, and how, as the server sees it (`pg_stat_ssl`), for the
/// start-up line.
async fn session_tls(conn: &mut AsyncPgConnection) -> String {
    #[derive(diesel::QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        version: Option<String>,
    }
    let query = diesel::sql_query(
        "SELECT CASE WHEN ssl THEN version END AS version FROM pg_stat_ssl \
         WHERE pid = pg_backend_pid()",
    );
    match diesel_async::RunQueryDsl::get_result::<Ssl>(query, conn).await {
        Ok(Ssl { version: Some(v) }) => format!("over TLS ({v})"),
        Ok(Ssl { version: None }) => "unencrypted".to_owned(),
        Err(_) => "TLS unknown".to_owned(),
    }
}

async fn run_migrations(database: &DatabaseUrl, limit: Duration) -> Result<(), ConnectError> {
    let backend = database.backend();
    let fail = move |cause: String| ConnectError { backend, cause };
    let (conn, how) = match database {
        DatabaseUrl::Postgres(url) => {
            let target = PgTarget::parse(url).map_err(fail)?;
            let mut conn = connect_postgres(&target, None, limit).await.map_err(fail)?;
            let how = format!(
                "{}, sslmode={}",
                session_tls(&mut conn).await,
                target.mode()
            );
            (MigrationConn::Pg(Box::new(conn)), format!(" {how};"))
        }
        DatabaseUrl::Sqlite(path) => (MigrationConn::Sqlite(path.clone()), ",".to_owned()),
    };
    let task = tokio::task::spawn_blocking(move || -> Result<usize, String> {
        match conn {
            MigrationConn::Pg(conn) => {
                type Wrapper = diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
                    AsyncPgConnection,
                >;
                let mut conn = Wrapper::from(*conn);
                // A session lock: it ends with this connection, right after the run. The
                // first replica applies the migrations; the others wait, then find none.
                diesel::connection::SimpleConnection::batch_execute(
                    &mut conn,
                    &format!("SELECT pg_advisory_lock({PG_MIGRATION_LOCK})"),
                )
                .map_err(|e| format!("taking the migration lock: {e}"))?;
                conn.run_pending_migrations(PG_MIGRATIONS)
                    .map(|v| v.len())
                    .map_err(|e| e.to_string())
            }
            MigrationConn::Sqlite(path) => {
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
            log::info!("database ({backend}) ready{how} {applied} migration(s) applied");
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
