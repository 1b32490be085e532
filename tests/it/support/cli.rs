//! Running the real `keyroll` binary in a scratch directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Scratch {
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database this scratch's issuer lives in (`None`: the SQLite file `keyroll.db`).
    pub pg: Option<super::postgres::Database>,
}

impl Scratch {
    /// An issuer in the SQLite file `keyroll.db`.
    pub fn new() -> Self {
        Scratch { dir: tempfile::tempdir().unwrap(), pg: None }
    }

    /// An issuer in a fresh PostgreSQL database of the test cluster.
    pub fn postgres() -> Self {
        Scratch { dir: tempfile::tempdir().unwrap(), pg: Some(super::postgres::database()) }
    }

    /// The `--db` argument: `keyroll.db`, or the PostgreSQL URL.
    pub fn db(&self) -> String {
        match &self.pg {
            None => "keyroll.db".into(),
            Some(d) => d.url(),
        }
    }

    /// Run SQL on the database (the sqlite3 CLI or psql); the output, one row per line.
    pub fn sql(&self, sql: &str) -> String {
        match &self.pg {
            None => self.sqlite(sql),
            Some(d) => d.psql(sql),
        }
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
        self.cmd().args(["--db", &self.db(), "--identity", "keyroll.db.identity"]).args(args).output().unwrap()
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
        match &self.pg {
            None => {
                let c = Scratch::new();
                for f in ["keyroll.db", "keyroll.db.identity"] {
                    std::fs::copy(self.path(f), c.path(f)).unwrap();
                }
                c
            }
            Some(d) => {
                let c = Scratch { dir: tempfile::tempdir().unwrap(), pg: Some(d.clone_database()) };
                std::fs::copy(self.path("keyroll.db.identity"), c.path("keyroll.db.identity")).unwrap();
                c
            }
        }
    }

    /// A fresh issuer with one identity (`keyroll.db.identity` on both engines).
    pub fn init(&self) {
        self.ok(&["init", "--issuer", "Test Issuer", "--identity-out", "keyroll.db.identity"]);
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

    /// The database's logical content (the sqlite3 CLI's dump; on PostgreSQL every row of every table).
    pub fn dump(&self) -> String {
        match &self.pg {
            None => self.sqlite(".dump"),
            Some(d) => {
                let tables =
                    d.psql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1");
                tables
                    .lines()
                    .map(|t| format!("{t}:\n{}\n", d.psql(&format!("SELECT * FROM \"{t}\" ORDER BY 1"))))
                    .collect()
            }
        }
    }

    /// A fresh issuer with one symmetric card on transfer key 1 (batch "old") and one on key 2 (batch
    /// "new"), balance 100 each, in `cards/`: the card files and their `file:` specs (old, new).
    pub fn old_and_new_symmetric_cards(&self) -> (Vec<PathBuf>, String, String) {
        self.init();
        for (batch, key_first) in [("old", false), ("new", true)] {
            if key_first {
                self.ok(&["key", "new", "transfer"]);
            }
            self.ok(&[
                "batch",
                "new",
                batch,
                "--profile",
                "symmetric",
                "--transfer-key-limit",
                "3",
                "--initial-balance",
                "100",
            ]);
            self.ok(&["perso", "--batch", batch, "--out-dir", "cards", "--count", "1"]);
        }
        let files = self.card_files("cards");
        let (old, new) = (file_reader(&files[0]), file_reader(&files[1]));
        (files, old, new)
    }

    /// A fresh issuer ([`Scratch::init`]) with `count` cards of `profile` personalised into `cards/`
    /// (batch "b": transfer-key limit 3, balance 100 each): the card files, in serial order.
    pub fn init_with_cards(&self, profile: &str, count: usize) -> Vec<PathBuf> {
        self.init();
        self.ok(&["batch", "new", "b", "--profile", profile, "--transfer-key-limit", "3", "--initial-balance", "100"]);
        self.ok(&["perso", "--batch", "b", "--out-dir", "cards", "--count", &count.to_string()]);
        self.card_files("cards")
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

/// The `--payer`/`--payee`/`--reader` spec of a card file: `file:PATH`.
pub fn file_reader(card: &Path) -> String {
    format!("file:{}", card.display())
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A test run on both engines, `NAME::sqlite` and `NAME::postgres`: `NAME` is a function taking the
/// [`Scratch`] to run in (the using module has `Scratch` in scope).
#[allow(unused_macros)]
macro_rules! both_engines {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(super::Scratch::new())
            }
            #[test]
            fn postgres() {
                super::$name(super::Scratch::postgres())
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both_engines;
