//! PKCS #11 custody (issue 16, DESIGN.md §11) against a real token: SoftHSM2, each test with its own
//! token in a private `SOFTHSM2_CONF` directory (never the machine's default token directory).
//! Outside oracles: `pkcs11-tool` (OpenSC) lists the token's objects and their attributes, `openssl`
//! verifies what the token signed, `age` opens a key export, `sqlite3` shows what the database holds.

use crate::support::cli::{Scratch, stderr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "246810";
const SO_PIN: &str = "13579135";

/// A SoftHSM2 token of its own: config and token directory in a temp dir.
struct Hsm {
    dir: tempfile::TempDir,
    label: String,
}

impl Hsm {
    fn new(label: &str) -> Hsm {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let h = Hsm { dir, label: label.to_string() };
        let o = h
            .tool("softhsm2-util")
            .args(["--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SO_PIN])
            .output()
            .expect("softhsm2-util (Debian package softhsm2; scripts/test installs it)");
        assert!(o.status.success(), "softhsm2-util --init-token: {}", stderr(&o));
        h
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    fn tool(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SOFTHSM2_CONF", self.conf());
        c
    }

    /// keyroll in `s` with this token's config and PIN (no module override).
    fn cmd(&self, s: &Scratch) -> Command {
        let mut c = s.cmd();
        c.env("SOFTHSM2_CONF", self.conf()).env("KEYROLL_PKCS11_PIN", PIN).env_remove("KEYROLL_PKCS11_MODULE").args([
            "--db",
            "keyroll.db",
            "--identity",
            "keyroll.db.identity",
        ]);
        c
    }

    fn run(&self, s: &Scratch, args: &[&str]) -> Output {
        self.cmd(s).args(args).output().unwrap()
    }

    fn ok(&self, s: &Scratch, args: &[&str]) -> String {
        let o = self.run(s, args);
        assert!(o.status.success(), "keyroll {args:?} failed: {}\n{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, s: &Scratch, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(s, &a)).unwrap()
    }

    /// `init` in this token; returns the JSON outcome.
    fn init(&self, s: &Scratch) -> serde_json::Value {
        self.json(s, &["init", "--issuer", "HSM Transit", "--pkcs11-module", MODULE, "--pkcs11-token", &self.label])
    }

    /// What an outside client sees on the token: `pkcs11-tool --list-objects` (logged in or not).
    fn objects(&self, login: bool) -> String {
        let mut c = self.tool("pkcs11-tool");
        c.args(["--module", MODULE, "--token-label", &self.label, "--list-objects"]);
        if login {
            c.args(["--login", "--pin", PIN]);
        }
        let o = c.output().expect("pkcs11-tool (Debian package opensc)");
        assert!(o.status.success(), "pkcs11-tool --list-objects: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    }
}

/// The object blocks of `pkcs11-tool --list-objects` output whose header starts with `kind`.
fn blocks<'a>(listing: &'a str, kind: &str) -> Vec<&'a str> {
    let starts: Vec<usize> = listing
        .match_indices("Object;")
        .map(|(i, _)| listing[..i].rfind('\n').map_or(0, |n| n + 1))
        .chain(listing.match_indices("Data object").map(|(i, _)| i))
        .collect();
    let mut starts = starts;
    starts.sort();
    starts.dedup();
    (0..starts.len())
        .map(|k| &listing[starts[k]..starts.get(k + 1).copied().unwrap_or(listing.len())])
        .filter(|b| b.starts_with(kind))
        .collect()
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl").current_dir(dir).args(args).output().expect("openssl CLI")
}

fn write_pem(s: &Scratch, name: &str, pem: &str) {
    std::fs::write(s.path(name), pem).unwrap();
}

#[test]
fn issuer_flow_on_softhsm() {
    let hsm = Hsm::new("issuer-flow");
    let s = Scratch::new();
    let init = hsm.init(&s);
    assert_eq!(init["token"]["label"], "issuer-flow");
    let fp = init["audit_key_fingerprint"].as_str().unwrap().to_string();
    hsm.ok(&s, &["key", "new", "transfer"]);
    hsm.ok(&s, &["batch", "new", "pk", "--profile", "public-key", "--transfer-key-limit", "3"]);
    hsm.ok(&s, &["perso", "--batch", "pk", "--out-dir", "cards", "--count", "3"]);
    assert_eq!(s.card_files("cards").len(), 3);
    let certs = hsm.json(&s, &["cert", "list"]);
    let certs = certs["certificates"].as_array().or_else(|| certs.as_array()).expect("certificate list").clone();
    assert_eq!(certs.len(), 3, "{certs:?}");
    let revoked_card = certs[1]["card"].as_str().unwrap().to_string();
    hsm.ok(&s, &["cert", "revoke", &revoked_card, "--reason", "key-compromise"]);
    hsm.ok(&s, &["cert", "crl", "--out", "issuer.crl"]);
    hsm.ok(&s, &["cert", "ca", "--out", "root.pem"]);

    // openssl, which no one here wrote, checks what the token signed: the self-signed root, a card
    // certificate under it, the CRL, and that the CRL revokes the revoked card.
    let o = openssl(s.dir.path(), &["verify", "-CAfile", "root.pem", "root.pem"]);
    assert!(o.status.success(), "root: {}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    let o = openssl(s.dir.path(), &["crl", "-in", "issuer.crl", "-CAfile", "root.pem", "-noout"]);
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(o.status.success() && all.contains("verify OK"), "CRL: {all}");
    write_pem(&s, "good.pem", certs[0]["pem"].as_str().unwrap());
    write_pem(&s, "revoked.pem", certs[1]["pem"].as_str().unwrap());
    let o =
        openssl(s.dir.path(), &["verify", "-crl_check", "-CAfile", "root.pem", "-CRLfile", "issuer.crl", "good.pem"]);
    assert!(o.status.success(), "card certificate: {}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    let o = openssl(
        s.dir.path(),
        &["verify", "-crl_check", "-CAfile", "root.pem", "-CRLfile", "issuer.crl", "revoked.pem"],
    );
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!o.status.success() && all.contains("revoked"), "revoked card certificate: {all}");

    // The audit chain against the published root, and the audit log against the published fingerprint.
    let o = hsm.run(&s, &["--json", "audit", "chain", "--anchor", "root.pem", "good.pem"]);
    assert_eq!(code(&o), Some(0), "audit chain: {}", stderr(&o));
    let o = hsm.run(&s, &["audit", "chain", "--anchor", "root.pem", "--crl", "issuer.crl", "revoked.pem"]);
    assert_eq!(code(&o), Some(1), "a revoked certificate is not a valid chain: {}", stderr(&o));
    let log = hsm.ok(&s, &["audit", "log", "--expect-key", &fp]);
    assert!(log.contains("intact"), "{log}");

    // key export still writes an age file the age CLI opens, holding the key the database lists.
    let id = Command::new("age-keygen").arg("-o").arg(s.path("export.key")).output().expect("age-keygen");
    assert!(id.status.success());
    let r = Command::new("age-keygen").arg("-y").arg(s.path("export.key")).output().unwrap();
    let recipient = String::from_utf8(r.stdout).unwrap().trim().to_string();
    hsm.ok(&s, &["key", "export", "--to", &recipient, "--transfer", "2", "--out", "export.age"]);
    let o =
        Command::new("age").args(["-d", "-i"]).arg(s.path("export.key")).arg(s.path("export.age")).output().unwrap();
    assert!(o.status.success(), "age -d: {}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let keys = hsm.json(&s, &["key", "list"]);
    let listed = keys.to_string();
    let kcv = doc["transfer_keys"][0]["kcv"].as_str().unwrap();
    assert_eq!(doc["transfer_keys"][0]["key"].as_str().unwrap().len(), 32);
    assert!(listed.contains(kcv), "export KCV {kcv} not in {listed}");
}

#[test]
fn token_keys_are_private_sensitive_and_never_in_the_database() {
    let hsm = Hsm::new("key-attributes");
    let s = Scratch::new();
    let init = hsm.init(&s);
    // Logged in, an outside client sees three private EC keys and the AES wrap key, all sensitive and
    // never extractable; not logged in, it sees none of them (CKA_PRIVATE).
    let listing = hsm.objects(true);
    let private = blocks(&listing, "Private Key Object");
    assert_eq!(private.len(), 3, "{listing}");
    let secret = blocks(&listing, "Secret Key Object");
    assert_eq!(secret.len(), 1, "{listing}");
    for b in private.iter().chain(&secret) {
        let access = b.lines().find(|l| l.trim_start().starts_with("Access:")).unwrap_or_else(|| panic!("{b}"));
        assert!(access.contains("always sensitive"), "{b}");
        assert!(access.contains("never extractable"), "{b}");
        assert!(!access.replace("never extractable", "").contains("extractable"), "{b}");
    }
    for role in ["ca", "scheme", "audit"] {
        let id = init["token"]["key_ids"][role].as_str().unwrap();
        assert!(private.iter().any(|b| b.contains(id)), "no private {role} key {id} in {listing}");
    }
    let outside = hsm.objects(false);
    assert!(blocks(&outside, "Private Key Object").is_empty(), "private keys visible without login: {outside}");
    assert!(blocks(&outside, "Secret Key Object").is_empty(), "wrap key visible without login: {outside}");

    // The database: no CA, scheme or audit private key in any form. The only stored secrets are the
    // 16-byte ones (card log master, transfer and update keys), each RFC 5649-wrapped by the
    // token (prefix + 24 bytes): a 32-byte scalar or a PKCS #8 key would wrap to 40 bytes or more.
    let names = s.sqlite("SELECT name FROM secrets ORDER BY name");
    assert_eq!(names.trim(), "card-log-master", "{names}");
    let prefix = "keyroll-pkcs11-kwp/1\n".len();
    for (table, col) in [("secrets", "ciphertext"), ("keys", "ciphertext")] {
        let lens = s.sqlite(&format!("SELECT length({col}), hex(substr({col}, 1, {prefix})) FROM {table}"));
        for line in lens.lines() {
            let (len, head) = line.split_once('|').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), prefix + 24, "{table}: {line}");
            assert_eq!(head, hex::encode_upper(b"keyroll-pkcs11-kwp/1\n"), "{table}: {line}");
        }
    }
    let rows = s.sqlite("SELECT role, token_label, hex(key_id), public_key IS NOT NULL FROM token_keys ORDER BY role");
    assert_eq!(rows.lines().count(), 4, "{rows}");
    for role in ["audit", "ca", "scheme", "wrap"] {
        let id = init["token"]["key_ids"][role].as_str().unwrap().to_uppercase();
        let expect_public = if role == "wrap" { "0" } else { "1" };
        assert!(rows.contains(&format!("{role}|key-attributes|{id}|{expect_public}")), "{role} in {rows}");
    }
}

/// The failures that must change nothing: the database's dump and the token's object listing are
/// compared before and after.
#[test]
fn wrong_pin_missing_token_or_module_exit_2_and_change_nothing() {
    let hsm = Hsm::new("refusals");
    // init: nothing created anywhere.
    let empty = hsm.objects(true);
    let s = Scratch::new();
    let base = ["init", "--issuer", "HSM Transit"];
    let cases: Vec<(Vec<&str>, Option<&str>, &str)> = vec![
        (vec!["--pkcs11-module", MODULE, "--pkcs11-token", "refusals"], Some("000000"), "refused the PIN"),
        (vec!["--pkcs11-module", MODULE, "--pkcs11-token", "refusals"], None, "KEYROLL_PKCS11_PIN"),
        (vec!["--pkcs11-module", MODULE, "--pkcs11-token", "no-such-token"], Some(PIN), "no initialised token"),
        (
            vec!["--pkcs11-module", "/nonexistent/libpkcs11.so", "--pkcs11-token", "refusals"],
            Some(PIN),
            "PKCS #11 module",
        ),
    ];
    for (extra, pin, says) in &cases {
        let mut c = hsm.cmd(&s);
        match pin {
            Some(p) => c.env("KEYROLL_PKCS11_PIN", p),
            None => c.env_remove("KEYROLL_PKCS11_PIN"),
        };
        let o = c.args(base).args(extra).output().unwrap();
        assert_eq!(code(&o), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says) && stderr(&o).contains("hint:"), "{extra:?}: {}", stderr(&o));
        assert!(!s.path("keyroll.db").exists() && !s.path("keyroll.db.identity").exists(), "{extra:?} left files");
        assert_eq!(hsm.objects(true), empty, "{extra:?} changed the token");
    }

    // A custodian command on a database in the token: nothing written, token unchanged.
    hsm.init(&s);
    let (dump, objects) = (s.dump(), hsm.objects(true));
    let state = std::fs::read(s.path("keyroll.db.identity.state")).ok();
    for (env, value, says) in [
        ("KEYROLL_PKCS11_PIN", "000000", "refused the PIN"),
        ("KEYROLL_PKCS11_MODULE", "/nonexistent/libpkcs11.so", "PKCS #11 module"),
    ] {
        let o = hsm.cmd(&s).env(env, value).args(["key", "new", "transfer"]).output().unwrap();
        assert_eq!(code(&o), Some(2), "{env}={value}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
        assert_eq!(s.dump(), dump, "{env}={value} changed the database");
        assert_eq!(hsm.objects(true), objects, "{env}={value} changed the token");
        assert_eq!(
            std::fs::read(s.path("keyroll.db.identity.state")).ok(),
            state,
            "{env}={value} moved the checkpoint"
        );
    }
    // The token is gone (its directory emptied: the same label no longer exists).
    let moved = hsm.dir.path().join("tokens-away");
    std::fs::rename(hsm.dir.path().join("tokens"), &moved).unwrap();
    std::fs::create_dir(hsm.dir.path().join("tokens")).unwrap();
    let o = hsm.run(&s, &["key", "new", "transfer"]);
    assert_eq!(code(&o), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no initialised token labelled \"refusals\""), "{}", stderr(&o));
    assert_eq!(s.dump(), dump);
    std::fs::remove_dir(hsm.dir.path().join("tokens")).unwrap();
    std::fs::rename(&moved, hsm.dir.path().join("tokens")).unwrap();
    hsm.ok(&s, &["key", "new", "transfer"]);
}

#[test]
fn a_key_removed_from_the_token_is_a_clear_error() {
    let hsm = Hsm::new("removed-key");
    let s = Scratch::new();
    let init = hsm.init(&s);
    let dump = s.dump();
    let ca = init["token"]["key_ids"]["ca"].as_str().unwrap();
    let o = hsm
        .tool("pkcs11-tool")
        .args(["--module", MODULE, "--token-label", "removed-key", "--login", "--pin", PIN])
        .args(["--delete-object", "--type", "privkey", "--id", ca])
        .output()
        .unwrap();
    assert!(o.status.success(), "pkcs11-tool --delete-object: {}", stderr(&o));
    let o = hsm.run(&s, &["--json", "cert", "crl", "--out", "issuer.crl"]);
    assert_eq!(code(&o), Some(2), "{}", stderr(&o));
    let err: serde_json::Value = serde_json::from_str(stderr(&o).trim()).unwrap();
    assert_eq!(err["error"]["code"], "pkcs11-key", "{err}");
    assert!(err.to_string().contains(ca), "the error names the missing key id: {err}");
    assert!(!s.path("issuer.crl").exists());
    assert_eq!(s.dump(), dump, "nothing written");
}

#[test]
fn token_records_are_bound_to_the_signed_log() {
    let hsm = Hsm::new("bound-rows");
    let s = Scratch::new();
    let init = hsm.init(&s);
    let fp = init["audit_key_fingerprint"].as_str().unwrap().to_string();
    // Pointing the database at another module (code a custodian would load) or another key id is
    // refused before the token is even opened.
    for sql in [
        "UPDATE token_keys SET module = '/tmp/evil.so' WHERE role = 'audit'",
        "UPDATE token_keys SET key_id = X'00112233445566778899AABBCCDDEEFF' WHERE role = 'ca'",
        "DELETE FROM token_keys WHERE role = 'wrap'",
    ] {
        let t = s.copy();
        t.sqlite(sql);
        let o = hsm.run(&t, &["key", "new", "transfer"]);
        assert_eq!(code(&o), Some(1), "{sql}: {}", stderr(&o));
        assert!(stderr(&o).contains("outside keyroll") || stderr(&o).contains("audit log"), "{sql}: {}", stderr(&o));
        let o = hsm.run(&t, &["audit", "log", "--expect-key", &fp]);
        assert_eq!(code(&o), Some(1), "{sql}: audit log must see it: {}", String::from_utf8_lossy(&o.stdout));
    }
}

/// Two threads signing at once hold two different sessions (the pool never lends one session to two
/// threads), and signatures made in parallel all verify. Runs in a child process so that the token's
/// configuration (`SOFTHSM2_CONF`, read when the module initialises) is set before the module loads.
#[test]
fn session_pool_gives_each_thread_its_own_session() {
    let hsm = Hsm::new("pool");
    let o = Command::new(std::env::current_exe().unwrap())
        .args(["hsm::pool_child", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
        .env("SOFTHSM2_CONF", hsm.conf())
        .env("KEYROLL_TEST_POOL_TOKEN", "pool")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("1 passed"), "the child test did not run: {out}");
}

#[test]
#[ignore = "run by session_pool_gives_each_thread_its_own_session in a child process"]
fn pool_child() {
    use keyroll::authority::pkcs11::{AuthPin, Role, Token, TokenSpec};
    use keyroll::crypto::signer::Signer;
    let label = std::env::var("KEYROLL_TEST_POOL_TOKEN").expect("run by its parent test");
    let spec = TokenSpec { module: MODULE.into(), label };
    let token = Token::open_with(&spec, || Ok(AuthPin::from(PIN.to_string()))).unwrap();
    assert_eq!(token.pool().idle(), 1, "the login session");
    let barrier = std::sync::Barrier::new(2);
    let handles: Vec<_> = std::thread::scope(|sc| {
        let a = sc.spawn(|| {
            token
                .pool()
                .with(|s| {
                    barrier.wait();
                    Ok(s.handle())
                })
                .unwrap()
        });
        let b = sc.spawn(|| {
            token
                .pool()
                .with(|s| {
                    barrier.wait();
                    Ok(s.handle())
                })
                .unwrap()
        });
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    assert_ne!(handles[0], handles[1], "two threads at once got the same session");
    assert_eq!(token.pool().idle(), 2, "both sessions back in the pool, none lost");
    let key = token.generate_signing_key(Role::Ca, "pool test").unwrap();
    let public = key.public_key().clone();
    std::thread::scope(|sc| {
        for t in 0..2u8 {
            let (key, public) = (&key, &public);
            sc.spawn(move || {
                for i in 0..50u8 {
                    let sig = key.sign(&[b"parallel", &[t, i]]).unwrap();
                    public.verify(&[b"parallel", &[t, i]], &sig).unwrap();
                }
            });
        }
    });
    assert!(token.pool().idle() <= 3, "no more sessions than threads at once: {}", token.pool().idle());
}

impl Hsm {
    /// Another token in this configuration (same module, same token directory).
    fn add_token(&self, label: &str) {
        let o = self
            .tool("softhsm2-util")
            .args(["--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SO_PIN])
            .output()
            .unwrap();
        assert!(o.status.success(), "softhsm2-util --init-token: {}", stderr(&o));
    }

    /// The token directories (one per token) in this configuration.
    fn token_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> =
            std::fs::read_dir(self.dir.path().join("tokens")).unwrap().map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    }

    /// keyroll with this token's config and PIN on the database `db` (a file or a URL).
    fn on(&self, s: &Scratch, db: &str, args: &[&str]) -> Output {
        s.cmd()
            .env("SOFTHSM2_CONF", self.conf())
            .env("KEYROLL_PKCS11_PIN", PIN)
            .env_remove("KEYROLL_PKCS11_MODULE")
            .args(["--db", db, "--identity", "keyroll.db.identity"])
            .args(args)
            .output()
            .unwrap()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Issue 16 (session 4): the token is found by label AND must be the token the database recorded. A
/// token that carries the recorded label but another serial (a re-initialised or substituted token)
/// is refused, and so are two tokens with one label; exit 2 with a hint, nothing written, and the
/// right token alone works again.
#[test]
fn a_token_with_the_recorded_label_but_another_serial_or_two_tokens_with_one_label_are_refused() {
    let hsm = Hsm::new("twin");
    let s = Scratch::new();
    let init = hsm.init(&s);
    let serial = init["token"]["serial"].as_str().unwrap().to_string();
    let dump = s.dump();
    let original = hsm.token_dirs();
    assert_eq!(original.len(), 1);
    let aside = hsm.dir.path().join("aside");
    std::fs::rename(&original[0], &aside).unwrap();
    hsm.add_token("twin");
    let o = hsm.run(&s, &["--json", "key", "new", "transfer"]);
    assert_eq!(code(&o), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("has serial") && err.contains(&format!("with serial {serial}")), "{err}");
    assert!(err.contains("\"hint\""), "{err}");
    assert_eq!(s.dump(), dump, "the impostor token: nothing written");

    // Both at once: two tokens labelled "twin".
    std::fs::rename(&aside, &original[0]).unwrap();
    assert_eq!(hsm.token_dirs().len(), 2);
    let o = hsm.run(&s, &["key", "new", "transfer"]);
    assert_eq!(code(&o), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("2 tokens are labelled \"twin\"") && stderr(&o).contains("hint:"), "{}", stderr(&o));
    assert_eq!(s.dump(), dump, "two tokens: nothing written");
    let fresh = Scratch::new();
    let o =
        hsm.cmd(&fresh).args(["init", "--issuer", "X", "--pkcs11-module", MODULE, "--pkcs11-token", "twin"]).output();
    let o = o.unwrap();
    assert_eq!(code(&o), Some(2), "{}", stderr(&o));
    assert!(!fresh.path("keyroll.db").exists() && !fresh.path("keyroll.db.identity").exists());

    // The impostor goes; the recorded token alone works.
    for d in hsm.token_dirs() {
        if d != original[0] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
    hsm.ok(&s, &["key", "new", "transfer"]);
}

/// SoftHSM2 never locks the user PIN (checked: 11 wrong logins with pkcs11-tool each answer
/// CKR_PIN_INCORRECT and only raise "user PIN count low"), so keyroll's PinLocked path cannot be reached
/// with it. What can be: wrong PINs again and again are each refused with exit 2, change nothing, and the
/// right PIN still works after them.
#[test]
fn repeated_wrong_pins_are_each_refused_and_change_nothing() {
    let hsm = Hsm::new("wrong-pins");
    let s = Scratch::new();
    hsm.init(&s);
    let (dump, objects) = (s.dump(), hsm.objects(true));
    for _ in 0..5 {
        let o = hsm.cmd(&s).env("KEYROLL_PKCS11_PIN", "111111").args(["key", "new", "transfer"]).output().unwrap();
        assert_eq!(code(&o), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("refused the PIN") && stderr(&o).contains("hint:"), "{}", stderr(&o));
        assert!(!stderr(&o).contains("111111") && !stderr(&o).contains(PIN), "a PIN was printed: {}", stderr(&o));
    }
    assert_eq!(s.dump(), dump);
    assert_eq!(hsm.objects(true), objects);
    hsm.ok(&s, &["key", "new", "transfer"]);
}

/// Issue 16 (session 4): the CA key disappears from the token in the middle of a personalisation batch
/// (deleted by another client, pkcs11-tool): the run stops with a clear error (exit 2), the database
/// stays consistent (the audit log verifies, every card recorded as personalised has its file), and
/// once the token is restored the same command finishes the run.
#[test]
fn a_token_failing_mid_batch_stops_cleanly_and_the_run_resumes_once_it_is_back() {
    let hsm = Hsm::new("mid-batch");
    let s = Scratch::new();
    let init = hsm.init(&s);
    hsm.ok(&s, &["batch", "new", "pk", "--profile", "public-key", "--transfer-key-limit", "3"]);
    let backup = hsm.dir.path().join("tokens-backup");
    copy_dir(&hsm.dir.path().join("tokens"), &backup);
    const N: usize = 400;
    let child = hsm
        .cmd(&s)
        .args(["perso", "--batch", "pk", "--out-dir", "cards", "--count", &N.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while (!s.path("cards").exists() || s.card_files("cards").len() < 3)
        && started.elapsed() < std::time::Duration::from_secs(120)
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let ca = init["token"]["key_ids"]["ca"].as_str().unwrap();
    let o = hsm
        .tool("pkcs11-tool")
        .args(["--module", MODULE, "--token-label", "mid-batch", "--login", "--pin", PIN])
        .args(["--delete-object", "--type", "privkey", "--id", ca])
        .output()
        .unwrap();
    assert!(o.status.success(), "pkcs11-tool --delete-object: {}", stderr(&o));
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    let written = s.card_files("cards").len();
    assert!(written < N, "the batch finished before the key was deleted ({written} cards); make it larger");
    assert_eq!(code(&o), Some(2), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let o = hsm.run(&s, &["--json", "audit", "log"]);
    assert_eq!(code(&o), Some(0), "the log after the failure: {}", String::from_utf8_lossy(&o.stdout));
    let recorded: usize = s.sqlite("SELECT count(*) FROM cards WHERE state = 'personalised'").trim().parse().unwrap();
    assert!(recorded <= written, "{recorded} cards recorded, {written} card files");

    // The token restored (its backup from before the run): the same command finishes the run.
    std::fs::remove_dir_all(hsm.dir.path().join("tokens")).unwrap();
    copy_dir(&backup, &hsm.dir.path().join("tokens"));
    let again = hsm.json(&s, &["perso", "--batch", "pk", "--out-dir", "cards", "--count", &N.to_string()]);
    assert_eq!(again["resumed"], true, "{again}");
    let personalised: usize =
        s.sqlite("SELECT count(*) FROM cards WHERE state = 'personalised'").trim().parse().unwrap();
    assert_eq!(personalised, N, "every card of the run recorded once");
    assert_eq!(
        s.sqlite("SELECT count(DISTINCT serial) FROM cards").trim(),
        s.sqlite("SELECT count(*) FROM cards").trim()
    );
    assert_eq!(s.card_files("cards").len(), N);
    let log = hsm.json(&s, &["audit", "log"]);
    assert_eq!(log["intact"], true, "{log}");
}

/// Issue 16 (session 4): token custody on PostgreSQL, and `db copy` of a token database (the custody
/// records move with it; the copy signs in the same token).
#[test]
fn token_custody_on_postgres_and_db_copy_of_a_token_database() {
    let hsm = Hsm::new("pg-token");
    let s = Scratch::new();
    let pg = crate::support::postgres::database();
    let url = pg.url();
    let ok = |db: &str, args: &[&str]| {
        let o = hsm.on(&s, db, args);
        assert!(o.status.success(), "{db} {args:?}: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let init: serde_json::Value = serde_json::from_str(&ok(
        &url,
        &[
            "--json",
            "init",
            "--issuer",
            "PG HSM",
            "--identity-out",
            "keyroll.db.identity",
            "--pkcs11-module",
            MODULE,
            "--pkcs11-token",
            "pg-token",
        ],
    ))
    .unwrap();
    assert_eq!(init["token"]["label"], "pg-token");
    ok(&url, &["key", "new", "transfer"]);
    ok(&url, &["batch", "new", "pk", "--profile", "public-key", "--transfer-key-limit", "3"]);
    ok(&url, &["perso", "--batch", "pk", "--out-dir", "cards", "--count", "2"]);
    ok(&url, &["cert", "crl", "--out", "pg.crl"]);
    ok(&url, &["cert", "ca", "--out", "root.pem"]);
    let o = openssl(s.dir.path(), &["crl", "-in", "pg.crl", "-CAfile", "root.pem", "-noout"]);
    assert!(format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o)).contains("verify OK"));
    assert_eq!(pg.psql("SELECT count(*) FROM token_keys"), "4");
    // No CA, scheme or audit key among the stored secrets (the virtual manufacturer's key is one, wrapped).
    assert_eq!(
        pg.psql("SELECT string_agg(name, ',' ORDER BY name) FROM secrets"),
        "card-log-master,virtual-fab-root-key"
    );
    let log: serde_json::Value = serde_json::from_str(&ok(&url, &["--json", "audit", "log"])).unwrap();
    assert_eq!(log["intact"], true);

    // db copy to SQLite: the token records come along, the copy unlocks in the same token and signs.
    ok(&url, &["db", "copy", "--from", &url, "--to", "copy.db"]);
    assert_eq!(s.sqlite_at("copy.db", "SELECT count(*) FROM token_keys").trim(), "4");
    ok("copy.db", &["key", "new", "update"]);
    ok("copy.db", &["cert", "crl", "--out", "copy.crl"]);
    let o = openssl(s.dir.path(), &["crl", "-in", "copy.crl", "-CAfile", "root.pem", "-noout"]);
    assert!(format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o)).contains("verify OK"));
    let log: serde_json::Value = serde_json::from_str(&ok("copy.db", &["--json", "audit", "log"])).unwrap();
    assert_eq!(log["intact"], true);
    assert_eq!(log["audit_key_fingerprint"], init["audit_key_fingerprint"]);
}

trait SqliteAt {
    fn sqlite_at(&self, file: &str, sql: &str) -> String;
}

impl SqliteAt for Scratch {
    fn sqlite_at(&self, file: &str, sql: &str) -> String {
        let o = Command::new("sqlite3").arg(self.path(file)).arg(sql).output().expect("sqlite3 CLI");
        assert!(o.status.success(), "sqlite3 {sql}: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    }
}
