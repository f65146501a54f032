//! State snapshots: the whole ledger state after one height, so a peer that
//! joins late (or fell far behind) downloads it instead of replaying the
//! chain, and a peer restarts from its own copy.
//!
//! A [`LedgerSnapshot`] holds the contents, not the trees: every output with
//! its state (spent ones too), assets, items, peers, the key index lists and
//! the history's leaf nodes, each in one canonical order (increasing key, no
//! duplicates), with the height, round and the [`StateRoots`] they claim.
//! [`Ledger::from_snapshot`] checks the contents fit together, rebuilds the
//! maps, the derived maps (names, hosted stake) and every tree, and accepts
//! only if every rebuilt root equals the claimed one. A joining peer calls
//! [`Ledger::from_checkpoint`] with its genesis and the checkpoint whose
//! certificate it checked, so the snapshot's sender cannot slip anything
//! in: the certified roots commit the contents, and the genesis and the
//! checkpoint fix the chain id, parameters, height and round.
//!
//! The restored trees' latest version is [`Ledger::version_of`]`(height)`,
//! so everything "as of height h" is provable at once, and later heights
//! give the same roots as on a ledger that never stopped. Tree versions
//! before it (the output set, registry and key index at earlier heights)
//! are not available after a restore; the whole history is, since every
//! leaf is kept.

use crate::committee::Round;
use crate::id_map::{IdMap, IdSet};
use crate::identity::PeerKey;
use crate::ledger::asset::{AssetClass, AssetId, AssetState};
use crate::ledger::checkpoint::{Checkpoint, StateRoots};
use crate::ledger::genesis::Genesis;
use crate::ledger::output::{OutputId, OutputState, Value};
use crate::ledger::peers::{name_key, PeerRecord, PeerStatus};
use crate::ledger::state::{
    asset_key, asset_value, item_key, item_value, peer_value, IndexStore, ItemState, Ledger,
    LedgerError, Params,
};
use proofs::key_index::{Entry, KeyIndex};
use proofs::smt::SmtMemStore;
use proofs::{CodecError, Hash, MemStore, Mmr, MmrError, SparseMerkleTree};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The snapshot layout this code writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// The ledger state after `height`, in canonical order (see the module
/// docs). Encoded with [`LedgerSnapshot::encode`], decoded with
/// [`LedgerSnapshot::decode`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSnapshot {
    /// [`SNAPSHOT_FORMAT`].
    pub format: u32,
    pub chain: Hash,
    pub params: Params,
    pub height: u64,
    pub round: Round,
    pub roots: StateRoots,
    /// Every output ever created, spent or not, by increasing id.
    pub outputs: Vec<(OutputId, OutputState)>,
    /// By increasing id.
    pub assets: Vec<(AssetId, AssetState)>,
    /// Every item ever minted, live or burned, by increasing (asset, item).
    pub items: Vec<(AssetId, Hash, ItemState)>,
    /// By increasing key, retired ones too (their names stay taken).
    pub peers: Vec<PeerRecord>,
    /// Per index key (increasing), its whole list in list order.
    pub key_index: Vec<(Hash, Vec<Entry>)>,
    /// The history's leaf nodes ([`proofs::mmr::leaf_hash`] of each leaf),
    /// all of them, in order: the history store keeps nodes, not leaves,
    /// and the nodes rebuild the same MMR.
    pub history: Vec<Hash>,
}

