//! The peer's transport: one UDP socket per process carrying QUIC links
//! authenticated by schnorrkel identities, plus raw datagrams for NAT work.
//!
//! [`Transport::bind`] makes the socket (see `socket`), puts a quinn endpoint
//! on it acting as client and server (TLS from `tls`), and starts accepting.
//! Every link, dialled or accepted, is authenticated by the Hello exchange of
//! `hello` before a [`Link`] is handed out; the dialler speaks first, and the
//! acceptor answers only after the dialler's Hello has passed its checks, so
//! an unauthenticated party never gets more bytes back than it sent. The
//! wire format is specified in `specs/network.md`, section "Transport".
//!
//! Routed links (`routes`): [`Transport::new_route`] gives a virtual address
//! that quinn dials or accepts like any other, while [`Transport::set_route`]
//! says where its datagrams really go (a direct path from the main or an
//! extra socket, or a relay) and may change at any time without quinn
//! noticing; relayed datagrams come back in through [`Transport::inject`].
//! Extra sockets ([`Transport::open_sockets`]) give port probing mappings of
//! their own. A link accepted from a virtual address runs with quinn's
//! migration off: a datagram from a real address that no route names is
//! dropped instead of moving the link off its virtual address.

mod hello;
mod link;
mod routes;
mod socket;
mod stats;
mod tls;

pub use crate::punch::SocketId;
pub use hello::{AuthError, Hello, LinkSigner, EXPORTER_LABEL, HELLO_LEN, LINK_CONTEXT};
pub use link::{Link, LinkError};
pub use routes::{
    is_virtual, RelaySender, Route, RouteError, INJECT_QUEUE, MAX_EXTRA_SOCKETS, MAX_INJECT_LEN,
    MAX_ROUTES, VIRTUAL_V6_PREFIX,
};
pub use socket::{is_raw, RawDatagram, RawDatagrams, MAX_RAW_LEN, RAW_MAX_FIRST_BYTE};
pub use stats::TransportStats;
pub use tls::{TlsError, ALPN};

use bytes::Bytes;
use dag::PeerKey;
use hello::HelloCheck;
use proofs::Hash;
use quinn::{Connection, ConnectionError, RecvStream, SendStream};
use socket::DemuxSocket;
use stats::Counters;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, Mutex, Semaphore};
use tracing::{debug, info};

/// QUIC application close codes used by the transport.
pub mod close_code {
    use quinn::VarInt;
    /// Closed on purpose by one side (`Link::close`, handles dropped).
    pub const NORMAL: VarInt = VarInt::from_u32(0);
    /// The transport is shutting down.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(1);
    /// Too many links waiting for `accept`.
    pub const BUSY: VarInt = VarInt::from_u32(2);
    /// The Hello did not decode.
    pub const MALFORMED_HELLO: VarInt = VarInt::from_u32(0x10);
    /// The Hello names another chain.
    pub const WRONG_CHAIN: VarInt = VarInt::from_u32(0x11);
    /// The Hello signature does not verify over our exporter value.
    pub const BAD_SIGNATURE: VarInt = VarInt::from_u32(0x12);
    /// The dialler reached a different key than it asked for (or its own).
    pub const UNEXPECTED_KEY: VarInt = VarInt::from_u32(0x13);
    /// The key is not authorized to link with us.
    pub const UNAUTHORIZED: VarInt = VarInt::from_u32(0x14);
    /// A frame length above `max_frame`.
    pub const FRAME_TOO_LARGE: VarInt = VarInt::from_u32(0x20);
    /// Stream misuse (a stream ended inside a frame, an unexpected stream).
    pub const PROTOCOL: VarInt = VarInt::from_u32(0x21);
}

/// Decides whether an authenticated key may hold a link (committee members
/// for the daemon; later also wallets).
pub type Authorize = Arc<dyn Fn(&PeerKey) -> bool + Send + Sync>;

