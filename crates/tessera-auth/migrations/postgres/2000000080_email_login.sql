-- Sign-in by an emailed code or link (accounts.email_login).
--
-- Each row is one request from one browser (or API client), written by the
-- request itself whether or not an account has the address (so the request,
-- and every later check of a code against it, does the same work either
-- way): attempt_hash is the SHA-256 of the random attempt ID that only the
-- requester holds (in its session, or returned by the API), so a code or
-- link works only together with it. The outbox worker fills in user_id and
-- the secret when it mails the account with that verified address: the link
-- token as its SHA-256, the 6-digit code as an HMAC under a server secret
-- bound to the attempt. tries counts code checks (a code dies after a few),
-- used_at makes the row work once, and a newer request for the same address
-- (or account) ends the older ones.
CREATE TABLE IF NOT EXISTS email_logins (
    attempt_hash TEXT   PRIMARY KEY,
    address_key  TEXT   NOT NULL,
    user_id      BIGINT REFERENCES users (id) ON DELETE CASCADE,
    token_hash   TEXT   UNIQUE,
    code_hash    TEXT,
    tries        BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
);
CREATE INDEX IF NOT EXISTS email_logins_address ON email_logins (address_key);
CREATE INDEX IF NOT EXISTS email_logins_user ON email_logins (user_id);
