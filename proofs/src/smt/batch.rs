//! Building a new version from a batch of updates.
//!
//! One post-order walk over the old tree, guided by the sorted batch: a
//! subtree no update reaches is reused by reference; a touched page is read
//! once, its changed nodes hashed once, and the page written once under the
//! new version. The walk keeps, per page level (depth / 4), the old page it
//! is reading and the slots of the new page it is building; since the walk is
//! depth-first, at most one page per level is open at a time. Those buffers
//! live for the whole batch, so the walk allocates only the pages it writes.
//!
//! With more than one job ([`apply`]'s `parallel`), the subtrees at
//! depth 4 are walked first, each by this same walk started at its root, in
//! chunks that may run on their own threads; the walk over the root page
//! then meets their results at depth 4 instead of descending.
//!
//! A node's path is never materialised: every node the walk splits has at
//! least one update under it, and any key in its range spells its path.
//! Its heap position in its page is carried down instead.

use super::page::{Builder, PageBuf, Pool, SlotsRef};
use super::{
    bit, leaf_hash, node_hash, with_page, ChildRef, NodeKey, Slot, Slots, SmtError, StoreKey,
    StoreValue, MAX_DEPTH, PAGE_LEVELS,
};
use crate::hash::Hash;
use crate::store::{Executor, NodeStore};

pub(super) type Update = (Hash, Option<Hash>);

/// Page levels: depths 0, 4, …, 252.
const LEVELS: usize = MAX_DEPTH / PAGE_LEVELS;

/// What a batch produced: the new root, and the pages to store and drop.
pub(super) struct Output {
    pub root: Option<Slot>,
    /// Keys of old pages the new version no longer uses.
    pub stale: Vec<NodeKey>,
    /// The new pages, in the order the walk finished them (post-order).
    pub written: Vec<(NodeKey, Slots)>,
}

/// Sort by key and keep the last entry for each key.
pub(super) fn normalize(updates: &[Update]) -> Vec<Update> {
    let mut sorted = updates.to_vec();
    // Stable, so equal keys keep their batch order and the last one wins.
    sorted.sort_by_key(|u| u.0);
    let mut out: Vec<Update> = Vec::with_capacity(sorted.len());
    for (k, v) in sorted {
        match out.last_mut() {
            Some(last) if last.0 == k => last.1 = v,
            _ => out.push((k, v)),
        }
    }
    out
}

/// Build the new version from sorted, unique `updates` and the tree whose
/// root is `old_root`: returns the pages to write (the walk only reads the
/// store, so the caller stores them afterwards, in one run: their store
/// lookups then do not depend on each other and overlap in the memory
/// system).
///
/// With `spawn` set and more than one thread, the subtrees below the root
/// page (depth [`SPLIT_DEPTH`]) are built first, split into `threads`
/// chunks that `spawn` may run in parallel; the walk over the root page
/// then takes their results where it reaches them. Each subtree is built by
/// exactly the code the sequential walk runs, and its pages and stale keys
/// are spliced in where the sequential walk would have produced them, so
/// the output is identical.
pub(super) fn apply<S: NodeStore<StoreKey, StoreValue>>(
    store: &S,
    pool: &mut Pool,
    version: u64,
    old_root: Option<Slot>,
    updates: &[Update],
    parallel: Option<(usize, Spawner<S>, &dyn Executor)>,
) -> Result<Output, SmtError> {
    let cur = match old_root {
        None => Cur::Empty,
        Some(Slot::Leaf { key, value, hash }) => Cur::Leaf(LeafSub { key, value, hash }),
        Some(Slot::Page(c)) => Cur::Page(c),
        Some(Slot::Internal(_)) => return Err(corrupt("internal slot as the root")),
    };
    pool.sort();
    let presolved = match (parallel, &cur) {
        (Some((threads, spawn, exec)), Cur::Page(root)) if threads > 1 => {
            solve_subtrees(store, pool, version, *root, updates, (threads, spawn, exec))?
        }
        _ => Vec::new(),
    };
    let mut walk = Walk::new(store, pool, version, updates);
    walk.presolved = presolved;
    let root = match walk.run(SPLIT_FROM_ROOT, cur)? {
        Sub::Empty => None,
        Sub::Leaf(l) => Some(l.slot()),
        Sub::Page(c) => Some(Slot::Page(c)),
        Sub::NewInner(_) | Sub::OldInner(_) => return Err(corrupt("root is not a page")),
    };
    Ok(Output {
        root,
        stale: walk.stale,
        written: walk.written,
    })
}

