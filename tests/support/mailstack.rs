//! A real mail stack for integration tests: Dovecot (IMAP, IMAPS, LMTP) and
//! Postfix (SMTP with STARTTLS, submission and SMTPS with AUTH), started by
//! `scripts/mailstack.sh` on free loopback ports in a temporary directory.
//!
//! Include it from a test file with `#[path]` (not `mod support;`: a test
//! file then needs no `tests/support/mod.rs`, and this file is no test
//! target of its own):
//!
//! ```ignore
//! #[path = "support/mailstack.rs"]
//! mod mailstack;
//! use mailstack::{MailStack, ALICE, SUPPORT};
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn mail_arrives() {
//!     let stack = MailStack::start(); // ~1 s; `Drop` stops it, removes the dir
//!     stack.send(ALICE, SUPPORT, ("Subject", "body")).await;
//!     stack.wait_for_count(SUPPORT, "INBOX", 1, Duration::from_secs(10)).await;
//! }
//! ```
//!
//! Each `MailStack` has its own ports and state dir, so tests that start
//! one each run in parallel safely. Every address at example.test and
//! customer.test is a mailbox (created on first use; [`SUPPORT`], [`ALERTS`],
//! [`ALICE`], [`BOB`] are the usual ones); the login is the full address,
//! the password [`PASSWORD`]. Postfix accepts mail for those two domains
//! from 127.0.0.1 without AUTH and relays nothing else; it retries deferred
//! mail every second, and `start_imap` flushes its queue.
//!
//! The API, all panicking with context unless named `try_*`:
//! - `start()`, `start_with_oauth2(introspection_url)` (XOAUTH2 and
//!   OAUTHBEARER too, tokens checked by RFC 7662 introspection at that
//!   URL), `stop_imap()`/`start_imap()` (Dovecot only, ~1.2 s /
//!   ~0.1 s), `stop_smtp()`/`start_smtp()` (Postfix only, ~0.1 s each),
//!   `kick(user)` (closes the user's IMAP sessions server-side);
//! - `host()`, `imap_port()`, `imaps_port()`, `lmtp_port()`, `smtp_port()`,
//!   `submission_port()`, `smtps_port()`, `ca_cert_path()`/`ca_cert_pem()`,
//!   `tls_server_name()` ("localhost"), `password()`, `state_dir()`,
//!   `setting(KEY)` (everything `mailstack.sh up` printed);
//! - SMTP: `send(from, to, raw_bytes | (subject, body))`, `send_many`,
//!   `try_send` (returns [`SendError`]); lettre transports `smtp()`,
//!   `smtp_starttls()`, `submission(user)`, `smtps(user)` for
//!   [`send_with`] or for the code under test;
//! - IMAP: `imap(user)`/`try_imap(user)` (plain session), `imaps(user)`,
//!   `tls_client_config()` (rustls, ring, trusting only the test CA),
//!   `append(user, folder, raw)`, `append_many` (2,000 mails of 3 KB in
//!   ~2.5 s), `create_folder`, `fetch_all(user, folder)` (`BODY.PEEK[]`, in
//!   mailbox order), `count(user, folder)` (0 for a missing folder),
//!   `wait_for_count(user, folder, n, timeout)` (rides over Dovecot
//!   restarts); the free functions `login`, `count_in`, `fetch_all_in`
//!   work on any session.
//!
//! Needs root (the servers do) and the Debian packages, which the script
//! installs on first use (`scripts/mailstack.sh install`, about 40 s).
//! `MAILSTACK_KEEP=1` keeps the state dir (logs, maildirs) after the test;
//! `MAILSTACK_TMPDIR` puts it elsewhere than /tmp (keep the path short and
//! reachable by the `mail` user). When a test fails, the end of both
//! servers' logs is printed. If the test process is killed, the stack goes
//! down by itself within a second or two (the script's owner watcher).
//!
//! Blocking calls: `start`, `stop_*`, `start_*` and `Drop` run the script
//! and wait for it. On a multi-thread tokio runtime they use
//! `block_in_place`, so other tasks (a daemon under test running
//! in-process) keep running meanwhile; on a current-thread runtime they
//! block it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_imap::Session;
use futures_util::TryStreamExt;
use lettre::address::{Address, Envelope};
use lettre::message::{header::ContentType, Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types::pem::PemObject, pki_types::CertificateDer};

pub const SUPPORT: &str = "support@example.test";
pub const ALERTS: &str = "alerts@example.test";
pub const ALICE: &str = "alice@customer.test";
pub const BOB: &str = "bob@customer.test";
/// The password of every mailbox (with the suite's secret marker, see
/// tests/support/kept_logs.rs).
pub const PASSWORD: &str = "tdsecret-mailbox-password";
pub const HOST: &str = "127.0.0.1";
/// The name the test certificate is valid for (also `127.0.0.1`).
pub const TLS_SERVER_NAME: &str = "localhost";

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mailstack.sh");
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A plain IMAP session (loopback, no TLS).
pub type ImapSession = Session<TcpStream>;
/// An IMAPS session (implicit TLS with the stack's CA).
pub type ImapsSession = Session<TlsStream<TcpStream>>;

/// What [`MailStack::send`] sends: a raw RFC 5322 message, or a text mail
/// built from `(subject, body)`.
pub enum Outgoing {
    Raw(Vec<u8>),
    Text { subject: String, body: String },
}

impl From<&[u8]> for Outgoing {
    fn from(raw: &[u8]) -> Self {
        Outgoing::Raw(raw.to_vec())
    }
}
impl<const N: usize> From<&[u8; N]> for Outgoing {
    fn from(raw: &[u8; N]) -> Self {
        Outgoing::Raw(raw.to_vec())
    }
}
impl From<Vec<u8>> for Outgoing {
    fn from(raw: Vec<u8>) -> Self {
        Outgoing::Raw(raw)
    }
}
impl From<&Vec<u8>> for Outgoing {
    fn from(raw: &Vec<u8>) -> Self {
        Outgoing::Raw(raw.clone())
    }
}
impl<S: Into<String>, B: Into<String>> From<(S, B)> for Outgoing {
    fn from((subject, body): (S, B)) -> Self {
        Outgoing::Text {
            subject: subject.into(),
            body: body.into(),
        }
    }
}

pub struct MailStack {
    /// `None` once kept (`MAILSTACK_KEEP=1`).
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    settings: BTreeMap<String, String>,
}

impl MailStack {
    /// Starts Dovecot and Postfix on free loopback ports in a new temporary
    /// directory (installing the packages first if they are missing).
    /// Panics with the script's output when that fails.
    pub fn start() -> MailStack {
        MailStack::start_with(&[])
    }

    /// A stack whose Dovecot (IMAP, and through its SASL Postfix's
    /// submission and SMTPS) also takes XOAUTH2 and OAUTHBEARER logins,
    /// checking each token at `introspection_url` (RFC 7662, form POST
    /// `token=…`; the user must be the `username` it answers).
    pub fn start_with_oauth2(introspection_url: &str) -> MailStack {
        MailStack::start_with(&[("OAUTH2_INTROSPECTION_URL", introspection_url)])
    }

    /// [`MailStack::start`] with settings for `mailstack.sh up` (e.g.
    /// `IMAP_CAPABILITY`, `OAUTH2_INTROSPECTION_URL`).
    pub fn start_with(env: &[(&str, &str)]) -> MailStack {
        let base = std::env::var_os("MAILSTACK_TMPDIR").unwrap_or_else(|| "/tmp".into());
        let dir = tempfile::Builder::new()
            .prefix("mailstack-")
            .tempdir_in(&base)
            .expect("create the mail stack state dir");
        let path = dir.path().to_path_buf();
        let mut last_error = String::new();
        // A port found free can be taken by someone else before the servers
        // bind it: then take new ports and try again.
        for attempt in 1..=3 {
            let ports = free_ports(6);
            let mut cmd = Command::new("bash");
            cmd.arg(SCRIPT).arg("up").arg(&path);
            for (key, port) in [
                "IMAP_PORT",
                "IMAPS_PORT",
                "LMTP_PORT",
                "SMTP_PORT",
                "SUBMISSION_PORT",
                "SMTPS_PORT",
            ]
            .iter()
            .zip(&ports)
            {
                cmd.env(key, port.to_string());
            }
            cmd.env_remove("MAIL_DOMAINS")
                .env_remove("MAIL_PASSWORD")
                .env_remove("IMAP_CAPABILITY")
                .env_remove("OAUTH2_INTROSPECTION_URL")
                .env("MAIL_PASSWORD", PASSWORD);
            for (k, v) in env {
                cmd.env(k, v);
            }
            // the stack goes down by itself if this test process is killed
            cmd.env("MAILSTACK_OWNER_PID", std::process::id().to_string());
            cmd.env("MAILSTACK_OWNER_RM", "1");
            let out = blocking(|| run(&mut cmd));
            if out.status.success() {
                let settings = parse_settings(&String::from_utf8_lossy(&out.stdout));
                let stack = MailStack {
                    dir: Some(dir),
                    path,
                    settings,
                };
                for key in ["IMAP_PORT", "SMTP_PORT", "TLS_CA"] {
                    assert!(
                        stack.settings.contains_key(key),
                        "mailstack.sh up printed no {key}"
                    );
                }
                return stack;
            }
            last_error = format!(
                "attempt {attempt}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = blocking(|| run(Command::new("bash").arg(SCRIPT).arg("down").arg(&path)));
            if !last_error.contains("in use") && !last_error.contains("not listening") {
                break;
            }
        }
        panic!("could not start the mail stack ({SCRIPT} up):\n{last_error}");
    }

    /// A value the script printed (`IMAP_PORT`, `TLS_CA`, `DOVECOT_LOG`, …).
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }
    pub fn settings(&self) -> &BTreeMap<String, String> {
        &self.settings
    }
    fn port(&self, key: &str) -> u16 {
        self.setting(key)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no {key} from mailstack.sh"))
    }
    pub fn host(&self) -> &str {
        HOST
    }
    /// Plain IMAP (no STARTTLS needed on loopback).
    pub fn imap_port(&self) -> u16 {
        self.port("IMAP_PORT")
    }
    /// IMAP over implicit TLS.
    pub fn imaps_port(&self) -> u16 {
        self.port("IMAPS_PORT")
    }
    /// Dovecot's LMTP, which Postfix delivers to.
    pub fn lmtp_port(&self) -> u16 {
        self.port("LMTP_PORT")
    }
    /// SMTP without AUTH for the two test domains; STARTTLS offered.
    pub fn smtp_port(&self) -> u16 {
        self.port("SMTP_PORT")
    }
    /// Submission: STARTTLS and AUTH required.
    pub fn submission_port(&self) -> u16 {
        self.port("SUBMISSION_PORT")
    }
    /// SMTP over implicit TLS, AUTH required.
    pub fn smtps_port(&self) -> u16 {
        self.port("SMTPS_PORT")
    }
    /// The PEM file of the CA that signed the servers' certificate.
    pub fn ca_cert_path(&self) -> PathBuf {
        PathBuf::from(self.setting("TLS_CA").expect("TLS_CA"))
    }
    pub fn ca_cert_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_cert_path()).expect("read the test CA")
    }
    pub fn tls_server_name(&self) -> &str {
        TLS_SERVER_NAME
    }
    pub fn password(&self) -> &str {
        self.setting("MAIL_PASSWORD").unwrap_or(PASSWORD)
    }
    pub fn state_dir(&self) -> &Path {
        &self.path
    }

    /// Stops Dovecot (IMAP, IMAPS and LMTP are closed when this returns;
    /// Postfix then keeps incoming mail queued).
    pub fn stop_imap(&self) {
        self.script("stop-imap");
    }
    /// Starts Dovecot again with the same state and flushes Postfix's queue.
    pub fn start_imap(&self) {
        self.script("start-imap");
    }
    /// Stops Postfix (the SMTP ports are closed when this returns).
    pub fn stop_smtp(&self) {
        self.script("stop-smtp");
    }
    pub fn start_smtp(&self) {
        self.script("start-smtp");
    }

    /// Closes `user`'s IMAP sessions from the server side (`doveadm
    /// kick`), as a provider does when a token expires. Stopping Dovecot
    /// would not: its running sessions outlive the master.
    pub fn kick(&self, user: &str) {
        self.script_with("kick", &[user]);
    }

    fn script(&self, command: &str) {
        self.script_with(command, &[]);
    }

    fn script_with(&self, command: &str, args: &[&str]) {
        let out = blocking(|| {
            run(Command::new("bash")
                .arg(SCRIPT)
                .arg(command)
                .arg(&self.path)
                .args(args))
        });
        assert!(
            out.status.success(),
            "mailstack.sh {command} failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // --- SMTP ----------------------------------------------------------

    /// A transport for plain SMTP to Postfix (no TLS, no AUTH).
    pub fn smtp(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(HOST)
            .port(self.smtp_port())
            .timeout(Some(IO_TIMEOUT))
            .build()
    }

    /// TLS parameters that trust only the stack's CA.
    pub fn smtp_tls_parameters(&self) -> TlsParameters {
        let ca = Certificate::from_pem(&self.ca_cert_pem()).expect("parse the test CA");
        TlsParameters::builder(TLS_SERVER_NAME.to_string())
            .add_root_certificate(ca)
            .build_rustls()
            .expect("TLS parameters")
    }

    /// SMTP with STARTTLS required on the SMTP port, no AUTH.
    pub fn smtp_starttls(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(HOST)
            .port(self.smtp_port())
            .tls(Tls::Required(self.smtp_tls_parameters()))
            .timeout(Some(IO_TIMEOUT))
            .build()
    }

    /// The submission port: STARTTLS, then AUTH as `user`.
    pub fn submission(&self, user: &str) -> AsyncSmtpTransport<Tokio1Executor> {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(HOST)
            .port(self.submission_port())
            .tls(Tls::Required(self.smtp_tls_parameters()))
            .credentials(Credentials::new(user.into(), self.password().into()))
            .timeout(Some(IO_TIMEOUT))
            .build()
    }

    /// The SMTPS port: implicit TLS, then AUTH as `user`.
    pub fn smtps(&self, user: &str) -> AsyncSmtpTransport<Tokio1Executor> {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(HOST)
            .port(self.smtps_port())
            .tls(Tls::Wrapper(self.smtp_tls_parameters()))
            .credentials(Credentials::new(user.into(), self.password().into()))
            .timeout(Some(IO_TIMEOUT))
            .build()
    }

    /// Sends a mail by plain SMTP to Postfix; panics when it is refused.
    /// `mail` is raw bytes (sent as they are) or `(subject, body)`.
    pub async fn send(&self, from: &str, to: &str, mail: impl Into<Outgoing>) {
        if let Err(e) = self.try_send(from, to, mail).await {
            panic!("SMTP {from} -> {to} failed: {e}");
        }
    }

    /// [`send`](Self::send) that returns the error (Postfix stopped, a
    /// recipient refused, …).
    pub async fn try_send(
        &self,
        from: &str,
        to: &str,
        mail: impl Into<Outgoing>,
    ) -> Result<(), SendError> {
        self.try_send_many(from, to, [mail]).await.map(|_| ())
    }

    /// Sends many mails over one SMTP connection (~3 ms each); panics on
    /// the first refusal. Returns how many were sent.
    pub async fn send_many<I>(&self, from: &str, to: &str, mails: I) -> usize
    where
        I: IntoIterator,
        I::Item: Into<Outgoing>,
    {
        match self.try_send_many(from, to, mails).await {
            Ok(n) => n,
            Err(e) => panic!("SMTP {from} -> {to} failed: {e}"),
        }
    }

    /// Plain SMTP through lettre's connection API on a socket with
    /// TCP_NODELAY: lettre writes a message and its final `.` in two
    /// writes, which on a plain transport costs ~40 ms a mail (Nagle's
    /// algorithm waiting for the server's delayed ACK).
    pub async fn try_send_many<I>(&self, from: &str, to: &str, mails: I) -> Result<usize, SendError>
    where
        I: IntoIterator,
        I::Item: Into<Outgoing>,
    {
        let connect = TcpStream::connect((HOST, self.smtp_port()));
        let tcp = tokio::time::timeout(IO_TIMEOUT, connect)
            .await
            .map_err(|_| SendError::Connect(std::io::ErrorKind::TimedOut.into()))?
            .map_err(SendError::Connect)?;
        tcp.set_nodelay(true).map_err(SendError::Connect)?;
        let client_id = ClientId::Domain("client.customer.test".into());
        let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &client_id)
            .await
            .map_err(SendError::Smtp)?;
        let envelope = envelope(from, to);
        let mut n = 0;
        for mail in mails {
            let raw = match mail.into() {
                Outgoing::Raw(raw) => raw,
                text => text.into_message(from, to).formatted(),
            };
            conn.send(&envelope, &raw).await.map_err(SendError::Smtp)?;
            n += 1;
        }
        let _ = conn.quit().await;
        Ok(n)
    }

    // --- IMAP ----------------------------------------------------------

    /// A plain IMAP session logged in as `user`.
    pub async fn imap(&self, user: &str) -> ImapSession {
        match self.try_imap(user).await {
            Ok(s) => s,
            Err(e) => panic!("IMAP login as {user} failed: {e}"),
        }
    }

    pub async fn try_imap(&self, user: &str) -> Result<ImapSession, async_imap::error::Error> {
        let connect = TcpStream::connect((HOST, self.imap_port()));
        let tcp = tokio::time::timeout(IO_TIMEOUT, connect)
            .await
            .map_err(|_| timed_out("IMAP connect"))??;
        // async-imap writes an APPEND literal and its CRLF separately:
        // without NODELAY each APPEND waits for a delayed ACK
        tcp.set_nodelay(true)?;
        login(tcp, user, self.password()).await
    }

    /// A rustls client configuration (ring) that trusts only the stack's CA.
    pub fn tls_client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.ca_cert_path()).expect("read the test CA") {
            roots
                .add(cert.expect("parse the test CA"))
                .expect("add the test CA");
        }
        // explicit provider: no panic if aws-lc-rs ever gets enabled too
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// An IMAPS session (implicit TLS, certificate checked against the
    /// stack's CA for `localhost`) logged in as `user`.
    pub async fn imaps(&self, user: &str) -> ImapsSession {
        let connector = tokio_rustls::TlsConnector::from(self.tls_client_config());
        let name = rustls::pki_types::ServerName::try_from(TLS_SERVER_NAME).unwrap();
        let tls = async {
            let tcp = TcpStream::connect((HOST, self.imaps_port())).await?;
            tcp.set_nodelay(true)?;
            connector.connect(name, tcp).await
        };
        let tls = tokio::time::timeout(IO_TIMEOUT, tls)
            .await
            .expect("IMAPS connect timed out")
            .expect("IMAPS connect / TLS handshake");
        match login(tls, user, self.password()).await {
            Ok(s) => s,
            Err(e) => panic!("IMAPS login as {user} failed: {e}"),
        }
    }

    /// Puts one message into `user`'s `folder` (created if missing).
    pub async fn append(&self, user: &str, folder: &str, raw: impl AsRef<[u8]>) {
        self.append_many(user, folder, [raw]).await;
    }

    /// Puts many messages into `folder` (created if missing), in order;
    /// returns how many. The fast way to fill a mailbox: MULTIAPPEND
    /// (RFC 3502) with LITERAL+, 500 messages a command, because Dovecot
    /// takes ~5 ms for each single APPEND (one maildir transaction each),
    /// which makes 2,000 mails 10 s instead of under one.
    pub async fn append_many<I>(&self, user: &str, folder: &str, messages: I) -> usize
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let messages: Vec<I::Item> = messages.into_iter().collect();
        {
            let mut s = self.imap(user).await;
            ensure_folder(&mut s, folder).await;
            let _ = s.logout().await;
        }
        let mut imap = RawImap::login(self, user).await;
        for (k, chunk) in messages.chunks(500).enumerate() {
            let mut command = format!("m{k} APPEND {}", quote(folder)).into_bytes();
            for raw in chunk {
                let raw = raw.as_ref();
                command.extend_from_slice(format!(" {{{}+}}\r\n", raw.len()).as_bytes());
                command.extend_from_slice(raw);
            }
            command.extend_from_slice(b"\r\n");
            let reply = imap.command(&format!("m{k}"), &command).await;
            assert!(
                reply.starts_with(&format!("m{k} OK")),
                "APPEND to {user}/{folder} failed: {reply}"
            );
        }
        imap.logout().await;
        messages.len()
    }

    /// Creates `folder` for `user` if it does not exist.
    pub async fn create_folder(&self, user: &str, folder: &str) {
        let mut s = self.imap(user).await;
        ensure_folder(&mut s, folder).await;
        let _ = s.logout().await;
    }

    /// Every message in `folder`, in mailbox order, fetched with
    /// `BODY.PEEK[]` (flags such as \Seen stay as they are).
    pub async fn fetch_all(&self, user: &str, folder: &str) -> Vec<Vec<u8>> {
        let mut s = self.imap(user).await;
        let all = fetch_all_in(&mut s, folder)
            .await
            .unwrap_or_else(|e| panic!("FETCH {user}/{folder} failed: {e}"));
        let _ = s.logout().await;
        all
    }

    /// How many messages `folder` holds (0 if it does not exist).
    pub async fn count(&self, user: &str, folder: &str) -> u32 {
        let mut s = self.imap(user).await;
        let n = count_in(&mut s, folder)
            .await
            .unwrap_or_else(|e| panic!("STATUS {user}/{folder} failed: {e}"));
        let _ = s.logout().await;
        n
    }

    /// Waits until `folder` holds at least `n` messages and returns the
    /// count; panics after `timeout`. Connection errors (Dovecot being
    /// restarted) are retried until then.
    pub async fn wait_for_count(&self, user: &str, folder: &str, n: u32, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        let mut session: Option<ImapSession> = None;
        let mut last = String::from("no answer yet");
        loop {
            if session.is_none() {
                match self.try_imap(user).await {
                    Ok(s) => session = Some(s),
                    Err(e) => last = format!("login: {e}"),
                }
            }
            if let Some(s) = session.as_mut() {
                match count_in(s, folder).await {
                    Ok(c) if c >= n => {
                        let _ = s.logout().await;
                        return c;
                    }
                    Ok(c) => last = format!("{c} messages"),
                    Err(e) => {
                        last = format!("STATUS: {e}");
                        session = None;
                    }
                }
            }
            if Instant::now() >= deadline {
                panic!("{user}/{folder}: waited {timeout:?} for {n} messages, last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for MailStack {
    fn drop(&mut self) {
        let keep = std::env::var_os("MAILSTACK_KEEP").is_some_and(|v| v == "1");
        // the state is deleted right after: no need for the ~2 s graceful
        // `down`, SIGKILL (`kill`) is enough
        let command = if keep { "down" } else { "kill" };
        let out = blocking(|| {
            run(Command::new("bash")
                .arg(SCRIPT)
                .arg(command)
                .arg(&self.path))
        });
        if !out.status.success() {
            eprintln!(
                "mailstack.sh {command} {}: {}\n{}",
                self.path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if std::thread::panicking() {
            for key in ["DOVECOT_LOG", "POSTFIX_LOG"] {
                if let Some(log) = self.setting(key) {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = &lines[lines.len().saturating_sub(40)..];
                    eprintln!("--- last lines of {log}\n{}", tail.join("\n"));
                }
            }
        }
        if keep {
            if let Some(dir) = self.dir.take() {
                eprintln!("MAILSTACK_KEEP=1: kept {}", dir.keep().display());
            }
        }
    }
}

// --- helpers usable with any session (plain or TLS) -------------------

/// Reads the greeting (`Client::new` does not) and logs in.
pub async fn login<T>(
    stream: T,
    user: &str,
    password: &str,
) -> Result<Session<T>, async_imap::error::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Debug + Send,
{
    let mut client = async_imap::Client::new(stream);
    let greeting = tokio::time::timeout(IO_TIMEOUT, client.read_response())
        .await
        .map_err(|_| timed_out("IMAP greeting"))??;
    if greeting.is_none() {
        return Err(async_imap::error::Error::ConnectionLost);
    }
    tokio::time::timeout(IO_TIMEOUT, client.login(user, password))
        .await
        .map_err(|_| timed_out("IMAP login"))?
        .map_err(|(e, _)| e)
}

/// STATUS (MESSAGES); a folder that does not exist counts 0.
pub async fn count_in<T>(s: &mut Session<T>, folder: &str) -> Result<u32, async_imap::error::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Debug + Send,
{
    match s.status(folder, "(MESSAGES)").await {
        Ok(mailbox) => Ok(mailbox.exists),
        Err(async_imap::error::Error::No(_)) => Ok(0),
        Err(e) => Err(e),
    }
}

/// EXAMINE (read-only) and FETCH 1:* BODY.PEEK[], the stream drained.
pub async fn fetch_all_in<T>(
    s: &mut Session<T>,
    folder: &str,
) -> Result<Vec<Vec<u8>>, async_imap::error::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Debug + Send,
{
    let mailbox = s.examine(folder).await?;
    if mailbox.exists == 0 {
        return Ok(Vec::new());
    }
    let fetches: Vec<_> = s.fetch("1:*", "BODY.PEEK[]").await?.try_collect().await?;
    let mut all: Vec<(u32, Vec<u8>)> = fetches
        .iter()
        .filter_map(|f| f.body().map(|b| (f.message, b.to_vec())))
        .collect();
    all.sort_by_key(|(seq, _)| *seq);
    Ok(all.into_iter().map(|(_, body)| body).collect())
}

pub async fn ensure_folder<T>(s: &mut Session<T>, folder: &str)
where
    T: AsyncRead + AsyncWrite + Unpin + Debug + Send,
{
    if !folder.eq_ignore_ascii_case("INBOX") {
        // NO [ALREADYEXISTS] when it is there: fine
        let _ = s.create(folder).await;
    }
}

/// Sends `mail` from `from` to `to` over `transport` (one of
/// [`MailStack::smtp_starttls`], [`MailStack::submission`], …).
pub async fn send_with(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    from: &str,
    to: &str,
    mail: Outgoing,
) -> Result<(), lettre::transport::smtp::Error> {
    match mail {
        Outgoing::Raw(raw) => transport
            .send_raw(&envelope(from, to), &raw)
            .await
            .map(|_| ()),
        text => transport
            .send(text.into_message(from, to))
            .await
            .map(|_| ()),
    }
}

impl Outgoing {
    /// The lettre message (a raw one is parsed by nobody: use it as bytes).
    fn into_message(self, from: &str, to: &str) -> Message {
        match self {
            Outgoing::Text { subject, body } => Message::builder()
                .from(from.parse::<Mailbox>().expect("sender address"))
                .to(to.parse::<Mailbox>().expect("recipient address"))
                .subject(subject)
                .message_id(None)
                .header(ContentType::TEXT_PLAIN)
                .body(body)
                .expect("build the message"),
            Outgoing::Raw(_) => unreachable!("raw mail is sent as it is"),
        }
    }
}

fn envelope(from: &str, to: &str) -> Envelope {
    let from: Address = from.parse().expect("sender address");
    let to: Address = to.parse().expect("recipient address");
    Envelope::new(Some(from), vec![to]).expect("envelope")
}

/// Why [`MailStack::try_send`] failed.
#[derive(Debug)]
pub enum SendError {
    /// No TCP connection (Postfix stopped).
    Connect(std::io::Error),
    /// The SMTP dialogue failed or the server refused (4xx/5xx).
    Smtp(lettre::transport::smtp::Error),
}

impl SendError {
    /// A 5xx reply (e.g. relaying refused).
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Smtp(e) if e.is_permanent())
    }
    /// A 4xx reply.
    pub fn is_transient(&self) -> bool {
        matches!(self, SendError::Smtp(e) if e.is_transient())
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Smtp(e) => write!(f, "SMTP: {e}"),
        }
    }
}

impl std::error::Error for SendError {}

// --- internals ---------------------------------------------------------

/// A minimal line-based IMAP client for what async-imap cannot do
/// (MULTIAPPEND with LITERAL+): commands whose replies are status lines.
struct RawImap {
    reader: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl RawImap {
    async fn login(stack: &MailStack, user: &str) -> RawImap {
        let tcp = TcpStream::connect((HOST, stack.imap_port()))
            .await
            .expect("IMAP connect");
        tcp.set_nodelay(true).unwrap();
        let (r, w) = tcp.into_split();
        let mut imap = RawImap {
            reader: tokio::io::BufReader::new(r),
            writer: w,
        };
        let greeting = imap.line().await;
        assert!(greeting.starts_with("* OK"), "IMAP greeting: {greeting}");
        let login = format!("l LOGIN {} {}\r\n", quote(user), quote(stack.password()));
        let reply = imap.command("l", login.as_bytes()).await;
        assert!(reply.starts_with("l OK"), "IMAP login as {user}: {reply}");
        let caps = imap.command("c", b"c CAPABILITY\r\n").await;
        assert!(
            caps.contains("LITERAL+") && caps.contains("MULTIAPPEND"),
            "{caps}"
        );
        imap
    }

    async fn line(&mut self) -> String {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        let n = tokio::time::timeout(IO_TIMEOUT, self.reader.read_line(&mut line))
            .await
            .expect("IMAP reply timed out")
            .expect("read an IMAP reply");
        assert!(n > 0, "IMAP connection closed");
        line
    }

    /// Sends `command`, returns the untagged lines and then the tagged one.
    async fn command(&mut self, tag: &str, command: &[u8]) -> String {
        use tokio::io::AsyncWriteExt;
        self.writer
            .write_all(command)
            .await
            .expect("write an IMAP command");
        let mut reply = String::new();
        loop {
            let line = self.line().await;
            let tagged = line.starts_with(&format!("{tag} "));
            if tagged {
                return line + &reply;
            }
            reply.push_str(&line);
        }
    }

    async fn logout(mut self) {
        self.command("z", b"z LOGOUT\r\n").await;
    }
}

/// An IMAP quoted string.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn timed_out(what: &str) -> async_imap::error::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out")).into()
}

/// `n` distinct loopback ports that were free a moment ago.
fn free_ports(n: usize) -> Vec<u16> {
    // all listeners held at once, so the kernel hands out distinct ports
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((HOST, 0)).expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn parse_settings(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {SCRIPT}: {e}"))
}

/// Runs blocking work without stalling a multi-thread tokio runtime.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
