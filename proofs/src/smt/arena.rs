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
use super::{batch, bit, finish_proof, SmtError, LEAF_HASHER, MAX_DEPTH, NODE_HASHER};
use crate::hash::Hash;
use crate::store::Executor;
use std::collections::VecDeque;
use std::sync::Arc;

/// A node: empty (0), an internal node (its index, ≥ 1) or a leaf (its
/// index with [`LEAF_BIT`] set); with [`NEW_BIT`], a node the batch in
/// progress built, named by its index in the builder's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NodeRef(u32);

const LEAF_BIT: u32 = 1 << 31;
/// Marks a node of the batch in progress; a committed tree has none.
const NEW_BIT: u32 = 1 << 30;
/// Indices available to each kind of node.
const MAX_NODES: usize = (NEW_BIT - 1) as usize;

impl NodeRef {
    const EMPTY: NodeRef = NodeRef(0);

    fn is_leaf(self) -> bool {
        self.0 & LEAF_BIT != 0
    }

    fn is_new(self) -> bool {
        self.0 & NEW_BIT != 0
    }

    fn index(self) -> usize {
        (self.0 & !(LEAF_BIT | NEW_BIT)) as usize
    }
}

/// An internal node holds its children's hashes, not its own: a batch
/// then hashes a changed node from what it already has in hand (the new
/// child it just built, the old child's hash in the node it descended
/// through) without touching the untouched child, which would be a cache
/// miss per level in a tree far larger than the caches.
#[derive(Clone, Copy, Debug)]
struct Inner {
    children: [NodeRef; 2],
    hashes: [Hash; 2],
}

const PLACEHOLDER: Inner = Inner {
    children: [NodeRef::EMPTY; 2],
    hashes: [Hash::ZERO; 2],
};

#[derive(Clone, Copy, Debug)]
struct Leaf {
    key: Hash,
    value: Hash,
}

#[derive(Clone, Debug)]
struct Version {
    root: NodeRef,
    hash: Hash,
    /// Nodes of the previous version this version's batch replaced.
    staled: Vec<NodeRef>,
}

type Update = (Hash, Option<Hash>);
/// A subtree: its node and that node's hash.
type Sub = (NodeRef, Hash);
const EMPTY_SUB: Sub = (NodeRef::EMPTY, Hash::ZERO);
/// The hash of a new node until [`Builder::hash_new`] computes it.
const PENDING: Hash = Hash::ZERO;

/// Where a parallel batch splits the tree: the subtrees at depth 4, one
/// per first nibble of the key.
const SPLIT_DEPTH: usize = 4;
const SUBTREES: usize = 1 << SPLIT_DEPTH;
/// Below this many updates a batch is built in the calling thread: a job
/// costs tens of microseconds.
const MIN_PARALLEL_UPDATES: usize = 1024;

/// The node arrays, which builders read (perhaps from several threads).
#[derive(Clone, Debug)]
struct Nodes {
    /// Internal nodes; index 0 is unused (it names the empty tree).
    inner: Vec<Inner>,
    leaves: Vec<Leaf>,
}

