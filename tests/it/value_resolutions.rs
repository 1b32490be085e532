//! Issue 13 item 2 (session 4): nothing blocks for good. Debits no card pair can resolve any more (the
//! receipt left the payee's window, or the payee never returns) filled the payer's exception list, and
//! version 1 of the exception list had no way out: 72 of them made DEBIT answer 6A84 forever. Now an
//! issuer resolution, carried in the signed policy, clears each one exactly once.

use super::value_attacks::{export, reconcile_cards, send};
use crate::support::*;
use keyroll::card::receipts::RECEIPT_WINDOW;
use keyroll::card::storage::Tear;
use keyroll::domain::*;
use keyroll::protocol::SmartCard;
use keyroll::protocol::codec::Wire;
use keyroll::protocol::command::{Command, ReceiptRef};
use keyroll::protocol::info::{MAX_EXCEPTIONS, MAX_PENDING};
use keyroll::protocol::policy::{Policy, Resolution, ResolutionOutcome};
use keyroll::protocol::response::{CreditAck, DebitToken, PolicyAdoption, ReceiveRequest};
use keyroll::rollout::reconcile::Resolver;

const NOT_ENOUGH_MEMORY: u16 = 0x6A84;

pub(crate) fn ok<T: Wire<Context = ()>>(card: &mut TestCard, c: &Command) -> T {
    let (sw, data) = send(card, c);
    assert_eq!(sw, 0x9000, "{c:?}");
    T::from_wire(&data, ()).expect("well-formed answer")
}

pub(crate) fn fresh(n: u64, balance: u64) -> TestCard {
    let mut c = card(n, Profile::Symmetric, 1, 1, 5, balance);
    select(&mut c);
    c
}

pub(crate) fn begin(payee: &mut TestCard, payer: &TestCard, amount: u64) -> ReceiveRequest {
    let payer_sequence = payer.state().sequence;
    let payer = payer.state().serial.unwrap();
    ok(payee, &Command::BeginReceive { payer, amount: Amount(amount), payer_sequence })
}

pub(crate) fn debit_command(payee: &TestCard, amount: u64, r: &ReceiveRequest) -> Command {
    Command::Debit {
        payee: payee.state().serial.unwrap(),
        amount: Amount(amount),
        nonce: r.nonce,
        payee_sequence: r.payee_sequence,
        request: r.request,
    }
}

/// A hostile terminal's debit: BEGIN RECEIVE at the payee, DEBIT at the payer, the token dropped.
pub(crate) fn stuck_debit(payer: &mut TestCard, payee: &mut TestCard, amount: u64) -> (ReceiveRequest, DebitToken) {
    let r = begin(payee, payer, amount);
    let t: DebitToken = ok(payer, &debit_command(payee, amount, &r));
    (r, t)
}

/// Push every receipt handed out so far out of the payee's window (BEGIN RECEIVEs from made-up payers):
/// no card can prove any of them either way any more.
pub(crate) fn flood_out_of_window(payee: &mut TestCard) {
    for i in 0..RECEIPT_WINDOW as u64 {
        let (sw, _) = send(
            payee,
            &Command::BeginReceive { payer: CardSerial::from_u64(90_000 + i), amount: Amount(1), payer_sequence: 0 },
        );
        assert_eq!(sw, 0x9000);
    }
}

/// The tests' issuer signs policy `number` after `previous` (None: after the plain chain's policy 1,
/// which every test card holds), carrying `resolutions`.
pub(crate) fn resolving_policy(previous: Option<&Policy>, resolutions: Vec<Resolution>) -> Policy {
    let key = scheme_key();
    signed_policy(&key, previous, resolutions)
}

