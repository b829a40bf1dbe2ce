//! Stage 6: the decision — what happens to a message, given what the store
//! found for it. Pure: the same message and lookups always give the same
//! decision.

use super::classify::{Classification, Facts, RuleAction, ACCOUNT_MANAGER};
use super::guard::Verdict;
use super::parse::ParsedMail;
use crate::domain::{domain_of, Action, Mailbox, Severity, Status, TicketNumber, UnknownSenders};
pub use crate::plan::{Incident, IncidentChange, IncidentEvent, TicketInfo, THREAD_IDS};

/// What the store looked up for a message before the decision.
#[derive(Debug, Clone, Default)]
pub struct Lookups {
    /// The ticket one of the message's In-Reply-To/References ids belongs to
    /// (an id we stored or sent, or one of our signed ids).
    pub by_reference: Option<TicketInfo>,
    /// The number in the subject tag, if any.
    pub tag_number: Option<TicketNumber>,
    /// The ticket with that number, if it exists.
    pub by_tag: Option<TicketInfo>,
    /// For a bounce: the ticket whose mail bounced (by the enclosed
    /// message's ids or subject tag).
    pub bounced_ticket: Option<TicketInfo>,
    /// Automatic mails sent to the would-be confirmation recipient in the
    /// last hour.
    pub auto_mails_last_hour: u32,
    /// The sender's organisation in the customer directory.
    pub organisation: Option<OrgFacts>,
    /// The monitoring alert this mail is, if it is one.
    pub alert: Option<super::alerts::Alert>,
    /// The incident that alert belongs to, if one was recorded.
    pub incident: Option<Incident>,
    /// For a service alert: its host's incident (a DOWN host's ticket the
    /// service's problems join).
    pub host_incident: Option<Incident>,
    /// The mailbox the message came in by (for rules).
    pub mailbox: Option<String>,
    /// When a monitoring recovery received now resolves its ticket; `None`:
    /// at once (no hold-down).
    pub hold_until: Option<String>,
    /// The message answers one of our notices (a signed notice id in
    /// In-Reply-To/References): it gets no automatic mail at all, so two
    /// desks' notices cannot answer each other.
    pub answers_notice: bool,
    /// The message answers any mail of ours (a signed ticket or notice id):
    /// it gets no registration notice.
    pub answers_ours: bool,
    /// `by_reference` was found by one of our signed Message-IDs (a mail we
    /// sent for that ticket), not only by a Message-ID of a message stored
    /// on it: a customer's own Message-ID is known to everyone who got that
    /// mail, so a follow-up found only by it is held to the same
    /// participant/domain rule as the subject tag.
    pub reference_ours: bool,
    /// The ticket a mail of ours to staff was about (an SLA reminder, an
    /// over-quota notice), when the message answers one (a signed staff id
    /// in In-Reply-To/References): the answer is filed as a note there.
    pub staff_mail_ticket: Option<TicketInfo>,
    /// The message answers a mail of ours to staff about one ticket (a
    /// signed staff id), whether or not that ticket is still here.
    pub answers_staff_mail: bool,
    /// The message answers a mail of ours to staff about many tickets (a
    /// digest): it is refused with one answer, never a ticket.
    pub answers_digest: bool,
}

impl Lookups {
    /// The lookups of a message from what the store found for its `keys`:
    /// a ticket by a stored id before one by our signed number, a bounced
    /// ticket likewise; an incident that recovered at or after
    /// `flap_since` (`ts` text) is flapping. The organisation, alert,
    /// mailbox and hold-down are the caller's to fill.
    pub fn from_found(
        found: crate::plan::Found,
        keys: &crate::plan::LookupKeys,
        flap_since: &str,
    ) -> Lookups {
        let by_reference = found.by_stored_id.or(found.by_signed_number);
        // Found by a mail of ours: one of our signed ids names that ticket.
        let reference_ours = by_reference
            .as_ref()
            .is_some_and(|t| keys.signed_numbers.iter().take(50).any(|n| *n == t.number));
        let incident = |i: Option<crate::plan::FoundIncident>| {
            i.map(|i| Incident {
                ticket: i.ticket,
                problem: i.problem,
                flapping: i.recovered_at.is_some_and(|r| r.as_str() >= flap_since),
            })
        };
        Lookups {
            by_reference,
            tag_number: keys.tag_number.clone(),
            by_tag: found.by_tag,
            bounced_ticket: found.bounced_by_id.or(found.bounced_by_number),
            auto_mails_last_hour: found.auto_mails_last_hour,
            organisation: None,
            alert: None,
            mailbox: None,
            hold_until: None,
            reference_ours,
            answers_notice: keys.answers_notice,
            answers_ours: keys.answers_notice
                || keys.answers_digest
                || !keys.signed_numbers.is_empty()
                || !keys.staff_numbers.is_empty(),
            staff_mail_ticket: found.by_staff_number,
            answers_staff_mail: !keys.staff_numbers.is_empty(),
            answers_digest: keys.answers_digest,
            incident: incident(found.incident),
            host_incident: incident(found.host_incident),
        }
    }

    /// What the rules may match besides the mail itself.
    pub fn facts(&self) -> Facts<'_> {
        Facts {
            customer: self.organisation.as_ref().map(|o| o.id.as_str()),
            plan: self.organisation.as_ref().and_then(|o| o.plan.as_deref()),
            mailbox: self.mailbox.as_deref(),
            alert: self.alert.as_ref(),
        }
    }
}

/// The key of `alert` for the organisation `org` (none: a sender no
/// customer knows).
pub fn incident_key(org: Option<&str>, alert: &super::alerts::Alert) -> String {
    format!("{}\u{1f}{}", org.unwrap_or(""), alert.key())
}

/// The key of the host incident of a service alert (`None` for a host
/// alert): the incident a DOWN host's alerts are recorded under.
pub fn host_incident_key(org: Option<&str>, alert: &super::alerts::Alert) -> Option<String> {
    alert.service.as_ref()?;
    let host = super::alerts::Alert {
        service: None,
        ..alert.clone()
    };
    Some(incident_key(org, &host))
}

/// What the decision needs to know of the sender's organisation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgFacts {
    /// Its directory id.
    pub id: String,
    /// Its plan's name.
    pub plan: Option<String>,
    /// Who hears of a ticket over the plan's quota.
    pub account_manager: Option<String>,
    /// The plan's cases per quarter, if limited.
    pub cases_per_quarter: Option<u32>,
    /// The plan's number of main contacts, if limited.
    pub main_contacts_allowed: Option<u32>,
    /// The organisation's main contacts (lower case).
    pub main_contacts: Vec<String>,
    /// Tickets of this organisation opened this quarter so far.
    pub cases_this_quarter: u32,
    /// Hosts whose outage is business-critical (lower case).
    pub critical_hosts: Vec<String>,
    /// Who is told of each new ticket.
    pub notify_new: Vec<String>,
    /// Who is told of each status change.
    pub notify_status: Vec<String>,
}

/// Tells the organisation's chosen recipients of a new ticket or a status
/// change the decision makes (not the sender, who knows).
fn add_customer_notices(d: &mut Decision, org: &OrgFacts, sender: &str) {
    let (kind, list, facts) = match &d.target {
        Target::New(_) => (NoticeKind::NewTicket, &org.notify_new, Vec::new()),
        // The end of a wait for the customer is no news to the customer.
        Target::Existing {
            reopen: true,
            ticket,
            ..
        } if ticket.status == Status::Pending => return,
        Target::Existing { reopen: true, .. } | Target::Existing { resolve: true, .. } => {
            let status = if matches!(d.target, Target::Existing { reopen: true, .. }) {
                "open"
            } else {
                "resolved"
            };
            (
                NoticeKind::Status,
                &org.notify_status,
                vec![
                    ("status".to_string(), status.to_string()),
                    ("why".to_string(), d.reason.clone()),
                ],
            )
        }
        _ => return,
    };
    for a in list.iter().filter(|a| !a.eq_ignore_ascii_case(sender)) {
        d.notices.push(Notice {
            kind,
            to: Mailbox {
                address: a.clone(),
                name: None,
            },
            facts: facts.clone(),
            template: None,
        });
    }
}

/// A mail the decision asks for besides the confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Which mail.
    pub kind: NoticeKind,
    /// To whom.
    pub to: Mailbox,
    /// Facts for the template (`organisation`, `cases`, `quota`, …).
    pub facts: Vec<(String, String)>,
    /// The template, when not the kind's own (a route rule's `reply`).
    pub template: Option<String>,
}

impl Notice {
    /// The template's base name.
    pub fn template(&self) -> &str {
        self.template.as_deref().unwrap_or(self.kind.as_str())
    }
}

/// The kinds of [`Notice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// To an unknown sender whose mail was refused: how to register.
    Registration,
    /// To the account manager: a ticket over the plan's quota.
    OverQuota,
    /// To the organisation's chosen recipients: a new ticket.
    NewTicket,
    /// To the organisation's chosen recipients: a ticket's status changed.
    Status,
    /// A routed message, forwarded (attached whole) to someone of the
    /// provider's: the account manager, billing, sales.
    Forward,
    /// A routed message's answer to its sender (a route rule's template).
    Answer,
    /// A staff member's mail on a ticket, relayed to the requester as the
    /// desk's reply (not an automatic mail).
    Relay,
    /// To a staff member who answered a digest: such answers are not
    /// filed anywhere (an automatic mail that itself is never answered).
    DigestAnswer,
}

