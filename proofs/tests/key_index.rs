//! The key index against a naive model: every completeness proof, verified
//! for any key, range and root, either fails or yields exactly the model's
//! entries — so no proof can hide an output.

use proofs::key_index::{
    CompletenessProof, Entry, IndexKey, IndexMemStore, IndexValue, KeyIndex, KeyIndexError,
    RestoreError,
};
use proofs::smt::{MemTree, SmtMemStore, SparseMerkleTree};
use proofs::{Domain, Hash, MemStore, NodeStore};
use proptest::prelude::*;
use std::collections::BTreeMap;

type Index = KeyIndex<SparseMerkleTree<SmtMemStore>, MemStore<IndexKey, IndexValue>>;
type MemIndex = KeyIndex<MemTree, IndexMemStore>;

const T: Domain = Domain::new("pos/test/key-index/v1");

fn key(i: u8) -> Hash {
    Hash::of(T, &[0, i])
}

fn output(i: u32) -> Hash {
    Hash::of(T, &i.to_le_bytes())
}

/// Per version: key → entries.
type Model = Vec<BTreeMap<Hash, Vec<Entry>>>;

fn model_range(model: &Model, version: u64, k: &Hash, from: u64, to: u64) -> Vec<Entry> {
    model[version as usize]
        .get(k)
        .map(|v| {
            v.iter()
                .filter(|e| e.height >= from && e.height <= to)
                .copied()
                .collect()
        })
        .unwrap_or_default()
}

/// The outputs created for key numbers `keys`, numbered on from `next`.
fn created_for(keys: &[u8], next: &mut u32) -> Vec<(Hash, Hash)> {
    keys.iter()
        .map(|k| {
            *next += 1;
            (key(*k), output(*next))
        })
        .collect()
}

/// Steps: (height increment, created outputs as key numbers).
fn build(steps: &[(u64, Vec<u8>)]) -> (Index, Model, Vec<Hash>) {
    let mut idx = Index::create(SmtMemStore::new(), MemStore::new()).unwrap();
    let mut model: Model = vec![BTreeMap::new()];
    let mut roots = vec![idx.root(0).unwrap()];
    let mut height = 0;
    let mut next_out = 0u32;
    for (dh, keys) in steps {
        height += dh;
        let created = created_for(keys, &mut next_out);
        let (v, root) = idx.apply(height, &created).unwrap();
        let mut m = model.last().unwrap().clone();
        for (k, o) in &created {
            m.entry(*k).or_default().push(Entry { height, output: *o });
        }
        model.push(m);
        roots.push(root);
        assert_eq!(v as usize, model.len() - 1);
    }
    (idx, model, roots)
}

