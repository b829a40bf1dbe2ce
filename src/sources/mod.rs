//! Sources turn the outside into raw messages: files and stdin for the MTA
//! pipe, Maildirs and IMAP mailboxes for `run`. A source acknowledges a
//! message (answers the MTA, moves the Maildir file, flags and moves the
//! IMAP message) only after the store has committed it.

pub mod discord;
pub mod graph;
pub mod imap;
pub mod maildir;
pub mod socket;

use std::io::Read;
use std::path::Path;

/// Largest message the hand-over socket takes at all (SQLite's largest
/// value is 1,000,000,000 bytes); what a desk accepts is
/// `[intake] max_message_bytes`, checked before the hand-over.
pub const MAX_MESSAGE_BYTES: u64 = 1_000_000_000;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The input could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The message is larger than the configured limit: a permanent
    /// refusal (the MTA bounces it with 5.3.4; a Maildir or IMAP message
    /// stays in its mailbox).
    #[error("message larger than {limit} bytes ([intake] max_message_bytes)")]
    TooBig {
        /// The limit in bytes.
        limit: u64,
    },
}

/// Reads one whole message of at most `limit` bytes from stdin.
pub fn read_stdin(limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)?;
    check_size(buf, limit)
}

/// Reads one whole message of at most `limit` bytes from a file; a larger
/// file is refused by its size, without reading it.
pub fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    if size > limit {
        return Err(ReadError::TooBig { limit });
    }
    // Exactly the file's size (it may still grow: the limit holds).
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
    f.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    check_size(buf, limit)
}

fn check_size(buf: Vec<u8>, limit: u64) -> Result<Vec<u8>, ReadError> {
    if buf.len() as u64 > limit {
        return Err(ReadError::TooBig { limit });
    }
    Ok(buf)
}
