//! `keyroll db copy --from DB --to DB`: move an issuer between SQLite and PostgreSQL (DESIGN.md §11).

use super::CliError;
use super::output::Context;
use crate::authority::copy;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Copy an issuer database to a new one (SQLite file or postgres:// URL, either way), verifying the
    /// audit log on both sides; the copy keeps the same audit key, so custodians' pins still hold.
    #[command(
        after_help = "Examples:\n  keyroll db copy --from issuer.db --to postgres://keyroll@db.example/issuer\n  \
                            keyroll db copy --from postgres://keyroll@db.example/issuer --to back.db"
    )]
    Copy(CopyArgs),
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The database to copy: a SQLite file or a postgres://USER:PASSWORD@HOST:PORT/DATABASE URL.
    #[arg(long, value_name = "DB")]
    pub from: PathBuf,
    /// The new database: a SQLite file that does not exist yet, or the URL of an empty PostgreSQL database.
    #[arg(long, value_name = "DB")]
    pub to: PathBuf,
}

pub fn run(ctx: &Context, cmd: DbCommand) -> Result<(), CliError> {
    match cmd {
        DbCommand::Copy(a) => {
            let outcome = copy::copy(&a.from, &a.to)?;
            ctx.emit(&outcome, |o| {
                let rows: u64 = o.tables.iter().map(|(_, n)| n).sum();
                println!("copied {} to {}: {rows} rows in {} tables", o.from, o.to, o.tables.len());
                println!(
                    "audit log verified on both sides: {} entries, head {}, audit key fingerprint {}",
                    o.audit_entries,
                    hex::encode(o.head.hash),
                    o.audit_key_fingerprint
                );
            });
            Ok(())
        }
    }
}
