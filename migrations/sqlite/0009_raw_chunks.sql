-- Raw messages and attachments over 1 MiB: the first MiB stays inline (messages.raw,
-- duplicates.raw, attachments.content), the rest is stored here in pieces of 1 MiB, so that
-- storing a 50 MB mail never copies it whole (each copy the driver and
-- SQLite make is one piece): peak memory stays near the message's own size.
CREATE TABLE raw_chunks (
    kind    TEXT NOT NULL,      -- 'message' (messages.id), 'duplicate' (duplicates.id), 'attachment' (attachments.id)
    row_id  INTEGER NOT NULL,
    seq     INTEGER NOT NULL,   -- 1, 2, …; the inline part is piece 0
    data    BLOB NOT NULL,
    PRIMARY KEY (kind, row_id, seq)
);
