//! The plaintext of each PERSO STORE item (P1 names the item, [`PersoItem`]): what the personalisation
//! script sends and the card stores, always inside SCP03 secure messaging (`crypto::secure_messaging`). Written down once here; `docs/protocol.md` is its
//! human-readable form.

use super::apdu::MAX_COMMAND_DATA;
use super::codec::{DecodeError, Reader, Wire};
use super::command::{KeyBytes, PersoItem};
use super::policy::{KeyAuthorisation, Policy};
use crate::domain::{Amount, CardSerial, Profile, TransferKeyId, TransferKeyIdLimit, UpdateKeyId};

/// One personalisation item's plaintext. Keys are [`KeyBytes`]: zeroized, never in `Debug`. Encode
/// items that hold keys into a zeroizing buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PersoPayload {
    /// `profile code (1)`.
    Profile(Profile),
    /// `transfer key id (4) ‖ key (16) ‖ authorisation (146)`; a multi-key card accepts several (claim 8).
    /// A key the issuer has not activated yet (multi-key) comes with an empty authorisation: stored, never
    /// selectable until its authorisation arrives with a selection.
    TransferKey { id: TransferKeyId, key: KeyBytes, authorisation: Vec<u8> },
    /// `update key id (4) ‖ key (16) ‖ authorisation (146)`.
    UpdateKey { id: UpdateKeyId, key: KeyBytes, authorisation: Vec<u8> },
    /// `upper limit of the transfer key identifier (4)`.
    TransferKeyIdLimit(TransferKeyIdLimit),
    /// `initial balance (8) ‖ maximum balance (8)`.
    Balance { initial: Amount, max: Amount },
    /// `selected transfer key id (4)` (multi-key, claim 9).
    SelectedTransferKey(TransferKeyId),
    /// The issuer trust anchor certificate, DER (claims 3, 5).
    TrustAnchor(Vec<u8>),
    /// The card's own certificate, DER (claims 3, 5).
    CardCertificate(Vec<u8>),
    /// `card serial (8)`: given inside the channel, first (a chip keeps its serial).
    Serial(CardSerial),
    /// `log key (16)`: the card's log-export MAC key.
    LogKey(KeyBytes),
    /// The scheme key's raw public key (65 bytes, uncompressed SEC 1).
    SchemeKey(Vec<u8>),
    /// The newest scheme policy, as signed.
    Policy(Vec<u8>),
}

impl PersoPayload {
    /// The item (P1 of PERSO STORE) this payload is stored as.
    pub fn item(&self) -> PersoItem {
        match self {
            PersoPayload::Profile(_) => PersoItem::Profile,
            PersoPayload::TransferKey { .. } => PersoItem::TransferKey,
            PersoPayload::UpdateKey { .. } => PersoItem::UpdateKey,
            PersoPayload::TransferKeyIdLimit(_) => PersoItem::TransferKeyIdLimit,
            PersoPayload::Balance { .. } => PersoItem::Balance,
            PersoPayload::SelectedTransferKey(_) => PersoItem::SelectedTransferKey,
            PersoPayload::TrustAnchor(_) => PersoItem::TrustAnchor,
            PersoPayload::CardCertificate(_) => PersoItem::CardCertificate,
            PersoPayload::Serial(_) => PersoItem::Serial,
            PersoPayload::LogKey(_) => PersoItem::LogKey,
            PersoPayload::SchemeKey(_) => PersoItem::SchemeKey,
            PersoPayload::Policy(_) => PersoItem::Policy,
        }
    }
}

/// A key item's authorisation: exactly one (146 bytes) or none (a multi-key card's pending key).
fn authorisation(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    match r.left() {
        0 => Ok(Vec::new()),
        _ => Ok(r.take(KeyAuthorisation::LEN, "authorisation")?.to_vec()),
    }
}

