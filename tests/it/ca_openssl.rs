//! The CA's output judged by an oracle no one here wrote: the `openssl` CLI (DESIGN.md §8).
//!
//! Each test writes what `keyroll::authority::ca` builds to a temporary directory and asks
//! `openssl verify`, `openssl crl` and `openssl x509 -text` about it. Every test also has a negative
//! half (a wrong anchor, a missing intermediate, a revoked card, a flipped signature byte) so that a
//! broken CA, or an `openssl` that says yes to everything, fails the test.
//! `openssl` must be installed (`scripts/test` installs it); without it these tests fail.

use keyroll::authority::ca::{
    self, CaKey, CardCertRequest, CrlReason, IssuerCa, PEM_CERTIFICATE, PEM_CRL, RevokedEntry, ValidityPeriod,
};
use keyroll::crypto::card_key::CardKeyPair;
use keyroll::domain::CardSerial;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};
use x509_cert::der::Decode;

const DAY: Duration = Duration::from_secs(86_400);

struct Out {
    ok: bool,
    text: String,
}

fn openssl(args: &[&str]) -> Out {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI must be installed for these tests (scripts/test installs it)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Out { ok: out.status.success(), text }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn write_pem(dir: &Path, name: &str, label: &str, der: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, ca::pem_encode(label, der).unwrap()).unwrap();
    path
}

fn validity(days: u64) -> ValidityPeriod {
    let now = SystemTime::now();
    ValidityPeriod { not_before: now - Duration::from_secs(3600), not_after: now + DAY * days as u32 }
}

fn card_cert(key: &CaKey, ca_der: &[u8], serial: u64) -> Vec<u8> {
    let card = CardKeyPair::generate().unwrap();
    let v = validity(365);
    ca::issue_card_certificate(
        key,
        ca_der,
        CardSerial::from_u64(serial),
        &card.public_key_sec1(),
        v.not_before,
        v.not_after,
    )
    .unwrap()
}

fn text_of(cert: &Path) -> String {
    let out = openssl(&["x509", "-in", p(cert), "-noout", "-text"]);
    assert!(out.ok, "openssl x509 -text refused the certificate: {}", out.text);
    out.text
}

/// The lines following `header` in `openssl x509 -text`, joined, for checking an extension's value.
fn extension_block(text: &str, header: &str) -> String {
    let mut lines = text.lines().skip_while(|l| !l.trim_start().starts_with(header));
    let head = lines.next().unwrap_or_else(|| panic!("{header} missing in:\n{text}")).trim().to_string();
    let value = lines.next().unwrap_or_default().trim().to_string();
    format!("{head} | {value}")
}

#[test]
fn root_signed_card_certificate_verifies_and_has_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let (root_key, root_der) = IssuerCa::create_root("Keyroll Test Issuer", validity(3650)).unwrap();
    let root = write_pem(dir.path(), "root.pem", PEM_CERTIFICATE, &root_der);
    let card_der = card_cert(&root_key, &root_der, 0x0102_0304_0506_0708);
    let card = write_pem(dir.path(), "card.pem", PEM_CERTIFICATE, &card_der);

    let out = openssl(&["verify", "-CAfile", p(&root), p(&card)]);
    assert!(out.ok && out.text.contains(": OK"), "openssl verify refused: {}", out.text);

    // The same card against another issuer's root must fail.
    let (_, other_der) = IssuerCa::create_root("Someone Else", validity(3650)).unwrap();
    let other = write_pem(dir.path(), "other.pem", PEM_CERTIFICATE, &other_der);
    let out = openssl(&["verify", "-CAfile", p(&other), p(&card)]);
    assert!(!out.ok, "a card verified under the wrong root: {}", out.text);

    // Any flipped byte in the signature breaks it.
    let mut tampered = card_der.clone();
    let last = tampered.len() - 3;
    tampered[last] ^= 0x01;
    let bad = write_pem(dir.path(), "bad.pem", PEM_CERTIFICATE, &tampered);
    let out = openssl(&["verify", "-CAfile", p(&root), p(&bad)]);
    assert!(!out.ok, "a tampered card certificate verified: {}", out.text);

    let t = text_of(&card);
    assert!(t.contains("Version: 3 (0x2)"), "{t}");
    assert!(t.contains("Signature Algorithm: ecdsa-with-SHA256"), "{t}");
    assert!(t.contains("ASN1 OID: prime256v1"), "{t}");
    assert_eq!(extension_block(&t, "X509v3 Basic Constraints"), "X509v3 Basic Constraints: critical | CA:FALSE");
    assert_eq!(
        extension_block(&t, "X509v3 Key Usage"),
        "X509v3 Key Usage: critical | Digital Signature, Key Agreement"
    );
    assert!(t.contains("CN=card 0102030405060708") || t.contains("CN = card 0102030405060708"), "{t}");
    assert!(t.contains("O=Keyroll Test Issuer") || t.contains("O = Keyroll Test Issuer"), "{t}");

    // AKI of the card = SKI of the root (openssl prints both as colon-separated hex).
    let root_text = text_of(&root);
    let root_ski = extension_block(&root_text, "X509v3 Subject Key Identifier");
    let root_ski = root_ski.split(" | ").nth(1).unwrap().to_string();
    let card_aki = extension_block(&t, "X509v3 Authority Key Identifier");
    assert!(card_aki.contains(&root_ski), "card AKI {card_aki} != root SKI {root_ski}");
    let card_ski = extension_block(&t, "X509v3 Subject Key Identifier");
    assert!(!card_ski.contains(&root_ski), "card SKI equals the root's");

    // Serial: positive, at most 20 octets, high bit clear (RFC 5280 §4.1.2.2).
    let cert = x509_cert::Certificate::from_der(&card_der).unwrap();
    let serial = cert.tbs_certificate().serial_number().as_bytes();
    assert!(!serial.is_empty() && serial.len() <= 20 && serial[0] & 0x80 == 0 && serial[0] != 0, "{serial:02x?}");
}

