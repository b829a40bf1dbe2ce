//! The store's side of the chat adapter: the chat feed (ticket events
//! become chat outbox rows), the chat outbox's delivery state, the
//! Discord threads of each ticket, handled Discord events, and the lists
//! staff ask for.
//!
//! The feed follows the `events` table by a cursor (counter `chat-events`):
//! every change to a ticket writes its event in the change's own
//! transaction, so reading the events after it and queuing their posts
//! together with the cursor's move loses none and queues none twice.

use super::{queue_chat, ts, Script, Store, StoreError};
use serde::Serialize;
use sqlx::Row;

/// The counter holding the id of the last event the chat feed took.
const CURSOR: &str = "chat-events";

/// A ticket as chat posts describe it.
#[derive(Debug, Clone, Serialize)]
pub struct ChatTicket {
    /// Row id.
    pub id: i64,
    /// Public number.
    pub number: String,
    /// Subject.
    pub subject: String,
    /// Status.
    pub status: String,
    /// Severity 1–4.
    pub severity: i64,
    /// Organisation's directory id.
    pub organisation: Option<String>,
    /// Requester's address.
    pub requester: String,
    /// Requester's name.
    pub requester_name: Option<String>,
    /// SLA state.
    pub sla_state: Option<String>,
    /// Nearest due instant.
    pub sla_due_at: Option<String>,
    /// Which target is due.
    pub sla_target: Option<String>,
    /// Who works it (display name).
    pub assignee_name: Option<String>,
}

const TICKET_COLUMNS: &str = "t.id, t.number, t.subject, t.status, t.severity, t.organisation, t.requester, t.requester_name, t.sla_state, t.sla_due_at, t.sla_target, t.assignee_name";

fn ticket_of(r: &sqlx::sqlite::SqliteRow) -> Result<ChatTicket, sqlx::Error> {
    Ok(ChatTicket {
        id: r.try_get("id")?,
        number: r.try_get("number")?,
        subject: r.try_get("subject")?,
        status: r.try_get("status")?,
        severity: r.try_get("severity")?,
        organisation: r.try_get("organisation")?,
        requester: r.try_get("requester")?,
        requester_name: r.try_get("requester_name")?,
        sla_state: r.try_get("sla_state")?,
        sla_due_at: r.try_get("sla_due_at")?,
        sla_target: r.try_get("sla_target")?,
        assignee_name: r.try_get("assignee_name")?,
    })
}

/// A ticket event the chat feed may post.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    /// Event id.
    pub id: i64,
    /// Event kind (`created`, `appended`, …).
    pub kind: String,
    /// Its detail.
    pub detail: String,
    /// Whether the same message was a staff reply (an `appended` that is
    /// staff's, not the customer's).
    pub staff_in_message: bool,
    /// The text of the inbound article the event's message made (none
    /// for a repeated alert, which is only counted).
    pub text: Option<String>,
    /// What the event's message was: `mail`, `alert`, `bounce`,
    /// `auto-reply`, … (none for an event of no message).
    pub message_kind: Option<String>,
    /// The ticket now.
    pub ticket: ChatTicket,
}

/// A chat outbox row to queue.
#[derive(Debug, Clone)]
pub struct NewChatPost {
    /// The ticket it is about.
    pub ticket_id: Option<i64>,
    /// The configured channel name.
    pub channel: String,
    /// Its kind.
    pub kind: String,
    /// What to post (see [`crate::chat::notify::render`]).
    pub body: serde_json::Value,
}

/// A chat outbox row due for delivery.
#[derive(Debug, Clone)]
pub struct ChatPost {
    /// Row id.
    pub id: i64,
    /// The ticket it is about.
    pub ticket: Option<ChatTicket>,
    /// The configured channel name.
    pub channel: String,
    /// Its kind.
    pub kind: String,
    /// What to post.
    pub body: serde_json::Value,
    /// Attempts so far.
    pub attempts: i64,
    /// The message already posted by an earlier attempt (its thread was
    /// still to be started).
    pub posted_id: Option<u64>,
    /// When it was queued.
    pub created_at: String,
}

