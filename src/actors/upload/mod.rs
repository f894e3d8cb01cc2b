//! `UploadActor`: owns the files being written, one session per request; [`Uploads`] is the
//! handle the routes use, and [`UploadSession`] the handler-side half of one file being
//! written.
//!
//! A session streams the request body and hands it over in owned batches ([`WriteChunk`]),
//! awaiting each, so a slow disk slows the client rather than growing the server's memory.
//! Every file operation runs on a blocking thread, never on an async worker. A session ends
//! with exactly one [`FinishFile`] or [`EndSession`]; a session dropped mid-way (client gone)
//! ends itself, so nothing half-written is ever kept.
//!
//! With `s3://` storage a `POST /upload` session writes an object instead of a file: its
//! parts go to the bucket as they fill, and the object exists once the session finishes
//! (`upload::bucket`).
//!
//! tus uploads keep their offset in the database and their bytes in `tus/{id}`, or on
//! `s3://` storage in the parts of a multipart upload and a tail (`objects`); their
//! lifecycle is [`tus`]'s.

mod objects;
pub mod session;
pub mod tus;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use uuid::Uuid;

use super::cpu::CpuPool;
use super::db::Db;
use super::supervise::{
    ask, ask_counted, is_alive, respond, shut_down, wait_until, Drained, OwnArbiter, Shutdown,
};
use crate::auth::Access;
use crate::bulk::Pace;
use crate::config::Limits;
use crate::db::locks::UploadLocks;
use crate::db::uploads::Upload;
use crate::error::AppError;
use crate::ids::UploadId;
use crate::metrics::{Admissions, Metrics, TUS_COMPLETED, TUS_CREATED, TUS_EXPIRED, UPLOAD_BYTES};
use crate::upload::bucket::SharedObject;
use crate::upload::digests::{DigestCache, DIGEST_CACHE_CAPACITY};
use crate::upload::file::{self, OpenFile, SharedFile};
use crate::upload::tus_object::TusObject;
use crate::upload::{Storage, Store};
pub use session::{SessionGuard, UploadSession};
pub use tus::{PatchStart, SessionEnd, CHECKPOINT_BYTES, HANDOVER_WAIT};

/// Bytes per write-and-hash step: large enough that per-message costs vanish, small enough
/// that an upload holds at most two batches in memory.
pub const BATCH_BYTES: usize = 1 << 20;

/// The longest one step (a batch's write, creating a file, a wait for a CPU place) may take:
/// under heavy write-back a disk's metadata operations can stall for seconds, which is slow,
/// not overloaded.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the end of a session (fsync, rename, the row; for tus the offset, and on the
/// last PATCH the digest) may take.
const FINISH_TIMEOUT: Duration = Duration::from_secs(120);

/// What the actor needs besides its sessions; cloned into each handler's future.
#[derive(Clone)]
pub struct Deps {
    store: Storage,
    db: Db,
    cpu: CpuPool,
    tus_expiry: Duration,
    /// Digests of unfinished tus uploads between their PATCHes (this process's only).
    digests: Arc<DigestCache>,
    /// Uploads' locks: the PATCHes holding one (the hand-over), and on PostgreSQL the
    /// locks every replica sees.
    locks: UploadLocks,
    /// tus uploads created, completed and expired (`/metrics`).
    tus: TusCounts,
}

impl Deps {
    /// The upload directory, on `file://` storage.
    fn dir(&self) -> Result<&Store, AppError> {
        self.store.dir().ok_or_else(|| {
            AppError::internal("an upload's file", "the uploads are stored in a bucket")
        })
    }
}

/// The tus uploads created, completed and expired, for `/metrics`; no-op by default.
#[derive(Clone)]
pub struct TusCounts {
    created: metrics::Counter,
    completed: metrics::Counter,
    expired: metrics::Counter,
}

impl Default for TusCounts {
    fn default() -> Self {
        Self {
            created: metrics::Counter::noop(),
            completed: metrics::Counter::noop(),
            expired: metrics::Counter::noop(),
        }
    }
}

