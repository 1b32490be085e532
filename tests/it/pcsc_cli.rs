//! keyroll over real PC/SC (issue "PC/SC"): cards served by `keyroll card serve` processes into pcscd's
//! vpcd readers, personalised by `keyroll perso --reader` and settled by `keyroll settle` between two
//! readers; an outside client (`opensc-tool`) talking to a served card; and settlements whose cards are
//! pulled after every APDU, recovered by the next settlement. Needs pcscd, vsmartcard-vpcd and opensc
//! (the harness starts pcscd when none runs).

#![cfg(feature = "pcsc")]

use crate::support::cli;
use crate::support::pcscd;

use cli::Scratch;
use keyroll::card::Card;
use keyroll::card::CardState;
use keyroll::card::storage::FileStorage;
use keyroll::domain::{Amount, Profile};
use keyroll::protocol::{Mute, SmartCard};
use keyroll::terminal::{KeyRoll, Role, SettleError, SettleOptions, SettlementReport, settle};
use keyroll::transport::pcsc::{PcscChannel, wait_for_card, wait_for_card_removal};
use pcscd::{ServedCard, VirtualReader, acquire};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Several of pcscd's 400 ms presence polls: a card served or pulled is seen well within this.
const WAIT: Duration = Duration::from_secs(10);
/// A keyroll command that talks to cards (personalisation generates a key pair on the card).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process that is stopped (SIGTERM, then SIGKILL) if the test ends while it still runs.
struct Proc {
    child: Child,
    what: String,
    /// Where its stderr goes, shown when something fails.
    log: Option<PathBuf>,
}

impl Proc {
    fn spawn(mut cmd: Command, what: impl Into<String>, log: Option<PathBuf>) -> Self {
        let what = what.into();
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc { child, what, log }
    }

    fn log_text(&self) -> String {
        self.log.as_ref().map(|p| std::fs::read_to_string(p).unwrap_or_default()).unwrap_or_default()
    }

