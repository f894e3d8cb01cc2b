-- Users. AUTOINCREMENT so that a deleted id is never handed out again (keyset pagination
-- and Location headers stay truthful).
CREATE TABLE users (
    id         INTEGER   PRIMARY KEY AUTOINCREMENT NOT NULL,
    name       TEXT      NOT NULL,
    email      TEXT      NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- Emails are unique regardless of case (SQLite's lower() folds ASCII only).
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
