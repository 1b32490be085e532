//! Session state: what the card forgets on power-off and reset (claims 2, 9: the random number is
//! single use; DESIGN.md §5: clear challenges and selections on power off and reset); and the one
//! working object that is not session state, the card's key object ([`KeyObject`]), which mirrors
//! persistent memory and so outlives sessions.

use super::certificate::{AnchorObject, Checked};
use crate::crypto::card_key::CardKeyPair;
use crate::crypto::secret::SecretBytes;
use crate::crypto::secure_messaging::CardSession;
use crate::domain::CardSerial;
use crate::protocol::StatusWord;
use crate::protocol::command::Challenge;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// A live challenge from REQUEST UPDATE PERMISSION.
#[derive(Clone)]
pub struct LiveChallenge {
    pub value: Challenge,
    /// Public-key path: the sender card's certified public key and serial, from the permission step.
    pub sender: Option<(crate::crypto::ec::PublicKey, CardSerial)>,
}

impl Drop for LiveChallenge {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

/// An open personalisation channel (SCP11b key agreement, then SCP03 secure messaging): it lives in
/// session state only, so a power cut or reset ends it and its keys die with it (forward secrecy).
pub struct SecureSession {
    pub sm: CardSession,
    /// keyroll's transcript hash of the key agreement (`crypto::scp11`), signed into key attestations.
    pub transcript: [u8; 32],
}

/// Data of a command chain being received (ISO/IEC 7816-4 §5.4.1).
pub struct Chain {
    pub header: [u8; 4],
    pub data: Vec<u8>,
}

impl Drop for Chain {
    fn drop(&mut self) {
        self.data.zeroize();
    }
}

#[derive(Default)]
pub struct Session {
    pub selected: bool,
    pub challenge: Option<LiveChallenge>,
    pub secure: Option<SecureSession>,
    pub chain: Option<Chain>,
    /// Rest of a long response, served by GET RESPONSE.
    pub pending_response: Vec<u8>,
    /// The last peer certificate this session validated (`certificate::check_in_session`).
    pub peer: Option<Checked>,
}

impl Session {
    /// Forget the validated peer certificate (SELECT does).
    pub fn forget_cached(&mut self) {
        self.peer = None;
    }
}

/// The card's key object: its key pair in working form, as a secure element holds a key object in
/// its persistent memory rather than rebuilding it from bytes for every use. It is not session state:
/// it mirrors the scalar in the card's persistent state (`CardState::card_private_key`), so it lives as
/// long as the card object and survives SELECT, reset and power-off; every use compares it with the
/// stored scalar (in constant time) and remakes it when they differ, so a key written since (a re-run
/// GENERATE KEY PAIR), or a write that was torn, is never shadowed by another one. Rebuilding costs two
/// fixed-base multiplications and a curve check in AWS-LC, a sixth of a public-key roll's P-256 work
/// when it was done per session (issue 15).
///
/// It also holds the other key the card uses in working form, its trust anchor's
/// ([`AnchorObject`]: the issuer certificate parsed, its key decoded), under the same rule.
#[derive(Default)]
pub struct KeyObject {
    made: Option<MadeKey>,
    anchor: AnchorObject,
}

/// A key pair with the scalar it was made from.
struct MadeKey {
    scalar: SecretBytes,
    pair: CardKeyPair,
}

impl KeyObject {
    /// The key pair of the scalar `stored` (the card's persistent secret): the one held when it was
    /// made from (or generated as) the same scalar, else made from `stored` now and held.
    pub fn key_pair(&mut self, stored: &SecretBytes) -> Result<&CardKeyPair, StatusWord> {
        let same = self.made.as_ref().is_some_and(|k| bool::from(k.scalar.expose().ct_eq(stored.expose())));
        if !same {
            self.made = None;
            let pair = CardKeyPair::from_bytes(stored.expose()).map_err(|_| StatusWord::NoPreciseDiagnosis)?;
            self.made = Some(MadeKey { scalar: SecretBytes::new(stored.expose().to_vec()), pair });
        }
        self.made.as_ref().map(|k| &k.pair).ok_or(StatusWord::NoPreciseDiagnosis)
    }

    /// The trust anchor in working form.
    pub fn anchor(&mut self) -> &mut AnchorObject {
        &mut self.anchor
    }

    /// Hold `pair`, just generated: its scalar is the one the card is about to store. Should that write
    /// not happen, the next use finds the stored scalar different and remakes the key from it. While the
    /// card generates it, the key is made ready for ECDH (ECIES open) as well as for signing, as a
    /// secure element prepares a key object once; a key made from the stored scalar gets its ECDH form
    /// at its first use.
    pub fn hold(&mut self, pair: CardKeyPair) {
        // Only AWS-LC failing to allocate could refuse; the first ECDH would then make it instead.
        let _ = pair.key_pair().prepare_agreement();
        self.made = Some(MadeKey { scalar: pair.to_bytes(), pair });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key object answers for the scalar stored now, whatever it held: a key generated but never
    /// stored (a torn GENERATE KEY PAIR) or made for an earlier scalar is never used in its place.
    #[test]
    fn the_key_object_follows_the_stored_scalar() {
        let stored = CardKeyPair::generate().unwrap();
        let generated = CardKeyPair::generate().unwrap();
        let mut keys = KeyObject::default();
        keys.hold(generated.clone());
        // The write of `generated` did not happen: storage still holds `stored`.
        let got = keys.key_pair(&stored.to_bytes()).unwrap().public_key_sec1();
        assert_eq!(got, stored.public_key_sec1());
        // And back: the generated one, once stored.
        let got = keys.key_pair(&generated.to_bytes()).unwrap().public_key_sec1();
        assert_eq!(got, generated.public_key_sec1());
        // A stored value that is no key is refused, not answered with the held one.
        assert!(keys.key_pair(&SecretBytes::new(vec![0; 32])).is_err());
        assert!(keys.made.is_none());
    }
}
