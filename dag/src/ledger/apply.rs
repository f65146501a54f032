//! Applying a committed height: the rules that depend on the state and on
//! the order.
//!
//! Transactions apply one by one in the final order. Each is first checked
//! against the state without changing it; if any rule fails it is rejected
//! with a [`Rejection`] and leaves no trace but its outcome in the history.
//! The first transaction that spends an output wins; a later one spending
//! it again is rejected ([`Rejection::InputSpent`], or
//! [`Rejection::Duplicate`] when it is the very same transaction ordered
//! twice). All arithmetic is checked `u128`. The trees are updated once per
//! height, so every touched node is hashed once however many transactions
//! touched it.

use crate::committee::Round;
use crate::event::EventId;
use crate::identity::PeerKey;
use crate::ledger::admission::{Admitted, Authorized};
use crate::ledger::asset::{AssetClass, AssetDef, AssetId, AssetState};
use crate::ledger::checkpoint::StateRoots;
use crate::ledger::output::{leaf_updates, output_id, OutputState, Spend, Value};
use crate::ledger::peers::{name_key, PeerRecord, PeerStatus};
use crate::ledger::state::{
    asset_key, asset_value, item_key, item_value, peer_value, ItemState, Ledger, LedgerError,
};
use crate::ledger::transaction::{Action, FormError, TxId};
use proofs::smt::VersionedTree;
use proofs::{Domain, Hash, Hasher};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// History leaf of an ordered event.
pub const HISTORY_EVENT_DOMAIN: Domain = Domain::new("pos/ledger/history-event/v1");
/// History leaf of an ordered payload item and its outcome.
pub const HISTORY_ITEM_DOMAIN: Domain = Domain::new("pos/ledger/history-item/v1");

/// Why an ordered transaction was not applied. Recorded in the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("the item is not a well-formed transaction")]
    Malformed,
    #[error("{0}")]
    Form(FormError),
    #[error("the signature does not verify under the signers' aggregate key")]
    BadSignature,
    #[error("input {0} does not exist")]
    UnknownInput(u32),
    #[error("input {input} was already spent by {by:?} at height {height}")]
    InputSpent { input: u32, by: TxId, height: u64 },
    #[error("this transaction was already applied")]
    Duplicate,
    #[error("the signers are not exactly the input owners and action authorities")]
    SignersMismatch,
    #[error("fee below the minimum of {min}")]
    FeeTooLow { min: u128 },
    #[error("asset {0:?} does not exist")]
    UnknownAsset(AssetId),
    #[error("action {0}: the asset's supply is fixed")]
    NotMintable(u32),
    #[error("action {0}: the item already exists or existed")]
    ItemExists(u32),
    #[error("the value does not fit the asset's class (action or output {0})")]
    ClassMismatch(u32),
    #[error("output {0}: the host is not an active peer")]
    UnknownHost(u32),
    #[error("asset {0:?}: inputs and mints do not equal outputs, burns and fee")]
    ValueMismatch(AssetId),
    #[error("an amount overflows")]
    Overflow,
    #[error("action {0}: the peer name is taken")]
    NameTaken(u32),
    #[error("action {0}: the key is already registered")]
    KeyRegistered(u32),
    #[error("action {0}: no active peer has this key")]
    UnknownPeer(u32),
}

/// What happened to one ordered item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Applied,
    Rejected(Rejection),
}

/// One committed height: its leader and the admitted payload items of its
/// events, in the final order.
#[derive(Clone, Debug)]
pub struct HeightInput {
    pub height: u64,
    pub round: Round,
    pub leader: EventId,
    pub events: Vec<(EventId, Vec<Admitted>)>,
}

/// The result of applying a height.
#[derive(Clone, Debug)]
pub struct HeightOutcome {
    pub height: u64,
    pub roots: StateRoots,
    /// Each item's id and outcome, in order.
    pub outcomes: Vec<(Hash, Outcome)>,
    /// The owner key of each output the height created, in order (a key
    /// may repeat): what a peer tells the wallets subscribed to them.
    pub created_for: Vec<Hash>,
    pub applied: usize,
    pub rejected: usize,
}

