//! The auditors' commands through the real binary and a real database (issue: Auditors):
//! `audit chain` over the database and over files, and `audit report`.

use crate::support::cli;
use cli::*;
use serde_json::Value;
use std::process::Output;

/// An issuer with one hybrid batch of `n` personalised cards (balance 250 each).
fn issuer_with_cards(n: u32) -> Scratch {
    issuer_named("Test Issuer", n)
}

fn issuer_named(name: &str, n: u32) -> Scratch {
    let s = Scratch::new();
    s.ok(&["init", "--issuer", name]);
    s.ok(&["batch", "new", "b", "--profile", "hybrid", "--transfer-key-limit", "3", "--initial-balance", "250"]);
    s.ok(&["perso", "--batch", "b", "--out-dir", "cards", "--count", &n.to_string()]);
    s
}

fn certificates(s: &Scratch) -> Vec<Value> {
    s.json(&["cert", "list"])["certificates"].as_array().unwrap().clone()
}

/// Writes each card certificate's PEM (from `cert list --json`) to `certN.pem`; returns the names.
fn export_certificates(s: &Scratch) -> Vec<String> {
    certificates(s)
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let name = format!("cert{i}.pem");
            std::fs::write(s.path(&name), c["pem"].as_str().unwrap()).unwrap();
            name
        })
        .collect()
}

/// Runs with `--json`; returns the exit code and the parsed document on stdout.
fn json_run(s: &Scratch, args: &[&str]) -> (i32, Value, Output) {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let o = s.run(&a);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "keyroll {args:?}: stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        )
    });
    (o.status.code().unwrap(), v, o)
}

fn reasons(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["valid"] == false)
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn all_checks_every_database_certificate_and_reports_the_revoked_one() {
    let s = issuer_with_cards(5);
    let clean = s.json(&["audit", "chain", "--all", "--expect-root", s.expect_root().as_str()]);
    assert_eq!(clean["schema"], "keyroll/1");
    assert_eq!((clean["valid"].as_u64(), clean["invalid"].as_u64()), (Some(5), Some(0)), "{clean}");

    let victim = certificates(&s)[2]["card"].as_str().unwrap().to_string();
    s.ok(&["cert", "revoke", &victim, "--reason", "key-compromise"]);
    // A revoked certificate is listed invalid with its reason, but the register's verdict is the
    // report's: revocations are expected (issue 14 item 8; before, `chain --all` exited 1 here while
    // `audit report` passed).
    let (code, v, _) = json_run(&s, &["audit", "chain", "--all", "--expect-root", s.expect_root().as_str()]);
    assert_eq!(code, 0, "a revocation is not a failed check: {v}");
    assert_eq!((v["valid"].as_u64(), v["invalid"].as_u64(), v["revoked"].as_u64()), (Some(4), Some(1), Some(1)), "{v}");
    let report = s.run(&["audit", "report", "--expect-root", s.expect_root().as_str()]);
    assert_eq!(report.status.code(), Some(0), "{}", stderr(&report));
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    let bad: Vec<&Value> = results.iter().filter(|r| r["valid"] == false).collect();
    assert_eq!(bad[0]["card"], victim.as_str());
    let reason = bad[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("revoked (keyCompromise) at 20"), "{reason}");
    for r in results {
        assert!(r["certificate"].is_string() && r["valid"].is_boolean(), "{r}");
        if r["valid"] == true {
            assert!(r["reason"].is_null(), "{r}");
        }
    }

    // Text: one line per certificate and a summary; the error says what failed.
    let o = s.run(&["audit", "chain", "--all", "--expect-root", s.expect_root().as_str()]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().filter(|l| l.starts_with("valid ")).count(), 4, "{out}");
    let invalid: Vec<&str> = out.lines().filter(|l| l.starts_with("INVALID ")).collect();
    assert_eq!(invalid.len(), 1, "{out}");
    assert!(invalid[0].contains(&victim) && invalid[0].contains("revoked (keyCompromise)"), "{out}");
    assert!(out.contains("5 card certificate(s)") && out.contains("4 valid, 1 invalid"), "{out}");
    assert!(out.contains("4 valid, 1 invalid (1 revoked)"), "{out}");

    // The signed CRL given with --crl is used too: it agrees, and it must be usable.
    s.ok(&["cert", "crl", "--out", "crl.pem"]);
    let (code, v, _) =
        json_run(&s, &["audit", "chain", "--all", "--expect-root", s.expect_root().as_str(), "--crl", "crl.pem"]);
    assert_eq!((code, v["invalid"].as_u64()), (0, Some(1)), "{v}");
    std::fs::write(s.path("junk.pem"), "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n").unwrap();
    let (code, v, _) =
        json_run(&s, &["audit", "chain", "--all", "--expect-root", s.expect_root().as_str(), "--crl", "junk.pem"]);
    assert_eq!((code, v["valid"].as_u64()), (1, Some(0)), "an unusable CRL of the issuer fails every chain: {v}");
}

