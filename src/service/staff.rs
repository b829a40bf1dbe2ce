//! The desk's staff side: the SLA setup (policies, audiences, digests),
//! the mails and chat posts of reminders and digests, and staff
//! actions on tickets (reply, status, severity, note), each with the
//! ticket's SLA clock brought up to date in the same transaction.

use super::Intake;
use crate::config::{audience_entry, AudienceEntry, Config};
use crate::customers::Directory;
use crate::domain::{severity_detail, status_event};
use crate::domain::{Mailbox, Severity, Status, TicketNumber};
use crate::outbound::mail::{confirmation, Confirmation, Outgoing};
use crate::plan::{ActionPlan, PlannedReply};
use crate::sla::cron::CronSchedule;
use crate::sla::evaluate::{Evaluated, PlanOf, Reminder, SlaContext};
use crate::sla::policy::Policies;
use crate::store::actions::{self, ActionError};
use crate::store::sla::{Digest, Notification};
use crate::store::{self, Store, StoreError};
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// The audience (of `[sla.audiences]`) told when an OAuth 2.0 grant is
/// refused for good.
pub const GRANT_AUDIENCE: &str = "lead";

/// A periodic digest as configured.
#[derive(Debug)]
struct DigestJob {
    name: String,
    schedule: CronSchedule,
    to: Vec<String>,
}

/// What the desk knows about service levels.
#[derive(Debug)]
pub(super) struct SlaSetup {
    enabled: bool,
    source: Option<PathBuf>,
    policies: RwLock<Option<Arc<Policies>>>,
    audiences: BTreeMap<String, Vec<AudienceEntry>>,
    digests: Vec<DigestJob>,
}

impl SlaSetup {
    /// From the configuration (validated before: entries and cron lines
    /// that do not read are left out here).
    pub(super) fn new(cfg: &Config) -> SlaSetup {
        let tz = cfg.sla.timezone.as_deref().unwrap_or(&cfg.desk.timezone);
        SlaSetup {
            enabled: cfg.sla.enabled,
            source: cfg.sla.policies.as_ref().map(|p| cfg.resolve(p)),
            policies: RwLock::new(None),
            audiences: cfg
                .sla
                .audiences
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.iter().filter_map(|e| audience_entry(e).ok()).collect(),
                    )
                })
                .collect(),
            digests: cfg
                .sla
                .digest
                .iter()
                .filter_map(|d| {
                    Some(DigestJob {
                        name: d.label(),
                        schedule: CronSchedule::parse(&d.cron, tz).ok()?,
                        to: d.to.clone(),
                    })
                })
                .collect(),
        }
    }

    /// The same setup with `p` as its policies, read already (a reload
    /// checks them before anything is replaced).
    pub(super) fn with_policies(self, p: Policies) -> SlaSetup {
        if let Ok(mut g) = self.policies.write() {
            *g = Some(Arc::new(p));
        }
        self
    }

    /// Reads the policy file (or the embedded one).
    pub(super) fn load(&self) -> Result<Policies, String> {
        match &self.source {
            None => Ok(Policies::embedded()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                Policies::parse(&text).map_err(|e| match e.line {
                    Some(line) => format!("{}:{line}: {}", p.display(), e.reason),
                    None => format!("{}: {e}", p.display()),
                })
            }
        }
    }
}

/// What differs between the desk's own mails ([`Intake::own_mail`]).
pub(super) struct OwnMail<'a> {
    /// The templates' base name.
    pub template: &'a str,
    /// The ticket it is about.
    pub number: Option<&'a TicketNumber>,
    /// Whether its Message-ID names the ticket (answers thread onto it).
    pub names_ticket: bool,
    /// Whether it goes to staff (a reminder, a digest): its Message-ID is a
    /// staff id, so an answer is filed as a note on the ticket (or, for a
    /// digest, refused) and never opens a ticket.
    pub to_staff: bool,
    /// The subject tag, or empty.
    pub tag: &'a str,
    /// The ticket's (or the job's) subject.
    pub subject: &'a str,
    /// Severity for the template.
    pub severity: Severity,
    /// Template facts.
    pub facts: &'a [(String, String)],
    /// Preformatted text (`{{ body }}`).
    pub body: &'a str,
    /// The language; default the desk's.
    pub language: Option<&'a str>,
}

