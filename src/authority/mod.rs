//! The issuer's back office: one SQLite file holding key versions (age ciphertext only), batches and
//! their identifier upper limits, every card written, the CA's records and a signed audit log.
//!
//! Reading needs only the file; changing anything needs a custodian identity, because every change is
//! recorded in the audit log, whose head is signed with a key only custodians can unlock.

pub mod audit_log;
pub mod batches;
pub mod ca;
pub mod cards;
pub mod checkpoint;
pub mod copy;
pub mod custody;
pub mod db;
pub mod files;
pub mod issuer_ca;
pub mod keys;
pub mod manufacturers;
pub mod pkcs11;
pub mod policy;
mod read;
pub mod reconciliations;
pub mod rows;
pub mod store;

use crate::crypto::CryptoError;
use crate::crypto::card_key::CardKeyPair;
use crate::crypto::secret::SecretBytes;
use audit_log::{Checkpoint, TableRow};
use checkpoint::CustodianState;
use custody::{Custodian, Sealer};
use pkcs11::{Role, TokenCustody, TokenSpec};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use store::{OptionalExtension, Store, params};
use thiserror::Error;

/// Errors of the back office. Each variant carries the data a caller needs to decide and to tell the
/// user what to do; none carries a secret.
#[derive(Debug, Error)]
pub enum AuthorityError {
    #[error("database {0} already exists; keyroll init never overwrites a database")]
    AlreadyExists(PathBuf),
    #[error("no database at {0}")]
    NoDatabase(PathBuf),
    #[error("{path} is not a usable keyroll database: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("{0} is not a keyroll database (a directory, an empty file, or no keyroll schema in it)")]
    NotKeyroll(PathBuf),
    #[error("{path} holds keyroll's schema but no issuer: an `init` did not finish")]
    Unfinished { path: PathBuf, postgres: bool },
    #[error("{path} is not empty: it holds table(s) of another application ({tables})")]
    NotEmpty { path: PathBuf, tables: String },
    #[error("database schema version {found} is newer than this keyroll knows ({known})")]
    NewerSchema { found: usize, known: usize },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The store seam: PostgreSQL errors, connection failures, a column of the wrong type.
    #[error("{0}")]
    Store(store::StoreError),
    #[error("{0:?} is not an age X25519 recipient (age1…)")]
    BadRecipient(String),
    #[error("cannot read identity file {path}: {why}")]
    Identity { path: PathBuf, why: String },
    #[error("identity {0} cannot decrypt this database's secrets (not a custodian)")]
    WrongIdentity(PathBuf),
    #[error("this command needs a custodian identity")]
    IdentityRequired,
    #[error(transparent)]
    Custody(#[from] custody::CustodyError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("custodian state or checkpoint file {path} is unusable: {why}")]
    StateFile { path: PathBuf, why: String },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("no {kind} key {id}")]
    NoSuchKey { kind: &'static str, id: u32 },
    #[error("{kind} key {id} is {state}; {why}")]
    KeyState { kind: &'static str, id: u32, state: &'static str, why: &'static str },
    #[error("{kind} key {id} is still needed{}{}", if *newest_active { ": it is the newest active key (new batches take it)" } else { "" }, if batches.is_empty() { String::new() } else { format!(": batch(es) {} still have cards to personalise on it", batches.join(", ")) })]
    KeyInUse { kind: &'static str, id: u32, newest_active: bool, batches: Vec<String> },
    #[error("batch {batch:?} uses {kind} key {id}, which is retired; no card is personalised on a retired key")]
    RetiredKey { batch: String, kind: &'static str, id: u32 },
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
    #[error("invalid {what}: {why}")]
    BadName { what: &'static str, why: String },
    #[error("the database holds no secret {0:?}")]
    MissingSecret(&'static str),
    #[error("stored secret {0} is malformed")]
    MalformedSecret(SecretRef),
    #[error("certificate authority: {0}")]
    Ca(#[from] ca::CaError),
    #[error("no unrevoked certificate with serial or card serial {0}")]
    NoCertificate(String),
    #[error("refusing to use this database: {0}")]
    Tampered(#[from] Tamper),
    #[error("{table} row {row} does not decode: {why}")]
    BadRow { table: &'static str, row: i64, why: String },
    #[error("no pinned audit key for this database in {state}: a custodian command never runs on an unpinned database")]
    PinRequired { state: PathBuf },
    #[error("internal error: table {0} is not bound to the audit log")]
    NotBound(String),
    #[error("internal error: {table} row {row} was changed without an audit log entry")]
    UnloggedChange { table: &'static str, row: i64 },
    #[error("refusing to sign: {0}")]
    SigningTime(String),
    #[error("the policy already blocks {max} cards, its bound")]
    PolicyFull { max: usize },
    #[error("no card with serial {0}")]
    NoSuchCard(String),
    #[error("refusing to resolve: {0}")]
    Resolve(#[from] reconciliations::ResolveRefusal),
    #[error(
        "{path} is a keyroll version 1 database (schema {schema}); version 2 shares no key, label or application identifier with version 1 and does not open it"
    )]
    Version1Database { path: PathBuf, schema: usize },
    #[error("not a usable manufacturer root: {0}")]
    BadManufacturer(String),
    #[error("manufacturer root {fingerprint} is already recorded (as {kind})")]
    ManufacturerExists { fingerprint: String, kind: String },
    #[error("chip {chip} already belongs to issued card {serial}; a chip is personalised once")]
    ChipIssued { chip: crate::domain::ChipId, serial: crate::domain::CardSerial },
    #[error("chip {chip} already has card serial {serial}; a chip id gets exactly one serial, ever")]
    ChipHasSerial { chip: crate::domain::ChipId, serial: crate::domain::CardSerial },
    #[error("chip {chip} is not the chip registered for card {serial}; no certificate is issued")]
    ChipNotRegistered { chip: crate::domain::ChipId, serial: crate::domain::CardSerial },
    #[error("card serial {serial} already belongs to chip {chip}")]
    SerialHasChip { serial: crate::domain::CardSerial, chip: crate::domain::ChipId },
    #[error(transparent)]
    Token(#[from] pkcs11::TokenError),
}

/// A stored secret, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Named(&'static str),
    Key { kind: &'static str, id: u32 },
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Named(n) => write!(f, "{n:?}"),
            SecretRef::Key { kind, id } => write!(f, "{kind} key {id}"),
        }
    }
}

/// Evidence that the database was changed outside keyroll (exit 1 in the CLI).
#[derive(Debug, Error)]
pub enum Tamper {
    /// The log, the tables or a checkpoint disagree (from a [`audit_log::LogVerdict`]).
    #[error("{why}")]
    Log { row: Option<i64>, table_row: Option<TableRow>, why: String },
    #[error("the database's audit key {found} is not the one pinned by {pinned_by} ({expected})")]
    AuditKey { found: String, expected: String, pinned_by: String },
    #[error("the stored audit key does not match the issuer record")]
    AuditKeyRecord,
    #[error("the custodian table differs from the custodians recorded at init")]
    Custodians,
}

impl Tamper {
    fn from_verdict(v: audit_log::LogVerdict) -> Self {
        Tamper::Log {
            row: v.first_bad_row,
            table_row: v.bad_table_row,
            why: format!("the audit log does not vouch for it: {}", v.reason.unwrap_or_default()),
        }
    }
}

impl From<store::StoreError> for AuthorityError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::Sqlite(e) => AuthorityError::Sqlite(e),
            other => AuthorityError::Store(other),
        }
    }
}

/// Current time as RFC 3339 UTC with seconds (`pki`'s one RFC 3339 code).
pub fn now() -> String {
    crate::pki::format_rfc3339(std::time::SystemTime::now())
}

/// Secret names in the `secrets` table.
pub mod secret_name {
    /// The master of the cards' log-export MAC keys (`crypto::mac::card_log_key`). Version 1's
    /// personalisation master is gone with INITIALIZE: personalisation keys come from SCP11b now.
    pub const LOG_MASTER: &str = "card-log-master";
    pub const AUDIT_KEY: &str = "audit-signing-key";
    pub const CA_KEY: &str = "ca-root-key";
}

/// An open issuer database.
pub struct Authority {
    /// Private to `authority`: callers read through the accessors in `read.rs` (no SQL elsewhere). It
    /// also keeps the changes to bound rows not yet logged (see [`store`]).
    conn: Store,
    /// The database, for messages: a file path, or a PostgreSQL URL with its password hidden.
    pub path: PathBuf,
    /// The audit key fingerprint the caller expects (`--expect-key`): checked, and pinned on success.
    pub expect_key: Option<String>,
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
    /// The token holding the keys, for a database in PKCS #11 custody.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenOutcome>,
}

/// Where `init` put the keys of a database in PKCS #11 custody.
#[derive(Debug, serde::Serialize)]
pub struct TokenOutcome {
    pub label: String,
    pub serial: String,
    /// `CKA_ID` (hex) of each key, by role (ca, scheme, audit, wrap).
    pub key_ids: std::collections::BTreeMap<&'static str, String>,
}

/// Keys `init` made in a token, handed to the database build.
struct NewTokenKeys {
    token: Arc<pkcs11::Token>,
    audit: Arc<pkcs11::TokenKey>,
    ca: Arc<pkcs11::TokenKey>,
    scheme: Arc<pkcs11::TokenKey>,
    wrap: Arc<pkcs11::WrapKey>,
}

impl NewTokenKeys {
    fn generate(token: &Arc<pkcs11::Token>, issuer: &str, made: &mut Vec<Vec<u8>>) -> Result<Self, AuthorityError> {
        let mut signing = |role: Role| -> Result<Arc<pkcs11::TokenKey>, AuthorityError> {
            let k = token.generate_signing_key(role, issuer)?;
            made.push(k.id.clone());
            Ok(Arc::new(k))
        };
        let (audit, ca, scheme) = (signing(Role::Audit)?, signing(Role::Ca)?, signing(Role::Scheme)?);
        let wrap = token.generate_wrap_key(issuer)?;
        made.push(wrap.id.clone());
        Ok(NewTokenKeys { token: token.clone(), audit, ca, scheme, wrap: Arc::new(wrap) })
    }
}

/// Refuse names that would mislead a terminal or a certificate reader (issue 14 item 10): empty,
/// surrounding blanks, control characters (C0, DEL, C1), or longer than `max` characters.
pub fn check_name(what: &'static str, s: &str, max: usize) -> Result<(), AuthorityError> {
    let bad = |why: String| Err(AuthorityError::BadName { what, why });
    if s.trim().is_empty() {
        return bad("it must not be empty".into());
    }
    if s.trim() != s {
        return bad("it must not start or end with white space".into());
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return bad(format!("it contains the control character U+{:04X}", c as u32));
    }
    let n = s.chars().count();
    if n > max {
        return bad(format!("it has {n} characters, at most {max} are allowed"));
    }
    Ok(())
}

/// The longest issuer name, in characters: the root's common name is "NAME Root CA", and it must stay
/// within RFC 5280's upper bound of 64 (`ub-common-name`, [`ca::MAX_NAME_LEN`]), so 64 - 8 = 56.
pub const MAX_ISSUER_NAME: usize = ca::MAX_NAME_LEN - " Root CA".len();
/// The longest batch name.
pub const MAX_BATCH_NAME: usize = 64;

impl Authority {
    fn with_conn(conn: Store, loc: &store::Location) -> Result<Self, AuthorityError> {
        Ok(Authority { conn, path: PathBuf::from(loc.shown()), expect_key: None })
    }

    /// Open for a custodian: the schema is brought up to date (a database from an older keyroll).
    /// `db` is a SQLite file or a `postgres://` URL.
    pub fn open(db: &Path) -> Result<Self, AuthorityError> {
        let loc = store::Location::parse(db);
        Self::with_conn(db::open(&loc)?, &loc)
    }

    /// Open for reading only (listing, auditing): nothing migrated or written, a zero-byte or
    /// non-keyroll file refused.
    pub fn open_read_only(db: &Path) -> Result<Self, AuthorityError> {
        let loc = store::Location::parse(db);
        Self::with_conn(db::open_read_only(&loc)?, &loc)
    }

    /// Create the database with the issuer's first transfer key (id 1), update key (id 1),
    /// card log master, audit key and CA root. Without custodians, a new identity file is
    /// written at `identity_out`, with the audit key pinned in it and the first checkpoint beside it.
    pub fn init(
        path: &Path,
        issuer: &str,
        custodians: &[String],
        identity_out: &Path,
    ) -> Result<(Authority, InitOutcome), AuthorityError> {
        Self::init_with(path, issuer, custodians, identity_out, None)
    }

    /// [`Authority::init`], with the issuer's signing keys and the secrets' wrap key in a PKCS #11
    /// token when `token` is given (DESIGN.md §11). The token is opened and logged in (PIN from
    /// [`pkcs11::PIN_ENV`]) before anything is written, so a wrong PIN, a missing module or token
    /// changes nothing; keys made in the token by an `init` that fails later are destroyed again.
    pub fn init_with(
        path: &Path,
        issuer: &str,
        custodians: &[String],
        identity_out: &Path,
        token: Option<&TokenSpec>,
    ) -> Result<(Authority, InitOutcome), AuthorityError> {
        check_name("issuer name", issuer, MAX_ISSUER_NAME)?;
        let loc = store::Location::parse(path);
        if let store::Location::File(p) = &loc
            && p.exists()
        {
            return Err(AuthorityError::AlreadyExists(path.to_path_buf()));
        }
        let token = token.map(pkcs11::Token::open).transpose()?;
        let mut recipients = custodians.iter().map(|c| custody::parse_recipient(c)).collect::<Result<Vec<_>, _>>()?;
        let mut identity_file = None;
        if recipients.is_empty() {
            recipients.push(custody::new_identity_file(identity_out)?);
            identity_file = Some(identity_out.to_path_buf());
        }
        let mut made = Vec::new();
        let result = match &token {
            Some(t) => NewTokenKeys::generate(t, issuer, &mut made)
                .and_then(|keys| Self::init_db(&loc, issuer, &recipients, Some(keys))),
            None => Self::init_db(&loc, issuer, &recipients, None),
        };
        if result.is_err() {
            if let Some(t) = &token {
                for id in &made {
                    t.destroy(&t.objects_with_id(id));
                }
            }
            // Leave nothing half-made: the database (and a fresh identity nobody has seen) go. (On
            // PostgreSQL the schema and the issuer's rows are one transaction: a failure leaves none.)
            if !loc.is_postgres() && !matches!(result, Err(AuthorityError::AlreadyExists(_))) {
                let _ = std::fs::remove_file(path);
                for ext in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
                }
            }
            if let Some(f) = &identity_file {
                let _ = std::fs::remove_file(f);
            }
        }
        let (auth, mut outcome, head) = result?;
        if let Some(f) = &identity_file {
            // The custodian's own file remembers which audit key its database must carry, and its state
            // file the first checkpoint (see `unlock`).
            custody::pin_audit_key(f, &outcome.audit_key_fingerprint)?;
            CustodianState::for_identity(f).record(&outcome.audit_key_fingerprint, Some(head))?;
        }
        outcome.identity_file = identity_file;
        Ok((auth, outcome))
    }

    fn init_db(
        loc: &store::Location,
        issuer: &str,
        recipients: &[age::x25519::Recipient],
        token: Option<NewTokenKeys>,
    ) -> Result<(Authority, InitOutcome, Checkpoint), AuthorityError> {
        let auth = Self::with_conn(db::create(loc)?, loc)?;
        // One transaction from here to the end (on PostgreSQL the schema too, see `db::begin_new`).
        let tx = db::begin_new(&auth.conn, loc)?;
        // In age custody the audit key is made here and stored age-encrypted; in a token it is there.
        type Audit = Arc<dyn crate::crypto::signer::Signer>;
        let (audit, sealer, local_audit): (Audit, Sealer, Option<CardKeyPair>) = match &token {
            Some(t) => (t.audit.clone(), Sealer::Token(t.wrap.clone()), None),
            None => {
                let pair = CardKeyPair::generate()?;
                (Arc::new(pair.clone()), Sealer::Age(recipients.to_vec()), Some(pair))
            }
        };
        let audit_public = *audit.public_key().sec1();
        let master = crate::crypto::Secret16::random()?;
        let at = now();
        tx.execute(
            "INSERT INTO issuer (id, name, created_at, audit_public_key) VALUES (1, ?1, ?2, ?3)",
            params![issuer, at, audit_public.to_vec()],
        )?;
        for r in recipients {
            tx.execute("INSERT INTO custodians (recipient) VALUES (?1)", params![r.to_string()])?;
        }
        let put = |name: &str, secret: &[u8]| -> Result<(), AuthorityError> {
            tx.execute("INSERT INTO secrets (name, ciphertext) VALUES (?1, ?2)", params![name, sealer.seal(secret)?])?;
            Ok(())
        };
        put(secret_name::LOG_MASTER, master.expose())?;
        let mut token_outcome = None;
        let (ca, scheme) = match &token {
            None => {
                if let Some(pair) = &local_audit {
                    put(secret_name::AUDIT_KEY, pair.to_bytes().expose())?;
                }
                let (ca, ca_key, root_der) = issuer_ca::create_root(&tx, issuer, &sealer, None)?;
                (ca, policy::create_scheme(&tx, &sealer, &ca_key, &root_der, None)?)
            }
            Some(t) => {
                let ca_key = ca::CaKey::from_signer(t.ca.clone());
                let (ca, _, root_der) = issuer_ca::create_root(&tx, issuer, &sealer, Some(ca_key.clone()))?;
                let scheme = crate::crypto::scheme_key::SchemeSigningKey::from_signer(t.scheme.clone());
                let scheme = policy::create_scheme(&tx, &sealer, &ca_key, &root_der, Some(scheme))?;
                let mut ids = std::collections::BTreeMap::new();
                for (role, id, public) in [
                    (Role::Audit, &t.audit.id, Some(audit_public.to_vec())),
                    (Role::Ca, &t.ca.id, Some(ca_key.public_key_sec1().to_vec())),
                    (Role::Scheme, &t.scheme.id, Some(scheme.public_key_sec1().to_vec())),
                    (Role::Wrap, &t.wrap.id, None),
                ] {
                    pkcs11::insert_record(&tx, &t.token, role, id, public.as_deref())?;
                    ids.insert(role.name(), hex::encode(id));
                }
                token_outcome =
                    Some(TokenOutcome { label: t.token.label.clone(), serial: t.token.serial.clone(), key_ids: ids });
                (ca, scheme)
            }
        };
        let (outcome, head) =
            Self::init_finish(&auth, tx, issuer, recipients, audit.as_ref(), &sealer, ca, scheme, token_outcome)?;
        Ok((auth, outcome, head))
    }

    #[allow(clippy::too_many_arguments)]
    fn init_finish(
        auth: &Authority,
        tx: store::Tx<'_>,
        issuer: &str,
        recipients: &[age::x25519::Recipient],
        audit: &dyn crate::crypto::signer::Signer,
        sealer: &Sealer,
        ca: String,
        scheme: crate::crypto::scheme_key::SchemeSigningKey,
        token: Option<TokenOutcome>,
    ) -> Result<(InitOutcome, Checkpoint), AuthorityError> {
        let tk = keys::insert_new(&tx, sealer, keys::KeyKind::Transfer, keys::KeyState::Active)?;
        let uk = keys::insert_new(&tx, sealer, keys::KeyKind::Update, keys::KeyState::Active)?;
        let fp = audit_log::fingerprint(audit.public_key().sec1());
        let mut detail = serde_json::json!({
            "issuer": issuer,
            "custodians": recipients.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "audit_key_fingerprint": fp,
            "ca_root_serial": ca,
            "scheme_id": hex::encode(scheme.scheme_id()),
            "transfer_key": { "id": tk.0, "kcv": tk.1 },
            "update_key": { "id": uk.0, "kcv": uk.1 },
        });
        if let Some(t) = &token {
            detail["custody"] = serde_json::json!({ "pkcs11": t });
        }
        audit_log::append(&tx, audit, "init", &detail)?;
        // Policy 1 (nothing blocked), then the first keys' authorisations, which name it.
        let clock = policy::unix_now();
        let record = policy::scheme(&tx)?.expect("created above");
        let (_, detail) = policy::sign_policy(&tx, &scheme, &record, policy::PolicyChange::default(), clock)?;
        let first = detail.expect("the first policy is new");
        let mut head = audit_log::append(&tx, audit, "policy publish", &first)?;
        for (kind, (id, _, key)) in [(keys::KeyKind::Transfer, &tk), (keys::KeyKind::Update, &uk)] {
            let detail = policy::sign_authorisation(&tx, &scheme, kind, *id, key, clock)?;
            head = audit_log::append(&tx, audit, "key authorise", &detail)?;
        }
        tx.commit()?;
        let outcome = InitOutcome {
            issuer: issuer.to_string(),
            database: auth.path.clone(),
            identity_file: None,
            custodians: recipients.iter().map(|r| r.to_string()).collect(),
            audit_key_fingerprint: fp,
            transfer_key_kcv: tk.1,
            update_key_kcv: uk.1,
            token,
        };
        Ok((outcome, head))
    }

    pub fn issuer_name(&self) -> Result<String, AuthorityError> {
        Ok(self.conn.query_row("SELECT name FROM issuer WHERE id = 1", params![], |r| r.get(0))?)
    }

    /// The custodians every new secret is encrypted to. The table is in the state digest a custodian
    /// checked at unlock, and must also match the custodians recorded in the log's `init` entry.
    pub fn recipients(&self) -> Result<Vec<age::x25519::Recipient>, AuthorityError> {
        let mut stmt = self.conn.prepare("SELECT recipient FROM custodians ORDER BY id")?;
        let table: Vec<String> = stmt.query_map(params![], |r| r.get::<_, String>(0))?.collect::<Result<_, _>>()?;
        let detail: Option<String> = self
            .conn
            .query_row("SELECT detail FROM audit_log WHERE action = 'init' ORDER BY id LIMIT 1", params![], |r| {
                r.get(0)
            })
            .optional()?;
        let logged: Vec<String> = detail
            .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
            .and_then(|v| serde_json::from_value(v["custodians"].clone()).ok())
            .unwrap_or_default();
        let (mut a, mut b) = (table.clone(), logged);
        a.sort();
        b.sort();
        if a != b {
            return Err(Tamper::Custodians.into());
        }
        table.iter().map(|r| custody::parse_recipient(r)).collect()
    }

    /// Unlock with a custodian identity. Before any secret is used, the database must be one this
    /// custodian can vouch for:
    /// 1. **pinned**: its audit key is the one `--expect-key` names, or the one this custodian's state
    ///    file or identity file pins; with no pin at all the answer is [`AuthorityError::PinRequired`];
    /// 2. **not rolled back**: the log still holds the custodian's checkpoint unchanged, and the entries
    ///    after it chain to the signed head;
    /// 3. **state as signed**: the state tables (issuer, custodians, secrets, keys, batches, CA,
    ///    revocations) hash to the state digest of the newest entry.
    ///
    /// Cost: the entries since the checkpoint and the state tables, not the cards. Then the audit key is
    /// decrypted (proving the identity is a custodian) and the checkpoint moved to the head.
    pub fn unlock(&self, identity: Option<&Path>) -> Result<Unlocked<'_>, AuthorityError> {
        let path = identity.ok_or(AuthorityError::IdentityRequired)?;
        let custodian = Custodian::from_file(path)?;
        let state = CustodianState::for_identity(path);
        let public = audit_log::audit_public_key(&self.conn)?;
        let fp = audit_log::fingerprint(&public);
        let known = state.get(&fp)?;
        if let Some(e) = &self.expect_key {
            if !e.trim().eq_ignore_ascii_case(&fp) {
                return Err(Tamper::AuditKey {
                    found: fp,
                    expected: e.trim().to_lowercase(),
                    pinned_by: "--expect-key".into(),
                }
                .into());
            }
        } else if known.is_none() && !custodian.pinned_audit_keys.contains(&fp) {
            if let Some(pinned) = custodian.pinned_audit_keys.first() {
                // Another issuer's identity file is the likelier mistake than a rewritten database: say
                // so when this identity cannot even decrypt the database's audit key (nothing is used).
                custodian.decrypt(&self.stored_secret(secret_name::AUDIT_KEY)?)?;
                return Err(Tamper::AuditKey {
                    found: fp,
                    expected: pinned.clone(),
                    pinned_by: format!("identity file {}", path.display()),
                }
                .into());
            }
            return Err(AuthorityError::PinRequired { state: state.path.clone() });
        }
        let cp = known.and_then(|k| k.checkpoint);
        let (verdict, has_state) = audit_log::verify_from(&self.conn, cp.as_ref())?;
        if !verdict.intact {
            return Err(Tamper::from_verdict(verdict).into());
        }
        // The keys: in the token the (verified) token_keys rows name, each checked against the public
        // key the database recorded; or the audit key decrypted with the custodian's identity.
        let records = pkcs11::records(&self.conn)?;
        let (audit, token): (Arc<dyn crate::crypto::signer::Signer>, _) = if records.is_empty() {
            let ct = self.stored_secret(secret_name::AUDIT_KEY)?;
            (Arc::new(CardKeyPair::from_bytes(custodian.decrypt(&ct)?.expose())?), None)
        } else {
            let t = TokenCustody::open(&records)?;
            (t.audit.clone(), Some(t))
        };
        if public != *audit.public_key().sec1() {
            return Err(Tamper::AuditKeyRecord.into());
        }
        let u = Unlocked { auth: self, custodian, audit, token, state, fingerprint: fp, last: Cell::new(verdict.head) };
        if !has_state && cp.is_some() {
            return Err(Tamper::Log {
                row: verdict.head.map(|h| h.count),
                table_row: None,
                why: "the newest log entry carries no state digest, although this custodian saw one before".into(),
            }
            .into());
        }
        if !has_state && verdict.head.is_some_and(|h| h.count > 0) {
            // A database from before row binding, whose whole log was just verified (no checkpoint can
            // predate binding): one entry binds every existing row from now on.
            u.write(|c| {
                let all = rows::bind_all(c)?;
                let n = all.len();
                let cp = audit_log::append_bindings(
                    c,
                    u.audit.as_ref(),
                    "bind rows",
                    &serde_json::json!({ "rows": n, "why": "database from before row binding" }),
                    &all,
                )?;
                u.last.set(Some(cp));
                Ok(())
            })?;
        } else {
            u.state.record(&u.fingerprint, verdict.head)?;
        }
        Ok(u)
    }

    fn stored_secret(&self, name: &'static str) -> Result<Vec<u8>, AuthorityError> {
        self.conn
            .query_row("SELECT ciphertext FROM secrets WHERE name = ?1", [name], |r| r.get(0))
            .optional()?
            .ok_or(AuthorityError::MissingSecret(name))
    }
}

/// An authority unlocked by a custodian: can read secrets and sign the audit log.
pub struct Unlocked<'a> {
    pub auth: &'a Authority,
    pub custodian: Custodian,
    audit: Arc<dyn crate::crypto::signer::Signer>,
    /// The token holding the keys, for a database in PKCS #11 custody.
    token: Option<TokenCustody>,
    state: CustodianState,
    fingerprint: String,
    /// The newest head this process verified or wrote (the next checkpoint).
    last: Cell<Option<Checkpoint>>,
}

impl Unlocked<'_> {
    pub(in crate::authority) fn conn(&self) -> &Store {
        &self.auth.conn
    }

    /// Append to the audit log (inside the caller's transaction, after the change it records): the
    /// entry binds every bound row the transaction changed.
    pub fn log(&self, conn: &Store, action: &str, detail: serde_json::Value) -> Result<i64, AuthorityError> {
        let cp = audit_log::append(conn, self.audit.as_ref(), action, &detail)?;
        self.last.set(Some(cp));
        Ok(cp.count)
    }

    /// Append many entries in one go (a bulk import), signing the head once: each entry names the rows
    /// it binds, as (table, id). Rows changed and named by no entry stay pending (the transaction must
    /// still log them).
    pub fn log_many(
        &self,
        conn: &Store,
        entries: impl IntoIterator<Item = (String, serde_json::Value, Vec<(&'static str, i64)>)>,
    ) -> Result<i64, AuthorityError> {
        let named = std::cell::RefCell::new(std::collections::HashSet::new());
        let items = entries.into_iter().map(|(action, detail, refs)| {
            let changed = refs
                .iter()
                .map(|(t, id)| Ok((rows::bound_index(t).ok_or_else(|| AuthorityError::NotBound(t.to_string()))?, *id)))
                .collect::<Result<Vec<_>, AuthorityError>>()?;
            named.borrow_mut().extend(changed.iter().copied());
            Ok((action, detail, rows::bind(conn, &changed)?))
        });
        let cp = audit_log::append_many(conn, self.audit.as_ref(), items)?;
        let named = named.into_inner();
        let left: Vec<_> = conn.take_changes()?.into_iter().filter(|x| !named.contains(x)).collect();
        conn.restore_changes(left)?;
        self.last.set(Some(cp));
        Ok(cp.count)
    }

    pub fn secret(&self, name: &'static str) -> Result<SecretBytes, AuthorityError> {
        self.open_secret(&self.auth.stored_secret(name)?)
    }

    /// A stored secret in clear (zeroizing buffer): unwrapped by the token's AES key when the
    /// database is in PKCS #11 custody, else decrypted with the custodian's age identity.
    pub(in crate::authority) fn open_secret(&self, stored: &[u8]) -> Result<SecretBytes, AuthorityError> {
        match &self.token {
            Some(t) => Ok(t.wrap.unwrap(stored)?),
            None => self.custodian.decrypt(stored),
        }
    }

    /// Where new secrets are sealed: the token's wrap key, or age to the custodians.
    pub(in crate::authority) fn sealer(&self) -> Result<Sealer, AuthorityError> {
        match &self.token {
            Some(t) => Ok(Sealer::Token(t.wrap.clone())),
            None => Ok(Sealer::Age(self.auth.recipients()?)),
        }
    }

    /// The token custody, if the database is in one.
    pub(in crate::authority) fn token(&self) -> Option<&TokenCustody> {
        self.token.as_ref()
    }

    /// The label and serial of the token holding the keys (`None`: age custody).
    pub fn token_info(&self) -> Option<(String, String)> {
        self.token.as_ref().map(|t| (t.token.label.clone(), t.token.serial.clone()))
    }

    /// How many PKCS #11 sessions the token custody has open and idle (0 in age custody).
    pub fn token_sessions(&self) -> usize {
        self.token.as_ref().map_or(0, |t| t.token.pool().idle())
    }

    /// The issuer's card log master: each card's log-export MAC key is derived from it and the serial.
    pub fn log_master(&self) -> Result<crate::crypto::Secret16, AuthorityError> {
        crate::crypto::Secret16::from_slice(self.secret(secret_name::LOG_MASTER)?.expose())
            .ok_or(AuthorityError::MalformedSecret(SecretRef::Named(secret_name::LOG_MASTER)))
    }

    /// Run `f` in an IMMEDIATE transaction (writers queue behind each other instead of failing). A
    /// bound row changed and not logged by the end of `f` rolls the transaction back. After the commit
    /// the custodian's checkpoint moves to the entry written.
    pub fn write<T>(&self, f: impl FnOnce(&Store) -> Result<T, AuthorityError>) -> Result<T, AuthorityError> {
        self.conn().clear_changes()?;
        let tx = self.conn().begin()?;
        let v = match f(&tx) {
            Ok(v) => v,
            Err(e) => {
                let _ = tx.clear_changes();
                return Err(e);
            }
        };
        if let Some((t, row)) = tx.first_change()? {
            let _ = tx.clear_changes();
            return Err(AuthorityError::UnloggedChange { table: rows::BOUND[t].table, row });
        }
        tx.commit()?;
        self.state.record(&self.fingerprint, self.last.get())?;
        Ok(v)
    }
}
