//! The peer's protocol logic without I/O: the consensus core, the ledger and
//! the mempool, driven by messages from other peers, transactions and the
//! clock, answering with messages to send and records to persist.
//!
//! The daemon's event loop (sockets, LMDB, timers) is a thin layer around
//! this, and tests run several drivers in one process by passing messages
//! between them. Rules the loop must keep are stated on [`Effect`]: above
//! all, our own event is persisted durably before it is sent. The core
//! holds its signer as a plain trait object, so a driver lives on one
//! thread and the loop talks to it through channels.

use dag::committee::Round;
use dag::core::{Accepted, Core, CoreConfig, Output, OwnProgress, Refused};
use dag::event::{Event, EventId};
use dag::identity::{Bytes64, EventSigner, PeerKey};
use dag::ledger::admission::{
    authorize_batch, authorize_batch_trusting, decode_payload, encode_payload_item, Admitted,
    PayloadItem,
};
use dag::ledger::apply::{HeightInput, HeightOutcome};
use dag::ledger::checkpoint::{Certified, Checkpoint, Handover, Statement};
use dag::ledger::genesis::Genesis;
use dag::ledger::snapshot::SNAPSHOT_PIECE;
use dag::ledger::{Ledger, StateRoots, Transaction};
use dag::wire::{PeerMessage, MAX_EVENTS_PER_MESSAGE};
use dag::CommittedSubDag;
use proofs::Hash;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

pub type Millis = u64;

/// What one committed height was, as stored: enough to apply it again
/// (replay after a restart) and to check the replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeightRecord {
    pub height: u64,
    pub round: Round,
    pub leader: EventId,
    /// Each ordered event's id and payload.
    pub events: Vec<(EventId, Vec<u8>)>,
    /// The roots after applying it.
    pub roots: StateRoots,
}

/// The state a peer restarts from, or hands to a peer far behind: the
/// ledger at a height and the consensus position right after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSnapshot {
    pub ledger: dag::ledger::snapshot::LedgerSnapshot,
    pub core: dag::core::CoreState,
    /// Transactions applied and rejected up to the snapshot (the status
    /// counters go on from there; not covered by any root).
    pub txs_applied: u64,
    pub txs_rejected: u64,
}

impl PeerSnapshot {
    /// The first round of events a driver started from this snapshot can
    /// use (older ones are below its core's horizon).
    pub fn first_useful_round(&self) -> Round {
        // gc_depth is consensus-critical, the same on every chain.
        let gc = CoreConfig::new(Hash::ZERO).gc_depth;
        self.core.next_round.saturating_sub(gc)
    }
}

/// The consensus core's configuration for the chain `genesis` starts.
fn core_config(genesis: &Genesis) -> CoreConfig {
    let mut cfg = CoreConfig::new(genesis.chain_id());
    cfg.genesis_seed = genesis.epoch_seed();
    cfg
}

/// What the event loop must do, in order.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Persist our own event durably, THEN send it to every peer (never the
    /// other way round: after a crash we must not sign this round again).
    PersistOwnThenBroadcast { round: Round, event: Arc<Event> },
    /// Send to one peer.
    Send { to: PeerKey, msg: PeerMessage },
    /// Send to every connected peer.
    Broadcast(PeerMessage),
    /// A height is final and applied: persist its record (append-only).
    Committed(Box<HeightRecord>),
    /// The ordered items of that height and their outcomes (for the wallets
    /// that submitted them), and the owner keys of the outputs it created
    /// (for the wallets subscribed to them).
    Finalized {
        height: u64,
        outcomes: Vec<(Hash, dag::ledger::apply::Outcome)>,
        created_for: Vec<Hash>,
    },
    /// The encoded state at `height` ([`PeerSnapshot`]): store it (to
    /// restart from, and to hand to peers that are far behind once the
    /// height is certified). Events below `horizon` are no longer needed to
    /// restart from it.
    Snapshot { height: u64, horizon: Round },
    /// A snapshot height got its certificate.
    SnapshotCertified(Box<Certified<Checkpoint>>),
    /// More than 2/3 of the stake signed another checkpoint than ours for a
    /// height we applied: our state has left the chain (a bug, a damaged
    /// store, or a lying snapshot server). The certificate is the evidence.
    Diverged {
        ours: Box<Checkpoint>,
        certified: Box<Certified<Checkpoint>>,
    },
    /// The committee of a snapshot is certified (wallets and joining peers
    /// walk these from genesis).
    HandoverCertified(Box<Certified<Handover>>),
}

