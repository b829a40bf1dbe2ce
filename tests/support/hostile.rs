//! Hostile mails that cost time rather than correctness: deeply nested or
//! unclosed HTML, recipient lists of 100,000 addresses, thousands of
//! References, Received lines or MIME parts, megabyte header lines.
//!
//! Shared by `tests/fuzz.rs` (`#[path = "support/hostile.rs"] mod hostile;`)
//! and `benches/pipeline.rs` (`#[path = "../tests/support/hostile.rs"]`), so
//! the regression test and the benchmark measure the same mails. Every
//! generator is deterministic and takes the approximate size it should
//! reach (in bytes) or a count.

// Each user of this module needs a different part of it.
#![allow(dead_code)]

use std::fmt::Write as _;

/// The header every hostile mail starts with; `extra` is inserted as is
/// (CRLF-terminated header lines) before the blank line.
pub fn mail(id: &str, subject: &str, extra: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Anna Kunde <anna@kunde.example>\r\nTo: support@example.com\r\nSubject: {subject}\r\nMessage-ID: <{id}@kunde.example>\r\nDate: Mon, 2 Mar 2026 09:15:00 +0100\r\nMIME-Version: 1.0\r\n{extra}Content-Type: {content_type}\r\n\r\n{body}"
    )
    .into_bytes()
}

/// An HTML-only mail: `open` repeated until about `size` bytes, one line of
/// text, then `close` as often (empty `close`: the tags are never closed).
pub fn nested_html(id: &str, open: &str, close: &str, size: usize) -> Vec<u8> {
    let n = (size / (open.len() + close.len()).max(1)).max(1);
    let mut body = String::with_capacity(size + 200);
    body.push_str("<html><body>\r\n");
    for i in 0..n {
        body.push_str(open);
        // Real mail wraps lines; a line end now and then keeps the body a
        // valid 8bit/7bit MIME body (≤ 998 characters a line).
        if i % 16 == 15 {
            body.push_str("\r\n");
        }
    }
    body.push_str("Der Server antwortet nicht.\r\n");
    for i in 0..n {
        body.push_str(close);
        if i % 16 == 15 && !close.is_empty() {
            body.push_str("\r\n");
        }
    }
    body.push_str("</body></html>\r\n");
    mail(
        id,
        "Verschachteltes HTML",
        "",
        "text/html; charset=utf-8",
        &body,
    )
}

/// `<div>` nested about `size` bytes deep.
pub fn nested_divs(size: usize) -> Vec<u8> {
    nested_html("nested-div", "<div>", "</div>", size)
}

/// `<table><tr><td>` nested about `size` bytes deep.
pub fn nested_tables(size: usize) -> Vec<u8> {
    nested_html(
        "nested-table",
        "<table><tr><td>",
        "</td></tr></table>",
        size,
    )
}

/// Inline and block tags opened and never closed, about `size` bytes.
pub fn unclosed_tags(size: usize) -> Vec<u8> {
    nested_html("unclosed", "<b><i><font><span><p><li>", "", size)
}

/// Nested blockquotes (what a long reply chain in HTML looks like).
pub fn nested_quotes(size: usize) -> Vec<u8> {
    nested_html(
        "nested-quote",
        "<blockquote type=\"cite\"><div>",
        "</div></blockquote>",
        size,
    )
}

/// Paragraphs that each leave a distinct formatting element open: the
/// parser reopens every one of them in each later paragraph.
pub fn reopened_formatting(size: usize) -> Vec<u8> {
    let mut body = String::with_capacity(size + 100);
    let mut i = 0;
    while body.len() < size {
        let _ = write!(body, "<p><b id=\"b{i}\">Punkt {i}</p>\r\n");
        i += 1;
    }
    mail(
        "reopened",
        "Offene Formatierung",
        "",
        "text/html; charset=utf-8",
        &body,
    )
}

/// One table row of `size / 10` cells.
pub fn wide_table(size: usize) -> Vec<u8> {
    let mut body = String::from("<table><tr>");
    for i in 0..size / 12 {
        let _ = write!(body, "<td>{}</td>", i % 10);
        if i % 64 == 63 {
            body.push_str("\r\n");
        }
    }
    body.push_str("</tr></table>\r\n");
    mail(
        "wide-table",
        "Breite Tabelle",
        "",
        "text/html; charset=utf-8",
        &body,
    )
}

/// Tags of thousands of attributes each.
pub fn many_attributes(size: usize) -> Vec<u8> {
    let mut tag = String::from("<span");
    for i in 0..2000 {
        let _ = write!(tag, " a{i}=\"{i}\"");
    }
    tag.push_str(">x</span>\r\n");
    let body = tag.repeat(size / tag.len() + 1);
    mail(
        "many-attributes",
        "Attribute",
        "",
        "text/html; charset=utf-8",
        &body,
    )
}

/// A header of `n` addresses, folded over lines as a client writes it.
pub fn address_list(n: usize) -> String {
    let mut v = String::with_capacity(n * 24);
    for i in 0..n {
        if i > 0 {
            v.push_str(",\r\n ");
        }
        let _ = write!(v, "Person {i} <p{i}@kunde{}.example>", i % 97);
    }
    v
}

/// A plain mail with `n` addresses in `header` (To or Cc).
pub fn many_recipients(header: &str, n: usize) -> Vec<u8> {
    mail(
        &format!("many-{}", header.to_ascii_lowercase()),
        "Viele Empfänger",
        &format!("{header}: {}\r\n", address_list(n)),
        "text/plain; charset=utf-8",
        "Bitte alle informieren.\r\n",
    )
}

