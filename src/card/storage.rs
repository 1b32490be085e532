//! Persistent storage of the reference card, behind a trait so tests can cut power at any write.
//!
//! The card writes its whole state as one record, atomically: [`FileStorage`] writes a temporary file,
//! syncs it and renames it over the old one (POSIX rename is atomic), so after a power cut the file is
//! either the old state or the new one (DESIGN.md §6 property 3).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The fault injector cut the power: the card stops answering.
    #[error("power cut during a write")]
    PowerCut,
    #[error("card storage I/O error: {0}")]
    Io(String),
    /// Another process holds the card (`card serve`, `settle`): two writers would overwrite each other.
    #[error("card file {0} is in use by another keyroll process")]
    InUse(String),
}

pub trait Storage {
    /// The last completely written record, or None for a card never written.
    fn load(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, StorageError>;
    /// Replace the record atomically.
    fn store(&mut self, record: &[u8]) -> Result<(), StorageError>;
}

/// A card state file.
pub struct FileStorage {
    path: PathBuf,
    /// Held for as long as this storage lives, when opened with [`FileStorage::exclusive`].
    _lock: Option<fs::File>,
}

impl FileStorage {
    /// A card file without a lock: for reading, or for a file nobody else can have open yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStorage { path: path.into(), _lock: None }
    }

    /// A card file that this process alone may use until the storage is dropped. The card keeps its
    /// state in memory and writes it whole, so two processes on one file would lose each other's
    /// writes (value created or lost). The lock is an `flock` on a sibling `.NAME.lock` file, since the
    /// card file itself is replaced by rename on every write.
    pub fn exclusive(path: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let path = path.into();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let lock_path = path.with_file_name(format!(".{name}.lock"));
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StorageError::Io(format!("{}: {e}", lock_path.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a file descriptor this function owns.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                return Err(StorageError::InUse(path.display().to_string()));
            }
        }
        Ok(FileStorage { path, _lock: Some(f) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Storage for FileStorage {
    fn load(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, StorageError> {
        match fs::read(&self.path) {
            Ok(b) => Ok(Some(Zeroizing::new(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::Io(format!("{}: {e}", self.path.display()))),
        }
    }

    fn store(&mut self, record: &[u8]) -> Result<(), StorageError> {
        let io = |e: std::io::Error| StorageError::Io(format!("{}: {e}", self.path.display()));
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        tmp.write_all(record).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // The card file holds the card's secrets: owner-only, like a secure element's memory.
            fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        tmp.persist(&self.path).map_err(|e| io(e.error))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Storage in memory (tests, benchmarks, `rollout verify`).
#[derive(Default, Clone)]
pub struct MemoryStorage {
    /// The record holds the card's secrets: zeroized when replaced by a longer one and when dropped.
    record: Option<Zeroizing<Vec<u8>>>,
    /// Number of completed writes.
    pub writes: usize,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn record(&self) -> Option<&[u8]> {
        self.record.as_deref().map(Vec::as_slice)
    }
}

impl Storage for MemoryStorage {
    fn load(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, StorageError> {
        Ok(self.record.clone())
    }
    fn store(&mut self, record: &[u8]) -> Result<(), StorageError> {
        match self.record.as_mut() {
            // Overwritten in place: no copy of the old record is left in freed memory.
            Some(old) if old.capacity() >= record.len() => {
                old.clear();
                old.extend_from_slice(record);
            }
            _ => {
                // Room to grow: a card's record lengthens as it is personalised, certified and used.
                let mut new = Zeroizing::new(Vec::with_capacity(record.len().next_power_of_two()));
                new.extend_from_slice(record);
                self.record = Some(new);
            }
        }
        self.writes += 1;
        Ok(())
    }
}

/// When the injected power cut strikes relative to the chosen write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tear {
    /// The write never reaches storage.
    BeforeWrite,
    /// The write completes, then power is lost before the card answers.
    AfterWrite,
}

/// Fault injector: cuts the power at the k-th write (1-based) from arming, then behaves normally.
pub struct TearingStorage<S: Storage> {
    pub inner: S,
    writes_since_armed: usize,
    armed: Option<(usize, Tear)>,
    /// How many cuts have struck.
    pub cuts: usize,
}

impl<S: Storage> TearingStorage<S> {
    pub fn new(inner: S) -> Self {
        TearingStorage { inner, writes_since_armed: 0, armed: None, cuts: 0 }
    }

    /// Cut the power at the `k`-th write from now.
    pub fn arm(&mut self, k: usize, tear: Tear) {
        self.writes_since_armed = 0;
        self.armed = Some((k, tear));
    }

    pub fn disarm(&mut self) {
        self.armed = None;
    }
}

impl<S: Storage> Storage for TearingStorage<S> {
    fn load(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, StorageError> {
        self.inner.load()
    }

    fn store(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.writes_since_armed += 1;
        match self.armed {
            Some((k, tear)) if k == self.writes_since_armed => {
                self.armed = None;
                self.cuts += 1;
                if tear == Tear::AfterWrite {
                    self.inner.store(record)?;
                }
                Err(StorageError::PowerCut)
            }
            _ => self.inner.store(record),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-memory record is replaced whole at each write, longer or shorter than the last, and
    /// reuses its buffer when the new record fits (no copy of the old one left in freed memory).
    #[test]
    fn memory_storage_keeps_exactly_the_last_record() {
        let mut m = MemoryStorage::new();
        assert!(m.load().unwrap().is_none());
        for record in [vec![1u8; 100], vec![2u8; 10], vec![3u8; 5000], vec![4u8; 4000]] {
            m.store(&record).unwrap();
            assert_eq!(m.record(), Some(&record[..]));
            assert_eq!(m.load().unwrap().as_deref().map(Vec::as_slice), Some(&record[..]));
        }
        assert_eq!(m.writes, 4);
        let before = m.record.as_ref().map(|r| r.as_ptr());
        m.store(&[5u8; 4096]).unwrap();
        assert_eq!(m.record.as_ref().map(|r| r.as_ptr()), before, "a record that fits reuses the buffer");
    }
}
