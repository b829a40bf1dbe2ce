//! Stage 1: turn raw bytes into a [`ParsedMail`] with mail-parser.
//!
//! Everything a later stage needs is copied out here (decoded subject and
//! names, addresses, ids, the readable body, attachments, the headers the guard
//! and the rules read), so the rest of the pipeline never touches MIME again.

use crate::domain::{header_safe, Mailbox, MessageId};
use mail_parser::{Address, HeaderValue, Message, MessageParser, MimeHeaders, PartType};
use sha2::{Digest, Sha256};

/// A message that could not be parsed at all; it is quarantined with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseFailure(pub String);

/// One attachment, decoded.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Decoded file name (RFC 2047/2231), without directory parts.
    pub filename: String,
    /// `type/subtype`, lower case.
    pub content_type: String,
    /// The decoded content.
    pub content: Vec<u8>,
}

/// A delivery status notification's per-recipient report (RFC 3464).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DsnRecipient {
    /// Final-Recipient (or Original-Recipient), without the `rfc822;` type.
    pub recipient: String,
    /// Action: failed, delayed, delivered, relayed, expanded.
    pub action: String,
    /// Status code such as 5.1.1.
    pub status: String,
    /// Diagnostic-Code text, if any.
    pub diagnostic: String,
}

/// What a bounce tells about the mail that bounced.
#[derive(Debug, Clone, Default)]
pub struct Bounced {
    /// Per-recipient reports (empty for vendor formats without a DSN part).
    pub recipients: Vec<DsnRecipient>,
    /// Message-ID of the original mail, from the enclosed message or headers.
    pub original_message_id: Option<MessageId>,
    /// Subject of the original mail, for the ticket tag.
    pub original_subject: Option<String>,
    /// References/In-Reply-To of the original mail.
    pub original_references: Vec<MessageId>,
}

/// From mailboxes kept beyond the first. RFC 5322 allows several authors;
/// a mail that names more than this is not written into a ticket by subject
/// tag or customer Message-ID anyway (one untrusted author is enough).
pub const MAX_OTHER_FROM: usize = 16;

/// The parsed message: everything the pure stages read.
#[derive(Debug, Clone, Default)]
pub struct ParsedMail {
    /// SHA-256 of the raw bytes, hex.
    pub sha256: String,
    /// Size of the raw message in bytes.
    pub size: usize,
    /// Message-ID, normalised.
    pub message_id: Option<MessageId>,
    /// Decoded subject, safe for headers; empty when missing.
    pub subject: String,
    /// First From mailbox.
    pub from: Option<Mailbox>,
    /// Sender header.
    pub sender: Option<Mailbox>,
    /// The From mailboxes after the first (a From of several authors, at
    /// most [`MAX_OTHER_FROM`]): each is checked like the first before the
    /// mail may write into a ticket.
    pub other_from: Vec<Mailbox>,
    /// First Reply-To mailbox.
    pub reply_to: Option<Mailbox>,
    /// To recipients.
    pub to: Vec<Mailbox>,
    /// Cc recipients.
    pub cc: Vec<Mailbox>,
    /// Date header as a Unix timestamp, when valid.
    pub date: Option<i64>,
    /// In-Reply-To ids.
    pub in_reply_to: Vec<MessageId>,
    /// References ids.
    pub references: Vec<MessageId>,
    /// The readable text body (HTML converted to text when there is no text part).
    pub body: String,
    /// True when `body` was converted from HTML.
    pub body_from_html: bool,
    /// Attachments in message order.
    pub attachments: Vec<Attachment>,
    /// Top-level headers: lower-case name and the raw (unfolded) value.
    pub headers: Vec<(String, String)>,
    /// Return-Path as given (`""` for the null path `<>`), when present.
    pub return_path: Option<String>,
    /// Content-Type of the top level, lower case `type/subtype`.
    pub content_type: String,
    /// `report-type` parameter of a multipart/report.
    pub report_type: Option<String>,
    /// Filled for multipart/report; report-type=delivery-status and for
    /// vendor bounces that enclose the original message.
    pub bounced: Option<Bounced>,
    /// Problems met while parsing that did not stop it (shown on the ticket).
    pub warnings: Vec<String>,
}

impl ParsedMail {
    /// The value of the first top-level header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Where an answer should go: Reply-To when set, else From.
    pub fn reply_address(&self) -> Option<&Mailbox> {
        self.reply_to.as_ref().or(self.from.as_ref())
    }

