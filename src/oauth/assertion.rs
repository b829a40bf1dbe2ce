//! Signed JWTs that ticketd sends to a token endpoint instead of a client
//! secret or a refresh token.
//!
//! - [`CertificateCredential`]: Microsoft Entra ID "certificate
//!   credentials" (OpenID Connect `private_key_jwt`, RFC 7523 §2.2). The
//!   client authenticates a token request with
//!   `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
//!   and `client_assertion=<JWT>`: header `alg` PS256 (what Microsoft's page
//!   asks for now; RS256 is what its older version asked and is also
//!   accepted), `typ` JWT, `x5t#S256` (base64url SHA-256 of the
//!   certificate's DER) and `x5t` (the SHA-1 one the older page names);
//!   claims `aud` = the token endpoint, `iss` = `sub` = the client id, a
//!   random `jti`, `iat`, `nbf` and `exp` ten minutes later. A fresh
//!   assertion for every request.
//! - [`ServiceAccountKey`]: Google's "Using OAuth 2.0 for Server to Server
//!   Applications" with domain-wide delegation (RFC 7523 §2.1, the JWT
//!   bearer grant): header RS256 with `kid` = the key's `private_key_id`,
//!   claims `iss` = `client_email`, `scope`, `aud` = the token endpoint,
//!   `sub` = the Workspace user whose mail is read, `iat` and `exp` one
//!   hour later (Google's maximum).
//!
//! Private keys are secrets: they are read once, kept only as ring's key
//! pair, and neither `Debug` nor any error text shows them or the file's
//! content — errors name the file and what is wrong with it.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use std::path::Path;
use std::sync::Arc;

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// `grant_type` of the JWT bearer grant (RFC 7523 §2.1).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Lifetime of a client assertion: short, as it is made per request.
const ASSERTION_LIFETIME: i64 = 600;
/// Lifetime of a service account's grant JWT: Google takes at most one
/// hour.
const GRANT_LIFETIME: i64 = 3600;

/// A certificate registered with the app and its RSA private key.
#[derive(Clone)]
pub struct CertificateCredential {
    key: Arc<RsaKeyPair>,
    /// base64url SHA-256 of the certificate's DER (`x5t#S256`).
    x5t_s256: String,
    /// base64url SHA-1 of the certificate's DER (`x5t`).
    x5t: String,
}

impl std::fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("x5t#S256", &self.x5t_s256)
            .finish_non_exhaustive()
    }
}

impl CertificateCredential {
    /// Reads the certificate from `cert_file` and the private key from
    /// `key_file`, or both from `cert_file` when `key_file` is `None`
    /// (one PEM file holding both); checks that the key is the
    /// certificate's.
    pub fn load(cert_file: &Path, key_file: Option<&Path>) -> Result<Self, String> {
        let cert_text = read_pem_file(cert_file, "client_certificate_file")?;
        let certs = pem_blocks(&cert_text, "CERTIFICATE");
        let cert = match certs.first() {
            Some(Ok(der)) => der.clone(),
            Some(Err(e)) => {
                return Err(format!(
                    "client_certificate_file {}: {e}",
                    cert_file.display()
                ))
            }
            None => {
                return Err(format!(
                    "client_certificate_file {}: no PEM certificate (BEGIN CERTIFICATE) in it",
                    cert_file.display()
                ))
            }
        };
        let (key, key_path, what) = match key_file {
            Some(k) => (
                private_key(&read_pem_file(k, "client_key_file")?),
                k,
                "client_key_file",
            ),
            None => (
                private_key(&cert_text),
                cert_file,
                "client_certificate_file",
            ),
        };
        let key = key.map_err(|e| {
            let hint = if key_file.is_none() {
                " (give the key in client_key_file, or both in this file)"
            } else {
                ""
            };
            format!("{what} {}: {e}{hint}", key_path.display())
        })?;
        let public = certificate_rsa_public_key(&cert).ok_or_else(|| {
            format!(
                "client_certificate_file {}: the certificate holds no RSA public key",
                cert_file.display()
            )
        })?;
        // Entra ID refuses an expired certificate's assertions: say so
        // here, with the date, rather than at the first token request.
        if let Some(not_after) = certificate_not_after(&cert) {
            if not_after < jiff::Timestamp::now() {
                return Err(format!(
                    "client_certificate_file {}: the certificate expired at {not_after}; make a new one and upload it to the app registration",
                    cert_file.display()
                ));
            }
        }
        if public != ring::signature::KeyPair::public_key(&key).as_ref() {
            return Err(format!(
                "{what} {}: the private key does not belong to the certificate in {}",
                key_path.display(),
                cert_file.display()
            ));
        }
        Ok(CertificateCredential {
            key: Arc::new(key),
            x5t_s256: URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &cert)),
            x5t: URL_SAFE_NO_PAD.encode(ring::digest::digest(
                &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                &cert,
            )),
        })
    }

    /// The certificate's `x5t#S256` thumbprint (what the app registration
    /// shows in hex as SHA-256; not a secret).
    pub fn thumbprint_s256(&self) -> &str {
        &self.x5t_s256
    }

    /// A fresh client assertion for `client_id` at the token endpoint
    /// `audience`, made at `now` (Unix seconds).
    pub fn assertion(&self, client_id: &str, audience: &str, now: i64) -> Result<String, String> {
        let header = serde_json::json!({
            "alg": "PS256",
            "typ": "JWT",
            "x5t#S256": self.x5t_s256,
            "x5t": self.x5t,
        });
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": jti()?,
            "iat": now,
            "nbf": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        sign(&self.key, &RSA_PSS_SHA256, &header, &claims)
    }
}