    /// Wait for the process to exit, at most `timeout`; a process still running is a test failure.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= until {
                panic!("{} did not exit within {timeout:?}; its log:\n{}", self.what, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child this process spawned and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM and wait: `card serve` finishes the command in flight, saves and exits 0.
    fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(WAIT)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGTERM);
            let until = Instant::now() + Duration::from_secs(3);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `keyroll card serve FILE --vpcd ADDR` in a process, inserted: pcscd lists a card in `reader`.
pub(crate) struct ServeProcess {
    proc: Proc,
    reader: VirtualReader,
}

pub(crate) fn serve(s: &Scratch, file: &Path, reader: &VirtualReader) -> ServeProcess {
    let log = s.path(&format!("serve-{}.log", reader.port));
    let mut cmd = s.cmd();
    cmd.args(["card", "serve"]).arg(file).args(["--vpcd", &reader.addr()]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
    let proc = Proc::spawn(cmd, format!("keyroll card serve {} on {}", file.display(), reader.name), Some(log));
    ServeProcess { proc, reader: reader.clone() }
}

impl ServeProcess {
    pub(crate) fn wait_inserted(&self) {
        if let Err(e) = wait_for_card(&self.reader.name, Some(WAIT)) {
            panic!("{} is not seen in the reader: {e}; its log:\n{}", self.proc.what, self.proc.log_text());
        }
    }

    /// SIGTERM: the card leaves the reader and `card serve` exits 0 with the state saved.
    pub(crate) fn pull(mut self) {
        let status = self.proc.terminate();
        assert!(status.success(), "{} exited with {status}; its log:\n{}", self.proc.what, self.proc.log_text());
        let log = self.proc.log_text();
        assert!(log.contains("state saved"), "{log}");
        assert!(wait_for_card_removal(&self.reader.name, Some(WAIT)).unwrap(), "pcscd still sees a card");
    }
}

/// Personalise one card of `batch` through PC/SC: `perso --reader "00 00" --count 1` waits, a `card
/// serve` process inserts a blank card file, perso personalises it and finishes at once (the run's last
/// card: it does not wait for the card's removal); then the card is pulled (SIGTERM).
fn perso_in_reader(s: &Scratch, batch: &str, file: &Path, reader: &VirtualReader) {
    assert!(!file.exists(), "{} must start as a blank card", file.display());
    // A blank from the manufacturer the issuer trusts (see `trusted_fab`).
    s.ok(&["fab", "blank", "--manufacturer", "fab", "--out", file.to_str().unwrap()]);
    let mut cmd = s.cmd();
    cmd.args([
        "--db",
        "keyroll.db",
        "--identity",
        "keyroll.db.identity",
        "--json",
        "perso",
        "--batch",
        batch,
        "--reader",
    ])
    .arg(&reader.name[reader.name.len() - 5..])
    .args(["--count", "1"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut perso = Proc::spawn(cmd, format!("keyroll perso --batch {batch}"), None);
    let (tx, rx) = mpsc::channel();
    let stderr = perso.child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let lines2 = lines.clone();
    let reader_thread = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            lines2.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    let card = serve(s, file, reader);
    // perso reports each card on stderr; "personalised" means the card is written and recorded. The
    // last card of the run is not asked to leave.
    let until = Instant::now() + COMMAND_TIMEOUT;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("remove it") => panic!("perso asked to remove the run's last card: {line}"),
            Ok(line) if line.contains("personalised") => break,
            Ok(_) => {}
            Err(_) => panic!(
                "perso did not personalise the card; its stderr:\n{}\nserve log:\n{}",
                lines.lock().unwrap().join("\n"),
                card.proc.log_text()
            ),
        }
    }
    // perso ends while the card is still in the reader.
    let status = perso.wait_exit(COMMAND_TIMEOUT);
    card.pull();
    reader_thread.join().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(perso.child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success(), "perso: {status}\n{}", lines.lock().unwrap().join("\n"));
    // --json: one document on stdout (the operator's prompts stay on stderr).
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("perso --reader --json: {e}: {out}"));
    assert_eq!(
        (v["schema"].as_str(), v["batch"].as_str(), v["count"].as_u64()),
        (Some("keyroll/1"), Some(batch), Some(1)),
        "{v}"
    );
    assert_eq!(v["reader"].as_str(), Some(reader.name.as_str()), "{v}");
}

/// A manufacturer in `fab/` that the issuer trusts (`fab init` + `fab trust`).
fn trusted_fab(s: &Scratch) {
    s.ok(&["fab", "init", "--out-dir", "fab", "--name", "Line Test Chips"]);
    s.ok(&["fab", "trust", "fab/root.pem"]);
}

/// An issuer that trusts the test manufacturer (`support::test_fab`, whose blanks the rig serves) and
/// has a hybrid batch `b`: what the line tests run `perso::line::run_line` against.
fn issuer_trusting_the_test_fab() -> Scratch {
    let s = Scratch::new();
    s.init();
    let root = crate::support::test_fab().root_der();
    std::fs::write(s.path("fab.pem"), keyroll::pki::pem::encode("CERTIFICATE", root)).unwrap();
    s.ok(&["fab", "trust", "fab.pem"]);
    s.ok(&["batch", "new", "b", "--profile", "hybrid", "--transfer-key-limit", "5", "--initial-balance", "100"]);
    s
}

fn show(s: &Scratch, file: &Path) -> Value {
    s.json(&["card", "show", file.to_str().unwrap()])
}

/// `keyroll settle --payer "00 00" --payee "00 01"` with both card files served.
fn settle_served(s: &Scratch, pc: &pcscd::Pcscd, payer: &Path, payee: &Path, amount: u64) -> Value {
    let a = serve(s, payer, pc.reader(0));
    let b = serve(s, payee, pc.reader(1));
    a.wait_inserted();
    b.wait_inserted();
    let r = s.json(&["settle", "--payer", "00 00", "--payee", "00 01", "--amount", &amount.to_string()]);
    a.pull();
    b.pull();
    r
}

fn assert_card(v: &Value, profile: &str, transfer_key_id: u64, update_key_id: u64, balance: u64) {
    assert_eq!(v["life_cycle"], "issued", "{v}");
    assert_eq!(v["profile"], profile, "{v}");
    assert_eq!(v["transfer_key_id"], transfer_key_id, "{v}");
    assert_eq!(v["update_key_id"], update_key_id, "{v}");
    assert_eq!(v["balance"], balance, "{v}");
    assert_eq!(v["pending_out"], serde_json::json!([]), "{v}");
    assert_eq!(v["pending_in"], serde_json::json!([]), "{v}");
}

#[test]
fn cards_personalised_in_a_reader_roll_keys_and_move_value_between_two_readers() {
    let pc = acquire();
    let s = Scratch::new();
    s.init();
    trusted_fab(&s);
    std::fs::create_dir(s.path("cards")).unwrap();
    let file = |n: &str| s.path(&format!("cards/{n}.card"));
    let r0 = pc.reader(0).clone();

    // First generation: transfer key 1, update key 1, one card of each profile.
    for (batch, profile) in [("sym1", "symmetric"), ("pk1", "public-key"), ("hyb1", "hybrid")] {
        s.ok(&["batch", "new", batch, "--profile", profile, "--transfer-key-limit", "5", "--initial-balance", "100"]);
        perso_in_reader(&s, batch, &file(batch), &r0);
        let v = show(&s, &file(batch));
        let update = if profile == "public-key" { Value::Null } else { 1.into() };
        assert_eq!((&v["profile"], &v["transfer_key_id"], &v["update_key_id"]), (&profile.into(), &1.into(), &update));
        assert_eq!((&v["life_cycle"], &v["balance"]), (&"issued".into(), &100.into()), "{v}");
        assert_eq!(v["has_certificate"], profile != "symmetric", "{v}");
        let serial = v["serial"].as_str().unwrap();
        let row = s.sqlite(&format!("SELECT state, profile FROM cards WHERE serial = '{serial}'"));
        assert_eq!(row.trim(), format!("personalised|{profile}"), "the back office records card {serial}");
    }

    // Second generation, same update key: the symmetric path.
    s.ok(&["key", "new", "transfer"]);
    s.ok(&["batch", "new", "sym2", "--profile", "symmetric", "--transfer-key-limit", "5", "--initial-balance", "100"]);
    perso_in_reader(&s, "sym2", &file("sym2"), &r0);
    assert_eq!(show(&s, &file("sym2"))["transfer_key_id"], 2);

    let r = settle_served(&s, &pc, &file("sym2"), &file("sym1"), 30);
    assert_eq!((&r["key_roll"], &r["updated_card"], &r["amount"]), (&"symmetric".into(), &"payee".into(), &30.into()));
    assert!(r["apdus"].as_u64().unwrap() > 10, "a key roll costs more than a plain transfer: {r}");
    assert_card(&show(&s, &file("sym2")), "symmetric", 2, 1, 70);
    assert_card(&show(&s, &file("sym1")), "symmetric", 2, 1, 130);

    // Third generation with a new update key: cards with different update keys share only the
    // public-key path (claims 12-16).
    s.ok(&["key", "new", "transfer"]);
    s.ok(&["key", "new", "update"]);
    s.ok(&["batch", "new", "hyb3", "--profile", "hybrid", "--transfer-key-limit", "5", "--initial-balance", "100"]);
    perso_in_reader(&s, "hyb3", &file("hyb3"), &r0);
    let v = show(&s, &file("hyb3"));
    assert_eq!((&v["transfer_key_id"], &v["update_key_id"]), (&3.into(), &2.into()));

    // The older hybrid card pays: the newer key rolls onto the payer, then value moves.
    let r = settle_served(&s, &pc, &file("hyb1"), &file("hyb3"), 25);
    assert_eq!((&r["key_roll"], &r["updated_card"], &r["amount"]), (&"public-key".into(), &"payer".into(), &25.into()));
    assert_card(&show(&s, &file("hyb1")), "hybrid", 3, 1, 75);
    assert_card(&show(&s, &file("hyb3")), "hybrid", 3, 2, 125);

    // A public-key card (no update key at all) receives from the newest card.
    let r = settle_served(&s, &pc, &file("hyb3"), &file("pk1"), 5);
    assert_eq!((&r["key_roll"], &r["updated_card"], &r["amount"]), (&"public-key".into(), &"payee".into(), &5.into()));
    let v = show(&s, &file("pk1"));
    assert_eq!((&v["transfer_key_id"], &v["balance"]), (&3.into(), &105.into()), "{v}");
    assert_card(&show(&s, &file("hyb3")), "hybrid", 3, 2, 120);

    // Keys agree now: value moves without a roll, in at most ten APDUs between symmetric cards...
    let r = settle_served(&s, &pc, &file("sym1"), &file("sym2"), 10);
    assert_eq!((&r["key_roll"], &r["updated_card"], &r["amount"]), (&"none".into(), &Value::Null, &10.into()));
    assert!(r["apdus"].as_u64().unwrap() <= 10, "{r}");
    // ...and in two more between cards with certificates: each card's GET CARD INFO carries its
    // certificate, longer than one short response, so the terminal adds a GET RESPONSE per card.
    let r = settle_served(&s, &pc, &file("pk1"), &file("hyb1"), 1);
    assert_eq!((&r["key_roll"], &r["updated_card"], &r["amount"]), (&"none".into(), &Value::Null, &1.into()));
    assert!(r["apdus"].as_u64().unwrap() <= 10, "{r}");
    let total: u64 =
        ["sym1", "pk1", "hyb1", "sym2", "hyb3"].iter().map(|n| show(&s, &file(n))["balance"].as_u64().unwrap()).sum();
    assert_eq!(total, 500, "value is conserved");
}

/// Over real pcscd: a blank made by a manufacturer the issuer does not trust, served with `card serve`,
/// is refused by `perso --reader` before any secret, the refusal is the only change to the database (an
/// audit-log row), and the card is left blank. (A clone of an issued chip and the other impostors are
/// refused the same way in process: `perso_channel`.)
#[test]
fn an_impostor_in_the_reader_is_refused_and_logged() {
    let pc = acquire();
    let r0 = pc.reader(0).clone();
    let s = Scratch::new();
    s.init();
    trusted_fab(&s);
    s.ok(&["batch", "new", "b", "--profile", "hybrid", "--transfer-key-limit", "5", "--initial-balance", "100"]);
    std::fs::create_dir(s.path("cards")).unwrap();
    s.ok(&["fab", "init", "--out-dir", "rogue", "--name", "Rogue Chips"]);
    s.ok(&["fab", "blank", "--manufacturer", "rogue", "--out", "cards/rogue.card"]);
    let run = |file: &str| -> (std::process::Output, String) {
        let card = serve(&s, &s.path(file), &r0);
        card.wait_inserted();
        let before = s.dump();
        let o = s
            .cmd()
            .args([
                "--db",
                "keyroll.db",
                "--identity",
                "keyroll.db.identity",
                "perso",
                "--batch",
                "b",
                "--reader",
                "00 00",
            ])
            .args(["--count", "1"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!o.status.success(), "{file}: {}", String::from_utf8_lossy(&o.stderr));
        card.pull();
        (o, before)
    };
    // The rogue card: refused, logged, nothing else.
    let blank_before = show(&s, &s.path("cards/rogue.card"));
    let (o, before) = run("cards/rogue.card");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        err.contains("impostor refused before any secret")
            && err.contains("not from a manufacturer this issuer trusts"),
        "{err}"
    );
    let after = s.dump();
    let changed: Vec<&str> = after.lines().filter(|l| !before.contains(*l)).collect();
    // The run's own bookkeeping (written when `perso --reader` starts, before any card is seen: the run,
    // its reserved serial and their log row) aside, the refusal is the only change.
    let card_rows: Vec<&&str> = changed
        .iter()
        .filter(|l| !l.starts_with("INSERT INTO perso_runs") && !l.starts_with("INSERT INTO audit_head"))
        .filter(|l| !(l.starts_with("INSERT INTO cards") && l.contains("'reserved'")))
        .filter(|l| !(l.starts_with("INSERT INTO audit_log") && l.contains("'perso run'")))
        .collect();
    assert!(
        card_rows.len() == 1 && card_rows[0].starts_with("INSERT INTO audit_log"),
        "only the refusal record changed: {card_rows:?}"
    );
    assert_eq!(s.sqlite("SELECT count(*) FROM chips").trim(), "0");
    assert!(changed.iter().any(|l| l.contains("perso refused") && l.contains("untrusted-manufacturer")), "{changed:?}");
    assert_eq!(show(&s, &s.path("cards/rogue.card")), blank_before, "the impostor got nothing");
    assert_eq!(s.sqlite("SELECT count(*) FROM certificates").trim(), "0");
    s.ok(&["audit", "log"]);
}

/// opensc-tool's number for `reader` (its `-l` rows: number first, reader name last).
fn opensc_index(reader: &VirtualReader) -> String {
    let out = Command::new("opensc-tool").arg("-l").output().expect("opensc-tool (Debian package opensc) is needed");
    let list = String::from_utf8_lossy(&out.stdout);
    list.lines()
        .find(|l| l.trim_end().ends_with(&reader.name))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("opensc-tool does not list {}:\n{list}", reader.name))
        .to_string()
}

