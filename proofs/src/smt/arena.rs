//! The same tree held in memory as an arena of binary nodes.
//!
//! [`MemTree`] is the tree [`SparseMerkleTree`](super::SparseMerkleTree)
//! describes — same key order, hashing, path compression, versions,
//! pruning and [`SparseProof`]s, so every root and proof is identical — but
//! stored for memory rather than for a key-value store. The paged tree is
//! laid out for LMDB (few, large entries named by version and path); in
//! memory, each of its page reads is a hash-table lookup plus a copy of up
//! to 3 KB, and each update rewrites about two pages and later prunes two.
//! Profiling the peer showed that work, not hashing, dominating its
//! ledger. Here a node is a fixed-size record in one of two vectors, named
//! by its index: a batch reads only the nodes on its paths, allocates only
//! the nodes it changes (from free lists), and older versions share every
//! node they did not change.
//!
//! # Versions
//!
//! As in the paged tree, version 0 is the empty tree (or the start given to
//! [`MemTree::create_at`]) and each [`MemTree::apply_batch`] makes the next.
//! Nodes are never modified: a batch builds new nodes for what changed and
//! records the nodes it replaced ("staled") with its version. A node staled
//! by version `s` is used only by versions before `s`, so once the oldest
//! kept version reaches `s` the node returns to its free list.
//!
//! # Bounds
//!
//! The build recurses once per tree level, and a path has at most 257
//! levels (a key has 256 bits), so recursion depth is bounded whatever the
//! keys. Node indices are `u32` with one bit marking leaves; a batch that
//! could overflow them is refused before any change ([`SmtError::Full`]),
//! long after memory would have run out.

use super::proof::SparseProof;
use super::{batch, bit, leaf_hash, node_hash, SmtError, MAX_DEPTH};
use crate::hash::Hash;
use std::collections::VecDeque;

/// A node: empty (0), an internal node (its index, ≥ 1) or a leaf (its
/// index with [`LEAF_BIT`] set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NodeRef(u32);

const LEAF_BIT: u32 = 1 << 31;
/// Indices available to each kind of node.
const MAX_NODES: usize = (LEAF_BIT - 1) as usize;

impl NodeRef {
    const EMPTY: NodeRef = NodeRef(0);

    fn leaf(index: u32) -> NodeRef {
        NodeRef(index | LEAF_BIT)
    }

    fn is_leaf(self) -> bool {
        self.0 & LEAF_BIT != 0
    }

    fn index(self) -> usize {
        (self.0 & !LEAF_BIT) as usize
    }
}

#[derive(Clone, Copy, Debug)]
struct Inner {
    left: NodeRef,
    right: NodeRef,
    hash: Hash,
}

#[derive(Clone, Copy, Debug)]
struct Leaf {
    key: Hash,
    value: Hash,
    hash: Hash,
}

#[derive(Clone, Debug)]
struct Version {
    root: NodeRef,
    /// Nodes of the previous version this version's batch replaced.
    staled: Vec<NodeRef>,
}

type Update = (Hash, Option<Hash>);

/// A versioned sparse Merkle tree in memory (see the module docs).
#[derive(Clone)]
pub struct MemTree {
    /// Internal nodes; index 0 is unused (it names the empty tree).
    inner: Vec<Inner>,
    leaves: Vec<Leaf>,
    free_inner: Vec<u32>,
    free_leaves: Vec<u32>,
    /// Versions `oldest ..= oldest + versions.len() - 1`.
    versions: VecDeque<Version>,
    oldest: u64,
    retention: Option<u64>,
    /// Reused by leaf merges.
    scratch: Vec<Update>,
}

impl std::fmt::Debug for MemTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemTree")
            .field("oldest", &self.oldest)
            .field("latest", &self.latest_version())
            .field("nodes", &self.node_count())
            .finish()
    }
}

impl Default for MemTree {
    fn default() -> Self {
        Self::new()
    }
}

impl MemTree {
    /// An empty tree at version 0.
    pub fn new() -> Self {
        Self::create_at(0)
    }

