//! The back office's side of the issuer's word (issue 12, DESIGN.md §10 points 3–5): the scheme key
//! certified by the root, authorisations signed at activation and never at creation, policies that
//! only grow, `cert revoke` blocking, the bound on blocked cards and the signer's clock rule.

use crate::support::cli::*;
use keyroll::authority::policy::SCHEME_SECRET;
use keyroll::authority::{Authority, AuthorityError};
use keyroll::card::policy::{PolicyDecision, SchemeAnchor, judge_policy};
use keyroll::domain::CardSerial;
use keyroll::protocol::codec::Wire;
use keyroll::protocol::policy::{KeyAuthorisation, KeyKind, MAX_BLOCKED};
use std::process::Command;

fn open(s: &Scratch) -> Authority {
    Authority::open(&s.path("keyroll.db")).unwrap()
}

fn serials(s: &Scratch, dir: &str) -> Vec<CardSerial> {
    s.card_files(dir).iter().map(|p| CardSerial::parse(p.file_stem().unwrap().to_str().unwrap()).unwrap()).collect()
}

fn authorised(s: &Scratch) -> Vec<String> {
    s.sqlite("SELECT kind || ' ' || key_id FROM key_authorisations ORDER BY kind, key_id")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_scheme_key_is_certified_by_the_issuer_root_for_signing_only() {
    let s = Scratch::new();
    s.init();
    s.ok(&["cert", "ca", "--out", "root.pem"]);
    let der = hex::decode(s.sqlite("SELECT hex(certificate_der) FROM scheme_key").trim()).unwrap();
    std::fs::write(s.path("scheme.der"), &der).unwrap();
    let o = Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in", "scheme.der", "-out", "scheme.pem"])
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    assert!(o.status.success());
    let o = Command::new("openssl")
        .args(["verify", "-CAfile", "root.pem", "scheme.pem"])
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl verify: {}", String::from_utf8_lossy(&o.stderr));
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", "scheme.pem"])
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("Subject: O = Test Issuer, CN = scheme signing key"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    let usage = text.split("X509v3 Key Usage: critical").nth(1).unwrap().lines().nth(1).unwrap().trim();
    assert_eq!(usage, "Digital Signature", "one key, one purpose");
    // The record's scheme id is SHA-256 of the certified SPKI, and the secret is never stored in clear.
    let a = open(&s);
    let rec = a.scheme_record().unwrap().unwrap();
    let spki = keyroll::crypto::scheme_key::spki_der(&rec.public_key);
    assert!(der.windows(spki.len()).any(|w| w == spki), "the certificate carries the recorded key");
    let ct = s.sqlite(&format!("SELECT length(ciphertext) > 100 FROM secrets WHERE name = '{SCHEME_SECRET}'"));
    assert_eq!(ct.trim(), "1");
}

#[test]
fn keys_are_authorised_at_activation_never_at_creation() {
    let s = Scratch::new();
    s.init();
    assert_eq!(authorised(&s), ["transfer 1", "update 1"]);
    s.ok(&["key", "new", "transfer", "--pending"]);
    assert_eq!(authorised(&s), ["transfer 1", "update 1"], "a pending key is not authorised");
    let a = open(&s);
    let u = a.unlock(Some(&s.path("keyroll.db.identity"))).unwrap();
    assert!(matches!(
        u.key_authorisation(keyroll::authority::keys::KeyKind::Transfer, 2),
        Err(AuthorityError::KeyState { .. })
    ));
    drop(u);
    s.ok(&["key", "activate", "transfer", "2"]);
    s.ok(&["key", "new", "update"]);
    assert_eq!(authorised(&s), ["transfer 1", "transfer 2", "update 1", "update 2"]);
    // The authorisation commits to the key the database holds and verifies under the scheme key.
    let rec = a.scheme_record().unwrap().unwrap();
    let u = a.unlock(Some(&s.path("keyroll.db.identity"))).unwrap();
    let auth = u.key_authorisation(keyroll::authority::keys::KeyKind::Transfer, 2).unwrap();
    let key = u.transfer_key(2).unwrap();
    let v = KeyAuthorisation::verified(&auth.to_wire(), rec.verifier()).unwrap();
    assert!(v.commits_to(KeyKind::Transfer, 2, key.secret()));
    assert_eq!(v.min_policy, 1, "names the newest policy");
    let log = s.sqlite("SELECT count(*) FROM audit_log WHERE action = 'key authorise'");
    assert_eq!(log.trim(), "4");
}

#[test]
fn blocks_grow_the_policy_every_card_adopts_and_unknown_cards_change_nothing() {
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "sym", "--profile", "symmetric", "--transfer-key-limit", "3"]);
    s.ok(&["perso", "--batch", "sym", "--out-dir", "cards", "--count", "2"]);
    let cards = serials(&s, "cards");
    let a = open(&s);
    let rec = a.scheme_record().unwrap().unwrap();
    let anchor = SchemeAnchor::new(&rec.public_key).unwrap();
    let p1 = a.current_policy().unwrap().unwrap();
    assert_eq!((p1.number, p1.blocked.len()), (1, 0));
    let u = a.unlock(Some(&s.path("keyroll.db.identity"))).unwrap();
    let out = u.policy_block(cards[0], Some("extracted")).unwrap();
    assert!(!out.already_blocked);
    assert_eq!(out.policy.number, 2);
    let p2 = a.current_policy().unwrap().unwrap();
    assert!(p2.blocks(cards[0]) && !p2.blocks(cards[1]));
    assert_eq!(p2.blocked[0].limit.0, 3, "the entry carries the card's generation");
    assert!(matches!(
        judge_policy(&anchor, Some(&p1), Default::default(), &p2.to_wire()),
        Ok(PolicyDecision::Adopt { .. })
    ));
    // Blocking again signs nothing new.
    assert!(u.policy_block(cards[0], None).unwrap().already_blocked);
    assert_eq!(a.current_policy().unwrap().unwrap().number, 2);
    // An unknown serial is refused and changes nothing.
    drop(u);
    let before = s.dump();
    let u = a.unlock(Some(&s.path("keyroll.db.identity"))).unwrap();
    assert!(matches!(u.policy_block(CardSerial::from_u64(0xDEAD), None), Err(AuthorityError::NoSuchCard(_))));
    assert_eq!(s.dump(), before);
    // Closing update key 1 raises the wrap floor, keeps the block.
    let v = u.policy_compromise_update(1).unwrap();
    assert_eq!((v.number, v.min_wrap_update_key_id, v.blocked.len()), (3, 2, 1));
    assert!(matches!(u.policy_compromise_update(7), Err(AuthorityError::NoSuchKey { .. })));
}