#[test]
fn root_certificate_profile() {
    let dir = tempfile::tempdir().unwrap();
    let (_key, root_der) = IssuerCa::create_root("Keyroll Test Issuer", validity(3650)).unwrap();
    let root = write_pem(dir.path(), "root.pem", PEM_CERTIFICATE, &root_der);
    // A self-signed root verifies against itself only if its signature and CA flags are right.
    let out = openssl(&["verify", "-x509_strict", "-CAfile", p(&root), p(&root)]);
    assert!(out.ok, "root does not verify as its own anchor: {}", out.text);
    let t = text_of(&root);
    assert_eq!(extension_block(&t, "X509v3 Basic Constraints"), "X509v3 Basic Constraints: critical | CA:TRUE");
    assert_eq!(extension_block(&t, "X509v3 Key Usage"), "X509v3 Key Usage: critical | Certificate Sign, CRL Sign");
    let ski = extension_block(&t, "X509v3 Subject Key Identifier");
    let ski = ski.split(" | ").nth(1).unwrap();
    assert!(extension_block(&t, "X509v3 Authority Key Identifier").contains(ski), "root AKI != SKI:\n{t}");
    assert!(t.contains("Root CA"), "{t}");
}

#[test]
fn intermediate_chain_verifies_only_with_the_intermediate() {
    let dir = tempfile::tempdir().unwrap();
    let (root_key, root_der) = IssuerCa::create_root("Keyroll Test Issuer", validity(3650)).unwrap();
    let (int_key, int_der) =
        IssuerCa::create_intermediate(&root_key, &root_der, "Keyroll Card CA 1", validity(1825)).unwrap();
    let root = write_pem(dir.path(), "root.pem", PEM_CERTIFICATE, &root_der);
    let int = write_pem(dir.path(), "int.pem", PEM_CERTIFICATE, &int_der);
    let card = write_pem(dir.path(), "card.pem", PEM_CERTIFICATE, &card_cert(&int_key, &int_der, 42));

    let out = openssl(&["verify", "-x509_strict", "-CAfile", p(&root), "-untrusted", p(&int), p(&card)]);
    assert!(out.ok, "chain root -> intermediate -> card refused: {}", out.text);
    let out = openssl(&["verify", "-CAfile", p(&root), p(&card)]);
    assert!(!out.ok, "card verified without its intermediate: {}", out.text);

    let t = text_of(&int);
    assert_eq!(
        extension_block(&t, "X509v3 Basic Constraints"),
        "X509v3 Basic Constraints: critical | CA:TRUE, pathlen:0"
    );
    // pathlen 0: a CA under the intermediate must be refused by openssl.
    let (sub_key, sub_der) = IssuerCa::create_intermediate(&int_key, &int_der, "Too Deep", validity(365)).unwrap();
    let sub = write_pem(dir.path(), "sub.pem", PEM_CERTIFICATE, &sub_der);
    let untrusted = dir.path().join("chain.pem");
    std::fs::write(
        &untrusted,
        [std::fs::read_to_string(&int).unwrap(), std::fs::read_to_string(&sub).unwrap()].concat(),
    )
    .unwrap();
    let deep = write_pem(dir.path(), "deep.pem", PEM_CERTIFICATE, &card_cert(&sub_key, &sub_der, 43));
    let out = openssl(&["verify", "-CAfile", p(&root), "-untrusted", p(&untrusted), p(&deep)]);
    assert!(!out.ok, "pathlen:0 not enforced or not set: {}", out.text);
}

