//! The MAC key that signs our outgoing Message-IDs, so that a reply's
//! References can be verified to name one of our tickets even when the row
//! that recorded the id is gone. Generated on first start, kept in the data
//! directory with mode 0600.

use std::io::Write;
use std::path::Path;

/// The secret key; never printed.
#[derive(Clone)]
pub struct MacKey(pub Vec<u8>);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(<secret>)")
    }
}

/// File name of the key inside the data directory.
pub const KEY_FILE: &str = "message-id.key";

impl MacKey {
    /// Loads the key from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> std::io::Result<MacKey> {
        let path = dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim()).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: not a hex key: {e}", path.display()),
                    )
                })?;
                if bytes.len() < 16 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: key shorter than 16 bytes", path.display()),
                    ));
                }
                Ok(MacKey(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = vec![0u8; 32];
                getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
                // Write to a temporary name and link it into place, so two
                // processes starting together agree on one key.
                let tmp = dir.join(format!("{KEY_FILE}.{}", std::process::id()));
                {
                    let mut opts = std::fs::OpenOptions::new();
                    opts.write(true).create_new(true);
                    #[cfg(unix)]
                    {
                        use std::os::unix::fs::OpenOptionsExt;
                        opts.mode(0o600);
                    }
                    let mut f = opts.open(&tmp)?;
                    f.write_all(hex::encode(&bytes).as_bytes())?;
                    f.sync_all()?;
                }
                let linked = std::fs::hard_link(&tmp, &path);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => Ok(MacKey(bytes)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        MacKey::load_or_create(dir)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}
