//! Runs the simulator over a matrix of configurations and seeds, one JSON
//! line per run, then a summary line. Exit status 1 if any run violated
//! safety or stalled.

use clap::Parser;
use dag::sim::{run, Behavior, SimConfig, Split, StakeDist};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Parser, Debug)]
#[command(
    about = "Sweep the consensus simulator over peers, behaviours, stake, loss, partitions and seeds"
)]
struct Args {
    /// Seeds per configuration (1..=S).
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// Rounds per run.
    #[arg(long, default_value_t = 300)]
    rounds: u64,
    /// Peer counts, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "4,7,10,16,31,64")]
    peers: Vec<usize>,
    /// Worker threads (each runs whole simulations; each simulation is
    /// single-threaded and deterministic).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Clone, Copy, Debug)]
enum Net {
    Clean,
    Loss,
    PartitionHalves,
    PartitionMinority,
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let mut jobs = Vec::new();
    for &n in &a.peers {
        let f = (n - 1) / 3;
        for b in Behavior::ALL {
            for stake in [StakeDist::Uniform, StakeDist::Skewed] {
                for net in [
                    Net::Clean,
                    Net::Loss,
                    Net::PartitionHalves,
                    Net::PartitionMinority,
                ] {
                    for seed in 1..=a.seeds {
                        let mut c = SimConfig::new(n, f, a.rounds, seed);
                        c.behavior = b;
                        c.stake = stake;
                        match net {
                            Net::Clean => {}
                            Net::Loss => c.loss = 0.1,
                            Net::PartitionHalves | Net::PartitionMinority => {
                                c.partition = Some((a.rounds / 5, a.rounds / 5 + 80));
                                c.gc_depth = 30;
                                c.partition_split = match net {
                                    Net::PartitionHalves => Split::Halves,
                                    _ => Split::Minority,
                                };
                            }
                        }
                        jobs.push((c, net));
                    }
                }
            }
        }
    }
    let next = AtomicUsize::new(0);
    let bad = AtomicUsize::new(0);
    let out = Mutex::new(());
    let total = jobs.len();
    std::thread::scope(|s| {
        for _ in 0..a.threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((cfg, net)) = jobs.get(i) else { break };
                let r = run(cfg.clone(), None);
                let ok = r.safety_ok && r.live;
                if !ok {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
                let line = serde_json::json!({
                    "peers": cfg.peers, "byzantine": cfg.byzantine, "rounds": cfg.rounds, "seed": cfg.seed,
                    "behavior": cfg.behavior.to_string(), "stake": format!("{:?}", cfg.stake).to_lowercase(),
                    "net": format!("{net:?}").to_lowercase(),
                    "safety": if r.safety_ok { "ok" } else { "violated" },
                    "first_divergent_height": r.divergence_height,
                    "liveness": if r.live { "ok" } else { "stalled" },
                    "committed_leaders": r.committed_leaders, "skipped_leaders": r.skipped_leaders,
                    "latency_rounds_p50": r.latency_p50, "latency_rounds_p99": r.latency_p99,
                    "peak_dag_events_in_memory": r.peak_dag_events_in_memory,
                    "restarts_from_state": r.restarts_from_state, "commits_after_heal": r.commits_after_heal,
                });
                let _g = out.lock().expect("stdout lock");
                println!("{line}");
            });
        }
    });
    let bad = bad.into_inner();
    println!(
        "{}",
        serde_json::json!({"runs": total, "failed": bad, "result": if bad == 0 { "ok" } else { "failed" }})
    );
    if bad == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}
