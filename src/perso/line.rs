//! The personalisation line over PC/SC (feature `pcsc`). For each card it waits for a card in the
//! reader, runs the same personalisation script as the batch runner, records the card and asks for the
//! next. A card pulled half-way stays "reserved" in the database; put it back (or run the line again)
//! and it is resumed under its serial. The run ends with its last card: nothing waits for that one to
//! be removed.
//!
//! A card pulled exactly as LOCK ran comes back issued, its LOCK answer lost: the line records it once it
//! proves it holds the log key the line gave that serial (INTERNAL AUTHENTICATE `80 88 00 01`), and only
//! if its chip is the one the register bound to the serial.
//!
//! The line takes only cards of manufacturers the issuer trusts (`fab trust`), never the virtual
//! manufacturer's; a card it refuses as an impostor (or a chip that already has its serial) is
//! recorded in the audit log and stops the run.

use super::batch::{DbIssuer, DbRegister, Kit, record_refusal};
use super::script::{CertificateIssuer, Line, PersoError, authenticate_issued, personalise, read_card};
use crate::authority::{AuthorityError, Unlocked};
use crate::domain::CardSerial;
use crate::protocol::info::LifeCycle;
use crate::transport::pcsc::{self, PcscChannel};
use crate::transport::{Trace, TransportError};
use serde::Serialize;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LineError {
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error(transparent)]
    Perso(#[from] PersoError),
    #[error("reader {reader:?}: {source}")]
    Reader { reader: String, source: TransportError },
    #[error("no card in {reader}: {source}")]
    NoCard { reader: String, source: TransportError },
}

/// What the line tells its operator.
#[derive(Clone, Debug)]
pub enum LineEvent {
    /// Waiting for a blank card; `done` of `total` are finished.
    Insert { reader: String, done: u32, total: u32 },
    /// A card was personalised; `last` when it was the run's last one.
    Personalised { serial: CardSerial, done: u32, total: u32, last: bool },
    /// Every serial left was given to a card pulled half-way: those cards must come back.
    NoSerialLeft,
    /// A card that is not part of this run (issued, or half-written for another run).
    NotThisRun { serial: CardSerial, life_cycle: LifeCycle },
    /// A card was pulled during personalisation; it stays reserved and will be resumed.
    Pulled { serial: CardSerial, error: String },
}

/// What a run of the line did (`perso --reader --json`).
#[derive(Debug, Serialize)]
pub struct LineReport {
    pub batch: String,
    pub reader: String,
    pub run: i64,
    pub count: u32,
    pub cards: Vec<String>,
}

/// How long the line waits for a card to arrive or leave.
const WAIT: Duration = Duration::from_secs(600);

