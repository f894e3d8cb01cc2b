//! A tus upload's lifecycle, as the upload actor runs it: locking a PATCH's file,
//! checkpoints, the end of a PATCH, completion, removal and the sweep.
//!
//! | state | on disk | row | reached by |
//! |---|---|---|---|
//! | created | `tus/{id}`, empty | offset 0, `expires_at` = now + expiry | `POST /files/` ([`create`]) |
//! | locked by a PATCH | `tus/{id}` under an exclusive `flock`, cut back to the offset | as before; on PostgreSQL, its advisory lock held (`db::locks`) | [`begin_patch`] (423 while another PATCH holds it) |
//! | checkpointed | bytes up to the offset fsynced | offset moved, expiry pushed | every [`CHECKPOINT_BYTES`] of a long PATCH ([`checkpoint`]), and at its end ([`end_patch`]) |
//! | whole | every byte fsynced | offset = size, not complete | the last PATCH's end |
//! | complete | `{id}`, fsynced, renamed, directory fsynced | complete, `sha256`, no expiry | `finish`, right after the last PATCH's end |
//! | expired and swept | removed | removed | [`sweep`]: unfinished, not whole, expiry passed, not locked |
//! | whole but not complete | `tus/{id}` or already `{id}` | offset = size, not complete | a crash between a PATCH's end and completion; [`sweep`] finishes it |
//!
//! A PATCH from offset 0, or from the offset this process's last PATCH of the upload ended
//! at, hashes its bytes as they are written (`upload::digests`), so completing a whole upload
//! needs no second read of its file; any other case (a restart, another replica) digests
//! the file at completion.
//!
//! The offset in the row only ever covers bytes already fsynced, and the file's lock (and
//! the upload's lease, which every replica on the same PostgreSQL sees) is released only
//! after the offset is recorded, so the next PATCH (here or in another process) starts from
//! a durable offset.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{blocking, insert_row_or_remove, Deps, SharedTusObject, STEP_TIMEOUT};
use crate::actors::cpu::DigestFile;
use crate::auth::{may_use, Access};
use chrono::NaiveDateTime;

use super::objects;
use crate::db::locks::Lease;
use crate::db::uploads::{expires_at, StoredPart, Upload};
use crate::digest::{hex, Algorithm, Hasher};
use crate::error::AppError;
use crate::ids::UploadId;
use crate::time::now;
use crate::upload::file::{self, SharedFile};
use crate::upload::handover::Hold;
pub use crate::upload::handover::HANDOVER_WAIT;
use crate::upload::tus_object::TusObject;

/// How often a long PATCH records its offset (fsync, then the database), so a crash mid-way
/// keeps what was written up to the last checkpoint.
pub const CHECKPOINT_BYTES: u64 = 64 << 20;

/// How long recording the offset of bytes already on disk waits for a busy database.
const ADVANCE_PATIENCE: Duration = Duration::from_secs(30);

/// Expired tus uploads removed per sweep.
const SWEEP_LIMIT: i64 = 100;

/// How a PATCH session ended.
#[derive(Debug, Clone, Default)]
pub struct SessionEnd {
    /// The upload's durable offset now.
    pub offset: u64,
    /// The upload's row, when this session completed it.
    pub completed: Option<Upload>,
    /// The expiry this session last recorded (at its end or a checkpoint); `None` when it
    /// recorded nothing and the row's stands.
    pub expires_at: Option<NaiveDateTime>,
}

/// Creates a tus upload: its empty file, then its row; an empty upload is complete at once.
pub async fn create(deps: &Deps, row: Upload) -> Result<Upload, AppError> {
    if let Some(bucket) = deps.store.bucket() {
        return objects::create(deps, bucket, row).await;
    }
    let id = row.id;
    let path = deps.dir()?.tus_path(&id);
    blocking("creating a tus file", move || {
        file::create_new(&path).map(drop)
    })
    .await?;
    let row = insert_row_or_remove(deps, row).await?;
    deps.tus.created.increment(1);
    if row.size == 0 {
        return finish(deps, id, None).await;
    }
    Ok(row)
}

/// A PATCH's start: the row under the lock, and the signal that asks the PATCH to stop (a
/// newcomer wants the upload); no signal when the upload is complete and nothing is locked.
#[derive(Debug)]
pub struct PatchStart {
    /// The upload's row, read under the lock.
    pub row: Upload,
    /// Notified when another request asks for the upload.
    pub stop: Option<Arc<Notify>>,
}

