//! `audit chain`: validate certificates against anchors, untrusted intermediates and CRLs
//! (RFC 5280 §6), one result per certificate, computed in parallel.

use crate::pki::{self, Certificate, PathError, ValidationOptions};
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Bound on the size of one input file: certificates and CRLs of this scheme are a few KiB;
/// a bigger file is a wrong argument, not something to load.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Problems with the inputs themselves (exit status 2 territory); a certificate that fails
/// validation is a result, not an error.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is larger than {MAX_FILE_BYTES} bytes; is it the right file?")]
    TooLarge { path: PathBuf },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path} holds no {what}; expected PEM or DER")]
    Empty { path: PathBuf, what: &'static str },
}

/// One certificate's verdict. `certificate`, `valid` and `reason` are the JSON contract of
/// `keyroll audit chain --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainResult {
    /// The file path, with `#n` (1-based) when the file holds several certificates.
    pub certificate: String,
    pub valid: bool,
    /// Why the certificate is not valid; `None` when it is.
    pub reason: Option<String>,
    /// Subject, when the certificate could be parsed.
    pub subject: Option<String>,
    /// Serial number in hex, when the certificate could be parsed.
    pub serial: Option<String>,
}

/// The inputs of one `audit chain` run.
#[derive(Clone, Debug)]
pub struct ChainAudit {
    pub certificates: Vec<PathBuf>,
    pub anchors: Vec<PathBuf>,
    pub untrusted: Vec<PathBuf>,
    pub crls: Vec<PathBuf>,
    pub at: SystemTime,
    /// x509-limbo `max_chain_depth`: intermediates allowed.
    pub max_intermediates: Option<usize>,
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, AuditError> {
    let meta = std::fs::metadata(path).map_err(|source| AuditError::Read { path: path.to_path_buf(), source })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(AuditError::TooLarge { path: path.to_path_buf() });
    }
    std::fs::read(path).map_err(|source| AuditError::Read { path: path.to_path_buf(), source })
}

fn read_objects(path: &Path, label: &str, what: &'static str) -> Result<Vec<Vec<u8>>, AuditError> {
    let data = read_bounded(path)?;
    // PEM (blocks with other labels skipped, as openssl does with a bundle) or one DER object.
    let objects = pki::pem::objects(&data, label)
        .map_err(|e| AuditError::Pem { path: path.to_path_buf(), reason: e.to_string() })?;
    if objects.is_empty() {
        return Err(AuditError::Empty { path: path.to_path_buf(), what });
    }
    Ok(objects)
}

/// Reads a certificate file: DER, or PEM with one or more `CERTIFICATE` blocks.
pub fn read_certificates(path: &Path) -> Result<Vec<Vec<u8>>, AuditError> {
    read_objects(path, "CERTIFICATE", "certificate")
}

/// Reads a CRL file: DER, or PEM with one or more `X509 CRL` blocks.
pub fn read_crls(path: &Path) -> Result<Vec<Vec<u8>>, AuditError> {
    read_objects(path, "X509 CRL", "CRL")
}

/// Validates labelled DER certificates (no file I/O), in parallel; results in input order.
pub fn check_chains(
    certificates: &[(String, Vec<u8>)],
    anchors: &[Vec<u8>],
    untrusted: &[Vec<u8>],
    crls: &[Vec<u8>],
    opts: &ValidationOptions,
) -> Vec<ChainResult> {
    // Anchors, intermediates and CRLs (and their keys) are parsed once for the whole batch.
    let validator = pki::Validator::new(untrusted, anchors, crls);
    certificates
        .par_iter()
        .map(|(label, der)| {
            // Parsed once: the subject and serial for the report, then the certificate itself into
            // validation (which would otherwise parse the same DER again).
            let (subject, serial, outcome): (_, _, Result<_, PathError>) = match Certificate::from_der(der) {
                Ok(c) => {
                    let (subject, serial) = (c.subject.display(), hex::encode(&c.serial));
                    (Some(subject), Some(serial), validator.validate_parsed(c, opts))
                }
                // The validator's own answer (its input budget is reported before a leaf's DER).
                Err(_) => (None, None, validator.validate(der, opts)),
            };
            ChainResult {
                certificate: label.clone(),
                valid: outcome.is_ok(),
                reason: outcome.err().map(|e| e.to_string()),
                subject,
                serial,
            }
        })
        .collect()
}

