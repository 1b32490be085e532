//! Files keyroll writes besides the database: atomic replacement (a temporary file in the same
//! directory, synced, then renamed over the target: a reader sees the old file or the new one, never a
//! half-written one) and the refusal to clobber what must not be clobbered (issue 14 item 5).

use super::AuthorityError;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why an output path is refused.
#[derive(Debug, thiserror::Error)]
pub enum OutputRefused {
    #[error("{0} already exists; keyroll does not overwrite files unless told to (--force)")]
    Exists(PathBuf),
    #[error("{path} is {what}; keyroll never writes output over it, --force or not")]
    Protected { path: PathBuf, what: &'static str },
}

/// Same file (device and inode), whatever the spelling of the path.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    }
}

/// Whether `path` looks like a reference card file keyroll wrote (`*.card`, or one that a card lock
/// file sits beside).
fn is_card_file(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "card") {
        return true;
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return false };
    dir.join(format!(".{}.lock", name.to_string_lossy())).exists()
}

/// Check that `out` may be written: never one of `protected` (the database, its WAL, the identity
/// file…) or a card file, and never an existing file unless `force`.
pub fn check_output(out: &Path, force: bool, protected: &[(&Path, &'static str)]) -> Result<(), OutputRefused> {
    if !out.exists() {
        return Ok(());
    }
    for (p, what) in protected {
        if same_file(out, p) {
            return Err(OutputRefused::Protected { path: out.to_path_buf(), what });
        }
    }
    if is_card_file(out) {
        return Err(OutputRefused::Protected { path: out.to_path_buf(), what: "a card file" });
    }
    if !force {
        return Err(OutputRefused::Exists(out.to_path_buf()));
    }
    Ok(())
}

/// Write `bytes` to `path` atomically (temporary file beside it, fsync, rename), with `mode` on Unix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AuthorityError> {
    write_replacing(path, bytes, mode, true)
}

/// [`write_atomic`], optionally without the fsync (for bookkeeping whose loss in a crash is harmless).
pub fn write_replacing(path: &Path, bytes: &[u8], mode: u32, sync: bool) -> Result<(), AuthorityError> {
    let io = |e: std::io::Error| AuthorityError::Io { path: path.to_path_buf(), source: e };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new().prefix(".keyroll-tmp").tempfile_in(&dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.write_all(bytes).map_err(io)?;
    if sync {
        tmp.as_file().sync_all().map_err(io)?;
    }
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_protected_and_card_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("x.db");
        std::fs::write(&db, b"db").unwrap();
        let other = d.path().join("out.pem");
        assert!(check_output(&other, false, &[(&db, "the database")]).is_ok());
        std::fs::write(&other, b"old").unwrap();
        assert!(matches!(check_output(&other, false, &[]), Err(OutputRefused::Exists(_))));
        assert!(check_output(&other, true, &[]).is_ok());
        let alias = d.path().join(".").join("x.db");
        assert!(matches!(check_output(&alias, true, &[(&db, "the database")]), Err(OutputRefused::Protected { .. })));
        let card = d.path().join("a.card");
        std::fs::write(&card, b"card").unwrap();
        assert!(matches!(check_output(&card, true, &[]), Err(OutputRefused::Protected { .. })));
        write_atomic(&other, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&other).unwrap(), b"new");
    }
}
