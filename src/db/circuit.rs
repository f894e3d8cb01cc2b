//! Whether the database is known to be down, so that requests need not wait to find out.
//!
//! A connection attempt that fails opens the circuit: from then on a request that would
//! wait for a new connection fails at once with 503 `database_unavailable`, while one probe
//! at a time tries to connect again every [`PROBE_INTERVAL`]. The first attempt that
//! succeeds (the probe's, or one the pool made) closes it. Each change is one log line.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// How often a probe tries to connect while the database is down: a refused connect costs
/// next to nothing, and a database that is back is noticed within this.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// One connection attempt, made and dropped: `Err` carries the driver's cause.
pub type Probe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The database's reachability, shared by the pool's connection set-up, every checkout and
/// the probe.
pub struct Circuit {
    down: AtomicBool,
    probing: AtomicBool,
    opened: Notify,
    outage: Mutex<Outage>,
    probe: Probe,
    /// The longest one probe attempt may take.
    probe_timeout: Duration,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    cause: String,
}

impl Circuit {
    /// A closed circuit whose probe is `probe`, each attempt bounded by `probe_timeout`.
    pub fn new(probe: Probe, probe_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            down: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            opened: Notify::new(),
            outage: Mutex::new(Outage {
                since: Instant::now(),
                cause: String::new(),
            }),
            probe,
            probe_timeout,
        })
    }

    /// Whether the last connection attempt failed.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Completes when the circuit opens after this call (a checkout waiting for a new
    /// connection gives up at once then).
    pub fn opened(&self) -> Notified<'_> {
        self.opened.notified()
    }

    /// Why the database is down: the last failed attempt's cause.
    pub fn cause(&self) -> String {
        self.outage().cause.clone()
    }

    /// Takes in the outcome of a connection attempt the pool made.
    pub fn record<C>(self: &Arc<Self>, attempt: &Result<C, String>) {
        match attempt {
            Ok(_) => self.close(),
            Err(cause) => self.trip(cause),
        }
    }

    /// Makes sure a probe is running while the circuit is open (a checkout that found it
    /// open calls this: the trip that opened it may have had no runtime to start one on).
    pub fn ensure_probe(self: &Arc<Self>) {
        if !self.is_down() || self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.probing.store(false, Ordering::Release);
            return;
        };
        let this = self.clone();
        runtime.spawn(async move {
            while this.is_down() {
                tokio::time::sleep(PROBE_INTERVAL).await;
                if !this.is_down() {
                    break;
                }
                let attempt = tokio::time::timeout(this.probe_timeout, (this.probe)())
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "no answer within {} ms",
                            this.probe_timeout.as_millis()
                        ))
                    });
                this.record(&attempt);
            }
            this.probing.store(false, Ordering::Release);
            // A trip between the loop's last check and the line above found a probe running.
            this.ensure_probe();
        });
    }

    fn outage(&self) -> std::sync::MutexGuard<'_, Outage> {
        self.outage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn trip(self: &Arc<Self>, cause: &str) {
        {
            let mut outage = self.outage();
            cause.clone_into(&mut outage.cause);
            if !self.down.swap(true, Ordering::AcqRel) {
                outage.since = Instant::now();
                log::warn!(
                    "database unreachable, failing requests at once until a connection succeeds: {cause}"
                );
            }
        }
        self.opened.notify_waiters();
        self.ensure_probe();
    }

    fn close(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            let down = self.outage().since.elapsed();
            log::info!("database reachable again after {:.1} s", down.as_secs_f64());
        }
    }
}

impl std::fmt::Debug for Circuit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Circuit")
            .field("down", &self.is_down())
            .field("probing", &self.probing.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A probe that fails `failures` times, then succeeds; counts its attempts.
    fn probe(failures: usize, attempts: Arc<AtomicUsize>) -> Probe {
        Arc::new(move || {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n < failures {
                    Err("refused".to_owned())
                } else {
                    Ok(())
                }
            })
        })
    }

    #[tokio::test]
    async fn a_failed_connect_opens_it_and_the_first_probe_that_connects_closes_it() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let circuit = Circuit::new(probe(2, attempts.clone()), Duration::from_secs(1));
        assert!(!circuit.is_down());
        let opened = circuit.opened();
        circuit.record::<()>(&Err("connection refused".into()));
        assert!(circuit.is_down());
        assert_eq!(circuit.cause(), "connection refused");
        tokio::time::timeout(Duration::from_millis(1), opened)
            .await
            .expect("a waiter learns at once");
        // Two failed probes, then one that connects.
        let started = Instant::now();
        while circuit.is_down() {
            assert!(started.elapsed() < Duration::from_secs(10), "never closed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        tokio::time::sleep(PROBE_INTERVAL * 4).await;
        assert_eq!(attempts.load(Ordering::SeqCst), 3, "no probing while up");
    }

    #[tokio::test]
    async fn one_probe_runs_however_many_attempts_fail() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let circuit = Circuit::new(probe(usize::MAX, attempts.clone()), Duration::from_secs(1));
        for _ in 0..10 {
            circuit.record::<()>(&Err("refused".into()));
            circuit.ensure_probe();
        }
        tokio::time::sleep(PROBE_INTERVAL * 4 + PROBE_INTERVAL / 2).await;
        // Ten probes would have made about forty attempts by now.
        let made = attempts.load(Ordering::SeqCst);
        assert!((1..=5).contains(&made), "{made} attempts");
        // A connect the pool made closes it; the probe stops.
        circuit.record(&Ok(()));
        tokio::time::sleep(PROBE_INTERVAL * 2).await;
        let after = attempts.load(Ordering::SeqCst);
        tokio::time::sleep(PROBE_INTERVAL * 4).await;
        assert!(!circuit.is_down());
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            after,
            "no probing while up"
        );
    }
}
