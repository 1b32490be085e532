//! Attacks on the back office by a writer to the database file without an identity (issue 14, DESIGN.md
//! §10 point 7), each through the real binary and the `sqlite3` CLI. Each must be detected with exit 1
//! before any secret is used or any card personalised, and `audit log` must name the table and row.

use crate::support::cli::{Scratch, stderr};
use std::process::Output;

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A custodian issuer with one symmetric batch.
fn issuer() -> Scratch {
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "b", "--profile", "symmetric", "--transfer-key-limit", "5", "--initial-balance", "10"]);
    s
}

/// Personalising must be refused with exit 1 and leave no card behind.
fn perso_refused(s: &Scratch, why: &str) {
    let o = s.run(&["perso", "--batch", "b", "--out-dir", "cards", "--count", "2"]);
    assert_eq!(code(&o), 1, "{why}: {}", stderr(&o));
    assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
    let cards = s.path("cards");
    assert!(!cards.exists() || std::fs::read_dir(&cards).unwrap().next().is_none(), "{why}: no card written");
}

/// `audit log` must fail and name the row.
fn audit_log_names(s: &Scratch, needle: &str) {
    let o = s.run(&["audit", "log"]);
    assert_eq!(code(&o), 1, "{}", String::from_utf8_lossy(&o.stdout));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(needle), "audit log should name {needle:?}: {out}");
}

#[test]
fn a_substituted_transfer_key_is_refused_before_it_is_used() {
    let s = issuer();
    s.ok(&["key", "new", "transfer", "--pending"]);
    // The attacker's own key (from a database it made), with its matching key check value.
    let attacker = Scratch::new();
    attacker.init();
    attacker.ok(&["key", "new", "transfer", "--pending"]);
    let row = attacker.sqlite("SELECT kcv || '|' || hex(ciphertext) FROM keys WHERE kind = 'transfer' AND key_id = 2;");
    let (kcv, ct) = row.trim().split_once('|').unwrap();
    s.sqlite(&format!("UPDATE keys SET kcv = '{kcv}', ciphertext = X'{ct}' WHERE kind = 'transfer' AND key_id = 2;"));
    let before = s.dump();
    let o = s.run(&["key", "activate", "transfer", "2"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("state the signed log records"), "{}", stderr(&o));
    assert_eq!(s.dump(), before, "nothing changed");
    perso_refused(&s, "substituted key");
    audit_log_names(&s, "keys row 3 differs from what log entry");
    let o = s.run(&[
        "key",
        "export",
        "--to",
        "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq",
        "--out",
        "x.age",
        "--transfer",
        "2",
    ]);
    assert_ne!(code(&o), 0);
    assert!(!s.path("x.age").exists(), "no key left the database");
}

#[test]
fn an_edited_batch_is_refused_before_any_card_is_personalised() {
    let s = issuer();
    s.sqlite("UPDATE batches SET initial_balance = 99999, transfer_key_id_limit = 99;");
    perso_refused(&s, "edited batch");
    audit_log_names(&s, "batches row 1 differs");
    let o = s.run(&["audit", "report"]);
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stdout).contains("NOT intact"));
}

#[test]
fn a_row_inserted_or_deleted_outside_keyroll_is_named() {
    let s = issuer();
    s.ok(&["perso", "--batch", "b", "--out-dir", "cards", "--count", "2"]);
    s.ok(&["audit", "log"]);
    let t = s.copy();
    t.sqlite("DELETE FROM cards WHERE id = 2;");
    audit_log_names(&t, "cards row 2, written by log entry");
    let t = s.copy();
    t.sqlite("UPDATE cards SET issued_value = 5000 WHERE id = 1;");
    audit_log_names(&t, "cards row 1 differs");
    let t = s.copy();
    t.sqlite(
        "INSERT INTO batches (name, profile, transfer_key_id_limit, transfer_key_id, update_key_id, initial_balance, max_balance, created_at)
         VALUES ('evil', 'symmetric', 9, 1, 1, 1, 10, 'now');",
    );
    audit_log_names(&t, "batches row 2 was written outside keyroll");
}

