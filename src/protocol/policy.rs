//! The issuer's signed word on the wire (DESIGN.md §10 points 3–5): **key authorisations** and the
//! **scheme policy**, both signed by the scheme signing key (`crypto::scheme_key`). This module is the
//! only place that knows their byte layout; `docs/protocol.md` shows the same layout as tables.
//!
//! Integers are big-endian. Times are Unix seconds (UTC), 8 bytes. Signatures are ECDSA P-256 /
//! SHA-256 in the 64-byte P1363 form over `"keyroll scheme signature v2" ‖ body`, where body is every
//! byte before the signature; the first body byte is the object type, so one kind of object can never
//! verify as the other.
//!
//! Key authorisation (146 bytes):
//!
//! | offset | length | field |
//! | --- | --- | --- |
//! | 0 | 1 | type `0x41` ("A") |
//! | 1 | 32 | scheme id: SHA-256 of the scheme key's SPKI |
//! | 33 | 1 | kind: `0x01` transfer key, `0x02` update key |
//! | 34 | 4 | key id |
//! | 38 | 32 | commitment `SHA-256("keyroll key commitment v2" ‖ scheme id ‖ kind ‖ id ‖ key)` |
//! | 70 | 8 | signed_at |
//! | 78 | 4 | min_policy: the lowest policy number a card must hold to take the key |
//! | 82 | 64 | signature |
//!
//! Policy (151 + 12·n bytes, n ≤ [`MAX_BLOCKED`]):
//!
//! | offset | length | field |
//! | --- | --- | --- |
//! | 0 | 1 | type `0x50` ("P") |
//! | 1 | 32 | scheme id |
//! | 33 | 4 | number (≥ 1, strictly increasing) |
//! | 37 | 32 | hash of the previous policy ([`Policy::hash`]); zeros for number 1 |
//! | 69 | 8 | signed_at |
//! | 77 | 4 | lowest update key id still allowed for wrapping |
//! | 81 | 4 | lowest transfer key id still alive |
//! | 85 | 2 | n: number of blocked cards |
//! | 87 | 12·n | blocked cards, strictly ascending by serial: serial (8) ‖ transfer key id limit (4) |
//! | 87+12n | 2 | m: number of resolutions, 1 ≤ m ≤ [`MAX_RESOLUTIONS`] — **absent when m = 0** |
//! | 89+12n | 33·m | resolutions, oldest signed first, no two naming the same debit ([`Resolution`]) |
//! | end − 64 | 64 | signature |
//!
//! The resolution section is present only when it is not empty, so a policy without resolutions has
//! exactly the layout it had before resolutions existed (151 + 12·n bytes) and one encoding.
//!
//! Resolution (33 bytes): payer serial (8) ‖ payer sequence of the debit (4) ‖ payee serial (8) ‖ payee
//! receipt number (4) ‖ amount (8) ‖ outcome (1: `0x01` refund to the payer, `0x02` close as credited, `0x03` void: the payee closes the receipt, the payer waits).
//! The payer's sequence number names the debit exactly and is never reused, so a resolution can match
//! at most one debit ever; the payee, receipt and amount must match too (a card applies nothing that
//! disagrees with its own record).
//!
//! A blocked entry carries the card's transfer key id limit so that every card can check the one
//! allowed way an entry leaves the list: its generation died (limit below the lowest live transfer
//! key id). The list is bounded: it is for compromised cards, not lost ones (a lost card holds value
//! only its holder loses; a compromised one threatens everyone's).
//!
//! Resolutions (DESIGN.md §10 point 6) clear a payer's open debit that no card pair can resolve any
//! more (its receipt left the payee's window, or the payee never returns). They ride in the policy so
//! they spread card to card with the same signature check before any write and the same atomic
//! adoption. A card applies a resolution naming one of its own open debits when it adopts the policy;
//! a resolution whose debit is gone (applied before, or resolved by the cards) is a no-op, so a replay,
//! or a later policy that still carries it, never refunds twice. Unlike blocked entries, a successor
//! may drop resolutions (the issuer keeps the newest [`MAX_RESOLUTIONS`]): dropping one only delays a
//! holder's refund, and `reconcile` shows the debit still open so the issuer can resolve it again.

use super::codec::{DecodeError, Reader, Wire};
use crate::crypto::CryptoError;
use crate::crypto::scheme_key::{self, COMMITMENT_LEN, SCHEME_ID_LEN, SIGNATURE_LEN, SchemeId, SchemePublicKey};
use crate::domain::{Amount, CardSerial, TransferKeyId, TransferKeyIdLimit, UpdateKeyId};
use sha2::{Digest, Sha256};

