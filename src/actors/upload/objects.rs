//! tus uploads on `s3://` storage, as the upload actor runs them: the steps of [`super::tus`]
//! whose bytes go to the bucket (`upload::tus_object`) instead of `tus/{id}`.
//!
//! | state | in the bucket | row |
//! |---|---|---|
//! | created | nothing | offset 0 |
//! | some bytes | the tail `tus/{id}/0` | offset = the tail's length |
//! | past a part | parts 0..n of the object's multipart upload, a tail after them | `multipart_id`, `upload_parts` 0..n, offset = n parts + the tail |
//! | whole | every part sent (or, never past a part, the object itself) | offset = size, not complete |
//! | complete | the object `{id}`, its multipart upload completed, no tail | complete, `sha256` |
//!
//! The offset only covers bytes the bucket holds (a part is recorded with the offset that
//! covers it, a tail is stored before the offset that counts it), and the lease is released
//! only after the offset is recorded, so the next PATCH on any replica starts from a
//! durable offset and finds what it needs in the database and the bucket.

use futures::StreamExt as _;

use super::tus::{advance, SessionEnd};
use super::{blocking, Deps, SharedTusObject, STEP_TIMEOUT};
use crate::actors::cpu::HashChunk;
use crate::db::uploads::Upload;
use crate::digest::{hex, Algorithm, Hasher};
use crate::error::AppError;
use crate::ids::UploadId;
use crate::upload::bucket::PART_BYTES;
use crate::upload::file::SharedFile;
use crate::upload::tus_object::{Stored, TusObject};
use crate::upload::Bucket;

/// Bytes of an object hashed per CPU step when its digest is not known at completion.
const DIGEST_BATCH_BYTES: usize = 1 << 20;

/// Creates a tus upload: its row (nothing is in the bucket until bytes come); an empty one
/// is its (empty) object at once, and complete.
pub async fn create(deps: &Deps, bucket: &Bucket, row: Upload) -> Result<Upload, AppError> {
    let (id, empty) = (row.id, row.size == 0);
    if empty {
        bucket.put_object(&id, Vec::new()).await?;
    }
    let row = super::insert_row_or_remove(deps, row).await?;
    deps.tus.created.increment(1);
    if empty {
        return super::tus::finish(deps, id, None).await;
    }
    Ok(row)
}

/// Appends `chunks` to a PATCH's object: hashed (on a blocking thread) when the digest is
/// kept, every full part sent, and, when the PATCH checkpoints, the parts sent recorded
/// with the offset they cover. Answers the bytes the PATCH appended.
pub async fn write(
    deps: &Deps,
    id: UploadId,
    object: &SharedTusObject,
    chunks: Vec<bytes::Bytes>,
    checkpoint: bool,
) -> Result<u64, AppError> {
    let mut guard = object.lock().await;
    let object = guard
        .as_mut()
        .ok_or_else(|| AppError::internal("writing a tus object", "the PATCH has ended"))?;
    if let Some(mut digest) = object.digest.take() {
        let hashed = chunks.clone();
        let digest = blocking("hashing an upload", move || {
            hashed.iter().for_each(|chunk| digest.update(chunk));
            Ok(digest)
        })
        .await?;
        object.digest = Some(digest);
    }
    let appended = object.append(&chunks);
    send_due_parts(deps, id, object).await?;
    if checkpoint {
        if let Some(Stored { offset, parts, .. }) = object.checkpoint() {
            let (from, sent) = (object.durable(), parts.len());
            advance(deps, id, (from, offset), parts).await?;
            object.recorded(sent, offset);
            // The old tail's bytes are in a recorded part now.
            object.drop_old_tail(None).await;
        }
    }
    Ok(appended)
}

/// Sends every whole part that waits, beginning (and recording) the multipart upload first
/// when there is none yet.
async fn send_due_parts(deps: &Deps, id: UploadId, object: &mut TusObject) -> Result<(), AppError> {
    while object.part_due() {
        if object.multipart().is_none() {
            begin_multipart(deps, id, object).await?;
        }
        object.send_part().await?;
    }
    Ok(())
}

/// Begins the multipart upload of upload `id` and records it, before its first part goes.
async fn begin_multipart(
    deps: &Deps,
    id: UploadId,
    object: &mut TusObject,
) -> Result<(), AppError> {
    let bucket = deps.store.bucket().ok_or_else(super::no_session)?;
    let multipart = bucket.create_multipart(&id).await?;
    match deps.db.begin_multipart(id, multipart.clone()).await {
        Ok(true) => {
            object.begin_multipart(multipart);
            Ok(())
        }
        recorded => {
            let _ = bucket.abort_multipart(&id, &multipart).await;
            recorded?;
            Err(AppError::internal(
                "beginning a multipart upload",
                format_args!("upload {id} has a multipart upload already"),
            ))
        }
    }
}

