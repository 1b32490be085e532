//! Value transfer as the terminal relays it (DESIGN.md §3): BEGIN RECEIVE → DEBIT → CREDIT → CONFIRM,
//! only between cards holding the same transfer key identifier (DESIGN.md §6 property 9). If a step
//! fails with an error status after the debit, the terminal aborts at the payee and refunds the
//! payer at once; if a card stops answering, the entries stay in both cards' exception logs and the
//! next settlement between the two cards resolves them (see `recovery`).

use super::{Party, SettleError};
use crate::domain::Amount;
use crate::protocol::StatusWord;
use crate::protocol::command::Command;
use crate::protocol::response::{AbortProof, CreditAck, DebitToken, ReceiveRequest};
use crate::transport::Trace;

pub(super) fn transfer(
    payer: &mut Party<'_>,
    payee: &mut Party<'_>,
    amount: Amount,
    trace: &mut Trace,
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
            // The card counts value in flight either way against its maximum (card/value.rs).
            if payee.info.pending_in.iter().chain(&payee.info.pending_out).map(|p| p.amount.0 as u128).sum::<u128>()
                + payee.info.balance.0 as u128
                + amount.0 as u128
                > payee.info.max_balance.0 as u128 =>
        {
            return Err(SettleError::MaximumBalance { balance: payee.info.balance, max: payee.info.max_balance, amount });
        }
        other => other?,
    };
    let ReceiveRequest { nonce, payee_sequence, request, .. } = payee.decode("BEGIN RECEIVE", &r, ())?;

    let debit = Command::Debit { payee: payee.info.serial, amount, nonce, payee_sequence, request };
    let token = match payer.send(trace, "DEBIT", &debit) {
        Ok(t) => t,
        Err(e @ SettleError::Refused { .. }) => {
            // Nothing was debited: close the payee's receipt so it does not linger.
            let _ = payee.try_send(trace, "ABORT", &Command::Abort { nonce });
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let DebitToken { payer_sequence, token } = payer.decode("DEBIT", &token, ())?;

    let ack = match payee.try_send(trace, "CREDIT", &Command::Credit { nonce, payer_sequence, token })? {
        r if r.sw == StatusWord::Ok => r.data,
        r => {
            // The payee refused the token: abort there and refund the payer now.
            if let Ok(AbortProof { proof }) = payee.send_as(trace, "ABORT", &Command::Abort { nonce }, ()) {
                let _ = payer.try_send(trace, "REFUND", &Command::Refund { nonce, proof });
            }
            return Err(SettleError::Refused { role: payee.role, step: "CREDIT", sw: r.sw });
        }
    };
    let CreditAck { ack } = payee.decode("CREDIT", &ack, ())?;
    payer.send(trace, "CONFIRM", &Command::Confirm { nonce, ack })?;
    payer.info.balance = Amount(payer.info.balance.0 - amount.0);
    payee.info.balance = Amount(payee.info.balance.0 + amount.0);
    Ok(amount)
}