fn signed_policy(
    key: &keyroll::crypto::scheme_key::SchemeSigningKey,
    previous: Option<&Policy>,
    resolutions: Vec<Resolution>,
) -> Policy {
    let prev = previous.cloned().unwrap_or_else(|| test_policy(1, &[], 1));
    let mut p = Policy {
        number: prev.number + 1,
        previous: prev.hash(),
        signed_at: prev.signed_at + 1,
        resolutions,
        signature: [0; 64],
        ..prev
    };
    p.signature = key.sign(&p.body()).unwrap();
    p
}

pub(crate) fn put_policy(card: &mut TestCard, p: &Policy) -> (u16, Option<PolicyAdoption>) {
    let (sw, data) = send(card, &Command::PutPolicy { policy: p.to_wire() });
    (sw, (sw == 0x9000).then(|| PolicyAdoption::from_wire(&data, ()).expect("adoption answer")))
}

pub(crate) fn resolution(
    payer: &TestCard,
    payee: &TestCard,
    amount: u64,
    r: &ReceiveRequest,
    t: &DebitToken,
) -> Resolution {
    Resolution {
        payer: payer.state().serial.unwrap(),
        payer_sequence: t.payer_sequence,
        payee: payee.state().serial.unwrap(),
        receipt: r.payee_sequence,
        amount: Amount(amount),
        outcome: ResolutionOutcome::Refund,
    }
}

fn open_debits(card: &TestCard) -> usize {
    card.state().pending_out.len() + card.state().exceptions.len()
}

/// Version 1 (session 3): "Debits whose receipt left the window, or whose payee never returns, stay in the
/// payer's exception list … 72 such debits of the holder's own value make DEBIT answer 6A84", forever.
/// Now the bound still refuses a 73rd debit (no open debit is ever dropped: each is value in flight), but
/// the issuer's resolutions, spread by any settlement, clear them and the holder pays again.
#[test]
fn seventy_two_stuck_debits_are_cleared_by_issuer_resolutions_and_the_holder_pays_again() {
    let full = MAX_PENDING + MAX_EXCEPTIONS;
    assert_eq!(full, 72);
    let mut victim = fresh(1, 10_000);
    let mut payee = fresh(2, 0);
    let mut stuck = Vec::new();
    for i in 0..full as u64 {
        let amount = 10 + i;
        let (r, t) = stuck_debit(&mut victim, &mut payee, amount);
        stuck.push((amount, r, t));
    }
    let debited: u64 = stuck.iter().map(|s| s.0).sum();
    assert_eq!(victim.state().balance, Amount(10_000 - debited));
    assert_eq!((victim.state().pending_out.len(), victim.state().exceptions.len()), (MAX_PENDING, MAX_EXCEPTIONS));

    // A 73rd debit is refused (6A84), and the refusal changes nothing.
    let before = persisted(&victim);
    let r = begin(&mut payee, &victim, 1);
    let (sw, _) = send(&mut victim, &debit_command(&payee, 1, &r));
    assert_eq!(sw, NOT_ENOUGH_MEMORY);
    assert_eq!(persisted(&victim), before, "a refused DEBIT keeps the card's state");

    // The payee never sees the tokens again, and its window moves past every receipt.
    flood_out_of_window(&mut payee);
    let rec = reconcile_cards(&[&victim, &payee]);
    assert_eq!(rec.in_flight, Total(debited as u128), "{rec:?}");
    assert_eq!(rec.unaccounted, 0);
    assert!(rec.transfers_in_flight.iter().all(|t| t.resolver == Resolver::Issuer));
    // Reconcile names exactly the resolutions the issuer can sign: one refund per stuck debit.
    let expected: Vec<Resolution> = stuck.iter().map(|(a, r, t)| resolution(&victim, &payee, *a, r, t)).collect();
    let mut named = rec.issuer_resolutions.clone();
    named.sort_by_key(|r| r.payer_sequence);
    assert_eq!(named, expected);

    // The issuer signs them into policy 2; an honest settlement carrying the policy file spreads it,
    // the victim applies all 72 before value moves, and pays.
    let p2 = resolving_policy(None, rec.issuer_resolutions.clone());
    assert!(p2.to_wire().len() <= Policy::MAX_LEN);
    let mut a = keyroll::transport::in_process::InProcessChannel::new(&mut victim, "payer");
    let mut b = keyroll::transport::in_process::InProcessChannel::new(&mut payee, "payee");
    let options = keyroll::terminal::SettleOptions { policy: Some(p2.clone()), ..Default::default() };
    let report = keyroll::terminal::settle(&mut a, &mut b, Amount(25), &options).expect("the holder pays again");
    assert!(report.policy_spread.is_some());
    assert_eq!(victim.state().policy_number(), 2);
    assert_eq!(open_debits(&victim), 0);
    assert_eq!(victim.state().balance, Amount(10_000 - 25), "every stuck debit refunded, then 25 paid");
    assert_eq!(payee.state().balance, Amount(25));
    let resolved =
        export(&victim).entries.iter().filter(|e| e.kind == keyroll::protocol::ledger::EntryKind::Resolved).count();
    assert!(resolved > 0, "resolutions are in the card's log");
    let rec = reconcile_cards(&[&victim, &payee]);
    assert_eq!((rec.in_flight, rec.unaccounted), (Total(0), 0), "{rec:?}");
    assert!(rec.accounted(), "{:?}", rec.flags);
    assert!(rec.issuer_resolutions.is_empty());
    // And the full 72 again, cleared again: the bound never locks the holder out for good.
    for i in 0..full as u64 {
        stuck_debit(&mut victim, &mut payee, 1 + i % 3);
    }
    let r = begin(&mut payee, &victim, 1);
    assert_eq!(send(&mut victim, &debit_command(&payee, 1, &r)).0, NOT_ENOUGH_MEMORY);
    flood_out_of_window(&mut payee);
    let rec = reconcile_cards(&[&victim, &payee]);
    let p3 = resolving_policy(Some(&p2), rec.issuer_resolutions.clone());
    assert_eq!(put_policy(&mut victim, &p3), (0x9000, Some(PolicyAdoption { adopted: true, number: 3 })));
    assert_eq!(open_debits(&victim), 0);
    assert_eq!(victim.state().balance, Amount(10_000 - 25));
    assert!(reconcile_cards(&[&victim, &payee]).accounted());
}

