//! Wallet login names: `login@peer`. The chain records peer names only; a
//! peer vouches for each of its logins with a signed [`NameVoucher`]
//! binding the name to the wallet's login key, which anyone holding the
//! chain's peer registry (or the genesis) can check.

use crate::identity::{verify_digest, Bytes64, CryptoError, PeerKey, Signer};
use crate::ledger::peers::{check_name, PeerNameError};
use proofs::{Domain, Hash, Hasher};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Signing context of name vouchers (no other signature uses it).
pub const VOUCHER_CONTEXT: &[u8] = b"pos/wallet/name-voucher/v1";
const VOUCHER_DOMAIN: Domain = Domain::new("pos/wallet/name-voucher/v1");

/// "Login `name` at peer `peer` of chain `chain` is the wallet key `login`",
/// signed by the peer's identity key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameVoucher {
    pub chain: Hash,
    pub peer: PeerKey,
    pub name: String,
    pub login: PeerKey,
    pub signature: Bytes64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("not a valid name: {0}")]
    Syntax(#[from] PeerNameError),
    #[error("`{0}` is not of the form login@peer")]
    NotAnAddress(String),
    #[error("the voucher is for another chain")]
    WrongChain,
    #[error("the voucher is signed by {got}, not by peer {expected}")]
    WrongPeer { expected: PeerKey, got: PeerKey },
    #[error("the voucher's signature does not verify: {0}")]
    BadSignature(CryptoError),
}

/// `login@peer`, both parts checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WalletName {
    pub login: String,
    pub peer: String,
}

impl WalletName {
    pub fn parse(s: &str) -> Result<WalletName, NameError> {
        let (login, peer) = s
            .split_once('@')
            .ok_or_else(|| NameError::NotAnAddress(s.to_string()))?;
        check_name(login)?;
        check_name(peer)?;
        Ok(WalletName {
            login: login.into(),
            peer: peer.into(),
        })
    }
}

impl std::fmt::Display for WalletName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.login, self.peer)
    }
}

impl NameVoucher {
    fn digest(chain: &Hash, peer: &PeerKey, name: &str, login: &PeerKey) -> Hash {
        let mut h = Hasher::new(VOUCHER_DOMAIN);
        h.update(&chain.0)
            .update(&peer.0)
            .update(&(name.len() as u32).to_le_bytes())
            .update(name.as_bytes())
            .update(&login.0);
        h.finalize()
    }

    /// The peer `signer` vouches that `name` is `login`.
    pub fn sign(chain: Hash, signer: &mut Signer, name: &str, login: PeerKey) -> NameVoucher {
        let peer = signer.key();
        let digest = Self::digest(&chain, &peer, name, &login);
        NameVoucher {
            chain,
            peer,
            name: name.into(),
            login,
            signature: signer.sign_digest(VOUCHER_CONTEXT, &digest),
        }
    }

    /// Check the voucher came from `peer` (its registered key) on `chain`.
    pub fn verify(&self, chain: &Hash, peer: &PeerKey) -> Result<(), NameError> {
        check_name(&self.name)?;
        if self.chain != *chain {
            return Err(NameError::WrongChain);
        }
        if self.peer != *peer {
            return Err(NameError::WrongPeer {
                expected: *peer,
                got: self.peer,
            });
        }
        let public = peer.to_public().map_err(NameError::BadSignature)?;
        let digest = Self::digest(&self.chain, &self.peer, &self.name, &self.login);
        verify_digest(&public, VOUCHER_CONTEXT, &digest, &self.signature)
            .map_err(NameError::BadSignature)
    }
}

/// Signing context of receive keys a wallet leaves with its peer.
pub const RECEIVE_KEY_CONTEXT: &[u8] = b"pos/wallet/receive-key/v1";
const RECEIVE_KEY_DOMAIN: Domain = Domain::new("pos/wallet/receive-key/v1");
/// Receive keys a peer keeps per login name.
pub const MAX_RECEIVE_KEYS: usize = 64;

/// A fresh key to pay `name@peer` to, signed by that wallet's login key,
/// so the peer handing it out cannot substitute its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveKey {
    pub key: PeerKey,
    pub signature: Bytes64,
}

impl ReceiveKey {
    fn digest(chain: &Hash, name: &WalletName, key: &PeerKey) -> Hash {
        let full = name.to_string();
        let mut h = Hasher::new(RECEIVE_KEY_DOMAIN);
        h.update(&chain.0)
            .update(&(full.len() as u32).to_le_bytes())
            .update(full.as_bytes())
            .update(&key.0);
        h.finalize()
    }

    /// `login` (the wallet's login key) offers `key` to payers of `name`.
    pub fn sign(chain: &Hash, name: &WalletName, login: &mut Signer, key: PeerKey) -> ReceiveKey {
        let digest = Self::digest(chain, name, &key);
        ReceiveKey {
            key,
            signature: login.sign_digest(RECEIVE_KEY_CONTEXT, &digest),
        }
    }

