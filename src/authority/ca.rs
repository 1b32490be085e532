//! The issuer's certificate authority: pure certificate and CRL building, no database (DESIGN.md §4).
//!
//! The card certificates are the "first/second/third public key certificates" of claims 3, 4, 7, 12,
//! 13 and 16: X.509 v3 (RFC 5280), P-256 keys (RFC 5480), signed ECDSA with SHA-256 (RFC 5758 §3.2).
//!
//! Profile (every extension cites RFC 5280 §4.2.1):
//! - root: self-signed, `basicConstraints cA=TRUE` critical (§4.2.1.9), `keyUsage keyCertSign, cRLSign`
//!   critical (§4.2.1.3), SKI (§4.2.1.2, method 1: SHA-1 of the subjectPublicKey bits) and AKI = SKI
//!   (§4.2.1.1);
//! - card-issuing intermediate (optional): as the root but `pathLenConstraint 0`, AKI = root's SKI;
//! - card: `basicConstraints cA=FALSE` critical, `keyUsage digitalSignature, keyAgreement` critical
//!   (the card signs envelopes, claim 4, and receives ECIES envelopes by key agreement, claim 18),
//!   SKI, AKI = issuing CA's SKI; subject `O=<issuer organisation>, CN=card <serial>, serialNumber=<serial>`;
//! - serial numbers (§4.1.2.2): 16 random bytes (120 random bits), first byte in `0x40..=0x7F`, so
//!   every serial is positive, non-zero, exactly 16 octets in DER and well under the 20-octet limit;
//! - times (§4.1.2.5, §5.1.2.4): UTCTime through 2049, GeneralizedTime from 2050, whole seconds;
//! - CRLs (§5): v2, AKI = CA's SKI (§5.2.1), CRL number (§5.2.3), reason codes as entry extensions
//!   (§5.3.1; `unspecified` is left out as §5.3.1 asks).
//!
//! The CA key is a P-256 key held in a zeroizing type; it leaves this module only as PKCS #8 DER in a
//! zeroizing buffer, which the back office stores age-encrypted (DESIGN.md §4).

