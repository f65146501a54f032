//! The wallet directory `W`: where one wallet keeps its files.
//!
//! Now it holds `W/keystore` (the encrypted phrase, see [`crate::keystore`]);
//! later the wallet's outputs with their proofs, the certified roots it has
//! checked, and the socket of `wallet online` go beside it. Files are
//! written atomically ([`crate::atomic_file`]) and readable by the owner
//! only.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rand_core::OsRng;
use thiserror::Error;

use crate::atomic_file::{self, Existing};
use crate::keystore::{self, KdfParams, KeystoreError};
use crate::phrase::Phrase;

/// The keystore's file name in the wallet directory.
pub const KEYSTORE_FILE: &str = "keystore";

#[derive(Debug, Error)]
pub enum DirError {
    #[error("no wallet in {0}: run `wallet create` or `wallet restore` first")]
    NotAWallet(PathBuf),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error(
        "a wallet keystore already exists at {0}; refusing to overwrite it (choose another --dir)"
    )]
    KeystoreExists(PathBuf),
    #[error("cannot create the wallet directory {path}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} is {len} bytes or more, larger than any keystore")]
    TooLarge { path: PathBuf, len: usize },
    #[error("keystore {path}")]
    Keystore {
        path: PathBuf,
        source: KeystoreError,
    },
}

/// An existing (or just created) wallet directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletDir {
    root: PathBuf,
}

impl WalletDir {
    /// Creates the directory `root` (and its parents; the last one mode
    /// 0700 on Unix) and writes a keystore of `phrase` under `password`.
    /// Refuses a directory that already has a keystore.
    pub fn create(
        root: &Path,
        phrase: &Phrase,
        password: &[u8],
        params: KdfParams,
    ) -> Result<WalletDir, DirError> {
        if root.exists() && !root.is_dir() {
            return Err(DirError::NotADirectory(root.to_path_buf()));
        }
        let dir = WalletDir {
            root: root.to_path_buf(),
        };
        // Checked before the slow key derivation; the write checks again
        // atomically.
        if dir.keystore_path().exists() {
            return Err(DirError::KeystoreExists(dir.keystore_path()));
        }
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(root).map_err(|source| DirError::Create {
            path: root.to_path_buf(),
            source,
        })?;
        let path = dir.keystore_path();
        let bytes = keystore::seal(phrase, password, params, &mut OsRng).map_err(|source| {
            DirError::Keystore {
                path: path.clone(),
                source,
            }
        })?;
        atomic_file::write(&path, &bytes, Existing::Refuse).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                DirError::KeystoreExists(path.clone())
            } else {
                DirError::Write {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        Ok(dir)
    }

    /// An existing wallet directory: one holding a keystore.
    pub fn open(root: &Path) -> Result<WalletDir, DirError> {
        let dir = WalletDir {
            root: root.to_path_buf(),
        };
        if root.exists() && !root.is_dir() {
            return Err(DirError::NotADirectory(dir.root));
        }
        if !dir.keystore_path().exists() {
            return Err(DirError::NotAWallet(dir.root));
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn keystore_path(&self) -> PathBuf {
        self.root.join(KEYSTORE_FILE)
    }

    /// The keystore's bytes, read with a bound so that a huge file in its
    /// place is refused rather than loaded.
    pub fn read_keystore(&self) -> Result<Vec<u8>, DirError> {
        let path = self.keystore_path();
        let read_err = |source| DirError::Read {
            path: path.clone(),
            source,
        };
        let file = fs::File::open(&path).map_err(read_err)?;
        let mut bytes = Vec::with_capacity(keystore::MAX_FILE_LEN + 1);
        file.take(keystore::MAX_FILE_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() > keystore::MAX_FILE_LEN {
            return Err(DirError::TooLarge {
                path,
                len: bytes.len(),
            });
        }
        Ok(bytes)
    }

    /// Decrypts the keystore: the wallet's phrase, from which every key
    /// derives.
    pub fn unlock(&self, password: &[u8]) -> Result<Phrase, DirError> {
        let bytes = self.read_keystore()?;
        keystore::open(&bytes, password).map_err(|source| DirError::Keystore {
            path: self.keystore_path(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const FAST: KdfParams = KdfParams::INSECURE_FOR_TESTS;

    fn phrase(n: u64) -> Phrase {
        Phrase::generate_with(&mut ChaCha20Rng::seed_from_u64(n)).unwrap()
    }

    #[test]
    fn create_then_unlock() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a").join("w");
        let created = WalletDir::create(&root, &phrase(1), b"pw", FAST).unwrap();
        let opened = WalletDir::open(&root).unwrap();
        assert_eq!(created, opened);
        assert_eq!(opened.unlock(b"pw").unwrap(), phrase(1));
        assert!(matches!(
            opened.unlock(b"pW"),
            Err(DirError::Keystore {
                source: KeystoreError::WrongPasswordOrCorrupt,
                ..
            })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&root), 0o700);
            assert_eq!(mode(&opened.keystore_path()), 0o600);
        }
    }

    #[test]
    fn restore_on_a_fresh_dir_gives_the_same_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let first = WalletDir::create(&tmp.path().join("one"), &phrase(2), b"a", FAST).unwrap();
        let words = first.unlock(b"a").unwrap().words();
        let restored = Phrase::parse(&words).unwrap();
        let second = WalletDir::create(&tmp.path().join("two"), &restored, b"b", FAST).unwrap();
        assert_eq!(
            first.unlock(b"a").unwrap().owner_keys().login_key(),
            second.unlock(b"b").unwrap().owner_keys().login_key()
        );
    }

    #[test]
    fn create_refuses_an_existing_keystore() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = WalletDir::create(tmp.path(), &phrase(3), b"", FAST).unwrap();
        let before = fs::read(dir.keystore_path()).unwrap();
        let err = WalletDir::create(tmp.path(), &phrase(4), b"", FAST).unwrap_err();
        assert!(matches!(err, DirError::KeystoreExists(_)), "{err}");
        assert_eq!(fs::read(dir.keystore_path()).unwrap(), before);
    }

    #[test]
    fn open_says_how_to_make_a_wallet() {
        let tmp = tempfile::tempdir().unwrap();
        for root in [tmp.path().join("absent"), tmp.path().to_path_buf()] {
            let err = WalletDir::open(&root).unwrap_err();
            assert!(matches!(err, DirError::NotAWallet(_)));
            let msg = err.to_string();
            assert!(
                msg.contains("wallet create") && msg.contains("wallet restore"),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_file_is_not_a_wallet_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(matches!(
            WalletDir::open(&file),
            Err(DirError::NotADirectory(_))
        ));
        assert!(matches!(
            WalletDir::create(&file, &phrase(5), b"", FAST),
            Err(DirError::NotADirectory(_))
        ));
    }

    #[test]
    fn an_oversized_or_damaged_keystore_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = WalletDir::create(tmp.path(), &phrase(6), b"", FAST).unwrap();
        fs::write(dir.keystore_path(), vec![0u8; 1 << 20]).unwrap();
        assert!(matches!(
            dir.unlock(b""),
            Err(DirError::TooLarge { len, .. }) if len == keystore::MAX_FILE_LEN + 1
        ));
        fs::write(dir.keystore_path(), b"posWkey\x01").unwrap();
        assert!(matches!(
            dir.unlock(b""),
            Err(DirError::Keystore {
                source: KeystoreError::Truncated { .. },
                ..
            })
        ));
    }
}
