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

/// To and Cc addresses kept, each. The later stages compare every
/// recipient with the ticket's participants and staff: with 100,000
/// addresses in a Cc that took half a minute. A mail to more people than
/// this is a mailing, and its participants are not worth more.
pub const MAX_RECIPIENTS: usize = 100;

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
    let mut prepared = prepare(raw);
    let lost = defuse_lost_boundaries(&mut prepared);
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
    if lost > 0 {
        warnings.push(format!(
            "{lost} multipart boundaries never occur in the message; those parts were read as text"
        ));
    }
    let (body, body_from_html, html_cut) = readable_body(&msg);
    warnings.extend(html_cut);
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
        to: capped_mailboxes("To", msg.to(), &mut warnings),
        cc: capped_mailboxes("Cc", msg.cc(), &mut warnings),
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

/// How many multipart declarations whose boundary never occurs a message
/// may have before [`defuse_lost_boundaries`] steps in.
const MAX_LOST_BOUNDARIES: usize = 4;

/// Keeps mail-parser linear on hostile MIME. For a multipart part whose
/// boundary never occurs, mail-parser searches the whole rest of the
/// message, gives up, goes back, and reads the part as text; a mail that
/// repeats such a header thousands of times costs that search thousands
/// of times (a 650 KB mutant took 13 s). When more than
/// [`MAX_LOST_BOUNDARIES`] declarations have no delimiter line (`--`
/// boundary, after the header block they are in), each of those gets its
/// parameter renamed (`boundary` → `boundarx`) in the copy that is parsed,
/// so mail-parser reads the part as text at once — what it would have
/// ended with anyway. Declarations whose value this scan cannot read
/// exactly (RFC 2231 `boundary*` forms, quoted escapes, comments, folding)
/// count as lost. A few lost ones (a customer quoting a header) cost a few
/// searches and are left alone. Returns how many were renamed.
fn defuse_lost_boundaries(data: &mut std::borrow::Cow<'_, [u8]>) -> usize {
    let bytes: &[u8] = data;
    // Every `boundary=` parameter: where its name starts, its value, and
    // whether the value was read exactly.
    let mut declared: Vec<(usize, &[u8], bool)> = Vec::new();
    // The end of the value just read: what is inside it is not another
    // declaration.
    let mut skip_until = 0;
    // Found by its last letter: "y" is rare in German and English text,
    // "b" is not (this keeps the scan a few percent of parsing).
    for y_at in memchr::memchr2_iter(b'y', b'Y', bytes) {
        let Some(name_at) = y_at.checked_sub(7) else {
            continue;
        };
        if name_at < skip_until {
            continue;
        }
        if !bytes[name_at..]
            .get(..8)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"boundary"))
        {
            continue;
        }
        let mut j = name_at + 8;
        let mut exact = true;
        while j < bytes.len() && (bytes[j] == b'*' || bytes[j].is_ascii_digit()) {
            exact = false;
            j += 1;
        }
        while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
            j += 1;
        }
        if bytes.get(j) != Some(&b'=') {
            continue;
        }
        j += 1;
        while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
            j += 1;
        }
        let (start, end) = if bytes.get(j) == Some(&b'"') {
            // A quoted value on this line; one folded onto the next (or
            // unterminated) is not read exactly. The closing quote and the
            // line end are looked for together: searching for the line
            // end first went to the end of a mail without LF for every
            // declaration (quadratic: 81 s for a 2 MB mutant of
            // `boundary="boundary="…` with CR line ends).
            match memchr::memchr2(b'"', b'\n', &bytes[j + 1..]).map(|p| j + 1 + p) {
                Some(q) if bytes[q] == b'"' => (j + 1, q),
                line => {
                    exact = false;
                    (j + 1, line.unwrap_or(bytes.len()))
                }
            }
        } else {
            let e = bytes[j..]
                .iter()
                .position(|&b| matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n' | b'"'))
                .map_or(bytes.len(), |p| j + p);
            (j, e)
        };
        let value = &bytes[start..end];
        skip_until = end;
        if value.is_empty() && exact {
            // mail-parser does not search for an empty boundary.
            continue;
        }
        if value
            .iter()
            .any(|&b| matches!(b, b'\\' | b'\r' | b'\n' | b'('))
        {
            exact = false;
        }
        declared.push((name_at, value, exact));
    }
    // Almost every mail stops here: a few lost ones are left alone anyway.
    if declared.len() <= MAX_LOST_BOUNDARIES {
        return 0;
    }
    // Blank lines (header block ends) and delimiter candidates: every line
    // that starts with "--", by its text after the dashes (trailing
    // whitespace and a closing "--" removed), with its last position.
    let mut blank_lines: Vec<usize> = Vec::new();
    let mut delimiters: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    let mut at = 0;
    while at < bytes.len() {
        let end = memchr::memchr(b'\n', &bytes[at..]).map_or(bytes.len(), |p| at + p);
        let line = bytes[at..end].trim_ascii_end();
        if line.is_empty() {
            blank_lines.push(at);
        } else if let Some(rest) = line.strip_prefix(b"--") {
            delimiters.insert(rest, at);
            if let Some(open) = rest.strip_suffix(b"--") {
                delimiters.insert(open, at);
            }
        }
        at = end + 1;
    }
    let lost: Vec<usize> = declared
        .iter()
        .filter(|&&(name_at, value, exact)| {
            let block_end = blank_lines
                .get(blank_lines.partition_point(|&b| b <= name_at))
                .copied()
                .unwrap_or(bytes.len());
            !(exact && delimiters.get(value).is_some_and(|&d| d > block_end))
        })
        .map(|&(name_at, _, _)| name_at)
        .collect();
    if lost.len() <= MAX_LOST_BOUNDARIES {
        return 0;
    }
    let copy = data.to_mut();
    for &at in &lost {
        // "boundary" → "boundarx", in the case it was written in.
        copy[at + 7] = if copy[at + 7] == b'Y' { b'X' } else { b'x' };
    }
    lost.len()
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

