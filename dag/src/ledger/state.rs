//! The ledger state: outputs, assets, items and peers, with the authenticated
//! structures that commit them.
//!
//! Plain maps answer the rules quickly; the trees commit the same facts:
//! - the output set (sparse Merkle tree): output id → [`OutputState`] hash;
//! - the registry (sparse Merkle tree): assets, items and peers, each under
//!   its own domain-separated key;
//! - the key index: per owner key, the outputs created for it by height;
//! - the history (Merkle mountain range): every ordered event and every
//!   transaction's outcome, append-only.
//!
//! Tree version `h + 1` is the state after height `h` (version 1 is
//! genesis), so "as of height h" is one lookup.

use crate::committee::Round;
use crate::id_map::IdMap;
use crate::identity::PeerKey;
use crate::ledger::asset::{AssetId, AssetState};
use crate::ledger::checkpoint::StateRoots;
use crate::ledger::output::{OutputId, OutputState};
use crate::ledger::output_set::{OutputSet, SpentStore};
use crate::ledger::peers::{name_key, PeerRecord};
use proofs::key_index::{AnyIndexStore, IndexKey, IndexValue, KeyIndex, KeyIndexError};
use proofs::smt::{AnyTree, MemTree, StoreKey, StoreValue, VersionedTree};
use proofs::{
    Domain, Executor, Hash, Hasher, MemStore, Mmr, MmrError, NodeStore, SmtError, SparseMerkleTree,
    StoreError,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Registry key of an asset.
pub const REG_ASSET_DOMAIN: Domain = Domain::new("pos/ledger/reg-asset/v1");
/// Registry key of a unique item.
pub const REG_ITEM_DOMAIN: Domain = Domain::new("pos/ledger/reg-item/v1");
/// Registry value of an asset's state.
pub const ASSET_STATE_DOMAIN: Domain = Domain::new("pos/ledger/asset-state/v1");
/// Registry value of an item's state.
pub const ITEM_STATE_DOMAIN: Domain = Domain::new("pos/ledger/item-state/v1");
/// Registry value of a peer record.
pub const PEER_RECORD_DOMAIN: Domain = Domain::new("pos/ledger/peer-record/v1");

/// Chain parameters, fixed at genesis. Fields missing from a genesis file
/// take their defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// A peer hosting less than this share of the native stake, in parts
    /// per million, is left out of the committee.
    pub min_share_ppm: u32,
    /// The smallest fee a transaction pays, in native base units.
    pub min_fee: u128,
    /// The longest encoded transaction accepted.
    pub max_tx_bytes: u32,
    /// How many past heights stay provable ("as of root R").
    pub state_versions_kept: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_share_ppm: 10_000,
            min_fee: 0,
            max_tx_bytes: 64 * 1024,
            state_versions_kept: 32,
        }
    }
}

/// What the registry says about a unique item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemState {
    /// In an output; minted at this height.
    Live { minted_at: u64 },
    /// Burned at this height; the id is never minted again.
    Burned { minted_at: u64, burned_at: u64 },
}

pub fn asset_key(id: &AssetId) -> Hash {
    Hash::of(REG_ASSET_DOMAIN, &id.0 .0)
}

pub fn item_key(asset: &AssetId, item: &Hash) -> Hash {
    let mut h = Hasher::new(REG_ITEM_DOMAIN);
    h.update(&asset.0 .0).update(&item.0);
    h.finalize()
}

pub fn asset_value(s: &AssetState) -> Hash {
    Hash::of(ASSET_STATE_DOMAIN, &proofs::encode(s))
}

pub fn item_value(s: &ItemState) -> Hash {
    Hash::of(ITEM_STATE_DOMAIN, &proofs::encode(s))
}