/// A resolution acts once: replaying its policy, or a later policy that still carries it, gives nothing
/// back a second time; a resolution that disagrees with the card's record (amount) does nothing; a
/// "credited" resolution closes a credited debit without giving anything back.
#[test]
fn a_resolution_applies_once_whatever_carries_it_again() {
    let mut victim = fresh(1, 1_000);
    let mut payee = fresh(2, 0);
    // 40: never credited (will be refunded). 25: credited at the payee, never confirmed (closed).
    // 7: the issuer's resolution names the wrong amount (applies to nothing).
    let (r40, t40) = stuck_debit(&mut victim, &mut payee, 40);
    let (r25, t25) = stuck_debit(&mut victim, &mut payee, 25);
    let receipt = ReceiptRef {
        payer: victim.state().serial.unwrap(),
        amount: Amount(25),
        receipt: r25.payee_sequence,
        transfer_key_id: r25.transfer_key_id,
    };
    let _: CreditAck =
        ok(&mut payee, &Command::Credit { receipt, payer_sequence: t25.payer_sequence, token: t25.token });
    let (r7, t7) = stuck_debit(&mut victim, &mut payee, 7);
    flood_out_of_window(&mut payee);
    assert_eq!(victim.state().balance, Amount(1_000 - 72));
    let rec = reconcile_cards(&[&victim, &payee]);
    assert_eq!(rec.in_flight, Total(47), "{rec:?}");
    assert!(rec.accounted(), "{:?}", rec.flags);

    let refund40 = resolution(&victim, &payee, 40, &r40, &t40);
    let credited25 = Resolution { outcome: ResolutionOutcome::Credited, ..resolution(&victim, &payee, 25, &r25, &t25) };
    let wrong7 = Resolution { amount: Amount(8), ..resolution(&victim, &payee, 7, &r7, &t7) };
    let p2 = resolving_policy(None, vec![refund40, credited25, wrong7]);
    assert_eq!(put_policy(&mut victim, &p2), (0x9000, Some(PolicyAdoption { adopted: true, number: 2 })));
    assert_eq!(victim.state().balance, Amount(1_000 - 72 + 40), "40 back, 25 closed, 7 untouched");
    assert_eq!(open_debits(&victim), 1, "only the debit of 7 stays open");
    let after_p2 = victim.state().clone();
    let rec = reconcile_cards(&[&victim, &payee]);
    assert_eq!(rec.in_flight, Total(7), "{rec:?}");
    assert!(rec.accounted(), "{:?}", rec.flags);

    // The same policy again: kept, nothing changes.
    assert_eq!(put_policy(&mut victim, &p2), (0x9000, Some(PolicyAdoption { adopted: false, number: 2 })));
    assert_eq!(victim.state(), &after_p2);
    // A later policy still carrying both (and now the right resolution of 7): only 7 comes back.
    let right7 = resolution(&victim, &payee, 7, &r7, &t7);
    let p3 = resolving_policy(Some(&p2), vec![refund40, credited25, right7]);
    assert_eq!(put_policy(&mut victim, &p3), (0x9000, Some(PolicyAdoption { adopted: true, number: 3 })));
    assert_eq!(victim.state().balance, Amount(1_000 - 72 + 40 + 7));
    assert_eq!(open_debits(&victim), 0);
    // And another one after that, carrying them all once more: nothing.
    let p4 = resolving_policy(Some(&p3), vec![refund40, credited25, right7]);
    let before = victim.state().balance;
    assert_eq!(put_policy(&mut victim, &p4), (0x9000, Some(PolicyAdoption { adopted: true, number: 4 })));
    assert_eq!(victim.state().balance, before, "a resolution never refunds twice");
    assert_eq!(victim.state().totals.refunded, 47);
    let rec = reconcile_cards(&[&victim, &payee]);
    assert_eq!((rec.in_flight, rec.unaccounted), (Total(0), 0), "{rec:?}");
    assert!(rec.accounted(), "{:?}", rec.flags);
    // The payee, holding policy 4 too, applies nothing (the resolutions name another card's debits).
    let payee_balance = payee.state().balance;
    assert_eq!(put_policy(&mut payee, &p4).0, 0x9000);
    assert_eq!(payee.state().balance, payee_balance);
}

