//! The commit rule and the linearizer.
//!
//! Every member of a round's committee has a leader slot; slots are decided
//! directly from the tallies the DAG keeps (commit: certified by a quorum two
//! rounds up; skip: not supported by a quorum one round up) or indirectly
//! through an anchor: the first non-skipped slot in (round, priority) order
//! from round `r + 3` on. If the anchor is committed, the slot commits iff the
//! anchor's history holds a certificate for one of its events; if it is
//! undecided, the slot waits. Committed slots are sequenced in (round,
//! priority) order, stopping at the first undecided slot; each orders its
//! not-yet-ordered causal history.

use crate::committee::Round;
use crate::dag_state::{DagState, NodeRef, SlotStatus};
use crate::event::{EventRef, VerifiedEvent};
use std::collections::HashSet;

/// One committed leader and the events it orders.
#[derive(Clone, Debug)]
pub struct CommittedSubDag {
    /// Position in the final sequence of leaders, from 1 (height 0 is the
    /// genesis state).
    pub height: u64,
    pub leader: EventRef,
    /// Ordered by (round, id); the leader is last.
    pub events: Vec<VerifiedEvent>,
    /// Decided by its own certificates (true) or through a later anchor.
    pub direct: bool,
}

/// What sequencing produced, in order.
#[derive(Clone, Debug)]
pub enum SequenceStep {
    Leader(CommittedSubDag),
    /// Every slot of `round` is decided and its leaders are all out.
    RoundDone {
        round: Round,
        skipped: u32,
        /// VRF output of the round's leader (its best committed candidate).
        leader_vrf: Option<[u8; 32]>,
    },
}

#[derive(Clone, Copy)]
enum Anchor {
    Undetermined,
    At(NodeRef),
}

/// A slot in the order of its round: known priority (it has an event) and
/// not skipped.
#[derive(Clone, Copy)]
struct Ranked {
    author: u32,
    /// The committed event, or the slot's first event when undecided.
    pos: u32,
    committed: bool,
    direct: bool,
}

impl DagState {
    /// Decide what can be decided and sequence every committed slot whose
    /// better-priority slots are all decided.
    pub fn try_sequence(&mut self, gc_depth: Round, next_height: &mut u64) -> Vec<SequenceStep> {
        let mut out = Vec::new();
        if !self.seq_dirty {
            return out;
        }
        self.seq_dirty = false;
        if self.decisions_changed {
            self.decisions_changed = false;
            self.decide_indirect();
        }
        loop {
            let r = self.next_round;
            let Some(order) = self.round_order(r) else {
                break;
            };
            let mut blocked = false;
            while self.cursor < order.len() {
                let s = order[self.cursor];
                if !s.committed {
                    blocked = true;
                    break;
                }
                if self.cursor == 0 {
                    let rd = self.round(r).expect("round exists");
                    self.round_leader_vrf =
                        Some(rd.events[s.pos as usize].ev.event.body.ticket.output);
                }
                let leader = NodeRef {
                    round: r,
                    pos: s.pos,
                };
                let horizon = r.saturating_sub(gc_depth);
                let events = self.linearize(leader, horizon);
                out.push(SequenceStep::Leader(CommittedSubDag {
                    height: *next_height,
                    leader: self.node(leader).ev.as_ref(),
                    events,
                    direct: s.direct,
                }));
                *next_height += 1;
                self.cursor += 1;
            }
            if blocked {
                break;
            }
            let rd = self.round(r).expect("round exists");
            let skipped = rd
                .slots
                .iter()
                .filter(|s| s.status == SlotStatus::Skip)
                .count() as u32;
            out.push(SequenceStep::RoundDone {
                round: r,
                skipped,
                leader_vrf: self.round_leader_vrf.take(),
            });
            self.next_round += 1;
            self.cursor = 0;
        }
        out
    }

    /// The non-skipped slots of round `r` in priority order, or `None` while
    /// some undecided slot has no event yet (its place is unknown). Once a
    /// quorum of round `r + 1` is present, such slots are skipped directly:
    /// none of those events supports them.
    fn round_order(&self, r: Round) -> Option<Vec<Ranked>> {
        let rd = self.round(r)?;
        let mut order = Vec::with_capacity(rd.slots.len());
        for (a, s) in rd.slots.iter().enumerate() {
            let (pos, committed) = match s.status {
                SlotStatus::Skip => continue,
                SlotStatus::Commit(p) => (p, true),
                SlotStatus::Undecided => (*s.events.first()?, false),
            };
            order.push(Ranked {
                author: a as u32,
                pos,
                committed,
                direct: s.direct,
            });
        }
        order.sort_by(|x, y| {
            rd.events[x.pos as usize]
                .priority
                .cmp(&rd.events[y.pos as usize].priority)
                .then(x.author.cmp(&y.author))
        });
        Some(order)
    }

    /// Decide undecided slots through anchors, from the top round down: the
    /// anchor for round `k` is the first non-skipped slot, in (round,
    /// priority) order, from round `k + 3` on; if it is committed, slots of
    /// `k` commit iff its history certifies them, if it is undecided they wait.
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
            anchor_from[(k - lo) as usize] = match self.round_order(k) {
                None => Anchor::Undetermined,
                Some(order) => match order.first() {
                    None => anchor_from[(k + 1 - lo) as usize],
                    Some(s) if s.committed => Anchor::At(NodeRef {
                        round: k,
                        pos: s.pos,
                    }),
                    Some(_) => Anchor::Undetermined,
                },
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
        events.sort_by_key(|e| (e.round(), e.id));
        events
    }

    fn node_mut(&mut self, n: NodeRef) -> &mut crate::dag_state::Node {
        let base = self.base;
        &mut self.rounds[(n.round - base) as usize].events[n.pos as usize]
    }
}
