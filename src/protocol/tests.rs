//! House rule 2: every wire type round-trips, every variant of it; decoders refuse trailing bytes and
//! name the field that is missing.

use super::codec::{DecodeError, Wire};
use super::command::{Command, KeyBytes, KeyPayload, KeyRollPath, PersoItem, ReceiptRef};
use super::info::{CardInfo, LifeCycle, PendingEntry};
use super::instruction::Instruction;
use super::perso::PersoPayload;
use super::response::*;
use crate::domain::{Amount, CardSerial, Profile, TransferKeyId, TransferKeyIdLimit, UpdateKeyId};
use std::fmt::Debug;

/// `v` encodes, decodes to itself, and refuses one more byte and one byte less (when it has any).
fn round_trip<T: Wire + PartialEq + Debug>(v: &T, context: T::Context) {
    let bytes = v.to_wire();
    assert_eq!(&T::from_wire(&bytes, context).unwrap(), v);
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(T::from_wire(&longer, context).is_err() || accepts_tail(v), "{v:?} accepted a trailing byte");
    if !bytes.is_empty() {
        // One byte short is never the same value (a fixed field truncated, or a shorter open field).
        assert_ne!(T::from_wire(&bytes[..bytes.len() - 1], context).as_ref().ok(), Some(v));
    }
}

/// Types whose last field runs to the end of the data (an envelope, a DER certificate, sealed bytes, an
/// APDU's Le): there one more byte is a different value, not trailing garbage. The TLV-coded CardInfo
/// skips unknown items, and a stray byte is an incomplete item.
fn accepts_tail<T: Debug>(v: &T) -> bool {
    let s = format!("{v:?}");
    [
        "envelope",
        "TrustAnchor",
        "CardCertificate",
        "attestation",
        "Select",
        "RequestUpdatePermission",
        "GetTransferKey",
        // A signed policy as relayed: the card verifies it whole (`protocol::policy::Policy`).
        "Policy([",
        "PutPolicy",
        "HeldPolicy(",
    ]
    .iter()
    .any(|k| s.contains(k))
}

fn receipt_ref() -> ReceiptRef {
    ReceiptRef {
        payer: CardSerial::from_u64(43),
        amount: Amount(5),
        receipt: 7,
        transfer_key_id: crate::domain::TransferKeyId(2),
    }
}

pub(crate) fn every_command() -> Vec<Command> {
    let s = CardSerial::from_u64(42);
    vec![
        Command::Select { aid: super::AID.to_vec() },
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
            payload: KeyPayload::Symmetric {
                sender: s,
                update_key_id: UpdateKeyId(3),
                authorisation: vec![0x41; 146],
                envelope: vec![9; 36],
            },
        },
        Command::UpdateTransferKey {
            path: KeyRollPath::PublicKey,
            payload: KeyPayload::PublicKey {
                ciphertext: vec![1; 200],
                signature: vec![2; 70],
                authorisation: vec![0x41; 146],
            },
        },
        Command::BeginReceive { payer: s, amount: Amount(5), payer_sequence: 2 },
        Command::Debit { payee: s, amount: Amount(5), nonce: [3; 16], payee_sequence: 7, request: [9; 16] },
        Command::Credit { receipt: receipt_ref(), payer_sequence: 8, token: [4; 16] },
        Command::CreditSigned {
            receipt: receipt_ref(),
            payer_sequence: 8,
            token: [4; 16],
            signature: [7; 64],
            certificate: vec![0x30; 400],
        },
        Command::Confirm { nonce: [3; 16], ack: [5; 16] },
        Command::Abort { receipt: receipt_ref() },
        Command::Refund { nonce: [3; 16], proof: [6; 16] },
        Command::PutPolicy { policy: vec![0x50; 3393] },
        Command::GetPolicy,
        Command::ExportLog { challenge: [0xE1; 16] },
        Command::GetFactoryData,
        Command::InternalAuthenticate { data: vec![0xA6; 83] },
        Command::AuthenticateIssued { challenge: [0x5C; 16] },
        Command::PersoStore { item: PersoItem::Balance, data: vec![8; 16] },
        Command::PersoStore { item: PersoItem::Serial, data: s.0.to_vec() },
        Command::GenerateKeyPair { serial: s },
        Command::Lock,
    ]
}

