//! The in-memory blockdag: events by round, and the tallies the commit rule
//! reads (support, certificates, skip votes), kept up to date as each event is
//! inserted so that no decision ever rescans the DAG.
//!
//! Events enter only when every parent at or above the horizon is present;
//! rounds below the horizon are pruned.

use crate::bitset::Bitset;
use crate::committee::{Committee, Round, Stake};
use crate::epochs::Epochs;
use crate::event::{EventError, EventId, EventRef, VerifiedEvent};
use crate::id_map::IdMap;
use crate::ticket::Priority;
use std::collections::VecDeque;
use std::sync::Arc;

/// Where an event lives: its round and its position among that round's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeRef {
    pub round: Round,
    pub pos: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotStatus {
    Undecided,
    Skip,
    /// The committed event's position in its round.
    Commit(u32),
}

#[derive(Debug)]
pub(crate) struct Node {
    pub ev: VerifiedEvent,
    pub priority: Priority,
    /// Parents present in memory (at or above the horizon when inserted).
    pub parents: Vec<NodeRef>,
    /// Positions of the parents in the previous round.
    pub prev_positions: Vec<u32>,
    /// Authors two rounds up whose event certifies this one.
    pub certifiers: Bitset,
    pub cert_stake: Stake,
    /// Positions two rounds down this event certifies (only candidates whose
    /// slot was undecided when it arrived: the indirect rule needs no more).
    pub certifies: Vec<u32>,
    pub ordered: bool,
}

#[derive(Debug)]
pub(crate) struct Slot {
    /// Positions of this author's events in the round (two or more: equivocation).
    pub events: Vec<u32>,
    /// Authors of the next round with an event that supports none of them.
    pub nonsupport: Bitset,
    pub nonsupport_stake: Stake,
    pub status: SlotStatus,
    pub direct: bool,
}

#[derive(Debug)]
pub(crate) struct RoundData {
    pub committee: Arc<Committee>,
    pub events: Vec<Node>,
    pub slots: Vec<Slot>,
    pub present_stake: Stake,
    pub undecided: usize,
}

impl RoundData {
    fn new(committee: Arc<Committee>) -> Self {
        let n = committee.len();
        RoundData {
            slots: (0..n)
                .map(|_| Slot {
                    events: Vec::new(),
                    nonsupport: Bitset::new(n),
                    nonsupport_stake: 0,
                    status: SlotStatus::Undecided,
                    direct: false,
                })
                .collect(),
            committee,
            events: Vec::new(),
            present_stake: 0,
            undecided: n,
        }
    }
}

/// What inserting an event found.
#[derive(Debug, Default)]
pub struct Inserted {
    /// The earlier event of the same creator and round, if this one equivocates.
    pub equivocates_with: Option<EventId>,
}

pub struct DagState {
    /// Round of `rounds[0]`; everything below is pruned.
    pub(crate) base: Round,
    pub(crate) rounds: VecDeque<RoundData>,
    pub(crate) index: IdMap<EventId, NodeRef>,
    /// First round whose leaders are not yet all sequenced.
    pub(crate) next_round: Round,
    /// Set whenever some slot gets decided.
    pub(crate) decisions_changed: bool,
    /// Something that sequencing depends on changed since it last ran.
    pub(crate) seq_dirty: bool,
    /// Committed slots of `next_round` already sequenced.
    pub(crate) cursor: usize,
    /// VRF output of `next_round`'s leader, once sequenced.
    pub(crate) round_leader_vrf: Option<[u8; 32]>,
    scratch: Vec<Stake>,
    len: usize,
}

impl DagState {
    pub fn new(base: Round) -> Self {
        DagState {
            base,
            rounds: VecDeque::new(),
            index: IdMap::default(),
            next_round: base,
            decisions_changed: false,
            seq_dirty: false,
            cursor: 0,
            round_leader_vrf: None,
            scratch: Vec::new(),
            len: 0,
        }
    }

    pub fn base(&self) -> Round {
        self.base
    }

    /// Events held in memory.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Highest round holding an event.
    pub fn highest_round(&self) -> Option<Round> {
        self.rounds
            .iter()
            .rposition(|r| !r.events.is_empty())
            .map(|i| self.base + i as Round)
    }

    pub fn contains(&self, id: &EventId) -> bool {
        self.index.contains_key(id)
    }

    pub(crate) fn round(&self, r: Round) -> Option<&RoundData> {
        r.checked_sub(self.base)
            .and_then(|i| self.rounds.get(i as usize))
    }

    pub(crate) fn round_mut(&mut self, r: Round) -> Option<&mut RoundData> {
        r.checked_sub(self.base)
            .and_then(|i| self.rounds.get_mut(i as usize))
    }

