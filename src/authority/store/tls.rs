//! TLS to PostgreSQL, with libpq's words (`sslmode`, `sslrootcert`, `PGSSLROOTCERT`; PostgreSQL
//! documentation §34.19 "SSL Support"), on rustls with the AWS-LC provider keyroll already uses for
//! P-256.
//!
//! The synchronous `postgres` client parses `sslmode` itself but knows only `disable`, `prefer` and
//! `require`, and never reads a root certificate; so keyroll takes `sslmode` and `sslrootcert` out of
//! the URL, hands the client `disable`/`prefer`/`require`, and decides what the TLS connector checks:
//!
//! | `sslmode` | TLS | server certificate |
//! | --- | --- | --- |
//! | (none), `disable` | never (a plain connection, as before) | — |
//! | `allow`, `prefer` | if the server offers it | not checked (as libpq) |
//! | `require` | always | not checked (as libpq without a root file): encryption only |
//! | `verify-ca` | always | chains to the root in `sslrootcert` (RFC 5280 path validation) |
//! | `verify-full` | always | as `verify-ca`, and names the host of the URL (RFC 6125) |
//!
//! The root is `sslrootcert=FILE` in the URL, else `PGSSLROOTCERT`, else `~/.postgresql/root.crt`
//! (libpq's order); `verify-ca` and `verify-full` without one are refused before connecting.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;

/// What the URL asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// No `sslmode`, or `disable`: a plain connection.
    Plain,
    /// `allow` or `prefer`: TLS if the server offers it, certificate unchecked.
    Prefer,
    /// `require`: TLS, certificate unchecked.
    Require,
    /// `verify-ca`: TLS, the certificate chains to the root.
    VerifyCa(PathBuf),
    /// `verify-full`: TLS, the certificate chains to the root and names the host.
    VerifyFull(PathBuf),
}

/// The URL without keyroll's TLS parameters (and with `sslmode` in the client's words), and the mode;
/// or why not (a message for the user).
pub fn split(url: &str) -> Result<(String, Mode), String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => return Ok((url.to_string(), Mode::Plain)),
    };
    let mut kept = Vec::new();
    let (mut mode, mut root) = (None, None);
    for part in query.split('&').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("sslmode", v)) => mode = Some(percent_decode(v)?),
            Some(("sslrootcert", v)) => root = Some(PathBuf::from(percent_decode(v)?)),
            _ => kept.push(part),
        }
    }
    let root = || -> Result<PathBuf, String> {
        let found = root.clone().or_else(|| std::env::var_os("PGSSLROOTCERT").map(PathBuf::from)).or_else(|| {
            let home = std::env::var_os("HOME")?;
            Some(PathBuf::from(home).join(".postgresql/root.crt")).filter(|p| p.exists())
        });
        found.ok_or_else(|| {
            "sslmode=verify-ca and verify-full need the server's root certificate: sslrootcert=FILE in the URL, \
             PGSSLROOTCERT, or ~/.postgresql/root.crt"
                .to_string()
        })
    };
    let (mode, word) = match mode.as_deref() {
        None => (Mode::Plain, None),
        Some("disable") => (Mode::Plain, Some("disable")),
        Some("allow") | Some("prefer") => (Mode::Prefer, Some("prefer")),
        Some("require") => (Mode::Require, Some("require")),
        Some("verify-ca") => (Mode::VerifyCa(root()?), Some("require")),
        Some("verify-full") => (Mode::VerifyFull(root()?), Some("require")),
        Some(other) => {
            return Err(format!(
                "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            ));
        }
    };
    if let Some(w) = word {
        kept.push(match w {
            "disable" => "sslmode=disable",
            "prefer" => "sslmode=prefer",
            _ => "sslmode=require",
        });
    }
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, mode))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or_else(|| format!("bad percent escape in {s:?}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// The rustls connector for a TLS mode (`None` for [`Mode::Plain`]).
pub fn connector(mode: &Mode) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        Mode::Plain => return Ok(None),
        Mode::Prefer | Mode::Require => Arc::new(Unchecked(provider.clone())),
        Mode::VerifyCa(root) | Mode::VerifyFull(root) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(root)
                .map_err(|e| format!("cannot read root certificate file {}: {e}", root.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("root certificate file {}: {e}", root.display()))?;
            if certs.is_empty() {
                return Err(format!("root certificate file {} holds no PEM certificate", root.display()));
            }
            for c in certs {
                roots.add(c).map_err(|e| format!("root certificate file {}: {e}", root.display()))?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("root certificate file {}: {e}", root.display()))?;
            Arc::new(Chain { webpki, check_name: matches!(mode, Mode::VerifyFull(_)) })
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
}

/// `verify-ca` and `verify-full`: rustls's WebPKI verifier (path validation to the given roots,
/// validity, and for `verify-full` the host name); `verify-ca` forgives only a name mismatch.
#[derive(Debug)]
struct Chain {
    webpki: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Chain {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `prefer` and `require`: the server's certificate is not checked (libpq's meaning of these modes:
/// protection from eavesdroppers, not from an impostor server); the handshake signature still is.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        assert_eq!(split("postgres://a@h/d").unwrap(), ("postgres://a@h/d".into(), Mode::Plain));
        assert_eq!(
            split("postgres://a@h/d?sslmode=require&application_name=x").unwrap(),
            ("postgres://a@h/d?application_name=x&sslmode=require".into(), Mode::Require)
        );
        assert_eq!(
            split("postgres://a@h/d?sslmode=verify-full&sslrootcert=/etc/my%20ca.pem").unwrap(),
            ("postgres://a@h/d?sslmode=require".into(), Mode::VerifyFull("/etc/my ca.pem".into()))
        );
        assert_eq!(split("postgres://a@h/d?sslmode=allow").unwrap().1, Mode::Prefer);
        assert_eq!(split("postgres://a@h/d?sslmode=disable").unwrap().0, "postgres://a@h/d?sslmode=disable");
        assert!(split("postgres://a@h/d?sslmode=maybe").unwrap_err().contains("verify-full"));
    }
}
