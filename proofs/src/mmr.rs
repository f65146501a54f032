//! The history accumulator: a Merkle mountain range (MMR) over the append-only
//! sequence of 32-byte leaves (ordered events and transactions), with
//! inclusion, consistency and range proofs a light client checks against one
//! certified root.
//!
//! # Shape
//!
//! An MMR of `size` leaves is the list of perfect binary Merkle trees
//! ("peaks") given by the binary digits of `size`, highest first: a set bit
//! `h` is a peak of height `h` over the next `2^h` leaves. Appending a leaf is
//! adding one to a binary counter: the new leaf merges with the peaks of height
//! 0, 1, … while they exist. Every node is thus the root of an *aligned block*
//! of leaves `[k·2^h, (k+1)·2^h)`, named here by `(height h, index k)`, and it
//! never changes once written, so the nodes of an earlier size are a subset of
//! the nodes of a later one. `size` always counts leaves, never nodes, and is
//! at most [`MAX_LEAVES`] = 2^62.
//!
//! # Positions
//!
//! Nodes live in a [`NodeStore<u64, Hash>`] keyed by their 0-based *postorder*
//! position, the scheme of Grin and ckb-merkle-mountain-range: a node is
//! written right after its right child, so an append writes the leaf and then
//! its new ancestors at consecutive positions, and an MMR of `n` leaves
//! occupies exactly the positions `0 .. node_count(n)`, `node_count(n) = 2n −
//! popcount(n)`. Leaf `i` sits at `2i − popcount(i)` ([`leaf_position`]); node
//! `(h, k)` sits `h` after its last leaf: `leaf_position((k+1)·2^h − 1) + h`
//! ([`node_position`]). For 7 leaves:
//!
//! ```text
//!        6
//!      /   \
//!     2     5     9
//!    / \   / \   / \
//!   0   1 3   4 7   8  10
//! ```
//!
//! # Hashing
//!
//! With `H(tag, data)` the crate's domain-separated Blake2b-256 ([`Hash::of`]):
//!
//! - leaf node: `H("pos/proofs/mmr-leaf/v1", leaf)` over the 32-byte leaf;
//! - interior node: `H("pos/proofs/mmr-node/v1", left || right)`;
//! - root: `H("pos/proofs/mmr-root/v1", size as u64 little-endian || peak_1 || … ||
//!   peak_p)`, peaks from the highest (leftmost) to the lowest (rightmost).
//!   The empty MMR's root is `H("pos/proofs/mmr-root/v1", 0u64 LE)`.
//!
//! The leaf tag keeps a leaf from being passed off as an interior node and
//! back; the root commits to `size`, which fixes the shape of every tree, so a
//! node can never be presented at another height than its own.
//!
//! A store holds nodes, not leaves: the leaf's own node `H(mmr-leaf, leaf)`
//! is as far down as it goes. [`Mmr::leaf_node`] reads it and
//! [`Mmr::from_leaf_nodes`] rebuilds every node from all of them (a state
//! snapshot carries the history that way).
//!
//! # Proofs
//!
//! The verifier always supplies the sizes and indices, so a proof is nothing
//! but the node hashes it is missing, in an order both sides derive from
//! those numbers. All three proofs are one construction: the verifier
//! rebuilds the peaks of the MMR at `size` as an append would, pushing blocks
//! left to right and merging equal heights, from
//!
//! 1. the blocks covering `[0, a)` — the peaks of the MMR of `a` leaves, i.e.
//!    one hash per set bit of `a`, highest first — taken from the proof;
//! 2. the part it knows itself: the leaves `[a, b)` (inclusion: `a = i, b = i+1`;
//!    range: `a = first, b = first + len`), or nothing (consistency: `a = b = old_size`);
//! 3. the blocks covering `[b, size)` taken from the proof, chosen greedily: at
//!    `s`, the largest `h` with `s` divisible by `2^h` and `s + 2^h ≤ size`.
//!    These are first the right siblings on the way up, then the peaks to
//!    the right.
//!
//! and then bags the peaks and compares with the root it trusts.
//!
//! - [`InclusionProof`]: leaf `leaf` is at index `i` of the history whose root
//!   (at `size`) is `root`. Its hashes are exactly the Merkle path's siblings
//!   and the other peaks, e.g. at most 25 hashes at `size = 10^6`.
//! - [`RangeProof`]: the leaves `first ..= first + len − 1` are exactly the
//!   given ones, in order, with nothing left out or inserted (the key index
//!   builds completeness proofs on this). Nothing per leaf (the leaves come
//!   from the verifier): the left siblings of `first`, the right siblings of
//!   the last leaf, and the other peaks, so never more than two inclusion
//!   proofs' worth.
//! - [`ConsistencyProof`]: the history at `(old_root, old_size)` is a prefix of
//!   the one at `(new_root, new_size)` (as in Certificate Transparency). Part 1
//!   is the old peaks, which must bag to `old_root`; they then stand in for
//!   the old leaves, and part 3 completes them to peaks that must bag to
//!   `new_root`. A forger would need a hash collision: the old peaks are fixed
//!   by `old_root`, and they are nodes of the new trees.
//!
//! Verification does no heap allocation (a 64-entry stack of peaks), hashes
//! `O(log size)` times (plus one per range leaf), and rejects a size above
//! [`MAX_LEAVES`], an index or range outside the size, `old_size > new_size`,
//! an empty range, and any hash count but the expected one, each with its own
//! [`ProofError`].
//!
//! # Byte layout
//!
//! Each proof is a struct with one field, `hashes: Vec<Hash>`, encoded with
//! [`crate::codec::encode`] (postcard):
//!
//! ```text
//! proof = varint(k) || hash_1 || … || hash_k
//! ```
//!
//! `varint` is unsigned LEB128 in its shortest form (the canonical decoder
//! rejects longer spellings); a `Hash` is its 32 raw bytes (a fixed array
//! has no length prefix). The order of the hashes is parts 1 then 3 above.
//! Decoding ([`InclusionProof::decode`] etc.) refuses input over
//! [`MAX_PROOF_BYTES`] before parsing and any non-canonical bytes, so an
//! accepted proof re-encodes to the same bytes. At sizes up to 2^62 an
//! inclusion proof needs at most 122 hashes, a consistency proof 123 and a
//! range proof 181 (left siblings up one tree, right siblings up the next,
//! then the peaks); the limit allows [`MAX_PROOF_HASHES`] = 192.

