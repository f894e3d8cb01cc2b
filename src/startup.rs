//! Builds the whole service on a listener: migrate, pool, actors, HTTP server. `main` and
//! the tests run the very same code; tests bind port 0. `run` serves until SIGTERM or SIGINT
//! and then shuts down gracefully (`shutdown`).

use std::net::TcpListener;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpServer};

use crate::actors::db::Db;
use crate::config::Config;
use crate::db::{ConnectError, DbPool};
use crate::http::auth::Guard;
use crate::http::middleware::request_context;
use crate::metrics::http::Track;
use crate::metrics::Metrics;
use crate::routes;
use crate::services::Shared;
use crate::shutdown::{Signals, Timings};
use crate::upload::Storage;

/// Why start-up failed; printed as one line by `main`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be reached or migrated.
    #[error(transparent)]
    Database(#[from] ConnectError),
    /// The listening socket could not be bound, or another I/O failure.
    #[error("{0}")]
    Io(String),
}

/// A built, bound, not yet awaited troupe.
pub struct Application {
    port: u16,
    server: Server,
    shared: Shared,
    pool: DbPool,
    signals: Signals,
    timings: Timings,
}

impl Application {
    /// Migrates, connects, starts the actors and binds `config.bind`. Must run inside an
    /// actix system (`#[actix_web::main]`, `#[actix_web::test]`).
    pub async fn build(config: Config) -> Result<Self, StartError> {
        log::info!("configuration: {}", config.summary());
        // Caught from here on: a SIGTERM right after start-up still shuts down gracefully.
        let signals =
            Signals::catch().map_err(|e| StartError::Io(format!("cannot catch signals: {e}")))?;
        let store = Storage::open(&config.storage, &config.aws).map_err(StartError::Io)?;
        DbPool::migrate(&config).await?;
        // This application's own recorder: never the process's global one.
        let metrics = Metrics::new();
        metrics.keep_up();
        let (db, pool) = Db::start(&config, &metrics)
            .await
            .map_err(|e| StartError::Io(e.to_string()))?;
        let shared = Shared::start(&config, db, store, metrics.clone());
        // A replica that serves takes PATCHes: their locks' connection first (PostgreSQL).
        let within = config.db_timeout.max(std::time::Duration::from_secs(5));
        if !shared.uploads.wait_for_locks(within).await {
            log::warn!(
                "upload locks: no lock connection within {} ms; PATCHes get 503 until it opens",
                within.as_millis()
            );
        }
        let listener = TcpListener::bind(config.bind)
            .map_err(|e| StartError::Io(format!("cannot bind {}: {e}", config.bind)))?;
        let port = listener
            .local_addr()
            .map_err(|e| StartError::Io(e.to_string()))?
            .port();
        let pace = web::Data::from(shared.pace().clone());
        let workers = shared.clone();
        let cors = config.cors.clone();
        let guard = Guard::new(&config.api_keys, config.rate_limit, &config.trusted_proxies);
        if let Some(limiter) = guard.as_ref().and_then(Guard::limiter) {
            // Clients whose bucket is full again are forgotten: memory stays bounded.
            actix_web::rt::spawn(async move {
                let mut every = actix_web::rt::time::interval(crate::rate_limit::SWEEP_EVERY);
                loop {
                    every.tick().await;
                    limiter.forget_idle(std::time::Instant::now());
                }
            });
        }
        if config.auth_off {
            log::warn!(
                "TROUPE_AUTH=off: every route is served to anyone who reaches {}",
                config.bind
            );
        } else if !config.api_keys.is_empty() {
            log::info!(
                "access control: {} API keys ({})",
                config.api_keys.len(),
                config.api_keys.names().collect::<Vec<_>>().join(", ")
            );
        }
        let server = HttpServer::new(move || {
            // Runs on each worker's thread: its FetchActor (and awc client) lives there, and
            // its count of requests in flight.
            App::new()
                .app_data(web::Data::new(workers.for_this_worker()))
                .app_data(web::Data::from(workers.lifecycle.worker_requests()))
                .app_data(pace.clone())
                .configure(|cfg| routes::configure(cfg, guard.as_ref()))
                // Outside every route's key check: a preflight is answered before it, and a
                // 401 or 403 leaves with the CORS headers a browser needs to read it. Inside
                // the request context, so its answers get a request id and a log line.
                .wrap({
                    let layer = cors.cors();
                    Condition::new(layer.is_some(), layer.unwrap_or_default())
                })
                .wrap(from_fn(request_context))
                // Outermost: every request is counted as its client is answered.
                .wrap(Track::new(metrics.clone()))
        })
        .workers(config.workers)
        // A client that closes its side is gone: the connection is dropped with its handler
        // future, which cancels that handler's work (upstream calls, queries). Allowing
        // half-closed connections would keep such handlers running to their end.
        .h1_allow_half_closed(false)
        // `run` handles the signals and times the shutdown itself; actix's own timeout is
        // only a backstop past it.
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout.as_secs() + 2)
        .listen(listener)
        .map_err(|e| StartError::Io(e.to_string()))?
        .run();
        log::info!(
            "troupe serving on {}:{port} with {} database, {} storage, {} workers",
            config.bind.ip(),
            pool.backend_name(),
            shared.store.backend(),
            config.workers
        );
        Ok(Self {
            port,
            server,
            shared,
            pool,
            signals,
            timings: Timings {
                drain: config.drain,
                timeout: config.shutdown_timeout,
            },
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process-wide actors' handles (tests reach the actors through these).
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The database pool the actors use.
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// A handle that stops the server (then `run` shuts the actors down and ends).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM or SIGINT and shuts down gracefully (`shutdown`), or until
    /// stopped through [`Application::handle`], and then shuts the actors down.
    pub async fn run(self) -> std::io::Result<()> {
        let Self {
            server,
            shared,
            pool,
            signals,
            timings,
            ..
        } = self;
        // The actors hold the pool; this handle would only keep its connections open past
        // the database actor's end.
        drop(pool);
        crate::shutdown::serve(server, shared, signals, timings).await
    }
}
