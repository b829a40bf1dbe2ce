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
//! - Client assertions with a certificate (Microsoft Entra ID "certificate
//!   credentials", OpenID Connect `private_key_jwt`, RFC 7523 §2.2): a
//!   token request may carry `client_assertion_type=urn:ietf:params:oauth:
//!   client-assertion-type:jwt-bearer` and `client_assertion=<JWT>` instead
//!   of `client_secret` (both at once: `invalid_request`, RFC 6749 §2.3 "MUST
//!   NOT use more than one authentication method"). Checked as Entra ID
//!   documents the assertion: header `alg` PS256 or RS256 (the current and
//!   the earlier page), `x5t#S256` and/or `x5t` naming a certificate in
//!   [`IdpConfig::certificates`] (the app registration's "Certificates &
//!   secrets"; unknown: `AADSTS700027` "The certificate with identifier used
//!   to sign the client assertion is not registered on application"), the
//!   signature verified with that certificate's public key (else
//!   `AADSTS700027` "Client assertion failed signature validation"), `aud`
//!   = this token endpoint, `iss` = `sub` = the client id, `exp` in the
//!   future and `nbf` not in it, 5 minutes of clock skew allowed, and `exp`
//!   at most an hour ahead (else `AADSTS700024` "Client assertion is not
//!   within its valid time range"; the hour is this fake's assumption, the
//!   page names no maximum); a wrong `aud` is `AADSTS700023` ("Client
//!   assertion audience claim does not match Realm issuer"), `iss`/`sub`
//!   not the client id `AADSTS700021` ("Client assertion application
//!   identifier doesn't match 'client_id' parameter"), a malformed JWT
//!   `AADSTS50027` ("JWT token is invalid or malformed") — the texts of
//!   Microsoft's error code reference and the Azure SDK's troubleshooting
//!   table. A `jti` seen before is refused (replay; Entra's code for it is
//!   not documented, so the text has none). All are `invalid_client`,
//!   status 401.
//! - The JWT bearer grant of a Google service account with domain-wide
//!   delegation (Google "Using OAuth 2.0 for Server to Server
//!   Applications", RFC 7523 §2.1): `grant_type=urn:ietf:params:oauth:
//!   grant-type:jwt-bearer&assertion=<JWT>`, no client id or secret. The
//!   account is [`IdpConfig::service_account`]: `iss` must be its
//!   `client_email` (else `invalid_grant` "Invalid grant: account not
//!   found"); header `alg` RS256, `kid` (when given) its key id, and the
//!   signature verified with the key's certificate (Google publishes one per
//!   key) — else `invalid_grant` "Invalid JWT Signature."; `aud` = this
//!   token endpoint (else `invalid_grant` "Invalid JWT: Failed audience
//!   check." — not in Google's table, the text is this fake's); `iat` and
//!   `exp` present, `exp` after `iat` and at most 65 minutes after it,
//!   `exp` not past and `iat` not ahead (5 minutes of skew; else
//!   `invalid_grant` "Invalid JWT: Token must be a short-lived token (60
//!   minutes) and in a reasonable timeframe. Check your 'iat' and 'exp'
//!   values and use a clock with skew to account for clock differences
//!   between systems."); `scope` present (else `invalid_scope` "Invalid
//!   OAuth scope or ID token audience provided."); `sub` a user of the
//!   domain (else `invalid_grant` "Invalid email or User ID"); domain-wide
//!   delegation granted to the account's client id in the Admin console
//!   ([`ServiceAccount::delegated_scopes`], [`FakeIdp::set_delegation`];
//!   none: `unauthorized_client`, status 401, "Unauthorized client or scope
//!   in request.") and covering every requested scope (else
//!   `access_denied`, "Requested client not authorized."). These texts and
//!   causes are the "JWT error codes" table of Google's page. The answer is
//!   an access token for `sub` (what introspection names as `username`),
//!   `expires_in` 3599, `token_type` Bearer, no refresh token.
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
    /// DER of the certificates registered for the client (client
    /// assertions are verified with them).
    pub certificates: Vec<Vec<u8>>,
    /// The Google service account the JWT bearer grant accepts.
    pub service_account: Option<ServiceAccount>,
}

