//! Issue 13, session 5: `policy resolve` is checked against the recorded reconciliation.
//!
//! Before, `policy resolve` refused only to contradict a signed resolution or to name a card the issuer
//! never made: a `--refund` of a debit the payee had credited was signed, spread, and created value
//! (the next `reconcile` showed it as unaccounted). Now the library checks every resolution against
//! the newest reconciliation, whose open debits are recorded (schema 9): a refund only of a receipt no
//! card can ever credit, a closure only of a debit the payee credited, and nothing at all when no
//! reconciliation shows the debit (reconcile first). `--against-reconciliation none --reason TEXT` is
//! the issuer's override for a card lost for good, never against a proof of the opposite, logged.
//! Runs on SQLite and on PostgreSQL.

use super::value_attacks::send;
use crate::support::cli::{Scratch, both_engines, file_reader, stderr};
use crate::support::*;
use keyroll::card::receipts::RECEIPT_WINDOW;
use keyroll::domain::*;
use keyroll::protocol::codec::Wire;
use keyroll::protocol::command::{Command, ReceiptRef};
use keyroll::protocol::response::{CreditAck, DebitToken, ReceiveRequest};
use std::path::Path;

fn ok<T: Wire<Context = ()>>(card: &mut TestCard, c: &Command) -> T {
    let (sw, data) = send(card, c);
    assert_eq!(sw, 0x9000, "{c:?}");
    T::from_wire(&data, ()).expect("well-formed answer")
}

fn load(path: &Path) -> TestCard {
    use keyroll::card::storage::{MemoryStorage, TearingStorage};
    let state = keyroll::card::CardState::decode(&std::fs::read(path).unwrap()).unwrap();
    let mut c = keyroll::card::Card::create(TearingStorage::new(MemoryStorage::new()), state).unwrap();
    select(&mut c);
    c
}

fn save(card: &TestCard, path: &Path) {
    std::fs::write(path, &*card.state().encode()).unwrap();
}

/// A debit as `policy resolve` names it.
struct Debit {
    payer: String,
    payer_sequence: u32,
    payee: String,
    receipt: u32,
    amount: u64,
}

impl Debit {
    fn args(&self, outcome: &str) -> Vec<String> {
        [
            "policy",
            "resolve",
            "--payer",
            &self.payer,
            "--payer-sequence",
            &self.payer_sequence.to_string(),
            "--payee",
            &self.payee,
            "--receipt",
            &self.receipt.to_string(),
            "--amount",
            &self.amount.to_string(),
            outcome,
        ]
        .into_iter()
        .map(str::to_string)
        .collect()
    }
}

/// A hostile terminal's debit: BEGIN RECEIVE at the payee, DEBIT at the payer, the token kept (for a
/// CREDIT without CONFIRM) or dropped.
fn debit(payer: &mut TestCard, payee: &mut TestCard, amount: u64) -> (Debit, ReceiveRequest, DebitToken) {
    let payer_serial = payer.state().serial.unwrap();
    let r: ReceiveRequest = ok(
        payee,
        &Command::BeginReceive { payer: payer_serial, amount: Amount(amount), payer_sequence: payer.state().sequence },
    );
    let t: DebitToken = ok(
        payer,
        &Command::Debit {
            payee: payee.state().serial.unwrap(),
            amount: Amount(amount),
            nonce: r.nonce,
            payee_sequence: r.payee_sequence,
            request: r.request,
        },
    );
    let d = Debit {
        payer: payer_serial.to_string(),
        payer_sequence: t.payer_sequence,
        payee: payee.state().serial.unwrap().to_string(),
        receipt: r.payee_sequence,
        amount,
    };
    (d, r, t)
}

fn refused(s: &Scratch, args: &[String], code: i32, says: &str, hint: &str) {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = s.run(&a);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(says), "{args:?}: {err}");
    let hint_line = err.lines().find(|l| l.starts_with("hint:")).unwrap_or_else(|| panic!("no hint: {err}"));
    assert!(hint_line.contains(hint), "{args:?}: {err}");
}

fn resolved(s: &Scratch, args: &[String]) -> serde_json::Value {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    s.json(&a)
}

fn count(s: &Scratch, sql: &str) -> u64 {
    s.sql(sql).trim().parse().unwrap_or_else(|_| panic!("{sql}: not a number"))
}

