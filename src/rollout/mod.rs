//! Rollout and back-office accounting over a fleet of cards (DESIGN.md §7): `reconcile`.

pub mod reconcile;