/// Add `from`'s signature to `cert` if `statement` is the one being
/// certified, `from` is a member of `committee` and the signature verifies
/// under the statement's context. Whether the signatures now carry more
/// than 2/3 of the committee's stake.
fn add_vote<T: Statement + PartialEq>(
    cert: &mut Certified<T>,
    statement: &T,
    committee: &dag::Committee,
    from: &PeerKey,
    sig: Bytes64,
) -> bool {
    if cert.statement != *statement {
        return false;
    }
    let Some(index) = committee.index_of(from) else {
        return false;
    };
    let Ok(key) = from.to_public() else {
        return false;
    };
    if dag::identity::verify_digest(&key, T::CONTEXT, &statement.digest(), &sig).is_err() {
        return false;
    }
    cert.add(index, sig);
    let signed: u64 = cert
        .signatures
        .iter()
        .map(|(i, _)| committee.stake(*i))
        .sum();
    committee.is_quorum(signed)
}

/// Signs a statement's digest under its signing context (checkpoints,
/// hand-overs) with the peer's identity key.
pub type StatementSigner = Box<dyn FnMut(&'static [u8], &Hash) -> Bytes64>;

/// Counters the status command and metrics report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DriverStats {
    pub messages_in: u64,
    pub events_refused: u64,
    pub txs_refused: u64,
    pub mempool_full: u64,
    pub heights: u64,
    pub txs_applied: u64,
    pub txs_rejected: u64,
    pub checkpoints_certified: u64,
    pub handovers_certified: u64,
    pub conflicting_votes: u64,
    pub snapshots: u64,
}

/// Early checkpoint votes are kept for heights at most this far ahead…
const MAX_VOTE_LEAD: u64 = 4096;
/// …and at most this many in all.
const MAX_EARLY_VOTES: usize = 16_384;

/// Mempool bounds: transactions waiting to be proposed.
pub const MAX_MEMPOOL_TXS: usize = 100_000;

pub struct Driver {
    chain: Hash,
    key: PeerKey,
    core: Core,
    ledger: Ledger,
    /// Transactions queued for our events, by id, with the signature we
    /// verified (to drop repeats, and to skip verifying exactly these again
    /// when they are ordered).
    queued: HashMap<Hash, Bytes64>,
    queued_order: VecDeque<Hash>,
    /// Checkpoint votes by height, until certified.
    votes: BTreeMap<u64, Certified<Checkpoint>>,
    /// Votes of others for heights we have not voted on yet.
    early_votes: BTreeMap<u64, Vec<(PeerKey, Checkpoint, Bytes64)>>,
    /// The last applied height, its leader round and roots, until voted on.
    last_applied: Option<(u64, Round, StateRoots)>,
    last_certified: Option<Certified<Checkpoint>>,
    /// The height voted on last (snapshots are taken at voted heights, so
    /// they can be certified).
    last_voted: u64,
    /// Our own checkpoints of the last heights we voted on, to tell votes
    /// for other roots apart…
    voted: BTreeMap<u64, Checkpoint>,
    /// …and those other checkpoints with their signatures: more than 2/3 of
    /// the stake on one of them means our state is not the chain's.
    conflicts: BTreeMap<u64, Vec<Certified<Checkpoint>>>,
    /// Hand-overs we signed, until certified, by snapshot round.
    handovers: BTreeMap<Round, Certified<Handover>>,
    /// Others' hand-over votes for snapshots we have not reached yet.
    early_handover_votes: Vec<(PeerKey, Handover, Bytes64)>,
    /// Take a state snapshot every this many heights (0: never).
    snapshot_every: u64,
    last_snapshot: u64,
    /// Snapshot heights still waiting for their certificate.
    snapshot_uncertified: Vec<u64>,
    sign: StatementSigner,
    rng: ChaCha20Rng,
    effects: VecDeque<Effect>,
    /// Told each height before it is applied (the daemon tags the state
    /// writes of that height with it).
    height_hook: Option<Box<dyn FnMut(u64) + Send>>,
    /// Valid events received since the last [`Driver::take_accepted`]:
    /// round, id and encoding.
    accepted: Vec<(Round, EventId, Vec<u8>)>,
    stats: DriverStats,
    now: Millis,
}

