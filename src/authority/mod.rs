//! The issuer's back office: one SQLite file holding key versions (age ciphertext only), batches and
//! their identifier upper limits, every card written, the CA's records and a signed audit log.
//!
//! Reading needs only the file; changing anything needs a custodian identity, because every change is
//! recorded in the audit log, whose head is signed with a key only custodians can unlock.

pub mod audit_log;
pub mod batches;
pub mod ca;
pub mod cards;
pub mod custody;
pub mod db;
pub mod issuer_ca;
pub mod keys;
pub mod manufacturers;

use crate::crypto::CryptoError;
use crate::crypto::card_key::CardKeyPair;
use crate::crypto::secret::SecretBytes;
use crate::domain::CardSerial;
use custody::Custodian;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AuthorityError {
    #[error("database {0} already exists; keyroll init never overwrites a database")]
    AlreadyExists(PathBuf),
    #[error("no database at {0}")]
    NoDatabase(PathBuf),
    #[error("{path} is not a usable keyroll database: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("database schema version {found} is newer than this keyroll knows ({known})")]
    NewerSchema { found: usize, known: usize },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0:?} is not an age X25519 recipient (age1…)")]
    BadRecipient(String),
    #[error("cannot read identity file {path}: {why}")]
    Identity { path: PathBuf, why: String },
    #[error("identity {0} cannot decrypt this database's secrets (not a custodian)")]
    WrongIdentity(PathBuf),
    #[error("this command needs a custodian identity")]
    IdentityRequired,
    #[error("age error: {0}")]
    Custody(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("no {kind} key {id}")]
    NoSuchKey { kind: &'static str, id: u32 },
    #[error("{kind} key {id} is {state}; {why}")]
    KeyState { kind: &'static str, id: u32, state: String, why: &'static str },
    #[error("no active {0} key")]
    NoActiveKey(&'static str),
    #[error("no batch named {0:?}")]
    NoSuchBatch(String),
    #[error("a batch named {0:?} already exists")]
    BatchExists(String),
    #[error("transfer key id upper limit {limit} is below the newest transfer key id {newest}")]
    LimitBelowNewest { limit: u32, newest: u32 },
    #[error("invalid batch: {0}")]
    BadBatch(&'static str),
    #[error("stored secret {0:?} is malformed")]
    BadSecret(String),
    #[error("certificate authority: {0}")]
    Ca(String),
    #[error("refusing to change this database: {0}")]
    Tampered(String),
    #[error(
        "{path} is a keyroll version 1 database (schema {schema}); version 2 shares no key, label or application identifier with version 1 and does not open it"
    )]
    Version1Database { path: PathBuf, schema: usize },
    #[error("not a usable manufacturer root: {0}")]
    BadManufacturer(String),
    #[error("manufacturer root {fingerprint} is already recorded (as {kind})")]
    ManufacturerExists { fingerprint: String, kind: String },
    #[error("chip {chip} already belongs to issued card {serial}; a chip is personalised once")]
    ChipIssued { chip: crate::domain::ChipId, serial: CardSerial },
    #[error("chip {chip} already has card serial {serial}; a chip id gets exactly one serial, ever")]
    ChipHasSerial { chip: crate::domain::ChipId, serial: CardSerial },
    #[error("card serial {serial} already belongs to chip {chip}")]
    SerialHasChip { serial: CardSerial, chip: crate::domain::ChipId },
}

/// Current time as RFC 3339 UTC with seconds (the `der` crate's `DateTime` formats it).
pub fn now() -> String {
    der::DateTime::from_system_time(std::time::SystemTime::now()).map(|d| d.to_string()).unwrap_or_default()
}

/// Secret names in the `secrets` table.
pub mod secret_name {
    pub const AUDIT_KEY: &str = "audit-signing-key";
    pub const CA_KEY: &str = "ca-root-key";
}

/// An open issuer database.
pub struct Authority {
    pub conn: Connection,
    pub path: PathBuf,
}

/// What `init` produced.
#[derive(Debug, serde::Serialize)]
pub struct InitOutcome {
    pub issuer: String,
    pub database: PathBuf,
    pub identity_file: Option<PathBuf>,
    pub custodians: Vec<String>,
    pub audit_key_fingerprint: String,
    pub transfer_key_kcv: String,
    pub update_key_kcv: String,
}