    /// The empty tree at `version`, with no older version: the first batch
    /// makes `version + 1` (what a restore from a snapshot at `version + 1`
    /// uses, as [`SparseMerkleTree::create_at`](super::SparseMerkleTree::create_at)).
    pub fn create_at(version: u64) -> Self {
        let placeholder = Inner {
            left: NodeRef::EMPTY,
            right: NodeRef::EMPTY,
            hash: Hash::ZERO,
        };
        MemTree {
            inner: vec![placeholder],
            leaves: Vec::new(),
            free_inner: Vec::new(),
            free_leaves: Vec::new(),
            versions: VecDeque::from([Version {
                root: NodeRef::EMPTY,
                staled: Vec::new(),
            }]),
            oldest: version,
            retention: None,
            scratch: Vec::new(),
        }
    }

    /// Prune automatically after every batch, keeping the newest `keep`
    /// versions (`None`: keep everything until [`Self::prune`] is called).
    pub fn set_retention(&mut self, keep: Option<u64>) {
        self.retention = keep;
    }

    pub fn latest_version(&self) -> u64 {
        self.oldest + self.versions.len() as u64 - 1
    }

    /// The oldest version still readable.
    pub fn oldest_version(&self) -> u64 {
        self.oldest
    }

    /// Nodes (internal and leaves) held over all kept versions.
    pub fn node_count(&self) -> u64 {
        (self.inner.len() - 1 - self.free_inner.len() + self.leaves.len() - self.free_leaves.len())
            as u64
    }

    /// Bytes the node arrays have reserved (the tree's memory, roughly).
    pub fn memory_bytes(&self) -> usize {
        self.inner.capacity() * std::mem::size_of::<Inner>()
            + self.leaves.capacity() * std::mem::size_of::<Leaf>()
            + (self.free_inner.capacity() + self.free_leaves.capacity()) * 4
    }

    /// The root hash of `version`.
    pub fn root(&self, version: u64) -> Result<Hash, SmtError> {
        Ok(self.hash_of(self.root_ref(version)?))
    }

    /// The value of `key` at `version`.
    pub fn get(&self, key: &Hash, version: u64) -> Result<Option<Hash>, SmtError> {
        let (_, end) = self.descend(key, version, |_, _| {})?;
        Ok(end.filter(|(k, _)| k == key).map(|(_, v)| v))
    }

    /// The value of `key` at `version` with a proof of it against
    /// `root(version)`, byte for byte the paged tree's proof.
    pub fn get_with_proof(
        &self,
        key: &Hash,
        version: u64,
    ) -> Result<(Option<Hash>, SparseProof), SmtError> {
        let mut bitmap = [0u8; 32];
        let mut siblings = Vec::new();
        let (depth, end) = self.descend(key, version, |depth, sibling| {
            if let Some(b) = bitmap.get_mut(depth / 8) {
                *b |= 0x80u8 >> (depth % 8);
                siblings.push(sibling);
            }
        })?;
        let (value, other_leaf) = match end {
            Some((k, v)) if k == *key => (Some(v), None),
            Some(other) => (None, Some(other)),
            None => (None, None),
        };
        let bitmap = bitmap.get(..depth.div_ceil(8)).unwrap_or(&bitmap).to_vec();
        let proof = SparseProof::from_parts(depth as u16, bitmap, siblings, other_leaf);
        Ok((value, proof))
    }

    /// Every leaf of `version`, as `(key, value)` in key order.
    pub fn leaves(&self, version: u64) -> Result<Vec<(Hash, Hash)>, SmtError> {
        let mut out = Vec::new();
        self.for_each_leaf(version, |k, v| out.push((*k, *v)))?;
        Ok(out)
    }

    /// Call `f` on every leaf of `version` in key order.
    pub fn for_each_leaf(
        &self,
        version: u64,
        mut f: impl FnMut(&Hash, &Hash),
    ) -> Result<(), SmtError> {
        let mut stack = vec![self.root_ref(version)?];
        while let Some(node) = stack.pop() {
            if node == NodeRef::EMPTY {
                continue;
            }
            if node.is_leaf() {
                let l = &self.leaves[node.index()];
                f(&l.key, &l.value);
            } else {
                let n = &self.inner[node.index()];
                // Right first, so the left subtree is popped first.
                stack.push(n.right);
                stack.push(n.left);
            }
        }
        Ok(())
    }