impl Driver {
    /// A driver at genesis (or, with `own`, restarted: it will not sign
    /// rounds at or below `own.last_proposed` again).
    pub fn new(
        genesis: &Genesis,
        signer: Box<dyn EventSigner>,
        sign: StatementSigner,
        own: OwnProgress,
        rng_seed: [u8; 32],
        now: Millis,
    ) -> anyhow::Result<Driver> {
        let ledger = genesis.ledger()?;
        let committee = ledger.stake_table()?;
        let chain = genesis.chain_id();
        let cfg = core_config(genesis);
        let key = signer.key();
        let core = if own == OwnProgress::default() {
            Core::new(cfg, committee, signer, now)
        } else {
            let state = dag::core::CoreState {
                next_round: 0,
                next_round_cursor: 0,
                next_round_leader_vrf: None,
                next_height: 1,
                seed_acc: genesis.epoch_seed(),
                epochs: vec![(0, committee.members().to_vec(), Some(genesis.epoch_seed()))],
                recent: Vec::new(),
                ordered: Vec::new(),
            };
            Core::from_state(cfg, state, own, signer, now)
                .map_err(|e| anyhow::anyhow!("restoring the core: {e}"))?
        };
        Ok(Driver::assemble(
            chain, key, core, ledger, sign, rng_seed, now,
        ))
    }

    /// A driver continuing from a state snapshot: our own (restart) or one
    /// from another peer, which must match `certified` (a checkpoint whose
    /// certificate the caller checked). With `own`, rounds at or below
    /// `own.last_proposed` are never signed again.
    #[allow(clippy::too_many_arguments)]
    pub fn from_snapshot(
        genesis: &Genesis,
        snapshot: PeerSnapshot,
        certified: Option<&Checkpoint>,
        signer: Box<dyn EventSigner>,
        sign: StatementSigner,
        own: OwnProgress,
        rng_seed: [u8; 32],
        now: Millis,
    ) -> anyhow::Result<Driver> {
        let chain = genesis.chain_id();
        let PeerSnapshot {
            ledger,
            core,
            txs_applied,
            txs_rejected,
        } = snapshot;
        let ledger = match certified {
            Some(cp) => Ledger::from_checkpoint(ledger, genesis, cp),
            None => Ledger::from_snapshot(ledger),
        }
        .map_err(|e| anyhow::anyhow!("the snapshot's ledger state: {e}"))?;
        if ledger.chain() != chain {
            anyhow::bail!("the snapshot is of another chain");
        }
        if core.next_height != ledger.height() + 1 {
            anyhow::bail!(
                "the snapshot's consensus state continues at height {} but its ledger is at {}",
                core.next_height,
                ledger.height()
            );
        }
        let cfg = core_config(genesis);
        let key = signer.key();
        let core = Core::from_state(cfg, core, own, signer, now)
            .map_err(|e| anyhow::anyhow!("the snapshot's consensus state: {e}"))?;
        let mut d = Driver::assemble(chain, key, core, ledger, sign, rng_seed, now);
        d.last_snapshot = d.ledger.height();
        d.stats.txs_applied = txs_applied;
        d.stats.txs_rejected = txs_rejected;
        Ok(d)
    }

    fn assemble(
        chain: Hash,
        key: PeerKey,
        core: Core,
        ledger: Ledger,
        sign: StatementSigner,
        rng_seed: [u8; 32],
        now: Millis,
    ) -> Driver {
        let mut d = Driver {
            chain,
            key,
            core,
            ledger,
            queued: HashMap::new(),
            queued_order: VecDeque::new(),
            votes: BTreeMap::new(),
            early_votes: BTreeMap::new(),
            last_applied: None,
            last_certified: None,
            last_voted: 0,
            voted: BTreeMap::new(),
            conflicts: BTreeMap::new(),
            handovers: BTreeMap::new(),
            early_handover_votes: Vec::new(),
            snapshot_every: 0,
            last_snapshot: 0,
            snapshot_uncertified: Vec::new(),
            sign,
            rng: ChaCha20Rng::from_seed(rng_seed),
            effects: VecDeque::new(),
            height_hook: None,
            accepted: Vec::new(),
            stats: DriverStats::default(),
            now,
        };
        d.drain_core();
        d
    }

    /// Keep the ledger's history in `store` (see
    /// [`Ledger::set_history_store`]). Returns whether it had to copy it.
    pub fn set_history_store(
        &mut self,
        store: dag::ledger::state::HistoryStore,
    ) -> anyhow::Result<bool> {
        self.ledger
            .set_history_store(store)
            .map_err(|e| anyhow::anyhow!("moving the history: {e}"))
    }

