//! The auditors' commands: `audit log`, `audit chain` and `audit report` (DESIGN.md §9).
//!
//! None of them needs an identity: an auditor reads the database and files, never a secret.

use super::CliError;
use super::output::{self, Context};
use crate::audit::report::{self, ChainCounts, RegisterResult, Report, build_report, check_register};
use crate::audit::{self, AuditError, ChainAudit, ChainResult};
use crate::authority::Authority;
use crate::authority::audit_log::LogVerdict;
use crate::authority::checkpoint::CheckpointFile;
use crate::pki::{self, ValidationOptions};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify the audit log's hash chain and signed head (exit 1 if anything was edited, deleted,
    /// reordered or truncated).
    #[command(
        after_help = "Example:\n  keyroll audit log --expect-key 3f1c…   # the fingerprint `keyroll init` printed"
    )]
    Log {
        /// A checkpoint file: the log must extend the head it records (else exit 1: rolled back or
        /// rewritten); on success it is created or moved to the verified head. Keep it outside the
        /// database's directory: a restore must not bring back an older one.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
    },
    /// Validate certificate chains (RFC 5280 §6): certificate files against --anchor roots, or
    /// with --all every card certificate in the database against the issuer's root and its
    /// revocations (exit 1 if any certificate is invalid).
    #[command(
        after_help = "Examples:\n  keyroll audit chain --all\n  keyroll audit chain card.pem --anchor root.pem --crl issuer.crl"
    )]
    Chain(ChainArgs),
    /// One page on the whole database: issuer, key versions, batches, certificates, chain
    /// verdicts, the latest reconciliation, audit log and issued value (exit 1 if a chain is invalid,
    /// the log is not intact, or the latest reconciliation left value unaccounted or flagged anything).
    #[command(
        after_help = "Example:\n  keyroll --db issuer.db audit report --anchor root.pem --checkpoint issuer.checkpoint"
    )]
    Report(ReportArgs),
}

/// The outside anchor an auditor brings for the database's certificates: the root the issuer
/// published, as a file or as the SHA-256 of its DER.
#[derive(Args, Debug, Clone)]
pub struct RootArgs {
    /// SHA-256 (hex) of the issuer root certificate's DER, as published (`openssl x509 -in root.pem
    /// -outform DER | sha256sum`). The database's root must be that one.
    #[arg(long, value_name = "SHA256")]
    pub expect_root: Option<String>,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The issuer's published root (PEM or DER); the database's root must be it.
    #[arg(long = "anchor", value_name = "PEM")]
    pub anchors: Vec<PathBuf>,
    #[command(flatten)]
    pub root: RootArgs,
    /// A checkpoint file, as for `audit log --checkpoint`.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ChainArgs {
    /// Check every card certificate in the database, against the issuer's root (or the given
    /// --anchor roots) with the database's revocations.
    #[arg(long, conflicts_with = "certificates")]
    pub all: bool,
    /// Certificate files: PEM with one or more CERTIFICATE blocks, or DER.
    #[arg(value_name = "CERT", required_unless_present = "all")]
    pub certificates: Vec<PathBuf>,
    /// A trusted root (PEM or DER); repeat for several. With --all, this or --expect-root is required.
    #[arg(long = "anchor", value_name = "PEM")]
    pub anchors: Vec<PathBuf>,
    #[command(flatten)]
    pub root: RootArgs,
    /// Intermediate certificates to build paths with (not trusted by themselves); repeatable.
    #[arg(long = "untrusted", value_name = "PEM")]
    pub untrusted: Vec<PathBuf>,
    /// A CRL (PEM or DER); repeatable. A CRL of an issuer in the path must be usable.
    #[arg(long = "crl", value_name = "FILE")]
    pub crls: Vec<PathBuf>,
    /// Validation time (default: now), e.g. 2030-01-01T00:00:00Z.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// Intermediates allowed between a certificate and its anchor (x509-limbo's max_chain_depth).
    #[arg(long, value_name = "N")]
    pub max_depth: Option<usize>,
}

