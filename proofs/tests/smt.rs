//! The sparse Merkle tree against an independent model: a `BTreeMap` per
//! version and a from-scratch root computed by splitting the sorted key set
//! bit by bit, with the hashing rules restated here rather than imported.

use proofs::smt::{
    leaf_hash, node_hash, MemTree, ProofError, SmtError, SmtMemStore, SparseMerkleTree,
    SparseProof, StoreKey, StoreValue, VersionedTree, MAX_PROOF_BYTES,
};
use proofs::{Domain, Hash, Hasher};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Instant;

const LEAF: Domain = Domain::new("pos/proofs/smt-leaf/v1");
const NODE: Domain = Domain::new("pos/proofs/smt-node/v1");
const TEST: Domain = Domain::new("pos/test/smt/v1");

type Model = BTreeMap<Hash, Hash>;
type Batch = Vec<(Hash, Option<Hash>)>;

fn model_leaf(k: &Hash, v: &Hash) -> Hash {
    let mut h = Hasher::new(LEAF);
    h.update(&k.0).update(&v.0);
    h.finalize()
}

fn model_node(l: &Hash, r: &Hash) -> Hash {
    let mut h = Hasher::new(NODE);
    h.update(&l.0).update(&r.0);
    h.finalize()
}

fn key_bit(k: &Hash, i: usize) -> bool {
    (k.0[i / 8] >> (7 - i % 8)) & 1 == 1
}

fn flip_bit(k: Hash, i: usize) -> Hash {
    let mut b = k.0;
    b[i / 8] ^= 0x80 >> (i % 8);
    Hash(b)
}

/// The root of a sorted, duplicate-free key set whose keys share `depth` bits.
fn model_root(entries: &[(Hash, Hash)], depth: usize) -> Hash {
    match entries {
        [] => Hash::ZERO,
        [(k, v)] => model_leaf(k, v),
        _ => {
            let (l, r): (Vec<_>, Vec<_>) = entries.iter().partition(|(k, _)| !key_bit(k, depth));
            model_node(&model_root(&l, depth + 1), &model_root(&r, depth + 1))
        }
    }
}

/// How many pages the canonical tree of a key set is stored in: one per
/// internal node at a depth divisible by 4.
fn model_pages(entries: &[(Hash, Hash)], depth: usize) -> u64 {
    match entries {
        [] | [_] => 0,
        _ => {
            let (l, r): (Vec<_>, Vec<_>) = entries.iter().partition(|(k, _)| !key_bit(k, depth));
            u64::from(depth.is_multiple_of(4))
                + model_pages(&l, depth + 1)
                + model_pages(&r, depth + 1)
        }
    }
}

/// How many nodes (internal and leaves) the canonical tree of a key set has.
fn model_nodes(entries: &[(Hash, Hash)], depth: usize) -> u64 {
    match entries {
        [] => 0,
        [_] => 1,
        _ => {
            let (l, r): (Vec<_>, Vec<_>) = entries.iter().partition(|(k, _)| !key_bit(k, depth));
            1 + model_nodes(&l, depth + 1) + model_nodes(&r, depth + 1)
        }
    }
}

fn entries(m: &Model) -> Vec<(Hash, Hash)> {
    m.iter().map(|(k, v)| (*k, *v)).collect()
}

fn apply_model(m: &mut Model, batch: &[(Hash, Option<Hash>)]) {
    for (k, v) in batch {
        match v {
            Some(v) => m.insert(*k, *v),
            None => m.remove(k),
        };
    }
}

/// Keys chosen to collide in long prefixes: each base with single bits
/// flipped near the end (down to differing only in the last bit), plus the
/// extremes of the key space.
fn key_pool() -> Vec<Hash> {
    let mut pool = Vec::new();
    for i in 0..3u8 {
        let base = Hash::of(TEST, &[i]);
        pool.push(base);
        // Around page boundaries (every 4 levels) and at the very bottom.
        for b in [3, 4, 8, 9, 200, 252, 254, 255] {
            pool.push(flip_bit(base, b));
        }
        pool.push(flip_bit(flip_bit(base, 255), 254));
    }
    pool.push(Hash::ZERO);
    pool.push(flip_bit(Hash::ZERO, 255));
    pool.push(Hash([0xff; 32]));
    pool.push(flip_bit(Hash([0xff; 32]), 0));
    pool
}

fn value_pool() -> Vec<Hash> {
    (0..3u8).map(|i| Hash::of(TEST, &[0xaa, i])).collect()
}

fn batch_strategy() -> impl Strategy<Value = Batch> {
    let pool = key_pool();
    let values = value_pool();
    proptest::collection::vec(
        (
            any::<u8>(),
            any::<[u8; 32]>(),
            proptest::option::weighted(0.7, 0..values.len()),
        ),
        0..14,
    )
    .prop_map(move |raw| {
        raw.into_iter()
            .map(|(sel, random, v)| {
                // Mostly pool keys, so deletes and re-inserts hit live keys.
                let key = if sel < 230 {
                    pool[sel as usize % pool.len()]
                } else {
                    Hash(random)
                };
                (key, v.map(|i| values[i]))
            })
            .collect()
    })
}

fn wrong_root(root: &Hash) -> Hash {
    let mut b = root.0;
    b[7] ^= 0x10;
    Hash(b)
}

/// Every claim a test makes about a key: absent, or each pool value.
fn claims() -> Vec<Option<Hash>> {
    std::iter::once(None)
        .chain(value_pool().into_iter().map(Some))
        .collect()
}

/// How hard `check_version` looks.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Depth {
    /// The truth verifies and the proof round-trips.
    Truth,
    /// Also: a wrong root and every false claim are rejected.
    Claims,
    /// Also: the proof, applied to other keys, accepts only true claims.
    CrossKey,
}