/// To or Cc mailboxes, at most [`MAX_RECIPIENTS`]; a longer list gets a
/// warning (shown on the ticket) that says how many were left out.
fn capped_mailboxes(
    header: &str,
    a: Option<&Address<'_>>,
    warnings: &mut Vec<String>,
) -> Vec<Mailbox> {
    let Some(a) = a else {
        return Vec::new();
    };
    let mut total = 0usize;
    let mut kept = Vec::new();
    for m in a.iter().filter_map(|x| to_mailbox(x.name(), x.address())) {
        total += 1;
        if kept.len() < MAX_RECIPIENTS {
            kept.push(m);
        }
    }
    if total > kept.len() {
        warnings.push(format!(
            "{header}: only the first {} of {total} addresses were considered; the full header is kept in the message as received.",
            kept.len()
        ));
    }
    kept
}

fn first_mailbox(a: Option<&Address<'_>>) -> Option<Mailbox> {
    a.and_then(|a| a.iter().find_map(|x| to_mailbox(x.name(), x.address())))
}

/// The text body; HTML-only mails are converted with html2text. The third
/// value says what of the HTML was left out of the conversion, if anything.
fn readable_body(msg: &Message<'_>) -> (String, bool, Option<String>) {
    let mut text_parts = msg
        .text_body
        .iter()
        .filter_map(|&i| msg.parts.get(i as usize));
    if let Some(first) = text_parts.next() {
        match &first.body {
            PartType::Text(t) => {
                // With further inline text parts (e.g. a footer added by a
                // list), at most MAX_TEXT_BYTES of them: a text body of
                // 50 MB is not copied whole (twice) for an article that
                // keeps far less.
                let further = text_parts.filter_map(|p| match &p.body {
                    PartType::Text(t) => Some(t.as_ref()),
                    _ => None,
                });
                let mut s = String::new();
                let mut total = 0usize;
                for t in std::iter::once(t.as_ref()).chain(further) {
                    total = total.saturating_add(t.len());
                    let room = MAX_TEXT_BYTES.saturating_sub(s.len());
                    if room == 0 {
                        continue;
                    }
                    if !s.is_empty() {
                        s.push_str("\n\n");
                    }
                    s.push_str(prefix(t, room));
                }
                let cut = (total > MAX_TEXT_BYTES).then(|| {
                    format!(
                        "The text body has {total} bytes; only the first {MAX_TEXT_BYTES} are the article's text (the raw message keeps all)."
                    )
                });
                return (normalise_newlines(&s), false, cut);
            }
            PartType::Html(h) => {
                let (text, cut) = html_to_text_bounded(h);
                return (text, true, cut);
            }
            _ => {}
        }
    }
    if let Some(h) = msg.body_html(0) {
        let (text, cut) = html_to_text_bounded(&h);
        return (text, true, cut);
    }
    (String::new(), false, None)
}

