//! keyroll's instruction set. Inter-industry commands use CLA 00; keyroll's own use the proprietary
//! class 80 (ISO/IEC 7816-4 §5.4.1: b8 set). `docs/protocol.md` has a table per instruction.

/// Inter-industry class.
pub const CLA_ISO: u8 = 0x00;
/// Proprietary class of keyroll's commands.
pub const CLA_PROPRIETARY: u8 = 0x80;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Instruction {
    /// SELECT by AID (ISO/IEC 7816-4 §11.2.2).
    Select,
    /// GET RESPONSE (ISO/IEC 7816-4 §11.5.4): the rest of a long response.
    GetResponse,
    /// Claims 2, 4, 6, 7, 9: "command data that requests transmission of card information".
    GetCardInfo,
    /// Claims 2, 4, 6, 7, 9: "requests update permission of the transfer key".
    RequestUpdatePermission,
    /// Claims 2, 4, 6, 7, 9: "requests to obtain the transfer key".
    GetTransferKey,
    /// Claims 2, 4, 6, 7, 9: "requests update of the transfer key".
    UpdateTransferKey,
    /// Value transfer step 1 (payee), DESIGN.md §3.
    BeginReceive,
    /// Value transfer step 2 (payer).
    Debit,
    /// Value transfer step 3 (payee), idempotent.
    Credit,
    /// Value transfer step 4 (payer).
    Confirm,
    /// Recovery (payee): promise never to credit a nonce, with proof.
    Abort,
    /// Recovery (payer): restore a debit against an abort proof.
    Refund,
    /// DESIGN.md §10 point 4: offer the card a newer scheme policy (chained; verified, then adopted atomically).
    PutPolicy,
    /// DESIGN.md §10 point 4: read the card's scheme policy, to relay it to another card.
    GetPolicy,
    /// Issue 13: the card's MAC'd log for the back office, answering a challenge (`docs/protocol.md` §4.14a).
    ExportLog,
    /// Personalisation: the factory credentials (GET DATA, tag BF21): chip id and certificates.
    GetFactoryData,
    /// Personalisation: SCP11b key agreement (GP Amendment F INTERNAL AUTHENTICATE).
    InternalAuthenticate,
    /// Personalisation: store one item (P1 = item), under secure messaging.
    PersoStore,
    /// Personalisation: generate the card key pair on the card (claims 3, 5), returns the public key.
    GenerateKeyPair,
    /// Personalisation: end personalisation for good.
    Lock,
}

impl Instruction {
    pub const ALL: [Instruction; 20] = [
        Instruction::Select,
        Instruction::GetResponse,
        Instruction::GetCardInfo,
        Instruction::RequestUpdatePermission,
        Instruction::GetTransferKey,
        Instruction::UpdateTransferKey,
        Instruction::BeginReceive,
        Instruction::Debit,
        Instruction::Credit,
        Instruction::Confirm,
        Instruction::Abort,
        Instruction::Refund,
        Instruction::PutPolicy,
        Instruction::GetPolicy,
        Instruction::ExportLog,
        Instruction::GetFactoryData,
        Instruction::InternalAuthenticate,
        Instruction::PersoStore,
        Instruction::GenerateKeyPair,
        Instruction::Lock,
    ];

    pub fn code(self) -> u8 {
        use Instruction::*;
        match self {
            Select => 0xA4,
            GetResponse => 0xC0,
            GetCardInfo => 0x10,
            RequestUpdatePermission => 0x20,
            GetTransferKey => 0x22,
            UpdateTransferKey => 0x24,
            BeginReceive => 0x30,
            Debit => 0x32,
            Credit => 0x34,
            Confirm => 0x36,
            Abort => 0x38,
            Refund => 0x3A,
            PutPolicy => 0x40,
            GetPolicy => 0x42,
            ExportLog => 0x44,
            GetFactoryData => 0xCA,
            InternalAuthenticate => 0x88,
            PersoStore => 0x54,
            GenerateKeyPair => 0x56,
            Lock => 0x5E,
        }
    }

    /// The class this instruction is sent with.
    pub fn cla(self) -> u8 {
        match self {
            Instruction::Select | Instruction::GetResponse => CLA_ISO,
            _ => CLA_PROPRIETARY,
        }
    }

    pub fn from_code(cla: u8, ins: u8) -> Option<Self> {
        Instruction::ALL.into_iter().find(|i| i.code() == ins && i.cla() == cla)
    }

    /// Whether the command is accepted only under secure messaging (the personalisation channel).
    pub fn needs_secure_messaging(self) -> bool {
        matches!(self, Instruction::PersoStore | Instruction::GenerateKeyPair | Instruction::Lock)
    }

    /// Whether the command is part of personalisation (refused after LOCK).
    pub fn is_personalisation(self) -> bool {
        matches!(
            self,
            Instruction::GetFactoryData
                | Instruction::InternalAuthenticate
                | Instruction::PersoStore
                | Instruction::GenerateKeyPair
                | Instruction::Lock
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_round_trip() {
        for i in Instruction::ALL {
            assert_eq!(Instruction::from_code(i.cla(), i.code()), Some(i));
        }
        let mut codes: Vec<_> = Instruction::ALL.iter().map(|i| i.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Instruction::ALL.len());
    }
}
