-- Sessions of tessera. `key` is the SHA-256 digest of the session ID (never
-- the ID itself); times are milliseconds since the Unix epoch; `data` is the
-- exact compact JSON of the session data, kept as bytes so that it
-- round-trips byte for byte; `device` is compact JSON of the device info.
CREATE TABLE IF NOT EXISTS tessera_sessions (
    key         BLOB    PRIMARY KEY NOT NULL,
    version     INTEGER NOT NULL,
    user_id     TEXT    NULL,
    data        BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    last_active INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    device      BLOB    NOT NULL
);

-- Purging scans by deadline.
CREATE INDEX IF NOT EXISTS tessera_sessions_expires_at ON tessera_sessions (expires_at);

-- Listing and revoking by user. Partial: anonymous sessions, usually the
-- majority, need no entry (`user_id = ?` implies `user_id IS NOT NULL`, so
-- SQLite uses this index for those queries).
CREATE INDEX IF NOT EXISTS tessera_sessions_user_id ON tessera_sessions (user_id) WHERE user_id IS NOT NULL;