/// A versioned sparse Merkle tree in memory (see the module docs).
#[derive(Clone)]
pub struct MemTree {
    nodes: Nodes,
    free_inner: Vec<u32>,
    free_leaves: Vec<u32>,
    /// Versions `oldest ..= oldest + versions.len() - 1`.
    versions: VecDeque<Version>,
    oldest: u64,
    retention: Option<u64>,
    /// Jobs a large batch is split into, and what runs them.
    parallel: Option<(usize, Arc<dyn Executor>)>,
    /// Builders' buffers, kept between batches.
    spare: Vec<Buffers>,
    /// Nodes the last batch built (each hashed once).
    last_built: u64,
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
        MemTree {
            nodes: Nodes {
                inner: vec![PLACEHOLDER],
                leaves: Vec::new(),
            },
            free_inner: Vec::new(),
            free_leaves: Vec::new(),
            versions: VecDeque::from([Version {
                root: NodeRef::EMPTY,
                hash: Hash::ZERO,
                staled: Vec::new(),
            }]),
            oldest: version,
            retention: None,
            parallel: None,
            spare: Vec::new(),
            last_built: 0,
        }
    }

    /// Split each batch of at least a thousand updates into `jobs` jobs run
    /// by `exec` (which may run them at once; this crate starts no
    /// threads): the subtrees below depth 4 are built apart, reading the
    /// old tree only, then joined. Roots, proofs and versions are the same
    /// either way.
    pub fn set_parallelism(&mut self, jobs: usize, exec: Arc<dyn Executor>) {
        self.parallel = (jobs > 1).then_some((jobs, exec));
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

    /// Nodes the last [`Self::apply_batch`] built, each hashed once: the
    /// batch's hashing work (about log2(N / batch) + 2 per update).
    pub fn last_batch_hashes(&self) -> u64 {
        self.last_built
    }

    /// Nodes (internal and leaves) held over all kept versions.
    pub fn node_count(&self) -> u64 {
        (self.nodes.inner.len() - 1 - self.free_inner.len() + self.nodes.leaves.len()
            - self.free_leaves.len()) as u64
    }

    /// Bytes the node arrays have reserved (the tree's memory, roughly).
    pub fn memory_bytes(&self) -> usize {
        self.nodes.inner.capacity() * std::mem::size_of::<Inner>()
            + self.nodes.leaves.capacity() * std::mem::size_of::<Leaf>()
            + (self.free_inner.capacity() + self.free_leaves.capacity()) * 4
    }

    /// The root hash of `version`.
    pub fn root(&self, version: u64) -> Result<Hash, SmtError> {
        Ok(self.version(version)?.hash)
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
        Ok(finish_proof(key, depth, &bitmap, siblings, end))
    }

    /// Call `f` on every leaf of `version` in key order.
    pub fn for_each_leaf(
        &self,
        version: u64,
        mut f: impl FnMut(&Hash, &Hash),
    ) -> Result<(), SmtError> {
        let mut stack = vec![self.version(version)?.root];
        while let Some(node) = stack.pop() {
            if node == NodeRef::EMPTY {
                continue;
            }
            if node.is_leaf() {
                let l = &self.nodes.leaves[node.index()];
                f(&l.key, &l.value);
            } else {
                let n = &self.nodes.inner[node.index()];
                // Right first, so the left subtree is popped first.
                stack.push(n.children[1]);
                stack.push(n.children[0]);
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
        if self.nodes.inner.len().saturating_add(worst) > MAX_NODES
            || self.nodes.leaves.len().saturating_add(updates.len()) > MAX_NODES
        {
            return Err(SmtError::Full);
        }
        let old = self.versions.back().map_or(EMPTY_SUB, |v| (v.root, v.hash));
        let mut staled = Vec::new();
        self.last_built = 0;
        let split = match &self.parallel {
            Some((jobs, exec)) if updates.len() >= MIN_PARALLEL_UPDATES => self
                .subtrees_at_split(old)
                .map(|subs| (*jobs, exec.clone(), subs)),
            _ => None,
        };
        let presolved = split.map(|(jobs, exec, subs)| {
            self.build_subtrees(&updates, subs, jobs, &*exec, &mut staled)
        });
        let mut b = Builder::new(&self.nodes, self.spare.pop().unwrap_or_default());
        b.presolved = presolved.as_ref();
        if b.presolved.is_none() {
            b.prefetch(old, 0, &updates);
        }
        let root = b.build(old, 0, &updates);
        b.hash_new();
        let root = b.resolved(root);
        let buffers = b.finish(&mut staled);
        let (root, hash) = self.commit(buffers, root);
        self.versions.push_back(Version { root, hash, staled });
        if let Some(keep) = self.retention {
            self.prune(keep)?;
        }
        Ok((version, hash))
    }

    /// The sixteen subtrees at depth 4 under `root`, when every node above
    /// them is internal (any tree of more than a few dozen random keys).
    fn subtrees_at_split(&self, root: Sub) -> Option<[Sub; SUBTREES]> {
        let mut level = vec![root];
        for _ in 0..SPLIT_DEPTH {
            let mut next = Vec::with_capacity(level.len() * 2);
            for (node, _) in level {
                if node == NodeRef::EMPTY || node.is_leaf() {
                    return None;
                }
                let n = &self.nodes.inner[node.index()];
                next.push((n.children[0], n.hashes[0]));
                next.push((n.children[1], n.hashes[1]));
            }
            level = next;
        }
        level.try_into().ok()
    }

    /// Build the changed subtrees at depth 4 as `jobs` jobs on `exec`,
    /// commit their nodes, and return every subtree's new state.
    fn build_subtrees(
        &mut self,
        updates: &[Update],
        old: [Sub; SUBTREES],
        jobs: usize,
        exec: &dyn Executor,
        staled: &mut Vec<NodeRef>,
    ) -> [Sub; SUBTREES] {
        // Sorted keys: each first nibble's updates are one run.
        let mut bounds = [0usize; SUBTREES + 1];
        for (n, b) in bounds.iter_mut().enumerate().skip(1) {
            *b = updates.partition_point(|u| usize::from(u.0 .0[0] >> 4) < n);
        }
        // Contiguous runs of nibbles with about equal shares of updates.
        let share = updates.len().div_ceil(jobs.max(1));
        let mut chunks: Vec<(usize, usize)> = Vec::new();
        let mut first = 0;
        for n in 1..=SUBTREES {
            if bounds[n] - bounds[first] >= share || n == SUBTREES {
                chunks.push((first, n));
                first = n;
            }
        }
        let mut results: Vec<Option<JobResult>> = Vec::new();
        results.resize_with(chunks.len(), || None);
        let mut spares: Vec<Buffers> = (0..chunks.len())
            .map(|_| self.spare.pop().unwrap_or_default())
            .collect();
        {
            let nodes = &self.nodes;
            let bounds = &bounds;
            let work: Vec<Box<dyn FnOnce() + Send + '_>> = chunks
                .iter()
                .zip(results.iter_mut())
                .zip(spares.drain(..))
                .map(|((&(from, to), out), bufs)| {
                    Box::new(move || {
                        let mut b = Builder::new(nodes, bufs);
                        let mut built = Vec::new();
                        for n in from..to {
                            let ups = &updates[bounds[n]..bounds[n + 1]];
                            if !ups.is_empty() {
                                b.prefetch(old[n], SPLIT_DEPTH, ups);
                                built.push((n, b.build(old[n], SPLIT_DEPTH, ups)));
                            }
                        }
                        b.hash_new();
                        for (_, sub) in &mut built {
                            *sub = b.resolved(*sub);
                        }
                        let mut bufs = b.into_buffers();
                        bufs.staled_out = std::mem::take(&mut bufs.staled);
                        *out = Some((bufs, built));
                    }) as Box<dyn FnOnce() + Send + '_>
                })
                .collect();
            exec.run_all(work);
        }
        let mut subs = old;
        for (from, to) in chunks.iter().copied().zip(results) {
            let (mut bufs, built) = match to {
                Some(done) => done,
                // An executor that skipped a job: build it here.
                None => {
                    let mut b = Builder::new(&self.nodes, self.spare.pop().unwrap_or_default());
                    let mut built: Vec<(usize, Sub)> = (from.0..from.1)
                        .filter(|&n| bounds[n] < bounds[n + 1])
                        .map(|n| {
                            (
                                n,
                                b.build(old[n], SPLIT_DEPTH, &updates[bounds[n]..bounds[n + 1]]),
                            )
                        })
                        .collect();
                    b.hash_new();
                    for (_, sub) in &mut built {
                        *sub = b.resolved(*sub);
                    }
                    let mut bufs = b.into_buffers();
                    bufs.staled_out = std::mem::take(&mut bufs.staled);
                    (bufs, built)
                }
            };
            staled.append(&mut bufs.staled_out);
            let map = self.place(&mut bufs);
            for (n, sub) in built {
                subs[n] = (map.remap(sub.0), sub.1);
            }
            self.keep_spare(bufs);
        }
        subs
    }

    /// Move a finished build's nodes into the tree and return its root.
    fn commit(&mut self, mut bufs: Buffers, root: Sub) -> Sub {
        let map = self.place(&mut bufs);
        let root = (map.remap(root.0), root.1);
        self.keep_spare(bufs);
        root
    }

    /// Keep `bufs` for the next batch, without the room a huge batch (a
    /// restore) made in them.
    fn keep_spare(&mut self, mut bufs: Buffers) {
        bufs.clear();
        bufs.shrink_to(1 << 13);
        self.spare.push(bufs);
    }

    /// Give every new node of `bufs` a slot in the tree (a freed one
    /// first), write it there with its children renamed, and return the
    /// renaming. Leaves `bufs` empty for reuse.
    fn place(&mut self, bufs: &mut Buffers) -> Renaming {
        self.last_built += (bufs.inner.len() + bufs.leaves.len()) as u64;
        let mut map = Renaming::default();
        for leaf in bufs.leaves.drain(..) {
            map.leaves.push(store_in_slot(
                &mut self.nodes.leaves,
                &mut self.free_leaves,
                leaf,
            ));
        }
        // Children are built before their parents, so every new child
        // already has its slot when its parent is written.
        for mut n in bufs.inner.drain(..) {
            n.children = n.children.map(|c| map.remap(c));
            map.inner.push(store_in_slot(
                &mut self.nodes.inner,
                &mut self.free_inner,
                n,
            ));
        }
        map
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

    fn version(&self, version: u64) -> Result<&Version, SmtError> {
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
        Ok(&self.versions[(version - self.oldest) as usize])
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
        let mut node = self.version(version)?.root;
        let mut depth = 0;
        loop {
            if node == NodeRef::EMPTY {
                return Ok((depth, None));
            }
            if node.is_leaf() {
                let l = &self.nodes.leaves[node.index()];
                return Ok((depth, Some((l.key, l.value))));
            }
            let n = &self.nodes.inner[node.index()];
            let side = usize::from(bit(&key.0, depth));
            if n.children[side ^ 1] != NodeRef::EMPTY {
                sibling(depth, n.hashes[side ^ 1]);
            }
            depth += 1;
            node = n.children[side];
        }
    }
}

impl Nodes {
    /// Ask the CPU to start loading `node`'s record (both cache lines it
    /// may span); a hint only, never a fault.
    #[inline]
    fn prefetch(&self, node: NodeRef) {
        let ptr = if node.is_leaf() {
            self.leaves
                .get(node.index())
                .map(|l| l as *const Leaf as *const u8)
        } else {
            self.inner
                .get(node.index())
                .map(|n| n as *const Inner as *const u8)
        };
        if let Some(p) = ptr {
            prefetch_line(p);
            prefetch_line(p.wrapping_add(63));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn prefetch_line(p: *const u8) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: a prefetch is a hint that never faults, whatever the address;
    // SSE is part of the x86_64 baseline.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn prefetch_line(_: *const u8) {}

/// Put `node` in a freed slot of `pool`, or at its end, and return its
/// index (`apply_batch` has checked that indices cannot overflow).
fn store_in_slot<T>(pool: &mut Vec<T>, free: &mut Vec<u32>, node: T) -> u32 {
    match free.pop() {
        Some(i) => {
            pool[i as usize] = node;
            i
        }
        None => {
            pool.push(node);
            (pool.len() - 1) as u32
        }
    }
}

/// A build's buffers: the new nodes (named by index with [`NEW_BIT`]),
/// the old nodes replaced, and scratch space. Kept between batches.
#[derive(Clone, Debug, Default)]
struct Buffers {
    inner: Vec<Inner>,
    leaves: Vec<Leaf>,
    staled: Vec<NodeRef>,
    /// A finished subtree job's staled nodes, handed over with the buffers.
    staled_out: Vec<NodeRef>,
    scratch: Vec<Update>,
    /// The new nodes' own hashes, by index, once [`Builder::hash_new`] ran.
    leaf_hashes: Vec<Hash>,
    inner_hashes: Vec<Hash>,
    /// Per new internal node: 1 + the highest level of its new internal
    /// children (new leaves and old nodes count 0).
    levels: Vec<u16>,
    /// New internal nodes ordered by level, and their children's hashes.
    order: Vec<u32>,
    pairs: Vec<(Hash, Hash)>,
    /// The prefetch walk's current and next level.
    walk: Vec<(NodeRef, u32, u32)>,
    walk_next: Vec<(NodeRef, u32, u32)>,
}

impl Buffers {
    /// Empty every list, keeping the room.
    fn clear(&mut self) {
        self.inner.clear();
        self.leaves.clear();
        self.staled.clear();
        self.staled_out.clear();
        self.scratch.clear();
        self.leaf_hashes.clear();
        self.inner_hashes.clear();
        self.levels.clear();
        self.order.clear();
        self.pairs.clear();
        self.walk.clear();
        self.walk_next.clear();
    }

    /// Give back room beyond `keep` entries per list.
    fn shrink_to(&mut self, keep: usize) {
        self.inner.shrink_to(keep);
        self.leaves.shrink_to(keep);
        self.staled.shrink_to(keep);
        self.staled_out.shrink_to(keep);
        self.scratch.shrink_to(keep);
        self.leaf_hashes.shrink_to(keep);
        self.inner_hashes.shrink_to(keep);
        self.levels.shrink_to(keep);
        self.order.shrink_to(keep);
        self.pairs.shrink_to(keep);
        self.walk.shrink_to(keep);
        self.walk_next.shrink_to(keep);
    }
}

/// What a subtree job hands back: its buffers (new nodes, and the old
/// nodes it replaced in `staled_out`) and each built subtree by nibble.
type JobResult = (Buffers, Vec<(usize, Sub)>);

/// Where a build's new nodes were placed in the tree.
#[derive(Default)]
struct Renaming {
    inner: Vec<u32>,
    leaves: Vec<u32>,
}

impl Renaming {
    fn remap(&self, r: NodeRef) -> NodeRef {
        if !r.is_new() {
            r
        } else if r.is_leaf() {
            NodeRef(self.leaves[r.index()] | LEAF_BIT)
        } else {
            NodeRef(self.inner[r.index()])
        }
    }
}

/// Builds a batch (or one subtree of it) against the old tree, which it
/// only reads, into buffers of its own: builders of disjoint subtrees can
/// run at once, and [`MemTree::place`] then moves their nodes in.
struct Builder<'t> {
    old: &'t Nodes,
    bufs: Buffers,
    /// Subtrees at [`SPLIT_DEPTH`] already built, by first nibble.
    presolved: Option<&'t [Sub; SUBTREES]>,
}

impl<'t> Builder<'t> {
    fn new(old: &'t Nodes, mut bufs: Buffers) -> Self {
        bufs.clear();
        Builder {
            old,
            bufs,
            presolved: None,
        }
    }

    fn into_buffers(self) -> Buffers {
        self.bufs
    }

    /// The buffers, with this build's staled nodes moved to `staled`.
    fn finish(mut self, staled: &mut Vec<NodeRef>) -> Buffers {
        staled.append(&mut self.bufs.staled);
        self.bufs
    }

    /// Bring into the cache, level by level, the old nodes a build of
    /// `updates` under `sub` (at `depth`) will read. The build descends one
    /// path at a time, each node's address known only once its parent is
    /// loaded: in a tree larger than the caches every level below the
    /// shared top is a wait for memory (profiling: two thirds of the build).
    /// Walking a whole level at once issues those loads together.
    fn prefetch(&mut self, sub: Sub, depth: usize, updates: &[Update]) {
        let mut level = std::mem::take(&mut self.bufs.walk);
        let mut next = std::mem::take(&mut self.bufs.walk_next);
        level.clear();
        level.push((sub.0, 0, updates.len() as u32));
        let mut d = depth;
        while !level.is_empty() && d < MAX_DEPTH {
            next.clear();
            for &(node, from, to) in &level {
                if node == NodeRef::EMPTY || node.is_leaf() {
                    continue;
                }
                let n = &self.old.inner[node.index()];
                let ups = &updates[from as usize..to as usize];
                let split = from + ups.partition_point(|u| !bit(&u.0 .0, d)) as u32;
                for (child, a, b) in [(n.children[0], from, split), (n.children[1], split, to)] {
                    if a < b && child != NodeRef::EMPTY {
                        self.old.prefetch(child);
                        next.push((child, a, b));
                    }
                }
            }
            std::mem::swap(&mut level, &mut next);
            d += 1;
        }
        self.bufs.walk = level;
        self.bufs.walk_next = next;
    }

    /// Hash every node built so far: the leaves, then the internal nodes
    /// level by level from the bottom, each level's nodes several at a time
    /// ([`PairHasher::hash_pairs`](crate::hash::PairHasher::hash_pairs)).
    /// The build itself only links nodes, so that a level's independent
    /// hashes can share the SIMD lanes.
    fn hash_new(&mut self) {
        let b = &mut self.bufs;
        b.pairs.clear();
        b.pairs.extend(b.leaves.iter().map(|l| (l.key, l.value)));
        b.leaf_hashes.resize(b.leaves.len(), Hash::ZERO);
        LEAF_HASHER.hash_pairs(&b.pairs, &mut b.leaf_hashes);

        // Counting sort of the internal nodes by level.
        let top = b.levels.iter().copied().max().unwrap_or(0) as usize;
        let mut starts = vec![0u32; top + 2];
        for &l in &b.levels {
            starts[l as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        b.order.clear();
        b.order.resize(b.levels.len(), 0);
        let mut next = starts.clone();
        for (i, &l) in b.levels.iter().enumerate() {
            b.order[next[l as usize] as usize] = i as u32;
            next[l as usize] += 1;
        }
        b.inner_hashes.resize(b.inner.len(), Hash::ZERO);
        let mut out: Vec<Hash> = Vec::new();
        for level in 1..=top {
            let run = &b.order[starts[level] as usize..starts[level + 1] as usize];
            b.pairs.clear();
            for &i in run {
                let n = &mut b.inner[i as usize];
                for side in 0..2 {
                    let c = n.children[side];
                    if c.is_new() {
                        n.hashes[side] = if c.is_leaf() {
                            b.leaf_hashes[c.index()]
                        } else {
                            b.inner_hashes[c.index()]
                        };
                    }
                }
                b.pairs.push((n.hashes[0], n.hashes[1]));
            }
            out.clear();
            out.resize(run.len(), Hash::ZERO);
            NODE_HASHER.hash_pairs(&b.pairs, &mut out);
            for (&i, h) in run.iter().zip(&out) {
                b.inner_hashes[i as usize] = *h;
            }
        }
    }

    /// `sub` with its hash, once [`Self::hash_new`] ran.
    fn resolved(&self, sub: Sub) -> Sub {
        let (node, _) = sub;
        if !node.is_new() {
            sub
        } else if node.is_leaf() {
            (node, self.bufs.leaf_hashes[node.index()])
        } else {
            (node, self.bufs.inner_hashes[node.index()])
        }
    }

    /// The subtree at `depth` that `sub` (a node of the old tree) becomes
    /// under `updates` (sorted, unique, all under `sub`'s path). New nodes
    /// come back unhashed ([`Self::hash_new`]).
    fn build(&mut self, sub: Sub, depth: usize, updates: &[Update]) -> Sub {
        let (node, _) = sub;
        if updates.is_empty() {
            return sub;
        }
        if depth == SPLIT_DEPTH {
            if let Some(done) = self.presolved {
                return done[usize::from(updates[0].0 .0[0] >> 4)];
            }
        }
        if node == NodeRef::EMPTY {
            return self.fresh(depth, updates, None);
        }
        if node.is_leaf() {
            let old = self.old.leaves[node.index()];
            // The old leaf joins the updates unless one of them is its key.
            let mut merged = std::mem::take(&mut self.bufs.scratch);
            merged.clear();
            let at = updates.partition_point(|u| u.0 < old.key);
            merged.extend_from_slice(&updates[..at]);
            let update = updates.get(at).filter(|u| u.0 == old.key);
            if update.is_none() {
                merged.push((old.key, Some(old.value)));
            }
            merged.extend_from_slice(&updates[at..]);
            let mut present = merged.iter().filter(|u| u.1.is_some());
            let alone = matches!(
                (present.next(), present.next()),
                (Some((k, Some(v))), None) if *k == old.key && *v == old.value
            );
            // A leaf's hash binds only its key and value, so a leaf the
            // batch leaves as it is moves down as the same node.
            let kept = update.is_none_or(|u| u.1 == Some(old.value));
            let out = if alone {
                sub
            } else if kept {
                self.fresh(depth, &merged, Some((sub, old.key)))
            } else {
                self.bufs.staled.push(node);
                self.fresh(depth, &merged, None)
            };
            self.bufs.scratch = merged;
            return out;
        }
        let n = self.old.inner[node.index()];
        let split = updates.partition_point(|u| !bit(&u.0 .0, depth));
        let left = (n.children[0], n.hashes[0]);
        let right = (n.children[1], n.hashes[1]);
        let new_left = self.build(left, depth + 1, &updates[..split]);
        let new_right = self.build(right, depth + 1, &updates[split..]);
        if new_left.0 == left.0 && new_right.0 == right.0 {
            return sub;
        }
        self.bufs.staled.push(node);
        self.join(new_left, new_right)
    }

    /// The node over two canonical children: none for two empty ones, the
    /// leaf itself for a leaf beside an empty subtree (a lone leaf sits at
    /// the top of its subtree), an internal node otherwise.
    fn join(&mut self, left: Sub, right: Sub) -> Sub {
        match (left.0, right.0) {
            (NodeRef::EMPTY, NodeRef::EMPTY) => EMPTY_SUB,
            (NodeRef::EMPTY, only) if only.is_leaf() => right,
            (only, NodeRef::EMPTY) if only.is_leaf() => left,
            _ => {
                // A new child's hash is filled in by `hash_new`.
                self.bufs.inner.push(Inner {
                    children: [left.0, right.0],
                    hashes: [left.1, right.1],
                });
                let level = [left.0, right.0]
                    .iter()
                    .filter(|c| c.is_new() && !c.is_leaf())
                    .map(|c| self.bufs.levels[c.index()])
                    .max()
                    .unwrap_or(0);
                self.bufs.levels.push(level + 1);
                let at = NodeRef((self.bufs.inner.len() - 1) as u32 | NEW_BIT);
                (at, PENDING)
            }
        }
    }

    /// A new subtree at `depth` holding the present entries of `updates`
    /// (sorted, unique; deletions are skipped), placing the existing leaf
    /// `keep` (with its key; its entry is among them) instead of a copy.
    fn fresh(&mut self, depth: usize, updates: &[Update], keep: Option<(Sub, Hash)>) -> Sub {
        let mut present = updates.iter().filter(|u| u.1.is_some());
        match (present.next(), present.next()) {
            (Some(&(key, Some(value))), None) => {
                if let Some((k, _)) = keep.filter(|(_, kk)| *kk == key) {
                    return k;
                }
                self.bufs.leaves.push(Leaf { key, value });
                let at = NodeRef((self.bufs.leaves.len() - 1) as u32 | LEAF_BIT | NEW_BIT);
                (at, PENDING)
            }
            (None, _) => EMPTY_SUB,
            _ => {
                // Two distinct keys differ before bit 256, so the split
                // separates them before `depth` reaches MAX_DEPTH.
                let split = updates.partition_point(|u| !bit(&u.0 .0, depth));
                let left = self.fresh(depth + 1, &updates[..split], keep);
                let right = self.fresh(depth + 1, &updates[split..], keep);
                self.join(left, right)
            }
        }
    }
}
