//! The wallet: a light client that logs in to one peer as `name@peer`, keeps
//! only its own outputs with their proofs, checks every answer against
//! certified roots, and builds joint transactions with other wallets over
//! direct NAT-punched channels.
//!
//! It depends on `dag` (keys, ledger types, the light-client proofs of
//! `dag::ledger::light`) and `nat` (the transport), never on `peer`:
//! whatever it learns from a peer arrives as bytes it checks itself.
//! [`phrase`], [`keystore`] and [`dir`] hold the keys; [`chain`] is what
//! the wallet knows of the chain (`W/chain.state`) and how a verified sync
//! changes it; [`client`] is the link to a peer; [`session`] is one
//! conversation (login, sync, pay, stake, issue, receipts); [`online`] is
//! `wallet online`, the wallet kept reachable for other wallets (links,
//! rooms, swaps, payments over a link: `online::pay`), which
//! other commands reach through [`control`]. The `wallet`
//! binary (`src/main.rs`) is the command line. Formats and protocol:
//! `specs/wallet.md`.

pub mod atomic_file;
pub mod chain;
pub mod client;
pub mod control;
pub mod dir;
pub mod keystore;
pub mod online;
pub mod phrase;
pub mod session;
pub mod state_lock;
pub mod swap;

pub use dir::{DirError, WalletDir};
pub use keystore::{KdfParams, KeystoreError};
pub use phrase::{Phrase, PhraseError};
