//! Key versions: transfer keys and update keys, each generation a row with its identifier, state
//! (pending → active → retired), key check value and the key as age ciphertext (never plaintext).
//! Identifiers strictly increase per kind and are never reused: rows are never deleted.

use super::{AuthorityError, Unlocked, custody, now};
use crate::crypto::{Secret16, TransferKey, UpdateKey};
use crate::domain::{TransferKeyId, UpdateKeyId};
use rusqlite::{Connection, OptionalExtension, params};
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
    fn parse(s: &str) -> Self {
        match s {
            "pending" => KeyState::Pending,
            "active" => KeyState::Active,
            _ => KeyState::Retired,
        }
    }
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
    conn: &Connection,
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

pub fn list(conn: &Connection) -> Result<Vec<KeyRow>, AuthorityError> {
    let mut stmt = conn.prepare(
        "SELECT kind, key_id, state, kcv, created_at, activated_at, retired_at FROM keys ORDER BY kind DESC, key_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(KeyRow {
            kind: if r.get::<_, String>(0)? == "transfer" { KeyKind::Transfer } else { KeyKind::Update },
            id: r.get(1)?,
            state: KeyState::parse(&r.get::<_, String>(2)?),
            kcv: r.get(3)?,
            created_at: r.get(4)?,
            activated_at: r.get(5)?,
            retired_at: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn state_of(conn: &Connection, kind: KeyKind, id: u32) -> Result<KeyState, AuthorityError> {
    let s: Option<String> = conn
        .query_row("SELECT state FROM keys WHERE kind = ?1 AND key_id = ?2", params![kind.name(), id], |r| r.get(0))
        .optional()?;
    s.map(|s| KeyState::parse(&s)).ok_or(AuthorityError::NoSuchKey { kind: kind.name(), id })
}

/// Newest key id of a kind in a state (None if there is none).
pub fn newest(conn: &Connection, kind: KeyKind, state: Option<KeyState>) -> Result<Option<u32>, AuthorityError> {
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
pub fn ids_in_state(conn: &Connection, kind: KeyKind, state: KeyState) -> Result<Vec<u32>, AuthorityError> {
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
                    state: s.name().into(),
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

    /// `key retire`: pending or active → retired. The newest active key of a kind cannot be retired
    /// while it is the only active one (new batches would have nothing to take).
    pub fn retire(&self, kind: KeyKind, id: u32) -> Result<(), AuthorityError> {
        self.write(|c| {
            let s = state_of(c, kind, id)?;
            if s == KeyState::Retired {
                return Err(AuthorityError::KeyState {
                    kind: kind.name(),
                    id,
                    state: s.name().into(),
                    why: "it is already retired",
                });
            }
            if s == KeyState::Active && ids_in_state(c, kind, KeyState::Active)?.len() == 1 {
                return Err(AuthorityError::KeyState {
                    kind: kind.name(),
                    id,
                    state: s.name().into(),
                    why: "it is the only active key of its kind; create and activate a newer one first",
                });
            }
            c.execute(
                "UPDATE keys SET state = 'retired', retired_at = ?3 WHERE kind = ?1 AND key_id = ?2",
                params![kind.name(), id, now()],
            )?;
            self.log(c, "key retire", serde_json::json!({ "kind": kind.name(), "id": id }))?;
            Ok(())
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
        Secret16::from_slice(pt.expose()).ok_or_else(|| AuthorityError::BadSecret(format!("{} key {id}", kind.name())))
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
