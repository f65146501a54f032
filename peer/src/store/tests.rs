//! Tests of the store's API, its error cases (damaged records written with
//! a raw heed handle, wrong chain or schema), map growth, and the `proofs`
//! structures over [`LmdbNodes`] against the same structures in memory.

use super::*;
use heed::types::Bytes;
use heed::{Env, EnvOpenOptions, WithoutTls};
use proofs::key_index::{IndexKey, IndexValue, KeyIndex};
use proofs::smt::{StoreKey, StoreValue};
use proofs::{Domain, MemStore, Mmr, NodeStore, SparseMerkleTree};
use proptest::prelude::*;
use std::path::Path;

const CHAIN: Hash = Hash([7; 32]);
const TEST_DOMAIN: Domain = Domain::new("pos/test/a/v1");

fn open(dir: &Path) -> Store {
    Store::open(dir, &StoreConfig::new(CHAIN, 1 << 20)).unwrap()
}

fn h(i: u64) -> Hash {
    Hash::of(TEST_DOMAIN, &i.to_le_bytes())
}

/// A raw handle on a closed store's files, to damage them.
fn raw_env(dir: &Path) -> Env<WithoutTls> {
    // SAFETY: the store on `dir` is closed, and nothing else opens it while
    // the test holds this handle.
    unsafe {
        EnvOpenOptions::new()
            .read_txn_without_tls()
            .max_dbs(64)
            .open(dir)
            .unwrap()
    }
}

fn raw_put(dir: &Path, db: &str, key: &[u8], value: &[u8]) {
    let env = raw_env(dir);
    let mut txn = env.write_txn().unwrap();
    let db: Database<Bytes, Bytes> = env.open_database(&txn, Some(db)).unwrap().unwrap();
    db.put(&mut txn, key, value).unwrap();
    txn.commit().unwrap();
}

fn raw_delete(dir: &Path, db: &str, key: &[u8]) {
    let env = raw_env(dir);
    let mut txn = env.write_txn().unwrap();
    let db: Database<Bytes, Bytes> = env.open_database(&txn, Some(db)).unwrap().unwrap();
    assert!(db.delete(&mut txn, key).unwrap());
    txn.commit().unwrap();
}

fn corrupt_in(r: Result<impl std::fmt::Debug, StoreError>, db: &str) {
    match r {
        Err(StoreError::Corrupt { db: d, .. }) if d == db => {}
        other => panic!("expected a corrupt record in {db}, got {other:?}"),
    }
}

#[test]
fn open_reopen_and_refuse_other_chain_or_schema() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        assert_eq!(s.chain_id(), CHAIN);
        assert_eq!(s.last_height().unwrap(), None);
        s.append_height(1, b"one").unwrap();
        assert!(s.disk_bytes().unwrap() > 0);
    }
    let s = open(dir.path());
    assert_eq!(s.heights_from(1, 10).unwrap(), vec![(1, b"one".to_vec())]);
    drop(s);

    let other = Store::open(dir.path(), &StoreConfig::new(Hash([8; 32]), 1 << 20));
    match other {
        Err(e @ StoreError::WrongChain { .. }) => {
            assert!(e.to_string().contains(&Hash([8; 32]).to_string()))
        }
        other => panic!("expected WrongChain, got {other:?}"),
    }

    let other_schema = SCHEMA_VERSION + 1;
    raw_put(
        dir.path(),
        DB_META,
        META_SCHEMA,
        &other_schema.to_be_bytes(),
    );
    match Store::open(dir.path(), &StoreConfig::new(CHAIN, 1 << 20)) {
        Err(StoreError::WrongSchema {
            expected: SCHEMA_VERSION,
            found,
        }) if found == other_schema => {}
        other => panic!("expected WrongSchema, got {other:?}"),
    }
    raw_put(dir.path(), DB_META, META_SCHEMA, &[0, 1]);
    corrupt_in(
        Store::open(dir.path(), &StoreConfig::new(CHAIN, 1 << 20)),
        DB_META,
    );
    raw_put(
        dir.path(),
        DB_META,
        META_SCHEMA,
        &SCHEMA_VERSION.to_be_bytes(),
    );
    raw_put(dir.path(), DB_META, META_CHAIN, &[7; 5]);
    corrupt_in(
        Store::open(dir.path(), &StoreConfig::new(CHAIN, 1 << 20)),
        DB_META,
    );
    raw_delete(dir.path(), DB_META, META_CHAIN);
    corrupt_in(
        Store::open(dir.path(), &StoreConfig::new(CHAIN, 1 << 20)),
        DB_META,
    );
    // Records without any stamp are not taken for a fresh store.
    raw_delete(dir.path(), DB_META, META_SCHEMA);
    corrupt_in(
        Store::open(dir.path(), &StoreConfig::new(CHAIN, 1 << 20)),
        DB_HEIGHTS,
    );
}

#[test]
fn one_open_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    match Store::open(dir.path(), &StoreConfig::new(CHAIN, 1 << 20)) {
        Err(StoreError::Locked(_)) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(s);
    open(dir.path());
}