#[test]
fn every_command_round_trips_and_every_instruction_has_one() {
    let all = every_command();
    for c in &all {
        // Through the APDU the transport sends and the card decodes ...
        let back = Command::try_from(&super::CommandApdu::parse(&c.to_apdu().to_bytes()).unwrap()).unwrap();
        assert_eq!(&back, c);
        // ... and through the Wire trait.
        assert_eq!(&Command::from_wire(&c.to_wire(), ()).unwrap(), c);
    }
    for ins in Instruction::ALL {
        assert!(all.iter().any(|c| c.instruction() == ins), "no command of {ins:?} is round-tripped");
    }
    for item in PersoItem::ALL {
        assert_eq!(PersoItem::from_p1(item as u8), Some(item));
    }
}

pub(crate) fn every_perso_payload() -> Vec<PersoPayload> {
    vec![
        PersoPayload::Profile(Profile::Symmetric),
        PersoPayload::Profile(Profile::MultiKey),
        PersoPayload::TransferKey { id: TransferKeyId(4), key: KeyBytes([1; 16]), authorisation: vec![0x41; 146] },
        PersoPayload::TransferKey { id: TransferKeyId(5), key: KeyBytes([1; 16]), authorisation: vec![] },
        PersoPayload::UpdateKey { id: UpdateKeyId(2), key: KeyBytes([2; 16]), authorisation: vec![0x41; 146] },
        PersoPayload::SchemeKey(vec![4; 65]),
        PersoPayload::Policy(vec![0x50; 151]),
        PersoPayload::TransferKeyIdLimit(TransferKeyIdLimit(9)),
        PersoPayload::Balance { initial: Amount(10), max: Amount(1000) },
        PersoPayload::SelectedTransferKey(TransferKeyId(3)),
        PersoPayload::TrustAnchor(vec![0x30; 300]),
        PersoPayload::CardCertificate(vec![0x30; 400]),
        PersoPayload::Serial(CardSerial::from_u64(77)),
        PersoPayload::LogKey(KeyBytes([3; 16])),
    ]
}

#[test]
fn every_perso_item_round_trips() {
    let all = every_perso_payload();
    for p in &all {
        round_trip(p, p.item());
    }
    for item in PersoItem::ALL {
        assert!(all.iter().any(|p| p.item() == item), "no payload of {item:?} is round-tripped");
    }
    // Values the protocol does not allow are named; keys never show in Debug.
    assert_eq!(
        PersoPayload::from_wire(&[0; 20], PersoItem::TransferKey),
        Err(DecodeError::Invalid { field: "key id", why: "0 is not a key identifier" })
    );
    assert_eq!(
        PersoPayload::from_wire(&[0, 0, 0, 1, 7], PersoItem::UpdateKey),
        Err(DecodeError::Truncated { field: "update key", needed: 16, left: 1 })
    );
    assert!(PersoPayload::from_wire(&[0xEE], PersoItem::Profile).is_err());
    let shown = format!(
        "{:?}",
        PersoPayload::TransferKey { id: TransferKeyId(4), key: KeyBytes([0xA5; 16]), authorisation: vec![] }
    );
    assert!(!shown.contains("165"), "{shown}");
    let big = vec![0x30; super::apdu::MAX_COMMAND_DATA + 1];
    assert!(matches!(
        PersoPayload::from_wire(&big, PersoItem::CardCertificate),
        Err(DecodeError::TooLong { field: "card certificate", .. })
    ));
}

