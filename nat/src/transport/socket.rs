//! The process's main UDP socket, its extra sockets, and the demultiplexer
//! that sits between them and quinn.
//!
//! The socket is made with socket2 (large buffers, address reuse,
//! non-blocking) and handed to tokio. [`DemuxSocket`] implements quinn's
//! [`AsyncUdpSocket`]: every datagram read from the socket is classified by
//! its first byte ([`is_raw`]); QUIC packets are passed up to quinn, raw
//! datagrams (NAT introductions and address echoes) go to a bounded queue
//! read through [`RawDatagrams`]. When that queue is full the datagram is
//! dropped and counted, so a flood of junk costs a bounded amount of memory.
//! Sending and receiving go through quinn-udp (segmentation offload both
//! ways, several datagrams per system call); a received entry holding
//! several datagrams is demultiplexed datagram by datagram.
//!
//! Routed links (see `routes`): a transmit to a virtual address is sent
//! along its route, through the main socket as usual, through an extra
//! socket (datagram by datagram, plain `send_to`), or to a relay sender;
//! without a route it is dropped and counted. Only a destination in the
//! virtual range costs more than one comparison. QUIC datagrams that arrive
//! over a direct route have their source replaced by the virtual address
//! (in place for the main socket). Relayed datagrams given to `inject`, and
//! routed QUIC datagrams read by the tasks of the extra sockets, wait in a
//! bounded injection queue; `poll_recv` hands them to quinn before (at most
//! half a batch) the main socket's, and the queue's receiver keeps quinn's
//! waker, so an injected datagram wakes the endpoint.
//!
//! Extra sockets (1..=[`MAX_EXTRA_SOCKETS`], for port probing) are bound on
//! the main socket's IP, port 0, and each read by a tokio task: raw
//! datagrams join the main raw queue (tagged with the socket), QUIC ones go
//! to quinn only if a direct route names their (socket, source).

use super::routes::{
    is_virtual, segments, Route, Routes, INJECT_QUEUE, MAX_EXTRA_SOCKETS, MAX_INJECT_LEN,
};
use super::stats::Counters;
use crate::punch::SocketId;
use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use socket2::{Domain, Protocol, Socket, Type};
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, warn};

/// A datagram is raw (not QUIC) when its first byte is at most this value,
/// i.e. the two top bits are clear: header form 0 (short header) with the
/// QUIC "fixed bit" 0x40 clear. QUIC v1 always sets the fixed bit unless
/// both ends negotiated greasing it (RFC 9287), which this endpoint disables.
/// Long-header datagrams (0x80 and above) always go to quinn, so version
/// negotiation keeps working whatever the fixed bit says.
pub const RAW_MAX_FIRST_BYTE: u8 = 0x3f;

/// Longest raw datagram accepted or sent: introductions and echoes are small,
/// and this stays under the IPv6 minimum MTU less headers.
pub const MAX_RAW_LEN: usize = 1200;

/// Whether `datagram` is a raw datagram under the rule of [`RAW_MAX_FIRST_BYTE`].
pub fn is_raw(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(&b) if b <= RAW_MAX_FIRST_BYTE)
}

/// Requested size of the kernel send and receive buffers; the kernel caps it
/// at its own maximum (net.core.rmem_max / wmem_max), which is fine.
const SOCKET_BUFFER: usize = 4 << 20;

/// The same for an extra socket: hundreds may be open while probing, and
/// at most one of them carries a link afterwards.
const EXTRA_SOCKET_BUFFER: usize = 256 << 10;

/// Receive buffer of an extra socket's task. quinn sends datagrams of at
/// most its MTU discovery bound (1,452 bytes by default, which the transport
/// keeps), and extra sockets have no receive offload; a datagram that fills
/// the buffer may have been cut short and is dropped.
const EXTRA_RECV_LEN: usize = 2048;

/// A raw datagram received on one of the transport's sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawDatagram {
    /// The socket it arrived on ([`SocketId::MAIN`] for the main socket).
    pub socket: SocketId,
    pub from: SocketAddr,
    pub bytes: Bytes,
}

/// The receiving end of the raw-datagram queue.
#[derive(Debug)]
pub struct RawDatagrams {
    rx: mpsc::Receiver<RawDatagram>,
}

