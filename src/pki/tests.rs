//! Unit tests: small chains built in memory with a DER writer and P-256 keys, so each test
//! controls exactly the field it breaks.

// `&[x.clone()]` reads better than `std::slice::from_ref(&x)` in these call sites.
#![allow(clippy::cloned_ref_to_slice_refs)]

use super::cert::oid;
use super::*;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend([0x81, n as u8]);
    } else {
        out.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn name(cn: &str) -> Vec<u8> {
    let atv = seq(&[&tlv(0x06, &[0x55, 0x04, 0x03]), &tlv(0x0c, cn.as_bytes())]);
    seq(&[&tlv(0x31, &atv)])
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_slice(&[n; 32]).expect("valid scalar")
}

fn sec1(k: &SigningKey) -> Vec<u8> {
    k.verifying_key().to_sec1_point(false).as_bytes().to_vec()
}

fn ec_spki(k: &SigningKey) -> Vec<u8> {
    let alg = seq(&[&tlv(0x06, oid::EC_PUBLIC_KEY), &tlv(0x06, oid::SECP256R1)]);
    seq(&[&alg, &tlv(0x03, &[&[0u8][..], &sec1(k)].concat())])
}

fn ecdsa_sha256() -> Vec<u8> {
    seq(&[&tlv(0x06, oid::ECDSA_WITH_SHA256)])
}

/// A key identifier derived from the key (first 20 bytes of the point's x coordinate).
fn key_id(k: &SigningKey) -> Vec<u8> {
    sec1(k)[1..21].to_vec()
}

fn ext(id: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    if critical {
        seq(&[&tlv(0x06, id), &tlv(0x01, &[0xff]), &tlv(0x04, value)])
    } else {
        seq(&[&tlv(0x06, id), &tlv(0x04, value)])
    }
}

fn bc(ca: bool, path_len: Option<u8>) -> Vec<u8> {
    let mut parts = Vec::new();
    if ca {
        parts.push(tlv(0x01, &[0xff]));
    }
    if let Some(n) = path_len {
        parts.push(tlv(0x02, &[n]));
    }
    ext(oid::BASIC_CONSTRAINTS, true, &tlv(0x30, &parts.concat()))
}

/// keyUsage keyCertSign + cRLSign.
fn ku_ca() -> Vec<u8> {
    ext(oid::KEY_USAGE, true, &tlv(0x03, &[0x01, 0x06]))
}

/// keyUsage keyCertSign only.
fn ku_cert_sign_only() -> Vec<u8> {
    ext(oid::KEY_USAGE, true, &tlv(0x03, &[0x02, 0x04]))
}

/// keyUsage digitalSignature + keyAgreement (the card profile, DESIGN §4).
fn ku_card() -> Vec<u8> {
    ext(oid::KEY_USAGE, true, &tlv(0x03, &[0x03, 0x88]))
}

fn ski(k: &SigningKey) -> Vec<u8> {
    ext(oid::SUBJECT_KEY_ID, false, &tlv(0x04, &key_id(k)))
}

fn aki(k: &SigningKey) -> Vec<u8> {
    ext(oid::AUTHORITY_KEY_ID, false, &seq(&[&tlv(0x80, &key_id(k))]))
}

const T2020: &str = "20200101000000Z";
const T2030: &str = "20300101000000Z";

/// A certificate spec; `build` signs it.
#[derive(Clone)]
struct Spec {
    serial: Vec<u8>,
    subject: String,
    issuer: String,
    not_before: &'static str,
    not_after: &'static str,
    spki: Vec<u8>,
    extensions: Vec<Vec<u8>>,
}

impl Spec {
    fn build(&self, issuer_key: &SigningKey) -> Vec<u8> {
        let validity = seq(&[&tlv(0x18, self.not_before.as_bytes()), &tlv(0x18, self.not_after.as_bytes())]);
        let mut tbs_parts = vec![
            tlv(0xa0, &tlv(0x02, &[2])),
            tlv(0x02, &self.serial),
            ecdsa_sha256(),
            name(&self.issuer),
            validity,
            name(&self.subject),
            self.spki.clone(),
        ];
        if !self.extensions.is_empty() {
            tbs_parts.push(tlv(0xa3, &tlv(0x30, &self.extensions.concat())));
        }
        let tbs = tlv(0x30, &tbs_parts.concat());
        let sig: Signature = issuer_key.sign(&tbs);
        let sig_der = sig.to_der();
        seq(&[&tbs, &ecdsa_sha256(), &tlv(0x03, &[&[0u8][..], sig_der.as_bytes()].concat())])
    }
}

fn root_spec(cn: &str, k: &SigningKey) -> Spec {
    Spec {
        serial: vec![0x01],
        subject: cn.into(),
        issuer: cn.into(),
        not_before: T2020,
        not_after: T2030,
        spki: ec_spki(k),
        extensions: vec![bc(true, None), ku_ca(), ski(k)],
    }
}

fn ca_spec(cn: &str, k: &SigningKey, issuer: &str, issuer_key: &SigningKey) -> Spec {
    Spec {
        serial: vec![0x02],
        subject: cn.into(),
        issuer: issuer.into(),
        not_before: T2020,
        not_after: T2030,
        spki: ec_spki(k),
        extensions: vec![bc(true, None), ku_ca(), ski(k), aki(issuer_key)],
    }
}

fn leaf_spec(cn: &str, k: &SigningKey, issuer: &str, issuer_key: &SigningKey) -> Spec {
    Spec {
        serial: vec![0x10, 0x20, 0x30],
        subject: cn.into(),
        issuer: issuer.into(),
        not_before: T2020,
        not_after: T2030,
        spki: ec_spki(k),
        extensions: vec![bc(false, None), ku_card(), ski(k), aki(issuer_key)],
    }
}

fn at(rfc3339: &str) -> ValidationOptions {
    ValidationOptions::at(parse_rfc3339(rfc3339).expect("test time"))
}

fn now() -> ValidationOptions {
    at("2025-06-01T00:00:00Z")
}

/// Root, issuing CA and card keys, and the three certificates of a valid chain.
struct Pki {
    root_key: SigningKey,
    ca_key: SigningKey,
    card_key: SigningKey,
    root: Vec<u8>,
    ca: Vec<u8>,
    leaf: Vec<u8>,
}

fn pki() -> Pki {
    let (root_key, ca_key, card_key) = (key(1), key(2), key(3));
    let root = root_spec("Issuer Root", &root_key).build(&root_key);
    let ca = ca_spec("Card CA", &ca_key, "Issuer Root", &root_key).build(&root_key);
    let leaf = leaf_spec("Card 0001", &card_key, "Card CA", &ca_key).build(&ca_key);
    Pki { root_key, ca_key, card_key, root, ca, leaf }
}

fn crl(issuer: &str, issuer_key: &SigningKey, revoked: &[&[u8]], with_number: bool, next_update: &str) -> Vec<u8> {
    signed_crl(issuer, issuer_key, issuer_key, revoked, with_number, next_update)
}

fn signed_crl(
    issuer: &str,
    signer: &SigningKey,
    issuer_key: &SigningKey,
    revoked: &[&[u8]],
    with_number: bool,
    next_update: &str,
) -> Vec<u8> {
    let entries: Vec<Vec<u8>> = revoked.iter().map(|s| seq(&[&tlv(0x02, s), &tlv(0x18, T2020.as_bytes())])).collect();
    let mut parts = vec![
        tlv(0x02, &[1]),
        ecdsa_sha256(),
        name(issuer),
        tlv(0x18, b"20250101000000Z"),
        tlv(0x18, next_update.as_bytes()),
    ];
    if !entries.is_empty() {
        parts.push(tlv(0x30, &entries.concat()));
    }
    let mut exts = vec![aki(issuer_key)];
    if with_number {
        exts.push(ext(oid::CRL_NUMBER, false, &tlv(0x02, &[7])));
    }
    parts.push(tlv(0xa0, &tlv(0x30, &exts.concat())));
    let tbs = tlv(0x30, &parts.concat());
    let sig: Signature = signer.sign(&tbs);
    seq(&[&tbs, &ecdsa_sha256(), &tlv(0x03, &[&[0u8][..], sig.to_der().as_bytes()].concat())])
}

#[test]
fn valid_chain_reports_the_leaf() {
    let p = pki();
    let path = validate(&p.leaf, &[p.ca.clone()], &[p.root.clone()], &[], &now()).expect("valid chain");
    assert_eq!(path.chain, vec![p.leaf.clone(), p.ca.clone(), p.root.clone()]);
    assert_eq!(path.leaf_public_key_sec1, sec1(&p.card_key));
    assert_eq!(path.leaf_public_key_sec1.len(), 65);
    assert_eq!(path.leaf_serial, vec![0x10, 0x20, 0x30]);
    assert!(!path.leaf_is_ca);
    let ku = path.leaf_key_usage.expect("keyUsage present");
    assert!(ku.digital_signature() && ku.key_agreement() && !ku.key_cert_sign());
    assert_eq!(path.leaf_subject.display(), "CN=Card 0001");
}

#[test]
fn leaf_directly_under_the_anchor() {
    let p = pki();
    let leaf = leaf_spec("Card 0002", &p.card_key, "Issuer Root", &p.root_key).build(&p.root_key);
    assert!(validate(&leaf, &[], &[p.root.clone()], &[], &now()).is_ok());
}

#[test]
fn expired_leaf_and_inclusive_not_after() {
    let p = pki();
    let mut spec = leaf_spec("Card 0001", &p.card_key, "Card CA", &p.ca_key);
    spec.not_after = "20250101000000Z";
    let leaf = spec.build(&p.ca_key);
    // §4.1.2.5: notAfter is inclusive; one second later the certificate has expired.
    assert!(validate(&leaf, &[p.ca.clone()], &[p.root.clone()], &[], &at("2025-01-01T00:00:00.999Z")).is_ok());
    match validate(&leaf, &[p.ca.clone()], &[p.root.clone()], &[], &at("2025-01-01T00:00:01Z")) {
        Err(PathError::Expired { at, not_after, .. }) => {
            assert_eq!(format_unix(not_after), "2025-01-01T00:00:00Z");
            assert_eq!(format_unix(at), "2025-01-01T00:00:01Z");
        }
        other => panic!("expected Expired, got {other:?}"),
    }
}

#[test]
fn not_yet_valid_leaf() {
    let p = pki();
    let mut spec = leaf_spec("Card 0001", &p.card_key, "Card CA", &p.ca_key);
    spec.not_before = "20260101000000Z";
    let leaf = spec.build(&p.ca_key);
    assert!(matches!(
        validate(&leaf, &[p.ca.clone()], &[p.root.clone()], &[], &now()),
        Err(PathError::NotYetValid { .. })
    ));
}

#[test]
fn expired_intermediate_is_reported() {
    let p = pki();
    let mut spec = ca_spec("Card CA", &p.ca_key, "Issuer Root", &p.root_key);
    spec.not_after = "20240101000000Z";
    let ca = spec.build(&p.root_key);
    assert!(matches!(validate(&p.leaf, &[ca], &[p.root.clone()], &[], &now()), Err(PathError::Expired { .. })));
}

#[test]
fn another_root_is_an_unknown_issuer() {
    let p = pki();
    let other_key = key(9);
    let other = root_spec("Other Root", &other_key).build(&other_key);
    assert!(matches!(validate(&p.leaf, &[p.ca.clone()], &[other], &[], &now()), Err(PathError::UnknownIssuer { .. })));
}

#[test]
fn same_name_other_key_is_a_bad_signature() {
    let p = pki();
    // An impostor root with the right name and the right key identifier but another key.
    let impostor_key = key(9);
    let mut spec = root_spec("Issuer Root", &impostor_key);
    spec.extensions = vec![bc(true, None), ku_ca(), ski(&p.root_key)];
    let impostor = spec.build(&impostor_key);
    assert!(matches!(
        validate(&p.leaf, &[p.ca.clone()], &[impostor], &[], &now()),
        Err(PathError::BadSignature { .. })
    ));
}

#[test]
fn intermediate_that_is_not_a_ca() {
    let p = pki();
    let mut spec = ca_spec("Card CA", &p.ca_key, "Issuer Root", &p.root_key);
    spec.extensions = vec![bc(false, None), ski(&p.ca_key), aki(&p.root_key)];
    let ca = spec.build(&p.root_key);
    assert!(matches!(validate(&p.leaf, &[ca], &[p.root.clone()], &[], &now()), Err(PathError::NotACa { .. })));
}

#[test]
fn ca_leaf_accepted_by_rfc5280_refused_by_the_card() {
    let p = pki();
    let mut spec = leaf_spec("Card 0001", &p.card_key, "Card CA", &p.ca_key);
    spec.extensions = vec![bc(true, None), ku_ca(), ski(&p.card_key), aki(&p.ca_key)];
    let leaf = spec.build(&p.ca_key);
    let path = validate(&leaf, &[p.ca.clone()], &[p.root.clone()], &[], &now()).expect("RFC 5280 allows it");
    assert!(path.leaf_is_ca);
    let mut card = now();
    card.allow_ca_leaf = false;
    assert!(matches!(
        validate(&leaf, &[p.ca.clone()], &[p.root.clone()], &[], &card),
        Err(PathError::CaUsedAsLeaf { .. })
    ));
}

#[test]
fn issuer_without_key_cert_sign() {
    let p = pki();
    let mut spec = ca_spec("Card CA", &p.ca_key, "Issuer Root", &p.root_key);
    // cA with keyUsage digitalSignature only.
    spec.extensions = vec![bc(true, None), ku_card(), ski(&p.ca_key), aki(&p.root_key)];
    let ca = spec.build(&p.root_key);
    assert!(validate(&p.leaf, &[ca], &[p.root.clone()], &[], &now()).is_err());
}

#[test]
fn path_len_constraint() {
    let p = pki();
    let mut spec = root_spec("Issuer Root", &p.root_key);
    spec.extensions = vec![bc(true, Some(0)), ku_ca(), ski(&p.root_key)];
    let root = spec.build(&p.root_key);
    assert!(matches!(
        validate(&p.leaf, &[p.ca.clone()], &[root.clone()], &[], &now()),
        Err(PathError::PathLenExceeded { path_len: 0, intermediates: 1, .. })
    ));
    // pathLen 0 still lets the root issue the leaf directly.
    let leaf = leaf_spec("Card 0002", &p.card_key, "Issuer Root", &p.root_key).build(&p.root_key);
    assert!(validate(&leaf, &[], &[root], &[], &now()).is_ok());
}

#[test]
fn max_intermediates_option() {
    let p = pki();
    let mut opts = now();
    opts.max_intermediates = Some(0);
    assert!(matches!(
        validate(&p.leaf, &[p.ca.clone()], &[p.root.clone()], &[], &opts),
        Err(PathError::MaxDepthExceeded { max: 0 })
    ));
    opts.max_intermediates = Some(1);
    assert!(validate(&p.leaf, &[p.ca.clone()], &[p.root.clone()], &[], &opts).is_ok());
}

#[test]
fn unknown_critical_extension_refused_non_critical_ignored() {
    let p = pki();
    let private_oid: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x63];
    let mut spec = leaf_spec("Card 0001", &p.card_key, "Card CA", &p.ca_key);
    spec.extensions.push(ext(private_oid, true, &tlv(0x05, &[])));
    let leaf = spec.build(&p.ca_key);
    match validate(&leaf, &[p.ca.clone()], &[p.root.clone()], &[], &now()) {
        Err(PathError::UnknownCriticalExtension { oid, .. }) => {
            assert_eq!(oid, "1.3.6.1.4.1.311.99")
        }
        other => panic!("expected UnknownCriticalExtension, got {other:?}"),
    }
    let mut spec = leaf_spec("Card 0001", &p.card_key, "Card CA", &p.ca_key);
    spec.extensions.push(ext(private_oid, false, &tlv(0x05, &[])));
    assert!(validate(&spec.build(&p.ca_key), &[p.ca.clone()], &[p.root.clone()], &[], &now()).is_ok());
}

