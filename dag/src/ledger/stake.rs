//! The stake table: who is in the committee and with what weight.
//!
//! A peer's stake is the value of the unspent native outputs hosted with it.
//! At a snapshot the table lists every active peer whose stake is at least
//! `min_share_ppm` millionths of the stake hosted with active peers. The
//! consensus core counts in `u64` units with a total of at most
//! [`MAX_TOTAL_STAKE`], so base units are divided by one common factor, the
//! smallest that fits; only ratios matter to quorums.

use crate::committee::{Committee, CommitteeError, Member, MAX_COMMITTEE, MAX_TOTAL_STAKE};
use crate::ledger::state::Ledger;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StakeError {
    #[error("no active peer hosts enough stake to form a committee")]
    NoCommittee,
    #[error(transparent)]
    Committee(#[from] CommitteeError),
}

impl Ledger {
    /// The stake table of the current state.
    pub fn stake_table(&self) -> Result<Committee, StakeError> {
        let active: Vec<(crate::identity::PeerKey, u128)> = self
            .peers
            .values()
            .filter(|p| p.is_active())
            .map(|p| (p.key, self.hosted(&p.key)))
            .filter(|(_, s)| *s > 0)
            .collect();
        let total: u128 = active.iter().map(|(_, s)| s).sum();
        let min_ppm = u128::from(self.params.min_share_ppm);
        // stake / total >= ppm / 10^6, in integers; total ≤ u128::MAX and
        // stake·10^6 could overflow, so compare in two halves.
        let eligible = |s: u128| match s.checked_mul(1_000_000) {
            Some(lhs) => match total.checked_mul(min_ppm) {
                Some(rhs) => lhs >= rhs,
                None => s >= total / 1_000_000 * min_ppm,
            },
            None => true,
        };
        let mut members: Vec<(crate::identity::PeerKey, u128)> =
            active.into_iter().filter(|(_, s)| eligible(*s)).collect();
        if members.is_empty() {
            return Err(StakeError::NoCommittee);
        }
        if members.len() > MAX_COMMITTEE {
            // Largest stakes first, ties by key: deterministic.
            members.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            members.truncate(MAX_COMMITTEE);
        }
        let sum: u128 = members.iter().map(|(_, s)| s).sum();
        let cap = u128::from(MAX_TOTAL_STAKE);
        let divisor = sum.div_ceil(cap).max(1);
        let members: Vec<Member> = members
            .into_iter()
            .map(|(key, s)| Member {
                key,
                stake: (s / divisor) as u64,
            })
            .filter(|m| m.stake > 0)
            .collect();
        if members.is_empty() {
            return Err(StakeError::NoCommittee);
        }
        Ok(Committee::new(members)?)
    }
}