    pub(crate) fn node(&self, n: NodeRef) -> &Node {
        &self
            .round(n.round)
            .expect("node refs point into memory")
            .events[n.pos as usize]
    }

    pub fn get(&self, id: &EventId) -> Option<&VerifiedEvent> {
        self.index.get(id).map(|n| &self.node(*n).ev)
    }

    /// Stake of the distinct authors present in round `r`.
    pub fn round_stake(&self, r: Round) -> Option<(Stake, &Committee)> {
        self.round(r).map(|rd| (rd.present_stake, &*rd.committee))
    }

    pub fn has_quorum(&self, r: Round) -> bool {
        self.round(r)
            .is_some_and(|rd| rd.committee.is_quorum(rd.present_stake))
    }

    /// Whether every member of round `r`'s committee has an event there.
    pub fn round_complete(&self, r: Round) -> bool {
        self.round(r)
            .is_some_and(|rd| rd.slots.iter().all(|s| !s.events.is_empty()))
    }

    /// The first event of each author in round `r` (the ones an honest event
    /// of round `r + 1` takes as parents; never two of one author).
    pub fn first_events(&self, r: Round) -> Vec<EventRef> {
        let Some(rd) = self.round(r) else {
            return Vec::new();
        };
        rd.slots
            .iter()
            .filter_map(|s| s.events.first())
            .map(|&p| rd.events[p as usize].ev.as_ref())
            .collect()
    }

    /// Parents of `ev` that are at or above the horizon but not in memory.
    pub fn missing_parents(&self, ev: &VerifiedEvent) -> Vec<EventRef> {
        ev.event
            .body
            .parents
            .iter()
            .filter(|p| p.round >= self.base && !self.index.contains_key(&p.id))
            .copied()
            .collect()
    }

