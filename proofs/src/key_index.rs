//! The key index: for every index key (an owner key, or a name, hashed by
//! the caller), the list of outputs created for it with their heights, and
//! proofs that the part of a list between two heights is complete — no
//! output hidden.
//!
//! # Structure
//!
//! Each key's list is its own Merkle mountain range ([`crate::mmr`]) over
//! entry hashes `H("pos/proofs/key-index-entry/v1", height u64 LE || output id)`,
//! appended in height order (heights never decrease: [`KeyIndex::apply`]
//! refuses a lower height than the last one). The versioned sparse Merkle
//! tree ([`crate::smt`]) maps each key to its list head
//! `H("pos/proofs/key-index-head/v1", count u64 LE || list root)`; keys with
//! an empty list are absent. One [`KeyIndex::apply`] is one tree version, so
//! the index root at a version is that tree's root.
//!
//! # Completeness proof
//!
//! For key `K` and heights `[from, to]` a [`CompletenessProof`] carries the
//! list's size and root with the tree proof of `K`'s head (or of `K`'s
//! absence), and a contiguous run of entries `first ..` with a range proof of
//! the list. The verifier checks the run is in the list, that heights do not
//! decrease, and that the run is bounded on both sides: its first entry is
//! the list's first or lies below `from`, its last is the list's last or
//! lies above `to`. Every entry with a height in `[from, to]` therefore lies
//! inside the run, and the verifier returns exactly those.
//!
//! # Storage
//!
//! Besides the tree's own store, one [`NodeStore`] of [`IndexKey`] →
//! [`IndexValue`]: the per-key list nodes (by key and MMR position), the
//! entries themselves (by key and index, to answer queries), and each key's
//! list sizes by version (to prove "as of" an older version; only the
//! versions the tree still keeps, so a key's sizes stay as few as those).
//!
//! # Restore
//!
//! [`KeyIndex::lists`] exports every key's whole list; [`KeyIndex::restore`]
//! rebuilds from them, in fresh stores, the index at a given version with
//! the same root, and later applies behave as on the original. Versions
//! before the restored one are not provable there.

mod any_store;
mod mem_store;

pub use any_store::AnyIndexStore;
pub use mem_store::IndexMemStore;

use crate::codec;
use crate::hash::{Domain, Hash, HashBatch, Hasher, Sink};
use crate::mmr::{self, Mmr, MmrError, RangeProof};
use crate::smt::{
    self, MemTree, SmtError, SparseMerkleTree, SparseProof, StoreKey, StoreValue, VersionedTree,
};
use crate::store::{NodeStore, StoreError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const ENTRY_DOMAIN: Domain = Domain::new("pos/proofs/key-index-entry/v1");
pub const HEAD_DOMAIN: Domain = Domain::new("pos/proofs/key-index-head/v1");

/// Entries one proof may carry (a larger query is split by height).
pub const MAX_PROOF_ENTRIES: usize = 4096;
/// Decode limit: entries, a tree proof and a range proof with room to spare.
pub const MAX_PROOF_BYTES: usize =
    MAX_PROOF_ENTRIES * 48 + smt::MAX_PROOF_BYTES + mmr::MAX_PROOF_BYTES + 64;

/// One output created for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub height: u64,
    pub output: Hash,
}

impl Entry {
    pub fn leaf(&self) -> Hash {
        let mut h = Hasher::new(ENTRY_DOMAIN);
        self.write_leaf(&mut h);
        h.finalize()
    }

    /// The message [`Entry::leaf`] hashes under [`ENTRY_DOMAIN`].
    fn write_leaf(&self, out: &mut impl Sink) {
        out.put(&self.height.to_le_bytes());
        out.put(&self.output.0);
    }
}

/// The tree value of a key with a non-empty list.
pub fn head_hash(count: u64, list_root: &Hash) -> Hash {
    let mut h = Hasher::new(HEAD_DOMAIN);
    write_head(count, list_root, &mut h);
    h.finalize()
}

