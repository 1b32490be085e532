//! Personalisation on the card: INITIALIZE on a blank card, then a sealed session (see
//! `crypto::perso`) storing the profile's items, on-card key generation (claims 3, 5: the secret key
//! never leaves the card) and LOCK, after which every personalisation command is refused.

use super::Effect;
use super::policy::{
    AuthorisationRefusal, ClockFloor, PolicyDecision, SchemeAnchor, judge_authorisation, judge_policy,
};
use super::session::{PersoSession, Session};
use super::state::{CardState, StoredKey};
use crate::crypto::card_key::CardKeyPair;
use crate::crypto::secret::SecretBytes;
use crate::crypto::{Secret16, perso as seal, random};
use crate::domain::{CardSerial, Profile, TransferKeyId};
use crate::protocol::StatusWord;
use crate::protocol::codec::Wire;
use crate::protocol::command::PersoItem;
use crate::protocol::info::LifeCycle;
use crate::protocol::perso::PersoPayload;
use crate::protocol::policy::KeyKind;
use crate::protocol::response::{GeneratedPublicKey, PersoSessionOpened};

/// INITIALIZE: the fab step that gives a blank card its serial and personalisation key. Only a blank
/// card accepts it, so it cannot be used to take over a personalised card.
pub(super) fn initialize(state: &CardState, serial: CardSerial, key: [u8; 16]) -> Result<Effect, StatusWord> {
    let mut next = state.clone();
    next.serial = Some(serial);
    next.personalisation_key = Some(Secret16::new(key));
    // The log-export key outlives the personalisation key (dropped at LOCK); the back office derives
    // both from its personalisation master and the serial.
    next.log_key = Some(crate::crypto::mac::card_log_key(&Secret16::new(key), &serial));
    next.life_cycle = LifeCycle::Personalising;
    Ok(Effect::write(next, Vec::new()))
}

/// OPEN PERSO SESSION: answers `serial ‖ card challenge`; the session key is derived from both ends'
/// knowledge of the card's personalisation key.
pub(super) fn open_session(state: &CardState, session: &mut Session) -> Result<Effect, StatusWord> {
    let serial = state.serial.ok_or(StatusWord::ConditionsNotSatisfied)?;
    let pk = state.personalisation_key.as_ref().ok_or(StatusWord::ConditionsNotSatisfied)?;
    let challenge: [u8; 16] = random::bytes().map_err(|_| StatusWord::NoPreciseDiagnosis)?;
    session.perso = Some(PersoSession { key: seal::session_key(pk, &challenge), counter: 0 });
    Ok(Effect::reply(PersoSessionOpened { serial, challenge }.to_wire()))
}

/// Open a sealed command. The counter advances only when the seal verifies, so a forged or replayed
/// command is refused without disturbing the session.
fn unseal(state: &CardState, session: &mut Session, header: [u8; 4], sealed: &[u8]) -> Result<SecretBytes, StatusWord> {
    let serial = state.serial.ok_or(StatusWord::ConditionsNotSatisfied)?;
    let ps = session.perso.as_mut().ok_or(StatusWord::SecurityStatusNotSatisfied)?;
    let plain = seal::open(&ps.key, serial, ps.counter, header, sealed).map_err(|_| StatusWord::VerificationFailed)?;
    ps.counter = ps.counter.checked_add(1).ok_or(StatusWord::SecurityStatusNotSatisfied)?;
    Ok(plain)
}

