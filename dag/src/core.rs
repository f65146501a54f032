//! The consensus core: a sans-IO state machine.
//!
//! Inputs: received events (with the time), timeouts, payload bytes to
//! propose, and the stake table of each snapshot from the ledger. Outputs
//! (polled): our own new events to persist and send, fetch requests for
//! missing parents, committed sub-DAGs in final order, and equivocation
//! evidence. No sockets, threads, clocks or disks: the caller supplies `now`.

use crate::committee::{snapshot_of, Committee, Member, Round, SNAPSHOT_INTERVAL};
use crate::committer::{CommittedSubDag, SequenceStep};
use crate::dag_state::DagState;
use crate::epochs::{fold_seed, Epochs};
use crate::event::{
    EquivocationEvidence, Event, EventBody, EventError, EventId, EventLimits, EventRef,
    ValidationContext, VerifiedEvent,
};
use crate::id_map::IdSet;
use crate::identity::{EventSigner, PeerKey};
use crate::pending::{Millis, Pending};
use proofs::Hash;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use thiserror::Error;

/// Rounds after the last event with payload (counted from the round being
/// sequenced) before the idle pace starts: an event of round `r` is ordered
/// by the leader of `r` or of a round just above it.
const IDLE_AFTER_ROUNDS: Round = 2;

/// Parameters every peer of a chain must share (the first four) and local
/// tuning (the rest).
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Chain id (genesis hash).
    pub chain: Hash,
    /// Epoch seed of snapshot 0.
    pub genesis_seed: Hash,
    pub limits: EventLimits,
    /// Rounds kept below the first unsequenced round; also how far back a
    /// leader's history is ordered. Consensus-critical: same on every peer.
    pub gc_depth: Round,
    /// After a round has a quorum, how long to wait for its other events
    /// before building on the quorum alone.
    pub round_wait_ms: Millis,
    /// Never build two own events closer than this (a lone or very fast
    /// committee would otherwise spin through rounds).
    pub min_round_interval_ms: Millis,
    /// While idle (nothing queued here and no event with payload in the
    /// DAG still waiting to be sequenced), build own events no closer than
    /// this instead: an idle chain then grows by a few heights a second,
    /// not hundreds. Payload, queued here or seen in a received event,
    /// ends the idle pace at once. Local tuning, not a rule.
    pub idle_round_interval_ms: Millis,
    /// Re-ask for a missing parent after this long.
    pub fetch_retry_ms: Millis,
    /// Resend our latest event when no round completed for this long.
    pub rebroadcast_ms: Millis,
    /// Events parked for missing parents, at most.
    pub max_pending: usize,
    /// Events further than this beyond our highest round are refused.
    pub max_rounds_ahead: Round,
    /// Equivocation evidence kept (oldest dropped first).
    pub max_evidence: usize,
}

impl CoreConfig {
    pub fn new(chain: Hash) -> Self {
        CoreConfig {
            chain,
            genesis_seed: chain,
            limits: EventLimits::default(),
            gc_depth: 50,
            round_wait_ms: 100,
            min_round_interval_ms: 10,
            idle_round_interval_ms: 10,
            fetch_retry_ms: 300,
            rebroadcast_ms: 1000,
            max_pending: 20_000,
            max_rounds_ahead: 200,
            max_evidence: 1024,
        }
    }
}

/// Why a received event was not taken (each has its own drop counter).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Refused {
    #[error("invalid event: {0}")]
    Invalid(#[from] EventError),
    #[error("already have it")]
    Duplicate,
    #[error("round {0} is below the pruning horizon")]
    TooOld(Round),
    #[error("round {0} is too far ahead")]
    TooFarAhead(Round),
    #[error("stake table or seed of round {0}'s snapshot not known yet")]
    AwaitingSnapshot(Round),
    #[error("creator already has too many events in this round")]
    SlotFull,
    #[error("too many events waiting for parents")]
    PendingFull,
}

/// Why a [`CoreState`] could not be restored.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StateError {
    #[error("stake table of snapshot {0} is invalid: {1}")]
    Committee(Round, String),
    #[error("a recent event was refused: {0}")]
    Event(Refused),
}

/// What a received event became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Inserted,
    /// Waiting for parents (requested through `Output::Fetch`).
    Parked,
}

