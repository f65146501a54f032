//! The stored form of a page, and the buffers a batch reads and builds
//! pages in.
//!
//! A page holds up to 30 slots (heap positions 2..=31) of three kinds whose
//! sizes differ threefold (an internal node is a hash, a leaf a key, a value
//! and a hash), so it is stored packed rather than as a list of equal-sized
//! enums: two bitmaps say which positions are present and which of those are
//! leaves, and one byte string holds the present slots in position order.
//! A slot's kind follows from its position and the leaf bitmap (a non-leaf
//! at an inner position 2..=15 is an internal node, at an exit 16..=31 a
//! page reference), and its offset from popcounts of the bitmaps below it,
//! so any slot is read in constant time without decoding the page.

use super::{ChildRef, Slot};
use crate::hash::Hash;
use serde::de::Error as _;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Bytes of every slot: its hash.
const HASH_BYTES: usize = 32;
/// Extra bytes of a leaf: its key and value.
const LEAF_BYTES: usize = 64;
/// Extra bytes of a page reference: the version that wrote the page, LE.
const REF_BYTES: usize = 8;
/// The most data a page can have: 30 leaves.
const MAX_DATA: usize = 30 * (HASH_BYTES + LEAF_BYTES);
/// The exit positions 16..=31.
const EXITS: u32 = 0xFFFF_0000;
/// The positions a page can hold: 2..=31 (1 is the page root itself).
const POSITIONS: u32 = !0b11;

/// The byte length of the slots in `present` (of which `leaves` are leaves).
fn data_len(present: u32, leaves: u32) -> usize {
    present.count_ones() as usize * HASH_BYTES
        + leaves.count_ones() as usize * LEAF_BYTES
        + (present & !leaves & EXITS).count_ones() as usize * REF_BYTES
}

/// Positions strictly below each heap position 0..32 within a page.
const BELOW: [u32; 32] = below_masks();

const fn below_masks() -> [u32; 32] {
    let mut out = [0u32; 32];
    let mut pos = 1usize;
    while pos < 32 {
        let mut mask = 0u32;
        let mut first = pos << 1;
        let mut width = 2usize;
        while first < 32 {
            let mut i = 0;
            while i < width {
                mask |= 1 << (first + i);
                i += 1;
            }
            first <<= 1;
            width <<= 1;
        }
        out[pos] = mask;
        pos += 1;
    }
    out
}

fn read_hash(data: &[u8], at: usize) -> Hash {
    let mut h = [0u8; 32];
    if let Some(bytes) = data.get(at..at + HASH_BYTES) {
        h.copy_from_slice(bytes);
    }
    Hash(h)
}

fn read_u64(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(bytes) = data.get(at..at + REF_BYTES) {
        b.copy_from_slice(bytes);
    }
    u64::from_le_bytes(b)
}

/// A borrowed view of a page's slots. Every constructor checks that `data`
/// has exactly the length the bitmaps call for, so reads stay in bounds.
#[derive(Clone, Copy)]
pub(super) struct SlotsRef<'a> {
    present: u32,
    leaves: u32,
    data: &'a [u8],
}

impl<'a> SlotsRef<'a> {
    pub(super) const EMPTY: SlotsRef<'static> = SlotsRef {
        present: 0,
        leaves: 0,
        data: &[],
    };

    /// The slot at heap position `pos`, if non-empty.
    #[inline]
    pub(super) fn get(&self, pos: u8) -> Option<Slot> {
        let bit = 1u32.checked_shl(u32::from(pos))?;
        if self.present & bit == 0 {
            return None;
        }
        let below = bit - 1;
        let at = data_len(self.present & below, self.leaves & below);
        Some(self.read(pos, at))
    }

    /// The slot at `pos` (present) whose bytes start at `at`.
    #[inline]
    fn read(&self, pos: u8, at: usize) -> Slot {
        let hash = read_hash(self.data, at);
        if self.leaves & (1u32 << pos) != 0 {
            Slot::Leaf {
                key: read_hash(self.data, at + HASH_BYTES),
                value: read_hash(self.data, at + 2 * HASH_BYTES),
                hash,
            }
        } else if pos >= 16 {
            Slot::Page(ChildRef {
                version: read_u64(self.data, at + HASH_BYTES),
                hash,
            })
        } else {
            Slot::Internal(hash)
        }
    }

    /// The present slots whose positions are in `mask`, in position order.
    pub(super) fn iter_masked(self, mask: u32) -> impl Iterator<Item = (u8, Slot)> + 'a {
        let mut rest = self.present;
        let mut at = 0usize;
        std::iter::from_fn(move || loop {
            if rest == 0 {
                return None;
            }
            let pos = rest.trailing_zeros() as u8;
            let bit = 1u32 << pos;
            rest &= rest - 1;
            let here = at;
            at += data_len(bit, self.leaves & bit);
            if mask & bit != 0 {
                return Some((pos, self.read(pos, here)));
            }
        })
    }
}

