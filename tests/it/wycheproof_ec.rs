//! Wycheproof conformance (C2SP/wycheproof, commit dac1dd47) for keyroll's own P-256 wrappers:
//! `card_key::verify` (DER), `card_key::verify_p1363`, `card_key::ecdh` and
//! `card_key::public_key_from_spki_der`.
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
        assert!(self.failures.is_empty(), "{file}:\n{}", self.failures.join("\n"));
        assert!(self.valid > 0 && self.invalid > 0, "{file}: a file without both verdicts proves nothing");
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

fn run_ecdsa(file: &str, verify: Verify) {
    let Some(doc) = vector(file) else { return };
    assert_eq!(doc["algorithm"], "ECDSA");
    let mut tally = Tally::default();
    for group in doc["testGroups"].as_array().expect("testGroups") {
        assert_eq!(group["sha"], "SHA-256");
        assert_eq!(group["publicKey"]["curve"], "secp256r1");
        let public = group_public_key(group);
        for t in group["tests"].as_array().expect("tests") {
            let msg = unhex(&t["msg"]);
            let sig = unhex(&t["sig"]);
            let outcome = verify(&public, &[&msg], &sig).map_err(|e| e.to_string());
            tally.record(file, t["tcId"].as_u64().unwrap(), t["result"].as_str().unwrap(), outcome);
        }
    }
    tally.finish(file, doc["numberOfTests"].as_u64().unwrap());
}

#[test]
fn ecdsa_p256_sha256_der() {
    run_ecdsa("ecdsa_secp256r1_sha256_test.json", card_key::verify);
}

#[test]
fn ecdsa_p256_sha256_p1363() {
    run_ecdsa("ecdsa_secp256r1_sha256_p1363_test.json", card_key::verify_p1363);
}

/// `decode_public` turns the vector's `public` field into a SEC 1 point through keyroll's wrappers.
fn run_ecdh(file: &str, decode_public: fn(&[u8]) -> Result<Vec<u8>, String>) {
    let Some(doc) = vector(file) else { return };
    assert_eq!(doc["algorithm"], "ECDH");
    let mut tally = Tally::default();
    for group in doc["testGroups"].as_array().expect("testGroups") {
        assert_eq!(group["curve"], "secp256r1");
        for t in group["tests"].as_array().expect("tests") {
            let tc_id = t["tcId"].as_u64().unwrap();
            let expected_shared = unhex(&t["shared"]);
            let private = to_32(&unhex(&t["private"])).expect("private key fits 32 bytes");
            let outcome = (|| {
                let card = CardKeyPair::from_bytes(&private).map_err(|e| format!("private key: {e}"))?;
                let public = decode_public(&unhex(&t["public"]))?;
                let shared = card_key::ecdh(&card, &public).map_err(|e| e.to_string())?;
                if shared.expose() != expected_shared.as_slice() {
                    return Err("shared secret differs from the vector".to_string());
                }
                Ok(())
            })();
            // A key that was accepted must give the published secret, whatever the verdict: a wrong
            // secret means an invalid point slipped through decoding.
            if let Err(e) = &outcome {
                assert!(!e.contains("differs"), "{file} tcId {tc_id} ({}): {e}", t["result"]);
            }
            tally.record(file, tc_id, t["result"].as_str().unwrap(), outcome);
        }
    }
    tally.finish(file, doc["numberOfTests"].as_u64().unwrap());
}

#[test]
fn ecdh_p256_ecpoint() {
    run_ecdh("ecdh_secp256r1_ecpoint_test.json", |point| Ok(point.to_vec()));
}

#[test]
fn ecdh_p256_spki() {
    run_ecdh("ecdh_secp256r1_test.json", |spki| {
        card_key::public_key_from_spki_der(spki).map(|p| p.to_vec()).map_err(|e| format!("SPKI: {e}"))
    });
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
