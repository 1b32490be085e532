//! The personalisation script, version 2 (DESIGN.md §10 points 1, 2; `docs/protocol.md`):
//!
//! 1. SELECT, GET CARD INFO (life cycle, serial of a half-written card, chip id);
//! 2. GET DATA `BF21`: the chip id and both factory certificates; the line validates them against the
//!    manufacturer roots the issuer trusts ([`crate::fab::verify`]) — an untrusted or self-signed
//!    certificate stops here;
//! 3. INTERNAL AUTHENTICATE: SCP11b key agreement ([`crate::crypto::scp11`]); the receipt proves the
//!    card holds the certified key-agreement key — a card relaying another card's certificate stops here;
//! 4. under SCP03 secure messaging from here on, every command encrypted and MACed, every response
//!    MACed (and encrypted): public-key profiles first ask GENERATE KEY PAIR and check the attestation
//!    (factory attestation key, over chip id, serial, public key and the session's transcript hash) —
//!    a missing, foreign or replayed attestation stops here;
//! 5. the back office binds chip id and serial for good ([`ChipRegister`]) — a chip that already
//!    belongs to a locked card, or to another serial, stops here;
//! 6. only then the first secret: PERSO STORE serial, profile, keys, limit, balance, trust anchor and
//!    the certificate the CA issued for the attested key; LOCK.
//!
//! A card found half-written (life cycle "personalising") is resumed in a new session: the chip keeps
//! its serial and every item is written again.

use crate::authority::AuthorityError;
use crate::crypto::attestation::{self, Attested};
use crate::crypto::card_key::PUBLIC_KEY_LEN;
use crate::crypto::scp11::{self, HostKeyAgreement, Scp11Error};
use crate::crypto::secure_messaging::{HostSession, SmError};
use crate::crypto::{Secret16, TransferKey, UpdateKey};
use crate::domain::{Amount, CardSerial, ChipId, Profile, TransferKeyId, TransferKeyIdLimit};
use crate::fab::{self, FactoryError, FactoryIdentity, TrustedRoot};
use crate::protocol::codec::Wire;
use crate::protocol::command::{Command, PersoItem};
use crate::protocol::info::{CardInfo, LifeCycle};
use crate::protocol::policy::{KeyAuthorisation, KeyKind};
use crate::protocol::response::{FactoryCredentials, GeneratedPublicKey};
use crate::protocol::{AID, CommandApdu, StatusWord};
use crate::transport::{CardChannel, Trace, TransportError, exchange, exchange_apdu};
use std::time::SystemTime;
use thiserror::Error;
use zeroize::Zeroizing;

/// What to write on one card.
#[derive(Clone, Debug)]
pub struct CardPlan {
    pub serial: CardSerial,
    pub profile: Profile,
    /// Single-key profiles: one key. Multi-key: every key to store (claim 8).
    pub transfer_keys: Vec<TransferKey>,
    /// The key in use: the only one, or the selected one.
    pub selected: TransferKeyId,
    pub update_key: Option<UpdateKey>,
    pub limit: TransferKeyIdLimit,
    pub initial_balance: Amount,
    pub max_balance: Amount,
    /// Issuer trust anchor (DER) for public-key and hybrid profiles.
    pub trust_anchor: Option<Vec<u8>>,
    /// The card's log-export MAC key (`crypto::mac::card_log_key` of the issuer's log master and the
    /// serial): the back office re-derives it to check the card's log exports.
    pub log_key: Secret16,
    /// The scheme key, policy and key authorisations the card must carry (DESIGN.md §10).
    pub issuer_word: IssuerWord,
}

/// What the issuer signed that every card carries (DESIGN.md §10 points 3–4): the scheme key's raw
/// public key, the newest policy and the authorisations of the plan's keys (wire forms).
#[derive(Clone, Debug, Default)]
pub struct IssuerWord {
    pub scheme_key: Vec<u8>,
    pub policy: Vec<u8>,
    pub authorisations: Vec<Vec<u8>>,
}

