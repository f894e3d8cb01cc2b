//! `DbActor`: every database operation (users, upload metadata), as a message, on its own
//! arbiter; [`Db`] is the handle the rest of troupe asks it through.
//!
//! Handlers return a `ResponseFuture`, so queries run concurrently up to the pool's size;
//! the actor's own thread only starts them. An admission limit caps the queries waiting
//! for a connection, so a burst answers 503 instead of queueing without bound.
//!
//! The handle sends each message inside a [`ForRequest`] carrying the caller's request id,
//! and waits longer than the pool's whole budget for an operation
//! ([`DbPool::answer_within`]): the actor always answers first, with what happened, so a
//! 503 on a write means it was not made.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::header::HeaderValue;
use chrono::NaiveDateTime;

use super::supervise::{
    ask, ask_counted, drain, is_alive, respond, shut_down, Admits, Drained, InFlight, OwnArbiter,
    Shutdown,
};
use crate::config::Config;
use crate::db::page::PageRequest;
use crate::db::uploads::{self, StoredPart, Upload, UploadPage};
use crate::db::users::{self, NewUser, User, UserChanges, UserPage};
use crate::db::{DbPool, PoolStats};
use crate::error::AppError;
use crate::http::request_id;
use crate::ids::{UploadId, UserId};
use crate::metrics::{Admissions, Metrics};

/// Owns the pool; restarted by its `Supervisor` after a panic.
pub struct DbActor {
    pool: DbPool,
    in_flight: Rc<Cell<usize>>,
    max_in_flight: usize,
    admissions: Admissions,
}

impl DbActor {
    /// An actor over `pool` admitting at most `max_in_flight` queries at once.
    pub fn new(pool: DbPool, max_in_flight: usize) -> Self {
        Self {
            pool,
            in_flight: Rc::new(Cell::new(0)),
            max_in_flight,
            admissions: Admissions::default(),
        }
    }

    /// The actor, counting what its admission limit lets in and refuses in `admissions`.
    pub fn counting(self, admissions: Admissions) -> Self {
        Self { admissions, ..self }
    }

    /// Runs `query` with the pool if there is room, counting it while it runs.
    fn run<T, Fut>(
        &mut self,
        ctx: &mut Context<Self>,
        query: impl FnOnce(DbPool) -> Fut,
    ) -> ResponseFuture<Result<T, AppError>>
    where
        T: 'static,
        Fut: std::future::Future<Output = Result<T, AppError>> + 'static,
    {
        respond(self, ctx, |this| {
            let admitted = InFlight::admit(&this.in_flight, this.max_in_flight)
                .map(|slot| (slot, query(this.pool.clone())));
            this.admissions.admission(admitted.is_some());
            async move {
                let Some((_slot, fut)) = admitted else {
                    return Err(AppError::overloaded(
                        "DbActor admission",
                        "too many database requests waiting",
                    ));
                };
                fut.await
            }
        })
    }
}

impl Actor for DbActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Supervised for DbActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        log::warn!("DbActor restarting");
        self.in_flight = Rc::new(Cell::new(0));
    }
}

/// Inserts a user.
#[derive(Debug, Message)]
#[rtype(result = "Result<User, AppError>")]
pub struct CreateUser(pub NewUser);

/// Reads one user by id.
#[derive(Debug, Message)]
#[rtype(result = "Result<User, AppError>")]
pub struct GetUser(pub UserId);

/// Reads a page of users in id order.
#[derive(Debug, Message)]
#[rtype(result = "Result<UserPage, AppError>")]
pub struct ListUsers(pub PageRequest<UserId>);

/// Changes some fields of one user.
#[derive(Debug, Message)]
#[rtype(result = "Result<User, AppError>")]
pub struct UpdateUser {
    /// The user to change.
    pub id: UserId,
    /// What to change.
    pub changes: UserChanges,
}

/// Deletes one user.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct DeleteUser(pub UserId);

/// Checks that the database answers a query.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct CheckDatabase;

/// Reads the pool's figures (`/metrics`).
#[derive(Debug, Message)]
#[rtype(result = "Result<PoolStats, AppError>")]
pub struct ReadPoolStats;

impl Handler<CreateUser> for DbActor {
    type Result = ResponseFuture<Result<User, AppError>>;
    fn handle(&mut self, msg: CreateUser, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move { users::create(&pool, msg.0).await })
    }
}

