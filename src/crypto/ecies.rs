//! ECIES to a card's public key: the public-key envelope of claims 4, 7, 13, 16 and 18 ("first
//! encrypted data into which the transfer key identifier and the transfer key are encrypted by use of
//! the third public key").
//!
//! Construction (SEC 1 §5.1 ECIES with a modern KDF and DEM):
//! 1. a fresh ephemeral P-256 key pair `(e, E)` per message;
//! 2. `Z = x(e · R)`, ECDH with the recipient's public key `R` (SEC 1 §3.3.1), `R` validated first;
//! 3. `K = HKDF-SHA256(salt = "keyroll ecies wrap v2", IKM = Z, info = E ‖ R, L = 32)` (RFC 5869),
//!    with `E` and `R` as 65-byte uncompressed points. The salt is the [`Purpose::EciesWrap`] label, a
//!    non-secret constant that separates this use of ECDH from any other (RFC 5869 §3.1); `info` binds
//!    both public keys, so the key is tied to this recipient and this ephemeral key (no key-substitution
//!    or "benign malleability" of `E`: changing any byte of `E` changes `K`);
//! 4. `C = AES-128-SIV_K(AD = headers…, plaintext)` (RFC 5297, vector of associated data), the same
//!    cipher the symmetric envelope uses, so a card needs only one DEM.
//!
//! Output: `E (65 bytes, uncompressed) ‖ C (16-byte SIV ‖ ciphertext)`.
//!
//! Freshness is not this layer's job: the claim's challenge is bound by the card's signature over the
//! envelope (DESIGN.md §2). The caller binds purpose, serials and certificates through `headers`.

use super::CryptoError;
use super::card_key::{self, CardKeyPair, PUBLIC_KEY_LEN};
use super::ec::{EcdhKey, PublicKey, SharedSecret};
use super::kdf::Purpose;
use super::secret::SecretBytes;
use aes_siv::KeyInit;
use aes_siv::siv::Aes128Siv;
use sha2::Sha256;

/// Length of the SIV tag (RFC 5297 §2.6).
pub const TAG_LEN: usize = 16;
/// Shortest possible ECIES envelope: ephemeral point and tag (empty plaintext).
pub const MIN_LEN: usize = PUBLIC_KEY_LEN + TAG_LEN;
/// Most associated-data components accepted. RFC 5297 §2.6 allows 126 for S2V with a nonce slot; the
/// protocol uses a handful, so a small bound keeps the work per message fixed.
pub const MAX_HEADERS: usize = 16;

fn content_key(shared: &SharedSecret, ephemeral: &[u8; PUBLIC_KEY_LEN], recipient: &[u8; PUBLIC_KEY_LEN]) -> Aes128Siv {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(Purpose::EciesWrap.label()), shared.expose());
    let mut key = SecretBytes::new(vec![0u8; 32]);
    hk.expand_multi_info(&[ephemeral, recipient], key.expose_mut())
        .expect("32 bytes is far below HKDF-SHA256's 255 * 32 byte limit");
    Aes128Siv::new_from_slice(key.expose()).expect("AES-128-SIV takes a 32-byte key")
}

fn check_headers(headers: &[&[u8]]) -> Result<(), CryptoError> {
    if headers.len() > MAX_HEADERS {
        return Err(CryptoError::TooManyHeaders { count: headers.len(), max: MAX_HEADERS });
    }
    Ok(())
}

/// Encrypt `plaintext` to the card whose SEC 1 public key is `recipient_sec1` (uncompressed or
/// compressed; validated), binding `headers` as associated data.
pub fn seal(recipient_sec1: &[u8], headers: &[&[u8]], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    check_headers(headers)?;
    seal_to(&card_key::parse_public_key(recipient_sec1)?, headers, plaintext)
}

