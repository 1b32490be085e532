//! `reconcile` over a large fleet (issue 13): cards' log exports checked (one AES-CMAC each) and matched.
//!
//! `cargo bench --bench reconcile` builds N synthetic card log exports (default 100,000; env
//! `KEYROLL_BENCH_CARDS`) in a ring where card i paid card i+1 twice (one credited, one torn in flight),
//! seals each under its per-card log key, then times `rollout::reconcile` and prints cards per second and
//! whether the target (100,000 cards in under 10 s on one core) is met. The result is checked: issued =
//! balances + in flight, nothing flagged.

use keyroll::crypto::{Secret16, mac};
use keyroll::domain::{Amount, CardSerial, Total};
use keyroll::protocol::ledger::{CARD_LOG_FORMAT, CardLogExport, EntryKind, ExportEntry, OpenDebit, Totals};
use keyroll::rollout::reconcile;
use std::time::Instant;

fn main() {
    let n: u64 = std::env::var("KEYROLL_BENCH_CARDS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let master = Secret16::new([0x4D; 16]);
    let serial = |i: u64| CardSerial::from_u64(1 + (i % n));
    let started = Instant::now();
    let keys: Vec<Secret16> = (0..n).map(|i| reconcile::log_key(&master, &serial(i))).collect();
    let exports: Vec<CardLogExport> = (0..n)
        .map(|i| {
            let e = |kind, c: u64, amount: u64, receipt: u32| ExportEntry {
                sequence: 1,
                kind,
                counterpart: serial(c),
                amount: Amount(amount),
                receipt,
            };
            // Card i: issued 100; paid 10 to i+1 (credited, receipt 1 there) and 5 to i+1 (torn, receipt 2);
            // received 10 from i-1 on its own receipt 1.
            let mut x = CardLogExport {
                format: CARD_LOG_FORMAT.into(),
                serial: serial(i),
                issued: Amount(100),
                balance: Amount(95),
                totals: Totals { debited: 15, credited: 10, refunded: 0 },
                dropped: 0,
                entries: vec![
                    e(EntryKind::Debit, i + 1, 10, 1),
                    e(EntryKind::Debit, i + 1, 5, 2),
                    e(EntryKind::Credit, i + n - 1, 10, 1),
                ],
                open_debits: vec![OpenDebit {
                    payee: serial(i + 1),
                    receipt: 2,
                    amount: Amount(5),
                    exception: false,
                    payer_sequence: 2,
                }],
                receipt_floor: 1,
                receipt_next: 3,
                challenge: [0; 16],
                mac: [0; 16],
            };
            x.mac = mac::cmac(&keys[i as usize], &[&x.mac_input()]);
            x
        })
        .collect();
    println!("built and sealed {n} exports in {:.2} s", started.elapsed().as_secs_f64());
    let by_serial: std::collections::HashMap<CardSerial, usize> = (0..n).map(|i| (serial(i), i as usize)).collect();
    let started = Instant::now();
    let r = reconcile::reconcile(&exports, &[], &|s| keys[by_serial[s]].clone());
    let secs = started.elapsed().as_secs_f64();
    assert!(r.flags.is_empty(), "{:?}", &r.flags[..r.flags.len().min(3)]);
    assert_eq!(
        (r.issued, r.balances, r.in_flight, r.unaccounted),
        (Total(100 * n as u128), Total(95 * n as u128), Total(5 * n as u128), 0)
    );
    let met = if n >= 100_000 && secs < 10.0 {
        "met"
    } else if n < 100_000 {
        "n/a (fewer cards)"
    } else {
        "NOT met"
    };
    println!(
        "reconcile {n} cards' logs: {secs:.2} s, {:.0} cards/s, in flight {} (target: 100,000 cards < 10 s: {met})",
        n as f64 / secs,
        r.in_flight
    );
}