fn steps() -> impl Strategy<Value = Vec<(u64, Vec<u8>)>> {
    proptest::collection::vec((0u64..3, proptest::collection::vec(0u8..5, 0..6)), 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn honest_proofs_yield_exactly_the_model(
        steps in steps(),
        k in 0u8..6,
        a in 0u64..30,
        len in 0u64..30,
        vpick in any::<u16>(),
    ) {
        let (idx, model, roots) = build(&steps);
        let version = vpick as u64 % model.len() as u64;
        let (from, to) = (a, a + len);
        let p = idx.prove(&key(k), from, to, version).unwrap();
        let bytes = p.encode();
        let back = CompletenessProof::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &p);
        let got = p.verify(&roots[version as usize], &key(k), from, to).unwrap();
        prop_assert_eq!(got, model_range(&model, version, &key(k), from, to));
    }

    #[test]
    fn no_proof_ever_yields_a_wrong_list(
        steps in steps(),
        k in 0u8..6,
        k2 in 0u8..6,
        a in 0u64..30,
        len in 0u64..30,
        a2 in 0u64..30,
        len2 in 0u64..30,
        vpick in any::<u16>(),
        vpick2 in any::<u16>(),
        tamper in 0usize..8,
        salt in any::<u64>(),
    ) {
        // A proof made for one (key, range, version), possibly tampered,
        // checked against another: it fails or tells the truth.
        let (idx, model, roots) = build(&steps);
        let version = vpick as u64 % model.len() as u64;
        let version2 = vpick2 as u64 % model.len() as u64;
        let mut p = idx.prove(&key(k), a, a + len, version).unwrap();
        match tamper {
            0 => {}
            1 => if !p.entries.is_empty() { let i = salt as usize % p.entries.len(); p.entries.remove(i); },
            2 => if !p.entries.is_empty() { let i = salt as usize % p.entries.len(); p.entries[i].height ^= 1 + salt % 3; },
            3 => if !p.entries.is_empty() { let i = salt as usize % p.entries.len(); p.entries[i].output = output(salt as u32); },
            4 => p.count = p.count.wrapping_add(1 + salt % 2),
            5 => p.first = p.first.wrapping_add(1),
            6 => p.count = 0,
            _ => if let Some(last) = p.entries.last().copied() { p.entries.push(Entry { height: last.height, output: output(salt as u32) }); },
        }
        if let Ok(got) = p.verify(&roots[version2 as usize], &key(k2), a2, a2 + len2) {
            prop_assert_eq!(got, model_range(&model, version2, &key(k2), a2, a2 + len2));
        }
    }

    #[test]
    fn a_proof_for_one_range_never_lies_about_another(
        steps in steps(),
        k in 0u8..6,
        a in 0u64..30,
        len in 0u64..30,
        a2 in 0u64..30,
        len2 in 0u64..30,
    ) {
        // The strongest forgery short of breaking hashes: an honest proof for
        // a narrower or shifted range, presented for another range.
        let (idx, model, roots) = build(&steps);
        let v = idx.latest_version();
        let p = idx.prove(&key(k), a, a + len, v).unwrap();
        if let Ok(got) = p.verify(&roots[v as usize], &key(k), a2, a2 + len2) {
            prop_assert_eq!(got, model_range(&model, v, &key(k), a2, a2 + len2));
        }
    }

    #[test]
    fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(p) = CompletenessProof::decode(&bytes) {
            prop_assert_eq!(p.encode(), bytes);
            let _ = p.verify(&Hash::ZERO, &key(0), 0, 10);
        }
    }
}

#[test]
fn heights_never_go_back() {
    let mut idx = Index::create(SmtMemStore::new(), MemStore::new()).unwrap();
    idx.apply(5, &[(key(1), output(1))]).unwrap();
    assert!(matches!(
        idx.apply(4, &[(key(1), output(2))]),
        Err(KeyIndexError::HeightWentBack { height: 4, last: 5 })
    ));
}

#[test]
fn hiding_the_middle_of_a_range_is_caught() {
    let steps: Vec<(u64, Vec<u8>)> = (0..10).map(|_| (1, vec![1, 2])).collect();
    let (idx, _, roots) = build(&steps);
    let v = idx.latest_version();
    let p = idx.prove(&key(1), 3, 7, v).unwrap();
    assert_eq!(
        p.verify(&roots[v as usize], &key(1), 3, 7).unwrap().len(),
        5
    );
    // Drop an entry inside the range: the run is no longer contiguous.
    let mut q = p.clone();
    q.entries.remove(2);
    assert!(q.verify(&roots[v as usize], &key(1), 3, 7).is_err());
    // Cut the run short at the top: it no longer reaches past the range.
    let mut q = p.clone();
    q.entries.pop();
    q.entries.pop();
    assert!(q.verify(&roots[v as usize], &key(1), 3, 7).is_err());
    // An absent key proves an empty list, and a present one cannot pass as absent.
    let none = idx.prove(&key(9), 0, 100, v).unwrap();
    assert!(none
        .verify(&roots[v as usize], &key(9), 0, 100)
        .unwrap()
        .is_empty());
    assert!(none.verify(&roots[v as usize], &key(1), 0, 100).is_err());
}

#[test]
fn a_narrow_proof_cannot_answer_a_wider_range() {
    let steps: Vec<(u64, Vec<u8>)> = (0..10).map(|_| (1, vec![1])).collect();
    let (idx, _, roots) = build(&steps);
    let v = idx.latest_version();
    let root = &roots[v as usize];
    let narrow = idx.prove(&key(1), 3, 4, v).unwrap();
    assert_eq!(narrow.verify(root, &key(1), 3, 4).unwrap().len(), 2);
    assert!(matches!(
        narrow.verify(root, &key(1), 3, 8),
        Err(proofs::key_index::ProofError::OpenAbove)
    ));
    assert!(matches!(
        narrow.verify(root, &key(1), 1, 4),
        Err(proofs::key_index::ProofError::OpenBelow)
    ));
}

