//! Stateless receipts on the payee (DESIGN.md §10 point 6; issue 13 item 1).
//!
//! Version 1 kept one record per open receipt (8 of them) and 32 settled nonces: one unauthenticated
//! BEGIN RECEIVE per slot jammed the payee, and 32 BEGIN RECEIVE/ABORT pairs evicted a settled nonce so
//! a payer could never be refunded. Here a receipt costs no memory:
//!
//! - the payee's nonce for receipt sequence `s` is `PRF(card receipt secret, serial ‖ s)`
//!   ([`receipt_nonce`], AES-CMAC under a purpose key, NIST SP 800-108 KDF), so nothing about an open
//!   receipt is stored; BEGIN RECEIVE only advances the counter `next` (a fixed-size field: a flood costs
//!   counter values, never room);
//! - the card keeps two bitmaps over the window of the last [`RECEIPT_WINDOW`] sequence numbers:
//!   *credited* and *aborted*. Nothing else is reserved until CREDIT, which checks the maximum balance;
//! - for any `s` in the window that is neither credited nor aborted, ABORT sets its aborted bit and
//!   proves "s was never credited and never will be"; a repeated ABORT repeats the proof; a repeated
//!   CREDIT re-derives its acknowledgement from the token and the credited bit;
//! - a sequence number below the window is [`Slot::Expired`]: the card can no longer say anything about
//!   it, and the payer's entry goes to its non-blocking exception list, which only an issuer-signed
//!   resolution clears (see `docs/protocol.md`).
//!
//! The window slides only when BEGIN RECEIVE hands out a new number, and the slot a new number takes is
//! cleared in the same transition (it last held `s - RECEIPT_WINDOW`, which thereby leaves the window).
//! This module is pure: each operation returns the next window or an error, never a half change.

use crate::crypto::Secret16;
use crate::crypto::kdf::{self, Purpose};
use crate::crypto::mac;
use crate::domain::CardSerial;
use serde::{Deserialize, Serialize};

/// How many receipt sequence numbers a payee can still answer for (credit, abort, repeat either).
/// 4,096 bits per bitmap, 1 KiB for both: what a small card spares, and far more receipts than an
/// honest terminal leaves open between two settlements of the same pair.
pub const RECEIPT_WINDOW: u32 = 4096;
const WORDS: usize = (RECEIPT_WINDOW / 64) as usize;

/// The payee's nonce for receipt sequence `s`: AES-CMAC (RFC 4493) under a key derived from the card's
/// receipt secret (never leaves the card), over the serial and `s`.
pub fn receipt_nonce(secret: &Secret16, serial: &CardSerial, s: u32) -> [u8; 16] {
    let k = kdf::derive16(secret, Purpose::ReceiptNonce, &serial.0);
    mac::cmac(&k, &[b"keyroll receipt nonce v2", &serial.0, &s.to_be_bytes()])
}

/// What the payee can say about one receipt sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Handed out by BEGIN RECEIVE, neither credited nor aborted: CREDIT or ABORT may close it.
    Open,
    Credited,
    Aborted,
    /// Older than the window: nothing can be proved any more (exception list, issuer resolution).
    Expired,
    /// Never handed out (at or above `next`, or 0).
    NotIssued,
}

/// Why a receipt operation was refused (the card maps these to ISO 7816-4 status words).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt sequence counter exhausted")]
    Exhausted,
    #[error("receipt {0} is {1:?}")]
    NotOpen(u32, Slot),
}

/// Two bitmaps over the window and the next sequence number to hand out.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceiptWindow {
    /// The next receipt sequence number BEGIN RECEIVE hands out; receipts are `1..next`.
    next: u32,
    credited: [u64; WORDS],
    aborted: [u64; WORDS],
}

impl Default for ReceiptWindow {
    fn default() -> Self {
        ReceiptWindow { next: 1, credited: [0; WORDS], aborted: [0; WORDS] }
    }
}

impl std::fmt::Debug for ReceiptWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ReceiptWindow {{ next: {}, credited: {}, aborted: {} }}",
            self.next,
            self.count(&self.credited),
            self.count(&self.aborted)
        )
    }
}

fn bit(s: u32) -> (usize, u64) {
    let i = s % RECEIPT_WINDOW;
    ((i / 64) as usize, 1u64 << (i % 64))
}

impl ReceiptWindow {
    /// The next sequence number BEGIN RECEIVE will hand out.
    pub fn next(&self) -> u32 {
        self.next
    }