/// A staff member's action on a ticket.
#[derive(Debug, Clone)]
pub enum StaffAction {
    /// Mail `text` to the requester, threaded on the ticket; with
    /// `then_pending` the ticket then waits for the customer.
    Reply {
        /// What to say.
        text: String,
        /// Set the ticket pending afterwards.
        then_pending: bool,
        /// Further recipients (`Cc`), besides the customer.
        cc: Vec<Mailbox>,
        /// The staff member's name: the reply's sender name becomes
        /// `NAME (desk name)` and the signature names them; `None` keeps
        /// the desk's name alone.
        staff_name: Option<String>,
    },
    /// Set the status.
    Status(Status),
    /// Set the severity (due times follow from receipt).
    Severity(Severity),
    /// Add an internal note.
    Note(String),
    /// Give the ticket to someone.
    Assign {
        /// Who, as a key (`discord:ID`, `cli:NAME`).
        key: String,
        /// Their name in lists.
        name: String,
    },
}

/// What an action did.
#[derive(Debug, Clone)]
pub struct ActionOutcome {
    /// The ticket.
    pub number: TicketNumber,
    /// Whether anything changed (setting a status it has is no change).
    pub changed: bool,
    /// Whether a mail was queued (wake the outbox).
    pub queued: bool,
    /// The ticket's SLA afterwards.
    pub sla: Option<Evaluated>,
}

/// The SLA context of the timer task and actions: the policies and the
/// customer directory's plans, as loaded when it was made, and the desk
/// that renders what timers send.
pub struct SlaHooks<'a> {
    pub(super) intake: &'a Intake,
    policies: Option<Arc<Policies>>,
    plan_of: Box<PlanOf>,
    pub(super) now: Timestamp,
}

impl SlaHooks<'_> {
    pub(super) fn context(&self) -> Option<SlaContext<'_>> {
        self.policies.as_deref().map(|p| SlaContext {
            policies: p,
            plan_of: &*self.plan_of,
        })
    }
}

fn plans(directory: Arc<Directory>) -> Box<PlanOf> {
    Box::new(move |org| directory.get(org).and_then(|o| o.plan.clone()))
}

impl Intake {
    /// The SLA policies, read on first use (the embedded example policies
    /// unless `[sla] policies` names a file).
    pub fn policies(&self) -> Result<Arc<Policies>, String> {
        if let Some(p) = self.sla().policies.read().ok().and_then(|g| g.clone()) {
            return Ok(p);
        }
        let p = Arc::new(self.sla().load()?);
        if let Ok(mut g) = self.sla().policies.write() {
            *g = Some(p.clone());
        }
        Ok(p)
    }

