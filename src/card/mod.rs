//! The reference card: an APDU state machine implementing the four card profiles of the seed
//! (claims 1–9, 17, 18) and keyroll's value transfer (DESIGN.md §3).
//!
//! Every command is one transition: the handler computes the new persistent state from the old one
//! without touching it, the new state is written atomically, and only then does the card adopt it and
//! answer (house rule 3). A rejected command answers an error status and leaves the persistent state
//! byte-identical. A power cut during the write leaves the old or the new state, never a mixture.

pub mod certificate;
mod key_roll;
mod perso;
pub mod policy;
pub mod receipts;
pub mod session;
pub use perso::Misbehaviour;
pub mod state;
pub mod storage;
mod value;

use crate::crypto::secure_messaging::{CLA_SECURE_MESSAGING, SmError, sw_is_protected};
use crate::protocol::apdu::{CLA_CHAINING, MAX_COMMAND_DATA};
use crate::protocol::codec::Wire;
use crate::protocol::command::Command;
use crate::protocol::info::LifeCycle;
use crate::protocol::instruction::Instruction;
use crate::protocol::{AID, CommandApdu, Mute, ResponseApdu, SmartCard, StatusWord};
use session::{Chain, KeyObject, Session};
pub use state::CardState;
use storage::{Storage, StorageError};
pub use value::VALUE_SIGNATURE_LABEL;

/// ATR: T=1 only (TD1 = 0x81 announces T=1, TD2 = 0x31 with TA3 IFSC 254, TB3 BWI/CWI),
/// historical bytes "keyroll", and the check byte TCK that T=1 requires (ISO/IEC 7816-3 §8.2).
fn atr() -> Vec<u8> {
    // TS, T0 (TD1 present, 7 historical bytes), TD1 (TD2 present, T=1), TD2 (TA3 and TB3 present, T=1),
    // TA3 (IFSC 254), TB3 (BWI 4, CWI 5).
    let mut a = vec![0x3B, 0x87, 0x81, 0x31, 0xFE, 0x45];
    a.extend_from_slice(b"keyroll");
    let tck = a[1..].iter().fold(0u8, |x, b| x ^ b);
    a.push(tck);
    a
}

/// What a handler decided: the new persistent state (if it changed) and the response data.
pub(crate) struct Effect {
    pub state: Option<CardState>,
    pub response: Vec<u8>,
}

impl Effect {
    pub fn reply(response: Vec<u8>) -> Self {
        Effect { state: None, response }
    }
    pub fn write(state: CardState, response: Vec<u8>) -> Self {
        Effect { state: Some(state), response }
    }
}

/// Card-side outcome of a failed load.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    State(#[from] state::StateError),
}

pub struct Card<S: Storage> {
    storage: S,
    state: CardState,
    session: Session,
    /// The card's key pair in working form: card-lifetime, not session, state ([`KeyObject`]).
    keys: KeyObject,
    /// The buffer every state write is encoded into ([`CardState::encode_into`]).
    record: zeroize::Zeroizing<Vec<u8>>,
    powered: bool,
    /// The host's clock as the card is told it. Used for no decision: certificate validity is judged
    /// against the card's clock floor (DESIGN.md §10 point 5); tests set this to prove it.
    pub now: fn() -> std::time::SystemTime,
    /// How this card cheats, for tests of the personalisation line (a genuine card: none).
    pub misbehaviour: Misbehaviour,
}

impl<S: Storage> Card<S> {
    /// Load the card from storage; a storage never written is a blank card (written at first change).
    pub fn open(mut storage: S) -> Result<Self, CardError> {
        let state = match storage.load()? {
            Some(b) => CardState::decode(&b)?,
            None => CardState::blank(),
        };
        Ok(Card {
            storage,
            state,
            session: Session::default(),
            keys: KeyObject::default(),
            record: zeroize::Zeroizing::new(Vec::new()),
            powered: true,
            now: std::time::SystemTime::now,
            misbehaviour: Misbehaviour::None,
        })
    }

    /// A card with the given state, written to storage first.
    pub fn create(mut storage: S, state: CardState) -> Result<Self, CardError> {
        storage.store(&state.encode())?;
        Card::open(storage)
    }