/// A resolution signed by anyone but the issuer's scheme key (even claiming the scheme's id) is refused
/// with the whole policy, and changes nothing.
#[test]
fn a_forged_resolution_changes_nothing() {
    let mut victim = fresh(1, 1_000);
    let mut payee = fresh(2, 0);
    let (r, t) = stuck_debit(&mut victim, &mut payee, 300);
    flood_out_of_window(&mut payee);
    let before = persisted(&victim);
    let forger = keyroll::crypto::scheme_key::SchemeSigningKey::generate().unwrap();
    let forged = signed_policy(&forger, None, vec![resolution(&victim, &payee, 300, &r, &t)]);
    assert_eq!(forged.scheme_id, scheme_key().scheme_id(), "it claims the genuine scheme");
    assert_eq!(put_policy(&mut victim, &forged).0, 0x6300);
    assert_eq!(persisted(&victim), before);
    // A genuine policy edited to carry a bigger refund: refused too.
    let genuine = resolving_policy(None, vec![resolution(&victim, &payee, 300, &r, &t)]);
    let mut edited = genuine.clone();
    edited.resolutions[0].amount = Amount(900);
    assert_eq!(put_policy(&mut victim, &edited).0, 0x6300);
    assert_eq!(persisted(&victim), before);
    // Through a settlement (`settle --policy` with the forged file): the card refuses it, nothing moves.
    let mut a = keyroll::transport::in_process::InProcessChannel::new(&mut victim, "payer");
    let mut b = keyroll::transport::in_process::InProcessChannel::new(&mut payee, "payee");
    let options = keyroll::terminal::SettleOptions { policy: Some(forged), ..Default::default() };
    assert!(keyroll::terminal::settle(&mut a, &mut b, Amount(1), &options).is_err());
    assert_eq!(victim.state().balance, Amount(700));
    assert_eq!(open_debits(&victim), 1);
    // The genuine one works.
    assert_eq!(put_policy(&mut victim, &genuine).0, 0x9000);
    assert_eq!(victim.state().balance, Amount(1_000));
}

