//! The desk in chat: what ticketd does with what arrives from Discord
//! (commands, intake messages) and how the chat outbox is delivered. It
//! speaks to Discord only through [`ChatApi`], so the serenity adapter
//! ([`super::discord`]) stays a thin translation.
//!
//! Delivery of a chat outbox row:
//! - a post about a ticket goes into the ticket's staff thread when that
//!   thread is in the post's channel;
//! - the first post about a ticket is posted at the top of its channel
//!   (with the channel's role mention for a new ticket) and the ticket's
//!   thread is started from it; the posted message's id is kept before
//!   the thread is started, so a retry does not post twice;
//! - a post for another channel (an on-call reminder) goes to the top of
//!   that channel, linking the thread;
//! - a `customer` post (a mail to a Discord member) goes into the
//!   customer's thread in the intake channel, started on first use.
//!
//! A failed post is retried with backoff until `retry_hours`; later rows
//! of the same ticket wait behind it, so a thread reads in order.

use super::command::{self, Command, CommandError, ListFilter};
use super::notify::{self, Post};
use crate::config::DiscordConfig;
use crate::domain::TicketNumber;
use crate::outbound::Wake;
use crate::service::{Incoming, Intake, StaffAction};
use crate::sources::discord as intake_src;
use crate::store::chat::{ChatPost, ChatThread, ChatTicket, FeedEvent, NewChatPost};
use crate::store::{ts, Store, StoreError};
use jiff::Timestamp;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;

/// Why a call to Discord failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// Worth retrying: Discord down, a rate limit, a network error.
    #[error("temporary: {0}")]
    Temporary(String),
    /// Never going to work: missing permissions, unknown channel.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// An interaction to answer (its id and token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InteractionRef {
    /// The interaction's id.
    pub id: u64,
    /// Its token.
    pub token: String,
}

/// What ticketd asks of Discord.
pub trait ChatApi: Send + Sync + 'static {
    /// Posts in a channel or thread; returns the message's id. `reply_to`:
    /// the message this answers.
    fn post(
        &self,
        channel: u64,
        post: &Post,
        reply_to: Option<u64>,
    ) -> impl Future<Output = Result<u64, ChatError>> + Send;
    /// Starts a thread from message `message` in `channel`; returns the
    /// thread's id.
    fn start_thread(
        &self,
        channel: u64,
        message: u64,
        name: &str,
    ) -> impl Future<Output = Result<u64, ChatError>> + Send;
    /// Sends `text` to `user` in a direct message.
    fn direct(&self, user: u64, text: &str) -> impl Future<Output = Result<(), ChatError>> + Send;
    /// Answers an interaction; `private`: only its user sees the answer.
    fn respond(
        &self,
        to: &InteractionRef,
        post: &Post,
        private: bool,
    ) -> impl Future<Output = Result<(), ChatError>> + Send;
}

/// Who wrote a message or gave a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// User id.
    pub id: u64,
    /// Their username: what actions are recorded as (`discord:NAME`).
    pub name: String,
    /// The name they show (the customer's name on an intake mail).
    pub display: String,
    /// Their roles in the guild.
    pub roles: Vec<u64>,
    /// A bot (ticketd itself among them).
    pub bot: bool,
}

/// A message from the gateway.
#[derive(Debug, Clone)]
pub struct InMessage {
    /// Message id.
    pub id: u64,
    /// The channel or thread.
    pub channel: u64,
    /// The guild (none in direct messages).
    pub guild: Option<u64>,
    /// The author.
    pub author: Member,
    /// The text.
    pub content: String,
    /// Attachments: file name and address.
    pub attachments: Vec<(String, String)>,
    /// Members it mentions: id and name.
    pub mentions: Vec<(u64, String)>,
    /// When Discord received it.
    pub sent: Timestamp,
}

/// A slash command from the gateway.
#[derive(Debug, Clone)]
pub struct InCommand {
    /// What to answer.
    pub interaction: InteractionRef,
    /// Where it was given.
    pub channel: u64,
    /// The guild.
    pub guild: Option<u64>,
    /// Who gave it.
    pub member: Member,
    /// The command (`ticket`) or, for `/ticket SUB`, the subcommand.
    pub name: String,
    /// Its options as text.
    pub options: Vec<(String, String)>,
    /// Members the options mention: id and name.
    pub mentions: Vec<(u64, String)>,
}

/// The short, private answer a member without a staff role gets.
pub const REFUSAL: &str =
    "Only the support team can work on tickets here. To ask for help, write in the support channel or mail us.";