/// A page's slots, packed (see the module docs). Only constructed with
/// consistent bitmaps and data, including when deserialised.
#[derive(Clone, Default)]
pub struct Slots {
    /// Bit `p` set: position `p` is non-empty.
    present: u32,
    /// Bit `p` set: position `p` holds a leaf.
    leaves: u32,
    /// The present slots in position order: each one's hash, then a leaf's
    /// key and value, or a page reference's version (u64 LE). May run on
    /// past them (a recycled buffer, see [`Pool`]); the rest is ignored.
    data: Box<[u8]>,
}

impl PartialEq for Slots {
    fn eq(&self, other: &Self) -> bool {
        self.present == other.present && self.leaves == other.leaves && self.used() == other.used()
    }
}

impl Eq for Slots {}

impl Slots {
    /// The number of non-empty positions.
    pub fn len(&self) -> usize {
        self.present.count_ones() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.present == 0
    }

    /// The slot at heap position `pos`, if non-empty.
    pub fn get(&self, pos: u8) -> Option<Slot> {
        self.view().get(pos)
    }

    /// The non-empty positions and their slots, in position order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, Slot)> + '_ {
        self.view().iter_masked(!0)
    }

    /// Pack slots given in any order; `None` if a position is out of
    /// range or repeated, or a slot's kind does not fit its position.
    pub fn from_slots(slots: impl IntoIterator<Item = (u8, Slot)>) -> Option<Self> {
        let mut b = Builder::new();
        for (pos, slot) in slots {
            let bit = 1u32.checked_shl(u32::from(pos))?;
            let fits = match slot {
                Slot::Internal(_) => (2..16).contains(&pos),
                Slot::Leaf { .. } => pos >= 2,
                Slot::Page(_) => pos >= 16,
            };
            if !fits || b.present & bit != 0 {
                return None;
            }
            b.put(pos, slot);
        }
        Some(b.take(Slots::default().view(), &mut Pool::default()))
    }

    pub(super) fn view(&self) -> SlotsRef<'_> {
        SlotsRef {
            present: self.present,
            leaves: self.leaves,
            data: self.used(),
        }
    }

    /// The bytes the slots occupy.
    fn used(&self) -> &[u8] {
        let len = data_len(self.present, self.leaves);
        self.data.get(..len).unwrap_or(&self.data)
    }
}

impl fmt::Debug for Slots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Slots {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Slots", 3)?;
        st.serialize_field("present", &self.present)?;
        st.serialize_field("leaves", &self.leaves)?;
        // As bytes, not a sequence of u8 (the same postcard encoding, one
        // copy instead of a call per byte).
        st.serialize_field("data", serde_bytes::Bytes::new(self.used()))?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Slots {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "Slots")]
        struct Raw {
            present: u32,
            leaves: u32,
            data: serde_bytes::ByteBuf,
        }
        let raw = Raw::deserialize(d)?;
        if raw.present & !POSITIONS != 0
            || raw.leaves & !raw.present != 0
            || raw.data.len() != data_len(raw.present, raw.leaves)
        {
            return Err(D::Error::custom("inconsistent page slots"));
        }
        Ok(Slots {
            present: raw.present,
            leaves: raw.leaves,
            data: raw.data.into_vec().into_boxed_slice(),
        })
    }
}

/// A reusable copy of the old page a batch is reading at one page level.
#[derive(Default)]
pub(super) struct PageBuf {
    present: u32,
    leaves: u32,
    data: Vec<u8>,
}

impl PageBuf {
    pub(super) fn load(&mut self, slots: &Slots) {
        self.present = slots.present;
        self.leaves = slots.leaves;
        self.data.clear();
        self.data.extend_from_slice(slots.used());
    }

    pub(super) fn view(&self) -> SlotsRef<'_> {
        SlotsRef {
            present: self.present,
            leaves: self.leaves,
            data: &self.data,
        }
    }
}

/// A page under construction: the slots placed so far, by position, and
/// the untouched subtrees to carry over from the old page at that position.
/// Slots are placed in any order (a batch places them children first) and
/// come out packed in position order.
pub(super) struct Builder {
    /// Positions placed, and which of them are leaves.
    present: u32,
    leaves: u32,
    /// Positions to copy from the old page (where present there).
    keep: u32,
    hash: [Hash; 32],
    key: [Hash; 32],
    value: [Hash; 32],
    version: [u64; 32],
}

