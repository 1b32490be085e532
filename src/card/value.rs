//! Value transfer between two cards of the same transfer key generation (DESIGN.md §3; the seed's
//! "updates the value data by performing encryption using the transfer key", claims 1, 3, 5, 8).
//!
//! Mondex-style: BEGIN RECEIVE (payee) → DEBIT (payer) → CREDIT (payee) → CONFIRM (payer), with
//! ABORT/REFUND and idempotent CREDIT and DEBIT for recovery. Every message is a CMAC under a key
//! derived from the shared transfer key, binding both serials, the amount, the payee's nonce and both
//! sequence numbers, so value can only move between cards holding the same transfer key (DESIGN.md §6
//! property 9). Sequence numbers and logs are written in the same atomic record as the balance they guard.
//!
//! Receipts are stateless (DESIGN.md §10 point 6, `receipts`): the payee's nonce for receipt `s` is a
//! PRF of its receipt secret, and the payee keeps only credited/aborted bitmaps over a window, so no
//! number of BEGIN RECEIVE or ABORT commands fills anything or evicts a proof. The payer's open debits
//! are bounded; when DEBIT needs room, the oldest moves to the non-blocking exception list, where it
//! stays resolvable (CONFIRM, REFUND) and is counted as value in flight.

use super::Effect;
use super::receipts::{self, Slot};
use super::session::{KeyObject, Session};
use super::state::{CardState, LogKind, PendingOut};
use crate::crypto::card_key::CardKeyPair;
use crate::crypto::ec::PublicKey;
use crate::crypto::{Secret16, TransferKey, mac, random};
use crate::domain::{Amount, CardSerial, TransferKeyId};
use crate::protocol::StatusWord;
use crate::protocol::codec::Wire;
use crate::protocol::command::{Mac, Nonce, ReceiptRef};
use crate::protocol::info::{MAX_EXCEPTIONS, MAX_PENDING};
use crate::protocol::response::{AbortProof, CreditAck, DebitToken, ReceiveRequest};

const REQUEST: &[u8] = b"keyroll value request v2";
const TOKEN: &[u8] = b"keyroll value token v2";
const ACK: &[u8] = b"keyroll value ack v2";
const ABORT: &[u8] = b"keyroll value abort v2";
/// Label of a certified payer's value signature (ECDSA P-256 / SHA-256, P1363) over the token's fields:
/// `label ‖ payer ‖ payee ‖ amount ‖ nonce ‖ payee sequence ‖ payer sequence ‖ transfer key id`.
pub const VALUE_SIGNATURE_LABEL: &[u8] = b"keyroll value signature v2";

struct Transfer<'a> {
    payer: &'a CardSerial,
    payee: &'a CardSerial,
    amount: Amount,
    nonce: &'a Nonce,
    payee_sequence: u32,
    transfer_key_id: TransferKeyId,
}

impl<'a> Transfer<'a> {
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

