//! [`is_transient`]: errors worth retrying the whole transaction for, and
//! [`retry`], which does that with a short backoff.

use std::future::Future;
use std::time::Duration;

/// Whether `e` is an error that the same transaction, retried from its
/// start, may well not meet again: on PostgreSQL a serialization failure
/// (40001), a deadlock (40P01), a lock not available (55P03), a connection
/// problem (class 08) or a server shutting down (57P01–57P03); on SQLite
/// SQLITE_BUSY or SQLITE_LOCKED (any extended code of them); on both an
/// I/O error on the connection, a pool timeout, or a crashed SQLite worker.
/// A constraint violation, a syntax error or a decode error is not.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // primary result code: the low byte of the extended one
                code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
            } else {
                matches!(
                    &*code,
                    "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03"
                ) || code.starts_with("08")
            }
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// An error that knows whether retrying may help ([`is_transient`]).
pub trait Transient {
    /// Whether the operation that failed with this error is worth retrying.
    fn is_transient(&self) -> bool;
}

impl Transient for sqlx::Error {
    fn is_transient(&self) -> bool {
        is_transient(self)
    }
}

impl Transient for crate::store::StoreError {
    fn is_transient(&self) -> bool {
        match self {
            crate::store::StoreError::Db(e) => is_transient(e),
            _ => false,
        }
    }
}

/// Runs `attempt` (a whole transaction: begin, statements, commit) up to
/// `attempts` times while it fails with a transient error, sleeping 10,
/// 20, 40 … ms (at most 500 ms, with a little jitter so that two workers
/// that collided do not collide again) between tries. The last error, or
/// the first that is not transient, is returned.
pub async fn retry<T, E, F, Fut>(attempts: u32, mut attempt: F) -> Result<T, E>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut tried = 0u32;
    loop {
        tried += 1;
        match attempt().await {
            Err(e) if tried < attempts && e.is_transient() => {
                tokio::time::sleep(backoff(tried)).await;
            }
            other => return other,
        }
    }
}

/// The pause after the `tried`th failure.
fn backoff(tried: u32) -> Duration {
    let base = 10u64
        .saturating_mul(1 << tried.saturating_sub(1).min(6))
        .min(500);
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()) % (base / 2 + 1));
    Duration::from_millis(base + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn io_and_pool_timeouts_are_transient_and_others_not() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::ColumnNotFound("x".into())));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) >= Duration::from_millis(10) && backoff(1) <= Duration::from_millis(15));
        assert!(backoff(30) <= Duration::from_millis(750));
    }

    #[tokio::test]
    async fn retry_stops_at_success_at_a_permanent_error_and_after_n_tries() {
        let n = AtomicU32::new(0);
        let got: Result<u32, sqlx::Error> = retry(5, || async {
            match n.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(sqlx::Error::PoolTimedOut),
                k => Ok(k),
            }
        })
        .await;
        assert_eq!(got.expect("third try"), 2);

        let n = AtomicU32::new(0);
        let got: Result<(), sqlx::Error> = retry(5, || async {
            n.fetch_add(1, Ordering::SeqCst);
            Err(sqlx::Error::RowNotFound)
        })
        .await;
        assert!(matches!(got, Err(sqlx::Error::RowNotFound)));
        assert_eq!(n.load(Ordering::SeqCst), 1);

        let n = AtomicU32::new(0);
        let got: Result<(), sqlx::Error> = retry(3, || async {
            n.fetch_add(1, Ordering::SeqCst);
            Err(sqlx::Error::PoolTimedOut)
        })
        .await;
        assert!(got.is_err());
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }
}
