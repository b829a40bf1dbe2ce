//! Intake writes: a message's claim (its raw bytes under its dedupe key,
//! and in the same call what its decision needs looked up) and the write
//! of its [`IntakePlan`]: two calls to the database per message.

use super::*;

/// Row written into `messages` for a message, before the decision.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// The raw bytes.
    pub raw: &'a [u8],
    /// Where it came from (`stdin`, `file`, `maildir:<path>`, …).
    pub source: &'a str,
    /// When it arrived (`ts` format), at or before the commit: see
    /// [`crate::ingest::arrival`].
    pub arrived_at: &'a str,
    /// Its Message-ID, when it has one.
    pub message_id: Option<&'a MessageId>,
    /// SHA-256 hex of the raw bytes.
    pub sha256: &'a str,
    /// The key that makes a second delivery a duplicate
    /// ([`crate::ingest::dedupe_key`]).
    pub dedupe_key: &'a str,
}

/// What [`write_intake`] wrote.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The ticket the message is on.
    pub ticket: Option<TicketNumber>,
    /// That ticket's severity.
    pub severity: Option<Severity>,
    /// The ticket's row id.
    pub ticket_id: Option<i64>,
}

/// The next free row ids and the ticket sequence's current value, read
/// under the transaction's write lock together with the lookups. They stay
/// valid until [`write_intake`] writes with them in the same transaction (nothing
/// else writes meanwhile: `BEGIN IMMEDIATE` holds the lock). Should that
/// ever be broken, the primary key refuses the row and the message is not
/// stored — an error, never a row on the wrong ticket.
#[derive(Debug, Clone, Copy, Default)]
pub struct NextIds {
    /// Highest `tickets.id` so far.
    pub ticket: i64,
    /// Highest `articles.id` so far.
    pub article: i64,
    /// Highest `outbox.id` so far.
    pub outbox: i64,
    /// The ticket sequence's value (`None`: no ticket yet).
    pub seq: Option<i64>,
}

/// What the decision of a parsed message needs looked up.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// Ids and numbers to find tickets by.
    pub keys: &'a LookupKeys,
    /// The would-be confirmation recipient, for the hourly limit.
    pub reply_address: Option<&'a str>,
    /// One hour before now (`ts` format).
    pub hour_ago: &'a str,
    /// The sender's organisation (directory id), to count its cases.
    pub organisation: Option<&'a str>,
    /// Start of the current quarter (`ts` format).
    pub quarter_start: &'a str,
    /// The incident key of a monitoring alert.
    pub incident: Option<&'a str>,
    /// For a service alert: the incident key of its host, whose open
    /// DOWN ticket the alert joins.
    pub host_incident: Option<&'a str>,
}

/// Result of claiming a message's dedupe key.
#[derive(Debug, Clone)]
pub enum Claim {
    /// First time seen.
    New {
        /// The new `messages` row.
        row: i64,
        /// What was found for the decision (empty without a probe).
        found: Box<Found>,
        /// Ids for [`write_intake`].
        next: NextIds,
    },
    /// Seen before.
    Duplicate {
        /// Ticket of the first delivery, if any.
        ticket: Option<TicketNumber>,
        /// Severity of that ticket.
        severity: Option<Severity>,
    },
}

/// Ticket columns the decision needs, with one row per participant
/// (`p.address` NULL when there is none): then the reply address, the
/// newest customer mail's Message-ID and the newest Message-IDs of the
/// customer's mails and ours on the ticket (space-separated, newest first,
/// at most [`THREAD_IDS`]; staff members' own mails
/// are internal), read through `articles_ticket` so that a mail of ours on
/// the ticket threads without another query.
pub(super) const TICKET_INFO_COLUMNS: &str = "t.id, t.number, t.requester, t.status, p.address, t.reply_to, t.language,
    (SELECT a.message_id FROM articles a WHERE a.ticket_id = t.id AND a.direction = 'in' AND a.kind = 'mail'
       AND a.message_id IS NOT NULL ORDER BY a.id DESC LIMIT 1),
    (SELECT group_concat(x.message_id, ' ') FROM (SELECT a.message_id FROM articles a
       WHERE a.ticket_id = t.id AND a.message_id IS NOT NULL AND (a.direction = 'out' OR a.kind = 'mail')
       ORDER BY a.id DESC LIMIT 10) x)";