#[test]
fn own_events_never_two_for_a_round() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert_eq!(s.last_own_round().unwrap(), None);
    s.put_own_event(3, b"e3").unwrap();
    s.put_own_event(300, b"e300").unwrap();
    // A retry of the same bytes is fine; anything else for a taken round,
    // or for a round below the last, is refused.
    s.put_own_event(300, b"e300").unwrap();
    s.put_own_event(3, b"e3").unwrap();
    assert!(matches!(
        s.put_own_event(300, b"other"),
        Err(StoreError::OwnRoundTaken {
            round: 300,
            last: 300
        })
    ));
    assert!(matches!(
        s.put_own_event(4, b"e4"),
        Err(StoreError::OwnRoundTaken {
            round: 4,
            last: 300
        })
    ));
    s.put_own_event(301, b"e301").unwrap();
    assert_eq!(s.last_own_round().unwrap(), Some(301));
    assert_eq!(
        s.own_events_from(4).unwrap(),
        vec![(300, b"e300".to_vec()), (301, b"e301".to_vec())]
    );
    assert_eq!(s.own_events_from(0).unwrap().len(), 3);

    assert_eq!(s.prune_own_events_below(301).unwrap(), 2);
    // The last one always stays.
    assert_eq!(s.prune_own_events_below(1000).unwrap(), 0);
    assert_eq!(s.own_events_from(0).unwrap(), vec![(301, b"e301".to_vec())]);

    assert_eq!(s.own_progress().unwrap(), None);
    s.put_own_progress(b"progress").unwrap();
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.own_progress().unwrap(), Some(b"progress".to_vec()));
    assert_eq!(s.last_own_round().unwrap(), Some(301));
    drop(s);

    // A damaged key in the middle: the last is still readable, a scan
    // over it is not.
    raw_put(
        dir.path(),
        DB_OWN_EVENTS,
        &[0, 0, 0, 0, 0, 0, 0, 5, 0],
        b"x",
    );
    let s = open(dir.path());
    assert_eq!(s.last_own_round().unwrap(), Some(301));
    corrupt_in(s.own_events_from(0), DB_OWN_EVENTS);
    drop(s);
    // A damaged last key stops the open, which reads it.
    raw_put(dir.path(), DB_OWN_EVENTS, &[0xff; 9], b"x");
    match Store::open(dir.path(), &StoreConfig::new(CHAIN, 1 << 20)) {
        Err(StoreError::Corrupt { db, .. }) => assert_eq!(db, DB_OWN_EVENTS),
        other => panic!("expected a corrupt own event, got {other:?}"),
    }
}

#[test]
fn events_by_round_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // 256 after 2: rounds sort numerically, not as varint bytes.
    let evs: Vec<(u64, Hash, Vec<u8>)> = [(256, 1), (2, 2), (2, 3), (7, 4), (1000, 5)]
        .iter()
        .map(|&(r, i)| (r, h(i), format!("event {i}").into_bytes()))
        .collect();
    let refs: Vec<(u64, Hash, &[u8])> = evs.iter().map(|(r, i, b)| (*r, *i, &b[..])).collect();
    s.put_events(&refs).unwrap();
    s.put_events(&refs[..1]).unwrap();

    let all = s.events_from_round(0).unwrap();
    let rounds: Vec<u64> = all.iter().map(|e| e.0).collect();
    assert_eq!(rounds, vec![2, 2, 7, 256, 1000]);
    assert!(all[0].1 < all[1].1);
    assert_eq!(s.events_from_round(8).unwrap().len(), 2);
    assert_eq!(s.get_event(&h(4)).unwrap(), Some((7, b"event 4".to_vec())));
    assert_eq!(s.get_event(&h(99)).unwrap(), None);
    assert!(matches!(
        s.put_events(&[(8, h(4), &b"x"[..])]),
        Err(StoreError::EventRoundMismatch {
            stored: 7,
            given: 8,
            ..
        })
    ));

    assert_eq!(s.prune_events_below(256).unwrap(), 3);
    assert_eq!(s.get_event(&h(4)).unwrap(), None);
    assert_eq!(s.events_from_round(0).unwrap().len(), 2);
    // A pruned id may come back (at any round).
    s.put_events(&[(9, h(4), &b"again"[..])]).unwrap();
    drop(s);

    raw_put(dir.path(), DB_EVENT_INDEX, &h(5).0, &[1, 2, 3]);
    let s = open(dir.path());
    corrupt_in(s.get_event(&h(5)), DB_EVENT_INDEX);
    drop(s);
    raw_put(dir.path(), DB_EVENT_INDEX, &h(5).0, &be_u64(999));
    let s = open(dir.path());
    corrupt_in(s.get_event(&h(5)), DB_EVENT_INDEX);
    drop(s);
    raw_put(dir.path(), DB_EVENTS, &[0; 12], b"x");
    let s = open(dir.path());
    corrupt_in(s.events_from_round(0), DB_EVENTS);
    corrupt_in(s.prune_events_below(5), DB_EVENTS);
}

