//! NAT traversal for wallets: candidate gathering, rendezvous through peers,
//! hole punching (including port probing against symmetric NATs), relay
//! fallback and the direct encrypted channel between two wallets.
//!
//! The core is sans-IO, driven by received datagrams and the clock: so far
//! the address echo ([`echo`]); the hole-punching state machine is to come. [`transport`] is the I/O layer that the peer
//! and the wallet share: one UDP socket per process carrying QUIC links
//! authenticated by schnorrkel keys, plus the raw datagrams the core will
//! speak. It depends on `dag` (keys, signing) and `proofs` (hashes), never
//! on `peer` or `wallet`.
//! [`lab`] (test infrastructure): real NATs from network namespaces and netfilter.

pub mod echo;
pub mod lab;
pub mod transport;
