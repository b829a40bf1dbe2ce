//! What IMAP and SMTP log in with: a password, or an OAuth 2.0 access token
//! presented as a bearer token (SASL XOAUTH2 or OAUTHBEARER, RFC 7628).
//!
//! The token side is a hook: a [`TokenProvider`] hands out the current
//! access token and is told when a server refused one. Whatever fetches,
//! refreshes and stores tokens plugs in there; the IMAP source and the SMTP
//! transport only ask it. A refused token is invalidated and the login is
//! tried once more with a fresh one before the failure is reported.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

/// One login's credential. Its `Debug` shows the user, never the password
/// or the token.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A password (IMAP LOGIN or AUTHENTICATE PLAIN, SMTP AUTH PLAIN/LOGIN).
    Password {
        /// The login name.
        user: String,
        /// The password.
        password: String,
    },
    /// An OAuth 2.0 access token for `user` (XOAUTH2 or OAUTHBEARER).
    Bearer {
        /// The mailbox the token was granted for.
        user: String,
        /// The access token.
        token: String,
    },
}

impl Credential {
    /// The login name.
    pub fn user(&self) -> &str {
        match self {
            Credential::Password { user, .. } | Credential::Bearer { user, .. } => user,
        }
    }

    /// Whether this is a bearer token.
    pub fn is_bearer(&self) -> bool {
        matches!(self, Credential::Bearer { .. })
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, user) = match self {
            Credential::Password { user, .. } => ("Password", user),
            Credential::Bearer { user, .. } => ("Bearer", user),
        };
        f.debug_struct(kind)
            .field("user", user)
            .finish_non_exhaustive()
    }
}

/// Why no access token could be had (the identity provider is down, the
/// grant was revoked). Its text must not hold a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no OAuth 2.0 access token: {0}")]
pub struct TokenError(pub String);

/// The future [`TokenProvider::access_token`] returns.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send + 'a>>;

/// Where access tokens come from: the token manager plugs in here.
///
/// `access_token` should hand out the same token until shortly before it
/// expires (one refresh per token lifetime, not one per login);
/// `invalidate` is called with a token a server refused, after which
/// `access_token` must not return it again.
pub trait TokenProvider: Send + Sync {
    /// The current access token.
    fn access_token(&self) -> TokenFuture<'_>;
    /// `token` was refused by a server: forget it.
    fn invalidate(&self, token: &str);
    /// Resolves when a grant that was refused for good has been replaced
    /// (an administrator logged in again), so that a mailbox waiting out
    /// its backoff logs in at once. The default never resolves.
    fn repaired(&self) -> RepairFuture<'_> {
        Box::pin(std::future::pending())
    }
}

/// The future [`TokenProvider::repaired`] returns.
pub type RepairFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// How a mailbox or the SMTP relay gets its credential at each connect.
#[derive(Clone)]
pub enum CredentialSource {
    /// A password read at every connect from an environment variable or a
    /// file (so a rotated password needs no restart).
    Password {
        /// The login name.
        user: String,
        /// The variable holding the password.
        env: Option<String>,
        /// The file holding the password.
        file: Option<PathBuf>,
        /// What the password is for, for error messages (`imap "support"`).
        what: String,
    },
    /// Access tokens for `user` from `tokens`.
    OAuth2 {
        /// The mailbox the tokens are granted for.
        user: String,
        /// The token manager.
        tokens: Arc<dyn TokenProvider>,
    },
}

impl std::fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::Password { user, what, .. } => f
                .debug_struct("Password")
                .field("user", user)
                .field("for", what)
                .finish_non_exhaustive(),
            CredentialSource::OAuth2 { user, .. } => f
                .debug_struct("OAuth2")
                .field("user", user)
                .finish_non_exhaustive(),
        }
    }
}

impl CredentialSource {
    /// The credential to log in with now: the password as it is in its
    /// variable or file, or the provider's current token.
    pub async fn credential(&self) -> Result<Credential, String> {
        match self {
            CredentialSource::Password {
                user,
                env,
                file,
                what,
            } => {
                let password = crate::config::read_secret(env.as_deref(), file.as_deref(), what)?;
                Ok(Credential::Password {
                    user: user.clone(),
                    password,
                })
            }
            CredentialSource::OAuth2 { user, tokens } => {
                let token = tokens.access_token().await.map_err(|e| e.to_string())?;
                Ok(Credential::Bearer {
                    user: user.clone(),
                    token,
                })
            }
        }
    }

