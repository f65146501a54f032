//! What a light client's sync costs: a wallet key owning `--outputs` outputs
//! in a state of `--others` more, synced from scratch in one answer of the
//! peer (`Ledger::prove_sync`) and checked by the wallet (`verify_sync`).
//!
//! Prints one JSON object as the last stdout line:
//! `{"outputs","state_outputs","answer_bytes","answer_bytes_per_output",
//!   "stored_bytes_per_output","prove_ms","verify_ms"}` where
//! `answer_bytes` is the encoded answer (what the wallet downloads),
//! `stored_bytes_per_output` what the wallet keeps per output (its id, state
//! and output-set proof, encoded), and the times are medians of `--reps`.

use clap::Parser;
use dag::identity::{PeerKey, Signer};
use dag::ledger::checkpoint::{Certified, Checkpoint, CommitteeChain, Statement};
use dag::ledger::genesis::{Genesis, GenesisOutput, GenesisPeer, NativeAsset};
use dag::ledger::light::{verify_sync, SyncRequest};
use dag::ledger::state::Params;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "Light-client sync cost: proof bytes and verification time")]
struct Args {
    /// Outputs owned by the synced key (at most 1,024: one answer).
    #[arg(long, default_value_t = 1000)]
    outputs: usize,
    /// Outputs of other keys in the state.
    #[arg(long, default_value_t = 100_000)]
    others: usize,
    #[arg(long, default_value_t = 5)]
    reps: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = Args::parse();
    let mut peers: Vec<Signer> = (0..4)
        .map(|i| Signer::from_seed([i as u8 + 1; 32], [9; 32]))
        .collect();
    let wallet = Signer::from_seed([200; 32], [0; 32]).key();
    let other = |i: usize| {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        PeerKey(Signer::from_seed(b, [0; 32]).key().0)
    };
    eprintln!(
        "building a state of {} outputs…",
        args.outputs + args.others
    );
    let genesis = Genesis {
        chain_name: "bench".into(),
        time_ms: 1,
        native: NativeAsset {
            name: "SHARE".into(),
            precision: 6,
        },
        params: Params::default(),
        peers: peers
            .iter()
            .enumerate()
            .map(|(i, s)| GenesisPeer {
                name: format!("peer-{i}"),
                key: s.key(),
                addr: format!("127.0.0.1:{}", 7000 + i).parse().expect("address"),
            })
            .collect(),
        outputs: (0..args.outputs)
            .map(|_| wallet)
            .chain((0..args.others).map(other))
            .enumerate()
            .map(|(i, owner)| GenesisOutput {
                owner,
                amount: 1_000 + i as u128,
                host: format!("peer-{}", i % 4),
            })
            .collect(),
    };
    let ledger = genesis.ledger().expect("valid genesis");
    let committee = genesis.committee().expect("committee");
    let cp = Checkpoint {
        chain: genesis.chain_id(),
        height: 0,
        round: 0,
        roots: ledger.roots().clone(),
    };
    let mut cert = Certified::new(cp.clone());
    for p in peers.iter_mut() {
        let i = committee.index_of(&p.key()).expect("member");
        cert.add(i, cp.sign(p));
    }
    let chain = CommitteeChain::new(genesis.chain_id(), committee);
    let req = SyncRequest {
        keys: vec![wallet],
        from: 0,
        watch: Vec::new(),
        known_leaves: 0,
    };
    let mut prove = Vec::new();
    let mut verify = Vec::new();
    let mut answer = None;
    for _ in 0..args.reps.max(1) {
        let t = Instant::now();
        let a = ledger.prove_sync(&req, &cert).expect("proved");
        prove.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let v = verify_sync(&req, &a, &chain, None).expect("verifies");
        verify.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(v.keys[0].2.len(), args.outputs);
        answer = Some(a);
    }
    let answer = answer.expect("at least one rep");
    let answer_bytes = proofs::encode(&answer).len();
    let stored: usize = answer.keys[0]
        .outputs
        .iter()
        .map(|po| proofs::encode(&(po.id, &po.state, &po.proof)).len())
        .sum();
    let n = args.outputs.max(1) as f64;
    println!(
        "{}",
        serde_json::json!({
            "outputs": args.outputs,
            "state_outputs": args.outputs + args.others,
            "answer_bytes": answer_bytes,
            "answer_bytes_per_output": (answer_bytes as f64 / n).round(),
            "stored_bytes_per_output": (stored as f64 / n).round(),
            "prove_ms": median(prove),
            "verify_ms": median(verify),
        })
    );
}
