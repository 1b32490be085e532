//! The tamper-evident audit log (DESIGN.md §4, §10 point 7): append-only rows, each holding the
//! SHA-256 of the previous row; the head (last id and hash) signed with the issuer's audit key
//! (ECDSA P-256). Editing, deleting, reordering or truncating rows breaks the chain or the signed head.
//! Each entry also carries the rows it wrote and the state digest after it ([`super::rows`]), so the
//! tables themselves are vouched for; `docs/backoffice.md` documents every byte.
//!
//! Row hash (schema 4 on): `SHA-256("keyroll audit v2" ‖ prev_hash ‖ id (8, BE) ‖ at ‖ 0x00 ‖ action ‖
//! 0x00 ‖ detail ‖ 0x00 ‖ u32(len bound) ‖ bound ‖ state (32))`. Entries written before schema 4 (no
//! `bound`, no `state`): `SHA-256("keyroll audit v1" ‖ prev_hash ‖ id ‖ at ‖ 0x00 ‖ action ‖ 0x00 ‖ detail)`.
//! Head signature: ECDSA over `"keyroll audit head v1" ‖ last_id (8, BE) ‖ last_hash`.
//!
//! Verification comes in two sizes. [`verify`] (auditors, `audit log`): the whole chain, the signed head,
//! and a replay of every binding compared with every bound table. [`verify_from`] (custodians, on
//! unlock): the chain from the custodian's checkpoint onward, the signed head, and the state digest of
//! the newest entry against the state tables — its cost does not grow with the number of cards.

use super::AuthorityError;
use super::rows::{self, BOUND};
use crate::crypto::card_key;

use super::store::{OptionalExtension, Store, Value, params};
use crate::crypto::signer::Signer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const ROW_LABEL_V1: &[u8] = b"keyroll audit v1";
const ROW_LABEL: &[u8] = b"keyroll audit v2";
const HEAD_LABEL: &[u8] = b"keyroll audit head v1";

fn row_hash_v1(prev: &[u8], id: i64, at: &[u8], action: &[u8], detail: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ROW_LABEL_V1);
    h.update(prev);
    h.update(id.to_be_bytes());
    h.update(at);
    h.update([0]);
    h.update(action);
    h.update([0]);
    h.update(detail);
    h.finalize().into()
}

#[allow(clippy::too_many_arguments)]
fn row_hash_v2(prev: &[u8], id: i64, at: &[u8], action: &[u8], detail: &[u8], bound: &[u8], state: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ROW_LABEL);
    h.update(prev);
    h.update(id.to_be_bytes());
    h.update(at);
    h.update([0]);
    h.update(action);
    h.update([0]);
    h.update(detail);
    h.update([0]);
    h.update((bound.len() as u32).to_be_bytes());
    h.update(bound);
    h.update(state);
    h.finalize().into()
}

/// A verified position in the log: the number of entries and the hash of the last one. A later
/// database must contain this entry unchanged (so its log extends the checkpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub count: i64,
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(s).map_err(serde::de::Error::custom)?;
        v.try_into().map_err(|_| serde::de::Error::custom("a log hash is 32 bytes"))
    }
}

/// Append a row and re-sign the head. Call inside the transaction that makes the change it records,
/// after the change: the entry binds every bound row the transaction changed so far (`pending`) and
/// carries the state digest after it.
pub fn append(
    conn: &Store,
    key: &dyn Signer,
    action: &str,
    detail: &serde_json::Value,
) -> Result<Checkpoint, AuthorityError> {
    append_bindings(conn, key, action, detail, &rows::bind(conn, &conn.take_changes()?)?)
}

/// [`append`] with explicit bindings.
pub fn append_bindings(
    conn: &Store,
    key: &dyn Signer,
    action: &str,
    detail: &serde_json::Value,
    bindings: &[rows::Binding],
) -> Result<Checkpoint, AuthorityError> {
    append_many(conn, key, std::iter::once(Ok((action.to_string(), detail.clone(), bindings.to_vec()))))
}

