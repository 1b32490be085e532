//! The back office at scale (issue 14 item 12): custodian unlock time and full `audit log`
//! verification rate at 10k, 100k and 1M cards, against `sha256sum` over the same database file in the
//! same run, and `keyroll audit report` (whole process) on the largest database.
//!
//! ```sh
//! cargo bench --bench backoffice                              # 10k, 100k, 1M cards
//! KEYROLL_BENCH_SIZES=10000,100000 cargo bench --bench backoffice
//! KEYROLL_BENCH_SIZES=1000000 KEYROLL_BENCH_KEEP=/tmp/bo cargo bench --bench backoffice   # keep the databases
//! ```
//!
//! Each database is built through the library, fast (batched inserts, one transaction per 50,000 cards,
//! the head signed once per transaction), but with the same log a personalisation run writes: one
//! `card personalised` entry per card binding its `cards` row, so N cards = N + a few log entries.
//! Unlock is a custodian's `Authority::open` + `unlock` with its checkpoint at the head (as after its
//! last command): it must not depend on N. Goals: unlock < 50 ms at 1M cards; full verification
//! ≥ 25% of `sha256sum`'s speed over the same bytes (the database file).

use keyroll::authority::Authority;
use keyroll::authority::batches::NewBatch;
use keyroll::authority::store::{ToValue, Value};
use keyroll::domain::{Amount, CardSerial, Profile, TransferKeyIdLimit};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CHUNK: u64 = 50_000;

fn die(what: &str) -> ! {
    eprintln!("backoffice bench: {what}");
    std::process::exit(2)
}

