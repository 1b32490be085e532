//! A card's P-256 key pair (claims 3, 4, 7, 18: "a secret key corresponding to the first public key")
//! and ECDSA P-256 / SHA-256 signatures over byte strings.
//!
//! What a signature covers (claim 4's `label ‖ ciphertext ‖ challenge`) is decided by the caller; this
//! file only signs and verifies the concatenation of the parts it is given.
//!
//! Encodings:
//! - public keys are SEC 1 §2.3.3 octet strings; we emit the 65-byte uncompressed form and accept the
//!   uncompressed or compressed form (SEC 1 §2.3.4), rejecting the point at infinity, points off the
//!   curve and the hybrid forms;
//! - signatures are the DER `ECDSA-Sig-Value` of RFC 3279 §2.2.3 (strict DER: minimal lengths and
//!   integers, no trailing bytes, `0 < r, s < n`); [`verify_p1363`] accepts the fixed 64-byte `r ‖ s`
//!   form of IEEE P1363 for callers that need a fixed length.
//!
//! The arithmetic is AWS-LC's, through [`super::ec`] (the one module that names the backend).
//!
//! High-S: signing (randomised nonce, see [`super::ec`]) always emits the low-S form `s <= n/2`, so our
//! signatures are canonical for verifiers that insist on it. Verification accepts high-S as FIPS 186-5
//! and X9.62 do (Wycheproof marks such signatures `valid`). Malleability does not matter in this
//! scheme: a signature is never used as an identifier, and what it authenticates carries the verifier's
//! single-use challenge (DESIGN.md §2), so a second encoding of the same signature authenticates nothing
//! new.

use super::CryptoError;
use super::ec::{self, KeyPair, PublicKey};
use super::secret::SecretBytes;

/// Length of an uncompressed SEC 1 P-256 point: `0x04 ‖ X ‖ Y`.
pub const PUBLIC_KEY_LEN: usize = ec::PUBLIC_KEY_LEN;
/// Length of a P-256 secret scalar.
pub const SECRET_KEY_LEN: usize = ec::SCALAR_LEN;
/// Length of a P1363 (`r ‖ s`) P-256 signature.
pub const P1363_SIGNATURE_LEN: usize = ec::P1363_SIGNATURE_LEN;
/// Largest DER ECDSA P-256 signature: SEQUENCE of two INTEGERs of at most 33 bytes.
pub const MAX_DER_SIGNATURE_LEN: usize = ec::MAX_DER_SIGNATURE_LEN;

/// A card's P-256 key pair ([`ec::KeyPair`]: the scalar lives in AWS-LC, which cleanses it when
/// freed). Never shown by `Debug`.
#[derive(Clone)]
pub struct CardKeyPair {
    pair: KeyPair,
}

impl CardKeyPair {
    /// A fresh key pair (the card generates its own key pair, DESIGN.md §1).
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(CardKeyPair { pair: KeyPair::generate()? })
    }

    /// Restore a key pair from its 32-byte big-endian secret scalar (the card's state file, which is
    /// the card's own secure memory: the format is unchanged by the AWS-LC backend).
    /// Rejects any other length, zero and values `>= n`.
    pub fn from_bytes(scalar: &[u8]) -> Result<Self, CryptoError> {
        Ok(CardKeyPair { pair: KeyPair::from_scalar(scalar)? })
    }

    /// The 32-byte big-endian secret scalar, in a zeroizing buffer.
    ///
    /// # Panics
    /// Only if AWS-LC fails internally, which it does only when it cannot allocate memory.
    pub fn to_bytes(&self) -> SecretBytes {
        self.pair.to_scalar().expect("AWS-LC exports the scalar of a valid key unless it cannot allocate")
    }

    /// The public key as an uncompressed SEC 1 point (65 bytes).
    pub fn public_key_sec1(&self) -> [u8; PUBLIC_KEY_LEN] {
        *self.pair.public_key().sec1()
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        self.pair.public_key()
    }

    /// The key pair of the backend module.
    pub fn key_pair(&self) -> &KeyPair {
        &self.pair
    }

    /// ECDSA P-256 with SHA-256 over `parts[0] ‖ parts[1] ‖ …` (FIPS 186-5 §6.4), returned as a
    /// low-S DER `ECDSA-Sig-Value`.
    ///
    /// # Panics
    /// Only if AWS-LC fails internally, which it does only when it cannot allocate memory.
    pub fn sign(&self, parts: &[&[u8]]) -> Vec<u8> {
        let sig = self.pair.sign(parts).expect("AWS-LC ECDSA signing fails only when it cannot allocate");
        sig.to_der().as_bytes().to_vec()
    }
}

impl std::fmt::Debug for CardKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardKeyPair(<secret redacted>)")
    }
}

/// Decode a SEC 1 public key (uncompressed or compressed), rejecting the identity, points off the
/// curve and every other length or prefix.
pub fn parse_public_key(sec1: &[u8]) -> Result<PublicKey, CryptoError> {
    PublicKey::from_sec1(sec1)
}

