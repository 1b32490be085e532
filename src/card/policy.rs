//! The card's side of the issuer's word (DESIGN.md §10 points 3–5): whether to take a key
//! authorisation, whether to adopt a policy, and the card's clock floor. Pure decisions: each returns
//! what the card would store next, or why it refuses, and touches nothing. The command handlers write
//! the result atomically (house rule 3).
//!
//! **Clock floor.** A card has no clock of its own it can trust. It keeps a floor: a time it knows has
//! passed, because the issuer signed something at that time. The floor starts at the factory floor
//! and is raised only by the `signed_at` of a policy or authorisation the card has verified, by at
//! most [`CLOCK_STEP`] per update, so even a signed but wrong issuer time moves it two years at most.
//! Neither the host nor the personalisation line can move it. Certificate expiry is judged against
//! the floor ([`ClockFloor::admits_not_after`]): a certificate that expired before the floor is
//! refused whatever the host clock says.

use crate::crypto::Secret16;
use crate::crypto::scheme_key::SchemePublicKey;
use crate::domain::CardSerial;
use crate::protocol::policy::{KeyAuthorisation, KeyKind, Policy, SignedObjectError};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest step of the clock floor per verified update: two years (731 days, one leap day included).
pub const CLOCK_STEP: u64 = 731 * 86_400;
/// Where a blank card's floor starts: 2026-01-01T00:00:00Z, before any version 2 card existed. A real
/// card leaves the fab with its manufacturing date here.
pub const FACTORY_FLOOR: u64 = 1_767_225_600;

/// A time the card knows has passed (Unix seconds, UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClockFloor(pub u64);

impl Default for ClockFloor {
    fn default() -> Self {
        ClockFloor(FACTORY_FLOOR)
    }
}

impl ClockFloor {
    /// The floor after verifying something the issuer signed at `signed_at`: never lower, and at most
    /// [`CLOCK_STEP`] higher.
    pub fn raised_by(self, signed_at: u64) -> ClockFloor {
        if signed_at <= self.0 { self } else { ClockFloor(signed_at.min(self.0.saturating_add(CLOCK_STEP))) }
    }

    pub fn as_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.0)
    }

    /// RFC 5280 §4.1.2.5 as far as a card without a trusted clock can judge it: a certificate whose
    /// `notAfter` lies before the floor has certainly expired. (`notBefore` is not judged: the card
    /// knows only a lower bound of the time.)
    pub fn admits_not_after(self, not_after: SystemTime) -> bool {
        not_after >= self.as_system_time()
    }
}

/// The scheme key as a card holds it: the raw public key written at personalisation, parsed once per
/// check with its scheme id ([`SchemePublicKey`]).
pub type SchemeAnchor = SchemePublicKey;

/// Why a card does not take a key with its authorisation.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum AuthorisationRefusal {
    #[error("authorisation: {0}")]
    Signed(#[from] SignedObjectError),
    #[error("the authorisation is for another key (kind, id or commitment differ)")]
    NotThisKey,
    #[error("the key needs policy {needed}; the card holds policy {held}")]
    PolicyTooOld { needed: u32, held: u32 },
}

/// Whether a card on policy `held_policy` may take key `kind`/`id` with bytes `key`, given the
/// authorisation bytes that came with it: it must verify under the card's scheme key, commit to
/// exactly this key, and not need a newer policy than the card holds (so the policy that blocks a
/// compromised card reaches a card before the key that replaces that card's generation). Returns the
/// authorisation and the raised clock floor.
pub fn judge_authorisation(
    anchor: &SchemeAnchor,
    held_policy: u32,
    floor: ClockFloor,
    kind: KeyKind,
    id: u32,
    key: &Secret16,
    authorisation: &[u8],
) -> Result<(KeyAuthorisation, ClockFloor), AuthorisationRefusal> {
    let a = KeyAuthorisation::verified(authorisation, anchor)?;
    if !a.commits_to(kind, id, key) {
        return Err(AuthorisationRefusal::NotThisKey);
    }
    if held_policy < a.min_policy {
        return Err(AuthorisationRefusal::PolicyTooOld { needed: a.min_policy, held: held_policy });
    }
    let floor = floor.raised_by(a.signed_at);
    Ok((a, floor))
}

