//! Personalisation batches: a profile, the keys new cards take, the upper limit of the transfer key
//! identifier (claim 1) and balances; and `rollout plan`, which says how many cards a roll strands.

use super::keys::{self, KeyKind, KeyState};
use super::{AuthorityError, Unlocked, now};
use crate::domain::Profile;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Batch {
    #[serde(skip)]
    pub row: i64,
    pub name: String,
    pub profile: Profile,
    pub transfer_key_id_limit: u32,
    pub transfer_key_id: u32,
    pub update_key_id: u32,
    pub initial_balance: u64,
    pub max_balance: u64,
    pub created_at: String,
    pub personalised: u64,
}

/// Parameters of `batch new`.
#[derive(Clone, Debug)]
pub struct NewBatch {
    pub name: String,
    pub profile: Profile,
    pub transfer_key_id_limit: u32,
    pub initial_balance: u64,
    pub max_balance: u64,
}

const SELECT: &str = "SELECT b.id, b.name, b.profile, b.transfer_key_id_limit, b.transfer_key_id, b.update_key_id,
    b.initial_balance, b.max_balance, b.created_at,
    (SELECT count(*) FROM cards c WHERE c.batch_id = b.id AND c.state = 'personalised')
    FROM batches b";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Batch> {
    let profile: String = r.get(2)?;
    Ok(Batch {
        row: r.get(0)?,
        name: r.get(1)?,
        profile: Profile::parse(&profile).unwrap_or(Profile::Symmetric),
        transfer_key_id_limit: r.get(3)?,
        transfer_key_id: r.get(4)?,
        update_key_id: r.get(5)?,
        initial_balance: r.get::<_, i64>(6)? as u64,
        max_balance: r.get::<_, i64>(7)? as u64,
        created_at: r.get(8)?,
        personalised: r.get::<_, i64>(9)? as u64,
    })
}

pub fn list(conn: &Connection) -> Result<Vec<Batch>, AuthorityError> {
    let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY b.id"))?;
    Ok(stmt.query_map([], row)?.collect::<Result<_, _>>()?)
}

pub fn get(conn: &Connection, name: &str) -> Result<Batch, AuthorityError> {
    conn.query_row(&format!("{SELECT} WHERE b.name = ?1"), [name], row)
        .optional()?
        .ok_or_else(|| AuthorityError::NoSuchBatch(name.to_string()))
}

/// Per-batch outcome of `rollout plan --transfer-key ID`.
#[derive(Debug, Serialize)]
pub struct PlanRow {
    pub batch: String,
    pub profile: Profile,
    pub transfer_key_id_limit: u32,
    pub personalised: u64,
    /// Cards that could not take transfer key `ID` (limit below it).
    pub stranded: u64,
}

/// How many personalised cards each batch would strand if transfer key `id` went live: cards whose limit
/// is below `id`, and multi-key cards that do not store `id` (claim 9 only selects among stored keys:
/// they store the keys that existed, up to their limit, when they were personalised).
pub fn plan(conn: &Connection, id: u32) -> Result<Vec<PlanRow>, AuthorityError> {
    let mut stranded_multi = conn.prepare(
        "SELECT count(*) FROM cards c WHERE c.batch_id = ?1 AND c.state = 'personalised'
           AND NOT EXISTS (SELECT 1 FROM keys k WHERE k.kind = 'transfer' AND k.key_id = ?2
                                                  AND k.created_at <= c.personalised_at)",
    )?;
    let mut rows = Vec::new();
    for b in list(conn)? {
        let stranded = if b.transfer_key_id_limit < id {
            b.personalised
        } else if b.profile == Profile::MultiKey && id > b.transfer_key_id {
            stranded_multi.query_row(params![b.row, id], |r| r.get::<_, i64>(0))? as u64
        } else {
            0
        };
        rows.push(PlanRow {
            stranded,
            batch: b.name,
            profile: b.profile,
            transfer_key_id_limit: b.transfer_key_id_limit,
            personalised: b.personalised,
        });
    }
    Ok(rows)
}

impl Unlocked<'_> {
    /// `batch new`: takes the newest active transfer and update keys; the limit must be at least the
    /// newest transfer key id that exists (pending included), so no planned roll strands a new card.
    pub fn new_batch(&self, b: &NewBatch) -> Result<Batch, AuthorityError> {
        if b.name.trim().is_empty() {
            return Err(AuthorityError::BadBatch("the batch name must not be empty"));
        }
        if b.max_balance == 0 || b.initial_balance > b.max_balance {
            return Err(AuthorityError::BadBatch("need 0 <= initial balance <= maximum balance and a maximum above 0"));
        }
        if b.max_balance > i64::MAX as u64 {
            return Err(AuthorityError::BadBatch("maximum balance too large"));
        }
        self.write(|c| {
            if get(c, &b.name).is_ok() {
                return Err(AuthorityError::BatchExists(b.name.clone()));
            }
            let newest = keys::newest(c, KeyKind::Transfer, None)?.unwrap_or(0);
            if b.transfer_key_id_limit < newest {
                return Err(AuthorityError::LimitBelowNewest { limit: b.transfer_key_id_limit, newest });
            }
            let tk = keys::newest(c, KeyKind::Transfer, Some(KeyState::Active))?.ok_or(AuthorityError::NoActiveKey("transfer"))?;
            let uk = keys::newest(c, KeyKind::Update, Some(KeyState::Active))?.ok_or(AuthorityError::NoActiveKey("update"))?;
            c.execute(
                "INSERT INTO batches (name, profile, transfer_key_id_limit, transfer_key_id, update_key_id, initial_balance, max_balance, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![b.name, b.profile.name(), b.transfer_key_id_limit, tk, uk, b.initial_balance as i64, b.max_balance as i64, now()],
            )?;
            self.log(
                c,
                "batch new",
                serde_json::json!({
                    "name": b.name, "profile": b.profile.name(), "transfer_key_id_limit": b.transfer_key_id_limit,
                    "transfer_key_id": tk, "update_key_id": uk,
                    "initial_balance": b.initial_balance, "max_balance": b.max_balance,
                }),
            )?;
            get(c, &b.name)
        })
    }
}
