//! The hand-over socket between the MTA pipe and the running daemon.
//!
//! `ticketd ingest` run by an MTA for one message would otherwise pay, per
//! mail, for opening the database, reading the key and compiling the rules.
//! When `ticketd run` is up it listens on `<data_dir>/ingest.sock`; `ingest`
//! then only reads stdin, writes the message to the socket, closes its
//! writing half and waits for one line: the outcome JSON, written by the
//! daemon after the commit, or `{"error": "..."}`. Like RT's rt-mailgate
//! posting to the running RT. Without a daemon, `ingest` stores the message
//! itself; when the daemon dies mid-way it does the same (the dedupe key
//! makes a second store of a committed message a harmless duplicate).
//!
//! The message is preceded by one line [`ARRIVAL_HEADER`]` <RFC 3339>`: the
//! instant `ingest` started reading it, the message's arrival. The daemon
//! takes that line off; a hand-over without it (an `ingest` from before the
//! line existed) arrives when the daemon accepts it. The line is a header
//! field, so a daemon from before keeps it as one harmless trace header.

use crate::metrics::Metrics;
use crate::outbound::Wake;
use crate::service::{Incoming, Intake, Outcome};
use crate::store::Store;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// The socket's file name inside the data directory.
pub const SOCKET_FILE: &str = "ingest.sock";

/// The field name of the line that carries the message's arrival ahead of
/// it on the socket.
pub const ARRIVAL_HEADER: &str = "X-Ticketd-Arrival:";

/// What the daemon answered.
#[derive(Debug)]
pub enum Handed {
    /// Stored: the outcome line, as `ingest` prints it.
    Stored(String),
    /// The daemon could not store it (exit 75).
    Failed(String),
    /// No daemon, or it went away before answering: store it here.
    NoDaemon,
}

