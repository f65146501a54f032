//! Blake2b-256 with a domain tag per hashed type.
//!
//! Every hashed type names its own [`Domain`], so bytes that are valid as two
//! different types can never produce the same hash for both. The tag is
//! length-prefixed before the data, which keeps the framing unambiguous.

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
pub struct Hasher(blake2b_simd::State);

/// Blake2b with a 32-byte output and no key, salt or personalisation.
fn params() -> blake2b_simd::Params {
    let mut p = blake2b_simd::Params::new();
    p.hash_length(32);
    p
}

fn to_hash(h: &blake2b_simd::Hash) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(h.as_bytes());
    Hash(out)
}

impl Hasher {
    pub fn new(domain: Domain) -> Self {
        let mut inner = params().to_state();
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
        to_hash(&self.0.finalize())
    }
}

/// Hashing two 32-byte values under one domain (a Merkle node's children,
/// a leaf's key and value) with exactly the output of `Hasher::new(domain)`
/// fed `a` then `b`, for less work.
///
/// The framed input (tag length, tag, 64 bytes) fits one 128-byte Blake2b
/// block whenever the tag has at most 63 bytes: the block's prefix is set
/// up once here, and each hash is one compression without [`Hasher`]'s
/// buffering. [`PairHasher::hash_pairs`] hashes many pairs several at a
/// time in SIMD lanes (four with AVX2), which is how a tree's level of new
/// nodes is hashed. Longer tags fall back to [`Hasher`].
#[derive(Clone)]
pub struct PairHasher {
    domain: Domain,
    params: blake2b_simd::Params,
    /// The tag framing, then room for `a ‖ b`.
    block: [u8; 128],
    /// Where `a` goes in `block`; `None` when the input does not fit.
    at: Option<usize>,
}

/// Pairs hashed together by [`PairHasher::hash_pairs`]: more than any SIMD
/// degree, few enough to sit on the stack.
const LANES: usize = 8;

impl PairHasher {
    pub fn new(domain: Domain) -> Self {
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
            params: params(),
            block,
            at: fits.then_some(at),
        }
    }

    pub fn domain(&self) -> Domain {
        self.domain
    }

    /// The block holding `a ‖ b` after the tag, and its used length.
    #[inline]
    fn framed(&self, at: usize, a: &[u8; 32], b: &[u8; 32]) -> [u8; 128] {
        let mut block = self.block;
        block[at..at + 32].copy_from_slice(a);
        block[at + 32..at + 64].copy_from_slice(b);
        block
    }

    /// The hash of `a ‖ b` under the domain.
    #[inline]
    pub fn hash(&self, a: &[u8; 32], b: &[u8; 32]) -> Hash {
        let Some(at) = self.at else {
            return self.slow(a, b);
        };
        let block = self.framed(at, a, b);
        to_hash(&self.params.hash(&block[..at + 64]))
    }

    /// `out[i]` = the hash of `pairs[i]`, as [`Self::hash`] gives it, with
    /// several pairs compressed at once.
    pub fn hash_pairs(&self, pairs: &[(Hash, Hash)], out: &mut [Hash]) {
        assert_eq!(pairs.len(), out.len(), "one output per pair");
        let Some(at) = self.at else {
            for (o, (a, b)) in out.iter_mut().zip(pairs) {
                *o = self.slow(&a.0, &b.0);
            }
            return;
        };
        for (pairs, out) in pairs.chunks(LANES).zip(out.chunks_mut(LANES)) {
            if pairs.len() == 1 {
                out[0] = self.hash(&pairs[0].0 .0, &pairs[0].1 .0);
                continue;
            }
            let mut blocks = [[0u8; 128]; LANES];
            for (block, (a, b)) in blocks.iter_mut().zip(pairs) {
                *block = self.framed(at, &a.0, &b.0);
            }
            let mut jobs: [blake2b_simd::many::HashManyJob; LANES] = std::array::from_fn(|i| {
                blake2b_simd::many::HashManyJob::new(&self.params, &blocks[i][..at + 64])
            });
            let n = pairs.len();
            blake2b_simd::many::hash_many(jobs[..n].iter_mut());
            for (o, job) in out.iter_mut().zip(&jobs[..n]) {
                *o = to_hash(&job.to_hash());
            }
        }
    }

    fn slow(&self, a: &[u8; 32], b: &[u8; 32]) -> Hash {
        let mut h = Hasher::new(self.domain);
        h.update(a).update(b);
        h.finalize()
    }
}

