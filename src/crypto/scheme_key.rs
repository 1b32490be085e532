//! The scheme signing key (DESIGN.md §10 points 3–5): the issuer's P-256 key that signs key
//! authorisations and the scheme policy, certified by the issuer root, whose raw public key every card
//! stores at personalisation.
//!
//! - **Scheme id**: SHA-256 of the key's DER `SubjectPublicKeyInfo` (RFC 5480 §2: `id-ecPublicKey`,
//!   `secp256r1`, uncompressed point). For P-256 that encoding is a fixed 26-byte prefix followed by
//!   the 65-byte point, so a card computes the id from the raw key it stores without a DER encoder.
//! - **Signatures**: ECDSA P-256 with SHA-256 (FIPS 186-5 §6.4, deterministic nonces by RFC 6979),
//!   in the fixed 64-byte IEEE P1363 form `r ‖ s` so that the signed wire objects have a fixed layout.
//!   Every signature covers [`SIGNATURE_LABEL`] first; the object's own type byte follows it, so an
//!   authorisation can never be read as a policy or the other way round.
//! - **Key commitment**: `SHA-256(COMMITMENT_LABEL ‖ scheme id ‖ kind ‖ id (4, BE) ‖ key)`: what an
//!   authorisation signs instead of the key, so the signed object reveals nothing but a check value.
//!
//! One key, one purpose (NIST SP 800-57 Part 1 §5.2): this key signs nothing but authorisations and
//! policies; the CA root, the audit key and card keys are separate.

use super::CryptoError;
use super::card_key::{self, CardKeyPair};
use super::ec::PublicKey;
use super::secret::{Secret16, SecretBytes};
use super::signer::Signer;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Length of a scheme id (SHA-256).
pub const SCHEME_ID_LEN: usize = 32;
/// Length of a key commitment (SHA-256).
pub const COMMITMENT_LEN: usize = 32;
/// Length of a scheme signature (P1363 `r ‖ s`).
pub const SIGNATURE_LEN: usize = card_key::P1363_SIGNATURE_LEN;
/// Length of the raw public key cards store (uncompressed SEC 1 point).
pub const PUBLIC_KEY_LEN: usize = card_key::PUBLIC_KEY_LEN;

/// Domain separation of every scheme-key signature (version 2 of the trust model).
pub const SIGNATURE_LABEL: &[u8] = b"keyroll scheme signature v2";
/// Domain separation of key commitments.
pub const COMMITMENT_LABEL: &[u8] = b"keyroll key commitment v2";

/// DER prefix of a P-256 `SubjectPublicKeyInfo` with an uncompressed point (RFC 5480 §2.1.1, §2.2):
/// `SEQUENCE { SEQUENCE { id-ecPublicKey, secp256r1 }, BIT STRING (0 unused bits) 04‖X‖Y }`.
pub const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE,
    0x3D, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// SHA-256 of a scheme id.
pub type SchemeId = [u8; SCHEME_ID_LEN];

/// The DER `SubjectPublicKeyInfo` of an uncompressed P-256 public key.
pub fn spki_der(public_sec1: &[u8; PUBLIC_KEY_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(P256_SPKI_PREFIX.len() + PUBLIC_KEY_LEN);
    out.extend_from_slice(&P256_SPKI_PREFIX);
    out.extend_from_slice(public_sec1);
    out
}

/// The scheme id of a validated public key: SHA-256 of its SPKI. Only [`SchemePublicKey::new`] (after
/// validating the point) and the signing key call it, so no id is computed for what is not a P-256 key.
fn id_of(point: &[u8; PUBLIC_KEY_LEN]) -> SchemeId {
    Sha256::digest(spki_der(point)).into()
}

/// The scheme key as those who check its signatures hold it (a card, the back office reading its
/// rows, an auditor): the key parsed and validated once, with the scheme id computed from it, so the
/// id and the key that signed can never be two different keys, and a card checking an authorisation
/// parses the key once (issue 15: it parsed it three times: for the id, to validate it, to verify).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemePublicKey {
    key: PublicKey,
    id: SchemeId,
}

impl SchemePublicKey {
    /// From the raw public key (uncompressed or compressed SEC 1); refuses anything but a P-256 point.
    pub fn new(public_sec1: &[u8]) -> Result<Self, CryptoError> {
        let key = PublicKey::from_sec1(public_sec1)?;
        let id = id_of(key.sec1());
        Ok(SchemePublicKey { key, id })
    }

    /// The uncompressed point (what a card stores at personalisation).
    pub fn sec1(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.key.sec1()
    }

    pub fn id(&self) -> &SchemeId {
        &self.id
    }

    /// Verify a scheme signature over `SIGNATURE_LABEL ‖ body`.
    pub fn verify(&self, body: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        self.key.verify_p1363(&[SIGNATURE_LABEL, body], signature)
    }
}

/// The key commitment an authorisation signs (see the module notes). `kind` is the wire code of the
/// key kind (1 transfer, 2 update).
pub fn key_commitment(scheme_id: &SchemeId, kind: u8, id: u32, key: &Secret16) -> [u8; COMMITMENT_LEN] {
    let mut h = Sha256::new();
    h.update(COMMITMENT_LABEL);
    h.update(scheme_id);
    h.update([kind]);
    h.update(id.to_be_bytes());
    h.update(key.expose());
    h.finalize().into()
}

/// The scheme signing key: in process (secret scalar zeroized on drop, never shown by `Debug`) or in a
/// token, signing through the [`Signer`] seam.
#[derive(Clone)]
pub struct SchemeSigningKey {
    signer: Arc<dyn Signer>,
    /// The same key when it is held in process (and so may be stored age-encrypted).
    local: Option<CardKeyPair>,
}

