-- Where each IMAP mailbox's folder has been read up to: the folder's
-- UIDVALIDITY and the highest UID below which every message is stored.
-- A new UIDVALIDITY means the UIDs were renumbered: the folder is read again
-- from the start (dedupe makes that harmless).
CREATE TABLE imap_cursors (
    mailbox      TEXT NOT NULL,
    folder       TEXT NOT NULL,
    uidvalidity  BIGINT NOT NULL,
    last_uid     BIGINT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (mailbox, folder)
);