#[derive(Clone, Debug)]
pub enum Output {
    /// Our new event: persist it durably, then send it to every peer.
    Broadcast(Arc<Event>),
    /// Our latest event again, after a stall: send it to every peer.
    Rebroadcast(Arc<Event>),
    /// Parents we lack; `hint` sent us the event that needs them.
    Fetch {
        refs: Vec<EventRef>,
        hint: Option<PeerKey>,
    },
    /// The next committed leader and the events it orders.
    Committed(CommittedSubDag),
    /// Every slot of `round` is decided; `skipped` slots were skipped.
    RoundSequenced { round: Round, skipped: u32 },
    /// All leaders up to this snapshot round are sequenced: the ledger
    /// should now supply its stake table with `set_committee`.
    SnapshotReached { snapshot: Round },
    /// Two signed events of one creator and round.
    Equivocation(Box<EquivocationEvidence>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub received: u64,
    pub inserted: u64,
    pub invalid: u64,
    pub duplicates: u64,
    pub too_old: u64,
    pub too_far_ahead: u64,
    pub awaiting_snapshot: u64,
    pub slot_full: u64,
    pub pending_full: u64,
    pub equivocations: u64,
    pub committed_leaders: u64,
    pub skipped_leaders: u64,
    pub ordered_events: u64,
    pub proposed: u64,
    /// Own events with payload that fell below the horizon unordered, their
    /// payload queued again.
    pub requeued_events: u64,
}

/// What only this peer knows about itself and must keep across a restart or
/// a catch-up: its own latest event, so it never signs a second event in a
/// round. The daemon stores it durably before sending each event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnProgress {
    pub last_proposed: Option<Round>,
    pub own_last: Option<EventRef>,
}

/// A committed state to start from without the old DAG (catch-up), or to
/// hand to a peer that needs one. It holds nothing peer-specific.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreState {
    pub next_round: Round,
    /// Committed slots of `next_round` already sequenced, and the VRF output
    /// of that round's leader if it is among them.
    pub next_round_cursor: usize,
    pub next_round_leader_vrf: Option<[u8; 32]>,
    pub next_height: u64,
    pub seed_acc: Hash,
    /// (snapshot, stake table sorted by key, epoch seed) for the snapshots
    /// still in use.
    pub epochs: Vec<(Round, Vec<Member>, Option<Hash>)>,
    /// Events at or above the horizon, in round order.
    pub recent: Vec<Event>,
    /// Which of `recent` (and of events not included) are already ordered.
    pub ordered: Vec<EventId>,
}

pub struct Core {
    cfg: CoreConfig,
    signer: Box<dyn EventSigner>,
    me: PeerKey,
    epochs: Epochs,
    dag: DagState,
    pending: Pending,
    next_height: u64,
    seed_acc: Hash,
    /// Ids ordered before a restart from state, until the horizon passes them.
    imported_ordered: IdSet<EventId>,
    imported_upto: Round,
    /// Highest round in the DAG per creator (the sync frontier).
    highest_by_author: BTreeMap<PeerKey, Round>,
    last_proposed: Option<Round>,
    last_proposed_at: Millis,
    own_last: Option<EventRef>,
    own_last_event: Option<Arc<Event>>,
    /// Own events carrying payload that no committed leader has ordered
    /// yet, oldest first (see [`Core::requeue_unordered`]).
    own_unordered: VecDeque<(Round, EventId, Arc<Event>)>,
    /// Highest round with a quorum of events, and when it got one.
    quorum_round: Option<(Round, Millis)>,
    last_progress: Millis,
    payload: VecDeque<Vec<u8>>,
    /// Highest round of an event in the DAG that carries payload.
    last_payload_round: Option<Round>,
    outputs: VecDeque<Output>,
    evidence: VecDeque<EquivocationEvidence>,
    stats: Stats,
    now: Millis,
}

impl Core {
    /// A core at genesis.
    pub fn new(
        cfg: CoreConfig,
        genesis: Committee,
        signer: Box<dyn EventSigner>,
        now: Millis,
    ) -> Self {
        let mut epochs = Epochs::default();
        epochs.set_committee(0, Arc::new(genesis));
        epochs.set_seed(0, cfg.genesis_seed);
        let seed_acc = cfg.genesis_seed;
        let mut core = Core::assemble(cfg, signer, epochs, DagState::new(0), seed_acc, now);
        core.maybe_propose();
        core
    }

