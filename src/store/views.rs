//! What the command line and the HTTP endpoint read: ticket lists and
//! views, the outbox and quarantine lists, raw bytes, SLA counts.

use super::*;

/// A ticket for listing.
#[derive(Debug, Clone, Serialize)]
pub struct TicketSummary {
    /// Public number.
    pub number: String,
    /// Subject.
    pub subject: String,
    /// Status.
    pub status: String,
    /// Severity 1–4.
    pub severity: i64,
    /// Requester address.
    pub requester: String,
    /// Creation time (UTC).
    pub created_at: String,
    /// Last change (UTC).
    pub updated_at: String,
    /// Number of articles.
    pub article_count: i64,
    /// The ticket a stranger's tagged mail referred to.
    pub linked_ticket: Option<String>,
    /// The customer organisation (directory id), if the requester is known.
    pub organisation: Option<String>,
    /// Marks for staff: `unverified`, `over-quota`.
    pub flags: Vec<String>,
    /// The queue a rule put it in.
    pub queue: Option<String>,
    /// Its tags, in alphabetical order.
    pub tags: Vec<String>,
}

/// An attachment as listed.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentInfo {
    /// Its id: what `tickets attachment NUMBER ID` takes.
    pub id: i64,
    /// Decoded file name.
    pub filename: String,
    /// Size in bytes.
    pub size: i64,
    /// MIME type.
    pub content_type: String,
}

/// An article as shown.
#[derive(Debug, Clone, Serialize)]
pub struct ArticleView {
    /// Its id: what `tickets raw NUMBER ARTICLE` takes.
    pub id: i64,
    /// in, out or note.
    pub direction: String,
    /// mail, auto-reply, bounce, confirmation, note.
    pub kind: String,
    /// Sender address.
    pub from: Option<String>,
    /// Sender name.
    pub from_name: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Message-ID.
    pub message_id: Option<String>,
    /// Text.
    pub body: String,
    /// When it was stored (UTC).
    pub created_at: String,
    /// For an article made from a received message: when that message
    /// arrived (UTC), at or before `created_at`.
    pub arrived_at: Option<String>,
    /// Attachments.
    pub attachments: Vec<AttachmentInfo>,
}

/// A ticket with everything on it.
#[derive(Debug, Clone, Serialize)]
pub struct TicketView {
    /// The summary fields.
    #[serde(flatten)]
    pub summary: TicketSummary,
    /// The receipt timestamp (UTC): when the message that opened the ticket
    /// arrived, where its SLA clocks start; `created_at` is when ticketd
    /// stored it.
    pub arrived_at: String,
    /// The rule that set the severity.
    pub severity_rule: Option<String>,
    /// Who works it (`claim`/`assign`), by name.
    pub assignee: Option<String>,
    /// Where mail to the customer goes when not to the requester (the
    /// Reply-To of the requester's latest mail).
    pub reply_to: Option<String>,
    /// Tickets that refer to this one (opened by a mail on it after it was
    /// closed, or by a stranger naming it), oldest first.
    pub linked_from: Vec<String>,
    /// Participants.
    pub participants: Vec<String>,
    /// Articles, oldest first.
    pub articles: Vec<ArticleView>,
    /// Bounces recorded against recipients.
    pub bounces: Vec<BounceView>,
    /// The monitoring incident this ticket is for, if any.
    pub incident: Option<IncidentView>,
    /// What happened to it, oldest first: the audit trail.
    pub events: Vec<EventView>,
}

/// One entry of a ticket's audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// What happened (`created`, `staff-reply`, `waiting`, `severity`, …).
    pub kind: String,
    /// Details: why, by whom.
    pub detail: String,
    /// When.
    pub created_at: String,
}

/// A monitoring incident as shown on its ticket.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    /// Organisation, host and service.
    pub key: String,
    /// The last alert's state.
    pub state: String,
    /// Whether the problem is open.
    pub problem: bool,
    /// Problem alerts so far.
    pub occurrences: i64,
    /// The last alert's text.
    pub last_text: String,
    /// When the last alert came.
    pub last_at: String,
}

