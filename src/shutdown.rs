//! The shutdown sequence, one log line per phase (the phases are `lifecycle`'s):
//!
//! 1. SIGTERM: `/readyz` answers 503 `draining` at once, and for `TROUPE_DRAIN_MS` troupe
//!    goes on serving with `Connection: close` on every response, so that load balancers
//!    and keep-alive clients move away: a response that closes its connection is the polite
//!    way to end one; closing an idle connection under a client resets whatever it was
//!    sending. SIGINT (Ctrl-C) skips the delay, and a second signal ends a drain early.
//! 2. The listener closes; the requests in flight get `TROUPE_SHUTDOWN_TIMEOUT_MS` to finish
//!    (idle keep-alive connections are closed at once, and a connection closes after the
//!    response it is sending).
//! 3. What is still in flight then is cut: the HTTP workers stop, dropping their handlers,
//!    whose access-log lines say `outcome=cut_by_shutdown`; a cut tus PATCH's session hands
//!    its bytes to the upload actor as it goes.
//! 4. Every actor gets its shutdown and finishes what it has (`Shared::shut_down`): the
//!    upload sessions end first, so a cut PATCH's bytes are on disk and its offset recorded.
//! 5. `main` exits 0.

use std::pin::Pin;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle};
use actix_web::rt::signal::unix::{signal, SignalKind};
use actix_web::rt::time::{sleep, timeout};

use crate::lifecycle::{Lifecycle, Phase};
use crate::services::Shared;

/// How long each actor gets to finish its work in progress at shutdown (an upload session's
/// fsync and offset, a query).
pub const ACTOR_SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// How long the workers get to drop the requests they were told to cut.
const CUT_WAIT: Duration = Duration::from_secs(5);

/// A signal that shuts troupe down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: drain, then stop.
    Terminate,
    /// SIGINT (Ctrl-C): stop without the drain.
    Interrupt,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment this is made (instead of ending the process).
pub struct Signals {
    terminate: actix_web::rt::signal::unix::Signal,
    interrupt: actix_web::rt::signal::unix::Signal,
}

impl Signals {
    /// Catches SIGTERM and SIGINT from now on. Needs a running runtime.
    pub fn catch() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// The next signal caught.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.terminate.recv() => Signal::Terminate,
            _ = self.interrupt.recv() => Signal::Interrupt,
        }
    }
}

/// How long each phase of a shutdown may last (`TROUPE_DRAIN_MS`,
/// `TROUPE_SHUTDOWN_TIMEOUT_MS`).
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// The drain after SIGTERM.
    pub drain: Duration,
    /// How long the requests in flight have to finish once the listener is closed.
    pub timeout: Duration,
}

/// Serves until a signal, then shuts down as the module says; or, when the server is
/// stopped through its handle (tests), shuts the actors down after it.
pub async fn serve(
    server: Server,
    shared: Shared,
    mut signals: Signals,
    timings: Timings,
) -> std::io::Result<()> {
    let handle = server.handle();
    let mut server: Pin<Box<Server>> = Box::pin(server);
    let lifecycle = shared.lifecycle.clone();
    let served = tokio::select! {
        served = server.as_mut() => Some(served),
        signal = signals.next() => {
            drain(signal, &mut signals, server.as_mut(), &lifecycle, timings.drain).await
        }
    };
    let served = match served {
        Some(served) => served,
        None => stop_serving(server, handle, &lifecycle, timings.timeout).await,
    };
    lifecycle.enter(Phase::Closing);
    let stopped = shared.shut_down(ACTOR_SHUTDOWN_WAIT).await;
    if stopped.all_finished() {
        log::info!("actors stopped {stopped}");
    } else {
        log::warn!("actors stopped {stopped}");
    }
    served
}

/// Phase 1: readiness says `draining` and responses close their connections, for `drain`
/// after SIGTERM (until a second signal); not at all after SIGINT. Answers what the server
/// answered if it stopped meanwhile (through its handle).
async fn drain(
    signal: Signal,
    signals: &mut Signals,
    server: Pin<&mut Server>,
    lifecycle: &Lifecycle,
    drain: Duration,
) -> Option<std::io::Result<()>> {
    lifecycle.enter(Phase::Draining);
    if signal == Signal::Interrupt || drain.is_zero() {
        log::info!(
            "{}: shutting down without a drain (/readyz answers 503 draining)",
            signal.name()
        );
        return None;
    }
    log::info!(
        "{}: draining for {} ms (/readyz answers 503 draining, every response closes its connection)",
        signal.name(),
        drain.as_millis()
    );
    tokio::select! {
        _ = sleep(drain) => None,
        again = signals.next() => {
            log::info!("{} during the drain: the drain ends now", again.name());
            None
        }
        served = server => Some(served),
    }
}

/// Phases 2 and 3: closes the listener, gives the requests in flight `within` to finish,
/// then cuts the rest.
async fn stop_serving(
    mut server: Pin<Box<Server>>,
    handle: ServerHandle,
    lifecycle: &Lifecycle,
    within: Duration,
) -> std::io::Result<()> {
    lifecycle.enter(Phase::Closing);
    let started = Instant::now();
    // Sends the stop now: the listener closes and idle connections end; the server future
    // ends once every worker's connections have.
    drop(handle.stop(true));
    log::info!(
        "listener closed; {} requests in flight get up to {} ms to finish",
        lifecycle.in_flight(),
        within.as_millis()
    );
    if let Ok(served) = timeout(within, server.as_mut()).await {
        log::info!(
            "requests in flight finished in {} ms",
            started.elapsed().as_millis()
        );
        return served;
    }
    lifecycle.enter(Phase::Cutting);
    // Dropping the server stops its workers at once; each drops its connections with their
    // handlers (a cut tus PATCH hands its bytes to the upload actor as it goes).
    drop(server);
    let deadline = Instant::now() + CUT_WAIT;
    while lifecycle.in_flight() > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(10)).await;
    }
    log::warn!(
        "shutdown timeout of {} ms ran out: {} requests cut",
        within.as_millis(),
        lifecycle.cut()
    );
    Ok(())
}
