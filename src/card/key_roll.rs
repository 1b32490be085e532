//! The four commands of the seed's key roll-forward (claims 2, 4, 6, 7, 9) on the card side.
//!
//! Symmetric path envelope (claims 2, 6, 9): AES-SIV under a key derived from the shared update key,
//! headers `[label, sender serial, receiver serial, update key id]`, plaintext `R ‖ id ‖ key`. The
//! claims put the random number inside the encrypted data; the serials and update key id in the
//! headers bind the envelope to this pair of cards and this update key generation (DESIGN.md §6.6).

use super::Effect;
use super::certificate::{self, Usage};
use super::session::{KeyObject, LiveChallenge, Session};
use super::state::{CardState, LogKind, StoredKey};
use crate::crypto::card_key::CardKeyPair;
use crate::crypto::{Secret16, ecies, envelope, random};
use crate::domain::{self, Amount, CardSerial, Profile, TransferKeyId};
use crate::protocol::StatusWord;
use crate::protocol::codec::{Reader, Wire};
use crate::protocol::command::{Challenge, KeyPayload, KeyRollPath};
use crate::protocol::policy::KeyKind;
use crate::protocol::response::UpdatePermission;
use subtle::ConstantTimeEq;

const SYMMETRIC_LABEL: &[u8] = b"keyroll transfer key v2";
/// ECIES associated data label of the public-key path (claims 4, 7).
const PUBLIC_KEY_LABEL: &[u8] = b"keyroll transfer key pk v2";
/// Label of the sender's signature over `ciphertext ‖ challenge` (claim 4: "first digital signature
/// data from the first encrypted data and the second random number").
const SIGNATURE_LABEL: &[u8] = b"keyroll transfer key signature v2";

/// The card's key pair, from its key object ([`KeyObject`]).
fn own_key_pair<'k>(state: &CardState, keys: &'k mut KeyObject) -> Result<&'k CardKeyPair, StatusWord> {
    let k = state.card_private_key.as_ref().ok_or(StatusWord::ConditionsNotSatisfied)?;
    keys.key_pair(k)
}

fn symmetric_headers<'a>(
    sender: &'a CardSerial,
    receiver: &'a CardSerial,
    update_key_id: &'a [u8; 4],
) -> [&'a [u8]; 4] {
    [SYMMETRIC_LABEL, &sender.0, &receiver.0, update_key_id]
}

fn path_supported(state: &CardState, path: KeyRollPath) -> Result<(), StatusWord> {
    let profile = state.profile.ok_or(StatusWord::ConditionsNotSatisfied)?;
    let ok = match path {
        KeyRollPath::Symmetric => profile.has_update_key(),
        KeyRollPath::PublicKey => profile.has_key_pair(),
    };
    if ok { Ok(()) } else { Err(StatusWord::IncorrectP1P2) }
}

/// REQUEST UPDATE PERMISSION: "generating a first random number and transmitting it" (claims 2, 4, 6,
/// 7, 9). The number lives in session state only and is single use. A new request replaces an old
/// challenge (a card has one key-roll in progress at a time).
pub(super) fn request_update_permission(
    state: &CardState,
    session: &mut Session,
    keys: &mut KeyObject,
    path: KeyRollPath,
    sender_certificate: &[u8],
) -> Result<Effect, StatusWord> {
    path_supported(state, path)?;
    let sender = match path {
        KeyRollPath::Symmetric => None,
        // Claims 4, 7: the request carries the newer card's certificate; its key will check the
        // signature in UPDATE TRANSFER KEY.
        KeyRollPath::PublicKey => {
            let peer = certificate::check_peer(state, session, keys.anchor(), sender_certificate, &[Usage::Signing])?;
            if Some(peer.serial) == state.serial {
                return Err(StatusWord::IncorrectData);
            }
            // DESIGN.md §10 point 4: nothing from a blocked card.
            if state.blocks(peer.serial) {
                return Err(StatusWord::CounterpartBlocked);
            }
            Some((peer.key, peer.serial))
        }
    };
    let value: Challenge = random::bytes().map_err(|_| StatusWord::NoPreciseDiagnosis)?;
    session.challenge = Some(LiveChallenge { value, sender });
    Ok(Effect::reply(UpdatePermission { challenge: value }.to_wire()))
}

