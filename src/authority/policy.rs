//! The issuer's signed word (DESIGN.md §10 points 3–5), back-office side: the scheme signing key,
//! key authorisations and the scheme policy. Byte layouts are in `protocol::policy`; what a card
//! does with them is in `card::policy`.
//!
//! - **Scheme key.** Created with the database (or, for a database from before schema 4, the first
//!   time it is needed), certified by the issuer root, its secret age-encrypted to the custodians, its
//!   scheme id recorded in the signed audit log; every read for a decision checks the row against
//!   that record.
//! - **Authorisations** are signed when a key version becomes active (`init`, `key new` without
//!   `--pending`, `key activate`), never when a pending key is created: a pending key that leaks is
//!   not yet authorised. Each names the newest policy number as `min_policy`, so the policy blocking a
//!   compromised card reaches a card before the key that replaces its generation's.
//! - **Policies** are numbered from 1, each naming the hash of its predecessor. A new one is signed
//!   by `policy block` and `cert revoke` (a blocked card), `policy compromise update` (wrapping closed
//!   under that update key and every older one), and `policy publish` when the key states changed what
//!   the policy says. Blocked entries leave only with their dead generation (limit below the lowest
//!   live transfer key id); the list is bounded by [`MAX_BLOCKED`].
//! - **Time.** Every `signed_at` is the back office's clock in Unix seconds; the signer refuses one
//!   earlier than the last it signed or later than its clock plus [`SIGNING_SKEW`].

