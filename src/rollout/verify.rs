//! `rollout verify`: settle every ordered pair of live card generations on virtual cards through the
//! real terminal, and compare each outcome with the key-roll rule ([`super::paths`]). A pair passes when
//! the terminal does what the rule says: settle (with the predicted roll), refuse a card stranded by its
//! limit, or find no direct path where the rule finds none. Pairs without a direct path are reported
//! with whether other generations bridge them (both reach a common newer key); a generation that can
//! never reach the newest key its limit admits is reported as cut off.

use super::RolloutError;
use super::paths::{Expect, Generation, expectations, reaches};
use crate::authority::batches::Batch;
use crate::authority::{Authority, Unlocked, ca};
use crate::card::Card;
use crate::card::storage::{MemoryStorage, Storage};
use crate::domain::{Amount, CardSerial};
use crate::fab::{FactoryIdentity, Manufacturer, TrustedRoot};
use crate::perso::batch::{Kit, blank_state};
use crate::perso::script::check_attestation;
use crate::perso::{AttestedKey, BackOfficeError, CertificateIssuer, Line, personalise};
use crate::terminal::{KeyRoll, SettleError, SettleOptions, settle};
use crate::transport::in_process::InProcessChannel;
use serde::Serialize;

/// The issuer CA, signing certificates for the virtual cards without recording them (attested keys
/// only, like the back office's own issuer).
struct VerifyIssuer<'a>(&'a crate::authority::issuer_ca::CaSigner);

impl CertificateIssuer for VerifyIssuer<'_> {
    fn issue(&self, card: &FactoryIdentity, key: &AttestedKey) -> Result<Vec<u8>, BackOfficeError> {
        check_attestation(card, key)?;
        let t = std::time::SystemTime::now();
        let day = std::time::Duration::from_secs(86400);
        ca::issue_card_certificate(&self.0.key, &self.0.root_der, key.serial, &key.public_key, t - day, t + day)
            .map_err(|e| BackOfficeError::Failed(e.into()))
    }

    /// Nothing recorded: the virtual cards' certificates live only as long as the verification.
    fn withdraw(&self, _serial: CardSerial, _why: &str) -> Result<(), BackOfficeError> {
        Ok(())
    }
}

/// What happened to one ordered pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Settled, with this key roll.
    Settled,
    /// Refused: the older card's limit is below the newer key.
    Stranded,
    /// Refused: no direct key-roll path.
    NoDirectPath,
    /// Anything else: a refusal or fault the rule does not predict.
    Failed,
}

#[derive(Debug, Serialize)]
pub struct PairResult {
    pub payer: String,
    pub payee: String,
    /// What the key-roll rule predicts.
    #[serde(flatten)]
    pub expect: Expect,
    /// What the terminal did.
    pub result: Outcome,
    /// The key roll as `settle --json` writes `key_roll` (`none`, `symmetric`, `public-key`,
    /// `selection`), or the terminal's refusal.
    pub outcome: String,
    pub key_roll: Option<KeyRoll>,
    pub amount: u64,
    /// The terminal did what the rule predicts, and a pair without a direct path is bridged.
    pub ok: bool,
}

/// A generation whose limit admits the newest key but that no chain of rolls brings it to.
#[derive(Debug, Serialize)]
pub struct CutOff {
    pub generation: String,
    pub batches: Vec<String>,
    pub newest_transfer_key_id: u32,
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub generations: Vec<Generation>,
    /// Row by row: payer `i`, payee `j`.
    pub pairs: Vec<PairResult>,
    /// Pairs where the terminal did not do what the rule predicts, or that never meet on one key
    /// although their limits allow it.
    pub failures: usize,
    /// Pairs without a direct path whose cards still converge through other generations.
    pub bridged: usize,
    pub cut_off: Vec<CutOff>,
    pub ok: bool,
}

impl VerifyReport {
    pub fn labels(&self) -> Vec<String> {
        self.generations.iter().map(Generation::label).collect()
    }
}

/// One issued reference card per generation, kept as its persisted bytes (a fresh copy per pair).
/// Virtual cards come from a throw-away manufacturer made for this check: nothing is recorded.
fn template(u: &Unlocked<'_>, batch: &Batch, fab: &Manufacturer, serial: CardSerial) -> Result<Vec<u8>, RolloutError> {
    let kit = Kit::load(u, batch)?;
    let blank = blank_state(fab).map_err(|e| RolloutError::VirtualCard(e.to_string()))?;
    let mut card = Card::create(MemoryStorage::new(), blank)?;
    {
        let mut ch = InProcessChannel::new(&mut card, format!("virtual {serial}"));
        let issuer = kit.ca.as_ref().map(VerifyIssuer);
        let roots = [TrustedRoot {
            name: "rollout verify".into(),
            der: fab.root_der().to_vec(),
            fingerprint: fab.fingerprint(),
            virtual_only: true,
        }];
        let line = Line {
            roots: &roots,
            allow_virtual: true,
            register: None,
            issuer: issuer.as_ref().map(|i| i as &dyn CertificateIssuer),
            verbose: false,
        };
        personalise(&mut ch, &line, &kit.plan(serial))?;
    }
    card.storage()
        .record()
        .map(|r| r.to_vec())
        .ok_or_else(|| RolloutError::VirtualCard(format!("card {serial} kept no record after personalisation")))
}

