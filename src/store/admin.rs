//! What the admin's command line reads and changes besides staff actions:
//! tickets listed by filter, a ticket's original mails and attachments
//! byte for byte, outbox rows retried or cancelled, quarantined messages
//! shown and released.

use super::{
    events, summary_from_row, ts, AttachmentInfo, QuarantineView, Script, Store, StoreError,
    TicketSummary, SUMMARY_SELECT,
};
use sqlx::{Row, SqliteConnection};

/// Why an admin command changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// There is no such row (or it does not belong to the ticket named).
    #[error("{0}")]
    NotFound(String),
    /// The row is in a state the command does not apply to.
    #[error("{0}")]
    Refused(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AdminError {
    fn from(e: sqlx::Error) -> Self {
        AdminError::Store(StoreError::Db(e))
    }
}

/// Which tickets `tickets list` shows; an empty list or `None` does not
/// filter.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    /// Any of these statuses (`new`, `open`, …).
    pub statuses: Vec<String>,
    /// Any of these severities (1–4).
    pub severities: Vec<i64>,
    /// This organisation (directory id).
    pub organisation: Option<String>,
    /// Created at or after this instant (`ts` format).
    pub since: Option<String>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// Which outbox rows `outbox retry` makes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryWhich {
    /// This row: queued (waiting for its next attempt), failed or
    /// cancelled.
    One(i64),
    /// Every failed row and every queued row waiting for a later attempt.
    All,
}

/// A mail of a ticket, as stored.
#[derive(Debug, Clone)]
pub struct ArticleMail {
    /// The article's id.
    pub article: i64,
    /// `in` (the message as received), `out` (the mail as queued) or
    /// `note` (a message kept on the ticket as a note).
    pub direction: String,
    /// The bytes, exactly as received or sent.
    pub raw: Vec<u8>,
}

