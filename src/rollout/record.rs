//! `keyroll reconcile` as the back office runs it (issue 13 item 5): [`super::reconcile`] over the cards'
//! log exports and the settlement journals, each journal held to the newest head an earlier
//! reconciliation recorded for it (and to any `--expect-head` the operator brings), and the result
//! recorded in the issuer database, bound to the signed audit log
//! ([`crate::authority::reconciliations`]).
//!
//! Why the anchor: a journal is a hash chain, so an edited, reordered or deleted line *inside* it breaks
//! the chain; but a journal whose last line was deleted is still a valid, shorter chain. Only a head kept
//! outside the journal says it was longer: the head `settle --journal` prints, given back as
//! `--expect-head`, and the head each reconciliation records. A journal that no longer contains the line
//! its anchor names (fewer lines, or another line there) is flagged, and the anchor is carried forward
//! unchanged, so re-running `reconcile` does not make the loss go away.

use super::reconcile::{self, Flag, JournalText, Reconciliation};
use crate::authority::reconciliations::{JournalHead, Reconciled, ReconciliationRecord};
use crate::authority::{AuthorityError, Unlocked};
use crate::domain::CardSerial;
use crate::protocol::ledger::{self, CardLogExport, GENESIS};
use sha2::{Digest, Sha256};

/// A settlement journal to reconcile.
pub struct Journal {
    /// Its name, for anchors and messages: the absolute path when it resolves.
    pub name: String,
    pub text: String,
}

/// What `reconcile` found, and the row that records it.
pub struct Recorded {
    pub reconciliation: Reconciliation,
    pub record: ReconciliationRecord,
}

/// The digest of a set of card log exports: `SHA-256("keyroll reconcile cards v1" ‖ u64(n) ‖ { u32(len)
/// ‖ mac_input ‖ mac }*)`, exports sorted by serial, then by their bytes (so the order of the card files
/// does not matter).
pub fn cards_digest(exports: &[CardLogExport]) -> [u8; 32] {
    let mut items: Vec<(CardSerial, Vec<u8>)> = exports
        .iter()
        .map(|e| {
            let mut b = e.mac_input();
            b.extend_from_slice(&e.mac);
            (e.serial, b)
        })
        .collect();
    items.sort();
    let mut h = Sha256::new();
    h.update(b"keyroll reconcile cards v1");
    h.update((items.len() as u64).to_be_bytes());
    for (_, b) in &items {
        h.update((b.len() as u32).to_be_bytes());
        h.update(b);
    }
    h.finalize().into()
}

/// A journal's head as a reconciliation records it; `None` when the journal does not verify (its
/// chain is broken or its last line torn: `reconcile` flags that itself).
pub fn journal_head(name: &str, text: &str) -> Option<JournalHead> {
    let (lines, head) = ledger::verify_journal(text).ok()?;
    Some(JournalHead {
        name: name.to_string(),
        lines: lines.len() as u64,
        first: text.lines().next().map(ledger::line_hash),
        head,
    })
}

/// Whether the journal `text` (verified) still holds the line `anchor` names as its head.
fn extends(text: &str, anchor: &JournalHead) -> bool {
    if anchor.lines == 0 {
        return true;
    }
    let Ok(n) = usize::try_from(anchor.lines - 1) else { return false };
    text.lines().nth(n).is_some_and(|l| ledger::line_hash(l).eq_ignore_ascii_case(&anchor.head))
}

fn short(h: &str) -> &str {
    h.get(..16).unwrap_or(h)
}