/// Settings of a transport. [`TransportConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Address of the one UDP socket (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Chain id: links only form between nodes of the same chain.
    pub chain: Hash,
    /// Largest frame accepted or sent, in bytes (default 4 MiB).
    pub max_frame: usize,
    /// Time allowed for the QUIC handshake plus the Hello exchange (5 s).
    pub handshake_timeout: Duration,
    /// Inbound frames per second per link; the excess is dropped and counted.
    /// 0 disables the limit. Default 10 000.
    pub max_msgs_per_sec: u32,
    /// Frames queued for sending per link before `send` refuses (256).
    pub send_queue: usize,
    /// Frames received but not yet taken by `recv` per link (32); when full
    /// the link stops reading and QUIC flow control slows the sender.
    pub recv_queue: usize,
    /// Raw datagrams queued before new ones are dropped (1024).
    pub raw_queue: usize,
    /// Inbound handshakes in progress at once; more are refused (256).
    pub max_pending_handshakes: usize,
    /// Authenticated inbound links waiting for `accept`; more are closed (64).
    pub accept_queue: usize,
    /// A link with no traffic (not even keep-alives) for this long is dead (30 s).
    pub idle_timeout: Duration,
    /// Keep-alive interval, well under `idle_timeout` (10 s).
    pub keep_alive: Duration,
}

impl TransportConfig {
    pub fn new(listen: SocketAddr, chain: Hash) -> Self {
        TransportConfig {
            listen,
            chain,
            max_frame: 4 << 20,
            handshake_timeout: Duration::from_secs(5),
            max_msgs_per_sec: 10_000,
            send_queue: 256,
            recv_queue: 32,
            raw_queue: 1024,
            max_pending_handshakes: 256,
            accept_queue: 64,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
        }
    }
}

