//! The pure intake pipeline: parse → guard → thread → classify → decide.
//!
//! Nothing here does I/O or reads the clock: the store looks up what a
//! message needs ([`decide::Lookups`]) and passes it in, so every stage is
//! unit-tested and benchmarked without a database or a server.

pub mod alerts;
pub mod arrival;
pub mod classify;
pub mod decide;
pub mod guard;
pub mod language;
pub mod parse;
pub mod thread;

use crate::domain::TicketNumber;
use parse::ParsedMail;
use thread::{IdSigner, SubjectTag};

pub use crate::plan::LookupKeys;

/// Works out which ids and numbers to look up for a message.
pub fn lookup_keys(mail: &ParsedMail, tag: &SubjectTag, signer: &IdSigner) -> LookupKeys {
    let thread_ids = mail.thread_ids();
    let signed_numbers = unique(thread_ids.iter().filter_map(|id| signer.verify(id)));
    let answers_notice = thread_ids.iter().any(|id| signer.is_notice(id));
    let staff_numbers = unique(thread_ids.iter().filter_map(|id| signer.verify_staff(id)));
    let answers_digest = thread_ids.iter().any(|id| signer.is_digest(id));
    let mut keys = LookupKeys {
        tag_number: tag.find(&mail.subject),
        answers_notice,
        staff_numbers,
        answers_digest,
        thread_ids,
        signed_numbers,
        ..Default::default()
    };
    if let Some(b) = &mail.bounced {
        keys.bounced_ids = b
            .original_message_id
            .iter()
            .chain(b.original_references.iter())
            .cloned()
            .collect();
        let mut numbers: Vec<TicketNumber> = keys
            .bounced_ids
            .iter()
            .filter_map(|id| signer.verify(id))
            .collect();
        if let Some(s) = &b.original_subject {
            numbers.extend(tag.find(s));
        }
        keys.bounced_numbers = unique(numbers.into_iter());
    }
    keys
}

/// The key under which a message is stored once: its Message-ID with a
/// short hash of its Date, From and Subject, or the raw SHA-256 when it has
/// no Message-ID.
///
/// The same mail delivered twice — even through another relay that added
/// `Received` lines — keeps these three headers and is a duplicate; a sender
/// that reuses one Message-ID for different mails (seen with monitoring
/// systems) does not lose the later ones.
pub fn dedupe_key(mail: Option<&ParsedMail>, sha256: &str) -> String {
    use sha2::{Digest, Sha256};
    match mail.and_then(|m| m.message_id.as_ref().map(|id| (m, id))) {
        Some((m, id)) => {
            let mut h = Sha256::new();
            for name in ["date", "from", "subject"] {
                h.update(m.header(name).unwrap_or("").as_bytes());
                h.update([0u8]);
            }
            format!("mid:{}:{}", id.as_str(), &hex::encode(h.finalize())[..16])
        }
        None => format!("sha:{sha256}"),
    }
}

fn unique<T: PartialEq>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for x in it {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_key_ignores_relay_headers_but_not_reused_ids() {
        let a = parse::parse(b"From: a@b.de\r\nSubject: x\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <1@b>\r\n\r\nhi\r\n").unwrap();
        let relayed = parse::parse(b"Received: from relay\r\nFrom: a@b.de\r\nSubject: x\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <1@b>\r\n\r\nhi\r\n").unwrap();
        let reused = parse::parse(b"From: a@b.de\r\nSubject: y\r\nDate: Mon, 1 Jan 2024 11:00:00 +0000\r\nMessage-ID: <1@b>\r\n\r\nho\r\n").unwrap();
        let k = |m: &ParsedMail| dedupe_key(Some(m), &m.sha256);
        assert_eq!(k(&a), k(&relayed));
        assert_ne!(k(&a), k(&reused));
        assert!(k(&a).starts_with("mid:1@b:"));
        assert_eq!(dedupe_key(None, "ab"), "sha:ab");
    }
}
