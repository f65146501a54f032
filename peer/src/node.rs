//! `peer run`: the event loop around the [`Driver`].
//!
//! Two halves. The driver thread owns the protocol state and the LMDB store,
//! so every durable write happens in order with the decisions that need it
//! (our own event is on disk before it is handed to the network). The async
//! half (tokio) owns the UDP socket, the QUIC links, the admin socket and
//! the metrics endpoint, and talks to the driver thread through bounded
//! channels; a full channel drops and counts rather than grows.
//!
//! Links: every registered peer is a link; the peer with the lower key
//! dials, the other accepts, so two peers hold one link. A dialler retries
//! every second while the link is down.

use crate::admin::{self, Status};
use crate::catchup::{self, Download, Step};
use crate::config::Config;
use crate::driver::{Driver, Effect, HeightRecord, PeerSnapshot, StatementSigner};
use crate::keys;
use crate::relay::{Hop, RelayTable};
use crate::rendezvous::{self, Rendezvous};
use crate::store::{file_pages_mapped, LedgerNodes, Store, StoreConfig, MAPPED_BUDGET};
use crate::submissions::{self, Submitters};
use crate::subscriptions::Subscriptions;
use crate::wallet_service::{self, WalletAt};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use dag::event::Event;
use dag::identity::{PeerKey, Signer};
use dag::ledger::checkpoint::{Certified, Checkpoint, Handover};
use dag::ledger::genesis::Genesis;
use dag::wire::{PeerMessage, SnapshotOffer, WalletMessage, SNAPSHOT_CHUNK};
use dag::OwnProgress;
use nat::transport::{Authorize, Link, LinkSigner, Transport, TransportConfig};
use rand_core::{OsRng, RngCore};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

/// How often we tell every peer what we hold.
const FRONTIER_EVERY: Duration = Duration::from_millis(500);
/// Writes gather for at most this long before they are made durable even
/// though inputs keep coming (finality notices wait for them).
const MAX_BURST: Duration = Duration::from_millis(15);
/// How often the LMDB files' pages are unmapped from the process (see
/// `Store::release_mapped_pages`) and freed heap memory is handed back.
const RELEASE_MAPPED_EVERY: Duration = Duration::from_secs(2);
/// How often the file pages mapped into the process are checked against
/// `MAPPED_BUDGET` (a read of `/proc/self/statm`, a few microseconds).
const MAPPED_CHECK_EVERY: Duration = Duration::from_millis(50);
/// Inputs waiting for the driver thread, at most.
const INPUT_QUEUE: usize = 10_000;
/// Frames waiting to be handed to links, at most.
const OUTPUT_QUEUE: usize = 10_000;

enum Input {
    Msg(PeerKey, PeerMessage),
    /// Encoded transactions from a wallet link.
    Submit(WalletAt, Vec<Vec<u8>>),
    /// Another request from a wallet link (see `wallet_service`); boxed,
    /// as the largest requests are far larger than the other inputs.
    Wallet(WalletAt, Box<WalletMessage>),
    Connected(PeerKey),
    Disconnected(PeerKey),
    Status(oneshot::Sender<Status>),
    Height(u64, oneshot::Sender<Option<HeightRecord>>),
}

enum Out {
    /// To a peer, or to a wallet's newest link.
    Send(PeerKey, Bytes),
    /// To one link of a wallet (the answer to what came on it).
    ToWallet(WalletAt, Bytes),
    Broadcast(Bytes),
}

/// Counters of the async half.
#[derive(Default)]
struct NetCounters {
    malformed_messages: AtomicU64,
    input_queue_full: AtomicU64,
    output_queue_full: AtomicU64,
    link_send_refused: AtomicU64,
    wallet_requests_refused: AtomicU64,
}

/// Peer links and wallet links, by the other end's key.
#[derive(Default)]
struct LinkSets {
    peers: HashMap<PeerKey, Link>,
    /// A wallet may hold a few links at once (`wallet online` and a
    /// command run meanwhile), oldest first.
    wallets: HashMap<PeerKey, Vec<Link>>,
    /// Wallet links that said `Listen` (an online wallet's): a new link of
    /// the same wallet never evicts one of these.
    listening: HashSet<usize>,
    /// Relay sessions of wallets' channels (kept here: a relayed frame
    /// looks up its session and its next link under one lock).
    relay: RelayTable,
}

impl LinkSets {
    fn wallet(&self, at: WalletAt) -> Option<&Link> {
        self.wallets
            .get(&at.key)?
            .iter()
            .find(|l| l.id() == at.link)
    }
}

type Links = Arc<Mutex<LinkSets>>;

/// Wallets linked at once, at most; more are refused.
const MAX_WALLET_LINKS: usize = 1024;
/// Links one wallet key may hold at once; a new one beyond closes the oldest.
const MAX_LINKS_PER_WALLET: usize = 4;
/// Submitted transactions remembered for their submitter's notification.
const MAX_TRACKED_SUBMISSIONS: usize = 1_000_000;

pub fn run(dir: PathBuf, cfg: Config) -> Result<()> {
    let genesis_path = dir.join(&cfg.genesis);
    let genesis = Genesis::from_json(
        &std::fs::read(&genesis_path)
            .with_context(|| format!("reading genesis file {}", genesis_path.display()))?,
    )?;
    let chain = genesis.chain_id();
    let secret = keys::load(&dir)?;
    let me = Signer::from_seed(secret, [0; 32]).key();
    let Some(entry) = genesis.peers.iter().find(|p| p.key == me) else {
        // Peers registered after genesis join through catch-up (not built yet).
        bail!(
            "key {me} is not a genesis peer of chain {chain}; joining a running chain is not supported yet"
        );
    };
    if entry.name != cfg.name {
        warn!(config = %cfg.name, genesis = %entry.name, "the config's name differs from the genesis entry");
    }
    let store = Store::open(
        dir.join("db"),
        &StoreConfig::new(chain, (cfg.map_size_mb as usize) << 20)
            .max_map_size((cfg.max_map_size_mb as usize) << 20),
    )
    .context("opening the store")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move { serve(dir, cfg, genesis, secret, store).await })
}

