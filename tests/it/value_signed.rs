//! Issue 13 item 3 (session 4): certified cards sign their value. Version 1's value token was only a MAC
//! under the generation's shared transfer key, so "one extracted card mints into every card of its
//! generation", naming whatever payer it likes. A certified payer now also signs each token with its
//! card key (the MAC stays, claim 1), and a certified payee credits only a token its payer signed and
//! certified (checked at the payee's clock floor): a certified card holding the generation key cannot
//! forge another certified card's debit. Symmetric payees still cannot tell (docs/protocol.md §5.4).

use super::value_attacks::{reconcile_cards, send};
use crate::support::*;
use keyroll::crypto::card_key::CardKeyPair;
use keyroll::crypto::mac;
use keyroll::domain::*;
use keyroll::protocol::codec::Wire;
use keyroll::protocol::command::{Command, ReceiptRef};
use keyroll::protocol::response::{DebitToken, ReceiveRequest};
use keyroll::terminal::{SettleError, SettleOptions, settle};
use keyroll::transport::in_process::InProcessChannel;

const SECURITY_STATUS_NOT_SATISFIED: u16 = 0x6982;

fn ok<T: Wire<Context = ()>>(card: &mut TestCard, c: &Command) -> T {
    let (sw, data) = send(card, c);
    assert_eq!(sw, 0x9000, "{c:?}");
    T::from_wire(&data, ()).expect("well-formed answer")
}

fn certified(n: u64, profile: Profile, balance: u64, ca: &TestCa) -> TestCard {
    let uk = if profile.has_update_key() { 1 } else { 0 };
    let mut c = pk_card(n, profile, 1, uk, 5, balance, ca, &ca.root);
    select(&mut c);
    c
}

fn serial_of(c: &TestCard) -> CardSerial {
    c.state().serial.unwrap()
}

/// The fields a value token and a value signature cover, as the card lays them out.
fn token_parts(payer: CardSerial, payee: CardSerial, amount: u64, r: &ReceiveRequest, payer_seq: u32) -> Vec<Vec<u8>> {
    let mut seqs = [0u8; 8];
    seqs[..4].copy_from_slice(&r.payee_sequence.to_be_bytes());
    seqs[4..].copy_from_slice(&payer_seq.to_be_bytes());
    vec![
        payer.0.to_vec(),
        payee.0.to_vec(),
        amount.to_be_bytes().to_vec(),
        r.nonce.to_vec(),
        seqs.to_vec(),
        r.transfer_key_id.0.to_be_bytes().to_vec(),
    ]
}

/// What a card holding the generation's transfer key computes: a genuine-looking token.
fn forged_token(payer: CardSerial, payee: CardSerial, amount: u64, r: &ReceiveRequest, payer_seq: u32) -> [u8; 16] {
    let parts = token_parts(payer, payee, amount, r, payer_seq);
    let mut all: Vec<&[u8]> = vec![b"keyroll value token v2"];
    all.extend(parts.iter().map(Vec::as_slice));
    mac::cmac(&mac::value_mac_key(&transfer_key(1)), &all)
}

/// The thief signs with its own card key (extracted from its own card), as the card would.
fn thief_signature(thief: &TestCard, parts: &[Vec<u8>]) -> [u8; 64] {
    let key = CardKeyPair::from_bytes(thief.state().card_private_key.as_ref().unwrap().expose()).unwrap();
    let mut all: Vec<&[u8]> = vec![keyroll::card::VALUE_SIGNATURE_LABEL];
    all.extend(parts.iter().map(Vec::as_slice));
    key.key_pair().sign(&all).unwrap().to_p1363()
}

fn settle_pair(
    payer: &mut TestCard,
    payee: &mut TestCard,
    amount: u64,
) -> Result<keyroll::terminal::SettlementReport, SettleError> {
    let mut a = InProcessChannel::new(payer, "payer");
    let mut b = InProcessChannel::new(payee, "payee");
    settle(&mut a, &mut b, Amount(amount), &SettleOptions::default())
}

