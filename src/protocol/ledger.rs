//! The value ledger's formats, shared by the card (log export), the terminal (settlement journal) and
//! the back office (`rollout::reconcile`): DESIGN.md §10 point 6, issue 13 items 4 and 5.
//!
//! - A **card log export** is the card's own account of its value: what it was issued, its balance,
//!   running totals, its recent log entries (each naming the counterparty and the payee's receipt
//!   sequence number that identifies the transfer on both cards), its open debits, and its receipt
//!   window. The card MACs the canonical encoding ([`CardLogExport::mac_input`]) under a per-card key
//!   (`crypto::mac::card_log_key`) that the back office derives too, so a holder cannot edit an export.
//! - A **settlement journal** is a file of JSON lines, one per settlement the terminal ran. Each line
//!   carries the SHA-256 of the line before it (the first: 64 zeros) and its index, so an edited,
//!   deleted or reordered line breaks the chain at the next line. The last line has no successor:
//!   `reconcile` checks what it says against the cards' logs instead.
//! - Journal line **versions**: `keyroll-journal/1` lines (session 4) carry the value token's MAC only;
//!   `keyroll-journal/2` lines (written now) also carry the transfer key id and a certified payer's
//!   value signature, which `reconcile` verifies under the payer's certificate. The chain is the same
//!   for both (SHA-256 of the line's bytes), so a journal begun by an older terminal keeps verifying
//!   and grows with version 2 lines; a version 1 line after a version 2 line is refused (a terminal
//!   never goes back: a line rewritten as version 1 would shed its signature).
//!
//! This module is pure: bytes in, typed values or an error naming the line and field out.

use super::codec::{DecodeError, Reader, Wire};
use crate::domain::{Amount, CardSerial};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version 2: the MAC covers the binary wire encoding ([`CardLogExport`]'s [`Wire`] form) and the
/// back office's challenge; version 1 (MAC over JSON, no challenge) is not accepted.
pub const CARD_LOG_FORMAT: &str = "keyroll-card-log/2";
/// Most log entries an export carries: the card keeps this many (house rule 5: the decoder caps the
/// count before anything is read).
pub const MAX_EXPORT_ENTRIES: usize = 32;
/// Most open debits an export carries: the card's pending debits and its exception list.
pub const MAX_EXPORT_OPEN_DEBITS: usize = super::info::MAX_PENDING + super::info::MAX_EXCEPTIONS;
/// Label of the export MAC (AES-CMAC under the card's log key over label ‖ the export's body).
const EXPORT_MAC_LABEL: &[u8] = b"keyroll card log export v3\0";
/// The journal line format written now.
pub const JOURNAL_FORMAT: &str = "keyroll-journal/2";
/// The first journal line format (no transfer key id, no value signature): still read.
pub const JOURNAL_FORMAT_V1: &str = "keyroll-journal/1";
/// The `prev` of a journal's first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest journal line accepted (house rule 5: a line holds one settlement's serials, MACs and
/// signatures, well under this).
pub const MAX_LINE: usize = 16 * 1024;

/// What a card log entry records.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// Value debited toward the payee's receipt `receipt`.
    Debit,
    /// Value credited on the payee's receipt `receipt`.
    Credit,
    /// A debit undone with the payee's abort proof for `receipt`.
    Refund,
    /// The payee's receipt `receipt` was aborted (never to be credited).
    Abort,
    /// A debit whose receipt can no longer be proved either way moved to the exception list.
    Exception,
    /// An issuer-signed resolution refunded an open debit (`amount` went back to the payer).
    Resolved,
    /// An issuer-signed resolution closed an open debit as credited at the payee (nothing came back).
    Closed,
    /// A transfer key was installed from `counterpart`.
    KeyRoll,
}

impl EntryKind {
    pub const ALL: [EntryKind; 8] = [
        EntryKind::Debit,
        EntryKind::Credit,
        EntryKind::Refund,
        EntryKind::Abort,
        EntryKind::Exception,
        EntryKind::Resolved,
        EntryKind::Closed,
        EntryKind::KeyRoll,
    ];

