//! The output set's authenticated structure: a versioned, path-compressed
//! sparse Merkle tree over 256-bit keys.
//!
//! # Role
//!
//! The ledger keeps one entry per output ever created, keyed by output id,
//! whose value is a 32-byte hash of the output's state (unspent, or spent by
//! transaction T at height H). The root of this tree is one of the state
//! roots peers sign, so a wallet holding a certified root and a short
//! [`SparseProof`] can check "this output has exactly this state" or "this
//! output never existed" alone.
//!
//! # Hashing
//!
//! Keys are read as 256-bit strings, most significant bit of byte 0 first;
//! bit 0 selects the root's child (0 = left), bit `d` the child of a node at
//! depth `d`. Sorting keys as byte strings is therefore sorting them in tree
//! order.
//!
//! - leaf: `Blake2b-256("pos/proofs/smt-leaf/v1"; key ‖ value)` ([`leaf_hash`])
//! - internal: `Blake2b-256("pos/proofs/smt-node/v1"; left ‖ right)` ([`node_hash`])
//! - an empty subtree: the placeholder [`Hash::ZERO`]; the empty tree's root
//!   is `Hash::ZERO`.
//!
//! The domains (length-prefixed tags, see [`crate::hash`]) keep a leaf from
//! ever passing for an internal node and vice versa. A leaf's hash binds its
//! key, so the leaf's position can be compressed (below) without letting a
//! proof move it.
//!
//! # Path compression
//!
//! A subtree holding exactly one leaf *is* that leaf, placed at the top of the
//! subtree: there is no chain of internal nodes with an empty sibling above a
//! lone leaf. Subtrees with two or more leaves are ordinary internal nodes,
//! even when one child is empty (keys sharing a long prefix produce such a
//! chain down to where they diverge; two keys that differ only in the last
//! bit sit at depth 256). With random keys a leaf sits at depth about
//! `log2 N + 1.3`, so proofs carry about `log2 N` hashes, not 256.
//!
//! Equivalently, for a key set `S` at depth `d`:
//! `root(∅) = 0`, `root({k↦v}) = leaf(k, v)`,
//! `root(S) = node(root(S with bit d = 0), root(S with bit d = 1))`.
//! The tree is a function of the key set alone, so two histories ending in
//! the same set have the same root.
//!
//! # Two representations
//!
//! [`SparseMerkleTree`] stores the tree in pages over a [`NodeStore`] (the
//! layout for a key-value store such as LMDB, below); [`MemTree`] holds the
//! very same tree in memory as an arena of binary nodes, faster and smaller
//! there (see its module). Roots, versions and proofs are identical, and
//! [`VersionedTree`] lets a structure built on a tree take either.
//!
//! # Storage: pages of four levels
//!
//! The logical tree is binary, but it is stored as in Jellyfish: in *pages*
//! of four levels (16-ary nodes). Every internal node at a depth divisible by
//! 4 roots a page, which holds the binary subtree below it down to four
//! levels further. Inside a page a node is named by its heap position: the
//! page root is 1 (implicit, never stored), the children of position `h` are
//! `2h` (bit 0) and `2h + 1` (bit 1), so positions 2..=15 are the three inner
//! levels and 16..=31 the exits four levels down. A [`Page`] holds its
//! non-empty positions, each a [`Slot`]:
//!
//! - `Internal(hash)`: an internal node at an inner position;
//! - `Leaf { key, value, hash }`: a leaf, at any position (stored inline:
//!   leaves have no store entries of their own);
//! - `Page(ChildRef)`: an internal node at an exit, i.e. the root of the next
//!   page, named by the version that wrote it and its hash.
//!
//! The slots are packed ([`Slots`]): a bitmap of the non-empty positions, a
//! bitmap of the leaves among them, and the slots' bytes in position order
//! (32 for an internal node, 96 for a leaf, 40 for a page reference; the
//! kind follows from the position and the leaf bit). Any slot is read in
//! constant time from popcounts, and a page costs what its slots need, not
//! 30 leaf-sized entries.
//!
//! Why pages: with random keys a batch's cost is set by the nodes only one
//! update touches (the bottom ~log2(N/B) levels), and with one store entry
//! per binary node each update did ~17 random store operations, plus ~8
//! removals when pruning. Four levels per entry and inline leaves cut that to
//! about two page reads and two page writes per update, which is what a
//! memory- or disk-latency-bound store pays for. Inner hashes are stored, so
//! proofs and updates never recompute an untouched node.
//!
//! # Versions and store layout
//!
//! Version 0 is the empty tree; each [`SparseMerkleTree::apply_batch`] makes
//! the next version. Every version stays readable and provable until
//! [`SparseMerkleTree::prune`] drops it. Pages are never modified in place:
//! a batch writes each page it changes under the new version and leaves the
//! old one for older versions (copy-on-write, Jellyfish-style). Everything
//! lives in one [`NodeStore<StoreKey, StoreValue>`]:
//!
//! | key | value | meaning |
//! |---|---|---|
//! | `Page(NodeKey { version, depth, path })` | `Page(Page)` | the page written by batch `version` rooted at `path[..depth]` (`depth` divisible by 4, bits from `depth` on zero) |
//! | `Root(v)` | `Root(Option<Box<Slot>>)` | version `v`'s root: none (empty), a lone `Leaf`, or a `Page` at depth 0 |
//! | `Stale(v)` | `Stale(Vec<NodeKey>)` | pages of version `v - 1`'s tree that version `v` no longer uses |
//! | `Meta` | `Meta(TreeMeta)` | oldest and latest kept version, page count |
//!
//! A child page's key is `(ref.version, parent path + 4 bits)`, so a page is
//! found from its parent without any index. A page unchanged by a batch
//! keeps its key and is shared by both versions.
//!
//! Why version-keyed instead of content-addressed: the same content can come
//! back after being staled (a key set to A, then B, then A again gives the
//! same pages), and a content-addressed store would then delete a page a
//! newer version still uses when the older stale record is pruned. Here a
//! page recreated by a later batch gets a new key, so pruning old keys never
//! touches it, and no reference counts are needed.
//!
//! Pruning to keep the newest K versions moves the oldest kept version to
//! `latest + 1 - K`; a page staled at version `s` is used only by versions
//! `< s`, so the pages listed in `Stale(s)` for every `s` up to the new
//! oldest version are deleted, with those lists and the dropped roots. A
//! backend that needs atomicity wraps each `apply_batch`/`prune` in its own
//! transaction (see [`crate::store`]); all keys and values are plain serde
//! types for that mapping.
//!
//! # Restoring from leaves
//!
//! A peer that restores a state snapshot rebuilds the tree from its leaves
//! alone: [`SparseMerkleTree::leaves`] lists a version's leaves in key order,
//! [`SparseMerkleTree::create_at`] starts an empty tree at version `v - 1`,
//! one batch of all the leaves makes version `v` with the original's root
//! and pages (the tree is a function of its key set), and
//! `prune(1)` drops the empty start. Versions before `v` do not exist in
//! the restored tree.
//!
//! # Batch updates
//!
//! A batch is sorted by key and deduplicated with **last write wins** (the
//! last entry for a key in the slice is the one applied). The new tree is
//! built in one post-order walk over the old one (an explicit stack, so key
//! depth never meets the thread's stack), splitting the sorted batch by key
//! bit at each level: subtrees no update reaches are reused by reference,
//! every touched page is read once and written once, every touched internal
//! node is hashed once, and a leaf is placed only once its final position
//! (after lifting) is known. A page whose new hash equals its old one (the
//! batch changed nothing under it) is kept, not rewritten.
//!
//! At 10^6 keys and more the store is far larger than the caches, and a
//! batch's cost beyond hashing is memory latency: about two page reads, two
//! page writes and two pruned pages per update, each a few cache misses.
//! So the walk reads pages where they lie ([`NodeStore::get_with`]) into
//! per-level buffers reused for the whole batch, builds each new page from
//! the changed slots plus the old page's untouched subtrees in one pass,
//! stores the new pages after the walk in one run (independent store
//! lookups overlap), and writes them into the buffers of pruned pages
//! ([`NodeStore::remove_recycling`]) rather than allocating: the allocator's
//! work on cold memory cost more than the hashing.
//!
//! The sixteen subtrees below the root page (one per first nibble of the
//! key) share nothing but the root page, and the walk only reads the store,
//! so with [`SparseMerkleTree::set_parallelism`] (a store that is `Sync`)
//! a batch builds them as independent jobs, each with its share of the
//! updates and of the recycled buffers, run by the caller's
//! [`Executor`] (the crate itself starts no threads); the walk over the root page then
//! splices their pages and stale keys in where the sequential walk produces
//! them, so roots, pages and stale lists are the same. Storing the new pages
//! and pruning stay in the calling thread (they need the store mutably).
//!
//! # Proof format
//!
//! [`SparseProof`] is the postcard encoding ([`crate::codec`]) of:
//!
//! | field | encoding | meaning |
//! |---|---|---|
//! | `depth` | varint u16, ≤ 256 | bits of the key the path descends |
//! | `bitmap` | varint length = ⌈depth/8⌉, bytes | bit `i` (MSB of byte 0 first) set ⇔ the sibling at depth `i + 1` is non-empty; padding bits zero |
//! | `siblings` | varint count = popcount(bitmap), 32 bytes each | the non-empty siblings, root side first |
//! | `other_leaf` | `0x00`, or `0x01` key(32) value(32) | the leaf a non-membership path ends at, if any |
//!
//! Empty siblings cost one bit, so a membership proof among 10^6 random keys
//! is about `32 · 20 + 5` bytes. [`SparseProof::decode`] rejects inputs over
//! [`MAX_PROOF_BYTES`] and any non-canonical encoding.
//!
//! # What a proof proves
//!
//! [`SparseProof::verify`] recomputes the root from the bottom of the key's
//! path and accepts only if it equals the given root:
//! - membership (`value = Some(v)`): the path ends at the leaf `(key, v)`.
//! - non-membership (`value = None`), either the path ends at an empty
//!   subtree (no key with that prefix exists), or at the leaf of another key
//!   that shares the first `depth` bits (a subtree holding one leaf holds
//!   nothing else, so the key is absent).
//!
//! The proof must also be the tree's canonical one (bitmap consistent with
//! depth and sibling count, no placeholder sent as a sibling, non-empty last
//! sibling), so every (tree, key) has exactly one accepted proof.

