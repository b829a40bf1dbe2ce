-- Where the customer asked answers to go: the Reply-To of the requester's
-- latest mail on the ticket (lower case), NULL when it had none (answers go
-- to the requester). Every mail to the customer on the ticket uses it.
ALTER TABLE tickets ADD COLUMN reply_to TEXT;
-- `tickets show` lists the tickets that refer to one (linked_number).
CREATE INDEX tickets_linked ON tickets(linked_number) WHERE linked_number IS NOT NULL;
