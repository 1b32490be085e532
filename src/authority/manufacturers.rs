//! Card manufacturers the issuer trusts and the chips it personalised (DESIGN.md §10 point 1).
//!
//! - `fab trust ROOT.pem` records a manufacturer root (a self-signed P-256 CA certificate) and logs it;
//!   the line validates factory certificates only against roots recorded here, and only against rows
//!   whose fingerprint and kind the signed audit log recorded (a row slipped into the table by someone
//!   without a custodian identity is refused, house rule for every security-relevant row).
//! - The **virtual** manufacturer is a convenience for reference cards made to files: created on first
//!   use, its key stored like every issuer secret (age ciphertext), listed as `virtual`, and refused by
//!   the PC/SC line (its certificates prove nothing about a chip).
//! - `chips` binds a chip id to one card serial for ever (schema 0004's unique keys and triggers); a
//!   chip whose card was locked is never personalised again.

use super::store::{OptionalExtension, Store, params};
use super::{AuthorityError, Unlocked, now};
use crate::domain::{CardSerial, ChipId};
use crate::fab::{self, Manufacturer};
use crate::fab::{FactoryIdentity, TrustedRoot};
use crate::pki::{self, ValidationOptions};
use serde::Serialize;

/// Name of the virtual manufacturer's root key in `secrets`.
pub const VIRTUAL_FAB_KEY: &str = "virtual-fab-root-key";
/// The virtual manufacturer's name (its own, so nobody mistakes it for a real one).
pub const VIRTUAL_FAB_NAME: &str = "keyroll virtual fab";

/// A manufacturer as listed (`fab list`, `audit report`).
#[derive(Debug, Clone, Serialize)]
pub struct ManufacturerRow {
    pub name: String,
    pub fingerprint: String,
    /// `trusted` or `virtual`.
    pub kind: String,
    pub trusted_at: String,
    /// Chips of this manufacturer that got a serial, and how many of those were locked (issued).
    pub cards: u64,
    pub cards_locked: u64,
}

/// What the register knows of a chip.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChipRecord {
    pub chip_id: ChipId,
    pub serial: CardSerial,
    pub manufacturer: String,
    pub locked: bool,
}