    /// A core started from a committed state (catch-up or restart). `recent`
    /// events are verified like any received event.
    pub fn from_state(
        cfg: CoreConfig,
        state: CoreState,
        own: OwnProgress,
        signer: Box<dyn EventSigner>,
        now: Millis,
    ) -> Result<Self, StateError> {
        let mut epochs = Epochs::default();
        for (s, members, seed) in state.epochs {
            let c = Committee::new(members.clone())
                .map_err(|e| StateError::Committee(s, e.to_string()))?;
            if c.members() != members.as_slice() {
                return Err(StateError::Committee(s, "members not sorted by key".into()));
            }
            epochs.set_committee(s, Arc::new(c));
            if let Some(seed) = seed {
                epochs.set_seed(s, seed);
            }
        }
        let horizon = state.next_round.saturating_sub(cfg.gc_depth);
        let mut dag = DagState::new(horizon);
        dag.next_round = state.next_round;
        dag.cursor = state.next_round_cursor;
        dag.round_leader_vrf = state.next_round_leader_vrf;
        let mut core = Core::assemble(cfg, signer, epochs, dag, state.seed_acc, now);
        core.next_height = state.next_height;
        core.imported_ordered = state.ordered.into_iter().collect();
        core.imported_upto = state.next_round;
        core.last_proposed = own.last_proposed;
        core.own_last = own.own_last;
        for ev in state.recent {
            match core.receive(now, ev, None) {
                Ok(_) | Err(Refused::Duplicate) => {}
                Err(e) => return Err(StateError::Event(e)),
            }
        }
        Ok(core)
    }

    fn assemble(
        cfg: CoreConfig,
        signer: Box<dyn EventSigner>,
        epochs: Epochs,
        dag: DagState,
        seed_acc: Hash,
        now: Millis,
    ) -> Self {
        let me = signer.key();
        Core {
            dag,
            cfg,
            signer,
            me,
            epochs,
            pending: Pending::default(),
            next_height: 1,
            seed_acc,
            imported_ordered: IdSet::default(),
            imported_upto: 0,
            highest_by_author: BTreeMap::new(),
            last_proposed: None,
            last_proposed_at: 0,
            own_last: None,
            own_last_event: None,
            own_unordered: VecDeque::new(),
            quorum_round: None,
            last_progress: now,
            payload: VecDeque::new(),
            last_payload_round: None,
            outputs: VecDeque::new(),
            evidence: VecDeque::new(),
            stats: Stats::default(),
            now,
        }
    }

    /// Export what another core needs to continue from here.
    pub fn export_state(&self) -> CoreState {
        let mut recent = Vec::new();
        let mut ordered = Vec::new();
        for rd in &self.dag.rounds {
            for n in &rd.events {
                recent.push((*n.ev.event).clone());
                if n.ordered {
                    ordered.push(n.ev.id);
                }
            }
        }
        CoreState {
            next_round: self.dag.next_round,
            next_round_cursor: self.dag.cursor,
            next_round_leader_vrf: self.dag.round_leader_vrf,
            next_height: self.next_height,
            seed_acc: self.seed_acc,
            epochs: self
                .epochs
                .snapshots()
                .map(|(s, c, seed)| (s, c.members().to_vec(), seed.copied()))
                .collect(),
            recent,
            ordered,
        }
    }

    pub fn key(&self) -> PeerKey {
        self.me
    }

    /// Change the local wait for a round's last events (see
    /// [`CoreConfig::round_wait_ms`]): a tuning of this peer, not a rule
    /// others must share.
    pub fn set_round_wait_ms(&mut self, ms: Millis) {
        self.cfg.round_wait_ms = ms;
    }

