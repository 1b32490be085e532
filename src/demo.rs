//! The main job, as a library function: a whole key rollout on virtual cards with an embedded database,
//! told as it goes through events, ending with one [`Verdict`]: keys converged, value conserved, chains
//! valid and log intact (the same checks as `audit report`), and `rollout verify` on the demo's own
//! database. This module sits above `authority`, `perso`, `terminal`, `audit` and `rollout`, and below
//! the command line, which only renders its events and verdict.
//!
//! The story meets an update-key roll: symmetric cards on update key 1 then have no direct path to the
//! hybrid cards on update key 2. The verdict explains those pairs: they are bridged (hybrid cards on
//! update key 1 take the new key by the public-key path and pass it on by the symmetric one), which is
//! what `rollout verify` on the same database reports too.

use crate::audit::report::build_report;
use crate::audit::{Check, Verdict};
use crate::authority::batches::NewBatch;
use crate::authority::keys::KeyKind;
use crate::authority::{Authority, AuthorityError, Unlocked};
use crate::card::storage::FileStorage;
use crate::card::{Card, CardError};
use crate::domain::{Amount, Profile, Total, TransferKeyId, TransferKeyIdLimit};
use crate::perso::batch::{BatchError, personalise_to_files};
use crate::rollout::status::{Fleet, Status};
use crate::rollout::verify::{VerifyReport, verify};
use crate::rollout::{RolloutError, plan};
use crate::terminal::{KeyRoll, SettleError, SettleOptions, SettlementReport, settle};
use crate::transport::in_process::InProcessChannel;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DemoError {
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    #[error(transparent)]
    Settle(#[from] SettleError),
    #[error("cannot use card file {path}: {source}")]
    CardFile { path: PathBuf, source: CardError },
    #[error("cannot use {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// `--pcsc` and PC/SC is not there (or this keyroll was built without it).
    #[error("{0}")]
    Pcsc(String),
    /// The story went somewhere it cannot (a step that must find a card found none): a bug.
    #[error("the demo's story broke: {0}")]
    Story(&'static str),
}

/// How the demo's terminal reaches the cards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Channel {
    /// Card files opened in this process.
    #[default]
    InProcess,
    /// Each card file served on a vpcd reader of a running pcscd (feature `pcsc`).
    Pcsc,
}

/// One step of the story.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub step: &'static str,
    pub text: String,
}

/// Figures behind the verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    pub issued_value: Total,
    pub balances: Total,
    pub in_flight: Total,
    pub newest_transfer_key_id: Option<TransferKeyId>,
    pub cards_behind: usize,
    pub cards_stranded: usize,
    pub certificates_valid: usize,
    pub certificates_revoked: usize,
    /// Generation pairs without a direct key-roll path that other generations bridge.
    pub pairs_bridged: usize,
}

#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub dir: PathBuf,
    pub steps: Vec<Event>,
    pub status: Status,
    pub rollout_verify: VerifyReport,
    pub figures: Figures,
    pub verdict: Verdict,
}

struct Story<'a> {
    events: Vec<Event>,
    on_event: &'a mut dyn FnMut(&Event),
    channel: Channel,
}

impl Story<'_> {
    fn say(&mut self, step: &'static str, text: String) {
        let e = Event { step, text };
        (self.on_event)(&e);
        self.events.push(e);
    }

    fn settle(&self, a: &Path, b: &Path, amount: u64, opts: &SettleOptions) -> Result<SettlementReport, DemoError> {
        match self.channel {
            Channel::Pcsc => pcsc::settle(a, b, amount, opts),
            Channel::InProcess => {
                let (mut ca, mut cb) = (open_card_file(a)?, open_card_file(b)?);
                let mut ch_a = InProcessChannel::new(&mut ca, a.display().to_string());
                let mut ch_b = InProcessChannel::new(&mut cb, b.display().to_string());
                Ok(settle(&mut ch_a, &mut ch_b, Amount(amount), opts)?)
            }
        }
    }
}

