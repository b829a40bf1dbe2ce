//! Builds outgoing mails (RFC 5322 bytes) with lettre. Pure: the time, the
//! Message-ID and the templates are inputs.

use super::templates::{TemplateError, Templates};
use crate::domain::{header_safe, Mailbox, MessageId, Severity, TicketNumber};
use lettre::message::header::{
    ContentDisposition, ContentTransferEncoding, ContentType, HeaderName, HeaderValue,
};
use lettre::message::{Body, MultiPart, SinglePart};
use std::time::SystemTime;

pub use crate::plan::Outgoing;

/// Why a mail could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An address lettre cannot write.
    #[error("invalid address {0:?}: {1}")]
    Address(String, String),
    /// A template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// lettre refused the message.
    #[error("cannot build mail: {0}")]
    Build(String),
}

/// What an automatic mail about a message says: the confirmation, a
/// registration notice, an over-quota notice.
#[derive(Debug, Clone)]
pub struct Confirmation<'a> {
    /// The templates' base name: `confirmation`, `registration`,
    /// `over-quota`.
    pub template: &'a str,
    /// `Auto-Submitted`: `auto-replied` for an answer to the message,
    /// `auto-generated` for a mail of our own (RFC 3834); empty for a
    /// person's reply (no such header).
    pub auto_submitted: &'a str,
    /// The ticket, if there is one.
    pub number: Option<&'a TicketNumber>,
    /// Its subject tag, e.g. `[Ticket#10001]` (empty: none).
    pub tag: &'a str,
    /// The customer who wrote.
    pub customer: &'a str,
    /// Further template facts.
    pub facts: &'a [(String, String)],
    /// The customer's subject.
    pub subject: &'a str,
    /// The customer's text, for the excerpt.
    pub body: &'a str,
    /// Severity given.
    pub severity: Severity,
    /// Eingangszeitstempel, already formatted in the desk's time zone.
    pub received_at: &'a str,
    /// `de` or `en`.
    pub language: &'a str,
    /// Display name of the desk.
    pub desk_name: &'a str,
    /// Our sender address.
    pub from: &'a str,
    /// The recipient.
    pub to: &'a Mailbox,
    /// The customer's Message-ID (for In-Reply-To/References).
    pub in_reply_to: Option<&'a MessageId>,
    /// The customer's References, to carry the thread on.
    pub references: &'a [MessageId],
    /// Our new Message-ID.
    pub message_id: &'a MessageId,
    /// Date header.
    pub date: SystemTime,
    /// A message to attach whole (`message/rfc822`): a forward.
    pub attach: Option<&'a [u8]>,
    /// `Reply-To`: the original sender of a forwarded message.
    pub reply_to: Option<&'a Mailbox>,
    /// `Cc`: further recipients a staff member copies on a reply.
    pub cc: &'a [Mailbox],
}

/// The first lines of a text, quoted, at most `max` characters.
pub fn excerpt(body: &str, max: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for line in body.lines().map(str::trim_end) {
        if line.starts_with('>') {
            continue;
        }
        if out.is_empty() && line.is_empty() {
            continue;
        }
        let take: String = line.chars().take(max.saturating_sub(used)).collect();
        used += take.chars().count() + 1;
        out.push_str("> ");
        out.push_str(&take);
        out.push('\n');
        if used >= max {
            out.push_str("> […]\n");
            break;
        }
    }
    while out.ends_with("> \n") {
        out.truncate(out.len() - 3);
    }
    out.trim_end().to_string()
}

fn mailbox(name: Option<&str>, address: &str) -> Result<lettre::message::Mailbox, BuildError> {
    let addr: lettre::Address = address
        .parse()
        .map_err(|e: lettre::address::AddressError| {
            BuildError::Address(address.to_string(), e.to_string())
        })?;
    Ok(lettre::message::Mailbox::new(
        name.map(header_safe).filter(|n| !n.is_empty()),
        addr,
    ))
}

