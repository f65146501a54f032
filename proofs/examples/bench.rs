//! Throughput, proof sizes and memory of the proofs structures at a given
//! number of outputs. Prints one JSON line (the last line of stdout).
//!
//! `cargo run --release -p proofs --example bench -- --outputs 1000000`

use clap::Parser;
use proofs::smt::{MemTree, SparseMerkleTree};
use proofs::{Domain, Hash, Hasher, MemStore, Mmr};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Counts live heap bytes so the memory figure is measured, not estimated.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const BENCH: Domain = Domain::new("pos/proofs/bench/v1");

#[derive(Parser)]
#[command(about = "Benchmark the output set (sparse Merkle tree) and the history (MMR)")]
struct Args {
    /// Outputs in the tree (and leaves in the history).
    #[arg(long, default_value_t = 1_000_000)]
    outputs: u64,
    /// Updates per measured batch (a committed sub-DAG's worth).
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Measured batches.
    #[arg(long, default_value_t = 20)]
    batches: usize,
    /// Threads a batch update may use (`SparseMerkleTree::set_parallelism`);
    /// 0: as many as the machine has cores.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn key(i: u64) -> Hash {
    Hash::of(BENCH, &i.to_le_bytes())
}

fn value(i: u64, v: u64) -> Hash {
    let mut h = Hasher::new(BENCH);
    h.update(&i.to_le_bytes()).update(&v.to_le_bytes());
    h.finalize()
}

/// A small deterministic generator (xorshift) for picking keys.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

type Batch = Vec<(Hash, Option<Hash>)>;

/// The batches both trees get: the build (n outputs, 100k at a time), then
/// warm-up and measured batches, made before any timing so the figures are
/// the tree's work alone.
struct Workload {
    build: Vec<Batch>,
    warmup: Vec<Batch>,
    measured: Vec<Batch>,
    /// Keys created in all.
    keys: u64,
}

impl Workload {
    fn new(n: u64, a: &Args) -> Self {
        let build = (0..n)
            .step_by(100_000)
            .map(|from| {
                (from..(from + 100_000).min(n))
                    .map(|i| (key(i), Some(value(i, 0))))
                    .collect()
            })
            .collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut next_key = n;
        // Steady state first: the 8 kept versions' stale nodes fill the
        // tree during these warm-up batches, not during the measured ones.
        const WARMUP: usize = 8;
        let mut batches: Vec<Batch> = (0..WARMUP + a.batches)
            .map(|b| {
                // Spends change values, new outputs are inserted, a few are
                // deleted.
                (0..a.batch)
                    .map(|j| match j % 10 {
                        0..=6 => {
                            let i = rng.next() % next_key;
                            (key(i), Some(value(i, b as u64 + 1)))
                        }
                        7 | 8 => {
                            next_key += 1;
                            (key(next_key - 1), Some(value(next_key - 1, 0)))
                        }
                        _ => (key(rng.next() % next_key), None),
                    })
                    .collect()
            })
            .collect();
        let measured = batches.split_off(WARMUP);
        Workload {
            build,
            warmup: batches,
            measured,
            keys: next_key,
        }
    }

    /// Updates per second over the measured batches, after the warm-up.
    fn measure(&self, mut apply: impl FnMut(&[(Hash, Option<Hash>)])) -> f64 {
        for b in &self.warmup {
            apply(b);
        }
        let t = Instant::now();
        let mut updates = 0;
        for b in &self.measured {
            apply(b);
            updates += b.len();
        }
        updates as f64 / t.elapsed().as_secs_f64()
    }
}