    /// Insert an event whose parents at or above the horizon are all present.
    pub fn insert(&mut self, ev: VerifiedEvent, epochs: &Epochs) -> Result<Inserted, EventError> {
        let r = ev.round();
        if r < self.base {
            return Err(EventError::BelowHorizon {
                round: r,
                horizon: self.base,
            });
        }
        if self.index.contains_key(&ev.id) {
            return Ok(Inserted::default());
        }
        // Resolve and check parents before touching any state.
        let mut parents = Vec::with_capacity(ev.event.body.parents.len());
        let mut prev_positions = Vec::with_capacity(ev.event.body.parents.len());
        for p in &ev.event.body.parents {
            if p.round < self.base {
                continue;
            }
            let Some(&nr) = self.index.get(&p.id) else {
                return Err(EventError::MissingParent(p.id));
            };
            let pn = self.node(nr);
            if p.round + 1 == r {
                if nr.round != p.round || pn.ev.author != p.author {
                    return Err(EventError::ParentMismatch(p.id));
                }
                prev_positions.push(nr.pos);
            } else if nr.round != p.round {
                return Err(EventError::ParentMismatch(p.id));
            } else if pn.ev.event.body.creator != ev.event.body.creator {
                return Err(EventError::ForeignOlderParent);
            }
            parents.push(nr);
        }
        // Make room for round r.
        while self.base + (self.rounds.len() as Round) <= r {
            let rr = self.base + self.rounds.len() as Round;
            let c = epochs
                .committee(rr)
                .ok_or(EventError::UnknownCommittee(rr))?
                .clone();
            self.rounds.push_back(RoundData::new(c));
        }
        let x = ev.author;
        let (w, key) = {
            let c = &self.round(r).expect("round exists").committee;
            (
                c.stake(x),
                *c.key(x).expect("author validated against this committee"),
            )
        };

        // Support is parenthood (parents are one round down, but for the
        // creator's own older event); what the rule needs are the skip
        // votes: slots of round r-1 this event does not support.
        if r > self.base {
            let rd = self.round(r - 1).expect("round r-1 exists");
            let mut covered = Bitset::new(rd.committee.len());
            for &p in &prev_positions {
                covered.insert(rd.events[p as usize].ev.author);
            }
            let quorum_committee = self.round(r).expect("round exists").committee.clone();
            let rd = self.round_mut(r - 1).expect("round r-1 exists");
            let mut changed = false;
            let slots = if rd.undecided == 0 {
                &mut rd.slots[..0]
            } else {
                &mut rd.slots[..]
            };
            for (a, slot) in slots.iter_mut().enumerate() {
                if covered.contains(a as u32) || !slot.nonsupport.insert(x) {
                    continue;
                }
                slot.nonsupport_stake += w;
                if slot.status == SlotStatus::Undecided
                    && quorum_committee.is_quorum(slot.nonsupport_stake)
                {
                    slot.status = SlotStatus::Skip;
                    slot.direct = true;
                    rd.undecided -= 1;
                    changed = true;
                }
            }
            self.decisions_changed |= changed;
            self.seq_dirty |= changed;
        }

        // Certificates: which round r-2 events does this event certify?
        let mut certifies = Vec::new();
        // (Nothing to learn once every slot of round r-2 is decided.)
        if r >= 2 && r - 2 >= self.base && self.round(r - 2).is_some_and(|rd| rd.undecided > 0) {
            let i2 = (r - 2 - self.base) as usize;
            let n2 = self.rounds[i2].events.len();
            self.scratch.clear();
            self.scratch.resize(n2, 0);
            {
                let r1 = &self.rounds[i2 + 1];
                for &q in &prev_positions {
                    let qn = &r1.events[q as usize];
                    let wq = r1.committee.stake(qn.ev.author);
                    for &p in &qn.prev_positions {
                        self.scratch[p as usize] += wq;
                    }
                }
            }
            let c1 = self.rounds[i2 + 1].committee.clone();
            let c0 = self.rounds[i2 + 2].committee.clone();
            let rd2 = &mut self.rounds[i2];
            let mut changed = false;
            for (p, &s) in self.scratch.iter().enumerate() {
                if s == 0 || !c1.is_quorum(s) {
                    continue;
                }
                let author = rd2.events[p].ev.author as usize;
                if rd2.slots[author].status != SlotStatus::Undecided {
                    continue;
                }
                certifies.push(p as u32);
                let n = &mut rd2.events[p];
                if n.certifiers.insert(x) {
                    n.cert_stake += w;
                    if c0.is_quorum(n.cert_stake) {
                        let slot = &mut rd2.slots[author];
                        slot.status = SlotStatus::Commit(p as u32);
                        slot.direct = true;
                        rd2.undecided -= 1;
                        changed = true;
                    }
                }
            }
            self.decisions_changed |= changed;
            self.seq_dirty |= changed;
        }

        // Store the event.
        let priority = Priority::new(ev.ticket_value, w, key);
        let id = ev.id;
        let rd = self.round_mut(r).expect("round exists");
        let pos = rd.events.len() as u32;
        let slot = &mut rd.slots[x as usize];
        let equivocates_with = slot.events.first().map(|&p| rd.events[p as usize].ev.id);
        // A first event for an undecided slot puts it in its round's order,
        // which may settle an anchor.
        let places_slot = equivocates_with.is_none() && slot.status == SlotStatus::Undecided;
        slot.events.push(pos);
        if equivocates_with.is_none() {
            rd.present_stake += w;
        }
        let n = rd.committee.len();
        rd.events.push(Node {
            ev,
            priority,
            parents,
            prev_positions,
            certifiers: Bitset::new(n),
            cert_stake: 0,
            certifies,
            ordered: false,
        });
        self.index.insert(id, NodeRef { round: r, pos });
        if places_slot {
            self.decisions_changed = true;
            self.seq_dirty = true;
        }
        self.len += 1;
        Ok(Inserted { equivocates_with })
    }

    /// Drop every round below `horizon`.
    pub fn prune_below(&mut self, horizon: Round) {
        while self.base < horizon {
            if let Some(rd) = self.rounds.pop_front() {
                for n in &rd.events {
                    self.index.remove(&n.ev.id);
                }
                self.len -= rd.events.len();
            }
            self.base += 1;
        }
    }

    /// Events (in round order) that a peer whose highest round per author is
    /// `known` lacks, at most `limit` of them.
    pub fn events_after(
        &self,
        known: &dyn Fn(&crate::identity::PeerKey) -> Option<Round>,
        limit: usize,
    ) -> Vec<VerifiedEvent> {
        let mut out = Vec::new();
        let mut start = self.highest_round().map_or(self.base, |h| h + 1);
        if let Some(top) = self.rounds.back() {
            for m in top.committee.members() {
                start = start.min(known(&m.key).map_or(self.base, |k| k + 1));
            }
        }
        for r in start.max(self.base)..self.base + self.rounds.len() as Round {
            let rd = self.round(r).expect("in range");
            for n in &rd.events {
                let creator = &n.ev.event.body.creator;
                if known(creator).is_none_or(|k| k < r) {
                    out.push(n.ev.clone());
                    if out.len() >= limit {
                        return out;
                    }
                }
            }
        }
        out
    }
}

impl DagState {
    /// Mark an event as ordered before it arrived (restart from state).
    pub(crate) fn mark_ordered(&mut self, id: &EventId) {
        if let Some(&n) = self.index.get(id) {
            let base = self.base;
            self.rounds[(n.round - base) as usize].events[n.pos as usize].ordered = true;
        }
    }
}
