//! Staff commands, typed in chat or given as slash commands: run through
//! the intake as staff actions, answered in place or privately.

use super::{ChatApi, Desk, InCommand, Member, REFUSAL};
use crate::chat::command::{self, Command, CommandError, ListFilter};
use crate::chat::notify::{self, Post};
use crate::domain::TicketNumber;
use crate::service::StaffAction;
use crate::sources::discord as intake_src;
use crate::store::{ts, StoreError};
use jiff::Timestamp;
use serde_json::json;

/// How a command went: what to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Answer {
    pub(super) post: Post,
    /// Only the one asking should see it (an ephemeral answer to a slash
    /// command; a typed command is answered in place).
    pub(super) private: bool,
}

fn say(text: impl Into<String>) -> Answer {
    Answer {
        post: Post {
            content: notify::clip(&text.into(), 2000),
            ..Post::default()
        },
        private: false,
    }
}

fn quietly(text: impl Into<String>) -> Answer {
    Answer {
        private: true,
        ..say(text)
    }
}

/// `discord:NAME` as recorded on a ticket.
fn author(m: &Member) -> String {
    let name: String = crate::domain::header_safe(&m.name)
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    format!("discord:{name}")
}

/// The assignee key of a Discord member.
fn member_key(id: u64) -> String {
    format!("discord:{id}")
}

/// A mention `<@123>` / `<@!123>`, or a bare id.
fn mentioned(who: &str) -> Option<u64> {
    let w = who.trim();
    let inner = w
        .strip_prefix("<@")
        .and_then(|r| r.strip_suffix('>'))
        .map(|r| r.trim_start_matches('!'))
        .unwrap_or(w);
    inner.parse().ok()
}

impl<A: ChatApi> Desk<A> {
    /// Handles a slash command.
    pub async fn on_command(&self, c: &InCommand) -> Result<(), StoreError> {
        if c.guild != Some(self.cfg.guild) {
            return Ok(());
        }
        if !self
            .store
            .chat_seen(&format!("i{}", c.interaction.id), &ts(Timestamp::now()))
            .await?
        {
            return Ok(());
        }
        let answer = if !self.is_staff(&c.member) {
            tracing::info!(user = c.member.id, "slash command refused: no staff role");
            quietly(REFUSAL)
        } else {
            let thread = self
                .store
                .thread_ticket(c.channel)
                .await?
                .map(|(t, _)| TicketNumber(t.number));
            let ctx = command::Context {
                thread_ticket: thread.as_ref(),
                number_prefix: &self.number_prefix,
            };
            let options: Vec<(&str, &str)> = c
                .options
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match command::from_slash(&c.name, &options, &ctx) {
                Ok(cmd) => {
                    self.run(cmd, &c.member, &c.mentions, c.interaction.id)
                        .await
                }
                Err(e) => usage_answer(&e),
            }
        };
        if let Err(e) = self
            .api
            .respond(&c.interaction, &answer.post, answer.private)
            .await
        {
            tracing::warn!(error = %e, "interaction not answered");
        }
        Ok(())
    }

    /// Runs a staff member's command; `origin` is the message or
    /// interaction id (the Message-ID of a ticket opened from chat).
    pub(super) async fn run(
        &self,
        c: Command,
        by: &Member,
        mentions: &[(u64, String)],
        origin: u64,
    ) -> Answer {
        let now = Timestamp::now();
        let who = author(by);
        let act = |number: TicketNumber, action: StaffAction| {
            let who = who.clone();
            async move {
                self.intake
                    .act(&self.store, number.as_str(), &action, &who, now)
                    .await
            }
        };
        let done =
            |r: Result<crate::service::ActionOutcome, crate::store::actions::ActionError>,
             what: String| match r {
                Ok(o) => {
                    if o.queued {
                        self.wake.notify_one();
                    }
                    let sla = match o.sla.as_ref().and_then(|e| e.next_due.as_ref()) {
                        Some((due, target)) => format!(" · {target} due <t:{}:R>", due.as_second()),
                        None => String::new(),
                    };
                    if o.changed {
                        say(format!("Ticket **{}**: {what}{sla}", o.number))
                    } else {
                        quietly(format!("Ticket **{}**: nothing to change", o.number))
                    }
                }
                Err(e) => quietly(format!("Not done: {e}")),
            };
        match c {
            Command::Help => quietly(help(&self.cfg.prefix)),
            Command::Show(n) => self.show(&n).await,
            Command::List(f) => self.list(f, by, now).await,
            Command::Claim(n) => done(
                act(
                    n,
                    StaffAction::Assign {
                        key: member_key(by.id),
                        name: by.name.clone(),
                    },
                )
                .await,
                format!("claimed by {}", by.name),
            ),
            Command::Assign(n, whom) => {
                let (key, name) = match mentioned(&whom) {
                    Some(id) => (
                        member_key(id),
                        mentions
                            .iter()
                            .find(|(m, _)| *m == id)
                            .map(|(_, n)| n.clone())
                            .unwrap_or_else(|| format!("<@{id}>")),
                    ),
                    None => (format!("name:{}", whom.trim()), whom.trim().to_string()),
                };
                let what = format!("assigned to {name}");
                done(act(n, StaffAction::Assign { key, name }).await, what)
            }
            Command::Severity(n, s) => done(
                act(n, StaffAction::Severity(s)).await,
                format!("severity {} ({})", s.level(), s.label_en()),
            ),
            Command::Status(n, s) => done(
                act(n, StaffAction::Status(s)).await,
                format!("status {}", s.as_str()),
            ),
            Command::Note(n, text) => {
                done(act(n, StaffAction::Note(text)).await, "note added".into())
            }
            Command::Reply(n, text) => done(
                act(
                    n,
                    StaffAction::Reply {
                        text,
                        then_pending: false,
                        cc: Vec::new(),
                        staff_name: None,
                    },
                )
                .await,
                "reply queued to the requester".into(),
            ),
            Command::New(t) => self.open(t, by, origin, now).await,
        }
    }