async fn serve(
    dir: PathBuf,
    cfg: Config,
    genesis: Genesis,
    secret: [u8; 32],
    store: Store,
) -> Result<()> {
    let chain = genesis.chain_id();
    let peers: Vec<(PeerKey, SocketAddr)> = genesis.peers.iter().map(|p| (p.key, p.addr)).collect();
    let allowed: Arc<RwLock<HashSet<PeerKey>>> =
        Arc::new(RwLock::new(peers.iter().map(|(k, _)| *k).collect()));
    // Registered peers get peer links; any other key is a wallet, whose
    // links carry only wallet messages (and are capped in number).
    let authorize: Authorize = Arc::new(|_: &PeerKey| true);
    let link_signer: Arc<dyn LinkSigner> = Arc::new(Mutex::new(keys::signer(secret)));
    let (transport, mut raw) =
        Transport::bind(link_config(cfg.listen, chain), link_signer, authorize)
            .await
            .with_context(|| format!("binding UDP {}", cfg.listen))?;
    let me = transport.key();
    info!(name = %cfg.name, key = %me, %chain, listen = %transport.local_addr(), "peer starting");

    let counters = Arc::new(NetCounters::default());
    let links: Links = Arc::new(Mutex::new(LinkSets::default()));
    let (in_tx, in_rx) = mpsc::channel::<Input>(INPUT_QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(OUTPUT_QUEUE);

    // The driver thread.
    let driver_thread = {
        let transport = transport.clone();
        let links = links.clone();
        let counters = counters.clone();
        let cfg = cfg.clone();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("driver".into())
            .spawn(move || {
                driver_loop(
                    genesis, secret, store, cfg, in_rx, out_tx, transport, links, counters,
                    ready_tx,
                )
            })?;
        // Replay must finish before links come up.
        ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the driver thread stopped while starting"))??;
        handle
    };

    // Outgoing frames to links.
    {
        let links = links.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            while let Some(out) = out_rx.recv().await {
                let targets: Vec<(PeerKey, Link)> = {
                    let l = links.lock().unwrap_or_else(|p| p.into_inner());
                    match &out {
                        Out::Send(to, _) => l
                            .peers
                            .get(to)
                            .or_else(|| l.wallets.get(to).and_then(|v| v.last()))
                            .map(|x| vec![(*to, x.clone())])
                            .unwrap_or_default(),
                        Out::ToWallet(at, _) => l
                            .wallet(*at)
                            .map(|x| vec![(at.key, x.clone())])
                            .unwrap_or_default(),
                        Out::Broadcast(_) => l.peers.iter().map(|(k, x)| (*k, x.clone())).collect(),
                    }
                };
                let bytes = match out {
                    Out::Send(_, b) | Out::ToWallet(_, b) | Out::Broadcast(b) => b,
                };
                for (k, link) in targets {
                    if let Err(e) = link.send(bytes.clone()) {
                        counters.link_send_refused.fetch_add(1, Relaxed);
                        debug!(peer = %k, "send refused: {e}");
                    }
                }
            }
        });
    }

    // Accept inbound links.
    {
        let transport = transport.clone();
        let links = links.clone();
        let in_tx = in_tx.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            while let Some(link) = transport.accept().await {
                let is_peer = allowed
                    .read()
                    .map(|a| a.contains(&link.peer()))
                    .unwrap_or(false);
                if is_peer {
                    adopt(link, &links, &in_tx, &counters);
                } else {
                    adopt_wallet(link, &links, &in_tx, &counters);
                }
            }
        });
    }

    // Dial the peers with higher keys, and keep those links up.
    for (key, addr) in peers.into_iter().filter(|(k, _)| *k > me) {
        let transport = transport.clone();
        let links = links.clone();
        let in_tx = in_tx.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            loop {
                let up = links
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .peers
                    .contains_key(&key);
                if !up {
                    match transport.connect(addr, key).await {
                        Ok(link) => adopt(link, &links, &in_tx, &counters),
                        Err(e) => debug!(peer = %key, %addr, "dial failed: {e}"),
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    // Raw datagrams are for wallets' NAT traversal: address echoes are
    // answered (never larger than the request); the rest is drained so the
    // queue never fills.
    {
        let transport = transport.clone();
        tokio::spawn(async move {
            while let Some(d) = raw.recv().await {
                if let Some(reply) = nat::echo::answer(&d.bytes, d.from) {
                    // A full socket buffer drops the reply, as UDP would.
                    let _ = transport.send_raw(d.from, &reply);
                }
            }
        });
    }

    // The admin socket.
    let sock_path = admin::socket_path(&dir);
    let _ = std::fs::remove_file(&sock_path);
    let listener = tokio::net::UnixListener::bind(&sock_path)
        .with_context(|| format!("binding admin socket {}", sock_path.display()))?;
    {
        let in_tx = in_tx.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let in_tx = in_tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = admin_session(stream, in_tx).await {
                        debug!("admin session: {e}");
                    }
                });
            }
        });
    }

    // Prometheus metrics.
    if let Some(addr) = cfg.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics endpoint {addr}"))?;
        info!(%addr, "metrics endpoint");
        let in_tx = in_tx.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let in_tx = in_tx.clone();
                tokio::spawn(async move {
                    let _ = metrics_session(stream, in_tx).await;
                });
            }
        });
    }

    // A driver that stopped on an error (a store failure, a state that left
    // the chain) ends the process with that error: a supervisor sees a
    // failure, not a clean exit.
    let ended = tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            info!("interrupted, stopping");
            Ok(())
        }
        r = wait_thread(driver_thread) => {
            error!("the driver thread stopped");
            r
        }
    };
    transport.close().await;
    let _ = std::fs::remove_file(&sock_path);
    ended
}

/// Peers notice a dead link (a peer killed and restarted) within 5 s, so
/// the dialling side reconnects soon after; keep-alives every second make
/// that possible on an otherwise idle link.
fn link_config(listen: SocketAddr, chain: proofs::Hash) -> TransportConfig {
    let mut c = TransportConfig::new(listen, chain);
    c.idle_timeout = Duration::from_secs(5);
    c.keep_alive = Duration::from_secs(1);
    c
}

/// The driver thread's end: its error, if it stopped on one.
async fn wait_thread(h: std::thread::JoinHandle<Result<()>>) -> Result<()> {
    tokio::task::spawn_blocking(move || match h.join() {
        Ok(Err(e)) => {
            error!("driver: {e:#}");
            Err(e)
        }
        Err(_) => {
            error!("driver thread panicked");
            bail!("the driver thread panicked")
        }
        Ok(Ok(())) => Ok(()),
    })
    .await
    .context("waiting for the driver thread")?
}

/// Take a new authenticated link: keep it (replacing an older one to the
/// same peer) and read its frames into the driver's queue.
fn adopt(link: Link, links: &Links, in_tx: &mpsc::Sender<Input>, counters: &Arc<NetCounters>) {
    let key = link.peer();
    info!(peer = %key, addr = %link.remote_addr(), "link up");
    if let Some(old) = links
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .peers
        .insert(key, link.clone())
    {
        old.close("replaced");
    }
    if in_tx.try_send(Input::Connected(key)).is_err() {
        counters.input_queue_full.fetch_add(1, Relaxed);
    }
    let links = links.clone();
    let in_tx = in_tx.clone();
    let counters = counters.clone();
    tokio::spawn(async move {
        while let Some(frame) = link.recv().await {
            match PeerMessage::decode(&frame) {
                Ok(PeerMessage::Relay { attempt, data }) => {
                    let mut l = links.lock().unwrap_or_else(|p| p.into_inner());
                    let len = data.len();
                    if let Some(w) = l.relay.from_peer(&attempt, key, len, Instant::now()) {
                        if let Some(to) = l.wallet(w) {
                            let _ = to
                                .send(Bytes::from(WalletMessage::Relay { attempt, data }.encode()));
                        }
                    }
                }
                Ok(msg) => {
                    // Waiting here (not dropping) lets QUIC flow control
                    // slow a peer that sends faster than we process.
                    if in_tx.send(Input::Msg(key, msg)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    counters.malformed_messages.fetch_add(1, Relaxed);
                    debug!(peer = %key, "malformed message: {e}");
                }
            }
        }
        {
            let mut l = links.lock().unwrap_or_else(|p| p.into_inner());
            // A newer link to the same peer may have replaced this one.
            if l.peers.get(&key).is_some_and(|cur| cur.id() == link.id()) {
                l.peers.remove(&key);
                let _ = in_tx.try_send(Input::Disconnected(key));
            }
        }
        info!(peer = %key, "link down");
    });
}

/// A wallet's link: its frames are wallet messages; submissions and the
/// requests of `wallet_service` are taken from a wallet.
fn adopt_wallet(
    link: Link,
    links: &Links,
    in_tx: &mpsc::Sender<Input>,
    counters: &Arc<NetCounters>,
) {
    let key = link.peer();
    {
        let mut l = links.lock().unwrap_or_else(|p| p.into_inner());
        if l.wallets.len() >= MAX_WALLET_LINKS && !l.wallets.contains_key(&key) {
            link.close("too many wallets");
            return;
        }
        let LinkSets {
            wallets, listening, ..
        } = &mut *l;
        let mine = wallets.entry(key).or_default();
        if mine.len() >= MAX_LINKS_PER_WALLET {
            // The oldest that is not an online wallet's (commands come and
            // go; `wallet online` stays).
            let at = mine
                .iter()
                .position(|x| !listening.contains(&x.id()))
                .unwrap_or(0);
            let old = mine.remove(at);
            listening.remove(&old.id());
            old.close("replaced");
        }
        mine.push(link.clone());
    }
    let at = WalletAt {
        key,
        link: link.id(),
    };
    debug!(wallet = %key, addr = %link.remote_addr(), "wallet link up");
    let links = links.clone();
    let in_tx = in_tx.clone();
    let counters = counters.clone();
    tokio::spawn(async move {
        while let Some(frame) = link.recv().await {
            match WalletMessage::decode(&frame) {
                Ok(WalletMessage::Submit(txs)) => {
                    if in_tx.send(Input::Submit(at, txs)).await.is_err() {
                        return;
                    }
                }
                Ok(WalletMessage::Relay { attempt, data }) => {
                    let mut l = links.lock().unwrap_or_else(|p| p.into_inner());
                    let len = data.len();
                    match l.relay.from_wallet(&attempt, at, len, Instant::now()) {
                        Some(Hop::Wallet(w)) => {
                            if let Some(to) = l.wallet(w) {
                                let m = WalletMessage::Relay { attempt, data };
                                let _ = to.send(Bytes::from(m.encode()));
                            }
                        }
                        Some(Hop::Peer(k)) => {
                            if let Some(to) = l.peers.get(&k) {
                                let _ = to.send(Bytes::from(
                                    PeerMessage::Relay { attempt, data }.encode(),
                                ));
                            }
                        }
                        None => {}
                    }
                }
                Ok(
                    m @ (WalletMessage::Register { .. }
                    | WalletMessage::Sync(_)
                    | WalletMessage::GetHandovers { .. }
                    | WalletMessage::PutReceiveKeys { .. }
                    | WalletMessage::GetPayTo { .. }
                    | WalletMessage::GetInclusion { .. }
                    | WalletMessage::Listen { .. }
                    | WalletMessage::Reach { .. }
                    | WalletMessage::Answer { .. }
                    | WalletMessage::Subscribe { .. }),
                ) => {
                    if in_tx.send(Input::Wallet(at, Box::new(m))).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(_) => {
                    counters.malformed_messages.fetch_add(1, Relaxed);
                }
            }
        }
        let mut l = links.lock().unwrap_or_else(|p| p.into_inner());
        l.listening.remove(&link.id());
        if let Some(mine) = l.wallets.get_mut(&key) {
            mine.retain(|cur| cur.id() != link.id());
            if mine.is_empty() {
                l.wallets.remove(&key);
            }
        }
    });
}

async fn admin_session(stream: tokio::net::UnixStream, in_tx: mpsc::Sender<Input>) -> Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r.take(admin::MAX_REQUEST as u64))
        .read_line(&mut line)
        .await?;
    let req: Vec<&str> = line.split_whitespace().collect();
    let mut out = match req.as_slice() {
        [admin::STATUS] => {
            let (tx, rx) = oneshot::channel();
            in_tx.send(Input::Status(tx)).await?;
            serde_json::to_vec(&tokio::time::timeout(Duration::from_secs(5), rx).await??)?
        }
        [admin::HEIGHT, h] => {
            let h: u64 = h.parse()?;
            let (tx, rx) = oneshot::channel();
            in_tx.send(Input::Height(h, tx)).await?;
            let rec = tokio::time::timeout(Duration::from_secs(5), rx).await??;
            serde_json::to_vec(&rec.map(|r| {
                serde_json::json!({
                    "height": r.height,
                    "round": r.round,
                    "leader": r.leader.to_string(),
                    "events": r.events.len(),
                    "history": r.roots.history.to_string(),
                    "history_leaves": r.roots.history_leaves,
                    "outputs": r.roots.outputs.to_string(),
                    "keys": r.roots.keys.to_string(),
                    "registry": r.roots.registry.to_string(),
                })
            }))?
        }
        _ => b"{\"error\":\"unknown request\"}".to_vec(),
    };
    out.push(b'\n');
    w.write_all(&out).await?;
    Ok(())
}