    /// The SLA setup in force (replaced whole by a reload of the config).
    pub(super) fn sla(&self) -> Arc<SlaSetup> {
        self.sla
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Puts re-read policies in force (SIGHUP).
    pub(super) fn set_policies(&self, p: Policies) {
        if let Ok(mut g) = self.sla().policies.write() {
            *g = Some(Arc::new(p));
        }
    }

    /// Checks the SLA setup: the policies read, every audience a stage
    /// names is configured (an unconfigured one is only recorded; returned
    /// as a warning), every organisation's plan has a policy or the default
    /// plan. Returns warnings.
    pub fn verify_sla(&self) -> Result<Vec<String>, String> {
        if !self.sla().enabled {
            return Ok(Vec::new());
        }
        let p = self.policies().map_err(|e| format!("sla: {e}"))?;
        let mut warnings = Vec::new();
        let mut named: Vec<&str> = p
            .default_stages()
            .iter()
            .chain(p.policies().iter().flat_map(|x| x.stages().iter()))
            .flat_map(|s| s.to.iter().map(String::as_str))
            .collect();
        named.sort_unstable();
        named.dedup();
        for a in named {
            if !self.sla().audiences.contains_key(a) {
                warnings.push(format!(
                    "sla: reminder audience {a:?} has no entries in [sla.audiences]: its reminders are only recorded on the ticket"
                ));
            }
        }
        let directory = self.customers();
        for o in directory.organisations() {
            if let Some(plan) = &o.plan {
                if !p.plans().any(|x| x.eq_ignore_ascii_case(plan)) {
                    warnings.push(format!(
                        "sla: plan {plan:?} of {} has no policy; {}",
                        o.id,
                        match p.default_plan() {
                            Some(d) => format!("the default plan {d} applies"),
                            None => "its tickets have no SLA".into(),
                        }
                    ));
                }
            }
        }
        Ok(warnings)
    }

    /// What the timer task plans timers with at `now`: the SLA context
    /// and the desk's rendering of reminders, digests and status mails.
    pub fn hooks(&self, now: Timestamp) -> SlaHooks<'_> {
        // Loaded (from their files on first use) now, before a write
        // opens: rendering between a timer's read and write reads nothing.
        // A failure is reported where a mail cannot be rendered.
        let _ = self.templates();
        let policies = if self.sla().enabled {
            match self.policies() {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::error!(error = %e, "SLA policies cannot be loaded; clocks are not updated");
                    None
                }
            }
        } else {
            None
        };
        SlaHooks {
            intake: self,
            policies,
            plan_of: plans(self.customers()),
            now,
        }
    }

    /// Brings a ticket's SLA up to date in the caller's transaction (after
    /// a staff action).
    pub(super) async fn sync_sla(
        &self,
        conn: &mut sqlx::SqliteConnection,
        ticket: i64,
        now: Timestamp,
    ) -> Result<Option<Evaluated>, StoreError> {
        let hooks = self.hooks(now);
        match hooks.context() {
            Some(ctx) => super::timers::sync(conn, ticket, &ctx, now).await,
            None => Ok(None),
        }
    }

    /// A ticket's SLA as it stands at `now` (read only).
    pub async fn sla_of(
        &self,
        store: &Store,
        number: &str,
        now: Timestamp,
    ) -> Result<Option<Evaluated>, StoreError> {
        let hooks = self.hooks(now);
        let Some(ctx) = hooks.context() else {
            return Ok(None);
        };
        let mut conn = store.pool().acquire().await?;
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM tickets WHERE number = $1")
            .bind(number.trim())
            .fetch_optional(&mut *conn)
            .await?;
        match id {
            Some(id) => super::timers::evaluate_ticket(&mut conn, id, &ctx, now).await,
            None => Ok(None),
        }
    }

    /// Open tickets by SLA state and the breached or soon due ones (at
    /// most 100).
    pub async fn sla_status(
        &self,
        store: &Store,
        now: Timestamp,
    ) -> Result<store::sla::SlaStatus, StoreError> {
        let mut conn = store.pool().acquire().await?;
        store::sla::sla_status(&mut conn, now, 100).await
    }

    /// The configured digests and their next runs after `now`.
    pub fn digest_runs(&self, now: Timestamp) -> Vec<(String, Timestamp)> {
        let sla = self.sla();
        sla.digests
            .iter()
            .filter_map(|d| Some((d.name.clone(), d.schedule.next_after(now)?)))
            .collect()
    }

    /// Plans the digest timers for the configured jobs (at start and on
    /// SIGHUP).
    pub async fn plan_digests(&self, store: &Store, now: Timestamp) -> Result<(), StoreError> {
        let runs = if self.sla().enabled {
            self.digest_runs(now)
        } else {
            Vec::new()
        };
        let mut tx = store.begin().await?;
        store::sla::plan_digests(&mut tx, &runs, now).await?;
        tx.commit().await
    }

    /// Does `action` on ticket `number` as `author` (e.g. `cli:anna`,
    /// `discord:anna`): recorded on the ticket, a reply queued in the
    /// outbox, and the SLA clock brought up to date — one transaction.
    pub async fn act(
        &self,
        store: &Store,
        number: &str,
        action: &StaffAction,
        author: &str,
        now: Timestamp,
    ) -> Result<ActionOutcome, ActionError> {
        let at = store::ts(now);
        // Loaded before the write opens (see `hooks`); an error is the
        // reply's to report.
        let _ = self.templates();
        let mut tx = store.begin().await?;
        let t = actions::action_ticket(&mut tx, number).await?;
        let reply = match action {
            StaffAction::Reply {
                text,
                cc,
                staff_name,
                ..
            } => {
                if text.trim().is_empty() {
                    return Err(ActionError::Refused("the reply is empty".into()));
                }
                let language = store::ticket_language(&mut tx, t.id).await?;
                Some(
                    self.reply_mail(
                        &t,
                        text,
                        cc,
                        staff_name.as_deref(),
                        language.as_deref(),
                        now,
                    )
                    .map_err(ActionError::Refused)?,
                )
            }
            _ => None,
        };
        let plan = action_plan(&t, action, author, reply)?;
        let (changed, queued) = match &plan {
            Some(p) => {
                actions::write_action(&mut tx, p, &at).await?;
                (true, p.reply.is_some())
            }
            None => (false, false),
        };
        let sla = self.sync_sla(&mut tx, t.id, now).await?;
        tx.commit().await?;
        Ok(ActionOutcome {
            number: t.number,
            changed,
            queued,
            sla,
        })
    }

    /// The mail of a staff reply: the text with the desk's signature, to
    /// where the customer asked answers to go (else the requester), in
    /// reply to the newest inbound mail with the ticket's thread as
    /// References, tagged subject, copied to `cc`, sent in the name of
    /// `staff_name` (if given) for the desk. Not marked automatic.
    fn reply_mail(
        &self,
        t: &actions::ActionTicket,
        text: &str,
        cc: &[Mailbox],
        staff_name: Option<&str>,
        language: Option<&str>,
        now: Timestamp,
    ) -> Result<Outgoing, String> {
        let templates = self.templates()?;
        let directory = self.customers();
        let org = t.organisation.as_deref().and_then(|o| directory.get(o));
        let mid = self.new_message_id(Some(&t.number))?;
        let tag = self.tag.render(&t.number);
        let subject = self.tag.strip(&t.subject);
        let received_at = self.local_time(now);
        let to = t.customer();
        let staff_name = staff_name
            .map(crate::domain::header_safe)
            .filter(|n| !n.trim().is_empty());
        let sender_name = match &staff_name {
            Some(n) => format!("{} ({})", n.trim(), self.desk_name),
            None => self.desk_name.clone(),
        };
        let facts: Vec<(String, String)> = staff_name
            .iter()
            .map(|n| ("staff_name".to_string(), n.trim().to_string()))
            .collect();
        confirmation(
            &templates,
            &Confirmation {
                template: "reply",
                auto_submitted: "",
                number: Some(&t.number),
                tag: &tag,
                customer: &t.requester.address,
                facts: &facts,
                subject: &subject,
                body: text.trim_end(),
                severity: t.severity,
                received_at: &received_at,
                // The ticket's language, chosen when it opened; else the
                // directory's.
                language: self.language_in(
                    language.or_else(|| org.and_then(|o| o.language_of(&t.requester.address))),
                    &templates,
                    "reply",
                ),
                desk_name: &sender_name,
                from: &self.from,
                to: &to,
                in_reply_to: t.last_inbound.as_ref(),
                references: &t.references,
                message_id: &mid,
                date: SystemTime::from(now),
                attach: None,
                reply_to: None,
                cc,
            },
        )
        .map_err(|e| e.to_string())
    }

    /// The notice that the OAuth 2.0 grant of an account was refused for
    /// good, for the [`GRANT_AUDIENCE`] audience: a mail per address, a
    /// post per chat channel. Empty (and said in the log) when the desk
    /// has no such audience; `/healthz` and `ticketd_mailbox_auth_ok` tell
    /// in any case.
    pub fn grant_refused_notice(
        &self,
        r: &crate::oauth::Refusal<'_>,
        now: Timestamp,
    ) -> Vec<Notification> {
        let facts = [
            ("account".to_string(), r.account.to_string()),
            ("name".to_string(), r.name.to_string()),
            ("reason".to_string(), r.message.to_string()),
        ];
        let chat = serde_json::json!({
            "kind": crate::store::oauth::GRANT_REFUSED,
            "account": r.account,
            "name": r.name,
            "detail": r.message,
        });
        let out = self.notify(&[GRANT_AUDIENCE.to_string()], &chat, |to| {
            self.own_mail(
                &OwnMail {
                    template: "grant-refused",
                    number: None,
                    names_ticket: false,
                    to_staff: true,
                    tag: "",
                    subject: r.account,
                    severity: Severity::Question,
                    facts: &facts,
                    body: "",
                    language: None,
                },
                to,
                now,
            )
        });
        if out.is_empty() {
            tracing::warn!(
                account = r.account,
                "no {GRANT_AUDIENCE:?} audience in [sla.audiences]: nobody is told of the refused grant by mail or chat"
            );
        }
        out
    }

    /// Mails and chat posts for the audiences `names`, each mail built by
    /// `build` for one address.
    fn notify(
        &self,
        names: &[String],
        chat: &serde_json::Value,
        mut build: impl FnMut(&Mailbox) -> Result<Outgoing, String>,
    ) -> Vec<Notification> {
        let sla = self.sla();
        let mut mails: Vec<&str> = Vec::new();
        let mut channels: Vec<&str> = Vec::new();
        for entry in names.iter().filter_map(|n| sla.audiences.get(n)).flatten() {
            match entry {
                AudienceEntry::Mail(a) if !mails.contains(&a.as_str()) => mails.push(a),
                AudienceEntry::Chat(c) if !channels.contains(&c.as_str()) => channels.push(c),
                _ => {}
            }
        }
        let mut out = Vec::new();
        for a in mails {
            let to = Mailbox {
                address: a.to_string(),
                name: None,
            };
            match build(&to) {
                Ok(m) => out.push(Notification::Mail(m)),
                Err(e) => tracing::error!(to = %a, error = %e, "no SLA mail"),
            }
        }
        for c in channels {
            out.push(Notification::Chat {
                channel: c.to_string(),
                body: chat.clone(),
            });
        }
        out
    }

    /// A mail of the desk's own, answering no message (a status notice,
    /// a reminder, a digest), marked automatic.
    pub(super) fn own_mail(
        &self,
        m: &OwnMail<'_>,
        to: &Mailbox,
        now: Timestamp,
    ) -> Result<Outgoing, String> {
        let templates = self.templates()?;
        let mid = if m.to_staff {
            self.new_staff_id(m.number)?
        } else {
            self.new_message_id(m.number.filter(|_| m.names_ticket))?
        };
        let received_at = self.local_time(now);
        confirmation(
            &templates,
            &Confirmation {
                template: m.template,
                auto_submitted: "auto-generated",
                number: m.number,
                tag: m.tag,
                customer: "",
                facts: m.facts,
                subject: m.subject,
                body: m.body,
                severity: m.severity,
                received_at: &received_at,
                language: m.language.unwrap_or(&self.language),
                desk_name: &self.desk_name,
                from: &self.from,
                to,
                in_reply_to: None,
                references: &[],
                message_id: &mid,
                date: SystemTime::from(now),
                attach: None,
                reply_to: None,
                cc: &[],
            },
        )
        .map_err(|e| e.to_string())
    }

    /// A target's name in the desk's language.
    fn target_label(&self, k: crate::sla::policy::TargetKind) -> String {
        use crate::sla::policy::TargetKind;
        match (self.language.as_str(), k) {
            ("de", TargetKind::FirstResponse) => "Reaktionszeit".into(),
            ("de", TargetKind::Resolution) => "Lösungszeit".into(),
            ("de", TargetKind::Update) => "Zwischenmeldung".into(),
            _ => k.label().into(),
        }
    }

    /// An instant for staff, in the desk's zone: `2026-12-01 14:00 CET`.
    pub fn staff_time(&self, t: Timestamp) -> String {
        t.to_zoned(self.tz.clone())
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string()
    }
}

