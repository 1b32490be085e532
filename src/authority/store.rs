//! The store seam (DESIGN.md §11): the one type through which the back office reaches its database,
//! with two engines behind it, SQLite (rusqlite, the embedded default) and PostgreSQL (the synchronous
//! `postgres` client, for several sites sharing one issuer).
//!
//! Every statement is written once, in the common dialect of both engines, with `?N` placeholders
//! (rewritten to `$N` for PostgreSQL) and five kinds of value ([`Value`], SQLite's storage classes).
//! Rows come back as owned [`Row`]s whatever the engine, so the canonical row encoding of
//! [`super::rows`] is the same on both and a database copied from one engine to the other keeps its
//! audit log valid.
//!
//! Writers: [`Store::begin`] opens the one write transaction a process runs at a time. On SQLite it is
//! `BEGIN IMMEDIATE` (the file's write lock, waited for). On PostgreSQL it is `BEGIN` (READ COMMITTED)
//! followed by a transaction-scoped advisory lock ([`WRITER_LOCK`]): every change is recorded by the
//! next entry of the one hash-chained audit log, so all writers conflict on the log's head anyway;
//! queueing them on a lock (like SQLite) costs nothing a serializable retry would not cost twice (a
//! retried transaction redoes its age encryption and ECDSA signature), and no "could not serialize"
//! error can reach a user. Inside the lock each statement reads what earlier writers committed, so
//! serials taken from `max(id) + 1` cannot collide.
//!
//! Changes to bound tables ([`super::rows::BOUND`]) are noticed by the engine itself, so no writer has
//! to remember them: SQLite's update hook; on PostgreSQL a row trigger on each bound table that appends
//! `table:id` to a transaction-local setting (`keyroll.changes`), read back by [`Store::take_changes`].

mod tls;

use super::rows;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// A value as both engines store it (SQLite's storage classes; PostgreSQL's BIGINT, DOUBLE PRECISION,
/// TEXT and BYTEA, with BOOLEAN read as 0/1).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    /// The storage class's name, for messages.
    pub fn class(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Integer(_) => "INTEGER",
            Value::Real(_) => "REAL",
            Value::Text(_) => "TEXT",
            Value::Blob(_) => "BLOB",
        }
    }
}

/// Errors of the store seam.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {}", pg_message(.0))]
    Postgres(postgres::Error),
    #[error("cannot connect to {shown}: {why}")]
    Connect { shown: String, why: String, kind: ConnectFailure },
    #[error("the query returned no rows")]
    NoRows,
    #[error("column {column} holds {found}, not {wanted}")]
    Type { column: String, found: &'static str, wanted: &'static str },
    #[error("column {column} is out of range ({value})")]
    OutOfRange { column: String, value: i64 },
    #[error("column {column} has PostgreSQL type {ty}, which keyroll does not read")]
    UnsupportedType { column: String, ty: String },
}

/// Why a connection to a PostgreSQL server failed (each has its own hint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// No server answered (host, port or socket wrong, server down, timeout).
    Unreachable,
    /// The server refused the role or password.
    Authentication,
    /// The server has no such database.
    NoDatabase,
    /// The URL does not parse.
    BadUrl,
    /// TLS was asked for and failed: the server offers none, its certificate does not chain to the
    /// given root or does not name the host, or the root file is unusable.
    Tls,
    Other,
}

fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

/// A Rust value that can be bound to a placeholder.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, |v| v.to_value())
    }
}
impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Integer(*self as i64)
            }
        }
    )*};
}
int_to_value!(i64, i32, u32, u16, u8, bool);
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl<const N: usize> ToValue for [u8; N] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

/// Parameters of a statement: `params![a, b]`, an array of one type, or a `Vec<Value>`.
pub trait Params {
    fn values(self) -> Vec<Value>;
}
impl Params for Vec<Value> {
    fn values(self) -> Vec<Value> {
        self
    }
}
impl<T: ToValue, const N: usize> Params for [T; N] {
    fn values(self) -> Vec<Value> {
        self.iter().map(ToValue::to_value).collect()
    }
}
impl Params for &[Value] {
    fn values(self) -> Vec<Value> {
        self.to_vec()
    }
}

