//! `FetchActor`: calls upstream sources for `/aggregate` and `/parallel`.
//!
//! One actor per HTTP worker, started on that worker's thread: awc clients are `!Send`, so
//! each thread needs its own, and a handler's message then never leaves its thread. The
//! actors share the sources' breakers and statistics ([`Upstreams`], behind an `Arc`).
//! Handlers return a `ResponseFuture`, so many fan-outs run at once on one actor; an
//! admission limit answers 503 past `MAX_IN_FLIGHT`. [`Fetch`] is the handle handlers use;
//! it hides the cancellation pair that ends a fan-out whose requester went away.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use futures::future::{select, Either};
use tokio::sync::oneshot;

use super::supervise::{
    ask_counted, drain, is_alive, respond, shut_down, Admits, Drained, InFlight, Shutdown,
};
use crate::error::AppError;
use crate::fetch::call::{all_or_nothing, build_client, gather};
use crate::fetch::{FanOut, SourceFailure, SourceId, SourceResult, Upstreams};
use crate::metrics::Admissions;

/// Fan-outs one actor runs at once; past this, requests answer 503 `overloaded`.
pub const MAX_IN_FLIGHT: usize = 2048;

/// Owns one thread's awc client (kept across requests, so connections are reused) and a
/// share of the sources' state; restarted by its `Supervisor` after a panic.
pub struct FetchActor {
    client: awc::Client,
    upstreams: Arc<Upstreams>,
    in_flight: Rc<Cell<usize>>,
    max_in_flight: usize,
    admissions: Admissions,
}

impl FetchActor {
    /// An actor with a new client admitting `max_in_flight` fan-outs at once; call it on
    /// the thread the actor will run on.
    pub fn new(upstreams: Arc<Upstreams>, max_in_flight: usize) -> Self {
        Self {
            client: build_client(&upstreams),
            upstreams,
            in_flight: Rc::new(Cell::new(0)),
            max_in_flight,
            admissions: Admissions::default(),
        }
    }

    /// The actor, counting what its admission limit lets in and refuses in `admissions`.
    pub fn counting(self, admissions: Admissions) -> Self {
        Self { admissions, ..self }
    }

    /// Starts a supervised actor admitting [`MAX_IN_FLIGHT`] fan-outs on the current
    /// thread's arbiter (an HTTP worker's, in the server; the test's, in tests).
    pub fn start_here(upstreams: Arc<Upstreams>) -> Addr<Self> {
        Self::start_here_with_limit(upstreams, MAX_IN_FLIGHT)
    }

    /// [`FetchActor::start_here`] with another admission limit.
    pub fn start_here_with_limit(upstreams: Arc<Upstreams>, max_in_flight: usize) -> Addr<Self> {
        Supervisor::start(move |_| Self::new(upstreams, max_in_flight))
    }

    /// Runs `work` with the client if there is room, until it ends or the requester goes away.
    fn run<T, Fut>(
        &mut self,
        ctx: &mut Context<Self>,
        cancel: Cancellation,
        work: impl FnOnce(awc::Client, Arc<Upstreams>) -> Fut,
    ) -> ResponseFuture<Result<T, AppError>>
    where
        T: 'static,
        Fut: Future<Output = T> + 'static,
    {
        respond(self, ctx, |this| {
            let admitted = InFlight::admit(&this.in_flight, this.max_in_flight)
                .map(|slot| (slot, work(this.client.clone(), this.upstreams.clone())));
            this.admissions.admission(admitted.is_some());
            async move {
                let Some((_slot, fut)) = admitted else {
                    return Err(AppError::overloaded(
                        "FetchActor admission",
                        "too many upstream fan-outs",
                    ));
                };
                // actix polls a handler's future to its end even when the requester has gone;
                // the cancellation is how a dropped request drops its upstream calls.
                match select(std::pin::pin!(fut), cancel.0).await {
                    Either::Left((out, _)) => Ok(out),
                    Either::Right(_) => Err(AppError::Upstream("the request was cancelled".into())),
                }
            }
        })
    }
}

impl Actor for FetchActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Supervised for FetchActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        log::warn!("FetchActor restarting");
        // Fan-outs still running keep their own slot guards on the old counter.
        self.in_flight = Rc::new(Cell::new(0));
    }
}

/// Held by the requester while it waits for a fan-out; dropping it (the client went away,
/// the handler was dropped) cancels the fan-out's calls.
#[derive(Debug)]
pub struct CancelOnDrop {
    _sender: oneshot::Sender<()>,
}

/// The actor's side of a [`CancelOnDrop`]: ends when that is dropped.
#[derive(Debug)]
pub struct Cancellation(oneshot::Receiver<()>);

/// A linked pair: the requester keeps the first, the message carries the second.
pub fn cancellation() -> (CancelOnDrop, Cancellation) {
    let (tx, rx) = oneshot::channel();
    (CancelOnDrop { _sender: tx }, Cancellation(rx))
}

