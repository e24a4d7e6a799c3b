-- tessera-store-mysql owns migration versions 1000000..=1999999 so that it
-- can share a database (and its _sqlx_migrations table) with an application's
-- own sqlx migrations, which must stay outside that range.

CREATE TABLE IF NOT EXISTS tessera_sessions (
    -- SHA-256 of the session ID; never the ID itself.
    `key` BINARY(32) NOT NULL,
    version BIGINT NOT NULL,
    -- Binary, not VARCHAR: compared byte for byte, with no collation folding
    -- case or padding spaces, so no two user IDs ever share sessions.
    user_id BLOB NULL,
    -- SessionData::to_json() bytes, kept verbatim: a JSON column would
    -- reorder keys and normalise numbers, breaking exact round trips.
    data LONGBLOB NOT NULL,
    -- Milliseconds since the Unix epoch, as stamped by the application clock.
    created_at BIGINT NOT NULL,
    last_active BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    -- DeviceInfo::to_json() bytes.
    device BLOB NOT NULL,
    PRIMARY KEY (`key`),
    INDEX tessera_sessions_expires_at (expires_at),
    INDEX tessera_sessions_user_id (user_id(255))
) ENGINE = InnoDB;