    /// The entry's code in the export's wire form.
    pub fn code(self) -> u8 {
        match self {
            EntryKind::Debit => 0x01,
            EntryKind::Credit => 0x02,
            EntryKind::Refund => 0x03,
            EntryKind::Abort => 0x04,
            EntryKind::Exception => 0x05,
            EntryKind::Resolved => 0x06,
            EntryKind::Closed => 0x07,
            EntryKind::KeyRoll => 0x08,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        EntryKind::ALL.into_iter().find(|k| k.code() == c)
    }
}

/// One exported log entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportEntry {
    /// The exporting card's transaction counter when the entry was written.
    pub sequence: u32,
    pub kind: EntryKind,
    pub counterpart: CardSerial,
    pub amount: Amount,
    /// The payee's receipt sequence number (0 for a key roll).
    pub receipt: u32,
}

/// A debit neither confirmed nor refunded, as the payer exports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OpenDebit {
    pub payee: CardSerial,
    pub receipt: u32,
    pub amount: Amount,
    /// In the payer's exception list: no card can resolve it any more, only an issuer resolution.
    pub exception: bool,
    /// The payer's sequence number of the debit (what an issuer resolution names, with the payee,
    /// receipt and amount). Left out of the JSON when 0, as exports from before it existed had it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub payer_sequence: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Running totals: counters, so they survive the bounded log dropping old entries.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    pub debited: u64,
    pub credited: u64,
    pub refunded: u64,
}

/// A card's log as exported for the back office.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CardLogExport {
    pub format: String,
    pub serial: CardSerial,
    /// Value put on the card at personalisation.
    pub issued: Amount,
    pub balance: Amount,
    pub totals: Totals,
    /// Log entries the card no longer holds (its log is bounded); matching covers the rest.
    pub dropped: u32,
    pub entries: Vec<ExportEntry>,
    pub open_debits: Vec<OpenDebit>,
    /// The payee side's receipt window: numbers `receipt_floor..receipt_next` can still be credited or
    /// aborted (if open), so a debit toward one of them can still be resolved by the two cards.
    pub receipt_floor: u32,
    pub receipt_next: u32,
    /// The challenge the export answers (EXPORT LOG's data): chosen by whoever asked (the back office,
    /// or the terminal it handed a challenge to), so an export recorded earlier cannot stand in for a
    /// current one. A card file read by the back office directly answers a challenge it drew itself.
    #[serde(with = "crate::domain::serde_hex")]
    pub challenge: [u8; 16],
    /// AES-CMAC over [`CardLogExport::mac_input`] under the card's log key.
    #[serde(with = "crate::domain::serde_hex")]
    pub mac: [u8; 16],
}

impl CardLogExport {
    /// The bytes the MAC covers: a label and the export's body, its wire form without the MAC
    /// ([`CardLogExport::body`]). The wire form is canonical (fixed-width fields, counted lists), so
    /// an export kept as JSON re-encodes to the same bytes and any changed value changes them.
    pub fn mac_input(&self) -> Vec<u8> {
        let mut b = EXPORT_MAC_LABEL.to_vec();
        self.body(&mut b);
        b
    }