async fn metrics_session(
    mut stream: tokio::net::TcpStream,
    in_tx: mpsc::Sender<Input>,
) -> Result<()> {
    // Read (and ignore) the request head; every path gets the metrics.
    let mut buf = [0u8; 2048];
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
    let (tx, rx) = oneshot::channel();
    in_tx.send(Input::Status(tx)).await?;
    let s = tokio::time::timeout(Duration::from_secs(5), rx).await??;
    let body = prometheus_text(&s);
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    Ok(())
}

/// The status figures in the Prometheus text format.
pub fn prometheus_text(s: &Status) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, v: f64| {
        out.push_str(&format!(
            "# HELP pos_{name} {help}\n# TYPE pos_{name} gauge\npos_{name} {v}\n"
        ));
    };
    gauge("round", "First round not yet sequenced.", s.round as f64);
    gauge("height", "Last committed height.", s.height as f64);
    gauge(
        "committee_size",
        "Members of the current committee.",
        s.committee_size as f64,
    );
    gauge(
        "peers_connected",
        "Authenticated peer links.",
        s.peers_connected as f64,
    );
    gauge(
        "lag_rounds",
        "Rounds seen but not yet sequenced.",
        s.lag_rounds as f64,
    );
    gauge(
        "mempool_txs",
        "Transactions waiting to be proposed.",
        s.mempool_txs as f64,
    );
    gauge(
        "disk_bytes",
        "Size of the LMDB data file.",
        s.disk_bytes as f64,
    );
    gauge(
        "dropped_datagrams",
        "Datagrams and frames dropped.",
        s.dropped_datagrams as f64,
    );
    gauge(
        "equivocations",
        "Equivocations detected.",
        s.equivocations as f64,
    );
    gauge("txs_applied", "Transactions applied.", s.txs_applied as f64);
    gauge(
        "events_requeued",
        "Own events left unordered below the horizon, their transactions proposed again.",
        s.events_requeued as f64,
    );
    gauge(
        "snapshots",
        "State snapshots taken since start.",
        s.snapshots as f64,
    );
    gauge(
        "state_cache_bytes",
        "Memory the ledger state takes against state_cache_mb (estimate): all of it while held in memory, else the writes buffered before the state cache's disk.",
        s.state_cache_bytes as f64,
    );
    gauge(
        "state_on_disk",
        "1 once the ledger state has outgrown state_cache_mb and moved to the state cache.",
        f64::from(u8::from(s.state_on_disk)),
    );
    gauge(
        "outputs_in_memory",
        "Outputs whose state is held in memory (all, or the unspent ones once on disk).",
        s.outputs_in_memory as f64,
    );
    gauge(
        "handovers_certified",
        "Committee hand-overs certified since start.",
        s.handovers_certified as f64,
    );
    gauge(
        "txs_rejected",
        "Ordered transactions rejected.",
        s.txs_rejected as f64,
    );
    out.push_str("# HELP pos_drops_total Drops by reason.\n# TYPE pos_drops_total counter\n");
    for (reason, n) in &s.drops {
        out.push_str(&format!("pos_drops_total{{reason=\"{reason}\"}} {n}\n"));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn driver_loop(
    genesis: Genesis,
    secret: [u8; 32],
    store: Store,
    cfg: Config,
    mut in_rx: mpsc::Receiver<Input>,
    out_tx: mpsc::Sender<Out>,
    transport: Transport,
    links: Links,
    counters: Arc<NetCounters>,
    ready: std_mpsc::Sender<Result<()>>,
) -> Result<()> {
    let start = Instant::now();
    let now = || start.elapsed().as_millis() as u64;
    let chain = genesis.chain_id();

    let started = (|| -> Result<(Driver, u64, LedgerNodes)> {
        // What grows with the chain lives in LMDB, not in memory.
        let nodes = LedgerNodes::open(
            &store,
            open_state_cache(&store)?,
            (cfg.state_cache_mb as usize).saturating_mul(1 << 20),
        )?;
        let (mut driver, replay_from) = start_driver(&genesis, secret, &store, &nodes, now())?;
        tune(&mut driver, &cfg);
        driver.set_height_hook(nodes.height_tagger());
        // Replay our event log from the snapshot on: the core re-derives
        // the committed heights, which must equal the stored ones.
        let mut events: Vec<Event> = Vec::new();
        for (_, _, bytes) in store.events_from_round(replay_from)? {
            events.push(
                proofs::decode(&bytes, dag::wire::MAX_PEER_MESSAGE).context("a stored event")?,
            );
        }
        for (_, bytes) in store.own_events_from(replay_from)? {
            events.push(
                proofs::decode(&bytes, dag::wire::MAX_PEER_MESSAGE)
                    .context("a stored own event")?,
            );
        }
        events.sort_by_key(|e| e.body.round);
        let stored_heights = store.last_height()?.unwrap_or(0);
        if !events.is_empty() {
            info!(
                events = events.len(),
                heights = stored_heights,
                "replaying the event log"
            );
        }
        replay_with_progress(&mut driver, events, &mut |height| {
            nodes.set_height(height);
            nodes
                .write_back(false, height)
                .context("storing replayed state")
        })?;
        spill_if_outgrown(&store, &nodes, &mut driver)?;
        Ok((driver, stored_heights, nodes))
    })();
    let (mut driver, stored_heights, nodes) = match started {
        Ok(x) => {
            let _ = ready.send(Ok(()));
            x
        }
        Err(e) => {
            let _ = ready.send(Err(anyhow::anyhow!("{e:#}")));
            return Err(e);
        }
    };
    let mut last_frontier = Instant::now() - FRONTIER_EVERY;
    let mut last_release = Instant::now();
    let mut last_mapped_check = Instant::now();
    let mut connected: HashSet<PeerKey> = HashSet::new();
    // Which wallet submitted which transaction (oldest forgotten first).
    let mut submitters = Submitters::new(MAX_TRACKED_SUBMISSIONS);
    // When each peer was last answered from the event log, or offered a
    // snapshot.
    let mut served_from_log: HashMap<PeerKey, Instant> = HashMap::new();
    let mut offered: HashMap<PeerKey, Instant> = HashMap::new();
    // Snapshots we took, by height: the round below which they need no
    // events (the log is pruned to there once one is certified).
    let mut snapshot_horizons: BTreeMap<u64, u64> = BTreeMap::new();
    // The snapshot we are fetching, if we are far behind.
    let mut download: Option<Download> = None;

    let mut burst = Burst::default();
    // Signs the login names this peer vouches for.
    let mut voucher_signer = keys::signer(secret);
    let mut wallet_budget = wallet_service::Budget::default();
    let mut rendezvous = Rendezvous::default();
    let mut subscriptions: Subscriptions<WalletAt> = Subscriptions::default();
    let mut last_rendezvous_expiry = Instant::now();
    // An input taken while gathering submissions, handled next.
    let mut deferred: Option<Input> = None;
    // Finality notices wait until their heights are on disk.
    let mut pending_notices: Vec<(WalletAt, Bytes)> = Vec::new();
    // When the writes now pending started gathering.
    let mut burst_started: Option<Instant> = None;

    loop {
        // Effects first: they may include sends the network is waiting for.
        while let Some(effect) = driver.poll_effect() {
            match effect {
                Effect::PersistOwnThenBroadcast { round, event } => {
                    store
                        .put_own_event(round, &proofs::encode(&*event))
                        .context("persisting our own event")?;
                    send(
                        &out_tx,
                        &counters,
                        Out::Broadcast(frame(&PeerMessage::Events(vec![(*event).clone()]))),
                    );
                }
                Effect::Send { to, msg } => send(&out_tx, &counters, Out::Send(to, frame(&msg))),
                Effect::Broadcast(msg) => send(&out_tx, &counters, Out::Broadcast(frame(&msg))),
                Effect::Committed(record) => {
                    if record.height <= stored_heights {
                        check_replayed(&store, &record)?;
                    } else {
                        burst
                            .heights
                            .push((record.height, proofs::encode(&*record)));
                        burst_started.get_or_insert_with(Instant::now);
                    }
                }
                Effect::Snapshot { height, horizon } => {
                    // The heights before it go first: a restart from this
                    // snapshot appends the heights after it.
                    burst.flush(&store, &nodes, driver.ledger().height())?;
                    if driver.ledger().height() != height {
                        // Asked for during a replay, which has gone on.
                        debug!(height, "snapshot skipped: the ledger moved on");
                        continue;
                    }
                    let t = Instant::now();
                    match store_snapshot(&store, &driver, height) {
                        Ok(len) => {
                            info!(
                                height,
                                bytes = len,
                                ms = t.elapsed().as_millis() as u64,
                                "snapshot stored"
                            );
                            snapshot_horizons.insert(height, horizon);
                            while snapshot_horizons.len() > 4 {
                                snapshot_horizons.pop_first();
                            }
                        }
                        Err(e) => error!(height, "storing a snapshot: {e:#}"),
                    }
                    // The export read the whole state: let its pages go.
                    nodes.cache().release_mapped_pages();
                    return_free_heap();
                }
                Effect::SnapshotCertified(cert) => {
                    let height = cert.statement.height;
                    if store
                        .put_snapshot_certificate(height, &proofs::encode(&*cert))
                        .context("storing a snapshot certificate")?
                    {
                        if let Some(horizon) = snapshot_horizons.get(&height) {
                            // Keep the recent window for peers a little
                            // behind; below it, the certified snapshot
                            // replaces the events.
                            let keep = driver
                                .core()
                                .next_round()
                                .saturating_sub(cfg.event_log_rounds)
                                .min(*horizon);
                            let n = store.prune_events_below(keep)?
                                + store.prune_own_events_below(keep)?;
                            debug!(height, below = keep, removed = n, "event log pruned");
                        }
                    }
                }
                Effect::Diverged { ours, certified } => {
                    // Going on would sign and serve a state that is not the
                    // chain's: stop, with the evidence, for the operator.
                    bail!(
                        "this peer's state left the chain at height {}: its roots {:?}, but more \
                         than 2/3 of the stake signed {:?} (signers {:?}); restore the directory \
                         from a good copy or start it afresh",
                        ours.height,
                        ours.roots,
                        certified.statement.roots,
                        certified
                            .signatures
                            .iter()
                            .map(|(i, _)| *i)
                            .collect::<Vec<_>>()
                    );
                }
                Effect::HandoverCertified(cert) => {
                    store
                        .put_handover(cert.statement.snapshot, &proofs::encode(&*cert))
                        .context("storing a hand-over")?;
                }
                Effect::Finalized {
                    height,
                    outcomes,
                    created_for,
                } => {
                    for (w, msg) in submitters.notices(height, outcomes) {
                        pending_notices.push((w, Bytes::from(msg.encode())));
                    }
                    let incoming = subscriptions.notices(height, &created_for);
                    if !incoming.is_empty() {
                        let l = links.lock().unwrap_or_else(|p| p.into_inner());
                        for (w, msg) in incoming {
                            if l.wallet(w).is_some() {
                                pending_notices.push((w, Bytes::from(msg.encode())));
                            } else {
                                subscriptions.remove(w);
                            }
                        }
                    }
                }
            }
        }
        if last_release.elapsed() >= RELEASE_MAPPED_EVERY {
            last_release = Instant::now();
            last_mapped_check = last_release;
            store.release_mapped_pages();
            nodes.cache().release_mapped_pages();
            return_free_heap();
        } else if last_mapped_check.elapsed() >= MAPPED_CHECK_EVERY {
            // Reads can map pages far faster than every 2 s allows for (a
            // state on disk, a peer served from the event log): release as
            // soon as the file pages mapped exceed their budget.
            last_mapped_check = Instant::now();
            if file_pages_mapped().is_some_and(|b| b > MAPPED_BUDGET) {
                store.release_mapped_pages();
                nodes.cache().release_mapped_pages();
            }
        }
        if last_frontier.elapsed() >= FRONTIER_EVERY {
            last_frontier = Instant::now();
            send(
                &out_tx,
                &counters,
                Out::Broadcast(frame(&driver.frontier_message())),
            );
        }
        // Nothing more to do right now, or finality notices have waited long
        // enough under a steady stream of inputs: make the burst durable.
        let overdue = burst_started.is_some_and(|t: Instant| t.elapsed() >= MAX_BURST);
        if in_rx.is_empty() || overdue {
            burst_started = None;
            burst.flush(&store, &nodes, driver.ledger().height())?;
            spill_if_outgrown(&store, &nodes, &mut driver)?;
            for (w, b) in pending_notices.drain(..) {
                send(&out_tx, &counters, Out::ToWallet(w, b));
            }
        }
        let wait = if in_rx.is_empty() {
            driver
                .poll_timeout()
                .map(|t| t.saturating_sub(now()))
                .unwrap_or(100)
                .clamp(1, FRONTIER_EVERY.as_millis() as u64)
        } else {
            0
        };
        let input = match deferred.take() {
            Some(i) => i,
            None => match in_rx.blocking_recv_timeout(Duration::from_millis(wait)) {
                Received::Input(i) => i,
                Received::Timeout => {
                    driver.handle_timeout(now());
                    continue;
                }
                Received::Closed => return Ok(()),
            },
        };
        match input {
            Input::Msg(from, PeerMessage::SnapshotFetch { height, offset }) => {
                if let Some(data) = store.snapshot_chunk(height, offset, SNAPSHOT_CHUNK)? {
                    let msg = PeerMessage::SnapshotChunk {
                        height,
                        offset,
                        data,
                    };
                    send(&out_tx, &counters, Out::Send(from, frame(&msg)));
                }
            }
            Input::Msg(from, PeerMessage::SnapshotOffer(offer)) => {
                if download.as_ref().is_some_and(|d| !d.stalled())
                    || offer.checkpoint.statement.height <= driver.ledger().height()
                {
                    continue;
                }
                let started = catchup::check_offer(&genesis, &offer).and_then(|chain| {
                    Download::start(from, *offer, chain, cfg.max_snapshot_mb << 20)
                });
                match started {
                    Ok((d, fetch)) => {
                        download = Some(d);
                        send(&out_tx, &counters, Out::Send(from, frame(&fetch)));
                    }
                    Err(e) => warn!(from = %from, "refused a snapshot offer: {e:#}"),
                }
            }
            Input::Msg(
                from,
                PeerMessage::SnapshotChunk {
                    height,
                    offset,
                    data,
                },
            ) => {
                let Some(d) = download.as_mut() else {
                    continue;
                };
                match d.on_chunk(from, height, offset, data) {
                    Ok(None) => {}
                    Ok(Some(Step::Fetch(m))) => {
                        send(&out_tx, &counters, Out::Send(from, frame(&m)))
                    }
                    Ok(Some(Step::Done(bytes))) => {
                        let d = download.take().expect("downloading");
                        burst.flush(&store, &nodes, driver.ledger().height())?;
                        match install(&genesis, secret, &store, d, bytes, now()) {
                            Ok((mut new, installed)) => {
                                make_base(&store, &nodes, &mut new, installed)?;
                                tune(&mut new, &cfg);
                                new.set_height_hook(nodes.height_tagger());
                                driver = new;
                                info!(
                                    height = driver.ledger().height(),
                                    round = driver.core().next_round(),
                                    "caught up from a certified snapshot; following the DAG"
                                );
                                send(
                                    &out_tx,
                                    &counters,
                                    Out::Broadcast(frame(&driver.frontier_message())),
                                );
                            }
                            Err(e) => warn!("the downloaded snapshot was refused: {e:#}"),
                        }
                    }
                    Err(e) => {
                        warn!(from = %from, "snapshot download abandoned: {e:#}");
                        download = None;
                    }
                }
            }
            Input::Msg(
                from,
                msg @ (PeerMessage::Introduce(_) | PeerMessage::IntroduceAnswer { .. }),
            ) => {
                let view = RendezvousView {
                    driver: &driver,
                    links: &links,
                };
                let mut ctx = rendezvous_ctx(&view, &cfg, chain, &mut voucher_signer);
                let out = match msg {
                    PeerMessage::Introduce(i) => {
                        rendezvous.introduce(&mut ctx, Instant::now(), from, *i)
                    }
                    PeerMessage::IntroduceAnswer { attempt, answer } => {
                        rendezvous.introduce_answer(&ctx, from, attempt, *answer)
                    }
                    _ => Vec::new(),
                };
                send_rendezvous(&out_tx, &counters, &links, out);
            }
            Input::Msg(from, msg) => {
                if let PeerMessage::Frontier(f) = &msg {
                    if needs_snapshot(&store, &driver, f)? {
                        // Our log no longer reaches back to what it lacks:
                        // offer our certified state instead (now and then).
                        let due = offered
                            .get(&from)
                            .is_none_or(|t| t.elapsed() >= Duration::from_secs(3));
                        if due {
                            if let Some(offer) = snapshot_offer(&store)? {
                                offered.insert(from, Instant::now());
                                let msg = PeerMessage::SnapshotOffer(Box::new(offer));
                                send(&out_tx, &counters, Out::Send(from, frame(&msg)));
                            }
                        }
                        continue;
                    }
                    // A peer behind our memory window catches up from our
                    // event log (the core only holds recent rounds). At most
                    // one log answer per peer per 200 ms: a small frontier
                    // must not buy megabytes of reads and sends at will.
                    let recent = served_from_log
                        .get(&from)
                        .is_some_and(|t: &Instant| t.elapsed() < Duration::from_millis(200));
                    if recent
                        && f.iter().map(|(_, r)| *r).min().unwrap_or(0) < driver.core().horizon()
                    {
                        continue;
                    }
                    if let Some(events) = from_log(&store, &driver, f)? {
                        served_from_log.insert(from, Instant::now());
                        send(
                            &out_tx,
                            &counters,
                            Out::Send(from, frame(&PeerMessage::Events(events))),
                        );
                        continue;
                    }
                }
                driver.handle_message(from, msg, now());
                // Keep every valid event (inserted or parked), for restarts.
                burst.events.extend(driver.take_accepted());
            }
            Input::Submit(wallet, txs) => {
                // Submissions that queued up while we were busy are checked
                // in one batch.
                let mut submits = vec![(wallet, txs)];
                let mut total = submits[0].1.len();
                while total < submissions::MAX_GATHERED {
                    match in_rx.try_recv() {
                        Ok(Input::Submit(w, t)) => {
                            total += t.len();
                            submits.push((w, t));
                        }
                        Ok(other) => {
                            deferred = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if cfg.test_lie == Some(wallet_service::Lie::DropSubmissions) {
                    // Tests only: say yes, do nothing.
                    for (wallet, txs) in submits {
                        let answers = txs
                            .iter()
                            .filter_map(|b| {
                                proofs::decode::<dag::ledger::transaction::Transaction>(b, b.len())
                                    .ok()
                            })
                            .map(|tx| (tx.id(), None))
                            .collect();
                        send(
                            &out_tx,
                            &counters,
                            Out::ToWallet(
                                wallet,
                                Bytes::from(WalletMessage::Submitted(answers).encode()),
                            ),
                        );
                    }
                    continue;
                }
                let max = driver.ledger().params().max_tx_bytes as usize;
                for (wallet, answers) in
                    submitters.check(submits, max, |txs| driver.submit_batch(txs))
                {
                    send(
                        &out_tx,
                        &counters,
                        Out::ToWallet(
                            wallet,
                            Bytes::from(WalletMessage::Submitted(answers).encode()),
                        ),
                    );
                }
            }
            Input::Wallet(wallet, msg) => {
                let msg = *msg;
                // Proofs and signature checks cost the driver thread far
                // more than the request costs the sender: a budget per
                // wallet key.
                if !wallet_budget.allow(wallet.key, Instant::now()) {
                    let refused = WalletMessage::Refused {
                        what: "request".into(),
                        reason: format!(
                            "more than {} requests per second (bursts of {})",
                            wallet_service::MAX_REQUESTS_PER_SEC,
                            wallet_service::MAX_REQUEST_BURST
                        ),
                    };
                    counters.wallet_requests_refused.fetch_add(1, Relaxed);
                    send(
                        &out_tx,
                        &counters,
                        Out::ToWallet(wallet, Bytes::from(refused.encode())),
                    );
                    continue;
                }
                if let WalletMessage::Listen { .. }
                | WalletMessage::Reach { .. }
                | WalletMessage::Answer { .. } = &msg
                {
                    let view = RendezvousView {
                        driver: &driver,
                        links: &links,
                    };
                    let mut ctx = rendezvous_ctx(&view, &cfg, chain, &mut voucher_signer);
                    let out = match msg {
                        WalletMessage::Listen { name } => {
                            let answer = match store.name_owner(&name) {
                                Ok(Some(k)) if k == wallet.key => {
                                    match rendezvous.listen(&name, wallet) {
                                        Ok(()) => {
                                            links
                                                .lock()
                                                .unwrap_or_else(|p| p.into_inner())
                                                .listening
                                                .insert(wallet.link);
                                            WalletMessage::Listening
                                        }
                                        Err(reason) => WalletMessage::Refused {
                                            what: "listen".into(),
                                            reason,
                                        },
                                    }
                                }
                                Ok(_) => WalletMessage::Refused {
                                    what: "listen".into(),
                                    reason: format!("{name:?} is not this wallet's name here"),
                                },
                                Err(e) => {
                                    warn!("reading a login name: {e}");
                                    WalletMessage::Refused {
                                        what: "listen".into(),
                                        reason: "the peer could not read its names".into(),
                                    }
                                }
                            };
                            vec![rendezvous::Out::Wallet(wallet, answer)]
                        }
                        WalletMessage::Reach { to, offer } => {
                            rendezvous.reach(&mut ctx, Instant::now(), wallet, &to, offer)
                        }
                        WalletMessage::Answer { attempt, offer } => {
                            rendezvous.answer(&mut ctx, wallet, attempt, offer)
                        }
                        _ => Vec::new(),
                    };
                    send_rendezvous(&out_tx, &counters, &links, out);
                    continue;
                }
                if let WalletMessage::Subscribe { keys } = &msg {
                    {
                        let l = links.lock().unwrap_or_else(|p| p.into_inner());
                        subscriptions.retain(|w| l.wallet(*w).is_some());
                    }
                    let answer = match subscriptions.set(wallet, keys) {
                        Ok(n) => WalletMessage::Subscribed(n),
                        Err(reason) => WalletMessage::Refused {
                            what: "subscribe".into(),
                            reason,
                        },
                    };
                    send(
                        &out_tx,
                        &counters,
                        Out::ToWallet(wallet, Bytes::from(answer.encode())),
                    );
                    continue;
                }
                if let Some(answer) = wallet_service::answer(
                    &driver,
                    &store,
                    &mut voucher_signer,
                    chain,
                    &cfg.name,
                    wallet.key,
                    msg,
                ) {
                    let answer = wallet_service::tell(cfg.test_lie, answer);
                    send(
                        &out_tx,
                        &counters,
                        Out::ToWallet(wallet, Bytes::from(answer.encode())),
                    );
                }
            }
            Input::Disconnected(key) => {
                connected.remove(&key);
            }
            Input::Connected(key) => {
                connected.insert(key);
                send(
                    &out_tx,
                    &counters,
                    Out::Send(key, frame(&driver.frontier_message())),
                );
            }
            Input::Height(h, reply) => {
                // A bad record is the asker's answer (none), not the
                // driver's end.
                let rec = store
                    .heights_from(h, 1)
                    .unwrap_or_else(|e| {
                        warn!(height = h, "reading a height for the admin socket: {e}");
                        Vec::new()
                    })
                    .into_iter()
                    .find(|(k, _)| *k == h)
                    .and_then(|(_, b)| proofs::decode::<HeightRecord>(&b, usize::MAX).ok());
                let _ = reply.send(rec);
            }
            Input::Status(reply) => {
                let mut s = status(&driver, &store, &cfg, &transport, &counters, chain);
                // The state cache is on disk too.
                s.disk_bytes += nodes.cache().disk_bytes().unwrap_or(0);
                let ledger = driver.ledger();
                s.state_on_disk = ledger.uses_stores();
                s.state_cache_bytes = if s.state_on_disk {
                    nodes.state_pending_bytes()
                } else {
                    LedgerNodes::in_memory_bytes(ledger.output_count())
                } as u64;
                s.peers_connected = connected.len();
                s.rendezvous_requests = rendezvous.requests;
                {
                    let l = links.lock().unwrap_or_else(|p| p.into_inner());
                    s.relayed_bytes = l.relay.relayed_bytes;
                    s.drops.insert("relay_dropped".into(), l.relay.dropped);
                }
                let _ = reply.send(s);
            }
        }
        if driver.poll_timeout().is_some_and(|t| t <= now()) {
            driver.handle_timeout(now());
        }
        if last_rendezvous_expiry.elapsed() >= Duration::from_secs(1) {
            last_rendezvous_expiry = Instant::now();
            let view = RendezvousView {
                driver: &driver,
                links: &links,
            };
            let ctx = rendezvous_ctx(&view, &cfg, chain, &mut voucher_signer);
            let out = rendezvous.expire(&ctx, Instant::now());
            send_rendezvous(&out_tx, &counters, &links, out);
        }
    }
}

/// The rendezvous's view of this node for one call.
fn rendezvous_ctx<'a>(
    view: &'a RendezvousView<'a>,
    cfg: &'a Config,
    chain: proofs::Hash,
    signer: &'a mut dag::identity::Signer,
) -> rendezvous::Ctx<'a> {
    rendezvous::Ctx {
        chain,
        own_name: &cfg.name,
        signer,
        node: view,
        substitute_key: cfg.test_lie == Some(wallet_service::Lie::SubstituteLinkKey),
    }
}

/// The node as the rendezvous sees it.
struct RendezvousView<'a> {
    driver: &'a Driver,
    links: &'a Links,
}

impl rendezvous::Node for RendezvousView<'_> {
    fn peer_by_name(&self, name: &str) -> Option<PeerKey> {
        self.driver.ledger().peer_by_name(name).map(|r| r.key)
    }

    fn peer_linked(&self, key: &PeerKey) -> bool {
        let l = self.links.lock().unwrap_or_else(|p| p.into_inner());
        l.peers.contains_key(key)
    }

    fn wallet_linked(&self, at: WalletAt) -> bool {
        let l = self.links.lock().unwrap_or_else(|p| p.into_inner());
        l.wallet(at).is_some()
    }

    fn peer_rtt_ms(&self, key: &PeerKey) -> u32 {
        let l = self.links.lock().unwrap_or_else(|p| p.into_inner());
        l.peers.get(key).map_or(0, rtt_ms)
    }

    fn wallet_rtt_ms(&self, at: WalletAt) -> u32 {
        let l = self.links.lock().unwrap_or_else(|p| p.into_inner());
        l.wallet(at).map_or(0, rtt_ms)
    }
}

