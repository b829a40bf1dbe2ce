-- The language (de, en) of the mails ticketd writes to the ticket's
-- customer, chosen when the ticket opened: later mails on it keep it.
-- NULL on tickets from before: the directory's or the desk's language.
ALTER TABLE tickets ADD COLUMN language TEXT;
