//! Secure messaging of the personalisation channel: GlobalPlatform SCP03 command and response
//! protection (Card Specification v2.3 Amendment D, §6.2.4 to §6.2.7), keyed by the session keys the
//! SCP11b key agreement derives ([`super::scp11`]; Amendment F §3.1.3 reuses SCP03 secure messaging).
//!
//! Security level: C-MAC, C-DECRYPTION, R-MAC and R-ENCRYPTION together (key usage `3C`), the only
//! level keyroll offers:
//! - **Command encryption** (§6.2.6): a non-empty data field is padded (ISO/IEC 9797-1 method 2: `80`
//!   then `00`s up to a whole block, always at least one byte) and encrypted with AES-128-CBC under
//!   S-ENC, ICV = `AES(S-ENC, counter)` with the encryption counter as a 16-byte big-endian block.
//! - **C-MAC** (§6.2.4): `CMAC(S-MAC, chain ‖ CLA' INS P1 P2 ‖ Lc' ‖ encrypted data)`; CLA' has the
//!   secure-messaging bit `04` set, Lc' counts the encrypted data and the 8-byte MAC (one byte up to 255,
//!   else `00 HH LL` as ISO/IEC 7816-4 extended length). The full 16-byte CMAC becomes the next MAC
//!   chaining value; its first 8 bytes are appended to the data field. The first chaining value is the
//!   SCP11 receipt (Amendment F §3.1.3).
//! - **Response encryption** (§6.2.7): non-empty response data, padded as above, AES-128-CBC under S-ENC
//!   with ICV = `AES(S-ENC, 80 ‖ counter)` (the command's counter, top byte set).
//! - **R-MAC** (§6.2.5): `CMAC(S-RMAC, chain ‖ encrypted response data ‖ SW1 SW2)`, first 8 bytes
//!   appended; `chain` is the C-MAC of the command answered, so a response authenticates its command.
//!
//! The encryption counter starts at 1 and advances with every command, data field or not (§6.2.6), so
//! no two responses of a session share an ICV. Both ends advance MAC chain and counter only when a
//! command's C-MAC verifies: a forged, replayed, reordered or dropped command fails on the card and
//! leaves the card's state where it was; the line then stops (the card, as GlobalPlatform asks, closes
//! the session on a secure-messaging failure).
//!
//! Responses with an error status carry no R-MAC and no data (§6.2.5 "no R-MAC on error"): a refusal
//! only ever stops the line, so an attacker who forges one gains nothing a cut cable would not give.

use super::secret::Secret16;
use aes::Aes128;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use cmac::{Cmac, Mac};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// Length of C-MAC and R-MAC on the wire (SCP03 truncates the 16-byte CMAC to its first 8 bytes).
pub const MAC_LEN: usize = 8;
/// The CLA bit that announces secure messaging (GP Card Specification §11.1.4, ISO/IEC 7816-4 §5.4.1).
pub const CLA_SECURE_MESSAGING: u8 = 0x04;
/// AES block length.
const BLOCK: usize = 16;
/// Largest plaintext one protected command or response carries. Bounded so that the padded
/// ciphertext and the MAC fit the card's 4 KiB APDU data limit (`protocol::apdu::MAX_COMMAND_DATA`).
pub const MAX_PLAINTEXT: usize = 4096 - MAC_LEN - BLOCK;
/// The counter never wraps: a session would need 2^31 commands first; refusing is the safe answer.
const MAX_COUNTER: u32 = 1 << 31;

/// Why a protected command or response was refused. Carries no key material and no data.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum SmError {
    #[error("secure messaging: the command's CLA does not announce secure messaging")]
    NotProtected,
    #[error("secure messaging: data field of {len} bytes cannot hold a MAC")]
    TooShort { len: usize },
    #[error("secure messaging: {len} bytes of data exceed the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    #[error("secure messaging: the C-MAC does not verify (tampered, reordered, replayed or another session's command)")]
    BadCommandMac,
    #[error("secure messaging: the R-MAC does not verify (tampered response, or not this session's card)")]
    BadResponseMac,
    #[error("secure messaging: the encrypted data is not whole padded blocks")]
    BadCryptogram,
    #[error("secure messaging: a success response without an R-MAC")]
    MissingResponseMac,
    #[error("secure messaging: a response came without a command to answer")]
    NoCommand,
    #[error("secure messaging: the session's command counter is exhausted")]
    CounterExhausted,
}

