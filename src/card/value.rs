//! Value transfer between two cards of the same transfer key generation (DESIGN.md §3; the seed's
//! "updates the value data by performing encryption using the transfer key", claims 1, 3, 5, 8).
//!
//! Mondex-style with exception logs on both cards:
//! BEGIN RECEIVE (payee) → DEBIT (payer) → CREDIT (payee) → CONFIRM (payer), with ABORT/REFUND and
//! idempotent CREDIT and DEBIT for recovery. Every message is a CMAC under a key derived from the
//! shared transfer key, binding both serials, the amount, the payee's nonce and both sequence numbers,
//! so value can only move between cards holding the same transfer key (DESIGN.md §6 property 9).
//! Sequence numbers and logs are written in the same atomic record as the balance they guard.

use super::Effect;
use super::state::{CardState, LogKind, Outcome, PendingIn, PendingOut, Settled};
use crate::crypto::{TransferKey, mac, random};
use crate::domain::{Amount, CardSerial, TransferKeyId};
use crate::protocol::StatusWord;
use crate::protocol::codec::Wire;
use crate::protocol::command::{Mac, Nonce};
use crate::protocol::info::MAX_PENDING;
use crate::protocol::response::{AbortProof, CreditAck, DebitToken, ReceiveRequest};

const REQUEST: &[u8] = b"keyroll value request v1";
const TOKEN: &[u8] = b"keyroll value token v1";
const ACK: &[u8] = b"keyroll value ack v1";
const ABORT: &[u8] = b"keyroll value abort v1";

struct Transfer<'a> {
    payer: &'a CardSerial,
    payee: &'a CardSerial,
    amount: Amount,
    nonce: &'a Nonce,
    payee_sequence: u32,
    transfer_key_id: TransferKeyId,
}

impl<'a> Transfer<'a> {
    /// The transfer a receipt belongs to, seen from the payee `me`.
    fn incoming(me: &'a CardSerial, p: &'a PendingIn) -> Self {
        Transfer {
            payer: &p.payer,
            payee: me,
            amount: p.amount,
            nonce: &p.nonce,
            payee_sequence: p.payee_sequence,
            transfer_key_id: p.transfer_key_id,
        }
    }

    /// The transfer a settled receipt belonged to.
    fn settled(me: &'a CardSerial, s: &'a Settled) -> Self {
        Transfer {
            payer: &s.payer,
            payee: me,
            amount: s.amount,
            nonce: &s.nonce,
            payee_sequence: s.payee_sequence,
            transfer_key_id: s.transfer_key_id,
        }
    }

    /// The transfer a pending debit belongs to, seen from the payer `me`.
    fn outgoing(me: &'a CardSerial, p: &'a PendingOut) -> Self {
        Transfer {
            payer: me,
            payee: &p.payee,
            amount: p.amount,
            nonce: &p.nonce,
            payee_sequence: p.payee_sequence,
            transfer_key_id: p.transfer_key_id,
        }
    }

    fn parts<'b>(&'b self, label: &'b [u8], amount: &'b [u8; 8], seqs: &'b [u8; 8], id: &'b [u8; 4]) -> [&'b [u8]; 7] {
        [label, &self.payer.0, &self.payee.0, amount, self.nonce, seqs, id]
    }

    /// CMAC over label, both serials, amount, nonce, payee sequence ‖ payer sequence (0 in abort
    /// proofs, which precede any debit) and the transfer key id.
    fn mac(&self, key: &TransferKey, label: &[u8], payer_sequence: Option<u32>) -> Mac {
        let (amount, seqs, id) = self.fields(payer_sequence);
        mac::cmac(&mac::value_mac_key(key), &self.parts(label, &amount, &seqs, &id))
    }

    fn check(&self, key: &TransferKey, label: &[u8], payer_sequence: Option<u32>, tag: &Mac) -> Result<(), StatusWord> {
        let (amount, seqs, id) = self.fields(payer_sequence);
        mac::verify(&mac::value_mac_key(key), &self.parts(label, &amount, &seqs, &id), tag)
            .map_err(|_| StatusWord::VerificationFailed)
    }

    fn fields(&self, payer_sequence: Option<u32>) -> ([u8; 8], [u8; 8], [u8; 4]) {
        let mut seqs = [0u8; 8];
        seqs[..4].copy_from_slice(&self.payee_sequence.to_be_bytes());
        seqs[4..].copy_from_slice(&payer_sequence.unwrap_or(0).to_be_bytes());
        (self.amount.0.to_be_bytes(), seqs, self.transfer_key_id.0.to_be_bytes())
    }
}