/// Why a card refuses a policy (it keeps its own, unchanged).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum PolicyRefusal {
    #[error("policy: {0}")]
    Signed(#[from] SignedObjectError),
    #[error("policy {number} does not name policy {held} as its predecessor")]
    BrokenChain { number: u32, held: u32 },
    #[error("policy {number} drops blocked card {serial} whose generation is still alive")]
    DroppedBlock { number: u32, serial: CardSerial },
    #[error("policy {number} lowers {field}")]
    Regressed { number: u32, field: &'static str },
    #[error("policy {number} is signed before the policy the card holds")]
    Backdated { number: u32 },
}

/// What a card does with a verified policy.
#[derive(Debug, PartialEq, Eq, Clone)]
// A decision lives for one command; boxing the policy would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum PolicyDecision {
    /// Newer: adopt it (with the raised clock floor), atomically.
    Adopt { policy: Policy, floor: ClockFloor },
    /// Older than or equal to the one held: nothing changes.
    Keep,
}

/// Judge a policy offered to a card holding `current` (None: none yet). Every check happens before the
/// card writes anything: the signature first (a forged policy is refused even when it claims an old
/// number), then the number (older or equal: kept), then what a successor must preserve: the hash
/// chain when it is the direct successor, signing time, both key id floors, and every blocked card
/// except those whose generation died (limit below the new lowest live transfer key id).
pub fn judge_policy(
    anchor: &SchemeAnchor,
    current: Option<&Policy>,
    floor: ClockFloor,
    offered: &[u8],
) -> Result<PolicyDecision, PolicyRefusal> {
    let p = Policy::verified(offered, anchor)?;
    if let Some(c) = current {
        if p.number <= c.number {
            return Ok(PolicyDecision::Keep);
        }
        let number = p.number;
        if p.number == c.number + 1 && p.previous != c.hash() {
            return Err(PolicyRefusal::BrokenChain { number, held: c.number });
        }
        if p.signed_at < c.signed_at {
            return Err(PolicyRefusal::Backdated { number });
        }
        if p.min_wrap_update_key_id < c.min_wrap_update_key_id {
            return Err(PolicyRefusal::Regressed { number, field: "the lowest update key id allowed for wrapping" });
        }
        if p.min_transfer_key_id < c.min_transfer_key_id {
            return Err(PolicyRefusal::Regressed { number, field: "the lowest live transfer key id" });
        }
        if let Some(e) = c.blocked.iter().find(|e| !p.blocks(e.serial) && e.limit.0 >= p.min_transfer_key_id.0) {
            return Err(PolicyRefusal::DroppedBlock { number, serial: e.serial });
        }
    }
    let floor = floor.raised_by(p.signed_at);
    Ok(PolicyDecision::Adopt { policy: p, floor })
}

