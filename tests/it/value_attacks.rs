//! Issue 13: the evaluation's attacks on value transfer by a hostile terminal that also holds its own
//! genuine cards. Each attack ran against version 1 (quoted per test); each now fails to jam, burn or
//! lock out, and the cards stay usable for honest settlements. Minting with an extracted generation key
//! cannot be prevented on symmetric cards, so `reconcile` must flag it.

use crate::support::*;
use keyroll::card::receipts::RECEIPT_WINDOW;
use keyroll::crypto::{Secret16, mac};
use keyroll::domain::*;
use keyroll::protocol::codec::Wire;
use keyroll::protocol::command::{Command, ReceiptRef};
use keyroll::protocol::ledger::CardLogExport;
use keyroll::protocol::response::{AbortProof, CreditAck, DebitToken, ReceiveRequest};
use keyroll::rollout::reconcile::{self, Flag, Reconciliation, Resolver};

/// A hostile terminal's raw exchange: any command, status word and data back.
pub fn send(card: &mut TestCard, c: &Command) -> (u16, Vec<u8>) {
    let r = keyroll::protocol::SmartCard::process(card, &c.to_apdu().to_bytes()).expect("card powered");
    let sw = u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]]);
    (sw, r[..r.len() - 2].to_vec())
}

fn ok<T: Wire<Context = ()>>(card: &mut TestCard, c: &Command) -> T {
    let (sw, data) = send(card, c);
    assert_eq!(sw, 0x9000, "{c:?}");
    T::from_wire(&data, ()).expect("well-formed answer")
}

fn begin(payee: &mut TestCard, payer: &TestCard, amount: u64) -> ReceiveRequest {
    let payer_sequence = payer.state().sequence;
    let payer = payer.state().serial.unwrap();
    ok(payee, &Command::BeginReceive { payer, amount: Amount(amount), payer_sequence })
}

fn debit(payer: &mut TestCard, payee: &TestCard, amount: u64, r: &ReceiveRequest) -> DebitToken {
    let payee = payee.state().serial.unwrap();
    ok(
        payer,
        &Command::Debit {
            payee,
            amount: Amount(amount),
            nonce: r.nonce,
            payee_sequence: r.payee_sequence,
            request: r.request,
        },
    )
}

fn receipt(payer: &TestCard, amount: u64, r: &ReceiveRequest) -> ReceiptRef {
    ReceiptRef {
        payer: payer.state().serial.unwrap(),
        amount: Amount(amount),
        receipt: r.payee_sequence,
        transfer_key_id: r.transfer_key_id,
    }
}

fn serial(n: u64) -> CardSerial {
    CardSerial::from_u64(n)
}

pub fn export(card: &TestCard) -> CardLogExport {
    card.state().export_log(&[0; 16]).expect("personalised card exports its log")
}

pub fn reconcile_cards(cards: &[&TestCard]) -> Reconciliation {
    let exports: Vec<_> = cards.iter().map(|c| export(c)).collect();
    reconcile::reconcile(&exports, &[], &|s| reconcile::log_key(&Secret16::new(LOG_MASTER), s))
}

fn fresh(n: u64, balance: u64) -> TestCard {
    let mut c = card(n, Profile::Symmetric, 1, 1, 5, balance);
    select(&mut c);
    c
}

/// Version 1: "BEGIN RECEIVE is unauthenticated and accepts any payer serial: one such command for the
/// card's remaining room makes every honest settlement fail with 'maximum balance'; eight of them fill
/// the receipt log (6A84) and nothing ever clears them."
#[test]
fn begin_receive_floods_jam_nothing_and_cost_no_memory() {
    let mut a = fresh(1, 100);
    let mut b = fresh(2, 0);
    // The first receipt creates the card's receipt secret; every later one only advances a counter.
    begin(&mut b, &a, 1);
    let size = persisted(&b).len();
    for i in 0..2_000u64 {
        // The payee's whole room, from made-up payers: version 1 reserved it and remembered each.
        let (sw, _) = send(
            &mut b,
            &Command::BeginReceive { payer: serial(1_000 + i), amount: Amount(1_000_000), payer_sequence: 0 },
        );
        assert_eq!(sw, 0x9000);
    }
    assert!(persisted(&b).len() <= size + 4, "a flood grew the card file from {size} to {}", persisted(&b).len());
    let r = settle_cards(&mut a, &mut b, 30).expect("honest settlement after the flood");
    assert_eq!(r.amount, Amount(30));
    assert!(r.apdus <= 9, "{} APDUs", r.apdus);
    assert_eq!((a.state().balance, b.state().balance), (Amount(70), Amount(30)));
}

