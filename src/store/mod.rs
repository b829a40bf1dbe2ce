//! The database: every write of the intake happens in one transaction per
//! message (a savepoint inside a batch transaction), every read the CLI needs.
//!
//! This module is the one seam between the pipeline and SQL. It uses only
//! `sqlx::query` with bound `$n` parameters and portable SQL (`ON CONFLICT`,
//! `RETURNING`), so a PostgreSQL implementation can follow with its own
//! migrations and the same statements.

use crate::domain::{Mailbox, MessageId, Severity, Status, TicketNumber};
use crate::ingest::decide::{Decision, Kind, Lookups, Target, TicketInfo};
use crate::ingest::parse::{sha256_hex, ParsedMail};
use crate::ingest::LookupKeys;
use crate::outbound::mail::Outgoing;
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// A database problem; the message was not stored (exit 75 for `ingest`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Stored data that cannot be read back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// An open database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// A transaction on the store.
pub type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Formats an instant the way every table stores it: UTC, milliseconds, `Z`,
/// so text order is time order.
pub fn ts(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Row written into `messages` for a message, before the decision.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// The raw bytes.
    pub raw: &'a [u8],
    /// Where it came from (`stdin`, `file`, `maildir:<path>`, …).
    pub source: &'a str,
    /// Its Message-ID, when it has one.
    pub message_id: Option<&'a MessageId>,
    /// SHA-256 hex of the raw bytes.
    pub sha256: &'a str,
    /// The key that makes a second delivery a duplicate
    /// ([`crate::ingest::dedupe_key`]).
    pub dedupe_key: &'a str,
}

/// Result of claiming a message's dedupe key.
#[derive(Debug, Clone)]
pub enum Claim {
    /// First time seen: the new `messages` row id.
    New(i64),
    /// Seen before.
    Duplicate {
        /// Ticket of the first delivery, if any.
        ticket: Option<TicketNumber>,
        /// Severity of that ticket.
        severity: Option<Severity>,
    },
}

/// Limits applied when storing attachments and bodies.
#[derive(Debug, Clone)]
pub struct ApplyLimits {
    /// Attachment bytes per message.
    pub max_attachment_bytes: u64,
    /// Attachments per message.
    pub max_attachments: usize,
    /// Body bytes per article.
    pub max_body_bytes: usize,
    /// Ticket number prefix.
    pub number_prefix: String,
    /// Sequence start.
    pub number_start: i64,
}

/// What `apply` did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The ticket the message is on.
    pub ticket: Option<TicketNumber>,
    /// That ticket's severity.
    pub severity: Option<Severity>,
}

/// Builds the confirmation once the ticket number is known.
pub type ConfirmationBuilder<'a> =
    dyn FnMut(&TicketNumber, &Mailbox, Severity) -> Result<Outgoing, String> + Send + 'a;

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
}

/// An attachment as listed.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentInfo {
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
    /// When.
    pub created_at: String,
    /// Attachments.
    pub attachments: Vec<AttachmentInfo>,
}

/// A ticket with everything on it.
#[derive(Debug, Clone, Serialize)]
pub struct TicketView {
    /// The summary fields.
    #[serde(flatten)]
    pub summary: TicketSummary,
    /// The rule that set the severity.
    pub severity_rule: Option<String>,
    /// Participants.
    pub participants: Vec<String>,
    /// Articles, oldest first.
    pub articles: Vec<ArticleView>,
    /// Bounces recorded against recipients.
    pub bounces: Vec<BounceView>,
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
    /// queued, sending, sent, failed.
    pub status: String,
    /// Delivery attempts.
    pub attempts: i64,
    /// Last error.
    pub last_error: Option<String>,
    /// Queued at.
    pub created_at: String,
    /// Sent at.
    pub sent_at: Option<String>,
    /// The full RFC 5322 text.
    pub raw: String,
}

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

