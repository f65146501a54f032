//! The `proofs` structures' node stores on LMDB.
//!
//! A structure updates its nodes through [`NodeStore`] calls with no
//! transaction in sight, but a height's node updates must reach the disk
//! together with the height's record, or not at all. So [`LmdbNodes`]
//! buffers writes and removals in an in-memory overlay (reads look there
//! first, then in LMDB), and [`Store::commit_height`] writes the overlays
//! of all the height's structures and the height record in one LMDB
//! transaction, emptying the overlays only once it has committed.

use super::{Db, KeyBytes, Store, StoreError};
use heed::{PutFlags, RwTxn};
use proofs::NodeStore;
use rustc_hash::FxHashMap as HashMap;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;
use std::hash::Hash as StdHash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use tracing::warn;

/// The most bytes one node value may take; far above any real node (a
/// tree's stale list of a huge batch is a few MB), it only bounds the work
/// a damaged record can cause.
pub const MAX_NODE_VALUE_BYTES: usize = 1 << 30;
/// Writes between two checks of the mapped file pages inside a write-back
/// transaction: 256 random writes map at most ~16 MB (a page and up to 15
/// neighbours each), and a check costs a read of `/proc/self/statm`.
const RELEASE_CHECK_WRITES: usize = 256;

/// A node database of the store as a [`NodeStore<K, V>`], with writes
/// buffered until the store commits them (see the module docs). Keys are
/// written with [`KeyBytes`], values with [`proofs::encode`]; values read
/// back must be canonical or the read fails as corrupt.
pub struct LmdbNodes<K, V> {
    store: Store,
    name: String,
    db: Db,
    /// Uncommitted writes: `Some` a put, `None` a removal, each with the
    /// epoch it was made in. A lock (not a `RefCell`) because the store
    /// empties it through `&self`, and the structures may read from
    /// several threads.
    pending: RwLock<HashMap<K, Pending<V>>>,
    /// The epoch new writes are tagged with (see [`LmdbNodes::set_epoch`]).
    epoch: AtomicU64,
    /// Whether the owner promises that a key it removes was put at most
    /// once (see [`LmdbNodes::put_once`]).
    put_once: bool,
}

/// A buffered write.
struct Pending<V> {
    value: Option<V>,
    epoch: u64,
}

