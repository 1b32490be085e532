//! Session state: what the card forgets on power-off and reset (claims 2, 9: the random number is
//! single use; DESIGN.md §5: clear challenges and selections on power off and reset).

use super::certificate::Checked;
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
    /// The card's own key pair, made once per session from the scalar in persistent memory
    /// ([`Session::own_key_pair`]).
    own_key: Option<OwnKey>,
}

/// The card's key pair as a working object, with the scalar it was made from (to notice a new one).
struct OwnKey {
    scalar: SecretBytes,
    pair: CardKeyPair,
}

impl Session {
    /// Forget the validated peer certificate and the working key pair (SELECT does).
    pub fn forget_cached(&mut self) {
        self.peer = None;
        self.own_key = None;
    }

    /// The card's key pair for the scalar `stored` (the card's persistent secret): made from it on
    /// first use in this session, then kept in session RAM, as a real card keeps its key object
    /// instead of rebuilding it per command. Remade whenever the stored scalar differs (compared in
    /// constant time), so a key written in this session is never shadowed by an old one.
    pub fn own_key_pair(&mut self, stored: &SecretBytes) -> Result<&CardKeyPair, StatusWord> {
        let same = self.own_key.as_ref().is_some_and(|k| bool::from(k.scalar.expose().ct_eq(stored.expose())));
        if !same {
            self.own_key = None;
            let pair = CardKeyPair::from_bytes(stored.expose()).map_err(|_| StatusWord::NoPreciseDiagnosis)?;
            self.own_key = Some(OwnKey { scalar: SecretBytes::new(stored.expose().to_vec()), pair });
        }
        self.own_key.as_ref().map(|k| &k.pair).ok_or(StatusWord::NoPreciseDiagnosis)
    }
}