impl SchemeSigningKey {
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self::local(CardKeyPair::generate()?))
    }

    fn local(pair: CardKeyPair) -> Self {
        SchemeSigningKey { signer: Arc::new(pair.clone()), local: Some(pair) }
    }

    /// A key held outside this process (a token); it cannot be exported.
    pub fn from_signer(signer: Arc<dyn Signer>) -> Self {
        SchemeSigningKey { signer, local: None }
    }

    /// Restore from the 32-byte secret scalar (age-decrypted by the back office).
    pub fn from_bytes(scalar: &[u8]) -> Result<Self, CryptoError> {
        Ok(Self::local(CardKeyPair::from_bytes(scalar)?))
    }

    /// The secret scalar in a zeroizing buffer, for age encryption; `None` for a key in a token.
    pub fn to_bytes(&self) -> Option<SecretBytes> {
        self.local.as_ref().map(CardKeyPair::to_bytes)
    }

    pub fn public_key_sec1(&self) -> [u8; PUBLIC_KEY_LEN] {
        *self.signer.public_key().sec1()
    }

    pub fn scheme_id(&self) -> SchemeId {
        id_of(&self.public_key_sec1())
    }

    /// The public half, as verifiers hold it.
    pub fn verifier(&self) -> SchemePublicKey {
        SchemePublicKey { key: self.signer.public_key().clone(), id: self.scheme_id() }
    }

    /// Sign `SIGNATURE_LABEL ‖ body`; the 64-byte P1363 form of the low-S signature. Fails only when a
    /// token holding the key fails ([`CryptoError::Device`]).
    pub fn sign(&self, body: &[u8]) -> Result<[u8; SIGNATURE_LEN], CryptoError> {
        Ok(self.signer.sign(&[SIGNATURE_LABEL, body])?.to_p1363())
    }
}

impl std::fmt::Debug for SchemeSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SchemeSigningKey(<secret redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::EncodePublicKey;

    #[test]
    fn spki_prefix_matches_the_der_encoder() {
        let k = SchemeSigningKey::generate().unwrap();
        let pk = k.public_key_sec1();
        let der = card_key::parse_public_key(&pk).unwrap().to_public_key_der().unwrap();
        assert_eq!(der.as_bytes(), &spki_der(&pk)[..]);
        assert_eq!(k.scheme_id(), <[u8; 32]>::from(Sha256::digest(der.as_bytes())));
        assert_eq!(*SchemePublicKey::new(&pk).unwrap().id(), k.scheme_id());
    }

    #[test]
    fn signatures_verify_only_over_the_label_and_body() {
        let k = SchemeSigningKey::generate().unwrap();
        let sig = k.sign(b"body").unwrap();
        k.verifier().verify(b"body", &sig).unwrap();
        assert_eq!(k.verifier().verify(b"bodz", &sig), Err(CryptoError::BadSignature));
        // A signature by the same key without the label (e.g. another purpose) is not a scheme signature.
        let card = CardKeyPair::from_bytes(k.to_bytes().unwrap().expose()).unwrap();
        let der = card.sign(&[b"body"]);
        let plain: [u8; 64] = p256::ecdsa::Signature::from_der(&der).unwrap().to_bytes().into();
        assert_eq!(k.verifier().verify(b"body", &plain), Err(CryptoError::BadSignature));
        let mut flipped = sig;
        flipped[10] ^= 1;
        assert!(k.verifier().verify(b"body", &flipped).is_err());
        let other = SchemeSigningKey::generate().unwrap();
        assert_eq!(other.verifier().verify(b"body", &sig), Err(CryptoError::BadSignature));
    }

    /// The verifier's id is the signing key's, it verifies what the key signs, and only P-256 points
    /// make one.
    #[test]
    fn a_scheme_public_key_carries_its_own_id() {
        let k = SchemeSigningKey::generate().unwrap();
        let v = SchemePublicKey::new(&k.public_key_sec1()).unwrap();
        assert_eq!(v, k.verifier());
        assert_eq!(*v.id(), k.scheme_id());
        assert_eq!(v.sec1(), &k.public_key_sec1());
        let sig = k.sign(b"body").unwrap();
        v.verify(b"body", &sig).unwrap();
        assert_eq!(v.verify(b"bodz", &sig), Err(CryptoError::BadSignature));
        let other = SchemeSigningKey::generate().unwrap().verifier();
        assert_ne!(other.id(), v.id());
        assert_eq!(other.verify(b"body", &sig), Err(CryptoError::BadSignature));
        assert_eq!(SchemePublicKey::new(&k.public_key_sec1()[..64]), Err(CryptoError::InvalidPublicKey));
        assert_eq!(SchemePublicKey::new(&[0u8]), Err(CryptoError::InvalidPublicKey));
    }

    #[test]
    fn commitment_binds_every_input() {
        let id = [7u8; 32];
        let key = Secret16::new([1; 16]);
        let c = key_commitment(&id, 1, 5, &key);
        assert_ne!(c, key_commitment(&[8u8; 32], 1, 5, &key));
        assert_ne!(c, key_commitment(&id, 2, 5, &key));
        assert_ne!(c, key_commitment(&id, 1, 6, &key));
        assert_ne!(c, key_commitment(&id, 1, 5, &Secret16::new([2; 16])));
        assert_eq!(c, key_commitment(&id, 1, 5, &Secret16::new([1; 16])));
    }

    #[test]
    fn round_trip_and_debug_hides_the_secret() {
        let k = SchemeSigningKey::from_bytes(&[0x3C; 32]).unwrap();
        let back = SchemeSigningKey::from_bytes(k.to_bytes().unwrap().expose()).unwrap();
        assert_eq!(back.public_key_sec1(), k.public_key_sec1());
        assert!(!format!("{k:?}").contains("3c"));
    }
}
