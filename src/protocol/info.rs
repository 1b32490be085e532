//! GET CARD INFO's response: what claims 2, 4, 6, 7 and 9 say a card transmits (transfer key identifier
//! or selected identifier, update key identifier, certificate) plus what the terminal needs to settle
//! and recover (serial, profile, life cycle, limit, balance, pending entries). Simple-TLV encoded so
//! fields can be added without breaking old terminals; unknown tags are skipped.

use super::codec::{DecodeError, Reader, Wire, put_tlv};
use super::command::Nonce;
use crate::domain::{Amount, CardSerial, ChipId, Profile, TransferKeyId, TransferKeyIdLimit, UpdateKeyId};

/// A card's life cycle (ISO/IEC 7816-9 style: creation, initialisation, operational).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LifeCycle {
    /// No serial, no issuer keys: fresh from the fab (chip id and factory credentials only).
    Blank = 0x01,
    /// Serial given inside the personalisation channel; personalisation under way (a half-written card).
    Personalising = 0x03,
    /// Locked: personalisation refused for good, the scheme's commands allowed.
    Issued = 0x07,
}

impl LifeCycle {
    pub fn from_code(c: u8) -> Option<Self> {
        [LifeCycle::Blank, LifeCycle::Personalising, LifeCycle::Issued].into_iter().find(|l| *l as u8 == c)
    }
}

/// An unresolved value transfer the card remembers (DESIGN.md §3 exception log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingEntry {
    /// The payee's nonce identifying the transfer.
    #[serde(with = "crate::domain::serde_hex")]
    pub nonce: Nonce,
    /// The other card.
    pub counterpart: CardSerial,
    pub amount: Amount,
    /// The payee's receipt sequence number of the transfer (needed to repeat a DEBIT during recovery,
    /// and to name the receipt to the payee in CREDIT and ABORT).
    pub payee_sequence: u32,
    /// The transfer key id the transfer runs under (CREDIT and ABORT name it to the payee).
    pub transfer_key_id: TransferKeyId,
    /// In the payer's non-blocking exception list rather than among its pending debits.
    pub exception: bool,
}

impl Wire for PendingEntry {
    type Context = ();
    /// `nonce (16) ‖ counterpart serial (8) ‖ amount (8) ‖ payee sequence (4) ‖ transfer key id (4) ‖
    /// exception flag (1: 00 or 01)`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.counterpart.0);
        out.extend_from_slice(&self.amount.0.to_be_bytes());
        out.extend_from_slice(&self.payee_sequence.to_be_bytes());
        out.extend_from_slice(&self.transfer_key_id.0.to_be_bytes());
        out.push(self.exception as u8);
    }
    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        Ok(PendingEntry {
            nonce: r.array("pending nonce")?,
            counterpart: CardSerial(r.array("pending counterpart")?),
            amount: Amount(r.u64("pending amount")?),
            payee_sequence: r.u32("pending sequence")?,
            transfer_key_id: TransferKeyId(r.u32("pending transfer key id")?),
            exception: match r.u8("pending exception flag")? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::Invalid { field: "pending exception flag", why: "not 0 or 1" }),
            },
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardInfo {
    pub serial: CardSerial,
    pub life_cycle: LifeCycle,
    pub profile: Option<Profile>,
    /// Symmetric, public-key, hybrid: the transfer key identifier; multi-key: the selected identifier.
    pub transfer_key_id: Option<TransferKeyId>,
    /// Multi-key: every stored identifier (claim 9).
    pub stored_transfer_key_ids: Vec<TransferKeyId>,
    pub update_key_id: Option<UpdateKeyId>,
    pub transfer_key_id_limit: Option<TransferKeyIdLimit>,
    pub balance: Amount,
    pub max_balance: Amount,
    pub sequence: u32,
    /// Debits not yet confirmed or refunded.
    pub pending_out: Vec<PendingEntry>,
    /// Receipts begun and neither credited nor aborted.
    pub pending_in: Vec<PendingEntry>,
    /// The card's certificate, DER (claims 4, 6, 7); absent in the short form of GET CARD INFO.
    pub certificate: Option<Vec<u8>>,
    /// Whether the card holds a certificate (reported in both forms).
    pub has_certificate: bool,
    /// The chip id the fab gave the card (public, DESIGN.md §10 point 1).
    pub chip_id: Option<ChipId>,
    /// The number of the scheme policy the card holds (0: none), DESIGN.md §10 point 4.
    pub policy_number: u32,
    /// The lowest update key id its policy still allows for wrapping (1 without a policy).
    pub min_wrap_update_key_id: UpdateKeyId,
    /// The card's clock floor, Unix seconds (DESIGN.md §10 point 5).
    pub clock_floor: u64,
}