/// The four SCP03 session keys (Amendment F §3.1.2 derives them in this order after the receipt key).
/// S-DEK is derived for the order's sake and for a data-encryption use keyroll does not have: every
/// secret travels under C-DECRYPTION already. Zeroized on drop, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    pub(crate) s_enc: Secret16,
    pub(crate) s_mac: Secret16,
    pub(crate) s_rmac: Secret16,
    pub(crate) s_dek: Secret16,
}

impl SessionKeys {
    pub fn new(s_enc: Secret16, s_mac: Secret16, s_rmac: Secret16, s_dek: Secret16) -> Self {
        SessionKeys { s_enc, s_mac, s_rmac, s_dek }
    }
    /// Every key, in derivation order (for tests that look for keys in a recording).
    pub fn all(&self) -> [&Secret16; 4] {
        [&self.s_enc, &self.s_mac, &self.s_rmac, &self.s_dek]
    }
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(<redacted>)")
    }
}

/// A command as it goes on the wire after protection.
#[derive(Clone, PartialEq, Eq)]
pub struct ProtectedCommand {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    /// Encrypted data ‖ C-MAC (8 bytes).
    pub data: Vec<u8>,
}

impl std::fmt::Debug for ProtectedCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ProtectedCommand({:02X} {:02X} {:02X} {:02X}, {} bytes)",
            self.cla,
            self.ins,
            self.p1,
            self.p2,
            self.data.len()
        )
    }
}

/// Both ends' running state: MAC chaining value and the counter of the next command.
#[derive(Clone)]
struct Chain {
    mac_chain: [u8; 16],
    next_counter: u32,
    /// Chaining value and counter of the last verified command, which its response answers.
    answering: Option<([u8; 16], u32)>,
}

impl Drop for Chain {
    fn drop(&mut self) {
        self.mac_chain.zeroize();
    }
}

impl Chain {
    fn new(receipt: [u8; 16]) -> Self {
        Chain { mac_chain: receipt, next_counter: 1, answering: None }
    }
}

fn aes(key: &Secret16) -> Aes128 {
    Aes128::new_from_slice(key.expose()).expect("16-byte key")
}

fn icv(key: &Secret16, counter: u32, response: bool) -> [u8; 16] {
    let mut block = [0u8; 16];
    block[12..].copy_from_slice(&counter.to_be_bytes());
    if response {
        block[0] = 0x80;
    }
    let mut b = block.into();
    aes(key).encrypt_block(&mut b);
    b.into()
}

/// AES-128-CBC encryption of whole blocks (NIST SP 800-38A §6.2).
fn cbc_encrypt(key: &Secret16, iv: [u8; 16], data: &mut [u8]) {
    debug_assert!(data.len() % BLOCK == 0);
    let cipher = aes(key);
    let mut prev = iv;
    for chunk in data.chunks_exact_mut(BLOCK) {
        for (b, p) in chunk.iter_mut().zip(prev.iter()) {
            *b ^= p;
        }
        let mut block: [u8; 16] = (&*chunk).try_into().expect("16-byte chunk");
        let mut ga = block.into();
        cipher.encrypt_block(&mut ga);
        block = ga.into();
        chunk.copy_from_slice(&block);
        prev = block;
    }
}

/// AES-128-CBC decryption of whole blocks (NIST SP 800-38A §6.2).
fn cbc_decrypt(key: &Secret16, iv: [u8; 16], data: &mut [u8]) {
    debug_assert!(data.len() % BLOCK == 0);
    let cipher = aes(key);
    let mut prev = iv;
    for chunk in data.chunks_exact_mut(BLOCK) {
        let this: [u8; 16] = (&*chunk).try_into().expect("16-byte chunk");
        let mut ga = this.into();
        cipher.decrypt_block(&mut ga);
        let plain: [u8; 16] = ga.into();
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = plain[i] ^ prev[i];
        }
        prev = this;
    }
}