/// Where the parallel path splits the tree: the roots of the pages below
/// the root page, one per first nibble of the key.
const SPLIT_DEPTH: usize = PAGE_LEVELS;
/// Subtrees at [`SPLIT_DEPTH`].
const SUBTREES: usize = 1 << SPLIT_DEPTH;
/// Start of a whole-tree walk: depth 0, page position 1.
const SPLIT_FROM_ROOT: (usize, u8) = (0, 1);
/// Below this many updates the subtrees are built in the calling thread
/// (same code, no thread): a thread costs tens of microseconds.
const MIN_PARALLEL_UPDATES: usize = 1024;

/// Runs each chunk's subtrees, as jobs handed to the caller's executor.
pub(super) type Spawner<S> = fn(&S, u64, &[Update], &mut [Chunk], &dyn Executor);

/// One subtree below the root page to build: its updates and its old state.
pub(super) struct Job {
    nibble: usize,
    lo: usize,
    hi: usize,
    cur: Cur,
}

/// A subtree built ahead of the walk over the root page.
pub(super) struct Solved {
    sub: Sub,
    stale: Vec<NodeKey>,
    written: Vec<(NodeKey, Slots)>,
}

/// Subtrees one worker builds, in key order, with its share of the pool.
pub(super) struct Chunk {
    jobs: Vec<Job>,
    pool: Pool,
    done: Vec<(usize, Result<Solved, SmtError>)>,
}

/// Build every chunk in turn, in the calling thread.
pub(super) fn run_here<S: NodeStore<StoreKey, StoreValue>>(
    store: &S,
    version: u64,
    updates: &[Update],
    chunks: &mut [Chunk],
) {
    for chunk in chunks {
        run_chunk(store, version, updates, chunk);
    }
}

/// Hand the chunks to `exec` as independent jobs (it may run them at the
/// same time); small batches are built in the calling thread.
pub(super) fn run_jobs<S: NodeStore<StoreKey, StoreValue> + Sync>(
    store: &S,
    version: u64,
    updates: &[Update],
    chunks: &mut [Chunk],
    exec: &dyn Executor,
) {
    let total: usize = chunks
        .iter()
        .flat_map(|c| &c.jobs)
        .map(|j| j.hi - j.lo)
        .sum();
    if total < MIN_PARALLEL_UPDATES || chunks.len() < 2 {
        run_here(store, version, updates, chunks);
        return;
    }
    let jobs: Vec<Box<dyn FnOnce() + Send + '_>> = chunks
        .iter_mut()
        .map(|chunk| {
            Box::new(move || run_chunk(store, version, updates, chunk)) as Box<dyn FnOnce() + Send>
        })
        .collect();
    exec.run_all(jobs);
}

fn run_chunk<S: NodeStore<StoreKey, StoreValue>>(
    store: &S,
    version: u64,
    updates: &[Update],
    chunk: &mut Chunk,
) {
    let mut walk = Walk::new(store, &mut chunk.pool, version, &[]);
    walk.updates = updates;
    for job in chunk.jobs.drain(..) {
        walk.lo = job.lo;
        walk.hi = job.hi;
        walk.written.reserve(2 * (job.hi - job.lo));
        let res = walk.run((SPLIT_DEPTH, 1), job.cur).map(|sub| Solved {
            sub,
            stale: std::mem::take(&mut walk.stale),
            written: std::mem::take(&mut walk.written),
        });
        let failed = res.is_err();
        chunk.done.push((job.nibble, res));
        if failed {
            return;
        }
    }
}

