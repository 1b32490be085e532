//! Issue 15: the P-256 operations one public-key-roll settlement performs, card and terminal sides
//! together, counted on this thread by `crypto::ec::op_count` (debug builds only). The count is
//! pinned: a redundant certificate validation, key restoration or ECDH that comes back fails here.
//! And the session's memory of a validated peer certificate (`card::certificate::check_in_session`)
//! gives the verdict a fresh validation would give, at every clock floor, for every other input.

use crate::support::*;
use keyroll::card::certificate::{self, Anchor, Usage};
use keyroll::card::policy::ClockFloor;
use keyroll::crypto::ec::op_count::{self, Ops};
use keyroll::domain::*;
use keyroll::terminal::KeyRoll;
use std::time::UNIX_EPOCH;

/// Before issue 15's second session a public-key roll cost 6 verifications and 4 key restorations (3
/// until its third session, when the key object came to outlive sessions):
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
        // Each card holds the key pair it generated at personalisation, ready for signing and ECDH
        // (its key object outlives sessions): nothing is restored from a scalar.
        from_scalar: 0,
        // Points decoded and checked by AWS-LC, in either of its forms (ECDSA, ECDH): the leaf in
        // each of the two certificate validations (2), the scheme key once in the authorisation check
        // (it was parsed three times: to validate it, for its id, to verify), the recipient's key in
        // its ECDH form to seal (1) and the received ephemeral key, in its ECDH form only (1).
        // Until session 9 each validation also parsed the anchor certificate and its key (2 more; each
        // card now holds its anchor in working form from personalisation, `AnchorObject`), and the
        // ephemeral key was parsed where it was made and received in its ECDSA form too (2 more): 9.
        parse_public: 5,
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
    let parsed = |der: &[u8]| Anchor::parse(der).expect("the anchors parse");
    let root = parsed(&ca.root);
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
                    certificate::check_in_session(&mut last, &cert, &root, ClockFloor(warm), &[Usage::Signing])
                        .expect("the warm-up check passes");
                    let fresh = certificate::check(der, anchor, ClockFloor(floor), u);
                    let remembered =
                        certificate::check_in_session(&mut last, der, &parsed(anchor), ClockFloor(floor), u);
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
    certificate::check_in_session(&mut last, &cert, &root, ClockFloor(nb), &[Usage::Signing]).unwrap();
    op_count::take();
    certificate::check_in_session(&mut last, &cert, &root, ClockFloor(nb + 10), &[Usage::KeyAgreement]).unwrap();
    assert_eq!(op_count::take(), Ops::default());
    // A refusal forgets it: the next check validates again.
    assert!(certificate::check_in_session(&mut last, &cert, &root, ClockFloor(na + 1), &[]).is_err());
    assert!(last.is_none());
}

/// The card validates a peer certificate with one parse of each certificate (issue 15): the parsed
/// leaf and anchor choose the time and then go into path validation as they are. Its verdict must be
/// the one of the formulation it replaced, `pki::validate` of the DER at `max(floor, notBefore of
/// leaf and anchor)` (DESIGN.md §10 point 5), over floors before, between, at and after the validity
/// periods of both, with the leaf's notBefore after the anchor's and before it.
#[test]
fn one_parse_validation_gives_the_verdict_of_validation_at_the_latest_not_before() {
    use keyroll::pki::{self, ValidationOptions};
    use std::time::{Duration, SystemTime};
    let late_root = TestCa::new("Late Root");
    let mut early_leaves = TestCa::new("Early Leaves");
    // Leaves whose validity begins two days before their root's (root: now - 1 day).
    early_leaves.not_before = SystemTime::now() - Duration::from_secs(3 * 86_400);
    for ca in [&late_root, &early_leaves] {
        let card = pk_card(1, Profile::Hybrid, 1, 1, 5, 1_000, ca, &ca.root);
        let cert = card.state().certificate.clone().unwrap();
        let leaf = pki::Certificate::from_der(&cert).unwrap();
        let root = pki::Certificate::from_der(&ca.root).unwrap();
        let (lnb, rnb) = (leaf.not_before as u64, root.not_before as u64);
        let (lna, rna) = (leaf.not_after as u64, root.not_after as u64);
        let mut floors = vec![0, u64::MAX / 4];
        for t in [lnb, rnb, lna, rna] {
            floors.extend([t.saturating_sub(1), t, t + 1]);
        }
        for floor in floors {
            let at = UNIX_EPOCH + Duration::from_secs(floor.max(lnb).max(rnb));
            let opts = ValidationOptions { allow_ca_leaf: false, ..ValidationOptions::at(at) };
            let reference = pki::validate(&cert, &[], std::slice::from_ref(&ca.root), &[], &opts).is_ok();
            let checked = certificate::check(&cert, &ca.root, ClockFloor(floor), &[Usage::Signing]);
            assert_eq!(checked.is_ok(), reference, "leaf notBefore {lnb}, root notBefore {rnb}, floor {floor}");
        }
    }
}