/// GET TRANSFER KEY on the newer card: "first encrypted data, into which the second random number,
/// the transfer key identifier, and the transfer key are encrypted by use of the update key"
/// (claims 2, 6); multi-key cards send the selected identifier and key (claim 9).
pub(super) fn get_transfer_key(
    state: &CardState,
    session: &mut Session,
    keys: &mut KeyObject,
    path: KeyRollPath,
    challenge: &Challenge,
    receiver: CardSerial,
    receiver_certificate: &[u8],
) -> Result<Effect, StatusWord> {
    path_supported(state, path)?;
    let serial = state.serial.ok_or(StatusWord::ConditionsNotSatisfied)?;
    if receiver == serial {
        return Err(StatusWord::IncorrectData);
    }
    // DESIGN.md §10 point 4: no key for a blocked card.
    if state.blocks(receiver) {
        return Err(StatusWord::CounterpartBlocked);
    }
    let key = state.current_transfer_key().ok_or(StatusWord::ConditionsNotSatisfied)?;
    // The issuer's authorisation travels with the key (DESIGN.md §10 point 3); a key without one is
    // never sent.
    let authorisation = state
        .transfer_keys
        .iter()
        .find(|k| k.id == key.id.0)
        .and_then(|k| k.authorisation.clone())
        .ok_or(StatusWord::ConditionsNotSatisfied)?;
    match path {
        KeyRollPath::Symmetric => {
            let update_key = state.update_key.as_ref().ok_or(StatusWord::ConditionsNotSatisfied)?.update_key();
            // A closed update key never wraps again (`policy compromise update`).
            if !state.allows_wrap_under(update_key.id) {
                return Err(StatusWord::ConditionsNotSatisfied);
            }
            let uk_id = update_key.id.0.to_be_bytes();
            let mut plaintext = zeroize::Zeroizing::new(Vec::with_capacity(36));
            plaintext.extend_from_slice(challenge);
            plaintext.extend_from_slice(&key.id.0.to_be_bytes());
            plaintext.extend_from_slice(key.secret().expose());
            let envelope = envelope::seal(&update_key, &symmetric_headers(&serial, &receiver, &uk_id), &plaintext);
            let out = KeyPayload::Symmetric { sender: serial, update_key_id: update_key.id, authorisation, envelope };
            Ok(Effect::reply(out.to_wire()))
        }
        KeyRollPath::PublicKey => {
            // Claims 4, 7: "first encrypted data into which the transfer key identifier and the transfer
            // key are encrypted by use of the third public key", then "first digital signature data from
            // the first encrypted data and the second random number by use of the secret key".
            let peer =
                certificate::check_peer(state, session, keys.anchor(), receiver_certificate, &[Usage::KeyAgreement])?;
            if peer.serial != receiver {
                return Err(StatusWord::IncorrectData);
            }
            let me = own_key_pair(state, keys)?;
            let mut plaintext = zeroize::Zeroizing::new(Vec::with_capacity(20));
            plaintext.extend_from_slice(&key.id.0.to_be_bytes());
            plaintext.extend_from_slice(key.secret().expose());
            // The peer key was validated above; what can still fail here is the random generator.
            let ct = ecies::seal_to(&peer.key, &[PUBLIC_KEY_LABEL, &serial.0, &receiver.0], &plaintext)
                .map_err(|_| StatusWord::NoPreciseDiagnosis)?;
            let signature = me.sign(&[SIGNATURE_LABEL, &ct, challenge]);
            Ok(Effect::reply(KeyPayload::PublicKey { ciphertext: ct, signature, authorisation }.to_wire()))
        }
    }
}