impl NoticeKind {
    /// The name used for templates and outbox rows.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Registration => "registration",
            NoticeKind::OverQuota => "over-quota",
            NoticeKind::NewTicket => "new-ticket",
            NoticeKind::Status => "status",
            NoticeKind::Forward => "forward",
            NoticeKind::Answer => "answer",
            NoticeKind::Relay => "relay",
            NoticeKind::DigestAnswer => "digest-answer",
        }
    }

    /// Whether the mail answers the message (threads with it, counts
    /// against the sender's hourly limit of automatic mails) rather than
    /// being a mail of our own to someone else.
    pub fn answers(self) -> bool {
        matches!(
            self,
            NoticeKind::Registration | NoticeKind::Answer | NoticeKind::DigestAnswer
        )
    }

    /// Whether a person wrote it (a relayed staff reply): no
    /// `Auto-Submitted`, and it does not count as an automatic mail.
    pub fn personal(self) -> bool {
        self == NoticeKind::Relay
    }
}

/// Settings the decision depends on.
#[derive(Debug, Clone)]
pub struct DecideConfig {
    /// Our own addresses, lower case.
    pub own_addresses: Vec<String>,
    /// Domains shared by strangers (no domain trust), lower case.
    pub freemail_domains: Vec<String>,
    /// Send confirmations at all.
    pub confirm: bool,
    /// Automatic mails per recipient and hour.
    pub max_auto_per_hour: u32,
    /// Severity for mail no rule matched.
    pub default_severity: Severity,
    /// Our subject tag, removed from the subject of a new ticket.
    pub tag: super::thread::SubjectTag,
    /// What mail from a sender of no known organisation gets.
    pub unknown_senders: UnknownSenders,
    /// Severities of alert states.
    pub alert_severity: AlertSeverity,
    /// The account manager of senders of no known organisation.
    pub default_account_manager: Option<String>,
    /// Staff addresses and `@domain`s, lower case: their mail on a ticket
    /// is a staff reply.
    pub staff: Vec<String>,
}

impl DecideConfig {
    /// Whether `address` (lower case) is one of the staff.
    pub fn is_staff(&self, address: &str) -> bool {
        !address.is_empty()
            && self.staff.iter().any(|s| match s.strip_prefix('@') {
                Some(domain) => domain_of(address) == domain,
                None => s == address,
            })
    }
}

/// The severity a monitoring problem's ticket gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertSeverity {
    /// CRITICAL/DOWN/UNREACHABLE on a host the customer marks critical.
    pub critical_host: Severity,
    /// CRITICAL/DOWN/UNREACHABLE elsewhere.
    pub critical: Severity,
    /// WARNING/UNKNOWN.
    pub warning: Severity,
}

impl Default for AlertSeverity {
    fn default() -> Self {
        AlertSeverity {
            critical_host: Severity::Critical,
            critical: Severity::Production,
            warning: Severity::Malfunction,
        }
    }
}

/// Where the message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Open a new ticket.
    New(NewTicket),
    /// Add an article to this ticket.
    Existing {
        /// The ticket.
        ticket: TicketInfo,
        /// Re-open it (a customer wrote to a resolved ticket, or ended the
        /// wait of a pending one).
        reopen: bool,
        /// Resolve it (a monitoring recovery).
        resolve: bool,
        /// Only count the message (a repeated alert): no article.
        quiet: bool,
    },
    /// Neither: the message is only stored.
    Nothing,
}

/// A ticket to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTicket {
    /// Subject without the tag of another ticket.
    pub subject: String,
    /// Who asked.
    pub requester: Mailbox,
    /// Severity from the rules or the default.
    pub severity: Severity,
    /// The rule that decided the severity (`None`: the default).
    pub rule: Option<String>,
    /// An existing ticket this one refers to (a subject tag from a
    /// stranger, a mail on a closed ticket).
    pub linked: Option<TicketNumber>,
    /// Where the customer asked answers to go (Reply-To, lower case), when
    /// not to the requester.
    pub reply_to: Option<String>,
    /// Addresses to record as participants (lower case).
    pub participants: Vec<String>,
    /// The requester's organisation (its directory id), if known.
    pub organisation: Option<String>,
    /// Marks for staff: `unverified` (unknown sender), `over-quota`.
    pub flags: Vec<String>,
    /// The queue a rule put it in.
    pub queue: Option<String>,
    /// Tags from the rules.
    pub tags: Vec<String>,
    /// The language of the customer's mails (`de`, `en`), chosen once
    /// after the decision (see `Intake::choose_language`); `None`: the
    /// desk's.
    pub language: Option<String>,
}

/// What kind of article the message becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A person's mail.
    Mail,
    /// An automatic reply (vacation notice, robot).
    AutoReply,
    /// A delivery failure report.
    Bounce,
    /// Our own mail come back.
    Loop,
    /// A monitoring system's notification.
    Alert,
    /// A staff member's mail on a ticket.
    StaffReply,
    /// An answer to a mail of ours to staff (an SLA reminder): an internal
    /// note on the ticket, never sent to the customer.
    StaffNote,
}

impl Kind {
    /// The kind as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mail => "mail",
            Kind::AutoReply => "auto-reply",
            Kind::Bounce => "bounce",
            Kind::Loop => "loop",
            Kind::Alert => "alert",
            Kind::StaffReply => "staff-reply",
            Kind::StaffNote => "staff-note",
        }
    }
}

/// The decision for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What `ingest` reports.
    pub action: Action,
    /// What the message is.
    pub kind: Kind,
    /// Where it goes.
    pub target: Target,
    /// Send a confirmation to this mailbox.
    pub confirm_to: Option<Mailbox>,
    /// Addresses to add as participants of an existing ticket.
    pub new_participants: Vec<String>,
    /// For an existing ticket: record a new reply address (`Some(None)`:
    /// answers go to the requester again); `None`: leave it.
    pub set_reply_to: Option<Option<String>>,
    /// Notes for the ticket (or the message record): why something was not
    /// done, links, skipped confirmations.
    pub notes: Vec<String>,
    /// Further mails to queue (registration notice, over-quota notice).
    pub notices: Vec<Notice>,
    /// What happens to the monitoring incident, for an alert.
    pub incident: Option<IncidentChange>,
    /// One line on why this decision was taken.
    pub reason: String,
}

impl Decision {
    /// A decision that sends nothing and changes no participant, reply
    /// address or incident: `action` on a message of `kind`, into `target`.
    fn quiet(
        action: Action,
        kind: Kind,
        target: Target,
        notes: Vec<String>,
        reason: String,
    ) -> Decision {
        Decision {
            action,
            kind,
            target,
            confirm_to: None,
            new_participants: Vec::new(),
            set_reply_to: None,
            notes,
            notices: Vec::new(),
            incident: None,
            reason,
        }
    }
}

/// The rules: what they say of a message that would open a ticket.
pub type Classifier<'a> = dyn FnMut(&ParsedMail, &Facts<'_>) -> Classification + 'a;

/// Decides what happens to a parsed message. `classify` is called only when a
/// ticket is created, so replies never pay for the rules.
pub fn decide(
    mail: &ParsedMail,
    verdict: &Verdict,
    look: &Lookups,
    cfg: &DecideConfig,
    classify: &mut Classifier<'_>,
) -> Decision {
    let mut d = decide_target(mail, verdict, look, cfg, classify);
    if let Some(org) = &look.organisation {
        let sender = mail.from.as_ref().map(|m| m.key()).unwrap_or_default();
        add_customer_notices(&mut d, org, &sender);
    }
    d
}

