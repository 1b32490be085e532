//! Command and response APDUs (ISO/IEC 7816-4 §5.1, §5.2): the four cases, short and extended length.

use super::status::StatusWord;
use thiserror::Error;
use zeroize::Zeroize;

/// Largest data field keyroll accepts in one command APDU (extended Lc allows 65,535; we cap at 4 KiB
/// because no keyroll command needs more and a card must bound what untrusted input makes it buffer).
pub const MAX_COMMAND_DATA: usize = 4096;

/// CLA bit announcing that more commands of the same chain follow (ISO/IEC 7816-4 §5.4.1).
pub const CLA_CHAINING: u8 = 0x10;

#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum ApduError {
    #[error("APDU of {0} bytes is shorter than the 4-byte header")]
    TooShort(usize),
    #[error("APDU length fields do not match its {0} bytes")]
    LengthMismatch(usize),
    #[error("Lc of 0 in an extended APDU is not allowed")]
    ZeroLc,
    #[error("data field of {0} bytes exceeds the {MAX_COMMAND_DATA}-byte limit")]
    TooLong(usize),
    #[error("response of {0} bytes has no status word")]
    NoStatusWord(usize),
}

/// A command APDU. The data buffer is zeroized on drop: personalisation commands carry sealed keys,
/// and a buffer that once held them should not linger (house rule 8).
#[derive(Clone, PartialEq, Eq)]
pub struct CommandApdu {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: Vec<u8>,
    /// Expected response length: None (case 1/3), or Some(n) with n in 1..=65536 (0 encodes the maximum).
    pub le: Option<usize>,
}

impl Drop for CommandApdu {
    fn drop(&mut self) {
        self.data.zeroize();
    }
}

impl std::fmt::Debug for CommandApdu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The data field is left out on purpose: it may hold sealed secrets.
        write!(
            f,
            "CommandApdu({:02X} {:02X} {:02X} {:02X}, {} data bytes)",
            self.cla,
            self.ins,
            self.p1,
            self.p2,
            self.data.len()
        )
    }
}

impl CommandApdu {
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8, data: Vec<u8>) -> Self {
        CommandApdu { cla, ins, p1, p2, data, le: Some(256) }
    }

    /// The four header bytes.
    pub fn header(&self) -> [u8; 4] {
        [self.cla, self.ins, self.p1, self.p2]
    }

    /// Parse any of the seven encodings of ISO/IEC 7816-4 §5.1 (cases 1, 2S, 3S, 4S, 2E, 3E, 4E).
    pub fn parse(b: &[u8]) -> Result<Self, ApduError> {
        if b.len() < 4 {
            return Err(ApduError::TooShort(b.len()));
        }
        let (cla, ins, p1, p2) = (b[0], b[1], b[2], b[3]);
        let body = &b[4..];
        let mk = |data: &[u8], le: Option<usize>| -> Result<CommandApdu, ApduError> {
            if data.len() > MAX_COMMAND_DATA {
                return Err(ApduError::TooLong(data.len()));
            }
            Ok(CommandApdu { cla, ins, p1, p2, data: data.to_vec(), le })
        };
        let short_le = |x: u8| if x == 0 { 256 } else { x as usize };
        let ext_le = |hi: u8, lo: u8| {
            let v = u16::from_be_bytes([hi, lo]) as usize;
            if v == 0 { 65536 } else { v }
        };
        match body.len() {
            0 => mk(&[], None),                    // case 1
            1 => mk(&[], Some(short_le(body[0]))), // case 2S
            _ if body[0] != 0 => {
                let lc = body[0] as usize;
                match body.len() - 1 {
                    n if n == lc => mk(&body[1..], None),                                   // case 3S
                    n if n == lc + 1 => mk(&body[1..1 + lc], Some(short_le(body[1 + lc]))), // case 4S
                    _ => Err(ApduError::LengthMismatch(b.len())),
                }
            }
            3 => mk(&[], Some(ext_le(body[1], body[2]))), // case 2E
            n if n > 3 => {
                let lc = u16::from_be_bytes([body[1], body[2]]) as usize;
                if lc == 0 {
                    return Err(ApduError::ZeroLc);
                }
                match n - 3 {
                    m if m == lc => mk(&body[3..], None), // case 3E
                    m if m == lc + 2 => mk(&body[3..3 + lc], Some(ext_le(body[3 + lc], body[4 + lc]))), // case 4E
                    _ => Err(ApduError::LengthMismatch(b.len())),
                }
            }
            _ => Err(ApduError::LengthMismatch(b.len())),
        }
    }

    /// Encode, short form when data ≤ 255 bytes and Le ≤ 256, extended otherwise.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 9);
        out.extend_from_slice(&self.header());
        let short = self.data.len() <= 255 && self.le.is_none_or(|l| l <= 256);
        if short {
            if !self.data.is_empty() {
                out.push(self.data.len() as u8);
                out.extend_from_slice(&self.data);
            }
            if let Some(le) = self.le {
                out.push(if le == 256 { 0 } else { le as u8 });
            }
        } else {
            out.push(0);
            if !self.data.is_empty() {
                out.extend_from_slice(&(self.data.len() as u16).to_be_bytes());
                out.extend_from_slice(&self.data);
            }
            if let Some(le) = self.le {
                let v = if le >= 65536 { 0u16 } else { le as u16 };
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        out
    }
}

