//! `rollout status --cards DIR` and `rollout verify`: what a rollout has reached, and whether every
//! live card generation interoperates with every other through the real terminal before any real
//! card sees the rollout.

use super::CliError;
use super::fleet::{self, Fleet};
use super::output::{self, Context};
use super::perso::Kit;
use crate::authority::batches::{self, Batch};
use crate::authority::{Authority, Unlocked, ca, cards};
use crate::card::Card;
use crate::card::storage::{MemoryStorage, Storage};
use crate::domain::{Amount, CardSerial};
use crate::fab::{FactoryIdentity, Manufacturer, TrustedRoot};
use crate::perso::script::check_attestation;
use crate::perso::{AttestedKey, CertificateIssuer, Line, personalise};
use crate::terminal::{KeyRoll, SettleError, SettleOptions, settle};
use crate::transport::in_process::InProcessChannel;
use serde::Serialize;
use std::path::Path;

pub fn status(ctx: &Context, db: &Path, dir: &Path) -> Result<(), CliError> {
    let fleet = Fleet::load(dir)?;
    // The database is optional here: with it, cards are grouped by batch.
    let batch_of = match Authority::open(db) {
        Ok(auth) => cards::list(&auth.conn)?.into_iter().map(|c| (c.serial.to_string(), c.batch)).collect(),
        Err(_) => Default::default(),
    };
    let st = fleet::status(&fleet, &batch_of);
    if ctx.json {
        output::json(&st);
    } else {
        fleet::print_status(&st);
    }
    Ok(())
}

/// A generation: what distinguishes cards for the protocol.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Generation {
    pub profile: String,
    pub transfer_key_id: u32,
    pub update_key_id: Option<u32>,
    pub transfer_key_id_limit: u32,
    #[serde(skip)]
    pub batch: String,
}

impl Generation {
    fn of(b: &Batch) -> Self {
        Generation {
            profile: b.profile.name().into(),
            transfer_key_id: b.transfer_key_id.0,
            update_key_id: b.profile.has_update_key().then_some(b.update_key_id.0),
            transfer_key_id_limit: b.transfer_key_id_limit.0,
            batch: b.name.clone(),
        }
    }

    fn label(&self) -> String {
        format!(
            "{}/t{}/u{}/l{}",
            self.profile,
            self.transfer_key_id,
            self.update_key_id.map(|u| u.to_string()).unwrap_or("-".into()),
            self.transfer_key_id_limit
        )
    }
}

/// The issuer CA, signing certificates for the virtual cards without recording them (attested keys
/// only, like the back office's own issuer).
struct VerifyIssuer<'a>(&'a crate::authority::issuer_ca::CaSigner);

impl CertificateIssuer for VerifyIssuer<'_> {
    fn issue(&self, card: &FactoryIdentity, key: &AttestedKey) -> Result<Vec<u8>, String> {
        check_attestation(card, key)?;
        let t = std::time::SystemTime::now();
        let day = std::time::Duration::from_secs(86400);
        ca::issue_card_certificate(&self.0.key, &self.0.root_der, key.serial, &key.public_key, t - day, t + day)
            .map_err(|e| e.to_string())
    }
}

#[derive(Serialize)]
pub struct PairResult {
    pub payer: String,
    pub payee: String,
    pub should_interoperate: bool,
    pub outcome: String,
    pub key_roll: Option<KeyRoll>,
    pub amount: u64,
    pub ok: bool,
}

/// One issued reference card per generation, kept as its persisted bytes (a fresh copy per pair).
/// Virtual cards come from a throw-away manufacturer made for this check: nothing is recorded.
fn template(u: &Unlocked<'_>, batch: &Batch, fab: &Manufacturer, serial: CardSerial) -> Result<Vec<u8>, CliError> {
    let kit = Kit::load(u, batch)?;
    let mut card = Card::create(MemoryStorage::new(), super::perso::blank_state(fab)?)
        .map_err(|e| CliError::input(e.to_string(), "report this"))?;
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
    Ok(card.storage().record().expect("personalised").to_vec())
}

fn fresh(record: &[u8]) -> Card<MemoryStorage> {
    let mut s = MemoryStorage::new();
    s.store(record).expect("memory");
    Card::open(s).expect("valid record")
}

