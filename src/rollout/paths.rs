//! The key-roll rule of the scheme as a model over card generations: which pair of generations settles
//! directly and by which path, which pair the older card's upper limit strands (claim 1), and which pair
//! has no direct path but still converges through other cards (a bridge). `rollout verify` checks the
//! real terminal against this model, `rollout plan` and the demo's verdict use it to explain outcomes.
//!
//! The rule mirrors the terminal's path choice (`terminal::key_sync`): a multi-key card only selects a
//! key it stores, under a common update key (claims 8-9); otherwise a common update key gives the
//! symmetric path (claims 10-11), two certified key pairs the public-key path (claims 12-16), and
//! nothing else works. A card's profile, update key and key pair never change; only its transfer key
//! does, so whether a generation can ever take key N depends on which generations can hold N.

use crate::domain::Profile;
use crate::terminal::KeyRoll;
use serde::Serialize;

/// What distinguishes cards for the key-roll protocol.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Generation {
    pub profile: Profile,
    pub transfer_key_id: u32,
    pub update_key_id: Option<u32>,
    pub transfer_key_id_limit: u32,
    /// Multi-key cards: the transfer key ids they store (they select among them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stored_transfer_key_ids: Vec<u32>,
}

impl Generation {
    /// The generation of a batch's cards; `stored` are the transfer key ids a multi-key card stores.
    pub fn of_batch(b: &crate::authority::batches::Batch, stored: Vec<u32>) -> Self {
        Generation {
            profile: b.profile,
            transfer_key_id: b.transfer_key_id.0,
            update_key_id: b.profile.has_update_key().then_some(b.update_key_id.0),
            transfer_key_id_limit: b.transfer_key_id_limit.0,
            stored_transfer_key_ids: if b.profile == Profile::MultiKey { stored } else { Vec::new() },
        }
    }

    /// `hybrid/t2/u1/l4`.
    pub fn label(&self) -> String {
        format!(
            "{}/t{}/u{}/l{}",
            self.profile,
            self.transfer_key_id,
            self.update_key_id.map(|u| u.to_string()).unwrap_or("-".into()),
            self.transfer_key_id_limit
        )
    }

    fn certified(&self) -> bool {
        self.profile.has_key_pair()
    }

    /// How this (older) generation takes key `id` from a card of generation `from` holding it, if it can.
    pub fn takes_from(&self, from: &Generation, id: u32) -> Result<KeyRoll, NoPath> {
        if id > self.transfer_key_id_limit {
            return Err(NoPath::Limit);
        }
        let same_update_key = self.update_key_id.is_some() && self.update_key_id == from.update_key_id;
        if self.profile == Profile::MultiKey {
            return match (self.stored_transfer_key_ids.contains(&id), same_update_key) {
                (true, true) => Ok(KeyRoll::Selection),
                (false, _) => Err(NoPath::NotStored),
                (true, false) => Err(NoPath::UpdateKey),
            };
        }
        if same_update_key {
            Ok(KeyRoll::Symmetric)
        } else if self.certified() && from.certified() {
            Ok(KeyRoll::PublicKey)
        } else {
            Err(NoPath::UpdateKey)
        }
    }
}

/// Why a generation cannot take a key directly from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoPath {
    /// The key is above the card's upper limit (claim 1): the card is stranded.
    Limit,
    /// A multi-key card does not store the key (claim 9 only selects).
    NotStored,
    /// The update keys differ and the cards do not both hold certified key pairs (an update-key roll).
    UpdateKey,
}

/// What a settlement between a payer and a payee of these generations must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "expect", rename_all = "kebab-case")]
pub enum Expect {
    /// The pair settles, rolling the older card's key by this path (`none` on the same key).
    Settles { key_roll: KeyRoll },
    /// The terminal must refuse: the older card's limit is below the newer key.
    Stranded,
    /// No direct path ([`NoPath::NotStored`] or [`NoPath::UpdateKey`]); with `bridged`, both cards
    /// still reach a common newer key through other generations and then settle with no roll.
    NoDirectPath { why: NoPath, bridged: bool },
}

