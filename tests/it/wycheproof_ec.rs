//! Wycheproof conformance (C2SP/wycheproof, commit dac1dd47) for keyroll's own P-256 wrappers:
//! `card_key::verify` (DER), `card_key::verify_p1363`, `card_key::ecdh` and
//! `card_key::public_key_from_spki_der`, whose arithmetic is AWS-LC's (`crypto::ec`).
//!
//! Every case also goes through the `p256` crate (RustCrypto), the second implementation, behind the
//! same encoding rules keyroll's wrappers had before the AWS-LC backend (SEC 1 prefix and length
//! check, strict DER of at most 72 bytes, RFC 5480 SPKI): both tallies are printed, and the two
//! implementations must give the same verdict on every `valid` and `invalid` case (they may differ
//! only on `acceptable` ones, which are listed).
//!
//! The vectors are read from `../shared/vectors/wycheproof/` beside the project (never copied in).
//! When that folder is missing the tests say so loudly on stderr and pass without checking anything;
//! when it is present every `valid` case must be accepted (with the right shared secret for ECDH) and
//! every `invalid` case refused. `acceptable` cases may go either way and are only counted, except that
//! an accepted ECDH case must still give the published shared secret.

use keyroll::crypto::card_key::{self, CardKeyPair};
use serde_json::Value;

fn vector(name: &str) -> Option<Value> {
    let path = crate::support::vectors_dir().join("wycheproof").join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))),
        Err(e) => {
            crate::support::vectors_missing(&format!("Wycheproof vectors at {} ({e})", path.display()));
            None
        }
    }
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

/// Wycheproof integers are signed big-endian and may carry a leading 00 (sign byte) or be shorter than
/// the field: strip leading zeros and left-pad to 32 bytes. `None` if the value needs more than 32 bytes.
fn to_32(bytes: &[u8]) -> Option<[u8; 32]> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let digits = &bytes[first..];
    if digits.len() > 32 {
        return None;
    }
    let mut out = [0u8; 32];
    out[32 - digits.len()..].copy_from_slice(digits);
    Some(out)
}

#[derive(Default, Debug)]
struct Tally {
    valid: usize,
    invalid: usize,
    acceptable_accepted: usize,
    acceptable_refused: usize,
    failures: Vec<String>,
}

impl Tally {
    fn record(&mut self, file: &str, tc_id: u64, expected: &str, outcome: Result<(), String>) {
        match (expected, &outcome) {
            ("valid", Ok(())) => self.valid += 1,
            ("invalid", Err(_)) => self.invalid += 1,
            ("acceptable", Ok(())) => self.acceptable_accepted += 1,
            ("acceptable", Err(_)) => self.acceptable_refused += 1,
            ("valid", Err(e)) => self.failures.push(format!("{file} tcId {tc_id}: valid case refused: {e}")),
            ("invalid", Ok(())) => self.failures.push(format!("{file} tcId {tc_id}: invalid case accepted")),
            (other, _) => self.failures.push(format!("{file} tcId {tc_id}: unknown result {other:?}")),
        }
    }

    fn finish(self, file: &str, expected_total: u64) {
        self.finish_report(file, expected_total);
        assert!(self.failures.is_empty(), "{file}:\n{}", self.failures.join("\n"));
        assert!(self.valid > 0 && self.invalid > 0, "{file}: a file without both verdicts proves nothing");
    }

    /// Print the tally and check the case count, without judging the verdicts.
    fn finish_report(&self, file: &str, expected_total: u64) {
        let total =
            self.valid + self.invalid + self.acceptable_accepted + self.acceptable_refused + self.failures.len();
        eprintln!(
            "{file}: {} valid ok, {} invalid refused, acceptable {} accepted / {} refused, {} mismatches",
            self.valid,
            self.invalid,
            self.acceptable_accepted,
            self.acceptable_refused,
            self.failures.len()
        );
        assert_eq!(total as u64, expected_total, "{file}: numberOfTests disagrees with the cases run");
    }
}

