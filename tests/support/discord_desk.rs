//! A ticket desk wired to a fake Discord for the Discord tests and the
//! chat benchmark: the real intake on SQLite, the outbox worker writing
//! mail to files, and `ticketd::chat::discord::run` connected to
//! [`crate::fake_discord`]. Include it after the fake:
//! `#[path = "support/fake_discord.rs"] mod fake_discord;` and
//! `#[path = "support/discord_desk.rs"] mod discord_desk;`.
#![allow(dead_code)]

use crate::fake_discord::{
    FakeConfig, FakeDiscord, InteractionSpec, MessageSpec, Posted, ThreadMade,
};
use std::sync::Arc;
use std::time::Duration;
use ticketd::config::Config;
use ticketd::keys::MacKey;
use ticketd::outbound::worker::{Sender, Worker};
use ticketd::outbound::Wake;
use ticketd::service::{Incoming, Intake};
use ticketd::store::Store;
use tokio::sync::watch;

pub const GUILD: u64 = 4000;
pub const STAFF_ROLE: u64 = 500;
pub const ONCALL_ROLE: u64 = 900;
pub const STAFF: u64 = 100;
pub const ONCALL: u64 = 101;
pub const COMMUNITY: u64 = 102;
pub const ANNA: u64 = 7001; // staff
pub const MAX: u64 = 7002; // a community member, no staff role
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Desk {
    pub dir: tempfile::TempDir,
    pub fake: FakeDiscord,
    pub store: Store,
    pub intake: Arc<Intake>,
    pub stop: watch::Sender<bool>,
    pub wake: Arc<Wake>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Desk {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub async fn desk() -> Desk {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "ticketd=info".into()),
        )
        .with_test_writer()
        .try_init();
    let fake = FakeDiscord::start(FakeConfig {
        bot_user_id: 1,
        application_id: 2,
        guild_id: GUILD,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("discord.token"), "test-token\n").unwrap();
    let text = format!(
        r#"
[desk]
addresses = ["support@desk.example"]

[sla.audiences]
team = ["chat:staff"]
lead = ["chat:oncall"]

[discord]
enabled = true
token_file = "discord.token"
guild = {GUILD}
staff_roles = [{STAFF_ROLE}]
notify = "staff"
intake = "community"
api_base = "{base}"
retry_base_seconds = 0.2

[discord.severity]
"1" = "oncall"

[discord.channels.staff]
id = {STAFF}

[discord.channels.oncall]
id = {ONCALL}
mention = {ONCALL_ROLE}

[discord.channels.community]
id = {COMMUNITY}
"#,
        base = fake.base_url()
    );
    let path = dir.path().join("ticketd.toml");
    std::fs::write(&path, &text).unwrap();
    let cfg = Config::load(&path).unwrap();
    let store = Store::open_sqlite(&dir.path().join("t.db"), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let intake = Arc::new(Intake::new(&cfg, MacKey(vec![7; 32])));
    intake.verify().unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let wake = Arc::new(Wake::new());
    let sender = Sender::from_config(&cfg, &dir.path().join("sent")).unwrap();
    let worker = Worker::new(store.clone(), sender, &cfg, wake.clone());
    let mut tasks = vec![tokio::spawn(worker.run(stop_rx.clone()))];
    tasks.push(tokio::spawn(ticketd::chat::discord::run(
        cfg,
        intake.clone(),
        store.clone(),
        wake.clone(),
        stop_rx,
    )));
    fake.wait_ready(WAIT).await;
    Desk {
        dir,
        fake,
        store,
        intake,
        stop,
        wake,
        tasks,
    }
}

pub fn mail(from: &str, subject: &str, id: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: support@desk.example\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Wed, 02 Dec 2026 09:00:00 +0100\r\n{extra}\r\n{body}\r\n"
    )
    .into_bytes()
}

impl Desk {
    pub async fn ingest(&self, raw: Vec<u8>) -> String {
        self.ingest_many(&[Incoming {
            raw,
            source: "test".into(),
            arrived: None,
        }])
        .await
        .into_iter()
        .next()
        .unwrap()
    }

    /// Stores messages as a source of `run` does: then wakes the workers.
    /// Returns each one's ticket.
    pub async fn ingest_many(&self, items: &[Incoming]) -> Vec<String> {
        let r = self
            .intake
            .ingest_batch(&self.store, items, jiff::Timestamp::now())
            .await;
        self.wake.notify_one();
        r.into_iter()
            .map(|o| o.unwrap().ticket.unwrap().as_str().to_string())
            .collect()
    }

    pub async fn ticket(&self, number: &str) -> ticketd::store::chat::ChatTicket {
        self.store.chat_ticket(number).await.unwrap().unwrap()
    }

    pub async fn events(&self, number: &str) -> Vec<(String, String)> {
        let t = self.ticket(number).await;
        sqlx::query_as(
            "SELECT kind, COALESCE(detail, '') FROM events WHERE ticket_id = $1 ORDER BY id",
        )
        .bind(t.id)
        .fetch_all(self.store.pool())
        .await
        .unwrap()
    }

    /// Waits until the desk has recorded `thread` as a ticket's thread
    /// (the fake knows it a moment before).
    pub async fn known_thread(&self, thread: u64) {
        until("the thread known to the desk", async || {
            self.store.thread_ticket(thread).await.unwrap()
        })
        .await;
    }

    /// A customer's first mail on an empty desk: its ticket's number and
    /// the thread its notification started.
    pub async fn first_ticket(&self, subject: &str, message_id: &str) -> (String, ThreadMade) {
        let n = self
            .ingest(mail(
                "erika@kunde.example",
                subject,
                message_id,
                "",
                "Bitte helfen.",
            ))
            .await;
        self.posts_after(0, 1).await;
        let thread = until("the thread", async || {
            self.fake.threads().into_iter().next()
        })
        .await;
        self.known_thread(thread.thread_id).await;
        (n, thread)
    }

    /// Posts after the first `skip`, until there are `n` of them.
    pub async fn posts_after(&self, skip: usize, n: usize) -> Vec<Posted> {
        let all = self.fake.wait_posts(skip + n, WAIT).await;
        all[skip..].to_vec()
    }

    pub fn sent_mails(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.dir.path().join("sent")) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    }
}