fn check_version(
    tree: &SparseMerkleTree,
    version: u64,
    model: &Model,
    probes: &[Hash],
    how: Depth,
) {
    let root = tree.root(version).unwrap();
    assert_eq!(root, model_root(&entries(model), 0));
    for (i, key) in probes.iter().enumerate() {
        let truth = model.get(key).copied();
        assert_eq!(tree.get(key, version).unwrap(), truth);
        let (value, proof) = tree.get_with_proof(key, version).unwrap();
        assert_eq!(value, truth);
        assert_eq!(proof.verify(&root, key, truth.as_ref()), Ok(()));
        let bytes = proof.encode();
        assert_eq!(SparseProof::decode(&bytes).unwrap(), proof);
        if how < Depth::Claims {
            continue;
        }
        assert_eq!(
            proof.verify(&wrong_root(&root), key, truth.as_ref()),
            Err(ProofError::RootMismatch)
        );
        // Covers membership claimed for an absent key, non-membership for a
        // present one, and a wrong value.
        for claim in claims() {
            if claim != truth {
                assert!(proof.verify(&root, key, claim.as_ref()).is_err());
            }
        }
        if how < Depth::CrossKey {
            continue;
        }
        // A proof for one key may be valid for another (an empty subtree
        // covers many keys), but only for claims true of that key.
        for other in [probes[(i + 1) % probes.len()], flip_bit(*key, 255)] {
            for claim in claims().into_iter().chain([truth]) {
                if proof.verify(&root, &other, claim.as_ref()).is_ok() {
                    assert_eq!(model.get(&other).copied(), claim, "unsound proof");
                }
            }
        }
    }
}

fn probes_for(model: &Model, extra: &Hash) -> Vec<Hash> {
    let mut p = key_pool();
    p.extend(model.keys().copied());
    p.push(*extra);
    p.sort();
    p.dedup();
    p
}

/// Cases per property: few enough for an unoptimised `cargo test`, where
/// hashing dominates; set `PROPTEST_CASES` (with `--release`) for a deep run.
fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(n)
}