    /// In-Reply-To and References together, In-Reply-To first, without repeats.
    pub fn thread_ids(&self) -> Vec<MessageId> {
        let mut seen = std::collections::HashSet::new();
        self.in_reply_to
            .iter()
            .chain(self.references.iter().rev())
            .filter(|id| seen.insert(id.as_str()))
            .cloned()
            .collect()
    }
}

/// References kept of a message: the thread's root (the first) and the most
/// recent ones. Threading needs only these, and a header of thousands of ids
/// must not make every later stage pay for each of them.
pub const MAX_REFERENCES: usize = 100;

/// In-Reply-To ids kept (RFC 5322 allows several; one is usual).
pub const MAX_IN_REPLY_TO: usize = 10;

/// Characters of the decoded subject kept; the raw message keeps all. A
/// subject beyond this is not a subject but an attack or an accident, and it
/// would otherwise travel into the ticket, the rules and the confirmation.
pub const MAX_SUBJECT_CHARS: usize = 1000;

/// The hex SHA-256 of some bytes.
pub fn sha256_hex(raw: &[u8]) -> String {
    hex::encode(Sha256::digest(raw))
}

/// Parses a raw message. Fails only when nothing usable is there (no header
/// at all); every other oddity becomes a warning.
pub fn parse(raw: &[u8]) -> Result<ParsedMail, ParseFailure> {
    let sha256 = sha256_hex(raw);
    let size = raw.len();
    if raw.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ParseFailure("empty message".into()));
    }
    // The raw bytes are stored as received; only the copy that is parsed is
    // tidied up.
    let prepared = prepare(raw);
    let raw: &[u8] = &prepared;
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| ParseFailure("no RFC 5322 header found".into()))?;
    let headers: Vec<(String, String)> = msg
        .headers_raw()
        .map(|(n, v)| (n.to_ascii_lowercase(), unfold(v)))
        .collect();
    if headers.is_empty() || !looks_like_headers(&headers) {
        return Err(ParseFailure(
            "no RFC 5322 header found (the start of the input is not a header field)".into(),
        ));
    }
    let mut warnings = Vec::new();
    let (body, body_from_html) = readable_body(&msg);
    let ct = msg.content_type();
    let content_type = ct
        .map(|c| {
            format!(
                "{}/{}",
                c.ctype().to_ascii_lowercase(),
                c.subtype().unwrap_or("").to_ascii_lowercase()
            )
        })
        .unwrap_or_else(|| "text/plain".into());
    let report_type = ct
        .and_then(|c| c.attribute("report-type"))
        .map(|s| s.trim().to_ascii_lowercase());
    let mut attachments = Vec::new();
    for (i, part) in msg.attachments().enumerate() {
        attachments.push(Attachment {
            filename: attachment_name(part, i),
            content_type: part_content_type(part),
            content: part.contents().to_vec(),
        });
    }
    if msg.parts.iter().any(|p| p.is_encoding_problem) {
        warnings.push("a part had an encoding problem; its text may be incomplete".into());
    }
    let return_path = msg.header_raw("Return-Path").map(|v| {
        let v = v.trim();
        v.trim_start_matches('<')
            .trim_end_matches('>')
            .trim()
            .to_string()
    });
    let date = msg
        .date()
        .filter(|d| d.is_valid())
        .map(|d| d.to_timestamp());
    let mut parsed = ParsedMail {
        sha256,
        size,
        message_id: msg.message_id().and_then(MessageId::parse),
        subject: limit_chars(header_safe(msg.subject().unwrap_or("")), MAX_SUBJECT_CHARS),
        from: first_mailbox(msg.from()),
        sender: first_mailbox(msg.sender()),
        other_from: mailboxes(msg.from())
            .into_iter()
            .skip(1)
            .take(MAX_OTHER_FROM)
            .collect(),
        reply_to: first_mailbox(msg.reply_to()),
        to: mailboxes(msg.to()),
        cc: mailboxes(msg.cc()),
        date,
        in_reply_to: first_and_last(ids(msg.in_reply_to()), MAX_IN_REPLY_TO),
        references: first_and_last(ids(msg.references()), MAX_REFERENCES),
        body,
        body_from_html,
        attachments,
        headers,
        return_path,
        content_type,
        report_type,
        bounced: None,
        warnings,
    };
    parsed.bounced = bounce_details(&msg, &parsed);
    if parsed.bounced.is_none() && super::guard::is_text_bounce(&parsed) {
        parsed.bounced = Some(text_bounce_details(&parsed.body));
    }
    Ok(parsed)
}

