//! In-process settlement throughput and APDU counts (issues: foundation, CA).
//!
//! `cargo bench --bench settlement` prints, for each kind of settlement, settlements per second and
//! APDUs per settlement through the real codec and reference cards held in memory.
//! Env `KEYROLL_BENCH_N` sets the number of settlements per kind (default 2,000).

#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use keyroll::domain::*;
use keyroll::terminal::{KeyRoll, SettleOptions};
use keyroll::transport::in_process::InProcessChannel;
use std::time::Instant;
use support::*;

fn run(name: &str, n: usize, mut make: impl FnMut() -> (TestCard, TestCard), amount: u64, expect: KeyRoll) {
    // Cards are made outside the timed region; each settlement gets a fresh pair when it rolls a key.
    let mut pairs: Vec<(TestCard, TestCard)> = (0..n).map(|_| make()).collect();
    let started = Instant::now();
    let mut apdus = 0;
    for (a, b) in pairs.iter_mut() {
        let mut ca = InProcessChannel::new(a, "payer");
        let mut cb = InProcessChannel::new(b, "payee");
        let r =
            keyroll::terminal::settle(&mut ca, &mut cb, Amount(amount), &SettleOptions::default()).expect("settlement");
        assert_eq!(r.key_roll, expect);
        apdus += r.apdus;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{name:<28} {n:>6} settlements  {:>9.0} /s  {:>6.1} µs each  {:>4.1} APDUs each",
        n as f64 / secs,
        secs * 1e6 / n as f64,
        apdus as f64 / n as f64
    );
}

fn main() {
    let n: usize = std::env::var("KEYROLL_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    println!("in-process settlements (reference cards in memory, real APDU codec, 1 core)");
    run(
        "no key roll",
        n,
        || (card(1, Profile::Symmetric, 1, 1, 5, 1_000), card(2, Profile::Symmetric, 1, 1, 5, 0)),
        10,
        KeyRoll::None,
    );
    run(
        "symmetric roll",
        n,
        || (card(1, Profile::Symmetric, 1, 1, 5, 1_000), card(2, Profile::Symmetric, 2, 1, 5, 0)),
        10,
        KeyRoll::Symmetric,
    );
    run(
        "multi-key selection",
        n,
        || (card(1, Profile::MultiKey, 1, 1, 4, 1_000), card(2, Profile::Symmetric, 3, 1, 5, 0)),
        10,
        KeyRoll::Selection,
    );
    let ca = TestCa::new("Bench Issuer");
    let pk_n = (n / 4).max(50);
    run(
        "public-key roll (hybrid)",
        pk_n,
        || {
            (
                pk_card(1, Profile::Hybrid, 1, 1, 5, 1_000, &ca, &ca.root),
                pk_card(2, Profile::Hybrid, 2, 2, 5, 0, &ca, &ca.root),
            )
        },
        10,
        KeyRoll::PublicKey,
    );
}
