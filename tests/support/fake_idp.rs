//! A fake OAuth 2.0 identity provider on loopback for the tests of
//! `ticketd::oauth` and `ticketd auth`, and for Dovecot's `oauth2` passdb
//! (token introspection). axum on `127.0.0.1:0`; every request is counted.
//!
//! Include it from a test file with `#[path]`:
//!
//! ```ignore
//! #[path = "support/fake_idp.rs"]
//! mod fake_idp;
//! let idp = fake_idp::FakeIdp::start(fake_idp::IdpConfig::default()).await;
//! // token_url(), device_url(), introspection_url(), revocation_url()
//! ```
//!
//! What each part models:
//! - `POST /token` (RFC 6749 §3.2, form body; the client authenticates with
//!   `client_id` + `client_secret` in the body, `client_secret_post`):
//!   - `grant_type=client_credentials` (RFC 6749 §4.4): an access token, no
//!     refresh token (as Microsoft's app-only tokens);
//!   - `grant_type=refresh_token` (RFC 6749 §6): a new access token and a
//!     **new refresh token every time**; the old refresh token stops working
//!     at once (rotation, which §6 and §10.4 allow and Microsoft's identity
//!     platform does: "refresh tokens replace themselves with a fresh token
//!     upon every use");
//!   - `grant_type=urn:ietf:params:oauth:grant-type:device_code` (RFC 8628
//!     §3.4/§3.5): `authorization_pending` until [`FakeIdp::approve`],
//!     `slow_down` when polled faster than `interval`, `access_denied` after
//!     [`FakeIdp::deny`], `expired_token` after the code's lifetime.
//!   - errors are RFC 6749 §5.2 JSON objects (`error`, `error_description`),
//!     status 400, `invalid_client` 401; descriptions carry Microsoft-style
//!     AADSTS codes (AADSTS70000 revoked grant, AADSTS70008 expired,
//!     AADSTS7000215 invalid secret, AADSTS70016 pending, AADSTS70019 expired
//!     device code) so error texts look like what Entra ID sends.
//! - `POST /devicecode` (RFC 8628 §3.1/§3.2): `device_code`, `user_code`,
//!   `verification_uri`, `expires_in`, `interval` (Microsoft's endpoint is
//!   named `/devicecode` and omits `verification_uri_complete`).
//! - `POST /introspect` (RFC 7662, form `token=…`): `{"active":true,
//!   "username":…,"scope":…,"exp":…}` for a live access token, else
//!   `{"active":false}` — what Dovecot's `oauth2` passdb asks with
//!   `introspection_mode = post`.
//! - `POST /revoke` (RFC 7009, form `token=…`): revokes the whole grant of a
//!   refresh or access token; [`FakeIdp::revoke_all`] does it for every grant
//!   (an administrator revoking the app's sessions),
//!   [`FakeIdp::revoke_user_grants`] for the grants a person signed in for
//!   (Entra ID's "Revoke sessions" on the user), leaving app-only tokens.
//! - Token lifetime: [`IdpConfig::lifetime`], changeable with
//!   [`FakeIdp::set_lifetime`] (short-lived tokens); [`FakeIdp::fail_next`]
//!   answers the next token request with a status (a 503 outage).

#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct IdpConfig {
    /// The one registered client.
    pub client_id: String,
    /// Its secret; `None`: a public client (device code without a secret).
    pub client_secret: Option<String>,
    /// Lifetime of access tokens (`expires_in`).
    pub lifetime: Duration,
    /// The user a grant is for (introspection's `username`).
    pub username: String,
    /// Device code polling interval in seconds.
    pub interval: u64,
    /// Device code lifetime.
    pub device_lifetime: Duration,
}