#[test]
fn cert_revoke_blocks_the_card() {
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "hy", "--profile", "hybrid", "--transfer-key-limit", "4"]);
    s.ok(&["perso", "--batch", "hy", "--out-dir", "cards", "--count", "2"]);
    let cards = serials(&s, "cards");
    s.ok(&["cert", "revoke", &cards[1].to_string(), "--reason", "key-compromise"]);
    let p = open(&s).current_policy().unwrap().unwrap();
    assert!(p.blocks(cards[1]) && !p.blocks(cards[0]));
    let log = s.sqlite("SELECT detail FROM audit_log WHERE action = 'policy block'");
    assert!(log.contains("certificate revoked"), "{log}");
}

#[test]
fn the_blocked_list_is_bounded_and_says_a_new_generation_is_needed() {
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "sym", "--profile", "symmetric", "--transfer-key-limit", "2"]);
    let n = (MAX_BLOCKED + 1).to_string();
    s.ok(&["perso", "--batch", "sym", "--out-dir", "cards", "--count", &n]);
    let cards = serials(&s, "cards");
    let a = open(&s);
    let u = a.unlock(Some(&s.path("keyroll.db.identity"))).unwrap();
    for c in &cards[..MAX_BLOCKED] {
        u.policy_block(*c, None).unwrap();
    }
    drop(u);
    let before = s.dump();
    let u = a.unlock(Some(&s.path("keyroll.db.identity"))).unwrap();
    assert!(matches!(u.policy_block(cards[MAX_BLOCKED], None), Err(AuthorityError::PolicyFull { .. })));
    assert_eq!(s.dump(), before);
    // A new generation lets the old one die: once transfer key 3 is the lowest live key, every entry of
    // the limit-2 batch is pruned.
    drop(u);
    s.ok(&["key", "new", "transfer"]);
    s.ok(&["key", "new", "transfer"]);
    s.ok(&["key", "retire", "transfer", "1"]);
    s.ok(&["key", "retire", "transfer", "2"]);
    let u = a.unlock(Some(&s.path("keyroll.db.identity"))).unwrap();
    let p = u.policy_publish().unwrap();
    assert_eq!((p.blocked.len(), p.min_transfer_key_id.0), (0, 3));
}

