//! `keyroll card show FILE`: a card file's public state (never its keys).

use super::CliError;
use super::output::{self, Context};
use crate::card::storage::FileStorage;
use crate::card::{Card, CardState};
use crate::domain::{Amount, CardSerial, ChipId, Profile, TransferKeyId, TransferKeyIdLimit, UpdateKeyId};
use crate::protocol::info::LifeCycle;
use clap::Subcommand;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum CardCommand {
    /// Show a card file's public state: serial, profile, key identifiers, limit, balance, logs.
    #[command(after_help = "Example:\n  keyroll card show cards/4B52000000000001.card --json")]
    Show {
        /// The card file (`perso --out-dir` wrote it).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Serve a card file as a virtual card in a pcscd vpcd reader (make a blank one with `fab blank`).
    /// Ctrl-C or SIGTERM finishes the command in flight and exits.
    #[command(
        after_help = "Example:\n  keyroll fab blank --manufacturer acme --out blank.card\n  keyroll card serve blank.card --vpcd 127.0.0.1:35963 &   # a blank card in \"Virtual PCD 00 00\""
    )]
    Serve {
        /// The card file to serve (it must exist: `fab blank` makes a blank one).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// vpcd's address: "Virtual PCD 00 00" is port 35963, "00 01" is 35964.
        #[arg(long, default_value = "127.0.0.1:35963", value_name = "HOST:PORT")]
        vpcd: String,
        /// Give up when vpcd has not accepted a connection within this many seconds (0: wait forever).
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        connect_timeout: u64,
    },
    /// Read a card's MAC'd log with EXPORT LOG, answering the back office's challenge, into a file that
    /// `reconcile --export FILE --challenge HEX` accepts. Writes nothing on the card.
    #[command(
        name = "export-log",
        after_help = "Example:\n  C=$(keyroll card challenge)          # at the back office: this round's challenge\n  \
                      keyroll card export-log --reader \"00 00\" --challenge $C --out 4B52000000000001.json\n  \
                      keyroll reconcile --export 4B52000000000001.json --challenge $C"
    )]
    ExportLog {
        /// The card: a PC/SC reader name (exact or a unique part), or `file:PATH` for a card file.
        #[arg(long, value_name = "CARD")]
        reader: String,
        /// This round's challenge (32 hex digits) from the back office (`keyroll card challenge`).
        #[arg(long, value_name = "HEX")]
        challenge: String,
        /// The export file to write (never replaces an existing file without --force).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing export file.
        #[arg(long)]
        force: bool,
    },
    /// Draw this round's challenge for log exports (the back office hands it to the terminals that run
    /// `card export-log`, then gives it to `reconcile --challenge`); it is good until the next
    /// reconciliation is recorded. Needs the custodian identity.
    #[command(after_help = "Example:\n  keyroll card challenge --json")]
    Challenge,
}

/// Parse a challenge given as 32 hex digits.
pub fn parse_challenge(s: &str) -> Result<crate::protocol::command::Challenge, CliError> {
    let bad = || {
        CliError::input(
            format!("challenge {s:?} is not 16 bytes in hex (32 hex digits)"),
            "pass the challenge `keyroll card challenge` drew for this round",
        )
    };
    let b = hex::decode(s.trim()).map_err(|_| bad())?;
    b.try_into().map_err(|_| bad())
}

/// EXPORT LOG of the card at `reader` (a PC/SC reader or `file:PATH`) answering `challenge`; a failure's
/// hint ends with what the command left undone (`nothing_done`).
pub fn export_from(
    ctx: &Context,
    reader: &str,
    challenge: &crate::protocol::command::Challenge,
    nothing_done: &str,
) -> Result<crate::protocol::ledger::CardLogExport, CliError> {
    let verbose = ctx.verbose;
    super::settle::with_channel(reader, |ch| {
        crate::terminal::export_log(ch, challenge, verbose).map_err(|e| {
            CliError::input(
                e.to_string(),
                format!("check the card is an issued keyroll card and stays in the reader; {nothing_done}"),
            )
        })
    })
}