use crate::codec::{self, CodecError};
use crate::hash::{Domain, Hash, Hasher, Sink};
use crate::store::{NodeStore, StoreError};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use thiserror::Error;

/// Tag of leaf nodes: `H(LEAF_DOMAIN, leaf)`.
pub const LEAF_DOMAIN: Domain = Domain::new("pos/proofs/mmr-leaf/v1");
/// Tag of interior nodes: `H(NODE_DOMAIN, left || right)`.
pub const NODE_DOMAIN: Domain = Domain::new("pos/proofs/mmr-node/v1");
/// Tag of the bagged root: `H(ROOT_DOMAIN, size_le || peaks…)`.
pub const ROOT_DOMAIN: Domain = Domain::new("pos/proofs/mmr-root/v1");

/// The most leaves an MMR holds. Far beyond any real history, and low enough
/// that positions (`< 2·MAX_LEAVES`) and block arithmetic never overflow.
pub const MAX_LEAVES: u64 = 1 << 62;

/// The most hashes a decoded proof may carry. The largest proof at sizes up
/// to [`MAX_LEAVES`] (a range proof) has 181; the rest is headroom.
pub const MAX_PROOF_HASHES: usize = 192;

/// The decoders' byte limit: a 2-byte length and [`MAX_PROOF_HASHES`] hashes.
pub const MAX_PROOF_BYTES: usize = 2 + 32 * MAX_PROOF_HASHES;

/// Peaks never exceed 62 (one per bit of a size below 2^62, plus the
/// transient one of an append in progress); 64 leaves room.
const STACK: usize = 64;

