//! State snapshots: the whole ledger state after one height, so a peer that
//! joins late (or fell far behind) downloads it instead of replaying the
//! chain, and a peer restarts from its own copy.
//!
//! A [`LedgerSnapshot`] holds the contents, not the trees: every output with
//! its state (spent ones too), assets, items, peers, the key index lists and
//! the history's peaks, each in one canonical order (increasing key, no
//! duplicates), with the height, round and the [`StateRoots`] they claim.
//! [`Ledger::from_snapshot`] checks the contents fit together (outputs name
//! listed assets and hosts, supplies equal the unspent outputs, live items
//! sit in exactly one unspent output, the key index lists exactly the
//! outputs under their owners and creation heights), rebuilds the maps, the
//! derived maps (names, hosted stake) and every tree, and accepts only if
//! every rebuilt root equals the claimed one; [`Ledger::from_snapshot_with`]
//! builds the trees as parallel jobs. A joining peer calls
//! [`Ledger::from_checkpoint`] with its genesis and the checkpoint whose
//! certificate it checked, so the snapshot's sender cannot slip anything
//! in: the certified roots commit the contents, and the genesis and the
//! checkpoint fix the chain id, parameters, height and round.
//!
//! The restored trees' latest version is [`Ledger::version_of`]`(height)`,
//! so everything "as of height h" is provable at once, and later heights
//! give the same roots as on a ledger that never stopped. Tree versions
//! before it (the output set, registry and key index at earlier heights)
//! are not available after a restore, nor are the history's nodes below its
//! peaks (a restarting peer still has them in its own store; a peer that
//! joined from another's snapshot proves history only from `height` on).

use crate::committee::Round;
use crate::id_map::{IdMap, IdSet};
use crate::identity::PeerKey;
use crate::ledger::asset::{AssetClass, AssetId, AssetState};
use crate::ledger::checkpoint::{Checkpoint, StateRoots};
use crate::ledger::genesis::Genesis;
use crate::ledger::output::{OutputId, OutputState, Value};
use crate::ledger::output_set::OutputSet;
use crate::ledger::peers::{name_key, PeerRecord, PeerStatus};
use crate::ledger::state::{
    asset_key, asset_value, item_key, item_value, peer_value, HistoryStore, IndexStore, ItemState,
    Ledger, LedgerError, LedgerTree, Params,
};
use proofs::key_index::{Entry, IndexMemStore, KeyIndex};
use proofs::smt::MemTree;
use proofs::{CodecError, Executor, Hash, MemStore, Mmr};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// The snapshot layout this code writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// The pieces [`Ledger::encode_snapshot`] gathers its encoding from.
pub const SNAPSHOT_PIECE: usize = 1 << 20;

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
    /// The history's peaks, highest first (one per set bit of
    /// `roots.history_leaves`): with the size they give the root, and
    /// appends go on from them. The whole history would make the snapshot
    /// grow with the chain's age.
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
    #[error("key index list of {0:?} is empty, its heights decrease, or pass the snapshot height")]
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

