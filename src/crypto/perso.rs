//! Personalisation security (SCP03-like): each card has its own personalisation key derived from the
//! issuer's personalisation master and the card serial; each session derives a session key from that
//! key and a card challenge; every personalisation command after OPEN PERSO SESSION is sealed with
//! AES-SIV under the session key, binding the serial, a command counter and the APDU header.
//!
//! Why SIV instead of SCP03's separate C-MAC and C-DECRYPTION: SIV's S2V *is* an AES-CMAC over the
//! header vector and plaintext, so one primitive gives SCP03's integrity and confidentiality; the
//! counter in the headers gives its ordering and anti-replay, and the card challenge makes a recorded
//! session useless against a later one.

use super::CryptoError;
use super::envelope;
use super::kdf::{self, Purpose};
use super::secret::{Secret16, SecretBytes};
use crate::domain::CardSerial;

const LABEL: &[u8] = b"keyroll perso command v1";

/// The card's personalisation key: KDF(master, serial).
pub fn card_key(master: &Secret16, serial: CardSerial) -> Secret16 {
    kdf::derive16(master, Purpose::CardPersonalisation, &serial.0)
}

/// The session's sealing key: KDF(card key, card challenge), 32 bytes for AES-SIV.
pub fn session_key(card_key: &Secret16, challenge: &[u8; 16]) -> SecretBytes {
    kdf::derive(card_key, Purpose::PersonalisationSession, challenge, 32)
}

/// Seal a personalisation command's data.
pub fn seal(session: &SecretBytes, serial: CardSerial, counter: u32, header: [u8; 4], plaintext: &[u8]) -> Vec<u8> {
    envelope::seal_with(session, &[LABEL, &serial.0, &counter.to_be_bytes(), &header], plaintext)
}

/// Open a sealed personalisation command's data.
pub fn open(
    session: &SecretBytes,
    serial: CardSerial,
    counter: u32,
    header: [u8; 4],
    sealed: &[u8],
) -> Result<SecretBytes, CryptoError> {
    envelope::open_with(session, &[LABEL, &serial.0, &counter.to_be_bytes(), &header], sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_commands_bind_counter_header_and_serial() {
        let master = Secret16::new([1; 16]);
        let s = CardSerial::from_u64(5);
        let sk = session_key(&card_key(&master, s), &[2; 16]);
        let c = seal(&sk, s, 3, [0x80, 0x54, 1, 0], b"item");
        assert_eq!(open(&sk, s, 3, [0x80, 0x54, 1, 0], &c).unwrap().expose(), b"item");
        assert!(open(&sk, s, 4, [0x80, 0x54, 1, 0], &c).is_err());
        assert!(open(&sk, s, 3, [0x80, 0x54, 2, 0], &c).is_err());
        assert!(open(&sk, CardSerial::from_u64(6), 3, [0x80, 0x54, 1, 0], &c).is_err());
        let other = session_key(&card_key(&master, s), &[3; 16]);
        assert!(open(&other, s, 3, [0x80, 0x54, 1, 0], &c).is_err());
        assert_ne!(card_key(&master, s), card_key(&master, CardSerial::from_u64(6)));
    }
}
