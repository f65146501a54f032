//! The peer daemon: drives the `dag` consensus core over QUIC-over-UDP links
//! to other peers, stores events and ledger state in LMDB, and serves wallets
//! (logins, subscriptions, proofs, rendezvous).
//!
//! It depends on `dag` and `nat`, never on `wallet`. [`driver`] is the
//! protocol logic without I/O (consensus core, ledger, mempool); [`node`]
//! is the event loop around it, which owns the transport (`nat::transport`:
//! one UDP socket, QUIC links authenticated by identity keys), the [`store`] (LMDB)
//! and the clock. [`catchup`] brings a peer far behind up from a certified
//! state snapshot.

pub mod admin;
pub mod bench;
pub mod catchup;
pub mod config;
pub mod devnet;
pub mod driver;
pub mod keys;
pub mod node;
pub mod relay;
pub mod rendezvous;
pub mod store;
pub mod submissions;
pub mod subscriptions;
pub mod wallet_service;