/// Why a proof was not accepted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProofError {
    /// The bytes are not the canonical encoding of a proof (or exceed
    /// [`MAX_PROOF_BYTES`]).
    #[error("malformed proof encoding: {0}")]
    Malformed(#[from] CodecError),
    /// A size above [`MAX_LEAVES`]; no honest history is that long.
    #[error("size {size} exceeds the maximum of {max} leaves")]
    SizeTooLarge { size: u64, max: u64 },
    /// The leaf index is not below the size.
    #[error("leaf index {index} is not below the size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A range proof was asked to prove no leaves.
    #[error("a range proof needs at least one leaf")]
    EmptyRange,
    /// The range `first .. first + count` reaches past the size.
    #[error("range of {count} leaves from {first} ends beyond the size {size}")]
    RangeOutOfBounds { first: u64, count: u64, size: u64 },
    /// A consistency proof from a larger size to a smaller one.
    #[error("old size {old_size} exceeds new size {new_size}")]
    OldSizeAboveNewSize { old_size: u64, new_size: u64 },
    /// More hashes than any proof can need.
    #[error("proof carries {count} hashes, more than the maximum of {max}")]
    TooManyHashes { count: usize, max: usize },
    /// The proof does not carry exactly the hashes the sizes call for.
    #[error("proof carries {got} hashes where the sizes call for {expected}")]
    WrongHashCount { expected: usize, got: usize },
    /// The hashes do not lead to the trusted root.
    #[error("the proof does not lead to the given root")]
    RootMismatch,
    /// The old peaks in a consistency proof do not bag to the old root.
    #[error("the proof's old peaks do not match the old root")]
    OldRootMismatch,
    /// The old peaks plus the new blocks do not bag to the new root.
    #[error("the proof does not extend the old history to the new root")]
    NewRootMismatch,
}

/// Why the MMR could not do what was asked.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MmrError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `open` with a size above [`MAX_LEAVES`].
    #[error("size {size} exceeds the maximum of {max} leaves")]
    SizeTooLarge { size: u64, max: u64 },
    /// A historical size beyond the current one.
    #[error("size {size} is beyond the current size {current}")]
    SizeAboveCurrent { size: u64, current: u64 },
    /// The leaf index is not below the size asked about.
    #[error("leaf index {index} is not below the size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A range whose first leaf comes after its last.
    #[error("range {first}..={last} is empty")]
    EmptyRange { first: u64, last: u64 },
    /// A consistency proof from a larger size to a smaller one.
    #[error("old size {old_size} exceeds new size {new_size}")]
    OldSizeAboveNewSize { old_size: u64, new_size: u64 },
}

/// The node hash of a leaf.
pub fn leaf_hash(leaf: &Hash) -> Hash {
    Hash::of(LEAF_DOMAIN, &leaf.0)
}

/// The hash of an interior node from its children's.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Hasher::new(NODE_DOMAIN);
    h.update(&left.0).update(&right.0);
    h.finalize()
}

/// The root of an MMR of `size` leaves with these peaks, highest first.
/// Callers pass the peaks that `size` calls for; this only hashes.
pub fn bag_peaks<'a>(size: u64, peaks: impl IntoIterator<Item = &'a Hash>) -> Hash {
    let mut h = Hasher::new(ROOT_DOMAIN);
    write_bag(size, peaks, &mut h);
    h.finalize()
}

/// The message [`bag_peaks`] hashes under [`ROOT_DOMAIN`].
pub fn write_bag<'a>(size: u64, peaks: impl IntoIterator<Item = &'a Hash>, out: &mut impl Sink) {
    out.put(&size.to_le_bytes());
    for p in peaks {
        out.put(&p.0);
    }
}

/// The root of the empty MMR.
pub fn empty_root() -> Hash {
    bag_peaks(0, [])
}

/// Nodes in an MMR of `size` leaves (`size ≤ MAX_LEAVES`): the first free
/// position.
pub const fn node_count(size: u64) -> u64 {
    2 * size - size.count_ones() as u64
}

/// The postorder position of leaf `index` (`index < MAX_LEAVES`): the node
/// count of the MMR before it.
pub const fn leaf_position(index: u64) -> u64 {
    node_count(index)
}

/// The postorder position of node `(height, index)`, the root of leaves
/// `[index·2^height, (index+1)·2^height)`: `height` after its last leaf, since
/// the ancestors of a right-most leaf follow it directly. The block must lie
/// below [`MAX_LEAVES`].
pub const fn node_position(height: u32, index: u64) -> u64 {
    leaf_position(((index + 1) << height) - 1) + height as u64
}