    /// The payee's view of a receipt it handed out (CREDIT and ABORT bind the same fields).
    fn incoming(me: &'a CardSerial, r: &'a ReceiptRef, nonce: &'a Nonce) -> Self {
        Transfer {
            payer: &r.payer,
            payee: me,
            amount: r.amount,
            nonce,
            payee_sequence: r.receipt,
            transfer_key_id: r.transfer_key_id,
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

    /// A certified payer's signature over the token's fields (DESIGN.md §10 point 6): one certified card
    /// holding the generation's transfer key can make the MAC, never another card's signature.
    fn sign(&self, key: &CardKeyPair, payer_sequence: u32) -> Result<[u8; 64], StatusWord> {
        let (amount, seqs, id) = self.fields(Some(payer_sequence));
        let parts = self.parts(VALUE_SIGNATURE_LABEL, &amount, &seqs, &id);
        key.key_pair().sign(&parts).map(|s| s.to_p1363()).map_err(|_| StatusWord::NoPreciseDiagnosis)
    }

    /// Check a payer's value signature under its certified public key.
    fn check_signature(&self, public: &PublicKey, payer_sequence: u32, signature: &[u8; 64]) -> Result<(), StatusWord> {
        let (amount, seqs, id) = self.fields(Some(payer_sequence));
        public
            .verify_p1363(&self.parts(VALUE_SIGNATURE_LABEL, &amount, &seqs, &id), signature)
            .map_err(|_| StatusWord::SecurityStatusNotSatisfied)
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

/// The open debit for `nonce` (pending or parked in the exception list), 6A88 if there is none.
fn open_debit<'s>(state: &'s CardState, nonce: &Nonce) -> Result<&'s PendingOut, StatusWord> {
    state
        .pending_out
        .iter()
        .chain(&state.exceptions)
        .find(|p| &p.nonce == nonce)
        .ok_or(StatusWord::ReferencedDataNotFound)
}

/// Remove the open debit for `nonce` from whichever list holds it.
fn take_debit(next: &mut CardState, nonce: &Nonce) -> Option<PendingOut> {
    if let Some(i) = next.pending_out.iter().position(|p| &p.nonce == nonce) {
        return Some(next.pending_out.remove(i));
    }
    let i = next.exceptions.iter().position(|p| &p.nonce == nonce)?;
    Some(next.exceptions.remove(i))
}

/// A certified card: it holds a card key pair, its certificate and a trust anchor (public-key and hybrid
/// profiles). It signs the value it pays and takes value only with a certified payer's signature.
fn certified(state: &CardState) -> bool {
    state.card_private_key.is_some() && state.certificate.is_some() && state.trust_anchor.is_some()
}

/// The card's own key pair when it is certified (it then signs every token it hands out), from its
/// key object ([`KeyObject`]).
fn signing_key<'k>(state: &CardState, keys: &'k mut KeyObject) -> Result<Option<&'k CardKeyPair>, StatusWord> {
    if !certified(state) {
        return Ok(None);
    }
    let k = state.card_private_key.as_ref().ok_or(StatusWord::ConditionsNotSatisfied)?;
    keys.key_pair(k).map(Some)
}

/// A certified payee's check of the payer's signature (DESIGN.md §10 point 6): the certificate chains
/// to the payee's trust anchor at the payee's clock floor, is a signing end-entity certificate naming
/// exactly the payer of the receipt (`certificate::check`, RFC 5280 §6.1), and the signature over the
/// token's fields verifies under its key. Unsigned value, or any failure: 6982. A card that is not
/// certified cannot judge a certificate and ignores the signature (what symmetric cards cannot prevent).
fn check_payer_signature(
    state: &CardState,
    session: &mut Session,
    keys: &mut KeyObject,
    t: &Transfer<'_>,
    payer_sequence: u32,
    signed: Option<(&[u8; 64], &[u8])>,
) -> Result<(), StatusWord> {
    if !certified(state) {
        return Ok(());
    }
    let (signature, certificate) = signed.ok_or(StatusWord::SecurityStatusNotSatisfied)?;
    let peer = super::certificate::check_peer(
        state,
        session,
        keys.anchor(),
        certificate,
        &[super::certificate::Usage::Signing],
    )?;
    if &peer.serial != t.payer {
        return Err(StatusWord::SecurityStatusNotSatisfied);
    }
    t.check_signature(&peer.key, payer_sequence, signature)
}

fn next_sequence(state: &CardState) -> Result<u32, StatusWord> {
    // An exhausted counter ends the card's life rather than wrapping (a wrap would reopen old nonces).
    state.sequence.checked_add(1).ok_or(StatusWord::ConditionsNotSatisfied)
}

/// The payee's view of a receipt the terminal names: the nonce re-derived from the receipt secret.
fn receipt_nonce(state: &CardState, me: &CardSerial, s: u32) -> Result<Nonce, StatusWord> {
    let secret = state.receipt_secret.as_ref().ok_or(StatusWord::ReferencedDataNotFound)?;
    Ok(receipts::receipt_nonce(secret, me, s))
}

/// The receipt's slot as a status: only an open slot may be credited or aborted.
fn slot_status(slot: Slot) -> StatusWord {
    match slot {
        Slot::Open => StatusWord::Ok,
        Slot::Credited | Slot::Aborted => StatusWord::ConditionsNotSatisfied,
        Slot::Expired | Slot::NotIssued => StatusWord::ReferencedDataNotFound,
    }
}