/// `n` Received lines before the usual header.
pub fn many_received(n: usize) -> Vec<u8> {
    let mut extra = String::with_capacity(n * 120);
    for i in 0..n {
        let _ = write!(
            extra,
            "Received: from relay{i}.kunde.example (relay{i}.kunde.example [192.0.2.{}])\r\n\tby mx.example.com with ESMTPS id {i:08x}; Mon, 2 Mar 2026 09:15:00 +0100\r\n",
            i % 250
        );
    }
    mail(
        "many-received",
        "Viele Received",
        &extra,
        "text/plain; charset=utf-8",
        "Sehr lange unterwegs.\r\n",
    )
}

/// `n` distinct headers of arbitrary names (what the guard and the rules
/// look up by name).
pub fn many_headers(n: usize) -> Vec<u8> {
    let mut extra = String::with_capacity(n * 30);
    for i in 0..n {
        let _ = write!(extra, "X-Custom-{i}: value {i}\r\n");
    }
    mail(
        "many-headers",
        "Viele Header",
        &extra,
        "text/plain; charset=utf-8",
        "Kopflastig.\r\n",
    )
}

/// A References header of `n` ids.
pub fn many_references(n: usize) -> Vec<u8> {
    let mut refs = String::with_capacity(n * 28);
    for i in 0..n {
        let _ = write!(refs, "<r{i}.thread@kunde.example>\r\n ");
    }
    mail(
        "many-references",
        "Re: Lange Geschichte",
        &format!(
            "In-Reply-To: <r{}.thread@kunde.example>\r\nReferences: {refs}\r\n",
            n.saturating_sub(1)
        ),
        "text/plain; charset=utf-8",
        "Noch eine Antwort.\r\n",
    )
}

/// multipart/alternative with `n` HTML parts and no text part: every part is
/// converted.
pub fn many_html_parts(n: usize) -> Vec<u8> {
    let mut body = String::with_capacity(n * 120);
    for i in 0..n {
        let _ = write!(
            body,
            "--H\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Teil {i}: <b>Server</b> down</p>\r\n"
        );
    }
    body.push_str("--H--\r\n");
    mail(
        "many-html-parts",
        "Viele HTML-Teile",
        "",
        "multipart/mixed; boundary=\"H\"",
        &body,
    )
}

/// multipart/mixed with `n` inline text parts (each appended to the body).
pub fn many_text_parts(n: usize) -> Vec<u8> {
    let mut body = String::with_capacity(n * 80);
    for i in 0..n {
        let _ = write!(
            body,
            "--T\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nTeil {i} des Berichts.\r\n"
        );
    }
    body.push_str("--T--\r\n");
    mail(
        "many-text-parts",
        "Viele Textteile",
        "",
        "multipart/mixed; boundary=\"T\"",
        &body,
    )
}

/// A plain body of `size` bytes: a pasted log whose words the rules scan.
pub fn big_plain_body(size: usize) -> Vec<u8> {
    let line = "2026-03-02 09:15:00 ERROR backup job failed: disk quota exceeded on /srv/daten\r\n";
    let body = line.repeat(size / line.len() + 1);
    mail(
        "big-plain",
        "Logdatei",
        "",
        "text/plain; charset=utf-8",
        &body,
    )
}

/// One Subject line of `size` bytes made of many RFC 2047 encoded words.
pub fn encoded_word_subject(size: usize) -> Vec<u8> {
    let word = "=?UTF-8?Q?Dr=C3=BCcker?= ";
    let subject = word.repeat(size / word.len() + 1);
    mail(
        "encoded-subject",
        subject.trim_end(),
        "",
        "text/plain; charset=utf-8",
        "Kodiert.\r\n",
    )
}

/// An HTML body made of `size` bytes of one long text run with entities,
/// no tags at all (the fast path must not become a slow one).
pub fn html_entities(size: usize) -> Vec<u8> {
    let chunk = "Server &amp; Drucker &lt;down&gt; &#x263A; &nbsp;";
    let mut body = String::with_capacity(size + 100);
    while body.len() < size {
        body.push_str(chunk);
        body.push_str("\r\n");
    }
    mail(
        "html-entities",
        "Entities",
        "",
        "text/html; charset=utf-8",
        &body,
    )
}

/// Every hostile mail of about `size` bytes (or the count that gives about
/// that size), named, for the benchmark and the regression test.
pub fn all(size: usize) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("nested_div", nested_divs(size)),
        ("nested_table", nested_tables(size)),
        ("unclosed_tags", unclosed_tags(size)),
        ("nested_quotes", nested_quotes(size)),
        ("reopened_formatting", reopened_formatting(size)),
        ("wide_table", wide_table(size)),
        ("many_attributes", many_attributes(size)),
        ("html_entities", html_entities(size)),
        ("cc_list", many_recipients("Cc", size / 40)),
        ("to_list", many_recipients("To", size / 40)),
        ("received", many_received(size / 130)),
        ("headers", many_headers(size / 30)),
        ("references", many_references(size / 30)),
        ("html_parts", many_html_parts(size / 90)),
        ("text_parts", many_text_parts(size / 70)),
        ("plain_body", big_plain_body(size)),
        ("encoded_subject", encoded_word_subject(size)),
    ]
}
