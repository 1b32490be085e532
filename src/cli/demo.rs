//! `keyroll demo [--dir DIR] [--pcsc]`: renders the story and verdict of [`crate::demo`].

use super::CliError;
use super::output::Context;
use crate::demo::{Channel, DemoReport, Event};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  keyroll demo\n  keyroll demo --dir demo --json\n  \
                        keyroll --db demo/keyroll.db --identity demo/keyroll.db.identity rollout verify   # agrees with the demo")]
pub struct DemoArgs {
    /// Where to put the database, its identity and the card files (default: a new temporary folder).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Run the card steps over real PC/SC (pcscd with vsmartcard-vpcd readers).
    #[arg(long)]
    pub pcsc: bool,
}

pub fn run(ctx: &Context, a: DemoArgs) -> Result<(), CliError> {
    let dir = match a.dir {
        Some(d) => d,
        None => tempfile::Builder::new()
            .prefix("keyroll-demo-")
            .tempdir()
            .map_err(|e| CliError::input(format!("cannot create a temporary folder: {e}"), "pass --dir DIR"))?
            .keep(),
    };
    let channel = if a.pcsc { Channel::Pcsc } else { Channel::InProcess };
    let json = ctx.json;
    let report = crate::demo::run(&dir, channel, ctx.verbose, &mut |e: &Event| {
        if !json {
            println!("[{}] {}", e.step, e.text);
        }
    })?;
    ctx.emit(&report, print_verdict);
    if !report.verdict.ok {
        return Err(CliError::check(
            format!("the demo's verdict failed: {}", report.verdict.failures()),
            "the [verdict] lines above say which check failed",
        ));
    }
    Ok(())
}

fn print_verdict(r: &DemoReport) {
    let s = &r.status;
    println!("[status] {} card(s); by transfer key: {:?}", s.cards, s.by_transfer_key_id);
    for c in &r.verdict.checks {
        println!("[verdict] {}: {} ({})", c.name.replace('_', " "), if c.ok { "yes" } else { "NO" }, c.detail);
    }
    println!("[verdict] {}", r.verdict.word());
}