/// The history leaf of an event.
pub fn event_leaf(id: &EventId) -> Hash {
    Hash::of(HISTORY_EVENT_DOMAIN, &id.0)
}

/// The history leaf of an item and its outcome.
pub fn item_leaf(id: &Hash, outcome: &Outcome) -> Hash {
    let mut h = Hasher::new(HISTORY_ITEM_DOMAIN);
    h.update(&id.0).update(&proofs::encode(outcome));
    h.finalize()
}

/// The history index of payload item `item` of a height, given the
/// history's size before the height and the height's ordered events with
/// their payloads: the leaves [`Ledger::apply_height`] appends are, per
/// event, the event's leaf and then one leaf per payload item (admitted or
/// not), in order. `None` if the item is not in the height.
pub fn item_leaf_index(
    leaves_before: u64,
    events: &[(EventId, Vec<u8>)],
    max_tx_bytes: usize,
    item: &Hash,
) -> Option<u64> {
    let mut index = leaves_before;
    for (_, payload) in events {
        index += 1; // the event's own leaf
        for it in crate::ledger::admission::decode_payload(payload, max_tx_bytes) {
            if it.id() == *item {
                return Some(index);
            }
            index += 1;
        }
    }
    None
}

/// Tree updates gathered over a height.
#[derive(Default)]
pub(crate) struct Changes {
    /// Output states written this height, hashed into leaf values by the
    /// output tree's job ([`leaf_updates`]), off the serial rule checks.
    pub outputs: Vec<(Hash, OutputState)>,
    pub registry: Vec<(Hash, Option<Hash>)>,
    pub created: Vec<(Hash, Hash)>,
}

/// Per-asset sums for the conservation rule; transactions touch few assets,
/// so a short vector beats a map.
#[derive(Default)]
struct Sums(Vec<(AssetId, u128, u128)>);

impl Sums {
    fn add(&mut self, asset: AssetId, into: bool, amount: u128) -> Result<(), Rejection> {
        let i = match self.0.iter().position(|(a, _, _)| *a == asset) {
            Some(i) => i,
            None => {
                self.0.push((asset, 0, 0));
                self.0.len() - 1
            }
        };
        let slot = if into {
            &mut self.0[i].1
        } else {
            &mut self.0[i].2
        };
        *slot = slot.checked_add(amount).ok_or(Rejection::Overflow)?;
        Ok(())
    }
}

/// What a valid transaction will change, computed before changing anything.
/// Why a transaction was not applied: a rule refused it (an outcome like
/// any other), or the state could not be read (the height cannot go on).
enum Refusal {
    Rejected(Rejection),
    Failed(LedgerError),
}

impl From<Rejection> for Refusal {
    fn from(r: Rejection) -> Self {
        Refusal::Rejected(r)
    }
}

impl From<proofs::StoreError> for Refusal {
    fn from(e: proofs::StoreError) -> Self {
        Refusal::Failed(e.into())
    }
}

struct Plan {
    new_assets: Vec<(AssetId, AssetDef)>,
    /// Supply changes: (asset, minted, burned).
    supply: Vec<(AssetId, u128, u128)>,
    minted_items: Vec<(AssetId, Hash)>,
    burned_items: Vec<(AssetId, Hash)>,
    registered: Vec<(String, PeerKey, SocketAddr)>,
    updated: Vec<(PeerKey, SocketAddr)>,
    retired: Vec<PeerKey>,
}

