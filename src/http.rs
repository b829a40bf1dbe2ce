//! The operations endpoint of `ticketd run`: `GET /healthz` for a load
//! balancer or a monitoring check, `GET /metrics` for Prometheus. Meant for
//! loopback (`[http] listen`, default `127.0.0.1:9187`): it has no
//! authentication and tells nothing about message contents.

use crate::metrics::{is_fresh, Metrics};
use crate::store::Store;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound (in use, not ours, no permission).
    #[error("cannot listen on {addr} for /healthz and /metrics: {source} (set [http] listen to another address, or \"\" to disable)")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The error of the bind.
        source: std::io::Error,
    },
}

/// Binds the endpoint's address; done before the daemon reports ready, so
/// a taken port stops the start with a clear error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// What the handlers need.
#[derive(Debug, Clone)]
struct Ops {
    metrics: Arc<Metrics>,
    store: Store,
}

/// The routes, ready to serve: `/healthz` and `/metrics`.
pub fn router(metrics: Arc<Metrics>, store: Store) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(Ops { metrics, store })
}

/// Serves the routes on `listener` until `shutdown` turns true; requests
/// in flight are answered first.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    store: Store,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, store))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

/// The health verdict over each mailbox's sync age: `200 ok` when every one
/// synced within `max` (also when there is none), else `503` with one line
/// per stale mailbox.
pub fn health(ages: &[(String, Option<Duration>)], max: Duration) -> (StatusCode, String) {
    let stale: Vec<String> = ages
        .iter()
        .filter(|(_, age)| !is_fresh(*age, max))
        .map(|(mailbox, age)| match age {
            None => format!("{mailbox}: never synced\n"),
            Some(a) => format!(
                "{mailbox}: last synced {} s ago (limit {} s)\n",
                a.as_secs(),
                max.as_secs()
            ),
        })
        .collect();
    if stale.is_empty() {
        (StatusCode::OK, "ok\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, stale.concat())
    }
}

/// The lines of mailboxes disconnected for longer than `grace` (a
/// reconnect within it, as after a server restart, fails nothing).
pub fn disconnected_lines(down: &[(String, Duration)], grace: Duration) -> String {
    down.iter()
        .filter(|(_, d)| *d > grace)
        .map(|(mailbox, d)| {
            format!(
                "{mailbox}: disconnected for {} s (grace {} s)\n",
                d.as_secs(),
                grace.as_secs()
            )
        })
        .collect()
}

/// The lines of accounts whose OAuth grant the provider refused: nothing
/// is read or sent with them until `ticketd auth login NAME` repairs it.
pub fn auth_lines(refused: &[String]) -> String {
    refused
        .iter()
        .map(|a| format!("{a}: the OAuth 2.0 grant was refused; run `ticketd auth login {a}`\n"))
        .collect()
}

/// `/healthz`: the mailboxes' connections and sync ages, and whether the store takes a
/// write (a full disk or a read-only database fails the check, and it
/// passes again by itself once the cause is gone).
async fn healthz(State(ops): State<Ops>) -> Response {
    let (mut status, mut body) = health(&ops.metrics.sync_ages(), ops.metrics.max_sync_age());
    let down = disconnected_lines(&ops.metrics.disconnected(), ops.metrics.disconnect_grace())
        + &auth_lines(&ops.metrics.auth_refused());
    if !down.is_empty() {
        body = if status == StatusCode::OK {
            down
        } else {
            down + &body
        };
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    if let Err(e) = ops.store.probe_write().await {
        tracing::warn!(error = %e, "/healthz: the store cannot write");
        let line = format!("store: cannot write: {e}\n");
        body = if status == StatusCode::OK {
            line
        } else {
            body + &line
        };
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn metrics_text(State(ops): State<Ops>) -> Response {
    match ops.store.sla_stats().await {
        Ok(sla) => ops.metrics.set_sla(&sla),
        Err(e) => tracing::warn!(error = %e, "/metrics: cannot read the SLA figures"),
    }
    match ops.store.outbox_stats().await {
        Ok(outbox) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
            ops.metrics.render(&outbox),
        )
            .into_response(),
        // Without the database the scrape fails as a whole: Prometheus then
        // records the target as down, which is what it is.
        Err(e) => {
            tracing::warn!(error = %e, "/metrics: cannot read the outbox");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("cannot read the outbox: {e}\n"),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(900);

    #[test]
    fn a_refused_grant_is_named_with_the_command_that_repairs_it() {
        assert_eq!(auth_lines(&[]), "");
        assert_eq!(
            auth_lines(&["support".to_string()]),
            "support: the OAuth 2.0 grant was refused; run `ticketd auth login support`\n"
        );
    }

    #[test]
    fn no_mailboxes_is_healthy() {
        assert_eq!(health(&[], MAX), (StatusCode::OK, "ok\n".to_string()));
    }

    #[test]
    fn all_fresh_is_healthy() {
        let ages = [
            ("a".to_string(), Some(Duration::from_secs(3))),
            ("b".to_string(), Some(MAX)),
        ];
        assert_eq!(health(&ages, MAX).0, StatusCode::OK);
    }

    #[test]
    fn each_stale_mailbox_is_one_line() {
        let ages = [
            ("fresh".to_string(), Some(Duration::from_secs(3))),
            ("late".to_string(), Some(Duration::from_secs(1234))),
            ("new".to_string(), None),
        ];
        let (status, body) = health(&ages, MAX);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "late: last synced 1234 s ago (limit 900 s)\nnew: never synced\n"
        );
    }

    #[test]
    fn a_mailbox_down_longer_than_the_grace_is_one_line() {
        let down = [
            ("short".to_string(), Duration::from_secs(5)),
            ("long".to_string(), Duration::from_secs(61)),
        ];
        assert_eq!(
            disconnected_lines(&down, Duration::from_secs(60)),
            "long: disconnected for 61 s (grace 60 s)\n"
        );
        assert_eq!(disconnected_lines(&[], Duration::from_secs(60)), "");
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = bind(addr).await.expect_err("in use").to_string();
        assert!(
            err.contains(&addr.to_string()) && err.contains("[http] listen"),
            "{err}"
        );
    }
}
