//! Merkle structures and proofs that let a wallet trust short proofs instead
//! of the whole chain, and the primitives every other crate shares: the
//! 32-byte domain-separated Blake2b hash and the canonical byte encoding.
//!
//! This is the lowest crate of the workspace: it depends on no other crate of
//! the project, does no I/O, and never panics on hostile input. Structures
//! keep their nodes behind [`NodeStore`] (the peer maps it to LMDB):
//! [`mmr`] is the append-only history with inclusion, consistency and range
//! proofs; [`smt`] is the versioned sparse Merkle tree of the output set with
//! membership and non-membership proofs; [`key_index`] proves, per owner
//! key, that a list of outputs between two heights is complete.

pub mod codec;
pub mod hash;
pub mod key_index;
pub mod mmr;
pub mod smt;
pub mod store;

pub use codec::{decode, encode, CodecError};
pub use hash::{Domain, Hash, Hasher};
pub use mmr::{ConsistencyProof, InclusionProof, Mmr, MmrError, ProofError, RangeProof};
pub use smt::{SmtError, SparseMerkleTree, SparseProof};
pub use store::{Executor, MemStore, NodeStore, ScopedThreads, StoreError};
