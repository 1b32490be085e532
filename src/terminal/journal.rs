//! The terminal's settlement journal (`settle --journal FILE`, DESIGN.md §9; issue 13 item 4): one
//! hash-chained JSON line per settlement (format in `protocol::ledger`).
//!
//! Crash safety: a line is appended with one `write` of the whole line and its newline, then
//! `fsync`ed. A crash can still leave a prefix of that write on disk; a line is only a line once its
//! newline is there, so readers treat an unterminated tail as torn (`ledger::JournalError::Torn`), and
//! the next append first cuts the file back to its last newline. So the journal never *keeps* a half
//! line: after any crash it is a valid chain, possibly one settlement short (the cards' logs still
//! hold that settlement, and `reconcile` accounts for it from them). Appenders are serialised by an
//! `flock` on the journal itself (one terminal process per line at a time).

use super::Recovery;
use super::value::TransferRecord;
use crate::domain::{Amount, CardSerial};
use crate::protocol::ledger::{self, JournalError, JournalOutcome, JournalRecord};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Why the journal could not be appended to.
#[derive(Debug, thiserror::Error)]
pub enum JournalWriteError {
    #[error("settlement journal {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("settlement journal {path} does not verify, so nothing was appended: {source}")]
    Invalid { path: String, source: JournalError },
}

/// Check that the journal at `path` (if it exists) verifies, before a settlement touches any card.
pub fn check(path: &Path) -> Result<(), JournalWriteError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(JournalWriteError::Io { path: path.display().to_string(), source }),
    };
    // A torn tail is cut by the next append; anything else is a broken chain.
    let keep = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
    ledger::verify_journal(&text[..keep])
        .map(|_| ())
        .map_err(|source| JournalWriteError::Invalid { path: path.display().to_string(), source })
}

/// The journal line for a settlement between `payer` and `payee`.
pub fn record(
    payer: CardSerial,
    payee: CardSerial,
    amount: Amount,
    transfer: Option<&TransferRecord>,
    recovered: &[Recovery],
) -> JournalRecord {
    let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let outcome = match transfer {
        None => JournalOutcome::NothingMoved,
        Some(t) if t.credited => JournalOutcome::Settled,
        Some(t) if t.refunded => JournalOutcome::Refunded,
        Some(t) if t.debited => JournalOutcome::Torn,
        Some(_) => JournalOutcome::NothingMoved,
    };
    JournalRecord {
        at,
        payer,
        payee,
        amount: if matches!(outcome, JournalOutcome::NothingMoved) { Amount(0) } else { amount },
        outcome,
        receipt: transfer.map(|t| t.receipt),
        nonce: transfer.map(|t| hex::encode(t.nonce)),
        payer_sequence: transfer.and_then(|t| t.payer_sequence),
        token: transfer.and_then(|t| t.token.map(hex::encode)),
        ack: transfer.and_then(|t| t.ack.map(hex::encode)),
        proof: transfer.and_then(|t| t.proof.map(hex::encode)),
        recovered: recovered.iter().map(|r| serde_json::to_string(r).unwrap_or_default()).collect(),
        transfer_key_id: transfer.and_then(|t| t.transfer_key_id).map(|id| id.0),
        signature: transfer.and_then(|t| t.signature.map(hex::encode)),
    }
}

/// Append `record` to the journal at `path` (created if missing) and return the new line's hash.
/// The existing journal must verify first: appending to a broken chain would hide the break.
pub fn append(path: &Path, record: &JournalRecord) -> Result<String, JournalWriteError> {
    let io = |source| JournalWriteError::Io { path: path.display().to_string(), source };
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
    lock(&f).map_err(io)?;
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(io)?;
    // Cut a torn tail (a crash during the last append) back to the last complete line.
    let keep = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
    if keep < text.len() {
        f.set_len(keep as u64).map_err(io)?;
        f.sync_all().map_err(io)?;
        text.truncate(keep);
    }
    let (lines, head) = ledger::verify_journal(&text)
        .map_err(|source| JournalWriteError::Invalid { path: path.display().to_string(), source })?;
    let mut line = ledger::journal_line(lines.len() as u64, &head, record);
    let hash = ledger::line_hash(&line);
    line.push('\n');
    f.seek(SeekFrom::End(0)).map_err(io)?;
    f.write_all(line.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(hash)
}

#[cfg(unix)]
fn lock(f: &File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor this function's caller owns; released when it is closed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(unix))]
fn lock(_: &File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Amount, CardSerial};
    use crate::protocol::ledger::JournalOutcome;

    fn record(amount: u64) -> JournalRecord {
        JournalRecord {
            at: 0,
            payer: CardSerial::from_u64(1),
            payee: CardSerial::from_u64(2),
            amount: Amount(amount),
            outcome: JournalOutcome::Settled,
            receipt: Some(1),
            nonce: None,
            payer_sequence: None,
            token: None,
            ack: None,
            proof: None,
            recovered: vec![],
            transfer_key_id: None,
            signature: None,
        }
    }

    #[test]
    fn appends_chain_and_a_torn_tail_is_cut_before_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        append(&p, &record(1)).unwrap();
        let h2 = append(&p, &record(2)).unwrap();
        // A crash in the middle of a third append.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"format\":\"keyroll-jour").unwrap();
        drop(f);
        assert_eq!(ledger::verify_journal(&std::fs::read_to_string(&p).unwrap()).unwrap_err(), JournalError::Torn);
        append(&p, &record(3)).unwrap();
        let (lines, _) = ledger::verify_journal(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(lines.iter().map(|l| l.record.amount.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(lines[2].prev, h2);
    }

    #[test]
    fn a_broken_journal_is_not_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        append(&p, &record(1)).unwrap();
        append(&p, &record(2)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let edited = text.replacen("\"amount\":1,", "\"amount\":5,", 1);
        std::fs::write(&p, &edited).unwrap();
        assert!(matches!(append(&p, &record(3)), Err(JournalWriteError::Invalid { .. })));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), edited, "nothing appended");
    }
}
