//! The wire protocol shared by the reference card and the terminal: ISO/IEC 7816-4 APDUs, status
//! words, keyroll's instruction set, typed commands, typed responses and personalisation items. Every
//! wire type implements the one [`Wire`] trait (`codec`), so this module is the only place that knows a
//! byte layout. `docs/protocol.md` is the human-readable form of this module; keep them in step.

pub mod apdu;
pub mod codec;
pub mod command;
pub mod info;
pub mod instruction;
pub mod ledger;
pub mod perso;
pub mod policy;
pub mod response;
pub mod status;
#[cfg(test)]
mod tests;

pub use apdu::{ApduError, CommandApdu, ResponseApdu};
pub use codec::{DecodeError, Wire};
pub use instruction::Instruction;
pub use status::StatusWord;

/// keyroll's application identifier, version 2: a proprietary AID (ISO/IEC 7816-5 category F) spelling
/// "keyroll" and the protocol version. Version 1's AID (`F0 6B 65 79 72 6F 6C 6C`, no version byte) is
/// not answered: version 2 shares no key, label or AID with it (DESIGN.md §10).
pub const AID: [u8; 9] = [0xF0, b'k', b'e', b'y', b'r', b'o', b'l', b'l', 0x02];
/// Version 1's AID, kept only so tests can show a version 2 card does not answer it.
pub const AID_V1: [u8; 8] = [0xF0, b'k', b'e', b'y', b'r', b'o', b'l', b'l'];

/// Length of challenges and nonces (the claims' "random numbers"): 128 bits.
pub const CHALLENGE_LEN: usize = 16;

/// A card seen from the outside: answers to reset and APDUs, as a contact card does (ISO/IEC 7816-3).
/// The reference card implements it; the in-process channel and the vpcd connector drive it.
pub trait SmartCard {
    /// Answer to reset. keyroll cards announce T=1.
    fn atr(&self) -> Vec<u8>;
    /// Power on (or cold reset): session state starts empty, persistent state is reloaded.
    fn power_on(&mut self);
    /// Power off: session state is forgotten.
    fn power_off(&mut self);
    /// Warm reset: session state is forgotten.
    fn reset(&mut self);
    /// Process one command APDU. `Err(Mute)` when the card cannot answer (power was cut mid-command).
    fn process(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Mute>;
}

/// The card gave no answer: its power was cut during the command (a tear).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mute;