proptest! {
    #![proptest_config(cases(32))]

    #[test]
    fn tree_matches_model(
        batches in proptest::collection::vec(batch_strategy(), 1..10),
        keep in 1u64..4,
        extra in any::<[u8; 32]>(),
    ) {
        let extra = Hash(extra);
        let mut tree = SparseMerkleTree::new();
        let mut snaps: Vec<Model> = vec![Model::new()];
        for batch in &batches {
            let mut m = snaps.last().unwrap().clone();
            apply_model(&mut m, batch);
            let (version, root) = tree.apply_batch(batch).unwrap();
            prop_assert_eq!(version, snaps.len() as u64);
            prop_assert_eq!(root, model_root(&entries(&m), 0));
            snaps.push(m);
            tree.prune(keep).unwrap();
            prop_assert_eq!(tree.oldest_version(), (version + 1).saturating_sub(keep));

            for (v, snap) in snaps.iter().enumerate() {
                let v = v as u64;
                if v < tree.oldest_version() {
                    let pruned = SmtError::Pruned { version: v, oldest: tree.oldest_version() };
                    prop_assert_eq!(tree.root(v), Err(pruned.clone()));
                    prop_assert_eq!(tree.get(&extra, v), Err(pruned.clone()));
                    prop_assert_eq!(tree.get_with_proof(&extra, v).map(|_| ()), Err(pruned));
                } else {
                    let how = if v == version { Depth::Claims } else { Depth::Truth };
                    check_version(&tree, v, snap, &probes_for(snap, &extra), how);
                    prop_assert_eq!(tree.leaves(v).unwrap(), entries(snap));
                }
            }
            let future = version + 1;
            prop_assert_eq!(
                tree.root(future),
                Err(SmtError::FutureVersion { version: future, latest: version })
            );
        }
        // Nothing leaks and nothing live is deleted: after keeping only the
        // latest version the store holds exactly its nodes, its root and meta.
        tree.prune(1).unwrap();
        let last = entries(snaps.last().unwrap());
        let expect = model_pages(&last, 0);
        prop_assert_eq!(tree.node_count(), expect);
        prop_assert_eq!(tree.store().len() as u64, expect + 2);
        let last = snaps.last().unwrap();
        check_version(&tree, tree.latest_version(), last, &probes_for(last, &extra), Depth::CrossKey);
    }

    /// The in-memory arena tree is the paged tree: same versions, roots,
    /// leaves and proofs byte for byte at every kept version, the same
    /// errors for pruned and future versions; after pruning to the latest
    /// version it holds exactly that version's nodes (nothing leaks); and
    /// rebuilt from its leaves at the same version it goes on alike.
    #[test]
    fn mem_tree_is_the_paged_tree(
        batches in proptest::collection::vec(batch_strategy(), 1..10),
        keep in 1u64..4,
        extra in any::<[u8; 32]>(),
    ) {
        let extra = Hash(extra);
        let mut paged = SparseMerkleTree::new();
        let mut mem = MemTree::new();
        let mut model = Model::new();
        for batch in &batches {
            apply_model(&mut model, batch);
            prop_assert_eq!(mem.apply_batch(batch).unwrap(), paged.apply_batch(batch).unwrap());
            prop_assert_eq!(mem.prune(keep).is_ok(), paged.prune(keep).is_ok());
            prop_assert_eq!(mem.oldest_version(), paged.oldest_version());
            prop_assert_eq!(mem.latest_version(), paged.latest_version());
            for v in 0..=paged.latest_version() + 1 {
                prop_assert_eq!(mem.root(v), paged.root(v));
                if v < paged.oldest_version() || v > paged.latest_version() {
                    continue;
                }
                prop_assert_eq!(mem.leaves(v).unwrap(), paged.leaves(v).unwrap());
                for k in probes_for(&model, &extra) {
                    let (mv, mp) = mem.get_with_proof(&k, v).unwrap();
                    let (pv, pp) = paged.get_with_proof(&k, v).unwrap();
                    prop_assert_eq!(mv, pv);
                    prop_assert_eq!(mp.encode(), pp.encode());
                    prop_assert_eq!(mem.get(&k, v).unwrap(), mv);
                }
            }
        }
        mem.prune(1).unwrap();
        prop_assert_eq!(mem.node_count(), model_nodes(&entries(&model), 0));
        // A restore: the latest leaves in one batch onto an empty start.
        let v = mem.latest_version();
        let mut restored = MemTree::create_at(v - 1);
        let leaves: Vec<(Hash, Option<Hash>)> =
            mem.leaves(v).unwrap().into_iter().map(|(k, x)| (k, Some(x))).collect();
        prop_assert_eq!(restored.apply_batch(&leaves).unwrap(), (v, mem.root(v).unwrap()));
        restored.prune(1).unwrap();
        prop_assert_eq!(restored.node_count(), mem.node_count());
        for batch in batches.iter().take(3) {
            prop_assert_eq!(restored.apply_batch(batch).unwrap(), mem.apply_batch(batch).unwrap());
        }
    }

    /// A tree rebuilt from its leaves in one batch at the same version (a
    /// snapshot restore) has the same root and pages, holds nothing else,
    /// and goes on exactly like the original.
    #[test]
    fn restored_tree_goes_on_like_the_original(
        before in proptest::collection::vec(batch_strategy(), 1..6),
        after in proptest::collection::vec(batch_strategy(), 0..4),
        extra in any::<[u8; 32]>(),
    ) {
        let mut tree = SparseMerkleTree::new();
        let mut m = Model::new();
        for b in &before {
            apply_model(&mut m, b);
            tree.apply_batch(b).unwrap();
        }
        let v = tree.latest_version();
        let leaves: Batch = tree.leaves(v).unwrap().into_iter().map(|(k, x)| (k, Some(x))).collect();
        let mut back = SparseMerkleTree::create_at(SmtMemStore::new(), v - 1).unwrap();
        prop_assert_eq!(back.latest_version(), v - 1);
        prop_assert_eq!(back.root(v - 1), Ok(Hash::ZERO));
        prop_assert_eq!(back.apply_batch(&leaves).unwrap(), (v, tree.root(v).unwrap()));
        back.prune(1).unwrap();
        prop_assert_eq!(back.oldest_version(), v);
        prop_assert_eq!(
            back.root(v - 1),
            Err(SmtError::Pruned { version: v - 1, oldest: v })
        );
        let expect = model_pages(&entries(&m), 0);
        prop_assert_eq!(back.node_count(), expect);
        prop_assert_eq!(back.store().len() as u64, expect + 2);
        check_version(&back, v, &m, &probes_for(&m, &Hash(extra)), Depth::Truth);
        for b in &after {
            apply_model(&mut m, b);
            let (va, ra) = tree.apply_batch(b).unwrap();
            prop_assert_eq!(back.apply_batch(b).unwrap(), (va, ra));
            for key in probes_for(&m, &Hash(extra)) {
                prop_assert_eq!(back.get_with_proof(&key, va).unwrap(), tree.get_with_proof(&key, va).unwrap());
            }
        }
    }

    /// Flipping any byte of an encoded proof makes decoding or verification
    /// fail: each (tree, key) has exactly one accepted proof.
    #[test]
    fn flipped_bytes_are_rejected(
        batches in proptest::collection::vec(batch_strategy(), 1..4),
        mask in 1u8..=255,
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 3),
    ) {
        let mut tree = SparseMerkleTree::new();
        let mut m = Model::new();
        for b in &batches {
            apply_model(&mut m, b);
            tree.apply_batch(b).unwrap();
        }
        let version = tree.latest_version();
        let root = tree.root(version).unwrap();
        let probes = probes_for(&m, &Hash::ZERO);
        for pick in &picks {
            let key = pick.get(&probes);
            let (value, proof) = tree.get_with_proof(key, version).unwrap();
            let bytes = proof.encode();
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= mask;
                if let Ok(p) = SparseProof::decode(&bad) {
                    prop_assert!(p.verify(&root, key, value.as_ref()).is_err(), "byte {} flip accepted", i);
                }
            }
        }
    }

}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), key: [u8; 32]) {
        if let Ok(p) = SparseProof::decode(&bytes) {
            prop_assert_eq!(p.encode(), bytes);
            let _ = p.verify(&Hash::ZERO, &Hash(key), None);
            let _ = p.verify(&Hash(key), &Hash(key), Some(&Hash(key)));
        }
    }

    /// Hand-built proofs with arbitrary fields are checked, never trusted,
    /// and never panic.
    #[test]
    fn arbitrary_parts_never_panic(
        depth: u16,
        bitmap in proptest::collection::vec(any::<u8>(), 0..40),
        siblings in proptest::collection::vec(any::<[u8; 32]>(), 0..6),
        other in proptest::option::of((any::<[u8; 32]>(), any::<[u8; 32]>())),
        key: [u8; 32],
        root: [u8; 32],
    ) {
        let p = SparseProof::from_parts(
            depth % 300,
            bitmap,
            siblings.into_iter().map(Hash).collect(),
            other.map(|(k, v)| (Hash(k), Hash(v))),
        );
        let _ = p.verify(&Hash(root), &Hash(key), None);
        let _ = p.verify(&Hash(root), &Hash(key), Some(&Hash(root)));
        if let Ok(q) = SparseProof::decode(&p.encode()) {
            prop_assert_eq!(q, p);
        }
    }
}

/// An executor that runs nothing: the tree must build skipped jobs itself.
struct Lazy;
impl proofs::Executor for Lazy {
    fn run_all<'a>(&self, _jobs: Vec<Box<dyn FnOnce() + Send + 'a>>) {}
}

