//! Issue 13 (session 5): cards reached over real PC/SC are reconciled. Two card files served by `keyroll
//! card serve` into pcscd's vpcd readers; `card export-log --reader` collects each log with EXPORT LOG
//! (the longest answers come through GET RESPONSE over the real reader stack) and `reconcile --reader`
//! reads them itself; `reconcile --export` accounts for the collected files; an export of an earlier
//! round is refused. Needs pcscd and vsmartcard-vpcd (the harness starts pcscd when none runs).

#![cfg(feature = "pcsc")]

use super::pcsc_cli::serve;
use crate::support::cli::{Scratch, file_reader, stderr};
use crate::support::pcscd::acquire;

#[test]
fn cards_exported_through_readers_reconcile_and_a_stale_export_is_refused() {
    let pc = acquire();
    let s = Scratch::new();
    let cards = s.init_with_cards("symmetric", 2);
    // 30, then ten payments of 1: eleven log entries each, an export longer than one short response.
    for amount in [30, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1] {
        s.ok(&[
            "settle",
            "--payer",
            &file_reader(&cards[0]),
            "--payee",
            &file_reader(&cards[1]),
            "--amount",
            &amount.to_string(),
        ]);
    }
    let c = s.json(&["card", "challenge"])["challenge"].as_str().unwrap().to_string();

    let a = serve(&s, &cards[0], pc.reader(0));
    let b = serve(&s, &cards[1], pc.reader(1));
    a.wait_inserted();
    b.wait_inserted();
    let o = s.run(&["--json", "-v", "card", "export-log", "--reader", "00 00", "--challenge", &c, "--out", "a.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ea: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // 11 entries: 94 + 11 × 25 = 369 bytes, the rest after 256 fetched with GET RESPONSE (00 C0).
    assert!(stderr(&o).contains("80 44 00 00") && stderr(&o).contains("00 C0 00 00"), "{}", stderr(&o));
    let eb = s.json(&["card", "export-log", "--reader", "00 01", "--challenge", &c, "--out", "b.json"]);
    assert_eq!((ea["balance"].as_u64(), eb["balance"].as_u64()), (Some(60), Some(140)), "{ea} {eb}");
    assert_eq!((ea["entries"].as_u64(), eb["entries"].as_u64()), (Some(11), Some(11)), "{ea} {eb}");
    // This round's exports account for the fleet (recorded as reconciliation 1, which closes the round).
    let r = s.json(&["reconcile", "--export", "a.json", "--export", "b.json", "--challenge", &c]);
    assert_eq!((r["balances"].as_u64(), r["unaccounted"].as_i64()), (Some(200), Some(0)), "{r}");
    let export: serde_json::Value = serde_json::from_slice(&std::fs::read(s.path("a.json")).unwrap()).unwrap();
    assert_eq!(export["challenge"].as_str(), Some(c.as_str()));
    // The back office reads the cards in the readers itself, each with a challenge of its own.
    let r = s.json(&["reconcile", "--reader", "00 00", "--reader", "00 01"]);
    assert_eq!(
        (
            r["cards"].as_u64(),
            r["issued"].as_u64(),
            r["balances"].as_u64(),
            r["in_flight"].as_u64(),
            r["unaccounted"].as_i64()
        ),
        (Some(2), Some(200), Some(200), Some(0), Some(0)),
        "{r}"
    );
    // The cards move on over the readers.
    let settled = s.json(&["settle", "--payer", "00 00", "--payee", "00 01", "--amount", "5"]);
    assert_eq!(settled["amount"].as_u64(), Some(5), "{settled}");
    a.pull();
    b.pull();

    // The round is over: the same files, with their own challenge or with the next round's, are refused
    // with a hint, and nothing is recorded.
    let before = s.sql("SELECT count(*) FROM reconciliations");
    let c2 = s.json(&["card", "challenge"])["challenge"].as_str().unwrap().to_string();
    for challenge in [&c, &c2] {
        let o = s.run(&["reconcile", "--export", "a.json", "--export", "b.json", "--challenge", challenge]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
    }
    assert_eq!(s.sql("SELECT count(*) FROM reconciliations"), before);
    // The cards as they are now (card files after the settlement over the readers): 55 and 145.
    let r = s.json(&["reconcile", "--cards", "cards"]);
    assert_eq!((r["balances"].as_u64(), r["unaccounted"].as_i64()), (Some(200), Some(0)), "{r}");
}
