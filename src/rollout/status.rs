//! A fleet of reference card files: key distribution, value accounting and what a roll would strand
//! (`rollout status --cards DIR`, and the demo's verdict).

use super::RolloutError;
use crate::authority::Authority;
use crate::card::CardState;
use crate::domain::{CardSerial, Total, TransferKeyId};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct Fleet {
    pub cards: Vec<(PathBuf, CardState)>,
}

impl Fleet {
    /// Every `*.card` file in `dir`.
    pub fn load(dir: &Path) -> Result<Fleet, RolloutError> {
        let entries =
            std::fs::read_dir(dir).map_err(|source| RolloutError::Folder { path: dir.to_path_buf(), source })?;
        let mut cards = Vec::new();
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "card") {
                let bytes = std::fs::read(&p).map_err(|source| RolloutError::ReadCard { path: p.clone(), source })?;
                let s =
                    CardState::decode(&bytes).map_err(|source| RolloutError::NotACard { path: p.clone(), source })?;
                cards.push((p, s));
            }
        }
        cards.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Fleet { cards })
    }

    /// Sum of the balances (never wraps: [`Total`]).
    pub fn balances(&self) -> Total {
        self.cards.iter().map(|(_, s)| s.balance).sum()
    }

    /// Value debited by a payer in this fleet and not (yet) credited by its payee: the in-flight value
    /// in the cards' exception logs. A payee outside the fleet counts as not credited.
    pub fn in_flight(&self) -> Total {
        let by_serial: BTreeMap<CardSerial, &CardState> =
            self.cards.iter().filter_map(|(_, s)| s.serial.map(|x| (x, s))).collect();
        let mut total = Total(0);
        for (_, s) in &self.cards {
            for p in s.pending_out.iter().chain(&s.exceptions) {
                // Stateless receipts: the payee's credited bit for the receipt number says it arrived.
                let credited = by_serial
                    .get(&p.payee)
                    .is_some_and(|q| q.receipts.slot(p.payee_sequence) == crate::card::receipts::Slot::Credited);
                if !credited {
                    total += p.amount;
                }
            }
        }
        total
    }

    /// Cards per transfer key id (selected id for multi-key cards).
    pub fn by_key(&self) -> BTreeMap<u32, usize> {
        let mut m = BTreeMap::new();
        for (_, s) in &self.cards {
            *m.entry(s.selected_transfer_key_id.map(|i| i.0).unwrap_or(0)).or_default() += 1;
        }
        m
    }

    /// The newest transfer key id any card holds.
    pub fn newest(&self) -> Option<TransferKeyId> {
        self.cards.iter().filter_map(|(_, s)| s.selected_transfer_key_id).max()
    }

    /// Cards whose limit admits `id` but which do not hold it yet.
    pub fn behind(&self, id: TransferKeyId) -> Vec<&Path> {
        self.cards
            .iter()
            .filter(|(_, s)| {
                s.selected_transfer_key_id.is_some_and(|cur| cur < id)
                    && s.transfer_key_id_limit.is_some_and(|l| l.admits(id))
            })
            .map(|(p, _)| p.as_path())
            .collect()
    }

    /// Cards that hold `id`.
    pub fn holding(&self, id: TransferKeyId) -> Vec<&Path> {
        self.cards.iter().filter(|(_, s)| s.selected_transfer_key_id == Some(id)).map(|(p, _)| p.as_path()).collect()
    }

    /// Cards whose limit admits `id` but which do not hold it yet, and cards whose limit is below it.
    pub fn behind_and_stranded(&self, id: TransferKeyId) -> (usize, usize) {
        let mut behind = 0;
        let mut stranded = 0;
        for (_, s) in &self.cards {
            let Some(cur) = s.selected_transfer_key_id else { continue };
            if cur >= id {
                continue;
            }
            if s.transfer_key_id_limit.is_some_and(|l| l.admits(id)) {
                behind += 1;
            } else {
                stranded += 1;
            }
        }
        (behind, stranded)
    }
}