/// Why a snapshot was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot encoding: {0}")]
    Decode(#[from] CodecError),
    #[error("snapshot format {0}; this build reads format {SNAPSHOT_FORMAT}")]
    Format(u32),
    #[error("height {0} leaves no next height")]
    HeightTooLarge(u64),
    #[error("{what} are not in increasing order")]
    Unsorted { what: &'static str },
    #[error("{what}: an entry appears twice")]
    Duplicate { what: &'static str },
    #[error("inconsistent snapshot: {0}")]
    Inconsistent(#[from] Inconsistency),
    #[error("the rebuilt {which} differs from the snapshot's")]
    RootMismatch { which: &'static str },
    #[error("the snapshot's {which} differs from the certified checkpoint's")]
    NotCertified { which: &'static str },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Contents that no sequence of heights can have produced.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Inconsistency {
    #[error("output {0:?} is created or spent after the snapshot height, or spent before it was created")]
    OutputHeight(OutputId),
    #[error("output {0:?} holds an unknown asset or a value of the wrong class")]
    OutputAsset(OutputId),
    #[error(
        "output {0:?}: a native output's host is not a listed peer, or another output has a host"
    )]
    OutputHost(OutputId),
    #[error(
        "unspent output {0:?} holds an item that is not live, or that another unspent output holds"
    )]
    OutputItem(OutputId),
    #[error("asset {0:?}: the supply is not what its unspent outputs hold")]
    Supply(AssetId),
    #[error("item {1:?} of asset {0:?}: of an asset that is not unique, or live but in no unspent output")]
    Item(AssetId, Hash),
    #[error("{0} dated after the snapshot height")]
    AfterHeight(&'static str),
    #[error("peer name {0:?} is taken twice")]
    PeerName(String),
    #[error("key index list of {0:?} is empty or its heights decrease")]
    IndexList(Hash),
    #[error(
        "key index entry of output {0:?} names no output of that owner and height, or repeats"
    )]
    IndexEntry(OutputId),
    #[error("output {0:?} is not in the key index")]
    IndexMissing(OutputId),
    #[error("the stake hosted with a peer overflows")]
    HostedOverflow,
}

impl LedgerSnapshot {
    pub fn encode(&self) -> Vec<u8> {
        proofs::encode(self)
    }

    /// Decode untrusted bytes: at most `max_len` of them, canonical only.
    /// The contents are checked by [`Ledger::from_snapshot`].
    pub fn decode(bytes: &[u8], max_len: usize) -> Result<Self, SnapshotError> {
        Ok(proofs::decode(bytes, max_len)?)
    }
}

/// `Unsorted` or `Duplicate` unless `keys` strictly increase.
fn check_order<K: Ord>(
    what: &'static str,
    keys: impl Iterator<Item = K>,
) -> Result<(), SnapshotError> {
    let mut previous: Option<K> = None;
    for key in keys {
        if let Some(p) = &previous {
            match p.cmp(&key) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Err(SnapshotError::Duplicate { what }),
                std::cmp::Ordering::Greater => return Err(SnapshotError::Unsorted { what }),
            }
        }
        previous = Some(key);
    }
    Ok(())
}

/// The first root two sets of roots disagree on.
fn first_difference(a: &StateRoots, b: &StateRoots) -> Option<&'static str> {
    [
        ("history_leaves", a.history_leaves == b.history_leaves),
        ("history", a.history == b.history),
        ("outputs", a.outputs == b.outputs),
        ("keys", a.keys == b.keys),
        ("registry", a.registry == b.registry),
    ]
    .into_iter()
    .find(|(_, same)| !same)
    .map(|(which, _)| which)
}

/// A sparse Merkle tree holding exactly `leaves` (sorted, unique) as
/// `version`, with no older version.
fn tree_at(
    version: u64,
    leaves: &[(Hash, Option<Hash>)],
) -> Result<SparseMerkleTree<SmtMemStore>, LedgerError> {
    // version ≥ 1: the caller checked the height leaves room for it.
    let mut tree = SparseMerkleTree::create_at(SmtMemStore::default(), version - 1)?;
    tree.apply_batch(leaves)?;
    // The empty start version never was this state.
    tree.prune(1)?;
    Ok(tree)
}