impl Store {
    /// Opens (creating if needed) the SQLite database at `path`.
    pub async fn open_sqlite(path: &Path, max_connections: u32) -> Result<Store, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?.filename(path);
        Store::connect(opts, max_connections).await
    }

    /// Opens a database by URL (`sqlite:path`).
    pub async fn open_url(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        Store::connect(SqliteConnectOptions::from_str(url)?, max_connections).await
    }

    /// WAL mode, `synchronous = FULL` so a commit survives a power cut, and a
    /// busy timeout so concurrent `ingest` processes wait instead of failing.
    async fn connect(
        opts: SqliteConnectOptions,
        max_connections: u32,
    ) -> Result<Store, StoreError> {
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            // Statement journals and sorts stay in memory, not in /var/tmp.
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .connect_with(opts)
            .await?;
        Ok(Store { pool })
    }

    /// Applies pending migrations. Cheap when there are none: `user_version`
    /// records how many were applied, so a per-message `ingest` process
    /// reads one pragma instead of the migration table.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let expected = MIGRATOR.iter().count() as i64;
        let have: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&self.pool)
            .await?;
        if have == expected {
            return Ok(());
        }
        // Two processes starting on a fresh data directory race here; the
        // loser's migration fails on the tables the winner just created.
        // Running the migrator again then finds them applied.
        if let Err(first) = MIGRATOR.run(&self.pool).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
            MIGRATOR.run(&self.pool).await.map_err(|_| first)?;
        }
        let set = format!("PRAGMA user_version = {expected}");
        sqlx::query(sqlx::AssertSqlSafe(set))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Begins a write transaction, taking the write lock at once so that the
    /// lookups and the writes of a message see one consistent state.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The pool, for tests and tools.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Stores the raw message under its dedupe key; a second delivery is
