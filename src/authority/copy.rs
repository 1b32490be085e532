//! `keyroll db copy`: move an issuer between engines (SQLite ↔ PostgreSQL) without breaking its
//! signed history.
//!
//! Every row of every table ([`super::db::TABLES`]) is copied as it is, ids included, so the audit log,
//! its signed head and every row binding are the same bytes on both sides (the canonical row encoding
//! does not depend on the engine, [`super::rows`]). The source is read in one read transaction (a
//! consistent snapshot, even while personalisation lines write) and must verify before anything is
//! written; the destination must be new (a file that does not exist, or an empty PostgreSQL database)
//! and is written in one transaction that is verified again (the whole chain, the signed head, every
//! bound row against the log) before it commits. A copy that does not verify is never committed. The
//! audit key is the same, so every custodian's pin and checkpoint apply to the copy.

use super::audit_log::{self, Checkpoint};
use super::store::{Location, Store, Value};
use super::{AuthorityError, Tamper, db};
use serde::Serialize;
use std::path::Path;

/// What `db copy` did.
#[derive(Debug, Serialize)]
pub struct CopyOutcome {
    pub from: String,
    pub to: String,
    /// Rows copied per table, in copy order.
    pub tables: Vec<(String, u64)>,
    /// The audit log entries, verified on both sides.
    pub audit_entries: i64,
    pub audit_key_fingerprint: String,
    pub head: Checkpoint,
}

fn refuse(v: audit_log::LogVerdict, side: &str) -> AuthorityError {
    AuthorityError::Tampered(Tamper::Log {
        row: v.first_bad_row,
        table_row: v.bad_table_row,
        why: format!("the {side} audit log does not verify: {}", v.reason.unwrap_or_default()),
    })
}

/// Copy the issuer database `from` into the new database `to` (each a SQLite file or a `postgres://`
/// URL), verifying the audit log on both sides.
pub fn copy(from: &Path, to: &Path) -> Result<CopyOutcome, AuthorityError> {
    let (src_loc, dst_loc) = (Location::parse(from), Location::parse(to));
    let src = db::open_read_only(&src_loc)?;
    let snapshot = src.begin_read()?;
    let verdict = audit_log::verify(&snapshot)?;
    if !verdict.intact {
        return Err(refuse(verdict, "source"));
    }
    let Some(head) = verdict.head else {
        return Err(refuse(verdict, "source"));
    };
    let fingerprint = audit_log::audit_public_key(&snapshot).map(|k| audit_log::fingerprint(&k))?;
    let result = write_copy(&snapshot, &dst_loc, &head, &fingerprint);
    if result.is_err()
        && let Location::File(p) = &dst_loc
        && !matches!(result, Err(AuthorityError::AlreadyExists(_)))
    {
        // Leave nothing half-made.
        let _ = std::fs::remove_file(p);
        for ext in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", p.display()));
        }
    }
    let tables = result?;
    Ok(CopyOutcome {
        from: src_loc.shown(),
        to: dst_loc.shown(),
        tables,
        audit_entries: head.count,
        audit_key_fingerprint: fingerprint,
        head,
    })
}

fn write_copy(
    src: &Store,
    dst_loc: &Location,
    head: &Checkpoint,
    fingerprint: &str,
) -> Result<Vec<(String, u64)>, AuthorityError> {
    let dst = db::create(dst_loc)?;
    // On PostgreSQL the schema is built in this same transaction: a copy that fails leaves nothing.
    let tx = db::begin_new(&dst, dst_loc)?;
    let mut counts = Vec::new();
    for table in db::TABLES {
        let rows = src.query_all(&format!("SELECT * FROM \"{table}\" ORDER BY 1"), Vec::new())?;
        if let Some(first) = rows.first() {
            let names = first.column_names();
            let sql = format!(
                "INSERT INTO \"{table}\" ({}) VALUES ({})",
                names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", "),
                (1..=names.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
            );
            for r in &rows {
                tx.execute(&sql, r.values())?;
            }
            if tx.is_postgres() && names.first().is_some_and(|n| n == "id") {
                // Identity columns do not see explicit ids: the next row must come after the copied ones.
                tx.query_row(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), (SELECT max(id) FROM \"{table}\"))"
                    ),
                    Vec::<Value>::new(),
                    |_| Ok(()),
                )?;
            }
        }
        counts.push((table.to_string(), rows.len() as u64));
    }
    // The copy repeats history the log already records: nothing new to log.
    tx.clear_changes()?;
    let verdict = audit_log::verify(&tx)?;
    if !verdict.intact {
        return Err(refuse(verdict, "copied"));
    }
    let copied_fp = audit_log::audit_public_key(&tx).map(|k| audit_log::fingerprint(&k))?;
    if verdict.head.as_ref() != Some(head) || copied_fp != fingerprint {
        return Err(AuthorityError::Tampered(Tamper::Log {
            row: None,
            table_row: None,
            why: "the copy's audit log head or audit key differs from the source's".into(),
        }));
    }
    tx.commit()?;
    Ok(counts)
}