    /// Move the ledger's growing structures into `stores` (see
    /// [`Ledger::use_stores`]).
    pub fn use_ledger_stores(&mut self, stores: dag::ledger::LedgerStores) -> anyhow::Result<()> {
        self.ledger
            .use_stores(stores)
            .map_err(|e| anyhow::anyhow!("moving the ledger state into the store: {e}"))
    }

    /// How long to wait for a round's last events once it has a quorum
    /// (local tuning: short on a LAN, longer across continents).
    pub fn set_round_wait_ms(&mut self, ms: Millis) {
        self.core.set_round_wait_ms(ms);
    }

    /// The least time between two own events while nothing waits to be
    /// ordered (local tuning: how fast an idle chain grows).
    pub fn set_idle_round_ms(&mut self, ms: Millis) {
        self.core.set_idle_round_interval_ms(ms);
    }

    /// Take a state snapshot ([`Effect::Snapshot`]) every `heights` heights
    /// (0: never).
    /// Call `hook` with each height before applying it.
    pub fn set_height_hook(&mut self, hook: Box<dyn FnMut(u64) + Send>) {
        self.height_hook = Some(hook);
    }

    pub fn set_snapshot_interval(&mut self, heights: u64) {
        self.snapshot_every = heights;
    }

    /// The state now, as a snapshot (only between inputs: every committed
    /// height is applied then, so the core and the ledger agree).
    pub fn export_snapshot(&self) -> anyhow::Result<PeerSnapshot> {
        let core = self.core_state()?;
        Ok(PeerSnapshot {
            ledger: self
                .ledger
                .export_snapshot()
                .map_err(|e| anyhow::anyhow!("exporting the ledger: {e}"))?,
            core,
            txs_applied: self.stats.txs_applied,
            txs_rejected: self.stats.txs_rejected,
        })
    }