pub fn run(ctx: &Context, db: &Path, cmd: AuditCommand) -> Result<(), CliError> {
    match cmd {
        AuditCommand::Log { checkpoint } => log(ctx, db, checkpoint.as_deref()),
        AuditCommand::Chain(args) => chain(ctx, db, args),
        AuditCommand::Report(args) => report(ctx, db, args),
    }
}

/// The full log verdict with the auditor's own anchors: `--expect-key` and `--checkpoint` (moved
/// forward when the log is intact and extends it).
fn verified_log(ctx: &Context, auth: &Authority, checkpoint: Option<&Path>) -> Result<LogVerdict, CliError> {
    let mut v = auth.verify_log()?;
    if let Some(fp) = &ctx.expect_key
        && !fp.trim().eq_ignore_ascii_case(&v.audit_key_fingerprint)
        && v.intact
    {
        v.intact = false;
        v.reason = Some(format!("the audit key is {}, not the expected {}", v.audit_key_fingerprint, fp.trim()));
    }
    if let Some(file) = checkpoint {
        let saved = CheckpointFile::read(file)?;
        if let Some(saved) = &saved
            && v.intact
        {
            if !saved.audit_key_fingerprint.eq_ignore_ascii_case(&v.audit_key_fingerprint) {
                v.intact = false;
                v.reason = Some(format!(
                    "the audit key is {}, but checkpoint {} was taken under {}",
                    v.audit_key_fingerprint,
                    file.display(),
                    saved.audit_key_fingerprint
                ));
            } else if let Err(why) = auth.log_extends(&saved.checkpoint)? {
                v.intact = false;
                v.reason = Some(format!("{why} (checkpoint {})", file.display()));
            }
        }
        if v.intact
            && let Some(head) = v.head
        {
            CheckpointFile::write(file, &v.audit_key_fingerprint, head)?;
        }
    }
    Ok(v)
}

fn log(ctx: &Context, db: &Path, checkpoint: Option<&Path>) -> Result<(), CliError> {
    let auth = Authority::open_read_only(db)?;
    let v = verified_log(ctx, &auth, checkpoint)?;
    if ctx.json {
        output::json(&v);
    } else if v.intact {
        println!("audit log intact: {} rows, head signed by audit key {}", v.rows, v.audit_key_fingerprint);
    } else {
        println!(
            "audit log NOT intact: first bad row {}: {}",
            v.first_bad_row.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
            v.reason.clone().unwrap_or_default()
        );
    }
    if !v.intact {
        return Err(CliError::check(
            v.reason.unwrap_or_else(|| "audit log not intact".into()),
            "the database was changed outside keyroll: restore a backup and compare with `keyroll audit report`",
        ));
    }
    Ok(())
}

/// An unreadable input file is bad input (exit 2), with what to do about it.
fn input_error(e: AuditError) -> CliError {
    let hint = match &e {
        AuditError::Read { .. } => {
            "check the path; certificates, --anchor, --untrusted and --crl take PEM or DER files"
        }
        AuditError::TooLarge { .. } => "pass certificate and CRL files, not archives or disk images",
        AuditError::Pem { .. } => {
            "the file must hold well-formed PEM blocks, as `keyroll cert ca` or `openssl x509` write them"
        }
        AuditError::Empty { what: "CRL", .. } => {
            "pass a file with an \"X509 CRL\" PEM block or a DER CRL (`keyroll cert crl --out FILE`)"
        }
        AuditError::Empty { .. } => {
            "pass a file with a CERTIFICATE PEM block or a DER certificate (`keyroll cert list --json` has each card's PEM)"
        }
    };
    CliError::input(e.to_string(), hint)
}

fn read_all(paths: &[PathBuf], read: fn(&Path) -> Result<Vec<Vec<u8>>, AuditError>) -> Result<Vec<Vec<u8>>, CliError> {
    let mut out = Vec::new();
    for p in paths {
        out.extend(read(p).map_err(input_error)?);
    }
    Ok(out)
}