/// Send APDUs (hex) in one opensc-tool session; returns (SW, response data) per APDU.
fn opensc_send(index: &str, apdus: &[&str]) -> Vec<(u16, Vec<u8>)> {
    let mut cmd = Command::new("opensc-tool");
    cmd.args(["-r", index]);
    for a in apdus {
        cmd.args(["-s", a]);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "opensc-tool {apdus:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    // "Received (SW1=0x90, SW2=0x00):" then hex dump rows of up to 16 bytes ("80 08 4B 52 ... ..KR..").
    let mut answers: Vec<(u16, Vec<u8>)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Received (SW1=0x") {
            let sw1 = u8::from_str_radix(&rest[..2], 16).unwrap();
            let sw2 = u8::from_str_radix(&rest[rest.find("SW2=0x").unwrap() + 6..][..2], 16).unwrap();
            answers.push((u16::from_be_bytes([sw1, sw2]), Vec::new()));
        } else if let Some((_, data)) = answers.last_mut().filter(|_| !line.starts_with("Sending")) {
            let hex: Vec<u8> = line
                .split(' ')
                .take_while(|t| t.len() == 2 && t.chars().all(|c| c.is_ascii_hexdigit()))
                .map(|t| u8::from_str_radix(t, 16).unwrap())
                .collect();
            data.extend(hex.iter().take(16));
        }
    }
    assert_eq!(answers.len(), apdus.len(), "one answer per APDU:\n{text}");
    answers
}

