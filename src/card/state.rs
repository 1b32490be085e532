//! The reference card's persistent state (what survives power-off) and its file format.
//!
//! Session state (challenges, personalisation sessions, chained data) lives in `session.rs` and is never
//! written: it dies with the power, as claims 2 and 9 require of the single-use random number.

use super::receipts::ReceiptWindow;
use crate::crypto::secret::SecretBytes;
use crate::crypto::{Secret16, TransferKey, UpdateKey};
use crate::domain::ChipId;
use crate::domain::{Amount, CardSerial, Profile, TransferKeyId, TransferKeyIdLimit, UpdateKeyId};
use crate::protocol::command::Nonce;
use crate::protocol::info::{CardInfo, LifeCycle, PendingEntry};
use crate::protocol::ledger::{self, CardLogExport, EntryKind, ExportEntry, OpenDebit, Totals};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use zeroize::Zeroizing;

/// Format tag of card files; bump when the layout changes incompatibly. Version 2 (factory credentials,
/// SCP11b personalisation) shares nothing with version 1, whose files are refused (DESIGN.md §10).
pub const FORMAT: &str = "keyroll-card/2";
/// The format tag of version 1 card files, recognised only to refuse them with a clear message.
pub const FORMAT_V1: &str = "keyroll-card/1";
/// Recently settled nonces remembered for idempotent CREDIT and ABORT (bounded: house rule 5).
pub const SETTLED_MEMORY: usize = 32;
/// Transaction log entries kept on the card (what one export carries).
pub const LOG_MEMORY: usize = ledger::MAX_EXPORT_ENTRIES;
/// Most transfer keys a multi-key card stores.
pub const MAX_TRANSFER_KEYS: usize = 16;

/// A key as the card stores it.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredKey {
    pub id: u32,
    #[serde(with = "crate::domain::serde_hex")]
    pub key: Secret16,
    /// The issuer's authorisation of this key (`protocol::policy::KeyAuthorisation`), verified when the
    /// key was stored; relayed with the key. `None` only for a multi-key card's not-yet-activated key,
    /// which is never selected or sent without one.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::domain::serde_hex::option")]
    pub authorisation: Option<Vec<u8>>,
    /// For a retained key: receipts numbered below this may have been handed out under it, so the
    /// payee keeps it while any of them is still in its receipt window (stateless receipts keep no
    /// record of which key an open receipt used). 0 for keys in use.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub receipts_before: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredKey {{ id: {} }}", self.id)
    }
}

impl StoredKey {
    pub fn transfer_key(&self) -> TransferKey {
        TransferKey::new(TransferKeyId(self.id), self.key.clone())
    }
    pub fn update_key(&self) -> UpdateKey {
        UpdateKey::new(UpdateKeyId(self.id), self.key.clone())
    }
}

/// A debit not yet confirmed or refunded (the payer's exception log, DESIGN.md §3).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingOut {
    #[serde(with = "crate::domain::serde_hex")]
    pub nonce: Nonce,
    pub payee: CardSerial,
    pub amount: Amount,
    pub payee_sequence: u32,
    pub payer_sequence: u32,
    pub transfer_key_id: TransferKeyId,
}

/// A receipt begun and neither credited nor aborted (the payee's side).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingIn {
    #[serde(with = "crate::domain::serde_hex")]
    pub nonce: Nonce,
    pub payer: CardSerial,
    pub amount: Amount,
    pub payee_sequence: u32,
    pub transfer_key_id: TransferKeyId,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Credited,
    Aborted,
}

/// A receipt that reached its end, remembered so a repeated CREDIT or ABORT gets the same answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settled {
    #[serde(with = "crate::domain::serde_hex")]
    pub nonce: Nonce,
    pub payer: CardSerial,
    pub amount: Amount,
    pub payee_sequence: u32,
    pub payer_sequence: u32,
    pub transfer_key_id: TransferKeyId,
    pub outcome: Outcome,
}