impl Default for IdpConfig {
    fn default() -> Self {
        IdpConfig {
            client_id: "ticketd-test-client".into(),
            client_secret: Some("s3cret-client-value-42".into()),
            lifetime: Duration::from_secs(3600),
            username: "support@example.test".into(),
            interval: 1,
            device_lifetime: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceState {
    Pending,
    Approved,
    Denied,
}

#[derive(Debug)]
struct Device {
    user_code: String,
    state: DeviceState,
    expires: Instant,
    last_poll: Option<Instant>,
}

#[derive(Debug)]
struct Access {
    grant: u64,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    access: HashMap<String, Access>,
    /// Live refresh token → grant.
    refresh: HashMap<String, u64>,
    revoked: std::collections::HashSet<u64>,
    devices: HashMap<String, Device>,
    counts: HashMap<String, usize>,
    next: u64,
    fail_next: Option<u16>,
    /// Authorization code → (redirect_uri, PKCE challenge).
    codes: HashMap<String, (String, String)>,
    /// The next authorization request is declined.
    deny_authorize: bool,
    /// Every token issued (to grep outputs for).
    issued: Vec<String>,
}

struct Shared {
    cfg: Mutex<IdpConfig>,
    inner: Mutex<Inner>,
}

/// A running fake identity provider; stops with the test's runtime.
pub struct FakeIdp {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeIdp {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start(cfg: IdpConfig) -> FakeIdp {
        let shared = Arc::new(Shared {
            cfg: Mutex::new(cfg),
            inner: Mutex::new(Inner::default()),
        });
        let app = Router::new()
            .route("/token", post(token))
            .route("/devicecode", post(devicecode))
            .route("/introspect", post(introspect))
            .route("/revoke", post(revoke))
            .route("/authorize", get(authorize))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeIdp { addr, shared }
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// The token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url())
    }
    /// The authorization endpoint (authorization code flow).
    pub fn authorization_url(&self) -> String {
        format!("{}/authorize", self.base_url())
    }
    /// The device authorization endpoint.
    pub fn device_url(&self) -> String {
        format!("{}/devicecode", self.base_url())
    }
    /// The introspection endpoint (RFC 7662).
    pub fn introspection_url(&self) -> String {
        format!("{}/introspect", self.base_url())
    }
    /// The revocation endpoint (RFC 7009).
    pub fn revocation_url(&self) -> String {
        format!("{}/revoke", self.base_url())
    }

    /// How many requests of `kind` were answered: `client_credentials`,
    /// `refresh_token`, `device_code` (token polls), `devicecode` (device
    /// authorizations), `introspect`, `revoke`, `refused` (any error).
    pub fn count(&self, kind: &str) -> usize {
        let i = self.shared.inner.lock().unwrap();
        i.counts.get(kind).copied().unwrap_or(0)
    }

    /// Tokens obtained, by any grant (client credentials, refresh, device).
    pub fn tokens_issued(&self) -> usize {
        let i = self.shared.inner.lock().unwrap();
        ["client_credentials", "refresh_token", "device_issued"]
            .iter()
            .map(|k| i.counts.get(*k).copied().unwrap_or(0))
            .sum()
    }

    /// Every access and refresh token issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.shared.inner.lock().unwrap().issued.clone()
    }

    /// The user codes of pending device authorizations.
    pub fn pending_user_codes(&self) -> Vec<String> {
        let i = self.shared.inner.lock().unwrap();
        i.devices
            .values()
            .filter(|d| d.state == DeviceState::Pending)
            .map(|d| d.user_code.clone())
            .collect()
    }

    /// Approves every pending device authorization (the user signed in).
    pub fn approve(&self) {
        self.set_devices(DeviceState::Approved);
    }

    /// Denies every pending device authorization.
    pub fn deny(&self) {
        self.set_devices(DeviceState::Denied);
    }

    fn set_devices(&self, to: DeviceState) {
        let mut i = self.shared.inner.lock().unwrap();
        for d in i.devices.values_mut() {
            if d.state == DeviceState::Pending {
                d.state = to;
            }
        }
    }

    /// The next authorization request is answered with `access_denied`.
    pub fn deny_next_authorization(&self) {
        self.shared.inner.lock().unwrap().deny_authorize = true;
    }

    /// Revokes every grant: refresh tokens and access tokens stop working.
    pub fn revoke_all(&self) {
        let mut i = self.shared.inner.lock().unwrap();
        let grants: Vec<u64> = i
            .refresh
            .values()
            .chain(i.access.values().map(|a| &a.grant))
            .copied()
            .collect();
        i.revoked.extend(grants);
        i.refresh.clear();
    }

    /// Revokes the grants a person signed in for (those with a refresh
    /// token: device code, authorization code), as Entra ID's "Revoke
    /// sessions" on the user does; app-only (client credentials) tokens
    /// keep working.
    pub fn revoke_user_grants(&self) {
        let mut i = self.shared.inner.lock().unwrap();
        let grants: Vec<u64> = i.refresh.values().copied().collect();
        i.revoked.extend(grants);
        i.refresh.clear();
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_lifetime(&self, d: Duration) {
        self.shared.cfg.lock().unwrap().lifetime = d;
    }

    /// Answers the next token request with `status` and a `server_error`
    /// (or `temporarily_unavailable` for 503) body.
    pub fn fail_next(&self, status: u16) {
        self.shared.inner.lock().unwrap().fail_next = Some(status);
    }

    /// Whether `token` is a live access token (what introspection says).
    pub fn is_active(&self, token: &str) -> bool {
        let i = self.shared.inner.lock().unwrap();
        active(&i, token)
    }
}

fn active(i: &Inner, token: &str) -> bool {
    i.access
        .get(token)
        .is_some_and(|a| a.expires > Instant::now() && !i.revoked.contains(&a.grant))
}

/// `application/x-www-form-urlencoded` (HTML's form encoding).
fn form(body: &[u8]) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut k = 0;
        while k < b.len() {
            match b[k] {
                b'+' => out.push(b' '),
                b'%' if k + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[k + 1..k + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(v) => {
                            out.push(v);
                            k += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            k += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn json(status: StatusCode, v: serde_json::Value) -> Response {
    (
        status,
        [
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ],
        v.to_string(),
    )
        .into_response()
}

/// An RFC 6749 §5.2 error.
fn oauth_error(code: &str, description: &str) -> Response {
    let status = if code == "invalid_client" {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    json(
        status,
        serde_json::json!({"error": code, "error_description": description}),
    )
}

fn bump(i: &mut Inner, kind: &str) {
    *i.counts.entry(kind.to_string()).or_default() += 1;
}

fn random_token(i: &mut Inner, prefix: &str) -> String {
    i.next += 1;
    let t = format!("{prefix}-{}-{:x}", i.next, rand_u64(i.next));
    i.issued.push(t.clone());
    t
}

/// Not cryptographic: only distinct and unguessable enough for a test.
fn rand_u64(seed: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = t ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// Issues an access token (and a refresh token when `refresh`) for `grant`.
fn issue(i: &mut Inner, cfg: &IdpConfig, grant: u64, refresh: bool) -> Response {
    let access = random_token(i, "at");
    i.access.insert(
        access.clone(),
        Access {
            grant,
            expires: Instant::now() + cfg.lifetime,
        },
    );
    let mut body = serde_json::json!({
        "token_type": "Bearer",
        "access_token": access,
        "expires_in": cfg.lifetime.as_secs(),
        "ext_expires_in": cfg.lifetime.as_secs(),
        "scope": "https://outlook.office365.com/IMAP.AccessAsUser.All https://outlook.office365.com/SMTP.Send",
    });
    if refresh {
        let rt = random_token(i, "rt");
        i.refresh.insert(rt.clone(), grant);
        body["refresh_token"] = serde_json::Value::String(rt);
    }
    json(StatusCode::OK, body)
}

async fn token(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let f = form(&body);
    let cfg = s.cfg.lock().unwrap().clone();
    let mut i = s.inner.lock().unwrap();
    if let Some(status) = i.fail_next.take() {
        bump(&mut i, "refused");
        let code = if status == 503 {
            "temporarily_unavailable"
        } else {
            "server_error"
        };
        return json(
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            serde_json::json!({"error": code, "error_description": "AADSTS90033: A transient error has occurred. Please try again."}),
        );
    }
    if f.get("client_id") != Some(&cfg.client_id) {
        bump(&mut i, "refused");
        return oauth_error(
            "invalid_client",
            "AADSTS700016: Application with identifier was not found in the directory.",
        );
    }
    let grant_type = f.get("grant_type").cloned().unwrap_or_default();
    let secret_ok = match &cfg.client_secret {
        Some(secret) => f.get("client_secret") == Some(secret),
        None => true,
    };
    // A public client may poll the device flow without a secret.
    let needs_secret = grant_type == "client_credentials" || f.contains_key("client_secret");
    if needs_secret && !secret_ok {
        bump(&mut i, "refused");
        return oauth_error(
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    match grant_type.as_str() {
        "client_credentials" => {
            bump(&mut i, "client_credentials");
            i.next += 1;
            let grant = i.next;
            issue(&mut i, &cfg, grant, false)
        }
        "refresh_token" => {
            bump(&mut i, "refresh_token");
            let rt = f.get("refresh_token").cloned().unwrap_or_default();
            let Some(grant) = i.refresh.remove(&rt) else {
                bump(&mut i, "refused");
                return oauth_error(
                    "invalid_grant",
                    "AADSTS70000: The provided grant is invalid or malformed, or has been revoked.",
                );
            };
            if i.revoked.contains(&grant) {
                bump(&mut i, "refused");
                return oauth_error(
                    "invalid_grant",
                    "AADSTS50173: The provided grant has expired due to it being revoked.",
                );
            }
            issue(&mut i, &cfg, grant, true)
        }
        "authorization_code" => {
            bump(&mut i, "authorization_code");
            let code = f.get("code").cloned().unwrap_or_default();
            let Some((redirect, challenge)) = i.codes.remove(&code) else {
                bump(&mut i, "refused");
                return oauth_error(
                    "invalid_grant",
                    "AADSTS70000: the authorization code is unknown or was used",
                );
            };
            if f.get("redirect_uri") != Some(&redirect) {
                bump(&mut i, "refused");
                return oauth_error(
                    "invalid_grant",
                    "redirect_uri differs from the authorization request",
                );
            }
            let verifier = f.get("code_verifier").cloned().unwrap_or_default();
            if pkce_s256(&verifier) != challenge {
                bump(&mut i, "refused");
                return oauth_error(
                    "invalid_grant",
                    "AADSTS50148: the code_verifier does not match the code_challenge",
                );
            }
            i.next += 1;
            let grant = i.next;
            issue(&mut i, &cfg, grant, true)
        }
        "urn:ietf:params:oauth:grant-type:device_code" => {
            bump(&mut i, "device_code");
            let code = f.get("device_code").cloned().unwrap_or_default();
            let interval = Duration::from_secs(cfg.interval);
            let now = Instant::now();
            let Some(d) = i.devices.get_mut(&code) else {
                bump(&mut i, "refused");
                return oauth_error("invalid_grant", "AADSTS70000: unknown device code");
            };
            let too_fast = d
                .last_poll
                .is_some_and(|p| now.duration_since(p) + Duration::from_millis(200) < interval);
            d.last_poll = Some(now);
            if d.expires <= now {
                return oauth_error("expired_token", "AADSTS70019: Verification code expired.");
            }
            match d.state {
                DeviceState::Denied => {
                    oauth_error("access_denied", "AADSTS70020: The user declined.")
                }
                DeviceState::Pending if too_fast => {
                    oauth_error("slow_down", "Polling faster than the interval.")
                }
                DeviceState::Pending => oauth_error(
                    "authorization_pending",
                    "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending.",
                ),
                DeviceState::Approved => {
                    i.devices.remove(&code);
                    bump(&mut i, "device_issued");
                    i.next += 1;
                    let grant = i.next;
                    issue(&mut i, &cfg, grant, true)
                }
            }
        }
        other => {
            bump(&mut i, "refused");
            oauth_error(
                "unsupported_grant_type",
                &format!("AADSTS70003: grant type {other:?} is not supported"),
            )
        }
    }
}

/// RFC 7636 S256: BASE64URL(SHA256(verifier)) without padding.
fn pkce_s256(verifier: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(verifier.as_bytes());
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in digest.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * k)) & 63) as usize] as char);
        }
    }
    out
}

/// `GET /authorize` (RFC 6749 §4.1.1 with RFC 7636): the user at the
/// browser signs in at once; the answer is the redirect (302) to
/// `redirect_uri` with `code` and `state`, or `error=access_denied` after
/// [`FakeIdp::deny_next_authorization`]. Only `S256` challenges and
/// loopback redirects are accepted, as Google does for desktop clients.
async fn authorize(State(s): State<Arc<Shared>>, uri: axum::http::Uri) -> Response {
    let q = form(uri.query().unwrap_or("").as_bytes());
    let cfg = s.cfg.lock().unwrap().clone();
    let mut i = s.inner.lock().unwrap();
    bump(&mut i, "authorize");
    let redirect = q.get("redirect_uri").cloned().unwrap_or_default();
    if q.get("client_id") != Some(&cfg.client_id)
        || !redirect.starts_with("http://127.0.0.1:")
        || q.get("response_type").map(String::as_str) != Some("code")
        || q.get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        return (StatusCode::BAD_REQUEST, "invalid authorization request").into_response();
    }
    let state = q.get("state").cloned().unwrap_or_default();
    let target = if std::mem::take(&mut i.deny_authorize) {
        format!("{redirect}?error=access_denied&error_description=The+user+declined&state={state}")
    } else {
        let code = random_token(&mut i, "code");
        let challenge = q.get("code_challenge").cloned().unwrap_or_default();
        i.codes.insert(code.clone(), (redirect.clone(), challenge));
        format!("{redirect}?code={code}&state={state}")
    };
    (StatusCode::FOUND, [("location", target)]).into_response()
}

async fn devicecode(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let f = form(&body);
    let cfg = s.cfg.lock().unwrap().clone();
    let mut i = s.inner.lock().unwrap();
    bump(&mut i, "devicecode");
    if f.get("client_id") != Some(&cfg.client_id) {
        return oauth_error("invalid_client", "AADSTS700016: unknown application");
    }
    let device_code = random_token(&mut i, "dc");
    i.next += 1;
    let user_code = format!("FAKE{:04}", i.next % 10_000);
    i.devices.insert(
        device_code.clone(),
        Device {
            user_code: user_code.clone(),
            state: DeviceState::Pending,
            expires: Instant::now() + cfg.device_lifetime,
            last_poll: None,
        },
    );
    json(
        StatusCode::OK,
        serde_json::json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": cfg.device_lifetime.as_secs(),
            "interval": cfg.interval,
            "message": format!("To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code {user_code} to authenticate."),
        }),
    )
}

async fn introspect(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let f = form(&body);
    let cfg = s.cfg.lock().unwrap().clone();
    let mut i = s.inner.lock().unwrap();
    bump(&mut i, "introspect");
    let token = f.get("token").cloned().unwrap_or_default();
    if active(&i, &token) {
        let left = i.access[&token]
            .expires
            .saturating_duration_since(Instant::now());
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| (d + left).as_secs())
            .unwrap_or(0);
        json(
            StatusCode::OK,
            serde_json::json!({
                "active": true,
                "username": cfg.username,
                "client_id": cfg.client_id,
                "token_type": "Bearer",
                "scope": "https://outlook.office365.com/IMAP.AccessAsUser.All",
                "exp": exp,
            }),
        )
    } else {
        json(StatusCode::OK, serde_json::json!({"active": false}))
    }
}

async fn revoke(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let f = form(&body);
    let mut i = s.inner.lock().unwrap();
    bump(&mut i, "revoke");
    let token = f.get("token").cloned().unwrap_or_default();
    let grant = i
        .refresh
        .get(&token)
        .copied()
        .or_else(|| i.access.get(&token).map(|a| a.grant));
    if let Some(g) = grant {
        i.revoked.insert(g);
        i.refresh.retain(|_, v| *v != g);
    }
    // RFC 7009 §2.2: 200 whether or not the token was known.
    StatusCode::OK.into_response()
}