impl Ledger {
    /// The state after the current height as a snapshot.
    pub fn export_snapshot(&self) -> Result<LedgerSnapshot, LedgerError> {
        let mut outputs: Vec<(OutputId, OutputState)> = self
            .outputs
            .iter()
            .map(|(id, st)| (*id, st.clone()))
            .collect();
        outputs.sort_unstable_by_key(|(id, _)| *id);
        let mut assets: Vec<(AssetId, AssetState)> = self
            .assets
            .iter()
            .map(|(id, st)| (*id, st.clone()))
            .collect();
        assets.sort_unstable_by_key(|(id, _)| *id);
        let mut items: Vec<(AssetId, Hash, ItemState)> = self
            .items
            .iter()
            .map(|((asset, item), st)| (*asset, *item, *st))
            .collect();
        items.sort_unstable_by_key(|(asset, item, _)| (*asset, *item));
        let history = (0..self.history.size())
            .map(|i| self.history.leaf_node(i))
            .collect::<Result<Vec<_>, MmrError>>()?;
        Ok(LedgerSnapshot {
            format: SNAPSHOT_FORMAT,
            chain: self.chain,
            params: self.params.clone(),
            height: self.height,
            round: self.round,
            roots: self.roots.clone(),
            outputs,
            assets,
            items,
            // A BTreeMap: already by key.
            peers: self.peers.values().cloned().collect(),
            key_index: self.key_index.lists()?,
            history,
        })
    }

    /// What a joining peer calls: rebuild the ledger from a snapshot of
    /// the chain `genesis` starts, at the checkpoint whose certificate the
    /// caller checked. The roots do not commit the chain id, the parameters
    /// or the round, so those are compared with the genesis and the
    /// checkpoint here; then as [`Ledger::from_snapshot_certified`].
    pub fn from_checkpoint(
        snap: LedgerSnapshot,
        genesis: &Genesis,
        checkpoint: &Checkpoint,
    ) -> Result<Ledger, SnapshotError> {
        if snap.chain != checkpoint.chain || snap.chain != genesis.chain_id() {
            return Err(SnapshotError::NotCertified { which: "chain" });
        }
        if snap.params != genesis.params {
            return Err(SnapshotError::NotCertified { which: "params" });
        }
        if snap.round != checkpoint.round {
            return Err(SnapshotError::NotCertified { which: "round" });
        }
        Self::from_snapshot_certified(snap, &checkpoint.roots, checkpoint.height)
    }

    /// Rebuild the ledger from a snapshot that must be of `height` and
    /// claim exactly the `certified` roots (which the caller trusts), then
    /// as [`Ledger::from_snapshot`]. The chain id, parameters and round are
    /// not committed by the roots: the caller compares them (as
    /// [`Ledger::from_checkpoint`] does).
    pub fn from_snapshot_certified(
        snap: LedgerSnapshot,
        certified: &StateRoots,
        height: u64,
    ) -> Result<Ledger, SnapshotError> {
        if snap.height != height {
            return Err(SnapshotError::NotCertified { which: "height" });
        }
        if let Some(which) = first_difference(&snap.roots, certified) {
            return Err(SnapshotError::NotCertified { which });
        }
        Self::from_snapshot(snap)
    }