/// A message enclosed whole: `message/rfc822` in 7bit or 8bit (the only
/// encodings RFC 2046 allows for it), or, for a message that does not fit
/// them (NUL bytes, lines over 998 bytes), the same bytes base64-encoded as
/// `application/octet-stream` named `message.eml`, which mail programs open
/// alike.
fn enclosed(raw: &[u8]) -> Result<SinglePart, BuildError> {
    let bad = |e: lettre::message::header::ContentTypeErr| BuildError::Build(e.to_string());
    let part = SinglePart::builder().header(ContentDisposition::attachment("message.eml"));
    // SMTP's limits: no NUL, lines of at most 998 octets; line ends become
    // CRLF (as they are on the wire anyway).
    let fits = !raw.contains(&0) && raw.split(|&b| b == b'\n').all(|l| l.len() <= 999);
    if fits {
        let mut crlf = Vec::with_capacity(raw.len() + raw.len() / 40);
        for (i, &b) in raw.iter().enumerate() {
            if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
                crlf.push(b'\r');
            }
            if b == b'\r' && raw.get(i + 1) != Some(&b'\n') {
                crlf.extend_from_slice(b"\r\n");
                continue;
            }
            crlf.push(b);
        }
        let enc = if crlf.is_ascii() {
            ContentTransferEncoding::SevenBit
        } else {
            ContentTransferEncoding::EightBit
        };
        return Ok(part
            .header(ContentType::parse("message/rfc822").map_err(bad)?)
            .body(Body::dangerous_pre_encoded(crlf, enc)));
    }
    Ok(part
        .header(ContentType::parse("application/octet-stream").map_err(bad)?)
        .body(
            Body::new_with_encoding(raw.to_vec(), ContentTransferEncoding::Base64)
                .unwrap_or_else(Body::new),
        ))
}

