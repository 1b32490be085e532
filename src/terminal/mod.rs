//! The reference settlement terminal (claims 10–16, 19): two card channels, no keys. It reads both
//! cards, rolls the newer transfer key onto the older card, resolves interrupted transfers between the
//! two cards, then moves value. Every step is relayed; every decision is taken from what the cards say.

mod export;
pub mod journal;
mod key_sync;
mod policy_spread;
mod recovery;
mod value;

use crate::domain::{Amount, CardSerial, TransferKeyId, TransferKeyIdLimit};
use crate::protocol::codec::Wire;
use crate::protocol::command::Command;
use crate::protocol::info::{CardInfo, LifeCycle};
use crate::protocol::{AID, CommandApdu, ResponseApdu, StatusWord};
use crate::transport::{CardChannel, Trace, TransportError, exchange};
use serde::Serialize;
use thiserror::Error;

pub use export::{ExportError, export_log};
pub use key_sync::KeyRoll;
pub use policy_spread::PolicySpread;
pub use recovery::Recovery;
pub use value::TransferRecord;

/// Which side of the settlement a card is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Payer,
    Payee,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Payer => "payer",
            Role::Payee => "payee",
        })
    }
}

#[derive(Debug, Error)]
pub enum SettleError {
    #[error("{role} card ({reader}): {source} during {step}")]
    Transport { role: Role, reader: String, step: &'static str, source: TransportError },
    #[error("{role} card refused {step} with status {sw}")]
    Refused { role: Role, step: &'static str, sw: StatusWord },
    #[error("{role} card answered {step} with malformed data: {why}")]
    Malformed { role: Role, step: &'static str, why: String },
    #[error("{role} card {serial} is {state}, not issued (a half-written card: personalise it again)")]
    NotIssued { role: Role, serial: CardSerial, state: &'static str },
    #[error("both channels reach the same card {0}")]
    SameCard(CardSerial),
    #[error(
        "{role} card {serial} cannot take transfer key {newer}: its upper limit is {limit}; value cannot move between these cards"
    )]
    Stranded { role: Role, serial: CardSerial, newer: TransferKeyId, limit: TransferKeyIdLimit },
    #[error("transfer key ids differ ({payer} vs {payee}) and the cards share no key-roll path: {why}")]
    NoPath { payer: TransferKeyId, payee: TransferKeyId, why: &'static str },
    #[error("{role} card refused to deal with the other card ({step}): the scheme policy blocks it")]
    Blocked { role: Role, step: &'static str },
    #[error("payer balance {balance} is below the amount {amount}")]
    InsufficientBalance { balance: Amount, amount: Amount },
    #[error("payee maximum balance {max} would be exceeded (balance {balance}, amount {amount})")]
    MaximumBalance { balance: Amount, max: Amount, amount: Amount },
    #[error(transparent)]
    Journal(#[from] journal::JournalWriteError),
    /// The settlement failed after it had changed a card (a key rolled, an interrupted transfer
    /// resolved): those changes stay on the cards and the error says so (issue 14 item 11).
    #[error("{source}; before that, this settlement {changes}")]
    AfterChanges { changes: Changes, source: Box<SettleError> },
}

impl SettleError {
    /// What stopped the settlement, without the changes it had made before.
    pub fn cause(&self) -> &SettleError {
        match self {
            SettleError::AfterChanges { source, .. } => source.cause(),
            e => e,
        }
    }
}

/// What a settlement changed on the cards before it stopped.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Changes {
    /// The transfer key rolled onto a card: which card, which key, how.
    pub key_roll: Option<RolledKey>,
    /// Interrupted transfers between the two cards resolved (refunded or completed).
    pub recovered: Vec<Recovery>,
}

/// A transfer key rolled onto one card of the settlement.
#[derive(Clone, Debug, Serialize)]
pub struct RolledKey {
    pub how: KeyRoll,
    pub card: Role,
    pub serial: CardSerial,
    pub transfer_key_id: Option<TransferKeyId>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.key_roll.is_none() && self.recovered.is_empty()
    }
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut said = Vec::new();
        if let Some(r) = &self.key_roll {
            let id = r.transfer_key_id.map(|k| k.to_string()).unwrap_or_else(|| "?".into());
            said.push(format!("rolled transfer key {id} onto the {} card {} ({:?} roll)", r.card, r.serial, r.how));
        }
        for r in &self.recovered {
            said.push(match r {
                Recovery::Refunded { payer, amount, .. } => {
                    format!("refunded an interrupted transfer of {amount} to card {payer}")
                }
                Recovery::Completed { payee, amount, .. } => {
                    format!("completed an interrupted transfer of {amount} to card {payee}")
                }
            });
        }
        write!(f, "{} (kept on the cards)", said.join(" and "))
    }
}

/// What the terminal may be told beyond the two cards.
#[derive(Clone, Debug, Default)]
pub struct SettleOptions {
    /// Print an APDU trace on stderr (headers, lengths, status, milliseconds; never data).
    pub verbose: bool,
    /// The issuer's newest policy (`policy publish`), pushed to both cards when newer than theirs. The
    /// terminal does not verify it: the cards do.
    pub policy: Option<crate::protocol::policy::Policy>,
    /// Settlement journal (`settle --journal FILE`): checked before any card is touched, one line
    /// appended per settlement that reached both cards, whatever its outcome.
    pub journal: Option<std::path::PathBuf>,
}

/// A summary of a card after settlement.
#[derive(Clone, Debug, Serialize)]
pub struct CardSummary {
    pub serial: CardSerial,
    pub transfer_key_id: Option<TransferKeyId>,
    pub balance: Amount,
}

/// The terminal's report (DESIGN.md §9 `settle --json` fields `key_roll`, `updated_card`, `amount`, `apdus`).
#[derive(Clone, Debug, Serialize)]
pub struct SettlementReport {
    pub key_roll: KeyRoll,
    /// Which card took a newer scheme policy before keys or value moved.
    pub policy_spread: Option<PolicySpread>,
    pub updated_card: Option<Role>,
    pub amount: Amount,
    pub apdus: usize,
    pub transfer_key_id: Option<TransferKeyId>,
    pub recovered: Vec<Recovery>,
    pub payer: CardSummary,
    pub payee: CardSummary,
}

/// One card in a settlement: its channel, its trace, and what it last said about itself.
pub(crate) struct Party<'a> {
    pub role: Role,
    pub channel: &'a mut dyn CardChannel,
    pub info: CardInfo,
    /// The reader or card failed an extended-length APDU in this settlement: the rest of it goes in
    /// short APDUs without asking again ([`Party::try_send_one`]).
    short_only: bool,
}

/// What one attempt at a single (extended-length) APDU came to ([`Party::attempt_one`]).
enum OneApdu {
    /// The card answered (any status but `6700`).
    Answered(ResponseApdu),
    /// The card did not run it: not tried (short APDUs only in this settlement), or `6700`.
    NotRun,
    /// It failed in transport: the card may have run it.
    MaybeRun,
}

impl<'a> Party<'a> {
    /// SELECT the application and read GET CARD INFO.
    fn connect(role: Role, channel: &'a mut dyn CardChannel, trace: &mut Trace) -> Result<Self, SettleError> {
        let mut p = Party { role, channel, info: CardInfo::blank(), short_only: false };
        p.send(trace, "SELECT", &Command::Select { aid: AID.to_vec() })?;
        p.refresh(trace)?;
        Ok(p)
    }

