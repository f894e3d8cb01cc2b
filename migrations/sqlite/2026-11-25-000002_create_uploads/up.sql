-- Uploads: metadata of stored files (POST /upload) and of tus uploads, finished or not.
-- Portable types only (one schema.rs for both backends): the UUID is TEXT, times are UTC.
CREATE TABLE uploads (
    id            TEXT      PRIMARY KEY,
    -- The client's file name, sanitised; never used as a path.
    filename      TEXT      NOT NULL,
    content_type  TEXT      NOT NULL,
    -- The final size in bytes (tus: Upload-Length).
    size          BIGINT    NOT NULL,
    -- Bytes durably on disk: the tus offset. Equals size once complete.
    upload_offset BIGINT    NOT NULL,
    -- Lowercase hex, set once the upload is complete.
    sha256        TEXT,
    complete      BOOLEAN   NOT NULL,
    -- tus Upload-Metadata as the client sent it, echoed on HEAD.
    tus_metadata  TEXT,
    -- When an unfinished tus upload expires; NULL once complete.
    expires_at    TIMESTAMP,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL
);

CREATE INDEX uploads_expires_at_idx ON uploads (expires_at) WHERE expires_at IS NOT NULL;