/// Step 1 (payee): hand out receipt sequence `s` for a transfer from `payer` at its sequence number
/// `payer_sequence`. Returns `nonce ‖ s ‖ transfer key id ‖ request MAC`; the request MAC is what lets
/// the payer know a real payee of its generation asked (no terminal can make a card debit itself toward
/// a receipt that does not exist). Nothing is reserved: the counter advances and the new number's slot
/// is cleared, that is all (a flood costs counter values, never room, and the balance maximum is checked
/// at CREDIT). The early maximum check here only saves an honest terminal a doomed debit.
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
    // DESIGN.md §10 point 4: no value from a blocked card, nor into a card whose generation is over.
    if state.blocks(payer) || state.generation_over() {
        return Err(StatusWord::CounterpartBlocked);
    }
    let key_id = state.selected_transfer_key_id.ok_or(StatusWord::ConditionsNotSatisfied)?;
    if state.balance.0 as u128 + amount.0 as u128 > state.max_balance.0 as u128 {
        return Err(StatusWord::ConditionsNotSatisfied);
    }
    let key = key_for(state, key_id)?;
    let mut next = state.clone();
    if next.receipt_secret.is_none() {
        let b: [u8; 16] = random::bytes().map_err(|_| StatusWord::NoPreciseDiagnosis)?;
        next.receipt_secret = Some(Secret16::new(b));
    }
    let (window, s) = state.receipts.open().map_err(|_| StatusWord::ConditionsNotSatisfied)?;
    next.receipts = window;
    let nonce = receipt_nonce(&next, &me, s)?;
    let t = Transfer { payer: &payer, payee: &me, amount, nonce: &nonce, payee_sequence: s, transfer_key_id: key_id };
    let out = ReceiveRequest {
        nonce,
        payee_sequence: s,
        transfer_key_id: key_id,
        request: t.mac(&key, REQUEST, Some(payer_sequence)),
    };
    Ok(Effect::write(next, out.to_wire()))
}

