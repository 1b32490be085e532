//! Distinguished names (RFC 5280 §4.1.2.4, compared per §7.1) and general names (§4.2.1.6).

use super::PathError;
use super::der::{self, Reader, tag};
use std::sync::OnceLock;

fn malformed(what: &str) -> PathError {
    PathError::Malformed { what: what.to_string() }
}

/// One attribute of a relative distinguished name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Attribute {
    oid: Vec<u8>,
    /// Comparison form: for directory strings, ASCII case folded and white space compressed
    /// (a practical subset of the RFC 4518 preparation §7.1 asks for); else tag and raw value.
    value: Vec<u8>,
}

/// A distinguished name: its DER bytes and, built at first need, a comparison form.
///
/// Parsing checks the structure only; the comparison form (string preparation of every attribute)
/// is made the first time two names differ byte for byte or a subtree is asked about. A card
/// certificate's issuer is byte-identical to its anchor's subject, so a public-key roll never makes
/// it (issue 15: about a third of the time a card spent parsing certificates).
#[derive(Clone, Debug)]
pub struct Name {
    /// The complete DER encoding (tag included).
    pub raw: Vec<u8>,
    rdns: OnceLock<Vec<Vec<Attribute>>>,
}

fn directory_string_form(tag: u8, value: &[u8]) -> Option<Vec<u8>> {
    match tag {
        tag::PRINTABLE_STRING | tag::UTF8_STRING | tag::IA5_STRING | tag::TELETEX_STRING => {
            let s = std::str::from_utf8(value).ok()?;
            let folded: Vec<&str> = s.split_whitespace().collect();
            Some(folded.join(" ").to_ascii_lowercase().into_bytes())
        }
        _ => None,
    }
}

/// Walks `Name ::= RDNSequence` in one complete TLV, checking its structure, and hands each attribute
/// (RDN index, OID content octets, value TLV) to `each`.
fn walk<'a>(raw: &'a [u8], what: &str, mut each: impl FnMut(usize, &'a [u8], &der::Tlv<'a>)) -> Result<(), PathError> {
    let seq = der::single(raw, tag::SEQUENCE, what)?;
    let mut r = Reader::new(seq.value);
    let mut rdn = 0;
    while !r.is_empty() {
        let set = r.read(tag::SET, what)?;
        let mut sr = Reader::new(set.value);
        // RelativeDistinguishedName ::= SET SIZE (1..MAX) (§4.1.2.4).
        if sr.is_empty() {
            return Err(malformed(&format!("{what}: empty RDN")));
        }
        while !sr.is_empty() {
            let mut atv = sr.sequence(what)?;
            let oid = atv.read(tag::OID, what)?;
            let value = atv.read_any(what)?;
            atv.finish(what)?;
            each(rdn, oid.value, &value);
        }
        rdn += 1;
    }
    Ok(())
}

impl Name {
    /// Parses `Name ::= RDNSequence` from one complete TLV.
    pub fn parse(raw: &[u8], what: &str) -> Result<Name, PathError> {
        walk(raw, what, |_, _, _| ())?;
        Ok(Name { raw: raw.to_vec(), rdns: OnceLock::new() })
    }

    /// The comparison form: per RDN, its attributes sorted, directory strings prepared.
    fn rdns(&self) -> &[Vec<Attribute>] {
        self.rdns.get_or_init(|| {
            let mut rdns: Vec<Vec<Attribute>> = Vec::new();
            // The structure was checked by `parse`, so the walk cannot fail here.
            let _ = walk(&self.raw, "name", |i, oid, value| {
                let cmp = match directory_string_form(value.tag, value.value) {
                    Some(mut v) => {
                        v.insert(0, 0);
                        v
                    }
                    None => value.raw.to_vec(),
                };
                if rdns.len() <= i {
                    rdns.push(Vec::new());
                }
                if let Some(rdn) = rdns.last_mut() {
                    rdn.push(Attribute { oid: oid.to_vec(), value: cmp });
                }
            });
            for rdn in &mut rdns {
                rdn.sort();
            }
            rdns
        })
    }

    /// An empty RDNSequence.
    pub fn is_empty(&self) -> bool {
        der::single(&self.raw, tag::SEQUENCE, "name").is_ok_and(|seq| seq.value.is_empty())
    }

    /// Name equality per §7.1: byte-equal, or equal after string preparation.
    pub fn matches(&self, other: &Name) -> bool {
        self.raw == other.raw || self.rdns() == other.rdns()
    }

