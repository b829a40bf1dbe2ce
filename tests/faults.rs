//! Faults and hostile input that earlier versions did not survive (issue 13):
//! a full disk that wedged the store, notices answering notices, concurrent
//! first starts, and two ways into someone else's ticket. Each test failed on
//! the code before its fix.

use std::sync::Arc;

use ticketd::domain::Action;
use ticketd::service::{Incoming, Intake, Outcome};
use ticketd::store::Store;

/// A data directory with its store (one connection, so a wedged connection
/// would be the one every later write gets) and intake.
struct Env {
    _dir: tempfile::TempDir,
    store: Store,
    intake: Arc<Intake>,
}

async fn env_with(cfg: ticketd::config::Config) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let data = ticketd::service::DataDir::open(dir.path()).unwrap();
    let store = ticketd::service::open_store(&cfg, &data, 1).await.unwrap();
    let key = ticketd::keys::MacKey::load(&store, &data.root)
        .await
        .unwrap();
    let intake = Arc::new(Intake::new(&cfg, key));
    Env {
        _dir: dir,
        store,
        intake,
    }
}

async fn env() -> Env {
    env_with(ticketd::config::Config::default()).await
}

fn mail(i: usize, body_bytes: usize) -> Vec<u8> {
    format!(
        "From: Anna Kunde <anna@kunde.example>\r\nTo: support@example.com\r\nSubject: Drucker {i} defekt\r\nMessage-ID: <m{i}@kunde.example>\r\nDate: Mon, 2 Mar 2026 09:15:00 +0100\r\n\r\n{}\r\n",
        "Der Drucker druckt nicht. ".repeat(body_bytes / 26 + 1)
    )
    .into_bytes()
}

async fn ingest(env: &Env, items: Vec<Vec<u8>>) -> Vec<Result<Outcome, String>> {
    let items: Vec<Incoming> = items
        .into_iter()
        .map(|raw| Incoming {
            raw,
            source: "test".into(),
            arrived: None,
        })
        .collect();
    env.intake
        .ingest_batch(&env.store, &items, jiff::Timestamp::now())
        .await
        .into_iter()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect()
}

/// `ticketd run`'s `/healthz` and `/metrics` on a loopback port.
struct Health {
    addr: std::net::SocketAddr,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Health {
    async fn start(store: &Store) -> Health {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let metrics = Arc::new(ticketd::metrics::Metrics::default());
        tokio::spawn(ticketd::http::serve(listener, metrics, store.clone(), rx));
        Health { addr, _stop: stop }
    }

    /// GET /healthz: status and body.
    async fn get(&self) -> (u16, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }
}

/// A tmpfs of a few MB mounted on a temp dir for the test (root only; the
/// test says SKIPPED elsewhere), unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mb: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mb}m,mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system of `path` up to about `leave` free bytes.
fn fill(path: &std::path::Path, leave: u64) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    // The tmpfs is a few MB: write until the write fails, then give back
    // `leave` bytes.
    while f.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    let _ = f.set_len(written.saturating_sub(leave));
    let _ = f.sync_all();
}