/// A ticket's Discord thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatThread {
    /// The channel it is in.
    pub channel_id: u64,
    /// The thread's id.
    pub thread_id: u64,
    /// Whether Discord has started it.
    pub created: bool,
}

fn id_text(v: Option<String>) -> Option<u64> {
    v.and_then(|s| s.parse().ok())
}

impl Store {
    /// The chat feed's cursor. The first time (Discord just configured) it
    /// starts at the newest event: history is not posted.
    pub async fn chat_cursor(&self) -> Result<i64, StoreError> {
        if let Some(v) = sqlx::query_scalar::<_, i64>("SELECT value FROM counters WHERE name = $1")
            .bind(CURSOR)
            .fetch_optional(self.pool())
            .await?
        {
            return Ok(v);
        }
        let mut tx = self.begin().await?;
        sqlx::query(
            // `WHERE true`: SQLite reads ON CONFLICT after a bare SELECT
            // as a join's ON.
            "INSERT INTO counters (name, value) SELECT $1, COALESCE(MAX(id), 0) FROM events WHERE true
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(CURSOR)
        .execute(&mut *tx)
        .await?;
        let v = sqlx::query_scalar("SELECT value FROM counters WHERE name = $1")
            .bind(CURSOR)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(v)
    }

    /// Up to `limit` ticket events after `after`, with their tickets, and
    /// the id of the last event looked at (events of no ticket included).
    /// Every lookup goes through an index of the ticket (`events_ticket`,
    /// `articles_ticket`): the cost does not grow with the database.
    pub async fn chat_events(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<FeedEvent>, i64), StoreError> {
        let q = format!(
            "SELECT e.id AS event_id, t.id IS NOT NULL AS on_ticket, e.kind AS event_kind, COALESCE(e.detail, '') AS detail,
                    EXISTS (SELECT 1 FROM events s WHERE s.ticket_id = e.ticket_id AND s.message_ref = e.message_ref AND s.kind = 'staff-reply') AS staff,
                    (SELECT a.body FROM articles a WHERE a.ticket_id = e.ticket_id AND a.message_ref = e.message_ref AND a.direction = 'in' ORDER BY a.id LIMIT 1) AS text,
                    (SELECT m.kind FROM messages m WHERE m.id = e.message_ref) AS message_kind,
                    {TICKET_COLUMNS}
             FROM events e LEFT JOIN tickets t ON t.id = e.ticket_id
             WHERE e.id > $1 ORDER BY e.id LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(after)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut last = after;
        for r in &rows {
            let id: i64 = r.try_get("event_id")?;
            last = last.max(id);
            if !r.try_get::<bool, _>("on_ticket")? {
                continue;
            }
            let msg_staff: bool = r.try_get("staff")?;
            out.push(FeedEvent {
                id,
                kind: r.try_get("event_kind")?,
                detail: r.try_get("detail")?,
                staff_in_message: msg_staff,
                text: r.try_get("text")?,
                message_kind: r.try_get("message_kind")?,
                ticket: ticket_of(r)?,
            });
        }
        Ok((out, last))
    }

    /// Queues `posts` and moves the cursor from `from` to `to`, in one
    /// transaction; `false` (nothing written) when the cursor is no longer
    /// at `from`.
    pub async fn chat_enqueue(
        &self,
        from: i64,
        to: i64,
        posts: &[NewChatPost],
        now: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let moved = sqlx::query("UPDATE counters SET value = $1 WHERE name = $2 AND value = $3")
            .bind(to)
            .bind(CURSOR)
            .bind(from)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        // The posts as one script, as every other queued row is written.
        let mut s = Script::default();
        for p in posts {
            queue_chat(&mut s, p.ticket_id, &p.channel, &p.kind, &p.body, now);
        }
        s.run(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Chat posts due at `now`, oldest first; a post waits while an older
    /// one of its ticket is still queued (a thread reads in order), so each
    /// ticket has at most one here.
    pub async fn chat_due(&self, now: &str, limit: i64) -> Result<Vec<ChatPost>, StoreError> {
        let q = format!(
            "SELECT c.id AS post_id, c.ticket_id, c.channel, c.kind AS post_kind, c.body, c.attempts, c.posted_id, c.created_at AS queued_at,
                    {TICKET_COLUMNS}
             FROM chat_outbox c LEFT JOIN tickets t ON t.id = c.ticket_id
             WHERE c.status = 'queued' AND c.next_attempt_at <= $1
               AND NOT EXISTS (SELECT 1 FROM chat_outbox o
                               WHERE o.ticket_id = c.ticket_id AND o.status = 'queued' AND o.id < c.id)
             ORDER BY c.id LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(now)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let ticket_id: Option<i64> = r.try_get("ticket_id")?;
            let body: String = r.try_get("body")?;
            out.push(ChatPost {
                id: r.try_get("post_id")?,
                ticket: match ticket_id {
                    Some(_) => Some(ticket_of(r)?),
                    None => None,
                },
                channel: r.try_get("channel")?,
                kind: r.try_get("post_kind")?,
                body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
                attempts: r.try_get("attempts")?,
                posted_id: id_text(r.try_get("posted_id")?),
                created_at: r.try_get("queued_at")?,
            });
        }
        Ok(out)
    }

    /// Records that post `id` was posted as message `message` (its thread
    /// is still to be started).
    pub async fn chat_posted(&self, id: i64, message: u64) -> Result<(), StoreError> {
        self.write_one(
            sqlx::query("UPDATE chat_outbox SET posted_id = $1 WHERE id = $2")
                .bind(message.to_string())
                .bind(id),
        )
        .await?;
        Ok(())
    }

    /// Marks post `id` delivered.
    pub async fn chat_sent(&self, id: i64, now: &str) -> Result<(), StoreError> {
        self.write_one(
            sqlx::query(
                "UPDATE chat_outbox SET status = 'sent', attempts = attempts + 1, sent_at = $1, last_error = NULL WHERE id = $2",
            )
            .bind(now)
            .bind(id),
        )
        .await?;
        Ok(())
    }

    /// Post `id` failed: again at `next`, or (`None`) never.
    pub async fn chat_failed(
        &self,
        id: i64,
        error: &str,
        next: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write_one(
            sqlx::query(
                "UPDATE chat_outbox SET status = CASE WHEN $1 IS NULL THEN 'failed' ELSE 'queued' END,
                        attempts = attempts + 1, last_error = $2, next_attempt_at = COALESCE($1, next_attempt_at)
                 WHERE id = $3",
            )
            .bind(next)
            .bind(error)
            .bind(id),
        )
        .await?;
        Ok(())
    }

    /// The ticket's thread of `role` (`staff` or `intake`).
    pub async fn chat_thread(
        &self,
        ticket: i64,
        role: &str,
    ) -> Result<Option<ChatThread>, StoreError> {
        let row = sqlx::query(
            "SELECT channel_id, thread_id, created FROM chat_threads WHERE ticket_id = $1 AND role = $2",
        )
        .bind(ticket)
        .bind(role)
        .fetch_optional(self.pool())
        .await?;
        let Some(r) = row else { return Ok(None) };
        let (c, t): (String, String) = (r.try_get("channel_id")?, r.try_get("thread_id")?);
        Ok(Some(ChatThread {
            channel_id: c.parse().unwrap_or(0),
            thread_id: t.parse().unwrap_or(0),
            created: r.try_get::<i64, _>("created")? != 0,
        }))
    }

    /// Records the ticket's thread of `role`.
    pub async fn set_chat_thread(
        &self,
        ticket: i64,
        role: &str,
        thread: &ChatThread,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        self.write_one(
            sqlx::query(
                "INSERT INTO chat_threads (ticket_id, role, channel_id, thread_id, created, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (ticket_id, role) DO UPDATE SET channel_id = excluded.channel_id,
                     thread_id = excluded.thread_id, created = excluded.created",
            )
            .bind(ticket)
            .bind(role)
            .bind(thread.channel_id.to_string())
            .bind(thread.thread_id.to_string())
            .bind(i64::from(thread.created))
            .bind(ts(now)),
        )
        .await?;
        Ok(())
    }

    /// Records that ticket `number`'s customer thread is to be started from
    /// message `message` in `channel`, unless it has one.
    pub async fn first_intake_thread(
        &self,
        number: &str,
        channel: u64,
        message: u64,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        self.write_one(
            sqlx::query(
                "INSERT INTO chat_threads (ticket_id, role, channel_id, thread_id, created, created_at)
                 SELECT id, 'intake', $2, $3, 0, $4 FROM tickets WHERE number = $1
                 ON CONFLICT DO NOTHING",
            )
            .bind(number)
            .bind(channel.to_string())
            .bind(message.to_string())
            .bind(ts(now)),
        )
        .await?;
        Ok(())
    }

    /// The ticket whose thread `thread` is, and the thread's role.
    pub async fn thread_ticket(
        &self,
        thread: u64,
    ) -> Result<Option<(ChatTicket, String)>, StoreError> {
        let q = format!(
            "SELECT c.role, {TICKET_COLUMNS} FROM chat_threads c JOIN tickets t ON t.id = c.ticket_id WHERE c.thread_id = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(thread.to_string())
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(r) => Ok(Some((ticket_of(&r)?, r.try_get("role")?))),
            None => Ok(None),
        }
    }

    /// Whether `address` is the requester or a participant of the ticket.
    pub async fn is_participant(&self, ticket: i64, address: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM participants WHERE ticket_id = $1 AND address = $2)
                 OR EXISTS (SELECT 1 FROM tickets WHERE id = $1 AND requester = $2)",
        )
        .bind(ticket)
        .bind(address.to_ascii_lowercase())
        .fetch_one(self.pool())
        .await?)
    }

    /// A ticket by number, as chat shows it.
    pub async fn chat_ticket(&self, number: &str) -> Result<Option<ChatTicket>, StoreError> {
        let q = format!("SELECT {TICKET_COLUMNS} FROM tickets t WHERE t.number = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(number)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(r) => Some(ticket_of(&r)?),
            None => None,
        })
    }