    async fn show(&self, n: &TicketNumber) -> Answer {
        match self.store.chat_ticket(n.as_str()).await {
            Ok(Some(t)) => {
                let mut body = self.ticket_body(&t);
                body["kind"] = json!("show");
                let mut post = notify::render(&body, None);
                if let Ok(Some(th)) = self.store.chat_thread(t.id, "staff").await {
                    post.content = format!("<#{}>", th.thread_id);
                }
                Answer {
                    post,
                    private: false,
                }
            }
            Ok(None) => quietly(format!("There is no ticket {n}.")),
            Err(e) => quietly(format!("Not done: {e}")),
        }
    }

    async fn list(&self, f: ListFilter, by: &Member, now: Timestamp) -> Answer {
        match self.list_lines(f, by, now).await {
            Ok((title, lines)) => {
                let mut text = format!("**{title}**\n");
                if lines.is_empty() {
                    text.push_str("none");
                }
                for l in lines.iter().take(LISTED) {
                    text.push_str(l);
                }
                if lines.len() > LISTED {
                    text.push_str("… and more (`ticketd sla status` lists all)");
                }
                say(text)
            }
            Err(e) => quietly(format!("Not done: {e}")),
        }
    }

    /// The title and lines of a list, one more than [`LISTED`] when there
    /// are more.
    async fn list_lines(
        &self,
        f: ListFilter,
        by: &Member,
        now: Timestamp,
    ) -> Result<(&'static str, Vec<String>), StoreError> {
        let limit = LISTED as i64 + 1;
        let (title, assignee) = match f {
            ListFilter::Open => ("Open tickets", None),
            ListFilter::Mine => ("Your open tickets", Some(member_key(by.id))),
            // What the digest and `sla status` list.
            ListFilter::Breaching => {
                let mut conn = self.store.pool().acquire().await?;
                let list = crate::store::sla::urgent_tickets(&mut conn, now, limit).await?;
                let lines = list.iter().map(|t| {
                    list_line(
                        &t.number,
                        t.severity,
                        &t.subject,
                        None,
                        Some(&t.state),
                        t.due.as_deref(),
                        None,
                    )
                });
                return Ok(("Breached or due within 24 h", lines.collect()));
            }
        };
        let list = self.store.chat_list(assignee.as_deref(), limit).await?;
        let lines = list.iter().map(|t| {
            list_line(
                &t.number,
                t.severity,
                &t.subject,
                Some(&t.status),
                t.sla_state.as_deref(),
                t.sla_due_at.as_deref(),
                t.assignee_name.as_deref(),
            )
        });
        Ok((title, lines.collect()))
    }

