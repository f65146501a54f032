//! The ledger's node databases: where a peer's ledger keeps what grows with
//! the chain.
//!
//! - `history`: the history MMR (append-only, position-keyed), kept across
//!   restarts and checked against the snapshot's peaks;
//! - `output-tree`, `index-tree`, `index-lists`, `spent`: the output set's
//!   tree, the key index's tree and lists, and every spent output. These
//!   are the state *after the restored snapshot and the heights replayed
//!   since*: at every start (and when a snapshot from another peer is
//!   installed) they are emptied and refilled from the snapshot, so their
//!   contents never need to agree with a crashed run. They live in a
//!   second, volatile store (no syncs, written through its map; see
//!   [`super::StoreConfig::volatile`]) and their writes wait in memory up
//!   to a bound (a write-back cache, as Bitcoin Core's `dbcache`). A
//!   state small enough to fit that bound whole stays in memory instead,
//!   where updating it costs about half as much; it moves into the cache
//!   the first time it outgrows the bound.

use super::{PendingNodes, SharedNodes, Store, StoreError};
use dag::ledger::{LedgerStores, OutputState};
use proofs::key_index::{IndexKey, IndexValue};
use proofs::smt::{StoreKey, StoreValue};
use proofs::Hash;

/// What one buffered write of each state database takes in memory, about
/// (measured: tree pages average ~850 encoded bytes, held decoded with
/// their map entry; a key index entry ~65, a spent output ~200): how a
/// cache size in bytes becomes a bound on buffered writes.
const TREE_PAGE_BYTES: usize = 1024;
const LIST_ENTRY_BYTES: usize = 128;
const SPENT_OUTPUT_BYTES: usize = 320;

/// What a ledger holding its whole state in memory takes per output ever
/// created, about: the output itself (spent or not), its leaves and nodes
/// in the output set's tree and the key index, its list entry (measured:
/// `peer bench --peers 4` peaks at 174 MB per peer with 80,000 outputs and
/// 252 MB with 160,000).
const IN_MEMORY_BYTES_PER_OUTPUT: usize = 1000;

/// Buffered writes younger than this many heights stay in memory at a
/// write-back: twice the default `state_versions_kept`, so a page staled
/// and pruned within it is dropped rather than written and deleted.
pub const YOUNG_HEIGHTS: u64 = 128;

/// Names of the databases rebuilt at every start.
const STATE_DBS: [&str; 4] = ["output-tree", "index-tree", "index-lists", "spent"];

/// Open handles on the ledger's node databases.
pub struct LedgerNodes {
    /// The volatile store of the state databases.
    cache: Store,
    /// Estimated bytes of buffered state writes above which they are
    /// written to `cache`.
    cache_bytes: usize,
    pub history: SharedNodes<u64, Hash>,
    output_tree: SharedNodes<StoreKey, StoreValue>,
    index_tree: SharedNodes<StoreKey, StoreValue>,
    index_lists: SharedNodes<IndexKey, IndexValue>,
    spent: SharedNodes<Hash, OutputState>,
}

impl LedgerNodes {
    /// The history in `store`, the state databases in the volatile
    /// `cache`, whose writes wait in memory up to about `cache_bytes`.
    pub fn open(store: &Store, cache: Store, cache_bytes: usize) -> Result<Self, StoreError> {
        let [output_tree, index_tree, index_lists, spent] = STATE_DBS;
        Ok(LedgerNodes {
            history: SharedNodes::new(store.nodes("history")?),
            // A versioned tree puts each page, root and stale list once.
            output_tree: SharedNodes::new(cache.nodes(output_tree)?.put_once()),
            index_tree: SharedNodes::new(cache.nodes(index_tree)?.put_once()),
            index_lists: SharedNodes::new(cache.nodes(index_lists)?),
            spent: SharedNodes::new(cache.nodes(spent)?),
            cache,
            cache_bytes,
        })
    }