/// A ticket's SLA for people (`tickets show`, `sla explain`, JSON).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlaView {
    /// The policy (plan and severity as written), `None`: no SLA.
    pub policy: Option<String>,
    /// How the policy was chosen.
    pub why: String,
    /// The customer's plan, if any.
    pub plan: Option<String>,
    /// The ticket's overall SLA state.
    pub state: String,
    /// Each target.
    pub targets: Vec<TargetView>,
    /// Reminder stages planned and sent.
    pub reminders: Vec<store::sla::ReminderRow>,
}

/// One target of a ticket's SLA.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetView {
    /// `first-response`, `resolution`, `update`.
    pub target: String,
    /// The counted time allowed, e.g. `4h`.
    pub amount: String,
    /// The calendar's name and description.
    pub calendar: String,
    /// running, paused, met, breached, stopped.
    pub state: String,
    /// Due instant (UTC), and in the desk's time zone.
    pub due: Option<String>,
    /// Due, in the desk's time zone.
    pub due_local: Option<String>,
    /// When it was met or stopped (desk time zone).
    pub ended_local: Option<String>,
    /// Counted time used so far.
    pub used: String,
    /// Counted time left.
    pub remaining: String,
    /// The update cycle (the staff reply it counts from), 0 otherwise.
    pub cycle: u32,
    /// How the due time was computed.
    pub explain: Vec<String>,
}

