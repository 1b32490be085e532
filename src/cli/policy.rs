//! `keyroll policy …`: the scheme policy cards enforce (DESIGN.md §9, §10 point 4).

use super::CliError;
use super::output::{self, Context};
use crate::authority::Authority;
use crate::authority::policy::PolicyView;
use crate::authority::reconciliations::{ResolveBasis, ResolveCheck};
use crate::domain::{Amount, CardSerial};
use crate::protocol::codec::Wire;
use crate::protocol::policy::{Policy, Resolution, ResolutionOutcome};
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Block a card of any profile: cards holding the new policy refuse key rolls and value with it.
    /// For compromised cards, not lost ones (the list is bounded). A card that held an update key can
    /// report another serial: close its update key too (`policy compromise update`).
    #[command(after_help = "Example:\n  keyroll policy block 4B52000000000003 --reason \"file read out\"")]
    Block {
        /// The card's serial (16 hex digits, as `card show` prints it).
        #[arg(value_name = "CARD_SERIAL")]
        serial: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resolve one open debit no card pair can resolve any more (its receipt left the payee's window, or
    /// the payee never returns): a new policy carries the resolution, and the payer applies it once when
    /// the policy reaches it. Checked against the newest reconciliation: `keyroll reconcile` prints the
    /// commands it can prove safe (`issuer_resolutions` under --json).
    #[command(
        group = clap::ArgGroup::new("outcome").required(true).args(["refund", "credited", "void"]),
        after_help = "Example:\n  keyroll policy resolve --payer 4B52000000000001 --payer-sequence 7 \\\n    --payee 4B52000000000002 --receipt 12 --amount 40 --refund\n  keyroll policy resolve … --refund --against-reconciliation none --reason \"payee card destroyed, report 118\""
    )]
    Resolve {
        /// The paying card's serial (16 hex digits; `payer` in `reconcile`).
        #[arg(long, value_name = "CARD_SERIAL")]
        payer: String,
        /// The payer's sequence number of the debit (`payer_sequence` in `reconcile`).
        #[arg(long, value_name = "N")]
        payer_sequence: u32,
        /// The payee's serial (`payee` in `reconcile`).
        #[arg(long, value_name = "CARD_SERIAL")]
        payee: String,
        /// The payee's receipt number of the transfer (`receipt` in `reconcile`).
        #[arg(long, value_name = "N")]
        receipt: u32,
        /// The amount debited (`amount` in `reconcile`).
        #[arg(long, value_name = "UNITS")]
        amount: u64,
        /// The payee never credited it and never can: give the amount back to the payer.
        #[arg(long)]
        refund: bool,
        /// The payee credited it: close the payer's debit, nothing goes back.
        #[arg(long)]
        credited: bool,
        /// The receipt is still open in the payee's window: the payee closes it for good (never
        /// creditable) and the payer's debit stays open; once the payee's export shows it closed,
        /// `reconcile` suggests the refund (which then replaces the void).
        #[arg(long)]
        void: bool,
        /// What the resolution is checked against: `latest` (the default), the newest reconciliation
        /// `keyroll reconcile` recorded, which must show this debit open and prove the outcome safe; or
        /// `none`, for a card lost for good: no proof needed (never against a proof of the opposite),
        /// and --reason is required and kept in the signed audit log.
        #[arg(long, value_name = "latest|none", default_value = "latest")]
        against_reconciliation: String,
        /// Why the issuer resolves without a reconciliation's proof (with `--against-reconciliation none`).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Close wrapping under a compromised key and every older one.
    #[command(subcommand, after_help = "Example:\n  keyroll policy compromise update 1")]
    Compromise(CompromiseCommand),
    /// Write the newest policy to a file for terminals (`settle --policy FILE`).
    #[command(after_help = "Example:\n  keyroll policy publish --out policy.bin")]
    Publish {
        /// The policy file to write (binary, as cards receive it).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Show the newest policy, or a policy file (checked against this database's scheme key when there
    /// is a database).
    #[command(after_help = "Examples:\n  keyroll policy show\n  keyroll --json policy show policy.bin")]
    Show {
        /// A policy file `policy publish` wrote; without it, the database's newest policy.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CompromiseCommand {
    /// Cards holding the policy never wrap a transfer key under update key ID or an older one.
    #[command(after_help = "Example:\n  keyroll policy compromise update 1")]
    Update {
        /// The compromised update key's id (`keyroll key list`): it and every older one are closed.
        id: u32,
    },
}

fn parse_serial(s: &str) -> Result<CardSerial, CliError> {
    CardSerial::parse(s).ok_or_else(|| {
        CliError::input(
            format!("{s:?} is not a card serial"),
            "a card serial is 16 hex digits, as `card show` prints it",
        )
    })
}

fn print_policy(v: &PolicyView) {
    println!("policy {} signed at {}", v.number, v.signed_at);
    println!("  update keys allowed for wrapping: {} and newer", v.min_wrap_update_key_id);
    println!("  lowest live transfer key id: {}", v.min_transfer_key_id);
    if v.blocked.is_empty() {
        println!("  blocked cards: none");
    } else {
        println!("  blocked cards ({}):", v.blocked.len());
        for b in &v.blocked {
            println!("    {} (limit {})", b.serial, b.transfer_key_id_limit);
        }
    }
    if !v.resolutions.is_empty() {
        println!("  resolutions ({}):", v.resolutions.len());
        for r in &v.resolutions {
            println!(
                "    {} debit {} → {} receipt {} amount {}: {}",
                r.payer,
                r.payer_sequence,
                r.payee,
                r.receipt,
                r.amount,
                r.outcome.name()
            );
        }
    }
}

pub fn run(ctx: &Context, db: &Path, identity: Option<&Path>, cmd: PolicyCommand) -> Result<(), CliError> {
    match cmd {
        PolicyCommand::Block { serial, reason } => {
            let s = parse_serial(&serial)?;
            let auth = ctx.open_custodian(db)?;
            let out = auth.unlock(identity)?.policy_block(s, reason.as_deref())?;
            if ctx.json {
                output::json(&out);
            } else if out.already_blocked {
                println!("card {s} is already blocked by policy {}", out.policy.number);
            } else {
                println!("card {s} blocked by policy {}; publish it with `keyroll policy publish`", out.policy.number);
            }
        }
        PolicyCommand::Resolve {
            payer,
            payer_sequence,
            payee,
            receipt,
            amount,
            refund,
            credited,
            void,
            against_reconciliation,
            reason,
        } => {
            let basis = match (against_reconciliation.as_str(), reason) {
                ("latest", None) => ResolveBasis::Reconciliation,
                ("none", Some(reason)) => ResolveBasis::Override { reason },
                ("latest", Some(_)) => {
                    return Err(CliError::input(
                        "--reason is for resolving without a reconciliation",
                        "drop --reason, or add `--against-reconciliation none` for a card lost for good",
                    ));
                }
                ("none", None) => {
                    return Err(CliError::input(
                        "resolving without a reconciliation needs a reason",
                        "add --reason TEXT (kept in the signed audit log), e.g. --reason \"payee card destroyed\"",
                    ));
                }
                (other, _) => {
                    return Err(CliError::input(
                        format!("--against-reconciliation {other:?} is neither `latest` nor `none`"),
                        "use `latest` (the default) or `none` with --reason TEXT",
                    ));
                }
            };
            let outcome = match (refund, credited, void) {
                (true, false, false) => ResolutionOutcome::Refund,
                (false, true, false) => ResolutionOutcome::Credited,
                (false, false, true) => ResolutionOutcome::Void,
                _ => {
                    return Err(CliError::input(
                        "a resolution is a refund, a closure as credited, or a void",
                        "give exactly one of --refund, --credited and --void",
                    ));
                }
            };
            let r = Resolution {
                payer: parse_serial(&payer)?,
                payer_sequence,
                payee: parse_serial(&payee)?,
                receipt,
                amount: Amount(amount),
                outcome,
            };
            let auth = ctx.open_custodian(db)?;
            let out = auth.unlock(identity)?.policy_resolve(r, &basis)?;
            if ctx.json {
                output::json(&out);
            } else if out.already_carried {
                println!("policy {} already carries this resolution", out.policy.number);
            } else {
                println!(
                    "policy {}: card {} debit {} ({} to {} receipt {}) resolved as {}; publish it with `keyroll policy publish`",
                    out.policy.number,
                    r.payer,
                    r.payer_sequence,
                    r.amount,
                    r.payee,
                    r.receipt,
                    r.outcome.name()
                );
                match &out.checked {
                    Some(ResolveCheck { override_reason: Some(why), reconciliation, .. }) => println!(
                        "  resolved without a reconciliation's proof (newest: {}), reason logged: {why}",
                        reconciliation.map_or("none".to_string(), |id| id.to_string())
                    ),
                    Some(ResolveCheck { reconciliation: Some(id), state: Some(state), .. }) => {
                        println!("  checked against reconciliation {id}: the debit is {state}")
                    }
                    _ => {}
                }
            }
        }
        PolicyCommand::Compromise(CompromiseCommand::Update { id }) => {
            let auth = ctx.open_custodian(db)?;
            let v = auth.unlock(identity)?.policy_compromise_update(id)?;
            if ctx.json {
                output::json(&v);
            } else {
                println!(
                    "policy {}: cards holding it wrap transfer keys only under update key {} or newer",
                    v.number, v.min_wrap_update_key_id
                );
            }
        }
        PolicyCommand::Publish { out, force } => {
            let auth = ctx.open_custodian(db)?;
            let p = auth.unlock(identity)?.policy_publish()?;
            ctx.write_output(&out, &p.to_wire(), force, 0o644)?;
            let v = PolicyView::of(&p);
            if ctx.json {
                output::json(&serde_json::json!({ "file": out, "policy": v }));
            } else {
                print_policy(&v);
                println!("wrote policy {} to {}", v.number, out.display());
            }
        }
        PolicyCommand::Show { file } => {
            let (policy, verified) = match file {
                None => {
                    let auth = Authority::open_read_only(db)?;
                    let p = auth.current_policy()?.ok_or_else(|| {
                        CliError::input(
                            "this database has no policy yet",
                            "sign one with `keyroll policy publish --out FILE`",
                        )
                    })?;
                    (p, true)
                }
                Some(f) => {
                    let bytes = std::fs::read(&f)
                        .map_err(|e| CliError::input(format!("cannot read {}: {e}", f.display()), "check the path"))?;
                    let bad = |why: String| {
                        CliError::input(
                            format!("{} is not a keyroll policy: {why}", f.display()),
                            "use a file written by `keyroll policy publish`",
                        )
                    };
                    // With a database, the file must verify under its scheme key; without one it is only decoded.
                    match (db.exists() || crate::authority::store::Location::parse(db).is_postgres())
                        .then(|| Authority::open_read_only(db))
                        .transpose()?
                    {
                        Some(auth) => {
                            let rec = auth.scheme_record()?.ok_or_else(|| {
                                CliError::input(
                                    "this database has no scheme key yet",
                                    "run `keyroll policy publish` once",
                                )
                            })?;
                            let p = Policy::verified(&bytes, rec.verifier()).map_err(|e| bad(e.to_string()))?;
                            (p, true)
                        }
                        None => (Policy::from_wire(&bytes, ()).map_err(|e| bad(e.to_string()))?, false),
                    }
                }
            };
            let v = PolicyView::of(&policy);
            if ctx.json {
                let mut doc = serde_json::to_value(&v).expect("serializes");
                doc["verified"] = verified.into();
                output::json(&doc);
            } else {
                print_policy(&v);
                if !verified {
                    println!("  (not verified: no database with the scheme key at hand; cards verify it)");
                }
            }
        }
    }
    Ok(())
}
