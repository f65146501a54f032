//! The commit rule and the linearizer.
//!
//! Every member of a round's committee has a leader slot; slots are decided
//! directly from the tallies the DAG keeps (commit: certified by a quorum two
//! rounds up; skip: not supported by a quorum one round up) or indirectly by
//! the first later round, from `r + 3` on, that is fully decided and has a
//! committed slot (its best-priority committed event is the anchor: the slot
//! commits iff the anchor's history holds a certificate for one of its
//! events). A round is sequenced once all its slots are decided: its
//! committed events, best VRF priority first, each order their
//! not-yet-ordered causal history.

use crate::committee::Round;
use crate::dag_state::{DagState, NodeRef, SlotStatus};
use crate::event::{EventRef, VerifiedEvent};
use std::collections::HashSet;

/// One committed leader and the events it orders.
#[derive(Clone, Debug)]
pub struct CommittedSubDag {
    /// Position in the final sequence of leaders, from 0.
    pub height: u64,
    pub leader: EventRef,
    /// Ordered by (round, id); the leader is last.
    pub events: Vec<VerifiedEvent>,
    /// Decided by its own certificates (true) or through a later anchor.
    pub direct: bool,
}

/// A round whose slots are all decided.
#[derive(Clone, Debug)]
pub struct SequencedRound {
    pub round: Round,
    pub committed: Vec<CommittedSubDag>,
    pub skipped: u32,
    /// VRF output of the round's leader (its best committed candidate).
    pub leader_vrf: Option<[u8; 32]>,
}

#[derive(Clone, Copy)]
enum Anchor {
    Undetermined,
    At(NodeRef),
}

impl DagState {
    /// Decide what can be decided and sequence every round that is complete.
    pub fn try_sequence(&mut self, gc_depth: Round, next_height: &mut u64) -> Vec<SequencedRound> {
        let mut out = Vec::new();
        loop {
            let r = self.next_round;
            let Some(rd) = self.round(r) else { break };
            if rd.undecided > 0 {
                if self.decisions_changed {
                    self.decisions_changed = false;
                    self.decide_indirect();
                }
                if self.round(r).is_none_or(|rd| rd.undecided > 0) {
                    break;
                }
            }
            out.push(self.sequence_round(r, gc_depth, next_height));
            self.next_round += 1;
        }
        out
    }

    fn best_committed(&self, r: Round) -> Option<NodeRef> {
        let rd = self.round(r)?;
        rd.slots
            .iter()
            .filter_map(|s| match s.status {
                SlotStatus::Commit(p) => Some(p),
                _ => None,
            })
            .min_by(|&a, &b| {
                rd.events[a as usize]
                    .priority
                    .cmp(&rd.events[b as usize].priority)
            })
            .map(|pos| NodeRef { round: r, pos })
    }

    fn decide_indirect(&mut self) {
        let lo = self.next_round;
        let Some(hi) = self.highest_round() else {
            return;
        };
        if hi < lo + 3 {
            return;
        }
        let mut anchor_from = vec![Anchor::Undetermined; (hi - lo + 2) as usize];
        for k in (lo..=hi).rev() {
            let undecided = self.round(k).map_or(0, |rd| rd.undecided);
            if undecided > 0 && k + 3 <= hi {
                if let Anchor::At(a) = anchor_from[(k + 3 - lo) as usize] {
                    let certified = self.certified_in_history(a, k);
                    let rd = self.round_mut(k).expect("round in range");
                    for slot in rd.slots.iter_mut() {
                        if slot.status != SlotStatus::Undecided {
                            continue;
                        }
                        slot.status = match slot.events.iter().find(|p| certified.contains(p)) {
                            Some(&p) => SlotStatus::Commit(p),
                            None => SlotStatus::Skip,
                        };
                        slot.direct = false;
                        rd.undecided -= 1;
                    }
                }
            }
            let fully = self.round(k).is_some_and(|rd| rd.undecided == 0);
            anchor_from[(k - lo) as usize] = if fully {
                match self.best_committed(k) {
                    Some(n) => Anchor::At(n),
                    None => anchor_from[(k + 1 - lo) as usize],
                }
            } else {
                Anchor::Undetermined
            };
        }
    }

    /// Positions in round `k` certified by some round `k + 2` event in the
    /// causal history of `anchor`.
    fn certified_in_history(&self, anchor: NodeRef, k: Round) -> HashSet<u32> {
        let target = k + 2;
        let mut certified = HashSet::new();
        let mut seen = HashSet::new();
        let mut stack = vec![anchor];
        while let Some(n) = stack.pop() {
            let node = self.node(n);
            if n.round == target {
                certified.extend(node.certifies.iter().copied());
                continue;
            }
            for &p in &node.parents {
                if p.round >= target && p.round >= self.base && seen.insert(p) {
                    stack.push(p);
                }
            }
        }
        certified
    }

    fn sequence_round(
        &mut self,
        r: Round,
        gc_depth: Round,
        next_height: &mut u64,
    ) -> SequencedRound {
        let rd = self.round(r).expect("round exists");
        let mut committed: Vec<(u32, bool)> = rd
            .slots
            .iter()
            .filter_map(|s| match s.status {
                SlotStatus::Commit(p) => Some((p, s.direct)),
                _ => None,
            })
            .collect();
        let skipped = rd
            .slots
            .iter()
            .filter(|s| s.status == SlotStatus::Skip)
            .count() as u32;
        committed.sort_by(|a, b| {
            rd.events[a.0 as usize]
                .priority
                .cmp(&rd.events[b.0 as usize].priority)
        });
        let leader_vrf = committed
            .first()
            .map(|&(p, _)| rd.events[p as usize].ev.event.body.ticket.output);
        let horizon = r.saturating_sub(gc_depth);
        let mut subdags = Vec::with_capacity(committed.len());
        for (pos, direct) in committed {
            let leader = NodeRef { round: r, pos };
            let events = self.linearize(leader, horizon);
            let leader_ref = self.node(leader).ev.as_ref();
            subdags.push(CommittedSubDag {
                height: *next_height,
                leader: leader_ref,
                events,
                direct,
            });
            *next_height += 1;
        }
        SequencedRound {
            round: r,
            committed: subdags,
            skipped,
            leader_vrf,
        }
    }

    /// Mark and return the not-yet-ordered causal history of `leader` at or
    /// above `horizon`, sorted by (round, id).
    fn linearize(&mut self, leader: NodeRef, horizon: Round) -> Vec<VerifiedEvent> {
        let mut picked = Vec::new();
        let mut stack = Vec::new();
        if !self.node(leader).ordered {
            self.node_mut(leader).ordered = true;
            stack.push(leader);
        }
        while let Some(n) = stack.pop() {
            picked.push(n);
            let parents = self.node(n).parents.clone();
            for p in parents {
                if p.round < horizon || p.round < self.base {
                    continue;
                }
                let pn = self.node_mut(p);
                if !pn.ordered {
                    pn.ordered = true;
                    stack.push(p);
                }
            }
        }
        let mut events: Vec<VerifiedEvent> =
            picked.iter().map(|&n| self.node(n).ev.clone()).collect();
        events.sort_by(|a, b| (a.round(), a.id).cmp(&(b.round(), b.id)));
        events
    }

    fn node_mut(&mut self, n: NodeRef) -> &mut crate::dag_state::Node {
        let base = self.base;
        &mut self.rounds[(n.round - base) as usize].events[n.pos as usize]
    }
}