#[test]
fn duplicate_extension_refused() {
    let p = pki();
    let mut spec = leaf_spec("Card 0001", &p.card_key, "Card CA", &p.ca_key);
    spec.extensions.push(ku_card());
    let leaf = spec.build(&p.ca_key);
    assert!(matches!(
        validate(&leaf, &[p.ca.clone()], &[p.root.clone()], &[], &now()),
        Err(PathError::DuplicateExtension { .. })
    ));
}

#[test]
fn missing_aki_refused_unless_self_signed() {
    let p = pki();
    let mut spec = leaf_spec("Card 0001", &p.card_key, "Card CA", &p.ca_key);
    spec.extensions.retain(|e| !e.windows(3).any(|w| w == oid::AUTHORITY_KEY_ID));
    let leaf = spec.build(&p.ca_key);
    assert!(matches!(
        validate(&leaf, &[p.ca.clone()], &[p.root.clone()], &[], &now()),
        Err(PathError::NonConforming { .. })
    ));
}

#[test]
fn serial_number_rules() {
    let p = pki();
    for (serial, ok) in [(vec![0x00], false), (vec![0x80], false), (vec![0x01; 21], false), (vec![0x01; 20], true)] {
        let mut spec = leaf_spec("Card 0001", &p.card_key, "Card CA", &p.ca_key);
        spec.serial = serial.clone();
        let r = validate(&spec.build(&p.ca_key), &[p.ca.clone()], &[p.root.clone()], &[], &now());
        assert_eq!(r.is_ok(), ok, "serial {serial:02x?}: {r:?}");
    }
}

