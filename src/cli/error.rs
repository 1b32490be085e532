//! Errors as the user sees them: what went wrong, and what to do (house rule 6, after rage's
//! `error.rs`). Library errors are wrapped, never flattened into strings before this point.

use crate::authority::AuthorityError;
use crate::card::CardError;
use crate::perso::PersoError;
use crate::terminal::SettleError;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum CliError {
    /// Bad input, usage or environment: exit 2.
    Input {
        what: String,
        hint: Option<String>,
    },
    /// A check said no: exit 1 (the report was already printed).
    CheckFailed {
        what: String,
    },
    CardFile {
        path: PathBuf,
        source: CardError,
    },
    Settle(SettleError),
    Authority(AuthorityError),
    Perso(PersoError),
}

impl CliError {
    pub fn input(what: impl Into<String>, hint: impl Into<String>) -> Self {
        CliError::Input { what: what.into(), hint: Some(hint.into()) }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::CheckFailed { .. } | CliError::Authority(AuthorityError::Tampered(_)) => 1,
            CliError::Settle(
                SettleError::Stranded { .. } | SettleError::Blocked { .. } | SettleError::NoPath { .. },
            ) => 1,
            _ => 2,
        }
    }

    /// A stable code for `--json` error output.
    pub fn code(&self) -> &'static str {
        match self {
            CliError::Input { .. } => "bad-input",
            CliError::CheckFailed { .. } => "check-failed",
            CliError::CardFile { .. } => "card-file",
            CliError::Settle(SettleError::Transport { .. }) => "card-communication",
            CliError::Settle(SettleError::Stranded { .. }) => "stranded",
            CliError::Settle(SettleError::Blocked { .. }) => "blocked",
            CliError::Settle(SettleError::NoPath { .. }) => "no-key-roll-path",
            CliError::Settle(_) => "settlement-refused",
            CliError::Authority(
                AuthorityError::WrongIdentity(_) | AuthorityError::IdentityRequired | AuthorityError::Identity { .. },
            ) => "identity",
            CliError::Authority(AuthorityError::NoDatabase(_) | AuthorityError::Corrupt { .. }) => "database",
            CliError::Authority(_) => "authority",
            CliError::Perso(_) => "personalisation",
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            CliError::Input { hint, .. } => hint.clone(),
            CliError::CheckFailed { .. } => None,
            CliError::CardFile { .. } => Some("check the path; card files are written by `keyroll perso --out-dir`".into()),
            CliError::Settle(e) => match e {
                SettleError::Transport { .. } => Some(
                    "put the card back and run the same settle again: interrupted transfers are refunded or completed first"
                        .into(),
                ),
                SettleError::NotIssued { .. } => Some("finish the card with `keyroll perso` before using it".into()),
                SettleError::Stranded { .. } => {
                    Some("this card's batch limit is below the newer key; replace the card (see `keyroll rollout plan`)".into())
                }
                SettleError::Blocked { .. } => {
                    Some("the issuer blocked one of these cards (see `keyroll policy show`); withdraw it".into())
                }
                _ => None,
            },
            CliError::Authority(e) => match e {
                AuthorityError::NoDatabase(_) => Some("create one with `keyroll init --issuer NAME`, or pass --db FILE".into()),
                AuthorityError::AlreadyExists(_) => Some("choose another --db path; an existing database is never overwritten".into()),
                AuthorityError::Corrupt { .. } => Some("restore the database from a backup; keyroll did not change it".into()),
                AuthorityError::IdentityRequired => {
                    Some("pass --identity FILE (or set KEYROLL_IDENTITY) with a custodian's age identity".into())
                }
                AuthorityError::WrongIdentity(_) => Some("use the identity file written by `keyroll init` or a custodian's".into()),
                AuthorityError::NoSuchBatch(_) => Some("list batches with `keyroll batch list`".into()),
                AuthorityError::LimitBelowNewest { newest, .. } => {
                    Some(format!("pass --transfer-key-limit {newest} or more"))
                }
                AuthorityError::NoSuchKey { .. } => Some("list keys with `keyroll key list`".into()),
                AuthorityError::SigningTime(_) => Some(
                    "set this machine's clock right (the scheme key never signs a time earlier than its last signature or ahead of the clock)"
                        .into(),
                ),
                AuthorityError::PolicyFull { .. } => Some(
                    "a new generation is needed: create and activate a new transfer key, personalise new batches with it, retire the old key, then `keyroll policy publish` prunes the dead generation's entries"
                        .into(),
                ),
                AuthorityError::NoSuchCard(_) => Some("list cards with `keyroll rollout status` or `keyroll cert list`".into()),
                AuthorityError::Tampered(_) => {
                    Some("the database was changed outside keyroll: see `keyroll audit report`, restore a backup".into())
                }
                _ => None,
            },
            CliError::Perso(PersoError::Transport { .. }) => {
                Some("put the card back and run the same command again; finished cards are kept".into())
            }
            CliError::Perso(PersoError::AlreadyIssued(_)) => Some("this card is already personalised; insert a blank card".into()),
            CliError::Perso(_) => None,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Input { what, .. } => write!(f, "{what}")?,
            CliError::CheckFailed { what } => write!(f, "{what}")?,
            CliError::CardFile { path, source } => write!(f, "cannot use card file {}: {source}", path.display())?,
            CliError::Settle(e) => write!(f, "settlement failed: {e}")?,
            CliError::Authority(e) => write!(f, "{e}")?,
            CliError::Perso(e) => write!(f, "personalisation failed: {e}")?,
        }
        if let Some(h) = self.hint() {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

impl From<SettleError> for CliError {
    fn from(e: SettleError) -> Self {
        CliError::Settle(e)
    }
}

impl From<AuthorityError> for CliError {
    fn from(e: AuthorityError) -> Self {
        CliError::Authority(e)
    }
}

impl From<PersoError> for CliError {
    fn from(e: PersoError) -> Self {
        CliError::Perso(e)
    }
}
