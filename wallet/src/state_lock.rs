//! One writer of `W/chain.state` at a time. A command and `wallet online`
//! (which syncs when its peer tells it of incoming outputs) both load the
//! state, change it and save it; without a lock the later save would drop
//! the earlier one's changes (a spent output, a receive key handed out).
//! An advisory lock on `W/chain.lock`, held from load to save, released
//! when dropped (also when the process dies: the kernel drops it).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The lock file's name in a wallet directory.
pub const LOCK_FILE: &str = "chain.lock";

#[derive(Debug, Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another wallet process is changing this wallet's state ({path} is locked): \
         try again when it is done"
    )]
    Busy { path: PathBuf },
}

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Take the lock, waiting for another process that holds it.
    pub fn take(dir: &Path) -> Result<StateLock, LockError> {
        let (file, path) = open(dir)?;
        match file.try_lock() {
            Ok(()) => return Ok(StateLock { _file: file }),
            Err(TryLockError::WouldBlock) => {
                tracing::info!("waiting for another wallet process to finish with the state");
            }
            Err(TryLockError::Error(source)) => return Err(LockError::Io { path, source }),
        }
        file.lock()
            .map_err(|source| LockError::Io { path, source })?;
        Ok(StateLock { _file: file })
    }

    /// [`StateLock::take`] off an async runtime's threads (a task of the
    /// online wallet waits for a command without stalling the others).
    pub async fn take_async(dir: &Path) -> Result<StateLock, LockError> {
        let dir = dir.to_path_buf();
        let path = dir.join(LOCK_FILE);
        tokio::task::spawn_blocking(move || StateLock::take(&dir))
            .await
            .map_err(|e| LockError::Io {
                path,
                source: std::io::Error::other(e),
            })?
    }

    /// Take the lock if it is free; [`LockError::Busy`] otherwise (for
    /// callers that must not wait, like the online wallet's event loop).
    pub fn try_take(dir: &Path) -> Result<StateLock, LockError> {
        let (file, path) = open(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(StateLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(LockError::Busy { path }),
            Err(TryLockError::Error(source)) => Err(LockError::Io { path, source }),
        }
    }
}

fn open(dir: &Path) -> Result<(File, PathBuf), LockError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| LockError::Io {
            path: path.clone(),
            source,
        })?;
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_dropping_releases() {
        let dir = tempfile::tempdir().unwrap();
        let held = StateLock::take(dir.path()).unwrap();
        // Locks are per open file description: a second open conflicts as
        // a second process would.
        assert!(matches!(
            StateLock::try_take(dir.path()),
            Err(LockError::Busy { .. })
        ));
        let waiter = {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || StateLock::take(&dir).map(|_| ()))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished());
        drop(held);
        waiter.join().unwrap().unwrap();
        StateLock::try_take(dir.path()).unwrap();
    }
}
