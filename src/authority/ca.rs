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
//! The CA key is keyroll's own P-256 key pair ([`crate::crypto::ec::KeyPair`]; AWS-LC signs and
//! cleanses it when freed); it leaves this module only as PKCS #8 DER in a zeroizing buffer, which
//! the back office stores age-encrypted (DESIGN.md §4). x509-cert's builder signs through
//! [`BuilderSigner`], an adapter of that key to the `signature` crate's traits.
//!
//! Batches ([`issue_batch`]) share what every card certificate of a batch has in common: the builder
//! makes one TBS template per validity period (issuer name, AKI, extensions, algorithm), and each card
//! certificate is that template with its serial number, names, public key and SKI written in place,
//! signed and wrapped: no per-certificate parsing or re-encoding. A unit test holds the template
//! byte for byte to the builder's own output.

use crate::crypto::card_key;
use crate::crypto::ec::{self, KeyPair};
use crate::crypto::secret::SecretBytes;
use crate::crypto::signer::Signer;
use crate::domain::CardSerial;
use crate::pki::build::{self, OID_CN, OID_O, OID_SERIAL_NUMBER, Role};
use der::asn1::{Any, BitString, OctetString, PrintableStringRef};
use der::{Decode, Encode};
use ecdsa::signature::{self, Keypair};
use p256::ecdsa::DerSignature;
use rayon::prelude::*;
use spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey, ObjectIdentifier,
    SubjectPublicKeyInfoOwned,
};
use std::sync::Arc;
use std::time::SystemTime;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::Certificate;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::ToExtension;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, CrlNumber, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

pub use x509_cert::ext::pkix::CrlReason;

/// Upper bound on a name attribute, RFC 5280 Appendix A.1 (`ub-common-name`, `ub-organization-name`).
pub const MAX_NAME_LEN: usize = 64;
/// Length of the serial numbers this CA assigns.
pub const SERIAL_LEN: usize = 16;

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
    #[error("the CA key is held in a token and cannot be exported")]
    NotExportable,
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
    /// The device holding the CA key failed to sign ([`crate::crypto::CryptoError::Device`]): a PKCS #11
    /// token removed, a key deleted from it, a session lost. The user's to fix, not keyroll's bug.
    #[error("the CA's signing token failed: {0}")]
    Signer(String),
}

impl CaError {
    /// Whether the CA key's device failed (directly or for one item of a batch).
    pub fn is_signer_failure(&self) -> bool {
        match self {
            CaError::Signer(_) => true,
            CaError::BatchItem { source, .. } => source.is_signer_failure(),
            _ => false,
        }
    }

    fn from_crypto(e: crate::crypto::CryptoError) -> Self {
        match e {
            crate::crypto::CryptoError::Device(why) => CaError::Signer(why),
            other => CaError::Build(other.to_string()),
        }
    }
}

impl From<der::Error> for CaError {
    fn from(e: der::Error) -> Self {
        CaError::Encoding(e)
    }
}

impl From<x509_cert::builder::Error> for CaError {
    fn from(e: x509_cert::builder::Error) -> Self {
        // A token failure inside the builder's signer keeps its kind.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if let Some(crate::crypto::CryptoError::Device(why)) = c.downcast_ref::<crate::crypto::CryptoError>() {
                return CaError::Signer(why.clone());
            }
            cause = c.source();
        }
        CaError::Build(e.to_string())
    }
}

/// A CA's P-256 signing key: keyroll's [`KeyPair`] (AWS-LC holds and cleanses the scalar), or a key
/// that signs elsewhere through the [`Signer`] seam (a PKCS #11 token: the key never leaves it).
/// `Debug` shows nothing secret.
#[derive(Clone)]
pub struct CaKey {
    signer: Arc<dyn Signer>,
    /// The same key when it is held in process (and so may be stored age-encrypted).
    local: Option<KeyPair>,
}

impl CaKey {
    /// A fresh P-256 key.
    pub fn generate() -> Result<Self, CaError> {
        Ok(Self::from_pair(KeyPair::generate().map_err(|_| CaError::Random)?))
    }

    fn from_pair(pair: KeyPair) -> Self {
        CaKey { signer: Arc::new(pair.clone()), local: Some(pair) }
    }

    /// A key held outside this process (a token): it signs through `signer` and cannot be exported.
    pub fn from_signer(signer: Arc<dyn Signer>) -> Self {
        CaKey { signer, local: None }
    }

