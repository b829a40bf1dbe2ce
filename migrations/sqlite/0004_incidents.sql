-- One ticket per monitoring incident: the key is the organisation, host and
-- service of an alert; a repeat counts here instead of opening a ticket.
CREATE TABLE incidents (
    key           TEXT PRIMARY KEY,
    ticket_id     INTEGER NOT NULL REFERENCES tickets(id),
    state         TEXT NOT NULL,          -- the last alert's state
    problem       INTEGER NOT NULL,       -- 1 while the problem is open
    occurrences   INTEGER NOT NULL,       -- problem alerts so far
    last_text     TEXT NOT NULL,
    last_at       TEXT NOT NULL,
    recovered_at  TEXT                    -- the last recovery, for the flap window
);
CREATE INDEX incidents_ticket ON incidents(ticket_id);
