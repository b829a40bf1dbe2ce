//! Everything that leaves ticketd: templates, building mails, and the outbox
//! worker that delivers queued rows through lettre.

pub mod graph;
pub mod mail;
pub mod templates;
pub mod worker;

/// Tells the delivery workers that something was queued. The mail outbox
/// worker and the chat feed each have their own wake-up, so that neither
/// takes the other's (a `Notify` wakes one waiter).
#[derive(Debug, Default)]
pub struct Wake {
    mail: tokio::sync::Notify,
    chat: tokio::sync::Notify,
}

impl Wake {
    /// A new pair of wake-ups.
    pub fn new() -> Wake {
        Wake::default()
    }

    /// Something was committed that may have queued mail or chat posts.
    pub fn notify_one(&self) {
        self.mail.notify_one();
        self.chat.notify_one();
    }

    /// Waits for the mail outbox worker's wake-up.
    pub async fn mail(&self) {
        self.mail.notified().await
    }

    /// Waits for the chat feed's wake-up.
    pub async fn chat(&self) {
        self.chat.notified().await
    }
}