/// PUT POLICY with resolutions is one write: power cut before it or after it, the card holds the old
/// policy with its debits open or the new one with them resolved, never a mix, and a retry after the
/// cut refunds exactly once.
#[test]
fn a_torn_adoption_leaves_the_old_or_the_new_state() {
    for tear in [Tear::BeforeWrite, Tear::AfterWrite] {
        let mut victim = fresh(1, 1_000);
        let mut payee = fresh(2, 0);
        let mut res = Vec::new();
        for amount in [100, 200, 50] {
            let (r, t) = stuck_debit(&mut victim, &mut payee, amount);
            res.push(resolution(&victim, &payee, amount, &r, &t));
        }
        flood_out_of_window(&mut payee);
        let old = victim.state().clone();
        let p2 = resolving_policy(None, res);
        victim.storage_mut().arm(1, tear);
        let answer = victim.process(&Command::PutPolicy { policy: p2.to_wire() }.to_apdu().to_bytes());
        assert!(answer.is_err(), "{tear:?}: the card lost power and went mute");
        victim.storage_mut().disarm();
        victim.power_on();
        select(&mut victim);
        let s = victim.state();
        match tear {
            Tear::BeforeWrite => assert_eq!(s, &old, "old state, whole"),
            Tear::AfterWrite => {
                assert_eq!((s.policy_number(), s.balance, open_debits(&victim)), (2, Amount(1_000), 0));
            }
        }
        // The terminal retries: adopted now (or kept), refunded exactly once either way.
        assert_eq!(put_policy(&mut victim, &p2).0, 0x9000);
        assert_eq!((victim.state().policy_number(), victim.state().balance), (2, Amount(1_000)));
        assert_eq!(victim.state().totals.refunded, 350);
        assert!(reconcile_cards(&[&victim, &payee]).accounted());
    }
}

/// Load a card file into an in-memory card (for the hostile terminal's raw commands), and write it back.
fn load(path: &std::path::Path) -> TestCard {
    use keyroll::card::storage::{MemoryStorage, TearingStorage};
    let state = keyroll::card::CardState::decode(&std::fs::read(path).unwrap()).unwrap();
    let mut c = keyroll::card::Card::create(TearingStorage::new(MemoryStorage::new()), state).unwrap();
    select(&mut c);
    c
}

fn save(card: &TestCard, path: &std::path::Path) {
    std::fs::write(path, &*card.state().encode()).unwrap();
}

