//! Errors as the user sees them: what went wrong and what to do about it (house rule 6, after rage's
//! `error.rs`). Library errors arrive typed and are turned into a message, a `hint:` line, a stable
//! `--json` code and an exit status here and nowhere else.
//!
//! Exit status (README "Exit status", DESIGN §9):
//! - [`EXIT_CHECK`] (1): a check said no (invalid chain, stranded cards, failed rollout check,
//!   tampered log, revoked card);
//! - [`EXIT_INPUT`] (2): bad input, usage or environment (missing file, wrong identity, no reader);
//! - [`EXIT_INTERNAL`] (70, `EX_SOFTWARE` of BSD `sysexits.h`): a fault inside keyroll, which is a bug.

use crate::authority::AuthorityError;
use crate::authority::pkcs11::{self, TokenError};
use crate::authority::reconciliations::ResolveRefusal;
use crate::authority::store::{ConnectFailure, StoreError};
use crate::card::CardError;
use crate::card::storage::StorageError;
use crate::perso::PersoError;
use crate::terminal::SettleError;
use std::fmt;
use std::path::PathBuf;

/// A check said no.
pub const EXIT_CHECK: i32 = 1;
/// Bad input, usage or environment.
pub const EXIT_INPUT: i32 = 2;
/// A fault inside keyroll: a bug (BSD `EX_SOFTWARE`).
pub const EXIT_INTERNAL: i32 = 70;

/// Where a bug report goes.
const REPORT: &str = "this is a bug in keyroll: please report it with the command you ran and this message";

#[derive(Debug)]
pub enum CliError {
    /// Bad input, usage or environment: exit 2.
    Input {
        what: String,
        hint: String,
    },
    /// A check said no: exit 1 (the report was already printed).
    CheckFailed {
        what: String,
        hint: String,
    },
    /// Something keyroll itself got wrong: exit 70.
    Internal {
        what: String,
    },
    /// A card file that cannot be opened or used.
    CardFile {
        path: PathBuf,
        source: CardError,
    },
    Settle(SettleError),
    Authority(AuthorityError),
    Perso(PersoError),
}

/// The three classes of failure, each with its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Check,
    Input,
    Internal,
}

impl CliError {
    pub fn input(what: impl Into<String>, hint: impl Into<String>) -> Self {
        CliError::Input { what: what.into(), hint: hint.into() }
    }

    pub fn check(what: impl Into<String>, hint: impl Into<String>) -> Self {
        CliError::CheckFailed { what: what.into(), hint: hint.into() }
    }

    pub fn internal(what: impl Into<String>) -> Self {
        CliError::Internal { what: what.into() }
    }

    pub fn exit_code(&self) -> i32 {
        match self.classify().0 {
            Class::Check => EXIT_CHECK,
            Class::Input => EXIT_INPUT,
            Class::Internal => EXIT_INTERNAL,
        }
    }

