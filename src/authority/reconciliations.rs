//! The reconciliations `keyroll reconcile` made (issue 13 item 5; DESIGN.md §10 points 6 and 7).
//!
//! Each run is one row of `reconciliations` (schema 8), written in the same transaction as the signed
//! log entry `reconcile` that binds it ([`super::rows`], state scope): every custodian checks the table
//! at unlock and `audit log` replays it, so an edited result is tampering like an edited key. The row
//! keeps what the run found (issued, balances, in flight, unaccounted, the number of flags) and what it
//! read: a digest of the card log exports and the head of every settlement journal. `audit report`
//! shows the latest one; the next `reconcile` holds each journal to the newest head recorded for it
//! ([`journal_anchors`]), which is what makes a deleted last journal line detectable: the journal
//! itself cannot say it lost its tail, the database (outside the journal, signed) can.

use super::rows::{col, col_parsed, decode_all, decode_one};
use super::store::{Row, Store, params};
use super::{AuthorityError, Unlocked, now};
use crate::domain::{Amount, CardSerial, Total};
use crate::protocol::policy::{Resolution, ResolutionOutcome};
use serde::{Deserialize, Serialize};

/// A settlement journal as a reconciliation saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalHead {
    /// The journal's path (absolute when it resolved).
    pub name: String,
    /// Its number of lines.
    pub lines: u64,
    /// SHA-256 (hex) of its first line: the journal's identity (`None` for an empty journal).
    pub first: Option<String>,
    /// SHA-256 (hex) of its last line, the head the next line chains to (all zeros when empty).
    pub head: String,
}

/// What one `reconcile` run found and read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reconciled {
    pub cards: u64,
    pub issued: Total,
    pub balances: Total,
    pub in_flight: Total,
    /// `issued − balances − in_flight`: 0 when every unit is accounted for.
    pub unaccounted: i128,
    pub transfers_in_flight: u64,
    /// How many things the run flagged (minting, edited exports, journals…).
    pub flags: u64,
    /// SHA-256 (hex) over the card log exports it read (`docs/backoffice.md`).
    #[serde(serialize_with = "hex_digest")]
    pub cards_digest: [u8; 32],
    /// The head of each journal, as anchored for the next run.
    pub journals: Vec<JournalHead>,
}

/// What a reconciliation could prove about the payee's receipt of an open debit (column `state` of
/// `reconciliation_debits`; schema/0009_reconciliation_debits.sql).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DebitState {
    /// The payee's log shows the credit (same payer, same amount): only CONFIRM is missing.
    Credited,
    /// The receipt left the payee's window and its log holds every credit it made: never credited,
    /// and no card can credit it any more.
    NeverCredited,
    /// The payee's log shows the receipt aborted: it can never be credited.
    Aborted,
    /// In the payee's window, neither credited nor aborted: the two cards can still resolve it.
    Open,
    /// The payee was not among the cards read, or its log dropped credits: nothing is proved.
    Unproven,
}

impl DebitState {
    pub const ALL: [DebitState; 5] =
        [DebitState::Credited, DebitState::NeverCredited, DebitState::Aborted, DebitState::Open, DebitState::Unproven];

    /// The column's text.
    pub fn name(self) -> &'static str {
        match self {
            DebitState::Credited => "credited",
            DebitState::NeverCredited => "never-credited",
            DebitState::Aborted => "aborted",
            DebitState::Open => "open",
            DebitState::Unproven => "unproven",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Whether this state proves `outcome` safe: a refund only of a receipt that can never be credited,
    /// a closure only of a debit the payee credited, a void (the payee closes the receipt, the payer's
    /// debit stays open: it moves no value) of any receipt the payee did not credit.
    pub fn proves_safe(self, outcome: ResolutionOutcome) -> bool {
        match outcome {
            ResolutionOutcome::Refund => matches!(self, DebitState::NeverCredited | DebitState::Aborted),
            ResolutionOutcome::Credited => self == DebitState::Credited,
            ResolutionOutcome::Void => self != DebitState::Credited,
        }
    }
}

impl std::fmt::Display for DebitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One open debit as a reconciliation saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconciledDebit {
    pub payer: CardSerial,
    /// The payer's sequence number of the debit (0 from an export made before it was exported).
    pub payer_sequence: u32,
    pub payee: CardSerial,
    pub receipt: u32,
    pub amount: Amount,
    pub state: DebitState,
}

impl ReconciledDebit {
    /// Whether this is the debit `r` names, every field equal.
    pub fn is(&self, r: &Resolution) -> bool {
        (self.payer, self.payer_sequence, self.payee, self.receipt, self.amount)
            == (r.payer, r.payer_sequence, r.payee, r.receipt, r.amount)
    }

