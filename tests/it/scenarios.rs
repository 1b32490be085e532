//! APDU scenarios as data (opcard-rs `tests/command-response.rs` style): every file in
//! `tests/scenarios/*.toml` is a list of typed steps run against in-memory reference cards.
//!
//! A step names its card and an `op` (a keyroll command, or a raw `apdu`); the runner builds the
//! command, carries what earlier answers said (challenge, wrapped key, receipt, token, acknowledgement,
//! abort proof) into later commands, and decodes every successful answer with the protocol's typed
//! responses. `status` defaults to success (9000); any other status must come with the card's persisted
//! state unchanged (house rule 3). Unknown fields, ops and cards are refused, so a typo cannot turn a
//! step into one that checks nothing.

use crate::support::*;
use keyroll::crypto::Secret16;
use keyroll::crypto::scp11::HostKeyAgreement;
use keyroll::crypto::secure_messaging::HostSession;
use keyroll::domain::*;
use keyroll::fab::FactoryIdentity;
use keyroll::protocol::CommandApdu;
use keyroll::protocol::command::{Command, KeyBytes, KeyPayload, KeyRollPath};
use keyroll::protocol::info::{CardInfo, LifeCycle};
use keyroll::protocol::perso::PersoPayload;
use keyroll::protocol::policy::KeyKind;
use keyroll::protocol::response::*;
use keyroll::protocol::{AID, SmartCard, StatusWord, Wire};
use keyroll::transport::Trace;
use keyroll::transport::in_process::InProcessChannel;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    /// What the scenario shows (and which claim or rule it exercises).
    description: String,
    /// The cards, by name.
    cards: BTreeMap<String, CardSpec>,
    /// The steps, in order.
    step: Vec<toml::Value>,
}

/// A card: blank, or personalised by the real script with the support module's key generations.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CardSpec {
    #[serde(default)]
    blank: bool,
    #[serde(default)]
    serial: u64,
    #[serde(default = "symmetric")]
    profile: Profile,
    #[serde(default = "one")]
    transfer_key: u32,
    #[serde(default = "one")]
    update_key: u32,
    #[serde(default = "five")]
    limit: u32,
    #[serde(default)]
    balance: u64,
}

fn symmetric() -> Profile {
    Profile::Symmetric
}
fn one() -> u32 {
    1
}
fn five() -> u32 {
    5
}

/// The expected status word: four hex digits or a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status(u16);

impl Default for Status {
    fn default() -> Self {
        Status(0x9000)
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let named = match s.as_str() {
            "ok" => Some(StatusWord::Ok),
            "verification_failed" => Some(StatusWord::VerificationFailed),
            "wrong_length" => Some(StatusWord::WrongLength),
            "security_status_not_satisfied" => Some(StatusWord::SecurityStatusNotSatisfied),
            "conditions_not_satisfied" => Some(StatusWord::ConditionsNotSatisfied),
            "incorrect_data" => Some(StatusWord::IncorrectData),
            "application_not_found" => Some(StatusWord::ApplicationNotFound),
            "not_enough_memory" => Some(StatusWord::NotEnoughMemory),
            "incorrect_p1p2" => Some(StatusWord::IncorrectP1P2),
            "referenced_data_not_found" => Some(StatusWord::ReferencedDataNotFound),
            "ins_not_supported" => Some(StatusWord::InsNotSupported),
            "cla_not_supported" => Some(StatusWord::ClaNotSupported),
            _ => None,
        };
        match named {
            Some(sw) => Ok(Status(sw.to_u16())),
            None if s.len() == 4 => u16::from_str_radix(&s, 16)
                .map(Status)
                .map_err(|_| serde::de::Error::custom(format!("status {s:?}: four hex digits or a name"))),
            None => Err(serde::de::Error::custom(format!("unknown status {s:?}"))),
        }
    }
}