/// A fresh challenge, or an error the CLI can show.
pub fn fresh_challenge() -> Result<crate::protocol::command::Challenge, CliError> {
    crate::rollout::exports::fresh_challenge()
        .map_err(|e| CliError::internal(format!("cannot draw a random challenge: {e}")))
}

#[derive(Serialize)]
struct ExportView<'a> {
    serial: CardSerial,
    challenge: String,
    balance: Amount,
    entries: usize,
    open_debits: usize,
    out: &'a Path,
}

/// The public view of a card (DESIGN.md §9 `card show` field names).
#[derive(Serialize)]
pub struct CardView {
    pub serial: Option<CardSerial>,
    /// The chip id the fab gave the card (public).
    pub chip_id: Option<ChipId>,
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
    /// The scheme policy the card holds (0: none), DESIGN.md §10 point 4.
    pub policy_number: u32,
    /// The card's clock floor (RFC 3339): certificate expiry is judged against it.
    pub clock_floor: String,
}

impl CardView {
    pub fn of(s: &CardState) -> Self {
        let multi = s.profile == Some(Profile::MultiKey);
        CardView {
            serial: s.serial,
            chip_id: s.chip_id,
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
            policy_number: s.policy_number(),
            clock_floor: crate::authority::policy::rfc3339(s.clock_floor.0),
        }
    }
}

fn require_card_file(path: &Path) -> Result<(), CliError> {
    if path.exists() {
        return Ok(());
    }
    Err(CliError::input(
        format!("card file {} does not exist", path.display()),
        "make a blank card with `keyroll fab blank --manufacturer DIR --out FILE`, or issued ones with `keyroll perso --out-dir DIR`",
    ))
}

/// Open an existing card file for this process alone (see `FileStorage::exclusive`).
pub fn open_card_file(path: &Path) -> Result<Card<FileStorage>, CliError> {
    require_card_file(path)?;
    lock_card_file(path)
}

/// Open a card file for this process alone.
fn lock_card_file(path: &Path) -> Result<Card<FileStorage>, CliError> {
    let fail = |source| CliError::CardFile { path: path.to_path_buf(), source };
    Card::open(FileStorage::exclusive(path).map_err(|e| fail(e.into()))?).map_err(fail)
}

pub fn run(ctx: &Context, db: &Path, identity: Option<&Path>, cmd: CardCommand) -> Result<(), CliError> {
    match cmd {
        CardCommand::Challenge => {
            let auth = ctx.open_custodian(db)?;
            let u = auth.unlock(identity)?;
            let c = crate::rollout::exports::draw_challenge(&u)?;
            let round = u32::from_be_bytes(c[..4].try_into().expect("4 bytes"));
            let c = hex::encode(c);
            if ctx.json {
                output::json(&serde_json::json!({ "challenge": c, "round": round }));
            } else {
                println!("{c}");
            }
            Ok(())
        }
        CardCommand::ExportLog { reader, challenge, out, force } => {
            let challenge = parse_challenge(&challenge)?;
            // Checked before the card is touched: a file it was not asked to replace (or a card file,
            // the database, its identity) stays as it is.
            ctx.check_output(&out, force)?;
            let export = export_from(ctx, &reader, &challenge, "nothing was written")?;
            let mut bytes = serde_json::to_vec_pretty(&export)
                .map_err(|e| CliError::internal(format!("cannot encode the export: {e}")))?;
            bytes.push(b'\n');
            ctx.write_output(&out, &bytes, force, 0o644)?;
            let view = ExportView {
                serial: export.serial,
                challenge: hex::encode(export.challenge),
                balance: export.balance,
                entries: export.entries.len(),
                open_debits: export.open_debits.len(),
                out: &out,
            };
            if ctx.json {
                output::json(&view);
            } else {
                println!(
                    "exported the log of card {} ({} entries, {} open debits, balance {}) to {}",
                    view.serial,
                    view.entries,
                    view.open_debits,
                    view.balance,
                    out.display()
                );
            }
            Ok(())
        }
        CardCommand::Serve { file, vpcd, connect_timeout } => serve(ctx, &file, &vpcd, connect_timeout),
        CardCommand::Show { file } => {
            // Reading needs no lock: `card show` works on a card that `card serve` is serving.
            require_card_file(&file)?;
            let card = Card::open(FileStorage::new(&file))
                .map_err(|source| CliError::CardFile { path: file.to_path_buf(), source })?;
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
    println!("chip id          {}", opt(&v.chip_id));
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
    println!("policy           {}", v.policy_number);
    println!("clock floor      {}", v.clock_floor);
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

/// vpcd has no authentication: a card served to a remote vpcd would answer anyone on the network.
fn loopback_only(addr: &str) -> Result<(), CliError> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| {
            CliError::input(format!("cannot resolve vpcd address {addr:?}: {e}"), "use HOST:PORT, e.g. 127.0.0.1:35963")
        })?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(CliError::input(
            format!("vpcd address {addr} is not on this machine"),
            "vpcd has no authentication; serve cards to a pcscd on loopback (127.0.0.1)",
        ));
    }
    Ok(())
}