mod t {
    pub const SERIAL: u8 = 0x80;
    pub const LIFE_CYCLE: u8 = 0x81;
    pub const PROFILE: u8 = 0x82;
    pub const TRANSFER_KEY_ID: u8 = 0x83;
    pub const STORED_IDS: u8 = 0x84;
    pub const UPDATE_KEY_ID: u8 = 0x85;
    pub const LIMIT: u8 = 0x86;
    pub const BALANCE: u8 = 0x87;
    pub const MAX_BALANCE: u8 = 0x88;
    pub const SEQUENCE: u8 = 0x89;
    pub const PENDING_OUT: u8 = 0x8A;
    pub const PENDING_IN: u8 = 0x8B;
    pub const CERTIFICATE: u8 = 0x8C;
    pub const HAS_CERTIFICATE: u8 = 0x8D;
    pub const CHIP_ID: u8 = 0x8E;
    pub const POLICY_NUMBER: u8 = 0x8F;
    pub const MIN_WRAP: u8 = 0x90;
    pub const CLOCK_FLOOR: u8 = 0x91;
}

/// Most pending entries a card reports; the card bounds its logs to this (house rule 5).
pub const MAX_PENDING: usize = 8;
/// Most debits a payer parks in its non-blocking exception list (house rule 5). Parking happens only
/// when a DEBIT needs room among the pending debits, i.e. when the card pays again while earlier
/// transfers are still open; each parked entry is value the holder already paid out, so filling the
/// list takes 64 debits of the holder's own value toward payees that never return. Beyond it DEBIT
/// answers 6A84 until a settlement with one of those payees (or an issuer resolution) clears an entry.
pub const MAX_EXCEPTIONS: usize = 64;

impl Wire for CardInfo {
    type Context = ();

    fn encode(&self, o: &mut Vec<u8>) {
        put_tlv(o, t::SERIAL, &self.serial.0);
        put_tlv(o, t::LIFE_CYCLE, &[self.life_cycle as u8]);
        if let Some(p) = self.profile {
            put_tlv(o, t::PROFILE, &[p.code()]);
        }
        if let Some(id) = self.transfer_key_id {
            put_tlv(o, t::TRANSFER_KEY_ID, &id.0.to_be_bytes());
        }
        if !self.stored_transfer_key_ids.is_empty() {
            let ids: Vec<u8> = self.stored_transfer_key_ids.iter().flat_map(|i| i.0.to_be_bytes()).collect();
            put_tlv(o, t::STORED_IDS, &ids);
        }
        if let Some(id) = self.update_key_id {
            put_tlv(o, t::UPDATE_KEY_ID, &id.0.to_be_bytes());
        }
        if let Some(l) = self.transfer_key_id_limit {
            put_tlv(o, t::LIMIT, &l.0.to_be_bytes());
        }
        put_tlv(o, t::BALANCE, &self.balance.0.to_be_bytes());
        put_tlv(o, t::MAX_BALANCE, &self.max_balance.0.to_be_bytes());
        put_tlv(o, t::SEQUENCE, &self.sequence.to_be_bytes());
        for (tag, list) in [(t::PENDING_OUT, &self.pending_out), (t::PENDING_IN, &self.pending_in)] {
            for e in list {
                put_tlv(o, tag, &e.to_wire());
            }
        }
        if self.has_certificate || self.certificate.is_some() {
            put_tlv(o, t::HAS_CERTIFICATE, &[1]);
        }
        if let Some(c) = &self.certificate {
            put_tlv(o, t::CERTIFICATE, c);
        }
        if let Some(c) = self.chip_id {
            put_tlv(o, t::CHIP_ID, &c.0);
        }
        put_tlv(o, t::POLICY_NUMBER, &self.policy_number.to_be_bytes());
        put_tlv(o, t::MIN_WRAP, &self.min_wrap_update_key_id.0.to_be_bytes());
        put_tlv(o, t::CLOCK_FLOOR, &self.clock_floor.to_be_bytes());
    }

    /// One allocation for the whole answer, certificate included.
    fn extra_len(&self) -> usize {
        self.certificate.as_ref().map_or(0, Vec::len)
    }