/// Builds the confirmation for a new ticket.
pub fn confirmation(t: &Templates, c: &Confirmation<'_>) -> Result<Outgoing, BuildError> {
    let sev_label = if c.language == "en" {
        c.severity.label_en()
    } else {
        c.severity.label_de()
    };
    let mut ctx = serde_json::json!({
        "tag": c.tag,
        "ticket": c.number.map(|n| n.as_str()).unwrap_or(""),
        "customer": c.customer,
        "subject": header_safe(c.subject),
        "body": c.body,
        "excerpt": excerpt(c.body, 600),
        "received_at": c.received_at,
        "severity": c.severity.level(),
        "severity_label": sev_label,
        "requester_name": c.to.name.as_deref().map(header_safe),
        "requester": c.to.address,
        "desk_name": c.desk_name,
    });
    if let Some(map) = ctx.as_object_mut() {
        for (k, v) in c.facts {
            map.insert(k.clone(), serde_json::Value::String(header_safe(v)));
        }
    }
    let mut subject =
        header_safe(&t.render(&format!("{}.{}.subject", c.template, c.language), &ctx)?);
    if !c.tag.is_empty() && !subject.contains(c.tag) {
        subject = format!("{} {subject}", c.tag);
    }
    let body = t.render(&format!("{}.{}.txt", c.template, c.language), &ctx)?;
    let mut refs: Vec<String> = c
        .references
        .iter()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(MessageId::bracketed)
        .collect();
    if let Some(irt) = c.in_reply_to {
        if !refs.contains(&irt.bracketed()) {
            refs.push(irt.bracketed());
        }
    }
    let mut b = lettre::Message::builder()
        .from(mailbox(Some(c.desk_name), c.from)?)
        .to(mailbox(c.to.name.as_deref(), &c.to.address)?);
    for m in c.cc {
        b = b.cc(mailbox(m.name.as_deref(), &m.address)?);
    }
    let mut b = b
        .subject(subject.clone())
        .message_id(Some(c.message_id.bracketed()))
        .date(c.date);
    // A person's reply (staff answering through ticketd) is not automatic.
    if !c.auto_submitted.is_empty() {
        b = b
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                header_safe(c.auto_submitted),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Auto-Response-Suppress"),
                "All".into(),
            ));
    }
    if let Some(n) = c.number {
        b = b.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Ticketd-Ticket"),
            n.to_string(),
        ));
    }
    if let Some(irt) = c.in_reply_to {
        b = b.in_reply_to(irt.bracketed());
    }
    if !refs.is_empty() {
        b = b.references(refs.join(" "));
    }
    if let Some(r) = c.reply_to {
        b = b.reply_to(mailbox(r.name.as_deref(), &r.address)?);
    }
    let msg = match c.attach {
        // lettre adds MIME-Version for multipart only.
        None => b
            .header(lettre::message::header::MIME_VERSION_1_0)
            .header(ContentType::TEXT_PLAIN)
            .body(body.clone()),
        Some(raw) => b.multipart(
            MultiPart::mixed()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(body.clone()),
                )
                .singlepart(enclosed(raw)?),
        ),
    }
    .map_err(|e| BuildError::Build(e.to_string()))?;
    let mut to = vec![c.to.address.clone()];
    to.extend(
        c.cc.iter()
            .map(|m| m.address.clone())
            .filter(|a| !a.eq_ignore_ascii_case(&c.to.address)),
    );
    Ok(Outgoing {
        to,
        sender: c.from.to_string(),
        subject,
        message_id: c.message_id.clone(),
        raw: msg.formatted(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmation_headers_and_no_injection() {
        let t = Templates::load(None).unwrap();
        let to = Mailbox {
            name: Some("Evil\r\nBcc: victim@x.de".into()),
            address: "anna@kunde.de".into(),
        };
        let n = TicketNumber("10001".into());
        let mid = MessageId("td.10001.abc.def@example.com".into());
        let irt = MessageId("orig@kunde.de".into());
        let o = confirmation(
            &t,
            &Confirmation {
                template: "confirmation",
                auto_submitted: "auto-replied",
                number: Some(&n),
                tag: "[Ticket#10001]",
                customer: "anna@kunde.de",
                facts: &[],
                subject: "Hilfe\r\nBcc: victim@x.de",
                body: "Server steht.\nBitte helfen.",
                severity: Severity::Critical,
                received_at: "22.11.2026 22:15:01 CET",
                language: "de",
                desk_name: "Support",
                from: "support@example.com",
                to: &to,
                in_reply_to: Some(&irt),
                references: &[],
                message_id: &mid,
                date: SystemTime::UNIX_EPOCH,
                attach: None,
                reply_to: None,
                cc: &[],
            },
        )
        .unwrap();
        let raw = String::from_utf8(o.raw.clone()).unwrap();
        assert!(raw.contains("Auto-Submitted: auto-replied\r\n"), "{raw}");
        assert!(raw.contains("In-Reply-To: <orig@kunde.de>\r\n"));
        assert!(raw.contains("References: <orig@kunde.de>\r\n"));
        assert!(raw.contains("Message-ID: <td.10001.abc.def@example.com>\r\n"));
        // A single part mail declares MIME too (RFC 2045 §4): its
        // Content-Type and charset mean nothing without it.
        assert_eq!(raw.matches("MIME-Version: 1.0\r\n").count(), 1, "{raw}");
        assert!(!raw.lines().any(|l| l.starts_with("Bcc:")), "{raw}");
        assert!(o.subject.starts_with("[Ticket#10001]"));
        let parsed = crate::ingest::parse::parse(&o.raw).unwrap();
        assert!(parsed.body.contains("Eingangszeitstempel"));
        assert!(parsed.body.contains("22.11.2026 22:15:01"));
    }

    #[test]
    fn excerpt_skips_quotes_and_bounds_length() {
        let e = excerpt("\n\nHallo\n> alt\nWelt\n", 100);
        assert_eq!(e, "> Hallo\n> Welt");
        let long = "x".repeat(1000);
        assert!(excerpt(&long, 50).chars().count() < 70);
    }

    #[test]
    fn enclosed_messages_stay_whole_or_fall_back_to_base64() {
        let raw = b"From: a@kunde.de\nSubject: R\xc3\xa9chnung\n\nText\r\n".to_vec();
        let p = String::from_utf8(enclosed(&raw).unwrap().formatted()).unwrap();
        assert!(p.contains("Content-Type: message/rfc822"), "{p}");
        assert!(p.contains("Content-Transfer-Encoding: 8bit"), "{p}");
        assert!(
            p.contains("From: a@kunde.de\r\nSubject: R\u{e9}chnung\r\n\r\nText\r\n"),
            "{p}"
        );
        let long = format!("From: a@kunde.de\r\n\r\n{}\r\n", "x".repeat(2000));
        let p = String::from_utf8(enclosed(long.as_bytes()).unwrap().formatted()).unwrap();
        assert!(p.contains("Content-Type: application/octet-stream"), "{p}");
        assert!(p.contains("Content-Transfer-Encoding: base64"), "{p}");
    }
}
