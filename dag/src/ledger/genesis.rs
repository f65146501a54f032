//! The genesis file: the chain's name, first peers, first outputs and
//! parameters. Its hash is the chain id every event, transaction and
//! checkpoint carries.
//!
//! The file is JSON (`specs/genesis.md`); keys are 64 lower-case hex digits
//! and amounts are integers in base units. The chain id hashes the
//! canonical binary encoding of the parsed value, not the file's bytes, so
//! whitespace and field order do not change it.

use crate::committee::Committee;
use crate::epochs::SEED_DOMAIN;
use crate::identity::PeerKey;
use crate::ledger::apply::Changes;
use crate::ledger::asset::{AssetClass, AssetDef, AssetId, AssetState, MAX_PRECISION};
use crate::ledger::output::{output_id, Output, OutputState, Value};
use crate::ledger::peers::{check_address, check_name, name_key, PeerRecord, PeerStatus};
use crate::ledger::stake::StakeError;
use crate::ledger::state::{asset_key, asset_value, peer_value, Ledger, LedgerError, Params};
use proofs::{Domain, Hash};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;

/// Domain of the chain id.
pub const GENESIS_DOMAIN: Domain = Domain::new("pos/ledger/genesis/v1");
/// Domain of the history's first leaf.
pub const GENESIS_LEAF_DOMAIN: Domain = Domain::new("pos/ledger/genesis-leaf/v1");

/// Leaves the genesis puts in the history (its one leaf).
pub const GENESIS_HISTORY_LEAVES: u64 = 1;