/// What a step does. Steps that need an earlier answer say so in their comment.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Op {
    /// SELECT keyroll's AID (or `aid`, hex).
    Select {
        #[serde(default)]
        aid: Option<String>,
    },
    /// GET CARD INFO, checking the fields given.
    GetCardInfo {
        #[serde(default)]
        life_cycle: Option<LifeCycle>,
        #[serde(default)]
        serial: Option<u64>,
        #[serde(default)]
        transfer_key_id: Option<u32>,
        #[serde(default)]
        balance: Option<u64>,
        #[serde(default)]
        sequence: Option<u32>,
        #[serde(default)]
        pending_out: Option<usize>,
        #[serde(default)]
        pending_in: Option<usize>,
    },
    /// GET DATA `BF21`; the runner validates the factory certificates against the test manufacturer
    /// (as the line does) and keeps the card's factory identity.
    GetFactoryData,
    /// INTERNAL AUTHENTICATE (SCP11b) with a fresh ephemeral key; the runner checks the receipt under the
    /// kept factory identity and keeps the secure-messaging session.
    InternalAuthenticate,
    /// PERSO STORE of `item` under the kept secure-messaging session (`tamper`: one protected byte
    /// flipped).
    PersoStore {
        item: Item,
        #[serde(default)]
        tamper: bool,
    },
    /// LOCK under the kept secure-messaging session.
    Lock,
    /// REQUEST UPDATE PERMISSION on the older card; keeps the challenge.
    RequestUpdatePermission { path: Path2 },
    /// GET TRANSFER KEY on the newer card for `receiver`, with the kept challenge; keeps the payload.
    GetTransferKey { path: Path2, receiver: String },
    /// UPDATE TRANSFER KEY with the kept payload (`tamper`: one envelope byte flipped).
    UpdateTransferKey {
        path: Path2,
        #[serde(default)]
        tamper: bool,
    },
    /// BEGIN RECEIVE on the payee from `payer` (its current sequence); keeps the receipt.
    BeginReceive { payer: String, amount: u64 },
    /// DEBIT on the payer for `payee` with the kept receipt (`tamper`: request MAC flipped).
    Debit {
        payee: String,
        amount: u64,
        #[serde(default)]
        tamper: bool,
    },
    /// CREDIT on the payee with the kept token.
    Credit,
    /// CONFIRM on the payer with the kept acknowledgement.
    Confirm,
    /// ABORT on the payee for the kept nonce; keeps the proof.
    Abort,
    /// REFUND on the payer with the kept proof.
    Refund,
    /// EXPORT LOG with `challenge` (hex); the runner checks the answer decodes, echoes the challenge,
    /// carries the fields given and verifies under the card's log key (`support::LOG_MASTER`).
    ExportLog {
        challenge: String,
        #[serde(default)]
        balance: Option<u64>,
        #[serde(default)]
        entries: Option<usize>,
        #[serde(default)]
        open_debits: Option<usize>,
    },
    /// Power off and on: session state (challenges, personalisation sessions) is gone.
    PowerCycle,
    /// Raw command APDU bytes, hex (spaces allowed).
    Apdu { hex: String },
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Path2 {
    Symmetric,
    PublicKey,
}

impl From<Path2> for KeyRollPath {
    fn from(p: Path2) -> Self {
        match p {
            Path2::Symmetric => KeyRollPath::Symmetric,
            Path2::PublicKey => KeyRollPath::PublicKey,
        }
    }
}

/// A personalisation item; keys are the support module's generations.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Item {
    Profile(Profile),
    TransferKey(u32),
    UpdateKey(u32),
    Limit(u32),
    Balance {
        initial: u64,
        max: u64,
    },
    Selected(u32),
    /// The card serial `n`.
    Serial(u64),
    /// The log-export key of serial `n` (the support module's log master).
    LogKey(u64),
    /// The tests' scheme key (`support::scheme_key`); `false` stores 65 zero bytes, not a key.
    SchemeKey(bool),
    /// Policy N of the tests' scheme (`support::test_policy`, nothing blocked).
    Policy(u32),
}

