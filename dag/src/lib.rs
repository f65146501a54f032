//! The consensus core of Proof of Share: events of a stake-weighted
//! blockdag, the after-the-fact leader election and commit rule, the ledger
//! rules ([`ledger`]), and the messages peers send each other ([`wire`]).
//!
//! Everything here is sans-IO: state machines that take inputs (received
//! events, the time, stake tables) and return outputs (events to send,
//! committed sub-DAGs). The peer daemon and the simulator drive them; no
//! sockets, threads, clocks or disks live in this crate's core. It depends
//! only on `proofs` for hashing and encoding.

pub mod bitset;
pub mod committee;
pub mod committer;
pub mod core;
pub mod dag_state;
pub mod epochs;
pub mod event;
pub mod hex;
pub mod id_map;
pub mod identity;
pub mod ledger;
pub mod pending;
pub mod rendezvous;
pub mod ticket;
pub mod wire;

pub use crate::core::{Accepted, Core, CoreConfig, CoreState, Output, OwnProgress, Refused, Stats};
pub use committee::{snapshot_of, Committee, Member, Round, Stake};
pub use committer::CommittedSubDag;
pub use event::{Event, EventBody, EventError, EventId, EventRef, VerifiedEvent};
pub use identity::{EventSigner, PeerKey, Signer};
pub mod sim;
