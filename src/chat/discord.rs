//! The serenity adapter: REST calls for [`ChatApi`], and a gateway event
//! handler that only translates messages and slash commands into
//! [`InMessage`]/[`InCommand`] and hands them to the [`Desk`] through a
//! channel. What to do with them is the desk's business.
//!
//! Pointing serenity elsewhere: with `[discord] api_base` set, the REST
//! client is built with `HttpBuilder::proxy(api_base)` and
//! `ratelimiter_disabled(true)` (serenity only rewrites the
//! `https://discord.com` prefix of each route when its rate limiter is
//! off), and the gateway address comes from that server's
//! `GET /api/v10/gateway`. The integration tests run a fake Discord that
//! way; production leaves `api_base` unset and keeps the rate limiter.

use super::desk::{ChatApi, ChatError, Desk, InCommand, InMessage, InteractionRef, Member};
use super::notify::Post;
use crate::config::Config;
use crate::outbound::Wake;
use crate::service::Intake;
use crate::store::Store;
use serenity::all::{
    ChannelId, CommandDataOption, CommandDataOptionValue, CommandOptionType, Context,
    CreateAllowedMentions, CreateCommand, CreateCommandOption, CreateEmbed, CreateEmbedFooter,
    CreateInteractionResponse, CreateInteractionResponseMessage, CreateMessage, CreateThread,
    EventHandler, GatewayIntents, GuildId, Interaction, Message, MessageId, Ready, RoleId, UserId,
};
use serenity::builder::Builder;
use serenity::http::{Http, HttpBuilder};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The intents the bot needs: guild channels and messages, the text of
/// messages (privileged: enable "Message Content Intent" for the bot) and
/// direct messages.
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILDS
        | GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::MESSAGE_CONTENT
        | GatewayIntents::DIRECT_MESSAGES
}

/// The REST client: Discord itself, or (`api_base`) a stand-in.
pub fn http(token: &str, api_base: Option<&str>) -> Http {
    let b = HttpBuilder::new(token);
    match api_base {
        Some(base) => b
            .proxy(base.trim_end_matches('/'))
            .ratelimiter_disabled(true)
            .build(),
        None => b.build(),
    }
}

/// [`ChatApi`] over serenity's REST client.
pub struct SerenityApi {
    http: Arc<Http>,
}

impl SerenityApi {
    /// Wraps a REST client.
    pub fn new(http: Arc<Http>) -> SerenityApi {
        SerenityApi { http }
    }
}

/// Discord's error code for "a thread has already been created for this
/// message".
const THREAD_EXISTS: isize = 160004;

/// The Discord error code of a failed request.
fn discord_code(e: &serenity::Error) -> Option<isize> {
    match e {
        serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(r)) => {
            Some(r.error.code)
        }
        _ => None,
    }
}

/// A serenity error as temporary (retry) or permanent. A bad token (401)
/// or a missing permission (403) is retried too: the admin can fix them
/// while the posts wait. A request Discord cannot take (400) or an unknown
/// channel (404) is not.
fn classify(e: serenity::Error) -> ChatError {
    let status = match &e {
        serenity::Error::Http(h) => h.status_code().map(|s| s.as_u16()),
        _ => None,
    };
    match status {
        Some(401 | 403 | 408 | 429 | 500..=599) | None => ChatError::Temporary(e.to_string()),
        Some(s) => ChatError::Permanent(format!("HTTP {s}: {e}")),
    }
}

fn embed(post: &Post) -> Option<CreateEmbed> {
    let e = post.embed.as_ref()?;
    let mut b = CreateEmbed::new().title(&e.title).colour(e.colour);
    if !e.description.is_empty() {
        b = b.description(&e.description);
    }
    for (n, v, inline) in &e.fields {
        if !v.is_empty() {
            b = b.field(n, v, *inline);
        }
    }
    if !e.footer.is_empty() {
        b = b.footer(CreateEmbedFooter::new(&e.footer));
    }
    Some(b)
}

/// Whom a post may ping: only the role it names, never @everyone.
fn mentions(post: &Post) -> CreateAllowedMentions {
    let m = CreateAllowedMentions::new()
        .everyone(false)
        .all_users(false);
    match post.mention_role {
        Some(r) => m.roles(vec![RoleId::new(r)]),
        None => m.all_roles(false),
    }
}