/// A full disk fails the message in hand; once there is room again, the next
/// write works in the same process. Before, a commit that failed with
/// "database or disk is full" left sqlx's connection believing it was still
/// inside a transaction (SQLite had rolled it back already), and every later
/// `BEGIN` failed with "attempted to call begin_with at non-zero transaction
/// depth" until a restart.
#[tokio::test]
async fn a_full_disk_fails_the_message_and_the_store_recovers_when_space_is_back() {
    let Some(disk) = SmallDisk::mount(8) else {
        println!("SKIPPED: cannot mount a tmpfs (needs root)");
        return;
    };
    let root = disk.dir.path().join("data");
    let cfg = ticketd::config::Config::default();
    let data = ticketd::service::DataDir::open(&root).unwrap();
    let store = ticketd::service::open_store(&cfg, &data, 1).await.unwrap();
    let key = ticketd::keys::MacKey::load(&store, &data.root)
        .await
        .unwrap();
    let env = Env {
        _dir: tempfile::tempdir().unwrap(),
        store,
        intake: Arc::new(Intake::new(&cfg, key)),
    };
    let first = ingest(&env, vec![mail(0, 100)]).await;
    assert!(first[0].is_ok(), "{first:?}");
    let health = Health::start(&env.store).await;
    assert_eq!(health.get().await.0, 200);
    let filler = disk.dir.path().join("filler");
    fill(&filler, 200 * 1024);
    // Batches until the disk is full.
    let batch = |round: usize| -> Vec<Vec<u8>> {
        (0..3).map(|k| mail(100 + round * 3 + k, 30_000)).collect()
    };
    let mut full = None;
    for round in 0..40 {
        let out = ingest(&env, batch(round)).await;
        if let Some(Err(e)) = out.iter().find(|r| r.is_err()) {
            full = Some((round, e.clone()));
            break;
        }
    }
    let (round, full) = full.expect("the disk never filled up");
    assert!(full.contains("full"), "{full}");
    assert!(
        !full.contains("corrupt row"),
        "a full disk is not a corrupt row: {full}"
    );
    let (status, body) = health.get().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store: cannot write"), "{body}");
    // The same batch again, as a source retries it: still the disk, not a
    // wedged connection.
    let again = ingest(&env, batch(round)).await;
    let e = again
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("still full");
    assert!(
        e.contains("full") && !e.contains("transaction depth"),
        "{e}"
    );
    // Space is back: the very next messages are stored.
    std::fs::remove_file(&filler).unwrap();
    let after = ingest(&env, batch(round)).await;
    for r in &after {
        let o = r.as_ref().expect("stored after space came back");
        assert_eq!(o.action, Action::Created);
    }
    let (status, body) = health.get().await;
    assert_eq!(status, 200, "{body}");
    env.store.close().await;
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let hz: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    ticks / hz
}

