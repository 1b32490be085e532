//! Personalisation: the APDU script that turns a blank card into an issued one. The same script runs
//! against in-process reference cards (`perso --out-dir`) and real readers (`perso --reader`).

pub mod script;

pub use script::{AttestedKey, CardPlan, CertificateIssuer, ChipRegister, Line, PersoError, PersoOutcome, personalise};