mod any;
mod arena;
mod batch;
mod page;
mod proof;

pub use any::AnyTree;
pub use arena::MemTree;
pub use page::Slots;
pub use proof::{ProofError, SparseProof, MAX_PROOF_BYTES};

use crate::hash::{Domain, Hash, PairHasher};
use crate::store::{Executor, MemStore, NodeStore, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, LazyLock};
use thiserror::Error;

/// Domain of leaf hashes.
pub const LEAF_DOMAIN: Domain = Domain::new("pos/proofs/smt-leaf/v1");
/// Domain of internal-node hashes.
pub const NODE_DOMAIN: Domain = Domain::new("pos/proofs/smt-node/v1");
/// Key length in bits, and so the deepest position a node can have.
pub const MAX_DEPTH: usize = 256;
/// Levels per page.
pub const PAGE_LEVELS: usize = 4;
/// The deepest page root: internal nodes end at depth 255.
const MAX_PAGE_DEPTH: usize = MAX_DEPTH - PAGE_LEVELS;

/// Leaf and node hashing with the Blake2b state set up once (same output
/// as [`Hasher`], see [`PairHasher`]).
pub(crate) static LEAF_HASHER: LazyLock<PairHasher> =
    LazyLock::new(|| PairHasher::new(LEAF_DOMAIN));