/// The per-link part of the configuration.
#[derive(Clone, Debug)]
pub(crate) struct LinkParams {
    pub max_frame: usize,
    pub max_msgs_per_sec: u32,
    pub send_queue: usize,
    pub recv_queue: usize,
}

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    #[error("cannot dial: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(ConnectionError),
    #[error("the peer closed the connection with code {code}")]
    Refused { code: u64 },
    #[error("peer failed authentication: {0}")]
    Auth(#[from] AuthError),
    #[error("stream: {0}")]
    Stream(&'static str),
    #[error("handshake and hello did not complete in time")]
    Timeout,
    #[error("the transport is closed")]
    Closed,
}

impl From<ConnectionError> for TransportError {
    fn from(e: ConnectionError) -> Self {
        match e {
            ConnectionError::ApplicationClosed(c) => TransportError::Refused {
                code: c.error_code.into_inner(),
            },
            ConnectionError::LocallyClosed => TransportError::Closed,
            e => TransportError::Connection(e),
        }
    }
}

/// What a link handshake needs, shared by the dialling and accepting paths.
struct Ctx {
    chain: Hash,
    own_key: PeerKey,
    identity: Arc<dyn LinkSigner>,
    authorize: Authorize,
    params: LinkParams,
    counters: Arc<Counters>,
}

/// A handle to the transport; clones share it. Dropping the last handle
/// (or calling [`Transport::close`]) closes the endpoint and every link.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: quinn::Endpoint,
    socket: Arc<DemuxSocket>,
    local: SocketAddr,
    ctx: Arc<Ctx>,
    handshake_timeout: Duration,
    accepted: Mutex<mpsc::Receiver<Link>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The accept task holds an endpoint handle of its own; closing here
        // ends it, so dropping the last Transport handle frees the socket.
        self.endpoint.close(close_code::SHUTDOWN, b"shutdown");
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local", &self.inner.local)
            .field("key", &self.inner.ctx.own_key)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Bind the socket, start the endpoint and begin accepting links. Must be
    /// called inside a tokio runtime. Returns the raw-datagram queue too.
    pub async fn bind(
        cfg: TransportConfig,
        identity: Arc<dyn LinkSigner>,
        authorize: Authorize,
    ) -> Result<(Transport, RawDatagrams), TransportError> {
        if cfg.max_frame > u32::MAX as usize {
            return Err(TransportError::Config("max_frame must fit in u32"));
        }
        let idle = quinn::IdleTimeout::try_from(cfg.idle_timeout)
            .map_err(|_| TransportError::Config("idle_timeout out of range"))?;
        let counters = Arc::new(Counters::default());
        let io = socket::bind_udp(cfg.listen)?;
        let local = io.local_addr()?;
        let (socket, raw) = DemuxSocket::new(io, cfg.raw_queue, counters.clone())?;

        let tls = tls::configs()?;
        let mut tc = quinn::TransportConfig::default();
        // One unidirectional stream per direction, nothing else.
        tc.max_concurrent_bidi_streams(0u32.into())
            .max_concurrent_uni_streams(1u32.into())
            .datagram_receive_buffer_size(None)
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(cfg.keep_alive));
        let tc = Arc::new(tc);
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(tls.server));
        server.transport_config(tc.clone());
        // For links accepted from a virtual address: the route table, not
        // quinn, decides where the other side is.
        let mut routed = server.clone();
        routed.migration(false);
        let mut client = quinn::ClientConfig::new(Arc::new(tls.client));
        client.transport_config(tc);
        let mut ep_cfg = quinn::EndpointConfig::default();
        // Greasing would let packets arrive with the fixed bit clear, which
        // the demultiplexer reserves for raw datagrams.
        ep_cfg.grease_quic_bit(false);
        let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
            ep_cfg,
            Some(server),
            socket.clone(),
            Arc::new(quinn::TokioRuntime),
        )?;
        endpoint.set_default_client_config(client);

        let ctx = Arc::new(Ctx {
            chain: cfg.chain,
            own_key: identity.key(),
            identity,
            authorize,
            params: LinkParams {
                max_frame: cfg.max_frame,
                max_msgs_per_sec: cfg.max_msgs_per_sec,
                send_queue: cfg.send_queue,
                recv_queue: cfg.recv_queue,
            },
            counters,
        });
        let (accepted_tx, accepted_rx) = mpsc::channel(cfg.accept_queue.max(1));
        tokio::spawn(accept_loop(
            endpoint.clone(),
            ctx.clone(),
            accepted_tx,
            Arc::new(routed),
            cfg.max_pending_handshakes.max(1),
            cfg.handshake_timeout,
        ));
        info!(%local, key = %ctx.own_key, "transport bound");
        Ok((
            Transport {
                inner: Arc::new(Inner {
                    endpoint,
                    socket,
                    local,
                    ctx,
                    handshake_timeout: cfg.handshake_timeout,
                    accepted: Mutex::new(accepted_rx),
                }),
            },
            raw,
        ))
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Our identity key.
    pub fn key(&self) -> PeerKey {
        self.inner.ctx.own_key
    }

    /// Dial `addr` and authenticate it as `expected`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: PeerKey,
    ) -> Result<Link, TransportError> {
        let ctx = &self.inner.ctx;
        let connecting = self.inner.endpoint.connect(addr, tls::SERVER_NAME)?;
        let attempt = async {
            let conn = connecting.await.inspect_err(|_| {
                ctx.counters.handshake_failures.fetch_add(1, Relaxed);
            })?;
            dial_hello(conn, ctx, &expected).await
        };
        match tokio::time::timeout(self.inner.handshake_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => {
                ctx.counters.handshake_failures.fetch_add(1, Relaxed);
                Err(TransportError::Timeout)
            }
        }
    }

    /// The next authenticated inbound link; `None` once the transport is closed.
    pub async fn accept(&self) -> Option<Link> {
        self.inner.accepted.lock().await.recv().await
    }

    /// Send one raw datagram from the main socket. It must start with a
    /// byte of at most [`RAW_MAX_FIRST_BYTE`] and be at most [`MAX_RAW_LEN`]
    /// bytes, and go to a real (not virtual) address. Never waits: a full
    /// socket buffer gives `WouldBlock`.
    pub fn send_raw(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        self.inner.socket.send_raw(SocketId::MAIN, to, bytes)
    }

    /// [`Transport::send_raw`] from any open socket; `NotFound` for a socket
    /// that is not open.
    pub fn send_raw_from(&self, socket: SocketId, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        self.inner.socket.send_raw(socket, to, bytes)
    }

    /// A fresh virtual address (never handed out before by this transport)
    /// for a routed link: `fd70:6f73:6861:7265::n` port 1 on an IPv6
    /// socket, `0.x.y.z` port 1 on an IPv4 one (quinn refuses IPv6 remotes
    /// there). Without a route, datagrams to it are dropped.
    pub fn new_route(&self) -> SocketAddr {
        self.inner.socket.routes().new_route()
    }

    /// Route the datagrams of `vaddr`, replacing its route if it had one;
    /// sends already under way see the old route or the new one. A direct
    /// route needs an open socket, a real address, and a (socket, address)
    /// pair no other route uses; at most [`MAX_ROUTES`] routes.
    ///
    /// Both ends of a link keep their own route to the other. When a path
    /// changes, datagrams that arrive by the new path before this side's
    /// route names it are dropped (`unrouted_dropped` on an extra socket;
    /// quinn discards them on the main one), which QUIC recovers as loss.
    pub fn set_route(&self, vaddr: SocketAddr, route: Route) -> Result<(), RouteError> {
        self.inner.socket.set_route(vaddr, route)
    }

    /// Remove the route of `vaddr` (its datagrams are then dropped).
    pub fn remove_route(&self, vaddr: SocketAddr) -> Option<Route> {
        self.inner.socket.routes().remove(vaddr)
    }

    /// The route of `vaddr`, if any.
    pub fn route(&self, vaddr: SocketAddr) -> Option<Route> {
        self.inner.socket.routes().get(vaddr)
    }

    /// Feed quinn a QUIC datagram received over the relay as if it came
    /// from `vaddr`. Returns false, and counts `inject_dropped`, when it is
    /// not taken: the queue of [`INJECT_QUEUE`] is full, `vaddr` is not a
    /// virtual address, or the datagram is empty, raw or too long.
    pub fn inject(&self, vaddr: SocketAddr, datagram: Bytes) -> bool {
        self.inner.socket.inject(vaddr, datagram)
    }

    /// Bind `n` more UDP sockets on the main socket's IP with free ports and
    /// start reading them; returns their ids (the lowest free ones from 1).
    /// At most [`MAX_EXTRA_SOCKETS`] may be open (`InvalidInput` beyond).
    /// Must be called inside a tokio runtime.
    pub fn open_sockets(&self, n: u16) -> io::Result<Vec<SocketId>> {
        self.inner.socket.open_sockets(n)
    }

    /// Close every extra socket not in `keep`, and remove the direct routes
    /// that used a closed one.
    pub fn close_sockets(&self, keep: &[SocketId]) {
        self.inner.socket.close_sockets(keep)
    }

    /// The local address of a socket ([`SocketId::MAIN`] gives
    /// [`Transport::local_addr`]); `None` if it is not open.
    pub fn socket_addr(&self, socket: SocketId) -> Option<SocketAddr> {
        self.inner.socket.socket_addr(socket)
    }

    pub fn stats(&self) -> TransportStats {
        self.inner.ctx.counters.snapshot()
    }

    /// Close every link and stop accepting; waits briefly for the peers to
    /// learn of it.
    pub async fn close(&self) {
        self.inner.endpoint.close(close_code::SHUTDOWN, b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    ctx: Arc<Ctx>,
    accepted: mpsc::Sender<Link>,
    routed: Arc<quinn::ServerConfig>,
    max_pending: usize,
    timeout: Duration,
) {
    let pending = Arc::new(Semaphore::new(max_pending));
    while let Some(incoming) = endpoint.accept().await {
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            ctx.counters.handshakes_refused_busy.fetch_add(1, Relaxed);
            incoming.refuse();
            continue;
        };
        let ctx = ctx.clone();
        let accepted = accepted.clone();
        let routed = routed.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let remote = incoming.remote_address();
            let attempt = async {
                let connecting = if is_virtual(remote) {
                    incoming.accept_with(routed)
                } else {
                    incoming.accept()
                };
                let conn = match connecting {
                    Ok(connecting) => connecting.await,
                    Err(e) => Err(e),
                };
                let conn = conn.inspect_err(|_| {
                    ctx.counters.handshake_failures.fetch_add(1, Relaxed);
                })?;
                accept_hello(conn, &ctx).await
            };
            let link = match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(link)) => link,
                Ok(Err(e)) => {
                    debug!(%remote, error = %e, "inbound link refused");
                    return;
                }
                Err(_) => {
                    ctx.counters.handshake_failures.fetch_add(1, Relaxed);
                    debug!(%remote, "inbound handshake timed out");
                    return;
                }
            };
            if let Err(e) = accepted.try_send(link) {
                ctx.counters.accept_queue_full.fetch_add(1, Relaxed);
                let link = match e {
                    mpsc::error::TrySendError::Full(l) | mpsc::error::TrySendError::Closed(l) => l,
                };
                link.close("busy");
            }
        });
    }
}