impl Handler<GetUser> for DbActor {
    type Result = ResponseFuture<Result<User, AppError>>;
    fn handle(&mut self, msg: GetUser, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move { users::get(&pool, msg.0).await })
    }
}

impl Handler<ListUsers> for DbActor {
    type Result = ResponseFuture<Result<UserPage, AppError>>;
    fn handle(&mut self, msg: ListUsers, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move { users::list(&pool, msg.0).await })
    }
}

impl Handler<UpdateUser> for DbActor {
    type Result = ResponseFuture<Result<User, AppError>>;
    fn handle(&mut self, msg: UpdateUser, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move {
            users::update(&pool, msg.id, msg.changes).await
        })
    }
}

impl Handler<DeleteUser> for DbActor {
    type Result = ResponseFuture<Result<(), AppError>>;
    fn handle(&mut self, msg: DeleteUser, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move { users::delete(&pool, msg.0).await })
    }
}

impl Handler<CheckDatabase> for DbActor {
    type Result = ResponseFuture<Result<(), AppError>>;
    fn handle(&mut self, _msg: CheckDatabase, ctx: &mut Self::Context) -> Self::Result {
        // Not counted against the admission limit: readiness must be answerable under load.
        respond(self, ctx, |this| {
            let pool = this.pool.clone();
            async move { pool.check().await }
        })
    }
}

impl Handler<ReadPoolStats> for DbActor {
    type Result = Result<PoolStats, AppError>;
    fn handle(&mut self, _msg: ReadPoolStats, _ctx: &mut Self::Context) -> Self::Result {
        Ok(self.pool.stats())
    }
}

impl Admits for DbActor {
    fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    fn close_admission(&mut self) {
        self.max_in_flight = 0;
    }
}

impl Handler<Shutdown> for DbActor {
    type Result = ResponseActFuture<Self, Result<Drained, AppError>>;
    /// Admits no new query (each gets 503) and waits for those in flight.
    fn handle(&mut self, msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        drain(self, msg.within)
    }
}

crate::supervised_async_actor!(DbActor);

/// A message sent on behalf of a request: the actor serves `msg` with `request_id` as the
/// current request id (its future runs on the actor's thread, not in the handler's task),
/// so every log line written meanwhile, the pool's included, names the request.
#[derive(Debug)]
pub struct ForRequest<M> {
    /// The message itself.
    pub msg: M,
    /// The request it serves, if any.
    pub request_id: Option<HeaderValue>,
}

impl<M> ForRequest<M> {
    /// `msg` for the request being served on this task (none outside a request).
    pub fn current(msg: M) -> Self {
        Self {
            msg,
            request_id: request_id::current(),
        }
    }
}

impl<M: Message> Message for ForRequest<M> {
    type Result = M::Result;
}

/// Serves `msg.msg` as `DbActor` serves it alone, within `msg.request_id`'s scope: the
/// handler's own part, and then the future it returns, wherever that runs.
fn serve_for_request<M, T>(
    actor: &mut DbActor,
    msg: ForRequest<M>,
    ctx: &mut Context<DbActor>,
) -> ResponseFuture<Result<T, AppError>>
where
    M: Message<Result = Result<T, AppError>>,
    DbActor: Handler<M, Result = ResponseFuture<Result<T, AppError>>>,
    T: 'static,
{
    let ForRequest { msg, request_id } = msg;
    let fut = request_id::sync_scope(request_id.clone(), || {
        <DbActor as Handler<M>>::handle(actor, msg, ctx)
    });
    match request_id {
        Some(id) => Box::pin(request_id::scope(id, fut)),
        None => fut,
    }
}

/// `Handler<ForRequest<M>>` for each message `M`, one by one: a blanket impl over every
/// `M` that `DbActor` handles would send the trait solver looking for
/// `ForRequest<ForRequest<..>>` without end.
macro_rules! for_request {
    ($($msg:ty => $answer:ty),* $(,)?) => {
        $(impl Handler<ForRequest<$msg>> for DbActor {
            type Result = ResponseFuture<Result<$answer, AppError>>;
            fn handle(&mut self, msg: ForRequest<$msg>, ctx: &mut Self::Context) -> Self::Result {
                serve_for_request(self, msg, ctx)
            }
        })*
    };
}

/// Inserts an upload's row.
#[derive(Debug, Message)]
#[rtype(result = "Result<Upload, AppError>")]
pub struct CreateUpload(pub Upload);

