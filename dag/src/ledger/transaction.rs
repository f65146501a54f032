//! Transactions: inputs, outputs, actions, a fee, and one signature.
//!
//! A transaction spends at least one input, so it can be applied at most
//! once (its inputs are gone afterwards) and needs no nonce. It names its
//! signers (every input's owner key and every authority its actions need)
//! and their MuSig aggregate key, and carries one signature by that key over
//! its id: the signature is checked without any state, and applying only
//! compares the named signers with the keys the state requires.
//!
//! The checks here need no state ([`TxBody::check_form`]); the rest are in
//! [`crate::ledger::apply`].

use crate::identity::{Bytes64, PeerKey};
use crate::ledger::asset::{AssetDef, AssetId, NameError};
use crate::ledger::multisig::{self, SigError, MAX_SIGNERS};
use crate::ledger::output::{output_id, Output, OutputId, Value};
use crate::ledger::peers::{check_address, check_name, PeerNameError};
use proofs::{Domain, Hash};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;

pub type TxId = Hash;

/// Domain of transaction ids (the hash of the body; the signature is over it).
pub const TX_DOMAIN: Domain = Domain::new("pos/ledger/tx/v1");

pub const MAX_INPUTS: usize = 256;
pub const MAX_OUTPUTS: usize = 256;
pub const MAX_ACTIONS: usize = 16;

/// What a transaction does besides moving value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Define a new asset, id [`AssetId::issued`]`(inputs[0], index)`.
    /// Authority: the definition's issuer.
    Issue(AssetDef),
    /// Create base units of a fungible asset. Authority: its issuer; allowed
    /// in the issuing transaction, and later only if the asset is mintable.
    Mint { asset: AssetId, amount: u128 },
    /// Create one unique item; an item id exists once, ever.
    MintItem { asset: AssetId, item: Hash },
    /// Destroy base units taken from the inputs.
    Burn { asset: AssetId, amount: u128 },
    /// Destroy an item taken from the inputs; its id is never minted again.
    BurnItem { asset: AssetId, item: Hash },
    /// Register a peer. Authority: `key`.
    RegisterPeer {
        name: String,
        key: PeerKey,
        addr: SocketAddr,
    },
    /// Change an active peer's address. Authority: `key`.
    UpdatePeer { key: PeerKey, addr: SocketAddr },
    /// Retire an active peer for good. Authority: `key`.
    RetirePeer { key: PeerKey },
}

/// The signed content of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBody {
    pub chain: Hash,
    /// Output ids spent, distinct, at least one.
    pub inputs: Vec<OutputId>,
    pub outputs: Vec<Output>,
    pub actions: Vec<Action>,
    /// Native base units paid and burned.
    pub fee: u128,
    /// A hash the parties attach (an invoice, a contract); not interpreted.
    pub memo: Option<Hash>,
    /// Every key whose consent the transaction needs, strictly increasing.
    pub signers: Vec<PeerKey>,
    /// The MuSig aggregate of `signers` (the key itself for one signer).
    pub aggregate: PeerKey,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub body: TxBody,
    pub signature: Bytes64,
}

/// A rule a transaction breaks on its own, whatever the state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum FormError {
    #[error("transaction is for another chain")]
    WrongChain,
    #[error("a transaction spends at least one input")]
    NoInputs,
    #[error("too many inputs, outputs, actions or signers")]
    TooMany,
    #[error("input {0} appears twice")]
    DuplicateInput(u32),
    #[error("output {0} has a zero amount")]
    ZeroAmount(u32),
    #[error("output {0}: native outputs name a host peer, others do not")]
    HostMismatch(u32),
    #[error("output {0}: the native asset is counted in amounts, not items")]
    NativeItem(u32),
    #[error("action {0} has a zero amount")]
    ZeroAction(u32),
    #[error("action {0}: bad name or definition: {1}")]
    BadName(u32, String),
    #[error("action {0}: the native asset cannot be minted")]
    NativeMint(u32),
    #[error("signers are not strictly increasing, or there are none")]
    BadSigners,
}

impl From<(u32, NameError)> for FormError {
    fn from((i, e): (u32, NameError)) -> Self {
        FormError::BadName(i, e.to_string())
    }
}

impl From<(u32, PeerNameError)> for FormError {
    fn from((i, e): (u32, PeerNameError)) -> Self {
        FormError::BadName(i, e.to_string())
    }
}

impl TxBody {
    pub fn id(&self) -> TxId {
        Hash::of(TX_DOMAIN, &proofs::encode(self))
    }

    /// The id of this transaction's output `index`.
    pub fn output_id(&self, index: u32) -> OutputId {
        output_id(&self.id(), index)
    }

    /// Set `signers` (sorted, deduplicated) and their aggregate key.
    pub fn set_signers(&mut self, keys: impl IntoIterator<Item = PeerKey>) -> Result<(), SigError> {
        let mut keys: Vec<PeerKey> = keys.into_iter().collect();
        keys.sort();
        keys.dedup();
        self.aggregate = multisig::aggregate_key(&keys)?;
        self.signers = keys;
        Ok(())
    }

