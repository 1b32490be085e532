//! `fab …`: keyroll playing the card manufacturer for reference cards, and the issuer trusting
//! manufacturers (DESIGN.md §9, §10 point 1).

use super::CliError;
use super::output::{self, Context};
use crate::authority::Authority;
use crate::fab::{FabError, Manufacturer};
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum FabCommand {
    /// Make a manufacturer: a P-256 root certificate (root.pem) and its key (root.key, mode 0600) in DIR.
    #[command(after_help = "Example:\n  keyroll fab init --out-dir acme --name \"Acme Chip Works\"")]
    Init {
        /// The directory to write root.pem and root.key to (created; an existing manufacturer is never
        /// overwritten).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        /// The manufacturer's name (organisation of its certificates).
        #[arg(long, default_value = "Reference Chip Works", value_name = "NAME")]
        name: String,
    },
    /// Make a blank reference card: a chip id and two factory key pairs certified by the manufacturer.
    #[command(after_help = "Example:\n  keyroll fab blank --manufacturer acme --out blank.card")]
    Blank {
        /// The manufacturer directory (`fab init --out-dir`).
        #[arg(long, value_name = "DIR")]
        manufacturer: PathBuf,
        /// The card file to write (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// The issuer trusts a manufacturer root (recorded in the database and its audit log).
    #[command(after_help = "Example:\n  keyroll fab trust acme/root.pem")]
    Trust {
        /// The manufacturer's root certificate, PEM (root.pem of `fab init`).
        #[arg(value_name = "ROOT.pem")]
        root: PathBuf,
    },
    /// Manufacturers the issuer trusts (and its virtual one), with how many cards each made.
    #[command(after_help = "Example:\n  keyroll fab list --json")]
    List,
}

/// A fab error as the user sees it.
pub fn fab_error(e: FabError) -> CliError {
    let hint = match &e {
        FabError::Exists(_) => "choose another --out-dir (or --out); nothing was overwritten",
        FabError::NotAManufacturer(_) => "make one with `keyroll fab init --out-dir DIR`",
        FabError::KeyFileMode(_) => "run chmod 600 on the key file",
        FabError::BadName => "pass --name with 1 to 40 printable characters",
        _ => "check the manufacturer directory",
    };
    CliError::input(e.to_string(), hint)
}

pub fn run(ctx: &Context, db: &Path, identity: Option<&Path>, cmd: FabCommand) -> Result<(), CliError> {
    match cmd {
        FabCommand::Init { out_dir, name } => {
            let m = Manufacturer::create(&name).map_err(fab_error)?;
            m.write_dir(&out_dir).map_err(fab_error)?;
            if ctx.json {
                output::json(&serde_json::json!({
                    "name": name.trim(), "fingerprint": m.fingerprint(),
                    "root": out_dir.join(crate::fab::ROOT_CERT_FILE), "key": out_dir.join(crate::fab::ROOT_KEY_FILE),
                }));
            } else {
                println!("manufacturer {:?} in {}", name.trim(), out_dir.display());
                println!(
                    "root certificate {} (give it to issuers: keyroll fab trust)",
                    out_dir.join("root.pem").display()
                );
                println!("root key {} (mode 0600; keep it at the fab)", out_dir.join("root.key").display());
                println!("root fingerprint (SHA-256) {}", m.fingerprint());
            }
            Ok(())
        }
        FabCommand::Blank { manufacturer, out } => {
            let m = Manufacturer::load_dir(&manufacturer).map_err(fab_error)?;
            let state = crate::perso::batch::blank_state(&m).map_err(fab_error)?;
            crate::fab::write_new(&out, &state.encode(), 0o600).map_err(fab_error)?;
            let chip = state.chip_id.expect("a blank from the fab has a chip id");
            if ctx.json {
                output::json(&serde_json::json!({ "chip_id": chip, "file": out, "manufacturer": m.fingerprint() }));
            } else {
                println!("blank card, chip id {chip}, in {} (serve it with `keyroll card serve`)", out.display());
            }
            Ok(())
        }
        FabCommand::Trust { root } => {
            let text = std::fs::read_to_string(&root).map_err(|e| {
                CliError::input(
                    format!("cannot read {}: {e}", root.display()),
                    "pass the root.pem of `keyroll fab init`",
                )
            })?;
            let der = crate::pki::pem::decode_one("CERTIFICATE", &text).map_err(|e| {
                CliError::input(
                    format!("{} is not one PEM certificate: {e}", root.display()),
                    "pass the root.pem of `keyroll fab init`",
                )
            })?;
            let auth = ctx.open_custodian(db)?;
            let u = auth.unlock(identity)?;
            let row = u.trust_manufacturer(&der)?;
            if ctx.json {
                output::json(&row);
            } else {
                println!("trusted manufacturer {:?}, root fingerprint {}", row.name, row.fingerprint);
            }
            Ok(())
        }
        FabCommand::List => {
            let auth = Authority::open_read_only(db)?;
            let rows = auth.manufacturers()?;
            if ctx.json {
                output::json(&serde_json::json!({ "manufacturers": rows }));
            } else {
                println!("{:<28} {:<8} {:>6} {:>7}  root fingerprint", "name", "kind", "cards", "issued");
                for r in rows {
                    println!("{:<28} {:<8} {:>6} {:>7}  {}", r.name, r.kind, r.cards, r.cards_locked, r.fingerprint);
                }
            }
            Ok(())
        }
    }
}
