//! The personalisation channel's key agreement: GlobalPlatform Secure Channel Protocol 11, variant b
//! (Card Specification v2.3 Amendment F, §3.1 and §7.6), on P-256 with AES-128 session keys.
//!
//! The off-card entity (the line) authenticates the card; the card does not authenticate the line
//! (SCP11b: anyone may personalise a blank card, which yields nothing of the issuer's):
//! 1. the line validates the card's factory key-agreement certificate (outside this module) and takes
//!    `PK.SD.ECKA` from it;
//! 2. the line sends INTERNAL AUTHENTICATE (`80 88 00 13`) with
//!    `A6 0D {90 02 11 00 | 95 01 3C | 80 01 88 | 81 01 10} ‖ 5F49 41 ePK.OCE.ECKA`
//!    (control reference template: SCP11b, key usage C-MAC/C-DEC/R-MAC/R-ENC, AES, 16-byte keys; then
//!    the line's ephemeral public key, an uncompressed SEC 1 point);
//! 3. the card makes its own ephemeral key pair and computes
//!    `ShSee = ECDH(eSK.SD, ePK.OCE)` and `ShSes = ECDH(SK.SD, ePK.OCE)` (SEC 1 §3.3.1, x-coordinates);
//! 4. both ends derive 80 bytes with the ANSI X9.63 KDF (SEC 1 §3.6.1) over SHA-256:
//!    `K_i = SHA-256(ShSee ‖ ShSes ‖ [i]_4 ‖ SharedInfo)`, `i = 1, 2, 3`, `SharedInfo = 3C 88 10`
//!    (key usage, key type, key length), split into receipt key, S-ENC, S-MAC, S-RMAC, S-DEK (§3.1.2);
//! 5. the card answers `5F49 41 ePK.SD.ECKA ‖ 86 10 receipt`, with
//!    `receipt = AES-CMAC(receipt key, command data ‖ 5F49 41 ePK.SD.ECKA)` (the key-agreement data);
//! 6. the line recomputes the receipt; only the holder of `SK.SD` can have produced it, so a card that
//!    relays another card's certificate without its key is caught here, before any secret is sent.
//!    The receipt is the first MAC chaining value of the SCP03 secure messaging that follows
//!    ([`super::secure_messaging`]).
//!
//! Forward secrecy: the session keys depend on `ShSee`, which needs one of the two ephemeral secrets,
//! both forgotten when the session ends; a recording plus a later theft of the card's static key
//! (or of every long-term key the issuer has) does not give them.
//!
//! keyroll's additions (not in Amendment F): [`Established::transcript`], a SHA-256 over a keyroll
//! label, the key-agreement data and the receipt, which the card's key attestation signs so an
//! attestation belongs to exactly one session; and a fixed parameter set (one curve, one key length,
//! one security level) so there is nothing to negotiate down.

use super::card_key::{self, CardKeyPair, PUBLIC_KEY_LEN};
use super::secret::{Secret16, SecretBytes};
use super::secure_messaging::SessionKeys;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// INTERNAL AUTHENTICATE: the SCP11b key agreement command (Amendment F §7.6).
pub const INS_INTERNAL_AUTHENTICATE: u8 = 0x88;
/// P2 of INTERNAL AUTHENTICATE: the key identifier SCP11b uses (Amendment F §7.1.1).
pub const KEY_ID_SCP11B: u8 = 0x13;
/// Tag 90: SCP identifier `11`, parameter `00` (SCP11b).
pub const SCP_PARAMETERS: [u8; 2] = [0x11, 0x00];
/// Key usage qualifier: C-MAC, C-DECRYPTION, R-MAC, R-ENCRYPTION (`3C`, GP Card Spec Table 11-17).
pub const KEY_USAGE: u8 = 0x3C;
/// Key type: AES (`88`, GP Card Spec Table 11-16).
pub const KEY_TYPE_AES: u8 = 0x88;
/// Session key length in bytes.
pub const KEY_LENGTH: u8 = 16;
/// Receipt length (a full AES-CMAC).
pub const RECEIPT_LEN: usize = 16;