#[test]
fn revoked_leaf_and_crl_checks() {
    let p = pki();
    let (inter, anchors) = ([p.ca.clone()], [p.root.clone()]);
    let revoking = crl("Card CA", &p.ca_key, &[&[0x10, 0x20, 0x30]], true, T2030);
    match validate(&p.leaf, &inter, &anchors, &[revoking], &now()) {
        Err(PathError::Revoked { serial, .. }) => assert_eq!(serial, "102030"),
        other => panic!("expected Revoked, got {other:?}"),
    }
    let other_serial = crl("Card CA", &p.ca_key, &[&[0x77]], true, T2030);
    assert!(validate(&p.leaf, &inter, &anchors, &[other_serial], &now()).is_ok());
    // The same CRL signed by the wrong key, without cRLNumber, or stale: unusable.
    let forged = signed_crl("Card CA", &p.root_key, &p.ca_key, &[], true, T2030);
    let no_number = crl("Card CA", &p.ca_key, &[], false, T2030);
    let stale = crl("Card CA", &p.ca_key, &[], true, "20250301000000Z");
    let mut truncated = crl("Card CA", &p.ca_key, &[], true, T2030);
    truncated.pop();
    for bad in [forged, no_number, stale, truncated] {
        assert!(matches!(validate(&p.leaf, &inter, &anchors, &[bad], &now()), Err(PathError::CrlInvalid { .. })));
    }
    // A CRL of an unrelated issuer does not apply.
    let unrelated = crl("Other CA", &key(9), &[&[0x10, 0x20, 0x30]], true, T2030);
    assert!(validate(&p.leaf, &inter, &anchors, &[unrelated], &now()).is_ok());
}