    /// The wire form without the MAC: `serial (8) ‖ challenge (16) ‖ issued (8) ‖ balance (8) ‖
    /// debited (8) ‖ credited (8) ‖ refunded (8) ‖ dropped (4) ‖ receipt floor (4) ‖ receipt next (4) ‖
    /// n (1) ‖ n × entry ‖ m (1) ‖ m × open debit`, where an entry is `sequence (4) ‖ kind (1) ‖
    /// counterpart (8) ‖ amount (8) ‖ receipt (4)` and an open debit is `payee (8) ‖ receipt (4) ‖
    /// amount (8) ‖ exception (1: 00 or 01) ‖ payer sequence (4)`. Integers are big-endian.
    pub fn body(&self, d: &mut Vec<u8>) {
        d.extend_from_slice(&self.serial.0);
        d.extend_from_slice(&self.challenge);
        for v in [self.issued.0, self.balance.0, self.totals.debited, self.totals.credited, self.totals.refunded] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        for v in [self.dropped, self.receipt_floor, self.receipt_next] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        // The counts are bounded by the card (and refused above the bounds when read); an export built
        // by hand with more entries than a byte counts is cut there, and then fails its MAC.
        let n = self.entries.len().min(u8::MAX as usize);
        d.push(n as u8);
        for e in &self.entries[..n] {
            d.extend_from_slice(&e.sequence.to_be_bytes());
            d.push(e.kind.code());
            d.extend_from_slice(&e.counterpart.0);
            d.extend_from_slice(&e.amount.0.to_be_bytes());
            d.extend_from_slice(&e.receipt.to_be_bytes());
        }
        let m = self.open_debits.len().min(u8::MAX as usize);
        d.push(m as u8);
        for o in &self.open_debits[..m] {
            d.extend_from_slice(&o.payee.0);
            d.extend_from_slice(&o.receipt.to_be_bytes());
            d.extend_from_slice(&o.amount.0.to_be_bytes());
            d.push(o.exception as u8);
            d.extend_from_slice(&o.payer_sequence.to_be_bytes());
        }
    }

    /// Largest wire form: what one EXPORT LOG answers at most (2,695 bytes, served through GET RESPONSE).
    pub const MAX_WIRE_LEN: usize =
        8 + 16 + 5 * 8 + 3 * 4 + 1 + MAX_EXPORT_ENTRIES * 25 + 1 + MAX_EXPORT_OPEN_DEBITS * 25 + 16;
}

/// EXPORT LOG's answer (`docs/protocol.md` §4.14a): [`CardLogExport::body`] ‖ MAC (16).
impl Wire for CardLogExport {
    type Context = ();

    fn encode(&self, out: &mut Vec<u8>) {
        self.body(out);
        out.extend_from_slice(&self.mac);
    }

    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        let serial = CardSerial(r.array("serial")?);
        let challenge = r.array("challenge")?;
        let issued = Amount(r.u64("issued")?);
        let balance = Amount(r.u64("balance")?);
        let totals = Totals { debited: r.u64("debited")?, credited: r.u64("credited")?, refunded: r.u64("refunded")? };
        let dropped = r.u32("dropped")?;
        let receipt_floor = r.u32("receipt floor")?;
        let receipt_next = r.u32("receipt next")?;
        let n = r.u8("entry count")? as usize;
        if n > MAX_EXPORT_ENTRIES {
            return Err(DecodeError::Invalid { field: "entry count", why: "more entries than a card keeps (32)" });
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let sequence = r.u32("entry sequence")?;
            let kind = EntryKind::from_code(r.u8("entry kind")?)
                .ok_or(DecodeError::Invalid { field: "entry kind", why: "unknown code" })?;
            entries.push(ExportEntry {
                sequence,
                kind,
                counterpart: CardSerial(r.array("entry counterpart")?),
                amount: Amount(r.u64("entry amount")?),
                receipt: r.u32("entry receipt")?,
            });
        }
        let m = r.u8("open debit count")? as usize;
        if m > MAX_EXPORT_OPEN_DEBITS {
            return Err(DecodeError::Invalid {
                field: "open debit count",
                why: "more open debits than a card keeps (72)",
            });
        }
        let mut open_debits = Vec::with_capacity(m);
        for _ in 0..m {
            let payee = CardSerial(r.array("open debit payee")?);
            let receipt = r.u32("open debit receipt")?;
            let amount = Amount(r.u64("open debit amount")?);
            let exception = match r.u8("open debit exception")? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::Invalid { field: "open debit exception", why: "not 00 or 01" }),
            };
            open_debits.push(OpenDebit { payee, receipt, amount, exception, payer_sequence: r.u32("payer sequence")? });
        }
        Ok(CardLogExport {
            format: CARD_LOG_FORMAT.into(),
            serial,
            issued,
            balance,
            totals,
            dropped,
            entries,
            open_debits,
            receipt_floor,
            receipt_next,
            challenge,
            mac: r.array("mac")?,
        })
    }
}