    /// Change the local idle pace (see [`CoreConfig::idle_round_interval_ms`]).
    pub fn set_idle_round_interval_ms(&mut self, ms: Millis) {
        self.cfg.idle_round_interval_ms = ms;
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn evidence(&self) -> impl Iterator<Item = &EquivocationEvidence> {
        self.evidence.iter()
    }

    /// Events held in memory: the DAG plus those waiting for parents.
    pub fn events_in_memory(&self) -> usize {
        self.dag.len() + self.pending.len()
    }

    /// The first round whose leaders are not all sequenced.
    pub fn next_round(&self) -> Round {
        self.dag.next_round
    }

    /// Highest round with a quorum of events.
    pub fn quorum_round(&self) -> Option<Round> {
        self.quorum_round.map(|(r, _)| r)
    }

    pub fn last_proposed(&self) -> Option<Round> {
        self.last_proposed
    }

    /// Our own latest event and its round.
    pub fn own_progress(&self) -> OwnProgress {
        OwnProgress {
            last_proposed: self.last_proposed,
            own_last: self.own_last,
        }
    }

    pub fn horizon(&self) -> Round {
        self.dag.base()
    }

    pub fn get_event(&self, id: &EventId) -> Option<Arc<Event>> {
        self.dag.get(id).map(|v| v.event.clone())
    }

    /// An event with what its verification computed (id, ticket value).
    pub fn get_verified(&self, id: &EventId) -> Option<&VerifiedEvent> {
        self.dag.get(id)
    }

    /// For each author, the highest round we hold an event of (for sync).
    pub fn frontier(&self) -> Vec<(PeerKey, Round)> {
        self.highest_by_author
            .iter()
            .map(|(k, r)| (*k, *r))
            .collect()
    }

    /// Events a peer with `frontier` lacks, lowest rounds first, at most `limit`.
    pub fn events_missing_from(
        &self,
        frontier: &[(PeerKey, Round)],
        limit: usize,
    ) -> Vec<VerifiedEvent> {
        let known: std::collections::HashMap<PeerKey, Round> = frontier.iter().copied().collect();
        self.dag.events_after(&|k| known.get(k).copied(), limit)
    }

    /// Opaque bytes for our next events (whole items, in order).
    pub fn queue_payload(&mut self, item: Vec<u8>) -> Result<(), EventError> {
        let max = self.cfg.limits.max_payload_bytes;
        if item.len() > max {
            // It could never fit in an event and would block the queue.
            return Err(EventError::PayloadTooLarge {
                len: item.len(),
                max,
            });
        }
        self.payload.push_back(item);
        Ok(())
    }

    pub fn queued_payload_items(&self) -> usize {
        self.payload.len()
    }

    /// The ledger's stake table at `snapshot`. The epoch seed of a snapshot
    /// comes from the committed VRF outputs, so the core knows it already.
    pub fn set_committee(&mut self, snapshot: Round, committee: Committee, now: Millis) {
        self.now = self.now.max(now);
        self.epochs.set_committee(snapshot, Arc::new(committee));
        self.maybe_propose();
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When `handle_timeout` wants to be called next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut t = self.last_progress + self.cfg.rebroadcast_ms;
        if let Some(d) = self.pending.next_due(self.cfg.fetch_retry_ms) {
            t = t.min(d);
        }
        if let Some((q, since)) = self.quorum_round {
            if self.last_proposed.is_none_or(|p| p <= q) {
                let paced = self.last_proposed_at + self.round_interval();
                // A complete round waits only for the pacing, not for
                // stragglers (there are none).
                let ready = if self.dag.round_complete(q) {
                    paced
                } else {
                    (since + self.cfg.round_wait_ms).max(paced)
                };
                t = t.min(ready);
            }
        }
        Some(t)
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        self.now = self.now.max(now);
        for (hint, refs) in self.pending.due(self.now, self.cfg.fetch_retry_ms) {
            self.outputs.push_back(Output::Fetch { refs, hint });
        }
        if self.now >= self.last_progress + self.cfg.rebroadcast_ms {
            self.last_progress = self.now;
            if let Some(e) = &self.own_last_event {
                self.outputs.push_back(Output::Rebroadcast(e.clone()));
            }
        }
        self.maybe_propose();
    }

    /// Validation context for an event of round `r`, if its snapshots are known.
    fn context(&self, r: Round) -> Option<ValidationContext<'_>> {
        if !self.epochs.ready(r) {
            return None;
        }
        let prev_committee = if r == 0 {
            None
        } else {
            Some(&**self.epochs.committee(r - 1)?)
        };
        Some(ValidationContext {
            chain: self.cfg.chain,
            limits: self.cfg.limits,
            committee: self.epochs.committee(r)?,
            prev_committee,
            seed: self.epochs.seed(r)?,
        })
    }