impl Intake {
    /// A ticket's SLA as people read it, at `now`; `None` when SLA clocks
    /// are off or there is no such ticket.
    pub async fn sla_view(
        &self,
        store: &Store,
        number: &str,
        now: Timestamp,
    ) -> Result<Option<SlaView>, StoreError> {
        let Some(e) = self.sla_of(store, number, now).await? else {
            return Ok(None);
        };
        let policies = self.policies().ok();
        let mut conn = store.pool().acquire().await?;
        // What fired (the rows are the record), then what is to come (from
        // the clock: only the next one has a row yet).
        let mut reminders: Vec<store::sla::ReminderRow> =
            store::sla::reminder_rows(&mut conn, e.ticket.id)
                .await?
                .into_iter()
                .filter(|r| r.fired_at.is_some())
                .collect();
        if let Some(p) = &policies {
            reminders.extend(e.upcoming(p).into_iter().map(|u| store::sla::ReminderRow {
                key: u.key,
                planned_at: Some(store::ts(u.planned)),
                due_at: store::ts(u.due),
                fired_at: None,
                outcome: None,
                audiences: u.audiences,
                local: None,
            }));
        }
        for r in &mut reminders {
            r.local = r
                .fired_at
                .as_deref()
                .unwrap_or(&r.due_at)
                .parse::<Timestamp>()
                .ok()
                .map(|t| self.staff_time(t));
        }
        let fmt = crate::sla::policy::format_duration;
        // People read minutes.
        let mins =
            |d: jiff::SignedDuration| fmt(jiff::SignedDuration::from_secs(d.as_secs() / 60 * 60));
        let targets = e
            .clock
            .iter()
            .flat_map(|c| c.targets.iter())
            .map(|t| TargetView {
                target: t.kind.as_str().to_string(),
                amount: fmt(t.amount),
                calendar: match policies.as_ref().and_then(|p| p.calendar(&t.calendar)) {
                    Some(c) => format!("{} ({})", t.calendar, c.describe()),
                    None => t.calendar.clone(),
                },
                state: t.state.as_str().to_string(),
                due: t.due.map(store::ts),
                due_local: t.due.map(|d| self.staff_time(d)),
                ended_local: t.ended.map(|d| self.staff_time(d)),
                used: mins(t.used),
                remaining: mins(t.remaining),
                cycle: t.cycle,
                explain: t.explain.clone(),
            })
            .collect();
        Ok(Some(SlaView {
            policy: e.policy.as_ref().map(|p| p.0.clone()),
            why: e
                .policy
                .as_ref()
                .map(|p| p.1.clone())
                .unwrap_or_else(|| match &e.plan {
                    Some(p) => format!("plan {p} has no policy and there is no default plan"),
                    None => "no plan and no default plan: no SLA".into(),
                }),
            plan: e.plan.clone(),
            state: e.state.to_string(),
            targets,
            reminders,
        }))
    }
}

