//! The scheme's vocabulary as types (seed claims 1, 8; DESIGN.md §1).
//!
//! Bare integers are easy to mix up: a transfer key identifier, an update key identifier and the upper
//! limit are all `u32` on the wire, but only a [`TransferKeyId`] may be compared with a
//! [`TransferKeyIdLimit`]. Parse once at the edge, then carry these types.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifier of a transfer key generation: a larger value is newer (claim 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TransferKeyId(pub u32);

/// Identifier of an update key generation: a larger value is newer (claim 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UpdateKeyId(pub u32);

/// Upper limit of the transfer key identifier a card may store (claim 1), set per personalisation batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TransferKeyIdLimit(pub u32);

impl TransferKeyIdLimit {
    /// Whether a card with this limit may hold `id`.
    pub fn admits(self, id: TransferKeyId) -> bool {
        id.0 <= self.0
    }
}

/// The acceptance rule of claims 2, 4, 6 and 7: a card installs `new` only if
/// `current < new <= limit` (DESIGN.md §6 property 4, anti-rollback).
pub fn may_install(current: TransferKeyId, new: TransferKeyId, limit: TransferKeyIdLimit) -> bool {
    current < new && limit.admits(new)
}

macro_rules! display_u32 {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { self.0.fmt(f) }
        }
    )*};
}
display_u32!(TransferKeyId, UpdateKeyId, TransferKeyIdLimit);

/// A card's serial number: 8 bytes, unique per issuer, shown as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CardSerial(pub [u8; 8]);

impl CardSerial {
    pub const LEN: usize = 8;

    pub fn from_u64(v: u64) -> Self {
        CardSerial(v.to_be_bytes())
    }

    pub fn as_u64(self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    /// Parse 16 hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        let v = hex::decode(s.trim()).ok()?;
        Some(CardSerial(v.try_into().ok()?))
    }
}

impl fmt::Display for CardSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(hex::Buffer::<8>::new().format_upper(&self.0))
    }
}

impl fmt::Debug for CardSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardSerial({self})")
    }
}

impl Serialize for CardSerial {
    /// The 16 hex digits, formatted on the stack: a card writes its state, serials included, at every
    /// step of a settlement.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(hex::Buffer::<8>::new().format_upper(&self.0))
    }
}

impl<'de> Deserialize<'de> for CardSerial {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CardSerial::parse(&s).ok_or_else(|| serde::de::Error::custom("card serial must be 16 hex digits"))
    }
}

/// Serde for byte strings: lower-case hex text in human-readable formats (JSON output, version 2 card
/// files written as JSON), the bytes themselves in binary ones (the CBOR card file, RFC 8949 §3.1 major
/// type 2). The one hex module of the crate. `#[serde(with = "crate::domain::serde_hex")]` on a field
/// of any [`HexBytes`] type, and `serde_hex::option` on an `Option` of one. The hex text of a secret is
/// built in a zeroizing buffer.
pub mod serde_hex {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::marker::PhantomData;
    use zeroize::Zeroizing;

    /// A value that is a byte string on the outside.
    pub trait HexBytes: Sized {
        fn hex_bytes(&self) -> &[u8];
        /// `None` when the bytes do not make a value (a wrong length); the error says `expected`.
        fn from_hex_bytes(bytes: &[u8]) -> Option<Self>;
        /// What the bytes must be, for the error message ("16 bytes").
        fn expected() -> String;
    }

    impl<const N: usize> HexBytes for [u8; N] {
        fn hex_bytes(&self) -> &[u8] {
            self
        }
        fn from_hex_bytes(bytes: &[u8]) -> Option<Self> {
            bytes.try_into().ok()
        }
        fn expected() -> String {
            format!("{N} hex-encoded bytes")
        }
    }

    impl HexBytes for Vec<u8> {
        fn hex_bytes(&self) -> &[u8] {
            self
        }
        fn from_hex_bytes(bytes: &[u8]) -> Option<Self> {
            Some(bytes.to_vec())
        }
        fn expected() -> String {
            "hex-encoded bytes".into()
        }
    }

    fn decode<T: HexBytes, E: serde::de::Error>(text: &str) -> Result<T, E> {
        let bytes = Zeroizing::new(hex::decode(text).map_err(E::custom)?);
        T::from_hex_bytes(&bytes).ok_or_else(|| E::custom(format!("expected {}", T::expected())))
    }

