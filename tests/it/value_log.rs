//! Issue 13 item 5 (session 4): a card's log names the counterparty of a key roll. Version 1 (and the
//! first version of the log export) wrote `0000000000000000`, so `reconcile` and an auditor could not
//! tell which card a key came from.

use crate::support::*;
use keyroll::domain::*;
use keyroll::protocol::ledger::EntryKind;
use keyroll::terminal::KeyRoll;

fn key_roll_sources(card: &TestCard) -> Vec<CardSerial> {
    let export = card.state().export_log(&[0; 16]).expect("a personalised card exports its log");
    export.entries.iter().filter(|e| e.kind == EntryKind::KeyRoll).map(|e| e.counterpart).collect()
}

#[test]
fn every_key_roll_path_logs_the_card_the_key_came_from() {
    // Symmetric path (claims 10-11): card 1 takes transfer key 2 from card 2.
    let mut old = card(1, Profile::Symmetric, 1, 1, 5, 100);
    let mut new = card(2, Profile::Symmetric, 2, 1, 5, 0);
    let r = settle_cards(&mut old, &mut new, 10).unwrap();
    assert_eq!(r.key_roll, KeyRoll::Symmetric);
    assert_eq!(key_roll_sources(&old), [CardSerial::from_u64(2)]);
    assert!(key_roll_sources(&new).is_empty(), "the sender logs no key roll");

    // Public-key path (claims 12-16): card 3 takes transfer key 3 from card 4.
    let ca = TestCa::new("key roll log");
    let mut a = pk_card(3, Profile::PublicKey, 1, 0, 5, 100, &ca, &ca.root);
    let mut b = pk_card(4, Profile::PublicKey, 3, 0, 5, 100, &ca, &ca.root);
    let r = settle_cards(&mut a, &mut b, 10).unwrap();
    assert_eq!(r.key_roll, KeyRoll::PublicKey);
    assert_eq!(key_roll_sources(&a), [CardSerial::from_u64(4)]);

    // Selection on a multi-key card (claims 8-9): card 5 selects key 3, sent by card 6.
    let mut m = card(5, Profile::MultiKey, 1, 1, 4, 100);
    let mut s = card(6, Profile::Symmetric, 3, 1, 5, 0);
    let r = settle_cards(&mut m, &mut s, 10).unwrap();
    assert_eq!(r.key_roll, KeyRoll::Selection);
    assert_eq!(key_roll_sources(&m), [CardSerial::from_u64(6)]);
    assert!(key_roll_sources(&m).iter().all(|s| *s != CardSerial::default()));
}