/// Bytes of plain text taken from a mail's text parts at most; the article
/// keeps at most `[intake] max_body_bytes` of them (which may not exceed
/// this), the raw message all.
pub const MAX_TEXT_BYTES: usize = 4 * 1024 * 1024;

/// The longest prefix of `t` of at most `max` bytes that ends on a
/// character boundary.
fn prefix(t: &str, max: usize) -> &str {
    let mut end = max.min(t.len());
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    &t[..end]
}

fn normalise_newlines(s: &str) -> String {
    if s.contains('\r') {
        s.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        s.to_string()
    }
}

/// Bytes of HTML handed to html2text at most; the rest of a bigger HTML body
/// is not converted (the raw message keeps all of it). html2text needs about
/// a second per megabyte of ordinary HTML here, and far more for tables.
pub const MAX_HTML_BYTES: usize = 256 * 1024;

/// Elements open at once in the HTML handed to html2text. Deeper tags are
/// dropped (their text is kept): html5ever and html2text spend time in
/// proportion to the depth for every tag, so a body of nothing but nested
/// `<div>`s was quadratic. Real mail stays far below this.
pub const MAX_HTML_DEPTH: usize = 64;

/// A tag longer than this keeps its name but loses its attributes (a
/// `data:` image of megabytes, thousands of attributes).
const MAX_HTML_TAG_BYTES: usize = 2048;

/// Readable text from HTML: no tags, no CSS, links kept as footnotes.
/// Only the first [`MAX_HTML_BYTES`] of the flattened HTML are converted;
/// see [`flatten_html`].
pub fn html_to_text(html: &str) -> String {
    html_to_text_bounded(html).0
}

/// [`html_to_text`], and a sentence saying what was left out when the HTML
/// was cut or flattened (for the ticket's notes).
fn html_to_text_bounded(html: &str) -> (String, Option<String>) {
    let flat = flatten_html(html, MAX_HTML_BYTES, MAX_HTML_DEPTH);
    let text = html2text::config::plain()
        .string_from_read(flat.html.as_bytes(), 100)
        .unwrap_or_else(|_| strip_tags(&flat.html));
    (normalise_newlines(text.trim()), flat.note(html.len()))
}

/// HTML made safe to hand to html2text: see [`flatten_html`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlatHtml {
    /// The HTML to convert: at most the byte limit, at most the depth limit
    /// of open elements, no comments, scripts or style sheets.
    pub html: String,
    /// Tags dropped because the depth limit was reached.
    pub dropped_tags: usize,
    /// Bytes of the input not looked at because the byte limit was reached
    /// (0 when all of it was).
    pub cut_bytes: usize,
}