impl Ledger {
    /// The state after the current height as a snapshot.
    pub fn export_snapshot(&self) -> Result<LedgerSnapshot, LedgerError> {
        let outputs = self.outputs()?;
        let (assets, items) = self.registry_lists();
        let history = self.history.peaks().to_vec();
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

    /// The encoding of [`Ledger::export_snapshot`] (byte for byte what
    /// [`LedgerSnapshot::encode`] gives), written piece by piece: the
    /// outputs and key index lists, which grow with the chain, are never
    /// held twice, so a snapshot of a large state costs its encoded size in
    /// memory, not that plus a decoded copy.
    pub fn encode_snapshot(&self) -> Result<Vec<u8>, LedgerError> {
        let mut all = Vec::new();
        self.encode_snapshot_with(SNAPSHOT_PIECE, &mut |piece| {
            all.extend_from_slice(piece);
            Ok(())
        })?;
        Ok(all)
    }

    /// [`Ledger::encode_snapshot`] handed to `sink` as it is encoded, in
    /// pieces of at least `piece` bytes (the last one may be shorter; a
    /// piece ends where an entry ends), so that the caller can write a
    /// snapshot of any size holding about one piece at a time. A sink
    /// error stops the export ([`LedgerError::Sink`]).
    pub fn encode_snapshot_with(
        &self,
        piece: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), LedgerError> {
        use proofs::codec::{encode_into, encode_len};
        let mut out = Vec::with_capacity(piece.min(SNAPSHOT_PIECE) * 5 / 4);
        let mut hand_over = |out: &mut Vec<u8>, done: bool| -> Result<(), LedgerError> {
            if out.len() >= piece || (done && !out.is_empty()) {
                sink(out).map_err(LedgerError::Sink)?;
                out.clear();
            }
            Ok(())
        };
        encode_into(&SNAPSHOT_FORMAT, &mut out);
        encode_into(&self.chain, &mut out);
        encode_into(&self.params, &mut out);
        encode_into(&self.height, &mut out);
        encode_into(&self.round, &mut out);
        encode_into(&self.roots, &mut out);
        if self.outputs.has_store() {
            // Spent outputs are in the store: the output set's tree lists
            // every id, in order.
            let ids = self.output_ids()?;
            encode_len(ids.len(), &mut out);
            for id in &ids {
                encode_into(&(id, self.stored_output(id)?.as_ref()), &mut out);
                hand_over(&mut out, false)?;
            }
        } else {
            let mut all: Vec<(&OutputId, &OutputState)> = self.outputs.iter_memory().collect();
            all.sort_unstable_by_key(|(id, _)| **id);
            encode_len(all.len(), &mut out);
            for entry in &all {
                encode_into(entry, &mut out);
                hand_over(&mut out, false)?;
            }
        }
        let (assets, items) = self.registry_lists();
        encode_into(&assets, &mut out);
        encode_into(&items, &mut out);
        encode_len(self.peers.len(), &mut out);
        for p in self.peers.values() {
            encode_into(p, &mut out);
            hand_over(&mut out, false)?;
        }
        let keys = self.key_index.keys()?;
        encode_len(keys.len(), &mut out);
        for key in &keys {
            encode_into(&(key, self.key_index.list(key)?), &mut out);
            hand_over(&mut out, false)?;
        }
        encode_into(&self.history.peaks().to_vec(), &mut out);
        hand_over(&mut out, true)
    }

    /// Assets and items in snapshot order.
    #[allow(clippy::type_complexity)]
    fn registry_lists(&self) -> (Vec<(AssetId, AssetState)>, Vec<(AssetId, Hash, ItemState)>) {
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
        (assets, items)
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
        Self::from_snapshot_with(snap, None)
    }

    /// [`Ledger::from_snapshot`], building the output set (in `jobs`
    /// subtree jobs) and the other structures as parallel jobs on `exec`
    /// when given, which the restored ledger then keeps using (as after
    /// [`Ledger::set_executor`]). The result is the same either way.
    pub fn from_snapshot_with(
        snap: LedgerSnapshot,
        exec: Option<(Arc<dyn Executor>, usize)>,
    ) -> Result<Ledger, SnapshotError> {
        if snap.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format(snap.format));
        }
        let height = snap.height;
        if height == u64::MAX {
            return Err(SnapshotError::HeightTooLarge(height));
        }
        check_order("outputs", snap.outputs.iter().map(|(id, _)| id))?;
        check_order("assets", snap.assets.iter().map(|(id, _)| id))?;
        check_order("items", snap.items.iter().map(|(a, i, _)| (a, i)))?;
        check_order("peers", snap.peers.iter().map(|p| p.key))?;
        check_order("key index keys", snap.key_index.iter().map(|(k, _)| k))?;
        for (key, entries) in &snap.key_index {
            let sorted = entries.windows(2).all(|w| w[0].height <= w[1].height);
            let dated = entries.last().is_some_and(|e| e.height <= height);
            if !sorted || !dated {
                return Err(Inconsistency::IndexList(*key).into());
            }
        }
        if snap.history.len() as u32 != snap.roots.history_leaves.count_ones() {
            return Err(SnapshotError::RootMismatch {
                which: "history_leaves",
            });
        }
        let LedgerSnapshot {
            chain,
            params,
            round,
            roots,
            outputs,
            assets,
            items,
            peers,
            key_index,
            history,
            ..
        } = snap;
        let registry = Registry::new(height, assets, items, peers)?;
        // At least 1 (the height is below u64::MAX): the trees start empty
        // at `version - 1` and one batch loads them.
        let version = Ledger::version_of(height);

