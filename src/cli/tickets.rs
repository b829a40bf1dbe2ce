//! `ticketd tickets …`: list, show, the raw mail and attachments, and the
//! staff actions (reply, status, severity, note, assign).

use super::output::{cut, desk_tz, local, print_json, write_bytes};
use super::sla::print_sla;
use super::{author_of, intake, open};
use crate::cli::args::TicketsCmd;
use anyhow::{anyhow, Context};
use std::path::Path;
use std::process::ExitCode;
use ticketd::config::Config;
use ticketd::domain::{Severity, Status};
use ticketd::service::{DataDir, StaffAction};

/// `ticketd tickets …`.
pub async fn tickets(cfg: &Config, data_dir: &Path, cmd: TicketsCmd) -> anyhow::Result<ExitCode> {
    let (_, store) = open(cfg, data_dir, 1).await?;
    match cmd {
        TicketsCmd::List {
            json,
            status,
            severity,
            organisation,
            since,
            limit,
        } => {
            let tz = desk_tz(cfg);
            let filter = ticket_filter(
                &tz,
                status,
                severity,
                organisation,
                since,
                limit,
                json,
                jiff::Timestamp::now(),
            )?;
            let mut list = store.list_tickets_by(&filter).await?;
            if json {
                print_json(&list)?;
            } else {
                let more = limit.is_none() && list.len() as i64 > LIST_DEFAULT;
                if more {
                    list.truncate(LIST_DEFAULT as usize);
                }
                print_ticket_list(&tz, &list);
                if more {
                    eprintln!(
                        "(the newest {LIST_DEFAULT} shown; --limit N for more, --json for all)"
                    );
                }
            }
        }
        TicketsCmd::Attachment {
            number,
            id,
            output,
            force,
        } => {
            let (info, content) = store.ticket_attachment(&number, id).await?;
            write_bytes(&content, output.as_deref(), force, &info.filename)?;
        }
        TicketsCmd::Raw {
            number,
            article,
            output,
            force,
        } => {
            let m = store.article_mail(&number, article).await?;
            let what = format!("article {} of ticket {number}", m.article);
            write_bytes(&m.raw, output.as_deref(), force, &what)?;
        }
        TicketsCmd::Show { number, json } => {
            let Some(t) = store.show_ticket(&number).await? else {
                return Err(anyhow!("no ticket {number}"));
            };
            let data = DataDir::open(data_dir)?;
            let intake = intake(cfg, &data, &store).await?;
            let sla = intake
                .sla_view(&store, &number, jiff::Timestamp::now())
                .await?;
            if json {
                let mut v = serde_json::to_value(&t)?;
                if let Some(map) = v.as_object_mut() {
                    map.insert("sla".into(), serde_json::to_value(&sla)?);
                }
                print_json(&v)?;
            } else {
                print_ticket(&desk_tz(cfg), &t);
                if let Some(s) = &sla {
                    println!();
                    print_sla(s, false);
                }
            }
        }
        TicketsCmd::Reply {
            number,
            text,
            pending,
            cc,
            from_name,
            author,
        } => {
            let mut copies: Vec<ticketd::domain::Mailbox> = Vec::new();
            for a in &cc {
                let m = cc_address(a)?;
                if !copies
                    .iter()
                    .any(|c| c.address.eq_ignore_ascii_case(&m.address))
                {
                    copies.push(m);
                }
            }
            let cc = copies;
            let text = match text {
                Some(t) => t,
                None => {
                    let raw = ticketd::sources::read_stdin(cfg.intake.max_message_bytes)
                        .context("cannot read the reply from stdin")?;
                    String::from_utf8(raw)
                        .map_err(|_| anyhow!("the reply on stdin is not UTF-8"))?
                }
            };
            let action = StaffAction::Reply {
                text,
                then_pending: pending,
                cc,
                staff_name: from_name,
            };
            act(cfg, data_dir, &store, &number, &action, author).await?;
        }
        TicketsCmd::Status {
            number,
            status,
            author,
        } => {
            let to = match status.trim().to_ascii_lowercase().as_str() {
                "open" => Status::Open,
                "pending" => Status::Pending,
                "resolved" => Status::Resolved,
                "closed" => Status::Closed,
                other => {
                    return Err(anyhow!(
                        "status {other:?}: use open, pending, resolved or closed"
                    ))
                }
            };
            act(
                cfg,
                data_dir,
                &store,
                &number,
                &StaffAction::Status(to),
                author,
            )
            .await?;
        }
        TicketsCmd::Severity {
            number,
            severity,
            author,
        } => {
            let sev = Severity::try_from(severity).map_err(|e| anyhow!(e))?;
            act(
                cfg,
                data_dir,
                &store,
                &number,
                &StaffAction::Severity(sev),
                author,
            )
            .await?;
        }
        TicketsCmd::Note {
            number,
            text,
            author,
        } => {
            act(
                cfg,
                data_dir,
                &store,
                &number,
                &StaffAction::Note(text),
                author,
            )
            .await?;
        }
        TicketsCmd::Assign {
            number,
            assignee,
            author,
        } => {
            let key = if assignee.contains(':') {
                assignee.clone()
            } else {
                format!("cli:{assignee}")
            };
            act(
                cfg,
                data_dir,
                &store,
                &number,
                &StaffAction::Assign {
                    key,
                    name: assignee,
                },
                author,
            )
            .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Does a staff action and says what changed.
async fn act(
    cfg: &Config,
    data_dir: &Path,
    store: &ticketd::store::Store,
    number: &str,
    action: &StaffAction,
    author: Option<String>,
) -> anyhow::Result<()> {
    let data = DataDir::open(data_dir)?;
    let intake = intake(cfg, &data, store).await?;
    let now = jiff::Timestamp::now();
    let done = intake
        .act(store, number, action, &author_of(author), now)
        .await?;
    let what = match action {
        StaffAction::Reply { then_pending, .. } => format!(
            "reply queued{}",
            if *then_pending {
                "; ticket pending"
            } else {
                ""
            }
        ),
        StaffAction::Status(s) if done.changed => format!("status {}", s.as_str()),
        StaffAction::Status(s) => format!("already {}", s.as_str()),
        StaffAction::Severity(s) if done.changed => format!("severity {}", s.level()),
        StaffAction::Severity(s) => format!("already severity {}", s.level()),
        StaffAction::Note(_) => "note added".into(),
        StaffAction::Assign { name, .. } if done.changed => format!("assigned to {name}"),
        StaffAction::Assign { name, .. } => format!("already assigned to {name}"),
    };
    let sla = match &done.sla {
        Some(e) => match &e.next_due {
            Some((due, target)) => format!(
                "; SLA {} ({target} due {})",
                e.state,
                intake.staff_time(*due)
            ),
            None => format!("; SLA {}", e.state),
        },
        None => String::new(),
    };
    println!("ticket {}: {what}{sla}", done.number);
    Ok(())
}

fn print_ticket(tz: &jiff::tz::TimeZone, t: &ticketd::store::TicketView) {
    let s = &t.summary;
    println!(
        "Ticket {}  [{}]  severity {}",
        s.number, s.status, s.severity
    );
    println!("Subject:   {}", s.subject);
    println!("Requester: {}", s.requester);
    if let Some(r) = &t.reply_to {
        println!("Reply-To:  {r} (mail to the customer goes there)");
    }
    if let Some(o) = &s.organisation {
        println!("Customer:  {o}");
    }
    if !s.flags.is_empty() {
        println!("Flags:     {}", s.flags.join(", "));
    }
    if let Some(q) = &s.queue {
        println!("Queue:     {q}");
    }
    if !s.tags.is_empty() {
        println!("Tags:      {}", s.tags.join(", "));
    }
    // The receipt timestamp the customer was told and the SLA counts
    // from; `Created` is when ticketd stored that message.
    println!(
        "Received:  {}   (arrival: receipt timestamp, SLA start)",
        local(tz, &t.arrived_at)
    );
    println!(
        "Created:   {}   updated {}",
        local(tz, &s.created_at),
        local(tz, &s.updated_at)
    );
    if let Some(r) = &t.severity_rule {
        println!("Rule:      {r}");
    }
    if let Some(a) = &t.assignee {
        println!("Assignee:  {a}");
    }
    if let Some(l) = &s.linked_ticket {
        println!("Linked:    refers to ticket {l}");
    }
    for l in &t.linked_from {
        println!("Linked:    ticket {l} refers to this one");
    }
    println!("Participants: {}", t.participants.join(", "));
    if let Some(i) = &t.incident {
        println!(
            "Incident:  {} {} ({} problem alerts, last {}: {})",
            i.key,
            i.state,
            i.occurrences,
            local(tz, &i.last_at),
            i.last_text
        );
    }
    for b in &t.bounces {
        println!(
            "Bounce:    {} {} {}",
            b.recipient,
            b.status.as_deref().unwrap_or(""),
            b.diagnostic.as_deref().unwrap_or("")
        );
    }
    if !t.events.is_empty() {
        println!("History:");
        for e in &t.events {
            println!(
                "  {}  {:<14} {}",
                local(tz, &e.created_at),
                e.kind,
                e.detail
            );
        }
    }
    for a in &t.articles {
        println!();
        println!(
            "--- article {}  {} {} {} {}",
            a.id,
            local(tz, &a.created_at),
            a.direction,
            a.kind,
            a.from.as_deref().unwrap_or("")
        );
        if let Some(s) = &a.subject {
            println!("Subject: {s}");
        }
        if let Some(r) = a.arrived_at.as_ref().filter(|r| **r != a.created_at) {
            println!("Arrived: {}", local(tz, r));
        }
        for at in &a.attachments {
            println!(
                "Attachment {}: {} ({} bytes, {})",
                at.id, at.filename, at.size, at.content_type
            );
        }
        println!("{}", a.body.trim_end());
    }
}

/// The most tickets `--limit` asks for.
const LIST_MAX: i64 = 1_000_000;
/// The tickets the table shows without `--limit` (a person reads it; a
/// script uses `--json`, which lists all of them by default).
const LIST_DEFAULT: i64 = 100;

/// The filter of `tickets list` from its options, checked.
#[allow(clippy::too_many_arguments)]
fn ticket_filter(
    tz: &jiff::tz::TimeZone,
    status: Vec<String>,
    severity: Vec<u8>,
    organisation: Option<String>,
    since: Option<String>,
    limit: Option<i64>,
    json: bool,
    now: jiff::Timestamp,
) -> anyhow::Result<ticketd::store::admin::TicketFilter> {
    let mut statuses = Vec::new();
    for st in status {
        let st = st.trim().to_ascii_lowercase();
        if !["new", "open", "pending", "resolved", "closed"].contains(&st.as_str()) {
            return Err(anyhow!(
                "--status {st:?}: use new, open, pending, resolved or closed"
            ));
        }
        statuses.push(st);
    }
    let mut severities = Vec::new();
    for sev in severity {
        let s = Severity::try_from(sev).map_err(|e| anyhow!("--severity: {e}"))?;
        severities.push(i64::from(s.level()));
    }
    let limit = match limit {
        Some(l) if !(1..=LIST_MAX).contains(&l) => {
            return Err(anyhow!("--limit {l}: use 1 to {LIST_MAX}"))
        }
        Some(l) => l,
        None if json => i64::MAX,
        // One more than shown, to tell whether there are more.
        None => LIST_DEFAULT + 1,
    };
    let since = since
        .map(|s| parse_since(tz, s.trim(), now).map(ticketd::store::ts))
        .transpose()?;
    Ok(ticketd::store::admin::TicketFilter {
        statuses,
        severities,
        organisation,
        since,
        limit,
    })
}

/// `--since`: a duration back from `now` (`90m`, `24h`, `7d`, `2w`), a
/// date (midnight in the desk's time zone), a date and time in the desk's
/// time zone, or an instant with an offset.
fn parse_since(
    tz: &jiff::tz::TimeZone,
    s: &str,
    now: jiff::Timestamp,
) -> anyhow::Result<jiff::Timestamp> {
    let bad = || {
        anyhow!(
            "--since {s:?}: use a duration (90m, 24h, 7d, 2w), a date (2026-12-01) or a date and time (2026-12-01T14:00, or with an offset)"
        )
    };
    if let Some(unit) = s.chars().last().filter(|c| "smhdw".contains(*c)) {
        if let Ok(n) = s[..s.len() - 1].parse::<i64>() {
            let secs = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => 604_800,
            };
            let back = n.checked_mul(secs).filter(|v| *v >= 0).ok_or_else(bad)?;
            return now
                .checked_sub(jiff::SignedDuration::from_secs(back))
                .map_err(|_| bad());
        }
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        return d
            .to_zoned(tz.clone())
            .map(|z| z.timestamp())
            .map_err(|_| bad());
    }
    if let Ok(dt) = s.replacen(' ', "T", 1).parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned(tz.clone())
            .map(|z| z.timestamp())
            .map_err(|_| bad());
    }
    Err(bad())
}

/// `tickets list` as a table. The columns are fixed (README): NUMBER,
/// STATUS, SEV, ORGANISATION, QUEUE, REQUESTER, CREATED (desk time zone),
/// ART, SUBJECT; a value wider than its column is cut with `…`, the
/// subject last and whole.
fn print_ticket_list(tz: &jiff::tz::TimeZone, list: &[ticketd::store::TicketSummary]) {
    println!(
        "{:<12} {:<8} {:>3} {:<16} {:<10} {:<28} {:<23} {:>4}  SUBJECT",
        "NUMBER", "STATUS", "SEV", "ORGANISATION", "QUEUE", "REQUESTER", "CREATED", "ART"
    );
    for t in list {
        println!(
            "{:<12} {:<8} {:>3} {:<16} {:<10} {:<28} {:<23} {:>4}  {}",
            t.number,
            t.status,
            t.severity,
            cut(t.organisation.as_deref().unwrap_or("-"), 16),
            cut(t.queue.as_deref().unwrap_or("-"), 10),
            cut(&t.requester, 28),
            local(tz, &t.created_at),
            t.article_count,
            t.subject
        );
    }
}

/// A `--cc` address, checked the way the reply's header will need it.
fn cc_address(a: &str) -> anyhow::Result<ticketd::domain::Mailbox> {
    let a = a.trim();
    a.parse::<lettre::Address>()
        .map_err(|e| anyhow!("--cc {a:?} is not a mail address: {e}"))?;
    Ok(ticketd::domain::Mailbox {
        address: a.to_string(),
        name: None,
    })
}