/// Version 1: "One extracted card mints into every card of its generation: value tokens are MACs under
/// the generation's shared transfer key, and the attacker names whatever payer serial it likes." A
/// certified thief (its own card's secrets and the generation key) tries every way to credit a certified
/// payee in the name of another certified card: unsigned, signed by itself with its own certificate,
/// signed by itself with the victim's certificate. Each is refused and the payee is unchanged; an honest
/// settlement between the same certified cards still works in at most 9 APDUs.
#[test]
fn a_certified_card_cannot_forge_another_certified_cards_debit() {
    let ca = TestCa::new("value signing");
    let thief = certified(9, Profile::PublicKey, 0, &ca);
    let mut victim = certified(1, Profile::PublicKey, 100, &ca);
    let mut payee = certified(2, Profile::Hybrid, 0, &ca);
    let (v, p) = (serial_of(&victim), serial_of(&payee));
    let r: ReceiveRequest = ok(&mut payee, &Command::BeginReceive { payer: v, amount: Amount(500), payer_sequence: 0 });
    let receipt =
        ReceiptRef { payer: v, amount: Amount(500), receipt: r.payee_sequence, transfer_key_id: r.transfer_key_id };
    let token = forged_token(v, p, 500, &r, 77);
    let before = persisted(&payee);

    // Unsigned, as a symmetric payer's token: a certified payee takes no unsigned value.
    let (sw, _) = send(&mut payee, &Command::Credit { receipt, payer_sequence: 77, token });
    assert_eq!(sw, SECURITY_STATUS_NOT_SATISFIED);
    // Signed by the thief, with the thief's own certificate: the certificate names another card.
    let parts = token_parts(v, p, 500, &r, 77);
    let signature = thief_signature(&thief, &parts);
    let thief_cert = thief.state().certificate.clone().unwrap();
    let victim_cert = victim.state().certificate.clone().unwrap();
    let signed =
        |signature, certificate| Command::CreditSigned { receipt, payer_sequence: 77, token, signature, certificate };
    assert_eq!(send(&mut payee, &signed(signature, thief_cert)).0, SECURITY_STATUS_NOT_SATISFIED);
    // Signed by the thief, with the victim's certificate: the signature is not the victim's.
    assert_eq!(send(&mut payee, &signed(signature, victim_cert.clone())).0, SECURITY_STATUS_NOT_SATISFIED);
    // No signature at all in the signed form (zeros): refused.
    assert_eq!(send(&mut payee, &signed([0; 64], victim_cert)).0, SECURITY_STATUS_NOT_SATISFIED);
    assert_eq!(persisted(&payee), before, "every refusal left the payee as it was");
    assert_eq!(payee.state().balance, Amount(0));

    // Honest settlement between certified cards: the payer signs, the payee checks, ≤ 9 APDUs.
    let report = settle_pair(&mut victim, &mut payee, 30).expect("honest certified settlement");
    assert!(report.apdus <= 9, "{} APDUs", report.apdus);
    assert_eq!((victim.state().balance, payee.state().balance), (Amount(70), Amount(30)));
    assert!(reconcile_cards(&[&victim, &payee]).accounted());
}

/// A certified payer's DEBIT answers the signature with the token (repeat included); the signature
/// verifies under the key its certificate certifies, over exactly the token's fields.
#[test]
fn a_certified_payer_signs_every_token_it_hands_out() {
    let ca = TestCa::new("value signing");
    let mut payer = certified(1, Profile::Hybrid, 100, &ca);
    let mut payee = certified(2, Profile::PublicKey, 0, &ca);
    let r: ReceiveRequest = ok(
        &mut payee,
        &Command::BeginReceive { payer: serial_of(&payer), amount: Amount(5), payer_sequence: payer.state().sequence },
    );
    let debit = Command::Debit {
        payee: serial_of(&payee),
        amount: Amount(5),
        nonce: r.nonce,
        payee_sequence: r.payee_sequence,
        request: r.request,
    };
    let t: DebitToken = ok(&mut payer, &debit);
    let again: DebitToken = ok(&mut payer, &debit);
    assert_eq!((again.payer_sequence, again.token), (t.payer_sequence, t.token));
    let public = keyroll::pki::Certificate::from_der(payer.state().certificate.as_ref().unwrap()).unwrap().spki_key;
    let parts = token_parts(serial_of(&payer), serial_of(&payee), 5, &r, t.payer_sequence);
    let mut all: Vec<&[u8]> = vec![keyroll::card::VALUE_SIGNATURE_LABEL];
    all.extend(parts.iter().map(Vec::as_slice));
    for sig in [t.signature.expect("a certified payer signs"), again.signature.expect("the repeat too")] {
        keyroll::crypto::card_key::verify_p1363(&public, &all, &sig).expect("verifies under the certified key");
    }
    // A symmetric payer's token carries no signature (nothing changed for symmetric cards).
    let mut sym = card(3, Profile::Symmetric, 1, 1, 5, 100);
    select(&mut sym);
    let mut sym_payee = card(4, Profile::Symmetric, 1, 1, 5, 0);
    select(&mut sym_payee);
    let r: ReceiveRequest = ok(
        &mut sym_payee,
        &Command::BeginReceive { payer: serial_of(&sym), amount: Amount(5), payer_sequence: sym.state().sequence },
    );
    let t: DebitToken = ok(
        &mut sym,
        &Command::Debit {
            payee: serial_of(&sym_payee),
            amount: Amount(5),
            nonce: r.nonce,
            payee_sequence: r.payee_sequence,
            request: r.request,
        },
    );
    assert!(t.signature.is_none());
}