/// An issuer database with `n` personalised cards, each with its log entry.
fn build(dir: &Path, n: u64) -> (std::path::PathBuf, std::path::PathBuf) {
    let db = dir.join(format!("cards-{n}.db"));
    let id = dir.join(format!("cards-{n}.identity"));
    let (auth, _) = Authority::init(&db, "Bench Issuer", &[], &id).unwrap_or_else(|e| die(&e.to_string()));
    let u = auth.unlock(Some(&id)).unwrap_or_else(|e| die(&e.to_string()));
    let batch = u
        .new_batch(&NewBatch {
            name: "bench".into(),
            profile: Profile::Symmetric,
            transfer_key_id_limit: TransferKeyIdLimit(10),
            initial_balance: Amount(500),
            max_balance: Amount(100_000),
        })
        .unwrap_or_else(|e| die(&e.to_string()));
    let run: i64 = u
        .write(|c| {
            let run: i64 = c.query_row(
                "INSERT INTO perso_runs (batch_id, target, count, started_at, finished_at) VALUES (?1, 'bench', ?2, 't', 't')
                 RETURNING id",
                vec![batch.row.to_value(), (n as i64).to_value()],
                |r| r.get(0),
            )?;
            u.log(c, "perso run", serde_json::json!({ "run": run, "count": n }))?;
            Ok(run)
        })
        .unwrap_or_else(|e| die(&e.to_string()));
    let at = keyroll::authority::now();
    let mut done = 0u64;
    while done < n {
        let end = (done + CHUNK).min(n);
        u.write(|c| {
            let mut ins = c.prepare_cached(
                "INSERT INTO cards (id, serial, batch_id, run_id, seq, state, profile, transfer_key_id, update_key_id,
                                    transfer_key_id_limit, issued_value, file, reserved_at, personalised_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'personalised', 'symmetric', 1, 1, 10, 500, ?6, ?7, ?7)",
            )?;
            let mut entries = Vec::with_capacity((end - done) as usize);
            for i in done..end {
                let serial = CardSerial::from_u64(0x4B52_0000_0000_0000 + i + 1).to_string();
                let values: Vec<Value> = vec![
                    (i as i64 + 1).to_value(),
                    serial.to_value(),
                    batch.row.to_value(),
                    run.to_value(),
                    (i as i64).to_value(),
                    format!("cards/{serial}.card").to_value(),
                    at.to_value(),
                ];
                ins.execute(values)?;
                entries.push((
                    "card personalised".to_string(),
                    serde_json::json!({ "serial": serial, "batch": "bench", "transfer_key_id": 1, "issued_value": 500 }),
                    vec![("cards", i as i64 + 1)],
                ));
            }
            u.log_many(c, entries)?;
            Ok(())
        })
        .unwrap_or_else(|e| die(&e.to_string()));
        done = end;
    }
    drop(u);
    drop(auth);
    (db, id)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let sizes: Vec<u64> = std::env::var("KEYROLL_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    let tmp = tempfile::tempdir().unwrap_or_else(|e| die(&e.to_string()));
    // KEYROLL_BENCH_KEEP=DIR: build the databases in DIR and keep them (to profile `keyroll audit log`).
    let keep = std::env::var_os("KEYROLL_BENCH_KEEP").map(std::path::PathBuf::from);
    let work = keep.as_deref().unwrap_or(tmp.path());
    let keyroll = env!("CARGO_BIN_EXE_keyroll");
    let mut largest = None;
    let mut goals = Vec::new();
    println!(
        "{:>9} {:>9} {:>10} {:>11} {:>13} {:>13} {:>7}",
        "cards", "log rows", "db MB", "unlock ms", "verify rows/s", "sha256sum MB/s", "ratio"
    );
    for &n in &sizes {
        let t = Instant::now();
        let (db, id) = build(work, n);
        let built = t.elapsed();
        let bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
        // Unlock, as a custodian's command starts: open + unlock with the checkpoint at the head.
        let mut unlocks = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            let auth = Authority::open(&db).unwrap_or_else(|e| die(&e.to_string()));
            let u = auth.unlock(Some(&id)).unwrap_or_else(|e| die(&e.to_string()));
            unlocks.push(t.elapsed());
            drop(u);
        }
        let unlock = median(unlocks);
        // Full verification (what `audit log` does), twice; the better run (warm cache, like sha256sum's).
        let mut best = Duration::MAX;
        let mut rows = 0;
        for _ in 0..2 {
            let t = Instant::now();
            let auth = Authority::open_read_only(&db).unwrap_or_else(|e| die(&e.to_string()));
            let v = auth.verify_log().unwrap_or_else(|e| die(&e.to_string()));
            let d = t.elapsed();
            if !v.intact {
                die(&format!("the built database does not verify: {:?}", v.reason));
            }
            rows = v.rows;
            best = best.min(d);
        }
        // sha256sum over the same file, same run (also twice, the better).
        let mut sha = Duration::MAX;
        for _ in 0..2 {
            let t = Instant::now();
            let o = Command::new("sha256sum").arg(&db).output().unwrap_or_else(|e| die(&format!("sha256sum: {e}")));
            if !o.status.success() {
                die("sha256sum failed");
            }
            sha = sha.min(t.elapsed());
        }
        let mb = bytes as f64 / 1e6;
        let ratio = sha.as_secs_f64() / best.as_secs_f64();
        println!(
            "{n:>9} {rows:>9} {mb:>10.1} {:>11.2} {:>13.0} {:>13.0} {:>6.0}%   (built in {:.1} s)",
            unlock.as_secs_f64() * 1e3,
            rows as f64 / best.as_secs_f64(),
            mb / sha.as_secs_f64(),
            ratio * 100.0,
            built.as_secs_f64()
        );
        goals.push((n, unlock, ratio));
        largest = Some((n, db, id));
    }
    if let Some((n, db, _)) = &largest {
        let root = tmp.path().join("root.der");
        let auth = Authority::open_read_only(db).unwrap_or_else(|e| die(&e.to_string()));
        let der = auth.root().ok().flatten().unwrap_or_default();
        std::fs::write(&root, &der).unwrap_or_else(|e| die(&e.to_string()));
        let expect_root = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der));
        let t = Instant::now();
        let o = Command::new(keyroll)
            .arg("--db")
            .arg(db)
            .args(["--json", "audit", "report", "--expect-root", &expect_root])
            .output()
            .unwrap_or_else(|e| die(&e.to_string()));
        let d = t.elapsed();
        println!(
            "audit report on {n} cards: {:.2} s whole process (`keyroll --db DB --json audit report --expect-root SHA256`), exit {}",
            d.as_secs_f64(),
            o.status.code().unwrap_or(-1)
        );
    }
    for (n, unlock, ratio) in goals {
        if n >= 1_000_000 {
            let ok = unlock < Duration::from_millis(50);
            println!(
                "goal unlock < 50 ms at {n} cards: {:.2} ms: {}",
                unlock.as_secs_f64() * 1e3,
                if ok { "met" } else { "NOT met" }
            );
        }
        let ok = ratio >= 0.25;
        println!(
            "goal full verification >= 25% of sha256sum at {n} cards: {:.0}%: {}",
            ratio * 100.0,
            if ok { "met" } else { "NOT met" }
        );
    }
}