fn median(mut v: Vec<usize>) -> usize {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let a = Args::parse();
    let n = a.outputs.max(1);
    let threads = match a.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    };

    // Ceiling: raw Blake2b-256 node hashes of 64 bytes, one core.
    let t = Instant::now();
    let mut acc = Hash::ZERO;
    let mut hashes = 0u64;
    while t.elapsed().as_millis() < 500 {
        for _ in 0..10_000 {
            let mut h = Hasher::new(proofs::smt::NODE_DOMAIN);
            h.update(&acc.0).update(&acc.0);
            acc = h.finalize();
        }
        hashes += 10_000;
    }
    let hash_ceiling = hashes as f64 / t.elapsed().as_secs_f64();

    // Output set: build n outputs, then measure batches of updates, first
    // in the in-memory arena tree (what the ledger holds), then in the
    // paged tree (the layout for a key-value store such as LMDB).
    let work = Workload::new(n, &a);
    let before = LIVE.load(Ordering::Relaxed);
    let mut mem = MemTree::new();
    // Keep only the newest version while building, so the memory figure is
    // the tree itself; then keep 8 versions, as a peer answering "as of
    // root R" would.
    mem.set_retention(Some(1));
    mem.set_parallelism(threads, std::sync::Arc::new(ScopedThreads));
    for batch in &work.build {
        mem.apply_batch(batch)
            .expect("in-memory tree does not fail");
    }
    let memory_per_output = (LIVE.load(Ordering::Relaxed) - before) as f64 / n as f64;
    mem.set_retention(Some(8));
    let mut hashes = 0u64;
    let smt_rate = work.measure(|b| {
        mem.apply_batch(b).expect("in-memory tree does not fail");
        hashes += mem.last_batch_hashes();
    });
    // Warm-up and measured batches alike (`measure` runs both).
    let batches = (work.warmup.len() + work.measured.len()).max(1);
    let hashes_per_update = hashes as f64 / (batches * a.batch.max(1)) as f64;
    let version = mem.latest_version();
    let root = mem.root(version).expect("latest version exists");
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    let mut proofs = Vec::new();
    let mut sizes = Vec::new();
    while proofs.len() < 2000 {
        let k = key(rng.next() % work.keys);
        let (v, p) = mem
            .get_with_proof(&k, version)
            .expect("latest version exists");
        if let Some(v) = v {
            sizes.push(p.encode().len());
            proofs.push((k, v, p));
        }
    }
    let t = Instant::now();
    let mut verified = 0usize;
    while t.elapsed().as_millis() < 500 {
        for (k, v, p) in &proofs {
            p.verify(&root, k, Some(v)).expect("honest proof verifies");
        }
        verified += proofs.len();
    }
    let verify_rate = verified as f64 / t.elapsed().as_secs_f64();
    drop(proofs);
    drop(mem);

    let before = LIVE.load(Ordering::Relaxed);
    let mut paged = SparseMerkleTree::new();
    paged.set_retention(Some(1));
    paged.set_parallelism(threads, std::sync::Arc::new(ScopedThreads));
    for batch in &work.build {
        paged
            .apply_batch(batch)
            .expect("in-memory store does not fail");
    }
    let paged_memory_per_output = (LIVE.load(Ordering::Relaxed) - before) as f64 / n as f64;
    paged.set_retention(Some(8));
    let paged_rate = work.measure(|b| {
        paged.apply_batch(b).expect("in-memory store does not fail");
    });
    assert_eq!(
        paged
            .root(paged.latest_version())
            .expect("latest version exists"),
        root,
        "both trees hold the same set"
    );
    drop(paged);

    // History: append n leaves, then proof sizes.
    let mut mmr = Mmr::new(MemStore::new());
    let t = Instant::now();
    for i in 0..n {
        mmr.append(key(i)).expect("in-memory store does not fail");
    }
    let mmr_rate = n as f64 / t.elapsed().as_secs_f64();
    let incl: Vec<usize> = (0..1000)
        .map(|_| {
            mmr.inclusion_proof(rng.next() % n)
                .expect("in range")
                .encode()
                .len()
        })
        .collect();
    let cons: Vec<usize> = (0..1000)
        .map(|_| {
            mmr.consistency_proof(1 + rng.next() % n)
                .expect("in range")
                .encode()
                .len()
        })
        .collect();

    println!(
        "{}",
        serde_json::json!({
            "outputs": n,
            "smt_batch_updates_per_sec": smt_rate.round(),
            "smt_batch_size": a.batch,
            "smt_hashes_per_update": (hashes_per_update * 100.0).round() / 100.0,
            "paged_smt_batch_updates_per_sec": paged_rate.round(),
            "smt_threads": threads,
            "paged_memory_bytes_per_output": paged_memory_per_output.round(),
            "smt_proof_bytes_p50": median(sizes),
            "smt_verify_per_sec": verify_rate.round(),
            "mmr_appends_per_sec": mmr_rate.round(),
            "mmr_inclusion_bytes": median(incl),
            "consistency_bytes": median(cons),
            "hash_ceiling_per_sec": hash_ceiling.round(),
            "memory_bytes_per_output": memory_per_output.round(),
        })
    );
}

use proofs::ScopedThreads;