/// Reads one upload's row by id, complete or not.
#[derive(Debug, Message)]
#[rtype(result = "Result<Upload, AppError>")]
pub struct GetUpload(pub UploadId);

/// Reads a page of complete uploads in id order; with an owner, only that key's.
#[derive(Debug, Message)]
#[rtype(result = "Result<UploadPage, AppError>")]
pub struct ListUploads(pub PageRequest<String>, pub Option<String>);

/// Deletes one upload's row.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct DeleteUpload(pub UploadId);

/// Moves an unfinished upload's offset, if it is still at `from`.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, AppError>")]
pub struct AdvanceUpload {
    /// The upload.
    pub id: UploadId,
    /// The offset it must be at.
    pub from: u64,
    /// The new offset.
    pub to: u64,
    /// Its new expiry.
    pub expires_at: NaiveDateTime,
    /// The parts the new offset covers (`s3://` storage), recorded with it.
    pub parts: Vec<StoredPart>,
}

/// Records the multipart upload of an unfinished tus upload, if it has none yet.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, AppError>")]
pub struct BeginMultipart {
    /// The upload.
    pub id: UploadId,
    /// The multipart upload's id.
    pub multipart_id: String,
}

/// Reads the ETags of a tus upload's recorded parts.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<String>, AppError>")]
pub struct GetParts(pub UploadId);

/// Marks an upload complete with its SHA-256.
#[derive(Debug, Message)]
#[rtype(result = "Result<Upload, AppError>")]
pub struct CompleteUpload {
    /// The upload.
    pub id: UploadId,
    /// Lowercase hex SHA-256 of its content.
    pub sha256: String,
}

/// Lists unfinished uploads that expired before `before`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<UploadId>, AppError>")]
pub struct ListExpiredUploads {
    /// The cut-off time (UTC).
    pub before: NaiveDateTime,
    /// At most this many ids.
    pub limit: i64,
}

impl Handler<CreateUpload> for DbActor {
    type Result = ResponseFuture<Result<Upload, AppError>>;
    fn handle(&mut self, msg: CreateUpload, ctx: &mut Self::Context) -> Self::Result {
        self.run(
            ctx,
            |pool| async move { uploads::create(&pool, msg.0).await },
        )
    }
}

impl Handler<GetUpload> for DbActor {
    type Result = ResponseFuture<Result<Upload, AppError>>;
    fn handle(&mut self, msg: GetUpload, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move { uploads::get(&pool, msg.0).await })
    }
}

impl Handler<ListUploads> for DbActor {
    type Result = ResponseFuture<Result<UploadPage, AppError>>;
    fn handle(&mut self, msg: ListUploads, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move {
            uploads::list(&pool, msg.0, msg.1).await
        })
    }
}

impl Handler<DeleteUpload> for DbActor {
    type Result = ResponseFuture<Result<(), AppError>>;
    fn handle(&mut self, msg: DeleteUpload, ctx: &mut Self::Context) -> Self::Result {
        self.run(
            ctx,
            |pool| async move { uploads::delete(&pool, msg.0).await },
        )
    }
}

impl Handler<AdvanceUpload> for DbActor {
    type Result = ResponseFuture<Result<bool, AppError>>;
    fn handle(&mut self, msg: AdvanceUpload, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move {
            let span = (msg.from, msg.to);
            uploads::advance(&pool, msg.id, span, msg.expires_at, msg.parts).await
        })
    }
}

impl Handler<BeginMultipart> for DbActor {
    type Result = ResponseFuture<Result<bool, AppError>>;
    fn handle(&mut self, msg: BeginMultipart, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move {
            uploads::begin_multipart(&pool, msg.id, msg.multipart_id).await
        })
    }
}

impl Handler<GetParts> for DbActor {
    type Result = ResponseFuture<Result<Vec<String>, AppError>>;
    fn handle(&mut self, msg: GetParts, ctx: &mut Self::Context) -> Self::Result {
        self.run(
            ctx,
            |pool| async move { uploads::parts(&pool, msg.0).await },
        )
    }
}

impl Handler<CompleteUpload> for DbActor {
    type Result = ResponseFuture<Result<Upload, AppError>>;
    fn handle(&mut self, msg: CompleteUpload, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move {
            uploads::complete(&pool, msg.id, msg.sha256).await
        })
    }
}