/// How many columns [`TICKET_INFO_COLUMNS`] has.
pub(super) const TICKET_INFO_WIDTH: usize = 9;

/// A ticket from its rows of [`TICKET_INFO_COLUMNS`] starting at column
/// `at`; `None` when there are no rows.
pub(super) fn ticket_info_from_rows<'r>(
    mut rows: impl Iterator<Item = &'r SqliteRow>,
    at: usize,
) -> Result<Option<TicketInfo>, StoreError> {
    let Some(first) = rows.next() else {
        return Ok(None);
    };
    let mut participants = Vec::new();
    for r in std::iter::once(first).chain(rows) {
        if let Some(a) = r.try_get::<Option<String>, _>(at + 4)? {
            participants.push(a);
        }
    }
    let newest_first: Option<String> = first.try_get(at + 8)?;
    let mut thread: Vec<MessageId> = newest_first
        .as_deref()
        .unwrap_or("")
        .split(' ')
        .filter_map(MessageId::parse)
        .take(THREAD_IDS)
        .collect();
    thread.reverse();
    Ok(Some(TicketInfo {
        id: first.try_get(at)?,
        number: TicketNumber(first.try_get(at + 1)?),
        requester: first.try_get(at + 2)?,
        participants,
        status: Status::parse(first.try_get::<&str, _>(at + 3)?),
        reply_to: first.try_get(at + 5)?,
        language: first.try_get(at + 6)?,
        last_inbound: first
            .try_get::<Option<&str>, _>(at + 7)?
            .and_then(MessageId::parse),
        thread,
    }))
}

/// Appends a query for tickets: rows `(label, key, TICKET_INFO_COLUMNS)`
/// for each of `ids` (Message-IDs we stored or sent) or, with `by_number`,
/// each ticket number.
pub(super) fn find_tickets(s: &mut Script, label: &str, keys: &[&str], by_number: bool) {
    if keys.is_empty() {
        return;
    }
    let list = s.list(keys, |s, k| s.arg(*k));
    // `label` is one of this module's constants, never input.
    if by_number {
        s.push(format_args!(
            "SELECT '{label}', t.number, {TICKET_INFO_COLUMNS} FROM tickets t
             LEFT JOIN participants p ON p.ticket_id = t.id WHERE t.number IN {list}"
        ));
    } else {
        s.push(format_args!(
            "SELECT '{label}', th.message_id, {TICKET_INFO_COLUMNS} FROM thread_ids th
             JOIN tickets t ON t.id = th.ticket_id
             LEFT JOIN participants p ON p.ticket_id = t.id WHERE th.message_id IN {list}"
        ));
    }
    s.end();
}

/// The ticket of the first key (in the order given) that has rows labelled
/// `label`.
pub(super) fn first_ticket(
    rows: &[SqliteRow],
    label: &str,
    keys: &[&str],
) -> Result<Option<TicketInfo>, StoreError> {
    for k in keys {
        let mut matching = rows
            .iter()
            .filter(|r| {
                r.try_get::<&str, _>(0).is_ok_and(|l| l == label)
                    && r.try_get::<&str, _>(1).is_ok_and(|m| m == *k)
            })
            .peekable();
        if matching.peek().is_some() {
            return ticket_info_from_rows(matching, 2);
        }
    }
    Ok(None)
}

