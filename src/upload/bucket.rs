//! Uploads as objects in an S3-compatible bucket (`TROUPE_STORAGE=s3://BUCKET/PREFIX`): a
//! complete upload is the object `{prefix}/{id}`. A `POST /upload` streams into an
//! [`ObjectWrite`]: its bytes go out in parts of [`PART_BYTES`] as they arrive (a multipart
//! upload, begun with the first full part), and the object exists only once the write is
//! completed; an abandoned one is aborted and leaves nothing. The rest of troupe sees this
//! type, never `object_store`.
//!
//! Every failure of the store itself (down, refusing, timing out) is 503
//! `storage_unavailable`; its cause only goes to the log.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore as _, PartId};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, MultipartId, ObjectStore as _,
    ObjectStoreExt as _, PutPayload, RetryConfig,
};

use crate::config::{AwsSettings, S3Location};
use crate::error::AppError;
use crate::ids::UploadId;

/// The size of every part but the last: above S3's 5 MiB minimum, and the same for all (R2
/// and some others require equal parts). An upload holds at most one part and one batch.
pub const PART_BYTES: usize = 8 << 20;

/// How long connecting to the store may take: past it the store is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one request to the store may take (an 8 MiB part over a slow link included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The name of the object `/readyz` asks for: a missing one answers as fast as any.
const PROBE_NAME: &str = ".troupe-readyz";

/// The bucket, with the prefix uploads are named under. Cheap to clone.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<AmazonS3>,
    prefix: Option<Path>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Bucket {
    /// A client for `location` with `aws`'s keys, region and endpoint (path-style, http
    /// allowed, when an endpoint is given). Nothing is sent yet: `/readyz` tells whether
    /// the store answers. Retries are few and short, so that a store that is down is a
    /// 503 within seconds rather than a request hanging for minutes.
    pub fn open(location: &S3Location, aws: &AwsSettings) -> Result<Self, String> {
        crate::install_crypto_provider();
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: Duration::from_secs(5),
        };
        let client = ClientOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_allow_http(true);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&location.bucket)
            .with_region(aws.region())
            .with_retry(retry)
            .with_client_options(client)
            // troupe hashes every byte already (sha256 as it streams); signing the payload
            // would hash each part a second time on the upload actor's thread. The
            // request itself is still signed, and TLS guards the bytes against https.
            .with_unsigned_payload(true);
        if let Some(id) = &aws.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &aws.secret_access_key {
            builder = builder.with_secret_access_key(&secret.0);
        }
        if let Some(endpoint) = &aws.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let store = builder.build().map_err(|e| e.to_string())?;
        let prefix = (!location.prefix.is_empty())
            .then(|| Path::parse(&location.prefix))
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            store: Arc::new(store),
            prefix,
        })
    }

    /// The object a complete upload is.
    fn object(&self, name: &str) -> Path {
        match &self.prefix {
            Some(prefix) => prefix.clone().join(name),
            None => Path::from(name),
        }
    }

    /// Whether the store answers (within `timeout`): a HEAD of an object that need not
    /// exist, so `/readyz` costs one small request.
    pub async fn check(&self, timeout: Duration) -> Result<(), AppError> {
        let probe = self.object(PROBE_NAME);
        match actix_web::rt::time::timeout(timeout, self.store.head(&probe)).await {
            Ok(Ok(_) | Err(object_store::Error::NotFound { .. })) => Ok(()),
            Ok(Err(err)) => Err(unavailable("probing the object store", err)),
            Err(_) => Err(AppError::storage_unavailable(
                "probing the object store",
                format_args!("no answer within {} ms", timeout.as_millis()),
            )),
        }
    }

    /// Starts writing upload `id`; nothing is sent until a part is full or it completes.
    pub fn begin(&self, id: &UploadId) -> ObjectWrite {
        ObjectWrite {
            bucket: self.clone(),
            id: *id,
            path: self.object(&id.to_string()),
            multipart: None,
            parts: Vec::new(),
            pending: Vec::new(),
            pending_len: 0,
            written: 0,
            closed: false,
        }
    }

    /// Whether upload `id`'s object exists: 404 when it is gone.
    pub async fn stat(&self, id: &UploadId) -> Result<(), AppError> {
        self.store
            .head(&self.object(&id.to_string()))
            .await
            .map(drop)
            .map_err(|err| missing_or_unavailable(id, "reading an upload's object", err))
    }

    /// Upload `id`'s bytes in `range` (all of them without one), as they stream from the
    /// store; 404 when its object is gone.
    pub async fn read(
        &self,
        id: &UploadId,
        range: Option<Range<u64>>,
    ) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + use<>, AppError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let got = self
            .store
            .get_opts(&self.object(&id.to_string()), options)
            .await
            .map_err(|err| missing_or_unavailable(id, "reading an upload's object", err))?;
        Ok(got.into_stream().map_err(std::io::Error::other))
    }

    /// Removes upload `id`'s object; one that is already gone is fine.
    pub async fn remove(&self, id: &UploadId) -> Result<(), AppError> {
        let object = self.object(&id.to_string());
        self.delete_at(&object, "removing an upload's object").await
    }

    /// Stores `bytes` as the object at `path` (`what` names the step for a failure).
    async fn put_at(
        &self,
        path: &Path,
        bytes: Vec<Bytes>,
        what: &'static str,
    ) -> Result<(), AppError> {
        let payload: PutPayload = bytes.into_iter().collect();
        self.store
            .put(path, payload)
            .await
            .map(drop)
            .map_err(|e| unavailable(what, e))
    }

    /// Deletes the object at `path`; one already gone is fine.
    async fn delete_at(&self, path: &Path, what: &'static str) -> Result<(), AppError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(unavailable(what, err)),
        }
    }
}

