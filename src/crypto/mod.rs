//! Cryptography of the scheme: key types with identifiers, key check values, purpose-key derivation,
//! the symmetric envelope and value MACs.
//!
//! Everything here is glue over RustCrypto crates (`aes`, `cmac`, `aes-siv`) and, for P-256, AWS-LC
//! (`aws-lc-rs`, named only in [`ec`]); what is ours is which key
//! serves which purpose and what each MAC or envelope binds (DESIGN.md §2, §3).

pub mod attestation;
pub mod card_key;
pub mod ec;
pub mod ecies;
pub mod envelope;
pub mod kdf;
pub mod keys;
pub mod mac;
pub mod random;
pub mod scheme_key;
pub mod scp11;
pub mod secret;
pub mod secure_messaging;

pub use keys::{TransferKey, UpdateKey};
pub use secret::Secret16;

/// Errors of the crypto layer. No variant carries key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("envelope authentication failed (wrong key, wrong binding or tampered data)")]
    EnvelopeAuthentication,
    #[error("envelope too short: {len} bytes, at least {min} needed")]
    EnvelopeTooShort { len: usize, min: usize },
    #[error("MAC verification failed")]
    BadMac,
    #[error("operating system random generator failed")]
    Random,
    #[error("invalid key length {0}")]
    KeyLength(usize),
    #[error("not a valid P-256 public key (SEC 1 point on the curve, not the identity)")]
    InvalidPublicKey,
    #[error("not a valid P-256 private key (32 bytes, 0 < scalar < n)")]
    InvalidPrivateKey,
    #[error("malformed ECDSA signature encoding")]
    MalformedSignature,
    #[error("ECDSA signature verification failed")]
    BadSignature,
    #[error("too many associated-data headers: {count}, at most {max}")]
    TooManyHeaders { count: usize, max: usize },
    /// The P-256 backend (AWS-LC) failed internally: it does so only when it cannot allocate.
    #[error("the P-256 backend failed internally")]
    Backend,
}
