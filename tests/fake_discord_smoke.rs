//! Proves that serenity 0.12, used through its plain APIs, works against
//! the fake Discord in `support/fake_discord.rs`: REST (messages, embeds,
//! threads, DMs, commands, failures) and the gateway (READY, messages,
//! interactions, resume after a dropped connection).

#[path = "support/fake_discord.rs"]
mod fake_discord;

use std::time::Duration;

use fake_discord::{FakeConfig, FakeDiscord, InteractionSpec, MessageSpec, ResponseKind};
use serenity::all::{
    Channel, ChannelId, ChannelType, ClientBuilder, CommandDataOptionValue, CommandInteraction,
    CommandOptionType, Context, CreateCommand, CreateCommandOption, CreateEmbed,
    CreateInteractionResponse, CreateInteractionResponseMessage, CreateMessage, CreateThread,
    EventHandler, GatewayIntents, GuildId, Interaction, Message, RoleId, UserId,
};
use serenity::http::{Http, HttpBuilder};
use serenity::model::id::ApplicationId;
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);
const CHANNEL: u64 = 200_000_000_000_000_001;
const ALICE: u64 = 300_000_000_000_000_001;
const STAFF_ROLE: u64 = 400_000_000_000_000_001;

fn http_for(fake: &FakeDiscord) -> Http {
    HttpBuilder::new("Bot fake-token")
        .proxy(fake.base_url())
        .ratelimiter_disabled(true)
        .application_id(ApplicationId::new(fake.config().application_id))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_messages_threads_dms_and_commands() {
    let fake = FakeDiscord::start(FakeConfig::default()).await;
    let cfg = fake.config();
    let http = http_for(&fake);

    let me = http.get_current_user().await.expect("GET /users/@me");
    assert_eq!(me.id.get(), cfg.bot_user_id);
    assert!(me.bot);

    // A message with an embed.
    let channel = ChannelId::new(CHANNEL);
    let sent = channel
        .send_message(
            &http,
            CreateMessage::new().content("New ticket").embed(
                CreateEmbed::new()
                    .title("#42 Printer on fire")
                    .description("It is really on fire")
                    .field("Requester", "alice@example.test", true),
            ),
        )
        .await
        .expect("send_message");
    assert_eq!(sent.content, "New ticket");
    assert_eq!(sent.author.id.get(), cfg.bot_user_id);
    assert_eq!(sent.embeds[0].title.as_deref(), Some("#42 Printer on fire"));
    let posts = fake.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].channel_id, CHANNEL);
    assert_eq!(posts[0].message_id, sent.id.get());
    assert_eq!(posts[0].body["content"], "New ticket");
    assert_eq!(posts[0].body["embeds"][0]["title"], "#42 Printer on fire");
    assert_eq!(
        posts[0].body["embeds"][0]["fields"][0]["value"],
        "alice@example.test"
    );

    // A thread from that message has the message's id.
    let thread = channel
        .create_thread_from_message(&http, sent.id, CreateThread::new("Ticket #42"))
        .await
        .expect("create_thread_from_message");
    assert_eq!(thread.id.get(), sent.id.get());
    assert_eq!(thread.kind, ChannelType::PublicThread);
    assert_eq!(thread.parent_id, Some(channel));
    assert_eq!(thread.name, "Ticket #42");
    let threads = fake.threads();
    assert_eq!(threads.len(), 1);
    assert_eq!(threads[0].parent_id, CHANNEL);
    assert_eq!(threads[0].message_id, Some(sent.id.get()));
    assert_eq!(threads[0].thread_id, sent.id.get());
    assert_eq!(threads[0].name, "Ticket #42");
    // Discord refuses a second thread on the same message.
    assert!(channel
        .create_thread_from_message(&http, sent.id, CreateThread::new("again"))
        .await
        .is_err());

    // GET /channels/{id} knows the thread and the plain channel.
    match http.get_channel(thread.id).await.expect("get thread") {
        Channel::Guild(c) => {
            assert_eq!(c.kind, ChannelType::PublicThread);
            assert_eq!(c.parent_id, Some(channel));
        }
        other => panic!("thread is no guild channel: {other:?}"),
    }
    match http.get_channel(channel).await.expect("get channel") {
        Channel::Guild(c) => {
            assert_eq!(c.kind, ChannelType::Text);
            assert_eq!(c.guild_id.get(), cfg.guild_id);
        }
        other => panic!("channel is no guild channel: {other:?}"),
    }

    // Posting into the thread.
    thread
        .id
        .send_message(&http, CreateMessage::new().content("We are on it"))
        .await
        .expect("post in thread");
    assert_eq!(fake.posts()[1].channel_id, thread.id.get());

    // A DM channel, and a message to it.
    let dm = UserId::new(ALICE)
        .create_dm_channel(&http)
        .await
        .expect("create_dm_channel");
    assert_eq!(dm.recipient.id.get(), ALICE);
    dm.id
        .send_message(&http, CreateMessage::new().content("Your ticket #42"))
        .await
        .expect("post to DM");
    assert_eq!(fake.dm_channels(), vec![(ALICE, dm.id.get())]);
    let last = fake.posts().pop().expect("a post");
    assert_eq!(last.channel_id, dm.id.get());
    assert_eq!(last.body["content"], "Your ticket #42");
    // The same user gets the same channel again.
    let again = UserId::new(ALICE).create_dm_channel(&http).await.unwrap();
    assert_eq!(again.id, dm.id);

    // Guild commands (bulk overwrite).
    let registered = GuildId::new(cfg.guild_id)
        .set_commands(
            &http,
            vec![CreateCommand::new("ticket")
                .description("Open a ticket")
                .add_option(
                    CreateCommandOption::new(CommandOptionType::String, "subject", "What about")
                        .required(true),
                )],
        )
        .await
        .expect("set_commands");
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].name, "ticket");
    assert_eq!(registered[0].options[0].name, "subject");
    let commands = fake.commands();
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0]["name"], "ticket");
    assert_eq!(commands[0]["guild_id"], cfg.guild_id.to_string());

    // What the fake cannot answer is a 404 it remembers.
    assert!(http
        .get_guild_roles(GuildId::new(cfg.guild_id))
        .await
        .is_err());
    assert_eq!(
        fake.unknown_routes(),
        vec![format!("GET /api/v10/guilds/{}/roles", cfg.guild_id)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_posts() {
    let fake = FakeDiscord::start(FakeConfig::default()).await;
    let http = http_for(&fake);
    let channel = ChannelId::new(CHANNEL);
    let send = |text: &'static str| channel.send_message(&http, CreateMessage::new().content(text));

    fake.fail_next_posts(1, 500);
    let err = send("first").await.expect_err("the failed post");
    assert_eq!(status_of(&err), Some(500), "{err:?}");
    send("second").await.expect("the post after the failure");

    fake.fail_next_posts(1, 429);
    let err = send("third").await.expect_err("the rate-limited post");
    assert_eq!(status_of(&err), Some(429), "{err:?}");
    if let serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(r)) = &err {
        assert_eq!(r.error.message, "You are being rate limited.");
    }
    send("fourth").await.expect("the post after the 429");

    let contents: Vec<_> = fake
        .posts()
        .iter()
        .map(|p| p.body["content"].clone())
        .collect();
    assert_eq!(contents, vec!["second", "fourth"]);
    let statuses: Vec<_> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 200, 429, 200]);
}

