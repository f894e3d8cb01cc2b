//! Per-source call statistics: what `/metrics` exports (calls, errors by code, calls the
//! breaker kept from being made, a latency histogram) and what `/readyz` shows (counts, the
//! last error, and latency percentiles estimated from the histogram's buckets).
//!
//! The Prometheus handles cannot be read back, so the few figures `/readyz` needs are also
//! kept here, under one short-held lock per source.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use metrics::{Counter, Histogram};

use super::FetchErrorKind;
use crate::metrics::{
    Metrics, UPSTREAM_BUCKETS, UPSTREAM_CALLS, UPSTREAM_CIRCUIT_OPEN, UPSTREAM_DURATION,
    UPSTREAM_ERRORS,
};

/// The failures of a call that was made (an open breaker's is counted apart).
const CALL_FAILURES: [FetchErrorKind; 5] = [
    FetchErrorKind::Timeout,
    FetchErrorKind::Status,
    FetchErrorKind::InvalidJson,
    FetchErrorKind::TooLarge,
    FetchErrorKind::Unreachable,
];

#[derive(Debug, Default)]
struct Inner {
    calls: u64,
    failures: u64,
    last_error: Option<&'static str>,
    /// Calls per latency bucket ([`UPSTREAM_BUCKETS`], then the one past the last bound).
    buckets: [u64; UPSTREAM_BUCKETS.len() + 1],
}

/// The source's Prometheus handles.
struct Exported {
    calls: Counter,
    errors: [(&'static str, Counter); CALL_FAILURES.len()],
    circuit_open: Counter,
    latency: Histogram,
}

/// One source's statistics (shared with the source, inside `Arc<Upstreams>`).
pub struct SourceStats {
    inner: Mutex<Inner>,
    exported: Exported,
}

impl std::fmt::Debug for SourceStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceStats")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Default for SourceStats {
    /// Statistics for `/readyz` only (no-op Prometheus handles).
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            exported: Exported {
                calls: Counter::noop(),
                errors: CALL_FAILURES.map(|k| (k.code(), Counter::noop())),
                circuit_open: Counter::noop(),
                latency: Histogram::noop(),
            },
        }
    }
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
    /// Median latency, in milliseconds, estimated from the buckets.
    pub p50_ms: Option<f64>,
    /// 99th-percentile latency, in milliseconds, estimated from the buckets.
    pub p99_ms: Option<f64>,
    /// How many calls the percentiles cover: every call since start.
    pub window: u64,
}

impl SourceStats {
    /// The statistics of the source called `source`, exported through `metrics`.
    pub fn new(metrics: &Metrics, source: &str) -> Self {
        let by_source = [("source", source)];
        Self {
            inner: Mutex::default(),
            exported: Exported {
                calls: metrics.counter(UPSTREAM_CALLS, &by_source),
                errors: CALL_FAILURES.map(|kind| {
                    let labels = [("source", source), ("code", kind.code())];
                    (kind.code(), metrics.counter(UPSTREAM_ERRORS, &labels))
                }),
                circuit_open: metrics.counter(UPSTREAM_CIRCUIT_OPEN, &by_source),
                latency: metrics.histogram(UPSTREAM_DURATION, &by_source),
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one finished call: its latency, and its error code when it failed.
    pub fn record(&self, latency: Duration, error: Option<&'static str>) {
        let secs = latency.as_secs_f64();
        let e = &self.exported;
        e.calls.increment(1);
        e.latency.record(secs);
        if let Some((_, counter)) = error.and_then(|code| e.errors.iter().find(|(c, _)| *c == code))
        {
            counter.increment(1);
        }
        let bucket = UPSTREAM_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(UPSTREAM_BUCKETS.len());
        let mut inner = self.lock();
        inner.calls += 1;
        inner.buckets[bucket] += 1;
        if error.is_some() {
            inner.failures += 1;
            inner.last_error = error;
        }
    }

    /// Records a call not made because the breaker was open.
    pub fn record_circuit_open(&self) {
        self.exported.circuit_open.increment(1);
    }

    /// The counts and percentiles now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let (calls, failures, last_error, buckets) = {
            let inner = self.lock();
            (inner.calls, inner.failures, inner.last_error, inner.buckets)
        };
        StatsSnapshot {
            calls,
            failures,
            last_error,
            p50_ms: quantile(&buckets, 0.5).map(|s| s * 1000.0),
            p99_ms: quantile(&buckets, 0.99).map(|s| s * 1000.0),
            window: calls,
        }
    }
}

/// The `q`-quantile of the calls counted in `buckets`, in seconds, as Prometheus'
/// `histogram_quantile` estimates it: linear within the bucket it falls in (from 0 in the
/// first), the last finite bound when it falls past it. `None` without calls.
fn quantile(buckets: &[u64; UPSTREAM_BUCKETS.len() + 1], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &count) in buckets.iter().enumerate() {
        let upto = below + count;
        if count > 0 && upto as f64 >= rank {
            let Some(&upper) = UPSTREAM_BUCKETS.get(i) else {
                return UPSTREAM_BUCKETS.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { UPSTREAM_BUCKETS[i - 1] };
            let within = (rank - below as f64) / count as f64;
            return Some(lower + (upper - lower) * within);
        }
        below = upto;
    }
    UPSTREAM_BUCKETS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_fall_in_the_buckets_of_the_calls() {
        let stats = SourceStats::default();
        assert_eq!(stats.snapshot().p50_ms, None);
        // 98 fast calls (in the 1–5 ms bucket), 2 slow ones (in the 0.5–1 s bucket).
        for _ in 0..98 {
            stats.record(Duration::from_millis(3), None);
        }
        for _ in 0..2 {
            stats.record(Duration::from_millis(800), Some("upstream_timeout"));
        }
        let snap = stats.snapshot();
        assert_eq!((snap.calls, snap.failures, snap.window), (100, 2, 100));
        assert_eq!(snap.last_error, Some("upstream_timeout"));
        let p50 = snap.p50_ms.unwrap();
        assert!((1.0..=5.0).contains(&p50), "{p50}");
        let p99 = snap.p99_ms.unwrap();
        assert!((500.0..=1000.0).contains(&p99), "{p99}");
    }

    #[test]
    fn a_call_past_the_last_bucket_reads_as_its_bound() {
        let stats = SourceStats::default();
        stats.record(Duration::from_secs(30), None);
        assert_eq!(stats.snapshot().p99_ms, Some(10_000.0));
    }

    #[test]
    fn calls_errors_and_latency_are_exported_by_source() {
        let metrics = Metrics::new();
        let stats = SourceStats::new(&metrics, "a");
        stats.record(Duration::from_millis(3), None);
        stats.record(Duration::from_millis(3), Some("upstream_status"));
        stats.record_circuit_open();
        let text = metrics.render();
        for line in [
            r#"upstream_calls_total{source="a"} 2"#,
            r#"upstream_errors_total{source="a",code="upstream_status"} 1"#,
            r#"upstream_errors_total{source="a",code="upstream_timeout"} 0"#,
            r#"upstream_circuit_open_total{source="a"} 1"#,
            r#"upstream_request_duration_seconds_count{source="a"} 2"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