#[test]
fn all_finds_a_certificate_edited_in_the_database() {
    let s = issuer_with_cards(2);
    // Change the last octet of the first certificate's signature (the sqlite3 CLI here predates
    // unhex(), so the edit is made on the hex and written back as a blob literal).
    let id = s.sqlite("SELECT min(id) FROM certificates;").trim().to_string();
    let mut hex = s.sqlite(&format!("SELECT hex(der) FROM certificates WHERE id = {id};")).trim().to_string();
    let last = if hex.ends_with("01") { "02" } else { "01" };
    hex.replace_range(hex.len() - 2.., last);
    s.sqlite(&format!("UPDATE certificates SET der = X'{hex}' WHERE id = {id};"));
    // Since row binding, the register itself is checked against the signed log first: the edited row is
    // named (exit 1) before any chain is built. (Before: the chain check found the bad signature.)
    let o = s.run(&["audit", "chain", "--all", "--expect-root", s.expect_root().as_str()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("certificates row {id} differs")), "{}", stderr(&o));
}

#[test]
fn files_mode_with_the_exported_root_and_crl() {
    let s = issuer_with_cards(3);
    s.ok(&["cert", "ca", "--out", "root.pem"]);
    let files = export_certificates(&s);
    let mut args = vec!["audit", "chain", "--anchor", "root.pem"];
    args.extend(files.iter().map(String::as_str));
    let v = s.json(&args);
    assert_eq!((v["valid"].as_u64(), v["invalid"].as_u64()), (Some(3), Some(0)), "{v}");
    let labels: Vec<&str> =
        v["results"].as_array().unwrap().iter().map(|r| r["certificate"].as_str().unwrap()).collect();
    assert_eq!(labels, files.iter().map(String::as_str).collect::<Vec<_>>());

    // One file holding every certificate: results labelled #1, #2, #3.
    let bundle: String = files.iter().map(|f| std::fs::read_to_string(s.path(f)).unwrap()).collect();
    std::fs::write(s.path("bundle.pem"), bundle).unwrap();
    let v = s.json(&["audit", "chain", "--anchor", "root.pem", "bundle.pem"]);
    assert_eq!(v["results"][2]["certificate"], "bundle.pem#3");
    assert_eq!(v["valid"], 3);

    // Revoke the second card; the database's signed CRL says so to an outside auditor.
    let card = certificates(&s)[1]["card"].as_str().unwrap().to_string();
    s.ok(&["cert", "revoke", &card]);
    s.ok(&["cert", "crl", "--out", "crl.pem"]);
    let mut with_crl = args.clone();
    with_crl.extend(["--crl", "crl.pem"]);
    let (code, v, _) = json_run(&s, &with_crl);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["results"][1]["valid"], false, "{v}");
    assert!(v["results"][1]["reason"].as_str().unwrap().contains("revoked"), "{v}");
    assert_eq!(
        (v["results"][0]["valid"].clone(), v["results"][2]["valid"].clone()),
        (Value::Bool(true), Value::Bool(true))
    );
}

#[test]
fn a_validation_time_in_the_far_future_finds_every_certificate_expired() {
    let s = issuer_with_cards(2);
    s.ok(&["cert", "ca", "--out", "root.pem"]);
    let files = export_certificates(&s);
    let (code, v, _) =
        json_run(&s, &["audit", "chain", "--at", "2100-01-01T00:00:00Z", "--anchor", "root.pem", &files[0], &files[1]]);
    assert_eq!(code, 1);
    assert_eq!(v["invalid"], 2, "{v}");
    assert_eq!(v["at"], "2100-01-01T00:00:00Z");
    for r in reasons(&v) {
        assert!(r.contains("has expired") && r.contains("2100-01-01T00:00:00Z"), "{r}");
    }
    let (code, v, _) = json_run(
        &s,
        &["audit", "chain", "--all", "--expect-root", s.expect_root().as_str(), "--at", "2100-01-01T00:00:00+02:00"],
    );
    assert_eq!((code, v["invalid"].as_u64()), (1, Some(2)), "{v}");
    assert!(reasons(&v).iter().all(|r| r.contains("expired")), "{v}");
    // And now is fine.
    s.ok(&["audit", "chain", "--all", "--expect-root", s.expect_root().as_str(), "--at", "2030-06-01T12:00:00Z"]);
}

