//! Personalisation, version 2 (issue 11: factory credentials, SCP11b, secure messaging, attested keys):
//! cards per second and APDUs per card, for symmetric and public-key batches, N cards each (default
//! 2,000; env `KEYROLL_BENCH_N`), with a breakdown of where the time goes:
//! - the SCP11b channel alone: the line's check of both factory certificates (RFC 5280, two ECDSA
//!   verifications) and the key agreement (line: one key generation and two ECDH; card: one key
//!   generation and two ECDH; the receipt) — the P-256 work the issue asks to be priced;
//! - the whole personalisation APDU script against in-memory reference cards (no database, no files);
//! - the same plus one atomic, fsync'd card file per card;
//! - the full batch runner `keyroll perso --out-dir` calls (`perso::batch::personalise_to_files`: chip
//!   register, reservation, audit rows with a signed head, card files) on a real SQLite file.
//!
//! Goals (issue 11: "it must stay far above a real line's pace"): a high-volume personalisation machine
//! does on the order of 3,000 cards an hour (0.83 cards/s; an assumption, not a measurement). The channel
//! alone and the script in memory must run at least 100 times that pace on one core, the batch runner
//! (which fsyncs a file and a signed audit entry per card) at least 10 times. Over pcscd, see
//! `benches/pcsc_settlement.rs` (goal 20 cards/s).
//!
//! `cargo bench --bench perso_files`

#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use keyroll::authority::Authority;
use keyroll::authority::batches::NewBatch;
use keyroll::card::Card;
use keyroll::card::storage::{FileStorage, MemoryStorage, Storage};
use keyroll::crypto::scp11::{self, HostKeyAgreement};
use keyroll::domain::*;
use keyroll::perso::{CertificateIssuer, Line, personalise};
use keyroll::transport::in_process::InProcessChannel;
use std::time::{Instant, SystemTime};

/// A real line's pace: 3,000 cards an hour.
const REAL_LINE_CARDS_PER_SECOND: f64 = 3_000.0 / 3_600.0;

fn verdict(rate: f64, factor: f64) -> String {
    let goal = REAL_LINE_CARDS_PER_SECOND * factor;
    format!("goal ≥ {goal:.0} cards/s ({factor:.0}× a real line): {}", if rate >= goal { "met" } else { "NOT met" })
}

