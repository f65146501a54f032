//! The ledger rules: what an ordered stream of transactions does to the
//! state, and the roots that commit that state.
//!
//! The consensus core orders events; the ledger turns each committed height
//! (a leader's sub-DAG, its events' payloads in order) into the next state:
//! outputs created and spent, assets issued and minted, peers registered,
//! and the stake each peer hosts. It is a pure library like the core: no
//! clocks, threads or disks. Signature checking is split from applying so a
//! driver can check a height's signatures in batches on every core
//! ([`admission`]) and then apply them in order on one ([`Ledger`]).
//!
//! - [`asset`], [`output`], [`transaction`], [`peers`]: the data and their
//!   rules that need no state;
//! - [`multisig`]: one MuSig signature per transaction, batch verification,
//!   and the signing session wallets run; [`owner_keys`]: per-output keys;
//! - [`admission`]: decoding payloads and checking signatures;
//! - [`state`] and [`apply`]: the ledger state and the order-dependent rules
//!   (first spend wins, conflicts rejected with a reason); [`output_set`]:
//!   unspent outputs in memory, spent ones in a store if the owner gives
//!   one (see [`Ledger::use_stores`]);
//! - [`stake`]: the stake table at snapshots, fed to the consensus core;
//! - [`genesis`]: the genesis file and the chain id;
//! - [`checkpoint`]: state roots, signed checkpoints, certified roots and
//!   committee hand-overs a wallet checks alone;
//! - [`snapshot`]: the whole state at one height, exported, and restored
//!   only if it rebuilds to the (certified) roots.

pub mod admission;
pub mod apply;
pub mod asset;
pub mod checkpoint;
pub mod genesis;
pub mod light;
pub mod multisig;
pub mod names;
pub mod output;
pub mod output_set;
pub mod owner_keys;
pub mod peers;
pub mod snapshot;
pub mod stake;
pub mod state;
pub mod swap;
pub mod transaction;

pub use admission::{
    authorize_batch, decode_payload, encode_payload_item, Authorized, PayloadItem,
};
pub use apply::{HeightInput, HeightOutcome, Outcome, Rejection};
pub use asset::{AssetClass, AssetDef, AssetId};
pub use checkpoint::{Certified, Checkpoint, Handover, StateRoots};
pub use genesis::Genesis;
pub use output::{Output, OutputId, OutputState, Value};
pub use snapshot::{Inconsistency, LedgerSnapshot, SnapshotError};
pub use state::{Ledger, LedgerStores, Params};
pub use transaction::{Action, Transaction, TxBody, TxId};