/// Type byte of a key authorisation.
pub const AUTHORISATION_TYPE: u8 = 0x41;
/// Type byte of a policy.
pub const POLICY_TYPE: u8 = 0x50;
/// Most blocked cards a policy lists. Bounded because every card stores and every settlement may relay
/// the whole policy (1,015 bytes at the bound: four short APDUs of 255 bytes), and because the list is meant for
/// compromised cards only; past the bound the issuer starts a new generation and lets the old one die,
/// which prunes its entries.
pub const MAX_BLOCKED: usize = 72;
/// Most resolutions a policy carries: a full card's open debits (8 pending + 64 exceptions,
/// `protocol::info::{MAX_PENDING, MAX_EXCEPTIONS}`), so one policy can clear any card. Bounded because
/// every card stores the policy (3,393 bytes at both bounds, inside the 4,096-byte command limit).
pub const MAX_RESOLUTIONS: usize = 72;
// The largest policy still fits one (chained) PUT POLICY.
const _: () = assert!(Policy::MAX_LEN <= super::apdu::MAX_COMMAND_DATA);
/// Domain separation of [`Policy::hash`].
pub const POLICY_HASH_LABEL: &[u8] = b"keyroll policy hash v2";

/// What an authorisation authorises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Transfer,
    Update,
}

impl KeyKind {
    pub fn code(self) -> u8 {
        match self {
            KeyKind::Transfer => 0x01,
            KeyKind::Update => 0x02,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0x01 => Some(KeyKind::Transfer),
            0x02 => Some(KeyKind::Update),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Transfer => "transfer",
            KeyKind::Update => "update",
        }
    }
}

/// Why a signed object is not the issuer's word.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum SignedObjectError {
    #[error("malformed: {0}")]
    Decode(#[from] DecodeError),
    #[error("signed for another scheme (scheme id differs from the card's scheme key)")]
    WrongScheme,
    #[error("the scheme signature does not verify")]
    BadSignature,
}

impl From<CryptoError> for SignedObjectError {
    fn from(_: CryptoError) -> Self {
        SignedObjectError::BadSignature
    }
}

fn check_signature(
    scheme: &SchemePublicKey,
    scheme_id: &SchemeId,
    body: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), SignedObjectError> {
    if scheme_id != scheme.id() {
        return Err(SignedObjectError::WrongScheme);
    }
    scheme.verify(body, signature)?;
    Ok(())
}

/// A key authorisation: the issuer's statement that key `kind`/`id` with this commitment is genuine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyAuthorisation {
    pub scheme_id: SchemeId,
    pub kind: KeyKind,
    pub id: u32,
    pub commitment: [u8; COMMITMENT_LEN],
    pub signed_at: u64,
    pub min_policy: u32,
    pub signature: [u8; SIGNATURE_LEN],
}

impl KeyAuthorisation {
    /// Encoded length.
    pub const LEN: usize = Self::BODY_LEN + SIGNATURE_LEN;
    const BODY_LEN: usize = 1 + SCHEME_ID_LEN + 1 + 4 + COMMITMENT_LEN + 8 + 4;

    /// The signed bytes (everything but the signature).
    pub fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::BODY_LEN);
        b.push(AUTHORISATION_TYPE);
        b.extend_from_slice(&self.scheme_id);
        b.push(self.kind.code());
        b.extend_from_slice(&self.id.to_be_bytes());
        b.extend_from_slice(&self.commitment);
        b.extend_from_slice(&self.signed_at.to_be_bytes());
        b.extend_from_slice(&self.min_policy.to_be_bytes());
        b
    }

    /// Decode and verify against the card's scheme key: the scheme id must be the card's and the
    /// signature must verify. Says nothing yet about which key it authorises (see `card::policy`).
    pub fn verified(bytes: &[u8], scheme: &SchemePublicKey) -> Result<Self, SignedObjectError> {
        let a = Self::from_wire(bytes, ())?;
        check_signature(scheme, &a.scheme_id, &a.body(), &a.signature)?;
        Ok(a)
    }

    /// Whether this authorisation is for exactly this key (kind, id, and the commitment to its bytes).
    pub fn commits_to(&self, kind: KeyKind, id: u32, key: &crate::crypto::Secret16) -> bool {
        use subtle::ConstantTimeEq;
        let expect = scheme_key::key_commitment(&self.scheme_id, kind.code(), id, key);
        self.kind == kind && self.id == id && bool::from(self.commitment.ct_eq(&expect))
    }
}