both_engines!(a_resolution_is_checked_against_the_newest_reconciliation);
/// Cards: payer P, payee Q (flooded out of its window), third T, and L (lost before the second
/// reconciliation). P's open debits: d40 → Q never credited (receipt below Q's window); d25 → Q
/// credited, never confirmed; d10 → T, receipt still open at T; d15 → L.
fn a_resolution_is_checked_against_the_newest_reconciliation(s: Scratch) {
    s.init();
    s.ok(&["batch", "new", "b", "--profile", "symmetric", "--transfer-key-limit", "3", "--initial-balance", "200"]);
    s.ok(&["perso", "--batch", "b", "--out-dir", "cards", "--count", "4"]);
    let files = s.card_files("cards");
    let (mut p, mut q, mut t, mut l) = (load(&files[0]), load(&files[1]), load(&files[2]), load(&files[3]));

    // The cards before they moved: reconciliation 1 sees no open debit.
    let r1 = s.json(&["reconcile", "--cards", "cards"]);
    assert_eq!(r1["recorded"]["id"], 1, "{r1}");

    let (d40, _, _) = debit(&mut p, &mut q, 40);
    let (d25, r25, t25) = debit(&mut p, &mut q, 25);
    let receipt = ReceiptRef {
        payer: p.state().serial.unwrap(),
        amount: Amount(25),
        receipt: r25.payee_sequence,
        transfer_key_id: r25.transfer_key_id,
    };
    let _: CreditAck = ok(&mut q, &Command::Credit { receipt, payer_sequence: t25.payer_sequence, token: t25.token });
    let (d10, _, _) = debit(&mut p, &mut t, 10);
    let (d15, _, _) = debit(&mut p, &mut l, 15);
    for i in 0..RECEIPT_WINDOW as u64 {
        let (sw, _) = send(
            &mut q,
            &Command::BeginReceive { payer: CardSerial::from_u64(90_000 + i), amount: Amount(1), payer_sequence: 0 },
        );
        assert_eq!(sw, 0x9000);
    }
    for (c, f) in [(&p, &files[0]), (&q, &files[1]), (&t, &files[2]), (&l, &files[3])] {
        save(c, f);
    }

    // The cards moved since reconciliation 1: nothing is signed until a reconciliation shows the debit.
    // (Version 1 signed this refund: it checked only that both cards exist.)
    let log_before = count(&s, "SELECT count(*) FROM audit_log");
    refused(&s, &d40.args("--refund"), 2, "reconciliation 1 (the newest", "keyroll reconcile --cards");
    assert_eq!(count(&s, "SELECT count(*) FROM audit_log"), log_before);

    // L is lost for good; the second reconciliation reads P, Q and T.
    std::fs::remove_file(&files[3]).unwrap();
    let text = s.ok(&["reconcile", "--cards", "cards"]);
    // Item 2: the text output names each resolution it proves safe as the command line to run.
    let printed: Vec<&str> = text.lines().map(str::trim).filter(|l| l.starts_with("keyroll policy resolve")).collect();
    let want =
        [format!("keyroll {}", d40.args("--refund").join(" ")), format!("keyroll {}", d10.args("--void").join(" "))];
    assert_eq!(printed, want, "{text}");
    assert!(text.contains("issuer resolutions (2)"), "{text}");
    let log_before = count(&s, "SELECT count(*) FROM audit_log");
    let policies_before = count(&s, "SELECT count(*) FROM policies");

    // A wrong refund: the payee credited d25. Version 1 signed it and 25 units were created.
    refused(&s, &d25.args("--refund"), 1, "would create 25 of value", "--credited");
    // The receipt of d10 is still open at T: the cards resolve it, not the issuer.
    refused(&s, &d10.args("--refund"), 1, "still open at the payee", "--void");
    refused(&s, &d10.args("--credited"), 1, "still open at the payee", "keyroll settle");
    // A void of d25, which the payee credited: nothing to void.
    refused(&s, &d25.args("--void"), 1, "nothing to void", "--credited");
    // d40 was never credited: closing it as credited would destroy value.
    refused(&s, &d40.args("--credited"), 1, "would destroy 40 of value", "--refund");
    // Fields that do not name the debit reconciliation 2 shows.
    let wrong = Debit { amount: 41, ..d40 };
    refused(&s, &wrong.args("--refund"), 2, "reconciliation 2 shows debit", "copy the fields");
    let d40 = Debit { amount: 40, ..wrong };
    // L was not read: nothing proves what it did with the receipt.
    refused(&s, &d15.args("--refund"), 1, "cannot prove", "--against-reconciliation none");
    // The override needs a reason, and never goes against a proof of the opposite.
    let mut bare = d15.args("--refund");
    bare.extend(["--against-reconciliation".into(), "none".into()]);
    refused(&s, &bare, 2, "needs a reason", "--reason");
    let mut forced = d25.args("--refund");
    forced.extend(["--against-reconciliation", "none", "--reason", "payee says so"].map(String::from));
    refused(&s, &forced, 1, "would create 25 of value", "--credited");
    // Nothing above signed or logged anything.
    assert_eq!(count(&s, "SELECT count(*) FROM audit_log"), log_before);
    assert_eq!(count(&s, "SELECT count(*) FROM policies"), policies_before);

    // What reconciliation 2 proves is signed, and says what it was checked against.
    let cmd: Vec<String> = printed[0].split_whitespace().skip(1).map(String::from).collect();
    let out = resolved(&s, &cmd);
    assert_eq!(out["checked"], serde_json::json!({"reconciliation": 2, "state": "never-credited"}), "{out}");
    let out = resolved(&s, &d25.args("--credited"));
    assert_eq!(out["checked"], serde_json::json!({"reconciliation": 2, "state": "credited"}), "{out}");
    // A void of d10's open receipt moves no value: the check accepts it.
    let cmd: Vec<String> = printed[1].split_whitespace().skip(1).map(String::from).collect();
    let out = resolved(&s, &cmd);
    assert_eq!(out["checked"], serde_json::json!({"reconciliation": 2, "state": "open"}), "{out}");
    // The lost card: the issuer's override, its reason in the signed audit log.
    let mut lost = d15.args("--refund");
    lost.extend(["--against-reconciliation", "none", "--reason", "card L destroyed, report 118"].map(String::from));
    let out = resolved(&s, &lost);
    assert_eq!(out["checked"]["override_reason"], "card L destroyed, report 118", "{out}");
    assert_eq!(out["checked"]["reconciliation"], 2, "{out}");
    let detail = s.sql("SELECT detail FROM audit_log WHERE action = 'policy resolve' ORDER BY id DESC LIMIT 1");
    assert!(detail.contains("card L destroyed, report 118"), "{detail}");
    assert_eq!(count(&s, "SELECT count(*) FROM audit_log WHERE action = 'policy resolve'"), 4);
    s.ok(&["audit", "log"]);
    // Already carried: nothing new, whatever reconciliation says now.
    assert_eq!(resolved(&s, &d40.args("--refund"))["already_carried"], true);

    // Spread: P is refunded 40 and 15, d25 closed; settling P with T resolves d10 by the cards.
    s.ok(&["policy", "publish", "--out", "policy.bin"]);
    let spec = |i: usize| file_reader(&files[i]);
    s.ok(&["settle", "--payer", &spec(0), "--payee", &spec(1), "--amount", "0", "--policy", "policy.bin"]);
    s.ok(&["settle", "--payer", &spec(0), "--payee", &spec(2), "--amount", "0"]);
    let v = s.json(&["reconcile", "--cards", "cards"]);
    assert_eq!(
        (v["issued"].as_u64(), v["balances"].as_u64(), v["in_flight"].as_u64(), v["unaccounted"].as_i64()),
        (Some(600), Some(600), Some(0), Some(0)),
        "{v}"
    );
    let p = keyroll::card::CardState::decode(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(p.balance, Amount(200 - 90 + 40 + 15 + 10), "refunded once each");

    // A writer to the database cannot forge the proof: the recorded debits are bound to the signed
    // log (state scope), so an edited one is tampering, and no custodian signs on it.
    s.sql("UPDATE reconciliation_debits SET state = 'never-credited' WHERE state = 'credited'");
    let before = s.dump();
    let o = s.run(&d25.args("--refund").iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(s.dump(), before, "nothing signed");
    let o = s.run(&["audit", "log"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("reconciliation_debits row"), "{}", stderr(&o));
}

both_engines!(with_no_reconciliation_nothing_is_resolved_but_by_the_override);
fn with_no_reconciliation_nothing_is_resolved_but_by_the_override(s: Scratch) {
    let files = s.init_with_cards("symmetric", 2);
    let (mut p, mut q) = (load(&files[0]), load(&files[1]));
    let (d, _, _) = debit(&mut p, &mut q, 30);
    save(&p, &files[0]);
    save(&q, &files[1]);
    let before = s.dump();
    refused(&s, &d.args("--refund"), 2, "no reconciliation is recorded", "keyroll reconcile --cards");
    let o = s.run(&["--json", "policy", "resolve", "--payer", &d.payer, "--payer-sequence", "1", "--payee", &d.payee]);
    assert_eq!(o.status.code(), Some(2), "clap: {}", stderr(&o));
    let mut j = vec!["--json".to_string()];
    j.extend(d.args("--refund"));
    let o = s.run(&j.iter().map(String::as_str).collect::<Vec<_>>());
    let doc: serde_json::Value = serde_json::from_str(&stderr(&o)).expect("a JSON error document on stderr");
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(doc["error"]["code"], "resolution-refused", "{doc} {}", stderr(&o));
    assert_eq!(s.dump(), before, "a refusal changes nothing");
    let mut lost = d.args("--refund");
    lost.extend(["--against-reconciliation", "none", "--reason", "payee card lost"].map(String::from));
    let out = resolved(&s, &lost);
    assert_eq!(
        out["checked"],
        serde_json::json!({"reconciliation": null, "state": null, "override_reason": "payee card lost"})
    );
    s.ok(&["audit", "log"]);
}