/// How a settlement ended, as the terminal saw it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum JournalOutcome {
    /// Credited and confirmed.
    Settled,
    /// Debited, then the payee aborted and the payer refunded.
    Refunded,
    /// Nothing moved (a refusal before the debit, or amount 0).
    NothingMoved,
    /// Interrupted after the debit: the value is in flight until a recovery or reconciliation.
    Torn,
}

/// What one journal line says about one settlement (no key, only public values and the MACs and
/// signatures that prove it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JournalRecord {
    /// Seconds since the Unix epoch, from the terminal's clock (informational only).
    pub at: u64,
    pub payer: CardSerial,
    pub payee: CardSerial,
    pub amount: Amount,
    pub outcome: JournalOutcome,
    /// The payee's receipt sequence number and nonce, once BEGIN RECEIVE answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_sequence: Option<u32>,
    /// The value token, acknowledgement and abort proof as relayed (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// Transfers between the two cards that recovery resolved before this one (free text per entry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovered: Vec<String>,
    /// Version 2: the transfer key id the token was made under (part of what the payer signs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_key_id: Option<u32>,
    /// Version 2: a certified payer's ECDSA P-256 value signature over the token's fields (P1363, hex;
    /// DESIGN.md §10 point 6), as DEBIT answered it. Absent for uncertified payers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// One line of a settlement journal.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JournalLine {
    pub format: String,
    /// 0 for the first line, then +1 per line.
    pub index: u64,
    /// SHA-256 (hex) of the previous line's bytes, without its newline.
    pub prev: String,
    #[serde(flatten)]
    pub record: JournalRecord,
}

/// Why a journal does not verify. `line` is 1-based, as an editor shows it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JournalError {
    #[error("journal line {line}: {why}")]
    Malformed { line: usize, why: String },
    #[error("journal line {line}: index {found} where {expected} was expected (a line was deleted, inserted or moved)")]
    Index { line: usize, expected: u64, found: u64 },
    #[error(
        "journal line {line}: does not chain to the line before it (that line was edited, or lines were reordered or deleted)"
    )]
    Chain { line: usize },
    #[error("journal ends in a partial line (a write was interrupted; the next append removes it)")]
    Torn,
    #[error("the journal's last line: {why}")]
    LastLine { why: String },
}

/// SHA-256 of a line's bytes (without its newline), hex.
pub fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// Encode the line that follows a line hashing to `prev` at `index`.
pub fn journal_line(index: u64, prev: &str, record: &JournalRecord) -> String {
    let line = JournalLine { format: JOURNAL_FORMAT.into(), index, prev: prev.into(), record: record.clone() };
    serde_json::to_string(&line).expect("journal line serializes")
}

/// Parse one journal line (1-based `line` for errors) and check what a line can show alone: its size,
/// its format, and that a version 1 line carries no version 2 field. Returns the line and its version.
fn parse_line(raw: &str, line: usize) -> Result<(JournalLine, u8), JournalError> {
    if raw.len() > MAX_LINE {
        return Err(JournalError::Malformed { line, why: format!("longer than {MAX_LINE} bytes") });
    }
    let l: JournalLine = serde_json::from_str(raw).map_err(|e| JournalError::Malformed { line, why: e.to_string() })?;
    let version = match l.format.as_str() {
        JOURNAL_FORMAT_V1 => 1,
        JOURNAL_FORMAT => 2,
        other => {
            return Err(JournalError::Malformed {
                line,
                why: format!("format {other:?} is neither {JOURNAL_FORMAT:?} nor {JOURNAL_FORMAT_V1:?}"),
            });
        }
    };
    if version == 1 && (l.record.transfer_key_id.is_some() || l.record.signature.is_some()) {
        return Err(JournalError::Malformed {
            line,
            why: format!("a {JOURNAL_FORMAT_V1:?} line carries version 2 fields (transfer_key_id, signature)"),
        });
    }
    Ok((l, version))
}

