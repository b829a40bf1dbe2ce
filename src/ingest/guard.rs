//! Stage 3: is a person writing, or a machine?
//!
//! Decided by headers and structure only — RFC 3834 `Auto-Submitted`,
//! `Precedence`, list headers, the vendor auto-reply headers, the null
//! Return-Path, system senders, our own addresses, and the MIME structure of
//! delivery reports. A subject that merely says "Out of office" proves
//! nothing: people write such subjects too. Only for a message from the mail
//! system itself (MAILER-DAEMON, postmaster, no sender, the null
//! Return-Path) is a subject such as "failure notice" taken as evidence of a
//! bounce in plain text.

use super::parse::ParsedMail;

/// Who wrote the message, as far as the pipeline cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A person: may open a ticket and get a confirmation.
    Person,
    /// An automatic message (vacation notice, list mail, robot): never
    /// answered, never opens a ticket.
    Automatic(String),
    /// A delivery failure report: recorded against the recipient on the
    /// ticket whose mail bounced.
    Bounce(String),
    /// Our own mail came back (sent from one of our addresses): a loop.
    Loop(String),
}

impl Verdict {
    /// True for everything that must never receive an automatic mail.
    pub fn is_machine(&self) -> bool {
        !matches!(self, Verdict::Person)
    }
    /// The reason, for notes and logs.
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Person => "person",
            Verdict::Automatic(r) | Verdict::Bounce(r) | Verdict::Loop(r) => r,
        }
    }
}

/// Local parts of addresses that belong to mail systems, not people.
const SYSTEM_LOCAL_PARTS: &[&str] = &[
    "mailer-daemon",
    "mailerdaemon",
    "postmaster",
    "noreply",
    "no-reply",
    "no_reply",
    "donotreply",
    "do-not-reply",
    "do_not_reply",
    "bounce",
    "bounces",
    "mail-daemon",
    "maildaemon",
    "mail.delivery.system",
    "mail-delivery-system",
    "maildeliverysystem",
];

/// Local parts of the mail system itself (the senders of bounces), a subset
/// of [`SYSTEM_LOCAL_PARTS`] without the no-reply robots.
const MAIL_SYSTEM_LOCAL_PARTS: &[&str] = &[
    "mailer-daemon",
    "mailerdaemon",
    "postmaster",
    "mail-daemon",
    "maildaemon",
    "mail.delivery.system",
    "mail-delivery-system",
    "maildeliverysystem",
];

/// Subject words of delivery failure reports. Only ever read for a message
/// from the mail system itself (see [`is_text_bounce`]): a person's subject
/// proves nothing.
const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliver",
    "undelivered",
    "not delivered",
    "could not be delivered",
    "delivery fail",
    "delivery status",
    "delivery notification",
    "delivery problem",
    "delivery has failed",
    "delivery delayed",
    "delayed mail",
    "failure notice",
    "failed delivery",
    "returned mail",
    "returned to sender",
    "returning message",
    "non-deliver",
    "nondeliver",
    "non deliver",
    "mail system error",
    "bounce",
    "rejected",
    "unzustellbar",
    "nicht zugestellt",
    "nicht zustellbar",
    "unzustellbare",
];

fn local_part(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(l, _)| l)
        .unwrap_or(address)
        .trim()
        .to_ascii_lowercase()
}

/// True when the address's local part names a mail system or a no-reply robot.
pub fn is_system_address(address: &str) -> bool {
    let local = local_part(address);
    SYSTEM_LOCAL_PARTS.contains(&local.as_str())
        || local.starts_with("noreply")
        || local.starts_with("no-reply")
        || local.starts_with("bounce+")
        || local.starts_with("bounces+")
        || local.starts_with("mailer-daemon")
}

/// True when the address's local part names the mail system itself
/// (MAILER-DAEMON, postmaster), the sender of delivery failure reports.
pub fn is_mail_system_address(address: &str) -> bool {
    let local = local_part(address);
    MAIL_SYSTEM_LOCAL_PARTS.contains(&local.as_str()) || local.starts_with("mailer-daemon")
}

/// True when the message comes from the mail system: no sender address at
/// all, the null Return-Path, or MAILER-DAEMON/postmaster in From or
/// Return-Path.
fn from_mail_system(mail: &ParsedMail) -> bool {
    let from = mail.from.as_ref().map(|m| m.key()).unwrap_or_default();
    (from.is_empty() && mail.sender.is_none())
        || is_mail_system_address(&from)
        || mail
            .return_path
            .as_deref()
            .is_some_and(|r| r.is_empty() || is_mail_system_address(r))
}