impl TusCounts {
    /// The counters in `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            created: metrics.counter(TUS_CREATED, &[]),
            completed: metrics.counter(TUS_COMPLETED, &[]),
            expired: metrics.counter(TUS_EXPIRED, &[]),
        }
    }
}

/// Owns the upload sessions; restarted by its `Supervisor` after a panic (sessions then end,
/// and their files' locks are released with them).
pub struct UploadActor {
    deps: Deps,
    sessions: HashMap<Uuid, Session>,
    /// Every session's file still held anywhere (the session, a write, its end): a session
    /// lets its file go only after its last write and its offset are recorded, so the
    /// shutdown waits for these.
    files: Vec<std::sync::Weak<Mutex<OpenFile>>>,
}

struct Session {
    /// The session's file; an object session's stays empty, held only so that the
    /// shutdown waits for the session's work as for any other.
    file: SharedFile,
    target: Target,
}

#[derive(Debug, Clone)]
enum Target {
    /// A `POST /upload` written to a temp file.
    Fresh { id: UploadId },
    /// A `POST /upload` written to an object in the bucket.
    Object { write: SharedObject },
    /// A tus PATCH appending to `tus/{id}`; with `checkpoint_every`, the offset is recorded
    /// each time that many bytes past the last recorded one are written (and fsynced).
    Tus {
        id: UploadId,
        checkpoint_every: Option<u64>,
    },
    /// A tus PATCH appending to an upload's object (`s3://` storage); with `checkpoint`,
    /// every part is recorded with its offset as it goes.
    TusObject {
        id: UploadId,
        object: SharedTusObject,
        checkpoint: bool,
    },
}

/// A tus PATCH's object, opened by its start and taken by its end.
pub type SharedTusObject = Arc<tokio::sync::Mutex<Option<TusObject>>>;

impl UploadActor {
    /// An actor over `store`, recording metadata through `db` and digesting on `cpu`; its
    /// PATCHes take their uploads' locks from `locks`.
    pub fn new(
        store: impl Into<Storage>,
        db: Db,
        cpu: CpuPool,
        tus_expiry: Duration,
        locks: UploadLocks,
    ) -> Self {
        Self {
            deps: Deps {
                store: store.into(),
                db,
                cpu,
                tus_expiry,
                digests: Arc::new(DigestCache::new(DIGEST_CACHE_CAPACITY)),
                locks,
                tus: TusCounts::default(),
            },
            sessions: HashMap::new(),
            files: Vec::new(),
        }
    }

    /// The actor, counting the tus uploads it creates, completes and expires in `tus`.
    pub fn counting(mut self, tus: TusCounts) -> Self {
        self.deps.tus = tus;
        self
    }

    /// Sweeps expired (and finishes whole) uploads in the background; failures are logged.
    fn spawn_sweep(&self, ctx: &mut Context<Self>) {
        let deps = self.deps.clone();
        ctx.spawn(
            async move {
                if let Err(err) = tus::sweep(&deps).await {
                    log::warn!("sweeping expired uploads failed: {}", err.cause());
                }
            }
            .into_actor(self),
        );
    }

    fn open_session(&mut self, key: Uuid, target: Target) -> SharedFile {
        let file: SharedFile = Arc::new(Mutex::new(OpenFile::default()));
        self.files.retain(|f| f.strong_count() > 0);
        self.files.push(Arc::downgrade(&file));
        self.sessions.insert(
            key,
            Session {
                file: file.clone(),
                target,
            },
        );
        file
    }
}

impl Actor for UploadActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        // Once at start-up too: a crash may have left uploads whole but unfinished.
        self.spawn_sweep(ctx);
        // Sweep often enough that an upload outlives its expiry by at most half of it.
        let every =
            (self.deps.tus_expiry / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
        ctx.run_interval(every, |act, ctx| act.spawn_sweep(ctx));
    }
}

impl Supervised for UploadActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        log::warn!("UploadActor restarting");
        self.sessions.clear();
    }
}

