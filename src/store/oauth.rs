//! OAuth 2.0 grants per account (`imap:NAME`, `smtp`): what
//! [`crate::oauth`] got from the token endpoint, written as given. No HTTP
//! here. Tokens travel as plain strings only between this module and the
//! token manager; the row type redacts them in `Debug`. Written on the
//! backend-neutral layer ([`super::db`]).

use super::{db, Store, StoreError};

/// A stored grant.
#[derive(Clone, PartialEq, Eq)]
pub struct GrantRow {
    /// `imap:NAME` or `smtp`.
    pub account: String,
    /// The refresh token (device code and authorization code grants).
    pub refresh_token: Option<String>,
    /// The last access token.
    pub access_token: Option<String>,
    /// When the access token expires (`ts` text).
    pub access_expires_at: Option<String>,
    /// The scopes granted (space-separated), as the provider said.
    pub scope: Option<String>,
    /// When a token was last obtained.
    pub last_refresh_at: Option<String>,
    /// Why the last attempt failed; `None` after a success.
    pub last_error: Option<String>,
    /// `permanent` or `temporary`, with `last_error`.
    pub last_error_kind: Option<String>,
    /// Tokens obtained for this account so far.
    pub refresh_count: i64,
    /// When the row last changed.
    pub updated_at: String,
}

impl std::fmt::Debug for GrantRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present = |t: &Option<String>| if t.is_some() { "[redacted]" } else { "none" };
        f.debug_struct("GrantRow")
            .field("account", &self.account)
            .field("refresh_token", &present(&self.refresh_token))
            .field("access_token", &present(&self.access_token))
            .field("access_expires_at", &self.access_expires_at)
            .field("scope", &self.scope)
            .field("last_refresh_at", &self.last_refresh_at)
            .field("last_error", &self.last_error)
            .field("last_error_kind", &self.last_error_kind)
            .field("refresh_count", &self.refresh_count)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// What a token endpoint answered, to be stored.
pub struct NewTokens<'a> {
    /// The new access token.
    pub access_token: &'a str,
    /// When it expires (`ts` text).
    pub access_expires_at: &'a str,
    /// A refresh token, when the provider sent one (a rotated one replaces
    /// the stored one; `None` keeps it).
    pub refresh_token: Option<&'a str>,
    /// The scopes granted, when the provider said.
    pub scope: Option<&'a str>,
}

const SELECT: &str = "SELECT account, refresh_token, access_token, access_expires_at, scope,
    last_refresh_at, last_error, last_error_kind, refresh_count, updated_at FROM oauth_grants";