impl Builder {
    pub(super) fn new() -> Self {
        Builder {
            present: 0,
            leaves: 0,
            keep: 0,
            hash: [Hash::ZERO; 32],
            key: [Hash::ZERO; 32],
            value: [Hash::ZERO; 32],
            version: [0; 32],
        }
    }

    /// Set position `pos` (2..=31). The slot's kind must fit the position:
    /// an internal node inside the page, a page reference at an exit.
    #[inline]
    pub(super) fn put(&mut self, pos: u8, slot: Slot) {
        let i = usize::from(pos);
        let Some(h) = self.hash.get_mut(i) else {
            return;
        };
        let bit = 1u32 << pos;
        self.present |= bit;
        self.leaves &= !bit;
        match slot {
            Slot::Internal(hash) => {
                debug_assert!((2..16).contains(&pos), "internal slot at {pos}");
                *h = hash;
            }
            Slot::Leaf { key, value, hash } => {
                *h = hash;
                self.leaves |= bit;
                if let (Some(k), Some(v)) = (self.key.get_mut(i), self.value.get_mut(i)) {
                    *k = key;
                    *v = value;
                }
            }
            Slot::Page(c) => {
                debug_assert!(pos >= 16, "page reference at {pos}");
                *h = c.hash;
                if let Some(v) = self.version.get_mut(i) {
                    *v = c.version;
                }
            }
        }
    }

    /// Carry over the old page's subtree at `pos` (the node and everything
    /// below it) unchanged.
    pub(super) fn keep(&mut self, pos: u8) {
        let below = BELOW.get(usize::from(pos)).copied().unwrap_or(0);
        self.keep |= below | 1u32.checked_shl(u32::from(pos)).unwrap_or(0);
    }

    pub(super) fn clear(&mut self) {
        self.present = 0;
        self.leaves = 0;
        self.keep = 0;
    }

    /// The packed slots, in a buffer from `pool`, taking the kept subtrees
    /// from `old`; leaves the builder empty.
    pub(super) fn take(&mut self, old: SlotsRef<'_>, pool: &mut Pool) -> Slots {
        let kept = self.keep & old.present;
        let present = self.present | kept;
        let leaves = self.leaves | (kept & old.leaves);
        let mut data = pool.alloc(data_len(present, leaves));
        let mut out = Writer {
            buf: &mut data,
            at: 0,
        };
        // Old slots are read in position order too, so their offsets are
        // a running sum.
        let mut old_rest = old.present;
        let mut old_at = 0usize;
        let mut rest = present;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            let bit = 1u32 << i;
            rest &= rest - 1;
            if kept & bit != 0 {
                // Skip the old slots before this one.
                let before = old_rest & (bit - 1);
                old_at += data_len(before, old.leaves & before);
                old_rest &= !(before | bit);
                let len = data_len(bit, old.leaves & bit);
                if let Some(bytes) = old.data.get(old_at..old_at + len) {
                    out.put(bytes);
                }
                old_at += len;
                continue;
            }
            if let Some(h) = self.hash.get(i) {
                out.put(&h.0);
            }
            if self.leaves & bit != 0 {
                if let (Some(k), Some(v)) = (self.key.get(i), self.value.get(i)) {
                    out.put(&k.0);
                    out.put(&v.0);
                }
            } else if i >= 16 {
                if let Some(v) = self.version.get(i) {
                    out.put(&v.to_le_bytes());
                }
            }
        }
        self.clear();
        Slots {
            present,
            leaves,
            data,
        }
    }
}

/// Sequential writes into a buffer known to be long enough.
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        if let Some(dst) = self.buf.get_mut(self.at..end) {
            dst.copy_from_slice(bytes);
        }
        self.at = end;
    }
}

/// Granularity of page buffers: lengths are rounded up to a multiple of
/// this, so a freed buffer fits any later page of its size class.
const CLASS_BYTES: usize = 64;
/// Size classes: the largest page (30 leaves) fits in the last one.
const CLASSES: usize = MAX_DATA.div_ceil(CLASS_BYTES) + 1;
const _: () = assert!(CLASSES <= 64, "the unsorted-class mask is a u64");