#[test]
fn every_response_round_trips() {
    round_trip(&Empty, ());
    assert_eq!(Empty::from_wire(&[1], ()), Err(DecodeError::Trailing(1)));
    round_trip(&UpdatePermission { challenge: [7; 16] }, ());
    round_trip(
        &ReceiveRequest { nonce: [1; 16], payee_sequence: 3, transfer_key_id: TransferKeyId(2), request: [4; 16] },
        (),
    );
    round_trip(&DebitToken { payer_sequence: 9, token: [5; 16], signature: None }, ());
    round_trip(&DebitToken { payer_sequence: 9, token: [5; 16], signature: Some([3; 64]) }, ());
    assert_eq!(DebitToken { payer_sequence: 9, token: [5; 16], signature: Some([3; 64]) }.to_wire().len(), 84);
    // Anything but 20 or 84 bytes is refused.
    assert!(DebitToken::from_wire(&[0; 21], ()).is_err());
    assert!(DebitToken::from_wire(&[0; 85], ()).is_err());
    round_trip(&CreditAck { ack: [6; 16] }, ());
    round_trip(&AbortProof { proof: [8; 16] }, ());
    round_trip(&PolicyAdoption { adopted: true, number: 7 }, ());
    round_trip(&PolicyAdoption { adopted: false, number: 0 }, ());
    round_trip(&HeldPolicy(vec![0x50; 1015]), ());
    round_trip(&HeldPolicy(vec![]), ());
    assert!(PolicyAdoption::from_wire(&[2, 0, 0, 0, 1], ()).is_err());
    round_trip(
        &FactoryCredentials {
            chip_id: crate::domain::ChipId([3; 8]),
            agreement_certificate: vec![0x30; 300],
            attestation_certificate: vec![0x31; 301],
        },
        (),
    );
    let mut too_long = vec![0u8; 8];
    too_long.extend_from_slice(&4000u16.to_be_bytes());
    assert!(matches!(FactoryCredentials::from_wire(&too_long, ()), Err(DecodeError::TooLong { .. })));
    let mut sec1 = [0x11; PUBLIC_KEY_LEN];
    sec1[0] = 0x04;
    round_trip(&GeneratedPublicKey { sec1, attestation: vec![0x30; 70] }, ());
    assert_eq!(GeneratedPublicKey::from_wire(&sec1, ()).unwrap().attestation, Vec::<u8>::new());
    let mut long_sig = sec1.to_vec();
    long_sig.extend_from_slice(&[0x30; 73]);
    assert!(GeneratedPublicKey::from_wire(&long_sig, ()).is_err(), "attestation longer than any P-256 signature");
    sec1[0] = 0x02;
    assert!(GeneratedPublicKey::from_wire(&sec1, ()).is_err(), "compressed or garbage point");
    // GET TRANSFER KEY's answer, both paths.
    for payload in [
        KeyPayload::Symmetric {
            sender: CardSerial::from_u64(5),
            update_key_id: UpdateKeyId(1),
            authorisation: vec![0x41; 146],
            envelope: vec![3; 52],
        },
        KeyPayload::PublicKey { ciphertext: vec![1; 150], signature: vec![2; 71], authorisation: vec![0x41; 146] },
    ] {
        round_trip(&payload, payload.path());
    }
    let pk = KeyPayload::PublicKey { ciphertext: vec![1; 3], signature: vec![2; 3], authorisation: vec![] }.to_wire();
    assert!(KeyPayload::from_wire(&pk, KeyRollPath::Symmetric).is_err(), "10 bytes are no symmetric payload");
    let mut trailing = pk.clone();
    trailing.push(0);
    assert_eq!(KeyPayload::from_wire(&trailing, KeyRollPath::PublicKey), Err(DecodeError::Trailing(1)));
    // The DEBIT answer names the missing field.
    assert_eq!(
        DebitToken::from_wire(&[0, 0, 0, 1, 2, 3], ()),
        Err(DecodeError::Truncated { field: "token", needed: 16, left: 2 })
    );
}