impl ChatApi for SerenityApi {
    async fn post(
        &self,
        channel: u64,
        post: &Post,
        reply_to: Option<u64>,
    ) -> Result<u64, ChatError> {
        let mut m = CreateMessage::new().allowed_mentions(mentions(post));
        if !post.content.is_empty() {
            m = m.content(&post.content);
        }
        if let Some(e) = embed(post) {
            m = m.embed(e);
        }
        if let Some(r) = reply_to {
            m = m.reference_message((ChannelId::new(channel), MessageId::new(r)));
        }
        let sent = ChannelId::new(channel)
            .send_message(&*self.http, m)
            .await
            .map_err(classify)?;
        Ok(sent.id.get())
    }

    async fn start_thread(&self, channel: u64, message: u64, name: &str) -> Result<u64, ChatError> {
        match ChannelId::new(channel)
            .create_thread_from_message(
                &*self.http,
                MessageId::new(message),
                CreateThread::new(name),
            )
            .await
        {
            Ok(t) => Ok(t.id.get()),
            // Started before (ticketd stopped before it recorded that): a
            // thread from a message has the message's id.
            Err(e) if discord_code(&e) == Some(THREAD_EXISTS) => Ok(message),
            Err(e) => Err(classify(e)),
        }
    }

    async fn direct(&self, user: u64, text: &str) -> Result<(), ChatError> {
        let dm = UserId::new(user)
            .create_dm_channel(&*self.http)
            .await
            .map_err(classify)?;
        dm.id
            .send_message(&*self.http, CreateMessage::new().content(text))
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn respond(
        &self,
        to: &InteractionRef,
        post: &Post,
        private: bool,
    ) -> Result<(), ChatError> {
        let mut m = CreateInteractionResponseMessage::new()
            .ephemeral(private)
            .allowed_mentions(mentions(post));
        if !post.content.is_empty() {
            m = m.content(&post.content);
        }
        if let Some(e) = embed(post) {
            m = m.embed(e);
        }
        CreateInteractionResponse::Message(m)
            .execute(&*self.http, (to.id.into(), &to.token))
            .await
            .map_err(classify)
    }
}

/// What the gateway handler passes on.
#[derive(Debug)]
pub enum Inbound {
    /// A message.
    Message(InMessage),
    /// A slash command.
    Command(InCommand),
}

/// The gateway event handler: filters and translates, nothing more.
struct Handler {
    tx: mpsc::UnboundedSender<Inbound>,
    guild: u64,
    slash: bool,
}

/// A user and their roles in the guild (none outside one).
fn member(u: &serenity::all::User, roles: Option<&[RoleId]>) -> Member {
    Member {
        id: u.id.get(),
        name: u.name.clone(),
        display: u.display_name().to_string(),
        roles: roles.unwrap_or_default().iter().map(|r| r.get()).collect(),
        bot: u.bot,
    }
}

/// A message as the desk reads it.
pub fn in_message(m: &Message) -> InMessage {
    InMessage {
        id: m.id.get(),
        channel: m.channel_id.get(),
        guild: m.guild_id.map(|g| g.get()),
        author: member(&m.author, m.member.as_ref().map(|p| p.roles.as_slice())),
        content: m.content.clone(),
        attachments: m
            .attachments
            .iter()
            .map(|a| (a.filename.clone(), a.url.clone()))
            .collect(),
        mentions: m
            .mentions
            .iter()
            .map(|u| (u.id.get(), u.name.clone()))
            .collect(),
        sent: jiff::Timestamp::from_second(m.timestamp.unix_timestamp())
            .unwrap_or_else(|_| jiff::Timestamp::now()),
    }
}

/// Flattens `/ticket SUB options…` into the subcommand's name and its
/// options as text (a user option as its mention).
fn flatten(name: &str, options: &[CommandDataOption]) -> (String, Vec<(String, String)>) {
    let text = |v: &CommandDataOptionValue| match v {
        CommandDataOptionValue::String(s) => Some(s.clone()),
        CommandDataOptionValue::Integer(i) => Some(i.to_string()),
        CommandDataOptionValue::Number(n) => Some(n.to_string()),
        CommandDataOptionValue::Boolean(b) => Some(b.to_string()),
        CommandDataOptionValue::User(u) => Some(format!("<@{}>", u.get())),
        _ => None,
    };
    let (name, options) = options
        .iter()
        .find_map(|o| match &o.value {
            CommandDataOptionValue::SubCommand(inner) => Some((o.name.as_str(), inner.as_slice())),
            _ => None,
        })
        .unwrap_or((name, options));
    let opts = options
        .iter()
        .filter_map(|o| Some((o.name.clone(), text(&o.value)?)))
        .collect();
    (name.to_string(), opts)
}

/// A slash command as the desk reads it.
pub fn in_command(c: &serenity::all::CommandInteraction) -> InCommand {
    let (name, options) = flatten(&c.data.name, &c.data.options);
    InCommand {
        interaction: InteractionRef {
            id: c.id.get(),
            token: c.token.clone(),
        },
        channel: c.channel_id.get(),
        guild: c.guild_id.map(|g| g.get()),
        member: member(&c.user, c.member.as_ref().map(|m| m.roles.as_slice())),
        name,
        options,
        mentions: c
            .data
            .resolved
            .users
            .iter()
            .map(|(id, u)| (id.get(), u.name.clone()))
            .collect(),
    }
}

/// The `/ticket` command with a subcommand per staff command.
pub fn ticket_command() -> CreateCommand {
    let s =
        |name: &str, what: &str| CreateCommandOption::new(CommandOptionType::String, name, what);
    let number = || s("number", "Ticket number (default: this thread's ticket)");
    let sub = |name: &str, what: &str| {
        CreateCommandOption::new(CommandOptionType::SubCommand, name, what)
    };
    CreateCommand::new("ticket")
        .description("Work on support tickets")
        .dm_permission(false)
        .add_option(sub("show", "Show a ticket").add_sub_option(number()))
        .add_option(
            sub("list", "List open tickets").add_sub_option(
                s("filter", "open, mine or breaching")
                    .add_string_choice("open", "open")
                    .add_string_choice("mine", "mine")
                    .add_string_choice("breaching", "breaching"),
            ),
        )
        .add_option(sub("claim", "Take a ticket").add_sub_option(number()))
        .add_option(
            sub("assign", "Give a ticket to someone")
                .add_sub_option(
                    CreateCommandOption::new(CommandOptionType::User, "member", "Who")
                        .required(true),
                )
                .add_sub_option(number()),
        )
        .add_option(
            sub("severity", "Set the severity")
                .add_sub_option(
                    s("severity", "1 (critical) to 4 (question)")
                        .required(true)
                        .add_string_choice("1", "1")
                        .add_string_choice("2", "2")
                        .add_string_choice("3", "3")
                        .add_string_choice("4", "4"),
                )
                .add_sub_option(number()),
        )
        .add_option(
            sub("status", "Set the status")
                .add_sub_option(
                    s("status", "The new status")
                        .required(true)
                        .add_string_choice("open", "open")
                        .add_string_choice("pending", "pending")
                        .add_string_choice("resolved", "resolved")
                        .add_string_choice("closed", "closed"),
                )
                .add_sub_option(number()),
        )
        .add_option(
            sub("note", "Add an internal note")
                .add_sub_option(s("text", "The note").required(true))
                .add_sub_option(number()),
        )
        .add_option(
            sub("reply", "Mail a reply to the requester")
                .add_sub_option(s("text", "What to say").required(true))
                .add_sub_option(number()),
        )
        .add_option(
            sub("new", "Open a ticket for a customer")
                .add_sub_option(s("customer", "Mail address or directory id").required(true))
                .add_sub_option(s("severity", "1 to 4").required(true))
                .add_sub_option(s("subject", "Subject").required(true))
                .add_sub_option(s("text", "What the customer said")),
        )
        .add_option(sub("help", "The ticket commands"))
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        tracing::info!(user = %ready.user.name, guilds = ready.guilds.len(), "Discord gateway ready");
        if self.slash && self.guild != 0 {
            if let Err(e) = GuildId::new(self.guild)
                .set_commands(&ctx.http, vec![ticket_command()])
                .await
            {
                tracing::warn!(error = %e, "the /ticket command could not be registered");
            }
        }
    }

