-- Failed-login counters shared by every instance using this database:
-- `account:<user name key>` and `ip:<address or IPv6 /64>`.
CREATE TABLE IF NOT EXISTS throttle (
    key           TEXT    PRIMARY KEY,
    failures      INTEGER NOT NULL,
    blocked_until INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
