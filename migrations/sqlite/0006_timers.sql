-- Timers are rows: something due at a time, fired by the daemon's timer
-- task (and after a restart, whatever fell due while it was down). Kinds:
-- recovery-hold (a monitoring recovery resolves its ticket once the
-- hold-down has passed without the problem coming back).
CREATE TABLE timers (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    ticket_id   INTEGER REFERENCES tickets(id),
    key         TEXT,                 -- recovery-hold: the incident key
    due_at      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    fired_at    TEXT,
    outcome     TEXT
);
CREATE INDEX timers_due ON timers(due_at) WHERE fired_at IS NULL;
