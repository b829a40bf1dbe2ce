-- Where each Microsoft Graph mailbox's folder has been read up to: the
-- `@odata.deltaLink` of the last complete delta round. It is written only
-- after every message of the round is stored, so a crash re-reads from the
-- link before (dedupe makes a re-read message a duplicate). A link Graph
-- no longer knows (410 Gone, syncStateNotFound) is replaced by a fresh
-- delta round. The link is an opaque URL with a state token, no credential.
CREATE TABLE graph_cursors (
    mailbox     TEXT NOT NULL,
    folder      TEXT NOT NULL,
    delta_link  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (mailbox, folder)
);