/// Personalise `count` cards of `batch` presented one after another in `reader`.
pub fn run_line(
    u: &Unlocked<'_>,
    batch: &str,
    reader: &str,
    count: u32,
    verbose: bool,
    on_event: &mut dyn FnMut(&LineEvent),
) -> Result<LineReport, LineError> {
    let name = pcsc::resolve_reader(reader).map_err(|source| LineError::Reader { reader: reader.into(), source })?;
    let (run, slots) = u.start_run(batch, &format!("reader:{name}"), count)?;
    let kit = Kit::load(u, &run.batch)?;
    // A real line takes cards only from manufacturers trusted with `fab trust` (never the virtual one).
    let roots = u.auth.trusted_roots()?;
    let issuer = kit.ca.as_ref().map(|signer| DbIssuer { unlocked: u, signer });
    let register = DbRegister { unlocked: u };
    let line = Line {
        roots: &roots,
        allow_virtual: false,
        register: Some(&register),
        issuer: issuer.as_ref().map(|x| x as &dyn CertificateIssuer),
        verbose,
    };
    let target = format!("reader:{name}");
    let wait = Some(WAIT);
    let mut done: Vec<bool> = slots.iter().map(|s| s.personalised).collect();
    // A serial is handed out once the register bound it to a chip (inside the channel, before the first
    // secret): from then on only that chip, found again by its serial, may finish the slot.
    let bound = |serial| u.auth.chip_of_serial(serial).map(|c| c.is_some());
    let mut handed_out: Vec<bool> =
        slots.iter().map(|s| Ok(s.initialised || bound(s.serial)?)).collect::<Result<_, AuthorityError>>()?;
    let finished = |done: &[bool]| done.iter().filter(|d| **d).count() as u32;
    while done.iter().any(|d| !d) {
        on_event(&LineEvent::Insert { reader: name.clone(), done: finished(&done), total: count });
        let mut ch = PcscChannel::wait_and_connect(&name, wait)
            .map_err(|source| LineError::NoCard { reader: name.clone(), source })?;
        let info = match read_card(&mut ch, &mut Trace::verbose(verbose)) {
            Ok(info) => info,
            // Gone (or mute) before it said who it is, e.g. a card pulled just as the reader saw it:
            // nothing was written to it, so wait for the reader to empty and for the next card.
            Err(PersoError::Transport { .. }) => {
                let _ = ch.wait_for_removal(wait);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let slot = match info.life_cycle {
            // A half-written card of this run: finish it under its serial.
            LifeCycle::Personalising => (0..slots.len()).find(|&i| slots[i].serial == info.serial && !done[i]),
            // A blank card takes a serial no card has been given yet, so no two cards can share one.
            LifeCycle::Blank => (0..slots.len()).find(|&i| !done[i] && !handed_out[i]),
            // LOCK ran but its answer was lost (the card was pulled at that moment): the card is complete
            // and only its bookkeeping is left, if it is the chip the register bound to that serial.
            LifeCycle::Issued => (0..slots.len())
                .find(|&i| slots[i].serial == info.serial && !done[i] && handed_out[i] && info.chip_id.is_some()),
        };
        let Some(i) = slot else {
            if info.life_cycle == LifeCycle::Blank {
                on_event(&LineEvent::NoSerialLeft);
            } else {
                on_event(&LineEvent::NotThisRun { serial: info.serial, life_cycle: info.life_cycle });
            }
            let _ = ch.wait_for_removal(wait);
            continue;
        };
        let plan = kit.plan(slots[i].serial);
        let outcome = if info.life_cycle == LifeCycle::Issued {
            // The register's chip and the card's proof that it holds this serial's log key (a chip id
            // alone is only a claim once the factory keys are gone).
            match (u.auth.chip_of_serial(slots[i].serial)?, info.chip_id) {
                (Some(bound), Some(chip)) if bound == chip => {
                    authenticate_issued(&mut ch, &plan, verbose).map(|()| (plan.serial, chip))
                }
                (_, Some(chip)) => Err(PersoError::ChipRefused {
                    chip,
                    why: format!("card {} is issued but its chip is not the one bound to that serial", info.serial),
                }),
                (_, None) => Err(PersoError::Unproven { serial: info.serial }),
            }
        } else {
            u.withdraw_certificates(slots[i].serial, super::batch::UNFINISHED)?;
            let o = personalise(&mut ch, &line, &plan);
            handed_out[i] = handed_out[i] || bound(slots[i].serial)?;
            o.map(|o| (o.serial, o.chip_id))
        };
        match outcome {
            Ok((serial, chip)) => {
                u.record_card(&run, &slots[i], None, Some(chip))?;
                done[i] = true;
                let last = done.iter().all(|d| *d);
                on_event(&LineEvent::Personalised { serial, done: finished(&done), total: count, last });
                if last {
                    break;
                }
            }
            Err(e @ PersoError::Transport { .. }) => {
                on_event(&LineEvent::Pulled { serial: slots[i].serial, error: e.to_string() });
                continue;
            }
            // An impostor (or a reused chip) is recorded in the audit log and stops the line.
            Err(e) => return Err(record_refusal(u, &target, e, info.chip_id)?.into()),
        }
        let _ = ch.wait_for_removal(wait);
    }
    u.finish_run(&run)?;
    Ok(LineReport {
        batch: batch.to_string(),
        reader: name,
        run: run.id,
        count,
        cards: slots.iter().map(|s| s.serial.to_string()).collect(),
    })
}
