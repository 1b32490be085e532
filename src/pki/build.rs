//! The writer's half of keyroll's X.509: what both of keyroll's certificate issuers write the same
//! way, the back office's CA ([`crate::authority::ca`]) and the reference manufacturer
//! ([`crate::fab`]). The rest of `pki` reads; this module only builds, on x509-cert's builder.
//!
//! - [`Profile`]: subject, issuer and exactly four extensions (RFC 5280 §4.2.1): `basicConstraints`
//!   critical (§4.2.1.9), `keyUsage` critical (§4.2.1.3), SKI (§4.2.1.2, method 1) and AKI = the
//!   issuer's SKI, or the certificate's own SKI when self-signed (§4.2.1.1).
//! - [`name`]: one attribute per RDN, so no string escaping is involved (§4.1.2.4).
//! - [`time`]: UTCTime through 2049, GeneralizedTime from 2050 (§4.1.2.5, §5.1.2.4).
//! - [`positive_serial`]: a 16-byte random serial made positive without a leading zero (§4.1.2.2).

use der::asn1::{Any, OctetString, Utf8StringRef};
use der::{Decode, Encode};
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};
use std::time::SystemTime;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::time::Time;

/// id-at-commonName (X.520).
pub const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// id-at-organizationName (X.520).
pub const OID_O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
/// id-at-serialNumber (X.520).
pub const OID_SERIAL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.5");

/// What a certificate's key may do: the pair of critical extensions RFC 5280 §4.2.1.3 and §4.2.1.9
/// tie together (a CA signs certificates and CRLs; an end entity never does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `cA=TRUE`, `keyCertSign, cRLSign`, with the path length constraint given.
    Ca { path_len: Option<u8> },
    /// `cA=FALSE` with exactly these key usages.
    EndEntity(KeyUsage),
}

/// keyroll's certificate profile for x509-cert's builder (see the module notes).
pub struct Profile {
    pub role: Role,
    pub subject: Name,
    /// `None` for a self-signed certificate.
    pub issuer: Option<Name>,
    /// The issuing CA's SKI, copied into the AKI; `None` when self-signed (AKI = its own SKI).
    pub issuer_key_id: Option<OctetString>,
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
        let subject = tbs.subject();
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(self.issuer_key_id.clone().unwrap_or_else(|| ski.0.clone())),
            ..Default::default()
        };
        let (basic, usage) = match self.role {
            Role::Ca { path_len } => (
                BasicConstraints { ca: true, path_len_constraint: path_len },
                KeyUsages::KeyCertSign | KeyUsages::CRLSign,
            ),
            Role::EndEntity(KeyUsage(usage)) => (BasicConstraints { ca: false, path_len_constraint: None }, usage),
        };
        Ok(vec![
            (true, &basic).to_extension(subject, &[])?,
            (true, &KeyUsage(usage)).to_extension(subject, &[])?,
            (false, &ski).to_extension(subject, &[])?,
            (false, &aki).to_extension(subject, &[])?,
        ])
    }
}

/// A `Name` built attribute by attribute (one attribute per RDN), so no string escaping is involved.
pub fn name(attrs: &[(ObjectIdentifier, Any)]) -> der::Result<Name> {
    let mut rdns = RdnSequence::default();
    for (oid, value) in attrs {
        let atv = x509_cert::attr::AttributeTypeAndValue { oid: *oid, value: value.clone() };
        rdns.push(RelativeDistinguishedName::try_from(vec![atv])?);
    }
    Name::from_der(&rdns.to_der()?)
}

/// A UTF8String attribute value (RFC 5280 §4.1.2.4 recommends UTF8String for new names).
pub fn utf8(s: &str) -> der::Result<Any> {
    Any::encode_from(&Utf8StringRef::new(s)?)
}

/// RFC 5280 §4.1.2.5 / §5.1.2.4: UTCTime for years through 2049, GeneralizedTime from 2050. An error
/// for a time outside what either can hold.
pub fn time(t: SystemTime) -> der::Result<Time> {
    let dt = der::DateTime::from_system_time(t)?;
    if dt.year() <= 2049 {
        Ok(Time::UtcTime(der::asn1::UtcTime::from_date_time(dt)?))
    } else {
        Ok(Time::GeneralTime(der::asn1::GeneralizedTime::from_date_time(dt)))
    }
}

/// Certificate serial number (RFC 5280 §4.1.2.2) from 16 random bytes: the first byte forced into
/// `0x40..=0x7F`, so the INTEGER is positive, non-zero, exactly 16 octets in DER (no leading zero
/// octet) and keeps 126 random bits.
pub fn positive_serial(b: &mut [u8; 16]) {
    b[0] = (b[0] & 0x3F) | 0x40;
}
