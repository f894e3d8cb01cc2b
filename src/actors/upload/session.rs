//! [`UploadSession`]: the handler-side half of one file being written, from its first byte
//! to its row. The `Uploads` handle opens one (`open_form_file`, `begin_patch`); the route
//! hands it the body (`receive`) and then ends it (`finish`). Everything between the route's
//! headers and the actor's files happens here: offset and length checks, the digest as bytes
//! arrive, checkpoints, the checksum's verdict, the row as it is afterwards.
//!
//! A session dropped before it ended (its client went away, its handler failed) ends itself:
//! a `POST /upload` leaves nothing, a PATCH keeps what it wrote unless a checksum covered it.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix::prelude::*;
use actix_web::rt::task::JoinHandle;
use actix_web::rt::time::Instant;
use bytes::Bytes;
use futures::{FutureExt as _, Stream, StreamExt as _};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{
    BeginPatch, CreateFile, DropSession, EndSession, FinishFile, SessionEnd, StepResult,
    UploadActor, Uploads, WriteChunk, BATCH_BYTES, CHECKPOINT_BYTES, FINISH_TIMEOUT, STEP_TIMEOUT,
};
use crate::actors::cpu::{CpuPool, HashChunk};
use crate::actors::supervise::ask;
use crate::auth::Access;
use crate::db::uploads::{FileInfo, Upload};
use crate::digest::{hex, Algorithm, Hasher};
use crate::error::AppError;
use crate::ids::UploadId;
use crate::upload::tus::Checksum;

/// How long a new upload's first digest step may wait for a CPU place: past it the CPU pool
/// is saturated and the upload is refused (503 + `Retry-After`); later steps of an upload
/// already under way wait up to [`STEP_TIMEOUT`].
const ADMISSION_WAIT: Duration = Duration::from_secs(2);

/// One file being written: a `POST /upload`'s form file or a tus PATCH.
pub struct UploadSession {
    uploads: Uploads,
    guard: SessionGuard,
    kind: Kind,
}

enum Kind {
    /// A `POST /upload` file, hashed as it arrives.
    Form {
        id: UploadId,
        filename: String,
        content_type: String,
        owner: Option<String>,
        received: Option<(u64, Box<Hasher>)>,
    },
    /// A PATCH on `row`, at its offset.
    Patch {
        row: Upload,
        /// Notified when another request asks for the upload (the lock hand-over).
        stop: Option<Arc<Notify>>,
        checksum: Option<Checksum>,
        /// The digest of the body so far, when a checksum must be checked.
        hasher: Option<Box<Hasher>>,
    },
}

impl Uploads {
    /// Opens a `POST /upload` session for a file called `filename` of type `content_type`,
    /// made by the key named `owner` (`None`: open mode): an empty temp file, under a fresh id.
    pub async fn open_form_file(
        &self,
        filename: String,
        content_type: String,
        owner: Option<String>,
    ) -> Result<UploadSession, AppError> {
        let (id, session) = (UploadId::new(), Uuid::new_v4());
        let guard = SessionGuard::new(self.addr.clone(), session, false);
        self.ask(CreateFile { session, id }, STEP_TIMEOUT).await?;
        Ok(UploadSession {
            uploads: self.clone(),
            guard,
            kind: Kind::Form {
                id,
                filename,
                content_type,
                owner,
                received: None,
            },
        })
    }

    /// Begins a PATCH of upload `id` at `offset` whose body is `declared` bytes long (when
    /// the client said): locks the upload (423 when another request holds it), checks the
    /// offset (409) and the length (413). `checksum`, when given, must match the whole body.
    pub async fn begin_patch(
        &self,
        id: UploadId,
        offset: u64,
        checksum: Option<Checksum>,
        declared: Option<u64>,
        access: Option<Access>,
    ) -> Result<UploadSession, AppError> {
        let session = Uuid::new_v4();
        // Bytes that arrived before an interruption are kept, unless a checksum was promised:
        // then they cannot be verified and are dropped.
        let guard = SessionGuard::new(self.addr.clone(), session, checksum.is_none());
        // A long PATCH records its offset as it goes, so a crash mid-way loses at most the
        // last checkpoint's worth; not when a checksum must cover all its bytes, nor when its
        // length is unknown (a body that turns out too long must leave nothing appended).
        let checkpoint_every =
            (checksum.is_none() && declared.is_some()).then_some(CHECKPOINT_BYTES);
        let begin = BeginPatch {
            session,
            id,
            checkpoint_every,
            access,
        };
        // Time for the database twice, and for a PATCH holding the upload to hand it over.
        let wait = self.db_timeout * 2 + super::HANDOVER_WAIT;
        let super::PatchStart { row, stop } = self.ask(begin, wait).await?;
        let mut session = UploadSession {
            uploads: self.clone(),
            guard,
            kind: Kind::Patch {
                hasher: checksum
                    .as_ref()
                    .map(|c| Box::new(Hasher::new(c.algorithm))),
                row,
                stop,
                checksum,
            },
        };
        if let Err(err) = session.check_patch(offset, declared) {
            return Err(session.fail(err).await);
        }
        Ok(session)
    }
}

