//! One tree type for a structure whose tree may live in memory or in a
//! store, chosen at run time (the ledger keeps its trees in memory in tests
//! and wallets, paged into LMDB in the peer).

use super::{
    MemTree, SmtError, SparseMerkleTree, SparseProof, StoreKey, StoreValue, VersionedTree,
};
use crate::hash::Hash;
use crate::store::{Executor, NodeStore};
use std::sync::Arc;

/// Either representation of the tree. Same versions, roots and proofs; the
/// variant only decides where the nodes are.
#[derive(Debug)]
pub enum AnyTree<S> {
    Memory(MemTree),
    Paged(SparseMerkleTree<S>),
}

impl<S: NodeStore<StoreKey, StoreValue>> AnyTree<S> {
    /// The value of `key` at `version`.
    pub fn get(&self, key: &Hash, version: u64) -> Result<Option<Hash>, SmtError> {
        match self {
            AnyTree::Memory(t) => t.get(key, version),
            AnyTree::Paged(t) => t.get(key, version),
        }
    }

    pub fn is_paged(&self) -> bool {
        matches!(self, AnyTree::Paged(_))
    }
}

impl<S: NodeStore<StoreKey, StoreValue> + Sync> AnyTree<S> {
    /// See [`MemTree::set_parallelism`] and
    /// [`SparseMerkleTree::set_parallelism`].
    pub fn set_parallelism(&mut self, jobs: usize, exec: Arc<dyn Executor>) {
        match self {
            AnyTree::Memory(t) => t.set_parallelism(jobs, exec),
            AnyTree::Paged(t) => t.set_parallelism(jobs, exec),
        }
    }
}

/// Forward a method to whichever tree this is.
macro_rules! each {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            AnyTree::Memory($t) => $e,
            AnyTree::Paged($t) => $e,
        }
    };
}

impl<S: NodeStore<StoreKey, StoreValue>> VersionedTree for AnyTree<S> {
    fn apply_batch(&mut self, updates: &[(Hash, Option<Hash>)]) -> Result<(u64, Hash), SmtError> {
        each!(self, t => t.apply_batch(updates))
    }
    fn prune(&mut self, keep_versions: u64) -> Result<u64, SmtError> {
        each!(self, t => t.prune(keep_versions))
    }
    fn set_retention(&mut self, keep: Option<u64>) {
        each!(self, t => t.set_retention(keep))
    }
    fn latest_version(&self) -> u64 {
        each!(self, t => t.latest_version())
    }
    fn oldest_version(&self) -> u64 {
        each!(self, t => t.oldest_version())
    }
    fn root(&self, version: u64) -> Result<Hash, SmtError> {
        each!(self, t => t.root(version))
    }
    fn get_with_proof(
        &self,
        key: &Hash,
        version: u64,
    ) -> Result<(Option<Hash>, SparseProof), SmtError> {
        each!(self, t => t.get_with_proof(key, version))
    }
    fn each_leaf(&self, version: u64, f: &mut dyn FnMut(&Hash, &Hash)) -> Result<(), SmtError> {
        each!(self, t => t.for_each_leaf(version, &mut *f))
    }
}
