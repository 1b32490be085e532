//! Typed commands: every keyroll command as a Rust value that encodes to a [`CommandApdu`] and decodes
//! from one (opcard-rs style `TryFrom`). A decoding failure is a [`DecodeError`] that names the field and
//! carries the exact ISO status word to answer ([`DecodeError::status_word`]).

use super::CHALLENGE_LEN;
use super::apdu::{CommandApdu, MAX_COMMAND_DATA};
use super::codec::{DecodeError, Reader, Wire, put_tlv};
use super::instruction::{CLA_ISO, CLA_PROPRIETARY, Instruction};
use super::policy::KeyAuthorisation;
use super::status::StatusWord;
use crate::domain::{Amount, CardSerial, UpdateKeyId};

pub type Challenge = [u8; CHALLENGE_LEN];

/// INTERNAL AUTHENTICATE P2 naming the card log key ([`Command::AuthenticateIssued`]); the SCP11b key
/// agreement uses P2 = [`crate::crypto::scp11::KEY_ID_SCP11B`].
pub const KEY_ID_CARD_LOG: u8 = 0x01;
pub type Nonce = [u8; CHALLENGE_LEN];
pub type Mac = [u8; 16];
/// Largest payer certificate a signed CREDIT carries (a card certificate is a few hundred bytes; house
/// rule 5: bounded before anything is copied).
pub const MAX_PAYER_CERTIFICATE: usize = 2048;

/// A 16-byte AES key as a wire field: transfer and update keys inside personalisation items (which travel
/// only under secure messaging). A newtype so that it is
/// zeroized on drop, compared in constant time and never shown by `Debug` (house rule 8): a `{:?}` of a
/// [`Command`] or an item in a log or a test failure must not print it.
#[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct KeyBytes(pub [u8; 16]);

impl PartialEq for KeyBytes {
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}
impl Eq for KeyBytes {}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBytes(<redacted>)")
    }
}

/// Which roll-forward path a key-roll command belongs to (P1 of the three key-roll commands).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyRollPath {
    /// Claims 2, 6, 9, 11, 15: envelope under the shared update key.
    Symmetric = 0x00,
    /// Claims 4, 7, 13, 16: ECIES to the receiver's certified key, ECDSA by the sender.
    PublicKey = 0x01,
}

impl KeyRollPath {
    fn from_p1p2(p1: u8, p2: u8) -> Result<Self, DecodeError> {
        match (p1, p2) {
            (0x00, 0x00) => Ok(KeyRollPath::Symmetric),
            (0x01, 0x00) => Ok(KeyRollPath::PublicKey),
            _ => Err(DecodeError::Parameters { p1, p2 }),
        }
    }
}

/// Items stored by PERSO STORE (P1). Their plaintext layouts are in `docs/protocol.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PersoItem {
    /// profile code (1).
    Profile = 0x01,
    /// transfer key id (4) ‖ key (16); a multi-key card accepts several.
    TransferKey = 0x02,
    /// update key id (4) ‖ key (16).
    UpdateKey = 0x03,
    /// upper limit of the transfer key identifier (4).
    TransferKeyIdLimit = 0x04,
    /// initial balance (8) ‖ maximum balance (8).
    Balance = 0x05,
    /// selected transfer key id (4) (multi-key).
    SelectedTransferKey = 0x06,
    /// issuer trust anchor certificate, DER.
    TrustAnchor = 0x07,
    /// the card's own certificate, DER.
    CardCertificate = 0x08,
    /// the card serial (8): the first item of a session, given inside the channel (a card that has a
    /// serial accepts only the same one again).
    Serial = 0x09,
    /// the card's log-export MAC key (16), derived by the back office from its log master and the
    /// serial (`crypto::mac::card_log_key`); sent only inside the channel, kept after LOCK.
    LogKey = 0x0A,
    /// the scheme signing key's raw public key (65, uncompressed SEC 1), DESIGN.md §10 point 3.
    SchemeKey = 0x0B,
    /// the newest scheme policy (`protocol::policy`), DESIGN.md §10 point 4.
    Policy = 0x0C,
}