impl UploadSession {
    fn check_patch(&self, offset: u64, declared: Option<u64>) -> Result<(), AppError> {
        let Kind::Patch { row, .. } = &self.kind else {
            return Ok(());
        };
        if offset != row.upload_offset {
            return Err(AppError::OffsetMismatch(format!(
                "Upload-Offset is {offset} but the upload is at {}",
                row.upload_offset
            )));
        }
        if !row.complete && declared.is_some_and(|len| len > row.remaining()) {
            return Err(past_length());
        }
        Ok(())
    }

    /// Ends the session at once, so that a PATCH's lock is released before the client hears
    /// `err`; answers `err`.
    async fn fail(&mut self, err: AppError) -> AppError {
        let _ = self.guard.end(FINISH_TIMEOUT).await;
        err
    }

    /// [`receive`](Self::receive) for a PATCH body, which stays readable by the guard: if the
    /// session is dropped half-way (the request's future cancelled when its client goes
    /// away), the chunks actix had already read for it are written too, not dropped with it.
    pub async fn receive_kept<S, E>(&mut self, body: S) -> Result<(), AppError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + 'static,
        E: Into<AppError>,
    {
        let body = Rc::new(RefCell::new(body));
        let unread = body.clone();
        self.guard.unread = Some(Box::new(move || {
            match unread.borrow_mut().next().now_or_never() {
                Some(Some(Ok(chunk))) => Some(chunk),
                _ => None,
            }
        }));
        let received = self.receive(Shared(body)).await;
        self.guard.unread = None;
        received
    }

    /// Streams `body` into the file. A form file over the upload limit, or a PATCH body past
    /// `Upload-Length`, is 413 as soon as it crosses it. What arrived before an interrupted
    /// body is still written: a PATCH keeps it (unless a checksum covers it), also when it
    /// stops because another request asked for the upload (400 `upload_interrupted`).
    pub async fn receive<S, E>(&mut self, body: S) -> Result<(), AppError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<AppError>,
    {
        let (limit, hasher, stop) = match &mut self.kind {
            Kind::Form { .. } => (
                self.uploads.limits.max_upload_bytes,
                Some(Box::new(Hasher::new(Algorithm::Sha256))),
                None,
            ),
            // Complete already: the PATCH appends nothing, and `finish` says where it is.
            Kind::Patch { row, .. } if row.complete => return Ok(()),
            Kind::Patch {
                row, hasher, stop, ..
            } => (row.remaining(), hasher.take(), stop.clone()),
        };
        let streamed = stream_into(
            &self.uploads,
            &mut self.guard,
            body,
            limit,
            hasher,
            stop.as_deref(),
        )
        .await;
        match (&mut self.kind, streamed) {
            (Kind::Form { received, .. }, Ok((size, Some(hasher)))) => {
                *received = Some((size, hasher));
                Ok(())
            }
            (Kind::Form { .. }, Ok((_, None))) => {
                Err(AppError::internal("an upload's digest", "missing"))
            }
            (Kind::Form { .. }, Err(err)) => Err(err),
            (Kind::Patch { hasher, .. }, Ok((_, digest))) => {
                *hasher = digest;
                Ok(())
            }
            (Kind::Patch { .. }, Err(AppError::PayloadTooLarge(_))) => {
                self.guard.keep = false;
                Err(self.fail(past_length()).await)
            }
            (Kind::Patch { .. }, Err(err)) => Err(self.fail(err).await),
        }
    }

