//! Output conventions: one JSON document with a `schema` field first, or plain text.

use serde::Serialize;

/// The schema name every JSON document carries.
pub const SCHEMA: &str = "keyroll/1";

pub struct Context {
    pub json: bool,
    pub verbose: bool,
    /// `--expect-key`: the audit key fingerprint the caller expects (pinned on a custodian's success).
    pub expect_key: Option<String>,
    /// `--db` and `--identity`: never overwritten by an output file.
    pub db: std::path::PathBuf,
    pub identity: Option<std::path::PathBuf>,
}

impl Context {
    /// Open the database for a custodian command (its schema brought up to date), with `--expect-key`.
    pub fn open_custodian(
        &self,
        db: &std::path::Path,
    ) -> Result<crate::authority::Authority, crate::authority::AuthorityError> {
        let mut auth = crate::authority::Authority::open(db)?;
        auth.expect_key = self.expect_key.clone();
        Ok(auth)
    }

    /// Write an output file: never over the database, its identity or a card file; over another existing
    /// file only with `force`; atomically (a reader never sees half a file). `-` is stdout.
    pub fn write_output(
        &self,
        out: &std::path::Path,
        bytes: &[u8],
        force: bool,
        mode: u32,
    ) -> Result<(), super::CliError> {
        if out.as_os_str() == "-" {
            use std::io::Write;
            let mut o = std::io::stdout().lock();
            return o.write_all(bytes).and_then(|_| o.flush()).map_err(|e| {
                super::CliError::input(format!("cannot write to stdout: {e}"), "check where stdout goes")
            });
        }
        self.check_output(out, force)?;
        crate::authority::files::write_atomic(out, bytes, mode).map_err(|e| {
            super::CliError::input(
                format!("cannot write {}: {e}", out.display()),
                "check the directory exists and is writable",
            )
        })
    }

    /// Whether `out` may be written (see [`Context::write_output`]); checked before any work is done.
    pub fn check_output(&self, out: &std::path::Path, force: bool) -> Result<(), super::CliError> {
        use crate::authority::files;
        if out.as_os_str() == "-" {
            return Ok(());
        }
        let mut protected: Vec<(std::path::PathBuf, &'static str)> = Vec::new();
        let db = self.db.as_os_str().to_owned();
        protected.push((self.db.clone(), "the database"));
        for ext in ["-wal", "-shm"] {
            let mut p = db.clone();
            p.push(ext);
            protected.push((p.into(), "the database's journal"));
        }
        if let Some(id) = &self.identity {
            protected.push((id.clone(), "the custodian identity file"));
            let mut st = id.as_os_str().to_owned();
            st.push(".state");
            protected.push((st.into(), "the custodian state file"));
        }
        let refs: Vec<(&std::path::Path, &'static str)> = protected.iter().map(|(p, w)| (p.as_path(), *w)).collect();
        files::check_output(out, force, &refs).map_err(|e| match e {
            files::OutputRefused::Exists(_) => {
                super::CliError::input(e.to_string(), "choose another --out path, or pass --force to replace the file")
            }
            files::OutputRefused::Protected { .. } => super::CliError::input(
                e.to_string(),
                "choose another --out path: the database, its identity and card files are never output targets",
            ),
        })
    }

    /// Print `value` as JSON under `--json`, or run `text` to print it for people.
    pub fn emit<T: Serialize>(&self, value: &T, text: impl FnOnce(&T)) {
        if self.json {
            json(value);
        } else {
            text(value);
        }
    }
}

/// `value` as one JSON document with `"schema"` first.
pub fn document<T: Serialize>(value: &T) -> serde_json::Value {
    // Every output type is plain data (strings, numbers, maps): serialising it cannot fail.
    let v = serde_json::to_value(value).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
    let mut out = serde_json::Map::new();
    out.insert("schema".into(), SCHEMA.into());
    match v {
        serde_json::Value::Object(map) => out.extend(map),
        other => {
            out.insert("value".into(), other);
        }
    }
    serde_json::Value::Object(out)
}

/// Print `value` as one JSON document with `"schema"` first.
pub fn json<T: Serialize>(value: &T) {
    println!("{:#}", document(value));
}
