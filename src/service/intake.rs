//! The intake plan: what one decided message writes, computed before the
//! write. The decision says where the message goes; this turns it into the
//! rows, audit texts and rendered mails of a [`IntakePlan`], which the
//! store writes as given ([`crate::store::write_intake`]).

use crate::domain::{Mailbox, Severity, Status, TicketNumber};
use crate::ingest::classify::truncate;
use crate::ingest::decide::{Decision, Kind, Notice, NoticeKind, Target};
use crate::ingest::parse::{sha256_hex, ParsedMail};
use crate::plan::{
    ArticlesWrite, AttachmentRow, BounceRow, InboundArticle, IntakePlan, MessageOutcome,
    NewTicketRow, Outgoing, QueuedMail, TicketUpdate, TicketWrite,
};

/// Limits applied when storing attachments and bodies, and the ticket
/// numbers' form.
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

/// Renders an automatic mail once the ticket number is known: the
/// confirmation (`None` notice) or a [`Notice`] of the decision.
pub type MailBuilder<'b> = dyn FnMut(
        Option<&Notice>,
        Option<&TicketNumber>,
        &Mailbox,
        Option<Severity>,
    ) -> Result<Outgoing, String>
    + 'b;

/// The plan of one decided message and whether it moved an existing
/// ticket's SLA clock (a staff reply, a reopening, a resumption, a
/// resolution), which the caller then brings up to date. `seq` is the
/// ticket sequence's current value (`None`: no ticket yet); `now` and
/// `arrived` are `ts` texts.
#[allow(clippy::too_many_arguments)]
pub fn intake_plan<'a>(
    message_row: i64,
    seq: Option<i64>,
    mail: &'a ParsedMail,
    d: &'a Decision,
    limits: &ApplyLimits,
    build_mail: &mut MailBuilder<'_>,
    now: &'a str,
    arrived: &'a str,
) -> (IntakePlan<'a>, bool) {
    let mut notes = d.notes.clone();
    let mut events: Vec<(&'a str, String)> = Vec::new();
    let (ticket, number, severity, has_ticket) = match &d.target {
        Target::New(t) => {
            // The first ticket gets number_start + 1, each later one the next.
            let seq = seq.unwrap_or(limits.number_start) + 1;
            let number = TicketNumber::from_sequence(&limits.number_prefix, seq);
            events.push((
                "created",
                match &t.rule {
                    Some(r) => format!(
                        "created from mail, severity {} by rule {r}",
                        t.severity.level()
                    ),
                    None => format!("created from mail, default severity {}", t.severity.level()),
                },
            ));
            if let Some(l) = &t.linked {
                events.push(("linked", format!("refers to ticket {l}")));
            }
            let row = NewTicketRow {
                seq,
                number: number.clone(),
                subject: &t.subject,
                severity: t.severity,
                rule: t.rule.as_deref(),
                requester: &t.requester,
                linked: t.linked.as_ref(),
                organisation: t.organisation.as_deref(),
                flags: (!t.flags.is_empty()).then(|| t.flags.join(",")),
                queue: t.queue.as_deref(),
                reply_to: t.reply_to.as_deref(),
                language: t.language.as_deref(),
                tags: t.tags.iter().map(String::as_str).collect(),
                participants: t.participants.iter().map(String::as_str).collect(),
                sla: None,
            };
            (
                TicketWrite::New(Box::new(row)),
                Some(number),
                Some(t.severity),
                true,
            )
        }
        Target::Existing {
            ticket,
            reopen,
            resolve,
            quiet: _,
        } => {
            let staff = d.kind == Kind::StaffReply;
            let status = if *reopen || (staff && ticket.status == Status::New) {
                Some(Status::Open)
            } else if *resolve {
                Some(Status::Resolved)
            } else {
                None
            };
            events.push(("appended", d.reason.clone()));
            if staff {
                events.push(("staff-reply", d.reason.clone()));
            }
            if *reopen && ticket.status == Status::Pending {
                events.push(("resumed", "the customer answered".into()));
            } else if *reopen {
                events.push(("reopened", "the customer wrote again".into()));
            }
            if *resolve {
                events.push(("resolved", d.reason.clone()));
            }
            if let Some(r) = &d.set_reply_to {
                events.push((
                    "reply-to",
                    match r {
                        Some(a) => {
                            format!("answers to the customer go to {a} (Reply-To of their mail)")
                        }
                        None => "answers to the customer go to the requester again (their mail had no Reply-To)".to_string(),
                    },
                ));
            }
            let update = TicketUpdate {
                id: ticket.id,
                number: &ticket.number,
                status,
                reply_to: d.set_reply_to.as_ref().map(|r| r.as_deref()),
                new_participants: d.new_participants.iter().map(String::as_str).collect(),
            };
            (
                TicketWrite::Existing(update),
                Some(ticket.number.clone()),
                None,
                true,
            )
        }
        Target::Nothing => {
            events.push((d.action.as_str(), d.reason.clone()));
            (TicketWrite::Nothing, None, None, false)
        }
    };

    let mut bounces = Vec::new();
    if d.kind == Kind::Bounce {
        if let Some(b) = &mail.bounced {
            for r in &b.recipients {
                bounces.push(BounceRow {
                    recipient: r.recipient.to_ascii_lowercase(),
                    action: r.action.as_str(),
                    status: r.status.as_str(),
                    diagnostic: r.diagnostic.as_str(),
                });
                if has_ticket {
                    notes.push(format!(
                        "Delivery to {} failed: {} {}",
                        r.recipient, r.status, r.diagnostic
                    ));
                }
            }
        }
    }

    // Every automatic mail of this message: the confirmation, then the
    // notices the decision asked for.
    let mut mails = Vec::new();
    if let (Some(to), Some(n), Some(sev)) = (&d.confirm_to, &number, severity) {
        match build_mail(None, Some(n), to, Some(sev)) {
            Ok(mail) => mails.push(QueuedMail {
                kind: "confirmation",
                mail,
                counts_hourly: true,
            }),
            Err(e) => notes.push(format!("No confirmation: {e}")),
        }
    }
    for notice in &d.notices {
        match build_mail(Some(notice), number.as_ref(), &notice.to, severity) {
            Ok(mail) => mails.push(QueuedMail {
                kind: notice.kind.as_str(),
                mail,
                // Answers to the customer count against the hourly limit; a
                // notice or a forward to the account manager does not.
                counts_hourly: !matches!(
                    notice.kind,
                    NoticeKind::OverQuota | NoticeKind::Forward | NoticeKind::Relay
                ),
            }),
            Err(e) => notes.push(format!("No {} mail: {e}", notice.kind.as_str())),
        }
    }

    // A repeated alert only counts: no article of its own.
    let quiet = matches!(d.target, Target::Existing { quiet: true, .. });
    let articles = (has_ticket && !quiet).then(|| {
        let (body, kept, dropped) = inbound_body(mail, limits);
        notes.extend(dropped);
        notes.extend(mail.warnings.iter().cloned());
        let mut thread_ids = Vec::with_capacity(1 + mails.len());
        if let Some(id) = &mail.message_id {
            thread_ids.push(id.as_str());
        }
        ArticlesWrite {
            inbound: InboundArticle {
                kind: d.kind.as_str(),
                from_addr: mail.from.as_ref().map(|m| m.address.as_str()),
                from_name: mail.from.as_ref().and_then(|m| m.name.as_deref()),
                to_addrs: addr_list(&mail.to),
                cc_addrs: addr_list(&mail.cc),
                subject: &mail.subject,
                message_id: mail.message_id.as_ref().map(|m| m.as_str()),
                body,
            },
            notes: Vec::new(),
            attachments: kept
                .into_iter()
                .map(|a| AttachmentRow {
                    filename: &a.filename,
                    content_type: &a.content_type,
                    content: &a.content,
                    sha256: sha256_hex(&a.content),
                })
                .collect(),
            thread_ids,
        }
    });
    let reason = if notes.is_empty() || has_ticket {
        d.reason.clone()
    } else {
        format!("{} ({})", d.reason, notes.join(" "))
    };
    let articles = articles.map(|mut a| {
        a.notes = notes;
        a
    });
    let clock_moved = d.kind == Kind::StaffReply
        || matches!(
            d.target,
            Target::Existing { reopen: true, .. } | Target::Existing { resolve: true, .. }
        );
    let plan = IntakePlan {
        message_row,
        now,
        arrived,
        ticket,
        events,
        bounces,
        mails,
        incident: d.incident.as_ref().filter(|_| has_ticket),
        articles,
        outcome: MessageOutcome {
            action: d.action.as_str(),
            kind: d.kind.as_str(),
            reason,
        },
    };
    (plan, clock_moved)
}

/// The inbound article's body within the limits, the attachments kept, and
/// notes about what was dropped.
fn inbound_body<'m>(
    mail: &'m ParsedMail,
    limits: &ApplyLimits,
) -> (
    String,
    Vec<&'m crate::ingest::parse::Attachment>,
    Vec<String>,
) {
    let mut notes = Vec::new();
    let mut body = truncate(&mail.body, limits.max_body_bytes).to_string();
    if body.len() < mail.body.len() {
        body.push_str("\n\n[… text cut here; the whole message is kept raw]");
    }
    let mut kept = Vec::new();
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
        kept.push(a);
    }
    (body, kept, notes)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Action;
    use crate::ingest::decide::{NewTicket, TicketInfo};
    use crate::ingest::parse::parse;

    fn limits() -> ApplyLimits {
        ApplyLimits {
            max_attachment_bytes: 10,
            max_attachments: 1,
            max_body_bytes: 1000,
            number_prefix: String::new(),
            number_start: 10000,
        }
    }

    fn mail_with_attachments() -> ParsedMail {
        let raw = "From: Anna <anna@kunde.de>\r\nTo: support@example.com\r\nSubject: Drucker\r\n\
Message-ID: <a1@kunde.de>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nDer Drucker streikt.\r\n\
--b\r\nContent-Type: text/plain; name=a.txt\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nklein\r\n\
--b\r\nContent-Type: text/plain; name=b.txt\r\nContent-Disposition: attachment; filename=b.txt\r\n\r\nzweite\r\n--b--\r\n";
        parse(raw.as_bytes()).unwrap()
    }

    fn decision(target: Target, confirm: bool) -> Decision {
        Decision {
            action: Action::Created,
            kind: Kind::Mail,
            target,
            confirm_to: confirm.then(|| Mailbox {
                address: "anna@kunde.de".into(),
                name: None,
            }),
            new_participants: Vec::new(),
            set_reply_to: None,
            notes: vec!["a note of the decision".into()],
            notices: Vec::new(),
            incident: None,
            reason: "new mail".into(),
        }
    }

    fn rendered(n: Option<&TicketNumber>) -> Outgoing {
        Outgoing {
            to: vec!["anna@kunde.de".into()],
            sender: "support@example.com".into(),
            subject: format!("[Ticket#{}]", n.map(|n| n.as_str()).unwrap_or("")),
            message_id: crate::domain::MessageId("td.1@example.com".into()),
            raw: Vec::new(),
            body: String::new(),
        }
    }

    #[test]
    fn a_new_ticket_gets_the_next_number_its_confirmation_and_the_dropped_attachments_noted() {
        let mail = mail_with_attachments();
        let new = NewTicket {
            subject: "Drucker".into(),
            requester: Mailbox {
                address: "anna@kunde.de".into(),
                name: Some("Anna".into()),
            },
            severity: Severity::Malfunction,
            rule: None,
            linked: None,
            reply_to: None,
            participants: vec!["anna@kunde.de".into()],
            organisation: None,
            flags: Vec::new(),
            queue: None,
            tags: Vec::new(),
            language: Some("de".into()),
        };
        let d = decision(Target::New(new), true);
        let mut build = |_: Option<&Notice>,
                         n: Option<&TicketNumber>,
                         _: &Mailbox,
                         _: Option<Severity>| { Ok(rendered(n)) };
        let (plan, moved) = intake_plan(
            3,
            Some(10041),
            &mail,
            &d,
            &limits(),
            &mut build,
            "2026-12-03T10:00:00.000Z",
            "2026-12-03T09:59:00.000Z",
        );
        assert!(!moved);
        let TicketWrite::New(t) = &plan.ticket else {
            panic!("{:?}", plan.ticket)
        };
        assert_eq!((t.seq, t.number.as_str()), (10042, "10042"));
        assert_eq!(plan.events[0].1, "created from mail, default severity 3");
        assert_eq!(plan.mails.len(), 1);
        assert!(plan.mails[0].counts_hourly);
        assert_eq!(plan.mails[0].mail.subject, "[Ticket#10042]");
        let a = plan.articles.as_ref().unwrap();
        assert_eq!(a.attachments.len(), 1);
        assert_eq!(a.attachments[0].filename, "a.txt");
        assert!(a.notes[0].contains("a note of the decision"));
        assert!(
            a.notes
                .iter()
                .any(|n| n.contains("further attachments dropped")),
            "{:?}",
            a.notes
        );
        assert_eq!(a.thread_ids, vec!["a1@kunde.de"]);
        assert_eq!(plan.outcome.reason, "new mail");
    }

    #[test]
    fn without_a_ticket_the_notes_go_into_the_reason_and_nothing_is_an_article() {
        let mail = mail_with_attachments();
        let mut d = decision(Target::Nothing, false);
        d.action = Action::Suppressed;
        let mut build =
            |_: Option<&Notice>, _: Option<&TicketNumber>, _: &Mailbox, _: Option<Severity>| {
                Err::<Outgoing, String>("never called".into())
            };
        let (plan, _) = intake_plan(3, None, &mail, &d, &limits(), &mut build, "t", "t");
        assert!(matches!(plan.ticket, TicketWrite::Nothing));
        assert!(plan.articles.is_none() && plan.mails.is_empty());
        assert_eq!(plan.events, vec![("suppressed", "new mail".to_string())]);
        assert_eq!(plan.outcome.reason, "new mail (a note of the decision)");
    }

    #[test]
    fn a_customer_answer_on_a_pending_ticket_resumes_it() {
        let mail = mail_with_attachments();
        let ticket = TicketInfo {
            id: 9,
            number: TicketNumber("10009".into()),
            requester: "anna@kunde.de".into(),
            participants: vec!["anna@kunde.de".into()],
            status: Status::Pending,
            reply_to: None,
            last_inbound: None,
            thread: Vec::new(),
            language: None,
        };
        let mut d = decision(
            Target::Existing {
                ticket,
                reopen: true,
                resolve: false,
                quiet: false,
            },
            false,
        );
        d.action = Action::Appended;
        let mut build =
            |_: Option<&Notice>, _: Option<&TicketNumber>, _: &Mailbox, _: Option<Severity>| {
                Err::<Outgoing, String>("never called".into())
            };
        let (plan, moved) = intake_plan(3, None, &mail, &d, &limits(), &mut build, "t", "t");
        assert!(moved, "a resumption moves the clock");
        let TicketWrite::Existing(u) = &plan.ticket else {
            panic!()
        };
        assert_eq!(u.status, Some(Status::Open));
        let kinds: Vec<&str> = plan.events.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, vec!["appended", "resumed"]);
    }
}
