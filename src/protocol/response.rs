//! Typed responses: the data field of every answer a keyroll card gives, as a Rust value with one
//! [`Wire`] layout. The card encodes them, the terminal and the personalisation line decode them; neither
//! knows a byte offset of its own.
//!
//! | command | answer |
//! | --- | --- |
//! | SELECT, UPDATE TRANSFER KEY, CONFIRM, REFUND, PERSO STORE, LOCK | [`Empty`] |
//! | GET CARD INFO | [`CardInfo`](super::info::CardInfo) |
//! | REQUEST UPDATE PERMISSION | [`UpdatePermission`] |
//! | GET TRANSFER KEY | [`KeyPayload`](super::command::KeyPayload) (what UPDATE TRANSFER KEY relays) |
//! | BEGIN RECEIVE | [`ReceiveRequest`] |
//! | DEBIT | [`DebitToken`] |
//! | CREDIT | [`CreditAck`] |
//! | ABORT | [`AbortProof`] |
//! | GET DATA `BF21` | [`FactoryCredentials`] |
//! | INTERNAL AUTHENTICATE | `5F49 41 ePK.SD ‖ 86 10 receipt`, parsed by `crypto::scp11` (GP Amendment F) |
//! | GENERATE KEY PAIR | [`GeneratedPublicKey`] (public key and attestation) |

use super::codec::{DecodeError, Reader, Wire};
use super::command::{Challenge, Mac, Nonce};
use crate::domain::{ChipId, TransferKeyId};

/// The answer of a command that answers only a status word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Empty;

impl Wire for Empty {
    type Context = ();
    fn encode(&self, _: &mut Vec<u8>) {}
    fn read(_: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        Ok(Empty)
    }
}

/// REQUEST UPDATE PERMISSION: "generating a first random number and transmitting it" (claims 2, 4, 6, 7,
/// 9). Layout: `challenge (16)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdatePermission {
    pub challenge: Challenge,
}

impl Wire for UpdatePermission {
    type Context = ();
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.challenge);
    }
    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        Ok(UpdatePermission { challenge: r.array("challenge")? })
    }
}

/// BEGIN RECEIVE (payee): the transfer's nonce, the payee's new sequence number, the transfer key id the
/// MAC is made with, and the request MAC the payer checks in DEBIT (DESIGN.md §3).
/// Layout: `nonce (16) ‖ payee sequence (4) ‖ transfer key id (4) ‖ request MAC (16)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiveRequest {
    pub nonce: Nonce,
    pub payee_sequence: u32,
    pub transfer_key_id: TransferKeyId,
    pub request: Mac,
}

impl Wire for ReceiveRequest {
    type Context = ();
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.payee_sequence.to_be_bytes());
        out.extend_from_slice(&self.transfer_key_id.0.to_be_bytes());
        out.extend_from_slice(&self.request);
    }
    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        Ok(ReceiveRequest {
            nonce: r.array("nonce")?,
            payee_sequence: r.u32("payee sequence")?,
            transfer_key_id: TransferKeyId(r.u32("transfer key id")?),
            request: r.array("request MAC")?,
        })
    }
}

/// DEBIT (payer): the payer's sequence number after the debit and the value token the payee credits.
/// Layout: `payer sequence (4) ‖ token (16)`. A repeated DEBIT of a pending nonce answers the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebitToken {
    pub payer_sequence: u32,
    pub token: Mac,
}

impl Wire for DebitToken {
    type Context = ();
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.payer_sequence.to_be_bytes());
        out.extend_from_slice(&self.token);
    }
    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        Ok(DebitToken { payer_sequence: r.u32("payer sequence")?, token: r.array("token")? })
    }
}

/// CREDIT (payee): the acknowledgement the payer checks in CONFIRM. Layout: `ack MAC (16)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreditAck {
    pub ack: Mac,
}

impl Wire for CreditAck {
    type Context = ();
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ack);
    }
    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        Ok(CreditAck { ack: r.array("ack")? })
    }
}

/// ABORT (payee): the proof that the payee will never credit the nonce, which the payer needs for
/// REFUND. Layout: `proof MAC (16)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortProof {
    pub proof: Mac,
}

impl Wire for AbortProof {
    type Context = ();
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.proof);
    }
    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        Ok(AbortProof { proof: r.array("proof")? })
    }
}

/// INTERNAL AUTHENTICATE of an issued card: `MAC (16)` ([`crate::crypto::mac::card_authentication`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardAuthentication {
    pub mac: Mac,
}

