//! The command line (DESIGN.md §9): clap definitions, one module per command group, and the mapping
//! of typed errors to messages with hints and exit codes (house rule 6). Each handler parses its
//! arguments, calls one library function and renders its result; decisions live in the library.
//!
//! Exit status: 0 success; 1 a check said no; 2 bad input, usage or environment; 70 an internal
//! fault (a bug). See [`error`].

mod audit;
mod batch;
mod card;
mod cert;
mod db;
mod demo;
mod docs;
mod error;
mod fab;
mod init;
mod key;
mod output;
mod perso;
mod policy;
mod readers;
mod reconcile;
mod rollout;
mod settle;

use clap::{CommandFactory, Parser, Subcommand};
pub use error::{CliError, EXIT_CHECK, EXIT_INPUT, EXIT_INTERNAL};
use std::ffi::OsString;
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  keyroll demo                                   # a whole key rollout on virtual cards, with a verdict
  export KEYROLL_DB=issuer.db KEYROLL_IDENTITY=issuer.db.identity
  keyroll init --issuer \"Example Transit\"        # database, first keys, CA root, custodian identity
  keyroll batch new first --profile hybrid --transfer-key-limit 3 --initial-balance 500
  keyroll perso --batch first --out-dir cards --count 10
  keyroll rollout plan --transfer-key 2

Exit status: 0 success; 1 a check said no (invalid chain, stranded cards, failed rollout check,
tampered log, revoked card); 2 bad input, usage or environment; 70 an internal fault (a bug).
Every error ends with a `hint:` line; with --json it is one JSON document on stderr.";

#[derive(Parser, Debug)]
#[command(
    name = "keyroll",
    version,
    about = "Key rollout authority, personalisation line, reference card and terminal",
    long_about = "Key rollout authority, personalisation line, reference card and settlement terminal for a \
                  stored-value smart-card scheme with rolling transfer keys.",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// The issuer database: a SQLite file, or a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE).
    #[arg(long, global = true, env = "KEYROLL_DB", default_value = "keyroll.db", value_name = "FILE|URL")]
    pub db: PathBuf,
    /// An age identity file (a custodian's), for commands that change the database or read a secret.
    #[arg(long, global = true, env = "KEYROLL_IDENTITY", value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// The audit key fingerprint `keyroll init` printed (64 hex digits). Custodian commands refuse a
    /// database with another audit key (exit 1), and one with no pin stored unless this is given (exit 2);
    /// the first success stores it. `audit log` checks it too.
    #[arg(long, global = true, env = "KEYROLL_EXPECT_KEY", value_name = "SHA256")]
    pub expect_key: Option<String>,
    /// One JSON document on stdout (its "schema" field names the version); errors as JSON on stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// APDU trace with timing on stderr (never data bytes).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an issuer database with its first keys, CA root and audit log.
    Init(init::InitArgs),
    /// Transfer and update key versions: new, activate, retire, list, export.
    #[command(
        subcommand,
        after_help = "Examples:\n  keyroll key new transfer --pending\n  keyroll key activate transfer 2\n  keyroll key list"
    )]
    Key(key::KeyCommand),
    /// Personalisation batches: new, list.
    #[command(
        subcommand,
        after_help = "Examples:\n  keyroll batch new first --profile hybrid --transfer-key-limit 3\n  keyroll batch list"
    )]
    Batch(batch::BatchCommand),
    /// Personalise cards of a batch (card files or a PC/SC reader).
    Perso(perso::PersoArgs),
    /// Reference card files: `card show` prints one, `card serve` puts it in a pcscd reader.
    #[command(
        subcommand,
        after_help = "Examples:\n  keyroll card show cards/4B52000000000001.card\n  keyroll card serve blank.card --vpcd 127.0.0.1:35963"
    )]
    Card(card::CardCommand),
    /// Settle value between two cards, rolling the newer transfer key onto the older card first.
    Settle(settle::SettleArgs),
    /// Key rollouts: plan a roll, verify every generation pair, follow the fleet.
    #[command(
        subcommand,
        after_help = "Examples:\n  keyroll rollout plan --transfer-key 2\n  keyroll rollout verify\n  keyroll rollout status --cards cards"
    )]
    Rollout(rollout::RolloutCommand),
    /// The issuer CA: card certificates, revocations, CRL, root.
    #[command(
        subcommand,
        after_help = "Examples:\n  keyroll cert list\n  keyroll cert revoke 4B52000000000003 --reason key-compromise\n  keyroll cert ca --out root.pem"
    )]
    Cert(cert::CertCommand),
    /// The scheme policy cards enforce: blocked cards, closed update keys.
    #[command(
        subcommand,
        after_help = "Examples:\n  keyroll policy block 4B52000000000003 --reason extracted\n  keyroll policy compromise update 1\n  keyroll policy publish --out policy.bin\n  keyroll policy show policy.bin"
    )]
    Policy(policy::PolicyCommand),
    /// Auditors: certificate chains (RFC 5280), the audit log, and a whole-database report.
    #[command(
        subcommand,
        after_help = "Examples:\n  keyroll audit report --anchor root.pem\n  keyroll audit chain --all --expect-root SHA256\n  keyroll audit log --expect-key FINGERPRINT --checkpoint auditor.checkpoint"
    )]
    Audit(audit::AuditCommand),
    /// List PC/SC readers and whether a card is present.
    #[command(after_help = "Example:\n  keyroll readers --json")]
    Readers,
    /// The main job: a whole key rollout on virtual cards, told as it goes, with a verdict.
    Demo(demo::DemoArgs),
    /// Card manufacturers: make one (reference cards), make blank cards, trust one, list them.
    #[command(
        subcommand,
        after_help = "Examples:\n  keyroll fab init --out-dir acme\n  keyroll fab blank --manufacturer acme --out blank.card\n  keyroll fab trust acme/root.pem\n  keyroll fab list"
    )]
    Fab(fab::FabCommand),
    /// Account for all issued value from the cards' logs and settlement journals (exit 1 if anything is
    /// unaccounted for or a credit has no matching debit).
    Reconcile(reconcile::ReconcileArgs),
    /// The database itself: copy an issuer between SQLite and PostgreSQL.
    #[command(
        subcommand,
        after_help = "Example:\n  keyroll db copy --from issuer.db --to postgres://keyroll@db.example/issuer"
    )]
    Db(db::DbCommand),
    /// Print a shell completion script.
    Completions(docs::CompletionsArgs),
    /// Write manual pages (keyroll.1 and one per subcommand) to a directory.
    Man(docs::ManArgs),
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let ctx = output::Context {
        json: cli.json,
        verbose: cli.verbose,
        expect_key: cli.expect_key.clone(),
        db: cli.db.clone(),
        identity: cli.identity.clone(),
    };
    let db = cli.db.as_path();
    let identity = cli.identity.as_deref();
    match cli.command {
        Command::Init(a) => init::run(&ctx, db, a),
        Command::Key(c) => key::run(&ctx, db, identity, c),
        Command::Batch(c) => batch::run(&ctx, db, identity, c),
        Command::Perso(a) => perso::run(&ctx, db, identity, a),
        Command::Card(c) => card::run(&ctx, db, identity, c),
        Command::Settle(a) => settle::run(&ctx, a),
        Command::Rollout(c) => rollout::run(&ctx, db, identity, c),
        Command::Cert(c) => cert::run(&ctx, db, identity, c),
        Command::Audit(c) => audit::run(&ctx, db, c),
        Command::Fab(c) => fab::run(&ctx, db, identity, c),
        Command::Policy(c) => policy::run(&ctx, db, identity, c),
        Command::Readers => readers::run(&ctx),
        Command::Reconcile(a) => reconcile::run(&ctx, db, identity, a),
        Command::Demo(a) => demo::run(&ctx, a),
        Command::Db(c) => db::run(&ctx, c),
        Command::Completions(a) => docs::completions(&ctx, a),
        Command::Man(a) => docs::man(&ctx, a),
    }
}

