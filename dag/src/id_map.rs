//! Hash maps keyed by event ids and output ids: ids are already uniform
//! hashes, so the maps hash them by their first bytes
//! ([`proofs::hash_map`]), which also keeps iteration order a function of
//! the keys alone (the simulator stays deterministic run to run).

pub type IdMap<K, V> = proofs::hash_map::PrefixMap<K, V>;
pub type IdSet<K> = proofs::hash_map::PrefixSet<K>;
