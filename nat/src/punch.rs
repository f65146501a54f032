//! One attempt to link two wallets: hole punching, port probing against a
//! NAT whose mapping varies by destination, the relay as fallback, and
//! keepalives, as a sans-IO state machine in the style of quinn-proto.
//!
//! The rendezvous (through the wallets' peers) gives both sides a [`Plan`]:
//! the attempt's id and key, the other side's candidate addresses, both
//! NATs' mapping behaviour and a start time. From then on [`Punch`] is
//! driven by the datagrams it is handed ([`Punch::handle`]) and the clock
//! ([`Punch::handle_timeout`]); it hands back datagrams to send
//! ([`Punch::poll_transmit`]) and [`Event`]s. It owns no socket and reads
//! no clock, so a simulation drives two of them through modelled NATs.
//!
//! Datagrams (raw: first byte below QUIC's fixed bit, 37 bytes each):
//! `0x03` introduction, `0x04` acknowledgement, `0x05` nomination (an
//! introduction on the path the sender chose), then the 16-byte attempt
//! id, a 4-byte big-endian sequence number and a 16-byte tag, keyed
//! BLAKE2b over the first 21 bytes with the attempt key. An acknowledgement
//! echoes the sequence number of the introduction it answers; only an
//! acknowledgement of a sequence number this side sent recently, and not
//! acknowledged before, proves a path. The tag keeps off-path senders out;
//! the peers that relayed the key could forge it, which is why the channel
//! above authenticates the wallets' login keys end to end.
//!
//! Sockets: [`SocketId::MAIN`] is the process's one socket. Only when this
//! side's NAT maps by destination and the other's does not does a plan ask
//! for more ([`Plan::probe_sockets`]): each extra socket gets its own
//! mapping toward the other side, which then probes random ports of this
//! side's public address until one hits. The socket of the path that wins
//! carries the link; the driver may close the others on
//! [`Event::ReleaseSockets`].

pub use dag::rendezvous::{Candidate, CandidateKind, Mapping, MAX_CANDIDATES};

use blake2b_simd::Params;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// First byte of an introduction.
pub const INTRO: u8 = 0x03;
/// First byte of an acknowledgement.
pub const ACK: u8 = 0x04;
/// First byte of a nomination: an introduction sent on the path this side
/// chose (when it chooses it, and as its keepalives), so that the other
/// side sends on the same path.
pub const NOMINATE: u8 = 0x05;
/// Length of both.
pub const PUNCH_LEN: usize = 37;

const TAG_LEN: usize = 16;
const PERSONAL: &[u8; 16] = b"pos/nat/punch/v1";
/// Sequence numbers whose acknowledgement is still taken (a bitset of this
/// many bits per attempt).
const ACK_WINDOW: u32 = 1 << 14;

/// One of the driver's sockets: 0 is the main socket, others the extra ones
/// a probing attempt asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u16);

impl SocketId {
    pub const MAIN: SocketId = SocketId(0);
}

/// What the rendezvous told this side.
#[derive(Clone, Debug)]
pub struct Plan {
    pub attempt: [u8; 16],
    pub key: [u8; 32],
    /// The other side's candidates (the first [`MAX_CANDIDATES`] are used).
    pub remote: Vec<Candidate>,
    pub local_mapping: Mapping,
    pub remote_mapping: Mapping,
    /// When both sides begin to send.
    pub start: Instant,
    /// Whether the peers can relay this link if no direct path works.
    pub relay: bool,
}

