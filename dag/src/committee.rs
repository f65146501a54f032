//! The stake table of a snapshot: who may create events and how much each
//! one weighs in quorums.
//!
//! Weights are `u64` consensus units. The ledger maps native-asset stake
//! (u128 base units) to these units; the core only needs ratios.

use crate::identity::PeerKey;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use thiserror::Error;

pub type Round = u64;
pub type Stake = u64;

/// Rounds between two stake snapshots.
pub const SNAPSHOT_INTERVAL: Round = 4096;
/// How far behind the round its snapshot lies, at least.
pub const SNAPSHOT_LAG: Round = 1000;

/// `S(r) = max(0, ⌊(r − 1000)/4096⌋·4096)`: the snapshot whose stake table
/// and epoch seed govern round `r`.
pub fn snapshot_of(round: Round) -> Round {
    if round < SNAPSHOT_LAG {
        0
    } else {
        (round - SNAPSHOT_LAG) / SNAPSHOT_INTERVAL * SNAPSHOT_INTERVAL
    }
}

/// The largest total stake accepted: keeps every quorum sum far from overflow.
pub const MAX_TOTAL_STAKE: Stake = 1 << 62;
/// The largest committee accepted (events name authors by `u32` index and
/// carry at most this many parents).
pub const MAX_COMMITTEE: usize = 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommitteeError {
    #[error("a committee needs at least one member")]
    Empty,
    #[error("committee of {0} members exceeds the limit of {MAX_COMMITTEE}")]
    TooLarge(usize),
    #[error("member {0:?} appears twice")]
    Duplicate(PeerKey),
    #[error("member {0:?} has zero stake")]
    ZeroStake(PeerKey),
    #[error("total stake exceeds {MAX_TOTAL_STAKE}")]
    TooMuchStake,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub key: PeerKey,
    pub stake: Stake,
}

/// Members sorted by key; an author is named by its index in this order.
#[derive(Clone, Debug)]
pub struct Committee {
    members: Vec<Member>,
    total: Stake,
    index: HashMap<PeerKey, u32>,
}

impl PartialEq for Committee {
    fn eq(&self, other: &Self) -> bool {
        self.members == other.members
    }
}
impl Eq for Committee {}

impl Committee {
    pub fn new(mut members: Vec<Member>) -> Result<Self, CommitteeError> {
        if members.is_empty() {
            return Err(CommitteeError::Empty);
        }
        if members.len() > MAX_COMMITTEE {
            return Err(CommitteeError::TooLarge(members.len()));
        }
        members.sort_by_key(|m| m.key);
        let mut total: Stake = 0;
        let mut index = HashMap::with_capacity(members.len());
        for (i, m) in members.iter().enumerate() {
            if m.stake == 0 {
                return Err(CommitteeError::ZeroStake(m.key));
            }
            total = total
                .checked_add(m.stake)
                .filter(|t| *t <= MAX_TOTAL_STAKE)
                .ok_or(CommitteeError::TooMuchStake)?;
            if index.insert(m.key, i as u32).is_some() {
                return Err(CommitteeError::Duplicate(m.key));
            }
        }
        Ok(Committee {
            members,
            total,
            index,
        })
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn total(&self) -> Stake {
        self.total
    }

    pub fn index_of(&self, key: &PeerKey) -> Option<u32> {
        self.index.get(key).copied()
    }

    pub fn key(&self, author: u32) -> Option<&PeerKey> {
        self.members.get(author as usize).map(|m| &m.key)
    }

    /// Stake of author `i`; 0 for an index outside the committee.
    pub fn stake(&self, author: u32) -> Stake {
        self.members.get(author as usize).map_or(0, |m| m.stake)
    }

    /// More than 2/3 of the total.
    pub fn is_quorum(&self, stake: Stake) -> bool {
        (stake as u128) * 3 > (self.total as u128) * 2
    }

    /// More than 1/3 of the total.
    pub fn is_validity(&self, stake: Stake) -> bool {
        (stake as u128) * 3 > self.total as u128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PeerKey {
        PeerKey([b; 32])
    }

    #[test]
    fn snapshot_formula() {
        assert_eq!(snapshot_of(0), 0);
        assert_eq!(snapshot_of(999), 0);
        assert_eq!(snapshot_of(5095), 0);
        assert_eq!(snapshot_of(5096), 4096);
        assert_eq!(snapshot_of(9191), 4096);
        assert_eq!(snapshot_of(9192), 8192);
    }

    #[test]
    fn quorum_is_strictly_more_than_two_thirds() {
        let c = Committee::new(
            (0..4)
                .map(|i| Member {
                    key: key(i),
                    stake: 1,
                })
                .collect(),
        )
        .unwrap();
        assert!(!c.is_quorum(2));
        assert!(c.is_quorum(3));
        assert!(!c.is_validity(1));
        assert!(c.is_validity(2));
        let c = Committee::new(
            (0..3)
                .map(|i| Member {
                    key: key(i),
                    stake: 1,
                })
                .collect(),
        )
        .unwrap();
        assert!(!c.is_quorum(2), "2 of 3 is exactly 2/3, not more");
    }

    #[test]
    fn rejects_bad_tables() {
        assert_eq!(Committee::new(vec![]), Err(CommitteeError::Empty));
        assert_eq!(
            Committee::new(vec![Member {
                key: key(1),
                stake: 0
            }]),
            Err(CommitteeError::ZeroStake(key(1)))
        );
        assert_eq!(
            Committee::new(vec![
                Member {
                    key: key(1),
                    stake: 1
                },
                Member {
                    key: key(1),
                    stake: 2
                }
            ]),
            Err(CommitteeError::Duplicate(key(1)))
        );
        assert_eq!(
            Committee::new(vec![
                Member {
                    key: key(1),
                    stake: MAX_TOTAL_STAKE
                },
                Member {
                    key: key(2),
                    stake: 1
                }
            ]),
            Err(CommitteeError::TooMuchStake)
        );
    }

    #[test]
    fn members_are_indexed_in_key_order() {
        let c = Committee::new(vec![
            Member {
                key: key(9),
                stake: 5,
            },
            Member {
                key: key(3),
                stake: 7,
            },
        ])
        .unwrap();
        assert_eq!(c.index_of(&key(3)), Some(0));
        assert_eq!(c.stake(1), 5);
        assert_eq!(c.stake(7), 0);
    }
}
