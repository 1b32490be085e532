//! The signer seam: every issuer signature (CA certificates and CRLs, the scheme key's authorisations
//! and policies, the audit log head) is ECDSA P-256 with SHA-256 (FIPS 186-5 §6.4) made through
//! [`Signer`], so the key may live in this process ([`KeyPair`], AWS-LC) or in a token that never
//! lets it out (the back office's PKCS #11 custody, `authority::pkcs11`).
//!
//! The digest is always computed here ([`ec::digest_parts`]) and only the 32-byte hash goes to the
//! signer: a token signs it with the raw `CKM_ECDSA` mechanism (PKCS #11 v2.40 §2.3.6), so what is signed
//! does not depend on the device, and a signature from either verifies with the same public key. The
//! returned signature is normalised to low S, as the in-process signer's already are.

use super::CryptoError;
use super::ec::{self, KeyPair, PublicKey, Signature};

/// An ECDSA P-256 signing key, wherever it is held. Implementations are `Send + Sync`: the CA signs
/// batches from several threads at once.
pub trait Signer: Send + Sync {
    /// The public key (checked against the database's record before use).
    fn public_key(&self) -> &PublicKey;

    /// ECDSA over a SHA-256 digest, returned low-S.
    fn sign_prehashed(&self, digest: &[u8; ec::DIGEST_LEN]) -> Result<Signature, CryptoError>;

    /// ECDSA P-256 / SHA-256 over `parts[0] ‖ parts[1] ‖ …`.
    fn sign(&self, parts: &[&[u8]]) -> Result<Signature, CryptoError> {
        self.sign_prehashed(&ec::digest_parts(parts))
    }

    /// ECDSA P-256 / SHA-256 over one message (a certificate's or CRL's TBS bytes).
    fn sign_message(&self, message: &[u8]) -> Result<Signature, CryptoError> {
        self.sign(&[message])
    }
}

impl Signer for KeyPair {
    fn public_key(&self) -> &PublicKey {
        KeyPair::public_key(self)
    }

    fn sign_prehashed(&self, digest: &[u8; ec::DIGEST_LEN]) -> Result<Signature, CryptoError> {
        KeyPair::sign_prehashed(self, digest)
    }
}

impl Signer for super::card_key::CardKeyPair {
    fn public_key(&self) -> &PublicKey {
        self.key_pair().public_key()
    }

    fn sign_prehashed(&self, digest: &[u8; ec::DIGEST_LEN]) -> Result<Signature, CryptoError> {
        self.key_pair().sign_prehashed(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prehashed_signatures_verify_like_the_in_process_ones() {
        let k = KeyPair::generate().unwrap();
        let s: &dyn Signer = &k;
        let sig = s.sign(&[b"ab", b"cd"]).unwrap();
        k.public_key().verify(&[b"abcd"], &sig).unwrap();
        let sig = s.sign_message(b"tbs").unwrap();
        k.public_key().verify(&[b"tbs"], &sig).unwrap();
        assert!(k.public_key().verify(&[b"tbz"], &sig).is_err());
        // Low S, as every signature of this crate.
        assert_eq!(sig.normalize_s().to_p1363(), sig.to_p1363());
    }
}