/// Pruning more events than one transaction takes goes on in further
/// transactions until everything below the round is gone, index included.
#[test]
fn a_long_stretch_of_the_event_log_is_pruned_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let n = 2 * super::PRUNE_CHUNK as u64 + 10;
    let ids: Vec<Hash> = (0..n).map(h).collect();
    let body = vec![7u8; 600];
    let refs: Vec<(u64, Hash, &[u8])> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (i as u64 / 3, *id, &body[..]))
        .collect();
    s.put_events(&refs).unwrap();
    let below = n / 3 - 1; // all but the last few rounds
    let expect = ids.len() - refs.iter().filter(|r| r.0 >= below).count();
    assert!(expect > 2 * super::PRUNE_CHUNK);
    assert_eq!(s.prune_events_below(below).unwrap(), expect);
    assert_eq!(s.events_from_round(0).unwrap().len(), ids.len() - expect);
    assert_eq!(s.get_event(&ids[0]).unwrap(), None, "index entry gone");
    assert!(s.get_event(&ids[ids.len() - 1]).unwrap().is_some());
    assert_eq!(s.prune_events_below(below).unwrap(), 0);
}

#[test]
fn heights_are_consecutive_from_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert!(matches!(
        s.append_height(0, b"x"),
        Err(StoreError::HeightNotNext {
            expected: 1,
            got: 0
        })
    ));
    for i in 1..=300u64 {
        s.append_height(i, &i.to_le_bytes()).unwrap();
    }
    assert!(matches!(
        s.append_height(302, b"x"),
        Err(StoreError::HeightNotNext {
            expected: 301,
            got: 302
        })
    ));
    assert!(matches!(
        s.append_height(300, b"x"),
        Err(StoreError::HeightNotNext { expected: 301, .. })
    ));
    assert_eq!(s.last_height().unwrap(), Some(300));
    let page = s.heights_from(255, 3).unwrap();
    assert_eq!(
        page,
        (255..258)
            .map(|i: u64| (i, i.to_le_bytes().to_vec()))
            .collect::<Vec<_>>()
    );
    assert_eq!(s.heights_from(0, usize::MAX).unwrap().len(), 300);
    assert_eq!(s.heights_from(301, 10).unwrap(), vec![]);
    drop(s);

    raw_delete(dir.path(), DB_HEIGHTS, &be_u64(150));
    let s = open(dir.path());
    corrupt_in(s.heights_from(1, usize::MAX), DB_HEIGHTS);
    assert_eq!(s.heights_from(151, 2).unwrap().len(), 2);
    drop(s);
    raw_put(dir.path(), DB_HEIGHTS, &[0xff; 3], b"x");
    match Store::open(dir.path(), &StoreConfig::new(CHAIN, 1 << 20)) {
        Err(StoreError::Corrupt { db, .. }) => assert_eq!(db, DB_HEIGHTS),
        other => panic!("expected a corrupt height, got {other:?}"),
    }
}

#[test]
fn heights_append_in_bursts_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append_heights(&[]).unwrap();
    s.append_heights(&[(1, b"a".to_vec()), (2, b"b".to_vec())])
        .unwrap();
    // A gap inside a burst writes nothing of it.
    assert!(matches!(
        s.append_heights(&[(3, b"c".to_vec()), (5, b"e".to_vec())]),
        Err(StoreError::HeightNotNext {
            expected: 4,
            got: 5
        })
    ));
    assert_eq!(s.last_height().unwrap(), Some(2));
    s.append_heights(&[(3, b"c".to_vec())]).unwrap();
    s.append_height(4, b"d").unwrap();
    assert_eq!(
        s.heights_from(1, 10).unwrap(),
        (1..=4u64)
            .zip([b"a", b"b", b"c", b"d"])
            .map(|(h, b)| (h, b.to_vec()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn meta_map() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert_eq!(s.meta(b"peer/name").unwrap(), None);
    s.put_meta(b"peer/name", b"alice").unwrap();
    assert_eq!(s.meta(b"peer/name").unwrap(), Some(b"alice".to_vec()));
    assert!(s.delete_meta(b"peer/name").unwrap());
    assert!(!s.delete_meta(b"peer/name").unwrap());
    for r in [
        s.put_meta(b"store/chain", b"x").err(),
        s.meta(b"store/schema").err(),
        s.delete_meta(b"store/x").err(),
    ] {
        assert!(matches!(r, Some(StoreError::ReservedMetaKey(_))));
    }
}

#[test]
fn map_grows_on_demand_without_losing_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(CHAIN, MAP_GRANULE).max_map_size(64 << 20);
    let s = Store::open(dir.path(), &config).unwrap();
    let start = s.map_size();
    assert_eq!(start, MAP_GRANULE);
    let record = |i: u64| vec![i as u8; 3000 + (i as usize % 7) * 1000];
    for i in 1..=600u64 {
        s.append_height(i, &record(i)).unwrap();
    }
    // One transaction bigger than several doublings of the map.
    let big = vec![0xab; 4 << 20];
    s.put_own_event(1, &big).unwrap();
    assert!(s.map_size() > 4 << 20, "map is {}", s.map_size());
    assert!(s.disk_bytes().unwrap() > 4 << 20);

    // At the maximum, a write fails cleanly and what was there stays.
    let huge = vec![1; 80 << 20];
    match s.put_own_event(2, &huge) {
        Err(StoreError::MapFull { max }) => assert_eq!(max, 64 << 20),
        other => panic!("expected MapFull, got {other:?}"),
    }
    assert_eq!(s.last_own_round().unwrap(), Some(1));
    drop(s);

    let s = Store::open(dir.path(), &config).unwrap();
    assert!(s.map_size() > 4 << 20);
    let all = s.heights_from(1, usize::MAX).unwrap();
    assert_eq!(all.len(), 600);
    for (i, r) in all {
        assert_eq!(r, record(i));
    }
    assert_eq!(s.own_events_from(1).unwrap(), vec![(1, big)]);
}

#[test]
fn readers_run_while_the_writer_grows_the_map() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(CHAIN, MAP_GRANULE).max_map_size(256 << 20);
    let s = Store::open(dir.path(), &config).unwrap();
    s.append_height(1, b"first").unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let last = s.last_height().unwrap().unwrap();
                let first = s.heights_from(1, 1).unwrap();
                assert_eq!(first, vec![(1, b"first".to_vec())]);
                assert!(last >= 1);
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
            });
        }
        for i in 2..=200u64 {
            s.append_height(i, &vec![i as u8; 20_000]).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(s.map_size() >= 4 << 20);
    assert_eq!(s.last_height().unwrap(), Some(200));
}