impl FlatHtml {
    /// What was left out, for the ticket; None when nothing was.
    pub fn note(&self, input_bytes: usize) -> Option<String> {
        let mut parts = Vec::new();
        if self.cut_bytes > 0 {
            parts.push(format!(
                "only the first {} KB of {} KB of HTML were converted to text",
                (input_bytes - self.cut_bytes) / 1024,
                input_bytes.div_ceil(1024)
            ));
        }
        if self.dropped_tags > 0 {
            parts.push(format!(
                "{} tags nested deeper than {} levels were ignored",
                self.dropped_tags, MAX_HTML_DEPTH
            ));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "HTML body: {}; the full message is kept as received.",
                parts.join(", ")
            )
        })
    }
}

/// HTML elements that never have content.
const VOID_ELEMENTS: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param",
    "source", "track", "wbr",
];

/// Elements whose content is text up to their end tag, not markup.
const RAW_TEXT_ELEMENTS: &[&str] = &[
    "script", "style", "title", "textarea", "xmp", "iframe", "noembed", "noframes",
];

/// Elements an end tag of another element does not close (it stays inside
/// a table cell, as HTML's "scope" says).
const CELL_BOUNDARY: &[&str] = &[
    "td", "th", "table", "caption", "template", "object", "marquee", "applet", "svg", "math",
];

/// Elements an end tag of a table part does not reach beyond.
const TABLE_BOUNDARY: &[&str] = &["table", "template", "svg", "math"];

/// Tag names longer than this are no element anyone renders; such tags are
/// dropped.
const MAX_HTML_NAME_BYTES: usize = 32;

/// For a start tag: the open elements it closes (HTML's implied end tags:
/// a `<p>` ends an open `<p>`, an `<li>` an open `<li>` …) and the elements
/// beyond which it does not look.
fn implied_close(name: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    const LIST: &[&str] = &["ul", "ol", "dl", "menu", "td", "th", "table", "svg", "math"];
    Some(match name {
        "p" => (&["p"], CELL_BOUNDARY),
        "li" => (&["li"], LIST),
        "dt" | "dd" => (&["dt", "dd"], LIST),
        "td" | "th" => (&["td", "th"], &["tr", "table", "template", "svg", "math"]),
        "tr" => (&["tr"], TABLE_BOUNDARY),
        "thead" | "tbody" | "tfoot" => (&["thead", "tbody", "tfoot"], TABLE_BOUNDARY),
        "option" => (&["option"], &["select", "datalist", "svg", "math"]),
        _ => return None,
    })
}

/// The innermost open element named one of `names`, looking from the
/// innermost outwards and stopping at any of `boundary`.
fn find_open(open: &[String], names: &[&str], boundary: &[&str]) -> Option<usize> {
    for (at, o) in open.iter().enumerate().rev() {
        if names.contains(&o.as_str()) {
            return Some(at);
        }
        if boundary.contains(&o.as_str()) {
            return None;
        }
    }
    None
}

/// Closes the open elements from `at` on, innermost first, in the output.
fn close_to(out: &mut String, open: &mut Vec<String>, at: usize) {
    while open.len() > at {
        if let Some(name) = open.pop() {
            out.push_str("</");
            out.push_str(&name);
            out.push('>');
        }
    }
}

