//! `UploadActor`: owns the files being written, one session per request.
//!
//! A handler streams the request body and hands it over in owned batches ([`WriteChunk`]),
//! awaiting each, so a slow disk slows the client rather than growing the server's memory.
//! Every file operation runs on a blocking thread, never on an async worker. A session ends
//! with exactly one [`FinishFile`] or [`EndSession`]; a handler that is dropped mid-way
//! (client gone) ends it from its [`SessionGuard`], so nothing half-written is ever kept.
//!
//! tus uploads keep their offset in the database and their bytes in `tus/{id}`: a PATCH holds
//! an exclusive lock on that file (visible to every process sharing the directory), and the
//! database's offset only moves after the bytes below it are fsynced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use uuid::Uuid;

use super::cpu::{CpuPool, DigestFile, HashChunk};
use super::db::{
    AdvanceUpload, CompleteUpload, CreateUpload, DbActor, DeleteUpload, GetUpload,
    ListExpiredUploads, ListWholeUploads,
};
use super::supervise::{ask, respond};
use crate::cpu::{hex, Algorithm, Hasher};
use crate::db::uploads::{now, Upload};
use crate::error::AppError;
use crate::upload::pace::Pace;
use crate::upload::{self, OpenFile, SharedFile, Store};

/// Bytes per write-and-hash step: large enough that per-message costs vanish, small enough
/// that an upload holds at most two batches in memory.
pub const BATCH_BYTES: usize = 1 << 20;

/// The longest one step (a batch's write, or a wait for a CPU place) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a new upload's first digest step may wait for a CPU place: past it the CPU pool
/// is saturated and the upload is refused (503 + `Retry-After`); later steps of an upload
/// already under way wait up to [`STEP_TIMEOUT`].
const ADMISSION_WAIT: Duration = Duration::from_secs(2);

/// Expired tus uploads removed per sweep.
const SWEEP_LIMIT: i64 = 100;

/// What the actor needs besides its sessions; cloned into each handler's future.
#[derive(Clone)]
struct Deps {
    store: Store,
    db: Addr<DbActor>,
    db_timeout: Duration,
    cpu: CpuPool,
    tus_expiry: Duration,
}

/// Owns the upload sessions; restarted by its `Supervisor` after a panic (sessions then end,
/// and their files' locks are released with them).
pub struct UploadActor {
    deps: Deps,
    sessions: HashMap<Uuid, Session>,
}

struct Session {
    file: SharedFile,
    target: Target,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    /// A `POST /upload` written to a temp file.
    Fresh { id: Uuid },
    /// A tus PATCH appending to `tus/{id}`; with `checkpoint_every`, the offset is recorded
    /// each time that many bytes past the last recorded one are written (and fsynced).
    Tus {
        id: Uuid,
        checkpoint_every: Option<u64>,
    },
}

impl UploadActor {
    /// An actor over `store`, recording metadata through `db` and digesting on `cpu`.
    pub fn new(
        store: Store,
        db: Addr<DbActor>,
        db_timeout: Duration,
        cpu: CpuPool,
        tus_expiry: Duration,
    ) -> Self {
        Self {
            deps: Deps {
                store,
                db,
                db_timeout,
                cpu,
                tus_expiry,
            },
            sessions: HashMap::new(),
        }
    }

    /// Sweeps expired (and finishes whole) uploads in the background; failures are logged.
    fn spawn_sweep(&self, ctx: &mut Context<Self>) {
        let deps = self.deps.clone();
        ctx.spawn(
            async move {
                if let Err(err) = sweep_expired(&deps).await {
                    log::warn!("sweeping expired uploads failed: {err:?}");
                }
            }
            .into_actor(self),
        );
    }

    fn open_session(&mut self, key: Uuid, target: Target) -> SharedFile {
        let file: SharedFile = Arc::new(Mutex::new(OpenFile::default()));
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

/// Runs blocking file work on a blocking thread; I/O errors are logged, never shown.
/// Writes an upload's row; when that fails, removes the file already on disk at `path`, so
/// that no file is left without its row.
async fn insert_row_or_remove(
    deps: &Deps,
    row: Upload,
    path: std::path::PathBuf,
) -> Result<Upload, AppError> {
    let inserted = ask(&deps.db, CreateUpload(row), deps.db_timeout).await;
    if inserted.is_err() {
        let _ = blocking(move || upload::remove_quietly(&path)).await;
    }
    inserted
}

async fn blocking<T, F>(work: F) -> Result<T, AppError>
where
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let work = move || {
        upload::lower_thread_priority();
        work()
    };
    match actix_web::rt::task::spawn_blocking(work).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(err)) => Err(io_error(err)),
        Err(join) => Err(AppError::Internal(format!("file task failed: {join}"))),
    }
}

