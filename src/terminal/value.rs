//! Value transfer as the terminal relays it (DESIGN.md §3): BEGIN RECEIVE → DEBIT → CREDIT → CONFIRM,
//! only between cards holding the same transfer key identifier (DESIGN.md §6 property 9). If a step
//! fails with an error status after the debit, the terminal aborts at the payee and refunds the
//! payer at once; if a card stops answering, the entries stay in both cards' exception logs and the
//! next settlement between the two cards resolves them (see `recovery`).

use super::{Party, SettleError};
use crate::domain::Amount;
use crate::protocol::StatusWord;
use crate::protocol::command::{Command, Mac, Nonce, ReceiptRef};
use crate::protocol::response::{AbortProof, CreditAck, DebitToken, ReceiveRequest};
use crate::transport::Trace;

/// What the terminal saw of one transfer, for the settlement journal: the receipt, and the MACs relayed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferRecord {
    pub receipt: u32,
    pub nonce: Nonce,
    /// The payer answered DEBIT (or may have: a transport error during DEBIT).
    pub debited: bool,
    pub credited: bool,
    pub refunded: bool,
    pub payer_sequence: Option<u32>,
    pub token: Option<Mac>,
    pub ack: Option<Mac>,
    pub proof: Option<Mac>,
    /// The transfer key id the token is made under, once BEGIN RECEIVE answered.
    pub transfer_key_id: Option<crate::domain::TransferKeyId>,
    /// A certified payer's value signature, as DEBIT answered it (journal line version 2).
    pub signature: Option<[u8; 64]>,
}

/// CREDIT for a token: signed, with the payer's certificate, when the payer signed and the payee holds a
/// certificate (a certified payee takes no unsigned value, DESIGN.md §10 point 6), as one extended-length
/// APDU (a command chain where the reader or card takes no extended length); the plain form otherwise.
/// The caller interprets the status word.
#[allow(clippy::too_many_arguments)]
pub(super) fn send_credit(
    payer: &mut Party<'_>,
    payee: &mut Party<'_>,
    trace: &mut Trace,
    step: &'static str,
    receipt: ReceiptRef,
    payer_sequence: u32,
    token: Mac,
    signature: Option<[u8; 64]>,
) -> Result<crate::protocol::apdu::ResponseApdu, SettleError> {
    match signature {
        Some(signature) if payee.info.has_certificate => {
            let certificate = payer
                .certificate(trace)?
                .ok_or_else(|| payer.malformed("DEBIT", "a signed token from a card that reports no certificate"))?;
            let cmd = Command::CreditSigned { receipt, payer_sequence, token, signature, certificate };
            // One extended APDU; a reader (or card) without extended length gets the same command as an
            // ISO/IEC 7816-4 command chain (CLA b5 set on all but the last 255-byte segment, §5.4.1). If
            // the extended APDU did reach the card, the repeat is answered from the credited bit with the
            // same acknowledgement (CREDIT is idempotent): nothing is credited twice.
            payee.try_send_one(trace, step, &cmd, &cmd.to_apdu())
        }
        _ => payee.try_send(trace, step, &Command::Credit { receipt, payer_sequence, token }),
    }
}

pub(super) fn transfer(
    payer: &mut Party<'_>,
    payee: &mut Party<'_>,
    amount: Amount,
    trace: &mut Trace,
    record: &mut Option<TransferRecord>,
) -> Result<Amount, SettleError> {
    if payer.info.transfer_key_id != payee.info.transfer_key_id {
        // Key synchronisation runs first and fails if it cannot align the ids; never move value across.
        return Err(payer.malformed("GET CARD INFO", "transfer key ids still differ after synchronisation"));
    }
    if payer.info.balance < amount {
        return Err(SettleError::InsufficientBalance { balance: payer.info.balance, amount });
    }
    let r = payee.send(
        trace,
        "BEGIN RECEIVE",
        &Command::BeginReceive { payer: payer.info.serial, amount, payer_sequence: payer.info.sequence },
    );
    let r = match r {
        Err(SettleError::Refused { sw: StatusWord::ConditionsNotSatisfied, .. })
            // The payee checks its maximum against its balance (receipts reserve nothing, card/value.rs).
            if payee.info.balance.0 as u128 + amount.0 as u128 > payee.info.max_balance.0 as u128 =>
        {
            return Err(SettleError::MaximumBalance { balance: payee.info.balance, max: payee.info.max_balance, amount });
        }
        other => other?,
    };
    let ReceiveRequest { nonce, payee_sequence, transfer_key_id, request } = payee.decode("BEGIN RECEIVE", &r, ())?;
    let receipt = ReceiptRef { payer: payer.info.serial, amount, receipt: payee_sequence, transfer_key_id };
    *record = Some(TransferRecord {
        receipt: payee_sequence,
        nonce,
        transfer_key_id: Some(transfer_key_id),
        ..TransferRecord::default()
    });

    let debit = Command::Debit { payee: payee.info.serial, amount, nonce, payee_sequence, request };
    // A refused DEBIT leaves an open receipt at the payee: it costs the payee nothing (stateless
    // receipts), so it is not worth an ABORT.
    let token = payer.send(trace, "DEBIT", &debit);
    if token.is_err() {
        // Whether the payer debited is unknown after a transport error: the journal says torn.
        if let Some(r) = record.as_mut() {
            r.debited = !matches!(token, Err(SettleError::Refused { .. }));
        }
    }
    let token = token?;
    let DebitToken { payer_sequence, token, signature } = payer.decode("DEBIT", &token, ())?;
    if let Some(r) = record.as_mut() {
        r.debited = true;
        r.payer_sequence = Some(payer_sequence);
        r.token = Some(token);
        r.signature = signature;
    }

    let ack = match send_credit(payer, payee, trace, "CREDIT", receipt, payer_sequence, token, signature)? {
        r if r.sw == StatusWord::Ok => r.data,
        r => {
            // The payee refused the token: abort there and refund the payer now.
            if let Ok(AbortProof { proof }) = payee.send_as(trace, "ABORT", &Command::Abort { receipt }, ())
                && let Ok(r) = payer.try_send(trace, "REFUND", &Command::Refund { nonce, proof })
                && r.sw == StatusWord::Ok
                && let Some(rec) = record.as_mut()
            {
                rec.proof = Some(proof);
                rec.refunded = true;
            }
            return Err(SettleError::Refused { role: payee.role, step: "CREDIT", sw: r.sw });
        }
    };
    let CreditAck { ack } = payee.decode("CREDIT", &ack, ())?;
    if let Some(r) = record.as_mut() {
        r.credited = true;
        r.ack = Some(ack);
    }
    payer.send(trace, "CONFIRM", &Command::Confirm { nonce, ack })?;
    payer.info.balance = Amount(payer.info.balance.0 - amount.0);
    payee.info.balance = Amount(payee.info.balance.0 + amount.0);
    Ok(amount)
}
