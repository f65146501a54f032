//! NAT traversal for wallets: candidate gathering, rendezvous through peers,
//! hole punching (including port probing against symmetric NATs), relay
//! fallback and the direct encrypted channel between two wallets.
//!
//! The core is a sans-IO state machine driven by received datagrams and the
//! clock; sockets belong to the programs (`peer`, `wallet`) that drive it.
//! Nothing is implemented yet.
