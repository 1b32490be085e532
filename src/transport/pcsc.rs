//! Cards in PC/SC readers, through pcscd and the `pcsc` crate (feature `pcsc`).
//!
//! A reader is named exactly or by a case-insensitive substring that matches one reader only, so
//! `--reader "00 01"` picks "Virtual PCD 00 01". Connections are shared (other applications may use the
//! reader between our commands) and ask for T=1 or T=0; keyroll cards announce T=1. Dropping a
//! [`PcscChannel`] resets the card, so no session state (a challenge, a pending selection) outlives it
//! (unless the card already left: see [`PcscChannel`]'s `lost`).
//!
//! PC/SC errors become [`TransportError`]s that say what the user can do: no pcscd
//! ([`TransportError::Service`]), no such reader, no card, or a card that went away during a command.

use super::{CardChannel, TransportError};
use pcsc::{Card, Context, Disposition, Error, Protocols, ReaderState, Scope, ShareMode, State};
use std::ffi::CString;
use std::time::{Duration, Instant};
use zeroize::Zeroize;

/// A reader and whether a card is in it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReaderStatus {
    pub name: String,
    /// A card is in the reader and answered its reset (pcscd's PRESENT without MUTE).
    pub card_present: bool,
}

/// Every reader pcscd knows, with card presence. No reader at all is an empty list, not an error.
pub fn list_readers() -> Result<Vec<ReaderStatus>, TransportError> {
    let context = establish()?;
    let names = reader_names(&context)?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut states = Vec::with_capacity(names.len());
    for name in &names {
        states.push(ReaderState::new(c_name(name)?, State::UNAWARE));
    }
    // From UNAWARE the call returns the current states at once; a timeout would leave them unknown,
    // which reads as "no card".
    match context.get_status_change(Duration::ZERO, &mut states) {
        Ok(()) | Err(Error::Timeout) => {}
        Err(e) => return Err(map_error(e, "", Phase::Connect)),
    }
    Ok(names
        .into_iter()
        .zip(&states)
        .map(|(name, state)| ReaderStatus { name, card_present: card_in(state.event_state()) })
        .collect())
}

/// The full name of the reader that `pattern` designates among pcscd's readers (see [`choose_reader`]).
pub fn resolve_reader(pattern: &str) -> Result<String, TransportError> {
    let context = establish()?;
    choose_reader(pattern, &reader_names(&context)?)
}

/// Pick a reader: an exact name wins; otherwise the one name containing `pattern`, compared without
/// case. None or several matches are errors that list the candidates, so the user can be precise.
pub fn choose_reader(pattern: &str, names: &[String]) -> Result<String, TransportError> {
    if let Some(name) = names.iter().find(|n| n.as_str() == pattern) {
        return Ok(name.clone());
    }
    let wanted = pattern.to_lowercase();
    let matches: Vec<&String> = names.iter().filter(|n| n.to_lowercase().contains(&wanted)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(TransportError::NoReader { reader: pattern.to_string(), available: listing(names.iter()) }),
        several => Err(TransportError::AmbiguousReader {
            pattern: pattern.to_string(),
            matches: listing(several.iter().copied()),
        }),
    }
}

/// Wait until a card is in the reader `pattern` designates; returns the reader's full name.
/// `timeout` `None` waits for ever. Timing out is [`TransportError::NoCard`].
pub fn wait_for_card(pattern: &str, timeout: Option<Duration>) -> Result<String, TransportError> {
    let context = establish()?;
    let name = choose_reader(pattern, &reader_names(&context)?)?;
    if wait_state(&context, &name, timeout, card_in)? { Ok(name) } else { Err(TransportError::NoCard { reader: name }) }
}

