//! Personalisation batches: a profile, the keys new cards take, the upper limit of the transfer key
//! identifier (claim 1) and balances; and `rollout plan`, which says how many cards a roll strands.

use super::keys::{self, KeyKind, KeyState};
use super::rows::{col, col_parsed, decode_all, decode_one};
use super::store::{Row, Store, params};
use super::{AuthorityError, MAX_BATCH_NAME, Unlocked, check_name, now};
use crate::domain::{Amount, Profile, TransferKeyId, TransferKeyIdLimit, UpdateKeyId};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Batch {
    #[serde(skip)]
    pub row: i64,
    pub name: String,
    pub profile: Profile,
    pub transfer_key_id_limit: TransferKeyIdLimit,
    pub transfer_key_id: TransferKeyId,
    pub update_key_id: UpdateKeyId,
    pub initial_balance: Amount,
    pub max_balance: Amount,
    pub created_at: String,
    pub personalised: u64,
}

/// Parameters of `batch new`.
#[derive(Clone, Debug)]
pub struct NewBatch {
    pub name: String,
    pub profile: Profile,
    pub transfer_key_id_limit: TransferKeyIdLimit,
    pub initial_balance: Amount,
    pub max_balance: Amount,
}

const SELECT: &str = "SELECT b.id, b.name, b.profile, b.transfer_key_id_limit, b.transfer_key_id, b.update_key_id,
    b.initial_balance, b.max_balance, b.created_at,
    (SELECT count(*) FROM cards c WHERE c.batch_id = b.id AND c.state = 'personalised')
    FROM batches b";

/// A stored amount: an integer in `0..=Amount::MAX`.
pub(super) fn amount(r: &Row, i: usize) -> Result<Amount, String> {
    let v: i64 = col(r, i)?;
    u64::try_from(v).ok().and_then(Amount::new).ok_or_else(|| format!("amount {v} is outside 0..={}", Amount::MAX))
}

fn row(r: &Row) -> Result<Batch, String> {
    Ok(Batch {
        row: col(r, 0)?,
        name: col(r, 1)?,
        profile: col_parsed(r, 2, "card profile", Profile::parse)?,
        transfer_key_id_limit: TransferKeyIdLimit(col(r, 3)?),
        transfer_key_id: TransferKeyId(col(r, 4)?),
        update_key_id: UpdateKeyId(col(r, 5)?),
        initial_balance: amount(r, 6)?,
        max_balance: amount(r, 7)?,
        created_at: col(r, 8)?,
        personalised: col::<i64>(r, 9)?.max(0) as u64,
    })
}

pub fn list(conn: &Store) -> Result<Vec<Batch>, AuthorityError> {
    decode_all(conn, "batches", &format!("{SELECT} ORDER BY b.id"), params![], row)
}

pub fn get(conn: &Store, name: &str) -> Result<Batch, AuthorityError> {
    decode_one(conn, "batches", &format!("{SELECT} WHERE b.name = ?1"), [name], row)?
        .ok_or_else(|| AuthorityError::NoSuchBatch(name.to_string()))
}

/// Per-batch outcome of `rollout plan --transfer-key ID`.
#[derive(Debug, Serialize)]
pub struct PlanRow {
    pub batch: String,
    pub profile: Profile,
    pub transfer_key_id_limit: TransferKeyIdLimit,
    pub personalised: u64,
    /// Cards that could not take transfer key `ID` (limit below it).
    pub stranded: u64,
}

/// How many personalised cards each batch would strand if transfer key `id` went live: cards whose limit
/// is below `id`, and multi-key cards that do not store `id` (claim 9 only selects among stored keys:
/// they store the keys that existed, up to their limit, when they were personalised).
pub fn plan(conn: &Store, id: u32) -> Result<Vec<PlanRow>, AuthorityError> {
    let mut stranded_multi = conn.prepare(
        "SELECT count(*) FROM cards c WHERE c.batch_id = ?1 AND c.state = 'personalised'
           AND NOT EXISTS (SELECT 1 FROM keys k WHERE k.kind = 'transfer' AND k.key_id = ?2
                                                  AND k.created_at <= c.personalised_at)",
    )?;
    let mut rows = Vec::new();
    for b in list(conn)? {
        let stranded = if !b.transfer_key_id_limit.admits(TransferKeyId(id)) {
            b.personalised
        } else if b.profile == Profile::MultiKey && TransferKeyId(id) > b.transfer_key_id {
            stranded_multi.query_row(params![b.row, id], |r| r.get::<_, i64>(0))?.max(0) as u64
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
        check_name("batch name", &b.name, MAX_BATCH_NAME)?;
        if b.max_balance == Amount(0) || b.initial_balance > b.max_balance {
            return Err(AuthorityError::BadBatch("need 0 <= initial balance <= maximum balance and a maximum above 0"));
        }
        if b.max_balance > Amount::MAX {
            // Every sum the back office makes over cards is a `Total` (u128) and cannot wrap; the bound
            // keeps each amount exact in JSON (2^53) and in SQLite's signed 64-bit integers.
            return Err(AuthorityError::BadBatch(
                "the maximum balance is above the largest amount keyroll handles (2^53 - 1)",
            ));
        }
        self.write(|c| {
            if get(c, &b.name).is_ok() {
                return Err(AuthorityError::BatchExists(b.name.clone()));
            }
            let newest = keys::newest(c, KeyKind::Transfer, None)?.unwrap_or(0);
            if !b.transfer_key_id_limit.admits(TransferKeyId(newest)) {
                return Err(AuthorityError::LimitBelowNewest { limit: b.transfer_key_id_limit.0, newest });
            }
            let tk = keys::newest(c, KeyKind::Transfer, Some(KeyState::Active))?.ok_or(AuthorityError::NoActiveKey("transfer"))?;
            let uk = keys::newest(c, KeyKind::Update, Some(KeyState::Active))?.ok_or(AuthorityError::NoActiveKey("update"))?;
            c.execute(
                "INSERT INTO batches (name, profile, transfer_key_id_limit, transfer_key_id, update_key_id, initial_balance, max_balance, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![b.name, b.profile.name(), b.transfer_key_id_limit.0, tk, uk, b.initial_balance.0 as i64, b.max_balance.0 as i64, now()],
            )?;
            self.log(
                c,
                "batch new",
                serde_json::json!({
                    "name": b.name, "profile": b.profile.name(), "transfer_key_id_limit": b.transfer_key_id_limit.0,
                    "transfer_key_id": tk, "update_key_id": uk,
                    "initial_balance": b.initial_balance.0, "max_balance": b.max_balance.0,
                }),
            )?;
            get(c, &b.name)
        })
    }
}