    /// Whether this is the same transfer (payer, payee, receipt) or the same debit of the payer (its
    /// sequence number) as `r`, whatever the other fields say.
    pub fn resembles(&self, r: &Resolution) -> bool {
        self.payer == r.payer
            && ((self.payee, self.receipt) == (r.payee, r.receipt)
                || (self.payer_sequence != 0 && self.payer_sequence == r.payer_sequence))
    }

    fn describe(&self) -> String {
        format!(
            "debit {} of card {} to {} receipt {} amount {}, {}",
            self.payer_sequence, self.payer, self.payee, self.receipt, self.amount, self.state
        )
    }
}

impl Reconciled {
    /// Every unit accounted for and nothing flagged.
    pub fn accounted(&self) -> bool {
        self.unaccounted == 0 && self.flags == 0
    }
}

/// A recorded reconciliation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReconciliationRecord {
    /// Row id (1 for the first reconciliation of the database).
    pub id: i64,
    /// When it was recorded, RFC 3339.
    pub at: String,
    #[serde(flatten)]
    pub result: Reconciled,
    /// Same as `result.accounted()`, for readers of the JSON.
    pub accounted: bool,
}

const SELECT: &str = "SELECT id, at, cards, issued, balances, in_flight, unaccounted, transfers_in_flight, flags,
    cards_digest, journals FROM reconciliations";

fn decimal<T: std::str::FromStr>(r: &Row, i: usize) -> Result<T, String> {
    let s: String = col(r, i)?;
    // Canonical decimal only: no sign on unsigned sums, no leading zeros, no blanks.
    let canonical = !s.is_empty() && !s.starts_with('+') && (s == "0" || !s.trim_start_matches('-').starts_with('0'));
    match s.parse::<T>() {
        Ok(v) if canonical => Ok(v),
        _ => Err(format!("column {} holds {s:?}, not a decimal number", r.column_name(i))),
    }
}

fn count(r: &Row, i: usize) -> Result<u64, String> {
    let v: i64 = col(r, i)?;
    u64::try_from(v).map_err(|_| format!("column {} is negative ({v})", r.column_name(i)))
}

fn row(r: &Row) -> Result<ReconciliationRecord, String> {
    let digest: Vec<u8> = col(r, 9)?;
    let journals: String = col(r, 10)?;
    let result = Reconciled {
        cards: count(r, 2)?,
        issued: Total(decimal(r, 3)?),
        balances: Total(decimal(r, 4)?),
        in_flight: Total(decimal(r, 5)?),
        unaccounted: decimal(r, 6)?,
        transfers_in_flight: count(r, 7)?,
        flags: count(r, 8)?,
        cards_digest: digest.try_into().map_err(|_| "cards_digest is not 32 bytes".to_string())?,
        journals: serde_json::from_str(&journals).map_err(|e| format!("journals does not decode: {e}"))?,
    };
    Ok(ReconciliationRecord { id: col(r, 0)?, at: col(r, 1)?, accounted: result.accounted(), result })
}

/// The newest reconciliation, if any.
pub fn latest(conn: &Store) -> Result<Option<ReconciliationRecord>, AuthorityError> {
    decode_one(conn, "reconciliations", &format!("{SELECT} ORDER BY id DESC LIMIT 1"), params![], row)
}

/// Every reconciliation, oldest first.
pub fn list(conn: &Store) -> Result<Vec<ReconciliationRecord>, AuthorityError> {
    decode_all(conn, "reconciliations", &format!("{SELECT} ORDER BY id"), params![], row)
}

