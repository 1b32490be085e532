//! Issue and store N card certificates (default 100,000; `KEYROLL_BENCH_N` overrides) and compare with
//! the `openssl` CLI in the same run, with a verdict per goal (issue 15):
//! - issue + store on 2 threads >= 1.4 x `openssl speed ecdsap256`'s one-core sign rate;
//! - issue + store on 2 threads >= 1,000 x a loop of `openssl x509 -req` (one process per certificate).
//!
//! Run: `cargo bench --bench ca_issue` (or `KEYROLL_BENCH_N=20000 cargo bench --bench ca_issue`).
//!
//! - keyroll: `issue_batch` on a 2-thread rayon pool (the machine's 2 cores), card public keys
//!   generated beforehand and not timed. "issue + store": the pool issues chunks of 4,096 while one
//!   thread inserts each finished chunk into a SQLite table in a temporary file (WAL, one
//!   transaction); the wall-clock time from the first certificate to the commit. Issue alone is
//!   reported too, and issue on 1 thread per CPU-second.
//! - openssl: a loop of `openssl x509 -req -CA root.pem -CAkey ca.der -force_pubkey card.pem` on a
//!   sample (default 50, `KEYROLL_BENCH_OPENSSL_N`), one process per certificate, as a shell script
//!   would do it. The CA key is written to the benchmark's temporary directory for openssl and deleted
//!   with it.
//! - `openssl speed -seconds 1 ecdsap256` sign/s (per CPU-second: it divides by CPU user time unless
//!   `-elapsed`, so a busy machine does not lower it) against keyroll's own one-core sign rate, also
//!   per CPU-second (`CLOCK_PROCESS_CPUTIME_ID`).
//!
//! The benchmark also hands a sample of its certificates to `openssl verify`, so a fast but broken
//! CA does not report a number.

#[path = "../tests/it/support/mod.rs"]
mod support;

use keyroll::authority::ca::{self, CardCertRequest, IssuerCa, PEM_CERTIFICATE, ValidityPeriod};
use keyroll::crypto::card_key::CardKeyPair;
use keyroll::domain::CardSerial;
use rayon::prelude::*;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

const THREADS: usize = 2;
/// Certificates per chunk handed from the issuing pool to the storing thread.
const CHUNK: usize = 4096;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name} must be a positive integer, got {v:?}")),
        Err(_) => default,
    }
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl").args(args).output().expect("the openssl CLI is needed for this benchmark")
}

/// CPU seconds (user + system, all threads) this process has used (`CLOCK_PROCESS_CPUTIME_ID`,
/// nanosecond resolution; `/proc/self/stat` counted 10 ms ticks).
fn cpu_seconds() -> Option<f64> {
    Some(support::cpu_time().as_secs_f64())
}

