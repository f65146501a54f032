//! Stake tables and epoch seeds by snapshot round.

use crate::committee::{snapshot_of, Committee, Round};
use proofs::{Domain, Hash, Hasher};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Domain of epoch seeds derived from committed VRF outputs.
pub const SEED_DOMAIN: Domain = Domain::new("pos/dag/epoch-seed/v1");

#[derive(Clone, Debug, Default)]
pub struct Epochs {
    committees: BTreeMap<Round, Arc<Committee>>,
    seeds: BTreeMap<Round, Hash>,
}

impl Epochs {
    pub fn set_committee(&mut self, snapshot: Round, c: Arc<Committee>) {
        self.committees.insert(snapshot, c);
    }

    pub fn set_seed(&mut self, snapshot: Round, seed: Hash) {
        self.seeds.insert(snapshot, seed);
    }

    pub fn committee(&self, round: Round) -> Option<&Arc<Committee>> {
        self.committees.get(&snapshot_of(round))
    }

    pub fn seed(&self, round: Round) -> Option<&Hash> {
        self.seeds.get(&snapshot_of(round))
    }

    /// Both the table and the seed of `round`'s snapshot are known.
    pub fn ready(&self, round: Round) -> bool {
        self.committee(round).is_some() && self.seed(round).is_some()
    }

    pub fn has_committee_at(&self, snapshot: Round) -> bool {
        self.committees.contains_key(&snapshot)
    }

    /// Forget snapshots that no round at or above `round` uses.
    pub fn prune_below(&mut self, round: Round) {
        let keep = snapshot_of(round);
        self.committees = self.committees.split_off(&keep);
        self.seeds = self.seeds.split_off(&keep);
    }

    pub fn snapshots(&self) -> impl Iterator<Item = (Round, &Arc<Committee>, Option<&Hash>)> {
        self.committees
            .iter()
            .map(|(r, c)| (*r, c, self.seeds.get(r)))
    }
}

/// Fold one round's leader VRF output into the running seed accumulator.
pub fn fold_seed(acc: &Hash, round: Round, vrf_output: &[u8; 32]) -> Hash {
    let mut h = Hasher::new(SEED_DOMAIN);
    h.update(&acc.0)
        .update(&round.to_le_bytes())
        .update(vrf_output);
    h.finalize()
}