/// What mail-parser is given: the raw message without what would stop it
/// from finding the header. Whitespace-only lines before the header (some
/// tools write a blank first line) and an mbox `From ` separator line are
/// skipped, and a message with bare CR line ends (classic Mac) gets LF.
fn prepare(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut start = 0;
    // Whitespace-only lines: skip up to the last line end among them.
    let lead = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(raw.len());
    if let Some(nl) = raw[..lead].iter().rposition(|&b| b == b'\n' || b == b'\r') {
        start = nl + 1;
    }
    // An mbox separator ("From sender date") is not a header field (but
    // "From : x", with the obsolete blank before the colon, is).
    let after = &raw[start..];
    if after.starts_with(b"From ")
        && after[5..].iter().find(|b| !b.is_ascii_whitespace()) != Some(&b':')
    {
        if let Some(nl) = raw[start..].iter().position(|&b| b == b'\n' || b == b'\r') {
            let mut end = start + nl + 1;
            if raw.get(end - 1) == Some(&b'\r') && raw.get(end) == Some(&b'\n') {
                end += 1;
            }
            start = end;
        }
    }
    let rest = &raw[start..];
    if rest.contains(&b'\r') && !rest.contains(&b'\n') {
        return std::borrow::Cow::Owned(
            rest.iter()
                .map(|&b| if b == b'\r' { b'\n' } else { b })
                .collect(),
        );
    }
    std::borrow::Cow::Borrowed(rest)
}

/// A bounce in plain text (qmail, Exim, Sendmail, many vendors) quotes the
/// bounced mail's header lines in its body: its Message-ID and Subject lead
/// to the ticket, and DSN fields written inline give the recipients.
fn text_bounce_details(body: &str) -> Bounced {
    let mut b = Bounced {
        recipients: parse_delivery_status(body),
        ..Default::default()
    };
    for line in body.lines().take(5000) {
        let line = line.trim_start_matches(['>', ' ', '\t']);
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim_end().to_ascii_lowercase().as_str() {
            "message-id" if b.original_message_id.is_none() => {
                b.original_message_id = split_ids(value).into_iter().next();
            }
            "subject" if b.original_subject.is_none() && !value.is_empty() => {
                b.original_subject = Some(limit_chars(header_safe(value), MAX_SUBJECT_CHARS));
            }
            "in-reply-to" | "references" if b.original_references.len() < MAX_REFERENCES => {
                b.original_references.extend(split_ids(value));
            }
            _ => {}
        }
    }
    b.original_references =
        first_and_last(std::mem::take(&mut b.original_references), MAX_REFERENCES);
    b
}

/// References and In-Reply-To of an enclosed original, bounded.
fn original_references(inner: &Message<'_>) -> Vec<MessageId> {
    let mut refs = ids(inner.references());
    refs.extend(ids(inner.in_reply_to()));
    first_and_last(refs, MAX_REFERENCES)
}

/// True when the first header name is a plausible RFC 5322 field name, so a
/// binary blob that happens to contain a colon is not taken for a mail.
fn looks_like_headers(headers: &[(String, String)]) -> bool {
    headers.iter().take(3).any(|(n, _)| {
        !n.is_empty() && n.len() <= 76 && n.bytes().all(|b| b.is_ascii_graphic() && b != b':')
    })
}

/// The first id and the last `max - 1`, without repeats, in their order.
fn first_and_last(ids: Vec<MessageId>, max: usize) -> Vec<MessageId> {
    let mut seen = std::collections::HashSet::new();
    let mut unique: Vec<MessageId> = ids
        .into_iter()
        .filter(|id| seen.insert(id.0.clone()))
        .collect();
    if unique.len() > max && max > 0 {
        let tail = unique.split_off(unique.len() - (max - 1));
        unique.truncate(1);
        unique.extend(tail);
    }
    unique
}

/// At most `max` characters; a cut is marked with an ellipsis.
fn limit_chars(s: String, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => {
            let mut cut = s[..at].trim_end().to_string();
            cut.push('…');
            cut
        }
        None => s,
    }
}

/// Folded header text as one line.
fn unfold(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for (i, line) in v.split('\n').enumerate() {
        let line = line.trim_end_matches('\r');
        if i > 0 {
            s.push(' ');
            s.push_str(line.trim_start());
        } else {
            s.push_str(line);
        }
    }
    s.trim().to_string()
}