#[test]
fn crl_issuer_needs_crl_sign() {
    let p = pki();
    let mut spec = ca_spec("Card CA", &p.ca_key, "Issuer Root", &p.root_key);
    spec.extensions = vec![bc(true, None), ku_cert_sign_only(), ski(&p.ca_key), aki(&p.root_key)];
    let ca = spec.build(&p.root_key);
    let list = crl("Card CA", &p.ca_key, &[], true, T2030);
    assert!(validate(&p.leaf, &[ca.clone()], &[p.root.clone()], &[], &now()).is_ok());
    assert!(matches!(validate(&p.leaf, &[ca], &[p.root.clone()], &[list], &now()), Err(PathError::CrlInvalid { .. })));
}

#[test]
fn rsa_and_p384_keys_refused() {
    let p = pki();
    let rsa_alg = seq(&[&tlv(0x06, oid::RSA_ENCRYPTION), &tlv(0x05, &[])]);
    let rsa_key = seq(&[&tlv(0x02, &[0x00, 0xc1, 0x02, 0x03]), &tlv(0x02, &[0x01, 0x00, 0x01])]);
    let p384_alg = seq(&[&tlv(0x06, oid::EC_PUBLIC_KEY), &tlv(0x06, oid::SECP384R1)]);
    for spki in [
        seq(&[&rsa_alg, &tlv(0x03, &[&[0u8][..], &rsa_key].concat())]),
        seq(&[&p384_alg, &tlv(0x03, &[0u8, 0x04, 0x01])]),
    ] {
        let mut spec = leaf_spec("Card 0001", &p.card_key, "Card CA", &p.ca_key);
        spec.spki = spki;
        let r = validate(&spec.build(&p.ca_key), &[p.ca.clone()], &[p.root.clone()], &[], &now());
        assert!(matches!(r, Err(PathError::UnsupportedAlgorithm { .. })), "{r:?}");
    }
}