/// Where the message goes and why: [`decide`] without the customer's
/// notification wishes.
fn decide_target(
    mail: &ParsedMail,
    verdict: &Verdict,
    look: &Lookups,
    cfg: &DecideConfig,
    classify: &mut Classifier<'_>,
) -> Decision {
    let sender = mail.from.as_ref().map(|m| m.key()).unwrap_or_default();
    let mut notes = Vec::new();

    // Monitoring: one ticket per incident, never an answer. (A bounce or
    // our own mail come back is not an alert, whatever it says.)
    if let Some(alert) = &look.alert {
        if !matches!(verdict, Verdict::Bounce(_) | Verdict::Loop(_)) {
            return decide_alert(mail, alert, look, cfg, classify);
        }
    }

    // Machines: never a new ticket, never an answer.
    if verdict.is_machine() {
        let kind = match verdict {
            Verdict::Bounce(_) => Kind::Bounce,
            Verdict::Loop(_) => Kind::Loop,
            _ => Kind::AutoReply,
        };
        let ticket = match kind {
            Kind::Bounce => look
                .bounced_ticket
                .clone()
                .or_else(|| look.by_reference.clone()),
            // A loop of our own mail is only recorded, never appended.
            Kind::Loop => None,
            _ => look.by_reference.clone().or_else(|| {
                look.by_tag
                    .clone()
                    .filter(|t| trusted(t, &sender, &cfg.freemail_domains))
            }),
        };
        return match ticket {
            Some(t) => {
                let reason = format!(
                    "{} ({}) kept on ticket {}, not answered",
                    kind.as_str(),
                    verdict.reason(),
                    t.number
                );
                let target = Target::Existing {
                    ticket: t,
                    reopen: false,
                    resolve: false,
                    quiet: false,
                };
                Decision::quiet(Action::Appended, kind, target, notes, reason)
            }
            None => Decision::quiet(
                Action::Suppressed,
                kind,
                Target::Nothing,
                notes,
                format!(
                    "{} ({}): no ticket of its own, not answered",
                    kind.as_str(),
                    verdict.reason()
                ),
            ),
        };
    }

    // A person answering a mail of ours to staff: a reminder's answer is a
    // note on its ticket, a digest's is refused; never a ticket, never a
    // confirmation, never sent to the customer.
    if let Some(t) = &look.staff_mail_ticket {
        let reason = format!(
            "{} answered a mail of ours to staff about ticket {}: filed there as a note, not sent to the customer",
            if sender.is_empty() { "someone" } else { &sender },
            t.number
        );
        let target = Target::Existing {
            ticket: t.clone(),
            reopen: false,
            resolve: false,
            quiet: false,
        };
        return Decision::quiet(Action::Appended, Kind::StaffNote, target, notes, reason);
    }
    if look.answers_staff_mail {
        return Decision::quiet(
            Action::Suppressed,
            Kind::StaffNote,
            Target::Nothing,
            notes,
            "answers a mail of ours to staff about a ticket that is not here: stored only".into(),
        );
    }
    if look.answers_digest {
        return digest_answer(mail, look, cfg, &sender, notes);
    }

    // A person. Follow-up by reference to a mail of ours: they had one of
    // the ticket's signed ids. By a stored message's id or by the subject
    // tag alone: only a participant, someone of the requester's domain, or
    // staff — every author of the mail, when From names several.
    let authors: Vec<String> = std::iter::once(sender.clone())
        .chain(mail.other_from.iter().map(|m| m.key()))
        .collect();
    let all_staff = authors.iter().all(|a| cfg.is_staff(a));
    let may_write =
        |t: &TicketInfo| all_staff || authors.iter().all(|a| trusted(t, a, &cfg.freemail_domains));
    // The first author who may not write into `t`, for the note.
    let who = |t: &TicketInfo| {
        authors
            .iter()
            .find(|a| !a.is_empty() && !trusted(t, a, &cfg.freemail_domains))
            .cloned()
            .unwrap_or_else(|| "the sender".to_string())
    };
    let mut untrusted_reference = None;
    let follow_up = match (&look.by_reference, &look.by_tag) {
        (Some(t), _) if look.reference_ours || may_write(t) => {
            Some((t.clone(), "In-Reply-To/References"))
        }
        (Some(t), _) => {
            notes.push(format!(
                "In-Reply-To/References name a message on ticket {} (not a mail of ours), but {} is not a participant of it and not from its requester's domain: opened as a new ticket linked to {}.",
                t.number,
                who(t),
                t.number
            ));
            untrusted_reference = Some(t.number.clone());
            None
        }
        (None, Some(t)) if may_write(t) => Some((t.clone(), "subject tag")),
        (None, Some(t)) => {
            notes.push(format!(
                "Subject names ticket {} but {} is not a participant of it and not from its requester's domain: opened as a new ticket linked to {}.",
                t.number,
                who(t),
                t.number
            ));
            None
        }
        (None, None) => None,
    };

    // Closed is final: a customer's mail on a closed ticket opens a new
    // ticket linked to it (staff may still write on it).
    let mut closed_link = None;
    let follow_up = match follow_up {
        Some((ticket, how)) if !all_staff && ticket.status == Status::Closed => {
            notes.push(format!(
                "Ticket {} (found by {how}) is closed: opened as a new ticket linked to {}.",
                ticket.number, ticket.number
            ));
            closed_link = Some(ticket.number);
            None
        }
        other => other,
    };

    if let Some((ticket, how)) = follow_up {
        if all_staff {
            return staff_reply(mail, ticket, how, &sender, cfg, notes);
        }
        // A customer's answer also ends the wait of a pending ticket (the
        // SLA clock resumes).
        let reopen = matches!(ticket.status, Status::Resolved | Status::Pending);
        // The requester's latest mail says where answers go.
        let set_reply_to = (sender == ticket.requester)
            .then(|| reply_to_of(mail, cfg))
            .filter(|r| *r != ticket.reply_to);
        let new_participants: Vec<String> = people(mail, cfg)
            .into_iter()
            .filter(|a| !ticket.participants.contains(a))
            .collect();
        return Decision {
            action: Action::Appended,
            kind: Kind::Mail,
            reason: format!("follow-up to ticket {} by {how}", ticket.number),
            target: Target::Existing {
                ticket,
                reopen,
                resolve: false,
                quiet: false,
            },
            confirm_to: None,
            new_participants,
            set_reply_to,
            notices: Vec::new(),
            incident: None,
            notes,
        };
    }

    let Some(from) = mail.from.clone() else {
        // Unreachable for a Person verdict (no sender is a machine), but
        // decided explicitly rather than assumed.
        return Decision::quiet(
            Action::Suppressed,
            Kind::AutoReply,
            Target::Nothing,
            notes,
            "no sender address".into(),
        );
    };

    // What the desk's rules say: severity, queue, tags, and whether this is
    // a support request at all.
    let c = classify(mail, &look.facts());
    match &c.action {
        RuleAction::Ticket => {}
        RuleAction::Ignore => {
            return Decision::quiet(
                Action::Ignored,
                Kind::Mail,
                Target::Nothing,
                notes,
                format!(
                    "ignored by rule {}: stored, no ticket, no mail",
                    c.action_rule.as_deref().unwrap_or("?")
                ),
            );
        }
        RuleAction::Route { forward, reply } => {
            if let Some(d) = route(mail, look, cfg, &c, forward, reply.as_deref(), &mut notes) {
                return d;
            }
        }
    }

    // Who is writing: a registered customer, or someone unknown.
    let mut flags = Vec::new();
    let mut notices = Vec::new();
    match &look.organisation {
        None => match cfg.unknown_senders {
            UnknownSenders::Accept => {}
            UnknownSenders::Unverified => {
                flags.push("unverified".to_string());
                notes.push(format!(
                    "{} belongs to no registered customer: ticket marked unverified.",
                    from.address
                ));
            }
            UnknownSenders::Reject => {
                let to = if !cfg.confirm {
                    None
                } else if look.answers_ours {
                    notes.push(
                        "No registration notice: the message answers a mail of ours (a notice must not answer a notice)."
                            .to_string(),
                    );
                    None
                } else {
                    confirmation_recipient(mail, cfg, look, &mut notes)
                };
                let reason = match &to {
                    Some(m) => format!(
                        "{} belongs to no registered customer: no ticket; told {} how to register",
                        from.address, m.address
                    ),
                    None => format!(
                        "{} belongs to no registered customer: no ticket",
                        from.address
                    ),
                };
                return Decision {
                    notices: to
                        .map(|m| Notice {
                            kind: NoticeKind::Registration,
                            to: m,
                            facts: Vec::new(),
                            template: None,
                        })
                        .into_iter()
                        .collect(),
                    ..Decision::quiet(
                        Action::Suppressed,
                        Kind::Mail,
                        Target::Nothing,
                        notes,
                        reason,
                    )
                };
            }
        },
        Some(org) => {
            // A plan with a limited number of main contacts: cases come
            // from them; anyone else's is handled, and marked.
            if org.main_contacts_allowed.is_some()
                && !org.main_contacts.is_empty()
                && !org.main_contacts.contains(&from.key())
            {
                flags.push("not-main-contact".to_string());
                notes.push(format!(
                    "{} is not a main contact of {} (its plan names {}): handled all the same.",
                    from.address,
                    org.id,
                    org.main_contacts.join(", ")
                ));
            }
            if let Some(quota) = org.cases_per_quarter {
                if org.cases_this_quarter >= quota {
                    flags.push("over-quota".to_string());
                    notes.push(format!(
                        "Case {} this quarter for {}, whose plan allows {quota}: over quota (the ticket is handled all the same).",
                        org.cases_this_quarter + 1,
                        org.id
                    ));
                    if let Some(am) = &org.account_manager {
                        notices.push(Notice {
                            kind: NoticeKind::OverQuota,
                            to: Mailbox {
                                address: am.clone(),
                                name: None,
                            },
                            facts: vec![
                                ("organisation".into(), org.id.clone()),
                                ("cases".into(), (org.cases_this_quarter + 1).to_string()),
                                ("quota".into(), quota.to_string()),
                            ],
                            template: None,
                        });
                    }
                }
            }
        }
    }

    let Classification {
        severity,
        rule,
        queue,
        tags,
        ..
    } = c;
    let severity = severity.unwrap_or(cfg.default_severity);
    let linked = closed_link
        .or_else(|| look.by_tag.as_ref().map(|t| t.number.clone()))
        .or(untrusted_reference);
    if linked.is_none() {
        if let Some(n) = &look.tag_number {
            notes.push(format!(
                "Subject names ticket {n}, which does not exist here."
            ));
        }
    }

    let confirm_to = if cfg.confirm {
        confirmation_recipient(mail, cfg, look, &mut notes)
    } else {
        None
    };
    Decision {
        action: Action::Created,
        kind: Kind::Mail,
        reason: match &rule {
            Some(r) => format!("new ticket, severity {} by rule {r}", severity.level()),
            None => format!("new ticket, default severity {}", severity.level()),
        },
        target: Target::New(NewTicket {
            subject: cfg.tag.strip(&mail.subject),
            requester: from,
            severity,
            rule,
            linked,
            reply_to: reply_to_of(mail, cfg),
            participants: people(mail, cfg),
            organisation: look.organisation.as_ref().map(|o| o.id.clone()),
            flags,
            queue,
            tags,
            language: None,
        }),
        confirm_to,
        new_participants: Vec::new(),
        set_reply_to: None,
        notes,
        notices,
        incident: None,
    }
}

