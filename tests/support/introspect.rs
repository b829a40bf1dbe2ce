//! A minimal OAuth 2.0 token introspection endpoint (RFC 7662) on loopback,
//! for Dovecot's `oauth2` passdb in tests: `POST /introspect` with the form
//! `token=…` answers `{"active":true,"username":"…"}` for a token the test
//! granted and has not revoked, `{"active":false}` for any other, and 503
//! while the test says the provider is down. It models only what Dovecot
//! asks; the full fake identity provider (token endpoint, refresh rotation,
//! device flow) is meant to replace it.
//!
//! ```ignore
//! #[path = "support/introspect.rs"]
//! mod introspect;
//! let idp = introspect::Introspection::start().await;
//! let stack = MailStack::start_with_oauth2(&idp.url());
//! idp.grant("token-1", SUPPORT);
//! ```
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::routing::post;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Tokens {
    /// Active tokens and the user each was granted for.
    active: HashMap<String, String>,
    /// Every token asked about, in order.
    asked: Vec<String>,
    /// Answer 503 (the provider is down).
    down: bool,
}

/// The running endpoint; stops when dropped.
pub struct Introspection {
    url: String,
    tokens: Arc<Mutex<Tokens>>,
    task: tokio::task::JoinHandle<()>,
}

impl Introspection {
    /// Listens on 127.0.0.1 on a free port.
    pub async fn start() -> Introspection {
        let tokens = Arc::new(Mutex::new(Tokens::default()));
        let app = axum::Router::new()
            .route("/introspect", post(introspect))
            .with_state(tokens.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the introspection endpoint");
        let url = format!(
            "http://{}/introspect",
            listener.local_addr().expect("local address")
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Introspection { url, tokens, task }
    }

    /// The URL Dovecot posts to.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// `token` is active for `user` from now on.
    pub fn grant(&self, token: &str, user: &str) {
        self.lock().active.insert(token.into(), user.into());
    }

    /// `token` is no longer active (expired or revoked).
    pub fn revoke(&self, token: &str) {
        self.lock().active.remove(token);
    }

    /// Every token asked about so far, in order.
    pub fn asked(&self) -> Vec<String> {
        self.lock().asked.clone()
    }

    /// While `down`, every request is answered 503.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Introspection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn introspect(
    State(tokens): State<Arc<Mutex<Tokens>>>,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let json = [(header::CONTENT_TYPE, "application/json")];
    let token = form_value(&body, "token").unwrap_or_default();
    let mut t = tokens.lock().unwrap_or_else(|e| e.into_inner());
    t.asked.push(token.clone());
    if t.down {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            json,
            r#"{"error":"temporarily_unavailable"}"#.into(),
        );
    }
    let answer = match t.active.get(&token) {
        Some(user) => serde_json::json!({ "active": true, "username": user }),
        None => serde_json::json!({ "active": false }),
    };
    (StatusCode::OK, json, answer.to_string())
}

/// The value of `key` in an `application/x-www-form-urlencoded` body.
fn form_value(body: &[u8], key: &str) -> Option<String> {
    body.split(|&b| b == b'&').find_map(|pair| {
        let text = String::from_utf8_lossy(pair);
        let (k, v) = text.split_once('=')?;
        (decode(k) == key).then(|| decode(v))
    })
}

/// Percent-decoding, `+` as a space.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
