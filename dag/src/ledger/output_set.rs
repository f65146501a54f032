//! Where the ledger keeps the state of every output.
//!
//! Unspent outputs are what the rules read all the time, so they stay in a
//! map in memory. A spent output never changes again and is only read to
//! say why a later spend is refused (or to export a snapshot), so a ledger
//! given a [`SpentStore`] moves each output there when it is spent: memory
//! then holds the live set, not the chain's whole past. Without a store
//! (tests, wallets, benchmarks) spent outputs stay in the map.

use crate::id_map::IdMap;
use crate::ledger::output::{OutputId, OutputState, Spend};
use proofs::{NodeStore, StoreError};
use std::borrow::Cow;

/// Where spent outputs go: output id → its final state.
pub type SpentStore = Box<dyn NodeStore<OutputId, OutputState> + Send + Sync>;

pub(crate) struct OutputSet {
    /// Unspent outputs, and spent ones too when there is no store.
    live: Live,
    spent: Option<SpentStore>,
    /// Outputs in `spent`.
    spent_count: usize,
}

impl OutputSet {
    /// Every output in memory.
    pub(crate) fn in_memory(map: IdMap<OutputId, OutputState>) -> Self {
        OutputSet {
            live: Live::from_map(map),
            spent: None,
            spent_count: 0,
        }
    }

    /// Outputs ever created, spent or not.
    pub(crate) fn len(&self) -> usize {
        self.live.len() + self.spent_count
    }

    /// Outputs held in memory.
    pub(crate) fn in_memory_len(&self) -> usize {
        self.live.len()
    }

    pub(crate) fn has_store(&self) -> bool {
        self.spent.is_some()
    }

    /// The state of `id`: from memory if it is there, else from the store.
    pub(crate) fn get(&self, id: &OutputId) -> Result<Option<Cow<'_, OutputState>>, StoreError> {
        if let Some(st) = self.live.get(id) {
            return Ok(Some(Cow::Borrowed(st)));
        }
        match &self.spent {
            None => Ok(None),
            Some(store) => Ok(store.get(id)?.map(Cow::Owned)),
        }
    }

    pub(crate) fn insert(&mut self, id: OutputId, st: OutputState) {
        self.live.insert(id, st);
    }

    /// Mark the unspent output `id` spent and return its new state. `None`
    /// if `id` is not an unspent output (the caller checked that it is).
    pub(crate) fn spend(
        &mut self,
        id: &OutputId,
        spend: Spend,
    ) -> Result<Option<OutputState>, StoreError> {
        match &mut self.spent {
            None => Ok(self.live.get_mut(id).map(|st| {
                st.spent = Some(spend);
                st.clone()
            })),
            Some(store) => {
                let Some(mut st) = self.live.remove(id) else {
                    return Ok(None);
                };
                st.spent = Some(spend);
                if let Err(e) = store.put(*id, st.clone()) {
                    // Leave the set as it was.
                    st.spent = None;
                    self.live.insert(*id, st);
                    return Err(e);
                }
                self.spent_count += 1;
                Ok(Some(st))
            }
        }
    }

    /// From now on keep spent outputs in `store`, moving the spent ones
    /// held in memory there. The store must not hold outputs of this set
    /// already (the caller gives an empty one).
    pub(crate) fn move_spent_to(&mut self, mut store: SpentStore) -> Result<(), StoreError> {
        if let Some(old) = self.spent.take() {
            // Never the case in this crate's use; keep it correct anyway.
            self.spent = Some(old);
            return Err(StoreError::Backend(
                "spent outputs already have a store".into(),
            ));
        }
        let spent: Vec<OutputId> = self
            .live
            .iter()
            .filter(|(_, st)| st.spent.is_some())
            .map(|(id, _)| *id)
            .collect();
        // Copy first, then drop from memory: a failing store leaves the set
        // as it was.
        for id in &spent {
            if let Some(st) = self.live.get(id) {
                store.put(*id, st.clone())?;
            }
        }
        for id in &spent {
            self.live.remove(id);
        }
        self.live.shrink_to_fit();
        self.spent_count = spent.len();
        self.spent = Some(store);
        Ok(())
    }

    /// Every output held in memory, in no particular order.
    pub(crate) fn iter_memory(&self) -> impl Iterator<Item = (&OutputId, &OutputState)> {
        self.live.iter()
    }
}

