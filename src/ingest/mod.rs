//! The pure intake pipeline: parse → guard → thread → classify → decide.
//!
//! Nothing here does I/O or reads the clock: the store looks up what a
//! message needs ([`decide::Lookups`]) and passes it in, so every stage is
//! unit-tested and benchmarked without a database or a server.

pub mod classify;
pub mod decide;
pub mod guard;
pub mod parse;
pub mod thread;

use crate::domain::{MessageId, TicketNumber};
use parse::ParsedMail;
use thread::{IdSigner, SubjectTag};

/// What the store must look up for a message before it can be decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupKeys {
    /// In-Reply-To and References ids (to find a ticket by stored ids).
    pub thread_ids: Vec<MessageId>,
    /// Ticket numbers proven by our signed Message-IDs among `thread_ids`.
    pub signed_numbers: Vec<TicketNumber>,
    /// The number in the subject tag.
    pub tag_number: Option<TicketNumber>,
    /// For a bounce: ids of the bounced mail.
    pub bounced_ids: Vec<MessageId>,
    /// For a bounce: ticket numbers of the bounced mail (tag or signed id).
    pub bounced_numbers: Vec<TicketNumber>,
}

/// Works out which ids and numbers to look up for a message.
pub fn lookup_keys(mail: &ParsedMail, tag: &SubjectTag, signer: &IdSigner) -> LookupKeys {
    let thread_ids = mail.thread_ids();
    let signed_numbers = unique(thread_ids.iter().filter_map(|id| signer.verify(id)));
    let mut keys = LookupKeys {
        tag_number: tag.find(&mail.subject),
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

fn unique<T: PartialEq>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for x in it {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}