/// Statement parameters of mixed types, like rusqlite's `params!`.
macro_rules! params {
    () => { Vec::<$crate::authority::store::Value>::new() };
    ($($x:expr),+ $(,)?) => { vec![$($crate::authority::store::ToValue::to_value(&$x)),+] };
}
pub(crate) use params;

/// A Rust value a column can be read as.
pub trait FromValue: Sized {
    fn from_value(v: &Value, column: &str) -> Result<Self, StoreError>;
}

fn wrong(column: &str, v: &Value, wanted: &'static str) -> StoreError {
    StoreError::Type { column: column.to_string(), found: v.class(), wanted }
}

impl FromValue for i64 {
    fn from_value(v: &Value, column: &str) -> Result<Self, StoreError> {
        match v {
            Value::Integer(i) => Ok(*i),
            _ => Err(wrong(column, v, "INTEGER")),
        }
    }
}
macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value, column: &str) -> Result<Self, StoreError> {
                let i = i64::from_value(v, column)?;
                <$t>::try_from(i).map_err(|_| StoreError::OutOfRange { column: column.to_string(), value: i })
            }
        }
    )*};
}
int_from_value!(i32, u32, u64, u16, u8, usize);
impl FromValue for bool {
    fn from_value(v: &Value, column: &str) -> Result<Self, StoreError> {
        Ok(i64::from_value(v, column)? != 0)
    }
}
impl FromValue for String {
    fn from_value(v: &Value, column: &str) -> Result<Self, StoreError> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            _ => Err(wrong(column, v, "TEXT")),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value, column: &str) -> Result<Self, StoreError> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            _ => Err(wrong(column, v, "BLOB")),
        }
    }
}
impl FromValue for Value {
    fn from_value(v: &Value, _: &str) -> Result<Self, StoreError> {
        Ok(v.clone())
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value, column: &str) -> Result<Self, StoreError> {
        match v {
            Value::Null => Ok(None),
            _ => T::from_value(v, column).map(Some),
        }
    }
}

/// A column index (only `usize`, so a literal `0` needs no suffix).
pub trait RowIndex {
    fn index(self) -> usize;
}
impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One row of a result, owned: column names and values.
#[derive(Clone, Debug)]
pub struct Row {
    names: std::rc::Rc<[String]>,
    values: Vec<Value>,
}

impl Row {
    /// Column `i` as `T` (the first type parameter is the index type, as in rusqlite).
    pub fn get<I: RowIndex, T: FromValue>(&self, i: I) -> Result<T, StoreError> {
        let i = i.index();
        T::from_value(self.get_ref(i)?, self.column_name(i))
    }

    pub fn get_ref(&self, i: usize) -> Result<&Value, StoreError> {
        self.values.get(i).ok_or_else(|| StoreError::Type {
            column: format!("#{i}"),
            found: "nothing",
            wanted: "a column",
        })
    }

    pub fn column_name(&self, i: usize) -> &str {
        self.names.get(i).map_or("?", |s| s.as_str())
    }

    pub fn column_names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn values(&self) -> &[Value] {
        &self.values
    }
}

/// `query_row(…).optional()`: no row is `None`, as rusqlite's `OptionalExtension`.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>, StoreError>;
}

impl<T> OptionalExtension<T> for Result<T, StoreError> {
    fn optional(self) -> Result<Option<T>, StoreError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Which engine, and where.
#[derive(Clone)]
pub enum Location {
    File(std::path::PathBuf),
    /// A `postgres://` or `postgresql://` URL (it may carry a password: shown only via [`Location::shown`]).
    Postgres(String),
}

impl Location {
    /// A `--db` value: a PostgreSQL URL or a SQLite file path.
    pub fn parse(db: &std::path::Path) -> Location {
        let s = db.to_string_lossy();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Location::Postgres(s.into_owned())
        } else {
            Location::File(db.to_path_buf())
        }
    }

