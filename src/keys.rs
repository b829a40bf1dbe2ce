//! The MAC key that signs our outgoing Message-IDs, so that a reply's
//! References can be verified to name one of our tickets even when the row
//! that recorded the id is gone. Generated on first start and kept in the
//! database, so every process of the desk signs and verifies alike.

use crate::store::Store;
use std::path::Path;

/// The secret key; never printed.
#[derive(Clone)]
pub struct MacKey(pub Vec<u8>);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(<secret>)")
    }
}

/// File name of the key inside the data directory, where installs before
/// the key moved into the database kept it: read once, when the database
/// has no key yet.
pub const KEY_FILE: &str = "message-id.key";

/// Name of the key among the database's shared secrets.
pub const SECRET_NAME: &str = "message-id";

impl MacKey {
    /// The desk's key, from the database (shared by every process that
    /// uses it). The first process creates it: from the key file in
    /// `data_dir` when there is one (an install from before the key moved
    /// into the database keeps its key, so its old mails still verify),
    /// else 32 random bytes.
    pub async fn load(store: &Store, data_dir: &Path) -> Result<MacKey, String> {
        let file = data_dir.join(KEY_FILE);
        let bytes = store
            .shared_secret(SECRET_NAME, || match std::fs::read_to_string(&file) {
                Ok(text) => from_hex(&text).map_err(|e| format!("{}: {e}", file.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let mut bytes = vec![0u8; 32];
                    getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
                    Ok(bytes)
                }
                Err(e) => Err(format!("{}: {e}", file.display())),
            })
            .await
            .map_err(|e| e.to_string())?;
        if bytes.len() < 16 {
            return Err("the stored Message-ID key is shorter than 16 bytes".into());
        }
        Ok(MacKey(bytes))
    }
}

/// A key file's hex text as bytes (at least 16).
fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let bytes = hex::decode(text.trim()).map_err(|e| format!("not a hex key: {e}"))?;
    if bytes.len() < 16 {
        return Err("key shorter than 16 bytes".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(dir: &Path) -> Store {
        let store = Store::open_sqlite(&dir.join("ticketd.db"), 2)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store
    }

    #[tokio::test]
    async fn the_key_is_made_once_and_shared_through_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let a = MacKey::load(&store, dir.path()).await.unwrap();
        assert_eq!(a.0.len(), 32);
        // No file is written: the database holds it.
        assert!(!dir.path().join(KEY_FILE).exists());
        // Another process (another data directory, same database) gets it.
        let elsewhere = tempfile::tempdir().unwrap();
        let b = MacKey::load(&store, elsewhere.path()).await.unwrap();
        assert_eq!(a.0, b.0);
    }

    #[tokio::test]
    async fn an_install_with_a_key_file_keeps_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let old = vec![7u8; 32];
        std::fs::write(dir.path().join(KEY_FILE), hex::encode(&old)).unwrap();
        let store = store(dir.path()).await;
        assert_eq!(MacKey::load(&store, dir.path()).await.unwrap().0, old);
        // Once stored, the database's key is the key.
        std::fs::write(dir.path().join(KEY_FILE), hex::encode([9u8; 32])).unwrap();
        assert_eq!(MacKey::load(&store, dir.path()).await.unwrap().0, old);
    }

    #[tokio::test]
    async fn a_broken_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "zz").unwrap();
        let store = store(dir.path()).await;
        let e = MacKey::load(&store, dir.path()).await.unwrap_err();
        assert!(e.contains("not a hex key"), "{e}");
    }
}
