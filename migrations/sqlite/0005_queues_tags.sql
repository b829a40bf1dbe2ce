-- The queue a rule put a ticket in (staff work queue by queue), and the
-- tags rules gave it; a tag is a row, so that tickets are found by tag
-- through an index and staff can add or remove one.
ALTER TABLE tickets ADD COLUMN queue TEXT;
CREATE INDEX tickets_queue ON tickets(queue, status);
CREATE TABLE ticket_tags (
    ticket_id  INTEGER NOT NULL REFERENCES tickets(id),
    tag        TEXT NOT NULL,
    PRIMARY KEY (ticket_id, tag)
);
CREATE INDEX ticket_tags_tag ON ticket_tags(tag);