impl Authority {
    pub fn open(path: &Path) -> Result<Self, AuthorityError> {
        Ok(Authority { conn: db::open(path)?, path: path.to_path_buf() })
    }

    /// Open for auditing: read only, nothing migrated or written.
    pub fn open_read_only(path: &Path) -> Result<Self, AuthorityError> {
        Ok(Authority { conn: db::open_read_only(path)?, path: path.to_path_buf() })
    }

    /// Create the database with the issuer's first transfer key (id 1), update key (id 1),
    /// audit key and CA root. Without custodians, a new identity file is
    /// written at `identity_out`.
    pub fn init(
        path: &Path,
        issuer: &str,
        custodians: &[String],
        identity_out: &Path,
    ) -> Result<(Authority, InitOutcome), AuthorityError> {
        if issuer.trim().is_empty() {
            return Err(AuthorityError::BadBatch("the issuer name must not be empty"));
        }
        if path.exists() {
            return Err(AuthorityError::AlreadyExists(path.to_path_buf()));
        }
        let mut recipients = custodians.iter().map(|c| custody::parse_recipient(c)).collect::<Result<Vec<_>, _>>()?;
        let mut identity_file = None;
        if recipients.is_empty() {
            recipients.push(custody::new_identity_file(identity_out)?);
            identity_file = Some(identity_out.to_path_buf());
        }
        let result = Self::init_db(path, issuer, &recipients);
        if result.is_err() {
            // Leave nothing half-made: the database (and a fresh identity nobody has seen) go.
            let _ = std::fs::remove_file(path);
            for ext in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
            }
            if let Some(f) = &identity_file {
                let _ = std::fs::remove_file(f);
            }
        }
        let (auth, mut outcome) = result?;
        if let Some(f) = &identity_file {
            // The custodian's own file remembers which audit key its database must carry (see `unlock`).
            custody::pin_audit_key(f, &outcome.audit_key_fingerprint)?;
        }
        outcome.identity_file = identity_file;
        Ok((auth, outcome))
    }

    fn init_db(
        path: &Path,
        issuer: &str,
        recipients: &[age::x25519::Recipient],
    ) -> Result<(Authority, InitOutcome), AuthorityError> {
        let mut conn = db::create(path)?;
        let audit = CardKeyPair::generate()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let at = now();
        tx.execute(
            "INSERT INTO issuer (id, name, created_at, audit_public_key) VALUES (1, ?1, ?2, ?3)",
            params![issuer, at, audit.public_key_sec1().to_vec()],
        )?;
        for r in recipients {
            tx.execute("INSERT INTO custodians (recipient) VALUES (?1)", params![r.to_string()])?;
        }
        let put = |name: &str, secret: &[u8]| -> Result<(), AuthorityError> {
            tx.execute(
                "INSERT INTO secrets (name, ciphertext) VALUES (?1, ?2)",
                params![name, custody::encrypt(recipients, secret)?],
            )?;
            Ok(())
        };
        put(secret_name::AUDIT_KEY, audit.to_bytes().expose())?;
        let ca = issuer_ca::create_root(&tx, issuer, recipients)?;
        let tk = keys::insert_new(&tx, recipients, keys::KeyKind::Transfer, keys::KeyState::Active)?;
        let uk = keys::insert_new(&tx, recipients, keys::KeyKind::Update, keys::KeyState::Active)?;
        let fp = audit_log::fingerprint(&audit.public_key_sec1());
        audit_log::append(
            &tx,
            &audit,
            "init",
            &serde_json::json!({
                "issuer": issuer,
                "custodians": recipients.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "audit_key_fingerprint": fp,
                "ca_root_serial": ca,
                "transfer_key": { "id": tk.0, "kcv": tk.1 },
                "update_key": { "id": uk.0, "kcv": uk.1 },
            }),
        )?;
        tx.commit()?;
        let outcome = InitOutcome {
            issuer: issuer.to_string(),
            database: path.to_path_buf(),
            identity_file: None,
            custodians: recipients.iter().map(|r| r.to_string()).collect(),
            audit_key_fingerprint: fp,
            transfer_key_kcv: tk.1,
            update_key_kcv: uk.1,
        };
        Ok((Authority { conn, path: path.to_path_buf() }, outcome))
    }

    pub fn issuer_name(&self) -> Result<String, AuthorityError> {
        Ok(self.conn.query_row("SELECT name FROM issuer WHERE id = 1", [], |r| r.get(0))?)
    }

    /// The custodians every new secret is encrypted to. The table must match the custodians recorded in
    /// the signed audit log's `init` row, so a row slipped into the table cannot receive future keys.
    pub fn recipients(&self) -> Result<Vec<age::x25519::Recipient>, AuthorityError> {
        let mut stmt = self.conn.prepare("SELECT recipient FROM custodians ORDER BY id")?;
        let table: Vec<String> = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<_, _>>()?;
        let detail: Option<String> = self
            .conn
            .query_row("SELECT detail FROM audit_log WHERE action = 'init' ORDER BY id LIMIT 1", [], |r| r.get(0))
            .optional()?;
        let logged: Vec<String> = detail
            .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
            .and_then(|v| serde_json::from_value(v["custodians"].clone()).ok())
            .unwrap_or_default();
        let (mut a, mut b) = (table.clone(), logged);
        a.sort();
        b.sort();
        if a != b {
            return Err(AuthorityError::Tampered(
                "the custodian table differs from the custodians recorded at init".into(),
            ));
        }
        table.iter().map(|r| custody::parse_recipient(r)).collect()
    }

    /// Unlock with a custodian identity: proves the identity can decrypt this database's secrets.
    pub fn unlock(&self, identity: Option<&Path>) -> Result<Unlocked<'_>, AuthorityError> {
        let path = identity.ok_or(AuthorityError::IdentityRequired)?;
        let custodian = Custodian::from_file(path)?;
        let ct: Vec<u8> =
            self.conn
                .query_row("SELECT ciphertext FROM secrets WHERE name = ?1", [secret_name::AUDIT_KEY], |r| r.get(0))?;
        let audit = CardKeyPair::from_bytes(custodian.decrypt(&ct)?.expose())?;
        // A custodian changes nothing in a database it cannot vouch for: the audit key must be the one
        // the issuer record names (and, when the identity file pins one, that one), and the log intact.
        let public: Vec<u8> =
            self.conn.query_row("SELECT audit_public_key FROM issuer WHERE id = 1", [], |r| r.get(0))?;
        let fp = audit_log::fingerprint(&public);
        if public != audit.public_key_sec1() {
            return Err(AuthorityError::Tampered("the stored audit key does not match the issuer record".into()));
        }
        if !custodian.pinned_audit_keys.is_empty() && !custodian.pinned_audit_keys.contains(&fp) {
            return Err(AuthorityError::Tampered(format!(
                "the database's audit key {fp} is not the one pinned in identity file {}",
                path.display()
            )));
        }
        let verdict = audit_log::verify(&self.conn)?;
        if !verdict.intact {
            return Err(AuthorityError::Tampered(format!(
                "the audit log is not intact ({})",
                verdict.reason.unwrap_or_default()
            )));
        }
        Ok(Unlocked { auth: self, custodian, audit })
    }
}