    /// Apply a batch as the next version and return it with its root.
    /// `None` deletes a key; when a key appears more than once, the last
    /// entry wins. On error nothing changed.
    pub fn apply_batch(&mut self, updates: &[Update]) -> Result<(u64, Hash), SmtError> {
        let version = self
            .latest_version()
            .checked_add(1)
            .ok_or(SmtError::VersionOverflow)?;
        let updates = batch::normalize(updates);
        // A batch adds at most one leaf and one path of internal nodes per
        // update: refuse up front what could overflow the indices.
        let worst = updates.len().saturating_mul(MAX_DEPTH + 1);
        if self.inner.len().saturating_add(worst) > MAX_NODES
            || self.leaves.len().saturating_add(updates.len()) > MAX_NODES
        {
            return Err(SmtError::Full);
        }
        let old_root = self.versions.back().map_or(NodeRef::EMPTY, |v| v.root);
        let mut staled = Vec::new();
        let root = self.build(old_root, 0, &updates, &mut staled);
        self.versions.push_back(Version { root, staled });
        if let Some(keep) = self.retention {
            self.prune(keep)?;
        }
        Ok((version, self.hash_of(root)))
    }

    /// Keep the newest `keep_versions` versions (at least the latest one)
    /// and free every node only older versions use. Returns the number of
    /// nodes freed. Pruned versions answer [`SmtError::Pruned`].
    pub fn prune(&mut self, keep_versions: u64) -> Result<u64, SmtError> {
        let keep = keep_versions.max(1);
        let latest = self.latest_version();
        let new_oldest = (latest + 1).saturating_sub(keep);
        let mut freed = 0u64;
        while self.oldest < new_oldest {
            self.versions.pop_front();
            self.oldest += 1;
            // The new oldest version's staled nodes were used only by the
            // version just dropped.
            if let Some(v) = self.versions.front_mut() {
                freed += v.staled.len() as u64;
                for node in std::mem::take(&mut v.staled) {
                    if node.is_leaf() {
                        self.free_leaves.push(node.index() as u32);
                    } else {
                        self.free_inner.push(node.index() as u32);
                    }
                }
            }
        }
        Ok(freed)
    }

    fn root_ref(&self, version: u64) -> Result<NodeRef, SmtError> {
        let latest = self.latest_version();
        if version > latest {
            return Err(SmtError::FutureVersion { version, latest });
        }
        if version < self.oldest {
            return Err(SmtError::Pruned {
                version,
                oldest: self.oldest,
            });
        }
        // In range, so the index exists.
        Ok(self.versions[(version - self.oldest) as usize].root)
    }

    fn hash_of(&self, node: NodeRef) -> Hash {
        if node == NodeRef::EMPTY {
            Hash::ZERO
        } else if node.is_leaf() {
            self.leaves[node.index()].hash
        } else {
            self.inner[node.index()].hash
        }
    }

    /// Walk `key`'s path in `version` to where it ends (the depth, and the
    /// leaf there if any), reporting each non-empty sibling with the depth
    /// of its parent.
    fn descend(
        &self,
        key: &Hash,
        version: u64,
        mut sibling: impl FnMut(usize, Hash),
    ) -> Result<(usize, Option<(Hash, Hash)>), SmtError> {
        let mut node = self.root_ref(version)?;
        let mut depth = 0;
        loop {
            if node == NodeRef::EMPTY {
                return Ok((depth, None));
            }
            if node.is_leaf() {
                let l = &self.leaves[node.index()];
                return Ok((depth, Some((l.key, l.value))));
            }
            let n = &self.inner[node.index()];
            let (next, other) = if bit(&key.0, depth) {
                (n.right, n.left)
            } else {
                (n.left, n.right)
            };
            if other != NodeRef::EMPTY {
                sibling(depth, self.hash_of(other));
            }
            depth += 1;
            node = next;
        }
    }