#[test]
fn node_databases_are_named_typed_and_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for bad in ["", "Upper", "with space", &"x".repeat(65)] {
        assert!(matches!(
            s.nodes::<u64, Hash>(bad),
            Err(StoreError::BadNodesName(_))
        ));
    }
    let m = s.nodes::<u64, Hash>("history").unwrap();
    assert!(matches!(
        s.nodes::<u64, Hash>("history"),
        Err(StoreError::NodesInUse(_))
    ));
    drop(m);
    let m = s.nodes::<u64, Hash>("history").unwrap();
    drop(m);
    assert!(matches!(
        s.nodes::<StoreKey, StoreValue>("history"),
        Err(StoreError::WrongNodeKind {
            expected: "smt/v1",
            ..
        })
    ));

    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path());
    let foreign = other.nodes::<u64, Hash>("history").unwrap();
    assert!(matches!(
        s.commit_nodes(&[&foreign]),
        Err(StoreError::ForeignNodes(_))
    ));
}

#[test]
fn overlay_reads_its_own_writes_and_commits_with_the_height() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut n = s.nodes::<u64, Hash>("n").unwrap();
    n.put(1, h(1)).unwrap();
    n.put(2, h(2)).unwrap();
    assert_eq!(n.get(&1).unwrap(), Some(h(1)));
    assert_eq!(n.pending_len(), 2);
    s.commit_height(1, b"h1", &[&n]).unwrap();
    assert_eq!(n.pending_len(), 0);
    assert_eq!(n.get(&1).unwrap(), Some(h(1)));

    // A removal hides the committed value until it is committed too.
    n.remove(&1).unwrap();
    n.put(3, h(3)).unwrap();
    assert_eq!(n.get(&1).unwrap(), None);
    // A failed commit writes nothing and keeps the overlay.
    assert!(matches!(
        s.commit_height(5, b"h5", &[&n]),
        Err(StoreError::HeightNotNext { .. })
    ));
    assert_eq!(n.pending_len(), 2);
    n.discard_pending();
    assert_eq!(n.get(&1).unwrap(), Some(h(1)));
    assert_eq!(n.get(&3).unwrap(), None);

    n.remove(&1).unwrap();
    s.commit_height(2, b"h2", &[&n]).unwrap();
    drop(n);
    drop(s);
    let s = open(dir.path());
    let n = s.nodes::<u64, Hash>("n").unwrap();
    assert_eq!(n.get(&1).unwrap(), None);
    assert_eq!(n.get(&2).unwrap(), Some(h(2)));
    assert_eq!(s.last_height().unwrap(), Some(2));
}

/// Node database `n` with key 1 committed and key 2 only buffered.
fn committed_1_buffered_2(s: &Store) -> LmdbNodes<u64, Hash> {
    let mut n = s.nodes::<u64, Hash>("n").unwrap();
    n.put(1, h(1)).unwrap();
    s.commit_nodes(&[&n]).unwrap();
    n.put(2, h(2)).unwrap();
    n
}

/// What only an overlay holds dies there: a removal of a value written
/// since the last commit leaves no tombstone; a removal of a committed
/// one does, and its commit deletes it. Reads lend the overlay's value.
#[test]
fn removals_of_uncommitted_writes_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut n = committed_1_buffered_2(&s);
    let mut seen = None;
    n.visit(&2, &mut |v| seen = v.copied()).unwrap();
    assert_eq!(seen, Some(h(2)));
    n.remove(&2).unwrap();
    assert_eq!(n.pending_len(), 0, "never written, so nothing to delete");
    assert_eq!(n.get(&2).unwrap(), None);
    n.remove(&1).unwrap();
    assert_eq!(n.pending_len(), 1, "a tombstone for the committed value");
    assert_eq!(n.get(&1).unwrap(), None);
    s.commit_nodes(&[&n]).unwrap();
    drop(n);
    let n = s.nodes::<u64, Hash>("n").unwrap();
    assert_eq!((n.get(&1).unwrap(), n.get(&2).unwrap()), (None, None));
}