/// The decision for a message a rule routes (not a support request): a
/// forward of it to each destination and/or an answer to its sender with
/// the rule's template. `None` when the rule forwards but no destination is
/// known (a sender with no account manager): then the message is handled
/// as a support request, so that nobody's mail is left unread.
fn route(
    mail: &ParsedMail,
    look: &Lookups,
    cfg: &DecideConfig,
    c: &Classification,
    forward: &[String],
    reply: Option<&str>,
    notes: &mut Vec<String>,
) -> Option<Decision> {
    let rule = c.action_rule.as_deref().unwrap_or("?");
    let sender = mail.from.as_ref().map(|m| m.key()).unwrap_or_default();
    let account_manager = match &look.organisation {
        Some(o) => o.account_manager.as_deref(),
        None => cfg.default_account_manager.as_deref(),
    };
    let mut to: Vec<String> = Vec::new();
    let mut unknown_am = false;
    for f in forward {
        let a = if f == ACCOUNT_MANAGER {
            match account_manager {
                Some(a) => a.to_ascii_lowercase(),
                None => {
                    unknown_am = true;
                    continue;
                }
            }
        } else {
            f.clone()
        };
        if !to.contains(&a) && !cfg.own_addresses.contains(&a) {
            to.push(a);
        }
    }
    let who = match &look.organisation {
        Some(o) => format!("{} ({}) has no account manager", sender, o.id),
        None => format!("{sender} belongs to no registered customer"),
    };
    if !forward.is_empty() && to.is_empty() {
        notes.push(format!(
            "Rule {rule} routes this mail to the account manager, but {who}: handled as a support request instead."
        ));
        return None;
    }
    if unknown_am {
        notes.push(format!(
            "Rule {rule} names the account manager, but {who}: forwarded to {} only.",
            to.join(", ")
        ));
    }
    let facts = vec![
        ("rule".to_string(), rule.to_string()),
        ("sender".to_string(), sender.clone()),
        ("forwarded_to".to_string(), to.join(", ")),
    ];
    let mut notices: Vec<Notice> = to
        .iter()
        .map(|a| Notice {
            kind: NoticeKind::Forward,
            to: Mailbox {
                address: a.clone(),
                name: None,
            },
            facts: facts.clone(),
            template: None,
        })
        .collect();
    let mut answered = None;
    if let Some(t) = reply {
        if look.alert.is_some() {
            notes.push(format!(
                "Rule {rule} would answer with {t}, but monitoring alerts are never answered."
            ));
        } else if let Some(m) = confirmation_recipient(mail, cfg, look, notes) {
            answered = Some(m.address.clone());
            notices.push(Notice {
                kind: NoticeKind::Answer,
                to: m,
                facts,
                template: Some(t.to_string()),
            });
        }
    }
    let mut what = Vec::new();
    if !to.is_empty() {
        what.push(format!("forwarded to {}", to.join(", ")));
    }
    if let (Some(t), Some(a)) = (reply, &answered) {
        what.push(format!("{a} answered with {t}"));
    }
    if what.is_empty() {
        what.push("stored only".into());
    }
    Some(Decision {
        action: Action::Routed,
        kind: if look.alert.is_some() {
            Kind::Alert
        } else {
            Kind::Mail
        },
        target: Target::Nothing,
        confirm_to: None,
        new_participants: Vec::new(),
        set_reply_to: None,
        notices,
        incident: None,
        notes: std::mem::take(notes),
        reason: format!("not a support request (rule {rule}): {}", what.join("; ")),
    })
}

/// May this sender write into the ticket by subject tag alone?
fn trusted(t: &TicketInfo, sender: &str, freemail: &[String]) -> bool {
    if sender.is_empty() {
        return false;
    }
    if t.participants.iter().any(|p| p == sender) || t.requester == sender {
        return true;
    }
    let d = domain_of(sender);
    !d.is_empty() && d == domain_of(&t.requester) && !freemail.contains(&d)
}

/// A staff member's mail on a ticket: an article and the staff reply the
/// SLA clock counts; relayed to the requester as the desk's answer unless
/// the staff member wrote to the requester directly (To or Cc).
fn staff_reply(
    mail: &ParsedMail,
    ticket: TicketInfo,
    how: &str,
    sender: &str,
    cfg: &DecideConfig,
    notes: Vec<String>,
) -> Decision {
    let customer = ticket.customer_address().to_string();
    let addressed = mail
        .to
        .iter()
        .chain(mail.cc.iter())
        .any(|m| m.key() == customer);
    let mut notices = Vec::new();
    let reason = if addressed {
        format!(
            "staff reply by {sender} on ticket {} ({how}); the requester was among its recipients",
            ticket.number
        )
    } else {
        notices.push(Notice {
            kind: NoticeKind::Relay,
            to: Mailbox {
                address: customer.clone(),
                name: None,
            },
            facts: vec![("staff".to_string(), sender.to_string())],
            template: Some("reply".into()),
        });
        format!(
            "staff reply by {sender} on ticket {} ({how}); relayed to {customer}",
            ticket.number
        )
    };
    let new_participants: Vec<String> = people(mail, cfg)
        .into_iter()
        .filter(|a| !ticket.participants.contains(a) && !cfg.is_staff(a))
        .collect();
    Decision {
        action: Action::Appended,
        kind: Kind::StaffReply,
        reason,
        target: Target::Existing {
            ticket,
            reopen: false,
            resolve: false,
            quiet: false,
        },
        confirm_to: None,
        new_participants,
        set_reply_to: None,
        notices,
        incident: None,
        notes,
    }
}

/// Where the sender of `mail` asks answers to go, when not to From: its
/// Reply-To (lower case), unless that is one of ours, a system address, not
/// deliverable, or From itself.
fn reply_to_of(mail: &ParsedMail, cfg: &DecideConfig) -> Option<String> {
    let r = mail.reply_to.as_ref()?.key();
    let from = mail.from.as_ref().map(|m| m.key()).unwrap_or_default();
    let deliverable = r.contains('@') && !r.starts_with('@') && !r.ends_with('@');
    (deliverable
        && r != from
        && !cfg.own_addresses.contains(&r)
        && !super::guard::is_system_address(&r))
    .then_some(r)
}

/// A person's answer to a digest of ours (a mail about many tickets):
/// stored, no ticket, and one automatic answer saying so — unless the
/// message answers that answer (a notice of ours) or the hourly limit is
/// reached, so that it cannot loop.
fn digest_answer(
    mail: &ParsedMail,
    look: &Lookups,
    cfg: &DecideConfig,
    sender: &str,
    mut notes: Vec<String>,
) -> Decision {
    let to = confirmation_recipient(mail, cfg, look, &mut notes);
    let reason = match &to {
        Some(m) => format!(
            "{sender} answered a digest of ours (about many tickets): no ticket; told {} to answer on a ticket instead",
            m.address
        ),
        None => format!("{sender} answered a digest of ours (about many tickets): no ticket"),
    };
    Decision {
        notices: to
            .map(|m| Notice {
                kind: NoticeKind::DigestAnswer,
                to: m,
                facts: Vec::new(),
                template: None,
            })
            .into_iter()
            .collect(),
        ..Decision::quiet(
            Action::Suppressed,
            Kind::Mail,
            Target::Nothing,
            notes,
            reason,
        )
    }
}

/// The people on a message (From, Reply-To, To, Cc) but not us, lower case.
fn people(mail: &ParsedMail, cfg: &DecideConfig) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let all = mail
        .from
        .iter()
        .chain(mail.reply_to.iter())
        .chain(mail.to.iter())
        .chain(mail.cc.iter());
    for m in all {
        let k = m.key();
        if k.contains('@')
            && !cfg.own_addresses.contains(&k)
            && !super::guard::is_system_address(&k)
            && !out.contains(&k)
        {
            out.push(k);
        }
    }
    out
}

