//! `keyroll fab …` through the real binary (issue 11, DESIGN.md §9, §10 point 1): a manufacturer's
//! root and key, `openssl` as the outside oracle for the root, and the issuer's trust records.

use crate::support::cli;
use cli::*;
use std::process::Command;

#[test]
fn fab_init_writes_a_root_openssl_accepts_and_a_private_key() {
    let s = Scratch::new();
    let out = s.json(&["fab", "init", "--out-dir", "fab", "--name", "Acme Chips"]);
    assert_eq!(out["name"], "Acme Chips");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.path("fab/root.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the manufacturer key is private");
    // openssl: the root verifies as its own trust anchor, is a CA, and has the key usages we claim.
    let v = Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile", "fab/root.pem", "fab/root.pem"])
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let text = Command::new("openssl")
        .args(["x509", "-in", "fab/root.pem", "-noout", "-text"])
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
    // Never overwritten.
    let before = std::fs::read(s.path("fab/root.key")).unwrap();
    let o = s.run(&["fab", "init", "--out-dir", "fab"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already exists") && stderr(&o).contains("hint:"), "{}", stderr(&o));
    assert_eq!(std::fs::read(s.path("fab/root.key")).unwrap(), before);
}

#[test]
fn fab_trust_records_and_logs_a_manufacturer_once() {
    let s = Scratch::new();
    s.init();
    s.ok(&["fab", "init", "--out-dir", "fab", "--name", "Acme Chips"]);
    let row = s.json(&["fab", "trust", "fab/root.pem"]);
    assert_eq!(row["name"], "Acme Chips");
    assert_eq!(row["kind"], "trusted");
    let listed = s.json(&["fab", "list"]);
    assert_eq!(listed["manufacturers"][0]["fingerprint"], row["fingerprint"]);
    assert_eq!(listed["manufacturers"][0]["cards"], 0);
    assert!(s.sqlite("SELECT count(*) FROM audit_log WHERE action = 'fab trust'").trim() == "1");
    // A second time: refused, nothing changes.
    let before = s.dump();
    let o = s.run(&["fab", "trust", "fab/root.pem"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already recorded"), "{}", stderr(&o));
    assert_eq!(s.dump(), before);
    // Not a certificate, or no identity: refused with a hint, nothing changes.
    std::fs::write(s.path("junk.pem"), "hello").unwrap();
    let o = s.run(&["fab", "trust", "junk.pem"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
    let o = s.cmd().args(["--db", "keyroll.db", "fab", "trust", "fab/root.pem"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(s.dump(), before);
    // `audit log` still intact after the trust record.
    s.ok(&["audit", "log"]);
}

/// Virtual personalisation makes its blanks with the issuer's own "keyroll virtual fab", listed apart;
/// the register keeps chip id <-> serial; `card show` and `audit report` show chip ids and counts.
#[test]
fn perso_to_files_uses_the_virtual_fab_and_records_chips() {
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "h", "--profile", "hybrid", "--transfer-key-limit", "3", "--initial-balance", "10"]);
    s.ok(&["perso", "--batch", "h", "--out-dir", "cards", "--count", "2"]);
    let files = s.card_files("cards");
    let shown: Vec<serde_json::Value> = files.iter().map(|f| s.json(&["card", "show", f.to_str().unwrap()])).collect();
    for v in &shown {
        let chip = v["chip_id"].as_str().unwrap();
        assert_eq!(chip.len(), 16, "{v}");
        let serial = v["serial"].as_str().unwrap();
        assert_eq!(s.sqlite(&format!("SELECT serial FROM chips WHERE chip_id = '{chip}'")).trim(), serial);
        assert_eq!(s.sqlite(&format!("SELECT locked_at IS NOT NULL FROM chips WHERE chip_id = '{chip}'")).trim(), "1");
    }
    assert_ne!(shown[0]["chip_id"], shown[1]["chip_id"]);
    let fabs = s.json(&["fab", "list"]);
    assert_eq!(fabs["manufacturers"][0]["name"], "keyroll virtual fab");
    assert_eq!(fabs["manufacturers"][0]["kind"], "virtual");
    assert_eq!(fabs["manufacturers"][0]["cards"], 2);
    s.ok(&["cert", "ca", "--out", "root.pem"]);
    let report = s.json(&["audit", "report", "--anchor", "root.pem"]);
    assert_eq!(report["manufacturers"][0]["kind"], "virtual");
    assert_eq!(report["manufacturers"][0]["cards_locked"], 2);
    assert_eq!(report["ok"], true);
    let text = s.ok(&["audit", "report", "--anchor", "root.pem"]);
    assert!(text.contains("keyroll virtual fab") && text.contains("virtual"), "{text}");
    // The CA recorded the chip with each certificate.
    let logged = s.sqlite("SELECT count(*) FROM audit_log WHERE action = 'card attested' AND detail LIKE '%chip_id%'");
    assert_eq!(logged.trim(), "2");
    // A second run makes two more cards: every personalised card has its own chip, one to one.
    s.ok(&["perso", "--batch", "h", "--out-dir", "cards", "--count", "2"]);
    assert_eq!(s.sqlite("SELECT count(*) FROM chips").trim(), "4");
    assert_eq!(s.sqlite("SELECT count(DISTINCT serial) FROM chips").trim(), "4");
    let unmatched = s
        .sqlite("SELECT count(*) FROM cards WHERE state = 'personalised' AND serial NOT IN (SELECT serial FROM chips)");
    assert_eq!(unmatched.trim(), "0");
}

/// Manufacturer and chip rows are bound to the signed audit log (`authority::rows`): a chip re-pointed
/// to another serial by someone who can write the file (bypassing the triggers) is found by `audit log`,
/// and a manufacturer row slipped in is refused before any custodian command uses it.
#[test]
fn manufacturer_and_chip_rows_edited_outside_keyroll_are_caught() {
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "b", "--profile", "symmetric", "--transfer-key-limit", "3"]);
    s.ok(&["perso", "--batch", "b", "--out-dir", "cards", "--count", "2"]);
    s.ok(&["audit", "log"]);
    // A chip given another serial, behind the triggers' back.
    let edited = s.copy();
    edited.sqlite(
        "DROP TRIGGER chips_keep_their_serial; UPDATE chips SET serial = 'FFFFFFFFFFFFFFFF' WHERE id = 1; \
         CREATE TRIGGER chips_keep_their_serial BEFORE UPDATE OF chip_id, serial, manufacturer_id ON chips \
         BEGIN SELECT RAISE(ABORT, 'a chip id keeps its card serial forever'); END;",
    );
    let o = edited.run(&["audit", "log"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("chips"), "{}", stderr(&o));
    // A manufacturer slipped into the table (a copy of the virtual one's row under another name and
    // a fingerprint that differs in its first byte, whatever that byte is, so UNIQUE never refuses it).
    s.sqlite(
        "INSERT INTO manufacturers (name, fingerprint, root_der, kind, trusted_at) \
         SELECT 'Rogue Chips', \
                CASE WHEN substr(fingerprint, 1, 2) = 'ab' THEN 'cd' ELSE 'ab' END || substr(fingerprint, 3), \
                root_der, 'trusted', trusted_at FROM manufacturers;",
    );
    let before = s.dump();
    let o = s.run(&["perso", "--batch", "b", "--out-dir", "cards", "--count", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
    assert_eq!(s.dump(), before, "nothing changed");
}

/// `fab blank` writes a blank card file that `card show` reads, and never overwrites one.
#[test]
fn fab_blank_makes_a_blank_with_factory_credentials() {
    let s = Scratch::new();
    s.ok(&["fab", "init", "--out-dir", "fab"]);
    let out = s.json(&["fab", "blank", "--manufacturer", "fab", "--out", "b.card"]);
    let v = s.json(&["card", "show", "b.card"]);
    assert_eq!(v["chip_id"], out["chip_id"]);
    assert_eq!(v["life_cycle"], "blank");
    assert_eq!(v["serial"], serde_json::Value::Null);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(s.path("b.card")).unwrap().permissions().mode() & 0o777, 0o600);
    let before = std::fs::read(s.path("b.card")).unwrap();
    let o = s.run(&["fab", "blank", "--manufacturer", "fab", "--out", "b.card"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(s.path("b.card")).unwrap(), before);
    let o = s.run(&["fab", "blank", "--manufacturer", "nofab", "--out", "c.card"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("hint: make one with `keyroll fab init"), "{}", stderr(&o));
}