/// Taking a node moves it out of the overlay or reads it from the disk,
/// and leaves a tombstone exactly when the disk holds it. Without the
/// put-once promise a rewritten key's buffered value still hides the
/// committed one, which its removal must delete; with it, removing a
/// buffered put only drops it.
#[test]
fn taking_nodes_and_the_put_once_promise() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut n = committed_1_buffered_2(&s);
    assert_eq!(n.take(&2).unwrap(), Some(h(2)));
    assert_eq!(n.pending_len(), 0);
    assert_eq!(n.take(&1).unwrap(), Some(h(1)));
    assert_eq!(n.pending_len(), 1, "a tombstone for the committed value");
    assert_eq!(n.take(&1).unwrap(), None);
    assert_eq!(n.take(&7).unwrap(), None);
    assert_eq!(n.pending_len(), 1, "nothing to remove, nothing buffered");
    // A rewritten committed key: its removal must reach the disk.
    n.put(3, h(3)).unwrap();
    s.commit_nodes(&[&n]).unwrap();
    n.put(3, h(4)).unwrap();
    assert_eq!(n.remove_taking(&3).unwrap(), Some(h(4)));
    s.commit_nodes(&[&n]).unwrap();
    assert_eq!(n.get(&3).unwrap(), None);
    drop(n);

    let mut once = s.nodes::<u64, Hash>("once").unwrap().put_once();
    once.put(5, h(5)).unwrap();
    s.commit_nodes(&[&once]).unwrap();
    once.put(6, h(6)).unwrap();
    assert_eq!(once.remove_taking(&6).unwrap(), Some(h(6)));
    assert_eq!(once.pending_len(), 0, "dropped, no tombstone");
    once.remove(&5).unwrap();
    assert_eq!(once.pending_len(), 1, "a committed key still gets one");
    s.commit_nodes(&[&once]).unwrap();
    assert_eq!((once.get(&5).unwrap(), once.get(&6).unwrap()), (None, None));
}

/// A commit of the writes before an epoch writes exactly those; the
/// younger stay buffered and readable, and a later full commit writes them.
#[test]
fn commits_by_epoch_leave_younger_writes_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut n = s.nodes::<u64, Hash>("n").unwrap();
    n.put(1, h(1)).unwrap();
    n.set_epoch(5);
    n.put(2, h(2)).unwrap();
    n.set_epoch(9);
    n.put(3, h(3)).unwrap();
    s.commit_nodes_before(&[&n], 9).unwrap();
    assert_eq!(n.pending_len(), 1);
    // 1 and 2 are committed: a removal now needs a tombstone.
    n.remove(&2).unwrap();
    assert_eq!(n.pending_len(), 2);
    // 3 is still only buffered: its removal cancels.
    n.remove(&3).unwrap();
    assert_eq!(n.pending_len(), 1);
    s.commit_nodes(&[&n]).unwrap();
    assert_eq!(n.pending_len(), 0);
    assert_eq!(n.get(&1).unwrap(), Some(h(1)));
    assert_eq!((n.get(&2).unwrap(), n.get(&3).unwrap()), (None, None));
}

/// A volatile store (no syncs, written through its map) reads back what
/// it wrote, and grows its map like any other.
#[test]
fn a_volatile_store_works_like_a_durable_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        &StoreConfig::new(Hash([7; 32]), MAP_GRANULE).volatile(),
    )
    .unwrap();
    let mut n = s.nodes::<u64, Vec<u8>>("n").unwrap();
    // More than the initial map: the map must grow.
    for i in 0..64u64 {
        n.put(i, vec![i as u8; 4096]).unwrap();
    }
    s.commit_nodes(&[&n]).unwrap();
    s.release_mapped_pages();
    for i in 0..64u64 {
        assert_eq!(n.get(&i).unwrap(), Some(vec![i as u8; 4096]));
    }
    assert!(s.map_size() > MAP_GRANULE);
}

#[test]
fn damaged_node_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        let tree =
            SparseMerkleTree::create(s.nodes::<StoreKey, StoreValue>("smt").unwrap()).unwrap();
        s.commit_nodes(&[tree.store()]).unwrap();
    }
    let meta_key = StoreKey::Meta.key_bytes();
    // Garbage, then a non-canonical spelling of a valid value (an overlong
    // varint), then trailing bytes: all three are refused.
    let valid = proofs::encode(&StoreValue::Root(None));
    let mut trailing = valid.clone();
    trailing.push(0);
    for bad in [vec![0xff, 0xff, 0xff], vec![0x81, 0x00, 0x00], trailing] {
        raw_put(dir.path(), "nodes/smt", &meta_key, &bad);
        let s = open(dir.path());
        let nodes = s.nodes::<StoreKey, StoreValue>("smt").unwrap();
        corrupt_in(nodes.get_checked(&StoreKey::Meta), "nodes/smt");
        match SparseMerkleTree::open(nodes) {
            Err(proofs::SmtError::Store(proofs::StoreError::Backend(msg))) => {
                assert!(msg.contains("nodes/smt"), "{msg}")
            }
            other => panic!("expected a backend error, got {:?}", other.err()),
        }
    }
}