    /// For messages: the path, or the URL with any password replaced by `***`.
    pub fn shown(&self) -> String {
        match self {
            Location::File(p) => p.display().to_string(),
            Location::Postgres(url) => redact(url),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`; a `password=` query parameter too.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (auth_end, tail) = match rest.find(['/', '?']) {
        Some(i) => (i, &rest[i..]),
        None => (rest.len(), ""),
    };
    let authority = &rest[..auth_end];
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = tail
        .split('&')
        .map(|part| match part.find("password=") {
            Some(i) if i == 0 || part[..i].ends_with('?') => format!("{}password=***", &part[..i]),
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{scheme}://{authority}{tail}")
}

/// The advisory lock every PostgreSQL write transaction takes (transaction scope): one writer of the
/// audit log at a time. The number is "keyroll" in ASCII, so other applications are unlikely to use it.
pub const WRITER_LOCK: i64 = 0x6b65_7972_6f6c_6c;
/// The advisory lock migrations take (transaction scope), so two processes cannot both migrate.
pub const MIGRATION_LOCK: i64 = 0x6b65_7972_6f6c_6d;

/// Base of the session advisory locks that mark a personalisation run as owned by a live process
/// ([`Store::claim_run`]): the lock of run `id` is `RUN_LOCK_BASE + id`.
pub const RUN_LOCK_BASE: i64 = 0x4b52_0000_0000_0000;

/// How long a PostgreSQL connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

enum Engine {
    Sqlite { conn: rusqlite::Connection, pending: rows::Pending },
    Postgres { client: RefCell<postgres::Client>, statements: RefCell<HashMap<String, postgres::Statement>> },
}

/// An open issuer database on one of the two engines.
pub struct Store {
    engine: Engine,
    in_tx: Cell<bool>,
}

impl Store {
    /// Wrap an open SQLite connection; `hook` installs the update hook that notices changes to bound
    /// tables (custodians' connections).
    pub fn sqlite(mut conn: rusqlite::Connection, hook: bool) -> Result<Store, StoreError> {
        let pending = rows::Pending::default();
        if hook {
            pending.install(&mut conn)?;
        }
        Ok(Store { engine: Engine::Sqlite { conn, pending }, in_tx: Cell::new(false) })
    }

    /// Connect to a PostgreSQL server: plain unless the URL's `sslmode` asks for TLS (libpq's words;
    /// see [`tls`] for what each mode checks).
    pub fn postgres(url: &str) -> Result<Store, StoreError> {
        let shown = redact(url);
        let (url, mode) = tls::split(url).map_err(|why| StoreError::Connect {
            shown: shown.clone(),
            why,
            kind: ConnectFailure::BadUrl,
        })?;
        let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| StoreError::Connect {
            shown: shown.clone(),
            why: e.to_string(),
            kind: ConnectFailure::BadUrl,
        })?;
        config.connect_timeout(CONNECT_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("keyroll");
        }
        let connector = tls::connector(&mode).map_err(|why| StoreError::Connect {
            shown: shown.clone(),
            why,
            kind: ConnectFailure::Tls,
        })?;
        let connected = match connector {
            None => config.connect(postgres::NoTls),
            Some(c) => config.connect(c),
        };
        let client = connected.map_err(|e| {
            let kind = match e.code() {
                Some(c)
                    if *c == postgres::error::SqlState::INVALID_PASSWORD
                        || *c == postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
                {
                    ConnectFailure::Authentication
                }
                Some(c) if *c == postgres::error::SqlState::INVALID_CATALOG_NAME => ConnectFailure::NoDatabase,
                Some(_) => ConnectFailure::Other,
                // tokio-postgres's TLS errors: "error performing TLS handshake: …", "server does not
                // support TLS".
                None if e.to_string().contains("TLS") => ConnectFailure::Tls,
                None => ConnectFailure::Unreachable,
            };
            // The client's message names the step ("error performing TLS handshake"); the why is in
            // the causes (e.g. rustls's "invalid peer certificate: UnknownIssuer").
            let mut why = pg_message(&e);
            let mut cause = if e.as_db_error().is_some() { None } else { std::error::Error::source(&e) };
            while let Some(c) = cause {
                let c_text = c.to_string();
                if !why.contains(&c_text) {
                    why = format!("{why}: {c_text}");
                }
                cause = c.source();
            }
            StoreError::Connect { shown: shown.clone(), why, kind }
        })?;
        Ok(Store {
            engine: Engine::Postgres { client: RefCell::new(client), statements: RefCell::new(HashMap::new()) },
            in_tx: Cell::new(false),
        })
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.engine, Engine::Postgres { .. })
    }

    /// The SQLite connection (db.rs's pragmas and migrations), if this is SQLite.
    pub(super) fn sqlite_conn(&self) -> Option<&rusqlite::Connection> {
        match &self.engine {
            Engine::Sqlite { conn, .. } => Some(conn),
            Engine::Postgres { .. } => None,
        }
    }

    /// Run a statement; the number of rows changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize, StoreError> {
        let values = params.values();
        match &self.engine {
            Engine::Sqlite { conn, .. } => {
                let mut stmt = conn.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(values.iter().map(sqlite_value)))?)
            }
            Engine::Postgres { client, .. } => {
                let stmt = self.pg_statement(sql)?;
                let refs = pg_params(&values);
                Ok(client.borrow_mut().execute(&stmt, &refs)? as usize)
            }
        }
    }

    /// Several statements without parameters (migrations).
    pub fn execute_batch(&self, sql: &str) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sqlite { conn, .. } => Ok(conn.execute_batch(sql)?),
            Engine::Postgres { client, statements } => {
                // A schema change invalidates prepared statements.
                statements.borrow_mut().clear();
                Ok(client.borrow_mut().batch_execute(sql)?)
            }
        }
    }

    /// Every row of a query.
    pub fn query_all<P: Params>(&self, sql: &str, params: P) -> Result<Vec<Row>, StoreError> {
        let values = params.values();
        match &self.engine {
            Engine::Sqlite { conn, .. } => {
                let mut stmt = conn.prepare_cached(sql)?;
                let names: std::rc::Rc<[String]> = stmt.column_names().into_iter().map(str::to_string).collect();
                let n = names.len();
                let mut rows = stmt.query(rusqlite::params_from_iter(values.iter().map(sqlite_value)))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut vals = Vec::with_capacity(n);
                    for i in 0..n {
                        vals.push(match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => Value::Null,
                            rusqlite::types::ValueRef::Integer(i) => Value::Integer(i),
                            rusqlite::types::ValueRef::Real(f) => Value::Real(f),
                            rusqlite::types::ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                            rusqlite::types::ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                        });
                    }
                    out.push(Row { names: names.clone(), values: vals });
                }
                Ok(out)
            }
            Engine::Postgres { client, .. } => {
                let stmt = self.pg_statement(sql)?;
                let refs = pg_params(&values);
                let rows = client.borrow_mut().query(&stmt, &refs)?;
                let names: std::rc::Rc<[String]> = stmt.columns().iter().map(|c| c.name().to_string()).collect();
                rows.iter().map(|r| pg_row(r, &names)).collect()
            }
        }
    }

    /// Every row of a query, streamed through `f` (large scans: `audit log`'s replay). On SQLite nothing
    /// is collected: one row buffer is reused, so a scan of millions of rows allocates almost nothing.
    /// On PostgreSQL the rows are fetched first (so `f` may run queries on this store).
    pub fn for_each<P: Params, E: From<StoreError>>(
        &self,
        sql: &str,
        params: P,
        mut f: impl FnMut(&Row) -> Result<(), E>,
    ) -> Result<(), E> {
        let values = params.values();
        match &self.engine {
            Engine::Sqlite { conn, .. } => {
                let mut stmt = conn.prepare_cached(sql).map_err(StoreError::from)?;
                let names: std::rc::Rc<[String]> = stmt.column_names().map(str::to_string).collect();
                let n = names.len();
                let mut row = Row { names, values: vec![Value::Null; n] };
                let mut rows = stmt
                    .query(rusqlite::params_from_iter(values.iter().map(sqlite_value)))
                    .map_err(StoreError::from)?;
                while let Some(r) = rows.next().map_err(StoreError::from)? {
                    for (i, slot) in row.values.iter_mut().enumerate() {
                        refill(slot, r.get_ref(i).map_err(StoreError::from)?);
                    }
                    f(&row)?;
                }
                Ok(())
            }
            Engine::Postgres { .. } => {
                for r in self.query_all(sql, values)? {
                    f(&r)?;
                }
                Ok(())
            }
        }
    }

    /// The first row of a query, `f` applied to it; [`StoreError::NoRows`] if there is none.
    pub fn query_row<P: Params, T>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let rows = self.query_all(sql, params)?;
        f(rows.first().ok_or(StoreError::NoRows)?)
    }

    /// A statement to run (rusqlite-like; statements are cached by the engine).
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'_>, StoreError> {
        Ok(Stmt { store: self, sql: sql.to_string() })
    }

    /// Same as [`Store::prepare`] (both engines cache).
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>, StoreError> {
        self.prepare(sql)
    }

    fn pg_statement(&self, sql: &str) -> Result<postgres::Statement, StoreError> {
        let Engine::Postgres { client, statements } = &self.engine else { unreachable!("PostgreSQL only") };
        if let Some(s) = statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let stmt = client.borrow_mut().prepare(&placeholders(sql))?;
        statements.borrow_mut().insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    /// Begin the write transaction (see the module doc: SQLite `BEGIN IMMEDIATE`; PostgreSQL `BEGIN` and
    /// the writer lock). Dropped without [`Tx::commit`], it rolls back.
    pub fn begin(&self) -> Result<Tx<'_>, StoreError> {
        match &self.engine {
            Engine::Sqlite { conn, .. } => conn.execute_batch("BEGIN IMMEDIATE")?,
            Engine::Postgres { client, .. } => {
                let mut c = client.borrow_mut();
                c.batch_execute("BEGIN")?;
                if let Err(e) = c.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITER_LOCK]) {
                    let _ = c.batch_execute("ROLLBACK");
                    return Err(e.into());
                }
            }
        }
        self.in_tx.set(true);
        Ok(Tx { store: self, done: false })
    }

    /// Begin a read-only transaction: one consistent snapshot for several queries (`db copy`'s source).
    pub fn begin_read(&self) -> Result<Tx<'_>, StoreError> {
        match &self.engine {
            Engine::Sqlite { conn, .. } => conn.execute_batch("BEGIN DEFERRED")?,
            Engine::Postgres { client, .. } => {
                client.borrow_mut().batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?
            }
        }
        self.in_tx.set(true);
        Ok(Tx { store: self, done: false })
    }

    /// Begin a transaction for migrations: SQLite `BEGIN IMMEDIATE`; PostgreSQL `BEGIN` and the
    /// migration lock.
    pub(super) fn begin_migration(&self) -> Result<Tx<'_>, StoreError> {
        match &self.engine {
            Engine::Sqlite { conn, .. } => conn.execute_batch("BEGIN IMMEDIATE")?,
            Engine::Postgres { client, .. } => {
                let mut c = client.borrow_mut();
                c.batch_execute("BEGIN")?;
                if let Err(e) = c.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]) {
                    let _ = c.batch_execute("ROLLBACK");
                    return Err(e.into());
                }
            }
        }
        self.in_tx.set(true);
        Ok(Tx { store: self, done: false })
    }

    fn end(&self, sql: &str) -> Result<(), StoreError> {
        self.in_tx.set(false);
        match &self.engine {
            Engine::Sqlite { conn, .. } => Ok(conn.execute_batch(sql)?),
            Engine::Postgres { client, .. } => Ok(client.borrow_mut().batch_execute(sql)?),
        }
    }

    /// Claim personalisation run `run` for this process, on engines that can tell whether its owner is
    /// alive wherever it runs: PostgreSQL holds a session advisory lock per run, released when the
    /// owner's connection ends (exit, SIGKILL, a lost machine), so `Some(true)` means no live process
    /// on any site owns it (and now this one does). SQLite answers `None`: its writers share one machine,
    /// and the caller checks the owner's pid.
    pub fn claim_run(&self, run: i64) -> Result<Option<bool>, StoreError> {
        match &self.engine {
            Engine::Sqlite { .. } => Ok(None),
            Engine::Postgres { .. } => Ok(Some(self.query_row(
                "SELECT pg_try_advisory_lock(?1)",
                params![RUN_LOCK_BASE.wrapping_add(run)],
                |r| r.get(0),
            )?)),
        }
    }

    /// Changes to bound rows not yet logged, each (index in `BOUND`, id) once, in first-change order;
    /// cleared.
    pub fn take_changes(&self) -> Result<Vec<(usize, i64)>, StoreError> {
        match &self.engine {
            Engine::Sqlite { pending, .. } => Ok(pending.take()),
            Engine::Postgres { .. } => {
                let v = self.pg_changes()?;
                self.pg_set_changes("")?;
                Ok(v)
            }
        }
    }

    /// Put changes back (those a bulk entry did not name).
    pub fn restore_changes(&self, v: Vec<(usize, i64)>) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sqlite { pending, .. } => {
                pending.restore(v);
                Ok(())
            }
            Engine::Postgres { .. } => {
                let mut all = self.pg_changes()?;
                all.extend(v);
                let s: String = all.iter().map(|(t, id)| format!("{}:{id},", rows::BOUND[*t].table)).collect();
                self.pg_set_changes(&s)
            }
        }
    }

    /// The first change not yet logged.
    pub fn first_change(&self) -> Result<Option<(usize, i64)>, StoreError> {
        match &self.engine {
            Engine::Sqlite { pending, .. } => Ok(pending.first()),
            Engine::Postgres { .. } => Ok(self.pg_changes()?.first().copied()),
        }
    }

    /// Forget changes not yet logged.
    pub fn clear_changes(&self) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sqlite { pending, .. } => {
                pending.clear();
                Ok(())
            }
            // Transaction-local: outside a transaction there is nothing to clear.
            Engine::Postgres { .. } if !self.in_tx.get() => Ok(()),
            Engine::Postgres { .. } => self.pg_set_changes(""),
        }
    }

    fn pg_changes(&self) -> Result<Vec<(usize, i64)>, StoreError> {
        let s: Option<String> =
            self.query_row("SELECT current_setting('keyroll.changes', true)", params![], |r| r.get(0))?;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for item in s.unwrap_or_default().split(',').filter(|x| !x.is_empty()) {
            let parsed =
                item.split_once(':').and_then(|(t, id)| Some((rows::bound_index(t)?, id.parse::<i64>().ok()?)));
            // Only keyroll's trigger writes this setting; an item that does not parse is a bug.
            let x = parsed.ok_or_else(|| StoreError::Type {
                column: "keyroll.changes".into(),
                found: "an unparsable change",
                wanted: "table:id",
            })?;
            if seen.insert(x) {
                out.push(x);
            }
        }
        Ok(out)
    }

    fn pg_set_changes(&self, s: &str) -> Result<(), StoreError> {
        self.query_row("SELECT set_config('keyroll.changes', ?1, true)", params![s], |_| Ok(()))
    }
}

/// Put a SQLite value into a row buffer's slot, reusing the slot's allocation when it held the same
/// kind of value (text is read as `query_all` reads it: invalid UTF-8 replaced).
fn refill(slot: &mut Value, v: rusqlite::types::ValueRef<'_>) {
    use rusqlite::types::ValueRef;
    match (slot, v) {
        (Value::Text(s), ValueRef::Text(t)) => {
            s.clear();
            match std::str::from_utf8(t) {
                Ok(t) => s.push_str(t),
                Err(_) => s.push_str(&String::from_utf8_lossy(t)),
            }
        }
        (Value::Blob(b), ValueRef::Blob(x)) => {
            b.clear();
            b.extend_from_slice(x);
        }
        (slot, v) => {
            *slot = match v {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => Value::Integer(i),
                ValueRef::Real(f) => Value::Real(f),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            }
        }
    }
}

/// A prepared statement (rusqlite-like surface over [`Store`]).
pub struct Stmt<'a> {
    store: &'a Store,
    sql: String,
}

impl Stmt<'_> {
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize, StoreError> {
        self.store.execute(&self.sql, params)
    }

    pub fn query_row<P: Params, T>(
        &mut self,
        params: P,
        f: impl FnOnce(&Row) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.store.query_row(&self.sql, params, f)
    }

    /// Every row, `f` applied to each (collect into `Result<Vec<_>, _>`).
    pub fn query_map<P: Params, T>(
        &mut self,
        params: P,
        f: impl FnMut(&Row) -> Result<T, StoreError>,
    ) -> Result<std::vec::IntoIter<Result<T, StoreError>>, StoreError> {
        let rows = self.store.query_all(&self.sql, params)?;
        Ok(rows.iter().map(f).collect::<Vec<_>>().into_iter())
    }

    /// Every row, walked with `next()`.
    pub fn query<P: Params>(&mut self, params: P) -> Result<Rows, StoreError> {
        Ok(Rows { rows: self.store.query_all(&self.sql, params)?.into_iter(), current: None })
    }
}

/// Rows walked one by one.
pub struct Rows {
    rows: std::vec::IntoIter<Row>,
    current: Option<Row>,
}

impl Rows {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<&Row>, StoreError> {
        self.current = self.rows.next();
        Ok(self.current.as_ref())
    }
}

/// The write transaction; derefs to the [`Store`] it runs on.
pub struct Tx<'a> {
    store: &'a Store,
    done: bool,
}

impl Tx<'_> {
    pub fn commit(mut self) -> Result<(), StoreError> {
        self.done = true;
        self.store.end("COMMIT")
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.store.end("ROLLBACK");
        }
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Store;
    fn deref(&self) -> &Store {
        self.store
    }
}

/// `?N` → `$N` (and a bare `?` → the next number), outside string literals and quoted names.
pub fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote: Option<char> = None;
    let mut next = 0;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                out.push('$');
                if chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                    let mut n = String::new();
                    while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                        n.push(*d);
                        chars.next();
                    }
                    next = n.parse().unwrap_or(next);
                    out.push_str(&n);
                } else {
                    next += 1;
                    out.push_str(&next.to_string());
                }
            }
            None => out.push(c),
        }
    }
    out
}

fn sqlite_value(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Integer(i) => rusqlite::types::Value::Integer(*i),
        Value::Real(f) => rusqlite::types::Value::Real(*f),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
    }
}

fn pg_params(values: &[Value]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn postgres::types::ToSql + Sync)).collect()
}

fn pg_row(r: &postgres::Row, names: &std::rc::Rc<[String]>) -> Result<Row, StoreError> {
    use postgres::types::Type;
    let mut values = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let ty = col.type_();
        let v = if *ty == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Integer)
        } else if *ty == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?.map(|x| Value::Integer(x.into()))
        } else if *ty == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)?.map(|x| Value::Integer(x.into()))
        } else if *ty == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?.map(|x| Value::Integer(x.into()))
        } else if *ty == Type::FLOAT8 {
            r.try_get::<_, Option<f64>>(i)?.map(Value::Real)
        } else if *ty == Type::FLOAT4 {
            r.try_get::<_, Option<f32>>(i)?.map(|x| Value::Real(x.into()))
        } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty) {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        } else if *ty == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob)
        } else if *ty == Type::VOID {
            None
        } else {
            return Err(StoreError::UnsupportedType { column: col.name().to_string(), ty: ty.name().to_string() });
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row { names: names.clone(), values })
}

impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        let refuse = || -> Box<dyn std::error::Error + Sync + Send> {
            format!("a {} value cannot be bound to a {ty} parameter", self.class()).into()
        };
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ => Err(refuse()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => Err(refuse()),
            },
            Value::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => s.as_str().to_sql(ty, out),
                _ => Err(refuse()),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(refuse()),
            },
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_literals() {
        assert_eq!(
            placeholders("SELECT ?1, '?2', \"a?\" FROM t WHERE x = ?12"),
            "SELECT $1, '?2', \"a?\" FROM t WHERE x = $12"
        );
        assert_eq!(placeholders("VALUES (?, ?)"), "VALUES ($1, $2)");
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("postgres://kr:s3cret@db.example/keyroll"), "postgres://kr:***@db.example/keyroll");
        assert_eq!(redact("postgresql://kr@/keyroll?host=/run/pg"), "postgresql://kr@/keyroll?host=/run/pg");
        assert_eq!(
            redact("postgres://kr@h/keyroll?sslmode=disable&password=s3cret"),
            "postgres://kr@h/keyroll?sslmode=disable&password=***"
        );
        assert!(!format!("{:?}", Location::Postgres("postgres://a:pw@h/d".into())).contains("pw"));
    }

    #[test]
    fn values_convert_both_ways() {
        let s = Store::sqlite(rusqlite::Connection::open_in_memory().unwrap(), false).unwrap();
        s.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b BLOB, c INTEGER)").unwrap();
        s.execute("INSERT INTO t (a, b, c) VALUES (?1, ?2, ?3)", params!["x", vec![1u8, 2], None::<i64>]).unwrap();
        let (a, b, c): (String, Vec<u8>, Option<u32>) = s
            .query_row("SELECT a, b, c FROM t WHERE id = ?1", [1i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        assert_eq!((a.as_str(), b, c), ("x", vec![1, 2], None));
        let e = s.query_row("SELECT a FROM t", params![], |r| r.get::<_, i64>(0)).unwrap_err();
        assert!(e.to_string().contains("column a holds TEXT"), "{e}");
        assert!(matches!(
            s.query_row("SELECT a FROM t WHERE id = 9", params![], |r| r.get::<_, String>(0)),
            Err(StoreError::NoRows)
        ));
    }
}