/// A recorded delivery failure.
#[derive(Debug, Clone, Serialize)]
pub struct BounceView {
    /// The recipient that failed.
    pub recipient: String,
    /// DSN action.
    pub action: Option<String>,
    /// DSN status code.
    pub status: Option<String>,
    /// Diagnostic text.
    pub diagnostic: Option<String>,
    /// When.
    pub created_at: String,
}

/// An outbox row as listed.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxView {
    /// Row id.
    pub id: i64,
    /// Ticket number.
    pub ticket: Option<String>,
    /// Kind (confirmation, …).
    pub kind: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Subject.
    pub subject: String,
    /// Message-ID.
    pub message_id: String,
    /// queued, sending, sent, failed, cancelled.
    pub status: String,
    /// Delivery attempts.
    pub attempts: i64,
    /// When it is tried next (UTC): for a queued row only (a row being
    /// sent, sent, failed or cancelled is tried no more by itself).
    pub next_attempt_at: Option<String>,
    /// Last error.
    pub last_error: Option<String>,
    /// Queued at.
    pub created_at: String,
    /// Sent at.
    pub sent_at: Option<String>,
    /// The full RFC 5322 text.
    pub raw: String,
}

/// A quarantined message as listed.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineView {
    /// Row id.
    pub id: i64,
    /// Why.
    pub reason: Option<String>,
    /// Size.
    pub size: i64,
    /// SHA-256.
    pub sha256: String,
    /// Source.
    pub source: String,
    /// When.
    pub received_at: String,
}

