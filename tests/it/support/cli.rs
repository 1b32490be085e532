//! Running the real `keyroll` binary in a scratch directory.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keyroll"));
        c.current_dir(self.dir.path())
            .env_remove("KEYROLL_DB")
            .env_remove("KEYROLL_IDENTITY")
            .env_remove("XDG_STATE_HOME");
        c
    }

    /// Run keyroll with `--db keyroll.db --identity keyroll.db.identity` and `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(["--db", "keyroll.db", "--identity", "keyroll.db.identity"]).args(args).output().unwrap()
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "keyroll {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Another scratch directory holding a copy of this one's database and identity (for tampering).
    pub fn copy(&self) -> Scratch {
        let c = Scratch::new();
        for f in ["keyroll.db", "keyroll.db.identity"] {
            std::fs::copy(self.path(f), c.path(f)).unwrap();
        }
        c
    }

    /// A fresh issuer with one identity.
    pub fn init(&self) {
        self.ok(&["init", "--issuer", "Test Issuer"]);
    }

    /// SHA-256 of the issuer root's DER (what an auditor passes as `--expect-root`).
    pub fn expect_root(&self) -> String {
        let der = hex::decode(self.sqlite("SELECT hex(root_der) FROM ca;").trim()).unwrap();
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der))
    }

    pub fn sqlite(&self, sql: &str) -> String {
        let o = Command::new("sqlite3").arg(self.path("keyroll.db")).arg(sql).output().expect("sqlite3 CLI");
        assert!(o.status.success(), "sqlite3 {sql}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }

    /// The database's logical content (the sqlite3 CLI's dump).
    pub fn dump(&self) -> String {
        self.sqlite(".dump")
    }

    pub fn card_files(&self, dir: &str) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(self.path(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "card"))
            .collect();
        v.sort();
        v
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
