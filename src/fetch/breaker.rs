//! A circuit breaker per source: after `threshold` consecutive failures the source is not
//! called for `cooldown`; then one trial call decides whether it closes again.
//!
//! Shared by every worker's `FetchActor` (one `Mutex` per source, held for a few
//! instructions, never across an await).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// What a breaker is doing, as `/readyz` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once until the cool-down ends.
    Open,
    /// The cool-down is over; one trial call is (or may be) in flight.
    HalfOpen,
}

impl BreakerState {
    /// The state's snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Inner {
    consecutive_failures: u32,
    /// Set while open: calls before this instant fail at once.
    open_until: Option<Instant>,
    /// A half-open trial call is in flight; other calls still fail at once.
    trial_in_flight: bool,
}

/// One source's breaker; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Breaker {
    inner: Arc<Mutex<Inner>>,
    threshold: u32,
    cooldown: Duration,
}

/// Leave to make one call; report its end with [`Permit::succeeded`] or
/// [`Permit::failed`]. A permit dropped without either (the call was cancelled) frees a
/// half-open trial slot without deciding anything.
#[derive(Debug)]
pub struct Permit {
    breaker: Breaker,
    trial: bool,
    done: bool,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` consecutive failures for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                consecutive_failures: 0,
                open_until: None,
                trial_in_flight: false,
            })),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections cannot panic half-way; a poisoned lock holds sane state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit to call now, or `None` while the breaker is open (or its one trial is
    /// already in flight).
    pub fn admit(&self, now: Instant) -> Option<Permit> {
        let mut inner = self.lock();
        let trial = match inner.open_until {
            None => false,
            Some(until) if now < until => return None,
            Some(_) if inner.trial_in_flight => return None,
            Some(_) => {
                inner.trial_in_flight = true;
                true
            }
        };
        Some(Permit {
            breaker: self.clone(),
            trial,
            done: false,
        })
    }

    /// The state at `now`, and the consecutive failures so far.
    pub fn state(&self, now: Instant) -> (BreakerState, u32) {
        let inner = self.lock();
        let state = match inner.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        };
        (state, inner.consecutive_failures)
    }
}

impl Permit {
    /// Whether this call is the half-open trial.
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// The call succeeded: the breaker closes and the failure count restarts.
    pub fn succeeded(mut self) {
        self.done = true;
        let mut inner = self.breaker.lock();
        inner.consecutive_failures = 0;
        inner.open_until = None;
        if self.trial {
            inner.trial_in_flight = false;
        }
    }

    /// The call failed: a failed trial, or the `threshold`-th failure in a row, opens the
    /// breaker for a fresh cool-down.
    pub fn failed(mut self, now: Instant) {
        self.done = true;
        let mut inner = self.breaker.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        if self.trial {
            inner.trial_in_flight = false;
        }
        if self.trial || inner.consecutive_failures >= self.breaker.threshold {
            inner.open_until = Some(now + self.breaker.cooldown);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.trial && !self.done {
            self.breaker.lock().trial_in_flight = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL: Duration = Duration::from_secs(10);

    #[test]
    fn opens_after_threshold_consecutive_failures_only() {
        let b = Breaker::new(3, COOL);
        let t = Instant::now();
        b.admit(t).unwrap().failed(t);
        b.admit(t).unwrap().failed(t);
        b.admit(t).unwrap().succeeded();
        b.admit(t).unwrap().failed(t);
        b.admit(t).unwrap().failed(t);
        assert_eq!(b.state(t), (BreakerState::Closed, 2));
        b.admit(t).unwrap().failed(t);
        assert_eq!(b.state(t).0, BreakerState::Open);
        assert!(b.admit(t + Duration::from_secs(9)).is_none());
    }

    #[test]
    fn one_trial_after_the_cooldown_closes_or_reopens() {
        let b = Breaker::new(1, COOL);
        let t = Instant::now();
        b.admit(t).unwrap().failed(t);
        let later = t + COOL;
        assert_eq!(b.state(later).0, BreakerState::HalfOpen);
        let trial = b.admit(later).unwrap();
        assert!(trial.is_trial());
        assert!(b.admit(later).is_none(), "a second call during the trial");
        trial.failed(later);
        assert_eq!(b.state(later).0, BreakerState::Open);

        let again = later + COOL;
        b.admit(again).unwrap().succeeded();
        assert_eq!(b.state(again), (BreakerState::Closed, 0));
        assert!(!b.admit(again).unwrap().is_trial());
    }

    #[test]
    fn a_cancelled_trial_frees_the_slot() {
        let b = Breaker::new(1, COOL);
        let t = Instant::now();
        b.admit(t).unwrap().failed(t);
        drop(b.admit(t + COOL).unwrap());
        assert!(b.admit(t + COOL).unwrap().is_trial());
    }
}
