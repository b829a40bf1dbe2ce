-- SLA clocks. The clock itself is computed from the ticket's events (the
-- pure sla::clock); the ticket keeps its outcome for lists, metrics and the
-- digest: the SLA state (running | paused | met | breached | none), the
-- nearest due instant of a running target and which target that is.
ALTER TABLE tickets ADD COLUMN sla_state TEXT;
ALTER TABLE tickets ADD COLUMN sla_due_at TEXT;
ALTER TABLE tickets ADD COLUMN sla_target TEXT;
CREATE INDEX tickets_sla ON tickets(sla_state, sla_due_at);
-- Open tickets by SLA state (metrics, digest) are counted from this index
-- alone, without reading the ticket rows.
CREATE INDEX tickets_status_sla ON tickets(status, sla_state, sla_due_at);
-- Reminder timers (kind sla-reminder, key "s<severity>:<target>:<percent>"
-- or "s<severity>:update:<cycle>:<percent>") carry the instant the SLA
-- arithmetic gave (planned_at) besides the instant they fire (due_at):
-- quiet hours move due_at to the next opening, and a reminder that fires
-- well after planned_at is marked late. audiences: comma-separated names.
ALTER TABLE timers ADD COLUMN planned_at TEXT;
ALTER TABLE timers ADD COLUMN audiences TEXT;
-- A stage of a ticket fires once: its row stays as the record.
CREATE UNIQUE INDEX timers_once ON timers(ticket_id, kind, key) WHERE kind = 'sla-reminder';
-- Chat notifications wait here for the chat adapter, like mail in the
-- outbox: a chat outage delays them and loses none.
CREATE TABLE chat_outbox (
    id               INTEGER PRIMARY KEY,
    ticket_id        INTEGER REFERENCES tickets(id),
    channel          TEXT NOT NULL,        -- the configured channel name
    kind             TEXT NOT NULL,        -- reminder | digest | …
    body             TEXT NOT NULL,        -- JSON: what to post
    status           TEXT NOT NULL,        -- queued | sent | failed
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    sent_at          TEXT
);
CREATE INDEX chat_outbox_due ON chat_outbox(status, next_attempt_at);
