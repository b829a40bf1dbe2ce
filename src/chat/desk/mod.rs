//! The desk in chat: what ticketd does with what arrives from Discord
//! (commands, intake messages) and how the chat outbox is delivered. It
//! speaks to Discord only through [`ChatApi`], so the serenity adapter
//! ([`super::discord`]) stays a thin translation.
//!
//! Files, one idea each:
//! - `mod.rs`: the public API: [`Desk`], [`ChatApi`] and what the gateway
//!   hands in ([`InMessage`], [`InCommand`], [`Member`]).
//! - `feed.rs`: ticket events → chat outbox rows ([`Desk::feed`]).
//! - `delivery.rs`: the chat outbox → Discord: posts, threads, retries
//!   ([`Desk::deliver_due`]).
//! - `intake.rs`: a message from the gateway ([`Desk::on_message`]): a
//!   typed command, or a customer's message taken in like mail.
//! - `commands.rs`: staff commands, typed or slash ([`Desk::on_command`]),
//!   and the answers to them.

mod commands;
mod delivery;
mod feed;
mod intake;

use super::notify::Post;
use crate::config::DiscordConfig;
use crate::outbound::Wake;
use crate::service::Intake;
use crate::store::Store;
use jiff::Timestamp;
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
}
