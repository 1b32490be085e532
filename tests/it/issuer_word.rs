//! Issue 12 on the cards: authorised key versions, a signed policy that spreads card to card, and time
//! that only the issuer moves (DESIGN.md §10 points 3–5). Each finding of the evaluation is a test here.

use crate::support::*;
use keyroll::card::policy::CLOCK_STEP;
use keyroll::card::storage::Tear;
use keyroll::crypto::card_key::CardKeyPair;
use keyroll::crypto::scheme_key::SchemeSigningKey;
use keyroll::crypto::{Secret16, ecies, envelope};
use keyroll::domain::*;
use keyroll::perso::script::Line;
use keyroll::perso::{CardPlan, PersoError, personalise};
use keyroll::protocol::codec::Wire;
use keyroll::protocol::command::{Command, KeyPayload, KeyRollPath};
use keyroll::protocol::policy::{KeyAuthorisation, KeyKind};
use keyroll::protocol::response::PolicyAdoption;
use keyroll::protocol::{ResponseApdu, SmartCard, StatusWord};
use keyroll::terminal::{KeyRoll, PolicySpread, SettleError, SettleOptions, settle};
use keyroll::transport::in_process::InProcessChannel;

fn send(card: &mut TestCard, cmd: &Command) -> ResponseApdu {
    select(card);
    let mut ch = InProcessChannel::new(card, "t");
    let mut trace = keyroll::transport::Trace::verbose(false);
    keyroll::transport::exchange(&mut ch, &mut trace, cmd).unwrap()
}

fn permission(card: &mut TestCard, cert: Vec<u8>) -> [u8; 16] {
    let path = if cert.is_empty() { KeyRollPath::Symmetric } else { KeyRollPath::PublicKey };
    let r = send(card, &Command::RequestUpdatePermission { path, sender_certificate: cert });
    assert_eq!(r.sw, StatusWord::Ok);
    r.data.try_into().unwrap()
}

fn update(card: &mut TestCard, payload: KeyPayload) -> StatusWord {
    let path = payload.path();
    send(card, &Command::UpdateTransferKey { path, payload }).sw
}

fn settle_opts(
    a: &mut TestCard,
    b: &mut TestCard,
    amount: u64,
    opts: &SettleOptions,
) -> Result<keyroll::terminal::SettlementReport, SettleError> {
    let mut ca = InProcessChannel::new(a, "a");
    let mut cb = InProcessChannel::new(b, "b");
    settle(&mut ca, &mut cb, Amount(amount), opts)
}

fn put_policy(card: &mut TestCard, bytes: Vec<u8>) -> (StatusWord, Option<PolicyAdoption>) {
    let r = send(card, &Command::PutPolicy { policy: bytes });
    (r.sw, PolicyAdoption::from_wire(&r.data, ()).ok())
}

/// A symmetric envelope forged with a compromised card's update key: a key of the attacker's choosing
/// at id = the victim's limit, with whatever authorisation the attacker has.
fn forged_symmetric(
    victim: &mut TestCard,
    thief: &TestCard,
    chosen: &Secret16,
    id: u32,
    authorisation: Vec<u8>,
) -> KeyPayload {
    let r = permission(victim, vec![]);
    let uk = thief.state().update_key.as_ref().unwrap().update_key();
    let (sender, receiver) = (thief.state().serial.unwrap(), victim.state().serial.unwrap());
    let uk_id = uk.id.0.to_be_bytes();
    let mut pt = r.to_vec();
    pt.extend_from_slice(&id.to_be_bytes());
    pt.extend_from_slice(chosen.expose());
    let env = envelope::seal(&uk, &[b"keyroll transfer key v2", &sender.0, &receiver.0, &uk_id], &pt);
    KeyPayload::Symmetric { sender, update_key_id: uk.id, authorisation, envelope: env }
}