fn rtt_ms(link: &Link) -> u32 {
    link.rtt().as_millis().min(10_000) as u32
}

/// Send what the rendezvous returned.
fn send_rendezvous(
    out_tx: &mpsc::Sender<Out>,
    counters: &NetCounters,
    links: &Links,
    out: Vec<rendezvous::Out>,
) {
    for o in out {
        let to = match o {
            rendezvous::Out::OpenRelay {
                attempt,
                wallets,
                peer,
            } => {
                let mut l = links.lock().unwrap_or_else(|p| p.into_inner());
                l.relay.open(attempt, wallets, peer, Instant::now());
                continue;
            }
            rendezvous::Out::Wallet(at, m) => Out::ToWallet(at, Bytes::from(m.encode())),
            rendezvous::Out::Peer(k, m) => Out::Send(k, frame(&m)),
        };
        send(out_tx, counters, to);
    }
}

/// The config's local tuning of a driver (after a start or a catch-up).
fn tune(driver: &mut Driver, cfg: &Config) {
    driver.set_snapshot_interval(cfg.snapshot_interval);
    driver.set_round_wait_ms(cfg.round_wait_ms);
    driver.set_idle_round_ms(cfg.idle_round_ms);
}

/// The driver to start with: from our newest stored snapshot if there is
/// one (then only the events from its horizon on need replaying), else from
/// genesis, with its ledger state placed by [`place_state`]. Returns the
/// round the replay starts at.
fn start_driver(
    genesis: &Genesis,
    secret: [u8; 32],
    store: &Store,
    nodes: &LedgerNodes,
    now: u64,
) -> Result<(Driver, u64)> {
    let (mut d, from) = start_driver_in_memory(genesis, secret, store, nodes, now)?;
    place_state(store, nodes, &mut d)?;
    Ok((d, from))
}

