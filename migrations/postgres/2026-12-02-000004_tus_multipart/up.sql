-- tus uploads on s3:// storage: each is an S3 multipart upload, begun with its first full
-- part. Its id and its recorded parts live here, so any replica can take the next PATCH.
-- NULL for uploads stored as files, and for a tus upload whose bytes fit its tail so far.
ALTER TABLE uploads ADD COLUMN multipart_id TEXT;

-- The parts of a tus upload's multipart upload that its offset covers, in order. A part is
-- recorded with the offset that covers it, in one transaction.
CREATE TABLE upload_parts (
    upload_id   TEXT    NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    -- 0-based (S3's part number is this + 1).
    part_index  INTEGER NOT NULL,
    -- What S3 answered for the part (its ETag), needed to complete the upload.
    etag        TEXT    NOT NULL,
    PRIMARY KEY (upload_id, part_index)
);
