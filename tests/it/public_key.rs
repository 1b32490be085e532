//! The public-key and hybrid roll-forward (claims 3–7, 12–16, 18) on reference cards, and every
//! rejection with the card's persisted state unchanged.

use crate::support::*;
use keyroll::domain::*;
use keyroll::protocol::ResponseApdu;
use keyroll::protocol::command::{Command, KeyPayload, KeyRollPath, tag};
use keyroll::terminal::{KeyRoll, Role, SettleError, SettleOptions};
use std::time::{Duration, SystemTime};

fn send(card: &mut TestCard, cmd: &Command) -> ResponseApdu {
    let mut ch = keyroll::transport::in_process::InProcessChannel::new(card, "t");
    let mut t = keyroll::transport::Trace::default();
    keyroll::transport::exchange(&mut ch, &mut t, &Command::Select { aid: keyroll::protocol::AID.to_vec() }).unwrap();
    keyroll::transport::exchange(&mut ch, &mut t, cmd).unwrap()
}

/// Like `send` but without re-selecting (keeps the session's challenge — SELECT does too, but be plain).
fn cert_of(card: &TestCard) -> Vec<u8> {
    card.state().certificate.clone().unwrap()
}

fn permission(older: &mut TestCard, sender_cert: Vec<u8>) -> Result<[u8; 16], u16> {
    let r = send(
        older,
        &Command::RequestUpdatePermission { path: KeyRollPath::PublicKey, sender_certificate: sender_cert },
    );
    if r.sw.to_u16() != 0x9000 {
        return Err(r.sw.to_u16());
    }
    Ok(r.data.try_into().unwrap())
}

fn get_key(newer: &mut TestCard, challenge: [u8; 16], receiver: &TestCard) -> Result<KeyPayload, u16> {
    let r = send(
        newer,
        &Command::GetTransferKey {
            path: KeyRollPath::PublicKey,
            challenge,
            receiver: receiver.state().serial.unwrap(),
            receiver_certificate: cert_of(receiver),
        },
    );
    if r.sw.to_u16() != 0x9000 {
        return Err(r.sw.to_u16());
    }
    let mut rd = keyroll::protocol::codec::Reader::new(&r.data);
    let (t1, _) = rd.tlv().unwrap();
    let (t2, _) = rd.tlv().unwrap();
    let (t3, _) = rd.tlv().unwrap();
    assert_eq!((t1, t2, t3), (tag::CIPHERTEXT, tag::SIGNATURE, tag::AUTHORISATION));
    use keyroll::protocol::codec::Wire;
    Ok(KeyPayload::from_wire(&r.data, KeyRollPath::PublicKey).unwrap())
}

fn update(older: &mut TestCard, payload: KeyPayload) -> u16 {
    send(older, &Command::UpdateTransferKey { path: KeyRollPath::PublicKey, payload }).sw.to_u16()
}

fn pair(ca: &TestCa) -> (TestCard, TestCard) {
    (
        pk_card(1, Profile::PublicKey, 1, 0, 5, 100, ca, &ca.root),
        pk_card(2, Profile::PublicKey, 3, 0, 5, 100, ca, &ca.root),
    )
}

#[test]
fn claim4_positive_path_installs_the_newer_key() {
    let ca = TestCa::new("Issuer");
    let (mut older, mut newer) = pair(&ca);
    let r = permission(&mut older, cert_of(&newer)).unwrap();
    let p = get_key(&mut newer, r, &older).unwrap();
    assert_eq!(update(&mut older, p), 0x9000);
    assert_eq!(older.state().current_transfer_key().unwrap(), transfer_key(3));
}

fn assert_permission_refused(older: &mut TestCard, cert: Vec<u8>) {
    let before = persisted(older);
    assert_eq!(permission(older, cert), Err(0x6982));
    assert_eq!(persisted(older), before);
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let ca = TestCa::new("Issuer");
    let other = TestCa::new("Mallory");
    let mut older = pk_card(1, Profile::PublicKey, 1, 0, 5, 100, &ca, &ca.root);
    let foreign = pk_card(2, Profile::PublicKey, 3, 0, 5, 100, &other, &other.root);
    assert_permission_refused(&mut older, cert_of(&foreign));
}