/// Dialling side: send our Hello first, then check the acceptor's.
async fn dial_hello(
    conn: Connection,
    ctx: &Ctx,
    expected: &PeerKey,
) -> Result<Link, TransportError> {
    let exporter = hello::exporter(&conn, &ctx.chain)?;
    let mut send = conn.open_uni().await?;
    write_hello(&mut send, ctx, &exporter).await?;
    let mut recv = conn.accept_uni().await?;
    let bytes = read_hello(&mut recv, &conn, ctx).await?;
    let check = HelloCheck {
        chain: &ctx.chain,
        exporter: &exporter,
        own_key: &ctx.own_key,
        expected: Some(expected),
        authorize: &*ctx.authorize,
    };
    let hello = checked(&conn, ctx, check.check(&bytes))?;
    Ok(established(conn, hello.key, send, recv, ctx))
}

/// Accepting side: check the dialler's Hello, and only then send ours.
async fn accept_hello(conn: Connection, ctx: &Ctx) -> Result<Link, TransportError> {
    let exporter = hello::exporter(&conn, &ctx.chain)?;
    let mut recv = conn.accept_uni().await?;
    let bytes = read_hello(&mut recv, &conn, ctx).await?;
    let check = HelloCheck {
        chain: &ctx.chain,
        exporter: &exporter,
        own_key: &ctx.own_key,
        expected: None,
        authorize: &*ctx.authorize,
    };
    let hello = checked(&conn, ctx, check.check(&bytes))?;
    let mut send = conn.open_uni().await?;
    write_hello(&mut send, ctx, &exporter).await?;
    Ok(established(conn, hello.key, send, recv, ctx))
}