#[test]
fn card_info_round_trips_in_every_shape() {
    let entry = |n: u8| PendingEntry {
        nonce: [n; 16],
        counterpart: CardSerial::from_u64(n as u64),
        amount: Amount(3),
        payee_sequence: 4,
        transfer_key_id: TransferKeyId(1),
        exception: n % 2 == 0,
    };
    let full = CardInfo {
        serial: CardSerial::from_u64(7),
        life_cycle: LifeCycle::Issued,
        profile: Some(Profile::MultiKey),
        transfer_key_id: Some(TransferKeyId(2)),
        stored_transfer_key_ids: vec![TransferKeyId(1), TransferKeyId(2)],
        update_key_id: Some(UpdateKeyId(1)),
        transfer_key_id_limit: Some(TransferKeyIdLimit(9)),
        balance: Amount(100),
        max_balance: Amount(1000),
        sequence: 12,
        pending_out: vec![entry(1)],
        pending_in: vec![entry(2), entry(3)],
        certificate: Some(vec![0x30; 500]),
        has_certificate: true,
        chip_id: Some(crate::domain::ChipId([6; 8])),
        policy_number: 3,
        min_wrap_update_key_id: UpdateKeyId(2),
        clock_floor: 1_800_000_000,
    };
    let short = CardInfo { certificate: None, ..full.clone() };
    let blank = CardInfo::blank();
    for info in [&full, &short, &blank] {
        assert_eq!(&CardInfo::from_wire(&info.to_wire(), ()).unwrap(), info);
    }
    round_trip(&entry(4), ());
    assert_eq!(
        CardInfo::from_wire(&[0x80, 8, 0, 0, 0, 0, 0, 0, 0, 1], ()),
        Err(DecodeError::Invalid { field: "life cycle", why: "missing" })
    );
    assert_eq!(
        CardInfo::from_wire(&[0x80, 7, 0, 0, 0, 0, 0, 0, 0], ()),
        Err(DecodeError::Truncated { field: "serial", needed: 8, left: 7 })
    );
}

#[test]
fn signed_credit_is_p1_01_and_refuses_what_it_cannot_be() {
    use super::CommandApdu;
    use super::status::StatusWord;
    let signed = Command::CreditSigned {
        receipt: receipt_ref(),
        payer_sequence: 8,
        token: [4; 16],
        signature: [7; 64],
        certificate: vec![0x30; 400],
    };
    let apdu = signed.to_apdu();
    assert_eq!((apdu.ins, apdu.p1, apdu.p2, apdu.data.len()), (0x34, 0x01, 0x00, 44 + 64 + 400));
    // One extended-length APDU (ISO/IEC 7816-4 §5.1): header, 00, Lc (2), data, Le (2).
    let bytes = apdu.to_bytes();
    assert_eq!((bytes[4], u16::from_be_bytes([bytes[5], bytes[6]])), (0, 508));
    let with = |p1: u8, data: Vec<u8>| CommandApdu { cla: 0x80, ins: 0x34, p1, p2: 0, data, le: None };
    // No certificate, an oversized one, a short signature, an unknown P1 or P2.
    assert!(Command::try_from(&with(1, apdu.data[..44 + 64].to_vec())).is_err());
    assert!(Command::try_from(&with(1, vec![1; 44 + 64 + super::command::MAX_PAYER_CERTIFICATE + 1])).is_err());
    assert!(Command::try_from(&with(1, apdu.data[..44 + 63].to_vec())).is_err());
    assert_eq!(Command::try_from(&with(2, apdu.data.clone())), Err(StatusWord::IncorrectP1P2));
    let mut p2 = with(1, apdu.data.clone());
    p2.p2 = 1;
    assert_eq!(Command::try_from(&p2), Err(StatusWord::IncorrectP1P2));
    // The unsigned form keeps its exact 44 bytes.
    assert!(Command::try_from(&with(0, apdu.data.clone())).is_err());
    assert!(Command::try_from(&with(0, apdu.data[..44].to_vec())).is_ok());
}
