//! `keyroll batch new|list`: personalisation batches.

use super::CliError;
use super::output::Context;
use crate::authority::Authority;
use crate::authority::batches::NewBatch;
use crate::domain::{Amount, Profile, TransferKeyIdLimit};
use clap::{Subcommand, ValueEnum};
use std::path::Path;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProfileArg {
    /// Symmetric key roll under the update key (claims 1, 2, 17).
    Symmetric,
    /// Key roll with card key pairs and certificates (claims 3, 4, 18).
    PublicKey,
    /// Both paths; the terminal picks by update key ids (claims 5-7, 14-16).
    Hybrid,
    /// Stores several transfer keys and selects a newer one (claims 8, 9).
    MultiKey,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Self {
        match p {
            ProfileArg::Symmetric => Profile::Symmetric,
            ProfileArg::PublicKey => Profile::PublicKey,
            ProfileArg::Hybrid => Profile::Hybrid,
            ProfileArg::MultiKey => Profile::MultiKey,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum BatchCommand {
    /// Create a personalisation batch on the newest active keys.
    #[command(
        after_help = "Example:\n  keyroll batch new first --profile hybrid --transfer-key-limit 3 --initial-balance 500"
    )]
    New {
        /// The batch's name (unique, never reused).
        name: String,
        /// The card profile: how its cards take a newer transfer key.
        #[arg(long, value_enum)]
        profile: ProfileArg,
        /// Upper limit of the transfer key identifier the batch's cards accept (claim 1); at least the
        /// newest transfer key id.
        #[arg(long, value_name = "N")]
        transfer_key_limit: u32,
        /// Balance each card starts with, in minor currency units.
        #[arg(long, default_value_t = 0, value_name = "N")]
        initial_balance: u64,
        /// The most a card may hold, in minor currency units.
        #[arg(long, default_value_t = 100_000, value_name = "N")]
        max_balance: u64,
    },
    /// List batches with their keys, limit and personalised cards.
    #[command(after_help = "Example:\n  keyroll batch list --json")]
    List,
}

pub fn run(ctx: &Context, db: &Path, identity: Option<&Path>, cmd: BatchCommand) -> Result<(), CliError> {
    let auth = match cmd {
        BatchCommand::List => Authority::open_read_only(db)?,
        _ => ctx.open_custodian(db)?,
    };
    match cmd {
        BatchCommand::New { name, profile, transfer_key_limit, initial_balance, max_balance } => {
            let b = auth.unlock(identity)?.new_batch(&NewBatch {
                name,
                profile: profile.into(),
                transfer_key_id_limit: TransferKeyIdLimit(transfer_key_limit),
                initial_balance: Amount(initial_balance),
                max_balance: Amount(max_balance),
            })?;
            ctx.emit(&b, |b| {
                println!(
                    "batch {:?}: {} cards on transfer key {} (limit {}), update key {}, balance {} (max {})",
                    b.name,
                    b.profile,
                    b.transfer_key_id,
                    b.transfer_key_id_limit,
                    b.update_key_id,
                    b.initial_balance,
                    b.max_balance
                );
            });
        }
        BatchCommand::List => {
            let list = auth.batches()?;
            ctx.emit(&serde_json::json!({ "batches": list }), |_| {
                println!(
                    "{:<16} {:<10} {:>4} {:>5} {:>4} {:>10} {:>6}",
                    "name", "profile", "tk", "limit", "uk", "balance", "cards"
                );
                for b in &list {
                    println!(
                        "{:<16} {:<10} {:>4} {:>5} {:>4} {:>10} {:>6}",
                        b.name,
                        b.profile.name(),
                        b.transfer_key_id,
                        b.transfer_key_id_limit,
                        b.update_key_id,
                        b.initial_balance,
                        b.personalised
                    );
                }
            });
        }
    }
    Ok(())
}
