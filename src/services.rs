//! `Services`: what a worker's handlers reach troupe's actors through — one handle per
//! actor, the upload store and the limits requests are held to. Handlers take it as their
//! one extractor (`web::Data<Services>`).

use std::sync::Arc;
use std::time::Duration;

use crate::actors::cpu::CpuPool;
use crate::actors::db::Db;
use crate::actors::fetch::Fetch;
use crate::actors::upload::Uploads;
use crate::bulk::Pace;
use crate::config::{Config, Limits};
use crate::fetch::Upstreams;
use crate::upload::Store;

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
    pub store: Store,
    /// What requests may be.
    pub limits: Limits,
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
    pub store: Store,
    /// What requests may be.
    pub limits: Limits,
    upstreams: Arc<Upstreams>,
    pace: Arc<Pace>,
}

impl Shared {
    /// Starts the process-wide actors besides `db` (`Db::start`): `UploadActor` on an
    /// arbiter of its own under a `Supervisor`, the CPU pool on `SyncArbiter` threads. Needs
    /// a running actix system.
    pub fn start(config: &Config, db: Db, store: Store) -> Self {
        let cpu = CpuPool::start(config.cpu_threads, Duration::from_secs(60));
        let pace = Pace::new(config.upload_shared_rate_mib << 20);
        let limits = config.limits();
        let uploads = Uploads::start(store.clone(), db.clone(), cpu.clone(), pace.clone(), limits);
        Self {
            db,
            uploads,
            cpu,
            store,
            limits,
            upstreams: Arc::new(Upstreams::new(&config.upstream)),
            pace,
        }
    }

    /// How uploads yield to interactive requests (the middleware notes those).
    pub fn pace(&self) -> &Arc<Pace> {
        &self.pace
    }

    /// The services of a worker whose thread this runs on: its own `FetchActor` starts here.
    pub fn for_this_worker(&self) -> Services {
        Services {
            db: self.db.clone(),
            uploads: self.uploads.clone(),
            fetch: Fetch::start_here(self.upstreams.clone()),
            cpu: self.cpu.clone(),
            store: self.store.clone(),
            limits: self.limits,
        }
    }
}