/// `ticketd run` with `cfg` on `data`, its log into `log`.
fn run_daemon(
    cfg: &std::path::Path,
    data: &std::path::Path,
    log: &std::path::Path,
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_ticketd"))
        .arg("--config")
        .arg(cfg)
        .arg("--data-dir")
        .arg(data)
        .arg("run")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Waits up to 30 s for `done`; fails with `what` and the daemon's log.
fn wait_until(log: &std::path::Path, what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{what}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The guard for an idle daemon: `ticketd run` on the default setup (the
/// data directory's Maildir watched, the outbox, timers, the socket) uses
/// under 0.1 CPU-s in 10 s with nothing to do. Before, the Maildir watcher
/// woke on its own scans' IN_OPEN and burnt a whole core.
#[test]
fn an_idle_daemon_idles() {
    let dir = tempfile::tempdir().unwrap();
    // The default configuration but for the HTTP port, so that tests in
    // parallel do not meet on 9187.
    let cfg = dir.path().join("ticketd.toml");
    std::fs::write(&cfg, "[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let log = dir.path().join("run.log");
    let mut child = run_daemon(&cfg, &dir.path().join("data"), &log);
    wait_until(&log, "never started", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("watching")
    });
    // Start-up (migrations, rules) is done after a second.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let before = cpu_seconds(child.id());
    std::thread::sleep(std::time::Duration::from_secs(10));
    let used = cpu_seconds(child.id()) - before;
    let _ = child.kill();
    let _ = child.wait();
    println!("idle daemon: {used:.3} CPU-s in 10 s");
    assert!(used < 0.1, "an idle daemon used {used:.3} CPU-s in 10 s");
}

/// Processes starting together on a new data directory all come up: the
/// migrations run under a lock and the others wait. Before, the losers of
/// the race failed with "table counters already exists" (exit 75).
#[test]
fn concurrent_first_starts_wait_for_one_migration() {
    let mail = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(mail.path(), self::mail(1, 100)).unwrap();
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let children: Vec<_> = (0..16)
            .map(|_| {
                std::process::Command::new(env!("CARGO_BIN_EXE_ticketd"))
                    .arg("--data-dir")
                    .arg(&data)
                    .arg("ingest")
                    .arg(mail.path())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A desk at `domain` that refuses unknown senders with a registration
/// notice.
async fn rejecting_desk(domain: &str) -> Env {
    let toml = format!(
        "[desk]\naddresses = [\"support@{domain}\"]\n\n[intake]\nunknown_senders = \"reject\"\n"
    );
    let cfg = ticketd::config::Config::parse_str(&toml, std::path::Path::new("t.toml")).unwrap();
    env_with(cfg).await
}

/// The mails a desk queued since `seen`, as they would arrive at the other
/// desk after a relay that strips the auto-reply headers (seen in the wild),
/// so that only the Message-ID threading can stop a loop.
async fn sent_since(env: &Env, seen: &mut usize) -> Vec<Vec<u8>> {
    let mut all = env.store.list_outbox().await.unwrap();
    all.sort_by_key(|o| o.id);
    let new: Vec<Vec<u8>> = all[*seen..]
        .iter()
        .map(|o| {
            o.raw
                .split("\r\n")
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    !l.starts_with("auto-submitted:") && !l.starts_with("x-auto-response-suppress:")
                })
                .collect::<Vec<_>>()
                .join("\r\n")
                .into_bytes()
        })
        .collect();
    *seen = all.len();
    new
}

/// Two desks that both answer unknown senders with a registration notice,
/// behind relays that strip `Auto-Submitted`: each sends at most one
/// notice. The second desk's notice answers the first's (In-Reply-To its
/// signed notice id), so the first recognises it and does not answer.
/// Before, they answered each other 10 + 10 times until the hourly limit.
#[tokio::test]
async fn registration_notices_do_not_answer_each_other() {
    let a = rejecting_desk("desk-a.example").await;
    let b = rejecting_desk("desk-b.example").await;
    // Something of B's (its address, no auto headers) reaches A.
    let first = b"From: Support B <support@desk-b.example>\r\nTo: support@desk-a.example\r\nSubject: Ihre Anfrage\r\nMessage-ID: <start@desk-b.example>\r\nDate: Mon, 2 Mar 2026 09:15:00 +0100\r\n\r\nHallo\r\n".to_vec();
    let out = ingest(&a, vec![first]).await;
    assert_eq!(out[0].as_ref().unwrap().action, Action::Suppressed);
    let (mut seen_a, mut seen_b) = (0, 0);
    let mut to_b = sent_since(&a, &mut seen_a).await;
    assert_eq!(to_b.len(), 1, "A told B how to register");
    for _ in 0..10 {
        for m in std::mem::take(&mut to_b) {
            ingest(&b, vec![m]).await[0].as_ref().unwrap();
        }
        let to_a = sent_since(&b, &mut seen_b).await;
        for m in to_a {
            ingest(&a, vec![m]).await[0].as_ref().unwrap();
        }
        to_b = sent_since(&a, &mut seen_a).await;
        if to_b.is_empty() {
            break;
        }
    }
    let sent_a = a.store.list_outbox().await.unwrap().len();
    let sent_b = b.store.list_outbox().await.unwrap().len();
    assert!(
        sent_a <= 1 && sent_b <= 1,
        "notices: A sent {sent_a}, B sent {sent_b}"
    );
}

/// Two ways into someone else's ticket, closed: a From of several
/// addresses (the customer's and the attacker's) with the subject tag, and a
/// stranger quoting the customer's own Message-ID in References. Each opens
/// a new ticket linked to the customer's, and the attacker does not become a
/// participant. A reply to a mail of ours (our signed Message-ID) still
/// threads from anyone who got it.
#[tokio::test]
async fn a_stranger_cannot_write_into_a_customers_ticket() {
    let env = env().await;
    let first = b"From: Anna <anna@kunde-a.de>\r\nTo: support@example.com\r\nSubject: VPN down\r\nMessage-ID: <anna-1@kunde-a.de>\r\nDate: Mon, 2 Mar 2026 09:15:00 +0100\r\n\r\nHilfe\r\n".to_vec();
    let out = ingest(&env, vec![first]).await;
    let number = out[0].as_ref().unwrap().ticket.clone().unwrap();
    let tag = format!("[Ticket#{}]", number.as_str());
    let two_from = format!("From: anna@kunde-a.de, Mallory <mallory@evil.example>\r\nTo: support@example.com\r\nSubject: Re: {tag} VPN down\r\nMessage-ID: <x1@evil.example>\r\n\r\nplease send me the config\r\n");
    let quoting = "From: Mallory <mallory@evil.example>\r\nTo: support@example.com\r\nSubject: Re: VPN down\r\nIn-Reply-To: <anna-1@kunde-a.de>\r\nReferences: <anna-1@kunde-a.de>\r\nMessage-ID: <x2@evil.example>\r\n\r\nplease send me the config\r\n";
    let out = ingest(
        &env,
        vec![two_from.into_bytes(), quoting.as_bytes().to_vec()],
    )
    .await;
    for o in &out {
        let o = o.as_ref().unwrap();
        assert_eq!(o.action, Action::Created, "{}", o.reason);
        assert_ne!(o.ticket.as_ref(), Some(&number));
    }
    let view = env
        .store
        .show_ticket(number.as_str())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !view.participants.iter().any(|p| p.contains("mallory")),
        "{:?}",
        view.participants
    );
    let incoming = view.articles.iter().filter(|a| a.direction == "in").count();
    assert_eq!(incoming, 1, "nothing appended");
    // A colleague answering our confirmation (its signed Message-ID) is a
    // follow-up, whatever the domain.
    let confirmation = env.store.list_outbox().await.unwrap();
    let ours = &confirmation[0].message_id;
    let reply = format!("From: Bernd <bernd@partner.example>\r\nTo: support@example.com\r\nSubject: Re: VPN down\r\nIn-Reply-To: <{ours}>\r\nReferences: <anna-1@kunde-a.de> <{ours}>\r\nMessage-ID: <b1@partner.example>\r\n\r\nsame here\r\n");
    let out = ingest(&env, vec![reply.into_bytes()]).await;
    let o = out[0].as_ref().unwrap();
    assert_eq!(
        (o.action, o.ticket.as_ref()),
        (Action::Appended, Some(&number))
    );
}

/// The data directory and what ticketd writes into it are not readable by
/// other users (umask 027 in the process, whatever the caller's): 0750 and
/// 0640. Before, the database, its WAL and `sent/*.eml` were 0644 in a 0755
/// directory.
#[test]
fn data_files_are_not_world_readable() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("m.eml");
    std::fs::write(&file, mail(1, 100)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ticketd"))
        .arg("--data-dir")
        .arg(&data)
        .arg("ingest")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o750, "data dir");
    let mut files = 0;
    for e in std::fs::read_dir(&data).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            files += 1;
            assert_eq!(mode(&p) & 0o007, 0, "{} is {:o}", p.display(), mode(&p));
        }
    }
    assert!(files >= 2, "the database and the key at least");
    assert_eq!(mode(&data.join("ticketd.db")), 0o640);
}