#[test]
fn a_database_rewritten_under_another_audit_key_with_an_extra_custodian_is_refused() {
    let s = issuer();
    let victim = std::fs::read_to_string(s.path("keyroll.db.identity")).unwrap();
    let victim_recipient = victim.lines().find_map(|l| l.strip_prefix("# public key: ")).unwrap().trim().to_string();
    // The attacker makes a fresh database (its own audit key) for the victim's recipient and its own.
    let attacker = Scratch::new();
    attacker.init();
    let intruder = std::fs::read_to_string(attacker.path("keyroll.db.identity")).unwrap();
    let intruder_recipient =
        intruder.lines().find_map(|l| l.strip_prefix("# public key: ")).unwrap().trim().to_string();
    let forged = Scratch::new();
    forged.ok(&[
        "init",
        "--issuer",
        "Test Issuer",
        "--custodian",
        &victim_recipient,
        "--custodian",
        &intruder_recipient,
    ]);
    std::fs::copy(forged.path("keyroll.db"), s.path("keyroll.db")).unwrap();
    let before = s.dump();
    let o = s.run(&["key", "new", "transfer"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("not the one pinned"), "{}", stderr(&o));
    assert_eq!(s.dump(), before, "no key was encrypted to the intruder");
    perso_refused(&s, "rewritten database");
}

#[test]
fn an_unpinned_database_is_refused_with_exit_2() {
    // A custodian given with `init --custodian` has no pin yet: no custodian command runs.
    let keys = Scratch::new();
    keys.init();
    let id = std::fs::read_to_string(keys.path("keyroll.db.identity")).unwrap();
    let recipient = id.lines().find_map(|l| l.strip_prefix("# public key: ")).unwrap().trim().to_string();
    // An identity file without keyroll's pin line (as age-keygen writes one).
    let bare: String = id.lines().filter(|l| !l.starts_with("# keyroll audit key")).map(|l| format!("{l}\n")).collect();
    let s = Scratch::new();
    std::fs::write(s.path("keyroll.db.identity"), bare).unwrap();
    s.ok(&["init", "--issuer", "Other", "--custodian", &recipient]);
    let before = s.dump();
    let o = s.run(&["key", "new", "transfer"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--expect-key"), "{}", stderr(&o));
    assert_eq!(s.dump(), before);
}

#[test]
fn a_cleared_revocation_is_detected() {
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "p", "--profile", "public-key", "--transfer-key-limit", "5"]);
    s.ok(&["perso", "--batch", "p", "--out-dir", "cards", "--count", "2"]);
    let card = s.sqlite("SELECT card_serial FROM certificates ORDER BY id LIMIT 1;").trim().to_string();
    s.ok(&["cert", "revoke", &card, "--reason", "key-compromise"]);
    assert_eq!(s.sqlite("SELECT reason FROM certificates WHERE revoked_at IS NOT NULL;").trim(), "keyCompromise");
    s.sqlite("UPDATE certificates SET revoked_at = NULL, reason = NULL;");
    audit_log_names(&s, "certificates row 1 differs");
    let o = s.run(&["audit", "report"]);
    assert_eq!(code(&o), 1, "{}", String::from_utf8_lossy(&o.stdout));
    // The custodian's CRL would leave the card out: refused.
    let o = s.run(&["cert", "crl", "--out", "crl.pem"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(!s.path("crl.pem").exists());
}

#[test]
fn an_old_database_restored_is_refused_by_the_custodian() {
    let s = issuer();
    std::fs::copy(s.path("keyroll.db"), s.path("old.db")).unwrap();
    s.ok(&["key", "new", "transfer"]);
    s.ok(&["key", "retire", "transfer", "1"]);
    // Restore the older, genuinely signed database (its log is intact on its own).
    std::fs::copy(s.path("old.db"), s.path("keyroll.db")).unwrap();
    s.ok(&["audit", "log"]);
    let before = s.dump();
    let o = s.run(&["key", "new", "update"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("rolled back"), "{}", stderr(&o));
    assert_eq!(s.dump(), before);
    perso_refused(&s, "rolled back database");
}

#[test]
fn a_swapped_root_is_refused_by_the_custodian_and_named_by_the_auditor() {
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "p", "--profile", "public-key", "--transfer-key-limit", "5"]);
    let other = Scratch::new();
    other.init();
    let root = other.sqlite("SELECT hex(root_der) FROM ca;");
    s.sqlite(&format!("UPDATE ca SET root_der = X'{}';", root.trim()));
    let o = s.run(&["perso", "--batch", "p", "--out-dir", "cards", "--count", "1"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(!s.path("cards").exists() || std::fs::read_dir(s.path("cards")).unwrap().next().is_none());
    audit_log_names(&s, "ca row 1 differs");
}

#[test]
fn a_change_logged_by_keyroll_itself_keeps_everything_intact() {
    // The other side: every command of an ordinary day leaves a database `audit log` vouches for.
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "h", "--profile", "hybrid", "--transfer-key-limit", "5", "--initial-balance", "7"]);
    s.ok(&["perso", "--batch", "h", "--out-dir", "cards", "--count", "3"]);
    s.ok(&["key", "new", "transfer", "--pending"]);
    s.ok(&["key", "activate", "transfer", "2"]);
    s.ok(&["key", "retire", "transfer", "1"]);
    let card = s.sqlite("SELECT card_serial FROM certificates ORDER BY id LIMIT 1;").trim().to_string();
    s.ok(&["cert", "revoke", &card]);
    s.ok(&["cert", "crl", "--out", "crl.pem"]);
    let v = s.json(&["audit", "log"]);
    assert_eq!(v["intact"], true, "{v}");
    assert_eq!(v["tables_replayed"], true, "{v}");
}
