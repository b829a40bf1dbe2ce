//! Keeps what a test's daemon or CLI wrote to its log for the suite-wide
//! secret check: when `TICKETD_TEST_LOGS` names a directory (scripts/test.sh
//! sets it), [`keep`] writes the text there; after `cargo test` the script
//! fails if any kept log holds a secret the tests configured. Every client
//! secret and token of the tests carries [`MARKER`] (the fake identity
//! provider's tokens, the client secrets, the mailbox password), and private
//! keys are PEM (`-----BEGIN … PRIVATE KEY-----`), so one `grep` finds any
//! of them in any log of the suite.
//!
//! ```ignore
//! #[path = "support/kept_logs.rs"]
//! mod kept_logs;
//! kept_logs::keep("xoauth2-run", &log_text);
//! ```

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

/// What every secret the tests configure contains.
pub const MARKER: &str = "tdsecret";

/// A client secret for a test: `name` with the [`MARKER`].
pub fn secret(name: &str) -> String {
    format!("{MARKER}-{name}")
}

/// Writes `text` (a log, a command's output) to `$TICKETD_TEST_LOGS` as
/// `<name>-<pid>-<n>.log`; nothing when the variable is unset.
pub fn keep(name: &str, text: &str) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let Some(dir) = std::env::var_os("TICKETD_TEST_LOGS") else {
        return;
    };
    let n = N.fetch_add(1, Ordering::Relaxed);
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = std::path::Path::new(&dir).join(format!("{safe}-{}-{n}.log", std::process::id()));
    if let Err(e) = std::fs::write(&path, text) {
        panic!("cannot keep the log in {}: {e}", path.display());
    }
}

/// Panics naming the line when `text` holds a configured secret (the
/// [`MARKER`] or a PEM private key's armour), the check scripts/test.sh makes over
/// every kept log, made here too so a single test run tells at once.
pub fn assert_no_secret(what: &str, text: &str) {
    for (i, line) in text.lines().enumerate() {
        let pem_key = line.contains("-----BEGIN") && line.contains("PRIVATE KEY-----");
        assert!(
            !line.contains(MARKER) && !pem_key,
            "{what}: line {} holds a secret the test configured",
            i + 1
        );
    }
}
