//! `keyroll settle --payer CARD --payee CARD --amount N` (CARD = `file:PATH` or a PC/SC reader).

use super::CliError;
use super::card::open_card_file;
use super::output::{self, Context};
use crate::authority::reconciliations::JournalHead;
use crate::domain::Amount;
use crate::terminal::{SettleOptions, SettlementReport, settle};
use crate::transport::CardChannel;
use crate::transport::in_process::InProcessChannel;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  keyroll settle --payer file:cards/4B52000000000002.card --payee file:cards/4B52000000000001.card --amount 50\n  \
                        keyroll settle --payer \"00 00\" --payee \"00 01\" --amount 0   # two PC/SC readers: keys only"
)]
pub struct SettleArgs {
    /// The paying card: `file:PATH` for a card file, or a PC/SC reader name (exact or a unique part).
    #[arg(long, value_name = "CARD")]
    pub payer: String,
    /// The receiving card: `file:PATH` or a PC/SC reader name.
    #[arg(long, value_name = "CARD")]
    pub payee: String,
    /// Amount in minor units; 0 only synchronises keys and recovers interrupted transfers.
    #[arg(long, value_name = "N")]
    pub amount: u64,
    /// The issuer's policy file (`keyroll policy publish`): given to both cards when newer than theirs.
    /// The terminal holds no revocation logic: cards verify the policy and refuse blocked cards.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Append one hash-chained JSON line per settlement to FILE (created if missing; it must verify).
    /// The journal's new head is printed: keep it elsewhere and give it to `reconcile --expect-head`.
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
}

pub fn run(ctx: &Context, a: SettleArgs) -> Result<(), CliError> {
    same_card_file(&a.payer, &a.payee)?;
    let options = SettleOptions {
        verbose: ctx.verbose,
        policy: a.policy.as_deref().map(read_policy).transpose()?,
        journal: a.journal.clone(),
    };
    let report = with_channel(&a.payer, |payer| {
        with_channel(&a.payee, |payee| settle(payer, payee, Amount(a.amount), &options).map_err(CliError::from))
    })?;
    // The journal's head after this settlement: keep it outside the journal (`reconcile --expect-head`),
    // since a journal whose last line was deleted is still a valid chain.
    let journal = a.journal.as_deref().map(journal_head).transpose()?;
    if ctx.json {
        output::json(&Output { report: &report, journal });
    } else {
        print_report(&report);
        if let Some(j) = &journal {
            println!("journal head     {} ({} lines)", j.head, j.lines);
        }
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    report: &'a SettlementReport,
    /// With --journal: the journal's name, line count and head (SHA-256 of its last line).
    #[serde(skip_serializing_if = "Option::is_none")]
    journal: Option<JournalHead>,
}

/// The head of the journal just appended to, read from its first and last lines (constant cost at any
/// journal length; `reconcile --journal` verifies the chain).
fn journal_head(path: &std::path::Path) -> Result<JournalHead, CliError> {
    let name = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string();
    let (lines, first, head) = crate::terminal::journal::head(path).map_err(|e| {
        CliError::check(
            format!("journal {}: {e}", path.display()),
            "another process edited it: `keyroll reconcile --journal` names the broken line",
        )
    })?;
    Ok(JournalHead { name, lines, first, head })
}

fn print_report(r: &SettlementReport) {
    for rec in &r.recovered {
        println!("recovered        {rec:?}");
    }
    match r.updated_card {
        Some(role) => println!(
            "key roll         {:?}: {role} card now on transfer key {}",
            r.key_roll,
            r.transfer_key_id.map(|i| i.to_string()).unwrap_or_default()
        ),
        None => println!(
            "key roll         none (both on transfer key {})",
            r.transfer_key_id.map(|i| i.to_string()).unwrap_or_default()
        ),
    }
    if let Some(p) = r.policy_spread {
        println!("policy spread    {p:?} took the newer scheme policy");
    }
    println!("amount moved     {}", r.amount);
    println!("payer            {} balance {}", r.payer.serial, r.payer.balance);
    println!("payee            {} balance {}", r.payee.serial, r.payee.balance);
    println!("apdus            {}", r.apdus);
}

/// Both sides naming one card file would meet its lock ("in use by another process"): say what it is.
fn same_card_file(payer: &str, payee: &str) -> Result<(), CliError> {
    let (Some(a), Some(b)) = (payer.strip_prefix("file:"), payee.strip_prefix("file:")) else { return Ok(()) };
    let canon = |p: &str| std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p));
    if canon(a) == canon(b) {
        return Err(CliError::input(
            format!("--payer and --payee name the same card file {a}"),
            "value moves between two different cards: name another card file for one side",
        ));
    }
    Ok(())
}

/// A reader name that is really a path: the user forgot `file:`.
fn looks_like_a_file(spec: &str) -> bool {
    spec.ends_with(".card") || std::path::Path::new(spec).is_file()
}

/// Run `f` with a channel to the card named by `spec`.
pub fn with_channel<T>(spec: &str, f: impl FnOnce(&mut dyn CardChannel) -> Result<T, CliError>) -> Result<T, CliError> {
    if let Some(path) = spec.strip_prefix("file:") {
        let path = PathBuf::from(path);
        let mut card = open_card_file(&path)?;
        let mut ch = InProcessChannel::new(&mut card, path.display().to_string());
        return f(&mut ch);
    }
    if looks_like_a_file(spec) {
        return Err(CliError::input(
            format!("{spec:?} is read as a PC/SC reader name, but it looks like a card file"),
            format!("card files take the file: prefix: file:{spec}"),
        ));
    }
    pcsc_channel(spec, f)
}

#[cfg(feature = "pcsc")]
fn pcsc_channel<T>(spec: &str, f: impl FnOnce(&mut dyn CardChannel) -> Result<T, CliError>) -> Result<T, CliError> {
    let mut ch = crate::transport::pcsc::PcscChannel::connect(spec).map_err(|e| {
        CliError::input(format!("cannot reach card in reader {spec:?}: {e}"), "list readers with `keyroll readers`")
    })?;
    f(&mut ch)
}

#[cfg(not(feature = "pcsc"))]
fn pcsc_channel<T>(spec: &str, _f: impl FnOnce(&mut dyn CardChannel) -> Result<T, CliError>) -> Result<T, CliError> {
    Err(CliError::input(
        format!("{spec:?} is not a card file (file:PATH) and this keyroll was built without PC/SC"),
        "use file:PATH, or build with `--features pcsc`",
    ))
}

/// Read a policy file. Decoded only (the terminal decides nothing on it; each card verifies it).
fn read_policy(path: &std::path::Path) -> Result<crate::protocol::policy::Policy, CliError> {
    use crate::protocol::codec::Wire;
    let bytes = std::fs::read(path).map_err(|e| {
        CliError::input(
            format!("cannot read policy {}: {e}", path.display()),
            "pass the file `keyroll policy publish` wrote",
        )
    })?;
    crate::protocol::policy::Policy::from_wire(&bytes, ()).map_err(|e| {
        CliError::input(
            format!("{} is not a keyroll policy: {e}", path.display()),
            "pass the file `keyroll policy publish` wrote",
        )
    })
}