impl RawDatagrams {
    /// The next raw datagram; `None` once the transport is gone.
    pub async fn recv(&mut self) -> Option<RawDatagram> {
        self.rx.recv().await
    }

    /// The next raw datagram if one is queued.
    pub fn try_recv(&mut self) -> Option<RawDatagram> {
        self.rx.try_recv().ok()
    }

    /// How many datagrams are waiting.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// Make the UDP socket with socket2 and register it with tokio. Must run
/// inside a tokio runtime.
pub(crate) fn bind_udp(addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    bind_udp_with(addr, SOCKET_BUFFER)
}

fn bind_udp_with(addr: SocketAddr, buffer: usize) -> io::Result<tokio::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a kernel that refuses the size still gives a usable socket.
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        warn!(error = %e, "could not set SO_RCVBUF");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer) {
        warn!(error = %e, "could not set SO_SNDBUF");
    }
    if addr.is_ipv6() {
        // Dual-stack on [::]: IPv4 peers then appear as mapped addresses.
        if let Err(e) = socket.set_only_v6(false) {
            warn!(error = %e, "could not clear IPV6_V6ONLY");
        }
    }
    // Only for a fixed port (a restart binds it again at once). With port 0
    // it would be harmful: Linux does not count a UDP socket with
    // SO_REUSEADDR as a conflict for another one that has it, so two such
    // sockets can draw the same ephemeral port and split its datagrams.
    if addr.port() != 0 {
        socket.set_reuse_address(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    debug!(
        rcvbuf = socket.recv_buffer_size().ok(),
        sndbuf = socket.send_buffer_size().ok(),
        "udp socket bound"
    );
    tokio::net::UdpSocket::from_std(socket.into())
}

/// A datagram waiting to be handed to quinn, with the source it shows.
type Injected = (SocketAddr, Bytes);

/// What the main socket and the extra sockets' tasks share.
struct Shared {
    raw_tx: mpsc::Sender<RawDatagram>,
    inject_tx: mpsc::Sender<Injected>,
    routes: Routes,
    counters: Arc<Counters>,
}

impl Shared {
    /// Route one received datagram that is not for quinn.
    fn take_raw(&self, socket: SocketId, from: SocketAddr, bytes: &[u8]) {
        if bytes.is_empty() || bytes.len() > MAX_RAW_LEN {
            self.counters.raw_dropped_invalid.fetch_add(1, Relaxed);
            return;
        }
        let d = RawDatagram {
            socket,
            from,
            bytes: Bytes::copy_from_slice(bytes),
        };
        // Counted before the reader can see it, so a reader that took it
        // never sees a count that misses it.
        match self.raw_tx.try_reserve() {
            Ok(permit) => {
                self.counters.raw_received.fetch_add(1, Relaxed);
                permit.send(d);
            }
            // Full, or nobody reads any more: either way the datagram is lost.
            Err(_) => {
                self.counters.raw_dropped_queue_full.fetch_add(1, Relaxed);
            }
        }
    }

    /// Queue a datagram for quinn as coming from `from`; false if full.
    fn queue(&self, from: SocketAddr, datagram: Bytes) -> bool {
        if self.inject_tx.try_send((from, datagram)).is_ok() {
            true
        } else {
            self.counters.inject_dropped.fetch_add(1, Relaxed);
            false
        }
    }

    /// One datagram read by an extra socket's task; `full` when it filled
    /// the buffer (and may have been cut short).
    fn receive_extra(&self, socket: SocketId, from: SocketAddr, bytes: &[u8], full: bool) {
        if is_virtual(from) {
            self.counters.unrouted_dropped.fetch_add(1, Relaxed);
        } else if bytes.is_empty() || is_raw(bytes) {
            self.take_raw(socket, from, bytes);
        } else if full {
            self.counters.unrouted_dropped.fetch_add(1, Relaxed);
        } else if let Some(vaddr) = self.routes.reverse(socket, from) {
            self.queue(vaddr, Bytes::copy_from_slice(bytes));
        } else {
            self.counters.unrouted_dropped.fetch_add(1, Relaxed);
        }
    }
}

/// An extra socket; closing it (dropping this) stops its task.
struct Extra {
    io: Arc<tokio::net::UdpSocket>,
    local: SocketAddr,
    task: AbortHandle,
}

impl Drop for Extra {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one extra socket until it is closed.
async fn read_extra(socket: SocketId, io: Arc<tokio::net::UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; EXTRA_RECV_LEN];
    loop {
        match io.recv_from(&mut buf).await {
            Ok((n, from)) => shared.receive_extra(socket, from, &buf[..n], n == buf.len()),
            // ICMP errors for an earlier send, as on the main socket.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => {
                debug!(?socket, error = %e, "extra socket read failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The main socket as quinn sees it, plus the extra sockets and the route
/// table. Also the sender of raw datagrams.
pub(crate) struct DemuxSocket {
    io: tokio::net::UdpSocket,
    local: SocketAddr,
    /// quinn-udp's per-socket state: segmentation offload both ways (one
    /// system call sends or receives several datagrams), the don't-fragment
    /// bit that lets quinn discover the path MTU, ECN.
    state: UdpSocketState,
    /// An IPv6 socket reaches IPv4 addresses only in their mapped form.
    v6: bool,
    shared: Arc<Shared>,
    /// Injected datagrams for quinn; its `poll_recv` keeps quinn's waker.
    injected: Mutex<mpsc::Receiver<Injected>>,
    /// Whose turn it is when quinn reads one datagram at a time.
    inject_turn: AtomicBool,
    /// Extra socket `i + 1` at index `i`; `None` for a closed one.
    extra: RwLock<Vec<Option<Extra>>>,
}

impl fmt::Debug for DemuxSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemuxSocket")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl DemuxSocket {
    pub(crate) fn new(
        io: tokio::net::UdpSocket,
        raw_capacity: usize,
        counters: Arc<Counters>,
    ) -> io::Result<(Arc<Self>, RawDatagrams)> {
        let (raw_tx, rx) = mpsc::channel(raw_capacity.max(1));
        let (inject_tx, inject_rx) = mpsc::channel(INJECT_QUEUE);
        let local = io.local_addr()?;
        let v6 = local.is_ipv6();
        let state = UdpSocketState::new((&io).into())?;
        Ok((
            Arc::new(DemuxSocket {
                io,
                local,
                state,
                v6,
                shared: Arc::new(Shared {
                    raw_tx,
                    inject_tx,
                    routes: Routes::new(v6),
                    counters,
                }),
                injected: Mutex::new(inject_rx),
                inject_turn: AtomicBool::new(false),
                extra: RwLock::new(Vec::new()),
            }),
            RawDatagrams { rx },
        ))
    }

    fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    pub(crate) fn routes(&self) -> &Routes {
        &self.shared.routes
    }

    fn extra_read(&self) -> RwLockReadGuard<'_, Vec<Option<Extra>>> {
        self.extra.read().unwrap_or_else(|p| p.into_inner())
    }

    fn extra_write(&self) -> RwLockWriteGuard<'_, Vec<Option<Extra>>> {
        self.extra.write().unwrap_or_else(|p| p.into_inner())
    }

    fn extra_io(&self, socket: SocketId) -> Option<Arc<tokio::net::UdpSocket>> {
        let i = usize::from(socket.0).checked_sub(1)?;
        self.extra_read().get(i)?.as_ref().map(|e| e.io.clone())
    }

    /// Send one raw datagram from `socket`. It must satisfy [`is_raw`]
    /// (otherwise the receiver would hand it to QUIC) and be at most
    /// [`MAX_RAW_LEN`] bytes, to a real address. Never waits: a full kernel
    /// buffer gives `WouldBlock`, and the caller drops the datagram.
    pub(crate) fn send_raw(
        &self,
        socket: SocketId,
        to: SocketAddr,
        bytes: &[u8],
    ) -> io::Result<()> {
        if !is_raw(bytes) || bytes.len() > MAX_RAW_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "raw datagrams are 1..=1200 bytes with a first byte of at most 0x3f",
            ));
        }
        if is_virtual(to) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "raw datagrams go to real addresses, not virtual ones",
            ));
        }
        // Straight to the kernel: tokio's try_send_to reports WouldBlock
        // until its driver has seen the socket writable once, which would
        // lose the first datagrams of a fresh socket for no reason.
        let n = if socket == SocketId::MAIN {
            socket2::SockRef::from(&self.io).send_to(bytes, &self.dest(to).into())?
        } else {
            let io = self.extra_io(socket).ok_or_else(|| closed_socket(socket))?;
            socket2::SockRef::from(&*io).send_to(bytes, &self.dest(to).into())?
        };
        if n != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short datagram send",
            ));
        }
        self.counters().raw_sent.fetch_add(1, Relaxed);
        Ok(())
    }

    fn dest(&self, to: SocketAddr) -> SocketAddr {
        match to {
            SocketAddr::V4(v4) if self.v6 => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            other => other,
        }
    }

    /// Bind `n` more sockets on the main socket's IP (port 0) and start
    /// reading them; their ids are the lowest free ones from 1.
    pub(crate) fn open_sockets(&self, n: u16) -> io::Result<Vec<SocketId>> {
        let mut extra = self.extra_write();
        let open = extra.iter().filter(|e| e.is_some()).count();
        if open + usize::from(n) > MAX_EXTRA_SOCKETS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most {MAX_EXTRA_SOCKETS} extra sockets ({open} open)"),
            ));
        }
        let bind_ip = SocketAddr::new(self.local.ip(), 0);
        let mut made = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let opened = bind_udp_with(bind_ip, EXTRA_SOCKET_BUFFER)
                .and_then(|io| Ok((io.local_addr()?, Arc::new(io))));
            let (local, io) = match opened {
                Ok(x) => x,
                Err(e) => {
                    for id in made {
                        let SocketId(i) = id;
                        extra[usize::from(i) - 1] = None;
                    }
                    return Err(e);
                }
            };
            let slot = match extra.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    extra.push(None);
                    extra.len() - 1
                }
            };
            // slot < MAX_EXTRA_SOCKETS, far below u16::MAX.
            let id = SocketId(slot as u16 + 1);
            let task = tokio::spawn(read_extra(id, io.clone(), self.shared.clone())).abort_handle();
            extra[slot] = Some(Extra { io, local, task });
            made.push(id);
        }
        debug!(opened = made.len(), "extra sockets");
        Ok(made)
    }

    /// Close every extra socket not in `keep`, and drop the direct routes
    /// over the closed ones.
    pub(crate) fn close_sockets(&self, keep: &[SocketId]) {
        let mut extra = self.extra_write();
        let mut closed = Vec::new();
        for (i, e) in extra.iter_mut().enumerate() {
            let id = SocketId(i as u16 + 1);
            if e.is_some() && !keep.contains(&id) {
                *e = None;
                closed.push(id);
            }
        }
        while matches!(extra.last(), Some(None)) {
            extra.pop();
        }
        // Still under the socket lock, so no route to a closed socket can
        // be set in between (set_route takes the same locks in this order).
        if !closed.is_empty() {
            self.routes().remove_on(|s| closed.contains(&s));
        }
    }

    /// The local address of a socket, if it is open.
    pub(crate) fn socket_addr(&self, socket: SocketId) -> Option<SocketAddr> {
        if socket == SocketId::MAIN {
            return Some(self.local);
        }
        let i = usize::from(socket.0) - 1;
        self.extra_read().get(i)?.as_ref().map(|e| e.local)
    }

    /// Install a route; a direct one must use an open socket.
    pub(crate) fn set_route(
        &self,
        vaddr: SocketAddr,
        route: Route,
    ) -> Result<(), super::RouteError> {
        let extra = self.extra_read();
        if let Route::Direct { socket, .. } = route {
            let open = socket == SocketId::MAIN
                || matches!(extra.get(usize::from(socket.0) - 1), Some(Some(_)));
            if !open {
                return Err(super::RouteError::NoSuchSocket(socket));
            }
        }
        self.routes().set(vaddr, route)
    }

    /// Hand quinn a relayed QUIC datagram as coming from `vaddr`. False (and
    /// counted) when it is not taken: the queue is full, `vaddr` is not a
    /// virtual address, or the datagram is empty, raw or too long.
    pub(crate) fn inject(&self, vaddr: SocketAddr, datagram: Bytes) -> bool {
        if !self.routes().is_ours(vaddr)
            || datagram.is_empty()
            || is_raw(&datagram)
            || datagram.len() > MAX_INJECT_LEN
        {
            self.counters().inject_dropped.fetch_add(1, Relaxed);
            return false;
        }
        let taken = self.shared.queue(vaddr, datagram);
        if taken {
            self.counters().injected.fetch_add(1, Relaxed);
        }
        taken
    }

    /// Take the raw datagrams out of `n` received entries, leaving only QUIC
    /// datagrams in the first entries of `bufs`/`meta`; returns how many
    /// entries are left. One entry may hold several datagrams of `stride`
    /// bytes from one sender (receive offload; the last may be shorter), and
    /// a raw one may sit among them: the QUIC ones close up around it.
    /// Entries from a source in the virtual range are dropped whole.
    fn demux(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta], n: usize) -> usize {
        let mut kept = 0;
        for i in 0..n.min(bufs.len()).min(meta.len()) {
            let m = meta[i];
            let len = m.len.min(bufs[i].len());
            if len == 0 {
                self.shared.take_raw(SocketId::MAIN, m.addr, &[]);
                continue;
            }
            let stride = if m.stride == 0 { len } else { m.stride };
            if is_virtual(m.addr) {
                self.counters()
                    .unrouted_dropped
                    .fetch_add(len.div_ceil(stride) as u64, Relaxed);
                continue;
            }
            let buf = &mut bufs[i][..len];
            let (mut read, mut write) = (0, 0);
            while read < len {
                let end = (read + stride).min(len);
                if is_raw(&buf[read..end]) {
                    self.shared
                        .take_raw(SocketId::MAIN, m.addr, &buf[read..end]);
                } else {
                    buf.copy_within(read..end, write);
                    write += end - read;
                    self.counters().quic_datagrams.fetch_add(1, Relaxed);
                }
                read = end;
            }
            if write == 0 {
                continue;
            }
            if kept != i {
                let (to, from) = bufs.split_at_mut(i);
                to[kept][..write].copy_from_slice(&from[0][..write]);
            }
            meta[kept] = RecvMeta { len: write, ..m };
            kept += 1;
        }
        kept
    }

    /// Move up to `limit` injected datagrams into the first entries;
    /// registers quinn's waker with the queue when it runs dry.
    fn take_injected(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
        limit: usize,
    ) -> usize {
        let limit = limit.min(bufs.len()).min(meta.len());
        let mut rx = self.injected.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        while n < limit {
            let Poll::Ready(Some((from, d))) = rx.poll_recv(cx) else {
                break;
            };
            if d.len() > bufs[n].len() {
                self.counters().inject_dropped.fetch_add(1, Relaxed);
                continue;
            }
            bufs[n][..d.len()].copy_from_slice(&d);
            meta[n] = RecvMeta {
                addr: from,
                len: d.len(),
                stride: d.len(),
                ecn: None,
                dst_ip: None,
            };
            self.counters().quic_datagrams.fetch_add(1, Relaxed);
            n += 1;
        }
        n
    }

    /// Read the main socket into `bufs` until some QUIC datagram is left.
    fn poll_socket(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            // Tokio's cooperative budget makes this return Pending after a
            // while, so a flood of raw datagrams cannot hold the task forever.
            ready!(self.io.poll_recv_ready(cx))?;
            let n = match self.io.try_io(Interest::READABLE, || {
                self.state.recv((&self.io).into(), bufs, meta)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // ICMP errors for an earlier send: meaningless to QUIC and
                // may be forged, so skip them.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue
                }
                Err(e) => return Poll::Ready(Err(e)),
            };
            let kept = self.demux(bufs, meta, n);
            if kept > 0 {
                if self.routes().any_main_direct() {
                    self.routes()
                        .rewrite_main(meta[..kept].iter_mut().map(|m| &mut m.addr));
                }
                return Poll::Ready(Ok(kept));
            }
        }
    }

    /// A transmit to a virtual address: along its route, or dropped.
    fn send_routed(&self, transmit: &Transmit) -> io::Result<()> {
        let datagrams = || segments(transmit.contents, transmit.segment_size);
        let count = |n: usize| n as u64;
        match self.routes().get(transmit.destination) {
            None => {
                self.counters()
                    .no_route_dropped
                    .fetch_add(count(datagrams().count()), Relaxed);
                Ok(())
            }
            Some(Route::Direct { socket, addr }) if socket == SocketId::MAIN => {
                self.send_main(&Transmit {
                    destination: addr,
                    ..transmit.clone()
                })
            }
            Some(Route::Direct { socket, addr }) => {
                let Some(io) = self.extra_io(socket) else {
                    self.counters()
                        .routed_send_failed
                        .fetch_add(count(datagrams().count()), Relaxed);
                    return Ok(());
                };
                let to = self.dest(addr).into();
                let sock = socket2::SockRef::from(&*io);
                for d in datagrams() {
                    // Never WouldBlock to quinn: it would wait for the main
                    // socket, not this one. A datagram lost here is loss.
                    match sock.send_to(d, &to) {
                        Ok(_) => self.counters().extra_socket_sent.fetch_add(1, Relaxed),
                        Err(_) => self.counters().routed_send_failed.fetch_add(1, Relaxed),
                    };
                }
                Ok(())
            }
            Some(Route::Relay(relay)) => {
                for d in datagrams() {
                    if relay.send(Bytes::copy_from_slice(d)) {
                        self.counters().relay_sent.fetch_add(1, Relaxed);
                    } else {
                        self.counters().routed_send_failed.fetch_add(1, Relaxed);
                    }
                }
                Ok(())
            }
        }
    }

    /// Through quinn-udp on the main socket.
    fn send_main(&self, transmit: &Transmit) -> io::Result<()> {
        let mapped = Transmit {
            destination: self.dest(transmit.destination),
            ecn: transmit.ecn,
            contents: transmit.contents,
            segment_size: transmit.segment_size,
            src_ip: transmit.src_ip,
        };
        self.io.try_io(Interest::WRITABLE, || {
            self.state.send((&self.io).into(), &mapped)
        })
    }
}

