//! Personalisation on the card, version 2 (DESIGN.md §10 points 1, 2; `docs/protocol.md`):
//! 1. GET DATA `BF21` answers the factory credentials: chip id and both factory certificates (public);
//! 2. INTERNAL AUTHENTICATE runs the SCP11b key agreement with the factory key-agreement key
//!    ([`crate::crypto::scp11`]) and opens the secure-messaging channel;
//! 3. under secure messaging only: PERSO STORE items, the serial first (given inside the channel; a card
//!    that has a serial accepts only the same one), GENERATE KEY PAIR (the new public key attested by
//!    the factory attestation key over label ‖ chip id ‖ serial ‖ public key ‖ transcript hash), LOCK.
//!
//! After LOCK the factory private keys are erased and every personalisation command is refused.

use super::Effect;
use super::policy::{
    AuthorisationRefusal, ClockFloor, PolicyDecision, SchemeAnchor, judge_authorisation, judge_policy,
};
use super::session::{KeyObject, SecureSession, Session};
use super::state::{CardState, StoredKey};
use crate::crypto::attestation::{self, Attested};
use crate::crypto::card_key::CardKeyPair;
use crate::crypto::secure_messaging::CardSession;
use crate::crypto::{Secret16, scp11};
use crate::domain::{CardSerial, Profile, TransferKeyId};
use crate::protocol::StatusWord;
use crate::protocol::codec::Wire;
use crate::protocol::command::PersoItem;
use crate::protocol::info::LifeCycle;
use crate::protocol::perso::PersoPayload;
use crate::protocol::policy::KeyKind;
use crate::protocol::response::{CardAuthentication, FactoryCredentials, GeneratedPublicKey};

/// How a reference card can be made to misbehave: the impostors the line must refuse (issue 11's
/// tests). A genuine card is [`Misbehaviour::None`]; the setting lives in memory only.
#[derive(Clone, Debug, Default)]
pub enum Misbehaviour {
    #[default]
    None,
    /// Answer INTERNAL AUTHENTICATE with a receipt that does not verify.
    WrongReceipt,
    /// Answer GENERATE KEY PAIR with the public key only.
    OmitAttestation,
    /// Sign attestations with this key instead of the certified attestation key (another card's).
    AttestWith(Box<CardKeyPair>),
    /// Sign attestations over another transcript than the session's.
    AttestOtherTranscript,
}

fn factory_pair(key: Option<&crate::crypto::secret::SecretBytes>) -> Result<CardKeyPair, StatusWord> {
    let k = key.ok_or(StatusWord::ConditionsNotSatisfied)?;
    CardKeyPair::from_bytes(k.expose()).map_err(|_| StatusWord::NoPreciseDiagnosis)
}

/// GET DATA `BF21`: the factory credentials ([`FactoryCredentials`]). Public data; a card without
/// factory credentials answers 6A88.
pub(super) fn factory_data(state: &CardState) -> Result<Effect, StatusWord> {
    let chip_id = state.chip_id.ok_or(StatusWord::ReferencedDataNotFound)?;
    let f = state.factory.as_ref().ok_or(StatusWord::ReferencedDataNotFound)?;
    let answer = FactoryCredentials {
        chip_id,
        agreement_certificate: f.agreement_certificate.clone().ok_or(StatusWord::ReferencedDataNotFound)?,
        attestation_certificate: f.attestation_certificate.clone().ok_or(StatusWord::ReferencedDataNotFound)?,
    };
    Ok(Effect::reply(answer.to_wire()))
}

/// INTERNAL AUTHENTICATE (SCP11b): opens a new channel, replacing any open one.
pub(super) fn internal_authenticate(
    state: &CardState,
    session: &mut Session,
    data: &[u8],
    misbehaviour: &Misbehaviour,
) -> Result<Effect, StatusWord> {
    let f = state.factory.as_ref().ok_or(StatusWord::ConditionsNotSatisfied)?;
    let static_key = factory_pair(f.agreement_key.as_ref())?;
    // A failed attempt also closes an open channel: nothing of the old one survives a new handshake.
    session.secure = None;
    let (mut response, established) = scp11::card_respond(&static_key, data).map_err(|e| match e {
        scp11::Scp11Error::Random => StatusWord::NoPreciseDiagnosis,
        _ => StatusWord::IncorrectData,
    })?;
    if matches!(misbehaviour, Misbehaviour::WrongReceipt) {
        *response.last_mut().expect("receipt") ^= 1;
    }
    session.secure = Some(SecureSession {
        sm: CardSession::new(established.keys, established.receipt),
        transcript: established.transcript,
    });
    Ok(Effect::reply(response))
}