/// Writes an upload's row; when that fails, removes what is already stored for it (its
/// file or tus file, or its object), so that nothing stored is left without its row.
async fn insert_row_or_remove(deps: &Deps, row: Upload) -> Result<Upload, AppError> {
    let id = row.id;
    let inserted = deps.db.create_upload(row).await;
    if inserted.is_err() {
        let removed = match &deps.store {
            Storage::Bucket(bucket) => bucket.remove(&id).await,
            Storage::Dir(store) => {
                let (stored, tus) = (store.file_path(&id), store.tus_path(&id));
                blocking("removing a file whose row failed", move || {
                    file::remove_quietly(&stored)?;
                    file::remove_quietly(&tus)
                })
                .await
            }
        };
        if let Err(err) = removed {
            log::warn!(
                "upload {id}: its row failed and its bytes stay: {}",
                err.cause()
            );
        }
    }
    inserted
}

/// Runs blocking file work (`what`, for the log) on a blocking thread at bulk priority; an
/// I/O error is 507 on a full disk, else 500, its cause hidden from the client.
async fn blocking<T, F>(what: &'static str, work: F) -> Result<T, AppError>
where
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let work = move || {
        crate::bulk::lower_thread_priority();
        work()
    };
    match actix_web::rt::task::spawn_blocking(work).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(err)) => Err(AppError::storage(what, &err)),
        Err(join) => Err(AppError::internal(what, join)),
    }
}

fn no_session() -> AppError {
    AppError::internal("an upload session", "no such session")
}

/// Starts a `POST /upload` session: an empty temp file for upload `id`.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct CreateFile {
    /// The session's key, chosen by the caller.
    pub session: Uuid,
    /// The upload's id (the file's eventual name).
    pub id: UploadId,
}

/// Appends a batch of chunks to a session's file, in order; answers the bytes written by the
/// session so far.
#[derive(Debug, Message)]
#[rtype(result = "Result<u64, AppError>")]
pub struct WriteChunk {
    /// The session.
    pub session: Uuid,
    /// The next bytes.
    pub chunks: Vec<Bytes>,
}

/// Completes a `POST /upload`: fsync, rename into place, then the metadata row. The file is
/// visible only after all three; a failure removes it.
#[derive(Debug, Message)]
#[rtype(result = "Result<Upload, AppError>")]
pub struct FinishFile {
    /// The session.
    pub session: Uuid,
    /// The row to record (its id is the session's upload id).
    pub row: Upload,
}

/// Creates a tus upload: its empty file, then its row.
#[derive(Debug, Message)]
#[rtype(result = "Result<Upload, AppError>")]
pub struct CreateTusUpload(pub Upload);

/// Starts a tus PATCH session: locks the upload's file (asking a PATCH of this process that
/// holds it to hand it over; 423 when the lock stays held), reads the row under the lock, and
/// cuts off any bytes past the durable offset.
#[derive(Debug, Message)]
#[rtype(result = "Result<PatchStart, AppError>")]
pub struct BeginPatch {
    /// The session's key, chosen by the caller.
    pub session: Uuid,
    /// The upload.
    pub id: UploadId,
    /// Record the offset (fsync, then the database) every this many bytes while the PATCH
    /// runs ([`CHECKPOINT_BYTES`]). `None` when the PATCH's bytes must stand or fall
    /// together (a checksum covers them all).
    pub checkpoint_every: Option<u64>,
    /// The key the PATCH came with (`None`: open mode); another key's upload is 404, checked
    /// before the PATCH could take the lock over from its owner's.
    pub access: Option<Access>,
}

/// Ends a session. A `POST /upload` session's temp file is deleted. A tus session either
/// keeps what it wrote (fsync, then the offset in the database; the upload is finished when
/// it is whole) or cuts the file back to where it started.
#[derive(Debug, Message)]
#[rtype(result = "Result<SessionEnd, AppError>")]
pub struct EndSession {
    /// The session.
    pub session: Uuid,
    /// Whether a tus session keeps the bytes it wrote.
    pub keep: bool,
}

/// What one write-and-hash step of a session answers: the digest state after its batch.
pub type StepResult = Result<Option<Box<crate::digest::Hasher>>, AppError>;

