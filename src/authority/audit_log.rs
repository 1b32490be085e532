//! The tamper-evident audit log (DESIGN.md §4, §6 property 10): append-only rows, each holding the
//! SHA-256 of the previous row; the head (last id and hash) signed with the issuer's audit key
//! (ECDSA P-256). Editing, deleting, reordering or truncating rows breaks the chain or the signed head.
//!
//! Row hash: `SHA-256("keyroll audit v1" ‖ prev_hash ‖ id (8, BE) ‖ at ‖ 0x00 ‖ action ‖ 0x00 ‖ detail)`.
//! Head signature: ECDSA over `"keyroll audit head v1" ‖ last_id (8, BE) ‖ last_hash`.

use super::AuthorityError;
use crate::crypto::card_key::{self, CardKeyPair};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

const ROW_LABEL: &[u8] = b"keyroll audit v1";
const HEAD_LABEL: &[u8] = b"keyroll audit head v1";

fn row_hash(prev: &[u8], id: i64, at: &str, action: &str, detail: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ROW_LABEL);
    h.update(prev);
    h.update(id.to_be_bytes());
    h.update(at.as_bytes());
    h.update([0]);
    h.update(action.as_bytes());
    h.update([0]);
    h.update(detail.as_bytes());
    h.finalize().into()
}

/// Append a row and re-sign the head. Call inside the transaction that makes the change it records,
/// so the change and its record commit together or not at all.
pub fn append(
    conn: &Connection,
    key: &CardKeyPair,
    action: &str,
    detail: &serde_json::Value,
) -> Result<i64, AuthorityError> {
    let (prev_id, prev): (i64, Vec<u8>) = conn
        .query_row("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, vec![0u8; 32]));
    let id = prev_id + 1;
    let at = super::now();
    let detail = detail.to_string();
    let hash = row_hash(&prev, id, &at, action, &detail);
    conn.execute(
        "INSERT INTO audit_log (id, at, action, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, at, action, detail, prev, hash.to_vec()],
    )?;
    let sig = key.sign(&[HEAD_LABEL, &id.to_be_bytes(), &hash]);
    conn.execute(
        "INSERT INTO audit_head (id, last_id, last_hash, signature) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET last_id = excluded.last_id, last_hash = excluded.last_hash, signature = excluded.signature",
        params![id, hash.to_vec(), sig],
    )?;
    Ok(id)
}

/// The auditor's verdict on the log.
#[derive(Debug, Serialize)]
pub struct LogVerdict {
    pub intact: bool,
    pub rows: usize,
    /// The first row found bad (or where a missing row should be), with why.
    pub first_bad_row: Option<i64>,
    pub reason: Option<String>,
    /// SHA-256 of the audit public key, to compare with the one published at `init`.
    pub audit_key_fingerprint: String,
}

/// Fingerprint of an audit public key.
pub fn fingerprint(public_key: &[u8]) -> String {
    hex::encode(Sha256::digest(public_key))
}

/// Verify the whole log against the issuer's audit public key.
pub fn verify(conn: &Connection) -> Result<LogVerdict, AuthorityError> {
    // Tampering can change a column's type or delete the issuer row: read loosely, judge strictly.
    let public: Vec<u8> = conn
        .query_row("SELECT audit_public_key FROM issuer WHERE id = 1", [], |r| r.get::<_, Value>(0))
        .optional()?
        .and_then(|v| match v {
            Value::Blob(b) => Some(b),
            _ => None,
        })
        .unwrap_or_default();
    let mut verdict = LogVerdict {
        intact: true,
        rows: 0,
        first_bad_row: None,
        reason: None,
        audit_key_fingerprint: fingerprint(&public),
    };
    let fail = |v: &mut LogVerdict, row: i64, why: String| {
        if v.intact {
            v.intact = false;
            v.first_bad_row = Some(row);
            v.reason = Some(why);
        }
    };
    if public.is_empty() {
        fail(&mut verdict, 1, "the issuer record (with the audit public key) is missing or edited".into());
    }
    let mut stmt = conn.prepare("SELECT id, at, action, detail, prev_hash, hash FROM audit_log ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut expect_id = 1i64;
    let mut prev = vec![0u8; 32];
    while let Some(r) = rows.next()? {
        let cells: Vec<Value> = (0..6).map(|i| r.get::<_, Value>(i)).collect::<Result<_, _>>()?;
        let row = match &cells[..] {
            [
                Value::Integer(id),
                Value::Text(at),
                Value::Text(action),
                Value::Text(detail),
                Value::Blob(p),
                Value::Blob(h),
            ] => Some((*id, at.clone(), action.clone(), detail.clone(), p.clone(), h.clone())),
            _ => None,
        };
        let Some((id, at, action, detail, stored_prev, stored)) = row else {
            let at_row = match cells[0] {
                Value::Integer(i) => i,
                _ => expect_id,
            };
            fail(&mut verdict, at_row, format!("row {at_row} was edited: a column has the wrong type"));
            verdict.rows += 1;
            expect_id = at_row + 1;
            prev = vec![];
            continue;
        };
        verdict.rows += 1;
        if id != expect_id {
            fail(&mut verdict, expect_id, format!("row {expect_id} is missing (next row is {id})"));
        } else if stored_prev != prev {
            fail(&mut verdict, id, format!("row {id} does not follow row {}: previous-hash mismatch", id - 1));
        } else if row_hash(&prev, id, &at, &action, &detail)[..] != stored[..] {
            fail(&mut verdict, id, format!("row {id} was edited: its content does not match its hash"));
        }
        prev = stored;
        expect_id = id + 1;
    }
    let last_id = expect_id - 1;
    let head: Option<(i64, Vec<u8>, Vec<u8>)> = conn
        .query_row("SELECT last_id, last_hash, signature FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get::<_, Value>(0)?, r.get::<_, Value>(1)?, r.get::<_, Value>(2)?))
        })
        .optional()?
        .and_then(|cells| match cells {
            (Value::Integer(i), Value::Blob(h), Value::Blob(s)) => Some((i, h, s)),
            _ => None,
        });
    match head {
        None => fail(&mut verdict, 1, "the signed head is missing".into()),
        Some((hid, hhash, sig)) => {
            if card_key::verify(&public, &[HEAD_LABEL, &hid.to_be_bytes(), &hhash], &sig).is_err() {
                fail(&mut verdict, hid, "the head signature does not verify with the issuer's audit key".into());
            } else if hid > last_id {
                fail(
                    &mut verdict,
                    last_id + 1,
                    format!("the log was truncated: the signed head names row {hid}, the last row is {last_id}"),
                );
            } else if hid < last_id {
                fail(&mut verdict, hid + 1, format!("rows after {hid} are not covered by the signed head"));
            } else if hhash != prev {
                fail(&mut verdict, hid, format!("row {hid} does not match the signed head"));
            }
        }
    }
    Ok(verdict)
}
