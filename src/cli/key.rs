//! `keyroll key new|activate|retire|list|export`: transfer and update key versions.

use super::CliError;
use super::output::Context;
use crate::authority::Authority;
use crate::authority::keys::KeyKind;
use clap::{Subcommand, ValueEnum};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    /// The transfer key: value moves between cards on the same one.
    Transfer,
    /// The update key: wraps a newer transfer key for the symmetric key roll.
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
    #[command(after_help = "Examples:\n  keyroll key new transfer --pending\n  keyroll key new update")]
    New {
        /// Which key: transfer or update.
        #[arg(value_enum)]
        kind: KindArg,
        /// Create it pending: not used for new batches until `key activate` (multi-key batches carry it already).
        #[arg(long)]
        pending: bool,
    },
    /// Activate a pending key: new batches take the newest active key.
    #[command(after_help = "Example:\n  keyroll key activate transfer 2")]
    Activate {
        /// Which key: transfer or update.
        #[arg(value_enum)]
        kind: KindArg,
        /// The key version's id (`keyroll key list`).
        id: u32,
    },
    /// Retire a key version (it is never used again; ids are never reused).
    #[command(after_help = "Example:\n  keyroll key retire transfer 1")]
    Retire {
        /// Which key: transfer or update.
        #[arg(value_enum)]
        kind: KindArg,
        /// The key version's id (`keyroll key list`).
        id: u32,
        /// Retire it even if it is still needed (the newest active key, or a batch with cards left to
        /// personalise); the log records that it was forced.
        #[arg(long)]
        force: bool,
    },
    /// List key versions with their state and check value (never the keys).
    #[command(after_help = "Example:\n  keyroll key list --json")]
    List,
    /// Write chosen keys to an age file for RECIPIENT (the `age` CLI decrypts it).
    #[command(after_help = "Example:\n  keyroll key export --to age1… --out keys.age --transfer 2 --update 1")]
    Export {
        /// The age X25519 recipient (age1…) that may decrypt the file.
        #[arg(long, value_name = "AGE_RECIPIENT")]
        to: String,
        /// The age file to write (`-`: standard output). An existing file is never replaced without --force.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing --out file (never the database, its identity or a card file).
        #[arg(long)]
        force: bool,
        /// A transfer key id to include; repeat for several.
        #[arg(long = "transfer", value_name = "ID")]
        transfer: Vec<u32>,
        /// An update key id to include; repeat for several.
        #[arg(long = "update", value_name = "ID")]
        update: Vec<u32>,
    },
}

/// A key version as `key new/activate/retire --json` report it.
#[derive(Serialize)]
struct KeyChange {
    kind: &'static str,
    id: u32,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kcv: Option<String>,
}

/// `key retire --json`: the key's new state and, when forced, what the retirement broke.
#[derive(Serialize)]
struct Retired<'a> {
    kind: &'static str,
    id: u32,
    state: &'static str,
    forced: bool,
    newest_active: bool,
    unfinished_batches: &'a [String],
}

#[derive(Serialize)]
struct Export {
    out: PathBuf,
    recipient: String,
    transfer: Vec<u32>,
    update: Vec<u32>,
}

pub fn run(ctx: &Context, db: &Path, identity: Option<&Path>, cmd: KeyCommand) -> Result<(), CliError> {
    let auth = match cmd {
        // Reading never creates or migrates a database.
        KeyCommand::List => Authority::open_read_only(db)?,
        _ => ctx.open_custodian(db)?,
    };
    match cmd {
        KeyCommand::List => {
            let rows = auth.keys()?;
            ctx.emit(&serde_json::json!({ "keys": rows }), |_| {
                println!("{:<9} {:>4} {:<8} {:<6} {:<20} {:<20}", "kind", "id", "state", "kcv", "created", "activated");
                for k in &rows {
                    println!(
                        "{:<9} {:>4} {:<8} {:<6} {:<20} {:<20}",
                        k.kind.name(),
                        k.id,
                        k.state.name(),
                        k.kcv,
                        k.created_at,
                        k.activated_at.clone().unwrap_or_default()
                    );
                }
            });
        }
        KeyCommand::New { kind, pending } => {
            let u = auth.unlock(identity)?;
            let kind: KeyKind = kind.into();
            let (id, kcv) = u.new_key(kind, pending)?;
            let state = if pending { "pending" } else { "active" };
            ctx.emit(&KeyChange { kind: kind.name(), id, state, kcv: Some(kcv) }, |k| {
                println!("{} key {id} created ({state}, KCV {})", k.kind, k.kcv.as_deref().unwrap_or(""));
            });
        }
        KeyCommand::Activate { kind, id } => {
            auth.unlock(identity)?.activate(kind.into(), id)?;
            let kind = KeyKind::from(kind).name();
            ctx.emit(&KeyChange { kind, id, state: "active", kcv: None }, |_| println!("{kind} key {id} is active"));
        }
        KeyCommand::Retire { kind, id, force } => {
            let r = auth.unlock(identity)?.retire(kind.into(), id, force)?;
            let kind = KeyKind::from(kind).name();
            let out = Retired {
                kind,
                id,
                state: "retired",
                forced: r.forced,
                newest_active: r.newest_active,
                unfinished_batches: &r.unfinished_batches,
            };
            ctx.emit(&out, |r| {
                println!("{kind} key {id} is retired");
                if r.forced {
                    eprintln!(
                        "warning: retired although still needed (--force, logged){}{}",
                        if r.newest_active { "; it was the newest active key" } else { "" },
                        if r.unfinished_batches.is_empty() {
                            String::new()
                        } else {
                            format!("; batches {} can no longer be personalised", r.unfinished_batches.join(", "))
                        }
                    );
                }
            });
        }
        KeyCommand::Export { to, out, transfer, update, force } => {
            if transfer.is_empty() && update.is_empty() {
                return Err(CliError::input("nothing to export", "name keys with --transfer ID and/or --update ID"));
            }
            ctx.check_output(&out, force)?;
            let u = auth.unlock(identity)?;
            let bytes = u.export(&to, &transfer, &update)?;
            ctx.write_output(&out, &bytes, force, 0o600)?;
            u.record_export(&to, &transfer, &update)?;
            if out.as_os_str() != "-" {
                ctx.emit(&Export { out, recipient: to, transfer, update }, |e| {
                    println!("wrote {} (age-encrypted to {})", e.out.display(), e.recipient)
                });
            }
        }
    }
    Ok(())
}