pub(super) fn summary_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<TicketSummary, sqlx::Error> {
    Ok(TicketSummary {
        number: r.try_get("number")?,
        subject: r.try_get("subject")?,
        status: r.try_get("status")?,
        severity: r.try_get("severity")?,
        requester: r.try_get("requester")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        article_count: r.try_get("article_count")?,
        linked_ticket: r.try_get("linked_number")?,
        organisation: r.try_get("organisation")?,
        flags: r
            .try_get::<Option<String>, _>("flags")?
            .map(|f| f.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        queue: r.try_get("queue")?,
        tags: r
            .try_get::<Option<String>, _>("tags")?
            .map(|f| f.split('\u{1f}').map(str::to_string).collect())
            .unwrap_or_default(),
    })
}

pub(super) const SUMMARY_SELECT: &str = "SELECT t.id, t.number, t.subject, t.status, t.severity, t.requester, t.created_at, t.updated_at, t.linked_number, t.severity_rule, t.organisation, t.flags, t.queue, t.assignee_name,
  (SELECT group_concat(tag, char(31)) FROM (SELECT tag FROM ticket_tags g WHERE g.ticket_id = t.id ORDER BY tag)) AS tags,
  (SELECT COUNT(*) FROM articles a WHERE a.ticket_id = t.id) AS article_count FROM tickets t";

impl Store {
    /// All tickets, newest first.
    pub async fn list_tickets(&self) -> Result<Vec<TicketSummary>, StoreError> {
        let sql = format!("{SUMMARY_SELECT} ORDER BY t.id DESC");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(summary_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// One ticket with articles, attachments, participants and bounces.
    pub async fn show_ticket(&self, number: &str) -> Result<Option<TicketView>, StoreError> {
        let sql = format!("{SUMMARY_SELECT} WHERE t.number = $1");
        let Some(r) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(number)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let id: i64 = r.try_get("id")?;
        let summary = summary_from_row(&r)?;
        let arrived_at: String = sqlx::query_scalar(
            "SELECT COALESCE(arrived_at, created_at) FROM tickets WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        let severity_rule: Option<String> = r.try_get("severity_rule")?;
        let assignee: Option<String> = r.try_get("assignee_name")?;
        let reply_to: Option<String> =
            sqlx::query_scalar("SELECT reply_to FROM tickets WHERE id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
        let linked_from: Vec<String> =
            sqlx::query_scalar("SELECT number FROM tickets WHERE linked_number = $1 ORDER BY id")
                .bind(&summary.number)
                .fetch_all(&self.pool)
                .await?;
        let participants: Vec<String> = sqlx::query_scalar(
            "SELECT address FROM participants WHERE ticket_id = $1 ORDER BY address",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let arts = sqlx::query(
            "SELECT a.id, a.direction, a.kind, a.from_addr, a.from_name, a.subject, a.message_id, a.body, a.created_at, m.arrived_at
             FROM articles a LEFT JOIN messages m ON m.id = a.message_ref AND a.direction = 'in' WHERE a.ticket_id = $1 ORDER BY a.id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut articles = Vec::new();
        for a in arts {
            let aid: i64 = a.try_get("id")?;
            let atts = sqlx::query(
                "SELECT id, filename, size, content_type FROM attachments WHERE article_id = $1 ORDER BY id",
            )
            .bind(aid)
            .fetch_all(&self.pool)
            .await?;
            articles.push(ArticleView {
                id: aid,
                direction: a.try_get("direction")?,
                kind: a.try_get("kind")?,
                from: a.try_get("from_addr")?,
                from_name: a.try_get("from_name")?,
                subject: a.try_get("subject")?,
                message_id: a.try_get("message_id")?,
                body: a.try_get("body")?,
                created_at: a.try_get("created_at")?,
                arrived_at: a.try_get("arrived_at")?,
                attachments: atts
                    .iter()
                    .map(|x| {
                        Ok(AttachmentInfo {
                            id: x.try_get("id")?,
                            filename: x.try_get("filename")?,
                            size: x.try_get("size")?,
                            content_type: x.try_get("content_type")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()?,
            });
        }
        let bounces = sqlx::query(
            "SELECT recipient, action, status, diagnostic, created_at FROM bounces WHERE ticket_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|b| {
            Ok(BounceView {
                recipient: b.try_get("recipient")?,
                action: b.try_get("action")?,
                status: b.try_get("status")?,
                diagnostic: b.try_get("diagnostic")?,
                created_at: b.try_get("created_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
        let incident = sqlx::query(
            "SELECT key, state, problem, occurrences, last_text, last_at FROM incidents WHERE ticket_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| -> Result<IncidentView, sqlx::Error> {
            Ok(IncidentView {
                key: r.try_get::<String, _>("key")?.replace('\u{1f}', "/"),
                state: r.try_get("state")?,
                problem: r.try_get::<i64, _>("problem")? != 0,
                occurrences: r.try_get("occurrences")?,
                last_text: r.try_get("last_text")?,
                last_at: r.try_get("last_at")?,
            })
        })
        .transpose()?;
        let events = sqlx::query_as::<_, (String, String, String)>(
            "SELECT kind, detail, created_at FROM events WHERE ticket_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(kind, detail, created_at)| EventView {
            kind,
            detail,
            created_at,
        })
        .collect();
        Ok(Some(TicketView {
            summary,
            arrived_at,
            severity_rule,
            assignee,
            reply_to,
            linked_from,
            participants,
            articles,
            bounces,
            incident,
            events,
        }))
    }

    /// The outbox, oldest first.
    pub async fn list_outbox(&self) -> Result<Vec<OutboxView>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.id, t.number, o.kind, o.recipients, o.subject, o.message_id, o.status, o.attempts, o.next_attempt_at, o.last_error, o.created_at, o.sent_at, o.raw
             FROM outbox o LEFT JOIN tickets t ON t.id = o.ticket_id ORDER BY o.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let rcpts: String = r.try_get("recipients")?;
                let raw: Vec<u8> = r.try_get("raw")?;
                Ok(OutboxView {
                    id: r.try_get("id")?,
                    ticket: r.try_get("number")?,
                    kind: r.try_get("kind")?,
                    to: serde_json::from_str(&rcpts)
                        .map_err(|e| StoreError::Corrupt(format!("outbox recipients: {e}")))?,
                    subject: r.try_get("subject")?,
                    message_id: r.try_get("message_id")?,
                    status: r.try_get("status")?,
                    attempts: r.try_get("attempts")?,
                    next_attempt_at: Some(r.try_get::<String, _>("next_attempt_at")?)
                        .filter(|_| r.try_get::<&str, _>("status").is_ok_and(|s| s == "queued")),
                    last_error: r.try_get("last_error")?,
                    created_at: r.try_get("created_at")?,
                    sent_at: r.try_get("sent_at")?,
                    raw: String::from_utf8_lossy(&raw).into_owned(),
                })
            })
            .collect()
    }

    /// The SLA figures for metrics: open tickets by state (index reads),
    /// breaches and reminders so far (counters kept by the timer task),
    /// chat posts queued.
    pub async fn sla_stats(&self) -> Result<crate::metrics::SlaStats, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let open_by_state = sla::state_counts(&mut conn, &ts(jiff::Timestamp::now())).await?;
        let counters: Vec<(String, i64)> = sqlx::query_as(
            "SELECT name, value FROM counters WHERE name IN ('sla-breaches', 'sla-reminders')",
        )
        .fetch_all(&mut *conn)
        .await?;
        let counter = |n: &str| counters.iter().find(|(k, _)| k == n).map_or(0, |(_, v)| *v);
        let (chat_queued, chat_failed): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM chat_outbox WHERE status = 'queued'),
                    (SELECT COUNT(*) FROM chat_outbox WHERE status = 'failed')",
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(crate::metrics::SlaStats {
            open_by_state,
            breaches: counter("sla-breaches"),
            reminders: counter("sla-reminders"),
            chat_queued,
            chat_failed,
        })
    }

    /// Quarantined messages, newest first.
    pub async fn list_quarantine(&self) -> Result<Vec<QuarantineView>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, reason, size, sha256, source, received_at FROM messages WHERE action = 'quarantined' ORDER BY id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QuarantineView {
                    id: r.try_get("id")?,
                    reason: r.try_get("reason")?,
                    size: r.try_get("size")?,
                    sha256: r.try_get("sha256")?,
                    source: r.try_get("source")?,
                    received_at: r.try_get("received_at")?,
                })
            })
            .collect()
    }

    /// The raw bytes of a stored message, whole (its inline part and its
    /// `raw_chunks`).
    pub async fn raw_message(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        self.raw_of("message", id).await
    }

    /// The raw bytes of a recorded duplicate delivery, when they differed
    /// from the first one's.
    pub async fn raw_duplicate(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        self.raw_of("duplicate", id).await
    }

    /// The decoded content of a stored attachment, whole.
    pub async fn attachment_content(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        self.raw_of("attachment", id).await
    }

    /// The raw bytes of the stored message with this SHA-256 (of the whole
    /// raw message), if any.
    pub async fn raw_by_sha256(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM messages WHERE sha256 = $1 ORDER BY id LIMIT 1")
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?;
        match id {
            Some(id) => self.raw_message(id).await,
            None => Ok(None),
        }
    }

    async fn raw_of(&self, kind: &str, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let sql = match kind {
            "message" => "SELECT raw, size FROM messages WHERE id = $1",
            "attachment" => "SELECT content, size FROM attachments WHERE id = $1",
            _ => "SELECT raw, NULL FROM duplicates WHERE id = $1",
        };
        let Some((inline, size)): Option<(Option<Vec<u8>>, Option<i64>)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        let Some(mut raw) = inline else {
            return Ok(None);
        };
        if raw.len() < RAW_CHUNK {
            return Ok(Some(raw));
        }
        raw.reserve(
            usize::try_from(size.unwrap_or(0))
                .unwrap_or(0)
                .saturating_sub(raw.len()),
        );
        let mut rows = sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT data FROM raw_chunks WHERE kind = $1 AND row_id = $2 ORDER BY seq",
        )
        .bind(kind)
        .bind(id)
        .fetch(&self.pool);
        use futures_util::TryStreamExt as _;
        while let Some(piece) = rows.try_next().await? {
            raw.extend_from_slice(&piece);
        }
        Ok(Some(raw))
    }
}