#[test]
fn crl_verifies_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let (root_key, root_der) = IssuerCa::create_root("Keyroll Test Issuer", validity(3650)).unwrap();
    let root = write_pem(dir.path(), "root.pem", PEM_CERTIFICATE, &root_der);
    let revoked_der = card_cert(&root_key, &root_der, 1);
    let good_der = card_cert(&root_key, &root_der, 2);
    let revoked = write_pem(dir.path(), "revoked.pem", PEM_CERTIFICATE, &revoked_der);
    let good = write_pem(dir.path(), "good.pem", PEM_CERTIFICATE, &good_der);
    let revoked_serial =
        x509_cert::Certificate::from_der(&revoked_der).unwrap().tbs_certificate().serial_number().as_bytes().to_vec();

    let now = SystemTime::now();
    let crl_der = ca::build_crl(
        &root_key,
        &root_der,
        &[RevokedEntry {
            serial: revoked_serial.clone(),
            revoked_at: now - Duration::from_secs(60),
            reason: Some(CrlReason::KeyCompromise),
        }],
        now - Duration::from_secs(60),
        now + DAY * 7,
        7,
    )
    .unwrap();
    let crl = write_pem(dir.path(), "crl.pem", PEM_CRL, &crl_der);

    let out = openssl(&["crl", "-in", p(&crl), "-CAfile", p(&root), "-verify", "-noout"]);
    assert!(out.ok && out.text.contains("verify OK"), "CRL signature refused: {}", out.text);
    let out = openssl(&["verify", "-crl_check", "-CAfile", p(&root), "-CRLfile", p(&crl), p(&revoked)]);
    assert!(!out.ok && out.text.contains("revoked"), "revoked card accepted: {}", out.text);
    let out = openssl(&["verify", "-crl_check", "-CAfile", p(&root), "-CRLfile", p(&crl), p(&good)]);
    assert!(out.ok, "unrevoked card refused with the CRL: {}", out.text);

    let out = openssl(&["crl", "-in", p(&crl), "-noout", "-text"]);
    assert!(out.ok, "{}", out.text);
    assert!(out.text.contains("Version 2"), "{}", out.text);
    assert!(out.text.contains("X509v3 CRL Number") && out.text.contains("7"), "{}", out.text);
    assert!(out.text.contains("X509v3 Authority Key Identifier"), "{}", out.text);
    assert!(out.text.contains("Key Compromise"), "{}", out.text);
    assert!(out.text.to_uppercase().contains(&hex::encode_upper(&revoked_serial)), "{}", out.text);

    // The CRL signed by another CA's key does not verify under this root.
    let (other_key, other_der) = IssuerCa::create_root("Keyroll Test Issuer", validity(3650)).unwrap();
    let forged = ca::build_crl(&other_key, &other_der, &[], now, now + DAY, 1).unwrap();
    let forged = write_pem(dir.path(), "forged.pem", PEM_CRL, &forged);
    let out = openssl(&["crl", "-in", p(&forged), "-CAfile", p(&root), "-verify", "-noout"]);
    assert!(!out.ok || !out.text.contains("verify OK"), "foreign CRL verified: {}", out.text);
}

