//! The issuer CA in the database: its root certificate and key (age ciphertext), the card
//! certificates it issued, revocations and CRLs. Certificate building itself is in [`super::ca`].

use super::ca::{self, CaKey, CrlReason, IssuerCa, RevokedEntry, ValidityPeriod};
use super::store::{OptionalExtension, Store, params};
use super::{AuthorityError, Unlocked, custody, now, secret_name};
use crate::domain::CardSerial;
use serde::Serialize;
use std::time::{Duration, SystemTime};

/// Root validity: 20 years. Card certificates: 10 years. CRLs: next update in 30 days.
const ROOT_VALIDITY: Duration = Duration::from_secs(20 * 365 * 86400);
const CARD_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86400);
const CRL_VALIDITY: Duration = Duration::from_secs(30 * 86400);
/// Backdating of notBefore, for clocks a little behind the issuer's.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Create the root CA (inside `init`'s transaction). Returns its serial in hex, key and certificate.
/// `key` is a key made in a token (nothing stored); without one a key is made here and sealed.
pub(super) fn create_root(
    conn: &Store,
    issuer: &str,
    sealer: &custody::Sealer,
    key: Option<CaKey>,
) -> Result<(String, CaKey, Vec<u8>), AuthorityError> {
    let now_t = SystemTime::now();
    let validity = ValidityPeriod { not_before: now_t - BACKDATE, not_after: now_t + ROOT_VALIDITY };
    let (key, der) = match key {
        Some(key) => {
            let der = IssuerCa::certify_root(&key, issuer, validity)?;
            (key, der)
        }
        None => {
            let (key, der) = IssuerCa::create_root(issuer, validity)?;
            let pkcs8 = key.to_pkcs8_der()?;
            conn.execute(
                "INSERT INTO secrets (name, ciphertext) VALUES (?1, ?2)",
                params![secret_name::CA_KEY, sealer.seal(pkcs8.expose())?],
            )?;
            (key, der)
        }
    };
    conn.execute("INSERT INTO ca (id, root_der, created_at) VALUES (1, ?1, ?2)", params![der, now()])?;
    Ok((serial_hex(&der), key, der))
}

/// The certificate serial of a DER certificate, upper-case hex ("" if it does not parse).
pub fn serial_hex(der: &[u8]) -> String {
    crate::pki::Certificate::from_der(der).map(|c| hex::encode_upper(&c.serial)).unwrap_or_default()
}