/// What an appender needs from a journal's last complete line (`None`: the journal is empty): the
/// index the next line takes and the hash it chains to. Only that line is parsed, so an append costs
/// the same at any journal length; the whole chain is verified by [`verify_journal`] (`reconcile
/// --journal`), whose recorded heads also catch a rewrite. A terminal is not where the chain is trusted
/// (a hostile terminal could skip any check of its own): it only refuses to chain onto a line that is
/// not a journal line.
pub fn journal_tail(last: Option<&str>) -> Result<(u64, String), JournalError> {
    let Some(raw) = last else {
        return Ok((0, GENESIS.to_string()));
    };
    let last = |why: String| JournalError::LastLine { why };
    let (l, _) = parse_line(raw, 0).map_err(|e| match e {
        JournalError::Malformed { why, .. } => last(why),
        other => other,
    })?;
    let next = l.index.checked_add(1).ok_or_else(|| last("its index cannot be followed".into()))?;
    Ok((next, line_hash(raw)))
}

/// Parse and check a whole journal: every line well formed, indices 0, 1, 2…, each `prev` the hash of
/// the line before. A final line without its newline is a torn write ([`JournalError::Torn`]).
/// Returns the lines and the hash of the last one (the head).
pub fn verify_journal(text: &str) -> Result<(Vec<JournalLine>, String), JournalError> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(JournalError::Torn);
    }
    let mut prev = GENESIS.to_string();
    let mut out = Vec::new();
    let mut newest = 1;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let (l, version) = parse_line(raw, line)?;
        if version < newest {
            return Err(JournalError::Malformed {
                line,
                why: format!(
                    "a {JOURNAL_FORMAT_V1:?} line after a {JOURNAL_FORMAT:?} line (terminals never write an older version)"
                ),
            });
        }
        newest = version;
        if l.index != i as u64 {
            return Err(JournalError::Index { line, expected: i as u64, found: l.index });
        }
        if l.prev != prev {
            return Err(JournalError::Chain { line });
        }
        prev = line_hash(raw);
        out.push(l);
    }
    Ok((out, prev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> JournalRecord {
        JournalRecord {
            at: 1_700_000_000 + n,
            payer: CardSerial::from_u64(1),
            payee: CardSerial::from_u64(2),
            amount: Amount(10 + n),
            outcome: JournalOutcome::Settled,
            receipt: Some(n as u32 + 1),
            nonce: Some("00".repeat(16)),
            payer_sequence: Some(7),
            token: Some("11".repeat(16)),
            ack: Some("22".repeat(16)),
            proof: None,
            recovered: vec![],
            transfer_key_id: Some(1),
            signature: Some("33".repeat(64)),
        }
    }

    fn journal(n: u64) -> String {
        let mut text = String::new();
        let mut prev = GENESIS.to_string();
        for i in 0..n {
            let l = journal_line(i, &prev, &record(i));
            prev = line_hash(&l);
            text.push_str(&l);
            text.push('\n');
        }
        text
    }

    #[test]
    fn a_written_journal_verifies_and_its_head_is_the_last_hash() {
        let text = journal(4);
        let (lines, head) = verify_journal(&text).unwrap();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[2].record, record(2));
        assert_eq!(head, line_hash(text.lines().last().unwrap()));
        assert_eq!(verify_journal("").unwrap().1, GENESIS);
    }

    #[test]
    fn edited_deleted_reordered_and_torn_lines_are_detected() {
        let text = journal(4);
        let lines: Vec<&str> = text.lines().collect();
        let join = |v: &[&str]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
        let edited = join(&[lines[0], &lines[1].replace("\"amount\":11", "\"amount\":99"), lines[2], lines[3]]);
        assert_eq!(verify_journal(&edited).unwrap_err(), JournalError::Chain { line: 3 });
        let deleted = join(&[lines[0], lines[2], lines[3]]);
        assert!(matches!(verify_journal(&deleted).unwrap_err(), JournalError::Index { line: 2, .. }));
        let reordered = join(&[lines[0], lines[2], lines[1], lines[3]]);
        assert!(verify_journal(&reordered).is_err());
        let torn = &text[..text.len() - 5];
        assert_eq!(verify_journal(torn).unwrap_err(), JournalError::Torn);
        let unknown = text.replacen("{\"format\"", "{\"x\":1,\"format\"", 1);
        assert!(matches!(verify_journal(&unknown).unwrap_err(), JournalError::Malformed { line: 1, .. }));
    }

    /// A journal of version 1 lines (what session 4's terminals wrote), byte for byte as they wrote it.
    fn journal_v1(n: u64) -> String {
        let mut text = String::new();
        let mut prev = GENESIS.to_string();
        for i in 0..n {
            let r = JournalRecord { transfer_key_id: None, signature: None, ..record(i) };
            let l = journal_line(i, &prev, &r).replace(JOURNAL_FORMAT, JOURNAL_FORMAT_V1);
            prev = line_hash(&l);
            text.push_str(&l);
            text.push('\n');
        }
        text
    }

    #[test]
    fn older_journals_still_read_and_grow_with_version_2_lines_never_back() {
        let old = journal_v1(2);
        assert!(old.lines().all(|l| l.starts_with("{\"format\":\"keyroll-journal/1\"")), "{old}");
        let (lines, head) = verify_journal(&old).unwrap();
        assert_eq!((lines.len(), lines[1].record.signature.as_deref()), (2, None));
        // An older terminal's journal, appended to by this one.
        let next = journal_line(2, &head, &record(2));
        let grown = format!("{old}{next}\n");
        let (lines, _) = verify_journal(&grown).unwrap();
        assert_eq!(lines[2].format, JOURNAL_FORMAT);
        assert_eq!(lines[2].record.signature, Some("33".repeat(64)));
        // A version 1 line after it, chained properly: refused (a signature shed by a rewrite).
        let back =
            journal_line(3, &line_hash(&next), &JournalRecord { transfer_key_id: None, signature: None, ..record(3) })
                .replace(JOURNAL_FORMAT, JOURNAL_FORMAT_V1);
        let err = verify_journal(&format!("{grown}{back}\n")).unwrap_err();
        assert!(matches!(err, JournalError::Malformed { line: 4, .. }), "{err}");
        // A version 1 line carrying version 2 fields: refused.
        let mixed = journal_line(0, GENESIS, &record(0)).replace(JOURNAL_FORMAT, JOURNAL_FORMAT_V1);
        assert!(matches!(verify_journal(&format!("{mixed}\n")), Err(JournalError::Malformed { line: 1, .. })));
        // An unknown version: refused.
        let v3 = journal_line(0, GENESIS, &record(0)).replace(JOURNAL_FORMAT, "keyroll-journal/3");
        assert!(matches!(verify_journal(&format!("{v3}\n")), Err(JournalError::Malformed { line: 1, .. })));
    }

    fn export(entries: usize, open: usize) -> CardLogExport {
        CardLogExport {
            format: CARD_LOG_FORMAT.into(),
            serial: CardSerial::from_u64(3),
            issued: Amount(100),
            balance: Amount(90),
            totals: Totals { debited: 10, credited: 0, refunded: 0 },
            dropped: 7,
            entries: (0..entries)
                .map(|i| ExportEntry {
                    sequence: i as u32 + 1,
                    kind: EntryKind::ALL[i % EntryKind::ALL.len()],
                    counterpart: CardSerial::from_u64(4 + i as u64),
                    amount: Amount(10 + i as u64),
                    receipt: 1 + i as u32,
                })
                .collect(),
            open_debits: (0..open)
                .map(|i| OpenDebit {
                    payee: CardSerial::from_u64(40 + i as u64),
                    receipt: 9 + i as u32,
                    amount: Amount(1 + i as u64),
                    exception: i % 2 == 1,
                    payer_sequence: 100 + i as u32,
                })
                .collect(),
            receipt_floor: 1,
            receipt_next: 1,
            challenge: [0xC7; 16],
            mac: [0; 16],
        }
    }

    #[test]
    fn export_mac_input_covers_every_field_but_the_mac() {
        let e = export(1, 1);
        let mut with_mac = e.clone();
        with_mac.mac = [9; 16];
        assert_eq!(e.mac_input(), with_mac.mac_input());
        let mut edited = e.clone();
        edited.entries[0].amount = Amount(1);
        assert_ne!(e.mac_input(), edited.mac_input());
        let mut other_challenge = e.clone();
        other_challenge.challenge[15] ^= 1;
        assert_ne!(e.mac_input(), other_challenge.mac_input(), "the challenge is MAC'd");
        let back: CardLogExport = serde_json::from_slice(&serde_json::to_vec_pretty(&e).unwrap()).unwrap();
        assert_eq!(back.mac_input(), e.mac_input());
    }

    /// House rule 2: the wire type round-trips, here at its largest (a full log and every open debit a
    /// card can hold), and through the JSON file form too.
    #[test]
    fn a_full_export_round_trips_on_the_wire_and_in_json() {
        for (n, m) in [(0, 0), (1, 1), (MAX_EXPORT_ENTRIES, MAX_EXPORT_OPEN_DEBITS)] {
            let mut e = export(n, m);
            e.mac = [0xAB; 16];
            let w = e.to_wire();
            if (n, m) == (MAX_EXPORT_ENTRIES, MAX_EXPORT_OPEN_DEBITS) {
                assert_eq!(w.len(), CardLogExport::MAX_WIRE_LEN);
            }
            assert_eq!(CardLogExport::from_wire(&w, ()).unwrap(), e);
            let json: CardLogExport = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
            assert_eq!(json.to_wire(), w);
        }
    }

    #[test]
    fn malformed_exports_name_what_is_wrong() {
        let w = export(2, 2).to_wire();
        let body_len = w.len() - 16;
        // Counts above what a card keeps, an unknown entry kind, a bad exception flag, trailing bytes.
        let entry_count = 8 + 16 + 40 + 12;
        let mut too_many = w.clone();
        too_many[entry_count] = MAX_EXPORT_ENTRIES as u8 + 1;
        assert_eq!(
            CardLogExport::from_wire(&too_many, ()),
            Err(DecodeError::Invalid { field: "entry count", why: "more entries than a card keeps (32)" })
        );
        let mut kind = w.clone();
        kind[entry_count + 1 + 4] = 0x99;
        assert_eq!(
            CardLogExport::from_wire(&kind, ()),
            Err(DecodeError::Invalid { field: "entry kind", why: "unknown code" })
        );
        let open_count = entry_count + 1 + 2 * 25;
        let mut open = w.clone();
        open[open_count] = MAX_EXPORT_OPEN_DEBITS as u8 + 1;
        assert!(matches!(
            CardLogExport::from_wire(&open, ()),
            Err(DecodeError::Invalid { field: "open debit count", .. })
        ));
        let mut flag = w.clone();
        flag[open_count + 1 + 20] = 2;
        assert!(matches!(
            CardLogExport::from_wire(&flag, ()),
            Err(DecodeError::Invalid { field: "open debit exception", .. })
        ));
        let mut long = w.clone();
        long.push(0);
        assert_eq!(CardLogExport::from_wire(&long, ()), Err(DecodeError::Trailing(1)));
        assert!(matches!(
            CardLogExport::from_wire(&w[..body_len], ()),
            Err(DecodeError::Truncated { field: "mac", .. })
        ));
    }
}