#[test]
fn a_compromised_card_cannot_install_a_chosen_key_on_any_profile() {
    let chosen = Secret16::new([0xEE; 16]);
    // The genuine authorisation of another key is all an attacker can relay.
    let genuine_other = authorise(KeyKind::Transfer, 2, transfer_key(2).secret(), 1);
    let ca = TestCa::new("Issuer");
    for profile in [Profile::Symmetric, Profile::Hybrid, Profile::MultiKey] {
        let thief = card(9, Profile::Symmetric, 1, 1, 5, 100);
        let mut victim = if profile.has_key_pair() {
            pk_card(1, profile, 1, 1, 5, 100, &ca, &ca.root)
        } else {
            card(1, profile, 1, 1, 5, 100)
        };
        for auth in [vec![0u8; 146], genuine_other.clone(), authorise(KeyKind::Transfer, 5, &Secret16::new([1; 16]), 1)]
        {
            let before = persisted(&victim);
            let payload = forged_symmetric(&mut victim, &thief, &chosen, 5, auth);
            let sw = update(&mut victim, payload);
            assert_ne!(sw, StatusWord::Ok, "{profile}: a chosen key was installed");
            assert_eq!(persisted(&victim), before, "{profile}: state changed");
        }
        assert_eq!(victim.state().selected_transfer_key_id, Some(TransferKeyId(1)));
        // Control: the same forgery with an authorisation of the chosen key (which the issuer never
        // signs) is installed by single-key cards, so the refusals above are the authorisation's doing,
        // not a malformed envelope. A multi-key card stores the genuine key 5 and refuses other material.
        let payload = forged_symmetric(&mut victim, &thief, &chosen, 5, authorise(KeyKind::Transfer, 5, &chosen, 1));
        let sw = update(&mut victim, payload);
        if profile == Profile::MultiKey {
            assert_eq!(sw, StatusWord::VerificationFailed, "{profile}");
        } else {
            assert_eq!(sw, StatusWord::Ok, "{profile}: the control forgery is well-formed");
            assert_eq!(victim.state().current_transfer_key().unwrap().secret(), &chosen);
        }
    }
}

#[test]
fn a_compromised_certified_card_cannot_install_a_chosen_key_on_the_public_key_path() {
    let ca = TestCa::new("Issuer");
    let thief = pk_card(9, Profile::PublicKey, 1, 0, 5, 100, &ca, &ca.root);
    let mut victim = pk_card(1, Profile::PublicKey, 1, 0, 5, 100, &ca, &ca.root);
    let thief_cert = thief.state().certificate.clone().unwrap();
    let thief_key = CardKeyPair::from_bytes(thief.state().card_private_key.as_ref().unwrap().expose()).unwrap();
    let victim_pub = {
        let c = victim.state().certificate.clone().unwrap();
        keyroll::card::certificate::check(&c, &ca.root, victim.state().clock_floor, &[]).unwrap().public_key
    };
    let before = persisted(&victim);
    let forge = |victim: &mut TestCard, authorisation: Vec<u8>| {
        let r = permission(victim, thief_cert.clone());
        let (s, v) = (CardSerial::from_u64(9), CardSerial::from_u64(1));
        let mut pt = 5u32.to_be_bytes().to_vec();
        pt.extend_from_slice(&[0xEE; 16]);
        let ct = ecies::seal(&victim_pub, &[b"keyroll transfer key pk v2", &s.0, &v.0], &pt).unwrap();
        let signature = thief_key.sign(&[b"keyroll transfer key signature v2", &ct, &r]);
        update(victim, KeyPayload::PublicKey { ciphertext: ct, signature, authorisation })
    };
    let sw = forge(&mut victim, authorise(KeyKind::Transfer, 2, transfer_key(2).secret(), 1));
    assert_eq!(sw, StatusWord::VerificationFailed);
    assert_eq!(persisted(&victim), before);
    // Control: with an authorisation of the chosen key (never signed by the issuer) the same envelope
    // is installed, so the refusal above is the authorisation's doing.
    let sw = forge(&mut victim, authorise(KeyKind::Transfer, 5, &Secret16::new([0xEE; 16]), 1));
    assert_eq!(sw, StatusWord::Ok, "the control forgery is well-formed");
}