/// One line of the card's own transaction log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogEntry {
    pub sequence: u32,
    pub kind: LogKind,
    pub counterpart: CardSerial,
    pub amount: Amount,
    /// The payee's receipt sequence number of the transfer (0 for a key roll): with the payee's serial
    /// it names the transfer on both cards, which is what `reconcile` matches.
    #[serde(default)]
    pub receipt: u32,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogKind {
    Debit,
    Credit,
    Refund,
    KeyRoll,
    /// A pending debit moved to the non-blocking exception list (DEBIT needed its room).
    Exception,
    /// An issuer resolution refunded an open debit (`amount` went back to this card).
    Resolved,
    /// An issuer resolution closed an open debit as credited at the payee (nothing came back).
    Closed,
    /// The payee closed one of its receipts for good because an issuer resolution (refund or void)
    /// named it: it can never be credited.
    Abort,
}

/// Everything a card keeps across power cycles.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CardState {
    pub format: String,
    pub life_cycle: LifeCycle,
    pub serial: Option<CardSerial>,
    pub profile: Option<Profile>,
    /// The chip id the fab gave the card (public; GET CARD INFO reports it).
    pub chip_id: Option<ChipId>,
    /// Factory key pairs and certificates (DESIGN.md §10 point 1). The private keys are dropped at LOCK:
    /// an issued card never opens a personalisation channel again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factory: Option<FactoryKeys>,
    /// Stored transfer keys, ascending by id. Single-key profiles hold exactly one.
    pub transfer_keys: Vec<StoredKey>,
    /// Earlier transfer keys of a single-key card, kept only while a pending or settled transfer made
    /// under them may still need a MAC checked (recovery); never used for a new transfer.
    #[serde(default)]
    pub retained_keys: Vec<StoredKey>,
    /// The transfer key in use: the only one, or the selected one (claim 8).
    pub selected_transfer_key_id: Option<TransferKeyId>,
    pub update_key: Option<StoredKey>,
    pub transfer_key_id_limit: Option<TransferKeyIdLimit>,
    pub balance: Amount,
    pub max_balance: Amount,
    /// Transaction counter: incremented and saved before the effect it guards.
    pub sequence: u32,
    pub pending_out: Vec<PendingOut>,
    /// Version 1's per-receipt records: always empty now that receipts are stateless (kept so the
    /// field's readers see "nothing open"); see `receipts`.
    #[serde(default)]
    pub pending_in: Vec<PendingIn>,
    /// Version 1's settled-nonce memory: no longer written (see `receipts`).
    #[serde(default)]
    pub settled: VecDeque<Settled>,
    /// The payee side: stateless receipts (DESIGN.md §10 point 6).
    #[serde(default)]
    pub receipts: ReceiptWindow,
    /// Secret of the receipt nonce PRF, generated on the card at its first BEGIN RECEIVE; never leaves it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::domain::serde_hex::option")]
    pub receipt_secret: Option<Secret16>,
    /// Debits that needed to leave `pending_out` to make room (non-blocking exception list): still
    /// resolvable by CONFIRM or REFUND, or by an issuer resolution; counted as value in flight.
    #[serde(default)]
    pub exceptions: Vec<PendingOut>,
    /// Value put on the card at personalisation.
    #[serde(default)]
    pub issued: Amount,
    /// Running value totals (survive the bounded log).
    #[serde(default)]
    pub totals: Totals,
    /// Log entries dropped from the bounded log since personalisation.
    #[serde(default)]
    pub log_dropped: u32,
    /// The card's log-export MAC key (`crypto::mac::card_log_key`), stored through the personalisation
    /// channel (PERSO STORE `0A`) and kept after LOCK.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::domain::serde_hex::option")]
    pub log_key: Option<Secret16>,
    pub log: VecDeque<LogEntry>,
    /// The card's P-256 private scalar (claims 3, 5): never leaves the card.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::domain::serde_hex::option")]
    pub card_private_key: Option<SecretBytes>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::domain::serde_hex::option")]
    pub certificate: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::domain::serde_hex::option")]
    pub trust_anchor: Option<Vec<u8>>,
    /// The scheme signing key's raw public key (DESIGN.md §10 point 3), stored at personalisation.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::domain::serde_hex::option")]
    pub scheme_key: Option<Vec<u8>>,
    /// The newest scheme policy the card verified and adopted, as signed (relayed to other cards).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::domain::serde_hex::option")]
    pub policy: Option<Vec<u8>>,
    /// A time the card knows has passed (`card::policy::ClockFloor`): certificate expiry is judged
    /// against it, never against the host clock.
    #[serde(default)]
    pub clock_floor: super::policy::ClockFloor,
}

