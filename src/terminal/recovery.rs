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
use crate::protocol::command::Command;
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
    /// A receipt the payer never debited was closed at the payee.
    ClosedReceipt { payer: CardSerial, payee: CardSerial, amount: Amount },
}

/// Resolve `payer`'s pending debits to `payee` and `payee`'s open receipts from `payer`.
pub(super) fn resolve(
    payer: &mut Party<'_>,
    payee: &mut Party<'_>,
    trace: &mut Trace,
) -> Result<Vec<Recovery>, SettleError> {
    let mut done = Vec::new();
    let (ps, qs) = (payer.info.serial, payee.info.serial);
    let outs: Vec<_> = payer.info.pending_out.iter().filter(|e| e.counterpart == qs).cloned().collect();
    for e in outs {
        let r = payee.try_send(trace, "ABORT", &Command::Abort { nonce: e.nonce })?;
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
                let DebitToken { payer_sequence, token } = payer.send_as(trace, "DEBIT (repeat)", &debit, ())?;
                let credit = Command::Credit { nonce: e.nonce, payer_sequence, token };
                let CreditAck { ack } = payee.send_as(trace, "CREDIT (repeat)", &credit, ())?;
                payer.send(trace, "CONFIRM", &Command::Confirm { nonce: e.nonce, ack })?;
                done.push(Recovery::Completed { payer: ps, payee: qs, amount: e.amount });
            }
            // The payee no longer remembers the nonce: only the back office can reconcile it.
            _ => {}
        }
    }
    let ins: Vec<_> = payee.info.pending_in.iter().filter(|e| e.counterpart == ps).cloned().collect();
    for e in ins {
        if payer.info.pending_out.iter().any(|o| o.nonce == e.nonce) {
            continue; // handled above
        }
        payee.send(trace, "ABORT", &Command::Abort { nonce: e.nonce })?;
        done.push(Recovery::ClosedReceipt { payer: ps, payee: qs, amount: e.amount });
    }
    Ok(done)
}
