//! Transfer keys and update keys: an AES-128 secret together with its identifier (claims 1, 5, 8).
//!
//! The two kinds are distinct types so a transfer key can never be used where an update key is meant
//! (and vice versa). `Debug` shows the identifier and the key check value, never the key.

use super::CryptoError;
use super::secret::Secret16;
use crate::domain::{TransferKeyId, UpdateKeyId};
use aes::Aes128;
use aes::cipher::{BlockCipherEncrypt, KeyInit};

/// Key check value: the first 3 bytes of AES-128 applied to a block of 0x01 bytes, as GlobalPlatform
/// Card Specification (Amendment D, SCP03) computes it for AES keys. Identifies a key without revealing it.
pub fn key_check_value(key: &Secret16) -> [u8; 3] {
    let cipher = Aes128::new_from_slice(key.expose()).expect("16-byte key");
    let mut block = [0x01u8; 16].into();
    cipher.encrypt_block(&mut block);
    [block[0], block[1], block[2]]
}

macro_rules! keyed {
    ($name:ident, $id:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name {
            pub id: $id,
            key: Secret16,
        }

        impl $name {
            pub fn new(id: $id, key: Secret16) -> Self {
                $name { id, key }
            }

            /// A fresh random key with identifier `id`.
            pub fn generate(id: $id) -> Result<Self, CryptoError> {
                Ok($name { id, key: Secret16::random()? })
            }

            pub fn secret(&self) -> &Secret16 {
                &self.key
            }

            /// Key check value, shown as 6 hex digits.
            pub fn kcv(&self) -> String {
                hex::encode_upper(key_check_value(&self.key))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}{{ id: {}, kcv: {} }}", stringify!($name), self.id, self.kcv())
            }
        }
    };
}

keyed!(TransferKey, TransferKeyId, "A transfer key: protects value transfer between cards (claim 1).");
keyed!(UpdateKey, UpdateKeyId, "An update key: wraps transfer keys on the symmetric path (claims 1, 2).");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kcv_matches_aes_of_ones_block() {
        // AES-128 with the FIPS-197 C.1 key 000102..0f; the KCV is the first three bytes of
        // AES(K, 01..01). Cross-checked with `openssl enc -aes-128-ecb -K 000102030405060708090a0b0c0d0e0f -nopad`.
        let k = Secret16::new(core::array::from_fn(|i| i as u8));
        let kcv = key_check_value(&k);
        let cipher = Aes128::new_from_slice(k.expose()).unwrap();
        let mut b = [1u8; 16].into();
        cipher.encrypt_block(&mut b);
        assert_eq!(kcv, [b[0], b[1], b[2]]);
        assert_ne!(kcv, [0, 0, 0]);
    }

    #[test]
    fn debug_shows_id_and_kcv_only() {
        let k = TransferKey::new(TransferKeyId(3), Secret16::new([0x5A; 16]));
        let s = format!("{k:?}");
        assert!(s.contains("id: 3"));
        assert!(s.contains(&k.kcv()));
        assert!(!s.contains("5A5A"));
    }
}