        // The output set, and the other structures, share nothing: build
        // them as two jobs.
        let mut built_outputs = None;
        let mut built_rest = None;
        {
            let (registry, key_index) = (&registry, &key_index);
            let outputs_job = || {
                built_outputs = Some(Outputs::build(
                    version,
                    height,
                    outputs,
                    registry,
                    exec.as_ref().map(|(e, jobs)| (e.clone(), *jobs)),
                ))
            };
            let history = (roots.history_leaves, history);
            let rest_job =
                || built_rest = Some(Rest::build(version, height, key_index, history, registry));
            match &exec {
                None => {
                    outputs_job();
                    rest_job();
                }
                Some((e, _)) => e.run_all(vec![Box::new(outputs_job), Box::new(rest_job)]),
            }
        }
        let missed = || SnapshotError::Ledger(LedgerError::Executor);
        let outs = built_outputs.ok_or_else(missed)??;
        let rest = built_rest.ok_or_else(missed)??;
        registry.check_supplies(&outs)?;

        // The key index lists exactly the outputs, each under its owner at
        // its creation height (only the order within a height is its own).
        let mut indexed: IdSet<OutputId> = IdSet::default();
        indexed.reserve(outs.map.len());
        for (key, entries) in &key_index {
            for e in entries {
                let fits = outs
                    .map
                    .get(&e.output)
                    .is_some_and(|st| st.output.owner.0 == key.0 && st.created_at == e.height);
                if !fits || !indexed.insert(e.output) {
                    return Err(Inconsistency::IndexEntry(e.output).into());
                }
            }
        }
        if indexed.len() != outs.map.len() {
            // The smallest, so the error names the same output every time.
            let missing = outs.map.keys().filter(|id| !indexed.contains(*id)).min();
            return Err(Inconsistency::IndexMissing(missing.copied().unwrap_or_default()).into());
        }

        let rebuilt = StateRoots {
            history: rest.history.root(),
            history_leaves: rest.history.size(),
            outputs: outs.tree.root(version).map_err(LedgerError::from)?,
            keys: rest.key_index.root(version).map_err(LedgerError::from)?,
            registry: rest.registry.root(version).map_err(LedgerError::from)?,
        };
        if let Some(which) = first_difference(&rebuilt, &roots) {
            return Err(SnapshotError::RootMismatch { which });
        }

        let keep = Some(params.state_versions_kept);
        let (mut output_tree, mut registry_tree, mut index) =
            (outs.tree, rest.registry, rest.key_index);
        output_tree.set_retention(keep);
        registry_tree.set_retention(keep);
        index.set_retention(keep);
        Ok(Ledger {
            chain,
            params,
            height,
            round,
            outputs: OutputSet::in_memory(outs.map),
            assets: registry.assets,
            items: registry.items,
            peers: registry.peers,
            names: registry.names,
            hosted: outs.hosted,
            output_tree: LedgerTree::Memory(output_tree),
            registry: registry_tree,
            key_index: index,
            history: rest.history,
            roots,
            executor: exec,
        })
    }
}