/// The decision for a monitoring alert: a problem opens a ticket for its
/// incident or counts on the open one (re-opens it within the flap window);
/// a recovery resolves it; nothing is ever answered.
fn decide_alert(
    mail: &ParsedMail,
    alert: &super::alerts::Alert,
    look: &Lookups,
    cfg: &DecideConfig,
    classify: &mut Classifier<'_>,
) -> Decision {
    use super::alerts::{AlertKind, AlertState};
    let org = look.organisation.as_ref();
    let key = incident_key(org.map(|o| o.id.as_str()), alert);
    let what = match &alert.service {
        Some(s) => format!("{s} on {}", alert.host),
        None => format!("host {}", alert.host),
    };
    let state = format!("{:?}", alert.state).to_uppercase();
    let change = |event| {
        Some(IncidentChange {
            key: key.clone(),
            event,
            state: state.clone(),
            text: alert.summary.clone(),
            resolve_at: None,
        })
    };
    let open = look
        .incident
        .as_ref()
        .filter(|i| !matches!(i.ticket.status, Status::Resolved | Status::Closed));
    let decision = |action, target, incident, notes: Vec<String>, reason: String| Decision {
        action,
        kind: Kind::Alert,
        target,
        confirm_to: None,
        new_participants: Vec::new(),
        set_reply_to: None,
        notes,
        notices: Vec::new(),
        incident,
        reason,
    };
    let existing = |ticket: &TicketInfo, reopen, resolve, quiet| Target::Existing {
        ticket: ticket.clone(),
        reopen,
        resolve,
        quiet,
    };
    // Rules with an `alert` table: ignore a host, route a source, or set a
    // severity other than the state's.
    let c = classify(mail, &look.facts());
    let mut route_notes = Vec::new();
    match &c.action {
        RuleAction::Ticket => {}
        RuleAction::Ignore => {
            return decision(
                Action::Ignored,
                Target::Nothing,
                None,
                Vec::new(),
                format!(
                    "{what} is {state}: ignored by rule {}",
                    c.action_rule.as_deref().unwrap_or("?")
                ),
            );
        }
        RuleAction::Route { forward, reply } => {
            if let Some(d) = route(
                mail,
                look,
                cfg,
                &c,
                forward,
                reply.as_deref(),
                &mut route_notes,
            ) {
                return d;
            }
        }
    }
    if alert.kind == AlertKind::Recovery || alert.state.is_recovery() {
        return match open.filter(|i| i.problem) {
            Some(i) if look.hold_until.is_some() => decision(
                Action::Appended,
                existing(&i.ticket, false, false, false),
                change(IncidentEvent::Recovered).map(|c| IncidentChange {
                    resolve_at: look.hold_until.clone(),
                    ..c
                }),
                vec![format!(
                    "Recovery: {what} is {state}; the ticket is resolved at {} unless the problem comes back.",
                    look.hold_until.as_deref().unwrap_or("")
                )],
                format!(
                    "recovery of {what}: ticket {} resolved after the hold-down unless the problem returns",
                    i.ticket.number
                ),
            ),
            Some(i) => decision(
                Action::Appended,
                existing(&i.ticket, false, true, false),
                change(IncidentEvent::Recovered),
                vec![format!("Recovery: {what} is {state}; ticket resolved.")],
                format!("recovery of {what}: ticket {} resolved", i.ticket.number),
            ),
            None => decision(
                Action::Suppressed,
                Target::Nothing,
                None,
                Vec::new(),
                format!("recovery of {what} with no open problem: stored, ignored"),
            ),
        };
    }
    if matches!(alert.kind, AlertKind::Acknowledgement | AlertKind::Other) {
        return match open {
            Some(i) => decision(
                Action::Appended,
                existing(&i.ticket, false, false, false),
                None,
                Vec::new(),
                format!("{what}: notice kept on ticket {}", i.ticket.number),
            ),
            None => decision(
                Action::Suppressed,
                Target::Nothing,
                None,
                Vec::new(),
                format!("{what}: monitoring notice without an open ticket: stored"),
            ),
        };
    }
    // A problem.
    if let Some(i) = open.filter(|i| !i.problem) {
        // Back before the hold-down of its recovery ended: the ticket
        // stays open, and says so.
        return decision(
            Action::Appended,
            existing(&i.ticket, false, false, false),
            change(IncidentEvent::Repeated),
            vec![format!(
                "{what} is {state} again before the recovery's hold-down ended: the ticket stays open."
            )],
            format!(
                "{what} is {state} again: ticket {} stays open",
                i.ticket.number
            ),
        );
    }
    if let Some(i) = open {
        return decision(
            Action::Appended,
            existing(&i.ticket, false, false, true),
            change(IncidentEvent::Repeated),
            Vec::new(),
            format!(
                "{what} is {state} again: counted on ticket {}",
                i.ticket.number
            ),
        );
    }
    // While its host is DOWN (its ticket open), a service's new problem is
    // part of the host's incident: it joins that ticket.
    if let Some(h) = look.host_incident.as_ref().filter(|h| {
        h.problem
            && alert.service.is_some()
            && !matches!(h.ticket.status, Status::Resolved | Status::Closed)
    }) {
        return decision(
            Action::Appended,
            existing(&h.ticket, false, false, false),
            None,
            vec![format!(
                "{what} is {state} while host {} is down: kept on the host's ticket.",
                alert.host
            )],
            format!(
                "{what} is {state} while its host is down: joined ticket {}",
                h.ticket.number
            ),
        );
    }
    if let Some(i) = look.incident.as_ref().filter(|i| i.flapping) {
        return decision(
            Action::Appended,
            existing(&i.ticket, true, false, false),
            change(IncidentEvent::Reopened),
            vec![format!(
                "{what} is {state} again soon after its recovery (flapping): ticket re-opened."
            )],
            format!(
                "{what} is {state} again: ticket {} re-opened",
                i.ticket.number
            ),
        );
    }
    let critical = matches!(
        alert.state,
        AlertState::Critical | AlertState::Down | AlertState::Unreachable
    );
    let host = alert.host.to_lowercase();
    let by_state = if critical {
        if org.is_some_and(|o| o.critical_hosts.iter().any(|h| h.to_lowercase() == host)) {
            cfg.alert_severity.critical_host
        } else {
            cfg.alert_severity.critical
        }
    } else {
        cfg.alert_severity.warning
    };
    let severity = c.severity.unwrap_or(by_state);
    let Some(from) = mail.from.clone() else {
        return decision(
            Action::Suppressed,
            Target::Nothing,
            None,
            Vec::new(),
            format!("alert for {what} without a sender"),
        );
    };
    let rule = c.rule.clone().unwrap_or_else(|| {
        format!(
            "alert:{}:{}",
            format!("{:?}", alert.source).to_lowercase(),
            state
        )
    });
    decision(
        Action::Created,
        Target::New(NewTicket {
            subject: cfg.tag.strip(&mail.subject),
            requester: from,
            severity,
            rule: Some(rule),
            linked: None,
            // Monitoring is never answered.
            reply_to: None,
            participants: Vec::new(),
            organisation: org.map(|o| o.id.clone()),
            flags: Vec::new(),
            queue: c.queue.clone(),
            tags: c.tags.clone(),
            language: None,
        }),
        change(IncidentEvent::Opened),
        route_notes,
        format!(
            "{what} is {state}: new ticket, severity {}",
            severity.level()
        ),
    )
}