/// Hold every journal to its anchors and to the `--expect-head`s; returns the flags and the heads to
/// record (an anchor a journal fails keeps being recorded, so the next run flags it again).
fn anchor(
    journals: &[Journal],
    anchors: &[(JournalHead, ReconciliationRecord)],
    expect_heads: &[String],
) -> (Vec<Flag>, Vec<JournalHead>) {
    let mut flags = Vec::new();
    let mut heads = Vec::new();
    for j in journals {
        let now = journal_head(&j.name, &j.text);
        let mine: Vec<&(JournalHead, ReconciliationRecord)> = anchors
            .iter()
            .filter(|(a, _)| {
                a.name == j.name || (a.first.is_some() && now.as_ref().is_some_and(|n| n.first == a.first))
            })
            .collect();
        let mut kept = false;
        for (a, rec) in &mine {
            let ok = now.is_some() && extends(&j.text, a);
            if !ok {
                let have = now.as_ref().map(|n| n.lines.to_string()).unwrap_or_else(|| "a broken chain of".into());
                flags.push(Flag::Journal {
                    journal: j.name.clone(),
                    line: usize::try_from(a.lines).unwrap_or(usize::MAX),
                    why: format!(
                        "the journal does not extend the head reconciliation {} recorded at {} (line {}, hash {}…); it now has {have} line(s): its last line(s) were deleted, or it was replaced",
                        rec.id,
                        rec.at,
                        a.lines,
                        short(&a.head)
                    ),
                });
                if !kept {
                    heads.push(JournalHead { name: j.name.clone(), ..a.clone() });
                    kept = true;
                }
            }
        }
        if !kept && let Some(n) = now {
            heads.push(n);
        }
    }
    for want in expect_heads {
        let want = want.trim();
        let found = journals.iter().any(|j| {
            ledger::verify_journal(&j.text).is_ok()
                && (want.eq_ignore_ascii_case(GENESIS)
                    || j.text.lines().any(|l| ledger::line_hash(l).eq_ignore_ascii_case(want)))
        });
        if !found {
            flags.push(Flag::Journal {
                journal: format!("--expect-head {}", short(want)),
                line: 0,
                why: format!(
                    "no journal reconciled holds the line with hash {want} (the head `settle --journal` printed): its last line(s) were deleted, or the journal is not among --journal"
                ),
            });
        }
    }
    (flags, heads)
}

/// The SEC 1 public keys certified for card `serial`: each certificate the database holds for it
/// (`certificates_of`) that chains to the issuer root (RFC 5280 path validation, as a card checks a
/// peer: `card::certificate::check`, signing key usage) and names that serial. Checked against the root
/// because the certificates table is replayed by `audit log`, not checked at unlock: a certificate
/// slipped into the database does not chain.
pub type PayerKeys<'a> = dyn FnMut(CardSerial) -> Result<Vec<Vec<u8>>, AuthorityError> + 'a;

fn certified_keys(u: &Unlocked<'_>, root: Option<&[u8]>, serial: CardSerial) -> Result<Vec<Vec<u8>>, AuthorityError> {
    let Some(root) = root else { return Ok(Vec::new()) };
    use crate::card::certificate::{self, Usage};
    Ok(u.auth
        .certificates_of(serial)?
        .iter()
        .filter_map(|der| certificate::check(der, root, crate::card::policy::ClockFloor(0), &[Usage::Signing]).ok())
        .filter(|peer| peer.serial == serial)
        .map(|peer| peer.public_key)
        .collect())
}