#[test]
fn a_certificate_from_another_issuer_is_invalid() {
    let ours = issuer_with_cards(1);
    let theirs = issuer_named("Other Issuer", 1);
    // An impostor: another database whose issuer took our name, so its root's name matches.
    let impostor = issuer_with_cards(1);
    ours.ok(&["cert", "ca", "--out", "root.pem"]);
    theirs.ok(&["cert", "ca", "--out", "root.pem"]);
    let foreign = export_certificates(&theirs).remove(0);
    std::fs::copy(theirs.path(&foreign), ours.path("foreign.pem")).unwrap();
    let forged = export_certificates(&impostor).remove(0);
    std::fs::copy(impostor.path(&forged), ours.path("impostor.pem")).unwrap();
    let own = export_certificates(&ours).remove(0);
    let (code, v, _) =
        json_run(&ours, &["audit", "chain", "--anchor", "root.pem", &own, "foreign.pem", "impostor.pem"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!((v["valid"].as_u64(), v["invalid"].as_u64()), (Some(1), Some(2)), "{v}");
    assert_eq!(v["results"][0]["valid"], true, "{v}");
    let reason = |i: usize| v["results"][i]["reason"].as_str().unwrap().to_string();
    assert!(reason(1).contains("unknown issuer \"O=Other Issuer"), "{v}");
    assert!(reason(2).contains("bad signature"), "{v}");

    // --all against another issuer's published root: nothing in our database chains to it.
    std::fs::copy(theirs.path("root.pem"), ours.path("their-root.pem")).unwrap();
    let (code, v, _) = json_run(&ours, &["audit", "chain", "--all", "--anchor", "their-root.pem"]);
    assert_eq!((code, v["valid"].as_u64()), (1, Some(0)), "{v}");
    assert!(reasons(&v)[0].contains("unknown issuer"), "{v}");
}

#[test]
fn bad_input_exits_2_with_a_hint() {
    let s = issuer_with_cards(1);
    s.ok(&["cert", "ca", "--out", "root.pem"]);
    let files = export_certificates(&s);
    let before = s.dump();
    let er = s.expect_root();
    let cases: &[(&[&str], &str)] = &[
        (&["audit", "chain", "--all", "--expect-root", er.as_str(), "--at", "next tuesday"], "not an RFC 3339 time"),
        (
            &["audit", "chain", "--all", "--expect-root", er.as_str(), "--at", "2030-02-30T00:00:00Z"],
            "not an RFC 3339 time",
        ),
        (&["audit", "chain", "--anchor", "root.pem", "--at", "2030-01-01", &files[0]], "not an RFC 3339 time"),
        (&["audit", "chain", &files[0]], "no trust anchor"),
        (&["audit", "chain", "--anchor", "root.pem", "missing.pem"], "missing.pem"),
        (&["audit", "chain", "--anchor", "missing-root.pem", &files[0]], "missing-root.pem"),
        (&["audit", "chain", "--all", "--expect-root", er.as_str(), "--crl", "root.pem"], "holds no CRL"),
    ];
    for (args, message) in cases {
        let o = s.run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(message) && err.contains("hint: "), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}: no report on bad input");
    }
    // Usage errors (clap): neither --all nor a file, or both.
    for args in [&["audit", "chain"][..], &["audit", "chain", "--all", &files[0]][..]] {
        assert_eq!(s.run(args).status.code(), Some(2), "{args:?}");
    }
    // --json bad input: a stable code on stderr.
    let o = s.run(&["--json", "audit", "chain", "--all", "--expect-root", s.expect_root().as_str(), "--at", "soon"]);
    let err: Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(err["error"]["code"], "bad-input");
    assert_eq!(s.dump(), before, "auditing never writes");
}

#[test]
fn report_json_has_every_section() {
    let s = issuer_with_cards(4);
    s.ok(&["key", "new", "transfer", "--pending"]);
    let r = s.json(&["audit", "report", "--expect-root", s.expect_root().as_str()]);
    assert_eq!(r["schema"], "keyroll/1");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["issuer"]["name"], "Test Issuer");
    assert!(r["issuer"]["root_subject"].as_str().unwrap().contains("Test Issuer Root CA"), "{r}");
    assert_eq!(r["issuer"]["audit_key_fingerprint"].as_str().unwrap().len(), 64);
    let keys = r["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "{r}");
    for k in keys {
        for f in ["kind", "id", "state", "kcv"] {
            assert!(!k[f].is_null(), "key field {f}: {k}");
        }
    }
    assert!(keys.iter().any(|k| k["kind"] == "transfer" && k["id"] == 2 && k["state"] == "pending"), "{r}");
    let b = &r["batches"][0];
    assert_eq!(
        (b["name"].as_str(), b["transfer_key_id_limit"].as_u64(), b["personalised"].as_u64()),
        (Some("b"), Some(3), Some(4)),
        "{r}"
    );
    assert_eq!(r["cards"]["personalised"], 4);
    assert_eq!((r["certificates"]["issued"].as_u64(), r["certificates"]["revoked"].as_u64()), (Some(4), Some(0)));
    assert_eq!((r["chains"]["valid"].as_u64(), r["chains"]["invalid"].as_u64()), (Some(4), Some(0)));
    assert_eq!(r["audit_log"]["intact"], true);
    assert_eq!(r["issued_value"], 1000);

    let text = s.ok(&["audit", "report", "--expect-root", s.expect_root().as_str()]);
    for needle in [
        "issuer        Test Issuer",
        "batches",
        "4 issued, 0 revoked",
        "4 valid, 0 invalid",
        "audit log     intact",
        "issued value  1000",
        "verdict       PASS",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }

    // A revoked card: listed with its reason; an issuer's recorded revocation does not fail the report.
    let card = certificates(&s)[0]["card"].as_str().unwrap().to_string();
    s.ok(&["cert", "revoke", &card, "--reason", "superseded"]);
    let (code, r, o) = json_run(&s, &["audit", "report", "--expect-root", s.expect_root().as_str()]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        (r["ok"].clone(), r["chains"]["invalid"].clone(), r["chains"]["revoked"].clone()),
        (Value::Bool(true), 1.into(), 1.into())
    );
    assert_eq!(r["certificates"]["revoked"], 1);
    let bad = &r["chains"]["invalid_certificates"][0];
    assert_eq!(bad["card"], card.as_str());
    assert!(bad["reason"].as_str().unwrap().starts_with("revoked (superseded)"), "{r}");
    let _ = o;
    // A certificate that fails for any other reason fails the report.
    let id = s.sqlite("SELECT max(id) FROM certificates;").trim().to_string();
    let mut hex = s.sqlite(&format!("SELECT hex(der) FROM certificates WHERE id = {id};")).trim().to_string();
    let last = if hex.ends_with("01") { "02" } else { "01" };
    hex.replace_range(hex.len() - 2.., last);
    s.sqlite(&format!("UPDATE certificates SET der = X'{hex}' WHERE id = {id};"));
    let (code, r, o) = json_run(&s, &["audit", "report", "--expect-root", s.expect_root().as_str()]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["ok"], false);
    assert!(stderr(&o).contains("certificate chain(s) invalid"), "{}", stderr(&o));
}

#[test]
fn report_fails_when_the_audit_log_was_tampered_with() {
    let s = issuer_with_cards(2);
    s.ok(&["audit", "report", "--expect-root", s.expect_root().as_str()]);
    s.sqlite("UPDATE audit_log SET detail = replace(detail, 'b', 'c') WHERE action LIKE 'batch%';");
    let (code, r, o) = json_run(&s, &["audit", "report", "--expect-root", s.expect_root().as_str()]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["ok"], false);
    assert_eq!(r["audit_log"]["intact"], false, "{r}");
    assert!(r["audit_log"]["reason"].as_str().unwrap().contains("edited"), "{r}");
    assert_eq!(r["chains"]["invalid"], 0, "only the log is wrong: {r}");
    assert!(stderr(&o).contains("audit log not intact"), "{}", stderr(&o));
    let o = s.run(&["audit", "report", "--expect-root", s.expect_root().as_str()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("audit log     NOT intact"));
    assert!(String::from_utf8_lossy(&o.stdout).contains("verdict       FAIL"));
}

#[test]
fn audit_log_still_works_alone() {
    let s = issuer_with_cards(1);
    let v = s.json(&["audit", "log"]);
    assert_eq!(v["intact"], true);
    assert!(s.ok(&["audit", "log"]).starts_with("audit log intact: "));
}
