//! The supervision every troupe actor shares, beyond actix's default.
//!
//! actix restarts a `Supervised` actor only when it stops itself; a panic in a handler
//! would kill its mailbox for good, and a panic on a `SyncArbiter` thread kills that thread.
//! Here a handler's work runs under `catch_unwind`: the panicking request gets
//! `AppError::Internal`, the actor is stopped so that actix restarts it with fresh state
//! (`Supervisor` for async actors, the factory for `SyncArbiter` threads), and the next
//! message is served. A panic inside a handler's future fails that request only.

use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use futures::FutureExt;

use crate::error::{panic_text, AppError};
use crate::metrics::Admissions;

/// Asks whether an actor is serving; it answers at once from its mailbox.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Probe;

/// The last message of a shutdown: finish the work in progress, waiting at most `within`,
/// and take no new work where the actor can refuse it.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Drained, AppError>")]
pub struct Shutdown {
    /// The longest the actor waits for its work in progress.
    pub within: Duration,
}

/// What an actor had in progress when it was asked to shut down, and how much of that was
/// still unfinished when it stopped waiting (0: it all finished).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Work in progress when the shutdown began (queries, sessions, fan-outs, jobs).
    pub in_progress: usize,
    /// Of that, what had not finished when the wait ended.
    pub unfinished: usize,
}

/// An actor that admits work against a limit and counts the work in flight: its
/// [`Shutdown`] is [`drain`].
pub trait Admits: Actor + Unpin {
    /// Work in flight now.
    fn in_flight(&self) -> usize;
    /// Admits no more work (each further message gets 503).
    fn close_admission(&mut self);
}

/// The [`Shutdown`] of an [`Admits`] actor: admits no new work and waits (up to `within`)
/// for the work in flight.
pub fn drain<A: Admits>(
    act: &mut A,
    within: Duration,
) -> ResponseActFuture<A, Result<Drained, AppError>>
where
    A::Context: actix::AsyncContext<A>,
{
    act.close_admission();
    let in_progress = act.in_flight();
    let idle = |act: &A| act.in_flight() == 0;
    Box::pin(
        wait_until(idle, Instant::now() + within).map(move |_, act: &mut A, _| {
            Ok(Drained {
                in_progress,
                unfinished: act.in_flight(),
            })
        }),
    )
}

/// How often [`wait_until`] looks at its actor.
const WAIT_TICK: Duration = Duration::from_millis(10);

/// An actor future that ends once `done(actor)` holds, or at `deadline`; answers whether it
/// holds. Other messages are served meanwhile (the handler returning it does not serialise
/// the mailbox).
pub fn wait_until<A, F>(done: F, deadline: Instant) -> WaitUntil<A, F>
where
    A: Actor,
    F: Fn(&A) -> bool,
{
    WaitUntil {
        done,
        deadline,
        tick: Box::pin(actix_web::rt::time::sleep(Duration::ZERO)),
        actor: std::marker::PhantomData,
    }
}

/// See [`wait_until`].
pub struct WaitUntil<A, F> {
    done: F,
    deadline: Instant,
    tick: Pin<Box<actix_web::rt::time::Sleep>>,
    actor: std::marker::PhantomData<fn(&A)>,
}

impl<A: Actor, F: Fn(&A) -> bool + Unpin> ActorFuture<A> for WaitUntil<A, F> {
    type Output = bool;

    fn poll(
        mut self: Pin<&mut Self>,
        act: &mut A,
        _ctx: &mut A::Context,
        task: &mut std::task::Context<'_>,
    ) -> Poll<bool> {
        loop {
            if (self.done)(act) {
                return Poll::Ready(true);
            }
            let now = Instant::now();
            if now >= self.deadline {
                return Poll::Ready(false);
            }
            if self.tick.as_mut().poll(task).is_pending() {
                return Poll::Pending;
            }
            let next = (now + WAIT_TICK).min(self.deadline);
            self.tick.as_mut().reset(next.into());
        }
    }
}

/// Sends [`Shutdown`] to `addr`, and waits for the answer a little longer than `within`. An
/// actor that is already gone (its arbiter stopped, its mailbox closed) has nothing left.
pub async fn shut_down<A>(addr: &Addr<A>, within: Duration) -> Drained
where
    A: Actor + Handler<Shutdown>,
    A::Context: ToEnvelope<A, Shutdown>,
{
    let answer = addr
        .send(Shutdown { within })
        .timeout(within + Duration::from_secs(1))
        .await;
    match answer {
        Ok(Ok(drained)) => drained,
        Ok(Err(_)) | Err(MailboxError::Closed) => Drained::default(),
        Err(MailboxError::Timeout) => Drained {
            in_progress: 1,
            unfinished: 1,
        },
    }
}