/// An upload's file operation failed: a full disk (or quota) is 507, anything else a 500;
/// either way the cause is logged, never shown.
pub fn io_error(err: std::io::Error) -> AppError {
    log::error!("upload file operation failed: {err}");
    if matches!(
        err.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) {
        return AppError::InsufficientStorage(format!("upload storage is full: {err}"));
    }
    AppError::Internal(format!("upload file operation failed: {err}"))
}

/// Starts a `POST /upload` session: an empty temp file for upload `id`.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct CreateFile {
    /// The session's key, chosen by the caller.
    pub session: Uuid,
    /// The upload's id (the file's eventual name).
    pub id: Uuid,
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

/// Starts a tus PATCH session: locks the upload's file (423 when another request holds it),
/// reads the row under the lock, and cuts off any bytes past the durable offset.
#[derive(Debug, Message)]
#[rtype(result = "Result<Upload, AppError>")]
pub struct BeginPatch {
    /// The session's key, chosen by the caller.
    pub session: Uuid,
    /// The upload.
    pub id: Uuid,
    /// Record the offset (fsync, then the database) every this many bytes while the PATCH
    /// runs, so a crash mid-way keeps what was written up to the last checkpoint. `None`
    /// when the PATCH's bytes must stand or fall together (a checksum covers them all).
    pub checkpoint_every: Option<u64>,
}

/// How often a long PATCH records its offset: [`BeginPatch::checkpoint_every`].
pub const CHECKPOINT_BYTES: u64 = 64 << 20;

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

/// How a session ended.
#[derive(Debug, Clone, Default)]
pub struct SessionEnd {
    /// The upload's durable offset now (tus).
    pub offset: u64,
    /// The upload's row, when this session completed it.
    pub completed: Option<Upload>,
}

/// Deletes an upload: its row, then its file. An unfinished tus upload is refused (423)
/// while a PATCH writes it; `tus: false` (`DELETE /uploads/{id}`) sees complete uploads only.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct RemoveUpload {
    /// The upload.
    pub id: Uuid,
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
            let file = this.open_session(msg.session, Target::Fresh { id: msg.id });
            let path = this.deps.store.temp_path(&msg.id);
            async move {
                blocking(move || {
                    let (created, writer) = upload::create_new_direct(&path, BATCH_BYTES)?;
                    let mut open = upload::lock(&file)?;
                    open.file = Some(created);
                    open.writer = Some(writer);
                    Ok(())
                })
                .await
            }
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
                .map(|s| (s.file.clone(), s.target));
            let deps = this.deps.clone();
            async move {
                let (file, target) =
                    session.ok_or_else(|| AppError::Internal("no such upload session".into()))?;
                let every = match target {
                    Target::Tus {
                        checkpoint_every, ..
                    } => checkpoint_every,
                    Target::Fresh { .. } => None,
                };
                let shared = file.clone();
                // The checkpoint's fsync on the same blocking hop as the write.
                let (written, due) = blocking(move || {
                    let written = upload::write_chunks(&shared, &msg.chunks)?;
                    let due = match every {
                        Some(every) => upload::sync_checkpoint(&shared, every)?,
                        None => None,
                    };
                    Ok((written, due))
                })
                .await?;
                // Then the database: the offset never covers bytes not on disk.
                if let (Target::Tus { id, .. }, Some((from, to))) = (target, due) {
                    advance(&deps, id, from, to).await?;
                    let mut open = upload::lock(&file).map_err(io_error)?;
                    open.durable = open.durable.max(to);
                }
                Ok(written)
            }
        })
    }
}

/// Moves a tus upload's recorded offset from `from` to `to` and extends its expiry; an
/// offset that is no longer at `from` is an error (the file's lock should prevent it).
async fn advance(deps: &Deps, id: Uuid, from: u64, to: u64) -> Result<(), AppError> {
    let expires_at = now() + chrono::Duration::from_std(deps.tus_expiry).unwrap_or_default();
    let advance = AdvanceUpload {
        id: id.to_string(),
        from: from as i64,
        to: to as i64,
        expires_at,
    };
    if !ask(&deps.db, advance, deps.db_timeout).await? {
        return Err(AppError::Internal(
            "a tus offset moved while its file was locked".into(),
        ));
    }
    Ok(())
}

