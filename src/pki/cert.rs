//! X.509 v3 certificates (RFC 5280 §4.1) parsed strictly from DER, with the extensions path
//! validation processes (§4.2.1) decoded.

use super::PathError;
use super::der::{self, Reader, tag};
use super::name::{GeneralName, Name};
use super::time;

fn malformed(what: impl Into<String>) -> PathError {
    PathError::Malformed { what: what.into() }
}

/// Extension and algorithm OIDs (content octets).
pub mod oid {
    pub const SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
    pub const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
    pub const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    pub const ISSUER_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x12];
    pub const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    pub const CRL_NUMBER: &[u8] = &[0x55, 0x1d, 0x14];
    pub const NAME_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x1e];
    pub const CRL_DISTRIBUTION_POINTS: &[u8] = &[0x55, 0x1d, 0x1f];
    pub const CERTIFICATE_POLICIES: &[u8] = &[0x55, 0x1d, 0x20];
    pub const AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1d, 0x23];
    pub const POLICY_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x24];
    pub const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
    pub const FRESHEST_CRL: &[u8] = &[0x55, 0x1d, 0x2e];
    pub const AUTHORITY_INFO_ACCESS: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01];
    pub const SUBJECT_INFO_ACCESS: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x0b];
    /// id-ecPublicKey (RFC 5480 §2.1.1).
    pub const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// secp256r1 / prime256v1 (RFC 5480 §2.1.1.1).
    pub const SECP256R1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    pub const SECP384R1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    pub const SECP192R1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x01];
    /// ecdsa-with-SHA256 (RFC 5758 §3.2).
    pub const ECDSA_WITH_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    pub const DSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01];
    /// anyExtendedKeyUsage (§4.2.1.12).
    pub const ANY_EKU: &[u8] = &[0x55, 0x1d, 0x25, 0x00];
}

/// keyUsage bits (§4.2.1.3), as returned by [`der::named_bits`] (bit 0 is the MSB).
pub mod ku {
    pub const DIGITAL_SIGNATURE: u32 = 1 << 31;
    pub const KEY_AGREEMENT: u32 = 1 << 27;
    pub const KEY_CERT_SIGN: u32 = 1 << 26;
    pub const CRL_SIGN: u32 = 1 << 25;
}

/// One raw extension (§4.1.2.9).
#[derive(Clone, Debug)]
pub struct Extension {
    pub oid: Vec<u8>,
    pub critical: bool,
    pub value: Vec<u8>,
}

/// basicConstraints (§4.2.1.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BasicConstraints {
    pub critical: bool,
    pub ca: bool,
    pub path_len: Option<u64>,
}

/// nameConstraints (§4.2.1.10): subtrees' bases (minimum 0, no maximum, as the profile requires).
#[derive(Clone, Debug, Default)]
pub struct NameConstraints {
    pub critical: bool,
    pub permitted: Option<Vec<GeneralName>>,
    pub excluded: Option<Vec<GeneralName>>,
}