/// A journal line's value signature checked (journal line version 2; DESIGN.md §10 point 6): the
/// signature a certified payer's DEBIT made over `label ‖ payer ‖ payee ‖ amount ‖ nonce ‖ receipt ‖
/// payer sequence ‖ transfer key id` (`card::value`) must verify under a key certified for the payer.
/// A version 2 line of a certified payer's debit without a signature is flagged too (a signature
/// removed by a rewrite); version 1 lines (written before value signatures) carry none and are not
/// judged here. `keys_of` is asked once per payer.
pub fn check_value_signatures(journals: &[Journal], keys_of: &mut PayerKeys<'_>) -> Result<Vec<Flag>, AuthorityError> {
    use crate::card::VALUE_SIGNATURE_LABEL;
    let mut known: std::collections::HashMap<CardSerial, Vec<Vec<u8>>> = std::collections::HashMap::new();
    let mut flags = Vec::new();
    for j in journals {
        // A journal that does not verify is flagged by the reconciliation itself.
        let Ok((lines, _)) = ledger::verify_journal(&j.text) else { continue };
        for (i, l) in lines.iter().enumerate() {
            let r = &l.record;
            if l.format != ledger::JOURNAL_FORMAT || r.token.is_none() {
                continue;
            }
            let keys = match known.get(&r.payer) {
                Some(k) => k,
                None => known.entry(r.payer).or_insert(keys_of(r.payer)?),
            };
            let mut bad = |why: String| flags.push(Flag::Journal { journal: j.name.clone(), line: i + 1, why });
            let Some(sig_hex) = &r.signature else {
                if !keys.is_empty() {
                    bad(format!(
                        "the payer {} is certified, but the line carries no value signature (every token it makes is signed: the signature was removed)",
                        r.payer
                    ));
                }
                continue;
            };
            let sig = hex::decode(sig_hex).ok().filter(|s| s.len() == 64);
            let nonce = r.nonce.as_deref().and_then(|n| hex::decode(n).ok()).filter(|n| n.len() == 16);
            let (Some(sig), Some(nonce), Some(receipt), Some(payer_sequence), Some(id)) =
                (sig, nonce, r.receipt, r.payer_sequence, r.transfer_key_id)
            else {
                bad("a value signature without the fields it signs (64-byte signature, 16-byte nonce, receipt, payer sequence, transfer key id)".into());
                continue;
            };
            if keys.is_empty() {
                bad(format!(
                    "a value signature from payer {}, which has no certificate of this issuer to verify it",
                    r.payer
                ));
                continue;
            }
            let amount = r.amount.0.to_be_bytes();
            let mut seqs = [0u8; 8];
            seqs[..4].copy_from_slice(&receipt.to_be_bytes());
            seqs[4..].copy_from_slice(&payer_sequence.to_be_bytes());
            let id = id.to_be_bytes();
            let parts: [&[u8]; 7] = [VALUE_SIGNATURE_LABEL, &r.payer.0, &r.payee.0, &amount, &nonce, &seqs, &id];
            if !keys.iter().any(|k| crate::crypto::card_key::verify_p1363(k, &parts, &sig).is_ok()) {
                bad(format!(
                    "the value signature does not verify under the payer {}'s certificate: the line was forged or edited",
                    r.payer
                ));
            }
        }
    }
    Ok(flags)
}