/// Open an existing card file for this process alone (`FileStorage::exclusive`).
fn open_card_file(path: &Path) -> Result<Card<FileStorage>, DemoError> {
    let fail = |source| DemoError::CardFile { path: path.to_path_buf(), source };
    Card::open(FileStorage::exclusive(path).map_err(|e| fail(e.into()))?).map_err(fail)
}

fn short(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

fn batch(u: &Unlocked<'_>, name: &str, profile: Profile, limit: u32) -> Result<(), DemoError> {
    u.new_batch(&NewBatch {
        name: name.into(),
        profile,
        transfer_key_id_limit: TransferKeyIdLimit(limit),
        initial_balance: Amount(1_000),
        max_balance: Amount(100_000),
    })?;
    Ok(())
}

/// Spread the newest key: pair every card behind it with a card that holds it, until nothing moves.
/// Whether value may move from `payer` to `payee`: a certified card (public-key, hybrid) takes value only
/// with a certified payer's signature (DESIGN.md §10 point 6), so nothing moves from symmetric or
/// multi-key cards to certified ones.
fn value_allowed(profile_of: &BTreeMap<String, Profile>, payer: &Path, payee: &Path) -> bool {
    let certified = |p: &Path| profile_of.get(&short(p)).is_some_and(|p| p.has_key_pair());
    certified(payer) || !certified(payee)
}

fn spread(story: &mut Story<'_>, cards: &Path, profile_of: &BTreeMap<String, Profile>) -> Result<(), DemoError> {
    let profile = |p: &Path| profile_of.get(&short(p)).map(|p| p.to_string()).unwrap_or_else(|| "?".into());
    loop {
        let f = Fleet::load(cards)?;
        let Some(newest) = f.newest() else { return Ok(()) };
        let holders: Vec<PathBuf> = f.holding(newest).into_iter().map(Path::to_path_buf).collect();
        let behind: Vec<PathBuf> = f.behind(newest).into_iter().map(Path::to_path_buf).collect();
        let mut moved = false;
        for x in &behind {
            for y in &holders {
                let amount = if value_allowed(profile_of, y, x) { 10 } else { 0 };
                match story.settle(y, x, amount, &SettleOptions::default()) {
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
                                "{} card {} took transfer key {newest} from {} card {} by {how}; then {amount} moved",
                                profile(x),
                                short(x),
                                profile(y),
                                short(y)
                            ),
                        );
                        moved = true;
                        break;
                    }
                    Err(DemoError::Settle(e)) if matches!(e.cause(), SettleError::NoPath { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        if !moved {
            return Ok(());
        }
    }
}

/// Run the whole story in `dir` (a new database there: an existing one is never overwritten), telling
/// each step to `on_event`.
pub fn run(
    dir: &Path,
    channel: Channel,
    verbose: bool,
    on_event: &mut dyn FnMut(&Event),
) -> Result<DemoReport, DemoError> {
    if channel == Channel::Pcsc {
        pcsc::check()?;
    }
    std::fs::create_dir_all(dir).map_err(|source| DemoError::Io { path: dir.to_path_buf(), source })?;
    let db = dir.join("keyroll.db");
    let identity = dir.join("keyroll.db.identity");
    let cards_dir = dir.join("cards");
    let mut story = Story { events: Vec::new(), on_event, channel };
    story
        .say("setup", format!("working in {} (database, custodian identity and card files stay there)", dir.display()));
    if channel == Channel::Pcsc {
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
            init.audit_key_fingerprint.get(..16).unwrap_or(&init.audit_key_fingerprint)
        ),
    );
    let u = auth.unlock(Some(&identity))?;

    // 2. Batches of every profile. "legacy" is made first with limit 1: the next roll strands it.
    batch(&u, "legacy", Profile::Symmetric, 1)?;
    let (tk2, _) = u.new_key(KeyKind::Transfer, true)?;
    story.say("keys", format!("transfer key {tk2} generated as pending: multi-key cards will carry it already"));
    let first = [
        ("legacy", Profile::Symmetric, 0),
        ("sym-a", Profile::Symmetric, 3),
        ("multi-a", Profile::MultiKey, 2),
        ("pk-a", Profile::PublicKey, 3),
        ("hyb-a", Profile::Hybrid, 3),
    ];
    let mut profile_of = BTreeMap::new();
    let mut batch_of = BTreeMap::new();
    for (b, p, limit) in first {
        if limit > 0 {
            batch(&u, b, p, limit)?;
        }
        let r = personalise_to_files(&u, b, &cards_dir, 2, verbose, &mut |_| {})?;
        for f in &r.files {
            profile_of.insert(short(f), p);
            batch_of.insert(short(f), b.to_string());
        }
        story.say("perso", format!("batch {b} ({p}): personalised {} cards {}", r.written, r.cards.join(", ")));
    }

    // 3. Value moves between cards of generation 1, whatever their profile, except into a certified card
    //    from one that cannot sign.
    let f = Fleet::load(&cards_dir)?;
    let paths: Vec<PathBuf> = f.cards.iter().map(|(p, _)| p.clone()).collect();
    for i in 0..paths.len() {
        let (x, y) = (&paths[i], &paths[(i + 3) % paths.len()]);
        if !value_allowed(&profile_of, x, y) {
            story.say(
                "settle",
                format!(
                    "{} → {}: not attempted: a certified card takes value only from a certified card (signed tokens)",
                    short(x),
                    short(y)
                ),
            );
            continue;
        }
        let r = story.settle(x, y, 25, &SettleOptions::default())?;
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
    let p = plan::plan(&auth, tk2)?;
    story.say(
        "plan",
        format!(
            "rollout plan for transfer key {tk2}: {} card(s) stranded (batch legacy, limit 1), {} cut off by an update-key roll: accepted, the legacy cards are due for replacement",
            p.stranded, p.cut_off
        ),
    );
    u.activate(KeyKind::Transfer, tk2)?;
    batch(&u, "sym-b", Profile::Symmetric, 4)?;
    let r = personalise_to_files(&u, "sym-b", &cards_dir, 2, verbose, &mut |_| {})?;
    for f in &r.files {
        profile_of.insert(short(f), Profile::Symmetric);
        batch_of.insert(short(f), "sym-b".into());
    }
    story
        .say("roll", format!("transfer key {tk2} activated; batch sym-b personalised with it: {}", r.cards.join(", ")));
    spread(&mut story, &cards_dir, &profile_of)?;

    // 5. Roll the update key too: hybrid cards of different update keys must use the public-key path,
    //    and symmetric cards on update key 1 now take keys only through cards that share it.
    let (uk2, _) = u.new_key(KeyKind::Update, false)?;
    let (tk3, _) = u.new_key(KeyKind::Transfer, false)?;
    batch(&u, "hyb-b", Profile::Hybrid, 4)?;
    let r = personalise_to_files(&u, "hyb-b", &cards_dir, 2, verbose, &mut |_| {})?;
    for f in &r.files {
        profile_of.insert(short(f), Profile::Hybrid);
        batch_of.insert(short(f), "hyb-b".into());
    }
    story.say(
        "roll",
        format!(
            "update key {uk2} and transfer key {tk3} created; batch hyb-b personalised with both: {}",
            r.cards.join(", ")
        ),
    );
    spread(&mut story, &cards_dir, &profile_of)?;

    // 6. Revoke (and so block) a card. The policy spreads terminal -> card -> card, and a terminal that
    //    carries no policy file cannot move value with the blocked card: the cards refuse it (DESIGN.md
    //    §10 point 4; the terminal holds no revocation logic of its own).
    let victim =
        auth.certificates()?.into_iter().find(|c| batch_of.get(&c.card).is_some_and(|b| b == "pk-a")).map(|c| c.card);
    if let Some(card) = &victim {
        u.revoke(card, Some(crate::authority::ca::CrlReason::KeyCompromise))?;
        let policy = u.policy_publish()?;
        let policy_path = dir.join("issuer.policy");
        std::fs::write(&policy_path, crate::protocol::codec::Wire::to_wire(&policy))
            .map_err(|source| DemoError::Io { path: policy_path.clone(), source })?;
        story.say(
            "block",
            format!(
                "card {card} revoked (key compromise): policy {} blocks it, written to {}",
                policy.number,
                policy_path.display()
            ),
        );
        let certified: Vec<PathBuf> = Fleet::load(&cards_dir)?
            .cards
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| {
                short(p) != *card
                    && profile_of.get(&short(p)).is_some_and(|p| matches!(p, Profile::PublicKey | Profile::Hybrid))
            })
            .collect();
        let [x, y, z, ..] = &certified[..] else { return Err(DemoError::Story("fewer than three certified cards")) };
        let with_file = SettleOptions { policy: Some(policy.clone()), ..Default::default() };
        let r = story.settle(x, y, 1, &with_file)?;
        story.say(
            "block",
            format!(
                "terminal with the policy file: {} and {} took policy {} (spread to {:?})",
                short(x),
                short(y),
                policy.number,
                r.policy_spread
            ),
        );
        let r = story.settle(y, z, 1, &SettleOptions::default())?;
        story.say(
            "block",
            format!(
                "terminal without the file: {} took the policy from {} (spread to {:?})",
                short(z),
                short(y),
                r.policy_spread
            ),
        );
        match story.settle(z, &cards_dir.join(format!("{card}.card")), 5, &SettleOptions::default()) {
            Err(DemoError::Settle(e)) if matches!(e.cause(), SettleError::Blocked { .. }) => story.say(
                "block",
                format!("terminal without the file, {} and blocked card {card}: refused by the card: {e}", short(z)),
            ),
            Ok(_) => {
                return Err(DemoError::Story("a card holding the policy moved value with a blocked card"));
            }
            Err(e) => return Err(e),
        }
    }

    // 7. Auditors: the same report `keyroll audit report` prints on this database.
    let report = build_report(&auth, std::time::SystemTime::now())?;
    story.say(
        "audit",
        format!(
            "audit chain --all: {} certificate(s) valid, {} invalid ({} revoked as expected)",
            report.chains.valid, report.chains.invalid, report.chains.revoked
        ),
    );
    story.say(
        "audit",
        format!(
            "audit log: {} rows, {}",
            report.audit_log.rows,
            if report.audit_log.intact { "intact, head signature valid" } else { "NOT intact" }
        ),
    );

    // 8. `rollout verify` on this database: every generation pair through the real terminal.
    let rv = verify(&u)?;
    story.say(
        "verify",
        format!(
            "rollout verify: {} generation pair(s), {} failure(s); {} pair(s) have no direct key-roll path since the update key rolled, and other cards bridge them",
            rv.pairs.len(),
            rv.failures,
            rv.bridged
        ),
    );

    // 9. Status and verdict.
    let fleet = Fleet::load(&cards_dir)?;
    let batch_names: BTreeMap<String, String> =
        auth.cards()?.into_iter().map(|c| (c.serial.to_string(), c.batch)).collect();
    let status = Status::of(&fleet, &batch_names);
    let issued = auth.issued_value()?;
    // The chain and log checks are the audit report's own, so `demo` and `audit report` agree.
    let mut checks = vec![
        Check {
            name: "keys_converged",
            ok: status.behind_newest == 0,
            detail: format!(
                "newest transfer key {}, {} card(s) behind it, {} stranded by their limit",
                status.newest_transfer_key_id.map(|i| i.0).unwrap_or(0),
                status.behind_newest,
                status.stranded_by_newest
            ),
        },
        Check {
            name: "value_conserved",
            ok: issued == Total(status.balances.0 + status.in_flight.0),
            detail: format!("issued {issued} = balances {} + in flight {}", status.balances, status.in_flight),
        },
    ];
    checks.extend(report.verdict.checks.iter().cloned());
    checks.push(
        Check {
            name: "rollout_verified",
            ok: rv.ok,
            detail: format!(
                "{} pair(s), {} failure(s), {} bridged (no direct path after the update-key roll), {} generation(s) cut off",
                rv.pairs.len(),
                rv.failures,
                rv.bridged,
                rv.cut_off.len()
            ),
        },
    );
    let verdict = Verdict::new(checks);
    let figures = Figures {
        issued_value: issued,
        balances: status.balances,
        in_flight: status.in_flight,
        newest_transfer_key_id: status.newest_transfer_key_id,
        cards_behind: status.behind_newest,
        cards_stranded: status.stranded_by_newest,
        certificates_valid: report.chains.valid,
        certificates_revoked: report.chains.revoked,
        pairs_bridged: rv.bridged,
    };
    Ok(DemoReport { dir: dir.to_path_buf(), steps: story.events, status, rollout_verify: rv, figures, verdict })
}

/// The demo's settlements over real PC/SC: each settlement serves the two card files as virtual cards
/// on the vpcd readers of a running pcscd (`Virtual PCD 00 00` on port 35963 and `Virtual PCD 00 01`
/// on 35964, Debian's reader file), runs the terminal over `PcscChannel`s, and pulls both cards again.
mod pcsc {
    use super::DemoError;
    use crate::terminal::{SettleOptions, SettlementReport};
    use std::path::Path;

    /// The two vpcd readers the demo uses, with their ports.
    #[cfg_attr(not(feature = "pcsc"), allow(dead_code))]
    pub const READERS: [(&str, &str); 2] =
        [("Virtual PCD 00 00", "127.0.0.1:35963"), ("Virtual PCD 00 01", "127.0.0.1:35964")];

    #[cfg(not(feature = "pcsc"))]
    pub fn check() -> Result<(), DemoError> {
        Err(DemoError::Pcsc("demo --pcsc needs a keyroll built with PC/SC (`--features pcsc`)".into()))
    }

    #[cfg(not(feature = "pcsc"))]
    pub fn settle(_a: &Path, _b: &Path, _amount: u64, _opts: &SettleOptions) -> Result<SettlementReport, DemoError> {
        check().and(Err(DemoError::Story("PC/SC settlement without PC/SC")))
    }

    /// pcscd must run with both vpcd readers and no card in them.
    #[cfg(feature = "pcsc")]
    pub fn check() -> Result<(), DemoError> {
        let readers = crate::transport::pcsc::list_readers()
            .map_err(|e| DemoError::Pcsc(format!("PC/SC is not available: {e}")))?;
        for (name, _) in READERS {
            match readers.iter().find(|r| r.name == name) {
                None => return Err(DemoError::Pcsc(format!("reader {name:?} not found"))),
                Some(r) if r.card_present => {
                    return Err(DemoError::Pcsc(format!("reader {name:?} already has a card")));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    #[cfg(feature = "pcsc")]
    pub fn settle(a: &Path, b: &Path, amount: u64, opts: &SettleOptions) -> Result<SettlementReport, DemoError> {
        use crate::domain::Amount;
        use crate::transport::pcsc::{self, PcscChannel};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;

        let stop = Arc::new(AtomicBool::new(false));
        let mut servers = Vec::new();
        for (path, (_, addr)) in [a, b].into_iter().zip(READERS) {
            let mut card = super::open_card_file(path)?;
            let stop = Arc::clone(&stop);
            servers.push(std::thread::spawn(move || {
                let _ = crate::transport::vpcd::serve(&mut card, addr, &stop, |_| {});
            }));
        }
        let wait = Some(Duration::from_secs(10));
        let channels = PcscChannel::wait_and_connect(READERS[0].0, wait)
            .and_then(|a| PcscChannel::wait_and_connect(READERS[1].0, wait).map(|b| (a, b)));
        let result = match channels {
            Err(e) => Err(DemoError::Pcsc(format!("the served card did not appear: {e}"))),
            Ok((mut ca, mut cb)) => {
                let r = crate::terminal::settle(&mut ca, &mut cb, Amount(amount), opts).map_err(DemoError::from);
                // Release both cards without a reset, whatever happened, before they leave: pcscd keeps a
                // card that was reset on its way out hidden from the next one in the same reader.
                let _ = ca.disconnect();
                let _ = cb.disconnect();
                r
            }
        };
        stop.store(true, Ordering::SeqCst);
        for s in servers {
            let _ = s.join();
        }
        // Let pcscd's presence poll see both readers empty before the next cards arrive.
        for (name, _) in READERS {
            let _ = pcsc::wait_for_card_removal(name, Some(Duration::from_secs(5)));
        }
        std::thread::sleep(Duration::from_millis(450));
        result
    }
}