impl PersoItem {
    pub const ALL: [PersoItem; 12] = [
        PersoItem::Profile,
        PersoItem::TransferKey,
        PersoItem::UpdateKey,
        PersoItem::TransferKeyIdLimit,
        PersoItem::Balance,
        PersoItem::SelectedTransferKey,
        PersoItem::TrustAnchor,
        PersoItem::CardCertificate,
        PersoItem::Serial,
        PersoItem::LogKey,
        PersoItem::SchemeKey,
        PersoItem::Policy,
    ];

    pub fn from_p1(p1: u8) -> Option<Self> {
        PersoItem::ALL.into_iter().find(|i| *i as u8 == p1)
    }
}

/// Every command keyroll sends or a card understands.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Command {
    Select {
        aid: Vec<u8>,
    },
    GetResponse {
        le: usize,
    },
    /// `certificate`: P1 = 00 answers the card certificate too (claims 4, 6, 7); P1 = 01 is the short
    /// form without it, enough for a settlement that needs no public-key roll (saves two GET RESPONSEs).
    GetCardInfo {
        certificate: bool,
    },
    /// Public-key path: the sender's (newer card's) certificate, DER (claims 4, 7).
    RequestUpdatePermission {
        path: KeyRollPath,
        sender_certificate: Vec<u8>,
    },
    /// Symmetric: `receiver` is the older card's serial, bound into the envelope.
    /// Public-key: `receiver_certificate` is the older card's certificate (claims 4, 7).
    GetTransferKey {
        path: KeyRollPath,
        challenge: Challenge,
        receiver: CardSerial,
        receiver_certificate: Vec<u8>,
    },
    /// Symmetric: `sender ‖ update key id ‖ envelope`; public key: `ciphertext` and `signature` TLVs.
    UpdateTransferKey {
        path: KeyRollPath,
        payload: KeyPayload,
    },
    /// `payer_sequence` is the payer's current sequence number (from its card info): the payee binds it
    /// into its request MAC, so the request is good for exactly one DEBIT.
    BeginReceive {
        payer: CardSerial,
        amount: Amount,
        payer_sequence: u32,
    },
    /// `request` is the payee's MAC from BEGIN RECEIVE (ignored for a repeated DEBIT of a pending nonce).
    Debit {
        payee: CardSerial,
        amount: Amount,
        nonce: Nonce,
        payee_sequence: u32,
        request: Mac,
    },
    /// The payee keeps no record of an open receipt (stateless receipts, DESIGN.md §10 point 6): CREDIT
    /// names it in full and the card re-derives its nonce.
    Credit {
        receipt: ReceiptRef,
        payer_sequence: u32,
        token: Mac,
    },
    /// CREDIT with the payer's value signature and certificate (P1 = `01`): what a certified payee
    /// requires (DESIGN.md §10 point 6). Data: the unsigned form's 44 bytes ‖ signature (64, P1363) ‖
    /// the payer's certificate (DER, the rest; sent as one extended-length APDU, ISO/IEC 7816-4 §5.1).
    CreditSigned {
        receipt: ReceiptRef,
        payer_sequence: u32,
        token: Mac,
        signature: [u8; 64],
        certificate: Vec<u8>,
    },
    Confirm {
        nonce: Nonce,
        ack: Mac,
    },
    /// Any terminal may abort any open receipt in the payee's window; the proof says "never credited".
    Abort {
        receipt: ReceiptRef,
    },
    Refund {
        nonce: Nonce,
        proof: Mac,
    },
    /// A scheme policy as signed (`protocol::policy::Policy`); the card answers [`PolicyAdoption`].
    PutPolicy {
        policy: Vec<u8>,
    },
    /// The card answers its policy as signed (empty when it holds none).
    GetPolicy,
    /// EXPORT LOG (`80 44 00 00`, data: the asker's 16-byte challenge): the card answers its log export
    /// ([`super::ledger::CardLogExport`], MAC'd under its log key over the challenge and every field).
    /// Longer than one short response: served with 61XX and GET RESPONSE (ISO/IEC 7816-4 §5.3.4).
    ExportLog {
        challenge: Challenge,
    },
    /// GET DATA of the factory credentials (`80 CA BF 21`): chip id and both factory certificates.
    GetFactoryData,
    /// SCP11b key agreement (GP Amendment F §7.6, `80 88 00 13`): the line's control reference
    /// template and ephemeral key ([`crate::crypto::scp11`]).
    InternalAuthenticate {
        data: Vec<u8>,
    },
    /// INTERNAL AUTHENTICATE of an issued card (`80 88 00 01`: P2 names the card log key): the card
    /// answers [`crate::crypto::mac::card_authentication`] of its serial and `challenge`. The line uses
    /// it for a card whose LOCK answer was lost; no other command proves a chip after LOCK.
    AuthenticateIssued {
        challenge: Challenge,
    },
    /// One personalisation item's plaintext ([`super::perso::PersoPayload`]); sent only under secure
    /// messaging (CLA 84), which encrypts and MACs it (the card refuses it in the clear).
    PersoStore {
        item: PersoItem,
        data: Vec<u8>,
    },
    /// Under secure messaging: make the card key pair for the card `serial` (the one the card has, or
    /// will be given); answers the public key and its attestation, which names the serial.
    GenerateKeyPair {
        serial: CardSerial,
    },
    /// Under secure messaging: end personalisation for good.
    Lock,
}