/// A linear pass over HTML that bounds what html2text (and html5ever under
/// it) is given. html5ever does work in proportion to the depth of open
/// elements for many tags, so hostile HTML (tags nested or left open by
/// the hundred thousand) cost time quadratic in its size. The output:
///
/// - is balanced: every element is closed by its own end tag, in order
///   (implied ends such as `<p>` after `<p>`, `<li>`, `<td>`, `<tr>` are
///   written out), and end tags of nothing open are dropped, so the parser's
///   stack of open elements (and its list of open formatting elements)
///   follows this pass's;
/// - has at most `max_depth` open elements: deeper start tags are dropped,
///   their text is kept;
/// - has no comments, scripts or style sheets; a tag longer than 2 KB keeps
///   only its name;
/// - stops at about `max_bytes` (plus the end tags that close it).
pub fn flatten_html(html: &str, max_bytes: usize, max_depth: usize) -> FlatHtml {
    let b = html.as_bytes();
    let mut out = FlatHtml {
        html: String::with_capacity(html.len().min(max_bytes) + 16),
        ..Default::default()
    };
    // The open elements, outermost first, lower case.
    let mut open: Vec<String> = Vec::new();
    // How many of them are SVG or MathML (where `<x/>` is complete).
    let mut foreign = 0usize;
    let mut i = 0;
    while i < b.len() && out.html.len() < max_bytes {
        if b[i] != b'<' {
            // Text up to the next tag, cut on a character boundary.
            let end = b[i..]
                .iter()
                .position(|&c| c == b'<')
                .map_or(b.len(), |p| i + p);
            let pushed = push_limited(&mut out.html, &html[i..end], max_bytes);
            i += pushed;
            if i < end {
                break;
            }
            continue;
        }
        let rest = &b[i..];
        if rest.starts_with(b"<!--") {
            i = find(b, i + 4, b"-->").map_or(b.len(), |p| p + 3);
            continue;
        }
        let is_end = rest.get(1) == Some(&b'/');
        let name_at = i + 1 + usize::from(is_end);
        if !b.get(name_at).is_some_and(u8::is_ascii_alphabetic) {
            if is_end || matches!(rest.get(1), Some(b'!' | b'?')) {
                // A bogus comment (`<!DOCTYPE …>`, `<?xml …?>`, `</ …>`).
                i = find(b, i + 1, b">").map_or(b.len(), |p| p + 1);
            } else {
                out.html.push_str("&lt;");
                i += 1;
            }
            continue;
        }
        let name_end = b[name_at..]
            .iter()
            .position(|c| c.is_ascii_whitespace() || matches!(c, b'/' | b'>'))
            .map_or(b.len(), |p| name_at + p);
        let tag_end = tag_end(b, name_end);
        let tag = &html[i..tag_end];
        i = tag_end;
        if name_end - name_at > MAX_HTML_NAME_BYTES {
            out.dropped_tags += 1;
            continue;
        }
        let name = html[name_at..name_end].to_ascii_lowercase();
        if is_end {
            // Close up to the innermost open element of this name (within
            // its table cell or table); an end tag of nothing open, or of a
            // dropped tag, is dropped.
            let boundary = match name.as_str() {
                "td" | "th" | "tr" | "thead" | "tbody" | "tfoot" | "caption" | "table" => {
                    TABLE_BOUNDARY
                }
                _ => CELL_BOUNDARY,
            };
            if let Some(at) = find_open(&open, &[name.as_str()], boundary) {
                foreign -= open[at..]
                    .iter()
                    .filter(|o| *o == "svg" || *o == "math")
                    .count();
                close_to(&mut out.html, &mut open, at);
            }
            continue;
        }
        if RAW_TEXT_ELEMENTS.contains(&name.as_str()) {
            // Its content runs to its end tag; script and style are of no
            // use in a text body and go entirely.
            let close = format!("</{name}");
            let content_end = find_ignore_case(b, i, close.as_bytes()).unwrap_or(b.len());
            let after = find(b, content_end, b">").map_or(b.len(), |p| p + 1);
            if name == "script" || name == "style" {
                i = after;
            } else if open.len() >= max_depth {
                out.dropped_tags += 1;
                i = after;
            } else {
                out.html.push_str(&short_tag(tag, &name));
                let pushed = push_limited(&mut out.html, &html[i..content_end], max_bytes);
                out.html.push_str(&format!("</{name}>"));
                i = if i + pushed < content_end {
                    i + pushed
                } else {
                    after
                };
            }
            continue;
        }
        if let Some((names, boundary)) = implied_close(&name) {
            if let Some(at) = find_open(&open, names, boundary) {
                close_to(&mut out.html, &mut open, at);
            }
        }
        let void = VOID_ELEMENTS.contains(&name.as_str()) || (foreign > 0 && tag.ends_with("/>"));
        if !void && open.len() >= max_depth {
            out.dropped_tags += 1;
            continue;
        }
        let written = short_tag(tag, &name);
        match written.strip_suffix("/>") {
            // `<div/>` opens a div in HTML: written as such, so that the
            // end tag this pass writes closes it.
            Some(start) if !void => {
                out.html.push_str(start);
                out.html.push('>');
            }
            _ => out.html.push_str(&written),
        }
        if !void {
            if name == "svg" || name == "math" {
                foreign += 1;
            }
            open.push(name);
        }
    }
    out.cut_bytes = b.len() - i.min(b.len());
    close_to(&mut out.html, &mut open, 0);
    out
}