    /// The lowest sequence number still in the window (1 until the window first slides).
    pub fn floor(&self) -> u32 {
        self.next.saturating_sub(RECEIPT_WINDOW).max(1)
    }

    fn count(&self, map: &[u64; WORDS]) -> u32 {
        map.iter().map(|w| w.count_ones()).sum()
    }

    pub fn slot(&self, s: u32) -> Slot {
        if s == 0 || s >= self.next {
            return Slot::NotIssued;
        }
        if s < self.floor() {
            return Slot::Expired;
        }
        let (w, m) = bit(s);
        match (self.credited[w] & m != 0, self.aborted[w] & m != 0) {
            (true, _) => Slot::Credited,
            (false, true) => Slot::Aborted,
            (false, false) => Slot::Open,
        }
    }

    /// BEGIN RECEIVE: hand out the next sequence number. The slot it takes is cleared (it held the
    /// number that now leaves the window). Fails only when the counter is exhausted: a wrap would
    /// reissue old nonces, so the card's receiving life ends instead.
    pub fn open(&self) -> Result<(ReceiptWindow, u32), ReceiptError> {
        let s = self.next;
        let next = s.checked_add(1).ok_or(ReceiptError::Exhausted)?;
        let mut w = self.clone();
        let (i, m) = bit(s);
        w.credited[i] &= !m;
        w.aborted[i] &= !m;
        w.next = next;
        Ok((w, s))
    }

    /// CREDIT: mark an open `s` credited.
    pub fn credit(&self, s: u32) -> Result<ReceiptWindow, ReceiptError> {
        self.close(s, true)
    }

    /// ABORT: mark an open `s` aborted: it can never be credited while it is in the window, and once it
    /// leaves the window nothing can be credited under it either (CREDIT needs an open slot).
    pub fn abort(&self, s: u32) -> Result<ReceiptWindow, ReceiptError> {
        self.close(s, false)
    }

    fn close(&self, s: u32, credited: bool) -> Result<ReceiptWindow, ReceiptError> {
        match self.slot(s) {
            Slot::Open => {
                let mut w = self.clone();
                let (i, m) = bit(s);
                if credited {
                    w.credited[i] |= m;
                } else {
                    w.aborted[i] |= m;
                }
                Ok(w)
            }
            other => Err(ReceiptError::NotOpen(s, other)),
        }
    }

    fn bytes(map: &[u64; WORDS]) -> [u8; WORDS * 8] {
        let mut b = [0u8; WORDS * 8];
        for (c, w) in b.chunks_exact_mut(8).zip(map) {
            c.copy_from_slice(&w.to_be_bytes());
        }
        b
    }

    fn from_bytes(b: &[u8; WORDS * 8]) -> [u64; WORDS] {
        let mut m = [0u64; WORDS];
        for (w, c) in m.iter_mut().zip(b.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            *w = u64::from_be_bytes(word);
        }
        m
    }
}

/// File form: the counter and both bitmaps (512 bytes each) through the crate's byte-string module,
/// `serde_hex`: bytes in the CBOR card file, hex in JSON (the card writes this at every state change;
/// hexed one `char` at a time, the bitmaps were a fifth of a settlement's CPU).
#[derive(Serialize, Deserialize)]
struct WindowFile {
    next: u32,
    #[serde(with = "crate::domain::serde_hex")]
    credited: [u8; WORDS * 8],
    #[serde(with = "crate::domain::serde_hex")]
    aborted: [u8; WORDS * 8],
}

