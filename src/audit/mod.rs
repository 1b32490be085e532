//! The auditor: checks over what the authority produced (certificate chains and revocation, the audit
//! log) and the whole-database report, with one [`Verdict`] type.
//!
//! Uses [`crate::pki`] for the decisions and `authority`'s read-only accessors for the register.

pub mod chain;
pub mod report;
pub mod verdict;

pub use chain::{AuditError, ChainAudit, ChainResult, audit_chain, check_chains, read_certificates, read_crls};
pub use verdict::{Check, Verdict};