/// Where the tag whose name ends at `from` ends (after its `>`): quoted
/// attribute values may hold a `>`.
fn tag_end(b: &[u8], from: usize) -> usize {
    let mut i = from;
    let mut after_equals = false;
    while i < b.len() {
        match b[i] {
            b'>' => return i + 1,
            b'=' => after_equals = true,
            q @ (b'"' | b'\'') if after_equals => {
                i = b[i + 1..]
                    .iter()
                    .position(|&c| c == q)
                    .map_or(b.len(), |p| i + 1 + p);
                after_equals = false;
            }
            c if c.is_ascii_whitespace() => {}
            _ => after_equals = false,
        }
        i += 1;
    }
    b.len()
}

/// The tag as written, or only its name when it is longer than
/// [`MAX_HTML_TAG_BYTES`].
fn short_tag<'a>(tag: &'a str, name: &str) -> std::borrow::Cow<'a, str> {
    if tag.len() <= MAX_HTML_TAG_BYTES && tag.ends_with('>') {
        std::borrow::Cow::Borrowed(tag)
    } else {
        std::borrow::Cow::Owned(format!("<{name}>"))
    }
}

/// Appends as much of `s` as fits under `max` bytes in all; returns how
/// many bytes of `s` that was.
fn push_limited(out: &mut String, s: &str, max: usize) -> usize {
    let mut n = s.len().min(max.saturating_sub(out.len()));
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    out.push_str(&s[..n]);
    n
}

