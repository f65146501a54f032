//! Byte keys for LMDB.
//!
//! LMDB orders keys by comparing their bytes, so every key that must sort
//! numerically (rounds, heights, versions, positions) is written as a
//! fixed-width big-endian integer here. Postcard's varints would not do:
//! `256` encodes as `80 02` and sorts before `129` (`81 01`). [`KeyBytes`] maps
//! the key types of the `proofs` structures to such bytes and back; the
//! decoders accept exactly the bytes the encoders produce, so a damaged key
//! is reported instead of being read as some other key.

use proofs::key_index::IndexKey;
use proofs::smt::{NodeKey, StoreKey};
use proofs::Hash;

/// A key of a Merkle structure's node store, as LMDB key bytes.
///
/// For the key types here, byte order is the order that matters: the
/// integers inside are big-endian, and for [`StoreKey`] the byte order is
/// exactly its derived `Ord` (tested).
pub trait KeyBytes: Sized {
    /// Names the key layout. Recorded with each node database so a database
    /// written for one structure is never opened as another's.
    const KIND: &'static str;

    /// Append this key's bytes to `out`.
    fn write_key(&self, out: &mut Vec<u8>);

    /// Parse key bytes; `None` unless `bytes` is exactly an encoding.
    fn read_key(bytes: &[u8]) -> Option<Self>;

    fn key_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        self.write_key(&mut out);
        out
    }
}

/// `u64` as 8 big-endian bytes.
pub fn be_u64(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Read exactly 8 big-endian bytes.
pub fn read_be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn read_hash(bytes: &[u8]) -> Option<Hash> {
    Some(Hash(bytes.try_into().ok()?))
}

/// MMR positions: 8 bytes big-endian, so appends land at the right edge of
/// the B-tree.
impl KeyBytes for u64 {
    const KIND: &'static str = "mmr/v1";

    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&be_u64(*self));
    }

    fn read_key(bytes: &[u8]) -> Option<Self> {
        read_be_u64(bytes)
    }
}

const SMT_PAGE: u8 = 0;
const SMT_ROOT: u8 = 1;
const SMT_STALE: u8 = 2;
const SMT_META: u8 = 3;

/// Sparse Merkle tree keys: a tag byte in variant order, then
/// - `Page`: version (8, BE) ‖ depth (2, BE) ‖ path (32) — 43 bytes; a
///   batch's pages share a version prefix, so they are written side by side
///   and pruned together;
/// - `Root(v)`, `Stale(v)`: v (8, BE) — 9 bytes;
/// - `Meta`: the tag alone — 1 byte.
impl KeyBytes for StoreKey {
    const KIND: &'static str = "smt/v1";

    fn write_key(&self, out: &mut Vec<u8>) {
        match self {
            StoreKey::Page(k) => {
                out.push(SMT_PAGE);
                out.extend_from_slice(&be_u64(k.version));
                out.extend_from_slice(&k.depth.to_be_bytes());
                out.extend_from_slice(&k.path);
            }
            StoreKey::Root(v) => {
                out.push(SMT_ROOT);
                out.extend_from_slice(&be_u64(*v));
            }
            StoreKey::Stale(v) => {
                out.push(SMT_STALE);
                out.extend_from_slice(&be_u64(*v));
            }
            StoreKey::Meta => out.push(SMT_META),
        }
    }

    fn read_key(bytes: &[u8]) -> Option<Self> {
        let (&tag, rest) = bytes.split_first()?;
        match tag {
            SMT_PAGE if rest.len() == 42 => {
                let (version, rest) = rest.split_at(8);
                let (depth, path) = rest.split_at(2);
                Some(StoreKey::Page(NodeKey {
                    version: read_be_u64(version)?,
                    depth: u16::from_be_bytes(depth.try_into().ok()?),
                    path: path.try_into().ok()?,
                }))
            }
            SMT_ROOT => Some(StoreKey::Root(read_be_u64(rest)?)),
            SMT_STALE => Some(StoreKey::Stale(read_be_u64(rest)?)),
            SMT_META if rest.is_empty() => Some(StoreKey::Meta),
            _ => None,
        }
    }
}

const IDX_LIST_NODE: u8 = 0;
const IDX_ENTRY: u8 = 1;
const IDX_SIZES: u8 = 2;
const IDX_LAST_HEIGHT: u8 = 3;

/// Key index keys: a tag byte, then
/// - `ListNode(key, pos)`, `Entry(key, index)`: key (32) ‖ n (8, BE) — 41
///   bytes; one key's list nodes and entries are contiguous and in order;
/// - `Sizes(key)`: key (32) — 33 bytes;
/// - `LastHeight`: the tag alone — 1 byte.
impl KeyBytes for IndexKey {
    const KIND: &'static str = "key-index/v1";