/// A map of output states whose states sit in one vector, the map holding
/// indices: growing the map then rehashes 36-byte entries instead of moving
/// every ~250-byte state into a newly allocated table (measured in the
/// peer bench: resizes cost ~5% of the CPU while the set grew), and a
/// spent output's slot is reused by the next output created.
#[derive(Default)]
struct Live {
    index: IdMap<OutputId, u32>,
    slots: Vec<Option<OutputState>>,
    free: Vec<u32>,
}

impl Live {
    fn from_map(map: IdMap<OutputId, OutputState>) -> Self {
        let mut live = Live::default();
        live.index.reserve(map.len());
        live.slots.reserve(map.len());
        for (id, st) in map {
            live.insert(id, st);
        }
        live
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn get(&self, id: &OutputId) -> Option<&OutputState> {
        let i = *self.index.get(id)?;
        self.slots[i as usize].as_ref()
    }

    fn get_mut(&mut self, id: &OutputId) -> Option<&mut OutputState> {
        let i = *self.index.get(id)?;
        self.slots[i as usize].as_mut()
    }

    fn insert(&mut self, id: OutputId, st: OutputState) {
        if let Some(&i) = self.index.get(&id) {
            self.slots[i as usize] = Some(st);
            return;
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(st);
                i
            }
            None => {
                // More than 2^32 outputs in memory would have exhausted
                // memory long before.
                let i = u32::try_from(self.slots.len()).expect("fewer than 2^32 live outputs");
                self.slots.push(Some(st));
                i
            }
        };
        self.index.insert(id, i);
    }

    fn remove(&mut self, id: &OutputId) -> Option<OutputState> {
        let i = self.index.remove(id)?;
        self.free.push(i);
        self.slots[i as usize].take()
    }

    fn iter(&self) -> impl Iterator<Item = (&OutputId, &OutputState)> {
        self.index
            .iter()
            .filter_map(|(id, &i)| self.slots[i as usize].as_ref().map(|st| (id, st)))
    }

    /// Pack the states into a vector just large enough.
    fn shrink_to_fit(&mut self) {
        let mut slots = Vec::with_capacity(self.index.len());
        for i in self.index.values_mut() {
            slots.push(self.slots[*i as usize].take());
            *i = (slots.len() - 1) as u32;
        }
        self.slots = slots;
        self.free = Vec::new();
        self.index.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::PeerKey;
    use crate::ledger::asset::AssetId;
    use crate::ledger::output::{Output, Value};
    use proofs::Hash;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn state(n: u8, amount: u128) -> OutputState {
        OutputState {
            output: Output {
                owner: PeerKey([n; 32]),
                asset: AssetId::NATIVE,
                value: Value::Amount(amount),
                host: None,
            },
            created_by: Hash([n; 32]),
            created_at: amount as u64,
            spent: None,
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u128),
        Remove(u8),
        Mutate(u8, u64),
        Shrink,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..40, 1u128..1000).prop_map(|(k, a)| Op::Insert(k, a)),
            3 => (0u8..40).prop_map(Op::Remove),
            2 => (0u8..40, 0u64..100).prop_map(|(k, h)| Op::Mutate(k, h)),
            1 => Just(Op::Shrink),
        ]
    }

    proptest! {
        /// The slab-backed map behaves as a plain map under any sequence of
        /// inserts (new or replacing), removals, changes in place and
        /// repacking.
        #[test]
        fn live_outputs_behave_as_a_map(ops in proptest::collection::vec(op(), 0..200)) {
            let mut live = Live::default();
            let mut model: HashMap<OutputId, OutputState> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, a) => {
                        live.insert(Hash([k; 32]), state(k, a));
                        model.insert(Hash([k; 32]), state(k, a));
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(live.remove(&Hash([k; 32])), model.remove(&Hash([k; 32])));
                    }
                    Op::Mutate(k, h) => {
                        if let Some(st) = live.get_mut(&Hash([k; 32])) {
                            st.created_at = h;
                        }
                        if let Some(st) = model.get_mut(&Hash([k; 32])) {
                            st.created_at = h;
                        }
                    }
                    Op::Shrink => live.shrink_to_fit(),
                }
                prop_assert_eq!(live.len(), model.len());
                prop_assert_eq!(live.slots.len(), live.len() + live.free.len());
            }
            for k in 0..40u8 {
                prop_assert_eq!(live.get(&Hash([k; 32])), model.get(&Hash([k; 32])));
            }
            let mut all: Vec<_> = live.iter().map(|(id, st)| (*id, st.clone())).collect();
            all.sort_by_key(|(id, _)| *id);
            let mut expected: Vec<_> = model.into_iter().collect();
            expected.sort_by_key(|(id, _)| *id);
            prop_assert_eq!(all, expected);
        }
    }
}
