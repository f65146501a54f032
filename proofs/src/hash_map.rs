//! Hash maps keyed by values that are already uniform hashes (event ids,
//! output ids, index keys). The map uses their first bytes directly
//! instead of SipHash: faster, and the iteration order depends only on the
//! inserted keys, which keeps the simulator deterministic run to run.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default, Clone, Copy)]
pub struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        if bytes.len() >= 8 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[..8]);
            self.0 ^= u64::from_le_bytes(b);
        } else {
            for &x in bytes {
                self.0 = self.0.rotate_left(8) ^ x as u64;
            }
        }
    }
}

pub type PrefixMap<K, V> = HashMap<K, V, BuildHasherDefault<PrefixHasher>>;
pub type PrefixSet<K> = HashSet<K, BuildHasherDefault<PrefixHasher>>;
