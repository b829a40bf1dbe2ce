//! ticketd — the support-desk daemon.
//!
//! Every message (an MTA pipe, a Maildir, later IMAP and Discord) goes the same
//! way: raw bytes → [`ingest`] (pure: parse, guard, thread, classify, decide) →
//! [`store`] (one transaction: raw message, ticket or article, attachments,
//! audit event, outbox rows) → acknowledge the source. Everything outbound is a
//! row in the outbox that [`outbound`] delivers.
//!
//! Modules:
//! - [`domain`]: plain types shared by everything (ticket numbers, severities, …).
//! - [`chat`]: staff commands from chat, parsed (pure).
//! - [`config`]: the TOML configuration with its defaults and validation.
//! - [`customers`]: the customer directory (organisations, contacts, plans).
//! - [`ingest`]: the pure pipeline; no I/O, `now` is an argument.
//! - [`sla`]: service levels, pure: policies, business-hours calendars with
//!   German holidays, the clock, its evaluation into states, reminder rows
//!   and what fires, cron schedules.
//! - [`keys`]: the MAC key that signs our outgoing Message-IDs.
//! - [`plan`]: the plain values that cross the store's seam: what it found
//!   for a message, what the pipeline computed for it to write.
//! - [`store`]: the database (SQLite now; the seam for PostgreSQL).
//! - [`outbound`]: templates, building outgoing mail, the outbox worker.
//! - [`sources`]: stdin, Maildir, IMAP and hand-over intake.
//! - [`service`]: what the commands do, wiring the layers together; staff
//!   actions, and the timer task's read → decide and render → write.
//! - [`metrics`]: the daemon's counters, latency histogram and mailbox freshness.
//! - [`oauth`]: OAuth 2.0 access tokens for IMAP/SMTP (XOAUTH2): cached,
//!   refreshed once, rotation stored; `ticketd auth login`.
//! - [`http`]: `/healthz` and `/metrics` of `ticketd run`.
//! - [`systemd`]: readiness, watchdog and stop notices for `Type=notify`.
//! - [`daemon`]: `ticketd run`: the sources and the outbox worker until a signal.
#![forbid(unsafe_code)]

pub mod chat;
pub mod config;
pub mod credential;
pub mod customers;
pub mod daemon;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod outbound;
pub mod plan;
pub mod service;
pub mod sla;
pub mod sources;
pub mod store;
pub mod systemd;