/// An unfinished tus upload's file, as a try at its lock found it.
pub(super) enum TusLock {
    /// Locked by this caller until the file (none on `s3://` storage) and the lease are
    /// dropped.
    Held(Option<File>, Lease),
    /// Another writer (in this process or another) holds it.
    Busy,
    /// No file: finished and moved into place, or removed.
    Gone,
}

/// Tries to lock upload `id`: its lease (`db::locks`: on PostgreSQL, across replicas), then
/// its tus file, on a blocking thread (an object has no lock of its own: the lease is all).
/// With `hand_over`, a PATCH holding the lease (here or on another replica) is asked to hand
/// it over first.
pub(super) async fn lock(deps: &Deps, id: &UploadId, hand_over: bool) -> Result<TusLock, AppError> {
    let Some(lease) = deps.locks.take(*id, hand_over).await? else {
        return Ok(TusLock::Busy);
    };
    let Some(store) = deps.store.dir() else {
        return Ok(TusLock::Held(None, lease));
    };
    let path = store.tus_path(id);
    blocking("locking a tus file", move || {
        match file::open_locked(&path) {
            Ok(Some(file)) => Ok(TusLock::Held(Some(file), lease)),
            Ok(None) => Ok(TusLock::Busy),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TusLock::Gone),
            Err(e) => Err(e),
        }
    })
    .await
}

/// A locked tus file and its holder's registration, in the order they must go: the file
/// (its lock) first, then the hold (which tells the waiters).
struct Locked {
    file: Option<File>,
    hold: Hold,
}

fn locked() -> AppError {
    AppError::Locked("another request is writing this upload; retry when it is done".into())
}

/// Starts a PATCH on upload `id` in the session whose file is `shared`, for a key that may
/// use it (another key's upload is 404, and its PATCH is left alone): locks the upload and
/// its file (a PATCH holding it, here or on another replica, is asked to hand it over; 423
/// when it does not), reads the row under the lock, and cuts off any bytes past the durable
/// offset. A complete upload is answered as it is, unlocked.
pub async fn begin_patch(
    deps: &Deps,
    id: UploadId,
    access: Option<&Access>,
    shared: SharedFile,
    object: Option<&SharedTusObject>,
) -> Result<PatchStart, AppError> {
    let unlocked = |row| PatchStart { row, stop: None };
    let row = deps.db.upload(id).await?;
    if !may_use(access, &row) {
        return Err(AppError::no_upload());
    }
    if row.complete {
        return Ok(unlocked(row));
    }
    let (file, lease) = match lock(deps, &id, true).await? {
        // Finished (and moved into place) or terminated since the first read.
        TusLock::Gone => return deps.db.upload(id).await.map(unlocked),
        TusLock::Busy => return Err(locked()),
        TusLock::Held(file, lease) => (file, lease),
    };
    // Registered at once, so that a newcomer from now on can ask for the lock.
    let (hold, stop) = deps.locks.hold(id, lease);
    let handle = Locked { file, hold };
    // Read again under the lock: the previous writer may have moved the offset.
    let row = deps.db.upload(id).await?;
    if row.complete {
        return Ok(unlocked(row));
    }
    if row.is_expired(now()) {
        return Err(AppError::Gone("this upload has expired".into()));
    }
    let (offset, size) = (row.upload_offset, row.size);
    // Hashed as it is written when the digest of the bytes before it is known.
    let digest = match offset {
        0 => Some(Box::new(Hasher::new(Algorithm::Sha256))),
        _ => deps.digests.take(&id, offset),
    };
    if let (Some(bucket), Some(object)) = (deps.store.bucket(), object) {
        // The hold goes with the session's (empty) file, as a file's does.
        let mut opened = TusObject::open(bucket, &row)
            .await
            .inspect_err(|_| deps.digests.forget(&id))?;
        opened.digest = digest;
        *object.lock().await = Some(opened);
        file::lock(&shared)
            .map_err(|e| AppError::storage("an upload session", &e))?
            .hold = Some(handle.hold);
        return Ok(PatchStart {
            row,
            stop: Some(stop),
        });
    }
    blocking("opening a tus file", move || {
        let mut handle = handle;
        let mut file = handle
            .file
            .take()
            .ok_or_else(|| std::io::Error::other("a tus upload without its file"))?;
        file::rewind(&mut file, offset)?;
        let mut open = file::lock(&shared)?;
        open.base = offset;
        open.durable = offset;
        open.size = size;
        open.file = Some(file);
        open.hold = Some(handle.hold);
        open.digest = digest;
        Ok(())
    })
    .await?;
    Ok(PatchStart {
        row,
        stop: Some(stop),
    })
}

