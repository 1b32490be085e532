//! Settlements and personalisation over PC/SC: the terminal (`terminal::settle`) and the personalisation
//! script (`perso::personalise`) driving reference cards served by `transport::vpcd::serve` into pcscd's two
//! vpcd readers over loopback, through `transport::pcsc::PcscChannel`.
//!
//! `cargo bench --features pcsc --bench pcsc_settlement` (uses the test harness's pcscd: reuses a running
//! one with vpcd readers, or starts one). Prints APDUs and median / p95 milliseconds per settlement for
//! no roll, a symmetric roll and a public-key roll, and cards personalised per second. Goals: at most 10
//! APDUs and 15 ms without a roll, 40 ms with a public-key roll, at least 20 cards/s personalised.
//!
//! Each roll needs a card pair on different transfer keys, so every sample gets a fresh pair (and every
//! personalisation a blank card). Inserting a card costs a pcscd presence poll (400 ms), which would
//! time the poll, not keyroll; so each reader holds a [`Slot`] that stays inserted and whose card is
//! exchanged while no channel is open. A new channel is opened per settlement (and per card personalised),
//! as a terminal does; timings cover `settle` (or `personalise`) alone, connecting is reported apart.

#[path = "../tests/it/support/pcscd.rs"]
mod pcscd;
#[path = "../tests/it/support/mod.rs"]
mod support;

use keyroll::card::Card;
use keyroll::card::storage::{FileStorage, MemoryStorage, Storage};
use keyroll::domain::{Amount, CardSerial, Profile};
use keyroll::perso::{CertificateIssuer, Line, personalise};
use keyroll::protocol::{Mute, SmartCard};
use keyroll::terminal::{KeyRoll, SettleOptions, settle};
use keyroll::transport::in_process::InProcessChannel;
use keyroll::transport::pcsc::PcscChannel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NO_ROLL_SAMPLES: usize = 200;
const ROLL_SAMPLES: usize = 40;
const PERSO_CARDS: usize = 100;
const PK_PERSO_CARDS: usize = 40;
const WAIT: Option<Duration> = Some(Duration::from_secs(10));

type BoxedCard = Box<dyn SmartCard + Send>;

/// A card inserted in a vpcd reader for the whole bench, whose chip is exchanged between sessions.
#[derive(Clone)]
struct Slot(Arc<Mutex<BoxedCard>>);

impl Slot {
    fn new(card: BoxedCard) -> Self {
        Slot(Arc::new(Mutex::new(card)))
    }

    /// Put another card in: only while no channel to this reader is open.
    fn insert(&self, card: BoxedCard) {
        let mut c = card;
        c.power_on();
        *self.0.lock().unwrap() = c;
    }
}

impl SmartCard for Slot {
    fn atr(&self) -> Vec<u8> {
        self.0.lock().unwrap().atr()
    }
    fn power_on(&mut self) {
        self.0.lock().unwrap().power_on()
    }
    fn power_off(&mut self) {
        self.0.lock().unwrap().power_off()
    }
    fn reset(&mut self) {
        self.0.lock().unwrap().reset()
    }
    fn process(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Mute> {
        self.0.lock().unwrap().process(apdu)
    }
}

/// Median, p95 and max of a sample, in milliseconds.
struct Stats {
    median: f64,
    p95: f64,
    max: f64,
}

fn stats(times: &mut [Duration]) -> Stats {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    Stats { median: ms(at(0.5)), p95: ms(at(0.95)), max: ms(times[times.len() - 1]) }
}

struct Bench {
    slots: [Slot; 2],
    readers: [String; 2],
    ca: support::TestCa,
    next_serial: u64,
}

impl Bench {
    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    fn connect(&self, i: usize) -> PcscChannel {
        PcscChannel::connect(&self.readers[i]).unwrap_or_else(|e| panic!("{}: {e}", self.readers[i]))
    }

    /// A personalised card: public-key cards carry a certificate of the bench's CA and trust it.
    fn card(&mut self, profile: Profile, tk: u32, uk: u32) -> BoxedCard {
        let serial = self.serial();
        match profile {
            Profile::Symmetric => Box::new(support::card(serial, profile, tk, uk, 9, 1_000)),
            _ => Box::new(support::pk_card(serial, profile, tk, uk, 9, 1_000, &self.ca, &self.ca.root.clone())),
        }
    }

