//! Status words (ISO/IEC 7816-4 §5.6), named by what keyroll means by them. `docs/protocol.md` lists which
//! condition of which command produces each.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusWord {
    /// 9000: normal processing.
    Ok,
    /// 61XX: XX more response bytes are available with GET RESPONSE (00 = 256 or more).
    MoreData(u8),
    /// 6300: verification failed (an envelope, MAC, seal or signature did not verify).
    VerificationFailed,
    /// 6581: memory failure (a persistent write did not complete; state is as before the command).
    MemoryFailure,
    /// 6700: wrong length (Lc or data length not as the command requires).
    WrongLength,
    /// 6883: the last command of a chain was expected.
    LastCommandExpected,
    /// 6884: command chaining not supported for this instruction.
    ChainingNotSupported,
    /// 6982: security status not satisfied (no live challenge, no personalisation session, wrong challenge).
    SecurityStatusNotSatisfied,
    /// 6983: the counterpart card is blocked by the scheme policy the card holds (ISO/IEC 7816-4:
    /// "authentication method blocked"; DESIGN.md §10 point 4).
    CounterpartBlocked,
    /// 6988: incorrect secure messaging data objects (a C-MAC that does not verify, a protected
    /// command outside a channel); the card closes the channel (GP Amendment D §6.2.4).
    SecureMessagingIncorrect,
    /// 6985: conditions of use not satisfied (wrong life-cycle state, insufficient balance, maximum balance).
    ConditionsNotSatisfied,
    /// 6A80: incorrect data (malformed field, or a transfer key identifier that is not newer).
    IncorrectData,
    /// 6A82: application not found (SELECT of an unknown AID).
    ApplicationNotFound,
    /// 6A84: not enough memory space (an identifier above the card's upper limit, or a full log).
    NotEnoughMemory,
    /// 6A86: incorrect P1-P2.
    IncorrectP1P2,
    /// 6A88: referenced data not found (unknown key identifier, selection id or nonce).
    ReferencedDataNotFound,
    /// 6D00: instruction not supported.
    InsNotSupported,
    /// 6E00: class not supported.
    ClaNotSupported,
    /// 6F00: no precise diagnosis.
    NoPreciseDiagnosis,
    /// Any other status word a card may send.
    Other(u16),
}

impl StatusWord {
    pub fn to_u16(self) -> u16 {
        use StatusWord::*;
        match self {
            Ok => 0x9000,
            MoreData(n) => 0x6100 | n as u16,
            VerificationFailed => 0x6300,
            MemoryFailure => 0x6581,
            WrongLength => 0x6700,
            LastCommandExpected => 0x6883,
            ChainingNotSupported => 0x6884,
            SecurityStatusNotSatisfied => 0x6982,
            CounterpartBlocked => 0x6983,
            ConditionsNotSatisfied => 0x6985,
            SecureMessagingIncorrect => 0x6988,
            IncorrectData => 0x6A80,
            ApplicationNotFound => 0x6A82,
            NotEnoughMemory => 0x6A84,
            IncorrectP1P2 => 0x6A86,
            ReferencedDataNotFound => 0x6A88,
            InsNotSupported => 0x6D00,
            ClaNotSupported => 0x6E00,
            NoPreciseDiagnosis => 0x6F00,
            Other(v) => v,
        }
    }

    pub fn from_u16(v: u16) -> Self {
        use StatusWord::*;
        match v {
            0x9000 => Ok,
            0x6100..=0x61FF => MoreData(v as u8),
            0x6300 => VerificationFailed,
            0x6983 => CounterpartBlocked,
            0x6581 => MemoryFailure,
            0x6700 => WrongLength,
            0x6883 => LastCommandExpected,
            0x6884 => ChainingNotSupported,
            0x6982 => SecurityStatusNotSatisfied,
            0x6985 => ConditionsNotSatisfied,
            0x6988 => SecureMessagingIncorrect,
            0x6A80 => IncorrectData,
            0x6A82 => ApplicationNotFound,
            0x6A84 => NotEnoughMemory,
            0x6A86 => IncorrectP1P2,
            0x6A88 => ReferencedDataNotFound,
            0x6D00 => InsNotSupported,
            0x6E00 => ClaNotSupported,
            0x6F00 => NoPreciseDiagnosis,
            v => Other(v),
        }
    }

    pub fn is_ok(self) -> bool {
        self == StatusWord::Ok
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.to_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_status_round_trips() {
        for v in [
            0x9000, 0x6110, 0x6100, 0x6300, 0x6581, 0x6700, 0x6883, 0x6884, 0x6982, 0x6985, 0x6988, 0x6A80, 0x6A82,
            0x6A84, 0x6A86, 0x6A88, 0x6D00, 0x6E00, 0x6F00, 0x6B00,
        ] {
            assert_eq!(StatusWord::from_u16(v).to_u16(), v);
        }
        assert_eq!(StatusWord::from_u16(0x6B00), StatusWord::Other(0x6B00));
    }
}