#[test]
fn mmr_and_key_index_over_lmdb_match_memory() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut disk = Mmr::new(s.nodes::<u64, Hash>("history").unwrap());
    let mut mem = Mmr::new(MemStore::new());
    let mut index = KeyIndex::create(
        s.nodes::<StoreKey, StoreValue>("index-tree").unwrap(),
        s.nodes::<IndexKey, IndexValue>("index").unwrap(),
    )
    .unwrap();
    let mut mem_index = KeyIndex::in_memory(MemStore::new()).unwrap();
    {
        let (t, i) = index.into_stores();
        s.commit_nodes(&[&t, &i]).unwrap();
        index = KeyIndex::open(t, i).unwrap();
    }
    for height in 1..=40u64 {
        let leaves: Vec<Hash> = (0..height % 5).map(|j| h(height * 10 + j)).collect();
        disk.append_batch(leaves.iter().copied()).unwrap();
        mem.append_batch(leaves.iter().copied()).unwrap();
        let created: Vec<(Hash, Hash)> =
            leaves.iter().map(|l| (h(l.0[0] as u64 % 3), *l)).collect();
        let a = index.apply(height, &created).unwrap();
        let b = mem_index.apply(height, &created).unwrap();
        assert_eq!(a, b);
        assert_eq!(disk.root(), mem.root());
        // Reopen the index from its stores every height so the commit goes
        // through stores the caller holds.
        let (t, i) = index.into_stores();
        s.commit_height(height, &disk.root().0, &[disk.store(), &t, &i])
            .unwrap();
        index = KeyIndex::open(t, i).unwrap();
    }
    let size = disk.size();
    let (t, i) = index.into_stores();
    drop((disk, t, i));
    drop(s);

    let s = open(dir.path());
    let disk = Mmr::open(s.nodes::<u64, Hash>("history").unwrap(), size).unwrap();
    assert_eq!(disk.root(), mem.root());
    for leaf in [0, size / 2, size - 1] {
        assert_eq!(
            disk.inclusion_proof(leaf).unwrap(),
            mem.inclusion_proof(leaf).unwrap()
        );
    }
    assert_eq!(
        disk.consistency_proof(size / 3).unwrap(),
        mem.consistency_proof(size / 3).unwrap()
    );
    let index = KeyIndex::open(
        s.nodes::<StoreKey, StoreValue>("index-tree").unwrap(),
        s.nodes::<IndexKey, IndexValue>("index").unwrap(),
    )
    .unwrap();
    for k in 0..3 {
        let v = index.latest_version();
        assert_eq!(index.root(v).unwrap(), mem_index.root(v).unwrap());
        assert_eq!(
            index.prove(&h(k), 5, 30, v).unwrap(),
            mem_index.prove(&h(k), 5, 30, v).unwrap()
        );
    }
    assert_eq!(
        s.heights_from(40, 1).unwrap(),
        vec![(40, mem.root().0.to_vec())]
    );
}

/// One step of the tree model: a batch, or pruning to the newest versions.
#[derive(Clone, Debug)]
enum Step {
    Batch(Vec<(u8, Option<u8>)>),
    Prune(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => proptest::collection::vec((0u8..48, proptest::option::of(any::<u8>())), 0..24)
            .prop_map(Step::Batch),
        1 => (1u64..4).prop_map(Step::Prune),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The same batches give the same roots and proofs over LMDB as in
    /// memory, at every kept version, before and after close/reopen.
    #[test]
    fn smt_over_lmdb_matches_memory(steps in proptest::collection::vec(step(), 1..8)) {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let mut mem = SparseMerkleTree::new();
        // As the peer opens its trees: pages are put once, so pruning a
        // buffered page drops it without a look at the disk.
        let mut disk = SparseMerkleTree::create(
            s.nodes::<StoreKey, StoreValue>("outputs").unwrap().put_once(),
        )
        .unwrap();
        s.commit_nodes(&[disk.store()]).unwrap();
        let key = |k: u8| h(u64::from(k));
        let mut height = 0;
        for (i, st) in steps.iter().enumerate() {
            match st {
                Step::Batch(b) => {
                    let batch: Vec<(Hash, Option<Hash>)> =
                        b.iter().map(|(k, v)| (key(*k), v.map(|v| h(1000 + u64::from(v))))).collect();
                    let a = mem.apply_batch(&batch).unwrap();
                    let d = disk.apply_batch(&batch).unwrap();
                    prop_assert_eq!(a, d);
                }
                Step::Prune(keep) => {
                    prop_assert_eq!(mem.prune(*keep).unwrap(), disk.prune(*keep).unwrap());
                }
            }
            height += 1;
            let root = disk.root(disk.latest_version()).unwrap();
            // The nodes reach the disk every third height (and at the
            // end), so pages are pruned both buffered and committed.
            if height % 3 == 0 || i + 1 == steps.len() {
                s.commit_height(height, &root.0, &[disk.store()]).unwrap();
            } else {
                s.commit_height(height, &root.0, &[]).unwrap();
            }
        }
        let check = |disk: &SparseMerkleTree<LmdbNodes<StoreKey, StoreValue>>| -> Result<(), TestCaseError> {
            prop_assert_eq!(disk.latest_version(), mem.latest_version());
            prop_assert_eq!(disk.oldest_version(), mem.oldest_version());
            prop_assert_eq!(disk.node_count(), mem.node_count());
            for v in mem.oldest_version()..=mem.latest_version() {
                prop_assert_eq!(disk.root(v).unwrap(), mem.root(v).unwrap());
                for k in (0u8..50).step_by(7) {
                    prop_assert_eq!(
                        disk.get_with_proof(&key(k), v).unwrap(),
                        mem.get_with_proof(&key(k), v).unwrap()
                    );
                }
            }
            Ok(())
        };
        check(&disk)?;
        drop(disk);
        drop(s);
        let s = open(dir.path());
        let disk = SparseMerkleTree::open(s.nodes::<StoreKey, StoreValue>("outputs").unwrap()).unwrap();
        check(&disk)?;
        // Pruned pages are gone from disk too, not just from the overlay.
        let i = &*s.inner;
        let entries = i.handle.read(|txn| {
            let db: Db = i.handle.env.open_database(txn, Some("nodes/outputs"))?.unwrap();
            Ok(db.len(txn)?)
        }).unwrap();
        // Pages, one root per kept version and the meta entry, plus at
        // most one stale list per kept version.
        let versions = mem.latest_version() - mem.oldest_version() + 1;
        let fixed = mem.node_count() + versions + 1;
        prop_assert!(entries >= fixed && entries <= fixed + versions, "{} entries", entries);
    }
}

/// The ledger shares the store across threads, and a tree's parallel batch
/// walk needs a `Sync` node store.
#[test]
fn store_and_nodes_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
    check::<LmdbNodes<StoreKey, StoreValue>>();
    check::<LmdbNodes<IndexKey, IndexValue>>();
    check::<LmdbNodes<u64, Hash>>();
}