/// The first position at or after `from` where `needle` starts.
fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// [`find`] ignoring ASCII case.
fn find_ignore_case(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|p| from + p)
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

    /// The deepest nesting of elements in (balanced) HTML.
    fn depth(html: &str) -> usize {
        let (mut d, mut max) = (0usize, 0usize);
        let mut rest = html;
        while let Some(at) = rest.find('<') {
            rest = &rest[at + 1..];
            if rest.starts_with('/') {
                d = d.saturating_sub(1);
            } else if !VOID_ELEMENTS
                .iter()
                .any(|v| rest.starts_with(v) && rest[v.len()..].starts_with(['>', ' ', '/']))
            {
                d += 1;
                max = max.max(d);
            }
        }
        max
    }

    #[test]
    fn deeply_nested_html_is_flattened_before_conversion() {
        let html = format!(
            "<html><body>{}Server down{}</body></html>",
            "<div><table><tr><td>".repeat(20_000),
            "</td></tr></table></div>".repeat(20_000)
        );
        let flat = flatten_html(&html, MAX_HTML_BYTES, MAX_HTML_DEPTH);
        assert!(depth(&flat.html) <= MAX_HTML_DEPTH, "{}", depth(&flat.html));
        assert!(flat.dropped_tags > 70_000, "{}", flat.dropped_tags);
        assert!(flat.html.contains("Server down"));
        let note = flat.note(html.len()).expect("a note on what was cut");
        assert!(note.contains("nested deeper than 64"), "{note}");
        // Formatting left open in every paragraph: each is closed in the
        // output, so the parser has nothing to reopen.
        let html = (0..5000)
            .map(|i| format!("<p><b id=\"b{i}\"><i>Punkt {i}</p>\n"))
            .collect::<String>();
        let flat = flatten_html(&html, usize::MAX, MAX_HTML_DEPTH);
        assert_eq!(flat.html.matches("<b ").count(), 5000);
        assert_eq!(flat.html.matches("</b>").count(), 5000);
        assert_eq!(flat.html.matches("</p>").count(), 5000);
        assert!(depth(&flat.html) <= 3, "{}", depth(&flat.html));
        assert_eq!(flat.dropped_tags, 0);
    }

    #[test]
    fn unclosed_and_self_closed_tags_count_as_open() {
        // `<div/>` opens a div in HTML; `<font>` never closed stays open.
        for open in ["<div/>", "<font color=red>", "<span>x", "<a href=x>"] {
            let html = open.repeat(10_000);
            let flat = flatten_html(&html, usize::MAX, MAX_HTML_DEPTH);
            assert!(depth(&flat.html) <= MAX_HTML_DEPTH, "{open}");
            assert!(flat.dropped_tags >= 10_000 - MAX_HTML_DEPTH, "{open}");
        }
        // End tags of nothing open go; scripts, styles and comments go.
        let flat = flatten_html(
            "</div></p><script>alert('<b>')</script><style>p{}</style><!-- <i> -->text</b>",
            usize::MAX,
            MAX_HTML_DEPTH,
        );
        assert_eq!(flat.html, "text");
    }

    #[test]
    fn html_beyond_the_byte_limit_is_not_converted() {
        let para = "<p>Der Drucker im zweiten Stock druckt nur leere Seiten.</p>\n";
        let html = para.repeat(2 * MAX_HTML_BYTES / para.len());
        let flat = flatten_html(&html, MAX_HTML_BYTES, MAX_HTML_DEPTH);
        assert!(flat.html.len() <= MAX_HTML_BYTES + 8, "{}", flat.html.len());
        assert!(flat.cut_bytes > html.len() / 3, "{}", flat.cut_bytes);
        assert!(flat.html.ends_with("</p>"), "closed at the cut");
        let raw = format!(
            "From: a@kunde.de\r\nSubject: x\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}"
        );
        let p = parse(raw.as_bytes()).unwrap();
        assert!(p.body.starts_with("Der Drucker"), "{:?}", &p.body[..40]);
        assert!(p.body.len() < MAX_HTML_BYTES, "{}", p.body.len());
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("HTML body: only the first 256 KB")),
            "{:?}",
            p.warnings
        );
        // A text cut inside a multi-byte character does not loop or split it.
        let flat = flatten_html("<p>ääää</p>", 6, MAX_HTML_DEPTH);
        assert_eq!(flat.html, "<p>ä</p>");
        assert!(flat.cut_bytes > 0);
    }

    #[test]
    fn ordinary_html_converts_as_before() {
        // Sloppy but ordinary HTML (unclosed <p>, <li>, <td>, comments,
        // entities, links): flattening must not change what html2text makes
        // of it.
        let html = "<!DOCTYPE html><html><head><title>t</title><style>td{}</style></head><body>\
            <p>Hallo,<p>der <b>Server</b> &amp; der Drucker<br>sind down.\
            <ul><li>eins<li>zwei<li><a href=\"https://x.example/a?b=1&amp;c=2\">Link</a></ul>\
            <table><tr><td>Host<td>srv01<tr><td>State<td>DOWN</table>\
            <!-- comment --><blockquote>zitiert <i>kursiv</blockquote><div/>Ende</body></html>";
        let direct = html2text::config::plain()
            .string_from_read(html.as_bytes(), 100)
            .unwrap();
        let (text, note) = html_to_text_bounded(html);
        assert_eq!(text, normalise_newlines(direct.trim()));
        assert_eq!(note, None);
    }

    #[test]
    fn long_recipient_lists_are_capped_with_a_warning() {
        let cc = (0..1000)
            .map(|i| format!("p{i}@kunde.de"))
            .collect::<Vec<_>>()
            .join(", ");
        let raw = format!(
            "From: a@kunde.de\r\nTo: support@example.com\r\nCc: {cc}\r\nSubject: x\r\n\r\nhi\r\n"
        );
        let p = parse(raw.as_bytes()).unwrap();
        assert_eq!(p.cc.len(), MAX_RECIPIENTS);
        assert_eq!(p.cc[0].address, "p0@kunde.de");
        assert_eq!(p.to.len(), 1);
        assert!(
            p.warnings
                .iter()
                .any(|w| w.starts_with("Cc: only the first 100 of 1000 addresses")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn repeated_multipart_headers_with_lost_boundaries_are_read_as_text() {
        // The shape of a fuzz find: a part header declaring a boundary
        // that never occurs, repeated thousands of times. mail-parser
        // searched the rest of the message once per repetition (13 s for
        // 650 KB in a debug build); now each is read as text at once.
        let mut raw = String::from(
            "From: a@kunde.de\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"N0\"\r\n\r\n--N0\r\nContent-Type: text/plain\r\n\r\nEbene 0\r\n",
        );
        for _ in 0..3000 {
            raw.push_str(
                "--N0\r\nContent-Type: multipart/mixed; boundary=\"N1-Type: multipart/mixed; boundary=\"\r\n\r\nlost\r\n",
            );
        }
        raw.push_str("--N0--\r\n");
        let p = parse(raw.as_bytes()).unwrap();
        assert!(
            p.warnings
                .iter()
                .any(|w| w.starts_with("3000 multipart boundaries never occur")),
            "{:?}",
            p.warnings
        );
        assert!(p.body.starts_with("Ebene 0"), "{:?}", &p.body[..40]);
    }

    #[test]
    fn a_mail_without_line_feeds_full_of_quoted_boundaries_is_scanned_once() {
        // The shape of a fuzz find (seed 1796322407050121779): CR-only line
        // ends and `boundary="boundary="…` for 2 MB. The scan looked for
        // the end of the line before the closing quote, to the end of the
        // mail each time: 81 s in a debug build. It is one pass now; the
        // thread's deadline only catches a return of the quadratic scan.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut raw =
                b"From: a@kunde.de\rSubject: x\rContent-Type: multipart/report; boundary=\""
                    .to_vec();
            for _ in 0..200_000 {
                raw.extend_from_slice(b"boundary=\"");
            }
            let mut data = std::borrow::Cow::Owned(raw);
            let _ = tx.send(defuse_lost_boundaries(&mut data));
        });
        let renamed = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the boundary scan is linear");
        // Each `boundary=` inside a quoted value is that value, not a
        // declaration: 100,001 declarations (the last one unterminated),
        // none with a delimiter.
        assert_eq!(renamed, 100_001);
    }

    #[test]
    fn ordinary_and_slightly_broken_multipart_is_parsed_as_before() {
        // Found boundaries (nested, quoted, token, a closing one only) and up
        // to MAX_LOST_BOUNDARIES lost ones are not touched.
        let raw = "From: a@kunde.de\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; BOUNDARY=outer\r\n\r\n--outer\r\nContent-Type: multipart/alternative; boundary=\"in ner\"\r\n\r\n--in ner\r\nContent-Type: text/plain\r\n\r\nHallo\r\n--in ner--\r\n--outer\r\nContent-Type: text/plain; name=a.txt\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nsee boundary=lost1 and boundary=lost2\r\n--outer--\r\n";
        let p = parse(raw.as_bytes()).unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.body.trim(), "Hallo");
        assert_eq!(p.attachments.len(), 1);
        assert_eq!(
            p.attachments[0].content,
            b"see boundary=lost1 and boundary=lost2"
        );
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
