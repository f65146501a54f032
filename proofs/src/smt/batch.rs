//! Building a new version from a batch of updates.
//!
//! One post-order walk over the old tree, guided by the sorted batch: a
//! subtree no update reaches is reused by reference; a touched page is read
//! once, its changed nodes hashed once, and the page written once under the
//! new version. The walk keeps, per page level (depth / 4), the old page it
//! is reading and the slots of the new page it is building; since the walk is
//! depth-first, at most one page per level is open at a time.

use super::{
    bit, leaf_hash, node_hash, position, with_bit, ChildRef, NodeKey, Page, Slot, SmtError,
    SparseMerkleTree, StoreKey, StoreValue, MAX_DEPTH, PAGE_LEVELS,
};
use crate::hash::Hash;
use crate::store::NodeStore;

pub(super) type Update = (Hash, Option<Hash>);

/// Page levels: depths 0, 4, …, 252.
const LEVELS: usize = MAX_DEPTH / PAGE_LEVELS;

/// What a batch produced besides the pages it wrote.
pub(super) struct Output {
    pub root: Option<Slot>,
    /// Keys of old pages the new version no longer uses.
    pub stale: Vec<NodeKey>,
    /// Pages written.
    pub written: u64,
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

/// Apply sorted, unique `updates` to the tree whose root is `old_root`,
/// writing the new version's pages.
pub(super) fn apply<S: NodeStore<StoreKey, StoreValue>>(
    tree: &mut SparseMerkleTree<S>,
    version: u64,
    old_root: Option<Slot>,
    updates: &[Update],
) -> Result<Output, SmtError> {
    let cur = match old_root {
        None => Cur::Empty,
        Some(Slot::Leaf { key, value, hash }) => Cur::Leaf(LeafSub { key, value, hash }),
        Some(Slot::Page(c)) => Cur::Page(c),
        Some(Slot::Internal(_)) => return Err(corrupt("internal slot as the root")),
    };
    let mut walk = Walk {
        tree,
        version,
        stale: Vec::new(),
        written: 0,
        old: vec![Page::default(); LEVELS],
        new: Vec::new(),
    };
    let root = match walk.run(cur, updates)? {
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

/// The old page a page-root combine replaces.
struct OldPage {
    key: NodeKey,
    this: ChildRef,
}

/// Work items of the walk; `lo..hi` are the updates under `path[..depth]`.
enum Task {
    Visit {
        depth: usize,
        path: [u8; 32],
        cur: Cur,
        lo: usize,
        hi: usize,
    },
    Combine {
        depth: usize,
        path: [u8; 32],
        old: Option<OldPage>,
    },
}

/// What visiting a subtree found.
enum Step {
    Done(Sub),
    /// Update both children (split by the next key bit), then combine.
    Split {
        left: Cur,
        right: Cur,
        old: Option<OldPage>,
    },
}

struct Walk<'t, S> {
    tree: &'t mut SparseMerkleTree<S>,
    version: u64,
    stale: Vec<NodeKey>,
    written: u64,
    /// The old page being read at each level.
    old: Vec<Page>,
    /// The new page being built at each level (grown on first use).
    new: Vec<Building>,
}

/// A page under construction: slots by heap position, and which are set.
/// A fixed array rather than a list, so pages come out in position order
/// without sorting and each page is allocated once, at its exact size.
struct Building {
    slots: [Option<Slot>; 32],
    set: u32,
}

impl Building {
    fn new() -> Self {
        Building {
            slots: [None; 32],
            set: 0,
        }
    }

    fn put(&mut self, pos: u8, slot: Slot) {
        if let Some(s) = self.slots.get_mut(usize::from(pos)) {
            *s = Some(slot);
            self.set |= 1 << pos;
        }
    }

    /// The slots in position order; leaves the builder empty.
    fn take(&mut self) -> Vec<(u8, Slot)> {
        let mut out = Vec::with_capacity(self.set.count_ones() as usize);
        while self.set != 0 {
            let pos = self.set.trailing_zeros() as u8;
            self.set &= self.set - 1;
            if let Some(slot) = self.slots.get_mut(usize::from(pos)).and_then(Option::take) {
                out.push((pos, slot));
            }
        }
        out
    }

    fn clear(&mut self) {
        while self.set != 0 {
            let pos = self.set.trailing_zeros() as usize;
            self.set &= self.set - 1;
            if let Some(s) = self.slots.get_mut(pos) {
                *s = None;
            }
        }
    }
}

impl<S: NodeStore<StoreKey, StoreValue>> Walk<'_, S> {
    /// The post-order walk, with an explicit stack rather than recursion:
    /// keys sharing long prefixes make paths up to 256 levels deep, and the
    /// stack of whatever thread calls this (a 2 MiB test or async worker
    /// thread) must not bound the depth.
    fn run(&mut self, cur: Cur, updates: &[Update]) -> Result<Sub, SmtError> {
        let mut tasks = vec![Task::Visit {
            depth: 0,
            path: [0u8; 32],
            cur,
            lo: 0,
            hi: updates.len(),
        }];
        let mut done: Vec<Sub> = Vec::new();
        while let Some(task) = tasks.pop() {
            match task {
                Task::Visit {
                    depth,
                    path,
                    cur,
                    lo,
                    hi,
                } => {
                    let range = updates.get(lo..hi).unwrap_or(&[]);
                    match self.visit(depth, &path, cur, range)? {
                        Step::Done(sub) => done.push(sub),
                        Step::Split { left, right, old } => {
                            if depth >= MAX_DEPTH {
                                // Two distinct keys differ within 256 bits,
                                // so this needs duplicate keys or a corrupt
                                // store.
                                return Err(corrupt("split below depth 256"));
                            }
                            let mid = lo + range.partition_point(|(k, _)| !bit(&k.0, depth));
                            tasks.push(Task::Combine { depth, path, old });
                            tasks.push(Task::Visit {
                                depth: depth + 1,
                                path: with_bit(&path, depth),
                                cur: right,
                                lo: mid,
                                hi,
                            });
                            tasks.push(Task::Visit {
                                depth: depth + 1,
                                path,
                                cur: left,
                                lo,
                                hi: mid,
                            });
                        }
                    }
                }
                Task::Combine { depth, path, old } => {
                    let (Some(r), Some(l)) = (done.pop(), done.pop()) else {
                        return Err(corrupt("batch walk lost a subtree"));
                    };
                    let sub = self.combine(depth, &path, l, r, old)?;
                    done.push(sub);
                }
            }
        }
        match (done.pop(), done.is_empty()) {
            (Some(sub), true) => Ok(sub),
            _ => Err(corrupt("batch walk left stray subtrees")),
        }
    }

    /// `updates` (all under `path[..depth]`) meet the old subtree `cur`:
    /// either the result is known here, or both children come first.
    fn visit(
        &mut self,
        depth: usize,
        path: &[u8; 32],
        cur: Cur,
        updates: &[Update],
    ) -> Result<Step, SmtError> {
        if updates.is_empty() {
            return Ok(Step::Done(match cur {
                Cur::Empty => Sub::Empty,
                Cur::Leaf(l) => Sub::Leaf(l),
                Cur::Page(c) => Sub::Page(c),
                Cur::Inner(h) => Sub::OldInner(h),
            }));
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
                let key = NodeKey::new(this.version, depth, path);
                let page = self.tree.load_page(&key)?;
                let left = child(&page, 2, exit)?;
                let right = child(&page, 3, exit)?;
                let open = self
                    .old
                    .get_mut(level)
                    .ok_or_else(|| corrupt("page too deep"))?;
                *open = page;
                return Ok(Step::Split {
                    left,
                    right,
                    old: Some(OldPage { key, this }),
                });
            }
            Cur::Inner(_) => {
                if depth.is_multiple_of(PAGE_LEVELS) {
                    return Err(corrupt("inner node at a page root"));
                }
                let pos = position(path, level * PAGE_LEVELS, depth);
                let page = self
                    .old
                    .get(level)
                    .ok_or_else(|| corrupt("page too deep"))?;
                return Ok(Step::Split {
                    left: child(page, pos << 1, exit)?,
                    right: child(page, (pos << 1) | 1, exit)?,
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

    /// Join two updated children into the subtree at `path[..depth]`:
    /// lift a lone leaf, otherwise hash the new internal node, and at a page
    /// root write the page (unless its hash shows nothing changed).
    fn combine(
        &mut self,
        depth: usize,
        path: &[u8; 32],
        l: Sub,
        r: Sub,
        old: Option<OldPage>,
    ) -> Result<Sub, SmtError> {
        let lifted = match (&l, &r) {
            (Sub::Empty, Sub::Empty) => Some(Sub::Empty),
            (Sub::Leaf(x), Sub::Empty) | (Sub::Empty, Sub::Leaf(x)) => Some(Sub::Leaf(*x)),
            _ => None,
        };
        if let Some(sub) = lifted {
            if let Some(o) = old {
                self.stale.push(o.key);
            }
            return Ok(sub);
        }
        let hash = node_hash(&l.hash(), &r.hash());
        self.place(depth + 1, path, l)?;
        self.place(depth + 1, &with_bit(path, depth), r)?;
        if !depth.is_multiple_of(PAGE_LEVELS) {
            return Ok(Sub::NewInner(hash));
        }
        let level = depth / PAGE_LEVELS;
        if let Some(o) = old {
            // Same hash, same subtree: nothing below was rewritten either
            // (each page below made the same check), so keep the old page.
            if o.this.hash == hash {
                self.building(level)?.clear();
                return Ok(Sub::Page(o.this));
            }
            self.stale.push(o.key);
        }
        let slots = self.building(level)?.take();
        let key = NodeKey::new(self.version, depth, path);
        self.tree
            .store
            .put(StoreKey::Page(key), StoreValue::Page(Page { slots }))?;
        self.written += 1;
        Ok(Sub::Page(ChildRef {
            version: self.version,
            hash,
        }))
    }

    /// Record the child `sub` at `depth` on `path` in the new page of its
    /// parent's level.
    fn place(&mut self, depth: usize, path: &[u8; 32], sub: Sub) -> Result<(), SmtError> {
        let level = (depth - 1) / PAGE_LEVELS;
        let pos = position(path, level * PAGE_LEVELS, depth);
        self.building(level)?;
        let (Some(new), Some(old)) = (self.new.get_mut(level), self.old.get(level)) else {
            return Err(corrupt("page too deep"));
        };
        match sub {
            Sub::Empty => {}
            Sub::Leaf(l) => new.put(pos, l.slot()),
            Sub::NewInner(h) => new.put(pos, Slot::Internal(h)),
            Sub::Page(c) => new.put(pos, Slot::Page(c)),
            Sub::OldInner(h) => {
                new.put(pos, Slot::Internal(h));
                // The page is rewritten as a whole, so the untouched subtree's
                // slots are carried over (positions are unchanged: only
                // leaves ever move).
                for (p, slot) in &old.slots {
                    if is_below(*p, pos) {
                        new.put(*p, *slot);
                    }
                }
            }
        }
        Ok(())
    }

    /// The page under construction at `level`.
    fn building(&mut self, level: usize) -> Result<&mut Building, SmtError> {
        if level >= LEVELS {
            return Err(corrupt("page too deep"));
        }
        while self.new.len() <= level {
            self.new.push(Building::new());
        }
        self.new
            .get_mut(level)
            .ok_or_else(|| corrupt("page too deep"))
    }
}

/// The slot at heap position `pos` of an old page as a subtree to update;
/// `exit` says whether `pos` is four levels below the page root.
fn child(page: &Page, pos: u8, exit: bool) -> Result<Cur, SmtError> {
    Ok(match page.slot(pos) {
        None => Cur::Empty,
        Some(&Slot::Leaf { key, value, hash }) => Cur::Leaf(LeafSub { key, value, hash }),
        Some(&Slot::Internal(h)) if !exit => Cur::Inner(h),
        Some(&Slot::Page(c)) if exit => Cur::Page(c),
        Some(_) => return Err(corrupt("slot kind does not fit its position")),
    })
}

/// Whether heap position `p` lies strictly below position `h`.
fn is_below(p: u8, h: u8) -> bool {
    let shift = h.leading_zeros().saturating_sub(p.leading_zeros());
    shift > 0 && p >> shift == h
}
