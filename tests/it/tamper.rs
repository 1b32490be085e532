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
    let o = s.run(&["audit", "report", "--expect-root", s.expect_root().as_str()]);
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
    let (s, recipient) = scratch_with_an_unpinned_identity();
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
    let o = s.run(&["audit", "report", "--expect-root", s.expect_root().as_str()]);
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

// ---- Outside anchors, checkpoints, pins (issue 14 items 2-4) ----

#[test]
fn auditors_bring_an_outside_anchor() {
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "p", "--profile", "public-key", "--transfer-key-limit", "5"]);
    s.ok(&["perso", "--batch", "p", "--out-dir", "cards", "--count", "1"]);
    for args in [&["audit", "chain", "--all"][..], &["audit", "report"][..]] {
        let o = s.run(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("--expect-root"), "{}", stderr(&o));
    }
    s.ok(&["cert", "ca", "--out", "published.pem"]);
    s.ok(&["audit", "chain", "--all", "--anchor", "published.pem"]);
    s.ok(&["audit", "report", "--anchor", "published.pem"]);
    let published = s.expect_root();
    // Root swapped and the register re-issued under it: the published root still says no.
    let other = Scratch::new();
    other.init();
    let root = other.sqlite("SELECT hex(root_der) FROM ca;");
    s.sqlite(&format!("UPDATE ca SET root_der = X'{}';", root.trim()));
    let o = s.run(&["audit", "chain", "--all", "--expect-root", &published]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let o = s.run(&["audit", "report", "--anchor", "published.pem"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let o = s.run(&["audit", "report", "--expect-root", &published]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
}

#[test]
fn a_cleared_revocation_fails_audit_chain_all() {
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "p", "--profile", "public-key", "--transfer-key-limit", "5"]);
    s.ok(&["perso", "--batch", "p", "--out-dir", "cards", "--count", "2"]);
    let card = s.sqlite("SELECT card_serial FROM certificates ORDER BY id LIMIT 1;").trim().to_string();
    s.ok(&["cert", "revoke", &card]);
    let root = s.expect_root();
    s.sqlite("UPDATE certificates SET revoked_at = NULL, reason = NULL;");
    let o = s.run(&["audit", "chain", "--all", "--expect-root", &root]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("not vouched for by the audit log"), "{}", stderr(&o));
}

#[test]
fn an_auditor_checkpoint_detects_a_restored_database() {
    let s = issuer();
    std::fs::copy(s.path("keyroll.db"), s.path("old.db")).unwrap();
    s.ok(&["key", "new", "transfer"]);
    s.ok(&["audit", "log", "--checkpoint", "auditor.cp"]);
    let cp = std::fs::read_to_string(s.path("auditor.cp")).unwrap();
    s.ok(&["audit", "log", "--checkpoint", "auditor.cp"]);
    // Restore the older, genuinely signed database: intact on its own, but behind the checkpoint.
    let old = Scratch::new();
    std::fs::copy(s.path("old.db"), old.path("keyroll.db")).unwrap();
    std::fs::copy(s.path("auditor.cp"), old.path("auditor.cp")).unwrap();
    old.ok(&["audit", "log"]);
    let o = old.run(&["audit", "log", "--checkpoint", "auditor.cp"]);
    assert_eq!(code(&o), 1, "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stdout).contains("rolled back"));
    assert_eq!(std::fs::read_to_string(old.path("auditor.cp")).unwrap(), cp, "a failed check keeps the checkpoint");
    let root = old.expect_root();
    let o = old.run(&["audit", "report", "--expect-root", &root, "--checkpoint", "auditor.cp"]);
    assert_eq!(code(&o), 1, "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn a_custodian_given_at_init_pins_with_expect_key_once() {
    let (s, recipient) = scratch_with_an_unpinned_identity();
    let init = s.json(&["init", "--issuer", "Other", "--custodian", &recipient]);
    let fp = init["audit_key_fingerprint"].as_str().unwrap().to_string();
    assert_eq!(code(&s.run(&["key", "new", "transfer"])), 2);
    let o = s.run(&["--expect-key", &"ab".repeat(32), "key", "new", "transfer"]);
    assert_eq!(code(&o), 1, "a wrong expected key: {}", stderr(&o));
    s.ok(&["--expect-key", &fp, "key", "new", "transfer"]);
    // Pinned now: later commands need no --expect-key.
    s.ok(&["key", "new", "update"]);
    // A rewritten database under another audit key, for the same custodian: refused.
    let forged = Scratch::new();
    forged.ok(&["init", "--issuer", "Other", "--custodian", &recipient]);
    std::fs::copy(forged.path("keyroll.db"), s.path("keyroll.db")).unwrap();
    let o = s.run(&["key", "new", "transfer"]);
    assert_eq!(code(&o), 2, "no pin for the forged key: asks for --expect-key: {}", stderr(&o));
    let o = s.run(&["--expect-key", &fp, "key", "new", "transfer"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
}

// ---- Output files, key life cycle, databases, amounts, names (items 5-7, 9, 10) ----

#[test]
fn out_never_clobbers() {
    let s = issuer();
    s.ok(&["perso", "--batch", "b", "--out-dir", "cards", "--count", "1"]);
    let card = s.card_files("cards")[0].clone();
    let card_rel = format!("cards/{}", card.file_name().unwrap().to_string_lossy());
    let snapshot = |p: &str| std::fs::read(s.path(p)).unwrap();
    let (db, id, c) = (snapshot("keyroll.db"), snapshot("keyroll.db.identity"), snapshot(&card_rel));
    let r = "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq";
    for force in [false, true] {
        let f: &[&str] = if force { &["--force"] } else { &[] };
        for (args, target) in [
            (vec!["cert", "crl", "--out", "keyroll.db"], "keyroll.db"),
            (vec!["cert", "ca", "--out", "keyroll.db.identity"], "keyroll.db.identity"),
            (vec!["key", "export", "--to", r, "--transfer", "1", "--out", &card_rel], card_rel.as_str()),
        ] {
            let mut a = args.clone();
            a.extend_from_slice(f);
            let o = s.run(&a);
            assert_eq!(code(&o), 2, "{a:?}: {}", stderr(&o));
            assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
            let _ = target;
        }
    }
    assert_eq!(snapshot("keyroll.db.identity"), id);
    assert_eq!(snapshot(&card_rel), c);
    assert_eq!(snapshot("keyroll.db").len(), db.len());
    s.ok(&["audit", "log"]);
    // An ordinary existing file: only with --force, then replaced whole.
    std::fs::write(s.path("root.pem"), b"keep me").unwrap();
    assert_eq!(code(&s.run(&["cert", "ca", "--out", "root.pem"])), 2);
    assert_eq!(std::fs::read(s.path("root.pem")).unwrap(), b"keep me");
    s.ok(&["cert", "ca", "--out", "root.pem", "--force"]);
    assert!(std::fs::read_to_string(s.path("root.pem")).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    // key export to stdout.
    let o = s.run(&["key", "export", "--to", r, "--transfer", "1", "--out", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.starts_with(b"age-encryption.org/v1"), "an age file on stdout");
}

#[test]
fn key_retire_guards_keys_still_needed() {
    let s = issuer();
    s.ok(&["key", "new", "transfer"]);
    // The newest active key: refused, then forced (and logged as forced).
    let o = s.run(&["key", "retire", "transfer", "2"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("newest active") && stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(s.sqlite("SELECT state FROM keys WHERE kind = 'transfer' AND key_id = 2;").trim(), "active");
    // Key 1 (batch b's) may go: b has no unfinished cards. Then b is not personalised on it.
    s.ok(&["key", "retire", "transfer", "1"]);
    let o = s.run(&["perso", "--batch", "b", "--out-dir", "cards", "--count", "1"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("retired") && stderr(&o).contains("batch new"), "{}", stderr(&o));
    s.ok(&["key", "new", "transfer"]);
    let v = s.json(&["key", "retire", "transfer", "3", "--force"]);
    assert_eq!(v["forced"], true, "{v}");
    assert!(
        s.sqlite("SELECT detail FROM audit_log WHERE action = 'key retire' ORDER BY id DESC LIMIT 1;")
            .contains("forced")
    );
    s.ok(&["audit", "log"]);
}

#[test]
fn a_zero_byte_database_is_not_a_keyroll_database() {
    let s = Scratch::new();
    std::fs::write(s.path("keyroll.db"), b"").unwrap();
    for args in [&["key", "list"][..], &["batch", "list"][..], &["cert", "list"][..], &["audit", "log"][..]] {
        let o = s.run(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("not a keyroll database"), "{}", stderr(&o));
    }
    assert_eq!(std::fs::metadata(s.path("keyroll.db")).unwrap().len(), 0, "nothing written into it");
}

#[test]
fn amounts_and_names_are_checked() {
    let s = Scratch::new();
    s.init();
    let too_much = (1u64 << 53).to_string();
    let o = s.run(&[
        "batch",
        "new",
        "x",
        "--profile",
        "symmetric",
        "--transfer-key-limit",
        "2",
        "--max-balance",
        &too_much,
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let max = ((1u64 << 53) - 1).to_string();
    s.ok(&[
        "batch",
        "new",
        "big",
        "--profile",
        "symmetric",
        "--transfer-key-limit",
        "2",
        "--max-balance",
        &max,
        "--initial-balance",
        &max,
    ]);
    for bad in ["a\u{1b}[2Jb", "tab\tname", " padded", &"n".repeat(65)] {
        let o = s.run(&["batch", "new", bad, "--profile", "symmetric", "--transfer-key-limit", "2"]);
        assert_eq!(code(&o), 2, "{bad:?}: {}", stderr(&o));
    }
    let t = Scratch::new();
    let o = t.run(&["init", "--issuer", &"I".repeat(57)]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("at most 56"), "{}", stderr(&o));
    assert!(!t.path("keyroll.db").exists());
    t.ok(&["init", "--issuer", &"I".repeat(56)]);
}

/// A scratch directory holding an age identity without keyroll's pin line (as age-keygen writes
/// one), made by another issuer's `init`, and that identity's recipient (for `init --custodian`).
fn scratch_with_an_unpinned_identity() -> (Scratch, String) {
    let keys = Scratch::new();
    keys.init();
    let id = std::fs::read_to_string(keys.path("keyroll.db.identity")).unwrap();
    let recipient = id.lines().find_map(|l| l.strip_prefix("# public key: ")).unwrap().trim().to_string();
    let bare: String = id.lines().filter(|l| !l.starts_with("# keyroll audit key")).map(|l| format!("{l}\n")).collect();
    let s = Scratch::new();
    std::fs::write(s.path("keyroll.db.identity"), bare).unwrap();
    (s, recipient)
}
