-- Passkeys (WebAuthn credentials).
--
-- Every account that has a passkey gets one random user handle (a UUID,
-- WebAuthn's `user.id`): an authenticator stores it with a discoverable
-- credential and returns it at sign-in, which is how a sign-in with no user
-- name typed finds the account. It is random, never the numeric user ID,
-- so it tells nothing about the account (WebAuthn L3 §14.6.1).
CREATE TABLE IF NOT EXISTS passkey_user_handles (
    user_id BIGINT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    handle  TEXT    NOT NULL UNIQUE
);

-- One row per credential. `credential` is webauthn-rs's serialised Passkey
-- (public key, algorithm, flags, counter): public data, nothing secret.
-- `counter` mirrors the signature counter so that accepting an assertion is
-- one conditional update: two requests racing with the same counter value
-- cannot both pass, and a counter that went backwards (a cloned
-- authenticator) is refused.
CREATE TABLE IF NOT EXISTS passkeys (
    credential_id   TEXT    PRIMARY KEY,
    user_id         BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            TEXT    NOT NULL,
    credential      TEXT    NOT NULL,
    counter         BIGINT  NOT NULL DEFAULT 0,
    backup_eligible BIGINT  NOT NULL DEFAULT 0,
    backup_state    BIGINT  NOT NULL DEFAULT 0,
    created_at      BIGINT  NOT NULL,
    last_used_at    BIGINT
);
CREATE INDEX IF NOT EXISTS passkeys_user ON passkeys (user_id);

-- Ceremonies of API clients (native apps), which have no session to keep
-- the challenge in: the client holds a random ceremony ID, stored here as
-- its SHA-256 only, and finishing deletes the row (DELETE … RETURNING), so
-- a challenge is answered once. Rows older than the ceremony lifetime are
-- deleted whenever a new one begins.
CREATE TABLE IF NOT EXISTS passkey_ceremonies (
    id_hash    TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL,
    user_id    BIGINT REFERENCES users (id) ON DELETE CASCADE,
    state      TEXT    NOT NULL,
    created_at BIGINT NOT NULL
);