/// What the fab put on the card: the key-agreement key (SCP11b `SK.SD.ECKA`) and the attestation key,
/// 32-byte P-256 scalars, with their certificates (DER). Private keys never leave the card.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FactoryKeys {
    #[serde(with = "crate::domain::serde_hex::option")]
    pub agreement_key: Option<SecretBytes>,
    #[serde(with = "crate::domain::serde_hex::option")]
    pub attestation_key: Option<SecretBytes>,
    #[serde(with = "crate::domain::serde_hex::option")]
    pub agreement_certificate: Option<Vec<u8>>,
    #[serde(with = "crate::domain::serde_hex::option")]
    pub attestation_certificate: Option<Vec<u8>>,
}

impl std::fmt::Debug for FactoryKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FactoryKeys(<private keys redacted>)")
    }
}

/// Why a card file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("not a keyroll card file: {0}")]
    Parse(String),
    #[error("card file format {found:?} is not {FORMAT:?}")]
    Format { found: String },
    #[error(
        "a version 1 card file ({FORMAT_V1}): version 2 personalises only cards with factory credentials and shares nothing with version 1"
    )]
    Version1,
}

/// Initial capacity of [`CardState::encode`]'s buffer: a certified card's state file (certificates,
/// anchor, factory certificates, keys and receipt window) is about 5 KiB.
const ENCODE_CAPACITY: usize = 8 * 1024;

/// The first bytes of every card file keyroll writes: the self-described CBOR tag 55799 (RFC 8949
/// §3.4.6), which no JSON text begins with, so a reader tells the encodings apart by them.
pub const SELF_DESCRIBED_CBOR: [u8; 3] = [0xd9, 0xd9, 0xf7];

/// Decoding scratch space for CBOR strings (the longest byte string of a card state, a certificate,
/// is under 1 KiB); zeroized after use, since secrets pass through it.
const DECODE_SCRATCH: usize = 4096;

impl CardState {
    /// A card with no factory credentials: it cannot be personalised (no line trusts it). Tests use it
    /// as the empty starting point; real blanks come from [`CardState::blank_from_fab`].
    pub fn blank() -> Self {
        CardState {
            format: FORMAT.to_string(),
            life_cycle: LifeCycle::Blank,
            serial: None,
            profile: None,
            chip_id: None,
            factory: None,
            transfer_keys: vec![],
            retained_keys: vec![],
            selected_transfer_key_id: None,
            update_key: None,
            transfer_key_id_limit: None,
            balance: Amount(0),
            max_balance: Amount(0),
            sequence: 0,
            pending_out: vec![],
            pending_in: vec![],
            settled: VecDeque::new(),
            receipts: ReceiptWindow::default(),
            receipt_secret: None,
            exceptions: vec![],
            issued: Amount(0),
            totals: Totals::default(),
            log_dropped: 0,
            log_key: None,
            log: VecDeque::new(),
            card_private_key: None,
            certificate: None,
            trust_anchor: None,
            scheme_key: None,
            policy: None,
            clock_floor: Default::default(),
        }
    }

    /// The stored scheme key, if personalisation wrote a valid one.
    pub fn scheme_anchor(&self) -> Option<super::policy::SchemeAnchor> {
        super::policy::SchemeAnchor::new(self.scheme_key.as_deref()?).ok()
    }

    /// The adopted policy (verified when adopted; decoded here).
    pub fn held_policy(&self) -> Option<crate::protocol::policy::Policy> {
        use crate::protocol::codec::Wire;
        crate::protocol::policy::Policy::from_wire(self.policy.as_deref()?, ()).ok()
    }

    /// The adopted policy's number (0: none).
    pub fn policy_number(&self) -> u32 {
        self.held_policy().map_or(0, |p| p.number)
    }