/// A parsed certificate. Parsing fails only when the certificate's structure is broken;
/// a problem inside a known extension is kept in `extension_error` so that the certificate can
/// still be matched as an issuer candidate and the problem reported precisely.
#[derive(Clone, Debug)]
pub struct Certificate {
    pub der: Vec<u8>,
    tbs: (usize, usize),
    /// The outer signatureAlgorithm TLV (§4.1.1.2).
    pub signature_algorithm: Vec<u8>,
    /// The outer signatureValue content (§4.1.1.3), unused-bits octet removed.
    pub signature: Vec<u8>,
    /// 0 = v1, 1 = v2, 2 = v3 (§4.1.2.1).
    pub version: u64,
    /// The serialNumber INTEGER content octets (§4.1.2.2).
    pub serial: Vec<u8>,
    /// The TBSCertificate signature TLV (§4.1.2.3).
    pub tbs_signature_algorithm: Vec<u8>,
    pub issuer: Name,
    pub not_before: i64,
    pub not_after: i64,
    pub subject: Name,
    /// SubjectPublicKeyInfo (§4.1.2.7): algorithm OID, parameters TLV, key octets.
    pub spki_algorithm: Vec<u8>,
    pub spki_parameters: Option<Vec<u8>>,
    pub spki_key: Vec<u8>,
    pub spki_raw: Vec<u8>,
    pub extensions: Vec<Extension>,
    pub basic_constraints: Option<BasicConstraints>,
    pub key_usage: Option<u32>,
    pub subject_key_id: Option<Vec<u8>>,
    /// `Some(None)`: the extension is present without a keyIdentifier.
    pub authority_key_id: Option<Option<Vec<u8>>>,
    pub ext_key_usage: Option<Vec<Vec<u8>>>,
    pub subject_alt_names: Option<Vec<GeneralName>>,
    pub name_constraints: Option<NameConstraints>,
    /// The first problem found while decoding extensions (duplicate, malformed value).
    pub extension_error: Option<PathError>,
}

impl Certificate {
    /// The DER bytes the signature covers.
    pub fn tbs(&self) -> &[u8] {
        self.der.get(self.tbs.0..self.tbs.1).unwrap_or(&[])
    }

    /// Subject and issuer are the same name (§3.3 "self-issued").
    pub fn is_self_issued(&self) -> bool {
        self.subject.matches(&self.issuer)
    }

    pub fn extension(&self, id: &[u8]) -> Option<&Extension> {
        self.extensions.iter().find(|e| e.oid == id)
    }

    /// Parses one DER certificate (§4.1). Trailing bytes are refused.
    pub fn from_der(input: &[u8]) -> Result<Certificate, PathError> {
        let outer = der::single(input, tag::SEQUENCE, "Certificate")?;
        let header_len = outer.raw.len() - outer.value.len();
        let mut r = Reader::new(outer.value);
        let tbs = r.read(tag::SEQUENCE, "tbsCertificate")?;
        let tbs_start = header_len;
        let tbs_end = tbs_start + tbs.raw.len();
        let sig_alg = r.read(tag::SEQUENCE, "signatureAlgorithm")?;
        let sig = r.read(tag::BIT_STRING, "signatureValue")?;
        let signature = der::bit_string_octets(&sig, "signatureValue")?.to_vec();
        r.finish("Certificate")?;

        let mut t = Reader::new(tbs.value);
        // version [0] EXPLICIT Version DEFAULT v1; DER omits the default (X.690 §11.5).
        let version = match t.read_optional(tag::ctx_cons(0), "version")? {
            Some(v) => {
                let n = der::small_uint(&der::single(v.value, tag::INTEGER, "version")?, "version")?;
                if n == 0 {
                    return Err(malformed("version: explicit v1 (DER omits the default)"));
                }
                if n > 2 {
                    return Err(malformed(format!("version: unknown version {n}")));
                }
                n
            }
            None => 0,
        };
        let serial = der::integer_bytes(&t.read(tag::INTEGER, "serialNumber")?, "serialNumber")?.to_vec();
        let tbs_sig = t.read(tag::SEQUENCE, "signature")?.raw.to_vec();
        let issuer = Name::parse(t.read(tag::SEQUENCE, "issuer")?.raw, "issuer")?;
        let mut validity = t.sequence("validity")?;
        let not_before = time::parse_time(&validity.read_any("notBefore")?, "notBefore")?;
        let not_after = time::parse_time(&validity.read_any("notAfter")?, "notAfter")?;
        validity.finish("validity")?;
        let subject = Name::parse(t.read(tag::SEQUENCE, "subject")?.raw, "subject")?;
        let spki = t.read(tag::SEQUENCE, "subjectPublicKeyInfo")?;
        let (spki_algorithm, spki_parameters, spki_key) = parse_spki(spki.value)?;
        // issuerUniqueID [1], subjectUniqueID [2] (§4.1.2.8): v2/v3 only; not used.
        for (n, what) in [(1, "issuerUniqueID"), (2, "subjectUniqueID")] {
            if t.read_optional(tag::ctx_prim(n), what)?.is_some() && version == 0 {
                return Err(malformed(format!("{what} in a v1 certificate")));
            }
        }
        let mut extensions = Vec::new();
        if let Some(exts) = t.read_optional(tag::ctx_cons(3), "extensions")? {
            // §4.1.2.9: extensions only in v3.
            if version != 2 {
                return Err(malformed("extensions in a certificate that is not v3 (RFC 5280 §4.1.2.9)"));
            }
            let mut er = Reader::new(der::single(exts.value, tag::SEQUENCE, "extensions")?.value);
            while !er.is_empty() {
                extensions.push(parse_extension(&mut er)?);
            }
            // Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension.
            if extensions.is_empty() {
                return Err(malformed("extensions: empty sequence"));
            }
        }
        t.finish("tbsCertificate")?;

        let mut cert = Certificate {
            der: input.to_vec(),
            tbs: (tbs_start, tbs_end),
            signature_algorithm: sig_alg.raw.to_vec(),
            signature,
            version,
            serial,
            tbs_signature_algorithm: tbs_sig,
            issuer,
            not_before,
            not_after,
            subject,
            spki_algorithm,
            spki_parameters,
            spki_key,
            spki_raw: spki.raw.to_vec(),
            extensions,
            basic_constraints: None,
            key_usage: None,
            subject_key_id: None,
            authority_key_id: None,
            ext_key_usage: None,
            subject_alt_names: None,
            name_constraints: None,
            extension_error: None,
        };
        if let Err(e) = cert.decode_extensions() {
            cert.extension_error = Some(e);
        }
        Ok(cert)
    }

