//! Issue 13: settlements per second in process, symmetric and certified pairs, with and without the
//! settlement journal; APDUs per settlement; the journal's append cost as it grows, and `reconcile`'s
//! journal verification against `sha256sum` on the same file.
//!
//! `cargo bench --features pcsc --bench value_settlement` (env `KEYROLL_BENCH_N`: settlements per kind,
//! default 2,000; the certified kinds run half as many). Reference cards in memory, the real APDU codec,
//! one core; journals are written under the cargo target directory (a real disk, `fsync` per line as
//! `settle --journal` does).
//!
//! Goals and why:
//! - **Pace.** A real terminal settles at most ~3 times a second: two taps, 8–9 APDUs at ISO 14443 rates
//!   and a smart card's own MAC and ECDSA work take ≥ 300 ms. The software must never be what limits it,
//!   with a margin for a slow host: ≥ 100 × that pace, **≥ 300 settlements/s** for every kind, journal
//!   included.
//! - **APDUs** (issue 13's budget, DESIGN.md §10): ≤ 9 per settlement without a roll; symmetric pairs 8.
//! - **Journal append** at 10,000 lines (a busy terminal's day) **≤ 30 ms**, a tenth of one tap: an
//!   append reads only the journal's last line, so its cost should not grow with the journal.
//! - **Journal verification** (what `reconcile --journal` runs: JSON per line, SHA-256 chain) at **≥ 10%
//!   of `sha256sum`'s rate** on the same file: sha256sum only hashes the bytes; a line must also be parsed.

#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use keyroll::domain::*;
use keyroll::protocol::ledger::{self, JournalOutcome, JournalRecord};
use keyroll::terminal::{KeyRoll, SettleOptions, journal};
use keyroll::transport::in_process::InProcessChannel;
use std::path::{Path, PathBuf};
use std::time::Instant;
use support::*;

struct Run {
    per_s: f64,
    apdus: f64,
}