    async fn resume(&self, _ctx: Context, _: serenity::model::event::ResumedEvent) {
        tracing::info!("Discord gateway resumed");
    }

    async fn message(&self, _ctx: Context, m: Message) {
        if m.author.bot {
            return;
        }
        let _ = self.tx.send(Inbound::Message(in_message(&m)));
    }

    async fn interaction_create(&self, _ctx: Context, i: Interaction) {
        if let Interaction::Command(c) = i {
            let _ = self.tx.send(Inbound::Command(in_command(&c)));
        }
    }
}

/// How often the chat feed and the chat outbox are looked at without a
/// wake-up (retries fall due; a mail piped in by another process).
const POLL: Duration = Duration::from_millis(500);

/// Runs the Discord side of `ticketd run` until `stop`: the gateway
/// (reconnecting and resuming as serenity does), the handling of what it
/// brings, and the delivery of the chat outbox.
pub async fn run(
    cfg: Config,
    intake: Arc<Intake>,
    store: Store,
    wake: Arc<Wake>,
    mut stop: watch::Receiver<bool>,
) {
    let token = match cfg.discord.token(|p| cfg.resolve(p)) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "Discord disabled: no token");
            return;
        }
    };
    // The feed starts here the first time Discord is on (see
    // `Store::chat_cursor`); everything after this is posted.
    if let Err(e) = store.chat_cursor().await {
        tracing::error!(error = %e, "Discord disabled: the chat feed cannot start");
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let desk = Arc::new(Desk::new(
        &cfg,
        intake,
        store,
        SerenityApi::new(Arc::new(http(&token, cfg.discord.api_base.as_deref()))),
        wake.clone(),
    ));
    let gateway = tokio::spawn(gateway(cfg.clone(), token, tx, stop.clone()));
    let d = desk.clone();
    let woken = wake.clone();
    let mut stop2 = stop.clone();
    let outbox = tokio::spawn(async move {
        loop {
            if let Err(e) = d.feed(jiff::Timestamp::now()).await {
                tracing::warn!(error = %e, "chat feed: database error");
            }
            match d.deliver_due().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "chat outbox: database error"),
            }
            tokio::select! {
                _ = woken.chat() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop2.changed() => return,
            }
        }
    });
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let r = match &ev {
                    Inbound::Message(m) => desk.on_message(m).await,
                    Inbound::Command(c) => desk.on_command(c).await,
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "Discord event not handled");
                }
            }
            _ = stop.changed() => break,
        }
    }
    outbox.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), gateway).await;
}