/// Large batches split into parallel subtree jobs (and jobs an executor
/// skipped) give the sequential tree's roots, leaves and proofs, and leak
/// no nodes.
#[test]
fn mem_tree_batches_split_into_jobs_are_the_same() {
    let key = |i: u64| Hash::of(TEST, &i.to_le_bytes());
    let mut seq = MemTree::new();
    let mut par: Vec<MemTree> = (0..3).map(|_| MemTree::new()).collect();
    par[0].set_parallelism(2, std::sync::Arc::new(proofs::ScopedThreads));
    par[1].set_parallelism(5, std::sync::Arc::new(proofs::ScopedThreads));
    par[2].set_parallelism(3, std::sync::Arc::new(Lazy));
    let mut model = Model::new();
    let mut next = 0u64;
    for b in 0..12u64 {
        let batch: Batch = (0..3000u64)
            .map(|j| match j % 5 {
                0 | 1 => {
                    next += 1;
                    (key(next), Some(key(next + 1_000_000)))
                }
                2 => (key(1 + (j * 7919 + b) % next.max(1)), Some(key(b))),
                3 => (key(1 + (j * 104_729 + b) % next.max(1)), None),
                // Some keys sharing long prefixes, in one subtree.
                _ => (flip_bit(key(j % 40), 200 + (j % 50) as usize), Some(key(j))),
            })
            .collect();
        apply_model(&mut model, &batch);
        let want = seq.apply_batch(&batch).unwrap();
        assert_eq!(want.1, model_root(&entries(&model), 0));
        for t in &mut par {
            assert_eq!(t.apply_batch(&batch).unwrap(), want);
            t.prune(3).unwrap();
        }
        seq.prune(3).unwrap();
    }
    let v = seq.latest_version();
    for t in &par {
        assert_eq!(t.leaves(v).unwrap(), seq.leaves(v).unwrap());
        for i in (0..next).step_by(97) {
            assert_eq!(
                t.get_with_proof(&key(i), v).unwrap(),
                seq.get_with_proof(&key(i), v).unwrap()
            );
        }
    }
    for t in par.iter_mut().chain([&mut seq]) {
        t.prune(1).unwrap();
        assert_eq!(t.node_count(), model_nodes(&entries(&model), 0));
    }
}

#[test]
fn hashing_matches_the_stated_rules() {
    let (k, v) = (Hash::of(TEST, b"k"), Hash::of(TEST, b"v"));
    assert_eq!(leaf_hash(&k, &v), model_leaf(&k, &v));
    assert_eq!(node_hash(&k, &v), model_node(&k, &v));
    assert_ne!(leaf_hash(&k, &v), node_hash(&k, &v));
}

#[test]
fn empty_tree() {
    let tree = SparseMerkleTree::new();
    assert_eq!(tree.latest_version(), 0);
    assert_eq!(tree.root(0), Ok(Hash::ZERO));
    let key = Hash::of(TEST, b"absent");
    let (value, proof) = tree.get_with_proof(&key, 0).unwrap();
    assert_eq!(value, None);
    assert_eq!(proof.encode(), vec![0, 0, 0, 0]);
    assert_eq!(proof.verify(&Hash::ZERO, &key, None), Ok(()));
    assert!(proof.verify(&Hash::ZERO, &key, Some(&key)).is_err());
}

#[test]
fn single_leaf_is_the_root() {
    let mut tree = SparseMerkleTree::new();
    let (k, v) = (Hash::of(TEST, b"k"), Hash::of(TEST, b"v"));
    let (_, root) = tree.apply_batch(&[(k, Some(v))]).unwrap();
    assert_eq!(root, leaf_hash(&k, &v));
    let other = flip_bit(k, 255);
    let (value, proof) = tree.get_with_proof(&other, 1).unwrap();
    assert_eq!(value, None);
    assert_eq!(proof.depth(), 0);
    assert_eq!(proof.other_leaf(), Some(&(k, v)));
    assert_eq!(proof.verify(&root, &other, None), Ok(()));
    // The same proof does not show `k` absent.
    assert_eq!(
        proof.verify(&root, &k, None),
        Err(ProofError::OtherLeafIsKey)
    );
    assert_eq!(
        proof.verify(&root, &other, Some(&v)),
        Err(ProofError::UnexpectedLeaf)
    );
}

#[test]
fn keys_differing_only_in_the_last_bit() {
    let a = Hash::of(TEST, b"deep");
    let b = flip_bit(a, 255);
    let (va, vb) = (Hash::of(TEST, b"va"), Hash::of(TEST, b"vb"));
    let mut tree = SparseMerkleTree::new();
    let (_, root) = tree.apply_batch(&[(a, Some(va)), (b, Some(vb))]).unwrap();
    let m: Model = [(a, va), (b, vb)].into_iter().collect();
    assert_eq!(root, model_root(&entries(&m), 0));
    // Internal nodes at depths 0..=255 (the last one splits them), so a
    // page at every fourth depth; the two leaves sit at depth 256.
    assert_eq!(tree.node_count(), 64);

    let (value, proof) = tree.get_with_proof(&a, 1).unwrap();
    assert_eq!(value, Some(va));
    assert_eq!(proof.depth(), 256);
    assert_eq!(proof.siblings(), &[leaf_hash(&b, &vb)]);
    let mut bitmap = [0u8; 32];
    bitmap[31] = 1;
    assert_eq!(proof.bitmap(), &bitmap);
    assert_eq!(proof.verify(&root, &a, Some(&va)), Ok(()));
    assert!(proof.verify(&root, &b, Some(&va)).is_err());
    assert!(proof.verify(&root, &b, Some(&vb)).is_err());
    assert!(proof.verify(&root, &a, None).is_err());
    // 2-byte depth + 33-byte bitmap + count + one sibling + no other leaf.
    assert_eq!(proof.encode().len(), 2 + 33 + 1 + 32 + 1);

    // A key that leaves the chain one bit earlier ends at an empty subtree.
    let c = flip_bit(a, 254);
    let (value, proof) = tree.get_with_proof(&c, 1).unwrap();
    assert_eq!(value, None);
    assert_eq!(proof.depth(), 255);
    assert_eq!(proof.other_leaf(), None);
    assert_eq!(proof.verify(&root, &c, None), Ok(()));
    assert!(proof.verify(&root, &c, Some(&va)).is_err());

    // Deleting one lifts the other to the root; the chain goes away.
    let (_, root) = tree.apply_batch(&[(b, None)]).unwrap();
    assert_eq!(root, leaf_hash(&a, &va));
    tree.prune(1).unwrap();
    assert_eq!(tree.node_count(), 0);
    assert_eq!(tree.store().len(), 2);
    let (_, proof) = tree.get_with_proof(&b, 2).unwrap();
    assert_eq!(proof.other_leaf(), Some(&(a, va)));
    assert_eq!(proof.verify(&root, &b, None), Ok(()));
}

