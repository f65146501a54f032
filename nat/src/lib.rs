//! NAT traversal for wallets: candidate gathering, rendezvous through peers,
//! hole punching (including port probing against symmetric NATs), relay
//! fallback and the direct encrypted channel between two wallets.
//!
//! The core is sans-IO, driven by received datagrams and the clock: the
//! address echo ([`echo`]) and one link attempt's hole punching, port
//! probing, relay fallback and keepalives ([`punch`]). [`transport`] is the I/O layer that the peer
//! and the wallet share: one UDP socket per process carrying QUIC links
//! authenticated by schnorrkel keys, plus the raw datagrams the core will
//! speak. It depends on `dag` (keys, signing) and `proofs` (hashes), never
//! on `peer` or `wallet`.
//! [`lab`] (test infrastructure): real NATs from network namespaces and netfilter.

pub mod echo;
pub mod lab;
pub mod punch;
pub mod transport;
