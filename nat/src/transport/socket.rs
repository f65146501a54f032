//! The process's one UDP socket, and the demultiplexer that sits between it
//! and quinn.
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

use super::stats::Counters;
use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use socket2::{Domain, Protocol, Socket, Type};
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::Interest;
use tokio::sync::mpsc;
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

/// A raw datagram received on the shared socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawDatagram {
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
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a kernel that refuses the size still gives a usable socket.
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        warn!(error = %e, "could not set SO_RCVBUF");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        warn!(error = %e, "could not set SO_SNDBUF");
    }
    if addr.is_ipv6() {
        // Dual-stack on [::]: IPv4 peers then appear as mapped addresses.
        if let Err(e) = socket.set_only_v6(false) {
            warn!(error = %e, "could not clear IPV6_V6ONLY");
        }
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    debug!(
        rcvbuf = socket.recv_buffer_size().ok(),
        sndbuf = socket.send_buffer_size().ok(),
        "udp socket bound"
    );
    tokio::net::UdpSocket::from_std(socket.into())
}

/// The shared socket as quinn sees it. Also the sender of raw datagrams.
pub(crate) struct DemuxSocket {
    io: tokio::net::UdpSocket,
    /// quinn-udp's per-socket state: segmentation offload both ways (one
    /// system call sends or receives several datagrams), the don't-fragment
    /// bit that lets quinn discover the path MTU, ECN.
    state: UdpSocketState,
    /// An IPv6 socket reaches IPv4 addresses only in their mapped form.
    v6: bool,
    raw_tx: mpsc::Sender<RawDatagram>,
    counters: Arc<Counters>,
}

impl fmt::Debug for DemuxSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemuxSocket")
            .field("local", &self.io.local_addr().ok())
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
        let v6 = io.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
        let state = UdpSocketState::new((&io).into())?;
        Ok((
            Arc::new(DemuxSocket {
                io,
                state,
                v6,
                raw_tx,
                counters,
            }),
            RawDatagrams { rx },
        ))
    }

    /// Send one raw datagram. It must satisfy [`is_raw`] (otherwise the
    /// receiver would hand it to QUIC) and be at most [`MAX_RAW_LEN`] bytes.
    /// Never waits: a full kernel buffer gives `WouldBlock`, and the caller
    /// drops the datagram.
    pub(crate) fn send_raw(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        if !is_raw(bytes) || bytes.len() > MAX_RAW_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "raw datagrams are 1..=1200 bytes with a first byte of at most 0x3f",
            ));
        }
        // Straight to the kernel: tokio's try_send_to reports WouldBlock
        // until its driver has seen the socket writable once, which would
        // lose the first datagrams of a fresh socket for no reason.
        let n = socket2::SockRef::from(&self.io).send_to(bytes, &self.dest(to).into())?;
        if n != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short datagram send",
            ));
        }
        self.counters.raw_sent.fetch_add(1, Relaxed);
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

    /// Take the raw datagrams out of `n` received entries, leaving only QUIC
    /// datagrams in the first entries of `bufs`/`meta`; returns how many
    /// entries are left. One entry may hold several datagrams of `stride`
    /// bytes from one sender (receive offload; the last may be shorter), and
    /// a raw one may sit among them: the QUIC ones close up around it.
    fn demux(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta], n: usize) -> usize {
        let mut kept = 0;
        for i in 0..n.min(bufs.len()).min(meta.len()) {
            let m = meta[i];
            let len = m.len.min(bufs[i].len());
            if len == 0 {
                self.take_raw(m.addr, &[]);
                continue;
            }
            let stride = if m.stride == 0 { len } else { m.stride };
            let buf = &mut bufs[i][..len];
            let (mut read, mut write) = (0, 0);
            while read < len {
                let end = (read + stride).min(len);
                if is_raw(&buf[read..end]) {
                    self.take_raw(m.addr, &buf[read..end]);
                } else {
                    buf.copy_within(read..end, write);
                    write += end - read;
                    self.counters.quic_datagrams.fetch_add(1, Relaxed);
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

    /// Route one received datagram that is not for quinn.
    fn take_raw(&self, from: SocketAddr, bytes: &[u8]) {
        if bytes.is_empty() || bytes.len() > MAX_RAW_LEN {
            self.counters.raw_dropped_invalid.fetch_add(1, Relaxed);
            return;
        }
        let d = RawDatagram {
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
}

impl AsyncUdpSocket for DemuxSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(WritablePoller {
            socket: self,
            fut: None,
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
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

    fn poll_recv(
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
                return Poll::Ready(Ok(kept));
            }
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
        self.io.local_addr()
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
}