    pub fn state(&self) -> &CardState {
        &self.state
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    pub fn is_powered(&self) -> bool {
        self.powered
    }

    fn run(&mut self, raw: &[u8]) -> Result<ResponseApdu, Mute> {
        let apdu = match CommandApdu::parse(raw) {
            Ok(a) => a,
            Err(_) => return Ok(ResponseApdu::status(StatusWord::WrongLength)),
        };
        // GET RESPONSE serves the rest of the previous long response and nothing else.
        if apdu.ins == Instruction::GetResponse.code() && apdu.cla == 0x00 {
            return Ok(self.get_response(&apdu));
        }
        self.session.pending_response.clear();
        let apdu = match self.assemble_chain(apdu) {
            Ok(Some(a)) => a,
            Ok(None) => return Ok(ResponseApdu::status(StatusWord::Ok)),
            Err(sw) => return Ok(ResponseApdu::status(sw)),
        };
        // Secure messaging (GP Amendment D via SCP11b, `crypto::secure_messaging`): a protected command is
        // verified and decrypted before it is parsed. A command that fails verification closes the
        // channel and changes nothing (6988).
        let protected = apdu.cla & CLA_SECURE_MESSAGING != 0;
        let apdu = if protected {
            let Some(secure) = self.session.secure.as_mut() else {
                return Ok(ResponseApdu::status(StatusWord::SecureMessagingIncorrect));
            };
            match secure.sm.unwrap(apdu.header(), &apdu.data) {
                Ok(plain) => CommandApdu {
                    cla: apdu.cla & !CLA_SECURE_MESSAGING,
                    ins: apdu.ins,
                    p1: apdu.p1,
                    p2: apdu.p2,
                    data: plain.to_vec(),
                    le: apdu.le,
                },
                Err(SmError::TooLong { .. }) => return Ok(ResponseApdu::status(StatusWord::WrongLength)),
                Err(_) => {
                    self.session.secure = None;
                    return Ok(ResponseApdu::status(StatusWord::SecureMessagingIncorrect));
                }
            }
        } else {
            apdu
        };
        let command = match Command::try_from(&apdu) {
            Ok(c) => c,
            Err(sw) => return Ok(ResponseApdu::status(sw)),
        };
        match self.dispatch(&apdu, command, protected) {
            Err(sw) => {
                // Warnings (62xx, 63xx: a refused authorisation or policy at PERSO STORE) carry an R-MAC
                // like 9000 (GP Amendment D §6.2.5); other errors go back in the clear.
                let bytes = sw.to_u16().to_be_bytes();
                if protected
                    && sw_is_protected(bytes)
                    && let Some(secure) = self.session.secure.as_mut()
                    && let Ok(mac) = secure.sm.wrap(&[], bytes)
                {
                    return Ok(ResponseApdu { data: mac, sw });
                }
                Ok(ResponseApdu::status(sw))
            }
            Ok(mut effect) => {
                if let Some(new_state) = effect.state {
                    new_state.encode_into(&mut self.record);
                    let new_anchor = new_state.trust_anchor != self.state.trust_anchor;
                    match self.storage.store(&self.record) {
                        Ok(()) => {
                            self.state = new_state;
                            // Personalisation that wrote an anchor makes its working form now (one
                            // that does not parse is tried once here, then refused at each use).
                            if new_anchor {
                                self.keys.anchor().follow(self.state.trust_anchor.as_deref());
                            }
                        }
                        Err(StorageError::PowerCut) => {
                            self.power_lost();
                            return Err(Mute);
                        }
                        Err(StorageError::Io(_) | StorageError::InUse(_)) => {
                            return Ok(ResponseApdu::status(StatusWord::MemoryFailure));
                        }
                    }
                }
                if protected {
                    let Some(secure) = self.session.secure.as_mut() else {
                        return Ok(ResponseApdu::status(StatusWord::SecureMessagingIncorrect));
                    };
                    match secure.sm.wrap(&effect.response, [0x90, 0x00]) {
                        Ok(wrapped) => effect.response = wrapped,
                        Err(_) => return Ok(ResponseApdu::status(StatusWord::WrongLength)),
                    }
                    // The channel ends with personalisation.
                    if self.state.life_cycle == LifeCycle::Issued {
                        self.session.secure = None;
                    }
                }
                Ok(self.long_response(effect.response, apdu.le))
            }
        }
    }

    fn power_lost(&mut self) {
        self.powered = false;
        self.session = Session::default();
    }

    /// ISO/IEC 7816-4 §5.4.1 command chaining: buffer segments until the last one. The chain's
    /// instruction and parameters must stay the same; its total is bounded by `MAX_COMMAND_DATA`.
    fn assemble_chain(&mut self, apdu: CommandApdu) -> Result<Option<CommandApdu>, StatusWord> {
        let more = apdu.cla & CLA_CHAINING != 0;
        let header = [apdu.cla & !CLA_CHAINING, apdu.ins, apdu.p1, apdu.p2];
        // The class without its secure-messaging bit names the instruction.
        let base_cla = header[0] & !CLA_SECURE_MESSAGING;
        match self.session.chain.take() {
            None if !more => Ok(Some(apdu)),
            None => {
                // Only commands that carry certificates or envelopes may be chained (CREDIT: the signed form
                // carries the payer's certificate, for readers without extended-length APDUs); anything
                // else is refused at the first segment, before any data is buffered.
                if base_cla != crate::protocol::instruction::CLA_ISO
                    && base_cla != crate::protocol::instruction::CLA_PROPRIETARY
                {
                    return Err(StatusWord::ClaNotSupported);
                }
                let ins = Instruction::from_code(base_cla, header[1]).ok_or(
                    if Instruction::ALL.iter().any(|i| i.code() == header[1]) {
                        StatusWord::ClaNotSupported
                    } else {
                        StatusWord::InsNotSupported
                    },
                )?;
                if !matches!(
                    ins,
                    Instruction::RequestUpdatePermission
                        | Instruction::GetTransferKey
                        | Instruction::UpdateTransferKey
                        | Instruction::PersoStore
                        | Instruction::PutPolicy
                        | Instruction::Credit
                ) {
                    return Err(StatusWord::ChainingNotSupported);
                }
                self.session.chain = Some(Chain { header, data: apdu.data.clone() });
                Ok(None)
            }
            Some(mut chain) => {
                if chain.header != header {
                    return Err(StatusWord::LastCommandExpected);
                }
                if chain.data.len() + apdu.data.len() > MAX_COMMAND_DATA {
                    return Err(StatusWord::WrongLength);
                }
                chain.data.extend_from_slice(&apdu.data);
                if more {
                    self.session.chain = Some(chain);
                    return Ok(None);
                }
                let data = std::mem::take(&mut chain.data);
                Ok(Some(CommandApdu {
                    cla: header[0],
                    ins: header[1],
                    p1: header[2],
                    p2: header[3],
                    data,
                    le: apdu.le,
                }))
            }
        }
    }

    /// A response longer than the terminal's Le is served in parts through GET RESPONSE (61XX). A short
    /// Le allows 256 bytes; an extended Le (ISO/IEC 7816-4 §5.1) up to its value in one response.
    fn long_response(&mut self, mut data: Vec<u8>, le: Option<usize>) -> ResponseApdu {
        let max = le.filter(|l| *l > 256).unwrap_or(256);
        if data.len() <= max {
            return ResponseApdu::ok(data);
        }
        let rest = data.split_off(max);
        let sw = StatusWord::MoreData(rest.len().min(256) as u8);
        self.session.pending_response = rest;
        ResponseApdu { data, sw }
    }

    fn get_response(&mut self, apdu: &CommandApdu) -> ResponseApdu {
        if apdu.p1 != 0 || apdu.p2 != 0 {
            return ResponseApdu::status(StatusWord::IncorrectP1P2);
        }
        if self.session.pending_response.is_empty() {
            return ResponseApdu::status(StatusWord::ConditionsNotSatisfied);
        }
        let n = apdu.le.unwrap_or(256).min(256).min(self.session.pending_response.len());
        let rest = self.session.pending_response.split_off(n);
        let data = std::mem::replace(&mut self.session.pending_response, rest);
        let sw = if self.session.pending_response.is_empty() {
            StatusWord::Ok
        } else {
            StatusWord::MoreData(self.session.pending_response.len().min(256) as u8)
        };
        ResponseApdu { data, sw }
    }

    /// The life-cycle and secure-messaging gate, then one handler per command.
    fn dispatch(&mut self, apdu: &CommandApdu, command: Command, protected: bool) -> Result<Effect, StatusWord> {
        let ins = command.instruction();
        if let Command::Select { aid } = &command {
            // SELECT of another application deselects ours (ISO/IEC 7816-4 §11.2.2) and ends its session:
            // a challenge or personalisation session never outlives the selection it belongs to.
            if aid.as_slice() != AID {
                self.session = Session::default();
            }
            // Any SELECT also drops what the session remembered for speed: the last validated peer
            // certificate (`Session::forget_cached`). The key object is not session state and stays.
            self.session.forget_cached();
            self.session.selected = aid.as_slice() == AID;
            return if self.session.selected {
                Ok(Effect::reply(Vec::new()))
            } else {
                Err(StatusWord::ApplicationNotFound)
            };
        }
        if !self.session.selected {
            return Err(StatusWord::ConditionsNotSatisfied);
        }
        let lc = self.state.life_cycle;
        // Personalisation secrets travel only under secure messaging, and nothing else does.
        if ins.needs_secure_messaging() != protected {
            return Err(if protected {
                StatusWord::ConditionsNotSatisfied
            } else {
                StatusWord::SecurityStatusNotSatisfied
            });
        }
        let allowed = match ins {
            Instruction::GetCardInfo => true,
            // INTERNAL AUTHENTICATE is key agreement before LOCK and the issued card's proof after it.
            Instruction::InternalAuthenticate => {
                (lc == LifeCycle::Issued) == matches!(command, Command::AuthenticateIssued { .. })
            }
            i if i.is_personalisation() => lc != LifeCycle::Issued,
            _ => lc == LifeCycle::Issued,
        };
        if !allowed {
            return Err(StatusWord::ConditionsNotSatisfied);
        }
        let _ = apdu;
        // The host's clock decides nothing (DESIGN.md §10 point 5): certificate time is the floor.
        let _host_clock = (self.now)();
        let now = self.state.clock_floor;
        let state = &self.state;
        let session = &mut self.session;
        let keys = &mut self.keys;
        match command {
            Command::GetCardInfo { certificate } => Ok(Effect::reply(state.info(certificate).to_wire())),
            Command::RequestUpdatePermission { path, sender_certificate } => {
                key_roll::request_update_permission(state, session, keys, path, &sender_certificate)
            }
            Command::GetTransferKey { path, challenge, receiver, receiver_certificate } => {
                key_roll::get_transfer_key(state, session, keys, path, &challenge, receiver, &receiver_certificate)
            }
            Command::UpdateTransferKey { path, payload } => {
                key_roll::update_transfer_key(state, session, keys, path, &payload)
            }
            Command::BeginReceive { payer, amount, payer_sequence } => {
                value::begin_receive(state, payer, amount, payer_sequence)
            }
            Command::Debit { payee, amount, nonce, payee_sequence, request } => {
                value::debit(state, keys, payee, amount, &nonce, payee_sequence, &request)
            }
            Command::Credit { receipt, payer_sequence, token } => {
                value::credit(state, session, keys, &receipt, payer_sequence, &token, None)
            }
            Command::CreditSigned { receipt, payer_sequence, token, signature, certificate } => {
                value::credit(state, session, keys, &receipt, payer_sequence, &token, Some((&signature, &certificate)))
            }
            Command::Confirm { nonce, ack } => value::confirm(state, &nonce, &ack),
            Command::Abort { receipt } => value::abort(state, &receipt),
            Command::Refund { nonce, proof } => value::refund(state, &nonce, &proof),
            Command::PutPolicy { policy } => policy::put_policy(state, &policy),
            Command::GetPolicy => Ok(Effect::reply(
                crate::protocol::response::HeldPolicy(state.policy.clone().unwrap_or_default()).to_wire(),
            )),
            Command::ExportLog { challenge } => {
                // Changes nothing: a refusal or a card pulled mid-answer (its GET RESPONSE rest is
                // session state) leaves the card as it was. 6A88 when the card holds no log key.
                let export = state.export_log(&challenge).ok_or(StatusWord::ReferencedDataNotFound)?;
                Ok(Effect::reply(export.to_wire()))
            }
            Command::GetFactoryData => perso::factory_data(state),
            Command::InternalAuthenticate { data } => {
                perso::internal_authenticate(state, session, &data, &self.misbehaviour)
            }
            Command::PersoStore { item, data } => perso::store(state, item, &data, now),
            Command::GenerateKeyPair { serial } => {
                perso::generate_key_pair(state, session, keys, serial, &self.misbehaviour)
            }
            Command::Lock => perso::lock(state, session),
            Command::AuthenticateIssued { challenge } => perso::authenticate_issued(state, &challenge),
            Command::Select { .. } | Command::GetResponse { .. } => unreachable!("handled above"),
        }
    }
}

impl<S: Storage> SmartCard for Card<S> {
    fn atr(&self) -> Vec<u8> {
        atr()
    }

    fn power_on(&mut self) {
        // Re-read what storage holds: after a tear the in-memory copy may be stale.
        if let Ok(Some(b)) = self.storage.load()
            && let Ok(s) = CardState::decode(&b)
        {
            self.state = s;
        }
        self.session = Session::default();
        self.powered = true;
    }

    fn power_off(&mut self) {
        self.session = Session::default();
        self.powered = false;
    }

    fn reset(&mut self) {
        self.session = Session::default();
        self.powered = true;
    }

    fn process(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Mute> {
        if !self.powered {
            return Err(Mute);
        }
        self.run(apdu).map(|r| r.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn atr_announces_t1_and_has_valid_check_byte() {
        let a = super::atr();
        assert_eq!(a[0], 0x3B);
        assert_eq!(a[2] & 0x0F, 1, "TD1 names T=1");
        assert_eq!(a[1..].iter().fold(0u8, |x, b| x ^ b), 0, "TCK makes the XOR of T0..TCK zero");
    }
}