/// The arbiter (thread) a handle started its actor on, stopped and joined once at
/// shutdown, or stopped when the last handle goes without one. Cheap to clone; handles over
/// actors started elsewhere (tests) hold none.
#[derive(Clone, Default)]
pub struct OwnArbiter(Arc<Owned>);

/// The arbiter, until a shutdown takes it.
#[derive(Default)]
struct Owned(Mutex<Option<Arbiter>>);

impl Owned {
    /// The arbiter, the first time only.
    fn take(&self) -> Option<Arbiter> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl OwnArbiter {
    /// Owns `arbiter`.
    pub fn new(arbiter: Arbiter) -> Self {
        Self(Arc::new(Owned(Mutex::new(Some(arbiter)))))
    }

    /// Stops the arbiter and waits for its thread to end: what ran on it is dropped, and the
    /// blocking work it started (file writes) has finished. Later calls do nothing.
    pub async fn stop(&self) {
        if let Some(arbiter) = self.0.take() {
            arbiter.stop();
            let _ = actix_web::rt::task::spawn_blocking(move || arbiter.join()).await;
        }
    }
}

impl Drop for Owned {
    /// An arbiter's thread keeps a handle to itself, so it runs until told to stop: without
    /// this, an app dropped without its shutdown (a test's, when the test ends) would leave
    /// the thread running, and with it the actor's timers, its pool and the pool's attempts
    /// to reconnect to a database that is gone.
    fn drop(&mut self) {
        if let Some(arbiter) = self.take() {
            arbiter.stop();
        }
    }
}

/// Test-only faults, to prove the supervision above (compiled with `fault-injection` only,
/// which release builds never enable).
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), AppError>")]
pub enum InjectFault {
    /// Panic in the handler itself.
    Panic,
    /// Panic inside the future the handler returns.
    PanicInFuture,
    /// Block the actor's thread, as a wedged actor would.
    Block(Duration),
}

/// A panic in `actor`, as the error its request gets; the middleware logs the payload.
fn panicked(actor: &'static str, payload: &(dyn std::any::Any + Send)) -> AppError {
    AppError::internal(actor, format_args!("panicked: {}", panic_text(payload)))
}

/// Runs an async actor's handler body: `work` builds the future under `catch_unwind`, and
/// the future itself is polled under `catch_unwind`.
pub fn respond<A, T, Fut>(
    actor: &mut A,
    ctx: &mut Context<A>,
    work: impl FnOnce(&mut A) -> Fut,
) -> ResponseFuture<Result<T, AppError>>
where
    A: Actor<Context = Context<A>>,
    Fut: Future<Output = Result<T, AppError>> + 'static,
    T: 'static,
{
    let name = std::any::type_name::<A>();
    match catch_unwind(AssertUnwindSafe(|| work(actor))) {
        Ok(fut) => Box::pin(
            AssertUnwindSafe(fut)
                .catch_unwind()
                .map(move |res| match res {
                    Ok(out) => out,
                    Err(payload) => Err(panicked(name, &*payload)),
                }),
        ),
        Err(payload) => {
            let err = panicked(name, &*payload);
            // The actor's state may be half-changed: let its supervisor restart it.
            ctx.stop();
            Box::pin(async move { Err(err) })
        }
    }
}

/// Runs a `SyncArbiter` actor's handler body under `catch_unwind`; on a panic the thread's
/// actor is stopped and rebuilt by the arbiter's factory, and the thread keeps serving.
pub fn guard_sync<A, T>(
    ctx: &mut SyncContext<A>,
    work: impl FnOnce() -> Result<T, AppError>,
) -> Result<T, AppError>
where
    A: Actor<Context = SyncContext<A>>,
{
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        ctx.stop();
        Err(panicked(std::any::type_name::<A>(), &*payload))
    })
}

/// Sends `msg` and awaits the answer for at most `timeout`: a full or closed mailbox or a
/// slow actor becomes 503 `overloaded` naming the actor and the message (for the log),
/// never an unbounded wait.
pub async fn ask<A, M, T>(addr: &Addr<A>, msg: M, timeout: Duration) -> Result<T, AppError>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message<Result = Result<T, AppError>> + Send + 'static,
    T: Send + 'static,
{
    ask_counted(addr, msg, timeout, &Admissions::default()).await
}

/// [`ask`], counting a failed send (the mailbox full past `timeout`, or closed) among the
/// actor's refusals (`/metrics`).
pub async fn ask_counted<A, M, T>(
    addr: &Addr<A>,
    msg: M,
    timeout: Duration,
    admissions: &Admissions,
) -> Result<T, AppError>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message<Result = Result<T, AppError>> + Send + 'static,
    T: Send + 'static,
{
    addr.send(msg).timeout(timeout).await.map_err(|err| {
        admissions.mailbox_failed(&err);
        let why = match err {
            MailboxError::Timeout => "did not answer in time",
            MailboxError::Closed => "has a closed mailbox",
        };
        let message = std::any::type_name::<M>()
            .rsplit("::")
            .next()
            .unwrap_or("a message");
        AppError::overloaded(
            std::any::type_name::<A>(),
            format_args!("{why} ({message})"),
        )
    })?
}

