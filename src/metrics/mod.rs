//! Prometheus metrics: what `GET /metrics` shows ([`CATALOGUE`], documented in `docs/API.md`),
//! kept per [`Application`](crate::startup::Application).
//!
//! Each application builds its own [`Metrics`]: a `PrometheusRecorder` that is never installed
//! as the process's global recorder, on which every handle troupe records through is
//! registered. Several applications in one process (the integration tests start many) thus
//! never mix their figures, and nothing in troupe goes through the `metrics` macros (they
//! would find no recorder and do nothing).
//!
//! Two kinds of figures:
//! - events are counted as they happen, through handles the components hold (requests,
//!   admissions, upstream calls, upload bytes, tus uploads); a component built without a
//!   `Metrics` (the actor tests build them so) holds no-op handles;
//! - states are read when `/metrics` is scraped ([`scrape`]): requests in flight, the
//!   database pool, the CPU pool's queue, the breakers, uploads streaming, the process's
//!   memory and open files. They cost nothing between scrapes and cannot drift.

pub mod http;
mod process;
pub mod scrape;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::MailboxError;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

pub use scrape::scrape;

/// `http_requests_total{method,route,status}`.
pub const HTTP_REQUESTS: &str = "http_requests_total";
/// `http_request_duration_seconds{method,route,status}`.
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
/// `http_requests_in_flight`.
pub const HTTP_IN_FLIGHT: &str = "http_requests_in_flight";
/// `http_requests_unanswered_total{method}`.
pub const HTTP_UNANSWERED: &str = "http_requests_unanswered_total";
/// `db_pool_connections`.
pub const DB_CONNECTIONS: &str = "db_pool_connections";
/// `db_pool_idle_connections`.
pub const DB_IDLE: &str = "db_pool_idle_connections";
/// `db_pool_max_connections`.
pub const DB_MAX: &str = "db_pool_max_connections";
/// `db_pool_waiting`.
pub const DB_WAITING: &str = "db_pool_waiting";
/// `db_pool_waits_total`.
pub const DB_WAITS: &str = "db_pool_waits_total";
/// `db_pool_wait_timeouts_total`.
pub const DB_WAIT_TIMEOUTS: &str = "db_pool_wait_timeouts_total";
/// `db_pool_connections_opened_total`.
pub const DB_OPENED: &str = "db_pool_connections_opened_total";
/// `actor_admitted_total{actor}`.
pub const ACTOR_ADMITTED: &str = "actor_admitted_total";
/// `actor_rejected_total{actor,reason}`.
pub const ACTOR_REJECTED: &str = "actor_rejected_total";
/// `cpu_pool_threads`.
pub const CPU_THREADS: &str = "cpu_pool_threads";
/// `cpu_pool_jobs`.
pub const CPU_JOBS: &str = "cpu_pool_jobs";
/// `cpu_pool_waiting`.
pub const CPU_WAITING: &str = "cpu_pool_waiting";
/// `upstream_calls_total{source}`.
pub const UPSTREAM_CALLS: &str = "upstream_calls_total";
/// `upstream_errors_total{source,code}`.
pub const UPSTREAM_ERRORS: &str = "upstream_errors_total";
/// `upstream_circuit_open_total{source}`.
pub const UPSTREAM_CIRCUIT_OPEN: &str = "upstream_circuit_open_total";
/// `upstream_request_duration_seconds{source}`.
pub const UPSTREAM_DURATION: &str = "upstream_request_duration_seconds";
/// `upstream_breaker_state{source,state}`.
pub const UPSTREAM_BREAKER: &str = "upstream_breaker_state";
/// `upstream_breaker_consecutive_failures{source}`.
pub const UPSTREAM_FAILURES_IN_A_ROW: &str = "upstream_breaker_consecutive_failures";
/// `upload_bytes_received_total`.
pub const UPLOAD_BYTES: &str = "upload_bytes_received_total";
/// `uploads_streaming`.
pub const UPLOADS_STREAMING: &str = "uploads_streaming";
/// `tus_uploads_created_total`.
pub const TUS_CREATED: &str = "tus_uploads_created_total";
/// `tus_uploads_completed_total`.
pub const TUS_COMPLETED: &str = "tus_uploads_completed_total";
/// `tus_uploads_expired_total`.
pub const TUS_EXPIRED: &str = "tus_uploads_expired_total";
/// `process_resident_memory_bytes`.
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
/// `process_open_fds`.
pub const PROCESS_FDS: &str = "process_open_fds";

/// The upper bounds of `http_request_duration_seconds`' buckets: from a `/ping` (a fraction
/// of a millisecond) to a large upload.
pub const HTTP_BUCKETS: [f64; 17] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
];

/// The upper bounds of `upstream_request_duration_seconds`' buckets, up to the longest
/// per-source timeout worth having.
pub const UPSTREAM_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What a metric is, for its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (from the application's start).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One metric `/metrics` shows: name, kind, labels and its `# HELP` text.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The metric's name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its labels, in the order the docs list them.
    pub labels: &'static [&'static str],
    /// What it measures.
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        labels,
        help,
    }
}

