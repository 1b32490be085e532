//! GET CARD INFO's response: what claims 2, 4, 6, 7 and 9 say a card transmits (transfer key identifier
//! or selected identifier, update key identifier, certificate) plus what the terminal needs to settle
//! and recover (serial, profile, life cycle, limit, balance, pending entries). Simple-TLV encoded so
//! fields can be added without breaking old terminals; unknown tags are skipped.

use super::codec::{DecodeError, Reader, put_tlv};
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
    #[serde(with = "hex_array")]
    pub nonce: Nonce,
    /// The other card.
    pub counterpart: CardSerial,
    pub amount: Amount,
    /// The payee's sequence number of the transfer (needed to repeat a DEBIT during recovery).
    pub payee_sequence: u32,
}

/// Serde helper: byte arrays as hex strings.
pub mod hex_array {
    pub fn serialize<S: serde::Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        use serde::Deserialize;
        let s = String::deserialize(d)?;
        hex::decode(&s)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| serde::de::Error::custom(format!("expected {N} hex-encoded bytes")))
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
}

/// Most pending entries a card reports; the card bounds its logs to this (house rule 5).
pub const MAX_PENDING: usize = 8;

impl CardInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(128);
        put_tlv(&mut o, t::SERIAL, &self.serial.0);
        put_tlv(&mut o, t::LIFE_CYCLE, &[self.life_cycle as u8]);
        if let Some(p) = self.profile {
            put_tlv(&mut o, t::PROFILE, &[p.code()]);
        }
        if let Some(id) = self.transfer_key_id {
            put_tlv(&mut o, t::TRANSFER_KEY_ID, &id.0.to_be_bytes());
        }
        if !self.stored_transfer_key_ids.is_empty() {
            let ids: Vec<u8> = self.stored_transfer_key_ids.iter().flat_map(|i| i.0.to_be_bytes()).collect();
            put_tlv(&mut o, t::STORED_IDS, &ids);
        }
        if let Some(id) = self.update_key_id {
            put_tlv(&mut o, t::UPDATE_KEY_ID, &id.0.to_be_bytes());
        }
        if let Some(l) = self.transfer_key_id_limit {
            put_tlv(&mut o, t::LIMIT, &l.0.to_be_bytes());
        }
        put_tlv(&mut o, t::BALANCE, &self.balance.0.to_be_bytes());
        put_tlv(&mut o, t::MAX_BALANCE, &self.max_balance.0.to_be_bytes());
        put_tlv(&mut o, t::SEQUENCE, &self.sequence.to_be_bytes());
        for (tag, list) in [(t::PENDING_OUT, &self.pending_out), (t::PENDING_IN, &self.pending_in)] {
            for e in list {
                let mut v = Vec::with_capacity(32);
                v.extend_from_slice(&e.nonce);
                v.extend_from_slice(&e.counterpart.0);
                v.extend_from_slice(&e.amount.0.to_be_bytes());
                v.extend_from_slice(&e.payee_sequence.to_be_bytes());
                put_tlv(&mut o, tag, &v);
            }
        }
        if self.has_certificate || self.certificate.is_some() {
            put_tlv(&mut o, t::HAS_CERTIFICATE, &[1]);
        }
        if let Some(c) = &self.certificate {
            put_tlv(&mut o, t::CERTIFICATE, c);
        }
        if let Some(c) = self.chip_id {
            put_tlv(&mut o, t::CHIP_ID, &c.0);
        }
        o
    }

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
        }
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let mut serial = None;
        let mut life_cycle = None;
        let mut info = CardInfo::blank();
        let u32v = |v: &[u8], field| -> Result<u32, DecodeError> {
            let mut r = Reader::new(v);
            let x = r.u32(field)?;
            r.finish()?;
            Ok(x)
        };
        let u64v = |v: &[u8], field| -> Result<u64, DecodeError> {
            let mut r = Reader::new(v);
            let x = r.u64(field)?;
            r.finish()?;
            Ok(x)
        };
        while r.left() > 0 {
            let (tag, v) = r.tlv()?;
            match tag {
                t::SERIAL => {
                    serial = Some(CardSerial(
                        v.try_into().map_err(|_| DecodeError::Invalid { field: "serial", why: "not 8 bytes" })?,
                    ))
                }
                t::LIFE_CYCLE => {
                    life_cycle = Some(
                        v.first()
                            .and_then(|c| LifeCycle::from_code(*c))
                            .ok_or(DecodeError::Invalid { field: "life cycle", why: "unknown code" })?,
                    )
                }
                t::PROFILE => {
                    info.profile = Some(
                        v.first()
                            .and_then(|c| Profile::from_code(*c))
                            .ok_or(DecodeError::Invalid { field: "profile", why: "unknown code" })?,
                    )
                }
                t::TRANSFER_KEY_ID => info.transfer_key_id = Some(TransferKeyId(u32v(v, "transfer key id")?)),
                t::STORED_IDS => {
                    if v.len() % 4 != 0 || v.len() / 4 > 64 {
                        return Err(DecodeError::Invalid { field: "stored ids", why: "not a list of 4-byte ids" });
                    }
                    info.stored_transfer_key_ids =
                        v.chunks(4).map(|c| TransferKeyId(u32::from_be_bytes(c.try_into().unwrap()))).collect();
                }
                t::UPDATE_KEY_ID => info.update_key_id = Some(UpdateKeyId(u32v(v, "update key id")?)),
                t::LIMIT => info.transfer_key_id_limit = Some(TransferKeyIdLimit(u32v(v, "limit")?)),
                t::BALANCE => info.balance = Amount(u64v(v, "balance")?),
                t::MAX_BALANCE => info.max_balance = Amount(u64v(v, "max balance")?),
                t::SEQUENCE => info.sequence = u32v(v, "sequence")?,
                t::PENDING_OUT | t::PENDING_IN => {
                    let mut pr = Reader::new(v);
                    let e = PendingEntry {
                        nonce: pr.array("pending nonce")?,
                        counterpart: CardSerial(pr.array("pending counterpart")?),
                        amount: Amount(pr.u64("pending amount")?),
                        payee_sequence: pr.u32("pending sequence")?,
                    };
                    pr.finish()?;
                    let list = if tag == t::PENDING_OUT { &mut info.pending_out } else { &mut info.pending_in };
                    if list.len() >= MAX_PENDING {
                        return Err(DecodeError::Invalid { field: "pending", why: "too many entries" });
                    }
                    list.push(e);
                }
                t::CERTIFICATE => {
                    info.certificate = Some(v.to_vec());
                    info.has_certificate = true;
                }
                t::HAS_CERTIFICATE => info.has_certificate = v == [1],
                t::CHIP_ID => {
                    info.chip_id = Some(ChipId(
                        v.try_into().map_err(|_| DecodeError::Invalid { field: "chip id", why: "not 8 bytes" })?,
                    ))
                }
                _ => {} // unknown tags are skipped: newer cards may report more
            }
        }
        info.serial = serial.ok_or(DecodeError::Invalid { field: "serial", why: "missing" })?;
        info.life_cycle = life_cycle.ok_or(DecodeError::Invalid { field: "life cycle", why: "missing" })?;
        Ok(info)
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
            }],
            pending_in: vec![PendingEntry {
                nonce: [2; 16],
                counterpart: CardSerial::from_u64(8),
                amount: Amount(4),
                payee_sequence: 5,
            }],
            certificate: Some(vec![0x30; 500]),
            has_certificate: true,
            chip_id: Some(ChipId([5; 8])),
        };
        assert_eq!(CardInfo::decode(&info.encode()).unwrap(), info);
        let mut with_unknown = info.encode();
        with_unknown.extend_from_slice(&[0xEE, 1, 0]);
        assert_eq!(CardInfo::decode(&with_unknown).unwrap(), info);
        assert!(CardInfo::decode(&[0x81, 1, 7]).is_err(), "serial missing");
    }
}
