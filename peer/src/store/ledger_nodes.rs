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
//!   contents never need to agree with a crashed run. Their writes reach
//!   the disk with the heights that made them, in one transaction.

use super::{PendingNodes, SharedNodes, Store, StoreError};
use dag::ledger::{LedgerStores, OutputState};
use proofs::key_index::{IndexKey, IndexValue};
use proofs::smt::{StoreKey, StoreValue};
use proofs::Hash;

/// Names of the databases rebuilt at every start.
const STATE_DBS: [&str; 4] = ["output-tree", "index-tree", "index-lists", "spent"];

/// Open handles on the ledger's node databases (one set per store).
pub struct LedgerNodes {
    pub history: SharedNodes<u64, Hash>,
    output_tree: SharedNodes<StoreKey, StoreValue>,
    index_tree: SharedNodes<StoreKey, StoreValue>,
    index_lists: SharedNodes<IndexKey, IndexValue>,
    spent: SharedNodes<Hash, OutputState>,
}

impl LedgerNodes {
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        let [output_tree, index_tree, index_lists, spent] = STATE_DBS;
        Ok(LedgerNodes {
            history: SharedNodes::new(store.nodes("history")?),
            output_tree: SharedNodes::new(store.nodes(output_tree)?),
            index_tree: SharedNodes::new(store.nodes(index_tree)?),
            index_lists: SharedNodes::new(store.nodes(index_lists)?),
            spent: SharedNodes::new(store.nodes(spent)?),
        })
    }

    /// Empty the state databases (committed and pending writes alike) and
    /// hand them out as the stores a ledger moves into
    /// ([`dag::ledger::Ledger::use_stores`]). A ledger still using them
    /// must be dropped: its view is gone.
    pub fn fresh_state(&self, store: &Store) -> Result<LedgerStores, StoreError> {
        for p in self.state_pending() {
            p.clear_pending();
        }
        store.clear_nodes(&STATE_DBS)?;
        Ok(LedgerStores {
            output_tree: Box::new(self.output_tree.clone()),
            index_tree: Box::new(self.index_tree.clone()),
            index_lists: Box::new(self.index_lists.clone()),
            spent: Box::new(self.spent.clone()),
        })
    }

    fn state_pending(&self) -> [&dyn PendingNodes; 4] {
        [
            self.output_tree.pending(),
            self.index_tree.pending(),
            self.index_lists.pending(),
            self.spent.pending(),
        ]
    }

    /// Every database's pending writes, for one commit.
    pub fn pending(&self) -> [&dyn PendingNodes; 5] {
        let [a, b, c, d] = self.state_pending();
        [self.history.pending(), a, b, c, d]
    }

    /// Writes waiting for a commit, over all databases.
    pub fn pending_len(&self) -> usize {
        self.history.pending().pending_len()
            + self.output_tree.pending().pending_len()
            + self.index_tree.pending().pending_len()
            + self.index_lists.pending().pending_len()
            + self.spent.pending().pending_len()
    }
}
