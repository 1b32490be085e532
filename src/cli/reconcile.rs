//! `keyroll reconcile --cards DIR [--journal FILE]... [--expect-head SHA256]...` (DESIGN.md §9): account
//! for every unit of issued value from the cards' MAC'd log exports and settlement journals, and record
//! the result in the issuer database (bound to the signed audit log; `audit report` shows the latest).
//! Each journal must extend the head the last reconciliation recorded for it. Exit 0 when everything is
//! accounted for, 1 when anything is unaccounted or flagged (recorded all the same), 2 on bad input.

use super::CliError;
use super::output::{self, Context};
use crate::protocol::ledger::CardLogExport;
use crate::rollout::exports::{self, ExportFileError};
use crate::rollout::reconcile::{Reconciliation, Resolver};
use crate::rollout::record::{self, Journal, Recorded};
use crate::rollout::status::Fleet;
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  keyroll reconcile --cards cards\n  \
                        keyroll reconcile --export a.json --export b.json --challenge $C   # `card export-log` files of this round\n  \
                        keyroll reconcile --reader \"00 00\" --cards cards                 # a card in a reader, read here\n  \
                        keyroll reconcile --cards cards --journal line1.jsonl --journal line2.jsonl --json\n  \
                        keyroll reconcile --cards cards --journal line1.jsonl --expect-head 5d41…   # the head `settle --journal` printed")]
pub struct ReconcileArgs {
    /// Folder of card files (`*.card`, as `perso --out-dir` wrote them).
    #[arg(long, required_unless_present_any = ["export", "reader"])]
    pub cards: Option<PathBuf>,
    /// A card log export written by `card export-log` (repeatable); it must answer --challenge.
    #[arg(long, value_name = "FILE", requires = "challenge")]
    pub export: Vec<PathBuf>,
    /// This round's challenge (32 hex digits, `keyroll card challenge`), which every --export answers:
    /// an export recorded in an earlier round is refused.
    #[arg(long, value_name = "HEX")]
    pub challenge: Option<String>,
    /// Read a card's log over a PC/SC reader here, answering a challenge drawn for it (repeatable;
    /// `file:PATH` reads a card file the same way).
    #[arg(long, value_name = "CARD")]
    pub reader: Vec<String>,
    /// A settlement journal written by `settle --journal` (repeatable). Each must extend the head the
    /// last reconciliation recorded for it (a deleted last line is flagged).
    #[arg(long)]
    pub journal: Vec<PathBuf>,
    /// A journal head (SHA-256 hex) kept outside the journal, as `settle --journal` prints it
    /// (repeatable): some --journal must still hold that line, else it is flagged.
    #[arg(long, value_name = "SHA256")]
    pub expect_head: Vec<String>,
}

#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    reconciliation: &'a Reconciliation,
    /// The row this run recorded (id, time, input digests, journal heads).
    recorded: &'a crate::authority::reconciliations::ReconciliationRecord,
}

pub fn run(ctx: &Context, db: &Path, identity: Option<&Path>, a: ReconcileArgs) -> Result<(), CliError> {
    for h in &a.expect_head {
        if h.trim().len() != 64 || hex::decode(h.trim()).is_err() {
            return Err(CliError::input(
                format!("--expect-head {h:?} is not a SHA-256 in hex (64 hex digits)"),
                "pass the journal head `settle --journal` printed",
            ));
        }
    }
    let exports = collect_exports(ctx, &a)?;
    let mut journals = Vec::new();
    for p in &a.journal {
        let text = std::fs::read_to_string(p).map_err(|e| {
            CliError::input(format!("{}: {e}", p.display()), "pass a journal written by `settle --journal`")
        })?;
        let name = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()).display().to_string();
        journals.push(Journal { name, text });
    }
    // Inputs read and checked: only now the database (nothing is recorded for bad input).
    let auth = ctx.open_custodian(db)?;
    let u = auth.unlock(identity)?;
    // Export files must answer a challenge this back office drew for the round still open.
    if let (false, Some(c)) = (a.export.is_empty(), a.challenge.as_deref()) {
        let c = super::card::parse_challenge(c)?;
        if let Err(e) = crate::rollout::exports::check_round(&u, &c)? {
            return Err(CliError::input(
                e.to_string(),
                "draw this round's challenge with `keyroll card challenge` and collect the exports again",
            ));
        }
    }
    let Recorded { reconciliation: r, record } = record::reconcile_and_record(&u, &exports, &journals, &a.expect_head)?;
    if ctx.json {
        output::json(&Output { reconciliation: &r, recorded: &record });
    } else {
        print(&r);
        println!("recorded         reconciliation {} at {}", record.id, record.at);
        for j in &record.result.journals {
            println!("journal head     {} ({} lines) {}", j.head, j.lines, j.name);
        }
    }
    if !r.accounted() {
        return Err(CliError::check(
            format!("{} unaccounted, {} flag(s)", r.unaccounted, r.flags.len()),
            "settle the cards named as resolvers, then reconcile again; a flagged credit or journal needs the issuer",
        ));
    }
    Ok(())
}

/// Every card log this run reconciles, each answering a challenge this run can vouch for: card files
/// and cards in readers answer one drawn here; export files must answer this round's `--challenge`
/// (`rollout::exports`). Bad input changes nothing and records nothing.
fn collect_exports(ctx: &Context, a: &ReconcileArgs) -> Result<Vec<CardLogExport>, CliError> {
    let mut exports = Vec::new();
    if let Some(dir) = &a.cards {
        let fleet = Fleet::load(dir)?;
        let challenge = super::card::fresh_challenge()?;
        for (path, state) in &fleet.cards {
            exports.push(state.export_log(&challenge).ok_or_else(|| {
                CliError::input(
                    format!("{}: the card has no log key, so its log cannot be checked", path.display()),
                    "personalise cards with this version of keyroll",
                )
            })?);
        }
    }
    if !a.export.is_empty() {
        let challenge = super::card::parse_challenge(a.challenge.as_deref().unwrap_or_default())?;
        for p in &a.export {
            exports.push(exports::read_export(p, &challenge).map_err(|e| {
                let hint = match e {
                    ExportFileError::Stale { .. } => {
                        "collect the card's log again with `card export-log --challenge` and this round's challenge"
                    }
                    _ => "pass a file `keyroll card export-log` wrote",
                };
                CliError::input(e.to_string(), hint)
            })?);
        }
    }
    for r in &a.reader {
        let challenge = super::card::fresh_challenge()?;
        exports.push(super::card::export_from(ctx, r, &challenge, "nothing was recorded")?);
    }
    Ok(exports)
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
    if !r.issuer_resolutions.is_empty() {
        println!(
            "issuer resolutions ({}): proved safe by this reconciliation; run each (same --db and --identity), then `keyroll policy publish --out FILE` and settle with --policy FILE:",
            r.issuer_resolutions.len()
        );
        for x in &r.issuer_resolutions {
            println!("  {}", resolve_command(x));
        }
    }
}

/// The `keyroll policy resolve` command line that signs resolution `x`.
pub fn resolve_command(x: &crate::protocol::policy::Resolution) -> String {
    let outcome = match x.outcome {
        crate::protocol::policy::ResolutionOutcome::Refund => "--refund",
        crate::protocol::policy::ResolutionOutcome::Credited => "--credited",
        crate::protocol::policy::ResolutionOutcome::Void => "--void",
    };
    format!(
        "keyroll policy resolve --payer {} --payer-sequence {} --payee {} --receipt {} --amount {} {outcome}",
        x.payer, x.payer_sequence, x.payee, x.receipt, x.amount
    )
}