/// A Google service account, its key and its domain-wide delegation.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    /// `client_email` (the JWT's `iss`).
    pub client_email: String,
    /// The key's id (`private_key_id`, the JWT's `kid`).
    pub key_id: String,
    /// DER of the certificate of the key (Google's published x509 cert).
    pub certificate: Vec<u8>,
    /// Scopes granted to the account's client id in the Admin console
    /// (API controls → Domain-wide delegation); empty: not granted.
    pub delegated_scopes: Vec<String>,
    /// The Workspace domain's users (`sub` may be any of them).
    pub users: Vec<String>,
}

impl Default for IdpConfig {
    fn default() -> Self {
        IdpConfig {
            client_id: "ticketd-test-client".into(),
            client_secret: Some("tdsecret-client-value-42".into()),
            lifetime: Duration::from_secs(3600),
            username: "support@example.test".into(),
            interval: 1,
            device_lifetime: Duration::from_secs(60),
            certificates: Vec::new(),
            service_account: None,
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
    /// The user the token is for, when not [`IdpConfig::username`] (a
    /// service account's `sub`).
    user: Option<String>,
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
    /// `jti`s of the client assertions accepted.
    jtis: std::collections::HashSet<String>,
    /// The last error description sent.
    last_error: Option<String>,
}

struct Shared {
    cfg: Mutex<IdpConfig>,
    inner: Mutex<Inner>,
    /// This fake's token endpoint (the `aud` assertions must name).
    token_url: String,
}

/// A running fake identity provider; stops with the test's runtime.
pub struct FakeIdp {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeIdp {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start(cfg: IdpConfig) -> FakeIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            cfg: Mutex::new(cfg),
            inner: Mutex::new(Inner::default()),
            token_url: format!("http://{addr}/token"),
        });
        let app = Router::new()
            .route("/token", post(token))
            .route("/devicecode", post(devicecode))
            .route("/introspect", post(introspect))
            .route("/revoke", post(revoke))
            .route("/authorize", get(authorize))
            .with_state(shared.clone());
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
    /// authorizations), `introspect`, `revoke`, `jwt_bearer` (service
    /// account tokens issued), `client_assertion` (client assertions
    /// accepted), `refused` (any error).
    pub fn count(&self, kind: &str) -> usize {
        let i = self.shared.inner.lock().unwrap();
        i.counts.get(kind).copied().unwrap_or(0)
    }

    /// Tokens obtained, by any grant (client credentials, refresh, device).
    pub fn tokens_issued(&self) -> usize {
        let i = self.shared.inner.lock().unwrap();
        [
            "client_credentials",
            "refresh_token",
            "device_issued",
            "jwt_bearer",
        ]
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

    /// The `error_description` of the last error answered.
    pub fn last_error(&self) -> Option<String> {
        self.shared.inner.lock().unwrap().last_error.clone()
    }

    /// Registers the Google service account (replacing any).
    pub fn set_service_account(&self, sa: ServiceAccount) {
        self.shared.cfg.lock().unwrap().service_account = Some(sa);
    }

    /// The service account's domain-wide delegation from now on (an
    /// administrator granting or removing it in the Admin console).
    pub fn set_delegation(&self, scopes: &[&str]) {
        if let Some(sa) = self.shared.cfg.lock().unwrap().service_account.as_mut() {
            sa.delegated_scopes = scopes.iter().map(|s| s.to_string()).collect();
        }
    }

    /// The user a live access token was issued for (introspection's
    /// `username`).
    pub fn user_of(&self, token: &str) -> Option<String> {
        let cfg = self.shared.cfg.lock().unwrap().clone();
        let i = self.shared.inner.lock().unwrap();
        active(&i, token).then(|| {
            i.access[token]
                .user
                .clone()
                .unwrap_or_else(|| cfg.username.clone())
        })
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
    // Every token carries the suite's secret marker (tests/support/kept_logs.rs).
    let t = format!("{prefix}-tdsecret-{}-{:x}", i.next, rand_u64(i.next));
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
    issue_for(i, cfg, grant, refresh, None)
}

/// [`issue`] for `user` (a service account's `sub`).
fn issue_for(
    i: &mut Inner,
    cfg: &IdpConfig,
    grant: u64,
    refresh: bool,
    user: Option<String>,
) -> Response {
    let access = random_token(i, "at");
    i.access.insert(
        access.clone(),
        Access {
            grant,
            expires: Instant::now() + cfg.lifetime,
            user,
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
    let grant_type = f.get("grant_type").cloned().unwrap_or_default();
    if grant_type == JWT_BEARER_GRANT {
        return match jwt_bearer(&cfg, &mut i, &f, &s.token_url) {
            Ok(r) => r,
            Err(r) => refuse(&mut i, r),
        };
    }
    if f.get("client_id") != Some(&cfg.client_id) {
        return refuse(
            &mut i,
            Refusal::client(
                "invalid_client",
                "AADSTS700016: Application with identifier was not found in the directory.",
            ),
        );
    }
    let assertion = f.contains_key("client_assertion") || f.contains_key("client_assertion_type");
    if assertion {
        if f.contains_key("client_secret") {
            return refuse(
                &mut i,
                Refusal::request(
                    "invalid_request",
                    "AADSTS90014: more than one client authentication method (client_secret and client_assertion)",
                ),
            );
        }
        if let Err(r) = client_assertion(&cfg, &mut i, &f, &s.token_url) {
            return refuse(&mut i, r);
        }
        bump(&mut i, "client_assertion");
    }
    let secret_ok = match &cfg.client_secret {
        Some(secret) => assertion || f.get("client_secret") == Some(secret),
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
        let username = i.access[&token]
            .user
            .clone()
            .unwrap_or_else(|| cfg.username.clone());
        json(
            StatusCode::OK,
            serde_json::json!({
                "active": true,
                "username": username,
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

// --- JWTs: client assertions (Entra ID) and the JWT bearer grant (Google) ---

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Clock skew both providers tolerate, in seconds.
const SKEW: i64 = 300;

/// An error answer: status, RFC 6749 §5.2 code and description.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    description: String,
}

impl Refusal {
    /// A client authentication failure (401).
    fn client(code: &'static str, description: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            code,
            description: description.into(),
        }
    }
    /// Any other refusal (400).
    fn request(code: &'static str, description: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            code,
            description: description.into(),
        }
    }
}

fn refuse(i: &mut Inner, r: Refusal) -> Response {
    bump(i, "refused");
    i.last_error = Some(format!("{}: {}", r.code, r.description));
    json(
        r.status,
        serde_json::json!({"error": r.code, "error_description": r.description}),
    )
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A compact JWS taken apart: header, claims, the signed text, signature.
struct Jwt {
    header: serde_json::Value,
    claims: serde_json::Value,
    signed: String,
    signature: Vec<u8>,
}

fn parse_jwt(text: &str) -> Option<Jwt> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = text.split('.');
    let (h, c, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(Jwt {
        header: serde_json::from_slice(&b64.decode(h).ok()?).ok()?,
        claims: serde_json::from_slice(&b64.decode(c).ok()?).ok()?,
        signed: format!("{h}.{c}"),
        signature: b64.decode(sig).ok()?,
    })
}

/// Verifies `jwt`'s signature with the RSA key of the certificate `cert`
/// (DER) for `alg` (RS256 or PS256).
fn signature_ok(jwt: &Jwt, cert: &[u8]) -> bool {
    use ring::signature::{
        UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
    };
    let Some(key) = rsa_public_key(cert) else {
        return false;
    };
    let alg: &dyn ring::signature::VerificationAlgorithm =
        match jwt.header.get("alg").and_then(|a| a.as_str()) {
            Some("RS256") => &RSA_PKCS1_2048_8192_SHA256,
            Some("PS256") => &RSA_PSS_2048_8192_SHA256,
            _ => return false,
        };
    UnparsedPublicKey::new(alg, key)
        .verify(jwt.signed.as_bytes(), &jwt.signature)
        .is_ok()
}

/// One DER element: (tag, content, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (
            rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize),
            &rest[n..],
        )
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The RSAPublicKey inside an X.509 certificate's subjectPublicKeyInfo.
fn rsa_public_key(cert: &[u8]) -> Option<&[u8]> {
    let (_, cert, _) = der(cert)?;
    let (_, tbs, _) = der(cert)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der(rest)?.2;
    }
    for _ in 0..5 {
        rest = der(rest)?.2;
    }
    let (_, spki, _) = der(rest)?;
    let (_, _alg, after) = der(spki)?;
    let (0x03, bits, _) = der(after)? else {
        return None;
    };
    bits.split_first().map(|(_, k)| k)
}

fn thumbprint(alg: &'static ring::digest::Algorithm, cert: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ring::digest::digest(alg, cert))
}

fn claim_i64(jwt: &Jwt, name: &str) -> Option<i64> {
    jwt.claims.get(name).and_then(|v| v.as_i64())
}

fn claim_str<'a>(jwt: &'a Jwt, name: &str) -> Option<&'a str> {
    jwt.claims.get(name).and_then(|v| v.as_str())
}

/// Entra ID's checks of a certificate client assertion.
fn client_assertion(
    cfg: &IdpConfig,
    i: &mut Inner,
    f: &HashMap<String, String>,
    token_url: &str,
) -> Result<(), Refusal> {
    if f.get("client_assertion_type").map(String::as_str) != Some(CLIENT_ASSERTION_TYPE) {
        return Err(Refusal::request(
            "invalid_request",
            format!("AADSTS50027: client_assertion_type must be {CLIENT_ASSERTION_TYPE}"),
        ));
    }
    let malformed = |why: &str| {
        Refusal::client(
            "invalid_client",
            format!("AADSTS50027: JWT token is invalid or malformed. [Reason - {why}]"),
        )
    };
    let jwt = f
        .get("client_assertion")
        .and_then(|a| parse_jwt(a))
        .ok_or_else(|| malformed("not a compact JWS"))?;
    if jwt.header.get("typ").and_then(|t| t.as_str()) != Some("JWT") {
        return Err(malformed("typ is not JWT"));
    }
    let s256 = jwt.header.get("x5t#S256").and_then(|t| t.as_str());
    let sha1 = jwt.header.get("x5t").and_then(|t| t.as_str());
    if s256.is_none() && sha1.is_none() {
        return Err(malformed(
            "the header names no certificate (x5t#S256 or x5t)",
        ));
    }
    let cert = cfg.certificates.iter().find(|c| {
        s256.is_none_or(|t| t == thumbprint(&ring::digest::SHA256, c))
            && sha1.is_none_or(|t| t == thumbprint(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, c))
    });
    let Some(cert) = cert else {
        return Err(Refusal::client(
            "invalid_client",
            format!(
                "AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.]",
                s256.or(sha1).unwrap_or(""),
                cfg.client_id
            ),
        ));
    };
    if !signature_ok(&jwt, cert) {
        return Err(Refusal::client(
            "invalid_client",
            "AADSTS700027: Client assertion failed signature validation.",
        ));
    }
    if claim_str(&jwt, "aud") != Some(token_url) {
        return Err(Refusal::client(
            "invalid_client",
            "AADSTS700023: Client assertion audience claim does not match Realm issuer. Review the documentation at https://learn.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials.",
        ));
    }
    if claim_str(&jwt, "iss") != Some(cfg.client_id.as_str())
        || claim_str(&jwt, "sub") != Some(cfg.client_id.as_str())
    {
        return Err(Refusal::client(
            "invalid_client",
            "AADSTS700021: Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://learn.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials",
        ));
    }
    let now = now_unix();
    let exp = claim_i64(&jwt, "exp");
    let nbf = claim_i64(&jwt, "nbf").unwrap_or(now);
    let in_range =
        exp.is_some_and(|exp| exp + SKEW > now && exp <= now + 3600 + SKEW) && nbf <= now + SKEW;
    if !in_range {
        return Err(Refusal::client(
            "invalid_client",
            format!(
                "AADSTS700024: Client assertion is not within its valid time range. Current time: {now}, assertion valid from {nbf}, expiry time of assertion {}.",
                exp.unwrap_or(0)
            ),
        ));
    }
    let Some(jti) = claim_str(&jwt, "jti") else {
        return Err(malformed("no jti claim"));
    };
    if !i.jtis.insert(jti.to_string()) {
        return Err(Refusal::client(
            "invalid_client",
            "the client assertion's jti was used before (a replayed assertion)",
        ));
    }
    Ok(())
}

/// Google's checks of a service account's JWT bearer grant; a token for
/// `sub` when they pass.
fn jwt_bearer(
    cfg: &IdpConfig,
    i: &mut Inner,
    f: &HashMap<String, String>,
    token_url: &str,
) -> Result<Response, Refusal> {
    let bad_signature = || Refusal::request("invalid_grant", "Invalid JWT Signature.");
    let Some(sa) = &cfg.service_account else {
        return Err(Refusal::request(
            "invalid_grant",
            "Invalid grant: account not found",
        ));
    };
    let jwt = f
        .get("assertion")
        .and_then(|a| parse_jwt(a))
        .ok_or_else(|| Refusal::request("invalid_request", "Invalid JWT format."))?;
    if claim_str(&jwt, "iss") != Some(sa.client_email.as_str()) {
        return Err(Refusal::request(
            "invalid_grant",
            "Invalid grant: account not found",
        ));
    }
    if jwt.header.get("alg").and_then(|a| a.as_str()) != Some("RS256") {
        return Err(bad_signature());
    }
    if let Some(kid) = jwt.header.get("kid") {
        if kid.as_str() != Some(sa.key_id.as_str()) {
            return Err(bad_signature());
        }
    }
    if !signature_ok(&jwt, &sa.certificate) {
        return Err(bad_signature());
    }
    if claim_str(&jwt, "aud") != Some(token_url) {
        return Err(Refusal::request(
            "invalid_grant",
            format!("Invalid JWT: Failed audience check. The expected value was {token_url}"),
        ));
    }
    let now = now_unix();
    let timely = match (claim_i64(&jwt, "iat"), claim_i64(&jwt, "exp")) {
        (Some(iat), Some(exp)) => {
            exp > iat && exp - iat <= 65 * 60 && exp + SKEW > now && iat <= now + SKEW
        }
        _ => false,
    };
    if !timely {
        return Err(Refusal::request(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your 'iat' and 'exp' values and use a clock with skew to account for clock differences between systems.",
        ));
    }
    let scopes: Vec<&str> = claim_str(&jwt, "scope")
        .unwrap_or("")
        .split_whitespace()
        .collect();
    if scopes.is_empty() {
        return Err(Refusal::request(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        ));
    }
    let user = match claim_str(&jwt, "sub") {
        Some(sub) => {
            if !sa.users.iter().any(|u| u.eq_ignore_ascii_case(sub)) {
                return Err(Refusal::request(
                    "invalid_grant",
                    "Invalid email or User ID",
                ));
            }
            if sa.delegated_scopes.is_empty() {
                return Err(Refusal::client(
                    "unauthorized_client",
                    "Unauthorized client or scope in request.",
                ));
            }
            if !scopes
                .iter()
                .all(|s| sa.delegated_scopes.iter().any(|d| d == s))
            {
                return Err(Refusal::request(
                    "access_denied",
                    "Requested client not authorized.",
                ));
            }
            sub.to_string()
        }
        None => sa.client_email.clone(),
    };
    bump(i, "jwt_bearer");
    i.next += 1;
    let grant = i.next;
    let mut cfg = cfg.clone();
    // Google's tokens live an hour and say 3599.
    cfg.lifetime = cfg.lifetime.saturating_sub(Duration::from_secs(1));
    Ok(issue_for(i, &cfg, grant, false, Some(user)))
}
