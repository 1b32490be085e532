//! How the terminal and the personalisation line reach a card: the [`CardChannel`] trait (send one APDU,
//! get one response), an in-process implementation over the reference card, and PC/SC (feature `pcsc`);
//! and the other direction, [`vpcd`]: a card served into pcscd's virtual reader as a TCP client of vpcd.
//!
//! [`exchange`] is the one function through which every typed command passes: it splits long data into an
//! ISO/IEC 7816-4 §5.4.1 command chain, follows 61XX with GET RESPONSE (bounded), counts APDUs and, when
//! tracing, prints headers, lengths, status and milliseconds — never data bytes.

pub mod in_process;
#[cfg(feature = "pcsc")]
pub mod pcsc;
pub mod vpcd;

use crate::protocol::apdu::CLA_CHAINING;
use crate::protocol::command::Command;
use crate::protocol::{CommandApdu, ResponseApdu, StatusWord};
use std::time::Instant;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("no card in reader {reader}")]
    NoCard { reader: String },
    #[error("card removed from {reader} during a command")]
    CardRemoved { reader: String },
    #[error("reader {reader} not found; available: {available}")]
    NoReader { reader: String, available: String },
    #[error("reader name {pattern:?} matches several readers: {matches}")]
    AmbiguousReader { pattern: String, matches: String },
    #[error("PC/SC service unavailable: {0} (is pcscd running?)")]
    Service(String),
    #[error("the card's power was cut (tear)")]
    PowerLost,
    #[error("the card answered with a malformed response: {0}")]
    Malformed(String),
    #[error("response chaining exceeded {0} GET RESPONSE rounds")]
    ResponseTooLong(usize),
    #[error("I/O error talking to the card: {0}")]
    Io(String),
}

/// One APDU out, one response in. Implementations: [`in_process::InProcessChannel`], PC/SC.
pub trait CardChannel {
    /// Send a raw command APDU, return the raw response (data ‖ SW1 SW2).
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError>;
    /// A name for messages and traces (reader name or file).
    fn name(&self) -> String;
}

impl<T: CardChannel + ?Sized> CardChannel for &mut T {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        (**self).transmit(apdu)
    }
    fn name(&self) -> String {
        (**self).name()
    }
}

impl<T: CardChannel + ?Sized> CardChannel for Box<T> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        (**self).transmit(apdu)
    }
    fn name(&self) -> String {
        (**self).name()
    }
}

/// Largest data field sent in one short APDU before chaining.
const CHUNK: usize = 255;
/// Most GET RESPONSE rounds followed: a card certificate and card info fit in far fewer; a card that
/// keeps answering 61XX is broken or hostile (house rule 5).
const MAX_GET_RESPONSE: usize = 32;

/// Counts APDUs and, when tracing, describes each one: headers, lengths, status and milliseconds, never
/// data bytes. An APDU whose exchange failed (the reader refused it, the card was pulled, the answer was
/// lost or malformed) is described too, with the failure: the trace shows every APDU the terminal sent,
/// including an extended-length attempt that a short-only reader refused before the terminal fell back.
/// `apdus` counts the APDUs the reader delivered (a transport failure is not counted).
#[derive(Debug, Default, Clone)]
pub struct Trace {
    pub apdus: usize,
    sink: Sink,
}

/// Where a trace's lines go.
#[derive(Debug, Default, Clone)]
enum Sink {
    #[default]
    Off,
    Stderr,
    Kept(Vec<String>),
}

impl Trace {
    /// Printing each APDU to stderr when `verbose`, else only counting.
    pub fn verbose(verbose: bool) -> Self {
        Trace { apdus: 0, sink: if verbose { Sink::Stderr } else { Sink::Off } }
    }

    /// Keeping each APDU's line instead of printing it, for [`Trace::lines`].
    pub fn kept() -> Self {
        Trace { apdus: 0, sink: Sink::Kept(Vec::new()) }
    }

    /// The lines a [`Trace::kept`] trace has kept (none for the others).
    pub fn lines(&self) -> &[String] {
        match &self.sink {
            Sink::Kept(lines) => lines,
            _ => &[],
        }
    }