/// Stores the raw message under its dedupe key and, in the same call, looks
/// up what its decision needs (`probe`) and the ids [`write_intake`] will use. A
/// second delivery is recorded as a duplicate (its bytes kept when they
/// differ).
pub async fn claim(
    conn: &mut SqliteConnection,
    m: &NewMessage<'_>,
    probe: Option<&Probe<'_>>,
    now: &str,
) -> Result<Claim, StoreError> {
    let mut s = Script::default();
    let (key, mid, sha, size, raw, source, at, arrived) = (
        s.arg(m.dedupe_key),
        s.arg(m.message_id.map(|i| i.as_str())),
        s.arg(m.sha256),
        s.arg(m.raw.len() as i64),
        s.arg(inline_part(m.raw)),
        s.arg(m.source),
        s.arg(now),
        s.arg(m.arrived_at),
    );
    s.push(format_args!(
        "INSERT INTO messages (dedupe_key, message_id, sha256, size, raw, source, received_at, arrived_at, action)
         VALUES ({key}, {mid}, {sha}, {size}, {raw}, {source}, {at}, {arrived}, 'pending')
         ON CONFLICT (dedupe_key) DO NOTHING RETURNING 'claim', id"
    ));
    s.end();
    s.push(format_args!(
        "SELECT 'next', (SELECT COALESCE(MAX(id), 0) FROM tickets), (SELECT COALESCE(MAX(id), 0) FROM articles),
                (SELECT COALESCE(MAX(id), 0) FROM outbox), (SELECT value FROM counters WHERE name = 'ticket')"
    ));
    s.end();
    let (thread, signed, staff, tag, bounced, bounced_nums) = match probe {
        Some(p) => (
            keys_of(&p.keys.thread_ids, MessageId::as_str),
            keys_of(&p.keys.signed_numbers, TicketNumber::as_str),
            keys_of(&p.keys.staff_numbers, TicketNumber::as_str),
            p.keys
                .tag_number
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>(),
            keys_of(&p.keys.bounced_ids, MessageId::as_str),
            keys_of(&p.keys.bounced_numbers, TicketNumber::as_str),
        ),
        None => Default::default(),
    };
    find_tickets(&mut s, "ref", &thread, false);
    find_tickets(&mut s, "sig", &signed, true);
    find_tickets(&mut s, "staff", &staff, true);
    find_tickets(&mut s, "tag", &tag, true);
    find_tickets(&mut s, "bref", &bounced, false);
    find_tickets(&mut s, "bsig", &bounced_nums, true);
    if let Some(addr) = probe.and_then(|p| p.reply_address) {
        let (a, h) = (
            s.arg(addr.to_ascii_lowercase()),
            s.arg(probe.map(|p| p.hour_ago)),
        );
        s.push(format_args!(
            "SELECT 'auto', COUNT(*) FROM auto_mail_log WHERE recipient = {a} AND sent_at > {h}"
        ));
        s.end();
    }
    let incident_keys: Vec<&str> = probe.and_then(|p| p.incident).into_iter().collect();
    let host_keys: Vec<&str> = probe.and_then(|p| p.host_incident).into_iter().collect();
    for (label, keys) in [("incident", &incident_keys), ("hostinc", &host_keys)] {
        if let Some(key) = keys.first() {
            let k = s.arg(*key);
            s.push(format_args!(
                "SELECT '{label}', i.key, {TICKET_INFO_COLUMNS}, i.problem, i.recovered_at FROM incidents i
                 JOIN tickets t ON t.id = i.ticket_id
                 LEFT JOIN participants p ON p.ticket_id = t.id WHERE i.key = {k}"
            ));
            s.end();
        }
    }
    if let Some(p) = probe {
        if let Some(org) = p.organisation {
            let (o, q) = (s.arg(org), s.arg(p.quarter_start));
            s.push(format_args!(
                "SELECT 'cases', COUNT(*) FROM tickets WHERE organisation = {o} AND created_at >= {q}"
            ));
            s.end();
        }
    }
    let rows = s.run(conn).await?;
    let label = |r: &SqliteRow| r.try_get::<String, _>(0).unwrap_or_default();
    let Some(claimed) = rows.iter().find(|r| label(r) == "claim") else {
        return duplicate(conn, m, now).await;
    };
    store_chunks(conn, "message", claimed.try_get(1)?, m.raw).await?;
    let mut next = NextIds::default();
    let mut auto = 0i64;
    let mut cases = 0i64;
    for r in &rows {
        match label(r).as_str() {
            "next" => {
                next = NextIds {
                    ticket: r.try_get(1)?,
                    article: r.try_get(2)?,
                    outbox: r.try_get(3)?,
                    seq: r.try_get(4)?,
                }
            }
            "auto" => auto = r.try_get(1)?,
            "cases" => cases = r.try_get(1)?,
            _ => {}
        }
    }
    Ok(Claim::New {
        row: claimed.try_get(1)?,
        found: Box::new(Found {
            by_stored_id: first_ticket(&rows, "ref", &thread)?,
            by_signed_number: first_ticket(&rows, "sig", &signed)?,
            by_staff_number: first_ticket(&rows, "staff", &staff)?,
            by_tag: first_ticket(&rows, "tag", &tag)?,
            bounced_by_id: first_ticket(&rows, "bref", &bounced)?,
            bounced_by_number: first_ticket(&rows, "bsig", &bounced_nums)?,
            auto_mails_last_hour: u32::try_from(auto).unwrap_or(u32::MAX),
            incident: incident_from(&rows, "incident", &incident_keys)?,
            host_incident: incident_from(&rows, "hostinc", &host_keys)?,
            org_cases: u32::try_from(cases).unwrap_or(u32::MAX),
        }),
        next,
    })
}