    /// Lower-case hex of `bytes` in a zeroizing buffer of exactly the right size, by table lookup
    /// (`hex::encode` builds its `String` one `char` at a time: the card writes its whole state file,
    /// certificates included, on every state change, and this was most of that write's cost).
    fn to_hex(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(vec![0u8; 2 * bytes.len()]);
        hex::encode_to_slice(bytes, &mut out).expect("the buffer is twice the input");
        out
    }

    fn serialize_hex<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return s.serialize_bytes(bytes);
        }
        let text = to_hex(bytes);
        s.serialize_str(std::str::from_utf8(&text).expect("hex digits are ASCII"))
    }

    pub fn serialize<T: HexBytes, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        serialize_hex(v.hex_bytes(), s)
    }

    pub fn deserialize<'de, T: HexBytes, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        if d.is_human_readable() {
            decode(&Zeroizing::new(String::deserialize(d)?))
        } else {
            d.deserialize_bytes(BytesVisitor(PhantomData))
        }
    }

    /// A binary format's byte string, made into a `T` without another copy (a copy the format made
    /// for us, `visit_byte_buf`, is zeroized once read).
    struct BytesVisitor<T>(PhantomData<T>);

    impl<T: HexBytes> serde::de::Visitor<'_> for BytesVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a byte string ({})", T::expected())
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<T, E> {
            T::from_hex_bytes(v).ok_or_else(|| E::custom(format!("expected {}", T::expected())))
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<T, E> {
            self.visit_bytes(&Zeroizing::new(v))
        }
    }

    /// A `T` in either form, for `Option`s of one.
    struct Either<T>(T);

    impl<'de, T: HexBytes> Deserialize<'de> for Either<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize(d).map(Either)
        }
    }

    /// Bytes that serialize as their hex text.
    struct Hex<'a>(&'a [u8]);

    impl serde::Serialize for Hex<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize_hex(self.0, s)
        }
    }

    /// The same for an optional value (`null` when absent).
    pub mod option {
        use super::*;

        pub fn serialize<T: HexBytes, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_some(&Hex(v.hex_bytes())),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, T: HexBytes, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
            Ok(Option::<Either<T>>::deserialize(d)?.map(|e| e.0))
        }
    }
}

/// An amount of value in minor currency units (DESIGN.md §1: never negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Amount(pub u64);

impl Amount {
    /// The largest amount the back office handles: 2^53 - 1, so every amount is exact in JSON (IEEE
    /// double) and in SQLite's signed 64-bit integers. Card balances on the wire stay 8 bytes.
    pub const MAX: Amount = Amount((1 << 53) - 1);

    /// An amount within `0..=MAX`.
    pub fn new(v: u64) -> Option<Amount> {
        (v <= Self::MAX.0).then_some(Amount(v))
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}

/// A sum of amounts over many cards. 128 bits: a sum of 2^64 amounts of up to 2^64 - 1 each fits, so
/// sums over any fleet never wrap (issue 14 item 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Total(pub u128);

impl std::ops::Add<Amount> for Total {
    type Output = Total;
    fn add(self, a: Amount) -> Total {
        Total(self.0 + a.0 as u128)
    }
}

impl std::ops::AddAssign<Amount> for Total {
    fn add_assign(&mut self, a: Amount) {
        self.0 += a.0 as u128;
    }
}

impl std::iter::Sum<Amount> for Total {
    fn sum<I: Iterator<Item = Amount>>(iter: I) -> Total {
        iter.fold(Total(0), |t, a| t + a)
    }
}

impl fmt::Display for Total {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Card profile: which of the seed's card claims a personalisation follows (DESIGN.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Claims 1, 2, 17: one transfer key, rolled under the update key.
    Symmetric,
    /// Claims 3, 4, 18: one transfer key, rolled with card key pairs and certificates.
    PublicKey,
    /// Claims 5–7: both; the terminal picks the path by update key identifiers (claims 14–16).
    Hybrid,
    /// Claims 8, 9: several transfer keys and a selected identifier.
    MultiKey,
}

impl Profile {
    pub const ALL: [Profile; 4] = [Profile::Symmetric, Profile::PublicKey, Profile::Hybrid, Profile::MultiKey];

