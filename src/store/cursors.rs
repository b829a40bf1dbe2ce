//! The IMAP source's cursor per mailbox and folder: where it resumes.
//! Written on the backend-neutral layer ([`super::db`]).

use super::*;

impl Store {
    /// The UID cursor of a mailbox's folder: `(uidvalidity, last_uid)`.
    pub async fn imap_cursor(
        &self,
        mailbox: &str,
        folder: &str,
    ) -> Result<Option<(u32, u32)>, StoreError> {
        let row: Option<(i64, i64)> = db::query_as::<(i64, i64)>(
            "SELECT uidvalidity, last_uid FROM imap_cursors WHERE mailbox = $1 AND folder = $2",
        )
        .bind(mailbox)
        .bind(folder)
        .fetch_optional(&self.db)
        .await?;
        Ok(row.map(|(v, u)| (u32::try_from(v).unwrap_or(0), u32::try_from(u).unwrap_or(0))))
    }

    /// Records that every message of the folder up to `last_uid` (under
    /// `uidvalidity`) is stored.
    pub async fn set_imap_cursor(
        &self,
        mailbox: &str,
        folder: &str,
        uidvalidity: u32,
        last_uid: u32,
        now: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        db::query(
            "INSERT INTO imap_cursors (mailbox, folder, uidvalidity, last_uid, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (mailbox, folder) DO UPDATE SET
               uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, updated_at = excluded.updated_at",
        )
        .bind(mailbox)
        .bind(folder)
        .bind(i64::from(uidvalidity))
        .bind(i64::from(last_uid))
        .bind_ts(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cursor_is_written_and_read_back_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("t.db"), 2)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        assert_eq!(store.imap_cursor("support", "INBOX").await.unwrap(), None);
        let now = "2026-12-03T10:00:00.000Z";
        store
            .set_imap_cursor("support", "INBOX", 7, 42, now)
            .await
            .unwrap();
        store
            .set_imap_cursor("support", "INBOX", 7, 43, now)
            .await
            .unwrap();
        assert_eq!(
            store.imap_cursor("support", "INBOX").await.unwrap(),
            Some((7, 43))
        );
        let at: String = sqlx::query_scalar("SELECT updated_at FROM imap_cursors")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(at, now, "stored in the ts() form");
    }
}