/// recorded as a duplicate (its bytes kept when they differ).
pub async fn claim(
    conn: &mut SqliteConnection,
    m: &NewMessage<'_>,
    now: &str,
) -> Result<Claim, StoreError> {
    let key = m.dedupe_key;
    let row = sqlx::query(
        "INSERT INTO messages (dedupe_key, message_id, sha256, size, raw, source, received_at, action)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')
         ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
    )
    .bind(key)
    .bind(m.message_id.map(|i| i.as_str()))
    .bind(m.sha256)
    .bind(m.raw.len() as i64)
    .bind(m.raw)
    .bind(m.source)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(r) = row {
        return Ok(Claim::New(r.try_get(0)?));
    }
    let orig = sqlx::query(
        "SELECT m.id, m.sha256, t.number, t.severity FROM messages m
         LEFT JOIN tickets t ON t.id = m.ticket_id WHERE m.dedupe_key = $1",
    )
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    let orig_id: i64 = orig.try_get(0)?;
    let orig_sha: String = orig.try_get(1)?;
    let number: Option<String> = orig.try_get(2)?;
    let severity: Option<i64> = orig.try_get(3)?;
    let raw = (orig_sha != m.sha256).then_some(m.raw);
    sqlx::query(
        "INSERT INTO duplicates (original_id, sha256, raw, source, received_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(orig_id)
    .bind(m.sha256)
    .bind(raw)
    .bind(m.source)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(Claim::Duplicate {
        ticket: number.map(TicketNumber),
        severity: severity.and_then(|s| Severity::try_from(s).ok()),
    })
}

/// Marks a claimed message quarantined with the reason.
pub async fn quarantine(
    conn: &mut SqliteConnection,
    message_row: i64,
    reason: &str,
    now: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE messages SET action = 'quarantined', reason = $1 WHERE id = $2")
        .bind(reason)
        .bind(message_row)
        .execute(&mut *conn)
        .await?;
    event(conn, None, Some(message_row), "quarantined", reason, now).await
}

async fn event(
    conn: &mut SqliteConnection,
    ticket: Option<i64>,
    message: Option<i64>,
    kind: &str,
    detail: &str,
    now: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (ticket_id, message_ref, kind, detail, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(ticket)
    .bind(message)
    .bind(kind)
    .bind(detail)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn ticket_info_where(
    conn: &mut SqliteConnection,
    by_number: Option<&str>,
    by_id: Option<i64>,
) -> Result<Option<TicketInfo>, StoreError> {
    let row = match (by_number, by_id) {
        (Some(n), _) => {
            sqlx::query("SELECT id, number, requester, status FROM tickets WHERE number = $1")
                .bind(n)
                .fetch_optional(&mut *conn)
                .await?
        }
        (None, Some(id)) => {
            sqlx::query("SELECT id, number, requester, status FROM tickets WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
        }
        _ => None,
    };
    let Some(row) = row else { return Ok(None) };
    let id: i64 = row.try_get(0)?;
    let participants: Vec<String> =
        sqlx::query_scalar("SELECT address FROM participants WHERE ticket_id = $1")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    Ok(Some(TicketInfo {
        id,
        number: TicketNumber(row.try_get(1)?),
        requester: row.try_get(2)?,
        participants,
        status: Status::parse(row.try_get::<&str, _>(3)?),
    }))
}

/// The ticket of the first id (in the order given) we stored or sent.
async fn ticket_by_ids(
    conn: &mut SqliteConnection,
    ids: &[MessageId],
    numbers: &[TicketNumber],
) -> Result<Option<TicketInfo>, StoreError> {
    // Bounded: a References header of thousands of ids must not become
    // thousands of queries.
    for id in ids.iter().take(50) {
        let t: Option<i64> =
            sqlx::query_scalar("SELECT ticket_id FROM thread_ids WHERE message_id = $1")
                .bind(id.as_str())
                .fetch_optional(&mut *conn)
                .await?;
        if let Some(t) = t {
            return ticket_info_where(conn, None, Some(t)).await;
        }
    }
    for n in numbers {
        if let Some(t) = ticket_info_where(conn, Some(n.as_str()), None).await? {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// Looks up what the decision needs: tickets by reference, tag and bounced
/// ids, and the hourly count of automatic mails to the reply address.
pub async fn lookups(
    conn: &mut SqliteConnection,
    keys: &LookupKeys,
    reply_address: Option<&str>,
    hour_ago: &str,
) -> Result<Lookups, StoreError> {
    let by_reference = ticket_by_ids(conn, &keys.thread_ids, &keys.signed_numbers).await?;
    let by_tag = match &keys.tag_number {
        Some(n) => ticket_info_where(conn, Some(n.as_str()), None).await?,
        None => None,
    };
    let bounced_ticket = if keys.bounced_ids.is_empty() && keys.bounced_numbers.is_empty() {
        None
    } else {
        ticket_by_ids(conn, &keys.bounced_ids, &keys.bounced_numbers).await?
    };
    let auto_mails_last_hour = match reply_address {
        Some(a) => {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM auto_mail_log WHERE recipient = $1 AND sent_at > $2",
            )
            .bind(a.to_ascii_lowercase())
            .bind(hour_ago)
            .fetch_one(&mut *conn)
            .await?;
            u32::try_from(n).unwrap_or(u32::MAX)
        }
        None => 0,
    };
    Ok(Lookups {
        by_reference,
        tag_number: keys.tag_number.clone(),
        by_tag,
        bounced_ticket,
        auto_mails_last_hour,
    })
}

async fn next_number(
    conn: &mut SqliteConnection,
    limits: &ApplyLimits,
) -> Result<TicketNumber, StoreError> {
    let v: i64 = sqlx::query_scalar(
        "INSERT INTO counters (name, value) VALUES ('ticket', $1 + 1)
         ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value",
    )
    .bind(limits.number_start)
    .fetch_one(&mut *conn)
    .await?;
    Ok(TicketNumber::from_sequence(&limits.number_prefix, v))
}

async fn add_participants(
    conn: &mut SqliteConnection,
    ticket: i64,
    addrs: &[String],
) -> Result<(), StoreError> {
    for a in addrs {
        sqlx::query(
            "INSERT INTO participants (ticket_id, address) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(ticket)
        .bind(a)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn add_thread_id(
    conn: &mut SqliteConnection,
    ticket: i64,
    id: &MessageId,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO thread_ids (message_id, ticket_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(id.as_str())
    .bind(ticket)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn note(
    conn: &mut SqliteConnection,
    ticket: i64,
    text: &str,
    now: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO articles (ticket_id, direction, kind, body, created_at) VALUES ($1, 'note', 'note', $2, $3)",
    )
    .bind(ticket)
    .bind(text)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn addr_list(list: &[Mailbox]) -> Option<String> {
    if list.is_empty() {
        None
    } else {
        Some(
            list.iter()
                .map(|m| m.address.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
}

/// Stores the inbound article and its attachments within the limits;
/// returns notes about what was dropped.
async fn inbound_article(
    conn: &mut SqliteConnection,
    ticket: i64,
    message_row: i64,
    mail: &ParsedMail,
    kind: Kind,
    limits: &ApplyLimits,
    now: &str,
) -> Result<Vec<String>, StoreError> {
    let mut notes = Vec::new();
    let mut body = crate::ingest::classify::truncate(&mail.body, limits.max_body_bytes).to_string();
    if body.len() < mail.body.len() {
        body.push_str("\n\n[… text cut here; the whole message is kept raw]");
    }
    let article: i64 = sqlx::query_scalar(
        "INSERT INTO articles (ticket_id, direction, kind, from_addr, from_name, to_addrs, cc_addrs, subject, message_id, body, message_ref, created_at)
         VALUES ($1, 'in', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(ticket)
    .bind(kind.as_str())
    .bind(mail.from.as_ref().map(|m| m.address.as_str()))
    .bind(mail.from.as_ref().and_then(|m| m.name.as_deref()))
    .bind(addr_list(&mail.to))
    .bind(addr_list(&mail.cc))
    .bind(&mail.subject)
    .bind(mail.message_id.as_ref().map(|m| m.as_str()))
    .bind(&body)
    .bind(message_row)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    let mut total: u64 = 0;
    for (i, a) in mail.attachments.iter().enumerate() {
        let size = a.content.len() as u64;
        if i >= limits.max_attachments {
            notes.push(format!(
                "{} further attachments dropped: more than {} in one message (the raw message keeps them).",
                mail.attachments.len() - i,
                limits.max_attachments
            ));
            break;
        }
        if total + size > limits.max_attachment_bytes {
            notes.push(format!(
                "Attachment {:?} ({} bytes) dropped: the message's attachments exceed {} bytes (the raw message keeps it).",
                a.filename, size, limits.max_attachment_bytes
            ));
            continue;
        }
        total += size;
        sqlx::query(
            "INSERT INTO attachments (article_id, filename, content_type, size, sha256, content) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(article)
        .bind(&a.filename)
        .bind(&a.content_type)
        .bind(size as i64)
        .bind(sha256_hex(&a.content))
        .bind(&a.content)
        .execute(&mut *conn)
        .await?;
    }
    Ok(notes)
}

/// Queues an outgoing mail and records it on the ticket.
pub async fn enqueue(
    conn: &mut SqliteConnection,
    ticket: i64,
    kind: &str,
    out: &Outgoing,
    now: &str,
) -> Result<i64, StoreError> {
    let recipients = serde_json::to_string(&out.to).unwrap_or_else(|_| "[]".into());
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO outbox (ticket_id, kind, recipients, sender, subject, message_id, raw, status, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $8) RETURNING id",
    )
    .bind(ticket)
    .bind(kind)
    .bind(&recipients)
    .bind(&out.sender)
    .bind(&out.subject)
    .bind(out.message_id.as_str())
    .bind(&out.raw)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO articles (ticket_id, direction, kind, from_addr, to_addrs, subject, message_id, body, outbox_ref, created_at)
         VALUES ($1, 'out', $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(ticket)
    .bind(kind)
    .bind(&out.sender)
    .bind(out.to.join(", "))
    .bind(&out.subject)
    .bind(out.message_id.as_str())
    .bind(&out.body)
    .bind(id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    add_thread_id(conn, ticket, &out.message_id).await?;
    for r in &out.to {
        sqlx::query("INSERT INTO auto_mail_log (recipient, sent_at) VALUES ($1, $2)")
            .bind(r.to_ascii_lowercase())
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(id)
}

/// Writes what the decision says: ticket or article, attachments, ids,
/// participants, bounces, notes, the audit event, the confirmation in the
/// outbox, and the message's final action.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    conn: &mut SqliteConnection,
    message_row: i64,
    mail: &ParsedMail,
    d: &Decision,
    limits: &ApplyLimits,
    build_confirmation: &mut ConfirmationBuilder<'_>,
    now: &str,
) -> Result<Applied, StoreError> {
    let mut notes = d.notes.clone();
    let (ticket_id, number, severity) = match &d.target {
        Target::New(t) => {
            let number = next_number(conn, limits).await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO tickets (number, subject, status, severity, severity_rule, requester, requester_name, linked_number, created_at, updated_at)
                 VALUES ($1, $2, 'new', $3, $4, $5, $6, $7, $8, $8) RETURNING id",
            )
            .bind(number.as_str())
            .bind(&t.subject)
            .bind(t.severity.level() as i64)
            .bind(t.rule.as_deref())
            .bind(t.requester.key())
            .bind(t.requester.name.as_deref())
            .bind(t.linked.as_ref().map(|n| n.as_str()))
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
            add_participants(conn, id, &t.participants).await?;
            let detail = match &t.rule {
                Some(r) => format!(
                    "created from mail, severity {} by rule {r}",
                    t.severity.level()
                ),
                None => format!("created from mail, default severity {}", t.severity.level()),
            };
            event(conn, Some(id), Some(message_row), "created", &detail, now).await?;
            if let Some(l) = &t.linked {
                event(
                    conn,
                    Some(id),
                    Some(message_row),
                    "linked",
                    &format!("refers to ticket {l}"),
                    now,
                )
                .await?;
            }
            (Some(id), Some(number), Some(t.severity))
        }
        Target::Existing { ticket, reopen } => {
            let status_sql = if *reopen {
                "UPDATE tickets SET status = 'open', updated_at = $1 WHERE id = $2 RETURNING severity"
            } else {
                "UPDATE tickets SET updated_at = $1 WHERE id = $2 RETURNING severity"
            };
            let sev: i64 = sqlx::query_scalar(status_sql)
                .bind(now)
                .bind(ticket.id)
                .fetch_one(&mut *conn)
                .await?;
            add_participants(conn, ticket.id, &d.new_participants).await?;
            event(
                conn,
                Some(ticket.id),
                Some(message_row),
                "appended",
                &d.reason,
                now,
            )
            .await?;
            if *reopen {
                event(
                    conn,
                    Some(ticket.id),
                    Some(message_row),
                    "reopened",
                    "the customer wrote again",
                    now,
                )
                .await?;
            }
            (
                Some(ticket.id),
                Some(ticket.number.clone()),
                Severity::try_from(sev).ok(),
            )
        }
        Target::Nothing => {
            event(
                conn,
                None,
                Some(message_row),
                d.action.as_str(),
                &d.reason,
                now,
            )
            .await?;
            (None, None, None)
        }
    };

    if d.kind == Kind::Bounce {
        if let Some(b) = &mail.bounced {
            for r in &b.recipients {
                sqlx::query(
                    "INSERT INTO bounces (ticket_id, message_ref, recipient, action, status, diagnostic, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(ticket_id)
                .bind(message_row)
                .bind(r.recipient.to_ascii_lowercase())
                .bind(&r.action)
                .bind(&r.status)
                .bind(&r.diagnostic)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                if ticket_id.is_some() {
                    notes.push(format!(
                        "Delivery to {} failed: {} {}",
                        r.recipient, r.status, r.diagnostic
                    ));
                }
            }
        }
    }

    if let Some(tid) = ticket_id {
        let mut dropped =
            inbound_article(conn, tid, message_row, mail, d.kind, limits, now).await?;
        notes.append(&mut dropped);
        notes.extend(mail.warnings.iter().cloned());
        if let Some(id) = &mail.message_id {
            add_thread_id(conn, tid, id).await?;
        }
        if let (Some(to), Some(n), Some(sev)) = (&d.confirm_to, &number, severity) {
            match build_confirmation(n, to, sev) {
                Ok(out) => {
                    enqueue(conn, tid, "confirmation", &out, now).await?;
                }
                Err(e) => notes.push(format!("No confirmation: {e}")),
            }
        }
        for n in &notes {
            note(conn, tid, n, now).await?;
        }
    }

    let reason = if notes.is_empty() || ticket_id.is_some() {
        d.reason.clone()
    } else {
        format!("{} ({})", d.reason, notes.join(" "))
    };
    sqlx::query(
        "UPDATE messages SET action = $1, kind = $2, reason = $3, ticket_id = $4 WHERE id = $5",
    )
    .bind(d.action.as_str())
    .bind(d.kind.as_str())
    .bind(&reason)
    .bind(ticket_id)
    .bind(message_row)
    .execute(&mut *conn)
    .await?;
    Ok(Applied {
        ticket: number,
        severity,
    })
}

fn summary_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<TicketSummary, sqlx::Error> {
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
    })
}

const SUMMARY_SELECT: &str = "SELECT t.id, t.number, t.subject, t.status, t.severity, t.requester, t.created_at, t.updated_at, t.linked_number, t.severity_rule,
  (SELECT COUNT(*) FROM articles a WHERE a.ticket_id = t.id) AS article_count FROM tickets t";

impl Store {
    /// All tickets, newest first.
    pub async fn list_tickets(&self) -> Result<Vec<TicketSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.id, t.number, t.subject, t.status, t.severity, t.requester, t.created_at, t.updated_at, t.linked_number, t.severity_rule,
              (SELECT COUNT(*) FROM articles a WHERE a.ticket_id = t.id) AS article_count FROM tickets t ORDER BY t.id DESC",
        )
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
        let severity_rule: Option<String> = r.try_get("severity_rule")?;
        let participants: Vec<String> = sqlx::query_scalar(
            "SELECT address FROM participants WHERE ticket_id = $1 ORDER BY address",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let arts = sqlx::query(
            "SELECT id, direction, kind, from_addr, from_name, subject, message_id, body, created_at FROM articles WHERE ticket_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut articles = Vec::new();
        for a in arts {
            let aid: i64 = a.try_get("id")?;
            let atts = sqlx::query(
                "SELECT filename, size, content_type FROM attachments WHERE article_id = $1 ORDER BY id",
            )
            .bind(aid)
            .fetch_all(&self.pool)
            .await?;
            articles.push(ArticleView {
                direction: a.try_get("direction")?,
                kind: a.try_get("kind")?,
                from: a.try_get("from_addr")?,
                from_name: a.try_get("from_name")?,
                subject: a.try_get("subject")?,
                message_id: a.try_get("message_id")?,
                body: a.try_get("body")?,
                created_at: a.try_get("created_at")?,
                attachments: atts
                    .iter()
                    .map(|x| {
                        Ok(AttachmentInfo {
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
        Ok(Some(TicketView {
            summary,
            severity_rule,
            participants,
            articles,
            bounces,
        }))
    }

    /// The outbox, oldest first.
    pub async fn list_outbox(&self) -> Result<Vec<OutboxView>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.id, t.number, o.kind, o.recipients, o.subject, o.message_id, o.status, o.attempts, o.last_error, o.created_at, o.sent_at, o.raw
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
                    last_error: r.try_get("last_error")?,
                    created_at: r.try_get("created_at")?,
                    sent_at: r.try_get("sent_at")?,
                    raw: String::from_utf8_lossy(&raw).into_owned(),
                })
            })
            .collect()
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

    /// The raw bytes of a stored message.
    pub async fn raw_message(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT raw FROM messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
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
            "SELECT id, ticket_id, sender, recipients, raw, attempts, created_at FROM outbox
             WHERE status IN ('queued', 'sending') AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.try_get("id")?;
            sqlx::query("UPDATE outbox SET status = 'sending', next_attempt_at = $1 WHERE id = $2")
                .bind(lease_until)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let rcpts: String = r.try_get("recipients")?;
            out.push(DueMail {
                id,
                ticket_id: r.try_get("ticket_id")?,
                sender: r.try_get("sender")?,
                recipients: serde_json::from_str(&rcpts)
                    .map_err(|e| StoreError::Corrupt(format!("outbox recipients: {e}")))?,
                raw: r.try_get("raw")?,
                attempts: r.try_get("attempts")?,
                created_at: r.try_get("created_at")?,
            });
        }
        tx.commit().await?;
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

    /// Forgets automatic-mail records older than `before` (the hourly limit
    /// only looks one hour back); returns how many were removed.
    pub async fn prune_auto_mail_log(&self, before: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM auto_mail_log WHERE sent_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Marks a mail accepted by the server.
    pub async fn mark_sent(&self, id: i64, now: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET status = 'sent', attempts = attempts + 1, sent_at = $1, last_error = NULL WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Schedules another attempt after a temporary failure.
    pub async fn mark_retry(&self, id: i64, error: &str, next: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET status = 'queued', attempts = attempts + 1, last_error = $1, next_attempt_at = $2 WHERE id = $3")
            .bind(error)
            .bind(next)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Gives up on a mail and notes it on its ticket.
    pub async fn mark_failed(&self, m: &DueMail, error: &str, now: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = $1 WHERE id = $2")
            .bind(error)
            .bind(m.id)
            .execute(&mut *tx)
            .await?;
        if let Some(t) = m.ticket_id {
            let text = format!(
                "Mail to {} could not be delivered: {error}",
                m.recipients.join(", ")
            );
            note(&mut tx, t, &text, now).await?;
            event(&mut tx, Some(t), None, "delivery-failed", &text, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