/// Reconcile `exports` (each checked under its log key from the issuer's log master) and `journals`,
/// hold each journal to its anchors, and record the result. Recorded whatever it found: a
/// reconciliation that flagged something is the one `audit report` must show.
pub fn reconcile_and_record(
    u: &Unlocked<'_>,
    exports: &[CardLogExport],
    journals: &[Journal],
    expect_heads: &[String],
) -> Result<Recorded, AuthorityError> {
    let master = u.log_master()?;
    let texts: Vec<JournalText<'_>> =
        journals.iter().map(|j| JournalText { name: j.name.clone(), text: &j.text }).collect();
    let mut r = reconcile::reconcile(exports, &texts, &|s| reconcile::log_key(&master, s));
    let (flags, heads) = anchor(journals, &u.journal_anchors()?, expect_heads);
    r.flags.extend(flags);
    let root = u.auth.root()?;
    r.flags.extend(check_value_signatures(journals, &mut |serial| certified_keys(u, root.as_deref(), serial))?);
    let record = u.record_reconciliation(
        &Reconciled {
            cards: r.cards as u64,
            issued: r.issued,
            balances: r.balances,
            in_flight: r.in_flight,
            unaccounted: r.unaccounted,
            transfers_in_flight: r.transfers_in_flight.len() as u64,
            flags: r.flags.len() as u64,
            cards_digest: cards_digest(exports),
            journals: heads,
        },
        &r.open_debits,
    )?;
    Ok(Recorded { reconciliation: r, record })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Amount, Total};
    use crate::protocol::ledger::{JournalOutcome, JournalRecord};

    fn journal(n: u64) -> String {
        let mut text = String::new();
        let mut prev = GENESIS.to_string();
        for i in 0..n {
            let r = JournalRecord {
                at: 1_700_000_000 + i,
                payer: CardSerial::from_u64(1),
                payee: CardSerial::from_u64(2),
                amount: Amount(1),
                outcome: JournalOutcome::NothingMoved,
                receipt: None,
                nonce: None,
                payer_sequence: None,
                token: None,
                ack: None,
                proof: None,
                recovered: vec![],
                transfer_key_id: None,
                signature: None,
            };
            let l = ledger::journal_line(i, &prev, &r);
            prev = ledger::line_hash(&l);
            text.push_str(&l);
            text.push('\n');
        }
        text
    }

    fn recorded(id: i64, heads: Vec<JournalHead>) -> Vec<(JournalHead, ReconciliationRecord)> {
        let result = Reconciled {
            cards: 0,
            issued: Total(0),
            balances: Total(0),
            in_flight: Total(0),
            unaccounted: 0,
            transfers_in_flight: 0,
            flags: 0,
            cards_digest: [0; 32],
            journals: heads.clone(),
        };
        let rec = ReconciliationRecord { id, at: "t".into(), accounted: true, result };
        heads.into_iter().map(|h| (h, rec.clone())).collect()
    }

    fn j(name: &str, text: &str) -> Journal {
        Journal { name: name.into(), text: text.into() }
    }

    #[test]
    fn a_journal_that_lost_its_last_line_is_flagged_and_its_anchor_kept() {
        let full = journal(3);
        let head3 = journal_head("/j", &full).unwrap();
        let anchors = recorded(1, vec![head3.clone()]);
        // Grown by a line: extends, and the new head is recorded.
        let (flags, heads) = anchor(&[j("/j", &journal(4))], &anchors, &[]);
        assert!(flags.is_empty(), "{flags:?}");
        assert_eq!(heads[0].lines, 4);
        // The last line deleted: still a valid chain, but it does not extend the recorded head.
        let short = journal(2);
        assert!(ledger::verify_journal(&short).is_ok());
        let (flags, heads) = anchor(&[j("/j", &short)], &anchors, &[]);
        assert!(matches!(flags.as_slice(), [Flag::Journal { line: 3, .. }]), "{flags:?}");
        assert_eq!(heads, vec![head3.clone()], "the anchor is carried forward, not the shorter head");
        // Emptied, or moved to another path: still held to it (by name, by first line).
        let (flags, _) = anchor(&[j("/j", "")], &anchors, &[]);
        assert_eq!(flags.len(), 1);
        let (flags, _) = anchor(&[j("/elsewhere", &short)], &anchors, &[]);
        assert_eq!(flags.len(), 1);
        // Another journal entirely: nothing to hold it to.
        let (flags, _) = anchor(&[j("/other", "")], &anchors, &[]);
        assert!(flags.is_empty());
    }

    #[test]
    fn an_expected_head_must_be_a_line_of_a_journal() {
        let full = journal(3);
        let head = journal_head("/j", &full).unwrap().head;
        assert!(anchor(&[j("/j", &full)], &[], std::slice::from_ref(&head)).0.is_empty());
        assert!(anchor(&[j("/j", &journal(4))], &[], std::slice::from_ref(&head)).0.is_empty());
        let (flags, _) = anchor(&[j("/j", &journal(2))], &[], std::slice::from_ref(&head));
        assert_eq!(flags.len(), 1, "{flags:?}");
    }

    #[test]
    fn the_cards_digest_ignores_order_and_sees_every_byte() {
        use crate::protocol::ledger::{CARD_LOG_FORMAT, Totals};
        let e = |n: u64, balance: u64| CardLogExport {
            format: CARD_LOG_FORMAT.into(),
            serial: CardSerial::from_u64(n),
            issued: Amount(100),
            balance: Amount(balance),
            totals: Totals::default(),
            dropped: 0,
            entries: vec![],
            open_debits: vec![],
            receipt_floor: 1,
            receipt_next: 1,
            challenge: [0; 16],
            mac: [0; 16],
        };
        let d = cards_digest(&[e(1, 100), e(2, 100)]);
        assert_eq!(d, cards_digest(&[e(2, 100), e(1, 100)]));
        assert_ne!(d, cards_digest(&[e(1, 100), e(2, 99)]));
        assert_ne!(d, cards_digest(&[e(1, 100)]));
    }
}
