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
//! | 87+12n | 64 | signature |
//!
//! A blocked entry carries the card's transfer key id limit so that every card can check the one
//! allowed way an entry leaves the list: its generation died (limit below the lowest live transfer
//! key id). The list is bounded: it is for compromised cards, not lost ones (a lost card holds value
//! only its holder loses; a compromised one threatens everyone's).

use super::codec::{DecodeError, Reader, Wire};
use crate::crypto::CryptoError;
use crate::crypto::scheme_key::{self, COMMITMENT_LEN, SCHEME_ID_LEN, SIGNATURE_LEN, SchemeId};
use crate::domain::{CardSerial, TransferKeyId, TransferKeyIdLimit, UpdateKeyId};
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
    scheme_public: &[u8],
    scheme_id: &SchemeId,
    own_scheme: &SchemeId,
    body: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), SignedObjectError> {
    if scheme_id != own_scheme {
        return Err(SignedObjectError::WrongScheme);
    }
    scheme_key::verify(scheme_public, body, signature)?;
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
    pub fn verified(bytes: &[u8], scheme_public: &[u8], own_scheme: &SchemeId) -> Result<Self, SignedObjectError> {
        let a = Self::from_wire(bytes, ())?;
        check_signature(scheme_public, &a.scheme_id, own_scheme, &a.body(), &a.signature)?;
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
    pub signature: [u8; SIGNATURE_LEN],
}

impl Policy {
    /// Encoded length without blocked entries.
    pub const BASE_LEN: usize = 87 + SIGNATURE_LEN;
    /// Encoded length of one blocked entry.
    pub const ENTRY_LEN: usize = CardSerial::LEN + 4;
    /// Largest encoding.
    pub const MAX_LEN: usize = Self::BASE_LEN + MAX_BLOCKED * Self::ENTRY_LEN;

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
        b
    }

    /// Decode and verify against the card's scheme key (scheme id, then signature).
    pub fn verified(bytes: &[u8], scheme_public: &[u8], own_scheme: &SchemeId) -> Result<Self, SignedObjectError> {
        let p = Self::from_wire(bytes, ())?;
        check_signature(scheme_public, &p.scheme_id, own_scheme, &p.body(), &p.signature)?;
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
        let signature = r.array("signature")?;
        Ok(Policy {
            scheme_id,
            number,
            previous,
            signed_at,
            min_wrap_update_key_id,
            min_transfer_key_id,
            blocked,
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
        a.signature = k.sign(&a.body());
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
            signature: [0; 64],
        };
        p.signature = k.sign(&p.body());
        p
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
        let v = KeyAuthorisation::verified(&bytes, &k.public_key_sec1(), &k.scheme_id()).unwrap();
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
            assert!(KeyAuthorisation::verified(&b, &k.public_key_sec1(), &k.scheme_id()).is_err(), "bit {i}");
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
        assert_eq!(
            KeyAuthorisation::verified(&bytes, &k.public_key_sec1(), &k.scheme_id()),
            Err(SignedObjectError::WrongScheme)
        );
        // Claiming our scheme id but signed by another key.
        let mut forged = auth(&other);
        forged.scheme_id = k.scheme_id();
        forged.signature = other.sign(&forged.body());
        assert_eq!(
            KeyAuthorisation::verified(&forged.to_wire(), &k.public_key_sec1(), &k.scheme_id()),
            Err(SignedObjectError::BadSignature)
        );
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
            assert_eq!(Policy::verified(&bytes, &k.public_key_sec1(), &k.scheme_id()).unwrap(), p);
            for &(s, _) in &blocked {
                assert!(p.blocks(CardSerial::from_u64(s)));
            }
            assert!(!p.blocks(CardSerial::from_u64(4)));
        }
        let full: Vec<(u64, u32)> = (0..MAX_BLOCKED as u64).map(|i| (i, 1)).collect();
        let p = policy(&k, &full);
        assert_eq!(p.to_wire().len(), Policy::MAX_LEN);
        assert_eq!(Policy::MAX_LEN, 1015);
        Policy::verified(&p.to_wire(), &k.public_key_sec1(), &k.scheme_id()).unwrap();
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
            assert!(Policy::verified(&b, &k.public_key_sec1(), &k.scheme_id()).is_err(), "bit {i}");
        }
    }

    #[test]
    fn an_authorisation_never_verifies_as_a_policy_and_back() {
        let k = SchemeSigningKey::generate().unwrap();
        let a = auth(&k).to_wire();
        assert!(Policy::verified(&a, &k.public_key_sec1(), &k.scheme_id()).is_err());
        let p = policy(&k, &[]).to_wire();
        assert!(KeyAuthorisation::verified(&p, &k.public_key_sec1(), &k.scheme_id()).is_err());
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