/// `n` settlements of 1 unit between one pair, alternating direction (the same two cards, as at a
/// counter), through `options`.
fn run(name: &str, n: usize, (mut a, mut b): (TestCard, TestCard), options: &SettleOptions) -> Run {
    let cpu0 = cpu_time();
    let started = Instant::now();
    let mut apdus = 0;
    for i in 0..n {
        let (payer, payee) = if i % 2 == 0 { (&mut a, &mut b) } else { (&mut b, &mut a) };
        let mut ca = InProcessChannel::new(payer, "payer");
        let mut cb = InProcessChannel::new(payee, "payee");
        let r = keyroll::terminal::settle(&mut ca, &mut cb, Amount(1), options).expect("settlement");
        assert_eq!(r.key_roll, KeyRoll::None);
        apdus += r.apdus;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu0).as_secs_f64();
    let per_s = n as f64 / secs;
    let apdus = apdus as f64 / n as f64;
    println!(
        "{name:<34} {n:>6} settlements {per_s:>8.0} /s  {:>7.1} µs each ({:>7.1} µs CPU)  {apdus:>4.1} APDUs",
        secs * 1e6 / n as f64,
        cpu * 1e6 / n as f64,
    );
    Run { per_s, apdus }
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("value_settlement");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// A journal line as a certified settlement writes it (signature, token, ack: full size).
fn line_record(i: u64) -> JournalRecord {
    JournalRecord {
        at: 1_790_000_000 + i,
        payer: CardSerial::from_u64(1),
        payee: CardSerial::from_u64(2),
        amount: Amount(1),
        outcome: JournalOutcome::Settled,
        receipt: Some(i as u32 + 1),
        nonce: Some("ab".repeat(16)),
        payer_sequence: Some(i as u32 + 1),
        token: Some("cd".repeat(16)),
        ack: Some("ef".repeat(16)),
        proof: None,
        recovered: vec![],
        transfer_key_id: Some(1),
        signature: Some("12".repeat(64)),
    }
}

/// Mean cost of `journal::append` at a journal of `lines` lines (the append itself, then cut back).
fn append_cost(lines: u64, reps: u32) -> f64 {
    let p = scratch(&format!("append-{lines}.jsonl"));
    let mut text = String::new();
    let mut prev = ledger::GENESIS.to_string();
    for i in 0..lines {
        let l = ledger::journal_line(i, &prev, &line_record(i));
        prev = ledger::line_hash(&l);
        text.push_str(&l);
        text.push('\n');
    }
    std::fs::write(&p, &text).unwrap();
    let mut total = 0.0;
    for _ in 0..reps {
        let started = Instant::now();
        journal::append(&p, &line_record(lines)).expect("append");
        total += started.elapsed().as_secs_f64();
        // Back to `lines` lines for the next repetition (not timed).
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(text.len() as u64).unwrap();
    }
    let ms = total * 1e3 / reps as f64;
    println!("journal append at {lines:>6} lines: {ms:>7.2} ms (mean of {reps}, fsync included)");
    ms
}

/// `sha256sum FILE` wall-clock seconds, or `None` when the tool is missing.
fn sha256sum(path: &Path) -> Option<f64> {
    let started = Instant::now();
    let o = std::process::Command::new("sha256sum").arg(path).output().ok()?;
    o.status.success().then(|| started.elapsed().as_secs_f64())
}

fn main() {
    let n: usize = std::env::var("KEYROLL_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let m = (n / 2).max(50);
    println!(
        "in-process settlements of 1 unit, one pair each, alternating direction (reference cards in memory, 1 core)"
    );
    let sym = || (card(1, Profile::Symmetric, 1, 1, 5, 500_000), card(2, Profile::Symmetric, 1, 1, 5, 500_000));
    let ca = TestCa::new("Bench Issuer");
    let cert = || {
        (
            pk_card(1, Profile::PublicKey, 1, 1, 5, 500_000, &ca, &ca.root),
            pk_card(2, Profile::PublicKey, 1, 1, 5, 500_000, &ca, &ca.root),
        )
    };
    let none = SettleOptions::default();
    let journaled = |name: &str| SettleOptions { journal: Some(scratch(name)), ..Default::default() };
    let runs = [
        ("symmetric", run("symmetric", n, sym(), &none)),
        ("symmetric --journal", run("symmetric --journal", n, sym(), &journaled("sym.jsonl"))),
        ("certified", run("certified (public-key, signed value)", m, cert(), &none)),
        ("certified --journal", run("certified --journal", m, cert(), &journaled("cert.jsonl"))),
    ];
    let ok = |b: bool| if b { "met" } else { "NOT met" };
    for (name, r) in &runs {
        println!(
            "goal: {name:<20} >= 300 settlements/s (100 x a real terminal's ~3/s): {:>8.0} /s -> {}",
            r.per_s,
            ok(r.per_s >= 300.0)
        );
    }
    let sym_apdus = runs[0].1.apdus;
    let cert_apdus = runs[2].1.apdus;
    println!("goal: symmetric settlement 8 APDUs (budget <= 9): {sym_apdus:.1} -> {}", ok(sym_apdus <= 8.0));
    println!("goal: certified settlement <= 9 APDUs: {cert_apdus:.1} -> {}", ok(cert_apdus <= 9.0));
    // The journal's own cost per settlement, from the runs above.
    for (plain, with) in [(0, 1), (2, 3)] {
        let extra_us = 1e6 / runs[with].1.per_s - 1e6 / runs[plain].1.per_s;
        println!(
            "journal cost in the {} runs: {extra_us:+.0} µs per settlement (journal growing to its run's length)",
            runs[plain].0
        );
    }

    println!(
        "journal append cost as the journal grows (a certified line, {} bytes):",
        ledger::journal_line(0, ledger::GENESIS, &line_record(0)).len() + 1
    );
    let mut at_10k = 0.0;
    for (lines, reps) in [(0u64, 50u32), (1_000, 30), (10_000, 10)] {
        let ms = append_cost(lines, reps);
        if lines == 10_000 {
            at_10k = ms;
        }
    }
    println!(
        "goal: journal append at 10,000 lines <= 30 ms (a tenth of one tap): {at_10k:.2} ms -> {}",
        ok(at_10k <= 30.0)
    );

    // reconcile's journal check (verify_journal) against sha256sum on the same 10,000-line file.
    // The 10,000-line journal append_cost left (scratch() would remove it).
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("value_settlement").join("append-10000.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mb = text.len() as f64 / 1e6;
    let reps = 5;
    let started = Instant::now();
    for _ in 0..reps {
        let (lines, _) = ledger::verify_journal(&text).expect("verifies");
        assert_eq!(lines.len(), 10_000);
    }
    let verify_s = started.elapsed().as_secs_f64() / reps as f64;
    let ours = mb / verify_s;
    print!("verify_journal 10,000 lines ({mb:.1} MB): {:.1} ms, {ours:.0} MB/s", verify_s * 1e3);
    match (0..3).filter_map(|_| sha256sum(&path)).reduce(f64::min) {
        Some(s) => {
            let theirs = mb / s;
            println!("; sha256sum same file (whole process, best of 3): {:.1} ms, {theirs:.0} MB/s", s * 1e3);
            println!(
                "goal: journal verification >= 10% of sha256sum's rate: {:.0}% -> {}",
                100.0 * ours / theirs,
                ok(ours >= 0.10 * theirs)
            );
        }
        None => println!("; sha256sum not found: no comparison"),
    }
}