/// The control reference template the line sends and the card requires, byte for byte.
pub const CONTROL_REFERENCE_TEMPLATE: [u8; 15] = [
    0xA6,
    0x0D,
    0x90,
    0x02,
    SCP_PARAMETERS[0],
    SCP_PARAMETERS[1],
    0x95,
    0x01,
    KEY_USAGE,
    0x80,
    0x01,
    KEY_TYPE_AES,
    0x81,
    0x01,
    KEY_LENGTH,
];
/// `5F49 41`: the header of an ephemeral public key TLV (tag 5F49, 65 bytes).
const EPK_HEADER: [u8; 3] = [0x5F, 0x49, PUBLIC_KEY_LEN as u8];
/// Length of INTERNAL AUTHENTICATE's data field.
pub const COMMAND_DATA_LEN: usize = CONTROL_REFERENCE_TEMPLATE.len() + EPK_HEADER.len() + PUBLIC_KEY_LEN;
/// Length of the card's answer: `5F49 41 ePK.SD ‖ 86 10 receipt`.
pub const RESPONSE_LEN: usize = EPK_HEADER.len() + PUBLIC_KEY_LEN + 2 + RECEIPT_LEN;
/// Label of keyroll's transcript hash (see the module notes).
pub const TRANSCRIPT_LABEL: &[u8] = b"keyroll scp11b transcript v2";

/// Why a key agreement failed. Carries no secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum Scp11Error {
    #[error("key agreement data is malformed: {0}")]
    Malformed(&'static str),
    #[error("key agreement parameters other than SCP11b, AES-128, C/R-MAC and C/R-ENC are not offered")]
    UnsupportedParameters,
    #[error("an ephemeral or static key is not a valid P-256 point")]
    InvalidPublicKey,
    #[error("the card's receipt does not verify: it does not hold the private key its certificate names")]
    BadReceipt,
    #[error("operating system random generator failed")]
    Random,
}

/// What a finished key agreement gives both ends.
pub struct Established {
    pub keys: SessionKeys,
    /// The receipt: proof of the card's static key, and the first MAC chaining value.
    pub receipt: [u8; RECEIPT_LEN],
    /// `SHA-256(TRANSCRIPT_LABEL ‖ key-agreement data ‖ receipt)`: names this session.
    pub transcript: [u8; 32],
}

impl std::fmt::Debug for Established {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Established {{ transcript: {} }}", hex::encode(self.transcript))
    }
}

/// ANSI X9.63 key derivation (SEC 1 v2 §3.6.1) with SHA-256: `out` is filled with
/// `SHA-256(Z ‖ [1]_4 ‖ SharedInfo) ‖ SHA-256(Z ‖ [2]_4 ‖ SharedInfo) ‖ …`, truncated.
pub fn x963_kdf(z: &[&[u8]], shared_info: &[u8], out: &mut [u8]) {
    for (i, chunk) in out.chunks_mut(32).enumerate() {
        let mut h = Sha256::new();
        for part in z {
            h.update(part);
        }
        h.update((i as u32 + 1).to_be_bytes());
        h.update(shared_info);
        let block = h.finalize();
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// Derive receipt key and session keys from the two shared secrets (Amendment F §3.1.2).
fn derive(sh_see: &SecretBytes, sh_ses: &SecretBytes) -> (Secret16, SessionKeys) {
    let mut out = SecretBytes::new(vec![0u8; 5 * KEY_LENGTH as usize]);
    x963_kdf(&[sh_see.expose(), sh_ses.expose()], &[KEY_USAGE, KEY_TYPE_AES, KEY_LENGTH], out.expose_mut());
    let k = |i: usize| Secret16::from_slice(&out.expose()[16 * i..16 * (i + 1)]).expect("16 bytes");
    (k(0), SessionKeys::new(k(1), k(2), k(3), k(4)))
}

fn finish(
    receipt_key: &Secret16,
    keys: SessionKeys,
    command_data: &[u8],
    card_epk: &[u8; PUBLIC_KEY_LEN],
) -> Established {
    let receipt = super::mac::cmac(receipt_key, &[command_data, &EPK_HEADER, card_epk]);
    let transcript: [u8; 32] = Sha256::new()
        .chain_update(TRANSCRIPT_LABEL)
        .chain_update(command_data)
        .chain_update(EPK_HEADER)
        .chain_update(card_epk)
        .chain_update(receipt)
        .finalize()
        .into();
    Established { keys, receipt, transcript }
}

/// The line's side of one key agreement. Consumed by [`HostKeyAgreement::finish`], so an ephemeral
/// key serves one session only; the ephemeral secret is zeroized when this is dropped.
pub struct HostKeyAgreement {
    ephemeral: CardKeyPair,
    command_data: Vec<u8>,
}

impl std::fmt::Debug for HostKeyAgreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostKeyAgreement(<ephemeral redacted>)")
    }
}