#[test]
fn intermediate_crl_names_the_intermediate_key() {
    let dir = tempfile::tempdir().unwrap();
    let (root_key, root_der) = IssuerCa::create_root("Keyroll Test Issuer", validity(3650)).unwrap();
    let (int_key, int_der) =
        IssuerCa::create_intermediate(&root_key, &root_der, "Keyroll Card CA 1", validity(1825)).unwrap();
    let root = write_pem(dir.path(), "root.pem", PEM_CERTIFICATE, &root_der);
    let int = write_pem(dir.path(), "int.pem", PEM_CERTIFICATE, &int_der);
    let card_der = card_cert(&int_key, &int_der, 9);
    let card = write_pem(dir.path(), "card.pem", PEM_CERTIFICATE, &card_der);
    let serial =
        x509_cert::Certificate::from_der(&card_der).unwrap().tbs_certificate().serial_number().as_bytes().to_vec();
    let now = SystemTime::now();
    let crl_der = ca::build_crl(
        &int_key,
        &int_der,
        &[RevokedEntry { serial, revoked_at: now, reason: None }],
        now - Duration::from_secs(60),
        now + DAY,
        1,
    )
    .unwrap();
    let crl = write_pem(dir.path(), "crl.pem", PEM_CRL, &crl_der);
    let out =
        openssl(&["verify", "-crl_check", "-CAfile", p(&root), "-untrusted", p(&int), "-CRLfile", p(&crl), p(&card)]);
    assert!(!out.ok && out.text.contains("revoked"), "card revoked by the intermediate's CRL accepted: {}", out.text);
    // The CRL's AKI must be the intermediate's SKI, not the root's.
    let int_text = text_of(&int);
    let int_ski = extension_block(&int_text, "X509v3 Subject Key Identifier");
    let int_ski = int_ski.split(" | ").nth(1).unwrap().to_string();
    let crl_text = openssl(&["crl", "-in", p(&crl), "-noout", "-text"]).text;
    assert!(crl_text.contains(&int_ski), "CRL AKI is not the intermediate's SKI {int_ski}:\n{crl_text}");
}

#[test]
fn batch_issues_distinct_certificates_that_all_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (root_key, root_der) = IssuerCa::create_root("Keyroll Test Issuer", validity(3650)).unwrap();
    let root = write_pem(dir.path(), "root.pem", PEM_CERTIFICATE, &root_der);
    let v = validity(365);
    let requests: Vec<CardCertRequest> = (0..64u64)
        .map(|i| CardCertRequest {
            serial: CardSerial::from_u64(1000 + i),
            public_key_sec1: CardKeyPair::generate().unwrap().public_key_sec1().to_vec(),
            validity: v,
        })
        .collect();
    let certs = ca::issue_batch(&root_key, &root_der, &requests).unwrap();
    assert_eq!(certs.len(), requests.len());
    let mut serials = std::collections::HashSet::new();
    let mut paths = Vec::new();
    for (i, der) in certs.iter().enumerate() {
        let cert = x509_cert::Certificate::from_der(der).unwrap();
        assert!(serials.insert(cert.tbs_certificate().serial_number().as_bytes().to_vec()), "duplicate serial");
        let cn = cert.tbs_certificate().subject().common_name().unwrap().unwrap().value().to_string();
        assert_eq!(cn, format!("card {}", CardSerial::from_u64(1000 + i as u64)), "order not kept");
        paths.push(write_pem(dir.path(), &format!("c{i}.pem"), PEM_CERTIFICATE, der));
    }
    let mut args = vec!["verify", "-CAfile", p(&root)];
    args.extend(paths.iter().map(|x| p(x)));
    let out = openssl(&args);
    assert!(out.ok && out.text.matches(": OK").count() == certs.len(), "{}", out.text);

    // One bad key: the whole batch fails and names the item.
    let mut bad = requests.clone();
    bad[17].public_key_sec1[64] ^= 1;
    match ca::issue_batch(&root_key, &root_der, &bad) {
        Err(ca::CaError::BatchItem { index: 17, .. }) => {}
        other => panic!("expected BatchItem 17, got {:?}", other.map(|v| v.len())),
    }
}

#[test]
fn ca_key_pkcs8_is_readable_by_openssl_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (root_key, root_der) = IssuerCa::create_root("Keyroll Test Issuer", validity(3650)).unwrap();
    let pkcs8 = root_key.to_pkcs8_der().unwrap();
    let back = CaKey::from_pkcs8_der(pkcs8.expose()).unwrap();
    assert_eq!(back.public_key_sec1(), root_key.public_key_sec1());
    // The restored key issues certificates under the same root.
    let root = write_pem(dir.path(), "root.pem", PEM_CERTIFICATE, &root_der);
    let card = write_pem(dir.path(), "card.pem", PEM_CERTIFICATE, &card_cert(&back, &root_der, 5));
    assert!(openssl(&["verify", "-CAfile", p(&root), p(&card)]).ok);
    // openssl reads the PKCS #8 DER as a P-256 key.
    let key_path = dir.path().join("ca.key.der");
    std::fs::write(&key_path, pkcs8.expose()).unwrap();
    // `-text_pub`: show only the public half, so a failure message cannot print the secret.
    let out = openssl(&["pkey", "-inform", "DER", "-in", p(&key_path), "-noout", "-text_pub"]);
    assert!(out.ok && out.text.contains("prime256v1"), "{}", out.text);
    assert!(CaKey::from_pkcs8_der(&pkcs8.expose()[..20]).is_err());
}

