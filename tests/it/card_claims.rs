//! Every step of claims 2 and 9 on the reference card, the positive path and each rejection branch.
//! After every rejection the card's persisted state is byte-identical.

use crate::support::*;
use keyroll::crypto::Secret16;
use keyroll::domain::*;
use keyroll::perso::CardPlan;
use keyroll::protocol::command::{Command, KeyPayload, KeyRollPath, PersoItem};
use keyroll::protocol::{ResponseApdu, SmartCard};

fn send(card: &mut TestCard, cmd: &Command) -> ResponseApdu {
    select(card);
    ResponseApdu::parse(&card.process(&cmd.to_apdu().to_bytes()).unwrap()).unwrap()
}

fn permission(card: &mut TestCard) -> [u8; 16] {
    let r = send(card, &Command::RequestUpdatePermission { path: KeyRollPath::Symmetric, sender_certificate: vec![] });
    assert_eq!(r.sw.to_u16(), 0x9000);
    r.data.try_into().unwrap()
}

fn get_key(card: &mut TestCard, challenge: [u8; 16], receiver: &TestCard) -> KeyPayload {
    let cmd = Command::GetTransferKey {
        path: KeyRollPath::Symmetric,
        challenge,
        receiver: receiver.state().serial.unwrap(),
        receiver_certificate: vec![],
    };
    let r = send(card, &cmd);
    assert_eq!(r.sw.to_u16(), 0x9000);
    use keyroll::protocol::codec::Wire;
    KeyPayload::from_wire(&r.data, KeyRollPath::Symmetric).unwrap()
}

/// UPDATE TRANSFER KEY without re-selecting (SELECT keeps the session, but keep it minimal).
fn update(card: &mut TestCard, payload: KeyPayload) -> u16 {
    let cmd = Command::UpdateTransferKey { path: KeyRollPath::Symmetric, payload };
    raw(card, &cmd.to_apdu().to_bytes())
}

/// Run the roll from `newer` to `older` with a mutation hook; return the status of UPDATE.
fn roll_with(older: &mut TestCard, newer: &mut TestCard, mutate: impl FnOnce(&mut [u8; 16], &mut KeyPayload)) -> u16 {
    let r = permission(older);
    let mut r2 = r;
    let mut payload = get_key(newer, r, older);
    mutate(&mut r2, &mut payload);
    if r2 != r {
        payload = get_key(newer, r2, older);
    }
    update(older, payload)
}

fn assert_rejected_unchanged(
    older: &mut TestCard,
    newer: &mut TestCard,
    sw: u16,
    mutate: impl FnOnce(&mut [u8; 16], &mut KeyPayload),
) {
    let before = persisted(older);
    let newer_before = persisted(newer);
    assert_eq!(roll_with(older, newer, mutate), sw);
    assert_eq!(persisted(older), before, "older card changed after a rejection");
    assert_eq!(persisted(newer), newer_before, "GET TRANSFER KEY changed the newer card");
}

#[test]
fn claim2_card_info_reports_the_transfer_key_identifier() {
    let mut c = card(1, Profile::Symmetric, 2, 1, 5, 0);
    let r = send(&mut c, &Command::GetCardInfo { certificate: true });
    let info = <keyroll::protocol::info::CardInfo as keyroll::protocol::Wire>::from_wire(&r.data, ()).unwrap();
    assert_eq!(info.transfer_key_id, Some(TransferKeyId(2)));
    assert_eq!(info.update_key_id, Some(UpdateKeyId(1)));
    assert_eq!(info.transfer_key_id_limit, Some(TransferKeyIdLimit(5)));
}

#[test]
fn claim2_positive_path_installs_id_and_key() {
    let mut older = card(1, Profile::Symmetric, 1, 1, 5, 0);
    let mut newer = card(2, Profile::Symmetric, 4, 1, 5, 0);
    assert_eq!(roll_with(&mut older, &mut newer, |_, _| {}), 0x9000);
    assert_eq!(older.state().selected_transfer_key_id, Some(TransferKeyId(4)));
    assert_eq!(older.state().current_transfer_key().unwrap(), transfer_key(4));
}

