//! Reconciliation (`keyroll reconcile`, DESIGN.md §9 and §10 point 6; issue 13 item 5): account for
//! every unit of issued value from the cards' MAC'd log exports and the terminals' settlement journals.
//!
//! Every transfer is identified on both cards by `(payee serial, payee receipt sequence number)`.
//! - A debit with a credit at the payee moved value (confirmed or not: the payer's open debit then only
//!   awaits CONFIRM, no value is in flight).
//! - An open debit with no credit is **in flight**; its resolver is the two cards (the payee can still
//!   credit or abort the receipt: it is in its window), or the issuer (the receipt left the payee's window
//!   or the debit is in the payer's exception list), or the absent payee (not in this reconciliation).
//! - A credit with no matching debit is **minting** (a card holding its generation's transfer key made
//!   the token): flagged, as is a credit naming a payer outside the reconciliation.
//! - `unaccounted = issued − balances − in_flight`: 0 when every unit is accounted for; negative when
//!   value was created, positive when value vanished.
//! - Each journal line must chain ([`crate::protocol::ledger::verify_journal`]) and agree with the
//!   cards' logs (a settled line needs the debit and the credit it names), which also catches an edited
//!   last line.

use crate::authority::reconciliations::{DebitState, ReconciledDebit};
use crate::crypto::{Secret16, mac};
use crate::domain::{Amount, CardSerial, Total};
use crate::protocol::ledger::{
    CARD_LOG_FORMAT, CardLogExport, EntryKind, JournalError, JournalLine, JournalOutcome, verify_journal,
};
use crate::protocol::policy::{Resolution, ResolutionOutcome};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// Who can still resolve value in flight.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", tag = "by")]
pub enum Resolver {
    /// Settling the two cards with each other (any amount, even 0): the payee credits or aborts the
    /// receipt, the payer confirms or refunds.
    Cards { payer: CardSerial, payee: CardSerial },
    /// The payee is not among the cards reconciled: bring it (or its export).
    AbsentPayee { payee: CardSerial },
    /// No card can prove the receipt either way any more: an issuer-signed resolution.
    Issuer,
}

/// One transfer in flight.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct InFlight {
    pub payer: CardSerial,
    /// The payer's sequence number of the debit (0 from an export made before it was exported).
    pub payer_sequence: u32,
    pub payee: CardSerial,
    pub receipt: u32,
    pub amount: Amount,
    pub resolver: Resolver,
}

/// Something reconciliation could not account for.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", tag = "flag")]
pub enum Flag {
    /// A credit with no matching debit on the named payer (or the payer is not a card reconciled).
    Minted { payee: CardSerial, payer: CardSerial, receipt: u32, amount: Amount, why: String },
    /// A card's export failed its MAC or its format: its log was edited or is not this card's.
    BadExport { serial: CardSerial, why: String },
    /// A card's balance disagrees with its issued value and its own totals.
    Inconsistent { serial: CardSerial, why: String },
    /// Two exports for one serial.
    Duplicate { serial: CardSerial },
    /// A journal that does not verify, or a line that disagrees with the cards.
    Journal { journal: String, line: usize, why: String },
}

/// The verdict (`reconcile --json`: `issued`, `balances`, `in_flight`, `unaccounted`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Reconciliation {
    pub cards: usize,
    pub issued: Total,
    pub balances: Total,
    pub in_flight: Total,
    pub unaccounted: i128,
    pub transfers_in_flight: Vec<InFlight>,
    pub flags: Vec<Flag>,
    /// Resolutions the issuer can sign safely (`keyroll policy resolve`, each field as named here):
    /// `credited` for an open debit in the payer's exception list that the payee's log shows credited;
    /// `refund` for an uncredited debit whose receipt no card can ever credit: it left the payee's window
    /// (when the payee's retained log holds every credit it made: its credit total equals the credits
    /// in its log), or the payee's log shows it closed for good (an `abort` entry: it adopted a void or
    /// refund naming it); `void` for an uncredited debit whose receipt is still open in the payee's
    /// window (the payee closes it on adopting; the pair's own recovery still refunds the payer, and
    /// once the payee's next export shows it closed, `refund` is suggested). Anything else in flight
    /// with the issuer as resolver needs the issuer's own judgement (a payee that never returns may
    /// still hold the token's receipt open).
    pub issuer_resolutions: Vec<Resolution>,
    /// Every open debit of the cards read (in flight or credited, awaiting CONFIRM), with what the
    /// payee's log proves about its receipt: what the back office records, and what `policy resolve`
    /// is checked against (`authority::policy`). Not in the JSON (`transfers_in_flight` shows them).
    #[serde(skip)]
    pub open_debits: Vec<ReconciledDebit>,
}

