//! `ticketd auth login NAME`: a first grant for an account.
//!
//! Device code (RFC 8628): ask the device authorization endpoint for a
//! code, show the administrator where to enter it, poll the token endpoint
//! at the `interval` the provider gave (oauth2 keeps polling on
//! `authorization_pending` and adds 5 s on `slow_down`), and store the
//! grant; `access_denied` and `expired_token` end the login with what to
//! do. Client credentials: get one token, which proves the app
//! registration, the secret and the tenant.

use super::{describe, save, Client, Failure, OAuthError};
use crate::config::OAuthFlow;
use crate::store::Store;
use oauth2::{DeviceAuthorizationUrl, RequestTokenError, TokenResponse};
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
        OAuthFlow::AuthorizationCode => {
            return Err(OAuthError::Config(format!(
                "{}: flow = \"authorization_code\" is not supported yet",
                client.name
            )))
        }
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