#[test]
fn claim2_install_at_exactly_the_limit() {
    let mut older = card(1, Profile::Symmetric, 1, 1, 4, 0);
    let mut newer = card(2, Profile::Symmetric, 4, 1, 9, 0);
    assert_eq!(roll_with(&mut older, &mut newer, |_, _| {}), 0x9000);
}

#[test]
fn wrong_challenge_is_refused() {
    let mut older = card(1, Profile::Symmetric, 1, 1, 5, 0);
    let mut newer = card(2, Profile::Symmetric, 2, 1, 5, 0);
    assert_rejected_unchanged(&mut older, &mut newer, 0x6982, |r, _| r[0] ^= 1);
}

#[test]
fn replayed_challenge_is_refused() {
    let mut older = card(1, Profile::Symmetric, 1, 1, 5, 0);
    let mut newer = card(2, Profile::Symmetric, 2, 1, 5, 0);
    let r = permission(&mut older);
    let payload = get_key(&mut newer, r, &older);
    assert_eq!(update(&mut older, payload.clone()), 0x9000);
    // The same envelope again: no live challenge.
    let before = persisted(&older);
    assert_eq!(update(&mut older, payload.clone()), 0x6982);
    // And against a fresh challenge: the old one is not it.
    permission(&mut older);
    assert_eq!(update(&mut older, payload), 0x6982);
    assert_eq!(persisted(&older), before);
}

#[test]
fn challenge_after_reset_is_refused() {
    let mut older = card(1, Profile::Symmetric, 1, 1, 5, 0);
    let mut newer = card(2, Profile::Symmetric, 2, 1, 5, 0);
    let before = persisted(&older);
    let r = permission(&mut older);
    let payload = get_key(&mut newer, r, &older);
    older.reset();
    select(&mut older);
    assert_eq!(update(&mut older, payload.clone()), 0x6982);
    older.power_off();
    older.power_on();
    select(&mut older);
    assert_eq!(update(&mut older, payload), 0x6982);
    assert_eq!(persisted(&older), before);
}

#[test]
fn failed_attempt_burns_the_challenge() {
    let mut older = card(1, Profile::Symmetric, 1, 1, 5, 0);
    let mut newer = card(2, Profile::Symmetric, 2, 1, 5, 0);
    let r = permission(&mut older);
    let good = get_key(&mut newer, r, &older);
    let mut bad = good.clone();
    if let KeyPayload::Symmetric { envelope, .. } = &mut bad {
        envelope[20] ^= 1;
    }
    assert_eq!(update(&mut older, bad), 0x6300);
    assert_eq!(update(&mut older, good), 0x6982, "one try per challenge");
}

#[test]
fn id_equal_to_current_is_refused() {
    let mut older = card(1, Profile::Symmetric, 2, 1, 5, 0);
    let mut newer = card(2, Profile::Symmetric, 2, 1, 5, 0);
    assert_rejected_unchanged(&mut older, &mut newer, 0x6A80, |_, _| {});
}

#[test]
fn id_lower_than_current_is_refused() {
    let mut older = card(1, Profile::Symmetric, 3, 1, 5, 0);
    let mut newer = card(2, Profile::Symmetric, 2, 1, 5, 0);
    assert_rejected_unchanged(&mut older, &mut newer, 0x6A80, |_, _| {});
}

#[test]
fn id_above_limit_is_refused() {
    let mut older = card(1, Profile::Symmetric, 1, 1, 3, 0);
    let mut newer = card(2, Profile::Symmetric, 4, 1, 9, 0);
    assert_rejected_unchanged(&mut older, &mut newer, 0x6A84, |_, _| {});
}

#[test]
fn tampered_envelope_is_refused() {
    let mut older = card(1, Profile::Symmetric, 1, 1, 5, 0);
    let mut newer = card(2, Profile::Symmetric, 2, 1, 5, 0);
    assert_rejected_unchanged(&mut older, &mut newer, 0x6300, |_, p| {
        if let KeyPayload::Symmetric { envelope, .. } = p {
            let n = envelope.len();
            envelope[n - 1] ^= 0x80;
        }
    });
}

