//! `ticketd run`: takes mail from the IMAP mailboxes (IDLE), the Microsoft
//! Graph mailboxes (delta query, polled), the Maildirs
//! and the hand-over socket, runs the outbox worker, rereads the
//! configuration file on SIGHUP, and stops cleanly on SIGTERM/SIGINT (the message in hand
//! is finished, nothing new is taken). Serves `/healthz` and `/metrics`
//! ([`crate::http`]) and tells systemd when it is ready, alive and stopping
//! ([`crate::systemd`]).

use crate::config::Config;
use crate::metrics::Metrics;
use crate::outbound::worker::{Sender, Worker};
use crate::outbound::Wake;
use crate::service::{DataDir, FireTimers as _, Incoming, Intake};
use crate::sources::maildir::Maildir;
use crate::store::Store;
use notify::Watcher;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

/// Runs the daemon until a stop signal; returns the process exit code.
pub async fn run(
    mut cfg: Config,
    data: DataDir,
    store: Store,
    intake: Arc<Intake>,
) -> anyhow::Result<()> {
    // Fail at start, not on the first mail, when rules or templates are broken.
    let n = intake
        .verify()
        .map_err(|e| anyhow::Error::new(crate::config::Unusable(e)))?;
    tracing::info!(rules = n, "rules loaded");
    let metrics = Arc::new(
        Metrics::with_max_sync_age(cfg.http.max_sync_age())
            .with_disconnect_grace(cfg.http.disconnected_grace()),
    );
    // Bound before anything starts: a taken port is a start-up error.
    let http = match cfg.http.listen_addr().map_err(|e| anyhow::anyhow!("{e}"))? {
        Some(addr) => Some(crate::http::bind(addr).await?),
        None => None,
    };

    // One daemon per data directory: a second would deliver the same outbox.
    let socket = data.root.join(crate::sources::socket::SOCKET_FILE);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        anyhow::bail!(
            "another ticketd run is serving {} (its socket {} answers)",
            data.root.display(),
            socket.display()
        );
    }
    let released = store
        .release_leases(&crate::store::ts(jiff::Timestamp::now()))
        .await?;
    if released > 0 {
        tracing::warn!(
            mails = released,
            "mails claimed by a stopped daemon are queued again (they may go out twice)"
        );
    }

    if cfg.discord.enabled {
        // Before any source runs: the first time Discord is on, the chat
        // feed starts at this point, and every ticket event after it is
        // posted.
        store.chat_cursor().await?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let wake = Arc::new(Wake::new());
    let unusable = |e: String| anyhow::Error::new(crate::config::Unusable(e));
    let smtp_tokens = crate::oauth::source_for(&cfg, "smtp", &store, Some(metrics.clone()))
        .map_err(|e| unusable(format!("outbound: {e}")))?
        .map(|t| {
            t.set_notice(refusal_notice(&intake), wake.clone());
            t as Arc<dyn crate::credential::TokenProvider>
        });
    // One client per Graph mailbox, shared by its source task and the
    // transport sending as it: both keep to one Retry-After and to
    // Outlook's four concurrent requests.
    let mut graph_clients = std::collections::BTreeMap::new();
    for g in &cfg.graph {
        let client =
            crate::sources::graph::GraphClient::new(&cfg, g, &store, Some(metrics.clone()))
                .map_err(&unusable)?;
        client
            .tokens()
            .set_notice(refusal_notice(&intake), wake.clone());
        graph_clients.insert(g.label().to_string(), (g.clone(), Arc::new(client)));
    }
    let sender = match (&cfg.outbound.transport, &cfg.outbound.graph.mailbox) {
        (crate::config::Transport::Graph, Some(name)) => {
            let (_, client) = graph_clients.get(name).ok_or_else(|| {
                unusable(format!(
                    "outbound.graph.mailbox {name:?}: no such [[graph]] mailbox"
                ))
            })?;
            Sender::Graph(crate::outbound::graph::GraphSender::new(client.clone()))
        }
        _ => Sender::from_config_with_tokens(&cfg, &data.sent(), smtp_tokens)
            .map_err(|e| unusable(format!("outbound: {e}")))?,
    };
    let worker = Worker::new(store.clone(), sender, &cfg, wake.clone());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(worker.run(stop_rx.clone()));

    let mut mailboxes = Mailboxes {
        running: std::collections::BTreeMap::new(),
        intake: intake.clone(),
        store: store.clone(),
        wake: wake.clone(),
        metrics: metrics.clone(),
        graph: std::collections::BTreeMap::new(),
        graph_clients,
    };
    for m in &cfg.imap {
        mailboxes
            .start(&cfg, m)
            .map_err(|e| anyhow::Error::new(crate::config::Unusable(e)))?;
    }
    for g in &cfg.graph {
        mailboxes
            .start_graph(&cfg, g)
            .map_err(|e| anyhow::Error::new(crate::config::Unusable(e)))?;
    }

    let mut dirs: Vec<std::path::PathBuf> =
        cfg.maildir.iter().map(|m| cfg.resolve(&m.path)).collect();
    // The default Maildir only when no source is configured at all.
    if dirs.is_empty() && cfg.imap.is_empty() && cfg.graph.is_empty() {
        dirs.push(data.maildir());
    }
    for d in dirs {
        let md = Maildir::open(&d).map_err(|e| {
            anyhow::Error::new(crate::config::Unusable(format!(
                "maildir {}: {e}",
                d.display()
            )))
        })?;
        tracing::info!(maildir = %d.display(), "watching");
        tasks.spawn(watch_maildir(
            intake.clone(),
            store.clone(),
            md,
            wake.clone(),
            cfg.intake.clone(),
            Some(metrics.clone()),
            stop_rx.clone(),
        ));
    }

    if cfg.discord.enabled {
        tracing::info!(guild = cfg.discord.guild, "Discord: connecting");
        tasks.spawn(crate::chat::discord::run(
            cfg.clone(),
            intake.clone(),
            store.clone(),
            wake.clone(),
            stop_rx.clone(),
        ));
    }
    tasks.spawn(housekeeping(store.clone(), stop_rx.clone()));
    if let Err(e) = intake.plan_digests(&store, jiff::Timestamp::now()).await {
        tracing::warn!(error = %e, "digests could not be planned");
    }
    tasks.spawn(timers(
        store.clone(),
        intake.clone(),
        wake.clone(),
        stop_rx.clone(),
    ));
    {
        let path = data.root.join(crate::sources::socket::SOCKET_FILE);
        match crate::sources::socket::listen(&path) {
            Ok(listener) => {
                tasks.spawn(crate::sources::socket::serve(
                    listener,
                    path,
                    intake.clone(),
                    store.clone(),
                    wake.clone(),
                    Some(metrics.clone()),
                    stop_rx.clone(),
                ));
            }
            Err(e) => {
                tracing::error!(socket = %path.display(), error = %e, "no hand-over socket; ingest stores by itself");
            }
        }
    }
    let mut status = String::from("taking mail");
    if let Some(listener) = http {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "serving /healthz and /metrics");
        status = format!("taking mail; /metrics on http://{addr}");
        let (metrics, store, stop) = (metrics.clone(), store.clone(), stop_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = crate::http::serve(listener, metrics, store, stop).await {
                tracing::error!(error = %e, "/healthz and /metrics stopped");
            }
        });
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    // READY=1 after the first connects: each IMAP mailbox has synced once,
    // or 10 s passed (a server that is down must not keep the unit from
    // starting; the mailbox retries and /healthz tells).
    let first = std::time::Instant::now();
    while !metrics.sync_ages().iter().all(|(_, age)| age.is_some()) {
        if first.elapsed() > Duration::from_secs(10) {
            for (mailbox, _) in metrics.sync_ages().iter().filter(|(_, a)| a.is_none()) {
                tracing::warn!(mailbox, "not synced yet; ready without it");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crate::systemd::ready(&status);
    let mut watchdog = crate::systemd::watchdog_interval().map(|every| {
        let mut i = tokio::time::interval(every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping"); break; }
            _ = hup.recv() => {
                crate::systemd::reloading();
                reload(&mut cfg, &data, &intake, &store, &mut mailboxes).await;
                crate::systemd::ready(&status);
            }
            _ = tick(&mut watchdog) => crate::systemd::watchdog(),
        }
    }
    crate::systemd::stopping();
    let _ = stop_tx.send(true);
    let mailbox_tasks = mailboxes.stop_all();
    let drain = async {
        while tasks.join_next().await.is_some() {}
        for t in mailbox_tasks {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("tasks did not stop within 10 s");
    }
    store.close().await;
    Ok(())
}

/// What a token source queues when its grant is refused for good: the
/// notice to the desk's lead, rendered by the service.
fn refusal_notice(intake: &Arc<Intake>) -> crate::oauth::RefusalNotice {
    let intake = intake.clone();
    Arc::new(move |r| intake.grant_refused_notice(r, jiff::Timestamp::now()))
}

/// The IMAP mailboxes being watched, each with its own stop switch, so a
/// reload can start, stop and restart them one by one.
struct Mailboxes {
    /// By name: the configuration it runs with, its stop switch, its task.
    running: std::collections::BTreeMap<
        String,
        (
            crate::config::ImapConfig,
            watch::Sender<bool>,
            tokio::task::JoinHandle<()>,
        ),
    >,
    intake: Arc<Intake>,
    store: Store,
    wake: Arc<Wake>,
    metrics: Arc<Metrics>,
    /// The Graph mailboxes being read, by name, as `running`.
    graph: std::collections::BTreeMap<
        String,
        (
            crate::config::GraphConfig,
            watch::Sender<bool>,
            tokio::task::JoinHandle<()>,
        ),
    >,
    /// Each Graph mailbox's client, with the configuration it was made
    /// for (the transport holds the one of its mailbox).
    graph_clients: std::collections::BTreeMap<
        String,
        (
            crate::config::GraphConfig,
            Arc<crate::sources::graph::GraphClient>,
        ),
    >,
}

impl Mailboxes {
    /// Starts watching `m`.
    fn start(&mut self, cfg: &Config, m: &crate::config::ImapConfig) -> Result<(), String> {
        let mut src = crate::sources::imap::ImapSource::new(cfg, m)?;
        let key = format!("imap:{}", m.label());
        if let Some(t) =
            crate::oauth::source_for(cfg, &key, &self.store, Some(self.metrics.clone()))
                .map_err(|e| format!("imap {:?}: {e}", m.label()))?
        {
            t.set_notice(refusal_notice(&self.intake), self.wake.clone());
            src = src.with_tokens(t);
        }
        tracing::info!(mailbox = src.label(), host = %m.host, folder = %m.folder, "IMAP mailbox");
        self.metrics.mailbox_registered(src.label());
        let (tx, rx) = watch::channel(false);
        let label = src.label().to_string();
        let task = tokio::spawn(src.run(
            self.intake.clone(),
            self.store.clone(),
            self.wake.clone(),
            self.metrics.clone(),
            rx,
        ));
        self.running.insert(label, (m.clone(), tx, task));
        Ok(())
    }

    /// Starts reading Graph mailbox `g`, with the client made at start
    /// when its configuration is unchanged (shared with the transport).
    fn start_graph(&mut self, cfg: &Config, g: &crate::config::GraphConfig) -> Result<(), String> {
        let label = g.label().to_string();
        let client = match self.graph_clients.get(&label) {
            Some((old, c)) if format!("{old:?}") == format!("{g:?}") => c.clone(),
            _ => {
                let c = Arc::new(crate::sources::graph::GraphClient::new(
                    cfg,
                    g,
                    &self.store,
                    Some(self.metrics.clone()),
                )?);
                c.tokens()
                    .set_notice(refusal_notice(&self.intake), self.wake.clone());
                self.graph_clients
                    .insert(label.clone(), (g.clone(), c.clone()));
                c
            }
        };
        let src = crate::sources::graph::GraphSource::new(cfg, g, client);
        tracing::info!(mailbox = %label, user = %g.mailbox.get_ref(), folder = %g.folder, "Graph mailbox");
        self.metrics.mailbox_registered(&label);
        let (tx, rx) = watch::channel(false);
        let observer: Arc<dyn crate::sources::imap::SyncObserver> =
            Arc::new(crate::sources::graph::GraphMetrics(self.metrics.clone()));
        let task = tokio::spawn(src.run(
            self.intake.clone(),
            self.store.clone(),
            self.wake.clone(),
            observer,
            rx,
        ));
        self.graph.insert(label, (g.clone(), tx, task));
        Ok(())
    }

    /// Stops reading Graph mailbox `name` (at most 10 s).
    async fn stop_graph(&mut self, name: &str) {
        if let Some((_, tx, task)) = self.graph.remove(name) {
            let _ = tx.send(true);
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!(mailbox = name, "did not stop within 10 s");
            }
            self.metrics.mailbox_removed(name);
        }
    }

    /// Stops watching `name` and waits (at most 10 s) until its session
    /// has finished the message in hand and logged out.
    async fn stop(&mut self, name: &str) {
        if let Some((_, tx, task)) = self.running.remove(name) {
            let _ = tx.send(true);
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!(mailbox = name, "did not stop within 10 s");
            }
            self.metrics.mailbox_removed(name);
        }
    }

    /// Tells every mailbox to stop; their tasks, to wait for.
    fn stop_all(&mut self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = std::mem::take(&mut self.running)
            .into_values()
            .map(|(_, tx, task)| {
                let _ = tx.send(true);
                task
            })
            .collect();
        tasks.extend(
            std::mem::take(&mut self.graph)
                .into_values()
                .map(|(_, tx, task)| {
                    let _ = tx.send(true);
                    task
                }),
        );
        tasks
    }

    /// Brings the running mailboxes in line with `cfg`: a mailbox no longer
    /// configured stops, a new one starts, a changed one restarts.
    async fn apply(&mut self, cfg: &Config) {
        let wanted: std::collections::BTreeMap<String, &crate::config::ImapConfig> =
            cfg.imap.iter().map(|m| (m.label(), m)).collect();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            let same = match (wanted.get(&name), self.running.get(&name)) {
                (Some(new), Some((old, _, _))) => format!("{new:?}") == format!("{old:?}"),
                _ => false,
            };
            if !same {
                tracing::info!(
                    mailbox = %name,
                    "SIGHUP: mailbox {} (stopping it)",
                    if wanted.contains_key(&name) { "changed" } else { "removed" }
                );
                self.stop(&name).await;
            }
        }
        for (name, m) in wanted {
            if !self.running.contains_key(&name) {
                if let Err(e) = self.start(cfg, m) {
                    tracing::error!(mailbox = %name, error = %e, "SIGHUP: mailbox not started");
                }
            }
        }
        let wanted: std::collections::BTreeMap<String, &crate::config::GraphConfig> = cfg
            .graph
            .iter()
            .map(|g| (g.label().to_string(), g))
            .collect();
        let names: Vec<String> = self.graph.keys().cloned().collect();
        for name in names {
            let same = match (wanted.get(&name), self.graph.get(&name)) {
                (Some(new), Some((old, _, _))) => format!("{new:?}") == format!("{old:?}"),
                _ => false,
            };
            if !same {
                tracing::info!(
                    mailbox = %name,
                    "SIGHUP: Graph mailbox {} (stopping it)",
                    if wanted.contains_key(&name) { "changed" } else { "removed" }
                );
                self.stop_graph(&name).await;
            }
        }
        for (name, g) in wanted {
            if !self.graph.contains_key(&name) {
                if let Err(e) = self.start_graph(cfg, g) {
                    tracing::error!(mailbox = %name, error = %e, "SIGHUP: Graph mailbox not started");
                }
            }
        }
    }
}

/// SIGHUP: reads the configuration file again and puts in force what can
/// change while running (rules, templates, customers, SLA policies,
/// audiences and digests, IMAP mailboxes); names what else changed and
/// needs a restart. A file that does not load, or rules, templates,
/// policies or customers with an error, leave everything as it was.
async fn reload(
    cfg: &mut Config,
    data: &DataDir,
    intake: &Intake,
    store: &Store,
    mailboxes: &mut Mailboxes,
) {
    let Some(path) = cfg.path.clone() else {
        // No file: the defaults, and the directories they name.
        match intake.reload() {
            Ok(n) => tracing::info!(
                rules = n,
                "SIGHUP: rules, templates, SLA policies and customers reloaded"
            ),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: not reloaded, keeping the old rules and templates")
            }
        }
        return;
    };
    let new = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: configuration not reloaded, keeping the old one");
            return;
        }
    };
    let customers = new
        .customers
        .dir
        .as_ref()
        .map(|d| new.resolve(d))
        .unwrap_or_else(|| data.root.join("customers"));
    match intake.reload_from(&new, customers) {
        Ok(n) => tracing::info!(
            rules = n,
            config = %path.display(),
            "SIGHUP: configuration reloaded: rules, templates, SLA policies, audiences, digests, customers and IMAP mailboxes in force"
        ),
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: configuration not reloaded, keeping the old one");
            return;
        }
    }
    let restart = cfg.needs_restart(&new);
    if !restart.is_empty() {
        tracing::warn!(
            sections = %restart.join(", "),
            "SIGHUP: these changes take effect only after a restart (systemctl restart ticketd)"
        );
    }
    mailboxes.apply(&new).await;
    if let Err(e) = intake.plan_digests(store, jiff::Timestamp::now()).await {
        tracing::warn!(error = %e, "digests could not be planned");
    }
    *cfg = new;
}

