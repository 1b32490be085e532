//! The auditor's verdicts over an issuer's certificate register: every card certificate the
//! back office recorded, validated against the issuer's root (RFC 5280 §6.1), with the register's
//! own revocation records acting as the revocation list (§5, §6.3), plus the counts a report
//! needs.
//!
//! [`check_register`] takes plain values (DER, revocation times and reasons); [`build_report`] reads
//! them from an issuer database opened read-only (through `authority`'s read accessors, never SQL) and
//! makes the whole-database report with its [`Verdict`].
//!
//! Why the register and not a signed CRL: a CRL must be signed by the CA key (§5.1.1.2), which
//! only a custodian identity can unlock, and an auditor should not need one to read what was
//! revoked. The revocation rows sit in the same database as the certificates, and every
//! revocation is also recorded in the signed audit log (`audit log` detects any edit), so they
//! carry the same information a fresh CRL built from them would, without a signature that adds
//! nothing the audit log does not already prove.

use super::chain::ChainResult;
use super::verdict::{Check, Verdict};
use crate::authority::reconciliations::ReconciliationRecord;
use crate::authority::{Authority, AuthorityError, audit_log, batches, ca, keys};
use crate::pki::{self, Certificate, PathError, ValidationOptions};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::time::SystemTime;

/// A revocation recorded in the register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// When it took effect, Unix seconds; `None` when the recorded time cannot be read, in which
    /// case the certificate is treated as revoked at every validation time (an unreadable record
    /// must never un-revoke a certificate).
    pub at: Option<i64>,
    /// The time as recorded, for messages.
    pub at_text: String,
    /// The reason as recorded (RFC 5280 §5.3.1 name, e.g. `keyCompromise`), if any.
    pub reason: Option<String>,
}

/// One row of the certificate register.
#[derive(Clone, Debug)]
pub struct RegisteredCertificate {
    /// The card's serial.
    pub card: String,
    /// The certificate serial as the register lists it (hex).
    pub serial: String,
    /// The certificate as stored; `None` when the stored encoding could not be decoded.
    pub der: Option<Vec<u8>>,
    pub revocation: Option<Revocation>,
}

/// One register certificate's verdict: the [`ChainResult`] fields (the `audit chain --json`
/// contract) plus the card it belongs to and its recorded revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegisterResult {
    #[serde(flatten)]
    pub result: ChainResult,
    pub card: String,
    /// Revoked in the register or on a supplied CRL, at the validation time.
    pub revoked: bool,
    /// The register's revocation time, when it records one (even one later than the
    /// validation time, which leaves the certificate valid at that time).
    pub revoked_at: Option<String>,
}

/// Counts over a set of chain results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChainCounts {
    pub valid: usize,
    pub invalid: usize,
    /// Of the invalid ones, how many are invalid because they are revoked.
    pub revoked: usize,
}

impl ChainCounts {
    pub fn of(results: &[RegisterResult]) -> Self {
        let mut c = ChainCounts::default();
        for r in results {
            if r.result.valid {
                c.valid += 1;
            } else {
                c.invalid += 1;
                if r.revoked {
                    c.revoked += 1;
                }
            }
        }
        c
    }
}