/// The JSON key file Google gives for a service account (the fields used).
#[derive(serde::Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: String,
    #[serde(default)]
    client_id: Option<String>,
    private_key_id: String,
    private_key: String,
    #[serde(default)]
    token_uri: Option<String>,
}

/// A Google service account's key (from the JSON file Google gives).
#[derive(Clone)]
pub struct ServiceAccountKey {
    key: Arc<RsaKeyPair>,
    /// The service account's address (`iss`).
    pub client_email: String,
    /// Its numeric client id (what domain-wide delegation is granted to).
    pub client_id: Option<String>,
    /// The key's id (`kid`).
    pub private_key_id: String,
    /// The token endpoint the file names.
    pub token_uri: Option<String>,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// Reads the JSON key file.
    pub fn load(file: &Path) -> Result<Self, String> {
        let what = || format!("service_account_key_file {}", file.display());
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("{}: cannot read it: {e}", what()))?;
        // serde_json's message names the line and column, never content.
        let k: KeyFile = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}: not a service account JSON key (client_email, private_key_id, private_key): {}",
                what(),
                e.classify_text()
            )
        })?;
        if let Some(kind) = &k.kind {
            if kind != "service_account" {
                return Err(format!(
                    "{}: its type is {kind:?}, not \"service_account\"",
                    what()
                ));
            }
        }
        let key =
            private_key(&k.private_key).map_err(|e| format!("{}: private_key: {e}", what()))?;
        Ok(ServiceAccountKey {
            key: Arc::new(key),
            client_email: k.client_email,
            client_id: k.client_id,
            private_key_id: k.private_key_id,
            token_uri: k.token_uri,
        })
    }

    /// The JWT of the bearer grant: the service account acting as
    /// `subject` for `scope` at the token endpoint `audience`, made at
    /// `now` (Unix seconds).
    pub fn assertion(
        &self,
        scope: &str,
        audience: &str,
        subject: &str,
        now: i64,
    ) -> Result<String, String> {
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "kid": self.private_key_id,
        });
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": scope,
            "aud": audience,
            "sub": subject,
            "iat": now,
            "exp": now + GRANT_LIFETIME,
        });
        sign(&self.key, &RSA_PKCS1_SHA256, &header, &claims)
    }
}

/// Which part of serde_json's error to show: its category and position.
trait ClassifyText {
    fn classify_text(&self) -> String;
}

impl ClassifyText for serde_json::Error {
    fn classify_text(&self) -> String {
        use serde_json::error::Category;
        match self.classify() {
            // "missing field `private_key`" names a key, not a value.
            Category::Data => {
                let t = self.to_string();
                if t.starts_with("missing field") {
                    t
                } else {
                    format!("a field has the wrong type at line {}", self.line())
                }
            }
            Category::Syntax | Category::Eof => {
                format!("not JSON (line {} column {})", self.line(), self.column())
            }
            Category::Io => "cannot be read".into(),
        }
    }
}

/// The current time in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn jti() -> Result<String, String> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "no random numbers for the assertion's jti".to_string())?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// `base64url(header).base64url(claims).base64url(signature)`.
fn sign(
    key: &RsaKeyPair,
    alg: &'static dyn ring::signature::RsaEncoding,
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> Result<String, String> {
    let mut jwt = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(alg, &SystemRandom::new(), jwt.as_bytes(), &mut sig)
        .map_err(|_| "signing the assertion failed".to_string())?;
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(sig));
    Ok(jwt)
}

fn read_pem_file(path: &Path, key: &str) -> Result<String, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("{key} {}: cannot read it: {e}", path.display()))?;
    String::from_utf8(bytes)
        .map_err(|_| format!("{key} {}: not a PEM file (not text)", path.display()))
}

/// The DER of each PEM block labelled `label` in `text`.
fn pem_blocks(text: &str, label: &str) -> Vec<Result<Vec<u8>, String>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let body = &rest[start + begin.len()..];
        let Some(stop) = body.find(&end) else {
            out.push(Err(format!("a {label} block has no END line")));
            break;
        };
        let b64: String = body[..stop]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        out.push(
            STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| format!("a {label} block is not valid base64")),
        );
        rest = &body[stop + end.len()..];
    }
    out
}