fn ids(v: &HeaderValue<'_>) -> Vec<MessageId> {
    match v {
        HeaderValue::Text(t) => split_ids(t),
        HeaderValue::TextList(list) => list.iter().flat_map(|t| split_ids(t)).collect(),
        _ => Vec::new(),
    }
}

/// mail-parser returns ids without brackets, but a broken header may hold
/// several in one text: split on blanks and brackets.
fn split_ids(t: &str) -> Vec<MessageId> {
    t.split(|c: char| c.is_whitespace() || c == '<' || c == '>' || c == ',')
        .filter_map(MessageId::parse)
        .filter(|id| id.as_str().contains('@') || id.as_str().len() > 8)
        .collect()
}

fn to_mailbox(name: Option<&str>, address: Option<&str>) -> Option<Mailbox> {
    let address = address?.trim();
    if address.is_empty() {
        return None;
    }
    let address = header_safe(address);
    let name = name
        .map(header_safe)
        .filter(|n| !n.is_empty() && *n != address);
    Some(Mailbox { name, address })
}

fn mailboxes(a: Option<&Address<'_>>) -> Vec<Mailbox> {
    a.map(|a| {
        a.iter()
            .filter_map(|x| to_mailbox(x.name(), x.address()))
            .collect()
    })
    .unwrap_or_default()
}

fn first_mailbox(a: Option<&Address<'_>>) -> Option<Mailbox> {
    a.and_then(|a| a.iter().find_map(|x| to_mailbox(x.name(), x.address())))
}

/// The text body; HTML-only mails are converted with html2text.
fn readable_body(msg: &Message<'_>) -> (String, bool) {
    let mut text_parts = msg
        .text_body
        .iter()
        .filter_map(|&i| msg.parts.get(i as usize));
    if let Some(first) = text_parts.next() {
        match &first.body {
            PartType::Text(t) => {
                let mut s = t.to_string();
                // Further inline text parts (e.g. a footer added by a list).
                for p in text_parts {
                    if let PartType::Text(t) = &p.body {
                        s.push_str("\n\n");
                        s.push_str(t);
                    }
                }
                return (normalise_newlines(&s), false);
            }
            PartType::Html(h) => return (html_to_text(h), true),
            _ => {}
        }
    }
    if let Some(h) = msg.body_html(0) {
        return (html_to_text(&h), true);
    }
    (String::new(), false)
}

fn normalise_newlines(s: &str) -> String {
    if s.contains('\r') {
        s.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        s.to_string()
    }
}

/// Readable text from HTML: no tags, no CSS, links kept as footnotes.
pub fn html_to_text(html: &str) -> String {
    let text = html2text::config::plain()
        .string_from_read(html.as_bytes(), 100)
        .unwrap_or_else(|_| strip_tags(html));
    normalise_newlines(text.trim())
}

/// Last resort when html2text gives up: drop everything between < and >.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn part_content_type(part: &mail_parser::MessagePart<'_>) -> String {
    part.content_type()
        .map(|c| {
            format!(
                "{}/{}",
                c.ctype().to_ascii_lowercase(),
                c.subtype().unwrap_or("octet-stream").to_ascii_lowercase()
            )
        })
        .unwrap_or_else(|| "application/octet-stream".into())
}

/// The decoded file name without directories or control characters; a name
/// is made up from the position and type when the part has none.
fn attachment_name(part: &mail_parser::MessagePart<'_>, index: usize) -> String {
    let raw = part.attachment_name().unwrap_or("");
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim().to_string();
    if !clean.is_empty() && clean != "." && clean != ".." {
        return clean;
    }
    let ext = match part_content_type(part).as_str() {
        "message/rfc822" | "message/global" => "eml",
        "text/plain" => "txt",
        "text/html" => "html",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "application/pdf" => "pdf",
        "text/calendar" => "ics",
        "message/delivery-status" => "txt",
        "text/rfc822-headers" => "txt",
        _ => "bin",
    };
    format!("part-{}.{}", index + 1, ext)
}

