//! Plain types shared by every layer: ticket numbers, severities, statuses,
//! the decision a message gets, and mail addresses.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What happens to mail from a sender no customer organisation knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSenders {
    /// A ticket like any other.
    #[default]
    Accept,
    /// A ticket, marked `unverified` for staff.
    Unverified,
    /// No ticket (the message is stored): a polite mail says how to
    /// register.
    Reject,
}

/// A ticket's public number (prefix + digits), as staff read it on the phone
/// and as it appears in the subject tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(transparent)]
pub struct TicketNumber(pub String);

impl TicketNumber {
    /// Builds the number from the configured prefix and the sequence value.
    pub fn from_sequence(prefix: &str, seq: i64) -> Self {
        TicketNumber(format!("{prefix}{seq}"))
    }
    /// The number as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TicketNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Message-ID without angle brackets, trimmed; compared exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub String);

impl MessageId {
    /// Normalises a Message-ID as found in a header: trims blanks and angle
    /// brackets; `None` when nothing useful is left.
    pub fn parse(raw: &str) -> Option<Self> {
        let t = raw
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .trim();
        if t.is_empty() || t.len() > 998 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            None
        } else {
            Some(MessageId(t.to_string()))
        }
    }
    /// The id as text, without brackets.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The id in angle brackets, as it is written in a header.
    pub fn bracketed(&self) -> String {
        format!("<{}>", self.0)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Severity of a ticket, as the seed documents define it (1 is the worst).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Severity {
    /// 1 — Ausfall eines geschäftskritischen Systems (business-critical outage).
    Critical = 1,
    /// 2 — Defektes Produktionssystem (production system degraded).
    Production = 2,
    /// 3 — Systemstörung (malfunction, platform still usable).
    Malfunction = 3,
    /// 4 — Allgemeine Beratung (general question).
    Question = 4,
}

impl Severity {
    /// The severity's number, 1–4.
    pub fn level(self) -> u8 {
        self as u8
    }
    /// The English label of the severity.
    pub fn label_en(self) -> &'static str {
        match self {
            Severity::Critical => "business-critical outage",
            Severity::Production => "production system degraded",
            Severity::Malfunction => "malfunction",
            Severity::Question => "general question",
        }
    }
    /// The German label of the severity, as in the seed documents.
    pub fn label_de(self) -> &'static str {
        match self {
            Severity::Critical => "Ausfall eines geschäftskritischen Systems",
            Severity::Production => "Defektes Produktionssystem",
            Severity::Malfunction => "Systemstörung",
            Severity::Question => "Allgemeine Beratung",
        }
    }
}

impl TryFrom<u8> for Severity {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(Severity::Critical),
            2 => Ok(Severity::Production),
            3 => Ok(Severity::Malfunction),
            4 => Ok(Severity::Question),
            other => Err(format!("severity must be 1–4, not {other}")),
        }
    }
}

impl TryFrom<i64> for Severity {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        u8::try_from(v)
            .map_err(|_| format!("severity must be 1–4, not {v}"))
            .and_then(Severity::try_from)
    }
}

impl From<Severity> for u8 {
    fn from(s: Severity) -> u8 {
        s.level()
    }
}

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, nobody has worked on it yet.
    New,
    /// Being worked on, or the customer wrote again.
    Open,
    /// Waiting for the customer.
    Pending,
    /// Solved; a customer reply re-opens it.
    Resolved,
    /// Finished for good; a customer reply still re-opens it.
    Closed,
}

impl Status {
    /// The status as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Open => "open",
            Status::Pending => "pending",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }
    /// Reads a stored status; unknown text is treated as open.
    pub fn parse(s: &str) -> Status {
        match s {
            "new" => Status::New,
            "pending" => Status::Pending,
            "resolved" => Status::Resolved,
            "closed" => Status::Closed,
            _ => Status::Open,
        }
    }
}

/// What happened to a message: the `action` of `ticketd ingest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A new ticket was opened.
    Created,
    /// The message became an article on an existing ticket.
    Appended,
    /// The same message was stored before.
    Duplicate,
    /// Stored, but neither a ticket nor an article (auto-reply, bounce without
    /// a ticket, our own mail coming back).
    Suppressed,
    /// Could not be parsed; stored raw with the reason.
    Quarantined,
    /// Not a support request by a route rule: forwarded and/or answered
    /// with a template, no ticket.
    Routed,
    /// Dropped by an ignore rule: stored, no ticket, no mail.
    Ignored,
}