/// Buffers of pruned pages, kept for the pages of the next batches.
///
/// A batch writes about as many pages as its pruning frees, and both are
/// scattered over a heap far larger than the caches: handing the freed
/// buffers straight to the next batch skips the allocator's work on cold
/// memory (a free that coalesces with its neighbours touches their headers
/// too), which otherwise costs more than hashing. Holds at most
/// [`Pool::MAX_BYTES`]; beyond that buffers go back to the allocator.
#[derive(Default)]
pub(super) struct Pool {
    /// Buffers by size class: `free[c]` holds buffers of at least
    /// `c * CLASS_BYTES` bytes.
    free: Vec<Vec<Box<[u8]>>>,
    bytes: usize,
    /// Classes that gained buffers since they were last sorted (bit `c`).
    unsorted: u64,
}

impl Pool {
    /// About what a batch of 10^4 updates frees at 10^6 to 10^7 keys.
    pub(super) const MAX_BYTES: usize = 32 << 20;

    /// Keep the buffer of a page that is no longer stored.
    pub(super) fn recycle(&mut self, slots: Slots) {
        let buf = slots.data;
        let class = buf.len() / CLASS_BYTES;
        if class == 0 || self.bytes + buf.len() > Self::MAX_BYTES {
            return;
        }
        if self.free.len() < CLASSES {
            self.free.resize_with(CLASSES, Vec::new);
        }
        let class = class.min(CLASSES - 1);
        if let Some(list) = self.free.get_mut(class) {
            self.bytes += buf.len();
            list.push(buf);
            self.unsorted |= 1 << class;
        }
    }

    /// Order each size class so that buffers are handed out by increasing
    /// address: consecutive new pages then land near each other, sharing
    /// TLB entries and DRAM pages, instead of all over the heap. Only
    /// classes that gained buffers are sorted, and a stable sort of a
    /// sorted list with a tail appended costs little more than the tail.
    pub(super) fn sort(&mut self) {
        for (c, list) in self.free.iter_mut().enumerate() {
            if self.unsorted & (1 << c) != 0 {
                list.sort_by_key(|b| std::cmp::Reverse(b.as_ptr() as usize));
            }
        }
        self.unsorted = 0;
    }

    /// Move about `share / total` of the buffers of each size class, the
    /// highest addressed, into a new pool (for a thread building part of a
    /// batch).
    pub(super) fn split_off(&mut self, share: usize, total: usize) -> Pool {
        let mut out = Pool::default();
        if share == 0 || total == 0 {
            return out;
        }
        out.free.resize_with(self.free.len(), Vec::new);
        for (list, to) in self.free.iter_mut().zip(out.free.iter_mut()) {
            // Sorted by decreasing address, handed out from the end.
            let n = (list.len() * share.min(total)).div_ceil(total);
            to.extend(list.drain(..n));
            let bytes: usize = to.iter().map(|b| b.len()).sum();
            self.bytes -= bytes;
            out.bytes += bytes;
        }
        out
    }

    /// Take back the buffers of a pool made by [`Pool::split_off`].
    pub(super) fn absorb(&mut self, other: Pool) {
        if self.free.len() < other.free.len() {
            self.free.resize_with(other.free.len(), Vec::new);
        }
        for (c, (list, from)) in self.free.iter_mut().zip(other.free).enumerate() {
            if !from.is_empty() {
                list.extend(from);
                self.unsorted |= 1 << c;
            }
        }
        self.bytes += other.bytes;
    }

    /// A buffer of at least `len` bytes (contents unspecified).
    fn alloc(&mut self, len: usize) -> Box<[u8]> {
        let class = len.div_ceil(CLASS_BYTES);
        // Take from the exact class, or waste at most one class more.
        for c in [class, class + 1] {
            if let Some(buf) = self.free.get_mut(c).and_then(Vec::pop) {
                self.bytes -= buf.len();
                return buf;
            }
        }
        vec![0u8; class * CLASS_BYTES].into_boxed_slice()
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("bytes", &self.bytes).finish()
    }
}

/// A copy of a tree starts with an empty pool.
impl Clone for Pool {
    fn clone(&self) -> Self {
        Pool::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u8) -> Hash {
        Hash([i; 32])
    }

    #[test]
    fn below_masks_are_subtrees() {
        assert_eq!(BELOW[1], POSITIONS);
        assert_eq!(BELOW[2], 0b11 << 4 | 0b1111 << 8 | 0xFF << 16);
        assert_eq!(BELOW[2] & BELOW[3], 0);
        assert_eq!(BELOW[2] | BELOW[3] | 0b1100, POSITIONS);
        assert_eq!(BELOW[15], 0b11 << 30);
        assert!(BELOW[16..].iter().all(|&m| m == 0));
    }

