//! The reference terminal against reference cards, in process (claims 10, 11, 19; 8, 9 selection).

use crate::support::*;
use keyroll::domain::*;
use keyroll::protocol::SmartCard;
use keyroll::terminal::{KeyRoll, Role, SettleError};

#[test]
fn equal_keys_move_value_in_at_most_ten_apdus() {
    let mut a = card(1, Profile::Symmetric, 1, 1, 5, 100);
    let mut b = card(2, Profile::Symmetric, 1, 1, 5, 0);
    let r = settle_cards(&mut a, &mut b, 30).unwrap();
    assert_eq!(r.key_roll, KeyRoll::None);
    assert_eq!(r.updated_card, None);
    assert_eq!(r.amount, Amount(30));
    assert!(r.apdus <= 10, "{} APDUs", r.apdus);
    assert_eq!(a.state().balance, Amount(70));
    assert_eq!(b.state().balance, Amount(30));
    assert!(a.state().pending_out.is_empty() && b.state().pending_in.is_empty());
}

#[test]
fn newer_key_rolls_onto_older_payer_then_value_moves() {
    let mut old = card(1, Profile::Symmetric, 1, 1, 5, 100);
    let mut new = card(2, Profile::Symmetric, 3, 1, 5, 0);
    let r = settle_cards(&mut old, &mut new, 10).unwrap();
    assert_eq!(r.key_roll, KeyRoll::Symmetric);
    assert_eq!(r.updated_card, Some(Role::Payer));
    assert_eq!(old.state().selected_transfer_key_id, Some(TransferKeyId(3)));
    assert_eq!(old.state().current_transfer_key().unwrap(), transfer_key(3));
    assert_eq!(new.state().balance, Amount(10));
    // Convergence: running again is a no-op for keys.
    let r = settle_cards(&mut old, &mut new, 0).unwrap();
    assert_eq!(r.key_roll, KeyRoll::None);
}

#[test]
fn newer_key_rolls_onto_older_payee() {
    let mut new = card(1, Profile::Symmetric, 2, 1, 5, 100);
    let mut old = card(2, Profile::Symmetric, 1, 1, 5, 0);
    let r = settle_cards(&mut new, &mut old, 10).unwrap();
    assert_eq!((r.key_roll, r.updated_card), (KeyRoll::Symmetric, Some(Role::Payee)));
    assert_eq!(old.state().selected_transfer_key_id, Some(TransferKeyId(2)));
}

#[test]
fn multi_key_card_switches_selection() {
    let mut old = card(1, Profile::MultiKey, 1, 1, 4, 100);
    let mut new = card(2, Profile::Symmetric, 3, 1, 5, 0);
    let before = old.state().transfer_keys.clone();
    let r = settle_cards(&mut old, &mut new, 5).unwrap();
    assert_eq!(r.key_roll, KeyRoll::Selection);
    assert_eq!(old.state().selected_transfer_key_id, Some(TransferKeyId(3)));
    assert_eq!(old.state().transfer_keys, before, "selection stores no new key");
    assert_eq!(new.state().balance, Amount(5));
}

#[test]
fn card_past_its_limit_is_stranded_and_nothing_moves() {
    let mut old = card(1, Profile::Symmetric, 1, 1, 2, 100);
    let mut new = card(2, Profile::Symmetric, 3, 1, 5, 0);
    let (sa, sb) = (persisted(&old), persisted(&new));
    let e = settle_cards(&mut old, &mut new, 10).unwrap_err();
    assert!(matches!(e, SettleError::Stranded { role: Role::Payer, newer: TransferKeyId(3), .. }), "{e}");
    assert_eq!((persisted(&old), persisted(&new)), (sa, sb));
}

#[test]
fn different_update_keys_without_certificates_have_no_path() {
    let mut old = card(1, Profile::Symmetric, 1, 1, 5, 100);
    let mut new = card(2, Profile::Symmetric, 2, 2, 5, 0);
    let e = settle_cards(&mut old, &mut new, 10).unwrap_err();
    assert!(matches!(e, SettleError::NoPath { .. }), "{e}");
    assert_eq!(old.state().balance, Amount(100));
}