impl IssuerWord {
    /// The authorisation of key `kind`/`id`, or empty when the plan has none (a multi-key card's
    /// pending key).
    pub fn authorisation(&self, kind: KeyKind, id: u32) -> Vec<u8> {
        self.authorisations
            .iter()
            .find(|a| KeyAuthorisation::from_wire(a, ()).is_ok_and(|a| a.kind == kind && a.id == id))
            .cloned()
            .unwrap_or_default()
    }
}

/// A card key the card generated and attested, as the back office's CA receives it.
#[derive(Clone, Debug)]
pub struct AttestedKey {
    pub serial: CardSerial,
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// The session's transcript hash the attestation covers.
    pub transcript: [u8; 32],
    /// DER ECDSA by the factory attestation key ([`attestation`]).
    pub signature: Vec<u8>,
}

/// Issues a card certificate for a key the card generated (the back office's CA). Implementations
/// must certify only a key whose attestation verifies under `card`'s attestation key.
pub trait CertificateIssuer {
    fn issue(&self, card: &FactoryIdentity, key: &AttestedKey) -> Result<Vec<u8>, BackOfficeError>;

    /// The card `serial` was certified but its personalisation then failed (pulled before it stored the
    /// certificate or locked): every certificate still valid for it belongs to no working card and must
    /// stop being valid (issue 14 item 8). An issuer that records its certificates revokes them
    /// (RFC 5280 `cessationOfOperation`) and logs why; one that records nothing has nothing to withdraw.
    fn withdraw(&self, serial: CardSerial, why: &str) -> Result<(), BackOfficeError>;
}

/// Binds a chip to a serial for good (the back office's card register). Refuses a chip that already
/// has another serial or belongs to a locked card, and a serial another chip holds.
pub trait ChipRegister {
    fn assign(&self, card: &FactoryIdentity, serial: CardSerial) -> Result<(), BackOfficeError>;
}

/// Why the back office did not do its part of a personalisation ([`CertificateIssuer`],
/// [`ChipRegister`]). The two cases call for opposite actions, so they never share a string: a refusal
/// is about the card (set it aside; the line records it against the chip), a failure is about the back
/// office (fix it and run the same command again; nothing is said about the card, which got no secret
/// yet when the register fails).
#[derive(Debug, Error)]
pub enum BackOfficeError {
    /// The card is refused: its attestation does not verify, or the register binds its chip to another
    /// serial or an issued card, or its serial to another chip.
    #[error("{0}")]
    Refused(String),
    /// The back office could not answer (database, custody token, CA).
    #[error(transparent)]
    Failed(AuthorityError),
}

impl From<AuthorityError> for BackOfficeError {
    /// The register's rules refuse the card; every other authority error is the back office failing.
    fn from(e: AuthorityError) -> Self {
        match e {
            AuthorityError::ChipIssued { .. }
            | AuthorityError::ChipHasSerial { .. }
            | AuthorityError::ChipNotRegistered { .. }
            | AuthorityError::SerialHasChip { .. } => BackOfficeError::Refused(e.to_string()),
            e => BackOfficeError::Failed(e),
        }
    }
}

/// What the line trusts and who it asks.
pub struct Line<'a> {
    /// Manufacturer roots (`fab trust`, and the virtual manufacturer).
    pub roots: &'a [TrustedRoot],
    /// Accept the virtual manufacturer's cards: only for reference cards made to files.
    pub allow_virtual: bool,
    pub register: Option<&'a dyn ChipRegister>,
    pub issuer: Option<&'a dyn CertificateIssuer>,
    pub verbose: bool,
}

