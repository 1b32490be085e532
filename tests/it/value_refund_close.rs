//! Issue 13 (session 5): a refund resolution closes the payee side too. Before, an issuer refund gave the
//! payer its amount back but left the payee's receipt open in its window, so a terminal that kept the
//! debit's token could still CREDIT it there: the same value twice (a double spend the issuer signed).
//! `reconcile` therefore only suggested refunds once the receipt had left the payee's window. Now a
//! payee adopting a policy whose refund (or void) names one of its receipts closes that receipt for good,
//! and `reconcile` suggests a void while the receipt is open, then the refund as soon as the payee's log
//! shows it closed — safe whichever card adopts the refund first.

use super::value_attacks::{reconcile_cards, send};
use super::value_resolutions::{fresh, put_policy, resolution, resolving_policy, stuck_debit};
use crate::support::*;
use keyroll::domain::*;
use keyroll::protocol::command::{Command, ReceiptRef};
use keyroll::protocol::ledger::EntryKind;
use keyroll::protocol::policy::ResolutionOutcome;
use keyroll::protocol::response::{DebitToken, ReceiveRequest};

fn credit(payee: &mut TestCard, payer: &TestCard, amount: u64, r: &ReceiveRequest, t: &DebitToken) -> u16 {
    let receipt = ReceiptRef {
        payer: payer.state().serial.unwrap(),
        amount: Amount(amount),
        receipt: r.payee_sequence,
        transfer_key_id: r.transfer_key_id,
    };
    send(payee, &Command::Credit { receipt, payer_sequence: t.payer_sequence, token: t.token }).0
}

/// The double spend: a hostile terminal debits the payer and keeps the token; the issuer refunds the
/// payer; the policy reaches both cards; the terminal then presents the old token to the payee. On the
/// code before this change the CREDIT answered 9000 and the payee's balance rose by 40 while the payer
/// had its 40 back (reconcile: unaccounted −40). Now the payee closed the receipt when it adopted the
/// policy: 6985, nothing changes, and the fleet adds up.
#[test]
fn a_refunded_debits_token_can_no_longer_be_credited_at_the_payee() {
    let mut payer = fresh(1, 100);
    let mut payee = fresh(2, 0);
    let (r, t) = stuck_debit(&mut payer, &mut payee, 40);
    let p2 = resolving_policy(None, vec![resolution(&payer, &payee, 40, &r, &t)]);
    assert_eq!(put_policy(&mut payee, &p2).0, 0x9000);
    assert_eq!(put_policy(&mut payer, &p2).0, 0x9000);
    assert_eq!(payer.state().balance, Amount(100), "refunded");
    let before = persisted(&payee);
    assert_eq!(credit(&mut payee, &payer, 40, &r, &t), 0x6985, "the old token must not land as well");
    assert_eq!(persisted(&payee), before);
    assert_eq!(payee.state().balance, Amount(0));
    let rec = reconcile_cards(&[&payer, &payee]);
    assert_eq!((rec.issued, rec.balances, rec.in_flight, rec.unaccounted), (Total(100), Total(100), Total(0), 0));
    assert!(rec.accounted(), "{:?}", rec.flags);
    // The payee's export says why: an abort of that receipt, naming the payer.
    let e = payee.state().export_log(&[0; 16]).unwrap();
    let abort = e.entries.iter().find(|x| x.kind == EntryKind::Abort).expect("abort entry");
    assert_eq!(
        (abort.counterpart, abort.amount, abort.receipt),
        (payer.state().serial.unwrap(), Amount(40), r.payee_sequence)
    );
    // Offering it again (a replay) changes nothing.
    assert_eq!(put_policy(&mut payee, &p2).0, 0x9000);
    assert_eq!(persisted(&payee), before);
}

/// The order does not matter once `reconcile`'s suggestions are followed: while the receipt is open it
/// suggests only a void (a refund reaching the payer first would leave the token creditable); the payer
/// adopting the void changes nothing; once the payee adopted it and its log shows the receipt closed,
/// the refund is suggested, replaces the void, and refunds exactly once; the token stays dead. A
/// receipt the payee already credited is never closed or refunded by it.
#[test]
fn reconcile_suggests_a_void_first_and_the_refund_once_the_payee_closed_the_receipt() {
    let mut payer = fresh(1, 100);
    let mut payee = fresh(2, 0);
    let (r, t) = stuck_debit(&mut payer, &mut payee, 40);
    let rec = reconcile_cards(&[&payer, &payee]);
    let mut void = resolution(&payer, &payee, 40, &r, &t);
    void.outcome = ResolutionOutcome::Void;
    assert_eq!(rec.issuer_resolutions, [void], "an open receipt: a void, never a refund yet");
    let p2 = resolving_policy(None, vec![void]);
    // The dangerous order: the payer first. A void does nothing to it.
    let payer_before = persisted(&payer);
    assert_eq!(put_policy(&mut payer, &p2).0, 0x9000);
    assert_eq!(payer.state().balance, Amount(60));
    assert_eq!(payer.state().pending_out.len(), 1, "the debit stays open");
    assert_ne!(persisted(&payer), payer_before, "it took the policy");
    assert_eq!(reconcile_cards(&[&payer, &payee]).issuer_resolutions, [void], "the payee has not closed it yet");
    assert_eq!(put_policy(&mut payee, &p2).0, 0x9000);
    let rec = reconcile_cards(&[&payer, &payee]);
    let refund = resolution(&payer, &payee, 40, &r, &t);
    assert_eq!(rec.issuer_resolutions, [refund], "closed at the payee: now the refund is safe");
    assert_eq!(rec.in_flight, Total(40));
    let p3 = resolving_policy(Some(&p2), vec![refund]);
    assert_eq!(put_policy(&mut payer, &p3).0, 0x9000);
    assert_eq!(put_policy(&mut payer, &p3).0, 0x9000);
    assert_eq!(payer.state().balance, Amount(100), "refunded once");
    assert_eq!(credit(&mut payee, &payer, 40, &r, &t), 0x6985);
    let rec = reconcile_cards(&[&payer, &payee]);
    assert_eq!((rec.balances, rec.in_flight, rec.unaccounted), (Total(100), Total(0), 0));
    assert!(rec.accounted() && rec.issuer_resolutions.is_empty(), "{rec:?}");

    // A credited receipt is not touched by a (wrong) refund naming it: the payee keeps its credit, and
    // reconcile shows the value the wrong refund created.
    let mut a = fresh(4, 100);
    let mut b = fresh(5, 0);
    let (r, t) = stuck_debit(&mut a, &mut b, 30);
    assert_eq!(credit(&mut b, &a, 30, &r, &t), 0x9000);
    let wrong = resolving_policy(None, vec![resolution(&a, &b, 30, &r, &t)]);
    assert_eq!(put_policy(&mut b, &wrong).0, 0x9000);
    assert_eq!(b.state().balance, Amount(30));
    assert!(b.state().log.iter().all(|l| l.kind != keyroll::card::state::LogKind::Abort));
}