/// Place a new driver's ledger state: into the (emptied) state cache if it
/// has outgrown the cache size, else in memory, where a small state is
/// updated at about half the cost, with the cache emptied of any older
/// ledger's state. The history is stored either way.
fn place_state(store: &Store, nodes: &LedgerNodes, d: &mut Driver) -> Result<()> {
    if nodes.outgrown(d.ledger().output_count()) {
        return move_state_to_store(store, nodes, d);
    }
    nodes.clear_state().context("emptying the state cache")?;
    store
        .commit_nodes(&nodes.history_pending())
        .context("storing the history")?;
    Ok(())
}

/// Move a ledger state held in memory into the state cache once it has
/// outgrown the cache size: a one-time pause (~0.85 s at 60,000 outputs with
/// four peers sharing two cores).
fn spill_if_outgrown(store: &Store, nodes: &LedgerNodes, d: &mut Driver) -> Result<()> {
    let outputs = d.ledger().output_count();
    if d.ledger().uses_stores() || !nodes.outgrown(outputs) {
        return Ok(());
    }
    let t = Instant::now();
    move_state_to_store(store, nodes, d)?;
    info!(
        outputs,
        ms = t.elapsed().as_millis() as u64,
        "the ledger state outgrew state_cache_mb: moved into the state cache"
    );
    Ok(())
}