    /// Everything that can be checked without the state.
    pub fn check_form(&self, chain: &Hash) -> Result<(), FormError> {
        if self.chain != *chain {
            return Err(FormError::WrongChain);
        }
        if self.inputs.is_empty() {
            return Err(FormError::NoInputs);
        }
        if self.inputs.len() > MAX_INPUTS
            || self.outputs.len() > MAX_OUTPUTS
            || self.actions.len() > MAX_ACTIONS
            || self.signers.len() > MAX_SIGNERS
        {
            return Err(FormError::TooMany);
        }
        if self.signers.is_empty() || self.signers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(FormError::BadSigners);
        }
        let mut seen = HashSet::with_capacity(self.inputs.len());
        for (i, input) in self.inputs.iter().enumerate() {
            if !seen.insert(input) {
                return Err(FormError::DuplicateInput(i as u32));
            }
        }
        for (i, o) in self.outputs.iter().enumerate() {
            let i = i as u32;
            if o.asset.is_native() != o.host.is_some() {
                return Err(FormError::HostMismatch(i));
            }
            match o.value {
                Value::Amount(0) => return Err(FormError::ZeroAmount(i)),
                Value::Item(_) if o.asset.is_native() => return Err(FormError::NativeItem(i)),
                _ => {}
            }
        }
        for (i, a) in self.actions.iter().enumerate() {
            let i = i as u32;
            match a {
                Action::Issue(def) => def.check().map_err(|e| FormError::from((i, e)))?,
                Action::Mint { asset, amount } => {
                    if asset.is_native() {
                        return Err(FormError::NativeMint(i));
                    }
                    if *amount == 0 {
                        return Err(FormError::ZeroAction(i));
                    }
                }
                Action::MintItem { asset, .. } => {
                    if asset.is_native() {
                        return Err(FormError::NativeMint(i));
                    }
                }
                Action::Burn { amount, .. } => {
                    if *amount == 0 {
                        return Err(FormError::ZeroAction(i));
                    }
                }
                Action::BurnItem { .. } | Action::RetirePeer { .. } => {}
                Action::RegisterPeer { name, addr, .. } => {
                    check_name(name).map_err(|e| FormError::from((i, e)))?;
                    check_address(addr).map_err(|e| FormError::from((i, e)))?;
                }
                Action::UpdatePeer { addr, .. } => {
                    check_address(addr).map_err(|e| FormError::from((i, e)))?
                }
            }
        }
        Ok(())
    }

    /// The keys this transaction's actions need, apart from input owners.
    /// Mints need the asset's issuer, which only the state knows; `issuer`
    /// looks it up (and sees assets issued earlier in this transaction).
    pub fn action_authorities(
        &self,
        mut issuer: impl FnMut(&AssetId) -> Option<PeerKey>,
    ) -> Vec<Option<PeerKey>> {
        let first = self.inputs.first().copied().unwrap_or(Hash::ZERO);
        let mut issued: Vec<(AssetId, PeerKey)> = Vec::new();
        self.actions
            .iter()
            .enumerate()
            .map(|(i, a)| match a {
                Action::Issue(def) => {
                    issued.push((AssetId::issued(&first, i as u32), def.issuer));
                    Some(def.issuer)
                }
                Action::Mint { asset, .. } | Action::MintItem { asset, .. } => issued
                    .iter()
                    .find(|(id, _)| id == asset)
                    .map(|(_, k)| *k)
                    .or_else(|| issuer(asset)),
                Action::Burn { .. } | Action::BurnItem { .. } => None,
                Action::RegisterPeer { key, .. }
                | Action::UpdatePeer { key, .. }
                | Action::RetirePeer { key } => Some(*key),
            })
            .collect()
    }
}

/// Bytes of the signature at the end of a transaction's encoding (a tuple
/// of 64 bytes, each encoded as itself).
const SIGNATURE_BYTES: usize = 64;

impl Transaction {
    pub fn id(&self) -> TxId {
        self.body.id()
    }

    /// Decode a transaction from its canonical encoding, with its id hashed
    /// from the body's bytes in `bytes` instead of encoding the body again:
    /// a canonical encoding is the body's followed by the signature's.
    pub fn decode_with_id(
        bytes: &[u8],
        limit: usize,
    ) -> Result<(Transaction, TxId), proofs::CodecError> {
        let tx: Transaction = proofs::decode(bytes, limit)?;
        let body = &bytes[..bytes.len() - SIGNATURE_BYTES];
        debug_assert_eq!(body, proofs::encode(&tx.body).as_slice());
        Ok((tx, Hash::of(TX_DOMAIN, body)))
    }

    pub fn encode(&self) -> Vec<u8> {
        proofs::encode(self)
    }
}
