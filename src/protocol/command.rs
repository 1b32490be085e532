//! Typed commands: every keyroll command as a Rust value that encodes to a [`CommandApdu`] and decodes
//! from one (opcard-rs style `TryFrom`). A decoding failure carries the exact ISO status word to answer.

use super::CHALLENGE_LEN;
use super::apdu::CommandApdu;
use super::codec::{DecodeError, Reader};
use super::instruction::{CLA_ISO, CLA_PROPRIETARY, Instruction};
use super::status::StatusWord;
use crate::domain::{Amount, CardSerial, UpdateKeyId};

pub type Challenge = [u8; CHALLENGE_LEN];
pub type Nonce = [u8; CHALLENGE_LEN];
pub type Mac = [u8; 16];

/// Which roll-forward path a key-roll command belongs to (P1 of the three key-roll commands).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyRollPath {
    /// Claims 2, 6, 9, 11, 15: envelope under the shared update key.
    Symmetric = 0x00,
    /// Claims 4, 7, 13, 16: ECIES to the receiver's certified key, ECDSA by the sender.
    PublicKey = 0x01,
}

impl KeyRollPath {
    fn from_p1(p1: u8) -> Result<Self, StatusWord> {
        match p1 {
            0x00 => Ok(KeyRollPath::Symmetric),
            0x01 => Ok(KeyRollPath::PublicKey),
            _ => Err(StatusWord::IncorrectP1P2),
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
}

impl PersoItem {
    pub const ALL: [PersoItem; 9] = [
        PersoItem::Profile,
        PersoItem::TransferKey,
        PersoItem::UpdateKey,
        PersoItem::TransferKeyIdLimit,
        PersoItem::Balance,
        PersoItem::SelectedTransferKey,
        PersoItem::TrustAnchor,
        PersoItem::CardCertificate,
        PersoItem::Serial,
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
    Credit {
        nonce: Nonce,
        payer_sequence: u32,
        token: Mac,
    },
    Confirm {
        nonce: Nonce,
        ack: Mac,
    },
    Abort {
        nonce: Nonce,
    },
    Refund {
        nonce: Nonce,
        proof: Mac,
    },
    /// GET DATA of the factory credentials (`80 CA BF 21`): chip id and both factory certificates.
    GetFactoryData,
    /// SCP11b key agreement (GP Amendment F §7.6, `80 88 00 13`): the line's control reference
    /// template and ephemeral key ([`crate::crypto::scp11`]).
    InternalAuthenticate {
        data: Vec<u8>,
    },
    /// One personalisation item's plaintext; sent only under secure messaging (CLA 84), which encrypts
    /// and MACs it (the card refuses it in the clear).
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

/// What UPDATE TRANSFER KEY carries, by path.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum KeyPayload {
    Symmetric { sender: CardSerial, update_key_id: UpdateKeyId, envelope: Vec<u8> },
    PublicKey { ciphertext: Vec<u8>, signature: Vec<u8> },
}

/// TLV tags inside public-key key-roll data.
pub mod tag {
    pub const CIPHERTEXT: u8 = 0x90;
    pub const SIGNATURE: u8 = 0x91;
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
            Credit { .. } => Instruction::Credit,
            Confirm { .. } => Instruction::Confirm,
            Abort { .. } => Instruction::Abort,
            Refund { .. } => Instruction::Refund,
            GetFactoryData => Instruction::GetFactoryData,
            InternalAuthenticate { .. } => Instruction::InternalAuthenticate,
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
            GetResponse { .. } | Lock => {}
            GenerateKeyPair { serial } => d.extend_from_slice(&serial.0),
            GetFactoryData => (p1, p2) = (0xBF, 0x21),
            InternalAuthenticate { data } => {
                p2 = crate::crypto::scp11::KEY_ID_SCP11B;
                d.extend_from_slice(data);
            }
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
                match payload {
                    KeyPayload::Symmetric { sender, update_key_id, envelope } => {
                        d.extend_from_slice(&sender.0);
                        d.extend_from_slice(&update_key_id.0.to_be_bytes());
                        d.extend_from_slice(envelope);
                    }
                    KeyPayload::PublicKey { ciphertext, signature } => {
                        super::codec::put_tlv(&mut d, tag::CIPHERTEXT, ciphertext);
                        super::codec::put_tlv(&mut d, tag::SIGNATURE, signature);
                    }
                }
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
            Credit { nonce, payer_sequence, token } => {
                d.extend_from_slice(nonce);
                d.extend_from_slice(&payer_sequence.to_be_bytes());
                d.extend_from_slice(token);
            }
            Confirm { nonce, ack } => {
                d.extend_from_slice(nonce);
                d.extend_from_slice(ack);
            }
            Abort { nonce } => d.extend_from_slice(nonce),
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
}

fn bad(_: DecodeError) -> StatusWord {
    StatusWord::WrongLength
}

impl TryFrom<&CommandApdu> for Command {
    type Error = StatusWord;

    /// Decode, answering ISO/IEC 7816-4's specific status for each fault: unknown class 6E00, unknown
    /// instruction 6D00, bad P1-P2 6A86, bad length 6700 (house rule 1).
    fn try_from(a: &CommandApdu) -> Result<Self, StatusWord> {
        let cla = a.cla & !super::apdu::CLA_CHAINING;
        if cla != CLA_ISO && cla != CLA_PROPRIETARY {
            return Err(StatusWord::ClaNotSupported);
        }
        let ins = match Instruction::from_code(cla, a.ins) {
            Some(i) => i,
            None if Instruction::ALL.iter().any(|i| i.code() == a.ins) => return Err(StatusWord::ClaNotSupported),
            None => return Err(StatusWord::InsNotSupported),
        };
        let p1p2_zero = || if a.p1 == 0 && a.p2 == 0 { Ok(()) } else { Err(StatusWord::IncorrectP1P2) };
        let mut r = Reader::new(&a.data);
        let cmd = match ins {
            Instruction::Select => {
                if a.p1 != 0x04 || (a.p2 != 0x00 && a.p2 != 0x0C) {
                    return Err(StatusWord::IncorrectP1P2);
                }
                if a.data.is_empty() || a.data.len() > 16 {
                    return Err(StatusWord::WrongLength);
                }
                return Ok(Command::Select { aid: a.data.clone() });
            }
            Instruction::GetResponse => {
                p1p2_zero()?;
                return Ok(Command::GetResponse { le: a.le.unwrap_or(256) });
            }
            Instruction::GetCardInfo => {
                let certificate = match (a.p1, a.p2) {
                    (0x00, 0x00) => true,
                    (0x01, 0x00) => false,
                    _ => return Err(StatusWord::IncorrectP1P2),
                };
                Command::GetCardInfo { certificate }
            }
            Instruction::GetFactoryData => {
                if (a.p1, a.p2) != (0xBF, 0x21) {
                    return Err(StatusWord::IncorrectP1P2);
                }
                Command::GetFactoryData
            }
            Instruction::InternalAuthenticate => {
                if a.p1 != 0 || a.p2 != crate::crypto::scp11::KEY_ID_SCP11B {
                    return Err(StatusWord::IncorrectP1P2);
                }
                Command::InternalAuthenticate { data: r.rest().to_vec() }
            }
            Instruction::RequestUpdatePermission => {
                if a.p2 != 0 {
                    return Err(StatusWord::IncorrectP1P2);
                }
                let path = KeyRollPath::from_p1(a.p1)?;
                let sender_certificate = r.rest().to_vec();
                if (path == KeyRollPath::Symmetric) != sender_certificate.is_empty() {
                    return Err(StatusWord::WrongLength);
                }
                Command::RequestUpdatePermission { path, sender_certificate }
            }
            Instruction::GetTransferKey => {
                if a.p2 != 0 {
                    return Err(StatusWord::IncorrectP1P2);
                }
                let path = KeyRollPath::from_p1(a.p1)?;
                let challenge = r.array("challenge").map_err(bad)?;
                let receiver = CardSerial(r.array("receiver").map_err(bad)?);
                let receiver_certificate = r.rest().to_vec();
                if (path == KeyRollPath::Symmetric) != receiver_certificate.is_empty() {
                    return Err(StatusWord::WrongLength);
                }
                Command::GetTransferKey { path, challenge, receiver, receiver_certificate }
            }
            Instruction::UpdateTransferKey => {
                if a.p2 != 0 {
                    return Err(StatusWord::IncorrectP1P2);
                }
                let path = KeyRollPath::from_p1(a.p1)?;
                let payload = match path {
                    KeyRollPath::Symmetric => KeyPayload::Symmetric {
                        sender: CardSerial(r.array("sender").map_err(bad)?),
                        update_key_id: UpdateKeyId(r.u32("update key id").map_err(bad)?),
                        envelope: r.rest().to_vec(),
                    },
                    KeyRollPath::PublicKey => {
                        let (t1, ct) = r.tlv().map_err(bad)?;
                        let (t2, sig) = r.tlv().map_err(bad)?;
                        if t1 != tag::CIPHERTEXT || t2 != tag::SIGNATURE {
                            return Err(StatusWord::IncorrectData);
                        }
                        KeyPayload::PublicKey { ciphertext: ct.to_vec(), signature: sig.to_vec() }
                    }
                };
                Command::UpdateTransferKey { path, payload }
            }
            Instruction::BeginReceive => {
                p1p2_zero()?;
                Command::BeginReceive {
                    payer: CardSerial(r.array("payer").map_err(bad)?),
                    amount: Amount(r.u64("amount").map_err(bad)?),
                    payer_sequence: r.u32("payer sequence").map_err(bad)?,
                }
            }
            Instruction::Debit => {
                p1p2_zero()?;
                Command::Debit {
                    payee: CardSerial(r.array("payee").map_err(bad)?),
                    amount: Amount(r.u64("amount").map_err(bad)?),
                    nonce: r.array("nonce").map_err(bad)?,
                    payee_sequence: r.u32("payee sequence").map_err(bad)?,
                    request: r.array("request").map_err(bad)?,
                }
            }
            Instruction::Credit => {
                p1p2_zero()?;
                Command::Credit {
                    nonce: r.array("nonce").map_err(bad)?,
                    payer_sequence: r.u32("payer sequence").map_err(bad)?,
                    token: r.array("token").map_err(bad)?,
                }
            }
            Instruction::Confirm => {
                p1p2_zero()?;
                Command::Confirm { nonce: r.array("nonce").map_err(bad)?, ack: r.array("ack").map_err(bad)? }
            }
            Instruction::Abort => {
                p1p2_zero()?;
                Command::Abort { nonce: r.array("nonce").map_err(bad)? }
            }
            Instruction::Refund => {
                p1p2_zero()?;
                Command::Refund { nonce: r.array("nonce").map_err(bad)?, proof: r.array("proof").map_err(bad)? }
            }
            Instruction::PersoStore => {
                if a.p2 != 0 {
                    return Err(StatusWord::IncorrectP1P2);
                }
                let item = PersoItem::from_p1(a.p1).ok_or(StatusWord::IncorrectP1P2)?;
                Command::PersoStore { item, data: r.rest().to_vec() }
            }
            Instruction::GenerateKeyPair => {
                p1p2_zero()?;
                Command::GenerateKeyPair { serial: CardSerial(r.array("serial").map_err(bad)?) }
            }
            Instruction::Lock => {
                p1p2_zero()?;
                Command::Lock
            }
        };
        r.finish().map_err(bad)?;
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn every_command() -> Vec<Command> {
        let s = CardSerial::from_u64(42);
        vec![
            Command::Select { aid: super::super::AID.to_vec() },
            Command::GetResponse { le: 256 },
            Command::GetCardInfo { certificate: true },
            Command::GetCardInfo { certificate: false },
            Command::RequestUpdatePermission { path: KeyRollPath::Symmetric, sender_certificate: vec![] },
            Command::RequestUpdatePermission { path: KeyRollPath::PublicKey, sender_certificate: vec![0x30; 300] },
            Command::GetTransferKey {
                path: KeyRollPath::Symmetric,
                challenge: [1; 16],
                receiver: s,
                receiver_certificate: vec![],
            },
            Command::GetTransferKey {
                path: KeyRollPath::PublicKey,
                challenge: [1; 16],
                receiver: s,
                receiver_certificate: vec![0x30; 400],
            },
            Command::UpdateTransferKey {
                path: KeyRollPath::Symmetric,
                payload: KeyPayload::Symmetric { sender: s, update_key_id: UpdateKeyId(3), envelope: vec![9; 36] },
            },
            Command::UpdateTransferKey {
                path: KeyRollPath::PublicKey,
                payload: KeyPayload::PublicKey { ciphertext: vec![1; 200], signature: vec![2; 70] },
            },
            Command::BeginReceive { payer: s, amount: Amount(5), payer_sequence: 2 },
            Command::Debit { payee: s, amount: Amount(5), nonce: [3; 16], payee_sequence: 7, request: [9; 16] },
            Command::Credit { nonce: [3; 16], payer_sequence: 8, token: [4; 16] },
            Command::Confirm { nonce: [3; 16], ack: [5; 16] },
            Command::Abort { nonce: [3; 16] },
            Command::Refund { nonce: [3; 16], proof: [6; 16] },
            Command::GetFactoryData,
            Command::InternalAuthenticate { data: vec![0xA6; 83] },
            Command::PersoStore { item: PersoItem::Balance, data: vec![8; 16] },
            Command::PersoStore { item: PersoItem::Serial, data: s.0.to_vec() },
            Command::GenerateKeyPair { serial: s },
            Command::Lock,
        ]
    }

    #[test]
    fn every_command_round_trips_through_bytes() {
        for c in every_command() {
            let bytes = c.to_apdu().to_bytes();
            let back = Command::try_from(&CommandApdu::parse(&bytes).unwrap()).unwrap();
            assert_eq!(back, c);
        }
        for item in PersoItem::ALL {
            assert_eq!(PersoItem::from_p1(item as u8), Some(item));
        }
    }

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
    }
}