/// The incident the claim's rows labelled `label` found, with its ticket.
pub(super) fn incident_from(
    rows: &[SqliteRow],
    label: &str,
    keys: &[&str],
) -> Result<Option<FoundIncident>, StoreError> {
    let Some(ticket) = first_ticket(rows, label, keys)? else {
        return Ok(None);
    };
    let row = rows
        .iter()
        .find(|r| r.try_get::<&str, _>(0).is_ok_and(|l| l == label));
    let problem = row
        .map(|r| r.try_get::<i64, _>(2 + TICKET_INFO_WIDTH))
        .transpose()?
        .unwrap_or(0);
    let recovered_at: Option<String> = row
        .map(|r| r.try_get(3 + TICKET_INFO_WIDTH))
        .transpose()?
        .flatten();
    Ok(Some(FoundIncident {
        ticket,
        problem: problem != 0,
        recovered_at,
    }))
}

/// At most 50 of `items` as text: a References header of thousands of ids
/// must not become thousands of parameters.
/// Raw bytes kept inline in a row (`messages.raw`, `duplicates.raw`); the
/// rest of a bigger message goes into `raw_chunks` in pieces of this size,
/// so that no copy the driver or SQLite makes is bigger than one piece.
pub const RAW_CHUNK: usize = 1024 * 1024;

/// An article's attachments over one piece: the article's id and, for each,
/// its position among the article's attachments and its content.
pub(super) type Pieced<'a> = (i64, Vec<(usize, &'a [u8])>);

/// The inline part of a raw message: its first [`RAW_CHUNK`] bytes.
pub(super) fn inline_part(raw: &[u8]) -> &[u8] {
    &raw[..raw.len().min(RAW_CHUNK)]
}

