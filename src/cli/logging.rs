//! Logging: `TICKETD_LOG` directives, text or JSON on stderr, and caps
//! no directive can lift, so credentials never reach the log.

use super::args::Command;
use ticketd::config::Config;

pub fn init_logging(cfg: &Config, cmd: &Command) {
    let default = match cmd {
        Command::Run => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TICKETD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal, not in journald or files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = cfg.log.format.as_deref() == Some("json");
    // Also takes the `log` records of async-imap and rustls (tracing-log).
    tracing_subscriber::util::SubscriberInitExt::init(subscriber(
        filter,
        json,
        ansi,
        std::io::stderr,
    ));
}

/// The subscriber: `filter` (from `TICKETD_LOG`), and on top of it the
/// caps of [`ticketd::credential::log_caps`], which no directive can lift
/// (both must let an event through).
fn subscriber<W>(
    filter: tracing_subscriber::EnvFilter,
    json: bool,
    ansi: bool,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    let caps = ticketd::credential::log_caps();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(caps)
        .with(fmt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn no_directive_lets_the_imap_and_smtp_credentials_into_the_log() {
        for directives in [
            "trace",
            "ticketd=trace,async_imap=trace,lettre=trace",
            "ticketd=trace,async_imap::imap_stream=trace,lettre::transport=trace",
            "[session]=trace",
        ] {
            for json in [false, true] {
                let buf = Buffer::default();
                let sub = subscriber(
                    tracing_subscriber::EnvFilter::new(directives),
                    json,
                    false,
                    buf.clone(),
                );
                tracing::subscriber::with_default(sub, || {
                    let span = tracing::info_span!("session");
                    let _in = span.enter();
                    // What async-imap (through tracing-log) and lettre write.
                    tracing::trace!(
                        target: "async_imap::imap_stream",
                        "encode: input: Some(\"A0001\"), Ok(\"LOGIN \\\"u\\\" \\\"hunter2\\\"\")"
                    );
                    tracing::debug!(
                        target: "lettre::transport::smtp::client::async_connection",
                        "Wrote: AUTH PLAIN AHUAaHVudGVyMg==\\r\\n"
                    );
                    tracing::warn!(target: "lettre::transport::smtp", "pool: no connection");
                    tracing::trace!(target: "ticketd::sources::imap", "IMAP round");
                });
                let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
                assert!(
                    !out.contains("hunter2") && !out.contains("AHUAaHVudGVyMg"),
                    "{directives}: {out}"
                );
                // The rest is as asked.
                assert!(out.contains("IMAP round"), "{directives}: {out}");
                assert!(out.contains("no connection"), "{directives}: {out}");
            }
        }
    }
}