/// An authority unlocked by a custodian: can read secrets and sign the audit log.
pub struct Unlocked<'a> {
    pub auth: &'a Authority,
    pub custodian: Custodian,
    audit: CardKeyPair,
}

impl Unlocked<'_> {
    pub fn conn(&self) -> &Connection {
        &self.auth.conn
    }

    /// Append to the audit log (inside the caller's transaction).
    pub fn log(&self, conn: &Connection, action: &str, detail: serde_json::Value) -> Result<i64, AuthorityError> {
        audit_log::append(conn, &self.audit, action, &detail)
    }

    pub fn secret(&self, name: &str) -> Result<SecretBytes, AuthorityError> {
        let ct: Option<Vec<u8>> =
            self.conn().query_row("SELECT ciphertext FROM secrets WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        self.custodian.decrypt(&ct.ok_or_else(|| AuthorityError::BadSecret(name.to_string()))?)
    }

    /// Run `f` in an IMMEDIATE transaction (writers queue behind each other instead of failing).
    pub fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T, AuthorityError>) -> Result<T, AuthorityError> {
        let tx = rusqlite::Transaction::new_unchecked(self.conn(), TransactionBehavior::Immediate)?;
        let v = f(&tx)?;
        tx.commit()?;
        Ok(v)
    }
}
