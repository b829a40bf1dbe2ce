//! The service manager's side of `ticketd run` under `Type=notify`:
//! `READY=1` once the daemon takes mail, `STOPPING=1` when it stops,
//! `RELOADING=1` around a SIGHUP reload and `WATCHDOG=1` while its main loop
//! turns. Without `$NOTIFY_SOCKET` (not under systemd) every call does
//! nothing; a message that cannot be sent is logged and otherwise ignored:
//! systemd's own time-outs then say what is wrong.

use sd_notify::NotifyState;
use std::time::Duration;

fn send(what: &str, states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot tell systemd {what}");
    }
}

/// The daemon has started: migrations done, rules and templates loaded,
/// every source listening. `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send(
        "READY=1",
        &[NotifyState::Ready, NotifyState::Status(status)],
    );
}

/// The daemon is stopping (finishing the messages in hand).
pub fn stopping() {
    send(
        "STOPPING=1",
        &[NotifyState::Stopping, NotifyState::Status("stopping")],
    );
}

/// A reload (SIGHUP) has begun; [`ready`] ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        // systemd 253 and newer want the monotonic time with RELOADING=1.
        Ok(now) => send("RELOADING=1", &[NotifyState::Reloading, now]),
        Err(e) => tracing::warn!(error = %e, "no monotonic clock for RELOADING=1"),
    }
}

/// The daemon is alive (for `WatchdogSec=`).
pub fn watchdog() {
    send("WATCHDOG=1", &[NotifyState::Watchdog]);
}

/// How often to send [`watchdog`]: half of `$WATCHDOG_USEC` when systemd
/// asks for it (and `$WATCHDOG_PID`, if set, is this process), else `None`.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .map(|timeout| timeout / 2)
        .filter(|half| !half.is_zero())
}