impl Ledger {
    /// Apply committed height `input.height` (the next one) and return the
    /// outcomes and the new roots.
    pub fn apply_height(&mut self, input: &HeightInput) -> Result<HeightOutcome, LedgerError> {
        if input.height != self.height + 1 {
            return Err(LedgerError::WrongHeight {
                got: input.height,
                expected: self.height + 1,
            });
        }
        let h = input.height;
        let mut changes = Changes::default();
        let mut outcomes = Vec::new();
        let mut leaves = Vec::new();
        let (mut applied, mut rejected) = (0, 0);
        for (event, items) in &input.events {
            leaves.push(event_leaf(event));
            for item in items {
                let outcome = match item {
                    Admitted::Rejected { reason, .. } => Outcome::Rejected(reason.clone()),
                    Admitted::Ok(tx) => match self.apply_tx(tx, h, &mut changes) {
                        Ok(()) => Outcome::Applied,
                        Err(Refusal::Rejected(r)) => Outcome::Rejected(r),
                        Err(Refusal::Failed(e)) => return Err(e),
                    },
                };
                match outcome {
                    Outcome::Applied => applied += 1,
                    Outcome::Rejected(_) => rejected += 1,
                }
                leaves.push(item_leaf(&item.id(), &outcome));
                outcomes.push((item.id(), outcome));
            }
        }
        let created_for = changes.created.iter().map(|(key, _)| *key).collect();
        self.commit_height(h, input.round, changes, leaves)?;
        Ok(HeightOutcome {
            height: h,
            roots: self.roots.clone(),
            outcomes,
            created_for,
            applied,
            rejected,
        })
    }

    /// Write a height's gathered changes into the trees and the history.
    pub(crate) fn commit_height(
        &mut self,
        height: u64,
        round: Round,
        changes: Changes,
        leaves: Vec<Hash>,
    ) -> Result<(), LedgerError> {
        let (outputs, registry, keys) = match self.executor.clone().map(|(e, _)| e) {
            None => {
                let (_, outputs) = self
                    .output_tree
                    .apply_batch(&leaf_updates(&changes.outputs))?;
                let (_, registry) = self.registry.apply_batch(&changes.registry)?;
                let (_, keys) = self.key_index.apply(height, &changes.created)?;
                self.history.append_batch(leaves)?;
                (outputs, registry, keys)
            }
            Some(exec) => {
                // The four structures share nothing: update them as
                // independent jobs (the same results, in less time when the
                // executor has cores to spare).
                let (mut r_out, mut r_reg, mut r_keys, mut r_hist) = (None, None, None, None);
                let (out_tree, reg_tree, index, history) = (
                    &mut self.output_tree,
                    &mut self.registry,
                    &mut self.key_index,
                    &mut self.history,
                );
                let changes = &changes;
                exec.run_all(vec![
                    Box::new(|| {
                        r_out = Some(out_tree.apply_batch(&leaf_updates(&changes.outputs)))
                    }),
                    Box::new(|| {
                        r_keys = Some(index.apply(height, &changes.created));
                        r_reg = Some(reg_tree.apply_batch(&changes.registry));
                        r_hist = Some(history.append_batch(leaves));
                    }),
                ]);
                let missed = || LedgerError::Executor;
                let (_, outputs) = r_out.ok_or_else(missed)??;
                let (_, registry) = r_reg.ok_or_else(missed)??;
                let (_, keys) = r_keys.ok_or_else(missed)??;
                r_hist.ok_or_else(missed)??;
                (outputs, registry, keys)
            }
        };
        self.height = height;
        self.round = round;
        self.roots = StateRoots {
            history: self.history.root(),
            history_leaves: self.history.size(),
            outputs,
            keys,
            registry,
        };
        Ok(())
    }