/// The root certificate (DER), if the CA exists.
pub fn root(conn: &Store) -> Result<Option<Vec<u8>>, AuthorityError> {
    Ok(conn.query_row("SELECT root_der FROM ca WHERE id = 1", params![], |r| r.get(0)).optional()?)
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

pub fn list(conn: &Store) -> Result<Vec<CertRow>, AuthorityError> {
    let mut stmt =
        conn.prepare("SELECT serial, card_serial, der, issued_at, revoked_at, reason FROM certificates ORDER BY id")?;
    let rows = stmt.query_map(params![], |r| {
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
pub fn all_certificates(conn: &Store) -> Result<Vec<(String, Vec<u8>)>, AuthorityError> {
    let mut stmt = conn.prepare("SELECT card_serial, der FROM certificates ORDER BY id")?;
    let rows = stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every CRL reason with its RFC 5280 §5.3.1 name, the form the `certificates.reason` column stores.
const REASONS: &[(CrlReason, &str)] = &[
    (CrlReason::Unspecified, "unspecified"),
    (CrlReason::KeyCompromise, "keyCompromise"),
    (CrlReason::CaCompromise, "cACompromise"),
    (CrlReason::AffiliationChanged, "affiliationChanged"),
    (CrlReason::Superseded, "superseded"),
    (CrlReason::CessationOfOperation, "cessationOfOperation"),
    (CrlReason::CertificateHold, "certificateHold"),
    (CrlReason::RemoveFromCRL, "removeFromCRL"),
    (CrlReason::PrivilegeWithdrawn, "privilegeWithdrawn"),
    (CrlReason::AaCompromise, "aACompromise"),
];

/// The RFC 5280 §5.3.1 name of a reason (`keyCompromise`), as stored.
pub fn reason_name(r: CrlReason) -> &'static str {
    REASONS.iter().find(|(x, _)| *x == r).map(|(_, n)| *n).unwrap_or("unspecified")
}

/// A stored reason name back to the reason (exactly the RFC 5280 names [`reason_name`] writes).
pub fn stored_reason(s: &str) -> Option<CrlReason> {
    REASONS.iter().find(|(_, n)| *n == s).map(|(r, _)| *r)
}

/// Parse a CRL reason as a user writes it: the RFC 5280 name or its kebab-case form (RFC 5280 §5.3.1).
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
            let sealer = self.sealer()?;
            let issuer = self.auth.issuer_name()?;
            self.write(|c| {
                let (serial, _, _) = create_root(c, &issuer, &sealer, None)?;
                self.log(c, "ca root", serde_json::json!({ "serial": serial }))?;
                Ok(())
            })?;
        }
        let root_der = root(self.conn())?.expect("created above");
        let key = match self.token() {
            Some(t) => CaKey::from_signer(t.ca.clone()),
            None => CaKey::from_pkcs8_der(self.secret(secret_name::CA_KEY)?.expose())?,
        };
        Ok(CaSigner { key, root_der })
    }

    /// Issue and record a card certificate (inside the caller's transaction `conn`).
    pub fn issue_card_certificate(
        &self,
        conn: &Store,
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
        )?;
        let serial = serial_hex(&der);
        // A card re-personalised with a new key pair supersedes its earlier certificate (recorded in the
        // audit log like any revocation).
        let mut stmt = conn.prepare("SELECT serial FROM certificates WHERE card_serial = ?1 AND revoked_at IS NULL")?;
        let superseded: Vec<String> = stmt.query_map([card.to_string()], |r| r.get(0))?.collect::<Result<_, _>>()?;
        if !superseded.is_empty() {
            conn.execute(
                "UPDATE certificates SET revoked_at = ?2, reason = 'superseded' WHERE card_serial = ?1 AND revoked_at IS NULL",
                params![card.to_string(), now()],
            )?;
            self.log(
                conn,
                "cert revoke",
                serde_json::json!({ "serials": superseded, "reason": "superseded", "card": card.to_string() }),
            )?;
        }
        conn.execute(
            "INSERT INTO certificates (serial, card_serial, der, issued_at) VALUES (?1, ?2, ?3, ?4)",
            params![serial, card.to_string(), der, now()],
        )?;
        self.log(conn, "cert issue", serde_json::json!({ "card": card.to_string(), "serial": serial }))?;
        Ok(der)
    }

    /// A personalisation that failed after the card's certificate was issued (the card file could not be
    /// written, the card was pulled): the certificate belongs to no working card, so it is revoked
    /// (`cessationOfOperation`) and the failure logged, leaving no valid certificate for a card that does
    /// not exist (issue 14 item 8). Returns the certificate serials revoked (none if there were none).
    pub fn withdraw_certificates(&self, card: CardSerial, why: &str) -> Result<Vec<String>, AuthorityError> {
        let valid = |c: &Store| -> Result<Vec<String>, AuthorityError> {
            let mut stmt =
                c.prepare("SELECT serial FROM certificates WHERE card_serial = ?1 AND revoked_at IS NULL")?;
            Ok(stmt.query_map([card.to_string()], |r| r.get(0))?.collect::<Result<_, _>>()?)
        };
        // The perso runners ask before every card; almost always there is nothing to withdraw, and then no
        // write transaction (and no writer lock) is taken.
        if valid(self.conn())?.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|c| {
            let serials = valid(c)?;
            if serials.is_empty() {
                return Ok(serials);
            }
            let reason = reason_name(CrlReason::CessationOfOperation);
            c.execute(
                "UPDATE certificates SET revoked_at = ?2, reason = ?3 WHERE card_serial = ?1 AND revoked_at IS NULL",
                params![card.to_string(), now(), reason],
            )?;
            self.log(
                c,
                "cert revoke",
                serde_json::json!({ "serials": serials, "reason": reason, "card": card.to_string(), "why": why }),
            )?;
            Ok(serials)
        })
    }

    /// `cert revoke`: by certificate serial or card serial.
    /// The revoked card is blocked in a new policy too (DESIGN.md §10 point 4: the card enforces it).
    pub fn revoke(&self, serial: &str, reason: Option<CrlReason>) -> Result<Vec<String>, AuthorityError> {
        let s = serial.trim().to_uppercase();
        let (signer, record) = self.scheme_signer()?;
        self.write(|c| {
            let mut stmt = c.prepare(
                "SELECT serial FROM certificates WHERE (serial = ?1 OR card_serial = ?1) AND revoked_at IS NULL",
            )?;
            let serials: Vec<String> = stmt.query_map([&s], |r| r.get(0))?.collect::<Result<_, _>>()?;
            if serials.is_empty() {
                return Err(AuthorityError::NoCertificate(s.clone()));
            }
            let reason_name = reason.map(reason_name);
            for cs in &serials {
                c.execute(
                    "UPDATE certificates SET revoked_at = ?2, reason = ?3 WHERE serial = ?1",
                    params![cs, now(), reason_name],
                )?;
            }
            self.log(c, "cert revoke", serde_json::json!({ "serials": serials, "reason": reason_name }))?;
            let mut stmt = c.prepare("SELECT DISTINCT card_serial FROM certificates WHERE serial = ?1")?;
            let mut cards = Vec::new();
            for cs in &serials {
                for card in stmt.query_map([cs], |r| r.get::<_, String>(0))? {
                    cards.push(card?);
                }
            }
            cards.sort();
            cards.dedup();
            let why = format!("certificate revoked ({})", reason_name.unwrap_or("unspecified"));
            for card in cards {
                let card = CardSerial::parse(&card).ok_or_else(|| AuthorityError::BadRow {
                    table: "certificates",
                    row: 0,
                    why: format!("names a bad card serial {card}"),
                })?;
                self.block_in(c, &signer, &record, card, Some(&why), super::policy::unix_now())?;
            }
            Ok(serials)
        })
    }

    /// `cert crl`: a fresh CRL with every revoked certificate, numbered one above the last.
    pub fn crl(&self) -> Result<Vec<u8>, AuthorityError> {
        let signer = self.ca()?;
        self.write(|c| {
            let number: i64 = c.query_row(
                "UPDATE ca SET crl_number = crl_number + 1 WHERE id = 1 RETURNING crl_number",
                params![],
                |r| r.get(0),
            )?;
            let number = u64::try_from(number).map_err(|_| AuthorityError::BadRow {
                table: "ca",
                row: 1,
                why: format!("CRL number {number}"),
            })?;
            let revoked = super::rows::decode_all(
                c,
                "certificates",
                "SELECT id, serial, revoked_at, reason FROM certificates WHERE revoked_at IS NOT NULL ORDER BY id",
                params![],
                |r| {
                    let serial: String = super::rows::col(r, 1)?;
                    let at = super::rows::col_parsed(r, 2, "revocation time", crate::pki::parse_rfc3339)?;
                    let reason = match super::rows::col::<Option<String>>(r, 3)? {
                        None => None,
                        Some(n) => {
                            Some(stored_reason(&n).ok_or_else(|| format!("{n:?} is not an RFC 5280 reason name"))?)
                        }
                    };
                    Ok(RevokedEntry {
                        serial: hex::decode(&serial).map_err(|_| format!("serial {serial:?} is not hex"))?,
                        revoked_at: at,
                        reason,
                    })
                },
            )?;
            let t = SystemTime::now();
            let crl = ca::build_crl(&signer.key, &signer.root_der, &revoked, t, t + CRL_VALIDITY, number)?;
            self.log(c, "cert crl", serde_json::json!({ "crl_number": number, "revoked": revoked.len() }))?;
            Ok(crl)
        })
    }
}
