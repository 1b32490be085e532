//! The personalisation script (DESIGN.md §4, issue "personalisation over PC/SC"):
//! SELECT, GET CARD INFO, INITIALIZE (blank cards), OPEN PERSO SESSION, sealed PERSO STORE items,
//! GENERATE KEY PAIR and certificate (public-key and hybrid profiles), LOCK.
//!
//! A card found half-written (life cycle "personalising") is resumed: the script derives its
//! personalisation key from the master and the serial the card reports, and writes every item again.

use crate::crypto::perso::{card_key, seal, session_key};
use crate::crypto::secret::SecretBytes;
use crate::crypto::{Secret16, TransferKey, UpdateKey};
use crate::domain::{Amount, CardSerial, Profile, TransferKeyId, TransferKeyIdLimit};
use crate::protocol::codec::Wire;
use crate::protocol::command::{Command, KeyBytes, PersoItem};
use crate::protocol::info::{CardInfo, LifeCycle};
use crate::protocol::instruction::Instruction;
use crate::protocol::perso::PersoPayload;
use crate::protocol::policy::{KeyAuthorisation, KeyKind};
use crate::protocol::response::{GeneratedPublicKey, PersoSessionOpened};
use crate::protocol::{AID, StatusWord};
use crate::transport::{CardChannel, Trace, TransportError, exchange};
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

/// Issues a card certificate for a public key the card generated (the back office's CA).
pub trait CertificateIssuer {
    fn issue(&self, serial: CardSerial, public_key_sec1: &[u8]) -> Result<Vec<u8>, String>;
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
}

/// What personalisation produced.
#[derive(Clone, Debug)]
pub struct PersoOutcome {
    pub serial: CardSerial,
    /// The card's certificate, for public-key and hybrid profiles.
    pub certificate: Option<Vec<u8>>,
    pub resumed: bool,
    pub apdus: usize,
}

struct Session<'a> {
    channel: &'a mut dyn CardChannel,
    trace: &'a mut Trace,
    serial: CardSerial,
    key: SecretBytes,
    counter: u32,
}

