//! Secrets every process of a desk shares, kept in the database with the
//! data they protect (today the MAC key of our Message-IDs): created once,
//! the first stored value wins, so processes starting together agree.
//! Written on the backend-neutral layer ([`super::db`]).

use super::{db, Store, StoreError};

impl Store {
    /// The shared secret `name`: the stored value, else the value of
    /// `make` stored now — unless another process stored one first, whose
    /// value is returned instead.
    pub async fn shared_secret(
        &self,
        name: &str,
        make: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Vec<u8>, StoreError> {
        if let Some(v) = self.read_secret(name).await? {
            return Ok(v);
        }
        let value = make().map_err(StoreError::Corrupt)?;
        db::query(
            "INSERT INTO shared_secrets (name, value, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value.as_slice())
        .bind_ts(jiff::Timestamp::now())
        .execute(&self.db)
        .await?;
        self.read_secret(name)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("shared secret {name} not stored")))
    }

    async fn read_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            db::query_scalar::<Vec<u8>>("SELECT value FROM shared_secrets WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.db)
                .await?,
        )
    }
}