fn serial(state: &CardState) -> Result<CardSerial, StatusWord> {
    state.serial.ok_or(StatusWord::ConditionsNotSatisfied)
}

fn key_for(state: &CardState, id: TransferKeyId) -> Result<TransferKey, StatusWord> {
    state.key_of_transfer(id).ok_or(StatusWord::ReferencedDataNotFound)
}

/// The pending debit for `nonce`, with its index (6A88 if there is none).
fn pending_out<'s>(state: &'s CardState, nonce: &Nonce) -> Result<(usize, &'s PendingOut), StatusWord> {
    state.pending_out.iter().enumerate().find(|(_, p)| &p.nonce == nonce).ok_or(StatusWord::ReferencedDataNotFound)
}

/// The open receipt for `nonce`, with its index (6A88 if there is none).
fn pending_in<'s>(state: &'s CardState, nonce: &Nonce) -> Result<(usize, &'s PendingIn), StatusWord> {
    state.pending_in.iter().enumerate().find(|(_, p)| &p.nonce == nonce).ok_or(StatusWord::ReferencedDataNotFound)
}

fn next_sequence(state: &CardState) -> Result<u32, StatusWord> {
    // An exhausted counter ends the card's life rather than wrapping (a wrap would reopen old nonces).
    state.sequence.checked_add(1).ok_or(StatusWord::ConditionsNotSatisfied)
}

/// Value the card is committed to holding: balance plus everything in flight either way.
fn committed(state: &CardState) -> u128 {
    state.balance.0 as u128 + state.pending_out_total() as u128 + state.pending_in_total() as u128
}

/// Step 1 (payee): open a receipt for a transfer from `payer` at its sequence number `payer_sequence`. Returns `nonce ‖ payee sequence ‖ transfer key id ‖ request MAC`;
/// the request MAC is what lets the payer know a real payee of its generation asked (no terminal can
/// make a card debit itself toward a receipt that does not exist).
pub(super) fn begin_receive(
    state: &CardState,
    payer: CardSerial,
    amount: Amount,
    payer_sequence: u32,
) -> Result<Effect, StatusWord> {
    let me = serial(state)?;
    if payer == me || amount.0 == 0 {
        return Err(StatusWord::IncorrectData);
    }
    // DESIGN.md §10 point 4: no value from a blocked card.
    if state.blocks(payer) {
        return Err(StatusWord::CounterpartBlocked);
    }
    let key_id = state.selected_transfer_key_id.ok_or(StatusWord::ConditionsNotSatisfied)?;
    // Card-enforced maximum balance, counting value already in flight (DESIGN.md §1).
    if committed(state) + amount.0 as u128 > state.max_balance.0 as u128 {
        return Err(StatusWord::ConditionsNotSatisfied);
    }
    if state.pending_in.len() >= MAX_PENDING {
        return Err(StatusWord::NotEnoughMemory);
    }
    let nonce: Nonce = random::bytes().map_err(|_| StatusWord::NoPreciseDiagnosis)?;
    let mut next = state.clone();
    next.sequence = next_sequence(state)?;
    next.pending_in.push(PendingIn { nonce, payer, amount, payee_sequence: next.sequence, transfer_key_id: key_id });
    let key = key_for(state, key_id)?;
    let t = Transfer {
        payer: &payer,
        payee: &me,
        amount,
        nonce: &nonce,
        payee_sequence: next.sequence,
        transfer_key_id: key_id,
    };
    let out = ReceiveRequest {
        nonce,
        payee_sequence: next.sequence,
        transfer_key_id: key_id,
        request: t.mac(&key, REQUEST, Some(payer_sequence)),
    };
    Ok(Effect::write(next, out.to_wire()))
}

