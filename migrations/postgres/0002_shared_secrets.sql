-- Pair of migrations/sqlite/0015_shared_secrets.sql: secrets every process
-- of a desk shares (the MAC key of our Message-IDs, name 'message-id');
-- the first value stored wins.
CREATE TABLE shared_secrets (
    name text PRIMARY KEY,
    value bytea NOT NULL,
    created_at timestamptz NOT NULL
);