    fn one(&mut self, channel: &mut dyn CardChannel, apdu: &CommandApdu) -> Result<ResponseApdu, TransportError> {
        // The clock is read only for the trace that prints it.
        let started = (!matches!(self.sink, Sink::Off)).then(Instant::now);
        let result = channel.transmit(&apdu.to_bytes()).and_then(|raw| {
            self.apdus += 1;
            ResponseApdu::parse(&raw).map_err(|e| TransportError::Malformed(e.to_string()))
        });
        if let Some(started) = started {
            let outcome = match &result {
                Ok(resp) => format!("SW={} Lr={:<4}", resp.sw, resp.data.len()),
                Err(e) => format!("failed ({e})"),
            };
            let line = format!(
                "apdu {:<24} {:02X} {:02X} {:02X} {:02X} Lc={:<4} -> {outcome} {:.2} ms",
                channel.name(),
                apdu.cla,
                apdu.ins,
                apdu.p1,
                apdu.p2,
                apdu.data.len(),
                started.elapsed().as_secs_f64() * 1e3
            );
            match &mut self.sink {
                Sink::Stderr => eprintln!("{line}"),
                Sink::Kept(lines) => lines.push(line),
                Sink::Off => {}
            }
        }
        result
    }
}

/// Send a typed command, with command chaining and GET RESPONSE handled. Returns the final response
/// (its status word may be an error: the caller decides what it means).
pub fn exchange(
    channel: &mut dyn CardChannel,
    trace: &mut Trace,
    command: &Command,
) -> Result<ResponseApdu, TransportError> {
    exchange_apdu(channel, trace, &command.to_apdu())
}

/// Send one logical command APDU (already encoded, e.g. protected by secure messaging), with command
/// chaining and GET RESPONSE handled as for [`exchange`].
pub fn exchange_apdu(
    channel: &mut dyn CardChannel,
    trace: &mut Trace,
    apdu: &CommandApdu,
) -> Result<ResponseApdu, TransportError> {
    let resp = if apdu.data.len() <= CHUNK {
        trace.one(channel, apdu)?
    } else {
        let chunks: Vec<&[u8]> = apdu.data.chunks(CHUNK).collect();
        let mut last = None;
        for (i, chunk) in chunks.iter().enumerate() {
            let more = i + 1 < chunks.len();
            let part = CommandApdu {
                cla: apdu.cla | if more { CLA_CHAINING } else { 0 },
                ins: apdu.ins,
                p1: apdu.p1,
                p2: apdu.p2,
                data: chunk.to_vec(),
                le: if more { None } else { apdu.le },
            };
            let r = trace.one(channel, &part)?;
            if more && r.sw != StatusWord::Ok {
                return Ok(r);
            }
            last = Some(r);
        }
        last.expect("at least one chunk")
    };
    follow_get_response(channel, trace, resp)
}

/// Whether `apdu`'s data exceeds one short APDU: [`exchange_apdu`] would send it as a command chain,
/// [`exchange_extended`] as one extended-length APDU.
pub fn needs_chaining(apdu: &CommandApdu) -> bool {
    apdu.data.len() > CHUNK
}

/// Send one logical command APDU as a single APDU, extended length when its data or Le need it (ISO/IEC
/// 7816-4 §5.1), never chained; GET RESPONSE is still followed. For the steps where every APDU counts
/// against the settlement budget: a signed CREDIT carries the payer's certificate, and a full GET CARD
/// INFO (with extended Le) brings it back in one response.
pub fn exchange_extended(
    channel: &mut dyn CardChannel,
    trace: &mut Trace,
    apdu: &CommandApdu,
) -> Result<ResponseApdu, TransportError> {
    let resp = trace.one(channel, apdu)?;
    follow_get_response(channel, trace, resp)
}

fn follow_get_response(
    channel: &mut dyn CardChannel,
    trace: &mut Trace,
    mut resp: ResponseApdu,
) -> Result<ResponseApdu, TransportError> {
    let mut data = std::mem::take(&mut resp.data);
    let mut rounds = 0;
    while let StatusWord::MoreData(n) = resp.sw {
        rounds += 1;
        if rounds > MAX_GET_RESPONSE {
            return Err(TransportError::ResponseTooLong(MAX_GET_RESPONSE));
        }
        let le = if n == 0 { 256 } else { n as usize };
        resp = trace.one(channel, &Command::GetResponse { le }.to_apdu())?;
        data.extend_from_slice(&resp.data);
    }
    Ok(ResponseApdu { data, sw: resp.sw })
}