#[test]
fn non_membership_other_leaf_must_share_the_prefix() {
    let mut tree = SparseMerkleTree::new();
    let keys: Vec<Hash> = (0..64u8).map(|i| Hash::of(TEST, &[i])).collect();
    let v = Hash::of(TEST, b"v");
    let batch: Batch = keys.iter().map(|k| (*k, Some(v))).collect();
    let (_, root) = tree.apply_batch(&batch).unwrap();
    // Find an absent key whose path ends at another leaf.
    let (absent, proof) = (0..1000u32)
        .map(|i| Hash::of(TEST, &i.to_le_bytes()))
        .filter(|k| !keys.contains(k))
        .map(|k| (k, tree.get_with_proof(&k, 1).unwrap().1))
        .find(|(_, p)| p.other_leaf().is_some())
        .unwrap();
    assert_eq!(proof.verify(&root, &absent, None), Ok(()));
    let (ok, ov) = *proof.other_leaf().unwrap();
    // Substitute a leaf that does not sit on the key's path.
    let stranger = *keys
        .iter()
        .find(|k| k.0[0] >> 7 != absent.0[0] >> 7)
        .unwrap();
    let forged = SparseProof::from_parts(
        proof.depth(),
        proof.bitmap().to_vec(),
        proof.siblings().to_vec(),
        Some((stranger, ov)),
    );
    assert!(matches!(
        forged.verify(&root, &absent, None),
        Err(ProofError::OtherLeafPrefix { .. })
    ));
    // The leaf itself is present, so claiming it absent fails.
    assert_eq!(
        proof.verify(&root, &ok, None),
        Err(ProofError::OtherLeafIsKey)
    );
}

#[test]
fn malformed_structure_is_typed() {
    let h = Hash::of(TEST, b"s");
    let cases = [
        (
            SparseProof::from_parts(257, vec![0; 33], vec![], None),
            "depth",
        ),
        (
            SparseProof::from_parts(9, vec![0x80], vec![h], None),
            "bitmap length",
        ),
        (
            SparseProof::from_parts(4, vec![0x18], vec![h, h], None),
            "padding",
        ),
        (
            SparseProof::from_parts(8, vec![0x81], vec![h], None),
            "count",
        ),
        (
            SparseProof::from_parts(8, vec![0x01], vec![Hash::ZERO], None),
            "zero",
        ),
        (
            SparseProof::from_parts(8, vec![0x80], vec![h], None),
            "last",
        ),
    ];
    let key = Hash::ZERO;
    let errs: Vec<_> = cases
        .iter()
        .map(|(p, _)| p.verify(&h, &key, None).unwrap_err())
        .collect();
    assert_eq!(errs[0], ProofError::DepthTooLarge(257));
    assert!(matches!(errs[1], ProofError::BitmapLength { .. }));
    assert_eq!(errs[2], ProofError::BitmapPadding);
    assert!(matches!(errs[3], ProofError::SiblingCount { .. }));
    assert_eq!(errs[4], ProofError::ZeroSibling { depth: 8 });
    assert_eq!(errs[5], ProofError::EmptyLastSibling);
    assert!(matches!(
        SparseProof::decode(&vec![0u8; MAX_PROOF_BYTES + 1]),
        Err(ProofError::Decode(_))
    ));
}

#[test]
fn same_content_returns_after_being_staled() {
    // A -> B -> A for one key next to a neighbour, so the key's leaf and
    // the internal nodes above it reappear with content identical to a
    // pruned version's.
    let k = Hash::of(TEST, b"aba");
    let n = flip_bit(k, 200);
    let (a, b) = (Hash::of(TEST, b"A"), Hash::of(TEST, b"B"));
    let mut tree = SparseMerkleTree::new();
    let (_, r1) = tree.apply_batch(&[(k, Some(a)), (n, Some(a))]).unwrap();
    let (_, r2) = tree.apply_batch(&[(k, Some(b))]).unwrap();
    let (_, r3) = tree.apply_batch(&[(k, Some(a))]).unwrap();
    let (_, r4) = tree.apply_batch(&[(k, None)]).unwrap();
    let (_, r5) = tree.apply_batch(&[(k, Some(a))]).unwrap();
    assert_eq!(r1, r3);
    assert_eq!(r3, r5);
    assert_ne!(r1, r2);
    assert_eq!(r4, leaf_hash(&n, &a));
    for keep in [4, 2, 1] {
        tree.prune(keep).unwrap();
        let (value, proof) = tree.get_with_proof(&k, 5).unwrap();
        assert_eq!(value, Some(a));
        assert_eq!(proof.verify(&r5, &k, Some(&a)), Ok(()));
    }
    let m: Model = [(k, a), (n, a)].into_iter().collect();
    assert_eq!(tree.node_count(), model_pages(&entries(&m), 0));
    assert_eq!(tree.store().len() as u64, tree.node_count() + 2);
}

/// Thousands of random keys: several page levels, pages rewritten around
/// untouched subtrees, leaves lifting across page boundaries on delete.
#[test]
fn many_keys_match_the_model() {
    let key = |i: u32| Hash::of(TEST, &[b"many".as_slice(), &i.to_le_bytes()].concat());
    let val = |i: u32, r: u32| Hash::of(TEST, &[i.to_le_bytes(), r.to_le_bytes()].concat());
    let mut tree = SparseMerkleTree::new();
    let mut model = Model::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..12u32 {
        let batch: Batch = (0..400)
            .map(|_| {
                let i = (next() % 3000) as u32;
                let v = (next() % 4 != 0).then(|| val(i, round % 3));
                (key(i), v)
            })
            .collect();
        apply_model(&mut model, &batch);
        let (version, root) = tree.apply_batch(&batch).unwrap();
        assert_eq!(root, model_root(&entries(&model), 0), "round {round}");
        tree.prune(3).unwrap();
        for j in 0..40 {
            let k = key((next() % 3200) as u32);
            let truth = model.get(&k).copied();
            let (value, proof) = tree.get_with_proof(&k, version).unwrap();
            assert_eq!(value, truth, "round {round} probe {j}");
            assert_eq!(proof.verify(&root, &k, truth.as_ref()), Ok(()));
        }
    }
    tree.prune(1).unwrap();
    let expect = model_pages(&entries(&model), 0);
    assert_eq!(tree.node_count(), expect);
    assert_eq!(tree.store().len() as u64, expect + 2);
}

