//! Bulk work yields to interactive requests.
//!
//! Two means, used by the upload and CPU actors alike: bulk threads (file writes, digests)
//! run at a lower priority ([`lower_thread_priority`]), and uploads are paced ([`Pace`]).
//!
//! Upload bodies arrive on the same HTTP workers, and the same cores, as every short request:
//! received, parsed and handed on at full speed, a few uploads take the CPU that keeps
//! `/ping` or `/users` fast. While other requests are being served (one started within the
//! last [`BUSY_WINDOW`]), each upload therefore goes at most `TROUPE_UPLOAD_SHARED_RATE_MIB`
//! MiB/s: its batches are spaced out, and TCP slows the client down. With nothing else to
//! serve, uploads go as fast as the disk, the network and the digest allow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How recent the last interactive request must be for the server to count as busy.
pub const BUSY_WINDOW: Duration = Duration::from_millis(100);

/// Remembers when the last interactive request started, and spaces out bulk batches while
/// that is recent.
#[derive(Debug)]
pub struct Pace {
    origin: Instant,
    /// When the last interactive request started, in ms after `origin`, plus one (0: never).
    last_interactive: AtomicU64,
    /// Bytes per second one upload may take while the server is busy; 0 is no limit.
    shared_rate: u64,
}

impl Pace {
    /// A pacer letting each upload take `shared_rate` bytes per second while other requests
    /// are being served (0: never paced).
    pub fn new(shared_rate: u64) -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            last_interactive: AtomicU64::new(0),
            shared_rate,
        })
    }

    fn ms_since_origin(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    /// Notes an interactive request started at `at`. Written at most once per millisecond,
    /// so the workers do not fight over the cache line.
    pub fn note_interactive(&self, at: Instant) {
        let stamp = self.ms_since_origin(at).saturating_add(1);
        if self.last_interactive.load(Ordering::Relaxed) < stamp {
            self.last_interactive.store(stamp, Ordering::Relaxed);
        }
    }

    /// How long an upload waits after a batch of `bytes` before reading more, when the
    /// server is busy with other requests.
    pub fn pause_after(&self, bytes: usize) -> Option<Duration> {
        let last = self.last_interactive.load(Ordering::Relaxed);
        let now = self.ms_since_origin(Instant::now()).saturating_add(1);
        let busy = last > 0 && now.saturating_sub(last) < BUSY_WINDOW.as_millis() as u64;
        if self.shared_rate == 0 || !busy {
            return None;
        }
        Some(Duration::from_secs_f64(
            bytes as f64 / self.shared_rate as f64,
        ))
    }
}

/// Whether a request carries a bulk body (an upload) rather than being interactive.
pub fn is_bulk(method: &actix_web::http::Method, path: &str) -> bool {
    use actix_web::http::Method;
    (*method == Method::POST || *method == Method::PATCH)
        && (path == "/upload" || path.starts_with("/files"))
}

/// Lowers the calling thread's scheduling priority (Linux: nice is per thread), once per
/// thread: bulk upload work (writes, digests) then yields the CPU to request handling, so
/// `/ping` and friends keep their latency while uploads run.
pub fn lower_thread_priority() {
    thread_local! {
        static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    DONE.with(|done| {
        if !done.replace(true) {
            lower_priority_now();
        }
    });
}

#[cfg(target_os = "linux")]
fn lower_priority_now() {
    // SAFETY: gettid and setpriority take and return plain integers and touch no memory of
    // ours; a failure leaves the priority as it was, which is harmless.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BULK_NICE);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority_now() {}

/// The nice value of threads doing bulk upload work.
const BULK_NICE: libc::c_int = 10;

/// Whether a request makes uploads yield: anything but upload traffic. The tus protocol's
/// own short requests (`HEAD`, `DELETE`, `OPTIONS` under `/files`) are upload clients'
/// bookkeeping: each one counted would pace every other upload for [`BUSY_WINDOW`].
pub fn is_interactive(method: &actix_web::http::Method, path: &str) -> bool {
    !is_bulk(method, path) && path != "/files" && !path.starts_with("/files/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_paced_only_while_interactive_requests_are_recent() {
        let pace = Pace::new(1 << 20);
        assert_eq!(pace.pause_after(1 << 20), None, "nothing served yet");
        pace.note_interactive(Instant::now());
        assert_eq!(pace.pause_after(1 << 19), Some(Duration::from_millis(500)));
        std::thread::sleep(BUSY_WINDOW + Duration::from_millis(20));
        assert_eq!(pace.pause_after(1 << 20), None, "idle again");
        // An older timestamp noted late never moves the clock back.
        pace.note_interactive(Instant::now());
        pace.note_interactive(pace.origin);
        assert!(pace.pause_after(1 << 20).is_some());
    }

    #[test]
    fn a_zero_rate_never_paces() {
        let pace = Pace::new(0);
        pace.note_interactive(Instant::now());
        assert_eq!(pace.pause_after(1 << 30), None);
    }

    #[test]
    fn uploads_are_bulk_and_the_rest_interactive() {
        use actix_web::http::Method;
        assert!(is_bulk(&Method::POST, "/upload"));
        assert!(is_bulk(&Method::PATCH, "/files/abc"));
        assert!(is_bulk(&Method::POST, "/files/"));
        assert!(!is_bulk(&Method::GET, "/ping"));
        assert!(!is_bulk(&Method::GET, "/uploads"));
        assert!(!is_bulk(&Method::HEAD, "/files/abc"));
        assert!(!is_bulk(&Method::POST, "/users"));
    }

    #[test]
    fn tus_bookkeeping_does_not_make_uploads_yield() {
        use actix_web::http::Method;
        for (method, path) in [
            (Method::DELETE, "/files/abc"),
            (Method::HEAD, "/files/abc"),
            (Method::OPTIONS, "/files/"),
            (Method::PATCH, "/files/abc"),
            (Method::POST, "/upload"),
        ] {
            assert!(!is_interactive(&method, path), "{method} {path}");
        }
        for (method, path) in [
            (Method::GET, "/ping"),
            (Method::GET, "/users"),
            (Method::GET, "/uploads"),
            (Method::DELETE, "/uploads/abc"),
            (Method::GET, "/filesystem"),
        ] {
            assert!(is_interactive(&method, path), "{method} {path}");
        }
    }
}
