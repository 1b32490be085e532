//! Reading a card's log for the back office over any card channel (issue 13): SELECT, then EXPORT LOG
//! with the asker's challenge (`docs/protocol.md` §4.14a). The terminal holds no key and cannot check
//! the export's MAC (the back office does, `rollout::reconcile`); it checks what it can: the answer
//! decodes, and it answers *this* challenge, so an answer recorded earlier is refused here already.
//! EXPORT LOG writes nothing on the card: a refusal or a card pulled mid-answer changes nothing, and
//! the caller gets an error and no export.

use crate::protocol::codec::Wire;
use crate::protocol::command::{Challenge, Command};
use crate::protocol::ledger::CardLogExport;
use crate::protocol::{AID, StatusWord};
use crate::transport::{CardChannel, Trace, TransportError, exchange};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("card in {reader}: {source} during {step}")]
    Transport { reader: String, step: &'static str, source: TransportError },
    #[error("card in {reader} refused {step} with status {sw}{why}", why = refusal(*sw))]
    Refused { reader: String, step: &'static str, sw: StatusWord },
    #[error("card in {reader} answered EXPORT LOG with malformed data: {why}")]
    Malformed { reader: String, why: String },
    #[error(
        "card in {reader} answered EXPORT LOG for another challenge than the one sent: a replayed or relayed answer"
    )]
    WrongChallenge { reader: String },
}

/// What a refusal of EXPORT LOG means, for the message.
fn refusal(sw: StatusWord) -> &'static str {
    match sw {
        StatusWord::ReferencedDataNotFound => " (the card holds no log key)",
        StatusWord::ConditionsNotSatisfied => " (the card is not issued, or not this application)",
        StatusWord::InsNotSupported => " (the card does not know EXPORT LOG)",
        StatusWord::ApplicationNotFound => " (not a keyroll version 2 card)",
        _ => "",
    }
}

/// SELECT the application and ask for the card's log export answering `challenge`. Returns the export
/// as the card MAC'd it (the back office checks the MAC under the card's log key).
pub fn export_log(
    channel: &mut dyn CardChannel,
    challenge: &Challenge,
    verbose: bool,
) -> Result<CardLogExport, ExportError> {
    let mut trace = Trace::verbose(verbose);
    let reader = channel.name();
    let mut send = |step: &'static str, cmd: &Command| -> Result<Vec<u8>, ExportError> {
        let r = exchange(channel, &mut trace, cmd).map_err(|source| ExportError::Transport {
            reader: reader.clone(),
            step,
            source,
        })?;
        if r.sw != StatusWord::Ok {
            return Err(ExportError::Refused { reader: reader.clone(), step, sw: r.sw });
        }
        Ok(r.data)
    };
    send("SELECT", &Command::Select { aid: AID.to_vec() })?;
    let data = send("EXPORT LOG", &Command::ExportLog { challenge: *challenge })?;
    let export = CardLogExport::from_wire(&data, ())
        .map_err(|e| ExportError::Malformed { reader: reader.clone(), why: e.to_string() })?;
    if &export.challenge != challenge {
        return Err(ExportError::WrongChallenge { reader });
    }
    Ok(export)
}