/// Write the driver's snapshot of `height` into the store, a piece at a
/// time; its length.
fn store_snapshot(store: &Store, driver: &Driver, height: u64) -> Result<u64> {
    let mut w = store.snapshot_writer(height)?;
    driver.write_snapshot(crate::store::SNAPSHOT_PIECE_BYTES, &mut |piece| {
        w.write(piece).map_err(|e| e.to_string())
    })?;
    Ok(w.finish(false)?)
}

/// Hand the allocator's free pages back to the kernel. The state cache's
/// write-backs free many buffered nodes at once, and glibc keeps freed
/// memory mapped unless told otherwise, so RSS would show the largest
/// buffer ever held rather than what is held now.
fn return_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of glibc's arenas to the
    // kernel; it touches no allocation in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The volatile store of the ledger's state databases, next to the store
/// (`D/state-cache`), deleted and created afresh: a crash may have left it
/// in any state, and the state is rebuilt from the snapshot anyway.
fn open_state_cache(store: &Store) -> Result<Store> {
    let dir = store.dir().with_file_name("state-cache");
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
    }
    Store::open(
        &dir,
        &StoreConfig::new(store.chain_id(), 64 << 20)
            .max_map_size(store.max_map_size())
            .volatile(),
    )
    .with_context(|| format!("opening the state cache {}", dir.display()))
}