impl Wire for KeyAuthorisation {
    type Context = ();

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.body());
        out.extend_from_slice(&self.signature);
    }

    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        if r.u8("authorisation type")? != AUTHORISATION_TYPE {
            return Err(DecodeError::Invalid { field: "authorisation type", why: "not 0x41" });
        }
        let scheme_id = r.array("scheme id")?;
        let kind = KeyKind::from_code(r.u8("key kind")?)
            .ok_or(DecodeError::Invalid { field: "key kind", why: "neither 0x01 (transfer) nor 0x02 (update)" })?;
        let id = r.u32("key id")?;
        if id == 0 {
            return Err(DecodeError::Invalid { field: "key id", why: "key ids start at 1" });
        }
        let a = KeyAuthorisation {
            scheme_id,
            kind,
            id,
            commitment: r.array("commitment")?,
            signed_at: r.u64("signed_at")?,
            min_policy: r.u32("min_policy")?,
            signature: r.array("signature")?,
        };
        Ok(a)
    }
}

/// One blocked card of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockedCard {
    pub serial: CardSerial,
    /// The card's transfer key id limit (its generation): the entry may be pruned once every live
    /// transfer key id is above it.
    pub limit: TransferKeyIdLimit,
}

/// What an issuer resolution does with the debit it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResolutionOutcome {
    /// The payee never credited the receipt and never can: the amount goes back to the payer, and a
    /// payee still holding the receipt open in its window closes it for good (never creditable), so a
    /// late CREDIT of the old token cannot also land.
    Refund,
    /// The payee credited the receipt: the payer's debit closes, nothing goes back.
    Credited,
    /// Only the payee acts: it closes the receipt for good if it is still open (never creditable); the
    /// payer's debit stays open. The first of two steps for a receipt still in the payee's window: once
    /// the payee's export shows the receipt closed, a `Refund` is safe whichever card adopts it first.
    Void,
}

impl ResolutionOutcome {
    pub fn code(self) -> u8 {
        match self {
            ResolutionOutcome::Refund => 0x01,
            ResolutionOutcome::Credited => 0x02,
            ResolutionOutcome::Void => 0x03,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0x01 => Some(ResolutionOutcome::Refund),
            0x02 => Some(ResolutionOutcome::Credited),
            0x03 => Some(ResolutionOutcome::Void),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ResolutionOutcome::Refund => "refund",
            ResolutionOutcome::Credited => "credited",
            ResolutionOutcome::Void => "void",
        }
    }
}

/// An issuer-signed resolution of one open debit (DESIGN.md §10 point 6), carried in the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Resolution {
    pub payer: CardSerial,
    /// The payer's transaction counter after the debit (what DEBIT answered as payer sequence): unique
    /// per payer, never reused.
    pub payer_sequence: u32,
    pub payee: CardSerial,
    /// The payee's receipt number of the transfer.
    pub receipt: u32,
    pub amount: Amount,
    pub outcome: ResolutionOutcome,
}

impl Resolution {
    /// Encoded length.
    pub const LEN: usize = 8 + 4 + 8 + 4 + 8 + 1;

    /// What names the debit: no two resolutions of one policy share it.
    pub fn key(&self) -> (CardSerial, u32) {
        (self.payer, self.payer_sequence)
    }
}

impl Wire for Resolution {
    type Context = ();

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.payer.0);
        out.extend_from_slice(&self.payer_sequence.to_be_bytes());
        out.extend_from_slice(&self.payee.0);
        out.extend_from_slice(&self.receipt.to_be_bytes());
        out.extend_from_slice(&self.amount.0.to_be_bytes());
        out.push(self.outcome.code());
    }

    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        let payer = CardSerial(r.array("resolution payer")?);
        let payer_sequence = r.u32("resolution payer sequence")?;
        let payee = CardSerial(r.array("resolution payee")?);
        let receipt = r.u32("resolution receipt")?;
        let amount = Amount(r.u64("resolution amount")?);
        let outcome = ResolutionOutcome::from_code(r.u8("resolution outcome")?).ok_or(DecodeError::Invalid {
            field: "resolution outcome",
            why: "not 0x01 (refund), 0x02 (credited) or 0x03 (void)",
        })?;
        if amount.0 == 0 || payer == payee {
            return Err(DecodeError::Invalid {
                field: "resolution",
                why: "names no debit (amount 0 or payer = payee)",
            });
        }
        Ok(Resolution { payer, payer_sequence, payee, receipt, amount, outcome })
    }
}