/// Ends a tus session whose handler went away mid-body (its client is gone), keeping every
/// byte it received: waits for the batch being written, writes the bytes still held, then
/// ends the session as [`EndSession`] with `keep` does.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct DropSession {
    /// The session.
    pub session: Uuid,
    /// Bytes received and not yet written.
    pub pending: Vec<Bytes>,
    /// The write under way, if any.
    pub after: Option<actix_web::rt::task::JoinHandle<StepResult>>,
    /// The request the PATCH served, for the log.
    pub request_id: Option<actix_web::http::header::HeaderValue>,
}

/// Deletes an upload: its row, then its file. An unfinished tus upload is refused (423)
/// while a PATCH writes it; `tus: false` (`DELETE /uploads/{id}`) sees complete uploads only.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct RemoveUpload {
    /// The upload.
    pub id: UploadId,
    /// Whether unfinished tus uploads may be removed (tus termination).
    pub tus: bool,
}

/// Deletes expired unfinished tus uploads now (the actor also does it on a timer); answers
/// how many went.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, AppError>")]
pub struct SweepExpired;

impl Handler<CreateFile> for UploadActor {
    type Result = ResponseFuture<Result<(), AppError>>;
    fn handle(&mut self, msg: CreateFile, ctx: &mut Self::Context) -> Self::Result {
        respond(self, ctx, |this| {
            let store = match &this.deps.store {
                Storage::Dir(store) => store.clone(),
                Storage::Bucket(bucket) => {
                    let write = Arc::new(tokio::sync::Mutex::new(bucket.begin(&msg.id)));
                    this.open_session(msg.session, Target::Object { write });
                    return futures::future::Either::Left(async { Ok::<(), AppError>(()) });
                }
            };
            let file = this.open_session(msg.session, Target::Fresh { id: msg.id });
            let path = store.temp_path(&msg.id);
            futures::future::Either::Right(blocking("creating an upload's file", move || {
                let (created, writer) = file::create_new_direct(&path, BATCH_BYTES)?;
                let mut open = file::lock(&file)?;
                open.file = Some(created);
                open.writer = Some(writer);
                Ok(())
            }))
        })
    }
}

impl Handler<WriteChunk> for UploadActor {
    type Result = ResponseFuture<Result<u64, AppError>>;
    fn handle(&mut self, msg: WriteChunk, ctx: &mut Self::Context) -> Self::Result {
        respond(self, ctx, |this| {
            let session = this
                .sessions
                .get(&msg.session)
                .map(|s| (s.file.clone(), s.target.clone()));
            let deps = this.deps.clone();
            async move {
                let (shared, target) = session.ok_or_else(no_session)?;
                let every = match &target {
                    Target::Tus {
                        checkpoint_every, ..
                    } => *checkpoint_every,
                    Target::Fresh { .. } => None,
                    Target::TusObject {
                        id,
                        object,
                        checkpoint,
                    } => {
                        let written =
                            objects::write(&deps, *id, object, msg.chunks, *checkpoint).await;
                        drop(shared);
                        return written;
                    }
                    Target::Object { write } => {
                        // Held across the part's upload: the session's end waits for it.
                        let written = write.lock().await.append(msg.chunks).await;
                        drop(shared);
                        return written;
                    }
                };
                let inner = shared.clone();
                // The checkpoint's fsync on the same blocking hop as the write.
                let (written, due) = blocking("writing an upload", move || {
                    let written = file::write_chunks(&inner, &msg.chunks)?;
                    let due = match every {
                        Some(every) => file::sync_checkpoint(&inner, every)?,
                        None => None,
                    };
                    Ok((written, due))
                })
                .await?;
                // Then the database: the offset never covers bytes not on disk.
                if let (Target::Tus { id, .. }, Some(span)) = (target, due) {
                    tus::checkpoint(&deps, id, &shared, span).await?;
                }
                Ok(written)
            }
        })
    }
}