/// Move the driver's ledger state into the (emptied) state databases and
/// write it there.
fn move_state_to_store(store: &Store, nodes: &LedgerNodes, d: &mut Driver) -> Result<()> {
    let t = Instant::now();
    d.use_ledger_stores(nodes.fresh_state()?)?;
    store
        .commit_nodes(&nodes.history_pending())
        .context("storing the history")?;
    nodes
        .write_back(true, d.ledger().height())
        .context("storing the ledger state")?;
    nodes.set_height(d.ledger().height());
    // The in-memory copy of the state was just dropped.
    return_free_heap();
    debug!(
        ms = t.elapsed().as_millis() as u64,
        outputs = d.ledger().output_count(),
        "ledger state written to the store"
    );
    Ok(())
}

/// [`start_driver`] before the move: the ledger as restored, in memory.
fn start_driver_in_memory(
    genesis: &Genesis,
    secret: [u8; 32],
    store: &Store,
    nodes: &LedgerNodes,
    now: u64,
) -> Result<(Driver, u64)> {
    let history = &nodes.history;
    let (own, seed) = own_progress_and_seed(store)?;
    let Some((height, bytes)) = store.latest_snapshot()? else {
        let mut d = Driver::new(
            genesis,
            Box::new(keys::signer(secret)),
            statement_signer(secret),
            own,
            seed,
            now,
        )?;
        d.set_history_store(Box::new(history.clone()))?;
        return Ok((d, 0));
    };
    let t = Instant::now();
    let snap: PeerSnapshot = proofs::decode(&bytes, bytes.len())
        .with_context(|| format!("the stored snapshot of height {height}"))?;
    let from = snap.first_useful_round();
    let mut d = Driver::from_snapshot(
        genesis,
        snap,
        None,
        Box::new(keys::signer(secret)),
        statement_signer(secret),
        own,
        seed,
        now,
    )
    .with_context(|| format!("restoring the stored snapshot of height {height}"))?;
    if d.set_history_store(Box::new(history.clone()))? {
        warn!(
            height,
            "the stored history did not match the snapshot's: rebuilt it"
        );
    }
    info!(
        height,
        bytes = bytes.len(),
        ms = t.elapsed().as_millis() as u64,
        "restored the stored snapshot"
    );
    Ok((d, from))
}

/// What only we know (our last own round: never signed again) and a fresh
/// seed for the driver's randomness.
fn own_progress_and_seed(store: &Store) -> Result<(OwnProgress, [u8; 32])> {
    let own = OwnProgress {
        last_proposed: store.last_own_round()?,
        own_last: None,
    };
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    Ok((own, seed))
}

fn statement_signer(secret: [u8; 32]) -> StatementSigner {
    let mut s = keys::signer(secret);
    Box::new(move |ctx, digest| s.sign_digest(ctx, digest))
}

/// Writes gathered over a burst of inputs and made durable together: one
/// sync for many received events and committed heights, instead of one
/// each (a sync costs milliseconds).
#[derive(Default)]
struct Burst {
    events: Vec<(u64, proofs::Hash, Vec<u8>)>,
    heights: Vec<(u64, Vec<u8>)>,
}

impl Burst {
    /// Make the burst durable (the events in one transaction, the heights
    /// with their history nodes in another), then let the state cache
    /// write back if it is full; `height` is the ledger's, after it.
    fn flush(&mut self, store: &Store, nodes: &LedgerNodes, height: u64) -> Result<()> {
        if !self.events.is_empty() {
            let refs: Vec<(u64, proofs::Hash, &[u8])> = self
                .events
                .iter()
                .map(|(r, id, b)| (*r, *id, b.as_slice()))
                .collect();
            store.put_events(&refs).context("storing events")?;
            self.events.clear();
        }
        // The heights with the ledger nodes they wrote, in one transaction.
        let history = nodes.history_pending();
        if !self.heights.is_empty() || history.iter().any(|n| n.has_pending()) {
            store
                .append_heights_with(&self.heights, &history)
                .context("storing committed heights")?;
            self.heights.clear();
        }
        nodes
            .write_back(false, height)
            .context("writing the ledger state")?;
        // The writes of the heights to come are younger.
        nodes.set_height(height);
        Ok(())
    }
}

/// Check a downloaded snapshot against the offer's certificate and build
/// the driver that continues from it; store it as our own base.
fn install(
    genesis: &Genesis,
    secret: [u8; 32],
    store: &Store,
    d: Download,
    bytes: Vec<u8>,
    now: u64,
) -> Result<(Driver, Installed)> {
    let t = Instant::now();
    let snap: PeerSnapshot = proofs::decode(&bytes, bytes.len()).context("decoding")?;
    catchup::check_committees(&snap, &d.chain)?;
    let from = snap.first_useful_round();
    let cp = &d.offer.checkpoint.statement;
    let (own, seed) = own_progress_and_seed(store)?;
    let driver = Driver::from_snapshot(
        genesis,
        snap,
        Some(cp),
        Box::new(keys::signer(secret)),
        statement_signer(secret),
        own,
        seed,
        now,
    )?;
    info!(
        height = cp.height,
        ms = t.elapsed().as_millis() as u64,
        "snapshot verified against the certified roots"
    );
    Ok((
        driver,
        Installed {
            bytes,
            from,
            checkpoint: d.offer.checkpoint,
            handovers: d.offer.handovers,
        },
    ))
}

/// A verified snapshot from another peer, still to be stored.
struct Installed {
    bytes: Vec<u8>,
    /// The first round of events the new driver can use.
    from: u64,
    checkpoint: Certified<Checkpoint>,
    handovers: Vec<Certified<Handover>>,
}

/// Make a verified snapshot our base: its ledger state in the store, the
/// snapshot itself, its certificate and hand-overs. Any failure here is a
/// storage failure the caller cannot go on from (the running driver's
/// state databases may already be emptied), so it stops the peer.
fn make_base(store: &Store, nodes: &LedgerNodes, driver: &mut Driver, i: Installed) -> Result<()> {
    let t = Instant::now();
    let height = i.checkpoint.statement.height;
    driver.set_history_store(Box::new(nodes.history.clone()))?;
    place_state(store, nodes, driver)?;
    store.put_snapshot(height, &i.bytes, true)?;
    store.put_snapshot_certificate(height, &proofs::encode(&i.checkpoint))?;
    for h in &i.handovers {
        store.put_handover(h.statement.snapshot, &proofs::encode(h))?;
    }
    // Older events can never be used again: the snapshot replaces them.
    store.prune_events_below(i.from)?;
    info!(
        height,
        ms = t.elapsed().as_millis() as u64,
        "snapshot installed"
    );
    Ok(())
}

/// Whether a peer with frontier `f` lacks events our log no longer holds.
fn needs_snapshot(
    store: &Store,
    driver: &Driver,
    f: &[(PeerKey, dag::committee::Round)],
) -> Result<bool> {
    let lowest = lowest_lacking(driver, f);
    if lowest >= driver.core().horizon() {
        return Ok(false);
    }
    let Some(base) = store.first_event_round()? else {
        return Ok(false);
    };
    Ok(lowest < base)
}

/// Our newest certified snapshot, as an offer.
fn snapshot_offer(store: &Store) -> Result<Option<SnapshotOffer>> {
    let Some((_, cert, bytes)) = store.latest_certified_snapshot()? else {
        return Ok(None);
    };
    let checkpoint: Certified<Checkpoint> =
        proofs::decode(&cert, dag::wire::MAX_PEER_MESSAGE).context("a stored certificate")?;
    let mut handovers = Vec::new();
    for (_, h) in store.handovers()? {
        let h: Certified<Handover> =
            proofs::decode(&h, dag::wire::MAX_PEER_MESSAGE).context("a stored hand-over")?;
        handovers.push(h);
    }
    Ok(Some(SnapshotOffer {
        checkpoint,
        handovers,
        bytes,
    }))
}

