//! Counters of the transport: what was accepted, and above all what was
//! dropped or refused, since every input from the network is untrusted and
//! silent drops would hide attacks and bugs alike.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// Live counters shared by the socket, the endpoint tasks and the links.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub quic_datagrams: AtomicU64,
    pub raw_received: AtomicU64,
    pub raw_sent: AtomicU64,
    pub raw_dropped_queue_full: AtomicU64,
    pub raw_dropped_invalid: AtomicU64,
    pub links_authenticated: AtomicU64,
    pub auth_failures: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub handshakes_refused_busy: AtomicU64,
    pub accept_queue_full: AtomicU64,
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub frames_dropped_rate: AtomicU64,
    pub frames_too_large: AtomicU64,
    pub send_queue_full: AtomicU64,
    pub no_route_dropped: AtomicU64,
    pub routed_send_failed: AtomicU64,
    pub extra_socket_sent: AtomicU64,
    pub relay_sent: AtomicU64,
    pub injected: AtomicU64,
    pub inject_dropped: AtomicU64,
    pub unrouted_dropped: AtomicU64,
}

/// A snapshot of the counters; all totals since the transport was bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Datagrams handed to quinn (QUIC packets, or junk that looked like them).
    pub quic_datagrams: u64,
    /// Raw datagrams queued for the reader of [`super::RawDatagrams`].
    pub raw_received: u64,
    /// Raw datagrams sent with `send_raw`.
    pub raw_sent: u64,
    /// Raw datagrams dropped because the raw queue was full.
    pub raw_dropped_queue_full: u64,
    /// Raw datagrams dropped for being empty or longer than `MAX_RAW_LEN`.
    pub raw_dropped_invalid: u64,
    /// Links that passed the Hello check, both directions.
    pub links_authenticated: u64,
    /// Links refused by the Hello check (bad chain, signature, key, or
    /// malformed Hello), by either side.
    pub auth_failures: u64,
    /// QUIC/TLS handshakes that failed or timed out before any Hello check.
    pub handshake_failures: u64,
    /// Inbound handshakes refused because too many were already pending.
    pub handshakes_refused_busy: u64,
    /// Authenticated inbound links closed because nobody called `accept`.
    pub accept_queue_full: u64,
    /// Frames written to links.
    pub frames_sent: u64,
    /// Frames delivered to link readers.
    pub frames_received: u64,
    /// Inbound frames dropped by the per-link rate limit.
    pub frames_dropped_rate: u64,
    /// Links closed because the peer announced a frame above `max_frame`.
    pub frames_too_large: u64,
    /// `Link::send` calls refused because the link's send queue was full.
    pub send_queue_full: u64,
    /// QUIC datagrams quinn sent to a virtual address that has no route
    /// (dropped).
    pub no_route_dropped: u64,
    /// QUIC datagrams to a routed address that could not go: the route's
    /// extra socket is closed or its send failed, or the relay sender
    /// refused them (dropped; QUIC sees loss).
    pub routed_send_failed: u64,
    /// QUIC datagrams sent through extra sockets.
    pub extra_socket_sent: u64,
    /// QUIC datagrams handed to relay senders.
    pub relay_sent: u64,
    /// Relayed datagrams taken by `Transport::inject`.
    pub injected: u64,
    /// Datagrams not taken into the injection queue: `inject` of an empty,
    /// raw-looking or too long datagram or to a non-virtual address, or the
    /// queue was full (also for datagrams from extra sockets).
    pub inject_dropped: u64,
    /// Datagrams dropped on arrival: QUIC ones on an extra socket from an
    /// address no direct route names (or too long for its buffer), and any
    /// on any socket from a source inside the virtual range.
    pub unrouted_dropped: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> TransportStats {
        TransportStats {
            quic_datagrams: self.quic_datagrams.load(Relaxed),
            raw_received: self.raw_received.load(Relaxed),
            raw_sent: self.raw_sent.load(Relaxed),
            raw_dropped_queue_full: self.raw_dropped_queue_full.load(Relaxed),
            raw_dropped_invalid: self.raw_dropped_invalid.load(Relaxed),
            links_authenticated: self.links_authenticated.load(Relaxed),
            auth_failures: self.auth_failures.load(Relaxed),
            handshake_failures: self.handshake_failures.load(Relaxed),
            handshakes_refused_busy: self.handshakes_refused_busy.load(Relaxed),
            accept_queue_full: self.accept_queue_full.load(Relaxed),
            frames_sent: self.frames_sent.load(Relaxed),
            frames_received: self.frames_received.load(Relaxed),
            frames_dropped_rate: self.frames_dropped_rate.load(Relaxed),
            frames_too_large: self.frames_too_large.load(Relaxed),
            send_queue_full: self.send_queue_full.load(Relaxed),
            no_route_dropped: self.no_route_dropped.load(Relaxed),
            routed_send_failed: self.routed_send_failed.load(Relaxed),
            extra_socket_sent: self.extra_socket_sent.load(Relaxed),
            relay_sent: self.relay_sent.load(Relaxed),
            injected: self.injected.load(Relaxed),
            inject_dropped: self.inject_dropped.load(Relaxed),
            unrouted_dropped: self.unrouted_dropped.load(Relaxed),
        }
    }
}