#[test]
fn last_write_wins_within_a_batch() {
    let k = Hash::of(TEST, b"dup");
    let (a, b) = (Hash::of(TEST, b"A"), Hash::of(TEST, b"B"));
    let mut tree = SparseMerkleTree::new();
    tree.apply_batch(&[(k, Some(a)), (k, None), (k, Some(b))])
        .unwrap();
    assert_eq!(tree.get(&k, 1), Ok(Some(b)));
    tree.apply_batch(&[(k, Some(a)), (k, None)]).unwrap();
    assert_eq!(tree.get(&k, 2), Ok(None));
    assert_eq!(tree.root(2), Ok(Hash::ZERO));
}

#[test]
fn noop_batches_write_nothing() {
    let mut tree = SparseMerkleTree::new();
    let batch: Batch = (0..100u8)
        .map(|i| (Hash::of(TEST, &[i]), Some(Hash::of(TEST, &[i, i]))))
        .collect();
    let (_, root) = tree.apply_batch(&batch).unwrap();
    let nodes = tree.node_count();
    // Rewriting the same values and deleting absent keys changes nothing.
    let mut again = batch.clone();
    again.push((Hash::of(TEST, b"never"), None));
    let (v, root2) = tree.apply_batch(&again).unwrap();
    assert_eq!(root2, root);
    assert_eq!(tree.node_count(), nodes);
    tree.prune(1).unwrap();
    assert_eq!(tree.node_count(), nodes);
    assert_eq!(tree.root(v), Ok(root));
}

#[test]
fn retention_and_reopen() {
    let mut tree = SparseMerkleTree::new();
    tree.set_retention(Some(3));
    let mut roots = Vec::new();
    for i in 0..10u8 {
        let (_, r) = tree
            .apply_batch(&[(Hash::of(TEST, &[i]), Some(Hash::of(TEST, &[i, 1])))])
            .unwrap();
        roots.push(r);
    }
    assert_eq!(tree.latest_version(), 10);
    assert_eq!(tree.oldest_version(), 8);
    assert!(matches!(tree.root(7), Err(SmtError::Pruned { .. })));
    let store: SmtMemStore = tree.into_store();
    let mut tree = SparseMerkleTree::open(store).unwrap();
    assert_eq!(tree.oldest_version(), 8);
    assert_eq!(tree.root(10), Ok(roots[9]));
    assert_eq!(tree.root(9), Ok(roots[8]));
    let (v, _) = tree.apply_batch(&[]).unwrap();
    assert_eq!(v, 11);
    assert_eq!(tree.root(11), Ok(roots[9]));
    let store = tree.into_store();
    assert!(matches!(
        SparseMerkleTree::create_at(store.clone(), 20),
        Err(SmtError::AlreadyExists)
    ));
    assert!(matches!(
        SparseMerkleTree::create(store),
        Err(SmtError::AlreadyExists)
    ));
}

#[test]
fn leaves_come_in_key_order_from_every_depth() {
    // The pool's keys share prefixes down to the last bit, so their leaves
    // sit in pages at many depths, at inner positions and exits alike.
    let pool = key_pool();
    let mut tree = SparseMerkleTree::new();
    let batch: Batch = pool
        .iter()
        .map(|k| (*k, Some(Hash::of(TEST, &k.0))))
        .collect();
    tree.apply_batch(&batch).unwrap();
    let mut want: Vec<(Hash, Hash)> = batch.iter().map(|(k, v)| (*k, v.unwrap())).collect();
    want.sort();
    assert_eq!(tree.leaves(1).unwrap(), want);
    assert_eq!(tree.leaves(0).unwrap(), vec![]);
    // A lone leaf is the root itself.
    let (one, _) = tree.apply_batch(&[(Hash::ZERO, None)]).unwrap();
    assert_eq!(tree.leaves(one).unwrap().len(), want.len() - 1);
    let mut single = SparseMerkleTree::new();
    single
        .apply_batch(&[(Hash::ZERO, Some(Hash::ZERO))])
        .unwrap();
    assert_eq!(single.leaves(1).unwrap(), vec![(Hash::ZERO, Hash::ZERO)]);
    assert!(matches!(
        single.leaves(2),
        Err(SmtError::FutureVersion { .. })
    ));
}

/// A store that counts and times what the tree asks of it.
#[derive(Default)]
struct Counting {
    inner: SmtMemStore,
    gets: std::cell::Cell<u64>,
    puts: u64,
    removes: u64,
    get_time: std::cell::Cell<std::time::Duration>,
    put_time: std::time::Duration,
    remove_time: std::time::Duration,
    /// While set, keep the totals below for live pages.
    track_sizes: bool,
    live_slots: i64,
    /// Postcard-encoded bytes of live page keys and values (what a disk
    /// store would hold).
    live_encoded: i64,
}

fn page_sizes(key: &StoreKey, value: &StoreValue) -> (i64, i64) {
    match value {
        StoreValue::Page(p) => (
            p.slots.len() as i64,
            (proofs::encode(key).len() + proofs::encode(value).len()) as i64,
        ),
        _ => (0, 0),
    }
}

impl proofs::NodeStore<StoreKey, StoreValue> for Counting {
    fn get(&self, key: &StoreKey) -> Result<Option<StoreValue>, proofs::StoreError> {
        self.gets.set(self.gets.get() + 1);
        let t = Instant::now();
        let r = self.inner.get(key);
        self.get_time.set(self.get_time.get() + t.elapsed());
        r
    }
    fn put(&mut self, key: StoreKey, value: StoreValue) -> Result<(), proofs::StoreError> {
        self.puts += 1;
        if self.track_sizes {
            let (slots, bytes) = page_sizes(&key, &value);
            self.live_slots += slots;
            self.live_encoded += bytes;
        }
        let t = Instant::now();
        let r = self.inner.put(key, value);
        self.put_time += t.elapsed();
        r
    }
    fn remove(&mut self, key: &StoreKey) -> Result<(), proofs::StoreError> {
        self.removes += 1;
        if self.track_sizes {
            if let Ok(Some(old)) = self.inner.get(key) {
                let (slots, bytes) = page_sizes(key, &old);
                self.live_slots -= slots;
                self.live_encoded -= bytes;
            }
        }
        let t = Instant::now();
        let r = self.inner.remove(key);
        self.remove_time += t.elapsed();
        r
    }
}

