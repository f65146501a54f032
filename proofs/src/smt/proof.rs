//! The proof a sparse Merkle tree hands out, and its verification.
//!
//! This half of the module is what a wallet runs: it touches no store, keeps
//! nothing beyond the decoded proof, and rejects rather than panics on every
//! malformed input. The byte layout is documented in the parent module.

use super::{bit, leaf_hash, node_hash, MAX_DEPTH};
use crate::codec::{self, CodecError};
use crate::hash::Hash;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The largest encoded proof: a two-byte depth varint, a 32-byte bitmap with
/// its length byte, 256 siblings with a two-byte count, and the optional
/// other leaf. Rounded up; anything longer cannot be a proof.
pub const MAX_PROOF_BYTES: usize = MAX_DEPTH * 32 + 128;

/// Why a proof was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("malformed proof encoding: {0}")]
    Decode(#[from] CodecError),
    #[error("proof depth {0} exceeds the key length of 256 bits")]
    DepthTooLarge(u16),
    #[error("bitmap of {len} bytes does not match depth {depth} (needs {expected})")]
    BitmapLength {
        depth: u16,
        len: usize,
        expected: usize,
    },
    #[error("bitmap has bits set beyond the proof depth")]
    BitmapPadding,
    #[error("bitmap marks {marked} non-empty siblings but the proof carries {carried}")]
    SiblingCount { marked: usize, carried: usize },
    #[error("the sibling at depth {depth} is marked non-empty but is the empty placeholder")]
    ZeroSibling { depth: usize },
    #[error("the sibling next to the proven position is empty, which a canonical tree never has")]
    EmptyLastSibling,
    #[error("membership claimed but the proof ends at another key's leaf")]
    UnexpectedLeaf,
    #[error("the proof's other leaf has the queried key")]
    OtherLeafIsKey,
    #[error("the other leaf shares {shared} leading bits with the key, fewer than depth {depth}")]
    OtherLeafPrefix { shared: usize, depth: u16 },
    #[error("the proof leads to a different root")]
    RootMismatch,
}

/// A membership or non-membership proof for one key.
///
/// The proof names the position the key's path ends at (`depth`), the
/// non-empty siblings along that path (empty ones cost one bitmap bit), and,
/// when the path ends at a different key's leaf, that leaf. It says nothing
/// by itself; [`SparseProof::verify`] checks it against a root and a claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparseProof {
    /// How many key bits the path descends before it ends (0..=256).
    depth: u16,
    /// Bit `i` (most significant bit of byte 0 first) is set when the
    /// sibling of the path node at depth `i + 1` is non-empty. Exactly
    /// `ceil(depth / 8)` bytes, padding bits zero, so the encoding is unique.
    bitmap: Vec<u8>,
    /// The non-empty siblings, root side first.
    siblings: Vec<Hash>,
    /// For non-membership ending at another key's leaf: its key and value.
    other_leaf: Option<(Hash, Hash)>,
}

impl SparseProof {
    /// Assemble a proof from its parts. Nothing is checked here; every check
    /// happens in [`SparseProof::verify`], so a proof built by hand (or by an
    /// adversary) is no more trusted than one decoded from bytes.
    pub fn from_parts(
        depth: u16,
        bitmap: Vec<u8>,
        siblings: Vec<Hash>,
        other_leaf: Option<(Hash, Hash)>,
    ) -> Self {
        SparseProof {
            depth,
            bitmap,
            siblings,
            other_leaf,
        }
    }

    /// The number of key bits the path descends.
    pub fn depth(&self) -> u16 {
        self.depth
    }

    /// The sibling-presence bitmap (see the field docs for the bit order).
    pub fn bitmap(&self) -> &[u8] {
        &self.bitmap
    }

    /// The non-empty siblings, root side first.
    pub fn siblings(&self) -> &[Hash] {
        &self.siblings
    }

