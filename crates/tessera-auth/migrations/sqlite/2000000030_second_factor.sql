-- Second factors: an authenticator app (TOTP, RFC 6238) and single-use
-- recovery codes.
--
-- A TOTP credential is written unconfirmed when setup starts and becomes
-- active once the user proves the app produces its codes. `last_step` is
-- the newest 30-second step whose code was accepted: codes of that step or
-- older are refused, so a code works once (ASVS 6.5.1).
CREATE TABLE IF NOT EXISTS totp_credentials (
    user_id      INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret       TEXT   NOT NULL,
    created_at   INTEGER NOT NULL,
    confirmed_at INTEGER,
    last_step    INTEGER NOT NULL DEFAULT 0
);

-- Recovery codes carry 125 random bits, so a plain SHA-256 is enough to
-- store them (ASVS 6.5.2 asks for a slow salted hash only below 112 bits);
-- the hash is also the lookup key.
CREATE TABLE IF NOT EXISTS recovery_codes (
    code_hash  TEXT   PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX IF NOT EXISTS recovery_codes_user ON recovery_codes (user_id);
