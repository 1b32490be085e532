//! The issuer back office through the real binary and a real SQLite file (issue: back office).

use crate::support::cli::{self, file_reader};
use cli::*;

use std::process::Command;

fn recipient(s: &Scratch) -> String {
    let id = std::fs::read_to_string(s.path("keyroll.db.identity")).unwrap();
    id.lines().find(|l| l.starts_with("# public key: ")).unwrap().trim_start_matches("# public key: ").to_string()
}

both_engines!(init_writes_a_private_identity_and_refuses_to_overwrite);
fn init_writes_a_private_identity_and_refuses_to_overwrite(s: Scratch) {
    s.init();
    let meta = std::fs::metadata(s.path("keyroll.db.identity")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let before = s.dump();
    let o = s.run(&["init", "--issuer", "Again"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(s.dump(), before);
    let keys = s.json(&["key", "list"]);
    let kinds: Vec<_> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kind"].as_str().unwrap().to_string(), k["id"].as_u64().unwrap()))
        .collect();
    assert!(kinds.contains(&("transfer".into(), 1)) && kinds.contains(&("update".into(), 1)));
    assert_eq!(keys["schema"], "keyroll/1");
}

both_engines!(key_versions_increase_and_move_through_states);
fn key_versions_increase_and_move_through_states(s: Scratch) {
    s.init();
    assert_eq!(s.json(&["key", "new", "transfer", "--pending"])["id"], 2);
    assert_eq!(s.json(&["key", "new", "transfer"])["id"], 3);
    s.ok(&["key", "activate", "transfer", "2"]);
    let o = s.run(&["key", "activate", "transfer", "2"]);
    assert_eq!(o.status.code(), Some(2), "activating an active key");
    s.ok(&["key", "retire", "transfer", "1"]);
    assert_eq!(s.json(&["key", "new", "transfer"])["id"], 4, "ids are never reused");
    let keys = s.json(&["key", "list"]);
    let state = |id: u64| {
        keys["keys"].as_array().unwrap().iter().find(|k| k["kind"] == "transfer" && k["id"] == id).unwrap()["state"]
            .clone()
    };
    assert_eq!(state(1), "retired");
    assert_eq!(state(2), "active");
    for k in keys["keys"].as_array().unwrap() {
        assert_eq!(k["kcv"].as_str().unwrap().len(), 6);
        assert!(k.get("key").is_none());
    }
}

#[test]
fn export_is_readable_by_the_age_cli_and_keys_are_never_stored_in_plaintext() {
    let s = Scratch::new();
    s.init();
    s.ok(&["key", "new", "transfer", "--pending"]);
    s.ok(&["key", "new", "update"]);
    s.ok(&["batch", "new", "m", "--profile", "multi-key", "--transfer-key-limit", "4", "--initial-balance", "50"]);
    s.ok(&["batch", "new", "s", "--profile", "symmetric", "--transfer-key-limit", "4"]);
    s.ok(&["perso", "--batch", "m", "--out-dir", "cards", "--count", "3"]);
    s.ok(&["perso", "--batch", "s", "--out-dir", "cards", "--count", "2"]);
    let r = recipient(&s);
    s.ok(&[
        "key",
        "export",
        "--to",
        &r,
        "--out",
        "keys.age",
        "--transfer",
        "1",
        "--transfer",
        "2",
        "--update",
        "1",
        "--update",
        "2",
    ]);
    let o = Command::new("age")
        .args(["-d", "-i"])
        .arg(s.path("keyroll.db.identity"))
        .arg(s.path("keys.age"))
        .output()
        .expect("the age CLI (Debian package age) is installed by scripts/test");
    assert!(o.status.success(), "age -d: {}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut secrets = Vec::new();
    for k in doc["transfer_keys"].as_array().unwrap().iter().chain(doc["update_keys"].as_array().unwrap()) {
        secrets.push(hex::decode(k["key"].as_str().unwrap()).unwrap());
    }
    assert_eq!(secrets.len(), 4);
    // Every file the back office wrote except the cards' own secure memory.
    let mut files = vec![s.path("keyroll.db")];
    for ext in ["-wal", "-shm"] {
        let p = s.path(&format!("keyroll.db{ext}"));
        if p.exists() {
            files.push(p);
        }
    }
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        for k in &secrets {
            assert!(!bytes.windows(16).any(|w| w == k.as_slice()), "raw key in {}", f.display());
            assert!(!text.contains(&hex::encode(k)), "hex key in {}", f.display());
        }
    }
    // The cards did receive the keys (the search above would find them if they leaked).
    let card = std::fs::read(&s.card_files("cards")[0]).unwrap();
    assert!(secrets.iter().any(|k| card.windows(16).any(|w| w == k.as_slice())));
    // The multi-key card got the pending key too, with the active one selected.
    let m = s.json(&["card", "show", s.card_files("cards")[0].to_str().unwrap()]);
    assert_eq!(m["selected_transfer_key_id"], 1);
    assert_eq!(m["stored_transfer_key_ids"], serde_json::json!([1, 2]));
}

both_engines!(wrong_identity_is_refused_and_changes_nothing);
fn wrong_identity_is_refused_and_changes_nothing(s: Scratch) {
    s.init();
    let db = s.db();
    let other = Scratch::new();
    other.init();
    std::fs::copy(other.path("keyroll.db.identity"), s.path("other.identity")).unwrap();
    let before = s.dump();
    let o = s.cmd().args(["--db", &db, "--identity", "other.identity", "key", "new", "transfer"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot decrypt"), "{}", stderr(&o));
    assert!(stderr(&o).contains("hint:"));
    let o = s.cmd().args(["--db", &db, "key", "new", "transfer"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--identity"), "{}", stderr(&o));
    assert_eq!(s.dump(), before);
}

#[test]
fn bad_input_gets_exit_2_a_clear_message_and_changes_nothing() {
    let s = Scratch::new();
    s.init();
    s.ok(&["key", "new", "transfer"]);
    let before = s.dump();
    for (args, needle) in [
        (vec!["perso", "--batch", "nope", "--out-dir", "c", "--count", "1"], "no batch named"),
        (
            vec!["batch", "new", "x", "--profile", "symmetric", "--transfer-key-limit", "1"],
            "below the newest transfer key id 2",
        ),
        (
            vec![
                "batch",
                "new",
                "x",
                "--profile",
                "symmetric",
                "--transfer-key-limit",
                "3",
                "--initial-balance",
                "9",
                "--max-balance",
                "5",
            ],
            "maximum",
        ),
        (vec!["key", "activate", "transfer", "9"], "no transfer key 9"),
    ] {
        let o = s.run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert_eq!(s.dump(), before, "{args:?} changed the database");
    }
    assert!(!s.path("c").exists() || s.card_files("c").is_empty());
    // Missing database.
    let o = s.cmd().args(["--db", "missing.db", "key", "list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no database at") && stderr(&o).contains("keyroll init"), "{}", stderr(&o));
    assert!(!s.path("missing.db").exists());
    // Corrupt database.
    std::fs::write(s.path("corrupt.db"), vec![0x5A; 8192]).unwrap();
    let o = s.cmd().args(["--db", "corrupt.db", "key", "list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a usable keyroll database"), "{}", stderr(&o));
    assert_eq!(std::fs::read(s.path("corrupt.db")).unwrap(), vec![0x5A; 8192]);
}

both_engines!(two_perso_processes_at_once_get_distinct_serials);
fn two_perso_processes_at_once_get_distinct_serials(s: Scratch) {
    s.init();
    s.ok(&["batch", "new", "b", "--profile", "symmetric", "--transfer-key-limit", "3"]);
    let spawn = |dir: &str| {
        s.cmd()
            .args([
                "--db",
                &s.db(),
                "--identity",
                "keyroll.db.identity",
                "perso",
                "--batch",
                "b",
                "--out-dir",
                dir,
                "--count",
                "25",
            ])
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn("a"), spawn("b"));
    let (ra, rb) = (a.wait().unwrap(), b.wait().unwrap());
    assert!(ra.success() && rb.success());
    let mut serials: Vec<String> = s
        .card_files("a")
        .into_iter()
        .chain(s.card_files("b"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(serials.len(), 50);
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 50, "duplicate serials");
    assert_eq!(s.sql("SELECT count(*) FROM cards WHERE state = 'personalised'").trim(), "50");
    s.ok(&["audit", "log"]);
}

both_engines!(a_killed_batch_is_finished_by_the_same_command);
fn a_killed_batch_is_finished_by_the_same_command(s: Scratch) {
    s.init();
    let db = s.db();
    s.ok(&["batch", "new", "b", "--profile", "multi-key", "--transfer-key-limit", "3", "--initial-balance", "7"]);
    let args = [
        "--db",
        &db,
        "--identity",
        "keyroll.db.identity",
        "perso",
        "--batch",
        "b",
        "--out-dir",
        "cards",
        "--count",
        "300",
    ];
    let mut child = s.cmd().args(args).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Kill once some cards are recorded, mid-batch.
    let started = std::time::Instant::now();
    loop {
        let n: u32 = s.sql("SELECT count(*) FROM cards WHERE state = 'personalised'").trim().parse().unwrap_or(0);
        if n >= 20 || started.elapsed().as_secs() > 60 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done: u32 = s.sql("SELECT count(*) FROM cards WHERE state = 'personalised'").trim().parse().unwrap();
    assert!(done < 300, "the batch finished before the kill; make it larger");
    let again = s.json(&args[4..].to_vec());
    assert_eq!(again["resumed"], true);
    assert_eq!(s.sql("SELECT count(*) FROM cards").trim(), "300", "no extra reservations");
    assert_eq!(s.sql("SELECT count(*) FROM cards WHERE state = 'personalised'").trim(), "300");
    assert_eq!(s.sql("SELECT count(DISTINCT serial) FROM cards").trim(), "300");
    let files = s.card_files("cards");
    assert_eq!(files.len(), 300);
    for f in files.iter().step_by(37) {
        let v = s.json(&["card", "show", f.to_str().unwrap()]);
        assert_eq!(v["life_cycle"], "issued");
        assert_eq!(v["balance"], 7);
    }
    s.ok(&["audit", "log"]);
}

both_engines!(end_to_end_older_card_rolls_to_the_newer_key);
fn end_to_end_older_card_rolls_to_the_newer_key(s: Scratch) {
    let (files, old, new) = s.old_and_new_symmetric_cards();
    assert_eq!(s.json(&["card", "show", files[0].to_str().unwrap()])["transfer_key_id"], 1);
    let r = s.json(&["settle", "--payer", &old, "--payee", &new, "--amount", "40"]);
    assert_eq!(r["key_roll"], "symmetric");
    assert_eq!(r["updated_card"], "payer");
    assert_eq!(r["amount"], 40);
    let o = s.json(&["card", "show", files[0].to_str().unwrap()]);
    assert_eq!(o["transfer_key_id"], 2);
    assert_eq!(o["balance"], 60);
    assert_eq!(s.json(&["card", "show", files[1].to_str().unwrap()])["balance"], 140);
    // Rolling to 4 would strand both cards (limit 3).
    let o = s.run(&["rollout", "plan", "--transfer-key", "4"]);
    assert_eq!(o.status.code(), Some(1));
    s.ok(&["rollout", "plan", "--transfer-key", "3"]);
}

fn tampered(s: &Scratch, sql: &str) -> (i32, serde_json::Value) {
    let dir = s.copy();
    dir.sqlite(sql);
    let o = dir.cmd().args(["--db", "keyroll.db", "--json", "audit", "log"]).output().unwrap();
    (o.status.code().unwrap(), serde_json::from_slice(&o.stdout).unwrap())
}

#[test]
fn audit_log_detects_edit_delete_reorder_and_truncation() {
    let s = Scratch::new();
    s.init();
    for _ in 0..3 {
        s.ok(&["key", "new", "transfer"]);
    }
    s.ok(&["batch", "new", "b", "--profile", "symmetric", "--transfer-key-limit", "9"]);
    // Fold the WAL into the main file so copies carry everything.
    s.sqlite("PRAGMA wal_checkpoint(TRUNCATE);");
    let clean = s.json(&["audit", "log"]);
    assert_eq!(clean["intact"], true);
    let rows = clean["rows"].as_u64().unwrap();
    // init, policy 1, the first two keys' authorisations; each active key new and its authorisation; batch.
    assert_eq!(rows, 11);

    let (code, v) =
        tampered(&s, "UPDATE audit_log SET detail = replace(detail, '\"id\":1', '\"id\":10') WHERE id = 3;");
    assert_eq!((code, v["first_bad_row"].as_i64()), (1, Some(3)), "edit: {v}");
    let (code, v) = tampered(&s, "DELETE FROM audit_log WHERE id = 2;");
    assert_eq!((code, v["first_bad_row"].as_i64()), (1, Some(2)), "delete: {v}");
    let (code, v) = tampered(
        &s,
        "UPDATE audit_log SET id = -id WHERE id IN (2, 3); UPDATE audit_log SET id = 3 WHERE id = -2; UPDATE audit_log SET id = 2 WHERE id = -3;",
    );
    assert_eq!((code, v["first_bad_row"].as_i64()), (1, Some(2)), "reorder: {v}");
    let (code, v) = tampered(&s, "DELETE FROM audit_log WHERE id = 11;");
    assert_eq!(code, 1, "truncation: {v}");
    assert_eq!(v["first_bad_row"].as_i64(), Some(11));
    assert!(v["reason"].as_str().unwrap().contains("truncated"));
    let (code, v) = tampered(
        &s,
        "UPDATE audit_head SET last_id = 10, last_hash = (SELECT hash FROM audit_log WHERE id = 10); DELETE FROM audit_log WHERE id = 11;",
    );
    assert_eq!(code, 1, "truncation with a forged head: {v}");
    let (code, v) = tampered(&s, "UPDATE audit_log SET detail = CAST(detail AS BLOB) WHERE id = 2;");
    assert_eq!((code, v["first_bad_row"].as_i64()), (1, Some(2)), "type change: {v}");
    let (code, v) = tampered(&s, "DELETE FROM issuer;");
    assert_eq!(code, 1, "issuer row deleted: {v}");
    // Auditing writes nothing.
    let before = std::fs::read(s.path("keyroll.db")).unwrap();
    s.ok(&["audit", "log"]);
    assert_eq!(std::fs::read(s.path("keyroll.db")).unwrap(), before, "audit log changed the database file");
    // Pinning the key.
    let o = s.run(&["audit", "log", "--expect-key", "00"]);
    assert_eq!(o.status.code(), Some(1));
    s.ok(&["audit", "log", "--expect-key", clean["audit_key_fingerprint"].as_str().unwrap()]);
}

/// Version 2 breaks with version 1 (DESIGN.md §10): a database of schema 1 to 5 (what version 1 made; this
/// test used to upgrade one in place, then to migrate an edited one and refuse it) is refused by name
/// before any migration, and left as it was. Readers refuse it too.
#[test]
fn a_version_1_database_is_refused_with_a_clear_message() {
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "b", "--profile", "symmetric", "--transfer-key-limit", "2"]);
    // Make it what the last version 1 left: schema 5, no manufacturer tables.
    s.sqlite(
        "DROP TRIGGER chips_keep_their_serial; DROP TRIGGER chips_are_never_deleted; DROP TABLE chips; \
         DROP TABLE manufacturers; PRAGMA user_version = 5;",
    );
    let before = s.dump();
    for args in [&["cert", "ca", "--out", "root.pem"][..], &["batch", "list"], &["audit", "log"]] {
        let o = s.run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert!(err.contains("version 1 database") && err.contains("hint: create a version 2 issuer"), "{err}");
    }
    assert_eq!(s.dump(), before, "nothing changed");
    assert!(!s.path("root.pem").exists());
}

both_engines!(hybrid_cards_converge_over_the_public_key_path_from_the_command_line);
fn hybrid_cards_converge_over_the_public_key_path_from_the_command_line(s: Scratch) {
    s.init();
    s.ok(&["batch", "new", "h1", "--profile", "hybrid", "--transfer-key-limit", "4", "--initial-balance", "100"]);
    s.ok(&["perso", "--batch", "h1", "--out-dir", "cards", "--count", "2"]);
    s.ok(&["key", "new", "transfer"]);
    s.ok(&["key", "new", "update"]);
    s.ok(&["batch", "new", "h2", "--profile", "hybrid", "--transfer-key-limit", "4", "--initial-balance", "100"]);
    s.ok(&["perso", "--batch", "h2", "--out-dir", "cards", "--count", "1"]);
    let files = s.card_files("cards");
    let f = |i: usize| file_reader(&files[i]);
    let r = s.json(&["settle", "--payer", &f(0), "--payee", &f(2), "--amount", "30"]);
    assert_eq!(r["key_roll"], "public-key");
    assert_eq!(r["updated_card"], "payer");
    assert_eq!(s.json(&["card", "show", files[0].to_str().unwrap()])["transfer_key_id"], 2);
    // Same update key (both from h1): symmetric.
    let r = s.json(&["settle", "--payer", &f(0), "--payee", &f(1), "--amount", "0"]);
    assert_eq!(r["key_roll"], "symmetric");

    // Every card certificate verifies with openssl against the exported root.
    s.ok(&["cert", "ca", "--out", "root.pem"]);
    let certs = s.json(&["cert", "list"]);
    let list = certs["certificates"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    for (i, c) in list.iter().enumerate() {
        let path = s.path(&format!("card{i}.pem"));
        std::fs::write(&path, c["pem"].as_str().unwrap()).unwrap();
        let o =
            Command::new("openssl").args(["verify", "-CAfile"]).arg(s.path("root.pem")).arg(&path).output().unwrap();
        assert!(o.status.success(), "openssl verify: {}", String::from_utf8_lossy(&o.stdout));
    }
    // Revoke the newest card; the CRL verifies with openssl and the terminal refuses the card.
    let card2 = list[2]["card"].as_str().unwrap().to_string();
    s.ok(&["cert", "revoke", &card2, "--reason", "key-compromise"]);
    s.ok(&["cert", "crl", "--out", "crl.pem"]);
    let o = Command::new("openssl")
        .args(["crl", "-noout", "-in"])
        .arg(s.path("crl.pem"))
        .arg("-CAfile")
        .arg(s.path("root.pem"))
        .arg("-verify")
        .output()
        .unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stderr).contains("verify OK"), "{}", stderr(&o));
    let o = Command::new("openssl")
        .args(["verify", "-crl_check", "-CAfile"])
        .arg(s.path("root.pem"))
        .arg("-CRLfile")
        .arg(s.path("crl.pem"))
        .arg(s.path("card2.pem"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "openssl accepted a revoked card");
    // `cert revoke` also blocked the card in a new policy (DESIGN.md §10 point 4): a terminal carrying
    // the policy file gives it to the cards, and the cards refuse the revoked one.
    s.ok(&["policy", "publish", "--out", "policy.bin"]);
    let o = s.run(&["settle", "--payer", &f(0), "--payee", &f(2), "--amount", "1", "--policy", "policy.bin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("blocks"), "{}", stderr(&o));
    // Card 0 now holds the policy: a terminal with no file cannot use the revoked card with it either.
    let o = s.run(&["settle", "--payer", &f(0), "--payee", &f(2), "--amount", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    s.ok(&["settle", "--payer", &f(0), "--payee", &f(1), "--amount", "1", "--policy", "policy.bin"]);
}

both_engines!(rollout_verify_settles_every_generation_pair_and_flags_the_ones_that_cannot);
fn rollout_verify_settles_every_generation_pair_and_flags_the_ones_that_cannot(s: Scratch) {
    s.init();
    // Default initial balance 0: the pairs are still checked (key agreement without value).
    s.ok(&["batch", "new", "a", "--profile", "symmetric", "--transfer-key-limit", "3"]);
    s.ok(&["key", "new", "transfer"]);
    s.ok(&["batch", "new", "b", "--profile", "multi-key", "--transfer-key-limit", "3", "--initial-balance", "5"]);
    let v = s.json(&["rollout", "verify"]);
    assert_eq!(v["failures"], 0, "{v}");
    let pairs = v["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 4);
    assert!(pairs.iter().any(|p| p["key_roll"] == "symmetric"), "{v}");
    // A public-key generation on a newer key cannot reach symmetric cards: reported, exit 1.
    s.ok(&["key", "new", "transfer"]);
    s.ok(&["batch", "new", "c", "--profile", "public-key", "--transfer-key-limit", "3", "--initial-balance", "5"]);
    let o = s.run(&["--json", "rollout", "verify"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["failures"].as_u64().unwrap() >= 2, "{v}");
    assert!(
        v["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["ok"] == false && p["outcome"].as_str().unwrap().contains("no key-roll path"))
    );
}

#[test]
fn a_card_file_in_use_by_another_process_is_refused() {
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "b", "--profile", "symmetric", "--transfer-key-limit", "3", "--initial-balance", "10"]);
    s.ok(&["perso", "--batch", "b", "--out-dir", "cards", "--count", "2"]);
    let files = s.card_files("cards");
    let (a, b) = (file_reader(&files[0]), file_reader(&files[1]));
    let before = std::fs::read(&files[0]).unwrap();
    // Another process (here: this test) holds the first card.
    let held = keyroll::card::storage::FileStorage::exclusive(&files[0]).unwrap();
    let o = s.run(&["settle", "--payer", &a, "--payee", &b, "--amount", "5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("in use"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&files[0]).unwrap(), before);
    drop(held);
    s.ok(&["settle", "--payer", &a, "--payee", &b, "--amount", "5"]);
}

both_engines!(custodians_refuse_to_change_a_tampered_database);
fn custodians_refuse_to_change_a_tampered_database(s: Scratch) {
    s.init();
    let db = s.db();
    s.ok(&["key", "new", "transfer"]);
    // An extra recipient slipped into the custodian table would receive every future key.
    let other = Scratch::new();
    other.init();
    let intruder = recipient(&other);
    let dir = s.copy();
    dir.sql(&format!("INSERT INTO custodians (recipient) VALUES ('{intruder}');"));
    let before = dir.dump();
    let o = dir.run(&["key", "new", "transfer"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // (The custodian table is in the state digest the signed log carries: unlock says so first.)
    assert!(stderr(&o).contains("differ from the state the signed log records"), "{}", stderr(&o));
    assert_eq!(dir.dump(), before);
    // An edited audit log.
    let dir = s.copy();
    dir.sql("UPDATE audit_log SET at = '2000-01-01T00:00:00Z' WHERE id = 2;");
    let o = dir.run(&["batch", "new", "x", "--profile", "symmetric", "--transfer-key-limit", "5"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("log entry 2 was edited"), "{}", stderr(&o));
    // An identity file pinned to another audit key.
    let pinned = std::fs::read_to_string(s.path("keyroll.db.identity")).unwrap();
    assert!(pinned.contains("# keyroll audit key: "), "init pins the audit key");
    let fp = pinned.lines().find_map(|l| l.strip_prefix("# keyroll audit key: ")).unwrap();
    std::fs::write(s.path("other-pin.identity"), pinned.replace(fp, &"0".repeat(64))).unwrap();
    let o = s.cmd().args(["--db", &db, "--identity", "other-pin.identity", "key", "new", "update"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not the one pinned"), "{}", stderr(&o));
    s.ok(&["key", "new", "update"]);
}

both_engines!(rollout_plan_counts_multi_key_cards_that_do_not_store_the_key);
fn rollout_plan_counts_multi_key_cards_that_do_not_store_the_key(s: Scratch) {
    s.init();
    s.ok(&["batch", "new", "m", "--profile", "multi-key", "--transfer-key-limit", "5"]);
    s.ok(&["perso", "--batch", "m", "--out-dir", "cards", "--count", "3"]);
    // Key 2 does not exist yet: these cards cannot select it, although their limit admits it.
    let o = s.run(&["--json", "rollout", "plan", "--transfer-key", "2"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stranded"], 3, "{v}");
    // Cards personalised after key 2 exists store it (claims 8–9) and are not stranded by it.
    std::thread::sleep(std::time::Duration::from_millis(1100)); // key and perso times are in whole seconds
    s.ok(&["key", "new", "transfer", "--pending"]);
    s.ok(&["perso", "--batch", "m", "--out-dir", "cards", "--count", "2"]);
    let o = s.run(&["--json", "rollout", "plan", "--transfer-key", "2"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stranded"], 3, "{v}");
    assert_eq!(v["batches"][0]["personalised"], 5);
}

/// `settle` says which card it changed when it then fails (issue 14 item 11).
#[test]
fn a_settle_that_rolled_a_key_and_then_failed_says_so() {
    let s = Scratch::new();
    let (files, old, new) = s.old_and_new_symmetric_cards();
    let o = s.run(&["settle", "--payer", &old, "--payee", &new, "--amount", "1000"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("below the amount") && err.contains("rolled transfer key 2 onto the payer card"), "{err}");
    assert!(err.contains("hint: pass a smaller --amount"), "{err}");
    assert_eq!(s.json(&["card", "show", files[0].to_str().unwrap()])["transfer_key_id"], 2);
}
