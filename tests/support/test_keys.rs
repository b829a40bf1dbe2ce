//! RSA keys and self-signed certificates for the tests of certificate
//! client assertions and service accounts, made with the `openssl` command
//! line in the test's temporary directory (nothing is committed).
//!
//! ```ignore
//! #[path = "support/test_keys.rs"]
//! mod test_keys;
//! let c = test_keys::certificate(dir.path(), "app");
//! // c.cert, c.key, c.combined (PEM files), c.der
//! ```
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate and its key, as files and the certificate's DER.
pub struct TestCert {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, `BEGIN PRIVATE KEY`).
    pub key: PathBuf,
    /// One PEM file holding the certificate and then the key.
    pub combined: PathBuf,
    /// PKCS#1 form of the key (`BEGIN RSA PRIVATE KEY`).
    pub key_pkcs1: PathBuf,
    /// DER of the certificate (what an app registration holds).
    pub der: Vec<u8>,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command line (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 2048-bit RSA key and a self-signed certificate for it, named `name`
/// in `dir`.
pub fn certificate(dir: &Path, name: &str) -> TestCert {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let key_pkcs1 = dir.join(format!("{name}.rsa.key"));
    let der_path = dir.join(format!("{name}.der"));
    let combined = dir.join(format!("{name}.pem"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &s(&key),
        "-out",
        &s(&cert),
        "-days",
        "2",
        "-subj",
        &format!("/CN=ticketd-test-{name}"),
    ]);
    openssl(&[
        "x509",
        "-in",
        &s(&cert),
        "-outform",
        "DER",
        "-out",
        &s(&der_path),
    ]);
    openssl(&[
        "rsa",
        "-in",
        &s(&key),
        "-traditional",
        "-out",
        &s(&key_pkcs1),
    ]);
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&cert).unwrap(),
        std::fs::read_to_string(&key).unwrap()
    );
    std::fs::write(&combined, both).unwrap();
    TestCert {
        cert,
        key,
        combined,
        key_pkcs1,
        der: std::fs::read(&der_path).unwrap(),
    }
}

/// A service account's JSON key file as Google gives it (`type`,
/// `project_id`, `private_key_id`, `private_key`, `client_email`,
/// `client_id`, `token_uri` …), with a fresh key; returns the file and the
/// key's certificate (what Google publishes for the key id).
pub fn service_account_key(
    dir: &Path,
    client_email: &str,
    client_id: &str,
    key_id: &str,
    token_uri: &str,
) -> (PathBuf, TestCert) {
    let c = certificate(dir, "service-account");
    let private_key = std::fs::read_to_string(&c.key).unwrap();
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": "ticketd-test",
        "private_key_id": key_id,
        "private_key": private_key,
        "client_email": client_email,
        "client_id": client_id,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{client_email}"),
        "universe_domain": "googleapis.com",
    });
    let path = dir.join("service-account.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    (path, c)
}

/// The lines of a PEM file's body (base64), to look for in outputs: none
/// of them may appear anywhere.
pub fn pem_body_lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .map(str::to_string)
        .collect()
}