/// DESIGN.md §10 point 5: a card judges certificate time against its clock floor, never a host clock.
/// Expired by the floor is refused; a notBefore after the floor is not judged (the floor is only a
/// lower bound of the time: the certificate may well be valid now).
#[test]
fn certificates_expired_by_the_card_floor_are_refused() {
    use keyroll::authority::ca::{IssuerCa, ValidityPeriod};
    // A root valid since before the cards' factory floor (the tests' cards hold a floor in January 2026).
    let now = SystemTime::now();
    let factory = std::time::UNIX_EPOCH + Duration::from_secs(keyroll::card::policy::FACTORY_FLOOR);
    let validity = ValidityPeriod {
        not_before: factory - Duration::from_secs(86400),
        not_after: now + Duration::from_secs(86400 * 3650),
    };
    let (key, root) = IssuerCa::create_root("Issuer", validity).unwrap();
    let ca = TestCa {
        key,
        root,
        not_before: now - Duration::from_secs(3600),
        not_after: now + Duration::from_secs(86400 * 365),
    };
    let mut older = pk_card(1, Profile::PublicKey, 1, 0, 5, 100, &ca, &ca.root);
    let floor = older.state().clock_floor.as_system_time();
    let key = keyroll::crypto::card_key::CardKeyPair::generate().unwrap().public_key_sec1();
    let cert = |nb: SystemTime, na: SystemTime| {
        keyroll::authority::ca::issue_card_certificate(&ca.key, &ca.root, CardSerial::from_u64(2), &key, nb, na)
            .unwrap()
    };
    let hour = Duration::from_secs(3600);
    assert_permission_refused(&mut older, cert(floor - 2 * hour, floor - hour));
    // The same key and serial inside validity is accepted: the refusal above is about time.
    assert!(permission(&mut older, cert(floor - hour, floor + hour)).is_ok());
    assert!(permission(&mut older, cert(floor + hour, floor + 2 * hour)).is_ok());
}

#[test]
fn a_card_refuses_to_store_a_certificate_its_peers_would_refuse() {
    let ca = TestCa::new("Issuer");
    // Expired by the floor the card holds at personalisation (the factory floor, raised by policy 1).
    let floor = std::time::UNIX_EPOCH + Duration::from_secs(keyroll::card::policy::FACTORY_FLOOR);
    let expired = TestCa {
        key: ca.key.clone(),
        root: ca.root.clone(),
        not_before: floor - Duration::from_secs(7200),
        not_after: floor - Duration::from_secs(3600),
    };
    let mut p = plan(2, Profile::PublicKey, 1, 0, 5, 0);
    p.trust_anchor = Some(ca.root.clone());
    let mut card = blank_card();
    let roots = test_roots();
    let line = keyroll::perso::Line {
        roots: &roots,
        allow_virtual: false,
        register: None,
        issuer: Some(&expired),
        verbose: false,
    };
    let mut ch = keyroll::transport::in_process::InProcessChannel::new(&mut card, "perso");
    let e = keyroll::perso::personalise(&mut ch, &line, &p).unwrap_err();
    assert!(matches!(e, keyroll::perso::PersoError::Refused { step: "STORE certificate", .. }), "{e}");
}

#[test]
fn a_ca_certificate_presented_as_a_card_is_refused() {
    let ca = TestCa::new("Issuer");
    let mut older = pk_card(1, Profile::PublicKey, 1, 0, 5, 100, &ca, &ca.root);
    assert_permission_refused(&mut older, ca.root.clone());
    let (_, int) = keyroll::authority::ca::IssuerCa::create_intermediate(
        &ca.key,
        &ca.root,
        "Card CA",
        keyroll::authority::ca::ValidityPeriod { not_before: ca.not_before, not_after: ca.not_after },
    )
    .unwrap();
    assert_permission_refused(&mut older, int);
}

