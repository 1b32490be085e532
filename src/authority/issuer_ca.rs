//! The issuer CA in the database: its root certificate and key (age ciphertext), the card
//! certificates it issued, revocations and CRLs. Certificate building itself is in [`super::ca`].

use super::ca::{self, CaKey, CrlReason, IssuerCa, RevokedEntry, ValidityPeriod};
use super::{AuthorityError, Unlocked, custody, now, secret_name};
use crate::domain::CardSerial;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::time::{Duration, SystemTime};

/// Root validity: 20 years. Card certificates: 10 years. CRLs: next update in 30 days.
const ROOT_VALIDITY: Duration = Duration::from_secs(20 * 365 * 86400);
const CARD_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86400);
const CRL_VALIDITY: Duration = Duration::from_secs(30 * 86400);
/// Backdating of notBefore, for clocks a little behind the issuer's.
const BACKDATE: Duration = Duration::from_secs(3600);

fn ca_err(e: ca::CaError) -> AuthorityError {
    AuthorityError::Ca(e.to_string())
}

/// Create the root CA (inside `init`'s transaction). Returns its serial in hex.
pub(super) fn create_root(
    conn: &Connection,
    issuer: &str,
    recipients: &[age::x25519::Recipient],
) -> Result<String, AuthorityError> {
    let now_t = SystemTime::now();
    let validity = ValidityPeriod { not_before: now_t - BACKDATE, not_after: now_t + ROOT_VALIDITY };
    let (key, der) = IssuerCa::create_root(issuer, validity).map_err(ca_err)?;
    let pkcs8 = key.to_pkcs8_der().map_err(ca_err)?;
    conn.execute(
        "INSERT INTO secrets (name, ciphertext) VALUES (?1, ?2)",
        params![secret_name::CA_KEY, custody::encrypt(recipients, pkcs8.expose())?],
    )?;
    conn.execute("INSERT INTO ca (id, root_der, created_at) VALUES (1, ?1, ?2)", params![der, now()])?;
    Ok(serial_hex(&der))
}

/// The certificate serial of a DER certificate, upper-case hex ("" if it does not parse).
pub fn serial_hex(der: &[u8]) -> String {
    crate::pki::Certificate::from_der(der).map(|c| hex::encode_upper(&c.serial)).unwrap_or_default()
}

/// The root certificate (DER), if the CA exists.
pub fn root(conn: &Connection) -> Result<Option<Vec<u8>>, AuthorityError> {
    Ok(conn.query_row("SELECT root_der FROM ca WHERE id = 1", [], |r| r.get(0)).optional()?)
}

/// A certificate as listed (`cert list --json` fields `serial`, `card`, `revoked`, `pem`).
#[derive(Debug, Serialize)]
pub struct CertRow {
    pub serial: String,
    pub card: String,
    pub revoked: bool,
    pub issued_at: String,
    pub revoked_at: Option<String>,
    pub reason: Option<String>,
    pub pem: String,
}