/// The group's public key rebuilt from `wx`/`wy` (normalised) and checked against `uncompressed`.
fn group_public_key(group: &Value) -> Vec<u8> {
    let pk = &group["publicKey"];
    let uncompressed = unhex(&pk["uncompressed"]);
    let (x, y) = (to_32(&unhex(&pk["wx"])).expect("wx fits"), to_32(&unhex(&pk["wy"])).expect("wy fits"));
    let mut built = vec![0x04];
    built.extend_from_slice(&x);
    built.extend_from_slice(&y);
    assert_eq!(built, uncompressed, "wx/wy normalisation disagrees with the uncompressed key");
    built
}

/// The shape of `card_key::verify` and `card_key::verify_p1363`.
type Verify = fn(&[u8], &[&[u8]], &[u8]) -> Result<(), keyroll::crypto::CryptoError>;

/// The second implementation's shape: `p256`-crate verification behind version 1's encoding rules.
type Reference = fn(&[u8], &[u8], &[u8]) -> Result<(), String>;

/// Version 1's SEC 1 rule: only `04‖X‖Y` (65 bytes) or `02|03‖X` (33 bytes), then the `p256` crate.
fn p256_public(sec1: &[u8]) -> Result<p256::PublicKey, String> {
    match (sec1.first(), sec1.len()) {
        (Some(0x04), 65) | (Some(0x02 | 0x03), 33) => {}
        _ => return Err("SEC 1 form".into()),
    }
    p256::PublicKey::from_sec1_bytes(sec1).map_err(|e| format!("p256 key: {e}"))
}

fn p256_verify_der(public: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), String> {
    use p256::ecdsa::signature::Verifier;
    let key = p256::ecdsa::VerifyingKey::from(p256_public(public)?);
    if sig.len() > 72 {
        return Err("DER longer than 72 bytes".into());
    }
    let sig = p256::ecdsa::Signature::from_der(sig).map_err(|e| format!("DER: {e}"))?;
    key.verify(msg, &sig).map_err(|e| format!("verify: {e}"))
}

fn p256_verify_p1363(public: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), String> {
    use p256::ecdsa::signature::Verifier;
    let key = p256::ecdsa::VerifyingKey::from(p256_public(public)?);
    let sig = p256::ecdsa::Signature::from_slice(sig).map_err(|e| format!("P1363: {e}"))?;
    key.verify(msg, &sig).map_err(|e| format!("verify: {e}"))
}

/// Both implementations' tallies, and the cases where they disagree.
struct Both {
    ours: Tally,
    reference: Tally,
    disagreements: Vec<String>,
}

impl Both {
    fn new() -> Self {
        Both { ours: Tally::default(), reference: Tally::default(), disagreements: Vec::new() }
    }

    fn record(
        &mut self,
        file: &str,
        tc_id: u64,
        expected: &str,
        ours: Result<(), String>,
        reference: Result<(), String>,
    ) {
        if ours.is_ok() != reference.is_ok() {
            self.disagreements.push(format!(
                "{file} tcId {tc_id} ({expected}): aws-lc {}, p256 crate {}",
                ours.as_ref().map_or_else(|e| format!("refused ({e})"), |_| "accepted".into()),
                reference.as_ref().map_or_else(|e| format!("refused ({e})"), |_| "accepted".into())
            ));
        }
        self.ours.record(file, tc_id, expected, ours);
        self.reference.record(file, tc_id, expected, reference);
    }

    fn finish(self, file: &str, expected_total: u64) {
        eprint!("[p256 crate, reference] ");
        self.reference.finish_report(file, expected_total);
        eprint!("[keyroll, aws-lc]       ");
        let only_acceptable = self.disagreements.iter().all(|d| d.contains("(acceptable)"));
        for d in &self.disagreements {
            eprintln!("  differs: {d}");
        }
        self.ours.finish(file, expected_total);
        assert!(only_acceptable, "{file}: the implementations disagree on a valid/invalid case");
    }
}

fn run_ecdsa(file: &str, verify: Verify, reference: Reference) {
    let Some(doc) = vector(file) else { return };
    assert_eq!(doc["algorithm"], "ECDSA");
    let mut both = Both::new();
    for group in doc["testGroups"].as_array().expect("testGroups") {
        assert_eq!(group["sha"], "SHA-256");
        assert_eq!(group["publicKey"]["curve"], "secp256r1");
        let public = group_public_key(group);
        for t in group["tests"].as_array().expect("tests") {
            let msg = unhex(&t["msg"]);
            let sig = unhex(&t["sig"]);
            let outcome = verify(&public, &[&msg], &sig).map_err(|e| e.to_string());
            let expected = t["result"].as_str().unwrap();
            both.record(file, t["tcId"].as_u64().unwrap(), expected, outcome, reference(&public, &msg, &sig));
        }
    }
    both.finish(file, doc["numberOfTests"].as_u64().unwrap());
}

