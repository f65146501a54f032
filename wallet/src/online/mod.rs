//! `wallet online`: the wallet kept logged in and reachable. It holds one
//! UDP socket (the `nat` transport) for everything: the QUIC link to its
//! peer, the address echoes that find its public address, the
//! introductions of hole punching, and the QUIC links to other wallets.
//!
//! To link with `B@Q` it asks its peer (`Reach`) with its half of the
//! attempt (candidates, NAT mapping, the attempt's id and key); when the
//! answer comes (`Reached`, carrying B's half and Q's voucher for B's login
//! key) it runs `nat::punch` and, once a path works both ways, dials B over
//! QUIC on that path, expecting exactly the vouched key. Introduced by its
//! peer to another wallet, it answers with its own half and punches too;
//! the dialling wallet's key was vouched for by that wallet's peer. What
//! the two wallets then say to each other ([`DirectMessage`]) is theirs.
//! An invitation into a room (`invites.rs`) links to the room's owner the
//! same way, but with the two halves passed over wallet links, no peer.
//!
//! Other commands reach it through `W/online.sock` ([`crate::control`]).

mod incoming;
mod invites;
mod pay;
mod rooms;
mod roots;

use crate::chain::ChainState;
use crate::control::{self, MAX_LINE};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use dag::identity::{PeerKey, Signer};
use dag::ledger::genesis::Genesis;
use dag::ledger::names::{NameVoucher, WalletName};
use dag::ledger::owner_keys::OwnerKeys;
use dag::rendezvous::{Candidate, CandidateKind, LinkOffer, Mapping};
use dag::wire::{DirectMessage, WalletMessage};
use nat::punch::{Config as PunchConfig, Event, Path as LinkPath, Plan, Punch, SocketId};
use nat::transport::{
    AuthError, Link, LinkSigner, RawDatagram, RawDatagrams, RelaySender, Route, Transport,
    TransportConfig, TransportError,
};
use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// How long `connect` waits for the whole rendezvous, punch and handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A link goes through the relay if no direct path works this long after
/// punching starts (and moves to a direct path if one works later).
pub const RELAY_AFTER: Duration = Duration::from_secs(1);
/// How long the dialling side waits after nominating its path before
/// QUIC's first packet follows on it.
const NOMINATION_LEAD: Duration = Duration::from_millis(20);
/// How long a ping over a new link may take.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the reflexive address is asked again.
const ECHO_EVERY: Duration = Duration::from_secs(20);
/// How long a payee may take to hand over a key for a payment.
pub const PAY_KEY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a payee may take to check a payment's proof (it syncs first).
pub const PAID_TIMEOUT: Duration = Duration::from_secs(45);

/// A request from a command, and where its answer goes.
type Request = (Value, oneshot::Sender<Value>);

/// A link to another wallet.
struct WalletLink {
    name: String,
    link: Link,
    path: LinkPath,
    vaddr: SocketAddr,
    /// The attempt that made it (relayed frames carry its id).
    attempt: [u8; 16],
    /// The attempt's punch, kept with the link: it answers the other
    /// side's introductions (which may still be looking for the path),
    /// keeps the NAT mappings open, and moves a relayed link to a direct
    /// path once one works.
    punch: Option<Punch>,
    /// We dialled it (else the other side did).
    dialed: bool,
    since: Instant,
    /// Whether the two wallets agree on the chain yet.
    roots: roots::LinkRoots,
    /// The other wallet's voucher (from the introduction or invitation
    /// that made the link): an invitation to a room it owns carries it.
    voucher: Option<NameVoucher>,
}

/// Who holds a punch: an attempt in progress, or the link it made.
#[derive(Clone, Copy)]
enum Owner {
    Attempt,
    Link(PeerKey),
}

/// One link attempt in progress.
struct Attempt {
    vaddr: SocketAddr,
    key: [u8; 32],
    /// The other wallet (`name@peer`, login key), once known.
    other: Option<(String, PeerKey)>,
    /// The peer that vouched for the other wallet's key.
    voucher_peer: Option<String>,
    punch: Option<Punch>,
    dialing: bool,
    started: Instant,
    /// Who asked for it (`connect`), to be answered when it ends.
    waiter: Option<oneshot::Sender<Value>>,
    /// When the punch found its path.
    punched_ms: Option<u64>,
    /// When to use the relay if no direct path works by then.
    relay_at: Option<Instant>,
    /// The extra sockets opened for its probing.
    sockets: Vec<SocketId>,
    /// The voucher for the other wallet's key, once known.
    voucher: Option<NameVoucher>,
    /// Made by accepting an invitation: the room to join once linked.
    joining: Option<invites::Joining>,
}

impl Attempt {
    fn new(vaddr: SocketAddr, key: [u8; 32], waiter: Option<oneshot::Sender<Value>>) -> Attempt {
        Attempt {
            vaddr,
            key,
            other: None,
            voucher_peer: None,
            punch: None,
            dialing: false,
            started: Instant::now(),
            waiter,
            punched_ms: None,
            relay_at: None,
            sockets: Vec::new(),
            voucher: None,
            joining: None,
        }
    }
}

enum Note {
    /// A frame on a wallet link (`None`: the link closed).
    Direct(PeerKey, usize, Option<Bytes>),
    /// A dial finished.
    Dialed([u8; 16], Result<Link, TransportError>),
    /// The wallet state was synced for a swap request (or could not be).
    Synced(Box<(Value, oneshot::Sender<Value>, Result<(), String>)>),
    /// The background sync after an `Incoming` notice ended.
    IncomingSynced(Result<incoming::Synced, String>),
    /// Our peer's proof that our root extends a linked wallet's (key,
    /// link id, their root).
    RootsProof(Box<roots::Proof>),
    /// A receive key made for a payer's ask (or why not).
    PayKey(PeerKey, u64, Result<dag::ledger::names::ReceiveKey, String>),
    /// A payment over a link checked (or why not).
    Paid(PeerKey, u64, Result<(), String>),
}