fn closed_socket(socket: SocketId) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("socket {} is not open", socket.0),
    )
}

impl AsyncUdpSocket for DemuxSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(WritablePoller {
            socket: self,
            fut: None,
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        // The one check on the path of peer links.
        if is_virtual(transmit.destination) {
            return self.send_routed(transmit);
        }
        self.send_main(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        // Injected datagrams first, but at most half the batch while the
        // main socket may have some too, so neither starves the other (with
        // a batch of one, they take turns).
        let room = bufs.len().min(meta.len());
        let share = match room {
            1 => usize::from(self.inject_turn.fetch_xor(true, Relaxed)),
            r => r / 2,
        };
        let n = self.take_injected(cx, bufs, meta, share);
        if n == room {
            return Poll::Ready(Ok(n));
        }
        match self.poll_socket(cx, &mut bufs[n..room], &mut meta[n..room]) {
            Poll::Ready(Ok(k)) => Poll::Ready(Ok(n + k)),
            // Hand over what we have; the error comes back on the next call.
            Poll::Ready(Err(_)) if n > 0 => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if n > 0 => Poll::Ready(Ok(n)),
            // The socket is idle: the whole batch for injected datagrams,
            // and quinn's waker with the queue if it is empty too.
            Poll::Pending => match self.take_injected(cx, bufs, meta, room) {
                0 => Poll::Pending,
                m => Poll::Ready(Ok(m)),
            },
        }
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Waits for the socket to become writable; one per interested quinn task.
struct WritablePoller {
    socket: Arc<DemuxSocket>,
    fut: Option<Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>>,
}

impl fmt::Debug for WritablePoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WritablePoller")
    }
}

impl UdpPoller for WritablePoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let fut = this.fut.get_or_insert_with(|| {
            let socket = this.socket.clone();
            Box::pin(async move { socket.io.writable().await })
        });
        let res = fut.as_mut().poll(cx);
        if res.is_ready() {
            this.fut = None;
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_rule_is_the_first_byte() {
        assert!(is_raw(&[0x00]));
        assert!(is_raw(&[0x3f, 1, 2]));
        assert!(!is_raw(&[0x40]));
        assert!(!is_raw(&[0x7f]));
        assert!(!is_raw(&[0x80]), "long headers go to quinn");
        assert!(!is_raw(&[0xc3]));
        assert!(!is_raw(&[]));
    }

    /// Received entries as receive offload gives them: several datagrams of
    /// one stride per entry, raw ones among QUIC ones. The QUIC datagrams
    /// close up (entries too), each raw one reaches the raw queue.
    #[tokio::test]
    async fn raw_datagrams_are_taken_out_of_coalesced_entries() {
        let io = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let counters = Arc::new(Counters::default());
        let (sock, mut raw) = DemuxSocket::new(io, 16, counters.clone()).unwrap();
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let quic = |tag: u8, len: usize| {
            let mut d = vec![tag; len];
            d[0] = 0x40 | (tag & 0x3f);
            d
        };
        let raw_dgram = |tag: u8| vec![0x01, tag, tag, tag];
        // Entry 0: QUIC, raw, QUIC (stride 4), the last one short.
        // Entry 1: only raw. Entry 2: QUIC, QUIC.
        let e0 = [quic(1, 4), raw_dgram(2), quic(3, 3)].concat();
        let e1 = [raw_dgram(4), raw_dgram(5)].concat();
        let e2 = [quic(6, 4), quic(7, 4)].concat();
        let mut store = vec![vec![0u8; 16]; 3];
        for (b, e) in store.iter_mut().zip([&e0, &e1, &e2]) {
            b[..e.len()].copy_from_slice(e);
        }
        let meta_of = |len: usize| RecvMeta {
            addr: from,
            len,
            stride: 4,
            ecn: None,
            dst_ip: None,
        };
        let mut meta = [meta_of(e0.len()), meta_of(e1.len()), meta_of(e2.len())];
        let mut bufs: Vec<IoSliceMut> = store.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let kept = sock.demux(&mut bufs, &mut meta, 3);
        assert_eq!(kept, 2);
        assert_eq!(meta[0].len, 7);
        assert_eq!(&bufs[0][..7], [quic(1, 4), quic(3, 3)].concat().as_slice());
        assert_eq!(meta[1].len, 8);
        assert_eq!(&bufs[1][..8], e2.as_slice());
        let got: Vec<Bytes> = std::iter::from_fn(|| raw.try_recv().map(|d| d.bytes)).collect();
        assert_eq!(got, vec![raw_dgram(2), raw_dgram(4), raw_dgram(5)]);
        assert_eq!(counters.quic_datagrams.load(Relaxed), 4);
        assert_eq!(counters.raw_received.load(Relaxed), 3);
    }

    /// One offloaded transmit (segments of 4 bytes, the last of 2) to a
    /// relayed virtual address reaches the relay datagram by datagram, and
    /// the same through an extra socket arrives as three datagrams.
    #[tokio::test]
    async fn offloaded_transmits_are_split_for_relay_and_extra_sockets() {
        let io = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let counters = Arc::new(Counters::default());
        let (sock, _raw) = DemuxSocket::new(io, 16, counters.clone()).unwrap();
        let contents: Vec<u8> = (0x40..0x4a).collect();
        let transmit = |to: SocketAddr| Transmit {
            destination: to,
            ecn: None,
            contents: &contents,
            segment_size: Some(4),
            src_ip: None,
        };
        let want: Vec<&[u8]> = vec![&contents[0..4], &contents[4..8], &contents[8..10]];

        let relayed = sock.routes().new_route();
        let got = Arc::new(Mutex::new(Vec::<Bytes>::new()));
        let sink = got.clone();
        sock.set_route(
            relayed,
            Route::Relay(super::super::RelaySender::new(move |d| {
                sink.lock().unwrap().push(d);
                true
            })),
        )
        .unwrap();
        sock.try_send(&transmit(relayed)).unwrap();
        assert_eq!(*got.lock().unwrap(), want);
        assert_eq!(counters.relay_sent.load(Relaxed), 3);

        let ids = sock.open_sockets(2).unwrap();
        assert_eq!(ids, vec![SocketId(1), SocketId(2)]);
        let far = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        far.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let direct = sock.routes().new_route();
        sock.set_route(
            direct,
            Route::Direct {
                socket: SocketId(2),
                addr: far.local_addr().unwrap(),
            },
        )
        .unwrap();
        sock.try_send(&transmit(direct)).unwrap();
        let mut buf = [0u8; 64];
        for w in &want {
            let (n, from) = far.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], *w);
            assert_eq!(Some(from), sock.socket_addr(SocketId(2)));
        }
        assert_eq!(counters.extra_socket_sent.load(Relaxed), 3);

        // Without a route: dropped, each datagram counted.
        let nowhere = sock.routes().new_route();
        sock.try_send(&transmit(nowhere)).unwrap();
        assert_eq!(counters.no_route_dropped.load(Relaxed), 3);
        // A closed socket takes its routes with it.
        sock.close_sockets(&[SocketId(1)]);
        assert!(sock.routes().get(direct).is_none());
        assert_eq!(sock.socket_addr(SocketId(2)), None);
        assert!(sock.socket_addr(SocketId(1)).is_some());
    }
}