fn fresh(record: &[u8]) -> Result<Card<MemoryStorage>, RolloutError> {
    let mut s = MemoryStorage::new();
    s.store(record).map_err(|e| RolloutError::VirtualCard(e.to_string()))?;
    Ok(Card::open(s)?)
}

/// A generation, the batches on it, and the records of its two virtual cards.
type Templates = (Generation, Vec<String>, Vec<u8>, Vec<u8>);

/// The `settle --json` name of a key roll (`none`, `symmetric`, `public-key`, `selection`).
pub fn key_roll_name(k: KeyRoll) -> &'static str {
    match k {
        KeyRoll::None => "none",
        KeyRoll::Symmetric => "symmetric",
        KeyRoll::PublicKey => "public-key",
        KeyRoll::Selection => "selection",
    }
}

/// Verify every pair of the live generations of the database `auth` (unlocked by `u`).
pub fn verify(u: &Unlocked<'_>) -> Result<VerifyReport, RolloutError> {
    let auth: &Authority = u.auth;
    let fab = Manufacturer::create("keyroll rollout verify").map_err(|e| RolloutError::VirtualCard(e.to_string()))?;
    // One generation per distinct (profile, keys, limit); two virtual cards each, so that a generation
    // is also checked against itself.
    let mut gens: Vec<Templates> = Vec::new();
    for (n, b) in auth.batches()?.into_iter().enumerate() {
        let a = template(u, &b, &fab, CardSerial::from_u64(0x5645_0000_0000_0000 + 2 * n as u64))?;
        let state = fresh(&a)?.state().clone();
        let g = Generation::of_batch(&b, state.stored_ids().into_iter().map(|i| i.0).collect());
        if let Some(existing) = gens.iter_mut().find(|(x, ..)| *x == g) {
            existing.1.push(b.name);
            continue;
        }
        let c = template(u, &b, &fab, CardSerial::from_u64(0x5645_0000_0000_0001 + 2 * n as u64))?;
        gens.push((g, vec![b.name], a, c));
    }
    let generations: Vec<Generation> = gens.iter().map(|(g, ..)| g.clone()).collect();
    let expect = expectations(&generations);
    let mut pairs = Vec::new();
    for (i, (gi, _, payer_record, _)) in gens.iter().enumerate() {
        for (j, (gj, _, _, payee_record)) in gens.iter().enumerate() {
            let mut payer = fresh(payer_record)?;
            // Move one unit when the batch issues value; with no balance the pair is checked for key agreement only.
            let amount = payer.state().balance.0.min(1);
            let mut payee = fresh(payee_record)?;
            let r = {
                let mut a = InProcessChannel::new(&mut payer, "payer");
                let mut b = InProcessChannel::new(&mut payee, "payee");
                settle(&mut a, &mut b, Amount(amount), &SettleOptions::default())
            };
            let e = expect[i][j];
            let (outcome, got, key_roll, moved) = match r {
                Ok(rep) => {
                    (key_roll_name(rep.key_roll).to_string(), Outcome::Settled, Some(rep.key_roll), rep.amount.0)
                }
                Err(e) if matches!(e.cause(), SettleError::Stranded { .. }) => {
                    (e.to_string(), Outcome::Stranded, None, 0)
                }
                Err(e) if matches!(e.cause(), SettleError::NoPath { .. }) => {
                    (e.to_string(), Outcome::NoDirectPath, None, 0)
                }
                Err(e) => (e.to_string(), Outcome::Failed, None, 0),
            };
            let ok = match e {
                Expect::Settles { key_roll: k } => got == Outcome::Settled && key_roll == Some(k),
                Expect::Stranded => got == Outcome::Stranded,
                // Without a bridge the two cards never meet on one key although their limits allow it.
                Expect::NoDirectPath { bridged, .. } => got == Outcome::NoDirectPath && bridged,
            };
            pairs.push(PairResult {
                payer: gi.label(),
                payee: gj.label(),
                expect: e,
                result: got,
                outcome,
                key_roll,
                amount: moved,
                ok,
            });
        }
    }
    let cut_off = cut_off(&gens.iter().map(|(g, names, ..)| (g.clone(), names.clone())).collect::<Vec<_>>());
    let failures = pairs.iter().filter(|p| !p.ok).count();
    let bridged = pairs.iter().filter(|p| matches!(p.expect, Expect::NoDirectPath { bridged: true, .. })).count();
    let ok = failures == 0 && cut_off.is_empty();
    Ok(VerifyReport { generations, pairs, failures, bridged, ok, cut_off })
}

/// Generations whose limit admits the newest transfer key of `gens` but that can never come to hold it.
pub fn cut_off(gens: &[(Generation, Vec<String>)]) -> Vec<CutOff> {
    let only: Vec<Generation> = gens.iter().map(|(g, _)| g.clone()).collect();
    let Some(newest) = only.iter().map(|g| g.transfer_key_id).max() else { return Vec::new() };
    let reach = reaches(&only, newest);
    gens.iter()
        .zip(reach)
        .filter(|((g, _), r)| !r && newest <= g.transfer_key_id_limit)
        .map(|((g, names), _)| CutOff { generation: g.label(), batches: names.clone(), newest_transfer_key_id: newest })
        .collect()
}