/// ISO/IEC 9797-1 padding method 2, then CBC under S-ENC.
fn encrypt(key: &Secret16, iv: [u8; 16], plaintext: &[u8]) -> Vec<u8> {
    if plaintext.is_empty() {
        return Vec::new();
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + BLOCK));
    buf.extend_from_slice(plaintext);
    buf.push(0x80);
    while buf.len() % BLOCK != 0 {
        buf.push(0);
    }
    cbc_encrypt(key, iv, &mut buf);
    buf.to_vec()
}

/// CBC decryption and removal of method-2 padding. Runs only after the MAC verified, so padding
/// errors are not an oracle for anyone who lacks the MAC key.
fn decrypt(key: &Secret16, iv: [u8; 16], ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, SmError> {
    if ciphertext.is_empty() {
        return Ok(Zeroizing::new(Vec::new()));
    }
    if ciphertext.len() % BLOCK != 0 {
        return Err(SmError::BadCryptogram);
    }
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    cbc_decrypt(key, iv, &mut buf);
    let end = buf.iter().rposition(|&b| b != 0).ok_or(SmError::BadCryptogram)?;
    if buf[end] != 0x80 || buf.len() - end > BLOCK {
        return Err(SmError::BadCryptogram);
    }
    buf.truncate(end);
    Ok(buf)
}

/// Lc as ISO/IEC 7816-4 §5.1 encodes it: one byte up to 255, else `00 HH LL`.
fn lc(len: usize) -> Vec<u8> {
    if len <= 255 { vec![len as u8] } else { vec![0, (len >> 8) as u8, len as u8] }
}

fn full_cmac(key: &Secret16, parts: &[&[u8]]) -> [u8; 16] {
    let mut m = <Cmac<Aes128> as cmac::KeyInit>::new_from_slice(key.expose()).expect("16-byte key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn command_mac(keys: &SessionKeys, chain: &[u8; 16], header: [u8; 4], encrypted: &[u8]) -> [u8; 16] {
    full_cmac(&keys.s_mac, &[chain, &header, &lc(encrypted.len() + MAC_LEN), encrypted])
}

fn response_mac(keys: &SessionKeys, chain: &[u8; 16], encrypted: &[u8], sw: [u8; 2]) -> [u8; 16] {
    full_cmac(&keys.s_rmac, &[chain, encrypted, &sw])
}

/// Whether a status word is one SCP03 protects (`9000`, warnings `62xx`/`63xx`).
pub fn sw_is_protected(sw: [u8; 2]) -> bool {
    sw == [0x90, 0x00] || sw[0] == 0x62 || sw[0] == 0x63
}

/// The line's (off-card entity's) end of a secure-messaging session.
pub struct HostSession {
    keys: SessionKeys,
    chain: Chain,
}

impl HostSession {
    /// A session keyed by `keys` whose first MAC chaining value is the SCP11 `receipt`.
    pub fn new(keys: SessionKeys, receipt: [u8; 16]) -> Self {
        HostSession { keys, chain: Chain::new(receipt) }
    }

    /// Protect one command: encrypt its data, set the CLA bit, append the C-MAC, advance the chain.
    pub fn wrap(&mut self, cla: u8, ins: u8, p1: u8, p2: u8, plaintext: &[u8]) -> Result<ProtectedCommand, SmError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(SmError::TooLong { len: plaintext.len(), max: MAX_PLAINTEXT });
        }
        let counter = self.chain.next_counter;
        if counter >= MAX_COUNTER {
            return Err(SmError::CounterExhausted);
        }
        let cla = cla | CLA_SECURE_MESSAGING;
        let mut data = encrypt(&self.keys.s_enc, icv(&self.keys.s_enc, counter, false), plaintext);
        let mac = command_mac(&self.keys, &self.chain.mac_chain, [cla, ins, p1, p2], &data);
        data.extend_from_slice(&mac[..MAC_LEN]);
        self.chain.mac_chain = mac;
        self.chain.next_counter = counter + 1;
        self.chain.answering = Some((mac, counter));
        Ok(ProtectedCommand { cla, ins, p1, p2, data })
    }

    /// Check and decrypt the response to the last wrapped command. An error status (no R-MAC by
    /// §6.2.5) returns `Ok` with empty data: the caller reports the refusal and stops. A success status
    /// without a valid R-MAC is [`SmError::BadResponseMac`].
    pub fn unwrap(&mut self, data: &[u8], sw: [u8; 2]) -> Result<Zeroizing<Vec<u8>>, SmError> {
        let (chain, counter) = self.chain.answering.take().ok_or(SmError::NoCommand)?;
        if !sw_is_protected(sw) {
            return Ok(Zeroizing::new(Vec::new()));
        }
        if data.len() < MAC_LEN {
            return Err(SmError::MissingResponseMac);
        }
        let (encrypted, mac) = data.split_at(data.len() - MAC_LEN);
        let expect = response_mac(&self.keys, &chain, encrypted, sw);
        if !bool::from(expect[..MAC_LEN].ct_eq(mac)) {
            return Err(SmError::BadResponseMac);
        }
        decrypt(&self.keys.s_enc, icv(&self.keys.s_enc, counter, true), encrypted)
    }
}