impl Handler<FinishFile> for UploadActor {
    type Result = ResponseFuture<Result<Upload, AppError>>;
    fn handle(&mut self, msg: FinishFile, ctx: &mut Self::Context) -> Self::Result {
        respond(self, ctx, |this| {
            let session = this.sessions.remove(&msg.session);
            let deps = this.deps.clone();
            async move {
                let Some(Session {
                    file,
                    target: Target::Fresh { id },
                }) = session
                else {
                    return Err(AppError::Internal("no such upload session".into()));
                };
                let (store, temp) = (deps.store.clone(), deps.store.temp_path(&id));
                let persisted = blocking(move || {
                    let mut open = upload::lock(&file)?;
                    let result = upload::finish_writes(&mut open)
                        .and_then(|f| store.persist(&f, &temp, &id));
                    if result.is_err() {
                        let _ = upload::remove_quietly(&temp);
                    }
                    result
                })
                .await;
                persisted?;
                insert_row_or_remove(&deps, msg.row, deps.store.file_path(&id)).await
            }
        })
    }
}

impl Handler<CreateTusUpload> for UploadActor {
    type Result = ResponseFuture<Result<Upload, AppError>>;
    fn handle(&mut self, msg: CreateTusUpload, ctx: &mut Self::Context) -> Self::Result {
        respond(self, ctx, |this| {
            let deps = this.deps.clone();
            async move {
                let id = Uuid::parse_str(&msg.0.id)
                    .map_err(|_| AppError::Internal("tus upload id is not a UUID".into()))?;
                let path = deps.store.tus_path(&id);
                let created = path.clone();
                blocking(move || upload::create_new(&created).map(drop)).await?;
                let row = insert_row_or_remove(&deps, msg.0, path).await?;
                // An empty upload is whole as soon as it exists.
                if row.size == 0 {
                    return finish_tus(&deps, id).await;
                }
                Ok(row)
            }
        })
    }
}

impl Handler<BeginPatch> for UploadActor {
    type Result = ResponseFuture<Result<Upload, AppError>>;
    fn handle(&mut self, msg: BeginPatch, ctx: &mut Self::Context) -> Self::Result {
        respond(self, ctx, |this| {
            let target = Target::Tus {
                id: msg.id,
                checkpoint_every: msg.checkpoint_every,
            };
            let file = this.open_session(msg.session, target);
            let deps = this.deps.clone();
            async move { begin_patch(&deps, msg.id, file).await }
        })
    }
}

/// An unfinished tus upload's file, as a try at its lock found it.
enum TusLock {
    /// Locked by this caller until the file is dropped.
    Held(std::fs::File),
    /// Another writer (in this process or another) holds it.
    Busy,
    /// No file: finished and moved into place, or removed.
    Gone,
}

/// Tries to lock the tus file of upload `id`, on a blocking thread.
async fn lock_tus(deps: &Deps, id: &Uuid) -> Result<TusLock, AppError> {
    let path = deps.store.tus_path(id);
    blocking(move || match upload::open_locked(&path) {
        Ok(Some(file)) => Ok(TusLock::Held(file)),
        Ok(None) => Ok(TusLock::Busy),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TusLock::Gone),
        Err(e) => Err(e),
    })
    .await
}

async fn begin_patch(deps: &Deps, id: Uuid, file: SharedFile) -> Result<Upload, AppError> {
    let get = || ask(&deps.db, GetUpload(id.to_string()), deps.db_timeout);
    if get().await?.complete {
        return get().await;
    }
    let handle = match lock_tus(deps, &id).await? {
        // Finished (and moved into place) or terminated since the first read.
        TusLock::Gone => return get().await,
        TusLock::Busy => {
            return Err(AppError::Locked(
                "another request is writing this upload; retry when it is done".into(),
            ))
        }
        TusLock::Held(handle) => handle,
    };
    // Read again under the lock: the previous writer may have moved the offset.
    let row = get().await?;
    if row.complete {
        return Ok(row);
    }
    if row.expires_at.is_some_and(|at| at < now()) {
        return Err(AppError::Gone("this upload has expired".into()));
    }
    let offset = u64::try_from(row.upload_offset).unwrap_or(0);
    let size = u64::try_from(row.size).unwrap_or(0);
    blocking(move || {
        let mut handle = handle;
        upload::rewind(&mut handle, offset)?;
        let mut open = upload::lock(&file)?;
        open.base = offset;
        open.durable = offset;
        open.size = size;
        open.file = Some(handle);
        Ok(())
    })
    .await?;
    Ok(row)
}

