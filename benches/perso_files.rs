//! Personalisation to card files (issue: back office): cards per second and database rows per second
//! for N cards (default 10,000; env `KEYROLL_BENCH_N`), through the batch runner `keyroll perso` calls
//! (`perso::batch::personalise_to_files`) on a real SQLite file, with a breakdown of where the time goes:
//! - the personalisation APDU script against in-memory reference cards (no database, no files);
//! - the same plus one atomic, fsync'd card file per card;
//! - the full batch runner (reservation, audit rows with a signed head, card files).
//!
//! `cargo bench --bench perso_files`

#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use keyroll::authority::Authority;
use keyroll::authority::batches::NewBatch;
use keyroll::card::Card;
use keyroll::card::storage::{FileStorage, MemoryStorage, Storage};
use keyroll::domain::*;
use keyroll::perso::{Line, personalise};
use keyroll::transport::in_process::InProcessChannel;
use std::time::Instant;

fn main() {
    let n: u32 = std::env::var("KEYROLL_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    println!("personalisation of {n} symmetric cards (version 2: factory credentials, SCP11b, secure messaging)");
    let roots = support::test_roots();
    let line = Line { roots: &roots, allow_virtual: false, register: None, issuer: None, verbose: false };
    // Blanks are made up front: the fab's work is not the line's.
    let blanks: Vec<Vec<u8>> =
        (0..n).map(|_| support::blank_state_from(support::test_fab()).encode().to_vec()).collect();
    let personalised = |i: u32| {
        let mut storage = MemoryStorage::new();
        storage.store(&blanks[i as usize]).unwrap();
        let mut card = Card::open(storage).unwrap();
        let mut ch = InProcessChannel::new(&mut card, "bench");
        personalise(&mut ch, &line, &support::plan(i as u64 + 1, Profile::Symmetric, 1, 1, 5, 100)).unwrap();
        card
    };

    // 1. The APDU script alone.
    let t = Instant::now();
    for i in 0..n {
        personalised(i);
    }
    let script = t.elapsed().as_secs_f64();
    println!(
        "  script only (in memory)          {:>9.0} cards/s  {:>7.1} µs/card",
        n as f64 / script,
        script * 1e6 / n as f64
    );

    // 2. Script + one atomic card file each.
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let t = Instant::now();
    for i in 0..n {
        let card = personalised(i);
        FileStorage::new(files.join(format!("{i}.card"))).store(&card.state().encode()).unwrap();
    }
    let with_files = t.elapsed().as_secs_f64();
    println!(
        "  script + card file (fsync)       {:>9.0} cards/s  {:>7.1} µs/card",
        n as f64 / with_files,
        with_files * 1e6 / n as f64
    );

    // 3. The batch runner, as `keyroll perso --out-dir` runs it.
    let (db, identity) = (dir.path().join("k.db"), dir.path().join("k.db.identity"));
    let (auth, _) = Authority::init(&db, "Bench", &[], &identity).unwrap();
    let u = auth.unlock(Some(&identity)).unwrap();
    u.new_batch(&NewBatch {
        name: "b".into(),
        profile: Profile::Symmetric,
        transfer_key_id_limit: TransferKeyIdLimit(5),
        initial_balance: Amount(100),
        max_balance: Amount(100_000),
    })
    .unwrap();
    let rows_before = rows(&auth);
    let t = Instant::now();
    keyroll::perso::batch::personalise_to_files(&u, "b", &dir.path().join("cards"), n, false, &mut |_| {}).unwrap();
    let full = t.elapsed().as_secs_f64();
    let rows_added = rows(&auth) - rows_before;
    println!(
        "  batch runner (db + files)        {:>9.0} cards/s  {:>7.1} µs/card",
        n as f64 / full,
        full * 1e6 / n as f64
    );
    println!(
        "  database rows written            {rows_added} ({:.0} rows/s, cards + perso run + audit log)",
        rows_added as f64 / full
    );
    println!(
        "  breakdown per card: script {:.0} µs, card file {:.0} µs, database + audit signing {:.0} µs",
        script * 1e6 / n as f64,
        (with_files - script) * 1e6 / n as f64,
        (full - with_files).max(0.0) * 1e6 / n as f64
    );
}

/// Card rows plus audit log rows.
fn rows(auth: &Authority) -> usize {
    auth.cards().unwrap().len() + auth.verify_log().unwrap().rows
}