/// Timings and budgets.
#[derive(Clone, Debug)]
pub struct Config {
    /// Introductions to every candidate, this often.
    pub interval: Duration,
    /// Give up on a direct path this long after the start.
    pub direct_timeout: Duration,
    /// Extra sockets (mappings) the side behind a destination-dependent NAT
    /// opens toward the other side.
    pub probe_sockets: u16,
    /// How often those mappings are refreshed while probing.
    pub probe_refresh: Duration,
    /// Probes the easy side sends to random ports, at most.
    pub probe_budget: u32,
    /// Probes per tick, and the tick.
    pub probe_batch: u32,
    pub probe_tick: Duration,
    /// The lowest port a NAT hands out (Linux: 1024 for an unprivileged
    /// source port).
    pub probe_min_port: u16,
    /// On a working direct path, an introduction this often keeps the NAT
    /// mappings open (at most 25 s: NATs forget idle UDP after 30 s).
    pub keepalive: Duration,
    /// Missed keepalive acknowledgements before the path counts as lost.
    pub keepalive_misses: u32,
    /// On the relay, try a direct path again this often (a NAT rebooted,
    /// a firewall opened, a wallet moved)…
    pub direct_retry: Duration,
    /// …with this many rounds of introductions, `interval` apart.
    pub retry_rounds: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            interval: Duration::from_millis(100),
            direct_timeout: Duration::from_secs(10),
            probe_sockets: 256,
            probe_refresh: Duration::from_secs(1),
            probe_budget: 8192,
            probe_batch: 16,
            probe_tick: Duration::from_millis(10),
            probe_min_port: 1024,
            keepalive: Duration::from_secs(15),
            keepalive_misses: 3,
            direct_retry: Duration::from_secs(30),
            retry_rounds: 10,
        }
    }
}

/// How this side behaves, from the two mappings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Introductions to every candidate from the main socket.
    Plain,
    /// Behind a destination-dependent NAT facing one that is not: also
    /// open many mappings toward the other side from extra sockets.
    Hard,
    /// Facing a destination-dependent NAT from behind one that is not:
    /// also probe random ports of the other side's public address.
    Easy,
}

impl Plan {
    pub fn role(&self) -> Role {
        use Mapping::*;
        match (self.local_mapping, self.remote_mapping) {
            (Dependent, Independent) => Role::Hard,
            (Independent, Dependent) => Role::Easy,
            _ => Role::Plain,
        }
    }

    /// Extra sockets the driver should open before [`Punch::new`].
    pub fn probe_sockets(&self, config: &Config) -> u16 {
        if self.role() == Role::Hard {
            config.probe_sockets
        } else {
            0
        }
    }
}

/// A working path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Datagrams from this socket to this address reach the other side,
    /// and its datagrams to us arrive from there.
    Direct { socket: SocketId, addr: SocketAddr },
    /// Through the peers.
    Relayed,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("no direct path within {timeout_ms} ms ({sent} introductions sent, {heard} heard from the other side) and no relay")]
    NoPath {
        timeout_ms: u64,
        sent: u64,
        heard: u64,
    },
    #[error("the direct path stopped answering keepalives and there is no relay")]
    Lost,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The link may use this path. Comes again when the path changes: a
    /// link may start on the relay and move to a direct path.
    Connected(Path),
    /// No direct path within the timeout: the link stays on (or should be
    /// moved to) the relay.
    DirectGaveUp,
    /// The direct path stopped answering keepalives; the link should move
    /// to the relay (it is already there when [`Event::Connected`] with
    /// [`Path::Relayed`] follows).
    DirectLost,
    /// Extra sockets other than the one in the path are no longer needed.
    ReleaseSockets,
    /// The attempt is over without a path.
    Failed(Failure),
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub socket: SocketId,
    pub to: SocketAddr,
    pub bytes: [u8; PUNCH_LEN],
}

/// Counters for the attempt (figures, and the failure message).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub intros_sent: u64,
    pub probes_sent: u64,
    pub acks_sent: u64,
    pub intros_heard: u64,
    pub acks_heard: u64,
    /// Datagrams of this attempt with a bad tag, or unknown or stale
    /// sequence numbers.
    pub rejected: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Sending introductions (and probes).
    Punching,
    /// No longer trying: the relay is the path (once it is up).
    Relayed,
    Direct {
        socket: SocketId,
        addr: SocketAddr,
        /// When the last acknowledgement came.
        heard: Instant,
    },
    Done,
}

