//! The wallet: a light client that logs in to one peer as `name@peer`, keeps
//! only its own outputs with their proofs, checks every answer against
//! certified roots, and builds joint transactions with other wallets over
//! direct NAT-punched channels.
//!
//! It depends on `dag` (keys, ledger types, proof checking through it) and
//! `nat`, never on `peer`: whatever it learns from a peer arrives as bytes
//! it checks itself. Built so far: the seed phrase and the one mapping from
//! it to every key ([`phrase`], derivation in `dag::ledger::owner_keys`),
//! the password-encrypted keystore ([`keystore`]), and the wallet directory
//! that holds it ([`dir`]). The `wallet` binary (`src/main.rs`) offers
//! `create`, `restore` and `keys`; logging in, balances and payments come
//! later. Formats: `specs/wallet.md`.

pub mod atomic_file;
pub mod chain;
pub mod client;
pub mod dir;
pub mod keystore;
pub mod phrase;
pub mod session;

pub use dir::{DirError, WalletDir};
pub use keystore::{KdfParams, KeystoreError};
pub use phrase::{Phrase, PhraseError};
