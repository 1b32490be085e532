//! A failed personalisation leaves no valid certificate for a card that was never finished (issue 14
//! item 8), through the library with a real SQLite back office: a card pulled after its certificate
//! was issued, and a run killed at that point and run again.

use crate::support::Cut;
use keyroll::authority::Authority;
use keyroll::authority::batches::NewBatch;
use keyroll::card::Card;
use keyroll::card::storage::{FileStorage, MemoryStorage, Storage};
use keyroll::domain::{Amount, CardSerial, Profile, TransferKeyIdLimit};
use keyroll::fab::{FactoryIdentity, TrustedRoot};
use keyroll::perso::batch::{DbIssuer, DbRegister, Kit, blank_state, personalise_to_files};
use keyroll::perso::{AttestedKey, BackOfficeError, CertificateIssuer, Line, PersoError, personalise};
use keyroll::protocol::SmartCard;
use keyroll::transport::in_process::InProcessChannel;
use std::time::SystemTime;

/// The back office's issuer in a process that dies before it can withdraw anything.
struct Killed<'a>(&'a dyn CertificateIssuer);

impl CertificateIssuer for Killed<'_> {
    fn issue(&self, card: &FactoryIdentity, key: &AttestedKey) -> Result<Vec<u8>, BackOfficeError> {
        self.0.issue(card, key)
    }
    fn withdraw(&self, _serial: CardSerial, _why: &str) -> Result<(), BackOfficeError> {
        Ok(())
    }
}

fn valid_certificates(auth: &Authority, card: CardSerial) -> Vec<String> {
    let rows = auth.certificates().unwrap();
    rows.into_iter().filter(|r| r.card == card.to_string() && !r.revoked).map(|r| r.pem).collect()
}

#[test]
fn no_certificate_outlives_a_personalisation_that_did_not_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, identity) = (tmp.path().join("k.db"), tmp.path().join("k.db.identity"));
    let (auth, _) = Authority::init(&db, "Orphan Test Issuer", &[], &identity).unwrap();
    let u = auth.unlock(Some(&identity)).unwrap();
    u.new_batch(&NewBatch {
        name: "p".into(),
        profile: Profile::PublicKey,
        transfer_key_id_limit: TransferKeyIdLimit(5),
        initial_balance: Amount(100),
        max_balance: Amount(1_000),
    })
    .unwrap();
    let out = tmp.path().join("cards");
    std::fs::create_dir(&out).unwrap();
    let target = out.canonicalize().unwrap().display().to_string();
    let (run, slots) = u.start_run("p", &target, 1).unwrap();
    let serial = slots[0].serial;
    let kit = Kit::load(&u, &run.batch).unwrap();
    let fab = u.virtual_fab().unwrap();
    let roots = u.auth.trusted_roots().unwrap();
    let issuer = DbIssuer { unlocked: &u, signer: kit.ca.as_ref().unwrap() };
    let register = DbRegister { unlocked: &u };
    fn line<'a>(roots: &'a [TrustedRoot], register: &'a DbRegister, issuer: &'a dyn CertificateIssuer) -> Line<'a> {
        Line { roots, allow_virtual: true, register: Some(register), issuer: Some(issuer), verbose: false }
    }
    // How many APDUs a personalisation takes (a probe card certified by a test CA, nothing recorded).
    let apdus = {
        let ca = crate::support::TestCa::new("Probe CA");
        let mut plan = kit.plan(CardSerial::from_u64(1));
        plan.trust_anchor = Some(ca.root.clone());
        let probe_line = Line { roots: &roots, allow_virtual: true, register: None, issuer: Some(&ca), verbose: false };
        let mut probe = Card::create(MemoryStorage::new(), blank_state(&fab).unwrap()).unwrap();
        personalise(&mut InProcessChannel::new(&mut probe, "probe"), &probe_line, &plan).unwrap().apdus
    };

    // 1. Pulled before LOCK, after the certificate was issued: withdrawn at once, and logged.
    let mut card = Card::create(MemoryStorage::new(), blank_state(&fab).unwrap()).unwrap();
    let e = personalise(
        &mut Cut { inner: InProcessChannel::new(&mut card, "cut"), left: apdus - 1 },
        &line(&roots, &register, &issuer),
        &kit.plan(serial),
    )
    .unwrap_err();
    assert!(matches!(e, PersoError::Transport { .. }), "{e}");
    let rows = auth.certificates().unwrap();
    assert_eq!(rows.len(), 1, "one certificate was issued");
    assert!(rows[0].revoked, "the certificate of the pulled card is still valid: {:?}", rows[0]);
    assert_eq!(rows[0].reason.as_deref(), Some("cessationOfOperation"));
    assert!(valid_certificates(&auth, serial).is_empty());

    // 2. The same card again (a new session), in a process killed before it could withdraw: the card file
    //    is left half-written.
    card.power_off();
    card.power_on();
    let e = personalise(
        &mut Cut { inner: InProcessChannel::new(&mut card, "killed"), left: apdus - 1 },
        &line(&roots, &register, &Killed(&issuer)),
        &kit.plan(serial),
    )
    .unwrap_err();
    assert!(matches!(e, PersoError::Transport { .. }), "{e}");
    assert_eq!(valid_certificates(&auth, serial).len(), 1, "the killed run left a valid certificate");
    FileStorage::new(out.join(format!("{serial}.card"))).store(&card.state().encode()).unwrap();

    // The same command again resumes the run: the earlier certificate is withdrawn before the card is
    // personalised again, and the one left valid is the one the finished card holds.
    let report = personalise_to_files(&u, "p", &out, 1, false, &mut |_| {}).unwrap();
    assert_eq!((report.resumed, report.written), (true, 1));
    let finished = keyroll::card::CardState::decode(
        &FileStorage::new(out.join(format!("{serial}.card"))).load().unwrap().unwrap(),
    )
    .unwrap();
    let held = keyroll::pki::pem::encode("CERTIFICATE", finished.certificate.as_deref().unwrap());
    assert_eq!(valid_certificates(&auth, serial), vec![held]);
    assert_eq!(auth.certificates().unwrap().len(), 3);

    // The log vouches for every withdrawal, and the report's verdict counts them as revocations.
    let log = auth.verify_log().unwrap();
    assert!(log.intact, "{log:?}");
    let r = keyroll::audit::report::build_report(&auth, SystemTime::now()).unwrap();
    assert_eq!((r.chains.valid, r.chains.invalid, r.chains.revoked), (1, 2, 2));
    assert!(r.ok);
}

