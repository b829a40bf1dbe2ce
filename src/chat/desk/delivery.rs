//! Delivery of the chat outbox.
//!
//! Delivery of a chat outbox row:
//! - a post about a ticket goes into the ticket's staff thread when that
//!   thread is in the post's channel;
//! - the first post about a ticket is posted at the top of its channel
//!   (with the channel's role mention for a new ticket) and the ticket's
//!   thread is started from it; the posted message's id is kept before
//!   the thread is started, so a retry does not post twice;
//! - a post for another channel (an on-call reminder) goes to the top of
//!   that channel, linking the thread;
//! - a `customer` post (a mail to a Discord member) goes into the
//!   customer's thread in the intake channel, started on first use.
//!
//! A failed post is retried with backoff until `retry_hours`; later rows
//! of the same ticket wait behind it, so a thread reads in order.

use super::{ChatApi, ChatError, Desk};
use crate::chat::notify;
use crate::sources::discord as intake_src;
use crate::store::chat::{ChatPost, ChatThread};
use crate::store::{ts, StoreError};
use jiff::Timestamp;

impl<A: ChatApi> Desk<A> {
    /// Delivers the chat posts due now (at most one per ticket: the next
    /// waits for it); returns how many were handled.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let now = Timestamp::now();
        let due = self.store.chat_due(&ts(now), 50).await?;
        for p in &due {
            match self.deliver(p).await {
                Ok(()) => self.store.chat_sent(p.id, &ts(Timestamp::now())).await?,
                Err(e) => {
                    let next = match &e {
                        ChatError::Temporary(_) => crate::outbound::worker::retry_at(
                            &p.created_at,
                            p.attempts,
                            now,
                            self.retry_for,
                            self.retry_base,
                        ),
                        ChatError::Permanent(_) => None,
                    };
                    match next {
                        Some(n) => {
                            tracing::info!(chat = p.id, error = %e, next = %n, "chat post deferred")
                        }
                        None => tracing::warn!(chat = p.id, error = %e, "chat post failed"),
                    }
                    self.store
                        .chat_failed(p.id, &e.to_string(), next.map(ts).as_deref())
                        .await?;
                }
            }
        }
        Ok(due.len())
    }

    async fn deliver(&self, p: &ChatPost) -> Result<(), ChatError> {
        let channel = self.cfg.channels.get(&p.channel).ok_or_else(|| {
            ChatError::Permanent(format!("channel {:?} is not configured", p.channel))
        })?;
        let store_err = |e: StoreError| ChatError::Temporary(format!("database: {e}"));
        let Some(t) = &p.ticket else {
            self.api
                .post(channel.id, &notify::render(&p.body, channel.mention), None)
                .await?;
            return Ok(());
        };
        if p.kind == "customer" {
            let post = notify::render(&p.body, None);
            let Some(th) = self
                .store
                .chat_thread(t.id, "intake")
                .await
                .map_err(store_err)?
            else {
                // The thread is recorded right after the customer's message
                // is stored; a ticket that has none (a member who wrote
                // into someone else's thread got a ticket of their own)
                // is answered by direct message.
                let queued: Timestamp = p.created_at.parse().unwrap_or_else(|_| Timestamp::now());
                if Timestamp::now().duration_since(queued) < jiff::SignedDuration::from_secs(10) {
                    return Err(ChatError::Temporary(
                        "the customer's thread is not known yet".into(),
                    ));
                }
                let user = intake_src::user_of(&t.requester).ok_or_else(|| {
                    ChatError::Permanent(format!("{} is no Discord member", t.requester))
                })?;
                return self.api.direct(user, &post.content).await;
            };
            let thread = if th.created {
                th.thread_id
            } else {
                let made = self
                    .api
                    .start_thread(
                        th.channel_id,
                        th.thread_id,
                        &notify::thread_name(&t.number, &t.subject),
                    )
                    .await?;
                let started = ChatThread {
                    thread_id: made,
                    created: true,
                    ..th
                };
                self.store
                    .set_chat_thread(t.id, "intake", &started, Timestamp::now())
                    .await
                    .map_err(store_err)?;
                made
            };
            self.api.post(thread, &post, None).await?;
            return Ok(());
        }
        let mut post = notify::render(&p.body, channel.mention);
        let thread = self
            .store
            .chat_thread(t.id, "staff")
            .await
            .map_err(store_err)?;
        match thread {
            Some(th) if th.channel_id == channel.id => {
                self.api.post(th.thread_id, &post, None).await?;
            }
            Some(th) => {
                post.content = format!("{} <#{}>", post.content, th.thread_id)
                    .trim()
                    .to_string();
                self.api.post(channel.id, &post, None).await?;
            }
            None => {
                let posted = match p.posted_id {
                    Some(m) => m,
                    None => {
                        let m = self.api.post(channel.id, &post, None).await?;
                        self.store.chat_posted(p.id, m).await.map_err(store_err)?;
                        m
                    }
                };
                let made = self
                    .api
                    .start_thread(
                        channel.id,
                        posted,
                        &notify::thread_name(&t.number, &t.subject),
                    )
                    .await?;
                self.store
                    .set_chat_thread(
                        t.id,
                        "staff",
                        &ChatThread {
                            channel_id: channel.id,
                            thread_id: made,
                            created: true,
                        },
                        Timestamp::now(),
                    )
                    .await
                    .map_err(store_err)?;
            }
        }
        Ok(())
    }
}
