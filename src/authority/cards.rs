//! Personalisation runs and the card register. A run reserves its serials up front in one
//! transaction; each card is recorded when written, in its own transaction. A run killed half-way is
//! found again by the same command (same batch, target and count) and finished: cards recorded as
//! personalised are skipped, reserved ones are (re)written under the serial they were given.

use super::batches::{self, Batch, amount};
use super::keys::{self, KeyKind, KeyState};
use super::rows::{col, col_parsed, decode_all};
use super::store::{OptionalExtension, Store, params};
use super::{AuthorityError, Unlocked, now};
use crate::domain::{Amount, CardSerial, Profile, Total, TransferKeyId, TransferKeyIdLimit, UpdateKeyId};
use serde::Serialize;

/// Issuer prefix of card serials: "KR" then a 48-bit counter.
pub const SERIAL_BASE: u64 = 0x4B52_0000_0000_0000;

#[derive(Debug, Clone)]
pub struct Run {
    pub id: i64,
    pub batch: Batch,
    pub target: String,
    pub count: u32,
    /// Whether an interrupted run was adopted.
    pub resumed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub seq: u32,
    pub serial: CardSerial,
    pub personalised: bool,
    /// The serial was handed to a physical card (INITIALIZE may have reached it).
    pub initialised: bool,
}

/// Where a card of the register is in its personalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CardState {
    /// Serial reserved by a run; the card may not exist yet.
    Reserved,
    /// Written and recorded.
    Personalised,
}

impl CardState {
    pub fn name(self) -> &'static str {
        match self {
            CardState::Reserved => "reserved",
            CardState::Personalised => "personalised",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [CardState::Reserved, CardState::Personalised].into_iter().find(|c| c.name() == s)
    }
}

/// A card in the register.
#[derive(Debug, Clone, Serialize)]
pub struct CardRecord {
    pub serial: CardSerial,
    pub batch: String,
    pub state: CardState,
    pub profile: Profile,
    pub transfer_key_id: TransferKeyId,
    pub update_key_id: Option<UpdateKeyId>,
    pub transfer_key_id_limit: TransferKeyIdLimit,
    pub issued_value: Amount,
    pub file: Option<String>,
    pub personalised_at: Option<String>,
}

