//! The actors, one file each with its messages, and the handle that carries their addresses.

pub mod cpu;
pub mod db;
pub mod fetch;
pub mod supervise;
pub mod upload;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::config::Config;
use crate::db::DbPool;
use crate::fetch::Upstreams;
use crate::upload::pace::Pace;
use crate::upload::Store;
use cpu::CpuPool;
use db::DbActor;
use upload::UploadActor;

/// Every actor's address: what handlers, `/readyz` and tests reach the actors through.
#[derive(Clone)]
pub struct Actors {
    /// Users and upload metadata.
    pub db: Addr<DbActor>,
    /// Digests and other CPU-heavy jobs.
    pub cpu: CpuPool,
    /// Files being written (`POST /upload`, tus).
    pub upload: Addr<UploadActor>,
    /// Where uploads live (handlers read complete files from it).
    pub store: Store,
    /// How long a handler waits for the database actor's answer.
    pub db_timeout: Duration,
    /// The upstream sources with their breakers and statistics, shared by every worker's
    /// `FetchActor` (each worker starts its own: awc clients cannot cross threads).
    pub upstreams: Arc<Upstreams>,
    /// The largest upload taken (`TROUPE_MAX_UPLOAD_BYTES`).
    pub max_upload_bytes: u64,
    /// How long an untouched unfinished tus upload lives (`TROUPE_TUS_EXPIRY_SECS`).
    pub tus_expiry: Duration,
    /// Interactive requests in flight, and how uploads yield to them.
    pub pace: Arc<Pace>,
}

impl Actors {
    /// Starts every actor: `DbActor` and `UploadActor` each on an arbiter of its own under a
    /// `Supervisor`, the CPU pool on `SyncArbiter` threads. Needs a running actix system.
    pub fn start(config: &Config, pool: DbPool, store: Store) -> Self {
        let max_in_flight = config.db_pool_size as usize * 32;
        let db_arbiter = Arbiter::new();
        let db = Supervisor::start_in_arbiter(&db_arbiter.handle(), move |_| {
            DbActor::new(pool, max_in_flight)
        });
        // The pool answers within `db_timeout`; the margin covers the hop to the actor.
        let db_timeout = config.db_timeout + Duration::from_millis(500);
        let cpu = CpuPool::start(config.cpu_threads, Duration::from_secs(60));
        let upload_arbiter = Arbiter::new();
        let upload = {
            let (store, db, cpu, expiry) =
                (store.clone(), db.clone(), cpu.clone(), config.tus_expiry);
            Supervisor::start_in_arbiter(&upload_arbiter.handle(), move |_| {
                UploadActor::new(store, db, db_timeout, cpu, expiry)
            })
        };
        Self {
            db,
            cpu,
            upload,
            store,
            db_timeout,
            upstreams: Arc::new(Upstreams::new(&config.upstream)),
            max_upload_bytes: config.max_upload_bytes,
            pace: Pace::new(config.upload_shared_rate_mib << 20),
            tus_expiry: config.tus_expiry,
        }
    }
}
