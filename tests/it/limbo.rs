//! x509-limbo conformance harness over the shared subset (`../shared/vectors/x509-limbo/`).
//!
//! Prints pass/fail/skip per tier and fails when the tiers `core`, `opt-crl` and
//! `opt-max-chain-depth` are not passed in full. The vectors are read in place and never
//! copied into the project; when they are missing the test says so loudly and does nothing.

use keyroll::pki::{self, ValidationOptions};
use std::collections::BTreeMap;

/// Optional tiers: passes reached so far, which must not regress. The one known miss in
/// opt-name-constraints is `webpki::nc::permitted-dns-match-noncritical`, which contradicts
/// `rfc5280::nc::permitted-dns-match-noncritical` in the same tier; keyroll follows RFC 5280
/// §4.2.1.10 (name constraints MUST be critical).
const FLOOR_TIERS: &[(&str, usize)] =
    &[("alg-rejection", 12), ("profile-strictness", 3), ("opt-policy", 1), ("opt-name-constraints", 56)];

/// Tiers in which every case must pass (and none may be skipped).
const REQUIRED_TIERS: &[(&str, usize)] = &[("core", 66), ("opt-crl", 8), ("opt-max-chain-depth", 5)];

fn pem_to_der(pem: &str) -> Vec<u8> {
    match der::pem::decode_vec(pem.as_bytes()) {
        Ok((_, der)) => der,
        // A case whose PEM does not decode gets an empty input, which the validator refuses.
        Err(_) => Vec::new(),
    }
}

fn eku_oid(name: &str) -> Option<Vec<u8>> {
    match name {
        "serverAuth" => Some(pki::EKU_SERVER_AUTH.to_vec()),
        "clientAuth" => Some(pki::EKU_CLIENT_AUTH.to_vec()),
        "codeSigning" => Some(vec![0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03]),
        "emailProtection" => Some(vec![0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04]),
        "timeStamping" => Some(vec![0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08]),
        "OCSPSigning" => Some(vec![0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09]),
        _ => None,
    }
}

#[derive(Default)]
struct Tally {
    pass: usize,
    fail: usize,
    skip: usize,
    failures: Vec<String>,
}

#[test]
fn x509_limbo_subset() {
    let dir = crate::support::vectors_dir().join("x509-limbo");
    let (Ok(cases), Ok(index)) = (
        std::fs::read_to_string(dir.join("limbo-subset.json")),
        std::fs::read_to_string(dir.join("limbo-subset-index.json")),
    ) else {
        crate::support::vectors_missing(&format!("x509-limbo vectors at {}", dir.display()));
        return;
    };
    let cases: serde_json::Value = serde_json::from_str(&cases).expect("limbo-subset.json is JSON");
    let index: serde_json::Value = serde_json::from_str(&index).expect("limbo-subset-index.json is JSON");
    let tiers: BTreeMap<String, String> = index
        .as_array()
        .expect("index is an array")
        .iter()
        .filter_map(|e| Some((e["id"].as_str()?.to_string(), e["tier"].as_str()?.to_string())))
        .collect();

    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    let testcases = cases["testcases"].as_array().expect("testcases array");
    for case in testcases {
        let id = case["id"].as_str().unwrap_or("?").to_string();
        let tier = tiers.get(&id).cloned().unwrap_or_else(|| "unindexed".to_string());
        let t = tally.entry(tier.clone()).or_default();
        if tier == "conflict-partner-skip" {
            t.skip += 1;
            continue;
        }
        let strs = |key: &str| -> Vec<Vec<u8>> {
            case[key]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).map(pem_to_der).collect())
                .unwrap_or_default()
        };
        let anchors = strs("trusted_certs");
        let intermediates = strs("untrusted_intermediates");
        let crls = strs("crls");
        let leaf = pem_to_der(case["peer_certificate"].as_str().unwrap_or(""));
        let at = match case["validation_time"].as_str() {
            Some(s) => pki::parse_rfc3339(s).expect("validation_time is RFC 3339"),
            None => std::time::SystemTime::now(),
        };
        let mut opts = ValidationOptions::at(at);
        opts.max_intermediates = case["max_chain_depth"].as_u64().map(|d| d as usize);
        let ekus: Vec<&str> = case["extended_key_usage"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if ekus.len() > 1 || ekus.iter().any(|e| eku_oid(e).is_none()) {
            t.skip += 1;
            t.failures.push(format!("SKIP {id}: extended_key_usage {ekus:?} not supported by the harness"));
            continue;
        }
        opts.required_eku = ekus.first().and_then(|e| eku_oid(e));
        let expected_ok = case["expected_result"].as_str() == Some("SUCCESS");
        let result = pki::validate(&leaf, &intermediates, &anchors, &crls, &opts);
        if std::env::var_os("LIMBO_VERBOSE").is_some() {
            let got = result.as_ref().map_or_else(|e| e.to_string(), |_| "valid".into());
            println!("  {id}: {got}");
        }
        if result.is_ok() == expected_ok {
            t.pass += 1;
        } else {
            t.fail += 1;
            let got = match &result {
                Ok(_) => "valid".to_string(),
                Err(e) => format!("invalid: {e}"),
            };
            t.failures
                .push(format!("FAIL {id}: expected {}, got {got}", if expected_ok { "SUCCESS" } else { "FAILURE" }));
        }
    }

    println!("\nx509-limbo subset ({} cases)", testcases.len());
    println!("{:<24} {:>5} {:>5} {:>5}", "tier", "pass", "fail", "skip");
    for (tier, t) in &tally {
        println!("{tier:<24} {:>5} {:>5} {:>5}", t.pass, t.fail, t.skip);
    }
    for (tier, t) in &tally {
        for f in &t.failures {
            println!("  [{tier}] {f}");
        }
    }
    for (tier, floor) in FLOOR_TIERS {
        let pass = tally.get(*tier).map_or(0, |t| t.pass);
        assert!(pass >= *floor, "tier {tier} regressed: {pass} passes, at least {floor} expected");
    }
    for (tier, count) in REQUIRED_TIERS {
        let t = tally.get(*tier).unwrap_or_else(|| panic!("tier {tier} has no cases"));
        assert_eq!(
            (t.pass, t.fail, t.skip),
            (*count, 0, 0),
            "tier {tier} must pass all {count} cases (pass/fail/skip)"
        );
    }
}