    /// Records that the Discord event `id` (a message or interaction) is
    /// handled; `false` when it was already.
    pub async fn chat_seen(&self, id: &str, now: &str) -> Result<bool, StoreError> {
        let n = self
            .write_one(
                sqlx::query(
                    "INSERT INTO chat_seen (id, seen_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(now),
            )
            .await?;
        Ok(n == 1)
    }

    /// Forgets the Discord events handled before `before`.
    pub async fn prune_chat_seen(&self, before: &str) -> Result<u64, StoreError> {
        self.write_one(sqlx::query("DELETE FROM chat_seen WHERE seen_at < $1").bind(before))
            .await
    }

    /// Open tickets (new, open, pending) for a chat list — all, or those
    /// assigned to `assignee` (a key like `discord:ID`) — most urgent
    /// first, at most `limit`.
    pub async fn chat_list(
        &self,
        assignee: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ChatTicket>, StoreError> {
        let cond = if assignee.is_some() {
            "AND t.assignee = $2"
        } else {
            ""
        };
        let q = format!(
            "SELECT {TICKET_COLUMNS} FROM tickets t
             WHERE t.status IN ('new', 'open', 'pending') {cond}
             ORDER BY t.severity, t.sla_due_at IS NULL, t.sla_due_at, t.id LIMIT $1"
        );
        let mut sql = sqlx::query(sqlx::AssertSqlSafe(q)).bind(limit);
        if let Some(a) = assignee {
            sql = sql.bind(a);
        }
        let rows = sql.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| ticket_of(r).map_err(StoreError::from))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite(&dir.path().join("t.db"), 1)
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        (dir, store)
    }

    async fn ticket(store: &Store, id: i64) {
        let mut tx = store.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO tickets (id, number, subject, status, severity, requester, created_at, updated_at)
             VALUES ($1, $2, 's', 'new', 3, 'a@b.example', 'x', 'x')",
        )
        .bind(id)
        .bind(format!("{}", 10000 + id))
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query("INSERT INTO events (ticket_id, kind, detail, created_at) VALUES ($1, 'created', '', 'x')")
            .bind(id)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    fn post(ticket: i64) -> NewChatPost {
        NewChatPost {
            ticket_id: Some(ticket),
            channel: "staff".into(),
            kind: "new".into(),
            body: serde_json::json!({}),
        }
    }

    #[tokio::test]
    async fn the_feed_starts_now_and_moves_only_from_where_it_was() {
        let (_dir, store) = store().await;
        ticket(&store, 1).await;
        // Switched on after an event: history is not fed.
        let start = store.chat_cursor().await.unwrap();
        let (old, to) = store.chat_events(start, 10).await.unwrap();
        assert!(old.is_empty() && to == start);
        ticket(&store, 2).await;
        let (events, to) = store.chat_events(start, 10).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].ticket.number, "10002");
        assert!(store
            .chat_enqueue(start, to, &[post(2)], "2026-01-01T00:00:00Z")
            .await
            .unwrap());
        // A second feeder that read the same events writes nothing.
        assert!(!store
            .chat_enqueue(start, to, &[post(2)], "2026-01-01T00:00:00Z")
            .await
            .unwrap());
        assert_eq!(store.chat_cursor().await.unwrap(), to);
        assert_eq!(
            store
                .chat_due("2026-01-01T00:00:00Z", 10)
                .await
                .unwrap()
                .len(),
            1
        );
    }

    async fn due_ids(store: &Store, now: &str) -> Vec<i64> {
        let due = store.chat_due(now, 10).await.unwrap();
        due.iter().map(|p| p.id).collect()
    }

    #[tokio::test]
    async fn a_tickets_posts_go_out_one_after_the_other() {
        let (_dir, store) = store().await;
        ticket(&store, 1).await;
        ticket(&store, 2).await;
        let c = store.chat_cursor().await.unwrap();
        let now = "2026-01-01T00:00:00Z";
        store
            .chat_enqueue(c, c, &[post(1), post(1), post(2)], now)
            .await
            .unwrap();
        let ids = due_ids(&store, now).await;
        assert_eq!(ids, vec![1, 3], "the second post of ticket 1 waits");
        // The first fails and is retried later: the second still waits.
        store
            .chat_failed(1, "down", Some("2026-01-01T01:00:00Z"))
            .await
            .unwrap();
        let ids = due_ids(&store, now).await;
        assert_eq!(ids, vec![3]);
        store.chat_sent(1, now).await.unwrap();
        let ids = due_ids(&store, now).await;
        assert_eq!(ids, vec![2, 3]);
        // Given up: the ticket's next post goes on.
        store.chat_failed(2, "gone", None).await.unwrap();
        let ids = due_ids(&store, now).await;
        assert_eq!(ids, vec![3]);
    }

    #[tokio::test]
    async fn threads_and_seen_events_are_remembered() {
        let (_dir, store) = store().await;
        ticket(&store, 1).await;
        let th = ChatThread {
            channel_id: 100,
            thread_id: 555,
            created: false,
        };
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        store.set_chat_thread(1, "intake", &th, now).await.unwrap();
        assert_eq!(
            store.chat_thread(1, "intake").await.unwrap(),
            Some(th.clone())
        );
        assert_eq!(store.chat_thread(1, "staff").await.unwrap(), None);
        let (t, role) = store.thread_ticket(555).await.unwrap().unwrap();
        assert_eq!((t.number.as_str(), role.as_str()), ("10001", "intake"));
        assert!(store.thread_ticket(556).await.unwrap().is_none());
        assert!(store.chat_seen("m1", "2026-01-01T00:00:00Z").await.unwrap());
        assert!(!store.chat_seen("m1", "2026-01-01T00:00:01Z").await.unwrap());
        assert_eq!(
            store.prune_chat_seen("2026-01-02T00:00:00Z").await.unwrap(),
            1
        );
        assert!(store.is_participant(1, "A@b.example").await.unwrap());
        assert!(!store.is_participant(1, "c@b.example").await.unwrap());
    }
}
