//! Row binding: every security-relevant row is vouched for by the signed audit log (DESIGN.md §10
//! point 7; the encoding is documented in `docs/backoffice.md`).
//!
//! A table is *bound* by one entry in [`BOUND`]. From then on every row a custodian's connection
//! inserts, updates or deletes in it is noticed by SQLite's update hook and must be recorded by the next
//! audit log entry of the same transaction, which carries SHA-256 over the row's canonical encoding
//! ([`row_digest`]); a transaction that changes a bound row without logging it is refused
//! ([`super::AuthorityError::UnloggedChange`]). Nothing else has to be remembered by the code that writes
//! a row: a new table (trusted manufacturers, policy…) gets binding by one line in [`BOUND`].
//!
//! Two ways rows are checked:
//! - **State tables** (small: issuer, custodians, secrets, keys, batches, CA, and the set of revoked
//!   certificates) are summed up in a *state digest* that every log entry carries. A custodian recomputes
//!   it when it unlocks (cost: the size of these tables, independent of the number of cards) and compares
//!   it with the newest entry, which the signed head covers.
//! - **Every bound table** (state tables and the large ones: certificates, cards, personalisation runs)
//!   is compared with a replay of the whole log by `audit log`: each row must equal the digest of the last
//!   entry that wrote it, and no row the log wrote may be missing.
//!
//! Canonical encoding of one row (all integers big-endian):
//! ```text
//! row   = SHA-256( "keyroll row v1" ‖ str(table) ‖ u32(#columns) ‖ { str(column) ‖ value }* )
//!         columns in their declared order (`PRAGMA table_info`), the primary key `id` first
//! str   = u32(byte length) ‖ UTF-8 bytes
//! value = 0x00                          NULL
//!       | 0x01 ‖ i64                    INTEGER
//!       | 0x02 ‖ f64 (IEEE 754 bits)    REAL
//!       | 0x03 ‖ u32(len) ‖ bytes       TEXT
//!       | 0x04 ‖ u32(len) ‖ bytes       BLOB
//! ```
//! The storage class is part of the encoding, so `'5'` stored where `5` was written is a different row.
//! Both engines give the same encoding ([`super::store`]): PostgreSQL's BIGINT, DOUBLE PRECISION, TEXT
//! and BYTEA columns are INTEGER, REAL, TEXT and BLOB, and the column order is the migrations' order on
//! both, so a database copied from one engine to the other keeps its audit log valid.

use super::AuthorityError;
use super::store::{OptionalExtension, Params, Row, Store, StoreError, Value};
use sha2::{Digest, Sha256};

const ROW_LABEL: &[u8] = b"keyroll row v1";
const STATE_LABEL: &[u8] = b"keyroll state v1";

/// How a bound table is checked besides the full replay of `audit log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Small: in the state digest every log entry carries, checked by every custodian at unlock.
    State,
    /// Large (grows with cards): bound per row, checked by the replay of `audit log`.
    Row,
}

/// A bound table.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub table: &'static str,
    pub scope: Scope,
}

/// The bound tables, in the order the state digest takes them. Append a table here to bind it.
pub const BOUND: &[Bound] = &[
    Bound { table: "issuer", scope: Scope::State },
    Bound { table: "custodians", scope: Scope::State },
    Bound { table: "secrets", scope: Scope::State },
    Bound { table: "keys", scope: Scope::State },
    Bound { table: "batches", scope: Scope::State },
    Bound { table: "ca", scope: Scope::State },
    Bound { table: "certificates", scope: Scope::Row },
    Bound { table: "perso_runs", scope: Scope::Row },
    Bound { table: "cards", scope: Scope::Row },
    // The issuer's signed word (DESIGN.md §10 points 3-5): small, decisions, so in the state digest.
    Bound { table: "scheme_key", scope: Scope::State },
    Bound { table: "key_authorisations", scope: Scope::State },
    Bound { table: "policies", scope: Scope::State },
    // Card manufacturers the line trusts (issue 11): small, decisions. Chips grow with the cards.
    Bound { table: "manufacturers", scope: Scope::State },
    Bound { table: "chips", scope: Scope::Row },
    // PKCS #11 custody (DESIGN.md §11): which token holds which key.
    Bound { table: "token_keys", scope: Scope::State },
    // What `reconcile` found and the journal heads it saw (issue 13 item 5): one row per run, and the
    // anchor the next run holds each journal to, so in the state digest.
    Bound { table: "reconciliations", scope: Scope::State },
    // The open debits each reconciliation saw (issue 13, schema 9): what `policy resolve` is checked
    // against, a decision, so in the state digest.
    Bound { table: "reconciliation_debits", scope: Scope::State },
];

