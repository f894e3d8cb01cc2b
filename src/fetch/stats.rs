//! Per-source call statistics for `/readyz`: counts, the last error, and latency
//! percentiles over the most recent calls.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How many recent latencies the percentiles are taken over.
const WINDOW: usize = 256;

#[derive(Debug, Default)]
struct Inner {
    calls: u64,
    failures: u64,
    last_error: Option<&'static str>,
    /// Ring of recent latencies in microseconds; call `n` (from 0) goes at `n % WINDOW`.
    recent: Vec<u32>,
}

/// One source's statistics (shared with the source, inside `Arc<Upstreams>`).
#[derive(Debug, Default)]
pub struct SourceStats {
    inner: Mutex<Inner>,
}

/// A snapshot of [`SourceStats`].
#[derive(Debug, Clone, PartialEq)]
pub struct StatsSnapshot {
    /// Finished calls (cancelled ones are not counted).
    pub calls: u64,
    /// Of which failed.
    pub failures: u64,
    /// The code of the latest failure, if any.
    pub last_error: Option<&'static str>,
    /// Median latency of the recent calls, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th-percentile latency of the recent calls, in milliseconds.
    pub p99_ms: Option<f64>,
    /// How many recent calls the percentiles cover.
    pub window: usize,
}

impl SourceStats {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one finished call: its latency, and its error code when it failed.
    pub fn record(&self, latency: Duration, error: Option<&'static str>) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let mut inner = self.lock();
        let at = (inner.calls % WINDOW as u64) as usize;
        inner.calls += 1;
        if error.is_some() {
            inner.failures += 1;
            inner.last_error = error;
        }
        if inner.recent.len() < WINDOW {
            inner.recent.push(micros);
        } else {
            inner.recent[at] = micros;
        }
    }

    /// The counts and percentiles now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let (calls, failures, last_error, mut recent) = {
            let inner = self.lock();
            (
                inner.calls,
                inner.failures,
                inner.last_error,
                inner.recent.clone(),
            )
        };
        recent.sort_unstable();
        let pick = |q: f64| {
            let last = recent.len().checked_sub(1)?;
            // Nearest rank; the index is within 0..=last by construction.
            let at = ((last as f64) * q).round() as usize;
            recent.get(at.min(last)).map(|&us| f64::from(us) / 1000.0)
        };
        StatsSnapshot {
            calls,
            failures,
            last_error,
            p50_ms: pick(0.5),
            p99_ms: pick(0.99),
            window: recent.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_cover_the_recent_window_only() {
        let stats = SourceStats::default();
        assert_eq!(stats.snapshot().p50_ms, None);
        for _ in 0..WINDOW {
            stats.record(Duration::from_millis(500), None);
        }
        for ms in 1..=WINDOW as u64 {
            stats.record(Duration::from_millis(ms), Some("upstream_timeout"));
        }
        let snap = stats.snapshot();
        assert_eq!(snap.calls, 2 * WINDOW as u64);
        assert_eq!(snap.failures, WINDOW as u64);
        assert_eq!(snap.last_error, Some("upstream_timeout"));
        assert_eq!(snap.window, WINDOW);
        let p50 = snap.p50_ms.unwrap();
        assert!((127.0..=130.0).contains(&p50), "{p50}");
        assert!(snap.p99_ms.unwrap() >= 250.0);
    }
}
