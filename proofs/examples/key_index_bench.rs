//! Key index append cost: a state of `--entries` entries over `--keys`
//! owner keys, then `--heights` heights of `--per-height` new entries
//! spread over the keys, retention 32 versions (the ledger's default).
//! Prints one JSON line: microseconds per appended entry.
//!
//! `cargo run --release -p proofs --example key_index_bench`

use clap::Parser;
use proofs::key_index::{IndexMemStore, KeyIndex};
use proofs::smt::MemTree;
use proofs::{Domain, Hash};
use std::time::Instant;

const BENCH: Domain = Domain::new("pos/proofs/key-index-bench/v1");

#[derive(Parser)]
#[command(about = "Benchmark appends to the key index")]
struct Args {
    /// Distinct index keys (the ledger bench uses 4096).
    #[arg(long, default_value_t = 4096)]
    keys: usize,
    /// Entries before the measured heights.
    #[arg(long, default_value_t = 1_000_000)]
    entries: usize,
    /// Measured heights.
    #[arg(long, default_value_t = 100)]
    heights: u64,
    /// Entries per height (the ledger bench creates 4,000: 2 per transaction).
    #[arg(long, default_value_t = 4000)]
    per_height: usize,
}

fn main() {
    let args = Args::parse();
    let mut index = KeyIndex::over(MemTree::new(), IndexMemStore::new()).expect("empty index");
    index.set_retention(Some(32));
    let key = |i: usize| Hash::of(BENCH, &((i % args.keys) as u64).to_le_bytes());
    let mut n = 0u64;
    let mut output = || {
        n += 1;
        Hash::of(BENCH, &[&b"out"[..], &n.to_le_bytes()].concat())
    };
    let start: Vec<(Hash, Hash)> = (0..args.entries).map(|i| (key(i), output())).collect();
    index.apply(0, &start).expect("in memory");
    let t = Instant::now();
    let mut appended = 0;
    for h in 1..=args.heights {
        let created: Vec<(Hash, Hash)> = (0..args.per_height)
            .map(|i| (key(i * 7 + h as usize), output()))
            .collect();
        index.apply(h, &created).expect("in memory");
        appended += created.len();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / appended as f64;
    println!(
        "{{\"keys\":{},\"entries_before\":{},\"appended\":{appended},\"us_per_entry\":{:.2}}}",
        args.keys, args.entries, us
    );
}
