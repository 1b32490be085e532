//! Key rollouts and back-office accounting over a fleet of cards (DESIGN.md §7): [`plan`] what a roll
//! strands (by limits and by update-key rolls), [`verify`] every live card generation against every
//! other through the real terminal on virtual cards, follow a fleet of card files with [`status`], and
//! [`reconcile`] issued value against the cards. [`paths`] is the key-roll rule they share.

pub mod exports;
pub mod paths;
pub mod plan;
pub mod reconcile;
pub mod record;
pub mod status;
pub mod verify;

use crate::authority::AuthorityError;
use crate::card::CardError;
use crate::perso::PersoError;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RolloutError {
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error(transparent)]
    Perso(#[from] PersoError),
    #[error("cannot read card folder {path}: {source}")]
    Folder { path: PathBuf, source: std::io::Error },
    #[error("cannot read card file {path}: {source}")]
    ReadCard { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a keyroll card file: {source}")]
    NotACard { path: PathBuf, source: crate::card::state::StateError },
    /// A virtual reference card that misbehaves: a fault in keyroll's own card.
    #[error("virtual reference card: {0}")]
    VirtualCard(String),
}

impl From<CardError> for RolloutError {
    fn from(e: CardError) -> Self {
        RolloutError::VirtualCard(e.to_string())
    }
}