    /// Ends the session and answers the upload's row as it is now. A form file is fsynced,
    /// moved into place and recorded; a PATCH keeps its bytes when they match the checksum
    /// (460 when not), records the new offset, and completes the upload when it is whole.
    pub async fn finish(self) -> Result<Upload, AppError> {
        let Self {
            uploads,
            mut guard,
            kind,
        } = self;
        match kind {
            Kind::Form {
                id,
                filename,
                content_type,
                owner,
                received,
            } => {
                let (size, hasher) = received
                    .ok_or_else(|| AppError::internal("an upload session", "nothing received"))?;
                let file = FileInfo {
                    id,
                    filename,
                    content_type,
                    size,
                };
                let row = Upload::stored(file, hex(&hasher.finish())).owned_by(owner);
                let session = guard.session;
                let finished = uploads
                    .ask(FinishFile { session, row }, FINISH_TIMEOUT)
                    .await;
                // Finished, or failed inside the actor, which then removed the file itself.
                guard.armed = false;
                finished
            }
            Kind::Patch {
                row,
                checksum,
                hasher,
                ..
            } => {
                if row.complete {
                    return Ok(row);
                }
                let matches = match (checksum, hasher) {
                    (Some(expected), Some(hasher)) => hasher.finish() == expected.digest,
                    _ => true,
                };
                guard.keep = matches;
                let end = guard.end(FINISH_TIMEOUT).await?;
                if !matches {
                    return Err(AppError::ChecksumMismatch);
                }
                Ok(match end.completed {
                    Some(done) => done,
                    None => Upload {
                        upload_offset: end.offset,
                        expires_at: end.expires_at.or(row.expires_at),
                        ..row
                    },
                })
            }
        }
    }
}

fn past_length() -> AppError {
    AppError::PayloadTooLarge("the body goes past Upload-Length".into())
}

/// Ends its session when dropped, unless it already ended: a handler that fails, or is
/// dropped because its client went away, leaves nothing half-written behind, and a PATCH
/// that keeps what it received keeps every byte of it (the batch being written and the one
/// still being gathered are written before the session ends).
pub struct SessionGuard {
    addr: Addr<UploadActor>,
    session: Uuid,
    /// Whether a tus session keeps what it wrote when the guard ends it.
    keep: bool,
    armed: bool,
    /// Bytes received and not yet handed to the actor.
    pending: Vec<Bytes>,
    /// The batch being written (and hashed) now.
    in_flight: Option<JoinHandle<StepResult>>,
    /// The next chunk the body being received already holds, if any: what actix has read
    /// off the socket and the session not yet taken. Set while a PATCH body streams, so that
    /// a session dropped half-way (its client gone, the request's future cancelled) keeps
    /// those bytes too.
    unread: Option<Box<dyn FnMut() -> Option<Bytes>>>,
    /// How many more bytes the body may bring (past it is 413).
    room: u64,
}

impl SessionGuard {
    /// Guards `session`; on drop a tus session keeps what it wrote when `keep` is true.
    pub fn new(addr: Addr<UploadActor>, session: Uuid, keep: bool) -> Self {
        Self {
            addr,
            session,
            keep,
            armed: true,
            pending: Vec::new(),
            in_flight: None,
            unread: None,
            room: u64::MAX,
        }
    }

    /// Takes the chunks the body still holds into `pending`, as far as they fit its room (a
    /// body past it keeps nothing, as its 413 would).
    fn take_unread(&mut self) {
        let Some(mut next) = self.unread.take() else {
            return;
        };
        while let Some(chunk) = next() {
            let Some(room) = self.room.checked_sub(chunk.len() as u64) else {
                self.keep = false;
                return;
            };
            self.room = room;
            if !chunk.is_empty() {
                self.pending.push(chunk);
            }
        }
    }

    /// Ends the session now (keeping what it wrote as `keep` says) and waits for it: once
    /// this returns, a tus upload's lock is released. If it fails or is dropped half-way,
    /// the guard still ends the session when dropped (a second end is a no-op).
    async fn end(&mut self, timeout: Duration) -> Result<SessionEnd, AppError> {
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
        if !self.armed {
            return;
        }
        if self.keep {
            self.take_unread();
        }
        // `do_send`: a message whose sender is gone would be skipped by actix, and this one
        // must run even though nobody waits for its answer.
        let unwritten = !self.pending.is_empty() || self.in_flight.is_some();
        if self.keep && unwritten {
            self.addr.do_send(DropSession {
                session: self.session,
                pending: std::mem::take(&mut self.pending),
                after: self.in_flight.take(),
                // Dropped inside the request's scope: its log lines name the request.
                request_id: crate::http::request_id::current(),
            });
        } else {
            self.addr.do_send(EndSession {
                session: self.session,
                keep: self.keep,
            });
        }
    }
}

