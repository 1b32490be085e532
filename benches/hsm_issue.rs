//! Card certificates issued per second with the CA key in a PKCS #11 token (SoftHSM2) through 1 and 2
//! sessions, as a ratio to in-process issuance (AWS-LC) in the same run (issue 16).
//!
//! Run: `cargo bench --bench hsm_issue` (`KEYROLL_BENCH_N=5000` overrides the 2,000 certificates per
//! measurement). Needs SoftHSM2 (`/usr/lib/softhsm/libsofthsm2.so`, `softhsm2-util`); the token lives
//! in a temporary directory of its own (`SOFTHSM2_CONF`), never the machine's default token directory.
//!
//! Each measurement is `ca::issue_batch` (the CA's parallel batch path) on a rayon pool of 1 or 2
//! threads: with the key in the token every signature is a `C_Sign` (`CKM_ECDSA` over the SHA-256
//! digest) on a session the pool lends to that thread alone, so 1 thread = 1 session, 2 threads = 2
//! sessions. Goal: 2 sessions issue at least 1.5 x what 1 session does (the pool lets bulk issuance use
//! both cores). A sample of the token-signed certificates is verified by `openssl verify`.

use keyroll::authority::ca::{self, CaKey, CardCertRequest, IssuerCa, PEM_CERTIFICATE, ValidityPeriod};
use keyroll::authority::pkcs11::{AuthPin, Role, Token, TokenSpec};
use keyroll::crypto::card_key::CardKeyPair;
use keyroll::domain::CardSerial;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "246810";
const GOAL: f64 = 1.5;

fn issue(key: &CaKey, root: &[u8], requests: &[CardCertRequest], threads: usize) -> (Vec<Vec<u8>>, Duration) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let start = Instant::now();
    let certs = pool.install(|| ca::issue_batch(key, root, requests)).expect("issue_batch");
    (certs, start.elapsed())
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("KEYROLL_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tokens")).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.path().join("tokens").display()
        ),
    )
    .unwrap();
    // SoftHSM2 reads its configuration when the module initialises, below; no other thread exists yet.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let o = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "bench", "--pin", PIN, "--so-pin", "13579135"])
        .output()
        .expect("softhsm2-util (Debian package softhsm2)");
    assert!(o.status.success(), "softhsm2-util: {}", String::from_utf8_lossy(&o.stderr));

    let token = Token::open_with(&TokenSpec { module: MODULE.into(), label: "bench".into() }, || {
        Ok(AuthPin::from(PIN.to_string()))
    })
    .expect("open the SoftHSM2 token");
    let in_token = CaKey::from_signer(Arc::new(token.generate_signing_key(Role::Ca, "bench").unwrap()));
    let in_process = CaKey::generate().unwrap();
    let t = SystemTime::now();
    let validity = ValidityPeriod { not_before: t, not_after: t + Duration::from_secs(365 * 86400) };
    let root_token = IssuerCa::certify_root(&in_token, "Bench Transit", validity).unwrap();
    let root_local = IssuerCa::certify_root(&in_process, "Bench Transit", validity).unwrap();
    let requests: Vec<CardCertRequest> = (0..n)
        .map(|i| CardCertRequest {
            serial: CardSerial::from_u64(0x4B52_0000_0000_0000 + i as u64),
            public_key_sec1: CardKeyPair::generate().unwrap().public_key_sec1().to_vec(),
            validity,
        })
        .collect();

    // Warm-up (first sessions, page cache), not timed.
    issue(&in_token, &root_token, &requests[..n.min(50)], 2);
    let (_, local1) = issue(&in_process, &root_local, &requests, 1);
    let (_, local2) = issue(&in_process, &root_local, &requests, 2);
    let (_, token1) = issue(&in_token, &root_token, &requests, 1);
    let (certs, token2) = issue(&in_token, &root_token, &requests, 2);
    let sessions = token.pool().idle();

    // openssl checks a sample of what the token signed.
    let root_pem = ca::pem_encode(PEM_CERTIFICATE, &root_token).unwrap();
    std::fs::write(dir.path().join("root.pem"), root_pem).unwrap();
    let mut bundle = String::new();
    for c in certs.iter().step_by((n / 20).max(1)) {
        bundle.push_str(&ca::pem_encode(PEM_CERTIFICATE, c).unwrap());
    }
    std::fs::write(dir.path().join("sample.pem"), &bundle).unwrap();
    let v = Command::new("openssl")
        .current_dir(dir.path())
        .args(["verify", "-CAfile", "root.pem", "sample.pem"])
        .output()
        .expect("openssl CLI");
    assert!(
        v.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    let (l1, l2, t1, t2) = (rate(n, local1), rate(n, local2), rate(n, token1), rate(n, token2));
    println!(
        "hsm_issue: {n} card certificates per measurement, {} CPU(s)",
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    println!("  in process (AWS-LC), 1 thread : {l1:>9.0} certificates/s");
    println!("  in process (AWS-LC), 2 threads: {l2:>9.0} certificates/s");
    println!("  SoftHSM2, 1 session           : {t1:>9.0} certificates/s  ({:.3} x in process, 1 thread)", t1 / l1);
    println!("  SoftHSM2, 2 sessions          : {t2:>9.0} certificates/s  ({:.3} x in process, 2 threads)", t2 / l2);
    println!("  sessions open after the run   : {sessions} (at most one per thread that signed at once)");
    println!("  openssl verify of a sample    : OK");
    let speedup = t2 / t1;
    println!(
        "goal: 2 sessions >= {GOAL} x 1 session: {speedup:.2} x: {}",
        if speedup >= GOAL { "met" } else { "NOT met" }
    );
    println!(
        "bound: each certificate costs one C_Sign in SoftHSM2 (its own OpenSSL ECDSA, object lookup and a session \
         lock per call) instead of one AWS-LC signature in process; the TBS building around it is the same"
    );
}
