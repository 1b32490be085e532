//! `keyroll perso`: personalise cards of a batch, as card files (`perso::batch`) or through a PC/SC
//! reader (`perso::line`).

use super::CliError;
use super::output::Context;
use crate::authority::Unlocked;
use crate::perso::batch::{CardDone, personalise_to_files};
use clap::Args;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  keyroll perso --batch first --out-dir cards --count 10   # card files; rerun to resume\n  \
                        keyroll perso --batch first --reader \"00 00\" --count 2     # the PC/SC line"
)]
pub struct PersoArgs {
    /// The batch whose cards to write (`keyroll batch list`).
    #[arg(long, value_name = "NAME")]
    pub batch: String,
    /// Write reference card files (SERIAL.card) to this directory.
    #[arg(long, value_name = "DIR", conflicts_with = "reader", required_unless_present = "reader")]
    pub out_dir: Option<PathBuf>,
    /// Personalise cards presented in this PC/SC reader (exact name or a unique part), one after another.
    #[arg(long, value_name = "READER")]
    pub reader: Option<String>,
    /// How many cards (at least 1).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
}

/// Progress: a bar on a terminal, plain lines otherwise, nothing under --json.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
}

impl Progress {
    fn new(total: u64, json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} cards  {per_sec}  eta {eta}  {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Progress { bar, quiet: json }
    }

    fn card(&self, done: u64, total: u64, serial: impl std::fmt::Display, note: &str) {
        match &self.bar {
            Some(b) => {
                b.set_position(done);
                b.set_message(format!("{serial} {note}"));
            }
            None if !self.quiet => eprintln!("card {done}/{total} {serial} {note}"),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

pub fn run(ctx: &Context, db: &Path, identity: Option<&Path>, a: PersoArgs) -> Result<(), CliError> {
    let auth = ctx.open_custodian(db)?;
    let u = auth.unlock(identity)?;
    match (&a.out_dir, &a.reader) {
        (Some(dir), None) => to_files(ctx, &u, &a.batch, dir, a.count),
        (None, Some(reader)) => to_reader(ctx, &u, &a.batch, reader, a.count),
        _ => {
            Err(CliError::input("say where the cards are", "pass --out-dir DIR (card files) or --reader NAME (PC/SC)"))
        }
    }
}

fn to_files(ctx: &Context, u: &Unlocked<'_>, batch: &str, dir: &Path, count: u32) -> Result<(), CliError> {
    let progress = Progress::new(count as u64, ctx.json);
    let report = personalise_to_files(u, batch, dir, count, ctx.verbose, &mut |c: CardDone| {
        progress.card(c.done, c.total, c.serial, "written")
    })?;
    progress.finish();
    ctx.emit(&report, |r| {
        println!(
            "batch {batch:?}: {} card(s) written to {}{}",
            r.written,
            dir.display(),
            if r.resumed {
                format!(" (resumed run {}, {} already done)", r.run, r.already_done)
            } else {
                String::new()
            }
        );
    });
    Ok(())
}

#[cfg(not(feature = "pcsc"))]
fn to_reader(_ctx: &Context, _u: &Unlocked<'_>, _batch: &str, reader: &str, _count: u32) -> Result<(), CliError> {
    Err(CliError::input(
        format!("cannot use reader {reader:?}: this keyroll was built without PC/SC"),
        "build with `--features pcsc`, or use --out-dir for card files",
    ))
}

#[cfg(feature = "pcsc")]
fn to_reader(ctx: &Context, u: &Unlocked<'_>, batch: &str, reader: &str, count: u32) -> Result<(), CliError> {
    use crate::perso::line::{LineEvent, run_line};
    // The operator at the line needs the prompts on stderr, --json or not (stdout carries the JSON).
    let progress = Progress { bar: None, quiet: false };
    let report = run_line(u, batch, reader, count, ctx.verbose, &mut |e: &LineEvent| match e {
        LineEvent::Insert { reader, done, total } => {
            eprintln!("insert a blank card into {reader} ({done} of {total} done)")
        }
        LineEvent::Personalised { serial, done, total, last } => progress.card(
            *done as u64,
            *total as u64,
            serial,
            if *last { "personalised" } else { "personalised; remove it" },
        ),
        LineEvent::NoSerialLeft => eprintln!(
            "every remaining serial of this run was given to a card that was pulled half-way: put those cards back to \
             finish them (or start a new run); remove this blank card"
        ),
        LineEvent::NotThisRun { serial, life_cycle } => {
            eprintln!("card {serial} is {life_cycle:?} and not part of this run: remove it")
        }
        LineEvent::Pulled { serial, error } => {
            eprintln!("card {serial}: {error}; it stays reserved and will be resumed")
        }
    })?;
    progress.finish();
    ctx.emit(&report, |r| println!("batch {batch:?}: {} card(s) personalised in {}", r.count, r.reader));
    Ok(())
}
