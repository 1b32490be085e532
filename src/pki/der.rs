//! A minimal, strict DER reader (X.690 §8 and §10) for the parts of X.509 that path validation needs.
//!
//! Only what RFC 5280 certificates and CRLs use: single-byte tags, definite lengths in minimal form
//! (X.690 §10.1), at most four length octets (bounded: no certificate is 4 GiB). Every read is
//! bounds-checked; nothing here can panic on input.

use super::PathError;

/// ASN.1 universal and context tags used by RFC 5280 (X.690 §8.1.2).
pub mod tag {
    pub const BOOLEAN: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const PRINTABLE_STRING: u8 = 0x13;
    pub const TELETEX_STRING: u8 = 0x14;
    pub const IA5_STRING: u8 = 0x16;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    /// `[n]` constructed, context-specific.
    pub const fn ctx_cons(n: u8) -> u8 {
        0xa0 | n
    }
    /// `[n]` primitive, context-specific.
    pub const fn ctx_prim(n: u8) -> u8 {
        0x80 | n
    }
}

/// One tag-length-value element.
#[derive(Clone, Copy, Debug)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
    /// The whole encoding, tag and length included.
    pub raw: &'a [u8],
}

/// A cursor over DER bytes.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

fn malformed(what: &str) -> PathError {
    PathError::Malformed { what: what.to_string() }
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next tag, without consuming it.
    pub fn peek_tag(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    /// Reads any element. `what` names the field for the error message.
    pub fn read_any(&mut self, what: &str) -> Result<Tlv<'a>, PathError> {
        let start = self.pos;
        let rest = self.data.get(start..).unwrap_or(&[]);
        let (&tag, rest) = rest.split_first().ok_or_else(|| malformed(&format!("{what}: missing")))?;
        if tag & 0x1f == 0x1f {
            // High tag numbers (X.690 §8.1.2.4) do not occur in RFC 5280 structures.
            return Err(malformed(&format!("{what}: multi-byte tag")));
        }
        let (&first, rest) = rest.split_first().ok_or_else(|| malformed(&format!("{what}: missing length")))?;
        let (len, len_octets) = if first < 0x80 {
            (first as usize, 1usize)
        } else if first == 0x80 {
            // Indefinite length is BER only (X.690 §10.1).
            return Err(malformed(&format!("{what}: indefinite length")));
        } else {
            let n = (first & 0x7f) as usize;
            if n > 4 {
                return Err(malformed(&format!("{what}: length too long")));
            }
            let bytes = rest.get(..n).ok_or_else(|| malformed(&format!("{what}: truncated length")))?;
            let mut len = 0usize;
            for &b in bytes {
                len = (len << 8) | b as usize;
            }
            // X.690 §10.1: the minimum number of length octets.
            if len < 0x80 || bytes.first() == Some(&0) {
                return Err(malformed(&format!("{what}: non-minimal length")));
            }
            (len, 1 + n)
        };
        let header = 1 + len_octets;
        let end = start
            .checked_add(header)
            .and_then(|h| h.checked_add(len))
            .ok_or_else(|| malformed(&format!("{what}: length overflow")))?;
        if end > self.data.len() {
            return Err(malformed(&format!("{what}: truncated")));
        }
        let value = &self.data[start + header..end];
        let raw = &self.data[start..end];
        self.pos = end;
        Ok(Tlv { tag, value, raw })
    }

    /// Reads an element that must carry `expected` as its tag.
    pub fn read(&mut self, expected: u8, what: &str) -> Result<Tlv<'a>, PathError> {
        let tlv = self.read_any(what)?;
        if tlv.tag != expected {
            return Err(malformed(&format!("{what}: expected tag {expected:#04x}, found {:#04x}", tlv.tag)));
        }
        Ok(tlv)
    }

    /// Reads an element with tag `expected` if it is next.
    pub fn read_optional(&mut self, expected: u8, what: &str) -> Result<Option<Tlv<'a>>, PathError> {
        if self.peek_tag() == Some(expected) { self.read(expected, what).map(Some) } else { Ok(None) }
    }

    /// Reads a SEQUENCE and returns a reader over its contents.
    pub fn sequence(&mut self, what: &str) -> Result<Reader<'a>, PathError> {
        Ok(Reader::new(self.read(tag::SEQUENCE, what)?.value))
    }

    /// Fails if anything is left (trailing data is malformed, X.690 §8.1.1).
    pub fn finish(&self, what: &str) -> Result<(), PathError> {
        if self.is_empty() { Ok(()) } else { Err(malformed(&format!("{what}: trailing data"))) }
    }
}

/// Decodes a DER element that must fill `data` exactly.
pub fn single<'a>(data: &'a [u8], expected: u8, what: &str) -> Result<Tlv<'a>, PathError> {
    let mut r = Reader::new(data);
    let tlv = r.read(expected, what)?;
    r.finish(what)?;
    Ok(tlv)
}

