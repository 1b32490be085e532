//! Purpose-key derivation: NIST SP 800-108r1 §4.1 KDF in counter mode with AES-CMAC as PRF, the
//! construction GlobalPlatform SCP03 uses. One master key never serves two purposes directly
//! (DESIGN.md §2): every use derives its own key with a distinct [`Purpose`] label.
//!
//! Fixed input per block i (1-based): `[i]_1 ‖ Label ‖ 0x00 ‖ Context ‖ [L]_2`, L in bits, big-endian.

use super::secret::{Secret16, SecretBytes};
use aes::Aes128;
use cmac::{Cmac, KeyInit, Mac};

/// What a derived key is for. The label strings are part of the protocol: changing one changes every
/// derived key. Version 2 labels end in `v2` and share nothing with version 1's (DESIGN.md §10);
/// personalisation keys are no longer derived from a master at all (SCP11b, `crypto::scp11`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// AES-SIV key wrapping the transfer key under the update key (claims 2, 6, 9).
    TransferKeyWrap,
    /// MACs over value tokens, acknowledgements and abort proofs (DESIGN.md §3).
    ValueMac,
    /// ECIES content key for the public-key path (claims 4, 7).
    EciesWrap,
    /// A payee's receipt nonces, derived from its receipt secret (stateless receipts, DESIGN.md §10.6).
    ReceiptNonce,
    /// A card's log-export MAC key, derived per card so the back office can check an export.
    CardLog,
    /// From a card's log key: the key an issued card proves itself with (INTERNAL AUTHENTICATE
    /// `80 88 00 01`), kept apart from the export MACs (one key, one purpose).
    CardAuthentication,
    /// From the issuer's card log master: the key of the back office's export-round challenges
    /// (`rollout::exports::draw_challenge`), so it can recognise a challenge it drew.
    ExportChallenge,
}

impl Purpose {
    pub fn label(self) -> &'static [u8] {
        match self {
            Purpose::TransferKeyWrap => b"keyroll transfer-key wrap v2",
            Purpose::ValueMac => b"keyroll value mac v2",
            Purpose::EciesWrap => b"keyroll ecies wrap v2",
            Purpose::ReceiptNonce => b"keyroll receipt nonce v2",
            Purpose::CardLog => b"keyroll card log v2",
            Purpose::CardAuthentication => b"keyroll card authentication v2",
            Purpose::ExportChallenge => b"keyroll export challenge v1",
        }
    }
}

/// Derive `out_len` bytes (at most 255 blocks) from `key` for `purpose` and `context`.
pub fn derive(key: &Secret16, purpose: Purpose, context: &[u8], out_len: usize) -> SecretBytes {
    assert!(out_len > 0 && out_len <= 255 * 16, "KDF output length is a protocol constant");
    let bits = (out_len as u32 * 8) as u16;
    let mut out = SecretBytes::new(Vec::with_capacity(out_len + 16));
    let mut i: u8 = 1;
    while out.expose().len() < out_len {
        let mut mac = <Cmac<Aes128> as KeyInit>::new_from_slice(key.expose()).expect("16-byte key");
        mac.update(&[i]);
        mac.update(purpose.label());
        mac.update(&[0x00]);
        mac.update(context);
        mac.update(&bits.to_be_bytes());
        out.expose_mut().extend_from_slice(&mac.finalize().into_bytes());
        i = i.wrapping_add(1);
    }
    out.expose_mut().truncate(out_len);
    out
}

/// Derive a 128-bit key.
pub fn derive16(key: &Secret16, purpose: Purpose, context: &[u8]) -> Secret16 {
    Secret16::from_slice(derive(key, purpose, context, 16).expose()).expect("16 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_contexts_separate_keys() {
        let k = Secret16::new([7; 16]);
        let a = derive16(&k, Purpose::ValueMac, b"1");
        let b = derive16(&k, Purpose::TransferKeyWrap, b"1");
        let c = derive16(&k, Purpose::ValueMac, b"2");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, derive16(&k, Purpose::ValueMac, b"1"));
    }

    #[test]
    fn longer_output_extends_prefix_block_by_block() {
        let k = Secret16::new([9; 16]);
        let long = derive(&k, Purpose::TransferKeyWrap, b"ctx", 32);
        assert_eq!(long.expose().len(), 32);
        // L is part of every block's input, so a 16-byte derivation is not a prefix of a 32-byte one.
        let short = derive(&k, Purpose::TransferKeyWrap, b"ctx", 16);
        assert_ne!(&long.expose()[..16], short.expose());
    }

    /// Independent check of the construction against a hand-computed first block.
    #[test]
    fn first_block_matches_definition() {
        let k = Secret16::new([0x2b; 16]);
        let mut mac = <Cmac<Aes128> as KeyInit>::new_from_slice(k.expose()).unwrap();
        let mut input = vec![1u8];
        input.extend_from_slice(Purpose::ValueMac.label());
        input.push(0);
        input.extend_from_slice(b"abc");
        input.extend_from_slice(&128u16.to_be_bytes());
        mac.update(&input);
        let expect = mac.finalize().into_bytes();
        assert_eq!(derive16(&k, Purpose::ValueMac, b"abc").expose(), &expect[..]);
    }
}
