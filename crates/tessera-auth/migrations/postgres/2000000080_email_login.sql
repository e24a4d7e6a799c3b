-- Sign-in by an emailed code or link (accounts.email_login).
--
-- Each row is one request from one browser (or API client): attempt_hash is
-- the SHA-256 of the random attempt ID that only the requester holds (in its
-- session, or returned by the API), so a code or link works only together
-- with it. The link token is stored as its SHA-256, the 6-digit code as an
-- HMAC under a server secret bound to the attempt; tries counts code checks
-- (a code dies after a few wrong ones), used_at makes the row work once, and
-- a newer request of the same account ends the older ones.
CREATE TABLE IF NOT EXISTS email_logins (
    attempt_hash TEXT   PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   TEXT   UNIQUE,
    code_hash    TEXT,
    tries        BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
);
CREATE INDEX IF NOT EXISTS email_logins_user ON email_logins (user_id);