/// For a DSN (multipart/report; report-type=delivery-status) or any mail that
/// encloses a message/rfc822 or text/rfc822-headers part, what it says about
/// the original mail.
fn bounce_details(msg: &Message<'_>, parsed: &ParsedMail) -> Option<Bounced> {
    let is_dsn = parsed.content_type == "multipart/report"
        && parsed.report_type.as_deref() == Some("delivery-status");
    let mut b = Bounced::default();
    let mut found = false;
    for part in msg.parts.iter().skip(1) {
        let ct = part_content_type(part);
        match ct.as_str() {
            "message/delivery-status" | "message/global-delivery-status" => {
                b.recipients = parse_delivery_status(&String::from_utf8_lossy(part.contents()));
                found = true;
            }
            "message/rfc822" | "message/global" if b.original_message_id.is_none() => {
                if let Some(inner) = part.message() {
                    b.original_message_id = inner.message_id().and_then(MessageId::parse);
                    b.original_subject = inner
                        .subject()
                        .map(|s| limit_chars(header_safe(s), MAX_SUBJECT_CHARS));
                    b.original_references = original_references(inner);
                    found = true;
                }
            }
            "text/rfc822-headers" if b.original_message_id.is_none() => {
                let text = String::from_utf8_lossy(part.contents()).into_owned();
                if let Some(inner) = MessageParser::default().parse_headers(text.as_bytes()) {
                    b.original_message_id = inner.message_id().and_then(MessageId::parse);
                    b.original_subject = inner
                        .subject()
                        .map(|s| limit_chars(header_safe(s), MAX_SUBJECT_CHARS));
                    b.original_references = original_references(&inner);
                    found = true;
                }
            }
            _ => {}
        }
    }
    (is_dsn || found).then_some(b)
}

