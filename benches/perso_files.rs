//! Personalisation to card files (issue: back office): cards per second and database rows per second
//! for N cards (default 10,000; env `KEYROLL_BENCH_N`), through the real `keyroll perso` binary on a
//! real SQLite file, with a breakdown of where the time goes:
//! - the personalisation APDU script against in-memory reference cards (no database, no files);
//! - the same plus one atomic, fsync'd card file per card;
//! - the full command (reservation, audit rows with a signed head, card files).
//!
//! `cargo bench --bench perso_files`

#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use keyroll::card::Card;
use keyroll::card::storage::{FileStorage, MemoryStorage, Storage};
use keyroll::domain::*;
use keyroll::perso::{Line, personalise};
use keyroll::transport::in_process::InProcessChannel;
use std::process::Command;
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

    // 3. The real command.
    let bin = env!("CARGO_BIN_EXE_keyroll");
    let run = |args: &[&str]| {
        let o = Command::new(bin)
            .current_dir(dir.path())
            .args(["--db", "k.db", "--identity", "k.db.identity"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run(&["init", "--issuer", "Bench"]);
    run(&["batch", "new", "b", "--profile", "symmetric", "--transfer-key-limit", "5", "--initial-balance", "100"]);
    let rows_before = rows(dir.path());
    let t = Instant::now();
    run(&["perso", "--batch", "b", "--out-dir", "cards", "--count", &n.to_string()]);
    let full = t.elapsed().as_secs_f64();
    let rows_added = rows(dir.path()) - rows_before;
    println!(
        "  keyroll perso (db + files)       {:>9.0} cards/s  {:>7.1} µs/card",
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

fn rows(dir: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(dir.join("k.db")).unwrap();
    c.query_row(
        "SELECT (SELECT count(*) FROM cards) + (SELECT count(*) FROM audit_log) + (SELECT count(*) FROM perso_runs)",
        [],
        |r| r.get(0),
    )
    .unwrap()
}