use crate::crypto::card_key;
use crate::crypto::secret::SecretBytes;
use crate::domain::CardSerial;
use der::asn1::{Any, BitString, OctetString, PrintableStringRef, Utf8StringRef};
use der::{DateTime, Decode, Encode};
use p256::ecdsa::{DerSignature, SigningKey};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rayon::prelude::*;
use spki::{DynSignatureAlgorithmIdentifier, ObjectIdentifier, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use std::time::SystemTime;
use x509_cert::builder::{Builder, CertificateBuilder, profile::BuilderProfile};
use x509_cert::certificate::{Certificate, TbsCertificate};
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, CrlNumber, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

pub use x509_cert::ext::pkix::CrlReason;

/// Upper bound on a name attribute, RFC 5280 Appendix A.1 (`ub-common-name`, `ub-organization-name`).
pub const MAX_NAME_LEN: usize = 64;
/// Length of the serial numbers this CA assigns.
pub const SERIAL_LEN: usize = 16;

const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
const OID_SERIAL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.5");

/// Errors of the certificate authority. No variant carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("name {what} must be 1 to {max} characters, got {len}")]
    NameLength { what: &'static str, len: usize, max: usize },
    #[error("validity: not_after must be later than not_before")]
    EmptyValidity,
    #[error("time outside what X.509 can encode (1970 to 9999)")]
    TimeOutOfRange,
    #[error("the CA certificate could not be parsed: {0}")]
    CaCertificate(der::Error),
    #[error("the CA certificate is unusable: {0}")]
    CaCertificateProfile(&'static str),
    #[error("the CA key does not match the CA certificate's public key")]
    KeyMismatch,
    #[error("card public key: {0}")]
    CardKey(crate::crypto::CryptoError),
    #[error("CA private key is not a valid PKCS #8 P-256 key")]
    InvalidCaKey,
    #[error("operating system random generator failed")]
    Random,
    #[error("revoked serial number must be a positive integer of 1 to 20 octets")]
    RevokedSerial,
    #[error("PEM: expected a {expected} block: {reason}")]
    Pem { expected: &'static str, reason: String },
    #[error("DER encoding failed: {0}")]
    Encoding(der::Error),
    #[error("certificate building failed: {0}")]
    Build(String),
    #[error("batch item {index}: {source}")]
    BatchItem { index: usize, source: Box<CaError> },
}

impl From<der::Error> for CaError {
    fn from(e: der::Error) -> Self {
        CaError::Encoding(e)
    }
}

impl From<x509_cert::builder::Error> for CaError {
    fn from(e: x509_cert::builder::Error) -> Self {
        CaError::Build(e.to_string())
    }
}

/// A CA's P-256 signing key. Zeroized on drop (the inner `SigningKey` wipes its scalar); `Debug`
/// shows nothing secret.
#[derive(Clone)]
pub struct CaKey {
    signing: SigningKey,
}

impl CaKey {
    /// A fresh P-256 key from the operating system's generator.
    pub fn generate() -> Result<Self, CaError> {
        Ok(CaKey { signing: SigningKey::try_generate().map_err(|_| CaError::Random)? })
    }

    /// PKCS #8 `PrivateKeyInfo` DER (RFC 5208, RFC 5915 inside) in a zeroizing buffer, for age
    /// encryption by the back office.
    pub fn to_pkcs8_der(&self) -> Result<SecretBytes, CaError> {
        let doc = self.signing.to_pkcs8_der().map_err(|_| CaError::InvalidCaKey)?;
        Ok(SecretBytes::new(doc.as_bytes().to_vec()))
    }

    /// Restore a key from PKCS #8 DER; anything but a P-256 EC key is refused.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CaError> {
        Ok(CaKey { signing: SigningKey::from_pkcs8_der(der).map_err(|_| CaError::InvalidCaKey)? })
    }

    /// The public key, uncompressed SEC 1.
    pub fn public_key_sec1(&self) -> [u8; card_key::PUBLIC_KEY_LEN] {
        card_key::uncompressed(&p256::PublicKey::from(self.signing.verifying_key()))
    }

    fn spki(&self) -> Result<SubjectPublicKeyInfoOwned, CaError> {
        SubjectPublicKeyInfoOwned::from_key(self.signing.verifying_key()).map_err(|e| CaError::Build(e.to_string()))
    }
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaKey(<secret redacted>)")
    }
}

/// A validity period (RFC 5280 §4.1.2.5). Times are truncated to whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidityPeriod {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl ValidityPeriod {
    fn to_x509(self) -> Result<Validity, CaError> {
        let (nb, na) = (x509_time(self.not_before)?, x509_time(self.not_after)?);
        if na.to_unix_duration() <= nb.to_unix_duration() {
            return Err(CaError::EmptyValidity);
        }
        Ok(Validity::new(nb, na))
    }
}

/// RFC 5280 §4.1.2.5 / §5.1.2.4: UTCTime for years through 2049, GeneralizedTime from 2050.
fn x509_time(t: SystemTime) -> Result<Time, CaError> {
    let dt = DateTime::from_system_time(t).map_err(|_| CaError::TimeOutOfRange)?;
    if dt.year() <= 2049 {
        Ok(Time::UtcTime(der::asn1::UtcTime::from_date_time(dt).map_err(|_| CaError::TimeOutOfRange)?))
    } else {
        Ok(Time::GeneralTime(der::asn1::GeneralizedTime::from_date_time(dt)))
    }
}

fn check_name(what: &'static str, s: &str) -> Result<(), CaError> {
    let len = s.chars().count();
    if len == 0 || len > MAX_NAME_LEN {
        return Err(CaError::NameLength { what, len, max: MAX_NAME_LEN });
    }
    Ok(())
}

/// A `Name` built attribute by attribute (one attribute per RDN), so no string escaping is involved.
fn build_name(attrs: &[(ObjectIdentifier, Any)]) -> Result<Name, CaError> {
    let mut rdns = RdnSequence::default();
    for (oid, value) in attrs {
        let atv = x509_cert::attr::AttributeTypeAndValue { oid: *oid, value: value.clone() };
        rdns.push(RelativeDistinguishedName::try_from(vec![atv])?);
    }
    Ok(Name::from_der(&rdns.to_der()?)?)
}