/// What UPDATE TRANSFER KEY carries, by path; it is also GET TRANSFER KEY's answer (the newer card's
/// wrapped key, relayed unchanged by the terminal), so its layout is written here once.
///
/// Symmetric: `sender serial (8) ‖ update key id (4) ‖ envelope`. Public key: simple-TLV
/// `90 ciphertext ‖ 91 signature` (ISO/IEC 7816-4 §5.2.2.2).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum KeyPayload {
    Symmetric { sender: CardSerial, update_key_id: UpdateKeyId, authorisation: Vec<u8>, envelope: Vec<u8> },
    PublicKey { ciphertext: Vec<u8>, signature: Vec<u8>, authorisation: Vec<u8> },
}

/// TLV tags inside public-key key-roll data.
pub mod tag {
    pub const CIPHERTEXT: u8 = 0x90;
    pub const SIGNATURE: u8 = 0x91;
    /// The issuer's authorisation of the key (`protocol::policy::KeyAuthorisation`).
    pub const AUTHORISATION: u8 = 0x92;
}

impl KeyPayload {
    pub fn path(&self) -> KeyRollPath {
        match self {
            KeyPayload::Symmetric { .. } => KeyRollPath::Symmetric,
            KeyPayload::PublicKey { .. } => KeyRollPath::PublicKey,
        }
    }
}

/// A payee's receipt as CREDIT and ABORT name it: the payer, the amount, the payee's receipt sequence
/// number (from BEGIN RECEIVE) and the transfer key id the transfer runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiptRef {
    pub payer: CardSerial,
    pub amount: Amount,
    pub receipt: u32,
    pub transfer_key_id: crate::domain::TransferKeyId,
}

impl Wire for ReceiptRef {
    type Context = ();
    /// `payer (8) ‖ amount (8) ‖ receipt (4) ‖ transfer key id (4)`.
    fn encode(&self, d: &mut Vec<u8>) {
        d.extend_from_slice(&self.payer.0);
        d.extend_from_slice(&self.amount.0.to_be_bytes());
        d.extend_from_slice(&self.receipt.to_be_bytes());
        d.extend_from_slice(&self.transfer_key_id.0.to_be_bytes());
    }
    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        Ok(ReceiptRef {
            payer: CardSerial(r.array("payer")?),
            amount: Amount(r.u64("amount")?),
            receipt: r.u32("receipt")?,
            transfer_key_id: crate::domain::TransferKeyId(r.u32("transfer key id")?),
        })
    }
}