    /// A stable code for `--json` error output.
    pub fn code(&self) -> &'static str {
        match self {
            CliError::Input { .. } => "bad-input",
            CliError::CheckFailed { .. } => "check-failed",
            CliError::Internal { .. } => "internal",
            CliError::CardFile { source: CardError::Storage(StorageError::InUse(_)), .. } => "card-in-use",
            CliError::CardFile { .. } => "card-file",
            CliError::Settle(e) => match e.cause() {
                SettleError::Transport { .. } => "card-communication",
                SettleError::Stranded { .. } => "stranded",
                SettleError::Blocked { .. } => "blocked",
                SettleError::NoPath { .. } => "no-key-roll-path",
                SettleError::SameCard(_) => "same-card",
                _ => "settlement-refused",
            },
            CliError::Authority(e) => authority_code(e),
            CliError::Perso(PersoError::BackOffice { source, .. }) => authority_code(source),
            CliError::Perso(PersoError::AlreadyIssued(_)) => "card-issued",
            CliError::Perso(PersoError::Transport { .. }) => "card-communication",
            CliError::Perso(e) if e.refusal_code().is_some() => "impostor-refused",
            CliError::Perso(_) => "personalisation",
        }
    }

    /// The class of the failure and what to do about it.
    pub fn classify(&self) -> (Class, String) {
        use Class::*;
        let s = |x: &str| x.to_string();
        match self {
            CliError::Input { hint, .. } => (Input, hint.clone()),
            CliError::CheckFailed { hint, .. } => (Check, hint.clone()),
            CliError::Internal { .. } => (Internal, s(REPORT)),
            CliError::CardFile { source, .. } => match source {
                CardError::Storage(StorageError::InUse(_)) => (
                    Input,
                    s("another keyroll process (`card serve`, `settle`) holds this card: wait for it, or stop it"),
                ),
                CardError::Storage(StorageError::Io(_)) => (
                    Input,
                    s("check the path and its permissions; card files are written by `keyroll perso --out-dir`"),
                ),
                CardError::Storage(StorageError::PowerCut) => (Internal, s(REPORT)),
                CardError::State(crate::card::state::StateError::Version1) => (
                    Input,
                    s(
                        "make a version 2 card: a blank with `keyroll fab blank`, issued cards with `keyroll perso --out-dir`",
                    ),
                ),
                CardError::State(_) => {
                    (Input, s("this is not a keyroll card file (`keyroll perso --out-dir DIR` writes them)"))
                }
            },
            // What stopped the settlement decides; the changes made before are in the message.
            CliError::Settle(e) => match e.cause() {
                SettleError::Transport { .. } => (
                    Input,
                    s(
                        "put the card back and run the same settle again: interrupted transfers are refunded or completed first",
                    ),
                ),
                SettleError::NotIssued { .. } => (Input, s("finish the card with `keyroll perso` before using it")),
                SettleError::Stranded { .. } => (
                    Check,
                    s("this card's batch limit is below the newer key; replace the card (see `keyroll rollout plan`)"),
                ),
                SettleError::Blocked { .. } => {
                    (Check, s("the issuer blocked one of these cards (see `keyroll policy show`); withdraw it"))
                }
                SettleError::NoPath { .. } => (
                    Check,
                    s(
                        "these two cards cannot roll keys directly; settle each with a card that bridges them (see `keyroll rollout verify`)",
                    ),
                ),
                SettleError::SameCard(_) => (Input, s("name two different cards with --payer and --payee")),
                SettleError::InsufficientBalance { .. } => (Input, s("pass a smaller --amount")),
                SettleError::MaximumBalance { .. } => (Input, s("pass a smaller --amount, or pay another card")),
                SettleError::Journal(_) => (
                    Input,
                    s(
                        "the journal must be one that `settle --journal` wrote, unedited; start a new file for a new chain",
                    ),
                ),
                // `cause()` never returns the wrapper.
                SettleError::AfterChanges { .. } => (Internal, s(REPORT)),
                SettleError::Refused { .. } | SettleError::Malformed { .. } => (
                    Check,
                    s(
                        "the card refused the protocol: check it is a keyroll card of this issuer (`keyroll card show`, `keyroll readers`)",
                    ),
                ),
            },
            CliError::Authority(e) => authority(e),
            CliError::Perso(e) => match e {
                PersoError::Transport { .. } => {
                    (Input, s("put the card back and run the same command again; finished cards are kept"))
                }
                PersoError::AlreadyIssued(_) => (Input, s("this card is already personalised; insert a blank card")),
                PersoError::WrongCard { .. } => (Input, s("insert the card this run reserved, or a blank card")),
                PersoError::Refused { .. } | PersoError::Malformed { .. } => {
                    (Check, s("the card refused personalisation: it may not be a blank keyroll card; insert another"))
                }
                PersoError::BadPlan(..) | PersoError::Certificate { .. } => (Internal, s(REPORT)),
                // The back office failed, not the card: its own class and hint.
                PersoError::BackOffice { source, .. } => authority(source),
                PersoError::Factory(_)
                | PersoError::NoFactoryCredentials(_)
                | PersoError::KeyAgreement(_)
                | PersoError::Attestation { .. } => (
                    Check,
                    s(
                        "the card is not a genuine blank of a trusted manufacturer: nothing was sent to it and the refusal is in the audit log; set it aside (`keyroll fab list` shows the trusted manufacturers)",
                    ),
                ),
                PersoError::Unproven { .. } => (
                    Check,
                    s(
                        "this card claims a serial of this run but is not the chip personalised under it (a clone or an emulation): set it aside; the refusal is in the audit log",
                    ),
                ),
                PersoError::ChipRefused { .. } => (
                    Check,
                    s(
                        "this chip already has its one serial (or its card is issued): set the card aside; the refusal is in the audit log",
                    ),
                ),
                PersoError::SecureMessaging { .. } => (
                    Check,
                    s(
                        "the card's secure-messaging answer did not verify: the card or the line is faulty or tampered with; set the card aside and run the same command again with another",
                    ),
                ),
            },
        }
    }
}