/// Client side: hands one message that arrived at `arrived` (when `ingest`
/// started reading it) to a running daemon, if there is one.
pub fn hand_over(
    data_dir: &Path,
    raw: &[u8],
    arrived: jiff::Timestamp,
    timeout: Duration,
) -> Handed {
    // Empty input is stored (quarantined) by the caller itself: to the
    // daemon, a connection that sends nothing is a probe, not a message.
    if raw.is_empty() {
        return Handed::NoDaemon;
    }
    let path = data_dir.join(SOCKET_FILE);
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(&path) else {
        return Handed::NoDaemon;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let arrival = format!("{ARRIVAL_HEADER} {}\n", crate::store::ts(arrived));
    if s.write_all(arrival.as_bytes()).is_err()
        || s.write_all(raw).is_err()
        || s.shutdown(std::net::Shutdown::Write).is_err()
    {
        return Handed::NoDaemon;
    }
    let mut reply = String::new();
    if s.take(1 << 20).read_to_string(&mut reply).is_err() || reply.trim().is_empty() {
        return Handed::NoDaemon;
    }
    let line = reply.trim().to_string();
    match serde_json::from_str::<serde_json::Value>(&line) {
        Ok(v) if v.get("action").is_some() => Handed::Stored(line),
        Ok(v) => Handed::Failed(
            v.get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("the daemon did not store the message")
                .to_string(),
        ),
        Err(_) => Handed::Failed(format!("unexpected answer from the daemon: {line}")),
    }
}

/// Daemon side, first step: binds the socket (inside a runtime), so the
/// daemon can report ready only once `ingest` can hand over.
pub fn listen(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    // A socket file left by a crashed daemon is removed; one a live daemon
    // answers on is not ours to take.
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{} is served by another ticketd", path.display()),
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    tracing::info!(socket = %path.display(), "accepting hand-overs from ingest");
    Ok(listener)
}

/// Daemon side: accepts hand-overs on the socket [`listen`] bound at `path`
/// until shutdown, then removes the socket file. With `metrics`, each
/// message's decision and latency (accept to commit) are recorded as source
/// `pipe`.
pub async fn serve(
    listener: tokio::net::UnixListener,
    path: PathBuf,
    intake: Arc<Intake>,
    store: Store,
    wake_outbox: Arc<Wake>,
    metrics: Option<Arc<Metrics>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let arrived = Instant::now();
                let accepted = jiff::Timestamp::now();
                let (intake, store, wake, metrics) =
                    (intake.clone(), store.clone(), wake_outbox.clone(), metrics.clone());
                conns.spawn(async move {
                    if let Err(e) = handle(stream, &intake, &store, &wake, metrics.as_deref(), arrived, accepted).await {
                        tracing::warn!(error = %e, "hand-over connection failed");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    // Finish the messages in hand; take no new ones.
    drop(listener);
    let _ = std::fs::remove_file(&path);
    while conns.join_next().await.is_some() {}
}

async fn handle(
    mut stream: tokio::net::UnixStream,
    intake: &Intake,
    store: &Store,
    wake: &Wake,
    metrics: Option<&Metrics>,
    arrived: Instant,
    accepted: jiff::Timestamp,
) -> std::io::Result<()> {
    let mut raw = Vec::new();
    let limit = super::MAX_MESSAGE_BYTES;
    // The arrival line and the message.
    (&mut stream)
        .take(limit + 1 + ARRIVAL_LINE_MAX as u64)
        .read_to_end(&mut raw)
        .await?;
    let started = take_arrival(&mut raw);
    if raw.is_empty() {
        // A probe (a second `run` checking whether this one is up, a
        // monitoring check), never a message: `hand_over` sends none empty.
        return Ok(());
    }
    let reply = if raw.len() as u64 > limit {
        error_line(&format!("message larger than {limit} bytes"))
    } else {
        let item = Incoming {
            raw,
            source: "pipe".into(),
            arrived: Some(started.unwrap_or(accepted)),
        };
        match intake
            .ingest_batch(store, std::slice::from_ref(&item), jiff::Timestamp::now())
            .await
            .pop()
        {
            Some(Ok(outcome)) => {
                wake.notify_one();
                if let Some(m) = metrics {
                    m.message_decided("pipe", outcome.action.as_str());
                    m.ingest_latency("pipe", arrived.elapsed());
                }
                outcome_line(&outcome)
            }
            Some(Err(e)) => error_line(&e.to_string()),
            None => error_line("no result"),
        }
    };
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

/// The longest arrival line taken off a hand-over.
const ARRIVAL_LINE_MAX: usize = 80;

/// Takes the arrival line off the front of a hand-over and returns its
/// instant; a hand-over without one is left as it is.
fn take_arrival(raw: &mut Vec<u8>) -> Option<jiff::Timestamp> {
    if !raw.starts_with(ARRIVAL_HEADER.as_bytes()) {
        return None;
    }
    let end = raw
        .iter()
        .take(ARRIVAL_LINE_MAX)
        .position(|b| *b == b'\n')?;
    let at = std::str::from_utf8(&raw[ARRIVAL_HEADER.len()..end])
        .ok()
        .and_then(|v| v.trim().parse().ok());
    raw.drain(..=end);
    at
}

fn outcome_line(o: &Outcome) -> String {
    serde_json::to_string(o)
        .map(|s| s + "\n")
        .unwrap_or_else(|e| error_line(&e.to_string()))
}

fn error_line(e: &str) -> String {
    serde_json::json!({ "error": e }).to_string() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arrival_line_is_taken_off_and_a_message_without_one_kept_whole() {
        let mut raw =
            b"X-Ticketd-Arrival: 2026-12-03T07:13:48.250Z\nFrom: a@b.example\n\nx\n".to_vec();
        assert_eq!(
            take_arrival(&mut raw),
            Some("2026-12-03T07:13:48.250Z".parse().unwrap())
        );
        assert_eq!(raw, b"From: a@b.example\n\nx\n");
        // From an `ingest` without the line: all of it is the message.
        let mut old = b"From: a@b.example\n\nx\n".to_vec();
        assert_eq!(take_arrival(&mut old), None);
        assert_eq!(old, b"From: a@b.example\n\nx\n");
        // A garbled value is no arrival, and the line still not the message.
        let mut bad = b"X-Ticketd-Arrival: soon\r\nFrom: a@b.example\n\nx\n".to_vec();
        assert_eq!(take_arrival(&mut bad), None);
        assert_eq!(bad, b"From: a@b.example\n\nx\n");
    }
}