pub fn verify(ctx: &Context, db: &Path, identity: Option<&Path>) -> Result<(), CliError> {
    let auth = Authority::open(db)?;
    let u = auth.unlock(identity)?;
    let fab = Manufacturer::create("keyroll rollout verify").map_err(super::fab::fab_error)?;
    let mut gens: Vec<(Generation, Batch)> = Vec::new();
    for b in batches::list(&auth.conn)? {
        let g = Generation::of(&b);
        if !gens.iter().any(|(x, _)| x == &g) {
            gens.push((g, b));
        }
    }
    // Two virtual cards per generation, so a generation is also checked against itself.
    let mut templates = Vec::new();
    for (i, (_, b)) in gens.iter().enumerate() {
        let a = template(&u, b, &fab, CardSerial::from_u64(0x5645_0000_0000_0000 + 2 * i as u64))?;
        let c = template(&u, b, &fab, CardSerial::from_u64(0x5645_0000_0000_0001 + 2 * i as u64))?;
        templates.push((a, c));
    }
    let mut results = Vec::new();
    for (i, (gi, _)) in gens.iter().enumerate() {
        for (j, (gj, _)) in gens.iter().enumerate() {
            let mut payer = fresh(&templates[i].0);
            // Move one unit when the batch issues value; with no balance the pair is checked for key agreement only.
            let amount = payer.state().balance.0.min(1);
            let mut payee = fresh(&templates[j].1);
            let newer = gi.transfer_key_id.max(gj.transfer_key_id);
            let older_limit = if gi.transfer_key_id < gj.transfer_key_id {
                gi.transfer_key_id_limit
            } else {
                gj.transfer_key_id_limit
            };
            let should = newer <= older_limit;
            let r = {
                let mut a = InProcessChannel::new(&mut payer, "payer");
                let mut b = InProcessChannel::new(&mut payee, "payee");
                settle(&mut a, &mut b, Amount(amount), &SettleOptions::default())
            };
            let (outcome, key_roll, amount, ok) = match r {
                // A pair that should not interoperate (the older card's limit is below the newer id) and
                // still did means a card accepted a key above its limit: that is a failure too.
                Ok(rep) => (format!("{:?}", rep.key_roll).to_lowercase(), Some(rep.key_roll), rep.amount.0, should),
                Err(e @ SettleError::Stranded { .. }) => (e.to_string(), None, 0, !should),
                Err(e) => (e.to_string(), None, 0, false),
            };
            results.push(PairResult {
                payer: gi.label(),
                payee: gj.label(),
                should_interoperate: should,
                outcome,
                key_roll,
                amount,
                ok,
            });
        }
    }
    let failures = results.iter().filter(|r| !r.ok).count();
    if ctx.json {
        output::json(
            &serde_json::json!({ "generations": gens.iter().map(|(g, _)| g).collect::<Vec<_>>(), "pairs": results, "failures": failures }),
        );
    } else {
        let labels: Vec<String> = gens.iter().map(|(g, _)| g.label()).collect();
        let w = labels.iter().map(|l| l.len()).max().unwrap_or(8);
        println!(
            "payer \\ payee (= no roll, S symmetric, P public-key, M selection, x stranded by the limit, ! fails)"
        );
        for (i, li) in labels.iter().enumerate() {
            let cells: Vec<&str> = (0..labels.len())
                .map(|j| {
                    let r = &results[i * labels.len() + j];
                    match (r.ok, r.key_roll) {
                        (true, Some(KeyRoll::None)) => "=",
                        (true, Some(KeyRoll::Symmetric)) => "S",
                        (true, Some(KeyRoll::PublicKey)) => "P",
                        (true, Some(KeyRoll::Selection)) => "M",
                        (true, None) => "x",
                        (false, _) => "!",
                    }
                })
                .collect();
            println!("{li:<w$}  {}", cells.join(" "));
        }
        for (k, l) in labels.iter().enumerate() {
            println!("  column {}: {l}", k + 1);
        }
        for r in results.iter().filter(|r| !r.ok) {
            println!("FAIL {} → {}: {}", r.payer, r.payee, r.outcome);
        }
        println!("{} pair(s), {failures} failure(s)", results.len());
    }
    if failures > 0 {
        return Err(CliError::CheckFailed {
            what: format!("{failures} generation pair(s) that should interoperate do not"),
        });
    }
    Ok(())
}