pub(crate) static NODE_HASHER: LazyLock<PairHasher> =
    LazyLock::new(|| PairHasher::new(NODE_DOMAIN));

/// The hash of the leaf mapping `key` to `value`.
pub fn leaf_hash(key: &Hash, value: &Hash) -> Hash {
    LEAF_HASHER.hash(&key.0, &value.0)
}

/// The hash of an internal node; an empty child is [`Hash::ZERO`].
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    NODE_HASHER.hash(&left.0, &right.0)
}

/// Bit `i` of a key or path (MSB of byte 0 first); out of range reads as unset.
#[inline]
fn bit(bytes: &[u8; 32], i: usize) -> bool {
    bytes
        .get(i / 8)
        .is_some_and(|b| b & (0x80u8 >> (i % 8)) != 0)
}

/// The number of leading bits two keys share (256 when equal).
fn common_prefix_len(a: &Hash, b: &Hash) -> usize {
    for (i, (x, y)) in a.0.iter().zip(b.0.iter()).enumerate() {
        let diff = x ^ y;
        if diff != 0 {
            return i * 8 + diff.leading_zeros() as usize;
        }
    }
    MAX_DEPTH
}

/// Where a page sits in the store: the batch that wrote it and its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeKey {
    pub version: u64,
    /// Number of path bits, 0..=256.
    pub depth: u16,
    /// The position's bits; bits from `depth` on are zero so each position
    /// has one key.
    pub path: [u8; 32],
}

impl NodeKey {
    /// The key of the page written by `version` rooted at depth `depth` on
    /// `key`'s path.
    pub fn new(version: u64, depth: usize, key: &[u8; 32]) -> Self {
        let depth = depth.min(MAX_DEPTH);
        let mut path = [0u8; 32];
        let full = depth / 8;
        path[..full].copy_from_slice(&key[..full]);
        if let (Some(p), Some(k)) = (path.get_mut(full), key.get(full)) {
            *p = k & !(0xffu8 >> (depth % 8));
        }
        NodeKey {
            version,
            depth: depth as u16,
            path,
        }
    }
}

