//! The IMAP source's cursor per mailbox and folder: where it resumes.

use super::*;

impl Store {
    /// The UID cursor of a mailbox's folder: `(uidvalidity, last_uid)`.
    pub async fn imap_cursor(
        &self,
        mailbox: &str,
        folder: &str,
    ) -> Result<Option<(u32, u32)>, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT uidvalidity, last_uid FROM imap_cursors WHERE mailbox = $1 AND folder = $2",
        )
        .bind(mailbox)
        .bind(folder)
        .fetch_optional(&self.pool)
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
        sqlx::query(
            "INSERT INTO imap_cursors (mailbox, folder, uidvalidity, last_uid, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (mailbox, folder) DO UPDATE SET
               uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, updated_at = excluded.updated_at",
        )
        .bind(mailbox)
        .bind(folder)
        .bind(i64::from(uidvalidity))
        .bind(i64::from(last_uid))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
