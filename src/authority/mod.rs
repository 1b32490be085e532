//! The issuer's back office (DESIGN.md §4).

pub mod ca;
