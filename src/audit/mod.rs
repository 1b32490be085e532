//! The auditor: checks over files the authority produced (certificate chains and revocation).
//!
//! Uses [`crate::pki`] for the decisions; this layer only reads files and reports.

pub mod chain;
pub mod report;

pub use chain::{AuditError, ChainAudit, ChainResult, audit_chain, check_chains, read_certificates, read_crls};