#[test]
fn opensc_tool_selects_the_application_and_reads_a_served_card_file() {
    use keyroll::protocol::info::CardInfo;
    let pc = acquire();
    let r0 = pc.reader(0).clone();
    let s = Scratch::new();
    s.init();
    // A hybrid card: its card info carries the certificate, so opensc must fetch it with GET RESPONSE.
    s.ok(&["batch", "new", "h", "--profile", "hybrid", "--transfer-key-limit", "4", "--initial-balance", "42"]);
    s.ok(&["perso", "--batch", "h", "--out-dir", "cards", "--count", "1"]);
    let file = s.card_files("cards").remove(0);
    let shown = show(&s, &file);
    let served = serve(&s, &file, &r0);
    served.wait_inserted();

    let index = opensc_index(&r0);
    let select = "00:A4:04:00:09:F0:6B:65:79:72:6F:6C:6C:02";
    let a = opensc_send(&index, &[select, "80:10:00:00:00", "80:4E:00:00", "40:10:00:00", "00:10:00:00:00"]);
    assert_eq!(a[0], (0x9000, vec![]), "SELECT of keyroll's AID");
    let (sw, info) = &a[1];
    assert_eq!(*sw, 0x9000, "GET CARD INFO");
    // TLV tag 80: the 8-byte serial, the same as `card show` reads from the file.
    assert_eq!(&info[..2], &[0x80, 0x08]);
    assert_eq!(hex::encode_upper(&info[2..10]), shown["serial"].as_str().unwrap());
    assert!(info.len() > 256, "the certificate makes the info longer than one response ({} bytes)", info.len());
    let decoded = <CardInfo as keyroll::protocol::Wire>::from_wire(info, ())
        .unwrap_or_else(|e| panic!("opensc's copy of the card info: {e}"));
    assert_eq!(decoded.balance, Amount(42));
    assert_eq!(decoded.transfer_key_id.map(|i| i.0 as u64), shown["transfer_key_id"].as_u64());
    assert!(decoded.certificate.is_some());
    assert_eq!(a[2], (0x6D00, vec![]), "an instruction keyroll does not have");
    assert_eq!(a[3], (0x6E00, vec![]), "a class keyroll does not use");
    assert_eq!(a[4], (0x6E00, vec![]), "GET CARD INFO under the ISO class");

    // A new session (opensc resets the card between runs) without SELECT is refused.
    let a = opensc_send(&index, &["80:10:00:00:00"]);
    assert_ne!(a[0].0, 0x9000, "GET CARD INFO before SELECT: {:04X}", a[0].0);
    served.pull();
    assert_eq!(show(&s, &file), shown, "an outside client changed nothing on the card");
}

/// The plan of the pull test: one APDU counter shared by the payer and the payee.
#[derive(Default)]
struct PullPlan {
    /// APDUs both cards have received since the plan was armed.
    apdus: usize,
    /// Go mute at this APDU (1-based); `None`: never.
    at: Option<usize>,
    /// Process the APDU first and lose only its answer (power cut after the write), else cut before.
    after_processing: bool,
    /// Which card was pulled, and its power-ons since.
    pulled: Option<Role>,
    power_ons_since_pull: usize,
}

/// A reference card in a vpcd reader that its pull plan can make go mute, which the vpcd connector
/// turns into a removal and, a second later, a reinsertion. The card stays shared so the test can read
/// its state between settlements.
struct Pullable {
    role: Role,
    card: Arc<Mutex<Card<FileStorage>>>,
    plan: Arc<Mutex<PullPlan>>,
}

impl SmartCard for Pullable {
    fn atr(&self) -> Vec<u8> {
        self.card.lock().unwrap().atr()
    }
    fn power_on(&mut self) {
        let mut plan = self.plan.lock().unwrap();
        if plan.pulled == Some(self.role) {
            plan.power_ons_since_pull += 1;
        }
        self.card.lock().unwrap().power_on();
    }
    fn power_off(&mut self) {
        self.card.lock().unwrap().power_off();
    }
    fn reset(&mut self) {
        self.card.lock().unwrap().reset();
    }
    fn process(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Mute> {
        let mut plan = self.plan.lock().unwrap();
        plan.apdus += 1;
        if plan.at == Some(plan.apdus) {
            plan.at = None;
            plan.pulled = Some(self.role);
            plan.power_ons_since_pull = 0;
            if plan.after_processing {
                let _ = self.card.lock().unwrap().process(apdu);
            }
            return Err(Mute);
        }
        self.card.lock().unwrap().process(apdu)
    }
}

fn file_card(path: &Path, serial: u64, transfer_key_id: u32, balance: u64) -> Card<FileStorage> {
    use keyroll::perso::{Line, personalise};
    use keyroll::transport::in_process::InProcessChannel;
    let state = crate::support::blank_state_from(crate::support::test_fab());
    let mut card = Card::create(FileStorage::new(path), state).unwrap();
    let plan = crate::support::plan(serial, Profile::Symmetric, transfer_key_id, 1, 5, balance);
    let roots = crate::support::test_roots();
    let line = Line { roots: &roots, allow_virtual: false, register: None, issuer: None, verbose: false };
    personalise(&mut InProcessChannel::new(&mut card, "perso"), &line, &plan).unwrap();
    card
}

/// A payer in reader 0 and a payee in reader 1, served in process, that a pull plan can pull.
struct PullRig {
    payer: Arc<Mutex<Card<FileStorage>>>,
    payee: Arc<Mutex<Card<FileStorage>>>,
    plan: Arc<Mutex<PullPlan>>,
    served: Vec<ServedCard<Pullable>>,
    readers: [String; 2],
}

impl PullRig {
    fn start(pc: &pcscd::Pcscd, payer: Card<FileStorage>, payee: Card<FileStorage>) -> Self {
        let (payer, payee) = (Arc::new(Mutex::new(payer)), Arc::new(Mutex::new(payee)));
        let plan = Arc::new(Mutex::new(PullPlan::default()));
        let served = [(Role::Payer, &payer), (Role::Payee, &payee)]
            .into_iter()
            .enumerate()
            .map(|(i, (role, card))| {
                ServedCard::start(Pullable { role, card: card.clone(), plan: plan.clone() }, &pc.reader(i).addr())
            })
            .collect();
        PullRig { payer, payee, plan, served, readers: [pc.reader(0).name.clone(), pc.reader(1).name.clone()] }
    }

