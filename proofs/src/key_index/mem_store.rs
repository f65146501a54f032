//! The key index's store in memory, one record per index key.
//!
//! The index keeps, per key, its list's Merkle nodes, its entries and its
//! sizes by version. As plain [`MemStore`](crate::MemStore) entries that is
//! three or more map entries per key (for the per-output keys wallets use,
//! nearly every key has one entry), each a separate hash-table insert and
//! cache miss. Here a key is one record that holds all three, inline while
//! they have one element: a new key costs one insert into a table a third
//! the size, and nothing else on the heap.

use super::{Entry, IndexKey, IndexValue};
use crate::hash::Hash;
use crate::store::{NodeStore, StoreError};
use smallvec::SmallVec;
use std::collections::HashMap;

#[derive(Clone, Debug, Default)]
struct KeyRecord {
    /// List nodes by MMR position.
    nodes: SmallVec<[Option<Hash>; 1]>,
    /// Entries by list index.
    entries: SmallVec<[Option<Entry>; 1]>,
    sizes: Option<SmallVec<[(u64, u64); 1]>>,
}

impl KeyRecord {
    fn is_empty(&self) -> bool {
        self.sizes.is_none()
            && self.nodes.iter().all(Option::is_none)
            && self.entries.iter().all(Option::is_none)
    }
}

/// Where slot `at` of a list of `len` slots is: an existing slot or the
/// next one. Lists grow one position at a time, so a gap is refused.
fn slot_index(len: usize, at: u64) -> Result<usize, StoreError> {
    usize::try_from(at)
        .ok()
        .filter(|&a| a <= len)
        .ok_or_else(|| StoreError::Backend(format!("index slot {at} beyond the end")))
}

/// Set slot `at` (checked with [`slot_index`]) of `v`.
fn set<T>(v: &mut SmallVec<[Option<T>; 1]>, at: usize, value: T) {
    if at == v.len() {
        v.push(Some(value));
    } else if let Some(s) = v.get_mut(at) {
        *s = Some(value);
    }
}

/// The key index's store in memory (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct IndexMemStore {
    /// SipHash with a random key: index keys are owner keys, which anyone
    /// can grind to collide in a fixed hash of their bytes.
    keys: HashMap<Hash, KeyRecord>,
    last_height: Option<u64>,
}

impl IndexMemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store with room for `keys` index keys.
    pub fn with_capacity(keys: usize) -> Self {
        IndexMemStore {
            keys: HashMap::with_capacity(keys),
            last_height: None,
        }
    }

    /// Index keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.last_height.is_none()
    }
}

fn wrong_kind(key: &IndexKey) -> StoreError {
    StoreError::Backend(format!("value of the wrong kind for {key:?}"))
}

impl NodeStore<IndexKey, IndexValue> for IndexMemStore {
    fn get(&self, key: &IndexKey) -> Result<Option<IndexValue>, StoreError> {
        let rec = |k: &Hash| self.keys.get(k);
        let at = |i: &u64| usize::try_from(*i).unwrap_or(usize::MAX);
        Ok(match key {
            IndexKey::ListNode(k, pos) => rec(k)
                .and_then(|r| r.nodes.get(at(pos)).copied().flatten())
                .map(IndexValue::Node),
            IndexKey::Entry(k, i) => rec(k)
                .and_then(|r| r.entries.get(at(i)).copied().flatten())
                .map(IndexValue::Entry),
            IndexKey::Sizes(k) => rec(k)
                .and_then(|r| r.sizes.as_ref())
                .map(|s| IndexValue::Sizes(s.to_vec())),
            IndexKey::LastHeight => self.last_height.map(IndexValue::Height),
        })
    }

    fn put(&mut self, key: IndexKey, value: IndexValue) -> Result<(), StoreError> {
        match (&key, value) {
            (IndexKey::ListNode(k, pos), IndexValue::Node(h)) => {
                let at = slot_index(self.keys.get(k).map_or(0, |r| r.nodes.len()), *pos)?;
                set(&mut self.keys.entry(*k).or_default().nodes, at, h);
            }
            (IndexKey::Entry(k, i), IndexValue::Entry(e)) => {
                let at = slot_index(self.keys.get(k).map_or(0, |r| r.entries.len()), *i)?;
                set(&mut self.keys.entry(*k).or_default().entries, at, e);
            }
            (IndexKey::Sizes(k), IndexValue::Sizes(s)) => {
                self.keys.entry(*k).or_default().sizes = Some(SmallVec::from_vec(s));
            }
            (IndexKey::LastHeight, IndexValue::Height(h)) => self.last_height = Some(h),
            _ => return Err(wrong_kind(&key)),
        }
        Ok(())
    }