    /// The volatile store.
    pub fn cache(&self) -> &Store {
        &self.cache
    }

    /// Empty the state databases (committed and pending writes alike) and
    /// hand them out as the stores a ledger moves into
    /// ([`dag::ledger::Ledger::use_stores`]). A ledger still using them
    /// must be dropped: its view is gone.
    pub fn fresh_state(&self) -> Result<LedgerStores, StoreError> {
        self.clear_state()?;
        Ok(LedgerStores {
            output_tree: Box::new(self.output_tree.clone()),
            index_tree: Box::new(self.index_tree.clone()),
            index_lists: Box::new(self.index_lists.clone()),
            spent: Box::new(self.spent.clone()),
        })
    }

    /// Empty the state databases, committed and pending writes alike.
    pub fn clear_state(&self) -> Result<(), StoreError> {
        for p in self.state_pending() {
            p.clear_pending(u64::MAX);
        }
        self.cache.clear_nodes(&STATE_DBS)
    }

    fn state_pending(&self) -> [&dyn PendingNodes; 4] {
        [
            self.output_tree.pending(),
            self.index_tree.pending(),
            self.index_lists.pending(),
            self.spent.pending(),
        ]
    }

    /// The history's pending writes, committed with the heights.
    pub fn history_pending(&self) -> [&dyn PendingNodes; 1] {
        [self.history.pending()]
    }

    /// Tag the state databases' writes from now on with `height`.
    pub fn set_height(&self, height: u64) {
        self.output_tree.pending().set_epoch(height);
        self.index_tree.pending().set_epoch(height);
        self.index_lists.pending().set_epoch(height);
        self.spent.pending().set_epoch(height);
    }

    /// Write the state databases' buffered writes to the cache: all of
    /// them if `all`; else, once they take more than the cache size, those
    /// made more than [`YOUNG_HEIGHTS`] heights before `height` (and all of
    /// them if the young ones alone exceed half the cache). A node written
    /// and pruned again while buffered costs the disk nothing: the trees
    /// rewrite their upper pages at every height and prune the old copies
    /// `state_versions_kept` heights later, so those mostly never reach
    /// it, while what lasts is written once.
    pub fn write_back(&self, all: bool, height: u64) -> Result<(), StoreError> {
        let n = self.state_pending_bytes();
        if n == 0 || (!all && n <= self.cache_bytes) {
            return Ok(());
        }
        if all {
            self.cache.commit_nodes(&self.state_pending())?;
        } else {
            let before = height.saturating_sub(YOUNG_HEIGHTS);
            self.cache
                .commit_nodes_before(&self.state_pending(), before)?;
            if self.state_pending_bytes() > self.cache_bytes / 2 {
                self.cache.commit_nodes(&self.state_pending())?;
            }
        }
        // The commit wrote through the map: let go of those pages now
        // (they are the kernel's to write back), not at the next periodic
        // release.
        self.cache.release_mapped_pages();
        Ok(())
    }

    /// Estimated memory of a ledger state with `outputs` outputs ever
    /// created, held all in memory.
    pub fn in_memory_bytes(outputs: usize) -> usize {
        outputs.saturating_mul(IN_MEMORY_BYTES_PER_OUTPUT)
    }

    /// Whether a ledger state of `outputs` outputs held in memory has
    /// outgrown the cache size, and must move into the state cache.
    pub fn outgrown(&self, outputs: usize) -> bool {
        Self::in_memory_bytes(outputs) > self.cache_bytes
    }

    /// Estimated memory of the buffered state writes.
    pub fn state_pending_bytes(&self) -> usize {
        (self.output_tree.pending().pending_len() + self.index_tree.pending().pending_len())
            * TREE_PAGE_BYTES
            + self.index_lists.pending().pending_len() * LIST_ENTRY_BYTES
            + self.spent.pending().pending_len() * SPENT_OUTPUT_BYTES
    }
}
