//! Random byte strings as APDUs (house rule 2: the card's parser is fuzzed): no panic, an error status,
//! no state change.

use crate::support::*;
use keyroll::domain::*;
use keyroll::protocol::SmartCard;
use proptest::prelude::*;

const INS: [u8; 18] =
    [0xA4, 0xC0, 0x10, 0x20, 0x22, 0x24, 0x30, 0x32, 0x34, 0x36, 0x38, 0x3A, 0x44, 0x50, 0x52, 0x54, 0x56, 0x5E];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_or_change_state(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut c = card(1, Profile::Symmetric, 1, 1, 5, 100);
        select(&mut c);
        let before = persisted(&c);
        let r = c.process(&bytes).unwrap();
        prop_assert!(r.len() >= 2);
        prop_assert_eq!(persisted(&c), before);
    }

    #[test]
    fn well_formed_headers_with_random_bodies(
        cla in prop::sample::select(vec![0x00u8, 0x80, 0x90, 0x84]),
        ins in prop::sample::select(INS.to_vec()),
        p1 in any::<u8>(), p2 in any::<u8>(),
        data in prop::collection::vec(any::<u8>(), 0..80),
        multi in any::<bool>(),
    ) {
        let profile = if multi { Profile::MultiKey } else { Profile::Symmetric };
        let mut c = card(1, profile, 1, 1, 5, 100);
        select(&mut c);
        let before = persisted(&c);
        let mut apdu = vec![cla, ins, p1, p2];
        if !data.is_empty() {
            apdu.push(data.len() as u8);
            apdu.extend_from_slice(&data);
        }
        let r = c.process(&apdu).unwrap();
        let sw = u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]]);
        // Only an unauthenticated BEGIN RECEIVE may succeed and write (it opens a receipt; no value).
        let may_write = sw == 0x9000 && ins == 0x30;
        if !may_write {
            prop_assert_eq!(persisted(&c), before, "INS {:02X} SW {:04X}", ins, sw);
        }
        prop_assert_eq!(c.state().balance, Amount(100));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, .. ProptestConfig::default() })]

    /// The terminal's and the personalisation line's decoders take bytes from a card that may be hostile:
    /// every typed response (and every item payload) either decodes or names an error, never panics, and
    /// what decodes encodes to something that decodes to the same value.
    #[test]
    fn every_wire_decoder_takes_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
        use keyroll::protocol::Wire;
        use keyroll::protocol::command::{KeyPayload, KeyRollPath, PersoItem};
        use keyroll::protocol::info::CardInfo;
        use keyroll::protocol::perso::PersoPayload;
        use keyroll::protocol::response::*;
        fn check<T: Wire + PartialEq + std::fmt::Debug>(b: &[u8], c: T::Context) -> Result<(), TestCaseError> {
            if let Ok(v) = T::from_wire(b, c) {
                prop_assert_eq!(T::from_wire(&v.to_wire(), c).ok(), Some(v));
            }
            Ok(())
        }
        check::<CardInfo>(&bytes, ())?;
        check::<UpdatePermission>(&bytes, ())?;
        check::<ReceiveRequest>(&bytes, ())?;
        check::<DebitToken>(&bytes, ())?;
        check::<CreditAck>(&bytes, ())?;
        check::<AbortProof>(&bytes, ())?;
        check::<FactoryCredentials>(&bytes, ())?;
        check::<GeneratedPublicKey>(&bytes, ())?;
        check::<KeyPayload>(&bytes, KeyRollPath::Symmetric)?;
        check::<KeyPayload>(&bytes, KeyRollPath::PublicKey)?;
        check::<keyroll::protocol::ledger::CardLogExport>(&bytes, ())?;
        for item in PersoItem::ALL {
            check::<PersoPayload>(&bytes, item)?;
        }
    }

    /// EXPORT LOG's answer reaches the terminal from a card that may be hostile: a genuine export with a
    /// byte changed, cut short or lengthened decodes or names an error, never panics.
    #[test]
    fn the_export_decoder_takes_mangled_exports(at in 0usize..400, byte in any::<u8>(), cut in 0usize..400, extra in any::<bool>()) {
        use keyroll::protocol::Wire;
        use keyroll::protocol::ledger::CardLogExport;
        static GENUINE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let mut w = GENUINE.get_or_init(|| card(1, Profile::Symmetric, 1, 1, 5, 100).state().export_log(&[7; 16]).unwrap().to_wire()).clone();
        w.extend(std::iter::repeat_n(0x19u8, 300));
        let at = at % w.len();
        w[at] = byte;
        w.truncate(cut.max(1));
        if extra {
            w.push(byte);
        }
        if let Ok(v) = CardLogExport::from_wire(&w, ()) {
            prop_assert_eq!(CardLogExport::from_wire(&v.to_wire(), ()).ok(), Some(v));
        }
    }
}