    /// Whether the private key is in this process (and so can be written out as PKCS #8).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// PKCS #8 `PrivateKeyInfo` DER (RFC 5208, RFC 5915 inside) in a zeroizing buffer, for age
    /// encryption by the back office. A key in a token has none ([`CaError::NotExportable`]).
    pub fn to_pkcs8_der(&self) -> Result<SecretBytes, CaError> {
        self.local.as_ref().ok_or(CaError::NotExportable)?.to_pkcs8_der().map_err(|_| CaError::InvalidCaKey)
    }

    /// Restore a key from PKCS #8 DER; anything but a P-256 EC key is refused. Keys written by the
    /// `p256` crate (databases made before the AWS-LC backend) read back unchanged.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CaError> {
        Ok(Self::from_pair(KeyPair::from_pkcs8_der(der).map_err(|_| CaError::InvalidCaKey)?))
    }

    /// The public key, uncompressed SEC 1.
    pub fn public_key_sec1(&self) -> [u8; card_key::PUBLIC_KEY_LEN] {
        *self.signer.public_key().sec1()
    }

    fn spki(&self) -> Result<SubjectPublicKeyInfoOwned, CaError> {
        Ok(SubjectPublicKeyInfoOwned::from_der(&self.signer.public_key().to_spki_der())?)
    }

    fn signer(&self) -> BuilderSigner<'_> {
        BuilderSigner { key: self.signer.as_ref() }
    }

    /// ECDSA over one message (a TBS), through whichever signer holds the key.
    fn sign_message(&self, message: &[u8]) -> Result<ec::Signature, CaError> {
        self.signer.sign_message(message).map_err(CaError::from_crypto)
    }
}

/// ecdsa-with-SHA256 (RFC 5758 §3.2), parameters absent.
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// x509-cert's builder signs through this adapter: keyroll's key pair behind the `signature`
/// crate's `Signer`/`Keypair` traits, so AWS-LC does the arithmetic and the builder only encodes.
pub struct BuilderSigner<'a> {
    key: &'a dyn Signer,
}

impl Keypair for BuilderSigner<'_> {
    type VerifyingKey = ec::PublicKey;
    fn verifying_key(&self) -> ec::PublicKey {
        Signer::public_key(self.key).clone()
    }
}

impl EncodePublicKey for ec::PublicKey {
    fn to_public_key_der(&self) -> spki::Result<der::Document> {
        Ok(der::Document::try_from(&self.to_spki_der()[..])?)
    }
}

impl DynSignatureAlgorithmIdentifier for BuilderSigner<'_> {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(AlgorithmIdentifierOwned { oid: ECDSA_WITH_SHA256, parameters: None })
    }
}

impl signature::Signer<DerSignature> for BuilderSigner<'_> {
    fn try_sign(&self, msg: &[u8]) -> Result<DerSignature, signature::Error> {
        let sig = Signer::sign_message(self.key, msg).map_err(signature::Error::from_source)?;
        DerSignature::from_bytes(sig.to_der().as_bytes()).map_err(|_| signature::Error::new())
    }
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaKey(<secret redacted>)")
    }
}

/// A validity period (RFC 5280 §4.1.2.5). Times are truncated to whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

fn x509_time(t: SystemTime) -> Result<Time, CaError> {
    build::time(t).map_err(|_| CaError::TimeOutOfRange)
}

fn check_name(what: &'static str, s: &str) -> Result<(), CaError> {
    let len = s.chars().count();
    if len == 0 || len > MAX_NAME_LEN {
        return Err(CaError::NameLength { what, len, max: MAX_NAME_LEN });
    }
    Ok(())
}

/// Certificate serial number (RFC 5280 §4.1.2.2): 16 random bytes, first byte forced into
/// `0x40..=0x7F` so the INTEGER is positive, non-zero and has no leading zero octet.
fn random_serial() -> Result<SerialNumber, CaError> {
    Ok(SerialNumber::new(&random_serial_bytes()?)?)
}

fn random_serial_bytes() -> Result<[u8; SERIAL_LEN], CaError> {
    let mut b = crate::crypto::random::bytes::<SERIAL_LEN>().map_err(|_| CaError::Random)?;
    positive_serial(&mut b);
    Ok(b)
}

