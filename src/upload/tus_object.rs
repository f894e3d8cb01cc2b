//! [`TusObject`]: one tus PATCH's bytes on `s3://` storage, between the request body and the
//! bucket. An upload is the multipart upload of its object: every part but the last is
//! exactly [`PART_BYTES`], so the bytes past the last full part (fewer than a part, which
//! S3 would refuse as a part that is not the last) wait in memory while the PATCH runs, and
//! are kept aside in a tail object when it ends, as tusd's s3store does. The next PATCH, on
//! any replica, reads the tail back and goes on.
//!
//! The database holds what the offset covers: the multipart upload's id, its parts (each
//! recorded with the offset that covers it) and the offset. A tail is always shorter than a
//! part (a whole part is sent as one), so the offset alone tells how many parts are recorded
//! and how long the tail is. The upload actor (`actors::upload::tus`) records; this type
//! only sends.

use bytes::Bytes;

use super::bucket::{split_part, Bucket, PART_BYTES};
use crate::db::uploads::{StoredPart, Upload};
use crate::digest::Hasher;
use crate::error::AppError;
use crate::ids::UploadId;

/// One PATCH's view of a tus upload in the bucket.
pub struct TusObject {
    bucket: Bucket,
    id: UploadId,
    multipart: Option<String>,
    /// Parts the recorded offset covers.
    recorded: usize,
    /// Parts sent by this PATCH and not yet recorded.
    sent: Vec<StoredPart>,
    /// Where `pending` starts: after every part recorded or sent.
    base: u64,
    pending: Vec<Bytes>,
    pending_len: usize,
    /// The recorded offset.
    durable: u64,
    /// Where the tail the recorded offset counts starts, if it has one.
    tail: Option<u64>,
    /// The upload's final size.
    size: u64,
    /// Bytes this PATCH appended.
    appended: u64,
    /// The SHA-256 of the upload's first `base + pending_len` bytes, when known
    /// (`upload::digests`).
    pub digest: Option<Box<Hasher>>,
}

impl std::fmt::Debug for TusObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TusObject")
            .field("id", &self.id)
            .field("recorded", &self.recorded)
            .field("sent", &self.sent.len())
            .field("base", &self.base)
            .field("pending_len", &self.pending_len)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

/// What the end of a PATCH stored, for the database: the new offset and the parts it covers.
#[derive(Debug)]
pub struct Stored {
    /// The new offset: every byte the PATCH appended.
    pub offset: u64,
    /// The parts sent and not yet recorded.
    pub parts: Vec<StoredPart>,
    /// Where the tail the new offset counts starts, if it counts one.
    pub tail: Option<u64>,
}

impl TusObject {
    /// Opens the tus upload `row` at its recorded offset: its tail, if the offset counts
    /// one, is read back.
    pub async fn open(bucket: &Bucket, row: &Upload) -> Result<Self, AppError> {
        let (id, offset, size) = (row.id, row.upload_offset, row.size);
        let part = PART_BYTES as u64;
        let (recorded, tail_len) = (offset / part, offset % part);
        let base = offset - tail_len;
        let (pending, tail) = match tail_len {
            0 => (Vec::new(), None),
            len => (vec![bucket.read_tail(&id, base, len).await?], Some(base)),
        };
        let recorded = usize::try_from(recorded)
            .map_err(|_| AppError::internal("opening a tus upload's object", recorded))?;
        Ok(Self {
            bucket: bucket.clone(),
            id,
            multipart: row.multipart_id.clone(),
            recorded,
            sent: Vec::new(),
            base,
            pending,
            pending_len: tail_len as usize,
            durable: offset,
            tail,
            size,
            appended: 0,
            digest: None,
        })
    }

    /// The multipart upload, once begun.
    pub fn multipart(&self) -> Option<&str> {
        self.multipart.as_deref()
    }

    /// Sets the multipart upload the next parts go to (begun and recorded by the caller).
    pub fn begin_multipart(&mut self, multipart: String) {
        self.multipart = Some(multipart);
    }

    /// Adds `chunks` to what waits for the next part; answers the bytes this PATCH appended.
    pub fn append(&mut self, chunks: &[Bytes]) -> u64 {
        for chunk in chunks {
            self.pending_len += chunk.len();
            self.appended += chunk.len() as u64;
            self.pending.push(chunk.clone());
        }
        self.appended
    }

    /// Whether a full part is due: a whole part waits, and it is not the end of the upload
    /// (the last bytes make its last part, or its only PUT).
    pub fn part_due(&self) -> bool {
        self.pending_len >= PART_BYTES && self.base + (PART_BYTES as u64) < self.size
    }

