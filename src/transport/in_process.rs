//! A channel to a card in the same process: the reference card behind the same APDU bytes a reader
//! would carry, so in-process tests exercise the real codec.

use super::{CardChannel, TransportError};
use crate::protocol::SmartCard;

pub struct InProcessChannel<'a> {
    card: &'a mut dyn SmartCard,
    name: String,
}

impl<'a> InProcessChannel<'a> {
    pub fn new(card: &'a mut dyn SmartCard, name: impl Into<String>) -> Self {
        InProcessChannel { card, name: name.into() }
    }
}

impl CardChannel for InProcessChannel<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.card.process(apdu).map_err(|_| TransportError::PowerLost)
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}
