//! `keyroll card show FILE`: a card file's public state (never its keys).

use super::CliError;
use super::output::{self, Context};
use crate::card::storage::FileStorage;
use crate::card::{Card, CardState};
use crate::domain::{Amount, CardSerial, Profile, TransferKeyId, TransferKeyIdLimit, UpdateKeyId};
use crate::protocol::info::LifeCycle;
use clap::Subcommand;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum CardCommand {
    /// Show a card file's public state: serial, profile, key identifiers, limit, balance, logs.
    Show { file: PathBuf },
}

/// The public view of a card (DESIGN.md §9 `card show` field names).
#[derive(Serialize)]
pub struct CardView {
    pub serial: Option<CardSerial>,
    pub life_cycle: LifeCycle,
    pub profile: Option<Profile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_key_id: Option<TransferKeyId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected_transfer_key_id: Option<TransferKeyId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_transfer_key_ids: Option<Vec<TransferKeyId>>,
    pub update_key_id: Option<UpdateKeyId>,
    pub transfer_key_id_limit: Option<TransferKeyIdLimit>,
    pub balance: Amount,
    pub max_balance: Amount,
    pub sequence: u32,
    pub pending_out: Vec<crate::card::state::PendingOut>,
    pub pending_in: Vec<crate::card::state::PendingIn>,
    pub log: Vec<crate::card::state::LogEntry>,
    pub has_certificate: bool,
}

impl CardView {
    pub fn of(s: &CardState) -> Self {
        let multi = s.profile == Some(Profile::MultiKey);
        CardView {
            serial: s.serial,
            life_cycle: s.life_cycle,
            profile: s.profile,
            transfer_key_id: if multi { None } else { s.selected_transfer_key_id },
            selected_transfer_key_id: if multi { s.selected_transfer_key_id } else { None },
            stored_transfer_key_ids: multi.then(|| s.stored_ids()),
            update_key_id: s.update_key.as_ref().map(|k| UpdateKeyId(k.id)),
            transfer_key_id_limit: s.transfer_key_id_limit,
            balance: s.balance,
            max_balance: s.max_balance,
            sequence: s.sequence,
            pending_out: s.pending_out.clone(),
            pending_in: s.pending_in.clone(),
            log: s.log.iter().cloned().collect(),
            has_certificate: s.certificate.is_some(),
        }
    }
}

/// Open an existing card file.
pub fn open_card_file(path: &Path) -> Result<Card<FileStorage>, CliError> {
    if !path.exists() {
        return Err(CliError::input(
            format!("card file {} does not exist", path.display()),
            "card files are written by `keyroll perso --out-dir DIR`",
        ));
    }
    Card::open(FileStorage::new(path)).map_err(|source| CliError::CardFile { path: path.to_path_buf(), source })
}

pub fn run(ctx: &Context, cmd: CardCommand) -> Result<(), CliError> {
    match cmd {
        CardCommand::Show { file } => {
            let card = open_card_file(&file)?;
            let view = CardView::of(card.state());
            if ctx.json {
                output::json(&view);
            } else {
                print_view(&view);
            }
            Ok(())
        }
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

fn print_view(v: &CardView) {
    println!("serial           {}", opt(&v.serial));
    println!("life cycle       {:?}", v.life_cycle);
    println!("profile          {}", opt(&v.profile));
    match &v.stored_transfer_key_ids {
        Some(ids) => {
            let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            println!("transfer key     selected {} of stored [{}]", opt(&v.selected_transfer_key_id), ids.join(", "));
        }
        None => println!("transfer key id  {}", opt(&v.transfer_key_id)),
    }
    println!("update key id    {}", opt(&v.update_key_id));
    println!("id upper limit   {}", opt(&v.transfer_key_id_limit));
    println!("balance          {} (maximum {})", v.balance, v.max_balance);
    println!("sequence         {}", v.sequence);
    println!("certificate      {}", if v.has_certificate { "yes" } else { "no" });
    for p in &v.pending_out {
        println!("pending out      {} to {}", p.amount, p.payee);
    }
    for p in &v.pending_in {
        println!("pending in       {} from {}", p.amount, p.payer);
    }
    for l in &v.log {
        println!("log #{:<4}        {:?} {} {}", l.sequence, l.kind, l.amount, l.counterpart);
    }
}
