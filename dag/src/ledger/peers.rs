//! Peers on chain: globally unique names, identity keys and UDP addresses,
//! and the vouching statement by which a peer binds a wallet's login name.
//!
//! The ledger records peers only. A wallet's name is `login@peer`; the peer
//! signs a [`LoginVouch`] binding the login to the wallet's key, and anyone
//! holding the peer's registered key checks it. Peer names are never
//! reused: a retired peer keeps its name, so an old `login@peer` can never
//! come to mean someone else.

use crate::identity::{verify_digest, Bytes64, CryptoError, PeerKey, Signer};
use proofs::{Domain, Hash, Hasher};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Signing context of login vouches.
pub const LOGIN_VOUCH_CONTEXT: &[u8] = b"pos/ledger/login-vouch/v1";
/// Domain of the digest a login vouch signs.
pub const LOGIN_VOUCH_DOMAIN: Domain = Domain::new("pos/ledger/login-vouch/v1");
/// Domain of the output-set-style key a peer name maps to in the registry.
pub const PEER_NAME_DOMAIN: Domain = Domain::new("pos/ledger/peer-name/v1");

pub const MIN_NAME: usize = 2;
pub const MAX_NAME: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerNameError {
    #[error("name of {0} bytes is outside {MIN_NAME}..={MAX_NAME}")]
    Length(usize),
    #[error("names use lower-case ASCII letters, digits and '-'")]
    BadChar,
    #[error("a name starts with a letter and does not end with '-'")]
    BadEdge,
    #[error("address {0} is not a usable peer address")]
    BadAddress(SocketAddr),
}

/// Peer and login names: 2..=32 bytes of `a-z`, `0-9` and `-`, starting
/// with a letter, not ending with `-`. One spelling per name (no case
/// folding needed), and safe in `login@peer`, file names and logs.
pub fn check_name(name: &str) -> Result<(), PeerNameError> {
    if !(MIN_NAME..=MAX_NAME).contains(&name.len()) {
        return Err(PeerNameError::Length(name.len()));
    }
    let b = name.as_bytes();
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        return Err(PeerNameError::BadChar);
    }
    if !b[0].is_ascii_lowercase() || b[b.len() - 1] == b'-' {
        return Err(PeerNameError::BadEdge);
    }
    Ok(())
}

/// A peer address must be a concrete endpoint others can send to.
pub fn check_address(addr: &SocketAddr) -> Result<(), PeerNameError> {
    if addr.port() == 0 || addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return Err(PeerNameError::BadAddress(*addr));
    }
    Ok(())
}

/// The registry key of a peer name.
pub fn name_key(name: &str) -> Hash {
    Hash::of(PEER_NAME_DOMAIN, name.as_bytes())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerStatus {
    Active,
    /// Retired at this height: out of every later committee; the name stays
    /// taken.
    Retired(u64),
}

/// A registered peer as the ledger records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub name: String,
    pub key: PeerKey,
    pub addr: SocketAddr,
    pub registered_at: u64,
    pub status: PeerStatus,
}

impl PeerRecord {
    pub fn is_active(&self) -> bool {
        self.status == PeerStatus::Active
    }
}

/// A peer's statement that `login@peer` is the wallet with `wallet_key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginVouch {
    pub chain: Hash,
    pub login: String,
    pub peer: String,
    pub wallet_key: PeerKey,
}

impl LoginVouch {
    pub fn digest(&self) -> Hash {
        let mut h = Hasher::new(LOGIN_VOUCH_DOMAIN);
        h.update(&proofs::encode(self));
        h.finalize()
    }

    pub fn sign(&self, peer: &mut Signer) -> Bytes64 {
        peer.sign_digest(LOGIN_VOUCH_CONTEXT, &self.digest())
    }

    /// Check the names and the signature of `peer_key` (the key the ledger
    /// records for `self.peer`; looking it up is the caller's part).
    pub fn verify(&self, peer_key: &PeerKey, sig: &Bytes64) -> Result<(), VouchError> {
        check_name(&self.login)?;
        check_name(&self.peer)?;
        verify_digest(
            &peer_key.to_public()?,
            LOGIN_VOUCH_CONTEXT,
            &self.digest(),
            sig,
        )?;
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VouchError {
    #[error(transparent)]
    Name(#[from] PeerNameError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["alpha", "p2", "peer-one", "a-1"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_name("a"), Err(PeerNameError::Length(1)));
        assert_eq!(check_name("Alpha"), Err(PeerNameError::BadChar));
        assert_eq!(check_name("al pha"), Err(PeerNameError::BadChar));
        assert_eq!(check_name("al@pha"), Err(PeerNameError::BadChar));
        assert_eq!(check_name("1alpha"), Err(PeerNameError::BadEdge));
        assert_eq!(check_name("alpha-"), Err(PeerNameError::BadEdge));
        assert!(check_name(&"a".repeat(33)).is_err());
    }

    #[test]
    fn addresses() {
        assert!(check_address(&"127.0.0.1:7000".parse().unwrap()).is_ok());
        assert!(check_address(&"[::1]:7000".parse().unwrap()).is_ok());
        assert!(check_address(&"0.0.0.0:7000".parse().unwrap()).is_err());
        assert!(check_address(&"127.0.0.1:0".parse().unwrap()).is_err());
    }

    #[test]
    fn vouch_binds_every_field() {
        let mut peer = Signer::from_seed([1; 32], [2; 32]);
        let v = LoginVouch {
            chain: Hash([9; 32]),
            login: "alice".into(),
            peer: "alpha".into(),
            wallet_key: PeerKey([5; 32]),
        };
        let sig = v.sign(&mut peer);
        assert_eq!(v.verify(&peer.key(), &sig), Ok(()));
        let mut w = v.clone();
        w.login = "mallory".into();
        assert!(w.verify(&peer.key(), &sig).is_err());
        let mut w = v.clone();
        w.wallet_key = PeerKey([6; 32]);
        assert!(w.verify(&peer.key(), &sig).is_err());
        let other = Signer::from_seed([3; 32], [2; 32]);
        assert!(v.verify(&other.key(), &sig).is_err());
    }
}