impl Item {
    fn payload(&self) -> PersoPayload {
        let key = |s: &Secret16| KeyBytes(*s.expose());
        match self {
            Item::Profile(p) => PersoPayload::Profile(*p),
            // Each key with the tests' issuer's authorisation (DESIGN.md §10 point 3), naming policy 1.
            Item::TransferKey(id) => {
                let k = transfer_key(*id);
                let authorisation = authorise(KeyKind::Transfer, *id, k.secret(), 1);
                PersoPayload::TransferKey { id: TransferKeyId(*id), key: key(k.secret()), authorisation }
            }
            Item::UpdateKey(id) => {
                let k = update_key(*id);
                let authorisation = authorise(KeyKind::Update, *id, k.secret(), 1);
                PersoPayload::UpdateKey { id: UpdateKeyId(*id), key: key(k.secret()), authorisation }
            }
            Item::SchemeKey(real) => {
                PersoPayload::SchemeKey(if *real { scheme_key().public_key_sec1().to_vec() } else { vec![0; 65] })
            }
            Item::Policy(n) => PersoPayload::Policy(test_policy(*n, &[], 1).to_wire()),
            Item::Limit(l) => PersoPayload::TransferKeyIdLimit(TransferKeyIdLimit(*l)),
            Item::Balance { initial, max } => PersoPayload::Balance { initial: Amount(*initial), max: Amount(*max) },
            Item::Selected(id) => PersoPayload::SelectedTransferKey(TransferKeyId(*id)),
            Item::Serial(n) => PersoPayload::Serial(CardSerial::from_u64(*n)),
            Item::LogKey(n) => PersoPayload::LogKey(key(&keyroll::crypto::mac::card_log_key(
                &Secret16::new(LOG_MASTER),
                &CardSerial::from_u64(*n),
            ))),
        }
    }
}

/// One step: its card, its expected status, its op.
#[derive(Debug)]
struct Step {
    card: String,
    status: Status,
    op: Op,
}

fn parse_step(v: toml::Value) -> Result<Step, String> {
    let toml::Value::Table(mut t) = v else { return Err("a step is a table".into()) };
    let card = match t.remove("card") {
        Some(toml::Value::String(s)) => s,
        _ => return Err("a step names its `card`".into()),
    };
    let status = match t.remove("status") {
        Some(s) => s.try_into::<Status>().map_err(|e| e.to_string())?,
        None => Status::default(),
    };
    let op = toml::Value::Table(t).try_into::<Op>().map_err(|e| e.to_string())?;
    Ok(Step { card, status, op })
}

/// What earlier answers said, for later commands.
#[derive(Default)]
struct Carried {
    factory: Option<FactoryIdentity>,
    /// The host's end of the SCP11b channel, and the key agreement waiting for its answer.
    sm: Option<HostSession>,
    agreement: Option<HostKeyAgreement>,
    challenge: Option<[u8; 16]>,
    payload: Option<KeyPayload>,
    receipt: Option<(ReceiveRequest, CardSerial, u64)>,
    token: Option<DebitToken>,
    ack: Option<CreditAck>,
    proof: Option<AbortProof>,
}

type Cards = BTreeMap<String, TestCard>;

fn serial_of(cards: &Cards, name: &str) -> Result<CardSerial, String> {
    let c = cards.get(name).ok_or_else(|| format!("no card {name:?}"))?;
    c.state().serial.ok_or_else(|| format!("card {name:?} has no serial"))
}

fn decode<T: Wire<Context = ()>>(data: &[u8]) -> Result<T, String> {
    T::from_wire(data, ()).map_err(|e| format!("answer does not decode: {e}"))
}

/// A step's command: plain, or already protected by secure messaging.
enum Outgoing {
    Plain(Command),
    Protected(CommandApdu),
}

