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
    live: IdMap<OutputId, OutputState>,
    spent: Option<SpentStore>,
    /// Outputs in `spent`.
    spent_count: usize,
}

impl OutputSet {
    /// Every output in memory.
    pub(crate) fn in_memory(map: IdMap<OutputId, OutputState>) -> Self {
        OutputSet {
            live: map,
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