fn positive_serial(b: &mut [u8; SERIAL_LEN]) {
    build::positive_serial(b)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Root,
    Intermediate,
    Card,
    /// The scheme signing key (DESIGN.md §10 point 3): signs key authorisations and policies only.
    Scheme,
}

impl Kind {
    /// The module notes' profile: the root unconstrained, the card-issuing intermediate
    /// `pathLenConstraint 0`, cards sign and agree keys (claims 4, 18), the scheme key only signs.
    fn role(self) -> Role {
        match self {
            Kind::Root => Role::Ca { path_len: None },
            Kind::Intermediate => Role::Ca { path_len: Some(0) },
            Kind::Card => Role::EndEntity(KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyAgreement)),
            Kind::Scheme => Role::EndEntity(KeyUsage(KeyUsages::DigitalSignature.into())),
        }
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

    /// The card subject (module notes): `O=<issuer organisation>, CN=card <serial>,
    /// serialNumber=<serial>`.
    fn card_subject(&self, card: CardSerial) -> Result<Name, CaError> {
        let serial_hex = card.to_string();
        Ok(build::name(&[
            (OID_O, self.organisation.clone()),
            (OID_CN, build::utf8(&format!("card {serial_hex}"))?),
            (OID_SERIAL_NUMBER, Any::encode_from(&PrintableStringRef::new(&serial_hex)?)?),
        ])?)
    }

    /// The builder's TBSCertificate DER for one card certificate (what [`CardTemplate`] reproduces).
    fn card_tbs(
        &self,
        serial_number: &[u8; SERIAL_LEN],
        card: CardSerial,
        public: &ec::PublicKey,
        validity: ValidityPeriod,
    ) -> Result<Vec<u8>, CaError> {
        let profile = build::Profile {
            role: Kind::Card.role(),
            subject: self.card_subject(card)?,
            issuer: Some(self.subject.clone()),
            issuer_key_id: Some(self.key_id.clone()),
        };
        let spki = SubjectPublicKeyInfoOwned::from_der(&public.to_spki_der())?;
        let mut builder =
            CertificateBuilder::new(profile, SerialNumber::new(serial_number)?, validity.to_x509()?, spki)?;
        Ok(builder.finalize(&self.key.signer())?)
    }
}

/// DER of the certificate's `signatureAlgorithm`: ecdsa-with-SHA256, parameters absent (RFC 5758 §3.2).
const SIGNATURE_ALGORITHM_DER: [u8; 12] = [0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];

/// One card TBSCertificate made by the builder for a batch's validity period, with the offsets of the
/// per-card fields, all of fixed length: the serial number (16 octets), the card serial in the
/// subject's CN and serialNumber (16 hex digits each), the public key point (65 octets) and the SKI
/// (20 octets). Everything else (issuer name, AKI, extensions, validity, lengths) is shared.
struct CardTemplate {
    tbs: Vec<u8>,
    serial_at: usize,
    card_serial_at: [usize; 2],
    point_at: usize,
    ski_at: usize,
}

impl CardTemplate {
    /// Build the template from random marker values and locate each; a marker that does not occur
    /// exactly where expected (chance ~2^-100) is drawn again.
    fn new(issuer: &Issuer<'_>, validity: ValidityPeriod) -> Result<Self, CaError> {
        for _ in 0..4 {
            let serial = random_serial_bytes()?;
            let card = CardSerial(crate::crypto::random::bytes::<{ CardSerial::LEN }>().map_err(|_| CaError::Random)?);
            let marker_key = KeyPair::generate().map_err(|_| CaError::Random)?;
            let point = marker_key.public_key();
            let tbs = issuer.card_tbs(&serial, card, point, validity)?;
            let find = |needle: &[u8]| -> Vec<usize> {
                tbs.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect()
            };
            let hex = card.to_string();
            let (s, c, p, k) = (find(&serial), find(hex.as_bytes()), find(point.sec1()), find(&point.key_identifier()));
            if let ([s], [c0, c1], [p], [k]) = (&s[..], &c[..], &p[..], &k[..]) {
                return Ok(CardTemplate { serial_at: *s, card_serial_at: [*c0, *c1], point_at: *p, ski_at: *k, tbs });
            }
        }
        Err(CaError::Build("card certificate template: marker values not unique".into()))
    }

