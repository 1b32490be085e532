//! Issue 13 (session 5): EXPORT LOG over the card interface. Version 1 of `reconcile` read card *files*
//! only (`CardState::export_log` on the file's state): a card reached through a reader could not be
//! reconciled at all, and an export carried no challenge, so one recorded earlier could stand in for a
//! current one. Now the card answers EXPORT LOG (`80 44 00 00`, the asker's challenge) with its log
//! MAC'd over the challenge and every field, served through GET RESPONSE; `card export-log` collects it
//! from any reader into a file, and `reconcile --export FILE --challenge HEX` holds every file to this
//! round's challenge.

use super::value_attacks::send;
use super::value_resolutions::{fresh, stuck_debit};
use crate::support::cli::{Scratch, file_reader, stderr};
use crate::support::*;
use keyroll::crypto::Secret16;
use keyroll::domain::*;
use keyroll::protocol::SmartCard;
use keyroll::protocol::codec::Wire;
use keyroll::protocol::command::Command;
use keyroll::protocol::info::{MAX_EXCEPTIONS, MAX_PENDING};
use keyroll::protocol::ledger::{CardLogExport, MAX_EXPORT_ENTRIES};
use keyroll::rollout::reconcile;
use keyroll::terminal::{ExportError, export_log};
use keyroll::transport::in_process::InProcessChannel;
use keyroll::transport::{CardChannel, TransportError};

const CHALLENGE: [u8; 16] = [0x3C; 16];

fn log_key(card: &TestCard) -> Secret16 {
    reconcile::log_key(&Secret16::new(LOG_MASTER), &card.state().serial.unwrap())
}

/// Raw bytes in, (data, SW) out.
fn apdu(card: &mut TestCard, bytes: &[u8]) -> (Vec<u8>, u16) {
    let r = card.process(bytes).expect("card powered");
    let (d, sw) = r.split_at(r.len() - 2);
    (d.to_vec(), u16::from_be_bytes([sw[0], sw[1]]))
}

/// A payer whose log is as full as a card keeps it and whose open debits fill both lists (72): the
/// longest export there is.
fn full_card() -> (TestCard, TestCard) {
    let mut payer = fresh(1, 10_000);
    let mut payee = fresh(2, 0);
    for i in 0..(MAX_PENDING + MAX_EXCEPTIONS) as u64 {
        stuck_debit(&mut payer, &mut payee, 1 + i);
    }
    assert_eq!(payer.state().pending_out.len() + payer.state().exceptions.len(), 72);
    assert_eq!(payer.state().log.len(), MAX_EXPORT_ENTRIES);
    (payer, payee)
}

/// The longest export, asked with a short Le, comes back in 256-byte parts through 61XX and GET
/// RESPONSE (ISO/IEC 7816-4 response chaining), reassembles to exactly what the card state exports,
/// verifies under the card's log key and names the challenge; the card's bytes do not change.
#[test]
fn a_full_log_is_exported_through_get_response_and_verifies() {
    let (mut payer, _) = full_card();
    let before = persisted(&payer);
    let mut cmd = vec![0x80, 0x44, 0x00, 0x00, 0x10];
    cmd.extend_from_slice(&CHALLENGE);
    cmd.push(0x00);
    let (mut data, mut sw) = apdu(&mut payer, &cmd);
    let mut rounds = 0;
    while sw >> 8 == 0x61 {
        assert_eq!(data.len() % 256, 0, "every part but the last is 256 bytes");
        let (more, next) = apdu(&mut payer, &[0x00, 0xC0, 0x00, 0x00, (sw & 0xFF) as u8]);
        data.extend_from_slice(&more);
        sw = next;
        rounds += 1;
    }
    assert_eq!(sw, 0x9000);
    assert_eq!(data.len(), CardLogExport::MAX_WIRE_LEN);
    assert_eq!(rounds, CardLogExport::MAX_WIRE_LEN / 256, "2,695 bytes: 10 GET RESPONSEs after the first part");
    let e = CardLogExport::from_wire(&data, ()).unwrap();
    assert_eq!(e, payer.state().export_log(&CHALLENGE).unwrap());
    assert_eq!((e.entries.len(), e.open_debits.len(), e.challenge), (MAX_EXPORT_ENTRIES, 72, CHALLENGE));
    assert!(e.dropped > 0, "the log is bounded; totals carry what it dropped");
    reconcile::check_export(&e, &log_key(&payer)).unwrap();
    // Another key does not verify it, nor does an edit.
    assert!(reconcile::check_export(&e, &Secret16::new([1; 16])).is_err());
    let mut edited = e.clone();
    edited.open_debits[71].amount = Amount(1);
    assert!(reconcile::check_export(&edited, &log_key(&payer)).is_err());
    assert_eq!(persisted(&payer), before, "EXPORT LOG writes nothing");
}