fn utf8(s: &str) -> Result<Any, CaError> {
    Ok(Any::encode_from(&Utf8StringRef::new(s)?)?)
}

/// Certificate serial number (RFC 5280 §4.1.2.2): 16 random bytes, first byte forced into
/// `0x40..=0x7F` so the INTEGER is positive, non-zero and has no leading zero octet.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut b = crate::crypto::random::bytes::<SERIAL_LEN>().map_err(|_| CaError::Random)?;
    b[0] = (b[0] & 0x3F) | 0x40;
    Ok(SerialNumber::new(&b)?)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Root,
    Intermediate,
    Card,
}

/// keyroll's certificate profile for x509-cert's builder: subject/issuer and exactly the
/// extensions listed in the module notes.
struct Profile {
    kind: Kind,
    subject: Name,
    /// `None` for the self-signed root.
    issuer: Option<Name>,
    /// The issuing CA's SKI, copied into the AKI; `None` for the root (AKI = its own SKI).
    issuer_key_id: Option<OctetString>,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, subject: &Name) -> Name {
        self.issuer.clone().unwrap_or_else(|| subject.clone())
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let subject = &tbs.subject();
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(self.issuer_key_id.clone().unwrap_or_else(|| ski.0.clone())),
            ..Default::default()
        };
        let (basic, usage) = match self.kind {
            Kind::Root => {
                (BasicConstraints { ca: true, path_len_constraint: None }, KeyUsages::KeyCertSign | KeyUsages::CRLSign)
            }
            Kind::Intermediate => (
                BasicConstraints { ca: true, path_len_constraint: Some(0) },
                KeyUsages::KeyCertSign | KeyUsages::CRLSign,
            ),
            Kind::Card => (
                BasicConstraints { ca: false, path_len_constraint: None },
                KeyUsages::DigitalSignature | KeyUsages::KeyAgreement,
            ),
        };
        Ok(vec![
            (true, &basic).to_extension(subject, &[])?,
            (true, &KeyUsage(usage)).to_extension(subject, &[])?,
            (false, &ski).to_extension(subject, &[])?,
            (false, &aki).to_extension(subject, &[])?,
        ])
    }
}

/// What the issuer needs from its own CA certificate, parsed and checked once.
struct Issuer<'a> {
    key: &'a CaKey,
    subject: Name,
    key_id: OctetString,
    organisation: Any,
}

impl<'a> Issuer<'a> {
    /// Parse `ca_cert_der` and check it can issue: a CA certificate (basicConstraints cA, keyUsage
    /// keyCertSign when present, RFC 5280 §4.2.1.3, §4.2.1.9), with a SKI, whose public key is `key`'s.
    fn new(key: &'a CaKey, ca_cert_der: &[u8]) -> Result<Self, CaError> {
        let cert = Certificate::from_der(ca_cert_der).map_err(CaError::CaCertificate)?;
        let tbs = cert.tbs_certificate();
        let spki_der = tbs.subject_public_key_info().to_der()?;
        let ca_public = card_key::public_key_from_spki_der(&spki_der)
            .map_err(|_| CaError::CaCertificateProfile("the public key is not a P-256 key"))?;
        if ca_public != key.public_key_sec1() {
            return Err(CaError::KeyMismatch);
        }
        match tbs.get_extension::<BasicConstraints>().map_err(CaError::CaCertificate)? {
            Some((_, bc)) if bc.ca => {}
            _ => return Err(CaError::CaCertificateProfile("basicConstraints does not say cA")),
        }
        if let Some((_, ku)) = tbs.get_extension::<KeyUsage>().map_err(CaError::CaCertificate)? {
            if !ku.key_cert_sign() {
                return Err(CaError::CaCertificateProfile("keyUsage lacks keyCertSign"));
            }
        }
        let key_id = match tbs.get_extension::<SubjectKeyIdentifier>().map_err(CaError::CaCertificate)? {
            Some((_, ski)) => ski.0,
            None => return Err(CaError::CaCertificateProfile("no subjectKeyIdentifier")),
        };
        let subject = tbs.subject().clone();
        let organisation = subject
            .iter()
            .find(|atv| atv.oid == OID_O)
            .map(|atv| atv.value.clone())
            .ok_or(CaError::CaCertificateProfile("subject has no organizationName"))?;
        Ok(Issuer { key, subject, key_id, organisation })
    }