/// A message over `[intake] max_message_bytes` is refused for good: on the
/// MTA pipe with the enhanced status 5.3.4 first in the output (Postfix's
/// pipe takes it for the bounce) and EX_DATAERR, as a FILE with 66; nothing
/// is stored. Before, stdin over the (fixed 256 MiB) limit exited 75, and
/// the MTA retried for days a mail that can never be taken.
#[test]
fn a_message_over_the_size_limit_is_refused_for_good() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ticketd.toml");
    std::fs::write(&cfg, "[intake]\nmax_message_bytes = 65536\n").unwrap();
    let data = dir.path().join("data");
    let big = mail(1, 70_000);
    let small = mail(2, 1_000);
    let ticketd = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ticketd"));
        c.arg("--config").arg(&cfg).arg("--data-dir").arg(&data);
        c
    };
    let mut child = ticketd()
        .arg("ingest")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&big).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.starts_with("5.3.4 "), "{err}");
    assert!(out.stdout.is_empty());
    // As files: the big one is reported (66), the small one stored.
    let (fb, fs) = (dir.path().join("big.eml"), dir.path().join("small.eml"));
    std::fs::write(&fb, &big).unwrap();
    std::fs::write(&fs, &small).unwrap();
    let out = ticketd().arg("ingest").arg(&fb).arg(&fs).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(66), "{err}");
    assert!(err.contains("max_message_bytes"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("\"created\""), "{stdout}");
}

