//! Personalisation lines sharing one issuer (issue 17): cards recorded per second with 1, 2 and 4
//! concurrent `keyroll perso` processes, on SQLite (WAL) and on PostgreSQL, in one run.
//!
//! ```sh
//! cargo bench --bench perso_lines                 # 200 cards per line
//! KEYROLL_BENCH_CARDS=500 cargo bench --bench perso_lines
//! ```
//!
//! Each figure is whole-process: from spawning the N `keyroll perso --out-dir DIR --count C` processes
//! to the last one exiting, on a fresh issuer each time (`init` and `batch new` not timed); cards/s =
//! N × C / that time. PostgreSQL is the tests' private cluster (tests/it/support/postgres.rs; started if
//! needed), over its unix socket. Goals, printed "met" / "NOT met": on PostgreSQL, 4 lines record at
//! least as many cards per second as 1 line (sharing the issuer never slows the fleet down), and every
//! configuration records at least 20 cards/s.
//!
//! What bounds each: every card is one write transaction (card row + audit entry + signed head), and
//! writers queue on one lock per issuer (SQLite's file lock; PostgreSQL's advisory lock), so the
//! recording rate is bounded by that serial section (an ECDSA P-256 signature of the head per card);
//! what parallelises is the work outside it (card keys, the card file). On this 2-core machine the
//! CPU bounds both long before the lock does.

#[path = "../tests/it/support/postgres.rs"]
mod postgres;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn die(what: &str) -> ! {
    eprintln!("perso_lines bench: {what}");
    std::process::exit(2)
}

fn keyroll(dir: &Path, db: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyroll"));
    c.current_dir(dir).env_remove("KEYROLL_DB").env_remove("KEYROLL_IDENTITY").args([
        "--db",
        db,
        "--identity",
        "bench.identity",
    ]);
    c
}

fn ok(mut c: Command) {
    let o = c.output().unwrap_or_else(|e| die(&e.to_string()));
    if !o.status.success() {
        die(&String::from_utf8_lossy(&o.stderr));
    }
}

/// Cards recorded per second by `lines` concurrent perso processes of `cards` each.
fn run(db: &str, lines: usize, cards: u32) -> f64 {
    let dir = tempfile::tempdir().unwrap_or_else(|e| die(&e.to_string()));
    let mut init = keyroll(dir.path(), db);
    init.args(["init", "--issuer", "Bench", "--identity-out", "bench.identity"]);
    ok(init);
    let mut batch = keyroll(dir.path(), db);
    batch.args(["batch", "new", "b", "--profile", "symmetric", "--transfer-key-limit", "3"]);
    ok(batch);
    let t = Instant::now();
    let children: Vec<_> = (0..lines)
        .map(|i| {
            let mut c = keyroll(dir.path(), db);
            c.args(["perso", "--batch", "b", "--out-dir", &format!("line{i}"), "--count", &cards.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            c.spawn().unwrap_or_else(|e| die(&e.to_string()))
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap_or_else(|e| die(&e.to_string()));
        if !o.status.success() {
            die(&String::from_utf8_lossy(&o.stderr));
        }
    }
    (lines as f64 * cards as f64) / t.elapsed().as_secs_f64()
}

fn main() {
    let cards: u32 = std::env::var("KEYROLL_BENCH_CARDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    println!("cards recorded per second, {cards} cards per line, whole processes (`keyroll perso --out-dir`)");
    println!("{:<12} {:>10} {:>10} {:>10}", "engine", "1 line", "2 lines", "4 lines");
    let mut goals = Vec::new();
    let tmp = tempfile::tempdir().unwrap_or_else(|e| die(&e.to_string()));
    for engine in ["sqlite-wal", "postgres"] {
        let mut rates = Vec::new();
        let mut keep = Vec::new();
        for lines in [1usize, 2, 4] {
            let db = match engine {
                "postgres" => {
                    let d = postgres::database();
                    let url = d.url();
                    keep.push(d);
                    url
                }
                _ => tmp.path().join(format!("lines-{lines}.db")).display().to_string(),
            };
            rates.push(run(&db, lines, cards));
        }
        println!("{:<12} {:>10.1} {:>10.1} {:>10.1}", engine, rates[0], rates[1], rates[2]);
        goals.push((format!("{engine}: every configuration >= 20 cards/s"), rates.iter().all(|r| *r >= 20.0)));
        if engine == "postgres" {
            goals.push(("postgres: 4 lines >= 1 line".to_string(), rates[2] >= rates[0]));
        }
    }
    for (goal, met) in goals {
        println!("{goal}: {}", if met { "met" } else { "NOT met" });
    }
}