fn authority(e: &AuthorityError) -> (Class, String) {
    use Class::*;
    let s = |x: &str| x.to_string();
    match e {
        AuthorityError::AlreadyExists(_) => {
            (Input, s("choose another --db path; an existing database is never overwritten"))
        }
        AuthorityError::NoDatabase(_) => (Input, s("create one with `keyroll init --issuer NAME`, or pass --db FILE")),
        AuthorityError::Corrupt { .. } => (Input, s("restore the database from a backup; keyroll did not change it")),
        AuthorityError::NotKeyroll(_) => (Input, s("pass --db with a database `keyroll init` created")),
        AuthorityError::Unfinished { postgres: true, .. } => {
            (Input, s("run `keyroll init` on it again: it holds no issuer, and init completes it in one transaction"))
        }
        AuthorityError::Unfinished { postgres: false, .. } => {
            (Input, s("it holds no issuer: remove the file and run `keyroll init` again"))
        }
        AuthorityError::MissingSecret(_) | AuthorityError::MalformedSecret(_) => {
            (Check, s("the database's secrets were changed outside keyroll: restore the database from a backup"))
        }
        AuthorityError::NewerSchema { .. } => (Input, s("use the newer keyroll that wrote this database")),
        AuthorityError::Version1Database { .. } => (
            Input,
            s(
                "create a version 2 issuer with `keyroll init --issuer NAME --db NEW.db`; keyroll did not change this one",
            ),
        ),
        AuthorityError::BadManufacturer(_) => (
            Input,
            s(
                "pass the root.pem that `keyroll fab init` (or the manufacturer) wrote: a self-signed P-256 CA certificate",
            ),
        ),
        AuthorityError::ManufacturerExists { .. } => {
            (Input, s("nothing to do: `keyroll fab list` shows the manufacturers already trusted"))
        }
        AuthorityError::ChipIssued { .. }
        | AuthorityError::ChipHasSerial { .. }
        | AuthorityError::ChipNotRegistered { .. }
        | AuthorityError::SerialHasChip { .. } => (
            Check,
            s(
                "a chip id gets exactly one serial, ever: set this card aside (the card register keeps chip id and serial)",
            ),
        ),
        AuthorityError::Sqlite(err) => sqlite(err),
        AuthorityError::Store(err) => store(err),
        AuthorityError::NotEmpty { .. } => (
            Input,
            s(
                "keyroll init needs an empty PostgreSQL database: create one (`createdb NAME`) and pass its URL with --db",
            ),
        ),
        AuthorityError::BadRecipient(_) => {
            (Input, s("pass a custodian's age X25519 recipient, as `age-keygen -y IDENTITY_FILE` prints it"))
        }
        AuthorityError::Identity { .. } => (
            Input,
            s(
                "pass the age identity file `keyroll init` wrote (a line starting AGE-SECRET-KEY-1), with --identity or KEYROLL_IDENTITY",
            ),
        ),
        AuthorityError::WrongIdentity(_) => {
            (Input, s("use the identity file written by `keyroll init` or a custodian's"))
        }
        AuthorityError::IdentityRequired => {
            (Input, s("pass --identity FILE (or set KEYROLL_IDENTITY) with a custodian's age identity"))
        }
        AuthorityError::Crypto(crate::crypto::CryptoError::Device(_)) => (
            Input,
            s(
                "check the PKCS #11 token is present and logged in (`pkcs11-tool --module LIB --list-objects --login`), then run the command again",
            ),
        ),
        AuthorityError::Custody(_) | AuthorityError::Crypto(_) => (Internal, s(REPORT)),
        AuthorityError::Token(t) => token(t),
        AuthorityError::Io { .. } => (Input, s("check the path exists and is writable")),
        AuthorityError::StateFile { .. } => (
            Input,
            s(
                "the custodian state file beside the identity is damaged: restore it, or move it away and pass --expect-key FINGERPRINT",
            ),
        ),
        AuthorityError::NoSuchKey { .. } => (Input, s("list keys with `keyroll key list`")),
        AuthorityError::KeyState { .. } => (
            Input,
            s(
                "`keyroll key list` shows each key's state: only a pending key can be activated, only an active one retired",
            ),
        ),
        AuthorityError::KeyInUse { .. } => (
            Input,
            s("finish or retire the batches first, or activate a newer key; --force retires it anyway (logged)"),
        ),
        AuthorityError::RetiredKey { .. } => {
            (Input, s("create a new batch (`keyroll batch new`): it takes the newest active keys"))
        }
        AuthorityError::NoActiveKey(_) => (Input, s("create one with `keyroll key new KIND` or activate one")),
        AuthorityError::NoSuchBatch(_) => (Input, s("list batches with `keyroll batch list`")),
        AuthorityError::BatchExists(_) => {
            (Input, s("batch names are never reused: choose another name (`keyroll batch list` shows the taken ones)"))
        }
        AuthorityError::LimitBelowNewest { newest, .. } => {
            (Input, format!("pass --transfer-key-limit {newest} or more"))
        }
        AuthorityError::BadBatch(_) => (Input, s("see `keyroll batch new --help`")),
        AuthorityError::BadName { .. } => (Input, s("use printable characters only, within the length limit")),
        AuthorityError::NoCertificate(_) => {
            (Input, s("`keyroll cert list` shows certificate serials and card serials"))
        }
        AuthorityError::Ca(e) if e.is_signer_failure() => (
            Input,
            s(
                "check the PKCS #11 token is present and holds the CA key (`pkcs11-tool --module LIB --list-objects --login`), then run the command again: a personalisation run resumes",
            ),
        ),
        AuthorityError::Ca(_) => (Internal, s(REPORT)),
        AuthorityError::Tampered(_) | AuthorityError::BadRow { .. } => (
            Check,
            s(
                "the database was changed outside keyroll: nothing was used or changed; see `keyroll audit log`, restore a backup",
            ),
        ),
        AuthorityError::PinRequired { .. } => (
            Input,
            s(
                "pass --expect-key FINGERPRINT with the audit key fingerprint `keyroll init` printed (from the issuer, not from this database); it is remembered after the first success",
            ),
        ),
        AuthorityError::NotBound(_) | AuthorityError::UnloggedChange { .. } => (Internal, s(REPORT)),
        AuthorityError::SigningTime(_) => (
            Input,
            s(
                "set this machine's clock right (the scheme key never signs a time earlier than its last signature or ahead of the clock)",
            ),
        ),
        AuthorityError::PolicyFull { .. } => (
            Input,
            s(
                "a new generation is needed: create and activate a new transfer key, personalise new batches with it, retire the old key, then `keyroll policy publish` prunes the dead generation's entries",
            ),
        ),
        AuthorityError::NoSuchCard(_) => (Input, s("list cards with `keyroll rollout status` or `keyroll cert list`")),
        AuthorityError::Resolve(r) => resolve_refusal(r),
    }
}

