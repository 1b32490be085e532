//! Where `reconcile`'s card logs come from (issue 13): card files the back office reads itself, and
//! exports a terminal collected with EXPORT LOG (`keyroll card export-log`, `docs/protocol.md` §4.14a).
//!
//! An export answers a 16-byte challenge that the card MACs with everything else under its log key.
//! The MAC (checked by [`super::reconcile`]) proves that the card holding that key produced exactly
//! this export after the challenge existed. Freshness is the challenge's: an export file must answer
//! the challenge of this reconciliation round (the one the back office handed to the terminals), else
//! it is refused before anything is recorded — a hostile terminal that replays an export recorded in
//! an earlier round (older balance, fewer debits) is caught here. A card file or a card in a reader
//! that the back office reads itself answers a challenge drawn for that read.

use crate::protocol::command::Challenge;
use crate::protocol::ledger::{CARD_LOG_FORMAT, CardLogExport};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ExportFileError {
    #[error("cannot read export {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a card log export: {why}")]
    NotAnExport { path: PathBuf, why: String },
    #[error(
        "{path}: the export of card {serial} answers challenge {found}, not this round's challenge {expected}: it is stale (an earlier round) or replayed"
    )]
    Stale { path: PathBuf, serial: crate::domain::CardSerial, found: String, expected: String },
}

/// Longest export file read (house rule 5): a full export as pretty JSON is about 20 KiB.
const MAX_EXPORT_FILE: u64 = 256 * 1024;

/// A fresh challenge for a round of exports (or one read), from the operating system's generator.
pub fn fresh_challenge() -> Result<Challenge, crate::crypto::CryptoError> {
    crate::crypto::random::bytes()
}

/// Read an export file (`card export-log --out`) and hold it to this round's `challenge`.
pub fn read_export(path: &Path, challenge: &Challenge) -> Result<CardLogExport, ExportFileError> {
    let read = |source| ExportFileError::Read { path: path.to_path_buf(), source };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > MAX_EXPORT_FILE {
        return Err(ExportFileError::NotAnExport {
            path: path.to_path_buf(),
            why: format!("{len} bytes is more than any export ({MAX_EXPORT_FILE})"),
        });
    }
    let bytes = std::fs::read(path).map_err(read)?;
    let e: CardLogExport = serde_json::from_slice(&bytes)
        .map_err(|e| ExportFileError::NotAnExport { path: path.to_path_buf(), why: e.to_string() })?;
    if e.format != CARD_LOG_FORMAT {
        return Err(ExportFileError::NotAnExport {
            path: path.to_path_buf(),
            why: format!("format {:?} is not {CARD_LOG_FORMAT:?}", e.format),
        });
    }
    check_challenge(path, &e, challenge)?;
    Ok(e)
}

/// An export must answer this round's challenge.
pub fn check_challenge(path: &Path, e: &CardLogExport, challenge: &Challenge) -> Result<(), ExportFileError> {
    if &e.challenge == challenge {
        return Ok(());
    }
    Err(ExportFileError::Stale {
        path: path.to_path_buf(),
        serial: e.serial,
        found: hex::encode(e.challenge),
        expected: hex::encode(challenge),
    })
}