fn from_row(r: &db::Row) -> Result<GrantRow, sqlx::Error> {
    Ok(GrantRow {
        account: r.try_get("account")?,
        refresh_token: r.try_get("refresh_token")?,
        access_token: r.try_get("access_token")?,
        access_expires_at: r.try_get("access_expires_at")?,
        scope: r.try_get("scope")?,
        last_refresh_at: r.try_get("last_refresh_at")?,
        last_error: r.try_get("last_error")?,
        last_error_kind: r.try_get("last_error_kind")?,
        refresh_count: r.try_get("refresh_count")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// The grant of one account.
    pub async fn oauth_grant(&self, account: &str) -> Result<Option<GrantRow>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{SELECT} WHERE account = $1"));
        let row = db::query(sql)
            .bind(account)
            .fetch_optional(&self.db)
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Every stored grant, by account.
    pub async fn oauth_grants(&self) -> Result<Vec<GrantRow>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("{SELECT} ORDER BY account"));
        let rows = db::query(sql).fetch_all(&self.db).await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Stores a new access token and, when the provider rotated it, the new
    /// refresh token: one statement, one transaction. Clears the last
    /// error and counts the refresh.
    pub async fn save_oauth_tokens(
        &self,
        account: &str,
        tokens: &NewTokens<'_>,
        now: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        db::query(
            "INSERT INTO oauth_grants (account, refresh_token, access_token, access_expires_at,
                 scope, last_refresh_at, last_error, last_error_kind, refresh_count, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, 1, $6)
             ON CONFLICT (account) DO UPDATE SET
               refresh_token = COALESCE(excluded.refresh_token, oauth_grants.refresh_token),
               access_token = excluded.access_token,
               access_expires_at = excluded.access_expires_at,
               scope = COALESCE(excluded.scope, oauth_grants.scope),
               last_refresh_at = excluded.last_refresh_at,
               last_error = NULL, last_error_kind = NULL,
               refresh_count = oauth_grants.refresh_count + 1,
               updated_at = excluded.updated_at",
        )
        .bind(account)
        .bind(tokens.refresh_token)
        .bind(tokens.access_token)
        .bind_ts(tokens.access_expires_at)
        .bind(tokens.scope)
        .bind_ts(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Replaces the grant of an account with a fresh one from a login
    /// (`ticketd auth login`): the old refresh token is dropped even when
    /// the new answer has none.
    pub async fn replace_oauth_grant(
        &self,
        account: &str,
        tokens: &NewTokens<'_>,
        now: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        db::query("DELETE FROM oauth_grants WHERE account = $1")
            .bind(account)
            .execute(&mut *tx)
            .await?;
        db::query(
            "INSERT INTO oauth_grants (account, refresh_token, access_token, access_expires_at,
                 scope, last_refresh_at, refresh_count, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 1, $6)",
        )
        .bind(account)
        .bind(tokens.refresh_token)
        .bind(tokens.access_token)
        .bind_ts(tokens.access_expires_at)
        .bind(tokens.scope)
        .bind_ts(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Records why getting a token failed (`kind`: `permanent` or
    /// `temporary`). A permanent failure also forgets the access token, so
    /// no instance keeps using a token of a revoked grant.
    ///
    /// `notices` (mails and chat posts to the desk's lead, built by the
    /// caller) are queued in the same transaction when this failure is the
    /// grant's first permanent one since it last worked: one notice per
    /// failure, however often the mailbox retries. Returns whether they
    /// were queued.
    pub async fn record_oauth_error(
        &self,
        account: &str,
        kind: &str,
        error: &str,
        now: &str,
        notices: &[super::sla::Notification],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let before: Option<Option<String>> = db::query_scalar::<Option<String>>(
            "SELECT last_error_kind FROM oauth_grants WHERE account = $1",
        )
        .bind(account)
        .fetch_optional(&mut *tx)
        .await?;
        let newly_refused = kind == "permanent" && before.flatten().as_deref() != Some("permanent");
        db::query(
            "INSERT INTO oauth_grants (account, last_error, last_error_kind, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (account) DO UPDATE SET
               last_error = excluded.last_error,
               last_error_kind = excluded.last_error_kind,
               access_token = CASE WHEN excluded.last_error_kind = 'permanent'
                                   THEN NULL ELSE oauth_grants.access_token END,
               access_expires_at = CASE WHEN excluded.last_error_kind = 'permanent'
                                   THEN NULL ELSE oauth_grants.access_expires_at END,
               updated_at = excluded.updated_at",
        )
        .bind(account)
        .bind(error)
        .bind(kind)
        .bind_ts(now)
        .execute(&mut *tx)
        .await?;
        let queued = newly_refused && !notices.is_empty();
        if queued {
            let mut s = super::Script::default();
            let mut last = None;
            super::sla::queue_notifications(
                &mut tx,
                &mut s,
                &mut last,
                None,
                GRANT_REFUSED,
                notices,
                now,
            )
            .await?;
            s.run(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(queued)
    }
}

/// The outbox and chat outbox kind of the notice that a grant was refused.
pub const GRANT_REFUSED: &str = "grant-refused";

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("t.db"), 2)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_rotated_refresh_token_replaces_the_old_one_and_none_keeps_it() {
        let (_d, s) = store().await;
        let t = |a, r| NewTokens {
            access_token: a,
            access_expires_at: "2026-01-01T01:00:00.000Z",
            refresh_token: r,
            scope: Some("mail"),
        };
        s.save_oauth_tokens("imap:a", &t("A1", Some("R1")), "2026-01-01T00:00:00.000Z")
            .await
            .unwrap();
        s.save_oauth_tokens("imap:a", &t("A2", Some("R2")), "2026-01-01T00:10:00.000Z")
            .await
            .unwrap();
        let g = s.oauth_grant("imap:a").await.unwrap().unwrap();
        assert_eq!(g.refresh_token.as_deref(), Some("R2"));
        assert_eq!(g.access_token.as_deref(), Some("A2"));
        assert_eq!(g.refresh_count, 2);
        s.save_oauth_tokens("imap:a", &t("A3", None), "2026-01-01T00:20:00.000Z")
            .await
            .unwrap();
        let g = s.oauth_grant("imap:a").await.unwrap().unwrap();
        assert_eq!(g.refresh_token.as_deref(), Some("R2"));
        assert_eq!(g.access_token.as_deref(), Some("A3"));
        let debug = format!("{g:?}");
        assert!(!debug.contains("R2") && !debug.contains("A3"), "{debug}");
        assert!(debug.contains("[redacted]"));
    }

    #[tokio::test]
    async fn a_permanent_error_forgets_the_access_token_and_a_success_clears_it() {
        let (_d, s) = store().await;
        let t = NewTokens {
            access_token: "A1",
            access_expires_at: "2026-01-01T01:00:00.000Z",
            refresh_token: Some("R1"),
            scope: None,
        };
        s.save_oauth_tokens("smtp", &t, "2026-01-01T00:00:00.000Z")
            .await
            .unwrap();
        let post = [super::super::sla::Notification::Chat {
            channel: "ops".into(),
            body: serde_json::json!({"kind": "grant-refused"}),
        }];
        // A temporary failure tells nobody.
        assert!(!s
            .record_oauth_error(
                "smtp",
                "temporary",
                "timeout",
                "2026-01-01T00:01:00.000Z",
                &post
            )
            .await
            .unwrap());
        let g = s.oauth_grant("smtp").await.unwrap().unwrap();
        assert_eq!(g.access_token.as_deref(), Some("A1"));
        assert_eq!(g.last_error_kind.as_deref(), Some("temporary"));
        // The first permanent one queues the notice, a repeat does not.
        for (i, told) in [true, false].into_iter().enumerate() {
            let at = format!("2026-01-01T00:02:0{i}.000Z");
            let queued = s
                .record_oauth_error("smtp", "permanent", "invalid_grant", &at, &post)
                .await
                .unwrap();
            assert_eq!(queued, told);
        }
        let posts: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM chat_outbox WHERE kind = 'grant-refused'")
                .fetch_one(s.pool())
                .await
                .unwrap();
        assert_eq!(posts, 1);
        let g = s.oauth_grant("smtp").await.unwrap().unwrap();
        assert_eq!(g.access_token, None);
        assert_eq!(g.refresh_token.as_deref(), Some("R1"));
        assert_eq!(g.last_error.as_deref(), Some("invalid_grant"));
        s.replace_oauth_grant("smtp", &t, "2026-01-01T00:03:00.000Z")
            .await
            .unwrap();
        let g = s.oauth_grant("smtp").await.unwrap().unwrap();
        assert_eq!(g.last_error, None);
        assert_eq!(g.refresh_count, 1);
        assert_eq!(s.oauth_grants().await.unwrap().len(), 1);
    }
}