/// A reference to a page: the version that wrote it and its root's hash
/// (its position is the referrer's plus four bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRef {
    pub version: u64,
    pub hash: Hash,
}

/// A non-empty position in a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Slot {
    /// An internal node at an inner position (2..=15).
    Internal(Hash),
    /// A leaf, with its hash so an untouched sibling is never rehashed.
    Leaf { key: Hash, value: Hash, hash: Hash },
    /// The root of the next page, at an exit (16..=31).
    Page(ChildRef),
}

impl Slot {
    pub fn hash(&self) -> Hash {
        match self {
            Slot::Internal(h) => *h,
            Slot::Leaf { hash, .. } => *hash,
            Slot::Page(c) => c.hash,
        }
    }
}

/// Four levels of the binary tree below an internal node: its non-empty
/// positions (heap numbering, see the module docs), packed (see [`Slots`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub slots: Slots,
}

impl Page {
    /// The slot at heap position `pos`, if non-empty.
    pub fn slot(&self, pos: u8) -> Option<Slot> {
        self.slots.get(pos)
    }
}

/// Store keys; see the module docs for the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StoreKey {
    Page(NodeKey),
    Root(u64),
    Stale(u64),
    Meta,
}

/// Hashes what tells keys apart in as few words as possible: an in-memory
/// store hashes a key on every access, and the derived impl fed the hasher
/// seven pieces (tags, a length prefix, the 32 path bytes) where two words
/// carry everything for all but the deepest pages.
impl std::hash::Hash for NodeKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut words = self.path.chunks_exact(8).map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_le_bytes(w)
        });
        // Path bits from `depth` on are zero, so the first word holds the
        // whole path of a page above depth 64, and the depth fits in the
        // top bits of the version (folded, not appended: a collision only
        // costs a comparison).
        state.write_u64(words.next().unwrap_or(0));
        state.write_u64(self.version ^ (u64::from(self.depth) << 48));
        for w in words.take(usize::from(self.depth.saturating_sub(1)) / 64) {
            state.write_u64(w);
        }
    }
}

impl std::hash::Hash for StoreKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            StoreKey::Page(k) => k.hash(state),
            // The few other entries only need to differ from each other.
            StoreKey::Root(v) => state.write_u64(v.rotate_left(2) ^ 1),
            StoreKey::Stale(v) => state.write_u64(v.rotate_left(2) ^ 2),
            StoreKey::Meta => state.write_u64(3),
        }
    }
}

/// Store values; each [`StoreKey`] variant has the matching variant here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreValue {
    Page(Page),
    /// Boxed so that the common variant (`Page`) sets the entry size.
    Root(Option<Box<Slot>>),
    Stale(Vec<NodeKey>),
    Meta(TreeMeta),
}

/// The tree's bookkeeping, persisted under [`StoreKey::Meta`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeMeta {
    /// The oldest version still readable.
    pub oldest: u64,
    /// The newest version.
    pub latest: u64,
    /// How many `Page` entries the store holds.
    pub pages: u64,
}

/// Why a tree operation failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SmtError {
    #[error("version {version} was pruned; the oldest kept version is {oldest}")]
    Pruned { version: u64, oldest: u64 },
    #[error("version {version} does not exist; the latest is {latest}")]
    FutureVersion { version: u64, latest: u64 },
    #[error("the version counter is exhausted")]
    VersionOverflow,
    #[error("a tree already exists in this store")]
    AlreadyExists,
    #[error("corrupt tree storage: {0}")]
    Corrupt(String),
    #[error("the batch could overflow the in-memory tree's node indices")]
    Full,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The in-memory store the tree uses by default.
pub type SmtMemStore = MemStore<StoreKey, StoreValue>;

/// Either representation of the tree, as a structure built on one (the
/// key index) uses it: the paged [`SparseMerkleTree`] over a store, or the
/// in-memory [`MemTree`]. Same versions, roots and proofs.
pub trait VersionedTree {
    /// See [`SparseMerkleTree::apply_batch`].
    fn apply_batch(&mut self, updates: &[(Hash, Option<Hash>)]) -> Result<(u64, Hash), SmtError>;
    /// See [`SparseMerkleTree::prune`].
    fn prune(&mut self, keep_versions: u64) -> Result<u64, SmtError>;
    fn set_retention(&mut self, keep: Option<u64>);
    fn latest_version(&self) -> u64;
    fn oldest_version(&self) -> u64;
    fn root(&self, version: u64) -> Result<Hash, SmtError>;
    fn get_with_proof(
        &self,
        key: &Hash,
        version: u64,
    ) -> Result<(Option<Hash>, SparseProof), SmtError>;
    /// Every leaf of `version` in key order.
    fn each_leaf(&self, version: u64, f: &mut dyn FnMut(&Hash, &Hash)) -> Result<(), SmtError>;