#[test]
fn a_large_snapshot_is_stored_in_pieces_and_read_back_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), &StoreConfig::new(CHAIN, 1 << 20)).unwrap();
    let piece = SNAPSHOT_PIECE_BYTES;
    let data: Vec<u8> = (0..piece * 5 / 2).map(|i| (i * 7 % 251) as u8).collect();
    // Written in uneven parts, as an export hands them over.
    let mut w = s.snapshot_writer(5).unwrap();
    for part in data.chunks(300_001) {
        w.write(part).unwrap();
    }
    // Not complete until finished: invisible.
    assert_eq!(s.latest_snapshot_height().unwrap(), None);
    assert_eq!(s.snapshot_chunk(5, 0, 10).unwrap(), None);
    assert!(!s.put_snapshot_certificate(5, b"c").unwrap());
    assert_eq!(w.finish(false).unwrap(), data.len() as u64);
    assert_eq!(s.latest_snapshot().unwrap(), Some((5, data.clone())));
    // Chunks within a piece, across a boundary, at the end and past it.
    for (offset, max) in [
        (0, 10),
        (piece - 3, 10),
        (2 * piece - 1, piece + 2),
        (data.len() - 4, 100),
    ] {
        let end = (offset + max).min(data.len());
        assert_eq!(
            s.snapshot_chunk(5, offset as u64, max).unwrap(),
            Some(data[offset..end].to_vec()),
            "offset {offset}"
        );
    }
    assert_eq!(
        s.snapshot_chunk(5, data.len() as u64 + 9, 10).unwrap(),
        Some(vec![])
    );
    assert!(s.put_snapshot_certificate(5, b"cert").unwrap());
    assert_eq!(
        s.latest_certified_snapshot().unwrap(),
        Some((5, b"cert".to_vec(), data.len() as u64))
    );
    // An interrupted write of a later snapshot (a crash) stays invisible,
    // and the next snapshot written removes its pieces.
    let mut w = s.snapshot_writer(6).unwrap();
    w.write(&data).unwrap();
    drop(w);
    assert_eq!(s.latest_snapshot_height().unwrap(), Some(5));
    s.put_snapshot(7, b"seven", false).unwrap();
    let raw = s.inner.snapshots;
    let keys: Vec<Vec<u8>> = s
        .read(|txn| {
            let mut v = Vec::new();
            for item in raw.iter(txn)? {
                v.push(item?.0.to_vec());
            }
            Ok(v)
        })
        .unwrap();
    assert!(
        keys.iter().all(|k| k[..8] != 6u64.to_be_bytes()),
        "pieces of 6 left"
    );
    assert_eq!(s.latest_snapshot().unwrap(), Some((7, b"seven".to_vec())));
    // A missing piece is a corrupt store, not a short snapshot.
    drop(s);
    raw_delete(dir.path(), DB_SNAPSHOTS, &piece_key(5, 1));
    let s = Store::open(dir.path(), &StoreConfig::new(CHAIN, 1 << 20)).unwrap();
    corrupt_in(s.snapshot_chunk(5, piece as u64, 10), DB_SNAPSHOTS);
    assert_eq!(
        s.snapshot_chunk(5, 0, 10).unwrap(),
        Some(data[..10].to_vec())
    );
    // A damaged length (here the largest possible) is a corrupt store,
    // not an attempt to allocate it.
    drop(s);
    raw_put(
        dir.path(),
        DB_SNAPSHOTS,
        &snapshot_key(7, SNAPSHOT_DATA),
        &u64::MAX.to_be_bytes(),
    );
    let s = Store::open(dir.path(), &StoreConfig::new(CHAIN, 1 << 20)).unwrap();
    corrupt_in(s.latest_snapshot(), DB_SNAPSHOTS);
    corrupt_in(s.snapshot_chunk(7, 0, 10), DB_SNAPSHOTS);
}