/// The multipart and tail operations of tus uploads (`upload::tus_object` holds one
/// PATCH's bytes between them). Upload `id`'s bytes go to parts of the multipart upload of
/// its object; the bytes past its last full part are kept aside in a tail object named by
/// where it starts, `{prefix}/tus/{id}/{start}`, until more bytes come or the upload ends.
impl Bucket {
    fn tails_of(&self, id: &UploadId) -> Path {
        self.object("tus").join(id.to_string())
    }

    fn tail(&self, id: &UploadId, start: u64) -> Path {
        self.tails_of(id).join(start.to_string())
    }

    /// Begins the multipart upload of upload `id`'s object; answers its id.
    pub async fn create_multipart(&self, id: &UploadId) -> Result<String, AppError> {
        self.store
            .create_multipart(&self.object(&id.to_string()))
            .await
            .map_err(|e| unavailable("starting a multipart upload", e))
    }

    /// Sends part `index` (0-based) of upload `id`'s multipart upload; answers its ETag.
    /// Sending an index again replaces the part.
    pub async fn put_part(
        &self,
        id: &UploadId,
        multipart: &str,
        index: usize,
        part: Vec<Bytes>,
    ) -> Result<String, AppError> {
        let payload: PutPayload = part.into_iter().collect();
        self.store
            .put_part(
                &self.object(&id.to_string()),
                &multipart.to_owned(),
                index,
                payload,
            )
            .await
            .map(|part| part.content_id)
            .map_err(|e| unavailable("sending a part of an upload", e))
    }