impl Handler<FinishFile> for UploadActor {
    type Result = ResponseFuture<Result<Upload, AppError>>;
    fn handle(&mut self, msg: FinishFile, ctx: &mut Self::Context) -> Self::Result {
        respond(self, ctx, |this| {
            let session = this.sessions.remove(&msg.session);
            let deps = this.deps.clone();
            async move {
                let (shared, id) = match session {
                    Some(Session {
                        file: shared,
                        target: Target::Fresh { id },
                    }) => (shared, id),
                    Some(Session {
                        file: shared,
                        target: Target::Object { write },
                    }) => {
                        write.lock().await.complete().await?;
                        let stored = insert_row_or_remove(&deps, msg.row).await;
                        drop(shared);
                        return stored;
                    }
                    _ => return Err(no_session()),
                };
                let store = deps.dir()?.clone();
                let temp = store.temp_path(&id);
                blocking("putting an upload in place", move || {
                    let mut open = file::lock(&shared)?;
                    let result =
                        file::finish_writes(&mut open).and_then(|f| store.persist(&f, &temp, &id));
                    if result.is_err() {
                        let _ = file::remove_quietly(&temp);
                    }
                    result
                })
                .await?;
                insert_row_or_remove(&deps, msg.row).await
            }
        })
    }
}

impl Handler<CreateTusUpload> for UploadActor {
    type Result = ResponseFuture<Result<Upload, AppError>>;
    fn handle(&mut self, msg: CreateTusUpload, ctx: &mut Self::Context) -> Self::Result {
        respond(self, ctx, |this| {
            let deps = this.deps.clone();
            async move { tus::create(&deps, msg.0).await }
        })
    }
}

impl Handler<BeginPatch> for UploadActor {
    type Result = ResponseFuture<Result<PatchStart, AppError>>;
    fn handle(&mut self, msg: BeginPatch, ctx: &mut Self::Context) -> Self::Result {
        respond(self, ctx, |this| {
            let (target, object) = match &this.deps.store {
                Storage::Dir(_) => {
                    let target = Target::Tus {
                        id: msg.id,
                        checkpoint_every: msg.checkpoint_every,
                    };
                    (target, None)
                }
                Storage::Bucket(_) => {
                    let object = SharedTusObject::default();
                    let target = Target::TusObject {
                        id: msg.id,
                        object: object.clone(),
                        checkpoint: msg.checkpoint_every.is_some(),
                    };
                    (target, Some(object))
                }
            };
            let file = this.open_session(msg.session, target);
            let deps = this.deps.clone();
            async move {
                let access = msg.access.as_ref();
                tus::begin_patch(&deps, msg.id, access, file, object.as_ref()).await
            }
        })
    }
}

impl Handler<EndSession> for UploadActor {
    type Result = ResponseFuture<Result<SessionEnd, AppError>>;
    fn handle(&mut self, msg: EndSession, ctx: &mut Self::Context) -> Self::Result {
        respond(self, ctx, |this| {
            let session = this.sessions.remove(&msg.session);
            let deps = this.deps.clone();
            async move {
                match session {
                    // Already ended (the session's own end, then its drop's): nothing to do.
                    None => Ok(SessionEnd::default()),
                    Some(Session {
                        file: shared,
                        target: Target::Object { write },
                    }) => {
                        // After the part being sent, if any: nothing is sent after the abort.
                        write.lock().await.abort().await;
                        drop(shared);
                        Ok(SessionEnd::default())
                    }
                    Some(Session {
                        file: shared,
                        target: Target::Fresh { id },
                    }) => {
                        let temp = deps.dir()?.temp_path(&id);
                        blocking("removing an unfinished upload", move || {
                            let mut open = file::lock(&shared)?;
                            open.closed = true;
                            open.file = None;
                            open.writer = None;
                            file::remove_quietly(&temp)
                        })
                        .await?;
                        Ok(SessionEnd::default())
                    }
                    Some(Session {
                        file: shared,
                        target: Target::Tus { id, .. },
                    }) => tus::end_patch(&deps, id, shared, msg.keep).await,
                    Some(Session {
                        file: shared,
                        target: Target::TusObject { id, object, .. },
                    }) => objects::end_patch(&deps, id, shared, object, msg.keep).await,
                }
            }
        })
    }
}

impl Handler<DropSession> for UploadActor {
    type Result = ResponseFuture<Result<(), AppError>>;
    fn handle(&mut self, msg: DropSession, ctx: &mut Self::Context) -> Self::Result {
        let me = ctx.address();
        let request_id = msg.request_id.clone();
        respond(self, ctx, move |_| {
            crate::http::request_id::scope_opt(request_id, drop_session(me, msg))
        })
    }
}

