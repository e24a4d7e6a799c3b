-- The token API: signing keys, refresh tokens, products.

-- Ed25519 keys for access tokens. The newest key without retired_at signs;
-- retired keys keep verifying until the tokens they signed have expired.
CREATE TABLE IF NOT EXISTS signing_keys (
    kid         TEXT    PRIMARY KEY,
    algorithm   TEXT    NOT NULL,
    private_key BLOB,
    public_key  BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);

-- Refresh tokens, stored as SHA-256 digests only. Each use marks the token
-- used and adds its successor to the same family; presenting a used token
-- again revokes the whole family.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash  BLOB    PRIMARY KEY,
    family_id   TEXT    NOT NULL,
    parent_hash BLOB,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX IF NOT EXISTS refresh_tokens_user ON refresh_tokens (user_id);

-- Prices are canonical decimal strings ("12.5", "0", "1999.99"): exact,
-- and the same in both databases.
CREATE TABLE IF NOT EXISTS products (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    price       TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