/// Protect `cmd` under the kept session (`tamper`: flip the first protected byte).
fn protect(kept: &mut Carried, cmd: Command, tamper: bool) -> Result<Outgoing, String> {
    let sm = kept.sm.as_mut().ok_or("no secure-messaging session kept from an earlier step")?;
    let plain = cmd.to_apdu();
    let mut p = sm.wrap(plain.cla, plain.ins, plain.p1, plain.p2, &plain.data).map_err(|e| e.to_string())?;
    if tamper {
        p.data[0] ^= 1;
    }
    Ok(Outgoing::Protected(CommandApdu { cla: p.cla, ins: p.ins, p1: p.p1, p2: p.p2, data: p.data, le: Some(256) }))
}

/// The command of a step (and what it needs from earlier answers).
fn command(op: &Op, card: &str, cards: &Cards, kept: &mut Carried) -> Result<Option<Outgoing>, String> {
    let cmd = match op {
        Op::PersoStore { item, tamper } => {
            let payload = item.payload();
            let mut data = zeroize::Zeroizing::new(Vec::new());
            payload.encode(&mut data);
            return protect(kept, Command::PersoStore { item: payload.item(), data: data.to_vec() }, *tamper).map(Some);
        }
        Op::Lock => return protect(kept, Command::Lock, false).map(Some),
        Op::InternalAuthenticate => {
            let host = HostKeyAgreement::start().map_err(|e| e.to_string())?;
            let data = host.command_data().to_vec();
            kept.agreement = Some(host);
            kept.sm = None;
            Command::InternalAuthenticate { data }
        }
        _ => match command_plain(op, card, cards, kept)? {
            Some(c) => c,
            None => return Ok(None),
        },
    };
    Ok(Some(Outgoing::Plain(cmd)))
}

fn command_plain(op: &Op, card: &str, cards: &Cards, kept: &mut Carried) -> Result<Option<Command>, String> {
    let need = |what: &str| format!("no {what} kept from an earlier step");
    Ok(Some(match op {
        Op::Select { aid } => Command::Select {
            aid: aid.as_deref().map(hex::decode).transpose().map_err(|e| e.to_string())?.unwrap_or(AID.to_vec()),
        },
        Op::GetCardInfo { .. } => Command::GetCardInfo { certificate: false },
        Op::GetFactoryData => Command::GetFactoryData,
        Op::InternalAuthenticate | Op::PersoStore { .. } | Op::Lock => unreachable!("built by `command`"),
        Op::RequestUpdatePermission { path } => {
            Command::RequestUpdatePermission { path: (*path).into(), sender_certificate: vec![] }
        }
        Op::GetTransferKey { path, receiver } => Command::GetTransferKey {
            path: (*path).into(),
            challenge: kept.challenge.ok_or_else(|| need("challenge"))?,
            receiver: serial_of(cards, receiver)?,
            receiver_certificate: vec![],
        },
        Op::UpdateTransferKey { path, tamper } => {
            let mut payload = kept.payload.clone().ok_or_else(|| need("wrapped transfer key"))?;
            if let (true, KeyPayload::Symmetric { envelope, .. }) = (*tamper, &mut payload) {
                envelope[0] ^= 1;
            }
            Command::UpdateTransferKey { path: (*path).into(), payload }
        }
        Op::BeginReceive { payer, amount } => {
            let p = cards.get(payer).ok_or_else(|| format!("no card {payer:?}"))?;
            Command::BeginReceive {
                payer: serial_of(cards, payer)?,
                amount: Amount(*amount),
                payer_sequence: p.state().sequence,
            }
        }
        Op::Debit { payee, amount, tamper } => {
            let (r, _, _) = kept.receipt.as_ref().ok_or_else(|| need("receipt"))?;
            let mut request = r.request;
            if *tamper {
                request[0] ^= 1;
            }
            Command::Debit {
                payee: serial_of(cards, payee)?,
                amount: Amount(*amount),
                nonce: r.nonce,
                payee_sequence: r.payee_sequence,
                request,
            }
        }
        Op::Credit => {
            let (r, payer, amount) = kept.receipt.as_ref().ok_or_else(|| need("receipt"))?;
            let t = kept.token.ok_or_else(|| need("debit token"))?;
            let receipt = keyroll::protocol::command::ReceiptRef {
                payer: *payer,
                amount: Amount(*amount),
                receipt: r.payee_sequence,
                transfer_key_id: r.transfer_key_id,
            };
            Command::Credit { receipt, payer_sequence: t.payer_sequence, token: t.token }
        }
        Op::Confirm => {
            let (r, _, _) = kept.receipt.as_ref().ok_or_else(|| need("receipt"))?;
            Command::Confirm { nonce: r.nonce, ack: kept.ack.ok_or_else(|| need("acknowledgement"))?.ack }
        }
        Op::Abort => {
            let (r, payer, amount) = kept.receipt.as_ref().ok_or_else(|| need("receipt"))?;
            Command::Abort {
                receipt: keyroll::protocol::command::ReceiptRef {
                    payer: *payer,
                    amount: Amount(*amount),
                    receipt: r.payee_sequence,
                    transfer_key_id: r.transfer_key_id,
                },
            }
        }
        Op::Refund => Command::Refund {
            nonce: kept.receipt.as_ref().ok_or_else(|| need("receipt"))?.0.nonce,
            proof: kept.proof.ok_or_else(|| need("abort proof"))?.proof,
        },
        Op::ExportLog { challenge, .. } => Command::ExportLog { challenge: challenge_of(challenge)? },
        Op::PowerCycle | Op::Apdu { .. } => {
            let _ = card;
            return Ok(None);
        }
    }))
}