/// Version 1: "A payee remembers 32 settled nonces; 32 BEGIN RECEIVE/ABORT pairs evict an entry. A
/// terminal holding the victim and any second card debits the victim, aborts at the payee, discards the
/// abort proof and floods: the victim can never be refunded."
#[test]
fn abort_and_flood_cannot_burn_the_victims_refund() {
    let mut victim = fresh(1, 100);
    let mut own = fresh(9, 0); // the attacker's own genuine card
    let r = begin(&mut own, &victim, 40);
    debit(&mut victim, &own, 40, &r);
    let _discarded: AbortProof = ok(&mut own, &Command::Abort { receipt: receipt(&victim, 40, &r) });
    for i in 0..200u64 {
        let q: ReceiveRequest =
            ok(&mut own, &Command::BeginReceive { payer: serial(500 + i), amount: Amount(1), payer_sequence: 0 });
        let _: AbortProof = ok(
            &mut own,
            &Command::Abort {
                receipt: ReceiptRef {
                    payer: serial(500 + i),
                    amount: Amount(1),
                    receipt: q.payee_sequence,
                    transfer_key_id: q.transfer_key_id,
                },
            },
        );
    }
    assert_eq!(victim.state().balance, Amount(60));
    // Any honest terminal holding both cards later refunds the victim: ABORT repeats its proof.
    let s = settle_cards(&mut victim, &mut own, 0).unwrap();
    assert_eq!(s.recovered.len(), 1, "{:?}", s.recovered);
    assert_eq!(victim.state().balance, Amount(100), "refunded");
    assert!(victim.state().pending_out.is_empty());
    assert!(reconcile_cards(&[&victim, &own]).accounted());
}

/// The same burn with a flood past the whole window: the receipt can no longer be proved by any card,
/// so the value stays in flight, in the victim's log and `reconcile`, with the issuer as resolver; the
/// victim keeps paying honestly.
#[test]
fn a_receipt_flooded_out_of_the_window_stays_accounted_with_the_issuer_as_resolver() {
    let mut victim = fresh(1, 100);
    let mut own = fresh(9, 0);
    let mut honest = fresh(2, 0);
    let r = begin(&mut own, &victim, 40);
    debit(&mut victim, &own, 40, &r);
    for i in 0..RECEIPT_WINDOW as u64 {
        send(&mut own, &Command::BeginReceive { payer: serial(500 + i), amount: Amount(1), payer_sequence: 0 });
    }
    let (sw, _) = send(&mut own, &Command::Abort { receipt: receipt(&victim, 40, &r) });
    assert_eq!(sw, 0x6A88, "out of the window: nothing to prove");
    let (sw, _) =
        send(&mut own, &Command::Credit { receipt: receipt(&victim, 40, &r), payer_sequence: 1, token: [0; 16] });
    assert_ne!(sw, 0x9000);
    settle_cards(&mut victim, &mut own, 0).unwrap();
    let rec = reconcile_cards(&[&victim, &own, &honest]);
    assert_eq!((rec.issued, rec.balances, rec.in_flight, rec.unaccounted), (Total(100), Total(60), Total(40), 0));
    assert_eq!(rec.transfers_in_flight[0].resolver, Resolver::Issuer);
    settle_cards(&mut victim, &mut honest, 10).expect("the victim still pays");
}