/// The message [`head_hash`] hashes under [`HEAD_DOMAIN`].
fn write_head(count: u64, list_root: &Hash, out: &mut impl Sink) {
    out.put(&count.to_le_bytes());
    out.put(&list_root.0);
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IndexKey {
    ListNode(Hash, u64),
    Entry(Hash, u64),
    /// A key's list sizes by version.
    Sizes(Hash),
    /// The height of the last `apply`.
    LastHeight,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexValue {
    Node(Hash),
    Entry(Entry),
    /// (first version with this size, size), oldest first.
    Sizes(Vec<(u64, u64)>),
    Height(u64),
}

#[derive(Debug, Error)]
pub enum KeyIndexError {
    #[error(transparent)]
    Tree(#[from] SmtError),
    #[error(transparent)]
    List(#[from] MmrError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("height {height} is below the last applied height {last}")]
    HeightWentBack { height: u64, last: u64 },
    #[error("the range [{from}, {to}] is empty")]
    EmptyRange { from: u64, to: u64 },
    #[error("{0} entries fall in the range; at most {MAX_PROOF_ENTRIES} fit one proof")]
    TooManyEntries(u64),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(&'static str),
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

/// Why [`KeyIndex::restore`] refused its lists.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RestoreError {
    #[error("version 0 is the empty index; a restore makes version 1 or later")]
    VersionZero,
    #[error("keys are not strictly increasing at {0:?}")]
    KeysUnsorted(Hash),
    #[error("key {0:?} has an empty list (keys without entries are absent)")]
    EmptyList(Hash),
    #[error("key {0:?}: entry heights decrease or pass the last height")]
    BadHeights(Hash),
    #[error("a restore at version {version} needs an empty tree at version {version} - 1")]
    TreeStart { version: u64 },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("malformed proof encoding: {0}")]
    Decode(#[from] crate::codec::CodecError),
    #[error("the range [{from}, {to}] is empty")]
    EmptyRange { from: u64, to: u64 },
    #[error("tree proof of the key's head: {0}")]
    Head(#[from] smt::ProofError),
    #[error("list proof: {0}")]
    List(#[from] mmr::ProofError),
    #[error("an empty list carries entries or a list proof")]
    EmptyListWithEntries,
    #[error("a non-empty list needs at least one entry and a list proof")]
    MissingEntries,
    #[error("{0} entries exceed the limit of {MAX_PROOF_ENTRIES}")]
    TooManyEntries(usize),
    #[error("entry heights decrease")]
    Unsorted,
    #[error("the run of entries does not reach below the range start, nor the list's start")]
    OpenBelow,
    #[error("the run of entries does not reach above the range end, nor the list's end")]
    OpenAbove,
    #[error("the proof carries more than one entry on a side of the range, or fields an empty list does not have")]
    NotMinimal,
}

/// Proof that the entries of one key with heights in `[from, to]` are
/// exactly the ones it yields, against an index root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletenessProof {
    /// The list's size (0: the key has no entries).
    pub count: u64,
    pub list_root: Hash,
    pub head: SparseProof,
    /// Index of `entries[0]` in the list.
    pub first: u64,
    pub entries: Vec<Entry>,
    pub range: Option<RangeProof>,
}

impl CompletenessProof {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ProofError> {
        Ok(codec::decode(bytes, MAX_PROOF_BYTES)?)
    }

    /// Check against the index `root`; on success, the entries of `key` with
    /// heights in `[from, to]`, in list order.
    pub fn verify(
        &self,
        root: &Hash,
        key: &Hash,
        from: u64,
        to: u64,
    ) -> Result<Vec<Entry>, ProofError> {
        if from > to {
            return Err(ProofError::EmptyRange { from, to });
        }
        if self.entries.len() > MAX_PROOF_ENTRIES {
            return Err(ProofError::TooManyEntries(self.entries.len()));
        }
        if self.count == 0 {
            if !self.entries.is_empty() || self.range.is_some() {
                return Err(ProofError::EmptyListWithEntries);
            }
            // One proof per answer: the other fields are fixed.
            if self.first != 0 || self.list_root != mmr::empty_root() {
                return Err(ProofError::NotMinimal);
            }
            self.head.verify(root, key, None)?;
            return Ok(Vec::new());
        }
        let (Some(range), Some(head_entry), Some(last_entry)) =
            (&self.range, self.entries.first(), self.entries.last())
        else {
            return Err(ProofError::MissingEntries);
        };
        self.head
            .verify(root, key, Some(&head_hash(self.count, &self.list_root)))?;
        if self.entries.windows(2).any(|w| w[1].height < w[0].height) {
            return Err(ProofError::Unsorted);
        }
        // Leaves hashed into a fixed buffer chunk by chunk would need a
        // streaming range check; a proof is bounded by MAX_PROOF_ENTRIES, so
        // one vector of leaf hashes is bounded too.
        let leaves: Vec<Hash> = self.entries.iter().map(Entry::leaf).collect();
        range.verify(&self.list_root, self.count, self.first, &leaves)?;
        let last_index = self.first + self.entries.len() as u64 - 1;
        if self.first != 0 && head_entry.height >= from {
            return Err(ProofError::OpenBelow);
        }
        if last_index != self.count - 1 && last_entry.height <= to {
            return Err(ProofError::OpenAbove);
        }
        // Exactly what bounds the range, nothing more.
        if self.entries.iter().filter(|e| e.height < from).count() > 1
            || self.entries.iter().filter(|e| e.height > to).count() > 1
        {
            return Err(ProofError::NotMinimal);
        }
        Ok(self
            .entries
            .iter()
            .filter(|e| e.height >= from && e.height <= to)
            .copied()
            .collect())
    }
}

/// A key's list nodes seen as one MMR's store.
struct ListStore<'a, S> {
    key: Hash,
    store: ListAccess<'a, S>,
}

enum ListAccess<'a, S> {
    Read(&'a S),
    Write(&'a mut S),
}

impl<S: NodeStore<IndexKey, IndexValue>> NodeStore<u64, Hash> for ListStore<'_, S> {
    fn get(&self, pos: &u64) -> Result<Option<Hash>, StoreError> {
        let k = IndexKey::ListNode(self.key, *pos);
        let v = match &self.store {
            ListAccess::Read(s) => s.get(&k)?,
            ListAccess::Write(s) => s.get(&k)?,
        };
        match v {
            None => Ok(None),
            Some(IndexValue::Node(h)) => Ok(Some(h)),
            Some(_) => Err(StoreError::Backend(
                "a list node slot holds another kind of value".into(),
            )),
        }
    }

    fn put(&mut self, pos: u64, value: Hash) -> Result<(), StoreError> {
        match &mut self.store {
            ListAccess::Write(s) => {
                s.put(IndexKey::ListNode(self.key, pos), IndexValue::Node(value))
            }
            ListAccess::Read(_) => Err(StoreError::Backend("list opened read-only".into())),
        }
    }

    fn remove(&mut self, pos: &u64) -> Result<(), StoreError> {
        match &mut self.store {
            ListAccess::Write(s) => s.remove(&IndexKey::ListNode(self.key, *pos)),
            ListAccess::Read(_) => Err(StoreError::Backend("list opened read-only".into())),
        }
    }
}

/// The key index over a tree `T` (either representation, see
/// [`VersionedTree`]) and a store `S` of lists, entries and sizes.
pub struct KeyIndex<T, S> {
    tree: T,
    store: S,
    last_height: Option<u64>,
}

impl<St: NodeStore<StoreKey, StoreValue>, S: NodeStore<IndexKey, IndexValue>>
    KeyIndex<SparseMerkleTree<St>, S>
{
    /// An empty index (tree version 0) whose tree is paged into `tree_store`.
    pub fn create(tree_store: St, store: S) -> Result<Self, KeyIndexError> {
        Self::over(SparseMerkleTree::create(tree_store)?, store)
    }

    /// Reopen an index from its stores.
    pub fn open(tree_store: St, store: S) -> Result<Self, KeyIndexError> {
        Self::reopen(SparseMerkleTree::open(tree_store)?, store)
    }

    /// [`KeyIndex::restore_over`] a paged tree created in `tree_store`.
    pub fn restore(
        tree_store: St,
        store: S,
        version: u64,
        last_height: u64,
        lists: &[(Hash, Vec<Entry>)],
    ) -> Result<Self, KeyIndexError> {
        let start = version.checked_sub(1).ok_or(RestoreError::VersionZero)?;
        let tree = SparseMerkleTree::create_at(tree_store, start)?;
        Self::restore_over(tree, store, version, last_height, lists)
    }

    /// Hand the stores back (to reopen, or to close the backend).
    pub fn into_stores(self) -> (St, S) {
        (self.tree.into_store(), self.store)
    }
}

impl<S: NodeStore<IndexKey, IndexValue>> KeyIndex<MemTree, S> {
    /// An empty index (tree version 0) whose tree is held in memory.
    pub fn in_memory(store: S) -> Result<Self, KeyIndexError> {
        Self::over(MemTree::new(), store)
    }

    /// [`KeyIndex::restore_over`] a tree held in memory.
    pub fn restore_in_memory(
        store: S,
        version: u64,
        last_height: u64,
        lists: &[(Hash, Vec<Entry>)],
    ) -> Result<Self, KeyIndexError> {
        let start = version.checked_sub(1).ok_or(RestoreError::VersionZero)?;
        Self::restore_over(
            MemTree::create_at(start),
            store,
            version,
            last_height,
            lists,
        )
    }
}

impl<T: VersionedTree, S: NodeStore<IndexKey, IndexValue>> KeyIndex<T, S> {
    /// A new index over an empty `tree` and an empty `store`.
    pub fn over(tree: T, store: S) -> Result<Self, KeyIndexError> {
        Ok(KeyIndex {
            tree,
            store,
            last_height: None,
        })
    }

    /// An index whose `tree` and `store` an earlier index left.
    pub fn reopen(tree: T, store: S) -> Result<Self, KeyIndexError> {
        let last_height = match store.get(&IndexKey::LastHeight)? {
            None => None,
            Some(IndexValue::Height(h)) => Some(h),
            Some(_) => {
                return Err(KeyIndexError::Corrupt(
                    "last height slot holds another kind of value",
                ))
            }
        };
        Ok(KeyIndex {
            tree,
            store,
            last_height,
        })
    }

    /// Rebuild, in `tree` (empty, at version `version - 1`) and the empty
    /// `store`, the index that holds exactly `lists` (each key's whole
    /// list, in list order) at `version`, the last [`KeyIndex::apply`]
    /// having been for height `last_height`. Its root and later behaviour
    /// equal those of the index that appended the same entries height by
    /// height, because a list's root depends only on its entries and the
    /// tree only on its key set. Only `version` is readable afterwards: the
    /// lists say nothing of older versions.
    ///
    /// Keys must be strictly increasing, every list non-empty, and heights
    /// non-decreasing and at most `last_height` (what `apply` guarantees).
    pub fn restore_over(
        mut tree: T,
        mut store: S,
        version: u64,
        last_height: u64,
        lists: &[(Hash, Vec<Entry>)],
    ) -> Result<Self, KeyIndexError> {
        let start = version.checked_sub(1).ok_or(RestoreError::VersionZero)?;
        if tree.latest_version() != start || tree.root(start)? != Hash::ZERO {
            return Err(RestoreError::TreeStart { version }.into());
        }
        let mut heads = Vec::with_capacity(lists.len());
        let mut previous: Option<&Hash> = None;
        for (key, entries) in lists {
            if previous.is_some_and(|p| p >= key) {
                return Err(RestoreError::KeysUnsorted(*key).into());
            }
            previous = Some(key);
            let Some(last) = entries.last() else {
                return Err(RestoreError::EmptyList(*key).into());
            };
            if last.height > last_height || entries.windows(2).any(|w| w[1].height < w[0].height) {
                return Err(RestoreError::BadHeights(*key).into());
            }
            let mut list = Mmr::new(ListStore {
                key: *key,
                store: ListAccess::Write(&mut store),
            });
            for entry in entries {
                list.append(entry.leaf())?;
            }
            let (count, root) = (list.size(), list.root());
            drop(list);
            for (index, entry) in (0u64..).zip(entries) {
                store.put(IndexKey::Entry(*key, index), IndexValue::Entry(*entry))?;
            }
            store.put(
                IndexKey::Sizes(*key),
                IndexValue::Sizes(vec![(version, count)]),
            )?;
            heads.push((*key, Some(head_hash(count, &root))));
        }
        store.put(IndexKey::LastHeight, IndexValue::Height(last_height))?;
        tree.apply_batch(&heads)?;
        // Drop the empty start version: it never was this index's state.
        tree.prune(1)?;
        Ok(KeyIndex {
            tree,
            store,
            last_height: Some(last_height),
        })
    }

    /// Every key's whole list as of the latest version, keys in increasing
    /// order: what [`KeyIndex::restore`] takes to rebuild this index.
    pub fn lists(&self) -> Result<Vec<(Hash, Vec<Entry>)>, KeyIndexError> {
        self.keys()?
            .into_iter()
            .map(|key| Ok((key, self.list(&key)?)))
            .collect()
    }

    /// Every index key with a non-empty list as of the latest version, in
    /// increasing order.
    pub fn keys(&self) -> Result<Vec<Hash>, KeyIndexError> {
        let mut keys = Vec::new();
        self.tree
            .each_leaf(self.tree.latest_version(), &mut |key, _| keys.push(*key))?;
        Ok(keys)
    }

    /// `key`'s whole list as of the latest version, in list order.
    pub fn list(&self, key: &Hash) -> Result<Vec<Entry>, KeyIndexError> {
        let count = self.sizes(key)?.last().map_or(0, |(_, n)| *n);
        (0..count).map(|i| self.entry(key, i)).collect()
    }

    /// The height of the last [`KeyIndex::apply`] (or restore).
    pub fn last_height(&self) -> Option<u64> {
        self.last_height
    }

    /// The oldest version still readable.
    pub fn oldest_version(&self) -> u64 {
        self.tree.oldest_version()
    }

    /// Hand the tree and the store back.
    pub fn into_parts(self) -> (T, S) {
        (self.tree, self.store)
    }

    pub fn latest_version(&self) -> u64 {
        self.tree.latest_version()
    }

    pub fn root(&self, version: u64) -> Result<Hash, KeyIndexError> {
        Ok(self.tree.root(version)?)
    }

    /// Keep only the newest `keep` versions provable.
    pub fn set_retention(&mut self, keep: Option<u64>) {
        self.tree.set_retention(keep);
    }

    fn sizes(&self, key: &Hash) -> Result<Vec<(u64, u64)>, KeyIndexError> {
        match self.store.get(&IndexKey::Sizes(*key))? {
            None => Ok(Vec::new()),
            Some(IndexValue::Sizes(v)) => Ok(v),
            Some(_) => Err(KeyIndexError::Corrupt(
                "sizes slot holds another kind of value",
            )),
        }
    }

    /// The list size of `key` at `version`.
    fn size_at(&self, key: &Hash, version: u64) -> Result<u64, KeyIndexError> {
        Ok(self
            .sizes(key)?
            .iter()
            .rev()
            .find(|(v, _)| *v <= version)
            .map_or(0, |(_, n)| *n))
    }

    fn entry(&self, key: &Hash, index: u64) -> Result<Entry, KeyIndexError> {
        match self.store.get(&IndexKey::Entry(*key, index))? {
            Some(IndexValue::Entry(e)) => Ok(e),
            _ => Err(KeyIndexError::Corrupt("a list entry is missing")),
        }
    }

    /// Append the outputs created at `height` (`(index key, output id)`,
    /// each key's outputs in the given order) as one new version. Returns
    /// the version and the index root.
    pub fn apply(
        &mut self,
        height: u64,
        created: &[(Hash, Hash)],
    ) -> Result<(u64, Hash), KeyIndexError> {
        if let Some(last) = self.last_height {
            if height < last {
                return Err(KeyIndexError::HeightWentBack { height, last });
            }
        }
        let version = self.tree.latest_version() + 1;
        // Sizes as of versions before the oldest the tree still proves are
        // never asked for: each key keeps only those since, and the one in
        // force then, so a key touched at every height holds about as many
        // as the versions kept, not one per height it ever had.
        let oldest = self.tree.oldest_version();
        // Group by key, keeping each key's order (a stable sort).
        let mut order: Vec<usize> = (0..created.len()).collect();
        order.sort_by(|&a, &b| created[a].0.cmp(&created[b].0));
        // The hashes that do not depend on a list's earlier nodes (entry
        // leaves and their MMR leaf nodes now, roots and heads below) are
        // computed for the whole height at once, in the SIMD lanes.
        let entries: Vec<Entry> = order
            .iter()
            .map(|&i| Entry {
                height,
                output: created[i].1,
            })
            .collect();
        let mut leaves = HashBatch::new(ENTRY_DOMAIN);
        for e in &entries {
            leaves.push_with(|buf| e.write_leaf(buf));
        }
        let mut nodes = HashBatch::new(mmr::LEAF_DOMAIN);
        for leaf in leaves.finish() {
            nodes.push_with(|buf| buf.put(&leaf.0));
        }
        let leaf_nodes = nodes.finish();
        // Per key, its new size; its bagged peaks go into `bags`.
        let mut lists: Vec<(Hash, u64)> = Vec::new();
        let mut bags = HashBatch::new(mmr::ROOT_DOMAIN);
        let mut i = 0;
        while i < order.len() {
            let key = created[order[i]].0;
            let mut sizes = self.sizes(&key)?;
            let count = sizes.last().map_or(0, |(_, n)| *n);
            let dead = sizes
                .partition_point(|(v, _)| *v <= oldest)
                .saturating_sub(1);
            sizes.drain(..dead);
            let mut list = Mmr::open(
                ListStore {
                    key,
                    store: ListAccess::Write(&mut self.store),
                },
                count,
            )?;
            let first = i;
            while i < order.len() && created[order[i]].0 == key {
                list.append_leaf_node(leaf_nodes[i])?;
                i += 1;
            }
            let new_count = list.size();
            bags.push_with(|buf| mmr::write_bag(new_count, list.peaks(), buf));
            drop(list);
            for (index, entry) in (count..).zip(&entries[first..i]) {
                self.store
                    .put(IndexKey::Entry(key, index), IndexValue::Entry(*entry))?;
            }
            sizes.push((version, new_count));
            self.store
                .put(IndexKey::Sizes(key), IndexValue::Sizes(sizes))?;
            lists.push((key, new_count));
        }
        let mut heads = HashBatch::new(HEAD_DOMAIN);
        for ((_, count), root) in lists.iter().zip(bags.finish()) {
            heads.push_with(|buf| write_head(*count, &root, buf));
        }
        let heads: Vec<(Hash, Option<Hash>)> = lists
            .iter()
            .zip(heads.finish())
            .map(|((key, _), head)| (*key, Some(head)))
            .collect();
        self.store
            .put(IndexKey::LastHeight, IndexValue::Height(height))?;
        let (v, root) = self.tree.apply_batch(&heads)?;
        debug_assert_eq!(v, version);
        self.last_height = Some(height);
        Ok((v, root))
    }

    /// The proof for `key` and heights `[from, to]` as of `version`.
    pub fn prove(
        &self,
        key: &Hash,
        from: u64,
        to: u64,
        version: u64,
    ) -> Result<CompletenessProof, KeyIndexError> {
        if from > to {
            return Err(KeyIndexError::EmptyRange { from, to });
        }
        let (_, head) = self.tree.get_with_proof(key, version)?;
        let count = self.size_at(key, version)?;
        if count == 0 {
            return Ok(CompletenessProof {
                count: 0,
                list_root: mmr::empty_root(),
                head,
                first: 0,
                entries: Vec::new(),
                range: None,
            });
        }
        // First index with height >= from, and first with height > to.
        let lower = self.partition_point(key, count, |h| h < from)?;
        let upper = self.partition_point(key, count, |h| h <= to)?;
        // Widen by one entry each side (when there is one) to bound the run.
        let first = lower.saturating_sub(1);
        let last = upper.min(count - 1);
        if last - first + 1 > MAX_PROOF_ENTRIES as u64 {
            return Err(KeyIndexError::TooManyEntries(last - first + 1));
        }
        let entries = (first..=last)
            .map(|i| self.entry(key, i))
            .collect::<Result<Vec<_>, _>>()?;
        let list = Mmr::open(
            ListStore {
                key: *key,
                store: ListAccess::Read(&self.store),
            },
            self.sizes(key)?.last().map_or(0, |(_, n)| *n),
        )?;
        let list_root = list.root_at(count)?;
        let range = list.range_proof_at(first, last, count)?;
        Ok(CompletenessProof {
            count,
            list_root,
            head,
            first,
            entries,
            range: Some(range),
        })
    }

    /// Smallest index in `[0, count)` whose entry's height fails `below`
    /// (heights are sorted, so `below` holds on a prefix).
    fn partition_point(
        &self,
        key: &Hash,
        count: u64,
        below: impl Fn(u64) -> bool,
    ) -> Result<u64, KeyIndexError> {
        let (mut lo, mut hi) = (0u64, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if below(self.entry(key, mid)?.height) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}