/// A response APDU: data and the status word.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ResponseApdu {
    pub data: Vec<u8>,
    pub sw: StatusWord,
}

impl ResponseApdu {
    pub fn ok(data: Vec<u8>) -> Self {
        ResponseApdu { data, sw: StatusWord::Ok }
    }

    pub fn status(sw: StatusWord) -> Self {
        ResponseApdu { data: Vec::new(), sw }
    }

    pub fn parse(b: &[u8]) -> Result<Self, ApduError> {
        if b.len() < 2 {
            return Err(ApduError::NoStatusWord(b.len()));
        }
        let (data, sw) = b.split_at(b.len() - 2);
        Ok(ResponseApdu { data: data.to_vec(), sw: StatusWord::from_u16(u16::from_be_bytes([sw[0], sw[1]])) })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.sw.to_u16().to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apdu(data: usize, le: Option<usize>) -> CommandApdu {
        CommandApdu { cla: 0x80, ins: 0x10, p1: 1, p2: 2, data: vec![0xA5; data], le }
    }

    #[test]
    fn all_seven_cases_round_trip() {
        for (d, le) in [
            (0, None),
            (0, Some(1)),
            (0, Some(256)),
            (5, None),
            (5, Some(17)),
            (255, Some(256)),
            (0, Some(257)),
            (0, Some(65536)),
            (300, None),
            (300, Some(1000)),
            (4096, Some(65536)),
        ] {
            let a = apdu(d, le);
            let bytes = a.to_bytes();
            assert_eq!(CommandApdu::parse(&bytes).unwrap(), a, "data {d} le {le:?}");
        }
    }

    #[test]
    fn known_encodings() {
        assert_eq!(apdu(0, None).to_bytes(), [0x80, 0x10, 1, 2]);
        assert_eq!(apdu(0, Some(256)).to_bytes(), [0x80, 0x10, 1, 2, 0]);
        assert_eq!(apdu(2, None).to_bytes(), [0x80, 0x10, 1, 2, 2, 0xA5, 0xA5]);
        assert_eq!(apdu(0, Some(300)).to_bytes(), [0x80, 0x10, 1, 2, 0, 0x01, 0x2C]);
    }

    #[test]
    fn malformed_lengths_are_rejected() {
        assert_eq!(CommandApdu::parse(&[0x80, 0x10, 0]), Err(ApduError::TooShort(3)));
        assert!(CommandApdu::parse(&[0x80, 0x10, 0, 0, 3, 1]).is_err());
        assert!(CommandApdu::parse(&[0x80, 0x10, 0, 0, 0, 0]).is_err());
        assert_eq!(CommandApdu::parse(&[0x80, 0x10, 0, 0, 0, 0, 0, 1]), Err(ApduError::ZeroLc));
        let mut big = vec![0x80, 0x10, 0, 0, 0, 0x20, 0x00];
        big.extend(vec![0; 0x2000]);
        assert_eq!(CommandApdu::parse(&big), Err(ApduError::TooLong(0x2000)));
    }

    #[test]
    fn response_round_trip() {
        let r = ResponseApdu { data: vec![1, 2, 3], sw: StatusWord::IncorrectData };
        assert_eq!(ResponseApdu::parse(&r.to_bytes()).unwrap(), r);
        assert!(ResponseApdu::parse(&[0x90]).is_err());
    }
}