fn serve(ctx: &Context, file: &Path, vpcd: &str, connect_timeout: u64) -> Result<(), CliError> {
    use crate::transport::vpcd::VpcdEvent;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    loopback_only(vpcd)?;
    // A missing file is not a card: a blank card comes from a manufacturer, with factory credentials.
    let mut card = open_card_file(file)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| CliError::internal(format!("cannot install signal handler: {e}")))?;
    }
    let serial = card.state().serial.map(|s| s.to_string()).unwrap_or_else(|| "(blank)".into());
    eprintln!("serving card {serial} from {} on vpcd {vpcd}; Ctrl-C to remove it", file.display());
    let verbose = ctx.verbose;
    let started = Instant::now();
    let deadline = (connect_timeout > 0).then(|| Duration::from_secs(connect_timeout));
    let (mut connected, mut warned, mut gave_up) = (false, false, false);
    let mut last_error = String::new();
    let give_up = Arc::clone(&stop);
    crate::transport::vpcd::serve(&mut card, vpcd, &stop, |ev| match ev {
        VpcdEvent::Connected { .. } => {
            connected = true;
            if verbose {
                eprintln!("vpcd: {ev:?}");
            }
        }
        VpcdEvent::ConnectFailed { error, .. } => {
            last_error = error.to_string();
            if !connected && !warned {
                eprintln!("nothing accepts connections on {vpcd} yet ({last_error}); waiting for pcscd with vpcd");
                warned = true;
            } else if verbose {
                eprintln!("vpcd: connect failed: {last_error}");
            }
            if !connected && deadline.is_some_and(|d| started.elapsed() >= d) {
                gave_up = true;
                give_up.store(true, Ordering::SeqCst);
            }
        }
        VpcdEvent::Apdu { .. } | VpcdEvent::PowerOn | VpcdEvent::PowerOff | VpcdEvent::Reset | VpcdEvent::Stopped
            if !verbose => {}
        ev => eprintln!("vpcd: {ev:?}"),
    })
    .map_err(|e| CliError::input(format!("vpcd: {e}"), "check --vpcd HOST:PORT"))?;
    if gave_up {
        return Err(CliError::input(
            format!("nothing accepted a connection on vpcd address {vpcd} within {connect_timeout} s ({last_error})"),
            "start pcscd with vsmartcard-vpcd (`pcscd --foreground &`), check the port, or pass --connect-timeout 0 to wait",
        ));
    }
    eprintln!("card removed; state saved in {}", file.display());
    Ok(())
}
