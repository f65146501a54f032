//! Runs N consensus cores (F of them Byzantine) over a deterministic
//! simulated network and prints one JSON line with the safety verdict and
//! figures. Exit status 1 on a safety violation, 2 on a stall.

use clap::Parser;
use dag::sim::{run, Behavior, SimConfig, Split, StakeDist};
use indicatif::{ProgressBar, ProgressStyle};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(about = "Deterministic Byzantine simulation of the Proof of Share consensus core")]
struct Args {
    /// Number of peers.
    #[arg(long, default_value_t = 16)]
    peers: usize,
    /// How many of them are Byzantine (their stake is kept just under 1/3).
    #[arg(long, default_value_t = 0)]
    byzantine: usize,
    /// Run until every live honest peer has sequenced this many rounds.
    #[arg(long, default_value_t = 1000)]
    rounds: u64,
    /// Seed of everything random (same seed, same run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// What the Byzantine peers do: equivocate|withhold|crash|delay|mixed.
    #[arg(long, default_value = "mixed")]
    behavior: Behavior,
    /// Genesis stake: uniform|skewed.
    #[arg(long, default_value = "uniform")]
    stake: StakeDist,
    /// Probability that a message is lost.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Partition the network from round A for as long as B − A rounds take
    /// at the nominal pace (e.g. 100..160), then heal (see --partition-split).
    #[arg(long, value_parser = parse_range)]
    partition_rounds: Option<(u64, u64)>,
    /// Who the partition cuts off: halves (no side may keep a quorum) or
    /// minority (a third of the honest peers, who must catch up after).
    #[arg(long, default_value = "halves")]
    partition_split: Split,
    /// Rounds kept in memory below the first unsequenced round.
    #[arg(long, default_value_t = 50)]
    gc_depth: u64,
    /// Simulated one-way delay range in milliseconds.
    #[arg(long, default_value_t = 5)]
    min_delay_ms: u64,
    #[arg(long, default_value_t = 50)]
    max_delay_ms: u64,
    /// Show a progress bar on stderr.
    #[arg(long)]
    progress: bool,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").ok_or("expected A..B")?;
    let a: u64 = a.parse().map_err(|e| format!("{e}"))?;
    let b: u64 = b.parse().map_err(|e| format!("{e}"))?;
    if b <= a {
        return Err("B must be greater than A".into());
    }
    Ok((a, b))
}

fn main() -> ExitCode {
    let a = Args::parse();
    if a.peers == 0 || a.byzantine >= a.peers {
        eprintln!("error: need --peers ≥ 1 and --byzantine < --peers");
        return ExitCode::from(2);
    }
    if !(0.0..1.0).contains(&a.loss) {
        eprintln!("error: --loss must be in [0, 1)");
        return ExitCode::from(2);
    }
    let mut cfg = SimConfig::new(a.peers, a.byzantine, a.rounds, a.seed);
    cfg.behavior = a.behavior;
    cfg.stake = a.stake;
    cfg.loss = a.loss;
    cfg.partition = a.partition_rounds;
    cfg.partition_split = a.partition_split;
    cfg.gc_depth = a.gc_depth;
    cfg.min_delay_ms = a.min_delay_ms;
    cfg.max_delay_ms = a.max_delay_ms.max(a.min_delay_ms);
    let bar = a.progress.then(|| {
        let b = ProgressBar::new(a.rounds);
        b.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} rounds ({per_sec}, eta {eta})",
            )
            .expect("valid template"),
        );
        b
    });
    let mut tick = |r: u64| {
        if let Some(b) = &bar {
            b.set_position(r);
        }
    };
    let report = run(cfg, Some(&mut tick));
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let json = serde_json::json!({
        "peers": a.peers,
        "byzantine": a.byzantine,
        "rounds": a.rounds,
        "seed": a.seed,
        "behavior": a.behavior.to_string(),
        "stake": format!("{:?}", a.stake).to_lowercase(),
        "loss": a.loss,
        "partition_rounds": a.partition_rounds.map(|(x, y)| format!("{x}..{y}")),
        "partition_split": format!("{:?}", a.partition_split).to_lowercase(),
        "safety": if report.safety_ok { "ok" } else { "violated" },
        "first_divergent_height": report.divergence_height,
        "liveness": if report.live { "ok" } else { "stalled" },
        "committed_leaders": report.committed_leaders,
        "skipped_leaders": report.skipped_leaders,
        "ordered_events": report.ordered_events,
        "latency_rounds_p50": report.latency_p50,
        "latency_rounds_p99": report.latency_p99,
        "events_per_sec": report.events_per_sec.round(),
        "wall_events_per_sec": report.wall_events_per_sec.round(),
        "deliveries": report.deliveries,
        "wall_secs": (report.wall_secs * 1000.0).round() / 1000.0,
        "crypto_secs": (report.crypto_secs * 1000.0).round() / 1000.0,
        "peak_dag_events_in_memory": report.peak_dag_events_in_memory,
        "equivocations_detected": report.equivocations_detected,
        "commits_after_heal": report.commits_after_heal,
        "restarts_from_state": report.restarts_from_state,
        "stake_snapshots_applied": report.snapshot_changes,
        "sequence_digest": report.sequence_digest.to_string(),
        "crypto": "verified-once",
    });
    println!("{json}");
    if !report.safety_ok {
        ExitCode::from(1)
    } else if !report.live {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
