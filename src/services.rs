//! `Services`: what a worker's handlers reach troupe's actors through — one handle per
//! actor, the upload store, the limits requests are held to, and where the process is in its
//! life (`/readyz` says `draining`). Handlers take it as their one extractor
//! (`web::Data<Services>`).

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::actors::cpu::CpuPool;
use crate::actors::db::Db;
use crate::actors::fetch::Fetch;
use crate::actors::supervise::Drained;
use crate::actors::upload::Uploads;
use crate::bulk::Pace;
use crate::config::{Config, Limits};
use crate::db::locks::UploadLocks;
use crate::fetch::Upstreams;
use crate::lifecycle::Lifecycle;
use crate::metrics::{Admissions, Metrics};
use crate::upload::Storage;

/// The handles of one HTTP worker.
#[derive(Clone)]
pub struct Services {
    /// Users and upload metadata.
    pub db: Db,
    /// Files being written (`POST /upload`, tus) and removed.
    pub uploads: Uploads,
    /// This worker's upstream fan-out.
    pub fetch: Fetch,
    /// Digests and other CPU-heavy jobs.
    pub cpu: CpuPool,
    /// Where uploads live (handlers read complete files from it).
    pub store: Storage,
    /// What requests may be.
    pub limits: Limits,
    /// Serving, or shutting down.
    pub lifecycle: Lifecycle,
    /// This application's metrics (`/metrics`).
    pub metrics: Metrics,
}

/// The process-wide half of [`Services`]: every actor but the per-worker `FetchActor`
/// (tests reach the actors through it).
#[derive(Clone)]
pub struct Shared {
    /// Users and upload metadata.
    pub db: Db,
    /// Files being written and removed.
    pub uploads: Uploads,
    /// Digests and other CPU-heavy jobs.
    pub cpu: CpuPool,
    /// Where uploads live.
    pub store: Storage,
    /// What requests may be.
    pub limits: Limits,
    /// Serving, or shutting down.
    pub lifecycle: Lifecycle,
    /// This application's metrics (`/metrics`).
    pub metrics: Metrics,
    upstreams: Arc<Upstreams>,
    /// Every worker's `FetchActor` admissions, counted together.
    fetch_admissions: Admissions,
    pace: Arc<Pace>,
    /// Every worker's `Fetch`, for the shutdown.
    fetches: Arc<Mutex<Vec<Fetch>>>,
}

impl Shared {
    /// Starts the process-wide actors besides `db` (`Db::start`): `UploadActor` on an
    /// arbiter of its own under a `Supervisor`, the CPU pool on `SyncArbiter` threads; each
    /// counts into `metrics`. Needs a running actix system.
    pub fn start(config: &Config, db: Db, store: Storage, metrics: Metrics) -> Self {
        let cpu = CpuPool::start(config.cpu_threads, Duration::from_secs(60)).counted_in(&metrics);
        let pace = Pace::new(config.upload_shared_rate_mib << 20);
        let limits = config.limits();
        let uploads = Uploads::start(
            store.clone(),
            db.clone(),
            cpu.clone(),
            pace.clone(),
            limits,
            &metrics,
            UploadLocks::new(config),
        );
        Self {
            db,
            uploads,
            cpu,
            store,
            limits,
            lifecycle: Lifecycle::new(),
            upstreams: Arc::new(Upstreams::measured(&config.upstream, &metrics)),
            fetch_admissions: Admissions::new(&metrics, "fetch"),
            metrics,
            pace,
            fetches: Arc::default(),
        }
    }

    /// How uploads yield to interactive requests (the middleware notes those).
    pub fn pace(&self) -> &Arc<Pace> {
        &self.pace
    }

    /// The services of a worker whose thread this runs on: its own `FetchActor` starts here.
    pub fn for_this_worker(&self) -> Services {
        let fetch = Fetch::start_here(self.upstreams.clone(), self.fetch_admissions.clone());
        self.fetches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(fetch.clone());
        Services {
            db: self.db.clone(),
            uploads: self.uploads.clone(),
            fetch,
            cpu: self.cpu.clone(),
            store: self.store.clone(),
            limits: self.limits,
            lifecycle: self.lifecycle.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Sends every actor its shutdown, in the order they depend on each other: the upload
    /// actor first (its sessions end, a cut PATCH's bytes are written, through the database
    /// and the CPU pool), then the workers' fan-out actors and the CPU pool, the database
    /// last. Each gets up to `within` for its work in progress. Call it once the HTTP workers
    /// have stopped.
    pub async fn shut_down(&self, within: Duration) -> ActorsStopped {
        let started = Instant::now();
        let uploads = self.uploads.shut_down(within).await;
        let fetches: Vec<Fetch> = self
            .fetches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        let mut fetch = Drained::default();
        for one in &fetches {
            let drained = one.shut_down(within).await;
            fetch.in_progress += drained.in_progress;
            fetch.unfinished += drained.unfinished;
        }
        let cpu = self.cpu.shut_down(within).await;
        let db = self.db.shut_down(within).await;
        ActorsStopped {
            uploads,
            fetch,
            cpu,
            db,
            took: started.elapsed(),
        }
    }
}

/// What each actor had in progress when it was shut down, and what of it did not finish:
/// the shutdown's log line.
#[derive(Debug, Clone, Copy)]
pub struct ActorsStopped {
    /// Upload sessions (a cut PATCH's among them).
    pub uploads: Drained,
    /// Fan-outs, over every worker's `FetchActor`.
    pub fetch: Drained,
    /// CPU jobs.
    pub cpu: Drained,
    /// Database queries.
    pub db: Drained,
    /// How long the shutdown of them all took.
    pub took: Duration,
}

impl ActorsStopped {
    /// Whether every actor finished all it had in progress.
    pub fn all_finished(&self) -> bool {
        [self.uploads, self.fetch, self.cpu, self.db]
            .iter()
            .all(|d| d.unfinished == 0)
    }
}

impl fmt::Display for ActorsStopped {
    /// `in 12 ms; in progress then: upload sessions 1, fan-outs 0, cpu jobs 0, db queries 0`,
    /// with `(N unfinished)` after any that had work left when its wait ran out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "in {} ms; in progress then:", self.took.as_millis())?;
        let parts = [
            ("upload sessions", self.uploads),
            ("fan-outs", self.fetch),
            ("cpu jobs", self.cpu),
            ("db queries", self.db),
        ];
        for (i, (what, d)) in parts.into_iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{what} {}", d.in_progress)?;
            if d.unfinished > 0 {
                write!(f, " ({} unfinished)", d.unfinished)?;
            }
        }
        Ok(())
    }
}