/// A card opened from its stored record (as `keyroll settle` and `card serve` open card files) makes
/// its key pair from the stored scalar, and its anchor's working form, once, at first use, and keeps
/// them across sessions: a second public-key roll costs it no key restoration and no anchor parse. (That a key object never shadows another stored scalar
/// is `card::session`'s unit test.)
#[test]
fn the_key_object_is_made_once_per_card_not_per_session() {
    let ca = TestCa::new("Ops Issuer");
    let mut payer = card_from_record(&persisted(&pk_card(1, Profile::Hybrid, 1, 1, 5, 1_000, &ca, &ca.root)));
    let mut first = pk_card(2, Profile::Hybrid, 2, 2, 5, 0, &ca, &ca.root);
    let mut second = pk_card(3, Profile::Hybrid, 3, 3, 5, 0, &ca, &ca.root);
    op_count::take();
    assert_eq!(settle_cards(&mut payer, &mut first, 10).unwrap().key_roll, KeyRoll::PublicKey);
    // The payer's signing key and ECDH key, from the stored scalar; and its anchor's key, parsed at
    // its first certificate check (one more than a roll between cards fresh from personalisation).
    let ops = op_count::take();
    assert_eq!((ops.from_scalar, ops.parse_public), (2, 6));
    assert_eq!(settle_cards(&mut payer, &mut second, 10).unwrap().key_roll, KeyRoll::PublicKey);
    let ops = op_count::take();
    assert_eq!(ops.from_scalar, 0, "a second session restores no key");
    assert_eq!(ops.parse_public, 5, "a second session parses no anchor");
}

/// The card's anchor in working form answers for the anchor stored now, whatever it held: one made for
/// another anchor is never used in its place, a stored anchor that does not parse is refused (6982,
/// as each check against it was) and leaves nothing held, and a state without an anchor drops it.
#[test]
fn the_anchor_object_follows_the_stored_anchor() {
    use keyroll::card::certificate::AnchorObject;
    use keyroll::protocol::StatusWord;
    let (a, b) = (TestCa::new("Anchor A"), TestCa::new("Anchor B"));
    let cert_of = |ca: &TestCa, serial| {
        pk_card(serial, Profile::Hybrid, 1, 1, 5, 0, ca, &ca.root).state().certificate.clone().unwrap()
    };
    let (under_a, under_b) = (cert_of(&a, 1), cert_of(&b, 2));
    let mut anchors = AnchorObject::default();
    let verdict = |anchors: &mut AnchorObject, stored: &[u8], cert: &[u8]| {
        let anchor = anchors.anchor(stored)?;
        certificate::check_in_session(&mut None, cert, anchor, ClockFloor(0), &[]).map(|p| p.serial)
    };
    assert!(!anchors.is_made());
    assert!(verdict(&mut anchors, &a.root, &under_a).is_ok());
    assert_eq!(verdict(&mut anchors, &a.root, &under_b).err(), Some(StatusWord::SecurityStatusNotSatisfied));
    // Replaced: the anchor held for A does not answer for B.
    assert!(verdict(&mut anchors, &b.root, &under_b).is_ok());
    assert_eq!(verdict(&mut anchors, &b.root, &under_a).err(), Some(StatusWord::SecurityStatusNotSatisfied));
    assert!(anchors.is_made());
    assert_eq!(
        verdict(&mut anchors, b"not a certificate", &under_b).err(),
        Some(StatusWord::SecurityStatusNotSatisfied)
    );
    assert!(!anchors.is_made());
    anchors.follow(Some(&a.root));
    assert!(anchors.is_made());
    anchors.follow(None);
    assert!(!anchors.is_made());
}