/// UPDATE TRANSFER KEY on the older card (claims 2, 6, 9; 4, 7 for the public-key path).
///
/// The live challenge is consumed by every attempt that reaches the cryptographic check, successful
/// or not: an attacker gets one try per REQUEST UPDATE PERMISSION. Only session state changes on a
/// rejection; the persistent state is untouched.
pub(super) fn update_transfer_key(
    state: &CardState,
    session: &mut Session,
    keys: &mut KeyObject,
    path: KeyRollPath,
    payload: &KeyPayload,
) -> Result<Effect, StatusWord> {
    path_supported(state, path)?;
    let serial = state.serial.ok_or(StatusWord::ConditionsNotSatisfied)?;
    let live = session.challenge.take().ok_or(StatusWord::SecurityStatusNotSatisfied)?;
    // The sender names itself: in the symmetric envelope's authenticated header, or in the certificate the
    // permission step checked. Its serial goes into the key-roll log entry (issue 13 item 5).
    let (new_id, new_key, from) = match (path, payload) {
        (KeyRollPath::Symmetric, KeyPayload::Symmetric { sender, update_key_id, envelope: env, .. }) => {
            if live.sender.is_some() {
                return Err(StatusWord::SecurityStatusNotSatisfied);
            }
            if state.blocks(*sender) {
                return Err(StatusWord::CounterpartBlocked);
            }
            if !state.allows_wrap_under(*update_key_id) {
                return Err(StatusWord::ConditionsNotSatisfied);
            }
            let update_key = state.update_key.as_ref().ok_or(StatusWord::ConditionsNotSatisfied)?.update_key();
            if *update_key_id != update_key.id {
                // Claims 14-16: different update keys mean the public-key path.
                return Err(StatusWord::ReferencedDataNotFound);
            }
            let uk_id = update_key_id.0.to_be_bytes();
            let plain = envelope::open(&update_key, &symmetric_headers(sender, &serial, &uk_id), env)
                .map_err(|_| StatusWord::VerificationFailed)?;
            let mut r = Reader::new(plain.expose());
            let got: Challenge = r.array("challenge").map_err(|_| StatusWord::IncorrectData)?;
            let id = TransferKeyId(r.u32("transfer key id").map_err(|_| StatusWord::IncorrectData)?);
            let key = Secret16::from_slice(r.take(16, "transfer key").map_err(|_| StatusWord::IncorrectData)?)
                .expect("16 bytes");
            r.finish().map_err(|_| StatusWord::IncorrectData)?;
            // "if the first data is equivalent to the first random number" (claim 2), in constant time.
            if !bool::from(got.ct_eq(&live.value)) {
                return Err(StatusWord::SecurityStatusNotSatisfied);
            }
            (id, key, *sender)
        }
        (KeyRollPath::PublicKey, KeyPayload::PublicKey { ciphertext, signature, .. }) => {
            // Claims 4, 7: check the signature with the second public key (from the permission step)
            // over the ciphertext and *our* live random number, then decrypt with our secret key.
            let Some((sender_key, sender_serial)) = &live.sender else {
                return Err(StatusWord::SecurityStatusNotSatisfied);
            };
            sender_key
                .verify_der(&[SIGNATURE_LABEL, ciphertext, &live.value], signature)
                .map_err(|_| StatusWord::VerificationFailed)?;
            let me = own_key_pair(state, keys)?;
            let plain = ecies::open(me, &[PUBLIC_KEY_LABEL, &sender_serial.0, &serial.0], ciphertext)
                .map_err(|_| StatusWord::VerificationFailed)?;
            let mut r = Reader::new(plain.expose());
            let id = TransferKeyId(r.u32("transfer key id").map_err(|_| StatusWord::IncorrectData)?);
            let key = Secret16::from_slice(r.take(16, "transfer key").map_err(|_| StatusWord::IncorrectData)?)
                .expect("16 bytes");
            r.finish().map_err(|_| StatusWord::IncorrectData)?;
            (id, key, *sender_serial)
        }
        _ => return Err(StatusWord::IncorrectData),
    };
    let authorisation = match payload {
        KeyPayload::Symmetric { authorisation, .. } | KeyPayload::PublicKey { authorisation, .. } => authorisation,
    };
    // DESIGN.md §10 point 3: only a key the issuer authorised, for a card holding the policy it needs.
    let floor = super::perso::authorise(state, KeyKind::Transfer, new_id.0, &new_key, authorisation)?;
    install(state, new_id, new_key, authorisation, floor, from)
}

/// Install or select `id` if the range rule allows it.
fn install(
    state: &CardState,
    id: TransferKeyId,
    key: Secret16,
    authorisation: &[u8],
    floor: super::policy::ClockFloor,
    from: CardSerial,
) -> Result<Effect, StatusWord> {
    let current = state.selected_transfer_key_id.ok_or(StatusWord::ConditionsNotSatisfied)?;
    let limit = state.transfer_key_id_limit.ok_or(StatusWord::ConditionsNotSatisfied)?;
    if id <= current {
        return Err(StatusWord::IncorrectData);
    }
    let mut next = state.clone();
    if state.profile == Some(Profile::MultiKey) {
        // Claim 9: "if a value of the second data is equivalent to one of values of the transfer key
        // identifiers, updating a value of the selection transfer key identifier". The stored key must
        // also be the one sent: a selection never silently pairs an id with another key.
        let stored = state.transfer_key(id).ok_or(StatusWord::ReferencedDataNotFound)?;
        if stored.secret() != &key {
            return Err(StatusWord::VerificationFailed);
        }
        if !limit.admits(id) {
            return Err(StatusWord::NotEnoughMemory);
        }
        // A pending key becomes selectable with the authorisation that travels with the selection (one
        // verified at personalisation is kept).
        if let Some(k) = next.transfer_keys.iter_mut().find(|k| k.id == id.0 && k.authorisation.is_none()) {
            k.authorisation = Some(authorisation.to_vec());
        }
    } else {
        // Claims 2, 4, 6, 7: "between a value of the upper limit ... and a value of the transfer key".
        if !domain::may_install(current, id, limit) {
            return Err(StatusWord::NotEnoughMemory);
        }
        let stored = StoredKey { id: id.0, key, authorisation: Some(authorisation.to_vec()), receipts_before: 0 };
        let old = std::mem::replace(&mut next.transfer_keys, vec![stored]);
        // Open receipts handed out under the old key stay answerable while they are in the window.
        let mark = state.receipts.next();
        next.retained_keys.extend(old.into_iter().map(|k| StoredKey { receipts_before: mark, ..k }));
        next.prune_retained_keys();
    }
    next.selected_transfer_key_id = Some(id);
    next.clock_floor = next.clock_floor.max(floor);
    next.push_log(LogKind::KeyRoll, from, Amount(0), 0);
    Ok(Effect::write(next, Vec::new()))
}
