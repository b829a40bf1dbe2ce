//! The Discord intake channel as a source: a customer's message there is
//! turned into an RFC 5322 message and taken through the same pipeline as
//! mail — stored raw first, deduplicated by Message-ID, classified,
//! threaded, confirmed. Pure: the chat adapter brings what it received.
//!
//! Addresses: a Discord member writes as `u<USER ID>@discord.invalid`, a
//! member with a staff role as `u<USER ID>@staff.discord.invalid` (the desk
//! counts that domain as staff while the intake channel is configured).
//! `.invalid` can never be a real mail domain (RFC 2606): mail the
//! pipeline queues for such an address is posted into the customer's
//! Discord thread instead (the outbox worker diverts it).
//!
//! Message-IDs are `<MESSAGE ID@discord.invalid>`. A thread started from a
//! message has that message's id, so a reply in the thread is written as
//! `In-Reply-To: <THREAD ID@discord.invalid>`: the ticket's first
//! message, and ordinary threading by reference finds the ticket.

use lettre::message::{header, Mailbox, Message};
use std::time::SystemTime;

/// The domain of Discord members' addresses.
pub const CUSTOMER_DOMAIN: &str = "discord.invalid";
/// The domain of Discord members with a staff role.
pub const STAFF_DOMAIN: &str = "staff.discord.invalid";

/// Whether `address` stands for a Discord member rather than a mailbox.
pub fn is_discord_address(address: &str) -> bool {
    let a = address.trim().trim_end_matches('>').to_ascii_lowercase();
    a.ends_with(&format!("@{CUSTOMER_DOMAIN}")) || a.ends_with(&format!("@{STAFF_DOMAIN}"))
}

/// The address a Discord member writes as.
pub fn address(user: u64, staff: bool) -> String {
    let domain = if staff { STAFF_DOMAIN } else { CUSTOMER_DOMAIN };
    format!("u{user}@{domain}")
}

/// The user id of a Discord member's address.
pub fn user_of(address: &str) -> Option<u64> {
    if !is_discord_address(address) {
        return None;
    }
    let local = address.trim().split('@').next()?;
    local.strip_prefix('u')?.parse().ok()
}

/// The Message-ID (with angle brackets) of a Discord message.
pub fn message_id(message: u64) -> String {
    format!("<{message}@{CUSTOMER_DOMAIN}>")
}

/// A message received in the intake channel or one of its threads.
#[derive(Debug, Clone)]
pub struct ChatMessage<'a> {
    /// The message's id.
    pub id: u64,
    /// The channel (or thread) it was posted in.
    pub channel: u64,
    /// The thread it is in, when it is a reply in a ticket's thread.
    pub thread: Option<u64>,
    /// The author's user id.
    pub author: u64,
    /// The author's display name.
    pub author_name: &'a str,
    /// Whether the author has a staff role.
    pub staff: bool,
    /// What they wrote.
    pub content: &'a str,
    /// Attachments: file name and address (the files stay on Discord).
    pub attachments: Vec<(&'a str, &'a str)>,
    /// When Discord received it.
    pub sent: jiff::Timestamp,
    /// To whom: the desk's address for a customer; the ticket's requester
    /// for a staff member answering in the thread (already addressed, so
    /// the desk does not relay it a second time).
    pub to: &'a str,
    /// The subject: a reply's is its ticket's; a new message's is its
    /// first line.
    pub subject: Option<&'a str>,
}

/// The subject a new message's ticket gets: its first non-empty line, at
/// most 100 characters.
pub fn subject_of(content: &str) -> String {
    let line = content
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(Discord message)");
    crate::chat::notify::clip(line, 100)
}

/// The message as mail bytes. Errors only for addresses lettre refuses
/// (the desk address from the configuration).
pub fn to_mail(m: &ChatMessage<'_>) -> Result<Vec<u8>, String> {
    let from = Mailbox::new(
        Some(m.author_name.to_string()).filter(|n| !n.trim().is_empty()),
        address(m.author, m.staff)
            .parse()
            .map_err(|e| format!("author address: {e}"))?,
    );
    let to: Mailbox =
        m.to.parse()
            .map_err(|e| format!("address {:?}: {e}", m.to))?;
    let subject = match (m.subject, m.thread) {
        (Some(s), Some(_)) if !s.to_ascii_lowercase().starts_with("re:") => format!("Re: {s}"),
        (Some(s), _) => s.to_string(),
        (None, _) => subject_of(m.content),
    };
    let mut body = m.content.replace("\r\n", "\n");
    if !m.attachments.is_empty() {
        body.push_str("\n\n");
        for (name, url) in &m.attachments {
            body.push_str(&format!("Attachment (on Discord): {name} <{url}>\n"));
        }
    }
    if body.trim().is_empty() {
        body = "(no text)".to_string();
    }
    plain_mail(
        &PlainMail {
            from,
            to,
            subject: &subject,
            id: m.id,
            answers: m.thread,
            sent: m.sent,
            headers: &[
                ("X-Discord-Channel", m.channel.to_string()),
                ("X-Discord-Author", m.author.to_string()),
            ],
        },
        body,
    )
}