/// The whole program: parse `args`, run, print any error with its hint (as JSON under `--json`),
/// and return the exit status.
pub fn main<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let json = args.iter().skip(1).take_while(|a| *a != "--").any(|a| a == "--json");
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e, &args, json),
    };
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            if json {
                let doc = output::document(&serde_json::json!({ "error": e.json_object() }));
                eprintln!("{doc}");
            } else {
                eprintln!("keyroll: {e}");
            }
            e.exit_code()
        }
    }
}

/// clap's own outcomes: help and version go to stdout (exit 0); a usage error gets a hint that names
/// the command's help, and under `--json` becomes a JSON error document.
fn usage_error(e: clap::Error, args: &[OsString], json: bool) -> i32 {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return 0;
    }
    let path = command_path(args);
    let hint = format!("`{path} --help` lists the options, with an example");
    let text = e.render().to_string();
    let text = text.trim_end().trim_end_matches("For more information, try '--help'.").trim_end();
    if json {
        let message = text.lines().next().unwrap_or("").trim_start_matches("error: ").to_string();
        let doc =
            output::document(&serde_json::json!({ "error": { "code": "usage", "message": message, "hint": hint } }));
        eprintln!("{doc}");
    } else {
        eprintln!("{text}\n\nhint: {hint}");
    }
    EXIT_INPUT
}

/// `keyroll key new` from `keyroll --json key new --bad`: the subcommands named in `args`.
fn command_path(args: &[OsString]) -> String {
    let mut cmd = Cli::command();
    let mut path = vec!["keyroll".to_string()];
    for a in args.iter().skip(1).filter_map(|a| a.to_str()) {
        if a.starts_with('-') {
            continue;
        }
        match cmd.find_subcommand(a) {
            Some(sub) => {
                path.push(a.to_string());
                cmd = sub.clone();
            }
            None => continue,
        }
    }
    path.join(" ")
}