impl SlaHooks<'_> {
    /// What a reminder stage sends to its audiences: a mail per address, a
    /// post per chat channel.
    pub(super) fn reminder_notices(&self, r: &Reminder) -> Vec<Notification> {
        let i = self.intake;
        let directory = i.customers();
        let customer = r
            .organisation
            .as_deref()
            .map(|o| {
                directory
                    .get(o)
                    .map(|x| x.name.clone())
                    .unwrap_or(o.to_string())
            })
            .unwrap_or_default();
        let target = r
            .kind
            .map(|k| i.target_label(k))
            .unwrap_or_else(|| r.target.clone());
        let due = r.due.map(|d| i.staff_time(d)).unwrap_or_default();
        let late = r
            .late
            .map(|l| {
                let (planned, sent, by) = (
                    i.staff_time(r.planned),
                    i.staff_time(self.now),
                    crate::sla::policy::format_duration(l),
                );
                if i.language == "de" {
                    format!(
                        "geplant für {planned}, gesendet {sent} ({by} zu spät: ticketd lief nicht)"
                    )
                } else {
                    format!(
                        "planned for {planned}, sent {sent} ({by} late: ticketd was not running)"
                    )
                }
            })
            .unwrap_or_default();
        let facts = [
            ("percent".to_string(), r.percent.to_string()),
            ("target".to_string(), target.clone()),
            ("amount".to_string(), r.amount.clone()),
            ("due".to_string(), due.clone()),
            ("late".to_string(), late.clone()),
            ("policy".to_string(), r.policy.clone()),
            ("customer".to_string(), customer.clone()),
            ("requester".to_string(), r.requester.clone()),
        ];
        let chat = serde_json::json!({
            "kind": if r.percent == 100 { "breach" } else { "reminder" },
            "ticket": r.number.as_str(),
            "subject": r.subject,
            "severity": r.severity.level(),
            "customer": customer,
            "requester": r.requester,
            "target": r.target,
            "target_label": target,
            "percent": r.percent,
            "due": r.due.map(store::ts),
            "due_local": due,
            "late": (!late.is_empty()).then_some(late),
        });
        let now = self.now;
        i.notify(&r.audiences, &chat, |to| {
            i.own_mail(
                &OwnMail {
                    template: "reminder",
                    number: Some(&r.number),
                    // Staff mail has a staff id, not a ticket id: an answer
                    // to a reminder is a note on the ticket, never threaded
                    // onto the customer's conversation (and relayed).
                    names_ticket: false,
                    to_staff: true,
                    tag: "",
                    subject: &r.subject,
                    severity: r.severity,
                    facts: &facts,
                    body: "",
                    language: None,
                },
                to,
                now,
            )
        })
    }

    /// What a digest run sends to its job's audiences.
    pub(super) fn digest_notices(&self, d: &Digest) -> Vec<Notification> {
        let i = self.intake;
        let sla = i.sla();
        let Some(job) = sla.digests.iter().find(|j| j.name == d.name) else {
            return Vec::new();
        };
        let mut listing = String::new();
        for t in &d.status.tickets {
            let due = t
                .due
                .as_deref()
                .and_then(|x| x.parse::<Timestamp>().ok())
                .map(|x| i.staff_time(x))
                .unwrap_or_default();
            listing.push_str(&format!(
                "  {:<10} sev {}  {:<8}  {} {}  {} – {}\n",
                t.number,
                t.severity,
                t.state,
                t.target.as_deref().unwrap_or(""),
                due,
                t.organisation.as_deref().unwrap_or("-"),
                crate::domain::header_safe(&t.subject)
            ));
        }
        if d.status.tickets.is_empty() {
            listing.push_str("  (none breached or due within 24 h)\n");
        }
        let late = d
            .late
            .map(crate::sla::policy::format_duration)
            .unwrap_or_default();
        let facts = [
            ("open".to_string(), d.status.open.to_string()),
            ("running".to_string(), d.status.running.to_string()),
            ("paused".to_string(), d.status.paused.to_string()),
            ("breached".to_string(), d.status.breached.to_string()),
            ("other".to_string(), d.status.other.to_string()),
            ("late".to_string(), late),
        ];
        let chat = serde_json::json!({
            "kind": "digest",
            "name": d.name,
            "open": d.status.open,
            "running": d.status.running,
            "paused": d.status.paused,
            "breached": d.status.breached,
            "tickets": d.status.tickets,
        });
        let now = self.now;
        i.notify(&job.to, &chat, |to| {
            i.own_mail(
                &OwnMail {
                    template: "digest",
                    number: None,
                    names_ticket: false,
                    to_staff: true,
                    tag: "",
                    subject: &d.name,
                    severity: Severity::Question,
                    facts: &facts,
                    body: &listing,
                    language: None,
                },
                to,
                now,
            )
        })
    }

    /// The next run of the digest `name` after `after`; `None` when the
    /// job is no longer configured (or SLA clocks are off).
    pub(super) fn next_digest(&self, name: &str, after: Timestamp) -> Option<Timestamp> {
        let sla = self.intake.sla();
        if !sla.enabled {
            return None;
        }
        sla.digests
            .iter()
            .find(|d| d.name == name)
            .and_then(|d| d.schedule.next_after(after))
    }
}

