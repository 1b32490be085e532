//! PEM (RFC 7468): the one splitter and decoder of the crate. Certificates, CRLs and keys written as
//! text go through here, whoever reads them (the auditor, the authority's register, the terminal).

use std::fmt;

/// PEM labels keyroll writes and reads (RFC 7468 §5, §6).
pub const CERTIFICATE: &str = "CERTIFICATE";
pub const CRL: &str = "X509 CRL";

/// Bound on the blocks one text may hold: a bundle of a few hundred certificates is plausible, a
/// million is a wrong file (house rule 5).
pub const MAX_BLOCKS: usize = 100_000;

/// What is wrong with a PEM text. `index` is the 1-based block number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PemError {
    /// A block does not decode (bad BEGIN/END lines, labels that differ, bad base64).
    Block {
        index: usize,
        reason: String,
    },
    /// A block carries another label than the one asked for.
    Label {
        index: usize,
        expected: &'static str,
        found: String,
    },
    /// No block with the label asked for.
    Missing {
        expected: &'static str,
    },
    /// More than one block where one was asked for.
    Several {
        expected: &'static str,
        count: usize,
    },
    TooMany,
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemError::Block { index, reason } => write!(f, "PEM block {index} is not valid ({reason})"),
            PemError::Label { index, expected, found } => {
                write!(f, "PEM block {index} is a {found:?} block, expected {expected:?}")
            }
            PemError::Missing { expected } => write!(f, "no {expected:?} PEM block"),
            PemError::Several { expected, count } => write!(f, "{count} {expected:?} PEM blocks, expected one"),
            PemError::TooMany => write!(f, "more than {MAX_BLOCKS} PEM blocks"),
        }
    }
}

impl std::error::Error for PemError {}

/// Whether `data` looks like PEM text (holds a BEGIN line) rather than DER.
pub fn is_pem(data: &[u8]) -> bool {
    std::str::from_utf8(data).is_ok_and(|t| t.contains("-----BEGIN "))
}

/// Every PEM block in `text`, in order, as (label, DER). Text outside the blocks is ignored, as
/// RFC 7468 §5.2 allows; base64 inside is strict (the `der` crate's RFC 7468 decoder).
pub fn blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, PemError> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let index = out.len() + 1;
        if index > MAX_BLOCKS {
            return Err(PemError::TooMany);
        }
        let bad = |reason: &str| PemError::Block { index, reason: reason.to_string() };
        let block_and_rest = &rest[start..];
        let end_marker = block_and_rest.find("-----END ").ok_or_else(|| bad("BEGIN without END"))?;
        let after_end = &block_and_rest[end_marker + "-----END ".len()..];
        let close = after_end.find("-----").ok_or_else(|| bad("unterminated END line"))?;
        let block_len = end_marker + "-----END ".len() + close + "-----".len();
        let (label, der) = der::pem::decode_vec(&block_and_rest.as_bytes()[..block_len])
            .map_err(|e| PemError::Block { index, reason: e.to_string() })?;
        out.push((label.to_string(), der));
        rest = &block_and_rest[block_len..];
    }
    Ok(out)
}

/// Every block of `text`, each of which must carry `label`; none at all is an error.
pub fn decode_all(label: &'static str, text: &str) -> Result<Vec<Vec<u8>>, PemError> {
    let mut out = Vec::new();
    for (i, (found, der)) in blocks(text)?.into_iter().enumerate() {
        if found != label {
            return Err(PemError::Label { index: i + 1, expected: label, found });
        }
        out.push(der);
    }
    if out.is_empty() {
        return Err(PemError::Missing { expected: label });
    }
    Ok(out)
}

/// Exactly one block, carrying `label`.
pub fn decode_one(label: &'static str, text: &str) -> Result<Vec<u8>, PemError> {
    let mut all = decode_all(label, text)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        count => Err(PemError::Several { expected: label, count }),
    }
}

/// PEM-encode `der` under `label` (RFC 7468), LF line endings.
pub fn encode(label: &str, der: &[u8]) -> String {
    // Encoding fails only for a label with characters RFC 7468 forbids; keyroll's labels are constants.
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap_or_default()
}

/// The objects with `label` in a file's bytes: PEM text (blocks with other labels are skipped, as
/// `openssl` does with a bundle), or else one DER object. An empty input gives no object.
pub fn objects(data: &[u8], label: &str) -> Result<Vec<Vec<u8>>, PemError> {
    if !is_pem(data) {
        return Ok(if data.is_empty() { Vec::new() } else { vec![data.to_vec()] });
    }
    let text = std::str::from_utf8(data).unwrap_or_default();
    Ok(blocks(text)?.into_iter().filter(|(l, _)| l == label).map(|(_, d)| d).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors_name_the_block() {
        let a = encode(CERTIFICATE, &[0x30, 0x03, 1, 2, 3]);
        let b = encode(CRL, &[0x30, 0x00]);
        assert_eq!(decode_one(CERTIFICATE, &a).unwrap(), [0x30, 0x03, 1, 2, 3]);
        let both = format!("junk before\n{a}between\n{b}");
        assert_eq!(blocks(&both).unwrap().len(), 2);
        assert_eq!(objects(both.as_bytes(), CRL).unwrap(), vec![vec![0x30, 0x00]]);
        assert!(matches!(decode_all(CERTIFICATE, &both), Err(PemError::Label { index: 2, .. })));
        assert_eq!(decode_one(CRL, "no pem here"), Err(PemError::Missing { expected: CRL }));
        let twice = format!("{a}{a}");
        assert_eq!(decode_one(CERTIFICATE, &twice), Err(PemError::Several { expected: CERTIFICATE, count: 2 }));
        let cut = &a[..a.len() - 10];
        assert!(matches!(blocks(cut), Err(PemError::Block { index: 1, .. })));
        assert_eq!(objects(&[0x30, 0x00], CRL).unwrap(), vec![vec![0x30, 0x00]], "DER passes through");
        assert!(objects(&[], CRL).unwrap().is_empty());
    }
}