/// Keeps a gateway connection until `stop`. serenity reconnects and
/// resumes by itself while it runs; when it gives up (Discord unreachable
/// at start, a gateway error it does not retry) a new client is started
/// after a pause, doubling up to five minutes.
async fn gateway(
    cfg: Config,
    token: String,
    tx: mpsc::UnboundedSender<Inbound>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pause = Duration::from_secs(5);
    loop {
        let handler = Handler {
            tx: tx.clone(),
            guild: cfg.discord.guild,
            slash: cfg.discord.slash_commands,
        };
        let built = serenity::client::ClientBuilder::new_with_http(
            http(&token, cfg.discord.api_base.as_deref()),
            intents(),
        )
        .event_handler(handler)
        .await;
        match built {
            Ok(mut client) => {
                let shards = client.shard_manager.clone();
                let started = std::time::Instant::now();
                tokio::select! {
                    r = client.start() => match r {
                        Ok(()) => tracing::warn!("Discord gateway ended"),
                        Err(e) => tracing::error!(error = %e, "Discord gateway stopped"),
                    },
                    _ = stop.changed() => {
                        shards.shutdown_all().await;
                        return;
                    }
                }
                if started.elapsed() > Duration::from_secs(600) {
                    pause = Duration::from_secs(5);
                }
            }
            Err(e) => tracing::error!(error = %e, "Discord client could not be built"),
        }
        tracing::info!(
            seconds = pause.as_secs(),
            "Discord gateway: connecting again"
        );
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(300));
    }
}
