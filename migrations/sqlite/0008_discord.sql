-- Staff in Discord.
--
-- Who works a ticket: `claim`/`assign` set it (a key like "discord:123"),
-- with the name shown in lists.
ALTER TABLE tickets ADD COLUMN assignee TEXT;
ALTER TABLE tickets ADD COLUMN assignee_name TEXT;
CREATE INDEX tickets_assignee ON tickets(assignee, status);

-- The Discord threads of a ticket: role 'staff' is the thread in a staff
-- channel its notifications go to, created with the first one; role
-- 'intake' the customer's thread in the intake channel (a thread started
-- from a message has that message's id). `created` = 0: the thread id is
-- known but Discord has not been asked to start it yet.
CREATE TABLE chat_threads (
    ticket_id   INTEGER NOT NULL REFERENCES tickets(id),
    role        TEXT NOT NULL,            -- staff | intake
    channel_id  TEXT NOT NULL,            -- the parent channel
    thread_id   TEXT NOT NULL,
    created     INTEGER NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (ticket_id, role)
);
CREATE UNIQUE INDEX chat_threads_thread ON chat_threads(thread_id);

-- A chat post is delivered in up to two steps (post, then start the
-- ticket's thread from it); the posted message's id is kept between them
-- so that a retry does not post twice.
ALTER TABLE chat_outbox ADD COLUMN posted_id TEXT;
-- A ticket's posts go out in order: the next waits for the older one.
CREATE INDEX chat_outbox_ticket ON chat_outbox(ticket_id, status, id);

-- Discord messages and interactions already handled: a gateway that
-- replays events after a resume does not run a command twice.
CREATE TABLE chat_seen (
    id       TEXT PRIMARY KEY,
    seen_at  TEXT NOT NULL
);