/// `--at`, parsed at the edge (RFC 3339), or now.
fn validation_time(at: Option<&str>) -> Result<SystemTime, CliError> {
    match at {
        None => Ok(SystemTime::now()),
        Some(s) => pki::parse_rfc3339(s).ok_or_else(|| {
            CliError::input(
                format!("--at {s:?} is not an RFC 3339 time"),
                "write it as YYYY-MM-DDTHH:MM:SSZ (or with an offset such as +01:00), e.g. 2030-01-01T00:00:00Z",
            )
        }),
    }
}

/// `--all`: the register checked against the database's root. Building a signed CRL would need
/// the CA key and so a custodian identity; the register's revocation rows say the same thing and
/// the signed audit log vouches for them (see [`crate::audit::report`]), so they are used directly.
fn check_database(
    auth: &Authority,
    args: &ChainArgs,
    opts: &ValidationOptions,
) -> Result<Vec<RegisterResult>, CliError> {
    // An auditor may hold the root the issuer published and want the database checked against
    // it rather than against the root the database itself carries: --anchor does that.
    let anchors = if args.anchors.is_empty() {
        vec![expected_root(auth, &args.root)?]
    } else {
        read_all(&args.anchors, audit::read_certificates)?
    };
    let untrusted = read_all(&args.untrusted, audit::read_certificates)?;
    let crls = read_all(&args.crls, audit::read_crls)?;
    let certificates = report::register(auth)?;
    Ok(check_register(&certificates, &anchors, &untrusted, &crls, opts))
}

fn print_result(r: &ChainResult) {
    if r.valid {
        println!("valid    {}  {}", r.certificate, r.subject.as_deref().unwrap_or(""));
    } else {
        println!("INVALID  {}: {}", r.certificate, r.reason.as_deref().unwrap_or("not valid"));
    }
}

#[derive(Serialize)]
struct ChainOutput<T: Serialize> {
    results: Vec<T>,
    valid: usize,
    invalid: usize,
    /// `--all`: of the invalid ones, those the issuer revoked (expected; not a failed check).
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked: Option<usize>,
    /// The validation time, RFC 3339.
    at: String,
}

fn chain(ctx: &Context, db: &Path, args: ChainArgs) -> Result<(), CliError> {
    let at = validation_time(args.at.as_deref())?;
    let mut opts = ValidationOptions::at(at);
    opts.max_intermediates = args.max_depth;
    opts.require_crl = !args.crls.is_empty();
    let at_text = pki::format_unix(pki::floor_seconds(at));
    let (valid, invalid) = if args.all {
        if args.anchors.is_empty() && args.root.expect_root.is_none() {
            return Err(no_anchor("audit chain --all"));
        }
        let auth = Authority::open_read_only(db)?;
        // The register and its revocations are only worth checking if the log vouches for them.
        let log = auth.verify_log()?;
        if !log.intact {
            return Err(CliError::check(
                format!(
                    "the certificate register is not vouched for by the audit log: {}",
                    log.reason.unwrap_or_default()
                ),
                "the database was changed outside keyroll: `keyroll audit log` names the first bad row",
            ));
        }
        let results = check_database(&auth, &args, &opts)?;
        let counts = ChainCounts::of(&results);
        if ctx.json {
            output::json(&ChainOutput {
                results,
                valid: counts.valid,
                invalid: counts.invalid,
                revoked: Some(counts.revoked),
                at: at_text,
            });
        } else {
            for r in &results {
                print_result(&r.result);
            }
            let anchor =
                if args.anchors.is_empty() { "the issuer root (--expect-root)" } else { "the given --anchor roots" };
            println!(
                "{} card certificate(s) at {at_text}: {} valid, {} invalid ({} revoked); checked against {anchor} and the database's revocations{}",
                results.len(),
                counts.valid,
                counts.invalid,
                counts.revoked,
                if args.crls.is_empty() { String::new() } else { format!(" and {} CRL file(s)", args.crls.len()) }
            );
        }
        // The register's verdict is the report's (`audit::report::chains_check`): a certificate the issuer
        // revoked is expected to fail and is listed; any other failure fails the check.
        let check = audit::report::chains_check(&counts);
        if !check.ok {
            return Err(CliError::check(
                check.detail,
                "each INVALID line (or `results[].reason` with --json) says why",
            ));
        }
        return Ok(());
    } else {
        if args.anchors.is_empty() {
            return Err(CliError::input(
                "no trust anchor: certificate files are checked against the roots given with --anchor",
                "pass --anchor ROOT.pem (the root the issuer published), or use --all --anchor ROOT.pem to check every certificate the database issued",
            ));
        }
        let results = audit::audit_chain(&ChainAudit {
            certificates: args.certificates,
            anchors: args.anchors,
            untrusted: args.untrusted,
            crls: args.crls,
            at,
            max_intermediates: args.max_depth,
        })
        .map_err(input_error)?;
        let valid = results.iter().filter(|r| r.valid).count();
        let invalid = results.len() - valid;
        if ctx.json {
            output::json(&ChainOutput { results, valid, invalid, revoked: None, at: at_text });
        } else {
            for r in &results {
                print_result(r);
            }
            println!("{} certificate(s) at {at_text}: {valid} valid, {invalid} invalid", valid + invalid);
        }
        (valid, invalid)
    };
    if invalid > 0 {
        return Err(CliError::check(
            format!("{invalid} of {} certificate(s) did not validate", valid + invalid),
            "each INVALID line (or `results[].reason` with --json) says why",
        ));
    }
    Ok(())
}

