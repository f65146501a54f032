//! The simulation loop and its report.

use super::behaviour::Behavior;
use super::network::{Item, Msg, Queue};
use crate::committee::{Committee, Member, Round, Stake};
use crate::core::{Core, CoreConfig, CoreState, Output};
use crate::event::{Event, EventId};
use crate::id_map::IdMap;
use crate::identity::{
    verify_digest, Bytes64, EventSigner, PeerKey, Signer, VrfTicket, EVENT_CONTEXT,
};
use crate::pending::Millis;
use proofs::{Domain, Hash, Hasher};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIM_DOMAIN: Domain = Domain::new("pos/dag/sim/v1");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StakeDist {
    Uniform,
    Skewed,
}

impl std::str::FromStr for StakeDist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(StakeDist::Uniform),
            "skewed" => Ok(StakeDist::Skewed),
            _ => Err(format!("unknown stake distribution {s:?} (uniform|skewed)")),
        }
    }
}

/// How a partition divides the honest peers (Byzantine peers reach both sides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Two halves: with Byzantine stake near a third, neither side alone
    /// may hold a quorum, so commits can stop everywhere until it heals.
    Halves,
    /// A third of the honest peers (at least one) cut off from everyone
    /// else, who keep going; the cut-off peers must catch up afterwards.
    Minority,
}

