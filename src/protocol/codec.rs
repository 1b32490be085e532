//! The one codec of the wire protocol, after rustls' `msgs/codec.rs`: a bounds-checked [`Reader`] cursor
//! and the [`Wire`] trait that every wire type implements (commands, typed responses, personalisation
//! items, GET CARD INFO). Every read names the field it wanted, lengths are capped, and trailing bytes are
//! an error. A [`DecodeError`] knows the ISO/IEC 7816-4 §5.6 status word a card answers for it.

use super::status::StatusWord;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum DecodeError {
    #[error("field `{field}` truncated: needed {needed} bytes, {left} left")]
    Truncated { field: &'static str, needed: usize, left: usize },
    #[error("{0} unexpected trailing bytes")]
    Trailing(usize),
    #[error("field `{field}` is invalid: {why}")]
    Invalid { field: &'static str, why: &'static str },
    #[error("field `{field}` has the wrong length: {why}")]
    Length { field: &'static str, why: &'static str },
    #[error("field `{field}` of {len} bytes exceeds the limit of {max} bytes")]
    TooLong { field: &'static str, len: usize, max: usize },
    #[error("TLV length of tag {tag:#04x} is malformed")]
    BadTlvLength { tag: u8 },
    #[error("malformed APDU: {0}")]
    Apdu(#[from] super::apdu::ApduError),
    #[error("class byte {cla:#04x} is not supported")]
    Class { cla: u8 },
    #[error("instruction {ins:#04x} is not supported")]
    Instruction { ins: u8 },
    #[error("P1-P2 {p1:02X}{p2:02X} is not allowed for this instruction")]
    Parameters { p1: u8, p2: u8 },
}

impl DecodeError {
    /// The status word a card answers for a command it cannot decode (ISO/IEC 7816-4 §5.6, house rule
    /// 1): unknown class 6E00, unknown instruction 6D00, bad P1-P2 6A86, a length that does not fit
    /// 6700, a well-formed field with a value the protocol does not allow 6A80.
    pub fn status_word(&self) -> StatusWord {
        match self {
            DecodeError::Class { .. } => StatusWord::ClaNotSupported,
            DecodeError::Instruction { .. } => StatusWord::InsNotSupported,
            DecodeError::Parameters { .. } => StatusWord::IncorrectP1P2,
            DecodeError::Invalid { .. } => StatusWord::IncorrectData,
            DecodeError::Truncated { .. }
            | DecodeError::Trailing(_)
            | DecodeError::Length { .. }
            | DecodeError::TooLong { .. }
            | DecodeError::BadTlvLength { .. }
            | DecodeError::Apdu(_) => StatusWord::WrongLength,
        }
    }
}

impl From<DecodeError> for StatusWord {
    fn from(e: DecodeError) -> Self {
        e.status_word()
    }
}

/// A value with a byte layout on the wire: the one encode/decode trait of the protocol (rustls'
/// `Codec`). The card and the terminal both go through it, so each layout is written down once.
///
/// `Context` is what a decoder must know that the bytes do not say: the key-roll path of GET TRANSFER
/// KEY's answer, the item (P1) of a personalisation payload. Most types take `()`.
pub trait Wire: Sized {
    type Context: Copy;

    /// Append the encoding to `out` (callers encoding secrets pass a zeroizing buffer).
    fn encode(&self, out: &mut Vec<u8>);

    /// Read one value from `r`, leaving what follows it.
    fn read(r: &mut Reader<'_>, context: Self::Context) -> Result<Self, DecodeError>;

    /// Bytes beyond the first 128 the encoding may take (a certificate it carries), so that
    /// [`Wire::to_wire`] allocates once.
    fn extra_len(&self) -> usize {
        0
    }

    /// The encoding as a new buffer, with room for most layouts up front (one allocation, not a
    /// doubling series).
    fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.extra_len());
        self.encode(&mut out);
        out
    }

    /// Decode exactly one value: trailing bytes are an error.
    fn from_wire(bytes: &[u8], context: Self::Context) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = Self::read(&mut r, context)?;
        r.finish()?;
        Ok(v)
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.left() < n {
            return Err(DecodeError::Truncated { field, needed: n, left: self.left() });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N, field)?.try_into().expect("length checked"))
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Everything that is left, at most `max` bytes (decoders cap what they accept, house rule 5).
    pub fn rest_capped(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        if self.left() > max {
            return Err(DecodeError::TooLong { field, len: self.left(), max });
        }
        Ok(self.rest())
    }

    /// Everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    /// Fail if anything is left (house rule: decoders reject trailing bytes).
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.left() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }

    /// One simple-TLV item: a 1-byte tag and a BER length of 1 to 3 bytes (ISO/IEC 7816-4 §5.2.2.2).
    pub fn tlv(&mut self) -> Result<(u8, &'a [u8]), DecodeError> {
        let tag = self.u8("tag")?;
        let first = self.u8("length")?;
        let len = match first {
            0..=0x7F => first as usize,
            0x81 => self.u8("length")? as usize,
            0x82 => u16::from_be_bytes(self.array("length")?) as usize,
            _ => return Err(DecodeError::BadTlvLength { tag }),
        };
        Ok((tag, self.take(len, "value")?))
    }
}

/// Append one TLV item (see [`Reader::tlv`]).
pub fn put_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    match value.len() {
        n @ 0..=0x7F => out.push(n as u8),
        n @ 0x80..=0xFF => out.extend_from_slice(&[0x81, n as u8]),
        n => {
            let n = u16::try_from(n).expect("TLV values are bounded by the APDU size");
            out.push(0x82);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_round_trip_all_length_forms() {
        for n in [0usize, 1, 127, 128, 255, 256, 1000] {
            let v = vec![0x42; n];
            let mut out = Vec::new();
            put_tlv(&mut out, 0x80, &v);
            let mut r = Reader::new(&out);
            let (t, got) = r.tlv().unwrap();
            assert_eq!((t, got), (0x80, &v[..]));
            r.finish().unwrap();
        }
    }

    #[test]
    fn truncation_and_trailing_are_named() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32("amount"), Err(DecodeError::Truncated { field: "amount", needed: 4, left: 3 }));
        let mut r = Reader::new(&[1, 2, 3]);
        r.u8("x").unwrap();
        assert_eq!(r.finish(), Err(DecodeError::Trailing(2)));
        assert!(Reader::new(&[0x80, 0x83, 0, 0, 0]).tlv().is_err());
    }
}