/// One link attempt. See the module documentation.
pub struct Punch {
    plan: Plan,
    config: Config,
    role: Role,
    /// The extra sockets the driver opened for this attempt.
    sockets: Vec<SocketId>,
    state: State,
    relay_up: bool,
    rng: ChaCha12Rng,
    next_seq: u32,
    /// Bit `seq % ACK_WINDOW`: sent and not yet acknowledged.
    pending: Vec<u64>,
    next_round: Instant,
    next_refresh: Instant,
    next_probe: Instant,
    probes_left: u32,
    /// Public IPs of the other side, the targets of port probes.
    probe_ips: Vec<IpAddr>,
    /// Last triggered introduction per (socket, address), bounded.
    triggered: VecDeque<(SocketId, SocketAddr, Instant)>,
    /// On the relay: when the next try for a direct path starts, and the
    /// rounds of introductions left in the current one.
    retry_at: Option<Instant>,
    retry_left: u32,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Punch {
    /// `sockets` are the extra sockets opened for it (as many as
    /// [`Plan::probe_sockets`] asks, or fewer);
    /// `seed` seeds the probe ports (from the OS in the wallet, fixed in a
    /// simulation).
    pub fn new(plan: Plan, config: Config, sockets: Vec<SocketId>, seed: u64) -> Punch {
        let mut plan = plan;
        plan.remote.truncate(MAX_CANDIDATES);
        let role = plan.role();
        let mut probe_ips: Vec<IpAddr> = plan
            .remote
            .iter()
            .filter(|c| c.kind == CandidateKind::Reflexive)
            .map(|c| c.addr.ip())
            .collect();
        probe_ips.dedup();
        let probes_left = if role == Role::Easy && !probe_ips.is_empty() {
            config.probe_budget
        } else {
            0
        };
        let start = plan.start;
        Punch {
            role,
            sockets: if role == Role::Hard {
                sockets
            } else {
                Vec::new()
            },
            state: State::Punching,
            relay_up: false,
            rng: ChaCha12Rng::seed_from_u64(seed),
            next_seq: 0,
            pending: vec![0; (ACK_WINDOW / 64) as usize],
            next_round: start,
            next_refresh: start,
            next_probe: start,
            probes_left,
            probe_ips,
            triggered: VecDeque::new(),
            retry_at: None,
            retry_left: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            plan,
            config,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The current path, if any.
    pub fn path(&self) -> Option<Path> {
        match self.state {
            State::Direct { socket, addr, .. } => Some(Path::Direct { socket, addr }),
            State::Relayed | State::Punching if self.relay_up => Some(Path::Relayed),
            _ => None,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether `datagram` belongs to this attempt (an introduction or an
    /// acknowledgement carrying its id), so a driver with several attempts
    /// knows which to hand it to. The tag is checked by [`Punch::handle`].
    pub fn owns(&self, datagram: &[u8]) -> bool {
        datagram.len() == PUNCH_LEN
            && matches!(datagram[0], INTRO | ACK | NOMINATE)
            && datagram[1..17] == self.plan.attempt
    }

    /// The relay works: if no direct path works yet, use it meanwhile.
    pub fn relay_ready(&mut self) {
        if self.relay_up || self.state == State::Done {
            return;
        }
        self.relay_up = true;
        if matches!(self.state, State::Punching | State::Relayed) {
            self.events.push_back(Event::Connected(Path::Relayed));
        }
    }

    /// A datagram of this attempt arrived on `socket` from `from`. Returns
    /// whether it was taken (a valid introduction or acknowledgement).
    pub fn handle(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        datagram: &[u8],
    ) -> bool {
        if self.state == State::Done || !self.owns(datagram) {
            return false;
        }
        let mut seq_bytes = [0u8; 4];
        seq_bytes.copy_from_slice(&datagram[17..21]);
        let seq = u32::from_be_bytes(seq_bytes);
        if tag(&self.plan.key, &datagram[..21]) != datagram[21..] {
            self.stats.rejected += 1;
            return false;
        }
        if datagram[0] == INTRO || datagram[0] == NOMINATE {
            self.stats.intros_heard += 1;
            self.send(socket, from, ACK, seq);
            self.stats.acks_sent += 1;
            // A triggered introduction back on the same path lets the other
            // side prove it too, without waiting for our next round.
            if matches!(self.state, State::Punching | State::Relayed)
                && self.may_trigger(now, socket, from)
            {
                self.intro(socket, from);
                self.stats.intros_sent += 1;
            }
            return true;
        }
        if !self.take_pending(seq) {
            self.stats.rejected += 1;
            return false;
        }
        self.stats.acks_heard += 1;
        match self.state {
            State::Punching | State::Relayed => {
                self.state = State::Direct {
                    socket,
                    addr: from,
                    heard: now,
                };
                // Queued introductions, probes and retries are moot now.
                self.transmits.retain(|t| t.bytes[0] == ACK);
                self.probes_left = 0;
                self.retry_left = 0;
                self.retry_at = None;
                self.next_round = now + self.config.keepalive;
                // A nomination on the chosen path at once: the other side
                // learns which of the paths that work this side uses
                // (several may, after probing), before anything else
                // arrives on it.
                self.nominate(socket, from);
                self.stats.intros_sent += 1;
                self.events
                    .push_back(Event::Connected(Path::Direct { socket, addr: from }));
                if !self.sockets.is_empty() {
                    self.events.push_back(Event::ReleaseSockets);
                }
            }
            State::Direct {
                socket: s, addr: a, ..
            } if s == socket && a == from => {
                self.state = State::Direct {
                    socket,
                    addr: from,
                    heard: now,
                };
            }
            // An acknowledgement on another path: the one in use stays.
            State::Direct { .. } | State::Done => {}
        }
        true
    }

    /// When [`Punch::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Done => None,
            State::Relayed if self.retry_left > 0 => Some(self.next_round),
            State::Relayed => self.retry_at,
            State::Direct { heard, .. } => Some(self.next_round.min(self.lost_at(heard))),
            State::Punching => {
                let mut t = self
                    .next_round
                    .min(self.plan.start + self.config.direct_timeout);
                if !self.sockets.is_empty() {
                    t = t.min(self.next_refresh);
                }
                if self.probes_left > 0 {
                    t = t.min(self.next_probe);
                }
                Some(t)
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Done => {}
            State::Relayed => self.retry_direct(now),
            State::Direct {
                socket,
                addr,
                heard,
            } => {
                if now >= self.lost_at(heard) {
                    self.transmits.clear();
                    if self.plan.relay || self.relay_up {
                        self.state = State::Relayed;
                        self.retry_at = Some(now + self.config.direct_retry);
                        self.events.push_back(Event::DirectLost);
                        if self.relay_up {
                            self.events.push_back(Event::Connected(Path::Relayed));
                        }
                    } else {
                        self.state = State::Done;
                        self.events.push_back(Event::Failed(Failure::Lost));
                    }
                    return;
                }
                if now >= self.next_round {
                    self.nominate(socket, addr);
                    self.stats.intros_sent += 1;
                    self.next_round = now + self.config.keepalive;
                }
            }
            State::Punching => {
                if now < self.plan.start {
                    return;
                }
                if now >= self.plan.start + self.config.direct_timeout {
                    self.transmits.clear();
                    self.probes_left = 0;
                    if self.relay_up || self.plan.relay {
                        self.state = State::Relayed;
                        self.retry_at = Some(now + self.config.direct_retry);
                        self.events.push_back(Event::DirectGaveUp);
                    } else {
                        self.state = State::Done;
                        self.events.push_back(Event::Failed(Failure::NoPath {
                            timeout_ms: self.config.direct_timeout.as_millis() as u64,
                            sent: self.stats.intros_sent + self.stats.probes_sent,
                            heard: self.stats.intros_heard,
                        }));
                    }
                    if !self.sockets.is_empty() {
                        self.events.push_back(Event::ReleaseSockets);
                    }
                    return;
                }
                if now >= self.next_round {
                    for i in 0..self.plan.remote.len() {
                        let to = self.plan.remote[i].addr;
                        self.intro(SocketId::MAIN, to);
                        self.stats.intros_sent += 1;
                    }
                    self.next_round = now + self.config.interval;
                }
                if !self.sockets.is_empty() && now >= self.next_refresh {
                    for k in 0..self.sockets.len() {
                        let s = self.sockets[k];
                        for i in 0..self.plan.remote.len() {
                            let c = self.plan.remote[i];
                            if c.kind == CandidateKind::Reflexive {
                                self.intro(s, c.addr);
                                self.stats.intros_sent += 1;
                            }
                        }
                    }
                    self.next_refresh = now + self.config.probe_refresh;
                }
                if self.probes_left > 0 && now >= self.next_probe {
                    let span = u32::from(u16::MAX - self.config.probe_min_port) + 1;
                    for _ in 0..self.config.probe_batch.min(self.probes_left) {
                        let ip =
                            self.probe_ips[self.rng.next_u32() as usize % self.probe_ips.len()];
                        let port = self.config.probe_min_port as u32 + self.rng.next_u32() % span;
                        self.intro(SocketId::MAIN, SocketAddr::new(ip, port as u16));
                        self.stats.probes_sent += 1;
                        self.probes_left -= 1;
                    }
                    self.next_probe = now + self.config.probe_tick;
                }
            }
        }
    }

    /// On the relay: every `direct_retry`, a few rounds of introductions
    /// to the other side's candidates from the main socket (both sides
    /// keep the same schedule from the common start, so their rounds
    /// overlap as the first punch did). An acknowledgement moves the link
    /// to the path it proves ([`Event::Connected`]); probing is not
    /// repeated.
    fn retry_direct(&mut self, now: Instant) {
        if self.retry_left == 0 {
            match self.retry_at {
                Some(t) if now >= t => {
                    self.retry_left = self.config.retry_rounds;
                    self.next_round = now;
                }
                _ => return,
            }
        }
        if now < self.next_round {
            return;
        }
        for i in 0..self.plan.remote.len() {
            let to = self.plan.remote[i].addr;
            self.intro(SocketId::MAIN, to);
            self.stats.intros_sent += 1;
        }
        self.retry_left -= 1;
        self.next_round = now + self.config.interval;
        if self.retry_left == 0 {
            self.retry_at = Some(now + self.config.direct_retry);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn lost_at(&self, heard: Instant) -> Instant {
        heard + self.config.keepalive * (self.config.keepalive_misses + 1)
    }

    fn may_trigger(&mut self, now: Instant, socket: SocketId, to: SocketAddr) -> bool {
        while let Some(&(_, _, t)) = self.triggered.front() {
            if now.duration_since(t) >= self.config.interval || self.triggered.len() > 64 {
                self.triggered.pop_front();
            } else {
                break;
            }
        }
        if self
            .triggered
            .iter()
            .any(|&(s, a, _)| s == socket && a == to)
        {
            return false;
        }
        self.triggered.push_back((socket, to, now));
        true
    }

    fn intro(&mut self, socket: SocketId, to: SocketAddr) {
        self.introduce(socket, to, INTRO);
    }

    fn nominate(&mut self, socket: SocketId, to: SocketAddr) {
        self.introduce(socket, to, NOMINATE);
    }

    fn introduce(&mut self, socket: SocketId, to: SocketAddr, kind: u8) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let bit = seq % ACK_WINDOW;
        self.pending[(bit / 64) as usize] |= 1 << (bit % 64);
        self.send(socket, to, kind, seq);
    }

    /// Clear and report the pending bit of `seq`, if it is within the
    /// window of recent sequence numbers.
    fn take_pending(&mut self, seq: u32) -> bool {
        let age = self.next_seq.wrapping_sub(seq);
        if age == 0 || age > ACK_WINDOW {
            return false;
        }
        let bit = seq % ACK_WINDOW;
        let word = &mut self.pending[(bit / 64) as usize];
        let mask = 1u64 << (bit % 64);
        let was = *word & mask != 0;
        *word &= !mask;
        was
    }

    fn send(&mut self, socket: SocketId, to: SocketAddr, kind: u8, seq: u32) {
        let mut bytes = [0u8; PUNCH_LEN];
        bytes[0] = kind;
        bytes[1..17].copy_from_slice(&self.plan.attempt);
        bytes[17..21].copy_from_slice(&seq.to_be_bytes());
        let t = tag(&self.plan.key, &bytes[..21]);
        bytes[21..].copy_from_slice(&t);
        self.transmits.push_back(Transmit { socket, to, bytes });
    }
}

fn tag(key: &[u8; 32], body: &[u8]) -> [u8; TAG_LEN] {
    let h = Params::new()
        .hash_length(TAG_LEN)
        .key(key)
        .personal(PERSONAL)
        .hash(body);
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(h.as_bytes());
    out
}
