//! A representative slice of the simulator sweep (the full sweep is
//! `cargo run --release -p dag --example sweep`): safety under every
//! Byzantine behaviour, loss and a healing partition; latency, determinism,
//! flat memory, a stake snapshot boundary.

use dag::sim::{run, Behavior, SimConfig, SimReport, Split, StakeDist};

fn sim(cfg: SimConfig) -> SimReport {
    let what = format!("{cfg:?}");
    let r = run(cfg, None);
    assert!(
        r.safety_ok,
        "safety violated at height {:?}: {what}",
        r.divergence_height
    );
    assert!(r.live, "stalled: {what}");
    r
}

#[test]
fn every_behaviour_keeps_safety_with_a_third_of_stake_byzantine() {
    for (n, f) in [(4, 1), (10, 3)] {
        for b in Behavior::ALL {
            for stake in [StakeDist::Uniform, StakeDist::Skewed] {
                let mut cfg = SimConfig::new(n, f, 120, 3);
                cfg.behavior = b;
                cfg.stake = stake;
                let r = sim(cfg);
                assert!(r.committed_leaders > 0);
                if b == Behavior::Equivocate {
                    assert!(r.equivocations_detected > 0, "equivocation goes unnoticed");
                }
            }
        }
    }
}

#[test]
fn loss_keeps_safety_and_liveness() {
    let mut cfg = SimConfig::new(7, 2, 150, 5);
    cfg.loss = 0.15;
    sim(cfg);
}

#[test]
fn commits_resume_after_a_partition_heals() {
    let mut cfg = SimConfig::new(7, 2, 150, 6);
    cfg.behavior = Behavior::Crash;
    cfg.partition = Some((30, 70));
    let r = sim(cfg);
    assert!(r.commits_after_heal > 0);
}

#[test]
fn a_peer_cut_off_beyond_the_pruning_window_catches_up_from_state() {
    // The partition outlasts gc_depth rounds: the side that kept going has
    // pruned what the other side lacks, so the lagging peers restart from a
    // committed state (the catch-up hook) and rejoin.
    let mut cfg = SimConfig::new(7, 2, 200, 7);
    cfg.behavior = Behavior::Equivocate;
    cfg.gc_depth = 20;
    cfg.partition = Some((30, 110));
    cfg.partition_split = Split::Minority;
    let r = sim(cfg);
    assert!(r.commits_after_heal > 0);
    assert!(
        r.restarts_from_state > 0,
        "expected the catch-up path to run"
    );
}

#[test]
fn without_faults_half_the_events_are_ordered_within_three_rounds() {
    let r = sim(SimConfig::new(16, 0, 150, 8));
    assert!(r.latency_p50 <= 3, "p50 {}", r.latency_p50);
    // Only the few events held up by the delay tail miss their slot.
    assert!(r.skipped_leaders * 10 < r.committed_leaders);
}

#[test]
fn same_seed_same_run() {
    let mut cfg = SimConfig::new(7, 2, 80, 9);
    cfg.loss = 0.05;
    let a = sim(cfg.clone());
    let b = sim(cfg.clone());
    assert_eq!(a.sequence_digest, b.sequence_digest);
    assert_eq!(a.deliveries, b.deliveries);
    assert_eq!(a.committed_leaders, b.committed_leaders);
    cfg.seed = 10;
    let c = sim(cfg);
    assert_ne!(a.sequence_digest, c.sequence_digest);
}

#[test]
fn memory_stays_flat_as_rounds_grow() {
    let mut cfg = SimConfig::new(7, 2, 300, 12);
    cfg.behavior = Behavior::Mixed;
    let short = sim(cfg.clone());
    cfg.rounds = 1500;
    let long = sim(cfg);
    assert!(
        long.peak_dag_events_in_memory <= short.peak_dag_events_in_memory * 5 / 4,
        "peak grew from {} to {}",
        short.peak_dag_events_in_memory,
        long.peak_dag_events_in_memory
    );
}

#[test]
fn crosses_a_stake_snapshot_boundary_with_a_new_table() {
    // Round 5096 is the first governed by the table at snapshot 4096.
    let mut cfg = SimConfig::new(4, 1, 5200, 13);
    cfg.behavior = Behavior::Crash;
    let r = sim(cfg);
    assert!(r.snapshot_changes >= 1, "no stake table was applied");
}