    fn decode_extensions(&mut self) -> Result<(), PathError> {
        // §4.2: "A certificate MUST NOT include more than one instance of a particular extension."
        for (i, e) in self.extensions.iter().enumerate() {
            if self.extensions[..i].iter().any(|p| p.oid == e.oid) {
                return Err(PathError::DuplicateExtension { oid: der::oid_string(&e.oid) });
            }
        }
        for e in &self.extensions {
            let v = e.value.as_slice();
            match e.oid.as_slice() {
                oid::BASIC_CONSTRAINTS => self.basic_constraints = Some(parse_basic_constraints(v, e.critical)?),
                oid::KEY_USAGE => {
                    let bits = der::named_bits(&der::single(v, tag::BIT_STRING, "keyUsage")?, "keyUsage")?;
                    // §4.2.1.3: "at least one of the bits in the KeyUsage type MUST be set to 1."
                    if bits == 0 {
                        return Err(malformed("keyUsage with no bit set (RFC 5280 §4.2.1.3)"));
                    }
                    self.key_usage = Some(bits);
                }
                oid::SUBJECT_KEY_ID => {
                    self.subject_key_id =
                        Some(der::single(v, tag::OCTET_STRING, "subjectKeyIdentifier")?.value.to_vec())
                }
                oid::AUTHORITY_KEY_ID => self.authority_key_id = Some(parse_aki(v)?),
                oid::EXT_KEY_USAGE => {
                    let seq = der::single(v, tag::SEQUENCE, "extKeyUsage")?;
                    let mut r = Reader::new(seq.value);
                    let mut list = Vec::new();
                    while !r.is_empty() {
                        list.push(r.read(tag::OID, "extKeyUsage")?.value.to_vec());
                    }
                    // ExtKeyUsageSyntax ::= SEQUENCE SIZE (1..MAX) OF KeyPurposeId (§4.2.1.12).
                    if list.is_empty() {
                        return Err(malformed("extKeyUsage is empty (RFC 5280 §4.2.1.12)"));
                    }
                    self.ext_key_usage = Some(list);
                }
                oid::SUBJECT_ALT_NAME => {
                    let names = GeneralName::parse_sequence(v, "subjectAltName")?;
                    for n in &names {
                        n.check_san_syntax()?;
                    }
                    self.subject_alt_names = Some(names);
                }
                oid::NAME_CONSTRAINTS => self.name_constraints = Some(parse_name_constraints(v, e.critical)?),
                oid::AUTHORITY_INFO_ACCESS | oid::SUBJECT_INFO_ACCESS => parse_access_descriptions(v)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// (algorithm OID, parameters TLV, key octets) of a SubjectPublicKeyInfo.
type SpkiParts = (Vec<u8>, Option<Vec<u8>>, Vec<u8>);

fn parse_spki(data: &[u8]) -> Result<SpkiParts, PathError> {
    let mut r = Reader::new(data);
    let mut alg = r.sequence("subjectPublicKeyInfo.algorithm")?;
    let alg_oid = alg.read(tag::OID, "subjectPublicKeyInfo.algorithm")?.value.to_vec();
    let params = if alg.is_empty() { None } else { Some(alg.read_any("parameters")?.raw.to_vec()) };
    alg.finish("subjectPublicKeyInfo.algorithm")?;
    let key = r.read(tag::BIT_STRING, "subjectPublicKey")?;
    let key = der::bit_string_octets(&key, "subjectPublicKey")?.to_vec();
    r.finish("subjectPublicKeyInfo")?;
    Ok((alg_oid, params, key))
}

fn parse_extension(r: &mut Reader<'_>) -> Result<Extension, PathError> {
    let mut e = r.sequence("extension")?;
    let oid = e.read(tag::OID, "extnID")?.value.to_vec();
    // critical BOOLEAN DEFAULT FALSE: DER omits FALSE (X.690 §11.5).
    let critical = match e.read_optional(tag::BOOLEAN, "critical")? {
        Some(b) => {
            if !der::boolean(&b, "critical")? {
                return Err(malformed("extension: explicit critical FALSE (not DER)"));
            }
            true
        }
        None => false,
    };
    let value = e.read(tag::OCTET_STRING, "extnValue")?.value.to_vec();
    e.finish("extension")?;
    Ok(Extension { oid, critical, value })
}

fn parse_basic_constraints(v: &[u8], critical: bool) -> Result<BasicConstraints, PathError> {
    let seq = der::single(v, tag::SEQUENCE, "basicConstraints")?;
    let mut r = Reader::new(seq.value);
    let ca = match r.read_optional(tag::BOOLEAN, "cA")? {
        Some(b) => {
            if !der::boolean(&b, "cA")? {
                return Err(malformed("basicConstraints: explicit cA FALSE (not DER)"));
            }
            true
        }
        None => false,
    };
    let path_len = match r.read_optional(tag::INTEGER, "pathLenConstraint")? {
        Some(i) => Some(der::small_uint(&i, "pathLenConstraint")?),
        None => None,
    };
    r.finish("basicConstraints")?;
    Ok(BasicConstraints { critical, ca, path_len })
}

fn parse_aki(v: &[u8]) -> Result<Option<Vec<u8>>, PathError> {
    let seq = der::single(v, tag::SEQUENCE, "authorityKeyIdentifier")?;
    let mut r = Reader::new(seq.value);
    let key_id = r.read_optional(tag::ctx_prim(0), "keyIdentifier")?.map(|t| t.value.to_vec());
    let issuer = r.read_optional(tag::ctx_cons(1), "authorityCertIssuer")?;
    let serial = r.read_optional(tag::ctx_prim(2), "authorityCertSerialNumber")?;
    // §4.2.1.1 (ASN.1): both or neither of authorityCertIssuer and authorityCertSerialNumber.
    if issuer.is_some() != serial.is_some() {
        return Err(malformed("authorityKeyIdentifier: authorityCertIssuer without serial number or vice versa"));
    }
    r.finish("authorityKeyIdentifier")?;
    Ok(key_id)
}

fn parse_subtrees(data: &[u8], what: &str) -> Result<Vec<GeneralName>, PathError> {
    let mut r = Reader::new(data);
    let mut out = Vec::new();
    while !r.is_empty() {
        let mut st = r.sequence(what)?;
        let base = GeneralName::parse(&st.read_any(what)?, what)?;
        // §4.2.1.10: minimum MUST be zero (so absent in DER), maximum MUST be absent.
        if !st.is_empty() {
            return Err(malformed(format!("{what}: minimum/maximum present (RFC 5280 §4.2.1.10)")));
        }
        match &base {
            GeneralName::Ip(ip) if ip.len() != 8 && ip.len() != 32 => {
                return Err(malformed(format!("{what}: iPAddress constraint is not address+mask")));
            }
            // §4.2.1.10: a dNSName constraint is a DNS name ("adding zero or more labels to the
            // left-hand side"); the leading period is a URI-constraint form only.
            GeneralName::Dns(d) if !d.is_empty() && !super::name::is_dns_name(d) => {
                return Err(malformed(format!(
                    "{what}: dNSName constraint {d:?} is not a DNS name (RFC 5280 §4.2.1.10)"
                )));
            }
            GeneralName::Rfc822(m) if m.contains('@') && m.matches('@').count() != 1 => {
                return Err(malformed(format!("{what}: rfc822Name constraint {m:?} is malformed")));
            }
            _ => {}
        }
        out.push(base);
    }
    if out.is_empty() {
        return Err(malformed(format!("{what}: empty GeneralSubtrees (RFC 5280 §4.2.1.10)")));
    }
    Ok(out)
}

fn parse_name_constraints(v: &[u8], critical: bool) -> Result<NameConstraints, PathError> {
    let seq = der::single(v, tag::SEQUENCE, "nameConstraints")?;
    let mut r = Reader::new(seq.value);
    let permitted = match r.read_optional(tag::ctx_cons(0), "permittedSubtrees")? {
        Some(t) => Some(parse_subtrees(t.value, "permittedSubtrees")?),
        None => None,
    };
    let excluded = match r.read_optional(tag::ctx_cons(1), "excludedSubtrees")? {
        Some(t) => Some(parse_subtrees(t.value, "excludedSubtrees")?),
        None => None,
    };
    r.finish("nameConstraints")?;
    // §4.2.1.10: "Conforming CAs MUST NOT issue certificates where name constraints is an empty
    // sequence. That is, either the permittedSubtrees field or the excludedSubtrees MUST be present."
    if permitted.is_none() && excluded.is_none() {
        return Err(malformed("nameConstraints without permitted or excluded subtrees (RFC 5280 §4.2.1.10)"));
    }
    Ok(NameConstraints { critical, permitted, excluded })
}

/// AuthorityInfoAccessSyntax / SubjectInfoAccessSyntax (§4.2.2.1–2): SEQUENCE SIZE (1..MAX) OF
/// SEQUENCE { accessMethod OID, accessLocation GeneralName }.
fn parse_access_descriptions(v: &[u8]) -> Result<(), PathError> {
    let seq = der::single(v, tag::SEQUENCE, "authorityInfoAccess")?;
    let mut r = Reader::new(seq.value);
    let mut n = 0;
    while !r.is_empty() {
        let mut ad = r.sequence("accessDescription")?;
        ad.read(tag::OID, "accessMethod")?;
        GeneralName::parse(&ad.read_any("accessLocation")?, "accessLocation")?;
        ad.finish("accessDescription")?;
        n += 1;
    }
    if n == 0 {
        return Err(malformed("authorityInfoAccess is empty (RFC 5280 §4.2.2.1)"));
    }
    Ok(())
}
