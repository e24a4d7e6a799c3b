-- Failed-login counters shared by every instance using this database:
-- `account:<user name key>` and `ip:<address or IPv6 /64>`.
CREATE TABLE IF NOT EXISTS throttle (
    key           TEXT   PRIMARY KEY,
    failures      BIGINT NOT NULL,
    blocked_until BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
