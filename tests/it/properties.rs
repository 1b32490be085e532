//! Property tests (DESIGN.md §6 properties 1–4, 8, 9): random schedules of settlements among five
//! cards of random key generations, with a random power cut at any write of either card.

use crate::support::*;
use keyroll::card::receipts::Slot;
use keyroll::card::storage::Tear;
use keyroll::domain::*;
use keyroll::protocol::SmartCard;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Step {
    payer: usize,
    payee: usize,
    amount: u64,
    /// (card: 0 payer / 1 payee, k-th write, tear mode)
    tear: Option<(bool, usize, bool)>,
}

fn step() -> impl Strategy<Value = Step> {
    (0..5usize, 0..5usize, 0..60u64, prop::option::of((any::<bool>(), 1..4usize, any::<bool>())))
        .prop_map(|(payer, payee, amount, tear)| Step { payer, payee, amount, tear })
}

fn cards(gens: &[(u32, u32, bool)]) -> Vec<TestCard> {
    gens.iter()
        .enumerate()
        .map(|(i, (tk, limit, multi))| {
            let profile = if *multi { Profile::MultiKey } else { Profile::Symmetric };
            let limit = (*limit).max(*tk);
            card(i as u64 + 1, profile, *tk, 1, limit, 100)
        })
        .collect()
}

/// Value a payer has debited that its payee has not credited.
fn in_flight(cards: &[TestCard]) -> u64 {
    let mut total = 0;
    for c in cards {
        for p in c.state().pending_out.iter().chain(&c.state().exceptions) {
            let payee = cards.iter().find(|x| x.state().serial == Some(p.payee)).unwrap();
            let credited = payee.state().receipts.slot(p.payee_sequence) == Slot::Credited;
            if !credited {
                total += p.amount.0;
            }
        }
    }
    total
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn value_is_conserved_and_keys_never_go_back(
        gens in prop::collection::vec((1..4u32, 2..5u32, any::<bool>()), 5),
        steps in prop::collection::vec(step(), 1..25),
    ) {
        let mut cards = cards(&gens);
        let total: u64 = cards.iter().map(|c| c.state().balance.0).sum();
        for s in steps {
            if s.payer == s.payee {
                continue;
            }
            let ids_before: Vec<_> = cards.iter().map(|c| c.state().selected_transfer_key_id).collect();
            let (a, b) = two_cards(&mut cards, s.payer, s.payee);
            if let Some((on_payee, k, after)) = s.tear {
                let t = if after { Tear::AfterWrite } else { Tear::BeforeWrite };
                if on_payee { b.storage_mut().arm(k, t) } else { a.storage_mut().arm(k, t) }
            }
            let _ = settle_cards(a, b, s.amount);
            for c in [&mut *a, &mut *b] {
                c.storage_mut().disarm();
                if !c.is_powered() {
                    c.power_on();
                }
                // Tear atomicity: what the card runs on is exactly what storage holds, and it parses.
                prop_assert_eq!(&c.state().encode()[..], &persisted(c)[..]);
            }
            let balances: u64 = cards.iter().map(|c| c.state().balance.0).sum();
            prop_assert!(balances <= total, "value created: {} > {}", balances, total);
            prop_assert_eq!(balances + in_flight(&cards), total, "value lost or created");
            for (c, before) in cards.iter().zip(ids_before) {
                prop_assert!(c.state().selected_transfer_key_id >= before, "transfer key id went back");
                prop_assert!(c.state().transfer_key_id_limit.unwrap().admits(c.state().selected_transfer_key_id.unwrap()));
            }
        }
        // Convergence: settling every pair twice without tears leaves no value in flight.
        for i in 0..5 {
            for j in 0..5 {
                if i != j {
                    let (a, b) = two_cards(&mut cards, i, j);
                    let _ = settle_cards(a, b, 0);
                }
            }
        }
        prop_assert_eq!(in_flight(&cards), 0);
        let balances: u64 = cards.iter().map(|c| c.state().balance.0).sum();
        prop_assert_eq!(balances, total);
    }
}

#[test]
fn every_write_of_a_rolling_settlement_can_be_torn() {
    // Deterministic sweep: cut power at write k (before and after) on either card, for every k.
    for on_payee in [false, true] {
        for tear in [Tear::BeforeWrite, Tear::AfterWrite] {
            for k in 1..=4 {
                let mut a = card(1, Profile::Symmetric, 1, 1, 5, 100);
                let mut b = card(2, Profile::Symmetric, 2, 1, 5, 100);
                if on_payee {
                    b.storage_mut().arm(k, tear)
                } else {
                    a.storage_mut().arm(k, tear)
                }
                let _ = settle_cards(&mut a, &mut b, 25);
                for c in [&mut a, &mut b] {
                    c.storage_mut().disarm();
                    if !c.is_powered() {
                        c.power_on();
                    }
                }
                settle_cards(&mut a, &mut b, 0).unwrap();
                let (x, y) = (a.state().balance.0, b.state().balance.0);
                assert!(x + y == 200, "k={k} {tear:?} payee={on_payee}: {x}+{y}");
                assert!(a.state().pending_out.is_empty() && b.state().pending_in.is_empty());
                assert_eq!(a.state().selected_transfer_key_id, Some(TransferKeyId(2)));
            }
        }
    }
}
