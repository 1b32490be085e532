//! Policy spread (DESIGN.md §10 point 4): before keys or value move, the card with the older scheme
//! policy gets the newer one, from the other card or from the terminal's own `--policy` file when that
//! is newer than both. The terminal holds no revocation logic of its own: it relays, and each card
//! verifies the signature before any persistent write and adopts atomically (PUT POLICY). The terminal
//! decodes a policy only to learn its number and wrap floor; it never decides on a block.

use super::{Party, Role, SettleError};
use crate::domain::UpdateKeyId;
use crate::protocol::codec::Wire;
use crate::protocol::command::Command;
use crate::protocol::policy::Policy;
use crate::protocol::response::{HeldPolicy, PolicyAdoption};
use crate::transport::Trace;
use serde::Serialize;

/// Which card(s) took a newer policy in this settlement (`settle --json` field `policy_spread`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicySpread {
    Payer,
    Payee,
    Both,
}

fn give(p: &mut Party<'_>, policy: &[u8], trace: &mut Trace) -> Result<bool, SettleError> {
    let r: PolicyAdoption = p.send_as(trace, "PUT POLICY", &Command::PutPolicy { policy: policy.to_vec() }, ())?;
    if let Ok(decoded) = Policy::from_wire(policy, ())
        && r.adopted
    {
        p.info.policy_number = r.number;
        p.info.min_wrap_update_key_id = decoded.min_wrap_update_key_id;
    }
    Ok(r.adopted)
}

/// Bring both cards to the newest policy among theirs and `file`. Returns who took one.
pub(super) fn spread<'c>(
    a: &mut Party<'c>,
    b: &mut Party<'c>,
    file: Option<&Policy>,
    trace: &mut Trace,
) -> Result<Option<PolicySpread>, SettleError> {
    let (na, nb) = (a.info.policy_number, b.info.policy_number);
    let nf = file.map_or(0, |p| p.number);
    let (mut to_a, mut to_b) = (false, false);
    if nf > na.max(nb) {
        let bytes = file.expect("nf > 0").to_wire();
        to_a = give(a, &bytes, trace)?;
        to_b = give(b, &bytes, trace)?;
    } else if na != nb {
        let (newer, older) = if na > nb { (&mut *a, &mut *b) } else { (&mut *b, &mut *a) };
        let HeldPolicy(bytes) = newer.send_as(trace, "GET POLICY", &Command::GetPolicy, ())?;
        let took = give(older, &bytes, trace)?;
        if older.role == Role::Payer { to_a = took } else { to_b = took }
    }
    Ok(match (to_a, to_b) {
        (true, true) => Some(PolicySpread::Both),
        (true, false) => Some(if a.role == Role::Payer { PolicySpread::Payer } else { PolicySpread::Payee }),
        (false, true) => Some(if b.role == Role::Payer { PolicySpread::Payer } else { PolicySpread::Payee }),
        (false, false) => None,
    })
}

/// The wrap floor both cards agree on after the spread: the higher of the two.
pub(super) fn min_wrap(a: &Party<'_>, b: &Party<'_>) -> UpdateKeyId {
    a.info.min_wrap_update_key_id.max(b.info.min_wrap_update_key_id)
}