/// The lowest round a peer with frontier `f` may lack: just above its
/// lowest entry among the creators we know of (0 for a creator it has
/// nothing of).
fn lowest_lacking(driver: &Driver, f: &[(PeerKey, dag::committee::Round)]) -> u64 {
    let known: HashMap<PeerKey, u64> = f.iter().copied().collect();
    driver
        .core()
        .frontier()
        .iter()
        .map(|(k, _)| known.get(k).map_or(0, |r| r + 1))
        .min()
        .unwrap_or(0)
}

/// Replay stored events, reporting progress: a tracing line every tenth,
/// and a progress bar when stderr is a terminal. `commit` runs after each
/// chunk of events, so the ledger's node writes reach the store as they
/// are made instead of gathering in memory.
fn replay_with_progress(
    driver: &mut Driver,
    events: Vec<Event>,
    commit: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<()> {
    use std::io::IsTerminal;
    let total = events.len();
    if total == 0 {
        return Ok(());
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(total as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "replaying {bar:40} {pos}/{len} events, height {msg} ({eta})",
            )
            .expect("a valid template"),
        );
        b
    });
    let step = (total / 10).max(1);
    let mut done = 0;
    let mut events = events.into_iter();
    loop {
        let chunk: Vec<Event> = events.by_ref().take(step.min(1000)).collect();
        if chunk.is_empty() {
            break;
        }
        let before = done / step;
        done += chunk.len();
        driver.replay(chunk);
        commit(driver.ledger().height())?;
        let height = driver.ledger().height();
        if let Some(b) = &bar {
            b.set_position(done as u64);
            b.set_message(height.to_string());
        }
        if done / step > before {
            info!(done, total, height, "replay progress");
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    info!(
        events = total,
        height = driver.ledger().height(),
        "replay done"
    );
    Ok(())
}

/// Events from the log for a peer whose frontier lies below our memory
/// horizon: the oldest it lacks first, at most one message's worth. `None`
/// when the peer is within the window (the core answers then).
fn from_log(
    store: &Store,
    driver: &Driver,
    frontier: &[(PeerKey, dag::committee::Round)],
) -> Result<Option<Vec<Event>>> {
    let horizon = driver.core().horizon();
    let known: HashMap<PeerKey, u64> = frontier.iter().copied().collect();
    let lowest = lowest_lacking(driver, frontier);
    if lowest >= horizon {
        return Ok(None);
    }
    const MAX: usize = dag::wire::MAX_EVENTS_PER_MESSAGE;
    let mut found: Vec<Event> = Vec::new();
    let lacks = |e: &Event| known.get(&e.body.creator).is_none_or(|r| e.body.round > *r);
    let add = |e: Event, found: &mut Vec<Event>| {
        if lacks(&e) {
            found.push(e);
        }
    };
    for (_, _, b) in store.events_page(lowest, 4 * MAX)? {
        add(
            proofs::decode(&b, dag::wire::MAX_PEER_MESSAGE).context("a logged event")?,
            &mut found,
        );
    }
    for (_, b) in store.own_events_page(lowest, MAX)? {
        add(
            proofs::decode(&b, dag::wire::MAX_PEER_MESSAGE).context("a logged own event")?,
            &mut found,
        );
    }
    found.sort_by_key(|e| e.body.round);
    // One frame's worth: bounded in count and (roughly) in bytes.
    let mut size = 0usize;
    found.retain(|e| {
        size += e.body.payload.len() + 512;
        size < dag::wire::MAX_PEER_MESSAGE / 2
    });
    found.truncate(MAX);
    Ok((!found.is_empty()).then_some(found))
}

fn frame(msg: &PeerMessage) -> Bytes {
    Bytes::from(msg.encode())
}

fn send(out: &mpsc::Sender<Out>, counters: &NetCounters, o: Out) {
    if out.try_send(o).is_err() {
        counters.output_queue_full.fetch_add(1, Relaxed);
    }
}

/// A height re-derived on replay must equal the stored one, or the peer
/// stops rather than diverge silently.
fn check_replayed(store: &Store, record: &HeightRecord) -> Result<()> {
    let old = store.heights_from(record.height, 1)?;
    let same = old
        .first()
        .and_then(|(_, b)| proofs::decode::<HeightRecord>(b, usize::MAX).ok())
        .is_some_and(|r| r == *record);
    if !same {
        bail!(
            "replayed height {} differs from the stored one: refusing to continue",
            record.height
        );
    }
    Ok(())
}

fn status(
    d: &Driver,
    store: &Store,
    cfg: &Config,
    transport: &Transport,
    counters: &NetCounters,
    chain: proofs::Hash,
) -> Status {
    let core = d.core();
    let t = transport.stats();
    let highest_seen = core.frontier().iter().map(|(_, r)| *r).max().unwrap_or(0);
    let drops: BTreeMap<String, u64> = [
        (
            "malformed_message",
            counters.malformed_messages.load(Relaxed),
        ),
        ("input_queue_full", counters.input_queue_full.load(Relaxed)),
        (
            "output_queue_full",
            counters.output_queue_full.load(Relaxed),
        ),
        (
            "link_send_refused",
            counters.link_send_refused.load(Relaxed),
        ),
        (
            "wallet_request_rate",
            counters.wallet_requests_refused.load(Relaxed),
        ),
        ("rate_limited_frame", t.frames_dropped_rate),
        ("frame_too_large", t.frames_too_large),
        ("raw_queue_full", t.raw_dropped_queue_full),
        ("raw_invalid", t.raw_dropped_invalid),
        ("auth_failure", t.auth_failures),
        ("handshake_failure", t.handshake_failures),
        ("event_refused", d.stats().events_refused),
        ("tx_refused", d.stats().txs_refused),
        ("conflicting_checkpoint_vote", d.stats().conflicting_votes),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let dropped: u64 = t.raw_dropped_queue_full
        + t.raw_dropped_invalid
        + t.frames_dropped_rate
        + t.frames_too_large
        + counters.malformed_messages.load(Relaxed);
    let roots = d.ledger().roots();
    Status {
        name: cfg.name.clone(),
        key: d.key().to_string(),
        chain: chain.to_string(),
        listen: transport.local_addr().to_string(),
        round: core.next_round(),
        height: d.ledger().height(),
        committee_size: core.committee(core.next_round()).map_or(0, |c| c.len()),
        peers_connected: 0,
        lag_rounds: highest_seen.saturating_sub(core.next_round()),
        mempool_txs: d.mempool_len(),
        disk_bytes: store.disk_bytes().unwrap_or(0),
        dropped_datagrams: dropped,
        equivocations: core.stats().equivocations,
        txs_applied: d.stats().txs_applied,
        txs_rejected: d.stats().txs_rejected,
        checkpoints_certified: d.stats().checkpoints_certified,
        last_certified_height: d.last_certified().map(|c| c.statement.height),
        snapshots: d.stats().snapshots,
        handovers_certified: d.stats().handovers_certified,
        events_requeued: core.stats().requeued_events,
        snapshot_height: store.latest_snapshot_height().ok().flatten(),
        event_log_from_round: store.first_event_round().ok().flatten(),
        state_cache_bytes: 0,
        state_on_disk: false,
        outputs_in_memory: d.ledger().outputs_in_memory() as u64,
        rendezvous_requests: 0,
        relayed_bytes: 0,
        outputs_root: roots.outputs.to_string(),
        history_root: roots.history.to_string(),
        drops,
    }
}

enum Received<T> {
    Input(T),
    Timeout,
    Closed,
}

trait RecvTimeout<T> {
    fn blocking_recv_timeout(&mut self, d: Duration) -> Received<T>;
}

impl<T> RecvTimeout<T> for mpsc::Receiver<T> {
    /// tokio's receiver has no blocking receive with a timeout; poll it on a
    /// tiny current-thread runtime local to the driver thread.
    fn blocking_recv_timeout(&mut self, d: Duration) -> Received<T> {
        thread_local! {
            static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime");
        }
        RT.with(|rt| {
            rt.block_on(async {
                match tokio::time::timeout(d, self.recv()).await {
                    Ok(Some(v)) => Received::Input(v),
                    Ok(None) => Received::Closed,
                    Err(_) => Received::Timeout,
                }
            })
        })
    }
}