/// The scheme policy: which cards are blocked, which update keys may still wrap, which transfer keys
/// are alive. Numbered; each names the hash of its predecessor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub scheme_id: SchemeId,
    pub number: u32,
    pub previous: [u8; 32],
    pub signed_at: u64,
    pub min_wrap_update_key_id: UpdateKeyId,
    pub min_transfer_key_id: TransferKeyId,
    /// Strictly ascending by serial.
    pub blocked: Vec<BlockedCard>,
    /// Issuer resolutions of open debits, oldest signed first (the issuer drops the oldest at the
    /// bound); no two name the same debit (payer, payer sequence).
    pub resolutions: Vec<Resolution>,
    pub signature: [u8; SIGNATURE_LEN],
}

impl Policy {
    /// Encoded length without blocked entries.
    pub const BASE_LEN: usize = 87 + SIGNATURE_LEN;
    /// Encoded length of one blocked entry.
    pub const ENTRY_LEN: usize = CardSerial::LEN + 4;
    /// Largest encoding (both lists at their bounds).
    pub const MAX_LEN: usize = Self::BASE_LEN + MAX_BLOCKED * Self::ENTRY_LEN + 2 + MAX_RESOLUTIONS * Resolution::LEN;

    pub fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(87 + self.blocked.len() * Self::ENTRY_LEN);
        b.push(POLICY_TYPE);
        b.extend_from_slice(&self.scheme_id);
        b.extend_from_slice(&self.number.to_be_bytes());
        b.extend_from_slice(&self.previous);
        b.extend_from_slice(&self.signed_at.to_be_bytes());
        b.extend_from_slice(&self.min_wrap_update_key_id.0.to_be_bytes());
        b.extend_from_slice(&self.min_transfer_key_id.0.to_be_bytes());
        let n = u16::try_from(self.blocked.len()).expect("bounded by MAX_BLOCKED");
        b.extend_from_slice(&n.to_be_bytes());
        for e in &self.blocked {
            b.extend_from_slice(&e.serial.0);
            b.extend_from_slice(&e.limit.0.to_be_bytes());
        }
        if !self.resolutions.is_empty() {
            let m = u16::try_from(self.resolutions.len()).expect("bounded by MAX_RESOLUTIONS");
            b.extend_from_slice(&m.to_be_bytes());
            for r in &self.resolutions {
                r.encode(&mut b);
            }
        }
        b
    }

    /// Decode and verify against the card's scheme key (scheme id, then signature).
    pub fn verified(bytes: &[u8], scheme: &SchemePublicKey) -> Result<Self, SignedObjectError> {
        let p = Self::from_wire(bytes, ())?;
        check_signature(scheme, &p.scheme_id, &p.body(), &p.signature)?;
        Ok(p)
    }

    /// `SHA-256("keyroll policy hash v2" ‖ encoding)`: what the next policy names as its predecessor.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(POLICY_HASH_LABEL);
        h.update(self.to_wire());
        h.finalize().into()
    }

    /// Whether `serial` is blocked.
    pub fn blocks(&self, serial: CardSerial) -> bool {
        self.blocked.binary_search_by(|e| e.serial.cmp(&serial)).is_ok()
    }

    /// The resolutions naming debits of `payer`.
    pub fn resolutions_for(&self, payer: CardSerial) -> impl Iterator<Item = &Resolution> {
        self.resolutions.iter().filter(move |r| r.payer == payer)
    }

    /// The resolutions naming `payee` as the payee whose receipt a `Refund` or `Void` closes.
    pub fn receipts_closed_at(&self, payee: CardSerial) -> impl Iterator<Item = &Resolution> {
        self.resolutions.iter().filter(move |r| {
            r.payee == payee && matches!(r.outcome, ResolutionOutcome::Refund | ResolutionOutcome::Void)
        })
    }

    /// Whether a card following this policy may wrap (or unwrap) a transfer key under update key `id`.
    pub fn allows_wrap_under(&self, id: UpdateKeyId) -> bool {
        id >= self.min_wrap_update_key_id
    }
}

