//! Session state: what the card forgets on power-off and reset (claims 2, 9: the random number is
//! single use; DESIGN.md §5: clear challenges and selections on power off and reset).

use crate::crypto::secure_messaging::CardSession;
use crate::domain::CardSerial;
use crate::protocol::command::Challenge;
use zeroize::Zeroize;

/// A live challenge from REQUEST UPDATE PERMISSION.
#[derive(Clone)]
pub struct LiveChallenge {
    pub value: Challenge,
    /// Public-key path: the sender card's certified public key (SEC1) and serial, from the permission step.
    pub sender: Option<(Vec<u8>, CardSerial)>,
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
}