/// Saves what an abandoned PATCH received, then ends its session ([`DropSession`]).
async fn drop_session(me: Addr<UploadActor>, msg: DropSession) -> Result<(), AppError> {
    let DropSession {
        session,
        pending,
        after,
        ..
    } = msg;
    if let Some(step) = after {
        // Its failure is the session's; the end below records what is on disk.
        let _ = step.await;
    }
    if !pending.is_empty() {
        let write = WriteChunk {
            session,
            chunks: pending,
        };
        if let Err(err) = ask(&me, write, STEP_TIMEOUT).await {
            log::warn!("the last bytes of an abandoned PATCH: {}", err.cause());
        }
    }
    let end = EndSession {
        session,
        keep: true,
    };
    match ask(&me, end, FINISH_TIMEOUT).await {
        Ok(_) => Ok(()),
        Err(err) => {
            log::warn!("ending an abandoned PATCH: {}", err.cause());
            Err(err)
        }
    }
}

impl Handler<RemoveUpload> for UploadActor {
    type Result = ResponseFuture<Result<(), AppError>>;
    fn handle(&mut self, msg: RemoveUpload, ctx: &mut Self::Context) -> Self::Result {
        respond(self, ctx, |this| {
            let deps = this.deps.clone();
            async move { tus::remove(&deps, msg.id, msg.tus, false).await.map(drop) }
        })
    }
}

impl Handler<SweepExpired> for UploadActor {
    type Result = ResponseFuture<Result<usize, AppError>>;
    fn handle(&mut self, _msg: SweepExpired, ctx: &mut Self::Context) -> Self::Result {
        respond(self, ctx, |this| {
            let deps = this.deps.clone();
            async move { tus::sweep(&deps).await }
        })
    }
}

impl Handler<Shutdown> for UploadActor {
    type Result = ResponseActFuture<Self, Result<Drained, AppError>>;
    /// Waits until every session has ended and its work is done. Those whose request was
    /// cut end through the [`DropSession`] or [`EndSession`] their guard sent, ahead of this
    /// message in the mailbox; a session's file is let go only after its last write and its
    /// offset are recorded, so once every file is gone a cut PATCH's bytes are on disk and
    /// counted.
    fn handle(&mut self, msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        let held = |act: &Self| act.files.iter().filter(|f| f.strong_count() > 0).count();
        let in_progress = held(self);
        Box::pin(
            wait_until(
                move |act: &Self| held(act) == 0,
                std::time::Instant::now() + msg.within,
            )
            .map(move |_, act, _| {
                Ok(Drained {
                    in_progress,
                    unfinished: held(act),
                })
            }),
        )
    }
}

crate::supervised_async_actor!(UploadActor);

/// The handle to the `UploadActor`: its address, the CPU pool that digests as bytes arrive,
/// the pacing of bulk work, the limits. Cheap to clone.
#[derive(Clone)]
pub struct Uploads {
    addr: Addr<UploadActor>,
    arbiter: OwnArbiter,
    cpu: CpuPool,
    pace: Arc<Pace>,
    limits: Limits,
    db_timeout: Duration,
    locks: UploadLocks,
    /// Upload bodies streaming now (`POST /upload` and PATCH), against `max_active_uploads`.
    active: Arc<AtomicUsize>,
    admissions: Admissions,
    /// Upload body bytes received (`/metrics`).
    received: metrics::Counter,
}

