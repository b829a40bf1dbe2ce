//! What arrives from the gateway: a typed command (run by `commands.rs`),
//! or in the intake channel or a ticket's intake thread a message taken
//! in like mail.

use super::commands::usage_answer;
use super::{ChatApi, Desk, InMessage, REFUSAL};
use crate::chat::command;
use crate::domain::TicketNumber;
use crate::service::Incoming;
use crate::sources::discord as intake_src;
use crate::store::chat::ChatTicket;
use crate::store::{ts, StoreError};
use jiff::Timestamp;

impl<A: ChatApi> Desk<A> {
    /// Handles a message from the gateway: a typed command, or in the
    /// intake channel a customer's message. Each message once.
    pub async fn on_message(&self, m: &InMessage) -> Result<(), StoreError> {
        if m.author.bot || m.guild != Some(self.cfg.guild) {
            return Ok(());
        }
        let text = m.content.trim_start();
        let command = text
            .strip_prefix(self.cfg.prefix.as_str())
            .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace));
        let in_thread = self.store.thread_ticket(m.channel).await?;
        let in_intake = self.intake_channel() == Some(m.channel)
            || in_thread.as_ref().is_some_and(|(_, r)| r == "intake");
        if command.is_none() && !in_intake {
            return Ok(());
        }
        if !self
            .store
            .chat_seen(&format!("m{}", m.id), &ts(Timestamp::now()))
            .await?
        {
            tracing::debug!(message = m.id, "Discord message seen before");
            return Ok(());
        }
        if let Some(rest) = command {
            let thread = in_thread
                .as_ref()
                .map(|(t, _)| TicketNumber(t.number.clone()));
            if !self.is_staff(&m.author) {
                tracing::info!(user = m.author.id, "ticket command refused: no staff role");
                if let Err(e) = self.api.direct(m.author.id, REFUSAL).await {
                    tracing::warn!(error = %e, "refusal not delivered");
                }
                return Ok(());
            }
            let ctx = command::Context {
                thread_ticket: thread.as_ref(),
                number_prefix: &self.number_prefix,
            };
            let answer = match command::parse(rest, &ctx) {
                Ok(c) => self.run(c, &m.author, &m.mentions, m.id).await,
                Err(e) => usage_answer(&e),
            };
            if let Err(e) = self.api.post(m.channel, &answer.post, Some(m.id)).await {
                tracing::warn!(error = %e, "command answer not posted");
            }
            return Ok(());
        }
        self.intake_message(m, in_thread.map(|(t, _)| t)).await
    }

    /// A customer's (or a staff member's) message in the intake channel
    /// or a ticket's intake thread, taken in like mail.
    async fn intake_message(
        &self,
        m: &InMessage,
        thread: Option<ChatTicket>,
    ) -> Result<(), StoreError> {
        let staff = self.is_staff(&m.author);
        if thread.is_none() && staff {
            // Staff talking in the intake channel open no tickets.
            return Ok(());
        }
        // A thread's id is no secret in a public channel, as a Message-ID
        // is: a member who is not on the ticket writes a message of their
        // own (a ticket of their own), not a reply on someone else's.
        let thread = match thread {
            Some(t)
                if !staff
                    && !self
                        .store
                        .is_participant(t.id, &intake_src::address(m.author.id, false))
                        .await? =>
            {
                tracing::info!(message = m.id, ticket = %t.number, "Discord member not on the ticket: taken as a message of their own");
                None
            }
            other => other,
        };
        let to = match (&thread, staff) {
            (Some(t), true) => t.requester.clone(),
            _ => self.desk_address.clone(),
        };
        let attachments: Vec<(&str, &str)> = m
            .attachments
            .iter()
            .map(|(n, u)| (n.as_str(), u.as_str()))
            .collect();
        let raw = intake_src::to_mail(&intake_src::ChatMessage {
            id: m.id,
            channel: m.channel,
            thread: thread.as_ref().map(|_| m.channel),
            author: m.author.id,
            author_name: &m.author.display,
            staff,
            content: &m.content,
            attachments,
            sent: m.sent,
            to: &to,
            subject: thread.as_ref().map(|t| t.subject.as_str()),
        });
        let raw = match raw {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(message = m.id, error = %e, "Discord message not taken in");
                return Ok(());
            }
        };
        let now = Timestamp::now();
        // The message arrived when Discord says it was sent.
        let outcome = self
            .ingest_one(raw, format!("discord:{}", m.channel), Some(m.sent), now)
            .await?;
        tracing::info!(message = m.id, action = outcome.action.as_str(), ticket = ?outcome.ticket, "Discord message taken in");
        self.wake.notify_one();
        if let (None, Some(n), Some(ch)) = (&thread, &outcome.ticket, self.intake_channel()) {
            // The thread to start from this message, unless the ticket
            // already has one (the message was appended to it).
            self.store
                .first_intake_thread(n.as_str(), ch, m.id, now)
                .await?;
        }
        Ok(())
    }

    /// Takes one message in through the intake, as every source does;
    /// `arrived` is when it was sent, if known.
    pub(super) async fn ingest_one(
        &self,
        raw: Vec<u8>,
        source: String,
        arrived: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<crate::service::Outcome, StoreError> {
        let items = [Incoming {
            raw,
            source,
            arrived,
        }];
        self.intake
            .ingest_batch(&self.store, &items, now)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(StoreError::Corrupt("the intake returned nothing".into())))
    }
}