    /// Whether `self` lies within the subtree `base` (§4.2.1.10 directoryName: `base` is a prefix
    /// of the RDN sequence).
    pub fn within(&self, base: &Name) -> bool {
        let (mine, base) = (self.rdns(), base.rdns());
        base.len() <= mine.len() && mine.iter().zip(base).all(|(a, b)| a == b)
    }

    /// Values of emailAddress attributes (1.2.840.113549.1.9.1), which §4.2.1.10 subjects to
    /// rfc822Name constraints when the certificate has no subjectAltName.
    pub fn email_addresses(&self) -> Vec<String> {
        const EMAIL_ADDRESS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];
        self.attribute_texts(EMAIL_ADDRESS)
    }

    /// The values of the attributes with OID `wanted` (content octets), as text, in order.
    pub fn attribute_texts(&self, wanted: &[u8]) -> Vec<String> {
        self.attribute_values(wanted).into_iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect()
    }

    /// The value octets of the attributes with OID `wanted` (content octets), in order, borrowed.
    pub fn attribute_values(&self, wanted: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        // The structure was checked by `parse`.
        let _ = walk(&self.raw, "name", |_, oid, value| {
            if oid == wanted {
                out.push(value.value);
            }
        });
        out
    }

    /// The attribute values with OID 2.5.4.3 (commonName) or 1.2.840.113549.1.9.1 (emailAddress)
    /// as text, for messages and name-constraint checks.
    pub fn display(&self) -> String {
        let mut parts = Vec::new();
        // The structure was checked by `parse`.
        let _ = walk(&self.raw, "name", |_, oid, val| {
            let key = match oid {
                [0x55, 0x04, 0x03] => "CN".to_string(),
                [0x55, 0x04, 0x06] => "C".to_string(),
                [0x55, 0x04, 0x07] => "L".to_string(),
                [0x55, 0x04, 0x08] => "ST".to_string(),
                [0x55, 0x04, 0x0a] => "O".to_string(),
                [0x55, 0x04, 0x0b] => "OU".to_string(),
                [0x55, 0x04, 0x05] => "serialNumber".to_string(),
                o => der::oid_string(o),
            };
            parts.push(format!("{key}={}", String::from_utf8_lossy(val.value)));
        });
        parts.join(", ")
    }
}

/// A `GeneralName` (§4.2.1.6) in the forms path validation looks at.
#[derive(Clone, Debug)]
pub enum GeneralName {
    Rfc822(String),
    Dns(String),
    Directory(Name),
    Uri(String),
    Ip(Vec<u8>),
    /// otherName, x400Address, ediPartyName, registeredID: carried by tag only.
    Other(u8),
}

fn ia5(value: &[u8], what: &str) -> Result<String, PathError> {
    if value.is_ascii() {
        Ok(String::from_utf8_lossy(value).into_owned())
    } else {
        Err(malformed(&format!("{what}: IA5String is not ASCII")))
    }
}

impl GeneralName {
    pub fn parse(tlv: &der::Tlv<'_>, what: &str) -> Result<GeneralName, PathError> {
        Ok(match tlv.tag {
            0x81 => GeneralName::Rfc822(ia5(tlv.value, what)?),
            0x82 => GeneralName::Dns(ia5(tlv.value, what)?),
            // directoryName [4] is EXPLICIT (Name is a CHOICE).
            0xa4 => {
                let mut r = Reader::new(tlv.value);
                let inner = r.read(tag::SEQUENCE, what)?;
                r.finish(what)?;
                GeneralName::Directory(Name::parse(inner.raw, what)?)
            }
            0x86 => GeneralName::Uri(ia5(tlv.value, what)?),
            0x87 => GeneralName::Ip(tlv.value.to_vec()),
            0xa0 | 0xa3 | 0xa5 | 0x88 => GeneralName::Other(tlv.tag),
            t => {
                return Err(malformed(&format!("{what}: unknown GeneralName tag {t:#04x}")));
            }
        })
    }

    /// Parses `GeneralNames ::= SEQUENCE SIZE (1..MAX) OF GeneralName`.
    pub fn parse_sequence(data: &[u8], what: &str) -> Result<Vec<GeneralName>, PathError> {
        let seq = der::single(data, tag::SEQUENCE, what)?;
        let mut r = Reader::new(seq.value);
        let mut out = Vec::new();
        while !r.is_empty() {
            out.push(GeneralName::parse(&r.read_any(what)?, what)?);
        }
        if out.is_empty() {
            return Err(malformed(&format!("{what}: empty GeneralNames")));
        }
        Ok(out)
    }