fn challenge_of(hex_text: &str) -> Result<[u8; 16], String> {
    hex::decode(hex_text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("challenge {hex_text:?} is not 16 bytes of hex"))
}

/// Run one step; `Err` says what did not hold.
fn run_step(step: &Step, cards: &mut Cards, kept: &mut Carried) -> Result<(), String> {
    let cmd = command(&step.op, &step.card, cards, kept)?;
    let card = cards.get_mut(&step.card).ok_or_else(|| format!("no card {:?}", step.card))?;
    let before = card.storage().inner.record().map(<[u8]>::to_vec);
    let (sw, data) = match (&step.op, cmd) {
        (Op::PowerCycle, _) => {
            card.power_off();
            card.power_on();
            return Ok(());
        }
        (Op::Apdu { hex }, _) => {
            let bytes = hex::decode(hex.split_whitespace().collect::<String>()).map_err(|e| e.to_string())?;
            let r = card.process(&bytes).map_err(|_| "card mute".to_string())?;
            let (data, sw) = r.split_at(r.len() - 2);
            (u16::from_be_bytes([sw[0], sw[1]]), data.to_vec())
        }
        (_, Some(Outgoing::Plain(cmd))) => {
            let mut ch = InProcessChannel::new(card, step.card.clone());
            let r = keyroll::transport::exchange(&mut ch, &mut Trace::default(), &cmd).map_err(|e| e.to_string())?;
            (r.sw.to_u16(), r.data)
        }
        (_, Some(Outgoing::Protected(apdu))) => {
            let mut ch = InProcessChannel::new(card, step.card.clone());
            let r =
                keyroll::transport::exchange_apdu(&mut ch, &mut Trace::default(), &apdu).map_err(|e| e.to_string())?;
            // Every answer to a protected command goes through the host's end: a 9000 must carry a
            // valid R-MAC (the line would stop otherwise).
            let sm = kept.sm.as_mut().expect("protected above");
            let plain = sm.unwrap(&r.data, r.sw.to_u16().to_be_bytes()).map_err(|e| format!("response: {e}"))?;
            (r.sw.to_u16(), plain.to_vec())
        }
        (_, None) => unreachable!("every other op has a command"),
    };
    if sw != step.status.0 {
        return Err(format!("status {sw:04X}, expected {:04X}", step.status.0));
    }
    let card = cards.get(&step.card).expect("looked up above");
    if sw != 0x9000 {
        // A card that rejects a command keeps its persistent state.
        if card.storage().inner.record().map(<[u8]>::to_vec) != before {
            return Err(format!("status {sw:04X} but the card's persistent state changed"));
        }
        return Ok(());
    }
    match &step.op {
        Op::Select { .. }
        | Op::UpdateTransferKey { .. }
        | Op::Confirm
        | Op::Refund
        | Op::Apdu { .. }
        | Op::PowerCycle => {}
        Op::PersoStore { .. } | Op::Lock => {
            decode::<Empty>(&data)?;
        }
        Op::GetFactoryData => {
            let f: FactoryCredentials = decode(&data)?;
            let identity = keyroll::fab::verify::verify(
                &f.agreement_certificate,
                &f.attestation_certificate,
                f.chip_id,
                &test_roots(),
                std::time::SystemTime::now(),
                false,
            )
            .map_err(|e| format!("factory credentials refused: {e}"))?;
            kept.factory = Some(identity);
        }
        Op::InternalAuthenticate => {
            let host = kept.agreement.take().expect("sent above");
            let f = kept.factory.as_ref().ok_or("no factory credentials kept (get_factory_data first)")?;
            let e = host.finish(&f.agreement_public, &data).map_err(|e| format!("key agreement: {e}"))?;
            kept.sm = Some(HostSession::new(e.keys, e.receipt));
        }
        Op::GetCardInfo { life_cycle, serial, transfer_key_id, balance, sequence, pending_out, pending_in } => {
            let info: CardInfo = decode(&data)?;
            let mut wrong = Vec::new();
            let mut check = |name: &str, ok: bool| {
                if !ok {
                    wrong.push(name.to_string());
                }
            };
            check("life_cycle", life_cycle.is_none_or(|l| l == info.life_cycle));
            check("serial", serial.is_none_or(|s| CardSerial::from_u64(s) == info.serial));
            check("transfer_key_id", transfer_key_id.is_none_or(|t| Some(TransferKeyId(t)) == info.transfer_key_id));
            check("balance", balance.is_none_or(|b| Amount(b) == info.balance));
            check("sequence", sequence.is_none_or(|s| s == info.sequence));
            check("pending_out", pending_out.is_none_or(|n| n == info.pending_out.len()));
            check("pending_in", pending_in.is_none_or(|n| n == info.pending_in.len()));
            if !wrong.is_empty() {
                return Err(format!("GET CARD INFO differs in {}: {info:?}", wrong.join(", ")));
            }
        }
        Op::RequestUpdatePermission { .. } => kept.challenge = Some(decode::<UpdatePermission>(&data)?.challenge),
        Op::GetTransferKey { path, .. } => {
            kept.payload =
                Some(KeyPayload::from_wire(&data, (*path).into()).map_err(|e| format!("answer does not decode: {e}"))?)
        }
        Op::BeginReceive { payer, amount } => {
            kept.receipt = Some((decode(&data)?, serial_of(cards, payer)?, *amount));
            kept.token = None;
            kept.ack = None;
            kept.proof = None;
        }
        Op::Debit { .. } => kept.token = Some(decode(&data)?),
        Op::Credit => kept.ack = Some(decode(&data)?),
        Op::Abort => kept.proof = Some(decode(&data)?),
        Op::ExportLog { challenge, balance, entries, open_debits } => {
            let e: keyroll::protocol::ledger::CardLogExport = decode(&data)?;
            let serial = card.state().serial.ok_or("the card has no serial")?;
            let key = keyroll::rollout::reconcile::log_key(&keyroll::crypto::Secret16::new(LOG_MASTER), &serial);
            keyroll::rollout::reconcile::check_export(&e, &key).map_err(|why| format!("export: {why}"))?;
            let mut wrong = Vec::new();
            let mut check = |name: &str, ok: bool| {
                if !ok {
                    wrong.push(name.to_string());
                }
            };
            check("serial", e.serial == serial);
            check("challenge", e.challenge == challenge_of(challenge)?);
            check("balance", balance.is_none_or(|b| Amount(b) == e.balance));
            check("entries", entries.is_none_or(|n| n == e.entries.len()));
            check("open_debits", open_debits.is_none_or(|n| n == e.open_debits.len()));
            if !wrong.is_empty() {
                return Err(format!("EXPORT LOG differs in {}: {e:?}", wrong.join(", ")));
            }
        }
    }
    Ok(())
}

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

