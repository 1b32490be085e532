//! Value MACs (DESIGN.md §3): AES-CMAC (RFC 4493) under a key derived from the common transfer key,
//! so only cards of the same transfer key generation can produce or check each other's tokens
//! (DESIGN.md §6 property 9).

use super::kdf::{self, Purpose};
use super::secret::Secret16;
use super::{CryptoError, TransferKey};
use aes::Aes128;
use cmac::{Cmac, KeyInit, Mac};

/// Length of value MACs on the wire: the full CMAC block (no truncation: these MACs guard money).
pub const MAC_LEN: usize = 16;

/// The MAC key for value transfer under `transfer_key`.
pub fn value_mac_key(transfer_key: &TransferKey) -> Secret16 {
    kdf::derive16(transfer_key.secret(), Purpose::ValueMac, &transfer_key.id.0.to_be_bytes())
}

/// AES-CMAC of the concatenation of `parts`.
pub fn cmac(key: &Secret16, parts: &[&[u8]]) -> [u8; 16] {
    let mut m = <Cmac<Aes128> as KeyInit>::new_from_slice(key.expose()).expect("16-byte key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Constant-time check of a CMAC tag (full or left-truncated to `tag.len()` ≥ 8 bytes).
pub fn verify(key: &Secret16, parts: &[&[u8]], tag: &[u8]) -> Result<(), CryptoError> {
    if tag.len() < 8 || tag.len() > 16 {
        return Err(CryptoError::BadMac);
    }
    let mut m = <Cmac<Aes128> as KeyInit>::new_from_slice(key.expose()).expect("16-byte key");
    for p in parts {
        m.update(p);
    }
    m.verify_truncated_left(tag).map_err(|_| CryptoError::BadMac)
}

/// A card's log-export MAC key: derived from the issuer's log master (the `perso-master` secret) and
/// the serial with the NIST SP 800-108 KDF (label `keyroll card log v2`). The line sends it to the card
/// inside the SCP11b channel (PERSO STORE `0A`); the card keeps it after LOCK; the back office
/// re-derives it to check an export. Per card, so no card (nor its holder) can MAC another card's log.
pub fn card_log_key(log_master: &Secret16, serial: &crate::domain::CardSerial) -> Secret16 {
    kdf::derive16(log_master, Purpose::CardLog, &serial.0)
}

/// An issued card's answer to the line's challenge (INTERNAL AUTHENTICATE `80 88 00 01`, ISO/IEC
/// 7816-4 §11.5.2): AES-CMAC (RFC 4493) over the serial and the challenge, under a key derived from the
/// card's log key for this purpose only (NIST SP 800-108). Only the chip that received that log key
/// inside the SCP11b channel, and the back office, can compute it: after LOCK the factory keys are
/// gone, and this is what still tells the issuer "this is the chip you personalised as `serial`".
pub fn card_authentication(log_key: &Secret16, serial: &crate::domain::CardSerial, challenge: &[u8]) -> [u8; 16] {
    cmac(&card_authentication_key(log_key, serial), &[&serial.0, challenge])
}

/// The line's check of [`card_authentication`]: recomputes the tag and compares it in constant time
/// (the same `Cmac::verify` path as [`verify`]), so a near miss tells nothing about the right answer.
pub fn check_card_authentication(
    log_key: &Secret16,
    serial: &crate::domain::CardSerial,
    challenge: &[u8],
    answer: &[u8],
) -> Result<(), CryptoError> {
    if answer.len() != 16 {
        return Err(CryptoError::BadMac);
    }
    verify(&card_authentication_key(log_key, serial), &[&serial.0, challenge], answer)
}

fn card_authentication_key(log_key: &Secret16, serial: &crate::domain::CardSerial) -> Secret16 {
    kdf::derive16(log_key, Purpose::CardAuthentication, &serial.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CardSerial;

    #[test]
    fn a_card_authentication_is_accepted_only_for_its_key_serial_and_challenge() {
        let key = Secret16::new([7; 16]);
        let serial = CardSerial([1; 8]);
        let challenge = [9u8; 16];
        let answer = card_authentication(&key, &serial, &challenge);
        assert!(check_card_authentication(&key, &serial, &challenge, &answer).is_ok());
        for bit in 0..128 {
            let mut bad = answer;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(check_card_authentication(&key, &serial, &challenge, &bad).is_err(), "bit {bit}");
        }
        // A truncated answer is refused (a shorter CMAC would be easier to guess).
        assert!(check_card_authentication(&key, &serial, &challenge, &answer[..8]).is_err());
        assert!(check_card_authentication(&key, &CardSerial([2; 8]), &challenge, &answer).is_err());
        assert!(check_card_authentication(&key, &serial, &[8u8; 16], &answer).is_err());
        assert!(check_card_authentication(&Secret16::new([6; 16]), &serial, &challenge, &answer).is_err());
    }
}
