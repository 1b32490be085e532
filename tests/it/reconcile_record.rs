//! Issue 13 item 5 and the journal head (session 4): `keyroll reconcile` records its result in the issuer
//! database, bound to the signed audit log; `audit report` shows the latest one and fails when it left
//! value unaccounted or flagged anything; an edited reconciliation row is tampering; and a settlement
//! journal whose last line was deleted is flagged against the head kept outside it (the recorded
//! reconciliation's, or the one `settle --journal` printed, given as `--expect-head`).
//! Everything through the real binary and the sqlite3 CLI.

use crate::support::cli::{Scratch, file_reader, stderr};
use serde_json::Value;
use std::process::Output;

/// An issuer with three personalised symmetric cards of 100 each and two journaled settlements
/// (30 from card 0 to card 1, 5 from card 1 to card 2). Returns the `settle --json` of the second.
fn fleet() -> (Scratch, Vec<std::path::PathBuf>, Value) {
    fleet_with_text().0
}

/// [`fleet`], and the text output of the first settlement.
fn fleet_with_text() -> ((Scratch, Vec<std::path::PathBuf>, Value), String) {
    let s = Scratch::new();
    let cards = s.init_with_cards("symmetric", 3);
    let spec = |i: usize| file_reader(&cards[i]);
    let first = s.ok(&["settle", "--payer", &spec(0), "--payee", &spec(1), "--amount", "30", "--journal", "j.jsonl"]);
    let second = s.json(&["settle", "--payer", &spec(1), "--payee", &spec(2), "--amount", "5", "--journal", "j.jsonl"]);
    ((s, cards, second), first)
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

fn report(s: &Scratch) -> (Option<i32>, Value) {
    let o = s.run(&["--json", "audit", "report", "--expect-root", s.expect_root().as_str()]);
    (o.status.code(), json_of(&o))
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["verdict"]["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

fn delete_last_line(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let kept: String = lines[..lines.len() - 1].iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, kept).unwrap();
}

/// Version 1 of `reconcile` stored nothing and `audit report` had no reconciliation: the `recorded`
/// object, the report's `reconciliation` and its `reconciled` check did not exist (this test failed on
/// `reconciliation`). Now: recorded, shown, and a flagged latest reconciliation fails the report.
#[test]
fn audit_report_shows_the_latest_reconciliation_and_fails_when_it_did_not_add_up() {
    let (s, cards, _) = fleet();
    // Before any reconciliation: the report passes and says none was recorded.
    let (code, r) = report(&s);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["reconciliation"], Value::Null);
    assert_eq!(check(&r, "reconciled")["ok"], true);

    let v = s.json(&["reconcile", "--cards", "cards", "--journal", "j.jsonl"]);
    assert_eq!(v["recorded"]["id"], 1, "{v}");
    assert_eq!(v["recorded"]["journals"][0]["lines"], 2, "{v}");
    let (code, r) = report(&s);
    assert_eq!(code, Some(0), "{r}");
    let rec = &r["reconciliation"];
    assert_eq!(
        (rec["id"].as_i64(), rec["cards"].as_u64(), rec["issued"].as_u64(), rec["balances"].as_u64()),
        (Some(1), Some(3), Some(300), Some(300)),
        "{rec}"
    );
    assert_eq!(
        (rec["in_flight"].as_u64(), rec["unaccounted"].as_i64(), rec["flags"].as_u64()),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(rec["accounted"], true);
    assert_eq!(rec["cards_digest"].as_str().map(str::len), Some(64), "{rec}");
    assert_eq!(rec["journals"][0]["lines"], 2);
    // The audit log recorded it (action `reconcile`, binding the row).
    assert_eq!(s.sqlite("SELECT count(*) FROM audit_log WHERE action = 'reconcile';").trim(), "1");
    let text = s.ok(&["audit", "report", "--expect-root", s.expect_root().as_str()]);
    assert!(text.contains("reconciled    1 at "), "{text}");
    assert!(text.contains("unaccounted 0, 0 flag(s)"), "{text}");

    // A holder edits its card file's balance: reconcile says no (exit 1) and records that it did.
    crate::support::edit_card_file(&cards[2], |card| card["balance"] = serde_json::json!(500));
    let o = s.run(&["--json", "reconcile", "--cards", "cards", "--journal", "j.jsonl"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(json_of(&o)["recorded"]["id"], 2);
    let (code, r) = report(&s);
    assert_eq!(code, Some(1), "a flagged latest reconciliation fails the report: {r}");
    assert_eq!(r["reconciliation"]["id"], 2);
    assert_eq!(r["reconciliation"]["accounted"], false);
    assert_eq!(check(&r, "reconciled")["ok"], false);
    assert_eq!(check(&r, "log_intact")["ok"], true, "only the reconciliation fails");
    let o = s.run(&["audit", "report", "--expect-root", s.expect_root().as_str()]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("NOT accounted") && text.contains("verdict       FAIL"), "{text}");
    assert!(stderr(&o).contains("reconciled:"), "{}", stderr(&o));
}

/// A writer without an identity makes the failed reconciliation look clean: `audit log` names the row,
/// the report fails on its log check, and the next custodian command refuses the database. Version 1:
/// there was no row to edit; this test failed at the first `reconcile` (no `recorded`).
#[test]
fn an_edited_reconciliation_row_is_tampering() {
    let (s, cards, _) = fleet();
    crate::support::edit_card_file(&cards[2], |card| card["balance"] = serde_json::json!(500));
    let o = s.run(&["--json", "reconcile", "--cards", "cards", "--journal", "j.jsonl"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let before = s.dump();
    s.sqlite("UPDATE reconciliations SET unaccounted = '0', flags = 0, balances = '300' WHERE id = 1;");

    let o = s.run(&["audit", "log"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("reconciliations row 1"), "{}", stderr(&o));
    let (code, r) = report(&s);
    assert_eq!(code, Some(1), "{r}");
    assert_eq!(check(&r, "log_intact")["ok"], false, "{r}");
    // A custodian (reconcile unlocks) refuses before reading any secret; nothing is recorded.
    let edited = s.dump();
    let o = s.run(&["reconcile", "--cards", "cards", "--journal", "j.jsonl"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("refusing to use this database"), "{}", stderr(&o));
    assert_eq!(s.dump(), edited, "a refused command changes nothing");
    assert_ne!(before, edited);
}

/// Deleting the last journal line leaves a valid, shorter chain: the journal alone cannot tell (version
/// 1's `reconcile` exited 0 here, which is the first assertion of the second half). The head recorded by
/// the last reconciliation catches it, and keeps catching it on the next run.
#[test]
fn a_deleted_last_journal_line_is_flagged_against_the_recorded_head() {
    let (s, cards, _) = fleet();
    s.ok(&["reconcile", "--cards", "cards", "--journal", "j.jsonl"]);
    let j = s.path("j.jsonl");
    delete_last_line(&j);
    let o = s.run(&["--json", "reconcile", "--cards", "cards", "--journal", "j.jsonl"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v = json_of(&o);
    let flags = v["flags"].as_array().unwrap();
    assert_eq!(flags.len(), 1, "{v}");
    assert_eq!(flags[0]["flag"], "journal");
    assert_eq!(flags[0]["line"], 2);
    assert!(flags[0]["why"].as_str().unwrap().contains("does not extend the head reconciliation 1 recorded"), "{v}");
    // The loss is not laundered by running again: the recorded anchor is still the 2-line head.
    assert_eq!(v["recorded"]["journals"][0]["lines"], 2, "{v}");
    let o = s.run(&["reconcile", "--cards", "cards", "--journal", "j.jsonl"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stdout));
    // Renaming the journal does not escape it either (known by its first line).
    std::fs::rename(&j, s.path("renamed.jsonl")).unwrap();
    let o = s.run(&["reconcile", "--cards", "cards", "--journal", "renamed.jsonl"]);
    assert_eq!(o.status.code(), Some(1));
    let (code, r) = report(&s);
    assert_eq!(code, Some(1), "{r}");

    // A journal that grows is fine: after the flagged runs, a fresh journal and a further settlement.
    let spec = |i: usize| file_reader(&cards[i]);
    s.ok(&["settle", "--payer", &spec(2), "--payee", &spec(0), "--amount", "1", "--journal", "k.jsonl"]);
    s.ok(&["reconcile", "--cards", "cards", "--journal", "k.jsonl"]);
    s.ok(&["settle", "--payer", &spec(2), "--payee", &spec(0), "--amount", "1", "--journal", "k.jsonl"]);
    s.ok(&["reconcile", "--cards", "cards", "--journal", "k.jsonl"]);
}

/// Without any reconciliation recorded, the head `settle --journal` printed is the anchor: given back
/// as `--expect-head`, a deleted last line is flagged. Without it the journal alone says nothing (exit
/// 0): that is the honest limit the head exists for.
#[test]
fn a_deleted_last_journal_line_is_flagged_against_the_head_settle_printed() {
    let ((s, _, second), first) = fleet_with_text();
    let line0 = std::fs::read_to_string(s.path("j.jsonl")).unwrap().lines().next().unwrap().to_string();
    let h0 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(line0.as_bytes()));
    assert!(first.contains(&format!("journal head     {h0} (1 lines)")), "{first}");
    let head =
        second["journal"]["head"].as_str().unwrap_or_else(|| panic!("settle --json has no journal head: {second}"));
    assert_eq!(second["journal"]["lines"], 2);
    let text = std::fs::read_to_string(s.path("j.jsonl")).unwrap();
    let last = text.lines().last().unwrap();
    assert_eq!(
        head,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(last.as_bytes())),
        "the head is the last line's hash"
    );
    delete_last_line(&s.path("j.jsonl"));
    // The journal alone: a valid chain, nothing to flag (and nothing recorded before to hold it to).
    s.ok(&["reconcile", "--cards", "cards", "--journal", "j.jsonl"]);
    let o = s.run(&["--json", "reconcile", "--cards", "cards", "--journal", "j.jsonl", "--expect-head", head]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v = json_of(&o);
    assert!(v["flags"].as_array().unwrap().iter().any(|f| f["why"].as_str().unwrap_or("").contains(head)), "{v}");
    // A malformed head is bad input, and records nothing.
    let n = s.sqlite("SELECT count(*) FROM reconciliations;");
    let o = s.run(&["reconcile", "--cards", "cards", "--journal", "j.jsonl", "--expect-head", "abc"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("hint:"));
    assert_eq!(s.sqlite("SELECT count(*) FROM reconciliations;"), n);
}

/// The same record on PostgreSQL: its columns encode like SQLite's (the row digest), so the log vouches
/// for it and the report shows it.
#[test]
fn a_reconciliation_on_postgres_is_recorded_and_vouched_for() {
    let s = Scratch::postgres();
    let cards = s.init_with_cards("symmetric", 2);
    let spec = |i: usize| file_reader(&cards[i]);
    s.ok(&["settle", "--payer", &spec(0), "--payee", &spec(1), "--amount", "7", "--journal", "j.jsonl"]);
    let v = s.json(&["reconcile", "--cards", "cards", "--journal", "j.jsonl"]);
    assert_eq!(v["recorded"]["id"], 1, "{v}");
    s.ok(&["audit", "log"]);
    let root = s.sql("SELECT encode(root_der, 'hex') FROM ca");
    let root = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(hex::decode(root.trim()).unwrap()));
    let r = s.json(&["audit", "report", "--expect-root", &root]);
    assert_eq!(
        (r["reconciliation"]["issued"].as_u64(), r["reconciliation"]["accounted"].as_bool()),
        (Some(200), Some(true))
    );
    s.sql("UPDATE reconciliations SET issued = '201'");
    let o = s.run(&["audit", "log"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("reconciliations row 1"), "{}", stderr(&o));
}
