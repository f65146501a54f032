//! The peer's identity key: a 32-byte secret seed in `DIR/identity.key`
//! (64 hex digits), readable by its owner only.

use anyhow::{bail, Context, Result};
use dag::identity::Signer;
use rand_core::{OsRng, RngCore};
use std::io::Write;
use std::path::Path;

pub const KEY_FILE: &str = "identity.key";

/// Create a new secret in `dir`; refuses to overwrite one.
pub fn create(dir: &Path) -> Result<[u8; 32]> {
    let path = dir.join(KEY_FILE);
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    writeln!(f, "{}", dag::hex::encode(&secret))?;
    f.sync_all()?;
    Ok(secret)
}

/// Read the secret of `dir`.
pub fn load(dir: &Path) -> Result<[u8; 32]> {
    let path = dir.join(KEY_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading identity key {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "identity key {} is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    dag::hex::decode_array::<32>(text.trim()).with_context(|| {
        format!(
            "identity key {}: not 64 lower-case hex digits",
            path.display()
        )
    })
}

/// A signer for the secret, with fresh signing randomness from the OS.
pub fn signer(secret: [u8; 32]) -> Signer {
    let mut rng_seed = [0u8; 32];
    OsRng.fill_bytes(&mut rng_seed);
    Signer::from_seed(secret, rng_seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let s = create(dir.path()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), s);
        assert!(create(dir.path()).is_err());
        assert_eq!(signer(s).key(), signer(s).key());
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_key_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        create(dir.path()).unwrap();
        let p = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(dir.path()).is_err());
    }
}