/// Wait until the reader `pattern` designates is empty, as a personalisation line does between two
/// cards so it never personalises the same card twice. Returns `false` if `timeout` passed first.
pub fn wait_for_card_removal(pattern: &str, timeout: Option<Duration>) -> Result<bool, TransportError> {
    let context = establish()?;
    let name = choose_reader(pattern, &reader_names(&context)?)?;
    wait_state(&context, &name, timeout, |state| !card_in(state))
}

/// A connection to the card in one PC/SC reader.
pub struct PcscChannel {
    context: Context,
    /// Always `Some` until [`PcscChannel::disconnect`] or drop takes it.
    card: Option<Card>,
    /// The card left during a command. Dropping then releases the handle without a reset: a reset
    /// of a card that is gone fails, and pcscd (1.9.9 with vpcd) then shows the reader as empty to
    /// clients while its own poller still counts the card present, so the next card inserted within
    /// a poll period stays invisible until it is removed again.
    lost: bool,
    reader: String,
    /// Receive buffer, reused; zeroized after each response is copied out (house rule 8).
    buffer: Vec<u8>,
}

impl PcscChannel {
    /// Connect to the card in the reader `pattern` designates (exact name or unique substring).
    pub fn connect(pattern: &str) -> Result<Self, TransportError> {
        let context = establish()?;
        let reader = choose_reader(pattern, &reader_names(&context)?)?;
        let card = connect_card(&context, &reader)?;
        Ok(PcscChannel {
            context,
            card: Some(card),
            lost: false,
            reader,
            buffer: vec![0; pcsc::MAX_BUFFER_SIZE_EXTENDED],
        })
    }

    /// Wait up to `timeout` for a card in the reader, then connect to it.
    pub fn wait_and_connect(pattern: &str, timeout: Option<Duration>) -> Result<Self, TransportError> {
        let reader = wait_for_card(pattern, timeout)?;
        Self::connect(&reader)
    }

    /// The reader's full name.
    pub fn reader(&self) -> &str {
        &self.reader
    }

    /// The card's answer to reset, as pcscd saw it.
    pub fn atr(&self) -> Result<Vec<u8>, TransportError> {
        let status = self.card()?.status2_owned().map_err(|e| map_error(e, &self.reader, Phase::Connect))?;
        Ok(status.atr().to_vec())
    }

    /// Connect again to the same reader, e.g. after [`TransportError::CardRemoved`] and reinsertion.
    /// The old handle is released without a reset: pcscd would apply that reset to the card now in
    /// the reader, and the new connection's first command would fail with "card was reset".
    pub fn reconnect(&mut self) -> Result<(), TransportError> {
        let fresh = connect_card(&self.context, &self.reader)?;
        if let Some(stale) = self.card.replace(fresh) {
            // The stale handle's card is gone; an error releasing it changes nothing for the new one.
            let _ = stale.disconnect(Disposition::LeaveCard);
        }
        self.lost = false;
        Ok(())
    }

    /// Wait until the card is taken out of this channel's reader; `false` if `timeout` passed first.
    pub fn wait_for_removal(&self, timeout: Option<Duration>) -> Result<bool, TransportError> {
        wait_state(&self.context, &self.reader, timeout, |state| !card_in(state))
    }

    /// End the connection, powering the card down so that nothing of the session survives.
    pub fn disconnect(mut self) -> Result<(), TransportError> {
        let disposition = if self.lost { Disposition::LeaveCard } else { Disposition::UnpowerCard };
        match self.card.take() {
            Some(card) => card.disconnect(disposition).map_err(|(_, e)| map_error(e, &self.reader, Phase::Connect)),
            None => Ok(()),
        }
    }

    fn card(&self) -> Result<&Card, TransportError> {
        self.card.as_ref().ok_or_else(|| TransportError::NoCard { reader: self.reader.clone() })
    }
}

impl Drop for PcscChannel {
    /// Reset the card so no session state outlives the connection, unless the card is gone.
    fn drop(&mut self) {
        if let Some(card) = self.card.take() {
            let disposition = if self.lost { Disposition::LeaveCard } else { Disposition::ResetCard };
            let _ = card.disconnect(disposition);
        }
    }
}