fn print_report(r: &Report) {
    let none = || "-".to_string();
    println!("keyroll audit report, {}", r.at);
    println!("database      {}", r.database);
    println!("issuer        {}", r.issuer.name);
    println!(
        "root          {} (serial {}, notAfter {})",
        r.issuer.root_subject.clone().unwrap_or_else(none),
        r.issuer.root_serial.clone().unwrap_or_else(none),
        r.issuer.root_not_after.clone().unwrap_or_else(none)
    );
    println!("audit key     {}", r.issuer.audit_key_fingerprint);
    println!();
    println!("key versions");
    println!("  {:<9} {:>4} {:<8} {:<6}", "kind", "id", "state", "kcv");
    for k in &r.keys {
        println!("  {:<9} {:>4} {:<8} {:<6}", k.kind.name(), k.id, k.state.name(), k.kcv);
    }
    println!();
    println!("batches");
    println!("  {:<16} {:<10} {:>4} {:>5} {:>4} {:>12}", "name", "profile", "tk", "limit", "uk", "personalised");
    for b in &r.batches {
        println!(
            "  {:<16} {:<10} {:>4} {:>5} {:>4} {:>12}",
            b.name,
            b.profile.name(),
            b.transfer_key_id,
            b.transfer_key_id_limit,
            b.update_key_id,
            b.personalised
        );
    }
    println!();
    println!("manufacturers");
    for m in &r.manufacturers {
        println!(
            "  {:<28} {:<8} {:>5} cards, {:>5} issued  root {}",
            m.name, m.kind, m.cards, m.cards_locked, m.fingerprint
        );
    }
    if r.manufacturers.is_empty() {
        println!("  none trusted yet (keyroll fab trust ROOT.pem)");
    }
    println!();
    println!("cards         {} in the register, {} personalised", r.cards.total, r.cards.personalised);
    println!("issued value  {}", r.issued_value);
    println!("certificates  {} issued, {} revoked", r.certificates.issued, r.certificates.revoked);
    println!(
        "chains        {} valid, {} invalid ({} of them revoked)",
        r.chains.valid, r.chains.invalid, r.chains.revoked
    );
    for c in &r.chains.invalid_certificates {
        println!("  INVALID  {}: {}", c.result.certificate, c.result.reason.as_deref().unwrap_or("not valid"));
    }
    match &r.reconciliation {
        Some(x) => {
            let j = &x.result;
            println!(
                "reconciled    {} at {}: {} card(s), issued {}, balances {}, in flight {}, unaccounted {}, {} flag(s){}",
                x.id,
                x.at,
                j.cards,
                j.issued,
                j.balances,
                j.in_flight,
                j.unaccounted,
                j.flags,
                if x.accounted { "" } else { ": NOT accounted" }
            );
            println!("  cards digest {}", hex::encode(j.cards_digest));
            for h in &j.journals {
                println!("  journal      {} ({} lines, head {})", h.name, h.lines, h.head);
            }
        }
        None => match r.verdict.check("reconciled") {
            Some(c) if !c.ok => println!("reconciled    {}", c.detail),
            _ => println!("reconciled    never (`keyroll reconcile` records a reconciliation)"),
        },
    }
    let log = &r.audit_log;
    if log.intact {
        println!("audit log     intact, {} rows", log.rows);
    } else {
        println!(
            "audit log     NOT intact: first bad row {}: {}",
            log.first_bad_row.map(|n| n.to_string()).unwrap_or_else(none),
            log.reason.as_deref().unwrap_or("")
        );
    }
    println!();
    println!("verdict       {}", r.verdict.word());
}