impl HostKeyAgreement {
    /// A fresh ephemeral key and the INTERNAL AUTHENTICATE data that announces it.
    pub fn start() -> Result<Self, Scp11Error> {
        Ok(Self::with_ephemeral(CardKeyPair::generate().map_err(|_| Scp11Error::Random)?))
    }

    /// With a given ephemeral key: for known-answer tests only.
    pub(crate) fn with_ephemeral(ephemeral: CardKeyPair) -> Self {
        let mut command_data = Vec::with_capacity(COMMAND_DATA_LEN);
        command_data.extend_from_slice(&CONTROL_REFERENCE_TEMPLATE);
        command_data.extend_from_slice(&EPK_HEADER);
        command_data.extend_from_slice(&ephemeral.public_key_sec1());
        HostKeyAgreement { ephemeral, command_data }
    }

    /// INTERNAL AUTHENTICATE's data field.
    pub fn command_data(&self) -> &[u8] {
        &self.command_data
    }

    /// Check the card's answer against its certified static key `card_static_public` (SEC 1) and
    /// derive the session. [`Scp11Error::BadReceipt`] when the card does not hold that key.
    pub fn finish(self, card_static_public: &[u8], response: &[u8]) -> Result<Established, Scp11Error> {
        let card_epk = parse_response(response)?;
        let sh_see = card_key::ecdh(&self.ephemeral, &card_epk).map_err(|_| Scp11Error::InvalidPublicKey)?;
        let sh_ses = card_key::ecdh(&self.ephemeral, card_static_public).map_err(|_| Scp11Error::InvalidPublicKey)?;
        let (receipt_key, keys) = derive(&sh_see, &sh_ses);
        let established = finish(&receipt_key, keys, &self.command_data, &card_epk);
        let sent = &response[RESPONSE_LEN - RECEIPT_LEN..];
        if !bool::from(established.receipt.ct_eq(sent)) {
            return Err(Scp11Error::BadReceipt);
        }
        Ok(established)
    }
}

fn parse_response(response: &[u8]) -> Result<[u8; PUBLIC_KEY_LEN], Scp11Error> {
    if response.len() != RESPONSE_LEN {
        return Err(Scp11Error::Malformed("the card's answer is not 5F49 41 <point> 86 10 <receipt>"));
    }
    if response[..3] != EPK_HEADER || response[3 + PUBLIC_KEY_LEN..][..2] != [0x86, RECEIPT_LEN as u8] {
        return Err(Scp11Error::Malformed("the card's answer is not 5F49 41 <point> 86 10 <receipt>"));
    }
    let epk: [u8; PUBLIC_KEY_LEN] = response[3..3 + PUBLIC_KEY_LEN].try_into().expect("length checked");
    if epk[0] != 0x04 {
        return Err(Scp11Error::InvalidPublicKey);
    }
    card_key::parse_public_key(&epk).map_err(|_| Scp11Error::InvalidPublicKey)?;
    Ok(epk)
}

/// The card's side: check INTERNAL AUTHENTICATE's data, make an ephemeral key, derive the session
/// with the card's static key-agreement key `static_key`, and return the answer to send.
pub fn card_respond(static_key: &CardKeyPair, command_data: &[u8]) -> Result<(Vec<u8>, Established), Scp11Error> {
    card_respond_with(static_key, CardKeyPair::generate().map_err(|_| Scp11Error::Random)?, command_data)
}