/// Re-encode a valid SEC 1 public key in the uncompressed 65-byte form.
pub fn normalize_public_key(sec1: &[u8]) -> Result<[u8; PUBLIC_KEY_LEN], CryptoError> {
    Ok(*parse_public_key(sec1)?.sec1())
}

/// The uncompressed SEC 1 point inside a DER `SubjectPublicKeyInfo` (RFC 5480 §2): the algorithm
/// must be `id-ecPublicKey` with the named curve `secp256r1`; anything else is refused. This is how a
/// card or terminal takes the public key out of a card certificate (claims 4, 13).
pub fn public_key_from_spki_der(spki_der: &[u8]) -> Result<[u8; PUBLIC_KEY_LEN], CryptoError> {
    Ok(*PublicKey::from_spki_der(spki_der)?.sec1())
}

/// Verify a DER ECDSA P-256 / SHA-256 signature over `parts[0] ‖ parts[1] ‖ …`.
///
/// Errors: [`CryptoError::InvalidPublicKey`] for a bad key, [`CryptoError::MalformedSignature`] for
/// anything but a strict-DER `ECDSA-Sig-Value` with `0 < r, s < n`, [`CryptoError::BadSignature`]
/// when the signature does not verify. High-S signatures are accepted (see the module notes).
pub fn verify(public_sec1: &[u8], parts: &[&[u8]], der_sig: &[u8]) -> Result<(), CryptoError> {
    parse_public_key(public_sec1)?.verify_der(parts, der_sig)
}

/// Verify a fixed-length IEEE P1363 (`r ‖ s`, 32 bytes each, big-endian) ECDSA P-256 / SHA-256
/// signature over `parts[0] ‖ parts[1] ‖ …`. Same errors and high-S policy as [`verify`].
pub fn verify_p1363(public_sec1: &[u8], parts: &[&[u8]], sig: &[u8]) -> Result<(), CryptoError> {
    parse_public_key(public_sec1)?.verify_p1363(parts, sig)
}