/// No outside anchor: the database's own root proves nothing (an attacker swaps it and re-issues the
/// register).
fn no_anchor(what: &str) -> CliError {
    CliError::input(
        format!("{what} needs an outside anchor: the database's own root proves nothing about the database"),
        "pass --anchor ROOT.pem (the root the issuer published) or --expect-root SHA256 (of its DER)",
    )
}

/// The database's root, which must be the one `--expect-root` names.
fn expected_root(auth: &Authority, root: &RootArgs) -> Result<Vec<u8>, CliError> {
    let Some(expected) = &root.expect_root else { return Err(no_anchor("this command")) };
    let der = auth.root()?.ok_or_else(|| {
        CliError::input(
            format!("{} holds no issuer root certificate", auth.path.display()),
            "create it with `keyroll cert ca --out root.pem` (needs --identity), or pass --anchor ROOT.pem",
        )
    })?;
    let found = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der));
    if !found.eq_ignore_ascii_case(expected.trim()) {
        return Err(CliError::check(
            format!("the database's root certificate has SHA-256 {found}, not the expected {}", expected.trim()),
            "the root was replaced: nothing in this database can be trusted; restore a backup",
        ));
    }
    Ok(der)
}

fn report(ctx: &Context, db: &Path, args: ReportArgs) -> Result<(), CliError> {
    if args.anchors.is_empty() && args.root.expect_root.is_none() {
        return Err(no_anchor("audit report"));
    }
    let auth = Authority::open_read_only(db)?;
    // The report validates against the database's root: it must be the published one.
    if args.anchors.is_empty() {
        expected_root(&auth, &args.root)?;
    } else {
        let published = read_all(&args.anchors, audit::read_certificates)?;
        let ours = auth.root()?.unwrap_or_default();
        if !published.contains(&ours) {
            return Err(CliError::check(
                "the database's root certificate is not the --anchor root".to_string(),
                "the root was replaced: nothing in this database can be trusted; restore a backup",
            ));
        }
    }
    // Checkpoint and --expect-key first: a rolled-back log fails the report.
    let checked = verified_log(ctx, &auth, args.checkpoint.as_deref())?;
    let mut r = build_report(&auth, SystemTime::now())?;
    if !checked.intact && r.audit_log.intact {
        // Rolled back past the checkpoint, or another audit key: the report fails on its log check.
        let failed = report::log_check(&checked);
        r.audit_log = checked;
        let checks =
            r.verdict.checks.iter().cloned().map(|c| if c.name == failed.name { failed.clone() } else { c }).collect();
        r.verdict = crate::audit::verdict::Verdict::new(checks);
    }
    if ctx.json {
        output::json(&r);
    } else {
        print_report(&r);
    }
    if !r.verdict.ok {
        return Err(CliError::check(
            format!("audit report failed: {}", r.verdict.failures()),
            "the report above lists each invalid certificate and the first bad log row",
        ));
    }
    Ok(())
}