pub fn peer_value(p: &PeerRecord) -> Hash {
    Hash::of(PEER_RECORD_DOMAIN, &proofs::encode(p))
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("height {got} applied but {expected} is next")]
    WrongHeight { got: u64, expected: u64 },
    #[error(transparent)]
    Tree(#[from] SmtError),
    #[error(transparent)]
    Index(#[from] KeyIndexError),
    #[error(transparent)]
    History(#[from] MmrError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the executor returned without running every job")]
    Executor,
    #[error("writing the snapshot: {0}")]
    Sink(String),
}

/// A store of tree pages (the peer's is LMDB).
pub type TreeStore = Box<dyn NodeStore<StoreKey, StoreValue> + Send + Sync>;
/// The output set's and the key index's tree: in memory, or paged into a
/// [`TreeStore`] once the owner calls [`Ledger::use_stores`].
pub type LedgerTree = AnyTree<TreeStore>;
/// A store of the key index's lists.
pub type ListStore = Box<dyn NodeStore<IndexKey, IndexValue> + Send + Sync>;
pub type IndexStore = AnyIndexStore<ListStore>;

/// Stores for the structures that grow with the chain: given to
/// [`Ledger::use_stores`], they take the output set's tree, the key index
/// (tree and lists) and the spent outputs out of memory. Each must be
/// empty.
pub struct LedgerStores {
    pub output_tree: TreeStore,
    pub index_tree: TreeStore,
    pub index_lists: ListStore,
    pub spent: SpentStore,
}

/// Where the history's nodes live: memory unless the owner moves them
/// ([`Ledger::set_history_store`]; the peer keeps them in LMDB, since the
/// history only grows).
pub type HistoryStore = Box<dyn NodeStore<u64, Hash> + Send + Sync>;

/// The whole ledger state of one chain.
pub struct Ledger {
    pub(crate) chain: Hash,
    pub(crate) params: Params,
    /// The last applied height (0 = genesis) and its leader round.
    pub(crate) height: u64,
    pub(crate) round: Round,
    pub(crate) outputs: OutputSet,
    pub(crate) assets: IdMap<AssetId, AssetState>,
    pub(crate) items: HashMap<(AssetId, Hash), ItemState>,
    pub(crate) peers: BTreeMap<PeerKey, PeerRecord>,
    pub(crate) names: HashMap<String, PeerKey>,
    /// Unspent native base units hosted with each peer key.
    pub(crate) hosted: BTreeMap<PeerKey, u128>,
    pub(crate) output_tree: LedgerTree,
    pub(crate) registry: MemTree,
    pub(crate) key_index: KeyIndex<LedgerTree, IndexStore>,
    pub(crate) history: Mmr<HistoryStore>,
    pub(crate) roots: StateRoots,
    /// Runs the trees' updates of a height as parallel jobs, if set, and
    /// how many jobs the output set's update is split into.
    pub(crate) executor: Option<(Arc<dyn Executor>, usize)>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("chain", &self.chain)
            .field("height", &self.height)
            .field("outputs", &self.outputs.len())
            .field("roots", &self.roots)
            .finish()
    }
}

impl Ledger {
    /// An empty state for `chain` (genesis fills it, see
    /// [`crate::ledger::genesis`]).
    pub(crate) fn empty(chain: Hash, params: Params) -> Result<Self, LedgerError> {
        let mut output_tree = LedgerTree::Memory(MemTree::new());
        output_tree.set_retention(Some(params.state_versions_kept));
        let mut registry = MemTree::new();
        registry.set_retention(Some(params.state_versions_kept));
        let mut key_index =
            KeyIndex::over(LedgerTree::Memory(MemTree::new()), IndexStore::default())?;
        key_index.set_retention(Some(params.state_versions_kept));
        Ok(Ledger {
            chain,
            params,
            height: 0,
            round: 0,
            outputs: OutputSet::in_memory(IdMap::default()),
            assets: IdMap::default(),
            items: HashMap::new(),
            peers: BTreeMap::new(),
            names: HashMap::new(),
            hosted: BTreeMap::new(),
            output_tree,
            registry,
            key_index,
            history: Mmr::new(Box::new(MemStore::default())),
            roots: StateRoots::default(),
            executor: None,
        })
    }

    /// Let each height's tree updates run as parallel jobs on `exec` (the
    /// output set, the largest, also split into `jobs` subtree jobs). The
    /// ledger starts no threads; results are identical either way.
    pub fn set_executor(&mut self, exec: Arc<dyn Executor>, jobs: usize) {
        self.output_tree.set_parallelism(jobs, exec.clone());
        self.executor = Some((exec, jobs));
    }

    pub fn chain(&self) -> Hash {
        self.chain
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The last applied height (0 = genesis).
    pub fn height(&self) -> u64 {
        self.height
    }

    /// The leader round of the last applied height.
    pub fn round(&self) -> Round {
        self.round
    }

    pub fn roots(&self) -> &StateRoots {
        &self.roots
    }

    /// The state of output `id` (spent or not), if it was ever created.
    pub fn output(&self, id: &OutputId) -> Result<Option<OutputState>, LedgerError> {
        Ok(self.outputs.get(id)?.map(|st| st.into_owned()))
    }

    /// Every output ever created, spent or not, by increasing id.
    pub fn outputs(&self) -> Result<Vec<(OutputId, OutputState)>, LedgerError> {
        let mut all: Vec<(OutputId, OutputState)> = if self.outputs.has_store() {
            // Spent outputs are in the store: the output set's tree lists
            // every id, in order.
            self.output_ids()?
                .into_iter()
                .map(|id| Ok((id, self.stored_output(&id)?.into_owned())))
                .collect::<Result<_, LedgerError>>()?
        } else {
            self.outputs
                .iter_memory()
                .map(|(id, st)| (*id, st.clone()))
                .collect()
        };
        all.sort_unstable_by_key(|(id, _)| *id);
        Ok(all)
    }

    /// Every output id, in increasing order, from the output set's tree.
    pub(crate) fn output_ids(&self) -> Result<Vec<OutputId>, LedgerError> {
        let mut ids = Vec::with_capacity(self.outputs.len());
        self.output_tree
            .each_leaf(self.output_tree.latest_version(), &mut |id, _| {
                ids.push(*id)
            })?;
        Ok(ids)
    }

    /// The state of an output the output set's tree lists: missing is a
    /// damaged store.
    pub(crate) fn stored_output(
        &self,
        id: &OutputId,
    ) -> Result<std::borrow::Cow<'_, OutputState>, LedgerError> {
        self.outputs
            .get(id)?
            .ok_or_else(|| LedgerError::Store(StoreError::Missing(format!("spent output {id}"))))
    }

    /// Outputs ever created, spent or not.
    pub fn output_count(&self) -> usize {
        self.outputs.len()
    }

    /// Whether [`Ledger::use_stores`] moved the growing state into stores.
    pub fn uses_stores(&self) -> bool {
        self.output_tree.is_paged() || self.outputs.has_store()
    }

    /// Outputs whose state is held in memory (all of them unless
    /// [`Ledger::use_stores`] moved the spent ones out).
    pub fn outputs_in_memory(&self) -> usize {
        self.outputs.in_memory_len()
    }

    pub fn asset(&self, id: &AssetId) -> Option<&AssetState> {
        self.assets.get(id)
    }

    pub fn item(&self, asset: &AssetId, item: &Hash) -> Option<ItemState> {
        self.items.get(&(*asset, *item)).copied()
    }

    pub fn peer(&self, key: &PeerKey) -> Option<&PeerRecord> {
        self.peers.get(key)
    }

    pub fn peer_by_name(&self, name: &str) -> Option<&PeerRecord> {
        self.names.get(name).and_then(|k| self.peers.get(k))
    }

    pub fn peers(&self) -> impl Iterator<Item = &PeerRecord> {
        self.peers.values()
    }

    /// Unspent native base units hosted with `peer`.
    pub fn hosted(&self, peer: &PeerKey) -> u128 {
        self.hosted.get(peer).copied().unwrap_or(0)
    }

    pub fn output_tree(&self) -> &LedgerTree {
        &self.output_tree
    }

    pub fn registry(&self) -> &MemTree {
        &self.registry
    }

    pub fn key_index(&self) -> &KeyIndex<LedgerTree, IndexStore> {
        &self.key_index
    }

    pub fn history(&self) -> &Mmr<HistoryStore> {
        &self.history
    }

    /// Move the history into `store`. If `store` already holds this very
    /// history (a restart), only its peaks are read; otherwise every node
    /// the current store holds is copied (all of them for a history built
    /// here, the peaks for one restored from a snapshot). Returns whether
    /// it copied.
    pub fn set_history_store(&mut self, store: HistoryStore) -> Result<bool, LedgerError> {
        let (size, root) = (self.history.size(), self.history.root());
        let mut store = match Mmr::open_expecting(store, size, &root) {
            Ok(mmr) => {
                self.history = mmr;
                return Ok(false);
            }
            Err(store) => store,
        };
        for pos in 0..proofs::mmr::node_count(size) {
            if let Some(node) = self.history.store().get(&pos)? {
                store.put(pos, node)?;
            }
        }
        let mmr = Mmr::open_expecting(store, size, &root).map_err(|_| {
            LedgerError::Store(StoreError::Backend(
                "the history store does not return the history copied into it".into(),
            ))
        })?;
        self.history = mmr;
        Ok(true)
    }

    /// Move the structures that grow with the chain into `stores` (each
    /// empty): the output set's tree, the key index, and every spent
    /// output; from then on they live there and memory holds the unspent
    /// outputs and what is small. Roots and behaviour are unchanged; only
    /// the latest version stays provable (as after a restore). Calling it
    /// again is refused.
    pub fn use_stores(&mut self, stores: LedgerStores) -> Result<(), LedgerError> {
        if self.uses_stores() {
            return Err(LedgerError::Store(StoreError::Backend(
                "the ledger already uses stores".into(),
            )));
        }
        let keep = Some(self.params.state_versions_kept);
        let version = self.output_tree.latest_version();

        let leaves: Vec<(Hash, Option<Hash>)> = self
            .output_tree
            .leaves(version)?
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        let mut tree = LedgerTree::Paged(paged_at(stores.output_tree, version, &leaves)?);
        if tree.root(version)? != self.output_tree.root(version)? {
            return Err(moved_wrong("output set"));
        }
        tree.set_retention(keep);
        if let Some((exec, jobs)) = &self.executor {
            tree.set_parallelism(*jobs, exec.clone());
        }

        let index_version = self.key_index.latest_version();
        let lists_store = IndexStore::Stored(stores.index_lists);
        let mut index = if index_version == 0 {
            let tree = SparseMerkleTree::create(stores.index_tree)?;
            KeyIndex::over(LedgerTree::Paged(tree), lists_store)?
        } else {
            let lists = self.key_index.lists()?;
            let start = SparseMerkleTree::create_at(stores.index_tree, index_version - 1)?;
            KeyIndex::restore_over(
                LedgerTree::Paged(start),
                lists_store,
                index_version,
                self.key_index.last_height().unwrap_or(0),
                &lists,
            )?
        };
        if index.root(index_version)? != self.key_index.root(index_version)? {
            return Err(moved_wrong("key index"));
        }
        index.set_retention(keep);

        self.outputs.move_spent_to(stores.spent)?;
        self.output_tree = tree;
        self.key_index = index;
        Ok(())
    }

    /// The tree version holding the state after `height`.
    pub fn version_of(height: u64) -> u64 {
        height + 1
    }

    /// The registry key of peer `name`.
    pub fn peer_registry_key(name: &str) -> Hash {
        name_key(name)
    }
}

/// A paged tree in the empty `store` holding `leaves` as `version`, with no
/// other version (version 0 is the empty tree itself).
fn paged_at(
    store: TreeStore,
    version: u64,
    leaves: &[(Hash, Option<Hash>)],
) -> Result<SparseMerkleTree<TreeStore>, LedgerError> {
    if version == 0 {
        return Ok(SparseMerkleTree::create(store)?);
    }
    let mut tree = SparseMerkleTree::create_at(store, version - 1)?;
    tree.apply_batch(leaves)?;
    // The empty start version never was this state.
    tree.prune(1)?;
    Ok(tree)
}

fn moved_wrong(what: &str) -> LedgerError {
    LedgerError::Store(StoreError::Backend(format!(
        "the {what} moved into its store has another root"
    )))
}
