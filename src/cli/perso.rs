//! `keyroll perso --batch NAME --out-dir DIR --count N`: personalise reference cards to files with the
//! same APDU script the PC/SC line sends. Each card is personalised in memory, then its final state is
//! written atomically to `DIR/<serial>.card` and recorded in the database; a run killed at any point
//! is finished by running the same command again.

use super::CliError;
use super::output::{self, Context};
use crate::authority::batches::Batch;
use crate::authority::cards::{Run, Slot};
use crate::authority::issuer_ca::CaSigner;
use crate::authority::keys::{self, KeyKind, KeyState};
use crate::authority::{Authority, AuthorityError, Unlocked, manufacturers};
use crate::card::storage::{FileStorage, MemoryStorage, Storage};
use crate::card::{Card, CardState};
use crate::crypto::{TransferKey, UpdateKey};
use crate::domain::{CardSerial, ChipId, Profile, TransferKeyId};
use crate::fab::{FactoryIdentity, Manufacturer};
use crate::perso::script::check_attestation;
use crate::perso::{AttestedKey, CardPlan, CertificateIssuer, ChipRegister, Line, PersoError, personalise};
use crate::protocol::info::LifeCycle;
use crate::transport::in_process::InProcessChannel;
use clap::Args;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
pub struct PersoArgs {
    #[arg(long)]
    pub batch: String,
    /// Write reference card files to this directory.
    #[arg(long, conflicts_with = "reader")]
    pub out_dir: Option<PathBuf>,
    /// Personalise cards presented in this PC/SC reader, one after another.
    #[arg(long)]
    pub reader: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub count: u32,
}

/// Everything a run needs to write cards of one batch.
pub struct Kit {
    pub batch: Batch,
    pub transfer_keys: Vec<TransferKey>,
    pub update_key: Option<UpdateKey>,
    pub ca: Option<CaSigner>,
}

impl Kit {
    /// Decrypt what the batch's cards receive: the batch's transfer key, for multi-key batches every
    /// newer pending or active transfer key up to the limit as well (claims 8–9: a later roll is a
    /// selection), the update key, and the CA for public-key profiles.
    pub fn load(u: &Unlocked<'_>, batch: &Batch) -> Result<Self, CliError> {
        let mut transfer_keys = vec![u.transfer_key(batch.transfer_key_id.0)?];
        if batch.profile == Profile::MultiKey {
            let mut newer = keys::ids_in_state(u.conn(), KeyKind::Transfer, KeyState::Pending)?;
            newer.extend(keys::ids_in_state(u.conn(), KeyKind::Transfer, KeyState::Active)?);
            newer.sort_unstable();
            for id in newer {
                if TransferKeyId(id) > batch.transfer_key_id && batch.transfer_key_id_limit.admits(TransferKeyId(id)) {
                    transfer_keys.push(u.transfer_key(id)?);
                }
            }
        }
        let update_key = batch.profile.has_update_key().then(|| u.update_key(batch.update_key_id.0)).transpose()?;
        let ca = batch.profile.has_key_pair().then(|| u.ca()).transpose()?;
        Ok(Kit { batch: batch.clone(), transfer_keys, update_key, ca })
    }

    pub fn plan(&self, serial: CardSerial) -> CardPlan {
        CardPlan {
            serial,
            profile: self.batch.profile,
            transfer_keys: self.transfer_keys.clone(),
            selected: self.batch.transfer_key_id,
            update_key: self.update_key.clone(),
            limit: self.batch.transfer_key_id_limit,
            initial_balance: self.batch.initial_balance,
            max_balance: self.batch.max_balance,
            trust_anchor: self.ca.as_ref().map(|c| c.root_der.clone()),
        }
    }
}

/// The back office's CA as the personalisation script's certificate issuer.
pub struct DbIssuer<'a, 'b> {
    pub unlocked: &'a Unlocked<'b>,
    pub signer: &'a CaSigner,
}

