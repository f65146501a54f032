//! The Hello: channel binding of a QUIC connection to schnorrkel identities.
//!
//! Both ends of one TLS session derive the same exporter value from it
//! (RFC 5705/8446 keying-material exporter, label [`EXPORTER_LABEL`], context
//! the chain id); a man in the middle runs two sessions and so sees two
//! different values. Each side signs its value with its identity key under
//! [`LINK_CONTEXT`] and sends `Hello { chain, key, signature }`; the other
//! side checks the signature against *its own* exporter value, so a valid
//! Hello proves the holder of `key` is the other end of this very session.

use dag::identity::{verify_digest, Bytes64, CryptoError};
use dag::{PeerKey, Signer};
use proofs::{CodecError, Hash};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use thiserror::Error;

/// Signing context of link Hellos (distinct from every `dag::identity`
/// context, so a Hello signature is never valid as anything else).
pub const LINK_CONTEXT: &[u8] = b"pos/peer/link/v1";

/// TLS exporter label of the channel-binding value.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-pos-link/v1";

/// Encoded size of a Hello: 32 (chain) + 32 (key) + 64 (signature), postcard
/// fixed-size arrays without length prefixes.
pub const HELLO_LEN: usize = 128;

/// The first frame each side sends on its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub chain: Hash,
    pub key: PeerKey,
    pub signature: Bytes64,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        proofs::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        proofs::decode(bytes, HELLO_LEN)
    }
}

/// Why a Hello was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("malformed hello: {0}")]
    Malformed(#[from] CodecError),
    #[error("hello is for another chain")]
    WrongChain,
    #[error("hello signature: {0}")]
    Signature(#[from] CryptoError),
    #[error("peer is {got:?}, expected {expected:?}")]
    UnexpectedKey { expected: PeerKey, got: PeerKey },
    #[error("peer presented our own key")]
    OwnKey,
    #[error("key {0:?} is not authorized")]
    Unauthorized(PeerKey),
    #[error("TLS exporter unavailable")]
    Exporter,
}

/// The identity that signs Hellos. Implemented for `Mutex<Signer>`; a
/// daemon that keeps its key elsewhere (or a test that misbehaves on
/// purpose) implements it itself.
pub trait LinkSigner: Send + Sync {
    fn key(&self) -> PeerKey;
    /// Sign the 32-byte exporter value under [`LINK_CONTEXT`].
    fn sign_link(&self, exporter: &[u8; 32]) -> Bytes64;
}

impl LinkSigner for Mutex<Signer> {
    fn key(&self) -> PeerKey {
        self.lock().unwrap_or_else(|p| p.into_inner()).key()
    }

    fn sign_link(&self, exporter: &[u8; 32]) -> Bytes64 {
        // A poisoned lock only means another signer call panicked; the key
        // and RNG are still usable.
        self.lock()
            .unwrap_or_else(|p| p.into_inner())
            .sign_digest(LINK_CONTEXT, &Hash(*exporter))
    }
}

/// The channel-binding value of `conn` for `chain`.
pub(crate) fn exporter(conn: &quinn::Connection, chain: &Hash) -> Result<[u8; 32], AuthError> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, &chain.0)
        .map_err(|_| AuthError::Exporter)?;
    Ok(out)
}

/// Our Hello for a session with exporter value `exporter`.
pub(crate) fn make_hello(signer: &dyn LinkSigner, chain: Hash, exporter: &[u8; 32]) -> Hello {
    Hello {
        chain,
        key: signer.key(),
        signature: signer.sign_link(exporter),
    }
}

/// What the receiver of a Hello knows and requires.
pub(crate) struct HelloCheck<'a> {
    pub chain: &'a Hash,
    pub exporter: &'a [u8; 32],
    pub own_key: &'a PeerKey,
    /// The key the dialler meant to reach; `None` on the accepting side.
    pub expected: Option<&'a PeerKey>,
    pub authorize: &'a (dyn Fn(&PeerKey) -> bool + Send + Sync),
}

