//! The actors, one file each with its messages, and the handle that carries their addresses.

pub mod cpu;
pub mod db;
pub mod fetch;
pub mod supervise;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::config::Config;
use crate::db::DbPool;
use crate::fetch::Upstreams;
use cpu::CpuPool;
use db::DbActor;

/// Every actor's address: what handlers, `/readyz` and tests reach the actors through.
#[derive(Clone)]
pub struct Actors {
    /// Users and upload metadata.
    pub db: Addr<DbActor>,
    /// Digests and other CPU-heavy jobs.
    pub cpu: CpuPool,
    /// How long a handler waits for the database actor's answer.
    pub db_timeout: Duration,
    /// The upstream sources with their breakers and statistics, shared by every worker's
    /// `FetchActor` (each worker starts its own: awc clients cannot cross threads).
    pub upstreams: Arc<Upstreams>,
}

impl Actors {
    /// Starts every actor: `DbActor` on an arbiter of its own under a `Supervisor`, the CPU
    /// pool on `SyncArbiter` threads. Needs a running actix system.
    pub fn start(config: &Config, pool: DbPool) -> Self {
        let max_in_flight = config.db_pool_size as usize * 32;
        let db_arbiter = Arbiter::new();
        let db = Supervisor::start_in_arbiter(&db_arbiter.handle(), move |_| {
            DbActor::new(pool, max_in_flight)
        });
        // The pool answers within `db_timeout`; the margin covers the hop to the actor.
        let db_timeout = config.db_timeout + Duration::from_millis(500);
        Self {
            db,
            cpu: CpuPool::start(config.cpu_threads, Duration::from_secs(60)),
            db_timeout,
            upstreams: Arc::new(Upstreams::new(&config.upstream)),
        }
    }
}