/// Exit class and hint of a refused issuer resolution (`policy resolve`).
fn resolve_refusal(r: &ResolveRefusal) -> (Class, String) {
    use Class::*;
    const RECONCILE: &str = "run `keyroll reconcile --cards DIR` over the payer's and the payee's card files first";
    const LOST: &str = "if a card is lost for good, add `--against-reconciliation none --reason TEXT` (logged)";
    match r {
        ResolveRefusal::NoReconciliation { .. } => {
            (Input, format!("{RECONCILE}, then run the `keyroll policy resolve` lines it prints; {LOST}"))
        }
        ResolveRefusal::NotShown { .. } => (
            Input,
            format!(
                "the cards moved since, or were not read: {RECONCILE}; it prints the resolutions it can prove safe. {LOST}"
            ),
        ),
        ResolveRefusal::FieldsDiffer { .. } => {
            (Input, "copy the fields from the `keyroll policy resolve` line `keyroll reconcile` prints".into())
        }
        ResolveRefusal::WouldCreateValue { .. } => {
            (Check, "the payee has the value: resolve it with --credited instead (nothing goes back)".into())
        }
        ResolveRefusal::WouldDestroyValue { .. } => {
            (Check, "the value never arrived: resolve it with --refund instead".into())
        }
        ResolveRefusal::StillOpen { payer, payee, .. } => (
            Check,
            format!(
                "settle the two cards with each other (`keyroll settle --payer CARD --payee CARD --amount 0`, payer {payer}, payee {payee}): the terminal resolves the debit; if they cannot meet, resolve it with --void first (the payee closes the receipt) and refund once `keyroll reconcile` shows it closed"
            ),
        ),
        ResolveRefusal::NothingToVoid { .. } => {
            (Check, "the payee has the value: resolve it with --credited instead (nothing goes back)".into())
        }
        ResolveRefusal::Unproven { .. } => (
            Check,
            format!("bring the payee's card file to `keyroll reconcile --cards DIR` and reconcile again; {LOST}"),
        ),
        ResolveRefusal::BadReason => {
            (Input, "give a reason of 1 to 500 printable characters, e.g. --reason \"payee card destroyed\"".into())
        }
    }
}