/// Where a hashed message's bytes go: a [`Hasher`] (one hash), or the
/// buffer of a [`HashBatch`] (many). A structure writes its message layout
/// once, into a `Sink`, and hashes it either way.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Hasher {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Many independent hashes of one domain, computed several at a time in
/// the SIMD lanes of `blake2b_simd::many` (as [`PairHasher::hash_pairs`]
/// does for pairs): for a batch of short messages, such as a height's
/// output states, each `Hash::of(domain, message)`. Messages are written
/// into one buffer, framed as [`Hasher`] frames them.
pub struct HashBatch {
    domain: Domain,
    buf: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl HashBatch {
    pub fn new(domain: Domain) -> Self {
        HashBatch {
            domain,
            buf: Vec::new(),
            spans: Vec::new(),
        }
    }

    /// Add the message `write` appends to the buffer it is given.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        let tag = self.domain.0.as_bytes();
        self.buf.push(tag.len() as u8);
        self.buf.extend_from_slice(tag);
        write(&mut self.buf);
        self.spans.push((start, self.buf.len()));
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Every message's hash, in the order they were added.
    pub fn finish(&self) -> Vec<Hash> {
        let params = params();
        let mut jobs: Vec<blake2b_simd::many::HashManyJob> = self
            .spans
            .iter()
            .map(|&(a, b)| blake2b_simd::many::HashManyJob::new(&params, &self.buf[a..b]))
            .collect();
        blake2b_simd::many::hash_many(jobs.iter_mut());
        jobs.iter().map(|j| to_hash(&j.to_hash())).collect()
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
    fn a_batch_hashes_as_one_at_a_time() {
        for n in [0usize, 1, 3, 8, 9, 21] {
            let messages: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; i * 37 % 300]).collect();
            let mut batch = HashBatch::new(A);
            for m in &messages {
                batch.push_with(|buf| buf.extend_from_slice(m));
            }
            assert_eq!(batch.len(), n);
            let one_by_one: Vec<Hash> = messages.iter().map(|m| Hash::of(A, m)).collect();
            assert_eq!(batch.finish(), one_by_one);
        }
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
    fn hashing_pairs_together_matches_one_at_a_time() {
        let long: &'static str = Box::leak("l".repeat(70).into_boxed_str());
        for tag in ["pos/proofs/smt-node/v1", long] {
            let h = PairHasher::new(Domain::new(tag));
            for n in [0usize, 1, 2, 3, 4, 5, 8, 9, 17] {
                let pairs: Vec<(Hash, Hash)> = (0..n)
                    .map(|i| (Hash([i as u8; 32]), Hash([(i * 3 + 1) as u8; 32])))
                    .collect();
                let mut out = vec![Hash::ZERO; n];
                h.hash_pairs(&pairs, &mut out);
                let one: Vec<Hash> = pairs.iter().map(|(a, b)| h.hash(&a.0, &b.0)).collect();
                assert_eq!(out, one, "{n} pairs under a tag of {} bytes", tag.len());
            }
        }
    }

    #[test]
    fn known_vector() {
        // Blake2b-256 of (len=1, "t", "abc"): pins the construction so a change
        // of framing is noticed.
        let h = Hash::of(Domain::new("t"), b"abc");
        // Checked against RustCrypto's independent implementation.
        let direct = {
            use blake2::digest::{Update, VariableOutput};
            let mut v = blake2::Blake2bVar::new(32).unwrap();
            v.update(&[1, b't', b'a', b'b', b'c']);
            let mut o = [0u8; 32];
            v.finalize_variable(&mut o).unwrap();
            o
        };
        assert_eq!(h.0, direct);
    }
}