    /// `samples` settlements, each between a fresh pair from `pair`; returns APDUs (all equal) and times.
    fn settlements(
        &mut self,
        samples: usize,
        roll: KeyRoll,
        options: &SettleOptions,
        mut pair: impl FnMut(&mut Self) -> (BoxedCard, BoxedCard),
    ) -> (usize, Vec<Duration>, Vec<Duration>) {
        let (mut times, mut connects, mut apdus) = (Vec::new(), Vec::new(), None);
        for _ in 0..samples {
            let (payer, payee) = pair(self);
            self.slots[0].insert(payer);
            self.slots[1].insert(payee);
            let t = Instant::now();
            let (mut a, mut b) = (self.connect(0), self.connect(1));
            connects.push(t.elapsed());
            let t = Instant::now();
            let r = settle(&mut a, &mut b, Amount(1), options).expect("settlement");
            times.push(t.elapsed());
            assert_eq!((r.key_roll, r.amount), (roll, Amount(1)));
            assert_eq!(*apdus.get_or_insert(r.apdus), r.apdus, "every sample takes the same APDUs");
        }
        (apdus.unwrap(), times, connects)
    }

    /// Personalise `count` blank cards through the reader; returns cards per second and APDUs per card.
    fn personalisations(&mut self, count: usize, profile: Profile) -> (f64, usize) {
        let roots = support::test_roots();
        let mut apdus = 0;
        let mut busy = Duration::ZERO;
        for _ in 0..count {
            let serial = self.serial();
            let mut plan = support::plan(serial, profile, 1, 1, 9, 100);
            let issuer: Option<&dyn CertificateIssuer> = if profile == Profile::Symmetric {
                None
            } else {
                plan.trust_anchor = Some(self.ca.root.clone());
                Some(&self.ca)
            };
            let mut storage = MemoryStorage::new();
            storage.store(&support::blank_state_from(support::test_fab()).encode()).expect("memory");
            let blank = Card::open(storage).expect("blank card");
            self.slots[0].insert(Box::new(blank));
            // The line's time per card: connecting to the card and the whole script.
            let t = Instant::now();
            let mut ch = self.connect(0);
            let line = Line { roots: &roots, allow_virtual: false, register: None, issuer, verbose: false };
            let o = personalise(&mut ch, &line, &plan).expect("personalisation");
            drop(ch);
            busy += t.elapsed();
            assert_eq!(o.serial, CardSerial::from_u64(serial));
            apdus = o.apdus;
        }
        (count as f64 / busy.as_secs_f64(), apdus)
    }
}

/// A symmetric card kept in a file in `dir`, personalised in process.
fn file_card(dir: &std::path::Path, serial: u64, tk: u32) -> BoxedCard {
    let state = support::blank_state_from(support::test_fab());
    let mut card = Card::create(FileStorage::new(dir.join(format!("{serial}.card"))), state).expect("card file");
    let plan = support::plan(serial, Profile::Symmetric, tk, 1, 9, 1_000);
    let roots = support::test_roots();
    let line = Line { roots: &roots, allow_virtual: false, register: None, issuer: None, verbose: false };
    let mut ch = InProcessChannel::new(&mut card, "perso");
    personalise(&mut ch, &line, &plan).expect("personalisation");
    drop(ch);
    Box::new(card)
}

/// The same settlement in process: what the cards and the terminal cost without PC/SC.
fn in_process_ms(payer: BoxedCard, payee: BoxedCard) -> f64 {
    in_process_with(payer, payee, &SettleOptions::default())
}

/// As [`in_process_ms`], through a terminal with `options` (a policy file).
fn in_process_with(mut payer: BoxedCard, mut payee: BoxedCard, options: &SettleOptions) -> f64 {
    let t = Instant::now();
    let mut a = InProcessChannel::new(payer.as_mut(), "payer");
    let mut b = InProcessChannel::new(payee.as_mut(), "payee");
    settle(&mut a, &mut b, Amount(1), options).expect("in-process settlement");
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let pc = pcscd::acquire();
    let readers = [pc.reader(0).name.clone(), pc.reader(1).name.clone()];
    let slots = [
        Slot::new(Box::new(Card::open(MemoryStorage::new()).unwrap())),
        Slot::new(Box::new(Card::open(MemoryStorage::new()).unwrap())),
    ];
    let served: Vec<_> = (0..2).map(|i| pcscd::ServedCard::start(slots[i].clone(), &pc.reader(i).addr())).collect();
    for r in &readers {
        drop(PcscChannel::wait_and_connect(r, WAIT).unwrap_or_else(|e| panic!("no card in {r}: {e}")));
    }
    let mut bench = Bench { slots, readers, ca: support::TestCa::new("Bench Issuer"), next_serial: 0 };
    println!("pcsc_settlement: pcscd on loopback, {} and {}", bench.readers[0], bench.readers[1]);
    let plain = SettleOptions::default();

    // No roll: one pair on the same key; the payer alternates so balances stay put.
    let (x, y) = (bench.card(Profile::Symmetric, 1, 1), bench.card(Profile::Symmetric, 1, 1));
    let pair = Arc::new(Mutex::new(Some((x, y))));
    let (apdus, mut times, mut connects) = bench.settlements(NO_ROLL_SAMPLES, KeyRoll::None, &plain, |b| {
        // Take the two cards back out of the slots and swap their roles.
        let (payer, payee) = pair.lock().unwrap().take().unwrap_or_else(|| {
            let blank = || Box::new(Card::open(MemoryStorage::new()).unwrap()) as BoxedCard;
            let payer = std::mem::replace(&mut *b.slots[0].0.lock().unwrap(), blank());
            let payee = std::mem::replace(&mut *b.slots[1].0.lock().unwrap(), blank());
            (payee, payer)
        });
        (payer, payee)
    });
    let local = in_process_ms(bench.card(Profile::Symmetric, 1, 1), bench.card(Profile::Symmetric, 1, 1));
    report("no roll (symmetric cards)", apdus, &mut times, &mut connects, local, 15.0, Some(10));

    let (apdus, mut times, mut connects) = bench.settlements(ROLL_SAMPLES, KeyRoll::Symmetric, &plain, |b| {
        (b.card(Profile::Symmetric, 1, 1), b.card(Profile::Symmetric, 2, 1))
    });
    let local = in_process_ms(bench.card(Profile::Symmetric, 1, 1), bench.card(Profile::Symmetric, 2, 1));
    report("symmetric roll", apdus, &mut times, &mut connects, local, f64::INFINITY, None);

    let (apdus, mut times, mut connects) = bench.settlements(ROLL_SAMPLES, KeyRoll::PublicKey, &plain, |b| {
        (b.card(Profile::PublicKey, 1, 0), b.card(Profile::PublicKey, 2, 0))
    });
    let local = in_process_ms(bench.card(Profile::PublicKey, 1, 0), bench.card(Profile::PublicKey, 2, 0));
    report("public-key roll (public-key cards)", apdus, &mut times, &mut connects, local, 40.0, None);

    let (apdus, mut times, mut connects) = bench.settlements(ROLL_SAMPLES, KeyRoll::PublicKey, &plain, |b| {
        (b.card(Profile::Hybrid, 1, 1), b.card(Profile::Hybrid, 2, 2))
    });
    let local = in_process_ms(bench.card(Profile::Hybrid, 1, 1), bench.card(Profile::Hybrid, 2, 2));
    report("public-key roll (hybrid cards, other update keys)", apdus, &mut times, &mut connects, local, 40.0, None);

    let (apdus, mut times, mut connects) = bench.settlements(ROLL_SAMPLES, KeyRoll::None, &plain, |b| {
        (b.card(Profile::Hybrid, 1, 1), b.card(Profile::Hybrid, 1, 1))
    });
    let local = in_process_ms(bench.card(Profile::Hybrid, 1, 1), bench.card(Profile::Hybrid, 1, 1));
    report("no roll (hybrid cards: info carries certificates)", apdus, &mut times, &mut connects, local, 15.0, None);

    // Issue 12: the issuer's policy spreading before value moves, over pcscd. Fresh symmetric cards on
    // policy 1 each time: the terminal carries policy 2 (`settle --policy FILE`) and pushes it to both; or
    // the payer took policy 2 earlier (in process, not timed) and gives it to the payee, the terminal
    // carrying none. Compare with "no roll (symmetric cards)", whose cards share a policy.
    let policy = support::test_policy(2, &[(0xDEAD, 5)], 1);
    let with_file = SettleOptions { policy: Some(policy), ..Default::default() };
    let (apdus, mut times, mut connects) = bench.settlements(ROLL_SAMPLES, KeyRoll::None, &with_file, |b| {
        (b.card(Profile::Symmetric, 1, 1), b.card(Profile::Symmetric, 1, 1))
    });
    let local = in_process_with(bench.card(Profile::Symmetric, 1, 1), bench.card(Profile::Symmetric, 1, 1), &with_file);
    report("policy spread (file -> both cards)", apdus, &mut times, &mut connects, local, f64::INFINITY, None);
    let on_policy_2 = |b: &mut Bench| {
        let (mut a, mut other) = (b.card(Profile::Symmetric, 1, 1), b.card(Profile::Symmetric, 1, 1));
        let mut ca = InProcessChannel::new(a.as_mut(), "a");
        let mut co = InProcessChannel::new(other.as_mut(), "other");
        settle(&mut ca, &mut co, Amount(0), &with_file).expect("policy 2 to the payer");
        drop(ca);
        a
    };
    let (apdus, mut times, mut connects) =
        bench.settlements(ROLL_SAMPLES, KeyRoll::None, &plain, |b| (on_policy_2(b), b.card(Profile::Symmetric, 1, 1)));
    let local = in_process_ms(on_policy_2(&mut bench), bench.card(Profile::Symmetric, 1, 1));
    report("policy spread (card -> card)", apdus, &mut times, &mut connects, local, f64::INFINITY, None);

    // The same with card files, as `keyroll card serve` keeps them: every card write is a file written,
    // synced and renamed.
    let dir = tempfile::tempdir().expect("temporary directory");
    let (apdus, mut times, mut connects) = bench.settlements(ROLL_SAMPLES, KeyRoll::None, &plain, |b| {
        let (x, y) = (b.serial(), b.serial());
        (file_card(dir.path(), x, 1), file_card(dir.path(), y, 1))
    });
    let local = in_process_ms(file_card(dir.path(), 9_001, 1), file_card(dir.path(), 9_002, 1));
    report("no roll (symmetric card files, synced writes)", apdus, &mut times, &mut connects, local, 15.0, Some(10));

    for (profile, count) in [(Profile::Symmetric, PERSO_CARDS), (Profile::PublicKey, PK_PERSO_CARDS)] {
        let (rate, apdus) = bench.personalisations(count, profile);
        let verdict = if rate >= 20.0 { "met" } else { "NOT met" };
        println!(
            "  personalisation, {profile:<10}  {apdus:>3} APDUs/card  {rate:7.1} cards/s over {count} cards  (goal 20 cards/s: {verdict})"
        );
    }
    for s in served {
        let (_, r, _, _) = s.stop();
        r.expect("serve");
    }
}

fn report(
    what: &str,
    apdus: usize,
    times: &mut [Duration],
    connects: &mut [Duration],
    in_process: f64,
    goal_ms: f64,
    goal_apdus: Option<usize>,
) {
    let n = times.len();
    let s = stats(times);
    let c = stats(connects);
    let mut verdict = String::new();
    if goal_ms.is_finite() {
        verdict += &format!("goal {goal_ms} ms: {}", if s.median <= goal_ms { "met" } else { "NOT met" });
    }
    if let Some(g) = goal_apdus {
        verdict += &format!("; goal {g} APDUs: {}", if apdus <= g { "met" } else { "NOT met" });
    }
    println!(
        "  settlement, {what:<50} {apdus:>3} APDUs  median {:6.2} ms  p95 {:6.2} ms  max {:6.2} ms  ({n} samples; \
         in process {in_process:.2} ms; connecting both readers median {:.2} ms)  {verdict}",
        s.median, s.p95, s.max, c.median
    );
}
