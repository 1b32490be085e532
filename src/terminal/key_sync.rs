//! Key synchronisation: compare transfer key identifiers (claims 10, 12, 14), pick the path (claim 14:
//! equal update key identifiers → symmetric, different → public key), and relay the three key-roll
//! commands from the newer card to the older (claims 11, 13, 15, 16, 19). The terminal sees only
//! ciphertext.

use super::{OneApdu, Party, Role, SettleError};
use crate::domain::{Profile, TransferKeyId};
use crate::protocol::StatusWord;
use crate::protocol::command::{Command, KeyPayload, KeyRollPath};
use crate::protocol::response::UpdatePermission;
use crate::transport::Trace;
use serde::Serialize;

/// How the transfer keys were brought together (`settle --json` field `key_roll`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyRoll {
    None,
    Symmetric,
    PublicKey,
    Selection,
}

fn id_of(p: &Party<'_>) -> Result<TransferKeyId, SettleError> {
    p.info.transfer_key_id.ok_or_else(|| p.malformed("GET CARD INFO", "no transfer key id"))
}

/// Bring both cards to the newer transfer key. Returns the path taken and which card changed.
pub(super) fn synchronise<'a>(
    a: &mut Party<'a>,
    b: &mut Party<'a>,
    trace: &mut Trace,
) -> Result<(KeyRoll, Option<Role>), SettleError> {
    let (ida, idb) = (id_of(a)?, id_of(b)?);
    if ida == idb {
        return Ok((KeyRoll::None, None));
    }
    let (payer_id, payee_id) = (ida, idb);
    let (newer, older) = if ida > idb { (a, b) } else { (b, a) };
    let new_id = id_of(newer)?;
    let older_profile = older.info.profile.ok_or_else(|| older.malformed("GET CARD INFO", "no profile"))?;
    let newer_profile = newer.info.profile.ok_or_else(|| newer.malformed("GET CARD INFO", "no profile"))?;
    let limit = older.info.transfer_key_id_limit.ok_or_else(|| older.malformed("GET CARD INFO", "no limit"))?;
    if !limit.admits(new_id) {
        return Err(SettleError::Stranded { role: older.role, serial: older.info.serial, newer: new_id, limit });
    }
    let same_update_key = older.info.update_key_id.is_some() && older.info.update_key_id == newer.info.update_key_id;
    let both_certified = older_profile.has_key_pair()
        && newer_profile.has_key_pair()
        && older.info.has_certificate
        && newer.info.has_certificate;
    // DESIGN.md §10 point 4: a shared update key the policy closed never wraps again; certified cards
    // take the public-key path instead (claims 14-16 would say symmetric), others are stranded.
    let wrap_closed = older.info.update_key_id.is_some_and(|u| u < super::policy_spread::min_wrap(older, newer));
    let (path, roll) = if older_profile == Profile::MultiKey {
        if !older.info.stored_transfer_key_ids.contains(&new_id) {
            return Err(SettleError::NoPath {
                payer: payer_id,
                payee: payee_id,
                why: "the multi-key card does not store the newer identifier (claim 9 only selects)",
            });
        }
        if !same_update_key || wrap_closed {
            return Err(SettleError::NoPath {
                payer: payer_id,
                payee: payee_id,
                why: "selection needs a common update key the scheme policy still allows for wrapping",
            });
        }
        (KeyRollPath::Symmetric, KeyRoll::Selection)
    } else if same_update_key && !wrap_closed {
        (KeyRollPath::Symmetric, KeyRoll::Symmetric)
    } else if both_certified {
        (KeyRollPath::PublicKey, KeyRoll::PublicKey)
    } else {
        return Err(SettleError::NoPath {
            payer: payer_id,
            payee: payee_id,
            why: if wrap_closed {
                "their shared update key is closed by the scheme policy and the cards do not both hold certified key pairs"
            } else {
                "update key identifiers differ and the cards do not both hold certified key pairs"
            },
        });
    };

    // Claims 13, 16: the newer card's certificate goes to the older card with the permission request.
    // Each certificate is read, and each command carrying one sent, in one APDU where the reader takes
    // extended length (`Party::send_as_one`, and [`install`] for the key itself; issue 15: 22 APDUs became
    // 13), short APDUs the fallback.
    let sender_certificate = match path {
        KeyRollPath::PublicKey => newer.certificate(trace)?.unwrap_or_default(),
        KeyRollPath::Symmetric => Vec::new(),
    };
    let UpdatePermission { challenge } = older.send_as_one(
        trace,
        "REQUEST UPDATE PERMISSION",
        &Command::RequestUpdatePermission { path, sender_certificate },
        (),
    )?;
    let receiver_certificate = match path {
        KeyRollPath::PublicKey => older.certificate(trace)?.unwrap_or_default(),
        KeyRollPath::Symmetric => Vec::new(),
    };
    // GET TRANSFER KEY's answer is UPDATE TRANSFER KEY's payload: decoded (so a malformed answer is
    // named here, at the card that sent it) and relayed.
    let payload: KeyPayload = newer.send_as_one(
        trace,
        "GET TRANSFER KEY",
        &Command::GetTransferKey { path, challenge, receiver: older.info.serial, receiver_certificate },
        path,
    )?;
    install(older, trace, &Command::UpdateTransferKey { path, payload }, new_id)?;
    older.info.transfer_key_id = Some(new_id);
    Ok((roll, Some(older.role)))
}

/// UPDATE TRANSFER KEY on the older card (claims 2, 4, 6, 7, 9). A public-key payload (326 bytes) goes
/// as one extended-length APDU where the reader takes it, not as a chain of two short ones (issue 15).
///
/// The command installs the key and takes the card's live challenge, so its fallback is not
/// [`Party::try_send_one`]'s blind repeat. A `6700` answer refused the APDU for its length before the
/// card read it: the command goes again as a chain. A transport failure is ambiguous: the reader may
/// have refused the APDU (the card never saw it), or the card may have run it and its answer been
/// lost. The command goes again as a chain; a card that never saw the first attempt runs it, and one
/// that did answers `6982` (its challenge was taken). In that case GET CARD INFO decides: the key is in
/// exactly when the card now holds `new_id`, since nothing else between the two attempts could have
/// put it there. Any other outcome is the card's refusal, reported as such.
fn install(older: &mut Party<'_>, trace: &mut Trace, cmd: &Command, new_id: TransferKeyId) -> Result<(), SettleError> {
    const STEP: &str = "UPDATE TRANSFER KEY";
    let apdu = cmd.to_apdu();
    if !crate::transport::needs_chaining(&apdu) {
        return older.send(trace, STEP, cmd).map(drop);
    }
    let maybe_ran = match older.attempt_one(trace, &apdu) {
        OneApdu::Answered(r) => return older.accept(STEP, r).map(drop),
        OneApdu::NotRun => false,
        OneApdu::MaybeRun => true,
    };
    let r = older.try_send(trace, STEP, cmd)?;
    if maybe_ran && r.sw == StatusWord::SecurityStatusNotSatisfied {
        older.refresh(trace)?;
        if older.info.transfer_key_id == Some(new_id) {
            return Ok(());
        }
    }
    older.accept(STEP, r).map(drop)
}
