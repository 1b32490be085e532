//! The reconciliations `keyroll reconcile` made (issue 13 item 5; DESIGN.md §10 points 6 and 7).
//!
//! Each run is one row of `reconciliations` (schema 8), written in the same transaction as the signed
//! log entry `reconcile` that binds it ([`super::rows`], state scope): every custodian checks the table
//! at unlock and `audit log` replays it, so an edited result is tampering like an edited key. The row
//! keeps what the run found (issued, balances, in flight, unaccounted, the number of flags) and what it
//! read: a digest of the card log exports and the head of every settlement journal. `audit report`
//! shows the latest one; the next `reconcile` holds each journal to the newest head recorded for it
//! ([`journal_anchors`]), which is what makes a deleted last journal line detectable: the journal
//! itself cannot say it lost its tail, the database (outside the journal, signed) can.

use super::rows::{col, decode_all, decode_one};
use super::store::{Row, Store, params};
use super::{AuthorityError, Unlocked, now};
use crate::domain::Total;
use serde::{Deserialize, Serialize};

/// A settlement journal as a reconciliation saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalHead {
    /// The journal's path (absolute when it resolved).
    pub name: String,
    /// Its number of lines.
    pub lines: u64,
    /// SHA-256 (hex) of its first line: the journal's identity (`None` for an empty journal).
    pub first: Option<String>,
    /// SHA-256 (hex) of its last line, the head the next line chains to (all zeros when empty).
    pub head: String,
}

/// What one `reconcile` run found and read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reconciled {
    pub cards: u64,
    pub issued: Total,
    pub balances: Total,
    pub in_flight: Total,
    /// `issued − balances − in_flight`: 0 when every unit is accounted for.
    pub unaccounted: i128,
    pub transfers_in_flight: u64,
    /// How many things the run flagged (minting, edited exports, journals…).
    pub flags: u64,
    /// SHA-256 (hex) over the card log exports it read (`docs/backoffice.md`).
    #[serde(serialize_with = "hex_digest")]
    pub cards_digest: [u8; 32],
    /// The head of each journal, as anchored for the next run.
    pub journals: Vec<JournalHead>,
}

impl Reconciled {
    /// Every unit accounted for and nothing flagged.
    pub fn accounted(&self) -> bool {
        self.unaccounted == 0 && self.flags == 0
    }
}

/// A recorded reconciliation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReconciliationRecord {
    /// Row id (1 for the first reconciliation of the database).
    pub id: i64,
    /// When it was recorded, RFC 3339.
    pub at: String,
    #[serde(flatten)]
    pub result: Reconciled,
    /// Same as `result.accounted()`, for readers of the JSON.
    pub accounted: bool,
}

const SELECT: &str = "SELECT id, at, cards, issued, balances, in_flight, unaccounted, transfers_in_flight, flags,
    cards_digest, journals FROM reconciliations";

fn decimal<T: std::str::FromStr>(r: &Row, i: usize) -> Result<T, String> {
    let s: String = col(r, i)?;
    // Canonical decimal only: no sign on unsigned sums, no leading zeros, no blanks.
    let canonical = !s.is_empty() && !s.starts_with('+') && (s == "0" || !s.trim_start_matches('-').starts_with('0'));
    match s.parse::<T>() {
        Ok(v) if canonical => Ok(v),
        _ => Err(format!("column {} holds {s:?}, not a decimal number", r.column_name(i))),
    }
}

fn count(r: &Row, i: usize) -> Result<u64, String> {
    let v: i64 = col(r, i)?;
    u64::try_from(v).map_err(|_| format!("column {} is negative ({v})", r.column_name(i)))
}

fn row(r: &Row) -> Result<ReconciliationRecord, String> {
    let digest: Vec<u8> = col(r, 9)?;
    let journals: String = col(r, 10)?;
    let result = Reconciled {
        cards: count(r, 2)?,
        issued: Total(decimal(r, 3)?),
        balances: Total(decimal(r, 4)?),
        in_flight: Total(decimal(r, 5)?),
        unaccounted: decimal(r, 6)?,
        transfers_in_flight: count(r, 7)?,
        flags: count(r, 8)?,
        cards_digest: digest.try_into().map_err(|_| "cards_digest is not 32 bytes".to_string())?,
        journals: serde_json::from_str(&journals).map_err(|e| format!("journals does not decode: {e}"))?,
    };
    Ok(ReconciliationRecord { id: col(r, 0)?, at: col(r, 1)?, accounted: result.accounted(), result })
}

/// The newest reconciliation, if any.
pub fn latest(conn: &Store) -> Result<Option<ReconciliationRecord>, AuthorityError> {
    decode_one(conn, "reconciliations", &format!("{SELECT} ORDER BY id DESC LIMIT 1"), params![], row)
}

/// Every reconciliation, oldest first.
pub fn list(conn: &Store) -> Result<Vec<ReconciliationRecord>, AuthorityError> {
    decode_all(conn, "reconciliations", &format!("{SELECT} ORDER BY id"), params![], row)
}

/// The newest head recorded for each settlement journal, with the reconciliation that recorded it: a
/// journal is known by its first line's hash, or (an emptied or replaced journal) by its name.
pub fn journal_anchors(conn: &Store) -> Result<Vec<(JournalHead, ReconciliationRecord)>, AuthorityError> {
    let mut out: Vec<(JournalHead, ReconciliationRecord)> = Vec::new();
    for rec in list(conn)?.into_iter().rev() {
        for j in &rec.result.journals {
            let known = out.iter().any(|(a, _)| a.name == j.name || (a.first.is_some() && a.first == j.first));
            if !known {
                out.push((j.clone(), rec.clone()));
            }
        }
    }
    Ok(out)
}

