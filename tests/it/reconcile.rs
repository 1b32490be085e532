//! Issue 13: `reconcile` over cards' MAC'd logs and a settlement journal, with a torn settlement.

use super::value_attacks::export;
use crate::support::*;
use keyroll::card::storage::Tear;
use keyroll::crypto::Secret16;
use keyroll::domain::*;
use keyroll::protocol::SmartCard;
use keyroll::protocol::ledger::JournalOutcome;
use keyroll::rollout::reconcile::{self, Flag, JournalText, Reconciliation, Resolver};
use keyroll::terminal::{SettleOptions, settle};
use keyroll::transport::in_process::InProcessChannel;
use std::path::Path;

fn settle_journaled(a: &mut TestCard, b: &mut TestCard, amount: u64, journal: &Path) -> bool {
    let mut x = InProcessChannel::new(a, "payer");
    let mut y = InProcessChannel::new(b, "payee");
    let options = SettleOptions { journal: Some(journal.to_path_buf()), ..Default::default() };
    settle(&mut x, &mut y, Amount(amount), &options).is_ok()
}

fn run(cards: &[&TestCard], journal: &str) -> Reconciliation {
    let exports: Vec<_> = cards.iter().map(|c| export(c)).collect();
    let j = [JournalText { name: "j".into(), text: journal }];
    reconcile::reconcile(&exports, &j, &|s| reconcile::log_key(&Secret16::new(LOG_MASTER), s))
}

#[test]
fn a_torn_settlement_is_exactly_in_flight_until_an_honest_settlement_resolves_it() {
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("journal.jsonl");
    let mut a = card(1, Profile::Symmetric, 1, 1, 5, 100);
    let mut b = card(2, Profile::Symmetric, 1, 1, 5, 50);
    let mut c = card(3, Profile::Symmetric, 1, 1, 5, 0);
    assert!(settle_journaled(&mut a, &mut b, 10, &jp));
    assert!(settle_journaled(&mut b, &mut c, 20, &jp));
    // Payee writes: BEGIN RECEIVE (1), CREDIT (2): cut the power before CREDIT lands.
    c.storage_mut().arm(2, Tear::BeforeWrite);
    assert!(!settle_journaled(&mut a, &mut c, 37, &jp));
    c.storage_mut().disarm();
    c.power_on();
    let text = std::fs::read_to_string(&jp).unwrap();
    let (lines, _) = keyroll::protocol::ledger::verify_journal(&text).unwrap();
    assert_eq!(
        lines.iter().map(|l| l.record.outcome).collect::<Vec<_>>(),
        vec![JournalOutcome::Settled, JournalOutcome::Settled, JournalOutcome::Torn]
    );
    let r = run(&[&a, &b, &c], &text);
    assert_eq!((r.issued, r.balances, r.in_flight, r.unaccounted), (Total(150), Total(113), Total(37), 0), "{r:?}");
    assert_eq!(
        r.transfers_in_flight[0].resolver,
        Resolver::Cards { payer: CardSerial::from_u64(1), payee: CardSerial::from_u64(3) }
    );
    assert!(r.accounted(), "{:?}", r.flags);

    assert!(settle_journaled(&mut a, &mut c, 0, &jp), "honest settlement recovers");
    let text = std::fs::read_to_string(&jp).unwrap();
    let r = run(&[&a, &b, &c], &text);
    assert_eq!((r.in_flight, r.unaccounted), (Total(0), 0));
    assert!(r.accounted(), "{:?}", r.flags);

    // An edited, a deleted and a reordered journal line, and an edited card log, are all detected.
    let lines: Vec<&str> = text.lines().collect();
    let join = |v: &[&str]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
    let edited_mid = join(&[lines[0], &lines[1].replace("\"amount\":20", "\"amount\":2"), lines[2], lines[3]]);
    // The last line has no successor to break; what it claims is checked against the cards instead.
    let edited_last = join(&[lines[0], lines[1], &lines[2].replace("\"amount\":37", "\"amount\":3")]);
    let edited_first_of_two = join(&[&lines[0].replace("\"amount\":10", "\"amount\":11")]);
    let deleted = join(&[lines[0], lines[2], lines[3]]);
    let reordered = join(&[lines[1], lines[0], lines[2], lines[3]]);
    for (what, t) in [
        ("edited middle line", &edited_mid),
        ("edited last line", &edited_last),
        ("edited only line", &edited_first_of_two),
        ("deleted line", &deleted),
        ("reordered lines", &reordered),
    ] {
        let r = run(&[&a, &b, &c], t);
        assert!(r.flags.iter().any(|f| matches!(f, Flag::Journal { .. })), "{what}: {:?}", r.flags);
        assert!(!r.accounted(), "{what}");
    }
    let mut forged = export(&b);
    forged.entries.retain(|e| e.kind != keyroll::protocol::ledger::EntryKind::Debit);
    let r = reconcile::reconcile(&[export(&a), forged, export(&c)], &[], &|s| {
        reconcile::log_key(&Secret16::new(LOG_MASTER), s)
    });
    assert!(r.flags.iter().any(|f| matches!(f, Flag::BadExport { .. })), "{:?}", r.flags);
}

/// `keyroll reconcile` through the binary: a fleet of card files and a journal from `settle --journal`
/// accounts for everything (exit 0, JSON fields of DESIGN §9); a card file whose balance was edited
/// no longer adds up (exit 1).
#[test]
fn reconcile_command_accounts_for_a_fleet_and_exits_1_on_an_edited_card() {
    use crate::support::cli::Scratch;
    let s = Scratch::new();
    let cards = s.init_with_cards("symmetric", 3);
    let spec = |i: usize| crate::support::cli::file_reader(&cards[i]);
    s.ok(&["settle", "--payer", &spec(0), "--payee", &spec(1), "--amount", "30", "--journal", "j.jsonl"]);
    s.ok(&["settle", "--payer", &spec(1), "--payee", &spec(2), "--amount", "5", "--journal", "j.jsonl"]);
    let v = s.json(&["reconcile", "--cards", "cards", "--journal", "j.jsonl"]);
    assert_eq!(
        (v["issued"].as_u64(), v["balances"].as_u64(), v["in_flight"].as_u64()),
        (Some(300), Some(300), Some(0)),
        "{v}"
    );
    assert_eq!(v["unaccounted"].as_i64(), Some(0), "{v}");
    assert_eq!(std::fs::read_to_string(s.path("j.jsonl")).unwrap().lines().count(), 2);
    // The holder edits a card file's balance: the card's own totals no longer add up.
    crate::support::edit_card_file(&cards[2], |card| {
        assert_eq!(card["balance"], serde_json::json!(105), "{card}");
        card["balance"] = serde_json::json!(500);
    });
    let o = s.run(&["reconcile", "--cards", "cards", "--journal", "j.jsonl"]);
    assert_eq!(o.status.code(), Some(1), "{}", crate::support::cli::stderr(&o));
}