/// A card pulled mid-export (power lost between two GET RESPONSEs) changes nothing: the rest of the
/// answer was session state, GET RESPONSE after power-up answers 6985, and the next export is whole.
/// Over a channel that loses the card mid-answer the terminal returns an error and no export.
#[test]
fn a_card_pulled_mid_export_changes_nothing_and_yields_no_export() {
    let (mut payer, _) = full_card();
    let before = persisted(&payer);
    let mut cmd = vec![0x80, 0x44, 0x00, 0x00, 0x10];
    cmd.extend_from_slice(&CHALLENGE);
    cmd.push(0x00);
    let (_, sw) = apdu(&mut payer, &cmd);
    assert_eq!(sw, 0x6100);
    payer.power_off();
    payer.power_on();
    select(&mut payer);
    let (_, sw) = apdu(&mut payer, &[0x00, 0xC0, 0x00, 0x00, 0x00]);
    assert_eq!(sw, 0x6985, "nothing left to serve after the power cut");
    assert_eq!(persisted(&payer), before);

    /// A reader whose card leaves after `left` APDUs.
    struct Pulled<'a> {
        inner: InProcessChannel<'a>,
        left: usize,
    }
    impl CardChannel for Pulled<'_> {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
            if self.left == 0 {
                return Err(TransportError::CardRemoved { reader: "pulled".into() });
            }
            self.left -= 1;
            self.inner.transmit(apdu)
        }
        fn name(&self) -> String {
            "pulled".into()
        }
    }
    for left in [1, 2, 5] {
        let mut ch = Pulled { inner: InProcessChannel::new(&mut payer, "payer"), left };
        let e = export_log(&mut ch, &CHALLENGE, false).unwrap_err();
        assert!(matches!(e, ExportError::Transport { .. }), "{e}");
    }
    assert_eq!(persisted(&payer), before);
    let mut ch = InProcessChannel::new(&mut payer, "payer");
    let e = export_log(&mut ch, &CHALLENGE, false).unwrap();
    reconcile::check_export(&e, &log_key(&payer)).unwrap();
}

/// A card (or anything in the reader) that replays an EXPORT LOG answer recorded for another challenge
/// is refused by the terminal: the answer must name the challenge it was sent.
#[test]
fn an_export_answering_another_challenge_is_refused_by_the_terminal() {
    let mut payer = fresh(1, 100);
    let mut payee = fresh(2, 0);
    stuck_debit(&mut payer, &mut payee, 40);
    let (_, old) = send(&mut payer, &Command::ExportLog { challenge: [1; 16] });

    /// Answers every EXPORT LOG with the recorded one.
    struct Replay {
        old: Vec<u8>,
    }
    impl CardChannel for Replay {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
            let mut r = if apdu[1] == 0x44 { self.old.clone() } else { vec![] };
            r.extend_from_slice(&[0x90, 0x00]);
            Ok(r)
        }
        fn name(&self) -> String {
            "replay".into()
        }
    }
    let e = export_log(&mut Replay { old }, &[2; 16], false).unwrap_err();
    assert!(matches!(e, ExportError::WrongChallenge { .. }), "{e}");
}

/// Before LOCK a card has no log to export (6985); an issued card without a log key answers 6A88.
#[test]
fn export_log_refusals_have_their_own_status() {
    let mut blank = blank_card();
    select(&mut blank);
    let before = persisted(&blank);
    assert_eq!(send(&mut blank, &Command::ExportLog { challenge: CHALLENGE }).0, 0x6985);
    assert_eq!(persisted(&blank), before);
    let mut state = card(5, Profile::Symmetric, 1, 1, 5, 10).state().clone();
    state.log_key = None;
    let storage = keyroll::card::storage::TearingStorage::new(keyroll::card::storage::MemoryStorage::new());
    let mut keyless: TestCard = keyroll::card::Card::create(storage, state).unwrap();
    select(&mut keyless);
    assert_eq!(send(&mut keyless, &Command::ExportLog { challenge: CHALLENGE }).0, 0x6A88);
}

/// An issuer with two personalised symmetric cards of 100 each; 30 settled from the first to the
/// second.
fn issuer() -> (Scratch, Vec<std::path::PathBuf>) {
    let s = Scratch::new();
    let cards = s.init_with_cards("symmetric", 2);
    let spec = |i: usize| file_reader(&cards[i]);
    s.ok(&["settle", "--payer", &spec(0), "--payee", &spec(1), "--amount", "30"]);
    (s, cards)
}

fn challenge(s: &Scratch) -> String {
    let v = s.json(&["card", "challenge"]);
    let c = v["challenge"].as_str().unwrap().to_string();
    assert_eq!(c.len(), 32);
    c
}