/// Moves a tus upload's recorded offset from `from` to `to` and extends its expiry; an
/// offset that is no longer at `from` is an error (the file's lock should prevent it).
/// Answers the expiry recorded. Bytes already fsynced are worth waiting for: a database
/// too busy to take the update right now (many PATCHes ending at once: a load balancer
/// dropping its connections) is asked again, for up to [`ADVANCE_PATIENCE`].
pub(super) async fn advance(
    deps: &Deps,
    id: UploadId,
    (from, to): (u64, u64),
    parts: Vec<StoredPart>,
) -> Result<NaiveDateTime, AppError> {
    let until = expires_at(now(), deps.tus_expiry);
    let started = std::time::Instant::now();
    let mut backoff = Duration::from_millis(10);
    let advanced = loop {
        match deps
            .db
            .advance_upload(id, (from, to), until, parts.clone())
            .await
        {
            Err(AppError::Overloaded(_)) if started.elapsed() < ADVANCE_PATIENCE => {
                actix_web::rt::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            other => break other?,
        }
    };
    if !advanced {
        return Err(AppError::internal(
            "recording a tus offset",
            format_args!("upload {id} was not at {from} while its file was locked"),
        ));
    }
    Ok(until)
}

/// A checkpoint a PATCH's write found due: the bytes up to `to` are fsynced; record them.
pub async fn checkpoint(
    deps: &Deps,
    id: UploadId,
    shared: &SharedFile,
    (from, to): (u64, u64),
) -> Result<(), AppError> {
    let until = advance(deps, id, (from, to), Vec::new()).await?;
    let mut open = file::lock(shared).map_err(|e| AppError::storage("an upload session", &e))?;
    if to > open.durable {
        open.durable = to;
        open.durable_expiry = Some(until);
    }
    Ok(())
}

/// Ends a PATCH: with `keep`, its bytes are fsynced and the offset recorded (and the upload
/// finished when whole); without, the file is cut back to the last recorded offset. The
/// file's lock goes with `shared`, released only once the offset is recorded.
pub async fn end_patch(
    deps: &Deps,
    id: UploadId,
    shared: SharedFile,
    keep: bool,
) -> Result<SessionEnd, AppError> {
    let inner = shared.clone();
    // From the last recorded offset: the session's start, or its last checkpoint.
    let (durable, end, size, digest, checkpointed) = blocking("ending a PATCH", move || {
        let mut open = file::lock(&inner)?;
        open.closed = true;
        let (durable, end, size) = (open.durable, open.base + open.written, open.size);
        let checkpointed = open.durable_expiry;
        // It covers `end` bytes: worth keeping only if the file keeps all of them.
        let digest = open.digest.take();
        let Some(handle) = open.file.as_mut() else {
            return Ok((durable, durable, size, None, checkpointed));
        };
        if keep && end > durable {
            handle.sync_data()?;
            Ok((durable, end, size, digest, checkpointed))
        } else {
            file::rewind(handle, durable)?;
            let digest = digest.filter(|_| end == durable);
            Ok((durable, durable, size, digest, checkpointed))
        }
    })
    .await?;
    if end == durable {
        if let Some(digest) = digest {
            deps.digests.put(id, end, digest);
        }
        return Ok(SessionEnd {
            offset: durable,
            completed: None,
            expires_at: checkpointed,
        });
    }
    let until = match advance(deps, id, (durable, end), Vec::new()).await {
        Ok(until) => until,
        Err(err) => {
            // When the client went away mid-batch, that batch's checkpoint may have
            // recorded part of this range meanwhile: go on from where it got to.
            let recorded = deps.db.upload(id).await?.upload_offset;
            if !(durable < recorded && recorded < end) {
                return Err(err);
            }
            advance(deps, id, (recorded, end), Vec::new()).await?
        }
    };
    let completed = if end == size {
        Some(finish(deps, id, digest.map(|d| d.finish())).await?)
    } else {
        if let Some(digest) = digest {
            deps.digests.put(id, end, digest);
        }
        None
    };
    // The file (and its lock) is released only now, after the offset is recorded.
    drop(shared);
    Ok(SessionEnd {
        offset: end,
        completed,
        expires_at: Some(until),
    })
}

/// A whole tus upload: digest it (unless its PATCHes hashed it as it was written: `digest`),
/// move it into place, mark it complete. After a crash the file may already be in place
/// (moved, not yet marked): it is digested there.
pub(super) async fn finish(
    deps: &Deps,
    id: UploadId,
    digest: Option<Vec<u8>>,
) -> Result<Upload, AppError> {
    deps.digests.forget(&id);
    if let Some(bucket) = deps.store.bucket() {
        return objects::finish(deps, bucket, id, digest).await;
    }
    let tus_path = deps.dir()?.tus_path(&id);
    let probe = tus_path.clone();
    let moved = !blocking("finding a tus file", move || probe.try_exists()).await?;
    let path = if moved {
        deps.dir()?.file_path(&id)
    } else {
        tus_path
    };
    let digest = match digest {
        Some(digest) => digest,
        None => {
            let job = DigestFile {
                algorithm: Algorithm::Sha256,
                path: path.clone(),
            };
            deps.cpu.run_waiting(job, STEP_TIMEOUT).await?
        }
    };
    if !moved {
        let store = deps.dir()?.clone();
        blocking("moving a finished tus upload into place", move || {
            let file = File::open(&path)?;
            store.persist(&file, &path, &id)
        })
        .await?;
    }
    let done = deps.db.complete_upload(id, hex(&digest)).await?;
    deps.tus.completed.increment(1);
    Ok(done)
}

/// Removes one upload: its row, then its files. `tus` allows an unfinished one (tus
/// termination: 423 while a PATCH writes it); `only_expired` removes only an unfinished one
/// whose expiry has passed, and skips one that is locked. Answers whether it was removed.
pub async fn remove(
    deps: &Deps,
    id: UploadId,
    tus: bool,
    only_expired: bool,
) -> Result<bool, AppError> {
    let row = deps.db.upload(id).await?;
    if !row.complete && !tus {
        return Err(AppError::no_upload());
    }
    let held = if row.complete {
        None
    } else {
        match lock(deps, &id, !only_expired).await? {
            TusLock::Busy if only_expired => return Ok(false),
            TusLock::Busy => {
                return Err(AppError::Locked(
                    "a request is writing this upload; retry when it is done".into(),
                ))
            }
            TusLock::Held(handle, lease) => Some((handle, lease)),
            TusLock::Gone => None,
        }
    };
    if only_expired {
        // Re-read under the lock: a PATCH may have just extended it.
        let row = deps.db.upload(id).await?;
        if row.complete || row.is_whole() || !row.is_expired(now()) {
            return Ok(false);
        }
    }
    if let Some(bucket) = deps.store.bucket() {
        objects::remove(deps, bucket, id, row.complete).await?;
        drop(held);
        return Ok(true);
    }
    deps.db.delete_upload(id).await?;
    deps.digests.forget(&id);
    let (file_path, tus_path) = (deps.dir()?.file_path(&id), deps.dir()?.tus_path(&id));
    blocking("removing an upload's files", move || {
        file::remove_quietly(&file_path)?;
        file::remove_quietly(&tus_path)?;
        drop(held);
        Ok(())
    })
    .await?;
    Ok(true)
}

/// Finishes uploads left whole but unfinished by a crash (their clients see the full offset
/// and will not PATCH again); one that a PATCH holds is left to that PATCH.
async fn finish_whole(deps: &Deps) -> Result<(), AppError> {
    for id in deps.db.whole_uploads(SWEEP_LIMIT).await? {
        let held = match lock(deps, &id, false).await? {
            TusLock::Busy => continue,
            TusLock::Held(handle, lease) => Some((handle, lease)),
            TusLock::Gone => None,
        };
        let row = deps.db.upload(id).await?;
        if !row.complete && row.is_whole() {
            match finish(deps, id, None).await {
                Ok(_) => log::warn!("finished upload {id}, left whole but unfinished"),
                Err(err) => log::warn!("could not finish upload {id}: {}", err.cause()),
            }
        }
        drop(held);
    }
    Ok(())
}

/// Finishes whole uploads, then removes expired ones; answers how many were removed.
pub async fn sweep(deps: &Deps) -> Result<usize, AppError> {
    if let Err(err) = finish_whole(deps).await {
        log::warn!("finishing whole uploads failed: {}", err.cause());
    }
    let mut removed = 0;
    for id in deps.db.expired_uploads(now(), SWEEP_LIMIT).await? {
        match remove(deps, id, true, true).await {
            Ok(true) => removed += 1,
            Ok(false) | Err(AppError::NotFound(_)) => {}
            Err(err) => log::warn!("could not remove expired upload {id}: {}", err.cause()),
        }
    }
    if removed > 0 {
        deps.tus.expired.increment(removed as u64);
        log::info!("removed {removed} expired tus upload(s)");
    }
    Ok(removed)
}