impl Handler<EndSession> for UploadActor {
    type Result = ResponseFuture<Result<SessionEnd, AppError>>;
    fn handle(&mut self, msg: EndSession, ctx: &mut Self::Context) -> Self::Result {
        respond(self, ctx, |this| {
            let session = this.sessions.remove(&msg.session);
            let deps = this.deps.clone();
            async move {
                match session {
                    // Already ended (the handler's own end, then its guard's): nothing to do.
                    None => Ok(SessionEnd::default()),
                    Some(Session {
                        file,
                        target: Target::Fresh { id },
                    }) => {
                        let temp = deps.store.temp_path(&id);
                        blocking(move || {
                            let mut open = upload::lock(&file)?;
                            open.closed = true;
                            open.file = None;
                            open.writer = None;
                            upload::remove_quietly(&temp)
                        })
                        .await?;
                        Ok(SessionEnd::default())
                    }
                    Some(Session {
                        file,
                        target: Target::Tus { id, .. },
                    }) => end_patch(&deps, id, file, msg.keep).await,
                }
            }
        })
    }
}

async fn end_patch(
    deps: &Deps,
    id: Uuid,
    file: SharedFile,
    keep: bool,
) -> Result<SessionEnd, AppError> {
    let shared = file.clone();
    // From the last recorded offset: the session's start, or its last checkpoint.
    let (durable, end, size) = blocking(move || {
        let mut open = upload::lock(&shared)?;
        open.closed = true;
        let (durable, end, size) = (open.durable, open.base + open.written, open.size);
        let Some(handle) = open.file.as_mut() else {
            return Ok((durable, durable, size));
        };
        if keep && end > durable {
            handle.sync_data()?;
            Ok((durable, end, size))
        } else {
            upload::rewind(handle, durable)?;
            Ok((durable, durable, size))
        }
    })
    .await?;
    if end == durable {
        return Ok(SessionEnd {
            offset: durable,
            completed: None,
        });
    }
    if let Err(err) = advance(deps, id, durable, end).await {
        // When the client went away mid-batch, that batch's checkpoint may have recorded
        // part of this range meanwhile: go on from where it got to.
        let row = ask(&deps.db, GetUpload(id.to_string()), deps.db_timeout).await?;
        let recorded = u64::try_from(row.upload_offset).unwrap_or(0);
        if !(durable < recorded && recorded < end) {
            return Err(err);
        }
        advance(deps, id, recorded, end).await?;
    }
    let completed = if end == size {
        Some(finish_tus(deps, id).await?)
    } else {
        None
    };
    // The file (and its lock) is released only now, after the offset is recorded.
    drop(file);
    Ok(SessionEnd {
        offset: end,
        completed,
    })
}

/// A whole tus upload: digest it, move it into place, mark it complete. After a crash the
/// file may already be in place (moved, not yet marked): it is digested there.
async fn finish_tus(deps: &Deps, id: Uuid) -> Result<Upload, AppError> {
    let tus_path = deps.store.tus_path(&id);
    let probe = tus_path.clone();
    let moved = !blocking(move || probe.try_exists()).await?;
    let path = if moved {
        deps.store.file_path(&id)
    } else {
        tus_path
    };
    let digest = deps
        .cpu
        .run_waiting(
            DigestFile {
                algorithm: Algorithm::Sha256,
                path: path.clone(),
            },
            STEP_TIMEOUT,
        )
        .await?;
    if !moved {
        let store = deps.store.clone();
        blocking(move || {
            let file = std::fs::File::open(&path)?;
            store.persist(&file, &path, &id)
        })
        .await?;
    }
    let complete = CompleteUpload {
        id: id.to_string(),
        sha256: hex(&digest),
    };
    ask(&deps.db, complete, deps.db_timeout).await
}

impl Handler<RemoveUpload> for UploadActor {
    type Result = ResponseFuture<Result<(), AppError>>;
    fn handle(&mut self, msg: RemoveUpload, ctx: &mut Self::Context) -> Self::Result {
        respond(self, ctx, |this| {
            let deps = this.deps.clone();
            async move { remove_upload(&deps, msg.id, msg.tus, false).await.map(drop) }
        })
    }
}

