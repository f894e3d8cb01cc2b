-- The name of the API key that created the upload (form or tus); NULL for uploads made
-- before access control, or in open mode: only an `admin` key uses those once keys are set.
ALTER TABLE uploads ADD COLUMN owner TEXT;
