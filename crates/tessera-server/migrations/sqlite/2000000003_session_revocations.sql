-- Per-user "valid after" marks: sealed cookie sessions issued at or before
-- the mark are refused (logout, password change, log out everywhere).
CREATE TABLE IF NOT EXISTS session_revocations (
    user_id     TEXT    PRIMARY KEY,
    valid_after INTEGER NOT NULL
);
