//! `rollout plan --transfer-key ID`: what a roll to transfer key ID does to the cards already out, per
//! batch. Two things keep a card from the new key: its upper limit (claim 1; a multi-key card also needs
//! the key among those it stores, claim 9), and an update-key roll: a card without a key pair takes a
//! newer key only from a card on its own update key, so once new cards carry a newer update key, older
//! symmetric cards get the key only if some generation bridges the two (a hybrid card on the old update
//! key, which takes the key by the public-key path and passes it on by the symmetric one).

use super::RolloutError;
use super::paths::{Generation, reaches};
use crate::authority::Authority;
use crate::authority::keys::{KeyKind, KeyState};
use crate::domain::Profile;
use crate::terminal::KeyRoll;
use serde::Serialize;

/// How a batch's cards come to the planned key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reach {
    /// Issued on it (or a newer one).
    Holds,
    /// Directly from a card that holds it, by this roll.
    Direct(KeyRoll),
    /// Through cards of another batch that take it first.
    Bridge,
    /// Never: its limit is below the key, or (multi-key) it does not store it.
    Stranded,
    /// Never: no chain of key rolls reaches it (an update-key roll with no bridge).
    CutOff,
}

#[derive(Debug, Serialize)]
pub struct PlanBatch {
    pub batch: String,
    pub profile: Profile,
    pub transfer_key_id: u32,
    pub update_key_id: Option<u32>,
    pub transfer_key_id_limit: u32,
    pub personalised: u64,
    /// Cards that can never take the key by their limit (or, multi-key, because they do not store it).
    pub stranded: u64,
    /// Cards whose limit admits the key but that no chain of key rolls reaches.
    pub cut_off: u64,
    pub reach: Reach,
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub transfer_key_id: u32,
    /// Cards stranded by their limit, all batches.
    pub stranded: u64,
    /// Cards cut off by an update-key roll, all batches.
    pub cut_off: u64,
    /// The update key new batches take (the newest active one).
    pub newest_update_key_id: Option<u32>,
    /// Update key ids cards are on: more than one means the symmetric path no longer joins every card.
    pub update_key_ids: Vec<u32>,
    /// When no batch is on the key yet, the cards that will carry it are assumed to be new batches of
    /// the existing profiles on the newest active update key.
    pub assumed_new_batches: bool,
    pub batches: Vec<PlanBatch>,
}

impl Plan {
    /// Cards that a roll to the key leaves behind for good.
    pub fn left_behind(&self) -> u64 {
        self.stranded + self.cut_off
    }
}

pub fn plan(auth: &Authority, id: u32) -> Result<Plan, RolloutError> {
    let batches = auth.batches()?;
    let rows = auth.plan_rows(id)?;
    let newest_uk = auth.key_ids(KeyKind::Update, KeyState::Active)?.into_iter().max();
    // What matters for the plan is whether a multi-key card stores key `id`.
    let generation = |b: &crate::authority::batches::Batch, stores: bool| {
        Generation::of_batch(b, if stores { vec![id] } else { vec![] })
    };
    let mut gens: Vec<Generation> =
        batches.iter().zip(&rows).map(|(b, r)| generation(b, r.stranded == 0 || b.transfer_key_id.0 >= id)).collect();
    let assumed = !gens.iter().any(|g| g.transfer_key_id >= id);
    if assumed {
        let mut profiles: Vec<Profile> = batches.iter().map(|b| b.profile).collect();
        profiles.sort_by_key(|p| p.name());
        profiles.dedup();
        for p in profiles {
            gens.push(Generation {
                profile: p,
                transfer_key_id: id,
                update_key_id: p.has_update_key().then_some(newest_uk).flatten(),
                transfer_key_id_limit: id,
                stored_transfer_key_ids: if p == Profile::MultiKey { vec![id] } else { Vec::new() },
            });
        }
    }
    let reach = reaches(&gens, id);
    let holders: Vec<&Generation> = gens.iter().filter(|g| g.transfer_key_id >= id).collect();
    let mut out = Vec::new();
    for (k, (b, r)) in batches.iter().zip(&rows).enumerate() {
        let g = &gens[k];
        let how = if b.transfer_key_id.0 >= id {
            Reach::Holds
        } else if r.stranded > 0 || b.transfer_key_id_limit.0 < id {
            Reach::Stranded
        } else if let Some(roll) = holders.iter().find_map(|h| g.takes_from(h, id).ok()) {
            Reach::Direct(roll)
        } else if reach[k] {
            Reach::Bridge
        } else {
            Reach::CutOff
        };
        let cut_off = if how == Reach::CutOff { b.personalised } else { 0 };
        out.push(PlanBatch {
            batch: b.name.clone(),
            profile: b.profile,
            transfer_key_id: b.transfer_key_id.0,
            update_key_id: g.update_key_id,
            transfer_key_id_limit: b.transfer_key_id_limit.0,
            personalised: b.personalised,
            stranded: r.stranded,
            cut_off,
            reach: how,
        });
    }
    let mut update_key_ids: Vec<u32> =
        out.iter().filter(|b| b.personalised > 0).filter_map(|b| b.update_key_id).collect();
    update_key_ids.extend(newest_uk);
    update_key_ids.sort_unstable();
    update_key_ids.dedup();
    Ok(Plan {
        transfer_key_id: id,
        stranded: out.iter().map(|b| b.stranded).sum(),
        cut_off: out.iter().map(|b| b.cut_off).sum(),
        newest_update_key_id: newest_uk,
        update_key_ids,
        assumed_new_batches: assumed,
        batches: out,
    })
}

/// What `policy compromise update ID` would strand (DESIGN.md §10 point 4), per batch: once the policy
/// closes update key ID and every older one for wrapping, a card without a key pair (symmetric,
/// multi-key) on such an update key can take a newer transfer key by no path at all (the symmetric path
/// and a multi-key selection both need a shared open update key; the public-key path needs certified
/// cards). Certified cards (public-key, hybrid) take the public-key path instead and are not counted.
#[derive(Debug, Serialize)]
pub struct CompromisePlan {
    /// The update key the policy would close (with every older one).
    pub update_key_id: u32,
    /// Cards that could take new keys only under a closed update key, all batches.
    pub stranded: u64,
    pub batches: Vec<CompromiseBatch>,
}

#[derive(Debug, Serialize)]
pub struct CompromiseBatch {
    pub batch: String,
    pub profile: Profile,
    pub update_key_id: Option<u32>,
    pub personalised: u64,
    /// This batch's cards that no newer transfer key can reach once the policy is on them.
    pub stranded: u64,
}

pub fn compromise_update(auth: &Authority, id: u32) -> Result<CompromisePlan, RolloutError> {
    let mut batches = Vec::new();
    for b in auth.batches()? {
        let update_key_id = b.profile.has_update_key().then_some(b.update_key_id.0);
        let closed = update_key_id.is_some_and(|u| u <= id);
        let stranded = if closed && !b.profile.has_key_pair() { b.personalised } else { 0 };
        batches.push(CompromiseBatch {
            batch: b.name,
            profile: b.profile,
            update_key_id,
            personalised: b.personalised,
            stranded,
        });
    }
    Ok(CompromisePlan { update_key_id: id, stranded: batches.iter().map(|b| b.stranded).sum(), batches })
}