/// Calls the chosen sources at once and keeps every outcome (`/aggregate`).
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<SourceResult>, AppError>")]
pub struct GatherSources {
    /// The sources, deadline and request id.
    pub fan_out: FanOut,
    /// Ends the calls when the requester goes away.
    pub cancel: Cancellation,
}

/// Calls the chosen sources at once; the first failure cancels the rest (`/parallel`).
#[derive(Debug, Message)]
#[rtype(result = "Result<Result<Vec<Bytes>, SourceFailure>, AppError>")]
pub struct CallAllSources {
    /// The sources, deadline and request id.
    pub fan_out: FanOut,
    /// Ends the calls when the requester goes away.
    pub cancel: Cancellation,
}

impl Handler<GatherSources> for FetchActor {
    type Result = ResponseFuture<Result<Vec<SourceResult>, AppError>>;
    fn handle(&mut self, msg: GatherSources, ctx: &mut Self::Context) -> Self::Result {
        let GatherSources { fan_out, cancel } = msg;
        self.run(ctx, cancel, move |client, upstreams| async move {
            gather(&client, &upstreams, &fan_out).await
        })
    }
}

impl Handler<CallAllSources> for FetchActor {
    type Result = ResponseFuture<Result<Result<Vec<Bytes>, SourceFailure>, AppError>>;
    fn handle(&mut self, msg: CallAllSources, ctx: &mut Self::Context) -> Self::Result {
        let CallAllSources { fan_out, cancel } = msg;
        self.run(ctx, cancel, move |client, upstreams| async move {
            all_or_nothing(&client, &upstreams, &fan_out).await
        })
    }
}

impl Admits for FetchActor {
    fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    fn close_admission(&mut self) {
        self.max_in_flight = 0;
    }
}

impl Handler<Shutdown> for FetchActor {
    type Result = ResponseActFuture<Self, Result<Drained, AppError>>;
    /// Admits no new fan-out (each gets 503) and waits for those in flight.
    fn handle(&mut self, msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        drain(self, msg.within)
    }
}

crate::supervised_async_actor!(FetchActor);

/// How much longer than a fan-out's own deadline a caller waits for the actor.
const ACTOR_MARGIN: Duration = Duration::from_millis(1000);

/// The handle to one worker's `FetchActor` and the sources it calls. Cheap to clone.
#[derive(Clone)]
pub struct Fetch {
    addr: Addr<FetchActor>,
    upstreams: Arc<Upstreams>,
    admissions: Admissions,
}

impl Fetch {
    /// Starts a `FetchActor` on the current thread's arbiter (an HTTP worker's), counting
    /// its admissions in `admissions` (shared by every worker's).
    pub fn start_here(upstreams: Arc<Upstreams>, admissions: Admissions) -> Self {
        let (up, counted) = (upstreams.clone(), admissions.clone());
        let addr = Supervisor::start(move |_| FetchActor::new(up, MAX_IN_FLIGHT).counting(counted));
        Self {
            addr,
            upstreams,
            admissions,
        }
    }

    /// The configured sources, their breakers and statistics.
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// The actor's address (actor tests, probes).
    pub fn addr(&self) -> &Addr<FetchActor> {
        &self.addr
    }

    /// Whether the actor answers within `timeout`.
    pub async fn is_alive(&self, timeout: Duration) -> bool {
        is_alive(&self.addr, timeout).await
    }

    /// Shuts the actor down: the fan-outs in flight get up to `within`. An actor whose HTTP
    /// worker has stopped is gone already (it ran on that worker's arbiter): nothing is left.
    pub async fn shut_down(&self, within: Duration) -> Drained {
        shut_down(&self.addr, within).await
    }

    /// Calls `sources` at once and keeps every outcome. Dropping the future cancels the calls.
    pub async fn gather(
        &self,
        sources: Vec<SourceId>,
        request_id: String,
    ) -> Result<Vec<SourceResult>, AppError> {
        self.send(sources, request_id, |fan_out, cancel| GatherSources {
            fan_out,
            cancel,
        })
        .await
    }

    /// Calls `sources` at once; the first failure cancels the rest. Dropping the future
    /// cancels the calls.
    pub async fn all_or_nothing(
        &self,
        sources: Vec<SourceId>,
        request_id: String,
    ) -> Result<Result<Vec<Bytes>, SourceFailure>, AppError> {
        self.send(sources, request_id, |fan_out, cancel| CallAllSources {
            fan_out,
            cancel,
        })
        .await
    }

    async fn send<M, T>(
        &self,
        sources: Vec<SourceId>,
        request_id: String,
        make: impl FnOnce(FanOut, Cancellation) -> M,
    ) -> Result<T, AppError>
    where
        FetchActor: Handler<M>,
        M: Message<Result = Result<T, AppError>> + Send + 'static,
        T: Send + 'static,
    {
        let limit = self.upstreams.limits.deadline;
        let fan_out = FanOut {
            sources,
            deadline: Instant::now() + limit,
            request_id,
        };
        let (_cancel_on_drop, cancel) = cancellation();
        let msg = make(fan_out, cancel);
        ask_counted(&self.addr, msg, limit + ACTOR_MARGIN, &self.admissions).await
    }
}
