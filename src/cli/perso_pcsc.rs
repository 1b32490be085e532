//! `keyroll perso --reader`: the personalisation line over PC/SC (feature `pcsc`). For each card it
//! waits for a card in the reader, runs the same personalisation script as the virtual line, records
//! the card and asks for the next. A card pulled half-way stays "reserved" in the database; put it back
//! (or run the command again) and it is resumed under its serial.

use super::CliError;
use super::output::Context;
use crate::authority::Unlocked;

#[cfg(not(feature = "pcsc"))]
pub fn to_reader(_ctx: &Context, _u: &Unlocked<'_>, _batch: &str, reader: &str, _count: u32) -> Result<(), CliError> {
    Err(CliError::input(
        format!("cannot use reader {reader:?}: this keyroll was built without PC/SC"),
        "build with `--features pcsc`, or use --out-dir for card files",
    ))
}

#[cfg(feature = "pcsc")]
pub fn to_reader(ctx: &Context, u: &Unlocked<'_>, batch: &str, reader: &str, count: u32) -> Result<(), CliError> {
    use super::perso::{DbIssuer, DbRegister, Kit, Progress, refused};
    use crate::authority::manufacturers;
    use crate::perso::{CertificateIssuer, Line, personalise, script::read_card};
    use crate::protocol::info::LifeCycle;
    use crate::transport::Trace;
    use crate::transport::pcsc::{self, PcscChannel};
    use std::time::Duration;

    let name = pcsc::resolve_reader(reader)
        .map_err(|e| CliError::input(format!("reader {reader:?}: {e}"), "list readers with `keyroll readers`"))?;
    let (run, slots) = u.start_run(batch, &format!("reader:{name}"), count)?;
    let kit = Kit::load(u, &run.batch)?;
    // A real line takes cards only from manufacturers trusted with `fab trust` (never the virtual one).
    let roots = manufacturers::trusted_roots(u.conn())?;
    let issuer = kit.ca.as_ref().map(|signer| DbIssuer { unlocked: u, signer });
    let register = DbRegister { unlocked: u };
    let line = Line {
        roots: &roots,
        allow_virtual: false,
        register: Some(&register),
        issuer: issuer.as_ref().map(|x| x as &dyn CertificateIssuer),
        verbose: ctx.verbose,
    };
    let progress = Progress::new(count as u64, ctx.json);
    let wait = Some(Duration::from_secs(600));
    let mut done: Vec<bool> = slots.iter().map(|s| s.personalised).collect();
    // A serial is handed out once the register bound it to a chip (inside the channel, before the first
    // secret): from then on only that chip, found again by its serial, may finish the slot.
    let bound = |serial| manufacturers::chip_of_serial(u.conn(), serial).map(|c| c.is_some());
    let mut handed_out: Vec<bool> = slots
        .iter()
        .map(|s| Ok(s.initialised || bound(s.serial)?))
        .collect::<Result<_, crate::authority::AuthorityError>>()?;
    while done.iter().any(|d| !d) {
        eprintln!("insert a blank card into {name} ({} of {count} done)", done.iter().filter(|d| **d).count());
        let mut ch = PcscChannel::wait_and_connect(&name, wait)
            .map_err(|e| CliError::input(format!("no card: {e}"), "insert a card, then run the same command again"))?;
        let info = read_card(&mut ch, &mut Trace::verbose(ctx.verbose))?;
        let slot = match info.life_cycle {
            // A half-written card of this run: finish it under its serial.
            LifeCycle::Personalising => (0..slots.len()).find(|&i| slots[i].serial == info.serial && !done[i]),
            // A blank card takes a serial no card has been given yet, so no two cards can share one.
            LifeCycle::Blank => (0..slots.len()).find(|&i| !done[i] && !handed_out[i]),
            LifeCycle::Issued => None,
        };
        let Some(i) = slot else {
            if info.life_cycle == LifeCycle::Blank {
                eprintln!(
                    "every remaining serial of this run was given to a card that was pulled half-way: put those cards \
                     back to finish them (or start a new run); remove this blank card"
                );
            } else {
                eprintln!("card {} is {:?} and not part of this run: remove it", info.serial, info.life_cycle);
            }
            let _ = ch.wait_for_removal(wait);
            continue;
        };
        let outcome = personalise(&mut ch, &line, &kit.plan(slots[i].serial));
        handed_out[i] = handed_out[i] || bound(slots[i].serial)?;
        match outcome {
            Ok(o) => {
                u.record_card(&run, &slots[i], None, Some(o.chip_id))?;
                done[i] = true;
                progress.card(
                    done.iter().filter(|d| **d).count() as u64,
                    count as u64,
                    o.serial,
                    "personalised; remove it",
                );
            }
            Err(e) => {
                eprintln!("card {}: {e}; it stays reserved and will be resumed", slots[i].serial);
                if matches!(e, crate::perso::PersoError::Transport { .. }) {
                    continue;
                }
                // An impostor (or a reused chip) is recorded in the audit log and stops the line.
                return Err(refused(u, &format!("reader:{name}"), e, info.chip_id));
            }
        }
        let _ = ch.wait_for_removal(wait);
    }
    progress.finish();
    u.finish_run(&run)?;
    println!("batch {batch:?}: {count} card(s) personalised in {name}");
    Ok(())
}