/// Step 2 (payer): check the payee's request, debit and return `payer sequence ‖ token`. Repeating a
/// DEBIT for a pending nonce with the same parameters returns the same token without a second debit
/// and without needing the request again (recovery in a later session has only the card's log).
pub(super) fn debit(
    state: &CardState,
    payee: CardSerial,
    amount: Amount,
    nonce: &Nonce,
    payee_sequence: u32,
    request: &Mac,
) -> Result<Effect, StatusWord> {
    let me = serial(state)?;
    if payee == me || amount.0 == 0 {
        return Err(StatusWord::IncorrectData);
    }
    if let Some(p) = state.pending_out.iter().find(|p| &p.nonce == nonce) {
        if p.payee != payee || p.amount != amount || p.payee_sequence != payee_sequence {
            return Err(StatusWord::IncorrectData);
        }
        let key = key_for(state, p.transfer_key_id)?;
        let t = Transfer::outgoing(&me, p);
        let out = DebitToken { payer_sequence: p.payer_sequence, token: t.mac(&key, TOKEN, Some(p.payer_sequence)) };
        return Ok(Effect::reply(out.to_wire()));
    }
    // DESIGN.md §10 point 4: no new value to a blocked card (a repeat of a debit already made, above,
    // still answers, so value in flight stays recoverable).
    if state.blocks(payee) {
        return Err(StatusWord::CounterpartBlocked);
    }
    let key = state.current_transfer_key().ok_or(StatusWord::ConditionsNotSatisfied)?;
    let t = Transfer { payer: &me, payee: &payee, amount, nonce, payee_sequence, transfer_key_id: key.id };
    // The request names the payer's current sequence number: once this debit raises it, no replay of
    // the same request (or of this DEBIT) can debit again (DESIGN.md §6 property 5).
    t.check(&key, REQUEST, Some(state.sequence), request)?;
    if state.balance < amount {
        return Err(StatusWord::ConditionsNotSatisfied);
    }
    if state.pending_out.len() >= MAX_PENDING {
        return Err(StatusWord::NotEnoughMemory);
    }
    let mut next = state.clone();
    next.sequence = next_sequence(state)?;
    next.balance = Amount(state.balance.0 - amount.0);
    next.pending_out.push(PendingOut {
        nonce: *nonce,
        payee,
        amount,
        payee_sequence,
        payer_sequence: next.sequence,
        transfer_key_id: key.id,
    });
    next.push_log(LogKind::Debit, payee, amount);
    let out = DebitToken { payer_sequence: next.sequence, token: t.mac(&key, TOKEN, Some(next.sequence)) };
    Ok(Effect::write(next, out.to_wire()))
}