/// PERSO STORE: one item. Items may be written again before LOCK (a half-written card can be re-run).
pub(super) fn store(
    state: &CardState,
    session: &mut Session,
    header: [u8; 4],
    item: PersoItem,
    sealed: &[u8],
    now: super::policy::ClockFloor,
) -> Result<Effect, StatusWord> {
    // Decode against a copy of the session so a malformed item leaves the counter where it was.
    let plain = {
        let serial = state.serial.ok_or(StatusWord::ConditionsNotSatisfied)?;
        let ps = session.perso.as_ref().ok_or(StatusWord::SecurityStatusNotSatisfied)?;
        seal::open(&ps.key, serial, ps.counter, header, sealed).map_err(|_| StatusWord::VerificationFailed)?
    };
    // A malformed item answers its decoder's status: 6700 for a length, 6A80 for a value.
    let payload = PersoPayload::from_wire(plain.expose(), item)?;
    let mut next = state.clone();
    match payload {
        PersoPayload::Profile(p) => {
            if state.profile.is_some_and(|old| old != p) {
                // Changing profile mid-way would leave items of the old one: start from a clean card.
                next = CardState {
                    serial: state.serial,
                    personalisation_key: state.personalisation_key.clone(),
                    ..CardState::blank()
                };
                next.life_cycle = LifeCycle::Personalising;
            }
            next.profile = Some(p);
        }
        PersoPayload::TransferKey { id, key, authorisation } => {
            let profile = state.profile.ok_or(StatusWord::ConditionsNotSatisfied)?;
            let key = Secret16::new(key.0);
            // DESIGN.md §10 point 3: a key comes with the issuer's authorisation, at PERSO STORE too. Only a
            // multi-key card may store a key not activated yet, and never selects it without one.
            let authorisation = if authorisation.is_empty() && profile == Profile::MultiKey {
                None
            } else {
                let floor = authorise(state, KeyKind::Transfer, id.0, &key, &authorisation)?;
                next.clock_floor = next.clock_floor.max(floor);
                Some(authorisation)
            };
            let k = StoredKey { id: id.0, key, authorisation, receipts_before: 0 };
            if profile == Profile::MultiKey {
                next.transfer_keys.retain(|x| x.id != k.id);
                if next.transfer_keys.len() >= super::state::MAX_TRANSFER_KEYS {
                    return Err(StatusWord::NotEnoughMemory);
                }
                next.transfer_keys.push(k);
                next.transfer_keys.sort_by_key(|x| x.id);
                if next.selected_transfer_key_id.is_none() {
                    next.selected_transfer_key_id = Some(TransferKeyId(next.transfer_keys[0].id));
                }
            } else {
                next.selected_transfer_key_id = Some(TransferKeyId(k.id));
                next.transfer_keys = vec![k];
            }
        }
        PersoPayload::UpdateKey { id, key, authorisation } => {
            if !state.profile.ok_or(StatusWord::ConditionsNotSatisfied)?.has_update_key() {
                return Err(StatusWord::ConditionsNotSatisfied);
            }
            let key = Secret16::new(key.0);
            let floor = authorise(state, KeyKind::Update, id.0, &key, &authorisation)?;
            next.clock_floor = next.clock_floor.max(floor);
            next.update_key = Some(StoredKey { id: id.0, key, authorisation: Some(authorisation), receipts_before: 0 });
        }
        PersoPayload::SchemeKey(public) => {
            if SchemeAnchor::new(&public).is_err() {
                return Err(StatusWord::IncorrectData);
            }
            // The scheme key is written once: every authorisation and policy stored so far verified
            // under it.
            if state.scheme_key.as_ref().is_some_and(|k| *k != public) {
                return Err(StatusWord::ConditionsNotSatisfied);
            }
            next.scheme_key = Some(public);
        }
        PersoPayload::Policy(bytes) => {
            let anchor = state.scheme_anchor().ok_or(StatusWord::ConditionsNotSatisfied)?;
            let current = state.held_policy();
            match judge_policy(&anchor, current.as_ref(), state.clock_floor, &bytes) {
                Ok(PolicyDecision::Adopt { floor, .. }) => {
                    next.policy = Some(bytes);
                    next.clock_floor = floor;
                }
                Ok(PolicyDecision::Keep) => {}
                Err(_) => return Err(StatusWord::VerificationFailed),
            }
        }
        PersoPayload::TransferKeyIdLimit(limit) => next.transfer_key_id_limit = Some(limit),
        PersoPayload::Balance { initial, max } => {
            if initial > max {
                return Err(StatusWord::IncorrectData);
            }
            next.balance = initial;
            next.issued = initial;
            next.max_balance = max;
        }
        PersoPayload::SelectedTransferKey(id) => {
            match state.transfer_keys.iter().find(|k| k.id == id.0) {
                None => return Err(StatusWord::ReferencedDataNotFound),
                Some(k) if k.authorisation.is_none() => return Err(StatusWord::ConditionsNotSatisfied),
                Some(_) => {}
            }
            next.selected_transfer_key_id = Some(id);
        }
        PersoPayload::TrustAnchor(anchor) => {
            if !state.profile.ok_or(StatusWord::ConditionsNotSatisfied)?.has_key_pair() {
                return Err(StatusWord::ConditionsNotSatisfied);
            }
            if state.trust_anchor.as_ref() != Some(&anchor) {
                // A certificate checked against the old anchor is no longer known to chain.
                next.certificate = None;
            }
            next.trust_anchor = Some(anchor);
        }
        PersoPayload::CardCertificate(cert) => {
            let Some(private) = &state.card_private_key else { return Err(StatusWord::ConditionsNotSatisfied) };
            let pair = CardKeyPair::from_bytes(private.expose()).map_err(|_| StatusWord::NoPreciseDiagnosis)?;
            // The certificate must chain to the stored trust anchor and certify this card's own key and
            // serial (claims 3, 5): a card never presents a certificate its peers would refuse.
            let Some(anchor) = &state.trust_anchor else { return Err(StatusWord::ConditionsNotSatisfied) };
            if !certifies(&cert, anchor, &pair.public_key_sec1(), state.serial, now) {
                return Err(StatusWord::IncorrectData);
            }
            next.certificate = Some(cert);
        }
    }
    unseal(state, session, header, sealed)?;
    Ok(Effect::write(next, Vec::new()))
}