fn load(path: &Path) -> Result<(Scenario, Vec<Step>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let s: Scenario = toml::from_str(&text).map_err(|e| e.to_string())?;
    let steps = s
        .step
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, v)| parse_step(v).map_err(|e| format!("step {}: {e}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((s, steps))
}

fn run(path: &Path) -> Result<usize, String> {
    let (s, steps) = load(path)?;
    assert!(!s.description.trim().is_empty(), "{}: describe the scenario", path.display());
    let mut cards = Cards::new();
    for (name, c) in &s.cards {
        let card = if c.blank {
            blank_card()
        } else {
            card(c.serial, c.profile, c.transfer_key, c.update_key, c.limit, c.balance)
        };
        cards.insert(name.clone(), card);
    }
    let mut kept = Carried::default();
    for (i, step) in steps.iter().enumerate() {
        run_step(step, &mut cards, &mut kept)
            .map_err(|e| format!("step {} ({:?} on {}): {e}", i + 1, step.op, step.card))?;
    }
    Ok(steps.len())
}

#[test]
fn every_scenario_file_runs() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenario_dir())
        .expect("tests/scenarios")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let names: Vec<String> = files.iter().map(|p| p.file_stem().unwrap().to_string_lossy().into_owned()).collect();
    for needed in ["personalisation", "symmetric_roll", "value_transfer", "error_statuses"] {
        assert!(names.iter().any(|n| n == needed), "scenario {needed}.toml is missing");
    }
    let mut failures = Vec::new();
    for f in &files {
        match run(f) {
            Ok(n) => assert!(n > 0, "{} has no steps", f.display()),
            Err(e) => failures.push(format!("{}: {e}", f.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The runner itself: a wrong expectation fails, unknown fields and ops are refused, and a status
/// step that changed the card would be caught.
#[test]
fn the_runner_refuses_what_it_cannot_check() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let head = "description = \"x\"\n[cards.a]\nserial = 1\nbalance = 5\n";
    let ok = write(
        "ok.toml",
        &format!(
            "{head}[[step]]\ncard = \"a\"\nop = \"select\"\n[[step]]\ncard = \"a\"\nop = \"get_card_info\"\nbalance = 5\n"
        ),
    );
    assert_eq!(run(&ok), Ok(2));
    let wrong = write(
        "wrong.toml",
        &format!(
            "{head}[[step]]\ncard = \"a\"\nop = \"select\"\n[[step]]\ncard = \"a\"\nop = \"get_card_info\"\nbalance = 6\n"
        ),
    );
    assert!(run(&wrong).unwrap_err().contains("balance"));
    let status = write("status.toml", &format!("{head}[[step]]\ncard = \"a\"\nop = \"select\"\nstatus = \"6985\"\n"));
    assert!(run(&status).unwrap_err().contains("expected 6985"));
    for (name, step) in [
        ("field", "card = \"a\"\nop = \"select\"\nbalanse = 5\n"),
        ("op", "card = \"a\"\nop = \"selekt\"\n"),
        ("card", "card = \"b\"\nop = \"select\"\n"),
        ("nocard", "op = \"select\"\n"),
    ] {
        let p = write(&format!("{name}.toml"), &format!("{head}[[step]]\n{step}"));
        assert!(run(&p).is_err(), "a step with an unknown {name} was accepted");
    }
    let top = write("top.toml", &format!("colour = \"red\"\n{head}[[step]]\ncard = \"a\"\nop = \"select\"\n"));
    assert!(run(&top).is_err(), "an unknown top-level field was accepted");
}
