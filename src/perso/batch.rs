//! The batch runner: personalise `count` cards of a batch as reference card files with the same APDU
//! script the PC/SC line sends. Each card is personalised in memory, then its final state is written
//! atomically to `DIR/<serial>.card` and recorded in the database; a run killed at any point is
//! finished by running the same command again.
//!
//! Blank cards come from the issuer's virtual manufacturer ("keyroll virtual fab", whose cards the
//! PC/SC line refuses) and go through the same version 2 script as real cards: factory certificates,
//! SCP11b, attested keys, chip register.
//!
//! [`Kit`] is what a batch's cards receive, including the multi-key choice of keys (claims 8-9).

use super::script::{
    AttestedKey, BackOfficeError, CardPlan, CertificateIssuer, ChipRegister, IssuerWord, Line, PersoError, personalise,
};
use crate::authority::batches::Batch;
use crate::authority::cards::{Run, Slot};
use crate::authority::issuer_ca::CaSigner;
use crate::authority::keys::{KeyKind, KeyState};
use crate::authority::{AuthorityError, Unlocked};
use crate::card::storage::{FileStorage, MemoryStorage, Storage, StorageError};
use crate::card::{Card, CardError, CardState};
use crate::crypto::{Secret16, TransferKey, UpdateKey, mac};
use crate::domain::{CardSerial, ChipId, Profile, TransferKeyId};
use crate::fab::{FabError, FactoryIdentity, Manufacturer};
use crate::protocol::codec::Wire;
use crate::protocol::info::LifeCycle;
use crate::transport::in_process::InProcessChannel;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BatchError {
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error(transparent)]
    Perso(#[from] PersoError),
    #[error("cannot use card folder {path}: {source}")]
    Folder { path: PathBuf, source: std::io::Error },
    #[error("cannot write card file {path}: {source}")]
    Write { path: PathBuf, source: StorageError },
    /// A fresh in-memory card that does not open: a fault of keyroll's card, not of the input.
    #[error("reference card: {0}")]
    Card(#[from] CardError),
    /// The virtual manufacturer could not make a blank card.
    #[error("virtual manufacturer: {0}")]
    Fab(#[from] FabError),
}

/// Everything a run needs to write cards of one batch.
pub struct Kit {
    /// The issuer's log master: each card's log-export key is derived from it and the serial.
    pub log_master: Secret16,
    pub batch: Batch,
    pub transfer_keys: Vec<TransferKey>,
    pub update_key: Option<UpdateKey>,
    pub ca: Option<CaSigner>,
    /// The scheme key, newest policy and key authorisations every card of the batch stores.
    pub issuer_word: IssuerWord,
}

impl Kit {
    /// Decrypt what the batch's cards receive: the batch's transfer key, for multi-key batches every
    /// newer pending or active transfer key up to the limit as well (claims 8–9: a later roll is a
    /// selection), the update key, the log master, and the CA for public-key profiles.
    pub fn load(u: &Unlocked<'_>, batch: &Batch) -> Result<Self, AuthorityError> {
        let mut transfer_keys = vec![u.transfer_key(batch.transfer_key_id.0)?];
        if batch.profile == Profile::MultiKey {
            let mut newer = u.auth.key_ids(KeyKind::Transfer, KeyState::Pending)?;
            newer.extend(u.auth.key_ids(KeyKind::Transfer, KeyState::Active)?);
            newer.sort_unstable();
            for id in newer {
                if TransferKeyId(id) > batch.transfer_key_id && batch.transfer_key_id_limit.admits(TransferKeyId(id)) {
                    transfer_keys.push(u.transfer_key(id)?);
                }
            }
        }
        let update_key = batch.profile.has_update_key().then(|| u.update_key(batch.update_key_id.0)).transpose()?;
        let ca = batch.profile.has_key_pair().then(|| u.ca()).transpose()?;
        // DESIGN.md §10: the scheme key, the newest policy and the authorisation of every key the card
        // takes (a multi-key card's pending keys have none yet: they become selectable with theirs).
        let (_, record) = u.scheme_signer()?;
        let policy = match u.auth.current_policy()? {
            Some(p) => p,
            None => u.policy_publish()?,
        };
        let active = u.auth.key_ids(KeyKind::Transfer, KeyState::Active)?;
        let mut authorisations = vec![u.key_authorisation(KeyKind::Transfer, batch.transfer_key_id.0)?.to_wire()];
        for k in &transfer_keys[1..] {
            if active.contains(&k.id.0) {
                authorisations.push(u.key_authorisation(KeyKind::Transfer, k.id.0)?.to_wire());
            }
        }
        if batch.profile.has_update_key() {
            authorisations.push(u.key_authorisation(KeyKind::Update, batch.update_key_id.0)?.to_wire());
        }
        let issuer_word =
            IssuerWord { scheme_key: record.public_key.to_vec(), policy: policy.to_wire(), authorisations };
        Ok(Kit { log_master: u.log_master()?, batch: batch.clone(), transfer_keys, update_key, ca, issuer_word })
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
            log_key: mac::card_log_key(&self.log_master, &serial),
            issuer_word: self.issuer_word.clone(),
        }
    }
}

/// The back office's CA as the personalisation script's certificate issuer: it certifies only an
/// attested key (DESIGN.md §10 point 2) of the chip the register bound to this serial, and records and
/// logs every certificate with the chip id and factory certificate fingerprints.
pub struct DbIssuer<'a, 'b> {
    pub unlocked: &'a Unlocked<'b>,
    pub signer: &'a CaSigner,
}

impl CertificateIssuer for DbIssuer<'_, '_> {
    fn issue(&self, card: &FactoryIdentity, key: &AttestedKey) -> Result<Vec<u8>, BackOfficeError> {
        super::script::check_attestation(card, key)?;
        Ok(self.unlocked.certify_attested_key(self.signer, card, key.serial, &key.public_key)?)
    }

    fn withdraw(&self, serial: CardSerial, why: &str) -> Result<(), BackOfficeError> {
        Ok(self.unlocked.withdraw_certificates(serial, why).map(drop)?)
    }
}

/// The back office's card register as the line's chip register: chip id <-> serial, for good.
pub struct DbRegister<'a, 'b> {
    pub unlocked: &'a Unlocked<'b>,
}

impl ChipRegister for DbRegister<'_, '_> {
    fn assign(&self, card: &FactoryIdentity, serial: CardSerial) -> Result<(), BackOfficeError> {
        Ok(self.unlocked.write(|c| self.unlocked.assign_chip(c, card, serial))?)
    }
}

/// Record a card the line refused as an impostor or a reused chip in the audit log (and nothing
/// else), then hand the error back. `target` names the run's target (a folder or `reader:NAME`).
pub fn record_refusal(
    u: &Unlocked<'_>,
    target: &str,
    e: PersoError,
    chip: Option<ChipId>,
) -> Result<PersoError, AuthorityError> {
    if let Some(code) = e.refusal_code() {
        let chip = match &e {
            PersoError::ChipRefused { chip, .. } => Some(*chip),
            _ => chip,
        };
        u.record_refusal(target, code, &e.to_string(), chip)?;
    }
    Ok(e)
}

/// A blank reference card from `fab`, as card state: a fresh chip id and factory key pairs.
pub fn blank_state(fab: &Manufacturer) -> Result<CardState, FabError> {
    let b = fab.make_blank()?;
    Ok(CardState::blank_from_fab(
        b.chip_id,
        b.agreement_key.to_bytes(),
        b.attestation_key.to_bytes(),
        b.agreement_cert,
        b.attestation_cert,
    ))
}

/// One card of a run done (for a progress display).
#[derive(Clone, Copy, Debug)]
pub struct CardDone {
    /// Cards of the run done so far, this one included.
    pub done: u64,
    pub total: u64,
    pub serial: CardSerial,
}

/// What a run of `perso --out-dir` did (`perso --json`).
#[derive(Debug, Serialize)]
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

fn card_path(dir: &Path, serial: CardSerial) -> PathBuf {
    dir.join(format!("{serial}.card"))
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
) -> Result<(PathBuf, ChipId), BatchError> {
    let path = card_path(dir, slot.serial);
    let write = |state: &CardState| {
        FileStorage::new(&path)
            .store(&state.encode())
            .map_err(|source| BatchError::Write { path: path.clone(), source })
    };
    let existing = FileStorage::new(&path).load().ok().flatten().and_then(|b| CardState::decode(&b).ok());
    let state = match existing {
        Some(s) if s.life_cycle == LifeCycle::Issued && s.serial == Some(slot.serial) && s.chip_id.is_some() => {
            return Ok((path, s.chip_id.expect("checked")));
        }
        Some(s) if s.chip_id.is_some() && s.life_cycle != LifeCycle::Issued => s,
        _ => {
            let s = blank_state(fab)?;
            write(&s)?;
            s
        }
    };
    // A certificate from an earlier attempt that never finished (a killed run) certifies a key this
    // attempt replaces.
    u.withdraw_certificates(slot.serial, UNFINISHED)?;
    let mut card = Card::create(MemoryStorage::new(), state)?;
    let outcome = {
        let mut ch = InProcessChannel::new(&mut card, format!("virtual card {}", slot.serial));
        personalise(&mut ch, line, &kit.plan(slot.serial))
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return Err(record_refusal(u, &dir.display().to_string(), e, card.state().chip_id)?.into()),
    };
    if let Err(e) = write(card.state()) {
        u.withdraw_certificates(slot.serial, &format!("the card file could not be written: {e}"))?;
        return Err(e);
    }
    Ok((path, outcome.chip_id))
}

/// Why a certificate of a slot that is personalised again is withdrawn first.
pub(crate) const UNFINISHED: &str = "an earlier personalisation of this card did not finish";

/// Personalise `count` cards of `batch` into `dir` (resuming an interrupted identical run), telling
/// `on_card` after each card written.
pub fn personalise_to_files(
    u: &Unlocked<'_>,
    batch: &str,
    dir: &Path,
    count: u32,
    verbose: bool,
    on_card: &mut dyn FnMut(CardDone),
) -> Result<PersoReport, BatchError> {
    let folder = |source| BatchError::Folder { path: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(folder)?;
    let dir = dir.canonicalize().map_err(folder)?;
    let started = Instant::now();
    let (run, slots): (Run, Vec<Slot>) = u.start_run(batch, &dir.display().to_string(), count)?;
    let kit = Kit::load(u, &run.batch)?;
    // Reference cards come from the virtual manufacturer (its cards are refused by the PC/SC line).
    let fab = u.virtual_fab()?;
    let roots = u.auth.trusted_roots()?;
    let issuer = kit.ca.as_ref().map(|signer| DbIssuer { unlocked: u, signer });
    let register = DbRegister { unlocked: u };
    let line = Line {
        roots: &roots,
        allow_virtual: true,
        register: Some(&register),
        issuer: issuer.as_ref().map(|i| i as &dyn CertificateIssuer),
        verbose,
    };
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
        on_card(CardDone { done: i as u64 + 1, total: count as u64, serial: slot.serial });
    }
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
