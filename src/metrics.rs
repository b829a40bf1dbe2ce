//! The daemon's metrics: what the sources decided, how long a message took
//! from arrival to commit, the outbox by status and how fresh each mailbox
//! is. One [`Metrics`] is shared as `Arc<Metrics>` by every task of `run`;
//! the HTTP endpoint ([`crate::http`]) renders it for Prometheus and answers
//! `/healthz` from [`Metrics::sync_ages`].
//!
//! Counters and the histogram live in memory (they start at zero with the
//! process, as Prometheus expects); the outbox figures are read from the
//! database at scrape time, and the sync ages are computed at render time,
//! so neither can go stale between scrapes.

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The content type of [`Metrics::render`]: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// How long a mailbox may go without a successful sync before `/healthz`
/// fails and `ticketd_mailbox_up` drops to 0, unless configured otherwise.
pub const DEFAULT_MAX_SYNC_AGE: Duration = Duration::from_secs(900);

/// How long a mailbox may be disconnected before `/healthz` fails, unless
/// configured otherwise (`[http] disconnected_grace_seconds`): long enough
/// for a reconnect after a server restart, far shorter than the sync age.
pub const DEFAULT_DISCONNECT_GRACE: Duration = Duration::from_secs(60);

/// Upper bounds of the ingest latency histogram, in seconds: 1 ms … 60 s
/// (the hand-over path takes a few ms, a Maildir rescan up to 5 s, an
/// IMAP mailbox catching up after an outage longer).
const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The source kinds whose series exist from the start (at 0), so that
/// `rate()` and alerts see them before the first message.
const SOURCES: [&str; 3] = ["imap", "maildir", "pipe"];

/// The decisions of [`crate::domain::Action`], likewise created at 0.
const ACTIONS: [&str; 7] = [
    "created",
    "appended",
    "duplicate",
    "suppressed",
    "quarantined",
    "routed",
    "ignored",
];

/// The outbox by status, read from the database when metrics are scraped
/// (see `Store::outbox_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Waiting for their first or next attempt.
    pub queued: i64,
    /// Claimed by a worker and being delivered (or leased after a crash).
    pub sending: i64,
    /// Given up on (permanent error, or retries exhausted).
    pub failed: i64,
    /// Accepted by the transport.
    pub sent: i64,
}

/// Service levels, read from the database when metrics are scraped (see
/// `Store::sla_stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlaStats {
    /// Open tickets by SLA state (running, paused, breached, met, none).
    pub open_by_state: Vec<(String, i64)>,
    /// Breaches recorded so far (a target's breach stage fired).
    pub breaches: i64,
    /// Reminders sent so far (stages below 100 %).
    pub reminders: i64,
    /// Chat posts waiting for the chat adapter.
    pub chat_queued: i64,
    /// Chat posts given up on (retries exhausted or refused by Discord).
    pub chat_failed: i64,
}

/// Whether a mailbox whose last successful sync was `age` ago (`None`:
/// never) counts as up under the limit `max`. `/healthz` and
/// `ticketd_mailbox_up` both use this one rule.
pub fn is_fresh(age: Option<Duration>, max: Duration) -> bool {
    age.is_some_and(|a| a <= max)
}

/// The metrics registry of one daemon process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    messages: IntCounterVec,
    latency: HistogramVec,
    outbox: IntGaugeVec,
    outbox_failed: IntCounter,
    sync_age: GaugeVec,
    mailbox_up: IntGaugeVec,
    mailbox_connected: IntGaugeVec,
    sla_open: IntGaugeVec,
    sla_breaches: IntCounter,
    sla_reminders: IntCounter,
    chat_queued: prometheus::IntGauge,
    chat_failed: prometheus::IntGauge,
    oauth_refreshes: IntCounterVec,
    mailbox_auth_ok: IntGaugeVec,
    /// Each registered mailbox and the instant of its last successful sync.
    mailboxes: Mutex<BTreeMap<String, Option<Instant>>>,
    /// Each registered mailbox's connection: up or down, and since when.
    connections: Mutex<BTreeMap<String, (bool, Instant)>>,
    /// Accounts (mailbox names, `smtp`) whose grant the provider refused.
    auth_refused: Mutex<std::collections::BTreeSet<String>>,
    max_sync_age: Duration,
    /// How long a mailbox may be disconnected before `/healthz` fails.
    disconnect_grace: Duration,
    /// Render sets the scrape-time gauges and then encodes them: two
    /// scrapes at once must not interleave those steps.
    render_lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Locks a mutex even if a panicking thread held it: the data behind these