/// A place among the upload bodies allowed to stream at once; given back when dropped.
#[derive(Debug)]
pub struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Uploads {
    /// Starts a supervised `UploadActor` over `store` on an arbiter of its own, its PATCHes
    /// locking through `locks` (whose lock connection, on PostgreSQL, is kept on the same
    /// arbiter and closed with it); what it admits and receives is counted in `metrics`.
    pub fn start(
        store: Storage,
        db: Db,
        cpu: CpuPool,
        pace: Arc<Pace>,
        limits: Limits,
        metrics: &Metrics,
        locks: UploadLocks,
    ) -> Self {
        let arbiter = Arbiter::new();
        let db_timeout = db.timeout();
        let session = locks.clone();
        let _ = arbiter.spawn_fn(move || {
            actix_web::rt::spawn(session.keep_session());
        });
        let addr = {
            let (cpu, locks, tus) = (cpu.clone(), locks.clone(), TusCounts::new(metrics));
            Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
                UploadActor::new(store, db, cpu, limits.tus_expiry, locks).counting(tus)
            })
        };
        Self {
            addr,
            arbiter: OwnArbiter::new(arbiter),
            cpu,
            pace,
            limits,
            db_timeout,
            locks,
            active: Arc::new(AtomicUsize::new(0)),
            admissions: Admissions::new(metrics, "upload"),
            received: metrics.counter(UPLOAD_BYTES, &[]),
        }
    }

    /// A place for one more upload body to stream, taken before any of it is read; 503 when
    /// `TROUPE_MAX_ACTIVE_UPLOADS` bodies stream already.
    pub fn admit(&self) -> Result<Admission, AppError> {
        let max = self.limits.max_active_uploads;
        let taken = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        self.admissions.admission(taken.is_ok());
        match taken {
            Ok(_) => Ok(Admission(self.active.clone())),
            Err(_) => Err(AppError::overloaded(
                "admitting an upload",
                format_args!(
                    "{max} upload bodies are streaming already (TROUPE_MAX_ACTIVE_UPLOADS)"
                ),
            )),
        }
    }

    /// Upload bodies streaming now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Waits, up to `within`, until the uploads' lock connection is open (PostgreSQL; at
    /// once on SQLite); answers whether it is.
    pub async fn wait_for_locks(&self, within: Duration) -> bool {
        self.locks.wait_connected(within).await
    }

    /// Whether a PATCH writes upload `id` right now: one of this process, or, on
    /// PostgreSQL, of another replica (one round trip on the lock connection).
    pub async fn is_held(&self, id: UploadId) -> bool {
        self.locks.is_held(id).await
    }

    /// Asks the PATCH that holds upload `id` (here or on another replica) to stop, and waits
    /// until it has recorded its offset and let go (up to [`HANDOVER_WAIT`]): what `HEAD`
    /// does before it reads the offset.
    pub async fn hand_over(&self, id: UploadId) {
        self.locks.hand_over(id).await;
    }

    /// Shuts the actor down: every session still open ends first (within `within`; a cut
    /// PATCH keeps its bytes), then the actor's arbiter stops, once its file writes are done.
    /// Send it after the HTTP workers have stopped and before the `Db` shuts down.
    pub async fn shut_down(&self, within: Duration) -> Drained {
        let drained = shut_down(&self.addr, within).await;
        self.arbiter.stop().await;
        drained
    }

    /// The actor's address (actor tests, fault injection).
    pub fn addr(&self) -> &Addr<UploadActor> {
        &self.addr
    }

    /// The limits uploads are held to.
    pub fn limits(&self) -> Limits {
        self.limits
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

    /// Creates a tus upload (its file, then its row).
    pub async fn create_tus(&self, row: Upload) -> Result<Upload, AppError> {
        self.ask(CreateTusUpload(row), FINISH_TIMEOUT).await
    }

    /// Removes an upload (`DELETE /uploads/{id}`; with `tus`, tus termination).
    pub async fn remove(&self, id: UploadId, tus: bool) -> Result<(), AppError> {
        self.ask(RemoveUpload { id, tus }, self.db_timeout * 2)
            .await
    }

    /// Sends `msg` to the actor and waits up to `timeout` for its answer; a mailbox that
    /// fails is counted among the actor's refusals.
    async fn ask<M, T>(&self, msg: M, timeout: Duration) -> Result<T, AppError>
    where
        UploadActor: Handler<M>,
        M: Message<Result = Result<T, AppError>> + Send + 'static,
        T: Send + 'static,
    {
        ask_counted(&self.addr, msg, timeout, &self.admissions).await
    }

    /// Removes expired tus uploads now; answers how many went.
    pub async fn sweep(&self) -> Result<usize, AppError> {
        self.ask(SweepExpired, FINISH_TIMEOUT).await
    }
}
