//! `keyroll cert list|revoke|crl|ca`: the issuer CA.

use super::CliError;
use super::output::Context;
use crate::authority::{Authority, ca, issuer_ca};
use clap::Subcommand;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// List card certificates (serial, card, revoked, PEM with --json).
    #[command(after_help = "Example:\n  keyroll cert list --json")]
    List,
    /// Revoke a card certificate (by certificate serial or card serial).
    #[command(after_help = "Example:\n  keyroll cert revoke 4B52000000000003 --reason key-compromise")]
    Revoke {
        /// A certificate serial (hex) or a card serial (`keyroll cert list` shows both).
        serial: String,
        /// RFC 5280 reason: key-compromise, superseded, cessation-of-operation, affiliation-changed,
        /// privilege-withdrawn.
        #[arg(long, value_name = "REASON")]
        reason: Option<String>,
    },
    /// Write a fresh CRL (PEM), signed by the issuer CA.
    #[command(after_help = "Example:\n  keyroll cert crl --out issuer.crl")]
    Crl {
        /// The file to write (never replaces an existing file without --force).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing --out file (never the database, its identity or a card file).
        #[arg(long)]
        force: bool,
    },
    /// Write the issuer root certificate (PEM).
    #[command(after_help = "Example:\n  keyroll cert ca --out root.pem && openssl x509 -in root.pem -noout -text")]
    Ca {
        /// The file to write (never replaces an existing file without --force).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing --out file (never the database, its identity or a card file).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Serialize)]
struct Written {
    out: PathBuf,
    what: &'static str,
}

fn write_pem(ctx: &Context, out: &Path, force: bool, label: &str, der: &[u8]) -> Result<(), CliError> {
    let pem = ca::pem_encode(label, der).map_err(|e| CliError::internal(format!("PEM encoding: {e}")))?;
    ctx.write_output(out, pem.as_bytes(), force, 0o644)
}

pub fn run(ctx: &Context, db: &Path, identity: Option<&Path>, cmd: CertCommand) -> Result<(), CliError> {
    if let CertCommand::List = cmd {
        let rows = Authority::open_read_only(db)?.certificates()?;
        ctx.emit(&serde_json::json!({ "certificates": rows }), |_| {
            for r in &rows {
                println!("{}  card {}  {}", r.serial, r.card, if r.revoked { "REVOKED" } else { "valid" });
            }
        });
        return Ok(());
    }
    let auth = ctx.open_custodian(db)?;
    match cmd {
        CertCommand::List => {
            let rows = auth.certificates()?;
            ctx.emit(&serde_json::json!({ "certificates": rows }), |_| {
                for r in &rows {
                    println!("{}  card {}  {}", r.serial, r.card, if r.revoked { "REVOKED" } else { "valid" });
                }
            });
        }
        CertCommand::Revoke { serial, reason } => {
            let reason = match reason {
                None => None,
                Some(r) => Some(issuer_ca::parse_reason(&r).ok_or_else(|| {
                    CliError::input(
                        format!("unknown revocation reason {r:?}"),
                        "use key-compromise, superseded, cessation-of-operation, affiliation-changed, privilege-withdrawn",
                    )
                })?),
            };
            let serials = auth.unlock(identity)?.revoke(&serial, reason)?;
            ctx.emit(&serde_json::json!({ "revoked": serials }), |_| {
                for s in &serials {
                    println!("revoked certificate {s}");
                }
            });
        }
        CertCommand::Crl { out, force } => {
            // Refuse a clobbering --out before the CRL number is spent.
            ctx.check_output(&out, force)?;
            let u = auth.unlock(identity)?;
            let der = u.crl()?;
            write_pem(ctx, &out, force, ca::PEM_CRL, &der)?;
            ctx.emit(&Written { out, what: "crl" }, |w| println!("wrote CRL to {}", w.out.display()));
        }
        CertCommand::Ca { out, force } => {
            let root = match auth.root()? {
                Some(r) => r,
                None => auth.unlock(identity)?.ca()?.root_der,
            };
            write_pem(ctx, &out, force, ca::PEM_CERTIFICATE, &root)?;
            ctx.emit(&Written { out, what: "root-certificate" }, |w| {
                println!("wrote issuer root certificate to {}", w.out.display())
            });
        }
    }
    Ok(())
}
