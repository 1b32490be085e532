//! Opening the issuer database: connection pragmas, then the ordered, append-only list of migrations
//! in `schema/` (after rusqlite_migration: each migration in its own transaction, recorded in
//! `PRAGMA user_version`, pragmas outside transactions). An old database is upgraded in place, never
//! rebuilt.

use super::AuthorityError;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

/// The migrations, in order. Append only: never edit a released one.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_back_office", include_str!("../../schema/0001_back_office.sql")),
    ("0002_certificate_authority", include_str!("../../schema/0002_certificate_authority.sql")),
    ("0003_card_initialised", include_str!("../../schema/0003_card_initialised.sql")),
    ("0004_row_binding", include_str!("../../schema/0004_row_binding.sql")),
    ("0005_scheme_policy", include_str!("../../schema/0005_scheme_policy.sql")),
    ("0006_manufacturers", include_str!("../../schema/0006_manufacturers.sql")),
];

/// The first schema of protocol version 2 (factory credentials, SCP11b personalisation). A database
/// whose schema is older was made by version 1, which shares no key, label or AID with version 2 and is
/// refused rather than upgraded (DESIGN.md §10: no issuer runs version 1 in the field).
pub const FIRST_V2_SCHEMA: usize = 6;

fn refuse_version_1(conn: &Connection, path: &Path) -> Result<(), AuthorityError> {
    let version = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if (1..FIRST_V2_SCHEMA).contains(&version) {
        return Err(AuthorityError::Version1Database { path: path.to_path_buf(), schema: version });
    }
    Ok(())
}

/// How long a writer waits for another process's transaction before giving up. Personalisation
/// lines run in parallel on one file; their transactions are short, so waiting is the right answer
/// and "database is locked" must not reach the user.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

fn pragmas(conn: &Connection) -> Result<(), AuthorityError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Create a new database file; refuses to touch an existing one.
pub fn create(path: &Path) -> Result<Connection, AuthorityError> {
    if path.exists() {
        return Err(AuthorityError::AlreadyExists(path.to_path_buf()));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
    pragmas(&conn)?;
    migrate(&conn)?;
    Ok(conn)
}

/// A file that exists and is not empty (a zero-byte file is "not a keyroll database", never a fresh one).
fn existing(path: &Path) -> Result<(), AuthorityError> {
    match std::fs::metadata(path) {
        Err(_) => Err(AuthorityError::NoDatabase(path.to_path_buf())),
        Ok(m) if m.is_dir() || m.len() == 0 => Err(AuthorityError::NotKeyroll(path.to_path_buf())),
        Ok(_) => Ok(()),
    }
}

/// Whether the database holds keyroll's schema (version recorded, issuer table present).
fn is_keyroll(conn: &Connection, path: &Path) -> Result<(), AuthorityError> {
    let version: Result<i64, _> = conn.query_row("PRAGMA user_version", [], |r| r.get(0));
    let tables: Result<i64, _> =
        conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'issuer'", [], |r| r.get(0));
    match (version, tables) {
        (Ok(v), Ok(1)) if v > 0 => Ok(()),
        (Err(e), _) | (_, Err(e)) => Err(AuthorityError::Corrupt { path: path.to_path_buf(), why: e.to_string() }),
        _ => Err(AuthorityError::NotKeyroll(path.to_path_buf())),
    }
}

/// Open an existing database and bring its schema up to date (custodians only).
pub fn open(path: &Path) -> Result<Connection, AuthorityError> {
    existing(path)?;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    // A file that is not SQLite fails here, at the first read; one that is SQLite but not keyroll's is
    // refused before anything is written to it.
    is_keyroll(&conn, path)?;
    refuse_version_1(&conn, path)?;
    pragmas(&conn)?;
    migrate(&conn)?;
    Ok(conn)
}

/// Open a database for reading only (auditors): no migration, no pragma that writes. A database whose
/// schema is not the current one is refused with a hint rather than upgraded behind the auditor's back.
pub fn open_read_only(path: &Path) -> Result<Connection, AuthorityError> {
    existing(path)?;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    is_keyroll(&conn, path)?;
    refuse_version_1(&conn, path)?;
    let version = match conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)) {
        Ok(v) => v as usize,
        Err(e) => return Err(AuthorityError::Corrupt { path: path.to_path_buf(), why: e.to_string() }),
    };
    if version != MIGRATIONS.len() {
        return Err(AuthorityError::Corrupt {
            path: path.to_path_buf(),
            why: format!(
                "schema version {version}, this keyroll reads {}; open it once with a custodian command to upgrade",
                MIGRATIONS.len()
            ),
        });
    }
    Ok(conn)
}

/// Apply every migration newer than the database's `user_version`, each in an IMMEDIATE transaction
/// (so two processes opening an old file at once do not both migrate).
pub fn migrate(conn: &Connection) -> Result<(), AuthorityError> {
    loop {
        let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
        if version > MIGRATIONS.len() {
            return Err(AuthorityError::NewerSchema { found: version, known: MIGRATIONS.len() });
        }
        if version == MIGRATIONS.len() {
            return Ok(());
        }
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        let current: usize = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
        if current == version {
            tx.execute_batch(MIGRATIONS[version].1)?;
            tx.pragma_update(None, "user_version", (version + 1) as i64)?;
        }
        tx.commit()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_in_order_and_record_the_version() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
        // Idempotent.
        migrate(&conn).unwrap();
    }

    #[test]
    fn a_newer_database_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(migrate(&conn), Err(AuthorityError::NewerSchema { found: 99, .. })));
    }
}