impl Wire for KeyPayload {
    /// The path, from P1 of the command (or of the GET TRANSFER KEY the answer belongs to).
    type Context = KeyRollPath;

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            KeyPayload::Symmetric { sender, update_key_id, authorisation, envelope } => {
                out.extend_from_slice(&sender.0);
                out.extend_from_slice(&update_key_id.0.to_be_bytes());
                out.extend_from_slice(authorisation);
                out.extend_from_slice(envelope);
            }
            KeyPayload::PublicKey { ciphertext, signature, authorisation } => {
                put_tlv(out, tag::CIPHERTEXT, ciphertext);
                put_tlv(out, tag::SIGNATURE, signature);
                put_tlv(out, tag::AUTHORISATION, authorisation);
            }
        }
    }

    fn read(r: &mut Reader<'_>, path: KeyRollPath) -> Result<Self, DecodeError> {
        Ok(match path {
            KeyRollPath::Symmetric => KeyPayload::Symmetric {
                sender: CardSerial(r.array("sender")?),
                update_key_id: UpdateKeyId(r.u32("update key id")?),
                authorisation: r.take(KeyAuthorisation::LEN, "authorisation")?.to_vec(),
                envelope: r.rest_capped("envelope", MAX_COMMAND_DATA)?.to_vec(),
            },
            KeyRollPath::PublicKey => {
                let (t1, ct) = r.tlv()?;
                if t1 != tag::CIPHERTEXT {
                    return Err(DecodeError::Invalid { field: "ciphertext", why: "expected tag 90" });
                }
                let (t2, sig) = r.tlv()?;
                if t2 != tag::SIGNATURE {
                    return Err(DecodeError::Invalid { field: "signature", why: "expected tag 91" });
                }
                let (t3, auth) = r.tlv()?;
                if t3 != tag::AUTHORISATION {
                    return Err(DecodeError::Invalid { field: "authorisation", why: "expected tag 92" });
                }
                KeyPayload::PublicKey { ciphertext: ct.to_vec(), signature: sig.to_vec(), authorisation: auth.to_vec() }
            }
        })
    }
}

impl Command {
    pub fn instruction(&self) -> Instruction {
        use Command::*;
        match self {
            Select { .. } => Instruction::Select,
            GetResponse { .. } => Instruction::GetResponse,
            GetCardInfo { .. } => Instruction::GetCardInfo,
            RequestUpdatePermission { .. } => Instruction::RequestUpdatePermission,
            GetTransferKey { .. } => Instruction::GetTransferKey,
            UpdateTransferKey { .. } => Instruction::UpdateTransferKey,
            BeginReceive { .. } => Instruction::BeginReceive,
            Debit { .. } => Instruction::Debit,
            Credit { .. } | CreditSigned { .. } => Instruction::Credit,
            Confirm { .. } => Instruction::Confirm,
            Abort { .. } => Instruction::Abort,
            Refund { .. } => Instruction::Refund,
            PutPolicy { .. } => Instruction::PutPolicy,
            GetPolicy => Instruction::GetPolicy,
            ExportLog { .. } => Instruction::ExportLog,
            GetFactoryData => Instruction::GetFactoryData,
            InternalAuthenticate { .. } | AuthenticateIssued { .. } => Instruction::InternalAuthenticate,
            PersoStore { .. } => Instruction::PersoStore,
            GenerateKeyPair { .. } => Instruction::GenerateKeyPair,
            Lock => Instruction::Lock,
        }
    }