/// As [`seal`], to a recipient key already parsed and validated (a certificate's, from path
/// validation), so the point is not decoded again.
pub fn seal_to(recipient: &PublicKey, headers: &[&[u8]], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    check_headers(headers)?;
    // The ephemeral scalar lives in AWS-LC and is cleansed when `ephemeral` drops.
    let ephemeral = EcdhKey::generate()?;
    let ephemeral_public = *ephemeral.public_key().sec1();
    let shared = ephemeral.agree(recipient)?;
    let sealed = content_key(&shared, &ephemeral_public, recipient.sec1())
        .encrypt(headers, plaintext)
        .map_err(|_| CryptoError::TooManyHeaders { count: headers.len(), max: MAX_HEADERS })?;
    let mut out = Vec::with_capacity(PUBLIC_KEY_LEN + sealed.len());
    out.extend_from_slice(&ephemeral_public);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Decrypt an envelope made by [`seal`] for `card`'s public key with the same `headers`.
///
/// Errors: [`CryptoError::EnvelopeTooShort`], [`CryptoError::InvalidPublicKey`] when the ephemeral
/// point is not a valid uncompressed P-256 point (identity, off-curve, other prefix), and
/// [`CryptoError::EnvelopeAuthentication`] for a wrong card, a wrong header or any altered byte.
pub fn open(card: &CardKeyPair, headers: &[&[u8]], envelope: &[u8]) -> Result<SecretBytes, CryptoError> {
    check_headers(headers)?;
    if envelope.len() < MIN_LEN {
        return Err(CryptoError::EnvelopeTooShort { len: envelope.len(), min: MIN_LEN });
    }
    let (ephemeral_bytes, sealed) = envelope.split_at(PUBLIC_KEY_LEN);
    // Only the uncompressed form is produced, so only it is accepted (`for_agreement` takes no other):
    // one encoding per envelope. The point is checked once, by the ECDH parse the agreement needs anyway.
    let ephemeral = PublicKey::for_agreement(ephemeral_bytes)?;
    let shared = card.key_pair().agree(&ephemeral)?;
    content_key(&shared, ephemeral.sec1(), &card.public_key_sec1())
        .decrypt(headers, sealed)
        .map(SecretBytes::new)
        .map_err(|_| CryptoError::EnvelopeAuthentication)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: [&[u8]; 2] = [b"keyroll get-transfer-key v2", b"\x00\x01\x02\x03\x04\x05\x06\x07"];

    #[test]
    fn round_trip() {
        let card = CardKeyPair::generate().unwrap();
        let env = seal(&card.public_key_sec1(), &H, b"id and transfer key").unwrap();
        assert_eq!(env.len(), MIN_LEN + 19);
        assert_eq!(open(&card, &H, &env).unwrap().expose(), b"id and transfer key");
        // Empty plaintext is allowed.
        let env = seal(&card.public_key_sec1(), &[], b"").unwrap();
        assert_eq!(open(&card, &[], &env).unwrap().expose(), b"");
    }

    /// Recompute the documented construction by hand (literal salt, info = E ‖ R), so a change to the
    /// key derivation that the round trip would not notice breaks this test.
    #[test]
    fn construction_matches_the_documentation() {
        let card = CardKeyPair::generate().unwrap();
        let env = seal(&card.public_key_sec1(), &H, b"id and key").unwrap();
        let (e, c) = env.split_at(PUBLIC_KEY_LEN);
        let z = card_key::ecdh(&card, e).unwrap();
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"keyroll ecies wrap v2"), z.expose());
        let mut info = e.to_vec();
        info.extend_from_slice(&card.public_key_sec1());
        let mut k = [0u8; 32];
        hk.expand(&info, &mut k).unwrap();
        let pt = Aes128Siv::new_from_slice(&k).unwrap().decrypt(H, c).unwrap();
        assert_eq!(pt, b"id and key");
    }

    #[test]
    fn each_seal_is_fresh() {
        let card = CardKeyPair::generate().unwrap();
        let a = seal(&card.public_key_sec1(), &H, b"same").unwrap();
        let b = seal(&card.public_key_sec1(), &H, b"same").unwrap();
        assert_ne!(a[..PUBLIC_KEY_LEN], b[..PUBLIC_KEY_LEN]);
        assert_ne!(a[PUBLIC_KEY_LEN..], b[PUBLIC_KEY_LEN..]);
    }

    #[test]
    fn compressed_recipient_key_gives_the_same_binding() {
        use p256::elliptic_curve::sec1::ToSec1Point;
        let card = CardKeyPair::generate().unwrap();
        let compressed =
            p256::PublicKey::from_sec1_bytes(&card.public_key_sec1()).unwrap().as_affine().to_sec1_point(true);
        let env = seal(compressed.as_bytes(), &H, b"k").unwrap();
        assert_eq!(open(&card, &H, &env).unwrap().expose(), b"k");
    }

    #[test]
    fn wrong_key_wrong_header_fail() {
        let card = CardKeyPair::generate().unwrap();
        let other = CardKeyPair::generate().unwrap();
        let env = seal(&card.public_key_sec1(), &H, b"secret").unwrap();
        assert_eq!(open(&other, &H, &env).unwrap_err(), CryptoError::EnvelopeAuthentication);
        let other_header: [&[u8]; 2] = [H[0], b"\x00\x01\x02\x03\x04\x05\x06\x08"];
        assert_eq!(open(&card, &other_header, &env).unwrap_err(), CryptoError::EnvelopeAuthentication);
        assert_eq!(open(&card, &H[..1], &env).unwrap_err(), CryptoError::EnvelopeAuthentication);
        let swapped: [&[u8]; 2] = [H[1], H[0]];
        assert_eq!(open(&card, &swapped, &env).unwrap_err(), CryptoError::EnvelopeAuthentication);
    }

    #[test]
    fn every_byte_flip_fails() {
        let card = CardKeyPair::generate().unwrap();
        let env = seal(&card.public_key_sec1(), &H, b"transfer key bytes").unwrap();
        for i in 0..env.len() {
            for bit in [0x01u8, 0x80] {
                let mut t = env.clone();
                t[i] ^= bit;
                assert!(open(&card, &H, &t).is_err(), "flip {bit:#04x} at {i} accepted");
            }
        }
        for len in 0..env.len() {
            assert!(open(&card, &H, &env[..len]).is_err(), "truncation to {len} accepted");
        }
    }

    #[test]
    fn invalid_points_are_refused() {
        let card = CardKeyPair::generate().unwrap();
        assert_eq!(seal(&[0x00], &H, b"x").unwrap_err(), CryptoError::InvalidPublicKey);
        assert_eq!(seal(&[0x04; 65], &H, b"x").unwrap_err(), CryptoError::InvalidPublicKey);
        let env = seal(&card.public_key_sec1(), &H, b"x").unwrap();
        // Ephemeral point replaced by an all-zero "point", or by a compressed encoding of itself.
        let mut zero = env.clone();
        zero[1..PUBLIC_KEY_LEN].fill(0);
        assert_eq!(open(&card, &H, &zero).unwrap_err(), CryptoError::InvalidPublicKey);
        let mut prefix = env.clone();
        prefix[0] = 0x02;
        assert_eq!(open(&card, &H, &prefix).unwrap_err(), CryptoError::InvalidPublicKey);
    }

    #[test]
    fn header_count_is_bounded() {
        let card = CardKeyPair::generate().unwrap();
        let many: Vec<&[u8]> = vec![b"h"; MAX_HEADERS + 1];
        assert!(matches!(seal(&card.public_key_sec1(), &many, b"x"), Err(CryptoError::TooManyHeaders { .. })));
        let env = seal(&card.public_key_sec1(), &many[..MAX_HEADERS], b"x").unwrap();
        assert_eq!(open(&card, &many[..MAX_HEADERS], &env).unwrap().expose(), b"x");
    }

    proptest::proptest! {
        /// Input from outside never panics the card: arbitrary envelopes, keys and signatures.
        #[test]
        fn arbitrary_bytes_never_panic(env in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                                       key in proptest::collection::vec(proptest::num::u8::ANY, 0..70),
                                       sig in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let card = CardKeyPair::from_bytes(&[7u8; 32]).unwrap();
            let _ = open(&card, &H, &env);
            let _ = seal(&key, &H, &env);
            let _ = card_key::verify(&key, &[&env], &sig);
            let _ = card_key::verify_p1363(&key, &[&env], &sig);
            let _ = card_key::ecdh(&card, &key);
            let _ = card_key::public_key_from_spki_der(&env);
            let _ = CardKeyPair::from_bytes(&key);
        }

        /// A well-formed ephemeral point with arbitrary ciphertext still fails closed.
        #[test]
        fn valid_point_random_body_fails(body in proptest::collection::vec(proptest::num::u8::ANY, 16..64)) {
            let card = CardKeyPair::from_bytes(&[9u8; 32]).unwrap();
            let mut env = CardKeyPair::from_bytes(&[3u8; 32]).unwrap().public_key_sec1().to_vec();
            env.extend_from_slice(&body);
            proptest::prop_assert_eq!(open(&card, &H, &env).unwrap_err(), CryptoError::EnvelopeAuthentication);
        }
    }
}