/// Every metric troupe exports. `docs/API.md` lists each (a unit test checks it).
pub const CATALOGUE: &[Metric] = &[
    metric(HTTP_REQUESTS, Kind::Counter, &["method", "route", "status"],
        "HTTP requests answered, by method, route pattern (unmatched: no route) and status"),
    metric(HTTP_DURATION, Kind::Histogram, &["method", "route", "status"],
        "Time from a request's arrival to its answer's head, in seconds"),
    metric(HTTP_IN_FLIGHT, Kind::Gauge, &[],
        "HTTP requests being served now (this scrape included)"),
    metric(HTTP_UNANSWERED, Kind::Counter, &["method"],
        "HTTP requests dropped before an answer: the client went away, or the shutdown cut them"),
    metric(DB_CONNECTIONS, Kind::Gauge, &[], "Database connections open in the pool"),
    metric(DB_IDLE, Kind::Gauge, &[], "Database connections open and idle"),
    metric(DB_MAX, Kind::Gauge, &[], "The pool's size (TROUPE_DB_POOL_SIZE)"),
    metric(DB_WAITING, Kind::Gauge, &[], "Requests waiting for a database connection now"),
    metric(DB_WAITS, Kind::Counter, &[],
        "Checkouts that had to wait for a connection and got one"),
    metric(DB_WAIT_TIMEOUTS, Kind::Counter, &[],
        "Checkouts that found no connection free in time (503 overloaded)"),
    metric(DB_OPENED, Kind::Counter, &[], "Database connections opened"),
    metric(ACTOR_ADMITTED, Kind::Counter, &["actor"],
        "Work admitted by each actor's admission limit (db, fetch, cpu, upload)"),
    metric(ACTOR_REJECTED, Kind::Counter, &["actor", "reason"],
        "Work an actor refused with 503 overloaded: reason full (its admission limit), \
         no_answer (its mailbox full or the actor too slow) or closed (its mailbox closed)"),
    metric(CPU_THREADS, Kind::Gauge, &[], "CpuActor threads (TROUPE_CPU_THREADS)"),
    metric(CPU_JOBS, Kind::Gauge, &[],
        "CPU jobs admitted now, running or queued for a thread (at most twice the threads)"),
    metric(CPU_WAITING, Kind::Gauge, &[],
        "Upload steps waiting for a place in the CPU pool now"),
    metric(UPSTREAM_CALLS, Kind::Counter, &["source"],
        "Calls made to each upstream source that ended (a retry is part of its call)"),
    metric(UPSTREAM_ERRORS, Kind::Counter, &["source", "code"],
        "Of those, the calls that failed, by the source's error code"),
    metric(UPSTREAM_CIRCUIT_OPEN, Kind::Counter, &["source"],
        "Calls not made because the source's breaker was open"),
    metric(UPSTREAM_DURATION, Kind::Histogram, &["source"],
        "Time each call to a source took, its retry included, in seconds"),
    metric(UPSTREAM_BREAKER, Kind::Gauge, &["source", "state"],
        "1 for the state each source's breaker is in (closed, open, half_open), 0 for the others"),
    metric(UPSTREAM_FAILURES_IN_A_ROW, Kind::Gauge, &["source"],
        "Consecutive failures of each source (its breaker opens at TROUPE_UPSTREAM_BREAKER_FAILURES)"),
    metric(UPLOAD_BYTES, Kind::Counter, &[],
        "Upload body bytes received (POST /upload and tus PATCH)"),
    metric(UPLOADS_STREAMING, Kind::Gauge, &[],
        "Upload bodies streaming now (against TROUPE_MAX_ACTIVE_UPLOADS)"),
    metric(TUS_CREATED, Kind::Counter, &[], "tus uploads created"),
    metric(TUS_COMPLETED, Kind::Counter, &[], "tus uploads completed (whole, digested, in place)"),
    metric(TUS_EXPIRED, Kind::Counter, &[], "Unfinished tus uploads expired and removed"),
    metric(PROCESS_RSS, Kind::Gauge, &[], "The process's resident memory, in bytes (Linux)"),
    metric(PROCESS_FDS, Kind::Gauge, &[], "The process's open file descriptors (Linux)"),
];

/// How often the recorder's histograms are folded into their buckets between scrapes, so
/// that their samples do not pile up in memory when nobody scrapes (metrics-rs/metrics#467).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// One application's metrics: the recorder its handles are registered on and the handle that
/// renders them. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