/// Step 2 (payer): check the payee's request, debit and return `payer sequence ‖ token`. Repeating a
/// DEBIT for an open nonce with the same parameters returns the same token without a second debit
/// and without needing the request again (recovery in a later session has only the card's log).
pub(super) fn debit(
    state: &CardState,
    keys: &mut KeyObject,
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
    if let Ok(p) = open_debit(state, nonce) {
        if p.payee != payee || p.amount != amount || p.payee_sequence != payee_sequence {
            return Err(StatusWord::IncorrectData);
        }
        let key = key_for(state, p.transfer_key_id)?;
        let t = Transfer::outgoing(&me, p);
        let signature = signing_key(state, keys)?.map(|k| t.sign(k, p.payer_sequence)).transpose()?;
        let out = DebitToken {
            payer_sequence: p.payer_sequence,
            token: t.mac(&key, TOKEN, Some(p.payer_sequence)),
            signature,
        };
        return Ok(Effect::reply(out.to_wire()));
    }
    // DESIGN.md §10 point 4: no new value to a blocked card, nor out of a card whose generation is over
    // (a repeat of a debit already made, above, still answers, so value in flight stays recoverable).
    if state.blocks(payee) || state.generation_over() {
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
    // Signed before anything is written: a card that cannot sign changes nothing.
    let signing = signing_key(state, keys)?;
    let mut next = state.clone();
    if next.pending_out.len() >= MAX_PENDING {
        // Non-blocking: the oldest open debit moves to the exception list (still resolvable there).
        if next.exceptions.len() >= MAX_EXCEPTIONS {
            return Err(StatusWord::NotEnoughMemory);
        }
        let oldest = next.pending_out.remove(0);
        next.push_log(LogKind::Exception, oldest.payee, oldest.amount, oldest.payee_sequence);
        next.exceptions.push(oldest);
    }
    next.sequence = next_sequence(state)?;
    next.balance = Amount(state.balance.0 - amount.0);
    next.totals.debited = next.totals.debited.saturating_add(amount.0);
    next.pending_out.push(PendingOut {
        nonce: *nonce,
        payee,
        amount,
        payee_sequence,
        payer_sequence: next.sequence,
        transfer_key_id: key.id,
    });
    next.push_log(LogKind::Debit, payee, amount, payee_sequence);
    let signature = signing.map(|k| t.sign(k, next.sequence)).transpose()?;
    let out = DebitToken { payer_sequence: next.sequence, token: t.mac(&key, TOKEN, Some(next.sequence)), signature };
    Ok(Effect::write(next, out.to_wire()))
}

/// Step 3 (payee): check the token against the receipt it names, credit once, return the
/// acknowledgement. A repeated CREDIT of a credited receipt re-derives the same acknowledgement from
/// the token and the credited bit and credits nothing. The maximum balance is checked here, the only
/// place a receipt takes room. A certified payee also requires the payer's value signature and
/// certificate (`signed`, CREDIT P1 = 01), checked after the token and before anything else.
pub(super) fn credit(
    state: &CardState,
    session: &mut Session,
    keys: &mut KeyObject,
    r: &ReceiptRef,
    payer_sequence: u32,
    token: &Mac,
    signed: Option<(&[u8; 64], &[u8])>,
) -> Result<Effect, StatusWord> {
    let me = serial(state)?;
    if r.payer == me || r.amount.0 == 0 {
        return Err(StatusWord::IncorrectData);
    }
    let nonce = receipt_nonce(state, &me, r.receipt)?;
    let key = key_for(state, r.transfer_key_id)?;
    let t = Transfer::incoming(&me, r, &nonce);
    t.check(&key, TOKEN, Some(payer_sequence), token)?;
    check_payer_signature(state, session, keys, &t, payer_sequence, signed)?;
    let ack = CreditAck { ack: t.mac(&key, ACK, Some(payer_sequence)) }.to_wire();
    match state.receipts.slot(r.receipt) {
        Slot::Credited => return Ok(Effect::reply(ack)),
        Slot::Open => {}
        other => return Err(slot_status(other)),
    }
    let new_balance = state.balance.0.checked_add(r.amount.0).ok_or(StatusWord::ConditionsNotSatisfied)?;
    if new_balance > state.max_balance.0 {
        return Err(StatusWord::ConditionsNotSatisfied);
    }
    let mut next = state.clone();
    next.receipts = state.receipts.credit(r.receipt).map_err(|_| StatusWord::ConditionsNotSatisfied)?;
    next.balance = Amount(new_balance);
    next.totals.credited = next.totals.credited.saturating_add(r.amount.0);
    next.sequence = next_sequence(state)?;
    next.push_log(LogKind::Credit, r.payer, r.amount, r.receipt);
    Ok(Effect::write(next, ack))
}

/// Step 4 (payer): the payee's acknowledgement closes the open debit (pending or parked).
pub(super) fn confirm(state: &CardState, nonce: &Nonce, ack: &Mac) -> Result<Effect, StatusWord> {
    let me = serial(state)?;
    let p = open_debit(state, nonce)?;
    let key = key_for(state, p.transfer_key_id)?;
    let t = Transfer::outgoing(&me, p);
    t.check(&key, ACK, Some(p.payer_sequence), ack)?;
    let mut next = state.clone();
    take_debit(&mut next, nonce);
    next.prune_retained_keys();
    Ok(Effect::write(next, Vec::new()))
}

/// Recovery (payee): promise never to credit the named receipt and prove it. Any terminal may abort
/// any open receipt in the window (an honest transfer so aborted is refunded, never lost); repeating it
/// repeats the proof; a credited receipt cannot be aborted; outside the window nothing can be proved.
pub(super) fn abort(state: &CardState, r: &ReceiptRef) -> Result<Effect, StatusWord> {
    let me = serial(state)?;
    let nonce = receipt_nonce(state, &me, r.receipt)?;
    let key = key_for(state, r.transfer_key_id)?;
    let t = Transfer::incoming(&me, r, &nonce);
    let proof = AbortProof { proof: t.mac(&key, ABORT, None) }.to_wire();
    match state.receipts.slot(r.receipt) {
        Slot::Aborted => Ok(Effect::reply(proof)),
        Slot::Open => {
            let mut next = state.clone();
            next.receipts = state.receipts.abort(r.receipt).map_err(|_| StatusWord::ConditionsNotSatisfied)?;
            Ok(Effect::write(next, proof))
        }
        other => Err(slot_status(other)),
    }
}

/// Recovery (payer): an abort proof for an open debit restores the amount.
pub(super) fn refund(state: &CardState, nonce: &Nonce, proof: &Mac) -> Result<Effect, StatusWord> {
    let me = serial(state)?;
    let p = open_debit(state, nonce)?;
    let key = key_for(state, p.transfer_key_id)?;
    let t = Transfer::outgoing(&me, p);
    t.check(&key, ABORT, None, proof)?;
    let mut next = state.clone();
    let p = take_debit(&mut next, nonce).ok_or(StatusWord::ReferencedDataNotFound)?;
    next.balance = Amount(state.balance.0.checked_add(p.amount.0).ok_or(StatusWord::ConditionsNotSatisfied)?);
    next.totals.refunded = next.totals.refunded.saturating_add(p.amount.0);
    next.push_log(LogKind::Refund, p.payee, p.amount, p.payee_sequence);
    next.prune_retained_keys();
    Ok(Effect::write(next, Vec::new()))
}

/// Issuer resolutions (DESIGN.md §10 point 6), applied by PUT POLICY to the state it is about to write,
/// after the policy carrying them verified. A resolution acts on this card's open debit (pending or in
/// the exception list) with exactly its payer sequence, payee, receipt and amount: `Refund` gives the
/// amount back, `Credited` closes the debit, `Void` leaves it open (only the payee acts). Each is logged and counted like the card's own REFUND, so
/// the export's totals keep adding up. A resolution whose debit is not open (already applied, resolved
/// by the cards, or disagreeing with the card's record) does nothing: the payer sequence is never
/// reused, so a replayed or later policy that still carries a resolution never acts twice.
pub(super) fn apply_resolutions(next: &mut CardState, policy: &crate::protocol::policy::Policy) {
    use crate::protocol::policy::ResolutionOutcome;
    let Some(me) = next.serial else { return };
    // The payee's side (issue 13, session 5): a refund (or a void) names a receipt of this card that must
    // never be credited, since the payer gets (or may get) the amount back. A receipt still open in the
    // window is closed for good, exactly as ABORT closes it (a later CREDIT of the old token answers
    // 6985; a repeated ABORT still answers the proof), and logged as an abort so the card's export shows
    // it. A receipt already credited stays credited: the resolution was wrong and `reconcile` shows the
    // value created; one aborted, expired or never handed out needs nothing.
    for r in policy.receipts_closed_at(me) {
        if next.receipts.slot(r.receipt) == Slot::Open
            && let Ok(window) = next.receipts.abort(r.receipt)
        {
            next.receipts = window;
            next.push_log(LogKind::Abort, r.payer, r.amount, r.receipt);
        }
    }
    let mut applied = false;
    for r in policy.resolutions_for(me) {
        let matches = |p: &PendingOut| {
            p.payer_sequence == r.payer_sequence
                && p.payee == r.payee
                && p.payee_sequence == r.receipt
                && p.amount == r.amount
        };
        let Some(nonce) = next.pending_out.iter().chain(&next.exceptions).find(|p| matches(p)).map(|p| p.nonce) else {
            continue;
        };
        match r.outcome {
            ResolutionOutcome::Refund => {
                // A balance that cannot take the amount back (only above 2^64 units) keeps the debit open.
                let Some(balance) = next.balance.0.checked_add(r.amount.0) else { continue };
                take_debit(next, &nonce);
                next.balance = Amount(balance);
                next.totals.refunded = next.totals.refunded.saturating_add(r.amount.0);
                next.push_log(LogKind::Resolved, r.payee, r.amount, r.receipt);
            }
            ResolutionOutcome::Credited => {
                take_debit(next, &nonce);
                next.push_log(LogKind::Closed, r.payee, r.amount, r.receipt);
            }
            // The payer waits for the refund the issuer signs once the payee closed the receipt.
            ResolutionOutcome::Void => continue,
        }
        applied = true;
    }
    if applied {
        next.prune_retained_keys();
    }
}
