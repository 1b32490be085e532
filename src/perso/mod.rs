//! Personalisation: the APDU script that turns a blank card into an issued one ([`script`]), the batch
//! runner that writes reference card files ([`batch`]) and the PC/SC line ([`line`], feature `pcsc`).
//! The same script runs in both.

pub mod batch;
#[cfg(feature = "pcsc")]
pub mod line;
pub mod script;

pub use script::{
    AttestedKey, BackOfficeError, CardPlan, CertificateIssuer, ChipRegister, Line, PersoError, PersoOutcome,
    personalise,
};