/// The `code` of a PKCS #11 custody failure.
fn token_code(e: &TokenError) -> &'static str {
    match e {
        TokenError::Module { .. } => "pkcs11-module",
        TokenError::NoToken { .. } | TokenError::AmbiguousToken { .. } | TokenError::OtherToken { .. } => {
            "pkcs11-token"
        }
        TokenError::NoPin | TokenError::WrongPin { .. } | TokenError::PinLocked { .. } => "pkcs11-pin",
        TokenError::KeyMissing { .. } | TokenError::KeyMismatch { .. } => "pkcs11-key",
        TokenError::Mechanism { .. } | TokenError::NotWrapped | TokenError::Failed { .. } => "token",
    }
}

/// PKCS #11 custody failures: all from the token or its setup (exit 2), none changed anything.
fn token(e: &TokenError) -> (Class, String) {
    use Class::*;
    let s = |x: &str| x.to_string();
    match e {
        TokenError::Module { .. } => (
            Input,
            format!(
                "pass the token's PKCS #11 library with --pkcs11-module (init) or {} (e.g. /usr/lib/softhsm/libsofthsm2.so)",
                pkcs11::MODULE_ENV
            ),
        ),
        TokenError::NoToken { .. } => {
            (Input, s("check the token is inserted and its label (`pkcs11-tool --module LIB --list-token-slots`)"))
        }
        TokenError::AmbiguousToken { .. } => (Input, s("give each token a distinct label")),
        TokenError::OtherToken { .. } => (
            Input,
            s("insert the token this database was created with (its serial is in `keyroll audit log`'s init entry)"),
        ),
        TokenError::NoPin => (
            Input,
            format!("export {}=… (the token's user PIN); keyroll never takes it as an argument", pkcs11::PIN_ENV),
        ),
        TokenError::WrongPin { .. } => {
            (Input, format!("set {} to the token's user PIN; the token counts failed attempts", pkcs11::PIN_ENV))
        }
        TokenError::PinLocked { .. } => (Input, s("the token's security officer must unlock the user PIN")),
        TokenError::KeyMissing { .. } => (
            Input,
            s(
                "the key was removed from the token or this is another token: restore the token from its backup; nothing was changed",
            ),
        ),
        TokenError::KeyMismatch { .. } => (
            Check,
            s("the token's key is not the one the database recorded: use the token this database was created with"),
        ),
        TokenError::Mechanism { .. } => {
            (Input, s("use a token offering CKM_EC_KEY_PAIR_GEN, CKM_ECDSA and CKM_AES_KEY_WRAP_PAD"))
        }
        TokenError::NotWrapped => {
            (Check, s("the database's secrets were changed outside keyroll: restore the database from a backup"))
        }
        TokenError::Failed { .. } => (
            Input,
            s(
                "check the PKCS #11 token is present and logged in (`pkcs11-tool --module LIB --list-objects --login`), then run the command again",
            ),
        ),
    }
}