/// Elliptic-curve Diffie-Hellman on P-256 (SEC 1 §3.3.1): the 32-byte x-coordinate of
/// `secret · peer`. The peer point is validated (on the curve, not the identity) before use; P-256
/// has cofactor 1, so a valid point cannot force a small-subgroup result.
/// An uncompressed point is checked by the ECDH parse alone, as an envelope's ephemeral key is
/// ([`PublicKey::for_agreement`]); a compressed one is decompressed and checked first.
pub fn ecdh(secret: &CardKeyPair, peer_sec1: &[u8]) -> Result<SecretBytes, CryptoError> {
    let peer = match peer_sec1.len() {
        PUBLIC_KEY_LEN => PublicKey::for_agreement(peer_sec1)?,
        _ => parse_public_key(peer_sec1)?,
    };
    let shared = secret.pair.agree(&peer)?;
    Ok(SecretBytes::new(shared.expose().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::scalar::IsHigh;

    #[test]
    fn sign_verify_round_trip_and_parts_concatenate() {
        let k = CardKeyPair::generate().unwrap();
        let pk = k.public_key_sec1();
        assert_eq!(pk[0], 0x04);
        let sig = k.sign(&[b"label", b"cipher", b"challenge"]);
        verify(&pk, &[b"label", b"cipher", b"challenge"], &sig).unwrap();
        // Same bytes split differently: same message (the caller fixes the layout).
        verify(&pk, &[b"labelcipherchallenge"], &sig).unwrap();
        assert_eq!(verify(&pk, &[b"label", b"cipher", b"challengf"], &sig), Err(CryptoError::BadSignature));
        let other = CardKeyPair::generate().unwrap();
        assert_eq!(
            verify(&other.public_key_sec1(), &[b"label", b"cipher", b"challenge"], &sig),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn signatures_are_randomised_and_low_s() {
        // AWS-LC draws a fresh nonce per signature (RFC 6979 determinism was the p256 crate's).
        let k = CardKeyPair::from_bytes(&[0x11; 32]).unwrap();
        let a = k.sign(&[b"m"]);
        assert_ne!(a, k.sign(&[b"m"]));
        let sig = p256::ecdsa::Signature::from_der(&a).unwrap();
        assert!(!bool::from(sig.s().is_high()));
    }

    #[test]
    fn high_s_is_accepted_by_verify() {
        let k = CardKeyPair::from_bytes(&[0x22; 32]).unwrap();
        let low = p256::ecdsa::Signature::from_der(&k.sign(&[b"m"])).unwrap();
        // s' = n - s verifies too (ECDSA is malleable); we accept it by decision.
        let high = p256::ecdsa::Signature::from_scalars(low.r().to_bytes(), (-*low.s()).to_bytes()).unwrap();
        assert!(bool::from(high.s().is_high()));
        verify(&k.public_key_sec1(), &[b"m"], high.to_der().as_bytes()).unwrap();
        verify_p1363(&k.public_key_sec1(), &[b"m"], &high.to_bytes()).unwrap();
    }

    #[test]
    fn malformed_signatures_and_keys_are_refused() {
        let k = CardKeyPair::generate().unwrap();
        let pk = k.public_key_sec1();
        let sig = k.sign(&[b"m"]);
        let mut trailing = sig.clone();
        trailing.push(0);
        assert_eq!(verify(&pk, &[b"m"], &trailing), Err(CryptoError::MalformedSignature));
        assert_eq!(verify(&pk, &[b"m"], &[]), Err(CryptoError::MalformedSignature));
        assert_eq!(verify(&pk, &[b"m"], &[0x30, 0x00]), Err(CryptoError::MalformedSignature));
        assert_eq!(verify(&pk, &[b"m"], &[0x30; 200]), Err(CryptoError::MalformedSignature));
        assert_eq!(verify(&pk[..64], &[b"m"], &sig), Err(CryptoError::InvalidPublicKey));
        assert_eq!(verify(&[0x00], &[b"m"], &sig), Err(CryptoError::InvalidPublicKey));
        let mut off_curve = pk;
        off_curve[64] ^= 1;
        assert_eq!(verify(&off_curve, &[b"m"], &sig), Err(CryptoError::InvalidPublicKey));
        let mut hybrid = pk;
        hybrid[0] = 0x06 | (pk[64] & 1);
        assert_eq!(verify(&hybrid, &[b"m"], &sig), Err(CryptoError::InvalidPublicKey));
        // Zero r and s in P1363 form.
        assert_eq!(verify_p1363(&pk, &[b"m"], &[0u8; 64]), Err(CryptoError::MalformedSignature));
        assert_eq!(verify_p1363(&pk, &[b"m"], &[1u8; 63]), Err(CryptoError::MalformedSignature));
    }

    #[test]
    fn compressed_key_is_accepted_and_normalized() {
        let k = CardKeyPair::generate().unwrap();
        let pk = k.public_key_sec1();
        use p256::elliptic_curve::sec1::ToSec1Point;
        let compressed = p256::PublicKey::from_sec1_bytes(&pk).unwrap().as_affine().to_sec1_point(true);
        assert_eq!(normalize_public_key(compressed.as_bytes()).unwrap(), pk);
        verify(compressed.as_bytes(), &[b"m"], &k.sign(&[b"m"])).unwrap();
    }

    #[test]
    fn scalar_round_trip_and_rejects() {
        let k = CardKeyPair::generate().unwrap();
        let bytes = k.to_bytes();
        assert_eq!(bytes.expose().len(), 32);
        let back = CardKeyPair::from_bytes(bytes.expose()).unwrap();
        assert_eq!(back.public_key_sec1(), k.public_key_sec1());
        assert_eq!(CardKeyPair::from_bytes(&[0u8; 32]).unwrap_err(), CryptoError::InvalidPrivateKey);
        assert_eq!(CardKeyPair::from_bytes(&[0xFF; 32]).unwrap_err(), CryptoError::InvalidPrivateKey);
        assert_eq!(CardKeyPair::from_bytes(&[1u8; 31]).unwrap_err(), CryptoError::InvalidPrivateKey);
    }

    #[test]
    fn debug_hides_the_secret() {
        let k = CardKeyPair::from_bytes(&[0xAB; 32]).unwrap();
        let shown = format!("{k:?}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
    }

    #[test]
    fn ecdh_agrees_both_ways_and_refuses_bad_points() {
        let a = CardKeyPair::generate().unwrap();
        let b = CardKeyPair::generate().unwrap();
        let ab = ecdh(&a, &b.public_key_sec1()).unwrap();
        let ba = ecdh(&b, &a.public_key_sec1()).unwrap();
        assert_eq!(ab.expose(), ba.expose());
        assert_eq!(ab.expose().len(), 32);
        assert_eq!(ecdh(&a, &[0x00]).unwrap_err(), CryptoError::InvalidPublicKey);
        let mut bad = b.public_key_sec1();
        bad[10] ^= 0x40;
        assert_eq!(ecdh(&a, &bad).unwrap_err(), CryptoError::InvalidPublicKey);
    }

    #[test]
    fn spki_extraction_checks_algorithm_and_curve() {
        use p256::pkcs8::EncodePublicKey;
        let k = CardKeyPair::generate().unwrap();
        let spki = p256::PublicKey::from_sec1_bytes(&k.public_key_sec1()).unwrap().to_public_key_der().unwrap();
        assert_eq!(public_key_from_spki_der(spki.as_bytes()).unwrap(), k.public_key_sec1());
        let mut wrong = spki.as_bytes().to_vec();
        // The curve OID is 1.2.840.10045.3.1.7; change its last arc.
        let pos = wrong.windows(3).position(|w| w == [0x03, 0x01, 0x07]).unwrap();
        wrong[pos + 2] = 0x08;
        assert_eq!(public_key_from_spki_der(&wrong).unwrap_err(), CryptoError::InvalidPublicKey);
        assert_eq!(public_key_from_spki_der(&spki.as_bytes()[..20]).unwrap_err(), CryptoError::InvalidPublicKey);
    }
}