/// Build the subtrees below the root page `root` that `updates` reach,
/// in `threads` chunks of about equal numbers of updates; returns them by
/// first nibble.
fn solve_subtrees<S: NodeStore<StoreKey, StoreValue>>(
    store: &S,
    pool: &mut Pool,
    version: u64,
    root: ChildRef,
    updates: &[Update],
    (threads, spawn, exec): (usize, Spawner<S>, &dyn Executor),
) -> Result<Vec<Option<Solved>>, SmtError> {
    let Some((first_key, _)) = updates.first() else {
        return Ok(Vec::new());
    };
    // Each subtree's old state, as the sequential walk would meet it at
    // depth 4: the exit slot, or a leaf of the root page pushed down to
    // its own nibble, or empty.
    let key = NodeKey::new(root.version, 0, &first_key.0);
    let starts = with_page(store, &key, |page| {
        let page = page.slots.view();
        let mut starts = Vec::with_capacity(SUBTREES);
        for nibble in 0..SUBTREES {
            starts.push(start_of(page, nibble)?);
        }
        Ok::<_, SmtError>(starts)
    })??;
    let mut jobs = Vec::with_capacity(SUBTREES);
    let mut lo = 0;
    for (nibble, cur) in starts.into_iter().enumerate() {
        let rest = updates.get(lo..).unwrap_or(&[]);
        let hi = lo + rest.partition_point(|(k, _)| usize::from(k.0[0] >> 4) == nibble);
        if hi > lo {
            jobs.push(Job {
                nibble,
                lo,
                hi,
                cur,
            });
        }
        lo = hi;
    }
    // Contiguous chunks of about `updates / threads` updates each (a job
    // goes to the chunk its middle falls in), each with a share of the pool
    // as large as its share of the updates.
    let total = updates.len().max(1);
    let mut chunks: Vec<Chunk> = (0..threads)
        .map(|_| Chunk {
            jobs: Vec::new(),
            pool: Pool::default(),
            done: Vec::new(),
        })
        .collect();
    for job in jobs {
        let t = ((job.lo + job.hi) / 2 * threads / total).min(threads - 1);
        if let Some(chunk) = chunks.get_mut(t) {
            chunk.jobs.push(job);
        }
    }
    // The walk over the root page writes at most the root page, so the
    // chunks get all of the pool.
    let mut left = total;
    for chunk in &mut chunks {
        let share: usize = chunk.jobs.iter().map(|j| j.hi - j.lo).sum();
        chunk.pool = pool.split_off(share, left);
        left = left.saturating_sub(share);
    }
    spawn(store, version, updates, &mut chunks, exec);
    let mut solved: Vec<Option<Solved>> = (0..SUBTREES).map(|_| None).collect();
    for chunk in chunks {
        pool.absorb(chunk.pool);
        for (nibble, res) in chunk.done {
            if let Some(slot) = solved.get_mut(nibble) {
                *slot = Some(res?);
            }
        }
    }
    Ok(solved)
}

/// The old subtree at depth 4 under `nibble`, read from the root page.
fn start_of(page: SlotsRef<'_>, nibble: usize) -> Result<Cur, SmtError> {
    let mut pos = 1u8;
    for level in 0..SPLIT_DEPTH {
        let b = (nibble >> (SPLIT_DEPTH - 1 - level)) & 1;
        let child_pos = (pos << 1) | b as u8;
        let exit = level + 1 == SPLIT_DEPTH;
        match child(page.get(child_pos), exit)? {
            Cur::Inner(_) => pos = child_pos,
            // A leaf above depth 4 sinks along its own key: it is in this
            // subtree only if its first nibble is this one.
            Cur::Leaf(l) => {
                return Ok(if usize::from(l.key.0[0] >> 4) == nibble {
                    Cur::Leaf(l)
                } else {
                    Cur::Empty
                })
            }
            other => return Ok(other),
        }
    }
    Err(corrupt("path runs through the root page"))
}

fn corrupt(what: &str) -> SmtError {
    SmtError::Corrupt(what.into())
}

#[derive(Clone, Copy)]
struct LeafSub {
    key: Hash,
    value: Hash,
    hash: Hash,
}

impl LeafSub {
    fn new(key: Hash, value: Hash) -> Self {
        LeafSub {
            key,
            value,
            hash: leaf_hash(&key, &value),
        }
    }

    fn slot(self) -> Slot {
        Slot::Leaf {
            key: self.key,
            value: self.value,
            hash: self.hash,
        }
    }
}

/// A subtree of the old tree.
enum Cur {
    Empty,
    Leaf(LeafSub),
    /// A stored page rooted here.
    Page(ChildRef),
    /// An internal node inside the old page open at this level.
    Inner(Hash),
}

/// A subtree of the new tree. Leaves stay pending until the parent places
/// them, because a lone leaf lifts to the top of its subtree.
enum Sub {
    Empty,
    Leaf(LeafSub),
    /// A new internal node inside a page; the slots below it are already in
    /// the new page of its level.
    NewInner(Hash),
    /// An untouched internal node inside the old page of its level; placing
    /// it copies the slots below it.
    OldInner(Hash),
    /// A page, newly written or untouched.
    Page(ChildRef),
}