/// SQLite failures from the environment (a path that is not a database, a locked or read-only
/// file, a full disk) are the user's to fix; anything else is keyroll's fault.
fn sqlite(err: &rusqlite::Error) -> (Class, String) {
    use rusqlite::ErrorCode::*;
    let code = match err {
        rusqlite::Error::SqliteFailure(e, _) => Some(e.code),
        _ => None,
    };
    match code {
        Some(CannotOpen | PermissionDenied | ReadOnly) => (
            Class::Input,
            "--db must name a database file in a directory you can write (create one with `keyroll init --issuer NAME`)"
                .into(),
        ),
        Some(NotADatabase) => {
            (Class::Input, "--db names a file that is not a keyroll database; check the path".into())
        }
        Some(DatabaseBusy | DatabaseLocked) => {
            (Class::Input, "another process holds the database; wait for it and run the command again".into())
        }
        Some(DiskFull | SystemIoFailure) => (Class::Input, "check the disk the database is on".into()),
        _ => (Class::Internal, REPORT.into()),
    }
}

/// PostgreSQL and store failures: a server that cannot be reached, refused credentials, a missing
/// database or missing rights are the user's to fix; anything else is keyroll's fault.
fn store(err: &StoreError) -> (Class, String) {
    let s = |x: &str| x.to_string();
    match err {
        StoreError::Connect { kind, .. } => (
            Class::Input,
            match kind {
                ConnectFailure::Unreachable => s(
                    "check the host, port or socket directory in the --db URL and that the PostgreSQL server is running (`pg_isready -h HOST -p PORT`)",
                ),
                ConnectFailure::Authentication => {
                    s("check the user name and password in the --db URL (postgres://USER:PASSWORD@HOST/DATABASE)")
                }
                ConnectFailure::NoDatabase => {
                    s("create the database first (`createdb NAME`) or fix its name in the --db URL")
                }
                ConnectFailure::BadUrl => s(
                    "write the URL as postgres://USER:PASSWORD@HOST:PORT/DATABASE[?sslmode=disable|prefer|require|verify-ca|verify-full&sslrootcert=FILE]",
                ),
                ConnectFailure::Tls => s(
                    "check TLS: sslmode=require needs a server with ssl = on; verify-ca and verify-full need the CA that signed the server's certificate (sslrootcert=FILE in the URL, or PGSSLROOTCERT), and verify-full a host name in the URL that the certificate names",
                ),
                ConnectFailure::Other => s("check the --db URL and the server's log"),
            },
        ),
        StoreError::Postgres(e)
            if e.is_closed()
                || e.code().is_some_and(|c| {
                    c.code().starts_with("08") || c.code().starts_with("57P") // connection lost, server stopping
                }) =>
        {
            (Class::Input, s("the connection to the PostgreSQL server was lost; run the command again"))
        }
        StoreError::Postgres(e) if e.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => (
            Class::Input,
            s(
                "the database role lacks a right this command needs: see \"PostgreSQL\" in the README for the rights per command",
            ),
        ),
        StoreError::Type { .. } | StoreError::OutOfRange { .. } | StoreError::UnsupportedType { .. } => {
            (Class::Check, s("the database's schema was changed outside keyroll: restore it from a backup"))
        }
        _ => (Class::Internal, REPORT.into()),
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (class, hint) = self.classify();
        if class == Class::Internal {
            write!(f, "internal error: ")?;
        }
        match self {
            CliError::Input { what, .. } | CliError::CheckFailed { what, .. } | CliError::Internal { what } => {
                write!(f, "{what}")?
            }
            CliError::CardFile { path, source } => match source {
                CardError::Storage(StorageError::InUse(_)) => {
                    write!(f, "card file {} is in use by another keyroll process", path.display())?
                }
                _ => write!(f, "cannot use card file {}: {source}", path.display())?,
            },
            CliError::Settle(e) => write!(f, "settlement failed: {e}")?,
            CliError::Authority(e) => write!(f, "{e}")?,
            CliError::Perso(e) => write!(f, "personalisation failed: {e}")?,
        }
        write!(f, "\nhint: {hint}")
    }
}

impl CliError {
    /// The message without its hint (for `--json`).
    pub fn message(&self) -> String {
        let full = self.to_string();
        match full.rfind("\nhint: ") {
            Some(i) => full[..i].to_string(),
            None => full,
        }
    }