    /// Encode as one (possibly long) APDU; the transport splits it into a chain where needed.
    pub fn to_apdu(&self) -> CommandApdu {
        use Command::*;
        let ins = self.instruction();
        let (mut p1, mut p2) = (0u8, 0u8);
        let mut d = Vec::new();
        match self {
            Select { aid } => {
                p1 = 0x04;
                d.extend_from_slice(aid);
            }
            GetResponse { .. } | Lock | GetPolicy => {}
            PutPolicy { policy } => d.extend_from_slice(policy),
            GetFactoryData => (p1, p2) = (0xBF, 0x21),
            InternalAuthenticate { data } => {
                p2 = crate::crypto::scp11::KEY_ID_SCP11B;
                d.extend_from_slice(data);
            }
            ExportLog { challenge } => d.extend_from_slice(challenge),
            AuthenticateIssued { challenge } => {
                p2 = KEY_ID_CARD_LOG;
                d.extend_from_slice(challenge);
            }
            GenerateKeyPair { serial } => d.extend_from_slice(&serial.0),
            GetCardInfo { certificate } => p1 = if *certificate { 0x00 } else { 0x01 },
            RequestUpdatePermission { path, sender_certificate } => {
                p1 = *path as u8;
                d.extend_from_slice(sender_certificate);
            }
            GetTransferKey { path, challenge, receiver, receiver_certificate } => {
                p1 = *path as u8;
                d.extend_from_slice(challenge);
                d.extend_from_slice(&receiver.0);
                d.extend_from_slice(receiver_certificate);
            }
            UpdateTransferKey { path, payload } => {
                p1 = *path as u8;
                payload.encode(&mut d);
            }
            BeginReceive { payer, amount, payer_sequence } => {
                d.extend_from_slice(&payer.0);
                d.extend_from_slice(&amount.0.to_be_bytes());
                d.extend_from_slice(&payer_sequence.to_be_bytes());
            }
            Debit { payee, amount, nonce, payee_sequence, request } => {
                d.extend_from_slice(&payee.0);
                d.extend_from_slice(&amount.0.to_be_bytes());
                d.extend_from_slice(nonce);
                d.extend_from_slice(&payee_sequence.to_be_bytes());
                d.extend_from_slice(request);
            }
            Credit { receipt, payer_sequence, token } => {
                receipt.encode(&mut d);
                d.extend_from_slice(&payer_sequence.to_be_bytes());
                d.extend_from_slice(token);
            }
            CreditSigned { receipt, payer_sequence, token, signature, certificate } => {
                p1 = 0x01;
                receipt.encode(&mut d);
                d.extend_from_slice(&payer_sequence.to_be_bytes());
                d.extend_from_slice(token);
                d.extend_from_slice(signature);
                d.extend_from_slice(certificate);
            }
            Confirm { nonce, ack } => {
                d.extend_from_slice(nonce);
                d.extend_from_slice(ack);
            }
            Abort { receipt } => receipt.encode(&mut d),
            Refund { nonce, proof } => {
                d.extend_from_slice(nonce);
                d.extend_from_slice(proof);
            }
            PersoStore { item, data } => {
                p1 = *item as u8;
                d.extend_from_slice(data);
            }
        }
        let le = match self {
            GetResponse { le } => Some(*le),
            _ => Some(256),
        };
        CommandApdu { cla: ins.cla(), ins: ins.code(), p1, p2, data: d, le }
    }