fn hex_digest<S: serde::Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(d))
}

/// Text of a sum for its column.
fn text(v: impl std::fmt::Display) -> String {
    v.to_string()
}

impl Unlocked<'_> {
    /// Record a reconciliation and log it (action `reconcile`, binding the row).
    pub fn record_reconciliation(&self, r: &Reconciled) -> Result<ReconciliationRecord, AuthorityError> {
        let journals = serde_json::to_string(&r.journals).map_err(|e| AuthorityError::BadRow {
            table: "reconciliations",
            row: 0,
            why: format!("journals do not encode: {e}"),
        })?;
        // SQLite's (and PostgreSQL's BIGINT) integers are signed 64-bit; counts past that are not real.
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.write(|c| {
            let id: i64 = c.query_row(
                "INSERT INTO reconciliations (at, cards, issued, balances, in_flight, unaccounted,
                     transfers_in_flight, flags, cards_digest, journals)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
                params![
                    now(),
                    int(r.cards),
                    text(r.issued),
                    text(r.balances),
                    text(r.in_flight),
                    text(r.unaccounted),
                    int(r.transfers_in_flight),
                    int(r.flags),
                    r.cards_digest.to_vec(),
                    journals
                ],
                |row| row.get(0),
            )?;
            self.log(
                c,
                "reconcile",
                serde_json::json!({
                    "reconciliation": id,
                    "cards": r.cards,
                    "issued": text(r.issued),
                    "balances": text(r.balances),
                    "in_flight": text(r.in_flight),
                    "unaccounted": text(r.unaccounted),
                    "flags": r.flags,
                    "accounted": r.accounted(),
                    "cards_digest": hex::encode(r.cards_digest),
                    "journals": r.journals.iter().map(|j| serde_json::json!({ "name": j.name, "lines": j.lines, "head": j.head })).collect::<Vec<_>>(),
                }),
            )?;
            decode_one(c, "reconciliations", &format!("{SELECT} WHERE id = ?1"), [id], row)?
                .ok_or(AuthorityError::BadRow { table: "reconciliations", row: id, why: "vanished after insert".into() })
        })
    }

    /// [`journal_anchors`] through a custodian's connection (the table was checked at unlock).
    pub fn journal_anchors(&self) -> Result<Vec<(JournalHead, ReconciliationRecord)>, AuthorityError> {
        journal_anchors(self.conn())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Store {
        let c = Store::sqlite(rusqlite::Connection::open_in_memory().unwrap(), false).unwrap();
        super::super::db::migrate(&c).unwrap();
        c
    }

    fn insert(c: &Store, issued: &str, journals: &str) {
        c.execute(
            "INSERT INTO reconciliations (at, cards, issued, balances, in_flight, unaccounted, transfers_in_flight,
             flags, cards_digest, journals) VALUES ('t', 2, ?1, '10', '0', '0', 0, 0, ?2, ?3)",
            params![issued, vec![7u8; 32], journals],
        )
        .unwrap();
    }

    fn head(name: &str, lines: u64, first: Option<&str>, head: &str) -> String {
        serde_json::to_string(&JournalHead {
            name: name.into(),
            lines,
            first: first.map(String::from),
            head: head.into(),
        })
        .unwrap()
    }

    #[test]
    fn a_row_that_does_not_decode_is_an_error_naming_it_never_a_default() {
        let c = db();
        insert(&c, "10", "[]");
        let r = latest(&c).unwrap().unwrap();
        assert_eq!((r.id, r.result.issued, r.accounted), (1, Total(10), true));
        for bad in ["-1", "010", "ten", "", "+5", " 5"] {
            c.execute("UPDATE reconciliations SET issued = ?1", params![bad]).unwrap();
            assert!(
                matches!(latest(&c), Err(AuthorityError::BadRow { table: "reconciliations", row: 1, .. })),
                "{bad:?}"
            );
        }
        c.execute("UPDATE reconciliations SET issued = '10', journals = '[{\"x\":1}]'", params![]).unwrap();
        assert!(matches!(latest(&c), Err(AuthorityError::BadRow { .. })));
        c.execute("UPDATE reconciliations SET journals = '[]', cards_digest = x'00'", params![]).unwrap();
        assert!(matches!(latest(&c), Err(AuthorityError::BadRow { .. })));
    }

    #[test]
    fn the_newest_head_of_each_journal_is_its_anchor() {
        let c = db();
        insert(&c, "10", &format!("[{},{}]", head("/a", 2, Some("f1"), "h2"), head("/b", 1, Some("g1"), "k1")));
        insert(&c, "10", &format!("[{}]", head("/a", 3, Some("f1"), "h3")));
        // The same journal (same first line) under another name: still journal a.
        insert(&c, "10", &format!("[{}]", head("/moved/a", 4, Some("f1"), "h4")));
        let a = journal_anchors(&c).unwrap();
        let got: Vec<(&str, u64, i64)> = a.iter().map(|(j, r)| (j.name.as_str(), j.lines, r.id)).collect();
        assert_eq!(got, vec![("/moved/a", 4, 3), ("/b", 1, 1)]);
    }
}
