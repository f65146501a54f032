//! Blake2b-256 with a domain tag per hashed type.
//!
//! Every hashed type names its own [`Domain`], so bytes that are valid as two
//! different types can never produce the same hash for both. The tag is
//! length-prefixed before the data, which keeps the framing unambiguous.

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;
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