impl Serialize for ReceiptWindow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WindowFile { next: self.next, credited: Self::bytes(&self.credited), aborted: Self::bytes(&self.aborted) }
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ReceiptWindow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let f = WindowFile::deserialize(d)?;
        if f.next == 0 {
            return Err(D::Error::custom("receipt counter starts at 1"));
        }
        let w = ReceiptWindow {
            next: f.next,
            credited: Self::from_bytes(&f.credited),
            aborted: Self::from_bytes(&f.aborted),
        };
        if w.credited.iter().zip(&w.aborted).any(|(c, a)| c & a != 0) {
            return Err(D::Error::custom("a receipt cannot be both credited and aborted"));
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn open_credit_abort_and_repeat() {
        let w = ReceiptWindow::default();
        let (w, a) = w.open().unwrap();
        let (w, b) = w.open().unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(w.slot(a), Slot::Open);
        assert_eq!(w.slot(3), Slot::NotIssued);
        assert_eq!(w.slot(0), Slot::NotIssued);
        let w = w.credit(a).unwrap();
        assert_eq!(w.slot(a), Slot::Credited);
        assert_eq!(w.credit(a), Err(ReceiptError::NotOpen(a, Slot::Credited)));
        assert_eq!(w.abort(a), Err(ReceiptError::NotOpen(a, Slot::Credited)));
        let w = w.abort(b).unwrap();
        assert_eq!(w.credit(b), Err(ReceiptError::NotOpen(b, Slot::Aborted)));
        assert_eq!(w.credit(3), Err(ReceiptError::NotOpen(3, Slot::NotIssued)));
    }

    #[test]
    fn a_flood_slides_the_window_and_expired_numbers_cannot_be_credited() {
        let (mut w, first) = ReceiptWindow::default().open().unwrap();
        for _ in 0..RECEIPT_WINDOW - 1 {
            w = w.open().unwrap().0;
        }
        assert_eq!(w.slot(first), Slot::Open, "still inside the window");
        let w2 = w.open().unwrap().0;
        assert_eq!(w2.slot(first), Slot::Expired);
        assert_eq!(w2.credit(first), Err(ReceiptError::NotOpen(first, Slot::Expired)));
        assert_eq!(w2.abort(first), Err(ReceiptError::NotOpen(first, Slot::Expired)));
        // The slot the new number took was cleared, so the newest receipt is open.
        assert_eq!(w2.slot(w2.next() - 1), Slot::Open);
    }

    #[test]
    fn counter_exhaustion_refuses_rather_than_wraps() {
        let w = ReceiptWindow { next: u32::MAX, ..ReceiptWindow::default() };
        assert_eq!(w.open(), Err(ReceiptError::Exhausted));
    }

    #[test]
    fn file_form_round_trips_and_refuses_bad_bitmaps() {
        let (w, s) = ReceiptWindow::default().open().unwrap();
        let w = w.credit(s).unwrap();
        let j = serde_json::to_string(&w).unwrap();
        assert_eq!(serde_json::from_str::<ReceiptWindow>(&j).unwrap(), w);
        assert!(serde_json::from_str::<ReceiptWindow>(r#"{"next":1,"credited":"00","aborted":"00"}"#).is_err());
        let both =
            j.replace(&format!("\"aborted\":\"{}", "0".repeat(16)), &format!("\"aborted\":\"{}", "0000000000000002"));
        assert!(serde_json::from_str::<ReceiptWindow>(&both).is_err(), "credited and aborted at once");
    }

    #[test]
    fn nonces_differ_per_sequence_serial_and_secret() {
        let k = Secret16::new([1; 16]);
        let a = CardSerial::from_u64(1);
        let n = receipt_nonce(&k, &a, 1);
        assert_eq!(n, receipt_nonce(&k, &a, 1));
        assert_ne!(n, receipt_nonce(&k, &a, 2));
        assert_ne!(n, receipt_nonce(&k, &CardSerial::from_u64(2), 1));
        assert_ne!(n, receipt_nonce(&Secret16::new([2; 16]), &a, 1));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Open,
        Credit(u32),
        Abort(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Open),
            2 => (0u32..40).prop_map(Op::Credit),
            2 => (0u32..40).prop_map(Op::Abort),
        ]
    }

    proptest! {
        /// Against a model with unbounded memory (a map s → outcome), inside the window the bitmaps
        /// answer exactly like the model: a number is credited at most once, never both credited and
        /// aborted, and only numbers handed out can be closed. Small windows are reached by opening many.
        #[test]
        fn window_matches_an_unbounded_model(ops in proptest::collection::vec(op(), 1..200), skip in 0u32..5000) {
            let mut w = ReceiptWindow::default();
            for _ in 0..skip { w = w.open().unwrap().0; }
            let base = w.next();
            let mut model: std::collections::BTreeMap<u32, Slot> = Default::default();
            for o in ops {
                match o {
                    Op::Open => { let (n, s) = w.open().unwrap(); w = n; model.insert(s, Slot::Open); }
                    Op::Credit(d) | Op::Abort(d) => {
                        let s = base + d;
                        let credited = matches!(o, Op::Credit(_));
                        let r = if credited { w.credit(s) } else { w.abort(s) };
                        match model.get(&s) {
                            Some(Slot::Open) => {
                                w = r.unwrap();
                                model.insert(s, if credited { Slot::Credited } else { Slot::Aborted });
                            }
                            _ => prop_assert!(r.is_err()),
                        }
                    }
                }
            }
            for (s, want) in model {
                prop_assert_eq!(w.slot(s), want);
            }
        }
    }
}
