DROP TABLE upload_parts;
ALTER TABLE uploads DROP COLUMN multipart_id;
