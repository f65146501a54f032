//! The peer daemon: drives the `dag` consensus core over QUIC-over-UDP links
//! to other peers, stores events and ledger state in LMDB, and serves wallets
//! (logins, subscriptions, proofs, rendezvous).
//!
//! It depends on `dag` and `nat`, never on `wallet`. [`driver`] is the
//! protocol logic without I/O (consensus core, ledger, mempool); the event
//! loop around it owns the sockets, the disk and the clock.

pub mod config;
pub mod driver;
pub mod keys;