/// Stores what [`inline_part`] leaves out as `raw_chunks` rows 1, 2, … of
/// row `row_id` of `kind` (`message` or `duplicate`). Nothing for a
/// message of one piece: the usual mail costs no extra statement.
pub(super) async fn store_chunks(
    conn: &mut SqliteConnection,
    kind: &str,
    row_id: i64,
    raw: &[u8],
) -> Result<(), StoreError> {
    for (seq, piece) in raw.chunks(RAW_CHUNK).enumerate().skip(1) {
        sqlx::query("INSERT INTO raw_chunks (kind, row_id, seq, data) VALUES ($1, $2, $3, $4)")
            .bind(kind)
            .bind(row_id)
            .bind(seq as i64)
            .bind(piece)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

pub(super) fn keys_of<T>(items: &[T], text: impl Fn(&T) -> &str) -> Vec<&str> {
    items.iter().take(50).map(text).collect()
}

/// Records a second delivery of a stored message.
pub(super) async fn duplicate(
    conn: &mut SqliteConnection,
    m: &NewMessage<'_>,
    now: &str,
) -> Result<Claim, StoreError> {
    let orig = sqlx::query(
        "SELECT m.id, m.sha256, t.number, t.severity FROM messages m
         LEFT JOIN tickets t ON t.id = m.ticket_id WHERE m.dedupe_key = $1",
    )
    .bind(m.dedupe_key)
    .fetch_one(&mut *conn)
    .await?;
    let orig_id: i64 = orig.try_get(0)?;
    let orig_sha: String = orig.try_get(1)?;
    let number: Option<String> = orig.try_get(2)?;
    let severity: Option<i64> = orig.try_get(3)?;
    let raw = (orig_sha != m.sha256).then_some(m.raw);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO duplicates (original_id, sha256, raw, source, received_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(orig_id)
    .bind(m.sha256)
    .bind(raw.map(inline_part))
    .bind(m.source)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    if let Some(raw) = raw {
        store_chunks(conn, "duplicate", id, raw).await?;
    }
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
    let mut s = Script::default();
    let (r, m) = (s.arg(reason), s.arg(message_row));
    s.push(format_args!(
        "UPDATE messages SET action = 'quarantined', reason = {r} WHERE id = {m}"
    ));
    s.end();
    events(
        &mut s,
        None,
        Some(message_row),
        &[("quarantined", reason)],
        now,
    );
    s.run(conn).await?;
    Ok(())
}

/// The language recorded on a ticket for its customer's mails, if any.
pub async fn ticket_language(
    conn: &mut SqliteConnection,
    ticket_id: i64,
) -> Result<Option<String>, StoreError> {
    let l: Option<Option<String>> =
        sqlx::query_scalar("SELECT language FROM tickets WHERE id = $1")
            .bind(ticket_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(l.flatten())
}

/// Records the language of a ticket's customer mails, unless it has one:
/// the first choice stays for the ticket's life.
pub async fn set_ticket_language(
    conn: &mut SqliteConnection,
    ticket_id: i64,
    language: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE tickets SET language = $2 WHERE id = $1 AND language IS NULL")
        .bind(ticket_id)
        .bind(language)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Writes an intake plan, in one call: ticket or article, attachments,
/// ids, participants, bounces, notes, the audit events, the automatic mails
/// in the outbox, the incident, and the message's final record. `next`
/// comes from the [`claim`] of this message in this transaction. Writes
/// what it is given: every text, status, mail and a new ticket's SLA rows
/// were computed before.
pub async fn write_intake(
    conn: &mut SqliteConnection,
    next: NextIds,
    plan: &IntakePlan<'_>,
) -> Result<Applied, StoreError> {
    let mut s = Script::default();
    let now = plan.now;
    let message_row = plan.message_row;
    let (ticket_id, number, severity) = match &plan.ticket {
        TicketWrite::New(t) => {
            let id = next.ticket + 1;
            let v = s.arg(t.seq);
            s.push(format_args!(
                "INSERT INTO counters (name, value) VALUES ('ticket', {v})
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value"
            ));
            s.end();
            let ps = [
                s.arg(id),
                s.arg(t.number.as_str()),
                s.arg(t.subject),
                s.arg(t.severity.level() as i64),
                s.arg(t.rule),
                s.arg(t.requester.key()),
                s.arg(t.requester.name.as_deref()),
                s.arg(t.linked.map(|n| n.as_str())),
                s.arg(now),
                s.arg(t.organisation),
                s.arg(t.flags.as_deref()),
                s.arg(t.queue),
                s.arg(plan.arrived),
                s.arg(t.reply_to),
                s.arg(t.language),
            ];
            s.push(format_args!(
                "INSERT INTO tickets (id, number, subject, status, severity, severity_rule, requester, requester_name, linked_number, created_at, updated_at, organisation, flags, queue, arrived_at, reply_to, language)
                 VALUES ({}, {}, {}, 'new', {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                ps[0], ps[1], ps[2], ps[3], ps[4], ps[5], ps[6], ps[7], ps[8], ps[8], ps[9], ps[10], ps[11], ps[12], ps[13], ps[14]
            ));
            s.end();
            ticket_texts(
                &mut s,
                "INSERT INTO ticket_tags (ticket_id, tag) VALUES ",
                id,
                &t.tags,
            );
            ticket_texts(
                &mut s,
                "INSERT INTO participants (ticket_id, address) VALUES ",
                id,
                &t.participants,
            );
            // A new ticket's clock starts at the arrival of its first
            // message, with nothing in its history, and was evaluated by
            // the caller: its SLA rows go into this same script.
            if let Some(rows) = &t.sla {
                sla::write(&mut s, id, rows, true);
            }
            (Some(id), Some(t.number.clone()), Some(t.severity))
        }
        TicketWrite::Existing(u) => {
            let (at, id) = (s.arg(now), s.arg(u.id));
            let status = match u.status {
                Some(st) => format!("status = {}, ", s.arg(st.as_str())),
                None => String::new(),
            };
            let reply_to = match &u.reply_to {
                Some(r) => format!("reply_to = {}, ", s.arg(*r)),
                None => String::new(),
            };
            s.push(format_args!(
                "UPDATE tickets SET {status}{reply_to}updated_at = {at} WHERE id = {id} RETURNING 'severity', severity"
            ));
            s.end();
            ticket_texts(
                &mut s,
                "INSERT INTO participants (ticket_id, address) VALUES ",
                u.id,
                &u.new_participants,
            );
            (Some(u.id), Some(u.number.clone()), None)
        }
        TicketWrite::Nothing => (None, None, None),
    };
    let list: Vec<(&str, &str)> = plan.events.iter().map(|(k, d)| (*k, d.as_str())).collect();
    events(&mut s, ticket_id, Some(message_row), &list, now);

    s.rows(
        "INSERT INTO bounces (ticket_id, message_ref, recipient, action, status, diagnostic, created_at) VALUES ",
        &plan.bounces,
        "",
        |s, r| {
            let (t, m, rc, a, st, dg, at) = (
                s.arg(ticket_id),
                s.arg(message_row),
                s.arg(r.recipient.as_str()),
                s.arg(r.action),
                s.arg(r.status),
                s.arg(r.diagnostic),
                s.arg(now),
            );
            format!("({t}, {m}, {rc}, {a}, {st}, {dg}, {at})")
        },
    );

    let outbox_ids: Vec<i64> = (1..=plan.mails.len() as i64)
        .map(|i| next.outbox + i)
        .collect();
    for (q, id) in plan.mails.iter().zip(&outbox_ids) {
        queue_outgoing(&mut s, *id, ticket_id, q.kind, &q.mail, now);
        if q.counts_hourly {
            s.rows(
                "INSERT INTO auto_mail_log (recipient, sent_at) VALUES ",
                &q.mail.to,
                "",
                |s, r| {
                    let (r, at) = (s.arg(r.to_ascii_lowercase()), s.arg(now));
                    format!("({r}, {at})")
                },
            );
        }
    }

    if let (Some(c), Some(tid)) = (plan.incident, ticket_id) {
        let (k, t, st, tx, at) = (
            s.arg(c.key.as_str()),
            s.arg(tid),
            s.arg(c.state.as_str()),
            s.arg(c.text.as_str()),
            s.arg(now),
        );
        match c.event {
            IncidentEvent::Opened => s.push(format_args!(
                "INSERT INTO incidents (key, ticket_id, state, problem, occurrences, last_text, last_at)
                 VALUES ({k}, {t}, {st}, 1, 1, {tx}, {at})
                 ON CONFLICT (key) DO UPDATE SET ticket_id = excluded.ticket_id, state = excluded.state,
                   problem = 1, occurrences = 1, last_text = excluded.last_text, last_at = excluded.last_at,
                   recovered_at = NULL"
            )),
            IncidentEvent::Repeated | IncidentEvent::Reopened => s.push(format_args!(
                "UPDATE incidents SET occurrences = occurrences + 1, problem = 1, state = {st},
                   last_text = {tx}, last_at = {at}, recovered_at = NULL WHERE key = {k} AND ticket_id = {t}"
            )),
            IncidentEvent::Recovered => s.push(format_args!(
                "UPDATE incidents SET problem = 0, state = {st}, last_text = {tx}, last_at = {at},
                   recovered_at = {at} WHERE key = {k} AND ticket_id = {t}"
            )),
        }
        s.end();
        if let (IncidentEvent::Recovered, Some(due)) = (c.event, &c.resolve_at) {
            let due = s.arg(due.as_str());
            s.push(format_args!(
                "INSERT INTO timers (kind, ticket_id, key, due_at, created_at)
                 VALUES ('recovery-hold', {t}, {k}, {due}, {at})"
            ));
            s.end();
        }
    }

    // Attachments over one piece: their inline part goes in with the rest,
    // the other pieces after it (by the article and their order).
    let mut pieced: Option<Pieced<'_>> = None;
    if let (Some(w), Some(tid)) = (&plan.articles, ticket_id) {
        let a = &w.inbound;
        let mut list = Vec::with_capacity(1 + plan.mails.len() + w.notes.len());
        list.push(Article {
            direction: "in",
            kind: a.kind,
            from_addr: a.from_addr,
            from_name: a.from_name,
            to_addrs: a.to_addrs.clone(),
            cc_addrs: a.cc_addrs.clone(),
            subject: Some(a.subject),
            message_id: a.message_id,
            body: &a.body,
            message_ref: Some(message_row),
            outbox_ref: None,
        });
        for (q, id) in plan.mails.iter().zip(&outbox_ids) {
            list.push(Article::outgoing(q.kind, &q.mail, *id));
        }
        list.extend(w.notes.iter().map(|n| Article::note(n)));
        let inbound = next.article + 1;
        articles(&mut s, tid, Some(inbound), &list, now);
        s.rows(
            "INSERT INTO attachments (article_id, filename, content_type, size, sha256, content) VALUES ",
            &w.attachments,
            "",
            |s, a| {
                let (id, f, ct, sz, sh, c) = (
                    s.arg(inbound),
                    s.arg(a.filename),
                    s.arg(a.content_type),
                    s.arg(a.content.len() as i64),
                    s.arg(a.sha256.as_str()),
                    s.arg(inline_part(a.content)),
                );
                format!("({id}, {f}, {ct}, {sz}, {sh}, {c})")
            },
        );
        let big: Vec<(usize, &[u8])> = w
            .attachments
            .iter()
            .enumerate()
            .filter(|(_, a)| a.content.len() > RAW_CHUNK)
            .map(|(i, a)| (i, a.content))
            .collect();
        if !big.is_empty() {
            pieced = Some((inbound, big));
        }
        let mut ids = w.thread_ids.clone();
        ids.extend(plan.mails.iter().map(|q| q.mail.message_id.as_str()));
        ticket_texts(
            &mut s,
            "INSERT INTO thread_ids (ticket_id, message_id) VALUES ",
            tid,
            &ids,
        );
    }

    let o = &plan.outcome;
    let ps = [
        s.arg(o.action),
        s.arg(o.kind),
        s.arg(o.reason.as_str()),
        s.arg(ticket_id),
        s.arg(message_row),
    ];
    s.push(format_args!(
        "UPDATE messages SET action = {}, kind = {}, reason = {}, ticket_id = {} WHERE id = {}",
        ps[0], ps[1], ps[2], ps[3], ps[4]
    ));
    s.end();
    let rows = s.run(conn).await?;
    if let Some((article, big)) = pieced {
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM attachments WHERE article_id = $1 ORDER BY id")
                .bind(article)
                .fetch_all(&mut *conn)
                .await?;
        for (i, content) in big {
            let id = ids.get(i).copied().ok_or_else(|| {
                StoreError::Corrupt(format!("attachment {i} of article {article} not written"))
            })?;
            store_chunks(conn, "attachment", id, content).await?;
        }
    }
    let severity = match severity {
        Some(sev) => Some(sev),
        None => rows
            .iter()
            .find(|r| r.try_get::<&str, _>(0).is_ok_and(|l| l == "severity"))
            .map(|r| r.try_get::<i64, _>(1))
            .transpose()?
            .and_then(|v| Severity::try_from(v).ok()),
    };
    Ok(Applied {
        ticket: number,
        severity,
        ticket_id,
    })
}
