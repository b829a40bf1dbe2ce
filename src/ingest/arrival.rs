//! When a message arrived, as opposed to when ticketd stored it.
//!
//! The receipt timestamp (Eingangszeitstempel) customers are told and the
//! start of every SLA clock are the message's arrival: a mail that waited
//! in the INBOX while ticketd was stopped keeps the time it reached the
//! mailbox. Sources pass the best time they know; this module only chooses,
//! purely, between that, the top `Received:` header and the commit instant.
//! The sender's `Date:` header is never used: the sender's clock and intent
//! are not the desk's receipt.

use super::parse::ParsedMail;
use jiff::{SignedDuration, Timestamp};

/// How far before its commit an arrival is still believed: 30 days. A time
/// further back (a mailbox restored from a backup, a server clock reset to
/// 1970, a forged `Received:` date) is not the mail's arrival at this desk.
pub const MAX_AGE: SignedDuration = SignedDuration::from_hours(30 * 24);

/// The arrival of a message committed at `commit`: the source's time when
/// it has one, else the date of the top `Received:` header, else the
/// commit itself. A time more than [`MAX_AGE`] before the commit is passed
/// over for the next; a time after the commit (a clock ahead of ours) is
/// taken as the commit: a message never arrives after it was stored.
pub fn arrival(
    source: Option<Timestamp>,
    received: Option<Timestamp>,
    commit: Timestamp,
) -> Timestamp {
    let oldest = commit.checked_sub(MAX_AGE).unwrap_or(Timestamp::MIN);
    [source, received]
        .into_iter()
        .flatten()
        .find(|t| *t >= oldest)
        .map_or(commit, |t| t.min(commit))
}

/// The date of the top (newest) `Received:` header, after its last `;`
/// (RFC 5322 section 3.6.7), when it is a valid date.
pub fn top_received(mail: &ParsedMail) -> Option<Timestamp> {
    let value = mail.header("received")?;
    let (_, date) = value.rsplit_once(';')?;
    let d = mail_parser::DateTime::parse_rfc822(date.trim())?;
    if !d.is_valid() {
        return None;
    }
    Timestamp::from_second(d.to_timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_source_first_then_received_then_the_commit() {
        let commit = at("2026-12-03T08:15:06Z");
        let source = at("2026-12-03T07:13:48Z");
        let received = at("2026-12-03T07:13:40Z");
        assert_eq!(arrival(Some(source), Some(received), commit), source);
        assert_eq!(arrival(None, Some(received), commit), received);
        assert_eq!(arrival(None, None, commit), commit);
    }

    #[test]
    fn never_after_the_commit_nor_absurdly_before_it() {
        let commit = at("2026-12-03T08:15:06Z");
        // A server clock ahead of ours.
        assert_eq!(
            arrival(Some(at("2026-12-03T08:20:00Z")), None, commit),
            commit
        );
        // A clock reset to 1970: the Received date is taken instead, and
        // without one the commit.
        let received = at("2026-12-03T07:00:00Z");
        assert_eq!(
            arrival(Some(at("1970-01-01T00:00:00Z")), Some(received), commit),
            received
        );
        assert_eq!(
            arrival(Some(at("1970-01-01T00:00:00Z")), None, commit),
            commit
        );
        // 29 days back is believed (a long outage), 31 days are not.
        let d29 = commit - SignedDuration::from_hours(29 * 24);
        assert_eq!(arrival(Some(d29), None, commit), d29);
        let d31 = commit - SignedDuration::from_hours(31 * 24);
        assert_eq!(arrival(Some(d31), None, commit), commit);
    }

    #[test]
    fn top_received_is_read_and_the_date_header_never() {
        let m = super::super::parse::parse(
            b"Received: from mx.example by desk.example; Thu, 3 Dec 2026 08:13:48 +0100\r\n\
              Received: from client by mx.example; Thu, 3 Dec 2026 08:13:40 +0100\r\n\
              Date: Wed, 1 Jan 2020 00:00:00 +0000\r\nFrom: a@b.example\r\nSubject: x\r\n\r\nx\r\n",
        )
        .unwrap();
        assert_eq!(top_received(&m), Some(at("2026-12-03T07:13:48Z")));
        let none = super::super::parse::parse(
            b"Date: Wed, 1 Jan 2020 00:00:00 +0000\r\nFrom: a@b.example\r\nSubject: x\r\n\r\nx\r\n",
        )
        .unwrap();
        assert_eq!(top_received(&none), None);
        let garbled = super::super::parse::parse(
            b"Received: from mx.example; yesterday\r\nFrom: a@b.example\r\nSubject: x\r\n\r\nx\r\n",
        )
        .unwrap();
        assert_eq!(top_received(&garbled), None);
    }
}
