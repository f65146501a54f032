//! The peer's storage: one LMDB environment (through heed) in a directory,
//! holding the peer's own signed events, the DAG's events, the committed
//! heights the ledger replays on restart, a small meta map, and the Merkle
//! nodes of the ledger's trees ([`LmdbNodes`]). One writer at a time, any
//! number of readers; every write is one LMDB transaction, synced to disk
//! before the call returns, so what a call reported as written survives
//! `kill -9` and power loss, and a crash mid-write leaves the previous
//! state. Byte layouts and guarantees are in `specs/storage.md`.

mod keys;
mod ledger_nodes;
mod nodes;
#[cfg(test)]
mod tests;

pub use keys::{be_u64, read_be_u64, KeyBytes};
pub use ledger_nodes::LedgerNodes;
pub use nodes::{LmdbNodes, PendingNodes, SharedNodes};

use dag::PeerKey;
use heed::types::{Bytes, DecodeIgnore};
use heed::{Database, Env, EnvFlags, EnvOpenOptions, MdbError, RoTxn, RwTxn, WithoutTls};
use proofs::Hash;
use std::collections::HashSet;
use std::fs::{File, TryLockError};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use thiserror::Error;
use tracing::{debug, info, warn};

/// The layout version this build reads and writes; a store of another
/// version is refused rather than misread.
pub const SCHEMA_VERSION: u32 = 2;

/// Map sizes are rounded to this: a multiple of every page size LMDB meets
/// (4, 16 and 64 KiB), which LMDB requires of a map size.
pub const MAP_GRANULE: usize = 64 << 10;

/// Databases one environment may hold: the five fixed ones and the node
/// databases of the ledger's structures.
const MAX_DBS: u32 = 64;

/// Names of the fixed databases (see `specs/storage.md`).
pub const DB_META: &str = "meta";
pub const DB_OWN_EVENTS: &str = "own_events";
pub const DB_EVENTS: &str = "events";
pub const DB_EVENT_INDEX: &str = "event_index";
pub const DB_HEIGHTS: &str = "heights";
pub const DB_SNAPSHOTS: &str = "snapshots";
/// Node databases are named `nodes/<name>`.
pub const NODES_PREFIX: &str = "nodes/";

/// Meta keys under this prefix belong to the store itself.
pub const RESERVED_META_PREFIX: &[u8] = b"store/";
const META_SCHEMA: &[u8] = b"store/schema";
const META_CHAIN: &[u8] = b"store/chain";
const META_OWN_PROGRESS: &[u8] = b"store/own-progress";
/// The height a snapshot from another peer was installed at: the heights
/// table continues from there.
const META_HEIGHTS_BASE: &[u8] = b"store/heights-base";
/// Certified hand-overs: `store/handover/` + snapshot round (8 bytes BE).
const META_HANDOVER_PREFIX: &[u8] = b"store/handover/";
/// Wallet login names of this peer: `name` → the login key (32 bytes).
const META_NAME_PREFIX: &[u8] = b"store/name/";
/// Receive keys a wallet left for payers: `name` → postcard list.
const META_RECEIVE_PREFIX: &[u8] = b"store/receive/";
/// Snapshots kept: the newest and the one before (in case the newest's
/// certificate never completes).
const SNAPSHOTS_KEPT: usize = 2;
const META_NODES_PREFIX: &str = "store/nodes/";

/// The file whose exclusive lock marks the directory as in use.
const LOCK_FILE: &str = "peer.lock";

type Db = Database<Bytes, Bytes>;

/// Why a storage operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("store directory {0} is in use by another process")]
    Locked(PathBuf),
    #[error("LMDB: {0}")]
    Lmdb(#[from] heed::Error),
    #[error("the store is full: its map is at the configured maximum of {max} bytes")]
    MapFull { max: usize },
    #[error("the store belongs to chain {found}, not to chain {expected}")]
    WrongChain { expected: Hash, found: Hash },
    #[error("the store has schema version {found}; this build reads version {expected}")]
    WrongSchema { expected: u32, found: u32 },
    #[error("corrupt record in database `{db}`: {what}")]
    Corrupt { db: String, what: String },
    #[error("height {got} cannot be committed: the next height is {expected}")]
    HeightNotNext { expected: u64, got: u64 },
    #[error(
        "refusing a second own event for round {round}: the last own event is at round {last}"
    )]
    OwnRoundTaken { round: u64, last: u64 },
    #[error("event {id} is stored at round {stored}, not at round {given}")]
    EventRoundMismatch { id: Hash, stored: u64, given: u64 },
    #[error("meta key {0:?} is reserved for the store itself")]
    ReservedMetaKey(String),
    #[error("node database name {0:?} is invalid (1 to 64 characters of a-z 0-9 _ - /)")]
    BadNodesName(String),
    #[error("node database `{name}` holds {found} nodes, not {expected}")]
    WrongNodeKind {
        name: String,
        expected: &'static str,
        found: String,
    },
    #[error("node database `{0}` is already open")]
    NodesInUse(String),
    #[error("node database `{0}` belongs to another store")]
    ForeignNodes(String),
}

impl StoreError {
    fn corrupt(db: &str, what: impl Into<String>) -> Self {
        StoreError::Corrupt {
            db: db.to_string(),
            what: what.into(),
        }
    }

    fn is_map_full(&self) -> bool {
        matches!(self, StoreError::Lmdb(heed::Error::Mdb(MdbError::MapFull)))
    }
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The chain this store holds; a store of another chain is refused.
    pub chain_id: Hash,
    /// The initial map size in bytes (rounded up to [`MAP_GRANULE`]). The
    /// map is the most the data file may grow to before the store grows it.
    pub map_size: usize,
    /// The map is doubled when full, up to this (rounded up to
    /// [`MAP_GRANULE`], and at least `map_size`). An existing store opens
    /// with a map of twice its data file, within this maximum.
    pub max_map_size: usize,
    /// A store whose contents need not survive a crash (a cache rebuilt at
    /// every start): commits are not synced to disk, LMDB writes into its
    /// map directly instead of copying pages through `write`, and the
    /// kernel reads no further ahead than the page asked for. A crash may
    /// leave it corrupt; its owner empties it before use.
    pub volatile: bool,
}

impl StoreConfig {
    /// `map_size` initially, growing up to 1 TiB (1 GiB on 32-bit targets,
    /// whose address space cannot map more).
    pub fn new(chain_id: Hash, map_size: usize) -> Self {
        let max = usize::try_from(1u64 << 40).unwrap_or(1 << 30);
        StoreConfig {
            chain_id,
            map_size,
            max_map_size: max.max(map_size),
            volatile: false,
        }
    }

    /// See [`StoreConfig::volatile`].
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    pub fn max_map_size(mut self, max: usize) -> Self {
        self.max_map_size = max;
        self
    }
}