    /// Syntax checks of §4.2.1.6 for names in a subjectAltName: dNSName in preferred name syntax
    /// (RFC 1034 §3.5, RFC 1123 §2.1; a leading `*` label tolerated), rfc822Name as an addr-spec,
    /// iPAddress of 4 or 16 octets, non-empty URIs.
    pub fn check_san_syntax(&self) -> Result<(), PathError> {
        match self {
            GeneralName::Dns(d) => {
                let body = d.strip_prefix("*.").unwrap_or(d);
                if is_dns_name(body) {
                    Ok(())
                } else {
                    Err(malformed(&format!(
                        "subjectAltName dNSName {d:?} is not in preferred name syntax (RFC 5280 §4.2.1.6)"
                    )))
                }
            }
            GeneralName::Rfc822(m) => match m.rsplit_once('@') {
                // RFC 5322 dot-atom local part (quoted local parts are not accepted).
                Some((local, domain))
                    if !local.is_empty()
                        && local.split('.').all(|a| !a.is_empty() && a.bytes().all(is_atext))
                        && is_dns_name(domain) =>
                {
                    Ok(())
                }
                _ => Err(malformed(&format!("subjectAltName rfc822Name {m:?} is not a mailbox (RFC 5280 §4.2.1.6)"))),
            },
            GeneralName::Ip(ip) if ip.len() == 4 || ip.len() == 16 => Ok(()),
            GeneralName::Ip(_) => Err(malformed("subjectAltName iPAddress is not 4 or 16 octets (RFC 5280 §4.2.1.6)")),
            GeneralName::Uri(u) if u.is_empty() => Err(malformed("subjectAltName URI is empty (RFC 5280 §4.2.1.6)")),
            _ => Ok(()),
        }
    }
}

/// RFC 5322 §3.2.3 atext.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// RFC 1034 §3.5 preferred name syntax as relaxed by RFC 1123 §2.1 (labels may start with a
/// digit). Case-insensitive, no trailing dot, no empty labels.
pub fn is_dns_name(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(cn: &[u8], string_tag: u8) -> Name {
        let mut atv = vec![0x06, 0x03, 0x55, 0x04, 0x03, string_tag, cn.len() as u8];
        atv.extend_from_slice(cn);
        let mut seq = vec![0x30, atv.len() as u8];
        seq.extend(atv);
        let mut set = vec![0x31, seq.len() as u8];
        set.extend(seq);
        let mut out = vec![0x30, set.len() as u8];
        out.extend(set);
        Name::parse(&out, "test").unwrap()
    }

    #[test]
    fn names_compare_case_insensitively_across_string_types() {
        assert!(name(b"Issuer  CA", tag::PRINTABLE_STRING).matches(&name(b"issuer ca", tag::UTF8_STRING)));
        assert!(!name(b"Issuer CA", tag::PRINTABLE_STRING).matches(&name(b"Issuer CB", tag::PRINTABLE_STRING)));
    }

    /// Parsing checks the structure but leaves string preparation until two names differ byte for
    /// byte (issue 15); the prepared form gives the same answers.
    #[test]
    fn the_comparison_form_is_made_only_when_bytes_differ() {
        let a = name(b"Issuer CA", tag::PRINTABLE_STRING);
        let b = name(b"Issuer CA", tag::PRINTABLE_STRING);
        assert!(a.matches(&b));
        assert!(a.rdns.get().is_none() && b.rdns.get().is_none(), "byte-equal names compare as bytes");
        let c = name(b"issuer   ca", tag::UTF8_STRING);
        assert!(a.matches(&c) && a.within(&c) && c.within(&a));
        assert!(a.rdns.get().is_some());
        assert!(!a.is_empty());
        assert!(Name::parse(&[0x30, 0x00], "empty").unwrap().is_empty());
        // An empty RDN, an attribute without a value, trailing bytes: refused at parse, as before.
        assert!(Name::parse(&[0x30, 0x02, 0x31, 0x00], "t").is_err());
        assert!(Name::parse(&[0x30, 0x09, 0x31, 0x07, 0x30, 0x05, 0x06, 0x03, 0x55, 0x04, 0x03], "t").is_err());
        let mut trailing = a.raw.clone();
        trailing.push(0);
        assert!(Name::parse(&trailing, "t").is_err());
    }

    #[test]
    fn dns_syntax() {
        assert!(is_dns_name("card-1.example.com"));
        assert!(!is_dns_name("under_score.example.com"));
        assert!(!is_dns_name("-x.example"));
        assert!(!is_dns_name("a..b"));
    }
}