/// State tables added after databases already existed and empty in most of them: an empty one adds
/// nothing to the state digest, so the digests those databases logged stay valid. A non-empty one
/// counts like every other.
const STATE_IF_ANY: &[&str] = &["token_keys", "reconciliations", "reconciliation_debits"];

/// Row subsets of large tables that are decisions and so belong in the state digest: revocations
/// (revocations are what a CRL and every auditor's verdict are derived from).
const STATE_VIEWS: &[(&str, &str, &str)] =
    &[("certificates.revoked", "certificates", "revoked_at IS NOT NULL OR reason IS NOT NULL")];

/// Index of a bound table in [`BOUND`].
pub fn bound_index(table: &str) -> Option<usize> {
    BOUND.iter().position(|b| b.table == table)
}

fn put_str(h: &mut Sha256, s: &[u8]) {
    h.update((s.len() as u32).to_be_bytes());
    h.update(s);
}

fn put_value(h: &mut Sha256, v: &Value) {
    match v {
        Value::Null => h.update([0x00]),
        Value::Integer(i) => {
            h.update([0x01]);
            h.update(i.to_be_bytes());
        }
        Value::Real(f) => {
            h.update([0x02]);
            h.update(f.to_bits().to_be_bytes());
        }
        Value::Text(t) => {
            h.update([0x03]);
            put_str(h, t.as_bytes());
        }
        Value::Blob(b) => {
            h.update([0x04]);
            put_str(h, b);
        }
    }
}

/// Digest of a row read with `SELECT * FROM table …`.
fn digest_row(table: &str, row: &Row) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ROW_LABEL);
    put_str(&mut h, table.as_bytes());
    h.update((row.len() as u32).to_be_bytes());
    for (name, value) in row.column_names().iter().zip(row.values()) {
        put_str(&mut h, name.as_bytes());
        put_value(&mut h, value);
    }
    h.finalize().into()
}

/// The canonical digest of row `id` of a bound table, or `None` if there is no such row.
pub fn row_digest(conn: &Store, table: &str, id: i64) -> Result<Option<[u8; 32]>, AuthorityError> {
    let b = &BOUND[bound_index(table).ok_or(AuthorityError::NotBound(table.to_string()))?];
    let sql = format!("SELECT * FROM \"{}\" WHERE id = ?1", b.table);
    Ok(conn.query_row(&sql, [id], |r| Ok(digest_row(b.table, r))).optional()?)
}

/// Visit every row of a bound table (ascending id) with its digest.
pub fn for_each_row(
    conn: &Store,
    table: &'static str,
    filter: Option<&str>,
    mut f: impl FnMut(i64, [u8; 32]) -> Result<(), AuthorityError>,
) -> Result<(), AuthorityError> {
    let sql = match filter {
        Some(w) => format!("SELECT * FROM \"{table}\" WHERE {w} ORDER BY id"),
        None => format!("SELECT * FROM \"{table}\" ORDER BY id"),
    };
    // Streamed: `audit log` walks every row of the large tables (a million cards) through here.
    conn.for_each(&sql, Vec::new(), |r| {
        let id = match r.get_ref(0)? {
            Value::Integer(i) => *i,
            _ => {
                return Err(AuthorityError::BadRow { table, row: -1, why: "the primary key is not an integer".into() });
            }
        };
        f(id, digest_row(table, r))
    })
}

/// The state digest: SHA-256 over every row of the [`Scope::State`] tables and the state views, table
/// by table in [`BOUND`] order: `"keyroll state v1" ‖ { str(name) ‖ u64(#rows) ‖ { i64(id) ‖ row }* }*`.
pub fn state_digest(conn: &Store) -> Result<[u8; 32], AuthorityError> {
    let mut h = Sha256::new();
    h.update(STATE_LABEL);
    let mut part = |name: &str, table: &'static str, filter: Option<&str>| -> Result<(), AuthorityError> {
        let mut body = Sha256::new();
        let mut n = 0u64;
        for_each_row(conn, table, filter, |id, d| {
            body.update(id.to_be_bytes());
            body.update(d);
            n += 1;
            Ok(())
        })?;
        if n == 0 && STATE_IF_ANY.contains(&name) {
            return Ok(());
        }
        put_str(&mut h, name.as_bytes());
        h.update(n.to_be_bytes());
        h.update(body.finalize());
        Ok(())
    };
    for b in BOUND.iter().filter(|b| b.scope == Scope::State) {
        part(b.table, b.table, None)?;
    }
    for (name, table, filter) in STATE_VIEWS {
        part(name, table, Some(filter))?;
    }
    Ok(h.finalize().into())
}

/// One binding in a log entry: this row of this table now has this digest (or was deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub table: usize,
    pub id: i64,
    pub digest: Option<[u8; 32]>,
}