    /// Exchange the cards' chips for a fresh pair while no channel is open: a new pair of cards, without
    /// waiting for pcscd's presence poll to see two removals and two insertions.
    fn replace(&self, payer: Card<FileStorage>, payee: Card<FileStorage>) {
        *self.payer.lock().unwrap() = payer;
        *self.payee.lock().unwrap() = payee;
    }

    /// Exchange the chip in reader 0 only (while no channel is open).
    fn replace_payer(&self, payer: Card<FileStorage>) {
        *self.payer.lock().unwrap() = payer;
    }

    fn states(&self) -> (CardState, CardState) {
        (self.payer.lock().unwrap().state().clone(), self.payee.lock().unwrap().state().clone())
    }

    fn connect(&self) -> (PcscChannel, PcscChannel) {
        let a = PcscChannel::wait_and_connect(&self.readers[0], Some(WAIT)).expect("payer in reader 0");
        let b = PcscChannel::wait_and_connect(&self.readers[1], Some(WAIT)).expect("payee in reader 1");
        (a, b)
    }

    /// A settlement nothing interrupts; also checks that the cards received exactly the APDUs it counts.
    fn settle(&self, amount: u64) -> Result<SettlementReport, SettleError> {
        let (mut a, mut b) = self.connect();
        *self.plan.lock().unwrap() = PullPlan::default();
        let r = settle(&mut a, &mut b, Amount(amount), &SettleOptions::default());
        if let Ok(r) = &r {
            assert_eq!(self.plan.lock().unwrap().apdus, r.apdus, "every APDU counted reaches a card, no other");
        }
        r
    }

    /// A settlement whose card receiving APDU `k` is pulled: it must fail. Waits until the vpcd connector
    /// has put the card back and pcscd powered it up. Returns the role of the pulled card.
    fn settle_pulled(&self, k: usize, after_processing: bool, amount: u64, case: &str) -> Role {
        let (mut a, mut b) = self.connect();
        *self.plan.lock().unwrap() = PullPlan { at: Some(k), after_processing, ..PullPlan::default() };
        let e = settle(&mut a, &mut b, Amount(amount), &SettleOptions::default());
        drop((a, b));
        assert!(e.is_err(), "{case}: the settlement must fail, got {e:?}");
        let role = self.plan.lock().unwrap().pulled.unwrap_or_else(|| panic!("{case}: no card was pulled"));
        let until = Instant::now() + WAIT;
        while self.plan.lock().unwrap().power_ons_since_pull == 0 {
            assert!(Instant::now() < until, "{case}: the {role} card did not come back");
            std::thread::sleep(Duration::from_millis(20));
        }
        role
    }

    /// Pull both cards for good; returns how many times the connector removed a mute card.
    fn stop(self) -> usize {
        let mut removals = 0;
        for s in self.served {
            let (_, r, events, _) = s.stop();
            r.unwrap();
            removals += events.iter().filter(|e| *e == "Removed").count();
        }
        removals
    }
}

fn assert_settled(case: &str, sa: &CardState, sb: &CardState, total: u64) {
    assert_eq!(sa.balance.0 + sb.balance.0, total, "{case}: value conserved");
    for (who, s) in [("payer", sa), ("payee", sb)] {
        assert!(
            s.pending_out.is_empty() && s.pending_in.is_empty(),
            "{case}: {who} still has pending entries: out {:?} in {:?}",
            s.pending_out,
            s.pending_in
        );
    }
    assert_eq!(sa.selected_transfer_key_id, sb.selected_transfer_key_id, "{case}: the cards converge");
}

#[test]
fn card_pulled_after_any_apdu_of_a_settlement_is_recovered_by_the_next_one() {
    let pc = acquire();
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("payer.card"), dir.path().join("payee.card"));
    let rig = PullRig::start(&pc, file_card(&pa, 1, 1, 1000), file_card(&pb, 2, 1, 1000));
    let total = 2000u64;

    // A settlement nothing interrupts: how many APDUs it takes.
    let r = rig.settle(7).unwrap();
    assert_eq!((r.key_roll, r.amount), (KeyRoll::None, Amount(7)));
    let n = r.apdus;
    let mut moved = 7u64;

    for after_processing in [false, true] {
        for k in 1..=n {
            let how = if after_processing { "answer lost" } else { "before it ran" };
            let case = format!("pulled at APDU {k} of {n}, {how}");
            rig.settle_pulled(k, after_processing, 5, &case);
            let (sa, sb) = rig.states();
            assert!(sa.balance.0 + sb.balance.0 <= total, "{case}: value created");

            rig.settle(0).unwrap_or_else(|e| panic!("{case}: recovery: {e}"));
            let (sa, sb) = rig.states();
            assert_settled(&case, &sa, &sb, total);
            // Either the 5 arrived or it was refunded, never half.
            let received = sb.balance.0 - 1000;
            assert!(
                received == moved || received == moved + 5,
                "{case}: payee received {received}, expected {moved} or {}",
                moved + 5
            );
            moved = received;
        }
    }
    let (sa, sb) = rig.states();
    assert_eq!(rig.stop(), 2 * n, "one removal per pull");
    // The files hold what the cards last said.
    for (path, state) in [(&pa, &sa), (&pb, &sb)] {
        assert_eq!(Card::open(FileStorage::new(path)).unwrap().state().balance, state.balance);
    }
}