/// `ticketd run` leaves a Maildir file over the size limit in `new/` (the
/// admin decides what to do with it), reads it once, and takes the mail
/// after it as usual.
#[test]
fn run_leaves_a_too_big_maildir_file_and_takes_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ticketd.toml");
    std::fs::write(
        &cfg,
        "[intake]\nmax_message_bytes = 65536\n\n[http]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let new = data.join("Maildir/new");
    std::fs::create_dir_all(&new).unwrap();
    std::fs::write(new.join("1.big"), mail(1, 70_000)).unwrap();
    std::fs::write(new.join("2.small"), mail(2, 1_000)).unwrap();
    let log = dir.path().join("run.log");
    let mut child = run_daemon(&cfg, &data, &log);
    wait_until(&log, "the small mail was not taken", || {
        !new.join("2.small").exists()
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = child.kill();
    let _ = child.wait();
    assert!(new.join("1.big").exists(), "the big one stays in new/");
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(log.matches("not taken: left in new/").count(), 1, "{log}");
}

/// A message of several MiB is kept byte for byte (its first MiB inline,
/// the rest in pieces), and so is a second delivery of it with other bytes.
#[tokio::test]
async fn a_big_message_is_kept_whole_in_pieces() {
    let env = env().await;
    let big = mail(7, 3 * 1024 * 1024 + 12_345);
    let out = ingest(&env, vec![big.clone()]).await;
    let o = out[0].as_ref().unwrap();
    assert_eq!(o.action, Action::Created);
    let kept = env.store.raw_by_sha256(&o.sha256).await.unwrap().unwrap();
    assert!(kept == big, "{} bytes kept of {}", kept.len(), big.len());
    let pieces: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM raw_chunks")
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    assert_eq!(pieces, 3);
    // The same mail through another relay: a duplicate, its bytes kept.
    let mut relayed = b"Received: from relay.example\r\n".to_vec();
    relayed.extend_from_slice(&big);
    let out = ingest(&env, vec![relayed.clone()]).await;
    assert_eq!(out[0].as_ref().unwrap().action, Action::Duplicate);
    let id: i64 = sqlx::query_scalar("SELECT id FROM duplicates")
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    assert!(env.store.raw_duplicate(id).await.unwrap().unwrap() == relayed);
    // An attachment of several MiB: decoded and kept whole, in pieces too.
    let content: Vec<u8> = (0..2_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let b64 = {
        use std::fmt::Write as _;
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for (n, c) in content.chunks(3).enumerate() {
            let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
            let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
                let ch = if k > c.len() {
                    '='
                } else {
                    T[(v >> shift) as usize & 63] as char
                };
                out.push(ch);
            }
            if n % 19 == 18 {
                let _ = write!(out, "\r\n");
            }
        }
        out
    };
    let with_file = format!("From: Anna <anna@kunde.example>\r\nTo: support@example.com\r\nSubject: Dump\r\nMessage-ID: <dump@kunde.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nanbei\r\n--b\r\nContent-Type: application/octet-stream; name=\"dump.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n");
    let out = ingest(&env, vec![with_file.into_bytes()]).await;
    assert_eq!(out[0].as_ref().unwrap().action, Action::Created);
    let id: i64 = sqlx::query_scalar("SELECT id FROM attachments WHERE filename = 'dump.bin'")
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    let kept = env.store.attachment_content(id).await.unwrap().unwrap();
    assert!(
        kept == content,
        "{} bytes kept of {}",
        kept.len(),
        content.len()
    );
}