/// A key item's id: 0 is never a key identifier (identifiers start at 1, DESIGN.md §1).
fn key_id(r: &mut Reader<'_>) -> Result<u32, DecodeError> {
    match r.u32("key id")? {
        0 => Err(DecodeError::Invalid { field: "key id", why: "0 is not a key identifier" }),
        id => Ok(id),
    }
}

impl Wire for PersoPayload {
    /// The item, from P1 of PERSO STORE.
    type Context = PersoItem;

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            PersoPayload::Profile(p) => out.push(p.code()),
            PersoPayload::TransferKey { id, key, authorisation } => {
                out.extend_from_slice(&id.0.to_be_bytes());
                out.extend_from_slice(&key.0);
                out.extend_from_slice(authorisation);
            }
            PersoPayload::UpdateKey { id, key, authorisation } => {
                out.extend_from_slice(&id.0.to_be_bytes());
                out.extend_from_slice(&key.0);
                out.extend_from_slice(authorisation);
            }
            PersoPayload::TransferKeyIdLimit(l) => out.extend_from_slice(&l.0.to_be_bytes()),
            PersoPayload::Balance { initial, max } => {
                out.extend_from_slice(&initial.0.to_be_bytes());
                out.extend_from_slice(&max.0.to_be_bytes());
            }
            PersoPayload::SelectedTransferKey(id) => out.extend_from_slice(&id.0.to_be_bytes()),
            PersoPayload::TrustAnchor(der) | PersoPayload::CardCertificate(der) => out.extend_from_slice(der),
            PersoPayload::Serial(s) => out.extend_from_slice(&s.0),
            PersoPayload::LogKey(k) => out.extend_from_slice(&k.0),
            PersoPayload::SchemeKey(b) | PersoPayload::Policy(b) => out.extend_from_slice(b),
        }
    }

    fn read(r: &mut Reader<'_>, item: PersoItem) -> Result<Self, DecodeError> {
        Ok(match item {
            PersoItem::Profile => PersoPayload::Profile(
                Profile::from_code(r.u8("profile")?)
                    .ok_or(DecodeError::Invalid { field: "profile", why: "unknown profile code" })?,
            ),
            PersoItem::TransferKey => {
                let id = TransferKeyId(key_id(r)?);
                let key = KeyBytes(r.array("transfer key")?);
                PersoPayload::TransferKey { id, key, authorisation: authorisation(r)? }
            }
            PersoItem::UpdateKey => {
                let id = UpdateKeyId(key_id(r)?);
                let key = KeyBytes(r.array("update key")?);
                PersoPayload::UpdateKey { id, key, authorisation: authorisation(r)? }
            }
            PersoItem::TransferKeyIdLimit => PersoPayload::TransferKeyIdLimit(TransferKeyIdLimit(r.u32("limit")?)),
            PersoItem::Balance => PersoPayload::Balance {
                initial: Amount(r.u64("initial balance")?),
                max: Amount(r.u64("maximum balance")?),
            },
            PersoItem::SelectedTransferKey => PersoPayload::SelectedTransferKey(TransferKeyId(r.u32("selected id")?)),
            // Certificates are bounded by what one (chained) command can carry.
            PersoItem::TrustAnchor => {
                PersoPayload::TrustAnchor(r.rest_capped("trust anchor", MAX_COMMAND_DATA)?.to_vec())
            }
            PersoItem::CardCertificate => {
                PersoPayload::CardCertificate(r.rest_capped("card certificate", MAX_COMMAND_DATA)?.to_vec())
            }
            PersoItem::Serial => PersoPayload::Serial(CardSerial(r.array("serial")?)),
            PersoItem::LogKey => PersoPayload::LogKey(KeyBytes(r.array("log key")?)),
            PersoItem::SchemeKey => PersoPayload::SchemeKey(r.take(65, "scheme key")?.to_vec()),
            PersoItem::Policy => PersoPayload::Policy(r.rest_capped("policy", Policy::MAX_LEN)?.to_vec()),
        })
    }
}
