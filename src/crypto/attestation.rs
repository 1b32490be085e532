//! Key attestation (DESIGN.md §10 point 2; keyroll's own, not part of GlobalPlatform): a card that
//! generates a key pair during personalisation signs the new public key with its factory attestation
//! key, over
//!
//! `"keyroll key attestation v2" ‖ chip id (8) ‖ card serial (8) ‖ new public key (65, SEC 1
//! uncompressed) ‖ transcript hash (32, from the SCP11b session)`,
//!
//! ECDSA P-256 with SHA-256 (FIPS 186-5), DER-encoded. The label keeps the signature apart from any
//! other use of the key; chip id and serial name the card; the transcript hash ties the attestation to
//! the one session the line authenticated, so an attestation recorded in another session, or made by
//! another card, is refused. The issuer's CA certifies a generated key only with such an attestation.

use super::CryptoError;
use super::card_key::{self, CardKeyPair, PUBLIC_KEY_LEN};
use crate::domain::{CardSerial, ChipId};

/// The label that starts every attested message.
pub const LABEL: &[u8] = b"keyroll key attestation v2";

/// What an attestation covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attested<'a> {
    pub chip_id: ChipId,
    pub serial: CardSerial,
    pub public_key: &'a [u8; PUBLIC_KEY_LEN],
    pub transcript: &'a [u8; 32],
}

impl Attested<'_> {
    fn parts(&self) -> [&[u8]; 5] {
        [LABEL, &self.chip_id.0, &self.serial.0, self.public_key, self.transcript]
    }
}

/// Sign (on the card) with the factory attestation key.
pub fn sign(attestation_key: &CardKeyPair, what: &Attested<'_>) -> Vec<u8> {
    attestation_key.sign(&what.parts())
}

/// Verify (on the line) against the attestation key from the card's validated factory certificate.
pub fn verify(attestation_public: &[u8], what: &Attested<'_>, signature: &[u8]) -> Result<(), CryptoError> {
    card_key::verify(attestation_public, &what.parts(), signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_bound() {
        let att = CardKeyPair::generate().unwrap();
        let new = CardKeyPair::generate().unwrap().public_key_sec1();
        let t = [7u8; 32];
        let a = Attested { chip_id: ChipId([1; 8]), serial: CardSerial::from_u64(9), public_key: &new, transcript: &t };
        let sig = sign(&att, &a);
        verify(&att.public_key_sec1(), &a, &sig).unwrap();
        let other_key = CardKeyPair::generate().unwrap().public_key_sec1();
        let t2 = [8u8; 32];
        for changed in [
            Attested { chip_id: ChipId([2; 8]), ..a },
            Attested { serial: CardSerial::from_u64(10), ..a },
            Attested { public_key: &other_key, ..a },
            Attested { transcript: &t2, ..a },
        ] {
            assert_eq!(verify(&att.public_key_sec1(), &changed, &sig), Err(CryptoError::BadSignature));
        }
        let other = CardKeyPair::generate().unwrap();
        assert_eq!(verify(&other.public_key_sec1(), &a, &sig), Err(CryptoError::BadSignature));
        assert_eq!(verify(&att.public_key_sec1(), &a, &[]), Err(CryptoError::MalformedSignature));
    }
}
