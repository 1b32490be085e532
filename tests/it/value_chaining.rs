//! Issue 13 (session 5, item 3): certified cards settle through readers without extended-length APDUs.
//! The certified CREDIT carries the payer's certificate (577 bytes of data) and the terminal read that
//! certificate with one extended-Le GET CARD INFO; on a reader that takes short APDUs only, both failed
//! and certified cards could not settle there at all. Now the terminal falls back to the short GET CARD
//! INFO with GET RESPONSE and to an ISO/IEC 7816-4 command chain (CLA b5), which the card accepts for
//! CREDIT.

use crate::support::*;
use keyroll::domain::*;
use keyroll::terminal::{SettleOptions, settle};
use keyroll::transport::in_process::InProcessChannel;
use keyroll::transport::{CardChannel, TransportError};

/// A reader that transmits short APDUs only (ISO/IEC 7816-4 §5.1: Lc ≤ 255, Le ≤ 256) and refuses an
/// extended one, as a reader without extended-length support does; it counts the chained CREDIT
/// segments it passes.
struct ShortOnly<'a> {
    inner: InProcessChannel<'a>,
    refused: usize,
    chained_credit: usize,
}

/// Whether `apdu` is an extended-length one: a zero byte after the header followed by two length bytes
/// (ISO/IEC 7816-4 §5.1 cases 2E, 3E, 4E).
fn is_extended(apdu: &[u8]) -> bool {
    apdu.len() >= 7 && apdu[4] == 0
}

impl CardChannel for ShortOnly<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        if is_extended(apdu) {
            self.refused += 1;
            return Err(TransportError::Io("the reader does not support extended-length APDUs".into()));
        }
        if apdu[0] == 0x90 && apdu[1] == 0x34 {
            self.chained_credit += 1;
        }
        self.inner.transmit(apdu)
    }
    fn name(&self) -> String {
        self.inner.name()
    }
}

#[test]
fn certified_cards_settle_through_a_reader_without_extended_length() {
    let ca = TestCa::new("Chaining Test CA");
    let mut payer = pk_card(1, Profile::PublicKey, 1, 0, 5, 100, &ca, &ca.root);
    let mut payee = pk_card(2, Profile::Hybrid, 1, 1, 5, 0, &ca, &ca.root);
    let mut a = ShortOnly { inner: InProcessChannel::new(&mut payer, "payer"), refused: 0, chained_credit: 0 };
    let mut b = ShortOnly { inner: InProcessChannel::new(&mut payee, "payee"), refused: 0, chained_credit: 0 };
    let r = settle(&mut a, &mut b, Amount(25), &SettleOptions::default()).expect("settles with short APDUs only");
    assert_eq!(r.amount, Amount(25));
    assert_eq!((a.refused, b.refused), (1, 1), "one extended attempt each: GET CARD INFO, signed CREDIT");
    assert!(b.chained_credit >= 2, "the signed CREDIT went as a command chain");
    // 9 APDUs with extended length; here the certificate takes GET RESPONSEs and CREDIT a chain.
    assert!(r.apdus <= 13, "{} APDUs", r.apdus);
    drop((a, b));
    assert_eq!((payer.state().balance, payee.state().balance), (Amount(75), Amount(25)));
    assert!(payer.state().pending_out.is_empty(), "confirmed");
    // The same pair through readers that take extended length: 9 APDUs, as before.
    let mut a = InProcessChannel::new(&mut payer, "payer");
    let mut b = InProcessChannel::new(&mut payee, "payee");
    let r = settle(&mut a, &mut b, Amount(5), &SettleOptions::default()).unwrap();
    assert!(r.apdus <= 9, "{} APDUs", r.apdus);
}

/// Issue 15: a public-key roll reads each card's certificate with one extended-Le GET CARD INFO and
/// sends REQUEST UPDATE PERMISSION, GET TRANSFER KEY (a certificate in, an envelope out) and UPDATE
/// TRANSFER KEY (the envelope in) as one extended APDU each: 22 APDUs became 13. Through readers that
/// take short APDUs only, each of those falls back to the short form (chains, GET RESPONSE), and the
/// cards roll and settle the same.
#[test]
fn a_public_key_roll_reads_certificates_in_one_apdu_and_falls_back_on_short_readers() {
    let ca = TestCa::new("Chaining Test CA");
    let pair = || {
        (
            pk_card(1, Profile::Hybrid, 1, 1, 5, 1_000, &ca, &ca.root),
            pk_card(2, Profile::Hybrid, 2, 2, 5, 0, &ca, &ca.root),
        )
    };
    let (mut payer, mut payee) = pair();
    let r = settle(
        &mut InProcessChannel::new(&mut payer, "payer"),
        &mut InProcessChannel::new(&mut payee, "payee"),
        Amount(10),
        &SettleOptions::default(),
    )
    .unwrap();
    assert_eq!(r.key_roll, keyroll::terminal::KeyRoll::PublicKey);
    assert!(r.apdus <= 13, "{} APDUs", r.apdus);

    let (mut payer, mut payee) = pair();
    let mut a = ShortOnly { inner: InProcessChannel::new(&mut payer, "payer"), refused: 0, chained_credit: 0 };
    let mut b = ShortOnly { inner: InProcessChannel::new(&mut payee, "payee"), refused: 0, chained_credit: 0 };
    let short = settle(&mut a, &mut b, Amount(10), &SettleOptions::default()).expect("rolls with short APDUs only");
    assert_eq!(short.key_roll, keyroll::terminal::KeyRoll::PublicKey);
    // Each reader refuses the first extended APDU (the payer's GET CARD INFO for its certificate, the
    // payee's); the terminal remembers it, so REQUEST UPDATE PERMISSION, GET TRANSFER KEY and the
    // signed CREDIT go short straight away (it asked again at each of them: payer 2, payee 3).
    assert_eq!((a.refused, b.refused), (1, 1));
    assert!(short.apdus > r.apdus, "{} APDUs through short readers, {} with extended length", short.apdus, r.apdus);
    drop((a, b));
    assert_eq!(payer.state().selected_transfer_key_id, Some(TransferKeyId(2)));
    assert_eq!((payer.state().balance, payee.state().balance), (Amount(990), Amount(10)));
}

