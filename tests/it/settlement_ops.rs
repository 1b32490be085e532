//! Issue 15: the P-256 operations one public-key-roll settlement performs, card and terminal sides
//! together, counted on this thread by `crypto::ec::op_count` (debug builds only). The count is
//! pinned: a redundant certificate validation, key restoration or ECDH that comes back fails here.
//! And the session's memory of a validated peer certificate (`card::certificate::check_in_session`)
//! gives the verdict a fresh validation would give, at every clock floor, for every other input.

use crate::support::*;
use keyroll::card::certificate::{self, Usage};
use keyroll::card::policy::ClockFloor;
use keyroll::crypto::ec::op_count::{self, Ops};
use keyroll::domain::*;
use keyroll::terminal::KeyRoll;
use std::time::UNIX_EPOCH;

/// Before issue 15's second session a public-key roll cost 6 verifications and 4 key restorations:
/// each card re-validated the peer certificate in every command that named it (the payee validated
/// the payer's at GET TRANSFER KEY and again at CREDIT) and rebuilt its key pair from the stored
/// scalar per command (the payer at UPDATE TRANSFER KEY and again at DEBIT).
#[test]
fn a_public_key_roll_settlement_performs_a_pinned_number_of_p256_operations() {
    let ca = TestCa::new("Ops Issuer");
    // The payer holds the older transfer key, so it takes the payee's key before paying.
    let mut payer = pk_card(1, Profile::Hybrid, 1, 1, 5, 1_000, &ca, &ca.root);
    let mut payee = pk_card(2, Profile::Hybrid, 2, 2, 5, 0, &ca, &ca.root);
    op_count::take();
    let report = settle_cards(&mut payer, &mut payee, 10).expect("settlement");
    let ops = op_count::take();
    assert_eq!(report.key_roll, KeyRoll::PublicKey);
    let expected = Ops {
        // Payer checks the payee's certificate (REQUEST UPDATE PERMISSION), the envelope signature
        // and the issuer's key authorisation (UPDATE TRANSFER KEY); the payee checks the payer's
        // certificate once (GET TRANSFER KEY; CREDIT reuses the verdict) and the value signature.
        verify: 5,
        // The payee signs the envelope, the payer the value token.
        sign: 2,
        // ECIES seal (payee) and open (payer).
        ecdh: 2,
        // The envelope's ephemeral key.
        generate: 1,
        // Each card makes its key pair once per session; the payer also makes the ECDH key of the
        // same scalar for ECIES open.
        from_scalar: 3,
        // Points decoded and checked: 2 per certificate validation (leaf and anchor), 1 per key pair
        // made, the ephemeral key made and received, the scheme key twice for the authorisation.
        parse_public: 11,
    };
    assert_eq!(ops, expected, "P-256 operations of one public-key-roll settlement");
}

/// The session's remembered verdict against a fresh validation, over floors before, at and after
/// the certificate's validity, other anchors, other certificates and key usages.
#[test]
fn a_remembered_certificate_verdict_equals_a_fresh_validation() {
    let ca = TestCa::new("Ops Issuer");
    let other = TestCa::new("Other Issuer");
    let card = pk_card(1, Profile::Hybrid, 1, 1, 5, 1_000, &ca, &ca.root);
    let stranger = pk_card(3, Profile::Hybrid, 1, 1, 5, 1_000, &other, &other.root);
    let cert = card.state().certificate.clone().unwrap();
    let foreign = stranger.state().certificate.clone().unwrap();
    let secs = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (nb, na) = (secs(ca.not_before), secs(ca.not_after));
    let floors = [0, nb - 1, nb, nb + 1, na - 1, na, na + 1, na + 86_400 * 365 * 20];
    let inputs: [(&[u8], &[u8]); 4] =
        [(&cert, &ca.root), (&foreign, &ca.root), (&cert, &other.root), (&foreign, &other.root)];
    let usages: [&[Usage]; 3] = [&[Usage::Signing], &[Usage::KeyAgreement], &[Usage::Signing, Usage::KeyAgreement]];
    for warm in [nb, na] {
        for &(der, anchor) in &inputs {
            for &floor in &floors {
                for u in usages {
                    // A session that validated `cert` under `ca.root` at floor `warm`, then is asked again.
                    let mut last = None;
                    certificate::check_in_session(&mut last, &cert, &ca.root, ClockFloor(warm), &[Usage::Signing])
                        .expect("the warm-up check passes");
                    let fresh = certificate::check(der, anchor, ClockFloor(floor), u);
                    let remembered = certificate::check_in_session(&mut last, der, anchor, ClockFloor(floor), u);
                    assert_eq!(
                        remembered.as_ref().map(|p| (p.serial, p.public_key.clone())).map_err(|e| *e),
                        fresh.as_ref().map(|p| (p.serial, p.public_key.clone())).map_err(|e| *e),
                        "warm at {warm}, asked at floor {floor} for {u:?}, same cert: {}, same anchor: {}",
                        der == cert.as_slice(),
                        anchor == ca.root.as_slice()
                    );
                }
            }
        }
    }
    // The verdict is reused only when nothing else could change it: no verification the second time.
    let mut last = None;
    certificate::check_in_session(&mut last, &cert, &ca.root, ClockFloor(nb), &[Usage::Signing]).unwrap();
    op_count::take();
    certificate::check_in_session(&mut last, &cert, &ca.root, ClockFloor(nb + 10), &[Usage::KeyAgreement]).unwrap();
    assert_eq!(op_count::take(), Ops::default());
    // A refusal forgets it: the next check validates again.
    assert!(certificate::check_in_session(&mut last, &cert, &ca.root, ClockFloor(na + 1), &[]).is_err());
    assert!(last.is_none());
}