impl std::fmt::Debug for HostSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostSession {{ next_counter: {} }}", self.chain.next_counter)
    }
}

/// The card's end of a secure-messaging session. Lives in the card's session state only (it dies with
/// the power, like every session secret).
#[derive(Clone)]
pub struct CardSession {
    keys: SessionKeys,
    chain: Chain,
}

impl CardSession {
    pub fn new(keys: SessionKeys, receipt: [u8; 16]) -> Self {
        CardSession { keys, chain: Chain::new(receipt) }
    }

    /// Verify and decrypt a protected command. On success the chain advances (the command is now the
    /// one the next response answers); on any error nothing changes.
    pub fn unwrap(&mut self, header: [u8; 4], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, SmError> {
        if header[0] & CLA_SECURE_MESSAGING == 0 {
            return Err(SmError::NotProtected);
        }
        if data.len() < MAC_LEN {
            return Err(SmError::TooShort { len: data.len() });
        }
        if data.len() > MAX_PLAINTEXT + BLOCK + MAC_LEN {
            return Err(SmError::TooLong { len: data.len(), max: MAX_PLAINTEXT + BLOCK + MAC_LEN });
        }
        let counter = self.chain.next_counter;
        if counter >= MAX_COUNTER {
            return Err(SmError::CounterExhausted);
        }
        let (encrypted, mac) = data.split_at(data.len() - MAC_LEN);
        let expect = command_mac(&self.keys, &self.chain.mac_chain, header, encrypted);
        if !bool::from(expect[..MAC_LEN].ct_eq(mac)) {
            return Err(SmError::BadCommandMac);
        }
        let plain = decrypt(&self.keys.s_enc, icv(&self.keys.s_enc, counter, false), encrypted)?;
        self.chain.mac_chain = expect;
        self.chain.next_counter = counter + 1;
        self.chain.answering = Some((expect, counter));
        Ok(plain)
    }

    /// Protect the success response (`SW`) to the last verified command. Error statuses go out plain
    /// (see the module notes) and need no call here.
    pub fn wrap(&mut self, plaintext: &[u8], sw: [u8; 2]) -> Result<Vec<u8>, SmError> {
        let (chain, counter) = self.chain.answering.take().ok_or(SmError::NoCommand)?;
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(SmError::TooLong { len: plaintext.len(), max: MAX_PLAINTEXT });
        }
        let mut data = encrypt(&self.keys.s_enc, icv(&self.keys.s_enc, counter, true), plaintext);
        let mac = response_mac(&self.keys, &chain, &data, sw);
        data.extend_from_slice(&mac[..MAC_LEN]);
        Ok(data)
    }
}