fn read_all(
    paths: &[PathBuf],
    read: fn(&Path) -> Result<Vec<Vec<u8>>, AuditError>,
) -> Result<Vec<Vec<u8>>, AuditError> {
    let mut out = Vec::new();
    for p in paths {
        out.extend(read(p)?);
    }
    Ok(out)
}

/// Reads the files of `audit` and validates every certificate in `audit.certificates`.
pub fn audit_chain(audit: &ChainAudit) -> Result<Vec<ChainResult>, AuditError> {
    let anchors = read_all(&audit.anchors, read_certificates)?;
    let untrusted = read_all(&audit.untrusted, read_certificates)?;
    let crls = read_all(&audit.crls, read_crls)?;
    // Reading and PEM decoding are per file: done on the same pool as validation; the first
    // unreadable file in argument order is the error reported.
    let read: Vec<Result<Vec<Vec<u8>>, AuditError>> =
        audit.certificates.par_iter().map(|path| read_certificates(path)).collect();
    let mut labelled = Vec::new();
    for (path, certs) in audit.certificates.iter().zip(read) {
        let certs = certs?;
        let several = certs.len() > 1;
        for (i, der) in certs.into_iter().enumerate() {
            let label = if several { format!("{}#{}", path.display(), i + 1) } else { path.display().to_string() };
            labelled.push((label, der));
        }
    }
    let mut opts = ValidationOptions::at(audit.at);
    opts.max_intermediates = audit.max_intermediates;
    // CRLs given mean revocation is checked: a leaf whose issuer has no usable CRL among them is not
    // reported valid (openssl verify -crl_check), so a CRL that does not verify is never ignored.
    opts.require_crl = !crls.is_empty();
    Ok(check_chains(&labelled, &anchors, &untrusted, &crls, &opts))
}

#[cfg(test)]
mod tests {
    //! Certificates and a CRL made by the `openssl` CLI (an oracle no one here wrote, DESIGN §8).

    use super::*;
    use std::process::Command;
    use std::time::Duration;

    fn openssl(dir: &Path, args: &[&str]) -> bool {
        Command::new("openssl").args(args).current_dir(dir).output().is_ok_and(|o| o.status.success())
    }

    /// Root, two cards (the second revoked), an RSA card, a CRL; `None` without `openssl`.
    fn make_pki(dir: &Path) -> Option<()> {
        let ok = |args: &[&str]| openssl(dir, args).then_some(());
        let ec_key =
            |out: &str| ok(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", out]);
        ec_key("root.key")?;
        ok(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "root.key",
            "-subj",
            "/CN=Test Root",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "root.pem",
        ])?;
        std::fs::write(
            dir.join("ext.cnf"),
            "[v3]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n\
             subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        )
        .ok()?;
        ec_key("card.key")?;
        ok(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.key"])?;
        for (name, key) in [("card1", "card.key"), ("card2", "card.key"), ("rsa", "rsa.key")] {
            let subj = format!("/CN={name}");
            ok(&["req", "-new", "-key", key, "-subj", &subj, "-out", &format!("{name}.csr")])?;
            ok(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "root.pem",
                "-CAkey",
                "root.key",
                "-days",
                "365",
                "-extfile",
                "ext.cnf",
                "-extensions",
                "v3",
                "-out",
                &format!("{name}.pem"),
            ])?;
        }
        std::fs::create_dir_all(dir.join("db")).ok()?;
        std::fs::write(dir.join("db/index.txt"), "").ok()?;
        std::fs::write(dir.join("db/crlnumber"), "01\n").ok()?;
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca = c\n[c]\ndatabase = db/index.txt\ncrlnumber = db/crlnumber\ndefault_md = sha256\n\
             default_crl_days = 30\ncrl_extensions = crlext\n[crlext]\nauthorityKeyIdentifier = keyid\n",
        )
        .ok()?;
        ok(&["ca", "-config", "ca.cnf", "-keyfile", "root.key", "-cert", "root.pem", "-revoke", "card2.pem"])?;
        ok(&["ca", "-config", "ca.cnf", "-keyfile", "root.key", "-cert", "root.pem", "-gencrl", "-out", "crl.pem"])?;
        // One PEM file holding both card certificates.
        let bundle = [std::fs::read(dir.join("card1.pem")).ok()?, std::fs::read(dir.join("card2.pem")).ok()?].concat();
        std::fs::write(dir.join("cards.pem"), bundle).ok()?;
        ok(&["x509", "-in", "rsa.pem", "-outform", "DER", "-out", "rsa.der"])?;
        Some(())
    }