impl Wire for CardAuthentication {
    type Context = ();
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.mac);
    }
    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        Ok(CardAuthentication { mac: r.array("card authentication")? })
    }
}

/// GET DATA `BF21`: the factory credentials of the card (DESIGN.md §10 point 1), public data.
/// Layout: `chip id (8) ‖ length (2) ‖ key-agreement certificate (DER) ‖ length (2) ‖ attestation
/// certificate (DER)`. keyroll's own layout (GP's `BF21` holds a certificate store in its own format).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactoryCredentials {
    pub chip_id: ChipId,
    pub agreement_certificate: Vec<u8>,
    pub attestation_certificate: Vec<u8>,
}

/// Longest factory certificate accepted: a P-256 certificate is a few hundred bytes; 2 KiB bounds what
/// an untrusted card makes the line buffer (house rule 5).
pub const MAX_FACTORY_CERTIFICATE: usize = 2048;

impl Wire for FactoryCredentials {
    type Context = ();
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.chip_id.0);
        for c in [&self.agreement_certificate, &self.attestation_certificate] {
            out.extend_from_slice(&(c.len() as u16).to_be_bytes());
            out.extend_from_slice(c);
        }
    }
    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        let chip_id = ChipId(r.array("chip id")?);
        let mut cert = |field: &'static str| -> Result<Vec<u8>, DecodeError> {
            let n = u16::from_be_bytes(r.array(field)?) as usize;
            if n > MAX_FACTORY_CERTIFICATE {
                return Err(DecodeError::TooLong { field, len: n, max: MAX_FACTORY_CERTIFICATE });
            }
            Ok(r.take(n, field)?.to_vec())
        };
        let agreement_certificate = cert("key-agreement certificate")?;
        let attestation_certificate = cert("attestation certificate")?;
        Ok(FactoryCredentials { chip_id, agreement_certificate, attestation_certificate })
    }
}

/// Length of an uncompressed SEC1 P-256 point (SEC 1 §2.3.3): `04 ‖ x (32) ‖ y (32)`.
pub const PUBLIC_KEY_LEN: usize = 65;

/// Longest DER ECDSA P-256 signature (a SEQUENCE of two INTEGERs of at most 33 bytes).
pub const MAX_ATTESTATION_LEN: usize = 72;

/// GENERATE KEY PAIR (claims 3, 5): the public key of the pair the card made (the secret key never
/// leaves the card) and its attestation by the factory attestation key (`crypto::attestation`).
/// Layout: the uncompressed SEC1 point (65) ‖ attestation (DER ECDSA, to the end; empty decodes, so the
/// line can name a missing attestation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedPublicKey {
    pub sec1: [u8; PUBLIC_KEY_LEN],
    pub attestation: Vec<u8>,
}

impl Wire for GeneratedPublicKey {
    type Context = ();
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.sec1);
        out.extend_from_slice(&self.attestation);
    }
    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        let sec1: [u8; PUBLIC_KEY_LEN] = r.array("public key")?;
        if sec1[0] != 0x04 {
            return Err(DecodeError::Invalid { field: "public key", why: "not an uncompressed SEC1 point" });
        }
        let attestation = r.rest_capped("attestation", MAX_ATTESTATION_LEN)?.to_vec();
        Ok(GeneratedPublicKey { sec1, attestation })
    }
}

/// PUT POLICY (DESIGN.md §10 point 4): whether the card adopted the policy, and the number it holds
/// now. Layout: `adopted (1: 00 kept, 01 adopted) ‖ policy number (4)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyAdoption {
    pub adopted: bool,
    pub number: u32,
}

impl Wire for PolicyAdoption {
    type Context = ();
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.adopted));
        out.extend_from_slice(&self.number.to_be_bytes());
    }
    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        let adopted = match r.u8("adopted")? {
            0 => false,
            1 => true,
            _ => return Err(DecodeError::Invalid { field: "adopted", why: "neither 00 nor 01" }),
        };
        Ok(PolicyAdoption { adopted, number: r.u32("policy number")? })
    }
}

/// GET POLICY: the card's policy as signed (empty: none), at most `Policy::MAX_LEN` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldPolicy(pub Vec<u8>);

impl Wire for HeldPolicy {
    type Context = ();
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
    fn read(r: &mut Reader<'_>, _: ()) -> Result<Self, DecodeError> {
        Ok(HeldPolicy(r.rest_capped("policy", super::policy::Policy::MAX_LEN)?.to_vec()))
    }
}