impl CertificateIssuer for DbIssuer<'_, '_> {
    /// Certify only an attested key (DESIGN.md §10 point 2), of the chip the register bound to this
    /// serial with these factory certificates.
    fn issue(&self, card: &FactoryIdentity, key: &AttestedKey) -> Result<Vec<u8>, String> {
        check_attestation(card, key)?;
        let serial = key.serial;
        self.unlocked
            .write(|c| {
                let chip = manufacturers::chip(c, card.chip_id)?;
                if !chip.is_some_and(|r| r.serial == serial && !r.locked) {
                    return Err(AuthorityError::ChipNotRegistered { chip: card.chip_id, serial });
                }
                // `issue_card_certificate` logs "cert issue"; the attestation that allowed it is logged too.
                let der = self.unlocked.issue_card_certificate(c, self.signer, serial, &key.public_key)?;
                self.unlocked.log(
                    c,
                    "card attested",
                    serde_json::json!({ "card": serial.to_string(), "certificate": crate::authority::issuer_ca::serial_hex(&der),
                        "chip_id": card.chip_id.to_string(), "attestation_cert": card.attestation_fingerprint,
                        "agreement_cert": card.agreement_fingerprint }),
                )?;
                Ok(der)
            })
            .map_err(|e| e.to_string())
    }
}

/// The back office's card register as the line's chip register: chip id <-> serial, for good.
pub struct DbRegister<'a, 'b> {
    pub unlocked: &'a Unlocked<'b>,
}

impl ChipRegister for DbRegister<'_, '_> {
    fn assign(&self, card: &FactoryIdentity, serial: CardSerial) -> Result<(), String> {
        self.unlocked.write(|c| self.unlocked.assign_chip(c, card, serial)).map_err(|e| e.to_string())
    }
}

/// Record a card the line refused as an impostor (audit log only), then pass the error on.
pub fn refused(u: &Unlocked<'_>, target: &str, e: PersoError, chip: Option<ChipId>) -> CliError {
    if let Some(code) = e.refusal_code() {
        let chip = match &e {
            PersoError::ChipRefused { chip, .. } => Some(*chip),
            _ => chip,
        };
        if let Err(log) = u.record_refusal(target, code, &e.to_string(), chip) {
            return log.into();
        }
    }
    e.into()
}

