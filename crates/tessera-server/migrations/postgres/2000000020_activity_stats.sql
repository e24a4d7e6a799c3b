-- Hourly activity counters for `tessera sessions stats`. `hour` is the
-- start of the hour in seconds since the Unix epoch; instances add into the
-- same row. `active_sessions` is the last sample in the hour, where the
-- session store can count cheaply (NULL otherwise).
CREATE TABLE IF NOT EXISTS activity_stats (
    hour             BIGINT PRIMARY KEY,
    sessions_created BIGINT NOT NULL DEFAULT 0,
    logins           BIGINT NOT NULL DEFAULT 0,
    login_failures   BIGINT NOT NULL DEFAULT 0,
    active_sessions  BIGINT
);