/// Version 1: "Debits that were credited but never confirmed can never be closed; after eight of them
/// the payer's DEBIT answers 6A84 forever."
#[test]
fn credited_but_unconfirmed_debits_never_lock_the_payer_out() {
    let mut victim = fresh(1, 1_000);
    let mut own = fresh(9, 0);
    let mut honest = fresh(2, 0);
    for _ in 0..20 {
        let r = begin(&mut own, &victim, 5);
        let t = debit(&mut victim, &own, 5, &r);
        let _: CreditAck = ok(
            &mut own,
            &Command::Credit { receipt: receipt(&victim, 5, &r), payer_sequence: t.payer_sequence, token: t.token },
        );
        // ... and never CONFIRM.
    }
    assert_eq!(victim.state().pending_out.len() + victim.state().exceptions.len(), 20);
    settle_cards(&mut victim, &mut honest, 10).expect("DEBIT still has room");
    // Any honest terminal with both cards closes every one (CREDIT repeats its acknowledgement).
    let s = settle_cards(&mut victim, &mut own, 0).unwrap();
    assert_eq!(s.recovered.len(), 20);
    assert!(victim.state().pending_out.is_empty() && victim.state().exceptions.is_empty());
    assert_eq!((victim.state().balance, own.state().balance), (Amount(890), Amount(100)));
    assert!(reconcile_cards(&[&victim, &own, &honest]).accounted());
}

/// A hostile terminal aborts an honest transfer between DEBIT and CREDIT: the payee refuses the token,
/// the terminal (or the next honest one) refunds the payer; nothing is lost.
#[test]
fn an_abort_slipped_in_before_credit_only_undoes_the_transfer() {
    let mut a = fresh(1, 100);
    let mut b = fresh(2, 0);
    let r = begin(&mut b, &a, 25);
    let t = debit(&mut a, &b, 25, &r);
    let _: AbortProof = ok(&mut b, &Command::Abort { receipt: receipt(&a, 25, &r) });
    let (sw, _) = send(
        &mut b,
        &Command::Credit { receipt: receipt(&a, 25, &r), payer_sequence: t.payer_sequence, token: t.token },
    );
    assert_eq!(sw, 0x6985);
    settle_cards(&mut a, &mut b, 0).unwrap();
    assert_eq!((a.state().balance, b.state().balance), (Amount(100), Amount(0)));
}

/// "One extracted card mints into every card of its generation": with the generation's transfer key, a
/// forged token credits an honest payee naming a payer that never paid. Symmetric cards cannot tell;
/// `reconcile` flags the credit without a matching debit, and value no longer adds up.
#[test]
fn minting_with_an_extracted_generation_key_is_flagged_by_reconcile() {
    let a = fresh(1, 100);
    let mut b = fresh(2, 0);
    let r = begin(&mut b, &a, 500);
    let tk = transfer_key(1);
    let mut seqs = [0u8; 8];
    seqs[..4].copy_from_slice(&r.payee_sequence.to_be_bytes());
    seqs[4..].copy_from_slice(&77u32.to_be_bytes());
    let token = mac::cmac(
        &mac::value_mac_key(&tk),
        &[
            b"keyroll value token v2",
            &serial(1).0,
            &serial(2).0,
            &500u64.to_be_bytes(),
            &r.nonce,
            &seqs,
            &1u32.to_be_bytes(),
        ],
    );
    let _: CreditAck = ok(&mut b, &Command::Credit { receipt: receipt(&a, 500, &r), payer_sequence: 77, token });
    assert_eq!(b.state().balance, Amount(500), "the symmetric card cannot tell");
    let rec = reconcile_cards(&[&a, &b]);
    assert_eq!(rec.unaccounted, -500);
    assert!(
        rec.flags.iter().any(|f| matches!(f, Flag::Minted { payee, amount: Amount(500), .. } if *payee == serial(2))),
        "{:?}",
        rec.flags
    );
    assert!(!rec.accounted());
}