    /// Makes upload `id`'s object from the parts `etags` of its multipart upload. One
    /// completed before (a crash between this and the row) is found in place and fine.
    pub async fn complete_multipart(
        &self,
        id: &UploadId,
        multipart: &str,
        etags: Vec<String>,
    ) -> Result<(), AppError> {
        let path = self.object(&id.to_string());
        let parts = etags
            .into_iter()
            .map(|content_id| PartId { content_id })
            .collect();
        match self
            .store
            .complete_multipart(&path, &multipart.to_owned(), parts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotFound { .. }) if self.store.head(&path).await.is_ok() => {
                Ok(())
            }
            Err(err) => Err(unavailable("completing a multipart upload", err)),
        }
    }

    /// Aborts upload `id`'s multipart upload (its parts deleted); one already gone is fine.
    pub async fn abort_multipart(&self, id: &UploadId, multipart: &str) -> Result<(), AppError> {
        match self
            .store
            .abort_multipart(&self.object(&id.to_string()), &multipart.to_owned())
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(unavailable("aborting a multipart upload", err)),
        }
    }

    /// Stores `bytes` as upload `id`'s whole object (an upload that never needed a part).
    pub async fn put_object(&self, id: &UploadId, bytes: Vec<Bytes>) -> Result<(), AppError> {
        let object = self.object(&id.to_string());
        self.put_at(&object, bytes, "storing an upload's object")
            .await
    }

    /// Stores `bytes` as upload `id`'s tail starting at byte `start`.
    pub async fn put_tail(
        &self,
        id: &UploadId,
        start: u64,
        bytes: Vec<Bytes>,
    ) -> Result<(), AppError> {
        let tail = self.tail(id, start);
        self.put_at(&tail, bytes, "storing an upload's tail").await
    }

    /// The first `len` bytes of upload `id`'s tail starting at `start`. One that is missing
    /// or shorter (removed by hand) is a 500: the recorded offset counts those bytes.
    pub async fn read_tail(&self, id: &UploadId, start: u64, len: u64) -> Result<Bytes, AppError> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(0..len)),
            ..GetOptions::default()
        };
        let got = match self.store.get_opts(&self.tail(id, start), options).await {
            Ok(got) => got,
            Err(err @ object_store::Error::NotFound { .. }) => {
                return Err(AppError::internal("reading an upload's tail", err))
            }
            Err(err) => return Err(unavailable("reading an upload's tail", err)),
        };
        let bytes = got
            .bytes()
            .await
            .map_err(|e| unavailable("reading an upload's tail", e))?;
        if (bytes.len() as u64) < len {
            return Err(AppError::internal(
                "reading an upload's tail",
                format_args!("upload {id}: {} bytes of {len} recorded", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// Removes upload `id`'s tail starting at `start`; one already gone is fine.
    pub async fn remove_tail(&self, id: &UploadId, start: u64) -> Result<(), AppError> {
        let tail = self.tail(id, start);
        self.delete_at(&tail, "removing an upload's tail").await
    }

    /// Removes every tail of upload `id` (a crash can leave an old one behind).
    pub async fn remove_tails(&self, id: &UploadId) -> Result<(), AppError> {
        let tails: Vec<_> = self
            .store
            .list(Some(&self.tails_of(id)))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| unavailable("listing an upload's tails", e))?;
        for tail in tails {
            self.delete_at(&tail, "removing an upload's tail").await?;
        }
        Ok(())
    }
}

/// 404 for an object that is gone (its row says it should be there: logged), else 503.
fn missing_or_unavailable(id: &UploadId, what: &'static str, err: object_store::Error) -> AppError {
    match err {
        object_store::Error::NotFound { .. } => {
            log::warn!("upload {id} has a row but its object is missing: {err}");
            AppError::NotFound("this upload's content is gone".into())
        }
        err => unavailable(what, err),
    }
}

/// The store failed `what`: 503 `storage_unavailable`, the cause for the log.
fn unavailable(what: &'static str, err: object_store::Error) -> AppError {
    AppError::storage_unavailable(what, err)
}

/// The first [`PART_BYTES`] of `pending` (`pending_len` bytes, at least a part), taken out
/// of it; a chunk across the boundary is split without copying.
pub(crate) fn split_part(pending: &mut Vec<Bytes>, pending_len: &mut usize) -> Vec<Bytes> {
    let mut part = Vec::new();
    let mut room = PART_BYTES;
    let mut rest = std::mem::take(pending).into_iter();
    for mut chunk in rest.by_ref() {
        if chunk.len() <= room {
            room -= chunk.len();
            part.push(chunk);
        } else {
            part.push(chunk.split_to(room));
            room = 0;
            pending.push(chunk);
        }
        if room == 0 {
            break;
        }
    }
    pending.extend(rest);
    *pending_len -= PART_BYTES - room;
    part
}

/// One upload being written to the bucket: the bytes not yet sent (less than a part), and,
/// once the first part went out, the multipart upload and its parts.
pub struct ObjectWrite {
    bucket: Bucket,
    id: UploadId,
    /// The object's name, for the log.
    path: Path,
    multipart: Option<MultipartId>,
    /// The ETags of the parts sent.
    parts: Vec<String>,
    pending: Vec<Bytes>,
    pending_len: usize,
    /// Bytes appended so far.
    written: u64,
    /// Completed or aborted: nothing more may be written.
    closed: bool,
}

impl std::fmt::Debug for ObjectWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWrite")
            .field("path", &self.path)
            .field("parts", &self.parts.len())
            .field("pending_len", &self.pending_len)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// One write, shared by the steps of its session; a step holds it across its store
/// requests, so the session's end (abort, complete) waits for the part being sent.
pub type SharedObject = Arc<tokio::sync::Mutex<ObjectWrite>>;

impl ObjectWrite {
    /// Adds `chunks`; every full part is sent before this returns (a slow store slows the
    /// client, never grows memory past a part and a batch). Answers the bytes appended so
    /// far.
    pub async fn append(&mut self, chunks: Vec<Bytes>) -> Result<u64, AppError> {
        if self.closed {
            return Err(AppError::internal(
                "writing an upload's object",
                "the upload session has ended",
            ));
        }
        for chunk in chunks {
            self.pending_len += chunk.len();
            self.written += chunk.len() as u64;
            self.pending.push(chunk);
        }
        // Strictly more than a part: an upload of exactly one part goes out as one PUT.
        while self.pending_len > PART_BYTES {
            let part = self.take_part();
            self.send_part(part).await?;
        }
        Ok(self.written)
    }

    fn take_part(&mut self) -> Vec<Bytes> {
        split_part(&mut self.pending, &mut self.pending_len)
    }

    async fn send_part(&mut self, part: Vec<Bytes>) -> Result<(), AppError> {
        let multipart = match &self.multipart {
            Some(multipart) => multipart.clone(),
            None => {
                let multipart = self.bucket.create_multipart(&self.id).await?;
                self.multipart = Some(multipart.clone());
                multipart
            }
        };
        let index = self.parts.len();
        let etag = self
            .bucket
            .put_part(&self.id, &multipart, index, part)
            .await?;
        self.parts.push(etag);
        Ok(())
    }

    /// Sends what is pending and makes the object whole: from here on it exists, with every
    /// byte appended. On failure nothing is left (the multipart upload is aborted).
    pub async fn complete(&mut self) -> Result<(), AppError> {
        let done = self.finish_parts().await;
        if done.is_err() {
            self.abort().await;
        }
        self.closed = true;
        done
    }

    async fn finish_parts(&mut self) -> Result<(), AppError> {
        let rest = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let Some(multipart) = self.multipart.clone() else {
            // Less than a part in all: one PUT.
            return self.bucket.put_object(&self.id, rest).await;
        };
        if rest.iter().any(|c| !c.is_empty()) {
            self.send_part(rest).await?;
        }
        let parts = std::mem::take(&mut self.parts);
        self.bucket
            .complete_multipart(&self.id, &multipart, parts)
            .await
    }

    /// Ends the write without an object: the multipart upload, if one was begun, is
    /// aborted (its parts deleted). A failure is logged: the store may keep the parts until
    /// a lifecycle rule removes them.
    pub async fn abort(&mut self) {
        self.closed = true;
        self.pending.clear();
        self.pending_len = 0;
        if let Some(multipart) = self.multipart.take() {
            if let Err(err) = self.bucket.abort_multipart(&self.id, &multipart).await {
                log::warn!(
                    "could not abort the multipart upload of {}: {}",
                    self.path,
                    err.cause()
                );
            }
        }
    }
}

impl Drop for ObjectWrite {
    /// A write let go of without its end (the upload actor restarted after a panic, its
    /// sessions cleared) still aborts its multipart upload, in the background.
    fn drop(&mut self) {
        let Some(multipart) = self.multipart.take().filter(|_| !self.closed) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            log::warn!("the multipart upload of {} is left unaborted", self.path);
            return;
        };
        let (bucket, id, path) = (self.bucket.clone(), self.id, self.path.clone());
        runtime.spawn(async move {
            if let Err(err) = bucket.abort_multipart(&id, &multipart).await {
                log::warn!(
                    "could not abort the multipart upload of {path}: {}",
                    err.cause()
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write() -> ObjectWrite {
        let location = S3Location {
            bucket: "test-bucket".into(),
            prefix: "up/loads".into(),
        };
        let aws = AwsSettings {
            access_key_id: Some("id".into()),
            secret_access_key: Some(crate::config::Secret("secret".into())),
            region: None,
            endpoint: Some("http://127.0.0.1:9".into()),
        };
        Bucket::open(&location, &aws)
            .unwrap()
            .begin(&UploadId::new())
    }

    #[test]
    fn a_part_is_exactly_part_bytes_and_the_rest_stays_pending() {
        let mut w = write();
        let chunk = Bytes::from(vec![7u8; 3 << 20]);
        for _ in 0..3 {
            w.pending_len += chunk.len();
            w.pending.push(chunk.clone());
        }
        let part = w.take_part();
        assert_eq!(part.iter().map(Bytes::len).sum::<usize>(), PART_BYTES);
        assert_eq!(w.pending_len, (9 << 20) - PART_BYTES);
        assert_eq!(
            w.pending.iter().map(Bytes::len).sum::<usize>(),
            w.pending_len
        );
    }

    #[test]
    fn uploads_are_named_under_the_prefix() {
        let w = write();
        assert!(w.path.as_ref().starts_with("up/loads/"), "{}", w.path);
    }
}