impl std::fmt::Debug for CardSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CardSession {{ next_counter: {} }}", self.chain.next_counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8) -> SessionKeys {
        SessionKeys::new(
            Secret16::new([seed; 16]),
            Secret16::new([seed.wrapping_add(1); 16]),
            Secret16::new([seed.wrapping_add(2); 16]),
            Secret16::new([seed.wrapping_add(3); 16]),
        )
    }

    fn pair() -> (HostSession, CardSession) {
        (HostSession::new(keys(1), [9; 16]), CardSession::new(keys(1), [9; 16]))
    }

    fn h(c: &ProtectedCommand) -> [u8; 4] {
        [c.cla, c.ins, c.p1, c.p2]
    }

    /// NIST SP 800-38A F.2.1 (CBC-AES128.Encrypt), all four blocks, and F.2.2 back.
    #[test]
    fn cbc_matches_sp800_38a() {
        let key = Secret16::new(hex::decode("2b7e151628aed2a6abf7158809cf4f3c").unwrap().try_into().unwrap());
        let iv: [u8; 16] = hex::decode("000102030405060708090a0b0c0d0e0f").unwrap().try_into().unwrap();
        let pt = hex::decode(concat!(
            "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51",
            "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
        ))
        .unwrap();
        let ct = hex::decode(concat!(
            "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2",
            "73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7"
        ))
        .unwrap();
        let mut buf = pt.clone();
        cbc_encrypt(&key, iv, &mut buf);
        assert_eq!(buf, ct);
        cbc_decrypt(&key, iv, &mut buf);
        assert_eq!(buf, pt);
    }

    #[test]
    fn round_trip_with_and_without_data() {
        let (mut host, mut card) = pair();
        for (i, plain) in [&b""[..], b"x", &[7u8; 15], &[7u8; 16], &[7u8; 17], &[1u8; 300]].iter().enumerate() {
            let c = host.wrap(0x80, 0x54, i as u8, 0, plain).unwrap();
            assert_eq!(c.cla, 0x84);
            assert_eq!(c.data.len(), if plain.is_empty() { 8 } else { (plain.len() / 16 + 1) * 16 + 8 });
            assert_eq!(&card.unwrap(h(&c), &c.data).unwrap()[..], *plain);
            let r = card.wrap(plain, [0x90, 0x00]).unwrap();
            assert_eq!(&host.unwrap(&r, [0x90, 0x00]).unwrap()[..], *plain);
        }
    }

    #[test]
    fn tampered_reordered_replayed_and_dropped_commands_fail_and_change_nothing() {
        let (mut host, mut card) = pair();
        let c1 = host.wrap(0x80, 0x54, 1, 0, b"first").unwrap();
        let c2 = host.wrap(0x80, 0x54, 2, 0, b"second").unwrap();
        // Reordered (or c1 dropped): c2 first fails.
        assert_eq!(card.unwrap(h(&c2), &c2.data).unwrap_err(), SmError::BadCommandMac);
        // Every single-bit flip of data or header fails.
        for i in 0..c1.data.len() {
            let mut t = c1.data.clone();
            t[i] ^= 0x01;
            assert_eq!(card.unwrap(h(&c1), &t).unwrap_err(), SmError::BadCommandMac, "byte {i}");
        }
        for i in 0..4 {
            let mut hd = h(&c1);
            hd[i] ^= 0x02;
            assert!(card.unwrap(hd, &c1.data).is_err(), "header byte {i}");
        }
        // Truncation and plain CLA fail.
        assert!(card.unwrap(h(&c1), &c1.data[..c1.data.len() - 1]).is_err());
        assert_eq!(card.unwrap([0x80, 0x54, 1, 0], &c1.data).unwrap_err(), SmError::NotProtected);
        // After all that, the genuine c1 and then c2 still verify: nothing moved.
        assert_eq!(&card.unwrap(h(&c1), &c1.data).unwrap()[..], b"first");
        // Replay of c1 fails.
        assert_eq!(card.unwrap(h(&c1), &c1.data).unwrap_err(), SmError::BadCommandMac);
        assert_eq!(&card.unwrap(h(&c2), &c2.data).unwrap()[..], b"second");
    }

    #[test]
    fn another_session_cannot_speak() {
        let (mut host, _) = pair();
        let mut other = CardSession::new(keys(1), [8; 16]);
        let c = host.wrap(0x80, 0x54, 1, 0, b"x").unwrap();
        assert_eq!(other.unwrap(h(&c), &c.data).unwrap_err(), SmError::BadCommandMac);
        let mut other_keys = CardSession::new(keys(2), [9; 16]);
        assert_eq!(other_keys.unwrap(h(&c), &c.data).unwrap_err(), SmError::BadCommandMac);
    }

    #[test]
    fn tampered_response_is_detected() {
        let (mut host, mut card) = pair();
        let c = host.wrap(0x80, 0x56, 0, 0, b"").unwrap();
        card.unwrap(h(&c), &c.data).unwrap();
        let r = card.wrap(b"public key bytes", [0x90, 0x00]).unwrap();
        for i in 0..r.len() {
            let mut t = r.clone();
            t[i] ^= 0x10;
            let mut hc = HostSession::new(keys(1), [9; 16]);
            hc.wrap(0x80, 0x56, 0, 0, b"").unwrap();
            assert_eq!(hc.unwrap(&t, [0x90, 0x00]).unwrap_err(), SmError::BadResponseMac, "byte {i}");
        }
        // A changed status word, or a warning status over the same bytes, fails too.
        let mut hc = HostSession::new(keys(1), [9; 16]);
        hc.wrap(0x80, 0x56, 0, 0, b"").unwrap();
        assert_eq!(hc.unwrap(&r, [0x63, 0x00]).unwrap_err(), SmError::BadResponseMac);
        // A success without MAC is refused; an error status is passed on with no data.
        let mut hc = HostSession::new(keys(1), [9; 16]);
        hc.wrap(0x80, 0x56, 0, 0, b"").unwrap();
        assert_eq!(hc.unwrap(&[], [0x90, 0x00]).unwrap_err(), SmError::MissingResponseMac);
        let mut hc = HostSession::new(keys(1), [9; 16]);
        hc.wrap(0x80, 0x56, 0, 0, b"").unwrap();
        assert!(hc.unwrap(&[], [0x69, 0x85]).unwrap().is_empty());
        assert_eq!(host.unwrap(&r, [0x90, 0x00]).unwrap().as_slice(), b"public key bytes");
        // A response answers one command only.
        assert_eq!(host.unwrap(&r, [0x90, 0x00]).unwrap_err(), SmError::NoCommand);
    }

    #[test]
    fn a_response_replayed_into_a_later_command_fails() {
        let (mut host, mut card) = pair();
        let c = host.wrap(0x80, 0x56, 0, 0, b"").unwrap();
        card.unwrap(h(&c), &c.data).unwrap();
        let r1 = card.wrap(b"r", [0x90, 0x00]).unwrap();
        host.unwrap(&r1, [0x90, 0x00]).unwrap();
        let c = host.wrap(0x80, 0x56, 0, 0, b"").unwrap();
        card.unwrap(h(&c), &c.data).unwrap();
        assert_eq!(host.unwrap(&r1, [0x90, 0x00]).unwrap_err(), SmError::BadResponseMac);
    }

    #[test]
    fn bounds_hold() {
        let (mut host, mut card) = pair();
        assert!(matches!(host.wrap(0x80, 0x54, 0, 0, &vec![0; MAX_PLAINTEXT + 1]), Err(SmError::TooLong { .. })));
        let c = host.wrap(0x80, 0x54, 0, 0, &vec![0; MAX_PLAINTEXT]).unwrap();
        assert!(c.data.len() <= 4096);
        card.unwrap(h(&c), &c.data).unwrap();
        assert!(matches!(card.unwrap([0x84, 0x54, 0, 0], &vec![0; 5000]), Err(SmError::TooLong { .. })));
        assert_eq!(card.unwrap([0x84, 0x54, 0, 0], &[0; 7]).unwrap_err(), SmError::TooShort { len: 7 });
    }

    proptest::proptest! {
        /// Arbitrary bytes from outside never panic the card and never verify.
        #[test]
        fn arbitrary_commands_fail_closed(header in proptest::array::uniform4(proptest::num::u8::ANY),
                                          data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut card = CardSession::new(keys(3), [1; 16]);
            proptest::prop_assert!(card.unwrap(header, &data).is_err());
        }
    }
}
