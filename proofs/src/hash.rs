//! Blake2b-256 with a domain tag per hashed type.
//!
//! Every hashed type names its own [`Domain`], so bytes that are valid as two
//! different types can never produce the same hash for both. The tag is
//! length-prefixed before the data, which keeps the framing unambiguous.

use blake2::digest::core_api::{Buffer, VariableOutputCore};
use blake2::digest::{Update, VariableOutput};
use blake2::{Blake2bVar, Blake2bVarCore};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The tag that separates one hashed type from every other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Domain(&'static str);

impl Domain {
    /// A tag; by convention `pos/<crate>/<type>/v<N>`. Tags are at most 255 bytes.
    pub const fn new(tag: &'static str) -> Self {
        assert!(tag.len() <= 255, "domain tags are at most 255 bytes");
        Domain(tag)
    }

    pub const fn as_str(&self) -> &'static str {
        self.0
    }
}

/// A 32-byte Blake2b-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub const ZERO: Hash = Hash([0u8; 32]);

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Hash `data` under `domain` in one call.
    pub fn of(domain: Domain, data: &[u8]) -> Hash {
        let mut h = Hasher::new(domain);
        h.update(data);
        h.finalize()
    }

    /// The first 8 bytes as a little-endian integer: a cheap, well-mixed key.
    pub fn prefix_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(b)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…")
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Incremental hashing under one domain.
pub struct Hasher(Blake2bVar);

impl Hasher {
    pub fn new(domain: Domain) -> Self {
        // 32 is a valid Blake2b output size, so this cannot fail.
        let mut inner = Blake2bVar::new(32).expect("32 is a valid blake2b output length");
        let tag = domain.0.as_bytes();
        inner.update(&[tag.len() as u8]);
        inner.update(tag);
        Hasher(inner)
    }

    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.0.update(data);
        self
    }

    pub fn finalize(self) -> Hash {
        let mut out = [0u8; 32];
        self.0
            .finalize_variable(&mut out)
            .expect("output buffer has the configured length");
        Hash(out)
    }
}

/// Hashing two 32-byte values under one domain (a Merkle node's children,
/// a leaf's key and value) with exactly the output of `Hasher::new(domain)`
/// fed `a` then `b`, for less work.
///
/// The framed input (tag length, tag, 64 bytes) fits one 128-byte Blake2b
/// block whenever the tag has at most 63 bytes. The initial Blake2b state
/// and the block's prefix are then fixed per domain, so they are set up once
/// here and each hash is a copy of that state and a single final
/// compression, without [`Hasher`]'s parameter setup and buffering. Longer
/// tags fall back to [`Hasher`].
#[derive(Clone)]
pub struct PairHasher {
    domain: Domain,
    /// Blake2b-256 with nothing absorbed yet.
    core: Blake2bVarCore,
    /// The tag framing, then room for `a ‖ b`.
    block: [u8; 128],
    /// Where `a` goes in `block`; `None` when the input does not fit.
    at: Option<usize>,
}

impl PairHasher {
    pub fn new(domain: Domain) -> Self {
        // 32 is a valid Blake2b output size, so this cannot fail.
        let core = Blake2bVarCore::new(32).expect("32 is a valid blake2b output length");
        let tag = domain.0.as_bytes();
        let mut block = [0u8; 128];
        let at = 1 + tag.len();
        let fits = at + 64 <= block.len();
        if fits {
            block[0] = tag.len() as u8;
            block[1..at].copy_from_slice(tag);
        }
        PairHasher {
            domain,
            core,
            block,
            at: fits.then_some(at),
        }
    }

    pub fn domain(&self) -> Domain {
        self.domain
    }

    /// The hash of `a ‖ b` under the domain.
    #[inline]
    pub fn hash(&self, a: &[u8; 32], b: &[u8; 32]) -> Hash {
        let Some(at) = self.at else {
            return self.slow(a, b);
        };
        let mut block = self.block;
        let Some(data) = block.get_mut(at..at + 64) else {
            return self.slow(a, b);
        };
        let (x, y) = data.split_at_mut(32);
        x.copy_from_slice(a);
        y.copy_from_slice(b);
        let Some(Ok(mut buffer)) = block.get(..at + 64).map(Buffer::<Blake2bVarCore>::try_new)
        else {
            return self.slow(a, b);
        };
        let mut core = self.core.clone();
        let mut full = Default::default();
        core.finalize_variable_core(&mut buffer, &mut full);
        let mut out = [0u8; 32];
        // Blake2b's output of length 32 is the first 32 bytes of its state.
        out.copy_from_slice(&full[..32]);
        Hash(out)
    }

    fn slow(&self, a: &[u8; 32], b: &[u8; 32]) -> Hash {
        let mut h = Hasher::new(self.domain);
        h.update(a).update(b);
        h.finalize()
    }
}

impl fmt::Debug for PairHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PairHasher").field(&self.domain).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Domain = Domain::new("pos/test/a/v1");
    const B: Domain = Domain::new("pos/test/b/v1");

    #[test]
    fn domains_separate_equal_bytes() {
        assert_ne!(Hash::of(A, b"x"), Hash::of(B, b"x"));
        assert_eq!(Hash::of(A, b"x"), Hash::of(A, b"x"));
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut h = Hasher::new(A);
        h.update(b"ab").update(b"cd");
        assert_eq!(h.finalize(), Hash::of(A, b"abcd"));
    }

    #[test]
    fn pair_hasher_matches_hasher() {
        // Tags of every length that fits one block, and longer ones (the
        // fallback).
        let tags: Vec<&'static str> = (0..=80)
            .map(|n| &*Box::leak("t".repeat(n).into_boxed_str()))
            .chain(["pos/proofs/smt-node/v1", "pos/proofs/smt-leaf/v1"])
            .collect();
        let mut a = [0u8; 32];
        let mut b = [0xa5u8; 32];
        for (i, tag) in tags.into_iter().enumerate() {
            let domain = Domain::new(tag);
            let fast = PairHasher::new(domain);
            for j in 0..16usize {
                let mut h = Hasher::new(domain);
                h.update(&a).update(&b);
                let expected = h.finalize();
                assert_eq!(fast.hash(&a, &b), expected, "tag of {} bytes", tag.len());
                // Vary every byte of the inputs over the runs.
                a = expected.0;
                b[j % 32] ^= (i as u8).wrapping_mul(29).wrapping_add(j as u8);
                b[(j * 7 + 3) % 32] = a[(j * 5) % 32];
            }
        }
        assert_eq!(
            PairHasher::new(A).hash(&[0; 32], &[0xff; 32]),
            Hash::of(A, &[[0u8; 32], [0xffu8; 32]].concat())
        );
    }

    #[test]
    fn known_vector() {
        // Blake2b-256 of (len=1, "t", "abc"): pins the construction so a change
        // of framing is noticed.
        let h = Hash::of(Domain::new("t"), b"abc");
        let direct = {
            let mut v = Blake2bVar::new(32).unwrap();
            v.update(&[1, b't', b'a', b'b', b'c']);
            let mut o = [0u8; 32];
            v.finalize_variable(&mut o).unwrap();
            o
        };
        assert_eq!(h.0, direct);
    }
}