/// Removes one upload; with `only_expired`, only an unfinished one whose expiry has passed.
/// Answers whether it was removed.
async fn remove_upload(
    deps: &Deps,
    id: Uuid,
    tus: bool,
    only_expired: bool,
) -> Result<bool, AppError> {
    let row = ask(&deps.db, GetUpload(id.to_string()), deps.db_timeout).await?;
    if !row.complete && !tus {
        return Err(AppError::NotFound("no upload with this id".into()));
    }
    let tus_path = deps.store.tus_path(&id);
    let lock = if row.complete {
        None
    } else {
        match lock_tus(deps, &id).await? {
            TusLock::Busy if only_expired => return Ok(false),
            TusLock::Busy => {
                return Err(AppError::Locked(
                    "a request is writing this upload; retry when it is done".into(),
                ))
            }
            TusLock::Held(handle) => Some(handle),
            TusLock::Gone => None,
        }
    };
    if only_expired {
        // Re-read under the lock: a PATCH may have just extended it.
        let row = ask(&deps.db, GetUpload(id.to_string()), deps.db_timeout).await?;
        let whole = row.upload_offset == row.size;
        if row.complete || whole || row.expires_at.is_none_or(|at| at >= now()) {
            return Ok(false);
        }
    }
    ask(&deps.db, DeleteUpload(id.to_string()), deps.db_timeout).await?;
    let file_path = deps.store.file_path(&id);
    blocking(move || {
        upload::remove_quietly(&file_path)?;
        upload::remove_quietly(&tus_path)?;
        drop(lock);
        Ok(())
    })
    .await?;
    Ok(true)
}

/// Finishes uploads left whole but unfinished by a crash (their clients see the full offset
/// and will not PATCH again); one that a PATCH holds is left to that PATCH.
async fn finish_whole(deps: &Deps) -> Result<(), AppError> {
    let ids = ask(
        &deps.db,
        ListWholeUploads { limit: SWEEP_LIMIT },
        deps.db_timeout,
    )
    .await?;
    for id in ids {
        let Ok(uuid) = Uuid::parse_str(&id) else {
            continue;
        };
        let lock = match lock_tus(deps, &uuid).await? {
            TusLock::Busy => continue,
            TusLock::Held(handle) => Some(handle),
            TusLock::Gone => None,
        };
        let row = ask(&deps.db, GetUpload(id.clone()), deps.db_timeout).await?;
        if !row.complete && row.upload_offset == row.size {
            match finish_tus(deps, uuid).await {
                Ok(_) => log::warn!("finished upload {id}, left whole but unfinished"),
                Err(err) => log::warn!("could not finish upload {id}: {err:?}"),
            }
        }
        drop(lock);
    }
    Ok(())
}

async fn sweep_expired(deps: &Deps) -> Result<usize, AppError> {
    if let Err(err) = finish_whole(deps).await {
        log::warn!("finishing whole uploads failed: {err:?}");
    }
    let expired = ListExpiredUploads {
        before: now(),
        limit: SWEEP_LIMIT,
    };
    let ids = ask(&deps.db, expired, deps.db_timeout).await?;
    let mut removed = 0;
    for id in ids {
        let Ok(uuid) = Uuid::parse_str(&id) else {
            continue;
        };
        match remove_upload(deps, uuid, true, true).await {
            Ok(true) => removed += 1,
            Ok(false) | Err(AppError::NotFound(_)) => {}
            Err(err) => log::warn!("could not remove expired upload {id}: {err:?}"),
        }
    }
    if removed > 0 {
        log::info!("removed {removed} expired tus upload(s)");
    }
    Ok(removed)
}

impl Handler<SweepExpired> for UploadActor {
    type Result = ResponseFuture<Result<usize, AppError>>;
    fn handle(&mut self, _msg: SweepExpired, ctx: &mut Self::Context) -> Self::Result {
        respond(self, ctx, |this| {
            let deps = this.deps.clone();
            async move { sweep_expired(&deps).await }
        })
    }
}

crate::supervised_async_actor!(UploadActor);

/// Ends its session when dropped, unless disarmed: a handler that fails, or is dropped
/// because its client went away, leaves nothing half-written behind.
pub struct SessionGuard {
    addr: Addr<UploadActor>,
    session: Uuid,
    keep: bool,
    armed: bool,
}

impl SessionGuard {
    /// Guards `session`; on drop a tus session keeps what it wrote when `keep` is true.
    pub fn new(addr: Addr<UploadActor>, session: Uuid, keep: bool) -> Self {
        Self {
            addr,
            session,
            keep,
            armed: true,
        }
    }

    /// Whether a tus session keeps what it wrote when the guard ends it.
    pub fn keep(&mut self, keep: bool) {
        self.keep = keep;
    }