/// The whole loop through the binary: `reconcile --json` names the stuck debit's fields,
/// `policy resolve` signs a policy carrying it (logged in the signed audit log, shown by `policy show`),
/// `policy publish` + `settle --policy` spread it, the payer is refunded once, and `reconcile` accounts
/// for everything. Contradicting a signed resolution, or naming a card the issuer never made, is refused.
#[test]
fn policy_resolve_through_the_binary_refunds_a_stuck_debit_once() {
    use crate::support::cli::Scratch;
    let s = Scratch::new();
    let files = s.init_with_cards("symmetric", 2);
    let (mut payer, mut payee) = (load(&files[0]), load(&files[1]));
    let (r, t) = stuck_debit(&mut payer, &mut payee, 40);
    flood_out_of_window(&mut payee);
    save(&payer, &files[0]);
    save(&payee, &files[1]);

    let v = s.json(&["reconcile", "--cards", "cards"]);
    assert_eq!((v["in_flight"].as_u64(), v["unaccounted"].as_i64()), (Some(40), Some(0)), "{v}");
    let named = &v["issuer_resolutions"][0];
    let payer_serial = payer.state().serial.unwrap().to_string();
    let payee_serial = payee.state().serial.unwrap().to_string();
    assert_eq!(named["payer"].as_str(), Some(payer_serial.as_str()), "{v}");
    assert_eq!(named["payer_sequence"].as_u64(), Some(t.payer_sequence as u64), "{v}");
    assert_eq!(named["payee"].as_str(), Some(payee_serial.as_str()), "{v}");
    assert_eq!(named["receipt"].as_u64(), Some(r.payee_sequence as u64), "{v}");
    assert_eq!(named["amount"].as_u64(), Some(40), "{v}");
    assert_eq!(named["outcome"].as_str(), Some("refund"), "{v}");

    let field = |k: &str| named[k].to_string().trim_matches('"').to_string();
    let args = |outcome: &str| -> Vec<String> {
        ["policy", "resolve", "--payer", &field("payer"), "--payer-sequence", &field("payer_sequence")]
            .into_iter()
            .chain(["--payee", &field("payee"), "--receipt", &field("receipt"), "--amount", &field("amount"), outcome])
            .map(str::to_string)
            .collect()
    };
    let refund = args("--refund");
    let refund: Vec<&str> = refund.iter().map(String::as_str).collect();
    let out = s.json(&refund);
    assert_eq!(out["already_carried"], serde_json::json!(false), "{out}");
    assert_eq!(out["policy"]["number"].as_u64(), Some(2), "{out}");
    assert_eq!(out["policy"]["resolutions"][0]["outcome"].as_str(), Some("refund"), "{out}");
    // Again: already carried, nothing new signed.
    assert_eq!(s.json(&refund)["already_carried"], serde_json::json!(true));
    // The same debit "credited" now: the issuer would contradict itself.
    let credited = args("--credited");
    let credited: Vec<&str> = credited.iter().map(String::as_str).collect();
    let o = s.run(&credited);
    assert_eq!(o.status.code(), Some(2), "{}", crate::support::cli::stderr(&o));
    assert!(crate::support::cli::stderr(&o).contains("hint:"));
    // A card the issuer never made.
    let mut unknown = refund.clone();
    unknown[3] = "4B520000DEADBEEF";
    let o = s.run(&unknown);
    assert_ne!(o.status.code(), Some(0), "{}", crate::support::cli::stderr(&o));
    let logged = s.sqlite("SELECT count(*) FROM audit_log WHERE action = 'policy resolve'");
    assert_eq!(logged.trim(), "1");
    s.ok(&["audit", "log"]);
    let shown = s.json(&["policy", "show"]);
    assert_eq!(shown["resolutions"].as_array().map(Vec::len), Some(1), "{shown}");

    s.ok(&["policy", "publish", "--out", "policy.bin"]);
    let spec = |i: usize| crate::support::cli::file_reader(&files[i]);
    for _ in 0..2 {
        s.ok(&["settle", "--payer", &spec(0), "--payee", &spec(1), "--amount", "0", "--policy", "policy.bin"]);
    }
    let payer = keyroll::card::CardState::decode(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(payer.balance, Amount(100), "refunded once");
    assert_eq!(payer.totals.refunded, 40);
    let v = s.json(&["reconcile", "--cards", "cards"]);
    assert_eq!(
        (v["issued"].as_u64(), v["balances"].as_u64(), v["in_flight"].as_u64(), v["unaccounted"].as_i64()),
        (Some(200), Some(200), Some(0), Some(0)),
        "{v}"
    );
}