    /// Whether the adopted policy blocks `serial`.
    pub fn blocks(&self, serial: CardSerial) -> bool {
        self.held_policy().is_some_and(|p| p.blocks(serial))
    }

    /// Whether the adopted policy says this card's generation is over: every transfer key the card could
    /// ever hold (ids up to its limit) is below the lowest one still alive. The issuer then prunes the
    /// generation's blocked-list entries (the list is bounded), so such a card must take and give no new
    /// value: otherwise a compromised card whose entry was pruned would be free again among its own
    /// generation's cards once they hold the pruned policy (DESIGN.md §10 point 4). Recovery of value
    /// already in flight stays open, as for a blocked counterpart.
    pub fn generation_over(&self) -> bool {
        match (self.held_policy(), self.transfer_key_id_limit) {
            (Some(p), Some(limit)) => limit.0 < p.min_transfer_key_id.0,
            _ => false,
        }
    }

    /// Whether the adopted policy still allows wrapping under update key `id`.
    pub fn allows_wrap_under(&self, id: UpdateKeyId) -> bool {
        self.held_policy().is_none_or(|p| p.allows_wrap_under(id))
    }

    /// A blank card as the fab makes it: chip id, the two factory private keys (32-byte scalars) and
    /// their certificates.
    pub fn blank_from_fab(
        chip_id: ChipId,
        agreement_key: SecretBytes,
        attestation_key: SecretBytes,
        agreement_certificate: Vec<u8>,
        attestation_certificate: Vec<u8>,
    ) -> Self {
        CardState {
            chip_id: Some(chip_id),
            factory: Some(FactoryKeys {
                agreement_key: Some(agreement_key),
                attestation_key: Some(attestation_key),
                agreement_certificate: Some(agreement_certificate),
                attestation_certificate: Some(attestation_certificate),
            }),
            ..CardState::blank()
        }
    }