/// True for a delivery failure report without MIME structure: a message
/// from the mail system (see above) whose subject says so. Sender and
/// subject together; the subject alone never decides.
pub fn is_text_bounce(mail: &ParsedMail) -> bool {
    if !from_mail_system(mail) {
        return false;
    }
    let subject = mail.subject.to_lowercase();
    BOUNCE_SUBJECTS.iter().any(|w| subject.contains(w))
}

/// Classifies the author of a message. `own` are our addresses, lower case.
pub fn check(mail: &ParsedMail, own: &[String]) -> Verdict {
    let from = mail.from.as_ref().map(|m| m.key()).unwrap_or_default();
    let mail_system = from_mail_system(mail);
    let system_sender =
        from.is_empty() && mail.sender.is_none() || is_system_address(&from) || mail_system;
    let null_path = mail.return_path.as_deref() == Some("");
    let report = mail.content_type == "multipart/report";
    let report_type = mail.report_type.as_deref();
    let failed_rcpts = mail.header("x-failed-recipients").is_some();

    // MIME structure first: these are reports by definition (RFC 6522).
    if report && report_type == Some("delivery-status")
        || matches!(
            mail.content_type.as_str(),
            "message/delivery-status" | "message/global-delivery-status"
        )
    {
        return Verdict::Bounce("delivery status notification (multipart/report)".into());
    }
    if report && report_type == Some("feedback-report") {
        return Verdict::Bounce("abuse feedback report (ARF, multipart/report)".into());
    }
    if report
        && mail
            .bounced
            .as_ref()
            .is_some_and(|b| !b.recipients.is_empty())
    {
        return Verdict::Bounce("delivery status notification (multipart/report)".into());
    }
    if (system_sender || null_path) && (mail.bounced.is_some() || failed_rcpts) {
        return Verdict::Bounce(format!(
            "delivery failure from {}",
            if from.is_empty() { "<>" } else { &from }
        ));
    }
    if failed_rcpts {
        return Verdict::Bounce("X-Failed-Recipients header".into());
    }
    if is_text_bounce(mail) {
        return Verdict::Bounce(format!(
            "delivery failure from {} (subject {:?})",
            if from.is_empty() { "<>" } else { &from },
            mail.subject
        ));
    }
    if report {
        // Read receipts (disposition-notification) and other reports.
        return Verdict::Automatic(format!(
            "multipart/report; report-type={}",
            report_type.unwrap_or("(none)")
        ));
    }
    if !from.is_empty() && own.contains(&from) {
        return Verdict::Loop(format!("sent from our own address {from}"));
    }
    if let Some(xloop) = mail.header("x-loop") {
        let l = xloop.to_ascii_lowercase();
        if own.iter().any(|o| l.contains(o.as_str())) {
            return Verdict::Loop(format!("X-Loop: {xloop}"));
        }
    }
    if let Some(v) = mail.header("auto-submitted") {
        let token = v
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if token != "no" && !token.is_empty() {
            return Verdict::Automatic(format!("Auto-Submitted: {token}"));
        }
    }
    if let Some(v) = mail.header("precedence") {
        let p = v.trim().to_ascii_lowercase();
        if matches!(p.as_str(), "bulk" | "junk" | "list") {
            return Verdict::Automatic(format!("Precedence: {p}"));
        }
    }
    for h in [
        "list-id",
        "x-autoreply",
        "x-autorespond",
        "x-auto-response-suppress",
        "x-autogenerated",
        "x-autoreply-from",
        "x-mail-autoreply",
        "x-ms-exchange-generated-message-source",
        // iCloud's vacation notice carries no Auto-Submitted.
        "x-apple-action",
        // fml, the Japanese list server, marks what it sends itself.
        "x-mlserver",
    ] {
        if let Some(v) = mail.header(h) {
            // `X-Auto-Response-Suppress: None` is what a person's Outlook
            // may send; only a value that suppresses something counts.
            if h == "x-auto-response-suppress" && v.trim().eq_ignore_ascii_case("none") {
                continue;
            }
            return Verdict::Automatic(format!("{h}: {}", v.trim()));
        }
    }
    if null_path {
        return Verdict::Automatic("Return-Path: <> (null sender)".into());
    }
    if system_sender {
        return Verdict::Automatic(if from.is_empty() {
            "no sender address".into()
        } else {
            format!("system sender {from}")
        });
    }
    Verdict::Person
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::parse::parse;

    fn verdict(headers: &str) -> Verdict {
        let raw = format!("{headers}\r\n\r\nbody\r\n");
        check(
            &parse(raw.as_bytes()).unwrap(),
            &["support@example.com".into()],
        )
    }

    #[test]
    fn people_with_holiday_subjects_are_people() {
        assert_eq!(
            verdict("From: a@kunde.de\r\nSubject: Abwesenheitsnotiz funktioniert nicht"),
            Verdict::Person
        );
        assert_eq!(
            verdict(
                "From: a@kunde.de\r\nSubject: Out of office replies broken\r\nAuto-Submitted: no"
            ),
            Verdict::Person
        );
    }

    #[test]
    fn headers_mark_machines() {
        for h in [
            "From: a@kunde.de\r\nAuto-Submitted: auto-replied",
            "From: a@kunde.de\r\nPrecedence: bulk",
            "From: a@kunde.de\r\nPrecedence: list",
            "From: a@kunde.de\r\nList-Id: <x.lists.example>",
            "From: a@kunde.de\r\nX-Autoreply: yes",
            "From: a@kunde.de\r\nX-Autorespond: yes",
            "From: a@kunde.de\r\nX-Auto-Response-Suppress: All",
            "Return-Path: <>\r\nFrom: a@kunde.de",
            "From: MAILER-DAEMON@mx.kunde.de",
            "From: noreply@shop.example",
            "From: postmaster@kunde.de",
        ] {
            assert!(verdict(h).is_machine(), "{h}");
        }
        assert!(matches!(
            verdict("From: support@example.com\r\nSubject: x"),
            Verdict::Loop(_)
        ));
    }

    fn check_raw(raw: &[u8]) -> Verdict {
        check(&parse(raw).unwrap(), &["support@example.com".into()])
    }

    #[test]
    fn reports_are_machines() {
        let arf = b"From: feedbackloop@fbl.example\r\nSubject: Abuse Report\r\nContent-Type: multipart/report; report-type=\"feedback-report\"; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nabuse report\r\n--B\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n--B\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <td.9@x>\r\nSubject: hi\r\n\r\nhi\r\n--B--\r\n";
        assert!(matches!(check_raw(arf), Verdict::Bounce(_)));
        let mdn = b"From: a@kunde.de\r\nSubject: Gelesen: x\r\nContent-Type: multipart/report; report-type=disposition-notification; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nread\r\n--B\r\nContent-Type: message/disposition-notification\r\n\r\nDisposition: manual-action/MDN-sent-manually; displayed\r\n--B--\r\n";
        assert!(matches!(check_raw(mdn), Verdict::Automatic(_)));
        // No report-type, but sent by the mail system with the original enclosed.
        let x3 = b"Return-Path: <MAILER-DAEMON@mx.example>\r\nFrom: Mail Delivery System <Mail.Delivery.System@mx.example>\r\nSubject: Delivery status notification\r\nContent-Type: multipart/report; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--B\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <td.2@x>\r\nSubject: y\r\n\r\nhi\r\n--B--\r\n";
        assert!(matches!(check_raw(x3), Verdict::Bounce(_)));
    }

    #[test]
    fn text_bounces_need_the_mail_system_as_sender() {
        for h in [
            "From: MAILER-DAEMON@mx.kunde.de\r\nSubject: failure notice",
            "From: postmaster@kunde.de\r\nSubject: Undeliverable: Drucker",
            "Return-Path: <>\r\nFrom: Mail Delivery System <x@mx.kunde.de>\r\nSubject: Mail delivery failed: returning message to sender",
            "From: MAILER-DAEMON <>\r\nSubject: Returned mail: see transcript for details",
        ] {
            assert!(matches!(verdict(h), Verdict::Bounce(_)), "{h}");
        }
        // A person's subject proves nothing.
        for h in [
            "From: a@kunde.de\r\nSubject: Undeliverable mail from your system",
            "From: a@kunde.de\r\nSubject: failure notice: bounce rate too high",
        ] {
            assert_eq!(verdict(h), Verdict::Person, "{h}");
        }
    }

    #[test]
    fn vendor_vacation_and_list_server_headers() {
        assert!(matches!(
            verdict("From: a@icloud.example\r\nSubject: Auto reply: x\r\nX-Apple-Action: VACATION"),
            Verdict::Automatic(_)
        ));
        assert!(matches!(
            verdict(
                "From: list-admin@kunde.de\r\nSubject: Loop Alert\r\nX-MLServer: fml [fml 4.0.3]"
            ),
            Verdict::Automatic(_)
        ));
    }

    #[test]
    fn dsn_is_a_bounce() {
        let raw = b"From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered Mail\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\nFinal-Recipient: rfc822; bob@kunde.de\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--B\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <td.1@x>\r\nSubject: [Ticket#10001] x\r\n\r\nhi\r\n--B--\r\n";
        let p = parse(raw).unwrap();
        assert!(matches!(check(&p, &[]), Verdict::Bounce(_)));
        let b = p.bounced.unwrap();
        assert_eq!(b.recipients[0].recipient, "bob@kunde.de");
        assert_eq!(b.original_message_id.unwrap().as_str(), "td.1@x");
        assert_eq!(b.original_subject.as_deref(), Some("[Ticket#10001] x"));
    }
}