    fn issue_card(&self, request: &CardCertRequest) -> Result<Vec<u8>, CaError> {
        let public = card_key::parse_public_key(&request.public_key_sec1).map_err(CaError::CardKey)?;
        let spki = SubjectPublicKeyInfoOwned::from_key(&public).map_err(|e| CaError::Build(e.to_string()))?;
        let serial_hex = request.serial.to_string();
        let subject = build_name(&[
            (OID_O, self.organisation.clone()),
            (OID_CN, utf8(&format!("card {serial_hex}"))?),
            (OID_SERIAL_NUMBER, Any::encode_from(&PrintableStringRef::new(&serial_hex)?)?),
        ])?;
        let profile = Profile {
            kind: Kind::Card,
            subject,
            issuer: Some(self.subject.clone()),
            issuer_key_id: Some(self.key_id.clone()),
        };
        let validity = request.validity.to_x509()?;
        let builder = CertificateBuilder::new(profile, random_serial()?, validity, spki)?;
        let cert = builder.build::<_, DerSignature>(&self.key.signing)?;
        Ok(cert.to_der()?)
    }
}

/// One card certificate to issue.
#[derive(Clone, Debug)]
pub struct CardCertRequest {
    pub serial: CardSerial,
    /// The card's public key as SEC 1 (uncompressed or compressed); validated.
    pub public_key_sec1: Vec<u8>,
    pub validity: ValidityPeriod,
}

/// Certificate building for the issuer CA.
pub struct IssuerCa;

impl IssuerCa {
    /// Create the issuer's root: a fresh P-256 key and a self-signed v3 certificate with subject
    /// `O=<issuer_name>, CN=<issuer_name> Root CA`.
    pub fn create_root(issuer_name: &str, validity: ValidityPeriod) -> Result<(CaKey, Vec<u8>), CaError> {
        check_name("issuer name", issuer_name)?;
        let cn = format!("{issuer_name} Root CA");
        check_name("root common name", &cn)?;
        let subject = build_name(&[(OID_O, utf8(issuer_name)?), (OID_CN, utf8(&cn)?)])?;
        let key = CaKey::generate()?;
        let profile = Profile { kind: Kind::Root, subject, issuer: None, issuer_key_id: None };
        let builder = CertificateBuilder::new(profile, random_serial()?, validity.to_x509()?, key.spki()?)?;
        let cert = builder.build::<_, DerSignature>(&key.signing)?;
        Ok((key, cert.to_der()?))
    }

    /// Create a card-issuing CA under the root (`pathLenConstraint 0`): a fresh key and a certificate
    /// signed by `root_key`, subject `O=<root's organisation>, CN=<name>`.
    pub fn create_intermediate(
        root_key: &CaKey,
        root_cert_der: &[u8],
        name: &str,
        validity: ValidityPeriod,
    ) -> Result<(CaKey, Vec<u8>), CaError> {
        check_name("intermediate common name", name)?;
        let root = Issuer::new(root_key, root_cert_der)?;
        let subject = build_name(&[(OID_O, root.organisation.clone()), (OID_CN, utf8(name)?)])?;
        let key = CaKey::generate()?;
        let profile = Profile {
            kind: Kind::Intermediate,
            subject,
            issuer: Some(root.subject.clone()),
            issuer_key_id: Some(root.key_id.clone()),
        };
        let builder = CertificateBuilder::new(profile, random_serial()?, validity.to_x509()?, key.spki()?)?;
        let cert = builder.build::<_, DerSignature>(&root_key.signing)?;
        Ok((key, cert.to_der()?))
    }
}

