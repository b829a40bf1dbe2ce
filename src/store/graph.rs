//! The delta cursors of the Microsoft Graph mailboxes
//! ([`crate::sources::graph`]): per mailbox and folder, the
//! `@odata.deltaLink` of the last round whose messages are all stored.
//! Written on the backend-neutral layer ([`super::db`]), but for the
//! delete, which goes through the store's one-statement write.

use super::{db, Store, StoreError};

impl Store {
    /// The delta link `mailbox`'s `folder` was last read up to, if any.
    pub async fn graph_cursor(
        &self,
        mailbox: &str,
        folder: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(db::query_scalar::<String>(
            "SELECT delta_link FROM graph_cursors WHERE mailbox = $1 AND folder = $2",
        )
        .bind(mailbox)
        .bind(folder)
        .fetch_optional(&self.db)
        .await?)
    }

    /// Records that every message up to `delta_link` is stored.
    pub async fn set_graph_cursor(
        &self,
        mailbox: &str,
        folder: &str,
        delta_link: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        db::query(
            "INSERT INTO graph_cursors (mailbox, folder, delta_link, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (mailbox, folder) DO UPDATE SET
               delta_link = excluded.delta_link, updated_at = excluded.updated_at",
        )
        .bind(mailbox)
        .bind(folder)
        .bind(delta_link)
        .bind_ts(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the cursor (Graph no longer knows the link): the next round
    /// starts a fresh delta.
    pub async fn clear_graph_cursor(&self, mailbox: &str, folder: &str) -> Result<(), StoreError> {
        self.write_one(
            sqlx::query("DELETE FROM graph_cursors WHERE mailbox = $1 AND folder = $2")
                .bind(mailbox)
                .bind(folder),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cursor_is_replaced_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("t.db"), 2)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        assert_eq!(store.graph_cursor("desk", "Inbox").await.unwrap(), None);
        store
            .set_graph_cursor(
                "desk",
                "Inbox",
                "https://g/delta?$deltatoken=1",
                "2026-12-03T10:00:00.000Z",
            )
            .await
            .unwrap();
        store
            .set_graph_cursor(
                "desk",
                "Inbox",
                "https://g/delta?$deltatoken=2",
                "2026-12-03T10:01:00.000Z",
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .graph_cursor("desk", "Inbox")
                .await
                .unwrap()
                .as_deref(),
            Some("https://g/delta?$deltatoken=2")
        );
        assert_eq!(store.graph_cursor("other", "Inbox").await.unwrap(), None);
        store.clear_graph_cursor("desk", "Inbox").await.unwrap();
        assert_eq!(store.graph_cursor("desk", "Inbox").await.unwrap(), None);
    }
}