/// What a reader does to the one extended-length UPDATE TRANSFER KEY (INS 24) of a public-key roll.
#[derive(Clone, Copy, PartialEq, Debug)]
enum UpdateFate {
    /// The reader refuses it: the card never sees it.
    Refused,
    /// The card runs it, and its answer is lost on the way back.
    AnswerLost,
}

/// A reader that passes every APDU but the extended UPDATE TRANSFER KEY, whose fate it decides once.
struct LosesTheInstall<'a> {
    inner: InProcessChannel<'a>,
    fate: UpdateFate,
    hit: usize,
}

impl CardChannel for LosesTheInstall<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        if is_extended(apdu) && apdu[1] == 0x24 && self.hit == 0 {
            self.hit += 1;
            if self.fate == UpdateFate::AnswerLost {
                self.inner.transmit(apdu)?;
            }
            return Err(TransportError::Io("the reader lost the exchange".into()));
        }
        self.inner.transmit(apdu)
    }
    fn name(&self) -> String {
        self.inner.name()
    }
}

/// Issue 15: UPDATE TRANSFER KEY installs the key and takes the card's challenge, so when its one
/// extended APDU fails in transport the terminal cannot simply repeat it and trust the answer. The
/// command goes again as a short chain: a card that never saw the first attempt installs the key from
/// it; a card that ran the first attempt refuses the repeat (6982, the challenge is gone) and GET CARD
/// INFO shows the key in. Either way the roll completes once and value moves; before, the lost answer
/// was reported as the card refusing the key it had installed.
#[test]
fn an_install_whose_extended_apdu_failed_is_judged_by_the_card_not_repeated_blindly() {
    let ca = TestCa::new("Chaining Test CA");
    for fate in [UpdateFate::Refused, UpdateFate::AnswerLost] {
        let mut payer = pk_card(1, Profile::Hybrid, 1, 1, 5, 1_000, &ca, &ca.root);
        let mut payee = pk_card(2, Profile::Hybrid, 2, 2, 5, 0, &ca, &ca.root);
        let mut a = LosesTheInstall { inner: InProcessChannel::new(&mut payer, "payer"), fate, hit: 0 };
        let mut b = InProcessChannel::new(&mut payee, "payee");
        let r =
            settle(&mut a, &mut b, Amount(10), &SettleOptions::default()).unwrap_or_else(|e| panic!("{fate:?}: {e}"));
        assert_eq!(a.hit, 1, "{fate:?}: the extended install was tried once");
        assert_eq!(r.key_roll, keyroll::terminal::KeyRoll::PublicKey, "{fate:?}");
        drop((a, b));
        assert_eq!(payer.state().selected_transfer_key_id, Some(TransferKeyId(2)), "{fate:?}");
        assert_eq!((payer.state().balance, payee.state().balance), (Amount(990), Amount(10)), "{fate:?}");
    }
}

/// The verbose trace describes every APDU the terminal sent, including the extended GET CARD INFO that
/// a short-only reader refused before the terminal fell back to a short one with GET RESPONSE. Until
/// session 9 a failed exchange left no line, so `settle --verbose` through such a reader showed fewer
/// APDUs than went out. Lines carry headers, lengths and status, never data bytes.
#[test]
fn the_trace_shows_an_attempt_whose_exchange_failed() {
    use keyroll::protocol::command::Command;
    use keyroll::transport::{Trace, exchange, exchange_extended};
    let ca = TestCa::new("Chaining Test CA");
    let mut card = pk_card(1, Profile::PublicKey, 1, 0, 5, 100, &ca, &ca.root);
    let mut reader = ShortOnly { inner: InProcessChannel::new(&mut card, "short-only"), refused: 0, chained_credit: 0 };
    let mut trace = Trace::kept();
    let cmd = Command::GetCardInfo { certificate: true };
    let mut apdu = cmd.to_apdu();
    apdu.le = Some(65_536);
    assert!(exchange_extended(&mut reader, &mut trace, &apdu).is_err());
    let info = exchange(&mut reader, &mut trace, &cmd).expect("the short GET CARD INFO");
    assert_eq!(reader.refused, 1);
    let lines = trace.lines();
    assert!(lines.len() >= 2, "{lines:#?}");
    assert!(lines[0].contains(&format!("{:02X} {:02X} 00 00 Lc=0", apdu.cla, apdu.ins)), "{}", lines[0]);
    assert!(lines[0].contains("failed (I/O error talking to the card: the reader does not support"), "{}", lines[0]);
    assert!(lines[1..].iter().all(|l| l.contains("SW=")), "{lines:#?}");
    // One line per APDU sent; the count is of the APDUs the reader delivered.
    assert_eq!(trace.apdus, lines.len() - 1);
    // No data bytes: the certificate's DER appears in no line.
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
    assert!(lines.iter().all(|l| !l.contains(&hex(&info.data[..8]))), "{lines:#?}");
    // A trace that is not kept keeps nothing.
    let mut quiet = Trace::verbose(false);
    assert!(exchange_extended(&mut reader, &mut quiet, &apdu).is_err());
    assert!(quiet.lines().is_empty());
}