use super::ca::{self, CaKey, ValidityPeriod};
use super::keys::{self, KeyKind as RowKind, KeyState};
use super::reconciliations::{self, ResolveBasis, ResolveCheck};
use super::store::{OptionalExtension, Store, params};
use super::{Authority, AuthorityError, Unlocked, custody, now};
use crate::crypto::Secret16;
use crate::crypto::scheme_key::{self, PUBLIC_KEY_LEN, SchemeId, SchemePublicKey, SchemeSigningKey};
use crate::domain::{CardSerial, TransferKeyId, TransferKeyIdLimit, UpdateKeyId};
use crate::protocol::codec::Wire;
use crate::protocol::policy::{
    BlockedCard, KeyAuthorisation, KeyKind, MAX_BLOCKED, MAX_RESOLUTIONS, Policy, Resolution, ResolutionOutcome,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far ahead of its own clock the signer accepts a `signed_at`: five minutes.
pub const SIGNING_SKEW: u64 = 300;
/// Name of the scheme signing key in the `secrets` table.
pub const SCHEME_SECRET: &str = "scheme-signing-key";
/// Validity of the scheme key's certificate: 20 years, like the root.
const SCHEME_VALIDITY: Duration = Duration::from_secs(20 * 365 * 86400);
const BACKDATE: Duration = Duration::from_secs(3600);

/// The back office's clock, Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A Unix time as RFC 3339 (UTC, seconds).
pub fn rfc3339(t: u64) -> String {
    der::DateTime::from_unix_duration(Duration::from_secs(t)).map(|d| d.to_string()).unwrap_or_else(|_| t.to_string())
}

/// The signer's time rule (DESIGN.md §10 point 5): never earlier than the last `signed_at`, never later
/// than the clock plus [`SIGNING_SKEW`].
pub fn check_signed_at(last: Option<u64>, signed_at: u64, clock: u64) -> Result<(), AuthorityError> {
    if let Some(last) = last
        && signed_at < last
    {
        return Err(AuthorityError::SigningTime(format!(
            "signed_at {} is earlier than the last signature's {}",
            rfc3339(signed_at),
            rfc3339(last)
        )));
    }
    if signed_at > clock.saturating_add(SIGNING_SKEW) {
        return Err(AuthorityError::SigningTime(format!(
            "signed_at {} is more than five minutes after this machine's clock ({})",
            rfc3339(signed_at),
            rfc3339(clock)
        )));
    }
    Ok(())
}

fn wire_kind(k: RowKind) -> KeyKind {
    match k {
        RowKind::Transfer => KeyKind::Transfer,
        RowKind::Update => KeyKind::Update,
    }
}

/// The scheme key as recorded.
#[derive(Clone, Debug)]
pub struct SchemeRecord {
    pub public_key: [u8; PUBLIC_KEY_LEN],
    pub scheme_id: SchemeId,
    pub certificate_der: Vec<u8>,
    /// The same key parsed once, to verify the policies and authorisations it signed.
    verifier: SchemePublicKey,
}

impl SchemeRecord {
    pub fn verifier(&self) -> &SchemePublicKey {
        &self.verifier
    }
}

/// The scheme id the signed audit log recorded when the scheme key was made (in `init`'s entry or a
/// `scheme key` entry), if any.
fn logged_scheme_id(conn: &Store) -> Result<Option<String>, AuthorityError> {
    let details: Vec<String> = conn
        .prepare("SELECT detail FROM audit_log WHERE action IN ('init', 'scheme key') ORDER BY id")?
        .query_map(params![], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(details
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .find_map(|v| v["scheme_id"].as_str().map(str::to_string)))
}

/// The scheme key row, checked: a valid P-256 key whose scheme id is the stored one and the one the
/// audit log recorded. `None` for a database from before schema 4 that never made one.
pub fn scheme(conn: &Store) -> Result<Option<SchemeRecord>, AuthorityError> {
    let row: Option<(Vec<u8>, Vec<u8>, Vec<u8>)> = conn
        .query_row("SELECT public_key, scheme_id, certificate_der FROM scheme_key WHERE id = 1", params![], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((public, id, certificate_der)) = row else { return Ok(None) };
    let bad =
        |why: &str| AuthorityError::BadRow { table: "scheme_key", row: 1, why: format!("the scheme key record {why}") };
    let public_key: [u8; PUBLIC_KEY_LEN] = public.try_into().map_err(|_| bad("holds no P-256 public key"))?;
    let verifier = SchemePublicKey::new(&public_key).map_err(|_| bad("holds no P-256 public key"))?;
    let scheme_id = *verifier.id();
    if id != scheme_id {
        return Err(bad("does not match its own public key"));
    }
    if logged_scheme_id(conn)?.as_deref() != Some(hex::encode(scheme_id).as_str()) {
        return Err(bad("is not the one the audit log recorded"));
    }
    Ok(Some(SchemeRecord { public_key, scheme_id, certificate_der, verifier }))
}

/// Every policy, oldest first, each verified under the scheme key and checked to follow its
/// predecessor (number, hash, signing time).
pub fn policies(conn: &Store, scheme: &SchemeRecord) -> Result<Vec<Policy>, AuthorityError> {
    let rows: Vec<(u32, Vec<u8>)> = conn
        .prepare("SELECT number, policy FROM policies ORDER BY number")?
        .query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut out: Vec<Policy> = Vec::with_capacity(rows.len());
    for (number, bytes) in rows {
        let p = Policy::verified(&bytes, scheme.verifier()).map_err(|e| AuthorityError::BadRow {
            table: "policies",
            row: number as i64,
            why: e.to_string(),
        })?;
        let follows = match out.last() {
            None => p.number == 1,
            Some(prev) => p.number == prev.number + 1 && p.previous == prev.hash() && p.signed_at >= prev.signed_at,
        };
        if p.number != number || !follows {
            return Err(AuthorityError::BadRow {
                table: "policies",
                row: number as i64,
                why: "does not follow its predecessor".into(),
            });
        }
        out.push(p);
    }
    Ok(out)
}

/// The newest policy (verified), if any.
pub fn newest_policy(conn: &Store, scheme: &SchemeRecord) -> Result<Option<Policy>, AuthorityError> {
    Ok(policies(conn, scheme)?.pop())
}

/// The stored authorisation of a key version (verified), if it was signed.
pub fn authorisation(
    conn: &Store,
    scheme: &SchemeRecord,
    kind: RowKind,
    id: u32,
) -> Result<Option<KeyAuthorisation>, AuthorityError> {
    let bytes: Option<Vec<u8>> = conn
        .query_row(
            "SELECT authorisation FROM key_authorisations WHERE kind = ?1 AND key_id = ?2",
            params![kind.name(), id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(bytes) = bytes else { return Ok(None) };
    let a = KeyAuthorisation::verified(&bytes, scheme.verifier()).map_err(|e| AuthorityError::BadRow {
        table: "key_authorisations",
        row: id as i64,
        why: format!("authorisation of {} key {id}: {e}", kind.name()),
    })?;
    if a.kind != wire_kind(kind) || a.id != id {
        return Err(AuthorityError::BadRow {
            table: "key_authorisations",
            row: id as i64,
            why: format!("the authorisation row of {} key {id} is another key's", kind.name()),
        });
    }
    Ok(Some(a))
}

/// The latest `signed_at` of anything the scheme key signed.
fn last_signed_at(conn: &Store) -> Result<Option<u64>, AuthorityError> {
    let a: Option<i64> = conn.query_row("SELECT max(signed_at) FROM key_authorisations", params![], |r| r.get(0))?;
    let p: Option<i64> = conn.query_row("SELECT max(signed_at) FROM policies", params![], |r| r.get(0))?;
    Ok(a.max(p).map(|v| v as u64))
}

/// Create and certify the scheme key (inside the caller's transaction). The caller records the
/// returned scheme id in the audit log.
pub(super) fn create_scheme(
    conn: &Store,
    sealer: &custody::Sealer,
    ca_key: &CaKey,
    root_der: &[u8],
    in_token: Option<SchemeSigningKey>,
) -> Result<SchemeSigningKey, AuthorityError> {
    let key = match in_token {
        Some(k) => k,
        None => SchemeSigningKey::generate()?,
    };
    let t = SystemTime::now();
    let validity = ValidityPeriod { not_before: t - BACKDATE, not_after: t + SCHEME_VALIDITY };
    let cert = ca::issue_scheme_certificate(ca_key, root_der, &key.public_key_sec1(), validity)?;
    // A key in a token stays there; one made here is sealed.
    if let Some(scalar) = key.to_bytes() {
        conn.execute(
            "INSERT INTO secrets (name, ciphertext) VALUES (?1, ?2)",
            params![SCHEME_SECRET, sealer.seal(scalar.expose())?],
        )?;
    }
    conn.execute(
        "INSERT INTO scheme_key (id, public_key, scheme_id, certificate_der, created_at) VALUES (1, ?1, ?2, ?3, ?4)",
        params![key.public_key_sec1().to_vec(), key.scheme_id().to_vec(), cert, now()],
    )?;
    Ok(key)
}

/// Sign and store the authorisation of key `kind`/`id` (inside the caller's transaction). Returns the
/// audit detail to record.
pub(super) fn sign_authorisation(
    conn: &Store,
    signer: &SchemeSigningKey,
    kind: RowKind,
    id: u32,
    key: &Secret16,
    clock: u64,
) -> Result<serde_json::Value, AuthorityError> {
    check_signed_at(last_signed_at(conn)?, clock, clock)?;
    let min_policy: u32 = conn.query_row("SELECT coalesce(max(number), 0) FROM policies", params![], |r| r.get(0))?;
    let scheme_id = signer.scheme_id();
    let wk = wire_kind(kind);
    let mut a = KeyAuthorisation {
        scheme_id,
        kind: wk,
        id,
        commitment: scheme_key::key_commitment(&scheme_id, wk.code(), id, key),
        signed_at: clock,
        min_policy,
        signature: [0; 64],
    };
    a.signature = signer.sign(&a.body())?;
    let bytes = a.to_wire();
    conn.execute(
        "INSERT INTO key_authorisations (kind, key_id, authorisation, signed_at) VALUES (?1, ?2, ?3, ?4)",
        params![kind.name(), id, bytes, clock as i64],
    )?;
    Ok(serde_json::json!({
        "kind": kind.name(), "id": id, "signed_at": rfc3339(clock), "min_policy": min_policy,
        "sha256": hex::encode(Sha256::digest(&bytes)),
    }))
}

/// What a new policy changes.
#[derive(Clone, Copy, Debug, Default)]
pub struct PolicyChange {
    /// Block this card.
    pub block: Option<BlockedCard>,
    /// Close wrapping under this update key id and every older one.
    pub close_update_key: Option<UpdateKeyId>,
    /// Resolve one open debit (DESIGN.md §10 point 6).
    pub resolve: Option<Resolution>,
}

/// The content of the next policy (unsigned), or `None` when it would say what `prev` says. Pure: the
/// rules of DESIGN.md §10 point 4 on their own. `lowest_live` is the lowest active transfer key id.
pub fn next_policy(
    prev: Option<&Policy>,
    scheme_id: SchemeId,
    change: PolicyChange,
    lowest_live: TransferKeyId,
    signed_at: u64,
) -> Result<Option<Policy>, AuthorityError> {
    let min_transfer_key_id = prev.map_or(lowest_live, |p| p.min_transfer_key_id.max(lowest_live));
    let mut min_wrap = prev.map_or(UpdateKeyId(1), |p| p.min_wrap_update_key_id);
    if let Some(closed) = change.close_update_key {
        min_wrap = min_wrap.max(UpdateKeyId(closed.0.saturating_add(1)));
    }
    let mut blocked: Vec<BlockedCard> = prev.map(|p| p.blocked.clone()).unwrap_or_default();
    if let Some(b) = change.block
        && let Err(at) = blocked.binary_search_by(|e| e.serial.cmp(&b.serial))
    {
        blocked.insert(at, b);
    }
    // Entries of dead generations leave the list (every card can check this rule).
    blocked.retain(|e| e.limit.0 >= min_transfer_key_id.0);
    if blocked.len() > MAX_BLOCKED {
        return Err(AuthorityError::PolicyFull { max: MAX_BLOCKED });
    }
    let resolutions = next_resolutions(prev.map_or(&[][..], |p| &p.resolutions), change.resolve)?;
    if let Some(p) = prev
        && p.blocked == blocked
        && p.min_wrap_update_key_id == min_wrap
        && p.min_transfer_key_id == min_transfer_key_id
        && p.resolutions == resolutions
    {
        return Ok(None);
    }
    Ok(Some(Policy {
        scheme_id,
        number: prev.map_or(1, |p| p.number + 1),
        previous: prev.map_or([0; 32], |p| p.hash()),
        signed_at,
        min_wrap_update_key_id: min_wrap,
        min_transfer_key_id,
        blocked,
        resolutions,
        signature: [0; 64],
    }))
}

/// The next policy's resolutions: the previous ones plus `new`, the newest [`MAX_RESOLUTIONS`] kept
/// (a policy lists them oldest signed first). A resolution already carried is not added again; one
/// naming the same debit with another outcome or other fields is refused (the issuer would contradict
/// itself). Dropping the oldest only delays those holders: `reconcile` still lists their debits, and
/// resolving again carries them again; a card never applies one twice (the debit is gone).
pub fn next_resolutions(prev: &[Resolution], new: Option<Resolution>) -> Result<Vec<Resolution>, AuthorityError> {
    let mut out: Vec<Resolution> = prev.to_vec();
    let Some(r) = new else { return Ok(out) };
    if let Some(i) = out.iter().position(|o| o.key() == r.key()) {
        let old = &out[i];
        if *old == r {
            return Ok(out);
        }
        // A void is the first step of a refund (the payee closes the receipt, the payer waits): the same
        // debit may then be refunded or closed as credited, and the newer word replaces the void. A
        // payee that already adopted the void keeps its receipt closed.
        if old.outcome == ResolutionOutcome::Void
            && r.outcome != ResolutionOutcome::Void
            && (Resolution { outcome: r.outcome, ..*old }) == r
        {
            out.remove(i);
            out.push(r);
            return Ok(out);
        }
        let old = &out[i];
        return Err(AuthorityError::BadName {
            what: "resolution",
            why: format!(
                "the newest policy already resolves debit {} of card {} differently ({} of {} on receipt {} of {}, {})",
                old.payer_sequence,
                old.payer,
                old.outcome.name(),
                old.amount,
                old.receipt,
                old.payee,
                "a resolution, once signed, stands"
            ),
        });
    }
    if out.len() >= MAX_RESOLUTIONS {
        out.remove(0); // the oldest signed
    }
    out.push(r);
    Ok(out)
}

/// Sign and store the next policy if `change` (or the key states) change what the newest one says.
/// Returns the newest policy afterwards and, when one was signed, the audit detail to record.
pub(super) fn sign_policy(
    conn: &Store,
    signer: &SchemeSigningKey,
    scheme: &SchemeRecord,
    change: PolicyChange,
    clock: u64,
) -> Result<(Policy, Option<serde_json::Value>), AuthorityError> {
    let prev = newest_policy(conn, scheme)?;
    let lowest_live = keys::ids_in_state(conn, RowKind::Transfer, KeyState::Active)?
        .first()
        .copied()
        .map(TransferKeyId)
        .ok_or(AuthorityError::NoActiveKey("transfer"))?;
    let Some(mut p) = next_policy(prev.as_ref(), scheme.scheme_id, change, lowest_live, clock)? else {
        return Ok((prev.expect("None only when there is a previous policy"), None));
    };
    check_signed_at(last_signed_at(conn)?, clock, clock)?;
    p.signature = signer.sign(&p.body())?;
    let bytes = p.to_wire();
    conn.execute(
        "INSERT INTO policies (number, policy, signed_at, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![p.number, bytes, clock as i64, now()],
    )?;
    let pruned: Vec<String> = prev
        .iter()
        .flat_map(|q| q.blocked.iter())
        .filter(|e| !p.blocks(e.serial))
        .map(|e| e.serial.to_string())
        .collect();
    let mut detail = serde_json::json!({
        "number": p.number,
        "signed_at": rfc3339(p.signed_at),
        "blocked": p.blocked.len(),
        "block": change.block.map(|b| b.serial.to_string()),
        "close_update_key": change.close_update_key.map(|k| k.0),
        "pruned": pruned,
        "min_wrap_update_key_id": p.min_wrap_update_key_id.0,
        "min_transfer_key_id": p.min_transfer_key_id.0,
        "sha256": hex::encode(Sha256::digest(&bytes)),
    });
    // Only policies that carry resolutions say so (older rows keep their exact detail).
    if let Some(r) = change.resolve {
        detail["resolve"] = serde_json::to_value(r).expect("serializes");
    }
    if !p.resolutions.is_empty() {
        detail["resolutions"] = p.resolutions.len().into();
    }
    Ok((p, Some(detail)))
}

/// A policy as shown (`policy show --json`: `number`, `signed_at`, `blocked[]`,
/// `min_wrap_update_key_id`, `min_transfer_key_id`).
#[derive(Clone, Debug, Serialize)]
pub struct PolicyView {
    pub number: u32,
    pub signed_at: String,
    pub blocked: Vec<BlockedView>,
    pub min_wrap_update_key_id: u32,
    pub min_transfer_key_id: u32,
    pub hash: String,
    pub previous: String,
    pub scheme_id: String,
    /// Issuer resolutions the policy carries (left out when there are none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resolutions: Vec<Resolution>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BlockedView {
    pub serial: CardSerial,
    pub transfer_key_id_limit: u32,
}

impl PolicyView {
    pub fn of(p: &Policy) -> Self {
        PolicyView {
            number: p.number,
            signed_at: rfc3339(p.signed_at),
            blocked: p
                .blocked
                .iter()
                .map(|e| BlockedView { serial: e.serial, transfer_key_id_limit: e.limit.0 })
                .collect(),
            min_wrap_update_key_id: p.min_wrap_update_key_id.0,
            min_transfer_key_id: p.min_transfer_key_id.0,
            hash: hex::encode(p.hash()),
            previous: hex::encode(p.previous),
            scheme_id: hex::encode(p.scheme_id),
            resolutions: p.resolutions.clone(),
        }
    }
}

/// What `policy block` did.
#[derive(Debug, Serialize)]
pub struct BlockOutcome {
    pub serial: CardSerial,
    /// The card was already blocked: no new policy.
    pub already_blocked: bool,
    pub policy: PolicyView,
}

/// What `policy resolve` did.
#[derive(Debug, Serialize)]
pub struct ResolveOutcome {
    pub resolution: Resolution,
    /// The newest policy already carried exactly this resolution: nothing new was signed.
    pub already_carried: bool,
    /// What the resolution was checked against (`None` when it was already carried).
    pub checked: Option<ResolveCheck>,
    pub policy: PolicyView,
}

impl Authority {
    /// The newest policy, verified (read-only: `policy show`).
    pub fn current_policy(&self) -> Result<Option<Policy>, AuthorityError> {
        match scheme(&self.conn)? {
            Some(s) => newest_policy(&self.conn, &s),
            None => Ok(None),
        }
    }

    /// The scheme key record, verified against the audit log (`None` before one exists).
    pub fn scheme_record(&self) -> Result<Option<SchemeRecord>, AuthorityError> {
        scheme(&self.conn)
    }
}

impl Unlocked<'_> {
    /// The scheme signing key, checked against its record; created (and certified by the root) for a
    /// database from before schema 4.
    pub fn scheme_signer(&self) -> Result<(SchemeSigningKey, SchemeRecord), AuthorityError> {
        if scheme(self.conn())?.is_none() {
            let sealer = self.sealer()?;
            let ca = self.ca()?;
            self.write(|c| {
                let key = create_scheme(c, &sealer, &ca.key, &ca.root_der, None)?;
                self.log(c, "scheme key", serde_json::json!({ "scheme_id": hex::encode(key.scheme_id()) }))?;
                Ok(())
            })?;
        }
        let record = scheme(self.conn())?.expect("created above");
        let key = match self.token() {
            Some(t) => SchemeSigningKey::from_signer(t.scheme.clone()),
            None => SchemeSigningKey::from_bytes(self.secret(SCHEME_SECRET)?.expose())?,
        };
        if key.public_key_sec1() != record.public_key {
            return Err(AuthorityError::BadRow {
                table: "scheme_key",
                row: 1,
                why: "the scheme signing key does not match its record".into(),
            });
        }
        Ok((key, record))
    }

    /// Sign the authorisation of a key that just became active (inside the caller's transaction).
    pub(super) fn authorise_activated(
        &self,
        conn: &Store,
        signer: &SchemeSigningKey,
        kind: RowKind,
        id: u32,
        key: &Secret16,
    ) -> Result<(), AuthorityError> {
        let detail = sign_authorisation(conn, signer, kind, id, key, unix_now())?;
        self.log(conn, "key authorise", detail)?;
        Ok(())
    }

    /// The authorisation of an active or retired key version (for personalisation). A key that was
    /// active before this database had a scheme key is authorised now; a pending key never is.
    pub fn key_authorisation(&self, kind: RowKind, id: u32) -> Result<KeyAuthorisation, AuthorityError> {
        let (signer, record) = self.scheme_signer()?;
        if let Some(a) = authorisation(self.conn(), &record, kind, id)? {
            return Ok(a);
        }
        let state = keys::list(self.conn())?
            .into_iter()
            .find(|k| k.kind == kind && k.id == id)
            .map(|k| k.state)
            .ok_or(AuthorityError::NoSuchKey { kind: kind.name(), id })?;
        if state != KeyState::Active {
            return Err(AuthorityError::KeyState {
                kind: kind.name(),
                id,
                state: state.name(),
                why: "only an active key is authorised; activate it first",
            });
        }
        let key = self.key_secret(kind, id)?;
        self.write(|c| self.authorise_activated(c, &signer, kind, id, &key))?;
        Ok(authorisation(self.conn(), &record, kind, id)?.expect("signed above"))
    }

    /// `policy block SERIAL`: a new policy blocking the card (every profile). Already blocked: nothing
    /// new is signed. Refused when the list is full (a new generation is needed).
    pub fn policy_block(&self, serial: CardSerial, reason: Option<&str>) -> Result<BlockOutcome, AuthorityError> {
        let (signer, record) = self.scheme_signer()?;
        self.write(|c| self.block_in(c, &signer, &record, serial, reason, unix_now()))
    }

    /// Block inside the caller's transaction (`policy block`, `cert revoke`).
    pub(super) fn block_in(
        &self,
        conn: &Store,
        signer: &SchemeSigningKey,
        record: &SchemeRecord,
        serial: CardSerial,
        reason: Option<&str>,
        clock: u64,
    ) -> Result<BlockOutcome, AuthorityError> {
        let limit: Option<u32> = conn
            .query_row("SELECT transfer_key_id_limit FROM cards WHERE serial = ?1", [serial.to_string()], |r| r.get(0))
            .optional()?;
        let limit = limit.ok_or_else(|| AuthorityError::NoSuchCard(serial.to_string()))?;
        let newest = newest_policy(conn, record)?;
        if let Some(p) = &newest
            && p.blocks(serial)
        {
            return Ok(BlockOutcome { serial, already_blocked: true, policy: PolicyView::of(p) });
        }
        let change = PolicyChange {
            block: Some(BlockedCard { serial, limit: TransferKeyIdLimit(limit) }),
            close_update_key: None,
            resolve: None,
        };
        let (p, detail) = sign_policy(conn, signer, record, change, clock)?;
        if let Some(mut d) = detail {
            d["reason"] = serde_json::json!(reason);
            self.log(conn, "policy block", d)?;
        }
        Ok(BlockOutcome { serial, already_blocked: false, policy: PolicyView::of(&p) })
    }

    /// `policy resolve`: a new policy carrying an issuer resolution of one open debit (DESIGN.md §10
    /// point 6), which the payer applies when the policy reaches it. Both cards must be this issuer's.
    /// Already carried: nothing new is signed. One that contradicts a resolution already signed is
    /// refused.
    ///
    /// Checked against the newest recorded reconciliation
    /// ([`reconciliations::judge_resolution`]): it must show exactly this debit open and prove the
    /// outcome safe (a refund only of a receipt the payee never credited and never can, a closure only
    /// of a debit the payee credited); with no reconciliation, or one that does not show the debit
    /// (the cards moved since, or were not read), the answer is to reconcile first. A wrong refund
    /// would create value. [`ResolveBasis::Override`] (a card lost for good) resolves without that
    /// proof, never against a proof of the opposite, and the signed audit log keeps the reason.
    pub fn policy_resolve(&self, r: Resolution, basis: &ResolveBasis) -> Result<ResolveOutcome, AuthorityError> {
        if r.amount.0 == 0 || r.payer == r.payee {
            return Err(AuthorityError::BadName {
                what: "resolution",
                why: "it names no debit (amount 0, or payer and payee are one card)".into(),
            });
        }
        let (signer, record) = self.scheme_signer()?;
        self.write(|c| {
            for serial in [r.payer, r.payee] {
                let known: Option<i64> = c
                    .query_row("SELECT 1 FROM cards WHERE serial = ?1", [serial.to_string()], |row| row.get(0))
                    .optional()?;
                if known.is_none() {
                    return Err(AuthorityError::NoSuchCard(serial.to_string()));
                }
            }
            let prev = newest_policy(c, &record)?;
            if let Some(p) = &prev
                && p.resolutions.contains(&r)
            {
                return Ok(ResolveOutcome {
                    resolution: r,
                    already_carried: true,
                    checked: None,
                    policy: PolicyView::of(p),
                });
            }
            // A contradiction of a signed resolution is refused as such, before the reconciliation.
            next_resolutions(prev.as_ref().map_or(&[][..], |p| &p.resolutions), Some(r))?;
            // The reconciliation tables are in the state digest this custodian checked at unlock.
            let newest = reconciliations::latest(c)?;
            let debits = match &newest {
                Some(rec) => reconciliations::debits_of(c, rec.id)?,
                None => Vec::new(),
            };
            let older = reconciliations::debits_resembling(c, &r)?;
            let check =
                reconciliations::judge_resolution(&r, basis, newest.as_ref().map(|n| (n, &debits[..])), &older)?;
            let change = PolicyChange { resolve: Some(r), ..PolicyChange::default() };
            let (p, detail) = sign_policy(c, &signer, &record, change, unix_now())?;
            if let Some(mut d) = detail {
                d["checked"] = serde_json::to_value(&check).expect("serializes");
                self.log(c, "policy resolve", d)?;
            }
            Ok(ResolveOutcome {
                resolution: r,
                already_carried: false,
                checked: Some(check),
                policy: PolicyView::of(&p),
            })
        })
    }

    /// `policy compromise update ID`: close wrapping under update key `id` and every older one.
    pub fn policy_compromise_update(&self, id: u32) -> Result<PolicyView, AuthorityError> {
        let (signer, record) = self.scheme_signer()?;
        if !keys::list(self.conn())?.iter().any(|k| k.kind == RowKind::Update && k.id == id) {
            return Err(AuthorityError::NoSuchKey { kind: "update", id });
        }
        self.write(|c| {
            let change = PolicyChange { block: None, close_update_key: Some(UpdateKeyId(id)), resolve: None };
            let (p, detail) = sign_policy(c, &signer, &record, change, unix_now())?;
            if let Some(d) = detail {
                self.log(c, "policy compromise update", d)?;
            }
            Ok(PolicyView::of(&p))
        })
    }

    /// `policy publish`: the newest policy, after signing one if there is none yet or the key states
    /// changed what it says (a retired generation prunes its blocked cards).
    pub fn policy_publish(&self) -> Result<Policy, AuthorityError> {
        let (signer, record) = self.scheme_signer()?;
        self.write(|c| {
            let (p, detail) = sign_policy(c, &signer, &record, PolicyChange::default(), unix_now())?;
            if let Some(d) = detail {
                self.log(c, "policy publish", d)?;
            }
            Ok(p)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::policy::{PolicyDecision, SchemeAnchor, judge_policy};

    const T: u64 = 1_790_000_000;

    fn block(serial: u64, limit: u32) -> PolicyChange {
        PolicyChange {
            block: Some(BlockedCard { serial: CardSerial::from_u64(serial), limit: TransferKeyIdLimit(limit) }),
            close_update_key: None,
            resolve: None,
        }
    }

    fn signed(k: &SchemeSigningKey, mut p: Policy) -> Policy {
        p.signature = k.sign(&p.body()).unwrap();
        p
    }

    #[test]
    fn signing_time_is_never_earlier_than_the_last_nor_far_ahead() {
        check_signed_at(None, T, T).unwrap();
        check_signed_at(Some(T), T, T).unwrap();
        check_signed_at(Some(T - 1), T + SIGNING_SKEW, T).unwrap();
        assert!(matches!(check_signed_at(Some(T + 1), T, T), Err(AuthorityError::SigningTime(_))));
        assert!(matches!(check_signed_at(None, T + SIGNING_SKEW + 1, T), Err(AuthorityError::SigningTime(_))));
        assert!(check_signed_at(None, u64::MAX, u64::MAX).is_ok());
    }

    #[test]
    fn policies_chain_and_cards_adopt_each_successor() {
        let k = SchemeSigningKey::generate().unwrap();
        let anchor = SchemeAnchor::new(&k.public_key_sec1()).unwrap();
        let p1 = signed(&k, next_policy(None, k.scheme_id(), block(5, 2), TransferKeyId(1), T).unwrap().unwrap());
        assert_eq!((p1.number, p1.previous, p1.min_wrap_update_key_id), (1, [0; 32], UpdateKeyId(1)));
        let p2 = signed(&k, next_policy(Some(&p1), k.scheme_id(), block(3, 4), TransferKeyId(1), T).unwrap().unwrap());
        assert_eq!(p2.number, 2);
        assert_eq!(p2.previous, p1.hash());
        let serials: Vec<u64> = p2.blocked.iter().map(|e| e.serial.as_u64()).collect();
        assert_eq!(serials, [3, 5], "kept sorted");
        let close = PolicyChange { block: None, close_update_key: Some(UpdateKeyId(1)), resolve: None };
        let p3 = signed(&k, next_policy(Some(&p2), k.scheme_id(), close, TransferKeyId(1), T).unwrap().unwrap());
        assert_eq!(p3.min_wrap_update_key_id, UpdateKeyId(2));
        // Closing an older key again changes nothing: no new policy.
        let older = PolicyChange { block: None, close_update_key: Some(UpdateKeyId(0)), resolve: None };
        assert!(next_policy(Some(&p3), k.scheme_id(), older, TransferKeyId(1), T).unwrap().is_none());
        assert!(next_policy(Some(&p3), k.scheme_id(), block(5, 2), TransferKeyId(1), T).unwrap().is_none());
        // Every successor is what a card adopts.
        let mut held: Option<Policy> = None;
        let mut floor = Default::default();
        for p in [&p1, &p2, &p3] {
            match judge_policy(&anchor, held.as_ref(), floor, &p.to_wire()).unwrap() {
                PolicyDecision::Adopt { policy, floor: f } => {
                    held = Some(policy);
                    floor = f;
                }
                PolicyDecision::Keep => panic!("policy {} not adopted", p.number),
            }
        }
        // Retiring transfer keys up to 2 prunes card 5 (limit 2), keeps card 3 (limit 4); cards adopt it.
        let p4 = signed(
            &k,
            next_policy(Some(&p3), k.scheme_id(), PolicyChange::default(), TransferKeyId(3), T).unwrap().unwrap(),
        );
        assert!(!p4.blocks(CardSerial::from_u64(5)) && p4.blocks(CardSerial::from_u64(3)));
        assert!(matches!(judge_policy(&anchor, held.as_ref(), floor, &p4.to_wire()), Ok(PolicyDecision::Adopt { .. })));
    }

    fn res(payer: u64, seq: u32) -> Resolution {
        Resolution {
            payer: CardSerial::from_u64(payer),
            payer_sequence: seq,
            payee: CardSerial::from_u64(payer + 1),
            receipt: seq,
            amount: crate::domain::Amount(5),
            outcome: crate::protocol::policy::ResolutionOutcome::Refund,
        }
    }

    #[test]
    fn resolutions_accumulate_boundedly_and_never_contradict() {
        let k = SchemeSigningKey::generate().unwrap();
        let resolve = |r| PolicyChange { resolve: Some(r), ..PolicyChange::default() };
        let mut p =
            signed(&k, next_policy(None, k.scheme_id(), resolve(res(1, 1)), TransferKeyId(1), T).unwrap().unwrap());
        assert_eq!(p.resolutions, [res(1, 1)]);
        // The same resolution again: nothing new to sign.
        assert!(next_policy(Some(&p), k.scheme_id(), resolve(res(1, 1)), TransferKeyId(1), T).unwrap().is_none());
        // The same debit with another outcome: refused.
        let mut other = res(1, 1);
        other.outcome = crate::protocol::policy::ResolutionOutcome::Credited;
        assert!(matches!(
            next_policy(Some(&p), k.scheme_id(), resolve(other), TransferKeyId(1), T),
            Err(AuthorityError::BadName { what: "resolution", .. })
        ));
        // A void is the one word that may change: its refund (or credited) replaces it; nothing else does.
        let mut void = res(2, 5);
        void.outcome = ResolutionOutcome::Void;
        let v = signed(&k, next_policy(Some(&p), k.scheme_id(), resolve(void), TransferKeyId(1), T).unwrap().unwrap());
        assert_eq!(v.resolutions, [res(1, 1), void]);
        let refunded =
            signed(&k, next_policy(Some(&v), k.scheme_id(), resolve(res(2, 5)), TransferKeyId(1), T).unwrap().unwrap());
        assert_eq!(refunded.resolutions, [res(1, 1), res(2, 5)]);
        assert!(matches!(
            next_policy(Some(&refunded), k.scheme_id(), resolve(void), TransferKeyId(1), T),
            Err(AuthorityError::BadName { what: "resolution", .. })
        ));
        let mut other_amount = res(2, 5);
        other_amount.amount = crate::domain::Amount(999);
        assert!(matches!(
            next_policy(Some(&v), k.scheme_id(), resolve(other_amount), TransferKeyId(1), T),
            Err(AuthorityError::BadName { what: "resolution", .. })
        ));
        // A block keeps the resolutions; at the bound the oldest signed leaves.
        p = signed(&k, next_policy(Some(&p), k.scheme_id(), block(9, 2), TransferKeyId(1), T).unwrap().unwrap());
        assert_eq!(p.resolutions, [res(1, 1)]);
        for seq in 2..=MAX_RESOLUTIONS as u32 + 1 {
            p = signed(
                &k,
                next_policy(Some(&p), k.scheme_id(), resolve(res(3, seq)), TransferKeyId(1), T).unwrap().unwrap(),
            );
        }
        assert_eq!(p.resolutions.len(), MAX_RESOLUTIONS);
        assert!(!p.resolutions.contains(&res(1, 1)), "the oldest left");
        assert_eq!(p.resolutions.last(), Some(&res(3, MAX_RESOLUTIONS as u32 + 1)));
        // Every one of them verifies on a card.
        let anchor = SchemeAnchor::new(&k.public_key_sec1()).unwrap();
        assert!(matches!(
            judge_policy(&anchor, None, Default::default(), &p.to_wire()),
            Ok(PolicyDecision::Adopt { .. })
        ));
        // A dropped one may be resolved again (it is carried again).
        let again = next_policy(Some(&p), k.scheme_id(), resolve(res(1, 1)), TransferKeyId(1), T).unwrap().unwrap();
        assert_eq!(again.resolutions.last(), Some(&res(1, 1)));
    }

    #[test]
    fn the_blocked_list_is_bounded() {
        let k = SchemeSigningKey::generate().unwrap();
        let mut p: Option<Policy> = None;
        for s in 0..MAX_BLOCKED as u64 {
            p = Some(signed(
                &k,
                next_policy(p.as_ref(), k.scheme_id(), block(s, 9), TransferKeyId(1), T).unwrap().unwrap(),
            ));
        }
        let full = p.unwrap();
        assert_eq!(full.blocked.len(), MAX_BLOCKED);
        assert!(matches!(
            next_policy(Some(&full), k.scheme_id(), block(1000, 9), TransferKeyId(1), T),
            Err(AuthorityError::PolicyFull { max: MAX_BLOCKED })
        ));
        // Once the generation dies, its entries are pruned and there is room again.
        let pruned = next_policy(Some(&full), k.scheme_id(), block(1000, 12), TransferKeyId(10), T).unwrap().unwrap();
        assert_eq!(pruned.blocked.len(), 1);
    }
}
