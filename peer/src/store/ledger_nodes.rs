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
use std::collections::BTreeMap;

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

/// A write-back commits about this many buffered writes per transaction
/// (see [`LedgerNodes::commit_in_chunks`]): each write reads a page of its
/// own, which the kernel maps with up to 15 neighbours ("fault around",
/// 64 KiB), and copies it, so a chunk maps up to ~36 MiB of the file
/// (measured with 2,048 writes: ~130 MB).
const WRITE_BACK_CHUNK_WRITES: usize = 512;

/// Buffered writes younger than this many heights stay in memory at a
/// write-back: four times the default `state_versions_kept`, so a page staled
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

    /// [`LedgerNodes::set_height`] as a closure the driver calls before
    /// each height: each height's writes then form their own epoch, so a
    /// write-back splits into transactions of whole heights even after a
    /// pause let hundreds of heights pile up between two bursts (one
    /// epoch of ~1,500 heights was measured mapping 150–180 MB of the
    /// state cache in one transaction).
    pub fn height_tagger(&self) -> Box<dyn FnMut(u64) + Send> {
        let (o, i, l, s) = (
            self.output_tree.clone(),
            self.index_tree.clone(),
            self.index_lists.clone(),
            self.spent.clone(),
        );
        Box::new(move |h| {
            o.pending().set_epoch(h);
            i.pending().set_epoch(h);
            l.pending().set_epoch(h);
            s.pending().set_epoch(h);
        })
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
            self.commit_in_chunks(u64::MAX)?;
        } else {
            self.commit_in_chunks(height.saturating_sub(YOUNG_HEIGHTS))?;
            if self.state_pending_bytes() > self.cache_bytes / 2 {
                self.commit_in_chunks(u64::MAX)?;
            }
        }
        Ok(())
    }

    /// Commit the buffered writes made before epoch `before`, oldest first,
    /// in transactions of about [`WRITE_BACK_CHUNK_WRITES`] writes (whole
    /// epochs), releasing the map's pages after each. A commit writes
    /// through the map, and with keys spread over the whole file each write
    /// touches a page of its own: one 32 MB write-back was measured mapping
    /// 150–280 MB at once, and chunks of 4 MB of (small) values still
    /// ~130 MB each. The state cache is rebuilt at every start, so
    /// splitting a write-back costs no crash safety.
    fn commit_in_chunks(&self, before: u64) -> Result<(), StoreError> {
        let pending = self.state_pending();
        let mut by_epoch: BTreeMap<u64, usize> = BTreeMap::new();
        for p in pending {
            p.count_by_epoch(&mut by_epoch);
        }
        let mut gathered = 0;
        let mut ends = Vec::new();
        for (&epoch, writes) in by_epoch.range(..before) {
            gathered += writes;
            if gathered >= WRITE_BACK_CHUNK_WRITES {
                ends.push(epoch.saturating_add(1));
                gathered = 0;
            }
        }
        if gathered > 0 {
            ends.push(before);
        }
        for end in ends {
            self.cache.commit_nodes_before(&pending, end)?;
            // Those pages are now the kernel's to write back.
            self.cache.release_mapped_pages();
        }
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

    /// What one buffered write of each of [`Self::state_pending`] takes.
    const WRITE_BYTES: [usize; 4] = [
        TREE_PAGE_BYTES,
        TREE_PAGE_BYTES,
        LIST_ENTRY_BYTES,
        SPENT_OUTPUT_BYTES,
    ];

    /// Estimated memory of the buffered state writes.
    pub fn state_pending_bytes(&self) -> usize {
        self.state_pending()
            .iter()
            .zip(Self::WRITE_BYTES)
            .map(|(p, w)| p.pending_count() * w)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use proofs::key_index::Entry;
    use proofs::NodeStore;

    const CHAIN: Hash = Hash([9; 32]);

    fn entry(i: u64) -> (IndexKey, IndexValue) {
        let key = Hash::of(
            proofs::Domain::new("pos/test/ledger-nodes/v1"),
            &i.to_le_bytes(),
        );
        (
            IndexKey::Entry(key, i),
            IndexValue::Entry(Entry {
                height: i,
                output: key,
            }),
        )
    }

    #[test]
    fn a_write_back_commits_old_writes_in_chunks_and_keeps_young_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db"), &StoreConfig::new(CHAIN, 1 << 20)).unwrap();
        let cache = Store::open(
            dir.path().join("state-cache"),
            &StoreConfig::new(CHAIN, 64 << 20).volatile(),
        )
        .unwrap();
        // A cache of 8 MB: the writes below (10.2 MB estimated) outgrow
        // it, while the young ones (3.3 MB) take less than half of it.
        let nodes = LedgerNodes::open(&store, cache, 8 << 20).unwrap();
        let mut stores = nodes.fresh_state().unwrap();
        let per_height = 200;
        let heights = 400;
        for h in 1..=heights {
            nodes.set_height(h);
            for i in 0..per_height {
                let (k, v) = entry(h * per_height + i);
                stores.index_lists.put(k, v).unwrap();
            }
        }
        let txns = |s: &Store| s.inner.handle.env.info().last_txn_id;
        let start = txns(nodes.cache());
        nodes.write_back(false, heights).unwrap();
        // Heights 1..=271 (those more than 128 behind 400) of 200 writes:
        // transactions of 3 heights (the first count ≥ 512), 90 of them,
        // then one of the last height.
        assert_eq!(txns(nodes.cache()) - start, 91, "transactions");
        let young = (YOUNG_HEIGHTS + 1) * per_height;
        assert_eq!(nodes.index_lists.pending().pending_len() as u64, young);
        // Everything reads back, committed or buffered.
        for h in 1..=heights {
            for i in 0..per_height {
                let (k, v) = entry(h * per_height + i);
                assert_eq!(stores.index_lists.get(&k).unwrap(), Some(v));
            }
        }
        nodes.write_back(true, heights).unwrap();
        assert_eq!(nodes.state_pending_bytes(), 0);
        for h in (1..=heights).step_by(37) {
            let (k, v) = entry(h * per_height);
            assert_eq!(stores.index_lists.get(&k).unwrap(), Some(v));
        }
    }
}
