//! `ticketd auth login NAME`: a first grant for an account.
//!
//! Device code (RFC 8628): ask the device authorization endpoint for a
//! code, show the administrator where to enter it, poll the token endpoint
//! at the `interval` the provider gave (oauth2 keeps polling on
//! `authorization_pending` and adds 5 s on `slow_down`), and store the
//! grant; `access_denied` and `expired_token` end the login with what to
//! do. Client credentials: get one token, which proves the app
//! registration, the secret (or certificate) and the tenant. Service
//! account: likewise, proving the key and the domain-wide delegation.

use super::{describe, save, Client, Failure, OAuthError};
use crate::config::OAuthFlow;
use crate::store::Store;
use oauth2::{
    AuthUrl, AuthorizationCode, CsrfToken, DeviceAuthorizationUrl, PkceCodeChallenge, RedirectUrl,
    RequestTokenError, TokenResponse,
};
use oauth2::{
    DeviceCodeErrorResponse, DeviceCodeErrorResponseType, StandardDeviceAuthorizationResponse,
};

/// What a login stored (no token in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    /// The access token's expiry (`ts` text).
    pub expires_at: String,
    /// Whether a refresh token was stored.
    pub refresh_token: bool,
}

/// Runs the account's login flow; `say` shows the administrator what to
/// do (the verification URL and the user code).
pub async fn login(
    client: &Client,
    store: &Store,
    mut say: impl FnMut(String),
) -> Result<LoginOutcome, OAuthError> {
    let answer = match client.flow {
        OAuthFlow::ClientCredentials => client.client_credentials().await?,
        OAuthFlow::DeviceCode => device_code(client, &mut say).await?,
        OAuthFlow::AuthorizationCode => authorization_code(client, &mut say).await?,
        OAuthFlow::ServiceAccount => client.service_account().await?,
    };
    let now = jiff::Timestamp::now();
    save(store, &client.account, &answer, now, true).await?;
    let grant = store.oauth_grant(&client.account).await?;
    Ok(LoginOutcome {
        expires_at: grant
            .as_ref()
            .and_then(|g| g.access_expires_at.clone())
            .unwrap_or_default(),
        refresh_token: answer.refresh_token().is_some(),
    })
}

async fn device_code(
    client: &Client,
    say: &mut impl FnMut(String),
) -> Result<oauth2::basic::BasicTokenResponse, OAuthError> {
    let url = client
        .endpoints
        .device_authorization_url
        .clone()
        .ok_or_else(|| {
            OAuthError::Config(format!("{}: no device_authorization_url", client.name))
        })?;
    let url = DeviceAuthorizationUrl::new(url).map_err(|e| {
        OAuthError::Config(format!("{}: device_authorization_url: {e}", client.name))
    })?;
    let oauth = client.basic()?.set_device_authorization_url(url);
    let details: StandardDeviceAuthorizationResponse = oauth
        .exchange_device_code()
        .add_scopes(client.scopes())
        .request_async(&client.http)
        .await
        .map_err(|e| client.fail(super::classify(&e)))?;
    say(format!(
        "To sign in {}, open {} in a browser (on any device) and enter the code {}\nThe code expires in {} minutes; waiting for the sign-in …",
        client.name,
        details.verification_uri().as_str(),
        details.user_code().secret(),
        details.expires_in().as_secs().div_ceil(60)
    ));
    oauth
        .exchange_device_access_token(&details)
        .request_async(&client.http, tokio::time::sleep, None)
        .await
        .map_err(|e| client.fail(device_failure(&e)))
}