/// A DER BOOLEAN: exactly one octet, 0x00 or 0xFF (X.690 §11.1).
pub fn boolean(tlv: &Tlv<'_>, what: &str) -> Result<bool, PathError> {
    match tlv.value {
        [0x00] => Ok(false),
        [0xff] => Ok(true),
        _ => Err(malformed(&format!("{what}: invalid BOOLEAN"))),
    }
}

/// Checks INTEGER content is minimally encoded (X.690 §8.3.2).
pub fn integer_bytes<'a>(tlv: &Tlv<'a>, what: &str) -> Result<&'a [u8], PathError> {
    match tlv.value {
        [] => Err(malformed(&format!("{what}: empty INTEGER"))),
        [0x00, b, ..] if b & 0x80 == 0 => Err(malformed(&format!("{what}: non-minimal INTEGER"))),
        [0xff, b, ..] if b & 0x80 != 0 => Err(malformed(&format!("{what}: non-minimal INTEGER"))),
        v => Ok(v),
    }
}

/// A small non-negative INTEGER (e.g. pathLenConstraint, version).
pub fn small_uint(tlv: &Tlv<'_>, what: &str) -> Result<u64, PathError> {
    let v = integer_bytes(tlv, what)?;
    if v[0] & 0x80 != 0 {
        return Err(malformed(&format!("{what}: negative INTEGER")));
    }
    let v = if v[0] == 0 { &v[1..] } else { v };
    if v.len() > 8 {
        return Err(malformed(&format!("{what}: INTEGER too large")));
    }
    Ok(v.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64))
}

/// A BIT STRING's bytes, requiring zero unused bits (signatures, keys).
pub fn bit_string_octets<'a>(tlv: &Tlv<'a>, what: &str) -> Result<&'a [u8], PathError> {
    match tlv.value.split_first() {
        Some((0, rest)) => Ok(rest),
        _ => Err(malformed(&format!("{what}: BIT STRING with unused bits"))),
    }
}

/// A named-bit BIT STRING (keyUsage) as bits, MSB-first (bit 0 = 0x80 of the first octet).
/// DER requires trailing zero bits removed (X.690 §11.2.2) and unused bits zero.
pub fn named_bits(tlv: &Tlv<'_>, what: &str) -> Result<u32, PathError> {
    let (&unused, bytes) = tlv.value.split_first().ok_or_else(|| malformed(&format!("{what}: empty BIT STRING")))?;
    if unused > 7 || (bytes.is_empty() && unused != 0) || bytes.len() > 4 {
        return Err(malformed(&format!("{what}: invalid BIT STRING")));
    }
    if let Some(&last) = bytes.last() {
        if last & ((1u8 << unused) - 1) != 0 {
            return Err(malformed(&format!("{what}: non-zero unused bits")));
        }
        if last == 0 || (last >> unused) & 1 == 0 {
            return Err(malformed(&format!("{what}: trailing zero bits (not DER)")));
        }
    }
    let mut bits = 0u32;
    for (i, &b) in bytes.iter().enumerate() {
        bits |= (b as u32) << (24 - 8 * i);
    }
    Ok(bits)
}

/// Renders an OID's content octets as dotted decimal for messages (X.690 §8.19).
pub fn oid_string(oid: &[u8]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut acc: u64 = 0;
    let mut first = true;
    for &b in oid {
        acc = acc.saturating_mul(128).saturating_add((b & 0x7f) as u64);
        if b & 0x80 == 0 {
            if first {
                let (a, c) = if acc < 40 {
                    (0, acc)
                } else if acc < 80 {
                    (1, acc - 40)
                } else {
                    (2, acc - 80)
                };
                parts.push(a.to_string());
                parts.push(c.to_string());
                first = false;
            } else {
                parts.push(acc.to_string());
            }
            acc = 0;
        }
    }
    if parts.is_empty() { "<empty oid>".to_string() } else { parts.join(".") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_indefinite_and_non_minimal_lengths() {
        assert!(Reader::new(&[0x30, 0x80, 0, 0]).read_any("x").is_err());
        assert!(Reader::new(&[0x04, 0x81, 0x01, 0xaa]).read_any("x").is_err());
        assert!(Reader::new(&[0x04, 0x02, 0xaa]).read_any("x").is_err());
        assert!(Reader::new(&[0x04, 0x01, 0xaa]).read_any("x").is_ok());
    }

    #[test]
    fn oid_rendering() {
        assert_eq!(oid_string(&[0x55, 0x1d, 0x13]), "2.5.29.19");
        assert_eq!(oid_string(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]), "1.2.840.10045.4.3.2");
    }
}
