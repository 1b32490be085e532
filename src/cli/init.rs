//! `keyroll init`: a new issuer database.

use super::CliError;
use super::output::Context;
use crate::authority::Authority;
use crate::authority::store::Location;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  keyroll --db issuer.db init --issuer \"Example Transit\"\n  \
                        keyroll --db issuer.db init --issuer \"Example Transit\" --custodian age1… --custodian age1…")]
pub struct InitArgs {
    /// The issuer's name (organisation in the CA's certificates); must not be empty.
    #[arg(long, value_name = "NAME")]
    pub issuer: String,
    /// A custodian's age recipient (age1…); repeat for several. Without one, a new identity is written.
    #[arg(long, value_name = "AGE_RECIPIENT")]
    pub custodian: Vec<String>,
    /// Where to write the new identity when no --custodian is given (default: the --db path + ".identity";
    /// keyroll.identity for a PostgreSQL --db).
    #[arg(long, value_name = "FILE")]
    pub identity_out: Option<PathBuf>,
}

pub fn run(ctx: &Context, db: &Path, a: InitArgs) -> Result<(), CliError> {
    if a.issuer.trim().is_empty() {
        return Err(CliError::input(
            "the issuer name (--issuer) must not be empty",
            "pass the organisation's name, e.g. --issuer \"Example Transit\"",
        ));
    }
    let identity_out = a.identity_out.unwrap_or_else(|| match Location::parse(db) {
        Location::File(_) => PathBuf::from(format!("{}.identity", db.display())),
        Location::Postgres(_) => PathBuf::from("keyroll.identity"),
    });
    let (_, outcome) = Authority::init(db, &a.issuer, &a.custodian, &identity_out)?;
    ctx.emit(&outcome, |outcome| {
        println!("created issuer {:?} in {}", outcome.issuer, outcome.database.display());
        if let Some(f) = &outcome.identity_file {
            println!(
                "wrote a new custodian identity to {} (mode 0600): keep it safe, it unlocks every secret",
                f.display()
            );
            println!("use it with --identity {} or KEYROLL_IDENTITY", f.display());
        }
        println!("transfer key 1 (KCV {}), update key 1 (KCV {})", outcome.transfer_key_kcv, outcome.update_key_kcv);
        println!("audit key fingerprint {}", outcome.audit_key_fingerprint);
    });
    Ok(())
}