    /// The subtree at `depth` that `node` becomes under `updates` (sorted,
    /// unique, all under `node`'s path), recording replaced nodes.
    fn build(
        &mut self,
        node: NodeRef,
        depth: usize,
        updates: &[Update],
        staled: &mut Vec<NodeRef>,
    ) -> NodeRef {
        if updates.is_empty() {
            return node;
        }
        if node == NodeRef::EMPTY {
            return self.fresh(depth, updates);
        }
        if node.is_leaf() {
            let old = self.leaves[node.index()];
            // The old leaf joins the updates unless one of them is its key.
            let mut merged = std::mem::take(&mut self.scratch);
            merged.clear();
            let at = updates.partition_point(|u| u.0 < old.key);
            merged.extend_from_slice(&updates[..at]);
            if updates.get(at).is_none_or(|u| u.0 != old.key) {
                merged.push((old.key, Some(old.value)));
            }
            merged.extend_from_slice(&updates[at..]);
            let mut present = merged.iter().filter_map(|(k, v)| v.map(|v| (k, v)));
            let unchanged = matches!(
                (present.next(), present.next()),
                (Some((k, v)), None) if *k == old.key && v == old.value
            );
            // A leaf's hash binds only its key and value, so a leaf the
            // batch leaves as it is moves down as the same node.
            let kept = updates.get(at).is_none_or(|u| u.0 != old.key || u.1 == Some(old.value));
            let out = if unchanged {
                node
            } else if kept {
                self.fresh_keeping(depth, &merged, Some(node))
            } else {
                staled.push(node);
                self.fresh(depth, &merged)
            };
            self.scratch = merged;
            return out;
        }
        let n = self.inner[node.index()];
        let split = updates.partition_point(|u| !bit(&u.0 .0, depth));
        let left = self.build(n.left, depth + 1, &updates[..split], staled);
        let right = self.build(n.right, depth + 1, &updates[split..], staled);
        if left == n.left && right == n.right {
            return node;
        }
        staled.push(node);
        self.join(left, right)
    }

    /// The node over two canonical children: none for two empty ones, the
    /// leaf itself for a leaf beside an empty subtree (a lone leaf sits at
    /// the top of its subtree), an internal node otherwise.
    fn join(&mut self, left: NodeRef, right: NodeRef) -> NodeRef {
        match (left, right) {
            (NodeRef::EMPTY, NodeRef::EMPTY) => NodeRef::EMPTY,
            (NodeRef::EMPTY, only) | (only, NodeRef::EMPTY) if only.is_leaf() => only,
            _ => {
                let hash = node_hash(&self.hash_of(left), &self.hash_of(right));
                let n = Inner { left, right, hash };
                match self.free_inner.pop() {
                    Some(i) => {
                        self.inner[i as usize] = n;
                        NodeRef(i)
                    }
                    None => {
                        self.inner.push(n);
                        NodeRef((self.inner.len() - 1) as u32)
                    }
                }
            }
        }
    }

    /// A new subtree at `depth` holding the present entries of `updates`
    /// (sorted, unique; deletions are skipped).
    fn fresh(&mut self, depth: usize, updates: &[Update]) -> NodeRef {
        self.fresh_keeping(depth, updates, None)
    }

    /// [`Self::fresh`], placing the existing leaf `keep` (whose entry is
    /// among `updates`) instead of a copy of it.
    fn fresh_keeping(&mut self, depth: usize, updates: &[Update], keep: Option<NodeRef>) -> NodeRef {
        let mut present = updates.iter().filter(|u| u.1.is_some());
        match (present.next(), present.next()) {
            (None, _) => NodeRef::EMPTY,
            (Some(&(key, Some(_))), None)
                if keep.is_some_and(|k| self.leaves[k.index()].key == key) =>
            {
                keep.unwrap_or(NodeRef::EMPTY)
            }
            (Some(&(key, Some(value))), None) => {
                let l = Leaf {
                    key,
                    value,
                    hash: leaf_hash(&key, &value),
                };
                match self.free_leaves.pop() {
                    Some(i) => {
                        self.leaves[i as usize] = l;
                        NodeRef::leaf(i)
                    }
                    None => {
                        self.leaves.push(l);
                        NodeRef::leaf((self.leaves.len() - 1) as u32)
                    }
                }
            }
            _ => {
                // Two distinct keys differ before bit 256, so the split
                // separates them before `depth` reaches MAX_DEPTH.
                let split = updates.partition_point(|u| !bit(&u.0 .0, depth));
                let left = self.fresh_keeping(depth + 1, &updates[..split], keep);
                let right = self.fresh_keeping(depth + 1, &updates[split..], keep);
                self.join(left, right)
            }
        }
    }
}
