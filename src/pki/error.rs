//! Path validation errors (one enum for the `pki` layer, house rule 4).

use super::time::format_unix;

/// Why a certificate path is not valid. Times are Unix seconds, shown as RFC 3339.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A DER or profile-level encoding problem (RFC 5280 §4.1, X.690).
    #[error("malformed: {what}")]
    Malformed { what: String },
    /// A structurally valid certificate that breaks an RFC 5280 profile rule.
    #[error("certificate \"{subject}\" violates RFC 5280: {rule}")]
    NonConforming { subject: String, rule: String },
    /// Only ECDSA P-256 with SHA-256 is accepted.
    #[error("unsupported algorithm: {what}")]
    UnsupportedAlgorithm { what: String },
    #[error("certificate \"{subject}\" has expired: validation time {} is after notAfter {}", format_unix(*at), format_unix(*not_after))]
    Expired { subject: String, at: i64, not_after: i64 },
    #[error("certificate \"{subject}\" is not yet valid: validation time {} is before notBefore {}", format_unix(*at), format_unix(*not_before))]
    NotYetValid { subject: String, at: i64, not_before: i64 },
    /// No trust anchor or intermediate with a matching name and key was found.
    #[error("unknown issuer \"{issuer}\": no trust anchor or intermediate issues this certificate")]
    UnknownIssuer { issuer: String },
    #[error("bad signature on \"{subject}\" by issuer \"{issuer}\"")]
    BadSignature { subject: String, issuer: String },
    #[error("certificate \"{subject}\" (serial {serial}) is revoked")]
    Revoked { subject: String, serial: String },
    /// §4.2: a critical extension the validator does not process.
    #[error("certificate \"{subject}\" has an unknown critical extension {oid}")]
    UnknownCriticalExtension { subject: String, oid: String },
    /// §4.2: at most one instance of each extension.
    #[error("duplicate extension {oid}")]
    DuplicateExtension { oid: String },
    /// §4.2.1.9 pathLenConstraint.
    #[error(
        "path length constraint of \"{issuer}\" exceeded ({intermediates} intermediates below it, at most {path_len} allowed)"
    )]
    PathLenExceeded { issuer: String, path_len: u64, intermediates: u64 },
    /// More intermediates than [`super::ValidationOptions::max_intermediates`] or the hard cap.
    #[error("chain needs more than {max} intermediates")]
    MaxDepthExceeded { max: usize },
    /// An issuer lacks basicConstraints cA (§4.2.1.9, §6.1.4 (k)).
    #[error("\"{subject}\" is not a CA: {reason}")]
    NotACa { subject: String, reason: String },
    /// The leaf is a CA certificate and the options forbid it.
    #[error("\"{subject}\" is a CA certificate used as an end-entity certificate")]
    CaUsedAsLeaf { subject: String },
    /// keyUsage does not allow the use (§4.2.1.3).
    #[error("keyUsage of \"{subject}\" lacks {needed}")]
    KeyUsage { subject: String, needed: String },
    /// extendedKeyUsage does not allow the requested purpose (§4.2.1.12).
    #[error("extendedKeyUsage of \"{subject}\" does not allow {purpose}")]
    ExtendedKeyUsage { subject: String, purpose: String },
    /// A name outside the permitted or inside the excluded subtrees (§4.2.1.10, §6.1.3 (b)–(c)).
    #[error("name {name} of \"{subject}\" violates the name constraints of \"{issuer}\"")]
    NameConstraint { subject: String, issuer: String, name: String },
    /// A CRL that applies (its issuer is in the path) but cannot be used (§5, §6.3.3).
    #[error("CRL of \"{issuer}\" is unusable: {reason}")]
    CrlInvalid { issuer: String, reason: String },
    /// CRLs were given (revocation checking asked for) but none of them is a usable CRL of the
    /// certificate's issuer: whether the certificate is revoked cannot be told (RFC 5280 §6.3.3;
    /// `openssl verify -crl_check` fails the same way, "unable to get certificate CRL").
    #[error("revocation status of \"{subject}\" is undetermined: {reason}")]
    RevocationUnknown { subject: String, reason: String },
    /// Path building stopped: the bound on signature checks or building steps was reached.
    #[error("path building gave up: {what}")]
    BudgetExceeded { what: String },
}

impl PathError {
    /// How specific the error is, to choose among failed candidate paths (higher wins),
    /// as webpki ranks its errors: "unknown issuer" says least, a definite defect of a
    /// certificate that otherwise fits says most.
    pub fn rank(&self) -> u8 {
        match self {
            PathError::UnknownIssuer { .. } => 0,
            PathError::MaxDepthExceeded { .. } => 1,
            PathError::BadSignature { .. } => 2,
            PathError::Revoked { .. } | PathError::BudgetExceeded { .. } => 4,
            PathError::RevocationUnknown { .. } => 3,
            _ => 3,
        }
    }
}