#[test]
fn genuine_keys_with_bad_authorisations_are_refused_at_a_roll() {
    let other_scheme = {
        let k = SchemeSigningKey::from_bytes(&[0x77; 32]).unwrap();
        let key = transfer_key(2);
        let mut a = KeyAuthorisation {
            scheme_id: k.scheme_id(),
            kind: KeyKind::Transfer,
            id: 2,
            commitment: keyroll::crypto::scheme_key::key_commitment(&k.scheme_id(), 1, 2, key.secret()),
            signed_at: SIGNED_AT,
            min_policy: 0,
            signature: [0; 64],
        };
        a.signature = k.sign(&a.body()).unwrap();
        a.to_wire()
    };
    let mut flipped = authorise(KeyKind::Transfer, 2, transfer_key(2).secret(), 1);
    flipped[100] ^= 1;
    let too_new = authorise(KeyKind::Transfer, 2, transfer_key(2).secret(), 5);
    for (auth, sw) in [
        (flipped, StatusWord::VerificationFailed),
        (other_scheme, StatusWord::VerificationFailed),
        (too_new, StatusWord::ConditionsNotSatisfied),
    ] {
        let mut older = card(1, Profile::Symmetric, 1, 1, 5, 100);
        let mut newer = card(2, Profile::Symmetric, 2, 1, 5, 100);
        let before = persisted(&older);
        let r = permission(&mut older, vec![]);
        let got = send(
            &mut newer,
            &Command::GetTransferKey {
                path: KeyRollPath::Symmetric,
                challenge: r,
                receiver: CardSerial::from_u64(1),
                receiver_certificate: vec![],
            },
        );
        let Ok(KeyPayload::Symmetric { sender, update_key_id, envelope, .. }) =
            KeyPayload::from_wire(&got.data, KeyRollPath::Symmetric)
        else {
            panic!("{:?}", got.sw)
        };
        let sent = update(&mut older, KeyPayload::Symmetric { sender, update_key_id, authorisation: auth, envelope });
        assert_eq!(sent, sw);
        assert_eq!(persisted(&older), before);
    }
}

#[test]
fn genuine_keys_with_bad_authorisations_are_refused_at_perso_store() {
    let mut flipped = authorise(KeyKind::Transfer, 1, transfer_key(1).secret(), 1);
    flipped[90] ^= 1;
    let cases: Vec<(Vec<u8>, StatusWord)> = vec![
        (flipped, StatusWord::VerificationFailed),
        (vec![], StatusWord::VerificationFailed),
        (authorise(KeyKind::Transfer, 1, transfer_key(1).secret(), 3), StatusWord::ConditionsNotSatisfied),
        (authorise(KeyKind::Transfer, 1, &Secret16::new([3; 16]), 1), StatusWord::VerificationFailed),
    ];
    for (auth, sw) in cases {
        let mut p: CardPlan = plan(1, Profile::Symmetric, 1, 1, 5, 100);
        p.issuer_word.authorisations.retain(|a| KeyAuthorisation::from_wire(a, ()).unwrap().kind != KeyKind::Transfer);
        p.issuer_word.authorisations.push(auth);
        // A missing authorisation leaves the item without one: a single-key card has no pending keys
        // and refuses it like a forged one.
        let mut c = blank_card();
        let roots = test_roots();
        let line = Line { roots: &roots, allow_virtual: false, register: None, issuer: None, verbose: false };
        let mut ch = InProcessChannel::new(&mut c, "perso");
        let e = personalise(&mut ch, &line, &p).unwrap_err();
        match e {
            PersoError::Refused { step: "STORE transfer key", sw: got } => assert_eq!(got, sw),
            other => panic!("{other}"),
        }
        drop(ch);
        assert!(c.state().transfer_keys.is_empty(), "no key stored");
    }
}