/// For each generation: whether some card of it can come to hold transfer key `id`, starting from the
/// generations issued on `id` or later, through any chain of direct rolls.
pub fn reaches(gens: &[Generation], id: u32) -> Vec<bool> {
    let mut holds: Vec<bool> = gens.iter().map(|g| g.transfer_key_id == id).collect();
    loop {
        let mut changed = false;
        for i in 0..gens.len() {
            if holds[i] || gens[i].transfer_key_id > id {
                continue;
            }
            if (0..gens.len()).any(|j| holds[j] && gens[i].takes_from(&gens[j], id).is_ok()) {
                holds[i] = true;
                changed = true;
            }
        }
        if !changed {
            return holds;
        }
    }
}

/// The model's prediction for every ordered pair (payer `i`, payee `j`) of `gens`, row by row.
pub fn expectations(gens: &[Generation]) -> Vec<Vec<Expect>> {
    let mut ids: Vec<u32> = gens.iter().map(|g| g.transfer_key_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let reach: Vec<(u32, Vec<bool>)> = ids.iter().map(|&id| (id, reaches(gens, id))).collect();
    let bridged = |i: usize, j: usize| {
        let floor = gens[i].transfer_key_id.max(gens[j].transfer_key_id);
        reach.iter().any(|(id, r)| *id >= floor && r[i] && r[j])
    };
    (0..gens.len())
        .map(|i| {
            (0..gens.len())
                .map(|j| {
                    let (a, b) = (&gens[i], &gens[j]);
                    if a.transfer_key_id == b.transfer_key_id {
                        return Expect::Settles { key_roll: KeyRoll::None };
                    }
                    let (older, newer) = if a.transfer_key_id < b.transfer_key_id { (a, b) } else { (b, a) };
                    match older.takes_from(newer, newer.transfer_key_id) {
                        Ok(key_roll) => Expect::Settles { key_roll },
                        Err(NoPath::Limit) => Expect::Stranded,
                        Err(why) => Expect::NoDirectPath { why, bridged: bridged(i, j) },
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(profile: Profile, t: u32, u: Option<u32>, l: u32) -> Generation {
        Generation {
            profile,
            transfer_key_id: t,
            update_key_id: u,
            transfer_key_id_limit: l,
            stored_transfer_key_ids: if profile == Profile::MultiKey { (t..=l).collect() } else { vec![] },
        }
    }

    /// The demo's world after its update-key roll: symmetric cards on update key 1 cannot take key 3
    /// from the hybrid card on update key 2, but a hybrid card on update key 1 bridges them.
    #[test]
    fn an_update_key_roll_is_bridged_by_a_hybrid_generation() {
        let gens = [
            g(Profile::Symmetric, 1, Some(1), 3),
            g(Profile::Hybrid, 1, Some(1), 3),
            g(Profile::Hybrid, 3, Some(2), 4),
        ];
        let e = expectations(&gens);
        assert_eq!(e[0][2], Expect::NoDirectPath { why: NoPath::UpdateKey, bridged: true });
        assert_eq!(e[1][2], Expect::Settles { key_roll: KeyRoll::PublicKey });
        assert_eq!(e[0][1], Expect::Settles { key_roll: KeyRoll::None });
        // Without the hybrid bridge, the symmetric generation is cut off from key 3.
        let cut = [gens[0].clone(), gens[2].clone()];
        assert_eq!(expectations(&cut)[0][1], Expect::NoDirectPath { why: NoPath::UpdateKey, bridged: false });
        assert_eq!(reaches(&cut, 3), vec![false, true]);
    }

    #[test]
    fn limits_strand_and_multi_key_cards_only_select() {
        let gens = [
            g(Profile::Symmetric, 1, Some(1), 1),
            g(Profile::MultiKey, 1, Some(1), 2),
            g(Profile::Symmetric, 2, Some(1), 3),
        ];
        let e = expectations(&gens);
        assert_eq!(e[0][2], Expect::Stranded);
        assert_eq!(e[2][0], Expect::Stranded);
        assert_eq!(e[1][2], Expect::Settles { key_roll: KeyRoll::Selection });
        let mut no_store = gens[1].clone();
        no_store.stored_transfer_key_ids = vec![1];
        assert_eq!(no_store.takes_from(&gens[2], 2), Err(NoPath::NotStored));
    }
}