#[test]
fn malformed_der_never_panics() {
    let p = pki();
    let (inter, anchors) = ([p.ca.clone()], [p.root.clone()]);
    assert!(matches!(validate(&[], &inter, &anchors, &[], &now()), Err(PathError::Malformed { .. })));
    let mut trailing = p.leaf.clone();
    trailing.push(0);
    assert!(matches!(validate(&trailing, &inter, &anchors, &[], &now()), Err(PathError::Malformed { .. })));
    // Every truncation and every single-byte corruption is refused without a panic.
    for n in 0..p.leaf.len() {
        assert!(validate(&p.leaf[..n], &inter, &anchors, &[], &now()).is_err());
    }
    for i in 0..p.leaf.len() {
        let mut bad = p.leaf.clone();
        bad[i] ^= 0x41;
        assert!(validate(&bad, &inter, &anchors, &[], &now()).is_err(), "flip at {i} accepted");
    }
    // Corrupted intermediates are skipped; a corrupted CRL is an error (it could be the one
    // that revokes the leaf).
    let junk = vec![vec![0x30, 0x03, 0x02, 0x01], vec![0xff; 10]];
    assert!(matches!(validate(&p.leaf, &junk, &anchors, &[], &now()), Err(PathError::UnknownIssuer { .. })));
    assert!(matches!(validate(&p.leaf, &inter, &anchors, &junk, &now()), Err(PathError::CrlInvalid { .. })));
}