/// Assets, items and peers of a snapshot, checked, as the ledger keeps
/// them, with the registry's leaves.
struct Registry {
    assets: IdMap<AssetId, AssetState>,
    items: HashMap<(AssetId, Hash), ItemState>,
    peers: BTreeMap<PeerKey, PeerRecord>,
    names: HashMap<String, PeerKey>,
    leaves: Vec<(Hash, Option<Hash>)>,
}

impl Registry {
    fn new(
        height: u64,
        assets: Vec<(AssetId, AssetState)>,
        items: Vec<(AssetId, Hash, ItemState)>,
        peers: Vec<PeerRecord>,
    ) -> Result<Registry, SnapshotError> {
        let after = |what| Err(SnapshotError::from(Inconsistency::AfterHeight(what)));
        let mut r = Registry {
            assets: IdMap::default(),
            items: HashMap::with_capacity(items.len()),
            peers: BTreeMap::new(),
            names: HashMap::with_capacity(peers.len()),
            leaves: Vec::with_capacity(assets.len() + items.len() + peers.len()),
        };
        for (id, st) in assets {
            if st.issued_at > height {
                return after("an asset");
            }
            r.leaves.push((asset_key(&id), Some(asset_value(&st))));
            r.assets.insert(id, st);
        }
        for (asset, item, st) in items {
            let unique = r
                .assets
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
            r.leaves
                .push((item_key(&asset, &item), Some(item_value(&st))));
            r.items.insert((asset, item), st);
        }
        for rec in peers {
            let retired = match rec.status {
                PeerStatus::Active => 0,
                PeerStatus::Retired(h) => h,
            };
            if rec.registered_at > height || retired > height {
                return after("a peer");
            }
            if r.names.insert(rec.name.clone(), rec.key).is_some() {
                return Err(Inconsistency::PeerName(rec.name).into());
            }
            r.leaves.push((name_key(&rec.name), Some(peer_value(&rec))));
            r.peers.insert(rec.key, rec);
        }
        Ok(r)
    }

    /// Every supply is what its unspent outputs hold (conservation keeps it
    /// so, and the apply rules rely on it: a burn never exceeds it), and
    /// every live item is in an unspent output.
    fn check_supplies(&self, outs: &Outputs) -> Result<(), SnapshotError> {
        for ((asset, item), st) in &self.items {
            if matches!(st, ItemState::Live { .. }) && !outs.held_items.contains(&(*asset, *item)) {
                return Err(Inconsistency::Item(*asset, *item).into());
            }
        }
        let mut live_items: IdMap<AssetId, u128> = IdMap::default();
        for (asset, _) in &outs.held_items {
            *live_items.entry(*asset).or_default() += 1;
        }
        // In id order, so the error names the same asset every time.
        let mut assets: Vec<(&AssetId, &AssetState)> = self.assets.iter().collect();
        assets.sort_unstable_by_key(|(id, _)| **id);
        for (id, st) in assets {
            let held = match st.def.class {
                AssetClass::Fungible { .. } => outs.unspent.get(id),
                AssetClass::Unique => live_items.get(id),
            };
            if held.copied().unwrap_or(0) != st.supply {
                return Err(Inconsistency::Supply(*id).into());
            }
        }
        Ok(())
    }
}

/// The outputs of a snapshot, checked, with what they add up to and their
/// tree.
struct Outputs {
    map: IdMap<OutputId, OutputState>,
    hosted: BTreeMap<PeerKey, u128>,
    /// Unspent units per fungible asset.
    unspent: IdMap<AssetId, u128>,
    /// Items held by unspent outputs.
    held_items: HashSet<(AssetId, Hash)>,
    tree: MemTree,
}