fn established(
    conn: Connection,
    peer: PeerKey,
    send: SendStream,
    recv: RecvStream,
    ctx: &Ctx,
) -> Link {
    ctx.counters.links_authenticated.fetch_add(1, Relaxed);
    debug!(remote = %conn.remote_address(), ?peer, "link authenticated");
    Link::start(conn, peer, send, recv, &ctx.params, ctx.counters.clone())
}

/// Count and close on a failed check.
fn checked(
    conn: &Connection,
    ctx: &Ctx,
    result: Result<Hello, AuthError>,
) -> Result<Hello, TransportError> {
    result.map_err(|e| refuse(conn, ctx, e))
}

fn refuse(conn: &Connection, ctx: &Ctx, e: AuthError) -> TransportError {
    ctx.counters.auth_failures.fetch_add(1, Relaxed);
    let code = match e {
        AuthError::Malformed(_) => close_code::MALFORMED_HELLO,
        AuthError::WrongChain => close_code::WRONG_CHAIN,
        AuthError::Signature(_) | AuthError::Exporter => close_code::BAD_SIGNATURE,
        AuthError::UnexpectedKey { .. } | AuthError::OwnKey => close_code::UNEXPECTED_KEY,
        AuthError::Unauthorized(_) => close_code::UNAUTHORIZED,
    };
    debug!(remote = %conn.remote_address(), error = %e, "hello refused");
    // No reason text: the code is all an unauthenticated peer gets.
    conn.close(code, b"");
    TransportError::Auth(e)
}