#[test]
fn card_pulled_after_any_apdu_of_a_key_roll_converges_on_the_next_settlement() {
    let pc = acquire();
    let dir = tempfile::tempdir().unwrap();
    // The payer holds transfer key 1, the payee key 2: the settlement rolls key 2 onto the payer.
    let pair = |i: u64| {
        let (pa, pb) = (dir.path().join(format!("payer{i}.card")), dir.path().join(format!("payee{i}.card")));
        (file_card(&pa, 2 * i + 1, 1, 1000), file_card(&pb, 2 * i + 2, 2, 1000))
    };
    let (a, b) = pair(0);
    let rig = PullRig::start(&pc, a, b);
    let r = rig.settle(5).unwrap();
    assert_eq!((r.key_roll, r.updated_card, r.amount), (KeyRoll::Symmetric, Some(Role::Payer), Amount(5)));
    let n = r.apdus;

    for k in 1..=n {
        let (a, b) = pair(k as u64);
        rig.replace(a, b);
        // Each APDU is pulled once; the two kinds of cut alternate to keep the run short.
        let after_processing = k % 2 == 0;
        let how = if after_processing { "answer lost" } else { "before it ran" };
        let case = format!("pulled at APDU {k} of {n} of a key roll, {how}");
        rig.settle_pulled(k, after_processing, 5, &case);
        let (sa, sb) = rig.states();
        let rolled = sa.selected_transfer_key_id.map(|i| i.0);
        assert!(rolled == Some(1) || rolled == Some(2), "{case}: payer on key {rolled:?}");
        assert_eq!(sb.selected_transfer_key_id.map(|i| i.0), Some(2), "{case}: the payee keeps its key");
        assert!(sa.balance.0 + sb.balance.0 <= 2000, "{case}: value created");

        let r = rig.settle(0).unwrap_or_else(|e| panic!("{case}: recovery: {e}"));
        let expected = if rolled == Some(1) { (KeyRoll::Symmetric, Some(Role::Payer)) } else { (KeyRoll::None, None) };
        assert_eq!((r.key_roll, r.updated_card), expected, "{case}");
        let (sa, sb) = rig.states();
        assert_settled(&case, &sa, &sb, 2000);
        assert_eq!(sa.selected_transfer_key_id.map(|i| i.0), Some(2), "{case}: the newer key reached the payer");
        assert!([1000, 1005].contains(&sb.balance.0), "{case}: payee balance {}", sb.balance);
        // Converged: a further synchronisation is a no-op.
        let r = rig.settle(0).unwrap();
        assert_eq!((r.key_roll, r.recovered.len()), (KeyRoll::None, 0), "{case}");
    }
    assert_eq!(rig.stop(), n, "one removal per pull");
}

/// The back office's chip register as the line sees it, in memory: a chip gets one serial, ever.
#[derive(Default)]
struct OneSerialPerChip(Mutex<std::collections::HashMap<keyroll::domain::ChipId, keyroll::domain::CardSerial>>);

impl keyroll::perso::ChipRegister for OneSerialPerChip {
    fn assign(
        &self,
        card: &keyroll::fab::FactoryIdentity,
        serial: keyroll::domain::CardSerial,
    ) -> Result<(), keyroll::perso::BackOfficeError> {
        let mut m = self.0.lock().unwrap();
        match m.get(&card.chip_id) {
            Some(s) if *s != serial => {
                Err(keyroll::perso::BackOfficeError::Refused(format!("chip {} already has serial {s}", card.chip_id)))
            }
            _ => {
                m.insert(card.chip_id, serial);
                Ok(())
            }
        }
    }
}

/// Issue 11: a card pulled after any APDU of a personalisation over pcscd (before the APDU ran, or with
/// its answer lost) is finished in a new session — a new SCP11b key agreement — under the same serial,
/// with the plan's keys, and its chip is never given another serial. Only a card whose LOCK ran but whose
/// answer was lost is already issued: the line then refuses it as issued and the card is complete.
#[test]
fn card_pulled_after_any_apdu_of_a_personalisation_resumes_in_a_new_session() {
    use keyroll::perso::{Line, PersoError, personalise};
    use keyroll::protocol::info::LifeCycle;
    let pc = acquire();
    let dir = tempfile::tempdir().unwrap();
    let blank = |i: usize| {
        let state = crate::support::blank_state_from(crate::support::test_fab());
        Card::create(FileStorage::new(dir.path().join(format!("blank{i}.card"))), state).unwrap()
    };
    let rig = PullRig::start(&pc, blank(0), file_card(&dir.path().join("other.card"), 99, 1, 0));
    let roots = crate::support::test_roots();
    let register = OneSerialPerChip::default();
    let line = Line { roots: &roots, allow_virtual: false, register: Some(&register), issuer: None, verbose: false };
    let plan = |serial: u64| crate::support::plan(serial, Profile::Symmetric, 2, 1, 5, 300);
    let run = |serial: u64, pull: PullPlan| {
        let mut ch = PcscChannel::wait_and_connect(&rig.readers[0], Some(WAIT)).expect("card in reader 0");
        *rig.plan.lock().unwrap() = pull;
        personalise(&mut ch, &line, &plan(serial))
    };

    // Uninterrupted: how many APDUs a personalisation takes (all of them reach the card).
    let o = run(1000, PullPlan::default()).expect("personalisation");
    let n = o.apdus;
    assert_eq!(rig.plan.lock().unwrap().apdus, n);
    assert!(n >= 10, "a whole personalisation takes {n} APDUs");

    for k in 1..=n {
        rig.replace_payer(blank(k));
        let serial = 1000 + k as u64;
        let chip = rig.payer.lock().unwrap().state().chip_id.expect("a blank from the fab has a chip id");
        let after_processing = k % 2 == 0;
        let how = if after_processing { "answer lost" } else { "before it ran" };
        let case = format!("pulled at APDU {k} of {n} of a personalisation, {how}");
        let e = run(serial, PullPlan { at: Some(k), after_processing, ..PullPlan::default() });
        assert!(matches!(e, Err(PersoError::Transport { .. })), "{case}: {e:?}");
        let until = Instant::now() + WAIT;
        while rig.plan.lock().unwrap().power_ons_since_pull == 0 {
            assert!(Instant::now() < until, "{case}: the card did not come back");
            std::thread::sleep(Duration::from_millis(20));
        }
        let state = rig.payer.lock().unwrap().state().clone();
        assert_eq!(state.chip_id, Some(chip), "{case}");
        if state.life_cycle == LifeCycle::Issued {
            // Only LOCK's lost answer leaves an issued card.
            assert!(k == n && after_processing, "{case}: issued before LOCK");
            let again = run(serial, PullPlan::default());
            assert!(
                matches!(again, Err(PersoError::AlreadyIssued(s)) if s.0 == plan(serial).serial.0),
                "{case}: {again:?}"
            );
        } else {
            let o = run(serial, PullPlan::default()).unwrap_or_else(|e| panic!("{case}: resume: {e}"));
            assert_eq!((o.serial, o.chip_id), (plan(serial).serial, chip), "{case}");
        }
        let state = rig.payer.lock().unwrap().state().clone();
        assert_eq!(state.life_cycle, LifeCycle::Issued, "{case}");
        assert_eq!(state.serial, Some(plan(serial).serial), "{case}");
        assert_eq!(state.balance, Amount(300), "{case}");
        assert_eq!(state.transfer_keys[0].key, *crate::support::transfer_key(2).secret(), "{case}");
        assert_eq!(register.0.lock().unwrap().get(&chip), Some(&plan(serial).serial), "{case}: one serial per chip");
        // The file holds the issued card.
        let on_disk = Card::open(FileStorage::new(dir.path().join(format!("blank{k}.card")))).unwrap();
        assert_eq!(on_disk.state().life_cycle, LifeCycle::Issued, "{case}");
    }
    assert_eq!(rig.stop(), n, "one removal per pull");
}