/// A plain-text mail made from something said in Discord.
pub struct PlainMail<'a> {
    /// Who said it.
    pub from: Mailbox,
    /// To whom.
    pub to: Mailbox,
    /// Subject.
    pub subject: &'a str,
    /// The Discord message (or interaction) it came from: its Message-ID.
    pub id: u64,
    /// The Discord message it answers (In-Reply-To, References).
    pub answers: Option<u64>,
    /// When.
    pub sent: jiff::Timestamp,
    /// Headers of ticketd's own, before the mail's (`X-Ticketd-Source:
    /// discord` always).
    pub headers: &'a [(&'a str, String)],
}

/// The bytes of `m` with `body`, as the pipeline stores them.
pub fn plain_mail(m: &PlainMail<'_>, body: String) -> Result<Vec<u8>, String> {
    let mut b = Message::builder()
        .from(m.from.clone())
        .to(m.to.clone())
        .subject(m.subject)
        .message_id(Some(message_id(m.id)))
        .date(SystemTime::from(m.sent))
        .header(header::ContentType::TEXT_PLAIN)
        .header(header::ContentTransferEncoding::QuotedPrintable);
    if let Some(t) = m.answers {
        b = b.in_reply_to(message_id(t)).references(message_id(t));
    }
    let msg = b
        .body(body)
        .map_err(|e| format!("cannot build the message: {e}"))?;
    let mut raw = b"X-Ticketd-Source: discord\r\n".to_vec();
    for (name, value) in m.headers {
        raw.extend_from_slice(
            format!("{name}: {}\r\n", crate::domain::header_safe(value)).as_bytes(),
        );
    }
    raw.extend_from_slice(&msg.formatted());
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(content: &'a str) -> ChatMessage<'a> {
        ChatMessage {
            id: 1_100_000_000_000_000_001,
            channel: 500,
            thread: None,
            author: 77,
            author_name: "Jörg Müller",
            staff: false,
            content,
            attachments: Vec::new(),
            sent: "2026-12-02T10:00:00Z".parse().unwrap(),
            to: "support@desk.example",
            subject: None,
        }
    }

    #[test]
    fn a_new_message_becomes_a_mail_the_parser_reads_back() {
        let raw = to_mail(&msg("Drucker druckt nicht\nSeit heute früh.")).unwrap();
        let p = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(p.subject(), Some("Drucker druckt nicht"));
        assert_eq!(p.message_id(), Some("1100000000000000001@discord.invalid"));
        let from = p.from().unwrap().first().unwrap();
        assert_eq!(from.address(), Some("u77@discord.invalid"));
        assert_eq!(from.name(), Some("Jörg Müller"));
        assert!(p.body_text(0).unwrap().contains("Seit heute früh."));
        assert!(p.in_reply_to().as_text().is_none());
    }

    #[test]
    fn a_thread_reply_refers_to_the_thread_and_staff_write_as_staff() {
        let mut m = msg("Danke, geht wieder");
        m.thread = Some(900);
        m.staff = true;
        m.subject = Some("Drucker");
        m.to = "u12@discord.invalid";
        let raw = to_mail(&m).unwrap();
        let p = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(p.in_reply_to().as_text(), Some("900@discord.invalid"));
        assert_eq!(p.subject(), Some("Re: Drucker"));
        assert_eq!(
            p.from().unwrap().first().unwrap().address(),
            Some("u77@staff.discord.invalid")
        );
    }

    #[test]
    fn attachments_and_empty_text_are_kept_as_lines() {
        let mut m = msg("");
        m.attachments = vec![("log.txt", "https://cdn.example/log.txt")];
        let raw = to_mail(&m).unwrap();
        let p = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert!(p
            .body_text(0)
            .unwrap()
            .contains("log.txt <https://cdn.example/log.txt>"));
        assert_eq!(p.subject(), Some("(Discord message)"));
    }

    #[test]
    fn discord_addresses_are_recognised() {
        assert!(is_discord_address("u1@discord.invalid"));
        assert!(is_discord_address("U1@Staff.Discord.Invalid"));
        assert!(!is_discord_address("anna@discord.com"));
        assert!(!is_discord_address("x@notdiscord.invalid.example"));
        assert_eq!(user_of(&address(42, false)), Some(42));
        assert_eq!(user_of(&address(42, true)), Some(42));
        assert_eq!(user_of("u42@example.com"), None);
        assert_eq!(user_of("anna@discord.invalid"), None);
    }
}