/// `audit chain --crl` with a CRL that does not verify under the certificate's issuer: revocation status
/// is undetermined and the chain is invalid, as `openssl verify -crl_check` says (it fails with "unable
/// to get certificate CRL"). Version 1 ignored such a CRL and reported the certificate valid.
#[test]
fn audit_chain_with_a_crl_that_does_not_verify_is_invalid_as_openssl_says() {
    let s = crate::support::cli::Scratch::new();
    let dir = s.dir.path();
    let now = SystemTime::now();
    let (root_key, root_der) = IssuerCa::create_root("Keyroll Test Issuer", validity(3650)).unwrap();
    let root = write_pem(dir, "root.pem", PEM_CERTIFICATE, &root_der);
    let card = write_pem(dir, "card.pem", PEM_CERTIFICATE, &card_cert(&root_key, &root_der, 5));
    let own = ca::build_crl(&root_key, &root_der, &[], now - Duration::from_secs(60), now + DAY, 1).unwrap();
    let own = write_pem(dir, "own.pem", PEM_CRL, &own);
    // Same issuer name, another key (its authorityKeyIdentifier names that key) ...
    let (twin_key, twin_der) = IssuerCa::create_root("Keyroll Test Issuer", validity(3650)).unwrap();
    let twin = ca::build_crl(&twin_key, &twin_der, &[], now - Duration::from_secs(60), now + DAY, 1).unwrap();
    let twin = write_pem(dir, "twin.pem", PEM_CRL, &twin);
    // ... and another issuer altogether.
    let (other_key, other_der) = IssuerCa::create_root("Someone Else", validity(3650)).unwrap();
    let other = ca::build_crl(&other_key, &other_der, &[], now - Duration::from_secs(60), now + DAY, 1).unwrap();
    let other = write_pem(dir, "other.pem", PEM_CRL, &other);

    let keyroll = |crl: Option<&Path>| {
        let mut args = vec!["--json", "audit", "chain", "card.pem", "--anchor", "root.pem"];
        if let Some(c) = crl {
            args.extend(["--crl", p(c)]);
        }
        let o = s.cmd().args(&args).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        (
            o.status.code(),
            v["results"][0]["valid"].as_bool(),
            v["results"][0]["reason"].as_str().unwrap_or("").to_string(),
        )
    };
    let openssl_ok =
        |crl: &Path| openssl(&["verify", "-crl_check", "-CAfile", p(&root), "-CRLfile", p(crl), p(&card)]).ok;

    // The issuer's own CRL, and no CRL at all: valid for both.
    assert!(openssl_ok(&own));
    assert_eq!(keyroll(Some(&own)), (Some(0), Some(true), String::new()));
    assert_eq!(keyroll(None), (Some(0), Some(true), String::new()));
    for bad in [&twin, &other] {
        let out = openssl(&["verify", "-crl_check", "-CAfile", p(&root), "-CRLfile", p(bad), p(&card)]);
        assert!(!out.ok && out.text.contains("unable to get certificate CRL"), "openssl: {}", out.text);
        let (code, valid, reason) = keyroll(Some(bad));
        assert_eq!((code, valid), (Some(1), Some(false)), "{} must not be ignored: {reason}", bad.display());
        assert!(reason.contains("revocation status") && reason.contains("undetermined"), "{reason}");
        assert!(reason.contains("Keyroll Test Issuer"), "the reason names the issuer: {reason}");
    }
    // A usable CRL of the issuer among others decides: the foreign one is then irrelevant.
    let both = dir.join("both.pem");
    std::fs::write(&both, [std::fs::read(&other).unwrap(), std::fs::read(&own).unwrap()].concat()).unwrap();
    assert!(openssl_ok(&both));
    assert_eq!(keyroll(Some(&both)), (Some(0), Some(true), String::new()));
}
