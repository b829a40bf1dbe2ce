-- The customer organisation a ticket belongs to (the directory's id; the
-- directory itself is configuration: customers/*.toml).
ALTER TABLE tickets ADD COLUMN organisation TEXT;
CREATE INDEX tickets_organisation ON tickets(organisation);