fn main() {
    let n: u32 = std::env::var("KEYROLL_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let dir = tempfile::tempdir().unwrap();
    let roots = support::test_roots();
    let ca = support::TestCa::new("Bench Issuer");
    println!("perso_files: version 2 personalisation, {n} cards per figure, one thread");

    // The channel alone: factory certificates checked, SCP11b key agreement, receipt verified.
    let blanks: Vec<_> = (0..n.min(500)).map(|_| support::test_fab().make_blank().unwrap()).collect();
    let t = Instant::now();
    for b in &blanks {
        let identity = keyroll::fab::verify::verify(
            &b.agreement_cert,
            &b.attestation_cert,
            b.chip_id,
            &roots,
            SystemTime::now(),
            false,
        )
        .unwrap();
        let host = HostKeyAgreement::start().unwrap();
        let (answer, _card_side) = scp11::card_respond(&b.agreement_key, host.command_data()).unwrap();
        host.finish(&identity.agreement_public, &answer).unwrap();
    }
    let channel = t.elapsed().as_secs_f64() / blanks.len() as f64;
    println!(
        "  SCP11b channel alone (certificates + key agreement, line and card) {:>7.0} µs/card {:>8.0} cards/s  {}",
        channel * 1e6,
        1.0 / channel,
        verdict(1.0 / channel, 100.0)
    );

    for profile in [Profile::Symmetric, Profile::PublicKey] {
        let name = profile.name();
        let plan = |i: u32| {
            let mut p = support::plan(i as u64 + 1, profile, 1, 1, 5, 100);
            if profile.has_key_pair() {
                p.trust_anchor = Some(ca.root.clone());
            }
            p
        };
        let issuer: Option<&dyn CertificateIssuer> = profile.has_key_pair().then_some(&ca as &dyn CertificateIssuer);
        let line = Line { roots: &roots, allow_virtual: false, register: None, issuer, verbose: false };
        // Blanks are made up front: the fab's work is not the line's.
        let blanks: Vec<Vec<u8>> =
            (0..n).map(|_| support::blank_state_from(support::test_fab()).encode().to_vec()).collect();
        let apdus = std::cell::Cell::new(0);
        let personalised = |i: u32| {
            let mut storage = MemoryStorage::new();
            storage.store(&blanks[i as usize]).unwrap();
            let mut card = Card::open(storage).unwrap();
            let mut ch = InProcessChannel::new(&mut card, "bench");
            apdus.set(personalise(&mut ch, &line, &plan(i)).unwrap().apdus);
            card
        };

        // 1. The APDU script alone.
        let t = Instant::now();
        for i in 0..n {
            personalised(i);
        }
        let script = t.elapsed().as_secs_f64();
        let rate = n as f64 / script;
        let apdus = apdus.get();
        println!(
            "  {name:<10} script only (in memory)   {apdus:>3} APDUs/card {:>7.0} µs/card {rate:>8.0} cards/s  {}",
            script * 1e6 / n as f64,
            verdict(rate, 100.0)
        );

        // 2. Script + one atomic card file each.
        let files = dir.path().join(format!("files-{name}"));
        std::fs::create_dir_all(&files).unwrap();
        let t = Instant::now();
        for i in 0..n {
            let card = personalised(i);
            FileStorage::new(files.join(format!("{i}.card"))).store(&card.state().encode()).unwrap();
        }
        let with_files = t.elapsed().as_secs_f64();
        println!(
            "  {name:<10} script + card file (fsync)              {:>7.0} µs/card {:>8.0} cards/s",
            with_files * 1e6 / n as f64,
            n as f64 / with_files
        );

        // 3. The batch runner, as `keyroll perso --out-dir` runs it.
        let (db, identity) = (dir.path().join(format!("{name}.db")), dir.path().join(format!("{name}.db.identity")));
        let (auth, _) = Authority::init(&db, "Bench", &[], &identity).unwrap();
        let u = auth.unlock(Some(&identity)).unwrap();
        u.new_batch(&NewBatch {
            name: "b".into(),
            profile,
            transfer_key_id_limit: TransferKeyIdLimit(5),
            initial_balance: Amount(100),
            max_balance: Amount(100_000),
        })
        .unwrap();
        let rows_before = rows(&auth);
        let t = Instant::now();
        keyroll::perso::batch::personalise_to_files(
            &u,
            "b",
            &dir.path().join(format!("cards-{name}")),
            n,
            false,
            &mut |_| {},
        )
        .unwrap();
        let full = t.elapsed().as_secs_f64();
        let rate = n as f64 / full;
        let rows_added = rows(&auth) - rows_before;
        println!(
            "  {name:<10} batch runner (db + files, blanks made by the virtual fab) {:>7.0} µs/card {rate:>8.0} cards/s  {}",
            full * 1e6 / n as f64,
            verdict(rate, 10.0)
        );
        println!(
            "  {name:<10} database rows written {rows_added} ({:.1} per card: card, chip, audit entries)",
            rows_added as f64 / n as f64
        );
        println!(
            "  {name:<10} per card: script {:.0} µs (of which the channel {:.0} µs), card file {:.0} µs, blank + database + audit signing {:.0} µs",
            script * 1e6 / n as f64,
            channel * 1e6,
            (with_files - script) * 1e6 / n as f64,
            (full - with_files).max(0.0) * 1e6 / n as f64
        );
    }
}

/// Card rows plus audit log rows.
fn rows(auth: &Authority) -> usize {
    auth.cards().unwrap().len() + auth.verify_log().unwrap().rows
}