/// The environment and the locks around it that make map growth safe.
struct EnvHandle {
    env: Env<WithoutTls>,
    /// LMDB allows one write transaction at a time; this orders them and
    /// lets a writer grow the map between attempts.
    writer: Mutex<()>,
    /// Every transaction of this process is opened under the read side;
    /// growing the map takes the write side, because LMDB may only change
    /// the map size while no transaction is active in the process.
    resize: RwLock<()>,
    max_map_size: usize,
}

impl EnvHandle {
    fn read<T>(&self, f: impl FnOnce(&RoTxn) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let _guard = self.resize.read().unwrap_or_else(PoisonError::into_inner);
        let txn = self.env.read_txn()?;
        f(&txn)
    }

    /// Run `f` in a write transaction and commit it (LMDB syncs the data
    /// file on commit). If the map fills up, the transaction is dropped
    /// (aborted: nothing of it was written), the map grown and `f` run
    /// again, so `f` must be repeatable.
    fn write<T>(
        &self,
        mut f: impl FnMut(&mut RwTxn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let attempt = {
                let _guard = self.resize.read().unwrap_or_else(PoisonError::into_inner);
                let mut txn = self.env.write_txn()?;
                match f(&mut txn) {
                    Ok(v) => txn.commit().map(|()| v).map_err(StoreError::from),
                    Err(e) => Err(e),
                }
            };
            match attempt {
                Err(e) if e.is_map_full() => self.grow()?,
                other => return other,
            }
        }
    }

    /// Double the map, up to the maximum.
    fn grow(&self) -> Result<(), StoreError> {
        let _guard = self.resize.write().unwrap_or_else(PoisonError::into_inner);
        let current = self.env.info().map_size;
        if current >= self.max_map_size {
            warn!(
                map_size = current,
                "store map full at its configured maximum"
            );
            return Err(StoreError::MapFull {
                max: self.max_map_size,
            });
        }
        let target = round_up(current.saturating_mul(2)).min(self.max_map_size);
        // SAFETY: every transaction of this process is opened through this
        // handle under `resize`'s read side, and we hold its write side, so
        // none is active; heed refuses a second `Env` on the same path in
        // this process, and the directory lock keeps other processes out.
        unsafe { self.env.resize(target)? };
        info!(from = current, to = target, "store map grown");
        Ok(())
    }
}

fn round_up(n: usize) -> usize {
    n.div_ceil(MAP_GRANULE).saturating_mul(MAP_GRANULE)
}

/// Bytes of the map touched by node reads (a read counts its value's
/// size, and at least a page) after which the process's mapped file pages
/// are measured, and the map released if they exceed
/// [`MAPPED_BUDGET`]. Counting alone cannot bound them: on a read fault
/// the kernel also maps the neighbouring pages already cached ("fault
/// around", 64 KiB by default), so a random read maps up to 16 pages.
pub const CHECK_AFTER_READ_BYTES: usize = 4 << 20;
/// LMDB's page size on the systems we run on.
pub(crate) const MAP_PAGE_BYTES: usize = 4096;
/// Entries deleted per transaction when the event log is pruned. Finding
/// an event whose value sits in overflow pages touches its first page, and
/// the kernel maps up to 15 neighbours with it: 256 events map at most
/// ~16 MB before the next release check (1,024 still let the 10-minute
/// run's high-water mark step up ~50 MB at each prune).
const PRUNE_CHUNK: usize = 256;

/// File pages (LMDB's maps, and the program's own) mapped into the process
/// above which a store releases its map (see [`Store::note_mapped_read`]);
/// the daemon checks the same budget between inputs.
pub const MAPPED_BUDGET: usize = 48 << 20;

/// Bytes of file pages mapped into this process (resident, shared:
/// `/proc/self/statm`'s third field).
pub fn file_pages_mapped() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(2)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(usize::try_from(page).ok()?))
}

/// Start and end addresses of a mapping.
type AddrRange = (usize, usize);

struct Inner {
    handle: EnvHandle,
    dir: PathBuf,
    chain_id: Hash,
    meta: Db,
    own_events: Db,
    events: Db,
    event_index: Db,
    heights: Db,
    snapshots: Db,
    /// Node databases with a live [`LmdbNodes`]: two overlays over one
    /// database would overwrite each other's writes.
    open_nodes: Mutex<HashSet<String>>,
    /// Node bytes read through the map since its pages were last released
    /// (see [`Store::note_mapped_read`]).
    read_since_release: AtomicUsize,
    /// The data file's mapping as last found, with the map size then.
    mapping: Mutex<Option<(usize, Vec<AddrRange>)>>,
    /// Held (locked) for as long as the store is open.
    _lock: File,
}

/// The peer's LMDB store. Cheap to clone; all clones share one environment,
/// which closes when the last clone (and the last [`LmdbNodes`]) is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("chain_id", &self.inner.chain_id)
            .finish()
    }
}

/// Fixed-width big-endian keys: LMDB compares keys as bytes, so only these
/// sort numerically (postcard varints do not; see [`keys`]).
fn event_key(round: u64, id: &Hash) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&be_u64(round));
    k[8..].copy_from_slice(&id.0);
    k
}

fn parse_event_key(bytes: &[u8]) -> Result<(u64, Hash), StoreError> {
    if bytes.len() != 40 {
        return Err(StoreError::corrupt(
            DB_EVENTS,
            format!("key of {} bytes, not 40", bytes.len()),
        ));
    }
    let (round, id) = bytes.split_at(8);
    let round = read_be_u64(round).ok_or_else(|| StoreError::corrupt(DB_EVENTS, "bad key"))?;
    let id = Hash(
        id.try_into()
            .map_err(|_| StoreError::corrupt(DB_EVENTS, "bad key"))?,
    );
    Ok((round, id))
}

/// A key of the `own_events` or `heights` database: 8 bytes big-endian.
fn parse_u64_key(db: &str, bytes: &[u8]) -> Result<u64, StoreError> {
    read_be_u64(bytes)
        .ok_or_else(|| StoreError::corrupt(db, format!("key of {} bytes, not 8", bytes.len())))
}

/// The next height the heights table takes: one past the last stored, or
/// past the installed snapshot's height if that is higher.
fn next_height(txn: &RoTxn, heights: Db, meta: Db) -> Result<u64, StoreError> {
    let last = match heights.last(txn)? {
        Some((k, _)) => parse_u64_key(DB_HEIGHTS, k)?,
        None => 0,
    };
    let base = match meta.get(txn, META_HEIGHTS_BASE)? {
        Some(b) => parse_u64_key(DB_META, b)?,
        None => 0,
    };
    Ok(last.max(base) + 1)
}

fn snapshot_key(height: u64, part: u8) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&be_u64(height));
    k[8] = part;
    k
}
/// A snapshot's total length (u64 BE): written last, it marks the pieces
/// complete.
const SNAPSHOT_DATA: u8 = b'd';
const SNAPSHOT_CERT: u8 = b'c';
/// A piece of a snapshot's bytes, keyed (height, `p`, index u32 BE).
const SNAPSHOT_PIECE: u8 = b'p';
/// Bytes per stored snapshot piece (the last may be shorter).
pub const SNAPSHOT_PIECE_BYTES: usize = 1 << 20;

