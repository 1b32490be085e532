//! Back-office commands: `init`, `key …`, `batch …`, `rollout plan`, `cert …`.

use super::CliError;
use super::output::{self, Context};
use crate::authority::batches::{self, NewBatch};
use crate::authority::keys::{self, KeyKind};
use crate::authority::{Authority, ca, issuer_ca};
use crate::domain::Profile;
use clap::{Args, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The issuer's name (organisation in the CA's certificates).
    #[arg(long)]
    pub issuer: String,
    /// A custodian's age recipient (age1…); repeat for several. Without one, a new identity is written.
    #[arg(long)]
    pub custodian: Vec<String>,
    /// Where to write the new identity when no --custodian is given (default: DB path + ".identity").
    #[arg(long)]
    pub identity_out: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    Transfer,
    Update,
}

impl From<KindArg> for KeyKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Transfer => KeyKind::Transfer,
            KindArg::Update => KeyKind::Update,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Generate the next transfer or update key version (active, or pending with --pending).
    New {
        kind: KindArg,
        #[arg(long)]
        pending: bool,
    },
    /// Activate a pending key.
    Activate { kind: KindArg, id: u32 },
    /// Retire a key.
    Retire { kind: KindArg, id: u32 },
    /// List key versions (never the keys).
    List,
    /// Write chosen keys to an age file for RECIPIENT.
    Export {
        #[arg(long)]
        to: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long = "transfer")]
        transfer: Vec<u32>,
        #[arg(long = "update")]
        update: Vec<u32>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProfileArg {
    Symmetric,
    PublicKey,
    Hybrid,
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
    /// Create a personalisation batch.
    New {
        name: String,
        #[arg(long, value_enum)]
        profile: ProfileArg,
        /// Upper limit of the transfer key identifier the batch's cards accept (claim 1).
        #[arg(long)]
        transfer_key_limit: u32,
        #[arg(long, default_value_t = 0)]
        initial_balance: u64,
        #[arg(long, default_value_t = 100_000)]
        max_balance: u64,
    },
    /// List batches.
    List,
}

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// How many personalised cards a roll to transfer key ID would strand, per batch (exit 1 if any).
    Plan {
        #[arg(long)]
        transfer_key: u32,
    },
    /// Cards per transfer key id and per batch in a folder of card files, and what the next roll strands.
    Status {
        #[arg(long)]
        cards: PathBuf,
    },
    /// Settle every ordered pair of live card generations on virtual cards (exit 1 if any pair that
    /// should interoperate does not).
    Verify,
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// List card certificates.
    List,
    /// Revoke a card certificate (by certificate serial or card serial).
    Revoke {
        serial: String,
        /// RFC 5280 reason: key-compromise, superseded, cessation-of-operation, …
        #[arg(long)]
        reason: Option<String>,
    },
    /// Write a fresh CRL (PEM).
    Crl {
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the issuer root certificate (PEM).
    Ca {
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn init(ctx: &Context, db: &Path, a: InitArgs) -> Result<(), CliError> {
    let identity_out = a.identity_out.unwrap_or_else(|| PathBuf::from(format!("{}.identity", db.display())));
    let (_, outcome) = Authority::init(db, &a.issuer, &a.custodian, &identity_out)?;
    if ctx.json {
        output::json(&outcome);
    } else {
        println!("created issuer {:?} in {}", outcome.issuer, db.display());
        if let Some(f) = &outcome.identity_file {
            println!(
                "wrote a new custodian identity to {} (mode 0600): keep it safe, it unlocks every secret",
                f.display()
            );
            println!("use it with --identity {} or KEYROLL_IDENTITY", f.display());
        }
        println!("transfer key 1 (KCV {}), update key 1 (KCV {})", outcome.transfer_key_kcv, outcome.update_key_kcv);
        println!("audit key fingerprint {}", outcome.audit_key_fingerprint);
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, bytes).map_err(|e| {
        CliError::input(format!("cannot write {}: {e}", path.display()), "check the directory exists and is writable")
    })
}

pub fn key(ctx: &Context, db: &Path, identity: Option<&Path>, cmd: KeyCommand) -> Result<(), CliError> {
    let auth = Authority::open(db)?;
    match cmd {
        KeyCommand::List => {
            let rows = keys::list(&auth.conn)?;
            if ctx.json {
                output::json(&serde_json::json!({ "keys": rows }));
            } else {
                println!("{:<9} {:>4} {:<8} {:<6} {:<20} {:<20}", "kind", "id", "state", "kcv", "created", "activated");
                for k in rows {
                    println!(
                        "{:<9} {:>4} {:<8} {:<6} {:<20} {:<20}",
                        k.kind.name(),
                        k.id,
                        k.state.name(),
                        k.kcv,
                        k.created_at,
                        k.activated_at.unwrap_or_default()
                    );
                }
            }
        }
        KeyCommand::New { kind, pending } => {
            let u = auth.unlock(identity)?;
            let kind: KeyKind = kind.into();
            let (id, kcv) = u.new_key(kind, pending)?;
            let state = if pending { "pending" } else { "active" };
            if ctx.json {
                output::json(&serde_json::json!({ "kind": kind.name(), "id": id, "state": state, "kcv": kcv }));
            } else {
                println!("{} key {id} created ({state}, KCV {kcv})", kind.name());
            }
        }
        KeyCommand::Activate { kind, id } => {
            auth.unlock(identity)?.activate(kind.into(), id)?;
            println!("{} key {id} is active", KeyKind::from(kind).name());
        }
        KeyCommand::Retire { kind, id } => {
            auth.unlock(identity)?.retire(kind.into(), id, false)?;
            println!("{} key {id} is retired", KeyKind::from(kind).name());
        }
        KeyCommand::Export { to, out, transfer, update } => {
            if transfer.is_empty() && update.is_empty() {
                return Err(CliError::input("nothing to export", "name keys with --transfer ID and/or --update ID"));
            }
            let u = auth.unlock(identity)?;
            let bytes = u.export(&to, &transfer, &update)?;
            write_file(&out, &bytes)?;
            u.record_export(&to, &transfer, &update)?;
            println!("wrote {} (age-encrypted to {to})", out.display());
        }
    }
    Ok(())
}

pub fn batch(ctx: &Context, db: &Path, identity: Option<&Path>, cmd: BatchCommand) -> Result<(), CliError> {
    let auth = Authority::open(db)?;
    match cmd {
        BatchCommand::New { name, profile, transfer_key_limit, initial_balance, max_balance } => {
            let b = auth.unlock(identity)?.new_batch(&NewBatch {
                name,
                profile: profile.into(),
                transfer_key_id_limit: crate::domain::TransferKeyIdLimit(transfer_key_limit),
                initial_balance: crate::domain::Amount(initial_balance),
                max_balance: crate::domain::Amount(max_balance),
            })?;
            if ctx.json {
                output::json(&b);
            } else {
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
            }
        }
        BatchCommand::List => {
            let list = batches::list(&auth.conn)?;
            if ctx.json {
                output::json(&serde_json::json!({ "batches": list }));
            } else {
                println!(
                    "{:<16} {:<10} {:>4} {:>5} {:>4} {:>10} {:>6}",
                    "name", "profile", "tk", "limit", "uk", "balance", "cards"
                );
                for b in list {
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
            }
        }
    }
    Ok(())
}

pub fn rollout_plan(ctx: &Context, db: &Path, id: u32) -> Result<(), CliError> {
    let auth = Authority::open(db)?;
    let rows = batches::plan(&auth.conn, id)?;
    let stranded: u64 = rows.iter().map(|r| r.stranded).sum();
    if ctx.json {
        output::json(&serde_json::json!({ "transfer_key_id": id, "stranded": stranded, "batches": rows }));
    } else {
        for r in &rows {
            println!(
                "{:<16} limit {:>4}  cards {:>6}  stranded {:>6}",
                r.batch, r.transfer_key_id_limit, r.personalised, r.stranded
            );
        }
        println!("a roll to transfer key {id} strands {stranded} card(s)");
    }
    if stranded > 0 {
        return Err(CliError::CheckFailed {
            what: format!("a roll to transfer key {id} would strand {stranded} card(s)"),
        });
    }
    Ok(())
}

pub fn cert(ctx: &Context, db: &Path, identity: Option<&Path>, cmd: CertCommand) -> Result<(), CliError> {
    let auth = Authority::open(db)?;
    match cmd {
        CertCommand::List => {
            let rows = issuer_ca::list(&auth.conn)?;
            if ctx.json {
                output::json(&serde_json::json!({ "certificates": rows }));
            } else {
                for r in rows {
                    println!("{}  card {}  {}", r.serial, r.card, if r.revoked { "REVOKED" } else { "valid" });
                }
            }
        }
        CertCommand::Revoke { serial, reason } => {
            let reason = match reason {
                None => None,
                Some(r) => Some(issuer_ca::parse_reason(&r).ok_or_else(|| {
                    CliError::input(format!("unknown revocation reason {r:?}"), "use key-compromise, superseded, cessation-of-operation, affiliation-changed, privilege-withdrawn")
                })?),
            };
            let serials = auth.unlock(identity)?.revoke(&serial, reason)?;
            for s in serials {
                println!("revoked certificate {s}");
            }
        }
        CertCommand::Crl { out } => {
            let der = auth.unlock(identity)?.crl()?;
            write_file(
                &out,
                ca::pem_encode(ca::PEM_CRL, &der)
                    .map_err(|e| CliError::input(e.to_string(), "report this"))?
                    .as_bytes(),
            )?;
            println!("wrote CRL to {}", out.display());
        }
        CertCommand::Ca { out } => {
            let root = match issuer_ca::root(&auth.conn)? {
                Some(r) => r,
                None => auth.unlock(identity)?.ca()?.root_der,
            };
            write_file(
                &out,
                ca::pem_encode(ca::PEM_CERTIFICATE, &root)
                    .map_err(|e| CliError::input(e.to_string(), "report this"))?
                    .as_bytes(),
            )?;
            println!("wrote issuer root certificate to {}", out.display());
        }
    }
    Ok(())
}
