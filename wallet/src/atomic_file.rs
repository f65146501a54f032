//! Crash-safe file writes: a file is either absent, or whole with its old
//! or new contents, never half written.
//!
//! The bytes go to a temporary file in the same directory (so the final
//! step stays within one filesystem), which is flushed to disk before it
//! takes the target's name; then the directory is flushed so the new name
//! survives a crash too.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

/// What to do when the target exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Fail with `io::ErrorKind::AlreadyExists` (secrets are never replaced).
    Refuse,
    /// Replace it atomically.
    Replace,
}

/// Writes `bytes` to `path` atomically. New files get mode 0600 on Unix
/// (only the owner reads wallet files).
pub fn write(path: &Path, bytes: &[u8], existing: Existing) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = temp_path(path);
    let result = write_temp(&tmp, bytes).and_then(|()| match existing {
        Existing::Replace => fs::rename(&tmp, path),
        Existing::Refuse => link_no_clobber(&tmp, path),
    });
    // The temporary name is gone after a rename; after a link (or a
    // failure) it is removed here.
    let _ = fs::remove_file(&tmp);
    result?;
    sync_dir(dir)
}

/// `.<name>.tmp-<random>` beside `path`: hidden, and unique so two
/// writers never share a temporary file.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{:016x}", OsRng.next_u64()))
}

fn write_temp(tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    // create_new: never follow a symlink planted at the temporary name.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Gives `tmp`'s file the name `path` unless `path` exists. A hard link
/// does this atomically; on filesystems without hard links it falls back
/// to check-then-rename, which a concurrent writer could race.
fn link_no_clobber(tmp: &Path, path: &Path) -> io::Result<()> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) if path.symlink_metadata().is_ok() => Err(io::ErrorKind::AlreadyExists.into()),
        Err(_) => fs::rename(tmp, path),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    // Only Unix can open a directory to flush it.
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_refuses_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"one", Existing::Refuse).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        let err = write(&path, b"two", Existing::Refuse).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write(&path, b"three", Existing::Replace).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"secret", Existing::Refuse).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("f");
        assert!(write(&path, b"x", Existing::Refuse).is_err());
    }
}