/// The newest head recorded for each settlement journal, with the reconciliation that recorded it: a
/// journal is known by its first line's hash, or (an emptied or replaced journal) by its name.
pub fn journal_anchors(conn: &Store) -> Result<Vec<(JournalHead, ReconciliationRecord)>, AuthorityError> {
    let mut out: Vec<(JournalHead, ReconciliationRecord)> = Vec::new();
    for rec in list(conn)?.into_iter().rev() {
        for j in &rec.result.journals {
            let known = out.iter().any(|(a, _)| a.name == j.name || (a.first.is_some() && a.first == j.first));
            if !known {
                out.push((j.clone(), rec.clone()));
            }
        }
    }
    Ok(out)
}

const SELECT_DEBITS: &str =
    "SELECT id, reconciliation, payer, payer_sequence, payee, receipt, amount, state FROM reconciliation_debits";

fn debit_row(r: &Row) -> Result<(i64, ReconciledDebit), String> {
    let serial = |i| col_parsed(r, i, "card serial", CardSerial::parse);
    let u32_col = |i| -> Result<u32, String> {
        let v: i64 = col(r, i)?;
        u32::try_from(v).map_err(|_| format!("column {} is out of range ({v})", r.column_name(i)))
    };
    Ok((
        col(r, 1)?,
        ReconciledDebit {
            payer: serial(2)?,
            payer_sequence: u32_col(3)?,
            payee: serial(4)?,
            receipt: u32_col(5)?,
            amount: Amount(decimal(r, 6)?),
            state: col_parsed(r, 7, "debit state", DebitState::parse)?,
        },
    ))
}

/// The open debits reconciliation `id` recorded.
pub fn debits_of(conn: &Store, id: i64) -> Result<Vec<ReconciledDebit>, AuthorityError> {
    let rows = decode_all(
        conn,
        "reconciliation_debits",
        &format!("{SELECT_DEBITS} WHERE reconciliation = ?1 ORDER BY id"),
        [id],
        debit_row,
    )?;
    Ok(rows.into_iter().map(|(_, d)| d).collect())
}

/// Every recorded debit that [`ReconciledDebit::resembles`] `r`, with the reconciliation that recorded
/// it, newest reconciliation first.
pub fn debits_resembling(conn: &Store, r: &Resolution) -> Result<Vec<(i64, ReconciledDebit)>, AuthorityError> {
    let rows = decode_all(
        conn,
        "reconciliation_debits",
        &format!(
            "{SELECT_DEBITS} WHERE payer = ?1 AND ((payee = ?2 AND receipt = ?3) OR payer_sequence = ?4)
             ORDER BY reconciliation DESC, id"
        ),
        params![r.payer.to_string(), r.payee.to_string(), r.receipt, r.payer_sequence],
        debit_row,
    )?;
    Ok(rows.into_iter().filter(|(_, d)| d.resembles(r)).collect())
}

/// What an issuer resolution is checked against (`policy resolve`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolveBasis {
    /// The newest recorded reconciliation must show the debit open and prove the outcome safe.
    Reconciliation,
    /// The issuer answers for it without that proof (a card lost for good), for the reason given,
    /// which the signed audit log keeps. A reconciliation that shows the opposite still refuses it.
    Override { reason: String },
}

/// Why the check refused a resolution (nothing was signed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveRefusal {
    #[error("no reconciliation is recorded, so nothing shows debit {payer_sequence} of card {payer} open")]
    NoReconciliation { payer: CardSerial, payer_sequence: u32 },
    #[error(
        "reconciliation {id} (the newest, {at}) shows no open debit {payer_sequence} of card {payer} to {payee} receipt {receipt}{}",
        match older { Some(o) => format!(" (reconciliation {o} did: it was confirmed, refunded or resolved since, or the newest did not read the payer)"), None => String::new() }
    )]
    NotShown {
        id: i64,
        at: String,
        payer: CardSerial,
        payer_sequence: u32,
        payee: CardSerial,
        receipt: u32,
        older: Option<i64>,
    },
    #[error("reconciliation {id} shows {shown}: not the debit named")]
    FieldsDiffer { id: i64, shown: String },
    #[error(
        "reconciliation {id} shows the payee {payee} credited receipt {receipt}: a refund would create {amount} of value"
    )]
    WouldCreateValue { id: i64, payee: CardSerial, receipt: u32, amount: Amount },
    #[error(
        "reconciliation {id} shows the payee {payee} never credited receipt {receipt} ({state}): closing the debit as credited would destroy {amount} of value"
    )]
    WouldDestroyValue { id: i64, payee: CardSerial, receipt: u32, amount: Amount, state: DebitState },
    #[error("reconciliation {id} shows the payee {payee} credited receipt {receipt}: there is nothing to void")]
    NothingToVoid { id: i64, payee: CardSerial, receipt: u32 },
    #[error(
        "reconciliation {id} shows receipt {receipt} still open at the payee {payee}: it can still be credited, so neither a refund nor a closure is safe yet"
    )]
    StillOpen { id: i64, payer: CardSerial, payee: CardSerial, receipt: u32 },
    #[error(
        "reconciliation {id} cannot prove what the payee {payee} did with receipt {receipt}: its log was not read, or it dropped credits"
    )]
    Unproven { id: i64, payee: CardSerial, receipt: u32 },
    #[error("the reason for resolving without a reconciliation is empty or not printable text (1 to 500 characters)")]
    BadReason,
}

