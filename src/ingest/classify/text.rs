//! What of a body the rules read: the writer's own text (not the quoted
//! history of a reply), at most a bounded prefix.

/// Up to `max` bytes of `s`, cut at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The writer's own text of a body: everything before the quoted history
/// of a reply (the first `>` line, or a client's reply header such as
/// "On … wrote:", "Am … schrieb …:", "-----Original Message-----",
/// "-----Ursprüngliche Nachricht-----", or Outlook's "From:"/"Von:" block
/// followed by "Sent:"/"Gesendet:"/"Date:"/"Datum:"). What a customer quotes
/// is the history, not the request: a thank-you note quoting "the server is
/// down" is not an outage. A body that is all quote (or starts with one) is
/// returned whole, and so is a forward's (its subject says `Fwd:`/`WG:`),
/// whose quoted part is the request.
pub fn own_text<'a>(subject: &str, body: &'a str) -> &'a str {
    if is_forward(subject) {
        return body;
    }
    let mut offset = 0;
    let mut lines = body.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        let cut = t.starts_with('>')
            || is_reply_header(t)
            || ((starts_with_ci(t, "from:") || starts_with_ci(t, "von:"))
                && lines.peek().is_some_and(|next| {
                    let n = next.trim();
                    ["sent:", "gesendet:", "date:", "datum:"]
                        .iter()
                        .any(|p| starts_with_ci(n, p))
                }));
        if cut {
            let own = &body[..offset];
            return if own.trim().is_empty() { body } else { own };
        }
        offset += line.len();
    }
    body
}

/// Whether a subject is a forward's (`Fwd:`, `FW:`, `WG:`, `TR:` first).
fn is_forward(subject: &str) -> bool {
    let s = subject.trim_start();
    ["fwd:", "fw:", "wg:", "tr:", "weitergeleitet:"]
        .iter()
        .any(|p| starts_with_ci(s, p))
}

/// A mail client's line introducing the quoted message of a reply.
fn is_reply_header(t: &str) -> bool {
    let dashed = t.starts_with("-----") && t.ends_with("-----");
    (dashed
        && (t.to_ascii_lowercase().contains("original message")
            || t.contains("Ursprüngliche Nachricht")
            || t.contains("Originalnachricht")))
        || (starts_with_ci(t, "on ") && t.ends_with("wrote:"))
        || (starts_with_ci(t, "am ") && t.contains(" schrieb") && t.ends_with(':'))
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}
#[cfg(test)]
mod tests {
    use super::super::test_support::sev;
    use super::*;

    #[test]
    fn quoted_history_is_not_read_but_a_forward_is() {
        let quoted = "Danke, alles wieder gut.\n\nAm 03.12.2026 um 08:05 schrieb Anna:\n> Unser Server ist ausgefallen.";
        assert_eq!(
            own_text("Re: Server", quoted),
            "Danke, alles wieder gut.\n\n"
        );
        let outlook =
            "Thanks!\n\nFrom: Support <support@desk.example>\nSent: Monday\nSubject: outage";
        assert_eq!(own_text("RE: x", outlook), "Thanks!\n\n");
        // A forward's quoted part is the request; a body that is all quote is kept.
        assert_eq!(own_text("Fwd: Server", quoted), quoted);
        assert_eq!(own_text("x", "> all quote"), "> all quote");
        // A thank-you quoting the outage it answers is no outage.
        assert_eq!(
            sev(
                "Re: Server ausgefallen",
                "Läuft wieder, vielen Dank!\n\n> Der Server ist ausgefallen, niemand kann arbeiten."
            ),
            Some(4)
        );
        // Something still broken is not an acknowledgement.
        assert_eq!(
            sev(
                "Re: VPN",
                "The VPN works again, thanks, but Outlook is still not working."
            ),
            Some(3)
        );
    }
}
