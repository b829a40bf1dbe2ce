//! Everything that leaves ticketd: templates, building mails, and the outbox
//! worker that delivers queued rows through lettre.

pub mod mail;
pub mod templates;
pub mod worker;
