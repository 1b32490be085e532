//! The runnable examples in `examples/` run to the end with this build's binary.

use std::process::Command;

fn run(script: &str, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new("bash")
        .arg(format!("{}/examples/{script}", env!("CARGO_MANIFEST_DIR")))
        .arg(dir.path())
        .env("KEYROLL", env!("CARGO_BIN_EXE_keyroll"))
        .env_remove("KEYROLL_DB")
        .env_remove("KEYROLL_IDENTITY")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{script} failed:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains(expect), "{script}: no {expect:?} in\n{out}");
}

#[test]
fn issuer_key_rotation() {
    run("issuer-key-rotation.sh", "rotation complete");
}

#[test]
fn personalisation_run() {
    run("personalisation-run.sh", "personalised 2003 cards");
}

#[test]
fn audit() {
    run("audit.sh", "audit done");
}