#[test]
fn proofs_are_minimal_and_the_index_reopens() {
    let steps: Vec<(u64, Vec<u8>)> = (0..10).map(|_| (1, vec![1])).collect();
    let (idx, _, roots) = build(&steps);
    let v = idx.latest_version();
    let root = roots[v as usize];
    // An absent key's proof has fixed fields.
    let mut none = idx.prove(&key(7), 0, 5, v).unwrap();
    none.first = 3;
    assert!(none.verify(&root, &key(7), 0, 5).is_err());
    // A proof for a narrow range, presented for a narrower one inside it,
    // carries more than the bracketing entries: refused as not minimal.
    let wide = idx.prove(&key(1), 2, 8, v).unwrap();
    assert!(wide.verify(&root, &key(1), 5, 5).is_err());
    assert_eq!(wide.verify(&root, &key(1), 2, 8).unwrap().len(), 7);
    // Reopen from the stores: same root, and heights still cannot go back.
    let (t, s) = idx.into_stores();
    let mut again = Index::open(t, s).unwrap();
    assert_eq!(again.root(v).unwrap(), root);
    assert!(matches!(
        again.apply(3, &[(key(1), output(99))]),
        Err(KeyIndexError::HeightWentBack { .. })
    ));
    again.apply(10, &[(key(1), output(99))]).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Over the in-memory tree the index is the same: roots at every
    /// version, proofs, exported lists, and a restore from them.
    #[test]
    fn the_index_over_either_tree_is_the_same(steps in steps()) {
        let (idx, _, roots) = build(&steps);
        let mut mem = MemIndex::in_memory(IndexMemStore::new()).unwrap();
        let mut height = 0;
        let mut next_out = 0u32;
        for (i, (dh, keys)) in steps.iter().enumerate() {
            height += dh;
            let created = created_for(keys, &mut next_out);
            let (v, root) = mem.apply(height, &created).unwrap();
            prop_assert_eq!(v, i as u64 + 1);
            prop_assert_eq!(root, roots[v as usize]);
        }
        let v = idx.latest_version();
        for k in 0..6u8 {
            prop_assert_eq!(mem.prove(&key(k), 0, 40, v).unwrap(), idx.prove(&key(k), 0, 40, v).unwrap());
        }
        let lists = idx.lists().unwrap();
        prop_assert_eq!(mem.lists().unwrap(), lists.clone());
        if let Some(last) = idx.last_height() {
            let back = MemIndex::restore_in_memory(IndexMemStore::new(), v, last, &lists).unwrap();
            prop_assert_eq!(back.root(v).unwrap(), idx.root(v).unwrap());
        }
    }

    #[test]
    fn restore_from_lists_behaves_like_the_original(before in steps(), after in steps()) {
        let (mut idx, model, _) = build(&before);
        let v = idx.latest_version();
        let last = idx.last_height().unwrap();
        let lists = idx.lists().unwrap();
        // The export is the model's latest state, keys in order.
        let want: Vec<(Hash, Vec<Entry>)> = model[v as usize]
            .iter()
            .map(|(k, e)| (*k, e.clone()))
            .collect();
        prop_assert_eq!(&lists, &want);
        let mut back = Index::restore(SmtMemStore::new(), MemStore::new(), v, last, &lists).unwrap();
        prop_assert_eq!(back.latest_version(), v);
        prop_assert_eq!(back.oldest_version(), v);
        prop_assert_eq!(back.root(v).unwrap(), idx.root(v).unwrap());
        prop_assert_eq!(back.last_height(), Some(last));
        prop_assert_eq!(back.lists().unwrap(), lists);
        // Proofs as of the restored version are the original's; older
        // versions are not available.
        for k in 0..6u8 {
            prop_assert_eq!(back.prove(&key(k), 0, 40, v).unwrap(), idx.prove(&key(k), 0, 40, v).unwrap());
        }
        if v > 0 {
            prop_assert!(back.prove(&key(0), 0, 40, v - 1).is_err());
        }
        // The same later heights give the same roots and proofs.
        let mut height = last;
        let mut n = 10_000u32;
        for (dh, keys) in &after {
            height += dh;
            let created: Vec<(Hash, Hash)> = keys
                .iter()
                .map(|k| {
                    n += 1;
                    (key(*k), output(n))
                })
                .collect();
            let a = idx.apply(height, &created).unwrap();
            let b = back.apply(height, &created).unwrap();
            prop_assert_eq!(a, b);
            for k in 0..6u8 {
                prop_assert_eq!(
                    back.prove(&key(k), 0, height, a.0).unwrap(),
                    idx.prove(&key(k), 0, height, a.0).unwrap()
                );
            }
        }
    }
}

