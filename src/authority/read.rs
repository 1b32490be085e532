//! What anyone holding the database file may read, as methods of [`Authority`]: the connection stays
//! inside `authority` (no SQL elsewhere), and callers above get typed rows.

use super::audit_log::{self, LogVerdict};
use super::batches::{self, Batch, PlanRow};
use super::cards::{self, CardRecord};
use super::issuer_ca::{self, CertRow};
use super::keys::{self, KeyKind, KeyRow, KeyState};
use super::manufacturers::{self, ChipRecord, ManufacturerRow};
use super::{Authority, AuthorityError};
use crate::domain::{CardSerial, ChipId};
use crate::fab::TrustedRoot;

impl Authority {
    /// Every batch, oldest first.
    pub fn batches(&self) -> Result<Vec<Batch>, AuthorityError> {
        batches::list(&self.conn)
    }

    /// Every key version (never the keys).
    pub fn keys(&self) -> Result<Vec<KeyRow>, AuthorityError> {
        keys::list(&self.conn)
    }

    /// The ids of the `kind` keys in `state`.
    pub fn key_ids(&self, kind: KeyKind, state: KeyState) -> Result<Vec<u32>, AuthorityError> {
        keys::ids_in_state(&self.conn, kind, state)
    }

    /// Every card in the register, whatever its state.
    pub fn cards(&self) -> Result<Vec<CardRecord>, AuthorityError> {
        cards::list(&self.conn)
    }

    /// Value issued onto personalised cards, minor currency units.
    pub fn issued_value(&self) -> Result<crate::domain::Total, AuthorityError> {
        cards::issued_value(&self.conn)
    }

    /// The card certificate register.
    pub fn certificates(&self) -> Result<Vec<CertRow>, AuthorityError> {
        issuer_ca::list(&self.conn)
    }

    /// Every card certificate as (card serial, DER).
    pub fn certificate_ders(&self) -> Result<Vec<(String, Vec<u8>)>, AuthorityError> {
        issuer_ca::all_certificates(&self.conn)
    }

    /// The certificates (DER) the database holds for card `serial`, oldest first, revoked ones too. A
    /// decision on them checks each against the root ([`Authority::root`], in the state digest): the
    /// certificates table is bound by row, replayed by `audit log`, not checked at unlock.
    pub fn certificates_of(&self, serial: crate::domain::CardSerial) -> Result<Vec<Vec<u8>>, AuthorityError> {
        let rows = self
            .conn
            .query_all("SELECT der FROM certificates WHERE card_serial = ?1 ORDER BY id", [serial.to_string()])?;
        rows.iter().map(|r| Ok(r.get::<_, Vec<u8>>(0)?)).collect()
    }

    /// The issuer root certificate (DER), once the CA exists.
    pub fn root(&self) -> Result<Option<Vec<u8>>, AuthorityError> {
        issuer_ca::root(&self.conn)
    }

    /// Per batch: the personalised cards a roll to transfer key `id` would strand by their limit.
    pub fn plan_rows(&self, id: u32) -> Result<Vec<PlanRow>, AuthorityError> {
        batches::plan(&self.conn, id)
    }

    /// The audit log's verdict: hash chain, signed head, audit key, and every bound table against a
    /// replay of the log.
    pub fn verify_log(&self) -> Result<LogVerdict, AuthorityError> {
        audit_log::verify(&self.conn)
    }

    /// Whether the log still holds a checkpoint's entry unchanged (`Err(why)` if it was rolled back or
    /// rewritten).
    pub fn log_extends(&self, cp: &audit_log::Checkpoint) -> Result<Result<(), String>, AuthorityError> {
        audit_log::extends(&self.conn, cp)
    }

    /// Every manufacturer (trusted and virtual) with its card counts.
    pub fn manufacturers(&self) -> Result<Vec<ManufacturerRow>, AuthorityError> {
        manufacturers::list(&self.conn)
    }

    /// The manufacturer roots the line may validate factory certificates against (only rows the signed
    /// log recorded).
    pub fn trusted_roots(&self) -> Result<Vec<TrustedRoot>, AuthorityError> {
        manufacturers::trusted_roots(&self.conn)
    }

    /// What the register knows of a chip.
    pub fn chip(&self, chip_id: ChipId) -> Result<Option<ChipRecord>, AuthorityError> {
        manufacturers::chip(&self.conn, chip_id)
    }

    /// The chip a serial was given to, if any.
    pub fn chip_of_serial(&self, serial: CardSerial) -> Result<Option<ChipId>, AuthorityError> {
        manufacturers::chip_of_serial(&self.conn, serial)
    }
}

impl Authority {
    /// The newest reconciliation `keyroll reconcile` recorded, if any.
    pub fn latest_reconciliation(
        &self,
    ) -> Result<Option<super::reconciliations::ReconciliationRecord>, AuthorityError> {
        super::reconciliations::latest(&self.conn)
    }
}