    /// The TBS for one card: the template with the card's fields written in place.
    fn write_tbs(&self, out: &mut [u8], serial: &[u8; SERIAL_LEN], card: CardSerial, public: &ec::PublicKey) {
        out.copy_from_slice(&self.tbs);
        out[self.serial_at..self.serial_at + SERIAL_LEN].copy_from_slice(serial);
        let mut hex = [0u8; 2 * CardSerial::LEN];
        hex::encode_to_slice(card.0, &mut hex).expect("16 hex digits for 8 bytes");
        hex.make_ascii_uppercase();
        for at in self.card_serial_at {
            out[at..at + hex.len()].copy_from_slice(&hex);
        }
        out[self.point_at..self.point_at + ec::PUBLIC_KEY_LEN].copy_from_slice(public.sec1());
        out[self.ski_at..self.ski_at + 20].copy_from_slice(&public.key_identifier());
    }

    /// The signed certificate (RFC 5280 §4.1): `SEQUENCE { tbs, signatureAlgorithm, BIT STRING }`,
    /// written into one buffer, the only allocation per certificate.
    fn issue(
        &self,
        key: &CaKey,
        serial: &[u8; SERIAL_LEN],
        card: CardSerial,
        public: &ec::PublicKey,
    ) -> Result<Vec<u8>, CaError> {
        const HEADER: usize = 4; // SEQUENCE, 0x82, two length octets
        let n = self.tbs.len();
        let mut out = Vec::with_capacity(HEADER + n + SIGNATURE_ALGORITHM_DER.len() + 3 + ec::MAX_DER_SIGNATURE_LEN);
        out.resize(HEADER + n, 0);
        self.write_tbs(&mut out[HEADER..], serial, card, public);
        let signature = key.sign_message(&out[HEADER..])?;
        let signature = signature.to_der();
        out.extend_from_slice(&SIGNATURE_ALGORITHM_DER);
        // BIT STRING with no unused bits (RFC 5480 §2.2: the DER ECDSA-Sig-Value), at most 73 octets.
        out.extend_from_slice(&[0x03, signature.as_bytes().len() as u8 + 1, 0x00]);
        out.extend_from_slice(signature.as_bytes());
        let len = out.len() - HEADER;
        match len {
            256..=0xFFFF => {
                out[..HEADER].copy_from_slice(&[0x30, 0x82, (len >> 8) as u8, len as u8]);
                Ok(out)
            }
            // DER wants the shortest length form; a card certificate is never this short.
            _ => Err(CaError::Build(format!("card certificate of {len} octets"))),
        }
    }
}

/// Issues card certificates of one issuer, sharing a template per validity period.
struct CardIssuer<'a> {
    issuer: Issuer<'a>,
    templates: Vec<(ValidityPeriod, Result<CardTemplate, String>)>,
}

impl<'a> CardIssuer<'a> {
    /// Templates for every distinct validity period in `requests` (a batch normally has one).
    fn new(issuer: Issuer<'a>, requests: &[CardCertRequest]) -> Self {
        let mut templates: Vec<(ValidityPeriod, Result<CardTemplate, String>)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for r in requests {
            if seen.insert(r.validity) {
                // An error belongs to the requests with this validity; kept as text (CaError is not Clone).
                templates.push((r.validity, CardTemplate::new(&issuer, r.validity).map_err(|e| e.to_string())));
            }
        }
        CardIssuer { issuer, templates }
    }

    fn issue(&self, request: &CardCertRequest, serial: &[u8; SERIAL_LEN]) -> Result<Vec<u8>, CaError> {
        let public = card_key::parse_public_key(&request.public_key_sec1).map_err(CaError::CardKey)?;
        // Validity first, with its own error (EmptyValidity, TimeOutOfRange), as the builder would.
        request.validity.to_x509()?;
        let template = match self.templates.iter().find(|(v, _)| *v == request.validity) {
            Some((_, Ok(t))) => t,
            Some((_, Err(e))) => return Err(CaError::Build(e.clone())),
            None => return Err(CaError::Build("no template for this validity".into())),
        };
        template.issue(self.issuer.key, serial, request.serial, &public)
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
        let key = CaKey::generate()?;
        let der = Self::certify_root(&key, issuer_name, validity)?;
        Ok((key, der))
    }