    pub fn hint(&self) -> String {
        self.classify().1
    }

    /// The `--json` error object: `code`, `message`, `hint`, and the structured data a script needs
    /// besides them. A settlement that changed the cards before it failed adds `changes` (`key_roll`,
    /// `recovered`: what stays on the cards; issue 14 item 11), the same facts the message says in words.
    pub fn json_object(&self) -> serde_json::Value {
        let mut o = serde_json::json!({ "code": self.code(), "message": self.message(), "hint": self.hint() });
        if let CliError::Settle(SettleError::AfterChanges { changes, .. }) = self {
            // Plain data (ids, serials, amounts, names): serialising it cannot fail.
            o["changes"] = serde_json::to_value(changes).unwrap_or(serde_json::Value::Null);
        }
        o
    }
}

impl From<SettleError> for CliError {
    fn from(e: SettleError) -> Self {
        CliError::Settle(e)
    }
}

/// The `--json` code of an authority error, also when personalisation wraps it.
fn authority_code(e: &AuthorityError) -> &'static str {
    match e {
        AuthorityError::WrongIdentity(_) | AuthorityError::IdentityRequired | AuthorityError::Identity { .. } => {
            "identity"
        }
        AuthorityError::Ca(e) if e.is_signer_failure() => "token",
        AuthorityError::NoDatabase(_)
        | AuthorityError::Unfinished { .. }
        | AuthorityError::Corrupt { .. }
        | AuthorityError::NewerSchema { .. }
        | AuthorityError::Version1Database { .. } => "database",
        AuthorityError::BadManufacturer(_) => "bad-manufacturer",
        AuthorityError::ManufacturerExists { .. } => "manufacturer-exists",
        AuthorityError::ChipIssued { .. }
        | AuthorityError::ChipHasSerial { .. }
        | AuthorityError::ChipNotRegistered { .. }
        | AuthorityError::SerialHasChip { .. } => "chip-refused",
        AuthorityError::Tampered(_) | AuthorityError::BadRow { .. } => "tampered",
        AuthorityError::PinRequired { .. } => "pin-required",
        AuthorityError::KeyInUse { .. } => "key-in-use",
        AuthorityError::RetiredKey { .. } => "retired-key",
        AuthorityError::Sqlite(_) | AuthorityError::Store(_) | AuthorityError::NotEmpty { .. } => "database",
        AuthorityError::AlreadyExists(_) => "exists",
        AuthorityError::BatchExists(_) => "batch-exists",
        AuthorityError::NoSuchBatch(_) => "no-such-batch",
        AuthorityError::NoSuchKey { .. } => "no-such-key",
        AuthorityError::KeyState { .. } => "key-state",
        AuthorityError::NoCertificate(_) => "no-such-certificate",
        AuthorityError::PolicyFull { .. } => "policy-full",
        AuthorityError::NoSuchCard(_) => "no-such-card",
        AuthorityError::Resolve(_) => "resolution-refused",
        AuthorityError::SigningTime(_) => "signing-time",
        AuthorityError::Token(t) => token_code(t),
        AuthorityError::Crypto(crate::crypto::CryptoError::Device(_)) => "token",
        _ if authority(e).0 == Class::Internal => "internal",
        _ => "authority",
    }
}

impl From<AuthorityError> for CliError {
    fn from(e: AuthorityError) -> Self {
        CliError::Authority(e)
    }
}

impl From<PersoError> for CliError {
    fn from(e: PersoError) -> Self {
        CliError::Perso(e)
    }
}

impl From<crate::perso::batch::BatchError> for CliError {
    fn from(e: crate::perso::batch::BatchError) -> Self {
        use crate::perso::batch::BatchError;
        match e {
            BatchError::Authority(e) => e.into(),
            BatchError::Perso(e) => e.into(),
            e @ (BatchError::Folder { .. } | BatchError::Write { .. }) => {
                CliError::input(e.to_string(), "pass an --out-dir you can write")
            }
            BatchError::Card(e) => CliError::internal(format!("reference card: {e}")),
            BatchError::Fab(e) => CliError::internal(format!("virtual manufacturer: {e}")),
        }
    }
}