/// The largest genesis file read, in bytes.
pub const MAX_GENESIS_BYTES: usize = 16 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeAsset {
    pub name: String,
    pub precision: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisPeer {
    pub name: String,
    pub key: PeerKey,
    pub addr: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisOutput {
    pub owner: PeerKey,
    pub amount: u128,
    /// Name of the genesis peer hosting it.
    pub host: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// A label for humans (`devnet`, `mainnet`); part of the chain id.
    pub chain_name: String,
    /// Milliseconds since the Unix epoch; part of the chain id, so two
    /// chains with the same peers differ.
    pub time_ms: u64,
    pub native: NativeAsset,
    #[serde(default)]
    pub params: Params,
    pub peers: Vec<GenesisPeer>,
    pub outputs: Vec<GenesisOutput>,
}

#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("genesis file: {0}")]
    Parse(String),
    #[error("genesis field `{field}`: {reason}")]
    Field { field: String, reason: String },
    #[error(transparent)]
    Stake(#[from] StakeError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

fn field(field: impl Into<String>, reason: impl ToString) -> GenesisError {
    GenesisError::Field {
        field: field.into(),
        reason: reason.to_string(),
    }
}

impl Genesis {
    /// Parse and check a genesis file.
    pub fn from_json(bytes: &[u8]) -> Result<Genesis, GenesisError> {
        if bytes.len() > MAX_GENESIS_BYTES {
            return Err(GenesisError::Parse(format!(
                "{} bytes exceeds the limit of {MAX_GENESIS_BYTES}",
                bytes.len()
            )));
        }
        let g: Genesis =
            serde_json::from_slice(bytes).map_err(|e| GenesisError::Parse(e.to_string()))?;
        g.check()?;
        Ok(g)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("genesis always serialises")
    }

    /// The chain id.
    pub fn chain_id(&self) -> Hash {
        Hash::of(GENESIS_DOMAIN, &proofs::encode(self))
    }

    /// The epoch seed of snapshot 0, for the consensus core.
    pub fn epoch_seed(&self) -> Hash {
        Hash::of(SEED_DOMAIN, &self.chain_id().0)
    }

    /// Every rule a genesis file must keep.
    pub fn check(&self) -> Result<(), GenesisError> {
        check_name(&self.chain_name).map_err(|e| field("chain_name", e))?;
        AssetDef {
            name: self.native.name.clone(),
            class: AssetClass::Fungible {
                precision: self.native.precision,
            },
            issuer: PeerKey([0; 32]),
            mintable: false,
        }
        .check()
        .map_err(|e| field("native", e))?;
        if self.native.precision > MAX_PRECISION {
            return Err(field("native.precision", "too large"));
        }
        let p = &self.params;
        if p.min_share_ppm > 1_000_000 {
            return Err(field("params.min_share_ppm", "at most 1000000"));
        }
        if p.max_tx_bytes < 1024 {
            return Err(field("params.max_tx_bytes", "at least 1024"));
        }
        if p.state_versions_kept == 0 {
            return Err(field("params.state_versions_kept", "at least 1"));
        }
        if self.peers.is_empty() {
            return Err(field("peers", "at least one peer"));
        }
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            check_name(&peer.name).map_err(|e| field(format!("peers[{i}].name"), e))?;
            check_address(&peer.addr).map_err(|e| field(format!("peers[{i}].addr"), e))?;
            peer.key
                .to_public()
                .map_err(|e| field(format!("peers[{i}].key"), e))?;
            if !names.insert(peer.name.as_str()) {
                return Err(field(format!("peers[{i}].name"), "duplicate name"));
            }
            if !keys.insert(peer.key) {
                return Err(field(format!("peers[{i}].key"), "duplicate key"));
            }
        }
        let mut supply: u128 = 0;
        for (i, o) in self.outputs.iter().enumerate() {
            if o.amount == 0 {
                return Err(field(format!("outputs[{i}].amount"), "must be positive"));
            }
            if !names.contains(o.host.as_str()) {
                return Err(field(
                    format!("outputs[{i}].host"),
                    format!("no genesis peer is named {:?}", o.host),
                ));
            }
            supply = supply
                .checked_add(o.amount)
                .ok_or_else(|| field(format!("outputs[{i}].amount"), "total supply overflows"))?;
        }
        Ok(())
    }

    /// The ledger state at height 0.
    pub fn ledger(&self) -> Result<Ledger, GenesisError> {
        self.check()?;
        let chain = self.chain_id();
        let mut ledger = Ledger::empty(chain, self.params.clone())?;
        let mut changes = Changes::default();
        for peer in &self.peers {
            let rec = PeerRecord {
                name: peer.name.clone(),
                key: peer.key,
                addr: peer.addr,
                registered_at: 0,
                status: PeerStatus::Active,
            };
            changes
                .registry
                .push((name_key(&peer.name), Some(peer_value(&rec))));
            ledger.names.insert(peer.name.clone(), peer.key);
            ledger.peers.insert(peer.key, rec);
        }
        let mut supply: u128 = 0;
        for (i, o) in self.outputs.iter().enumerate() {
            let host = ledger.names[&o.host];
            let output = Output {
                owner: o.owner,
                asset: AssetId::NATIVE,
                value: Value::Amount(o.amount),
                host: Some(host),
            };
            let id = output_id(&chain, i as u32);
            let st = OutputState {
                output,
                created_by: chain,
                created_at: 0,
                spent: None,
            };
            changes.outputs.push((id, st.clone()));
            changes.created.push((Hash(o.owner.0), id));
            ledger.outputs.insert(id, st);
            *ledger.hosted.entry(host).or_default() += o.amount;
            supply += o.amount; // checked in `check`
        }
        let native = AssetState {
            def: AssetDef {
                name: self.native.name.clone(),
                class: AssetClass::Fungible {
                    precision: self.native.precision,
                },
                issuer: PeerKey([0; 32]),
                mintable: false,
            },
            supply,
            issued_at: 0,
        };
        changes
            .registry
            .push((asset_key(&AssetId::NATIVE), Some(asset_value(&native))));
        ledger.assets.insert(AssetId::NATIVE, native);
        let leaf = Hash::of(GENESIS_LEAF_DOMAIN, &chain.0);
        let leaves = vec![leaf];
        debug_assert_eq!(leaves.len() as u64, GENESIS_HISTORY_LEAVES);
        ledger.commit_height(0, 0, changes, leaves)?;
        Ok(ledger)
    }

    /// The committee of snapshot 0.
    pub fn committee(&self) -> Result<Committee, GenesisError> {
        Ok(self.ledger()?.stake_table()?)
    }
}