pub fn title(p: &Posted) -> String {
    p.body["embeds"][0]["title"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

pub fn content(p: &Posted) -> String {
    p.body["content"].as_str().unwrap_or("").to_string()
}

pub async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > WAIT {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/ticket SUB options…` as Discord sends it: a subcommand option
/// holding the string options.
pub async fn slash(
    d: &Desk,
    (user, name, roles): (u64, &str, Vec<u64>),
    channel: u64,
    sub: &str,
    options: &[(&str, &str)],
) -> u64 {
    let mut v = d.fake.interaction_json(&InteractionSpec {
        channel_id: channel,
        user_id: user,
        user_name: name.into(),
        roles,
        command: "ticket".into(),
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    });
    let inner = v["data"]["options"].take();
    v["data"]["options"] = serde_json::json!([{"name": sub, "type": 1, "options": inner}]);
    let id = v["id"].as_str().unwrap().parse().unwrap();
    d.fake.dispatch("INTERACTION_CREATE", v).await;
    id
}

pub fn staff_says(channel: u64, content: &str) -> MessageSpec {
    MessageSpec {
        channel_id: channel,
        author_id: ANNA,
        author_name: "anna".into(),
        roles: vec![STAFF_ROLE],
        content: content.into(),
    }
}

pub fn member_says(channel: u64, content: &str) -> MessageSpec {
    MessageSpec {
        channel_id: channel,
        author_id: MAX,
        author_name: "max".into(),
        roles: vec![],
        content: content.into(),
    }
}