#[test]
fn insufficient_balance_and_maximum_balance_are_refused() {
    let mut a = card(1, Profile::Symmetric, 1, 1, 5, 10);
    let mut b = card(2, Profile::Symmetric, 1, 1, 5, 999_995);
    assert!(matches!(settle_cards(&mut a, &mut b, 11).unwrap_err(), SettleError::InsufficientBalance { .. }));
    assert!(matches!(settle_cards(&mut a, &mut b, 10).unwrap_err(), SettleError::MaximumBalance { .. }));
    assert_eq!(a.state().balance, Amount(10));
    assert!(b.state().pending_in.is_empty());
}

#[test]
fn half_written_card_is_refused() {
    use keyroll::card::Card;
    use keyroll::card::storage::{MemoryStorage, TearingStorage};
    let mut blank = Card::open(TearingStorage::new(MemoryStorage::new())).unwrap();
    let mut b = card(2, Profile::Symmetric, 1, 1, 5, 0);
    let mut ch = keyroll::transport::in_process::InProcessChannel::new(&mut blank, "blank");
    let mut cb = keyroll::transport::in_process::InProcessChannel::new(&mut b, "b");
    let e = keyroll::terminal::settle(&mut ch, &mut cb, Amount(1), &Default::default()).unwrap_err();
    assert!(matches!(e, SettleError::NotIssued { role: Role::Payer, .. }), "{e}");
}

#[test]
fn torn_credit_is_recovered_by_the_next_settlement() {
    use keyroll::card::storage::Tear;
    let mut a = card(1, Profile::Symmetric, 1, 1, 5, 100);
    let mut b = card(2, Profile::Symmetric, 1, 1, 5, 0);
    // Payee writes: BEGIN RECEIVE (1), CREDIT (2). Cut before CREDIT lands.
    b.storage_mut().arm(2, Tear::BeforeWrite);
    assert!(settle_cards(&mut a, &mut b, 40).is_err());
    assert_eq!(a.state().balance, Amount(60));
    assert_eq!(a.state().pending_out.len(), 1);
    b.power_on();
    let r = settle_cards(&mut a, &mut b, 0).unwrap();
    assert_eq!(r.recovered.len(), 1, "{:?}", r.recovered);
    assert_eq!(a.state().balance, Amount(100), "refunded");
    assert_eq!(b.state().balance, Amount(0));
    assert!(a.state().pending_out.is_empty() && b.state().pending_in.is_empty());
}

#[test]
fn torn_confirm_is_completed_by_the_next_settlement() {
    use keyroll::card::storage::Tear;
    let mut a = card(1, Profile::Symmetric, 1, 1, 5, 100);
    let mut b = card(2, Profile::Symmetric, 1, 1, 5, 0);
    // Payer writes: DEBIT (1), CONFIRM (2).
    a.storage_mut().arm(2, Tear::BeforeWrite);
    assert!(settle_cards(&mut a, &mut b, 40).is_err());
    a.power_on();
    assert_eq!(b.state().balance, Amount(40));
    let r = settle_cards(&mut a, &mut b, 0).unwrap();
    assert_eq!(r.recovered.len(), 1);
    assert_eq!((a.state().balance, b.state().balance), (Amount(60), Amount(40)));
    assert!(a.state().pending_out.is_empty());
}

/// A settlement that rolled a key and then failed on the amount says that it changed a card (issue 14
/// item 11; before, only "balance below the amount" was reported, though the payee now held key 2).
#[test]
fn a_failure_after_a_key_roll_reports_the_roll() {
    let mut a = card(1, Profile::Symmetric, 2, 1, 5, 10);
    let mut b = card(2, Profile::Symmetric, 1, 1, 5, 0);
    let e = settle_cards(&mut a, &mut b, 11).unwrap_err();
    assert!(matches!(e.cause(), SettleError::InsufficientBalance { .. }), "{e}");
    let SettleError::AfterChanges { changes, .. } = &e else { panic!("the roll is not reported: {e}") };
    let roll = changes.key_roll.as_ref().expect("a key roll");
    assert_eq!(
        (roll.card, roll.serial, roll.transfer_key_id),
        (Role::Payee, b.state().serial.unwrap(), Some(TransferKeyId(2)))
    );
    assert!(e.to_string().contains("rolled transfer key 2 onto the payee card"), "{e}");
    assert_eq!(b.state().selected_transfer_key_id, Some(TransferKeyId(2)));
    // A failure that changed nothing is reported as it is.
    let e = settle_cards(&mut a, &mut b, 11).unwrap_err();
    assert!(matches!(e, SettleError::InsufficientBalance { .. }), "{e}");
}