fn status_of(err: &serenity::Error) -> Option<u16> {
    match err {
        serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(r)) => {
            Some(r.status_code.as_u16())
        }
        _ => None,
    }
}

enum Seen {
    Message(Box<Message>),
    Command(Box<CommandInteraction>, Result<(), String>),
}

struct Handler {
    tx: mpsc::UnboundedSender<Seen>,
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn message(&self, _ctx: Context, msg: Message) {
        let _ = self.tx.send(Seen::Message(Box::new(msg)));
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        if let Interaction::Command(command) = interaction {
            let answered = command
                .create_response(
                    &ctx.http,
                    CreateInteractionResponse::Message(
                        CreateInteractionResponseMessage::new()
                            .content("Ticket opened")
                            .ephemeral(true),
                    ),
                )
                .await
                .map_err(|e| e.to_string());
            let _ = self.tx.send(Seen::Command(Box::new(command), answered));
        }
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    timeout(WAIT, rx.recv())
        .await
        .expect("no event from the client within 10 s")
        .expect("the handler is gone")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_events_interactions_and_resume() {
    let fake = FakeDiscord::start(FakeConfig::default()).await;
    let cfg = fake.config();
    let http = HttpBuilder::new("Bot fake-token")
        .proxy(fake.base_url())
        .ratelimiter_disabled(true)
        .build();
    let intents = GatewayIntents::GUILDS
        | GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::MESSAGE_CONTENT
        | GatewayIntents::DIRECT_MESSAGES;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut client = timeout(
        WAIT,
        ClientBuilder::new_with_http(http, intents).event_handler(Handler { tx }),
    )
    .await
    .expect("building the client took over 10 s")
    .expect("building the client");
    let shard_manager = client.shard_manager.clone();
    let running = tokio::spawn(async move { client.start().await });

    fake.wait_ready(WAIT).await;
    assert_eq!(fake.identifies(), 1);

    // A guild message, with author and member roles.
    let id = fake
        .message_create(
            MessageSpec::new(CHANNEL, ALICE, "alice", "my printer is on fire").roles([STAFF_ROLE]),
        )
        .await;
    let Seen::Message(msg) = next(&mut rx).await else {
        panic!("expected a message first");
    };
    assert_eq!(msg.id.get(), id);
    assert_eq!(msg.content, "my printer is on fire");
    assert_eq!(msg.channel_id.get(), CHANNEL);
    assert_eq!(msg.guild_id.map(|g| g.get()), Some(cfg.guild_id));
    assert_eq!(msg.author.id.get(), ALICE);
    assert_eq!(msg.author.name, "alice");
    assert!(!msg.author.bot);
    let member = msg.member.as_ref().expect("member");
    assert_eq!(member.roles, vec![RoleId::new(STAFF_ROLE)]);

    // A slash command with an option, answered ephemerally by the handler.
    let interaction_id = fake
        .interaction_create(
            InteractionSpec::new(CHANNEL, ALICE, "alice", "ticket")
                .roles([STAFF_ROLE])
                .option("subject", "printer"),
        )
        .await;
    let Seen::Command(command, answered) = next(&mut rx).await else {
        panic!("expected the interaction");
    };
    answered.expect("the interaction response");
    assert_eq!(command.id.get(), interaction_id);
    assert_eq!(command.data.name, "ticket");
    assert_eq!(command.data.options.len(), 1);
    assert_eq!(command.data.options[0].name, "subject");
    assert_eq!(
        command.data.options[0].value,
        CommandDataOptionValue::String("printer".into())
    );
    assert_eq!(command.user.id.get(), ALICE);
    let member = command.member.as_ref().expect("member");
    assert_eq!(member.roles, vec![RoleId::new(STAFF_ROLE)]);
    let responses = fake.wait_interaction_responses(1, WAIT).await;
    assert_eq!(responses[0].interaction_id, interaction_id);
    assert_eq!(responses[0].kind, ResponseKind::Callback);
    assert_eq!(responses[0].body["type"], 4);
    assert_eq!(responses[0].body["data"]["content"], "Ticket opened");
    assert_eq!(responses[0].body["data"]["flags"], 64);

    // Cut the connection: the client resumes instead of identifying again,
    // and what is dispatched afterwards arrives.
    fake.drop_connection().await;
    fake.wait_ready(WAIT).await;
    assert_eq!(fake.resumes(), 1);
    assert_eq!(fake.identifies(), 1);
    let after = fake
        .message_create(MessageSpec::new(CHANNEL, ALICE, "alice", "still there?"))
        .await;
    let Seen::Message(msg) = next(&mut rx).await else {
        panic!("expected the message after the resume");
    };
    assert_eq!(msg.id.get(), after);
    assert_eq!(msg.content, "still there?");

    // An event sent while the client is away is replayed on resume.
    fake.drop_connection().await;
    let missed = fake
        .message_create(MessageSpec::new(CHANNEL, ALICE, "alice", "sent while away"))
        .await;
    fake.wait_ready(WAIT).await;
    assert_eq!(fake.resumes(), 2);
    let Seen::Message(msg) = next(&mut rx).await else {
        panic!("expected the replayed message");
    };
    assert_eq!(msg.id.get(), missed);
    assert_eq!(fake.identifies(), 1);
    assert!(
        fake.unknown_routes().is_empty(),
        "{:?}",
        fake.unknown_routes()
    );

    // Heartbeats are acknowledged: the client keeps its session.
    timeout(WAIT, async {
        while fake.heartbeats() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("no heartbeat within 10 s");
    assert_eq!((fake.identifies(), fake.resumes()), (1, 2));

    shard_manager.shutdown_all().await;
    let _ = timeout(WAIT, running).await;
}
