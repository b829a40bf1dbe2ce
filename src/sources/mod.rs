//! Sources turn the outside into raw messages: files and stdin for the MTA
//! pipe, Maildirs and IMAP mailboxes for `run`. A source acknowledges a
//! message (answers the MTA, moves the Maildir file, flags and moves the
//! IMAP message) only after the store has committed it.

pub mod discord;
pub mod imap;
pub mod maildir;
pub mod socket;

use std::io::Read;
use std::path::Path;

/// Largest message accepted from a pipe or file (the MTA's own limit is
/// normally far lower); beyond it the input is refused, not truncated.
pub const MAX_MESSAGE_BYTES: u64 = 256 * 1024 * 1024;

/// Reads one whole message from stdin.
pub fn read_stdin() -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_MESSAGE_BYTES + 1)
        .read_to_end(&mut buf)?;
    check_size(buf)
}

/// Reads one whole message from a file.
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(MAX_MESSAGE_BYTES + 1).read_to_end(&mut buf)?;
    check_size(buf)
}

fn check_size(buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
    if buf.len() as u64 > MAX_MESSAGE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("message larger than {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    Ok(buf)
}
