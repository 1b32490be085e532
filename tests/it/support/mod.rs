//! Shared helpers of the integration tests: deterministic key generations, card plans and
//! personalised in-memory reference cards (built by the real personalisation script).
#![allow(dead_code)]

pub mod cli;
#[cfg(feature = "pcsc")]
pub mod pcscd;
pub mod postgres;

use keyroll::card::Card;
use keyroll::card::CardState;
use keyroll::card::storage::{MemoryStorage, TearingStorage};
use keyroll::crypto::{Secret16, TransferKey, UpdateKey};
use keyroll::domain::*;
use keyroll::fab::{FactoryIdentity, Manufacturer, TrustedRoot};
use keyroll::perso::{AttestedKey, BackOfficeError, CardPlan, CertificateIssuer, Line, personalise};
use keyroll::protocol::SmartCard;
use keyroll::terminal::{SettleError, SettleOptions, SettlementReport, settle};
use keyroll::transport::in_process::InProcessChannel;

pub type TestCard = Card<TearingStorage<MemoryStorage>>;

/// CPU time of this process (all threads), nanosecond resolution: what the benches divide by.
pub fn cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Two different cards of a fleet, both mutable: the payer and payee of one settlement.
pub fn two_cards(cards: &mut [TestCard], i: usize, j: usize) -> (&mut TestCard, &mut TestCard) {
    let [a, b] = cards.get_disjoint_mut([i, j]).expect("two different cards of the fleet");
    (a, b)
}

/// The test issuer's card log master: every test card's log key is `card_log_key(LOG_MASTER, serial)`.
pub const LOG_MASTER: [u8; 16] = [0x4D; 16];

/// The manufacturer of every test blank (made once per test binary).
pub fn test_fab() -> &'static Manufacturer {
    static FAB: std::sync::OnceLock<Manufacturer> = std::sync::OnceLock::new();
    FAB.get_or_init(|| Manufacturer::create("Test Chip Works").expect("manufacturer"))
}

/// The line's trust in [`test_fab`].
pub fn test_roots() -> Vec<TrustedRoot> {
    let m = test_fab();
    vec![TrustedRoot {
        name: "Test Chip Works".into(),
        der: m.root_der().to_vec(),
        fingerprint: m.fingerprint(),
        virtual_only: false,
    }]
}

/// A blank card's state from `fab`: chip id, factory keys and certificates.
pub fn blank_state_from(fab: &Manufacturer) -> CardState {
    let b = fab.make_blank().expect("blank");
    CardState::blank_from_fab(
        b.chip_id,
        b.agreement_key.to_bytes(),
        b.attestation_key.to_bytes(),
        b.agreement_cert,
        b.attestation_cert,
    )
}

/// A blank in-memory card from the test manufacturer.
pub fn blank_card() -> TestCard {
    let mut storage = TearingStorage::new(MemoryStorage::new());
    use keyroll::card::storage::Storage;
    storage.store(&blank_state_from(test_fab()).encode()).expect("memory");
    Card::open(storage).expect("blank card")
}

/// Personalise `card` through the real script, trusting the test manufacturer.
pub fn personalise_card(card: &mut TestCard, plan: &CardPlan, issuer: Option<&dyn CertificateIssuer>) {
    let roots = test_roots();
    let line = Line { roots: &roots, allow_virtual: false, register: None, issuer, verbose: false };
    let mut ch = InProcessChannel::new(card, "perso");
    personalise(&mut ch, &line, plan).expect("personalisation");
}

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
    let issuer_word = issuer_word(&transfer_keys, profile.has_update_key().then(|| update_key(uk)));
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
        log_key: keyroll::crypto::mac::card_log_key(&Secret16::new(LOG_MASTER), &CardSerial::from_u64(serial)),
        issuer_word,
    }
}

/// The tests' scheme signing key (fixed, so every test card of every test shares one scheme).
pub fn scheme_key() -> keyroll::crypto::scheme_key::SchemeSigningKey {
    keyroll::crypto::scheme_key::SchemeSigningKey::from_bytes(&[0x5C; 32]).unwrap()
}

/// When the tests' issuer signed: a day after the factory floor.
pub const SIGNED_AT: u64 = keyroll::card::policy::FACTORY_FLOOR + 86_400;

/// Policy `n` of the tests' plain chain (nothing blocked, every update key open), signed once per test
/// process: ECDSA signatures are randomised, and a successor names its predecessor's hash, so every
/// card and every test must see the same bytes for the same policy.
fn base_policy(n: u32) -> keyroll::protocol::policy::Policy {
    use keyroll::protocol::policy::Policy;
    use std::sync::{Mutex, OnceLock};
    static CHAIN: OnceLock<Mutex<Vec<Policy>>> = OnceLock::new();
    let mut chain = CHAIN.get_or_init(|| Mutex::new(Vec::new())).lock().unwrap_or_else(|e| e.into_inner());
    while chain.len() < n as usize {
        let prev = chain.last().map_or([0; 32], |p| p.hash());
        let next = sign_policy(chain.len() as u32 + 1, prev, &[], 1);
        chain.push(next);
    }
    chain[n as usize - 1].clone()
}

