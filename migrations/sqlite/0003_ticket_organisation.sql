-- The customer organisation a ticket belongs to (the directory's id; the
-- directory itself is configuration: customers/*.toml).
ALTER TABLE tickets ADD COLUMN organisation TEXT;
-- Marks for staff, comma-separated: unverified (an unknown sender),
-- over-quota (beyond the plan's cases per quarter).
ALTER TABLE tickets ADD COLUMN flags TEXT;
-- (organisation, created_at): a plan's cases per quarter are counted by it.
CREATE INDEX tickets_organisation ON tickets(organisation, created_at);
