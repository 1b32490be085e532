//! `keyroll demo [--dir DIR]`: a whole rollout on virtual cards with an embedded database, told as it
//! goes, ending with a verdict (keys converged, value conserved, chains valid, log intact) and a
//! non-zero exit if any of that fails.

use super::CliError;
use super::card::open_card_file;
use super::fleet::{self, Fleet};
use super::output::{self, Context};
use super::perso::personalise_to_files;
use crate::authority::batches::NewBatch;
use crate::authority::keys::KeyKind;
use crate::authority::{Authority, Unlocked, audit_log, cards, issuer_ca};
use crate::domain::{Amount, Profile, TransferKeyId};
use crate::terminal::{KeyRoll, SettleError, SettleOptions, SettlementReport, settle};
use crate::transport::in_process::InProcessChannel;
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where to put the database, its identity and the card files (default: a new temporary folder).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run the card steps over real PC/SC (pcscd with vsmartcard-vpcd readers).
    #[arg(long)]
    pub pcsc: bool,
}

#[derive(Serialize)]
struct Event {
    step: &'static str,
    text: String,
}

#[derive(Serialize, Default)]
struct Verdict {
    keys_converged: bool,
    value_conserved: bool,
    chains_valid: bool,
    log_intact: bool,
    issued_value: u64,
    balances: u64,
    in_flight: u64,
    newest_transfer_key_id: Option<TransferKeyId>,
    cards_behind: usize,
    cards_stranded: usize,
    certificates_valid: usize,
    certificates_revoked: usize,
    certificates_invalid_unexpectedly: usize,
    ok: bool,
}

struct Story<'a> {
    ctx: &'a Context,
    events: Vec<Event>,
}

impl Story<'_> {
    fn say(&mut self, step: &'static str, text: String) {
        if !self.ctx.json {
            println!("[{step}] {text}");
        }
        self.events.push(Event { step, text });
    }
}

/// Where the demo's terminal finds the cards: in process, or over real PC/SC.
static OVER_PCSC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn settle_files(a: &Path, b: &Path, amount: u64, opts: &SettleOptions) -> Result<SettlementReport, CliError> {
    if OVER_PCSC.load(std::sync::atomic::Ordering::Relaxed) {
        return super::demo_pcsc::settle(a, b, amount, opts);
    }
    let (mut ca, mut cb) = (open_card_file(a)?, open_card_file(b)?);
    let mut ch_a = InProcessChannel::new(&mut ca, a.display().to_string());
    let mut ch_b = InProcessChannel::new(&mut cb, b.display().to_string());
    Ok(settle(&mut ch_a, &mut ch_b, Amount(amount), opts)?)
}