#[test]
fn a_p384_card_certificate_is_refused() {
    let ca = TestCa::new("Issuer");
    let mut older = pk_card(1, Profile::PublicKey, 1, 0, 5, 100, &ca, &ca.root);
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    let pem = |label, der: &[u8]| keyroll::authority::ca::pem_encode(label, der).unwrap();
    std::fs::write(p("ca.pem"), pem("CERTIFICATE", &ca.root)).unwrap();
    std::fs::write(p("ca.key"), pem("PRIVATE KEY", ca.key.to_pkcs8_der().unwrap().expose())).unwrap();
    std::fs::write(p("ext"), "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n")
        .unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new("openssl").args(args).current_dir(dir.path()).output().expect("openssl CLI");
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    run(&["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", "leaf.key"]);
    run(&[
        "req",
        "-new",
        "-key",
        "leaf.key",
        "-subj",
        "/O=Issuer/CN=card 0000000000000009/serialNumber=0000000000000009",
        "-out",
        "leaf.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "77",
        "-days",
        "30",
        "-extfile",
        "ext",
        "-outform",
        "DER",
        "-out",
        "leaf.der",
    ]);
    let leaf = std::fs::read(p("leaf.der")).unwrap();
    let why = keyroll::pki::validate(
        &leaf,
        &[],
        &[ca.root.clone()],
        &[],
        &keyroll::pki::ValidationOptions::at(SystemTime::now()),
    );
    assert!(matches!(why, Err(keyroll::pki::PathError::UnsupportedAlgorithm { .. })), "{why:?}");
    assert_permission_refused(&mut older, leaf);
}

#[test]
fn signature_over_another_challenge_is_refused() {
    let ca = TestCa::new("Issuer");
    let (mut older, mut newer) = pair(&ca);
    let r = permission(&mut older, cert_of(&newer)).unwrap();
    let mut other = r;
    other[0] ^= 1;
    let p = get_key(&mut newer, other, &older).unwrap();
    let before = persisted(&older);
    assert_eq!(update(&mut older, p), 0x6300);
    assert_eq!(persisted(&older), before);
}

#[test]
fn envelope_for_another_card_is_refused() {
    let ca = TestCa::new("Issuer");
    let (mut older, mut newer) = pair(&ca);
    let bystander = pk_card(7, Profile::PublicKey, 1, 0, 5, 100, &ca, &ca.root);
    let r = permission(&mut older, cert_of(&newer)).unwrap();
    let p = get_key(&mut newer, r, &bystander).unwrap();
    let before = persisted(&older);
    assert_eq!(update(&mut older, p), 0x6300);
    assert_eq!(persisted(&older), before);
}

#[test]
fn the_sender_must_be_the_certified_card() {
    // A third card with a valid certificate signs instead of the card named in the permission step.
    let ca = TestCa::new("Issuer");
    let (mut older, newer) = pair(&ca);
    let mut impostor = pk_card(8, Profile::PublicKey, 4, 0, 5, 100, &ca, &ca.root);
    let r = permission(&mut older, cert_of(&newer)).unwrap();
    let p = get_key(&mut impostor, r, &older).unwrap();
    let before = persisted(&older);
    assert_eq!(update(&mut older, p), 0x6300);
    assert_eq!(persisted(&older), before);
}

#[test]
fn replayed_update_is_refused() {
    let ca = TestCa::new("Issuer");
    let (mut older, mut newer) = pair(&ca);
    let r = permission(&mut older, cert_of(&newer)).unwrap();
    let p = get_key(&mut newer, r, &older).unwrap();
    assert_eq!(update(&mut older, p.clone()), 0x9000);
    let before = persisted(&older);
    assert_eq!(update(&mut older, p.clone()), 0x6982);
    permission(&mut older, cert_of(&newer)).unwrap();
    assert_eq!(update(&mut older, p), 0x6300, "a fresh challenge does not match the recorded signature");
    assert_eq!(persisted(&older), before);
}