/// The next watchdog tick; never, without a watchdog.
async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Periodic clean-up that keeps tables on the ingest path small.
async fn housekeeping(store: Store, mut shutdown: watch::Receiver<bool>) {
    loop {
        let before = crate::store::ts(jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2));
        match store.prune_auto_mail_log(&before).await {
            Ok(n) if n > 0 => tracing::debug!(removed = n, "pruned automatic-mail log"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "housekeeping failed"),
        }
        // A gateway replays events of minutes, not days.
        let seen = crate::store::ts(jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48));
        if let Err(e) = store.prune_chat_seen(&seen).await {
            tracing::warn!(error = %e, "housekeeping failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Fires due timers (rows of `timers`): checks once a second, and at once
/// after a start, so that what fell due while the daemon was down is done
/// first.
async fn timers(
    store: Store,
    intake: Arc<Intake>,
    wake_outbox: Arc<Wake>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let at = jiff::Timestamp::now();
        let now = crate::store::ts(at);
        match store.next_timer().await {
            Ok(Some(due)) if due <= now => {
                match store.fire_due_timers(at, &mut intake.hooks(at)).await {
                    Ok(fired) => {
                        if fired.iter().any(|f| f.queued) {
                            wake_outbox.notify_one();
                        }
                        for f in &fired {
                            tracing::info!(
                                timer = %f.kind,
                                ticket = f.ticket.as_deref().unwrap_or(""),
                                resolved = f.resolved,
                                "timer fired"
                            );
                        }
                        if fired.len() == 100 {
                            continue;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "timers could not be fired; retrying"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "timers could not be read; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Whether an event on `new/` can mean a message arrived: a file created or
/// moved in, a file written and closed (a deliverer that writes into `new/`
/// directly), or the watcher asking for a rescan. Not the opening, reading
/// and listing that the scan itself does: reacting to its own `IN_OPEN`
/// made an idle daemon rescan about 1,200 times a second.
fn delivers(ev: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
    ev.need_rescan()
        || match ev.kind {
            EventKind::Create(_) => true,
            EventKind::Modify(ModifyKind::Name(mode)) => mode != RenameMode::From,
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Any | EventKind::Other => true,
            EventKind::Access(_) | EventKind::Modify(_) | EventKind::Remove(_) => false,
        }
}

/// Takes messages from a Maildir's `new/` as they arrive (inotify, with a
/// periodic rescan as a safety net) and acknowledges each after its commit.
/// Takes at most `limits.batch_size` files per transaction and leaves files
/// over `limits.max_message_bytes` in `new/`. With `metrics`, each decision
/// and its latency (file time to commit) are recorded as source `maildir`.
async fn watch_maildir(
    intake: Arc<Intake>,
    store: Store,
    md: Maildir,
    wake_outbox: Arc<Wake>,
    limits: crate::config::IntakeConfig,
    metrics: Option<Arc<Metrics>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.as_ref().map_or(true, delivers) {
            let _ = ev_tx.send(());
        }
    })
    .and_then(|mut w| {
        w.watch(&md.new_dir(), notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(maildir = %md.root().display(), error = %e, "no inotify; polling every second");
            None
        }
    };
    let rescan = if _watcher.is_some() {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(1)
    };
    let mut idle_backoff = Duration::ZERO;
    // Files over the size limit, left in new/ and not read again.
    let mut too_big = std::collections::HashSet::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let files = match md.pending(limits.batch_size, |p| too_big.contains(p)) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(maildir = %md.root().display(), error = %e, "cannot list new/");
                Vec::new()
            }
        };
        if !files.is_empty() {
            let mut items = Vec::with_capacity(files.len());
            let mut paths = Vec::with_capacity(files.len());
            let mut arrived = Vec::with_capacity(files.len());
            for f in files {
                match crate::sources::read_file(&f, limits.max_message_bytes) {
                    Ok(raw) => {
                        // The delivery wrote the file, then renamed it into new/.
                        let delivered = Maildir::delivered_at(&f);
                        arrived.push(delivered.map_or_else(SystemTime::now, SystemTime::from));
                        items.push(Incoming {
                            raw,
                            source: format!(
                                "maildir:{}",
                                f.file_name()
                                    .map(|n| n.to_string_lossy())
                                    .unwrap_or_default()
                            ),
                            arrived: delivered,
                        });
                        paths.push(f);
                    }
                    // Too big: stays in new/ (the admin decides), told once.
                    Err(e @ crate::sources::ReadError::TooBig { .. }) => {
                        if too_big.insert(f.clone()) {
                            tracing::error!(file = %f.display(), error = %e, "not taken: left in new/");
                        }
                    }
                    // Gone meanwhile (another reader) or unreadable: next round.
                    Err(e) => tracing::warn!(file = %f.display(), error = %e, "cannot read"),
                }
            }
            let results = intake
                .ingest_batch(&store, &items, jiff::Timestamp::now())
                .await;
            let mut stored = 0;
            for ((p, r), at) in paths.iter().zip(results).zip(&arrived) {
                if let (Some(m), Ok(o)) = (&metrics, &r) {
                    m.message_decided("maildir", o.action.as_str());
                    m.ingest_latency("maildir", at.elapsed().unwrap_or_default());
                }
                if r.is_ok() {
                    stored += 1;
                    if let Err(e) = md.acknowledge(p) {
                        tracing::error!(file = %p.display(), error = %e, "stored but cannot move to cur/");
                    }
                }
            }
            if stored > 0 {
                wake_outbox.notify_one();
                idle_backoff = Duration::ZERO;
                continue;
            }
            // Nothing could be stored: the database is in trouble. Back off.
            idle_backoff =
                (idle_backoff * 2).clamp(Duration::from_millis(200), Duration::from_secs(30));
            tokio::select! {
                _ = tokio::time::sleep(idle_backoff) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        tokio::select! {
            _ = ev_rx.recv() => {
                // Coalesce a burst of events into one scan.
                while ev_rx.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(rescan) => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::delivers;
    use notify::event::{
        AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind, RenameMode,
    };
    use notify::Event;

    #[test]
    fn only_arrivals_wake_the_maildir_scan() {
        let wakes = |k| delivers(&Event::new(k));
        assert!(wakes(EventKind::Create(CreateKind::File)));
        assert!(wakes(EventKind::Modify(ModifyKind::Name(RenameMode::To))));
        assert!(wakes(EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        // The scan's own listing and reading, and the move to cur/.
        assert!(!wakes(EventKind::Access(AccessKind::Open(AccessMode::Any))));
        assert!(!wakes(EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!wakes(EventKind::Modify(ModifyKind::Name(
            RenameMode::From
        ))));
        assert!(!wakes(EventKind::Remove(RemoveKind::File)));
    }
}