/// Authorization code with PKCE (RFC 6749 §4.1, RFC 7636) on a loopback
/// redirect (RFC 8252 §7.3): the browser may be anywhere. The redirect
/// arrives either at the loopback listener (a browser on this machine, or
/// over `ssh -L PORT:127.0.0.1:PORT`) or as the address pasted on stdin
/// (the browser shows "cannot connect" but its address bar holds the code).
async fn authorization_code(
    client: &Client,
    say: &mut impl FnMut(String),
) -> Result<oauth2::basic::BasicTokenResponse, OAuthError> {
    let config = |e: String| OAuthError::Config(format!("{}: {e}", client.name));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", client.redirect_port.unwrap_or(0)))
        .await
        .map_err(|e| config(format!("cannot listen for the redirect on 127.0.0.1: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| config(e.to_string()))?
        .port();
    let redirect = format!("http://127.0.0.1:{port}/");
    let auth_url = client
        .endpoints
        .authorization_url
        .clone()
        .ok_or_else(|| config("no authorization_url".into()))?;
    let oauth = client
        .basic()?
        .set_auth_uri(
            AuthUrl::new(auth_url).map_err(|e| config(format!("authorization_url: {e}")))?,
        )
        .set_redirect_uri(RedirectUrl::new(redirect.clone()).map_err(|e| config(e.to_string()))?);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = oauth
        .authorize_url(CsrfToken::new_random)
        .add_scopes(client.scopes())
        .set_pkce_challenge(challenge);
    if client.provider == crate::config::OAuthProvider::Google {
        // Google returns a refresh token only for offline access, and
        // again on a repeated sign-in only with a fresh consent.
        request = request
            .add_extra_param("access_type", "offline")
            .add_extra_param("prompt", "consent");
    }
    let (url, state) = request.url();
    say(format!(
        "To sign in {}, open this address in a browser:\n\n{url}\n\nAfter the sign-in the browser is sent to {redirect}. If the browser is on another machine, either forward the port first (ssh -L {port}:127.0.0.1:{port} this-server), or paste the address the browser ended up on (it begins with {redirect}) here and press Enter. Waiting …",
        client.name
    ));
    let query = tokio::select! {
        q = from_listener(&listener) => q,
        q = from_stdin() => q,
    }
    .map_err(config)?;
    let params: std::collections::HashMap<String, String> =
        oauth2::url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    if params.get("state").map(String::as_str) != Some(state.secret().as_str()) {
        return Err(client.fail(Failure::Permanent(
            "the redirect does not belong to this sign-in (state differs); start the login again"
                .into(),
        )));
    }
    if let Some(error) = params.get("error") {
        let text = describe(error, params.get("error_description"));
        return Err(client.fail(Failure::Permanent(if error == "access_denied" {
            format!("the sign-in was declined ({text})")
        } else {
            text
        })));
    }
    let code = params
        .get("code")
        .ok_or_else(|| client.fail(Failure::Permanent("the redirect carries no code".into())))?;
    let mut exchange = oauth
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(verifier);
    for (name, value) in client.assertion_params()? {
        exchange = exchange.add_extra_param(name, value);
    }
    exchange
        .request_async(&client.http)
        .await
        .map_err(|e| client.fail(super::classify(&e)))
}

/// The query of the first request to the loopback listener that carries
/// one; the browser gets a short page saying it may close.
async fn from_listener(listener: &tokio::net::TcpListener) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let (mut conn, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 16 * 1024];
        let mut len = 0;
        // The request line is all that is needed; stop at its end.
        while len < buf.len() && !buf[..len].windows(2).any(|w| w == b"\r\n") {
            match conn.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
        }
        let line = String::from_utf8_lossy(&buf[..len]);
        let target = line.split_whitespace().nth(1).unwrap_or("");
        let query = target.split_once('?').map(|(_, q)| q.to_string());
        let body = if query.is_some() {
            "<!doctype html><title>ticketd</title><p>Signed in. You may close this window; ticketd continues in the terminal.</p>"
        } else {
            "<!doctype html><title>ticketd</title><p>Waiting for the sign-in redirect.</p>"
        };
        let _ = conn
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        let _ = conn.shutdown().await;
        if let Some(q) = query {
            return Ok(q);
        }
    }
}

/// The query of a redirect address pasted on stdin; never resolves when
/// stdin is closed (the listener may still get it).
async fn from_stdin() -> Result<String, String> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some((_, q)) = line.trim().split_once('?') {
            return Ok(q.to_string());
        }
    }
    std::future::pending().await
}

/// Sorts the end of a device code poll (RFC 8628 §3.5).
fn device_failure<RE: std::error::Error + 'static>(
    e: &RequestTokenError<RE, DeviceCodeErrorResponse>,
) -> Failure {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let text = describe(r.error().as_ref(), r.error_description());
            match r.error() {
                DeviceCodeErrorResponseType::AccessDenied => {
                    Failure::Permanent(format!("the sign-in was declined ({text})"))
                }
                DeviceCodeErrorResponseType::ExpiredToken => {
                    Failure::Permanent(format!("the code expired before anyone signed in ({text})"))
                }
                DeviceCodeErrorResponseType::Basic(
                    oauth2::basic::BasicErrorResponseType::Extension(_),
                ) => Failure::Temporary(text),
                _ => Failure::Permanent(text),
            }
        }
        RequestTokenError::Request(e) => Failure::Temporary(format!("request failed: {e}")),
        RequestTokenError::Parse(e, _) => {
            Failure::Temporary(format!("unexpected answer from the token endpoint: {e}"))
        }
        RequestTokenError::Other(e) => Failure::Temporary(e.clone()),
    }
}