    /// The encoding of [`Driver::export_snapshot`], written piece by piece
    /// (see [`Ledger::encode_snapshot`]): what a stored snapshot is.
    pub fn encode_snapshot(&self) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_snapshot(SNAPSHOT_PIECE, &mut |piece| {
            out.extend_from_slice(piece);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Driver::encode_snapshot`] handed to `sink` in pieces of at least
    /// `piece` bytes as it is encoded (see [`Ledger::encode_snapshot_with`]).
    /// What [`Effect::Snapshot`] asks for, before the next input.
    pub fn write_snapshot(
        &self,
        piece: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> anyhow::Result<()> {
        use proofs::codec::encode_into;
        let core = self.core_state()?;
        self.ledger
            .encode_snapshot_with(piece, sink)
            .map_err(|e| anyhow::anyhow!("exporting the ledger: {e}"))?;
        // The fields after the ledger, in `PeerSnapshot`'s order.
        let mut out = Vec::new();
        encode_into(&core, &mut out);
        encode_into(&self.stats.txs_applied, &mut out);
        encode_into(&self.stats.txs_rejected, &mut out);
        sink(&out).map_err(|e| anyhow::anyhow!("writing the snapshot: {e}"))
    }

    /// The core's state, which must be at the ledger's height.
    fn core_state(&self) -> anyhow::Result<dag::core::CoreState> {
        let core = self.core.export_state();
        if core.next_height != self.ledger.height() + 1 {
            anyhow::bail!(
                "the core is at height {} but the ledger at {}",
                core.next_height,
                self.ledger.height()
            );
        }
        Ok(core)
    }

    pub fn key(&self) -> PeerKey {
        self.key
    }
    pub fn chain(&self) -> Hash {
        self.chain
    }
    pub fn core(&self) -> &Core {
        &self.core
    }
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
    pub fn stats(&self) -> &DriverStats {
        &self.stats
    }
    pub fn last_certified(&self) -> Option<&Certified<Checkpoint>> {
        self.last_certified.as_ref()
    }

    /// Our own checkpoint of the last height we voted on.
    pub fn last_voted(&self) -> Option<&Checkpoint> {
        self.voted.values().next_back()
    }
    pub fn mempool_len(&self) -> usize {
        self.core.queued_payload_items()
    }

    /// The valid events received from peers since the last call (inserted,
    /// or parked for missing parents) as round, id and encoding, for the
    /// event log.
    pub fn take_accepted(&mut self) -> Vec<(Round, EventId, Vec<u8>)> {
        std::mem::take(&mut self.accepted)
    }

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When [`Driver::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.core.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        self.now = self.now.max(now);
        self.core.handle_timeout(self.now);
        self.drain_core();
    }

    /// What we hold, for a newly connected peer or the periodic sync.
    pub fn frontier_message(&self) -> PeerMessage {
        PeerMessage::Frontier(self.core.frontier())
    }

    /// Transactions from a wallet, checked in one batch (form and
    /// signature) before they take mempool space. For each: whether it was
    /// queued (false: a repeat), or why not, with its id.
    pub fn submit_batch(&mut self, txs: Vec<Transaction>) -> Vec<(Hash, Result<bool, String>)> {
        let items: Vec<PayloadItem> = txs
            .into_iter()
            .map(|tx| {
                let id = tx.id();
                PayloadItem::Tx {
                    tx: Arc::new(tx),
                    id,
                }
            })
            .collect();
        let admitted = authorize_batch(&items, &self.chain, &mut self.rng);
        let mut out = Vec::with_capacity(items.len());
        for (item, a) in items.iter().zip(admitted) {
            let PayloadItem::Tx { tx, id } = item else {
                unreachable!("built as transactions")
            };
            let result = match a {
                Admitted::Rejected { reason, .. } => {
                    self.stats.txs_refused += 1;
                    Err(reason.to_string())
                }
                Admitted::Ok(_) => self.queue_checked(*id, tx.signature, encode_payload_item(tx)),
            };
            out.push((*id, result));
        }
        self.drain_core();
        out
    }

    fn queue_checked(&mut self, id: Hash, sig: Bytes64, item: Vec<u8>) -> Result<bool, String> {
        if self.queued.contains_key(&id) {
            return Ok(false);
        }
        if self.queued.len() >= MAX_MEMPOOL_TXS {
            self.stats.mempool_full += 1;
            return Err("mempool full".into());
        }
        self.core
            .queue_payload(item)
            .map_err(|e| format!("payload: {e}"))?;
        self.queued.insert(id, sig);
        self.queued_order.push_back(id);
        while self.queued_order.len() > MAX_MEMPOOL_TXS {
            if let Some(old) = self.queued_order.pop_front() {
                self.queued.remove(&old);
            }
        }
        Ok(true)
    }

    /// A transaction from a wallet or another peer. Checked (form and
    /// signature) before it takes mempool space. Returns whether it was
    /// queued.
    pub fn submit(&mut self, tx: Transaction, forward: bool) -> Result<bool, String> {
        let bytes = forward.then(|| tx.encode());
        let (_, result) = self
            .submit_batch(vec![tx])
            .pop()
            .expect("one transaction, one result");
        if let (Ok(true), Some(b)) = (&result, bytes) {
            self.effects
                .push_back(Effect::Broadcast(PeerMessage::Transactions(vec![b])));
        }
        result
    }

    /// Events from our own store after a restart (own and received, in
    /// round order): the core re-derives the committed heights from them.
    pub fn replay(&mut self, events: impl IntoIterator<Item = Event>) {
        for ev in events {
            match self.core.receive(self.now, ev, None) {
                Ok(_) | Err(Refused::Duplicate) => {}
                Err(e) => tracing::warn!("stored event refused on replay: {e}"),
            }
            self.drain_core();
        }
    }

    /// A message from an authenticated peer.
    pub fn handle_message(&mut self, from: PeerKey, msg: PeerMessage, now: Millis) {
        self.now = self.now.max(now);
        self.stats.messages_in += 1;
        match msg {
            PeerMessage::Frontier(f) => {
                let missing = self.core.events_missing_from(&f, MAX_EVENTS_PER_MESSAGE);
                if !missing.is_empty() {
                    let events = missing.iter().map(|v| (*v.event).clone()).collect();
                    self.effects.push_back(Effect::Send {
                        to: from,
                        msg: PeerMessage::Events(events),
                    });
                }
            }
            PeerMessage::Events(events) => {
                for ev in events {
                    let (bytes, id) = ev.encode_with_id();
                    let round = ev.body.round;
                    match self.core.receive_identified(self.now, ev, id, Some(from)) {
                        // Verified, whether inserted or waiting for parents:
                        // the event log must hold both, or a replay stalls.
                        Ok(Accepted::Inserted | Accepted::Parked) => {
                            self.accepted.push((round, id, bytes))
                        }
                        Err(Refused::Duplicate) => {}
                        Err(_) => self.stats.events_refused += 1,
                    }
                }
            }
            PeerMessage::Fetch(refs) => {
                let events: Vec<Event> = refs
                    .iter()
                    .filter_map(|r| self.core.get_event(&r.id))
                    .map(|e| (*e).clone())
                    .collect();
                if !events.is_empty() {
                    self.effects.push_back(Effect::Send {
                        to: from,
                        msg: PeerMessage::Events(events),
                    });
                }
            }
            PeerMessage::Transactions(txs) => {
                for bytes in txs {
                    match proofs::decode::<Transaction>(
                        &bytes,
                        self.ledger.params().max_tx_bytes as usize,
                    ) {
                        Ok(tx) => {
                            let _ = self.submit(tx, false);
                        }
                        Err(_) => self.stats.txs_refused += 1,
                    }
                }
            }
            PeerMessage::CheckpointVote {
                checkpoint,
                signature,
            } => self.take_vote(from, *checkpoint, signature),
            PeerMessage::HandoverVote {
                handover,
                signature,
            } => self.take_handover_vote(from, *handover, signature),
            // Snapshots travel between the daemons' stores, and wallets'
            // rendezvous between the daemons' wallet services, not through
            // the protocol state.
            PeerMessage::SnapshotOffer(_)
            | PeerMessage::SnapshotFetch { .. }
            | PeerMessage::SnapshotChunk { .. }
            | PeerMessage::Introduce(_)
            | PeerMessage::IntroduceAnswer { .. }
            | PeerMessage::Relay { .. } => {}
        }
        self.drain_core();
    }

    /// A vote for other roots than ours at a height we voted on. At most
    /// four other checkpoints per height are tracked (a Byzantine member
    /// could sign junk ones, but cannot crowd out a real one with more).
    fn take_conflicting_vote(&mut self, from: PeerKey, cp: Checkpoint, sig: Bytes64) {
        let Some(committee) = self.core.committee(cp.round) else {
            return;
        };
        if committee.index_of(&from).is_none() {
            return;
        }
        self.stats.conflicting_votes += 1;
        let height = cp.height;
        let alternatives = self.conflicts.entry(height).or_default();
        let at = match alternatives.iter().position(|c| c.statement == cp) {
            Some(at) => at,
            None if alternatives.len() < 4 => {
                alternatives.push(Certified::new(cp.clone()));
                alternatives.len() - 1
            }
            None => return,
        };
        if add_vote(&mut alternatives[at], &cp, committee, &from, sig) {
            let certified = alternatives.swap_remove(at);
            let ours = self
                .voted
                .get(&height)
                .cloned()
                .expect("checked by the caller");
            tracing::error!(
                height,
                ours = ?ours.roots,
                certified = ?certified.statement.roots,
                "more than 2/3 of the stake certified other roots than ours"
            );
            self.effects.push_back(Effect::Diverged {
                ours: Box::new(ours),
                certified: Box::new(certified),
            });
        }
        while self.conflicts.len() > 64 {
            self.conflicts.pop_first();
        }
    }

    fn take_handover_vote(&mut self, from: PeerKey, h: Handover, sig: Bytes64) {
        if h.chain != self.chain {
            return;
        }
        let Some(entry) = self.handovers.get_mut(&h.snapshot) else {
            // Not reached yet (or long certified): keep a few for later.
            let reached = self.core.has_snapshot(h.snapshot);
            if !reached && self.early_handover_votes.len() < 4 * dag::committee::MAX_COMMITTEE {
                self.early_handover_votes.push((from, h, sig));
            }
            return;
        };
        let Some(committee) = self.core.committee(h.certifying_round()) else {
            return;
        };
        if add_vote(entry, &h, committee, &from, sig) {
            let done = self.handovers.remove(&h.snapshot).expect("present");
            self.stats.handovers_certified += 1;
            self.effects
                .push_back(Effect::HandoverCertified(Box::new(done)));
        }
    }

    /// Sign the committee of snapshot `snapshot` (as the committee that
    /// governs that round will check it) and collect others' signatures.
    fn vote_handover(&mut self, snapshot: Round, members: Vec<dag::committee::Member>) {
        let h = Handover {
            chain: self.chain,
            snapshot,
            members,
        };
        let sig = (self.sign)(Handover::CONTEXT, &h.digest());
        self.handovers.insert(snapshot, Certified::new(h.clone()));
        // Hand-overs older than the last two never complete now.
        while self.handovers.len() > 2 {
            self.handovers.pop_first();
        }
        self.take_handover_vote(self.key, h.clone(), sig);
        for (from, v, sig) in std::mem::take(&mut self.early_handover_votes) {
            if v.snapshot == snapshot {
                self.take_handover_vote(from, v, sig);
            } else if v.snapshot > snapshot {
                self.early_handover_votes.push((from, v, sig));
            }
        }
        self.effects
            .push_back(Effect::Broadcast(PeerMessage::HandoverVote {
                handover: Box::new(h),
                signature: sig,
            }));
    }

    fn take_vote(&mut self, from: PeerKey, cp: Checkpoint, sig: dag::identity::Bytes64) {
        // Only votes on heights we have applied, matching our own roots,
        // are kept: a vote on other roots is a fork we would not certify.
        if cp.chain != self.chain {
            return;
        }
        if let Some(ours) = self.voted.get(&cp.height) {
            if *ours != cp {
                self.take_conflicting_vote(from, cp, sig);
                return;
            }
        }
        if cp.height > self.ledger.height()
            || (cp.height == self.ledger.height() && !self.votes.contains_key(&cp.height))
        {
            // Ahead of us: keep it (bounded) until we vote on that height.
            let held: usize = self.early_votes.values().map(Vec::len).sum();
            if cp.height <= self.ledger.height() + MAX_VOTE_LEAD && held < MAX_EARLY_VOTES {
                self.early_votes
                    .entry(cp.height)
                    .or_default()
                    .push((from, cp, sig));
            }
            return;
        }
        let Some(entry) = self.votes.get_mut(&cp.height) else {
            return;
        };
        let Some(committee) = self.core.committee(cp.round) else {
            return;
        };
        if add_vote(entry, &cp, committee, &from, sig) {
            let done = self.votes.remove(&cp.height).expect("present");
            self.stats.checkpoints_certified += 1;
            if let Some(at) = self
                .snapshot_uncertified
                .iter()
                .position(|h| *h == cp.height)
            {
                self.snapshot_uncertified.remove(at);
                self.effects
                    .push_back(Effect::SnapshotCertified(Box::new(done.clone())));
            }
            self.last_certified = Some(done);
            // Older pending heights will never matter more than this one.
            self.votes = self.votes.split_off(&(cp.height + 1));
        }
    }

    fn drain_core(&mut self) {
        // Leaders committed in a row (a round's slots often decide
        // together) share one signature batch: a larger multiscalar
        // multiplication costs less per point.
        let mut committed = Vec::new();
        while let Some(out) = self.core.poll_output() {
            if let Output::Committed(sub) = out {
                committed.push(sub);
                continue;
            }
            // Everything else comes after the heights before it.
            self.apply_all(std::mem::take(&mut committed));
            match out {
                Output::Broadcast(ev) => {
                    let round = ev.body.round;
                    self.effects
                        .push_back(Effect::PersistOwnThenBroadcast { round, event: ev });
                }
                Output::Rebroadcast(ev) => self
                    .effects
                    .push_back(Effect::Broadcast(PeerMessage::Events(vec![(*ev).clone()]))),
                Output::Fetch { refs, hint } => {
                    let msg = PeerMessage::Fetch(refs);
                    self.effects.push_back(match hint {
                        Some(to) if to != self.key => Effect::Send { to, msg },
                        _ => Effect::Broadcast(msg),
                    });
                }
                Output::Committed(_) => unreachable!("gathered above"),
                Output::SnapshotReached { snapshot } => {
                    // Every leader up to the snapshot is applied (heights
                    // apply as they commit), so this is the table at S.
                    match self.ledger.stake_table() {
                        Ok(c) => {
                            let members = c.members().to_vec();
                            self.core.set_committee(snapshot, c, self.now);
                            self.vote_handover(snapshot, members);
                        }
                        Err(e) => tracing::error!(snapshot, "no stake table: {e}"),
                    }
                }
                Output::RoundSequenced { .. } => self.vote_latest(),
                Output::Equivocation(_) => {}
            }
        }
        self.apply_all(committed);
        self.maybe_snapshot();
    }

    /// Every `snapshot_every` heights, at a height we voted on (so it can
    /// be certified), export the state. Called with the core drained, when
    /// the ledger has applied every height the core committed.
    fn maybe_snapshot(&mut self) {
        let h = self.ledger.height();
        if self.snapshot_every == 0
            || h < self.last_snapshot + self.snapshot_every
            || self.last_voted != h
        {
            return;
        }
        self.last_snapshot = h;
        let horizon = self.core.horizon();
        self.stats.snapshots += 1;
        self.snapshot_uncertified.push(h);
        if self.snapshot_uncertified.len() > 4 {
            self.snapshot_uncertified.remove(0);
        }
        self.effects
            .push_back(Effect::Snapshot { height: h, horizon });
    }

    /// Check the signatures of every transaction of `subs` in one batch,
    /// then apply the heights in order.
    fn apply_all(&mut self, subs: Vec<CommittedSubDag>) {
        if subs.is_empty() {
            return;
        }
        let max = self.ledger.params().max_tx_bytes as usize;
        let mut items = Vec::new();
        // Per height, per event: how many items.
        let mut counts: Vec<Vec<usize>> = Vec::with_capacity(subs.len());
        for sub in &subs {
            let mut of_sub = Vec::with_capacity(sub.events.len());
            for ve in &sub.events {
                let decoded = decode_payload(&ve.event.body.payload, max);
                of_sub.push(decoded.len());
                items.extend(decoded);
            }
            counts.push(of_sub);
        }
        // Our own mempool's transactions were verified when we took them.
        let queued = &self.queued;
        let mut admitted =
            authorize_batch_trusting(&items, &self.chain, &mut self.rng, &|tx, id| {
                queued.get(id) == Some(&tx.signature)
            })
            .into_iter();
        drop(items);
        for (sub, of_sub) in subs.into_iter().zip(counts) {
            let mut events = Vec::with_capacity(sub.events.len());
            for (ve, n) in sub.events.iter().zip(of_sub) {
                let of_event: Vec<Admitted> = admitted.by_ref().take(n).collect();
                for a in &of_event {
                    // Stale ids left in `queued_order` are harmless.
                    self.queued.remove(&a.id());
                }
                events.push((ve.id, of_event));
            }
            self.apply(sub, events);
        }
    }

    fn apply(&mut self, sub: CommittedSubDag, events: Vec<(EventId, Vec<Admitted>)>) {
        let record_events = sub
            .events
            .iter()
            .map(|ve| (ve.id, ve.event.body.payload.clone()))
            .collect();
        let input = HeightInput {
            height: sub.height,
            round: sub.leader.round,
            leader: sub.leader.id,
            events,
        };
        if let Some(hook) = &mut self.height_hook {
            hook(sub.height);
        }
        let out: HeightOutcome = match self.ledger.apply_height(&input) {
            Ok(o) => o,
            Err(e) => {
                // The in-memory ledger cannot fail short of a bug; stop
                // applying rather than diverge.
                tracing::error!(height = sub.height, "applying failed: {e}");
                return;
            }
        };
        self.stats.heights += 1;
        self.stats.txs_applied += out.applied as u64;
        self.stats.txs_rejected += out.rejected as u64;
        self.effects
            .push_back(Effect::Committed(Box::new(HeightRecord {
                height: sub.height,
                round: sub.leader.round,
                leader: sub.leader.id,
                events: record_events,
                roots: out.roots.clone(),
            })));
        if !out.outcomes.is_empty() {
            self.effects.push_back(Effect::Finalized {
                height: sub.height,
                outcomes: out.outcomes,
                created_for: out.created_for,
            });
        }
        self.last_applied = Some((sub.height, sub.leader.round, out.roots));
    }

    /// Sign the checkpoint of the last applied height, once per sequenced
    /// round (every peer sequences the same rounds, so all vote on the same
    /// heights; a vote per height cost a signature and three checks per
    /// height for no more safety).
    fn vote_latest(&mut self) {
        let Some((height, round, roots)) = self.last_applied.take() else {
            return;
        };
        let cp = Checkpoint {
            chain: self.chain,
            height,
            round,
            roots,
        };
        let sig = (self.sign)(Checkpoint::CONTEXT, &cp.digest());
        self.last_voted = height;
        self.voted.insert(height, cp.clone());
        while self.voted.len() > 64 {
            self.voted.pop_first();
        }

        self.votes.insert(height, Certified::new(cp.clone()));
        self.take_vote(self.key, cp.clone(), sig);
        // Votes that arrived before we got here.
        if let Some(early) = self.early_votes.remove(&height) {
            for (from, c, sig) in early {
                self.take_vote(from, c, sig);
            }
        }
        self.early_votes = self.early_votes.split_off(&height);
        self.effects
            .push_back(Effect::Broadcast(PeerMessage::CheckpointVote {
                checkpoint: Box::new(cp),
                signature: sig,
            }));
        // Votes for heights far behind are abandoned (bounded memory).
        while self.votes.len() > 64 {
            self.votes.pop_first();
        }
    }
}
