//! The store under `kill -9`: a child process (this test binary run again
//! with an env var) commits heights (each with the MMR nodes of that
//! height, in one transaction) and own events as fast as it can, printing
//! each one it has been told is written; the parent kills it at random
//! moments, reopens the store and checks that the heights and own events
//! are exactly the consecutive prefix the child wrote, that everything the
//! child was told is written is there, and that the MMR nodes on disk
//! match the last committed height. Also an ignored measurement of write
//! rates.

use peer::store::{Store, StoreConfig, MAP_GRANULE};
use proofs::{Domain, Hash, MemStore, Mmr};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "POS_STORE_CRASH_CHILD";
const CHAIN: Hash = Hash([9; 32]);
const TEST_DOMAIN: Domain = Domain::new("pos/test/a/v1");

fn config() -> StoreConfig {
    // A tiny map, so the child also grows it while being killed.
    StoreConfig::new(CHAIN, MAP_GRANULE)
}

fn leaf(height: u64) -> Hash {
    Hash::of(TEST_DOMAIN, &height.to_le_bytes())
}

/// The record of `height`: the height, the MMR root after it, and filler
/// of a length that varies from 0 to about 5 KB so records cross pages.
fn record(height: u64, root: &Hash) -> Vec<u8> {
    let mut r = height.to_be_bytes().to_vec();
    r.extend_from_slice(&root.0);
    r.resize(r.len() + (height * 7919 % 5000) as usize, height as u8);
    r
}

fn own_event(round: u64) -> Vec<u8> {
    let mut e = b"own event ".to_vec();
    e.extend_from_slice(&round.to_be_bytes());
    e.resize(e.len() + (round * 31 % 600) as usize, round as u8);
    e
}

/// Not a test by itself: the child's loop when run with [`CHILD_ENV`].
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&dir), &config()).unwrap();
    let last = store.last_height().unwrap().unwrap_or(0);
    let mut mmr = Mmr::open(store.nodes::<u64, Hash>("history").unwrap(), last).unwrap();
    let mut round = store.last_own_round().unwrap().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    loop {
        let height = mmr.size() + 1;
        mmr.append(leaf(height)).unwrap();
        store
            .commit_height(height, &record(height, &mmr.root()), &[mmr.store()])
            .unwrap();
        writeln!(out, "height {height}").unwrap();
        out.flush().unwrap();
        round += 1;
        store.put_own_event(round, &own_event(round)).unwrap();
        writeln!(out, "round {round}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_at_random_moments_loses_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = RandomState::new().build_hasher().finish() | 1;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let exe = std::env::current_exe().unwrap();
    let (mut kept_height, mut kept_round) = (0, 0);
    let started = Instant::now();
    for run in 0..8 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut height, mut round) = (0u64, 0u64);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(h) = line.strip_prefix("height ") {
                    height = h.parse().unwrap();
                } else if let Some(r) = line.strip_prefix("round ") {
                    round = r.parse().unwrap();
                }
            }
            (height, round)
        });
        std::thread::sleep(Duration::from_millis(20 + rand(400)));
        if let Some(status) = child.try_wait().unwrap() {
            panic!("run {run}: the child stopped by itself: {status}");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (acked_height, acked_round) = reader.join().unwrap();

        let store = Store::open(dir.path(), &config()).unwrap();
        let last = store.last_height().unwrap().unwrap_or(0);
        let last_round = store.last_own_round().unwrap().unwrap_or(0);
        assert!(
            last >= acked_height.max(kept_height),
            "run {run}: height {last} stored, {acked_height} acknowledged, {kept_height} before"
        );
        assert!(
            last_round >= acked_round.max(kept_round),
            "run {run}: round {last_round} stored, {acked_round} acknowledged"
        );
        // Each loop writes a height, then an own event: a kill between the
        // two leaves the rounds one further behind the heights.
        assert!(last_round <= last && last - last_round <= run + 1);

        let mut mem = Mmr::new(MemStore::new());
        let mut next = 1;
        loop {
            let page = store.heights_from(next, 1000).unwrap();
            if page.is_empty() {
                break;
            }
            for (h, r) in page {
                assert_eq!(h, next);
                mem.append(leaf(h)).unwrap();
                assert_eq!(r, record(h, &mem.root()), "run {run}: height {h}");
                next += 1;
            }
        }
        assert_eq!(next, last + 1);
        let disk = Mmr::open(store.nodes::<u64, Hash>("history").unwrap(), last).unwrap();
        assert_eq!(disk.root(), mem.root(), "run {run}: MMR nodes on disk");

        let own = store.own_events_from(0).unwrap();
        assert_eq!(own.len() as u64, last_round);
        for (i, (round, bytes)) in own.into_iter().enumerate() {
            assert_eq!(round, i as u64 + 1);
            assert_eq!(bytes, own_event(round));
        }
        eprintln!(
            "run {run}: killed at height {last} (acknowledged {acked_height}), round {last_round}, map {} bytes",
            store.map_size()
        );
        (kept_height, kept_round) = (last, last_round);
    }
    assert!(kept_height > 0, "the child never committed a height");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Write rates on this machine's disk: every call is one synced LMDB
/// transaction.
#[test]
#[ignore = "measurement: run with `cargo test -p peer --profile ci --test store_crash -- --ignored --nocapture write_rates`"]
fn write_rates() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreConfig::new(CHAIN, 64 << 20)).unwrap();
    let n = 500u64;
    let event = vec![0x5a; 400];
    let t = Instant::now();
    for round in 1..=n {
        store.put_own_event(round, &event).unwrap();
    }
    let own = n as f64 / t.elapsed().as_secs_f64();

    let mut mmr = Mmr::new(store.nodes::<u64, Hash>("history").unwrap());
    let t = Instant::now();
    for height in 1..=n {
        mmr.append(leaf(height)).unwrap();
        store
            .commit_height(height, &record(height, &mmr.root()), &[mmr.store()])
            .unwrap();
    }
    let heights = n as f64 / t.elapsed().as_secs_f64();

    let events: Vec<(u64, Hash, Vec<u8>)> = (0..20_000u64)
        .map(|i| (i / 100, leaf(i), vec![i as u8; 400]))
        .collect();
    let t = Instant::now();
    for chunk in events.chunks(100) {
        let refs: Vec<(u64, Hash, &[u8])> =
            chunk.iter().map(|(r, id, b)| (*r, *id, &b[..])).collect();
        store.put_events(&refs).unwrap();
    }
    let events_rate = events.len() as f64 / t.elapsed().as_secs_f64();
    println!(
        "{{\"own_events_per_sec\":{own:.0},\"heights_per_sec\":{heights:.0},\"events_per_sec_in_batches_of_100\":{events_rate:.0},\"disk_bytes\":{}}}",
        store.disk_bytes().unwrap()
    );
}