/// The aligned blocks that cover `[from, to)` the way appends build them:
/// at `s`, the largest `2^h` that `s` is a multiple of and that fits before
/// `to`. From 0 these are the peaks of the MMR of `to`; from a later `s`,
/// first the right siblings of the path up from `s`, then the peaks of `to`
/// to the right of it. Yields `(height, index)`. Needs `to ≤ MAX_LEAVES`.
#[derive(Clone, Debug)]
struct Blocks {
    next: u64,
    end: u64,
}

fn blocks(from: u64, to: u64) -> Blocks {
    Blocks {
        next: from,
        end: to,
    }
}

impl Iterator for Blocks {
    type Item = (u32, u64);

    fn next(&mut self) -> Option<(u32, u64)> {
        if self.next >= self.end {
            return None;
        }
        let remaining = self.end - self.next;
        // remaining > 0, so leading_zeros ≤ 63; trailing_zeros(0) = 64.
        let fits = 63 - remaining.leading_zeros();
        let height = fits.min(self.next.trailing_zeros());
        let block = (height, self.next >> height);
        self.next += 1 << height;
        Some(block)
    }
}

/// The peaks being rebuilt by a verifier, in a fixed array so verification
/// never allocates. Invariant: after pushing the blocks of `[0, s)` in order,
/// it holds the peaks of the MMR of `s` (heights strictly decreasing).
struct PeakStack {
    hashes: [Hash; STACK],
    heights: [u32; STACK],
    len: usize,
}

impl PeakStack {
    fn new() -> Self {
        PeakStack {
            hashes: [Hash::ZERO; STACK],
            heights: [0; STACK],
            len: 0,
        }
    }

    /// Append the node of an aligned block of `height` that starts where the
    /// stack ends, merging it with equal-height peaks as an append would.
    fn push(&mut self, mut height: u32, mut hash: Hash) {
        while self.len > 0 && self.heights[self.len - 1] == height {
            self.len -= 1;
            hash = node_hash(&self.hashes[self.len], &hash);
            height += 1;
        }
        let slot = self
            .hashes
            .get_mut(self.len)
            .expect("peak heights are distinct and below 63, so at most 63 peaks");
        *slot = hash;
        self.heights[self.len] = height;
        self.len += 1;
    }

    fn root(&self, size: u64) -> Hash {
        bag_peaks(size, &self.hashes[..self.len])
    }
}

fn check_size(size: u64) -> Result<(), ProofError> {
    if size > MAX_LEAVES {
        return Err(ProofError::SizeTooLarge {
            size,
            max: MAX_LEAVES,
        });
    }
    Ok(())
}

fn check_count(hashes: &[Hash], expected: usize) -> Result<(), ProofError> {
    if hashes.len() > MAX_PROOF_HASHES {
        return Err(ProofError::TooManyHashes {
            count: hashes.len(),
            max: MAX_PROOF_HASHES,
        });
    }
    if hashes.len() != expected {
        return Err(ProofError::WrongHashCount {
            expected,
            got: hashes.len(),
        });
    }
    Ok(())
}

/// Push the blocks of `range` onto `stack`, taking their hashes from `proof`.
fn push_blocks<'a>(
    stack: &mut PeakStack,
    range: Blocks,
    proof: &mut impl Iterator<Item = &'a Hash>,
) {
    for ((height, _), hash) in range.zip(proof) {
        stack.push(height, *hash);
    }
}

/// Rebuild the root of the MMR of `size` from the peaks of `[0, first)` and
/// the blocks after the leaves in `hashes`, and the `leaves` themselves.
/// Bounds are the caller's to check: `first + leaves.len() ≤ size ≤ MAX_LEAVES`.
fn range_root(size: u64, first: u64, leaves: &[Hash], hashes: &[Hash]) -> Result<Hash, ProofError> {
    let end = first + leaves.len() as u64;
    check_count(hashes, blocks(0, first).count() + blocks(end, size).count())?;
    let mut proof = hashes.iter();
    let mut stack = PeakStack::new();
    push_blocks(&mut stack, blocks(0, first), &mut proof);
    for leaf in leaves {
        stack.push(0, leaf_hash(leaf));
    }
    push_blocks(&mut stack, blocks(end, size), &mut proof);
    Ok(stack.root(size))
}

/// Decode an untrusted proof with the shared limit. Every proof type is one
/// `Vec<Hash>` field, so they share the layout and the limit.
fn decode_proof<T: Serialize + serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ProofError> {
    Ok(codec::decode::<T>(bytes, MAX_PROOF_BYTES)?)
}

