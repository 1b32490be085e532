//! Freshness (DESIGN.md §6 property 5): record every APDU of a settlement with a key roll and replay
//! each to every card in every state it passed through. Commands that carry authority (UPDATE TRANSFER
//! KEY, DEBIT, CREDIT, CONFIRM, ABORT, REFUND) are refused or are idempotent repeats; none changes the
//! persisted state. (BEGIN RECEIVE carries no authority by design — any terminal may open a receipt — so
//! it is checked only for not moving value.)

use crate::support::*;
use keyroll::card::Card;
use keyroll::card::storage::{MemoryStorage, Storage, TearingStorage};
use keyroll::domain::*;
use keyroll::protocol::instruction::Instruction;
use keyroll::protocol::{CommandApdu, SmartCard};
use keyroll::terminal::{SettleOptions, settle};
use keyroll::transport::{CardChannel, TransportError};
use std::cell::RefCell;

/// Records, in one global order, every APDU sent and each card's persisted state after it.
struct Recorder<'a> {
    card: &'a mut TestCard,
    log: &'a RefCell<Vec<Vec<u8>>>,
    states: &'a RefCell<Vec<(usize, Vec<u8>)>>,
}

impl CardChannel for Recorder<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let at = {
            let mut log = self.log.borrow_mut();
            log.push(apdu.to_vec());
            log.len() - 1
        };
        let r = self.card.process(apdu).map_err(|_| TransportError::PowerLost);
        self.states.borrow_mut().push((at, persisted(self.card)));
        r
    }
    fn name(&self) -> String {
        "recorder".into()
    }
}

fn fresh(record: &[u8]) -> TestCard {
    let mut s = MemoryStorage::new();
    s.store(record).unwrap();
    Card::open(TearingStorage::new(s)).unwrap()
}

/// Replays go to every state either card reached at or after the APDU's own delivery (replaying a
/// command to a card state that never received it is delivery, not replay). UPDATE TRANSFER KEY goes
/// to every state, before or after, and must always be refused.
#[test]
fn replaying_any_recorded_apdu_to_any_card_state_changes_nothing() {
    let mut a = card(1, Profile::Symmetric, 1, 1, 5, 100);
    let mut b = card(2, Profile::Symmetric, 2, 1, 5, 100);
    let log = RefCell::new(Vec::new());
    let states = RefCell::new(vec![(0usize, persisted(&a)), (0, persisted(&b))]);
    {
        let mut ra = Recorder { card: &mut a, log: &log, states: &states };
        let mut rb = Recorder { card: &mut b, log: &log, states: &states };
        let r = settle(&mut ra, &mut rb, Amount(30), &SettleOptions::default()).unwrap();
        assert_eq!(r.amount, Amount(30));
        assert_eq!(r.updated_card, Some(keyroll::terminal::Role::Payer));
    }
    let (log, states) = (log.into_inner(), states.into_inner());
    let guarded = [
        Instruction::UpdateTransferKey,
        Instruction::Debit,
        Instruction::Credit,
        Instruction::Confirm,
        Instruction::Abort,
        Instruction::Refund,
    ];
    let mut checked = 0;
    for (i, apdu) in log.iter().enumerate() {
        let cmd = CommandApdu::parse(apdu).unwrap();
        let Some(ins) = Instruction::from_code(cmd.cla & !0x10, cmd.ins) else {
            continue;
        };
        for (at, state) in &states {
            if *at < i && ins != Instruction::UpdateTransferKey {
                continue;
            }
            let mut c = fresh(state);
            select(&mut c);
            // Give the card a live challenge of its own, so a replayed UPDATE meets the worst case.
            raw(&mut c, &[0x80, 0x20, 0x00, 0x00, 0x00]);
            let before = persisted(&c);
            let balance = c.state().balance;
            let r = c.process(apdu).unwrap();
            let sw = u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]]);
            if guarded.contains(&ins) {
                assert_eq!(persisted(&c), before, "replayed {ins:?} (SW {sw:04X}) changed a card");
                checked += 1;
            }
            if ins == Instruction::UpdateTransferKey {
                assert_ne!(sw, 0x9000, "replayed key update accepted");
            }
            assert!(c.state().balance <= balance, "replayed {ins:?} created value");
        }
    }
    assert!(checked > 15, "only {checked} guarded replays checked");
}

#[test]
fn a_debit_without_the_payees_request_is_refused() {
    use keyroll::protocol::command::Command;
    let mut a = card(1, Profile::Symmetric, 1, 1, 5, 100);
    select(&mut a);
    let before = persisted(&a);
    let forged = Command::Debit {
        payee: CardSerial::from_u64(2),
        amount: Amount(50),
        nonce: [1; 16],
        payee_sequence: 1,
        request: [0; 16],
    };
    assert_eq!(raw(&mut a, &forged.to_apdu().to_bytes()), 0x6300);
    assert_eq!(persisted(&a), before);
}