/// Streams `body` into `guard`'s session in batches of [`BATCH_BYTES`]: each batch is
/// written by the actor and, when `hasher` is given, hashed on a CPU thread at the same time,
/// while the next batch is read from the network (the body is read at most one batch ahead,
/// so an upload holds at most two in memory, and only what has arrived). More than `limit`
/// bytes is 413 as soon as it is crossed. `stop`, when notified, ends the body where it is:
/// another request wants the upload. The batch being gathered and the one being written live
/// in the guard, so that a session dropped half-way still has them. Every byte is counted
/// in `/metrics` as it arrives. Answers the bytes streamed and the digest state.
async fn stream_into<S, E>(
    uploads: &Uploads,
    guard: &mut SessionGuard,
    mut body: S,
    limit: u64,
    mut hasher: Option<Box<Hasher>>,
    stop: Option<&Notify>,
) -> Result<(u64, Option<Box<Hasher>>), AppError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<AppError>,
{
    let mut total: u64 = 0;
    let mut batch_len = 0usize;
    guard.room = limit;
    // The body's end: `Ok` at its end, or why it stopped (what arrived is still written).
    let mut ended: Option<Result<(), AppError>> = None;
    let mut cpu_wait = ADMISSION_WAIT;
    // Pacing: the next batch is handed over no sooner than this.
    let mut paced_until: Option<Instant> = None;
    loop {
        let may_hand_over = paced_until.is_none() || ended.is_some();
        if guard.in_flight.is_none()
            && may_hand_over
            && (batch_len >= BATCH_BYTES || (ended.is_some() && batch_len > 0))
        {
            let chunks = std::mem::take(&mut guard.pending);
            paced_until = uploads
                .pace
                .pause_after(batch_len)
                .map(|pause| Instant::now() + pause);
            batch_len = 0;
            // Spawned, so the write and the hash go on while the next batch is read.
            guard.in_flight = Some(actix_web::rt::spawn(step(
                guard.addr.clone(),
                uploads.cpu.clone(),
                guard.session,
                chunks,
                hasher.take(),
                cpu_wait,
            )));
            cpu_wait = STEP_TIMEOUT;
        }
        if ended.is_some() && batch_len == 0 && guard.in_flight.is_none() {
            break;
        }
        let reading = ended.is_none() && batch_len < BATCH_BYTES;
        let writing = guard.in_flight.is_some();
        let in_flight = guard.in_flight.as_mut();
        tokio::select! {
            biased;
            () = stopped(stop), if ended.is_none() => {
                // What has arrived already is taken (and kept) before letting go.
                while ended.is_none() {
                    match body.next().now_or_never() {
                        Some(Some(Ok(chunk))) => {
                            uploads.received.increment(chunk.len() as u64);
                            take(guard, chunk, &mut total, &mut batch_len, limit)?;
                        }
                        Some(Some(Err(err))) => ended = Some(Err(err.into())),
                        Some(None) => ended = Some(Ok(())),
                        None => ended = Some(Err(AppError::UploadInterrupted)),
                    }
                }
            }
            written = joined(in_flight), if writing => {
                guard.in_flight = None;
                hasher = written?;
            }
            chunk = body.next(), if reading => match chunk {
                Some(Ok(chunk)) => {
                    uploads.received.increment(chunk.len() as u64);
                    take(guard, chunk, &mut total, &mut batch_len, limit)?;
                }
                Some(Err(err)) => ended = Some(Err(err.into())),
                None => ended = Some(Ok(())),
            },
            () = paced(paced_until), if paced_until.is_some() => paced_until = None,
        }
    }
    ended.unwrap_or(Ok(())).map(|()| (total, hasher))
}

/// Adds `chunk` to the batch being gathered; 413 once the body is over `limit`.
fn take(
    guard: &mut SessionGuard,
    chunk: Bytes,
    total: &mut u64,
    batch_len: &mut usize,
    limit: u64,
) -> Result<(), AppError> {
    *total += chunk.len() as u64;
    if *total > limit {
        return Err(AppError::PayloadTooLarge(format!(
            "the upload is over its limit of {limit} bytes"
        )));
    }
    *batch_len += chunk.len();
    guard.room = limit - *total;
    if !chunk.is_empty() {
        guard.pending.push(chunk);
    }
    Ok(())
}

/// A body read through a handle the session's guard shares ([`UploadSession::receive_kept`]).
struct Shared<S>(Rc<RefCell<S>>);

impl<S: Stream + Unpin> Stream for Shared<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.0.borrow_mut().poll_next_unpin(cx)
    }
}

/// Resolves once `stop` is notified; never without one.
async fn stopped(stop: Option<&Notify>) {
    match stop {
        Some(stop) => stop.notified().await,
        None => std::future::pending().await,
    }
}

/// Resolves at `until`; never without one.
async fn paced(until: Option<Instant>) {
    match until {
        Some(until) => actix_web::rt::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

/// The step under way; never without one.
async fn joined(handle: Option<&mut JoinHandle<StepResult>>) -> StepResult {
    match handle {
        Some(handle) => handle
            .await
            .map_err(|e| AppError::internal("an upload step", e))?,
        None => std::future::pending().await,
    }
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
