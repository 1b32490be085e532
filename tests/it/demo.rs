//! The main job: `keyroll demo` runs a whole rollout on virtual cards and its verdict holds.

use crate::support::cli;
use cli::*;

#[test]
fn demo_runs_to_a_passing_verdict() {
    let s = Scratch::new();
    let dir = s.path("demo");
    let o = s.cmd().args(["--json", "demo", "--dir"]).arg(&dir).output().unwrap();
    assert!(o.status.success(), "demo failed: {}\n{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // One verdict type (the audit report's): named checks, each with what it saw.
    let verdict = &v["verdict"];
    assert_eq!(verdict["ok"], true, "{verdict}");
    let checks = verdict["checks"].as_array().unwrap();
    for k in ["keys_converged", "value_conserved", "chains_valid", "log_intact", "rollout_verified"] {
        let c = checks.iter().find(|c| c["name"] == k).unwrap_or_else(|| panic!("no check {k}: {verdict}"));
        assert_eq!(c["ok"], true, "{k}: {c}");
    }
    let figures = &v["figures"];
    assert_eq!(figures["issued_value"], figures["balances"].as_u64().unwrap() + figures["in_flight"].as_u64().unwrap());
    assert_eq!(figures["newest_transfer_key_id"], 3);
    assert_eq!(figures["certificates_revoked"], 1);
    // The update-key roll leaves generation pairs with no direct path: the verdict explains them as
    // bridged, not as failures.
    assert!(figures["pairs_bridged"].as_u64().unwrap() > 0, "{figures}");
    assert_eq!(v["rollout_verify"]["failures"], 0, "{}", v["rollout_verify"]);
    let steps = v["steps"].as_array().unwrap();
    let said = |needle: &str| steps.iter().any(|s| s["text"].as_str().unwrap().contains(needle));
    assert!(said("by the symmetric path"), "no symmetric roll told");
    assert!(said("by the public-key path"), "no public-key roll told");
    assert!(said("by selection"), "no multi-key selection told");
    // DESIGN.md §10 point 4: the block spreads terminal -> card -> card, and a terminal with no policy
    // file cannot move value with the blocked card: the card holding the policy refuses it.
    assert!(said("took the policy from"), "no card-to-card policy spread told");
    assert!(said("refused by the card"), "no blocked card refused");
    // The database it leaves is a normal issuer database, and every verdict on it agrees with the
    // demo's PASS: `audit log`, `audit report` and `rollout verify` (which once said FAIL here).
    let db = dir.join("keyroll.db");
    let id = dir.join("keyroll.db.identity");
    let o = s.cmd().arg("--db").arg(&db).args(["audit", "log"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let root = hex::decode(
        String::from_utf8(
            std::process::Command::new("sqlite3")
                .arg(&db)
                .arg("SELECT hex(root_der) FROM ca;")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim(),
    )
    .unwrap();
    let expect_root = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&root));
    let o = s
        .cmd()
        .arg("--db")
        .arg(&db)
        .args(["--json", "audit", "report", "--expect-root", &expect_root])
        .output()
        .unwrap();
    assert!(o.status.success(), "audit report disagrees with the demo: {}", String::from_utf8_lossy(&o.stdout));
    let o =
        s.cmd().arg("--db").arg(&db).arg("--identity").arg(&id).args(["--json", "rollout", "verify"]).output().unwrap();
    assert!(o.status.success(), "rollout verify disagrees with the demo: {}", String::from_utf8_lossy(&o.stdout));
    let rv: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rv["bridged"], figures["pairs_bridged"], "{rv}");
    // A second demo into the same folder refuses to overwrite the database.
    let o = s.cmd().args(["demo", "--dir"]).arg(&dir).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[cfg(feature = "pcsc")]
use crate::support::pcscd;

/// `demo --pcsc`: the same rollout with every settlement over real pcscd and vpcd readers.
#[cfg(feature = "pcsc")]
#[test]
fn demo_over_real_pcsc_reaches_a_passing_verdict() {
    let _pc = pcscd::acquire();
    let s = Scratch::new();
    let o = s.cmd().args(["--json", "demo", "--pcsc", "--dir"]).arg(s.path("demo")).output().unwrap();
    assert!(o.status.success(), "demo --pcsc failed: {}\n{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"]["ok"], true, "{}", v["verdict"]);
    assert!(v["steps"].as_array().unwrap().iter().any(|s| s["text"].as_str().unwrap().contains("real PC/SC")));
}
