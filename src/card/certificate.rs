//! The card's checks on a peer card certificate (claims 4, 7; DESIGN.md §2 step 4): it chains to the
//! card's trust anchor under RFC 5280 path validation (`pki`), is within validity at the card's time,
//! is an end-entity certificate (CA:true is refused), carries a P-256 key (anything else is refused by
//! `pki`), has the key usage the step needs, and names the card serial the protocol says.

use super::policy::ClockFloor;
use crate::domain::CardSerial;
use crate::pki::{self, ValidationOptions};
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
pub struct Peer {
    pub public_key: Vec<u8>,
    pub serial: CardSerial,
}

/// The card serial a card certificate names in its subject's serialNumber attribute (exactly one).
pub fn card_serial(der: &[u8]) -> Option<CardSerial> {
    let cert = pki::Certificate::from_der(der).ok()?;
    match cert.subject.attribute_texts(OID_SERIAL_NUMBER).as_slice() {
        [one] => CardSerial::parse(one),
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
    let refuse = StatusWord::SecurityStatusNotSatisfied;
    let not_before = |d: &[u8]| -> Result<SystemTime, StatusWord> {
        let t = pki::Certificate::from_der(d).map_err(|_| refuse)?.not_before;
        Ok(UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0)))
    };
    let at: SystemTime = floor.as_system_time().max(not_before(der)?).max(not_before(anchor)?);
    let opts = ValidationOptions { allow_ca_leaf: false, ..ValidationOptions::at(at) };
    let path = pki::validate(der, &[], &[anchor.to_vec()], &[], &opts).map_err(|_| refuse)?;
    if path.leaf_is_ca {
        return Err(refuse);
    }
    let ku = path.leaf_key_usage.ok_or(refuse)?;
    let ok = |u: &Usage| match u {
        Usage::Signing => ku.digital_signature(),
        Usage::KeyAgreement => ku.key_agreement(),
    };
    if !usages.iter().all(ok) {
        return Err(refuse);
    }
    let serial = card_serial(der).ok_or(refuse)?;
    Ok(Peer { public_key: path.leaf_public_key_sec1, serial })
}