/// The metadata every handle is registered with (the Prometheus recorder ignores it).
static METADATA: Metadata<'static> = Metadata::new("troupe", Level::INFO, Some("troupe"));

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh recorder holding every metric of the [`CATALOGUE`] described, the two
    /// histograms with their explicit buckets (else they would render as summaries).
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), &HTTP_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(UPSTREAM_DURATION.into()), &UPSTREAM_BUCKETS)
            })
            // Only an empty bucket list is refused, and neither is empty.
            .unwrap_or_default();
        let recorder = builder.build_recorder();
        for m in CATALOGUE {
            let (name, help) = (KeyName::from_const_str(m.name), m.help.into());
            match m.kind {
                Kind::Counter => recorder.describe_counter(name, None, help),
                Kind::Gauge => recorder.describe_gauge(name, None, help),
                Kind::Histogram => recorder.describe_histogram(name, None, help),
            }
        }
        let handle = recorder.handle();
        Self {
            inner: Arc::new(Inner { recorder, handle }),
        }
    }

    /// The counter `name{labels}`, registered on this application's recorder.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.inner
            .recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    /// The gauge `name{labels}`.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.inner
            .recorder
            .register_gauge(&key(name, labels), &METADATA)
    }

    /// The histogram `name{labels}`.
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        self.inner
            .recorder
            .register_histogram(&key(name, labels), &METADATA)
    }

    /// Everything recorded, in the Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        self.inner.handle.render()
    }

    /// Folds the histograms' samples into their buckets every [`UPKEEP_EVERY`], for as long as
    /// this application's metrics exist. Needs a running actix system.
    pub fn keep_up(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        actix_web::rt::spawn(async move {
            let mut every = actix_web::rt::time::interval(UPKEEP_EVERY);
            loop {
                every.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.handle.run_upkeep();
            }
        });
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|&(k, v)| Label::new(k, v.to_owned()))
        .collect();
    Key::from_parts(name, labels)
}

/// One actor's admissions and refusals (`actor_admitted_total`, `actor_rejected_total`), as
/// its handle and the actor itself count them. Cheap to clone; no-op by default.
#[derive(Clone)]
pub struct Admissions {
    admitted: Counter,
    full: Counter,
    no_answer: Counter,
    closed: Counter,
}

impl Default for Admissions {
    fn default() -> Self {
        Self {
            admitted: Counter::noop(),
            full: Counter::noop(),
            no_answer: Counter::noop(),
            closed: Counter::noop(),
        }
    }
}

impl Admissions {
    /// The counters of `actor` (`db`, `fetch`, `cpu`, `upload`) in `metrics`.
    pub fn new(metrics: &Metrics, actor: &'static str) -> Self {
        let rejected =
            |reason| metrics.counter(ACTOR_REJECTED, &[("actor", actor), ("reason", reason)]);
        Self {
            admitted: metrics.counter(ACTOR_ADMITTED, &[("actor", actor)]),
            full: rejected("full"),
            no_answer: rejected("no_answer"),
            closed: rejected("closed"),
        }
    }

    /// Counts one request the admission limit let in (`true`) or refused (`false`).
    pub fn admission(&self, admitted: bool) {
        if admitted {
            self.admitted.increment(1);
        } else {
            self.full.increment(1);
        }
    }

    /// Counts a message the actor's mailbox did not take or answer in time.
    pub fn mailbox_failed(&self, err: &MailboxError) {
        match err {
            MailboxError::Timeout => self.no_answer.increment(1),
            MailboxError::Closed => self.closed.increment(1),
        }
    }
}

/// How many are somewhere now (waiting for a connection, for a CPU place): each one counts
/// while its [`Occupant`] lives. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Occupancy(Arc<AtomicUsize>);

/// One counted in an [`Occupancy`] until dropped.
#[derive(Debug)]
pub struct Occupant(Arc<AtomicUsize>);

impl Occupancy {
    /// Counts one more until the answer is dropped.
    pub fn enter(&self) -> Occupant {
        self.0.fetch_add(1, Ordering::Relaxed);
        Occupant(self.0.clone())
    }

    /// How many now.
    pub fn now(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Occupant {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_recorders_keep_their_own_figures() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.counter(TUS_CREATED, &[]).increment(2);
        b.counter(TUS_CREATED, &[]).increment(5);
        assert!(
            a.render().contains("tus_uploads_created_total 2\n"),
            "{}",
            a.render()
        );
        assert!(
            b.render().contains("tus_uploads_created_total 5\n"),
            "{}",
            b.render()
        );
    }

    #[test]
    fn histograms_render_with_their_buckets_and_help() {
        let m = Metrics::new();
        m.histogram(UPSTREAM_DURATION, &[("source", "a")])
            .record(0.003);
        let text = m.render();
        assert!(
            text.contains("# HELP upstream_request_duration_seconds "),
            "{text}"
        );
        assert!(
            text.contains("# TYPE upstream_request_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains(r#"upstream_request_duration_seconds_bucket{source="a",le="0.001"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"upstream_request_duration_seconds_bucket{source="a",le="0.005"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn the_api_docs_list_every_metric() {
        let docs = include_str!("../../docs/API.md");
        for m in CATALOGUE {
            assert!(
                docs.contains(&format!("`{}`", m.name)),
                "docs/API.md does not list {}",
                m.name
            );
        }
    }

    #[test]
    fn an_occupancy_counts_its_living_occupants() {
        let waiting = Occupancy::default();
        let one = waiting.enter();
        let two = waiting.enter();
        assert_eq!(waiting.now(), 2);
        drop(one);
        assert_eq!(waiting.now(), 1);
        drop(two);
        assert_eq!(waiting.now(), 0);
    }
}