impl Session<'_> {
    fn sealed(
        &mut self,
        step: &'static str,
        ins: Instruction,
        p1: u8,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, PersoError> {
        let header = [ins.cla(), ins.code(), p1, 0];
        let sealed = seal(&self.key, self.serial, self.counter, header, plaintext);
        let cmd = match ins {
            Instruction::PersoStore => {
                Command::PersoStore { item: PersoItem::from_p1(p1).expect("script uses known items"), sealed }
            }
            Instruction::GenerateKeyPair => Command::GenerateKeyPair { sealed },
            Instruction::Lock => Command::Lock { sealed },
            _ => unreachable!("only sealed personalisation instructions"),
        };
        let r = send(self.channel, self.trace, step, &cmd)?;
        self.counter += 1;
        Ok(r)
    }

    fn store(&mut self, step: &'static str, payload: &PersoPayload) -> Result<(), PersoError> {
        let mut plaintext = Zeroizing::new(Vec::new());
        payload.encode(&mut plaintext);
        self.sealed(step, Instruction::PersoStore, payload.item() as u8, &plaintext).map(drop)
    }
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

fn key_bytes(key: &Secret16) -> KeyBytes {
    KeyBytes(*key.expose())
}

/// Read what card is in the channel (SELECT + GET CARD INFO).
pub fn read_card(channel: &mut dyn CardChannel, trace: &mut Trace) -> Result<CardInfo, PersoError> {
    send(channel, trace, "SELECT", &Command::Select { aid: AID.to_vec() })?;
    let info = send(channel, trace, "GET CARD INFO", &Command::GetCardInfo { certificate: false })?;
    CardInfo::from_wire(&info, ()).map_err(|_| PersoError::Malformed { step: "GET CARD INFO" })
}

/// Personalise the card in `channel` by `plan`. A blank card gets `plan.serial`; a half-written card
/// must already carry `plan.serial` (the batch runner reads it first and picks the matching plan).
pub fn personalise(
    channel: &mut dyn CardChannel,
    master: &Secret16,
    plan: &CardPlan,
    issuer: Option<&dyn CertificateIssuer>,
    verbose: bool,
) -> Result<PersoOutcome, PersoError> {
    let mut trace = Trace::verbose(verbose);
    if plan.transfer_keys.iter().all(|k| k.id != plan.selected) {
        return Err(PersoError::BadPlan(plan.serial, "the selected transfer key is not in the plan"));
    }
    if plan.profile.has_update_key() != plan.update_key.is_some() {
        return Err(PersoError::BadPlan(plan.serial, "update key present iff the profile uses one"));
    }
    if plan.profile.has_key_pair() && (plan.trust_anchor.is_none() || issuer.is_none()) {
        return Err(PersoError::BadPlan(plan.serial, "public-key profiles need a trust anchor and an issuer"));
    }
    let info = read_card(channel, &mut trace)?;
    let card_perso_key = card_key(master, plan.serial);
    let resumed = match info.life_cycle {
        LifeCycle::Issued => return Err(PersoError::AlreadyIssued(info.serial)),
        LifeCycle::Personalising if info.serial != plan.serial => {
            return Err(PersoError::WrongCard { expected: plan.serial, found: info.serial });
        }
        LifeCycle::Personalising => true,
        LifeCycle::Blank => {
            let init = Command::Initialize { serial: plan.serial, personalisation_key: key_bytes(&card_perso_key) };
            send(channel, &mut trace, "INITIALIZE", &init)?;
            false
        }
    };
    let opened = send(channel, &mut trace, "OPEN PERSO SESSION", &Command::OpenPersoSession)?;
    let challenge = match PersoSessionOpened::from_wire(&opened, ()) {
        Ok(PersoSessionOpened { serial, challenge }) if serial == plan.serial => challenge,
        _ => return Err(PersoError::Malformed { step: "OPEN PERSO SESSION" }),
    };
    let mut s = Session {
        channel,
        trace: &mut trace,
        serial: plan.serial,
        key: session_key(&card_perso_key, &challenge),
        counter: 0,
    };
    s.store("STORE profile", &PersoPayload::Profile(plan.profile))?;
    let word = &plan.issuer_word;
    s.store("STORE scheme key", &PersoPayload::SchemeKey(word.scheme_key.clone()))?;
    s.store("STORE policy", &PersoPayload::Policy(word.policy.clone()))?;
    for k in &plan.transfer_keys {
        let authorisation = word.authorisation(KeyKind::Transfer, k.id.0);
        s.store(
            "STORE transfer key",
            &PersoPayload::TransferKey { id: k.id, key: key_bytes(k.secret()), authorisation },
        )?;
    }
    if plan.profile == Profile::MultiKey {
        s.store("STORE selection", &PersoPayload::SelectedTransferKey(plan.selected))?;
    }
    if let Some(u) = &plan.update_key {
        let authorisation = word.authorisation(KeyKind::Update, u.id.0);
        s.store("STORE update key", &PersoPayload::UpdateKey { id: u.id, key: key_bytes(u.secret()), authorisation })?;
    }
    s.store("STORE limit", &PersoPayload::TransferKeyIdLimit(plan.limit))?;
    s.store("STORE balance", &PersoPayload::Balance { initial: plan.initial_balance, max: plan.max_balance })?;
    let mut certificate = None;
    if plan.profile.has_key_pair() {
        let anchor = plan.trust_anchor.as_ref().expect("checked above");
        s.store("STORE trust anchor", &PersoPayload::TrustAnchor(anchor.clone()))?;
        let public = s.sealed("GENERATE KEY PAIR", Instruction::GenerateKeyPair, 0, &[])?;
        let GeneratedPublicKey { sec1: public } = GeneratedPublicKey::from_wire(&public, ())
            .map_err(|_| PersoError::Malformed { step: "GENERATE KEY PAIR" })?;
        let issuer = issuer.expect("checked above");
        let cert =
            issuer.issue(plan.serial, &public).map_err(|why| PersoError::Certificate { serial: plan.serial, why })?;
        s.store("STORE certificate", &PersoPayload::CardCertificate(cert.clone()))?;
        certificate = Some(cert);
    }
    s.sealed("LOCK", Instruction::Lock, 0, &[])?;
    Ok(PersoOutcome { serial: plan.serial, certificate, resumed, apdus: trace.apdus })
}
