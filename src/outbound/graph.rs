//! The `graph` transport: each mail leaves through Microsoft Graph's
//! `POST /users/{mailbox}/sendMail` with the raw MIME, base64-encoded, as
//! `Content-Type: text/plain` ("user: sendMail", sending in MIME format),
//! so Message-ID, In-Reply-To and References reach the customer as
//! ticketd wrote them. Graph takes the recipients from the MIME's To, Cc
//! and Bcc headers, not from an envelope.
//!
//! Answers: 202 sent; 429/503 throttled (the mail waits at least
//! `Retry-After`); 400 permanent with Graph's code and message; 401 once
//! more with a fresh token, then an authentication failure (the mail
//! waits); other 5xx temporary. A mail whose request would exceed Graph's
//! 4 MB limit is a permanent failure before anything is sent.

use super::worker::SendError;
use crate::sources::graph::{GraphClient, GraphError, OnThrottle};
use base64::Engine;
use std::sync::Arc;

/// Microsoft Graph's limit on one request's size (4 MB), which the base64
/// MIME body must stay under.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Sends as one `[[graph]]` mailbox.
#[derive(Debug, Clone)]
pub struct GraphSender {
    client: Arc<GraphClient>,
}

impl GraphSender {
    /// Sends with `client` (the mailbox's, shared with its source task, so
    /// both keep to one `Retry-After`).
    pub fn new(client: Arc<GraphClient>) -> GraphSender {
        GraphSender { client }
    }

    /// The mailbox sent as.
    pub fn mailbox(&self) -> &str {
        self.client.name()
    }

    /// Sends one mail's raw MIME.
    pub async fn send(&self, raw: &[u8]) -> Result<(), SendError> {
        let encoded_len = raw.len().div_ceil(3) * 4;
        if encoded_len > MAX_REQUEST_BYTES {
            return Err(SendError::Permanent(format!(
                "the mail is {} bytes, {encoded_len} as base64: Microsoft Graph's sendMail takes at most 4 MB per request",
                raw.len()
            )));
        }
        let body = base64::engine::general_purpose::STANDARD.encode(raw);
        let url = format!("{}/sendMail", self.client.user_url());
        let reply = self
            .client
            .call(
                |c| {
                    c.post(&url)
                        .header("Content-Type", "text/plain")
                        .body(body.clone())
                },
                OnThrottle::Return,
                Some(64 * 1024),
            )
            .await;
        match reply {
            Ok(r) if r.status == 202 || r.status == 200 => Ok(()),
            Ok(r) => Err(classify(r.error())),
            Err(e) => Err(classify(e)),
        }
    }

    /// For `check-config --connect`: a token for the mailbox and its
    /// processed folder reachable (sendMail itself cannot be tried
    /// without sending).
    pub async fn check(&self) -> Result<String, String> {
        self.client
            .folder_id("sentitems", false)
            .await
            .map(|_| {
                format!(
                    "{}: token accepted, Sent Items reachable",
                    self.client.user_url()
                )
            })
            .map_err(|e| e.to_string())
    }
}

/// A Graph failure as the outbox sees it.
fn classify(e: GraphError) -> SendError {
    match e {
        GraphError::Throttled { after, .. } => SendError::Throttled {
            error: e.to_string(),
            retry_after: after,
        },
        GraphError::Auth(_) => SendError::Auth(e.to_string()),
        GraphError::Token(t) if t.is_permanent() => SendError::Auth(t.to_string()),
        GraphError::Status { status, .. } if status == 400 || status == 413 => {
            SendError::Permanent(e.to_string())
        }
        e => SendError::Temporary(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_answers_map_to_outbox_outcomes() {
        let st = |status| GraphError::Status {
            status,
            code: "ErrorMimeContentInvalidBase64String".into(),
            message: "Invalid base64 string for MIME content.".into(),
        };
        assert!(
            matches!(classify(st(400)), SendError::Permanent(t) if t.contains("ErrorMimeContentInvalidBase64String"))
        );
        assert!(matches!(classify(st(500)), SendError::Temporary(_)));
        assert!(matches!(classify(st(403)), SendError::Temporary(_)));
        assert!(matches!(
            classify(GraphError::Throttled { status: 429, after: std::time::Duration::from_secs(9) }),
            SendError::Throttled { retry_after, .. } if retry_after.as_secs() == 9
        ));
        assert!(matches!(
            classify(GraphError::Auth("InvalidAuthenticationToken".into())),
            SendError::Auth(_)
        ));
    }
}
