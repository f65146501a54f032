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

use super::stats::Counters;
use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use socket2::{Domain, Protocol, Socket, Type};
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::ReadBuf;
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
    ) -> (Arc<Self>, RawDatagrams) {
        let (raw_tx, rx) = mpsc::channel(raw_capacity.max(1));
        let v6 = io.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
        (
            Arc::new(DemuxSocket {
                io,
                v6,
                raw_tx,
                counters,
            }),
            RawDatagrams { rx },
        )
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
        // One datagram per transmit: max_transmit_segments is 1 (no GSO).
        self.io
            .try_send_to(transmit.contents, self.dest(transmit.destination))
            .map(|_| ())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut filled = 0;
        while filled < bufs.len().min(meta.len()) {
            let mut rb = ReadBuf::new(&mut bufs[filled]);
            // Tokio's cooperative budget makes this return Pending after a
            // while, so a flood of raw datagrams cannot hold the task forever.
            match self.io.poll_recv_from(cx, &mut rb) {
                Poll::Pending => break,
                Poll::Ready(Err(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    // ICMP errors for an earlier send: meaningless to QUIC and
                    // may be forged, so skip them.
                    continue;
                }
                Poll::Ready(Err(e)) => {
                    if filled > 0 {
                        break;
                    }
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(from)) => {
                    let len = rb.filled().len();
                    if len == 0 || is_raw(rb.filled()) {
                        self.take_raw(from, rb.filled());
                        continue;
                    }
                    self.counters.quic_datagrams.fetch_add(1, Relaxed);
                    meta[filled] = RecvMeta {
                        addr: from,
                        len,
                        stride: len,
                        ecn: None,
                        dst_ip: None,
                    };
                    filled += 1;
                }
            }
        }
        if filled == 0 {
            Poll::Pending
        } else {
            Poll::Ready(Ok(filled))
        }
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
}
