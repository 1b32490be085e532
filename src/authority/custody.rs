//! Custody of secrets with age (X25519 recipients): every secret the back office holds is age
//! ciphertext to the custodians' recipients; using one needs a custodian's identity file.

use super::AuthorityError;
use crate::crypto::secret::SecretBytes;
use age::secrecy::ExposeSecret;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use zeroize::Zeroizing;

/// Parse a custodian recipient (`age1…`).
pub fn parse_recipient(s: &str) -> Result<age::x25519::Recipient, AuthorityError> {
    age::x25519::Recipient::from_str(s.trim()).map_err(|_| AuthorityError::BadRecipient(s.to_string()))
}

/// Errors of age encryption and decryption (no key material in any of them).
#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    #[error("age encryption failed: {0}")]
    Encrypt(#[from] age::EncryptError),
    #[error("a stored secret is not a well-formed age file: {0}")]
    Malformed(#[from] age::DecryptError),
    #[error("age stream: {0}")]
    Stream(#[from] std::io::Error),
}

/// Encrypt to every recipient (any one identity decrypts).
pub fn encrypt(recipients: &[age::x25519::Recipient], plaintext: &[u8]) -> Result<Vec<u8>, AuthorityError> {
    let enc = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(CustodyError::from)?;
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut w = enc.wrap_output(&mut out).map_err(CustodyError::from)?;
    w.write_all(plaintext).map_err(CustodyError::from)?;
    w.finish().map_err(CustodyError::from)?;
    Ok(out)
}

/// A custodian's unlocked identities, read from an age identity file.
pub struct Custodian {
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    path: PathBuf,
    /// Audit key fingerprints this identity file was issued with (`# keyroll audit key: FP` lines).
    pub pinned_audit_keys: Vec<String>,
}

/// The comment line that pins an issuer's audit key in a custodian identity file.
pub const PIN_PREFIX: &str = "# keyroll audit key: ";

/// Append the audit key pin to an identity file keyroll wrote.
pub fn pin_audit_key(path: &Path, fingerprint: &str) -> Result<(), AuthorityError> {
    let io = |e: std::io::Error| AuthorityError::Io { path: path.to_path_buf(), source: e };
    let mut f = std::fs::OpenOptions::new().append(true).open(path).map_err(io)?;
    writeln!(f, "{PIN_PREFIX}{fingerprint}").map_err(io)?;
    f.sync_all().map_err(io)
}

impl Custodian {
    pub fn from_file(path: &Path) -> Result<Self, AuthorityError> {
        let file = age::IdentityFile::from_file(path.display().to_string())
            .map_err(|e| AuthorityError::Identity { path: path.to_path_buf(), why: e.to_string() })?;
        let identities = file
            .into_identities()
            .map_err(|e| AuthorityError::Identity { path: path.to_path_buf(), why: e.to_string() })?;
        if identities.is_empty() {
            return Err(AuthorityError::Identity { path: path.to_path_buf(), why: "no identity in the file".into() });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).unwrap_or_default());
        let pinned_audit_keys =
            text.lines().filter_map(|l| l.strip_prefix(PIN_PREFIX)).map(|fp| fp.trim().to_lowercase()).collect();
        Ok(Custodian { identities, path: path.to_path_buf(), pinned_audit_keys })
    }

    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<SecretBytes, AuthorityError> {
        let wrong = || AuthorityError::WrongIdentity(self.path.clone());
        let dec = age::Decryptor::new_buffered(ciphertext).map_err(CustodyError::from)?;
        let mut r =
            dec.decrypt(self.identities.iter().map(|i| i.as_ref() as &dyn age::Identity)).map_err(|_| wrong())?;
        let mut out = Zeroizing::new(Vec::new());
        r.read_to_end(&mut out).map_err(|_| wrong())?;
        Ok(SecretBytes::new(std::mem::take(&mut *out)))
    }
}

/// Generate a new identity, write it to `path` with mode 0600 (refusing to overwrite), return its
/// recipient.
pub fn new_identity_file(path: &Path) -> Result<age::x25519::Recipient, AuthorityError> {
    let id = age::x25519::Identity::generate();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let io = |e: std::io::Error| AuthorityError::Io { path: path.to_path_buf(), source: e };
    let mut f = opts.open(path).map_err(io)?;
    let recipient = id.to_public();
    let secret = id.to_string();
    writeln!(f, "# keyroll custodian identity, created {}", super::now()).map_err(io)?;
    writeln!(f, "# public key: {recipient}").map_err(io)?;
    writeln!(f, "{}", secret.expose_secret()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(recipient)
}