/// `keyCompromise` style name for a reason stored as a Rust variant name (`KeyCompromise`).
fn reason_name(stored: &str) -> String {
    let mut c = stored.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The message for a revoked certificate: `revoked (keyCompromise) at 2026-01-01T00:00:00Z`.
fn revoked_reason(r: &Revocation) -> String {
    let why = r.reason.as_deref().filter(|s| !s.is_empty()).map(reason_name).unwrap_or_else(|| "unspecified".into());
    match r.at {
        Some(at) => format!("revoked ({why}) at {}", pki::format_unix(at)),
        None => format!("revoked ({why}) at an unreadable time {:?}", r.at_text),
    }
}

/// Validates every register certificate against `anchors` over `untrusted` and `crls`
/// (RFC 5280 §6.1, §6.3), in parallel, as end-entity certificates, then applies the register's
/// revocations.
///
/// A register revocation applies, as a CRL entry would (§5.1.2.6), to every certificate of this
/// issuer with the revoked serial number, and from its revocation date on: at a validation time
/// before it the certificate was not yet revoked. A revoked certificate is reported invalid with
/// the revocation as its reason, the most specific answer, as [`pki::PathError::rank`] ranks a
/// revocation above other defects. A revocation on a supplied CRL is found by the validator.
pub fn check_register(
    certificates: &[RegisteredCertificate],
    anchors: &[Vec<u8>],
    untrusted: &[Vec<u8>],
    crls: &[Vec<u8>],
    opts: &ValidationOptions,
) -> Vec<RegisterResult> {
    // Card certificates are end-entity certificates (DESIGN.md §4: basicConstraints cA FALSE);
    // a CA certificate in the register is a defect even though RFC 5280 would accept it as a leaf.
    let opts = &ValidationOptions { allow_ca_leaf: false, ..opts.clone() };
    let at = pki::floor_seconds(opts.at);
    // Serial (upper-case hex) → the earliest revocation recorded for it.
    let mut revoked: HashMap<String, &Revocation> = HashMap::new();
    for c in certificates {
        if let Some(r) = &c.revocation {
            let e = revoked.entry(c.serial.trim().to_uppercase()).or_insert(r);
            if r.at.unwrap_or(i64::MIN) < e.at.unwrap_or(i64::MIN) {
                *e = r;
            }
        }
    }
    certificates
        .par_iter()
        .map(|c| {
            let der = c.der.as_deref().unwrap_or_default();
            let parsed = Certificate::from_der(der).ok();
            let outcome = pki::validate(der, untrusted, anchors, crls, opts);
            let on_crl = matches!(outcome, Err(PathError::Revoked { .. }));
            let mut result = ChainResult {
                certificate: format!("card {} certificate {}", c.card, c.serial),
                valid: outcome.is_ok(),
                reason: outcome.err().map(|e| e.to_string()),
                subject: parsed.as_ref().map(|p| p.subject.display()),
                serial: parsed.as_ref().map(|p| hex::encode(&p.serial)),
            };
            let by_row = c.revocation.as_ref();
            let by_serial = parsed.as_ref().and_then(|p| revoked.get(&hex::encode_upper(&p.serial)).copied());
            let revocation = [by_row, by_serial].into_iter().flatten().min_by_key(|r| r.at.unwrap_or(i64::MIN));
            let in_force = revocation.filter(|r| r.at.is_none_or(|t| t <= at));
            if let Some(r) = in_force {
                result.valid = false;
                result.reason = Some(revoked_reason(r));
            }
            RegisterResult {
                result,
                card: c.card.clone(),
                revoked: in_force.is_some() || on_crl,
                revoked_at: revocation.map(|r| match r.at {
                    Some(t) => pki::format_unix(t),
                    None => r.at_text.clone(),
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Certificates made by the issuer CA code (`authority::ca`), checked here without a database.

    use super::*;
    use crate::authority::ca::{CardCertRequest, IssuerCa, ValidityPeriod, issue_batch};
    use crate::crypto::card_key::CardKeyPair;
    use crate::domain::CardSerial;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn unix(t: SystemTime) -> i64 {
        pki::floor_seconds(t)
    }

    fn register(issuer: &str, n: u64) -> (Vec<u8>, Vec<RegisteredCertificate>) {
        let now = SystemTime::now();
        let validity = ValidityPeriod {
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(365 * 86400),
        };
        let (key, root) = IssuerCa::create_root(issuer, validity).expect("root");
        let requests: Vec<_> = (1..=n)
            .map(|i| CardCertRequest {
                serial: CardSerial::from_u64(i),
                public_key_sec1: CardKeyPair::generate().expect("key").public_key_sec1().to_vec(),
                validity,
            })
            .collect();
        let certs = issue_batch(&key, &root, &requests).expect("issued");
        let rows = certs
            .into_iter()
            .enumerate()
            .map(|(i, der)| RegisteredCertificate {
                card: format!("{:016X}", i + 1),
                serial: hex::encode_upper(crate::pki::Certificate::from_der(&der).expect("parses").serial),
                der: Some(der),
                revocation: None,
            })
            .collect();
        (root, rows)
    }

    #[test]
    fn register_revocations_apply_from_their_time_and_by_serial() {
        let (root, mut rows) = register("Report Test", 4);
        let now = SystemTime::now();
        let revoked_at = unix(now) - 60;
        rows[1].revocation = Some(Revocation {
            at: Some(revoked_at),
            at_text: pki::format_unix(revoked_at),
            reason: Some("KeyCompromise".into()),
        });
        // An unreadable time revokes at every validation time.
        rows[2].revocation = Some(Revocation { at: None, at_text: "yesterday".into(), reason: None });
        // A second row with row 1's serial (a tampered register) is revoked with it.
        let mut twin = rows[1].clone();
        twin.revocation = None;
        twin.card = "TWIN".into();
        rows.push(twin);
        // A row whose stored certificate could not be decoded.
        rows.push(RegisteredCertificate { card: "BROKEN".into(), serial: "00".into(), der: None, revocation: None });

        let opts = ValidationOptions::at(now);
        let out = check_register(&rows, std::slice::from_ref(&root), &[], &[], &opts);
        let valid: Vec<bool> = out.iter().map(|r| r.result.valid).collect();
        assert_eq!(valid, [true, false, false, true, false, false]);
        let reason = |i: usize| out[i].result.reason.clone().unwrap_or_default();
        assert_eq!(reason(1), format!("revoked (keyCompromise) at {}", pki::format_unix(revoked_at)));
        assert!(reason(2).starts_with("revoked (unspecified) at an unreadable time"), "{}", reason(2));
        assert!(reason(4).starts_with("revoked (keyCompromise)"));
        assert!(reason(5).starts_with("malformed"), "{}", reason(5));
        assert!(out[1].revoked && out[2].revoked && out[4].revoked && !out[5].revoked);
        assert_eq!(ChainCounts::of(&out), ChainCounts { valid: 2, invalid: 4, revoked: 3 });

        // Before the revocation time the certificate was still valid; the unreadable one stays
        // revoked.
        let before = ValidationOptions::at(UNIX_EPOCH + Duration::from_secs((revoked_at - 5) as u64));
        let out = check_register(&rows, std::slice::from_ref(&root), &[], &[], &before);
        assert!(out[1].result.valid && !out[1].revoked, "{:?}", out[1]);
        assert_eq!(out[1].revoked_at.as_deref(), Some(pki::format_unix(revoked_at).as_str()));
        assert!(!out[2].result.valid);

        // The root itself is a CA certificate: not a card certificate, even though RFC 5280
        // would accept it as a leaf.
        let ca_row = RegisteredCertificate {
            card: "ROOT".into(),
            serial: "01".into(),
            der: Some(root.clone()),
            revocation: None,
        };
        let out = check_register(&[ca_row], std::slice::from_ref(&root), &[], &[], &opts);
        assert!(out[0].result.reason.as_deref().is_some_and(|r| r.contains("used as an end-entity")), "{:?}", out[0]);

        // Another issuer's root does not validate any of them.
        let (other_root, _) = register("Other Issuer", 0);
        let out = check_register(&rows[..1], &[other_root], &[], &[], &opts);
        assert!(out[0].result.reason.as_deref().is_some_and(|r| r.contains("unknown issuer")), "{:?}", out[0]);
    }

    #[test]
    fn json_keeps_the_chain_contract_fields() {
        let (root, rows) = register("Report Test", 1);
        let out = check_register(&rows, &[root], &[], &[], &ValidationOptions::at(SystemTime::now()));
        let v = serde_json::to_value(&out[0]).expect("serializes");
        for f in ["certificate", "valid", "reason", "card", "revoked", "revoked_at"] {
            assert!(v.get(f).is_some(), "missing {f} in {v}");
        }
        assert_eq!(v["valid"], true);
    }
}

/// The certificate register as the auditor sees it: each stored certificate with its recorded
/// revocation. A stored certificate that cannot be decoded is kept (as `der: None`) so that it is
/// reported invalid rather than silently skipped.
pub fn register(auth: &Authority) -> Result<Vec<RegisteredCertificate>, AuthorityError> {
    Ok(auth
        .certificates()?
        .into_iter()
        .map(|row| RegisteredCertificate {
            der: ca::pem_decode(ca::PEM_CERTIFICATE, &row.pem).ok(),
            revocation: row.revoked_at.map(|t| Revocation {
                at: pki::parse_rfc3339(&t).map(pki::floor_seconds),
                at_text: t,
                reason: row.reason,
            }),
            card: row.card,
            serial: row.serial,
        })
        .collect())
}

/// The issuer and its root, as the report shows them.
#[derive(Debug, Serialize)]
pub struct IssuerInfo {
    pub name: String,
    pub root_subject: Option<String>,
    pub root_serial: Option<String>,
    pub root_not_after: Option<String>,
    pub audit_key_fingerprint: String,
}

#[derive(Debug, Serialize)]
pub struct CardCounts {
    /// Cards in the register, whatever their state.
    pub total: usize,
    pub personalised: usize,
}

#[derive(Debug, Serialize)]
pub struct CertificateCounts {
    pub issued: usize,
    pub revoked: usize,
}

#[derive(Debug, Serialize)]
pub struct ChainVerdicts {
    pub valid: usize,
    pub invalid: usize,
    /// Of the invalid ones, those invalid because they are revoked.
    pub revoked: usize,
    /// Every invalid certificate with its reason.
    pub invalid_certificates: Vec<RegisterResult>,
}

/// `audit report`: one page on a whole issuer database.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the report was made (and the validation time of the chains), RFC 3339.
    pub at: String,
    pub database: String,
    pub issuer: IssuerInfo,
    pub keys: Vec<keys::KeyRow>,
    pub batches: Vec<batches::Batch>,
    pub cards: CardCounts,
    /// Manufacturers the issuer trusts (and the virtual one of reference cards), with how many chips each
    /// made got a serial and how many of those were issued.
    pub manufacturers: Vec<crate::authority::manufacturers::ManufacturerRow>,
    pub certificates: CertificateCounts,
    pub chains: ChainVerdicts,
    pub audit_log: audit_log::LogVerdict,
    /// Value issued onto personalised cards, minor currency units.
    pub issued_value: crate::domain::Total,
    /// The latest reconciliation `keyroll reconcile` recorded (issue 13 item 5), if any.
    pub reconciliation: Option<ReconciliationRecord>,
    /// No invalid chain other than by revocation, an intact audit log, and a latest reconciliation that
    /// accounted for every unit and flagged nothing (same as `verdict.ok`).
    pub ok: bool,
    pub verdict: Verdict,
}

/// The chain check shared by `audit report` and `demo`: certificates the issuer revoked are expected to
/// fail and are listed; anything else that fails (a bad signature, an unknown issuer, expiry) fails it.
pub fn chains_check(c: &ChainCounts) -> Check {
    Check {
        name: "chains_valid",
        ok: c.invalid == c.revoked,
        detail: if c.invalid == c.revoked {
            format!("{} valid, {} invalid ({} of them revoked)", c.valid, c.invalid, c.revoked)
        } else {
            format!(
                "{} certificate chain(s) invalid other than by revocation ({} valid, {} invalid, {} revoked)",
                c.invalid - c.revoked,
                c.valid,
                c.invalid,
                c.revoked
            )
        },
    }
}

/// The audit-log check shared by `audit report` and `demo`.
pub fn log_check(log: &audit_log::LogVerdict) -> Check {
    Check {
        name: "log_intact",
        ok: log.intact,
        detail: if log.intact {
            format!("{} rows, head signature valid", log.rows)
        } else {
            format!(
                "audit log not intact: first bad row {}: {}",
                log.first_bad_row.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                log.reason.as_deref().unwrap_or("")
            )
        },
    }
}

/// The reconciliation check of `audit report`: the latest reconciliation must have accounted for every
/// unit and flagged nothing; none recorded yet passes and says so. A row that does not decode fails.
pub fn reconciliation_check(latest: &Result<Option<ReconciliationRecord>, AuthorityError>) -> Check {
    let (ok, detail) = match latest {
        Ok(None) => (true, "no reconciliation recorded yet (`keyroll reconcile` records one)".to_string()),
        Ok(Some(r)) => {
            let x = &r.result;
            let seen = format!(
                "reconciliation {} at {}: {} card(s), issued {}, balances {}, in flight {}, unaccounted {}, {} flag(s)",
                r.id, r.at, x.cards, x.issued, x.balances, x.in_flight, x.unaccounted, x.flags
            );
            if x.accounted() { (true, seen) } else { (false, format!("{seen}: not everything is accounted for")) }
        }
        Err(e) => (false, format!("the latest reconciliation cannot be read: {e}")),
    };
    Check { name: "reconciled", ok, detail }
}

/// The report on `auth` (opened read-only is enough) with chains validated at `at`.
pub fn build_report(auth: &Authority, at: SystemTime) -> Result<Report, AuthorityError> {
    let root = auth.root()?;
    let root_parsed = root.as_deref().and_then(|d| Certificate::from_der(d).ok());
    let log = auth.verify_log()?;
    let register = register(auth)?;
    // Without a root (a database from before the CA existed) nothing can validate: every
    // certificate is then reported with "unknown issuer".
    let anchors: Vec<Vec<u8>> = root.into_iter().collect();
    let results = check_register(&register, &anchors, &[], &[], &ValidationOptions::at(at));
    let counts = ChainCounts::of(&results);
    let cards = auth.cards()?;
    let latest = auth.latest_reconciliation();
    let verdict = Verdict::new(vec![chains_check(&counts), log_check(&log), reconciliation_check(&latest)]);
    Ok(Report {
        at: pki::format_unix(pki::floor_seconds(at)),
        database: auth.path.display().to_string(),
        issuer: IssuerInfo {
            name: auth.issuer_name()?,
            root_subject: root_parsed.as_ref().map(|c| c.subject.display()),
            root_serial: root_parsed.as_ref().map(|c| hex::encode_upper(&c.serial)),
            root_not_after: root_parsed.as_ref().map(|c| pki::format_unix(c.not_after)),
            audit_key_fingerprint: log.audit_key_fingerprint.clone(),
        },
        keys: auth.keys()?,
        batches: auth.batches()?,
        cards: CardCounts {
            total: cards.len(),
            personalised: cards.iter().filter(|c| c.state == crate::authority::cards::CardState::Personalised).count(),
        },
        manufacturers: auth.manufacturers()?,
        certificates: CertificateCounts {
            issued: register.len(),
            revoked: register.iter().filter(|c| c.revocation.is_some()).count(),
        },
        chains: ChainVerdicts {
            valid: counts.valid,
            invalid: counts.invalid,
            revoked: counts.revoked,
            invalid_certificates: results.into_iter().filter(|r| !r.result.valid).collect(),
        },
        audit_log: log,
        issued_value: auth.issued_value()?,
        reconciliation: latest.ok().flatten(),
        ok: verdict.ok,
        verdict,
    })
}