    fn apply_tx(
        &mut self,
        a: &Authorized,
        height: u64,
        changes: &mut Changes,
    ) -> Result<(), Refusal> {
        let plan = self.check_tx(a)?;
        let (tx, id) = (a.tx(), a.id());
        for input in &tx.body.inputs {
            let st = self
                .outputs
                .spend(input, Spend { tx: id, height })?
                .expect("checked: the input is unspent");
            if let (Some(host), Value::Amount(v)) = (st.output.host, st.output.value) {
                let hosted = self.hosted.entry(host).or_default();
                *hosted = hosted
                    .checked_sub(v)
                    .expect("hosted sums hold every unspent output");
            }
            changes.outputs.push((*input, st));
        }
        for (def_id, def) in plan.new_assets {
            self.assets.insert(
                def_id,
                AssetState {
                    def,
                    supply: 0,
                    issued_at: height,
                },
            );
        }
        for (asset, minted, burned) in plan.supply {
            let s = self
                .assets
                .get_mut(&asset)
                .expect("checked: the asset exists");
            // Checked in `check_tx`: minting cannot overflow and a burn takes
            // units from the inputs, which the supply counts.
            s.supply = s.supply + minted - burned;
            changes
                .registry
                .push((asset_key(&asset), Some(asset_value(s))));
        }
        for (asset, item) in plan.minted_items {
            let st = ItemState::Live { minted_at: height };
            self.items.insert((asset, item), st);
            changes
                .registry
                .push((item_key(&asset, &item), Some(item_value(&st))));
        }
        for (asset, item) in plan.burned_items {
            let slot = self
                .items
                .get_mut(&(asset, item))
                .expect("checked: live item");
            let ItemState::Live { minted_at } = *slot else {
                unreachable!("checked: a burned item is live")
            };
            *slot = ItemState::Burned {
                minted_at,
                burned_at: height,
            };
            changes
                .registry
                .push((item_key(&asset, &item), Some(item_value(slot))));
        }
        for (name, key, addr) in plan.registered {
            let rec = PeerRecord {
                name: name.clone(),
                key,
                addr,
                registered_at: height,
                status: PeerStatus::Active,
            };
            changes
                .registry
                .push((name_key(&name), Some(peer_value(&rec))));
            self.names.insert(name, key);
            self.peers.insert(key, rec);
        }
        for (key, addr) in plan.updated {
            let rec = self.peers.get_mut(&key).expect("checked: active peer");
            rec.addr = addr;
            changes
                .registry
                .push((name_key(&rec.name), Some(peer_value(rec))));
        }
        for key in plan.retired {
            let rec = self.peers.get_mut(&key).expect("checked: active peer");
            rec.status = PeerStatus::Retired(height);
            changes
                .registry
                .push((name_key(&rec.name), Some(peer_value(rec))));
        }
        for (i, output) in tx.body.outputs.iter().enumerate() {
            let oid = output_id(&id, i as u32);
            if let (Some(host), Value::Amount(v)) = (output.host, output.value) {
                let hosted = self.hosted.entry(host).or_default();
                // Bounded by the native supply, which is a u128.
                *hosted = hosted
                    .checked_add(v)
                    .expect("hosted stake is within the supply");
            }
            let st = OutputState {
                output: output.clone(),
                created_by: id,
                created_at: height,
                spent: None,
            };
            changes.outputs.push((oid, st.clone()));
            changes.created.push((Hash(output.owner.0), oid));
            self.outputs.insert(oid, st);
        }
        Ok(())
    }

    /// Every rule, without changing anything.
    fn check_tx(&self, a: &Authorized) -> Result<Plan, Refusal> {
        // Read the inputs' states first (a spent one may be in the store):
        // the rules themselves then cannot fail but by a rejection.
        let mut inputs: Vec<Cow<'_, OutputState>> = Vec::with_capacity(a.tx().body.inputs.len());
        for (i, input) in a.tx().body.inputs.iter().enumerate() {
            inputs.push(
                self.outputs
                    .get(input)?
                    .ok_or(Rejection::UnknownInput(i as u32))?,
            );
        }
        Ok(self.check_rules(a, &inputs)?)
    }