impl Store {
    /// Tickets by `f`, newest first.
    pub async fn list_tickets_by(
        &self,
        f: &TicketFilter,
    ) -> Result<Vec<TicketSummary>, StoreError> {
        let mut sql = format!("{SUMMARY_SELECT} WHERE 1 = 1");
        let mut n = 0;
        let mut place = |count: usize| -> String {
            let list: Vec<String> = (0..count)
                .map(|_| {
                    n += 1;
                    format!("${n}")
                })
                .collect();
            list.join(", ")
        };
        if !f.statuses.is_empty() {
            sql.push_str(&format!(" AND t.status IN ({})", place(f.statuses.len())));
        }
        if !f.severities.is_empty() {
            sql.push_str(&format!(
                " AND t.severity IN ({})",
                place(f.severities.len())
            ));
        }
        if f.organisation.is_some() {
            sql.push_str(&format!(" AND t.organisation = {}", place(1)));
        }
        if f.since.is_some() {
            sql.push_str(&format!(" AND t.created_at >= {}", place(1)));
        }
        sql.push_str(&format!(" ORDER BY t.id DESC LIMIT {}", place(1)));
        // Only placeholders were formatted in; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for s in &f.statuses {
            q = q.bind(s.clone());
        }
        for s in &f.severities {
            q = q.bind(*s);
        }
        if let Some(o) = &f.organisation {
            q = q.bind(o.clone());
        }
        if let Some(s) = &f.since {
            q = q.bind(s.clone());
        }
        let rows = q.bind(f.limit).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(summary_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Attachment `id` of ticket `number`: what is listed of it and its
    /// decoded content, whole.
    pub async fn ticket_attachment(
        &self,
        number: &str,
        id: i64,
    ) -> Result<(AttachmentInfo, Vec<u8>), AdminError> {
        let row = sqlx::query(
            "SELECT x.filename, x.size, x.content_type FROM attachments x
             JOIN articles a ON a.id = x.article_id JOIN tickets t ON t.id = a.ticket_id
             WHERE x.id = $1 AND t.number = $2",
        )
        .bind(id)
        .bind(number)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| {
            AdminError::NotFound(format!(
                "ticket {number} has no attachment {id} (`tickets show {number}` lists them)"
            ))
        })?;
        let info = AttachmentInfo {
            id,
            filename: row.try_get("filename")?,
            size: row.try_get("size")?,
            content_type: row.try_get("content_type")?,
        };
        let content = self
            .attachment_content(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("attachment {id} has no content")))?;
        if i64::try_from(content.len()).ok() != Some(info.size) {
            return Err(StoreError::Corrupt(format!(
                "attachment {id}: {} bytes stored, {} recorded",
                content.len(),
                info.size
            ))
            .into());
        }
        Ok((info, content))
    }

    /// The mail of article `article` of ticket `number` — without one, of
    /// the ticket's first article that has a mail (the message that
    /// opened it): a received message's raw bytes, or a sent mail as it
    /// was queued.
    pub async fn article_mail(
        &self,
        number: &str,
        article: Option<i64>,
    ) -> Result<ArticleMail, AdminError> {
        let ticket: Option<i64> = sqlx::query_scalar("SELECT id FROM tickets WHERE number = $1")
            .bind(number)
            .fetch_optional(&self.pool)
            .await?;
        let Some(ticket) = ticket else {
            return Err(AdminError::NotFound(format!("no ticket {number}")));
        };
        type Art = (i64, String, String, Option<i64>, Option<i64>);
        let row: Option<Art> = match article {
            Some(a) => sqlx::query_as(
                "SELECT id, direction, kind, message_ref, outbox_ref FROM articles WHERE ticket_id = $1 AND id = $2",
            )
            .bind(ticket)
            .bind(a)
            .fetch_optional(&self.pool)
            .await?,
            None => sqlx::query_as(
                "SELECT id, direction, kind, message_ref, outbox_ref FROM articles
                 WHERE ticket_id = $1 AND (message_ref IS NOT NULL OR outbox_ref IS NOT NULL) ORDER BY id LIMIT 1",
            )
            .bind(ticket)
            .fetch_optional(&self.pool)
            .await?,
        };
        let Some((id, direction, kind, message, outbox)) = row else {
            return Err(AdminError::NotFound(match article {
                Some(a) => format!(
                    "ticket {number} has no article {a} (`tickets show {number}` lists them)"
                ),
                None => format!("ticket {number} has no article with a mail"),
            }));
        };
        let raw = match (message, outbox) {
            (Some(m), _) => self.raw_message(m).await?,
            (None, Some(o)) => {
                sqlx::query_scalar::<_, Vec<u8>>("SELECT raw FROM outbox WHERE id = $1")
                    .bind(o)
                    .fetch_optional(&self.pool)
                    .await?
            }
            (None, None) => {
                return Err(AdminError::Refused(format!(
                "article {id} of ticket {number} is a {kind} written on the ticket; it has no mail"
            )))
            }
        };
        let raw = raw.ok_or_else(|| StoreError::Corrupt(format!("article {id}: mail missing")))?;
        Ok(ArticleMail {
            article: id,
            direction,
            raw,
        })
    }

    /// Makes outbox rows due now (`outbox retry`): a failed or cancelled
    /// row is queued again, a queued one waiting for a later attempt is
    /// tried at once; each is recorded on its ticket by `author`. Returns
    /// the rows made due. A row being sent or sent already is refused.
    pub async fn outbox_retry(
        &self,
        which: RetryWhich,
        author: &str,
        now: jiff::Timestamp,
    ) -> Result<Vec<i64>, AdminError> {
        let at = ts(now);
        let mut tx = self.begin().await?;
        let rows: Vec<(i64, Option<i64>, String)> = match which {
            RetryWhich::One(id) => {
                sqlx::query_as(
                    "UPDATE outbox SET status = 'queued', next_attempt_at = $2,
                       last_error = CASE WHEN status = 'cancelled' THEN NULL ELSE last_error END
                     WHERE id = $1 AND status IN ('queued', 'failed', 'cancelled')
                     RETURNING id, ticket_id, recipients",
                )
                .bind(id)
                .bind(&at)
                .fetch_all(&mut *tx)
                .await?
            }
            RetryWhich::All => {
                sqlx::query_as(
                    "UPDATE outbox SET status = 'queued', next_attempt_at = $1
                     WHERE status = 'failed' OR (status = 'queued' AND next_attempt_at > $1)
                     RETURNING id, ticket_id, recipients",
                )
                .bind(&at)
                .fetch_all(&mut *tx)
                .await?
            }
        };
        if let (RetryWhich::One(id), true) = (which, rows.is_empty()) {
            let why = refusal(&mut tx, id, "retried").await?;
            tx.rollback().await?;
            return Err(why);
        }
        let mut s = Script::default();
        for (id, ticket, rcpts) in &rows {
            if ticket.is_some() {
                let text = format!("mail {id} to {} due again now, by {author}", to_list(rcpts));
                events(&mut s, *ticket, None, &[("outbox-retry", &text)], &at);
            }
        }
        s.run(&mut tx).await?;
        tx.commit().await?;
        let mut ids: Vec<i64> = rows.into_iter().map(|(id, _, _)| id).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Cancels outbox row `id` (`outbox cancel`): it is never sent,
    /// stays listed as `cancelled`, and the cancellation is recorded on
    /// its ticket by `author`. A queued or failed row can be cancelled,
    /// and a row whose sending lease ran out (its worker died); a row
    /// being sent at this moment cannot: the attempt may already have
    /// reached the server.
    pub async fn outbox_cancel(
        &self,
        id: i64,
        author: &str,
        now: jiff::Timestamp,
    ) -> Result<(), AdminError> {
        let at = ts(now);
        let note = format!("cancelled by {author}");
        let mut tx = self.begin().await?;
        let row: Option<(Option<i64>, String)> = sqlx::query_as(
            "UPDATE outbox SET status = 'cancelled',
               last_error = $3 || COALESCE('; last error: ' || last_error, '')
             WHERE id = $1 AND (status IN ('queued', 'failed') OR (status = 'sending' AND next_attempt_at <= $2))
             RETURNING ticket_id, recipients",
        )
        .bind(id)
        .bind(&at)
        .bind(&note)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((ticket, rcpts)) = row else {
            let why = refusal(&mut tx, id, "cancelled").await?;
            tx.rollback().await?;
            return Err(why);
        };
        if ticket.is_some() {
            let mut s = Script::default();
            let text = format!("mail {id} to {} {note}; it is never sent", to_list(&rcpts));
            events(&mut s, ticket, None, &[("outbox-cancelled", &text)], &at);
            s.run(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Quarantined message `id`: what is listed of it, its raw bytes and
    /// when it arrived (its receipt timestamp, should it become a ticket).
    pub async fn quarantined(
        &self,
        id: i64,
    ) -> Result<(QuarantineView, Vec<u8>, Option<jiff::Timestamp>), AdminError> {
        let row = sqlx::query(
            "SELECT id, action, reason, size, sha256, source, received_at,
                    COALESCE(arrived_at, received_at) AS arrived_at FROM messages WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no quarantined message {id}")))?;
        let action: String = row.try_get("action")?;
        if action != "quarantined" {
            return Err(AdminError::NotFound(format!(
                "message {id} is not quarantined (it was {action})"
            )));
        }
        let view = QuarantineView {
            id,
            reason: row.try_get("reason")?,
            size: row.try_get("size")?,
            sha256: row.try_get("sha256")?,
            source: row.try_get("source")?,
            received_at: row.try_get("received_at")?,
        };
        let arrived: String = row.try_get("arrived_at")?;
        let raw = self
            .raw_message(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("message {id}: raw bytes missing")))?;
        Ok((view, raw, arrived.parse().ok()))
    }
}

/// Why outbox row `id` was not changed to `what`.
async fn refusal(
    conn: &mut SqliteConnection,
    id: i64,
    what: &str,
) -> Result<AdminError, StoreError> {
    let row: Option<(String, String, Option<String>)> =
        sqlx::query_as("SELECT status, next_attempt_at, sent_at FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(match row {
        None => AdminError::NotFound(format!("no outbox row {id}")),
        Some((status, lease, sent)) => AdminError::Refused(match status.as_str() {
            "sent" => format!(
                "outbox row {id} was sent at {}; it cannot be {what}",
                sent.unwrap_or_default()
            ),
            "sending" => format!(
                "outbox row {id} is being sent right now (claimed until {lease}); it cannot be {what} — should this attempt fail, it is queued again and can be {what} then"
            ),
            other => format!("outbox row {id} is {other}; it cannot be {what}"),
        }),
    })
}

/// The recipients of an outbox row (a JSON array) as text.
fn to_list(json: &str) -> String {
    serde_json::from_str::<Vec<String>>(json)
        .map(|v| v.join(", "))
        .unwrap_or_else(|_| json.to_string())
}

/// Takes quarantined message `id` out of quarantine for a release: it is
/// marked `released` (its raw bytes stay), and its dedupe key is set
/// aside so that the same bytes can go through the intake again as a new
/// message. Refused when it is no longer quarantined.
pub async fn release_quarantined(conn: &mut SqliteConnection, id: i64) -> Result<(), AdminError> {
    let done = sqlx::query(
        "UPDATE messages SET action = 'released', dedupe_key = 'released:' || id || ':' || dedupe_key
         WHERE id = $1 AND action = 'quarantined'",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(AdminError::NotFound(format!(
            "message {id} is not quarantined (`quarantine list` shows those that are)"
        )));
    }
    Ok(())
}

/// Records on released message `id` (and on the ticket numbered `ticket`,
/// when the release made or joined one) what became of the release.
pub async fn record_release(
    conn: &mut SqliteConnection,
    id: i64,
    ticket: Option<&str>,
    detail: &str,
    now: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (ticket_id, message_ref, kind, detail, created_at)
         VALUES ((SELECT id FROM tickets WHERE number = $1), $2, 'released', $3, $4)",
    )
    .bind(ticket)
    .bind(id)
    .bind(detail)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
