-- Email addresses and the secrets mailed to them.
--
-- user_emails holds an account's address only once it is verified (a link
-- or code mailed to it came back), so nothing that trusts an address (a
-- password reset, a notice) can be pointed at an unconfirmed one. An
-- address belongs to one account: the lower-cased form is unique.
CREATE TABLE IF NOT EXISTS user_emails (
    user_id     INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    address     TEXT   NOT NULL,
    address_key TEXT   NOT NULL UNIQUE,
    verified_at INTEGER NOT NULL
);

-- Single-use secrets sent by mail (verification, password reset). Only the
-- SHA-256 of the 256-bit link token is stored (like refresh tokens: the
-- token's entropy makes a slow hash pointless), and the 6-digit code only
-- as an HMAC under a server secret, looked up with its user; a dump of the
-- table yields nothing usable. used_at makes each secret work once.
CREATE TABLE IF NOT EXISTS email_tokens (
    token_hash TEXT   PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT   NOT NULL,
    address    TEXT   NOT NULL,
    code_hash  TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX IF NOT EXISTS email_tokens_user ON email_tokens (user_id, purpose);