/// Check a key's authorisation against the stored scheme key and policy (DESIGN.md §10 point 3):
/// the raised clock floor, or the refusal's status (6985 before the scheme key or when the key needs a
/// newer policy; 6300 for a forged, foreign or other key's authorisation).
pub(super) fn authorise(
    state: &CardState,
    kind: KeyKind,
    id: u32,
    key: &Secret16,
    authorisation: &[u8],
) -> Result<ClockFloor, StatusWord> {
    let anchor = state.scheme_anchor().ok_or(StatusWord::ConditionsNotSatisfied)?;
    match judge_authorisation(&anchor, state.policy_number(), state.clock_floor, kind, id, key, authorisation) {
        Ok((_, floor)) => Ok(floor),
        Err(AuthorisationRefusal::PolicyTooOld { .. }) => Err(StatusWord::ConditionsNotSatisfied),
        Err(_) => Err(StatusWord::VerificationFailed),
    }
}

/// GENERATE KEY PAIR (claims 3, 5): the card makes its P-256 key pair and answers the public key only.
pub(super) fn generate_key_pair(
    state: &CardState,
    session: &mut Session,
    header: [u8; 4],
    sealed: &[u8],
) -> Result<Effect, StatusWord> {
    if !state.profile.ok_or(StatusWord::ConditionsNotSatisfied)?.has_key_pair() {
        return Err(StatusWord::ConditionsNotSatisfied);
    }
    let plain = unseal(state, session, header, sealed)?;
    if !plain.expose().is_empty() {
        return Err(StatusWord::WrongLength);
    }
    let pair = CardKeyPair::generate().map_err(|_| StatusWord::NoPreciseDiagnosis)?;
    let mut next = state.clone();
    next.card_private_key = Some(pair.to_bytes());
    // A new key pair invalidates a certificate issued for an earlier one (a re-run personalisation).
    next.certificate = None;
    Ok(Effect::write(next, GeneratedPublicKey { sec1: pair.public_key_sec1() }.to_wire()))
}

/// LOCK: ends personalisation for good, if the profile's items are all present.
pub(super) fn lock(
    state: &CardState,
    session: &mut Session,
    header: [u8; 4],
    sealed: &[u8],
) -> Result<Effect, StatusWord> {
    let profile = state.profile.ok_or(StatusWord::ConditionsNotSatisfied)?;
    let authorised = |k: Option<&StoredKey>| k.is_some_and(|k| k.authorisation.is_some());
    let selected = state.selected_transfer_key_id.and_then(|id| state.transfer_keys.iter().find(|k| k.id == id.0));
    let complete = state.current_transfer_key().is_some()
        && state.scheme_key.is_some()
        && state.policy.is_some()
        && authorised(selected)
        && (state.update_key.is_none() || authorised(state.update_key.as_ref()))
        && state.transfer_key_id_limit.zip(state.selected_transfer_key_id).is_some_and(|(l, id)| l.admits(id))
        && state.max_balance.0 > 0
        && (!profile.has_update_key() || state.update_key.is_some())
        && (!profile.has_key_pair()
            || (state.card_private_key.is_some() && state.certificate.is_some() && state.trust_anchor.is_some()));
    if !complete {
        return Err(StatusWord::ConditionsNotSatisfied);
    }
    let plain = unseal(state, session, header, sealed)?;
    if !plain.expose().is_empty() {
        return Err(StatusWord::WrongLength);
    }
    let mut next = state.clone();
    next.life_cycle = LifeCycle::Issued;
    next.personalisation_key = None;
    session.perso = None;
    Ok(Effect::write(next, Vec::new()))
}

/// Whether `der` is a card certificate peers will accept (chains to `anchor`, end entity, both key
/// usages the protocol needs, valid at `now`) for `public_key` naming `serial`.
fn certifies(
    der: &[u8],
    anchor: &[u8],
    public_key: &[u8],
    serial: Option<CardSerial>,
    now: super::policy::ClockFloor,
) -> bool {
    use super::certificate::{Usage, check};
    check(der, anchor, now, &[Usage::Signing, Usage::KeyAgreement])
        .is_ok_and(|peer| peer.public_key == public_key && Some(peer.serial) == serial)
}
