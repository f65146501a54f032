//! A deterministic simulator that drives many consensus cores in one thread
//! over a simulated network (seeded delays, loss, a partition that heals)
//! with Byzantine authors, and checks safety by comparing every honest
//! peer's committed sequence height by height.
//!
//! The same seed gives the same run (only the wall-clock rates differ).
//! Signatures and VRF proofs are real; each event is verified once when it
//! is created (every core's check is the same pure function) and handed to
//! the cores as checked.

mod behaviour;
mod network;
mod run;

pub use behaviour::Behavior;
pub use run::{
    commit_digest, record, run, Progress, Recording, SimConfig, SimReport, Split, StakeDist,
};