    /// Cheap checks before any cryptography.
    fn precheck(&mut self, id: &EventId, body: &EventBody) -> Result<(), Refused> {
        self.stats.received += 1;
        let r = body.round;
        let refused = if r < self.dag.base() {
            Some(Refused::TooOld(r))
        } else if self.dag.contains(id) || self.pending.contains(id) {
            Some(Refused::Duplicate)
        } else if r > self.dag.highest_round().unwrap_or(self.dag.next_round)
            + self.cfg.max_rounds_ahead
        {
            Some(Refused::TooFarAhead(r))
        } else if !self.epochs.ready(r) || (r > 0 && self.epochs.committee(r - 1).is_none()) {
            Some(Refused::AwaitingSnapshot(r))
        } else if !self.pending.is_wanted(id) && self.slot_full(body) {
            Some(Refused::SlotFull)
        } else {
            None
        };
        match refused {
            None => Ok(()),
            Some(e) => {
                self.count(&e);
                Err(e)
            }
        }
    }

    /// Unsolicited events of one creator and round beyond the committee size
    /// are refused: more can only be an equivocator flooding memory (honest
    /// peers reference at most one per creator, so at most that many are ever
    /// needed, and needed ones are fetched as wanted parents).
    fn slot_full(&self, body: &EventBody) -> bool {
        let Some(rd) = self.dag.round(body.round) else {
            return false;
        };
        match rd.committee.index_of(&body.creator) {
            Some(a) => rd.slots[a as usize].events.len() >= rd.committee.len(),
            None => false,
        }
    }

    fn count(&mut self, e: &Refused) {
        let s = &mut self.stats;
        match e {
            Refused::Invalid(_) => s.invalid += 1,
            Refused::Duplicate => s.duplicates += 1,
            Refused::TooOld(_) => s.too_old += 1,
            Refused::TooFarAhead(_) => s.too_far_ahead += 1,
            Refused::AwaitingSnapshot(_) => s.awaiting_snapshot += 1,
            Refused::SlotFull => s.slot_full += 1,
            Refused::PendingFull => s.pending_full += 1,
        }
    }

    /// A received event, fully verified here. `from` is the peer that sent it
    /// (where missing parents are asked first).
    pub fn receive(
        &mut self,
        now: Millis,
        event: Event,
        from: Option<PeerKey>,
    ) -> Result<Accepted, Refused> {
        let id = event.id();
        self.receive_identified(now, event, id, from)
    }

    /// [`Core::receive`] of an event whose id the caller has computed (it
    /// must be `event.id()`), so a large payload is hashed once.
    pub fn receive_identified(
        &mut self,
        now: Millis,
        event: Event,
        id: EventId,
        from: Option<PeerKey>,
    ) -> Result<Accepted, Refused> {
        self.now = self.now.max(now);
        self.precheck(&id, &event.body)?;
        let ctx = self
            .context(event.body.round)
            .expect("precheck ensured snapshots");
        let verified = VerifiedEvent::verify_identified(event, id, &ctx)
            .inspect_err(|_| self.stats.invalid += 1)?;
        self.accept(verified, from)
    }

    /// A received event whose signature and VRF ticket the caller verified
    /// already (the simulator verifies each event once, when created).
    pub fn receive_prechecked(
        &mut self,
        now: Millis,
        event: Arc<Event>,
        id: EventId,
        ticket_value: u64,
        from: Option<PeerKey>,
    ) -> Result<Accepted, Refused> {
        self.now = self.now.max(now);
        self.precheck(&id, &event.body)?;
        let ctx = self
            .context(event.body.round)
            .expect("precheck ensured snapshots");
        let verified = VerifiedEvent::with_checked_crypto(event, id, ticket_value, &ctx)
            .inspect_err(|_| self.stats.invalid += 1)?;
        self.accept(verified, from)
    }

    fn accept(&mut self, ev: VerifiedEvent, from: Option<PeerKey>) -> Result<Accepted, Refused> {
        let missing: Vec<EventRef> = self.dag.missing_parents(&ev);
        if missing.is_empty() {
            self.insert_cascade(ev);
            self.after_insert();
            return Ok(Accepted::Inserted);
        }
        if !self.pending.is_wanted(&ev.id) && self.pending.len() >= self.cfg.max_pending {
            self.stats.pending_full += 1;
            return Err(Refused::PendingFull);
        }
        let ask = self.pending.park(ev, missing, from, self.now);
        if !ask.is_empty() {
            self.outputs.push_back(Output::Fetch {
                refs: ask,
                hint: from,
            });
        }
        Ok(Accepted::Parked)
    }