impl Sub {
    fn hash(&self) -> Hash {
        match self {
            Sub::Empty => Hash::ZERO,
            Sub::Leaf(l) => l.hash,
            Sub::NewInner(h) | Sub::OldInner(h) => *h,
            Sub::Page(c) => c.hash,
        }
    }
}

/// Work items of the walk. `lo..hi` are the updates under the node at
/// `depth` (a combined node's range starts at `lo`); `pos` is its heap position in the page of level `depth / 4`
/// (1 when it roots that page).
enum Task {
    Visit {
        depth: usize,
        pos: u8,
        lo: usize,
        hi: usize,
        cur: Cur,
    },
    Combine {
        depth: usize,
        pos: u8,
        lo: usize,
        /// At a page root: the old page it replaces.
        old: Option<ChildRef>,
    },
}

/// What visiting a subtree found.
enum Step {
    Done(Sub),
    /// Update both children (split by the next key bit), then combine.
    Split {
        left: Cur,
        right: Cur,
        old: Option<ChildRef>,
    },
}

struct Walk<'s, 'u, 'p, S> {
    store: &'s S,
    pool: &'p mut Pool,
    version: u64,
    updates: &'u [Update],
    /// The updates under the node the walk starts at.
    lo: usize,
    hi: usize,
    stale: Vec<NodeKey>,
    /// The new pages, stored once the walk is done (see [`apply`]).
    written: Vec<(NodeKey, Slots)>,
    /// The old page being read at each level (grown on first use).
    old: Vec<PageBuf>,
    /// The new page being built at each level (grown on first use).
    new: Vec<Builder>,
    /// Subtrees at [`SPLIT_DEPTH`] built ahead of this walk, by nibble
    /// (empty when none were).
    presolved: Vec<Option<Solved>>,
}

impl<'s, 'u, 'p, S: NodeStore<StoreKey, StoreValue>> Walk<'s, 'u, 'p, S> {
    fn new(store: &'s S, pool: &'p mut Pool, version: u64, updates: &'u [Update]) -> Self {
        Walk {
            store,
            pool,
            version,
            updates,
            lo: 0,
            hi: updates.len(),
            stale: Vec::new(),
            // A batch rewrites about two pages per update at 10^6 keys.
            written: Vec::with_capacity(2 * updates.len()),
            old: Vec::new(),
            new: Vec::new(),
            presolved: Vec::new(),
        }
    }

    /// The post-order walk, with an explicit stack rather than recursion:
    /// keys sharing long prefixes make paths up to 256 levels deep, and the
    /// stack of whatever thread calls this (a 2 MiB test or async worker
    /// thread) must not bound the depth.
    fn run(&mut self, (depth, pos): (usize, u8), cur: Cur) -> Result<Sub, SmtError> {
        let mut tasks = Vec::with_capacity(2 * MAX_DEPTH + 2);
        tasks.push(Task::Visit {
            depth,
            pos,
            lo: self.lo,
            hi: self.hi,
            cur,
        });
        let mut done: Vec<Sub> = Vec::with_capacity(MAX_DEPTH + 2);
        while let Some(task) = tasks.pop() {
            match task {
                Task::Visit {
                    depth,
                    pos,
                    lo,
                    hi,
                    cur,
                } => match self.visit(depth, pos, cur, lo, hi)? {
                    Step::Done(sub) => done.push(sub),
                    Step::Split { left, right, old } => {
                        if depth >= MAX_DEPTH {
                            // Two distinct keys differ within 256 bits, so
                            // this needs duplicate keys or a corrupt store.
                            return Err(corrupt("split below depth 256"));
                        }
                        let range = self.updates.get(lo..hi).unwrap_or(&[]);
                        let mid = lo + range.partition_point(|(k, _)| !bit(&k.0, depth));
                        // The children's positions: a child four levels
                        // below a page root roots the next page.
                        let child = if (depth + 1).is_multiple_of(PAGE_LEVELS) {
                            [1, 1]
                        } else {
                            [pos << 1, (pos << 1) | 1]
                        };
                        tasks.push(Task::Combine {
                            depth,
                            pos,
                            lo,
                            old,
                        });
                        tasks.push(Task::Visit {
                            depth: depth + 1,
                            pos: child[1],
                            lo: mid,
                            hi,
                            cur: right,
                        });
                        tasks.push(Task::Visit {
                            depth: depth + 1,
                            pos: child[0],
                            lo,
                            hi: mid,
                            cur: left,
                        });
                    }
                },
                Task::Combine {
                    depth,
                    pos,
                    lo,
                    old,
                } => {
                    let (Some(r), Some(l)) = (done.pop(), done.pop()) else {
                        return Err(corrupt("batch walk lost a subtree"));
                    };
                    let sub = self.combine(depth, pos, lo, l, r, old)?;
                    done.push(sub);
                }
            }
        }
        match (done.pop(), done.is_empty()) {
            (Some(sub), true) => Ok(sub),
            _ => Err(corrupt("batch walk left stray subtrees")),
        }
    }

