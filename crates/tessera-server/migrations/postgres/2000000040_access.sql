-- Who may enter: groups of users, invitations, owners of products.
--
-- A group exists while it has members: a row per (user, group), the group
-- named by its lowercase name. Deleting the user removes the memberships.
-- `source` is '' for memberships given by an administrator (or an
-- invitation), 'oidc:<provider id>' for those read from a provider's groups
-- claim, which each login through that provider replaces.
CREATE TABLE IF NOT EXISTS user_groups (
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_name TEXT   NOT NULL,
    added_at   BIGINT NOT NULL,
    source     TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, group_name)
);
CREATE INDEX IF NOT EXISTS user_groups_group ON user_groups (group_name);

-- Invitations to register (accounts.registration = "invite"). Only the
-- SHA-256 of the 256-bit token is stored; `used_at` is set by one
-- conditional UPDATE, so an invitation creates at most one account.
-- `group_names` is a comma-separated list of group names given to that account.
CREATE TABLE IF NOT EXISTS invitations (
    token_hash TEXT   PRIMARY KEY,
    group_names TEXT  NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    used_by    BIGINT REFERENCES users (id) ON DELETE SET NULL
);

-- Products get an owner. Products made before owners existed have none:
-- only members of the `admin` group may change them. A deleted account's
-- products stay, owned by nobody.
ALTER TABLE products ADD COLUMN IF NOT EXISTS owner_id BIGINT REFERENCES users (id) ON DELETE SET NULL;