impl Handler<ListExpiredUploads> for DbActor {
    type Result = ResponseFuture<Result<Vec<UploadId>, AppError>>;
    fn handle(&mut self, msg: ListExpiredUploads, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move {
            uploads::expired(&pool, msg.before, msg.limit).await
        })
    }
}

/// Lists unfinished uploads whose every byte is stored (to be finished).
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<UploadId>, AppError>")]
pub struct ListWholeUploads {
    /// At most this many ids.
    pub limit: i64,
}

impl Handler<ListWholeUploads> for DbActor {
    type Result = ResponseFuture<Result<Vec<UploadId>, AppError>>;
    fn handle(&mut self, msg: ListWholeUploads, ctx: &mut Self::Context) -> Self::Result {
        self.run(ctx, |pool| async move {
            uploads::whole_unfinished(&pool, msg.limit).await
        })
    }
}

for_request!(
    CreateUser => User,
    GetUser => User,
    ListUsers => UserPage,
    UpdateUser => User,
    DeleteUser => (),
    CheckDatabase => (),
    CreateUpload => Upload,
    GetUpload => Upload,
    ListUploads => UploadPage,
    DeleteUpload => (),
    AdvanceUpload => bool,
    BeginMultipart => bool,
    GetParts => Vec<String>,
    CompleteUpload => Upload,
    ListExpiredUploads => Vec<UploadId>,
    ListWholeUploads => Vec<UploadId>,
);

/// The handle to a `DbActor`: its address, how long a caller waits, one method per message.
/// Cheap to clone.
#[derive(Clone)]
pub struct Db {
    addr: Addr<DbActor>,
    timeout: Duration,
    /// The arbiter `start` made for the actor, stopped by `shut_down`.
    arbiter: OwnArbiter,
    admissions: Admissions,
}

