//! The one reader of certificates, CRLs, PEM and RFC 3339 times in keyroll, and RFC 5280
//! certification path validation for ECDSA P-256 chains, with CRL revocation checks.
//!
//! A bottom-layer module: no file I/O, callable by the auditor and by the reference card (which
//! checks a peer card's certificate against its issuer root). Only ECDSA with P-256 and SHA-256
//! is accepted (RFC 5480, RFC 5758); every other key or signature algorithm is refused with a
//! reason.
//!
//! Decisions (guided by the x509-limbo suite, documented where they are made):
//! - Trust anchors are certificates and are checked like CA certificates (validity, critical
//!   basicConstraints cA, keyUsage, extensions, SKI), except that their own signature is not.
//! - Validation time is compared at one-second granularity (fractions floored, §4.1.2.5).
//! - CRLs: a supplied CRL whose issuer is a certificate's issuer must be usable (signature,
//!   cRLSign, cRLNumber, times, no unknown critical extension) or validation fails. With
//!   [`ValidationOptions::require_crl`] (the auditor's `--crl`, as `openssl verify -crl_check`),
//!   the leaf must have a usable CRL from its issuer, else its revocation status is undetermined and
//!   validation fails ([`PathError::RevocationUnknown`]); without it, a certificate for whose issuer
//!   no CRL is supplied is not checked for revocation.
//! - Policy processing (§6.1.3 (d)–(f)) is not done: certificatePolicies is accepted,
//!   policyMappings, policyConstraints and inhibitAnyPolicy are refused when critical.

pub mod build;
mod cert;
mod crl;
mod der;
mod error;
mod name;
pub mod pem;
mod time;
pub(crate) mod verify;

#[cfg(test)]
mod tests;

pub use cert::{BasicConstraints, Certificate};
pub use crl::Crl;
pub use error::PathError;
pub use name::{GeneralName, Name};
pub use time::{floor_seconds, format_rfc3339, format_unix, parse_rfc3339};
pub use verify::{
    MAX_BUILD_CALLS, MAX_INPUTS, MAX_INTERMEDIATES, MAX_NAME_CONSTRAINT_CHECKS, MAX_SIGNATURE_CHECKS, Validator,
    validate,
};

use std::time::SystemTime;

/// id-kp-serverAuth (RFC 5280 §4.2.1.12), as OID content octets.
pub const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// id-kp-clientAuth (RFC 5280 §4.2.1.12), as OID content octets.
pub const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// Inputs that shape validation besides the certificates.
#[derive(Clone, Debug)]
pub struct ValidationOptions {
    /// The validation time (§6.1.1 (b)).
    pub at: SystemTime,
    /// At most this many intermediates, not counting self-issued ones (x509-limbo's
    /// `max_chain_depth`). `None`: only the built-in cap applies.
    pub max_intermediates: Option<usize>,
    /// A key purpose (OID content octets) the leaf's extendedKeyUsage must allow, if it has one
    /// (§4.2.1.12). `None`: no purpose is required.
    pub required_eku: Option<Vec<u8>>,
    /// Accept a CA certificate (basicConstraints cA TRUE) as the leaf. RFC 5280 allows it; the
    /// card sets this to `false`, since card certificates are end-entity certificates.
    pub allow_ca_leaf: bool,
    /// The leaf's revocation status must be determined: a CRL from its issuer that verifies under the
    /// issuer's key must be among the supplied CRLs (`openssl verify -crl_check`). The auditor sets it
    /// when it is given CRLs, so a CRL that does not verify under the issuer is never silently ignored.
    pub require_crl: bool,
}

impl ValidationOptions {
    /// Options for validation at `at` with no further restriction.
    pub fn at(at: SystemTime) -> Self {
        ValidationOptions { at, max_intermediates: None, required_eku: None, allow_ca_leaf: true, require_crl: false }
    }
}

/// keyUsage bits of a certificate (§4.2.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyUsage(pub u32);

impl KeyUsage {
    pub fn digital_signature(self) -> bool {
        self.0 & cert::ku::DIGITAL_SIGNATURE != 0
    }
    pub fn key_agreement(self) -> bool {
        self.0 & cert::ku::KEY_AGREEMENT != 0
    }
    pub fn key_cert_sign(self) -> bool {
        self.0 & cert::ku::KEY_CERT_SIGN != 0
    }
    pub fn crl_sign(self) -> bool {
        self.0 & cert::ku::CRL_SIGN != 0
    }
}

/// A validated path, leaf first.
#[derive(Clone, Debug)]
pub struct ValidatedPath {
    /// DER certificates: the leaf, the intermediates upwards, the trust anchor last.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's P-256 public key as an uncompressed SEC1 point (65 bytes).
    pub leaf_public_key_sec1: Vec<u8>,
    /// The same key as parsed (and checked) during validation, for callers that use it at once.
    pub leaf_public_key: crate::crypto::ec::PublicKey,
    /// The leaf's serialNumber INTEGER content octets.
    pub leaf_serial: Vec<u8>,
    /// The leaf's keyUsage, `None` when the extension is absent.
    pub leaf_key_usage: Option<KeyUsage>,
    /// basicConstraints cA of the leaf.
    pub leaf_is_ca: bool,
    /// The leaf's subject as parsed (`display()` for text), for callers that read its attributes.
    pub leaf_subject: Name,
    /// The leaf's notAfter, Unix seconds.
    pub leaf_not_after: i64,
}