    /// Simple-TLV items until the end; unknown tags are skipped (newer cards may report more), a known
    /// tag with a malformed value is an error naming the field.
    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        let mut serial = None;
        let mut life_cycle = None;
        let mut info = CardInfo::blank();
        while r.left() > 0 {
            let (tag, v) = r.tlv()?;
            match tag {
                t::SERIAL => serial = Some(CardSerial(fixed(v, "serial")?)),
                t::LIFE_CYCLE => {
                    life_cycle = Some(
                        LifeCycle::from_code(u8::from_be_bytes(fixed(v, "life cycle")?))
                            .ok_or(DecodeError::Invalid { field: "life cycle", why: "unknown code" })?,
                    )
                }
                t::PROFILE => {
                    info.profile = Some(
                        Profile::from_code(u8::from_be_bytes(fixed(v, "profile")?))
                            .ok_or(DecodeError::Invalid { field: "profile", why: "unknown code" })?,
                    )
                }
                t::TRANSFER_KEY_ID => {
                    info.transfer_key_id = Some(TransferKeyId(u32::from_be_bytes(fixed(v, "transfer key id")?)))
                }
                t::STORED_IDS => {
                    // A multi-key card stores at most a few dozen keys; 64 bounds the list (house rule 5).
                    if v.len() % 4 != 0 || v.len() / 4 > 64 {
                        return Err(DecodeError::Invalid { field: "stored ids", why: "not a list of 4-byte ids" });
                    }
                    let mut ids = Reader::new(v);
                    while ids.left() > 0 {
                        info.stored_transfer_key_ids.push(TransferKeyId(ids.u32("stored id")?));
                    }
                }
                t::UPDATE_KEY_ID => {
                    info.update_key_id = Some(UpdateKeyId(u32::from_be_bytes(fixed(v, "update key id")?)))
                }
                t::LIMIT => {
                    info.transfer_key_id_limit = Some(TransferKeyIdLimit(u32::from_be_bytes(fixed(v, "limit")?)))
                }
                t::BALANCE => info.balance = Amount(u64::from_be_bytes(fixed(v, "balance")?)),
                t::MAX_BALANCE => info.max_balance = Amount(u64::from_be_bytes(fixed(v, "max balance")?)),
                t::SEQUENCE => info.sequence = u32::from_be_bytes(fixed(v, "sequence")?),
                t::PENDING_OUT | t::PENDING_IN => {
                    let e = PendingEntry::from_wire(v, ())?;
                    let list = if tag == t::PENDING_OUT { &mut info.pending_out } else { &mut info.pending_in };
                    if list.len() >= MAX_PENDING + MAX_EXCEPTIONS {
                        return Err(DecodeError::Invalid { field: "pending", why: "too many entries" });
                    }
                    list.push(e);
                }
                t::CERTIFICATE => {
                    info.certificate = Some(v.to_vec());
                    info.has_certificate = true;
                }
                t::HAS_CERTIFICATE => info.has_certificate = v == [1],
                t::CHIP_ID => info.chip_id = Some(ChipId(fixed(v, "chip id")?)),
                t::POLICY_NUMBER => info.policy_number = u32::from_be_bytes(fixed(v, "policy number")?),
                t::MIN_WRAP => {
                    info.min_wrap_update_key_id = UpdateKeyId(u32::from_be_bytes(fixed(v, "min wrap update key id")?))
                }
                t::CLOCK_FLOOR => info.clock_floor = u64::from_be_bytes(fixed(v, "clock floor")?),
                _ => {}
            }
        }
        info.serial = serial.ok_or(DecodeError::Invalid { field: "serial", why: "missing" })?;
        info.life_cycle = life_cycle.ok_or(DecodeError::Invalid { field: "life cycle", why: "missing" })?;
        Ok(info)
    }
}

/// A TLV value of exactly `N` bytes.
fn fixed<const N: usize>(v: &[u8], field: &'static str) -> Result<[u8; N], DecodeError> {
    let mut r = Reader::new(v);
    let x = r.array(field)?;
    r.finish()?;
    Ok(x)
}

impl CardInfo {
    /// What a blank card with no serial reports.
    pub fn blank() -> Self {
        CardInfo {
            serial: CardSerial::default(),
            life_cycle: LifeCycle::Blank,
            profile: None,
            transfer_key_id: None,
            stored_transfer_key_ids: vec![],
            update_key_id: None,
            transfer_key_id_limit: None,
            balance: Amount(0),
            max_balance: Amount(0),
            sequence: 0,
            pending_out: vec![],
            pending_in: vec![],
            certificate: None,
            has_certificate: false,
            chip_id: None,
            policy_number: 0,
            min_wrap_update_key_id: UpdateKeyId(1),
            clock_floor: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_info_round_trips() {
        let info = CardInfo {
            serial: CardSerial::from_u64(7),
            life_cycle: LifeCycle::Issued,
            profile: Some(Profile::MultiKey),
            transfer_key_id: Some(TransferKeyId(2)),
            stored_transfer_key_ids: vec![TransferKeyId(1), TransferKeyId(2), TransferKeyId(3)],
            update_key_id: Some(UpdateKeyId(1)),
            transfer_key_id_limit: Some(TransferKeyIdLimit(9)),
            balance: Amount(100),
            max_balance: Amount(1000),
            sequence: 12,
            pending_out: vec![PendingEntry {
                nonce: [1; 16],
                counterpart: CardSerial::from_u64(9),
                amount: Amount(3),
                payee_sequence: 4,
                transfer_key_id: TransferKeyId(1),
                exception: false,
            }],
            pending_in: vec![PendingEntry {
                nonce: [2; 16],
                counterpart: CardSerial::from_u64(8),
                amount: Amount(4),
                payee_sequence: 5,
                transfer_key_id: TransferKeyId(1),
                exception: false,
            }],
            certificate: Some(vec![0x30; 500]),
            has_certificate: true,
            chip_id: Some(ChipId([5; 8])),
            policy_number: 3,
            min_wrap_update_key_id: UpdateKeyId(2),
            clock_floor: 1_800_000_000,
        };
        assert_eq!(CardInfo::from_wire(&info.to_wire(), ()).unwrap(), info);
        let mut with_unknown = info.to_wire();
        with_unknown.extend_from_slice(&[0xEE, 1, 0]);
        assert_eq!(CardInfo::from_wire(&with_unknown, ()).unwrap(), info);
        assert!(CardInfo::from_wire(&[0x81, 1, 7], ()).is_err(), "serial missing");
    }
}