    /// A key under the node being visited or combined (its range is never
    /// empty there), whose first `depth` bits are the node's path.
    fn path_of(&self, lo: usize) -> Result<&[u8; 32], SmtError> {
        self.updates
            .get(lo)
            .map(|(k, _)| &k.0)
            .ok_or_else(|| corrupt("node without updates"))
    }

    /// The updates `lo..hi` (all under the node at `depth`, position `pos`)
    /// meet the old subtree `cur`: either the result is known here, or both
    /// children come first.
    fn visit(
        &mut self,
        depth: usize,
        pos: u8,
        cur: Cur,
        lo: usize,
        hi: usize,
    ) -> Result<Step, SmtError> {
        let updates = self.updates.get(lo..hi).unwrap_or(&[]);
        if updates.is_empty() {
            return Ok(Step::Done(match cur {
                Cur::Empty => Sub::Empty,
                Cur::Leaf(l) => Sub::Leaf(l),
                Cur::Page(c) => Sub::Page(c),
                Cur::Inner(h) => Sub::OldInner(h),
            }));
        }
        if depth == SPLIT_DEPTH && !self.presolved.is_empty() {
            let nibble = updates.first().map_or(0, |(k, _)| usize::from(k.0[0] >> 4));
            let Some(solved) = self.presolved.get_mut(nibble).and_then(Option::take) else {
                return Err(corrupt("a subtree was not built"));
            };
            self.stale.extend(solved.stale);
            self.written.extend(solved.written);
            return Ok(Step::Done(solved.sub));
        }
        let level = depth / PAGE_LEVELS;
        let exit = (depth + 1).is_multiple_of(PAGE_LEVELS);
        let leaf = match cur {
            Cur::Empty => {
                if let [(k, v)] = updates {
                    return Ok(Step::Done(match v {
                        None => Sub::Empty,
                        Some(v) => Sub::Leaf(LeafSub::new(*k, *v)),
                    }));
                }
                return Ok(Step::Split {
                    left: Cur::Empty,
                    right: Cur::Empty,
                    old: None,
                });
            }
            Cur::Leaf(leaf) => leaf,
            Cur::Page(this) => {
                if !depth.is_multiple_of(PAGE_LEVELS) {
                    return Err(corrupt("page rooted between page levels"));
                }
                let key = NodeKey::new(this.version, depth, self.path_of(lo)?);
                while self.old.len() <= level {
                    self.old.push(PageBuf::default());
                }
                let open = self
                    .old
                    .get_mut(level)
                    .ok_or_else(|| corrupt("page too deep"))?;
                with_page(self.store, &key, |page| open.load(&page.slots))?;
                let page = open.view();
                return Ok(Step::Split {
                    left: child(page.get(2), exit)?,
                    right: child(page.get(3), exit)?,
                    old: Some(this),
                });
            }
            Cur::Inner(_) => {
                if depth.is_multiple_of(PAGE_LEVELS) {
                    return Err(corrupt("inner node at a page root"));
                }
                let page = self
                    .old
                    .get(level)
                    .ok_or_else(|| corrupt("page too deep"))?
                    .view();
                return Ok(Step::Split {
                    left: child(page.get(pos << 1), exit)?,
                    right: child(page.get((pos << 1) | 1), exit)?,
                    old: None,
                });
            }
        };
        // A subtree holding the single leaf `leaf`.
        if let [(k, v)] = updates {
            if *k == leaf.key {
                return Ok(Step::Done(match v {
                    None => Sub::Empty,
                    Some(v) if *v == leaf.value => Sub::Leaf(leaf),
                    Some(v) => Sub::Leaf(LeafSub::new(*k, *v)),
                }));
            }
        }
        // Other keys share this subtree: descend with the leaf on its side
        // until the keys diverge.
        Ok(if bit(&leaf.key.0, depth) {
            Step::Split {
                left: Cur::Empty,
                right: Cur::Leaf(leaf),
                old: None,
            }
        } else {
            Step::Split {
                left: Cur::Leaf(leaf),
                right: Cur::Empty,
                old: None,
            }
        })
    }

