//! The chat feed: ticket events since the cursor become chat outbox rows,
//! each routed to the channel for the ticket's severity.

use super::{ChatApi, Desk};
use crate::chat::notify;
use crate::store::chat::{ChatTicket, FeedEvent, NewChatPost};
use crate::store::{ts, StoreError};
use jiff::Timestamp;
use serde_json::json;

impl<A: ChatApi> Desk<A> {
    /// Queues chat posts for ticket events since the cursor; returns how
    /// many were queued.
    pub async fn feed(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut queued = 0;
        let mut from = self.store.chat_cursor().await?;
        loop {
            let (events, to) = self.store.chat_events(from, 500).await?;
            if to == from {
                return Ok(queued);
            }
            let posts: Vec<NewChatPost> =
                events.iter().filter_map(|e| self.event_post(e)).collect();
            if self.store.chat_enqueue(from, to, &posts, &ts(now)).await? {
                queued += posts.len();
                from = to;
            } else {
                // Moved by someone else meanwhile: go on from there.
                from = self.store.chat_cursor().await?;
            }
        }
    }

    fn event_post(&self, e: &FeedEvent) -> Option<NewChatPost> {
        let kind = notify::feed_kind(
            &e.kind,
            &e.detail,
            e.staff_in_message,
            e.message_kind.as_deref(),
            e.text.is_some(),
        )?;
        let t = &e.ticket;
        let level = u8::try_from(t.severity).unwrap_or(4);
        let channel = self.cfg.channel_for(level)?.to_string();
        let mut body = self.ticket_body(t);
        body["kind"] = json!(kind);
        body["detail"] = json!(e.detail);
        if let Some(text) = &e.text {
            body["text"] = json!(notify::clip(text.trim(), 1500));
        }
        Some(NewChatPost {
            ticket_id: Some(t.id),
            channel,
            kind: kind.to_string(),
            body,
        })
    }

    /// What every post about a ticket shows.
    pub(super) fn ticket_body(&self, t: &ChatTicket) -> serde_json::Value {
        let directory = self.intake.customers();
        let customer = t.organisation.as_deref().map(|o| {
            directory
                .get(o)
                .map(|org| org.name.clone())
                .unwrap_or_else(|| o.to_string())
        });
        let due = match t.sla_state.as_deref() {
            Some("running") | Some("breached") => t.sla_due_at.clone(),
            _ => None,
        };
        json!({
            "ticket": t.number,
            "subject": t.subject,
            "severity": t.severity,
            "status": t.status,
            "customer": customer,
            "requester": t.requester,
            "requester_name": t.requester_name,
            "due": due,
            "target": t.sla_target,
            "sla_state": t.sla_state,
            "assignee": t.assignee_name,
        })
    }
}