    /// Check it was offered by `login` for `name` on `chain`.
    pub fn verify(
        &self,
        chain: &Hash,
        name: &WalletName,
        login: &PeerKey,
    ) -> Result<(), NameError> {
        let public = login.to_public().map_err(NameError::BadSignature)?;
        let digest = Self::digest(chain, name, &self.key);
        verify_digest(&public, RECEIVE_KEY_CONTEXT, &digest, &self.signature)
            .map_err(NameError::BadSignature)
    }
}

/// What a payer gets from the payee's peer: the peer's voucher for the
/// name, and one receive key the payee's login key signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayTo {
    pub voucher: NameVoucher,
    pub key: ReceiveKey,
}

impl PayTo {
    /// Check both signatures: the voucher by `peer` (the registered key of
    /// the peer named in `name`), the key by the vouched login key. The key
    /// to pay to.
    pub fn verify(
        &self,
        chain: &Hash,
        name: &WalletName,
        peer: &PeerKey,
    ) -> Result<PeerKey, NameError> {
        self.voucher.verify(chain, peer)?;
        if self.voucher.name != name.login {
            return Err(NameError::NotAnAddress(format!(
                "the voucher is for {}, not {}",
                self.voucher.name, name.login
            )));
        }
        self.key.verify(chain, name, &self.voucher.login)?;
        Ok(self.key.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vouchers_bind_chain_peer_name_and_key() {
        let mut peer = Signer::from_seed([1; 32], [2; 32]);
        let chain = Hash([7; 32]);
        let login = Signer::from_seed([3; 32], [4; 32]).key();
        let v = NameVoucher::sign(chain, &mut peer, "alice", login);
        assert_eq!(v.verify(&chain, &peer.key()), Ok(()));
        assert_eq!(
            v.verify(&Hash([8; 32]), &peer.key()),
            Err(NameError::WrongChain)
        );
        let other = Signer::from_seed([5; 32], [6; 32]).key();
        assert!(matches!(
            v.verify(&chain, &other),
            Err(NameError::WrongPeer { .. })
        ));
        let mut t = v.clone();
        t.name = "alicf".into();
        assert!(matches!(
            t.verify(&chain, &peer.key()),
            Err(NameError::BadSignature(_))
        ));
        let mut t = v.clone();
        t.login = other;
        assert!(matches!(
            t.verify(&chain, &peer.key()),
            Err(NameError::BadSignature(_))
        ));
        let mut t = v;
        t.name = "Alice".into();
        assert!(matches!(
            t.verify(&chain, &peer.key()),
            Err(NameError::Syntax(_))
        ));
    }

    #[test]
    fn receive_keys_are_bound_to_the_vouched_login() {
        let chain = Hash([7; 32]);
        let mut peer = Signer::from_seed([1; 32], [2; 32]);
        let mut login = Signer::from_seed([3; 32], [4; 32]);
        let name = WalletName::parse("bob@peer-1").unwrap();
        let key = Signer::from_seed([9; 32], [0; 32]).key();
        let pay = PayTo {
            voucher: NameVoucher::sign(chain, &mut peer, "bob", login.key()),
            key: ReceiveKey::sign(&chain, &name, &mut login, key),
        };
        assert_eq!(pay.verify(&chain, &name, &peer.key()), Ok(key));
        // The peer swaps in its own key: the login signature fails.
        let mut t = pay.clone();
        t.key.key = peer.key();
        assert!(t.verify(&chain, &name, &peer.key()).is_err());
        // The peer vouches for its own login key and signs the key itself:
        // the voucher is valid but names another login; only a payer who
        // knew bob's login key would notice, so the voucher must be the
        // peer's word, and it is: signed, and kept as evidence.
        let mut mallory = Signer::from_seed([5; 32], [6; 32]);
        let forged = PayTo {
            voucher: NameVoucher::sign(chain, &mut peer, "bob", mallory.key()),
            key: ReceiveKey::sign(&chain, &name, &mut mallory, key),
        };
        assert!(forged.verify(&chain, &name, &peer.key()).is_ok());
        assert_ne!(forged.voucher.login, pay.voucher.login);
        // Another name's key is refused.
        let alice = WalletName::parse("alice@peer-1").unwrap();
        assert!(pay.verify(&chain, &alice, &peer.key()).is_err());
    }

    #[test]
    fn wallet_names_parse() {
        let n = WalletName::parse("w-0@peer-1").unwrap();
        assert_eq!((n.login.as_str(), n.peer.as_str()), ("w-0", "peer-1"));
        assert_eq!(n.to_string(), "w-0@peer-1");
        assert!(WalletName::parse("alice").is_err());
        assert!(WalletName::parse("Alice@peer").is_err());
        assert!(WalletName::parse("a@b@c").is_err());
    }
}