/// Through the binary: `card export-log` (here from card files, `file:PATH`; over PC/SC in
/// `pcsc_export`) writes each card's export; `reconcile --export … --challenge` accounts for them. An
/// export of an earlier round (another challenge) is refused before anything is recorded; an edited
/// export fails its MAC and is flagged (exit 1); an existing output file is never replaced without
/// --force, and a card file never.
#[test]
fn exports_collected_by_a_terminal_reconcile_and_stale_or_edited_ones_are_refused() {
    let (s, cards) = issuer();
    let c1 = challenge(&s);
    let export = |c: &str, card: usize, out: &str| {
        s.json(&["card", "export-log", "--reader", &file_reader(&cards[card]), "--challenge", c, "--out", out])
    };
    let v = export(&c1, 0, "a1.json");
    assert_eq!(
        (v["balance"].as_u64(), v["entries"].as_u64(), v["challenge"].as_str()),
        (Some(70), Some(1), Some(c1.as_str())),
        "{v}"
    );
    export(&c1, 1, "b1.json");
    let r = s.json(&["reconcile", "--export", "a1.json", "--export", "b1.json", "--challenge", &c1]);
    assert_eq!(
        (r["cards"].as_u64(), r["issued"].as_u64(), r["balances"].as_u64(), r["unaccounted"].as_i64()),
        (Some(2), Some(200), Some(200), Some(0)),
        "{r}"
    );
    let recorded = s.sql("SELECT count(*) FROM reconciliations");

    // A new round: the card pays again, and a hostile terminal hands in the old round's export of it
    // (balance 70, before the payment) with the new round's challenge beside it: refused, nothing recorded.
    s.ok(&["settle", "--payer", &file_reader(&cards[0]), "--payee", &file_reader(&cards[1]), "--amount", "5"]);
    let c2 = challenge(&s);
    export(&c2, 1, "b2.json");
    let o = s.run(&["reconcile", "--export", "a1.json", "--export", "b2.json", "--challenge", &c2]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("stale") && err.contains("hint:"), "{err}");
    assert_eq!(s.sql("SELECT count(*) FROM reconciliations"), recorded, "a refused run records nothing");
    // The same with the challenge edited in the old file: the MAC covers it, so it is flagged (exit 1).
    let old = std::fs::read_to_string(s.path("a1.json")).unwrap();
    std::fs::write(s.path("a2-forged.json"), old.replace(&c1, &c2)).unwrap();
    let o = s.run(&["--json", "reconcile", "--export", "a2-forged.json", "--export", "b2.json", "--challenge", &c2]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("bad-export"), "{}", String::from_utf8_lossy(&o.stdout));
    // That run was recorded (flagged), which closed round 2. An edited balance in round 3: flagged the
    // same way.
    let c3 = challenge(&s);
    let a3 = export(&c3, 0, "a3.json");
    assert_eq!(a3["balance"].as_u64(), Some(65));
    export(&c3, 1, "b3.json");
    let text = std::fs::read_to_string(s.path("a3.json")).unwrap();
    std::fs::write(s.path("a3-rich.json"), text.replace("\"balance\": 65", "\"balance\": 99")).unwrap();
    let o = s.run(&["--json", "reconcile", "--export", "a3-rich.json", "--export", "b3.json", "--challenge", &c3]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // The genuine pair of round 4 accounts.
    let c4 = challenge(&s);
    export(&c4, 0, "a4.json");
    export(&c4, 1, "b4.json");
    let r = s.json(&["reconcile", "--export", "a4.json", "--export", "b4.json", "--challenge", &c4]);
    assert_eq!((r["balances"].as_u64(), r["unaccounted"].as_i64()), (Some(200), Some(0)), "{r}");
    // A challenge this back office did not draw (here: made up by the terminal, which then collected
    // exports answering it), and a round already reconciled with its own exports: refused, nothing
    // recorded.
    let made_up = "00112233445566778899aabbccddeeff";
    export(made_up, 0, "a-made-up.json");
    export(made_up, 1, "b-made-up.json");
    let recorded = s.sql("SELECT count(*) FROM reconciliations");
    for (files, c, why) in [
        (["a-made-up.json", "b-made-up.json"], made_up, "not drawn by this back office"),
        (["a4.json", "b4.json"], c4.as_str(), "recorded since"),
    ] {
        let o = s.run(&["reconcile", "--export", files[0], "--export", files[1], "--challenge", c]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(why) && stderr(&o).contains("hint:"), "{}", stderr(&o));
    }
    assert_eq!(s.sql("SELECT count(*) FROM reconciliations"), recorded);
    // Outputs: an existing export is kept without --force; a card file is never an output.
    let kept = std::fs::read(s.path("a4.json")).unwrap();
    let o = s.run(&["card", "export-log", "--reader", &file_reader(&cards[0]), "--challenge", &c1, "--out", "a4.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("hint:"), "{}", stderr(&o));
    assert_eq!(std::fs::read(s.path("a4.json")).unwrap(), kept);
    let card_bytes = std::fs::read(&cards[1]).unwrap();
    let o = s.run(&[
        "card",
        "export-log",
        "--reader",
        &file_reader(&cards[0]),
        "--challenge",
        &c1,
        "--out",
        cards[1].to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(&cards[1]).unwrap(), card_bytes);
    // A malformed challenge, and --export without --challenge: usage errors with hints.
    let o =
        s.run(&["card", "export-log", "--reader", &file_reader(&cards[0]), "--challenge", "abc", "--out", "x.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("hint:") && !s.path("x.json").exists());
    let o = s.run(&["reconcile", "--export", "a4.json"]);
    assert_eq!(o.status.code(), Some(2));
}