#[test]
fn restore_refuses_what_apply_could_not_have_made() {
    let e = |height: u64, n: u32| Entry {
        height,
        output: output(n),
    };
    let restore = |version: u64, lists: &[(Hash, Vec<Entry>)]| {
        Index::restore(SmtMemStore::new(), MemStore::new(), version, 5, lists).err()
    };
    let (a, b) = if key(1) < key(2) {
        (key(1), key(2))
    } else {
        (key(2), key(1))
    };
    assert!(restore(3, &[(a, vec![e(1, 1)]), (b, vec![e(2, 2), e(2, 3)])]).is_none());
    assert!(matches!(
        restore(0, &[]),
        Some(KeyIndexError::Restore(RestoreError::VersionZero))
    ));
    assert!(matches!(
        restore(3, &[(b, vec![e(1, 1)]), (a, vec![e(2, 2)])]),
        Some(KeyIndexError::Restore(RestoreError::KeysUnsorted(k))) if k == a
    ));
    assert!(matches!(
        restore(3, &[(a, vec![e(1, 1)]), (a, vec![e(2, 2)])]),
        Some(KeyIndexError::Restore(RestoreError::KeysUnsorted(_)))
    ));
    assert!(matches!(
        restore(3, &[(a, vec![])]),
        Some(KeyIndexError::Restore(RestoreError::EmptyList(k))) if k == a
    ));
    assert!(matches!(
        restore(3, &[(a, vec![e(3, 1), e(2, 2)])]),
        Some(KeyIndexError::Restore(RestoreError::BadHeights(k))) if k == a
    ));
    assert!(matches!(
        restore(3, &[(a, vec![e(6, 1)])]),
        Some(KeyIndexError::Restore(RestoreError::BadHeights(_)))
    ));
    // A restored index keeps refusing heights below its last one.
    let mut idx = Index::restore(
        SmtMemStore::new(),
        MemStore::new(),
        3,
        5,
        &[(a, vec![e(1, 1)])],
    )
    .unwrap();
    assert!(matches!(
        idx.apply(4, &[(a, output(9))]),
        Err(KeyIndexError::HeightWentBack { height: 4, last: 5 })
    ));
    assert_eq!(idx.apply(5, &[(a, output(9))]).unwrap().0, 4);
}

/// A key touched at every height keeps list sizes only for the versions
/// still provable (it used to keep one per height forever, and rewrote them
/// all at each append), and every kept version still proves what it held.
#[test]
fn sizes_of_a_busy_key_stay_within_the_kept_versions() {
    let keep = 4u64;
    let mut idx = Index::create(SmtMemStore::new(), MemStore::new()).unwrap();
    idx.set_retention(Some(keep));
    let mut roots = vec![idx.root(0).unwrap()];
    let mut next = 0u32;
    for height in 1..=50u64 {
        let (_, root) = idx.apply(height, &created_for(&[1, 2], &mut next)).unwrap();
        roots.push(root);
    }
    let latest = idx.latest_version();
    for version in idx.oldest_version()..=latest {
        let p = idx.prove(&key(1), 0, 100, version).unwrap();
        let got = p.verify(&roots[version as usize], &key(1), 0, 100).unwrap();
        // Version v holds the outputs of heights 1..=v.
        assert_eq!(got.len() as u64, version);
        assert!(got.iter().all(|e| e.height <= version));
    }
    let (_, store) = idx.into_stores();
    let Some(IndexValue::Sizes(sizes)) = store.get(&IndexKey::Sizes(key(1))).unwrap() else {
        panic!("key 1 has sizes");
    };
    assert!(
        sizes.len() as u64 <= keep + 1,
        "{} sizes kept for {keep} versions",
        sizes.len()
    );
}