#[test]
fn tampered_ciphertext_and_limits_are_refused() {
    let ca = TestCa::new("Issuer");
    let mut older = pk_card(1, Profile::PublicKey, 1, 0, 2, 100, &ca, &ca.root);
    let mut newer = pk_card(2, Profile::PublicKey, 3, 0, 5, 100, &ca, &ca.root);
    let before = persisted(&older);
    let r = permission(&mut older, cert_of(&newer)).unwrap();
    let p = get_key(&mut newer, r, &older).unwrap();
    assert_eq!(update(&mut older, p), 0x6A84, "id 3 above limit 2");
    let r = permission(&mut older, cert_of(&newer)).unwrap();
    let Ok(KeyPayload::PublicKey { mut ciphertext, signature, authorisation }) = get_key(&mut newer, r, &older) else {
        panic!()
    };
    ciphertext[70] ^= 1;
    assert_eq!(update(&mut older, KeyPayload::PublicKey { ciphertext, signature, authorisation }), 0x6300);
    assert_eq!(persisted(&older), before);
}

fn settle(
    a: &mut TestCard,
    b: &mut TestCard,
    amount: u64,
    opts: &SettleOptions,
) -> Result<keyroll::terminal::SettlementReport, SettleError> {
    let mut ca = keyroll::transport::in_process::InProcessChannel::new(a, "a");
    let mut cb = keyroll::transport::in_process::InProcessChannel::new(b, "b");
    keyroll::terminal::settle(&mut ca, &mut cb, Amount(amount), opts)
}

#[test]
fn claims14_to_16_hybrid_cards_pick_the_path_by_update_key() {
    let ca = TestCa::new("Issuer");
    // Same update key: symmetric path (claim 15).
    let mut a = pk_card(1, Profile::Hybrid, 1, 1, 5, 100, &ca, &ca.root);
    let mut b = pk_card(2, Profile::Hybrid, 2, 1, 5, 100, &ca, &ca.root);
    let r = settle(&mut a, &mut b, 10, &SettleOptions::default()).unwrap();
    assert_eq!((r.key_roll, r.updated_card), (KeyRoll::Symmetric, Some(Role::Payer)));
    // Different update keys: public-key path (claim 16).
    let mut c = pk_card(3, Profile::Hybrid, 3, 2, 5, 100, &ca, &ca.root);
    let r = settle(&mut c, &mut a, 10, &SettleOptions::default()).unwrap();
    assert_eq!((r.key_roll, r.updated_card), (KeyRoll::PublicKey, Some(Role::Payee)));
    assert_eq!(a.state().current_transfer_key().unwrap(), transfer_key(3));
    assert_eq!(a.state().balance, Amount(100));
    // Equal keys between certificate cards: no roll; the payer's certificate is read once for the signed
    // CREDIT (issue 13: certified cards sign their value), within the budget of 9.
    let r = settle(&mut a, &mut c, 1, &SettleOptions::default()).unwrap();
    assert_eq!(r.key_roll, KeyRoll::None);
    assert!(r.apdus <= 9, "{} APDUs", r.apdus);
    // Public-key only cards (claims 12–13).
    let mut d = pk_card(4, Profile::PublicKey, 1, 0, 5, 100, &ca, &ca.root);
    let r = settle(&mut d, &mut c, 5, &SettleOptions::default()).unwrap();
    assert_eq!(r.key_roll, KeyRoll::PublicKey);
    assert_eq!(d.state().selected_transfer_key_id, Some(TransferKeyId(3)));
}

#[test]
fn a_card_holding_the_policy_refuses_a_blocked_card() {
    // The terminal's `settle --crl` is gone (DESIGN.md §10 point 4): the policy that blocks card 2 reaches
    // both cards, and card 1 refuses value with it; balances stay.
    let ca = TestCa::new("Issuer");
    let mut a = pk_card(1, Profile::Hybrid, 1, 1, 5, 100, &ca, &ca.root);
    let mut b = pk_card(2, Profile::Hybrid, 1, 1, 5, 100, &ca, &ca.root);
    let opts = SettleOptions { policy: Some(test_policy(2, &[(2, 5)], 1)), ..Default::default() };
    let e = settle(&mut a, &mut b, 10, &opts).unwrap_err();
    assert!(matches!(e, SettleError::Blocked { .. }), "{e}");
    assert_eq!((a.state().balance, b.state().balance), (Amount(100), Amount(100)));
    assert_eq!((a.state().policy_number(), b.state().policy_number()), (2, 2));
}