    fn write_key(&self, out: &mut Vec<u8>) {
        match self {
            IndexKey::ListNode(k, n) | IndexKey::Entry(k, n) => {
                out.push(if matches!(self, IndexKey::ListNode(..)) {
                    IDX_LIST_NODE
                } else {
                    IDX_ENTRY
                });
                out.extend_from_slice(&k.0);
                out.extend_from_slice(&be_u64(*n));
            }
            IndexKey::Sizes(k) => {
                out.push(IDX_SIZES);
                out.extend_from_slice(&k.0);
            }
            IndexKey::LastHeight => out.push(IDX_LAST_HEIGHT),
        }
    }

    fn read_key(bytes: &[u8]) -> Option<Self> {
        let (&tag, rest) = bytes.split_first()?;
        match tag {
            IDX_LIST_NODE | IDX_ENTRY if rest.len() == 40 => {
                let (k, n) = rest.split_at(32);
                let (k, n) = (read_hash(k)?, read_be_u64(n)?);
                Some(if tag == IDX_LIST_NODE {
                    IndexKey::ListNode(k, n)
                } else {
                    IndexKey::Entry(k, n)
                })
            }
            IDX_SIZES => Some(IndexKey::Sizes(read_hash(rest)?)),
            IDX_LAST_HEIGHT if rest.is_empty() => Some(IndexKey::LastHeight),
            _ => None,
        }
    }
}

/// Ids (an output's, say): the 32 bytes themselves.
impl KeyBytes for Hash {
    const KIND: &'static str = "id/v1";

    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }

    fn read_key(bytes: &[u8]) -> Option<Self> {
        read_hash(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn store_key() -> impl Strategy<Value = StoreKey> {
        prop_oneof![
            (any::<u64>(), 0u16..=256, any::<[u8; 32]>()).prop_map(|(version, depth, path)| {
                StoreKey::Page(NodeKey {
                    version,
                    depth,
                    path,
                })
            }),
            any::<u64>().prop_map(StoreKey::Root),
            any::<u64>().prop_map(StoreKey::Stale),
            Just(StoreKey::Meta),
        ]
    }

    fn index_key() -> impl Strategy<Value = IndexKey> {
        let h = any::<[u8; 32]>().prop_map(Hash);
        prop_oneof![
            (h.clone(), any::<u64>()).prop_map(|(k, n)| IndexKey::ListNode(k, n)),
            (h.clone(), any::<u64>()).prop_map(|(k, n)| IndexKey::Entry(k, n)),
            h.prop_map(IndexKey::Sizes),
            Just(IndexKey::LastHeight),
        ]
    }

    proptest! {
        #[test]
        fn u64_roundtrip_and_order(a: u64, b: u64) {
            prop_assert_eq!(u64::read_key(&a.key_bytes()), Some(a));
            prop_assert_eq!(a.cmp(&b), a.key_bytes().cmp(&b.key_bytes()));
        }

        #[test]
        fn store_key_roundtrip_and_order(a in store_key(), b in store_key()) {
            prop_assert_eq!(StoreKey::read_key(&a.key_bytes()), Some(a));
            prop_assert_eq!(a.cmp(&b), a.key_bytes().cmp(&b.key_bytes()));
        }

        #[test]
        fn id_roundtrip_and_order(a: [u8; 32], b: [u8; 32]) {
            let (a, b) = (Hash(a), Hash(b));
            prop_assert_eq!(Hash::read_key(&a.key_bytes()), Some(a));
            prop_assert_eq!(a.cmp(&b), a.key_bytes().cmp(&b.key_bytes()));
        }

        #[test]
        fn index_key_roundtrip(a in index_key(), b in index_key()) {
            prop_assert_eq!(IndexKey::read_key(&a.key_bytes()), Some(a.clone()));
            prop_assert_eq!(a == b, a.key_bytes() == b.key_bytes());
        }

        #[test]
        fn garbage_keys_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..50)) {
            // Whatever parses must be exactly that key's encoding.
            if let Some(k) = StoreKey::read_key(&bytes) {
                prop_assert_eq!(k.key_bytes(), bytes.clone());
            }
            if let Some(k) = IndexKey::read_key(&bytes) {
                prop_assert_eq!(k.key_bytes(), bytes.clone());
            }
            if let Some(k) = Hash::read_key(&bytes) {
                prop_assert_eq!(k.key_bytes(), bytes.clone());
            }
            if let Some(k) = u64::read_key(&bytes) {
                prop_assert_eq!(k.key_bytes(), bytes);
            }
        }
    }

    #[test]
    fn varints_would_not_sort() {
        // Why the fixed width: postcard puts 256 before 129.
        assert!(proofs::encode(&256u64) < proofs::encode(&129u64));
        assert!(256u64.key_bytes() > 129u64.key_bytes());
    }
}
