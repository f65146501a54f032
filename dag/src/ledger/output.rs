//! Outputs: what a transaction creates and a later one spends.
//!
//! An output holds an amount of a fungible asset or one unique item, the
//! owner's per-output public key, and, for the native asset, the peer that
//! hosts it (the stake delegation). Its id is the hash of the creating
//! transaction's id and the output's index. The output set commits each
//! output's [`OutputState`]: the output, where it was created, and whether
//! and where it was spent.

use crate::identity::PeerKey;
use crate::ledger::asset::AssetId;
use crate::ledger::transaction::TxId;
use proofs::{Domain, Hash, Hasher};
use serde::{Deserialize, Serialize};

pub type OutputId = Hash;

/// Domain of output ids.
pub const OUTPUT_ID_DOMAIN: Domain = Domain::new("pos/ledger/output-id/v1");
/// Domain of the value an output set leaf holds.
pub const OUTPUT_STATE_DOMAIN: Domain = Domain::new("pos/ledger/output-state/v1");

/// The id of output `index` of transaction `tx`.
pub fn output_id(tx: &TxId, index: u32) -> OutputId {
    let mut h = Hasher::new(OUTPUT_ID_DOMAIN);
    h.update(&tx.0).update(&index.to_le_bytes());
    h.finalize()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Base units of a fungible asset; never zero.
    Amount(u128),
    /// One unique item of a unique-item asset.
    Item(Hash),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub owner: PeerKey,
    pub asset: AssetId,
    pub value: Value,
    /// The peer hosting this stake: required for the native asset, absent
    /// for every other.
    pub host: Option<PeerKey>,
}

/// Where an output was spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    pub tx: TxId,
    pub height: u64,
}

/// What the output set says about one output id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputState {
    pub output: Output,
    /// The creating transaction (the chain id for genesis outputs).
    pub created_by: TxId,
    pub created_at: u64,
    pub spent: Option<Spend>,
}

impl OutputState {
    /// The value stored in the output set's leaf for this output.
    pub fn leaf_value(&self) -> Hash {
        Hash::of(OUTPUT_STATE_DOMAIN, &proofs::encode(self))
    }
}

/// The output set's updates for `states`: each id with its state's
/// [`OutputState::leaf_value`], hashed several at a time (a height's
/// states are independent, so they share the SIMD lanes).
pub fn leaf_updates(states: &[(Hash, OutputState)]) -> Vec<(Hash, Option<Hash>)> {
    let mut batch = proofs::hash::HashBatch::new(OUTPUT_STATE_DOMAIN);
    for (_, st) in states {
        batch.push_with(|buf| proofs::codec::encode_into(st, buf));
    }
    states
        .iter()
        .zip(batch.finish())
        .map(|((id, _), value)| (*id, Some(value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_bind_tx_and_index() {
        let t = Hash([3; 32]);
        assert_ne!(output_id(&t, 0), output_id(&t, 1));
        assert_ne!(output_id(&t, 0), output_id(&Hash([4; 32]), 0));
    }

    #[test]
    fn batched_leaf_values_are_each_states_own() {
        let states: Vec<(Hash, OutputState)> = (0..11u8)
            .map(|i| {
                let st = OutputState {
                    output: Output {
                        owner: PeerKey([i; 32]),
                        asset: AssetId::NATIVE,
                        value: Value::Amount(u128::from(i) << (i * 9)),
                        host: (i % 2 == 0).then_some(PeerKey([2; 32])),
                    },
                    created_by: Hash([3; 32]),
                    created_at: u64::from(i),
                    spent: (i % 3 == 0).then_some(Spend {
                        tx: Hash([i; 32]),
                        height: 7,
                    }),
                };
                (Hash([i + 100; 32]), st)
            })
            .collect();
        let each: Vec<(Hash, Option<Hash>)> = states
            .iter()
            .map(|(id, st)| (*id, Some(st.leaf_value())))
            .collect();
        assert_eq!(leaf_updates(&states), each);
    }

    #[test]
    fn spending_changes_the_leaf() {
        let mut s = OutputState {
            output: Output {
                owner: PeerKey([1; 32]),
                asset: AssetId::NATIVE,
                value: Value::Amount(5),
                host: Some(PeerKey([2; 32])),
            },
            created_by: Hash([3; 32]),
            created_at: 7,
            spent: None,
        };
        let before = s.leaf_value();
        s.spent = Some(Spend {
            tx: Hash([4; 32]),
            height: 9,
        });
        assert_ne!(before, s.leaf_value());
    }
}