    /// A server refused `c`: a refused token is given back to its provider
    /// (a password has nobody to tell).
    pub fn refused(&self, c: &Credential) {
        if let (CredentialSource::OAuth2 { tokens, .. }, Credential::Bearer { token, .. }) =
            (self, c)
        {
            tokens.invalidate(token);
        }
    }

    /// Resolves when the refused grant behind this credential was
    /// replaced ([`TokenProvider::repaired`]); never for a password.
    pub async fn repaired(&self) {
        match self {
            CredentialSource::OAuth2 { tokens, .. } => tokens.repaired().await,
            CredentialSource::Password { .. } => std::future::pending().await,
        }
    }

    /// Whether this logs in with tokens.
    pub fn is_oauth2(&self) -> bool {
        matches!(self, CredentialSource::OAuth2 { .. })
    }
}

/// Crates that write credentials into their logs, and the most verbose
/// level they may log at: async-imap traces every line it sends (LOGIN's
/// password, AUTHENTICATE's base64 credentials and tokens), lettre logs
/// every SMTP line (AUTH's) at debug.
pub const SECRET_BEARING: &[(&str, tracing_subscriber::filter::LevelFilter)] = &[
    ("async_imap", tracing_subscriber::filter::LevelFilter::DEBUG),
    ("lettre", tracing_subscriber::filter::LevelFilter::INFO),
];

/// A filter that lets everything through except the chatty levels of
/// [`SECRET_BEARING`]; layered beside the user's filter, no directive can
/// lift it.
pub fn log_caps() -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    SECRET_BEARING.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |t, (target, level)| t.with_target(*target, *level),
    )
}

/// The two SASL mechanisms that carry a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthMechanism {
    /// Google's and Microsoft's `XOAUTH2`.
    XOAuth2,
    /// `OAUTHBEARER` (RFC 7628).
    OAuthBearer,
}

impl OAuthMechanism {
    /// The SASL name.
    pub fn name(self) -> &'static str {
        match self {
            OAuthMechanism::XOAuth2 => "XOAUTH2",
            OAuthMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The client's first message: `user=U^Aauth=Bearer T^A^A` for
    /// XOAUTH2, the GS2 header `n,a=U,` then `^Ahost=H^Aport=P^Aauth=Bearer
    /// T^A^A` for OAUTHBEARER. Secret: never log it.
    pub fn initial_response(self, user: &str, token: &str, host: &str, port: u16) -> Vec<u8> {
        match self {
            OAuthMechanism::XOAuth2 => format!("user={user}\x01auth=Bearer {token}\x01\x01"),
            OAuthMechanism::OAuthBearer => {
                // RFC 5801 saslname: ',' and '=' escaped.
                let a = user.replace('=', "=3D").replace(',', "=2C");
                format!("n,a={a},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01")
            }
        }
        .into_bytes()
    }

    /// What the client answers to the server's error challenge (a JSON
    /// status) so that the server can end the exchange with its failure:
    /// an empty response for XOAUTH2, a single `^A` for OAUTHBEARER
    /// (RFC 7628 §3.2.3).
    pub fn error_ack(self) -> &'static [u8] {
        match self {
            OAuthMechanism::XOAuth2 => b"",
            OAuthMechanism::OAuthBearer => b"\x01",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        for c in [
            Credential::Password {
                user: "support@example.test".into(),
                password: "hunter2".into(),
            },
            Credential::Bearer {
                user: "support@example.test".into(),
                token: "ya29.tok3n".into(),
            },
        ] {
            let shown = format!("{c:?}");
            assert!(shown.contains("support@example.test"), "{shown}");
            assert!(
                !shown.contains("hunter2") && !shown.contains("tok3n"),
                "{shown}"
            );
        }
    }

    #[test]
    fn initial_responses_follow_the_mechanisms() {
        let x = OAuthMechanism::XOAuth2.initial_response("u@example.test", "T", "h", 993);
        assert_eq!(x, b"user=u@example.test\x01auth=Bearer T\x01\x01");
        let o = OAuthMechanism::OAuthBearer.initial_response("a,b=c@x", "T", "imap.x", 993);
        assert_eq!(
            o,
            b"n,a=a=2Cb=3Dc@x,\x01host=imap.x\x01port=993\x01auth=Bearer T\x01\x01"
        );
        assert_eq!(OAuthMechanism::XOAuth2.error_ack(), b"");
        assert_eq!(OAuthMechanism::OAuthBearer.error_ack(), b"\x01");
    }
}