pub fn list(conn: &Connection) -> Result<Vec<CertRow>, AuthorityError> {
    let mut stmt =
        conn.prepare("SELECT serial, card_serial, der, issued_at, revoked_at, reason FROM certificates ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        let der: Vec<u8> = r.get(2)?;
        let revoked_at: Option<String> = r.get(4)?;
        Ok(CertRow {
            serial: r.get(0)?,
            card: r.get(1)?,
            revoked: revoked_at.is_some(),
            issued_at: r.get(3)?,
            revoked_at,
            reason: r.get(5)?,
            pem: ca::pem_encode(ca::PEM_CERTIFICATE, &der).unwrap_or_default(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every card certificate (DER) in the database.
pub fn all_certificates(conn: &Connection) -> Result<Vec<(String, Vec<u8>)>, AuthorityError> {
    let mut stmt = conn.prepare("SELECT card_serial, der FROM certificates ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Parse a CRL reason name (RFC 5280 §5.3.1).
pub fn parse_reason(s: &str) -> Option<CrlReason> {
    Some(match s {
        "unspecified" => CrlReason::Unspecified,
        "key-compromise" | "keyCompromise" => CrlReason::KeyCompromise,
        "ca-compromise" | "cACompromise" => CrlReason::CaCompromise,
        "affiliation-changed" | "affiliationChanged" => CrlReason::AffiliationChanged,
        "superseded" => CrlReason::Superseded,
        "cessation-of-operation" | "cessationOfOperation" => CrlReason::CessationOfOperation,
        "certificate-hold" | "certificateHold" => CrlReason::CertificateHold,
        "privilege-withdrawn" | "privilegeWithdrawn" => CrlReason::PrivilegeWithdrawn,
        _ => return None,
    })
}

/// Loaded CA signing material.
pub struct CaSigner {
    pub key: CaKey,
    pub root_der: Vec<u8>,
}

impl Unlocked<'_> {
    /// The CA key and root. A database from before schema 2 gets its root created here.
    pub fn ca(&self) -> Result<CaSigner, AuthorityError> {
        if root(self.conn())?.is_none() {
            let recipients = self.auth.recipients()?;
            let issuer = self.auth.issuer_name()?;
            self.write(|c| {
                let serial = create_root(c, &issuer, &recipients)?;
                self.log(c, "ca root", serde_json::json!({ "serial": serial }))?;
                Ok(())
            })?;
        }
        let root_der = root(self.conn())?.expect("created above");
        let key = CaKey::from_pkcs8_der(self.secret(secret_name::CA_KEY)?.expose()).map_err(ca_err)?;
        Ok(CaSigner { key, root_der })
    }

    /// Issue and record a card certificate (inside the caller's transaction `conn`).
    pub fn issue_card_certificate(
        &self,
        conn: &Connection,
        signer: &CaSigner,
        card: CardSerial,
        public_key_sec1: &[u8],
    ) -> Result<Vec<u8>, AuthorityError> {
        let t = SystemTime::now();
        let der = ca::issue_card_certificate(
            &signer.key,
            &signer.root_der,
            card,
            public_key_sec1,
            t - BACKDATE,
            t + CARD_VALIDITY,
        )
        .map_err(ca_err)?;
        let serial = serial_hex(&der);
        // A card re-personalised with a new key pair supersedes its earlier certificate (recorded in the
        // audit log like any revocation).
        let mut stmt = conn.prepare("SELECT serial FROM certificates WHERE card_serial = ?1 AND revoked_at IS NULL")?;
        let superseded: Vec<String> = stmt.query_map([card.to_string()], |r| r.get(0))?.collect::<Result<_, _>>()?;
        if !superseded.is_empty() {
            conn.execute(
                "UPDATE certificates SET revoked_at = ?2, reason = 'Superseded' WHERE card_serial = ?1 AND revoked_at IS NULL",
                params![card.to_string(), now()],
            )?;
            self.log(
                conn,
                "cert revoke",
                serde_json::json!({ "serials": superseded, "reason": "Superseded", "card": card.to_string() }),
            )?;
        }
        conn.execute(
            "INSERT INTO certificates (serial, card_serial, der, issued_at) VALUES (?1, ?2, ?3, ?4)",
            params![serial, card.to_string(), der, now()],
        )?;
        Ok(der)
    }

    /// `cert revoke`: by certificate serial or card serial.
    pub fn revoke(&self, serial: &str, reason: Option<CrlReason>) -> Result<Vec<String>, AuthorityError> {
        let s = serial.trim().to_uppercase();
        self.write(|c| {
            let mut stmt = c.prepare(
                "SELECT serial FROM certificates WHERE (serial = ?1 OR card_serial = ?1) AND revoked_at IS NULL",
            )?;
            let serials: Vec<String> = stmt.query_map([&s], |r| r.get(0))?.collect::<Result<_, _>>()?;
            if serials.is_empty() {
                return Err(AuthorityError::Ca(format!("no unrevoked certificate with serial or card serial {s}")));
            }
            let reason_name = reason.map(|r| format!("{r:?}"));
            for cs in &serials {
                c.execute(
                    "UPDATE certificates SET revoked_at = ?2, reason = ?3 WHERE serial = ?1",
                    params![cs, now(), reason_name],
                )?;
            }
            self.log(c, "cert revoke", serde_json::json!({ "serials": serials, "reason": reason_name }))?;
            Ok(serials)
        })
    }

    /// `cert crl`: a fresh CRL with every revoked certificate, numbered one above the last.
    pub fn crl(&self) -> Result<Vec<u8>, AuthorityError> {
        let signer = self.ca()?;
        self.write(|c| {
            let number: i64 =
                c.query_row("UPDATE ca SET crl_number = crl_number + 1 WHERE id = 1 RETURNING crl_number", [], |r| {
                    r.get(0)
                })?;
            let number = number as u64;
            let mut stmt = c.prepare(
                "SELECT serial, revoked_at, reason FROM certificates WHERE revoked_at IS NOT NULL ORDER BY id",
            )?;
            let entries = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut revoked = Vec::new();
            for (serial, at, reason) in entries {
                let at = crate::pki::parse_rfc3339(&at)
                    .ok_or_else(|| AuthorityError::Ca(format!("bad revocation time {at}")))?;
                revoked.push(RevokedEntry {
                    serial: hex::decode(&serial).map_err(|_| AuthorityError::Ca(format!("bad serial {serial}")))?,
                    revoked_at: at,
                    reason: reason.as_deref().and_then(|r| parse_reason(&lower_first(r))),
                });
            }
            let t = SystemTime::now();
            let crl =
                ca::build_crl(&signer.key, &signer.root_der, &revoked, t, t + CRL_VALIDITY, number).map_err(ca_err)?;
            self.log(c, "cert crl", serde_json::json!({ "crl_number": number, "revoked": revoked.len() }))?;
            Ok(crl)
        })
    }
}

/// `KeyCompromise` (Debug name) → `keyCompromise`.
fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}
