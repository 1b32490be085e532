//! Certificate revocation lists (RFC 5280 §5) and their use in path validation (§6.3).

use super::PathError;
use super::cert::{Extension, oid};
use super::der::{self, Reader, tag};
use super::name::Name;
use super::time;

fn malformed(what: impl Into<String>) -> PathError {
    PathError::Malformed { what: what.into() }
}

/// One revokedCertificates entry (§5.1.2.6).
#[derive(Clone, Debug)]
pub struct RevokedEntry {
    pub serial: Vec<u8>,
    pub revocation_date: i64,
    pub extensions: Vec<Extension>,
}

/// A parsed CRL (§5.1).
#[derive(Clone, Debug)]
pub struct Crl {
    pub der: Vec<u8>,
    tbs: (usize, usize),
    pub signature_algorithm: Vec<u8>,
    pub signature: Vec<u8>,
    /// `None` for v1, `Some(1)` for v2 (§5.1.2.1).
    pub version: Option<u64>,
    pub tbs_signature_algorithm: Vec<u8>,
    pub issuer: Name,
    pub this_update: i64,
    pub next_update: Option<i64>,
    pub revoked: Vec<RevokedEntry>,
    pub extensions: Vec<Extension>,
}

fn parse_extensions(data: &[u8], what: &str) -> Result<Vec<Extension>, PathError> {
    let seq = der::single(data, tag::SEQUENCE, what)?;
    let mut r = Reader::new(seq.value);
    let mut out: Vec<Extension> = Vec::new();
    while !r.is_empty() {
        let mut e = r.sequence(what)?;
        let id = e.read(tag::OID, what)?.value.to_vec();
        let critical = match e.read_optional(tag::BOOLEAN, what)? {
            Some(b) if der::boolean(&b, what)? => true,
            Some(_) => {
                return Err(malformed(format!("{what}: explicit critical FALSE (not DER)")));
            }
            None => false,
        };
        let value = e.read(tag::OCTET_STRING, what)?.value.to_vec();
        e.finish(what)?;
        // §5.2 / §4.2: one instance per extension.
        if out.iter().any(|x| x.oid == id) {
            return Err(PathError::DuplicateExtension { oid: der::oid_string(&id) });
        }
        out.push(Extension { oid: id, critical, value });
    }
    if out.is_empty() {
        return Err(malformed(format!("{what}: empty sequence")));
    }
    Ok(out)
}

impl Crl {
    pub fn tbs(&self) -> &[u8] {
        self.der.get(self.tbs.0..self.tbs.1).unwrap_or(&[])
    }

    pub fn extension(&self, id: &[u8]) -> Option<&Extension> {
        self.extensions.iter().find(|e| e.oid == id)
    }

    /// The authorityKeyIdentifier keyIdentifier, if present (§5.2.1).
    pub fn authority_key_id(&self) -> Option<Vec<u8>> {
        let e = self.extension(oid::AUTHORITY_KEY_ID)?;
        let seq = der::single(&e.value, tag::SEQUENCE, "authorityKeyIdentifier").ok()?;
        let mut r = Reader::new(seq.value);
        r.read_optional(tag::ctx_prim(0), "keyIdentifier").ok()?.map(|t| t.value.to_vec())
    }

    /// Parses a DER CRL (§5.1). Trailing bytes are refused.
    pub fn from_der(input: &[u8]) -> Result<Crl, PathError> {
        let outer = der::single(input, tag::SEQUENCE, "CertificateList")?;
        let header_len = outer.raw.len() - outer.value.len();
        let mut r = Reader::new(outer.value);
        let tbs = r.read(tag::SEQUENCE, "tbsCertList")?;
        let sig_alg = r.read(tag::SEQUENCE, "signatureAlgorithm")?;
        let sig = r.read(tag::BIT_STRING, "signatureValue")?;
        let signature = der::bit_string_octets(&sig, "signatureValue")?.to_vec();
        r.finish("CertificateList")?;

        let mut t = Reader::new(tbs.value);
        let version = match t.read_optional(tag::INTEGER, "version")? {
            Some(v) => {
                let n = der::small_uint(&v, "CRL version")?;
                // §5.1.2.1: when present, MUST specify v2 (1).
                if n != 1 {
                    return Err(malformed(format!("CRL version {n} (only v2 may be encoded)")));
                }
                Some(n)
            }
            None => None,
        };
        let tbs_sig = t.read(tag::SEQUENCE, "CRL signature")?.raw.to_vec();
        let issuer = Name::parse(t.read(tag::SEQUENCE, "CRL issuer")?.raw, "CRL issuer")?;
        let this_update = time::parse_time(&t.read_any("thisUpdate")?, "thisUpdate")?;
        let next_update = match t.peek_tag() {
            Some(tag::UTC_TIME) | Some(tag::GENERALIZED_TIME) => {
                Some(time::parse_time(&t.read_any("nextUpdate")?, "nextUpdate")?)
            }
            _ => None,
        };
        let mut revoked = Vec::new();
        if let Some(list) = t.read_optional(tag::SEQUENCE, "revokedCertificates")? {
            let mut lr = Reader::new(list.value);
            while !lr.is_empty() {
                let mut entry = lr.sequence("revokedCertificate")?;
                let serial =
                    der::integer_bytes(&entry.read(tag::INTEGER, "userCertificate")?, "userCertificate")?.to_vec();
                let revocation_date = time::parse_time(&entry.read_any("revocationDate")?, "revocationDate")?;
                let extensions = match entry.read_optional(tag::SEQUENCE, "crlEntryExtensions")? {
                    Some(e) => parse_extensions(e.raw, "crlEntryExtensions")?,
                    None => Vec::new(),
                };
                entry.finish("revokedCertificate")?;
                revoked.push(RevokedEntry { serial, revocation_date, extensions });
            }
        }
        let extensions = match t.read_optional(tag::ctx_cons(0), "crlExtensions")? {
            Some(e) => parse_extensions(e.value, "crlExtensions")?,
            None => Vec::new(),
        };
        t.finish("tbsCertList")?;
        // §5.1.2.1 / §5.1.2.6: extensions only in v2 CRLs.
        let has_entry_ext = revoked.iter().any(|e| !e.extensions.is_empty());
        if version.is_none() && (!extensions.is_empty() || has_entry_ext) {
            return Err(malformed("CRL extensions in a v1 CRL (RFC 5280 §5.1.2.1)"));
        }
        let tbs_start = header_len;
        Ok(Crl {
            der: input.to_vec(),
            tbs: (tbs_start, tbs_start + tbs.raw.len()),
            signature_algorithm: sig_alg.raw.to_vec(),
            signature,
            version,
            tbs_signature_algorithm: tbs_sig,
            issuer,
            this_update,
            next_update,
            revoked,
            extensions,
        })
    }

