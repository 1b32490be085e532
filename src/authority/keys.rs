//! Key versions: transfer keys and update keys, each generation a row with its identifier, state
//! (pending → active → retired), key check value and the key as age ciphertext (never plaintext).
//! Identifiers strictly increase per kind and are never reused: rows are never deleted.

use super::rows::{col, col_parsed, decode_all, decode_one};
use super::store::{OptionalExtension, Row, Store, params};
use super::{AuthorityError, SecretRef, Unlocked, custody, now};
use crate::crypto::{Secret16, TransferKey, UpdateKey};
use crate::domain::{TransferKeyId, UpdateKeyId};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Transfer,
    Update,
}

impl KeyKind {
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Transfer => "transfer",
            KeyKind::Update => "update",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [KeyKind::Transfer, KeyKind::Update].into_iter().find(|k| k.name() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Pending,
    Active,
    Retired,
}

impl KeyState {
    pub fn name(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
        }
    }
    /// The state's name as stored; anything else is not a key state (never a default).
    pub fn parse(s: &str) -> Option<Self> {
        [KeyState::Pending, KeyState::Active, KeyState::Retired].into_iter().find(|k| k.name() == s)
    }
}

/// What `key retire` did.
#[derive(Clone, Debug, Serialize)]
pub struct RetireOutcome {
    pub kind: KeyKind,
    pub id: u32,
    /// Retired although still needed (`--force`; the log entry says so).
    pub forced: bool,
    pub newest_active: bool,
    pub unfinished_batches: Vec<String>,
}

/// A key version as listed (never the key).
#[derive(Clone, Debug, Serialize)]
pub struct KeyRow {
    pub kind: KeyKind,
    pub id: u32,
    pub state: KeyState,
    pub kcv: String,
    pub created_at: String,
    pub activated_at: Option<String>,
    pub retired_at: Option<String>,
}

/// Generate the next version of `kind`, store it encrypted; returns (id, kcv, key).
pub(super) fn insert_new(
    conn: &Store,
    recipients: &[age::x25519::Recipient],
    kind: KeyKind,
    state: KeyState,
) -> Result<(u32, String, Secret16), AuthorityError> {
    let next: u32 =
        conn.query_row("SELECT coalesce(max(key_id), 0) + 1 FROM keys WHERE kind = ?1", [kind.name()], |r| r.get(0))?;
    let secret = Secret16::random()?;
    let kcv = hex::encode_upper(crate::crypto::keys::key_check_value(&secret));
    let ct = custody::encrypt(recipients, secret.expose())?;
    let at = now();
    conn.execute(
        "INSERT INTO keys (kind, key_id, state, kcv, ciphertext, created_at, activated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![kind.name(), next, state.name(), kcv, ct, at, (state == KeyState::Active).then_some(&at)],
    )?;
    Ok((next, kcv, secret))
}

fn key_row(r: &Row) -> Result<KeyRow, String> {
    let id: u32 = col(r, 2)?;
    if id == 0 {
        return Err("column key_id is 0".into());
    }
    Ok(KeyRow {
        kind: col_parsed(r, 1, "key kind", KeyKind::parse)?,
        id,
        state: col_parsed(r, 3, "key state", KeyState::parse)?,
        kcv: col(r, 4)?,
        created_at: col(r, 5)?,
        activated_at: col(r, 6)?,
        retired_at: col(r, 7)?,
    })
}

const SELECT: &str = "SELECT id, kind, key_id, state, kcv, created_at, activated_at, retired_at FROM keys";

pub fn list(conn: &Store) -> Result<Vec<KeyRow>, AuthorityError> {
    decode_all(conn, "keys", &format!("{SELECT} ORDER BY kind DESC, key_id"), params![], key_row)
}

/// One key version.
pub fn get(conn: &Store, kind: KeyKind, id: u32) -> Result<KeyRow, AuthorityError> {
    decode_one(conn, "keys", &format!("{SELECT} WHERE kind = ?1 AND key_id = ?2"), params![kind.name(), id], key_row)?
        .ok_or(AuthorityError::NoSuchKey { kind: kind.name(), id })
}

fn state_of(conn: &Store, kind: KeyKind, id: u32) -> Result<KeyState, AuthorityError> {
    Ok(get(conn, kind, id)?.state)
}