#[test]
fn ecdsa_p256_sha256_der() {
    run_ecdsa("ecdsa_secp256r1_sha256_test.json", card_key::verify, p256_verify_der);
}

#[test]
fn ecdsa_p256_sha256_p1363() {
    run_ecdsa("ecdsa_secp256r1_sha256_p1363_test.json", card_key::verify_p1363, p256_verify_p1363);
}

/// `decode_public` turns the vector's `public` field into a SEC 1 point through keyroll's wrappers;
/// `reference_public` does the same for the `p256` crate, with version 1's rules.
fn run_ecdh(
    file: &str,
    decode_public: fn(&[u8]) -> Result<Vec<u8>, String>,
    reference_public: fn(&[u8]) -> Result<p256::PublicKey, String>,
) {
    let Some(doc) = vector(file) else { return };
    assert_eq!(doc["algorithm"], "ECDH");
    let mut both = Both::new();
    for group in doc["testGroups"].as_array().expect("testGroups") {
        assert_eq!(group["curve"], "secp256r1");
        for t in group["tests"].as_array().expect("tests") {
            let tc_id = t["tcId"].as_u64().unwrap();
            let expected_shared = unhex(&t["shared"]);
            let private = to_32(&unhex(&t["private"])).expect("private key fits 32 bytes");
            let public_field = unhex(&t["public"]);
            let outcome = (|| {
                let card = CardKeyPair::from_bytes(&private).map_err(|e| format!("private key: {e}"))?;
                let public = decode_public(&public_field)?;
                let shared = card_key::ecdh(&card, &public).map_err(|e| e.to_string())?;
                if shared.expose() != expected_shared.as_slice() {
                    return Err("shared secret differs from the vector".to_string());
                }
                Ok(())
            })();
            let reference = (|| {
                let secret = p256::NonZeroScalar::try_from(&private[..]).map_err(|e| format!("private key: {e}"))?;
                let public = reference_public(&public_field)?;
                let shared = p256::elliptic_curve::ecdh::diffie_hellman(secret, public.as_affine());
                if shared.raw_secret_bytes().as_slice() != expected_shared.as_slice() {
                    return Err("shared secret differs from the vector".to_string());
                }
                Ok(())
            })();
            // A key that was accepted must give the published secret, whatever the verdict: a wrong
            // secret means an invalid point slipped through decoding.
            for e in [&outcome, &reference].into_iter().filter_map(|o| o.as_ref().err()) {
                assert!(!e.contains("differs"), "{file} tcId {tc_id} ({}): {e}", t["result"]);
            }
            both.record(file, tc_id, t["result"].as_str().unwrap(), outcome, reference);
        }
    }
    both.finish(file, doc["numberOfTests"].as_u64().unwrap());
}

#[test]
fn ecdh_p256_ecpoint() {
    run_ecdh("ecdh_secp256r1_ecpoint_test.json", |point| Ok(point.to_vec()), p256_public);
}

#[test]
fn ecdh_p256_spki() {
    run_ecdh(
        "ecdh_secp256r1_test.json",
        |spki| card_key::public_key_from_spki_der(spki).map(|p| p.to_vec()).map_err(|e| format!("SPKI: {e}")),
        |spki| {
            use p256::pkcs8::DecodePublicKey;
            p256::PublicKey::from_public_key_der(spki).map_err(|e| format!("SPKI: {e}"))
        },
    );
}

#[test]
fn normalisation_of_signed_hex_integers() {
    assert_eq!(to_32(&[0x00, 0xFF]).unwrap()[31], 0xFF);
    assert_eq!(to_32(&[0x00; 40]).unwrap(), [0u8; 32]);
    let mut long = vec![0x00];
    long.extend_from_slice(&[0x80; 32]);
    assert_eq!(to_32(&long).unwrap(), [0x80; 32]);
    assert!(to_32(&[0x01; 33]).is_none());
}
