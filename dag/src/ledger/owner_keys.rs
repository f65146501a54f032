//! Per-output owner keys derived from one wallet seed.
//!
//! Every output is owned by a fresh key, hard-derived (schnorrkel HDKD) from
//! the wallet's 32-byte seed and a (purpose, index) pair. Hard derivation
//! means neither a derived key nor its public key reveals the wallet or any
//! sibling key, so outputs are unlinkable by anyone without the seed, while
//! the wallet can re-derive every key it ever used from the seed alone.

use schnorrkel::derive::ChainCode;
use schnorrkel::{ExpansionMode, Keypair, MiniSecretKey};

use crate::identity::PeerKey;

/// Domain tag of owner-key derivation; with the purpose byte and the
/// 8-byte index it fills the 32-byte chain code exactly.
const DERIVE_TAG: &[u8; 23] = b"pos/ledger/owner-key/v1";

/// What a derived key is for; each purpose has its own index space.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum KeyPurpose {
    /// The wallet's login key (index 0) that its peer vouches for.
    Login,
    /// Keys handed out to receive incoming payments.
    Receive,
    /// Keys owning change outputs of the wallet's own payments.
    Change,
    /// Keys that issue (and may mint) assets.
    Issuer,
}

impl KeyPurpose {
    /// The byte in the chain code; fixed forever, as keys depend on it.
    fn tag(self) -> u8 {
        match self {
            KeyPurpose::Login => 1,
            KeyPurpose::Receive => 2,
            KeyPurpose::Change => 3,
            KeyPurpose::Issuer => 4,
        }
    }
}

/// The wallet seed from which all owner keys derive.
pub struct OwnerKeys {
    seed: MiniSecretKey,
}

impl std::fmt::Debug for OwnerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the seed.
        write!(f, "OwnerKeys({:?})", self.login_key())
    }
}

impl OwnerKeys {
    /// Any 32 bytes are a valid seed (schnorrkel `MiniSecretKey`), which is
    /// zeroed when this value is dropped.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        OwnerKeys {
            seed: MiniSecretKey::from_bytes(&seed).expect("32 bytes is a valid mini secret key"),
        }
    }

    /// The keypair for (`purpose`, `index`). Deterministic in the seed.
    pub fn derive(&self, purpose: KeyPurpose, index: u64) -> Keypair {
        let mut cc = [0u8; 32];
        cc[..23].copy_from_slice(DERIVE_TAG);
        cc[23] = purpose.tag();
        cc[24..].copy_from_slice(&index.to_le_bytes());
        // Ed25519 expansion as in identity.rs, so a derived key behaves like
        // any other key of the project.
        let (mini, _) = self.seed.hard_derive_mini_secret_key(
            Some(ChainCode(cc)),
            DERIVE_TAG,
            ExpansionMode::Ed25519,
        );
        mini.expand_to_keypair(ExpansionMode::Ed25519)
    }

    /// The public key for (`purpose`, `index`).
    pub fn public(&self, purpose: KeyPurpose, index: u64) -> PeerKey {
        PeerKey(self.derive(purpose, index).public.to_bytes())
    }

    /// The wallet's login keypair: `Login`, index 0.
    pub fn login(&self) -> Keypair {
        self.derive(KeyPurpose::Login, 0)
    }

    pub fn login_key(&self) -> PeerKey {
        self.public(KeyPurpose::Login, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::verify_digest;
    use crate::ledger::multisig::TX_CONTEXT;
    use proofs::Hash;
    use schnorrkel::signing_context;
    use std::collections::BTreeSet;

    const PURPOSES: [KeyPurpose; 3] = [KeyPurpose::Login, KeyPurpose::Receive, KeyPurpose::Change];

    #[test]
    fn derivation_is_deterministic_in_the_seed() {
        let a = OwnerKeys::from_seed([7; 32]);
        let b = OwnerKeys::from_seed([7; 32]);
        for p in PURPOSES {
            for i in [0, 1, 2, u64::MAX] {
                assert_eq!(a.public(p, i), b.public(p, i));
                assert_eq!(
                    a.derive(p, i).secret.to_bytes(),
                    b.derive(p, i).secret.to_bytes()
                );
            }
        }
        assert_eq!(a.login_key(), a.public(KeyPurpose::Login, 0));
        assert_eq!(a.login().public.to_bytes(), a.login_key().0);
    }

    #[test]
    fn purposes_indices_and_seeds_give_distinct_keys() {
        let a = OwnerKeys::from_seed([7; 32]);
        let b = OwnerKeys::from_seed([8; 32]);
        let mut seen = BTreeSet::new();
        for keys in [&a, &b] {
            for p in PURPOSES {
                for i in [0, 1, 2, 255, 256, 1 << 32, u64::MAX] {
                    assert!(seen.insert(keys.public(p, i)), "{p:?} {i} repeats");
                }
            }
        }
        // Derived keys are not the seed's own key.
        let root = MiniSecretKey::from_bytes(&[7; 32])
            .unwrap()
            .expand_to_keypair(ExpansionMode::Ed25519);
        assert!(!seen.contains(&PeerKey(root.public.to_bytes())));
    }

    #[test]
    fn derived_keys_sign_and_verify() {
        let keys = OwnerKeys::from_seed([3; 32]);
        let digest = Hash([9; 32]);
        for p in PURPOSES {
            let kp = keys.derive(p, 5);
            let sig = kp.sign(signing_context(TX_CONTEXT).bytes(&digest.0));
            let sig = crate::identity::Bytes64(sig.to_bytes());
            let public = keys.public(p, 5).to_public().unwrap();
            assert!(verify_digest(&public, TX_CONTEXT, &digest, &sig).is_ok());
            let other = keys.public(p, 6).to_public().unwrap();
            assert!(verify_digest(&other, TX_CONTEXT, &digest, &sig).is_err());
        }
    }

    #[test]
    fn debug_does_not_print_the_seed() {
        let keys = OwnerKeys::from_seed([0xab; 32]);
        let s = format!("{keys:?}");
        assert!(!s.contains("ab, ab") && !s.contains("abab"), "{s}");
    }
}