/// Reads the per-recipient groups of a message/delivery-status body.
pub fn parse_delivery_status(text: &str) -> Vec<DsnRecipient> {
    let mut out = Vec::new();
    // Groups are separated by blank lines; the first is per-message.
    let unfolded = text.replace("\r\n", "\n");
    for group in unfolded.split("\n\n") {
        let mut r = DsnRecipient::default();
        let mut field = String::new();
        let mut lines: Vec<String> = Vec::new();
        for line in group.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = lines.last_mut() {
                    last.push(' ');
                    last.push_str(line.trim());
                }
            } else {
                lines.push(line.to_string());
            }
        }
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            field.clear();
            field.push_str(&name.trim().to_ascii_lowercase());
            let value = value.trim();
            let typed = value
                .split_once(';')
                .map(|(_, v)| v.trim())
                .unwrap_or(value);
            match field.as_str() {
                "final-recipient" => r.recipient = typed.to_string(),
                "original-recipient" if r.recipient.is_empty() => r.recipient = typed.to_string(),
                "action" => r.action = value.to_ascii_lowercase(),
                "status" => r.status = value.split_whitespace().next().unwrap_or("").to_string(),
                "diagnostic-code" => r.diagnostic = typed.to_string(),
                _ => {}
            }
        }
        if !r.recipient.is_empty() {
            r.recipient = header_safe(r.recipient.trim_matches(['<', '>']));
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_encoded_subject_and_names() {
        let raw = b"From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <jm@kunde.de>\r\nTo: support@example.com\r\nSubject: =?ISO-8859-1?Q?Dr=FCcker_geht_nicht?=\r\nMessage-ID: <abc@kunde.de>\r\n\r\nHallo\r\n";
        let p = parse(raw).unwrap();
        assert_eq!(p.subject, "Drücker geht nicht");
        assert_eq!(
            p.from.as_ref().unwrap().name.as_deref(),
            Some("Jürgen Müller")
        );
        assert_eq!(p.message_id.unwrap().as_str(), "abc@kunde.de");
        assert_eq!(p.body.trim(), "Hallo");
    }

    #[test]
    fn html_only_becomes_text() {
        let raw = b"From: a@b.de\r\nSubject: x\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><head><style>p{color:red}</style></head><body><p>Server <b>down</b></p></body></html>\r\n";
        let p = parse(raw).unwrap();
        assert!(p.body_from_html);
        assert!(p.body.contains("Server down"), "{:?}", p.body);
        assert!(
            !p.body.contains('<') && !p.body.contains("color"),
            "{:?}",
            p.body
        );
    }

    #[test]
    fn rfc2231_file_name_is_decoded() {
        let raw = b"From: a@b.de\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nsee file\r\n--XX\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename*=UTF-8''Pr%C3%BCfbericht%20M%C3%A4rz.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\n";
        let p = parse(raw).unwrap();
        assert_eq!(p.attachments.len(), 1);
        assert_eq!(p.attachments[0].filename, "Prüfbericht März.pdf");
        assert_eq!(p.attachments[0].content, b"%PDF-1.4\n");
        assert_eq!(p.attachments[0].content_type, "application/pdf");
    }

    #[test]
    fn garbage_and_empty_fail() {
        assert!(parse(b"").is_err());
        assert!(parse(b"   \r\n").is_err());
        assert!(parse(&[0xff, 0xfe, 0x00, 0x01, 0x02]).is_err());
    }

    #[test]
    fn leading_blank_lines_mbox_line_and_bare_cr_are_tolerated() {
        let p = parse(b"    \r\n\r\nFrom: a@kunde.de\r\nSubject: x\r\n\r\nbody\r\n").unwrap();
        assert_eq!(p.from.unwrap().address, "a@kunde.de");
        let p = parse(
            b"From a@kunde.de  Sat Oct  4 08:00:09 2025\nFrom: a@kunde.de\nSubject: y\n\nbody\n",
        )
        .unwrap();
        assert_eq!(p.from.unwrap().address, "a@kunde.de");
        assert!(p.headers.iter().all(|(n, _)| !n.starts_with("from a@")));
        let p = parse(b"From : b@kunde.de\r\nSubject: obsolete blank\r\n\r\nx").unwrap();
        assert_eq!(p.subject, "obsolete blank");
        let p = parse(b"From: c@kunde.de\rSubject: mac\r\rline one\rline two\r").unwrap();
        assert_eq!(p.subject, "mac");
        assert_eq!(p.from.unwrap().address, "c@kunde.de");
        assert!(p.body.contains("line two"));
        // The hash and size are those of the bytes as received.
        let raw = b"\r\nFrom: a@kunde.de\r\n\r\nx";
        let p = parse(raw).unwrap();
        assert_eq!((p.size, p.sha256), (raw.len(), sha256_hex(raw)));
    }

    #[test]
    fn text_bounce_names_the_original() {
        let body = "Hi. This is the qmail-send program.\r\n<bob@kunde.de>:\r\nmailbox unavailable\r\n\r\n--- Below this line is a copy of the message.\r\n\r\nMessage-ID: <td.77@support.example>\r\nSubject: [Ticket#10001] Drucker\r\nReferences: <a@x> <b@x>\r\n\r\nhi\r\n";
        let bounce = format!(
            "Return-Path: <>\r\nFrom: MAILER-DAEMON@mx.kunde.de\r\nSubject: failure notice\r\n\r\n{body}"
        );
        let b = parse(bounce.as_bytes())
            .unwrap()
            .bounced
            .expect("a text bounce");
        assert_eq!(
            b.original_message_id.unwrap().as_str(),
            "td.77@support.example"
        );
        assert_eq!(
            b.original_subject.as_deref(),
            Some("[Ticket#10001] Drucker")
        );
        assert_eq!(b.original_references.len(), 2);
        // The same text from a person is no bounce.
        let person = format!("From: bob@kunde.de\r\nSubject: failure notice\r\n\r\n{body}");
        assert!(parse(person.as_bytes()).unwrap().bounced.is_none());
    }

    #[test]
    fn huge_references_and_subjects_are_bounded() {
        let mut refs = String::new();
        for i in 0..20_000 {
            refs.push_str(&format!("<r{i}@x.de> "));
        }
        let raw = format!(
            "From: a@b.de\r\nSubject: {}\r\nIn-Reply-To: <r19999@x.de>\r\nReferences: {refs}\r\n\r\nx\r\n",
            "s".repeat(50_000)
        );
        let p = parse(raw.as_bytes()).unwrap();
        assert_eq!(p.references.len(), MAX_REFERENCES);
        assert_eq!(p.references[0].as_str(), "r0@x.de");
        assert_eq!(p.references.last().unwrap().as_str(), "r19999@x.de");
        let t = p.thread_ids();
        assert_eq!(t.len(), MAX_REFERENCES);
        assert_eq!(t[0].as_str(), "r19999@x.de");
        assert_eq!(p.subject.chars().count(), MAX_SUBJECT_CHARS + 1);
        assert!(p.subject.ends_with('…'));
    }

    #[test]
    fn delivery_status_groups() {
        let t = "Reporting-MTA: dns; mx.example\n\nFinal-Recipient: rfc822; bob@x.de\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\n";
        let r = parse_delivery_status(t);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].recipient, "bob@x.de");
        assert_eq!(r[0].status, "5.1.1");
        assert_eq!(r[0].action, "failed");
    }
}