/// What a resolution was checked against, as `policy resolve` reports and logs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResolveCheck {
    /// The reconciliation consulted (the newest), if any was recorded.
    pub reconciliation: Option<i64>,
    /// What it showed about the debit.
    pub state: Option<DebitState>,
    /// The issuer's reason when it resolved without the reconciliation's proof.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<String>,
}

/// Judge resolution `r` against the newest reconciliation (`newest`: its record and the debits it
/// recorded) and the older recorded debits resembling `r` (`older`, newest first). Pure.
///
/// With [`ResolveBasis::Reconciliation`] the newest reconciliation must show exactly this debit open,
/// in a state that proves the outcome safe ([`DebitState::proves_safe`]): a refund only of a receipt that
/// can never be credited, a closure only of a debit the payee credited. An override skips the need for
/// proof, never a proof of the opposite (a refund of a debit shown credited creates value; a closure
/// of one shown never credited destroys it).
pub fn judge_resolution(
    r: &Resolution,
    basis: &ResolveBasis,
    newest: Option<(&ReconciliationRecord, &[ReconciledDebit])>,
    older: &[(i64, ReconciledDebit)],
) -> Result<ResolveCheck, ResolveRefusal> {
    let override_reason = match basis {
        ResolveBasis::Reconciliation => None,
        ResolveBasis::Override { reason } => {
            let t = reason.trim();
            if t.is_empty() || t.chars().count() > 500 || t.chars().any(char::is_control) {
                return Err(ResolveRefusal::BadReason);
            }
            Some(t.to_string())
        }
    };
    let Some((rec, debits)) = newest else {
        return match override_reason {
            Some(_) => Ok(ResolveCheck { reconciliation: None, state: None, override_reason }),
            None => Err(ResolveRefusal::NoReconciliation { payer: r.payer, payer_sequence: r.payer_sequence }),
        };
    };
    let shown = debits.iter().find(|d| d.is(r));
    let contradiction = |d: &ReconciledDebit| match (r.outcome, d.state) {
        (ResolutionOutcome::Refund, DebitState::Credited) => {
            Some(ResolveRefusal::WouldCreateValue { id: rec.id, payee: d.payee, receipt: d.receipt, amount: d.amount })
        }
        (ResolutionOutcome::Void, DebitState::Credited) => {
            Some(ResolveRefusal::NothingToVoid { id: rec.id, payee: d.payee, receipt: d.receipt })
        }
        (ResolutionOutcome::Credited, DebitState::NeverCredited | DebitState::Aborted) => {
            Some(ResolveRefusal::WouldDestroyValue {
                id: rec.id,
                payee: d.payee,
                receipt: d.receipt,
                amount: d.amount,
                state: d.state,
            })
        }
        _ => None,
    };
    if let Some(d) = shown
        && let Some(refusal) = contradiction(d)
    {
        return Err(refusal);
    }
    if override_reason.is_some() {
        return Ok(ResolveCheck { reconciliation: Some(rec.id), state: shown.map(|d| d.state), override_reason });
    }
    let Some(d) = shown else {
        if let Some(other) = debits.iter().find(|d| d.resembles(r)) {
            return Err(ResolveRefusal::FieldsDiffer { id: rec.id, shown: other.describe() });
        }
        return Err(ResolveRefusal::NotShown {
            id: rec.id,
            at: rec.at.clone(),
            payer: r.payer,
            payer_sequence: r.payer_sequence,
            payee: r.payee,
            receipt: r.receipt,
            older: older.iter().find(|(id, d)| *id < rec.id && d.is(r)).map(|(id, _)| *id),
        });
    };
    if d.state.proves_safe(r.outcome) {
        return Ok(ResolveCheck { reconciliation: Some(rec.id), state: Some(d.state), override_reason: None });
    }
    Err(match d.state {
        DebitState::Open => {
            ResolveRefusal::StillOpen { id: rec.id, payer: d.payer, payee: d.payee, receipt: d.receipt }
        }
        // Contradictions were refused above; what is left proves nothing.
        _ => ResolveRefusal::Unproven { id: rec.id, payee: d.payee, receipt: d.receipt },
    })
}