impl CardChannel for PcscChannel {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let Some(card) = self.card.as_ref() else {
            return Err(TransportError::NoCard { reader: self.reader.clone() });
        };
        let response = match card.transmit(apdu, &mut self.buffer) {
            Ok(response) => response.to_vec(),
            Err(e) => {
                let error = map_error(e, &self.reader, Phase::Command);
                self.lost = matches!(error, TransportError::CardRemoved { .. });
                return Err(error);
            }
        };
        let used = response.len().min(self.buffer.len());
        self.buffer[..used].zeroize();
        if response.is_empty() {
            // Every card answer ends in SW1 SW2. An empty one is how vpcd reports a card whose
            // connection closed mid-command (a mute, torn card); a reader has lost the card.
            self.lost = true;
            return Err(TransportError::CardRemoved { reader: self.reader.clone() });
        }
        Ok(response)
    }

    fn name(&self) -> String {
        self.reader.clone()
    }
}

/// Whether an error arose while connecting or inside a command: "no card" means different things.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Command,
}

fn establish() -> Result<Context, TransportError> {
    Context::establish(Scope::User).map_err(|e| TransportError::Service(e.to_string()))
}

fn reader_names(context: &Context) -> Result<Vec<String>, TransportError> {
    let names = context.list_readers_owned().map_err(|e| map_error(e, "", Phase::Connect))?;
    Ok(names.into_iter().map(|n| n.to_string_lossy().into_owned()).collect())
}

fn c_name(name: &str) -> Result<CString, TransportError> {
    CString::new(name).map_err(|_| TransportError::NoReader {
        reader: name.to_string(),
        available: "(a NUL byte is in the name)".into(),
    })
}

fn connect_card(context: &Context, reader: &str) -> Result<Card, TransportError> {
    match context.connect(&c_name(reader)?, ShareMode::Shared, Protocols::T1 | Protocols::T0) {
        Ok(card) => Ok(card),
        Err(e) => match map_error(e, reader, Phase::Connect) {
            TransportError::NoReader { reader, .. } => {
                Err(TransportError::NoReader { reader, available: listing(reader_names(context)?.iter()) })
            }
            other => Err(other),
        },
    }
}

/// A card is in the reader and answers (a mute card cannot be used).
fn card_in(state: State) -> bool {
    state.contains(State::PRESENT) && !state.contains(State::MUTE)
}

/// Block until `want(state)` holds for `reader` (`true`) or `timeout` passes (`false`).
fn wait_state(
    context: &Context,
    reader: &str,
    timeout: Option<Duration>,
    want: impl Fn(State) -> bool,
) -> Result<bool, TransportError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut states = [ReaderState::new(c_name(reader)?, State::UNAWARE)];
    loop {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match context.get_status_change(remaining, &mut states) {
            Ok(()) => {}
            Err(Error::Timeout) => return Ok(false),
            Err(e) => return Err(map_error(e, reader, Phase::Connect)),
        }
        let state = states[0].event_state();
        if state.intersects(State::UNKNOWN | State::UNAVAILABLE) {
            return Err(TransportError::NoReader {
                reader: reader.to_string(),
                available: listing(reader_names(context)?.iter()),
            });
        }
        if want(state) {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
        states[0].sync_current_state();
    }
}

fn listing<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let all: Vec<String> = names.map(|n| format!("{n:?}")).collect();
    if all.is_empty() { "none".to_string() } else { all.join(", ") }
}

