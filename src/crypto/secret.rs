//! Secret byte strings: zeroized on drop, compared in constant time, never shown by `Debug`
//! (house rule 8).

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 128-bit secret (an AES-128 key).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret16([u8; 16]);

impl Secret16 {
    pub const LEN: usize = 16;

    pub fn new(bytes: [u8; 16]) -> Self {
        Secret16(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Secret16(bytes.try_into().ok()?))
    }

    /// A fresh random secret from the operating system.
    pub fn random() -> Result<Self, super::CryptoError> {
        Ok(Secret16(super::random::bytes::<16>()?))
    }

    /// The raw bytes, for the cipher that needs them. Keep the borrow short.
    pub fn expose(&self) -> &[u8; 16] {
        &self.0
    }
}

impl PartialEq for Secret16 {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for Secret16 {}

impl std::fmt::Debug for Secret16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret16(<redacted>)")
    }
}

impl crate::domain::serde_hex::HexBytes for Secret16 {
    fn hex_bytes(&self) -> &[u8] {
        &self.0
    }
    fn from_hex_bytes(bytes: &[u8]) -> Option<Self> {
        Secret16::from_slice(bytes)
    }
    fn expected() -> String {
        "a 16-byte key".into()
    }
}

/// A secret of any length (derived keys of 32 bytes for AES-SIV, serialized key bundles).
#[derive(Clone, Zeroize, ZeroizeOnDrop, Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    pub fn expose_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}
impl Eq for SecretBytes {}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

impl crate::domain::serde_hex::HexBytes for SecretBytes {
    fn hex_bytes(&self) -> &[u8] {
        &self.0
    }
    fn from_hex_bytes(bytes: &[u8]) -> Option<Self> {
        Some(SecretBytes(bytes.to_vec()))
    }
    fn expected() -> String {
        "hex-encoded bytes".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_bytes() {
        let s = Secret16::new([0xAB; 16]);
        let shown = format!("{s:?}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        let b = SecretBytes::new(vec![0xCD; 4]);
        assert!(!format!("{b:?}").to_lowercase().contains("cd"));
    }

    #[test]
    fn equality_is_by_value() {
        assert_eq!(Secret16::new([1; 16]), Secret16::new([1; 16]));
        assert_ne!(Secret16::new([1; 16]), Secret16::new([2; 16]));
    }
}
