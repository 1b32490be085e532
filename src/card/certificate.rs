//! The card's checks on a peer card certificate (claims 4, 7; DESIGN.md §2 step 4): it chains to the
//! card's trust anchor under RFC 5280 path validation (`pki`), is within validity at the card's time,
//! is an end-entity certificate (CA:true is refused), carries a P-256 key (anything else is refused by
//! `pki`), has the key usage the step needs, and names the card serial the protocol says.

use super::policy::ClockFloor;
use super::session::Session;
use super::state::CardState;
use crate::crypto::ec::PublicKey;
use crate::domain::CardSerial;
use crate::pki::{self, KeyUsage, ValidationOptions};
use crate::protocol::StatusWord;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// id-at-serialNumber (2.5.4.5, X.520), as OID content octets.
const OID_SERIAL_NUMBER: &[u8] = &[0x55, 0x04, 0x05];

/// Which key usage the step needs (RFC 5280 §4.2.1.3).
#[derive(Clone, Copy, Debug)]
pub enum Usage {
    /// The peer will sign the envelope (the sender, claims 4, 7).
    Signing,
    /// We will encrypt to the peer by key agreement (the receiver, claims 4, 7, 18).
    KeyAgreement,
}

/// A peer card's certified key.
#[derive(Clone)]
pub struct Peer {
    /// The key as an uncompressed SEC 1 point (65 bytes).
    pub public_key: Vec<u8>,
    /// The same key, parsed and checked once (by path validation).
    pub key: PublicKey,
    pub serial: CardSerial,
}

/// The card serial a card certificate names in its subject's serialNumber attribute (exactly one).
pub fn card_serial(der: &[u8]) -> Option<CardSerial> {
    serial_of(&pki::Certificate::from_der(der).ok()?.subject)
}

fn serial_of(subject: &pki::Name) -> Option<CardSerial> {
    match subject.attribute_values(OID_SERIAL_NUMBER).as_slice() {
        [one] => CardSerial::parse(std::str::from_utf8(one).ok()?),
        _ => None,
    }
}

/// Check a peer certificate against `anchor`. Every failure answers 6982 (security status not
/// satisfied): the card does not say which check failed, the terminal's log and `audit chain` do.
///
/// Time (DESIGN.md §10 point 5): the card judges validity against its clock floor, never a host clock.
/// A floor is only a lower bound of the time, so no `notBefore` can be judged, and no `notAfter` may
/// lie before the floor: validation (RFC 5280 §6.1.3 (a)(2)) runs at the latest of the floor and the
/// leaf's and anchor's `notBefore`, the earliest time that can be now for all three.
pub fn check(der: &[u8], anchor: &[u8], floor: ClockFloor, usages: &[Usage]) -> Result<Peer, StatusWord> {
    Ok(validate(der, &Anchor::parse(anchor)?, floor)?.grant(usages)?.peer.clone())
}

/// A trust anchor in working form: its certificate parsed and its P-256 key decoded once, ready to
/// validate any number of peer certificates (a secure element holds its issuer key as a key object,
/// not as bytes it decodes at every use).
pub struct Anchor {
    der: Vec<u8>,
    validator: pki::Validator,
    not_before: i64,
    not_after: i64,
}

impl Anchor {
    /// The anchor certificate `der`, parsed; one that does not parse answers 6982, as every peer
    /// certificate checked against it would.
    pub fn parse(der: &[u8]) -> Result<Anchor, StatusWord> {
        let root = pki::Certificate::from_der(der).map_err(|_| StatusWord::SecurityStatusNotSatisfied)?;
        let (not_before, not_after) = (root.not_before, root.not_after);
        Ok(Anchor { der: der.to_vec(), validator: pki::Validator::for_anchor(root), not_before, not_after })
    }
}

/// The card's trust anchor in working form ([`Anchor`]), held by its key object
/// ([`super::session::KeyObject`]) beside its key pair and for the same reasons: it lives as long as the card object, is
/// made when personalisation writes the anchor, and mirrors what persistent memory holds: every use
/// compares it with the stored anchor and remakes it when they differ (a torn write, a state reloaded
/// at power-on, an anchor replaced), so a stale anchor is never used. Until session 9 of issue 15 each
/// certificate check parsed the anchor certificate and decoded its key again, twice a public-key roll.
#[derive(Default)]
pub struct AnchorObject {
    made: Option<Anchor>,
}

impl AnchorObject {
    /// The anchor for the stored certificate `stored`: the one held when it was made from the same
    /// bytes, else parsed now and held.
    pub fn anchor(&mut self, stored: &[u8]) -> Result<&Anchor, StatusWord> {
        if self.made.as_ref().is_none_or(|a| a.der != stored) {
            self.made = None;
            self.made = Some(Anchor::parse(stored)?);
        }
        self.made.as_ref().ok_or(StatusWord::NoPreciseDiagnosis)
    }

    /// Follow a state just written: make the anchor now if the stored one changed (personalisation
    /// wrote it), drop it if none is stored. One that does not parse is left for its first use to refuse.
    pub fn follow(&mut self, stored: Option<&[u8]>) {
        match stored {
            None => self.made = None,
            Some(der) => {
                let _ = self.anchor(der);
            }
        }
    }