/// PUT POLICY (DESIGN.md §10 points 4 and 6): judge the offered policy; a newer genuine one is adopted
/// with the raised clock floor, and its resolutions of this card's open debits applied
/// (`value::apply_resolutions`), in one atomic write; an older or equal one changes nothing, a forged
/// or inconsistent one is refused (6300) and changes nothing.
pub(super) fn put_policy(
    state: &super::CardState,
    offered: &[u8],
) -> Result<super::Effect, crate::protocol::StatusWord> {
    use crate::protocol::StatusWord;
    use crate::protocol::codec::Wire;
    use crate::protocol::response::PolicyAdoption;
    let anchor = state.scheme_anchor().ok_or(StatusWord::ConditionsNotSatisfied)?;
    match judge_policy(&anchor, state.held_policy().as_ref(), state.clock_floor, offered) {
        Ok(PolicyDecision::Adopt { policy, floor }) => {
            let mut next = state.clone();
            next.policy = Some(offered.to_vec());
            next.clock_floor = floor;
            super::value::apply_resolutions(&mut next, &policy);
            Ok(super::Effect::write(next, PolicyAdoption { adopted: true, number: policy.number }.to_wire()))
        }
        Ok(PolicyDecision::Keep) => {
            Ok(super::Effect::reply(PolicyAdoption { adopted: false, number: state.policy_number() }.to_wire()))
        }
        Err(_) => Err(StatusWord::VerificationFailed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::scheme_key::SchemeSigningKey;
    use crate::domain::{TransferKeyId, TransferKeyIdLimit, UpdateKeyId};
    use crate::protocol::codec::Wire;
    use crate::protocol::policy::BlockedCard;

    const T0: u64 = FACTORY_FLOOR + 86_400;

    struct Issuer {
        key: SchemeSigningKey,
        chain: Vec<Policy>,
    }

    impl Issuer {
        fn new() -> Self {
            Issuer { key: SchemeSigningKey::generate().unwrap(), chain: Vec::new() }
        }
        fn anchor(&self) -> SchemeAnchor {
            SchemeAnchor::new(&self.key.public_key_sec1()).unwrap()
        }
        fn next(&mut self, blocked: &[(u64, u32)], min_wrap: u32, min_transfer: u32, signed_at: u64) -> Vec<u8> {
            let prev = self.chain.last();
            let mut p = Policy {
                scheme_id: self.key.scheme_id(),
                number: prev.map_or(1, |p| p.number + 1),
                previous: prev.map_or([0; 32], |p| p.hash()),
                signed_at,
                min_wrap_update_key_id: UpdateKeyId(min_wrap),
                min_transfer_key_id: TransferKeyId(min_transfer),
                blocked: blocked
                    .iter()
                    .map(|&(s, l)| BlockedCard { serial: CardSerial::from_u64(s), limit: TransferKeyIdLimit(l) })
                    .collect(),
                resolutions: vec![],
                signature: [0; 64],
            };
            p.signature = self.key.sign(&p.body()).unwrap();
            self.chain.push(p.clone());
            p.to_wire()
        }
        fn authorise(&self, kind: KeyKind, id: u32, key: &Secret16, signed_at: u64, min_policy: u32) -> Vec<u8> {
            let mut a = KeyAuthorisation {
                scheme_id: self.key.scheme_id(),
                kind,
                id,
                commitment: crate::crypto::scheme_key::key_commitment(&self.key.scheme_id(), kind.code(), id, key),
                signed_at,
                min_policy,
                signature: [0; 64],
            };
            a.signature = self.key.sign(&a.body()).unwrap();
            a.to_wire()
        }
    }

    fn adopt(d: Result<PolicyDecision, PolicyRefusal>) -> (Policy, ClockFloor) {
        match d {
            Ok(PolicyDecision::Adopt { policy, floor }) => (policy, floor),
            other => panic!("expected adoption, got {other:?}"),
        }
    }

    #[test]
    fn floor_moves_only_forward_and_by_a_bounded_step() {
        let f = ClockFloor::default();
        assert_eq!(f.raised_by(0), f);
        assert_eq!(f.raised_by(FACTORY_FLOOR - 1), f);
        assert_eq!(f.raised_by(T0), ClockFloor(T0));
        assert_eq!(f.raised_by(u64::MAX), ClockFloor(FACTORY_FLOOR + CLOCK_STEP));
        assert_eq!(ClockFloor(u64::MAX - 1).raised_by(u64::MAX), ClockFloor(u64::MAX));
        assert!(f.admits_not_after(f.as_system_time()));
        assert!(!f.admits_not_after(f.as_system_time() - Duration::from_secs(1)));
    }

    #[test]
    fn a_genuine_chain_is_adopted_and_raises_the_floor() {
        let mut i = Issuer::new();
        let a = i.anchor();
        let p1 = i.next(&[(5, 3)], 1, 1, T0);
        let (c1, f1) = adopt(judge_policy(&a, None, ClockFloor::default(), &p1));
        assert_eq!((c1.number, f1), (1, ClockFloor(T0)));
        let p2 = i.next(&[(5, 3), (9, 3)], 2, 1, T0 + 10);
        let (c2, f2) = adopt(judge_policy(&a, Some(&c1), f1, &p2));
        assert_eq!((c2.number, f2), (2, ClockFloor(T0 + 10)));
        assert!(c2.blocks(CardSerial::from_u64(9)));
        // A card that missed policy 2 takes policy 3 directly (no chain to check across the gap).
        let p3 = i.next(&[(5, 3), (9, 3), (11, 4)], 2, 1, T0 + 20);
        adopt(judge_policy(&a, Some(&c1), f1, &p3));
    }

    #[test]
    fn older_or_equal_policies_change_nothing() {
        let mut i = Issuer::new();
        let a = i.anchor();
        let p1 = i.next(&[], 1, 1, T0);
        let p2 = i.next(&[(5, 3)], 1, 1, T0 + 1);
        let (c2, f2) = adopt(judge_policy(&a, None, ClockFloor::default(), &p2));
        assert_eq!(judge_policy(&a, Some(&c2), f2, &p1), Ok(PolicyDecision::Keep));
        assert_eq!(judge_policy(&a, Some(&c2), f2, &p2), Ok(PolicyDecision::Keep));
    }

    #[test]
    fn forged_flipped_and_foreign_policies_are_refused() {
        let mut i = Issuer::new();
        let a = i.anchor();
        let p1 = i.next(&[(5, 3)], 1, 1, T0);
        let (c1, f1) = adopt(judge_policy(&a, None, ClockFloor::default(), &p1));
        let p2 = i.next(&[(5, 3), (6, 3)], 1, 1, T0 + 1);
        for bit in [0, 8 * 40, 8 * 90 + 3, p2.len() * 8 - 1] {
            let mut b = p2.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(judge_policy(&a, Some(&c1), f1, &b).is_err(), "bit {bit}");
        }
        let mut other = Issuer::new();
        other.next(&[], 1, 1, T0);
        let foreign = other.next(&[], 1, 1, T0);
        assert_eq!(
            judge_policy(&a, Some(&c1), f1, &foreign),
            Err(PolicyRefusal::Signed(SignedObjectError::WrongScheme))
        );
        // A forgery claiming an old number is refused, not quietly kept.
        let mut old = p1.clone();
        let n = old.len();
        old[n - 1] ^= 1;
        assert!(judge_policy(&a, Some(&c1), f1, &old).is_err());
    }

    #[test]
    fn a_successor_must_keep_every_live_block_and_every_floor() {
        let mut i = Issuer::new();
        let a = i.anchor();
        let p1 = i.next(&[(5, 3), (6, 7)], 2, 2, T0);
        let (c1, f1) = adopt(judge_policy(&a, None, ClockFloor::default(), &p1));
        let mut fork = Issuer { key: i.key.clone(), chain: i.chain.clone() };
        let drop = fork.next(&[(5, 3)], 2, 2, T0 + 1);
        assert_eq!(
            judge_policy(&a, Some(&c1), f1, &drop),
            Err(PolicyRefusal::DroppedBlock { number: 2, serial: CardSerial::from_u64(6) })
        );
        let mut fork = Issuer { key: i.key.clone(), chain: i.chain.clone() };
        let lower = fork.next(&[(5, 3), (6, 7)], 1, 2, T0 + 1);
        assert!(matches!(judge_policy(&a, Some(&c1), f1, &lower), Err(PolicyRefusal::Regressed { .. })));
        let mut fork = Issuer { key: i.key.clone(), chain: i.chain.clone() };
        let lower = fork.next(&[(5, 3), (6, 7)], 2, 1, T0 + 1);
        assert!(matches!(judge_policy(&a, Some(&c1), f1, &lower), Err(PolicyRefusal::Regressed { .. })));
        let mut fork = Issuer { key: i.key.clone(), chain: i.chain.clone() };
        let back = fork.next(&[(5, 3), (6, 7)], 2, 2, T0 - 1);
        assert_eq!(judge_policy(&a, Some(&c1), f1, &back), Err(PolicyRefusal::Backdated { number: 2 }));
        // Once transfer keys up to 3 are dead, card 5 (limit 3) may be pruned; card 6 (limit 7) not.
        let mut fork = Issuer { key: i.key.clone(), chain: i.chain.clone() };
        let pruned = fork.next(&[(6, 7)], 2, 4, T0 + 1);
        adopt(judge_policy(&a, Some(&c1), f1, &pruned));
    }

    #[test]
    fn a_direct_successor_must_name_its_predecessor() {
        let mut i = Issuer::new();
        let a = i.anchor();
        let p1 = i.next(&[], 1, 1, T0);
        let (c1, f1) = adopt(judge_policy(&a, None, ClockFloor::default(), &p1));
        // A policy 2 chained to a different policy 1 (the issuer never signs such a fork; a stolen key might).
        let mut fork = Issuer { key: i.key.clone(), chain: Vec::new() };
        fork.next(&[(1, 1)], 1, 1, T0);
        let p2 = fork.next(&[(1, 1)], 1, 1, T0 + 1);
        assert_eq!(judge_policy(&a, Some(&c1), f1, &p2), Err(PolicyRefusal::BrokenChain { number: 2, held: 1 }));
    }

    #[test]
    fn a_far_future_signature_moves_the_floor_one_step() {
        let mut i = Issuer::new();
        let a = i.anchor();
        let p = i.next(&[], 1, 1, u64::MAX / 2);
        let (_, f) = adopt(judge_policy(&a, None, ClockFloor(T0), &p));
        assert_eq!(f, ClockFloor(T0 + CLOCK_STEP));
        let key = Secret16::new([4; 16]);
        let auth = i.authorise(KeyKind::Transfer, 2, &key, u64::MAX, 0);
        let (_, f2) = judge_authorisation(&a, 0, f, KeyKind::Transfer, 2, &key, &auth).unwrap();
        assert_eq!(f2, ClockFloor(T0 + 2 * CLOCK_STEP));
    }

    #[test]
    fn authorisations_must_verify_commit_and_not_outrun_the_policy() {
        let i = Issuer::new();
        let a = i.anchor();
        let key = Secret16::new([7; 16]);
        let good = i.authorise(KeyKind::Transfer, 3, &key, T0, 2);
        let (auth, floor) =
            judge_authorisation(&a, 2, ClockFloor::default(), KeyKind::Transfer, 3, &key, &good).unwrap();
        assert_eq!((auth.id, floor), (3, ClockFloor(T0)));
        // Too-new policy requirement.
        assert_eq!(
            judge_authorisation(&a, 1, ClockFloor::default(), KeyKind::Transfer, 3, &key, &good),
            Err(AuthorisationRefusal::PolicyTooOld { needed: 2, held: 1 })
        );
        // A chosen key at the same id (what a compromised card would install): no authorisation fits it.
        let chosen = Secret16::new([0xEE; 16]);
        assert_eq!(
            judge_authorisation(&a, 2, ClockFloor::default(), KeyKind::Transfer, 3, &chosen, &good),
            Err(AuthorisationRefusal::NotThisKey)
        );
        // The genuine key at another id or kind.
        for (kind, id) in [(KeyKind::Transfer, 4), (KeyKind::Update, 3)] {
            assert_eq!(
                judge_authorisation(&a, 2, ClockFloor::default(), kind, id, &key, &good),
                Err(AuthorisationRefusal::NotThisKey)
            );
        }
        // Missing, forged and other-scheme authorisations.
        assert!(judge_authorisation(&a, 2, ClockFloor::default(), KeyKind::Transfer, 3, &key, &[]).is_err());
        let mut forged = good.clone();
        forged[100] ^= 1;
        assert_eq!(
            judge_authorisation(&a, 2, ClockFloor::default(), KeyKind::Transfer, 3, &key, &forged),
            Err(AuthorisationRefusal::Signed(SignedObjectError::BadSignature))
        );
        let other = Issuer::new().authorise(KeyKind::Transfer, 3, &key, T0, 0);
        assert_eq!(
            judge_authorisation(&a, 2, ClockFloor::default(), KeyKind::Transfer, 3, &key, &other),
            Err(AuthorisationRefusal::Signed(SignedObjectError::WrongScheme))
        );
    }
}
