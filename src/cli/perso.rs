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
use crate::authority::{Authority, Unlocked};
use crate::card::storage::{FileStorage, MemoryStorage, Storage};
use crate::card::{Card, CardState};
use crate::crypto::{Secret16, TransferKey, UpdateKey};
use crate::domain::{Amount, CardSerial, Profile, TransferKeyId, TransferKeyIdLimit};
use crate::perso::script::IssuerWord;
use crate::perso::{CardPlan, CertificateIssuer, personalise};
use crate::protocol::codec::Wire;
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
    pub master: Secret16,
    pub batch: Batch,
    pub transfer_keys: Vec<TransferKey>,
    pub update_key: Option<UpdateKey>,
    pub ca: Option<CaSigner>,
    pub issuer_word: IssuerWord,
}

impl Kit {
    /// Decrypt what the batch's cards receive: the batch's transfer key, for multi-key batches every
    /// newer pending or active transfer key up to the limit as well (claims 8–9: a later roll is a
    /// selection), the update key, the personalisation master, and the CA for public-key profiles.
    pub fn load(u: &Unlocked<'_>, batch: &Batch) -> Result<Self, CliError> {
        let mut transfer_keys = vec![u.transfer_key(batch.transfer_key_id)?];
        if batch.profile == Profile::MultiKey {
            let mut newer = keys::ids_in_state(u.conn(), KeyKind::Transfer, KeyState::Pending)?;
            newer.extend(keys::ids_in_state(u.conn(), KeyKind::Transfer, KeyState::Active)?);
            newer.sort_unstable();
            for id in newer {
                if id > batch.transfer_key_id && id <= batch.transfer_key_id_limit {
                    transfer_keys.push(u.transfer_key(id)?);
                }
            }
        }
        let update_key = batch.profile.has_update_key().then(|| u.update_key(batch.update_key_id)).transpose()?;
        let ca = batch.profile.has_key_pair().then(|| u.ca()).transpose()?;
        // DESIGN.md §10: the scheme key, the newest policy and the authorisation of every key the card
        // takes (a multi-key card's pending keys have none yet: they become selectable with theirs).
        let (_, record) = u.scheme_signer()?;
        let policy = match u.auth.current_policy()? {
            Some(p) => p,
            None => u.policy_publish()?,
        };
        let mut authorisations = vec![u.key_authorisation(KeyKind::Transfer, batch.transfer_key_id)?.to_wire()];
        for k in &transfer_keys[1..] {
            if keys::ids_in_state(u.conn(), KeyKind::Transfer, KeyState::Active)?.contains(&k.id.0) {
                authorisations.push(u.key_authorisation(KeyKind::Transfer, k.id.0)?.to_wire());
            }
        }
        if batch.profile.has_update_key() {
            authorisations.push(u.key_authorisation(KeyKind::Update, batch.update_key_id)?.to_wire());
        }
        let issuer_word =
            IssuerWord { scheme_key: record.public_key.to_vec(), policy: policy.to_wire(), authorisations };
        Ok(Kit { master: u.perso_master()?, batch: batch.clone(), transfer_keys, update_key, ca, issuer_word })
    }

    pub fn plan(&self, serial: CardSerial) -> CardPlan {
        CardPlan {
            serial,
            profile: self.batch.profile,
            transfer_keys: self.transfer_keys.clone(),
            selected: TransferKeyId(self.batch.transfer_key_id),
            update_key: self.update_key.clone(),
            limit: TransferKeyIdLimit(self.batch.transfer_key_id_limit),
            initial_balance: Amount(self.batch.initial_balance),
            max_balance: Amount(self.batch.max_balance),
            trust_anchor: self.ca.as_ref().map(|c| c.root_der.clone()),
            issuer_word: self.issuer_word.clone(),
        }
    }
}

/// The back office's CA as the personalisation script's certificate issuer.
pub struct DbIssuer<'a, 'b> {
    pub unlocked: &'a Unlocked<'b>,
    pub signer: &'a CaSigner,
}

impl CertificateIssuer for DbIssuer<'_, '_> {
    fn issue(&self, serial: CardSerial, public_key_sec1: &[u8]) -> Result<Vec<u8>, String> {
        self.unlocked
            .write(|c| {
                let der = self.unlocked.issue_card_certificate(c, self.signer, serial, public_key_sec1)?;
                self.unlocked.log(c, "cert issue", serde_json::json!({ "card": serial.to_string(), "serial": crate::authority::issuer_ca::serial_hex(&der) }))?;
                Ok(der)
            })
            .map_err(|e| e.to_string())
    }
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

/// Personalise one slot into a card file. A complete file left by a run killed before recording is
/// accepted as it is (it is the card that was written); anything else is written from blank.
fn write_card_file(kit: &Kit, u: &Unlocked<'_>, dir: &Path, slot: &Slot, verbose: bool) -> Result<PathBuf, CliError> {
    let path = card_path(dir, slot.serial);
    if let Ok(Some(b)) = FileStorage::new(&path).load()
        && let Ok(s) = CardState::decode(&b)
        && s.life_cycle == LifeCycle::Issued
        && s.serial == Some(slot.serial)
    {
        return Ok(path);
    }
    let mut card = Card::open(MemoryStorage::new()).map_err(|e| CliError::input(e.to_string(), "report this"))?;
    {
        let mut ch = InProcessChannel::new(&mut card, format!("virtual card {}", slot.serial));
        let issuer = kit.ca.as_ref().map(|signer| DbIssuer { unlocked: u, signer });
        personalise(
            &mut ch,
            &kit.master,
            &kit.plan(slot.serial),
            issuer.as_ref().map(|i| i as &dyn CertificateIssuer),
            verbose,
        )?;
    }
    FileStorage::new(&path).store(&card.state().encode()).map_err(|e| {
        CliError::input(format!("cannot write card file: {e}"), "check the output directory is writable")
    })?;
    Ok(path)
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
        let path = write_card_file(&kit, u, &dir, slot, verbose)?;
        u.record_card(&run, slot, Some(&path.display().to_string()))?;
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
