//! The card manufacturer, played by keyroll for reference cards (DESIGN.md §10 point 1, §9 `fab …`).
//!
//! A manufacturer is a P-256 root certificate and its key. Every blank card it makes leaves the fab
//! with a chip id and two factory key pairs generated for that chip, one purpose each (NIST SP 800-57
//! Part 1 §5.2: one key, one use):
//! - the **key-agreement** key (`SK.SD.ECKA` of GlobalPlatform Amendment F), certified with keyUsage
//!   `keyAgreement` only: the static key of the SCP11b channel ([`crate::crypto::scp11`]);
//! - the **attestation** key, certified with keyUsage `digitalSignature` only: signs the public keys
//!   the card generates during personalisation, so the issuer's CA certifies only keys made on a
//!   genuine chip.
//!
//! Certificate profile (RFC 5280 §4.2.1; ECDSA P-256 with SHA-256, RFC 5758 §3.2):
//! - root: self-signed, subject `O=<name>, CN=<name> Manufacturer Root`, `basicConstraints cA=TRUE,
//!   pathLenConstraint 0` critical, `keyUsage keyCertSign, cRLSign` critical, SKI, AKI = SKI;
//! - factory certificates: issued by the root, subject `O=<name>, CN=chip <id> key agreement|attestation,
//!   serialNumber=<chip id>`, `basicConstraints cA=FALSE` critical, the one keyUsage above critical,
//!   SKI, AKI = root's SKI; 16-byte random positive serial numbers.
//!
//! Files of a manufacturer directory: `root.pem` (the certificate, given to issuers for `fab trust`)
//! and `root.key` (PKCS #8 PEM, mode 0600, refused when group or others can read it).

pub mod verify;

pub use verify::{FactoryError, FactoryIdentity, TrustedRoot};

use crate::crypto::card_key::{self, CardKeyPair};
use crate::domain::ChipId;
use crate::pki::build::{self, OID_CN, OID_O, OID_SERIAL_NUMBER, Role};
use der::asn1::{Any, OctetString, PrintableStringRef, Utf8StringRef};
use der::{Decode, Encode};
use p256::ecdsa::{DerSignature, SigningKey};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use sha2::{Digest, Sha256};
use spki::SubjectPublicKeyInfoOwned;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::ext::pkix::{KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;

/// The root certificate's file name in a manufacturer directory.
pub const ROOT_CERT_FILE: &str = "root.pem";
/// The root key's file name in a manufacturer directory (mode 0600).
pub const ROOT_KEY_FILE: &str = "root.key";
/// Upper bound on a name attribute, RFC 5280 Appendix A.1 (`ub-organization-name`).
pub const MAX_NAME_LEN: usize = 40;
/// Manufacturer roots are valid 30 years; factory certificates 25 (a chip's life on the shelf and in
/// the field); both start an hour in the past for clocks a little behind.
const ROOT_VALIDITY: Duration = Duration::from_secs(30 * 365 * 86400);
const FACTORY_VALIDITY: Duration = Duration::from_secs(25 * 365 * 86400);
const BACKDATE: Duration = Duration::from_secs(3600);

/// Errors of the manufacturer. No variant carries key material.
#[derive(Debug, thiserror::Error)]
pub enum FabError {
    #[error("manufacturer name must be 1 to {MAX_NAME_LEN} printable characters")]
    BadName,
    #[error("{0} already exists; a manufacturer is never overwritten")]
    Exists(PathBuf),
    #[error("{0} is not a manufacturer directory (no {ROOT_CERT_FILE} or {ROOT_KEY_FILE})")]
    NotAManufacturer(PathBuf),
    #[error("{0} can be read by group or others; a manufacturer key must be mode 0600")]
    KeyFileMode(PathBuf),
    #[error("{path} is not a PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("the manufacturer key does not match its root certificate")]
    KeyMismatch,
    #[error("{path}: {why}")]
    Io { path: PathBuf, why: String },
    #[error("certificate building failed: {0}")]
    Build(String),
    #[error("operating system random generator failed")]
    Random,
}

impl From<der::Error> for FabError {
    fn from(e: der::Error) -> Self {
        FabError::Build(e.to_string())
    }
}
impl From<x509_cert::builder::Error> for FabError {
    fn from(e: x509_cert::builder::Error) -> Self {
        FabError::Build(e.to_string())
    }
}

/// Which factory key a certificate certifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactoryKey {
    /// keyUsage keyAgreement: the SCP11b static key.
    Agreement,
    /// keyUsage digitalSignature: signs key attestations.
    Attestation,
}

impl FactoryKey {
    /// One key, one purpose: the agreement key only agrees keys, the attestation key only signs.
    fn role(self) -> Role {
        match self {
            FactoryKey::Agreement => Role::EndEntity(KeyUsage(KeyUsages::KeyAgreement.into())),
            FactoryKey::Attestation => Role::EndEntity(KeyUsage(KeyUsages::DigitalSignature.into())),
        }
    }