/// PERSO STORE: one item, plaintext from secure messaging ([`PersoPayload`]). The serial comes first;
/// items may be written again before LOCK (a half-written card is re-run in a new session).
pub(super) fn store(state: &CardState, item: PersoItem, data: &[u8], now: ClockFloor) -> Result<Effect, StatusWord> {
    // A malformed item answers its decoder's status: 6700 for a length, 6A80 for a value.
    let payload = PersoPayload::from_wire(data, item)?;
    if item != PersoItem::Serial && state.serial.is_none() {
        return Err(StatusWord::ConditionsNotSatisfied);
    }
    let mut next = state.clone();
    match payload {
        PersoPayload::Serial(serial) => {
            // A chip keeps its serial: the same one again (a resumed card) is fine, another refused.
            if state.serial.is_some_and(|s| s != serial) {
                return Err(StatusWord::IncorrectData);
            }
            next.serial = Some(serial);
            next.life_cycle = LifeCycle::Personalising;
        }
        PersoPayload::Profile(p) => {
            if state.profile.is_some_and(|old| old != p) {
                // Changing profile mid-way would leave items of the old one: start from a clean card
                // that keeps only what the fab and the serial gave it.
                next = CardState {
                    serial: state.serial,
                    chip_id: state.chip_id,
                    factory: state.factory.clone(),
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
        // Kept after LOCK: the card MACs its log exports with it (`CardState::export_log`).
        PersoPayload::LogKey(k) => next.log_key = Some(Secret16::new(k.0)),
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

/// GENERATE KEY PAIR (claims 3, 5): the card makes its P-256 key pair and answers
/// `public key (65) ‖ attestation (DER ECDSA)`, the attestation by the factory attestation key over
/// label ‖ chip id ‖ serial ‖ public key ‖ this session's transcript hash ([`attestation`]).
///
/// It comes first in a session, before the serial is stored and before any secret: the line checks
/// the attestation before it writes anything (so an impostor gets no PERSO STORE at all). The serial
/// it names must be the card's own if the card already has one.
pub(super) fn generate_key_pair(
    state: &CardState,
    session: &Session,
    keys: &mut KeyObject,
    serial: CardSerial,
    misbehaviour: &Misbehaviour,
) -> Result<Effect, StatusWord> {
    if state.profile.is_some_and(|p| !p.has_key_pair()) {
        return Err(StatusWord::ConditionsNotSatisfied);
    }
    if state.serial.is_some_and(|s| s != serial) {
        return Err(StatusWord::IncorrectData);
    }
    let chip_id = state.chip_id.ok_or(StatusWord::ConditionsNotSatisfied)?;
    let attestation_key = factory_pair(state.factory.as_ref().and_then(|f| f.attestation_key.as_ref()))?;
    let transcript = session.secure.as_ref().ok_or(StatusWord::SecurityStatusNotSatisfied)?.transcript;
    let pair = CardKeyPair::generate().map_err(|_| StatusWord::NoPreciseDiagnosis)?;
    let public = pair.public_key_sec1();
    let other = [0x5Au8; 32];
    let signed_transcript =
        if matches!(misbehaviour, Misbehaviour::AttestOtherTranscript) { &other } else { &transcript };
    let what = Attested { chip_id, serial, public_key: &public, transcript: signed_transcript };
    let signature = match misbehaviour {
        Misbehaviour::OmitAttestation => Vec::new(),
        Misbehaviour::AttestWith(k) => attestation::sign(k, &what),
        _ => attestation::sign(&attestation_key, &what),
    };
    let mut next = state.clone();
    next.card_private_key = Some(pair.to_bytes());
    // A new key pair invalidates a certificate issued for an earlier one (a re-run personalisation).
    next.certificate = None;
    keys.hold(pair);
    Ok(Effect::write(next, GeneratedPublicKey { sec1: public, attestation: signature }.to_wire()))
}

/// LOCK: ends personalisation for good, if the profile's items are all present. The factory private
/// keys are erased: an issued card never opens a personalisation channel again.
/// INTERNAL AUTHENTICATE `80 88 00 01` of an issued card: prove it holds the log key the line sent it
/// under its serial (the line's only way to know a card whose LOCK answer was lost). Changes nothing.
pub(super) fn authenticate_issued(state: &CardState, challenge: &[u8]) -> Result<Effect, StatusWord> {
    if state.life_cycle != LifeCycle::Issued {
        return Err(StatusWord::ConditionsNotSatisfied);
    }
    let (Some(serial), Some(key)) = (state.serial, state.log_key.as_ref()) else {
        return Err(StatusWord::ConditionsNotSatisfied);
    };
    let mac = crate::crypto::mac::card_authentication(key, &serial, challenge);
    Ok(Effect::reply(CardAuthentication { mac }.to_wire()))
}

pub(super) fn lock(state: &CardState, session: &mut Session) -> Result<Effect, StatusWord> {
    let profile = state.profile.ok_or(StatusWord::ConditionsNotSatisfied)?;
    let authorised = |k: Option<&StoredKey>| k.is_some_and(|k| k.authorisation.is_some());
    let selected = state.selected_transfer_key_id.and_then(|id| state.transfer_keys.iter().find(|k| k.id == id.0));
    let complete = state.serial.is_some()
        && state.current_transfer_key().is_some()
        && state.scheme_key.is_some()
        && state.policy.is_some()
        && authorised(selected)
        && (state.update_key.is_none() || authorised(state.update_key.as_ref()))
        && state.transfer_key_id_limit.zip(state.selected_transfer_key_id).is_some_and(|(l, id)| l.admits(id))
        && state.max_balance.0 > 0
        && state.log_key.is_some()
        && (!profile.has_update_key() || state.update_key.is_some())
        && (!profile.has_key_pair()
            || (state.card_private_key.is_some() && state.certificate.is_some() && state.trust_anchor.is_some()));
    if !complete {
        return Err(StatusWord::ConditionsNotSatisfied);
    }
    let mut next = state.clone();
    next.life_cycle = LifeCycle::Issued;
    if let Some(f) = next.factory.as_mut() {
        f.agreement_key = None;
        f.attestation_key = None;
    }
    // The channel ends with personalisation (the response to LOCK is still protected: see `Card::run`).
    let _ = session;
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