/// Issue 11: every impostor the line must refuse, presented over pcscd to the real PC/SC line
/// (`perso::line::run_line`, what `perso --reader` runs) with the issuer's database: a card of an
/// untrusted manufacturer, a self-signed factory certificate, a card relaying a genuine card's
/// certificates, a wrong receipt, a missing attestation, an attestation by another card's key or over
/// another transcript, and a chip whose card is already issued. Each is refused before any secret with its
/// reason; the database records the refusal in the audit log and nothing else (besides the run's own
/// reservation, written before any card is seen); no chip row, no certificate; the card got nothing.
#[test]
fn every_impostor_is_refused_by_the_line_and_only_the_refusal_is_recorded() {
    use keyroll::authority::Authority;
    use keyroll::card::Misbehaviour;
    use keyroll::crypto::card_key::CardKeyPair;
    use keyroll::fab::Manufacturer;
    use keyroll::perso::line::{LineError, run_line};
    use keyroll::protocol::info::LifeCycle;
    let pc = acquire();
    let dir = tempfile::tempdir().unwrap();
    let s = issuer_trusting_the_test_fab();
    let fab = crate::support::test_fab();
    let blank = crate::support::blank_state_from;
    let file_of = |name: &str, state: CardState, m: Misbehaviour| {
        let mut c = Card::create(FileStorage::new(dir.path().join(format!("{name}.card"))), state).unwrap();
        c.misbehaviour = m;
        c
    };
    let rogue = Manufacturer::create("Rogue Chips").unwrap();
    let genuine = blank(fab);
    let mut self_signed = blank(&rogue);
    {
        let own = Manufacturer::create("Self").unwrap();
        self_signed.factory.as_mut().unwrap().agreement_certificate = Some(own.root_der().to_vec());
    }
    let mut relay = blank(fab);
    {
        let (f, g) = (relay.factory.as_mut().unwrap(), genuine.factory.as_ref().unwrap());
        f.agreement_certificate = g.agreement_certificate.clone();
        f.attestation_certificate = g.attestation_certificate.clone();
    }
    relay.chip_id = genuine.chip_id;
    // A chip personalised once, and its clone.
    let twin = blank(fab);
    let rig = PullRig::start(
        &pc,
        file_of("first", twin.clone(), Misbehaviour::None),
        file_card(&dir.path().join("other.card"), 99, 1, 0),
    );
    let line = |what: &str| -> (Result<keyroll::perso::line::LineReport, LineError>, String) {
        let auth = Authority::open(&s.path("keyroll.db")).unwrap();
        let u = auth.unlock(Some(&s.path("keyroll.db.identity"))).unwrap();
        let before = s.dump();
        let r = run_line(&u, "b", &rig.readers[0], 1, false, &mut |_| {});
        let _ = what;
        (r, before)
    };
    let (first, _) = line("a genuine card");
    first.expect("a genuine blank of a trusted manufacturer is personalised");
    assert_eq!(rig.payer.lock().unwrap().state().life_cycle, LifeCycle::Issued);
    let certificates = s.sqlite("SELECT count(*) FROM certificates");
    let chips = s.sqlite("SELECT count(*) FROM chips");

    type Case = (&'static str, CardState, Misbehaviour, &'static str);
    let cases: Vec<Case> = vec![
        ("untrusted manufacturer", blank(&rogue), Misbehaviour::None, "untrusted-manufacturer"),
        ("self-signed factory certificate", self_signed, Misbehaviour::None, "untrusted-manufacturer"),
        ("relays another card's certificates", relay, Misbehaviour::None, "bad-receipt"),
        ("wrong receipt", blank(fab), Misbehaviour::WrongReceipt, "bad-receipt"),
        ("missing attestation", blank(fab), Misbehaviour::OmitAttestation, "bad-attestation"),
        (
            "attestation by another card's key",
            blank(fab),
            Misbehaviour::AttestWith(Box::new(CardKeyPair::generate().unwrap())),
            "bad-attestation",
        ),
        ("attestation over another transcript", blank(fab), Misbehaviour::AttestOtherTranscript, "bad-attestation"),
        ("chip of an issued card", twin, Misbehaviour::None, "chip-refused"),
    ];
    for (i, (what, state, m, code)) in cases.into_iter().enumerate() {
        rig.replace_payer(file_of(&format!("impostor{i}"), state, m));
        let (r, before) = line(what);
        let e = match r {
            Err(LineError::Perso(e)) => e,
            other => panic!("{what}: {other:?}"),
        };
        assert_eq!(e.refusal_code(), Some(code), "{what}: {e}");
        assert!(e.to_string().contains("before any secret") || code == "chip-refused", "{what}: {e}");
        let after = s.dump();
        let changed: Vec<&str> = after.lines().filter(|l| !before.contains(*l)).collect();
        let others: Vec<&&str> = changed
            .iter()
            .filter(|l| !l.starts_with("INSERT INTO perso_runs") && !l.starts_with("INSERT INTO audit_head"))
            .filter(|l| !(l.starts_with("INSERT INTO cards") && l.contains("'reserved'")))
            // A refused run stays open; the next one resumes it (same reserved serial).
            .filter(|l| {
                !(l.starts_with("INSERT INTO audit_log") && (l.contains("'perso run'") || l.contains("'perso resume'")))
            })
            .collect();
        assert!(
            others.len() == 1 && others[0].contains("perso refused") && others[0].contains(code),
            "{what}: only the refusal is recorded: {others:?}"
        );
        assert_eq!(s.sqlite("SELECT count(*) FROM certificates"), certificates, "{what}: no certificate");
        assert_eq!(s.sqlite("SELECT count(*) FROM chips"), chips, "{what}: no chip row");
        let st = rig.payer.lock().unwrap().state().clone();
        assert!(
            st.serial.is_none() && st.transfer_keys.is_empty() && st.update_key.is_none(),
            "{what}: the card got something"
        );
        assert!(st.log_key.is_none() && st.certificate.is_none(), "{what}: the card got something");
    }
    assert_eq!(rig.stop(), 0, "no card was pulled");
    s.ok(&["audit", "log"]);
}