    fn cn(self, chip: ChipId) -> String {
        match self {
            FactoryKey::Agreement => format!("chip {chip} key agreement"),
            FactoryKey::Attestation => format!("chip {chip} attestation"),
        }
    }
}

/// RFC 5280 §4.1.2.5 times around now (backdated by an hour for clocks a little behind).
fn validity(length: Duration) -> Result<Validity, FabError> {
    let now = SystemTime::now();
    Ok(Validity::new(build::time(now - BACKDATE)?, build::time(now + length)?))
}

/// RFC 5280 §4.1.2.2: 16 random bytes, first byte in `0x40..=0x7F` (positive, no leading zero).
fn random_serial() -> Result<SerialNumber, FabError> {
    let mut b = crate::crypto::random::bytes::<16>().map_err(|_| FabError::Random)?;
    build::positive_serial(&mut b);
    Ok(SerialNumber::new(&b)?)
}

/// SHA-256 of a DER certificate, lower-case hex: how keyroll names a manufacturer root or a factory
/// certificate in its records.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// A manufacturer: its root certificate and signing key.
pub struct Manufacturer {
    key: SigningKey,
    root_der: Vec<u8>,
    subject: Name,
    key_id: OctetString,
    organisation: Any,
}

impl std::fmt::Debug for Manufacturer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Manufacturer {{ root: {} }}", fingerprint(&self.root_der))
    }
}