    /// Insert `ev` and every parked event it completes.
    fn insert_cascade(&mut self, ev: VerifiedEvent) {
        let mut work = vec![ev];
        while let Some(ev) = work.pop() {
            let id = ev.id;
            let round = ev.round();
            let copy = ev.event.clone();
            match self.dag.insert(ev, &self.epochs) {
                Ok(ins) => {
                    self.stats.inserted += 1;
                    if self.imported_ordered.contains(&id) {
                        self.dag.mark_ordered(&id);
                    }
                    let h = self
                        .highest_by_author
                        .entry(copy.body.creator)
                        .or_insert(round);
                    *h = (*h).max(round);
                    if !copy.body.payload.is_empty() {
                        self.last_payload_round = self.last_payload_round.max(Some(round));
                    }
                    if let Some(first) = ins.equivocates_with {
                        self.record_equivocation(first, copy);
                    }
                    self.note_round(round);
                    work.extend(self.pending.arrived(&id));
                }
                Err(_) => {
                    self.stats.invalid += 1;
                    self.stats.invalid += self.pending.failed(&id) as u64;
                }
            }
        }
    }

    fn record_equivocation(&mut self, first: EventId, second: Arc<Event>) {
        self.stats.equivocations += 1;
        let Some(first) = self.dag.get(&first) else {
            return;
        };
        let evidence = EquivocationEvidence {
            first: (*first.event).clone(),
            second: (*second).clone(),
        };
        if self.evidence.len() >= self.cfg.max_evidence {
            self.evidence.pop_front();
        }
        self.evidence.push_back(evidence.clone());
        self.outputs
            .push_back(Output::Equivocation(Box::new(evidence)));
    }

    fn note_round(&mut self, r: Round) {
        if self.quorum_round.is_none_or(|(q, _)| r > q) && self.dag.has_quorum(r) {
            self.quorum_round = Some((r, self.now));
            self.last_progress = self.now;
        }
    }

    fn after_insert(&mut self) {
        self.sequence();
        self.maybe_propose();
    }

    fn sequence(&mut self) {
        let steps = self
            .dag
            .try_sequence(self.cfg.gc_depth, &mut self.next_height);
        if steps.is_empty() {
            return;
        }
        for step in steps {
            match step {
                SequenceStep::Leader(c) => {
                    if !self.own_unordered.is_empty() {
                        self.own_unordered
                            .retain(|(_, id, _)| !c.events.iter().any(|v| v.id == *id));
                    }
                    self.stats.committed_leaders += 1;
                    self.stats.ordered_events += c.events.len() as u64;
                    self.outputs.push_back(Output::Committed(c));
                }
                SequenceStep::RoundDone {
                    round,
                    skipped,
                    leader_vrf,
                } => {
                    if let Some(vrf) = leader_vrf {
                        self.seed_acc = fold_seed(&self.seed_acc, round, &vrf);
                    }
                    self.stats.skipped_leaders += skipped as u64;
                    self.outputs
                        .push_back(Output::RoundSequenced { round, skipped });
                    if round > 0 && round % SNAPSHOT_INTERVAL == 0 {
                        self.epochs.set_seed(round, self.seed_acc);
                        self.outputs
                            .push_back(Output::SnapshotReached { snapshot: round });
                    }
                }
            }
        }
        let horizon = self.dag.next_round.saturating_sub(self.cfg.gc_depth);
        self.requeue_unordered(horizon);
        if horizon > self.dag.base() {
            self.dag.prune_below(horizon);
            // Parked events whose only missing parents fell below the
            // horizon need them no more.
            for ev in self.pending.prune_below(horizon) {
                self.insert_cascade(ev);
            }
            // Keep the snapshots that rounds from the horizon on still use.
            self.epochs.prune_below(horizon);
            self.highest_by_author.retain(|_, r| *r >= horizon);
            if horizon > self.imported_upto {
                self.imported_ordered.clear();
            }
        }
    }

    /// Queue again, ahead of everything else, the payload of own events
    /// below `horizon` that no leader ordered: every later leader's round
    /// is at least as high, and a leader orders nothing below its round
    /// less the GC depth, so those events will never be ordered (an event
    /// that reached the others too late, e.g. while this peer lagged). The
    /// ledger would refuse a second ordering of the same transaction anyway.
    fn requeue_unordered(&mut self, horizon: Round) {
        let lost = self
            .own_unordered
            .iter()
            .take_while(|(r, _, _)| *r < horizon)
            .count();
        for (_, _, ev) in self.own_unordered.drain(..lost).rev() {
            self.payload.push_front(ev.body.payload.clone());
            self.stats.requeued_events += 1;
        }
    }