    /// GET CARD INFO, short form: everything but the certificate, which only a public-key roll or a
    /// revocation check needs (see [`Party::certificate`]).
    fn refresh(&mut self, trace: &mut Trace) -> Result<(), SettleError> {
        self.info = self.send_as(trace, "GET CARD INFO", &Command::GetCardInfo { certificate: false }, ())?;
        Ok(())
    }

    /// The card's certificate (claims 4, 6, 7), read with the full GET CARD INFO the first time, in one
    /// APDU where the reader takes extended length ([`Party::send_as_one`]): a public-key roll and a
    /// signed CREDIT count every APDU against the settlement budget (DESIGN.md §10).
    fn certificate(&mut self, trace: &mut Trace) -> Result<Option<Vec<u8>>, SettleError> {
        if self.info.certificate.is_none() && self.info.has_certificate {
            let full: CardInfo =
                self.send_as_one(trace, "GET CARD INFO", &Command::GetCardInfo { certificate: true }, ())?;
            if full.serial != self.info.serial {
                return Err(self.malformed("GET CARD INFO", "the card changed between two reads"));
            }
            self.info.certificate = full.certificate;
        }
        Ok(self.info.certificate.clone())
    }

    /// Send a command that changes nothing the card keeps (its session at most: GET CARD INFO, REQUEST
    /// UPDATE PERMISSION, GET TRANSFER KEY) as one APDU with extended length (ISO/IEC 7816-4 §5.1) for
    /// its data and its answer, so that a certificate going in or an envelope coming back costs one
    /// APDU instead of a command chain or GET RESPONSEs (issue 15), with the fallback of
    /// [`Party::try_send_one`]; a non-9000 status is an error, as in [`Party::send_as`].
    fn send_as_one<T: Wire>(
        &mut self,
        trace: &mut Trace,
        step: &'static str,
        cmd: &Command,
        context: T::Context,
    ) -> Result<T, SettleError> {
        let mut apdu = cmd.to_apdu();
        apdu.le = Some(65_536);
        let r = self.try_send_one(trace, step, cmd, &apdu)?;
        let data = self.accept(step, r)?;
        self.decode(step, &data, context)
    }