/// Proof that a leaf is at an index of the history with a given root and
/// size. Hashes: the peaks left of the leaf's path and the left siblings
/// (together: the peaks of the MMR of `index` leaves, highest first), then
/// the right siblings bottom-up and the peaks to the right.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The missing node hashes, in the order the module doc gives.
    pub hashes: Vec<Hash>,
}

impl InclusionProof {
    /// Check that `leaf` is leaf number `leaf_index` of the MMR of `size`
    /// leaves whose root is `root`.
    pub fn verify(
        &self,
        root: &Hash,
        size: u64,
        leaf_index: u64,
        leaf: &Hash,
    ) -> Result<(), ProofError> {
        check_size(size)?;
        if leaf_index >= size {
            return Err(ProofError::IndexOutOfRange {
                index: leaf_index,
                size,
            });
        }
        let computed = range_root(size, leaf_index, std::slice::from_ref(leaf), &self.hashes)?;
        if computed != *root {
            return Err(ProofError::RootMismatch);
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decode untrusted bytes: bounded by [`MAX_PROOF_BYTES`], canonical only.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProofError> {
        decode_proof(bytes)
    }
}

/// Proof that the leaves from `first` on are exactly the given ones. Hashes:
/// the peaks of the MMR of `first` leaves, then the blocks after the range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeProof {
    /// The missing node hashes, in the order the module doc gives.
    pub hashes: Vec<Hash>,
}

impl RangeProof {
    /// Check that `leaves` are the leaves `first .. first + leaves.len()` of
    /// the MMR of `size` leaves whose root is `root`.
    pub fn verify(
        &self,
        root: &Hash,
        size: u64,
        first: u64,
        leaves: &[Hash],
    ) -> Result<(), ProofError> {
        check_size(size)?;
        if leaves.is_empty() {
            return Err(ProofError::EmptyRange);
        }
        let count = leaves.len() as u64;
        match first.checked_add(count) {
            Some(end) if end <= size => {}
            _ => return Err(ProofError::RangeOutOfBounds { first, count, size }),
        }
        if range_root(size, first, leaves, &self.hashes)? != *root {
            return Err(ProofError::RootMismatch);
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decode untrusted bytes: bounded by [`MAX_PROOF_BYTES`], canonical only.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProofError> {
        decode_proof(bytes)
    }
}

/// Proof that one history is a prefix of another. Hashes: the old peaks,
/// highest first, then the blocks covering the leaves from `old_size` to
/// `new_size`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The missing node hashes, in the order the module doc gives.
    pub hashes: Vec<Hash>,
}

impl ConsistencyProof {
    /// Check that the MMR of `old_size` leaves with root `old_root` is a
    /// prefix of the MMR of `new_size` leaves with root `new_root`.
    pub fn verify(
        &self,
        old_root: &Hash,
        old_size: u64,
        new_root: &Hash,
        new_size: u64,
    ) -> Result<(), ProofError> {
        check_size(new_size)?;
        if old_size > new_size {
            return Err(ProofError::OldSizeAboveNewSize { old_size, new_size });
        }
        let old_peaks = blocks(0, old_size);
        let expected = old_peaks.clone().count() + blocks(old_size, new_size).count();
        check_count(&self.hashes, expected)?;
        let mut proof = self.hashes.iter();
        let mut stack = PeakStack::new();
        push_blocks(&mut stack, old_peaks, &mut proof);
        if stack.root(old_size) != *old_root {
            return Err(ProofError::OldRootMismatch);
        }
        push_blocks(&mut stack, blocks(old_size, new_size), &mut proof);
        if stack.root(new_size) != *new_root {
            return Err(ProofError::NewRootMismatch);
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decode untrusted bytes: bounded by [`MAX_PROOF_BYTES`], canonical only.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProofError> {
        decode_proof(bytes)
    }
}

/// The accumulator itself: the nodes in `store`, the leaf count and the
/// current peaks in memory (at most 62 hashes), so `root()` and `append`
/// read nothing from the store.
#[derive(Debug)]
pub struct Mmr<S> {
    store: S,
    size: u64,
    /// Peaks highest first; `peaks.len() == size.count_ones()`.
    peaks: Vec<Hash>,
}

impl<S: NodeStore<u64, Hash>> Mmr<S> {
    /// An empty MMR writing into `store`. Whatever the store holds is
    /// treated as stale and overwritten position by position.
    pub fn new(store: S) -> Self {
        Mmr {
            store,
            size: 0,
            peaks: Vec::new(),
        }
    }

    /// Resume the MMR of `size` leaves from a store that holds (at least)
    /// its nodes, positions `0 .. node_count(size)`. Nodes beyond are
    /// ignored and overwritten by later appends, so a store left longer by
    /// an interrupted append, or a longer history, can be reopened at a
    /// shorter size. Reads only the peaks; it does not re-hash the store.
    pub fn open(store: S, size: u64) -> Result<Self, MmrError> {
        if size > MAX_LEAVES {
            return Err(MmrError::SizeTooLarge {
                size,
                max: MAX_LEAVES,
            });
        }
        let mut mmr = Mmr::new(store);
        mmr.peaks = mmr.nodes(blocks(0, size))?;
        mmr.size = size;
        Ok(mmr)
    }

    /// Resume the MMR of `size` leaves with root `root` from `store`, or
    /// hand the store back if it does not hold exactly that (nodes missing
    /// or different): a restart checks its stored history this way before
    /// rebuilding it.
    pub fn open_expecting(store: S, size: u64, root: &Hash) -> Result<Self, S> {
        if size > MAX_LEAVES {
            return Err(store);
        }
        let mut mmr = Mmr::new(store);
        match mmr.nodes(blocks(0, size)) {
            Ok(peaks) if bag_peaks(size, &peaks) == *root => {
                mmr.peaks = peaks;
                mmr.size = size;
                Ok(mmr)
            }
            _ => Err(mmr.store),
        }
    }

    /// Resume the MMR of `size` leaves from its peaks alone (highest
    /// first, as [`Self::peaks`] gives them), written into `store` at their
    /// positions. Appends, the root and proofs about later leaves work;
    /// proofs that need nodes below these peaks fail with
    /// `StoreError::Missing` until those nodes are stored.
    pub fn from_peaks(mut store: S, size: u64, peaks: &[Hash]) -> Result<Self, MmrError> {
        if size > MAX_LEAVES {
            return Err(MmrError::SizeTooLarge {
                size,
                max: MAX_LEAVES,
            });
        }
        let blocks: Vec<(u32, u64)> = blocks(0, size).collect();
        if blocks.len() != peaks.len() {
            return Err(StoreError::Backend(format!(
                "{} peaks given for {size} leaves, which have {}",
                peaks.len(),
                blocks.len()
            ))
            .into());
        }
        for ((height, index), peak) in blocks.into_iter().zip(peaks) {
            store.put(node_position(height, index), *peak)?;
        }
        Ok(Mmr {
            store,
            size,
            peaks: peaks.to_vec(),
        })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The peak hashes, highest (leftmost) first.
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// The current root: the bag of the size and the peaks.
    pub fn root(&self) -> Hash {
        bag_peaks(self.size, &self.peaks)
    }

    /// The root the MMR had at `size` leaves (read from the store).
    pub fn root_at(&self, size: u64) -> Result<Hash, MmrError> {
        self.check_historical(size)?;
        Ok(bag_peaks(size, &self.nodes(blocks(0, size))?))
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn into_store(self) -> S {
        self.store
    }

    /// Append one leaf; returns its index. Writes the leaf node and then
    /// each new ancestor, `1 + trailing_ones(index)` puts: 2 amortised.
    /// On a store error nothing in memory changes; the nodes already
    /// written lie beyond the size and are overwritten by the next append.
    /// An MMR already holding [`MAX_LEAVES`] leaves refuses with
    /// `StoreError::Backend`.
    pub fn append(&mut self, leaf: Hash) -> Result<u64, StoreError> {
        self.append_leaf_node(leaf_hash(&leaf))
    }

    /// Append a leaf given by its node hash ([`leaf_hash`] of the leaf), as
    /// [`Self::leaf_node`] returns it: what a restore from a snapshot of the
    /// leaf nodes does, since the store keeps nodes, not the leaves.
    pub fn append_leaf_node(&mut self, leaf_node: Hash) -> Result<u64, StoreError> {
        let index = self.size;
        if index >= MAX_LEAVES {
            return Err(StoreError::Backend(format!(
                "the MMR is full ({MAX_LEAVES} leaves)"
            )));
        }
        let mut pos = leaf_position(index);
        let mut node = leaf_node;
        self.store.put(pos, node)?;
        // The trailing one bits of `index` are the peaks of height 0, 1, …
        // at the end of the list; the new leaf merges with each in turn.
        let merges = index.trailing_ones() as usize;
        for left in self.peaks.iter().rev().take(merges) {
            node = node_hash(left, &node);
            pos += 1;
            self.store.put(pos, node)?;
        }
        let keep = self
            .peaks
            .len()
            .checked_sub(merges)
            .expect("one peak per set bit of the size, so at least trailing_ones of them");
        self.peaks.truncate(keep);
        self.peaks.push(node);
        self.size += 1;
        Ok(index)
    }

    /// Append leaves in order; returns the range of their indices. Stops at
    /// the first store error; the leaves before it stay appended (`size()`
    /// tells how far it got). A backend wanting all-or-nothing wraps the
    /// call in a transaction and reopens at the old size on failure.
    pub fn append_batch<I>(&mut self, leaves: I) -> Result<Range<u64>, StoreError>
    where
        I: IntoIterator<Item = Hash>,
    {
        let start = self.size;
        for leaf in leaves {
            self.append(leaf)?;
        }
        Ok(start..self.size)
    }

    /// The MMR of the leaves whose node hashes are `leaf_nodes`, in order,
    /// written into `store` (as [`Self::new`] then
    /// [`Self::append_leaf_node`] for each): identical nodes, peaks and root
    /// to the MMR that appended the leaves themselves.
    pub fn from_leaf_nodes<I>(store: S, leaf_nodes: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = Hash>,
    {
        let mut mmr = Mmr::new(store);
        for node in leaf_nodes {
            mmr.append_leaf_node(node)?;
        }
        Ok(mmr)
    }

    /// The node hash of leaf `index` ([`leaf_hash`] of the leaf appended
    /// there): with every leaf's node, [`Self::from_leaf_nodes`] rebuilds
    /// the whole MMR.
    pub fn leaf_node(&self, index: u64) -> Result<Hash, MmrError> {
        if index >= self.size {
            return Err(MmrError::IndexOutOfRange {
                index,
                size: self.size,
            });
        }
        let pos = leaf_position(index);
        match self.store.get(&pos)? {
            Some(node) => Ok(node),
            None => Err(StoreError::Missing(format!("MMR leaf node at position {pos}")).into()),
        }
    }

    /// Proof that leaf `leaf_index` is in the current history.
    pub fn inclusion_proof(&self, leaf_index: u64) -> Result<InclusionProof, MmrError> {
        self.inclusion_proof_at(leaf_index, self.size)
    }

    /// Proof that leaf `leaf_index` is in the history as it was at `size`
    /// leaves, to verify against `root_at(size)`.
    pub fn inclusion_proof_at(
        &self,
        leaf_index: u64,
        size: u64,
    ) -> Result<InclusionProof, MmrError> {
        self.check_historical(size)?;
        if leaf_index >= size {
            return Err(MmrError::IndexOutOfRange {
                index: leaf_index,
                size,
            });
        }
        let hashes = self.nodes(blocks(0, leaf_index).chain(blocks(leaf_index + 1, size)))?;
        Ok(InclusionProof { hashes })
    }

    /// Proof that the history at `old_size` is a prefix of the current one.
    pub fn consistency_proof(&self, old_size: u64) -> Result<ConsistencyProof, MmrError> {
        self.consistency_proof_at(old_size, self.size)
    }

    /// Proof that the history at `old_size` is a prefix of the one at
    /// `new_size ≤ size()`.
    pub fn consistency_proof_at(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, MmrError> {
        self.check_historical(new_size)?;
        if old_size > new_size {
            return Err(MmrError::OldSizeAboveNewSize { old_size, new_size });
        }
        let hashes = self.nodes(blocks(0, old_size).chain(blocks(old_size, new_size)))?;
        Ok(ConsistencyProof { hashes })
    }

    /// Proof that the leaves `first ..= last` of the current history are the
    /// ones the verifier holds.
    pub fn range_proof(&self, first: u64, last: u64) -> Result<RangeProof, MmrError> {
        self.range_proof_at(first, last, self.size)
    }

    /// Proof for the leaves `first ..= last` of the history at `size`.
    pub fn range_proof_at(&self, first: u64, last: u64, size: u64) -> Result<RangeProof, MmrError> {
        self.check_historical(size)?;
        if first > last {
            return Err(MmrError::EmptyRange { first, last });
        }
        if last >= size {
            return Err(MmrError::IndexOutOfRange { index: last, size });
        }
        let hashes = self.nodes(blocks(0, first).chain(blocks(last + 1, size)))?;
        Ok(RangeProof { hashes })
    }

    fn check_historical(&self, size: u64) -> Result<(), MmrError> {
        if size > self.size {
            return Err(MmrError::SizeAboveCurrent {
                size,
                current: self.size,
            });
        }
        Ok(())
    }

    /// Read the hashes of these blocks; each is a node of the MMR at any
    /// size covering it, so it is stored if the MMR is intact.
    fn nodes(&self, blocks: impl Iterator<Item = (u32, u64)>) -> Result<Vec<Hash>, StoreError> {
        blocks
            .map(|(height, index)| {
                let pos = node_position(height, index);
                self.store.get(&pos)?.ok_or_else(|| {
                    StoreError::Missing(format!("MMR node at position {pos} (height {height})"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_match_the_postorder_picture() {
        // The 7-leaf picture in the module doc.
        let leaves: Vec<u64> = (0..7).map(leaf_position).collect();
        assert_eq!(leaves, [0, 1, 3, 4, 7, 8, 10]);
        assert_eq!(node_position(1, 0), 2);
        assert_eq!(node_position(1, 1), 5);
        assert_eq!(node_position(2, 0), 6);
        assert_eq!(node_position(1, 2), 9);
        assert_eq!(node_count(7), 11);
        assert_eq!(node_position(0, 5), leaf_position(5));
    }

    #[test]
    fn blocks_from_zero_are_the_peaks() {
        let b: Vec<_> = blocks(0, 13).collect();
        assert_eq!(b, [(3, 0), (2, 2), (0, 12)]);
        assert_eq!(blocks(0, 0).count(), 0);
    }

    #[test]
    fn blocks_after_a_leaf_are_its_right_siblings_then_right_peaks() {
        // Leaf 2 in 13 leaves: sibling leaf 3, then (2,1) = [4,8), then the
        // peaks (2,2) = [8,12) and (0,12).
        let b: Vec<_> = blocks(3, 13).collect();
        assert_eq!(b, [(0, 3), (2, 1), (2, 2), (0, 12)]);
    }

    #[test]
    fn proof_sizes_stay_within_the_decode_limit() {
        // The worst cases found by a search over sizes built from one or two
        // powers of two (±1, ±2), which is where the extremes lie: as many
        // left siblings as right siblings as right peaks.
        let m = MAX_LEAVES;
        let count =
            |first: u64, end: u64, size: u64| blocks(0, first).count() + blocks(end, size).count();
        assert_eq!(count(0, 1, m - 1), 122); // inclusion
        assert_eq!(count(1, 1, m - 1), 123); // consistency
        let range = count((1 << 60) - 1, (1 << 60) + 1, m - 1);
        assert_eq!(range, 181);
        assert!(range <= MAX_PROOF_HASHES);
        for (first, end, size) in [(m - 2, m - 1, m), (m / 2 - 1, m / 2 + 1, m), (0, 0, m)] {
            assert!(count(first, end, size) <= MAX_PROOF_HASHES);
        }
    }

    #[test]
    fn inclusion_at_a_million_is_at_most_25_hashes() {
        let size = 1_000_000u64;
        let worst = (0..size)
            .step_by(997)
            .chain([0, size - 1, 524_287, 524_288])
            .map(|i| blocks(0, i).count() + blocks(i + 1, size).count())
            .max();
        assert_eq!(worst, Some(25));
    }

    #[test]
    fn peak_stack_holds_the_largest_size() {
        let mut s = PeakStack::new();
        for (h, _) in blocks(0, MAX_LEAVES - 1) {
            s.push(h, Hash::ZERO);
        }
        assert_eq!(s.len, 62);
        // One more leaf merges everything into one peak.
        s.push(0, Hash::ZERO);
        assert_eq!((s.len, s.heights[0]), (1, 62));
    }
}
