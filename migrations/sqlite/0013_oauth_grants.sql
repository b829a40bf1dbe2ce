-- OAuth 2.0 grants, one row per account: `imap:NAME` for a mailbox,
-- `smtp` for the relay. The database, not a file, holds them so that
-- every instance sharing it uses (and rotates) the same grant.
-- A refresh token the provider rotated is written in the same statement as
-- the access token that came with it: losing the new refresh token would
-- kill the grant once the old one is invalidated.
-- Times are `ts` text (UTC, milliseconds, Z). No column is ever logged.
CREATE TABLE oauth_grants (
    account            TEXT PRIMARY KEY,
    -- device code / authorization code grants; NULL for client credentials
    refresh_token      TEXT,
    access_token       TEXT,
    access_expires_at  TEXT,
    scope              TEXT,
    last_refresh_at    TEXT,
    -- why the last refresh failed (the provider's error code and text,
    -- never a token); NULL after a success
    last_error         TEXT,
    -- `permanent` (a new login is needed) or `temporary`
    last_error_kind    TEXT,
    refresh_count      BIGINT NOT NULL DEFAULT 0,
    updated_at         TEXT NOT NULL
);