    /// Whether there is work for the next rounds: payload queued here, or
    /// an event with payload that may not be sequenced yet. Rounds up to
    /// two below the one being decided still count, since an event is
    /// ordered by a leader of a later round that reaches it.
    pub fn busy(&self) -> bool {
        !self.payload.is_empty()
            || self
                .last_payload_round
                .is_some_and(|r| r + IDLE_AFTER_ROUNDS >= self.dag.next_round)
    }

    /// The least time between two own events now.
    fn round_interval(&self) -> Millis {
        if self.busy() {
            self.cfg.min_round_interval_ms
        } else {
            self.cfg
                .min_round_interval_ms
                .max(self.cfg.idle_round_interval_ms)
        }
    }

    /// Build our next event when the round above the highest quorum round is
    /// open to us.
    fn maybe_propose(&mut self) {
        let (target, parents_round) = match self.quorum_round {
            None => {
                if self.dag.base() > 0 || self.dag.next_round > 0 {
                    return; // started from state: wait to see a quorum
                }
                (0, None)
            }
            Some((q, since)) => {
                if !self.dag.round_complete(q) && self.now < since + self.cfg.round_wait_ms {
                    return;
                }
                (q + 1, Some(q))
            }
        };
        if self.last_proposed.is_some_and(|p| p >= target) {
            return;
        }
        if self.last_proposed.is_some() && self.now < self.last_proposed_at + self.round_interval()
        {
            return; // paced: poll_timeout wakes us
        }
        let Some(committee) = self.epochs.committee(target).cloned() else {
            return; // refuse to advance into a round whose snapshot we lack
        };
        let Some(seed) = self.epochs.seed(target).copied() else {
            return;
        };
        if target > 0 && self.epochs.committee(target - 1).is_none() {
            return;
        }
        let Some(author) = committee.index_of(&self.me) else {
            return; // not in this round's committee: observe only
        };
        let mut parents = match parents_round {
            Some(q) => self.dag.first_events(q),
            None => Vec::new(),
        };
        if let (Some(own), Some(q)) = (self.own_last, parents_round) {
            if own.round < q {
                parents.push(own);
            }
        }
        let mut payload = Vec::new();
        while let Some(item) = self.payload.front() {
            if payload.len() + item.len() > self.cfg.limits.max_payload_bytes {
                break;
            }
            payload.extend_from_slice(item);
            self.payload.pop_front();
        }
        let (event, ticket_value) = Event::create(
            &mut *self.signer,
            self.cfg.chain,
            &seed,
            target,
            parents,
            payload,
            self.now,
        );
        let id = event.id();
        let event = Arc::new(event);
        let verified = VerifiedEvent {
            event: event.clone(),
            id,
            author,
            ticket_value,
        };
        let r = verified.as_ref();
        self.last_proposed = Some(target);
        self.own_last = Some(r);
        self.own_last_event = Some(event.clone());
        if !event.body.payload.is_empty() {
            self.own_unordered.push_back((target, id, event.clone()));
        }
        self.stats.proposed += 1;
        // Persist-then-send is the driver's job; we put it in our DAG now.
        self.outputs.push_back(Output::Broadcast(event));
        self.last_proposed_at = self.now;
        self.insert_cascade(verified);
        self.sequence();
    }

    /// The committee of round `r`, if known.
    pub fn committee(&self, r: Round) -> Option<&Committee> {
        self.epochs.committee(r).map(|c| &**c)
    }

    /// The epoch seed of round `r`, if known.
    pub fn seed(&self, r: Round) -> Option<&Hash> {
        self.epochs.seed(r)
    }

    /// Whether the stake table of `snapshot` has been supplied.
    pub fn has_snapshot(&self, snapshot: Round) -> bool {
        self.epochs.has_committee_at(snapshot)
    }

    /// Whether round `r` can be validated and built (its snapshot's table
    /// and seed are known).
    pub fn round_ready(&self, r: Round) -> bool {
        self.epochs.ready(r) && snapshot_of(r) <= r
    }
}