#[test]
fn a_block_spreads_card_to_card_and_a_terminal_without_the_file_cannot_use_the_blocked_card() {
    // Card 3 (symmetric: no certificate, yet blockable) is blocked by policy 2.
    let policy = test_policy(2, &[(3, 5)], 1);
    let mut a = card(1, Profile::Symmetric, 1, 1, 5, 100);
    let mut b = card(2, Profile::Symmetric, 1, 1, 5, 100);
    let mut blocked = card(3, Profile::Symmetric, 1, 1, 5, 100);
    let mut fresh = card(4, Profile::Symmetric, 2, 1, 5, 100);
    let with_file = SettleOptions { policy: Some(policy.clone()), ..Default::default() };
    // A <- terminal, then B <- A through a terminal with no file.
    let r = settle_opts(&mut a, &mut fresh, 1, &with_file).unwrap();
    assert_eq!(r.policy_spread, Some(PolicySpread::Both));
    assert_eq!(a.state().policy_number(), 2);
    let r = settle_opts(&mut b, &mut a, 1, &SettleOptions::default()).unwrap();
    assert_eq!(r.policy_spread, Some(PolicySpread::Payer));
    assert_eq!(b.state().policy_number(), 2);
    // Value with the blocked card through A or B: refused, whichever side it is on; nothing moves.
    for (x, blocked_pays) in [(&mut a, true), (&mut b, false)] {
        let before = (x.state().balance, blocked.state().balance);
        let e = if blocked_pays {
            settle_opts(&mut blocked, x, 5, &SettleOptions::default())
        } else {
            settle_opts(x, &mut blocked, 5, &SettleOptions::default())
        }
        .unwrap_err();
        assert!(matches!(e, SettleError::Blocked { .. }), "{e}");
        assert_eq!((x.state().balance, blocked.state().balance), before);
    }
    // No key for the blocked card: `fresh` (key 2, holding the policy) refuses to wrap for it.
    let e = settle_opts(&mut fresh, &mut blocked, 0, &SettleOptions::default()).unwrap_err();
    assert!(matches!(e, SettleError::Blocked { .. }), "{e}");
    assert_eq!(blocked.state().selected_transfer_key_id, Some(TransferKeyId(1)));
    // And the blocked card cannot hand its key to others either.
    let mut old = card(5, Profile::Symmetric, 1, 1, 5, 100);
    let mut blocked_newer = card(6, Profile::Symmetric, 2, 1, 5, 100);
    let _ = put_policy(&mut old, test_policy(3, &[(3, 5), (6, 5)], 1).to_wire());
    let e = settle_opts(&mut old, &mut blocked_newer, 0, &SettleOptions::default()).unwrap_err();
    assert!(matches!(e, SettleError::Blocked { .. }), "{e}");
    assert_eq!(old.state().selected_transfer_key_id, Some(TransferKeyId(1)));
}

#[test]
fn an_extracted_card_under_another_serial_gets_no_key_once_its_update_key_is_closed() {
    // The extracted card reports a fresh serial and profile symmetric: the block by serial misses it,
    // the closed update key does not.
    let closed = test_policy(2, &[(7, 5)], 2);
    let mut genuine_newer = card(1, Profile::Symmetric, 2, 1, 5, 100);
    let (sw, adopted) = put_policy(&mut genuine_newer, closed.to_wire());
    assert_eq!((sw, adopted.map(|a| a.adopted)), (StatusWord::Ok, Some(true)));
    let mut impostor = card(0x77, Profile::Symmetric, 1, 1, 5, 100);
    let keys_before = impostor.state().transfer_keys.clone();
    let e = settle_opts(&mut impostor, &mut genuine_newer, 0, &SettleOptions::default()).unwrap_err();
    assert!(matches!(e, SettleError::NoPath { .. }), "{e}");
    // It took the policy (spreading is harmless: it is public and signed), but no key.
    assert_eq!(impostor.state().policy_number(), 2);
    assert_eq!(impostor.state().transfer_keys, keys_before, "no key");
    assert_eq!(impostor.state().selected_transfer_key_id, Some(TransferKeyId(1)));
    // Asked directly, the card refuses to wrap under the closed key.
    let r = permission(&mut impostor, vec![]);
    let got = send(
        &mut genuine_newer,
        &Command::GetTransferKey {
            path: KeyRollPath::Symmetric,
            challenge: r,
            receiver: CardSerial::from_u64(0x77),
            receiver_certificate: vec![],
        },
    );
    assert_eq!(got.sw, StatusWord::ConditionsNotSatisfied);
}

