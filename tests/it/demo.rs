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
    let verdict = &v["verdict"];
    for k in ["keys_converged", "value_conserved", "chains_valid", "log_intact", "ok"] {
        assert_eq!(verdict[k], true, "{k}: {verdict}");
    }
    assert_eq!(verdict["issued_value"], verdict["balances"].as_u64().unwrap() + verdict["in_flight"].as_u64().unwrap());
    assert_eq!(verdict["newest_transfer_key_id"], 3);
    assert_eq!(verdict["certificates_revoked"], 1);
    let steps = v["steps"].as_array().unwrap();
    let said = |needle: &str| steps.iter().any(|s| s["text"].as_str().unwrap().contains(needle));
    assert!(said("by the symmetric path"), "no symmetric roll told");
    assert!(said("by the public-key path"), "no public-key roll told");
    assert!(said("by selection"), "no multi-key selection told");
    assert!(said("refuses it"), "no revoked card refused");
    // The database it leaves is a normal issuer database.
    let db = dir.join("keyroll.db");
    let o = s.cmd().arg("--db").arg(&db).args(["audit", "log"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
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