    /// Opens a ticket for a customer from chat (after a phone call): a
    /// mail in the customer's name, stored and taken in like any other,
    /// so they get the confirmation with the ticket number; then the
    /// severity staff gave, and a note of who opened it.
    async fn open(
        &self,
        t: command::NewTicket,
        by: &Member,
        origin: u64,
        now: Timestamp,
    ) -> Answer {
        let customer = if t.customer.contains('@') {
            t.customer.clone()
        } else {
            let directory = self.intake.customers();
            match directory.get(&t.customer) {
                Some(org) => match org
                    .main_contact_list()
                    .first()
                    .map(|s| s.to_string())
                    .or_else(|| org.contacts.first().cloned())
                {
                    Some(a) => a,
                    None => {
                        return quietly(format!(
                            "Customer {} has no contact address to open a ticket for.",
                            org.name
                        ))
                    }
                },
                None => {
                    return quietly(format!(
                        "There is no customer {:?}: give a mail address or a directory id.",
                        t.customer
                    ))
                }
            }
        };
        let who = author(by);
        let text = if t.text.trim().is_empty() {
            format!("(opened in Discord by {})", by.name)
        } else {
            t.text.clone()
        };
        let from = match customer.parse() {
            Ok(a) => a,
            Err(e) => return quietly(format!("{customer:?} is no mail address: {e}")),
        };
        let to = match self.desk_address.parse() {
            Ok(a) => a,
            Err(e) => return quietly(format!("desk address: {e}")),
        };
        let raw = intake_src::plain_mail(
            &intake_src::PlainMail {
                from,
                to,
                subject: &t.subject,
                id: origin,
                answers: None,
                sent: now,
                headers: &[("X-Ticketd-Opened-By", who.clone())],
            },
            text,
        );
        let outcome = match raw {
            Ok(raw) => self
                .ingest_one(raw, format!("discord:new:{}", by.id), Some(now), now)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let number = match outcome {
            Ok(o) => match o.ticket {
                Some(n) => n,
                None => return quietly(format!("Not opened: {}", o.reason)),
            },
            Err(e) => return quietly(format!("Not opened: {e}")),
        };
        // The severity first, then the wake-up: the chat feed then mostly
        // announces the ticket with the severity staff gave (and routes it
        // by that).
        let _ = self
            .intake
            .act(
                &self.store,
                number.as_str(),
                &StaffAction::Severity(t.severity),
                &who,
                now,
            )
            .await;
        let _ = self
            .intake
            .act(
                &self.store,
                number.as_str(),
                &StaffAction::Note(format!("Opened in Discord by {} for {customer}.", by.name)),
                &who,
                now,
            )
            .await;
        self.wake.notify_one();
        say(format!(
            "Ticket **{number}** opened for {customer}, severity {}. The customer gets the confirmation by mail.",
            t.severity.level()
        ))
    }
}

/// How many tickets a chat list shows.
const LISTED: usize = 25;

/// One ticket of a chat list.
fn list_line(
    number: &str,
    severity: i64,
    subject: &str,
    status: Option<&str>,
    sla_state: Option<&str>,
    due: Option<&str>,
    assignee: Option<&str>,
) -> String {
    let due = match (sla_state, due) {
        (Some("breached"), _) => " · **breached**".to_string(),
        (Some("running"), Some(d)) => d
            .parse::<Timestamp>()
            .map(|d| format!(" · due <t:{}:R>", d.as_second()))
            .unwrap_or_default(),
        _ => String::new(),
    };
    let status = status.map(|s| format!(" {s}")).unwrap_or_default();
    let who = assignee.map(|a| format!(" · {a}")).unwrap_or_default();
    format!(
        "`{number}` sev {severity}{status} – {}{due}{who}\n",
        notify::clip(subject, 60)
    )
}

/// The usage answer for a command that did not parse.
pub(super) fn usage_answer(e: &CommandError) -> Answer {
    quietly(e.to_string())
}

/// The list of commands.
fn help(prefix: &str) -> String {
    let mut s =
        String::from("**Ticket commands** (in a ticket's thread the number may be left out):\n");
    for n in command::NAMES {
        s.push_str(&format!("`{prefix} {}`\n", command::usage(n)));
    }
    s.push_str("or the slash command `/ticket`.");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_and_ids_name_members() {
        assert_eq!(mentioned("<@123>"), Some(123));
        assert_eq!(mentioned("<@!123>"), Some(123));
        assert_eq!(mentioned("123"), Some(123));
        assert_eq!(mentioned("anna"), None);
        assert_eq!(mentioned("<@&5>"), None);
    }

    #[test]
    fn authors_are_one_word() {
        let m = Member {
            id: 1,
            name: "Anna Berg\r\nX".into(),
            display: "Anna".into(),
            roles: vec![],
            bot: false,
        };
        let a = author(&m);
        assert!(a.starts_with("discord:Anna_Berg"));
        assert!(!a.contains(char::is_whitespace));
    }

    #[test]
    fn list_lines_say_state_due_and_assignee() {
        let l = list_line(
            "10001",
            2,
            "VPN",
            Some("open"),
            Some("breached"),
            None,
            Some("anna"),
        );
        assert_eq!(l, "`10001` sev 2 open – VPN · **breached** · anna\n");
        let l = list_line(
            "10002",
            3,
            "Drucker",
            None,
            Some("running"),
            Some("2026-12-02T10:00:00Z"),
            None,
        );
        assert_eq!(l, "`10002` sev 3 – Drucker · due <t:1796205600:R>\n");
    }

    #[test]
    fn help_lists_every_command() {
        let h = help("!t");
        for n in command::NAMES {
            assert!(h.contains(command::usage(n)));
        }
    }
}