/// Throughput and proof sizes at 10^6 keys. Run with
/// `cargo test -p proofs --release --test smt -- --ignored --nocapture bench`.
#[test]
#[ignore = "a measurement at 10^6 keys, not a check: cargo test -p proofs --release --test smt -- --ignored --nocapture bench"]
fn bench_million_keys() {
    let n: u64 = std::env::var("SMT_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let batch_size = 10_000u64;
    let key = |i: u64| Hash::of(TEST, &i.to_le_bytes());
    let val = |i: u64, round: u64| Hash::of(TEST, &[i.to_le_bytes(), round.to_le_bytes()].concat());

    let mut tree = SparseMerkleTree::new();
    let t = Instant::now();
    for start in (0..n).step_by(100_000) {
        let batch: Batch = (start..(start + 100_000).min(n))
            .map(|i| (key(i), Some(val(i, 0))))
            .collect();
        tree.apply_batch(&batch).unwrap();
    }
    let build = t.elapsed();
    tree.prune(1).unwrap();
    println!(
        "build {n} keys in batches of 100k: {:.2?} ({:.0} keys/s); nodes {} ({:.3}/key)",
        build,
        n as f64 / build.as_secs_f64(),
        tree.node_count(),
        tree.node_count() as f64 / n as f64
    );

    // Batches of 10k: 70% value changes of existing keys, 20% inserts of new
    // keys, 10% deletes; pruning to the newest 8 versions after each.
    let keep: u64 = std::env::var("SMT_BENCH_KEEP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let mut prune_time = std::time::Duration::ZERO;
    let mut next_new = n;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut step = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let rounds: u64 = std::env::var("SMT_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut apply_time = std::time::Duration::ZERO;
    let mut times = Vec::new();
    for round in 1..=rounds {
        let batch: Batch = (0..batch_size)
            .map(|_| {
                let r = step();
                match r % 10 {
                    0..=6 => {
                        let i = step() % n;
                        (key(i), Some(val(i, round)))
                    }
                    7 | 8 => {
                        next_new += 1;
                        (key(next_new), Some(val(next_new, round)))
                    }
                    _ => (key(step() % n), None),
                }
            })
            .collect();
        let t = Instant::now();
        tree.apply_batch(&batch).unwrap();
        let e = t.elapsed();
        apply_time += e;
        times.push(e.as_secs_f64() * 1e3);
        let t = Instant::now();
        tree.prune(keep).unwrap();
        prune_time += t.elapsed();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{rounds} batches of {batch_size}: apply {:.0} updates/s, with prune({keep}) {:.0} updates/s; apply per batch p50 {:.1} ms, max {:.1} ms; nodes {} ({:.3}/key incl. {keep} versions)",
        (rounds * batch_size) as f64 / apply_time.as_secs_f64(),
        (rounds * batch_size) as f64 / (apply_time + prune_time).as_secs_f64(),
        times[times.len() / 2],
        times[times.len() - 1],
        tree.node_count(),
        tree.node_count() as f64 / n as f64,
    );

    tree.prune(1).unwrap();
    println!("after prune(1): nodes {}", tree.node_count());

    let version = tree.latest_version();
    let root = tree.root(version).unwrap();
    let mut member = Vec::new();
    let mut absent = Vec::new();
    let t = Instant::now();
    let mut proofs = Vec::new();
    for j in 0..10_000u64 {
        let i = step() % n;
        let k = key(i);
        let (v, p) = tree.get_with_proof(&k, version).unwrap();
        let len = p.encode().len();
        if v.is_some() {
            member.push(len);
        }
        proofs.push((k, v, p));
        let k2 = key(u64::MAX - j);
        let (v2, p2) = tree.get_with_proof(&k2, version).unwrap();
        assert!(v2.is_none());
        absent.push(p2.encode().len());
    }
    let prove = t.elapsed();
    let t = Instant::now();
    for (k, v, p) in &proofs {
        p.verify(&root, k, v.as_ref()).unwrap();
    }
    let verify = t.elapsed();
    member.sort();
    absent.sort();
    let pct = |v: &[usize], p: usize| v[(v.len() - 1) * p / 100];
    println!(
        "membership proof bytes: p50 {} p90 {} p99 {} max {} (bound 32*(ceil(log2 N)+2) = {})",
        pct(&member, 50),
        pct(&member, 90),
        pct(&member, 99),
        member[member.len() - 1],
        32 * ((n as f64).log2().ceil() as usize + 2)
    );
    println!(
        "non-membership proof bytes: p50 {} p90 {} max {}",
        pct(&absent, 50),
        pct(&absent, 90),
        absent[absent.len() - 1]
    );
    println!(
        "prove: {:.1} µs each (20k proofs); verify: {:.1} µs each",
        prove.as_secs_f64() * 1e6 / 20_000.0,
        verify.as_secs_f64() * 1e6 / proofs.len() as f64
    );
}

/// Where a batch's time goes (store operations per update and their cost)
/// and what the tree occupies.
/// `cargo test -p proofs --release --test smt -- --ignored --nocapture store_ops`
#[test]
#[ignore = "a measurement of store traffic, not a check: cargo test -p proofs --release --test smt -- --ignored --nocapture store_ops"]
fn bench_store_ops() {
    let n: u64 = std::env::var("SMT_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let key = |i: u64| Hash::of(TEST, &i.to_le_bytes());
    let store = Counting {
        track_sizes: true,
        ..Counting::default()
    };
    let mut tree = SparseMerkleTree::create(store).unwrap();
    for start in (0..n).step_by(100_000) {
        let batch: Batch = (start..(start + 100_000).min(n))
            .map(|i| (key(i), Some(key(i + 1))))
            .collect();
        tree.apply_batch(&batch).unwrap();
    }
    tree.prune(1).unwrap();
    let s = tree.store();
    let pages = tree.node_count();
    let entry = std::mem::size_of::<StoreKey>() + std::mem::size_of::<StoreValue>();
    let slot = std::mem::size_of::<(u8, proofs::smt::Slot)>();
    println!(
        "{n} keys: {pages} pages ({:.3}/key), {:.1} slots/page; encoded {:.1} B/key; in memory ≈ {:.1} B/key (entry {entry} B + {slot} B/slot, before hash-table overhead)",
        pages as f64 / n as f64,
        s.live_slots as f64 / pages as f64,
        s.live_encoded as f64 / n as f64,
        (pages as f64 * entry as f64 + s.live_slots as f64 * slot as f64) / n as f64,
    );

    let mut store = tree.into_store();
    store.track_sizes = false;
    let mut tree = SparseMerkleTree::open(store).unwrap();
    let s = tree.store();
    let (g0, p0, r0) = (s.gets.get(), s.puts, s.removes);
    let (tg0, tp0, tr0) = (s.get_time.get(), s.put_time, s.remove_time);
    let rounds = 30u64;
    let mut total = std::time::Duration::ZERO;
    for round in 1..=rounds {
        let batch: Batch = (0..10_000u64)
            .map(|j| {
                let i = Hash::of(TEST, &[round.to_le_bytes(), j.to_le_bytes()].concat())
                    .prefix_u64()
                    % n;
                (key(i), Some(key(i + round)))
            })
            .collect();
        let t = Instant::now();
        tree.apply_batch(&batch).unwrap();
        tree.prune(8).unwrap();
        total += t.elapsed();
    }
    let s = tree.store();
    let u = (rounds * 10_000) as f64;
    let (gets, puts, removes) = (s.gets.get() - g0, s.puts - p0, s.removes - r0);
    println!(
        "per update (batches of 10k, prune to 8 versions): {:.2} gets ({:.0} ns each), {:.2} puts ({:.0} ns each), {:.2} removes ({:.0} ns each); {:.2} µs/update of which store {:.2} µs",
        gets as f64 / u,
        (s.get_time.get() - tg0).as_nanos() as f64 / gets as f64,
        puts as f64 / u,
        (s.put_time - tp0).as_nanos() as f64 / puts as f64,
        removes as f64 / u,
        (s.remove_time - tr0).as_nanos() as f64 / removes.max(1) as f64,
        total.as_secs_f64() * 1e6 / u,
        ((s.get_time.get() - tg0) + (s.put_time - tp0) + (s.remove_time - tr0)).as_secs_f64() * 1e6
            / u,
    );
}

/// Every store entry, encoded and sorted: two trees with equal dumps hold
/// byte-identical pages, roots, stale lists and meta.
fn dump(tree: &SparseMerkleTree) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<_> = tree
        .store()
        .iter()
        .map(|(k, v)| (proofs::encode(k), proofs::encode(v)))
        .collect();
    out.sort();
    out
}

/// Batches of random keys mixed with updates and deletes of keys already
/// inserted, so every kind of change lands all over the tree.
fn random_batches(seed: u64, batches: usize, size: usize) -> Vec<Batch> {
    let mut rng = seed | 1;
    let mut step = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut live: Vec<Hash> = Vec::new();
    (0..batches)
        .map(|b| {
            (0..size)
                .map(|j| {
                    let r = step();
                    let value = Some(Hash::of(TEST, &[r.to_le_bytes(), [b as u8; 8]].concat()));
                    match (r % 10, live.is_empty()) {
                        (0..=5, _) | (_, true) => {
                            let k = Hash::of(TEST, &[step().to_le_bytes(), [j as u8; 8]].concat());
                            live.push(k);
                            (k, value)
                        }
                        (6..=8, false) => (live[(step() % live.len() as u64) as usize], value),
                        _ => (live[(step() % live.len() as u64) as usize], None),
                    }
                })
                .collect()
        })
        .collect()
}

/// Applies the same batches to a sequential tree and to trees split over 2
/// and 3 threads, checking after each batch (and each prune) that roots and
/// every store entry are identical, and the root matches the model.
fn check_parallel_matches_sequential(batches: &[Batch], keep: u64) {
    let mut seq = SparseMerkleTree::new();
    let mut par: Vec<SparseMerkleTree> = [2, 3]
        .into_iter()
        .map(|t| {
            let mut tree = SparseMerkleTree::new();
            tree.set_parallelism(t, std::sync::Arc::new(ScopedThreads));
            tree
        })
        .collect();
    let mut model = Model::new();
    for batch in batches {
        apply_model(&mut model, batch);
        let expect = seq.apply_batch(batch).unwrap();
        assert_eq!(expect.1, model_root(&entries(&model), 0));
        seq.prune(keep).unwrap();
        let want = dump(&seq);
        for tree in &mut par {
            assert_eq!(tree.apply_batch(batch).unwrap(), expect);
            tree.prune(keep).unwrap();
            assert_eq!(tree.node_count(), seq.node_count());
            assert!(dump(tree) == want, "stores differ");
        }
    }
}

proptest! {
    #![proptest_config(cases(32))]

    /// The split by subtree gives the sequential walk's output, whatever
    /// the root page holds (shallow leaves, long shared prefixes, deletes
    /// that empty a subtree or lift a leaf into the root page).
    #[test]
    fn parallel_matches_sequential(
        batches in proptest::collection::vec(batch_strategy(), 1..10),
        seed: u64,
        keep in 1u64..4,
    ) {
        // Pool batches, then random ones on top of them.
        let mut all = batches;
        all.extend(random_batches(seed, 3, 40));
        check_parallel_matches_sequential(&all, keep);
    }
}

/// Batches large enough to run on threads (not only split in the calling
/// thread) give byte-identical stores.
#[test]
fn parallel_threads_match_sequential() {
    check_parallel_matches_sequential(&random_batches(7, 6, 3000), 2);
}

use proofs::ScopedThreads;
