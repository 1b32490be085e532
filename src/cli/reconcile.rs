//! `keyroll reconcile --cards DIR [--journal FILE]...` (DESIGN.md §9): account for every unit of issued
//! value from the cards' MAC'd log exports and settlement journals. Exit 0 when everything is accounted
//! for, 1 when anything is unaccounted or flagged, 2 on bad input.

use super::CliError;
use super::output::{self, Context};
use crate::rollout::reconcile::{self, JournalText, Reconciliation, Resolver};
use crate::rollout::status::Fleet;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  keyroll reconcile --cards cards\n  \
                        keyroll reconcile --cards cards --journal line1.jsonl --journal line2.jsonl --json")]
pub struct ReconcileArgs {
    /// Folder of card files (`*.card`, as `perso --out-dir` wrote them).
    #[arg(long)]
    pub cards: PathBuf,
    /// A settlement journal written by `settle --journal` (repeatable).
    #[arg(long)]
    pub journal: Vec<PathBuf>,
}

pub fn run(ctx: &Context, db: &Path, identity: Option<&Path>, a: ReconcileArgs) -> Result<(), CliError> {
    let auth = ctx.open_custodian(db)?;
    let master = auth.unlock(identity)?.log_master()?;
    let fleet = Fleet::load(&a.cards)?;
    let mut exports = Vec::with_capacity(fleet.cards.len());
    for (path, state) in &fleet.cards {
        exports.push(state.export_log().ok_or_else(|| {
            CliError::input(
                format!("{}: the card has no log key, so its log cannot be checked", path.display()),
                "personalise cards with this version of keyroll",
            )
        })?);
    }
    let mut texts = Vec::new();
    for p in &a.journal {
        let t = std::fs::read_to_string(p).map_err(|e| {
            CliError::input(format!("{}: {e}", p.display()), "pass a journal written by `settle --journal`")
        })?;
        texts.push((p.display().to_string(), t));
    }
    let journals: Vec<_> = texts.iter().map(|(name, text)| JournalText { name: name.clone(), text }).collect();
    let r = reconcile::reconcile(&exports, &journals, &|s| reconcile::log_key(&master, s));
    if ctx.json {
        output::json(&r);
    } else {
        print(&r);
    }
    if !r.accounted() {
        return Err(CliError::check(
            format!("{} unaccounted, {} flag(s)", r.unaccounted, r.flags.len()),
            "settle the cards named as resolvers, then reconcile again; a flagged credit needs the issuer",
        ));
    }
    Ok(())
}

fn print(r: &Reconciliation) {
    println!("cards            {}", r.cards);
    println!("issued           {}", r.issued);
    println!("balances         {}", r.balances);
    println!("in flight        {}", r.in_flight);
    for t in &r.transfers_in_flight {
        let by = match &t.resolver {
            Resolver::Cards { payer, payee } => format!("settle {payer} with {payee}"),
            Resolver::AbsentPayee { payee } => format!("bring card {payee}"),
            Resolver::Issuer => "issuer resolution".into(),
        };
        println!("  {} → {} receipt {} amount {}: {by}", t.payer, t.payee, t.receipt, t.amount);
    }
    println!("unaccounted      {}", r.unaccounted);
    for f in &r.flags {
        println!("FLAG {}", serde_json::to_string(f).unwrap_or_default());
    }
}
