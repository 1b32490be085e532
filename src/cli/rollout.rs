//! `keyroll rollout plan|verify|status`: renders what `rollout::{plan, verify, status}` decide.

use super::CliError;
use super::output::Context;
use crate::authority::Authority;
use crate::rollout::paths::{Expect, NoPath};
use crate::rollout::plan::{CompromisePlan, Plan, Reach};
use crate::rollout::status::Status;
use crate::rollout::verify::{Outcome, VerifyReport};
use crate::terminal::KeyRoll;
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// What a roll to transfer key ID leaves behind, per batch: cards stranded by their limit and
    /// cards cut off by an update-key roll; or what `policy compromise update ID` would strand (exit 1
    /// if any card is left behind).
    #[command(
        after_help = "Examples:\n  keyroll rollout plan --transfer-key 2\n  keyroll rollout plan --compromise-update 1",
        group = clap::ArgGroup::new("what").required(true).args(["transfer_key", "compromise_update"])
    )]
    Plan {
        /// The transfer key id of the planned roll.
        #[arg(long, value_name = "ID")]
        transfer_key: Option<u32>,
        /// Instead: the update key `policy compromise update` would close (with every older one);
        /// counts the symmetric and multi-key cards that could then take no newer key.
        #[arg(long, value_name = "ID")]
        compromise_update: Option<u32>,
    },
    /// Cards per transfer key id and per batch in a folder of card files, and what the next roll strands.
    #[command(after_help = "Example:\n  keyroll rollout status --cards cards")]
    Status {
        /// The folder of card files (`perso --out-dir` wrote them).
        #[arg(long, value_name = "DIR")]
        cards: PathBuf,
    },
    /// Settle every ordered pair of live card generations on virtual cards (exit 1 if the terminal
    /// does not do what the key-roll rule says, or if cards never meet on one key although their
    /// limits allow it).
    #[command(after_help = "Example:\n  keyroll rollout verify --json")]
    Verify,
}

pub fn run(ctx: &Context, db: &Path, identity: Option<&Path>, cmd: RolloutCommand) -> Result<(), CliError> {
    match cmd {
        RolloutCommand::Plan { compromise_update: Some(id), .. } => {
            let auth = Authority::open_read_only(db)?;
            let p = crate::rollout::plan::compromise_update(&auth, id)?;
            ctx.emit(&p, print_compromise);
            if p.stranded > 0 {
                return Err(CliError::check(
                    format!(
                        "closing update key {id} (and older) would strand {} card(s): symmetric and multi-key cards on it take no newer key by any path",
                        p.stranded
                    ),
                    "accept it (those cards are due for replacement), or first roll a newer update key onto a generation that can bridge them",
                ));
            }
            Ok(())
        }
        RolloutCommand::Plan { transfer_key, .. } => {
            let transfer_key = transfer_key.expect("clap requires one of the group");
            let auth = Authority::open_read_only(db)?;
            let p = crate::rollout::plan::plan(&auth, transfer_key)?;
            ctx.emit(&p, print_plan);
            if p.left_behind() > 0 {
                return Err(CliError::check(
                    format!(
                        "a roll to transfer key {transfer_key} would leave {} card(s) behind ({} stranded by their limit, {} cut off by an update-key roll)",
                        p.left_behind(),
                        p.stranded,
                        p.cut_off
                    ),
                    "accept it (the cards are due for replacement), or raise no key above a batch's limit and keep a \
                     generation that bridges the update keys (hybrid cards on the old update key)",
                ));
            }
            Ok(())
        }
        RolloutCommand::Status { cards } => {
            let st = crate::rollout::status::status(db, &cards)?;
            ctx.emit(&st, print_status);
            Ok(())
        }
        RolloutCommand::Verify => {
            let auth = ctx.open_custodian(db)?;
            let u = auth.unlock(identity)?;
            let r = crate::rollout::verify::verify(&u)?;
            ctx.emit(&r, print_verify);
            if !r.ok {
                return Err(CliError::check(
                    format!(
                        "{} generation pair(s) fail, {} generation(s) cut off from the newest key",
                        r.failures,
                        r.cut_off.len()
                    ),
                    "see the FAIL and cut-off lines above (or `pairs` and `cut_off` with --json); fix the batches' \
                     limits or keys before a real card sees them",
                ));
            }
            Ok(())
        }
    }
}

fn print_compromise(p: &CompromisePlan) {
    for b in &p.batches {
        let uk = b.update_key_id.map(|u| u.to_string()).unwrap_or("-".into());
        let what = if b.stranded > 0 {
            "STRANDED: no key pair, and its update key would be closed"
        } else if b.update_key_id.is_some_and(|u| u <= p.update_key_id) {
            "takes new keys by the public-key path"
        } else {
            "unaffected"
        };
        println!("{:<16} {:<10} uk {:>3}  cards {:>6}  {}", b.batch, b.profile.name(), uk, b.personalised, what);
    }
    println!("closing update key {} (and older) strands {} card(s)", p.update_key_id, p.stranded);
}