fn alive(pid: i64) -> bool {
    pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn slots(conn: &Store, run: i64) -> Result<Vec<Slot>, AuthorityError> {
    decode_all(
        conn,
        "cards",
        "SELECT id, seq, serial, state, initialised_at IS NOT NULL FROM cards WHERE run_id = ?1 ORDER BY seq",
        [run],
        |r| {
            Ok(Slot {
                seq: col(r, 1)?,
                serial: col_parsed(r, 2, "card serial", CardSerial::parse)?,
                personalised: col_parsed(r, 3, "card state", CardState::parse)? == CardState::Personalised,
                initialised: col(r, 4)?,
            })
        },
    )
}

pub fn list(conn: &Store) -> Result<Vec<CardRecord>, AuthorityError> {
    decode_all(
        conn,
        "cards",
        "SELECT c.id, c.serial, b.name, c.state, c.profile, c.transfer_key_id, c.update_key_id, c.transfer_key_id_limit,
                c.issued_value, c.file, c.personalised_at
         FROM cards c JOIN batches b ON b.id = c.batch_id ORDER BY c.id",
        params![],
        |r| {
            Ok(CardRecord {
                serial: col_parsed(r, 1, "card serial", CardSerial::parse)?,
                batch: col(r, 2)?,
                state: col_parsed(r, 3, "card state", CardState::parse)?,
                profile: col_parsed(r, 4, "card profile", Profile::parse)?,
                transfer_key_id: TransferKeyId(col(r, 5)?),
                update_key_id: col::<Option<u32>>(r, 6)?.map(UpdateKeyId),
                transfer_key_id_limit: TransferKeyIdLimit(col(r, 7)?),
                issued_value: amount(r, 8)?,
                file: col(r, 9)?,
                personalised_at: col(r, 10)?,
            })
        },
    )
}

/// Total value issued onto personalised cards (summed in 128 bits: never wraps).
pub fn issued_value(conn: &Store) -> Result<Total, AuthorityError> {
    let mut total = Total(0);
    for a in
        decode_all(conn, "cards", "SELECT id, issued_value FROM cards WHERE state = 'personalised'", params![], |r| {
            amount(r, 1)
        })?
    {
        total += a;
    }
    Ok(total)
}

/// Refuse a batch whose keys were retired (NIST SP 800-57 Part 1 §5.3: a retired key applies no new
/// protection): no card is personalised on one.
fn check_keys_live(conn: &Store, b: &Batch) -> Result<(), AuthorityError> {
    let mut needed = vec![(KeyKind::Transfer, b.transfer_key_id.0)];
    if b.profile.has_update_key() {
        needed.push((KeyKind::Update, b.update_key_id.0));
    }
    for (kind, id) in needed {
        if keys::get(conn, kind, id)?.state == KeyState::Retired {
            return Err(AuthorityError::RetiredKey { batch: b.name.clone(), kind: kind.name(), id });
        }
    }
    Ok(())
}

impl Unlocked<'_> {
    /// Start (or resume) a personalisation run of `count` cards of `batch` to `target`.
    pub fn start_run(&self, batch: &str, target: &str, count: u32) -> Result<(Run, Vec<Slot>), AuthorityError> {
        if count == 0 {
            return Err(AuthorityError::BadBatch("the count must be at least 1"));
        }
        let me = std::process::id() as i64;
        self.write(|c| {
            let b = batches::get(c, batch)?;
            check_keys_live(c, &b)?;
            let open: Option<(i64, Option<i64>)> = c
                .query_row(
                    "SELECT id, owner_pid FROM perso_runs WHERE batch_id = ?1 AND target = ?2 AND count = ?3 AND finished_at IS NULL
                     ORDER BY id LIMIT 1",
                    params![b.row, target, count],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            // An open run whose owner is gone is finished by this process: on PostgreSQL the owner holds
            // the run's advisory lock for as long as it lives (on any site); on SQLite, its pid.
            let free = |id: i64, owner: Option<i64>| -> Result<bool, AuthorityError> {
                Ok(match c.claim_run(id)? {
                    Some(got) => got,
                    None => !owner.is_some_and(|p| p != me && alive(p)),
                })
            };
            if let Some((id, owner)) = open
                && free(id, owner)?
            {
                c.execute("UPDATE perso_runs SET owner_pid = ?2 WHERE id = ?1", params![id, me])?;
                self.log(c, "perso resume", serde_json::json!({ "run": id, "batch": batch, "target": target, "count": count }))?;
                let s = slots(c, id)?;
                return Ok((Run { id, batch: b, target: target.to_string(), count, resumed: true }, s));
            }
            let run: i64 = c.query_row(
                "INSERT INTO perso_runs (batch_id, target, count, owner_pid, started_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 RETURNING id",
                params![b.row, target, count, me, now()],
                |r| r.get(0),
            )?;
            c.claim_run(run)?;
            let first: i64 = c.query_row("SELECT coalesce(max(id), 0) + 1 FROM cards", params![], |r| r.get(0))?;
            let update_key = b.profile.has_update_key().then_some(b.update_key_id.0);
            let at = now();
            for seq in 0..count {
                let serial = CardSerial::from_u64(SERIAL_BASE + first as u64 + seq as u64);
                c.execute(
                    "INSERT INTO cards (serial, batch_id, run_id, seq, state, profile, transfer_key_id, update_key_id,
                                        transfer_key_id_limit, issued_value, reserved_at)
                     VALUES (?1, ?2, ?3, ?4, 'reserved', ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        serial.to_string(),
                        b.row,
                        run,
                        seq,
                        b.profile.name(),
                        b.transfer_key_id.0,
                        update_key,
                        b.transfer_key_id_limit.0,
                        b.initial_balance.0 as i64,
                        at
                    ],
                )?;
            }
            let last = CardSerial::from_u64(SERIAL_BASE + first as u64 + count as u64 - 1);
            self.log(
                c,
                "perso run",
                serde_json::json!({ "run": run, "batch": batch, "target": target, "count": count,
                                    "serials": [CardSerial::from_u64(SERIAL_BASE + first as u64).to_string(), last.to_string()] }),
            )?;
            let s = slots(c, run)?;
            Ok((Run { id: run, batch: b, target: target.to_string(), count, resumed: false }, s))
        })
    }

    /// Record one card as personalised (and its chip as locked: never personalised again).
    pub fn record_card(
        &self,
        run: &Run,
        slot: &Slot,
        file: Option<&str>,
        chip: Option<crate::domain::ChipId>,
    ) -> Result<(), AuthorityError> {
        self.write(|c| {
            let n = c.execute(
                "UPDATE cards SET state = 'personalised', file = ?3, personalised_at = ?4 WHERE run_id = ?1 AND seq = ?2 AND state = 'reserved'",
                params![run.id, slot.seq, file, now()],
            )?;
            if n == 1 {
                // The chip is locked in the same logged change (its row is bound to this entry).
                if let Some(chip) = chip {
                    self.lock_chip(c, chip)?;
                }
                self.log(
                    c,
                    "card personalised",
                    serde_json::json!({ "serial": slot.serial.to_string(), "batch": run.batch.name,
                        "transfer_key_id": run.batch.transfer_key_id.0, "issued_value": run.batch.initial_balance.0,
                        "chip_id": chip.map(|c| c.to_string()) }),
                )?;
            }
            Ok(())
        })
    }

    /// Record, before INITIALIZE is sent, that `slot`'s serial goes to the card in the reader: from then on
    /// only that card (found again by its serial) may finish the slot.
    pub fn mark_initialised(&self, run: &Run, slot: &Slot) -> Result<(), AuthorityError> {
        self.write(|c| {
            let n = c.execute(
                "UPDATE cards SET initialised_at = ?3 WHERE run_id = ?1 AND seq = ?2 AND initialised_at IS NULL",
                params![run.id, slot.seq, now()],
            )?;
            if n == 1 {
                self.log(
                    c,
                    "card initialised",
                    serde_json::json!({ "serial": slot.serial.to_string(), "run": run.id }),
                )?;
            }
            Ok(())
        })
    }

    pub fn finish_run(&self, run: &Run) -> Result<(), AuthorityError> {
        self.write(|c| {
            c.execute(
                "UPDATE perso_runs SET finished_at = ?2, owner_pid = NULL WHERE id = ?1",
                params![run.id, now()],
            )?;
            self.log(
                c,
                "perso run finished",
                serde_json::json!({ "run": run.id, "batch": run.batch.name, "count": run.count }),
            )?;
            Ok(())
        })
    }
}
