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
//!
//! A round's challenge is drawn by the back office ([`draw_challenge`], `keyroll card challenge`) and
//! says which round it belongs to: `round (4) ‖ drawn at (4, Unix seconds) ‖ tag (8)`, the round being
//! the id the next recorded reconciliation gets, the tag the first 8 bytes of AES-CMAC under a key
//! derived from the issuer's card log master (NIST SP 800-108). `reconcile --challenge` accepts only a
//! challenge whose tag verifies (this back office drew it: a made-up one is refused) and whose round is
//! still the next one ([`check_round`]): once a reconciliation is recorded, every challenge drawn before
//! it, and every export answering one, is refused. Nothing is stored when a challenge is drawn.

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

const ROUND_LABEL: &[u8] = b"keyroll export round v1";

fn round_key(master: &crate::crypto::Secret16) -> crate::crypto::Secret16 {
    crate::crypto::kdf::derive16(master, crate::crypto::kdf::Purpose::ExportChallenge, b"")
}

fn round_tag(master: &crate::crypto::Secret16, round: u32, drawn_at: u32) -> [u8; 8] {
    let t = crate::crypto::mac::cmac(&round_key(master), &[ROUND_LABEL, &round.to_be_bytes(), &drawn_at.to_be_bytes()]);
    t[..8].try_into().expect("16-byte tag")
}

/// The round a challenge drawn now belongs to: the id the next recorded reconciliation gets.
fn next_round(u: &crate::authority::Unlocked<'_>) -> Result<u32, crate::authority::AuthorityError> {
    let latest = u.auth.latest_reconciliation()?.map_or(0, |r| r.id);
    Ok(u32::try_from(latest + 1).unwrap_or(u32::MAX))
}

/// Draw this round's challenge (see the module documentation).
pub fn draw_challenge(u: &crate::authority::Unlocked<'_>) -> Result<Challenge, crate::authority::AuthorityError> {
    let round = next_round(u)?;
    let drawn_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    let mut c = [0u8; 16];
    c[..4].copy_from_slice(&round.to_be_bytes());
    c[4..8].copy_from_slice(&drawn_at.to_be_bytes());
    c[8..].copy_from_slice(&round_tag(&u.log_master()?, round, drawn_at));
    Ok(c)
}

/// Why a round challenge is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RoundError {
    #[error("challenge {0} was not drawn by this back office (`keyroll card challenge`)")]
    NotDrawnHere(String),
    #[error(
        "challenge {challenge} belongs to round {round}, but reconciliation {latest} was recorded since it was drawn: exports answering it are an earlier round's"
    )]
    Used { challenge: String, round: u32, latest: u32 },
}

/// Whether `challenge` is a challenge this back office drew for the round still open.
pub fn check_round(
    u: &crate::authority::Unlocked<'_>,
    challenge: &Challenge,
) -> Result<Result<(), RoundError>, crate::authority::AuthorityError> {
    let round = u32::from_be_bytes(challenge[..4].try_into().expect("4 bytes"));
    let drawn_at = u32::from_be_bytes(challenge[4..8].try_into().expect("4 bytes"));
    // The tag is a left-truncated AES-CMAC (NIST SP 800-38B §5.4, 64 bits), checked in constant time.
    let key = round_key(&u.log_master()?);
    let parts: [&[u8]; 3] = [ROUND_LABEL, &round.to_be_bytes(), &drawn_at.to_be_bytes()];
    if crate::crypto::mac::verify(&key, &parts, &challenge[8..]).is_err() {
        return Ok(Err(RoundError::NotDrawnHere(hex::encode(challenge))));
    }
    let next = next_round(u)?;
    if round != next {
        return Ok(Err(RoundError::Used { challenge: hex::encode(challenge), round, latest: next.saturating_sub(1) }));
    }
    Ok(Ok(()))
}

/// A fresh random challenge for one read the back office makes itself (a card file, a card in a
/// reader), from the operating system's generator.
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