#[test]
fn envelope_for_another_card_is_refused() {
    let mut older = card(1, Profile::Symmetric, 1, 1, 5, 0);
    let other = card(3, Profile::Symmetric, 1, 1, 5, 0);
    let mut newer = card(2, Profile::Symmetric, 2, 1, 5, 0);
    let before = persisted(&older);
    let r = permission(&mut older);
    let payload = get_key(&mut newer, r, &other);
    assert_eq!(update(&mut older, payload), 0x6300);
    assert_eq!(persisted(&older), before);
}

#[test]
fn wrong_update_key_is_refused() {
    let mut older = card(1, Profile::Symmetric, 1, 1, 5, 0);
    // Same update key id, other key material: the envelope does not open.
    let mut p = plan(2, Profile::Symmetric, 2, 1, 5, 0);
    p.update_key = Some(keyroll::crypto::UpdateKey::new(UpdateKeyId(1), Secret16::new([0xEE; 16])));
    // (The tests' issuer authorises the odd key so the card can be made at all.)
    p.issuer_word = issuer_word(&p.transfer_keys, p.update_key.clone());
    let mut impostor = card_from(&p);
    assert_rejected_unchanged(&mut older, &mut impostor, 0x6300, |_, _| {});
    // Other update key id: refused before decryption, pointing to the public-key path.
    let mut newer2 = card(3, Profile::Symmetric, 2, 2, 5, 0);
    assert_rejected_unchanged(&mut older, &mut newer2, 0x6A88, |_, _| {});
}

#[test]
fn update_without_permission_is_refused() {
    let mut older = card(1, Profile::Symmetric, 1, 1, 5, 0);
    let mut newer = card(2, Profile::Symmetric, 2, 1, 5, 0);
    let r = [7u8; 16];
    let payload = get_key(&mut newer, r, &older);
    let before = persisted(&older);
    select(&mut older);
    assert_eq!(update(&mut older, payload), 0x6982);
    assert_eq!(persisted(&older), before);
}

fn multi_plan(serial: u64, stored: &[u32], selected: u32, limit: u32) -> CardPlan {
    let mut p = plan(serial, Profile::MultiKey, selected, 1, limit, 0);
    p.transfer_keys = stored.iter().map(|i| transfer_key(*i)).collect();
    p.issuer_word = issuer_word(&p.transfer_keys, p.update_key.clone());
    p
}

#[test]
fn claim9_selection_switches_to_a_stored_newer_id() {
    let mut older = card_from(&multi_plan(1, &[1, 2, 3], 1, 5));
    let mut newer = card(2, Profile::Symmetric, 3, 1, 5, 0);
    assert_eq!(roll_with(&mut older, &mut newer, |_, _| {}), 0x9000);
    assert_eq!(older.state().selected_transfer_key_id, Some(TransferKeyId(3)));
    assert_eq!(older.state().stored_ids(), vec![TransferKeyId(1), TransferKeyId(2), TransferKeyId(3)]);
}

#[test]
fn claim9_unknown_selection_id_is_refused() {
    let mut older = card_from(&multi_plan(1, &[1, 2, 4], 1, 9));
    let mut newer = card(2, Profile::Symmetric, 3, 1, 9, 0);
    assert_rejected_unchanged(&mut older, &mut newer, 0x6A88, |_, _| {});
}

#[test]
fn claim9_selection_not_newer_is_refused() {
    let mut older = card_from(&multi_plan(1, &[1, 2, 3], 3, 5));
    let mut newer = card(2, Profile::Symmetric, 2, 1, 5, 0);
    assert_rejected_unchanged(&mut older, &mut newer, 0x6A80, |_, _| {});
}

#[test]
fn claim9_selection_with_other_key_material_is_refused() {
    let mut older = card_from(&multi_plan(1, &[1, 2, 3], 1, 5));
    let mut p = plan(2, Profile::Symmetric, 3, 1, 5, 0);
    p.transfer_keys = vec![keyroll::crypto::TransferKey::new(TransferKeyId(3), Secret16::new([0xAB; 16]))];
    // (The tests' issuer authorises the odd key so the card can be made at all.)
    p.issuer_word = issuer_word(&p.transfer_keys, p.update_key.clone());
    let mut newer = card_from(&p);
    assert_rejected_unchanged(&mut older, &mut newer, 0x6300, |_, _| {});
}