#[derive(Debug, Error)]
pub enum PersoError {
    #[error("card communication failed during {step}: {source}")]
    Transport { step: &'static str, source: TransportError },
    #[error("card refused {step} with status {sw}")]
    Refused { step: &'static str, sw: StatusWord },
    #[error("card answered {step} with malformed data")]
    Malformed { step: &'static str },
    #[error("card {0} is already issued (locked); personalisation is refused for good")]
    AlreadyIssued(CardSerial),
    #[error("half-written card {found} is not the card expected ({expected})")]
    WrongCard { expected: CardSerial, found: CardSerial },
    #[error("plan for card {0} is incomplete: {1}")]
    BadPlan(CardSerial, &'static str),
    #[error("certificate issuance failed for card {serial}: {why}")]
    Certificate { serial: CardSerial, why: String },
    /// The back office failed (not the card) during `step`: see [`BackOfficeError::Failed`].
    #[error("the back office failed during {step} of card {serial}: {source}")]
    BackOffice { step: &'static str, serial: CardSerial, source: Box<AuthorityError> },
    #[error("impostor refused before any secret: {0}")]
    Factory(FactoryError),
    #[error("impostor refused before any secret: the card has no factory credentials (status {0})")]
    NoFactoryCredentials(StatusWord),
    #[error("impostor refused before any secret: {0}")]
    KeyAgreement(Scp11Error),
    #[error("impostor refused before any secret: the key attestation {why}")]
    Attestation { why: &'static str },
    #[error("chip {chip} refused before any secret: {why}")]
    ChipRefused { chip: ChipId, why: String },
    /// A card that says it is `serial`, issued, fails to prove it holds that card's log key
    /// ([`authenticate_issued`]): a clone or an emulation, not the chip this run personalised.
    #[error("card {serial} says it is issued but cannot prove it holds the key the line gave that card")]
    Unproven { serial: CardSerial },
    #[error("secure messaging failed during {step}: {source}")]
    SecureMessaging { step: &'static str, source: SmError },
}

impl PersoError {
    /// For a card the line refused as an impostor or a reused chip: a stable code for the audit log's
    /// refusal record, and the chip id when known. `None` for every other failure.
    pub fn refusal_code(&self) -> Option<&'static str> {
        Some(match self {
            PersoError::Factory(e) => e.code(),
            PersoError::NoFactoryCredentials(_) => "no-factory-credentials",
            PersoError::KeyAgreement(Scp11Error::BadReceipt) => "bad-receipt",
            PersoError::KeyAgreement(_) => "bad-key-agreement",
            PersoError::Attestation { .. } => "bad-attestation",
            PersoError::ChipRefused { .. } => "chip-refused",
            PersoError::Unproven { .. } => "unproven-issued-card",
            _ => return None,
        })
    }
}

/// What personalisation produced.
#[derive(Clone, Debug)]
pub struct PersoOutcome {
    pub serial: CardSerial,
    pub chip_id: ChipId,
    /// The card's certificate, for public-key and hybrid profiles.
    pub certificate: Option<Vec<u8>>,
    pub resumed: bool,
    pub apdus: usize,
    /// The factory identity the channel authenticated (fingerprints recorded with the card).
    pub factory: FactoryIdentity,
}

fn send(
    channel: &mut dyn CardChannel,
    trace: &mut Trace,
    step: &'static str,
    cmd: &Command,
) -> Result<Vec<u8>, PersoError> {
    let r = exchange(channel, trace, cmd).map_err(|source| PersoError::Transport { step, source })?;
    if r.sw != StatusWord::Ok {
        return Err(PersoError::Refused { step, sw: r.sw });
    }
    Ok(r.data)
}

/// An open personalisation channel: commands protected with SCP03 secure messaging.
struct Secure<'a> {
    channel: &'a mut dyn CardChannel,
    trace: &'a mut Trace,
    sm: HostSession,
}

impl Secure<'_> {
    /// Protect `cmd`, send it, check and decrypt the response.
    fn send(&mut self, step: &'static str, cmd: &Command) -> Result<Zeroizing<Vec<u8>>, PersoError> {
        let plain = cmd.to_apdu();
        let p = self
            .sm
            .wrap(plain.cla, plain.ins, plain.p1, plain.p2, &plain.data)
            .map_err(|source| PersoError::SecureMessaging { step, source })?;
        let apdu = CommandApdu { cla: p.cla, ins: p.ins, p1: p.p1, p2: p.p2, data: p.data, le: Some(256) };
        let r =
            exchange_apdu(self.channel, self.trace, &apdu).map_err(|source| PersoError::Transport { step, source })?;
        let data = self
            .sm
            .unwrap(&r.data, r.sw.to_u16().to_be_bytes())
            .map_err(|source| PersoError::SecureMessaging { step, source })?;
        if r.sw != StatusWord::Ok {
            return Err(PersoError::Refused { step, sw: r.sw });
        }
        Ok(data)
    }

    fn store(&mut self, step: &'static str, item: PersoItem, data: &[u8]) -> Result<(), PersoError> {
        self.send(step, &Command::PersoStore { item, data: data.to_vec() }).map(drop)
    }
}

fn key_bytes(id: u32, key: &Secret16) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(id.to_be_bytes().to_vec());
    v.extend_from_slice(key.expose());
    v
}

/// Read what card is in the channel (SELECT + GET CARD INFO).
pub fn read_card(channel: &mut dyn CardChannel, trace: &mut Trace) -> Result<CardInfo, PersoError> {
    send(channel, trace, "SELECT", &Command::Select { aid: AID.to_vec() })?;
    let info = send(channel, trace, "GET CARD INFO", &Command::GetCardInfo { certificate: false })?;
    CardInfo::from_wire(&info, ()).map_err(|_| PersoError::Malformed { step: "GET CARD INFO" })
}

/// GET DATA `BF21`: the chip id and both factory certificates ([`FactoryCredentials`]).
pub fn read_factory_data(channel: &mut dyn CardChannel, trace: &mut Trace) -> Result<FactoryCredentials, PersoError> {
    let step = "GET DATA (factory)";
    let r =
        exchange(channel, trace, &Command::GetFactoryData).map_err(|source| PersoError::Transport { step, source })?;
    if r.sw != StatusWord::Ok {
        return Err(PersoError::NoFactoryCredentials(r.sw));
    }
    FactoryCredentials::from_wire(&r.data, ()).map_err(|_| PersoError::Malformed { step })
}

/// Personalise the card in `channel` by `plan`. A blank card gets `plan.serial`; a half-written card
/// must already carry `plan.serial` (the batch runner reads it first and picks the matching plan).
pub fn personalise(
    channel: &mut dyn CardChannel,
    line: &Line<'_>,
    plan: &CardPlan,
) -> Result<PersoOutcome, PersoError> {
    let mut trace = Trace::verbose(line.verbose);
    if plan.transfer_keys.iter().all(|k| k.id != plan.selected) {
        return Err(PersoError::BadPlan(plan.serial, "the selected transfer key is not in the plan"));
    }
    if plan.profile.has_update_key() != plan.update_key.is_some() {
        return Err(PersoError::BadPlan(plan.serial, "update key present iff the profile uses one"));
    }
    if plan.profile.has_key_pair() && (plan.trust_anchor.is_none() || line.issuer.is_none()) {
        return Err(PersoError::BadPlan(plan.serial, "public-key profiles need a trust anchor and an issuer"));
    }
    let info = read_card(channel, &mut trace)?;
    let resumed = match info.life_cycle {
        LifeCycle::Issued => return Err(PersoError::AlreadyIssued(info.serial)),
        LifeCycle::Personalising if info.serial != plan.serial => {
            return Err(PersoError::WrongCard { expected: plan.serial, found: info.serial });
        }
        LifeCycle::Personalising => true,
        LifeCycle::Blank => false,
    };
    // 2. Factory credentials, checked before the card is spoken to in confidence.
    let factory = read_factory_data(channel, &mut trace)?;
    let identity = fab::verify::verify(
        &factory.agreement_certificate,
        &factory.attestation_certificate,
        factory.chip_id,
        line.roots,
        SystemTime::now(),
        line.allow_virtual,
    )
    .map_err(PersoError::Factory)?;
    if info.chip_id.is_some_and(|c| c != identity.chip_id) {
        return Err(PersoError::Factory(FactoryError::ReportedChipMismatch {
            reported: info.chip_id.expect("checked"),
            certified: identity.chip_id,
        }));
    }
    // 3. SCP11b key agreement; the receipt proves the certified key-agreement key.
    let host = HostKeyAgreement::start().map_err(PersoError::KeyAgreement)?;
    let step = "INTERNAL AUTHENTICATE";
    let answer =
        send(channel, &mut trace, step, &Command::InternalAuthenticate { data: host.command_data().to_vec() })?;
    let established = host.finish(&identity.agreement_public, &answer).map_err(PersoError::KeyAgreement)?;
    let transcript = established.transcript;
    let mut s = Secure { channel, trace: &mut trace, sm: HostSession::new(established.keys, established.receipt) };
    // 4. Public-key profiles: the attested key pair, before anything is stored.
    let mut attested = None;
    if plan.profile.has_key_pair() {
        let step = "GENERATE KEY PAIR";
        let answer = s.send(step, &Command::GenerateKeyPair { serial: plan.serial })?;
        let generated = GeneratedPublicKey::from_wire(&answer, ()).map_err(|_| PersoError::Malformed { step })?;
        let (public_key, signature) = (generated.sec1, generated.attestation);
        if signature.is_empty() {
            return Err(PersoError::Attestation { why: "is missing" });
        }
        let what = Attested {
            chip_id: identity.chip_id,
            serial: plan.serial,
            public_key: &public_key,
            transcript: &transcript,
        };
        attestation::verify(&identity.attestation_public, &what, &signature).map_err(|_| PersoError::Attestation {
            why: "does not verify under the card's factory attestation key for this session",
        })?;
        attested = Some(AttestedKey { serial: plan.serial, public_key, transcript, signature });
    }
    // 5. Chip id <-> serial, for good.
    if let Some(register) = line.register {
        register.assign(&identity, plan.serial).map_err(|e| match e {
            BackOfficeError::Refused(why) => PersoError::ChipRefused { chip: identity.chip_id, why },
            BackOfficeError::Failed(source) => {
                PersoError::BackOffice { step: "chip register", serial: plan.serial, source: Box::new(source) }
            }
        })?;
    }
    // 6. Secrets, inside the channel only.
    s.store("STORE serial", PersoItem::Serial, &plan.serial.0)?;
    s.store("STORE profile", PersoItem::Profile, &[plan.profile.code()])?;
    // DESIGN.md §10 points 3-4: the scheme key and the newest policy before any key, since each key's
    // authorisation verifies under the one and names the other.
    let word = &plan.issuer_word;
    s.store("STORE scheme key", PersoItem::SchemeKey, &word.scheme_key)?;
    s.store("STORE policy", PersoItem::Policy, &word.policy)?;
    for k in &plan.transfer_keys {
        let mut item = key_bytes(k.id.0, k.secret());
        item.extend_from_slice(&word.authorisation(KeyKind::Transfer, k.id.0));
        s.store("STORE transfer key", PersoItem::TransferKey, &item)?;
    }
    if plan.profile == Profile::MultiKey {
        s.store("STORE selection", PersoItem::SelectedTransferKey, &plan.selected.0.to_be_bytes())?;
    }
    if let Some(u) = &plan.update_key {
        let mut item = key_bytes(u.id.0, u.secret());
        item.extend_from_slice(&word.authorisation(KeyKind::Update, u.id.0));
        s.store("STORE update key", PersoItem::UpdateKey, &item)?;
    }
    s.store("STORE limit", PersoItem::TransferKeyIdLimit, &plan.limit.0.to_be_bytes())?;
    s.store("STORE log key", PersoItem::LogKey, plan.log_key.expose())?;
    let mut bal = plan.initial_balance.0.to_be_bytes().to_vec();
    bal.extend_from_slice(&plan.max_balance.0.to_be_bytes());
    s.store("STORE balance", PersoItem::Balance, &bal)?;
    let mut certificate = None;
    if let Some(key) = attested {
        let anchor = plan.trust_anchor.as_ref().expect("checked above");
        s.store("STORE trust anchor", PersoItem::TrustAnchor, anchor)?;
        let issuer = line.issuer.expect("checked above");
        let cert = issuer.issue(&identity, &key).map_err(|e| match e {
            BackOfficeError::Refused(why) => PersoError::Certificate { serial: plan.serial, why },
            BackOfficeError::Failed(source) => {
                PersoError::BackOffice { step: "certificate issuance", serial: plan.serial, source: Box::new(source) }
            }
        })?;
        certificate = Some(cert);
    }
    // From here a certificate may exist for a card that is not finished: if the card does not take it
    // and lock, the certificate is withdrawn before the error is reported.
    // `Err((e, lock_sent))`.
    let finished = match &certificate {
        Some(cert) => s.store("STORE certificate", PersoItem::CardCertificate, cert),
        None => Ok(()),
    }
    .map_err(|e| (e, false))
    .and_then(|()| s.send("LOCK", &Command::Lock).map(drop).map_err(|e| (e, true)));
    match (finished, line.issuer) {
        (Ok(()), _) => {}
        // LOCK sent and no verified refusal (pulled, or an answer that did not verify): the card may be
        // locked with this certificate, so it is kept. Whoever sees the card again decides: the line
        // and the batch runner withdraw it before personalising a half-written card again, and the line
        // keeps it for a card that proves it is issued ([`authenticate_issued`]).
        (Err((e, true)), _) if !matches!(e, PersoError::Refused { .. }) => return Err(e),
        (Err((e, _)), Some(issuer)) if certificate.is_some() => return Err(withdraw(issuer, plan.serial, e)),
        (Err((e, _)), _) => return Err(e),
    }
    let apdus = s.trace.apdus;
    Ok(PersoOutcome { serial: plan.serial, chip_id: identity.chip_id, certificate, resumed, apdus, factory: identity })
}

/// A card found issued under `plan.serial` although the line never saw its LOCK answer (pulled at that
/// moment): is it the chip the line personalised? After LOCK the factory keys are erased, so the proof
/// is the log key the line sent that card inside the SCP11b channel: INTERNAL AUTHENTICATE `80 88 00 01`
/// with a fresh challenge, checked by [`crate::crypto::mac::check_card_authentication`]. A recorded
/// answer is worthless (the challenge is new), and no other card holds that serial's log key.
pub fn authenticate_issued(channel: &mut dyn CardChannel, plan: &CardPlan, verbose: bool) -> Result<(), PersoError> {
    use crate::protocol::response::CardAuthentication;
    let step = "INTERNAL AUTHENTICATE (issued card)";
    let mut trace = Trace::verbose(verbose);
    let challenge: crate::protocol::command::Challenge = crate::crypto::random::bytes()
        .map_err(|_| PersoError::BadPlan(plan.serial, "no randomness for a challenge"))?;
    let r = exchange(channel, &mut trace, &Command::AuthenticateIssued { challenge })
        .map_err(|source| PersoError::Transport { step, source })?;
    if r.sw != StatusWord::Ok {
        return Err(PersoError::Unproven { serial: plan.serial });
    }
    let answer = CardAuthentication::from_wire(&r.data, ()).map_err(|_| PersoError::Malformed { step })?;
    crate::crypto::mac::check_card_authentication(&plan.log_key, &plan.serial, &challenge, &answer.mac)
        .map_err(|_| PersoError::Unproven { serial: plan.serial })
}

/// Withdraw `serial`'s certificate after `e` stopped its personalisation, and hand `e` back; if the
/// withdrawal itself fails the card has a certificate it does not hold, which the error says.
fn withdraw(issuer: &dyn CertificateIssuer, serial: CardSerial, e: PersoError) -> PersoError {
    match issuer.withdraw(serial, &format!("personalisation did not finish: {e}")) {
        Ok(()) => e,
        Err(w) => PersoError::Certificate {
            serial,
            why: format!(
                "{e}; the certificate issued for it could not be withdrawn ({w}): revoke it with `keyroll cert revoke {serial}`"
            ),
        },
    }
}

/// The check every back-office CA applies before certifying a card key ([`CertificateIssuer`]): the
/// attestation verifies under the attestation key of the card the channel authenticated.
pub fn check_attestation(card: &FactoryIdentity, key: &AttestedKey) -> Result<(), BackOfficeError> {
    let what = Attested {
        chip_id: card.chip_id,
        serial: key.serial,
        public_key: &key.public_key,
        transcript: &key.transcript,
    };
    attestation::verify(&card.attestation_public, &what, &key.signature).map_err(|_| {
        BackOfficeError::Refused("the key attestation does not verify under the card's factory attestation key".into())
    })
}

/// Re-exported for callers that size buffers.
pub const INTERNAL_AUTHENTICATE_LEN: usize = scp11::COMMAND_DATA_LEN;