/// The chat desk: configuration, the intake, the store and Discord.
pub struct Desk<A: ChatApi> {
    cfg: DiscordConfig,
    number_prefix: String,
    desk_address: String,
    intake: Arc<Intake>,
    store: Store,
    api: A,
    wake: Arc<Wake>,
    retry_for: jiff::SignedDuration,
    retry_base: std::time::Duration,
}

/// How a command went: what to say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    post: Post,
    /// Only the one asking should see it (an ephemeral answer to a slash
    /// command; a typed command is answered in place).
    private: bool,
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
    /// A desk over `store`, answering through `api`; `wake` is
    /// notified when a command or an intake message queued mail.
    pub fn new(
        cfg: &crate::config::Config,
        intake: Arc<Intake>,
        store: Store,
        api: A,
        wake: Arc<Wake>,
    ) -> Desk<A> {
        Desk {
            cfg: cfg.discord.clone(),
            number_prefix: cfg.tickets.number_prefix.clone(),
            desk_address: cfg.desk.from_address().to_string(),
            intake,
            store,
            api,
            wake,
            retry_for: jiff::SignedDuration::from_hours(
                i64::try_from(cfg.discord.retry_hours).unwrap_or(i64::MAX / 3600),
            ),
            retry_base: std::time::Duration::from_secs_f64(cfg.discord.retry_base_seconds),
        }
    }

    fn is_staff(&self, m: &Member) -> bool {
        !m.bot && m.roles.iter().any(|r| self.cfg.staff_roles.contains(r))
    }

    fn channel_id(&self, name: &str) -> Option<u64> {
        self.cfg.channels.get(name).map(|c| c.id)
    }

    fn intake_channel(&self) -> Option<u64> {
        self.cfg.intake.as_deref().and_then(|n| self.channel_id(n))
    }

    // ---- the chat feed: ticket events → chat outbox -------------------

    /// Queues chat posts for ticket events since the cursor; returns how
    /// many were queued.
    pub async fn feed(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut queued = 0;
        let mut from = self.store.chat_cursor().await?;
        loop {
            let (events, to) = self.store.chat_events(from, 500).await?;
            if to == from {
                return Ok(queued);
            }
            let posts: Vec<NewChatPost> =
                events.iter().filter_map(|e| self.event_post(e)).collect();
            if self.store.chat_enqueue(from, to, &posts, &ts(now)).await? {
                queued += posts.len();
                from = to;
            } else {
                // Moved by someone else meanwhile: go on from there.
                from = self.store.chat_cursor().await?;
            }
        }
    }

    fn event_post(&self, e: &FeedEvent) -> Option<NewChatPost> {
        let kind = notify::feed_kind(
            &e.kind,
            &e.detail,
            e.staff_in_message,
            e.message_kind.as_deref(),
            e.text.is_some(),
        )?;
        let t = &e.ticket;
        let level = u8::try_from(t.severity).unwrap_or(4);
        let channel = self.cfg.channel_for(level)?.to_string();
        let mut body = self.ticket_body(t);
        body["kind"] = json!(kind);
        body["detail"] = json!(e.detail);
        if let Some(text) = &e.text {
            body["text"] = json!(notify::clip(text.trim(), 1500));
        }
        Some(NewChatPost {
            ticket_id: Some(t.id),
            channel,
            kind: kind.to_string(),
            body,
        })
    }

    /// What every post about a ticket shows.
    fn ticket_body(&self, t: &ChatTicket) -> serde_json::Value {
        let directory = self.intake.customers();
        let customer = t.organisation.as_deref().map(|o| {
            directory
                .get(o)
                .map(|org| org.name.clone())
                .unwrap_or_else(|| o.to_string())
        });
        let due = match t.sla_state.as_deref() {
            Some("running") | Some("breached") => t.sla_due_at.clone(),
            _ => None,
        };
        json!({
            "ticket": t.number,
            "subject": t.subject,
            "severity": t.severity,
            "status": t.status,
            "customer": customer,
            "requester": t.requester,
            "requester_name": t.requester_name,
            "due": due,
            "target": t.sla_target,
            "sla_state": t.sla_state,
            "assignee": t.assignee_name,
        })
    }

    // ---- delivery -----------------------------------------------------

    /// Delivers the chat posts due now (at most one per ticket: the next
    /// waits for it); returns how many were handled.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let now = Timestamp::now();
        let due = self.store.chat_due(&ts(now), 50).await?;
        for p in &due {
            match self.deliver(p).await {
                Ok(()) => self.store.chat_sent(p.id, &ts(Timestamp::now())).await?,
                Err(e) => {
                    let next = match &e {
                        ChatError::Temporary(_) => crate::outbound::worker::retry_at(
                            &p.created_at,
                            p.attempts,
                            now,
                            self.retry_for,
                            self.retry_base,
                        ),
                        ChatError::Permanent(_) => None,
                    };
                    match next {
                        Some(n) => {
                            tracing::info!(chat = p.id, error = %e, next = %n, "chat post deferred")
                        }
                        None => tracing::warn!(chat = p.id, error = %e, "chat post failed"),
                    }
                    self.store
                        .chat_failed(p.id, &e.to_string(), next.map(ts).as_deref())
                        .await?;
                }
            }
        }
        Ok(due.len())
    }

    async fn deliver(&self, p: &ChatPost) -> Result<(), ChatError> {
        let channel = self.cfg.channels.get(&p.channel).ok_or_else(|| {
            ChatError::Permanent(format!("channel {:?} is not configured", p.channel))
        })?;
        let store_err = |e: StoreError| ChatError::Temporary(format!("database: {e}"));
        let Some(t) = &p.ticket else {
            self.api
                .post(channel.id, &notify::render(&p.body, channel.mention), None)
                .await?;
            return Ok(());
        };
        if p.kind == "customer" {
            let post = notify::render(&p.body, None);
            let Some(th) = self
                .store
                .chat_thread(t.id, "intake")
                .await
                .map_err(store_err)?
            else {
                // The thread is recorded right after the customer's message
                // is stored; a ticket that has none (a member who wrote
                // into someone else's thread got a ticket of their own)
                // is answered by direct message.
                let queued: Timestamp = p.created_at.parse().unwrap_or_else(|_| Timestamp::now());
                if Timestamp::now().duration_since(queued) < jiff::SignedDuration::from_secs(10) {
                    return Err(ChatError::Temporary(
                        "the customer's thread is not known yet".into(),
                    ));
                }
                let user = intake_src::user_of(&t.requester).ok_or_else(|| {
                    ChatError::Permanent(format!("{} is no Discord member", t.requester))
                })?;
                return self.api.direct(user, &post.content).await;
            };
            let thread = if th.created {
                th.thread_id
            } else {
                let made = self
                    .api
                    .start_thread(
                        th.channel_id,
                        th.thread_id,
                        &notify::thread_name(&t.number, &t.subject),
                    )
                    .await?;
                let started = ChatThread {
                    thread_id: made,
                    created: true,
                    ..th
                };
                self.store
                    .set_chat_thread(t.id, "intake", &started, Timestamp::now())
                    .await
                    .map_err(store_err)?;
                made
            };
            self.api.post(thread, &post, None).await?;
            return Ok(());
        }
        let mut post = notify::render(&p.body, channel.mention);
        let thread = self
            .store
            .chat_thread(t.id, "staff")
            .await
            .map_err(store_err)?;
        match thread {
            Some(th) if th.channel_id == channel.id => {
                self.api.post(th.thread_id, &post, None).await?;
            }
            Some(th) => {
                post.content = format!("{} <#{}>", post.content, th.thread_id)
                    .trim()
                    .to_string();
                self.api.post(channel.id, &post, None).await?;
            }
            None => {
                let posted = match p.posted_id {
                    Some(m) => m,
                    None => {
                        let m = self.api.post(channel.id, &post, None).await?;
                        self.store.chat_posted(p.id, m).await.map_err(store_err)?;
                        m
                    }
                };
                let made = self
                    .api
                    .start_thread(
                        channel.id,
                        posted,
                        &notify::thread_name(&t.number, &t.subject),
                    )
                    .await?;
                self.store
                    .set_chat_thread(
                        t.id,
                        "staff",
                        &ChatThread {
                            channel_id: channel.id,
                            thread_id: made,
                            created: true,
                        },
                        Timestamp::now(),
                    )
                    .await
                    .map_err(store_err)?;
            }
        }
        Ok(())
    }

    // ---- what arrives -------------------------------------------------

    /// Handles a message from the gateway: a typed command, or in the
    /// intake channel a customer's message. Each message once.
    pub async fn on_message(&self, m: &InMessage) -> Result<(), StoreError> {
        if m.author.bot || m.guild != Some(self.cfg.guild) {
            return Ok(());
        }
        let text = m.content.trim_start();
        let command = text
            .strip_prefix(self.cfg.prefix.as_str())
            .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace));
        let in_thread = self.store.thread_ticket(m.channel).await?;
        let in_intake = self.intake_channel() == Some(m.channel)
            || in_thread.as_ref().is_some_and(|(_, r)| r == "intake");
        if command.is_none() && !in_intake {
            return Ok(());
        }
        if !self
            .store
            .chat_seen(&format!("m{}", m.id), &ts(Timestamp::now()))
            .await?
        {
            tracing::debug!(message = m.id, "Discord message seen before");
            return Ok(());
        }
        if let Some(rest) = command {
            let thread = in_thread
                .as_ref()
                .map(|(t, _)| TicketNumber(t.number.clone()));
            if !self.is_staff(&m.author) {
                tracing::info!(user = m.author.id, "ticket command refused: no staff role");
                if let Err(e) = self.api.direct(m.author.id, REFUSAL).await {
                    tracing::warn!(error = %e, "refusal not delivered");
                }
                return Ok(());
            }
            let ctx = command::Context {
                thread_ticket: thread.as_ref(),
                number_prefix: &self.number_prefix,
            };
            let answer = match command::parse(rest, &ctx) {
                Ok(c) => self.run(c, &m.author, &m.mentions, m.id).await,
                Err(e) => usage_answer(&e),
            };
            if let Err(e) = self.api.post(m.channel, &answer.post, Some(m.id)).await {
                tracing::warn!(error = %e, "command answer not posted");
            }
            return Ok(());
        }
        self.intake_message(m, in_thread.map(|(t, _)| t)).await
    }

    /// A customer's (or a staff member's) message in the intake channel
    /// or a ticket's intake thread, taken in like mail.
    async fn intake_message(
        &self,
        m: &InMessage,
        thread: Option<ChatTicket>,
    ) -> Result<(), StoreError> {
        let staff = self.is_staff(&m.author);
        if thread.is_none() && staff {
            // Staff talking in the intake channel open no tickets.
            return Ok(());
        }
        // A thread's id is no secret in a public channel, as a Message-ID
        // is: a member who is not on the ticket writes a message of their
        // own (a ticket of their own), not a reply on someone else's.
        let thread = match thread {
            Some(t)
                if !staff
                    && !self
                        .store
                        .is_participant(t.id, &intake_src::address(m.author.id, false))
                        .await? =>
            {
                tracing::info!(message = m.id, ticket = %t.number, "Discord member not on the ticket: taken as a message of their own");
                None
            }
            other => other,
        };
        let to = match (&thread, staff) {
            (Some(t), true) => t.requester.clone(),
            _ => self.desk_address.clone(),
        };
        let attachments: Vec<(&str, &str)> = m
            .attachments
            .iter()
            .map(|(n, u)| (n.as_str(), u.as_str()))
            .collect();
        let raw = intake_src::to_mail(&intake_src::ChatMessage {
            id: m.id,
            channel: m.channel,
            thread: thread.as_ref().map(|_| m.channel),
            author: m.author.id,
            author_name: &m.author.display,
            staff,
            content: &m.content,
            attachments,
            sent: m.sent,
            to: &to,
            subject: thread.as_ref().map(|t| t.subject.as_str()),
        });
        let raw = match raw {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(message = m.id, error = %e, "Discord message not taken in");
                return Ok(());
            }
        };
        let now = Timestamp::now();
        // The message arrived when Discord says it was sent.
        let outcome = self
            .ingest_one(raw, format!("discord:{}", m.channel), Some(m.sent), now)
            .await?;
        tracing::info!(message = m.id, action = outcome.action.as_str(), ticket = ?outcome.ticket, "Discord message taken in");
        self.wake.notify_one();
        if let (None, Some(n), Some(ch)) = (&thread, &outcome.ticket, self.intake_channel()) {
            // The thread to start from this message, unless the ticket
            // already has one (the message was appended to it).
            self.store
                .first_intake_thread(n.as_str(), ch, m.id, now)
                .await?;
        }
        Ok(())
    }

    /// Takes one message in through the intake, as every source does;
    /// `arrived` is when it was sent, if known.
    async fn ingest_one(
        &self,
        raw: Vec<u8>,
        source: String,
        arrived: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<crate::service::Outcome, StoreError> {
        let items = [Incoming {
            raw,
            source,
            arrived,
        }];
        self.intake
            .ingest_batch(&self.store, &items, now)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(StoreError::Corrupt("the intake returned nothing".into())))
    }

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
    async fn run(
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
fn usage_answer(e: &CommandError) -> Answer {
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