/// Newest key id of a kind in a state (None if there is none).
pub fn newest(conn: &Store, kind: KeyKind, state: Option<KeyState>) -> Result<Option<u32>, AuthorityError> {
    let v: Option<u32> = match state {
        Some(s) => conn.query_row(
            "SELECT max(key_id) FROM keys WHERE kind = ?1 AND state = ?2",
            params![kind.name(), s.name()],
            |r| r.get(0),
        )?,
        None => conn.query_row("SELECT max(key_id) FROM keys WHERE kind = ?1", [kind.name()], |r| r.get(0))?,
    };
    Ok(v)
}

/// Ids of a kind in a state, ascending.
pub fn ids_in_state(conn: &Store, kind: KeyKind, state: KeyState) -> Result<Vec<u32>, AuthorityError> {
    let mut stmt = conn.prepare("SELECT key_id FROM keys WHERE kind = ?1 AND state = ?2 ORDER BY key_id")?;
    let rows = stmt.query_map(params![kind.name(), state.name()], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl Unlocked<'_> {
    /// `key new`: the next version, pending or active.
    /// A key created active is authorised by the scheme key at once (DESIGN.md §10 point 3); a pending
    /// one only when it is activated.
    pub fn new_key(&self, kind: KeyKind, pending: bool) -> Result<(u32, String), AuthorityError> {
        let recipients = self.auth.recipients()?;
        let signer = if pending { None } else { Some(self.scheme_signer()?.0) };
        self.write(|c| {
            let state = if pending { KeyState::Pending } else { KeyState::Active };
            let (id, kcv, key) = insert_new(c, &recipients, kind, state)?;
            self.log(
                c,
                "key new",
                serde_json::json!({ "kind": kind.name(), "id": id, "state": state.name(), "kcv": kcv }),
            )?;
            if let Some(signer) = &signer {
                self.authorise_activated(c, signer, kind, id, &key)?;
            }
            Ok((id, kcv))
        })
    }

    /// `key activate`: pending → active, and the scheme key signs the key's authorisation.
    pub fn activate(&self, kind: KeyKind, id: u32) -> Result<(), AuthorityError> {
        let (signer, _) = self.scheme_signer()?;
        self.write(|c| {
            let s = state_of(c, kind, id)?;
            if s != KeyState::Pending {
                return Err(AuthorityError::KeyState {
                    kind: kind.name(),
                    id,
                    state: s.name(),
                    why: "only a pending key can be activated",
                });
            }
            c.execute(
                "UPDATE keys SET state = 'active', activated_at = ?3 WHERE kind = ?1 AND key_id = ?2",
                params![kind.name(), id, now()],
            )?;
            self.log(c, "key activate", serde_json::json!({ "kind": kind.name(), "id": id }))?;
            let key = self.load(kind, id)?;
            self.authorise_activated(c, &signer, kind, id, &key)?;
            Ok(())
        })
    }

    /// `key retire`: pending or active → retired (NIST SP 800-57 Part 1 §5.3: a retired key is no longer
    /// used to apply protection). Refused, unless `force` (then logged as forced), while the key is
    /// still needed: the newest active key of its kind (new batches take it), or the key of a batch that
    /// still has cards to personalise (reserved, unfinished runs) — those cards would otherwise get a key
    /// nobody may use. The only active key of a kind is never retired.
    pub fn retire(&self, kind: KeyKind, id: u32, force: bool) -> Result<RetireOutcome, AuthorityError> {
        self.write(|c| {
            let s = state_of(c, kind, id)?;
            let refuse = |why: &'static str| AuthorityError::KeyState { kind: kind.name(), id, state: s.name(), why };
            if s == KeyState::Retired {
                return Err(refuse("it is already retired"));
            }
            let active = ids_in_state(c, kind, KeyState::Active)?;
            if s == KeyState::Active && active.len() == 1 {
                return Err(refuse("it is the only active key of its kind; create and activate a newer one first"));
            }
            let column = match kind {
                KeyKind::Transfer => "transfer_key_id",
                KeyKind::Update => "update_key_id",
            };
            let batches: Vec<String> = {
                let mut stmt = c.prepare(&format!(
                    "SELECT b.name FROM batches b WHERE b.{column} = ?1 AND EXISTS
                       (SELECT 1 FROM cards x WHERE x.batch_id = b.id AND x.state = 'reserved') ORDER BY b.id"
                ))?;
                stmt.query_map([id], |r| r.get(0))?.collect::<Result<_, _>>()?
            };
            let newest_active = s == KeyState::Active && active.last() == Some(&id);
            if !force {
                if newest_active {
                    return Err(AuthorityError::KeyInUse { kind: kind.name(), id, newest_active: true, batches });
                }
                if !batches.is_empty() {
                    return Err(AuthorityError::KeyInUse { kind: kind.name(), id, newest_active: false, batches });
                }
            }
            c.execute(
                "UPDATE keys SET state = 'retired', retired_at = ?3 WHERE kind = ?1 AND key_id = ?2",
                params![kind.name(), id, now()],
            )?;
            let forced = force && (newest_active || !batches.is_empty());
            let mut detail = serde_json::json!({ "kind": kind.name(), "id": id });
            if forced {
                detail["forced"] = serde_json::json!({ "newest_active": newest_active, "unfinished_batches": batches });
            }
            self.log(c, "key retire", detail)?;
            Ok(RetireOutcome { kind, id, forced, newest_active, unfinished_batches: batches })
        })
    }

    fn load(&self, kind: KeyKind, id: u32) -> Result<Secret16, AuthorityError> {
        let ct: Option<Vec<u8>> = self
            .conn()
            .query_row("SELECT ciphertext FROM keys WHERE kind = ?1 AND key_id = ?2", params![kind.name(), id], |r| {
                r.get(0)
            })
            .optional()?;
        let pt = self.custodian.decrypt(&ct.ok_or(AuthorityError::NoSuchKey { kind: kind.name(), id })?)?;
        Secret16::from_slice(pt.expose())
            .ok_or(AuthorityError::MalformedSecret(SecretRef::Key { kind: kind.name(), id }))
    }

    /// The secret of a key version (same crate only: the scheme key commits to it).
    pub(super) fn key_secret(&self, kind: KeyKind, id: u32) -> Result<Secret16, AuthorityError> {
        self.load(kind, id)
    }

    pub fn transfer_key(&self, id: u32) -> Result<TransferKey, AuthorityError> {
        Ok(TransferKey::new(TransferKeyId(id), self.load(KeyKind::Transfer, id)?))
    }

    pub fn update_key(&self, id: u32) -> Result<UpdateKey, AuthorityError> {
        Ok(UpdateKey::new(UpdateKeyId(id), self.load(KeyKind::Update, id)?))
    }

    /// `key export`: an age file to `recipient` holding the chosen keys as JSON
    /// (`{"transfer_keys":[{"id","kcv","key"}], "update_keys":[…]}`, keys in hex), for a
    /// personalisation line or an escrow. The plaintext is built only in zeroizing buffers. Call
    /// [`Unlocked::record_export`] once the file is written.
    pub fn export(&self, recipient: &str, transfer: &[u32], update: &[u32]) -> Result<Vec<u8>, AuthorityError> {
        use std::fmt::Write;
        let r = custody::parse_recipient(recipient)?;
        let issuer = serde_json::to_string(&self.auth.issuer_name()?).expect("json string");
        let mut doc = zeroize::Zeroizing::new(String::with_capacity(256));
        write!(doc, "{{\"format\":\"keyroll-key-export/1\",\"issuer\":{issuer}").expect("string");
        for (field, kind, ids) in
            [("transfer_keys", KeyKind::Transfer, transfer), ("update_keys", KeyKind::Update, update)]
        {
            write!(doc, ",\"{field}\":[").expect("string");
            for (n, id) in ids.iter().enumerate() {
                let k = self.load(kind, *id)?;
                let key_hex = zeroize::Zeroizing::new(hex::encode(k.expose()));
                let kcv = hex::encode_upper(crate::crypto::keys::key_check_value(&k));
                let sep = if n == 0 { "" } else { "," };
                write!(doc, "{sep}{{\"id\":{id},\"kcv\":\"{kcv}\",\"key\":\"{}\"}}", key_hex.as_str()).expect("string");
            }
            doc.push(']');
        }
        doc.push('}');
        custody::encrypt(&[r], doc.as_bytes())
    }

    /// Record a written export in the audit log (ids only).
    pub fn record_export(&self, recipient: &str, transfer: &[u32], update: &[u32]) -> Result<(), AuthorityError> {
        self.write(|c| {
            self.log(c, "key export", serde_json::json!({ "to": recipient, "transfer": transfer, "update": update }))?;
            Ok(())
        })
    }
}