    /// The session this guard ends.
    pub fn session(&self) -> Uuid {
        self.session
    }

    /// The session has ended through its own message.
    pub fn disarm(mut self) {
        self.armed = false;
    }

    /// Ends the session now (keeping what it wrote as [`Self::keep`] says) and waits for it:
    /// once this returns, a tus upload's lock is released. If it fails or is dropped
    /// half-way, the guard still ends the session when dropped (a second end is a no-op).
    pub async fn end(&mut self, timeout: Duration) -> Result<SessionEnd, AppError> {
        let end = EndSession {
            session: self.session,
            keep: self.keep,
        };
        let ended = ask(&self.addr, end, timeout).await;
        if ended.is_ok() {
            self.armed = false;
        }
        ended
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.armed {
            // `do_send`: a message whose sender is gone would be skipped by actix, and this
            // one must run even though nobody waits for its answer.
            self.addr.do_send(EndSession {
                session: self.session,
                keep: self.keep,
            });
        }
    }
}

/// Streams `body` into `session` in batches of [`BATCH_BYTES`]: each batch is written by the
/// actor and, when `hasher` is given, hashed on a CPU thread at the same time, while the next
/// batch is read from the network. More than `limit` bytes is 413 as soon as it is crossed.
/// Answers the bytes streamed and the digest state.
pub async fn stream_into<S, E>(
    addr: &Addr<UploadActor>,
    cpu: &CpuPool,
    pace: &Pace,
    session: Uuid,
    mut body: S,
    limit: u64,
    mut hasher: Option<Box<Hasher>>,
) -> Result<(u64, Option<Box<Hasher>>), AppError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut total: u64 = 0;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batch_len = 0usize;
    let mut in_flight: Option<actix_web::rt::task::JoinHandle<StepResult>> = None;
    let mut interrupted = None;
    let mut cpu_wait = ADMISSION_WAIT;
    loop {
        let done = match body.next().await {
            Some(Ok(chunk)) => {
                total += chunk.len() as u64;
                if total > limit {
                    return Err(AppError::PayloadTooLarge(format!(
                        "the upload is over its limit of {limit} bytes"
                    )));
                }
                batch_len += chunk.len();
                if !chunk.is_empty() {
                    batch.push(chunk);
                }
                false
            }
            // What arrived before the interruption is still written: a tus upload keeps it.
            Some(Err(err)) => {
                interrupted = Some(AppError::BadRequest(format!(
                    "the upload was interrupted: {err}"
                )));
                true
            }
            None => true,
        };
        if batch_len >= BATCH_BYTES || (done && batch_len > 0) {
            if let Some(previous) = in_flight.take() {
                hasher = joined(previous).await?;
            }
            let chunks = std::mem::take(&mut batch);
            let pause = pace.pause_after(batch_len);
            batch_len = 0;
            // Spawned, so the write and the hash go on while the next batch is read.
            in_flight = Some(actix_web::rt::spawn(step(
                addr.clone(),
                cpu.clone(),
                session,
                chunks,
                hasher.take(),
                cpu_wait,
            )));
            cpu_wait = STEP_TIMEOUT;
            // While the write and hash go on: other requests are waiting for the CPU.
            if let Some(pause) = pause.filter(|_| !done) {
                actix_web::rt::time::sleep(pause).await;
            }
        }
        if done {
            break;
        }
    }
    if let Some(previous) = in_flight.take() {
        hasher = joined(previous).await?;
    }
    match interrupted {
        Some(err) => Err(err),
        None => Ok((total, hasher)),
    }
}

type StepResult = Result<Option<Box<Hasher>>, AppError>;

async fn joined(handle: actix_web::rt::task::JoinHandle<StepResult>) -> StepResult {
    handle
        .await
        .map_err(|e| AppError::Internal(format!("upload step failed: {e}")))?
}

async fn step(
    addr: Addr<UploadActor>,
    cpu: CpuPool,
    session: Uuid,
    chunks: Vec<Bytes>,
    hasher: Option<Box<Hasher>>,
    cpu_wait: Duration,
) -> StepResult {
    let write = ask(
        &addr,
        WriteChunk {
            session,
            chunks: chunks.clone(),
        },
        STEP_TIMEOUT,
    );
    let hash = async {
        match hasher {
            Some(hasher) => cpu
                .run_waiting(HashChunk { hasher, chunks }, cpu_wait)
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let (written, hashed) = futures::join!(write, hash);
    written?;
    hashed
}