impl Split {
    /// How many honest peers (the first ones) are on side 0.
    fn cut_off(self, honest: usize) -> usize {
        match self {
            Split::Halves => honest / 2,
            Split::Minority => (honest / 3).max(1),
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "halves" => Ok(Split::Halves),
            "minority" => Ok(Split::Minority),
            _ => Err(format!("unknown split {s:?} (halves|minority)")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub peers: usize,
    pub byzantine: usize,
    /// Stop once every live honest peer has sequenced this many rounds.
    pub rounds: Round,
    pub seed: u64,
    pub behavior: Behavior,
    pub stake: StakeDist,
    /// Probability that a message between two peers is lost.
    pub loss: f64,
    /// Partition the network (as `partition_split` says) from the time round
    /// A is reached, for as long as B − A rounds take at the nominal pace.
    pub partition: Option<(Round, Round)>,
    /// Which honest peers the partition cuts off (side 0) from the rest.
    pub partition_split: Split,
    pub min_delay_ms: Millis,
    pub max_delay_ms: Millis,
    pub gc_depth: Round,
    pub round_wait_ms: Millis,
    pub payload_bytes: usize,
    pub sync_interval_ms: Millis,
    /// Percentage of messages that take ten times their drawn delay.
    pub slow_percent: u32,
    /// Give up (liveness failure) after this much simulated time.
    pub max_sim_ms: Millis,
}

impl SimConfig {
    pub fn new(peers: usize, byzantine: usize, rounds: Round, seed: u64) -> Self {
        SimConfig {
            peers,
            byzantine,
            rounds,
            seed,
            behavior: Behavior::Mixed,
            stake: StakeDist::Uniform,
            loss: 0.0,
            partition: None,
            partition_split: Split::Halves,
            min_delay_ms: 5,
            max_delay_ms: 50,
            gc_depth: 50,
            round_wait_ms: 60,
            payload_bytes: 32,
            sync_interval_ms: 400,
            slow_percent: 5,
            max_sim_ms: rounds * 3_000 + 120_000,
        }
    }

    /// Nominal duration of a round (used to size the partition).
    fn nominal_round_ms(&self) -> Millis {
        self.max_delay_ms + self.round_wait_ms
    }
}

/// Called with the number of rounds every honest peer has sequenced.
pub trait Progress {
    fn update(&mut self, rounds_done: Round);
}

impl<F: FnMut(Round)> Progress for F {
    fn update(&mut self, rounds_done: Round) {
        self(rounds_done)
    }
}

#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub safety_ok: bool,
    /// First height where two honest peers disagree.
    pub divergence_height: Option<u64>,
    pub live: bool,
    pub committed_leaders: u64,
    pub skipped_leaders: u64,
    pub ordered_events: u64,
    pub latency_p50: u64,
    pub latency_p99: u64,
    /// Deliveries per second of wall time spent outside signing and the
    /// one-time verification.
    pub events_per_sec: f64,
    /// Deliveries per second of the whole run's wall time.
    pub wall_events_per_sec: f64,
    pub deliveries: u64,
    pub wall_secs: f64,
    pub crypto_secs: f64,
    pub peak_dag_events_in_memory: usize,
    pub sim_ms: Millis,
    pub equivocations_detected: u64,
    pub commits_after_heal: u64,
    pub restarts_from_state: u64,
    pub snapshot_changes: u64,
    /// Digest of the committed sequence of the first honest peer (for
    /// comparing runs).
    pub sequence_digest: Hash,
}

/// A signer that adds the time it spends to a shared counter.
struct TimedSigner {
    inner: Signer,
    spent: Rc<Cell<Duration>>,
}

impl EventSigner for TimedSigner {
    fn key(&self) -> PeerKey {
        self.inner.key()
    }
    fn sign_event(&mut self, id: &Hash) -> Bytes64 {
        let t = Instant::now();
        let s = self.inner.sign_event(id);
        self.spent.set(self.spent.get() + t.elapsed());
        s
    }
    fn vrf_ticket(&mut self, seed: &Hash, round: u64) -> (VrfTicket, u64) {
        let t = Instant::now();
        let v = EventSigner::vrf_ticket(&mut self.inner, seed, round);
        self.spent.set(self.spent.get() + t.elapsed());
        v
    }
}

struct Peer {
    core: Option<Core>,
    key: PeerKey,
    secret: [u8; 32],
    byz: Option<Behavior>,
    crash_at: Round,
    /// Signs equivocating twins (a second copy of the same key).
    twin_signer: Option<Signer>,
    twins: IdMap<EventId, (Arc<Event>, u64)>,
    /// Ticket values of our own events (verified once).
    own_tickets: IdMap<EventId, u64>,
    timer: Option<Millis>,
    next_height: u64,
    digest_acc: Hash,
    honest: bool,
    side: u8,
}

struct Sim<'a> {
    cfg: SimConfig,
    peers: Vec<Peer>,
    queue: Queue,
    rng: ChaCha8Rng,
    crypto: Rc<Cell<Duration>>,
    deliveries: u64,
    reference: Vec<Hash>,
    divergence: Option<u64>,
    latency: Vec<u64>,
    peak_mem: usize,
    equivocations: u64,
    partition_window: Option<(Millis, Millis)>,
    commits_after_heal: u64,
    restarts: u64,
    snapshot_changes: u64,
    core_cfg: CoreConfig,
    genesis_stakes: Vec<Stake>,
    progress: Option<&'a mut dyn Progress>,
    last_progress_round: Round,
    genesis: Committee,
    #[allow(clippy::type_complexity)]
    recording: Option<(Vec<(Arc<Event>, EventId, u64)>, Vec<Vec<Hash>>)>,
}

fn key_secret(seed: u64, i: usize) -> [u8; 32] {
    let mut h = Hasher::new(SIM_DOMAIN);
    h.update(b"key")
        .update(&seed.to_le_bytes())
        .update(&(i as u64).to_le_bytes());
    h.finalize().0
}

/// Stakes: honest ones by the distribution, the Byzantine ones (the last
/// `f`) sharing just under a third of the total.
fn draw_stakes(n: usize, f: usize, dist: StakeDist, rng: &mut ChaCha8Rng) -> Vec<Stake> {
    let honest: Vec<Stake> = (0..n - f)
        .map(|_| match dist {
            StakeDist::Uniform => 1000,
            StakeDist::Skewed => 1000 << (rng.next_u32() % 6),
        })
        .collect();
    let h: Stake = honest.iter().sum();
    let mut out = honest;
    if f > 0 {
        // B < (H + B) / 3  <=>  2B < H.
        let b_total = (h - 1) / 2;
        for i in 0..f {
            let share = b_total / f as Stake + Stake::from(i < (b_total % f as Stake) as usize);
            out.push(share.max(1));
        }
    }
    out
}

pub fn run(cfg: SimConfig, progress: Option<&mut dyn Progress>) -> SimReport {
    let wall = Instant::now();
    let mut sim = Sim::new(cfg, progress, false);
    sim.main_loop();
    sim.report(wall.elapsed())
}

/// Everything a run created, for replaying into other cores (tests).
pub struct Recording {
    pub report: SimReport,
    pub core_config: CoreConfig,
    pub genesis: Committee,
    /// Every event any peer created (equivocating twins included), each with
    /// its id and checked ticket value, in creation order.
    pub events: Vec<(Arc<Event>, EventId, u64)>,
    /// Each honest peer's committed sequence, one digest per height.
    pub sequences: Vec<Vec<Hash>>,
}

/// Run and record every event and every honest peer's sequence. Keep runs
/// short: the recording is kept in memory.
pub fn record(cfg: SimConfig) -> Recording {
    let wall = Instant::now();
    let mut sim = Sim::new(cfg, None, true);
    sim.main_loop();
    let report = sim.report(wall.elapsed());
    let (events, seqs) = sim.recording.take().expect("set above");
    let sequences = seqs
        .into_iter()
        .zip(&sim.peers)
        .filter(|(_, p)| p.honest)
        .map(|(s, _)| s)
        .collect();
    Recording {
        report,
        core_config: sim.core_cfg.clone(),
        genesis: sim.genesis.clone(),
        events,
        sequences,
    }
}

/// The digest the simulator compares per height: leader id, then the ids
/// of the events it orders.
pub fn commit_digest(c: &crate::committer::CommittedSubDag) -> Hash {
    let mut h = Hasher::new(SIM_DOMAIN);
    h.update(b"commit").update(&c.leader.id.0);
    for e in &c.events {
        h.update(&e.id.0);
    }
    h.finalize()
}

impl<'a> Sim<'a> {
    fn new(cfg: SimConfig, progress: Option<&'a mut dyn Progress>, record: bool) -> Self {
        assert!(
            cfg.peers >= 1 && cfg.byzantine < cfg.peers,
            "need at least one honest peer"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let n = cfg.peers;
        let f = cfg.byzantine;
        let stakes = draw_stakes(n, f, cfg.stake, &mut rng);
        let secrets: Vec<[u8; 32]> = (0..n).map(|i| key_secret(cfg.seed, i)).collect();
        let keys: Vec<PeerKey> = secrets
            .iter()
            .map(|s| Signer::from_seed(*s, [0; 32]).key())
            .collect();
        let committee = Committee::new(
            keys.iter()
                .zip(&stakes)
                .map(|(k, s)| Member { key: *k, stake: *s })
                .collect(),
        )
        .expect("simulated committee is valid");
        let chain = Hash::of(SIM_DOMAIN, &cfg.seed.to_le_bytes());
        let mut core_cfg = CoreConfig::new(chain);
        core_cfg.gc_depth = cfg.gc_depth;
        core_cfg.round_wait_ms = cfg.round_wait_ms;
        core_cfg.fetch_retry_ms = 4 * cfg.max_delay_ms + 20;
        core_cfg.rebroadcast_ms = 10 * cfg.nominal_round_ms();
        let crypto = Rc::new(Cell::new(Duration::ZERO));
        let honest_count = n - f;
        let mut peers = Vec::with_capacity(n);
        for i in 0..n {
            let byz = (i >= honest_count).then(|| cfg.behavior.of(i - honest_count));
            let crash_at = 5 + rng.next_u64() % (cfg.rounds / 2).max(1);
            let mut rng_seed = [0u8; 32];
            rng.fill_bytes(&mut rng_seed);
            let signer = TimedSigner {
                inner: Signer::from_seed(secrets[i], rng_seed),
                spent: crypto.clone(),
            };
            let core = Core::new(core_cfg.clone(), committee.clone(), Box::new(signer), 0);
            peers.push(Peer {
                core: Some(core),
                key: keys[i],
                secret: secrets[i],
                byz,
                crash_at,
                twin_signer: (byz == Some(Behavior::Equivocate))
                    .then(|| Signer::from_seed(secrets[i], rng_seed)),
                twins: IdMap::default(),
                own_tickets: IdMap::default(),
                timer: None,
                next_height: 1,
                digest_acc: chain,
                honest: byz.is_none(),
                side: u8::from(i >= cfg.partition_split.cut_off(honest_count) || byz.is_some()),
            });
        }
        let mut sim = Sim {
            cfg,
            peers,
            queue: Queue::default(),
            rng,
            crypto,
            deliveries: 0,
            reference: Vec::new(),
            divergence: None,
            latency: vec![0; 64],
            peak_mem: 0,
            equivocations: 0,
            partition_window: None,
            commits_after_heal: 0,
            restarts: 0,
            snapshot_changes: 0,
            core_cfg,
            genesis_stakes: stakes,
            progress,
            last_progress_round: 0,
            genesis: committee,
            recording: record.then(|| (Vec::new(), vec![Vec::new(); n])),
        };
        for i in 0..n {
            let t = sim.rng.next_u64() % sim.cfg.sync_interval_ms.max(1);
            sim.queue.push(t, Item::SyncTick { peer: i });
            sim.after_step(i, 0);
        }
        sim
    }

    fn partitioned(&self, a: usize, b: usize, now: Millis) -> bool {
        match self.partition_window {
            Some((s, e)) if now >= s && now < e => {
                let (pa, pb) = (&self.peers[a], &self.peers[b]);
                match self.cfg.partition_split {
                    // Byzantine peers bridge the halves (the worst case).
                    Split::Halves => pa.honest && pb.honest && pa.side != pb.side,
                    // The cut-off peers hear nobody, Byzantine peers included.
                    Split::Minority => pa.side != pb.side,
                }
            }
            _ => false,
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg, now: Millis) {
        if from == to || self.partitioned(from, to, now) {
            return;
        }
        if self.cfg.loss > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < self.cfg.loss {
            return;
        }
        let span = self.cfg.max_delay_ms.saturating_sub(self.cfg.min_delay_ms) + 1;
        let mut delay = self.cfg.min_delay_ms + self.rng.next_u64() % span;
        // A heavy tail: a few messages take many times longer.
        if self.rng.next_u32() % 100 < self.cfg.slow_percent {
            delay *= 10;
        }
        if self.peers[from].byz == Some(Behavior::Delay) {
            delay += 2 * self.cfg.nominal_round_ms();
        }
        self.queue
            .push(now + delay, Item::Deliver { to, from, msg });
    }

    fn index_of(&self, key: &PeerKey) -> Option<usize> {
        self.peers.iter().position(|p| p.key == *key)
    }

    fn random_other(&mut self, me: usize) -> usize {
        let n = self.peers.len();
        if n == 1 {
            return me;
        }
        let k = (self.rng.next_u64() % (n as u64 - 1)) as usize;
        if k >= me {
            k + 1
        } else {
            k
        }
    }

    /// Verify an event's signature and VRF ticket once; returns its ticket value.
    fn verify_once(&mut self, peer: usize, ev: &Event, id: &EventId) -> Option<u64> {
        let t = Instant::now();
        let core = self.peers[peer].core.as_ref()?;
        let seed = *core.seed(ev.body.round)?;
        let key = ev.body.creator.to_public().ok()?;
        let ok = verify_digest(&key, EVENT_CONTEXT, id, &ev.signature).is_ok();
        let value = ev.body.ticket.verify(&key, &seed, ev.body.round).ok();
        self.crypto.set(self.crypto.get() + t.elapsed());
        if ok {
            value
        } else {
            None
        }
    }

    fn main_loop(&mut self) {
        while let Some((now, item)) = self.queue.pop() {
            if now > self.cfg.max_sim_ms || self.divergence.is_some() {
                break;
            }
            let peer = match item {
                Item::Deliver { to, from, msg } => {
                    self.deliver(to, from, msg, now);
                    to
                }
                Item::Timer { peer } => {
                    if self.peers[peer].timer == Some(now) {
                        self.peers[peer].timer = None;
                        if let Some(c) = self.peers[peer].core.as_mut() {
                            c.handle_timeout(now);
                        }
                    }
                    peer
                }
                Item::SyncTick { peer } => {
                    if let Some(c) = self.peers[peer].core.as_ref() {
                        let frontier = c.frontier();
                        let horizon = c.horizon();
                        let to = self.random_other(peer);
                        self.send(peer, to, Msg::Sync(frontier, horizon), now);
                        self.queue
                            .push(now + self.cfg.sync_interval_ms, Item::SyncTick { peer });
                    }
                    peer
                }
            };
            self.after_step(peer, now);
            if self.done() {
                break;
            }
        }
    }

    fn done(&mut self) -> bool {
        let min = self
            .peers
            .iter()
            .filter(|p| p.honest)
            .filter_map(|p| p.core.as_ref())
            .map(|c| c.next_round())
            .min()
            .unwrap_or(0);
        if min > self.last_progress_round {
            self.last_progress_round = min;
            if let Some(p) = self.progress.as_mut() {
                p.update(min.min(self.cfg.rounds));
            }
        }
        min > self.cfg.rounds
    }

    fn deliver(&mut self, to: usize, from: usize, msg: Msg, now: Millis) {
        let from_key = self.peers[from].key;
        let both_honest = self.peers[from].honest && self.peers[to].honest;
        if self.peers[to].core.is_none() {
            return;
        }
        match msg {
            Msg::Event { ev, id, ticket } => {
                let core = self.peers[to].core.as_mut().expect("checked");
                self.deliveries += 1;
                let _ = core.receive_prechecked(now, ev, id, ticket, Some(from_key));
                self.peak_mem = self.peak_mem.max(core.events_in_memory());
            }
            Msg::Fetch(refs) => {
                let core = self.peers[to].core.as_ref().expect("checked");
                let mut found = Vec::new();
                for r in refs {
                    if let Some(v) = core.get_verified(&r.id) {
                        found.push((v.event.clone(), v.id, v.ticket_value));
                    } else if let Some((e, t)) = self.peers[to].twins.get(&r.id) {
                        found.push((e.clone(), r.id, *t));
                    }
                }
                for (ev, id, ticket) in found {
                    self.send(to, from, Msg::Event { ev, id, ticket }, now);
                }
            }
            Msg::Sync(frontier, their_horizon) => {
                let core = self.peers[to].core.as_ref().expect("checked");
                let horizon = core.horizon();
                // The highest round the asker holds (an empty DAG holds
                // nothing from its horizon on).
                let their_top = frontier
                    .iter()
                    .map(|(_, r)| *r)
                    .max()
                    .unwrap_or(their_horizon.saturating_sub(1));
                if both_honest && their_top + 1 < horizon {
                    // What the asker still lacks is below our horizon: we
                    // cannot fill the gap with events, so hand over our
                    // committed state and window instead.
                    let state = core.export_state();
                    let acc = self.peers[to].digest_acc;
                    self.restart_from(from, state, acc, now);
                    return;
                }
                let evs = core.events_missing_from(&frontier, 64);
                for v in evs {
                    let msg = Msg::Event {
                        ev: v.event,
                        id: v.id,
                        ticket: v.ticket_value,
                    };
                    self.send(to, from, msg, now);
                }
            }
        }
    }

    /// Replace peer `p`'s core by one started from `state`, keeping what only
    /// `p` knows: its own last round (so it never signs twice in a round).
    fn restart_from(&mut self, p: usize, mut state: CoreState, digest_acc: Hash, now: Millis) {
        let Some(old) = self.peers[p].core.as_ref() else {
            return;
        };
        // What only `p` knows: its own last event (so it never signs twice
        // in a round).
        let own = old.own_progress();
        // Every other restart starts without the DAG tail (committed state
        // and the ordered ids only) and must fetch the window itself.
        if self.restarts % 2 == 1 {
            state.recent.clear();
        }
        let mut rng_seed = [0u8; 32];
        self.rng.fill_bytes(&mut rng_seed);
        let signer = TimedSigner {
            inner: Signer::from_seed(self.peers[p].secret, rng_seed),
            spent: self.crypto.clone(),
        };
        let height = state.next_height;
        match Core::from_state(self.core_cfg.clone(), state, own, Box::new(signer), now) {
            Ok(core) => {
                let peer = &mut self.peers[p];
                peer.core = Some(core);
                peer.next_height = height;
                peer.digest_acc = digest_acc;
                self.restarts += 1;
                self.after_step(p, now);
            }
            Err(e) => panic!("peer {p} cannot start from a peer's exported state: {e}"),
        }
    }

    /// Drain peer `p`'s outputs and schedule its timer.
    fn after_step(&mut self, p: usize, now: Millis) {
        loop {
            let Some(core) = self.peers[p].core.as_mut() else {
                return;
            };
            let Some(out) = core.poll_output() else { break };
            match out {
                Output::Broadcast(ev) | Output::Rebroadcast(ev) => self.on_own_event(p, ev, now),
                Output::Fetch { refs, hint } => {
                    let to = match hint.and_then(|k| self.index_of(&k)) {
                        Some(i) if i != p && !self.rng.next_u32().is_multiple_of(4) => i,
                        _ => self.random_other(p),
                    };
                    self.send(p, to, Msg::Fetch(refs), now);
                }
                Output::Committed(c) => self.on_commit(p, c, now),
                Output::RoundSequenced { .. } => {}
                Output::SnapshotReached { snapshot } => {
                    let table = self.stake_table(p, snapshot);
                    self.snapshot_changes += u64::from(self.peers[p].honest && p == 0);
                    if let Some(core) = self.peers[p].core.as_mut() {
                        core.set_committee(snapshot, table, now);
                    }
                }
                Output::Equivocation(ev) => {
                    debug_assert!(ev.is_valid());
                    if self.peers[p].honest {
                        self.equivocations += 1;
                    }
                }
            }
        }
        let Some(core) = self.peers[p].core.as_ref() else {
            return;
        };
        let quorum_round = core.quorum_round().unwrap_or(0);
        if let Some(t) = core.poll_timeout() {
            let t = t.max(now + 1);
            if self.peers[p].timer != Some(t) {
                self.peers[p].timer = Some(t);
                self.queue.push(t, Item::Timer { peer: p });
            }
        }
        if let Some((a, b)) = self.cfg.partition {
            if self.partition_window.is_none() && self.peers[p].honest && quorum_round >= a {
                let len = (b.saturating_sub(a)) * self.cfg.nominal_round_ms();
                self.partition_window = Some((now, now + len));
            }
        }
    }

    fn on_own_event(&mut self, p: usize, ev: Arc<Event>, now: Millis) {
        let n = self.peers.len();
        let byz = self.peers[p].byz;
        if byz == Some(Behavior::Crash) && ev.body.round >= self.peers[p].crash_at {
            self.peers[p].core = None;
            return;
        }
        let id = ev.id();
        let ticket = match self.peers[p].own_tickets.get(&id) {
            Some(t) => *t,
            None => match self.verify_once(p, &ev, &id) {
                Some(t) => {
                    self.peers[p].own_tickets.insert(id, t);
                    if let Some((evs, _)) = self.recording.as_mut() {
                        evs.push((ev.clone(), id, t));
                    }
                    t
                }
                None => return,
            },
        };
        // Forget tickets of events that fell below the horizon.
        if let Some(h) = self.peers[p].core.as_ref().map(|c| c.horizon()) {
            if self.peers[p].own_tickets.len() > 4 * self.cfg.gc_depth as usize {
                let core = self.peers[p].core.as_ref().expect("checked");
                let keep: Vec<EventId> = self.peers[p]
                    .own_tickets
                    .keys()
                    .filter(|i| core.get_event(i).is_some())
                    .copied()
                    .collect();
                self.peers[p].own_tickets.retain(|i, _| keep.contains(i));
                self.peers[p].twins.retain(|_, (e, _)| e.body.round >= h);
            }
        }
        let all: Vec<usize> = (0..n).filter(|&to| to != p).collect();
        match byz {
            Some(Behavior::Equivocate) => {
                // The original to even peers, the twin to odd ones.
                let (even, odd): (Vec<usize>, Vec<usize>) =
                    all.iter().partition(|&&to| to % 2 == 0);
                self.send_to(p, &even, &ev, id, ticket, now);
                if let Some((tw, tid, tt)) = self.make_twin(p, &ev) {
                    self.send_to(p, &odd, &tw, tid, tt, now);
                }
            }
            Some(Behavior::Withhold) => {
                // A third of the other peers, distinct, chosen afresh each round.
                let k = n.div_ceil(3).max(1).min(n - 1);
                let mut chosen: Vec<usize> = Vec::with_capacity(k);
                while chosen.len() < k {
                    let to = self.random_other(p);
                    if !chosen.contains(&to) {
                        chosen.push(to);
                    }
                }
                self.send_to(p, &chosen, &ev, id, ticket, now);
            }
            _ => self.send_to(p, &all, &ev, id, ticket, now),
        }
    }

    fn send_to(
        &mut self,
        from: usize,
        to: &[usize],
        ev: &Arc<Event>,
        id: EventId,
        ticket: u64,
        now: Millis,
    ) {
        for &t in to {
            let msg = Msg::Event {
                ev: ev.clone(),
                id,
                ticket,
            };
            self.send(from, t, msg, now);
        }
    }

    /// A second, different event for the same round, validly signed.
    fn make_twin(&mut self, p: usize, ev: &Event) -> Option<(Arc<Event>, EventId, u64)> {
        let mut body = ev.body.clone();
        body.payload.push(0xEE);
        // Vote differently too: drop one other author's parent from the
        // previous round when the rest still carries a quorum, so the two
        // halves of the network see this author support different slots.
        if let Some(core) = self.peers[p].core.as_ref() {
            if let Some(prev) = body.round.checked_sub(1).and_then(|r| core.committee(r)) {
                let me = prev.index_of(&body.creator);
                let candidates: Vec<usize> = (0..body.parents.len())
                    .filter(|&i| {
                        body.parents[i].round + 1 == body.round
                            && Some(body.parents[i].author) != me
                    })
                    .collect();
                if !candidates.is_empty() {
                    let drop = candidates[(self.rng.next_u64() % candidates.len() as u64) as usize];
                    let stake: u64 = body
                        .parents
                        .iter()
                        .enumerate()
                        .filter(|(i, x)| *i != drop && x.round + 1 == body.round)
                        .map(|(_, x)| prev.stake(x.author))
                        .sum();
                    if prev.is_quorum(stake) {
                        body.parents.remove(drop);
                    }
                }
            }
        }
        let id = body.id();
        let t = Instant::now();
        let signer = self.peers[p].twin_signer.as_mut()?;
        let signature = signer.sign_digest(EVENT_CONTEXT, &id);
        self.crypto.set(self.crypto.get() + t.elapsed());
        let twin = Arc::new(Event { body, signature });
        let ticket = self.verify_once(p, &twin, &id)?;
        if let Some((evs, _)) = self.recording.as_mut() {
            evs.push((twin.clone(), id, ticket));
        }
        self.peers[p].twins.insert(id, (twin.clone(), ticket));
        Some((twin, id, ticket))
    }

    fn on_commit(&mut self, p: usize, c: crate::committer::CommittedSubDag, now: Millis) {
        let digest = commit_digest(&c);
        // Byzantine peers run honest cores underneath and need the same
        // stake tables, which derive from this running digest.
        let peer = &mut self.peers[p];
        peer.digest_acc = Hash::of(SIM_DOMAIN, &[peer.digest_acc.0, digest.0].concat());
        if !peer.honest {
            return;
        }
        if let Some((_, seqs)) = self.recording.as_mut() {
            seqs[p].push(digest);
        }
        let peer = &mut self.peers[p];
        if c.height != peer.next_height {
            // A gap in one peer's own sequence is a violation too.
            self.divergence
                .get_or_insert(c.height.min(peer.next_height));
        }
        peer.next_height = c.height + 1;
        // Heights count from 1; the reference is indexed from 0.
        let hgt = c.height.saturating_sub(1) as usize;
        if c.height == 0 {
            self.divergence.get_or_insert(0);
        } else if hgt < self.reference.len() {
            if self.reference[hgt] != digest {
                self.divergence.get_or_insert(c.height);
            }
        } else if hgt == self.reference.len() {
            self.reference.push(digest);
        } else {
            self.divergence.get_or_insert(c.height);
        }
        if let Some((_, end)) = self.partition_window {
            if now >= end && self.peers[p].side == 0 {
                self.commits_after_heal += 1;
            }
        }
        let q = self.peers[p]
            .core
            .as_ref()
            .and_then(|c| c.quorum_round())
            .unwrap_or(0);
        let honest_keys = self.peers.iter().filter(|x| x.honest).count();
        for e in &c.events {
            let creator = self
                .peers
                .iter()
                .position(|x| x.key == e.event.body.creator);
            if creator.is_some_and(|i| i < honest_keys) {
                let lat = q.saturating_sub(e.round()) as usize;
                let lat = lat.min(self.latency.len() - 1);
                self.latency[lat] += 1;
            }
        }
    }

    /// The "ledger" of the simulation: the stake table at a snapshot is a
    /// deterministic function of the committed sequence so far, so honest
    /// peers agree on it exactly when their sequences agree. Honest stakes
    /// are redrawn; Byzantine ones again share just under a third.
    fn stake_table(&self, p: usize, snapshot: Round) -> Committee {
        let acc = self.peers[p].digest_acc;
        let mut seed = [0u8; 32];
        seed.copy_from_slice(
            &Hash::of(SIM_DOMAIN, &[&acc.0[..], &snapshot.to_le_bytes()].concat()).0,
        );
        let mut rng = ChaCha8Rng::from_seed(seed);
        let n = self.peers.len();
        let f = self.cfg.byzantine;
        let mut stakes = draw_stakes(n, f, StakeDist::Skewed, &mut rng);
        // Make sure the table really changes from genesis.
        if stakes == self.genesis_stakes {
            stakes[0] += 1000;
            let h: Stake = stakes[..n - f].iter().sum();
            if f > 0 {
                let b_total = (h - 1) / 2;
                for (i, s) in stakes[n - f..].iter_mut().enumerate() {
                    *s = (b_total / f as Stake + Stake::from(i < (b_total % f as Stake) as usize))
                        .max(1);
                }
            }
        }
        Committee::new(
            self.peers
                .iter()
                .zip(stakes)
                .map(|(x, s)| Member {
                    key: x.key,
                    stake: s,
                })
                .collect(),
        )
        .expect("simulated committee is valid")
    }

    fn report(&self, wall: Duration) -> SimReport {
        let first = self
            .peers
            .iter()
            .find(|p| p.honest)
            .expect("at least one honest peer");
        let stats = first
            .core
            .as_ref()
            .map(|c| c.stats().clone())
            .unwrap_or_default();
        let total: u64 = self.latency.iter().sum();
        let pct = |q: f64| -> u64 {
            let target = (total as f64 * q).ceil() as u64;
            let mut acc = 0;
            for (i, c) in self.latency.iter().enumerate() {
                acc += c;
                if acc >= target.max(1) {
                    return i as u64;
                }
            }
            0
        };
        let wall_secs = wall.as_secs_f64();
        let crypto_secs = self.crypto.get().as_secs_f64();
        let core_secs = (wall_secs - crypto_secs).max(1e-9);
        let live = self
            .peers
            .iter()
            .filter(|p| p.honest)
            .filter_map(|p| p.core.as_ref())
            .all(|c| c.next_round() > self.cfg.rounds);
        SimReport {
            safety_ok: self.divergence.is_none(),
            divergence_height: self.divergence,
            live,
            committed_leaders: stats.committed_leaders,
            skipped_leaders: stats.skipped_leaders,
            ordered_events: stats.ordered_events,
            latency_p50: pct(0.5),
            latency_p99: pct(0.99),
            events_per_sec: self.deliveries as f64 / core_secs,
            wall_events_per_sec: self.deliveries as f64 / wall_secs.max(1e-9),
            deliveries: self.deliveries,
            wall_secs,
            crypto_secs,
            peak_dag_events_in_memory: self.peak_mem,
            sim_ms: 0,
            equivocations_detected: self.equivocations,
            commits_after_heal: self.commits_after_heal,
            restarts_from_state: self.restarts,
            snapshot_changes: self.snapshot_changes,
            sequence_digest: first.digest_acc,
        }
    }
}