/// What `action` by `author` changes on ticket `t`, with the rendered
/// `reply` mail of a reply: the columns, the audit texts, the reply and
/// note to record. `None`: nothing changes (the ticket already has that
/// status, severity or assignee); an error: the action is refused.
pub fn action_plan(
    t: &actions::ActionTicket,
    action: &StaffAction,
    author: &str,
    reply: Option<Outgoing>,
) -> Result<Option<ActionPlan>, ActionError> {
    let mut plan = ActionPlan {
        ticket_id: t.id,
        ..ActionPlan::default()
    };
    let change = |to: Status| format!("{} → {} by {author}", t.status.as_str(), to.as_str());
    match action {
        StaffAction::Reply { then_pending, .. } => {
            let Some(mail) = reply else {
                return Err(ActionError::Refused("the reply has no mail".into()));
            };
            plan.events.push((
                "staff-reply",
                format!("by {author}, to {}", mail.to.join(", ")),
            ));
            let to = if *then_pending {
                Status::Pending
            } else if matches!(t.status, Status::New) {
                Status::Open
            } else {
                t.status
            };
            if to != t.status {
                plan.events.push((status_event(t.status, to), change(to)));
            }
            plan.status = Some(to);
            plan.reply = Some(PlannedReply {
                mail,
                author: author.to_string(),
            });
        }
        StaffAction::Status(to) => {
            if *to == t.status {
                return Ok(None);
            }
            if *to == Status::New {
                return Err(ActionError::Refused(
                    "a ticket cannot be set back to new; use open".into(),
                ));
            }
            plan.status = Some(*to);
            plan.events.push((status_event(t.status, *to), change(*to)));
        }
        StaffAction::Severity(to) => {
            if *to == t.severity {
                return Ok(None);
            }
            plan.severity = Some((*to, format!("set by {author}")));
            plan.events
                .push(("severity", severity_detail(t.severity, *to, author)));
        }
        StaffAction::Note(text) => {
            if text.trim().is_empty() {
                return Err(ActionError::Refused("the note is empty".into()));
            }
            plan.note = Some((text.clone(), author.to_string()));
            plan.events.push(("note", format!("by {author}")));
        }
        StaffAction::Assign { key, name } => {
            if t.assignee.as_deref() == Some(key.as_str()) {
                return Ok(None);
            }
            plan.assignee = Some((key.clone(), name.clone()));
            plan.events
                .push(("assigned", format!("to {name} by {author}")));
        }
    }
    Ok(Some(plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MessageId;

    fn ticket(status: Status) -> actions::ActionTicket {
        actions::ActionTicket {
            id: 7,
            number: TicketNumber("10007".into()),
            subject: "Drucker".into(),
            status,
            severity: Severity::Malfunction,
            requester: Mailbox {
                address: "anna@kunde.de".into(),
                name: None,
            },
            reply_to: None,
            organisation: None,
            last_inbound: None,
            references: Vec::new(),
            assignee: Some("cli:ben".into()),
        }
    }

    fn mail() -> Outgoing {
        Outgoing {
            to: vec!["anna@kunde.de".into()],
            sender: "support@example.com".into(),
            subject: "Re: Drucker".into(),
            message_id: MessageId("td.1@example.com".into()),
            raw: Vec::new(),
            body: "Hallo".into(),
        }
    }

    #[test]
    fn a_reply_then_pending_records_the_reply_and_the_wait() {
        let reply = StaffAction::Reply {
            text: "Hallo".into(),
            then_pending: true,
            cc: Vec::new(),
            staff_name: None,
        };
        let p = action_plan(&ticket(Status::Open), &reply, "cli:anna", Some(mail()))
            .unwrap()
            .unwrap();
        assert_eq!(p.status, Some(Status::Pending));
        assert_eq!(
            p.events,
            vec![
                ("staff-reply", "by cli:anna, to anna@kunde.de".to_string()),
                ("waiting", "open → pending by cli:anna".to_string()),
            ]
        );
        assert_eq!(p.reply.unwrap().author, "cli:anna");
    }

    #[test]
    fn what_the_ticket_already_has_changes_nothing_and_new_is_refused() {
        let t = ticket(Status::Open);
        let none = |a: StaffAction| action_plan(&t, &a, "cli:anna", None).unwrap();
        assert!(none(StaffAction::Status(Status::Open)).is_none());
        assert!(none(StaffAction::Severity(Severity::Malfunction)).is_none());
        assert!(none(StaffAction::Assign {
            key: "cli:ben".into(),
            name: "Ben".into()
        })
        .is_none());
        assert!(matches!(
            action_plan(&t, &StaffAction::Status(Status::New), "cli:anna", None),
            Err(ActionError::Refused(_))
        ));
        assert!(matches!(
            action_plan(&t, &StaffAction::Note("  ".into()), "cli:anna", None),
            Err(ActionError::Refused(_))
        ));
        let sev = none(StaffAction::Severity(Severity::Critical)).unwrap();
        assert_eq!(
            sev.severity,
            Some((Severity::Critical, "set by cli:anna".into()))
        );
        assert_eq!(
            sev.events,
            vec![("severity", "from 3 to 1 by cli:anna".to_string())]
        );
    }
}
