//! The symmetric envelope for moving a transfer key under the update key (claims 2, 6, 9, 11, 15).
//!
//! AES-SIV (RFC 5297) with AES-128 halves, key derived from the update key with
//! [`Purpose::TransferKeyWrap`]. Why SIV rather than AES-GCM or AES key wrap (RFC 3394):
//! - it is deterministic and nonce-misuse resistant: a card has no trustworthy nonce counter across
//!   tears, and a repeated nonce in GCM would reveal the key stream and the authentication key;
//! - it was designed for key wrapping (RFC 5297 §1.3.2) and authenticates a *vector* of associated data,
//!   so the label, both serials and the update key identifier are bound without an ad-hoc encoding;
//! - freshness comes from the claim's random number inside the plaintext, which also makes every
//!   envelope distinct.
//! It is built from AES-CMAC and AES-CTR, the primitives the card already has.

use super::CryptoError;
use super::kdf::{self, Purpose};
use super::secret::SecretBytes;
use aes_siv::KeyInit;
use aes_siv::siv::Aes128Siv;

/// Length of the synthetic IV / tag prepended to every envelope.
pub const TAG_LEN: usize = 16;

/// The 32-byte AES-SIV key that wraps transfer keys under `update_key`.
pub fn wrap_key(update_key: &super::UpdateKey) -> SecretBytes {
    kdf::derive(update_key.secret(), Purpose::TransferKeyWrap, &update_key.id.0.to_be_bytes(), 32)
}

/// Seal `plaintext` under the update key, binding `headers` (RFC 5297 §2.4 vector of associated data).
pub fn seal(update_key: &super::UpdateKey, headers: &[&[u8]], plaintext: &[u8]) -> Vec<u8> {
    seal_with(&wrap_key(update_key), headers, plaintext)
}

/// Open an envelope; fails if the key, any header or any byte differs.
pub fn open(update_key: &super::UpdateKey, headers: &[&[u8]], envelope: &[u8]) -> Result<SecretBytes, CryptoError> {
    open_with(&wrap_key(update_key), headers, envelope)
}

fn siv(key: &SecretBytes) -> Aes128Siv {
    Aes128Siv::new_from_slice(key.expose()).expect("SIV keys are derived with 32 bytes")
}

/// Seal under an already derived 32-byte SIV key (personalisation sessions, ECIES).
pub fn seal_with(key: &SecretBytes, headers: &[&[u8]], plaintext: &[u8]) -> Vec<u8> {
    siv(key).encrypt(headers, plaintext).expect("header count is a protocol constant")
}

/// Open under an already derived 32-byte SIV key.
pub fn open_with(key: &SecretBytes, headers: &[&[u8]], envelope: &[u8]) -> Result<SecretBytes, CryptoError> {
    if envelope.len() < TAG_LEN {
        return Err(CryptoError::EnvelopeTooShort { len: envelope.len(), min: TAG_LEN });
    }
    siv(key).decrypt(headers, envelope).map(SecretBytes::new).map_err(|_| CryptoError::EnvelopeAuthentication)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Secret16, UpdateKey};
    use crate::domain::UpdateKeyId;

    fn uk(b: u8, id: u32) -> UpdateKey {
        UpdateKey::new(UpdateKeyId(id), Secret16::new([b; 16]))
    }

    #[test]
    fn round_trip_and_every_binding() {
        let k = uk(1, 1);
        let env = seal(&k, &[b"label", b"serial-a"], b"secret transfer key");
        assert_eq!(open(&k, &[b"label", b"serial-a"], &env).unwrap().expose(), b"secret transfer key");
        assert_eq!(open(&k, &[b"label", b"serial-b"], &env).unwrap_err(), CryptoError::EnvelopeAuthentication);
        assert_eq!(open(&uk(2, 1), &[b"label", b"serial-a"], &env).unwrap_err(), CryptoError::EnvelopeAuthentication);
        // Same bytes, other identifier: a different derived key.
        assert_eq!(open(&uk(1, 2), &[b"label", b"serial-a"], &env).unwrap_err(), CryptoError::EnvelopeAuthentication);
        for i in 0..env.len() {
            let mut t = env.clone();
            t[i] ^= 0x01;
            assert!(open(&k, &[b"label", b"serial-a"], &t).is_err(), "flip at {i} accepted");
        }
        assert!(matches!(open(&k, &[], &env[..5]), Err(CryptoError::EnvelopeTooShort { .. })));
    }
}