/// Progress: a bar on a terminal, plain lines otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub fn new(total: u64, json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} cards  {per_sec}  eta {eta}  {msg}")
                    .expect("template"),
            );
            b
        });
        Progress { bar }
    }

    pub fn card(&self, done: u64, total: u64, serial: CardSerial, note: &str) {
        match &self.bar {
            Some(b) => {
                b.set_position(done);
                b.set_message(format!("{serial} {note}"));
            }
            None => eprintln!("card {done}/{total} {serial} {note}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

pub fn run(ctx: &Context, db: &Path, identity: Option<&Path>, a: PersoArgs) -> Result<(), CliError> {
    let auth = Authority::open(db)?;
    let u = auth.unlock(identity)?;
    match (&a.out_dir, &a.reader) {
        (Some(dir), None) => to_files(ctx, &u, &a.batch, dir, a.count),
        (None, Some(reader)) => super::perso_pcsc::to_reader(ctx, &u, &a.batch, reader, a.count),
        _ => {
            Err(CliError::input("say where the cards are", "pass --out-dir DIR (card files) or --reader NAME (PC/SC)"))
        }
    }
}

fn card_path(dir: &Path, serial: CardSerial) -> PathBuf {
    dir.join(format!("{serial}.card"))
}

/// A blank reference card from `fab`, as card state.
pub fn blank_state(fab: &Manufacturer) -> Result<CardState, CliError> {
    let b = fab.make_blank().map_err(super::fab::fab_error)?;
    Ok(CardState::blank_from_fab(
        b.chip_id,
        b.agreement_key.to_bytes(),
        b.attestation_key.to_bytes(),
        b.agreement_cert,
        b.attestation_cert,
    ))
}

/// Personalise one slot into a card file. The blank (from the virtual manufacturer) is written to the
/// file first and personalised in memory; the file is replaced by the issued card at the end. A run
/// killed at any point finds the same file again: an issued card is kept as it is, a blank or
/// half-written one is personalised again (same chip, so the same serial).
fn write_card_file(
    kit: &Kit,
    u: &Unlocked<'_>,
    line: &Line<'_>,
    fab: &Manufacturer,
    dir: &Path,
    slot: &Slot,
) -> Result<(PathBuf, ChipId), CliError> {
    let path = card_path(dir, slot.serial);
    let existing = FileStorage::new(&path).load().ok().flatten().and_then(|b| CardState::decode(&b).ok());
    let state = match existing {
        Some(s) if s.life_cycle == LifeCycle::Issued && s.serial == Some(slot.serial) => {
            return Ok((path, s.chip_id.unwrap_or_default()));
        }
        Some(s) if s.chip_id.is_some() && s.life_cycle != LifeCycle::Issued => s,
        _ => {
            let s = blank_state(fab)?;
            FileStorage::new(&path).store(&s.encode()).map_err(|e| {
                CliError::input(format!("cannot write card file: {e}"), "check the output directory is writable")
            })?;
            s
        }
    };
    let mut card =
        Card::create(MemoryStorage::new(), state).map_err(|e| CliError::input(e.to_string(), "report this"))?;
    let outcome = {
        let mut ch = InProcessChannel::new(&mut card, format!("virtual card {}", slot.serial));
        personalise(&mut ch, line, &kit.plan(slot.serial))
    };
    let outcome = outcome.map_err(|e| refused(u, &dir.display().to_string(), e, card.state().chip_id))?;
    FileStorage::new(&path).store(&card.state().encode()).map_err(|e| {
        CliError::input(format!("cannot write card file: {e}"), "check the output directory is writable")
    })?;
    Ok((path, outcome.chip_id))
}

#[derive(serde::Serialize)]
pub struct PersoReport {
    pub batch: String,
    pub run: i64,
    pub resumed: bool,
    pub count: u32,
    pub written: u32,
    pub already_done: u32,
    pub seconds: f64,
    pub cards: Vec<String>,
    #[serde(skip)]
    pub files: Vec<PathBuf>,
}

/// Personalise `count` cards of `batch` into `dir` (resuming an interrupted identical run).
pub fn personalise_to_files(
    u: &Unlocked<'_>,
    batch: &str,
    dir: &Path,
    count: u32,
    progress: bool,
    verbose: bool,
) -> Result<PersoReport, CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::input(format!("cannot create {}: {e}", dir.display()), "choose a writable --out-dir"))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| CliError::input(format!("{}: {e}", dir.display()), "choose a writable --out-dir"))?;
    let started = Instant::now();
    let (run, slots): (Run, Vec<Slot>) = u.start_run(batch, &dir.display().to_string(), count)?;
    let kit = Kit::load(u, &run.batch)?;
    // Reference cards come from the virtual manufacturer (its cards are refused by the PC/SC line).
    let fab = u.virtual_fab()?;
    let roots = manufacturers::trusted_roots(u.conn())?;
    let issuer = kit.ca.as_ref().map(|signer| DbIssuer { unlocked: u, signer });
    let register = DbRegister { unlocked: u };
    let line = Line {
        roots: &roots,
        allow_virtual: true,
        register: Some(&register),
        issuer: issuer.as_ref().map(|i| i as &dyn CertificateIssuer),
        verbose,
    };
    let bar = Progress::new(count as u64, !progress);
    let (mut written, mut already) = (0, 0);
    let mut cards = Vec::new();
    let mut files = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        cards.push(slot.serial.to_string());
        files.push(card_path(&dir, slot.serial));
        if slot.personalised {
            already += 1;
            continue;
        }
        let (path, chip) = write_card_file(&kit, u, &line, &fab, &dir, slot)?;
        u.record_card(&run, slot, Some(&path.display().to_string()), Some(chip))?;
        written += 1;
        if progress {
            bar.card(i as u64 + 1, count as u64, slot.serial, "written");
        }
    }
    bar.finish();
    u.finish_run(&run)?;
    Ok(PersoReport {
        batch: batch.to_string(),
        run: run.id,
        resumed: run.resumed,
        count,
        written,
        already_done: already,
        seconds: started.elapsed().as_secs_f64(),
        cards,
        files,
    })
}

fn to_files(ctx: &Context, u: &Unlocked<'_>, batch: &str, dir: &Path, count: u32) -> Result<(), CliError> {
    let report = personalise_to_files(u, batch, dir, count, !ctx.json, ctx.verbose)?;
    if ctx.json {
        output::json(&report);
    } else {
        println!(
            "batch {batch:?}: {} card(s) written to {}{}",
            report.written,
            dir.display(),
            if report.resumed {
                format!(" (resumed run {}, {} already done)", report.run, report.already_done)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