impl Db {
    /// Starts a supervised `DbActor` on an arbiter of its own, over a pool built on that
    /// arbiter's thread (the database must be migrated already): its connections' sockets
    /// are then driven where the actor runs, so a query's answer wakes one thread, not the
    /// main one first. It admits 32 queries per pooled connection; callers wait
    /// [`DbPool::answer_within`], longer than any operation may take. Its admissions are
    /// counted in `metrics`. Answers the handle and the pool.
    pub async fn start(config: &Config, metrics: &Metrics) -> std::io::Result<(Self, DbPool)> {
        let arbiter = Arbiter::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pool_config = config.clone();
        let spawned = arbiter.spawn_fn(move || {
            let _ = tx.send(DbPool::build(&pool_config));
        });
        let pool = match (spawned, rx.await) {
            (true, Ok(pool)) => pool,
            _ => return Err(std::io::Error::other("the database arbiter is not running")),
        };
        let max_in_flight = config.db_pool_size as usize * 32;
        let actor_pool = pool.clone();
        let admissions = Admissions::new(metrics, "db");
        let counted = admissions.clone();
        let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
            DbActor::new(actor_pool, max_in_flight).counting(counted)
        });
        let arbiter = OwnArbiter::new(arbiter);
        let timeout = pool.answer_within();
        Ok((
            Self {
                addr,
                timeout,
                arbiter,
                admissions,
            },
            pool,
        ))
    }

    /// A handle to an actor already started (actor tests start their own).
    pub fn new(addr: Addr<DbActor>, timeout: Duration) -> Self {
        Self {
            addr,
            timeout,
            arbiter: OwnArbiter::default(),
            admissions: Admissions::default(),
        }
    }

    /// Shuts the actor down: the queries in flight get up to `within` to finish, then the
    /// arbiter `start` made stops, and the actor goes with its share of the pool (the
    /// connections close with the pool's last handle; an SQLite file is checkpointed as its
    /// last connection closes). Call it last: the other actors write through it.
    pub async fn shut_down(&self, within: Duration) -> Drained {
        let drained = shut_down(&self.addr, within).await;
        self.arbiter.stop().await;
        drained
    }

    /// The actor's address (actor tests, fault injection).
    pub fn addr(&self) -> &Addr<DbActor> {
        &self.addr
    }

    /// How long a caller waits for an answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Test-only: sends `fault` to the actor (`fault-injection` builds only).
    #[cfg(feature = "fault-injection")]
    pub async fn inject(&self, fault: super::supervise::Fault) -> Result<(), AppError> {
        ask(&self.addr, fault.0, super::supervise::Fault::TIMEOUT).await
    }

    /// Whether the actor answers within `timeout`.
    pub async fn is_alive(&self, timeout: Duration) -> bool {
        is_alive(&self.addr, timeout).await
    }

    /// Whether the database answers a query; the actor answers within 750 ms (`timeout`
    /// should be longer, or a slow answer reads as an overloaded actor).
    pub async fn check(&self, timeout: Duration) -> Result<(), AppError> {
        ask(&self.addr, ForRequest::current(CheckDatabase), timeout).await
    }

    /// The pool's figures, if the actor answers within `timeout`.
    pub async fn pool_stats(&self, timeout: Duration) -> Result<PoolStats, AppError> {
        ask(&self.addr, ReadPoolStats, timeout).await
    }

    /// Sends `msg` for the current request and waits for its answer.
    async fn call<M, T>(&self, msg: M) -> Result<T, AppError>
    where
        M: Message<Result = Result<T, AppError>> + Send + 'static,
        DbActor: Handler<ForRequest<M>>,
        T: Send + 'static,
    {
        let msg = ForRequest::current(msg);
        ask_counted(&self.addr, msg, self.timeout, &self.admissions).await
    }

    /// Inserts a user.
    pub async fn create_user(&self, new: NewUser) -> Result<User, AppError> {
        self.call(CreateUser(new)).await
    }

    /// One user.
    pub async fn user(&self, id: UserId) -> Result<User, AppError> {
        self.call(GetUser(id)).await
    }

    /// A page of users.
    pub async fn users(&self, page: PageRequest<UserId>) -> Result<UserPage, AppError> {
        self.call(ListUsers(page)).await
    }

    /// Changes a user.
    pub async fn update_user(&self, id: UserId, changes: UserChanges) -> Result<User, AppError> {
        self.call(UpdateUser { id, changes }).await
    }

    /// Deletes a user.
    pub async fn delete_user(&self, id: UserId) -> Result<(), AppError> {
        self.call(DeleteUser(id)).await
    }

    /// Inserts an upload's row.
    pub async fn create_upload(&self, row: Upload) -> Result<Upload, AppError> {
        self.call(CreateUpload(row)).await
    }

    /// One upload's row, complete or not.
    pub async fn upload(&self, id: UploadId) -> Result<Upload, AppError> {
        self.call(GetUpload(id)).await
    }

    /// A page of complete uploads; with `owner`, only the uploads that key created.
    pub async fn uploads(
        &self,
        page: PageRequest<String>,
        owner: Option<String>,
    ) -> Result<UploadPage, AppError> {
        self.call(ListUploads(page, owner)).await
    }

    /// Deletes an upload's row.
    pub async fn delete_upload(&self, id: UploadId) -> Result<(), AppError> {
        self.call(DeleteUpload(id)).await
    }

    /// Moves an unfinished upload's offset from `from` to `to`, if it is still at `from`,
    /// recording `parts` (`s3://` storage) with it.
    pub async fn advance_upload(
        &self,
        id: UploadId,
        (from, to): (u64, u64),
        expires_at: NaiveDateTime,
        parts: Vec<StoredPart>,
    ) -> Result<bool, AppError> {
        let msg = AdvanceUpload {
            id,
            from,
            to,
            expires_at,
            parts,
        };
        self.call(msg).await
    }

    /// Records the multipart upload of an unfinished tus upload; false when it has one.
    pub async fn begin_multipart(
        &self,
        id: UploadId,
        multipart_id: String,
    ) -> Result<bool, AppError> {
        self.call(BeginMultipart { id, multipart_id }).await
    }

    /// The ETags of a tus upload's recorded parts, part 0 first.
    pub async fn parts(&self, id: UploadId) -> Result<Vec<String>, AppError> {
        self.call(GetParts(id)).await
    }

    /// Marks an upload complete.
    pub async fn complete_upload(&self, id: UploadId, sha256: String) -> Result<Upload, AppError> {
        self.call(CompleteUpload { id, sha256 }).await
    }

    /// Unfinished uploads expired before `before`.
    pub async fn expired_uploads(
        &self,
        before: NaiveDateTime,
        limit: i64,
    ) -> Result<Vec<UploadId>, AppError> {
        self.call(ListExpiredUploads { before, limit }).await
    }

    /// Unfinished uploads whose every byte is stored.
    pub async fn whole_uploads(&self, limit: i64) -> Result<Vec<UploadId>, AppError> {
        self.call(ListWholeUploads { limit }).await
    }
}