struct Online {
    dir: PathBuf,
    chain: proofs::Hash,
    genesis: Genesis,
    name: WalletName,
    transport: Transport,
    peer: Link,
    /// The same, for relay routes (they outlive a reconnection).
    peer_now: Arc<Mutex<Link>>,
    peer_key: PeerKey,
    expected: Arc<Mutex<HashSet<PeerKey>>>,
    candidates: Vec<Candidate>,
    mapping: Mapping,
    echo_nonces: HashMap<[u8; 16], SocketAddr>,
    echo_seen: HashMap<SocketAddr, SocketAddr>,
    last_echo: Option<Instant>,
    attempts: HashMap<[u8; 16], Attempt>,
    links: HashMap<PeerKey, WalletLink>,
    pings: HashMap<u64, (PeerKey, Instant, oneshot::Sender<Value>, Value)>,
    next_ping: u64,
    notes_tx: mpsc::Sender<Note>,
    punch_config: PunchConfig,
    keys: Arc<OwnerKeys>,
    login_key: PeerKey,
    /// Our peer's voucher for our name (from the login), which invitations
    /// and their answers carry.
    voucher: Option<NameVoucher>,
    rooms: rooms::Rooms,
    incoming: incoming::Incoming,
    proofs: roots::ProofCache,
    invites: invites::Invites,
    pay: pay::Payments,
}

/// Run `wallet online` until Ctrl-C.
pub fn run(dir: &Path, keys: OwnerKeys, state: ChainState, genesis: Genesis) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(dir, keys, state, genesis))
}

async fn run_async(dir: &Path, keys: OwnerKeys, state: ChainState, genesis: Genesis) -> Result<()> {
    let sock = control::socket_path(dir);
    if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        bail!("this wallet is already online ({} answers)", sock.display());
    }
    let _ = std::fs::remove_file(&sock);
    let listener = tokio::net::UnixListener::bind(&sock)
        .with_context(|| format!("binding the control socket {}", sock.display()))?;

    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    let login_key = PeerKey(keys.login().public.to_bytes());
    let signer: Arc<dyn LinkSigner> =
        Arc::new(Mutex::new(Signer::from_keypair(keys.login(), seed)));
    let expected: Arc<Mutex<HashSet<PeerKey>>> =
        Arc::new(Mutex::new([state.peer].into_iter().collect()));
    let allow = expected.clone();
    let bind: SocketAddr = match state.peer_addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let (transport, raw) = Transport::bind(
        TransportConfig::new(bind, state.chain),
        signer,
        Arc::new(move |k: &PeerKey| allow.lock().map(|s| s.contains(k)).unwrap_or(false)),
    )
    .await
    .context("binding the wallet's socket")?;
    let peer = connect_peer(&transport, &state).await?;
    let (notes_tx, notes_rx) = mpsc::channel(1024);
    let mut me = Online {
        dir: dir.to_path_buf(),
        chain: state.chain,
        genesis,
        name: state.name.clone(),
        transport,
        peer_now: Arc::new(Mutex::new(peer.clone())),
        peer,
        peer_key: state.peer,
        expected,
        candidates: Vec::new(),
        mapping: Mapping::Unknown,
        echo_nonces: HashMap::new(),
        echo_seen: HashMap::new(),
        last_echo: None,
        attempts: HashMap::new(),
        links: HashMap::new(),
        pings: HashMap::new(),
        next_ping: 1,
        notes_tx,
        punch_config: PunchConfig::default(),
        keys: Arc::new(keys),
        login_key,
        voucher: state.voucher.clone(),
        rooms: rooms::Rooms::default(),
        incoming: incoming::Incoming::default(),
        proofs: roots::ProofCache::default(),
        invites: invites::Invites::default(),
        pay: pay::Payments::default(),
    };
    me.listen().await?;
    me.subscribe();
    me.local_candidate(state.peer_addr);
    me.ask_echo();
    println!(
        "{} is online (socket {}); Ctrl-C stops it",
        me.name,
        me.transport.local_addr()
    );

    let (req_tx, req_rx) = mpsc::channel::<Request>(64);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let req_tx = req_tx.clone();
            tokio::spawn(async move {
                if let Err(e) = control_session(stream, req_tx).await {
                    debug!("control session: {e}");
                }
            });
        }
    });
    let ended = me.main_loop(raw, req_rx, notes_rx).await;
    me.transport.close().await;
    let _ = std::fs::remove_file(&sock);
    ended
}

/// The proven sync every command runs, under `W/chain.lock` (waiting,
/// off the event loop, for a command that holds it: a payment waiting
/// for finality holds it for seconds). The outputs held before, and the
/// state after.
async fn locked_sync(
    dir: &Path,
    keys: &OwnerKeys,
    genesis: &Genesis,
) -> Result<(usize, ChainState), String> {
    let _lock = crate::state_lock::StateLock::take_async(dir)
        .await
        .map_err(|e| e.to_string())?;
    let mut state = ChainState::load(dir).map_err(|e| e.to_string())?;
    let before = state.outputs.len();
    crate::session::sync(dir, keys, &mut state, genesis)
        .await
        .map_err(|e| e.to_string())?;
    Ok((before, state))
}

async fn connect_peer(transport: &Transport, state: &ChainState) -> Result<Link> {
    transport
        .connect(state.peer_addr, state.peer)
        .await
        .with_context(|| {
            format!(
                "cannot reach peer {} at {}",
                state.name.peer, state.peer_addr
            )
        })
}

async fn control_session(
    stream: tokio::net::UnixStream,
    req_tx: mpsc::Sender<Request>,
) -> Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r.take(MAX_LINE as u64))
        .read_line(&mut line)
        .await?;
    let answer = match serde_json::from_str::<Value>(line.trim()) {
        Ok(req) => {
            let (tx, rx) = oneshot::channel();
            req_tx
                .send((req, tx))
                .await
                .map_err(|_| anyhow!("stopping"))?;
            rx.await
                .unwrap_or_else(|_| fail("the online wallet stopped"))
        }
        Err(e) => fail(&format!("not a JSON request: {e}")),
    };
    let mut out = answer.to_string();
    out.push('\n');
    w.write_all(out.as_bytes()).await?;
    Ok(())
}

fn fail(why: &str) -> Value {
    json!({"ok": false, "error": why})
}

fn path_json(p: &LinkPath) -> Value {
    match p {
        LinkPath::Direct { socket, addr } => {
            json!({"path": "direct", "addr": addr.to_string(), "socket": socket.0})
        }
        LinkPath::Relayed => json!({"path": "relay"}),
    }
}