    /// The checks of §5.2 and §6.3.3 that do not involve the issuer's key: extensions the
    /// validator understands, CRL number present and non-critical, times around `now`.
    /// Returns the reason the CRL cannot be used.
    pub fn check_profile(&self, now: i64) -> Result<(), String> {
        if self.tbs_signature_algorithm != self.signature_algorithm {
            return Err("signature algorithm in tbsCertList differs from the outer one (RFC 5280 §5.1.1.2)".into());
        }
        for e in &self.extensions {
            match e.oid.as_slice() {
                // §5.2.1, §5.2.2: non-critical, informational here.
                oid::AUTHORITY_KEY_ID | oid::ISSUER_ALT_NAME if !e.critical => {}
                oid::AUTHORITY_KEY_ID | oid::ISSUER_ALT_NAME => {
                    return Err(format!(
                        "extension {} MUST be non-critical (RFC 5280 §5.2.1–2)",
                        der::oid_string(&e.oid)
                    ));
                }
                // §5.2.3: "CRL issuers conforming to this profile MUST include this extension in
                // all CRLs and MUST mark this extension as non-critical."
                oid::CRL_NUMBER if e.critical => {
                    return Err("cRLNumber is marked critical (RFC 5280 §5.2.3)".into());
                }
                oid::CRL_NUMBER => {
                    let n = der::single(&e.value, tag::INTEGER, "cRLNumber").map_err(|e| e.to_string())?;
                    let v = der::integer_bytes(&n, "cRLNumber").map_err(|e| e.to_string())?;
                    // CRLNumber ::= INTEGER (0..MAX), at most 20 octets.
                    if v[0] & 0x80 != 0 || v.len() > 21 {
                        return Err("cRLNumber is negative or longer than 20 octets (RFC 5280 §5.2.3)".into());
                    }
                }
                // Delta CRLs and issuing distribution points change the CRL's scope (§5.2.4–5);
                // this validator only uses complete, full-scope CRLs, so it cannot honour them.
                _ if e.critical => {
                    return Err(format!("unknown critical CRL extension {} (RFC 5280 §5.2)", der::oid_string(&e.oid)));
                }
                _ => {}
            }
        }
        if self.extension(oid::CRL_NUMBER).is_none() {
            return Err("cRLNumber extension missing (RFC 5280 §5.2.3)".into());
        }
        for entry in &self.revoked {
            for e in &entry.extensions {
                // §5.3: reasonCode and invalidityDate are non-critical and informational;
                // certificateIssuer (indirect CRLs) is critical and not supported.
                if e.critical {
                    return Err(format!(
                        "unknown critical CRL entry extension {} (RFC 5280 §5.3)",
                        der::oid_string(&e.oid)
                    ));
                }
            }
        }
        // §5.1.2.4–5, §6.3.3 (a): a CRL from the future or past its nextUpdate says nothing
        // current about revocation.
        if self.this_update > now {
            return Err(format!("thisUpdate {} is after the validation time", time::format_unix(self.this_update)));
        }
        if let Some(next) = self.next_update {
            if next < now {
                return Err(format!("stale: nextUpdate {} is before the validation time", time::format_unix(next)));
            }
        }
        Ok(())
    }

    /// Whether `serial` (INTEGER content octets) is listed (§5.1.2.6).
    pub fn lists(&self, serial: &[u8]) -> bool {
        self.revoked.iter().any(|e| e.serial == serial)
    }
}