    #[test]
    fn audit_chain_over_openssl_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        if make_pki(dir.path()).is_none() {
            eprintln!("!!! openssl CLI not usable: audit_chain_over_openssl_files SKIPPED !!!");
            return;
        }
        let p = |n: &str| dir.path().join(n);
        let audit = ChainAudit {
            certificates: vec![p("cards.pem"), p("rsa.der")],
            anchors: vec![p("root.pem")],
            untrusted: vec![],
            crls: vec![p("crl.pem")],
            at: SystemTime::now() + Duration::from_secs(60),
            max_intermediates: None,
        };
        let results = audit_chain(&audit).expect("inputs readable");
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].certificate, format!("{}#1", p("cards.pem").display()));
        assert!(results[0].valid, "{:?}", results[0]);
        assert_eq!(results[0].subject.as_deref(), Some("CN=card1"));
        assert!(!results[1].valid);
        assert!(results[1].reason.as_deref().is_some_and(|r| r.contains("revoked")), "{:?}", results[1]);
        assert_eq!(results[2].certificate, p("rsa.der").display().to_string());
        assert!(!results[2].valid);
        assert!(results[2].reason.as_deref().is_some_and(|r| r.contains("RSA")), "{:?}", results[2]);

        // The JSON field names are a contract (DESIGN §9).
        let json = serde_json::to_value(&results[1]).expect("serializable");
        assert_eq!(json["valid"], serde_json::Value::Bool(false));
        assert!(json["certificate"].is_string() && json["reason"].is_string());

        // Without the CRL the second card is valid; a century later everything has expired.
        let no_crl = ChainAudit { crls: vec![], ..audit.clone() };
        assert!(audit_chain(&no_crl).expect("readable")[1].valid);
        let later = ChainAudit { at: SystemTime::now() + Duration::from_secs(100 * 365 * 86400), ..audit.clone() };
        assert!(audit_chain(&later).expect("readable").iter().all(|r| !r.valid));
        // Missing files are input errors, not results.
        let missing = ChainAudit { anchors: vec![p("nope.pem")], ..audit };
        assert!(matches!(audit_chain(&missing), Err(AuditError::Read { .. })));
    }

    #[test]
    fn pem_and_der_inputs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        assert!(matches!(read_certificates(&empty), Err(AuditError::Empty { .. })));
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").expect("write");
        assert!(
            matches!(read_certificates(&broken), Err(AuditError::Pem { reason, .. }) if reason.contains("PEM block 1"))
        );
        let der = dir.path().join("x.der");
        std::fs::write(&der, [0x30, 0x00]).expect("write");
        assert_eq!(read_certificates(&der).expect("DER passes through"), vec![vec![0x30, 0x00]]);
    }
}
