//! `keyroll audit log` (and, with the auditors' work, `audit chain` and `audit report`).

use super::CliError;
use super::output::{self, Context};
use crate::authority::{Authority, audit_log};
use clap::Subcommand;
use std::path::Path;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify the audit log's hash chain and signed head (exit 1 if anything was edited, deleted,
    /// reordered or truncated).
    Log {
        /// Expected SHA-256 fingerprint of the audit key (as printed by `init`).
        #[arg(long)]
        expect_key: Option<String>,
    },
}

pub fn run(ctx: &Context, db: &Path, cmd: AuditCommand) -> Result<(), CliError> {
    match cmd {
        AuditCommand::Log { expect_key } => {
            let auth = Authority::open(db)?;
            let mut v = audit_log::verify(&auth.conn)?;
            if let Some(fp) = expect_key
                && !fp.eq_ignore_ascii_case(&v.audit_key_fingerprint)
                && v.intact
            {
                v.intact = false;
                v.reason = Some(format!("the audit key is {}, not the expected {fp}", v.audit_key_fingerprint));
            }
            if ctx.json {
                output::json(&v);
            } else if v.intact {
                println!("audit log intact: {} rows, head signed by audit key {}", v.rows, v.audit_key_fingerprint);
            } else {
                println!(
                    "audit log NOT intact: first bad row {}: {}",
                    v.first_bad_row.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                    v.reason.clone().unwrap_or_default()
                );
            }
            if !v.intact {
                return Err(CliError::CheckFailed { what: v.reason.unwrap_or_else(|| "audit log not intact".into()) });
            }
            Ok(())
        }
    }
}
