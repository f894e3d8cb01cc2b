//! `CpuActor`: CPU-heavy work on `SyncArbiter` threads, behind an admission limit.
//!
//! `SyncArbiter`'s queue is unbounded, so [`CpuPool`] counts the jobs in flight and answers
//! 503 `overloaded` when all threads are busy and the small queue in front of them is full
//! ([`CpuPool::run`]), or after a bounded wait for a place ([`CpuPool::run_waiting`], for the
//! next step of work already under way, such as the next chunk of an upload's digest).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::supervise::{ask_counted, guard_sync, is_alive, Drained, Probe};
use crate::digest::{digest_file, digest_hex, Algorithm, Hasher};
use crate::error::AppError;
use crate::metrics::{Admissions, Metrics, Occupancy};

/// One `SyncArbiter` thread's actor; it holds nothing, so a restart loses nothing.
#[derive(Debug, Default)]
pub struct CpuActor;

impl Actor for CpuActor {
    type Context = SyncContext<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        // Digests are bulk work: request handling on the async workers goes first.
        crate::bulk::lower_thread_priority();
    }
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

/// Feeds a batch of chunks to a digest in progress and hands the state back: an upload's
/// digest advances one batch per job, so a job is short and the file is never whole in memory.
#[derive(Debug, Message)]
#[rtype(result = "Result<Box<Hasher>, AppError>")]
pub struct HashChunk {
    /// The digest so far.
    pub hasher: Box<Hasher>,
    /// The next bytes, in order.
    pub chunks: Vec<Bytes>,
}

impl Handler<HashChunk> for CpuActor {
    type Result = Result<Box<Hasher>, AppError>;
    fn handle(&mut self, msg: HashChunk, ctx: &mut Self::Context) -> Self::Result {
        let HashChunk { mut hasher, chunks } = msg;
        guard_sync(ctx, move || {
            for chunk in &chunks {
                hasher.update(chunk);
            }
            Ok(hasher)
        })
    }
}

/// Digests a stored file, reading it in blocks on the CPU thread (blocking reads there keep
/// them off the async workers).
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<u8>, AppError>")]
pub struct DigestFile {
    /// Which digest.
    pub algorithm: Algorithm,
    /// The file.
    pub path: PathBuf,
}

impl Handler<DigestFile> for CpuActor {
    type Result = Result<Vec<u8>, AppError>;
    fn handle(&mut self, msg: DigestFile, ctx: &mut Self::Context) -> Self::Result {
        guard_sync(ctx, || {
            digest_file(msg.algorithm, &msg.path)
                .map_err(|e| AppError::storage("reading a stored file to digest it", &e))
        })
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
    /// One permit per job allowed in flight (running or queued at the `SyncArbiter`).
    places: Arc<Semaphore>,
    timeout: Duration,
    /// Callers of `run_waiting` waiting for a place now.
    waiting: Occupancy,
    admissions: Admissions,
}

impl CpuPool {
    /// Starts `threads` `CpuActor`s; at most `threads * 2` jobs are admitted at once.
    pub fn start(threads: usize, timeout: Duration) -> Self {
        Self {
            addr: SyncArbiter::start(threads, CpuActor::default),
            threads,
            places: Arc::new(Semaphore::new(threads * 2)),
            timeout,
            waiting: Occupancy::default(),
            admissions: Admissions::default(),
        }
    }

    /// The pool, counting its admissions and refusals in `metrics`.
    pub fn counted_in(self, metrics: &Metrics) -> Self {
        Self {
            admissions: Admissions::new(metrics, "cpu"),
            ..self
        }
    }

    /// The actors' address (tests, probes).
    pub fn addr(&self) -> &Addr<CpuActor> {
        &self.addr
    }

    /// Test-only: sends `fault` to the actor (`fault-injection` builds only).
    #[cfg(feature = "fault-injection")]
    pub async fn inject(&self, fault: super::supervise::Fault) -> Result<(), AppError> {
        super::supervise::ask(&self.addr, fault.0, super::supervise::Fault::TIMEOUT).await
    }

    /// Whether the threads answer within `timeout`.
    pub async fn is_alive(&self, timeout: Duration) -> bool {
        is_alive(&self.addr, timeout).await
    }

    /// Shuts the pool down: admits no new job (each gets 503) and waits up to `within` for
    /// the jobs in flight. The threads themselves end when the last handle is dropped
    /// (`SyncArbiter` threads serve until their queue closes).
    pub async fn shut_down(&self, within: Duration) -> Drained {
        let places = self.threads * 2;
        let in_progress = places.saturating_sub(self.places.available_permits());
        let all = u32::try_from(places).unwrap_or(u32::MAX);
        // Every place taken back means every job has ended; the permits are then kept.
        let idle = tokio::time::timeout(within, self.places.acquire_many(all)).await;
        let unfinished = match idle {
            Ok(Ok(permits)) => {
                permits.forget();
                0
            }
            _ => places.saturating_sub(self.places.available_permits()),
        };
        self.places.close();
        Drained {
            in_progress,
            unfinished,
        }
    }

    /// How many threads serve.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Jobs admitted now: running, or queued for a thread.
    pub fn jobs(&self) -> usize {
        (self.threads * 2).saturating_sub(self.places.available_permits())
    }

    /// Callers waiting for a place now.
    pub fn waiting(&self) -> usize {
        self.waiting.now()
    }

    fn admit(&self) -> Result<OwnedSemaphorePermit, AppError> {
        let place = self.places.clone().try_acquire_owned();
        self.admissions.admission(place.is_ok());
        place.map_err(|_| AppError::overloaded("the CPU pool", "every thread is busy"))
    }

    /// Runs one job on a CPU thread if there is room, else 503 at once.
    pub async fn run<M, T>(&self, msg: M) -> Result<T, AppError>
    where
        CpuActor: Handler<M>,
        M: Message<Result = Result<T, AppError>> + Send + 'static,
        T: Send + 'static,
    {
        let _slot = self.admit()?;
        ask_counted(&self.addr, msg, self.timeout, &self.admissions).await
    }

    /// Runs one job on a CPU thread, waiting at most `max_wait` for a place (in arrival
    /// order), else 503: the queue stays bounded by the callers waiting, each for a bounded time.
    pub async fn run_waiting<M, T>(&self, msg: M, max_wait: Duration) -> Result<T, AppError>
    where
        CpuActor: Handler<M>,
        M: Message<Result = Result<T, AppError>> + Send + 'static,
        T: Send + 'static,
    {
        let waiting = self.waiting.enter();
        let place = tokio::time::timeout(max_wait, self.places.clone().acquire_owned()).await;
        drop(waiting);
        self.admissions.admission(matches!(place, Ok(Ok(_))));
        let _slot = match place {
            Ok(Ok(permit)) => permit,
            _ => {
                return Err(AppError::overloaded(
                    "the CPU pool",
                    "no thread free in time",
                ))
            }
        };
        ask_counted(&self.addr, msg, self.timeout, &self.admissions).await
    }
}
