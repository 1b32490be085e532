//! Under CI (`scripts/test` sets `KEYROLL_REQUIRE_VECTORS=1`) a conformance test whose vectors are
//! missing fails; without it, it passes with a loud warning. Checked by running this test binary on one
//! conformance test with the vectors pointed at a folder that does not exist.

use std::process::Command;

fn run_rfc4493(require: bool) -> std::process::Output {
    let missing = tempfile::tempdir().unwrap();
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "crypto_vectors::rfc4493_aes_cmac_examples", "--nocapture"])
        .env("KEYROLL_VECTORS_DIR", missing.path().join("nothing-here"))
        .env_remove(crate::support::REQUIRE_VECTORS);
    if require {
        c.env(crate::support::REQUIRE_VECTORS, "1");
    }
    c.output().unwrap()
}

#[test]
fn missing_vectors_fail_under_ci_and_warn_elsewhere() {
    let o = run_rfc4493(true);
    assert!(!o.status.success(), "missing vectors passed under KEYROLL_REQUIRE_VECTORS=1");
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 failed"), "{}", String::from_utf8_lossy(&o.stdout));
    let o = run_rfc4493(false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stderr).contains("checked NOTHING"), "{}", String::from_utf8_lossy(&o.stderr));
}
