//! The wallet: a light client that logs in to one peer as `name@peer`, keeps
//! only its own outputs with their proofs, checks every answer against
//! certified roots, and builds joint transactions with other wallets over
//! direct NAT-punched channels.
//!
//! It depends on `dag` and `nat`, never on `peer`. Nothing is implemented yet.
