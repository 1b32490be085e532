//! The line's check of a blank card's factory credentials (DESIGN.md §10 points 1, 2), done before the
//! key agreement and so before any secret leaves the issuer:
//! 1. both factory certificates validate (RFC 5280 §6.1, through [`crate::pki::validate`]) as end-entity
//!    certificates directly under one root the issuer trusts (`fab trust`), at the line's time;
//! 2. each carries exactly its one keyUsage (§4.2.1.3): the key-agreement certificate `keyAgreement`
//!    only, the attestation certificate `digitalSignature` only (one key, one purpose);
//! 3. both name the same chip id (subject `serialNumber`), the one the card reports;
//! 4. the PC/SC line refuses cards of the convenience manufacturer that certifies virtual reference
//!    cards (its key lives in the issuer's own database, so it proves nothing about a chip).
//!
//! What this cannot show is that the card holds the certified private key: the SCP11b receipt shows
//! that ([`crate::crypto::scp11`]), and the attestation signature over the session transcript shows it
//! for the attestation key.

use crate as keyroll;
use crate::domain::ChipId;
use crate::pki::{self, ValidationOptions};
use keyroll::fab;
use std::time::SystemTime;

/// A manufacturer root the issuer trusts.
#[derive(Clone, Debug)]
pub struct TrustedRoot {
    pub name: String,
    pub der: Vec<u8>,
    /// SHA-256 of `der`, lower-case hex.
    pub fingerprint: String,
    /// The convenience manufacturer of virtual reference cards: never accepted on a PC/SC line.
    pub virtual_only: bool,
}

/// Which factory certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Agreement,
    Attestation,
}

impl std::fmt::Display for Which {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Which::Agreement => "key-agreement",
            Which::Attestation => "attestation",
        })
    }
}

/// A card whose factory certificates passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactoryIdentity {
    pub chip_id: ChipId,
    /// `PK.SD.ECKA`, the SCP11b static key.
    pub agreement_public: Vec<u8>,
    pub attestation_public: Vec<u8>,
    pub manufacturer: String,
    pub root_fingerprint: String,
    pub agreement_fingerprint: String,
    pub attestation_fingerprint: String,
}

/// Why a card's factory credentials were refused. Each names the reason for the refusal record.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FactoryError {
    #[error("the card's {which} certificate is not from a manufacturer this issuer trusts ({reason})")]
    Untrusted { which: Which, reason: String },
    #[error("the card's {which} certificate carries keyUsage other than {expected} alone")]
    WrongKeyUsage { which: Which, expected: &'static str },
    #[error("the card's {which} certificate names no chip id (subject serialNumber of 16 hex digits)")]
    NoChipId { which: Which },
    #[error("the card's two factory certificates name different chips")]
    ChipMismatch,
    #[error("the card reports chip id {reported}, its certificates name {certified}")]
    ReportedChipMismatch { reported: ChipId, certified: ChipId },
    #[error("the card's two factory certificates come from different manufacturers")]
    TwoManufacturers,
    #[error("the card was made by the convenience manufacturer {name:?}, which only certifies virtual reference cards")]
    VirtualManufacturer { name: String },
}

impl FactoryError {
    /// A stable short code for the audit log's refusal record.
    pub fn code(&self) -> &'static str {
        match self {
            FactoryError::Untrusted { .. } => "untrusted-manufacturer",
            FactoryError::WrongKeyUsage { .. } => "factory-key-usage",
            FactoryError::NoChipId { .. } => "no-chip-id",
            FactoryError::ChipMismatch | FactoryError::ReportedChipMismatch { .. } => "chip-id-mismatch",
            FactoryError::TwoManufacturers => "two-manufacturers",
            FactoryError::VirtualManufacturer { .. } => "virtual-manufacturer",
        }
    }
}

fn check_one<'r>(
    which: Which,
    der: &[u8],
    roots: &'r [TrustedRoot],
    at: SystemTime,
) -> Result<(pki::ValidatedPath, &'r TrustedRoot), FactoryError> {
    let anchors: Vec<Vec<u8>> = roots.iter().map(|r| r.der.clone()).collect();
    if anchors.is_empty() {
        return Err(FactoryError::Untrusted { which, reason: "no manufacturer is trusted yet: fab trust".into() });
    }
    let mut opts = ValidationOptions::at(at);
    opts.allow_ca_leaf = false;
    // Factory certificates sit directly under the manufacturer root (its pathLenConstraint is 0).
    opts.max_intermediates = Some(0);
    let path = pki::validate(der, &[], &anchors, &[], &opts)
        .map_err(|e| FactoryError::Untrusted { which, reason: e.to_string() })?;
    let anchor = path.chain.last().ok_or_else(|| FactoryError::Untrusted { which, reason: "empty path".into() })?;
    let root = roots
        .iter()
        .find(|r| &r.der == anchor)
        .ok_or_else(|| FactoryError::Untrusted { which, reason: "the path ends at no trusted root".into() })?;
    let ku = path.leaf_key_usage;
    let ok = match which {
        Which::Agreement => ku.is_some_and(|k| k.key_agreement() && k.0.count_ones() == 1),
        Which::Attestation => ku.is_some_and(|k| k.digital_signature() && k.0.count_ones() == 1),
    };
    if !ok {
        let expected = if which == Which::Agreement { "keyAgreement" } else { "digitalSignature" };
        return Err(FactoryError::WrongKeyUsage { which, expected });
    }
    Ok((path, root))
}