async fn write_hello(
    send: &mut SendStream,
    ctx: &Ctx,
    exporter: &[u8; 32],
) -> Result<(), TransportError> {
    let hello = hello::make_hello(&*ctx.identity, ctx.chain, exporter).encode();
    let mut frame = Vec::with_capacity(4 + hello.len());
    frame.extend_from_slice(&(hello.len() as u32).to_be_bytes());
    frame.extend_from_slice(&hello);
    send.write_all(&frame).await.map_err(|e| match e {
        quinn::WriteError::ConnectionLost(c) => c.into(),
        _ => TransportError::Stream("hello write failed"),
    })
}

/// Read the first frame, which must be a Hello-sized one.
async fn read_hello(
    recv: &mut RecvStream,
    conn: &Connection,
    ctx: &Ctx,
) -> Result<Vec<u8>, TransportError> {
    let lost = |e: quinn::ReadExactError| match e {
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => c.into(),
        _ => TransportError::Stream("hello read failed"),
    };
    let mut header = [0u8; 4];
    recv.read_exact(&mut header).await.map_err(lost)?;
    let len = u32::from_be_bytes(header) as usize;
    if len > HELLO_LEN {
        let e = AuthError::Malformed(proofs::CodecError::TooLong {
            len,
            limit: HELLO_LEN,
        });
        return Err(refuse(conn, ctx, e));
    }
    let mut bytes = vec![0u8; len];
    recv.read_exact(&mut bytes).await.map_err(lost)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn node(cfg: TransportConfig) -> Transport {
        let signer = Arc::new(std::sync::Mutex::new(dag::Signer::from_seed(
            [1; 32], [2; 32],
        )));
        Transport::bind(cfg, signer, Arc::new(|_: &PeerKey| true))
            .await
            .unwrap()
            .0
    }

    fn cfg() -> TransportConfig {
        TransportConfig::new("127.0.0.1:0".parse().unwrap(), Hash([3; 32]))
    }

    /// A QUIC client with our TLS setup but no Hello logic, to misbehave.
    async fn bare_connection(to: SocketAddr) -> (quinn::Endpoint, Connection) {
        let tls = tls::configs().unwrap();
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(tls.client)));
        let conn = ep.connect(to, tls::SERVER_NAME).unwrap().await.unwrap();
        (ep, conn)
    }

    #[tokio::test]
    async fn oversized_hello_frame_is_refused_unread() {
        let t = node(cfg()).await;
        let (_ep, conn) = bare_connection(t.local_addr()).await;
        let mut s = conn.open_uni().await.unwrap();
        s.write_all(&1000u32.to_be_bytes()).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .unwrap();
        assert!(
            matches!(TransportError::from(closed), TransportError::Refused { code } if code == close_code::MALFORMED_HELLO.into_inner())
        );
        assert_eq!(t.stats().auth_failures, 1);
        assert_eq!(t.stats().links_authenticated, 0);
    }

    #[tokio::test]
    async fn garbage_hello_is_refused() {
        let t = node(cfg()).await;
        let (_ep, conn) = bare_connection(t.local_addr()).await;
        let mut s = conn.open_uni().await.unwrap();
        let mut frame = (HELLO_LEN as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[0xee; HELLO_LEN]);
        s.write_all(&frame).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .unwrap();
        // Parses as a Hello of another chain, so it fails on the chain id.
        assert!(
            matches!(TransportError::from(closed), TransportError::Refused { code } if code == close_code::WRONG_CHAIN.into_inner())
        );
        assert_eq!(t.stats().auth_failures, 1);
    }

    #[tokio::test]
    async fn silent_dialler_is_dropped_after_the_timeout() {
        let mut c = cfg();
        c.handshake_timeout = Duration::from_millis(300);
        let t = node(c).await;
        let (_ep, conn) = bare_connection(t.local_addr()).await;
        tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .unwrap();
        assert_eq!(t.stats().handshake_failures, 1);
        assert_eq!(t.stats().links_authenticated, 0);
    }

    #[tokio::test]
    async fn dropping_the_transport_frees_the_port() {
        let t = node(cfg()).await;
        let addr = t.local_addr();
        drop(t);
        // The endpoint closes and its driver lets go of the socket.
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if std::net::UdpSocket::bind(addr).is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
    }
}
