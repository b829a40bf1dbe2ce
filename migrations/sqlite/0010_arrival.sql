-- When a message arrived, besides when ticketd stored it (issue 14, item 1).
-- messages.received_at stays the commit instant; messages.arrived_at is the
-- best arrival the source knew (IMAP INTERNALDATE, the Maildir file's
-- delivery time, the start of `ticketd ingest`, the Discord message's time;
-- else the top Received header; see src/ingest/arrival.rs).
-- tickets.arrived_at is the arrival of the message that opened the ticket:
-- the receipt timestamp customers are told and where SLA clocks start.
-- Rows from before keep their old meaning: arrival = the time they were stored.
ALTER TABLE messages ADD COLUMN arrived_at TEXT;
UPDATE messages SET arrived_at = received_at;
ALTER TABLE tickets ADD COLUMN arrived_at TEXT;
UPDATE tickets SET arrived_at = created_at;