/// Issue one card certificate (claims 3, 4: the card's "first public key certificate") signed by the
/// CA whose key and certificate are given.
pub fn issue_card_certificate(
    ca_key: &CaKey,
    ca_cert_der: &[u8],
    card_serial: CardSerial,
    card_public_sec1: &[u8],
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<Vec<u8>, CaError> {
    let issuer = Issuer::new(ca_key, ca_cert_der)?;
    issuer.issue_card(&CardCertRequest {
        serial: card_serial,
        public_key_sec1: card_public_sec1.to_vec(),
        validity: ValidityPeriod { not_before, not_after },
    })
}

/// Issue many card certificates in parallel on rayon's pool, in request order. All or nothing: the
/// first failing request (lowest index) is reported with its index.
pub fn issue_batch(ca_key: &CaKey, ca_cert_der: &[u8], requests: &[CardCertRequest]) -> Result<Vec<Vec<u8>>, CaError> {
    let issuer = Issuer::new(ca_key, ca_cert_der)?;
    requests
        .par_iter()
        .enumerate()
        .map(|(index, r)| issuer.issue_card(r).map_err(|e| CaError::BatchItem { index, source: Box::new(e) }))
        .collect()
}

/// One revoked certificate for [`build_crl`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The certificate's serial number as an unsigned big-endian magnitude (leading zeros allowed).
    pub serial: Vec<u8>,
    pub revoked_at: SystemTime,
    pub reason: Option<CrlReason>,
}

/// Build and sign a v2 CRL (RFC 5280 §5) for the CA: issuer = the CA's subject, AKI = the CA's SKI,
/// the given CRL number, `thisUpdate`/`nextUpdate`, and one entry per revoked certificate.
///
/// Built here rather than with x509-cert 0.3.0's `CrlBuilder`, which copies the issuer certificate's
/// *authority* key identifier into the CRL: right only for a self-signed root, wrong for a
/// card-issuing intermediate (RFC 5280 §5.2.1 wants the key that signs the CRL).
pub fn build_crl(
    ca_key: &CaKey,
    ca_cert_der: &[u8],
    revoked: &[RevokedEntry],
    this_update: SystemTime,
    next_update: SystemTime,
    crl_number: u64,
) -> Result<Vec<u8>, CaError> {
    let issuer = Issuer::new(ca_key, ca_cert_der)?;
    let (this_update, next_update) = (x509_time(this_update)?, x509_time(next_update)?);
    if next_update.to_unix_duration() <= this_update.to_unix_duration() {
        return Err(CaError::EmptyValidity);
    }
    let mut entries = Vec::with_capacity(revoked.len());
    for r in revoked {
        let first = r.serial.iter().position(|&b| b != 0).ok_or(CaError::RevokedSerial)?;
        let serial: SerialNumber = SerialNumber::new(&r.serial[first..]).map_err(|_| CaError::RevokedSerial)?;
        let crl_entry_extensions = match r.reason {
            None | Some(CrlReason::Unspecified) => None,
            Some(reason) => Some(vec![(false, &reason).to_extension(&issuer.subject, &[])?]),
        };
        entries.push(RevokedCert {
            serial_number: serial,
            revocation_date: x509_time(r.revoked_at)?,
            crl_entry_extensions,
        });
    }
    let aki = AuthorityKeyIdentifier { key_identifier: Some(issuer.key_id.clone()), ..Default::default() };
    let crl_extensions = vec![
        (false, &aki).to_extension(&issuer.subject, &[])?,
        (false, &CrlNumber::try_from(crl_number)?).to_extension(&issuer.subject, &[])?,
    ];
    let tbs = TbsCertList {
        version: x509_cert::Version::V2,
        signature: ca_key.signing.signature_algorithm_identifier().map_err(|e| CaError::Build(e.to_string()))?,
        issuer: issuer.subject.clone(),
        this_update,
        next_update: Some(next_update),
        revoked_certificates: if entries.is_empty() { None } else { Some(entries) },
        crl_extensions: Some(crl_extensions),
    };
    let tbs_der = tbs.to_der()?;
    let signature: DerSignature = p256::ecdsa::signature::Signer::sign(&ca_key.signing, &tbs_der);
    let crl = CertificateList {
        signature_algorithm: tbs.signature.clone(),
        tbs_cert_list: tbs,
        signature: BitString::from_bytes(signature.as_bytes())?,
    };
    Ok(crl.to_der()?)
}

