-- tessera-store-postgres owns migration versions 1000000..=1999999 so that it
-- can share a database (and its _sqlx_migrations table) with an application's
-- own sqlx migrations, which must stay outside that range.

CREATE TABLE IF NOT EXISTS tessera_sessions (
    -- SHA-256 of the session ID; never the ID itself.
    key BYTEA PRIMARY KEY CHECK (octet_length(key) = 32),
    version BIGINT NOT NULL,
    user_id TEXT NULL,
    -- SessionData::to_json() bytes, kept verbatim: JSONB would reorder keys and
    -- normalise numbers (-0.0, 1e300), breaking exact round trips.
    data BYTEA NOT NULL,
    -- Milliseconds since the Unix epoch, as stamped by the application clock.
    created_at BIGINT NOT NULL,
    last_active BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    -- DeviceInfo::to_json() bytes.
    device BYTEA NOT NULL
);

CREATE INDEX IF NOT EXISTS tessera_sessions_expires_at ON tessera_sessions (expires_at);
CREATE INDEX IF NOT EXISTS tessera_sessions_user_id ON tessera_sessions (user_id) WHERE user_id IS NOT NULL;