    /// Decode a (reassembled) command APDU. Each fault is its own [`DecodeError`], whose status word is
    /// ISO/IEC 7816-4's specific one: unknown class 6E00, unknown instruction 6D00, bad P1-P2 6A86, bad
    /// length 6700, a field the protocol does not allow 6A80 (house rule 1).
    pub fn from_apdu(a: &CommandApdu) -> Result<Self, DecodeError> {
        let cla = a.cla & !super::apdu::CLA_CHAINING;
        if cla != CLA_ISO && cla != CLA_PROPRIETARY {
            return Err(DecodeError::Class { cla: a.cla });
        }
        let ins = match Instruction::from_code(cla, a.ins) {
            Some(i) => i,
            None if Instruction::ALL.iter().any(|i| i.code() == a.ins) => {
                return Err(DecodeError::Class { cla: a.cla });
            }
            None => return Err(DecodeError::Instruction { ins: a.ins }),
        };
        let bad_p1p2 = DecodeError::Parameters { p1: a.p1, p2: a.p2 };
        let p1p2_zero = || if a.p1 == 0 && a.p2 == 0 { Ok(()) } else { Err(bad_p1p2.clone()) };
        let mut r = Reader::new(&a.data);
        let cmd = match ins {
            Instruction::Select => {
                if a.p1 != 0x04 || (a.p2 != 0x00 && a.p2 != 0x0C) {
                    return Err(bad_p1p2);
                }
                if a.data.is_empty() || a.data.len() > 16 {
                    return Err(DecodeError::Length { field: "AID", why: "1 to 16 bytes (ISO/IEC 7816-5)" });
                }
                Command::Select { aid: r.rest().to_vec() }
            }
            Instruction::GetResponse => {
                p1p2_zero()?;
                Command::GetResponse { le: a.le.unwrap_or(256) }
            }
            Instruction::GetCardInfo => {
                let certificate = match (a.p1, a.p2) {
                    (0x00, 0x00) => true,
                    (0x01, 0x00) => false,
                    _ => return Err(bad_p1p2),
                };
                Command::GetCardInfo { certificate }
            }
            Instruction::GetFactoryData => {
                if (a.p1, a.p2) != (0xBF, 0x21) {
                    return Err(bad_p1p2);
                }
                Command::GetFactoryData
            }
            Instruction::InternalAuthenticate => match (a.p1, a.p2) {
                (0, crate::crypto::scp11::KEY_ID_SCP11B) => {
                    Command::InternalAuthenticate { data: r.rest_capped("key agreement data", 255)?.to_vec() }
                }
                (0, KEY_ID_CARD_LOG) => Command::AuthenticateIssued { challenge: r.array("challenge")? },
                _ => return Err(bad_p1p2),
            },
            Instruction::RequestUpdatePermission => {
                let path = KeyRollPath::from_p1p2(a.p1, a.p2)?;
                let sender_certificate = r.rest().to_vec();
                if (path == KeyRollPath::Symmetric) != sender_certificate.is_empty() {
                    return Err(DecodeError::Length {
                        field: "sender certificate",
                        why: "present on the public-key path only",
                    });
                }
                Command::RequestUpdatePermission { path, sender_certificate }
            }
            Instruction::GetTransferKey => {
                let path = KeyRollPath::from_p1p2(a.p1, a.p2)?;
                let challenge = r.array("challenge")?;
                let receiver = CardSerial(r.array("receiver")?);
                let receiver_certificate = r.rest().to_vec();
                if (path == KeyRollPath::Symmetric) != receiver_certificate.is_empty() {
                    return Err(DecodeError::Length {
                        field: "receiver certificate",
                        why: "present on the public-key path only",
                    });
                }
                Command::GetTransferKey { path, challenge, receiver, receiver_certificate }
            }
            Instruction::UpdateTransferKey => {
                let path = KeyRollPath::from_p1p2(a.p1, a.p2)?;
                Command::UpdateTransferKey { path, payload: KeyPayload::read(&mut r, path)? }
            }
            Instruction::BeginReceive => {
                p1p2_zero()?;
                Command::BeginReceive {
                    payer: CardSerial(r.array("payer")?),
                    amount: Amount(r.u64("amount")?),
                    payer_sequence: r.u32("payer sequence")?,
                }
            }
            Instruction::Debit => {
                p1p2_zero()?;
                Command::Debit {
                    payee: CardSerial(r.array("payee")?),
                    amount: Amount(r.u64("amount")?),
                    nonce: r.array("nonce")?,
                    payee_sequence: r.u32("payee sequence")?,
                    request: r.array("request")?,
                }
            }
            Instruction::Credit => {
                let (receipt, payer_sequence, token) = match (a.p1, a.p2) {
                    (0x00 | 0x01, 0x00) => (ReceiptRef::read(&mut r, ())?, r.u32("payer sequence")?, r.array("token")?),
                    _ => return Err(bad_p1p2),
                };
                if a.p1 == 0x00 {
                    Command::Credit { receipt, payer_sequence, token }
                } else {
                    let signature = r.array("value signature")?;
                    let certificate = r.rest_capped("payer certificate", MAX_PAYER_CERTIFICATE)?.to_vec();
                    if certificate.is_empty() {
                        return Err(DecodeError::Invalid { field: "payer certificate", why: "missing" });
                    }
                    Command::CreditSigned { receipt, payer_sequence, token, signature, certificate }
                }
            }
            Instruction::Confirm => {
                p1p2_zero()?;
                Command::Confirm { nonce: r.array("nonce")?, ack: r.array("ack")? }
            }
            Instruction::Abort => {
                p1p2_zero()?;
                Command::Abort { receipt: ReceiptRef::read(&mut r, ())? }
            }
            Instruction::Refund => {
                p1p2_zero()?;
                Command::Refund { nonce: r.array("nonce")?, proof: r.array("proof")? }
            }
            Instruction::PutPolicy => {
                p1p2_zero()?;
                Command::PutPolicy { policy: r.rest_capped("policy", super::policy::Policy::MAX_LEN)?.to_vec() }
            }
            Instruction::GetPolicy => {
                p1p2_zero()?;
                Command::GetPolicy
            }
            Instruction::ExportLog => {
                p1p2_zero()?;
                Command::ExportLog { challenge: r.array("challenge")? }
            }
            Instruction::PersoStore => {
                if a.p2 != 0 {
                    return Err(bad_p1p2);
                }
                let item = PersoItem::from_p1(a.p1).ok_or(bad_p1p2)?;
                Command::PersoStore { item, data: r.rest_capped("item", MAX_COMMAND_DATA)?.to_vec() }
            }
            Instruction::GenerateKeyPair => {
                p1p2_zero()?;
                Command::GenerateKeyPair { serial: CardSerial(r.array("serial")?) }
            }
            Instruction::Lock => {
                p1p2_zero()?;
                Command::Lock
            }
        };
        r.finish()?;
        Ok(cmd)
    }
}