/// Issue 10 ("errors flatten to strings"): when the back office itself fails while binding a chip to
/// its serial (here the database refuses the write), the card is not an impostor. Version 1 of the
/// seam carried only a string, so the line reported "chip … refused before any secret", exit 1 with
/// code `impostor-refused`, and wrote a `perso refused` record against a genuine chip. Now the
/// database's error reaches the user as a database error, nothing is recorded against the card, the
/// card got no secret, and the same command finishes the run once the database works again.
#[test]
fn a_back_office_failure_at_the_chip_register_is_not_an_impostor() {
    use crate::support::cli::{Scratch, stderr};
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "b", "--profile", "symmetric", "--transfer-key-limit", "5", "--initial-balance", "100"]);
    // The database refuses every new chip row (what a full disk or a dropped connection does to the one
    // write the register makes).
    s.sqlite("CREATE TRIGGER fail_chip BEFORE INSERT ON chips BEGIN SELECT RAISE(ABORT, 'disk I/O refused'); END;");
    let o = s.run(&["--json", "perso", "--batch", "b", "--out-dir", "cards", "--count", "1"]);
    assert!(!o.status.success(), "the personalisation cannot finish without its chip row");
    let err: serde_json::Value = serde_json::from_str(&stderr(&o)).unwrap_or_default();
    let text = format!("{}{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
    assert!(!text.contains("refused before any secret"), "a database failure is not an impostor: {text}");
    assert_eq!(err["error"]["code"], "database", "{text}");
    assert_ne!(o.status.code(), Some(1), "exit 1 is a failed check (an impostor); this is not one: {text}");
    assert_eq!(s.sqlite("SELECT count(*) FROM audit_log WHERE action = 'perso refused'").trim(), "0", "{text}");
    assert_eq!(s.sqlite("SELECT count(*) FROM chips").trim(), "0");
    // The database works again: the same command resumes the run and finishes the card.
    s.sqlite("DROP TRIGGER fail_chip;");
    s.ok(&["perso", "--batch", "b", "--out-dir", "cards", "--count", "1"]);
    assert_eq!(s.sqlite("SELECT count(*) FROM chips").trim(), "1");
    s.ok(&["audit", "log"]);
}
