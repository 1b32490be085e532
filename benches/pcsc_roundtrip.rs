//! APDU round trips through pcscd to a card served by `transport::vpcd::serve`: the cost every terminal
//! and personalisation command pays over PC/SC. DESIGN.md §5: ~48 ms per APDU without TCP_NODELAY and
//! TCP_QUICKACK on the card's socket, ~0.18 ms with them.
//!
//! `cargo bench --features pcsc --bench pcsc_roundtrip` (uses the test harness's pcscd: reuses a
//! running one with vpcd readers, or starts one). Prints median, p95 and p99 in milliseconds.

#[path = "../tests/it/support/pcscd.rs"]
mod pcscd;

use keyroll::protocol::{Mute, SmartCard};
use keyroll::transport::CardChannel;
use keyroll::transport::pcsc::PcscChannel;
use std::time::{Duration, Instant};

const ROUNDS: usize = 2_000;
const WARM_UP: usize = 50;

/// Answers every APDU with its data and 9000, as the test card's ECHO does.
struct EchoCard;

impl SmartCard for EchoCard {
    fn atr(&self) -> Vec<u8> {
        vec![0x3B, 0x80, 0x80, 0x01, 0x01]
    }
    fn power_on(&mut self) {}
    fn power_off(&mut self) {}
    fn reset(&mut self) {}
    fn process(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Mute> {
        let mut r = apdu.get(5..apdu.len().saturating_sub(1)).unwrap_or_default().to_vec();
        r.extend_from_slice(&[0x90, 0x00]);
        Ok(r)
    }
}

fn main() {
    let pc = pcscd::acquire();
    let reader = pc.reader(0).clone();
    let served = pcscd::ServedCard::start(EchoCard, &reader.addr());
    let mut ch = PcscChannel::wait_and_connect(&reader.name, Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("no card in {}: {e}", reader.name));
    // A 16-byte case 4 command, the size of a challenge or a MAC.
    let mut apdu = vec![0x80, 0xE0, 0x00, 0x00, 0x10];
    apdu.extend_from_slice(&[0xA5; 16]);
    apdu.push(0x00);

    for _ in 0..WARM_UP {
        ch.transmit(&apdu).expect("warm-up APDU");
    }
    let mut times = Vec::with_capacity(ROUNDS);
    let total = Instant::now();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let r = ch.transmit(&apdu).expect("APDU");
        times.push(t.elapsed());
        assert_eq!(r.len(), 18, "echo answers 16 bytes and 9000");
    }
    let total = total.elapsed();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "pcsc_roundtrip: {ROUNDS} APDUs via pcscd to {}: median {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, max {:.3} ms, total {:.2} s",
        reader.name,
        ms(at(0.5)),
        ms(at(0.95)),
        ms(at(0.99)),
        ms(times[times.len() - 1]),
        total.as_secs_f64()
    );
    drop(ch);
    let _ = served.stop();
}