/// Check a card's two factory certificates and the chip id it reports. `allow_virtual` is true only for
/// virtual reference cards made to files (`perso --out-dir`).
pub fn verify(
    agreement_der: &[u8],
    attestation_der: &[u8],
    reported: ChipId,
    roots: &[TrustedRoot],
    at: SystemTime,
    allow_virtual: bool,
) -> Result<FactoryIdentity, FactoryError> {
    let (ka, ka_root) = check_one(Which::Agreement, agreement_der, roots, at)?;
    let (att, att_root) = check_one(Which::Attestation, attestation_der, roots, at)?;
    if ka_root.fingerprint != att_root.fingerprint {
        return Err(FactoryError::TwoManufacturers);
    }
    if ka_root.virtual_only && !allow_virtual {
        return Err(FactoryError::VirtualManufacturer { name: ka_root.name.clone() });
    }
    let ka_chip = fab::chip_id_of(agreement_der).ok_or(FactoryError::NoChipId { which: Which::Agreement })?;
    let att_chip = fab::chip_id_of(attestation_der).ok_or(FactoryError::NoChipId { which: Which::Attestation })?;
    if ka_chip != att_chip {
        return Err(FactoryError::ChipMismatch);
    }
    if ka_chip != reported {
        return Err(FactoryError::ReportedChipMismatch { reported, certified: ka_chip });
    }
    Ok(FactoryIdentity {
        chip_id: ka_chip,
        agreement_public: ka.leaf_public_key_sec1,
        attestation_public: att.leaf_public_key_sec1,
        manufacturer: ka_root.name.clone(),
        root_fingerprint: ka_root.fingerprint.clone(),
        agreement_fingerprint: fab::fingerprint(agreement_der),
        attestation_fingerprint: fab::fingerprint(attestation_der),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fab::{FactoryKey, Manufacturer};

    fn root(m: &Manufacturer, virtual_only: bool) -> TrustedRoot {
        TrustedRoot { name: "fab".into(), der: m.root_der().to_vec(), fingerprint: m.fingerprint(), virtual_only }
    }

    #[test]
    fn a_genuine_blank_passes() {
        let m = Manufacturer::create("Fab").unwrap();
        let b = m.make_blank().unwrap();
        let id =
            verify(&b.agreement_cert, &b.attestation_cert, b.chip_id, &[root(&m, false)], SystemTime::now(), false)
                .unwrap();
        assert_eq!(id.chip_id, b.chip_id);
        assert_eq!(id.agreement_public, b.agreement_key.public_key_sec1());
        assert_eq!(id.attestation_public, b.attestation_key.public_key_sec1());
        assert_eq!(id.root_fingerprint, m.fingerprint());
    }

    #[test]
    fn impostor_credentials_are_refused_with_their_reason() {
        let trusted = Manufacturer::create("Trusted").unwrap();
        let roots = [root(&trusted, false)];
        let now = SystemTime::now();
        // An untrusted manufacturer.
        let rogue = Manufacturer::create("Rogue").unwrap();
        let b = rogue.make_blank().unwrap();
        let e = verify(&b.agreement_cert, &b.attestation_cert, b.chip_id, &roots, now, false).unwrap_err();
        assert!(matches!(e, FactoryError::Untrusted { which: Which::Agreement, .. }), "{e}");
        assert_eq!(e.code(), "untrusted-manufacturer");
        // A self-signed "factory" certificate: a manufacturer root of its own presented as the leaf.
        let e = verify(rogue.root_der(), rogue.root_der(), b.chip_id, &roots, now, false).unwrap_err();
        assert!(matches!(e, FactoryError::Untrusted { .. }), "{e}");
        // Keys swapped between the two purposes.
        let g = trusted.make_blank().unwrap();
        let e = verify(&g.attestation_cert, &g.agreement_cert, g.chip_id, &roots, now, false).unwrap_err();
        assert_eq!(e, FactoryError::WrongKeyUsage { which: Which::Agreement, expected: "keyAgreement" });
        // Certificates of two chips.
        let h = trusted.make_blank().unwrap();
        let e = verify(&g.agreement_cert, &h.attestation_cert, g.chip_id, &roots, now, false).unwrap_err();
        assert_eq!(e, FactoryError::ChipMismatch);
        // A card reporting another chip id than its certificates.
        let e = verify(&g.agreement_cert, &g.attestation_cert, h.chip_id, &roots, now, false).unwrap_err();
        assert!(matches!(e, FactoryError::ReportedChipMismatch { .. }));
        // The convenience manufacturer on a PC/SC line.
        let virt = [root(&trusted, true)];
        let e = verify(&g.agreement_cert, &g.attestation_cert, g.chip_id, &virt, now, false).unwrap_err();
        assert!(matches!(e, FactoryError::VirtualManufacturer { .. }));
        assert!(verify(&g.agreement_cert, &g.attestation_cert, g.chip_id, &virt, now, true).is_ok());
        // Nothing trusted at all.
        let e = verify(&g.agreement_cert, &g.attestation_cert, g.chip_id, &[], now, false).unwrap_err();
        assert!(matches!(e, FactoryError::Untrusted { .. }));
        // Two manufacturers' certificates for one chip id.
        let second = Manufacturer::create("Second").unwrap();
        let both = [root(&trusted, false), TrustedRoot { name: "second".into(), ..root(&second, false) }];
        let att = second.certify(g.chip_id, FactoryKey::Attestation, &g.attestation_key.public_key_sec1()).unwrap();
        let e = verify(&g.agreement_cert, &att, g.chip_id, &both, now, false).unwrap_err();
        assert_eq!(e, FactoryError::TwoManufacturers);
    }
}
