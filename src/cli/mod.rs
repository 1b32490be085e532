//! The command line (DESIGN.md §9): clap definitions, one handler module per command group, and the
//! mapping of typed errors to messages with hints and exit codes (house rule 6).
//!
//! Exit status: 0 success; 1 a check said no (invalid chain, failed rollout check, tampered log,
//! stranded cards); 2 bad input, usage or environment.

mod card;
mod error;
mod output;
mod settle;

use clap::{Parser, Subcommand};
pub use error::CliError;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "keyroll", version, about = "Key rollout authority, personalisation line, reference card and terminal")]
pub struct Cli {
    /// The issuer database.
    #[arg(long, global = true, env = "KEYROLL_DB", default_value = "keyroll.db")]
    pub db: PathBuf,
    /// An age identity file, for commands that touch secrets.
    #[arg(long, global = true, env = "KEYROLL_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// One JSON document on stdout (its "schema" field names the version).
    #[arg(long, global = true)]
    pub json: bool,
    /// APDU trace with timing on stderr (never key bytes).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Reference cards: show a card file.
    #[command(subcommand)]
    Card(card::CardCommand),
    /// Settle value between two cards, rolling the newer transfer key onto the older card first.
    Settle(settle::SettleArgs),
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let ctx = output::Context { json: cli.json, verbose: cli.verbose };
    match cli.command {
        Command::Card(c) => card::run(&ctx, c),
        Command::Settle(a) => settle::run(&ctx, a),
    }
}
