//! Recovery of interrupted transfers between the two cards present (DESIGN.md §3).
//!
//! Policy: an interrupted transfer is *undone*, not completed: the payee aborts (and proves it), the
//! payer refunds. The person re-running a failed settlement then pays again, once. Only when the payee
//! has already credited (it refuses ABORT) is the transfer completed: the payer repeats its DEBIT
//! (idempotent: same token, no second debit), the payee repeats its CREDIT (idempotent: same
//! acknowledgement), the payer confirms. Entries with cards not present stay in the exception logs.

use super::{Party, SettleError};
use crate::domain::{Amount, CardSerial};
use crate::protocol::StatusWord;
use crate::protocol::command::{Command, ReceiptRef};
use crate::protocol::response::{AbortProof, CreditAck, DebitToken};
use crate::transport::Trace;
use serde::Serialize;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Recovery {
    /// The payee promised never to credit; the payer got its value back.
    Refunded { payer: CardSerial, payee: CardSerial, amount: Amount },
    /// The payee had credited; the payer's pending debit was confirmed.
    Completed { payer: CardSerial, payee: CardSerial, amount: Amount },
}

/// Resolve `payer`'s open debits to `payee` (pending or in its exception list). Open receipts need no
/// resolving: the payee keeps none.
pub(super) fn resolve(
    payer: &mut Party<'_>,
    payee: &mut Party<'_>,
    trace: &mut Trace,
) -> Result<Vec<Recovery>, SettleError> {
    let mut done = Vec::new();
    let (ps, qs) = (payer.info.serial, payee.info.serial);
    // Open debits, the exception list's too: with stateless receipts the payee can answer for any
    // receipt still in its window, however many there are.
    let outs: Vec<_> = payer.info.pending_out.iter().filter(|e| e.counterpart == qs).cloned().collect();
    for e in outs {
        let receipt =
            ReceiptRef { payer: ps, amount: e.amount, receipt: e.payee_sequence, transfer_key_id: e.transfer_key_id };
        let r = payee.try_send(trace, "ABORT", &Command::Abort { receipt })?;
        match r.sw {
            StatusWord::Ok => {
                let AbortProof { proof } = payee.decode("ABORT", &r.data, ())?;
                payer.send(trace, "REFUND", &Command::Refund { nonce: e.nonce, proof })?;
                done.push(Recovery::Refunded { payer: ps, payee: qs, amount: e.amount });
            }
            StatusWord::ConditionsNotSatisfied => {
                // A repeat: the payer finds the pending nonce and answers the same token; no request MAC needed.
                let debit = Command::Debit {
                    payee: qs,
                    amount: e.amount,
                    nonce: e.nonce,
                    payee_sequence: e.payee_sequence,
                    request: [0; 16],
                };
                let DebitToken { payer_sequence, token, signature } =
                    payer.send_as(trace, "DEBIT (repeat)", &debit, ())?;
                let step = "CREDIT (repeat)";
                let r =
                    super::value::send_credit(payer, payee, trace, step, receipt, payer_sequence, token, signature)?;
                if r.sw != StatusWord::Ok {
                    return Err(SettleError::Refused { role: payee.role, step, sw: r.sw });
                }
                let CreditAck { ack } = payee.decode(step, &r.data, ())?;
                payer.send(trace, "CONFIRM", &Command::Confirm { nonce: e.nonce, ack })?;
                done.push(Recovery::Completed { payer: ps, payee: qs, amount: e.amount });
            }
            // The receipt left the payee's window (6A88): no card can prove it either way any more;
            // `reconcile` names the issuer as its resolver.
            _ => {}
        }
    }
    Ok(done)
}
