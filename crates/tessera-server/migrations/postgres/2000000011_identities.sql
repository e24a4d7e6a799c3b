-- Version 2000000011: 2000000010 is taken by the throttle migration (hardening).
-- Identities at OpenID Connect providers linked to accounts, keyed by
-- (issuer, subject) and never by email. `email` holds the address only when
-- the provider asserted it verified.
CREATE TABLE IF NOT EXISTS user_identities (
    user_id   BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    issuer    TEXT   NOT NULL,
    subject   TEXT   NOT NULL,
    email     TEXT,
    linked_at BIGINT NOT NULL,
    UNIQUE (issuer, subject)
);
CREATE INDEX IF NOT EXISTS user_identities_user ON user_identities (user_id);
CREATE INDEX IF NOT EXISTS user_identities_email ON user_identities (email);

-- Login flows whose callback was handled: a replayed callback is refused
-- even with its flow cookie.
CREATE TABLE IF NOT EXISTS oidc_consumed_flows (
    flow_id    TEXT   PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
