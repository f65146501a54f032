//! Where Merkle nodes live. The peer keeps them in LMDB; tests and wallets
//! keep them in memory. Structures in this crate only ever talk to this trait.

use std::collections::HashMap;
use std::hash::Hash as StdHash;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The backend failed (disk, map full, …); the message says how.
    #[error("node storage failed: {0}")]
    Backend(String),
    /// A node the structure needs is not stored: the store is corrupt or was
    /// pruned past what the caller asked for.
    #[error("node missing from storage: {0}")]
    Missing(String),
}

/// A key-value store of nodes. Writes of one update are applied in order;
/// a backend that needs atomicity wraps a whole update in its own
/// transaction around these calls.
pub trait NodeStore<K, V> {
    fn get(&self, key: &K) -> Result<Option<V>, StoreError>;
    fn put(&mut self, key: K, value: V) -> Result<(), StoreError>;
    fn remove(&mut self, key: &K) -> Result<(), StoreError>;

    /// Run `f` on the value under `key` and return what it returns.
    ///
    /// A store that can lend its values (an in-memory map) overrides this to
    /// skip the copy [`NodeStore::get`] makes; a store that can only hand out
    /// owned or decoded values keeps the default, which reads with `get`.
    fn get_with<R>(&self, key: &K, f: impl FnOnce(Option<&V>) -> R) -> Result<R, StoreError>
    where
        Self: Sized,
    {
        let value = self.get(key)?;
        Ok(f(value.as_ref()))
    }

    /// Call `f` once with the value under `key`, lent if the store can lend
    /// it: [`NodeStore::get_with`] for a store behind a trait object (a
    /// boxed store forwards `get_with` here). The default reads with `get`.
    fn visit(&self, key: &K, f: &mut dyn FnMut(Option<&V>)) -> Result<(), StoreError> {
        let value = self.get(key)?;
        f(value.as_ref());
        Ok(())
    }

    /// Remove the value under `key` and return it (`None` if there was none).
    ///
    /// The default reads with `get` and then removes; an in-memory map
    /// overrides it to move the value out without copying it.
    fn take(&mut self, key: &K) -> Result<Option<V>, StoreError> {
        let value = self.get(key)?;
        if value.is_some() {
            self.remove(key)?;
        }
        Ok(value)
    }

    /// Remove the value under `key`, handing it to `recycle` if the store
    /// holds it as a `V` it can give up for free, so the caller can reuse
    /// its allocations. The default removes without calling `recycle`: a
    /// store that would have to read and decode the value to hand it over
    /// gains nothing from doing so.
    fn remove_recycling(&mut self, key: &K, recycle: impl FnOnce(V)) -> Result<(), StoreError>
    where
        Self: Sized,
    {
        if let Some(value) = self.remove_taking(key)? {
            recycle(value);
        }
        Ok(())
    }

    /// Remove the value under `key`, and return it only if the store held
    /// it as a `V` it gives up for free (the object-safe form of
    /// [`NodeStore::remove_recycling`]). The default removes and returns
    /// `None`.
    fn remove_taking(&mut self, key: &K) -> Result<Option<V>, StoreError> {
        self.remove(key)?;
        Ok(None)
    }
}

/// A boxed store is a store, so a structure can hold a store chosen at run
/// time (memory in tests and wallets, LMDB in the peer).
impl<K, V> NodeStore<K, V> for Box<dyn NodeStore<K, V> + Send + Sync> {
    fn get(&self, key: &K) -> Result<Option<V>, StoreError> {
        (**self).get(key)
    }

    fn put(&mut self, key: K, value: V) -> Result<(), StoreError> {
        (**self).put(key, value)
    }

    fn remove(&mut self, key: &K) -> Result<(), StoreError> {
        (**self).remove(key)
    }

    fn take(&mut self, key: &K) -> Result<Option<V>, StoreError> {
        (**self).take(key)
    }

    fn remove_taking(&mut self, key: &K) -> Result<Option<V>, StoreError> {
        (**self).remove_taking(key)
    }

    fn visit(&self, key: &K, f: &mut dyn FnMut(Option<&V>)) -> Result<(), StoreError> {
        (**self).visit(key, f)
    }

    fn get_with<R>(&self, key: &K, f: impl FnOnce(Option<&V>) -> R) -> Result<R, StoreError> {
        let mut f = Some(f);
        let mut out = None;
        (**self).visit(key, &mut |v| {
            if let Some(f) = f.take() {
                out = Some(f(v));
            }
        })?;
        out.ok_or_else(|| StoreError::Backend("the store never lent the value".into()))
    }
}

/// The in-memory store.
#[derive(Debug, Clone)]
pub struct MemStore<K, V> {
    map: HashMap<K, V>,
}

impl<K, V> Default for MemStore<K, V> {
    fn default() -> Self {
        MemStore {
            map: HashMap::new(),
        }
    }
}

impl<K: StdHash + Eq, V> MemStore<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store with room for `n` entries: a bulk load (a restore) then
    /// never rehashes the entries it already wrote.
    pub fn with_capacity(n: usize) -> Self {
        MemStore {
            map: HashMap::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }
}

impl<K: StdHash + Eq, V: Clone> NodeStore<K, V> for MemStore<K, V> {
    fn get(&self, key: &K) -> Result<Option<V>, StoreError> {
        Ok(self.map.get(key).cloned())
    }

    fn put(&mut self, key: K, value: V) -> Result<(), StoreError> {
        self.map.insert(key, value);
        Ok(())
    }

    fn remove(&mut self, key: &K) -> Result<(), StoreError> {
        self.map.remove(key);
        Ok(())
    }

    fn get_with<R>(&self, key: &K, f: impl FnOnce(Option<&V>) -> R) -> Result<R, StoreError> {
        Ok(f(self.map.get(key)))
    }

    fn visit(&self, key: &K, f: &mut dyn FnMut(Option<&V>)) -> Result<(), StoreError> {
        f(self.map.get(key));
        Ok(())
    }

    fn take(&mut self, key: &K) -> Result<Option<V>, StoreError> {
        Ok(self.map.remove(key))
    }

    fn remove_taking(&mut self, key: &K) -> Result<Option<V>, StoreError> {
        Ok(self.map.remove(key))
    }
}

/// Runs independent jobs, perhaps at the same time, and returns when all
/// are done. This crate never starts threads: a driver that wants a batch
/// spread over its cores passes an executor (scoped threads, a pool), and
/// the results are the same whichever way the jobs run.
pub trait Executor: Send + Sync {
    fn run_all<'a>(&self, jobs: Vec<Box<dyn FnOnce() + Send + 'a>>);
}

/// The plain executor: each job on its own scoped thread, all joined
/// before `run_all` returns. Only a caller that chooses it starts threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScopedThreads;

impl Executor for ScopedThreads {
    fn run_all<'a>(&self, jobs: Vec<Box<dyn FnOnce() + Send + 'a>>) {
        std::thread::scope(|s| {
            for job in jobs {
                s.spawn(job);
            }
        });
    }
}

impl std::fmt::Debug for dyn Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Executor")
    }
}
