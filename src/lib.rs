//! keyroll: key-management authority, personalisation line, reference card and settlement terminal for
//! the stored-value smart-card scheme of `seeds/000_b241c551434f3d80.txt` (claims 1–19).
//!
//! Layers import downward only (DESIGN.md §7):
//! `cli` → `demo` → `authority`, `perso`, `terminal`, `audit`, `rollout` → `protocol`, `crypto`,
//! `transport`, `pki`, `fab` (the manufacturer's credentials: making and checking them); the reference
//! `card` uses only `protocol`, `crypto` and `pki`. `domain` holds the shared vocabulary. The library
//! decides; `cli` parses, calls one library function and renders.

pub mod audit;
pub mod authority;
pub mod card;
pub mod cli;
pub mod crypto;
pub mod demo;
pub mod domain;
pub mod fab;
pub mod perso;
pub mod pki;
pub mod protocol;
pub mod rollout;
pub mod terminal;
pub mod transport;
