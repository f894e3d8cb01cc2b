//! Where the process is in its life, and the requests it is serving: what the request
//! middleware, `/readyz` and the shutdown sequence (`startup`) share.
//!
//! | phase | entered when | `/readyz` | responses | listener |
//! |---|---|---|---|---|
//! | serving | start-up | probes the components | keep-alive as the client asks | accepting |
//! | draining | SIGTERM (SIGINT skips its delay) | 503 `draining` at once | `Connection: close` | accepting, for `TROUPE_DRAIN_MS` |
//! | closing | the drain is over | as draining | as draining | closed; requests in flight finish |
//! | cutting | `TROUPE_SHUTDOWN_TIMEOUT_MS` ran out | as draining | none: what is still in flight is cut | closed |
//!
//! Each HTTP worker counts its own requests ([`WorkerRequests`], on a cache line of its own,
//! so workers never write to a line another worker reads); the shutdown sequence adds them up.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A phase of the process's life, in the order they come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Serving normally.
    Serving = 0,
    /// Shutting down, still accepting: readiness says `draining`, responses close their
    /// connection, so clients and load balancers move away.
    Draining = 1,
    /// The listener is closed; the requests in flight are finishing.
    Closing = 2,
    /// The shutdown timeout ran out: the requests still in flight are being cut.
    Cutting = 3,
}

impl Phase {
    fn from_u8(n: u8) -> Self {
        match n {
            0 => Self::Serving,
            1 => Self::Draining,
            2 => Self::Closing,
            _ => Self::Cutting,
        }
    }
}

/// The process's phase and every worker's request count. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    phase: Arc<AtomicU8>,
    workers: Arc<Mutex<Vec<Arc<WorkerRequests>>>>,
}

impl Lifecycle {
    /// A process that is serving, with no worker yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Moves on to `phase`; never back to an earlier one.
    pub fn enter(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::AcqRel);
    }

    /// Whether the process is shutting down (any phase past serving).
    pub fn is_shutting_down(&self) -> bool {
        self.phase() > Phase::Serving
    }

    /// A request count for one more HTTP worker (call it on the worker's thread, once).
    pub fn worker_requests(&self) -> Arc<WorkerRequests> {
        let requests = Arc::new(WorkerRequests {
            phase: self.phase.clone(),
            in_flight: AtomicUsize::new(0),
            cut: AtomicUsize::new(0),
        });
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(requests.clone());
        requests
    }

    fn sum(&self, each: impl Fn(&WorkerRequests) -> usize) -> usize {
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|w| each(w))
            .sum()
    }

    /// Requests whose handler is running now, on every worker.
    pub fn in_flight(&self) -> usize {
        self.sum(|w| w.in_flight.load(Ordering::Acquire))
    }

    /// Requests dropped unanswered since the shutdown timeout ran out ([`Phase::Cutting`]).
    pub fn cut(&self) -> usize {
        self.sum(|w| w.cut.load(Ordering::Acquire))
    }
}

/// One HTTP worker's requests in flight; the request middleware counts each request from
/// its start until its handler is answered or dropped.
#[derive(Debug)]
#[repr(align(64))]
pub struct WorkerRequests {
    phase: Arc<AtomicU8>,
    in_flight: AtomicUsize,
    cut: AtomicUsize,
}

impl WorkerRequests {
    /// Whether responses close their connection now (the process is shutting down).
    pub fn closing_connections(&self) -> bool {
        self.phase.load(Ordering::Relaxed) > Phase::Serving as u8
    }

    /// Counts one more request in flight.
    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts a request out, `answered` or dropped before its answer; answers whether a
    /// dropped one was cut by the shutdown (else its client went away).
    pub fn end(&self, answered: bool) -> bool {
        let cut = !answered && self.phase.load(Ordering::Acquire) == Phase::Cutting as u8;
        if cut {
            self.cut.fetch_add(1, Ordering::AcqRel);
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_only_move_forward_and_counts_add_up_over_workers() {
        let life = Lifecycle::new();
        let (a, b) = (life.worker_requests(), life.worker_requests());
        assert!(!a.closing_connections());
        a.begin();
        b.begin();
        b.begin();
        assert_eq!(life.in_flight(), 3);
        // A request dropped while serving: its client went away; not a cut.
        assert!(!b.end(false));
        life.enter(Phase::Cutting);
        life.enter(Phase::Draining);
        assert_eq!(life.phase(), Phase::Cutting);
        assert!(a.closing_connections() && life.is_shutting_down());
        assert!(a.end(false));
        assert!(!b.end(true));
        assert_eq!((life.in_flight(), life.cut()), (0, 1));
    }
}