impl Manufacturer {
    /// A new manufacturer named `name`: a fresh P-256 key and a self-signed root.
    pub fn create(name: &str) -> Result<Self, FabError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(FabError::BadName);
        }
        let key = SigningKey::try_generate().map_err(|_| FabError::Random)?;
        let subject =
            build::name(&[(OID_O, build::utf8(name)?), (OID_CN, build::utf8(&format!("{name} Manufacturer Root"))?)])?;
        let spki =
            SubjectPublicKeyInfoOwned::from_key(key.verifying_key()).map_err(|e| FabError::Build(e.to_string()))?;
        let profile =
            build::Profile { role: Role::Ca { path_len: Some(0) }, subject, issuer: None, issuer_key_id: None };
        let cert = CertificateBuilder::new(profile, random_serial()?, validity(ROOT_VALIDITY)?, spki)?
            .build::<_, DerSignature>(&key)?;
        Self::from_parts(key, cert.to_der()?)
    }

    fn from_parts(key: SigningKey, root_der: Vec<u8>) -> Result<Self, FabError> {
        let cert = x509_cert::Certificate::from_der(&root_der)?;
        let tbs = cert.tbs_certificate();
        let public = card_key::public_key_from_spki_der(&tbs.subject_public_key_info().to_der()?)
            .map_err(|_| FabError::KeyMismatch)?;
        let own = {
            use p256::elliptic_curve::sec1::ToSec1Point;
            key.verifying_key().as_affine().to_sec1_point(false)
        };
        if public.as_slice() != own.as_bytes() {
            return Err(FabError::KeyMismatch);
        }
        let key_id = match tbs.get_extension::<SubjectKeyIdentifier>()? {
            Some((_, ski)) => ski.0,
            None => return Err(FabError::Build("the root has no subjectKeyIdentifier".into())),
        };
        let subject = tbs.subject().clone();
        let organisation = subject
            .iter()
            .find(|atv| atv.oid == OID_O)
            .map(|atv| atv.value.clone())
            .ok_or_else(|| FabError::Build("the root's subject has no organizationName".into()))?;
        Ok(Manufacturer { key, root_der, subject, key_id, organisation })
    }

    /// The root certificate (DER).
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The root key as PKCS #8 DER in a zeroizing buffer (for a back office that stores it encrypted).
    pub fn key_pkcs8_der(&self) -> Result<crate::crypto::secret::SecretBytes, FabError> {
        let doc = self.key.to_pkcs8_der().map_err(|e| FabError::Build(e.to_string()))?;
        Ok(crate::crypto::secret::SecretBytes::new(doc.as_bytes().to_vec()))
    }

    /// Restore from a root certificate and its PKCS #8 DER key.
    pub fn from_der(root_der: &[u8], key_pkcs8_der: &[u8]) -> Result<Self, FabError> {
        let key = SigningKey::from_pkcs8_der(key_pkcs8_der).map_err(|_| FabError::KeyMismatch)?;
        Self::from_parts(key, root_der.to_vec())
    }

    /// Write `root.pem` and `root.key` (mode 0600) into `dir`, which is created if missing. Existing
    /// files are never overwritten; each file appears whole or not at all.
    pub fn write_dir(&self, dir: &Path) -> Result<(), FabError> {
        let io = |path: &Path, e: std::io::Error| FabError::Io { path: path.to_path_buf(), why: e.to_string() };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let (cert_path, key_path) = (dir.join(ROOT_CERT_FILE), dir.join(ROOT_KEY_FILE));
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(FabError::Exists(p.clone()));
            }
        }
        let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &self.root_der)
            .map_err(|e| FabError::Build(e.to_string()))?;
        let key_pem = self.key.to_pkcs8_pem(der::pem::LineEnding::LF).map_err(|e| FabError::Build(e.to_string()))?;
        write_new(&key_path, key_pem.as_bytes(), 0o600)?;
        write_new(&cert_path, pem.as_bytes(), 0o644)?;
        Ok(())
    }

    /// Load a manufacturer directory written by [`Manufacturer::write_dir`].
    pub fn load_dir(dir: &Path) -> Result<Self, FabError> {
        let (cert_path, key_path) = (dir.join(ROOT_CERT_FILE), dir.join(ROOT_KEY_FILE));
        if !cert_path.is_file() || !key_path.is_file() {
            return Err(FabError::NotAManufacturer(dir.to_path_buf()));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_path)
                .map_err(|e| FabError::Io { path: key_path.clone(), why: e.to_string() })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(FabError::KeyFileMode(key_path));
            }
        }
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map(zeroize::Zeroizing::new)
                .map_err(|e| FabError::Io { path: p.to_path_buf(), why: e.to_string() })
        };
        let cert_pem = read(&cert_path)?;
        let (label, root_der) = der::pem::decode_vec(cert_pem.as_bytes())
            .map_err(|_| FabError::Pem { path: cert_path.clone(), what: "certificate" })?;
        if label != "CERTIFICATE" {
            return Err(FabError::Pem { path: cert_path, what: "certificate" });
        }
        let key_pem = read(&key_path)?;
        let key =
            SigningKey::from_pkcs8_pem(&key_pem).map_err(|_| FabError::Pem { path: key_path, what: "private key" })?;
        Self::from_parts(key, root_der)
    }

    /// SHA-256 of the root certificate.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.root_der)
    }

    /// Certify `public_key` as chip `chip`'s factory key for `purpose`.
    pub fn certify(&self, chip: ChipId, purpose: FactoryKey, public_key_sec1: &[u8]) -> Result<Vec<u8>, FabError> {
        let public = card_key::parse_public_key(public_key_sec1).map_err(|e| FabError::Build(e.to_string()))?;
        let spki = SubjectPublicKeyInfoOwned::from_key(&public).map_err(|e| FabError::Build(e.to_string()))?;
        let chip_hex = chip.to_string();
        let subject = build::name(&[
            (OID_O, self.organisation.clone()),
            (OID_CN, build::utf8(&purpose.cn(chip))?),
            (OID_SERIAL_NUMBER, Any::encode_from(&PrintableStringRef::new(&chip_hex)?)?),
        ])?;
        let profile = build::Profile {
            role: purpose.role(),
            subject,
            issuer: Some(self.subject.clone()),
            issuer_key_id: Some(self.key_id.clone()),
        };
        let cert = CertificateBuilder::new(profile, random_serial()?, validity(FACTORY_VALIDITY)?, spki)?
            .build::<_, DerSignature>(&self.key)?;
        Ok(cert.to_der()?)
    }

    /// A blank card's factory credentials: a random chip id and two fresh key pairs, each certified.
    pub fn make_blank(&self) -> Result<FactoryCredentials, FabError> {
        let chip_id = ChipId(crate::crypto::random::bytes().map_err(|_| FabError::Random)?);
        let agreement_key = CardKeyPair::generate().map_err(|_| FabError::Random)?;
        let attestation_key = CardKeyPair::generate().map_err(|_| FabError::Random)?;
        let agreement_cert = self.certify(chip_id, FactoryKey::Agreement, &agreement_key.public_key_sec1())?;
        let attestation_cert = self.certify(chip_id, FactoryKey::Attestation, &attestation_key.public_key_sec1())?;
        Ok(FactoryCredentials { chip_id, agreement_key, attestation_key, agreement_cert, attestation_cert })
    }
}

/// What a blank card carries from the fab. The private keys never leave the card once it is made.
#[derive(Clone)]
pub struct FactoryCredentials {
    pub chip_id: ChipId,
    pub agreement_key: CardKeyPair,
    pub attestation_key: CardKeyPair,
    pub agreement_cert: Vec<u8>,
    pub attestation_cert: Vec<u8>,
}

impl std::fmt::Debug for FactoryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FactoryCredentials {{ chip_id: {} }}", self.chip_id)
    }
}

