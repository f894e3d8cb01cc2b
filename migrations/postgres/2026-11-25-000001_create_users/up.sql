-- Users. Timestamps are UTC `timestamp` so that one schema.rs serves PostgreSQL and SQLite.
CREATE TABLE users (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT      NOT NULL,
    email      TEXT      NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);

-- Emails are unique regardless of case.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