impl Action {
    /// The action as printed and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Appended => "appended",
            Action::Duplicate => "duplicate",
            Action::Suppressed => "suppressed",
            Action::Quarantined => "quarantined",
            Action::Routed => "routed",
            Action::Ignored => "ignored",
        }
    }
}

/// A mailbox with an optional display name; the address is lower-cased in
/// its domain part for comparisons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    /// Display name, decoded, without CR/LF.
    pub name: Option<String>,
    /// The address (`local@domain`), trimmed.
    pub address: String,
}

impl Mailbox {
    /// The address in the form used for comparisons (lower case).
    pub fn key(&self) -> String {
        self.address.to_ascii_lowercase()
    }
    /// The domain part, lower-cased; empty when the address has none.
    pub fn domain(&self) -> String {
        domain_of(&self.address)
    }
}

/// The lower-cased domain of an address; empty when there is none.
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim().trim_end_matches('>').to_ascii_lowercase())
        .unwrap_or_default()
}

/// Removes CR, LF and other control characters so text taken from a mail can
/// never start a new header line; runs of whitespace become one space.
pub fn header_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last_space = false;
    for c in s.chars() {
        if c.is_control() || c.is_whitespace() {
            if !last_space && !out.is_empty() {
                out.push(' ');
            }
            last_space = true;
        } else {
            out.push(c);
            last_space = false;
        }
    }
    out.trim_end().to_string()
}

/// The event kind a status change is recorded as; the SLA clock reads
/// these (waiting pauses it, resumed/reopened resume it, resolved/closed
/// stop it).
pub fn status_event(from: Status, to: Status) -> &'static str {
    match (from, to) {
        (_, Status::Pending) => "waiting",
        (Status::Pending, Status::Open | Status::New) => "resumed",
        (Status::Resolved | Status::Closed, Status::Open | Status::New) => "reopened",
        (_, Status::Resolved) => "resolved",
        (_, Status::Closed) => "closed",
        _ => "status",
    }
}

/// The detail of a `severity` event: `from N to M by WHO`, read back by
/// [`severity_change`].
pub fn severity_detail(from: Severity, to: Severity, author: &str) -> String {
    format!("from {} to {} by {author}", from.level(), to.level())
}

/// The two severities of a `severity` event's detail (`from N to M by
/// WHO`, as staff actions write it); the SLA clock reads its history from
/// these.
pub fn severity_change(detail: &str) -> Option<(Severity, Severity)> {
    let rest = detail.strip_prefix("from ")?;
    let (from, rest) = rest.split_once(" to ")?;
    let to = rest.split_whitespace().next()?;
    let level = |t: &str| {
        t.parse::<u8>()
            .ok()
            .and_then(|v| Severity::try_from(v).ok())
    };
    Some((level(from)?, level(to)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_details_read_back() {
        let d = severity_detail(Severity::Malfunction, Severity::Critical, "cli:anna");
        assert_eq!(
            severity_change(&d),
            Some((Severity::Malfunction, Severity::Critical))
        );
        assert_eq!(severity_change("from 9 to 1"), None);
        assert_eq!(severity_change("garbage"), None);
    }

    #[test]
    fn status_changes_have_clock_events() {
        assert_eq!(status_event(Status::Open, Status::Pending), "waiting");
        assert_eq!(status_event(Status::Pending, Status::Open), "resumed");
        assert_eq!(status_event(Status::Resolved, Status::Open), "reopened");
        assert_eq!(status_event(Status::Closed, Status::Open), "reopened");
        assert_eq!(status_event(Status::Open, Status::Resolved), "resolved");
        assert_eq!(status_event(Status::Resolved, Status::Closed), "closed");
    }

    #[test]
    fn message_id_normalises_brackets() {
        assert_eq!(MessageId::parse(" <a@b> ").unwrap().as_str(), "a@b");
        assert!(MessageId::parse("<>").is_none());
        assert!(MessageId::parse("a b@c").is_none());
    }

    #[test]
    fn header_safe_strips_line_breaks() {
        assert_eq!(header_safe("Hi\r\nBcc: x@y"), "Hi Bcc: x@y");
        assert_eq!(header_safe("a\t\tb\n"), "a b");
    }

    #[test]
    fn severity_round_trip() {
        for n in 1u8..=4 {
            assert_eq!(Severity::try_from(n).unwrap().level(), n);
        }
        assert!(Severity::try_from(5u8).is_err());
    }
}