/// The subject `serialNumber` of a factory certificate as a chip id, if it is one.
pub fn chip_id_of(cert_der: &[u8]) -> Option<ChipId> {
    let cert = x509_cert::Certificate::from_der(cert_der).ok()?;
    let mut found = None;
    for atv in cert.tbs_certificate().subject().iter() {
        if atv.oid == OID_SERIAL_NUMBER {
            if found.is_some() {
                return None; // two serialNumber attributes: ambiguous, refused
            }
            let s = PrintableStringRef::try_from(&atv.value).ok()?;
            found = Some(ChipId::parse(s.as_str())?);
        }
    }
    found
}

/// The subject `organizationName` of a certificate (a manufacturer's name on its root), if any.
pub fn organisation_of(cert_der: &[u8]) -> Option<String> {
    let cert = x509_cert::Certificate::from_der(cert_der).ok()?;
    let atv = cert.tbs_certificate().subject().iter().find(|atv| atv.oid == OID_O)?;
    if let Ok(s) = Utf8StringRef::try_from(&atv.value) {
        return Some(s.as_str().to_string());
    }
    PrintableStringRef::try_from(&atv.value).ok().map(|s| s.as_str().to_string())
}

/// Create `path` with `bytes` and `mode`; never replaces an existing file (atomic: a temporary file in
/// the same directory, synced, then linked into place without clobbering).
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FabError> {
    let io = |e: std::io::Error| FabError::Io { path: path.to_path_buf(), why: e.to_string() };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            FabError::Exists(path.to_path_buf())
        } else {
            io(e.error)
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{ValidationOptions, validate};

    fn opts() -> ValidationOptions {
        let mut o = ValidationOptions::at(SystemTime::now());
        o.allow_ca_leaf = false;
        o
    }

    #[test]
    fn blank_credentials_chain_to_the_root_with_one_usage_each() {
        let m = Manufacturer::create("Example Fab").unwrap();
        let blank = m.make_blank().unwrap();
        let anchors = vec![m.root_der().to_vec()];
        let ka = validate(&blank.agreement_cert, &[], &anchors, &[], &opts()).unwrap();
        let ku = ka.leaf_key_usage.unwrap();
        assert!(ku.key_agreement() && !ku.digital_signature());
        assert_eq!(ka.leaf_public_key_sec1, blank.agreement_key.public_key_sec1());
        let at = validate(&blank.attestation_cert, &[], &anchors, &[], &opts()).unwrap();
        let ku = at.leaf_key_usage.unwrap();
        assert!(ku.digital_signature() && !ku.key_agreement());
        assert_eq!(at.leaf_public_key_sec1, blank.attestation_key.public_key_sec1());
        assert_eq!(chip_id_of(&blank.agreement_cert), Some(blank.chip_id));
        assert_eq!(chip_id_of(&blank.attestation_cert), Some(blank.chip_id));
        assert_ne!(m.make_blank().unwrap().chip_id, blank.chip_id);
        // Another manufacturer's root does not anchor these.
        let other = Manufacturer::create("Other Fab").unwrap();
        assert!(validate(&blank.agreement_cert, &[], &[other.root_der().to_vec()], &[], &opts()).is_err());
    }

    /// The root validates as a trust anchor with openssl-compatible extensions: checked with our own
    /// path validator (the CLI tests run `openssl verify` on what `fab` writes).
    #[test]
    fn directory_round_trip_mode_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manufacturer::create("Dir Fab").unwrap();
        m.write_dir(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(ROOT_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = Manufacturer::load_dir(dir.path()).unwrap();
        assert_eq!(back.root_der(), m.root_der());
        assert!(matches!(Manufacturer::create("X").unwrap().write_dir(dir.path()), Err(FabError::Exists(_))));
        assert_eq!(Manufacturer::load_dir(dir.path()).unwrap().fingerprint(), m.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = dir.path().join(ROOT_KEY_FILE);
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(Manufacturer::load_dir(dir.path()), Err(FabError::KeyFileMode(_))));
        }
        assert!(matches!(Manufacturer::load_dir(&dir.path().join("nope")), Err(FabError::NotAManufacturer(_))));
    }

    #[test]
    fn a_key_that_is_not_the_roots_is_refused() {
        let a = Manufacturer::create("A").unwrap();
        let b = Manufacturer::create("B").unwrap();
        let key = b.key_pkcs8_der().unwrap();
        assert!(matches!(Manufacturer::from_der(a.root_der(), key.expose()), Err(FabError::KeyMismatch)));
        assert!(Manufacturer::from_der(b.root_der(), key.expose()).is_ok());
    }

    #[test]
    fn names_are_checked() {
        assert!(matches!(Manufacturer::create(""), Err(FabError::BadName)));
        assert!(matches!(Manufacturer::create(&"x".repeat(41)), Err(FabError::BadName)));
        assert!(matches!(Manufacturer::create("a\nb"), Err(FabError::BadName)));
    }
}
