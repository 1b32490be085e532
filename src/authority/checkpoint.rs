//! Checkpoints kept outside the database (DESIGN.md §10 point 7; issue 14 items 2 and 3).
//!
//! A checkpoint inside the database is no defence against rollback: restoring an older file restores
//! its checkpoints too. So every custodian keeps its own **state file**, beside its identity file
//! (`IDENTITY.state`) or, when `$XDG_STATE_HOME` is set, in `$XDG_STATE_HOME/keyroll/`. For each issuer
//! it has worked for (keyed by the audit key fingerprint, which is the pin) it records the newest log
//! head it verified or wrote. An auditor keeps the same record in a file of its choosing
//! (`audit log --checkpoint FILE`).

use super::AuthorityError;
use super::audit_log::Checkpoint;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const STATE_FORMAT: &str = "keyroll-custodian-state/1";
const CHECKPOINT_FORMAT: &str = "keyroll-checkpoint/1";

/// What a custodian remembers about one issuer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssuerState {
    /// The newest log head this custodian verified or wrote.
    pub checkpoint: Option<Checkpoint>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct StateFile {
    format: String,
    /// Audit key fingerprint (the pin) → what this custodian knows of that issuer's log.
    issuers: BTreeMap<String, IssuerState>,
}

/// A custodian's state file.
#[derive(Clone, Debug)]
pub struct CustodianState {
    pub path: PathBuf,
}

impl CustodianState {
    /// The state file of the custodian whose identity file is `identity`.
    pub fn for_identity(identity: &Path) -> Self {
        if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
            let abs = identity.canonicalize().unwrap_or_else(|_| identity.to_path_buf());
            let tag = &hex::encode(sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes()))[..16];
            let name = identity.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            return CustodianState { path: PathBuf::from(dir).join("keyroll").join(format!("{name}-{tag}.state")) };
        }
        let mut p = identity.as_os_str().to_owned();
        p.push(".state");
        CustodianState { path: PathBuf::from(p) }
    }

    fn read(&self) -> Result<StateFile, AuthorityError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(StateFile { format: STATE_FORMAT.into(), issuers: BTreeMap::new() });
            }
            Err(e) => return Err(AuthorityError::Io { path: self.path.clone(), source: e }),
        };
        let f: StateFile = serde_json::from_str(&text)
            .map_err(|e| AuthorityError::StateFile { path: self.path.clone(), why: e.to_string() })?;
        if f.format != STATE_FORMAT {
            return Err(AuthorityError::StateFile {
                path: self.path.clone(),
                why: format!("unknown format {:?}", f.format),
            });
        }
        Ok(f)
    }

    /// What this custodian knows of the issuer with audit key fingerprint `fp` (None: never pinned).
    pub fn get(&self, fp: &str) -> Result<Option<IssuerState>, AuthorityError> {
        Ok(self.read()?.issuers.remove(fp))
    }

    /// Record `cp` for issuer `fp` (pinning it), keeping the newer of the stored and the given head.
    /// Read-modify-write under an exclusive lock, so parallel processes of one custodian lose nothing.
    pub fn record(&self, fp: &str, cp: Option<Checkpoint>) -> Result<(), AuthorityError> {
        let io = |e: std::io::Error| AuthorityError::Io { path: self.path.clone(), source: e };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut lock_name = self.path.as_os_str().to_owned();
        lock_name.push(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(PathBuf::from(lock_name))
            .map_err(io)?;
        lock_exclusive(&lock).map_err(io)?;
        let mut f = self.read()?;
        let entry = f.issuers.entry(fp.to_string()).or_insert(IssuerState { checkpoint: None });
        if let Some(cp) = cp
            && entry.checkpoint.is_none_or(|old| old.count <= cp.count)
        {
            entry.checkpoint = Some(cp);
        }
        let text = serde_json::to_string_pretty(&f).expect("state serialises");
        // No fsync: a checkpoint lost in a crash is only an older checkpoint (the pin is written by the
        // first record, and a lost pin makes the next command ask for --expect-key, never accept less).
        super::files::write_replacing(&self.path, text.as_bytes(), 0o600, false)
    }
}

#[cfg(unix)]
fn lock_exclusive(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this process owns; released when `f` is closed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(unix))]
fn lock_exclusive(_f: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

use sha2::Digest;

/// An auditor's checkpoint file (`--checkpoint FILE`).
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckpointFile {
    pub format: String,
    pub audit_key_fingerprint: String,
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
}

impl CheckpointFile {
    /// Read a checkpoint file; `Ok(None)` if it does not exist yet.
    pub fn read(path: &Path) -> Result<Option<CheckpointFile>, AuthorityError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AuthorityError::Io { path: path.to_path_buf(), source: e }),
        };
        let f: CheckpointFile = serde_json::from_str(&text)
            .map_err(|e| AuthorityError::StateFile { path: path.to_path_buf(), why: e.to_string() })?;
        if f.format != CHECKPOINT_FORMAT {
            return Err(AuthorityError::StateFile {
                path: path.to_path_buf(),
                why: format!("unknown format {:?}", f.format),
            });
        }
        Ok(Some(f))
    }

    pub fn write(path: &Path, fp: &str, cp: Checkpoint) -> Result<(), AuthorityError> {
        let f =
            CheckpointFile { format: CHECKPOINT_FORMAT.into(), audit_key_fingerprint: fp.to_string(), checkpoint: cp };
        let text = serde_json::to_string_pretty(&f).expect("checkpoint serialises") + "\n";
        super::files::write_atomic(path, text.as_bytes(), 0o644)
    }
}