/// Value from a card that cannot sign (symmetric, multi-key) into a certified card is refused, and the
/// terminal's same-settlement refund leaves both cards as they were; the other direction works, and
/// symmetric payees keep taking MAC-only tokens (what they still cannot prevent: `reconcile` flags it).
#[test]
fn certified_cards_take_value_only_from_certified_cards() {
    let ca = TestCa::new("value signing");
    let mut pk = certified(1, Profile::PublicKey, 100, &ca);
    let mut sym = card(2, Profile::Symmetric, 1, 1, 5, 100);
    let e = settle_pair(&mut sym, &mut pk, 10).unwrap_err();
    assert!(matches!(e.cause(), SettleError::Refused { step: "CREDIT", .. }), "{e:?}");
    assert_eq!((sym.state().balance, pk.state().balance), (Amount(100), Amount(100)), "refunded at once");
    assert!(reconcile_cards(&[&sym, &pk]).accounted());
    settle_pair(&mut pk, &mut sym, 10).expect("a certified card pays a symmetric one");
    assert_eq!((pk.state().balance, sym.state().balance), (Amount(90), Amount(110)));
}

/// The payee judges the payer's certificate at its own clock floor, never the host's clock: once the
/// issuer's policy has moved the payee's floor past the payer certificate's notAfter, the payer's
/// signed value is refused, whatever time the terminal's machine has.
#[test]
fn an_expired_payer_certificate_is_judged_at_the_payees_clock_floor() {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let mut ca = TestCa::new("value signing");
    // The payer's certificate runs out in 30 days (host clock); the payee's in a year.
    let now = SystemTime::now();
    ca.not_after = now + Duration::from_secs(30 * 86_400);
    let mut payer = certified(1, Profile::PublicKey, 100, &ca);
    ca.not_after = now + Duration::from_secs(365 * 86_400);
    let mut payee = certified(2, Profile::PublicKey, 0, &ca);
    // While the payee's floor is before the payer's notAfter, its signed value is taken.
    settle_pair(&mut payer, &mut payee, 10).expect("certificate valid at the payee's floor");
    // A policy the issuer signed 400 days from now raises the payee's floor past the payer's notAfter
    // (by at most one two-year step); the terminal's machine still says "today".
    let mut p = test_policy(2, &[], 1);
    p.signed_at = (now + Duration::from_secs(400 * 86_400)).duration_since(UNIX_EPOCH).unwrap().as_secs();
    p.signature = scheme_key().sign(&p.body()).unwrap();
    assert_eq!(send(&mut payee, &Command::PutPolicy { policy: p.to_wire() }).0, 0x9000);
    let payer_not_after = (now + Duration::from_secs(30 * 86_400)).duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(payee.state().clock_floor.0 > payer_not_after, "floor {:?}", payee.state().clock_floor);
    let before = payee.state().balance;
    let e = settle_pair(&mut payer, &mut payee, 10).unwrap_err();
    assert!(matches!(e.cause(), SettleError::Refused { step: "CREDIT", .. }), "{e:?}");
    assert_eq!(payee.state().balance, before);
    assert_eq!(payer.state().balance, Amount(90), "refunded in the same settlement");
    assert!(reconcile_cards(&[&payer, &payee]).accounted());
}