/// PC/SC's error codes in the words of [`TransportError`].
fn map_error(e: Error, reader: &str, phase: Phase) -> TransportError {
    let reader = reader.to_string();
    match e {
        Error::NoService | Error::ServiceStopped => TransportError::Service(e.to_string()),
        // A context or card handle from before a pcscd restart.
        Error::InvalidHandle | Error::Shutdown => TransportError::Service(format!("{e} (was pcscd restarted?)")),
        Error::NoReadersAvailable | Error::UnknownReader | Error::ReaderUnavailable => {
            TransportError::NoReader { reader, available: "(pcscd no longer lists it)".into() }
        }
        Error::NoSmartcard | Error::RemovedCard => match phase {
            Phase::Connect => TransportError::NoCard { reader },
            Phase::Command => TransportError::CardRemoved { reader },
        },
        // Mid-command, the reader lost the card: pulled out or its power cut (a vpcd card that went
        // mute). Either way the command's effect is unknown and the session is gone.
        Error::NotTransacted | Error::CommError | Error::UnpoweredCard if phase == Phase::Command => {
            TransportError::CardRemoved { reader }
        }
        Error::UnresponsiveCard | Error::UnpoweredCard => TransportError::Io(format!(
            "the card in {reader} does not answer to reset ({e}); take it out and put it in again"
        )),
        Error::ResetCard => TransportError::Io(format!(
            "another application reset the card in {reader}; its session is lost, start again"
        )),
        Error::SharingViolation => {
            TransportError::Io(format!("another application holds {reader} exclusively; close it and try again"))
        }
        Error::ProtoMismatch => TransportError::Io(format!("the card in {reader} speaks neither T=1 nor T=0")),
        other => TransportError::Io(format!("{reader}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["Virtual PCD 00 00", "Virtual PCD 00 01", "ACME Reader [CCID] 00 00"].map(String::from).to_vec()
    }

    #[test]
    fn exact_name_wins_even_when_it_is_a_substring_of_another() {
        let names = vec!["Reader".to_string(), "Reader 2".to_string()];
        assert_eq!(choose_reader("Reader", &names).unwrap(), "Reader");
    }

    #[test]
    fn unique_substring_matches_without_case() {
        assert_eq!(choose_reader("virtual pcd 00 01", &names()).unwrap(), "Virtual PCD 00 01");
        assert_eq!(choose_reader("acme", &names()).unwrap(), "ACME Reader [CCID] 00 00");
    }

    #[test]
    fn several_matches_are_ambiguous_and_listed() {
        match choose_reader("virtual", &names()) {
            Err(TransportError::AmbiguousReader { pattern, matches }) => {
                assert_eq!(pattern, "virtual");
                assert_eq!(matches, "\"Virtual PCD 00 00\", \"Virtual PCD 00 01\"");
            }
            other => panic!("expected AmbiguousReader, got {other:?}"),
        }
    }

    #[test]
    fn no_match_lists_the_readers() {
        match choose_reader("nothing", &names()) {
            Err(TransportError::NoReader { reader, available }) => {
                assert_eq!(reader, "nothing");
                assert!(available.contains("\"Virtual PCD 00 01\""), "{available}");
            }
            other => panic!("expected NoReader, got {other:?}"),
        }
        match choose_reader("x", &[]) {
            Err(TransportError::NoReader { available, .. }) => assert_eq!(available, "none"),
            other => panic!("expected NoReader, got {other:?}"),
        }
    }

    #[test]
    fn errors_map_by_phase() {
        assert!(matches!(map_error(Error::NoSmartcard, "r", Phase::Connect), TransportError::NoCard { .. }));
        assert!(matches!(map_error(Error::RemovedCard, "r", Phase::Command), TransportError::CardRemoved { .. }));
        assert!(matches!(map_error(Error::NotTransacted, "r", Phase::Command), TransportError::CardRemoved { .. }));
        assert!(matches!(map_error(Error::NotTransacted, "r", Phase::Connect), TransportError::Io(_)));
        assert!(matches!(map_error(Error::NoService, "", Phase::Connect), TransportError::Service(_)));
        assert!(matches!(map_error(Error::UnknownReader, "r", Phase::Connect), TransportError::NoReader { .. }));
    }
}