/// Ends a PATCH on an object: with `keep`, every byte it appended is stored (the tail, or
/// the last part) and the offset recorded with the parts, and the upload finished when
/// whole; without, nothing it sent is recorded (parts sent stay unlisted: the next PATCH
/// sends those part numbers again). The lease goes with `shared`, once the offset is
/// recorded.
pub async fn end_patch(
    deps: &Deps,
    id: UploadId,
    shared: SharedFile,
    object: SharedTusObject,
    keep: bool,
) -> Result<SessionEnd, AppError> {
    let Some(mut object) = object.lock().await.take() else {
        // Ended before its object was opened (begin_patch failed).
        return Ok(SessionEnd::default());
    };
    let durable = object.durable();
    let digest = object.digest.take();
    let unchanged = |digest: Option<Box<Hasher>>| {
        if let Some(digest) = digest {
            deps.digests.put(id, durable, digest);
        }
        Ok(SessionEnd {
            offset: durable,
            completed: None,
            expires_at: None,
        })
    };
    if !keep {
        return unchanged(digest.filter(|_| object.end() == durable));
    }
    // A whole part that waits (the bytes the PATCH brought end at a part's end) goes as a
    // part, so that the tail stays shorter than one.
    send_due_parts(deps, id, &mut object).await?;
    let Some(stored) = object.store_rest().await? else {
        return unchanged(digest);
    };
    let Stored {
        offset,
        parts,
        tail,
    } = stored;
    let until = advance(deps, id, (durable, offset), parts).await?;
    let completed = if offset == object.size() {
        Some(super::tus::finish(deps, id, digest.map(|d| d.finish())).await?)
    } else {
        object.drop_old_tail(tail).await;
        if let Some(digest) = digest {
            deps.digests.put(id, offset, digest);
        }
        None
    };
    // The lease is released only now, after the offset is recorded.
    drop(shared);
    Ok(SessionEnd {
        offset,
        completed,
        expires_at: Some(until),
    })
}

/// A whole tus upload: its multipart upload completed (or its object already in place),
/// digested (unless its PATCHes hashed it as it went: `digest`), marked complete, its tails
/// removed.
pub async fn finish(
    deps: &Deps,
    bucket: &Bucket,
    id: UploadId,
    digest: Option<Vec<u8>>,
) -> Result<Upload, AppError> {
    let row = deps.db.upload(id).await?;
    if let Some(multipart_id) = &row.multipart_id {
        let parts = deps.db.parts(id).await?;
        // Every part is whole but the last: a count that differs is a bug, not a state.
        let expected = row.size.div_ceil(PART_BYTES as u64);
        if parts.len() as u64 != expected {
            return Err(AppError::internal(
                "completing a tus upload's object",
                format_args!(
                    "upload {id} has {} parts recorded, not {expected}",
                    parts.len()
                ),
            ));
        }
        bucket.complete_multipart(&id, multipart_id, parts).await?;
    }
    let digest = match digest {
        Some(digest) => digest,
        None => digest_object(deps, bucket, &id).await?,
    };
    let done = deps.db.complete_upload(id, hex(&digest)).await?;
    deps.tus.completed.increment(1);
    if let Err(err) = bucket.remove_tails(&id).await {
        log::warn!("upload {id}: its tail stays in the bucket: {}", err.cause());
    }
    Ok(done)
}

/// The SHA-256 of upload `id`'s object, read from the bucket and hashed on the CPU pool.
async fn digest_object(deps: &Deps, bucket: &Bucket, id: &UploadId) -> Result<Vec<u8>, AppError> {
    let mut body = Box::pin(bucket.read(id, None).await?);
    let mut hasher = Box::new(Hasher::new(Algorithm::Sha256));
    let (mut batch, mut batch_len) = (Vec::new(), 0);
    loop {
        let next = body.next().await;
        let ended = next.is_none();
        if let Some(chunk) = next {
            let chunk = chunk.map_err(|e| AppError::storage_unavailable("reading an object", e))?;
            batch_len += chunk.len();
            batch.push(chunk);
        }
        if batch_len >= DIGEST_BATCH_BYTES || (ended && !batch.is_empty()) {
            let chunks = std::mem::take(&mut batch);
            batch_len = 0;
            hasher = deps
                .cpu
                .run_waiting(HashChunk { hasher, chunks }, STEP_TIMEOUT)
                .await?;
        }
        if ended {
            return Ok(hasher.finish());
        }
    }
}

/// Removes an upload stored in the bucket: its object, its multipart upload and tails when
/// it is unfinished, then its row, so that a failure at any step leaves a removal that can
/// be retried (and a row whose object is gone reads as 404 content until then).
pub async fn remove(
    deps: &Deps,
    bucket: &Bucket,
    id: UploadId,
    complete: bool,
) -> Result<(), AppError> {
    if !complete {
        // Read under the upload's lock: a PATCH that held it may have begun the multipart
        // upload since the caller's read.
        if let Some(multipart_id) = deps.db.upload(id).await?.multipart_id {
            bucket.abort_multipart(&id, &multipart_id).await?;
        }
        bucket.remove_tails(&id).await?;
    }
    bucket.remove(&id).await?;
    deps.db.delete_upload(id).await?;
    deps.digests.forget(&id);
    Ok(())
}