impl Reconciliation {
    /// Every unit accounted for and nothing flagged (`reconcile` exits 0).
    pub fn accounted(&self) -> bool {
        self.unaccounted == 0 && self.flags.is_empty()
    }
}

/// A journal as read from a file: its name for messages and its text.
pub struct JournalText<'a> {
    pub name: String,
    pub text: &'a str,
}

/// A card's log key as the back office derives it: from the issuer's log master and the serial
/// (`crypto::mac::card_log_key`), the key the line sent the card at personalisation.
pub fn log_key(log_master: &Secret16, serial: &CardSerial) -> Secret16 {
    mac::card_log_key(log_master, serial)
}

/// Check an export's MAC under the card's log key.
pub fn check_export(e: &CardLogExport, key: &Secret16) -> Result<(), String> {
    if e.format != CARD_LOG_FORMAT {
        return Err(format!("format {:?} is not {CARD_LOG_FORMAT:?}", e.format));
    }
    mac::verify(key, &[&e.mac_input()], &e.mac).map_err(|_| "MAC does not verify: the log was edited".to_string())
}

/// Reconcile exports (each checked with [`check_export`] under `key_of(serial)`) and journals.
pub fn reconcile(
    exports: &[CardLogExport],
    journals: &[JournalText<'_>],
    key_of: &dyn Fn(&CardSerial) -> Secret16,
) -> Reconciliation {
    let mut flags = Vec::new();
    let mut cards: HashMap<CardSerial, &CardLogExport> = HashMap::new();
    for e in exports {
        if let Err(why) = check_export(e, &key_of(&e.serial)) {
            flags.push(Flag::BadExport { serial: e.serial, why });
            continue;
        }
        if cards.insert(e.serial, e).is_some() {
            flags.push(Flag::Duplicate { serial: e.serial });
        }
    }
    let mut serials: Vec<_> = cards.keys().copied().collect();
    serials.sort();
    // (payee, receipt) → (payer, amount) for debits, credits, refunds, aborts.
    let mut debits: HashMap<(CardSerial, u32), (CardSerial, u64)> = HashMap::new();
    let mut credits: HashMap<(CardSerial, u32), (CardSerial, u64)> = HashMap::new();
    let mut refunds: HashSet<(CardSerial, u32)> = HashSet::new();
    // (payee, receipt) → (payer, amount) of receipts a payee closed for good on an issuer resolution.
    let mut closed: HashMap<(CardSerial, u32), (CardSerial, u64)> = HashMap::new();
    let (mut issued, mut balances) = (Total(0), Total(0));
    for s in &serials {
        let e = cards[s];
        issued += e.issued;
        balances += e.balance;
        let t = e.totals;
        let expect = e.issued.0 as i128 - t.debited as i128 + t.credited as i128 + t.refunded as i128;
        if expect != e.balance.0 as i128 {
            flags.push(Flag::Inconsistent {
                serial: *s,
                why: format!("balance {} but issued − debited + credited + refunded = {expect}", e.balance),
            });
        }
        for x in &e.entries {
            match x.kind {
                EntryKind::Debit => {
                    debits.insert((x.counterpart, x.receipt), (*s, x.amount.0));
                }
                EntryKind::Credit => {
                    credits.insert((*s, x.receipt), (x.counterpart, x.amount.0));
                }
                EntryKind::Refund | EntryKind::Resolved => {
                    refunds.insert((x.counterpart, x.receipt));
                }
                EntryKind::Abort => {
                    closed.insert((*s, x.receipt), (x.counterpart, x.amount.0));
                }
                EntryKind::Exception | EntryKind::KeyRoll | EntryKind::Closed => {}
            }
        }
    }
    // Minting: every credit needs the debit it names.
    for s in &serials {
        for x in cards[s].entries.iter().filter(|x| x.kind == EntryKind::Credit) {
            let why = match cards.get(&x.counterpart) {
                None => Some(format!("payer {} is not among the cards reconciled", x.counterpart)),
                Some(p) => match debits.get(&(*s, x.receipt)) {
                    Some((payer, amount)) if *payer == x.counterpart && *amount == x.amount.0 => None,
                    Some((_, amount)) => {
                        Some(format!("the payer's debit for this receipt is {amount}, not {}", x.amount))
                    }
                    // A payer whose bounded log dropped entries may have held the debit: the totals
                    // (unaccounted) still catch value created.
                    None if p.dropped > 0 => None,
                    None => Some("the payer's log has no debit for this receipt".to_string()),
                },
            };
            if let Some(why) = why {
                flags.push(Flag::Minted { payee: *s, payer: x.counterpart, receipt: x.receipt, amount: x.amount, why });
            }
        }
    }
    // In flight: open debits the payee has not credited.
    let mut transfers_in_flight = Vec::new();
    let mut issuer_resolutions = Vec::new();
    let mut open_debits = Vec::new();
    // Whether a payee's retained log holds every credit it ever made (then "no credit in the log" means
    // "never credited").
    let every_credit_logged = |q: &CardLogExport| {
        let logged: u128 = q.entries.iter().filter(|x| x.kind == EntryKind::Credit).map(|x| x.amount.0 as u128).sum();
        logged == q.totals.credited as u128
    };
    for s in &serials {
        for d in &cards[s].open_debits {
            let resolution = |outcome| Resolution {
                payer: *s,
                payer_sequence: d.payer_sequence,
                payee: d.payee,
                receipt: d.receipt,
                amount: d.amount,
                outcome,
            };
            let credit = credits.get(&(d.payee, d.receipt)).filter(|(payer, _)| payer == s);
            let payee = cards.get(&d.payee);
            let state = match (credit, payee) {
                (Some((_, amount)), _) if *amount == d.amount.0 => DebitState::Credited,
                (Some(_), _) | (None, None) => DebitState::Unproven,
                (None, Some(_)) if closed.get(&(d.payee, d.receipt)) == Some(&(*s, d.amount.0)) => DebitState::Aborted,
                (None, Some(q)) if d.receipt >= q.receipt_floor => DebitState::Open,
                (None, Some(q)) if every_credit_logged(q) => DebitState::NeverCredited,
                (None, Some(_)) => DebitState::Unproven,
            };
            open_debits.push(ReconciledDebit {
                payer: *s,
                payer_sequence: d.payer_sequence,
                payee: d.payee,
                receipt: d.receipt,
                amount: d.amount,
                state,
            });
            if credit.is_some() {
                // Credited: awaits only CONFIRM; from the exception list the issuer may close it.
                if d.exception && d.payer_sequence != 0 {
                    issuer_resolutions.push(resolution(ResolutionOutcome::Credited));
                }
                continue;
            }
            if let Some(q) = cards.get(&d.payee)
                && d.payer_sequence != 0
            {
                if d.receipt < q.receipt_floor && every_credit_logged(q) {
                    // Left the window with no credit: no card can ever credit it.
                    issuer_resolutions.push(resolution(ResolutionOutcome::Refund));
                } else if closed.get(&(d.payee, d.receipt)) == Some(&(*s, d.amount.0)) {
                    // The payee closed the receipt for good (it adopted a void or refund naming it):
                    // a refund is safe whichever card adopts it first.
                    issuer_resolutions.push(resolution(ResolutionOutcome::Refund));
                } else if d.receipt >= q.receipt_floor && d.receipt < q.receipt_next {
                    // Still open in the payee's window: a refund now could reach the payer before the
                    // payee and let a held token be credited too. First close it at the payee.
                    issuer_resolutions.push(resolution(ResolutionOutcome::Void));
                }
            }
            let resolver = match cards.get(&d.payee) {
                _ if d.exception => Resolver::Issuer,
                None => Resolver::AbsentPayee { payee: d.payee },
                Some(q) if d.receipt < q.receipt_floor => Resolver::Issuer,
                Some(_) => Resolver::Cards { payer: *s, payee: d.payee },
            };
            transfers_in_flight.push(InFlight {
                payer: *s,
                payer_sequence: d.payer_sequence,
                payee: d.payee,
                receipt: d.receipt,
                amount: d.amount,
                resolver,
            });
        }
    }
    let in_flight: Total = transfers_in_flight.iter().map(|t| t.amount).sum();
    for j in journals {
        check_journal(j, &cards, &debits, &credits, &refunds, &mut flags);
    }
    Reconciliation {
        cards: serials.len(),
        issued,
        balances,
        in_flight,
        // Each sum is below 2^64 times the number of cards, far inside i128.
        unaccounted: issued.0 as i128 - balances.0 as i128 - in_flight.0 as i128,
        transfers_in_flight,
        flags,
        issuer_resolutions,
        open_debits,
    }
}

type Book = HashMap<(CardSerial, u32), (CardSerial, u64)>;

fn check_journal(
    j: &JournalText<'_>,
    cards: &HashMap<CardSerial, &CardLogExport>,
    debits: &Book,
    credits: &Book,
    refunds: &HashSet<(CardSerial, u32)>,
    flags: &mut Vec<Flag>,
) {
    let lines: Vec<JournalLine> = match verify_journal(j.text) {
        Ok((lines, _)) => lines,
        Err(e) => {
            let line = match &e {
                JournalError::Malformed { line, .. }
                | JournalError::Index { line, .. }
                | JournalError::Chain { line } => *line,
                // verify_journal never returns LastLine (an appender's error); count it as the end.
                JournalError::Torn | JournalError::LastLine { .. } => j.text.lines().count(),
            };
            flags.push(Flag::Journal { journal: j.name.clone(), line, why: e.to_string() });
            return;
        }
    };
    for (i, l) in lines.iter().enumerate() {
        let r = &l.record;
        let mut bad = |why: String| flags.push(Flag::Journal { journal: j.name.clone(), line: i + 1, why });
        let Some(receipt) = r.receipt else {
            if matches!(r.outcome, JournalOutcome::Settled | JournalOutcome::Refunded | JournalOutcome::Torn) {
                bad("a settlement that moved value names no receipt".into());
            }
            continue;
        };
        let key = (r.payee, receipt);
        // Only what the cards' bounded logs still hold can be checked.
        let holds = |serial: &CardSerial| cards.get(serial).is_some_and(|c| c.dropped == 0);
        let names = |b: &Book| b.get(&key).is_some_and(|(payer, amount)| *payer == r.payer && *amount == r.amount.0);
        match r.outcome {
            JournalOutcome::Settled => {
                if holds(&r.payer) && !names(debits) {
                    bad(format!("the payer {} has no debit of {} for receipt {receipt}", r.payer, r.amount));
                }
                if holds(&r.payee) && !names(credits) {
                    bad(format!("the payee {} has no credit of {} for receipt {receipt}", r.payee, r.amount));
                }
            }
            JournalOutcome::Refunded => {
                if holds(&r.payer) && !refunds.contains(&key) {
                    bad(format!("the payer {} has no refund for receipt {receipt}", r.payer));
                }
            }
            JournalOutcome::Torn => {
                if holds(&r.payer) && !names(debits) {
                    bad(format!("the payer {} has no debit of {} for receipt {receipt}", r.payer, r.amount));
                }
            }
            JournalOutcome::NothingMoved => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ledger::{ExportEntry, OpenDebit, Totals};

    fn master() -> Secret16 {
        Secret16::new([5; 16])
    }

    fn key(serial: &CardSerial) -> Secret16 {
        log_key(&master(), serial)
    }

    fn card(n: u64, issued: u64) -> CardLogExport {
        CardLogExport {
            format: CARD_LOG_FORMAT.into(),
            serial: CardSerial::from_u64(n),
            issued: Amount(issued),
            balance: Amount(issued),
            totals: Totals::default(),
            dropped: 0,
            entries: vec![],
            open_debits: vec![],
            receipt_floor: 1,
            receipt_next: 1,
            challenge: [0; 16],
            mac: [0; 16],
        }
    }

    fn seal(mut e: CardLogExport) -> CardLogExport {
        e.mac = mac::cmac(&key(&e.serial), &[&e.mac_input()]);
        e
    }

    fn entry(kind: EntryKind, counterpart: u64, amount: u64, receipt: u32) -> ExportEntry {
        ExportEntry {
            sequence: 1,
            kind,
            counterpart: CardSerial::from_u64(counterpart),
            amount: Amount(amount),
            receipt,
        }
    }

    /// Card 1 pays 30 to card 2 (receipt 1, credited), and 20 to card 2 (receipt 2, torn after debit).
    fn fleet() -> (CardLogExport, CardLogExport) {
        let mut a = card(1, 100);
        a.balance = Amount(50);
        a.totals.debited = 50;
        a.entries = vec![entry(EntryKind::Debit, 2, 30, 1), entry(EntryKind::Debit, 2, 20, 2)];
        a.open_debits = vec![OpenDebit {
            payee: CardSerial::from_u64(2),
            receipt: 2,
            amount: Amount(20),
            exception: false,
            payer_sequence: 2,
        }];
        let mut b = card(2, 0);
        b.balance = Amount(30);
        b.totals.credited = 30;
        b.entries = vec![entry(EntryKind::Credit, 1, 30, 1)];
        b.receipt_next = 3;
        (a, b)
    }

    #[test]
    fn a_torn_transfer_is_in_flight_with_the_two_cards_as_resolver() {
        let (a, b) = fleet();
        let r = reconcile(&[seal(a), seal(b)], &[], &key);
        assert_eq!((r.issued, r.balances, r.in_flight, r.unaccounted), (Total(100), Total(80), Total(20), 0));
        assert_eq!(r.transfers_in_flight.len(), 1);
        assert_eq!(
            r.transfers_in_flight[0].resolver,
            Resolver::Cards { payer: CardSerial::from_u64(1), payee: CardSerial::from_u64(2) }
        );
        assert!(r.accounted(), "{:?}", r.flags);
    }

    #[test]
    fn an_expired_receipt_needs_the_issuer_and_an_absent_payee_is_named() {
        let (a, mut b) = fleet();
        b.receipt_floor = 3;
        b.receipt_next = 5000;
        let r = reconcile(&[seal(a.clone()), seal(b)], &[], &key);
        assert_eq!(r.transfers_in_flight[0].resolver, Resolver::Issuer);
        let r = reconcile(&[seal(a)], &[], &key);
        assert_eq!(r.transfers_in_flight[0].resolver, Resolver::AbsentPayee { payee: CardSerial::from_u64(2) });
    }

    #[test]
    fn a_credit_without_a_debit_is_flagged_as_minting() {
        let (a, mut b) = fleet();
        b.entries.push(entry(EntryKind::Credit, 1, 40, 5));
        b.balance = Amount(70);
        b.totals.credited = 70;
        let r = reconcile(&[seal(a), seal(b)], &[], &key);
        assert_eq!(r.unaccounted, -40);
        assert!(matches!(r.flags.as_slice(), [Flag::Minted { receipt: 5, .. }]), "{:?}", r.flags);
        assert!(!r.accounted());
    }

    #[test]
    fn an_edited_export_fails_its_mac_and_an_inconsistent_one_is_flagged() {
        let (a, b) = fleet();
        let mut edited = seal(b.clone());
        edited.balance = Amount(1000);
        let r = reconcile(&[seal(a.clone()), edited], &[], &key);
        assert!(r.flags.iter().any(|f| matches!(f, Flag::BadExport { .. })));
        let mut wrong = b;
        wrong.balance = Amount(31);
        let r = reconcile(&[seal(a), seal(wrong)], &[], &key);
        assert!(r.flags.iter().any(|f| matches!(f, Flag::Inconsistent { .. })));
    }
}