    /// Every leaf of `version`, as `(key, value)` in key order.
    fn leaves(&self, version: u64) -> Result<Vec<(Hash, Hash)>, SmtError> {
        let mut out = Vec::new();
        self.each_leaf(version, &mut |k, v| out.push((*k, *v)))?;
        Ok(out)
    }
}

/// Forwards every method to the type's own method of the same name.
macro_rules! versioned_tree {
    ($ty:ty $(, $bound:tt)?) => {
        impl$(<S: $bound<StoreKey, StoreValue>>)? VersionedTree for $ty {
            fn apply_batch(
                &mut self,
                updates: &[(Hash, Option<Hash>)],
            ) -> Result<(u64, Hash), SmtError> {
                <$ty>::apply_batch(self, updates)
            }
            fn prune(&mut self, keep_versions: u64) -> Result<u64, SmtError> {
                <$ty>::prune(self, keep_versions)
            }
            fn set_retention(&mut self, keep: Option<u64>) {
                <$ty>::set_retention(self, keep)
            }
            fn latest_version(&self) -> u64 {
                <$ty>::latest_version(self)
            }
            fn oldest_version(&self) -> u64 {
                <$ty>::oldest_version(self)
            }
            fn root(&self, version: u64) -> Result<Hash, SmtError> {
                <$ty>::root(self, version)
            }
            fn get_with_proof(
                &self,
                key: &Hash,
                version: u64,
            ) -> Result<(Option<Hash>, SparseProof), SmtError> {
                <$ty>::get_with_proof(self, key, version)
            }
            fn each_leaf(
                &self,
                version: u64,
                f: &mut dyn FnMut(&Hash, &Hash),
            ) -> Result<(), SmtError> {
                <$ty>::for_each_leaf(self, version, f)
            }
        }
    };
}
versioned_tree!(SparseMerkleTree<S>, NodeStore);
versioned_tree!(MemTree);

/// A versioned sparse Merkle tree over a [`NodeStore`].
#[derive(Debug, Clone)]
pub struct SparseMerkleTree<S = SmtMemStore> {
    store: S,
    meta: TreeMeta,
    /// When set, every batch prunes down to this many versions.
    retention: Option<u64>,
    /// Buffers of pruned pages, reused for the pages of later batches.
    pool: page::Pool,
    /// Threads a batch may use, and how it runs them (see
    /// [`SparseMerkleTree::set_parallelism`]).
    parallel: Option<(usize, batch::Spawner<S>, Arc<dyn Executor>)>,
}

impl SparseMerkleTree<SmtMemStore> {
    /// An empty in-memory tree at version 0.
    pub fn new() -> Self {
        match Self::create(MemStore::new()) {
            Ok(t) => t,
            // MemStore never fails and a fresh map holds no tree.
            Err(e) => unreachable!("in-memory store failed: {e}"),
        }
    }
}

impl Default for SparseMerkleTree<SmtMemStore> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: NodeStore<StoreKey, StoreValue> + Sync> SparseMerkleTree<S> {
    /// Split each batch into `jobs` independent jobs run by `exec` (1, the
    /// default, or 0: one walk in the calling thread). The subtrees below
    /// the root page are then built as about equal shares of the updates
    /// while the store is only read; the pages are stored and pruned in the
    /// calling thread as before. Roots, pages and stale lists are identical
    /// to the sequential path's. Small batches (under about a thousand
    /// updates) stay in the calling thread.
    pub fn set_parallelism(&mut self, jobs: usize, exec: Arc<dyn Executor>) {
        self.parallel = (jobs > 1).then_some((jobs, batch::run_jobs::<S> as _, exec));
    }
}

/// Where a key's path ends.
enum PathEnd {
    Empty,
    Leaf(Hash, Hash),
}

impl<S: NodeStore<StoreKey, StoreValue>> SparseMerkleTree<S> {
    /// Start a tree in an empty store: version 0, the empty tree.
    pub fn create(store: S) -> Result<Self, SmtError> {
        Self::create_at(store, 0)
    }