impl Online {
    async fn listen(&mut self) -> Result<()> {
        let msg = WalletMessage::Listen {
            name: self.name.login.clone(),
        };
        self.peer
            .send_wait(Bytes::from(msg.encode()))
            .await
            .map_err(|e| anyhow!("peer {}: {e}", self.name.peer))?;
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let Some(f) = self.peer.recv().await else {
                    return Err(anyhow!("peer {} closed the link", self.name.peer));
                };
                match WalletMessage::decode(&f) {
                    Ok(WalletMessage::Listening) => return Ok(()),
                    Ok(WalletMessage::Refused { reason, .. }) => {
                        return Err(anyhow!("peer {} refused: {reason}", self.name.peer))
                    }
                    _ => continue,
                }
            }
        })
        .await
        .map_err(|_| anyhow!("peer {} did not answer Listen", self.name.peer))?;
        answer
    }

    /// The address of our interface toward the peer, with our port: found
    /// by the routing table (a connected UDP socket sends nothing).
    fn local_candidate(&mut self, toward: SocketAddr) {
        let port = self.transport.local_addr().port();
        let bind: SocketAddr = match toward {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let ip = std::net::UdpSocket::bind(bind)
            .and_then(|s| s.connect(toward).and_then(|_| s.local_addr()))
            .map(|a| a.ip());
        if let Ok(ip) = ip {
            self.add_candidate(SocketAddr::new(ip, port), CandidateKind::Local);
        }
    }

    fn add_candidate(&mut self, addr: SocketAddr, kind: CandidateKind) {
        if addr.ip().is_unspecified() || self.candidates.iter().any(|c| c.addr == addr) {
            return;
        }
        if self.candidates.len() < dag::rendezvous::MAX_CANDIDATES {
            self.candidates.push(Candidate { addr, kind });
        }
    }

    /// Ask two peers (ours and another) where our datagrams come from.
    fn ask_echo(&mut self) {
        self.last_echo = Some(Instant::now());
        self.echo_nonces.clear();
        let mut targets = vec![];
        if let Some(p) = self.genesis.peers.iter().find(|p| p.key == self.peer_key) {
            targets.push(p.addr);
        }
        if let Some(p) = self.genesis.peers.iter().find(|p| p.key != self.peer_key) {
            targets.push(p.addr);
        }
        for to in targets {
            let mut nonce = [0u8; 16];
            OsRng.fill_bytes(&mut nonce);
            self.echo_nonces.insert(nonce, to);
            let _ = self.transport.send_raw(to, &nat::echo::request(nonce));
        }
    }

    fn take_echo(&mut self, d: &RawDatagram) -> bool {
        let Some((nonce, seen)) = nat::echo::parse_reply(&d.bytes) else {
            return false;
        };
        let Some(asked) = self.echo_nonces.remove(&nonce) else {
            return true;
        };
        if d.from != asked {
            return true;
        }
        self.echo_seen.insert(asked, seen);
        let kind = if self.candidates.iter().any(|c| c.addr == seen) {
            CandidateKind::Local
        } else {
            CandidateKind::Reflexive
        };
        self.add_candidate(seen, kind);
        let seen: HashSet<SocketAddr> = self.echo_seen.values().copied().collect();
        self.mapping = match (self.echo_seen.len(), seen.len()) {
            (n, 1) if n >= 2 => Mapping::Independent,
            (n, m) if n >= 2 && m >= 2 => Mapping::Dependent,
            _ => self.mapping,
        };
        debug!(candidates = ?self.candidates, mapping = ?self.mapping, "address echo");
        true
    }

    fn offer(&self, attempt: [u8; 16], key: [u8; 32]) -> LinkOffer {
        LinkOffer {
            attempt,
            key,
            candidates: self.candidates.clone(),
            mapping: self.mapping,
        }
    }

    async fn main_loop(
        &mut self,
        mut raw: RawDatagrams,
        mut req_rx: mpsc::Receiver<Request>,
        mut notes_rx: mpsc::Receiver<Note>,
    ) -> Result<()> {
        let transport = self.transport.clone();
        loop {
            let next = self.next_timeout();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {
                    info!("interrupted, going offline");
                    return Ok(());
                }
                frame = self.peer.recv() => match frame {
                    Some(f) => self.on_peer_message(&f),
                    None => self.reconnect().await?,
                },
                d = raw.recv() => {
                    let Some(d) = d else { return Ok(()) };
                    self.on_raw(d);
                }
                r = req_rx.recv() => {
                    if let Some((req, tx)) = r {
                        self.request(req, tx);
                    }
                }
                n = notes_rx.recv() => {
                    if let Some(n) = n {
                        self.note(n);
                    }
                }
                l = transport.accept() => {
                    if let Some(l) = l {
                        self.accepted(l);
                    }
                }
                _ = tokio::time::sleep_until(next.into()) => {}
            }
            self.on_time(Instant::now());
        }
    }

    fn next_timeout(&self) -> Instant {
        let mut t = self.last_echo.map_or(Instant::now(), |l| l + ECHO_EVERY);
        for a in self.attempts.values() {
            if let Some(p) = a.punch.as_ref().and_then(|p| p.poll_timeout()) {
                t = t.min(p);
            }
            if let Some(r) = a.relay_at {
                t = t.min(r);
            }
            t = t.min(a.started + CONNECT_TIMEOUT);
        }
        for l in self.links.values() {
            if let Some(p) = l.punch.as_ref().and_then(|p| p.poll_timeout()) {
                t = t.min(p);
            }
            if let Some(d) = l.roots.deadline() {
                t = t.min(d);
            }
        }
        if let Some(p) = self.pings.values().map(|p| p.1 + PING_TIMEOUT).min() {
            t = t.min(p);
        }
        if let Some(d) = self.next_swap_deadline() {
            t = t.min(d);
        }
        // (A swap being prepared holds the sync back; its end wakes us.)
        if let Some(d) = self.incoming.deadline().filter(|_| !self.rooms.preparing) {
            t = t.min(d);
        }
        if let Some(d) = self.pay.next_deadline() {
            t = t.min(d);
        }
        t.max(Instant::now())
    }

    fn on_time(&mut self, now: Instant) {
        self.swap_timeouts(now);
        self.roots_timeouts(now);
        self.incoming_timeout(now);
        self.pay_timeouts(now);
        if self.last_echo.is_none_or(|l| now >= l + ECHO_EVERY) {
            self.ask_echo();
        }
        let ids: Vec<[u8; 16]> = self.attempts.keys().copied().collect();
        for id in ids {
            let expired = self
                .attempts
                .get(&id)
                .is_some_and(|a| now >= a.started + CONNECT_TIMEOUT);
            if expired {
                self.end_attempt(
                    id,
                    Err(format!("no link within {} s", CONNECT_TIMEOUT.as_secs())),
                );
                continue;
            }
            if let Some(a) = self.attempts.get_mut(&id) {
                if let Some(p) = a.punch.as_mut() {
                    if p.poll_timeout().is_some_and(|t| t <= now) {
                        p.handle_timeout(now);
                    }
                    if a.relay_at.is_some_and(|t| t <= now) {
                        a.relay_at = None;
                        p.relay_ready();
                    }
                }
            }
            self.flush(id);
        }
        let linked: Vec<[u8; 16]> = self
            .links
            .values_mut()
            .filter_map(|l| {
                let p = l.punch.as_mut()?;
                if p.poll_timeout().is_some_and(|t| t <= now) {
                    p.handle_timeout(now);
                }
                Some(l.attempt)
            })
            .collect();
        for id in linked {
            self.flush(id);
        }
        let late: Vec<u64> = self
            .pings
            .iter()
            .filter(|(_, p)| now.duration_since(p.1) > PING_TIMEOUT)
            .map(|(n, _)| *n)
            .collect();
        for n in late {
            if let Some((key, _, w, info)) = self.pings.remove(&n) {
                // A link that does not answer is dead: the next connect
                // makes a new one.
                if let Some(l) = self.links.remove(&key) {
                    self.close_link(&l, "no answer");
                    self.link_gone(&key, &l.name);
                }
                let _ = w.send(fail(&format!(
                    "linked to {}, but it did not answer a ping within {} s",
                    info["name"].as_str().unwrap_or("the wallet"),
                    PING_TIMEOUT.as_secs()
                )));
            }
        }
    }

    async fn reconnect(&mut self) -> Result<()> {
        warn!(peer = %self.name.peer, "link to the peer lost; reconnecting");
        let state = ChainState::load(&self.dir)?;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match connect_peer(&self.transport, &state).await {
                Ok(l) => {
                    if let Ok(mut now) = self.peer_now.lock() {
                        *now = l.clone();
                    }
                    self.peer = l;
                    if self.listen().await.is_ok() {
                        info!(peer = %self.name.peer, "online again");
                        self.subscribe();
                        // Whatever came meanwhile.
                        self.on_incoming(0, 0);
                        return Ok(());
                    }
                }
                Err(e) => debug!("reconnecting: {e:#}"),
            }
        }
    }

    fn send_peer(&self, m: WalletMessage) {
        if let Err(e) = self.peer.send(Bytes::from(m.encode())) {
            warn!(peer = %self.name.peer, "send to peer: {e}");
        }
    }

    /// The key of the registered peer named `name`, from the genesis.
    fn peer_named(&self, name: &str) -> Option<PeerKey> {
        self.genesis
            .peers
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.key)
    }

    fn peer_name_of(&self, key: &PeerKey) -> Option<String> {
        self.genesis
            .peers
            .iter()
            .find(|p| p.key == *key)
            .map(|p| p.name.clone())
    }

    /// A voucher for a wallet, checked against the peer that signed it;
    /// the wallet's full name.
    fn check_voucher(&self, v: &NameVoucher) -> Result<String, String> {
        let peer = self
            .peer_name_of(&v.peer)
            .ok_or_else(|| "the voucher is signed by no registered peer".to_string())?;
        v.verify(&self.chain, &v.peer)
            .map_err(|e| format!("peer {peer}'s voucher does not verify: {e}"))?;
        Ok(format!("{}@{peer}", v.name))
    }

    fn on_peer_message(&mut self, frame: &[u8]) {
        let msg = match WalletMessage::decode(frame) {
            Ok(m) => m,
            Err(e) => {
                warn!(peer = %self.name.peer, "malformed message: {e}");
                return;
            }
        };
        match msg {
            WalletMessage::Reached(r) => self.reached(*r),
            WalletMessage::ReachFailed { attempt, reason } => {
                let peer = self.name.peer.clone();
                self.end_attempt(attempt, Err(format!("rendezvous through {peer}: {reason}")));
            }
            WalletMessage::Introduced(i) => self.introduced(*i),
            m @ (WalletMessage::Submitted(_) | WalletMessage::Finalized(_)) => self.swap_final(&m),
            WalletMessage::Relay { attempt, data } => {
                let vaddr = self.attempts.get(&attempt).map(|a| a.vaddr).or_else(|| {
                    self.links
                        .values()
                        .find(|l| l.attempt == attempt)
                        .map(|l| l.vaddr)
                });
                if let Some(v) = vaddr {
                    self.transport.inject(v, Bytes::from(data));
                }
            }
            WalletMessage::Refused { what, reason } => {
                warn!(peer = %self.name.peer, what, "refused: {reason}")
            }
            WalletMessage::Incoming { height, keys } => self.on_incoming(height, keys.len()),
            WalletMessage::Subscribed(n) => debug!(keys = n, "subscribed"),
            _ => {}
        }
    }

    fn reached(&mut self, r: dag::rendezvous::Reached) {
        let id = r.offer.attempt;
        let Some(a) = self.attempts.get(&id) else {
            return;
        };
        let Some((asked, _)) = a.other.clone() else {
            return;
        };
        let name = match self.check_voucher(&r.to) {
            Ok(n) => n,
            Err(e) => return self.end_attempt(id, Err(e)),
        };
        if name != asked {
            return self.end_attempt(
                id,
                Err(format!(
                    "asked for {asked}, the rendezvous answered for {name}"
                )),
            );
        }
        let key = a.key;
        self.start_punch(id, &r.to, name, key, &r.offer, Instant::now(), true);
    }

    fn introduced(&mut self, i: dag::rendezvous::Introduction) {
        let id = i.offer.attempt;
        let name = match self.check_voucher(&i.from) {
            Ok(n) => n,
            Err(e) => {
                warn!("introduction refused: {e}");
                self.send_peer(WalletMessage::Answer {
                    attempt: id,
                    offer: None,
                });
                return;
            }
        };
        if self.attempts.contains_key(&id) {
            return;
        }
        info!(from = %name, "introduced");
        let vaddr = self.transport.new_route();
        self.attempts
            .insert(id, Attempt::new(vaddr, i.offer.key, None));
        self.send_peer(WalletMessage::Answer {
            attempt: id,
            offer: Some(self.offer(id, [0; 32])),
        });
        let start = Instant::now() + Duration::from_millis(u64::from(i.start_in_ms.min(2_000)));
        self.start_punch(id, &i.from, name, i.offer.key, &i.offer, start, true);
    }

    /// Punch toward the wallet `voucher` names (`name`, checked) with its
    /// half `remote` of attempt `id`. `relay`: whether the peers can relay
    /// the link (not for an invitation, which no peer introduced).
    #[allow(clippy::too_many_arguments)]
    fn start_punch(
        &mut self,
        id: [u8; 16],
        voucher: &NameVoucher,
        name: String,
        key: [u8; 32],
        remote: &LinkOffer,
        start: Instant,
        relay: bool,
    ) {
        if let Ok(mut e) = self.expected.lock() {
            e.insert(voucher.login);
        }
        let voucher_peer = self.peer_name_of(&voucher.peer);
        let plan = Plan {
            attempt: id,
            key,
            remote: remote.candidates.clone(),
            local_mapping: self.mapping,
            remote_mapping: remote.mapping,
            start,
            relay,
        };
        let want = plan.probe_sockets(&self.punch_config);
        let opened = if want > 0 {
            match self.transport.open_sockets(want) {
                Ok(v) => v,
                Err(e) => {
                    warn!("opening probe sockets: {e}");
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let count = opened.len();
        let relay_at = relay.then_some(start + RELAY_AFTER);
        let mut punch = Punch::new(
            plan,
            self.punch_config.clone(),
            opened.clone(),
            OsRng.next_u64(),
        );
        info!(
            role = ?punch.role(),
            sockets = count,
            local = ?self.mapping,
            remote = ?remote.mapping,
            candidates = ?remote.candidates,
            "punching"
        );
        punch.handle_timeout(Instant::now());
        if let Some(a) = self.attempts.get_mut(&id) {
            a.other = Some((name, voucher.login));
            a.voucher_peer = voucher_peer;
            a.voucher = Some(voucher.clone());
            a.punch = Some(punch);
            a.relay_at = relay_at;
            a.sockets = opened;
        }
        self.flush(id);
    }

    fn on_raw(&mut self, d: RawDatagram) {
        if self.take_echo(&d) {
            return;
        }
        if d.bytes.len() != nat::punch::PUNCH_LEN {
            return;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&d.bytes[1..17]);
        let now = Instant::now();
        if let Some(a) = self.attempts.get_mut(&id) {
            let Some(p) = a.punch.as_mut() else {
                return;
            };
            let took = p.handle(now, d.socket, d.from, &d.bytes);
            // The side that is dialled routes the link where the other
            // side's packets will come from: the path it nominates, so its
            // QUIC packets are taken when they arrive.
            // Until the other side nominates its path, the first path heard
            // from it stands in.
            let nominated = d.bytes[0] == nat::punch::NOMINATE;
            let (dialled, vaddr) = (a.waiter.is_none(), a.vaddr);
            let unrouted = self.transport.route(vaddr).is_none();
            if took && dialled && (nominated || unrouted) {
                let route = Route::Direct {
                    socket: d.socket,
                    addr: d.from,
                };
                self.route_to(vaddr, route);
            }
        } else if let Some(l) = self.links.values_mut().find(|l| l.attempt == id) {
            let took = l
                .punch
                .as_mut()
                .is_some_and(|p| p.handle(now, d.socket, d.from, &d.bytes));
            let direct = matches!(l.path, LinkPath::Direct { .. });
            if took && !l.dialed && direct && d.bytes[0] == nat::punch::NOMINATE {
                let route = Route::Direct {
                    socket: d.socket,
                    addr: d.from,
                };
                if self.transport.set_route(l.vaddr, route).is_ok() {
                    l.path = LinkPath::Direct {
                        socket: d.socket,
                        addr: d.from,
                    };
                }
            }
        }
        self.flush(id);
    }

    /// The punch of attempt `id` (in progress, or kept by its link),
    /// taken out to be driven; [`Online::put_punch`] puts it back.
    fn take_punch(&mut self, id: [u8; 16]) -> Option<(Punch, Owner, SocketAddr)> {
        if let Some(a) = self.attempts.get_mut(&id) {
            return a.punch.take().map(|p| (p, Owner::Attempt, a.vaddr));
        }
        let (key, l) = self.links.iter_mut().find(|(_, l)| l.attempt == id)?;
        l.punch.take().map(|p| (p, Owner::Link(*key), l.vaddr))
    }

    fn put_punch(&mut self, id: [u8; 16], p: Punch, owner: Owner) {
        match owner {
            Owner::Attempt => {
                if let Some(a) = self.attempts.get_mut(&id) {
                    a.punch = Some(p);
                }
            }
            Owner::Link(key) => {
                if let Some(l) = self.links.get_mut(&key) {
                    l.punch = Some(p);
                }
            }
        }
    }

    /// Send what the punch of `id` wants sent; act on its events.
    fn flush(&mut self, id: [u8; 16]) {
        let Some((mut p, owner, vaddr)) = self.take_punch(id) else {
            return;
        };
        while let Some(t) = p.poll_transmit() {
            let _ = self.transport.send_raw_from(t.socket, t.to, &t.bytes);
        }
        let mut events = Vec::new();
        while let Some(e) = p.poll_event() {
            events.push(e);
        }
        let mut keep = true;
        for e in events {
            match e {
                Event::Connected(path @ LinkPath::Direct { socket, addr }) => {
                    // The dialled side keeps the path the other side's
                    // introductions came on, if it has one.
                    let dialled = match owner {
                        Owner::Attempt => {
                            self.attempts.get(&id).is_some_and(|a| a.waiter.is_none())
                        }
                        Owner::Link(key) => self.links.get(&key).is_some_and(|l| !l.dialed),
                    };
                    let routed = matches!(self.transport.route(vaddr), Some(Route::Direct { .. }));
                    if !(dialled && routed) {
                        self.route_to(vaddr, Route::Direct { socket, addr });
                    }
                    info!(%addr, socket = socket.0, "direct path");
                    match owner {
                        Owner::Link(key) => {
                            if let Some(l) = self.links.get_mut(&key) {
                                l.path = path;
                                info!(wallet = %l.name, "link moved to a direct path");
                            }
                        }
                        Owner::Attempt => {
                            if let Some(a) = self.attempts.get_mut(&id) {
                                a.punched_ms = Some(a.started.elapsed().as_millis() as u64);
                            }
                            self.dial_if_asker(id);
                        }
                    }
                }
                Event::Connected(LinkPath::Relayed) => {
                    let peer = self.peer_now.clone();
                    let relay = RelaySender::new(move |data: Bytes| {
                        let m = WalletMessage::Relay {
                            attempt: id,
                            data: data.to_vec(),
                        };
                        peer.lock()
                            .map(|l| l.send(Bytes::from(m.encode())).is_ok())
                            .unwrap_or(false)
                    });
                    let _ = self.transport.set_route(vaddr, Route::Relay(relay));
                    match owner {
                        Owner::Link(key) => {
                            if let Some(l) = self.links.get_mut(&key) {
                                l.path = LinkPath::Relayed;
                                info!(wallet = %l.name, "link moved to the relay");
                            }
                        }
                        Owner::Attempt => {
                            info!("no direct path yet: through the relay");
                            self.dial_if_asker(id);
                        }
                    }
                }
                Event::ReleaseSockets => {
                    let mut keep = self.sockets_in_use(Some(id));
                    if let Some(LinkPath::Direct { socket, .. }) = p.path() {
                        keep.push(socket);
                    }
                    self.transport.close_sockets(&keep);
                }
                Event::DirectLost => info!("the direct path stopped answering"),
                Event::DirectGaveUp => {}
                Event::Failed(f) => {
                    keep = false;
                    match owner {
                        Owner::Attempt => {
                            let why = match self.attempts.get(&id).and_then(|a| a.joining.as_ref())
                            {
                                Some(j) => format!(
                                    "to the room's owner {}: {f}; an invitation links directly \
                                     or not at all (no peer introduced it, so none relays it)",
                                    j.owner
                                ),
                                None => f.to_string(),
                            };
                            self.end_attempt(id, Err(why));
                        }
                        Owner::Link(key) => {
                            if let Some(l) = self.links.remove(&key) {
                                warn!(wallet = %l.name, "link lost: {f}");
                                self.close_link(&l, "path lost");
                            }
                        }
                    }
                }
            }
        }
        if keep {
            self.put_punch(id, p, owner);
        }
    }

    /// The side that asked dials (once a path works); the other accepts.
    fn dial_if_asker(&mut self, id: [u8; 16]) {
        let Some(a) = self.attempts.get_mut(&id) else {
            return;
        };
        if a.waiter.is_none() || a.dialing {
            return;
        }
        let Some(key) = a.other.as_ref().map(|o| o.1) else {
            return;
        };
        a.dialing = true;
        let vaddr = a.vaddr;
        let transport = self.transport.clone();
        let notes = self.notes_tx.clone();
        tokio::spawn(async move {
            // The nomination just sent on the path tells the other side
            // where our packets will come from; it goes through that
            // side's event loop, QUIC's first packet through its endpoint.
            // A moment first, so that the route is set when it arrives.
            tokio::time::sleep(NOMINATION_LEAD).await;
            let r = transport.connect(vaddr, key).await;
            let _ = notes.send(Note::Dialed(id, r)).await;
        });
    }

    /// Route `vaddr` by `route`. A path still held by an older route is
    /// taken over: by a link closing (its route lingers until QUIC's close
    /// has left) or one the other side has given up on (it is linking
    /// anew over the same path), which is closed.
    fn route_to(&mut self, vaddr: SocketAddr, route: Route) {
        match self.transport.set_route(vaddr, route.clone()) {
            Err(nat::transport::RouteError::PathInUse { by, .. }) => {
                let old = self
                    .links
                    .iter()
                    .find(|(_, l)| l.vaddr == by)
                    .map(|(k, _)| *k);
                if let Some(key) = old {
                    if let Some(l) = self.links.remove(&key) {
                        info!(wallet = %l.name, "a new link takes over the old one's path");
                        l.link.close("replaced");
                        self.link_gone(&key, &l.name);
                    }
                }
                self.transport.remove_route(by);
                let _ = self.transport.set_route(vaddr, route);
            }
            Err(e) => debug!("route: {e}"),
            Ok(()) => {}
        }
    }

    /// The keys that may link to us: our peer, and the wallets of our
    /// attempts and links (several attempts may name one wallet).
    fn refresh_expected(&self) {
        let keys: HashSet<PeerKey> = std::iter::once(self.peer_key)
            .chain(
                self.attempts
                    .values()
                    .filter_map(|a| a.other.as_ref().map(|o| o.1)),
            )
            .chain(self.links.keys().copied())
            .collect();
        if let Ok(mut e) = self.expected.lock() {
            *e = keys;
        }
    }

    /// Close a link we dropped: its route goes only once QUIC has told the
    /// other side (or given up), or the close would never leave.
    fn close_link(&self, l: &WalletLink, why: &str) {
        l.link.close(why);
        let (link, transport, vaddr) = (l.link.clone(), self.transport.clone(), l.vaddr);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(3), link.closed()).await;
            transport.remove_route(vaddr);
        });
    }

    /// Extra sockets nothing uses any more, closed (a probing attempt
    /// that ended must not keep its 256 sockets, however many other
    /// attempts run meanwhile).
    fn release_sockets(&self) {
        self.transport.close_sockets(&self.sockets_in_use(None));
    }

    /// Extra sockets to keep: those of attempts still punching (but
    /// `except`), and those routes send on.
    fn sockets_in_use(&self, except: Option<[u8; 16]>) -> Vec<SocketId> {
        let mut keep = self.routed_sockets();
        for (id, a) in &self.attempts {
            if Some(*id) != except {
                keep.extend(a.sockets.iter().copied());
            }
        }
        keep
    }

    /// The sockets the routes of links and attempts use: what the
    /// transport actually sends on (for the dialled side, the path the
    /// other side chose, which need not be the one its own punch found).
    fn routed_sockets(&self) -> Vec<SocketId> {
        self.links
            .values()
            .map(|l| l.vaddr)
            .chain(self.attempts.values().map(|a| a.vaddr))
            .filter_map(|v| match self.transport.route(v) {
                Some(Route::Direct { socket, .. }) if socket != SocketId::MAIN => Some(socket),
                _ => None,
            })
            .collect()
    }

    /// Finish attempt `id`: answer its waiter, forget it (keeping the route
    /// if a link now uses it).
    fn end_attempt(&mut self, id: [u8; 16], result: Result<Value, String>) {
        let Some(mut a) = self.attempts.remove(&id) else {
            return;
        };
        let linked = a
            .other
            .as_ref()
            .is_some_and(|(_, k)| self.links.get(k).is_some_and(|l| l.vaddr == a.vaddr));
        if !linked {
            self.transport.remove_route(a.vaddr);
            self.refresh_expected();
            if let Some((name, _)) = &a.other {
                debug!(%name, "attempt ended without a link");
            }
        }
        self.release_sockets();
        if let Some(w) = a.waiter.take() {
            let _ = w.send(match result {
                Ok(mut v) => {
                    v["ok"] = json!(true);
                    v
                }
                Err(e) => fail(&e),
            });
        }
    }

    fn note(&mut self, n: Note) {
        match n {
            Note::Dialed(id, Ok(link)) => self.linked(id, link, true),
            Note::Dialed(id, Err(e)) => {
                let why = match (&e, self.attempts.get(&id)) {
                    (TransportError::Auth(AuthError::UnexpectedKey { expected, got }), Some(a)) => {
                        format!(
                            "the wallet that answered holds key {got}, but peer {} vouched for {expected} as {}: \
                             a man in the middle (that peer, or the one that passed its answer on); \
                             nothing was signed",
                            a.voucher_peer.as_deref().unwrap_or("(unknown)"),
                            a.other.as_ref().map_or("the wallet", |o| o.0.as_str()),
                        )
                    }
                    _ => format!("the direct handshake failed: {e}"),
                };
                self.end_attempt(id, Err(why));
            }
            Note::IncomingSynced(r) => self.incoming_synced(r),
            Note::RootsProof(b) => {
                let (key, link_id, theirs, r) = *b;
                self.roots_proof(key, link_id, theirs, r);
            }
            Note::Synced(b) => {
                let (req, tx, r) = *b;
                match r {
                    Ok(()) => self.swap_synced(&req, tx),
                    Err(e) => {
                        self.rooms.preparing = false;
                        let _ = tx.send(fail(&format!("syncing before the offer: {e}")));
                    }
                }
            }
            Note::PayKey(payer, ask, made) => self.pay_key_made(payer, ask, made),
            Note::Paid(payer, ask, r) => self.paid_checked(payer, ask, r),
            Note::Direct(key, link_id, Some(frame)) => self.on_wallet_message(key, link_id, &frame),
            Note::Direct(key, link_id, None) => {
                if self.links.get(&key).is_some_and(|l| l.link.id() == link_id) {
                    let l = self.links.remove(&key).expect("just found");
                    info!(wallet = %l.name, "wallet link closed");
                    self.transport.remove_route(l.vaddr);
                    self.link_gone(&key, &l.name);
                    self.refresh_expected();
                }
            }
        }
    }

    /// An inbound link: the wallet we were introduced to dialled us.
    fn accepted(&mut self, link: Link) {
        let key = link.peer();
        // The attempt whose virtual address the link came from, else (an
        // unrouted path) any of that wallet's.
        let from = link.remote_addr();
        let found = self
            .attempts
            .iter()
            .find(|(_, a)| a.vaddr == from && a.other.as_ref().is_some_and(|o| o.1 == key))
            .or_else(|| {
                self.attempts
                    .iter()
                    .find(|(_, a)| a.other.as_ref().is_some_and(|o| o.1 == key))
            })
            .map(|(id, _)| *id);
        match found {
            Some(id) => self.linked(id, link, false),
            None => link.close("not expected"),
        }
    }

    fn linked(&mut self, id: [u8; 16], link: Link, dialed: bool) {
        let Some(a) = self.attempts.get(&id) else {
            link.close("attempt over");
            return;
        };
        let Some((name, key)) = a.other.clone() else {
            link.close("attempt over");
            return;
        };
        // What the transport sends on (the dialled side follows the path
        // the other side chose), else what the punch found.
        let path = match self.transport.route(a.vaddr) {
            Some(Route::Direct { socket, addr }) => LinkPath::Direct { socket, addr },
            Some(Route::Relay(_)) => LinkPath::Relayed,
            None => a
                .punch
                .as_ref()
                .and_then(|p| p.path())
                .unwrap_or(LinkPath::Direct {
                    socket: SocketId::MAIN,
                    addr: link.remote_addr(),
                }),
        };
        let vaddr = a.vaddr;
        let started = a.started;
        let punched_ms = a.punched_ms;
        let voucher = a.voucher.clone();
        let punch = self.attempts.get_mut(&id).and_then(|a| a.punch.take());
        info!(wallet = %name, "wallet link up");
        let reader = link.clone();
        let notes = self.notes_tx.clone();
        tokio::spawn(async move {
            while let Some(f) = reader.recv().await {
                if notes
                    .send(Note::Direct(key, reader.id(), Some(f)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = notes.send(Note::Direct(key, reader.id(), None)).await;
        });
        if let Some(old) = self.links.insert(
            key,
            WalletLink {
                name: name.clone(),
                link: link.clone(),
                path,
                vaddr,
                attempt: id,
                punch,
                dialed,
                since: Instant::now(),
                roots: roots::LinkRoots::new(),
                voucher,
            },
        ) {
            if old.link.id() != link.id() {
                old.link.close("replaced");
            }
        }
        self.send_root(key);
        let mut info = path_json(&path);
        info["name"] = json!(name);
        info["key"] = json!(key.to_string());
        info["punch_ms"] = json!(punched_ms);
        info["connect_ms"] = json!(started.elapsed().as_millis() as u64);
        // The asking side proves the channel works both ways with a ping;
        // an accepted invitation, by joining the room.
        let (waiter, joining) = match self.attempts.get_mut(&id) {
            Some(a) => (a.waiter.take(), a.joining.take()),
            None => (None, None),
        };
        match (waiter, joining) {
            (Some(w), Some(j)) => self.join_invited(key, &j, w, info),
            (Some(w), None) => {
                let n = self.next_ping;
                self.next_ping += 1;
                self.pings.insert(n, (key, Instant::now(), w, info));
                let _ = link.send(Bytes::from(DirectMessage::Ping(n).encode()));
            }
            _ => {}
        }
        self.end_attempt(id, Ok(Value::Null));
    }

    /// A message on a link whose roots agree (see `roots`).
    fn on_linked_message(&mut self, key: PeerKey, name: String, m: DirectMessage) {
        match m {
            DirectMessage::RoomInvite { .. }
            | DirectMessage::RoomInviteAccept { .. }
            | DirectMessage::RoomInviteAnswer { .. } => self.on_invite_message(key, name, m),
            DirectMessage::PayKeyAsk { .. }
            | DirectMessage::PayKey { .. }
            | DirectMessage::PayKeyRefused { .. }
            | DirectMessage::Paid { .. }
            | DirectMessage::PaidAck { .. } => self.on_pay_message(key, name, m),
            m => self.on_room_message(key, name, m),
        }
    }

    fn on_wallet_message(&mut self, key: PeerKey, _link: usize, frame: &[u8]) {
        let Some(l) = self.links.get(&key) else {
            return;
        };
        match DirectMessage::decode(frame) {
            Ok(DirectMessage::Ping(n)) => {
                let _ = l.link.send(Bytes::from(DirectMessage::Pong(n).encode()));
            }
            Ok(DirectMessage::Pong(n)) => {
                if let Some((k, at, w, mut info)) = self.pings.remove(&n) {
                    if k == key {
                        info["rtt_ms"] = json!(at.elapsed().as_secs_f64() * 1000.0);
                        // `connect` returns a link the two agree to use.
                        self.answer_when_agreed(key, w, info);
                    }
                }
            }
            Ok(m) => self.on_roots_message(key, m),
            Err(e) => warn!(wallet = %l.name, "malformed direct message: {e}"),
        }
    }

    fn request(&mut self, req: Value, tx: oneshot::Sender<Value>) {
        match req["op"].as_str() {
            Some("connect") => {
                let Some(to) = req["to"].as_str() else {
                    let _ = tx.send(fail("connect needs \"to\""));
                    return;
                };
                self.connect(to, tx);
            }
            Some("disconnect") => {
                let name = req["to"].as_str().unwrap_or_default();
                let key = self
                    .links
                    .iter()
                    .find(|(_, l)| l.name == name)
                    .map(|(k, _)| *k);
                match key.and_then(|k| self.links.remove(&k).map(|l| (k, l))) {
                    Some((key, l)) => {
                        self.close_link(&l, "disconnected");
                        self.link_gone(&key, &l.name);
                        self.refresh_expected();
                        let _ = tx.send(json!({"ok": true, "name": name}));
                    }
                    None => {
                        let _ = tx.send(fail(&format!("no link to {name}")));
                    }
                }
            }
            Some("links") => {
                let links: Vec<Value> = self
                    .links
                    .values()
                    .map(|l| {
                        let mut v = path_json(&l.path);
                        v["name"] = json!(l.name);
                        v["since_s"] = json!(l.since.elapsed().as_secs());
                        v["roots"] = l.roots.json();
                        v
                    })
                    .collect();
                let _ = tx.send(json!({"ok": true, "links": links}));
            }
            Some("status") => {
                let _ = tx.send(json!({
                    "ok": true,
                    "name": self.name.to_string(),
                    "socket": self.transport.local_addr().to_string(),
                    "candidates": self.candidates.iter().map(|c| json!({
                        "addr": c.addr.to_string(),
                        "kind": match c.kind { CandidateKind::Local => "local", CandidateKind::Reflexive => "reflexive" },
                    })).collect::<Vec<_>>(),
                    "mapping": match self.mapping {
                        Mapping::Independent => "independent",
                        Mapping::Dependent => "dependent",
                        Mapping::Unknown => "unknown",
                    },
                    "links": self.links.len(),
                }));
            }
            Some(op @ ("pay_key" | "pay_proof")) => {
                let op = op.to_string();
                self.pay_request(&op, &req, tx);
            }
            Some(op @ ("room_create" | "room_join" | "room_members" | "room_leave" | "swap")) => {
                let op = op.to_string();
                self.room_request(&op, &req, tx);
            }
            Some("room_invite") => self.invite_request(&req, tx),
            Some("room_invites") => self.invites_request(tx),
            Some("room_accept") => self.accept_request(&req, tx),
            _ => {
                let _ = tx.send(fail("unknown request"));
            }
        }
    }

    fn connect(&mut self, to: &str, tx: oneshot::Sender<Value>) {
        let to = match WalletName::parse(to) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(fail(&e.to_string()));
                return;
            }
        };
        if to == self.name {
            let _ = tx.send(fail("that is this wallet"));
            return;
        }
        if self.peer_named(&to.peer).is_none() {
            let _ = tx.send(fail(&format!("no peer named {} in the genesis", to.peer)));
            return;
        }
        // Already linked: that link answers (a ping shows it still works).
        let name = to.to_string();
        if let Some((key, l)) = self.links.iter().find(|(_, l)| l.name == name) {
            let mut info = path_json(&l.path);
            info["name"] = json!(name);
            info["key"] = json!(key.to_string());
            info["connect_ms"] = json!(0);
            info["reused"] = json!(true);
            let n = self.next_ping;
            self.next_ping += 1;
            let _ = l.link.send(Bytes::from(DirectMessage::Ping(n).encode()));
            self.pings.insert(n, (*key, Instant::now(), tx, info));
            return;
        }
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        let vaddr = self.transport.new_route();
        let mut a = Attempt::new(vaddr, key, Some(tx));
        a.other = Some((to.to_string(), PeerKey([0; 32])));
        self.attempts.insert(id, a);
        self.send_peer(WalletMessage::Reach {
            to: to.to_string(),
            offer: self.offer(id, key),
        });
    }
}
