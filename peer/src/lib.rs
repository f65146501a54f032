//! The peer daemon: drives the `dag` consensus core over QUIC-over-UDP links
//! to other peers, stores events and ledger state in LMDB, and serves wallets
//! (logins, subscriptions, proofs, rendezvous).
//!
//! It depends on `dag` and `nat`, never on `wallet`. So far it has its storage
//! ([`store`]): one LMDB environment for its own events, the DAG, committed
//! heights and the Merkle nodes of the ledger.

pub mod store;