fn hex_digest<S: serde::Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(d))
}

/// Text of a sum for its column.
fn text(v: impl std::fmt::Display) -> String {
    v.to_string()
}

impl Unlocked<'_> {
    /// Record a reconciliation and log it (action `reconcile`, binding the row).
    pub fn record_reconciliation(
        &self,
        r: &Reconciled,
        debits: &[ReconciledDebit],
    ) -> Result<ReconciliationRecord, AuthorityError> {
        let journals = serde_json::to_string(&r.journals).map_err(|e| AuthorityError::BadRow {
            table: "reconciliations",
            row: 0,
            why: format!("journals do not encode: {e}"),
        })?;
        // SQLite's (and PostgreSQL's BIGINT) integers are signed 64-bit; counts past that are not real.
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.write(|c| {
            let id: i64 = c.query_row(
                "INSERT INTO reconciliations (at, cards, issued, balances, in_flight, unaccounted,
                     transfers_in_flight, flags, cards_digest, journals)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
                params![
                    now(),
                    int(r.cards),
                    text(r.issued),
                    text(r.balances),
                    text(r.in_flight),
                    text(r.unaccounted),
                    int(r.transfers_in_flight),
                    int(r.flags),
                    r.cards_digest.to_vec(),
                    journals
                ],
                |row| row.get(0),
            )?;
            let mut insert = c.prepare_cached(
                "INSERT INTO reconciliation_debits (reconciliation, payer, payer_sequence, payee, receipt, amount, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for d in debits {
                insert.execute(params![
                    id,
                    d.payer.to_string(),
                    d.payer_sequence,
                    d.payee.to_string(),
                    d.receipt,
                    text(d.amount),
                    d.state.name()
                ])?;
            }
            self.log(
                c,
                "reconcile",
                serde_json::json!({
                    "reconciliation": id,
                    "cards": r.cards,
                    "issued": text(r.issued),
                    "balances": text(r.balances),
                    "in_flight": text(r.in_flight),
                    "unaccounted": text(r.unaccounted),
                    "flags": r.flags,
                    "accounted": r.accounted(),
                    "cards_digest": hex::encode(r.cards_digest),
                    "open_debits": debits.len(),
                    "journals": r.journals.iter().map(|j| serde_json::json!({ "name": j.name, "lines": j.lines, "head": j.head })).collect::<Vec<_>>(),
                }),
            )?;
            decode_one(c, "reconciliations", &format!("{SELECT} WHERE id = ?1"), [id], row)?
                .ok_or(AuthorityError::BadRow { table: "reconciliations", row: id, why: "vanished after insert".into() })
        })
    }

    /// [`journal_anchors`] through a custodian's connection (the table was checked at unlock).
    pub fn journal_anchors(&self) -> Result<Vec<(JournalHead, ReconciliationRecord)>, AuthorityError> {
        journal_anchors(self.conn())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Store {
        let c = Store::sqlite(rusqlite::Connection::open_in_memory().unwrap(), false).unwrap();
        super::super::db::migrate(&c).unwrap();
        c
    }

    fn insert(c: &Store, issued: &str, journals: &str) {
        c.execute(
            "INSERT INTO reconciliations (at, cards, issued, balances, in_flight, unaccounted, transfers_in_flight,
             flags, cards_digest, journals) VALUES ('t', 2, ?1, '10', '0', '0', 0, 0, ?2, ?3)",
            params![issued, vec![7u8; 32], journals],
        )
        .unwrap();
    }

    fn head(name: &str, lines: u64, first: Option<&str>, head: &str) -> String {
        serde_json::to_string(&JournalHead {
            name: name.into(),
            lines,
            first: first.map(String::from),
            head: head.into(),
        })
        .unwrap()
    }

    #[test]
    fn a_row_that_does_not_decode_is_an_error_naming_it_never_a_default() {
        let c = db();
        insert(&c, "10", "[]");
        let r = latest(&c).unwrap().unwrap();
        assert_eq!((r.id, r.result.issued, r.accounted), (1, Total(10), true));
        for bad in ["-1", "010", "ten", "", "+5", " 5"] {
            c.execute("UPDATE reconciliations SET issued = ?1", params![bad]).unwrap();
            assert!(
                matches!(latest(&c), Err(AuthorityError::BadRow { table: "reconciliations", row: 1, .. })),
                "{bad:?}"
            );
        }
        c.execute("UPDATE reconciliations SET issued = '10', journals = '[{\"x\":1}]'", params![]).unwrap();
        assert!(matches!(latest(&c), Err(AuthorityError::BadRow { .. })));
        c.execute("UPDATE reconciliations SET journals = '[]', cards_digest = x'00'", params![]).unwrap();
        assert!(matches!(latest(&c), Err(AuthorityError::BadRow { .. })));
    }

    fn res(outcome: ResolutionOutcome) -> Resolution {
        Resolution {
            payer: CardSerial::from_u64(1),
            payer_sequence: 7,
            payee: CardSerial::from_u64(2),
            receipt: 3,
            amount: Amount(40),
            outcome,
        }
    }

    fn seen(state: DebitState) -> ReconciledDebit {
        ReconciledDebit {
            payer: CardSerial::from_u64(1),
            payer_sequence: 7,
            payee: CardSerial::from_u64(2),
            receipt: 3,
            amount: Amount(40),
            state,
        }
    }

    fn rec(id: i64) -> ReconciliationRecord {
        let result = Reconciled {
            cards: 2,
            issued: Total(0),
            balances: Total(0),
            in_flight: Total(0),
            unaccounted: 0,
            transfers_in_flight: 0,
            flags: 0,
            cards_digest: [0; 32],
            journals: vec![],
        };
        ReconciliationRecord { id, at: "t".into(), result, accounted: true }
    }

    #[test]
    fn only_what_the_newest_reconciliation_proves_is_resolved() {
        use DebitState::*;
        use ResolutionOutcome::{Credited as Close, Refund, Void};
        let r5 = rec(5);
        let judge = |o, states: &[DebitState], basis: &ResolveBasis| {
            let debits: Vec<ReconciledDebit> = states.iter().map(|s| seen(*s)).collect();
            judge_resolution(&res(o), basis, Some((&r5, &debits[..])), &[])
        };
        let latest = ResolveBasis::Reconciliation;
        // Every (outcome, state) pair: only the proved ones pass.
        for state in DebitState::ALL {
            for o in [Refund, Close, Void] {
                let got = judge(o, &[state], &latest);
                let safe = matches!((o, state), (Refund, NeverCredited | Aborted) | (Close, Credited))
                    || (o == Void && state != Credited);
                assert_eq!(got.is_ok(), safe, "{o:?} of a debit {state}: {got:?}");
                if safe {
                    assert_eq!(
                        got.unwrap(),
                        ResolveCheck { reconciliation: Some(5), state: Some(state), override_reason: None }
                    );
                }
            }
        }
        assert!(matches!(judge(Refund, &[Credited], &latest), Err(ResolveRefusal::WouldCreateValue { id: 5, .. })));
        assert!(matches!(judge(Close, &[Aborted], &latest), Err(ResolveRefusal::WouldDestroyValue { .. })));
        assert!(matches!(judge(Void, &[Credited], &latest), Err(ResolveRefusal::NothingToVoid { .. })));
        assert!(matches!(judge(Refund, &[Open], &latest), Err(ResolveRefusal::StillOpen { .. })));
        assert!(matches!(judge(Refund, &[Unproven], &latest), Err(ResolveRefusal::Unproven { .. })));
        // Not shown: stale (an older reconciliation showed it) or never seen; other fields: named.
        let none = judge(Refund, &[], &latest);
        assert!(matches!(none, Err(ResolveRefusal::NotShown { id: 5, older: None, .. })), "{none:?}");
        let older = [(3, seen(NeverCredited))];
        let got = judge_resolution(&res(Refund), &latest, Some((&r5, &[])), &older);
        assert!(matches!(got, Err(ResolveRefusal::NotShown { older: Some(3), .. })), "{got:?}");
        let mut other = seen(NeverCredited);
        other.amount = Amount(41);
        let got = judge_resolution(&res(Refund), &latest, Some((&r5, std::slice::from_ref(&other))), &[]);
        assert!(matches!(got, Err(ResolveRefusal::FieldsDiffer { id: 5, .. })), "{got:?}");
        // No reconciliation at all.
        assert!(matches!(
            judge_resolution(&res(Refund), &latest, None, &[]),
            Err(ResolveRefusal::NoReconciliation { .. })
        ));
        // The override: no proof needed, never against a proof of the opposite, and a real reason.
        let lost = ResolveBasis::Override { reason: " payee card destroyed ".into() };
        for state in [Open, Unproven, NeverCredited] {
            let got = judge(Refund, &[state], &lost).unwrap();
            assert_eq!(got.override_reason.as_deref(), Some("payee card destroyed"));
        }
        assert!(judge(Refund, &[], &lost).is_ok());
        assert!(judge_resolution(&res(Refund), &lost, None, &[]).is_ok());
        assert!(matches!(judge(Refund, &[Credited], &lost), Err(ResolveRefusal::WouldCreateValue { .. })));
        assert!(matches!(judge(Close, &[NeverCredited], &lost), Err(ResolveRefusal::WouldDestroyValue { .. })));
        for bad in ["", "   ", "a\nb", &"x".repeat(501)] {
            let b = ResolveBasis::Override { reason: bad.into() };
            assert_eq!(judge(Refund, &[Open], &b), Err(ResolveRefusal::BadReason), "{bad:?}");
        }
    }

    #[test]
    fn recorded_debits_decode_or_name_their_row() {
        let c = db();
        insert(&c, "10", "[]");
        let add = |state: &str, amount: &str| {
            c.execute(
                "INSERT INTO reconciliation_debits (reconciliation, payer, payer_sequence, payee, receipt, amount, state)
                 VALUES (1, '4B52000000000001', 7, '4B52000000000002', 3, ?1, ?2)",
                params![amount, state],
            )
            .unwrap();
        };
        add("never-credited", "40");
        assert_eq!(
            debits_of(&c, 1).unwrap(),
            vec![seen(DebitState::NeverCredited)]
                .into_iter()
                .map(|mut d| {
                    d.payer = CardSerial::parse("4B52000000000001").unwrap();
                    d.payee = CardSerial::parse("4B52000000000002").unwrap();
                    d
                })
                .collect::<Vec<_>>()
        );
        c.execute("UPDATE reconciliation_debits SET amount = '040'", params![]).unwrap();
        assert!(matches!(debits_of(&c, 1), Err(AuthorityError::BadRow { table: "reconciliation_debits", .. })));
        c.execute("UPDATE reconciliation_debits SET amount = '40', payer = 'nope'", params![]).unwrap();
        assert!(matches!(debits_of(&c, 1), Err(AuthorityError::BadRow { .. })));
        // The schema refuses a state it does not know.
        assert!(
            c.execute("UPDATE reconciliation_debits SET payer = '4B52000000000001', state = 'maybe'", params![])
                .is_err()
        );
    }

    #[test]
    fn the_newest_head_of_each_journal_is_its_anchor() {
        let c = db();
        insert(&c, "10", &format!("[{},{}]", head("/a", 2, Some("f1"), "h2"), head("/b", 1, Some("g1"), "k1")));
        insert(&c, "10", &format!("[{}]", head("/a", 3, Some("f1"), "h3")));
        // The same journal (same first line) under another name: still journal a.
        insert(&c, "10", &format!("[{}]", head("/moved/a", 4, Some("f1"), "h4")));
        let a = journal_anchors(&c).unwrap();
        let got: Vec<(&str, u64, i64)> = a.iter().map(|(j, r)| (j.name.as_str(), j.lines, r.id)).collect();
        assert_eq!(got, vec![("/moved/a", 4, 3), ("/b", 1, 1)]);
    }
}