/// The `bound` column of an audit log entry: `{ u8(len) ‖ table ‖ i64(id) ‖ 0x01 ‖ digest(32) | 0x00 }*`
/// (0x00: the row was deleted).
pub fn encode_bindings(b: &[Binding]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() * 48);
    for x in b {
        let name = BOUND[x.table].table.as_bytes();
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&x.id.to_be_bytes());
        match &x.digest {
            Some(d) => {
                out.push(1);
                out.extend_from_slice(d);
            }
            None => out.push(0),
        }
    }
    out
}

/// Decode a `bound` column; `None` if it is malformed or names a table that is not bound.
pub fn decode_bindings(mut s: &[u8], mut f: impl FnMut(Binding)) -> Option<()> {
    while !s.is_empty() {
        let n = *s.first()? as usize;
        let name = std::str::from_utf8(s.get(1..1 + n)?).ok()?;
        let table = bound_index(name)?;
        s = &s[1 + n..];
        let id = i64::from_be_bytes(s.get(..8)?.try_into().ok()?);
        let flag = *s.get(8)?;
        s = &s[9..];
        let digest = match flag {
            1 => {
                let d: [u8; 32] = s.get(..32)?.try_into().ok()?;
                s = &s[32..];
                Some(d)
            }
            0 => None,
            _ => return None,
        };
        f(Binding { table, id, digest });
    }
    Some(())
}

/// Changes a custodian's connection made to bound tables and has not logged yet (filled by the update
/// hook, drained by the next log entry).
#[derive(Clone, Default)]
pub struct Pending(std::sync::Arc<std::sync::Mutex<Vec<(usize, i64)>>>);

