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