    /// The other key's leaf a non-membership path ends at, if any.
    pub fn other_leaf(&self) -> Option<&(Hash, Hash)> {
        self.other_leaf.as_ref()
    }

    /// The canonical encoding (layout in the module docs).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decode a proof, rejecting anything over [`MAX_PROOF_BYTES`] and any
    /// non-canonical encoding. Structural consistency (bitmap against depth
    /// and siblings) is left to `verify`, which must check it anyway.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProofError> {
        Ok(codec::decode(bytes, MAX_PROOF_BYTES)?)
    }

    /// Check that under `root`, `key` maps to `value` (membership when
    /// `Some`, non-membership when `None`).
    ///
    /// Allocates nothing: it folds the path bottom-up in place.
    pub fn verify(&self, root: &Hash, key: &Hash, value: Option<&Hash>) -> Result<(), ProofError> {
        let depth = usize::from(self.depth);
        if depth > MAX_DEPTH {
            return Err(ProofError::DepthTooLarge(self.depth));
        }
        let expected = depth.div_ceil(8);
        if self.bitmap.len() != expected {
            return Err(ProofError::BitmapLength {
                depth: self.depth,
                len: self.bitmap.len(),
                expected,
            });
        }
        // Padding bits must be zero, otherwise two byte strings would carry
        // the same proof and the encoding would stop being unique.
        if depth % 8 != 0 {
            let last = self.bitmap.last().copied().unwrap_or(0);
            if last & (0xffu8 >> (depth % 8)) != 0 {
                return Err(ProofError::BitmapPadding);
            }
        }
        let marked: usize = self.bitmap.iter().map(|b| b.count_ones() as usize).sum();
        if marked != self.siblings.len() {
            return Err(ProofError::SiblingCount {
                marked,
                carried: self.siblings.len(),
            });
        }
        // In a canonical tree the path's last sibling is never empty: a leaf
        // with an empty sibling would have been lifted, and an empty subtree
        // with an empty sibling would make its parent empty. Rejecting it
        // keeps exactly one valid proof per (tree, key).
        if depth > 0 && !bitmap_bit(&self.bitmap, depth - 1) {
            return Err(ProofError::EmptyLastSibling);
        }

        let mut acc = match (value, &self.other_leaf) {
            (Some(v), None) => leaf_hash(key, v),
            (Some(_), Some(_)) => return Err(ProofError::UnexpectedLeaf),
            (None, None) => Hash::ZERO,
            (None, Some((other_key, other_value))) => {
                if other_key == key {
                    return Err(ProofError::OtherLeafIsKey);
                }
                // The other leaf must sit on the key's path, or it proves
                // nothing about the key.
                let shared = super::common_prefix_len(other_key, key);
                if shared < depth {
                    return Err(ProofError::OtherLeafPrefix {
                        shared,
                        depth: self.depth,
                    });
                }
                leaf_hash(other_key, other_value)
            }
        };

        let mut next = self.siblings.len();
        for level in (0..depth).rev() {
            let sibling = if bitmap_bit(&self.bitmap, level) {
                next -= 1;
                // `marked == siblings.len()` makes this always present; the
                // fallback only keeps the function panic-free by construction.
                let s = self.siblings.get(next).copied().unwrap_or(Hash::ZERO);
                if s == Hash::ZERO {
                    return Err(ProofError::ZeroSibling { depth: level + 1 });
                }
                s
            } else {
                Hash::ZERO
            };
            acc = if bit(&key.0, level) {
                node_hash(&sibling, &acc)
            } else {
                node_hash(&acc, &sibling)
            };
        }
        if acc != *root {
            return Err(ProofError::RootMismatch);
        }
        Ok(())
    }
}

/// Bit `i` of a bitmap, most significant bit of byte 0 first; out of range
/// reads as unset.
fn bitmap_bit(bitmap: &[u8], i: usize) -> bool {
    bitmap
        .get(i / 8)
        .is_some_and(|b| b & (0x80u8 >> (i % 8)) != 0)
}