    /// The self-signed root certificate of a key made elsewhere (a token's), with the subject
    /// [`IssuerCa::create_root`] gives.
    pub fn certify_root(key: &CaKey, issuer_name: &str, validity: ValidityPeriod) -> Result<Vec<u8>, CaError> {
        check_name("issuer name", issuer_name)?;
        let cn = format!("{issuer_name} Root CA");
        check_name("root common name", &cn)?;
        let subject = build::name(&[(OID_O, build::utf8(issuer_name)?), (OID_CN, build::utf8(&cn)?)])?;
        let profile = build::Profile { role: Kind::Root.role(), subject, issuer: None, issuer_key_id: None };
        let builder = CertificateBuilder::new(profile, random_serial()?, validity.to_x509()?, key.spki()?)?;
        let cert = builder.build::<_, DerSignature>(&key.signer())?;
        Ok(cert.to_der()?)
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
        let subject = build::name(&[(OID_O, root.organisation.clone()), (OID_CN, build::utf8(name)?)])?;
        let key = CaKey::generate()?;
        let profile = build::Profile {
            role: Kind::Intermediate.role(),
            subject,
            issuer: Some(root.subject.clone()),
            issuer_key_id: Some(root.key_id.clone()),
        };
        let builder = CertificateBuilder::new(profile, random_serial()?, validity.to_x509()?, key.spki()?)?;
        let cert = builder.build::<_, DerSignature>(&root_key.signer())?;
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
    let request = CardCertRequest {
        serial: card_serial,
        public_key_sec1: card_public_sec1.to_vec(),
        validity: ValidityPeriod { not_before, not_after },
    };
    let public = card_key::parse_public_key(&request.public_key_sec1).map_err(CaError::CardKey)?;
    let validity = request.validity;
    validity.to_x509()?;
    CardTemplate::new(&issuer, validity)?.issue(ca_key, &random_serial_bytes()?, card_serial, &public)
}

/// Certify the scheme signing key (DESIGN.md §10 point 3) under the CA whose key and certificate are
/// given: subject `O=<issuer organisation>, CN=scheme signing key`, `basicConstraints cA=FALSE` and
/// `keyUsage digitalSignature` only, both critical (RFC 5280 §4.2.1.3, §4.2.1.9): the key signs the
/// scheme's own objects, never certificates and never key agreement.
pub fn issue_scheme_certificate(
    ca_key: &CaKey,
    ca_cert_der: &[u8],
    scheme_public_sec1: &[u8],
    validity: ValidityPeriod,
) -> Result<Vec<u8>, CaError> {
    let issuer = Issuer::new(ca_key, ca_cert_der)?;
    let public = card_key::parse_public_key(scheme_public_sec1).map_err(CaError::CardKey)?;
    let spki = SubjectPublicKeyInfoOwned::from_der(&public.to_spki_der())?;
    let subject = build::name(&[(OID_O, issuer.organisation.clone()), (OID_CN, build::utf8("scheme signing key")?)])?;
    let profile = build::Profile {
        role: Kind::Scheme.role(),
        subject,
        issuer: Some(issuer.subject.clone()),
        issuer_key_id: Some(issuer.key_id.clone()),
    };
    let builder = CertificateBuilder::new(profile, random_serial()?, validity.to_x509()?, spki)?;
    let cert = builder.build::<_, DerSignature>(&ca_key.signer())?;
    Ok(cert.to_der()?)
}

/// Issue many card certificates in parallel on rayon's pool (all its threads), in request order.
/// The issuer certificate is parsed once, one template is built per distinct validity period, and
/// the serial numbers come from one call to the operating system's generator. All or nothing: the
/// first failing request (lowest index) is reported with its index.
pub fn issue_batch(ca_key: &CaKey, ca_cert_der: &[u8], requests: &[CardCertRequest]) -> Result<Vec<Vec<u8>>, CaError> {
    let issuer = CardIssuer::new(Issuer::new(ca_key, ca_cert_der)?, requests);
    let mut serials = vec![[0u8; SERIAL_LEN]; requests.len()];
    crate::crypto::random::fill(serials.as_flattened_mut()).map_err(|_| CaError::Random)?;
    for s in &mut serials {
        positive_serial(s);
    }
    let results: Vec<Result<Vec<u8>, CaError>> =
        requests.par_iter().zip(serials.par_iter()).map(|(r, serial)| issuer.issue(r, serial)).collect();
    // rayon stops at whichever error it meets first in time; report the lowest index instead.
    let mut certs = Vec::with_capacity(results.len());
    for (index, r) in results.into_iter().enumerate() {
        certs.push(r.map_err(|e| CaError::BatchItem { index, source: Box::new(e) })?);
    }
    Ok(certs)
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
        signature: AlgorithmIdentifierOwned { oid: ECDSA_WITH_SHA256, parameters: None },
        issuer: issuer.subject.clone(),
        this_update,
        next_update: Some(next_update),
        revoked_certificates: if entries.is_empty() { None } else { Some(entries) },
        crl_extensions: Some(crl_extensions),
    };
    let tbs_der = tbs.to_der()?;
    let signature = ca_key.sign_message(&tbs_der)?;
    let crl = CertificateList {
        signature_algorithm: tbs.signature.clone(),
        tbs_cert_list: tbs,
        signature: BitString::from_bytes(signature.to_der().as_bytes())?,
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

    /// The batch path writes each card's fields into a template made by the builder: it must give
    /// the very TBS the builder gives for the same fields, for UTCTime and GeneralizedTime validity,
    /// and the certificate around it must be what x509-cert re-encodes, signed for the CA's key (the
    /// `p256` crate verifies, a second implementation).
    #[test]
    fn card_template_reproduces_the_builder_byte_for_byte() {
        use p256::ecdsa::signature::Verifier;
        let (key, root) = IssuerCa::create_root("Test Issuer", validity()).unwrap();
        let issuer = Issuer::new(&key, &root).unwrap();
        let y2049 = SystemTime::UNIX_EPOCH + Duration::from_secs(2_524_607_999);
        let periods = [
            validity(),
            ValidityPeriod { not_before: y2049 - Duration::from_secs(86_400), not_after: y2049 },
            ValidityPeriod { not_before: y2049, not_after: y2049 + Duration::from_secs(400 * 86_400) },
        ];
        let ca_public =
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key_sec1()).expect("CA key for the p256 crate");
        for period in periods {
            let template = CardTemplate::new(&issuer, period).unwrap();
            for i in 0..16u64 {
                let serial = random_serial_bytes().unwrap();
                let card = CardSerial::from_u64(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let public = KeyPair::generate().unwrap().public_key().clone();
                let mut ours = vec![0u8; template.tbs.len()];
                template.write_tbs(&mut ours, &serial, card, &public);
                assert_eq!(ours, issuer.card_tbs(&serial, card, &public, period).unwrap(), "period {period:?}");
                let der = template.issue(&key, &serial, card, &public).unwrap();
                let cert = Certificate::from_der(&der).unwrap();
                assert_eq!(cert.to_der().unwrap(), der, "not canonical DER");
                assert_eq!(cert.tbs_certificate().to_der().unwrap(), ours);
                let sig = p256::ecdsa::Signature::from_der(cert.signature().raw_bytes()).unwrap();
                ca_public.verify(&ours, &sig).unwrap();
            }
        }
    }

    #[test]
    fn batch_reports_the_lowest_failing_index() {
        let (key, root) = IssuerCa::create_root("Test Issuer", validity()).unwrap();
        let mut requests: Vec<CardCertRequest> = (0..64).map(card_request).collect();
        requests[40].public_key_sec1 = vec![0x04; 65];
        let now = SystemTime::now();
        requests[50].validity = ValidityPeriod { not_before: now, not_after: now };
        requests[7].public_key_sec1 = vec![0x04; 64];
        match issue_batch(&key, &root, &requests) {
            Err(CaError::BatchItem { index: 7, source }) => assert!(matches!(*source, CaError::CardKey(_))),
            other => panic!("{other:?}"),
        }
        requests[7] = card_request(7);
        requests[40] = card_request(40);
        match issue_batch(&key, &root, &requests) {
            Err(CaError::BatchItem { index: 50, source }) => assert!(matches!(*source, CaError::EmptyValidity)),
            other => panic!("{other:?}"),
        }
        requests[50] = card_request(50);
        let certs = issue_batch(&key, &root, &requests).unwrap();
        assert_eq!(certs.len(), 64);
        let serials: std::collections::HashSet<Vec<u8>> = certs
            .iter()
            .map(|d| Certificate::from_der(d).unwrap().tbs_certificate().serial_number().as_bytes().to_vec())
            .collect();
        assert_eq!(serials.len(), 64, "serial numbers repeat");
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