/// Issue 11: a card pulled exactly as LOCK ran comes back issued with its LOCK answer lost. Before,
/// the line called it "not part of this run" and waited for that serial for good (the slot stayed
/// reserved, the run could not finish). Now the line asks the card to prove it holds the log key it
/// was given under that serial (INTERNAL AUTHENTICATE `80 88 00 01`, fresh challenge) and records it;
/// its certificate stays valid. A clone of that chip that reports the same chip id and serial but
/// lacks the key is refused, recorded as such, and the slot stays open for the genuine card.
#[test]
fn a_card_whose_lock_answer_was_lost_is_recorded_once_it_proves_its_key() {
    use keyroll::authority::Authority;
    use keyroll::perso::PersoError;
    use keyroll::perso::line::{LineError, LineEvent, run_line};
    use keyroll::protocol::info::LifeCycle;
    let pc = acquire();
    let dir = tempfile::tempdir().unwrap();
    let s = issuer_trusting_the_test_fab();
    let fab = crate::support::test_fab();
    let blank = |name: &str| {
        let state = crate::support::blank_state_from(fab);
        Card::create(FileStorage::new(dir.path().join(format!("{name}.card"))), state).unwrap()
    };
    let rig = PullRig::start(&pc, blank("first"), file_card(&dir.path().join("other.card"), 99, 1, 0));
    let line = |count: u32, pull: PullPlan, on_pull: &dyn Fn()| {
        let auth = Authority::open(&s.path("keyroll.db")).unwrap();
        let u = auth.unlock(Some(&s.path("keyroll.db.identity"))).unwrap();
        *rig.plan.lock().unwrap() = pull;
        let mut events = Vec::new();
        let r = run_line(&u, "b", &rig.readers[0], count, false, &mut |e: &LineEvent| {
            if let LineEvent::NotThisRun { serial, life_cycle } = e {
                panic!(
                    "card {serial} ({life_cycle:?}) called not part of this run: the line would wait for it for good"
                );
            }
            if let LineEvent::Pulled { .. } = e {
                on_pull();
            }
            events.push(format!("{e:?}"));
        });
        (r, events)
    };
    // One uninterrupted card: how many APDUs the line sends to a card (LOCK is the last).
    let (r, _) = line(1, PullPlan::default(), &|| {});
    r.expect("a genuine blank is personalised");
    let n = rig.plan.lock().unwrap().apdus;
    assert!(n > 10, "the line sends {n} APDUs per card");

    // The next card is pulled as LOCK runs: it locks, its answer is lost.
    rig.replace_payer(blank("second"));
    let genuine_state = std::cell::RefCell::new(None);
    // A clone replaces it while it is out: same chip id, serial and keys, but not that card's log key.
    let clone_in = || {
        let mut st = rig.payer.lock().unwrap().state().clone();
        assert_eq!(st.life_cycle, LifeCycle::Issued, "LOCK ran before its answer was lost");
        *genuine_state.borrow_mut() = Some(st.clone());
        st.log_key = Some(keyroll::crypto::Secret16::new([0x42; 16]));
        rig.replace_payer(Card::create(FileStorage::new(dir.path().join("clone.card")), st).unwrap());
    };
    let (r, events) = line(1, PullPlan { at: Some(n), after_processing: true, ..PullPlan::default() }, &clone_in);
    let serial = match r {
        Err(LineError::Perso(PersoError::Unproven { serial })) => serial,
        other => panic!("the clone must be refused: {other:?} after {events:?}"),
    };
    assert_eq!(
        s.sqlite(
            "SELECT count(*) FROM audit_log WHERE action = 'perso refused' AND detail LIKE '%unproven-issued-card%'"
        )
        .trim(),
        "1",
        "the refusal is recorded"
    );
    let state_of = |serial: &str| s.sqlite(&format!("SELECT state FROM cards WHERE serial = '{serial}'"));
    assert_eq!(state_of(&serial.to_string()).trim(), "reserved", "the clone finished nothing");

    // The genuine card comes back: it proves its key, the run finishes, its certificate stays valid.
    let st = genuine_state.borrow_mut().take().unwrap();
    rig.replace_payer(Card::create(FileStorage::new(dir.path().join("second-again.card")), st).unwrap());
    let (r, events) = line(1, PullPlan::default(), &|| panic!("nothing is pulled now"));
    r.unwrap_or_else(|e| panic!("the genuine card is recorded: {e} after {events:?}"));
    assert!(events.iter().any(|e| e.contains("Personalised")), "{events:?}");
    assert_eq!(state_of(&serial.to_string()).trim(), "personalised");
    let valid =
        s.sqlite(&format!("SELECT count(*) FROM certificates WHERE card_serial = '{serial}' AND revoked_at IS NULL"));
    assert_eq!(valid.trim(), "1", "the certificate the card holds is not withdrawn");
    s.ok(&["audit", "log"]);
    rig.stop();
}
