//! The command line as clap reads it: the global options and every
//! command with its arguments (their doc comments are the `--help` text).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "ticketd",
    version,
    about = "Support-desk daemon: mail in, tickets and confirmations out"
)]
pub struct Cli {
    /// Configuration file (TOML); without one every default applies.
    #[arg(long, global = true, env = "TICKETD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: database, outbox files, Message-ID key.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Store one message from stdin, or each FILE; prints one JSON line per
    /// message. Exit 0 when all are stored, 75 when one could not be.
    Ingest {
        /// Store in this process even when `ticketd run` is listening on
        /// the data directory's hand-over socket.
        #[arg(long)]
        direct: bool,
        /// Message files; stdin when none.
        files: Vec<PathBuf>,
    },
    /// Tickets.
    Tickets {
        #[command(subcommand)]
        cmd: TicketsCmd,
    },
    /// Outgoing mail.
    Outbox {
        #[command(subcommand)]
        cmd: OutboxCmd,
    },
    /// Messages that could not be parsed.
    Quarantine {
        #[command(subcommand)]
        cmd: QuarantineCmd,
    },
    /// Show the severity the rules give a message.
    Classify {
        /// Print every matching rule and the text that matched.
        #[arg(long)]
        explain: bool,
        /// The mailbox the message came in by, for rules that match on it
        /// (an `[[imap]]` mailbox's name, `pipe`, `maildir`, `stdin`).
        #[arg(long)]
        mailbox: Option<String>,
        /// The message file.
        file: PathBuf,
    },
    /// Run the daemon: Maildir intake and outbox delivery until SIGTERM.
    Run,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration, rules and templates (offline); with
    /// --connect also log in to every IMAP mailbox, list every Graph
    /// mailbox's folder, reach the SMTP relay and Discord, one line per
    /// check.
    CheckConfig {
        /// Also log in to every IMAP mailbox (and select its folder), list
        /// every Graph mailbox's folder, reach the SMTP relay and Discord;
        /// exit 1 when one fails.
        #[arg(long)]
        connect: bool,
    },
    /// The customer directory.
    Customers {
        #[command(subcommand)]
        cmd: CustomersCmd,
    },
    /// Service levels.
    Sla {
        #[command(subcommand)]
        cmd: SlaCmd,
    },
    /// OAuth 2.0 grants of the mailboxes and the SMTP relay
    /// (`auth = "oauth2"`).
    Auth {
        #[command(subcommand)]
        cmd: AuthCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuthCmd {
    /// Each OAuth account: flow, whether a grant is stored, the access
    /// token's expiry, the last refresh and the last error (never a token).
    Status,
    /// Get a grant for NAME (an IMAP mailbox's name, or `smtp`): device
    /// code flow: shows a URL and a code to enter in any browser, then
    /// waits; client credentials: fetches one token to prove the setup.
    /// Safe while `run` is running: it picks the new grant up.
    Login {
        /// The mailbox's name (as in `auth status`) or `smtp`.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SlaCmd {
    /// How each due time of a ticket was computed: the policy and why,
    /// the calendar, pauses, holidays and closed periods skipped.
    Explain {
        /// The ticket number.
        number: String,
    },
    /// Open tickets by SLA state, and the breached or soon due ones.
    Status {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CustomersCmd {
    /// Organisations with plan, domains and contacts.
    List {
        /// JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Adds the organisations of a CSV file (header row: id, name, plan,
    /// domains, contacts, …) to the directory as NAME.toml.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Name of the TOML file written (default: the CSV file's name).
        #[arg(long)]
        name: Option<String>,
        /// Replace an existing NAME.toml.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TicketsCmd {
    /// Tickets, newest first (at most --limit).
    List {
        /// JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Only tickets with this status (new, open, pending, resolved,
        /// closed); repeat or separate by commas for several.
        #[arg(long, value_delimiter = ',')]
        status: Vec<String>,
        /// Only tickets of this severity (1–4); repeat or separate by
        /// commas for several.
        #[arg(long, value_delimiter = ',')]
        severity: Vec<u8>,
        /// Only tickets of this organisation (its directory id).
        #[arg(long)]
        organisation: Option<String>,
        /// Only tickets created since: a date (`2026-12-01`, midnight in
        /// the desk's time zone), a date and time (`2026-12-01T14:00`,
        /// desk time zone, or with an offset), or a duration back from
        /// now (`90m`, `24h`, `7d`, `2w`).
        #[arg(long)]
        since: Option<String>,
        /// At most this many tickets, 1 to 1,000,000 (default: 100 in
        /// the table, all with --json).
        #[arg(long)]
        limit: Option<i64>,
    },
    /// Writes an attachment's exact bytes to stdout or FILE.
    Attachment {
        /// The ticket number.
        number: String,
        /// The attachment's id, as `tickets show` lists it.
        id: i64,
        /// Write to FILE instead of stdout (never over an existing file
        /// without --force).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite FILE when it exists.
        #[arg(long)]
        force: bool,
    },
    /// Writes the original mail of the ticket's first article (or of
    /// ARTICLE), byte for byte, to stdout or FILE.
    Raw {
        /// The ticket number.
        number: String,
        /// The article's id, as `tickets show` lists it (default: the
        /// message that opened the ticket).
        article: Option<i64>,
        /// Write to FILE instead of stdout (never over an existing file
        /// without --force).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite FILE when it exists.
        #[arg(long)]
        force: bool,
    },
    /// One ticket with its articles and SLA.
    Show {
        /// The ticket number.
        number: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Mail a reply to the requester (text from --text, else stdin),
    /// threaded on the ticket; it counts as the staff response.
    Reply {
        /// The ticket number.
        number: String,
        /// The reply's text (default: read from stdin).
        #[arg(long)]
        text: Option<String>,
        /// Then wait for the customer (status pending: the SLA clock
        /// pauses).
        #[arg(long)]
        pending: bool,
        /// Copy the reply to this address too (repeatable).
        #[arg(long, value_name = "ADDR")]
        cc: Vec<String>,
        /// The staff member's name: the reply is sent as `NAME (desk
        /// name)` and signed so (default: the desk's name alone).
        #[arg(long, value_name = "NAME")]
        from_name: Option<String>,
        /// Who replies, as recorded on the ticket (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
    /// Set the status: open, pending (waiting for the customer), resolved,
    /// closed.
    Status {
        /// The ticket number.
        number: String,
        /// The new status.
        status: String,
        /// Who does it (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
    /// Set the severity, 1–4 (SLA due times are recomputed from receipt).
    Severity {
        /// The ticket number.
        number: String,
        /// The new severity.
        severity: u8,
        /// Who does it (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
    /// Add an internal note (never mailed).
    Note {
        /// The ticket number.
        number: String,
        /// The note.
        text: String,
        /// Who writes it (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
    /// Give a ticket to a staff member (shown in `list mine` in Discord
    /// when it is `discord:USER_ID`).
    Assign {
        /// The ticket number.
        number: String,
        /// Who gets it: a name, or `discord:USER_ID`.
        assignee: String,
        /// Who does it (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum OutboxCmd {
    /// Outgoing mail, oldest first, with its state and next attempt.
    List {
        /// JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Makes a failed, cancelled or waiting mail due now (a running
    /// daemon sends it within its poll interval).
    Retry {
        /// The outbox row's id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every failed mail and every mail waiting for a later attempt.
        #[arg(long)]
        all: bool,
        /// Who does it (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
    /// Cancels a queued or failed mail: it is never sent and stays listed
    /// as cancelled.
    Cancel {
        /// The outbox row's id.
        id: i64,
        /// Who does it (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum QuarantineCmd {
    /// Quarantined messages, newest first: id, time, size, source, reason.
    List {
        /// JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One quarantined message: why, and its header (or its raw bytes).
    Show {
        /// The message's id.
        id: i64,
        /// Write the raw bytes, exactly as received, instead.
        #[arg(long)]
        raw: bool,
    },
    /// Runs a quarantined message through the intake again (after a fix);
    /// prints the outcome like `ingest`.
    Release {
        /// The message's id.
        id: i64,
        /// Who does it (default: $USER).
        #[arg(long = "as")]
        author: Option<String>,
    },
}