/// PEM labels this module writes and reads (RFC 7468 §5, §6).
pub const PEM_CERTIFICATE: &str = crate::pki::pem::CERTIFICATE;
pub const PEM_CRL: &str = crate::pki::pem::CRL;

/// PEM-encode DER under `label` (RFC 7468), LF line endings ([`crate::pki::pem`]).
pub fn pem_encode(label: &str, der: &[u8]) -> Result<String, CaError> {
    Ok(crate::pki::pem::encode(label, der))
}

/// Decode every PEM block in `text`; each must carry `label` ([`crate::pki::pem::decode_all`]).
pub fn pem_decode_all(label: &'static str, text: &str) -> Result<Vec<Vec<u8>>, CaError> {
    crate::pki::pem::decode_all(label, text).map_err(|e| CaError::Pem { expected: label, reason: e.to_string() })
}

/// Decode exactly one PEM block carrying `label`.
pub fn pem_decode(label: &'static str, text: &str) -> Result<Vec<u8>, CaError> {
    crate::pki::pem::decode_one(label, text).map_err(|e| CaError::Pem { expected: label, reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn validity() -> ValidityPeriod {
        let now = SystemTime::now();
        ValidityPeriod { not_before: now, not_after: now + Duration::from_secs(86_400) }
    }

    fn card_request(serial: u64) -> CardCertRequest {
        CardCertRequest {
            serial: CardSerial::from_u64(serial),
            public_key_sec1: crate::crypto::card_key::CardKeyPair::generate().unwrap().public_key_sec1().to_vec(),
            validity: validity(),
        }
    }

    #[test]
    fn serials_are_positive_fixed_length_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let s = random_serial().unwrap();
            let b = s.as_bytes();
            assert_eq!(b.len(), SERIAL_LEN);
            assert!((0x40..=0x7F).contains(&b[0]), "{b:02x?}");
            assert!(seen.insert(b.to_vec()));
        }
    }

    #[test]
    fn card_certificate_fields() {
        let (key, root) = IssuerCa::create_root("Test Issuer", validity()).unwrap();
        let v = validity();
        let card = crate::crypto::card_key::CardKeyPair::generate().unwrap();
        let der = issue_card_certificate(
            &key,
            &root,
            CardSerial::from_u64(0xAB),
            &card.public_key_sec1(),
            v.not_before,
            v.not_after,
        )
        .unwrap();
        let cert = Certificate::from_der(&der).unwrap();
        let tbs = cert.tbs_certificate();
        assert_eq!(tbs.version(), x509_cert::Version::V3);
        assert_eq!(tbs.subject().common_name().unwrap().unwrap().value().to_string(), "card 00000000000000AB");
        assert_eq!(tbs.subject().organization().unwrap().unwrap().value().to_string(), "Test Issuer");
        let spki = tbs.subject_public_key_info().to_der().unwrap();
        assert_eq!(card_key::public_key_from_spki_der(&spki).unwrap(), card.public_key_sec1());
        let (critical, bc) = tbs.get_extension::<BasicConstraints>().unwrap().unwrap();
        assert!(critical && !bc.ca);
        let (critical, ku) = tbs.get_extension::<KeyUsage>().unwrap().unwrap();
        assert!(critical && ku.digital_signature() && ku.key_agreement() && !ku.key_cert_sign());
        let root_cert = Certificate::from_der(&root).unwrap();
        let (_, root_ski) = root_cert.tbs_certificate().get_extension::<SubjectKeyIdentifier>().unwrap().unwrap();
        let (_, aki) = tbs.get_extension::<AuthorityKeyIdentifier>().unwrap().unwrap();
        assert_eq!(aki.key_identifier, Some(root_ski.0));
        assert_eq!(tbs.issuer(), root_cert.tbs_certificate().subject());
    }

    /// Claim 4 end to end at the crypto level: the key in card B's certificate receives an ECIES
    /// envelope only B can open, and verifies B's signature over it.
    #[test]
    fn card_certificate_key_serves_the_public_key_path() {
        use crate::crypto::{card_key::CardKeyPair, ecies};
        let (key, root) = IssuerCa::create_root("Test Issuer", validity()).unwrap();
        let b = CardKeyPair::generate().unwrap();
        let v = validity();
        let cert_b = issue_card_certificate(
            &key,
            &root,
            CardSerial::from_u64(2),
            &b.public_key_sec1(),
            v.not_before,
            v.not_after,
        )
        .unwrap();
        let spki =
            Certificate::from_der(&cert_b).unwrap().tbs_certificate().subject_public_key_info().to_der().unwrap();
        let b_public = card_key::public_key_from_spki_der(&spki).unwrap();
        let env = ecies::seal(&b_public, &[b"label"], b"id key").unwrap();
        assert_eq!(ecies::open(&b, &[b"label"], &env).unwrap().expose(), b"id key");
        let sig = b.sign(&[b"label", &env, b"challenge"]);
        card_key::verify(&b_public, &[b"label", &env, b"challenge"], &sig).unwrap();
        assert!(ecies::open(&CardKeyPair::generate().unwrap(), &[b"label"], &env).is_err());
    }

    #[test]
    fn refusals() {
        let (key, root) = IssuerCa::create_root("Test Issuer", validity()).unwrap();
        let now = SystemTime::now();
        let pk = card_request(1).public_key_sec1;
        // Empty or inverted validity.
        assert!(matches!(
            issue_card_certificate(&key, &root, CardSerial::from_u64(1), &pk, now, now),
            Err(CaError::EmptyValidity)
        ));
        // Wrong key for the CA certificate.
        let (other_key, _) = IssuerCa::create_root("Other", validity()).unwrap();
        assert!(matches!(
            issue_card_certificate(&other_key, &root, CardSerial::from_u64(1), &pk, now, now + Duration::from_secs(9)),
            Err(CaError::KeyMismatch)
        ));
        // A card certificate cannot act as a CA, even one that carries the CA's own key.
        let mut req = card_request(2);
        req.public_key_sec1 = key.public_key_sec1().to_vec();
        let card_der = issue_batch(&key, &root, &[req]).unwrap().pop().unwrap();
        assert!(matches!(
            issue_card_certificate(&key, &card_der, CardSerial::from_u64(1), &pk, now, now + Duration::from_secs(9)),
            Err(CaError::CaCertificateProfile("basicConstraints does not say cA"))
        ));
        // Garbage instead of a CA certificate, and a bad card key.
        assert!(matches!(
            issue_card_certificate(&key, &[0x30, 0x03, 0x02, 0x01], CardSerial::from_u64(1), &pk, now, now),
            Err(CaError::CaCertificate(_))
        ));
        assert!(matches!(
            issue_card_certificate(
                &key,
                &root,
                CardSerial::from_u64(1),
                &[0x04; 65],
                now,
                now + Duration::from_secs(9)
            ),
            Err(CaError::CardKey(_))
        ));
        // Names.
        assert!(matches!(IssuerCa::create_root("", validity()), Err(CaError::NameLength { .. })));
        assert!(matches!(IssuerCa::create_root(&"x".repeat(60), validity()), Err(CaError::NameLength { .. })));
        // CRL: zero serial, inverted times.
        let zero = RevokedEntry { serial: vec![0, 0], revoked_at: now, reason: None };
        assert!(matches!(
            build_crl(&key, &root, &[zero], now, now + Duration::from_secs(9), 1),
            Err(CaError::RevokedSerial)
        ));
        assert!(matches!(build_crl(&key, &root, &[], now, now, 1), Err(CaError::EmptyValidity)));
    }

    #[test]
    fn names_with_rfc4514_special_characters_are_kept_literally() {
        let (_, root) = IssuerCa::create_root("Bank, Inc.+\"=<x>", validity()).unwrap();
        let cert = Certificate::from_der(&root).unwrap();
        assert_eq!(
            cert.tbs_certificate().subject().organization().unwrap().unwrap().value().to_string(),
            "Bank, Inc.+\"=<x>"
        );
        assert_eq!(cert.tbs_certificate().subject().len(), 2);
    }

    #[test]
    fn times_switch_to_generalized_in_2050() {
        let y2049 = SystemTime::UNIX_EPOCH + Duration::from_secs(2_524_607_999); // 2049-12-31T23:59:59Z
        assert!(matches!(x509_time(y2049).unwrap(), Time::UtcTime(_)));
        assert!(matches!(x509_time(y2049 + Duration::from_secs(1)).unwrap(), Time::GeneralTime(_)));
    }

    #[test]
    fn pem_round_trip_and_label_check() {
        let (_, root) = IssuerCa::create_root("Test Issuer", validity()).unwrap();
        let pem = pem_encode(PEM_CERTIFICATE, &root).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(pem_decode(PEM_CERTIFICATE, &pem).unwrap(), root);
        let two = format!("comment\n{pem}between\n{pem}");
        assert_eq!(pem_decode_all(PEM_CERTIFICATE, &two).unwrap(), vec![root.clone(), root.clone()]);
        assert!(pem_decode(PEM_CERTIFICATE, &two).is_err());
        assert!(pem_decode(PEM_CRL, &pem).is_err());
        assert!(pem_decode(PEM_CERTIFICATE, "no pem here").is_err());
        assert!(pem_decode(PEM_CERTIFICATE, "-----BEGIN CERTIFICATE-----\nAAAA").is_err());
        assert!(pem_decode(PEM_CERTIFICATE, &pem.replace('M', "*")).is_err());
    }

    #[test]
    fn ca_key_debug_is_redacted_and_pkcs8_round_trips() {
        let key = CaKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "CaKey(<secret redacted>)");
        let der = key.to_pkcs8_der().unwrap();
        assert_eq!(CaKey::from_pkcs8_der(der.expose()).unwrap().public_key_sec1(), key.public_key_sec1());
        assert!(matches!(CaKey::from_pkcs8_der(b"not a key"), Err(CaError::InvalidCaKey)));
    }

    proptest::proptest! {
        /// A CA certificate, CRL input or PEM text from outside never panics the CA.
        #[test]
        fn arbitrary_ca_inputs_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
                                           text in "[-A-Za-z0-9+/= \n]{0,200}") {
            let key = CaKey::from_pkcs8_der(&fixed_key_der()).unwrap();
            let v = validity();
            let _ = issue_card_certificate(&key, &bytes, CardSerial::from_u64(1), &[4u8; 65], v.not_before, v.not_after);
            let _ = build_crl(&key, &bytes, &[], v.not_before, v.not_after, 1);
            let _ = CaKey::from_pkcs8_der(&bytes);
            let _ = pem_decode_all(PEM_CERTIFICATE, &text);
            let _ = pem_decode_all(PEM_CERTIFICATE, &format!("-----BEGIN CERTIFICATE-----\n{text}\n-----END CERTIFICATE-----"));
        }
    }

    fn fixed_key_der() -> Vec<u8> {
        static KEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        KEY.get_or_init(|| CaKey::generate().unwrap().to_pkcs8_der().unwrap().expose().to_vec()).clone()
    }

    /// Every single-byte mutation of a real CA certificate is handled without a panic.
    #[test]
    fn mutated_ca_certificates_never_panic() {
        let (key, root) = IssuerCa::create_root("Test Issuer", validity()).unwrap();
        let v = validity();
        let pk = crate::crypto::card_key::CardKeyPair::generate().unwrap().public_key_sec1();
        for i in 0..root.len() {
            let mut m = root.clone();
            m[i] ^= 0x5A;
            let _ = issue_card_certificate(&key, &m, CardSerial::from_u64(1), &pk, v.not_before, v.not_after);
        }
    }
}