    /// Join two updated children into the subtree at `depth`, position
    /// `pos`: lift a lone leaf, otherwise hash the new internal node, and at
    /// a page root write the page (unless its hash shows nothing changed).
    fn combine(
        &mut self,
        depth: usize,
        pos: u8,
        lo: usize,
        l: Sub,
        r: Sub,
        old: Option<ChildRef>,
    ) -> Result<Sub, SmtError> {
        let lifted = match (&l, &r) {
            (Sub::Empty, Sub::Empty) => Some(Sub::Empty),
            (Sub::Leaf(x), Sub::Empty) | (Sub::Empty, Sub::Leaf(x)) => Some(Sub::Leaf(*x)),
            _ => None,
        };
        if let Some(sub) = lifted {
            if let Some(o) = old {
                let key = NodeKey::new(o.version, depth, self.path_of(lo)?);
                self.stale.push(key);
            }
            return Ok(sub);
        }
        let hash = node_hash(&l.hash(), &r.hash());
        let level = depth / PAGE_LEVELS;
        self.place(level, pos << 1, l)?;
        self.place(level, (pos << 1) | 1, r)?;
        if !depth.is_multiple_of(PAGE_LEVELS) {
            return Ok(Sub::NewInner(hash));
        }
        if let Some(o) = old {
            // Same hash, same subtree: nothing below was rewritten either
            // (each page below made the same check), so keep the old page.
            if o.hash == hash {
                self.building(level)?.clear();
                return Ok(Sub::Page(o));
            }
            let key = NodeKey::new(o.version, depth, self.path_of(lo)?);
            self.stale.push(key);
        }
        let key = NodeKey::new(self.version, depth, self.path_of(lo)?);
        let Some(builder) = self.new.get_mut(level) else {
            return Err(corrupt("page too deep"));
        };
        // The old page of this level, if this page replaces one; a new
        // page keeps nothing from it.
        let old = self.old.get(level).map_or(SlotsRef::EMPTY, PageBuf::view);
        let slots = builder.take(old, self.pool);
        self.written.push((key, slots));
        Ok(Sub::Page(ChildRef {
            version: self.version,
            hash,
        }))
    }

    /// Record the child `sub` at heap position `pos` in the new page of
    /// `level`.
    fn place(&mut self, level: usize, pos: u8, sub: Sub) -> Result<(), SmtError> {
        self.building(level)?;
        let Some(new) = self.new.get_mut(level) else {
            return Err(corrupt("page too deep"));
        };
        match sub {
            Sub::Empty => {}
            Sub::Leaf(l) => new.put(pos, l.slot()),
            Sub::NewInner(h) => new.put(pos, Slot::Internal(h)),
            Sub::Page(c) => new.put(pos, Slot::Page(c)),
            // The page is rewritten as a whole, so the untouched subtree's
            // slots are carried over from the old page (positions are
            // unchanged: only leaves ever move).
            Sub::OldInner(_) => new.keep(pos),
        }
        Ok(())
    }

    /// The page under construction at `level`.
    fn building(&mut self, level: usize) -> Result<&mut Builder, SmtError> {
        if level >= LEVELS {
            return Err(corrupt("page too deep"));
        }
        while self.new.len() <= level {
            self.new.push(Builder::new());
        }
        self.new
            .get_mut(level)
            .ok_or_else(|| corrupt("page too deep"))
    }
}

/// The slot at a position of an old page as a subtree to update; `exit`
/// says whether the position is four levels below the page root.
fn child(slot: Option<Slot>, exit: bool) -> Result<Cur, SmtError> {
    Ok(match slot {
        None => Cur::Empty,
        Some(Slot::Leaf { key, value, hash }) => Cur::Leaf(LeafSub { key, value, hash }),
        Some(Slot::Internal(h)) if !exit => Cur::Inner(h),
        Some(Slot::Page(c)) if exit => Cur::Page(c),
        Some(_) => return Err(corrupt("slot kind does not fit its position")),
    })
}
