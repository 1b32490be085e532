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

/// Check, before a settlement touches any card, that the journal at `path` (if it exists) ends in a
/// journal line this terminal can chain to. Reads only the journal's tail (see [`append`]).
pub fn check(path: &Path) -> Result<(), JournalWriteError> {
    let io = |source| JournalWriteError::Io { path: path.display().to_string(), source };
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io(source)),
    };
    let tail = read_tail(&mut f).map_err(io)?;
    chain_point(path, &tail).map(|_| ())
}

/// The journal's head after the last complete line: `(lines, first line's hash, head)`, reading only
/// the first and last lines (what `settle` prints; `reconcile --journal` verifies the whole chain).
pub fn head(path: &Path) -> Result<(u64, Option<String>, String), JournalWriteError> {
    let io = |source| JournalWriteError::Io { path: path.display().to_string(), source };
    let mut f = File::open(path).map_err(io)?;
    let tail = read_tail(&mut f).map_err(io)?;
    let (lines, head) = chain_point(path, &tail)?;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut first = Vec::with_capacity(1024);
    (&mut f).take(ledger::MAX_LINE as u64 + 1).read_to_end(&mut first).map_err(io)?;
    let first = first
        .iter()
        .position(|&b| b == b'\n')
        .and_then(|e| std::str::from_utf8(&first[..e]).ok())
        .map(ledger::line_hash);
    Ok((lines, first, head))
}

/// The end of a journal as an appender sees it.
struct Tail {
    /// The last complete line, without its newline; `None` when there is none.
    last: Option<String>,
    /// Where the complete lines end (a torn write after them is cut by the next append).
    keep: u64,
    /// The file's length.
    len: u64,
}

/// Read the last complete line: at most the last `2 × (MAX_LINE + 1)` bytes, which hold it and a torn
/// write after it (each at most one line), so the cost does not grow with the journal.
fn read_tail(f: &mut File) -> std::io::Result<Tail> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let len = f.seek(SeekFrom::End(0))?;
    let start = len.saturating_sub(2 * (ledger::MAX_LINE as u64 + 1));
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut buf)?;
    let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
        if start == 0 {
            return Ok(Tail { last: None, keep: 0, len });
        }
        return Err(bad("its last line is longer than any journal line"));
    };
    let begin = match buf[..end].iter().rposition(|&b| b == b'\n') {
        Some(p) => p + 1,
        None if start == 0 => 0,
        None => return Err(bad("its last line is longer than any journal line")),
    };
    let last = std::str::from_utf8(&buf[begin..end]).map_err(|_| bad("its last line is not UTF-8"))?;
    Ok(Tail { last: Some(last.to_string()), keep: start + end as u64 + 1, len })
}

/// The index and hash the next line chains to.
fn chain_point(path: &Path, tail: &Tail) -> Result<(u64, String), JournalWriteError> {
    ledger::journal_tail(tail.last.as_deref())
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
/// Only the journal's last line is read and parsed (so an append costs the same at any length): the
/// new line must chain to a journal line, never to garbage. The whole chain is the back office's to
/// verify (`reconcile --journal`, with the heads it records): a terminal's own check of older lines
/// would protect nothing against the hostile terminal the scheme assumes, and cost O(journal).
pub fn append(path: &Path, record: &JournalRecord) -> Result<String, JournalWriteError> {
    let io = |source| JournalWriteError::Io { path: path.display().to_string(), source };
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
    lock(&f).map_err(io)?;
    let tail = read_tail(&mut f).map_err(io)?;
    let (index, head) = chain_point(path, &tail)?;
    // Cut a torn tail (a crash during the last append) back to the last complete line.
    if tail.keep < tail.len {
        f.set_len(tail.keep).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    let mut line = ledger::journal_line(index, &head, record);
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
    fn a_journal_not_ending_in_a_journal_line_is_not_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        append(&p, &record(1)).unwrap();
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("{\"format\":\"something else\"}\n");
        std::fs::write(&p, &text).unwrap();
        assert!(matches!(check(&p), Err(JournalWriteError::Invalid { .. })));
        assert!(matches!(append(&p, &record(3)), Err(JournalWriteError::Invalid { .. })));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text, "nothing appended");
    }

    #[test]
    fn an_edit_before_the_last_line_is_found_by_the_back_office_not_the_terminal() {
        // The terminal reads only the last line (appends cost the same at any length); the whole chain is
        // `reconcile --journal`'s to verify, and it names the line after the edited one.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        append(&p, &record(1)).unwrap();
        append(&p, &record(2)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replacen("\"amount\":1,", "\"amount\":5,", 1)).unwrap();
        append(&p, &record(3)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(ledger::verify_journal(&text).unwrap_err(), JournalError::Chain { line: 2 });
    }

    #[test]
    fn the_head_read_from_the_ends_equals_the_verified_head() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        for n in 0..50 {
            append(&p, &record(n)).unwrap();
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let (lines, head) = ledger::verify_journal(&text).unwrap();
        let first = text.lines().next().map(ledger::line_hash);
        assert_eq!(super::head(&p).unwrap(), (lines.len() as u64, first, head));
    }
}