    pub fn code(self) -> u8 {
        match self {
            Profile::Symmetric => 1,
            Profile::PublicKey => 2,
            Profile::Hybrid => 3,
            Profile::MultiKey => 4,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        Profile::ALL.into_iter().find(|p| p.code() == c)
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Symmetric => "symmetric",
            Profile::PublicKey => "public-key",
            Profile::Hybrid => "hybrid",
            Profile::MultiKey => "multi-key",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Profile::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Whether the card holds an update key (symmetric path possible).
    pub fn has_update_key(self) -> bool {
        !matches!(self, Profile::PublicKey)
    }

    /// Whether the card holds a key pair and certificate (public-key path possible).
    pub fn has_key_pair(self) -> bool {
        matches!(self, Profile::PublicKey | Profile::Hybrid)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A chip's factory identifier (DESIGN.md §10 point 1): 8 bytes the manufacturer assigns, named in the
/// subject `serialNumber` of both factory certificates, shown as 16 hex digits. Public. A chip id gets
/// exactly one card serial, ever (the back office enforces it).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ChipId(pub [u8; 8]);

impl ChipId {
    pub const LEN: usize = 8;

    /// Parse 16 hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        let v = hex::decode(s.trim()).ok()?;
        Some(ChipId(v.try_into().ok()?))
    }
}

impl fmt::Display for ChipId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(hex::Buffer::<8>::new().format_upper(&self.0))
    }
}

impl fmt::Debug for ChipId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChipId({self})")
    }
}

impl Serialize for ChipId {
    /// The 16 hex digits, formatted on the stack: a card writes its state, serials included, at every
    /// step of a settlement.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(hex::Buffer::<8>::new().format_upper(&self.0))
    }
}

impl<'de> Deserialize<'de> for ChipId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChipId::parse(&s).ok_or_else(|| serde::de::Error::custom("chip id must be 16 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_rule_is_strict_below_and_inclusive_at_limit() {
        let l = TransferKeyIdLimit(5);
        assert!(may_install(TransferKeyId(1), TransferKeyId(2), l));
        assert!(may_install(TransferKeyId(1), TransferKeyId(5), l));
        assert!(!may_install(TransferKeyId(1), TransferKeyId(6), l));
        assert!(!may_install(TransferKeyId(2), TransferKeyId(2), l));
        assert!(!may_install(TransferKeyId(3), TransferKeyId(2), l));
    }

    #[test]
    fn serial_and_profile_round_trip() {
        let s = CardSerial::from_u64(0x0102_0304_0506_0708);
        assert_eq!(s.to_string(), "0102030405060708");
        assert_eq!(CardSerial::parse(&s.to_string()), Some(s));
        assert_eq!(CardSerial::parse("xyz"), None);
        for p in Profile::ALL {
            assert_eq!(Profile::from_code(p.code()), Some(p));
            assert_eq!(Profile::parse(p.name()), Some(p));
        }
        assert_eq!(Profile::from_code(0), None);
    }

    #[test]
    fn amounts_are_bounded_and_totals_do_not_wrap() {
        assert_eq!(Amount::new(Amount::MAX.0), Some(Amount::MAX));
        assert_eq!(Amount::new(Amount::MAX.0 + 1), None);
        assert_eq!(Amount(u64::MAX).checked_add(Amount(1)), None);
        let t: Total = std::iter::repeat_n(Amount(u64::MAX), 4).sum();
        assert_eq!(t.0, 4 * u64::MAX as u128);
    }

    #[test]
    fn serde_hex_is_one_format_for_arrays_vectors_and_options() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "super::serde_hex")]
            a: [u8; 2],
            #[serde(with = "super::serde_hex")]
            v: Vec<u8>,
            #[serde(with = "super::serde_hex::option")]
            o: Option<Vec<u8>>,
            #[serde(with = "super::serde_hex::option")]
            n: Option<[u8; 1]>,
        }
        let t = T { a: [0xAB, 0x01], v: vec![], o: Some(vec![0xFF]), n: None };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"a":"ab01","v":"","o":"ff","n":null}"#);
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), t);
        let short = serde_json::from_str::<T>(r#"{"a":"ab","v":"","o":null,"n":null}"#).unwrap_err();
        assert!(short.to_string().contains("expected 2 hex-encoded bytes"), "{short}");
        assert!(serde_json::from_str::<T>(r#"{"a":"zz01","v":"","o":null,"n":null}"#).is_err());
        // Every byte value, as `hex::encode` writes it (the format of existing card files).
        let all: Vec<u8> = (0..=255).collect();
        let t = T { a: [0, 0xFF], v: all.clone(), o: Some(all.clone()), n: Some([0x7F]) };
        let h = hex::encode(&all);
        assert_eq!(serde_json::to_string(&t).unwrap(), format!(r#"{{"a":"00ff","v":"{h}","o":"{h}","n":"7f"}}"#));
    }
}