    /// Send `apdu` (`cmd`'s, its Le perhaps raised) as one APDU, extended length where it needs it,
    /// never chained. A reader or card without extended length fails it (a transport error, or
    /// `6700`): `cmd` then goes in short APDUs, chained, with GET RESPONSE, and so does every later
    /// one-APDU command of this settlement (one failed attempt per card, not one per command). Only for
    /// commands whose repeat is harmless when the first attempt did reach the card. The caller
    /// interprets the status.
    fn try_send_one(
        &mut self,
        trace: &mut Trace,
        step: &'static str,
        cmd: &Command,
        apdu: &CommandApdu,
    ) -> Result<ResponseApdu, SettleError> {
        match self.attempt_one(trace, apdu) {
            OneApdu::Answered(r) => Ok(r),
            OneApdu::NotRun | OneApdu::MaybeRun => self.try_send(trace, step, cmd),
        }
    }

    /// One attempt at `apdu` as a single APDU, unless this settlement already found the reader or card
    /// without extended length; a failed attempt marks it so (`short_only`). The callers decide
    /// what goes again in short APDUs: [`Party::try_send_one`] repeats anything, the key's install
    /// (`key_sync::install`) asks the card first when the attempt may have run.
    fn attempt_one(&mut self, trace: &mut Trace, apdu: &CommandApdu) -> OneApdu {
        if self.short_only {
            return OneApdu::NotRun;
        }
        let outcome = match crate::transport::exchange_extended(self.channel, trace, apdu) {
            Ok(r) if r.sw != StatusWord::WrongLength => return OneApdu::Answered(r),
            // `6700`: refused for its length, before the card read it.
            Ok(_) => OneApdu::NotRun,
            // The reader refused it, or the card ran it and its answer was lost: no telling which.
            Err(_) => OneApdu::MaybeRun,
        };
        self.short_only = true;
        outcome
    }

    /// Send a command; a non-9000 status is an error.
    fn send(&mut self, trace: &mut Trace, step: &'static str, cmd: &Command) -> Result<Vec<u8>, SettleError> {
        let r = self.try_send(trace, step, cmd)?;
        self.accept(step, r)
    }

    /// The data of a 9000 answer; any other status is an error.
    fn accept(&self, step: &'static str, r: ResponseApdu) -> Result<Vec<u8>, SettleError> {
        if r.sw == StatusWord::CounterpartBlocked {
            return Err(SettleError::Blocked { role: self.role, step });
        }
        if r.sw != StatusWord::Ok {
            return Err(SettleError::Refused { role: self.role, step, sw: r.sw });
        }
        Ok(r.data)
    }

    /// Send a command; a non-9000 status is an error, and so is an answer that does not decode as `T`.
    fn send_as<T: Wire>(
        &mut self,
        trace: &mut Trace,
        step: &'static str,
        cmd: &Command,
        context: T::Context,
    ) -> Result<T, SettleError> {
        let data = self.send(trace, step, cmd)?;
        self.decode(step, &data, context)
    }

    /// Decode an answer the caller got with [`Party::try_send`].
    fn decode<T: Wire>(&self, step: &'static str, data: &[u8], context: T::Context) -> Result<T, SettleError> {
        T::from_wire(data, context).map_err(|e| self.malformed(step, e.to_string()))
    }