#[cfg(feature = "pcsc")]
impl From<crate::perso::line::LineError> for CliError {
    fn from(e: crate::perso::line::LineError) -> Self {
        use crate::perso::line::LineError;
        match e {
            LineError::Authority(e) => e.into(),
            LineError::Perso(e) => e.into(),
            e @ LineError::Reader { .. } => CliError::input(e.to_string(), "list readers with `keyroll readers`"),
            e @ LineError::NoCard { .. } => {
                CliError::input(e.to_string(), "insert a card, then run the same command again")
            }
        }
    }
}

impl From<crate::rollout::RolloutError> for CliError {
    fn from(e: crate::rollout::RolloutError) -> Self {
        use crate::rollout::RolloutError;
        match e {
            RolloutError::Authority(e) => e.into(),
            RolloutError::Perso(e) => e.into(),
            e @ (RolloutError::Folder { .. } | RolloutError::ReadCard { .. }) => {
                CliError::input(e.to_string(), "pass the folder `keyroll perso --out-dir` wrote")
            }
            e @ RolloutError::NotACard { .. } => {
                CliError::input(e.to_string(), "the folder may hold only keyroll card files (*.card)")
            }
            RolloutError::VirtualCard(e) => CliError::internal(format!("virtual reference card: {e}")),
        }
    }
}

impl From<crate::demo::DemoError> for CliError {
    fn from(e: crate::demo::DemoError) -> Self {
        use crate::demo::DemoError;
        match e {
            DemoError::Authority(e) => e.into(),
            DemoError::Batch(e) => e.into(),
            DemoError::Rollout(e) => e.into(),
            DemoError::Settle(e) => e.into(),
            DemoError::CardFile { path, source } => CliError::CardFile { path, source },
            e @ DemoError::Io { .. } => CliError::input(e.to_string(), "pass a --dir you can write"),
            DemoError::Pcsc(what) => CliError::input(
                what,
                "start pcscd with vsmartcard-vpcd (readers \"Virtual PCD 00 00\" and \"00 01\", no card in them); `keyroll readers` lists what pcscd sees",
            ),
            e @ DemoError::Story(_) => CliError::internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_fault_says_it_is_a_bug_and_exits_70() {
        let e = CliError::internal("a reference card that does not open");
        assert_eq!(e.exit_code(), EXIT_INTERNAL);
        assert_eq!(e.code(), "internal");
        let text = e.to_string();
        assert!(text.starts_with("internal error: "), "{text}");
        assert!(
            text.ends_with(
                "\nhint: this is a bug in keyroll: please report it with the command you ran and this message"
            )
        );
    }

    #[test]
    fn the_three_classes_have_three_exit_codes() {
        assert_eq!(CliError::input("x", "y").exit_code(), EXIT_INPUT);
        assert_eq!(CliError::check("x", "y").exit_code(), EXIT_CHECK);
        // An SQLite failure that is not the environment's (here: a constraint) is keyroll's fault.
        let constraint = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error { code: rusqlite::ErrorCode::ConstraintViolation, extended_code: 19 },
            None,
        );
        assert_eq!(CliError::Authority(AuthorityError::Sqlite(constraint)).exit_code(), EXIT_INTERNAL);
        let cannot_open = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error { code: rusqlite::ErrorCode::CannotOpen, extended_code: 14 },
            None,
        );
        assert_eq!(CliError::Authority(AuthorityError::Sqlite(cannot_open)).exit_code(), EXIT_INPUT);
        assert_eq!(
            CliError::Authority(AuthorityError::Tampered(crate::authority::Tamper::Custodians)).exit_code(),
            EXIT_CHECK
        );
    }

    #[test]
    fn every_error_ends_with_a_hint() {
        for e in [
            CliError::input("x", "do y"),
            CliError::check("x", "do y"),
            CliError::internal("x"),
            CliError::Authority(AuthorityError::BatchExists("a".into())),
            CliError::Authority(AuthorityError::IdentityRequired),
        ] {
            let text = e.to_string();
            assert!(text.lines().last().is_some_and(|l| l.starts_with("hint: ") && l.len() > 8), "{text}");
            assert!(!e.message().contains("hint:"), "{}", e.message());
        }
    }
}