impl<K, V> std::fmt::Debug for LmdbNodes<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmdbNodes")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<K, V> LmdbNodes<K, V>
where
    K: KeyBytes + Eq + StdHash + Clone,
    V: Serialize + DeserializeOwned + Clone,
{
    pub(super) fn new(store: Store, name: String, db: Db) -> Self {
        LmdbNodes {
            store,
            name,
            db,
            pending: RwLock::new(HashMap::default()),
            epoch: AtomicU64::new(0),
            put_once: false,
        }
    }

    /// The owner promises that every key it ever removes was put at most
    /// once (a versioned tree's pages, roots and stale lists; keys it
    /// rewrites, such as a tree's metadata, it never removes). Removing a
    /// buffered put then drops it without asking LMDB whether an older
    /// value lies under it, which would otherwise cost a read for every
    /// pruned node.
    pub fn put_once(mut self) -> Self {
        self.put_once = true;
        self
    }

    /// Tag the writes from now on with `epoch` (the owner's clock: the
    /// ledger's height), so a commit can take only the older ones
    /// ([`Store::commit_nodes_before`]).
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    fn buffer(&self, pending: &mut HashMap<K, Pending<V>>, key: K, value: Option<V>) {
        let epoch = self.epoch.load(Ordering::Relaxed);
        pending.insert(key, Pending { value, epoch });
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Buffered writes not yet committed.
    pub fn pending_len(&self) -> usize {
        self.pending
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Drop the buffered writes (after a failed commit, say). The structure
    /// that made them must then be reopened from the store, since its
    /// in-memory state still reflects them.
    pub fn discard_pending(&mut self) {
        self.pending_mut().clear();
    }

    fn pending_mut(&mut self) -> &mut HashMap<K, Pending<V>> {
        self.pending
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn db_name(&self) -> String {
        format!("{}{}", super::NODES_PREFIX, self.name)
    }

    /// Call `f` on a node, lent from the overlay if it is there, else read
    /// from the committed state.
    fn visit_checked(&self, key: &K, f: &mut dyn FnMut(Option<&V>)) -> Result<(), StoreError> {
        {
            let pending = self.pending.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(p) = pending.get(key) {
                f(p.value.as_ref());
                return Ok(());
            }
        }
        let value = self.get_committed(key)?;
        f(value.as_ref());
        Ok(())
    }

    /// Read a node: the overlay first, then the committed state.
    pub fn get_checked(&self, key: &K) -> Result<Option<V>, StoreError> {
        if let Some(p) = self
            .pending
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return Ok(p.value.clone());
        }
        self.get_committed(key)
    }

    fn get_committed(&self, key: &K) -> Result<Option<V>, StoreError> {
        let key_bytes = key.key_bytes();
        let (value, len) = self.store.read(|txn| match self.db.get(txn, &key_bytes)? {
            None => Ok((None, 0)),
            Some(bytes) => proofs::decode::<V>(bytes, MAX_NODE_VALUE_BYTES)
                .map(|v| (Some(v), bytes.len()))
                .map_err(|e| {
                    StoreError::corrupt(
                        &self.db_name(),
                        format!("value under key {}: {e}", hex(&key_bytes)),
                    )
                }),
        })?;
        // Outside the transaction: releasing the map needs none open.
        self.store.note_mapped_read(len.max(super::MAP_PAGE_BYTES));
        Ok(value)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl<K, V> NodeStore<K, V> for LmdbNodes<K, V>
where
    K: KeyBytes + Eq + StdHash + Clone,
    V: Serialize + DeserializeOwned + Clone,
{
    fn get(&self, key: &K) -> Result<Option<V>, proofs::StoreError> {
        self.get_checked(key).map_err(backend)
    }

    fn visit(&self, key: &K, f: &mut dyn FnMut(Option<&V>)) -> Result<(), proofs::StoreError> {
        self.visit_checked(key, f).map_err(backend)
    }

    fn put(&mut self, key: K, value: V) -> Result<(), proofs::StoreError> {
        let mut pending = self.pending.write().unwrap_or_else(PoisonError::into_inner);
        self.buffer(&mut pending, key, Some(value));
        Ok(())
    }

    fn remove(&mut self, key: &K) -> Result<(), proofs::StoreError> {
        self.remove_pending(key).map(drop).map_err(backend)
    }

    fn take(&mut self, key: &K) -> Result<Option<V>, proofs::StoreError> {
        self.take_checked(key).map_err(backend)
    }

    fn remove_taking(&mut self, key: &K) -> Result<Option<V>, proofs::StoreError> {
        self.remove_pending(key).map_err(backend)
    }
}

fn backend(e: StoreError) -> proofs::StoreError {
    proofs::StoreError::Backend(e.to_string())
}

impl<K, V> LmdbNodes<K, V>
where
    K: KeyBytes + Eq + StdHash + Clone,
    V: Serialize + DeserializeOwned + Clone,
{
    /// Buffer the removal of `key` and return the buffered value it
    /// replaces, if any. A value written since the last commit and never
    /// committed is simply dropped (a structure that writes a node and
    /// prunes it before the overlay is committed costs the disk nothing);
    /// otherwise a tombstone stops reads at the overlay until the commit
    /// deletes the committed value.
    fn remove_pending(&self, key: &K) -> Result<Option<V>, StoreError> {
        let mut pending = self.pending.write().unwrap_or_else(PoisonError::into_inner);
        match pending.get(key).map(|p| p.value.is_some()) {
            Some(false) => return Ok(None),
            Some(true) => {
                let on_disk = !self.put_once && {
                    let key_bytes = key.key_bytes();
                    self.store
                        .read(|txn| Ok(self.db.get(txn, &key_bytes)?.is_some()))?
                };
                if !on_disk {
                    return Ok(pending.remove(key).and_then(|p| p.value));
                }
            }
            None => {}
        }
        let epoch = self.epoch.load(Ordering::Relaxed);
        let old = pending.insert(key.clone(), Pending { value: None, epoch });
        Ok(old.and_then(|p| p.value))
    }

    /// Remove `key` and return its value, from the overlay or the disk.
    fn take_checked(&self, key: &K) -> Result<Option<V>, StoreError> {
        let buffered = self
            .pending
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(|p| p.value.is_some());
        match buffered {
            Some(false) => Ok(None),
            Some(true) => self.remove_pending(key),
            None => {
                let value = self.get_committed(key)?;
                if value.is_some() {
                    self.remove_pending(key)?;
                }
                Ok(value)
            }
        }
    }
}

/// One [`LmdbNodes`] shared by a structure that writes through it and the
/// event loop that commits its writes (the structure lives inside the
/// ledger, out of the loop's reach). Writes go to the shared overlay.
pub struct SharedNodes<K, V>(Arc<LmdbNodes<K, V>>);

impl<K, V> Clone for SharedNodes<K, V> {
    fn clone(&self) -> Self {
        SharedNodes(self.0.clone())
    }
}

impl<K, V> SharedNodes<K, V> {
    pub fn new(nodes: LmdbNodes<K, V>) -> Self {
        SharedNodes(Arc::new(nodes))
    }

    /// What [`Store::commit_nodes`] takes.
    pub fn pending(&self) -> &LmdbNodes<K, V> {
        &self.0
    }
}

impl<K, V> NodeStore<K, V> for SharedNodes<K, V>
where
    K: KeyBytes + Eq + StdHash + Clone,
    V: Serialize + DeserializeOwned + Clone,
{
    fn get(&self, key: &K) -> Result<Option<V>, proofs::StoreError> {
        self.0.get(key)
    }

    fn visit(&self, key: &K, f: &mut dyn FnMut(Option<&V>)) -> Result<(), proofs::StoreError> {
        self.0.visit(key, f)
    }

    fn put(&mut self, key: K, value: V) -> Result<(), proofs::StoreError> {
        let mut pending = self
            .0
            .pending
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.0.buffer(&mut pending, key, Some(value));
        Ok(())
    }

    fn remove(&mut self, key: &K) -> Result<(), proofs::StoreError> {
        self.0.remove_pending(key).map(drop).map_err(backend)
    }

    fn take(&mut self, key: &K) -> Result<Option<V>, proofs::StoreError> {
        self.0.take_checked(key).map_err(backend)
    }

    fn remove_taking(&mut self, key: &K) -> Result<Option<V>, proofs::StoreError> {
        self.0.remove_pending(key).map_err(backend)
    }
}

impl<K, V> Drop for LmdbNodes<K, V> {
    fn drop(&mut self) {
        let n = self.pending.get_mut().map_or(0, |p| p.len());
        if n > 0 {
            warn!(
                nodes = %self.name,
                writes = n,
                "node store dropped with uncommitted writes"
            );
        }
        self.store.release_nodes(&self.name);
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Node stores whose buffered writes [`Store::commit_height`] and
/// [`Store::commit_nodes`] can commit: the [`LmdbNodes`] of any key and
/// value types, as trait objects so one commit takes several structures.
pub trait PendingNodes: sealed::Sealed {
    /// The store the database belongs to, and its name.
    #[doc(hidden)]
    fn owner(&self) -> (&Store, &str);
    /// Write the pending writes made before epoch `before` in `txn`,
    /// sorted by key (LMDB writes sorted keys into fewer, fuller pages),
    /// each value encoded as it is written: a large write-back never
    /// exists twice in memory.
    #[doc(hidden)]
    fn write_pending(&self, txn: &mut RwTxn, before: u64) -> Result<(), StoreError>;
    /// Forget the pending writes made before epoch `before` (once written).
    #[doc(hidden)]
    fn clear_pending(&self, before: u64);
    /// Whether any write waits for a commit.
    fn has_pending(&self) -> bool;
    /// How many writes wait for a commit.
    fn pending_count(&self) -> usize;
    /// Add the number of pending writes of each epoch to `counts`.
    fn count_by_epoch(&self, counts: &mut BTreeMap<u64, usize>);
}

impl<K, V> sealed::Sealed for LmdbNodes<K, V> {}

impl<K, V> PendingNodes for LmdbNodes<K, V>
where
    K: KeyBytes + Eq + StdHash + Clone,
    V: Serialize + DeserializeOwned + Clone,
{
    fn owner(&self) -> (&Store, &str) {
        (&self.store, &self.name)
    }

    fn write_pending(&self, txn: &mut RwTxn, before: u64) -> Result<(), StoreError> {
        let pending = self.pending.read().unwrap_or_else(PoisonError::into_inner);
        let mut writes: Vec<(Vec<u8>, Option<&V>)> = pending
            .iter()
            .filter(|(_, p)| p.epoch < before)
            .map(|(k, p)| (k.key_bytes(), p.value.as_ref()))
            .collect();
        writes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Each write reads its leaf page through the map: keep what that
        // maps within the budget as the transaction goes.
        let mut since_release = 0usize;
        let mut pace = |txn: &mut RwTxn| {
            since_release += 1;
            if since_release >= RELEASE_CHECK_WRITES {
                since_release = 0;
                self.store.release_in_write_txn(txn);
            }
        };
        for (k, _) in writes.iter().filter(|(_, v)| v.is_none()) {
            self.db.delete(txn, k)?;
            pace(txn);
        }
        // Keys sorting after every stored one (the history's positions, a
        // fresh database) are appended: LMDB then fills pages in order
        // instead of searching and splitting.
        let first = writes.iter().find(|(_, v)| v.is_some()).map(|(k, _)| k);
        let append = match (self.db.last(txn)?, first) {
            (Some((last, _)), Some(first)) => first.as_slice() > last,
            _ => true,
        };
        for (k, v) in &writes {
            let Some(v) = v else { continue };
            let bytes = proofs::encode(*v);
            if append {
                self.db.put_with_flags(txn, PutFlags::APPEND, k, &bytes)?;
            } else {
                self.db.put(txn, k, &bytes)?;
            }
            pace(txn);
        }
        Ok(())
    }

    fn clear_pending(&self, before: u64) {
        let mut pending = self.pending.write().unwrap_or_else(PoisonError::into_inner);
        if before == u64::MAX {
            pending.clear();
        } else {
            pending.retain(|_, p| p.epoch >= before);
        }
    }

    fn has_pending(&self) -> bool {
        self.pending_len() > 0
    }

    fn pending_count(&self) -> usize {
        self.pending_len()
    }

    fn count_by_epoch(&self, counts: &mut BTreeMap<u64, usize>) {
        let pending = self.pending.read().unwrap_or_else(PoisonError::into_inner);
        for p in pending.values() {
            *counts.entry(p.epoch).or_default() += 1;
        }
    }
}