    fn remove(&mut self, key: &IndexKey) -> Result<(), StoreError> {
        let k = match key {
            IndexKey::LastHeight => {
                self.last_height = None;
                return Ok(());
            }
            IndexKey::ListNode(k, _) | IndexKey::Entry(k, _) | IndexKey::Sizes(k) => k,
        };
        let Some(rec) = self.keys.get_mut(k) else {
            return Ok(());
        };
        let at = |i: &u64| usize::try_from(*i).unwrap_or(usize::MAX);
        match key {
            IndexKey::ListNode(_, pos) => {
                if let Some(s) = rec.nodes.get_mut(at(pos)) {
                    *s = None;
                }
            }
            IndexKey::Entry(_, i) => {
                if let Some(s) = rec.entries.get_mut(at(i)) {
                    *s = None;
                }
            }
            _ => rec.sizes = None,
        }
        if rec.is_empty() {
            self.keys.remove(k);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemStore;
    use proptest::prelude::*;

    fn key(i: u8) -> Hash {
        Hash([i; 32])
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put(IndexKey, IndexValue),
        Remove(IndexKey),
    }

    fn index_key() -> impl Strategy<Value = IndexKey> {
        prop_oneof![
            (0u8..3, 0u64..4).prop_map(|(k, p)| IndexKey::ListNode(key(k), p)),
            (0u8..3, 0u64..4).prop_map(|(k, i)| IndexKey::Entry(key(k), i)),
            (0u8..3).prop_map(|k| IndexKey::Sizes(key(k))),
            Just(IndexKey::LastHeight),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (index_key(), any::<u64>()).prop_map(|(k, x)| {
                let v = match &k {
                    IndexKey::ListNode(..) => IndexValue::Node(Hash([x as u8; 32])),
                    IndexKey::Entry(..) => IndexValue::Entry(Entry { height: x, output: key(x as u8) }),
                    IndexKey::Sizes(_) => IndexValue::Sizes(vec![(x, x / 2); (x % 3) as usize]),
                    IndexKey::LastHeight => IndexValue::Height(x),
                };
                Op::Put(k, v)
            }),
            1 => index_key().prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Whatever the store accepts, it reads back as a plain map would;
        /// what it refuses (a gap in a list) the map is not given either.
        #[test]
        fn reads_like_a_plain_map(ops in proptest::collection::vec(op(), 0..60)) {
            let mut store = IndexMemStore::new();
            let mut model: MemStore<IndexKey, IndexValue> = MemStore::new();
            for op in &ops {
                match op.clone() {
                    Op::Put(k, v) => {
                        if store.put(k.clone(), v.clone()).is_ok() {
                            model.put(k, v).unwrap();
                        }
                    }
                    Op::Remove(k) => {
                        store.remove(&k).unwrap();
                        model.remove(&k).unwrap();
                    }
                }
                for k in 0..3 {
                    for p in 0..5 {
                        for ik in [IndexKey::ListNode(key(k), p), IndexKey::Entry(key(k), p)] {
                            prop_assert_eq!(store.get(&ik).unwrap(), model.get(&ik).unwrap());
                        }
                    }
                    let s = IndexKey::Sizes(key(k));
                    prop_assert_eq!(store.get(&s).unwrap(), model.get(&s).unwrap());
                }
                let l = IndexKey::LastHeight;
                prop_assert_eq!(store.get(&l).unwrap(), model.get(&l).unwrap());
            }
        }
    }

    #[test]
    fn a_value_of_the_wrong_kind_is_refused() {
        let mut s = IndexMemStore::new();
        assert!(s
            .put(IndexKey::Sizes(key(1)), IndexValue::Height(3))
            .is_err());
        assert!(s
            .put(
                IndexKey::Entry(key(1), 5),
                IndexValue::Entry(Entry {
                    height: 1,
                    output: key(2)
                })
            )
            .is_err());
        assert!(s.is_empty());
    }
}