impl TryFrom<&CommandApdu> for Command {
    type Error = StatusWord;

    /// [`Command::from_apdu`], answering the fault's status word (what the card sends back).
    fn try_from(a: &CommandApdu) -> Result<Self, StatusWord> {
        Command::from_apdu(a).map_err(|e| e.status_word())
    }
}

impl Wire for Command {
    type Context = ();

    /// The whole command APDU (ISO/IEC 7816-4 §5.1), short or extended as its length needs.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_apdu().to_bytes());
    }

    /// One command APDU: everything left in `r`.
    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        Command::from_apdu(&CommandApdu::parse(r.rest())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_status_for_each_fault() {
        let apdu = |cla, ins, p1, p2, data: Vec<u8>| CommandApdu { cla, ins, p1, p2, data, le: None };
        assert_eq!(Command::try_from(&apdu(0x80, 0x99, 0, 0, vec![])), Err(StatusWord::InsNotSupported));
        assert_eq!(Command::try_from(&apdu(0x40, 0x10, 0, 0, vec![])), Err(StatusWord::ClaNotSupported));
        assert_eq!(Command::try_from(&apdu(0x00, 0x10, 0, 0, vec![])), Err(StatusWord::ClaNotSupported));
        assert_eq!(Command::try_from(&apdu(0x80, 0x10, 2, 0, vec![])), Err(StatusWord::IncorrectP1P2));
        assert_eq!(Command::try_from(&apdu(0x80, 0x20, 2, 0, vec![])), Err(StatusWord::IncorrectP1P2));
        assert_eq!(Command::try_from(&apdu(0x80, 0x10, 0, 0, vec![1])), Err(StatusWord::WrongLength));
        assert_eq!(Command::try_from(&apdu(0x80, 0x38, 0, 0, vec![1; 15])), Err(StatusWord::WrongLength));
        assert_eq!(Command::try_from(&apdu(0x80, 0x54, 0x77, 0, vec![])), Err(StatusWord::IncorrectP1P2));
        // Each decoding fault names what was wrong.
        assert_eq!(
            Command::from_apdu(&apdu(0x80, 0x38, 0, 0, vec![1; 15])),
            Err(DecodeError::Truncated { field: "amount", needed: 8, left: 7 })
        );
        assert_eq!(Command::from_apdu(&apdu(0x80, 0x38, 0, 0, vec![1; 25])), Err(DecodeError::Trailing(1)));
        let bad_tags = [0x91, 1, 0, 0x90, 1, 0].to_vec();
        assert_eq!(
            Command::from_apdu(&apdu(0x80, 0x24, 1, 0, bad_tags)),
            Err(DecodeError::Invalid { field: "ciphertext", why: "expected tag 90" })
        );
        assert_eq!(
            Command::try_from(&apdu(0x80, 0x24, 1, 0, [0x91, 1, 0, 0x90, 1, 0].to_vec())),
            Err(StatusWord::IncorrectData)
        );
    }
}
