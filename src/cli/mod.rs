//! The command line (DESIGN.md §9): clap definitions, one handler module per command group, and the
//! mapping of typed errors to messages with hints and exit codes (house rule 6).
//!
//! Exit status: 0 success; 1 a check said no (invalid chain, failed rollout check, tampered log,
//! stranded cards); 2 bad input, usage or environment.

mod audit;
mod backoffice;
mod card;
mod demo;
mod demo_pcsc;
mod error;
mod fab;
mod fleet;
mod output;
mod perso;
mod perso_pcsc;
mod readers;
mod rollout;
mod settle;

use clap::{Parser, Subcommand};
pub use error::CliError;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "keyroll",
    version,
    about = "Key rollout authority, personalisation line, reference card and terminal"
)]
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
    /// Create an issuer database with its first keys, CA root and audit log.
    Init(backoffice::InitArgs),
    /// Transfer and update key versions.
    #[command(subcommand)]
    Key(backoffice::KeyCommand),
    /// Personalisation batches.
    #[command(subcommand)]
    Batch(backoffice::BatchCommand),
    /// Personalise cards of a batch (card files or a PC/SC reader).
    Perso(perso::PersoArgs),
    /// Plan and check key rollouts.
    #[command(subcommand)]
    Rollout(backoffice::RolloutCommand),
    /// The issuer CA: card certificates, revocations, CRL, root.
    #[command(subcommand)]
    Cert(backoffice::CertCommand),
    /// List PC/SC readers and whether a card is present.
    Readers,
    /// The main job: a whole key rollout on virtual cards, told as it goes, with a verdict.
    Demo(demo::DemoArgs),
    /// Card manufacturers: make one (reference cards), make blank cards, trust one.
    #[command(subcommand)]
    Fab(fab::FabCommand),
    /// Auditors: certificate chains (RFC 5280), revocation, the audit log, and a whole-database report.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let ctx = output::Context { json: cli.json, verbose: cli.verbose };
    match cli.command {
        Command::Card(c) => card::run(&ctx, c),
        Command::Settle(a) => settle::run(&ctx, a),
        Command::Init(a) => backoffice::init(&ctx, &cli.db, a),
        Command::Key(c) => backoffice::key(&ctx, &cli.db, cli.identity.as_deref(), c),
        Command::Batch(c) => backoffice::batch(&ctx, &cli.db, cli.identity.as_deref(), c),
        Command::Perso(a) => perso::run(&ctx, &cli.db, cli.identity.as_deref(), a),
        Command::Rollout(backoffice::RolloutCommand::Plan { transfer_key }) => {
            backoffice::rollout_plan(&ctx, &cli.db, transfer_key)
        }
        Command::Rollout(backoffice::RolloutCommand::Status { cards }) => rollout::status(&ctx, &cli.db, &cards),
        Command::Rollout(backoffice::RolloutCommand::Verify) => rollout::verify(&ctx, &cli.db, cli.identity.as_deref()),
        Command::Cert(c) => backoffice::cert(&ctx, &cli.db, cli.identity.as_deref(), c),
        Command::Audit(c) => audit::run(&ctx, &cli.db, c),
        Command::Fab(c) => fab::run(&ctx, &cli.db, cli.identity.as_deref(), c),
        Command::Demo(a) => demo::run(&ctx, a),
        Command::Readers => readers::run(&ctx),
    }
}