    /// Whether an anchor is held now (tests).
    pub fn is_made(&self) -> bool {
        self.made.is_some()
    }
}

/// As [`check`], remembering the last certificate this session validated (`last`, session RAM, gone
/// with SELECT, reset and power-off): one public-key roll and settlement presents the same peer
/// certificate to a card up to three times (REQUEST UPDATE PERMISSION or GET TRANSFER KEY, then
/// CREDIT), and a real card would not re-run path validation for it.
///
/// Equivalence with [`check`]: the remembered verdict is reused only for byte-identical certificate
/// and anchor. Path validation of those two (no intermediates, no CRLs) depends on the time alone
/// through the validity periods of the leaf and the anchor (RFC 5280 §6.1.3 (a)(2), both checked by
/// `pki`); at `max(floor, notBefore of both)` the `notBefore` checks always hold, so the verdict at
/// another floor is the same exactly when that time is still within both `notAfter`s, which is
/// checked here on every reuse (a floor that rose past `notAfter` re-validates, and is refused). Key
/// usage and the serial are checked on every call as [`check`] does; blocking stays with the caller.
pub fn check_in_session(
    last: &mut Option<Checked>,
    der: &[u8],
    anchor: &Anchor,
    floor: ClockFloor,
    usages: &[Usage],
) -> Result<Peer, StatusWord> {
    if let Some(c) = last.as_ref()
        && c.certificate == der
        && c.anchor == anchor.der
        && c.still_valid_at(floor)
    {
        return Ok(c.grant(usages)?.peer.clone());
    }
    // A failed validation forgets the previous verdict too: the cache never outlives a refusal.
    *last = None;
    let checked = validate(der, anchor, floor)?;
    let peer = checked.grant(usages)?.peer.clone();
    *last = Some(checked);
    Ok(peer)
}

/// The card's own check of a peer certificate in a command: against its trust anchor (held in working
/// form by `anchors`, the key object's), at its clock floor, the verdict remembered in `session` ([`check_in_session`]).
/// A card without an anchor answers 6985 (conditions of use not satisfied).
pub(super) fn check_peer(
    state: &CardState,
    session: &mut Session,
    anchors: &mut AnchorObject,
    der: &[u8],
    usages: &[Usage],
) -> Result<Peer, StatusWord> {
    let anchor = anchors.anchor(state.trust_anchor.as_deref().ok_or(StatusWord::ConditionsNotSatisfied)?)?;
    check_in_session(&mut session.peer, der, anchor, state.clock_floor, usages)
}

/// A peer certificate that validated against an anchor (before key usage was asked for).
#[derive(Clone)]
pub struct Checked {
    certificate: Vec<u8>,
    anchor: Vec<u8>,
    /// Latest `notBefore` of the leaf and the anchor, Unix seconds.
    not_before: u64,
    /// Earliest `notAfter` of the leaf and the anchor, Unix seconds.
    not_after: i64,
    key_usage: KeyUsage,
    peer: Peer,
}

impl Checked {
    /// Whether validation at `floor` would still find both certificates within their validity.
    fn still_valid_at(&self, floor: ClockFloor) -> bool {
        let at =
            floor.as_system_time().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0).max(self.not_before);
        i64::try_from(at).is_ok_and(|at| at <= self.not_after)
    }

    /// The key usages the step needs (RFC 5280 §4.2.1.3), all of them.
    fn grant(&self, usages: &[Usage]) -> Result<&Self, StatusWord> {
        let ok = |u: &Usage| match u {
            Usage::Signing => self.key_usage.digital_signature(),
            Usage::KeyAgreement => self.key_usage.key_agreement(),
        };
        if usages.iter().all(ok) { Ok(self) } else { Err(StatusWord::SecurityStatusNotSatisfied) }
    }
}

fn validate(der: &[u8], anchor: &Anchor, floor: ClockFloor) -> Result<Checked, StatusWord> {
    let refuse = StatusWord::SecurityStatusNotSatisfied;
    // The leaf is parsed once: its notBefore chooses the time, then validation takes it as is.
    let leaf = pki::Certificate::from_der(der).map_err(|_| refuse)?;
    let secs = |t: i64| u64::try_from(t).unwrap_or(0);
    let not_before = secs(leaf.not_before).max(secs(anchor.not_before));
    let not_after = leaf.not_after.min(anchor.not_after);
    let at: SystemTime = floor.as_system_time().max(UNIX_EPOCH + Duration::from_secs(not_before));
    let opts = ValidationOptions { allow_ca_leaf: false, ..ValidationOptions::at(at) };
    let path = anchor.validator.validate_parsed(leaf, &opts).map_err(|_| refuse)?;
    if path.leaf_is_ca {
        return Err(refuse);
    }
    let key_usage = path.leaf_key_usage.ok_or(refuse)?;
    let serial = serial_of(&path.leaf_subject).ok_or(refuse)?;
    Ok(Checked {
        certificate: der.to_vec(),
        anchor: anchor.der.clone(),
        not_before,
        not_after,
        key_usage,
        peer: Peer { public_key: path.leaf_public_key_sec1, key: path.leaf_public_key, serial },
    })
}