#[test]
fn cross_signing_loops_terminate() {
    // Two CAs that sign each other, many times over, and no anchor above them.
    let (a_key, b_key, leaf_key) = (key(4), key(5), key(6));
    let mut inters = Vec::new();
    for serial in 1..=20u8 {
        let mut a = ca_spec("CA A", &a_key, "CA B", &b_key);
        a.serial = vec![serial];
        let mut b = ca_spec("CA B", &b_key, "CA A", &a_key);
        b.serial = vec![serial];
        inters.push(a.build(&b_key));
        inters.push(b.build(&a_key));
    }
    let leaf = leaf_spec("Card", &leaf_key, "CA A", &a_key).build(&a_key);
    let unrelated_root = root_spec("Root", &key(7)).build(&key(7));
    let r = validate(&leaf, &inters, &[unrelated_root], &[], &now());
    assert!(matches!(r, Err(PathError::BudgetExceeded { .. })), "{r:?}");
}

#[test]
fn alternative_path_around_an_expired_intermediate() {
    let p = pki();
    let mut expired = ca_spec("Card CA", &p.ca_key, "Issuer Root", &p.root_key);
    expired.not_after = "20240101000000Z";
    expired.serial = vec![0x03];
    let inters = [expired.build(&p.root_key), p.ca.clone()];
    let path = validate(&p.leaf, &inters, &[p.root.clone()], &[], &now()).expect("the valid CA is found");
    assert_eq!(path.chain[1], p.ca);
}