    #[test]
    fn pack_and_read_back() {
        let slots = vec![
            (2u8, Slot::Internal(h(1))),
            (
                3,
                Slot::Leaf {
                    key: h(2),
                    value: h(3),
                    hash: h(4),
                },
            ),
            (5, Slot::Internal(h(5))),
            (
                17,
                Slot::Page(ChildRef {
                    version: 0x0102_0304_0506_0708,
                    hash: h(6),
                }),
            ),
            (
                31,
                Slot::Leaf {
                    key: h(7),
                    value: h(8),
                    hash: h(9),
                },
            ),
        ];
        // Placed out of order, packed in order.
        let packed = Slots::from_slots(slots.iter().rev().copied()).unwrap();
        assert_eq!(packed.len(), 5);
        assert_eq!(packed.iter().collect::<Vec<_>>(), slots);
        for (p, s) in &slots {
            assert_eq!(packed.get(*p), Some(*s));
        }
        assert_eq!(packed.get(4), None);
        assert_eq!(packed.get(40), None);
        let bytes = crate::codec::encode(&packed);
        let back: Slots = crate::codec::decode(&bytes, 4096).unwrap();
        assert_eq!(back, packed);
        let mut below = Builder::new();
        below.keep(2);
        let mut pool = Pool::default();
        let kept = below.take(packed.view(), &mut pool);
        assert_eq!(
            kept.iter().collect::<Vec<_>>(),
            [slots[0], slots[2], slots[3]]
        );
        // Kept slots merge with placed ones in position order.
        let mut merged = Builder::new();
        merged.keep(5);
        merged.put(3, slots[1].1);
        merged.put(31, slots[4].1);
        merged.put(4, Slot::Internal(h(10)));
        let merged = merged.take(packed.view(), &mut pool);
        assert_eq!(
            merged.iter().collect::<Vec<_>>(),
            [slots[1], (4, Slot::Internal(h(10))), slots[2], slots[4]]
        );
        // A recycled (longer) buffer holds the same slots.
        let big = Slots::from_slots((2..14).map(|p| (p, Slot::Internal(h(p))))).unwrap();
        pool.recycle(big);
        let mut b = Builder::new();
        for (p, s) in &slots {
            b.put(*p, *s);
        }
        let reused = b.take(Slots::default().view(), &mut pool);
        assert_eq!(pool.bytes, 0);
        assert!(reused.data.len() > data_len(reused.present, reused.leaves));
        assert_eq!(reused, packed);
        assert_eq!(crate::codec::encode(&reused), bytes);
    }

    #[test]
    fn pool_split_and_absorb_keep_every_buffer() {
        let mut pool = Pool::default();
        for len in [2usize, 2, 2, 5, 5, 14, 14, 14, 14] {
            let slots =
                Slots::from_slots((2..2 + len as u8).map(|p| (p, Slot::Internal(h(p))))).unwrap();
            pool.recycle(slots);
        }
        pool.sort();
        let (bytes, count) = (pool.bytes, pool.free.iter().map(Vec::len).sum::<usize>());
        let first = pool.split_off(1, 2);
        let second = pool.split_off(1, 1);
        assert_eq!(pool.bytes, 0);
        assert_eq!(first.bytes + second.bytes, bytes);
        assert!(first.free.iter().map(Vec::len).sum::<usize>() >= count / 2);
        pool.absorb(first);
        pool.absorb(second);
        pool.sort();
        assert_eq!(pool.bytes, bytes);
        assert_eq!(pool.free.iter().map(Vec::len).sum::<usize>(), count);
        // Handed out lowest address first within a class.
        for list in &pool.free {
            assert!(list.windows(2).all(|w| w[0].as_ptr() >= w[1].as_ptr()));
        }
    }

    #[test]
    fn inconsistent_slots_do_not_decode() {
        let packed = Slots::from_slots([(2u8, Slot::Internal(h(1)))]).unwrap();
        let mut bytes = crate::codec::encode(&packed);
        // present = bit 2 → make it claim bit 3 as well.
        bytes[0] |= 0b1000;
        assert!(crate::codec::decode::<Slots>(&bytes, 4096).is_err());
        assert!(Slots::from_slots([(16u8, Slot::Internal(h(1)))]).is_none());
        assert!(Slots::from_slots([(
            3u8,
            Slot::Page(ChildRef {
                version: 1,
                hash: h(1)
            })
        )])
        .is_none());
        assert!(Slots::from_slots([(1u8, Slot::Internal(h(1)))]).is_none());
    }
}