/// Step 3 (payee): check the token, credit once, return the acknowledgement. A repeated CREDIT of a
/// credited nonce returns the same acknowledgement and credits nothing.
pub(super) fn credit(state: &CardState, nonce: &Nonce, payer_sequence: u32, token: &Mac) -> Result<Effect, StatusWord> {
    let me = serial(state)?;
    if let Some(s) = state.settled.iter().find(|s| &s.nonce == nonce) {
        if s.outcome == Outcome::Aborted {
            return Err(StatusWord::ConditionsNotSatisfied);
        }
        let key = key_for(state, s.transfer_key_id)?;
        let t = Transfer::settled(&me, s);
        t.check(&key, TOKEN, Some(payer_sequence), token)?;
        if payer_sequence != s.payer_sequence {
            return Err(StatusWord::IncorrectData);
        }
        return Ok(Effect::reply(CreditAck { ack: t.mac(&key, ACK, Some(payer_sequence)) }.to_wire()));
    }
    let (i, p) = pending_in(state, nonce)?;
    let key = key_for(state, p.transfer_key_id)?;
    let t = Transfer::incoming(&me, p);
    t.check(&key, TOKEN, Some(payer_sequence), token)?;
    let new_balance = state.balance.0.checked_add(p.amount.0).ok_or(StatusWord::ConditionsNotSatisfied)?;
    let mut next = state.clone();
    next.pending_in.remove(i);
    next.balance = Amount(new_balance);
    next.sequence = next_sequence(state)?;
    next.push_log(LogKind::Credit, p.payer, p.amount);
    next.push_settled(Settled {
        nonce: *nonce,
        payer: p.payer,
        amount: p.amount,
        payee_sequence: p.payee_sequence,
        payer_sequence,
        transfer_key_id: p.transfer_key_id,
        outcome: Outcome::Credited,
    });
    Ok(Effect::write(next, CreditAck { ack: t.mac(&key, ACK, Some(payer_sequence)) }.to_wire()))
}

/// Step 4 (payer): the payee's acknowledgement closes the pending debit.
pub(super) fn confirm(state: &CardState, nonce: &Nonce, ack: &Mac) -> Result<Effect, StatusWord> {
    let me = serial(state)?;
    let (i, p) = pending_out(state, nonce)?;
    let key = key_for(state, p.transfer_key_id)?;
    let t = Transfer::outgoing(&me, p);
    t.check(&key, ACK, Some(p.payer_sequence), ack)?;
    let mut next = state.clone();
    next.pending_out.remove(i);
    next.prune_retained_keys();
    Ok(Effect::write(next, Vec::new()))
}

/// Recovery (payee): promise never to credit `nonce` and prove it. Repeating it repeats the proof;
/// a nonce already credited cannot be aborted.
pub(super) fn abort(state: &CardState, nonce: &Nonce) -> Result<Effect, StatusWord> {
    let me = serial(state)?;
    if let Some(s) = state.settled.iter().find(|s| &s.nonce == nonce) {
        if s.outcome == Outcome::Credited {
            return Err(StatusWord::ConditionsNotSatisfied);
        }
        let key = key_for(state, s.transfer_key_id)?;
        let t = Transfer::settled(&me, s);
        return Ok(Effect::reply(AbortProof { proof: t.mac(&key, ABORT, None) }.to_wire()));
    }
    let (i, p) = pending_in(state, nonce)?;
    let key = key_for(state, p.transfer_key_id)?;
    let t = Transfer::incoming(&me, p);
    let proof = t.mac(&key, ABORT, None);
    let mut next = state.clone();
    next.pending_in.remove(i);
    next.push_settled(Settled {
        nonce: *nonce,
        payer: p.payer,
        amount: p.amount,
        payee_sequence: p.payee_sequence,
        payer_sequence: 0,
        transfer_key_id: p.transfer_key_id,
        outcome: Outcome::Aborted,
    });
    Ok(Effect::write(next, AbortProof { proof }.to_wire()))
}

/// Recovery (payer): an abort proof for a pending debit restores the amount.
pub(super) fn refund(state: &CardState, nonce: &Nonce, proof: &Mac) -> Result<Effect, StatusWord> {
    let me = serial(state)?;
    let (i, p) = pending_out(state, nonce)?;
    let key = key_for(state, p.transfer_key_id)?;
    let t = Transfer::outgoing(&me, p);
    t.check(&key, ABORT, None, proof)?;
    let mut next = state.clone();
    let p = next.pending_out.remove(i);
    next.balance = Amount(state.balance.0.checked_add(p.amount.0).ok_or(StatusWord::ConditionsNotSatisfied)?);
    next.push_log(LogKind::Refund, p.payee, p.amount);
    next.prune_retained_keys();
    Ok(Effect::write(next, Vec::new()))
}