/// `rollout status --cards DIR` as data.
#[derive(Debug, Serialize)]
pub struct Status {
    pub cards: usize,
    pub by_transfer_key_id: BTreeMap<u32, usize>,
    pub by_batch: BTreeMap<String, BTreeMap<u32, usize>>,
    pub newest_transfer_key_id: Option<TransferKeyId>,
    pub behind_newest: usize,
    pub stranded_by_newest: usize,
    /// What a roll to the next id would strand.
    pub next_id: u32,
    pub stranded_by_next: usize,
    pub balances: Total,
    pub in_flight: Total,
    /// Cards per scheme policy number they hold (0: none), DESIGN.md §10 point 4.
    pub by_policy_number: BTreeMap<u32, usize>,
    /// The newest policy: the issuer's when the database opens, else the newest any card holds.
    pub newest_policy_number: u32,
    /// Cards that do not hold the newest policy yet (settlements spread it card to card).
    pub behind_newest_policy: usize,
}

impl Status {
    pub fn of(fleet: &Fleet, batch_of: &BTreeMap<String, String>) -> Status {
        let newest = fleet.newest();
        let (behind, stranded) = newest.map(|n| fleet.behind_and_stranded(n)).unwrap_or((0, 0));
        let next = newest.map(|n| n.0 + 1).unwrap_or(1);
        let stranded_next = fleet
            .cards
            .iter()
            .filter(|(_, s)| s.transfer_key_id_limit.is_some_and(|l| !l.admits(TransferKeyId(next))))
            .count();
        let mut by_batch: BTreeMap<String, BTreeMap<u32, usize>> = BTreeMap::new();
        for (_, s) in &fleet.cards {
            let serial = s.serial.map(|x| x.to_string()).unwrap_or_default();
            let batch = batch_of.get(&serial).cloned().unwrap_or_else(|| "(unknown)".into());
            *by_batch
                .entry(batch)
                .or_default()
                .entry(s.selected_transfer_key_id.map(|i| i.0).unwrap_or(0))
                .or_default() += 1;
        }
        Status {
            cards: fleet.cards.len(),
            by_transfer_key_id: fleet.by_key(),
            by_batch,
            newest_transfer_key_id: newest,
            behind_newest: behind,
            stranded_by_newest: stranded,
            next_id: next,
            stranded_by_next: stranded_next,
            balances: fleet.balances(),
            in_flight: fleet.in_flight(),
            by_policy_number: BTreeMap::new(),
            newest_policy_number: 0,
            behind_newest_policy: 0,
        }
        .with_policies(fleet, 0)
    }

    /// Count the cards per policy number, against the newest of `issuer_newest` and the cards' own.
    pub fn with_policies(mut self, fleet: &Fleet, issuer_newest: u32) -> Status {
        let mut by = BTreeMap::new();
        for (_, s) in &fleet.cards {
            *by.entry(s.policy_number()).or_default() += 1;
        }
        let newest = by.keys().copied().max().unwrap_or(0).max(issuer_newest);
        self.behind_newest_policy = by.iter().filter(|(n, _)| **n < newest).map(|(_, c)| *c).sum();
        self.by_policy_number = by;
        self.newest_policy_number = newest;
        self
    }
}

/// `rollout status --cards DIR`: the fleet in `dir`, grouped by batch when the database at `db` opens
/// (it is optional: a fleet can be followed without the issuer's database).
pub fn status(db: &Path, dir: &Path) -> Result<Status, RolloutError> {
    let fleet = Fleet::load(dir)?;
    let (batch_of, issuer_policy) = match Authority::open_read_only(db) {
        Ok(auth) => (
            auth.cards()?.into_iter().map(|c| (c.serial.to_string(), c.batch)).collect(),
            auth.current_policy()?.map_or(0, |p| p.number),
        ),
        Err(_) => Default::default(),
    };
    Ok(Status::of(&fleet, &batch_of).with_policies(&fleet, issuer_policy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Amount;

    /// Balances and in-flight value summed over a fleet never wrap (issue 14 item 9): 4,096 cards at the
    /// largest balance hold 2^65 - 4,096 units, beyond u64 (the sum before panicked in debug builds and
    /// wrapped in release).
    #[test]
    fn sums_over_a_fleet_never_wrap() {
        let mut s = CardState::blank();
        s.balance = Amount::MAX;
        let fleet = Fleet { cards: vec![(PathBuf::from("c"), s); 4096] };
        assert_eq!(fleet.balances(), Total(4096 * Amount::MAX.0 as u128));
        assert!(fleet.balances().0 > u64::MAX as u128);
        let st = Status::of(&fleet, &BTreeMap::new());
        assert_eq!(st.balances, fleet.balances());
    }
}
