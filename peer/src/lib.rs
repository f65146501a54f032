//! The peer daemon: drives the `dag` consensus core over QUIC-over-UDP links
//! to other peers, stores events and ledger state in LMDB, and serves wallets
//! (logins, subscriptions, proofs, rendezvous).
//!
//! It depends on `dag` and `nat`, never on `wallet`. Implemented so far: the
//! transport (one UDP socket, QUIC links authenticated by identity keys).

pub mod transport;
