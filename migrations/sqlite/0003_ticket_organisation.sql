-- The customer organisation a ticket belongs to (the directory's id; the
-- directory itself is configuration: customers/*.toml).
ALTER TABLE tickets ADD COLUMN organisation TEXT;
-- (organisation, created_at): a plan's cases per quarter are counted by it.
CREATE INDEX tickets_organisation ON tickets(organisation, created_at);
