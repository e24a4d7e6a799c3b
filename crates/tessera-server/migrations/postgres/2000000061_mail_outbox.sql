-- The mail outbox: a request only adds a row; background workers (on any
-- number of instances) send it. payload is the JSON of an intent
-- (tessera_auth::Mail) and holds no secret: links and codes are issued
-- when the message is sent.
--
-- A worker claims a row by setting lease_until with a conditional UPDATE
-- (the row must be unleased or its lease over), so one worker sends it;
-- a worker that dies mid-send leaves a lease that runs out and the row is
-- sent again later. A failed attempt sets next_attempt_at further out
-- each time; after max attempts failed_at and last_error record the end.
CREATE TABLE IF NOT EXISTS mail_outbox (
    id              BIGSERIAL PRIMARY KEY,
    payload         TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    lease_until     BIGINT,
    sent_at         BIGINT,
    failed_at       BIGINT,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS mail_outbox_due ON mail_outbox (next_attempt_at) WHERE sent_at IS NULL AND failed_at IS NULL;