/// `openssl speed -seconds 1 ecdsap256`: (sign/s, verify/s) from the `nistp256` result line.
fn openssl_speed() -> Option<(f64, f64)> {
    let out = openssl(&["speed", "-seconds", "1", "ecdsap256"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("nistp256") && l.contains("ecdsa"))?;
    let nums: Vec<f64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    // "256 bits ecdsa (nistp256) 0.0000s 0.0001s 43187.9 14611.0": the last two numbers.
    match nums.as_slice() {
        [.., sign, verify] => Some((*sign, *verify)),
        _ => None,
    }
}

/// keyroll's single-core ECDSA P-256 / SHA-256 sign rate (`crypto::ec`, AWS-LC) over a certificate-sized message, per
/// CPU-second when `/proc` is there (as `openssl speed` divides by CPU user time unless `-elapsed`),
/// else per wall-clock second.
fn keyroll_sign_rate() -> f64 {
    let key = keyroll::crypto::ec::KeyPair::generate().unwrap();
    let msg = vec![0x5Au8; 380];
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut n = 0usize;
    loop {
        for _ in 0..100 {
            std::hint::black_box(key.sign_message(&msg).unwrap());
        }
        n += 100;
        let cpu = cpu0.zip(cpu_seconds()).map(|(a, b)| b - a);
        match cpu {
            Some(c) if c >= 1.0 => return n as f64 / c,
            None if start.elapsed() >= Duration::from_secs(1) => return rate(n, start.elapsed()),
            _ if start.elapsed() >= Duration::from_secs(20) => return rate(n, start.elapsed()),
            _ => {}
        }
    }
}

fn main() {
    let n = env_usize("KEYROLL_BENCH_N", 100_000);
    let n_openssl = env_usize("KEYROLL_BENCH_OPENSSL_N", 50);
    let dir = tempfile::tempdir().unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(THREADS).build().unwrap();

    let now = SystemTime::now();
    let validity = ValidityPeriod { not_before: now, not_after: now + Duration::from_secs(365 * 86_400) };
    let (ca_key, root_der) = IssuerCa::create_root("Keyroll Bench Issuer", validity).unwrap();

    println!("ca_issue: N = {n} card certificates, {THREADS} threads");
    let t = Instant::now();
    let requests: Vec<CardCertRequest> = pool.install(|| {
        (0..n as u64)
            .into_par_iter()
            .map(|i| CardCertRequest {
                serial: CardSerial::from_u64(i),
                public_key_sec1: CardKeyPair::generate().unwrap().public_key_sec1().to_vec(),
                validity,
            })
            .collect()
    });
    println!("  (setup: {n} card key pairs generated in {:.2} s, not timed below)", t.elapsed().as_secs_f64());

    // One thread first, on a slice: the per-core cost of a certificate, to compare with the per-core
    // sign rate below (less sensitive to other load on the machine than the 2-thread figure).
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let slice = &requests[..n.min(5_000)];
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let single = one.install(|| ca::issue_batch(&ca_key, &root_der, slice)).unwrap();
    let wall = t.elapsed();
    let single_rate = match cpu0.zip(cpu_seconds()).map(|(a, b)| b - a) {
        Some(cpu) if cpu > 0.0 => single.len() as f64 / cpu,
        _ => rate(single.len(), wall),
    };
    drop(single);
    println!(
        "keyroll: issue on 1 thread {single_rate:.0} certs per CPU-second ({} certs, {:.0} per wall-second)",
        slice.len(),
        rate(slice.len(), wall)
    );

    // Issue alone on the 2-thread pool (context for the figure below).
    let cpu_before = cpu_seconds();
    let t = Instant::now();
    let certs = pool.install(|| ca::issue_batch(&ca_key, &root_der, &requests)).unwrap();
    let issue_time = t.elapsed();
    let issue_cpu = cpu_before.zip(cpu_seconds()).map(|(a, b)| b - a);
    let avg_len = certs.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    println!(
        "keyroll: issue alone {:.0} certs/s ({:.2} s, {THREADS} threads); average DER {avg_len:.0} bytes",
        rate(n, issue_time),
        issue_time.as_secs_f64()
    );
    if let Some(cpu) = issue_cpu.filter(|c| *c > 0.0) {
        println!(
            "keyroll: issue used {cpu:.2} CPU-s = {:.1} us CPU per certificate; {:.1} of {THREADS} cores busy on average",
            1e6 * cpu / n as f64,
            cpu / issue_time.as_secs_f64(),
        );
    }

    // Issue + store, the goal's figure: the 2-thread pool issues chunks while one thread inserts
    // every finished chunk into a fresh SQLite file (WAL, one transaction), on the machine's 2 cores.
    let db_path = dir.path().join("bench.db");
    let t = Instant::now();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(CardSerial, Vec<u8>)>>(4);
    let stored = std::thread::scope(|s| {
        let storer = s.spawn(|| {
            let mut db = rusqlite::Connection::open(&db_path).unwrap();
            db.pragma_update(None, "journal_mode", "WAL").unwrap();
            db.execute_batch("CREATE TABLE card_certificate (card_serial BLOB PRIMARY KEY, der BLOB NOT NULL) STRICT;")
                .unwrap();
            let db_tx = db.transaction().unwrap();
            {
                let mut insert =
                    db_tx.prepare("INSERT INTO card_certificate (card_serial, der) VALUES (?1, ?2)").unwrap();
                for chunk in rx {
                    for (serial, der) in chunk {
                        insert.execute(rusqlite::params![&serial.0[..], der]).unwrap();
                    }
                }
            }
            db_tx.commit().unwrap();
            db.query_row("SELECT count(*) FROM card_certificate", [], |r| r.get::<_, i64>(0)).unwrap()
        });
        pool.install(|| {
            for chunk in requests.chunks(CHUNK) {
                let certs = ca::issue_batch(&ca_key, &root_der, chunk).unwrap();
                tx.send(chunk.iter().map(|r| r.serial).zip(certs).collect()).unwrap();
            }
        });
        drop(tx);
        storer.join().unwrap()
    });
    let total = t.elapsed();
    assert_eq!(stored as usize, n, "not every certificate was stored");
    let keyroll_rate = rate(n, total);
    println!(
        "keyroll: issue + store {keyroll_rate:.0} certs/s ({:.2} s: {THREADS}-thread pool issuing chunks of {CHUNK}, \
         one thread storing into SQLite)",
        total.as_secs_f64()
    );

    // Sanity: openssl accepts a spread of what was just timed.
    let root_pem = dir.path().join("root.pem");
    std::fs::write(&root_pem, ca::pem_encode(PEM_CERTIFICATE, &root_der).unwrap()).unwrap();
    let mut sample_paths = Vec::new();
    for (k, i) in (0..n).step_by((n / 8).max(1)).enumerate() {
        let path = dir.path().join(format!("sample{k}.pem"));
        std::fs::write(&path, ca::pem_encode(PEM_CERTIFICATE, &certs[i]).unwrap()).unwrap();
        sample_paths.push(path.to_str().unwrap().to_string());
    }
    let mut args = vec!["verify", "-CAfile", root_pem.to_str().unwrap()];
    args.extend(sample_paths.iter().map(String::as_str));
    let out = openssl(&args);
    assert!(out.status.success(), "openssl verify refused benchmark output: {}", String::from_utf8_lossy(&out.stderr));
    println!("  (openssl verify accepted {} sampled certificates)", sample_paths.len());

    // openssl x509 -req loop on a sample. A throwaway CSR signed by a throwaway key; -force_pubkey
    // puts each card's key in the certificate, -subj names the card, -extfile gives our extensions.
    let ca_key_path = dir.path().join("ca.key.der");
    std::fs::write(&ca_key_path, ca_key.to_pkcs8_der().unwrap().expose()).unwrap();
    let csr_key = dir.path().join("csr.key");
    let csr = dir.path().join("dummy.csr");
    assert!(
        openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", csr_key.to_str().unwrap()])
            .status
            .success()
    );
    assert!(
        openssl(&[
            "req",
            "-new",
            "-key",
            csr_key.to_str().unwrap(),
            "-subj",
            "/CN=dummy",
            "-out",
            csr.to_str().unwrap()
        ])
        .status
        .success()
    );
    let ext = dir.path().join("card.ext");
    std::fs::write(
        &ext,
        "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyAgreement\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n",
    )
    .unwrap();
    let mut card_pubs = Vec::new();
    for (i, r) in requests.iter().take(n_openssl).enumerate() {
        let spki = keyroll::crypto::ec::PublicKey::from_sec1(&r.public_key_sec1).unwrap().to_spki_der();
        let pem = der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &spki).unwrap();
        let path = dir.path().join(format!("card{i}.pub.pem"));
        std::fs::write(&path, pem).unwrap();
        card_pubs.push((path, r.serial));
    }
    let t = Instant::now();
    for (i, (pub_path, serial)) in card_pubs.iter().enumerate() {
        let out_path = dir.path().join(format!("openssl{i}.der"));
        let mut serial_bytes = keyroll::crypto::random::bytes::<16>().unwrap();
        serial_bytes[0] = (serial_bytes[0] & 0x3F) | 0x40;
        let serial_hex = format!("0x{}", hex::encode(serial_bytes));
        let subj = format!("/O=Keyroll Bench Issuer/CN=card {serial}/serialNumber={serial}");
        let out = openssl(&[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            root_pem.to_str().unwrap(),
            "-CAkey",
            ca_key_path.to_str().unwrap(),
            "-CAkeyform",
            "DER",
            "-force_pubkey",
            pub_path.to_str().unwrap(),
            "-subj",
            &subj,
            "-set_serial",
            &serial_hex,
            "-days",
            "365",
            "-sha256",
            "-extfile",
            ext.to_str().unwrap(),
            "-outform",
            "DER",
            "-out",
            out_path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "openssl x509 -req failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let openssl_time = t.elapsed();
    let openssl_rate = rate(card_pubs.len(), openssl_time);
    println!(
        "openssl x509 -req loop: {} certs in {:.2} s = {:.0} certs/s (one process per certificate)",
        card_pubs.len(),
        openssl_time.as_secs_f64(),
        openssl_rate
    );

    // The bound: raw P-256 signing, AWS-LC through keyroll's own key type against the openssl CLI.
    let ours = keyroll_sign_rate();
    let Some((sign, verify)) = openssl_speed() else {
        println!("openssl speed output not understood: no verdict");
        std::process::exit(2);
    };
    println!(
        "P-256 signs per CPU-second, one core: openssl speed {sign:.0} (verify {verify:.0}/s), keyroll ({}) {ours:.0}",
        keyroll::crypto::ec::BACKEND
    );
    if let Some(cpu) = issue_cpu.filter(|c| *c > 0.0) {
        println!(
            "  issue alone reached {:.0}% of keyroll's own signing bound on {THREADS} cores ({:.0} certs per CPU-second \
             on 1 thread = {:.0}% of one core's signs)",
            100.0 * rate(n, issue_time) / (ours * THREADS as f64),
            single_rate,
            100.0 * single_rate / ours
        );
        let _ = cpu;
    }
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let goal_sign = 1.4 * sign;
    println!(
        "goal: issue+store ({THREADS} threads) >= 1.4 x openssl speed one-core sign rate: {keyroll_rate:.0} vs \
         {goal_sign:.0} (= 1.4 x {sign:.0}), ratio {:.2} -> {}",
        keyroll_rate / sign,
        verdict(keyroll_rate >= goal_sign)
    );
    println!(
        "goal: issue+store ({THREADS} threads) >= 1000 x openssl x509 -req loop: {keyroll_rate:.0} vs {:.0} \
         (= 1000 x {openssl_rate:.1}), ratio {:.0} -> {}",
        1000.0 * openssl_rate,
        keyroll_rate / openssl_rate,
        verdict(keyroll_rate >= 1000.0 * openssl_rate)
    );
}