impl HelloCheck<'_> {
    /// Check a received Hello; cheap checks first, the signature last.
    pub(crate) fn check(&self, bytes: &[u8]) -> Result<Hello, AuthError> {
        let hello = Hello::decode(bytes)?;
        if hello.chain != *self.chain {
            return Err(AuthError::WrongChain);
        }
        // Both ends sign the same value, so a Hello reflected back to its
        // sender would verify; refusing our own key rules that out.
        if hello.key == *self.own_key {
            return Err(AuthError::OwnKey);
        }
        if let Some(expected) = self.expected {
            if hello.key != *expected {
                return Err(AuthError::UnexpectedKey {
                    expected: *expected,
                    got: hello.key,
                });
            }
        }
        if !(self.authorize)(&hello.key) {
            return Err(AuthError::Unauthorized(hello.key));
        }
        let public = hello.key.to_public()?;
        verify_digest(
            &public,
            LINK_CONTEXT,
            &Hash(*self.exporter),
            &hello.signature,
        )?;
        Ok(hello)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(seed: u8) -> Mutex<Signer> {
        Mutex::new(Signer::from_seed([seed; 32], [seed ^ 0xff; 32]))
    }

    #[test]
    fn hello_has_fixed_layout() {
        let h = Hello {
            chain: Hash([1; 32]),
            key: PeerKey([2; 32]),
            signature: Bytes64([3; 64]),
        };
        let bytes = h.encode();
        assert_eq!(bytes.len(), HELLO_LEN);
        assert_eq!(&bytes[..32], &[1; 32]);
        assert_eq!(&bytes[32..64], &[2; 32]);
        assert_eq!(&bytes[64..], &[3; 64]);
        assert_eq!(Hello::decode(&bytes), Ok(h));
        assert!(Hello::decode(&bytes[..127]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(Hello::decode(&long).is_err());
    }

    #[test]
    fn checks_chain_key_authorization_and_exporter() {
        let a = signer(1);
        let b = signer(2);
        let chain = Hash([9; 32]);
        let exp = [7u8; 32];
        let allow_all = |_: &PeerKey| true;
        let b_key = b.key();
        let check = HelloCheck {
            chain: &chain,
            exporter: &exp,
            own_key: &b_key,
            expected: None,
            authorize: &allow_all,
        };
        let good = make_hello(&a, chain, &exp);
        assert_eq!(check.check(&good.encode()), Ok(good));

        let other_chain = make_hello(&a, Hash([8; 32]), &exp);
        assert_eq!(
            check.check(&other_chain.encode()),
            Err(AuthError::WrongChain)
        );

        let other_exporter = make_hello(&a, chain, &[6u8; 32]);
        assert_eq!(
            check.check(&other_exporter.encode()),
            Err(AuthError::Signature(CryptoError::BadSignature))
        );

        let reflected = make_hello(&b, chain, &exp);
        assert_eq!(check.check(&reflected.encode()), Err(AuthError::OwnKey));

        let c_key = signer(3).key();
        let expecting_c = HelloCheck {
            expected: Some(&c_key),
            ..check
        };
        assert!(matches!(
            expecting_c.check(&good.encode()),
            Err(AuthError::UnexpectedKey { .. })
        ));

        let deny_a = |k: &PeerKey| *k != a.key();
        let denying = HelloCheck {
            authorize: &deny_a,
            ..check
        };
        assert_eq!(
            denying.check(&good.encode()),
            Err(AuthError::Unauthorized(a.key()))
        );

        // A signature under another context (an event signature over the
        // same bytes) is not a Hello signature.
        let mut s = Signer::from_seed([1; 32], [0; 32]);
        let forged = Hello {
            signature: s.sign_digest(dag::identity::EVENT_CONTEXT, &Hash(exp)),
            ..good
        };
        assert!(matches!(
            check.check(&forged.encode()),
            Err(AuthError::Signature(_))
        ));
    }
}