#[test]
fn after_compromise_update_certified_cards_take_the_public_key_path() {
    let ca = TestCa::new("Issuer");
    let mut a = pk_card(1, Profile::Hybrid, 1, 1, 5, 100, &ca, &ca.root);
    let mut b = pk_card(2, Profile::Hybrid, 2, 1, 5, 100, &ca, &ca.root);
    let opts = SettleOptions { policy: Some(test_policy(2, &[], 2)), ..Default::default() };
    let r = settle_opts(&mut a, &mut b, 10, &opts).unwrap();
    assert_eq!(r.key_roll, KeyRoll::PublicKey, "claims 14-16 would say symmetric; update key 1 is closed");
    assert_eq!(a.state().selected_transfer_key_id, Some(TransferKeyId(2)));
    // Symmetric cards sharing the closed key: stranded, nothing changes.
    let mut c = card(3, Profile::Symmetric, 1, 1, 5, 100);
    let mut d = card(4, Profile::Symmetric, 2, 1, 5, 100);
    let before = persisted(&c);
    let e = settle_opts(&mut c, &mut d, 1, &opts).unwrap_err();
    assert!(matches!(e, SettleError::NoPath { .. }), "{e}");
    assert_eq!(c.state().selected_transfer_key_id, Some(TransferKeyId(1)));
    assert_ne!(persisted(&c), before, "only the policy was adopted");
    assert_eq!(c.state().policy_number(), 2);
}

#[test]
fn replayed_flipped_and_serial_dropping_policies_change_nothing() {
    let mut c = card(1, Profile::Symmetric, 1, 1, 5, 100);
    let p2 = test_policy(2, &[(9, 5)], 1);
    assert_eq!(put_policy(&mut c, p2.to_wire()).1, Some(PolicyAdoption { adopted: true, number: 2 }));
    let held = persisted(&c);
    // Older or equal: kept.
    for old in [test_policy(1, &[], 1), p2.clone()] {
        assert_eq!(put_policy(&mut c, old.to_wire()).1, Some(PolicyAdoption { adopted: false, number: 2 }));
        assert_eq!(persisted(&c), held);
    }
    // One bit flipped anywhere in policy 3: refused, byte-identical.
    let p3 = {
        let k = scheme_key();
        let mut p = test_policy(3, &[(9, 5), (10, 5)], 1);
        p.previous = p2.hash();
        p.signature = k.sign(&p.body()).unwrap();
        p
    };
    let bytes = p3.to_wire();
    for bit in (0..bytes.len() * 8).step_by(37) {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        assert_ne!(put_policy(&mut c, b).0, StatusWord::Ok, "bit {bit}");
        assert_eq!(persisted(&c), held, "bit {bit}");
    }
    // A signed successor that drops blocked card 9 (its generation still alive): refused.
    let dropping = {
        let k = scheme_key();
        let mut p = test_policy(3, &[(10, 5)], 1);
        p.previous = p2.hash();
        p.signature = k.sign(&p.body()).unwrap();
        p
    };
    assert_eq!(put_policy(&mut c, dropping.to_wire()).0, StatusWord::VerificationFailed);
    assert_eq!(persisted(&c), held);
    assert_eq!(put_policy(&mut c, bytes).1, Some(PolicyAdoption { adopted: true, number: 3 }));
}