/// Counts one admitted request in an actor's in-flight counter until it is dropped
/// (finished or cancelled): the admission limit of async actors.
pub struct InFlight(Rc<Cell<usize>>);

impl InFlight {
    /// Counts one more request in `counter`.
    fn enter(counter: &Rc<Cell<usize>>) -> Self {
        counter.set(counter.get() + 1);
        Self(counter.clone())
    }

    /// Counts one more request in `counter` if fewer than `max` are in flight; `None` when
    /// the actor is full (the caller answers 503).
    pub fn admit(counter: &Rc<Cell<usize>>, max: usize) -> Option<Self> {
        (counter.get() < max).then(|| Self::enter(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Whether an actor answers a [`Probe`] within `timeout`.
pub async fn is_alive<A>(addr: &Addr<A>, timeout: Duration) -> bool
where
    A: Actor + Handler<Probe>,
    A::Context: ToEnvelope<A, Probe>,
{
    addr.connected() && addr.send(Probe).timeout(timeout).await.is_ok()
}

/// A test-only fault, as the fault route names it (`fault-injection` builds only).
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy)]
pub struct Fault(pub InjectFault);

#[cfg(feature = "fault-injection")]
impl Fault {
    /// Longer than the longest block, so a blocked actor still answers the request.
    pub const TIMEOUT: Duration = Duration::from_secs(10);

    /// The fault called `kind`: `panic`, `panic_in_future`, `block` (2 s), `block_5s`.
    pub fn named(kind: &str) -> Option<Self> {
        let fault = match kind {
            "panic" => InjectFault::Panic,
            "panic_in_future" => InjectFault::PanicInFuture,
            "block" => InjectFault::Block(Duration::from_secs(2)),
            "block_5s" => InjectFault::Block(Duration::from_secs(5)),
            _ => return None,
        };
        Some(Self(fault))
    }
}

/// Carries out a test-only fault in an async actor, through [`respond`].
#[cfg(feature = "fault-injection")]
pub fn inject<A>(
    actor: &mut A,
    ctx: &mut Context<A>,
    fault: InjectFault,
) -> ResponseFuture<Result<(), AppError>>
where
    A: Actor<Context = Context<A>>,
{
    respond(actor, ctx, move |_| {
        match fault {
            InjectFault::Panic => panic!("injected panic"),
            InjectFault::Block(d) => std::thread::sleep(d),
            InjectFault::PanicInFuture => {}
        }
        async move {
            if matches!(fault, InjectFault::PanicInFuture) {
                panic!("injected panic in future");
            }
            Ok(())
        }
    })
}

/// Implements what every async troupe actor answers besides its own messages: [`Probe`]
/// (readiness) and, in fault-injection builds only, `InjectFault` through [`respond`].
#[macro_export]
macro_rules! supervised_async_actor {
    ($actor:ty) => {
        impl ::actix::Handler<$crate::actors::supervise::Probe> for $actor {
            type Result = ();
            fn handle(&mut self, _msg: $crate::actors::supervise::Probe, _ctx: &mut Self::Context) {
            }
        }

        #[cfg(feature = "fault-injection")]
        impl ::actix::Handler<$crate::actors::supervise::InjectFault> for $actor {
            type Result = ::actix::ResponseFuture<Result<(), $crate::error::AppError>>;
            fn handle(
                &mut self,
                msg: $crate::actors::supervise::InjectFault,
                ctx: &mut Self::Context,
            ) -> Self::Result {
                $crate::actors::supervise::inject(self, ctx, msg)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn an_arbiter_stops_when_its_last_handle_goes_without_a_shutdown() {
        // The sender lives in a task on the arbiter: the receiver hears it dropped only once
        // the arbiter's thread has stopped and dropped its tasks.
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let arbiter = Arbiter::new();
        assert!(arbiter.spawn(async move {
            let _held = tx;
            std::future::pending::<()>().await;
        }));
        let own = OwnArbiter::new(arbiter);
        let clone = own.clone();
        drop(own);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut rx)
                .await
                .is_err(),
            "a clone is left: the arbiter runs on"
        );
        drop(clone);
        let dropped = tokio::time::timeout(Duration::from_secs(10), rx).await;
        assert!(
            matches!(dropped, Ok(Err(_))),
            "the arbiter's task was dropped: its thread stopped"
        );
    }
}
