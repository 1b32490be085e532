//! Issue 13 (session 5): cards reached over real PC/SC are reconciled. Two card files served by `keyroll
//! card serve` into pcscd's vpcd readers; `card export-log --reader` collects each log with EXPORT LOG
//! (the longest answers come through GET RESPONSE over the real reader stack) and `reconcile --reader`
//! reads them itself; `reconcile --export` accounts for the collected files; an export of an earlier
//! round is refused. Needs pcscd and vsmartcard-vpcd (the harness starts pcscd when none runs).

#![cfg(feature = "pcsc")]

use super::pcsc_cli::serve;
use crate::support::cli::{Scratch, stderr};
use crate::support::pcscd::acquire;

#[test]
fn cards_exported_through_readers_reconcile_and_a_stale_export_is_refused() {
    let pc = acquire();
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "b", "--profile", "symmetric", "--transfer-key-limit", "3", "--initial-balance", "100"]);
    s.ok(&["perso", "--batch", "b", "--out-dir", "cards", "--count", "2"]);
    let cards = s.card_files("cards");
    // 30, then ten payments of 1: eleven log entries each, an export longer than one short response.
    for amount in [30, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1] {
        s.ok(&[
            "settle",
            "--payer",
            &format!("file:{}", cards[0].display()),
            "--payee",
            &format!("file:{}", cards[1].display()),
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

    // This round's exports account for the fleet as it was when they were taken.
    let r = s.json(&["reconcile", "--export", "a.json", "--export", "b.json", "--challenge", &c]);
    assert_eq!((r["balances"].as_u64(), r["unaccounted"].as_i64()), (Some(200), Some(0)), "{r}");
    let export: serde_json::Value = serde_json::from_slice(&std::fs::read(s.path("a.json")).unwrap()).unwrap();
    assert_eq!(export["challenge"].as_str(), Some(c.as_str()));
    // In the next round the same file is stale: refused with a hint, nothing recorded.
    let before = s.sql("SELECT count(*) FROM reconciliations");
    let c2 = s.json(&["card", "challenge"])["challenge"].as_str().unwrap().to_string();
    let o = s.run(&["reconcile", "--export", "a.json", "--export", "b.json", "--challenge", &c2]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("stale") && stderr(&o).contains("hint:"), "{}", stderr(&o));
    assert_eq!(s.sql("SELECT count(*) FROM reconciliations"), before);
    // The cards as they are now (card files after the settlement over the readers): 55 and 145.
    let r = s.json(&["reconcile", "--cards", "cards"]);
    assert_eq!((r["balances"].as_u64(), r["unaccounted"].as_i64()), (Some(200), Some(0)), "{r}");
}