/// [`card_respond`] with a given ephemeral key: for known-answer tests only.
pub(crate) fn card_respond_with(
    static_key: &CardKeyPair,
    ephemeral: CardKeyPair,
    command_data: &[u8],
) -> Result<(Vec<u8>, Established), Scp11Error> {
    if command_data.len() != COMMAND_DATA_LEN {
        return Err(Scp11Error::Malformed("INTERNAL AUTHENTICATE data is not A6 <template> 5F49 41 <point>"));
    }
    if command_data[..CONTROL_REFERENCE_TEMPLATE.len()] != CONTROL_REFERENCE_TEMPLATE {
        return Err(Scp11Error::UnsupportedParameters);
    }
    let rest = &command_data[CONTROL_REFERENCE_TEMPLATE.len()..];
    if rest[..3] != EPK_HEADER {
        return Err(Scp11Error::Malformed("INTERNAL AUTHENTICATE data is not A6 <template> 5F49 41 <point>"));
    }
    let oce_epk = &rest[3..];
    if oce_epk[0] != 0x04 {
        return Err(Scp11Error::InvalidPublicKey);
    }
    let sh_see = card_key::ecdh(&ephemeral, oce_epk).map_err(|_| Scp11Error::InvalidPublicKey)?;
    let sh_ses = card_key::ecdh(static_key, oce_epk).map_err(|_| Scp11Error::InvalidPublicKey)?;
    let (receipt_key, keys) = derive(&sh_see, &sh_ses);
    let card_epk = ephemeral.public_key_sec1();
    let established = finish(&receipt_key, keys, command_data, &card_epk);
    let mut response = Vec::with_capacity(RESPONSE_LEN);
    response.extend_from_slice(&EPK_HEADER);
    response.extend_from_slice(&card_epk);
    response.extend_from_slice(&[0x86, RECEIPT_LEN as u8]);
    response.extend_from_slice(&established.receipt);
    Ok((response, established))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::secure_messaging::{CardSession, HostSession};

    fn key(byte: u8) -> CardKeyPair {
        CardKeyPair::from_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn both_ends_agree_and_the_line_accepts_the_genuine_card() {
        let card_static = CardKeyPair::generate().unwrap();
        let host = HostKeyAgreement::start().unwrap();
        assert_eq!(host.command_data().len(), COMMAND_DATA_LEN);
        let (response, card) = card_respond(&card_static, host.command_data()).unwrap();
        assert_eq!(response.len(), RESPONSE_LEN);
        let line = host.finish(&card_static.public_key_sec1(), &response).unwrap();
        assert_eq!(line.keys, card.keys);
        assert_eq!(line.receipt, card.receipt);
        assert_eq!(line.transcript, card.transcript);
    }

    /// A card that presents another card's certificate (static key) but does not hold its private key
    /// cannot make a receipt the line accepts.
    #[test]
    fn a_relayed_certificate_without_its_key_is_refused() {
        let genuine = CardKeyPair::generate().unwrap();
        let impostor = CardKeyPair::generate().unwrap();
        let host = HostKeyAgreement::start().unwrap();
        let (response, _) = card_respond(&impostor, host.command_data()).unwrap();
        assert_eq!(host.finish(&genuine.public_key_sec1(), &response).unwrap_err(), Scp11Error::BadReceipt);
    }

    #[test]
    fn any_changed_byte_of_the_answer_is_refused() {
        let card_static = key(0x44);
        let host = HostKeyAgreement::with_ephemeral(key(0x55));
        let (response, _) = card_respond_with(&card_static, key(0x66), host.command_data()).unwrap();
        for i in 0..response.len() {
            let mut t = response.clone();
            t[i] ^= 0x01;
            let host = HostKeyAgreement::with_ephemeral(key(0x55));
            assert!(host.finish(&card_static.public_key_sec1(), &t).is_err(), "byte {i}");
        }
        let host = HostKeyAgreement::with_ephemeral(key(0x55));
        assert!(host.finish(&card_static.public_key_sec1(), &response[..RESPONSE_LEN - 1]).is_err());
    }

    #[test]
    fn the_card_refuses_other_parameters_and_bad_points() {
        let card_static = key(0x44);
        let host = HostKeyAgreement::start().unwrap();
        let good = host.command_data().to_vec();
        for i in 0..CONTROL_REFERENCE_TEMPLATE.len() {
            let mut t = good.clone();
            t[i] ^= 0x01;
            assert!(card_respond(&card_static, &t).is_err(), "template byte {i}");
        }
        let mut off_curve = good.clone();
        *off_curve.last_mut().unwrap() ^= 1;
        assert_eq!(card_respond(&card_static, &off_curve).unwrap_err(), Scp11Error::InvalidPublicKey);
        let mut zero = good.clone();
        zero[18..].fill(0);
        assert_eq!(card_respond(&card_static, &zero).unwrap_err(), Scp11Error::InvalidPublicKey);
        assert!(card_respond(&card_static, &good[..good.len() - 1]).is_err());
        assert!(card_respond(&card_static, &[]).is_err());
    }

    #[test]
    fn every_session_has_fresh_keys_and_transcript() {
        let card_static = key(0x44);
        let a = HostKeyAgreement::start().unwrap();
        let b = HostKeyAgreement::start().unwrap();
        let (_, ea) = card_respond(&card_static, a.command_data()).unwrap();
        let (_, eb) = card_respond(&card_static, b.command_data()).unwrap();
        assert_ne!(ea.keys, eb.keys);
        assert_ne!(ea.transcript, eb.transcript);
        // The same line message answered twice by the card still gives two sessions (card ephemeral).
        let (_, e1) = card_respond(&card_static, a.command_data()).unwrap();
        let (_, e2) = card_respond(&card_static, a.command_data()).unwrap();
        assert_ne!(e1.keys, e2.keys);
    }

    /// X9.63 KDF against the published vector of NIST CAVS 12.0 "ansx963_2001" (SHA-256,
    /// shared secret 192 bits, SharedInfo 0 bits, key data 128 bits, COUNT = 0).
    #[test]
    fn x963_kdf_matches_cavs() {
        let z = hex::decode("96c05619d56c328ab95fe84b18264b08725b85e33fd34f08").unwrap();
        let mut out = [0u8; 16];
        x963_kdf(&[&z], &[], &mut out);
        assert_eq!(hex::encode(out), "443024c3dae66b95e6f5670601558f71");
    }

    /// X9.63 KDF with SharedInfo, NIST CAVS 12.0 "ansx963_2001" (SHA-256, Z 192 bits, SharedInfo 128
    /// bits, key data 1024 bits, COUNT = 0): several output blocks.
    #[test]
    fn x963_kdf_matches_cavs_with_shared_info() {
        let z = hex::decode("22518b10e70f2a3f243810ae3254139efbee04aa57c7af7d").unwrap();
        let info = hex::decode("75eef81aa3041e33b80971203d2c0c52").unwrap();
        let mut out = [0u8; 128];
        x963_kdf(&[&z], &info, &mut out);
        assert_eq!(
            hex::encode(out),
            concat!(
                "c498af77161cc59f2962b9a713e2b215152d139766ce34a776df11866a69bf2e",
                "52a13d9c7c6fc878c50c5ea0bc7b00e0da2447cfd874f6cf92f30d0097111485",
                "500c90c3af8b487872d04685d14c8d1dc8d7fa08beb0ce0ababc11f0bd496269",
                "142d43525a78e5bc79a17f59676a5706dc54d54d4d1f0bd7e386128ec26afc21"
            )
        );
    }

    /// Known answers computed with an implementation keyroll did not write: Python `cryptography`
    /// (X963KDF, CMAC, AES-CBC, ECDH) by `scripts/scp11-vectors.py`, which follows Amendment F and
    /// Amendment D as Yubico's yubikit does. Fixed scalars: card static 0x11…, line ephemeral 0x22…,
    /// card ephemeral 0x33….
    #[test]
    fn known_answer_handshake_and_first_protected_exchange() {
        let v: serde_json::Value = serde_json::from_str(include_str!("scp11_vectors.json")).unwrap();
        let s = |k: &str| hex::decode(v[k].as_str().unwrap()).unwrap();
        let card_static = key(0x11);
        let host = HostKeyAgreement::with_ephemeral(key(0x22));
        assert_eq!(host.command_data(), s("command_data"));
        let (response, card) = card_respond_with(&card_static, key(0x33), host.command_data()).unwrap();
        assert_eq!(response, s("response"));
        let line = host.finish(&card_static.public_key_sec1(), &response).unwrap();
        assert_eq!(line.receipt.to_vec(), s("receipt"));
        let k = line.keys.all();
        assert_eq!(k[0].expose().to_vec(), s("s_enc"));
        assert_eq!(k[1].expose().to_vec(), s("s_mac"));
        assert_eq!(k[2].expose().to_vec(), s("s_rmac"));
        assert_eq!(k[3].expose().to_vec(), s("s_dek"));
        // First protected command (80 E2 01 00, data "keyroll perso item") and its response.
        let mut hs = HostSession::new(line.keys, line.receipt);
        let c = hs.wrap(0x80, 0xE2, 0x01, 0x00, b"keyroll perso item").unwrap();
        assert_eq!(c.data, s("command1"));
        let mut cs = CardSession::new(card.keys, card.receipt);
        assert_eq!(&cs.unwrap([c.cla, c.ins, c.p1, c.p2], &c.data).unwrap()[..], b"keyroll perso item");
        let r = cs.wrap(b"answer", [0x90, 0x00]).unwrap();
        assert_eq!(r, s("response1"));
        assert_eq!(&hs.unwrap(&r, [0x90, 0x00]).unwrap()[..], b"answer");
        // Second command without data: the counter still advances (Amendment D §6.2.6).
        let c2 = hs.wrap(0x80, 0xE8, 0x00, 0x00, b"").unwrap();
        assert_eq!(c2.data, s("command2"));
        cs.unwrap([c2.cla, c2.ins, c2.p1, c2.p2], &c2.data).unwrap();
        assert_eq!(cs.wrap(b"\x01\x02", [0x90, 0x00]).unwrap(), s("response2"));
    }
}