/// The RSA private key in PEM `text`: PKCS#8 (`BEGIN PRIVATE KEY`, what
/// OpenSSL 3 and Google write) or PKCS#1 (`BEGIN RSA PRIVATE KEY`).
fn private_key(text: &str) -> Result<RsaKeyPair, String> {
    let reject = |e: ring::error::KeyRejected| match e.to_string().as_str() {
        "WrongAlgorithm" | "InvalidEncoding" => {
            "not an RSA private key (PKCS#8 or PKCS#1, at least 2048 bits)".to_string()
        }
        "TooSmall" => "the RSA key is shorter than 2048 bits".to_string(),
        other => format!("the RSA private key was refused ({other})"),
    };
    if let Some(der) = pem_blocks(text, "PRIVATE KEY").into_iter().next() {
        return RsaKeyPair::from_pkcs8(&der?).map_err(reject);
    }
    if let Some(der) = pem_blocks(text, "RSA PRIVATE KEY").into_iter().next() {
        return RsaKeyPair::from_der(&der?).map_err(reject);
    }
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err("the private key is encrypted; ticketd needs it without a passphrase (`openssl pkey -in KEY -out PLAIN`), readable only by ticketd's user".into());
    }
    if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        return Err("an EC key; the assertion is signed with RSA: use an RSA key".into());
    }
    Err("no PEM private key (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY) in it".into())
}

/// One DER element: (tag, content, the rest after it).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The fields of an X.509 certificate's TBSCertificate from the `skip`th
/// on, counted after the optional `[0]` version: serialNumber (0),
/// signature, issuer, validity (3), subject, subjectPublicKeyInfo (5).
fn tbs_fields(cert: &[u8], skip: usize) -> Option<&[u8]> {
    let (0x30, cert, _) = der(cert)? else {
        return None;
    };
    let (0x30, tbs, _) = der(cert)? else {
        return None;
    };
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der(rest)?.2;
    }
    for _ in 0..skip {
        rest = der(rest)?.2;
    }
    Some(rest)
}

/// The `notAfter` of an X.509 certificate's validity.
fn certificate_not_after(cert: &[u8]) -> Option<jiff::Timestamp> {
    let (0x30, validity, _) = der(tbs_fields(cert, 3)?)? else {
        return None;
    };
    let (_, _, after) = der(validity)?;
    let (tag, text, _) = der(after)?;
    der_time(tag, std::str::from_utf8(text).ok()?)
}

/// An X.509 time: UTCTime `YYMMDDHHMMSSZ` (years 1950–2049, RFC 5280
/// §4.1.2.5.1) or GeneralizedTime `YYYYMMDDHHMMSSZ`.
fn der_time(tag: u8, text: &str) -> Option<jiff::Timestamp> {
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy: i16 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let n = |k: usize| rest[k..k + 2].parse::<i8>().ok();
    jiff::civil::DateTime::new(year, n(0)?, n(2)?, n(4)?, n(6)?, n(8)?, 0)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// The RSAPublicKey DER in an X.509 certificate's subjectPublicKeyInfo
/// (what ring's key pair calls its public key), to compare with the key.
fn certificate_rsa_public_key(cert: &[u8]) -> Option<&[u8]> {
    let (0x30, spki, _) = der(tbs_fields(cert, 5)?)? else {
        return None;
    };
    let (0x30, alg, after) = der(spki)? else {
        return None;
    };
    // rsaEncryption, 1.2.840.113549.1.1.1.
    let (0x06, oid, _) = der(alg)? else {
        return None;
    };
    if oid != [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01] {
        return None;
    }
    let (0x03, bits, _) = der(after)? else {
        return None;
    };
    match bits.split_first() {
        Some((0, key)) => Some(key),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_found_and_bad_base64_is_an_error_without_content() {
        let text = "x\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_blocks(text, "CERTIFICATE"), vec![Ok(vec![0, 1, 2, 3])]);
        let bad = "-----BEGIN PRIVATE KEY-----\nsecret!material\n-----END PRIVATE KEY-----";
        let e = private_key(bad).err().unwrap();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn a_file_without_a_key_says_what_is_missing() {
        let e = private_key("hello").err().unwrap();
        assert!(e.contains("no PEM private key"), "{e}");
        let e = private_key(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAA==\n-----END ENCRYPTED PRIVATE KEY-----",
        )
        .err()
        .unwrap();
        assert!(e.contains("encrypted"), "{e}");
    }

    #[test]
    fn x509_times_are_read_in_both_forms() {
        assert_eq!(
            der_time(0x17, "491231235959Z").unwrap().to_string(),
            "2049-12-31T23:59:59Z"
        );
        assert_eq!(
            der_time(0x17, "500101000000Z").unwrap().to_string(),
            "1950-01-01T00:00:00Z"
        );
        assert_eq!(
            der_time(0x18, "20990101120000Z").unwrap().to_string(),
            "2099-01-01T12:00:00Z"
        );
        assert!(der_time(0x17, "2099010112Z").is_none());
        assert!(der_time(0x18, "2099010112000+0100").is_none());
    }

    #[test]
    fn der_lengths_in_long_form_are_read() {
        let mut v = vec![0x04, 0x81, 200];
        v.extend(std::iter::repeat_n(7u8, 200));
        v.push(0x05);
        let (tag, content, rest) = der(&v).unwrap();
        assert_eq!((tag, content.len(), rest), (0x04, 200, &[0x05][..]));
        assert!(der(&[0x04, 0x82, 0x01]).is_none());
    }
}