impl Outputs {
    fn build(
        version: u64,
        height: u64,
        outputs: Vec<(OutputId, OutputState)>,
        reg: &Registry,
        exec: Option<(Arc<dyn Executor>, usize)>,
    ) -> Result<Outputs, SnapshotError> {
        let mut leaves = Vec::with_capacity(outputs.len());
        let mut o = Outputs {
            map: IdMap::default(),
            hosted: BTreeMap::new(),
            unspent: IdMap::default(),
            held_items: HashSet::new(),
            tree: MemTree::create_at(version - 1),
        };
        o.map.reserve(outputs.len());
        for (id, st) in outputs {
            let spent_at = st.spent.map(|s| s.height);
            if st.created_at > height || spent_at.is_some_and(|s| s > height || s < st.created_at) {
                return Err(Inconsistency::OutputHeight(id).into());
            }
            let out = &st.output;
            let Some(asset) = reg.assets.get(&out.asset) else {
                return Err(Inconsistency::OutputAsset(id).into());
            };
            let native = out.asset.is_native();
            match out.host {
                Some(host) if native && reg.peers.contains_key(&host) => {}
                None if !native => {}
                _ => return Err(Inconsistency::OutputHost(id).into()),
            }
            match (asset.def.class, out.value) {
                (AssetClass::Fungible { .. }, Value::Amount(v)) => {
                    if spent_at.is_none() {
                        let sum = o.unspent.entry(out.asset).or_default();
                        *sum = sum.checked_add(v).ok_or(Inconsistency::Supply(out.asset))?;
                        if let Some(host) = out.host {
                            let h = o.hosted.entry(host).or_default();
                            *h = h.checked_add(v).ok_or(Inconsistency::HostedOverflow)?;
                        }
                    }
                }
                (AssetClass::Unique, Value::Item(item)) => {
                    if spent_at.is_none() {
                        let live = matches!(
                            reg.items.get(&(out.asset, item)),
                            Some(ItemState::Live { .. })
                        );
                        if !live || !o.held_items.insert((out.asset, item)) {
                            return Err(Inconsistency::OutputItem(id).into());
                        }
                    }
                }
                _ => return Err(Inconsistency::OutputAsset(id).into()),
            }
            leaves.push((id, Some(st.leaf_value())));
            o.map.insert(id, st);
        }
        if let Some((e, jobs)) = exec {
            o.tree.set_parallelism(jobs, e);
        }
        fill(&mut o.tree, &leaves)?;
        Ok(o)
    }
}

/// The key index, history and registry trees of a snapshot.
struct Rest {
    key_index: KeyIndex<LedgerTree, IndexStore>,
    history: Mmr<HistoryStore>,
    registry: MemTree,
}

impl Rest {
    fn build(
        version: u64,
        height: u64,
        key_index: &[(Hash, Vec<Entry>)],
        (history_size, history_peaks): (u64, Vec<Hash>),
        reg: &Registry,
    ) -> Result<Rest, SnapshotError> {
        // Room for every key up front, so the bulk load never rehashes.
        let key_index = KeyIndex::restore_over(
            LedgerTree::Memory(MemTree::create_at(version - 1)),
            IndexStore::Memory(IndexMemStore::with_capacity(key_index.len())),
            version,
            height,
            key_index,
        )
        .map_err(LedgerError::from)?;
        let history = Mmr::from_peaks(
            Box::new(MemStore::default()) as HistoryStore,
            history_size,
            &history_peaks,
        )
        .map_err(LedgerError::from)?;
        let mut registry = MemTree::create_at(version - 1);
        let mut leaves = reg.leaves.clone();
        leaves.sort_unstable_by_key(|(k, _)| *k);
        fill(&mut registry, &leaves)?;
        Ok(Rest {
            key_index,
            history,
            registry,
        })
    }
}

/// Load a tree just created at `v - 1` with `leaves` (sorted, unique) as
/// version `v`, and drop the empty start version, which never was this
/// state.
fn fill(tree: &mut MemTree, leaves: &[(Hash, Option<Hash>)]) -> Result<(), LedgerError> {
    tree.apply_batch(leaves)?;
    tree.prune(1)?;
    Ok(())
}