impl Wire for Policy {
    type Context = ();

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.body());
        out.extend_from_slice(&self.signature);
    }

    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        if r.u8("policy type")? != POLICY_TYPE {
            return Err(DecodeError::Invalid { field: "policy type", why: "not 0x50" });
        }
        let scheme_id = r.array("scheme id")?;
        let number = r.u32("policy number")?;
        if number == 0 {
            return Err(DecodeError::Invalid { field: "policy number", why: "policy numbers start at 1" });
        }
        let previous: [u8; 32] = r.array("previous policy hash")?;
        if number == 1 && previous != [0; 32] {
            return Err(DecodeError::Invalid { field: "previous policy hash", why: "policy 1 has no predecessor" });
        }
        let signed_at = r.u64("signed_at")?;
        let min_wrap_update_key_id = UpdateKeyId(r.u32("min wrap update key id")?);
        let min_transfer_key_id = TransferKeyId(r.u32("min transfer key id")?);
        let n = u16::from_be_bytes(r.array("blocked count")?) as usize;
        if n > MAX_BLOCKED {
            return Err(DecodeError::Invalid { field: "blocked count", why: "above the bound on blocked cards" });
        }
        let mut blocked: Vec<BlockedCard> = Vec::with_capacity(n);
        for _ in 0..n {
            let serial = CardSerial(r.array("blocked serial")?);
            let limit = TransferKeyIdLimit(r.u32("blocked card limit")?);
            if blocked.last().is_some_and(|p| p.serial >= serial) {
                return Err(DecodeError::Invalid { field: "blocked serial", why: "not strictly ascending" });
            }
            blocked.push(BlockedCard { serial, limit });
        }
        // The resolution section is there only when not empty; the signature is always the last 64 bytes.
        let mut resolutions: Vec<Resolution> = Vec::new();
        // (A single stray byte before the end is trailing data, not a section: a count needs two.)
        if r.left() >= SIGNATURE_LEN + 2 {
            let m = u16::from_be_bytes(r.array("resolution count")?) as usize;
            if m == 0 || m > MAX_RESOLUTIONS {
                return Err(DecodeError::Invalid {
                    field: "resolution count",
                    why: "0 (an empty section is left out) or above the bound on resolutions",
                });
            }
            resolutions.reserve_exact(m);
            for _ in 0..m {
                let res = Resolution::read(r, ())?;
                // At most 72 × 71 / 2 comparisons (house rule 5: bounded by the count checked above).
                if resolutions.iter().any(|p| p.key() == res.key()) {
                    return Err(DecodeError::Invalid {
                        field: "resolution",
                        why: "two resolutions name the same debit",
                    });
                }
                resolutions.push(res);
            }
        }
        let signature = r.array("signature")?;
        Ok(Policy {
            scheme_id,
            number,
            previous,
            signed_at,
            min_wrap_update_key_id,
            min_transfer_key_id,
            blocked,
            resolutions,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Secret16;
    use crate::crypto::scheme_key::SchemeSigningKey;

    fn auth(k: &SchemeSigningKey) -> KeyAuthorisation {
        let key = Secret16::new([9; 16]);
        let mut a = KeyAuthorisation {
            scheme_id: k.scheme_id(),
            kind: KeyKind::Transfer,
            id: 3,
            commitment: scheme_key::key_commitment(&k.scheme_id(), 1, 3, &key),
            signed_at: 1_800_000_000,
            min_policy: 2,
            signature: [0; 64],
        };
        a.signature = k.sign(&a.body()).unwrap();
        a
    }

    fn policy(k: &SchemeSigningKey, blocked: &[(u64, u32)]) -> Policy {
        let mut p = Policy {
            scheme_id: k.scheme_id(),
            number: 1,
            previous: [0; 32],
            signed_at: 1_800_000_000,
            min_wrap_update_key_id: UpdateKeyId(1),
            min_transfer_key_id: TransferKeyId(1),
            blocked: blocked
                .iter()
                .map(|&(s, l)| BlockedCard { serial: CardSerial::from_u64(s), limit: TransferKeyIdLimit(l) })
                .collect(),
            resolutions: vec![],
            signature: [0; 64],
        };
        p.signature = k.sign(&p.body()).unwrap();
        p
    }

    fn resolution(payer: u64, seq: u32, outcome: ResolutionOutcome) -> Resolution {
        Resolution {
            payer: CardSerial::from_u64(payer),
            payer_sequence: seq,
            payee: CardSerial::from_u64(payer + 100),
            receipt: seq + 7,
            amount: Amount(seq as u64 + 1),
            outcome,
        }
    }

    fn with_resolutions(k: &SchemeSigningKey, blocked: &[(u64, u32)], res: &[Resolution]) -> Policy {
        let mut p = policy(k, blocked);
        p.resolutions = res.to_vec();
        p.signature = k.sign(&p.body()).unwrap();
        p
    }

    #[test]
    fn resolutions_round_trip_with_the_documented_layout_and_none_keeps_the_old_one() {
        let k = SchemeSigningKey::generate().unwrap();
        let res = [resolution(3, 9, ResolutionOutcome::Refund), resolution(3, 12, ResolutionOutcome::Credited)];
        let p = with_resolutions(&k, &[(5, 3)], &res);
        let bytes = p.to_wire();
        assert_eq!(bytes.len(), Policy::BASE_LEN + Policy::ENTRY_LEN + 2 + 2 * Resolution::LEN);
        assert_eq!(Resolution::LEN, 33);
        let at = 87 + 12;
        assert_eq!(&bytes[at..at + 2], &2u16.to_be_bytes());
        let r0 = &bytes[at + 2..at + 2 + 33];
        assert_eq!(&r0[..8], &CardSerial::from_u64(3).0);
        assert_eq!(&r0[8..12], &9u32.to_be_bytes());
        assert_eq!(&r0[12..20], &CardSerial::from_u64(103).0);
        assert_eq!(&r0[20..24], &16u32.to_be_bytes());
        assert_eq!(&r0[24..32], &10u64.to_be_bytes());
        assert_eq!(r0[32], 0x01);
        assert_eq!(bytes[at + 2 + 33 + 32], 0x02);
        assert_eq!(Policy::verified(&bytes, &k.verifier()).unwrap(), p);
        assert_eq!(p.resolutions_for(CardSerial::from_u64(3)).count(), 2);
        assert_eq!(p.resolutions_for(CardSerial::from_u64(4)).count(), 0);
        // A void (code 03) round-trips; the payee's receipts a refund or a void closes are listed.
        let v = with_resolutions(&k, &[], &[res[0], res[1], resolution(3, 14, ResolutionOutcome::Void)]);
        let vb = v.to_wire();
        assert_eq!(vb[vb.len() - 64 - 1], 0x03);
        assert_eq!(Policy::verified(&vb, &k.verifier()).unwrap(), v);
        assert_eq!(v.receipts_closed_at(CardSerial::from_u64(103)).count(), 2, "the refund and the void");
        // Without resolutions: byte for byte the layout from before resolutions existed.
        assert_eq!(policy(&k, &[(5, 3)]).to_wire().len(), Policy::BASE_LEN + Policy::ENTRY_LEN);
        // Both lists at their bounds fit one chained command.
        let full: Vec<(u64, u32)> = (0..MAX_BLOCKED as u64).map(|i| (i, 1)).collect();
        let many: Vec<Resolution> =
            (0..MAX_RESOLUTIONS as u32).map(|i| resolution(1, i + 1, ResolutionOutcome::Refund)).collect();
        let big = with_resolutions(&k, &full, &many).to_wire();
        assert_eq!(big.len(), Policy::MAX_LEN);
        assert_eq!(Policy::MAX_LEN, 3393);
        Policy::verified(&big, &k.verifier()).unwrap();
    }

    #[test]
    fn resolution_section_refuses_non_canonical_forms() {
        let k = SchemeSigningKey::generate().unwrap();
        let a = resolution(3, 9, ResolutionOutcome::Refund);
        let b = resolution(3, 12, ResolutionOutcome::Refund);
        // Signing order is kept (not sorted); two naming the same debit are refused, whatever else differs.
        assert!(Policy::from_wire(&with_resolutions(&k, &[], &[b, a]).to_wire(), ()).is_ok());
        let mut a2 = a;
        a2.outcome = ResolutionOutcome::Credited;
        for bad in [vec![a, a], vec![a, b, a2]] {
            let p = with_resolutions(&k, &[], &bad);
            assert!(matches!(
                Policy::from_wire(&p.to_wire(), ()),
                Err(DecodeError::Invalid { field: "resolution", .. })
            ));
        }
        // An empty section written out (count 0) is not the canonical form.
        let mut bytes = policy(&k, &[]).to_wire();
        bytes.splice(87..87, [0u8, 0]);
        assert!(matches!(Policy::from_wire(&bytes, ()), Err(DecodeError::Invalid { field: "resolution count", .. })));
        // A count above the bound is refused before anything is read.
        let mut bytes = with_resolutions(&k, &[], &[a]).to_wire();
        bytes[87..89].copy_from_slice(&(MAX_RESOLUTIONS as u16 + 1).to_be_bytes());
        assert!(matches!(Policy::from_wire(&bytes, ()), Err(DecodeError::Invalid { field: "resolution count", .. })));
        // Unknown outcome, zero amount, payer = payee.
        let good = with_resolutions(&k, &[], &[a]).to_wire();
        let mut bad = good.clone();
        bad[89 + 32] = 4;
        assert!(matches!(Policy::from_wire(&bad, ()), Err(DecodeError::Invalid { field: "resolution outcome", .. })));
        let mut zero = a;
        zero.amount = Amount(0);
        assert!(Policy::from_wire(&with_resolutions(&k, &[], &[zero]).to_wire(), ()).is_err());
        let mut same = a;
        same.payee = same.payer;
        assert!(Policy::from_wire(&with_resolutions(&k, &[], &[same]).to_wire(), ()).is_err());
        // Truncated inside the section.
        assert!(Policy::from_wire(&good[..good.len() - 70], ()).is_err());
    }

    #[test]
    fn every_flipped_bit_of_a_policy_with_resolutions_is_refused() {
        let k = SchemeSigningKey::generate().unwrap();
        let bytes = with_resolutions(&k, &[(1, 2)], &[resolution(4, 2, ResolutionOutcome::Credited)]).to_wire();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(Policy::verified(&b, &k.verifier()).is_err(), "bit {i}");
        }
    }

    #[test]
    fn authorisation_round_trips_and_has_the_documented_layout() {
        let k = SchemeSigningKey::generate().unwrap();
        let a = auth(&k);
        let bytes = a.to_wire();
        assert_eq!(bytes.len(), KeyAuthorisation::LEN);
        assert_eq!(bytes.len(), 146);
        assert_eq!(bytes[0], 0x41);
        assert_eq!(&bytes[1..33], &k.scheme_id());
        assert_eq!(bytes[33], 0x01);
        assert_eq!(&bytes[34..38], &3u32.to_be_bytes());
        assert_eq!(&bytes[70..78], &1_800_000_000u64.to_be_bytes());
        assert_eq!(&bytes[78..82], &2u32.to_be_bytes());
        assert_eq!(KeyAuthorisation::from_wire(&bytes, ()).unwrap(), a);
        let v = KeyAuthorisation::verified(&bytes, &k.verifier()).unwrap();
        assert!(v.commits_to(KeyKind::Transfer, 3, &Secret16::new([9; 16])));
        assert!(!v.commits_to(KeyKind::Transfer, 3, &Secret16::new([8; 16])));
        assert!(!v.commits_to(KeyKind::Update, 3, &Secret16::new([9; 16])));
        assert!(!v.commits_to(KeyKind::Transfer, 4, &Secret16::new([9; 16])));
    }

    #[test]
    fn every_flipped_bit_of_an_authorisation_is_refused() {
        let k = SchemeSigningKey::generate().unwrap();
        let bytes = auth(&k).to_wire();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(KeyAuthorisation::verified(&b, &k.verifier()).is_err(), "bit {i}");
        }
    }

    #[test]
    fn authorisation_decoder_names_what_is_wrong() {
        let k = SchemeSigningKey::generate().unwrap();
        let bytes = auth(&k).to_wire();
        assert!(matches!(
            KeyAuthorisation::from_wire(&bytes[..145], ()),
            Err(DecodeError::Truncated { field: "signature", .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(KeyAuthorisation::from_wire(&long, ()), Err(DecodeError::Trailing(1)));
        let mut kind = bytes.clone();
        kind[33] = 3;
        assert!(matches!(KeyAuthorisation::from_wire(&kind, ()), Err(DecodeError::Invalid { field: "key kind", .. })));
        let mut ty = bytes.clone();
        ty[0] = POLICY_TYPE;
        assert!(matches!(KeyAuthorisation::from_wire(&ty, ()), Err(DecodeError::Invalid { .. })));
        assert!(KeyAuthorisation::from_wire(&[], ()).is_err());
    }

    #[test]
    fn other_scheme_and_other_key_are_refused() {
        let k = SchemeSigningKey::generate().unwrap();
        let other = SchemeSigningKey::generate().unwrap();
        let bytes = auth(&other).to_wire();
        assert_eq!(KeyAuthorisation::verified(&bytes, &k.verifier()), Err(SignedObjectError::WrongScheme));
        // Claiming our scheme id but signed by another key.
        let mut forged = auth(&other);
        forged.scheme_id = k.scheme_id();
        forged.signature = other.sign(&forged.body()).unwrap();
        assert_eq!(KeyAuthorisation::verified(&forged.to_wire(), &k.verifier()), Err(SignedObjectError::BadSignature));
    }

    #[test]
    fn policy_round_trips_with_the_documented_layout() {
        let k = SchemeSigningKey::generate().unwrap();
        for blocked in [vec![], vec![(5, 3)], vec![(1, 2), (7, 9), (u64::MAX, u32::MAX)]] {
            let p = policy(&k, &blocked);
            let bytes = p.to_wire();
            assert_eq!(bytes.len(), Policy::BASE_LEN + blocked.len() * Policy::ENTRY_LEN);
            assert_eq!(bytes[0], 0x50);
            assert_eq!(&bytes[85..87], &(blocked.len() as u16).to_be_bytes());
            assert_eq!(Policy::from_wire(&bytes, ()).unwrap(), p);
            assert_eq!(Policy::verified(&bytes, &k.verifier()).unwrap(), p);
            for &(s, _) in &blocked {
                assert!(p.blocks(CardSerial::from_u64(s)));
            }
            assert!(!p.blocks(CardSerial::from_u64(4)));
        }
        let full: Vec<(u64, u32)> = (0..MAX_BLOCKED as u64).map(|i| (i, 1)).collect();
        let p = policy(&k, &full);
        // Without resolutions the blocked list's bound gives the pre-resolution maximum.
        assert_eq!(p.to_wire().len(), Policy::BASE_LEN + MAX_BLOCKED * Policy::ENTRY_LEN);
        assert_eq!(p.to_wire().len(), 1015);
        Policy::verified(&p.to_wire(), &k.verifier()).unwrap();
    }

    #[test]
    fn policy_decoder_refuses_non_canonical_forms() {
        let k = SchemeSigningKey::generate().unwrap();
        let unsorted = policy(&k, &[(7, 1), (3, 1)]);
        assert!(matches!(
            Policy::from_wire(&unsorted.to_wire(), ()),
            Err(DecodeError::Invalid { field: "blocked serial", .. })
        ));
        let dup = policy(&k, &[(3, 1), (3, 2)]);
        assert!(Policy::from_wire(&dup.to_wire(), ()).is_err());
        let mut zero = policy(&k, &[]);
        zero.number = 0;
        assert!(Policy::from_wire(&zero.to_wire(), ()).is_err());
        let mut orphan = policy(&k, &[]);
        orphan.previous = [1; 32];
        assert!(Policy::from_wire(&orphan.to_wire(), ()).is_err());
        orphan.number = 2;
        assert!(Policy::from_wire(&orphan.to_wire(), ()).is_ok());
        // Too many entries: the count is checked before anything is allocated.
        let mut bytes = policy(&k, &[]).to_wire();
        bytes[85..87].copy_from_slice(&(MAX_BLOCKED as u16 + 1).to_be_bytes());
        assert!(matches!(Policy::from_wire(&bytes, ()), Err(DecodeError::Invalid { field: "blocked count", .. })));
        bytes[85..87].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(Policy::from_wire(&bytes, ()).is_err());
        let mut long = policy(&k, &[]).to_wire();
        long.push(0);
        assert_eq!(Policy::from_wire(&long, ()), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn every_flipped_bit_of_a_policy_is_refused() {
        let k = SchemeSigningKey::generate().unwrap();
        let bytes = policy(&k, &[(1, 2), (9, 4)]).to_wire();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(Policy::verified(&b, &k.verifier()).is_err(), "bit {i}");
        }
    }

    #[test]
    fn an_authorisation_never_verifies_as_a_policy_and_back() {
        let k = SchemeSigningKey::generate().unwrap();
        let a = auth(&k).to_wire();
        assert!(Policy::verified(&a, &k.verifier()).is_err());
        let p = policy(&k, &[]).to_wire();
        assert!(KeyAuthorisation::verified(&p, &k.verifier()).is_err());
    }

    #[test]
    fn wrap_rule_and_hash_chain() {
        let k = SchemeSigningKey::generate().unwrap();
        let mut p = policy(&k, &[]);
        p.min_wrap_update_key_id = UpdateKeyId(3);
        assert!(!p.allows_wrap_under(UpdateKeyId(2)));
        assert!(p.allows_wrap_under(UpdateKeyId(3)));
        let h = p.hash();
        p.signature[0] ^= 1;
        assert_ne!(p.hash(), h, "the hash covers the signature too");
    }
}