    /// Every rule, given the states of the transaction's inputs.
    fn check_rules(
        &self,
        a: &Authorized,
        inputs: &[Cow<'_, OutputState>],
    ) -> Result<Plan, Rejection> {
        let (tx, id) = (a.tx(), a.id());
        let body = &tx.body;
        let mut required = BTreeSet::new();
        let mut sums = Sums::default();
        let mut items_in: BTreeSet<(AssetId, Hash)> = BTreeSet::new();
        let mut items_out: BTreeSet<(AssetId, Hash)> = BTreeSet::new();

        for (i, st) in inputs.iter().enumerate() {
            if let Some(spend) = st.spent {
                return Err(if spend.tx == id {
                    Rejection::Duplicate
                } else {
                    Rejection::InputSpent {
                        input: i as u32,
                        by: spend.tx,
                        height: spend.height,
                    }
                });
            }
            required.insert(st.output.owner);
            match st.output.value {
                Value::Amount(v) => sums.add(st.output.asset, true, v)?,
                Value::Item(item) => {
                    items_in.insert((st.output.asset, item));
                }
            }
        }
        if body.fee < self.params.min_fee {
            return Err(Rejection::FeeTooLow {
                min: self.params.min_fee,
            });
        }

        let mut plan = Plan {
            new_assets: Vec::new(),
            supply: Vec::new(),
            minted_items: Vec::new(),
            burned_items: Vec::new(),
            registered: Vec::new(),
            updated: Vec::new(),
            retired: Vec::new(),
        };
        let class_of =
            |plan: &Plan, asset: &AssetId| -> Option<(AssetClass, PeerKey, bool, bool)> {
                if let Some((_, def)) = plan.new_assets.iter().find(|(a, _)| a == asset) {
                    return Some((def.class, def.issuer, true, true));
                }
                self.assets
                    .get(asset)
                    .map(|s| (s.def.class, s.def.issuer, s.def.mintable, false))
            };
        let add_supply = |plan: &mut Plan, asset: AssetId, minted: u128, burned: u128| {
            match plan.supply.iter_mut().find(|(a, _, _)| *a == asset) {
                Some(s) => {
                    s.1 = s.1.checked_add(minted).ok_or(Rejection::Overflow)?;
                    s.2 = s.2.checked_add(burned).ok_or(Rejection::Overflow)?;
                }
                None => plan.supply.push((asset, minted, burned)),
            }
            Ok::<(), Rejection>(())
        };

        for (i, action) in body.actions.iter().enumerate() {
            let ai = i as u32;
            match action {
                Action::Issue(def) => {
                    let asset = AssetId::issued(&body.inputs[0], ai);
                    required.insert(def.issuer);
                    plan.new_assets.push((asset, def.clone()));
                    add_supply(&mut plan, asset, 0, 0)?;
                }
                Action::Mint { asset, amount } => {
                    let (class, issuer, mintable, _) =
                        class_of(&plan, asset).ok_or(Rejection::UnknownAsset(*asset))?;
                    if !matches!(class, AssetClass::Fungible { .. }) {
                        return Err(Rejection::ClassMismatch(ai));
                    }
                    if !mintable {
                        return Err(Rejection::NotMintable(ai));
                    }
                    required.insert(issuer);
                    sums.add(*asset, true, *amount)?;
                    add_supply(&mut plan, *asset, *amount, 0)?;
                    let current = self.assets.get(asset).map_or(0, |s| s.supply);
                    let pending = plan
                        .supply
                        .iter()
                        .find(|(a, _, _)| a == asset)
                        .map_or(0, |s| s.1);
                    current.checked_add(pending).ok_or(Rejection::Overflow)?;
                }
                Action::MintItem { asset, item } => {
                    let (class, issuer, mintable, _) =
                        class_of(&plan, asset).ok_or(Rejection::UnknownAsset(*asset))?;
                    if class != AssetClass::Unique {
                        return Err(Rejection::ClassMismatch(ai));
                    }
                    if !mintable {
                        return Err(Rejection::NotMintable(ai));
                    }
                    required.insert(issuer);
                    if self.items.contains_key(&(*asset, *item))
                        || plan.minted_items.contains(&(*asset, *item))
                        || !items_in.insert((*asset, *item))
                    {
                        return Err(Rejection::ItemExists(ai));
                    }
                    plan.minted_items.push((*asset, *item));
                    add_supply(&mut plan, *asset, 1, 0)?;
                }
                Action::Burn { asset, amount } => {
                    let (class, ..) =
                        class_of(&plan, asset).ok_or(Rejection::UnknownAsset(*asset))?;
                    if !matches!(class, AssetClass::Fungible { .. }) {
                        return Err(Rejection::ClassMismatch(ai));
                    }
                    sums.add(*asset, false, *amount)?;
                    add_supply(&mut plan, *asset, 0, *amount)?;
                }
                Action::BurnItem { asset, item } => {
                    let (class, ..) =
                        class_of(&plan, asset).ok_or(Rejection::UnknownAsset(*asset))?;
                    if class != AssetClass::Unique {
                        return Err(Rejection::ClassMismatch(ai));
                    }
                    if !items_out.insert((*asset, *item)) {
                        return Err(Rejection::ValueMismatch(*asset));
                    }
                    plan.burned_items.push((*asset, *item));
                    add_supply(&mut plan, *asset, 0, 1)?;
                }
                Action::RegisterPeer { name, key, addr } => {
                    if self.names.contains_key(name)
                        || plan.registered.iter().any(|(n, _, _)| n == name)
                    {
                        return Err(Rejection::NameTaken(ai));
                    }
                    if self.peers.contains_key(key)
                        || plan.registered.iter().any(|(_, k, _)| k == key)
                    {
                        return Err(Rejection::KeyRegistered(ai));
                    }
                    required.insert(*key);
                    plan.registered.push((name.clone(), *key, *addr));
                }
                Action::UpdatePeer { key, addr } => {
                    if !self.peers.get(key).is_some_and(PeerRecord::is_active)
                        || plan.retired.contains(key)
                    {
                        return Err(Rejection::UnknownPeer(ai));
                    }
                    required.insert(*key);
                    plan.updated.push((*key, *addr));
                }
                Action::RetirePeer { key } => {
                    if !self.peers.get(key).is_some_and(PeerRecord::is_active)
                        || plan.retired.contains(key)
                    {
                        return Err(Rejection::UnknownPeer(ai));
                    }
                    required.insert(*key);
                    plan.retired.push(*key);
                }
            }
        }

        for (j, output) in body.outputs.iter().enumerate() {
            let oj = j as u32;
            let (class, ..) =
                class_of(&plan, &output.asset).ok_or(Rejection::UnknownAsset(output.asset))?;
            match (class, output.value) {
                (AssetClass::Fungible { .. }, Value::Amount(v)) => {
                    sums.add(output.asset, false, v)?
                }
                (AssetClass::Unique, Value::Item(item)) => {
                    if !items_out.insert((output.asset, item)) {
                        return Err(Rejection::ValueMismatch(output.asset));
                    }
                }
                _ => return Err(Rejection::ClassMismatch(oj)),
            }
            if let Some(host) = &output.host {
                let active = self.peers.get(host).is_some_and(PeerRecord::is_active)
                    && !plan.retired.contains(host);
                let new = plan.registered.iter().any(|(_, k, _)| k == host);
                if !active && !new {
                    return Err(Rejection::UnknownHost(oj));
                }
            }
        }
        if body.fee > 0 {
            // The fee is burned: it leaves the native supply.
            sums.add(AssetId::NATIVE, false, body.fee)?;
            add_supply(&mut plan, AssetId::NATIVE, 0, body.fee)?;
        }
        if let Some((asset, ..)) = sums.0.iter().find(|(_, i, o)| i != o) {
            return Err(Rejection::ValueMismatch(*asset));
        }
        if items_in != items_out {
            let (asset, _) = items_in
                .symmetric_difference(&items_out)
                .next()
                .expect("the sets differ");
            return Err(Rejection::ValueMismatch(*asset));
        }
        if !required.iter().eq(body.signers.iter()) {
            return Err(Rejection::SignersMismatch);
        }
        Ok(plan)
    }
}
