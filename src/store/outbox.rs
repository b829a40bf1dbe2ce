//! The mail outbox: claiming due mails with a lease, recording what
//! delivery did, and its counts.

use super::*;

/// A queued mail claimed for delivery.
#[derive(Debug, Clone)]
pub struct DueMail {
    /// Row id.
    pub id: i64,
    /// Ticket id.
    pub ticket_id: Option<i64>,
    /// Envelope sender.
    pub sender: String,
    /// Envelope recipients.
    pub recipients: Vec<String>,
    /// Bytes to send.
    pub raw: Vec<u8>,
    /// Attempts so far.
    pub attempts: i64,
    /// First queued (UTC).
    pub created_at: String,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The server accepted it.
    Sent,
    /// It was for a customer in Discord: posted into their thread instead,
    /// through the chat outbox (queued in the same transaction).
    Chat {
        /// The intake channel's configured name.
        channel: String,
        /// The chat outbox body (kind `customer`).
        body: serde_json::Value,
    },
    /// Try again at `next` (`ts` format).
    Retry {
        /// Why it failed this time.
        error: String,
        /// When to try again.
        next: String,
    },
    /// Given up; noted on the ticket.
    Failed {
        /// Why.
        error: String,
    },
}

impl Store {
    /// The outbox by status, for the metrics: one grouped count over the
    /// `(status, next_attempt_at)` index, read-only, so a scrape never waits
    /// for the write gate.
    pub async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let mut stats = OutboxStats::default();
        for r in rows {
            let status: String = r.try_get("status")?;
            let n: i64 = r.try_get("n")?;
            match status.as_str() {
                "queued" => stats.queued = n,
                "sending" => stats.sending = n,
                "failed" => stats.failed = n,
                "sent" => stats.sent = n,
                // Cancelled by an admin (`outbox cancel`): never sent.
                "cancelled" => {}
                // A status this build does not know (a newer schema): not
                // a reason to fail the scrape.
                other => tracing::warn!(status = other, rows = n, "unknown outbox status"),
            }
        }
        Ok(stats)
    }

    /// Claims up to `limit` due mails (queued, due now, or `sending` whose
    /// claim expired after a crash), marking them `sending` until `lease`.
    pub async fn claim_due(
        &self,
        now: &str,
        lease_until: &str,
        limit: i64,
    ) -> Result<Vec<DueMail>, StoreError> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "UPDATE outbox SET status = 'sending', next_attempt_at = $2 WHERE id IN
               (SELECT id FROM outbox WHERE status IN ('queued', 'sending') AND next_attempt_at <= $1
                ORDER BY next_attempt_at, id LIMIT $3)
             RETURNING id, ticket_id, sender, recipients, raw, attempts, created_at",
        )
        .bind(now)
        .bind(lease_until)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let rcpts: String = r.try_get("recipients")?;
            out.push(DueMail {
                id: r.try_get("id")?,
                ticket_id: r.try_get("ticket_id")?,
                sender: r.try_get("sender")?,
                recipients: serde_json::from_str(&rcpts)
                    .map_err(|e| StoreError::Corrupt(format!("outbox recipients: {e}")))?,
                raw: r.try_get("raw")?,
                attempts: r.try_get("attempts")?,
                created_at: r.try_get("created_at")?,
            });
        }
        // Oldest first, as they were selected (RETURNING keeps no order).
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    /// The earliest time a queued mail becomes due, if any.
    pub async fn next_due(&self) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE status IN ('queued', 'sending')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Hands mails claimed by a worker that is gone back to the queue. Only
    /// for `run` at start: one daemon per data directory (the hand-over
    /// socket refuses a second), so a row still `sending` then was claimed
    /// by a process that died before recording the outcome; it is sent
    /// again now instead of when its lease ends.
    pub async fn release_leases(&self, now: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE outbox SET status = 'queued', next_attempt_at = $1 WHERE status = 'sending'",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// Forgets automatic-mail records older than `before` (the hourly limit
    /// only looks one hour back); returns how many were removed.
    pub async fn prune_auto_mail_log(&self, before: &str) -> Result<u64, StoreError> {
        self.write_one(sqlx::query("DELETE FROM auto_mail_log WHERE sent_at < $1").bind(before))
            .await
    }

    /// Records what became of delivery attempts, all in one transaction.
    pub async fn record_deliveries(
        &self,
        list: &[(&DueMail, Delivery)],
        now: &str,
    ) -> Result<(), StoreError> {
        if list.is_empty() {
            return Ok(());
        }
        let mut s = Script::default();
        for (m, d) in list {
            let id = s.arg(m.id);
            // A mail the transport accepted is sent, whatever happened to
            // its row meanwhile; a retry or a failure applies only to a row
            // still being sent, so a late outcome never brings back a row
            // an admin cancelled (`outbox cancel`).
            match d {
                Delivery::Sent => {
                    let at = s.arg(now);
                    s.push(format_args!(
                        "UPDATE outbox SET status = 'sent', attempts = attempts + 1, sent_at = {at}, last_error = NULL WHERE id = {id}"
                    ));
                    s.end();
                }
                Delivery::Chat { channel, body } => {
                    let at = s.arg(now);
                    s.push(format_args!(
                        "UPDATE outbox SET status = 'sent', attempts = attempts + 1, sent_at = {at}, last_error = 'posted in Discord' WHERE id = {id}"
                    ));
                    s.end();
                    queue_chat(&mut s, m.ticket_id, channel, "customer", body, now);
                }
                Delivery::Retry { error, next } => {
                    let (e, n) = (s.arg(error.as_str()), s.arg(next.as_str()));
                    s.push(format_args!(
                        "UPDATE outbox SET status = 'queued', attempts = attempts + 1, last_error = {e}, next_attempt_at = {n} WHERE id = {id} AND status = 'sending'"
                    ));
                    s.end();
                }
                Delivery::Failed { error } => {
                    let e = s.arg(error.as_str());
                    s.push(format_args!(
                        "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = {e} WHERE id = {id} AND status = 'sending'"
                    ));
                    s.end();
                    if let Some(t) = m.ticket_id {
                        let text = format!(
                            "Mail to {} could not be delivered: {error}",
                            m.recipients.join(", ")
                        );
                        articles(&mut s, t, None, &[Article::note(&text)], now);
                        events(&mut s, Some(t), None, &[("delivery-failed", &text)], now);
                    }
                }
            }
        }
        let mut tx = self.begin().await?;
        s.run(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