/// Reply-To or From, unless it is ours, a robot, or over the hourly limit.
fn confirmation_recipient(
    mail: &ParsedMail,
    cfg: &DecideConfig,
    look: &Lookups,
    notes: &mut Vec<String>,
) -> Option<Mailbox> {
    if look.answers_notice {
        notes.push("No confirmation: the message answers an automatic notice of ours.".to_string());
        return None;
    }
    let to = mail.reply_address()?.clone();
    let key = to.key();
    if !key.contains('@') || key.starts_with('@') || key.ends_with('@') {
        notes.push(format!(
            "No confirmation: {key:?} is not a deliverable address."
        ));
        return None;
    }
    if cfg.own_addresses.contains(&key) {
        notes.push(format!(
            "No confirmation: the reply address {key} is our own."
        ));
        return None;
    }
    if super::guard::is_system_address(&key) {
        notes.push(format!(
            "No confirmation: the reply address {key} is a system address."
        ));
        return None;
    }
    if look.auto_mails_last_hour >= cfg.max_auto_per_hour {
        notes.push(format!(
            "No confirmation: {key} already got {} automatic mails in the last hour (limit {}).",
            look.auto_mails_last_hour, cfg.max_auto_per_hour
        ));
        return None;
    }
    Some(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::guard;
    use crate::ingest::parse::parse;

    fn cfg() -> DecideConfig {
        DecideConfig {
            own_addresses: vec!["support@example.com".into()],
            freemail_domains: vec!["gmail.com".into()],
            confirm: true,
            max_auto_per_hour: 10,
            default_severity: Severity::Malfunction,
            tag: crate::ingest::thread::SubjectTag::new("Ticket", ""),
            unknown_senders: UnknownSenders::Accept,
            alert_severity: AlertSeverity::default(),
            default_account_manager: None,
            staff: vec!["@provider.de".into(), "lead@example.org".into()],
        }
    }

    #[test]
    fn a_staff_mail_on_a_ticket_is_relayed_as_the_reply() {
        let look = Lookups {
            by_tag: Some(ticket("anna@kunde.de")),
            ..Default::default()
        };
        // Not a participant, not the requester's domain: trusted as staff.
        let d = run(
            "From: Tom <tom@provider.de>\r\nSubject: Re: [Ticket#10001] Drucker",
            &look,
        );
        assert_eq!(d.action, Action::Appended);
        assert_eq!(d.kind, Kind::StaffReply);
        assert!(d.confirm_to.is_none());
        assert_eq!(d.notices.len(), 1, "{:?}", d.notices);
        assert_eq!(d.notices[0].kind, NoticeKind::Relay);
        assert_eq!(d.notices[0].to.address, "anna@kunde.de");
        assert!(d.notices[0].kind.personal());
        assert!(
            d.reason.contains("relayed to anna@kunde.de"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn a_staff_mail_to_the_requester_is_recorded_not_sent_again() {
        let look = Lookups {
            by_reference: Some(ticket("anna@kunde.de")),
            ..Default::default()
        };
        let raw = "From: lead@example.org\r\nTo: anna@kunde.de\r\nCc: support@example.com\r\nSubject: Re: x\r\n\r\nDone.\r\n";
        let m = parse(raw.as_bytes()).unwrap();
        let v = guard::check(&m, &cfg().own_addresses);
        let d = decide(&m, &v, &look, &cfg(), &mut |_, _| Classification::default());
        assert_eq!(d.kind, Kind::StaffReply);
        assert!(d.notices.is_empty());
        assert!(d.reason.contains("among its recipients"), "{}", d.reason);
    }

    #[test]
    fn staff_addresses_and_domains() {
        let c = cfg();
        assert!(c.is_staff("tom@provider.de"));
        assert!(c.is_staff("lead@example.org"));
        assert!(!c.is_staff("other@example.org"));
        assert!(!c.is_staff("tom@provider.de.evil.com"));
        assert!(!c.is_staff(""));
    }

    fn run_with(headers: &str, look: &Lookups, cfg: &DecideConfig) -> Decision {
        let raw = format!("{headers}\r\nTo: support@example.com\r\n\r\nText\r\n");
        let m = parse(raw.as_bytes()).unwrap();
        let v = guard::check(&m, &cfg.own_addresses);
        decide(&m, &v, look, cfg, &mut |_, _| Classification::default())
    }

    fn org(cases: u32, quota: Option<u32>) -> Option<OrgFacts> {
        Some(OrgFacts {
            id: "kunde".into(),
            plan: Some("Premium".into()),
            main_contacts_allowed: None,
            main_contacts: Vec::new(),
            account_manager: Some("am@provider.de".into()),
            cases_per_quarter: quota,
            cases_this_quarter: cases,
            critical_hosts: vec!["erp01".into()],
            notify_new: vec!["it@kunde.de".into(), "anna@kunde.de".into()],
            notify_status: vec!["it@kunde.de".into()],
        })
    }

    #[test]
    fn unknown_senders_are_accepted_marked_or_refused_with_a_notice() {
        let from = "From: Eve <eve@unbekannt.de>\r\nSubject: Frage";
        let mut c = cfg();
        let d = run_with(from, &Lookups::default(), &c);
        assert_eq!(d.action, Action::Created);
        assert!(matches!(&d.target, Target::New(t) if t.flags.is_empty()));

        c.unknown_senders = UnknownSenders::Unverified;
        let d = run_with(from, &Lookups::default(), &c);
        assert_eq!(d.action, Action::Created);
        assert!(matches!(&d.target, Target::New(t) if t.flags == ["unverified"]));
        assert!(d.confirm_to.is_some(), "still confirmed");

        c.unknown_senders = UnknownSenders::Reject;
        let d = run_with(from, &Lookups::default(), &c);
        assert_eq!(d.action, Action::Suppressed);
        assert_eq!(d.target, Target::Nothing);
        assert!(d.confirm_to.is_none());
        assert_eq!(d.notices.len(), 1);
        assert_eq!(d.notices[0].kind, NoticeKind::Registration);
        assert_eq!(d.notices[0].to.address, "eve@unbekannt.de");
        // The hourly limit holds for the notice too.
        let busy = Lookups {
            auto_mails_last_hour: 10,
            ..Default::default()
        };
        let d = run_with(from, &busy, &c);
        assert_eq!(d.action, Action::Suppressed);
        assert!(d.notices.is_empty());
        // A known customer is not affected.
        let known = Lookups {
            organisation: org(0, None),
            ..Default::default()
        };
        let d = run_with(from, &known, &c);
        assert_eq!(d.action, Action::Created);
        assert!(matches!(&d.target, Target::New(t) if t.organisation.as_deref() == Some("kunde")));
    }

    #[test]
    fn the_organisations_recipients_hear_of_new_tickets_and_status_changes() {
        let known = Lookups {
            organisation: org(0, None),
            ..Default::default()
        };
        // anna is on the list but wrote the mail herself: only it@ is told.
        let d = run_with("From: anna@kunde.de\r\nSubject: Drucker", &known, &cfg());
        let to: Vec<(NoticeKind, &str)> = d
            .notices
            .iter()
            .map(|n| (n.kind, n.to.address.as_str()))
            .collect();
        assert_eq!(to, [(NoticeKind::NewTicket, "it@kunde.de")]);
        // A customer writing to a resolved ticket re-opens it: a status mail.
        let mut t = ticket("anna@kunde.de");
        t.status = Status::Resolved;
        let reply = Lookups {
            by_reference: Some(t),
            organisation: org(0, None),
            ..Default::default()
        };
        let d = run_with(
            "From: anna@kunde.de\r\nSubject: Re: Drucker",
            &reply,
            &cfg(),
        );
        assert!(matches!(d.target, Target::Existing { reopen: true, .. }));
        assert_eq!(d.notices.len(), 1);
        assert_eq!(d.notices[0].kind, NoticeKind::Status);
        assert!(d.notices[0]
            .facts
            .contains(&("status".into(), "open".into())));
        // A plain follow-up changes no status: nobody is told.
        let open = Lookups {
            by_reference: Some(ticket("anna@kunde.de")),
            organisation: org(0, None),
            ..Default::default()
        };
        let d = run_with("From: anna@kunde.de\r\nSubject: Re: Drucker", &open, &cfg());
        assert!(d.notices.is_empty());
    }

    #[test]
    fn a_case_over_the_quota_is_created_flagged_and_reported() {
        let from = "From: anna@kunde.de\r\nSubject: Drucker";
        let under = Lookups {
            organisation: org(9, Some(10)),
            ..Default::default()
        };
        let d = run_with(from, &under, &cfg());
        assert!(matches!(&d.target, Target::New(t) if t.flags.is_empty()));
        assert!(!d.notices.iter().any(|n| n.kind == NoticeKind::OverQuota));
        let over = Lookups {
            organisation: org(10, Some(10)),
            ..Default::default()
        };
        let d = run_with(from, &over, &cfg());
        assert_eq!(d.action, Action::Created, "never refused");
        assert!(matches!(&d.target, Target::New(t) if t.flags == ["over-quota"]));
        let over: Vec<&Notice> = d
            .notices
            .iter()
            .filter(|n| n.kind == NoticeKind::OverQuota)
            .collect();
        assert_eq!(over.len(), 1);
        assert_eq!(over[0].to.address, "am@provider.de");
        assert!(over[0].facts.contains(&("cases".into(), "11".into())));
        assert!(d.notes.iter().any(|n| n.contains("over quota")));
    }

    fn ticket(requester: &str) -> TicketInfo {
        TicketInfo {
            id: 1,
            number: TicketNumber("10001".into()),
            requester: requester.into(),
            participants: vec![requester.into(), "cc@partner.de".into()],
            status: Status::Open,
            reply_to: None,
            last_inbound: None,
            thread: Vec::new(),
            language: None,
        }
    }

    fn run(headers: &str, look: &Lookups) -> Decision {
        let raw = format!("{headers}\r\nTo: support@example.com\r\n\r\nText\r\n");
        let m = parse(raw.as_bytes()).unwrap();
        let v = guard::check(&m, &cfg().own_addresses);
        decide(&m, &v, look, &cfg(), &mut |_, _| Classification::default())
    }

    #[test]
    fn new_mail_creates_and_confirms() {
        let d = run(
            "From: Anna <anna@kunde.de>\r\nSubject: Hilfe",
            &Lookups::default(),
        );
        assert_eq!(d.action, Action::Created);
        assert_eq!(d.confirm_to.unwrap().address, "anna@kunde.de");
        match d.target {
            Target::New(t) => assert_eq!(t.severity, Severity::Malfunction),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reply_to_wins_for_confirmation() {
        let d = run(
            "From: anna@kunde.de\r\nReply-To: helpdesk@kunde.de\r\nSubject: x",
            &Lookups::default(),
        );
        assert_eq!(d.confirm_to.unwrap().address, "helpdesk@kunde.de");
    }

    #[test]
    fn tag_from_participant_or_domain_appends() {
        let look = Lookups {
            tag_number: Some(TicketNumber("10001".into())),
            by_tag: Some(ticket("anna@kunde.de")),
            ..Default::default()
        };
        for from in ["anna@kunde.de", "bob@kunde.de", "cc@partner.de"] {
            let d = run(
                &format!("From: {from}\r\nSubject: Re: [Ticket#10001] x"),
                &look,
            );
            assert_eq!(d.action, Action::Appended, "{from}");
            assert!(d.confirm_to.is_none());
        }
    }

    #[test]
    fn tag_from_stranger_opens_linked_ticket() {
        let look = Lookups {
            tag_number: Some(TicketNumber("10001".into())),
            by_tag: Some(ticket("anna@kunde.de")),
            ..Default::default()
        };
        let d = run(
            "From: mallory@evil.example\r\nSubject: Re: [Ticket#10001] x",
            &look,
        );
        assert_eq!(d.action, Action::Created);
        match &d.target {
            Target::New(t) => {
                assert_eq!(t.linked, Some(TicketNumber("10001".into())));
                assert_eq!(t.subject, "Re: x");
            }
            other => panic!("{other:?}"),
        }
        assert!(d.notes[0].contains("not a participant"));
    }

    #[test]
    fn freemail_domain_is_not_trusted() {
        let look = Lookups {
            tag_number: Some(TicketNumber("10001".into())),
            by_tag: Some(ticket("anna@gmail.com")),
            ..Default::default()
        };
        let d = run(
            "From: eve@gmail.com\r\nSubject: Re: [Ticket#10001] x",
            &look,
        );
        assert_eq!(d.action, Action::Created);
    }

    #[test]
    fn a_reference_to_a_mail_of_ours_appends_from_anyone() {
        let look = Lookups {
            by_reference: Some(ticket("anna@kunde.de")),
            reference_ours: true,
            ..Default::default()
        };
        let d = run("From: colleague@other.de\r\nSubject: Re: x", &look);
        assert_eq!(d.action, Action::Appended);
        assert_eq!(d.new_participants, vec!["colleague@other.de".to_string()]);
    }

    #[test]
    fn a_reference_only_to_a_customers_message_is_held_to_the_participant_rule() {
        let look = Lookups {
            by_reference: Some(ticket("anna@kunde.de")),
            ..Default::default()
        };
        // A stranger quoting the customer's own Message-ID.
        let d = run("From: mallory@evil.example\r\nSubject: Re: x", &look);
        assert_eq!(d.action, Action::Created);
        assert!(
            matches!(&d.target, Target::New(t) if t.linked.as_ref().map(|n| n.as_str()) == Some("10001")),
            "{:?}",
            d.target
        );
        assert!(d.notes[0].contains("not a mail of ours"), "{:?}", d.notes);
        // The customer's colleague (same domain) is still a follow-up.
        let d = run("From: bernd@kunde.de\r\nSubject: Re: x", &look);
        assert_eq!(d.action, Action::Appended);
    }

    #[test]
    fn every_author_of_a_several_from_mail_must_be_trusted() {
        let look = Lookups {
            by_tag: Some(ticket("anna@kunde.de")),
            tag_number: Some(TicketNumber("10001".into())),
            ..Default::default()
        };
        let d = run(
            "From: anna@kunde.de, mallory@evil.example\r\nSubject: Re: [Ticket#10001] x",
            &look,
        );
        assert_eq!(d.action, Action::Created, "{}", d.reason);
        assert!(d.notes[0].contains("mallory@evil.example"), "{:?}", d.notes);
        // Both authors of the customer's domain: a follow-up.
        let d = run(
            "From: anna@kunde.de, bernd@kunde.de\r\nSubject: Re: [Ticket#10001] x",
            &look,
        );
        assert_eq!(d.action, Action::Appended);
    }

    #[test]
    fn auto_reply_is_kept_on_ticket_or_suppressed() {
        let look = Lookups {
            by_reference: Some(ticket("anna@kunde.de")),
            ..Default::default()
        };
        let d = run(
            "From: anna@kunde.de\r\nAuto-Submitted: auto-replied\r\nSubject: Abwesend",
            &look,
        );
        assert_eq!((d.action, d.kind), (Action::Appended, Kind::AutoReply));
        assert!(d.confirm_to.is_none());
        let d = run(
            "From: anna@kunde.de\r\nAuto-Submitted: auto-replied\r\nSubject: Abwesend",
            &Lookups::default(),
        );
        assert_eq!(d.action, Action::Suppressed);
    }

    #[test]
    fn rate_limit_skips_only_the_confirmation() {
        let look = Lookups {
            auto_mails_last_hour: 10,
            ..Default::default()
        };
        let d = run("From: anna@kunde.de\r\nSubject: x", &look);
        assert_eq!(d.action, Action::Created);
        assert!(d.confirm_to.is_none());
        assert!(d.notes[0].contains("limit 10"));
    }

    #[test]
    fn a_customer_answer_ends_the_wait() {
        let mut t = ticket("anna@kunde.de");
        t.status = Status::Pending;
        let look = Lookups {
            by_reference: Some(t),
            ..Default::default()
        };
        let d = run("From: anna@kunde.de\r\nSubject: Re: x", &look);
        assert!(matches!(d.target, Target::Existing { reopen: true, .. }));
        assert!(d.notices.is_empty());
    }

    #[test]
    fn a_closed_ticket_is_final_a_mail_on_it_opens_a_linked_ticket() {
        let mut t = ticket("anna@kunde.de");
        t.status = Status::Closed;
        let by_ref = Lookups {
            by_reference: Some(t.clone()),
            reference_ours: true,
            ..Default::default()
        };
        let by_tag = Lookups {
            tag_number: Some(t.number.clone()),
            by_tag: Some(t.clone()),
            ..Default::default()
        };
        for look in [by_ref, by_tag] {
            let d = run(
                "From: anna@kunde.de\r\nSubject: Re: [Ticket#10001] x",
                &look,
            );
            assert_eq!(d.action, Action::Created, "{}", d.reason);
            match &d.target {
                Target::New(n) => {
                    assert_eq!(n.linked, Some(TicketNumber("10001".into())));
                    assert_eq!(n.subject, "Re: x", "the old tag is not carried on");
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(d.confirm_to.as_ref().unwrap().address, "anna@kunde.de");
            assert!(
                d.notes.iter().any(|n| n.contains("is closed")),
                "{:?}",
                d.notes
            );
        }
        // Staff may still write on a closed ticket.
        let look = Lookups {
            by_reference: Some(t),
            reference_ours: true,
            ..Default::default()
        };
        let d = run("From: tom@provider.de\r\nSubject: Re: x", &look);
        assert_eq!(d.kind, Kind::StaffReply);
    }

    #[test]
    fn a_resolved_ticket_reopens() {
        let mut t = ticket("anna@kunde.de");
        t.status = Status::Resolved;
        let look = Lookups {
            by_reference: Some(t),
            ..Default::default()
        };
        let d = run("From: anna@kunde.de\r\nSubject: Re: x", &look);
        assert!(matches!(d.target, Target::Existing { reopen: true, .. }));
    }

    #[test]
    fn a_relay_goes_to_the_reply_address_and_the_requester_may_change_it() {
        let mut t = ticket("anna@kunde.de");
        t.reply_to = Some("it@kunde.de".into());
        let look = Lookups {
            by_reference: Some(t.clone()),
            reference_ours: true,
            ..Default::default()
        };
        let d = run("From: tom@provider.de\r\nSubject: Re: x", &look);
        assert_eq!(d.notices[0].kind, NoticeKind::Relay);
        assert_eq!(d.notices[0].to.address, "it@kunde.de");
        // Staff wrote to the reply address directly: not sent again.
        let d = run(
            "From: tom@provider.de\r\nCc: it@kunde.de\r\nSubject: Re: x",
            &look,
        );
        assert!(d.notices.is_empty(), "{:?}", d.notices);
        // The requester's mail decides where answers go; others' do not.
        let d = run(
            "From: anna@kunde.de\r\nReply-To: Anna <Anna.Mobil@kunde.de>\r\nSubject: Re: x",
            &look,
        );
        assert_eq!(d.set_reply_to, Some(Some("anna.mobil@kunde.de".into())));
        let d = run("From: anna@kunde.de\r\nSubject: Re: x", &look);
        assert_eq!(d.set_reply_to, Some(None));
        let d = run(
            "From: anna@kunde.de\r\nReply-To: it@kunde.de\r\nSubject: Re: x",
            &look,
        );
        assert_eq!(d.set_reply_to, None, "unchanged");
        let d = run(
            "From: bob@kunde.de\r\nReply-To: bob2@kunde.de\r\nSubject: Re: x",
            &look,
        );
        assert_eq!(d.set_reply_to, None);
        // Our own address as Reply-To is no reply address.
        let d = run(
            "From: anna@kunde.de\r\nReply-To: support@example.com\r\nSubject: y",
            &Lookups::default(),
        );
        assert!(matches!(&d.target, Target::New(n) if n.reply_to.is_none()));
    }

    #[test]
    fn an_answer_to_a_staff_mail_is_a_note_and_to_a_digest_a_refusal() {
        // From staff or from anyone holding the signed id: never a ticket,
        // never a confirmation, never relayed.
        for from in ["tom@provider.de", "anna@kunde.de", "x@elsewhere.org"] {
            let look = Lookups {
                staff_mail_ticket: Some(ticket("anna@kunde.de")),
                answers_staff_mail: true,
                answers_ours: true,
                ..Default::default()
            };
            let d = run(&format!("From: {from}\r\nSubject: Re: SLA 50 %: x"), &look);
            assert_eq!(d.action, Action::Appended);
            assert_eq!(d.kind, Kind::StaffNote);
            assert!(d.confirm_to.is_none() && d.notices.is_empty(), "{d:?}");
            assert!(matches!(
                d.target,
                Target::Existing {
                    reopen: false,
                    resolve: false,
                    ..
                }
            ));
        }
        // The ticket is gone: stored, nothing else.
        let gone = Lookups {
            answers_staff_mail: true,
            answers_ours: true,
            ..Default::default()
        };
        let d = run("From: tom@provider.de\r\nSubject: Re: SLA 50 %: x", &gone);
        assert_eq!(d.action, Action::Suppressed);
        assert!(d.notices.is_empty() && d.confirm_to.is_none());
        let digest = Lookups {
            answers_digest: true,
            answers_ours: true,
            ..Default::default()
        };
        let d = run("From: tom@provider.de\r\nSubject: Re: Digest", &digest);
        assert_eq!(d.action, Action::Suppressed);
        assert_eq!(d.target, Target::Nothing);
        assert!(d.confirm_to.is_none());
        assert_eq!(d.notices.len(), 1);
        assert_eq!(d.notices[0].kind, NoticeKind::DigestAnswer);
        assert!(d.notices[0].kind.answers(), "auto-replied, threaded");
        assert_eq!(d.notices[0].to.address, "tom@provider.de");
        // An answer to that refusal (a notice of ours), or over the hourly
        // limit: stored only.
        for look in [
            Lookups {
                answers_notice: true,
                ..digest.clone()
            },
            Lookups {
                auto_mails_last_hour: 10,
                ..digest.clone()
            },
        ] {
            let d = run("From: tom@provider.de\r\nSubject: Re: Re: Digest", &look);
            assert_eq!(d.action, Action::Suppressed);
            assert!(d.notices.is_empty(), "{d:?}");
        }
        // A robot answering a digest is not answered either.
        let d = run(
            "From: tom@provider.de\r\nAuto-Submitted: auto-replied\r\nSubject: Out of office",
            &digest,
        );
        assert!(d.notices.is_empty(), "{d:?}");
    }

    fn run_rules(headers: &str, look: &Lookups, cfg: &DecideConfig, c: Classification) -> Decision {
        let raw = format!("{headers}\r\nTo: support@example.com\r\n\r\nText\r\n");
        let m = parse(raw.as_bytes()).unwrap();
        let v = guard::check(&m, &cfg.own_addresses);
        decide(&m, &v, look, cfg, &mut |_, _| c.clone())
    }

    fn routing(forward: &[&str], reply: Option<&str>) -> Classification {
        Classification {
            action: RuleAction::Route {
                forward: forward.iter().map(|s| s.to_string()).collect(),
                reply: reply.map(str::to_string),
            },
            action_rule: Some("invoices".into()),
            ..Classification::default()
        }
    }

    #[test]
    fn route_forwards_to_the_account_manager_and_answers_the_sender() {
        let look = Lookups {
            organisation: org(0, None),
            ..Lookups::default()
        };
        let from = "From: Anna <anna@kunde.de>\r\nSubject: Rechnung 4711";
        let d = run_rules(
            from,
            &look,
            &cfg(),
            routing(
                &["account-manager", "billing@desk.example"],
                Some("not-support"),
            ),
        );
        assert_eq!(d.action, Action::Routed);
        assert_eq!(d.target, Target::Nothing);
        assert_eq!(d.confirm_to, None, "no confirmation: there is no ticket");
        let kinds: Vec<(NoticeKind, &str)> = d
            .notices
            .iter()
            .map(|n| (n.kind, n.to.address.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (NoticeKind::Forward, "am@provider.de"),
                (NoticeKind::Forward, "billing@desk.example"),
                (NoticeKind::Answer, "anna@kunde.de"),
            ]
        );
        assert_eq!(d.notices[2].template(), "not-support");
        assert!(d.reason.contains("rule invoices"), "{}", d.reason);
        // Over the hourly limit the answer is skipped, the forward is not.
        let busy = Lookups {
            auto_mails_last_hour: 10,
            ..look.clone()
        };
        let d = run_rules(
            from,
            &busy,
            &cfg(),
            routing(&["account-manager"], Some("not-support")),
        );
        assert_eq!(d.notices.len(), 1);
        assert_eq!(d.notices[0].kind, NoticeKind::Forward);
    }

    #[test]
    fn route_without_anyone_to_forward_to_becomes_a_ticket() {
        let from = "From: Eve <eve@prospect.de>\r\nSubject: Angebot";
        let d = run_rules(
            from,
            &Lookups::default(),
            &cfg(),
            routing(&["account-manager"], Some("not-support")),
        );
        assert_eq!(d.action, Action::Created);
        assert!(
            d.notes
                .iter()
                .any(|n| n.contains("handled as a support request")),
            "{:?}",
            d.notes
        );
        // With a desk-wide account manager for prospects it is routed.
        let mut c = cfg();
        c.default_account_manager = Some("vertrieb@desk.example".into());
        let d = run_rules(
            from,
            &Lookups::default(),
            &c,
            routing(&["account-manager"], None),
        );
        assert_eq!(d.action, Action::Routed);
        assert_eq!(d.notices[0].to.address, "vertrieb@desk.example");
        // A reply-only route needs nobody.
        let d = run_rules(
            from,
            &Lookups::default(),
            &cfg(),
            routing(&[], Some("not-support")),
        );
        assert_eq!(d.action, Action::Routed);
        assert_eq!(d.notices[0].kind, NoticeKind::Answer);
    }

    #[test]
    fn ignore_stores_only_and_rule_settings_reach_the_ticket() {
        let from = "From: Anna <anna@kunde.de>\r\nSubject: Sicherungsbericht";
        let ignore = Classification {
            action: RuleAction::Ignore,
            action_rule: Some("backup-report".into()),
            ..Classification::default()
        };
        let d = run_rules(from, &Lookups::default(), &cfg(), ignore);
        assert_eq!(d.action, Action::Ignored);
        assert_eq!(d.target, Target::Nothing);
        assert!(d.notices.is_empty() && d.confirm_to.is_none());
        let set = Classification {
            severity: Some(Severity::Critical),
            rule: Some("erp".into()),
            queue: Some("erp".into()),
            tags: vec!["erp".into(), "premium".into()],
            ..Classification::default()
        };
        let d = run_rules(from, &Lookups::default(), &cfg(), set);
        match d.target {
            Target::New(t) => {
                assert_eq!(t.severity, Severity::Critical);
                assert_eq!(t.queue.as_deref(), Some("erp"));
                assert_eq!(t.tags, ["erp", "premium"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rules_on_alerts_ignore_or_set_the_severity_and_never_answer() {
        use crate::ingest::alerts::{Alert, AlertKind, AlertSource, AlertState};
        let look = Lookups {
            alert: Some(Alert {
                source: AlertSource::Nagios,
                host: "web01".into(),
                service: Some("HTTP".into()),
                state: AlertState::Warning,
                kind: AlertKind::Problem,
                event_id: None,
                summary: "slow".into(),
            }),
            organisation: org(0, None),
            ..Lookups::default()
        };
        let from = "From: nagios@mon.kunde.de\r\nSubject: ** PROBLEM Service Alert: web01/HTTP is WARNING **";
        let ignore = Classification {
            action: RuleAction::Ignore,
            action_rule: Some("test".into()),
            ..Classification::default()
        };
        let d = run_rules(from, &look, &cfg(), ignore);
        assert_eq!((d.action, d.kind), (Action::Ignored, Kind::Alert));
        assert!(d.incident.is_none());
        let sev = Classification {
            severity: Some(Severity::Critical),
            rule: Some("web-critical".into()),
            ..Classification::default()
        };
        let d = run_rules(from, &look, &cfg(), sev);
        match &d.target {
            Target::New(t) => {
                assert_eq!(t.severity, Severity::Critical);
                assert_eq!(t.rule.as_deref(), Some("web-critical"));
            }
            other => panic!("{other:?}"),
        }
        let d = run_rules(
            from,
            &look,
            &cfg(),
            routing(&["account-manager"], Some("not-support")),
        );
        assert_eq!(d.action, Action::Routed);
        assert!(
            d.notices.iter().all(|n| n.kind == NoticeKind::Forward),
            "{:?}",
            d.notices
        );
    }

    #[test]
    fn a_case_from_someone_not_a_main_contact_is_flagged_not_refused() {
        let mut o = org(0, None).unwrap();
        o.main_contacts_allowed = Some(1);
        o.main_contacts = vec!["chef@kunde.de".into()];
        let look = Lookups {
            organisation: Some(o),
            ..Lookups::default()
        };
        let d = run("From: Anna <anna@kunde.de>\r\nSubject: Drucker", &look);
        assert_eq!(d.action, Action::Created);
        match &d.target {
            Target::New(t) => assert_eq!(t.flags, ["not-main-contact"]),
            other => panic!("{other:?}"),
        }
        let d = run("From: Chef <chef@kunde.de>\r\nSubject: Drucker", &look);
        match &d.target {
            Target::New(t) => assert!(t.flags.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}