fn sign_policy(
    number: u32,
    previous: [u8; 32],
    blocked: &[(u64, u32)],
    min_wrap: u32,
) -> keyroll::protocol::policy::Policy {
    use keyroll::protocol::policy::{BlockedCard, Policy};
    let k = scheme_key();
    let mut blocked: Vec<BlockedCard> = blocked
        .iter()
        .map(|&(s, l)| BlockedCard { serial: CardSerial::from_u64(s), limit: TransferKeyIdLimit(l) })
        .collect();
    blocked.sort_by_key(|e| e.serial);
    let mut p = Policy {
        scheme_id: k.scheme_id(),
        number,
        previous,
        signed_at: SIGNED_AT + number as u64,
        min_wrap_update_key_id: UpdateKeyId(min_wrap),
        min_transfer_key_id: TransferKeyId(1),
        blocked,
        resolutions: vec![],
        signature: [0; 64],
    };
    p.signature = k.sign(&p.body()).unwrap();
    p
}

/// Policy `number` of the tests' scheme, blocking `blocked` (serial, limit) and closing update keys
/// below `min_wrap`, the direct successor of the plain chain's policy `number - 1`. Without blocks and
/// with `min_wrap` 1 it is the plain chain's own policy (the one test cards are personalised with is 1).
pub fn test_policy(number: u32, blocked: &[(u64, u32)], min_wrap: u32) -> keyroll::protocol::policy::Policy {
    if blocked.is_empty() && min_wrap == 1 {
        return base_policy(number);
    }
    let previous = if number == 1 { [0; 32] } else { base_policy(number - 1).hash() };
    sign_policy(number, previous, blocked, min_wrap)
}

/// The tests' issuer's authorisation of a key.
pub fn authorise(kind: keyroll::protocol::policy::KeyKind, id: u32, key: &Secret16, min_policy: u32) -> Vec<u8> {
    use keyroll::protocol::codec::Wire;
    use keyroll::protocol::policy::KeyAuthorisation;
    let k = scheme_key();
    let mut a = KeyAuthorisation {
        scheme_id: k.scheme_id(),
        kind,
        id,
        commitment: keyroll::crypto::scheme_key::key_commitment(&k.scheme_id(), kind.code(), id, key),
        signed_at: SIGNED_AT,
        min_policy,
        signature: [0; 64],
    };
    a.signature = k.sign(&a.body()).unwrap();
    a.to_wire()
}

/// Scheme key, policy 1 and authorisations of these keys, as the back office gives them to the line.
pub fn issuer_word(transfer: &[TransferKey], update: Option<UpdateKey>) -> keyroll::perso::script::IssuerWord {
    use keyroll::protocol::codec::Wire;
    use keyroll::protocol::policy::KeyKind;
    let mut authorisations: Vec<Vec<u8>> =
        transfer.iter().map(|t| authorise(KeyKind::Transfer, t.id.0, t.secret(), 1)).collect();
    if let Some(u) = update {
        authorisations.push(authorise(KeyKind::Update, u.id.0, u.secret(), 1));
    }
    keyroll::perso::script::IssuerWord {
        scheme_key: scheme_key().public_key_sec1().to_vec(),
        policy: test_policy(1, &[], 1).to_wire(),
        authorisations,
    }
}

/// A blank in-memory card personalised by the real script.
pub fn card_from(plan: &CardPlan) -> TestCard {
    let mut card = blank_card();
    personalise_card(&mut card, plan, None);
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

/// Edit a card file through its JSON form, as a holder tampering with its card's memory would: the
/// file is decoded, `edit`ed as JSON and written back in the card file's encoding (CBOR).
pub fn edit_card_file(path: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let state = CardState::decode(&std::fs::read(path).expect("card file")).expect("a card file");
    let mut v = serde_json::to_value(&state).expect("card state as JSON");
    edit(&mut v);
    let state: CardState = serde_json::from_value(v).expect("an edited card state");
    std::fs::write(path, state.encode()).expect("card file written");
}

/// A card opened from a stored record (as `keyroll settle` and `card serve` open card files): a new
/// card object, with nothing of the one that wrote the record but its persistent state.
pub fn card_from_record(record: &[u8]) -> TestCard {
    use keyroll::card::storage::Storage;
    let mut storage = TearingStorage::new(MemoryStorage::new());
    storage.store(record).expect("memory");
    Card::open(storage).expect("a card record")
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

impl CertificateIssuer for TestCa {
    fn issue(&self, card: &FactoryIdentity, key: &AttestedKey) -> Result<Vec<u8>, BackOfficeError> {
        keyroll::perso::script::check_attestation(card, key)?;
        keyroll::authority::ca::issue_card_certificate(
            &self.key,
            &self.root,
            key.serial,
            &key.public_key,
            self.not_before,
            self.not_after,
        )
        .map_err(|e| BackOfficeError::Failed(e.into()))
    }

    /// The test CA records nothing, so there is nothing to withdraw.
    fn withdraw(&self, _serial: CardSerial, _why: &str) -> Result<(), BackOfficeError> {
        Ok(())
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
    let mut card = blank_card();
    personalise_card(&mut card, &p, Some(ca));
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

/// A channel that loses the card after `left` APDUs (a card pulled mid-session).
pub struct Cut<C> {
    pub inner: C,
    pub left: usize,
}

impl<C: keyroll::transport::CardChannel> keyroll::transport::CardChannel for Cut<C> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, keyroll::transport::TransportError> {
        if self.left == 0 {
            return Err(keyroll::transport::TransportError::CardRemoved { reader: "test".into() });
        }
        self.left -= 1;
        self.inner.transmit(apdu)
    }
    fn name(&self) -> String {
        self.inner.name()
    }
}
