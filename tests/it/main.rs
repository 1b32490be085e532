//! keyroll's integration tests, one binary: every file below is a module (one link instead of one per
//! file). Shared helpers live in `support`; cases that drive the real binary use `support::cli`, PC/SC
//! cases take the machine-wide pcscd lock in `support::pcscd`.

mod support;

mod apdu_fuzz;
mod audit_cli;
mod backoffice;
mod ca_openssl;
mod card_claims;
mod cli_cases;
mod cli_help;
mod crypto_vectors;
mod demo;
mod examples;
mod fab_cli;
mod hsm;
mod issuer_properties;
mod issuer_word;
mod journal_signatures;
mod limbo;
mod pcsc_cli;
mod pcsc_export;
mod pcsc_transport;
mod perso_channel;
mod perso_failure;
mod policy_backoffice;
mod policy_prune;
mod policy_rollout;
mod postgres;
mod properties;
mod public_key;
mod reconcile;
mod reconcile_record;
mod replay;
mod resolve_checked;
mod scenarios;
mod settle_errors;
mod settlement;
mod settlement_ops;
mod tamper;
mod value_attacks;
mod value_chaining;
mod value_export;
mod value_log;
mod value_properties;
mod value_refund_close;
mod value_resolutions;
mod value_signed;
mod vectors_required;
mod wycheproof_ec;
