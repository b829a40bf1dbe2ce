-- ticketd schema, SQLite. Portable SQL: the PostgreSQL migration mirrors it.
-- Times are UTC, RFC 3339 text with a 'Z' ("2026-11-22T21:15:00.123Z"), so
-- they sort as text on both backends.

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

CREATE TABLE tickets (
    id               INTEGER PRIMARY KEY,
    number           TEXT NOT NULL UNIQUE,
    subject          TEXT NOT NULL,
    status           TEXT NOT NULL,
    severity         INTEGER NOT NULL,
    severity_rule    TEXT,
    requester        TEXT NOT NULL,
    requester_name   TEXT,
    linked_number    TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX tickets_requester ON tickets(requester);

-- Every raw message received, whole, with the decision it got.
CREATE TABLE messages (
    id           INTEGER PRIMARY KEY,
    dedupe_key   TEXT NOT NULL UNIQUE,
    message_id   TEXT,
    sha256       TEXT NOT NULL,
    size         BIGINT NOT NULL,
    raw          BLOB NOT NULL,
    source       TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    action       TEXT NOT NULL,
    kind         TEXT,
    reason       TEXT,
    ticket_id    INTEGER REFERENCES tickets(id)
);
CREATE INDEX messages_ticket ON messages(ticket_id);
CREATE INDEX messages_action ON messages(action);

-- A second delivery of a stored message; its bytes are kept when they differ.
CREATE TABLE duplicates (
    id           INTEGER PRIMARY KEY,
    original_id  INTEGER NOT NULL REFERENCES messages(id),
    sha256       TEXT NOT NULL,
    raw          BLOB,
    source       TEXT NOT NULL,
    received_at  TEXT NOT NULL
);
CREATE INDEX duplicates_original ON duplicates(original_id);

CREATE TABLE articles (
    id           INTEGER PRIMARY KEY,
    ticket_id    INTEGER NOT NULL REFERENCES tickets(id),
    direction    TEXT NOT NULL,          -- in | out | note
    kind         TEXT NOT NULL,          -- mail | auto-reply | bounce | confirmation | note
    from_addr    TEXT,
    from_name    TEXT,
    to_addrs     TEXT,
    cc_addrs     TEXT,
    subject      TEXT,
    message_id   TEXT,
    body         TEXT NOT NULL,
    message_ref  INTEGER REFERENCES messages(id),
    outbox_ref   INTEGER,
    created_at   TEXT NOT NULL
);
CREATE INDEX articles_ticket ON articles(ticket_id, id);

CREATE TABLE attachments (
    id            INTEGER PRIMARY KEY,
    article_id    INTEGER NOT NULL REFERENCES articles(id),
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    content       BLOB NOT NULL
);
CREATE INDEX attachments_article ON attachments(article_id);

-- Every Message-ID we stored or sent for a ticket: threading by reference.
CREATE TABLE thread_ids (
    message_id  TEXT PRIMARY KEY,
    ticket_id   INTEGER NOT NULL REFERENCES tickets(id)
);

CREATE TABLE participants (
    ticket_id  INTEGER NOT NULL REFERENCES tickets(id),
    address    TEXT NOT NULL,
    PRIMARY KEY (ticket_id, address)
);

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    ticket_id        INTEGER REFERENCES tickets(id),
    kind             TEXT NOT NULL,
    recipients       TEXT NOT NULL,      -- JSON array of addresses
    sender           TEXT NOT NULL,
    subject          TEXT NOT NULL,
    message_id       TEXT NOT NULL UNIQUE,
    raw              BLOB NOT NULL,
    status           TEXT NOT NULL,      -- queued | sending | sent | failed
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    sent_at          TEXT
);
CREATE INDEX outbox_due ON outbox(status, next_attempt_at);
CREATE INDEX outbox_ticket ON outbox(ticket_id);

-- Automatic mails per recipient, for the hourly limit.
CREATE TABLE auto_mail_log (
    recipient  TEXT NOT NULL,
    sent_at    TEXT NOT NULL
);
CREATE INDEX auto_mail_log_rcpt ON auto_mail_log(recipient, sent_at);

-- Delivery failures reported by bounces, against the recipient.
CREATE TABLE bounces (
    id           INTEGER PRIMARY KEY,
    ticket_id    INTEGER REFERENCES tickets(id),
    message_ref  INTEGER NOT NULL REFERENCES messages(id),
    recipient    TEXT NOT NULL,
    action       TEXT,
    status       TEXT,
    diagnostic   TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX bounces_recipient ON bounces(recipient);

-- The audit trail: who/what changed which ticket, and why.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY,
    ticket_id    INTEGER REFERENCES tickets(id),
    message_ref  INTEGER REFERENCES messages(id),
    kind         TEXT NOT NULL,
    detail       TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX events_ticket ON events(ticket_id);