    /// Rebuild the ledger a snapshot describes, refusing contents out of
    /// canonical order, contents no chain could have produced, and any
    /// rebuilt root that differs from the snapshot's claim. The result
    /// behaves exactly as the ledger that was exported; only tree versions
    /// before the snapshot's height are missing.
    pub fn from_snapshot(snap: LedgerSnapshot) -> Result<Ledger, SnapshotError> {
        if snap.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format(snap.format));
        }
        let height = snap.height;
        if height == u64::MAX {
            return Err(SnapshotError::HeightTooLarge(height));
        }
        let version = Ledger::version_of(height);
        check_order("outputs", snap.outputs.iter().map(|(id, _)| id))?;
        check_order("assets", snap.assets.iter().map(|(id, _)| id))?;
        check_order("items", snap.items.iter().map(|(a, i, _)| (a, i)))?;
        check_order("peers", snap.peers.iter().map(|p| p.key))?;
        check_order("key index keys", snap.key_index.iter().map(|(k, _)| k))?;
        let after = |what| Err(SnapshotError::from(Inconsistency::AfterHeight(what)));

        // The registry: assets, items and peers, with the derived names.
        let mut registry_leaves =
            Vec::with_capacity(snap.assets.len() + snap.items.len() + snap.peers.len());
        let mut assets: IdMap<AssetId, AssetState> = IdMap::default();
        for (id, st) in snap.assets {
            if st.issued_at > height {
                return after("an asset");
            }
            registry_leaves.push((asset_key(&id), Some(asset_value(&st))));
            assets.insert(id, st);
        }
        let mut items = HashMap::with_capacity(snap.items.len());
        for (asset, item, st) in snap.items {
            let unique = assets
                .get(&asset)
                .is_some_and(|a| a.def.class == AssetClass::Unique);
            if !unique {
                return Err(Inconsistency::Item(asset, item).into());
            }
            let latest = match st {
                ItemState::Live { minted_at } => minted_at,
                ItemState::Burned { burned_at, .. } => burned_at,
            };
            if latest > height {
                return after("an item");
            }
            registry_leaves.push((item_key(&asset, &item), Some(item_value(&st))));
            items.insert((asset, item), st);
        }
        let mut peers = BTreeMap::new();
        let mut names = HashMap::with_capacity(snap.peers.len());
        for rec in snap.peers {
            let retired = match rec.status {
                PeerStatus::Active => 0,
                PeerStatus::Retired(h) => h,
            };
            if rec.registered_at > height || retired > height {
                return after("a peer");
            }
            if names.insert(rec.name.clone(), rec.key).is_some() {
                return Err(Inconsistency::PeerName(rec.name).into());
            }
            registry_leaves.push((name_key(&rec.name), Some(peer_value(&rec))));
            peers.insert(rec.key, rec);
        }
        registry_leaves.sort_unstable_by_key(|(k, _)| *k);

        // Outputs, the stake they host, and what the supplies must be.
        let mut output_leaves = Vec::with_capacity(snap.outputs.len());
        let mut outputs: IdMap<OutputId, OutputState> = IdMap::default();
        outputs.reserve(snap.outputs.len());
        let mut hosted: BTreeMap<PeerKey, u128> = BTreeMap::new();
        let mut unspent: IdMap<AssetId, u128> = IdMap::default();
        let mut held_items: HashMap<(AssetId, Hash), OutputId> = HashMap::new();
        for (id, st) in snap.outputs {
            let spent_at = st.spent.map(|s| s.height);
            if st.created_at > height || spent_at.is_some_and(|s| s > height || s < st.created_at) {
                return Err(Inconsistency::OutputHeight(id).into());
            }
            let out = &st.output;
            let Some(asset) = assets.get(&out.asset) else {
                return Err(Inconsistency::OutputAsset(id).into());
            };
            let native = out.asset.is_native();
            match out.host {
                Some(host) if native && peers.contains_key(&host) => {}
                None if !native => {}
                _ => return Err(Inconsistency::OutputHost(id).into()),
            }
            match (asset.def.class, out.value) {
                (AssetClass::Fungible { .. }, Value::Amount(v)) => {
                    if spent_at.is_none() {
                        let sum = unspent.entry(out.asset).or_default();
                        *sum = sum.checked_add(v).ok_or(Inconsistency::Supply(out.asset))?;
                        if let Some(host) = out.host {
                            let h = hosted.entry(host).or_default();
                            *h = h.checked_add(v).ok_or(Inconsistency::HostedOverflow)?;
                        }
                    }
                }
                (AssetClass::Unique, Value::Item(item)) => {
                    if spent_at.is_none() {
                        let live =
                            matches!(items.get(&(out.asset, item)), Some(ItemState::Live { .. }));
                        if !live || held_items.insert((out.asset, item), id).is_some() {
                            return Err(Inconsistency::OutputItem(id).into());
                        }
                    }
                }
                _ => return Err(Inconsistency::OutputAsset(id).into()),
            }
            output_leaves.push((id, Some(st.leaf_value())));
            outputs.insert(id, st);
        }
        // Every supply is what its unspent outputs hold: conservation keeps
        // it so, and the apply rules rely on it (a burn never exceeds it).
        for ((asset, item), st) in &items {
            if matches!(st, ItemState::Live { .. }) && !held_items.contains_key(&(*asset, *item)) {
                return Err(Inconsistency::Item(*asset, *item).into());
            }
        }
        let mut live_items: IdMap<AssetId, u128> = IdMap::default();
        for (asset, _) in held_items.keys() {
            *live_items.entry(*asset).or_default() += 1;
        }
        for (id, st) in &assets {
            let held = match st.def.class {
                AssetClass::Fungible { .. } => unspent.get(id),
                AssetClass::Unique => live_items.get(id),
            };
            if held.copied().unwrap_or(0) != st.supply {
                return Err(Inconsistency::Supply(*id).into());
            }
        }

        // The key index lists exactly the outputs, each under its owner at
        // its creation height (only the order within a height is its own).
        let mut indexed: IdSet<OutputId> = IdSet::default();
        indexed.reserve(outputs.len());
        for (key, entries) in &snap.key_index {
            let sorted = entries.windows(2).all(|w| w[0].height <= w[1].height);
            if entries.is_empty() || !sorted {
                return Err(Inconsistency::IndexList(*key).into());
            }
            for e in entries {
                let fits = outputs
                    .get(&e.output)
                    .is_some_and(|st| st.output.owner.0 == key.0 && st.created_at == e.height);
                if !fits || !indexed.insert(e.output) {
                    return Err(Inconsistency::IndexEntry(e.output).into());
                }
            }
        }
        if indexed.len() != outputs.len() {
            let missing = output_leaves
                .iter()
                .map(|(id, _)| *id)
                .find(|id| !indexed.contains(id))
                .unwrap_or_default();
            return Err(Inconsistency::IndexMissing(missing).into());
        }

        // The trees, each checked against its claimed root as soon as built.
        let claimed = &snap.roots;
        let mismatch = |which| Err(SnapshotError::RootMismatch { which });
        if snap.history.len() as u64 != claimed.history_leaves {
            return mismatch("history_leaves");
        }
        let history =
            Mmr::from_leaf_nodes(MemStore::default(), snap.history).map_err(LedgerError::from)?;
        if history.root() != claimed.history {
            return mismatch("history");
        }
        let mut output_tree = tree_at(version, &output_leaves)?;
        drop(output_leaves);
        if output_tree.root(version).map_err(LedgerError::from)? != claimed.outputs {
            return mismatch("outputs");
        }
        let mut key_index = KeyIndex::restore(
            SmtMemStore::default(),
            IndexStore::default(),
            version,
            height,
            &snap.key_index,
        )
        .map_err(LedgerError::from)?;
        if key_index.root(version).map_err(LedgerError::from)? != claimed.keys {
            return mismatch("keys");
        }
        let mut registry = tree_at(version, &registry_leaves)?;
        if registry.root(version).map_err(LedgerError::from)? != claimed.registry {
            return mismatch("registry");
        }

        let keep = Some(snap.params.state_versions_kept);
        output_tree.set_retention(keep);
        registry.set_retention(keep);
        key_index.set_retention(keep);
        Ok(Ledger {
            chain: snap.chain,
            params: snap.params,
            height,
            round: snap.round,
            outputs,
            assets,
            items,
            peers,
            names,
            hosted,
            output_tree,
            registry,
            key_index,
            history,
            roots: snap.roots,
            executor: None,
        })
    }
}