/// Append several entries and sign the head once, after the last (a bulk import: one signature instead
/// of one per entry). Each item is (action, detail, bindings).
pub fn append_many(
    conn: &Store,
    key: &dyn Signer,
    entries: impl IntoIterator<Item = Result<(String, serde_json::Value, Vec<rows::Binding>), AuthorityError>>,
) -> Result<Checkpoint, AuthorityError> {
    let prev_row: Option<(i64, Vec<u8>, Option<Vec<u8>>)> = conn
        .query_row("SELECT id, hash, state FROM audit_log ORDER BY id DESC LIMIT 1", params![], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let (mut prev_id, prev, prev_state) = prev_row.unwrap_or((0, vec![0u8; 32], None));
    if prev_id > 0 {
        // Only ever extend signed history: an entry slipped in after the signed head is not vouched for.
        let head: Option<(i64, Vec<u8>)> = conn
            .query_row("SELECT last_id, last_hash FROM audit_head WHERE id = 1", params![], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if head.as_ref().is_none_or(|(i, h)| *i != prev_id || *h != prev) {
            return Err(AuthorityError::Tampered(super::Tamper::Log {
                row: Some(prev_id),
                table_row: None,
                why: "the last entry is not the one the signed head covers".into(),
            }));
        }
    }
    let mut prev: [u8; 32] = prev.try_into().map_err(|_| {
        AuthorityError::Tampered(super::Tamper::Log {
            row: Some(prev_id),
            table_row: None,
            why: "the last entry's hash is not 32 bytes".into(),
        })
    })?;
    let mut state: Option<[u8; 32]> = prev_state.and_then(|s| s.try_into().ok());
    let mut insert = conn.prepare_cached(
        "INSERT INTO audit_log (id, at, action, detail, prev_hash, hash, bound, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let at = super::now();
    let mut any = false;
    for e in entries {
        let (action, detail, bindings) = e?;
        // The state digest changes only with a state table or a certificate: otherwise the previous
        // entry's is carried forward (unlock compared it with the tables).
        let touches_state = bindings
            .iter()
            .any(|b| BOUND[b.table].scope == rows::Scope::State || BOUND[b.table].table == "certificates");
        let s = match state {
            Some(s) if !touches_state => s,
            _ => rows::state_digest(conn)?,
        };
        state = Some(s);
        let id = prev_id + 1;
        let detail = detail.to_string();
        let bound = rows::encode_bindings(&bindings);
        let hash = row_hash_v2(&prev, id, at.as_bytes(), action.as_bytes(), detail.as_bytes(), &bound, &s);
        insert.execute(params![id, at, action, detail, prev.to_vec(), hash.to_vec(), bound, s.to_vec()])?;
        prev_id = id;
        prev = hash;
        any = true;
    }
    let (id, hash) = (prev_id, prev);
    if !any {
        return Ok(Checkpoint { count: id, hash });
    }
    let sig = key.sign(&[HEAD_LABEL, &id.to_be_bytes(), &hash])?.to_der().as_bytes().to_vec();
    conn.execute(
        "INSERT INTO audit_head (id, last_id, last_hash, signature) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET last_id = excluded.last_id, last_hash = excluded.last_hash, signature = excluded.signature",
        params![id, hash.to_vec(), sig],
    )?;
    Ok(Checkpoint { count: id, hash })
}

/// A row of a bound table, named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableRow {
    pub table: &'static str,
    pub id: i64,
}

/// The auditor's verdict on the log.
#[derive(Debug, Serialize)]
pub struct LogVerdict {
    pub intact: bool,
    pub rows: usize,
    /// The first log entry found bad (or where a missing entry should be), with why.
    pub first_bad_row: Option<i64>,
    /// The first table row the log does not vouch for.
    pub bad_table_row: Option<TableRow>,
    pub reason: Option<String>,
    /// SHA-256 of the audit public key, to compare with the one published at `init`.
    pub audit_key_fingerprint: String,
    /// The verified head (for `--checkpoint`), when the log is intact.
    pub head: Option<Checkpoint>,
    /// Whether every bound table was compared with a replay of the log (full verification).
    pub tables_replayed: bool,
}

impl LogVerdict {
    fn fail(&mut self, row: Option<i64>, why: String) {
        if self.intact {
            self.intact = false;
            self.first_bad_row = row;
            self.reason = Some(why);
        }
    }
    fn fail_row(&mut self, table: &'static str, id: i64, why: String) {
        if self.intact {
            self.bad_table_row = Some(TableRow { table, id });
        }
        self.fail(None, why);
    }
}

/// Fingerprint of an audit public key.
pub fn fingerprint(public_key: &[u8]) -> String {
    hex::encode(Sha256::digest(public_key))
}

/// The audit public key the issuer record names (empty if missing or edited to another type).
pub fn audit_public_key(conn: &Store) -> Result<Vec<u8>, AuthorityError> {
    Ok(conn
        .query_row("SELECT audit_public_key FROM issuer WHERE id = 1", params![], |r| r.get::<_, Value>(0))
        .optional()?
        .and_then(|v| match v {
            Value::Blob(b) => Some(b),
            _ => None,
        })
        .unwrap_or_default())
}

/// What the walk found at the end of the chain.
struct Walked {
    last: Checkpoint,
    last_state: Option<[u8; 32]>,
}

/// Walk entries after `from` (all when `None`), checking ids, links and hashes; `on_bound` sees each
/// entry's bindings column.
fn walk(
    conn: &Store,
    from: Option<&Checkpoint>,
    v: &mut LogVerdict,
    mut on_bound: impl FnMut(i64, &[u8]) -> bool,
) -> Result<Walked, AuthorityError> {
    let (mut expect_id, mut prev) = match from {
        Some(cp) => (cp.count + 1, cp.hash),
        None => (1, [0u8; 32]),
    };
    let mut last_state = None;
    // Streamed (one reused row buffer): the full verification walks a million entries and more.
    conn.for_each(
        "SELECT id, at, action, detail, prev_hash, hash, bound, state FROM audit_log WHERE id >= ?1 ORDER BY id",
        [expect_id],
        |r| -> Result<(), AuthorityError> {
            v.rows += 1;
            let id = match r.get_ref(0)? {
                Value::Integer(i) => *i,
                _ => expect_id,
            };
            let text = |i: usize| match r.get_ref(i) {
                Ok(Value::Text(t)) => Some(t.as_bytes()),
                _ => None,
            };
            let blob = |i: usize| match r.get_ref(i) {
                Ok(Value::Blob(b)) => Some(b.as_slice()),
                _ => None,
            };
            let null = |i: usize| matches!(r.get_ref(i), Ok(Value::Null));
            let (Some(at), Some(action), Some(detail), Some(stored_prev), Some(stored)) =
                (text(1), text(2), text(3), blob(4), blob(5))
            else {
                v.fail(Some(id), format!("log entry {id} was edited: a column has the wrong type"));
                expect_id = id + 1;
                prev = [0xff; 32];
                return Ok(());
            };
            let (bound, state) = (blob(6), blob(7));
            let computed = match (bound, state) {
                (Some(b), Some(s)) if s.len() == 32 => Some(row_hash_v2(&prev, id, at, action, detail, b, s)),
                _ if null(6) && null(7) => Some(row_hash_v1(&prev, id, at, action, detail)),
                _ => None,
            };
            if id != expect_id {
                v.fail(Some(expect_id), format!("log entry {expect_id} is missing (next entry is {id})"));
            } else if stored_prev != prev {
                v.fail(Some(id), format!("log entry {id} does not follow entry {}: previous-hash mismatch", id - 1));
            } else if computed.is_none_or(|c| c[..] != stored[..]) {
                v.fail(Some(id), format!("log entry {id} was edited: its content does not match its hash"));
            } else if let Some(b) = bound
                && !on_bound(id, b)
            {
                v.fail(Some(id), format!("log entry {id} has a malformed list of bound rows"));
            }
            prev = stored.try_into().unwrap_or([0xff; 32]);
            last_state = state.and_then(|s| s.try_into().ok());
            expect_id = id + 1;
            Ok(())
        },
    )?;
    Ok(Walked { last: Checkpoint { count: expect_id - 1, hash: prev }, last_state })
}

/// Check the signed head against the end of the walk.
fn check_head(conn: &Store, public: &[u8], end: &Checkpoint, v: &mut LogVerdict) -> Result<(), AuthorityError> {
    let head: Option<(i64, Vec<u8>, Vec<u8>)> = conn
        .query_row("SELECT last_id, last_hash, signature FROM audit_head WHERE id = 1", params![], |r| {
            Ok((r.get::<_, Value>(0)?, r.get::<_, Value>(1)?, r.get::<_, Value>(2)?))
        })
        .optional()?
        .and_then(|cells| match cells {
            (Value::Integer(i), Value::Blob(h), Value::Blob(s)) => Some((i, h, s)),
            _ => None,
        });
    let last_id = end.count;
    match head {
        None => v.fail(Some(1), "the signed head is missing".into()),
        Some((hid, hhash, sig)) => {
            if card_key::verify(public, &[HEAD_LABEL, &hid.to_be_bytes(), &hhash], &sig).is_err() {
                v.fail(Some(hid), "the head signature does not verify with the issuer's audit key".into());
            } else if hid > last_id {
                v.fail(
                    Some(last_id + 1),
                    format!("the log was truncated: the signed head names entry {hid}, the last entry is {last_id}"),
                );
            } else if hid < last_id {
                v.fail(Some(hid + 1), format!("entries after {hid} are not covered by the signed head"));
            } else if hhash[..] != end.hash[..] {
                v.fail(Some(hid), format!("log entry {hid} does not match the signed head"));
            }
        }
    }
    Ok(())
}

fn new_verdict(conn: &Store) -> Result<(LogVerdict, Vec<u8>), AuthorityError> {
    let public = audit_public_key(conn)?;
    let mut v = LogVerdict {
        intact: true,
        rows: 0,
        first_bad_row: None,
        bad_table_row: None,
        reason: None,
        audit_key_fingerprint: fingerprint(&public),
        head: None,
        tables_replayed: false,
    };
    if public.is_empty() {
        v.fail(Some(1), "the issuer record (with the audit public key) is missing or edited".into());
    }
    Ok((v, public))
}

/// Whether the newest entry's state digest matches the state tables now (a state-less newest entry is a
/// database from before row binding: `Ok(None)`).
fn check_state(conn: &Store, last_state: Option<[u8; 32]>, v: &mut LogVerdict) -> Result<(), AuthorityError> {
    if let Some(s) = last_state
        && v.intact
        && rows::state_digest(conn)? != s
    {
        v.fail(
            None,
            "the state tables (issuer, custodians, secrets, keys, batches, CA, revocations) differ from the state the signed log records".into(),
        );
    }
    Ok(())
}

/// One binding of the log, as the replay collects them: the entry that wrote (or deleted) a row, in log
/// order (`seq`).
#[derive(Clone, Copy)]
struct Write {
    table: u8,
    id: i64,
    seq: u64,
    entry: i64,
    digest: Option<[u8; 32]>,
}

/// The newest write of every row the log wrote, sorted by (table, id): each row's bindings sorted in log
/// order, the last one kept. A sorted list, not a hash map: the tables are then read in id order and
/// merged with it, which at a million rows is several times cheaper than a million hash inserts and
/// removals (measured with perf on `audit log`).
fn newest_writes(mut writes: Vec<Write>) -> Vec<Write> {
    use rayon::slice::ParallelSliceMut;
    writes.par_sort_unstable_by_key(|w| (w.table, w.id, w.seq));
    let mut out: Vec<Write> = Vec::with_capacity(writes.len());
    for w in writes {
        match out.last_mut() {
            Some(last) if last.table == w.table && last.id == w.id => *last = w,
            _ => out.push(w),
        }
    }
    out
}

/// Full verification for auditors: the whole chain and signed head, then every bound table compared
/// with a replay of the log's bindings (a row must equal the last entry that wrote it; a row the log
/// wrote must exist unless an entry deleted it). Cost: linear in the log and the tables.
pub fn verify(conn: &Store) -> Result<LogVerdict, AuthorityError> {
    let (mut v, public) = new_verdict(conn)?;
    let mut writes: Vec<Write> = Vec::new();
    let mut bound_entries = 0usize;
    let walked = walk(conn, None, &mut v, |entry, b| {
        bound_entries += 1;
        rows::decode_bindings(b, |x| {
            let seq = writes.len() as u64;
            writes.push(Write { table: x.table as u8, id: x.id, seq, entry, digest: x.digest });
        })
        .is_some()
    })?;
    check_head(conn, &public, &walked.last, &mut v)?;
    if bound_entries > 0 {
        let writes = newest_writes(writes);
        // The first row the log wrote that is gone (by entry), reported after the scan.
        let mut missing: Option<(i64, usize, i64)> = None;
        let mut gone = |w: &Write| {
            if w.digest.is_some() && missing.is_none_or(|(e, _, _)| w.entry < e) {
                missing = Some((w.entry, w.table as usize, w.id));
            }
        };
        for (t, b) in BOUND.iter().enumerate() {
            let from = writes.partition_point(|w| (w.table as usize) < t);
            let to = writes.partition_point(|w| (w.table as usize) <= t);
            let mine = &writes[from..to];
            let mut next = 0usize;
            // Rows come in ascending id, as the list is sorted: a merge.
            rows::for_each_row(conn, b.table, None, |id, d| {
                while let Some(w) = mine.get(next).filter(|w| w.id < id) {
                    gone(w);
                    next += 1;
                }
                match mine.get(next).filter(|w| w.id == id) {
                    Some(w) => {
                        next += 1;
                        match w.digest {
                            Some(logged) if logged == d => {}
                            Some(_) => v.fail_row(
                                b.table,
                                id,
                                format!("{} row {id} differs from what log entry {} recorded", b.table, w.entry),
                            ),
                            None => v.fail_row(
                                b.table,
                                id,
                                format!("{} row {id} exists but log entry {} deleted it", b.table, w.entry),
                            ),
                        }
                    }
                    None => v.fail_row(
                        b.table,
                        id,
                        format!("{} row {id} was written outside keyroll: no log entry vouches for it", b.table),
                    ),
                }
                Ok(())
            })?;
            mine[next.min(mine.len())..].iter().for_each(&mut gone);
        }
        if let Some((entry, t, id)) = missing {
            let table = BOUND[t].table;
            v.fail_row(table, id, format!("{table} row {id}, written by log entry {entry}, was deleted"));
        }
        v.tables_replayed = true;
    } else if v.intact && walked.last.count > 0 {
        v.fail(
            None,
            "no log entry binds the tables (a database from before row binding that no custodian has opened since)"
                .into(),
        );
    }
    check_state(conn, walked.last_state, &mut v)?;
    if v.intact {
        v.head = Some(walked.last);
    }
    Ok(v)
}

/// Custodian verification from a checkpoint: the checkpoint's entry must still be there unchanged, the
/// entries after it must chain to the signed head, and the newest state digest must match the state
/// tables. Cost: the entries since the checkpoint plus the state tables. Without a checkpoint, the
/// whole chain is walked (once; the caller then stores one). Returns the verdict and whether the newest
/// entry carries a state digest (a database from before row binding has none).
pub fn verify_from(conn: &Store, from: Option<&Checkpoint>) -> Result<(LogVerdict, bool), AuthorityError> {
    let (mut v, public) = new_verdict(conn)?;
    // The walk starts AT the checkpoint's entry (from its stored predecessor hash), so that entry's
    // content, state digest included, is re-hashed and must give the checkpoint's hash.
    let mut start = None;
    if let Some(cp) = from {
        let at: Option<(Vec<u8>, Vec<u8>)> = conn
            .query_row("SELECT hash, prev_hash FROM audit_log WHERE id = ?1", [cp.count], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .unwrap_or(None);
        match at.as_ref().map(|(h, _)| h) {
            None => {
                let last: i64 =
                    conn.query_row("SELECT coalesce(max(id), 0) FROM audit_log", params![], |r| r.get(0))?;
                v.fail(
                    Some(cp.count),
                    format!(
                        "rolled back: the log has {last} entries, but this custodian already saw {} (its checkpoint)",
                        cp.count
                    ),
                );
                return Ok((v, false));
            }
            Some(h) if h[..] != cp.hash[..] => {
                v.fail(
                    Some(cp.count),
                    format!("log entry {} is not the one this custodian saw (its checkpoint): the log was rewritten or rolled back", cp.count),
                );
                return Ok((v, false));
            }
            Some(_) => {}
        }
        let prev: [u8; 32] = at.and_then(|(_, p)| p.try_into().ok()).unwrap_or([0xff; 32]);
        start = Some(Checkpoint { count: cp.count - 1, hash: prev });
    }
    let walked = walk(conn, start.as_ref(), &mut v, |_, _| true)?;
    let last_state = walked.last_state;
    check_head(conn, &public, &walked.last, &mut v)?;
    check_state(conn, last_state, &mut v)?;
    if v.intact {
        v.head = Some(walked.last);
    }
    Ok((v, last_state.is_some()))
}

/// Whether a later verified head extends a checkpoint: the checkpoint's entry must still be there with
/// the same hash.
pub fn extends(conn: &Store, cp: &Checkpoint) -> Result<Result<(), String>, AuthorityError> {
    let at: Option<Vec<u8>> =
        conn.query_row("SELECT hash FROM audit_log WHERE id = ?1", [cp.count], |r| r.get(0)).optional()?;
    Ok(match at {
        None => Err(format!("the log has fewer than the {} entries the checkpoint recorded: rolled back", cp.count)),
        Some(h) if h[..] != cp.hash[..] => {
            Err(format!("log entry {} differs from the checkpoint: the log was rewritten or rolled back", cp.count))
        }
        Some(_) => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Authority, Tamper, secret_name};
    use super::*;
    use crate::crypto::card_key::CardKeyPair;

    /// Rewrite a database's log as an older keyroll wrote it (v1 hashes, no bindings, no state) and
    /// re-sign the head, as a database from before schema 4 would be.
    fn make_pre_binding(auth: &Authority, key: &CardKeyPair) {
        let rows: Vec<(i64, String, String, String)> = auth
            .conn
            .prepare("SELECT id, at, action, detail FROM audit_log ORDER BY id")
            .unwrap()
            .query_map(params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut prev = [0u8; 32];
        for (id, at, action, detail) in rows {
            let h = row_hash_v1(&prev, id, at.as_bytes(), action.as_bytes(), detail.as_bytes());
            auth.conn
                .execute(
                    "UPDATE audit_log SET prev_hash = ?2, hash = ?3, bound = NULL, state = NULL WHERE id = ?1",
                    params![id, prev.to_vec(), h.to_vec()],
                )
                .unwrap();
            prev = h;
        }
        let last: i64 = auth.conn.query_row("SELECT max(id) FROM audit_log", params![], |r| r.get(0)).unwrap();
        let sig = key.sign(&[HEAD_LABEL, &last.to_be_bytes(), &prev]);
        auth.conn
            .execute(
                "UPDATE audit_head SET last_id = ?1, last_hash = ?2, signature = ?3",
                params![last, prev.to_vec(), sig],
            )
            .unwrap();
    }

    #[test]
    fn a_database_from_before_row_binding_is_adopted_once_by_a_custodian() {
        let d = tempfile::tempdir().unwrap();
        let (db, id) = (d.path().join("x.db"), d.path().join("x.identity"));
        let (auth, _) = Authority::init(&db, "Old Issuer", &[], &id).unwrap();
        let key = {
            let u = auth.unlock(Some(&id)).unwrap();
            CardKeyPair::from_bytes(u.secret(secret_name::AUDIT_KEY).unwrap().expose()).unwrap()
        };
        make_pre_binding(&auth, &key);
        // Auditors: intact chain, but no entry binds the tables yet.
        let v = verify(&auth.conn).unwrap();
        assert!(!v.intact && v.reason.as_deref().unwrap_or("").contains("before row binding"), "{v:?}");
        // A custodian with a checkpoint from after binding refuses a state-less newest entry…
        assert!(matches!(auth.unlock(Some(&id)), Err(AuthorityError::Tampered(Tamper::Log { .. }))));
        // …a custodian without one (the first to open an old database) verifies it all and adopts it.
        std::fs::remove_file(super::super::checkpoint::CustodianState::for_identity(&id).path).unwrap();
        let u = auth.unlock(Some(&id)).unwrap();
        drop(u);
        let (action, bound): (String, Vec<u8>) = auth
            .conn
            .query_row("SELECT action, bound FROM audit_log ORDER BY id DESC LIMIT 1", params![], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(action, "bind rows");
        assert!(!bound.is_empty());
        let v = verify(&auth.conn).unwrap();
        assert!(v.intact && v.tables_replayed, "{v:?}");
        // And from then on, edits are caught like anywhere else.
        auth.conn.execute("UPDATE keys SET kcv = '000000' WHERE id = 1", params![]).unwrap();
        assert!(!verify(&auth.conn).unwrap().intact);
    }
}