#[test]
fn a_chained_policy_torn_at_every_write_leaves_the_old_or_the_new() {
    let blocked: Vec<(u64, u32)> = (100..112).map(|s| (s, 5)).collect();
    let p2 = test_policy(2, &blocked, 1);
    let bytes = p2.to_wire();
    assert!(bytes.len() > 255, "travels in a chain");
    for tear in [Tear::BeforeWrite, Tear::AfterWrite] {
        let mut c = card(1, Profile::Symmetric, 1, 1, 5, 100);
        let old = persisted(&c);
        c.storage_mut().arm(1, tear);
        select(&mut c);
        let mut ch = InProcessChannel::new(&mut c, "t");
        let mut trace = keyroll::transport::Trace::verbose(false);
        let _ = keyroll::transport::exchange(&mut ch, &mut trace, &Command::PutPolicy { policy: bytes.clone() });
        drop(ch);
        c.power_on();
        let now = persisted(&c);
        assert!(now == old || c.state().policy_number() == 2, "{tear:?}: neither old nor new");
        assert_eq!(c.state().policy_number(), if tear == Tear::AfterWrite { 2 } else { 1 });
    }
}

fn epoch() -> std::time::SystemTime {
    std::time::UNIX_EPOCH
}

fn century_ahead() -> std::time::SystemTime {
    std::time::SystemTime::now() + std::time::Duration::from_secs(100 * 365 * 86400)
}

/// Policy 2 of the tests' scheme, signed at `signed_at`.
fn policy_signed_at(signed_at: u64) -> keyroll::protocol::policy::Policy {
    let mut p = test_policy(2, &[], 1);
    p.signed_at = signed_at;
    p.signature = scheme_key().sign(&p.body()).unwrap();
    p
}

#[test]
fn the_host_clock_decides_nothing_and_far_future_signatures_move_the_floor_one_step() {
    let ca = TestCa::new("Issuer");
    let host_clocks: [fn() -> std::time::SystemTime; 2] = [epoch, century_ahead];
    for host in host_clocks {
        let mut a = pk_card(1, Profile::PublicKey, 1, 0, 5, 100, &ca, &ca.root);
        let mut b = pk_card(2, Profile::PublicKey, 2, 0, 5, 100, &ca, &ca.root);
        (a.now, b.now) = (host, host);
        let r = settle_opts(&mut a, &mut b, 1, &SettleOptions::default()).unwrap();
        assert_eq!(r.key_roll, KeyRoll::PublicKey);
    }
    // A policy signed far in the future moves the floor by one step only ...
    let mut c = card(3, Profile::Symmetric, 1, 1, 5, 100);
    let floor = c.state().clock_floor.0;
    assert_eq!(put_policy(&mut c, policy_signed_at(u64::MAX / 4).to_wire()).0, StatusWord::Ok);
    assert_eq!(c.state().clock_floor.0, floor + CLOCK_STEP);
    // ... which is past the test certificates' notAfter (a year from now): they are expired for cards
    // holding that floor, whatever the host clock says.
    for host in host_clocks {
        let mut a = pk_card(1, Profile::PublicKey, 1, 0, 5, 100, &ca, &ca.root);
        let mut b = pk_card(2, Profile::PublicKey, 2, 0, 5, 100, &ca, &ca.root);
        (a.now, b.now) = (host, host);
        let opts = SettleOptions { policy: Some(policy_signed_at(u64::MAX / 4)), ..Default::default() };
        let before = a.state().selected_transfer_key_id;
        assert!(settle_opts(&mut a, &mut b, 1, &opts).is_err());
        assert_eq!(a.state().selected_transfer_key_id, before);
    }
}

#[test]
fn settlement_on_the_same_policy_stays_within_the_apdu_budget() {
    let ca = TestCa::new("Issuer");
    let mut a = card(1, Profile::Symmetric, 1, 1, 5, 100);
    let mut b = card(2, Profile::Symmetric, 1, 1, 5, 100);
    let r = settle_opts(&mut a, &mut b, 1, &SettleOptions::default()).unwrap();
    assert!(r.apdus <= 9, "{} APDUs", r.apdus);
    let mut c = pk_card(3, Profile::PublicKey, 1, 0, 5, 100, &ca, &ca.root);
    let mut d = pk_card(4, Profile::PublicKey, 2, 0, 5, 100, &ca, &ca.root);
    let r = settle_opts(&mut c, &mut d, 1, &SettleOptions::default()).unwrap();
    assert_eq!(r.key_roll, KeyRoll::PublicKey);
    assert!(r.apdus <= 24, "{} APDUs", r.apdus);
}
