//! One store type for an index whose lists may live in memory or in a
//! backend chosen at run time (see [`crate::smt::AnyTree`] for its tree).

use super::{IndexKey, IndexMemStore, IndexValue};
use crate::store::{NodeStore, StoreError};

/// The index's lists in memory ([`IndexMemStore`]) or in a store `S`.
#[derive(Debug)]
pub enum AnyIndexStore<S> {
    Memory(IndexMemStore),
    Stored(S),
}

impl<S> Default for AnyIndexStore<S> {
    fn default() -> Self {
        AnyIndexStore::Memory(IndexMemStore::default())
    }
}

impl<S: NodeStore<IndexKey, IndexValue>> NodeStore<IndexKey, IndexValue> for AnyIndexStore<S> {
    fn get(&self, key: &IndexKey) -> Result<Option<IndexValue>, StoreError> {
        match self {
            AnyIndexStore::Memory(s) => s.get(key),
            AnyIndexStore::Stored(s) => s.get(key),
        }
    }

    fn put(&mut self, key: IndexKey, value: IndexValue) -> Result<(), StoreError> {
        match self {
            AnyIndexStore::Memory(s) => s.put(key, value),
            AnyIndexStore::Stored(s) => s.put(key, value),
        }
    }

    fn remove(&mut self, key: &IndexKey) -> Result<(), StoreError> {
        match self {
            AnyIndexStore::Memory(s) => s.remove(key),
            AnyIndexStore::Stored(s) => s.remove(key),
        }
    }
}