    /// Start a tree in an empty store as the empty tree at `version`, with
    /// no older version: the first batch makes `version + 1`. A restore
    /// (a state snapshot taken at some version) uses it so that loading all
    /// leaves in one batch gives the version numbering the tree had, after
    /// which [`Self::prune`]`(1)` drops the empty start.
    pub fn create_at(mut store: S, version: u64) -> Result<Self, SmtError> {
        if store.get(&StoreKey::Meta)?.is_some() {
            return Err(SmtError::AlreadyExists);
        }
        let meta = TreeMeta {
            oldest: version,
            latest: version,
            pages: 0,
        };
        store.put(StoreKey::Root(version), StoreValue::Root(None))?;
        store.put(StoreKey::Meta, StoreValue::Meta(meta))?;
        Ok(SparseMerkleTree {
            store,
            meta,
            retention: None,
            pool: page::Pool::default(),
            parallel: None,
        })
    }

    /// Reopen a tree a previous [`SparseMerkleTree::create`] left in `store`.
    pub fn open(store: S) -> Result<Self, SmtError> {
        match store.get(&StoreKey::Meta)? {
            Some(StoreValue::Meta(meta)) => Ok(SparseMerkleTree {
                store,
                meta,
                retention: None,
                pool: page::Pool::default(),
                parallel: None,
            }),
            Some(_) => Err(SmtError::Corrupt("meta entry of the wrong kind".into())),
            None => Err(StoreError::Missing("tree meta".into()).into()),
        }
    }

    /// Prune automatically after every batch, keeping the newest `keep`
    /// versions (`None`: keep everything until [`Self::prune`] is called).
    pub fn set_retention(&mut self, keep: Option<u64>) {
        self.retention = keep;
    }

    pub fn latest_version(&self) -> u64 {
        self.meta.latest
    }

    /// The oldest version still readable.
    pub fn oldest_version(&self) -> u64 {
        self.meta.oldest
    }

