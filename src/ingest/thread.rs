//! Stage 4 helpers: the subject tag and our signed Message-IDs.
//!
//! A follow-up is found by the ids in In-Reply-To/References (looked up in
//! the store, or verified by their MAC when they are ours) or by the ticket
//! tag in the subject, wherever a mail client put it behind its prefixes.

use crate::domain::{MessageId, TicketNumber};
use crate::keys::MacKey;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Finds and writes the subject tag `[Ticket#10001]`.
#[derive(Debug, Clone)]
pub struct SubjectTag {
    word: String,
    prefix: String,
}

impl SubjectTag {
    /// A tag with the configured word (`Ticket`) and number prefix.
    pub fn new(word: &str, number_prefix: &str) -> Self {
        SubjectTag {
            word: word.to_string(),
            prefix: number_prefix.to_string(),
        }
    }

    /// The tag for a ticket, as put in subjects.
    pub fn render(&self, number: &TicketNumber) -> String {
        format!("[{}#{}]", self.word, number)
    }

    /// Every ticket number tagged in a subject, in order. Tolerates the
    /// spaces and case changes mail clients introduce (`[ticket # 10001]`).
    pub fn find_all(&self, subject: &str) -> Vec<TicketNumber> {
        let mut out = Vec::new();
        let bytes = subject.as_bytes();
        let mut i = 0;
        while let Some(pos) = subject[i..].find('[') {
            let start = i + pos + 1;
            i = start;
            if let Some(n) = self.parse_at(&subject[start..]) {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
            if i >= bytes.len() {
                break;
            }
        }
        out
    }

    /// The subject without any of our tags (a stranger's mail that quotes
    /// another ticket's subject must not carry that ticket's tag on).
    pub fn strip(&self, subject: &str) -> String {
        let mut out = String::with_capacity(subject.len());
        let mut rest = subject;
        while let Some(pos) = rest.find('[') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            match (self.parse_at(after), after.find(']')) {
                (Some(_), Some(end)) => rest = &after[end + 1..],
                _ => {
                    out.push('[');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        crate::domain::header_safe(&out.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// The first ticket number tagged in a subject.
    pub fn find(&self, subject: &str) -> Option<TicketNumber> {
        self.find_all(subject).into_iter().next()
    }

    /// Parses `Word # number ]` at the start of `s` (after the `[`).
    fn parse_at(&self, s: &str) -> Option<TicketNumber> {
        let s = s.trim_start();
        let head = s.get(..self.word.len())?;
        if !head.eq_ignore_ascii_case(&self.word) {
            return None;
        }
        let s = s[self.word.len()..].trim_start();
        let s = s.strip_prefix('#')?.trim_start();
        let rest = if self.prefix.is_empty() {
            s
        } else {
            let p = s.get(..self.prefix.len())?;
            if !p.eq_ignore_ascii_case(&self.prefix) {
                return None;
            }
            &s[self.prefix.len()..]
        };
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() || digits.len() > 18 {
            return None;
        }
        let after = rest[digits.len()..].trim_start();
        if !after.starts_with(']') {
            return None;
        }
        Some(TicketNumber(format!("{}{}", self.prefix, digits)))
    }
}

type HmacSha256 = Hmac<Sha256>;

/// What a notice id's MAC is taken over in place of a ticket number (no
/// ticket number has a dash).
const NOTICE: &str = "td-n";

/// What a staff mail id's MAC is taken over before the ticket number, so
/// that no customer-facing ticket id can be turned into one.
const STAFF: &str = "td-s:";

/// What a digest id's MAC is taken over in place of a ticket number.
const DIGEST: &str = "td-d";

/// Writes and verifies our outgoing Message-IDs:
/// `td.<number>.<nonce>.<mac>@<domain>`, the MAC over number and nonce.
#[derive(Debug, Clone)]
pub struct IdSigner {
    key: MacKey,
    domain: String,
}

impl IdSigner {
    /// A signer with the data directory's key and our id domain.
    pub fn new(key: MacKey, domain: &str) -> Self {
        IdSigner {
            key,
            domain: domain.to_string(),
        }
    }

    fn mac(&self, number: &str, nonce: &str) -> String {
        // new_from_slice accepts keys of any length for HMAC.
        let mut m = match HmacSha256::new_from_slice(&self.key.0) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        m.update(number.as_bytes());
        m.update(b".");
        m.update(nonce.as_bytes());
        hex::encode(&m.finalize().into_bytes()[..10])
    }

    /// A new Message-ID for a mail on `number`; `nonce` makes it unique.
    pub fn message_id(&self, number: &TicketNumber, nonce: &str) -> MessageId {
        let mac = self.mac(number.as_str(), nonce);
        MessageId(format!("td.{}.{}.{}@{}", number, nonce, mac, self.domain))
    }

    /// A Message-ID of ours for a mail that belongs to no ticket (a
    /// registration notice): it names no ticket, so a reply to it threads
    /// nowhere; its MAC lets [`IdSigner::is_notice`] recognise an answer to
    /// it (another desk's notice answering ours) without a lookup.
    pub fn notice_id(&self, nonce: &str) -> MessageId {
        let mac = self.mac(NOTICE, nonce);
        MessageId(format!("td-n.{nonce}.{mac}@{}", self.domain))
    }

    /// Whether `id` is one of our notice ids ([`IdSigner::notice_id`]) with
    /// a valid MAC.
    pub fn is_notice(&self, id: &MessageId) -> bool {
        let Some((local, _domain)) = id.as_str().rsplit_once('@') else {
            return false;
        };
        let Some((nonce, mac)) = local
            .strip_prefix("td-n.")
            .and_then(|rest| rest.rsplit_once('.'))
        else {
            return false;
        };
        let expect = self.mac(NOTICE, nonce);
        !expect.is_empty() && constant_time_eq(expect.as_bytes(), mac.as_bytes())
    }

    /// A Message-ID of ours for a mail to staff about ticket `number` (an
    /// SLA reminder, an over-quota notice): `td-s.<number>.<nonce>.<mac>`.
    /// It is not a ticket id, so an answer to it never threads onto the
    /// customer's conversation; [`IdSigner::verify_staff`] finds the ticket
    /// for it, to file the answer as a note.
    pub fn staff_id(&self, number: &TicketNumber, nonce: &str) -> MessageId {
        let mac = self.mac(&format!("{STAFF}{number}"), nonce);
        MessageId(format!("td-s.{}.{}.{}@{}", number, nonce, mac, self.domain))
    }

    /// The ticket number inside one of our staff mail ids
    /// ([`IdSigner::staff_id`]), when its MAC is valid.
    pub fn verify_staff(&self, id: &MessageId) -> Option<TicketNumber> {
        let (local, _domain) = id.as_str().rsplit_once('@')?;
        let rest = local.strip_prefix("td-s.")?;
        let mut it = rest.rsplitn(3, '.');
        let mac = it.next()?;
        let nonce = it.next()?;
        let number = it.next()?;
        let expect = self.mac(&format!("{STAFF}{number}"), nonce);
        if !expect.is_empty() && constant_time_eq(expect.as_bytes(), mac.as_bytes()) {
            Some(TicketNumber(number.to_string()))
        } else {
            None
        }
    }

    /// A Message-ID of ours for a mail to staff about no single ticket (a
    /// digest, and the refusal of an answer to one): `td-d.<nonce>.<mac>`.
    pub fn digest_id(&self, nonce: &str) -> MessageId {
        let mac = self.mac(DIGEST, nonce);
        MessageId(format!("td-d.{nonce}.{mac}@{}", self.domain))
    }

    /// Whether `id` is one of our digest ids ([`IdSigner::digest_id`]) with
    /// a valid MAC.
    pub fn is_digest(&self, id: &MessageId) -> bool {
        let Some((local, _domain)) = id.as_str().rsplit_once('@') else {
            return false;
        };
        let Some((nonce, mac)) = local
            .strip_prefix("td-d.")
            .and_then(|rest| rest.rsplit_once('.'))
        else {
            return false;
        };
        let expect = self.mac(DIGEST, nonce);
        !expect.is_empty() && constant_time_eq(expect.as_bytes(), mac.as_bytes())
    }

    /// The ticket number inside one of our Message-IDs, when its MAC is valid.
    pub fn verify(&self, id: &MessageId) -> Option<TicketNumber> {
        let (local, _domain) = id.as_str().rsplit_once('@')?;
        let rest = local.strip_prefix("td.")?;
        let mut it = rest.rsplitn(3, '.');
        let mac = it.next()?;
        let nonce = it.next()?;
        let number = it.next()?;
        let expect = self.mac(number, nonce);
        if !expect.is_empty() && constant_time_eq(expect.as_bytes(), mac.as_bytes()) {
            Some(TicketNumber(number.to_string()))
        } else {
            None
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tag() -> SubjectTag {
        SubjectTag::new("Ticket", "")
    }

    #[test]
    fn tag_behind_any_prefix_chain() {
        for s in [
            "[Ticket#10001] Drucker",
            "Re: [Ticket#10001] Drucker",
            "AW: WG: [Ticket#10001] Drucker",
            "RE:RE: Fwd: [Ticket#10001] Drucker",
            "SV: VS: Antw: [Ticket#10001] Drucker",
            "Antwort: [ticket # 10001 ] Drucker",
            "Drucker [Ticket#10001]",
        ] {
            assert_eq!(tag().find(s), Some(TicketNumber("10001".into())), "{s}");
        }
        assert_eq!(tag().find("[Ticket#] x"), None);
        assert_eq!(tag().find("[Tick#10001] x"), None);
        assert_eq!(tag().find("Ticket#10001 x"), None);
    }

    #[test]
    fn strip_removes_only_our_tags() {
        assert_eq!(
            tag().strip("Re: [Ticket#10001] Drucker [x]"),
            "Re: Drucker [x]"
        );
        assert_eq!(tag().strip("[Ticket # 7]"), "");
        assert_eq!(tag().strip("a [b"), "a [b");
    }

    #[test]
    fn prefixed_numbers() {
        let t = SubjectTag::new("TD", "SD-");
        assert_eq!(
            t.find("Re: [TD#SD-42] x"),
            Some(TicketNumber("SD-42".into()))
        );
        assert_eq!(t.find("Re: [TD#42] x"), None);
    }

    #[test]
    fn notice_ids_are_signed_and_told_apart_from_ticket_ids() {
        let s = IdSigner::new(MacKey(b"k".to_vec()), "desk.example");
        let other = IdSigner::new(MacKey(b"other".to_vec()), "desk.example");
        let n = s.notice_id("a1b2c3");
        assert!(n.as_str().starts_with("td-n.a1b2c3."), "{n:?}");
        assert!(s.is_notice(&n));
        assert!(!other.is_notice(&n), "another desk's key");
        assert_eq!(s.verify(&n), None, "names no ticket");
        let forged = MessageId(n.as_str().replace("a1b2c3", "a1b2c4"));
        assert!(!s.is_notice(&forged));
        assert!(!s.is_notice(&MessageId("td-n.a1b2c3@desk.example".into())));
        let t = s.message_id(&TicketNumber("10001".into()), "a1b2c3");
        assert!(!s.is_notice(&t));
    }

    #[test]
    fn staff_and_digest_ids_are_signed_and_told_apart() {
        let s = IdSigner::new(MacKey(vec![7; 32]), "desk.example");
        let other = IdSigner::new(MacKey(vec![8; 32]), "desk.example");
        let n = TicketNumber("10042".into());
        let st = s.staff_id(&n, "a1b2c3");
        assert!(st.as_str().starts_with("td-s.10042.a1b2c3."), "{st:?}");
        assert_eq!(s.verify_staff(&st), Some(n.clone()));
        assert_eq!(s.verify(&st), None, "not a ticket id");
        assert!(!s.is_notice(&st) && !s.is_digest(&st));
        assert_eq!(other.verify_staff(&st), None, "another desk's key");
        let forged = MessageId(st.as_str().replace("10042", "10043"));
        assert_eq!(s.verify_staff(&forged), None);
        // A customer-facing ticket id cannot be passed off as a staff id.
        let t = s.message_id(&n, "a1b2c3");
        let relabelled = MessageId(t.as_str().replacen("td.", "td-s.", 1));
        assert_eq!(s.verify_staff(&relabelled), None);
        assert_eq!(s.verify_staff(&t), None);
        let d = s.digest_id("a1b2c3");
        assert!(s.is_digest(&d));
        assert!(!other.is_digest(&d));
        assert!(!s.is_notice(&d) && s.verify(&d).is_none() && s.verify_staff(&d).is_none());
        assert!(!s.is_digest(&s.notice_id("a1b2c3")));
    }

    #[test]
    fn signed_ids_verify_and_forgeries_fail() {
        let s = IdSigner::new(MacKey(vec![7; 32]), "desk.example");
        let id = s.message_id(&TicketNumber("10042".into()), "a1b2c3");
        assert_eq!(s.verify(&id), Some(TicketNumber("10042".into())));
        let forged = MessageId(id.as_str().replace("10042", "10043"));
        assert_eq!(s.verify(&forged), None);
        let other = IdSigner::new(MacKey(vec![8; 32]), "desk.example");
        assert_eq!(other.verify(&id), None);
    }

    proptest! {
        #[test]
        fn find_never_panics(s in ".{0,200}") {
            let _ = tag().find_all(&s);
        }

        #[test]
        fn rendered_tag_is_found_behind_prefixes(n in 1u64..10_000_000_000u64, pre in "(Re: |AW: |WG: |Fwd: |SV: |VS: |Antw: ){0,5}", rest in "[^\\[\\]]{0,40}") {
            let num = TicketNumber(n.to_string());
            let s = format!("{pre}{} {rest}", tag().render(&num));
            prop_assert_eq!(tag().find(&s), Some(num));
        }
    }
}