    /// Sends the next full part (the multipart upload must be begun).
    pub async fn send_part(&mut self) -> Result<(), AppError> {
        let part = self.take_part();
        self.send(part).await
    }

    async fn send(&mut self, part: Vec<Bytes>) -> Result<(), AppError> {
        let len = part.iter().map(Bytes::len).sum::<usize>() as u64;
        let multipart = self.multipart.as_deref().ok_or_else(|| {
            AppError::internal("sending a part of an upload", "no multipart upload")
        })?;
        let index = self.recorded + self.sent.len();
        let etag = self
            .bucket
            .put_part(&self.id, multipart, index, part)
            .await?;
        let index = u32::try_from(index)
            .map_err(|_| AppError::internal("sending a part of an upload", index))?;
        self.sent.push(StoredPart { index, etag });
        self.base += len;
        Ok(())
    }

    fn take_part(&mut self) -> Vec<Bytes> {
        split_part(&mut self.pending, &mut self.pending_len)
    }

    /// The offset the parts sent so far make durable, and those parts, when there are any
    /// to record (a checkpoint: the bytes still waiting are not durable yet).
    pub fn checkpoint(&mut self) -> Option<Stored> {
        if self.sent.is_empty() {
            return None;
        }
        Some(Stored {
            offset: self.base,
            parts: std::mem::take(&mut self.sent),
            tail: None,
        })
    }

    /// Records that the database now holds `parts` more parts and the offset `offset`.
    pub fn recorded(&mut self, parts: usize, offset: u64) {
        self.recorded += parts;
        self.durable = offset;
    }

    /// The upload's final size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The recorded offset.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// Where this PATCH's bytes end.
    pub fn end(&self) -> u64 {
        self.base + self.pending_len as u64
    }

    /// Stores every byte that waits, so that the offset can cover all of them: as the last
    /// part when the upload is whole (or as the whole object, when it never needed a part),
    /// else as the tail. Answers the offset to record and the parts it covers; `None` when
    /// there is nothing new. The parts due must be sent first: a tail is shorter than a part.
    pub async fn store_rest(&mut self) -> Result<Option<Stored>, AppError> {
        if self.part_due() {
            return Err(AppError::internal(
                "storing a tus upload's tail",
                "a whole part is still due",
            ));
        }
        let end = self.end();
        if end == self.durable && self.sent.is_empty() {
            return Ok(None);
        }
        let rest = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let mut tail = None;
        if end == self.size {
            if self.multipart.is_none() {
                self.bucket.put_object(&self.id, rest).await?;
            } else {
                self.send(rest).await?;
            }
        } else if end > self.base {
            self.bucket.put_tail(&self.id, self.base, rest).await?;
            tail = Some(self.base);
        }
        self.base = end;
        Ok(Some(Stored {
            offset: end,
            parts: std::mem::take(&mut self.sent),
            tail,
        }))
    }

    /// After the offset covering this PATCH's tail is recorded: the tail the old offset
    /// counted, if it is not the new one, is removed (a failure only leaves an object the
    /// upload's completion or removal takes away).
    pub async fn drop_old_tail(&mut self, new_tail: Option<u64>) {
        if let Some(start) = self.tail.filter(|&start| Some(start) != new_tail) {
            if let Err(err) = self.bucket.remove_tail(&self.id, start).await {
                log::warn!("upload {}: an old tail stays: {}", self.id, err.cause());
            }
        }
        self.tail = new_tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AwsSettings, S3Location};

    fn object(pending: &[usize]) -> TusObject {
        let location = S3Location {
            bucket: "test-bucket".into(),
            prefix: String::new(),
        };
        let aws = AwsSettings {
            access_key_id: Some("id".into()),
            secret_access_key: Some(crate::config::Secret("secret".into())),
            region: None,
            endpoint: Some("http://127.0.0.1:9".into()),
        };
        let mut object = TusObject {
            bucket: Bucket::open(&location, &aws).unwrap(),
            id: UploadId::new(),
            multipart: None,
            recorded: 0,
            sent: Vec::new(),
            base: 0,
            pending: Vec::new(),
            pending_len: 0,
            durable: 0,
            tail: None,
            size: 64 << 20,
            appended: 0,
            digest: None,
        };
        let chunks: Vec<Bytes> = pending.iter().map(|&n| Bytes::from(vec![1u8; n])).collect();
        object.append(&chunks);
        object
    }

    #[test]
    fn a_part_is_due_once_whole_unless_it_ends_the_upload() {
        assert!(!object(&[PART_BYTES - 1]).part_due());
        assert!(object(&[PART_BYTES]).part_due());
        let mut last = object(&[PART_BYTES]);
        last.size = PART_BYTES as u64;
        assert!(!last.part_due(), "the last bytes are the last part");
    }
}