fn piece_key(height: u64, index: u32) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..9].copy_from_slice(&snapshot_key(height, SNAPSHOT_PIECE));
    k[9..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The length a snapshot's marker records.
fn snapshot_len(txn: &RoTxn, db: Db, height: u64) -> Result<Option<u64>, StoreError> {
    match db.get(txn, &snapshot_key(height, SNAPSHOT_DATA))? {
        None => Ok(None),
        Some(v) => read_be_u64(v)
            .map(Some)
            .ok_or_else(|| StoreError::corrupt(DB_SNAPSHOTS, "a snapshot length not of 8 bytes")),
    }
}

/// Writes one snapshot in pieces of [`SNAPSHOT_PIECE_BYTES`], each in a
/// transaction of its own, so that memory holds one piece at a time
/// however large the state (LMDB buffers a transaction's pages until its
/// commit); [`SnapshotWriter::finish`] then marks it complete. A snapshot
/// interrupted before that is invisible, and removed by the next one.
pub struct SnapshotWriter<'s> {
    store: &'s Store,
    height: u64,
    buf: Vec<u8>,
    pieces: u32,
    len: u64,
}

impl SnapshotWriter<'_> {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.buf.extend_from_slice(bytes);
        self.len += bytes.len() as u64;
        while self.buf.len() >= SNAPSHOT_PIECE_BYTES {
            self.put_piece(SNAPSHOT_PIECE_BYTES)?;
        }
        Ok(())
    }

    fn put_piece(&mut self, n: usize) -> Result<(), StoreError> {
        let db = self.store.inner.snapshots;
        let key = piece_key(self.height, self.pieces);
        let piece = &self.buf[..n];
        self.store.write(|txn| Ok(db.put(txn, &key, piece)?))?;
        self.buf.drain(..n);
        self.pieces += 1;
        Ok(())
    }

    /// Store the rest and mark the snapshot complete, keeping only the
    /// newest [`SNAPSHOTS_KEPT`]. With `installed` (a snapshot from another
    /// peer, ahead of our heights) the heights table continues after its
    /// height; heights in between are never stored here. Returns its
    /// length.
    pub fn finish(self, installed: bool) -> Result<u64, StoreError> {
        let (db, meta, heights) = (
            self.store.inner.snapshots,
            self.store.inner.meta,
            self.store.inner.heights,
        );
        let (height, len) = (self.height, self.len);
        let last = (!self.buf.is_empty()).then(|| (piece_key(height, self.pieces), &self.buf));
        self.store.write(|txn| {
            if let Some((key, bytes)) = &last {
                db.put(txn, key, bytes)?;
            }
            db.put(txn, &snapshot_key(height, SNAPSHOT_DATA), &be_u64(len))?;
            if installed && next_height(txn, heights, meta)? <= height {
                meta.put(txn, META_HEIGHTS_BASE, &be_u64(height))?;
            }
            // Keep the newest complete snapshots; remove everything else
            // (older ones, and pieces of any interrupted write).
            let mut complete: Vec<u64> = Vec::new();
            let mut all: Vec<(u64, Vec<u8>)> = Vec::new();
            for item in db.iter(txn)? {
                let (k, _) = item?;
                let h = parse_u64_key(DB_SNAPSHOTS, &k[..k.len().min(8)])?;
                if k.len() == 9 && k[8] == SNAPSHOT_DATA {
                    complete.push(h);
                }
                all.push((h, k.to_vec()));
            }
            let kept: Vec<u64> = complete
                .iter()
                .rev()
                .take(SNAPSHOTS_KEPT)
                .copied()
                .collect();
            for (h, k) in all {
                if !kept.contains(&h) {
                    db.delete(txn, &k)?;
                }
            }
            Ok(())
        })?;
        Ok(len)
    }
}

impl Store {
    /// Open the store in `dir` (created if missing) for `config.chain_id`.
    /// A fresh store is stamped with the chain id and [`SCHEMA_VERSION`];
    /// an existing one must carry the same, or opening fails with
    /// [`StoreError::WrongChain`] / [`StoreError::WrongSchema`]. Only one
    /// process may have the directory open ([`StoreError::Locked`]). The
    /// last height and own round are read on open, so a damaged last key
    /// fails here ([`StoreError::Corrupt`]) rather than later.
    pub fn open(dir: impl AsRef<Path>, config: &StoreConfig) -> Result<Store, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        let dir_err = |source| StoreError::Dir {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(dir_err)?;
        let lock = File::create(dir.join(LOCK_FILE)).map_err(dir_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked(dir)),
            Err(TryLockError::Error(e)) => return Err(dir_err(e)),
        }

        // LMDB opens an existing file with a map of at least its data, but
        // not more: start at twice the data so the first write does not
        // have to grow the map straight away.
        let data_len = match std::fs::metadata(dir.join("data.mdb")) {
            Ok(m) => usize::try_from(m.len()).unwrap_or(usize::MAX),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(dir_err(e)),
        };
        let max_map_size = round_up(config.max_map_size.max(MAP_GRANULE));
        let map_size = round_up(config.map_size.max(data_len.saturating_mul(2)))
            .clamp(MAP_GRANULE, max_map_size.max(round_up(data_len)));
        let max_map_size = max_map_size.max(map_size);
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(map_size).max_dbs(MAX_DBS);
        if config.volatile {
            // SAFETY: without syncs a crash can lose or corrupt the store;
            // a volatile store is, by contract, emptied by its owner before
            // use and never trusted across a restart.
            // No read-ahead: its pages are read at random, and the kernel's
            // read-ahead would fill (zero) and map large folios around each
            // page touched: measured, ~130 MB of the map stayed resident
            // between releases and zeroing them took a tenth of the CPU.
            unsafe {
                options.flags(
                    EnvFlags::NO_SYNC
                        | EnvFlags::NO_META_SYNC
                        | EnvFlags::WRITE_MAP
                        | EnvFlags::NO_READ_AHEAD,
                );
            }
        }
        // SAFETY: the directory lock taken above keeps every other process
        // (and every other `Store` of this process) away from these files
        // while this environment is open, and the store never hands out
        // references into the map that outlive a transaction.
        let env = unsafe { options.open(&dir) }?;
        let handle = EnvHandle {
            env,
            writer: Mutex::new(()),
            resize: RwLock::new(()),
            max_map_size,
        };