fn reach_text(r: Reach) -> String {
    match r {
        Reach::Holds => "holds it".into(),
        Reach::Direct(k) => format!("takes it directly ({})", crate::rollout::verify::key_roll_name(k)),
        Reach::Bridge => "takes it through another batch's cards".into(),
        Reach::Stranded => "STRANDED by its limit".into(),
        Reach::CutOff => "CUT OFF: no key-roll path (update key differs, no key pair)".into(),
    }
}

fn print_plan(p: &Plan) {
    let uk = |u: Option<u32>| u.map(|u| u.to_string()).unwrap_or("-".into());
    for b in &p.batches {
        println!(
            "{:<16} {:<10} tk {:>3} uk {:>3} limit {:>4}  cards {:>6}  {}",
            b.batch,
            b.profile.name(),
            b.transfer_key_id,
            uk(b.update_key_id),
            b.transfer_key_id_limit,
            b.personalised,
            reach_text(b.reach)
        );
    }
    if p.update_key_ids.len() > 1 {
        let ids: Vec<String> = p.update_key_ids.iter().map(|u| u.to_string()).collect();
        println!(
            "update keys in use: {} (new batches take {}): symmetric and multi-key cards take a newer transfer key \
             only from cards on their own update key",
            ids.join(", "),
            uk(p.newest_update_key_id)
        );
    }
    if p.assumed_new_batches {
        println!(
            "(no batch is on transfer key {} yet: assumed new batches of each profile on update key {})",
            p.transfer_key_id,
            uk(p.newest_update_key_id)
        );
    }
    println!(
        "a roll to transfer key {} strands {} card(s) by their limit and cuts off {} by an update-key roll",
        p.transfer_key_id, p.stranded, p.cut_off
    );
}

fn print_status(s: &Status) {
    println!(
        "{} card(s); newest transfer key {}",
        s.cards,
        s.newest_transfer_key_id.map(|i| i.to_string()).unwrap_or("-".into())
    );
    for (id, n) in &s.by_transfer_key_id {
        println!("  transfer key {id:>3}: {n} card(s)");
    }
    for (b, m) in &s.by_batch {
        let parts: Vec<String> = m.iter().map(|(id, n)| format!("key {id}: {n}")).collect();
        println!("  batch {b:<14} {}", parts.join(", "));
    }
    println!("  behind the newest key (can still take it): {}", s.behind_newest);
    println!("  stranded by the newest key (limit below it): {}", s.stranded_by_newest);
    println!("  a roll to transfer key {} would strand {} card(s)", s.next_id, s.stranded_by_next);
    println!("  balances {} + in flight {}", s.balances, s.in_flight);
    let parts: Vec<String> = s.by_policy_number.iter().map(|(n, c)| format!("policy {n}: {c}")).collect();
    println!(
        "  scheme policy: newest {}, {} card(s) behind it ({})",
        s.newest_policy_number,
        s.behind_newest_policy,
        parts.join(", ")
    );
}

fn print_verify(r: &VerifyReport) {
    let labels = r.labels();
    let w = labels.iter().map(|l| l.len()).max().unwrap_or(8);
    println!(
        "payer \\ payee (= no roll, S symmetric, P public-key, M selection, x stranded by the limit, b no direct path \
         but bridged by other cards, ! fails)"
    );
    let n = labels.len();
    for (i, li) in labels.iter().enumerate() {
        let cells: Vec<&str> = (0..n)
            .map(|j| {
                let p = &r.pairs[i * n + j];
                match (p.ok, p.result, p.key_roll) {
                    (false, ..) => "!",
                    (true, Outcome::Settled, Some(KeyRoll::None)) => "=",
                    (true, Outcome::Settled, Some(KeyRoll::Symmetric)) => "S",
                    (true, Outcome::Settled, Some(KeyRoll::PublicKey)) => "P",
                    (true, Outcome::Settled, Some(KeyRoll::Selection)) => "M",
                    (true, Outcome::Stranded, _) => "x",
                    (true, Outcome::NoDirectPath, _) => "b",
                    (true, ..) => "?",
                }
            })
            .collect();
        println!("{li:<w$}  {}", cells.join(" "));
    }
    for (k, l) in labels.iter().enumerate() {
        println!("  column {}: {l}", k + 1);
    }
    for p in r.pairs.iter().filter(|p| !p.ok) {
        let why = match p.expect {
            Expect::NoDirectPath { why: NoPath::UpdateKey, bridged: false } => {
                " (no direct path and no bridge: the two never meet on one key)"
            }
            Expect::NoDirectPath { why: NoPath::NotStored, bridged: false } => {
                " (the multi-key card does not store the key, and no bridge)"
            }
            _ => "",
        };
        println!("FAIL {} → {}: {}{why}", p.payer, p.payee, p.outcome);
    }
    for c in &r.cut_off {
        println!(
            "CUT OFF {} (batch {}): its limit admits transfer key {} but no chain of key rolls brings it there",
            c.generation,
            c.batches.join(", "),
            c.newest_transfer_key_id
        );
    }
    println!(
        "{} pair(s), {} failure(s), {} bridged (no direct path, e.g. after an update-key roll; other cards carry the key)",
        r.pairs.len(),
        r.failures,
        r.bridged
    );
}
