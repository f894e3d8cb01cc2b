//! `CpuActor`: CPU-heavy work on `SyncArbiter` threads, behind an admission limit.
//!
//! `SyncArbiter`'s queue is unbounded, so [`CpuPool`] counts the jobs in flight and answers
//! 503 `overloaded` when all threads are busy and the small queue in front of them is full.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;

use super::supervise::{ask, guard_sync, Probe};
use crate::cpu::{digest_hex, Algorithm};
use crate::error::AppError;

/// One `SyncArbiter` thread's actor; it holds nothing, so a restart loses nothing.
#[derive(Debug, Default)]
pub struct CpuActor;

impl Actor for CpuActor {
    type Context = SyncContext<Self>;
}

/// Computes the hex digest of some bytes.
#[derive(Debug, Message)]
#[rtype(result = "Result<String, AppError>")]
pub struct ComputeDigest {
    /// Which digest.
    pub algorithm: Algorithm,
    /// The bytes to digest.
    pub data: Bytes,
}

impl Handler<ComputeDigest> for CpuActor {
    type Result = Result<String, AppError>;
    fn handle(&mut self, msg: ComputeDigest, ctx: &mut Self::Context) -> Self::Result {
        guard_sync(ctx, || Ok(digest_hex(msg.algorithm, &msg.data)))
    }
}

impl Handler<Probe> for CpuActor {
    type Result = ();
    fn handle(&mut self, _msg: Probe, _ctx: &mut Self::Context) {}
}

#[cfg(feature = "fault-injection")]
impl Handler<super::supervise::InjectFault> for CpuActor {
    type Result = Result<(), AppError>;
    fn handle(
        &mut self,
        msg: super::supervise::InjectFault,
        ctx: &mut Self::Context,
    ) -> Self::Result {
        use super::supervise::InjectFault;
        guard_sync(ctx, || match msg {
            InjectFault::Panic | InjectFault::PanicInFuture => panic!("injected panic"),
            InjectFault::Block(d) => {
                std::thread::sleep(d);
                Ok(())
            }
        })
    }
}

/// The CPU threads and their admission limit; cheap to clone.
#[derive(Clone)]
pub struct CpuPool {
    addr: Addr<CpuActor>,
    threads: usize,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    timeout: Duration,
}

/// Holds one admitted job's place until dropped.
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CpuPool {
    /// Starts `threads` `CpuActor`s; at most `threads * 2` jobs are admitted at once.
    pub fn start(threads: usize, timeout: Duration) -> Self {
        Self {
            addr: SyncArbiter::start(threads, CpuActor::default),
            threads,
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: threads * 2,
            timeout,
        }
    }

    /// The actors' address (tests, probes).
    pub fn addr(&self) -> &Addr<CpuActor> {
        &self.addr
    }

    /// How many threads serve.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn admit(&self) -> Result<Admitted, AppError> {
        let prev = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Admitted(self.in_flight.clone());
        if prev >= self.max_in_flight {
            return Err(AppError::Overloaded("all CPU threads are busy".into()));
        }
        Ok(slot)
    }

    /// Runs one job on a CPU thread if there is room, else 503 at once.
    pub async fn run<M, T>(&self, msg: M) -> Result<T, AppError>
    where
        CpuActor: Handler<M>,
        M: Message<Result = Result<T, AppError>> + Send + 'static,
        T: Send + 'static,
    {
        let _slot = self.admit()?;
        ask(&self.addr, msg, self.timeout).await
    }
}