        let dbs = handle.write(|txn| {
            let mut create = |name: &str| -> Result<Db, StoreError> {
                Ok(handle.env.create_database(txn, Some(name))?)
            };
            Ok([
                create(DB_META)?,
                create(DB_OWN_EVENTS)?,
                create(DB_EVENTS)?,
                create(DB_EVENT_INDEX)?,
                create(DB_HEIGHTS)?,
                create(DB_SNAPSHOTS)?,
            ])
        })?;
        let [meta, own_events, events, event_index, heights, snapshots] = dbs;
        let store = Store {
            inner: Arc::new(Inner {
                handle,
                dir,
                chain_id: config.chain_id,
                meta,
                own_events,
                events,
                event_index,
                heights,
                snapshots,
                open_nodes: Mutex::new(HashSet::new()),
                read_since_release: AtomicUsize::new(0),
                mapping: Mutex::new(None),
                _lock: lock,
            }),
        };
        let fresh = store.check_or_stamp()?;
        if fresh {
            // Make the new files' directory entries durable too.
            File::open(&store.inner.dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| StoreError::Dir {
                    path: store.inner.dir.clone(),
                    source,
                })?;
        }
        // Read outside the log macro, which skips its arguments when
        // nothing listens: a damaged last key must fail the open.
        let last_height = store.last_height()?;
        let last_own_round = store.last_own_round()?;
        info!(
            dir = %store.inner.dir.display(),
            map_size = store.map_size(),
            fresh,
            ?last_height,
            ?last_own_round,
            "store opened"
        );
        Ok(store)
    }

    /// Check the schema version and chain id, or write them into a fresh
    /// store. Returns whether the store was fresh.
    fn check_or_stamp(&self) -> Result<bool, StoreError> {
        let i = &*self.inner;
        i.handle.write(|txn| {
            let Some(schema) = i.meta.get(txn, META_SCHEMA)? else {
                for (name, db) in self.fixed_dbs() {
                    if !db.is_empty(txn)? {
                        return Err(StoreError::corrupt(
                            name,
                            "records present but the store has no schema version",
                        ));
                    }
                }
                i.meta
                    .put(txn, META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                i.meta.put(txn, META_CHAIN, &i.chain_id.0)?;
                return Ok(true);
            };
            let schema = <[u8; 4]>::try_from(schema)
                .map(u32::from_be_bytes)
                .map_err(|_| {
                    StoreError::corrupt(
                        DB_META,
                        format!("schema version of {} bytes, not 4", schema.len()),
                    )
                })?;
            if schema != SCHEMA_VERSION {
                return Err(StoreError::WrongSchema {
                    expected: SCHEMA_VERSION,
                    found: schema,
                });
            }
            let chain = i
                .meta
                .get(txn, META_CHAIN)?
                .ok_or_else(|| StoreError::corrupt(DB_META, "no chain id"))?;
            let found = Hash(<[u8; 32]>::try_from(chain).map_err(|_| {
                StoreError::corrupt(
                    DB_META,
                    format!("chain id of {} bytes, not 32", chain.len()),
                )
            })?);
            if found != i.chain_id {
                return Err(StoreError::WrongChain {
                    expected: i.chain_id,
                    found,
                });
            }
            Ok(false)
        })
    }

    fn fixed_dbs(&self) -> [(&'static str, Db); 6] {
        let i = &*self.inner;
        [
            (DB_SNAPSHOTS, i.snapshots),
            (DB_META, i.meta),
            (DB_OWN_EVENTS, i.own_events),
            (DB_EVENTS, i.events),
            (DB_EVENT_INDEX, i.event_index),
            (DB_HEIGHTS, i.heights),
        ]
    }

    fn read<T>(&self, f: impl FnOnce(&RoTxn) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.inner.handle.read(f)
    }

    fn write<T>(
        &self,
        f: impl FnMut(&mut RwTxn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.inner.handle.write(f)
    }

    /// Count `bytes` of the map touched by a node read; every
    /// [`CHECK_AFTER_READ_BYTES`], release the map's pages
    /// ([`Store::release_mapped_pages`]) if the process's mapped file pages
    /// exceed twice [`MAPPED_BUDGET`]: a snapshot export reads the whole state
    /// within one call, and would otherwise hold all of its pages until the
    /// daemon's next check. Must not be called inside a transaction of
    /// this store.
    pub(crate) fn note_mapped_read(&self, bytes: usize) {
        let c = &self.inner.read_since_release;
        if c.fetch_add(bytes, Ordering::Relaxed) + bytes >= CHECK_AFTER_READ_BYTES {
            c.store(0, Ordering::Relaxed);
            // Twice the daemon's budget: each release costs the re-reads of
            // the pages still needed (measured: a snapshot export of a state
            // on disk took ~1.4 times as long releasing at the budget).
            if file_pages_mapped().is_none_or(|b| b > 2 * MAPPED_BUDGET) {
                self.release_mapped_pages();
            }
        }
    }

    /// Unmap the data file's pages from this process (they stay in the
    /// kernel's page cache; the next read maps them again). LMDB reads
    /// through a shared read-only map, so every page ever read would count
    /// as this process's resident memory until the kernel wants it back;
    /// the daemon calls this now and then so that its RSS shows what it
    /// holds, not the file it has read.
    pub fn release_mapped_pages(&self) {
        // No transaction of this process is open while the resize lock is
        // held for writing, so nothing refers into the map now.
        let _guard = self
            .inner
            .handle
            .resize
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.unmap_pages();
    }

    /// [`Store::release_mapped_pages`] from inside a write transaction of
    /// this store, when this process maps more than [`MAPPED_BUDGET`] of
    /// file pages. One write-back transaction was measured mapping 150–170
    /// MB of the state cache at once (each write reads its leaf page
    /// through the map, and the kernel maps up to 15 cached neighbours
    /// with it), all released only after its commit.
    pub(crate) fn release_in_write_txn(&self, _txn: &RwTxn) {
        if file_pages_mapped().is_some_and(|b| b > MAPPED_BUDGET) {
            // The caller's transaction holds the resize lock for reading
            // (see `write`), so the map cannot move meanwhile. References
            // into it stay valid: see `unmap_pages`.
            self.unmap_pages();
        }
    }

    /// Drop this process's page-table entries for the data file's map.
    fn unmap_pages(&self) {
        let h = &self.inner.handle;
        let map_size = h.env.info().map_size;
        let mut cached = self
            .inner
            .mapping
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The map moves only when it grows.
        let ranges = match &*cached {
            Some((size, ranges)) if *size == map_size => ranges.clone(),
            _ => {
                let ranges = self.find_mapping();
                *cached = Some((map_size, ranges.clone()));
                ranges
            }
        };
        for (start, end) in ranges {
            // SAFETY: the range is a shared mapping of LMDB's data file
            // (read-only, or writable for a volatile store): MADV_DONTNEED
            // only drops this process's page-table entries (a dirty page
            // stays dirty in the page cache and is written back), and a
            // later access faults the same page-cache page back in, so
            // even a reference into the map held across this call reads
            // the same bytes. The map itself does not move: callers hold
            // the resize lock.
            let rc = unsafe {
                libc::madvise(
                    start as *mut libc::c_void,
                    end.saturating_sub(start),
                    libc::MADV_DONTNEED,
                )
            };
            if rc != 0 {
                debug!(
                    "madvise(DONTNEED) on the map failed: {}",
                    io::Error::last_os_error()
                );
            }
        }
    }

    /// Where the data file is mapped. LMDB does not tell (its "map
    /// address" is only set for fixed maps), so look in /proc.
    fn find_mapping(&self) -> Vec<AddrRange> {
        let mut ranges = Vec::new();
        let Ok(file) = std::fs::canonicalize(self.inner.dir.join("data.mdb")) else {
            return ranges;
        };
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return ranges;
        };
        for line in maps.lines() {
            // "start-end perms offset dev inode path"
            let mut fields = line.split_whitespace();
            let (Some(range), Some(path)) = (fields.next(), fields.nth(4)) else {
                continue;
            };
            if Path::new(path) != file {
                continue;
            }
            let Some((start, end)) = range.split_once('-') else {
                continue;
            };
            if let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                ranges.push((start, end));
            }
        }
        ranges
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The most the map may grow to.
    pub fn max_map_size(&self) -> usize {
        self.inner.handle.max_map_size
    }

    pub fn chain_id(&self) -> Hash {
        self.inner.chain_id
    }

    /// The current map size in bytes (grows when the map fills up).
    pub fn map_size(&self) -> usize {
        self.inner.handle.env.info().map_size
    }

    /// The size of the data file on disk, for the status command.
    pub fn disk_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.inner.handle.env.real_disk_size()?)
    }

    // ---- own signing state -------------------------------------------

    /// Record the event this peer signed for `round`, durably, before it is
    /// sent: after a crash the peer finds it here and never signs another
    /// event for that round. Rounds only go up: a round at or below the
    /// last one is refused with [`StoreError::OwnRoundTaken`], unless it
    /// repeats exactly the bytes already stored for that round (a retry).
    pub fn put_own_event(&self, round: u64, event: &[u8]) -> Result<(), StoreError> {
        let db = self.inner.own_events;
        let key = be_u64(round);
        self.write(|txn| {
            if let Some((last, _)) = db.last(txn)? {
                let last = parse_u64_key(DB_OWN_EVENTS, last)?;
                if round <= last {
                    return match db.get(txn, &key)? {
                        Some(stored) if stored == event => Ok(()),
                        _ => Err(StoreError::OwnRoundTaken { round, last }),
                    };
                }
            }
            db.put(txn, &key, event)?;
            Ok(())
        })
    }

    /// Own events from `round` on, in round order.
    pub fn own_events_from(&self, round: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.own_events_page(round, usize::MAX)
    }

    /// At most `limit` own events from `round` on, in round order.
    pub fn own_events_page(
        &self,
        round: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let db = self.inner.own_events;
        let from = be_u64(round);
        self.read(|txn| {
            let mut out = Vec::new();
            for item in db.range(txn, &from_key(&from))?.take(limit) {
                let (k, v) = item?;
                out.push((parse_u64_key(DB_OWN_EVENTS, k)?, v.to_vec()));
            }
            Ok(out)
        })
    }

    /// The round of the last own event, if any.
    pub fn last_own_round(&self) -> Result<Option<u64>, StoreError> {
        let db = self.inner.own_events;
        self.read(|txn| match db.last(txn)? {
            Some((k, _)) => Ok(Some(parse_u64_key(DB_OWN_EVENTS, k)?)),
            None => Ok(None),
        })
    }

    /// Drop own events below `round`, always keeping the last one (it is
    /// what stops a second event for its round). Returns how many went.
    pub fn prune_own_events_below(&self, round: u64) -> Result<usize, StoreError> {
        let db = self.inner.own_events;
        let last = self.read(|txn| match db.last(txn)? {
            Some((last, _)) => Ok(Some(parse_u64_key(DB_OWN_EVENTS, last)?)),
            None => Ok(None),
        })?;
        let Some(last) = last else {
            return Ok(0);
        };
        let total = self.delete_below_in_chunks(db, &be_u64(round.min(last)), |_, _| Ok(()))?;
        debug!(below = round, removed = total, "own events pruned");
        Ok(total)
    }

    /// The consensus core's own progress (opaque bytes), durably.
    pub fn put_own_progress(&self, progress: &[u8]) -> Result<(), StoreError> {
        let db = self.inner.meta;
        self.write(|txn| Ok(db.put(txn, META_OWN_PROGRESS, progress)?))
    }

    pub fn own_progress(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.inner.meta;
        self.read(|txn| Ok(db.get(txn, META_OWN_PROGRESS)?.map(<[u8]>::to_vec)))
    }

    // ---- events --------------------------------------------------------

    /// Store events `(round, id, bytes)` in one transaction. Storing an
    /// event again is harmless (the bytes are replaced); storing an id
    /// under another round than before is refused.
    pub fn put_events(&self, events: &[(u64, Hash, &[u8])]) -> Result<(), StoreError> {
        let (data, index) = (self.inner.events, self.inner.event_index);
        self.write(|txn| {
            for (round, id, bytes) in events {
                if let Some(stored) = index.get(txn, &id.0)? {
                    let stored = parse_u64_key(DB_EVENT_INDEX, stored)?;
                    if stored != *round {
                        return Err(StoreError::EventRoundMismatch {
                            id: *id,
                            stored,
                            given: *round,
                        });
                    }
                }
                data.put(txn, &event_key(*round, id), bytes)?;
                index.put(txn, &id.0, &be_u64(*round))?;
            }
            Ok(())
        })
    }

    /// Every stored event from `round` on, in (round, id) order.
    pub fn events_from_round(&self, round: u64) -> Result<Vec<(u64, Hash, Vec<u8>)>, StoreError> {
        self.events_page(round, usize::MAX)
    }

    /// At most `limit` events from `round` on, in round order.
    pub fn events_page(
        &self,
        round: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Hash, Vec<u8>)>, StoreError> {
        let db = self.inner.events;
        let from = be_u64(round);
        self.read(|txn| {
            let mut out = Vec::new();
            for item in db.range(txn, &from_key(&from))?.take(limit) {
                let (k, v) = item?;
                let (round, id) = parse_event_key(k)?;
                out.push((round, id, v.to_vec()));
            }
            Ok(out)
        })
    }

    /// One event by id, with its round.
    pub fn get_event(&self, id: &Hash) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let (data, index) = (self.inner.events, self.inner.event_index);
        self.read(|txn| {
            let Some(round) = index.get(txn, &id.0)? else {
                return Ok(None);
            };
            let round = parse_u64_key(DB_EVENT_INDEX, round)?;
            match data.get(txn, &event_key(round, id))? {
                Some(bytes) => Ok(Some((round, bytes.to_vec()))),
                None => Err(StoreError::corrupt(
                    DB_EVENT_INDEX,
                    format!("event {id} indexed at round {round} but not stored"),
                )),
            }
        })
    }

    /// Delete every event below `round` (and its index entry). Returns how
    /// many went. Done in transactions of [`PRUNE_CHUNK`] events, releasing
    /// the map between them when it holds more than [`MAPPED_BUDGET`] of file
    /// pages: finding and deleting each event reads its pages, and one
    /// transaction over a long stretch of the log mapped ~200 MB at once.
    pub fn prune_events_below(&self, round: u64) -> Result<usize, StoreError> {
        let index = self.inner.event_index;
        let total = self.delete_below_in_chunks(self.inner.events, &be_u64(round), |txn, k| {
            index.delete(txn, &parse_event_key(k)?.1 .0)?;
            Ok(())
        })?;
        debug!(below = round, removed = total, "events pruned");
        Ok(total)
    }

    /// Delete the keys of `db` below `end`, [`PRUNE_CHUNK`] per transaction
    /// (calling `also` on each key first, in the same transaction), with the
    /// map released between transactions when over budget. Keys only: the
    /// values are not read.
    fn delete_below_in_chunks(
        &self,
        db: Db,
        end: &[u8],
        also: impl Fn(&mut RwTxn, &[u8]) -> Result<(), StoreError>,
    ) -> Result<usize, StoreError> {
        let keys = db.remap_data_type::<DecodeIgnore>();
        let mut total = 0;
        loop {
            let n = self.write(|txn| {
                let mut found = Vec::new();
                for item in keys.range(txn, &below_key(end))?.take(PRUNE_CHUNK) {
                    found.push(item?.0.to_vec());
                }
                for k in &found {
                    also(txn, k)?;
                    db.delete(txn, k)?;
                }
                Ok(found.len())
            })?;
            total += n;
            self.release_if_over_budget();
            if n < PRUNE_CHUNK {
                return Ok(total);
            }
        }
    }

    /// Release the map if this process holds more than [`MAPPED_BUDGET`] of
    /// file pages. Not inside a transaction.
    fn release_if_over_budget(&self) {
        if file_pages_mapped().is_none_or(|b| b > MAPPED_BUDGET) {
            self.release_mapped_pages();
        }
    }

    // ---- committed heights ---------------------------------------------

    /// Append the record of committed height `height`, durably. Heights
    /// start at 1 and go up by one ([`StoreError::HeightNotNext`]
    /// otherwise).
    pub fn append_height(&self, height: u64, record: &[u8]) -> Result<(), StoreError> {
        self.commit_height(height, record, &[])
    }

    /// Append the record of `height` and write the pending node writes of
    /// every `nodes` in ONE transaction: after a crash either all of it is
    /// on disk or none. On success the overlays are emptied; on error they
    /// are kept and nothing was written.
    pub fn commit_height(
        &self,
        height: u64,
        record: &[u8],
        nodes: &[&dyn PendingNodes],
    ) -> Result<(), StoreError> {
        let db = self.inner.heights;
        self.check_owners(nodes)?;
        let key = be_u64(height);
        let meta = self.inner.meta;
        self.write(|txn| {
            let expected = next_height(txn, db, meta)?;
            if height != expected {
                return Err(StoreError::HeightNotNext {
                    expected,
                    got: height,
                });
            }
            db.put(txn, &key, record)?;
            Self::write_pending(txn, nodes)
        })?;
        Self::clear_written(nodes, u64::MAX);
        Ok(())
    }

    /// Append several consecutive heights in ONE durable transaction (a
    /// burst of commits costs one sync, not one each). All or none.
    pub fn append_heights(&self, records: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        self.append_heights_with(records, &[])
    }

    /// [`Store::append_heights`] and the pending node writes of every
    /// `nodes`, in the same transaction (overlays emptied on success, kept
    /// on error). With no records, only the nodes are written.
    pub fn append_heights_with(
        &self,
        records: &[(u64, Vec<u8>)],
        nodes: &[&dyn PendingNodes],
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            // Nothing to write costs no transaction (and no sync).
            if nodes.iter().any(|n| n.has_pending()) {
                return self.commit_nodes(nodes);
            }
            return Ok(());
        }
        self.check_owners(nodes)?;
        let db = self.inner.heights;
        let meta = self.inner.meta;
        self.write(|txn| {
            let first = next_height(txn, db, meta)?;
            for (expected, (height, record)) in (first..).zip(records) {
                if *height != expected {
                    return Err(StoreError::HeightNotNext {
                        expected,
                        got: *height,
                    });
                }
                db.put(txn, &be_u64(*height), record)?;
            }
            Self::write_pending(txn, nodes)
        })?;
        Self::clear_written(nodes, u64::MAX);
        Ok(())
    }

    /// Empty the node databases `names` (each opened before, through
    /// [`Store::nodes`]) in one transaction: what a cache of state rebuilt
    /// at every start does first.
    pub fn clear_nodes(&self, names: &[&str]) -> Result<(), StoreError> {
        let env = &self.inner.handle.env;
        self.write(|txn| {
            for name in names {
                let db_name = format!("{NODES_PREFIX}{name}");
                if let Some(db) = env.open_database::<Bytes, Bytes>(txn, Some(&db_name))? {
                    db.clear(txn)?;
                }
            }
            Ok(())
        })
    }

    /// Write the pending node writes of every `nodes` in one transaction,
    /// without a height (genesis, or structures created before the first
    /// height). Emptied on success, kept on error.
    pub fn commit_nodes(&self, nodes: &[&dyn PendingNodes]) -> Result<(), StoreError> {
        self.commit_nodes_before(nodes, u64::MAX)
    }

    /// [`Store::commit_nodes`] for the writes made before epoch `before`
    /// only (see [`LmdbNodes::set_epoch`]); later ones stay buffered.
    pub fn commit_nodes_before(
        &self,
        nodes: &[&dyn PendingNodes],
        before: u64,
    ) -> Result<(), StoreError> {
        self.check_owners(nodes)?;
        self.write(|txn| Self::write_pending_before(txn, nodes, before))?;
        Self::clear_written(nodes, before);
        Ok(())
    }

    /// Refuse node databases of another store.
    fn check_owners(&self, nodes: &[&dyn PendingNodes]) -> Result<(), StoreError> {
        for n in nodes {
            let (owner, name) = n.owner();
            if !Arc::ptr_eq(&owner.inner, &self.inner) {
                return Err(StoreError::ForeignNodes(name.to_string()));
            }
        }
        Ok(())
    }

    /// Empty the overlays of what a committed transaction wrote.
    fn clear_written(nodes: &[&dyn PendingNodes], before: u64) {
        for n in nodes {
            n.clear_pending(before);
        }
    }

    fn write_pending(txn: &mut RwTxn, nodes: &[&dyn PendingNodes]) -> Result<(), StoreError> {
        Self::write_pending_before(txn, nodes, u64::MAX)
    }

    fn write_pending_before(
        txn: &mut RwTxn,
        nodes: &[&dyn PendingNodes],
        before: u64,
    ) -> Result<(), StoreError> {
        for n in nodes {
            n.write_pending(txn, before)?;
        }
        Ok(())
    }

    /// Up to `limit` committed heights from `from` on, in order. A gap in
    /// the stored sequence is reported as corruption.
    pub fn heights_from(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let (db, meta) = (self.inner.heights, self.inner.meta);
        let start = be_u64(from.max(1));
        self.read(|txn| {
            // Heights up to an installed snapshot's were never stored here:
            // the one gap allowed is from below it to just after it.
            let base = match meta.get(txn, META_HEIGHTS_BASE)? {
                Some(b) => parse_u64_key(DB_META, b)?,
                None => 0,
            };
            let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut expected = from.max(1);
            for item in db.range(txn, &from_key(&start))?.take(limit) {
                let (k, v) = item?;
                let h = parse_u64_key(DB_HEIGHTS, k)?;
                if h != expected && !(expected <= base && h == base + 1) {
                    return Err(StoreError::corrupt(
                        DB_HEIGHTS,
                        format!("height {expected} missing (next stored is {h})"),
                    ));
                }
                out.push((h, v.to_vec()));
                expected = h + 1;
            }
            Ok(out)
        })
    }

    /// The last committed height, if any.
    pub fn last_height(&self) -> Result<Option<u64>, StoreError> {
        let db = self.inner.heights;
        self.read(|txn| match db.last(txn)? {
            Some((k, _)) => Ok(Some(parse_u64_key(DB_HEIGHTS, k)?)),
            None => Ok(None),
        })
    }

    /// The height the next committed height follows (the last stored, or
    /// an installed snapshot's height).
    pub fn heights_base(&self) -> Result<u64, StoreError> {
        let (db, meta) = (self.inner.heights, self.inner.meta);
        self.read(|txn| Ok(next_height(txn, db, meta)? - 1))
    }

    // ---- snapshots -----------------------------------------------------

    /// Start storing the snapshot of `height` (see [`SnapshotWriter`]),
    /// removing what an earlier write of that height left.
    pub fn snapshot_writer(&self, height: u64) -> Result<SnapshotWriter<'_>, StoreError> {
        let db = self.inner.snapshots;
        self.write(|txn| {
            let mut stale = Vec::new();
            for item in db.prefix_iter(txn, &be_u64(height))? {
                stale.push(item?.0.to_vec());
            }
            for k in stale {
                db.delete(txn, &k)?;
            }
            Ok(())
        })?;
        Ok(SnapshotWriter {
            store: self,
            height,
            buf: Vec::new(),
            pieces: 0,
            len: 0,
        })
    }

    /// Store the encoded state snapshot of `height` durably (see
    /// [`SnapshotWriter::finish`]).
    pub fn put_snapshot(
        &self,
        height: u64,
        data: &[u8],
        installed: bool,
    ) -> Result<(), StoreError> {
        let mut w = self.snapshot_writer(height)?;
        w.write(data)?;
        w.finish(installed).map(drop)
    }

    /// Attach the certificate of a stored snapshot's height (ignored if that
    /// snapshot is gone).
    pub fn put_snapshot_certificate(&self, height: u64, cert: &[u8]) -> Result<bool, StoreError> {
        let db = self.inner.snapshots;
        self.write(|txn| {
            if snapshot_len(txn, db, height)?.is_none() {
                return Ok(false);
            }
            db.put(txn, &snapshot_key(height, SNAPSHOT_CERT), cert)?;
            Ok(true)
        })
    }

    /// The height of the newest stored snapshot (reads no snapshot bytes).
    pub fn latest_snapshot_height(&self) -> Result<Option<u64>, StoreError> {
        let db = self.inner.snapshots;
        self.read(|txn| Self::latest_complete_snapshot(txn, db))
    }

    fn latest_complete_snapshot(txn: &RoTxn, db: Db) -> Result<Option<u64>, StoreError> {
        for item in db.rev_iter(txn)? {
            let (k, _) = item?;
            if k.len() == 9 && k[8] == SNAPSHOT_DATA {
                return Ok(Some(parse_u64_key(DB_SNAPSHOTS, &k[..8])?));
            }
        }
        Ok(None)
    }

    /// The first round still in the event log.
    pub fn first_event_round(&self) -> Result<Option<u64>, StoreError> {
        let db = self.inner.events;
        self.read(|txn| match db.first(txn)? {
            Some((k, _)) => Ok(Some(parse_event_key(k)?.0)),
            None => Ok(None),
        })
    }

    /// The newest stored snapshot: its height and bytes.
    pub fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let db = self.inner.snapshots;
        self.read(|txn| {
            let Some(height) = Self::latest_complete_snapshot(txn, db)? else {
                return Ok(None);
            };
            let len = snapshot_len(txn, db, height)?.unwrap_or(0);
            let bytes = Self::snapshot_range(txn, db, height, len, 0, len)?;
            Ok(Some((height, bytes)))
        })
    }

    /// Bytes `[from, to)` of the complete snapshot of `height` (`len`
    /// long), from its pieces.
    fn snapshot_range(
        txn: &RoTxn,
        db: Db,
        height: u64,
        len: u64,
        from: u64,
        to: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let piece = SNAPSHOT_PIECE_BYTES as u64;
        // The length comes from the file: reserve at most a few pieces up
        // front, so a damaged length is a missing piece, not an abort.
        let reserve = (to - from).min(4 * piece);
        let mut out = Vec::with_capacity(usize::try_from(reserve).unwrap_or(0));
        let mut at = from;
        while at < to {
            let index = u32::try_from(at / piece)
                .map_err(|_| StoreError::corrupt(DB_SNAPSHOTS, "a snapshot of too many pieces"))?;
            let Some(bytes) = db.get(txn, &piece_key(height, index))? else {
                return Err(StoreError::corrupt(
                    DB_SNAPSHOTS,
                    format!("snapshot {height} lacks piece {index}"),
                ));
            };
            // Every piece is full but the last.
            let expected = piece.min(len - u64::from(index) * piece);
            if bytes.len() as u64 != expected {
                return Err(StoreError::corrupt(
                    DB_SNAPSHOTS,
                    format!(
                        "piece {index} of snapshot {height} has {} bytes, not {expected}",
                        bytes.len()
                    ),
                ));
            }
            let start = (at - u64::from(index) * piece) as usize;
            let end = (to - u64::from(index) * piece).min(piece) as usize;
            out.extend_from_slice(&bytes[start..end]);
            at = u64::from(index) * piece + end as u64;
        }
        Ok(out)
    }

    /// The newest snapshot with a certificate: height, certificate bytes and
    /// the snapshot's length.
    pub fn latest_certified_snapshot(&self) -> Result<Option<(u64, Vec<u8>, u64)>, StoreError> {
        let db = self.inner.snapshots;
        self.read(|txn| {
            for item in db.rev_iter(txn)? {
                let (k, v) = item?;
                if k.len() == 9 && k[8] == SNAPSHOT_CERT {
                    let h = parse_u64_key(DB_SNAPSHOTS, &k[..8])?;
                    if let Some(len) = snapshot_len(txn, db, h)? {
                        return Ok(Some((h, v.to_vec(), len)));
                    }
                }
            }
            Ok(None)
        })
    }

    /// At most `max` bytes of the snapshot of `height` from `offset` (empty
    /// past its end); `None` if that snapshot is not stored.
    pub fn snapshot_chunk(
        &self,
        height: u64,
        offset: u64,
        max: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.inner.snapshots;
        self.read(|txn| {
            let Some(len) = snapshot_len(txn, db, height)? else {
                return Ok(None);
            };
            let from = offset.min(len);
            let to = from.saturating_add(max as u64).min(len);
            Self::snapshot_range(txn, db, height, len, from, to).map(Some)
        })
    }

    // ---- hand-overs ----------------------------------------------------

    /// Store the certified hand-over to snapshot `snapshot`.
    pub fn put_handover(&self, snapshot: u64, cert: &[u8]) -> Result<(), StoreError> {
        let db = self.inner.meta;
        let mut key = META_HANDOVER_PREFIX.to_vec();
        key.extend_from_slice(&be_u64(snapshot));
        self.write(|txn| Ok(db.put(txn, &key, cert)?))
    }

    /// Register wallet login `name` for `login`, durably, unless the name
    /// is another key's. The key the name is registered to.
    pub fn claim_name(&self, name: &str, login: &PeerKey) -> Result<PeerKey, StoreError> {
        let db = self.inner.meta;
        let mut key = META_NAME_PREFIX.to_vec();
        key.extend_from_slice(name.as_bytes());
        self.write(|txn| {
            if let Some(v) = db.get(txn, &key)? {
                let bytes: [u8; 32] = v.try_into().map_err(|_| StoreError::Corrupt {
                    db: DB_META.into(),
                    what: format!("login key of name {name:?}"),
                })?;
                return Ok(PeerKey(bytes));
            }
            db.put(txn, &key, &login.0)?;
            Ok(*login)
        })
    }

    /// The login key registered for `name`, if any.
    pub fn name_owner(&self, name: &str) -> Result<Option<PeerKey>, StoreError> {
        let db = self.inner.meta;
        let mut key = META_NAME_PREFIX.to_vec();
        key.extend_from_slice(name.as_bytes());
        self.read(|txn| match db.get(txn, &key)? {
            None => Ok(None),
            Some(v) => Ok(Some(PeerKey(v.try_into().map_err(|_| {
                StoreError::Corrupt {
                    db: DB_META.into(),
                    what: format!("login key of name {name:?}"),
                }
            })?))),
        })
    }

    /// Replace the receive keys kept for `name` (already checked).
    pub fn put_receive_keys(&self, name: &str, keys: &[u8]) -> Result<(), StoreError> {
        let db = self.inner.meta;
        let mut key = META_RECEIVE_PREFIX.to_vec();
        key.extend_from_slice(name.as_bytes());
        self.write(|txn| Ok(db.put(txn, &key, keys)?))
    }

    /// Take (durably remove) one item of the receive keys kept for `name`:
    /// `split` takes the stored bytes and returns the item taken and the
    /// bytes to store back.
    pub fn take_receive_key<T>(
        &self,
        name: &str,
        split: impl Fn(&[u8]) -> Option<(T, Vec<u8>)>,
    ) -> Result<Option<T>, StoreError> {
        let db = self.inner.meta;
        let mut key = META_RECEIVE_PREFIX.to_vec();
        key.extend_from_slice(name.as_bytes());
        self.write(|txn| {
            let Some(stored) = db.get(txn, &key)? else {
                return Ok(None);
            };
            let Some((item, rest)) = split(stored) else {
                return Ok(None);
            };
            db.put(txn, &key, &rest)?;
            Ok(Some(item))
        })
    }

    /// Every stored certified hand-over, oldest snapshot first.
    pub fn handovers(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let db = self.inner.meta;
        self.read(|txn| {
            let mut out = Vec::new();
            for item in db.prefix_iter(txn, META_HANDOVER_PREFIX)? {
                let (k, v) = item?;
                let s = parse_u64_key(DB_META, &k[META_HANDOVER_PREFIX.len()..])?;
                out.push((s, v.to_vec()));
            }
            Ok(out)
        })
    }

    // ---- meta ----------------------------------------------------------

    /// Set a meta entry, durably. Keys starting with `store/` are the
    /// store's own ([`StoreError::ReservedMetaKey`]).
    pub fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        check_meta_key(key)?;
        let db = self.inner.meta;
        self.write(|txn| Ok(db.put(txn, key, value)?))
    }

    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        check_meta_key(key)?;
        let db = self.inner.meta;
        self.read(|txn| Ok(db.get(txn, key)?.map(<[u8]>::to_vec)))
    }

    pub fn delete_meta(&self, key: &[u8]) -> Result<bool, StoreError> {
        check_meta_key(key)?;
        let db = self.inner.meta;
        self.write(|txn| Ok(db.delete(txn, key)?))
    }

    // ---- Merkle nodes --------------------------------------------------

    /// The node database `name` (created if missing) as a [`NodeStore`]
    /// for a `proofs` structure with keys `K` and values `V`. The database
    /// remembers `K`'s layout ([`KeyBytes::KIND`]) and refuses another.
    /// Writes stay in memory until [`Store::commit_height`] or
    /// [`Store::commit_nodes`]; one `LmdbNodes` per database at a time.
    ///
    /// [`NodeStore`]: proofs::NodeStore
    pub fn nodes<K, V>(&self, name: &str) -> Result<LmdbNodes<K, V>, StoreError>
    where
        K: KeyBytes + Eq + std::hash::Hash + Clone,
        V: serde::Serialize + serde::de::DeserializeOwned + Clone,
    {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-/".contains(&b));
        if !valid {
            return Err(StoreError::BadNodesName(name.to_string()));
        }
        let mut open = self
            .inner
            .open_nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if open.contains(name) {
            return Err(StoreError::NodesInUse(name.to_string()));
        }
        let db_name = format!("{NODES_PREFIX}{name}");
        let kind_key = format!("{META_NODES_PREFIX}{name}");
        let meta = self.inner.meta;
        let env = &self.inner.handle.env;
        let db = self.write(|txn| {
            match meta.get(txn, kind_key.as_bytes())? {
                Some(found) if found != K::KIND.as_bytes() => {
                    return Err(StoreError::WrongNodeKind {
                        name: name.to_string(),
                        expected: K::KIND,
                        found: String::from_utf8_lossy(found).into_owned(),
                    })
                }
                Some(_) => {}
                None => meta.put(txn, kind_key.as_bytes(), K::KIND.as_bytes())?,
            }
            Ok(env.create_database::<Bytes, Bytes>(txn, Some(&db_name))?)
        })?;
        open.insert(name.to_string());
        Ok(LmdbNodes::new(self.clone(), name.to_string(), db))
    }

    fn release_nodes(&self, name: &str) {
        self.inner
            .open_nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }
}

type KeyRange<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Keys at or after `key`.
fn from_key(key: &[u8]) -> KeyRange<'_> {
    (Bound::Included(key), Bound::Unbounded)
}

/// Keys before `key`.
fn below_key(key: &[u8]) -> KeyRange<'_> {
    (Bound::Unbounded, Bound::Excluded(key))
}

fn check_meta_key(key: &[u8]) -> Result<(), StoreError> {
    if key.starts_with(RESERVED_META_PREFIX) {
        return Err(StoreError::ReservedMetaKey(
            String::from_utf8_lossy(key).into_owned(),
        ));
    }
    Ok(())
}