pub fn list(conn: &Store) -> Result<Vec<ManufacturerRow>, AuthorityError> {
    let mut stmt = conn.prepare(
        "SELECT m.name, m.fingerprint, m.kind, m.trusted_at,
                (SELECT count(*) FROM chips c WHERE c.manufacturer_id = m.id),
                (SELECT count(*) FROM chips c WHERE c.manufacturer_id = m.id AND c.locked_at IS NOT NULL)
         FROM manufacturers m ORDER BY m.id",
    )?;
    let rows = stmt.query_map(params![], |r| {
        Ok(ManufacturerRow {
            name: r.get(0)?,
            fingerprint: r.get(1)?,
            kind: r.get(2)?,
            trusted_at: r.get(3)?,
            cards: r.get::<_, i64>(4)? as u64,
            cards_locked: r.get::<_, i64>(5)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Fingerprints and kinds the signed audit log recorded with `fab trust` and `fab virtual`.
fn logged_manufacturers(conn: &Store) -> Result<Vec<(String, String)>, AuthorityError> {
    let mut stmt =
        conn.prepare("SELECT detail FROM audit_log WHERE action IN ('fab trust', 'fab virtual') ORDER BY id")?;
    let details: Vec<String> = stmt.query_map(params![], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(details
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| Some((v["fingerprint"].as_str()?.to_string(), v["kind"].as_str()?.to_string())))
        .collect())
}

/// The roots the line may validate factory certificates against. Every row must be one the signed log
/// recorded, with the same fingerprint (recomputed from the stored certificate) and kind.
pub fn trusted_roots(conn: &Store) -> Result<Vec<TrustedRoot>, AuthorityError> {
    let logged = logged_manufacturers(conn)?;
    let mut stmt = conn.prepare("SELECT name, root_der, fingerprint, kind FROM manufacturers ORDER BY id")?;
    let rows: Vec<(String, Vec<u8>, String, String)> =
        stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for (name, der, fp, kind) in rows {
        let actual = fab::fingerprint(&der);
        if actual != fp || !logged.contains(&(actual.clone(), kind.clone())) {
            return Err(AuthorityError::Tampered(super::Tamper::Log {
                row: None,
                table_row: None,
                why: format!("manufacturer {name:?} ({actual}) is not one the signed audit log recorded"),
            }));
        }
        out.push(TrustedRoot { name, der, fingerprint: actual, virtual_only: kind == "virtual" });
    }
    Ok(out)
}

/// The chip record, if the chip ever got a serial.
pub fn chip(conn: &Store, chip_id: ChipId) -> Result<Option<ChipRecord>, AuthorityError> {
    Ok(conn
        .query_row(
            "SELECT c.serial, m.name, c.locked_at IS NOT NULL FROM chips c JOIN manufacturers m ON m.id = c.manufacturer_id
             WHERE c.chip_id = ?1",
            [chip_id.to_string()],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, bool>(2)?)),
        )
        .optional()?
        .map(|(serial, manufacturer, locked)| ChipRecord {
            chip_id,
            serial: CardSerial::parse(&serial).unwrap_or_default(),
            manufacturer,
            locked,
        }))
}

/// The chip that holds `serial`, if any.
pub fn chip_of_serial(conn: &Store, serial: CardSerial) -> Result<Option<ChipId>, AuthorityError> {
    let id: Option<String> =
        conn.query_row("SELECT chip_id FROM chips WHERE serial = ?1", [serial.to_string()], |r| r.get(0)).optional()?;
    Ok(id.and_then(|s| ChipId::parse(&s)))
}

/// Check a manufacturer root: a self-signed P-256 CA certificate that validates as its own anchor now
/// (RFC 5280 §6.1 with the certificate as trust anchor: validity, cA, keyCertSign).
fn check_root(der: &[u8]) -> Result<String, AuthorityError> {
    let bad = |why: String| AuthorityError::BadManufacturer(why);
    let cert = pki::Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    if !cert.is_self_issued() {
        return Err(bad("not a self-issued root certificate".into()));
    }
    if !cert.basic_constraints.is_some_and(|b| b.ca) {
        return Err(bad("basicConstraints does not say cA".into()));
    }
    pki::validate(der, &[], &[der.to_vec()], &[], &ValidationOptions::at(std::time::SystemTime::now()))
        .map_err(|e| bad(e.to_string()))?;
    let ku = pki::KeyUsage(cert.key_usage.unwrap_or(0));
    if !ku.key_cert_sign() {
        return Err(bad("keyUsage lacks keyCertSign".into()));
    }
    fab::organisation_of(der).ok_or_else(|| bad("the subject has no organizationName".into()))
}

impl Unlocked<'_> {
    /// `fab trust`: trust a manufacturer root. Refuses a root already recorded.
    pub fn trust_manufacturer(&self, root_der: &[u8]) -> Result<ManufacturerRow, AuthorityError> {
        let name = check_root(root_der)?;
        let fp = fab::fingerprint(root_der);
        self.write(|c| {
            let exists: Option<String> =
                c.query_row("SELECT kind FROM manufacturers WHERE fingerprint = ?1", [&fp], |r| r.get(0)).optional()?;
            if let Some(kind) = exists {
                return Err(AuthorityError::ManufacturerExists { fingerprint: fp.clone(), kind });
            }
            let at = now();
            c.execute(
                "INSERT INTO manufacturers (name, fingerprint, root_der, kind, trusted_at) VALUES (?1, ?2, ?3, 'trusted', ?4)",
                params![name, fp, root_der, at],
            )?;
            self.log(c, "fab trust", serde_json::json!({ "name": name, "fingerprint": fp, "kind": "trusted" }))?;
            Ok(ManufacturerRow {
                name: name.clone(),
                fingerprint: fp.clone(),
                kind: "trusted".into(),
                trusted_at: at,
                cards: 0,
                cards_locked: 0,
            })
        })
    }

    /// The virtual manufacturer of reference cards made to files, created (and logged) on first use.
    pub fn virtual_fab(&self) -> Result<Manufacturer, AuthorityError> {
        let fab_err = |e: fab::FabError| AuthorityError::BadManufacturer(e.to_string());
        let existing: Option<Vec<u8>> = self
            .conn()
            .query_row("SELECT root_der FROM manufacturers WHERE kind = 'virtual'", params![], |r| r.get(0))
            .optional()?;
        if let Some(der) = existing {
            // Checked against the log like every manufacturer row before its key is used.
            trusted_roots(self.conn())?;
            let key = self.secret(VIRTUAL_FAB_KEY)?;
            return Manufacturer::from_der(&der, key.expose()).map_err(fab_err);
        }
        let m = Manufacturer::create(VIRTUAL_FAB_NAME).map_err(fab_err)?;
        let recipients = self.auth.recipients()?;
        let key = m.key_pkcs8_der().map_err(fab_err)?;
        // Two lines starting at once both get here: the IMMEDIATE transaction serialises them, and the
        // second finds the first one's manufacturer and uses it.
        let created = self.write(|c| {
            let raced: Option<i64> =
                c.query_row("SELECT id FROM manufacturers WHERE kind = 'virtual'", params![], |r| r.get(0)).optional()?;
            if raced.is_some() {
                return Ok(false);
            }
            c.execute(
                "INSERT INTO secrets (name, ciphertext) VALUES (?1, ?2)",
                params![VIRTUAL_FAB_KEY, super::custody::encrypt(&recipients, key.expose())?],
            )?;
            c.execute(
                "INSERT INTO manufacturers (name, fingerprint, root_der, kind, trusted_at) VALUES (?1, ?2, ?3, 'virtual', ?4)",
                params![VIRTUAL_FAB_NAME, m.fingerprint(), m.root_der(), now()],
            )?;
            self.log(
                c,
                "fab virtual",
                serde_json::json!({ "name": VIRTUAL_FAB_NAME, "fingerprint": m.fingerprint(), "kind": "virtual" }),
            )?;
            Ok(true)
        })?;
        if created { Ok(m) } else { self.virtual_fab() }
    }

    /// Give `serial` to the chip the channel authenticated, inside the caller's transaction `conn`. The
    /// same chip asking again for the same serial (a resumed card) is fine; a chip that has another
    /// serial, a locked chip, or a serial that another chip holds is refused.
    pub fn assign_chip(&self, conn: &Store, card: &FactoryIdentity, serial: CardSerial) -> Result<(), AuthorityError> {
        if let Some(rec) = chip(conn, card.chip_id)? {
            if rec.locked {
                return Err(AuthorityError::ChipIssued { chip: card.chip_id, serial: rec.serial });
            }
            if rec.serial != serial {
                return Err(AuthorityError::ChipHasSerial { chip: card.chip_id, serial: rec.serial });
            }
            return Ok(());
        }
        if let Some(other) = chip_of_serial(conn, serial)? {
            return Err(AuthorityError::SerialHasChip { serial, chip: other });
        }
        let manufacturer: i64 =
            conn.query_row("SELECT id FROM manufacturers WHERE fingerprint = ?1", [&card.root_fingerprint], |r| {
                r.get(0)
            })?;
        conn.execute(
            "INSERT INTO chips (chip_id, serial, manufacturer_id, agreement_cert_sha256, attestation_cert_sha256, assigned_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                card.chip_id.to_string(),
                serial.to_string(),
                manufacturer,
                card.agreement_fingerprint,
                card.attestation_fingerprint,
                now()
            ],
        )?;
        self.log(
            conn,
            "chip assigned",
            serde_json::json!({ "chip_id": card.chip_id.to_string(), "serial": serial.to_string(),
                "manufacturer": card.root_fingerprint, "agreement_cert": card.agreement_fingerprint,
                "attestation_cert": card.attestation_fingerprint }),
        )?;
        Ok(())
    }

    /// Certify a card key the channel saw attested (the caller checked the attestation under `card`'s
    /// attestation key): only for the chip the register bound to `serial`, still unlocked. Logs
    /// `cert issue` (through `issue_card_certificate`) and `card attested` with the chip id and the
    /// factory certificate fingerprints, in one transaction.
    pub fn certify_attested_key(
        &self,
        signer: &crate::authority::issuer_ca::CaSigner,
        card: &FactoryIdentity,
        serial: CardSerial,
        public_key_sec1: &[u8],
    ) -> Result<Vec<u8>, AuthorityError> {
        self.write(|c| {
            if !chip(c, card.chip_id)?.is_some_and(|r| r.serial == serial && !r.locked) {
                return Err(AuthorityError::ChipNotRegistered { chip: card.chip_id, serial });
            }
            let der = self.issue_card_certificate(c, signer, serial, public_key_sec1)?;
            self.log(
                c,
                "card attested",
                serde_json::json!({ "card": serial.to_string(), "certificate": super::issuer_ca::serial_hex(&der),
                    "chip_id": card.chip_id.to_string(), "attestation_cert": card.attestation_fingerprint,
                    "agreement_cert": card.agreement_fingerprint }),
            )?;
            Ok(der)
        })
    }

    /// Mark the chip of a card locked (personalisation finished), inside the caller's transaction.
    pub fn lock_chip(&self, conn: &Store, chip_id: ChipId) -> Result<(), AuthorityError> {
        conn.execute(
            "UPDATE chips SET locked_at = ?2 WHERE chip_id = ?1 AND locked_at IS NULL",
            params![chip_id.to_string(), now()],
        )?;
        Ok(())
    }

    /// Record a card the line refused (an impostor, a reused chip, a bad receipt or attestation) in the
    /// audit log, and nothing else.
    pub fn record_refusal(
        &self,
        target: &str,
        code: &str,
        reason: &str,
        chip_id: Option<ChipId>,
    ) -> Result<(), AuthorityError> {
        self.write(|c| {
            self.log(
                c,
                "perso refused",
                serde_json::json!({ "target": target, "code": code, "reason": reason,
                    "chip_id": chip_id.map(|c| c.to_string()) }),
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::Authority;

    fn issuer() -> (tempfile::TempDir, Authority, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("i.db");
        let id = dir.path().join("i.identity");
        let (auth, _) = Authority::init(&db, "Test Issuer", &[], &id).unwrap();
        (dir, auth, id)
    }

    fn identity_of(card: &fab::FactoryCredentials, m: &Manufacturer) -> FactoryIdentity {
        FactoryIdentity {
            chip_id: card.chip_id,
            agreement_public: card.agreement_key.public_key_sec1().to_vec(),
            attestation_public: card.attestation_key.public_key_sec1().to_vec(),
            manufacturer: "m".into(),
            root_fingerprint: m.fingerprint(),
            agreement_fingerprint: fab::fingerprint(&card.agreement_cert),
            attestation_fingerprint: fab::fingerprint(&card.attestation_cert),
        }
    }

    #[test]
    fn trust_list_and_refuse_a_second_time_or_a_leaf() {
        let (_d, auth, id) = issuer();
        let u = auth.unlock(Some(&id)).unwrap();
        let m = Manufacturer::create("Acme Chips").unwrap();
        let row = u.trust_manufacturer(m.root_der()).unwrap();
        assert_eq!(row.name, "Acme Chips");
        assert!(matches!(u.trust_manufacturer(m.root_der()), Err(AuthorityError::ManufacturerExists { .. })));
        let blank = m.make_blank().unwrap();
        assert!(matches!(u.trust_manufacturer(&blank.agreement_cert), Err(AuthorityError::BadManufacturer(_))));
        assert!(matches!(u.trust_manufacturer(b"not a certificate"), Err(AuthorityError::BadManufacturer(_))));
        let roots = trusted_roots(&auth.conn).unwrap();
        assert_eq!(roots.len(), 1);
        assert!(!roots[0].virtual_only);
        let v = u.virtual_fab().unwrap();
        assert_eq!(u.virtual_fab().unwrap().fingerprint(), v.fingerprint());
        let listed = list(&auth.conn).unwrap();
        assert_eq!(listed.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(), ["trusted", "virtual"]);
        assert!(trusted_roots(&auth.conn).unwrap()[1].virtual_only);
    }

    /// A manufacturer row written straight into the table (no custodian, no log entry) is refused.
    #[test]
    fn a_row_the_log_did_not_record_is_refused() {
        let (_d, auth, _) = issuer();
        let m = Manufacturer::create("Sneaky").unwrap();
        auth.conn
            .execute(
                "INSERT INTO manufacturers (name, fingerprint, root_der, kind, trusted_at) VALUES ('Sneaky', ?1, ?2, 'trusted', 'now')",
                params![m.fingerprint(), m.root_der()],
            )
            .unwrap();
        assert!(matches!(trusted_roots(&auth.conn), Err(AuthorityError::Tampered(_))));
    }

    #[test]
    fn a_chip_gets_one_serial_ever() {
        let (_d, auth, id) = issuer();
        let u = auth.unlock(Some(&id)).unwrap();
        let m = Manufacturer::create("Acme Chips").unwrap();
        u.trust_manufacturer(m.root_der()).unwrap();
        let a = identity_of(&m.make_blank().unwrap(), &m);
        let b = identity_of(&m.make_blank().unwrap(), &m);
        let (s1, s2) = (CardSerial::from_u64(1), CardSerial::from_u64(2));
        u.write(|c| u.assign_chip(c, &a, s1)).unwrap();
        u.write(|c| u.assign_chip(c, &a, s1)).unwrap(); // resumed: same serial again
        assert!(matches!(u.write(|c| u.assign_chip(c, &a, s2)), Err(AuthorityError::ChipHasSerial { .. })));
        assert!(matches!(u.write(|c| u.assign_chip(c, &b, s1)), Err(AuthorityError::SerialHasChip { .. })));
        // Locking a chip changes a bound row: it goes with its log entry (as `record_card` does) or not at all.
        assert!(matches!(u.write(|c| u.lock_chip(c, a.chip_id)), Err(AuthorityError::UnloggedChange { .. })));
        u.write(|c| {
            u.lock_chip(c, a.chip_id)?;
            u.log(c, "card personalised", serde_json::json!({ "chip_id": a.chip_id.to_string() }))?;
            Ok(())
        })
        .unwrap();
        assert!(matches!(u.write(|c| u.assign_chip(c, &a, s1)), Err(AuthorityError::ChipIssued { .. })));
        // The database itself refuses to re-point or forget a chip.
        assert!(auth.conn.execute("UPDATE chips SET serial = 'X'", params![]).is_err());
        assert!(auth.conn.execute("DELETE FROM chips", params![]).is_err());
        let rows = list(&auth.conn).unwrap();
        assert_eq!((rows[0].cards, rows[0].cards_locked), (1, 1));
        u.record_refusal("reader", "bad-receipt", "the receipt does not verify", Some(b.chip_id)).unwrap();
        let n: i64 = auth
            .conn
            .query_row("SELECT count(*) FROM audit_log WHERE action = 'perso refused'", params![], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
}