    /// Pages currently stored, over all kept versions: the tree's store
    /// entries besides one root per kept version, the stale lists and meta.
    pub fn node_count(&self) -> u64 {
        self.meta.pages
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn into_store(self) -> S {
        self.store
    }

    /// The root hash of `version`.
    pub fn root(&self, version: u64) -> Result<Hash, SmtError> {
        Ok(self.root_slot(version)?.map_or(Hash::ZERO, |s| s.hash()))
    }

    /// The value of `key` at `version`.
    pub fn get(&self, key: &Hash, version: u64) -> Result<Option<Hash>, SmtError> {
        let (_, end) = self.descend(key, version, |_, _| {})?;
        Ok(match end {
            PathEnd::Leaf(k, v) if k == *key => Some(v),
            _ => None,
        })
    }

    /// The value of `key` at `version` with a proof of it against
    /// `root(version)`.
    pub fn get_with_proof(
        &self,
        key: &Hash,
        version: u64,
    ) -> Result<(Option<Hash>, SparseProof), SmtError> {
        let mut bitmap = [0u8; 32];
        let mut siblings = Vec::new();
        let (depth, end) = self.descend(key, version, |depth, sibling| {
            if let (Some(s), Some(b)) = (sibling, bitmap.get_mut(depth / 8)) {
                *b |= 0x80u8 >> (depth % 8);
                siblings.push(s);
            }
        })?;
        let end = match end {
            PathEnd::Leaf(k, v) => Some((k, v)),
            PathEnd::Empty => None,
        };
        Ok(finish_proof(key, depth, &bitmap, siblings, end))
    }

    /// Call `f` on every leaf of `version` in key order (tree order), one
    /// page read per stored page. A depth-first walk with an explicit stack,
    /// like the batch walk, so no key shape can exhaust the thread's stack.
    pub fn for_each_leaf(
        &self,
        version: u64,
        mut f: impl FnMut(&Hash, &Hash),
    ) -> Result<(), SmtError> {
        let first = match self.root_slot(version)? {
            None => return Ok(()),
            Some(Slot::Leaf { key, value, .. }) => {
                f(&key, &value);
                return Ok(());
            }
            Some(Slot::Page(c)) => NodeKey::new(c.version, 0, &[0; 32]),
            Some(Slot::Internal(_)) => {
                return Err(SmtError::Corrupt("internal slot at the root".into()))
            }
        };
        let mut stack = vec![Walk::Page(first)];
        let mut found = Vec::with_capacity(32);
        while let Some(next) = stack.pop() {
            match next {
                Walk::Leaf(k, v) => f(&k, &v),
                Walk::Page(key) => {
                    if usize::from(key.depth) > MAX_PAGE_DEPTH {
                        return Err(SmtError::Corrupt("page below depth 252".into()));
                    }
                    found.clear();
                    self.with_page(&key, |page| page_in_order(page, &key, 1, &mut found))??;
                    // Reversed, so the leftmost is popped first.
                    stack.extend(found.drain(..).rev());
                }
            }
        }
        Ok(())
    }

    /// Walk `key`'s path in `version` to where it ends, reporting each
    /// level's sibling (depth of the parent, hash if non-empty) on the way.
    fn descend(
        &self,
        key: &Hash,
        version: u64,
        mut sibling: impl FnMut(usize, Option<Hash>),
    ) -> Result<(usize, PathEnd), SmtError> {
        let mut next = self.root_slot(version)?;
        let mut depth = 0;
        loop {
            let page_ref = match next {
                None => return Ok((depth, PathEnd::Empty)),
                Some(Slot::Leaf { key: k, value, .. }) => {
                    return Ok((depth, PathEnd::Leaf(k, value)))
                }
                Some(Slot::Page(c)) => c,
                Some(Slot::Internal(_)) => {
                    return Err(SmtError::Corrupt("internal slot at a page exit".into()))
                }
            };
            if depth > MAX_PAGE_DEPTH {
                return Err(SmtError::Corrupt("page below depth 252".into()));
            }
            let page_key = NodeKey::new(page_ref.version, depth, &key.0);
            // Read the page where it lies (no copy of it), reporting the
            // siblings on the way down to where the path leaves it.
            let (below, end) = self.with_page(&page_key, |page| {
                let slots = page.slots.view();
                let mut pos = 1u8;
                let mut d = depth;
                for level in 0..PAGE_LEVELS {
                    let child = (pos << 1) | u8::from(bit(&key.0, d));
                    sibling(d, slots.get(child ^ 1).map(|s| s.hash()));
                    d += 1;
                    match slots.get(child) {
                        Some(Slot::Internal(_)) if level + 1 < PAGE_LEVELS => pos = child,
                        Some(Slot::Page(_)) if level + 1 < PAGE_LEVELS => {
                            return Err(SmtError::Corrupt("page reference inside a page".into()))
                        }
                        Some(Slot::Internal(_)) => {
                            return Err(SmtError::Corrupt("internal slot at a page exit".into()))
                        }
                        other => return Ok((d, other)),
                    }
                }
                Err(SmtError::Corrupt("path runs through a page".into()))
            })??;
            depth = below;
            next = end;
        }
    }

    /// Apply a batch as the next version and return it with its root.
    ///
    /// `None` deletes a key. When a key appears more than once, the last
    /// entry wins. On a store error the in-memory state is unchanged but the
    /// store may hold part of the batch; a backend wraps the call in a
    /// transaction to make it atomic.
    pub fn apply_batch(
        &mut self,
        updates: &[(Hash, Option<Hash>)],
    ) -> Result<(u64, Hash), SmtError> {
        let version = self
            .meta
            .latest
            .checked_add(1)
            .ok_or(SmtError::VersionOverflow)?;
        let updates = batch::normalize(updates);
        let old_root = self.root_slot(self.meta.latest)?;
        let out = batch::apply(
            &self.store,
            &mut self.pool,
            version,
            old_root,
            &updates,
            self.parallel
                .as_ref()
                .map(|(n, spawn, exec)| (*n, *spawn, &**exec as &dyn Executor)),
        )?;
        let written = out.written.len() as u64;
        for (key, slots) in out.written {
            self.store
                .put(StoreKey::Page(key), StoreValue::Page(Page { slots }))?;
        }

        let root = out.root.map(Box::new);
        self.store
            .put(StoreKey::Root(version), StoreValue::Root(root))?;
        if !out.stale.is_empty() {
            self.store
                .put(StoreKey::Stale(version), StoreValue::Stale(out.stale))?;
        }
        let meta = TreeMeta {
            latest: version,
            pages: self.meta.pages + written,
            ..self.meta
        };
        self.store.put(StoreKey::Meta, StoreValue::Meta(meta))?;
        self.meta = meta;
        if let Some(keep) = self.retention {
            self.prune(keep)?;
        }
        Ok((version, out.root.map_or(Hash::ZERO, |s| s.hash())))
    }

    /// Keep the newest `keep_versions` versions (at least the latest one)
    /// and delete every page only older versions use. Returns the number of
    /// pages deleted. Pruned versions answer [`SmtError::Pruned`].
    pub fn prune(&mut self, keep_versions: u64) -> Result<u64, SmtError> {
        let keep = keep_versions.max(1);
        let new_oldest = (self.meta.latest + 1).saturating_sub(keep);
        if new_oldest <= self.meta.oldest {
            return Ok(0);
        }
        let mut removed = 0u64;
        for v in self.meta.oldest + 1..=new_oldest {
            // Moved out of the store, not copied: the list is dropped here.
            match self.store.take(&StoreKey::Stale(v))? {
                Some(StoreValue::Stale(keys)) => {
                    let pool = &mut self.pool;
                    for k in &keys {
                        self.store.remove_recycling(&StoreKey::Page(*k), |v| {
                            if let StoreValue::Page(p) = v {
                                pool.recycle(p.slots);
                            }
                        })?;
                    }
                    removed += keys.len() as u64;
                }
                Some(_) => return Err(SmtError::Corrupt(format!("stale entry {v} of wrong kind"))),
                None => {}
            }
        }
        for v in self.meta.oldest..new_oldest {
            self.store.remove(&StoreKey::Root(v))?;
        }
        let meta = TreeMeta {
            oldest: new_oldest,
            pages: self.meta.pages.saturating_sub(removed),
            ..self.meta
        };
        self.store.put(StoreKey::Meta, StoreValue::Meta(meta))?;
        self.meta = meta;
        Ok(removed)
    }

    fn root_slot(&self, version: u64) -> Result<Option<Slot>, SmtError> {
        if version > self.meta.latest {
            return Err(SmtError::FutureVersion {
                version,
                latest: self.meta.latest,
            });
        }
        if version < self.meta.oldest {
            return Err(SmtError::Pruned {
                version,
                oldest: self.meta.oldest,
            });
        }
        match self.store.get(&StoreKey::Root(version))? {
            Some(StoreValue::Root(r)) => Ok(r.map(|s| *s)),
            Some(_) => Err(SmtError::Corrupt(format!("root {version} of wrong kind"))),
            None => Err(StoreError::Missing(format!("root of version {version}")).into()),
        }
    }

    /// Run `f` on the page stored under `key`, where it lies.
    fn with_page<R>(&self, key: &NodeKey, f: impl FnOnce(&Page) -> R) -> Result<R, SmtError> {
        with_page(&self.store, key, f)
    }
}

/// The value of `key` and its proof, from a walk down its path that ended
/// at `depth` on `end` (a leaf's key and value, or an empty subtree),
/// with the non-empty siblings marked in `bitmap` and listed root side
/// first in `siblings`. Both representations end their proofs here.
fn finish_proof(
    key: &Hash,
    depth: usize,
    bitmap: &[u8; 32],
    siblings: Vec<Hash>,
    end: Option<(Hash, Hash)>,
) -> (Option<Hash>, SparseProof) {
    let (value, other_leaf) = match end {
        Some((k, v)) if k == *key => (Some(v), None),
        Some(other) => (None, Some(other)),
        None => (None, None),
    };
    let bitmap = bitmap.get(..depth.div_ceil(8)).unwrap_or(bitmap).to_vec();
    let proof = SparseProof::from_parts(depth as u16, bitmap, siblings, other_leaf);
    (value, proof)
}

/// A step of [`SparseMerkleTree::for_each_leaf`]: a leaf to report, or a
/// page to open.
enum Walk {
    Leaf(Hash, Hash),
    Page(NodeKey),
}

/// The leaves and child pages below heap position `pos` of the page stored
/// under `at`, left to right.
fn page_in_order(page: &Page, at: &NodeKey, pos: u8, out: &mut Vec<Walk>) -> Result<(), SmtError> {
    for child in [pos << 1, (pos << 1) | 1] {
        match page.slot(child) {
            None => {}
            Some(Slot::Leaf { key, value, .. }) => out.push(Walk::Leaf(key, value)),
            Some(Slot::Internal(_)) if child < 16 => page_in_order(page, at, child, out)?,
            Some(Slot::Page(c)) if child >= 16 => {
                // The exit's four bits follow the page's own path.
                let depth = usize::from(at.depth);
                let mut path = at.path;
                for i in 0..PAGE_LEVELS {
                    if (child - 16) & (0b1000 >> i) != 0 {
                        if let Some(b) = path.get_mut((depth + i) / 8) {
                            *b |= 0x80u8 >> ((depth + i) % 8);
                        }
                    }
                }
                out.push(Walk::Page(NodeKey::new(
                    c.version,
                    depth + PAGE_LEVELS,
                    &path,
                )));
            }
            Some(_) => return Err(SmtError::Corrupt(format!("slot kind at position {child}"))),
        }
    }
    Ok(())
}

/// Run `f` on the page stored in `store` under `key`, where it lies.
fn with_page<S: NodeStore<StoreKey, StoreValue>, R>(
    store: &S,
    key: &NodeKey,
    f: impl FnOnce(&Page) -> R,
) -> Result<R, SmtError> {
    store.get_with(&StoreKey::Page(*key), |v| match v {
        Some(StoreValue::Page(p)) => Ok(f(p)),
        Some(_) => Err(SmtError::Corrupt(format!("{key:?} is not a page"))),
        None => Err(StoreError::Missing(format!("{key:?}")).into()),
    })?
}