    /// The card file: self-described CBOR (RFC 8949 §3.4.6) of the state, byte strings as bytes.
    ///
    /// The card writes its whole state at every change (house rule 3), up to five times in a settlement;
    /// as JSON with hex byte strings (9.3 KB for a certified card) the encoding alone was a tenth of a
    /// public-key roll (issue 15). CBOR carries the same fields by name, so fields added later with
    /// `serde(default)` still read, and JSON files of this format written before still open (and
    /// are written back as CBOR at the card's next change). `card show` is the human view.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        self.encode_into(&mut out);
        out
    }

    /// As [`CardState::encode`], into `out` (replacing what it held): the card encodes every write into
    /// one buffer it keeps, zeroized when the card is dropped, instead of allocating and zeroizing a
    /// new 8 KiB buffer at each of a roll's five writes. The bytes past the new length are the previous
    /// state's tail: the same secrets the card holds in memory anyway, never copied elsewhere.
    pub fn encode_into(&self, out: &mut Zeroizing<Vec<u8>>) {
        // Room for a certified card's file up front: fewer reallocations, each of which would leave an
        // unzeroized copy of the secrets in freed memory (the buffer replaced here is zeroized).
        if out.capacity() < ENCODE_CAPACITY {
            *out = Zeroizing::new(Vec::with_capacity(ENCODE_CAPACITY));
        }
        out.clear();
        out.extend_from_slice(&SELF_DESCRIBED_CBOR);
        ciborium::into_writer(self, &mut **out).expect("card state serializes into memory");
    }

    pub fn decode(b: &[u8]) -> Result<Self, StateError> {
        let s: CardState = match b.strip_prefix(&SELF_DESCRIBED_CBOR) {
            Some(mut cbor) => {
                let mut scratch = Zeroizing::new(vec![0u8; DECODE_SCRATCH]);
                let s = ciborium::from_reader_with_buffer(&mut cbor, &mut scratch)
                    .map_err(|e| StateError::Parse(e.to_string()))?;
                if !cbor.is_empty() {
                    return Err(StateError::Parse(format!("{} bytes after the card state", cbor.len())));
                }
                s
            }
            None => Self::decode_json(b)?,
        };
        if s.format != FORMAT {
            return Err(StateError::Format { found: s.format });
        }
        Ok(s)
    }

    /// A card file written as JSON: this format before its files became CBOR, or version 1 (refused by
    /// name, recognised by its format tag before anything else).
    fn decode_json(b: &[u8]) -> Result<Self, StateError> {
        // Parsed once: the format tag is read from the tree the state is then built from.
        let v: serde_json::Value = serde_json::from_slice(b).map_err(|e| StateError::Parse(e.to_string()))?;
        if v.get("format").and_then(|f| f.as_str()) == Some(FORMAT_V1) {
            return Err(StateError::Version1);
        }
        serde_json::from_value(v).map_err(|e| StateError::Parse(e.to_string()))
    }

    /// The transfer key in use.
    pub fn current_transfer_key(&self) -> Option<TransferKey> {
        let id = self.selected_transfer_key_id?;
        self.transfer_keys.iter().find(|k| k.id == id.0).map(StoredKey::transfer_key)
    }

    pub fn transfer_key(&self, id: TransferKeyId) -> Option<TransferKey> {
        self.transfer_keys.iter().find(|k| k.id == id.0).map(StoredKey::transfer_key)
    }

    /// A key for checking MACs of an existing transfer: a stored key or a retained one.
    pub fn key_of_transfer(&self, id: TransferKeyId) -> Option<TransferKey> {
        self.transfer_key(id).or_else(|| self.retained_keys.iter().find(|k| k.id == id.0).map(StoredKey::transfer_key))
    }

    /// Drop retained keys no pending or settled transfer refers to any more.
    pub fn prune_retained_keys(&mut self) {
        let used: Vec<u32> = self
            .pending_out
            .iter()
            .map(|p| p.transfer_key_id.0)
            .chain(self.exceptions.iter().map(|p| p.transfer_key_id.0))
            .chain(self.pending_in.iter().map(|p| p.transfer_key_id.0))
            .chain(self.settled.iter().map(|s| s.transfer_key_id.0))
            .collect();
        let floor = self.receipts.floor();
        self.retained_keys.retain(|k| used.contains(&k.id) || k.receipts_before > floor);
    }

    pub fn stored_ids(&self) -> Vec<TransferKeyId> {
        self.transfer_keys.iter().map(|k| TransferKeyId(k.id)).collect()
    }

    /// Value this card has sent but not yet seen confirmed or refunded.
    pub fn pending_out_total(&self) -> u64 {
        self.pending_out.iter().chain(&self.exceptions).map(|p| p.amount.0).sum()
    }

    pub fn pending_in_total(&self) -> u64 {
        self.pending_in.iter().map(|p| p.amount.0).sum()
    }

    /// What GET CARD INFO answers (public data only), with the certificate only when `certificate` (the
    /// full form). The held policy is decoded once for both fields that come from it.
    pub fn info(&self, certificate: bool) -> CardInfo {
        let multi = self.profile == Some(Profile::MultiKey);
        let policy = self.held_policy();
        CardInfo {
            serial: self.serial.unwrap_or_default(),
            life_cycle: self.life_cycle,
            profile: self.profile,
            transfer_key_id: self.selected_transfer_key_id,
            stored_transfer_key_ids: if multi { self.stored_ids() } else { vec![] },
            update_key_id: self.update_key.as_ref().map(|k| UpdateKeyId(k.id)),
            transfer_key_id_limit: self.transfer_key_id_limit,
            balance: self.balance,
            max_balance: self.max_balance,
            sequence: self.sequence,
            pending_out: self
                .pending_out
                .iter()
                .map(|p| (p, false))
                .chain(self.exceptions.iter().map(|p| (p, true)))
                .map(|(p, exception)| PendingEntry {
                    nonce: p.nonce,
                    counterpart: p.payee,
                    amount: p.amount,
                    payee_sequence: p.payee_sequence,
                    transfer_key_id: p.transfer_key_id,
                    exception,
                })
                .collect(),
            pending_in: self
                .pending_in
                .iter()
                .map(|p| PendingEntry {
                    nonce: p.nonce,
                    counterpart: p.payer,
                    amount: p.amount,
                    payee_sequence: p.payee_sequence,
                    transfer_key_id: p.transfer_key_id,
                    exception: false,
                })
                .collect(),
            certificate: if certificate { self.certificate.clone() } else { None },
            has_certificate: self.certificate.is_some(),
            chip_id: self.chip_id,
            policy_number: policy.as_ref().map_or(0, |p| p.number),
            min_wrap_update_key_id: policy.as_ref().map_or(UpdateKeyId(1), |p| p.min_wrap_update_key_id),
            clock_floor: self.clock_floor.0,
        }
    }

    pub fn push_log(&mut self, kind: LogKind, counterpart: CardSerial, amount: Amount, receipt: u32) {
        if self.log.len() >= LOG_MEMORY {
            self.log.pop_front();
            self.log_dropped = self.log_dropped.saturating_add(1);
        }
        self.log.push_back(LogEntry { sequence: self.sequence, kind, counterpart, amount, receipt });
    }

    /// The card's log export for the back office (`rollout::reconcile`), answering `challenge`, MAC'd
    /// under its log key (EXPORT LOG's answer; the back office calls it on a card file it reads itself).
    /// `None` before personalisation gave the card its key.
    pub fn export_log(&self, challenge: &[u8; 16]) -> Option<CardLogExport> {
        let key = self.log_key.as_ref()?;
        let kind = |k: LogKind| match k {
            LogKind::Debit => EntryKind::Debit,
            LogKind::Credit => EntryKind::Credit,
            LogKind::Refund => EntryKind::Refund,
            LogKind::KeyRoll => EntryKind::KeyRoll,
            LogKind::Exception => EntryKind::Exception,
            LogKind::Resolved => EntryKind::Resolved,
            LogKind::Closed => EntryKind::Closed,
            LogKind::Abort => EntryKind::Abort,
        };
        let open = |p: &PendingOut, exception| OpenDebit {
            payee: p.payee,
            receipt: p.payee_sequence,
            amount: p.amount,
            exception,
            payer_sequence: p.payer_sequence,
        };
        let mut e = CardLogExport {
            format: ledger::CARD_LOG_FORMAT.into(),
            serial: self.serial?,
            issued: self.issued,
            balance: self.balance,
            totals: self.totals,
            dropped: self.log_dropped,
            entries: self
                .log
                .iter()
                .map(|l| ExportEntry {
                    sequence: l.sequence,
                    kind: kind(l.kind),
                    counterpart: l.counterpart,
                    amount: l.amount,
                    receipt: l.receipt,
                })
                .collect(),
            open_debits: self
                .pending_out
                .iter()
                .map(|p| open(p, false))
                .chain(self.exceptions.iter().map(|p| open(p, true)))
                .collect(),
            receipt_floor: self.receipts.floor(),
            receipt_next: self.receipts.next(),
            challenge: *challenge,
            mac: [0; 16],
        };
        e.mac = crate::crypto::mac::cmac(key, &[&e.mac_input()]);
        Some(e)
    }

    pub fn push_settled(&mut self, s: Settled) {
        if self.settled.len() >= SETTLED_MEMORY {
            self.settled.pop_front();
        }
        self.settled.push_back(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state with something in every kind of field: secrets, certificates, keys, log, factory data.
    fn sample() -> CardState {
        let mut s = CardState::blank_from_fab(
            ChipId([1, 2, 3, 4, 5, 6, 7, 8]),
            SecretBytes::new(vec![0x11; 32]),
            SecretBytes::new(vec![0x22; 32]),
            vec![0x30, 0x82, 0x01, 0x00],
            vec![0x30, 0x81, 0x7f],
        );
        s.life_cycle = LifeCycle::Issued;
        s.serial = Some(CardSerial([0x4b, 0x52, 0, 0, 0, 0, 0, 9]));
        s.transfer_keys = vec![StoredKey {
            id: 3,
            key: Secret16::new([0x33; 16]),
            authorisation: Some(vec![9; 70]),
            receipts_before: 0,
        }];
        s.selected_transfer_key_id = Some(TransferKeyId(3));
        s.balance = Amount(1234);
        s.receipt_secret = Some(Secret16::new([0x44; 16]));
        s.log_key = Some(Secret16::new([0x55; 16]));
        s.card_private_key = Some(SecretBytes::new(vec![0x66; 32]));
        s.certificate = Some(vec![0xAB; 490]);
        s.trust_anchor = Some(vec![0xCD; 465]);
        s.push_log(LogKind::Credit, CardSerial([0x4b, 0x52, 0, 0, 0, 0, 0, 1]), Amount(5), 7);
        s
    }

    #[test]
    fn a_card_file_is_self_described_cbor_and_reads_back_the_same_state() {
        let s = sample();
        let file = s.encode();
        assert_eq!(file[..3], SELF_DESCRIBED_CBOR);
        assert_eq!(CardState::decode(&file).unwrap(), s);
        // Byte strings are bytes: the secret is in the file as itself, never as hex text.
        assert!(file.windows(16).any(|w| w == [0x44; 16]));
        assert!(!file.windows(32).any(|w| w == hex::encode([0x44; 16]).as_bytes()));
        // Little more than half the size of the JSON form it replaced.
        let json = serde_json::to_vec_pretty(&s).unwrap();
        assert!(file.len() * 10 < json.len() * 6, "CBOR {} bytes, JSON {}", file.len(), json.len());
    }

    /// The card encodes every write into one buffer it keeps: a shorter state after a longer one is
    /// exactly its own encoding (the longer one's tail is not part of the record).
    #[test]
    fn encoding_into_a_used_buffer_gives_the_same_record() {
        let long = sample();
        let mut short = sample();
        short.certificate = None;
        short.trust_anchor = None;
        let mut buffer = zeroize::Zeroizing::new(Vec::new());
        long.encode_into(&mut buffer);
        assert_eq!(buffer[..], long.encode()[..]);
        let capacity = buffer.capacity();
        short.encode_into(&mut buffer);
        assert_eq!(buffer[..], short.encode()[..]);
        assert_eq!(CardState::decode(&buffer).unwrap(), short);
        assert_eq!(buffer.capacity(), capacity, "the buffer is reused, not replaced");
    }

    /// Card files of this format written as JSON (before the card wrote CBOR) still open; the card
    /// writes CBOR at its next change.
    #[test]
    fn a_json_card_file_of_this_format_still_reads() {
        let s = sample();
        let json = serde_json::to_vec_pretty(&s).unwrap();
        let read = CardState::decode(&json).unwrap();
        assert_eq!(read, s);
        assert_eq!(read.encode()[..3], SELF_DESCRIBED_CBOR);
        let v1 = br#"{"format":"keyroll-card/1","life_cycle":"issued"}"#;
        assert!(matches!(CardState::decode(v1), Err(StateError::Version1)));
    }

    /// A card file cut short anywhere, or with bytes after the state, or with a byte string of the
    /// wrong length, is refused with an error, never a panic and never a state.
    #[test]
    fn a_damaged_card_file_is_refused() {
        let file = sample().encode();
        for n in 0..file.len() {
            assert!(CardState::decode(&file[..n]).is_err(), "cut at {n}");
        }
        let mut longer = file.to_vec();
        longer.push(0);
        assert!(matches!(CardState::decode(&longer), Err(StateError::Parse(m)) if m.contains("after")));
        // The 16-byte receipt secret, one byte short (and the map header's length unchanged).
        let short = {
            let mut s = sample();
            s.receipt_secret = None;
            let mut v = ciborium::Value::serialized(&s).unwrap();
            if let ciborium::Value::Map(m) = &mut v {
                m.push((ciborium::Value::Text("receipt_secret".into()), ciborium::Value::Bytes(vec![0x44; 15])));
            }
            let mut out = SELF_DESCRIBED_CBOR.to_vec();
            ciborium::into_writer(&v, &mut out).unwrap();
            out
        };
        assert!(matches!(CardState::decode(&short), Err(StateError::Parse(m)) if m.contains("16-byte")));
    }
}