#[test]
fn claim9_multi_key_card_sends_its_selected_key() {
    let mut older = card(1, Profile::Symmetric, 1, 1, 5, 0);
    let mut newer = card_from(&multi_plan(2, &[1, 2, 3], 2, 5));
    assert_eq!(roll_with(&mut older, &mut newer, |_, _| {}), 0x9000);
    assert_eq!(older.state().current_transfer_key().unwrap(), transfer_key(2));
}

#[test]
fn personalisation_is_refused_after_lock() {
    let mut c = card(1, Profile::Symmetric, 1, 1, 5, 0);
    let before = persisted(&c);
    for (cmd, sw) in [
        (Command::GetFactoryData, 0x6985),
        (Command::InternalAuthenticate { data: vec![0; 83] }, 0x6985),
        // Personalisation commands in the clear are refused before anything else is looked at.
        (Command::Lock, 0x6982),
        (Command::PersoStore { item: PersoItem::Balance, data: vec![0; 16] }, 0x6982),
    ] {
        assert_eq!(send(&mut c, &cmd).sw.to_u16(), sw, "{cmd:?}");
    }
    assert_eq!(persisted(&c), before);
    // The factory private keys are gone from the issued card.
    let f = c.state().factory.as_ref().unwrap();
    assert!(f.agreement_key.is_none() && f.attestation_key.is_none());
    // Re-personalising through the script is refused too.
    let roots = test_roots();
    let line =
        keyroll::perso::Line { roots: &roots, allow_virtual: false, register: None, issuer: None, verbose: false };
    let mut ch = keyroll::transport::in_process::InProcessChannel::new(&mut c, "c");
    let e = keyroll::perso::personalise(&mut ch, &line, &plan(1, Profile::Symmetric, 1, 1, 5, 0)).unwrap_err();
    assert!(matches!(e, keyroll::perso::PersoError::AlreadyIssued(_)), "{e}");
}

/// Version 1's way in is gone: its AID is not answered, INITIALIZE and OPEN PERSO SESSION are unknown
/// instructions, and a blank card takes no personalisation command outside the channel.
#[test]
fn version_1_personalisation_is_gone() {
    let mut c = blank_card();
    let before = persisted(&c);
    let mut sel = vec![0x00, 0xA4, 0x04, 0x00, keyroll::protocol::AID_V1.len() as u8];
    sel.extend_from_slice(&keyroll::protocol::AID_V1);
    assert_eq!(raw(&mut c, &sel), 0x6A82);
    select(&mut c);
    // INITIALIZE (80 50) with serial and a key in clear; OPEN PERSO SESSION (80 52).
    let mut init = vec![0x80, 0x50, 0, 0, 24];
    init.extend_from_slice(&[0x11; 24]);
    assert_eq!(raw(&mut c, &init), 0x6D00);
    assert_eq!(raw(&mut c, &[0x80, 0x52, 0, 0]), 0x6D00);
    assert_eq!(send(&mut c, &Command::PersoStore { item: PersoItem::Serial, data: vec![1; 8] }).sw.to_u16(), 0x6982);
    assert_eq!(persisted(&c), before);
}

#[test]
fn command_chaining_is_checked_at_the_first_segment() {
    let mut c = card(1, Profile::Symmetric, 1, 1, 5, 0);
    select(&mut c);
    let before = persisted(&c);
    assert_eq!(raw(&mut c, &[0x90, 0x10, 0, 0, 1, 0]), 0x6884, "GET CARD INFO cannot be chained");
    assert_eq!(raw(&mut c, &[0x90, 0x99, 0, 0, 1, 0]), 0x6D00);
    assert_eq!(raw(&mut c, &[0x10, 0x20, 0, 0, 1, 0]), 0x6E00);
    // A chain must keep its header; a different command mid-chain is refused.
    assert_eq!(raw(&mut c, &[0x90, 0x24, 0, 0, 2, 1, 2]), 0x9000);
    assert_eq!(raw(&mut c, &[0x80, 0x20, 0, 0]), 0x6883);
    assert_eq!(persisted(&c), before);
}