/// locks (timestamps, nothing half-written) stays valid.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Metrics {
    /// An empty registry with the default sync-age limit (900 s).
    pub fn new() -> Metrics {
        Metrics::with_max_sync_age(DEFAULT_MAX_SYNC_AGE)
    }

    /// An empty registry whose mailboxes count as up while they synced
    /// within `max` (`[http] max_sync_age_seconds`).
    pub fn with_max_sync_age(max: Duration) -> Metrics {
        // The definitions below are constants: they fail only if this code
        // is wrong, which the unit tests would show.
        Metrics::build(max).expect("the metric definitions are valid")
    }

    fn build(max_sync_age: Duration) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let messages = IntCounterVec::new(
            Opts::new(
                "ticketd_messages_total",
                "Messages stored and decided, by source kind and decision.",
            ),
            &["source", "action"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "ticketd_ingest_latency_seconds",
                "Time from a message's arrival (IMAP INTERNALDATE, hand-over or file time) to its commit.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["source"],
        )?;
        let outbox = IntGaugeVec::new(
            Opts::new(
                "ticketd_outbox_mails",
                "Outgoing mails in the outbox, by status (read from the database at scrape time).",
            ),
            &["status"],
        )?;
        let outbox_failed = IntCounter::new(
            "ticketd_outbox_failed_total",
            "Outgoing mails given up on, as recorded in the database (rows are never removed, so it only grows).",
        )?;
        let sync_age = GaugeVec::new(
            Opts::new(
                "ticketd_mailbox_last_sync_age_seconds",
                "Seconds since the mailbox's last successful sync; absent while it has never synced.",
            ),
            &["mailbox"],
        )?;
        let mailbox_up = IntGaugeVec::new(
            Opts::new(
                "ticketd_mailbox_up",
                "1 when the mailbox synced successfully within max_sync_age_seconds, else 0.",
            ),
            &["mailbox"],
        )?;
        let sla_open = IntGaugeVec::new(
            Opts::new(
                "ticketd_sla_open_tickets",
                "Open tickets by SLA state: running, paused (waiting for the customer), breached, met, none (read from the database at scrape time).",
            ),
            &["state"],
        )?;
        let sla_breaches = IntCounter::new(
            "ticketd_sla_breaches_total",
            "SLA targets breached, as recorded in the database (each target's breach counts once).",
        )?;
        let sla_reminders = IntCounter::new(
            "ticketd_sla_reminders_total",
            "SLA reminder stages fired below the breach, as recorded in the database.",
        )?;
        let chat_queued = prometheus::IntGauge::new(
            "ticketd_chat_outbox_queued",
            "Chat posts (ticket notifications, reminders, digests, answers to Discord customers) waiting in the chat outbox.",
        )?;
        let chat_failed = prometheus::IntGauge::new(
            "ticketd_chat_outbox_failed",
            "Chat posts given up on: retried for discord.retry_hours, or refused by Discord (missing permission, unknown channel).",
        )?;
        registry.register(Box::new(chat_failed.clone()))?;
        registry.register(Box::new(sla_open.clone()))?;
        registry.register(Box::new(sla_breaches.clone()))?;
        registry.register(Box::new(sla_reminders.clone()))?;
        registry.register(Box::new(chat_queued.clone()))?;
        for state in ["running", "paused", "breached", "met", "none"] {
            sla_open.with_label_values(&[state]);
        }
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(outbox.clone()))?;
        registry.register(Box::new(outbox_failed.clone()))?;
        registry.register(Box::new(sync_age.clone()))?;
        registry.register(Box::new(mailbox_up.clone()))?;
        let mailbox_connected = IntGaugeVec::new(
            Opts::new(
                "ticketd_mailbox_connected",
                "1 while the mailbox has a logged-in IMAP connection, 0 from the moment it is lost (or before the first).",
            ),
            &["mailbox"],
        )?;
        registry.register(Box::new(mailbox_connected.clone()))?;
        let oauth_refreshes = IntCounterVec::new(
            Opts::new(
                "ticketd_oauth_token_refreshes_total",
                "OAuth 2.0 access tokens obtained from the token endpoint per account (imap:NAME, smtp); about one per token lifetime in steady state.",
            ),
            &["account"],
        )?;
        registry.register(Box::new(oauth_refreshes.clone()))?;
        let mailbox_auth_ok = IntGaugeVec::new(
            Opts::new(
                "ticketd_mailbox_auth_ok",
                "0 while the mailbox (or smtp) cannot log in because its credentials or OAuth grant were refused, else 1.",
            ),
            &["mailbox"],
        )?;
        registry.register(Box::new(mailbox_auth_ok.clone()))?;
        for source in SOURCES {
            for action in ACTIONS {
                messages.with_label_values(&[source, action]);
            }
            latency.with_label_values(&[source]);
        }
        Ok(Metrics {
            registry,
            messages,
            latency,
            outbox,
            outbox_failed,
            sync_age,
            mailbox_up,
            mailbox_connected,
            sla_open,
            sla_breaches,
            sla_reminders,
            chat_queued,
            chat_failed,
            oauth_refreshes,
            mailbox_auth_ok,
            mailboxes: Mutex::new(BTreeMap::new()),
            connections: Mutex::new(BTreeMap::new()),
            auth_refused: Mutex::new(std::collections::BTreeSet::new()),
            max_sync_age,
            disconnect_grace: DEFAULT_DISCONNECT_GRACE,
            render_lock: Mutex::new(()),
        })
    }

    /// The same registry, with `/healthz` failing once a mailbox has been
    /// disconnected for longer than `grace`.
    pub fn with_disconnect_grace(mut self, grace: Duration) -> Metrics {
        self.disconnect_grace = grace;
        self
    }

    /// How long a mailbox may be disconnected before `/healthz` fails.
    pub fn disconnect_grace(&self) -> Duration {
        self.disconnect_grace
    }

    /// An OAuth access token was obtained for `account`.
    pub fn oauth_token_refreshed(&self, account: &str) {
        self.oauth_refreshes.with_label_values(&[account]).inc();
    }

    /// Whether `mailbox` (or `smtp`) can log in: `false` after its
    /// credentials or grant were refused, `true` after a login.
    pub fn mailbox_auth(&self, mailbox: &str, ok: bool) {
        self.mailbox_auth_ok
            .with_label_values(&[mailbox])
            .set(i64::from(ok));
        let mut refused = lock(&self.auth_refused);
        if ok {
            refused.remove(mailbox);
        } else {
            refused.insert(mailbox.to_string());
        }
    }

    /// The accounts whose grant the provider refused, until a token is
    /// had again: `/healthz` names them.
    pub fn auth_refused(&self) -> Vec<String> {
        lock(&self.auth_refused).iter().cloned().collect()
    }

    /// A mailbox logged in (`true`) or lost its connection (`false`) now:
    /// `ticketd_mailbox_connected` follows at once.
    pub fn mailbox_connected(&self, mailbox: &str, up: bool) {
        let mut c = lock(&self.connections);
        let changed = c.get(mailbox).is_none_or(|(was, _)| *was != up);
        if changed {
            c.insert(mailbox.to_string(), (up, Instant::now()));
        }
        self.mailbox_connected
            .with_label_values(&[mailbox])
            .set(i64::from(up));
    }

    /// Each mailbox that is disconnected now (or never connected since it
    /// was registered), and for how long.
    pub fn disconnected(&self) -> Vec<(String, Duration)> {
        let now = Instant::now();
        lock(&self.connections)
            .iter()
            .filter(|(_, (up, _))| !*up)
            .map(|(name, (_, since))| (name.clone(), now.saturating_duration_since(*since)))
            .collect()
    }

    /// A mailbox taken out of the configuration (SIGHUP): its series and
    /// its health go away.
    pub fn mailbox_removed(&self, mailbox: &str) {
        lock(&self.mailboxes).remove(mailbox);
        lock(&self.connections).remove(mailbox);
        let _ = self.mailbox_connected.remove_label_values(&[mailbox]);
        let _ = self.mailbox_up.remove_label_values(&[mailbox]);
        let _ = self.sync_age.remove_label_values(&[mailbox]);
    }

    /// The sync-age limit this registry judges mailboxes by.
    pub fn max_sync_age(&self) -> Duration {
        self.max_sync_age
    }

    /// A configured mailbox, known before its first sync (health fails until it syncs within the limit).
    pub fn mailbox_registered(&self, mailbox: &str) {
        lock(&self.mailboxes)
            .entry(mailbox.to_string())
            .or_insert(None);
        let mut c = lock(&self.connections);
        if !c.contains_key(mailbox) {
            c.insert(mailbox.to_string(), (false, Instant::now()));
            self.mailbox_connected.with_label_values(&[mailbox]).set(0);
        }
    }

    /// A mailbox finished a successful sync (fetch or IDLE cycle) now.
    pub fn mailbox_synced(&self, mailbox: &str) {
        self.mailbox_synced_at(mailbox, Instant::now());
    }

    fn mailbox_synced_at(&self, mailbox: &str, at: Instant) {
        lock(&self.mailboxes).insert(mailbox.to_string(), Some(at));
    }

    /// One message's decision ("created", "appended", "duplicate", "suppressed", "quarantined", "routed", "ignored") from a source kind ("imap", "maildir", "pipe").
    pub fn message_decided(&self, source: &str, action: &str) {
        self.messages.with_label_values(&[source, action]).inc();
    }

    /// Ingest latency of one message: arrival (IMAP INTERNALDATE or hand-over/file time) to commit.
    pub fn ingest_latency(&self, source: &str, latency: std::time::Duration) {
        self.latency
            .with_label_values(&[source])
            .observe(latency.as_secs_f64());
    }

    /// Seconds since each registered mailbox's last successful sync (None = never), for /healthz.
    pub fn sync_ages(&self) -> Vec<(String, Option<std::time::Duration>)> {
        self.sync_ages_at(Instant::now())
    }

    fn sync_ages_at(&self, now: Instant) -> Vec<(String, Option<Duration>)> {
        lock(&self.mailboxes)
            .iter()
            .map(|(name, last)| (name.clone(), last.map(|t| now.saturating_duration_since(t))))
            .collect()
    }

    /// Sets the SLA metrics from the database's figures (at scrape time,
    /// before [`Metrics::render`]). The counters follow the database, so
    /// they survive restarts without a reset.
    pub fn set_sla(&self, s: &SlaStats) {
        for state in ["running", "paused", "breached", "met", "none"] {
            let n = s
                .open_by_state
                .iter()
                .filter(|(st, _)| st == state)
                .map(|(_, n)| *n)
                .sum();
            self.sla_open.with_label_values(&[state]).set(n);
        }
        for (counter, db) in [
            (&self.sla_breaches, s.breaches),
            (&self.sla_reminders, s.reminders),
        ] {
            let db = u64::try_from(db).unwrap_or(0);
            if db > counter.get() {
                counter.inc_by(db - counter.get());
            }
        }
        self.chat_queued.set(s.chat_queued);
        self.chat_failed.set(s.chat_failed);
    }

    /// The Prometheus text exposition; `outbox` is read from the database at scrape time.
    pub fn render(&self, outbox: &OutboxStats) -> String {
        self.render_at(Instant::now(), outbox)
    }

    fn render_at(&self, now: Instant, outbox: &OutboxStats) -> String {
        let _one_at_a_time = lock(&self.render_lock);
        for (status, n) in [
            ("queued", outbox.queued),
            ("sending", outbox.sending),
            ("failed", outbox.failed),
            ("sent", outbox.sent),
        ] {
            self.outbox.with_label_values(&[status]).set(n);
        }
        // The failed rows only ever grow, so the counter follows the
        // database: across restarts too, without a reset.
        let failed = u64::try_from(outbox.failed).unwrap_or(0);
        let counted = self.outbox_failed.get();
        if failed > counted {
            self.outbox_failed.inc_by(failed - counted);
        }
        for (mailbox, age) in self.sync_ages_at(now) {
            match age {
                Some(a) => self
                    .sync_age
                    .with_label_values(&[mailbox.as_str()])
                    .set(a.as_secs_f64()),
                // Never synced: no age to report (an absent series, not 0).
                None => {
                    let _ = self.sync_age.remove_label_values(&[mailbox.as_str()]);
                }
            }
            self.mailbox_up
                .with_label_values(&[mailbox.as_str()])
                .set(i64::from(is_fresh(age, self.max_sync_age)));
        }
        let mut text = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut text) {
            tracing::error!(error = %e, "cannot encode metrics");
            text.push_str(&format!("# metrics could not be encoded: {e}\n"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample lines of an exposition (no comments), for exact checks.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    fn has(text: &str, line: &str) -> bool {
        samples(text).contains(&line)
    }

    #[test]
    fn decisions_are_counted_per_source_and_action_from_zero() {
        let m = Metrics::new();
        let text = m.render(&OutboxStats::default());
        assert!(
            has(
                &text,
                "ticketd_messages_total{action=\"created\",source=\"maildir\"} 0"
            ),
            "{text}"
        );
        m.message_decided("maildir", "created");
        m.message_decided("maildir", "created");
        m.message_decided("pipe", "duplicate");
        let text = m.render(&OutboxStats::default());
        assert!(
            has(
                &text,
                "ticketd_messages_total{action=\"created\",source=\"maildir\"} 2"
            ),
            "{text}"
        );
        assert!(has(
            &text,
            "ticketd_messages_total{action=\"duplicate\",source=\"pipe\"} 1"
        ));
        assert!(has(
            &text,
            "ticketd_messages_total{action=\"created\",source=\"imap\"} 0"
        ));
        assert!(text.contains("# TYPE ticketd_messages_total counter\n"));
    }

    #[test]
    fn latency_lands_in_the_right_buckets() {
        let m = Metrics::new();
        m.ingest_latency("pipe", Duration::from_millis(3));
        m.ingest_latency("pipe", Duration::from_secs(45));
        m.ingest_latency("pipe", Duration::from_secs(600));
        let text = m.render(&OutboxStats::default());
        assert!(text.contains("# TYPE ticketd_ingest_latency_seconds histogram\n"));
        for line in [
            "ticketd_ingest_latency_seconds_bucket{source=\"pipe\",le=\"0.0025\"} 0",
            "ticketd_ingest_latency_seconds_bucket{source=\"pipe\",le=\"0.005\"} 1",
            "ticketd_ingest_latency_seconds_bucket{source=\"pipe\",le=\"30\"} 1",
            "ticketd_ingest_latency_seconds_bucket{source=\"pipe\",le=\"60\"} 2",
            "ticketd_ingest_latency_seconds_bucket{source=\"pipe\",le=\"+Inf\"} 3",
            "ticketd_ingest_latency_seconds_count{source=\"pipe\"} 3",
            "ticketd_ingest_latency_seconds_sum{source=\"pipe\"} 645.003",
            "ticketd_ingest_latency_seconds_count{source=\"maildir\"} 0",
        ] {
            assert!(has(&text, line), "{line} in\n{text}");
        }
    }

    #[test]
    fn outbox_figures_are_those_of_the_scrape() {
        let m = Metrics::new();
        let text = m.render(&OutboxStats {
            queued: 3,
            sending: 1,
            failed: 2,
            sent: 40,
        });
        for line in [
            "ticketd_outbox_mails{status=\"queued\"} 3",
            "ticketd_outbox_mails{status=\"sending\"} 1",
            "ticketd_outbox_mails{status=\"failed\"} 2",
            "ticketd_outbox_mails{status=\"sent\"} 40",
            "ticketd_outbox_failed_total 2",
        ] {
            assert!(has(&text, line), "{line} in\n{text}");
        }
        assert!(text.contains("# TYPE ticketd_outbox_mails gauge\n"));
        assert!(text.contains("# TYPE ticketd_outbox_failed_total counter\n"));
        // The next scrape sees the database as it is then; the counter
        // follows the failed rows up and never goes down.
        let text = m.render(&OutboxStats {
            queued: 0,
            sending: 0,
            failed: 5,
            sent: 44,
        });
        assert!(has(&text, "ticketd_outbox_mails{status=\"queued\"} 0"));
        assert!(has(&text, "ticketd_outbox_failed_total 5"));
        let text = m.render(&OutboxStats {
            failed: 1,
            ..OutboxStats::default()
        });
        assert!(has(&text, "ticketd_outbox_failed_total 5"), "{text}");
    }

    #[test]
    fn mailbox_ages_are_computed_at_render_time() {
        let m = Metrics::with_max_sync_age(Duration::from_secs(900));
        let t0 = Instant::now();
        m.mailbox_registered("support@imap.example.com/INBOX");
        m.mailbox_registered("alerts@imap.example.com/INBOX");
        m.mailbox_synced_at("alerts@imap.example.com/INBOX", t0);
        // Registering again does not forget the sync.
        m.mailbox_registered("alerts@imap.example.com/INBOX");

        let text = m.render_at(t0 + Duration::from_secs(12), &OutboxStats::default());
        assert!(has(
            &text,
            "ticketd_mailbox_last_sync_age_seconds{mailbox=\"alerts@imap.example.com/INBOX\"} 12"
        ));
        assert!(has(
            &text,
            "ticketd_mailbox_up{mailbox=\"alerts@imap.example.com/INBOX\"} 1"
        ));
        // Never synced: no age series, and down.
        assert!(
            !text.contains("ticketd_mailbox_last_sync_age_seconds{mailbox=\"support"),
            "{text}"
        );
        assert!(has(
            &text,
            "ticketd_mailbox_up{mailbox=\"support@imap.example.com/INBOX\"} 0"
        ));

        // Past the limit: down, with its age.
        let later = t0 + Duration::from_secs(901);
        let text = m.render_at(later, &OutboxStats::default());
        assert!(has(
            &text,
            "ticketd_mailbox_last_sync_age_seconds{mailbox=\"alerts@imap.example.com/INBOX\"} 901"
        ));
        assert!(has(
            &text,
            "ticketd_mailbox_up{mailbox=\"alerts@imap.example.com/INBOX\"} 0"
        ));
        assert_eq!(
            m.sync_ages_at(later),
            vec![
                (
                    "alerts@imap.example.com/INBOX".to_string(),
                    Some(Duration::from_secs(901))
                ),
                ("support@imap.example.com/INBOX".to_string(), None),
            ]
        );
    }

    #[test]
    fn sla_figures_are_exposed() {
        let m = Metrics::new();
        m.set_sla(&SlaStats {
            open_by_state: vec![("running".into(), 7), ("breached".into(), 2)],
            breaches: 5,
            reminders: 11,
            chat_queued: 3,
            chat_failed: 1,
        });
        let text = m.render(&OutboxStats::default());
        assert!(
            has(&text, "ticketd_sla_open_tickets{state=\"running\"} 7"),
            "{text}"
        );
        assert!(has(&text, "ticketd_sla_open_tickets{state=\"breached\"} 2"));
        assert!(has(&text, "ticketd_sla_open_tickets{state=\"paused\"} 0"));
        assert!(has(&text, "ticketd_sla_breaches_total 5"));
        assert!(has(&text, "ticketd_sla_reminders_total 11"));
        assert!(has(&text, "ticketd_chat_outbox_queued 3"));
        assert!(has(&text, "ticketd_chat_outbox_failed 1"));
        // The database's count never goes down; the counter neither.
        m.set_sla(&SlaStats::default());
        assert!(has(
            &m.render(&OutboxStats::default()),
            "ticketd_sla_breaches_total 5"
        ));
    }

    #[test]
    fn a_sync_of_an_unregistered_mailbox_registers_it() {
        let m = Metrics::new();
        assert!(m.sync_ages().is_empty());
        m.mailbox_synced("x");
        let ages = m.sync_ages();
        assert_eq!(ages.len(), 1);
        assert!(ages[0].1.is_some_and(|a| a < Duration::from_secs(5)));
    }

    #[test]
    fn freshness_rule() {
        let max = Duration::from_secs(900);
        assert!(!is_fresh(None, max));
        assert!(is_fresh(Some(Duration::ZERO), max));
        assert!(is_fresh(Some(max), max));
        assert!(!is_fresh(Some(max + Duration::from_millis(1)), max));
    }

    #[test]
    fn a_refused_grant_is_listed_until_a_token_is_had_again() {
        let m = Metrics::new();
        m.mailbox_auth("support", true);
        assert!(m.auth_refused().is_empty());
        m.mailbox_auth("support", false);
        m.mailbox_auth("smtp", false);
        assert_eq!(
            m.auth_refused(),
            vec!["smtp".to_string(), "support".to_string()]
        );
        assert!(m
            .render(&OutboxStats::default())
            .contains("ticketd_mailbox_auth_ok{mailbox=\"support\"} 0"));
        m.mailbox_auth("support", true);
        assert_eq!(m.auth_refused(), vec!["smtp".to_string()]);
    }

    #[test]
    fn the_connected_gauge_follows_at_once_and_a_removed_mailbox_goes() {
        let m = Metrics::new();
        m.mailbox_registered("a");
        let text = m.render(&OutboxStats::default());
        assert!(
            has(&text, "ticketd_mailbox_connected{mailbox=\"a\"} 0"),
            "{text}"
        );
        assert_eq!(m.disconnected().len(), 1);
        m.mailbox_connected("a", true);
        let text = m.render(&OutboxStats::default());
        assert!(
            has(&text, "ticketd_mailbox_connected{mailbox=\"a\"} 1"),
            "{text}"
        );
        assert!(m.disconnected().is_empty());
        m.mailbox_connected("a", false);
        let first = m.disconnected()[0].1;
        std::thread::sleep(Duration::from_millis(20));
        // Still down: the outage is counted from its start.
        m.mailbox_connected("a", false);
        assert!(m.disconnected()[0].1 >= first + Duration::from_millis(20));
        m.mailbox_removed("a");
        let text = m.render(&OutboxStats::default());
        assert!(!text.contains("mailbox=\"a\""), "{text}");
        assert!(m.disconnected().is_empty() && m.sync_ages().is_empty());
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.mailbox_synced("we\"ird\\box\nname");
        let text = m.render(&OutboxStats::default());
        assert!(
            text.contains("ticketd_mailbox_up{mailbox=\"we\\\"ird\\\\box\\nname\"} 1"),
            "{text}"
        );
    }
}