#[test]
fn snapshots_keep_the_newest_two_and_an_installed_one_moves_the_heights_base() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for h in 1..=3 {
        s.append_height(h, b"h").unwrap();
    }
    assert_eq!(s.latest_snapshot().unwrap(), None);
    assert_eq!(s.latest_snapshot_height().unwrap(), None);
    s.put_snapshot(2, b"two", false).unwrap();
    s.put_snapshot(3, b"three", false).unwrap();
    assert_eq!(s.latest_certified_snapshot().unwrap(), None);
    assert!(s.put_snapshot_certificate(2, b"cert2").unwrap());
    assert!(
        !s.put_snapshot_certificate(9, b"none").unwrap(),
        "no snapshot 9"
    );
    assert_eq!(
        s.latest_certified_snapshot().unwrap(),
        Some((2, b"cert2".to_vec(), 3))
    );
    assert_eq!(s.snapshot_chunk(3, 1, 3).unwrap(), Some(b"hre".to_vec()));
    assert_eq!(s.snapshot_chunk(3, 4, 10).unwrap(), Some(b"e".to_vec()));
    assert_eq!(s.snapshot_chunk(3, u64::MAX, 10).unwrap(), Some(vec![]));
    assert_eq!(s.snapshot_chunk(7, 0, 10).unwrap(), None);
    // A third one pushes out the oldest, certificate and all.
    s.put_snapshot(4, b"four", false).unwrap();
    assert_eq!(s.snapshot_chunk(2, 0, 10).unwrap(), None);
    assert_eq!(s.latest_certified_snapshot().unwrap(), None);
    assert_eq!(s.latest_snapshot().unwrap(), Some((4, b"four".to_vec())));
    assert_eq!(s.latest_snapshot_height().unwrap(), Some(4));
    // Our own snapshot does not move the heights; an installed one ahead
    // of them does, and the heights go on after it, with one gap.
    assert_eq!(s.heights_base().unwrap(), 3);
    s.put_snapshot(10, b"ten", true).unwrap();
    assert_eq!(s.heights_base().unwrap(), 10);
    assert!(matches!(
        s.append_height(4, b"h"),
        Err(StoreError::HeightNotNext {
            expected: 11,
            got: 4
        })
    ));
    s.append_heights(&[(11, b"e".to_vec()), (12, b"t".to_vec())])
        .unwrap();
    let all: Vec<u64> = s
        .heights_from(1, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    assert_eq!(all, vec![1, 2, 3, 11, 12]);
    assert_eq!(s.heights_from(5, 1).unwrap()[0].0, 11);
    // The base persists.
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.heights_base().unwrap(), 12);
    s.put_handover(4096, b"h1").unwrap();
    s.put_handover(8192, b"h2").unwrap();
    assert_eq!(
        s.handovers().unwrap(),
        vec![(4096, b"h1".to_vec()), (8192, b"h2".to_vec())]
    );
}

#[test]
fn released_map_pages_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let events: Vec<(u64, Hash, Vec<u8>)> = (0..2000u64)
        .map(|i| (i / 4, h(i), vec![(i % 251) as u8; 300]))
        .collect();
    let refs: Vec<(u64, Hash, &[u8])> = events
        .iter()
        .map(|(r, id, b)| (*r, *id, b.as_slice()))
        .collect();
    assert_eq!(s.first_event_round().unwrap(), None);
    s.put_events(&refs).unwrap();
    assert_eq!(s.first_event_round().unwrap(), Some(0));
    s.prune_events_below(7).unwrap();
    assert_eq!(s.first_event_round().unwrap(), Some(7));
    let before = s.events_from_round(0).unwrap();
    let mapped = || {
        let maps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let file = std::fs::canonicalize(dir.path().join("data.mdb")).unwrap();
        let mut rss_kb = 0u64;
        let mut inside = false;
        for line in maps.lines() {
            if line
                .split_whitespace()
                .next()
                .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
            {
                inside = line.split_whitespace().nth(5).map(Path::new) == Some(file.as_path());
            } else if inside && line.starts_with("Rss:") {
                rss_kb += line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
        }
        rss_kb
    };
    assert!(mapped() > 0, "reading mapped the file's pages");
    s.release_mapped_pages();
    assert_eq!(mapped(), 0, "released");
    assert_eq!(s.events_from_round(0).unwrap(), before);
    s.release_mapped_pages();
    assert_eq!(s.get_event(&h(1999)).unwrap().unwrap().1, events[1999].2);
}