#[test]
fn input_count_is_bounded() {
    let p = pki();
    let many = vec![p.ca.clone(); verify::MAX_INPUTS + 1];
    assert!(matches!(validate(&p.leaf, &many, &[p.root.clone()], &[], &now()), Err(PathError::BudgetExceeded { .. })));
}

#[test]
fn corrupted_crls_and_intermediates_never_panic_nor_unrevoke() {
    let p = pki();
    let ca = Certificate::from_der(&p.ca).expect("CA parses");
    let list = crl("Card CA", &p.ca_key, &[&[0x10, 0x20, 0x30]], true, T2030);
    for i in 0..list.len() {
        let mut bad = list.clone();
        bad[i] ^= 0x41;
        // A corrupted revoking CRL never makes the revoked leaf valid, unless the corruption
        // made it another issuer's CRL (issuer name or key identifier changed), which does not
        // apply to this leaf.
        let r = validate(&p.leaf, &[p.ca.clone()], &[p.root.clone()], &[bad.clone()], &now());
        if r.is_ok() {
            let parsed = Crl::from_der(&bad).expect("a CRL that was used parses");
            let applies = parsed.issuer.matches(&ca.subject)
                && parsed.authority_key_id().is_none_or(|k| Some(&k) == ca.subject_key_id.as_ref());
            assert!(!applies, "flip at {i} of an applicable CRL made a revoked leaf valid");
        }
    }
    for i in 0..p.ca.len() {
        let mut bad = p.ca.clone();
        bad[i] ^= 0x41;
        let _ = validate(&p.leaf, &[bad], &[p.root.clone()], &[], &now());
    }
}

/// A `Validator` built once (intermediates, anchors, CRLs and their keys parsed once) gives each leaf
/// the verdict `validate` gives it alone, whatever came before: a valid leaf, a revoked one, one
/// from another CA, garbage, and the valid one again.
#[test]
fn a_reused_validator_agrees_with_validate_leaf_by_leaf() {
    let p = pki();
    let other = leaf_spec("Card 0009", &p.card_key, "Card CA", &key(9)).build(&key(9));
    let mut revoked_spec = leaf_spec("Card 0002", &p.card_key, "Card CA", &p.ca_key);
    revoked_spec.serial = vec![0x42];
    let revoked = revoked_spec.build(&p.ca_key);
    let crls = vec![crl("Card CA", &p.ca_key, &[&[0x42]], true, "20300101000000Z")];
    let (inter, anchors) = (vec![p.ca.clone()], vec![p.root.clone()]);
    let validator = crate::pki::Validator::new(&inter, &anchors, &crls);
    for leaf in [&p.leaf, &revoked, &other, &vec![0x30, 0x00], &p.leaf] {
        let alone = validate(leaf, &inter, &anchors, &crls, &now()).map(|v| v.chain).map_err(|e| e.to_string());
        let reused = validator.validate(leaf, &now()).map(|v| v.chain).map_err(|e| e.to_string());
        assert_eq!(alone, reused);
    }
    assert!(validator.validate(&p.leaf, &now()).is_ok());
    assert!(matches!(validator.validate(&revoked, &now()), Err(PathError::Revoked { .. })));
}
