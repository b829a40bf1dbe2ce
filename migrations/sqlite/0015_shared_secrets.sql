-- Secrets every process of a desk shares, kept with the data they protect:
-- the MAC key of our Message-IDs (name 'message-id'), so that any process
-- (several `run` instances, `ingest`) verifies any other's ids. The first
-- value stored wins; an install from before keeps its key file's value.
CREATE TABLE shared_secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    created_at TEXT NOT NULL
);