fn short(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

fn batch(u: &Unlocked<'_>, name: &str, profile: Profile, limit: u32) -> Result<(), CliError> {
    u.new_batch(&NewBatch {
        name: name.into(),
        profile,
        transfer_key_id_limit: limit,
        initial_balance: 1_000,
        max_balance: 100_000,
    })?;
    Ok(())
}

/// Spread the newest key: pair every card behind it with a card that holds it, until nothing moves.
fn spread(story: &mut Story<'_>, fleet_dir: &Path, profiles: &dyn Fn(&Path) -> String) -> Result<(), CliError> {
    loop {
        let f = Fleet::load(fleet_dir)?;
        let Some(newest) = f.newest() else { return Ok(()) };
        let holders: Vec<PathBuf> = f
            .cards
            .iter()
            .filter(|(_, s)| s.selected_transfer_key_id == Some(newest))
            .map(|(p, _)| p.clone())
            .collect();
        let behind: Vec<PathBuf> = f
            .cards
            .iter()
            .filter(|(_, s)| {
                s.selected_transfer_key_id < Some(newest) && s.transfer_key_id_limit.is_some_and(|l| l.admits(newest))
            })
            .map(|(p, _)| p.clone())
            .collect();
        let mut moved = false;
        for x in &behind {
            for y in &holders {
                match settle_files(y, x, 10, &SettleOptions::default()) {
                    Ok(r) => {
                        let how = match r.key_roll {
                            KeyRoll::Symmetric => "the symmetric path (shared update key, claims 10-11)",
                            KeyRoll::PublicKey => "the public-key path (certificates, ECIES + ECDSA, claims 12-16)",
                            KeyRoll::Selection => "selection of a key it already stored (claims 8-9)",
                            KeyRoll::None => "no roll",
                        };
                        story.say(
                            "spread",
                            format!(
                                "{} card {} took transfer key {newest} from {} card {} by {how}; then 10 moved",
                                profiles(x),
                                short(x),
                                profiles(y),
                                short(y)
                            ),
                        );
                        moved = true;
                        break;
                    }
                    Err(CliError::Settle(SettleError::NoPath { .. })) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        if !moved {
            return Ok(());
        }
    }
}

pub fn run(ctx: &Context, a: DemoArgs) -> Result<(), CliError> {
    if a.pcsc {
        super::demo_pcsc::check()?;
        OVER_PCSC.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let dir = match a.dir {
        Some(d) => d,
        None => tempfile::Builder::new()
            .prefix("keyroll-demo-")
            .tempdir()
            .map_err(|e| CliError::input(format!("cannot create a temporary folder: {e}"), "pass --dir DIR"))?
            .keep(),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::input(format!("cannot create {}: {e}", dir.display()), "pass a writable --dir"))?;
    let db = dir.join("keyroll.db");
    let identity = dir.join("keyroll.db.identity");
    let cards_dir = dir.join("cards");
    let mut story = Story { ctx, events: Vec::new() };
    story
        .say("setup", format!("working in {} (database, custodian identity and card files stay there)", dir.display()));
    if a.pcsc {
        story
            .say("setup", "settlements run over real PC/SC: each card file is served on a vpcd reader of pcscd".into());
    }

    // 1. The issuer.
    let (auth, init) = Authority::init(&db, "Demo Transit Authority", &[], &identity)?;
    story.say(
        "init",
        format!(
            "issuer created: transfer key 1 (KCV {}), update key 1 (KCV {}), CA root, audit key {}…",
            init.transfer_key_kcv,
            init.update_key_kcv,
            &init.audit_key_fingerprint[..16]
        ),
    );
    let u = auth.unlock(Some(&identity))?;

    // 2. Batches of every profile. "legacy" is made first with limit 1: the next roll strands it.
    batch(&u, "legacy", Profile::Symmetric, 1)?;
    let (tk2, _) = u.new_key(KeyKind::Transfer, true)?;
    story.say("keys", format!("transfer key {tk2} generated as pending: multi-key cards will carry it already"));
    batch(&u, "sym-a", Profile::Symmetric, 3)?;
    batch(&u, "multi-a", Profile::MultiKey, 2)?;
    batch(&u, "pk-a", Profile::PublicKey, 3)?;
    batch(&u, "hyb-a", Profile::Hybrid, 3)?;
    let mut profile_of = std::collections::BTreeMap::new();
    for (b, p) in [
        ("legacy", Profile::Symmetric),
        ("sym-a", Profile::Symmetric),
        ("multi-a", Profile::MultiKey),
        ("pk-a", Profile::PublicKey),
        ("hyb-a", Profile::Hybrid),
    ] {
        let r = personalise_to_files(&u, b, &cards_dir, 2, false, ctx.verbose)?;
        for f in &r.files {
            profile_of.insert(short(f), (b.to_string(), p));
        }
        story.say("perso", format!("batch {b} ({p}): personalised {} cards {}", r.written, r.cards.join(", ")));
    }
    let prof = |p: &Path| profile_of_name(&auth, &short(p));

    // 3. Value moves between cards of generation 1, whatever their profile.
    let f = Fleet::load(&cards_dir)?;
    let paths: Vec<PathBuf> = f.cards.iter().map(|(p, _)| p.clone()).collect();
    for i in 0..paths.len() {
        let (x, y) = (&paths[i], &paths[(i + 3) % paths.len()]);
        let r = settle_files(x, y, 25, &SettleOptions::default())?;
        story.say(
            "settle",
            format!(
                "{} → {}: {} moved on transfer key {} in {} APDUs",
                short(x),
                short(y),
                r.amount,
                r.transfer_key_id.map(|i| i.0).unwrap_or(0),
                r.apdus
            ),
        );
    }

    // 4. Plan and make the roll to transfer key 2.
    let plan = crate::authority::batches::plan(&auth.conn, tk2)?;
    let stranded: u64 = plan.iter().map(|p| p.stranded).sum();
    story.say("plan", format!("rollout plan for transfer key {tk2}: {stranded} card(s) stranded (batch legacy, limit 1): accepted, they are due for replacement"));
    u.activate(KeyKind::Transfer, tk2)?;
    batch(&u, "sym-b", Profile::Symmetric, 4)?;
    let r = personalise_to_files(&u, "sym-b", &cards_dir, 2, false, ctx.verbose)?;
    for f in &r.files {
        profile_of.insert(short(f), ("sym-b".into(), Profile::Symmetric));
    }
    story
        .say("roll", format!("transfer key {tk2} activated; batch sym-b personalised with it: {}", r.cards.join(", ")));
    spread(&mut story, &cards_dir, &prof)?;

    // 5. Roll the update key too: hybrid cards of different update keys must use the public-key path.
    let (uk2, _) = u.new_key(KeyKind::Update, false)?;
    let (tk3, _) = u.new_key(KeyKind::Transfer, false)?;
    batch(&u, "hyb-b", Profile::Hybrid, 4)?;
    let r = personalise_to_files(&u, "hyb-b", &cards_dir, 2, false, ctx.verbose)?;
    story.say(
        "roll",
        format!(
            "update key {uk2} and transfer key {tk3} created; batch hyb-b personalised with both: {}",
            r.cards.join(", ")
        ),
    );
    spread(&mut story, &cards_dir, &prof)?;

    // 6. Revoke (and so block) a card; the policy spreads terminal -> card -> card, and a terminal with no
    // policy file cannot move value with the blocked card: the cards refuse it (DESIGN.md §10 point 4).
    let certs = issuer_ca::list(&auth.conn)?;
    let victim =
        certs.iter().find(|c| profile_of.get(&c.card).is_some_and(|(b, _)| b == "pk-a")).map(|c| c.card.clone());
    if let Some(card) = &victim {
        u.revoke(card, Some(crate::authority::ca::CrlReason::KeyCompromise))?;
        let policy = u.policy_publish()?;
        let policy_path = dir.join("issuer.policy");
        std::fs::write(&policy_path, crate::protocol::codec::Wire::to_wire(&policy))
            .map_err(|e| CliError::input(format!("{}: {e}", policy_path.display()), "check --dir"))?;
        story.say("block", format!("card {card} revoked (key compromise): policy {} blocks it", policy.number));
        let same_batch: Vec<PathBuf> = Fleet::load(&cards_dir)?
            .cards
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| short(p) != *card && matches!(prof(p).as_str(), "public-key" | "hybrid"))
            .collect();
        if let [a, b, c, ..] = &same_batch[..] {
            let with_file = SettleOptions { policy: Some(policy.clone()), ..Default::default() };
            let r = settle_files(a, b, 1, &with_file)?;
            story.say("block", format!("terminal with the policy file: {} and {} took policy {} ({:?})", short(a), short(b), policy.number, r.policy_spread));
            let r = settle_files(b, c, 1, &SettleOptions::default())?;
            story.say("block", format!("terminal without the file: {} took it from {} ({:?})", short(c), short(b), r.policy_spread));
            match settle_files(c, &cards_dir.join(format!("{card}.card")), 5, &SettleOptions::default()) {
                Err(CliError::Settle(e @ SettleError::Blocked { .. })) => {
                    story.say("block", format!("terminal without the file, {} and blocked {card}: {e}", short(c)))
                }
                Ok(_) => story.say("block", format!("card {card} is blocked, but value still moved with it!")),
                Err(e) => return Err(e),
            }
        }
    }

    // 7. Auditors.
    let root = issuer_ca::root(&auth.conn)?.expect("init created the CA");
    let crl = u.crl()?;
    let all: Vec<(String, Vec<u8>)> = issuer_ca::all_certificates(&auth.conn)?;
    let results = crate::audit::check_chains(
        &all,
        &[root],
        &[],
        &[crl],
        &crate::pki::ValidationOptions::at(std::time::SystemTime::now()),
    );
    let revoked_cards: Vec<String> =
        issuer_ca::list(&auth.conn)?.into_iter().filter(|c| c.revoked).map(|c| c.card).collect();
    let valid = results.iter().filter(|r| r.valid).count();
    let unexpected = results.iter().filter(|r| !r.valid && !revoked_cards.contains(&r.certificate)).count();
    story.say(
        "audit",
        format!(
            "audit chain --all: {valid} certificate(s) valid, {} invalid ({} revoked as expected)",
            results.len() - valid,
            revoked_cards.len()
        ),
    );
    let log = audit_log::verify(&auth.conn)?;
    story.say(
        "audit",
        format!(
            "audit log: {} rows, {}",
            log.rows,
            if log.intact { "intact, head signature valid" } else { "NOT intact" }
        ),
    );

    // 8. Status and verdict.
    let fleet = Fleet::load(&cards_dir)?;
    let batch_of = cards::list(&auth.conn)?.into_iter().map(|c| (c.serial.to_string(), c.batch)).collect();
    let st = fleet::status(&fleet, &batch_of);
    if !ctx.json {
        println!("[status] rollout status:");
        fleet::print_status(&st);
    }
    let issued = cards::issued_value(&auth.conn)?;
    let mut v = Verdict {
        keys_converged: st.behind_newest == 0,
        value_conserved: issued == st.balances + st.in_flight,
        chains_valid: unexpected == 0,
        log_intact: log.intact,
        issued_value: issued,
        balances: st.balances,
        in_flight: st.in_flight,
        newest_transfer_key_id: st.newest_transfer_key_id,
        cards_behind: st.behind_newest,
        cards_stranded: st.stranded_by_newest,
        certificates_valid: valid,
        certificates_revoked: revoked_cards.len(),
        certificates_invalid_unexpectedly: unexpected,
        ok: false,
    };
    v.ok = v.keys_converged && v.value_conserved && v.chains_valid && v.log_intact;
    if ctx.json {
        output::json(&serde_json::json!({ "dir": dir, "steps": story.events, "status": st, "verdict": v }));
    } else {
        let mark = |b: bool| if b { "yes" } else { "NO" };
        println!(
            "[verdict] keys converged: {} (newest {}, {} stranded by their limit)",
            mark(v.keys_converged),
            v.newest_transfer_key_id.map(|i| i.0).unwrap_or(0),
            v.cards_stranded
        );
        println!(
            "[verdict] value conserved: {} (issued {} = balances {} + in flight {})",
            mark(v.value_conserved),
            v.issued_value,
            v.balances,
            v.in_flight
        );
        println!(
            "[verdict] chains valid: {} ({} valid, {} revoked)",
            mark(v.chains_valid),
            v.certificates_valid,
            v.certificates_revoked
        );
        println!("[verdict] audit log intact: {}", mark(v.log_intact));
        println!("[verdict] {}", if v.ok { "PASS" } else { "FAIL" });
    }
    if !v.ok {
        return Err(CliError::CheckFailed { what: "the demo's verdict failed".into() });
    }
    Ok(())
}

fn profile_of_name(auth: &Authority, serial: &str) -> String {
    auth.conn
        .query_row("SELECT profile FROM cards WHERE serial = ?1", [serial], |r| r.get::<_, String>(0))
        .unwrap_or_else(|_| "?".into())
}