#[test]
fn a_signing_time_edited_in_the_database_is_noticed_and_nothing_is_signed() {
    // The signer's own rule (never before its last signature, never past its clock + 5 min) is
    // `authority::policy::check_signed_at`, unit-tested; editing the recorded times to fool it is
    // tampering with bound rows, refused before anything is signed.
    let s = Scratch::new();
    s.init();
    s.sqlite("UPDATE policies SET signed_at = signed_at + 86400");
    let before = s.dump();
    let o = s.run(&["key", "new", "transfer"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(s.dump(), before, "nothing created, nothing signed");
}

#[test]
fn a_tampered_policy_or_scheme_row_is_noticed() {
    let s = Scratch::new();
    s.init();
    let t = s.copy();
    t.sqlite("UPDATE policies SET policy = CAST(substr(policy, 1, 40) || X'FF' || substr(policy, 42) AS BLOB)");
    assert!(matches!(open(&t).current_policy(), Err(AuthorityError::BadRow { table: "policies", .. })));
    let t = s.copy();
    // Another valid key in the scheme row (with its matching id): not the one the audit log recorded.
    let other = keyroll::crypto::scheme_key::SchemeSigningKey::generate().unwrap();
    t.sqlite(&format!(
        "UPDATE scheme_key SET public_key = X'{}', scheme_id = X'{}'",
        hex::encode(other.public_key_sec1()),
        hex::encode(other.scheme_id())
    ));
    assert!(matches!(open(&t).scheme_record(), Err(AuthorityError::BadRow { table: "scheme_key", .. })));
}

#[test]
fn policy_commands_through_the_binary() {
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "sym", "--profile", "symmetric", "--transfer-key-limit", "3"]);
    s.ok(&["perso", "--batch", "sym", "--out-dir", "cards", "--count", "1"]);
    let card = serials(&s, "cards")[0].to_string();
    let shown = s.json(&["policy", "show"]);
    assert_eq!((shown["number"].as_u64(), shown["blocked"].as_array().unwrap().len()), (Some(1), 0));
    let b = s.json(&["policy", "block", &card, "--reason", "extracted"]);
    assert_eq!((b["already_blocked"].as_bool(), b["policy"]["number"].as_u64()), (Some(false), Some(2)));
    let c = s.json(&["policy", "compromise", "update", "1"]);
    assert_eq!((c["number"].as_u64(), c["min_wrap_update_key_id"].as_u64()), (Some(3), Some(2)));
    s.ok(&["policy", "publish", "--out", "p.policy"]);
    let o = s.run(&["policy", "publish", "--out", "p.policy"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    let f = s.json(&["policy", "show", "p.policy"]);
    assert_eq!((f["number"].as_u64(), f["verified"].as_bool()), (Some(3), Some(true)));
    assert_eq!(f["blocked"][0]["serial"].as_str(), Some(card.as_str()));
    for field in ["signed_at", "min_wrap_update_key_id", "min_transfer_key_id"] {
        assert!(f.get(field).is_some(), "{field}");
    }
    // A flipped bit: refused with a hint, exit 2.
    let mut bytes = std::fs::read(s.path("p.policy")).unwrap();
    bytes[50] ^= 1;
    std::fs::write(s.path("bad.policy"), &bytes).unwrap();
    let o = s.run(&["policy", "show", "bad.policy"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a keyroll policy") && stderr(&o).contains("hint:"), "{}", stderr(&o));
    // Bad serial and a full-bound refusal carry hints too.
    let o = s.run(&["policy", "block", "xyz"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("hint:"));
}