impl Pending {
    /// Install the update hook on a custodian's connection.
    pub fn install(&self, conn: &mut rusqlite::Connection) -> Result<(), rusqlite::Error> {
        let me = self.clone();
        conn.update_hook(Some(move |_action, _db: &str, table: &str, id: i64| {
            if let Some(t) = bound_index(table) {
                me.lock().push((t, id));
            }
        }))?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(usize, i64)>> {
        // A poisoned lock only means a panic elsewhere; the list itself stays consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take the pending changes (each row once, in first-change order).
    pub fn take(&self) -> Vec<(usize, i64)> {
        let mut v = std::mem::take(&mut *self.lock());
        let mut seen = std::collections::HashSet::new();
        v.retain(|x| seen.insert(*x));
        v
    }

    /// Put changes back (those a bulk entry did not name).
    pub fn restore(&self, v: Vec<(usize, i64)>) {
        self.lock().extend(v);
    }

    pub fn first(&self) -> Option<(usize, i64)> {
        self.lock().first().copied()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// Bindings for the given changed rows, digests taken now.
pub fn bind(conn: &Store, changed: &[(usize, i64)]) -> Result<Vec<Binding>, AuthorityError> {
    changed.iter().map(|&(t, id)| Ok(Binding { table: t, id, digest: row_digest(conn, BOUND[t].table, id)? })).collect()
}

/// Bindings for every row of every bound table (an entry adopting rows written before binding existed).
pub fn bind_all(conn: &Store) -> Result<Vec<Binding>, AuthorityError> {
    let mut out = Vec::new();
    for (t, b) in BOUND.iter().enumerate() {
        for_each_row(conn, b.table, None, |id, d| {
            out.push(Binding { table: t, id, digest: Some(d) });
            Ok(())
        })?;
    }
    Ok(out)
}

/// Read rows into domain types (issue 10 item 3): the query's first column is the row id; `f` turns a
/// row into `T` or says why it cannot. A row that does not decode is an error naming table and row,
/// never a default.
pub fn decode_all<T, P: Params>(
    conn: &Store,
    table: &'static str,
    sql: &str,
    params: P,
    f: impl Fn(&Row) -> Result<T, String>,
) -> Result<Vec<T>, AuthorityError> {
    conn.query_all(sql, params)?.iter().map(|r| decode_row(table, r, &f)).collect()
}

/// [`decode_all`] for at most one row.
pub fn decode_one<T, P: Params>(
    conn: &Store,
    table: &'static str,
    sql: &str,
    params: P,
    f: impl Fn(&Row) -> Result<T, String>,
) -> Result<Option<T>, AuthorityError> {
    match conn.query_all(sql, params)?.first() {
        Some(r) => Ok(Some(decode_row(table, r, &f)?)),
        None => Ok(None),
    }
}

fn decode_row<T>(table: &'static str, r: &Row, f: &impl Fn(&Row) -> Result<T, String>) -> Result<T, AuthorityError> {
    let id = match r.get_ref(0)? {
        Value::Integer(i) => *i,
        _ => -1,
    };
    f(r).map_err(|why| AuthorityError::BadRow { table, row: id, why })
}

/// Column `i` as `T`, or why not (its name and what it holds: wrong type, out of range…).
pub fn col<T: super::store::FromValue>(r: &Row, i: usize) -> Result<T, String> {
    r.get::<_, T>(i).map_err(|e| match e {
        StoreError::Type { column, found, .. } => format!("column {column} holds {found}"),
        StoreError::OutOfRange { column, value } => format!("column {column} is out of range ({value})"),
        other => format!("column {}: {other}", r.column_name(i)),
    })
}

/// Column `i` parsed by `parse`, or why not.
pub fn col_parsed<T>(r: &Row, i: usize, what: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, String> {
    let s: String = col(r, i)?;
    parse(&s).ok_or_else(|| format!("{s:?} is not a {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::store::params;

    fn db() -> Store {
        let c = Store::sqlite(rusqlite::Connection::open_in_memory().unwrap(), false).unwrap();
        super::super::db::migrate(&c).unwrap();
        c
    }

    #[test]
    fn digest_covers_every_column_and_the_storage_class() {
        let c = db();
        c.execute("INSERT INTO custodians (id, recipient) VALUES (1, 'age1x')", params![]).unwrap();
        let a = row_digest(&c, "custodians", 1).unwrap().unwrap();
        c.execute("UPDATE custodians SET recipient = 'age1y' WHERE id = 1", params![]).unwrap();
        let b = row_digest(&c, "custodians", 1).unwrap().unwrap();
        assert_ne!(a, b);
        c.execute(
            "INSERT INTO batches (id, name, profile, transfer_key_id_limit, transfer_key_id, update_key_id,
             initial_balance, max_balance, created_at) VALUES (1, 'b', 'symmetric', 2, 1, 1, 5, 10, 't')",
            params![],
        )
        .unwrap();
        let int = row_digest(&c, "batches", 1).unwrap().unwrap();
        c.execute("UPDATE batches SET transfer_key_id = CAST('1' AS BLOB) WHERE id = 1", params![]).unwrap();
        assert_ne!(int, row_digest(&c, "batches", 1).unwrap().unwrap(), "storage class is encoded");
        assert_eq!(row_digest(&c, "batches", 2).unwrap(), None);
        assert!(row_digest(&c, "audit_log", 1).is_err(), "only bound tables");
    }

    #[test]
    fn known_answer() {
        // Pins the documented encoding (docs/backoffice.md): custodians row (1, 'age1x').
        let c = db();
        c.execute("INSERT INTO custodians (id, recipient) VALUES (1, 'age1x')", params![]).unwrap();
        let mut h = Sha256::new();
        h.update(b"keyroll row v1");
        h.update(10u32.to_be_bytes());
        h.update(b"custodians");
        h.update(2u32.to_be_bytes());
        h.update(2u32.to_be_bytes());
        h.update(b"id");
        h.update([1]);
        h.update(1i64.to_be_bytes());
        h.update(9u32.to_be_bytes());
        h.update(b"recipient");
        h.update([3]);
        h.update(5u32.to_be_bytes());
        h.update(b"age1x");
        let want: [u8; 32] = h.finalize().into();
        assert_eq!(row_digest(&c, "custodians", 1).unwrap().unwrap(), want);
    }

    #[test]
    fn bindings_round_trip_and_reject_garbage() {
        let b = vec![Binding { table: 3, id: 7, digest: Some([9; 32]) }, Binding { table: 8, id: -1, digest: None }];
        let enc = encode_bindings(&b);
        let mut got = Vec::new();
        decode_bindings(&enc, |x| got.push(x)).unwrap();
        assert_eq!(got, b);
        assert!(decode_bindings(&enc[..enc.len() - 1], |_| ()).is_none());
        assert!(decode_bindings(b"\x05nopes\0\0\0\0\0\0\0\0\0", |_| ()).is_none());
    }

    #[test]
    fn the_hook_sees_bound_tables_only() {
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        let p = Pending::default();
        p.install(&mut c).unwrap();
        let c = Store::sqlite(c, false).unwrap();
        super::super::db::migrate(&c).unwrap();
        p.clear();
        c.execute("INSERT INTO custodians (recipient) VALUES ('age1x')", params![]).unwrap();
        c.execute("INSERT INTO audit_head (id, last_id, last_hash, signature) VALUES (1, 1, x'00', x'00')", params![])
            .unwrap();
        c.execute("UPDATE custodians SET recipient = 'age1z'", params![]).unwrap();
        assert_eq!(p.take(), vec![(1, 1)]);
        assert!(p.take().is_empty());
    }
}