    /// Send a command; the caller interprets the status word.
    fn try_send(&mut self, trace: &mut Trace, step: &'static str, cmd: &Command) -> Result<ResponseApdu, SettleError> {
        exchange(self.channel, trace, cmd).map_err(|source| SettleError::Transport {
            role: self.role,
            reader: self.channel.name(),
            step,
            source,
        })
    }

    fn malformed(&self, step: &'static str, why: impl Into<String>) -> SettleError {
        SettleError::Malformed { role: self.role, step, why: why.into() }
    }

    fn summary(&self) -> CardSummary {
        CardSummary { serial: self.info.serial, transfer_key_id: self.info.transfer_key_id, balance: self.info.balance }
    }
}

/// Settle `amount` from `payer` to `payee` (claims 10, 12, 14): read both cards, resolve interrupted
/// transfers between them, bring the older card to the newer transfer key, then move the value.
/// `amount` 0 only synchronises keys and recovers.
pub fn settle(
    payer: &mut dyn CardChannel,
    payee: &mut dyn CardChannel,
    amount: Amount,
    options: &SettleOptions,
) -> Result<SettlementReport, SettleError> {
    if let Some(path) = &options.journal {
        journal::check(path)?;
    }
    let mut seen = Seen::default();
    let result = settle_inner(payer, payee, amount, options, &mut seen);
    if let (Some(path), Some(payer), Some(payee)) = (&options.journal, seen.payer, seen.payee) {
        journal::append(path, &journal::record(payer, payee, amount, seen.transfer.as_ref(), &seen.recovered))?;
    }
    let changes = Changes { key_roll: seen.key_roll, recovered: seen.recovered };
    result.map_err(|e| if changes.is_empty() { e } else { SettleError::AfterChanges { changes, source: Box::new(e) } })
}

/// What a settlement got to, for its journal line, whether it finished or not.
#[derive(Default)]
struct Seen {
    payer: Option<CardSerial>,
    payee: Option<CardSerial>,
    transfer: Option<value::TransferRecord>,
    recovered: Vec<Recovery>,
    key_roll: Option<RolledKey>,
}

fn settle_inner(
    payer: &mut dyn CardChannel,
    payee: &mut dyn CardChannel,
    amount: Amount,
    options: &SettleOptions,
    seen: &mut Seen,
) -> Result<SettlementReport, SettleError> {
    let mut trace = Trace::verbose(options.verbose);
    let mut a = Party::connect(Role::Payer, payer, &mut trace)?;
    let mut b = Party::connect(Role::Payee, payee, &mut trace)?;
    (seen.payer, seen.payee) = (Some(a.info.serial), Some(b.info.serial));
    for p in [&a, &b] {
        if p.info.life_cycle != LifeCycle::Issued {
            let state = match p.info.life_cycle {
                LifeCycle::Blank => "blank",
                LifeCycle::Personalising => "still being personalised",
                LifeCycle::Issued => "issued",
            };
            return Err(SettleError::NotIssued { role: p.role, serial: p.info.serial, state });
        }
    }
    if a.info.serial == b.info.serial {
        return Err(SettleError::SameCard(a.info.serial));
    }
    let policy_spread = policy_spread::spread(&mut a, &mut b, options.policy.as_ref(), &mut trace)?;
    let mut recovered = recovery::resolve(&mut a, &mut b, &mut trace)?;
    recovered.extend(recovery::resolve(&mut b, &mut a, &mut trace)?);
    seen.recovered = recovered.clone();
    if !recovered.is_empty() {
        a.refresh(&mut trace)?;
        b.refresh(&mut trace)?;
    }
    let (key_roll, updated_card) = key_sync::synchronise(&mut a, &mut b, &mut trace)?;
    if let Some(card) = updated_card {
        let p = if card == Role::Payer { &a } else { &b };
        seen.key_roll =
            Some(RolledKey { how: key_roll, card, serial: p.info.serial, transfer_key_id: p.info.transfer_key_id });
    }
    let moved =
        if amount.0 > 0 { value::transfer(&mut a, &mut b, amount, &mut trace, &mut seen.transfer)? } else { Amount(0) };
    Ok(SettlementReport {
        key_roll,
        policy_spread,
        updated_card,
        amount: moved,
        apdus: trace.apdus,
        transfer_key_id: a.info.transfer_key_id,
        recovered,
        payer: a.summary(),
        payee: b.summary(),
    })
}
