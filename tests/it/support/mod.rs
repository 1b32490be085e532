//! Shared helpers of the integration tests: deterministic key generations, card plans and
//! personalised in-memory reference cards (built by the real personalisation script).
#![allow(dead_code)]

pub mod cli;
#[cfg(feature = "pcsc")]
pub mod pcscd;
pub mod postgres;

use keyroll::card::Card;
use keyroll::card::storage::{MemoryStorage, TearingStorage};
use keyroll::crypto::{Secret16, TransferKey, UpdateKey};
use keyroll::domain::*;
use keyroll::perso::{CardPlan, personalise};
use keyroll::protocol::SmartCard;
use keyroll::terminal::{SettleError, SettleOptions, SettlementReport, settle};
use keyroll::transport::in_process::InProcessChannel;

pub type TestCard = Card<TearingStorage<MemoryStorage>>;

pub const MASTER: [u8; 16] = [0x4D; 16];

/// The transfer key of generation `id` (the same for every card of that generation).
pub fn transfer_key(id: u32) -> TransferKey {
    let mut b = [0x70u8; 16];
    b[..4].copy_from_slice(&id.to_be_bytes());
    TransferKey::new(TransferKeyId(id), Secret16::new(b))
}

pub fn update_key(id: u32) -> UpdateKey {
    let mut b = [0x55u8; 16];
    b[..4].copy_from_slice(&id.to_be_bytes());
    UpdateKey::new(UpdateKeyId(id), Secret16::new(b))
}

pub fn plan(serial: u64, profile: Profile, tk: u32, uk: u32, limit: u32, balance: u64) -> CardPlan {
    let transfer_keys =
        if profile == Profile::MultiKey { (1..=limit).map(transfer_key).collect() } else { vec![transfer_key(tk)] };
    CardPlan {
        serial: CardSerial::from_u64(serial),
        profile,
        transfer_keys,
        selected: TransferKeyId(tk),
        update_key: profile.has_update_key().then(|| update_key(uk)),
        limit: TransferKeyIdLimit(limit),
        initial_balance: Amount(balance),
        max_balance: Amount(1_000_000),
        trust_anchor: None,
    }
}

/// A blank in-memory card personalised by the real script.
pub fn card_from(plan: &CardPlan) -> TestCard {
    let mut card = Card::open(TearingStorage::new(MemoryStorage::new())).expect("blank card");
    {
        let mut ch = InProcessChannel::new(&mut card, "perso");
        personalise(&mut ch, &Secret16::new(MASTER), plan, None, false).expect("personalisation");
    }
    card
}

pub fn card(serial: u64, profile: Profile, tk: u32, uk: u32, limit: u32, balance: u64) -> TestCard {
    card_from(&plan(serial, profile, tk, uk, limit, balance))
}

pub fn settle_cards(payer: &mut TestCard, payee: &mut TestCard, amount: u64) -> Result<SettlementReport, SettleError> {
    let mut a = InProcessChannel::new(payer, "payer");
    let mut b = InProcessChannel::new(payee, "payee");
    settle(&mut a, &mut b, Amount(amount), &SettleOptions::default())
}

/// Send raw APDU bytes (after selecting the application) and return the status word.
pub fn raw(card: &mut TestCard, apdu: &[u8]) -> u16 {
    let r = card.process(apdu).expect("card powered");
    u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]])
}

pub fn select(card: &mut TestCard) {
    let mut a = vec![0x00, 0xA4, 0x04, 0x00, keyroll::protocol::AID.len() as u8];
    a.extend_from_slice(&keyroll::protocol::AID);
    assert_eq!(raw(card, &a), 0x9000);
}

/// The persisted bytes of a card.
pub fn persisted(card: &TestCard) -> Vec<u8> {
    card.storage().inner.record().expect("written").to_vec()
}

/// A test CA issuing card certificates with a chosen validity.
pub struct TestCa {
    pub key: keyroll::authority::ca::CaKey,
    pub root: Vec<u8>,
    pub not_before: std::time::SystemTime,
    pub not_after: std::time::SystemTime,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        use keyroll::authority::ca::{IssuerCa, ValidityPeriod};
        use std::time::{Duration, SystemTime};
        let now = SystemTime::now();
        let (key, root) = IssuerCa::create_root(
            name,
            ValidityPeriod {
                not_before: now - Duration::from_secs(86400),
                not_after: now + Duration::from_secs(86400 * 3650),
            },
        )
        .unwrap();
        TestCa {
            key,
            root,
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(86400 * 365),
        }
    }
}

impl keyroll::perso::CertificateIssuer for TestCa {
    fn issue(&self, serial: CardSerial, public_key_sec1: &[u8]) -> Result<Vec<u8>, String> {
        keyroll::authority::ca::issue_card_certificate(
            &self.key,
            &self.root,
            serial,
            public_key_sec1,
            self.not_before,
            self.not_after,
        )
        .map_err(|e| e.to_string())
    }
}

/// A public-key or hybrid card certified by `ca`, trusting `anchor` (normally `ca.root`).
pub fn pk_card(
    serial: u64,
    profile: Profile,
    tk: u32,
    uk: u32,
    limit: u32,
    balance: u64,
    ca: &TestCa,
    anchor: &[u8],
) -> TestCard {
    let mut p = plan(serial, profile, tk, uk, limit, balance);
    p.trust_anchor = Some(anchor.to_vec());
    let mut card = Card::open(TearingStorage::new(MemoryStorage::new())).expect("blank card");
    {
        let mut ch = InProcessChannel::new(&mut card, "perso");
        personalise(&mut ch, &Secret16::new(MASTER), &p, Some(ca), false).expect("personalisation");
    }
    card
}

/// The environment variable `scripts/test` (CI) sets: conformance vectors must be present.
pub const REQUIRE_VECTORS: &str = "KEYROLL_REQUIRE_VECTORS";

/// Conformance vectors (read from `../shared/vectors`, never copied into the project) are missing: under
/// CI (`KEYROLL_REQUIRE_VECTORS=1`, set by `scripts/test`) the test fails; elsewhere it says loudly that
/// it checked nothing and passes, so a clone without `../shared` still builds and tests.
pub fn vectors_missing(what: &str) {
    if std::env::var_os(REQUIRE_VECTORS).is_some_and(|v| v != "0") {
        panic!("{what} missing and {REQUIRE_VECTORS} is set: the conformance test cannot run");
    }
    eprintln!(
        "!!! {what} missing: this conformance test checked NOTHING (set {REQUIRE_VECTORS}=1 to fail instead) !!!"
    );
}

/// Where the conformance vectors are: `../shared/vectors` beside the project, or `KEYROLL_VECTORS_DIR`.
pub fn vectors_dir() -> std::path::PathBuf {
    match std::env::var_os("KEYROLL_VECTORS_DIR") {
        Some(d) => d.into(),
        None => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"),
    }
}
