//! Routed links: QUIC connections to *virtual* addresses whose real path the
//! transport picks, and may change, underneath quinn (as iroh's magicsock).
//!
//! [`Routes::new_route`] hands out an address nobody routes. quinn connects
//! to it, or accepts a connection from it, like any other; the demultiplexing
//! socket looks the address up here on every send to it and on every datagram
//! that arrives over a routed path, so quinn only ever sees the virtual
//! address while the path under it moves from the relay to a direct path, or
//! from one local socket to another.
//!
//! The range depends on the family of the main socket, because quinn refuses
//! an IPv6 remote on an IPv4 endpoint (`ConnectError::InvalidRemoteAddress`,
//! checked in `quinn::Endpoint::connect_with`) and maps every address to IPv6
//! on an IPv6 one:
//! - IPv6 socket: the ULA prefix `fd70:6f73:6861:7265::/64` ("poshare"),
//!   a counter as interface id, port 1;
//! - IPv4 socket: `0.0.0.0/8` ("this host on this network", RFC 1122 and
//!   RFC 6890: a source-only range, never a destination on the Internet),
//!   a counter in the low 24 bits (never `0.0.0.0` itself, which quinn-proto
//!   refuses as unspecified), port 1, then 2, … once those run out.
//!
//! Neither range ever reaches the kernel: a send to an address in either is
//! routed or dropped, `send_raw` refuses them, and a datagram arriving from
//! one is dropped, so the range belongs to the route table alone.
//!
//! The table sits behind one `RwLock`: a send to a virtual address takes the
//! read lock for a lookup and a clone of the route (an `Arc` for a relay);
//! changes take the write lock, so a send sees the old route or the new one,
//! never a mixture. Sends to ordinary addresses (peer links) never touch the
//! lock: [`is_virtual`] on the destination, a comparison of a byte or eight,
//! comes first. Datagrams received on the main socket are looked up only
//! while some route is direct over the main socket (an atomic count).

use crate::punch::SocketId;
use bytes::Bytes;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use thiserror::Error;
use tokio::sync::mpsc;

/// Most routes in the table at once.
pub const MAX_ROUTES: usize = 4096;
/// Most extra sockets open at once.
pub const MAX_EXTRA_SOCKETS: usize = 512;
/// Datagrams waiting to be handed to quinn from [`crate::transport::Transport::inject`]
/// and from the extra sockets; more are dropped and counted.
pub const INJECT_QUEUE: usize = 1024;
/// Longest datagram `inject` takes (the largest UDP payload).
pub const MAX_INJECT_LEN: usize = 65_527;

/// The first 64 bits of virtual IPv6 addresses: `fd70:6f73:6861:7265::/64`.
pub const VIRTUAL_V6_PREFIX: [u16; 4] = [0xfd70, 0x6f73, 0x6861, 0x7265];

/// Whether `addr` lies in either virtual range (see the module documentation),
/// also as an IPv4-mapped IPv6 address. Cheap: the first test on every send.
#[inline]
pub fn is_virtual(addr: SocketAddr) -> bool {
    match addr {
        SocketAddr::V4(a) => a.ip().octets()[0] == 0,
        SocketAddr::V6(a) => {
            let s = a.ip().segments();
            s[..4] == VIRTUAL_V6_PREFIX
                // ::ffff:0.x.x.x, as a dual-stack socket shows 0.0.0.0/8
                || (s[..6] == [0, 0, 0, 0, 0, 0xffff] && s[6] >> 8 == 0)
        }
    }
}

/// Where the datagrams of a virtual address go.
#[derive(Clone, Debug)]
pub enum Route {
    /// Sent from this socket to this real address; datagrams arriving on
    /// this socket from this address are taken as coming from the virtual
    /// address. One (socket, address) pair serves one route only.
    Direct { socket: SocketId, addr: SocketAddr },
    /// Each datagram is handed to the sender (the caller forwards it to the
    /// other side, which feeds it to its transport with `inject`).
    Relay(RelaySender),
}

/// A cloneable handle that takes one QUIC datagram at a time for a relay.
/// It is called from quinn's connection task while quinn holds the
/// connection's state, so it must never block: queue or drop. It returns
/// whether it took the datagram (a refusal is counted in
/// `routed_send_failed`; QUIC treats it as loss).
#[derive(Clone)]
pub struct RelaySender(Arc<dyn Fn(Bytes) -> bool + Send + Sync>);

impl RelaySender {
    pub fn new(f: impl Fn(Bytes) -> bool + Send + Sync + 'static) -> Self {
        RelaySender(Arc::new(f))
    }

    /// Into a bounded channel with `try_send`: a full or closed channel
    /// drops the datagram.
    pub fn channel(tx: mpsc::Sender<Bytes>) -> Self {
        RelaySender::new(move |d| tx.try_send(d).is_ok())
    }

    pub(crate) fn send(&self, datagram: Bytes) -> bool {
        (self.0)(datagram)
    }

    /// Whether two handles are clones of one sender.
    pub fn same(&self, other: &RelaySender) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for RelaySender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RelaySender")
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("{0} is not a virtual address of this transport")]
    NotVirtual(SocketAddr),
    #[error("a direct route cannot lead to the virtual address {0}")]
    VirtualTarget(SocketAddr),
    #[error("socket {0:?} is not open")]
    NoSuchSocket(SocketId),
    #[error("the path from socket {socket:?} to {addr} already carries {by}")]
    PathInUse {
        socket: SocketId,
        addr: SocketAddr,
        by: SocketAddr,
    },
    #[error("the route table is full ({MAX_ROUTES} routes)")]
    TooMany,
}

/// The route table of one transport.
pub(crate) struct Routes {
    /// The family of the main socket, which decides the virtual range and
    /// the form of the real addresses in reverse lookups.
    v6: bool,
    next: AtomicU64,
    /// How many routes are direct over the main socket.
    main_direct: AtomicUsize,
    table: RwLock<Table>,
}

#[derive(Default)]
struct Table {
    forward: HashMap<SocketAddr, Route>,
    reverse: HashMap<(SocketId, SocketAddr), SocketAddr>,
}

impl Routes {
    pub(crate) fn new(v6: bool) -> Self {
        Routes {
            v6,
            next: AtomicU64::new(1),
            main_direct: AtomicUsize::new(0),
            table: RwLock::new(Table::default()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh virtual address; never one handed out before.
    pub(crate) fn new_route(&self) -> SocketAddr {
        virtual_addr(self.v6, self.next.fetch_add(1, Relaxed))
    }

    /// Whether `addr` is in the virtual range of this transport's family.
    pub(crate) fn is_ours(&self, addr: SocketAddr) -> bool {
        match addr {
            SocketAddr::V4(a) => !self.v6 && a.ip().octets()[0] == 0,
            SocketAddr::V6(a) => self.v6 && a.ip().segments()[..4] == VIRTUAL_V6_PREFIX,
        }
    }

    /// A real address in the form the socket reports sources: IPv4 as
    /// mapped IPv6 on a dual-stack socket, plain IPv4 otherwise; no flow label.
    pub(crate) fn normalize(&self, addr: SocketAddr) -> SocketAddr {
        match addr {
            SocketAddr::V4(a) if self.v6 => {
                SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
            }
            SocketAddr::V6(a) if !self.v6 => match a.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
                None => addr,
            },
            SocketAddr::V6(a) if a.flowinfo() != 0 => {
                SocketAddr::V6(SocketAddrV6::new(*a.ip(), a.port(), 0, a.scope_id()))
            }
            other => other,
        }
    }

    pub(crate) fn get(&self, vaddr: SocketAddr) -> Option<Route> {
        self.read().forward.get(&vaddr).cloned()
    }

    /// Install or replace the route of `vaddr`. Whether a direct route's
    /// socket is open is the caller's check (under its socket lock).
    pub(crate) fn set(&self, vaddr: SocketAddr, route: Route) -> Result<(), RouteError> {
        if !self.is_ours(vaddr) {
            return Err(RouteError::NotVirtual(vaddr));
        }
        let route = match route {
            Route::Direct { addr, .. } if is_virtual(addr) => {
                return Err(RouteError::VirtualTarget(addr))
            }
            Route::Direct { socket, addr } => Route::Direct {
                socket,
                addr: self.normalize(addr),
            },
            relay => relay,
        };
        let mut t = self.write();
        if !t.forward.contains_key(&vaddr) && t.forward.len() >= MAX_ROUTES {
            return Err(RouteError::TooMany);
        }
        if let Route::Direct { socket, addr } = route {
            if let Some(&by) = t.reverse.get(&(socket, addr)) {
                if by != vaddr {
                    return Err(RouteError::PathInUse { socket, addr, by });
                }
            }
        }
        if let Some(old) = t.forward.insert(vaddr, route.clone()) {
            self.unindex(&mut t, &old);
        }
        if let Route::Direct { socket, addr } = route {
            t.reverse.insert((socket, addr), vaddr);
            if socket == SocketId::MAIN {
                self.main_direct.fetch_add(1, Release);
            }
        }
        Ok(())
    }

    pub(crate) fn remove(&self, vaddr: SocketAddr) -> Option<Route> {
        let mut t = self.write();
        let old = t.forward.remove(&vaddr)?;
        self.unindex(&mut t, &old);
        Some(old)
    }

    /// Remove every direct route over a socket for which `closed` holds.
    pub(crate) fn remove_on(&self, closed: impl Fn(SocketId) -> bool) {
        let mut t = self.write();
        let gone: Vec<SocketAddr> = t
            .forward
            .iter()
            .filter(|(_, r)| matches!(r, Route::Direct { socket, .. } if closed(*socket)))
            .map(|(v, _)| *v)
            .collect();
        for v in gone {
            if let Some(old) = t.forward.remove(&v) {
                self.unindex(&mut t, &old);
            }
        }
    }

    fn unindex(&self, t: &mut Table, old: &Route) {
        if let Route::Direct { socket, addr } = old {
            t.reverse.remove(&(*socket, *addr));
            if *socket == SocketId::MAIN {
                self.main_direct.fetch_sub(1, Release);
            }
        }
    }

    /// The virtual address whose direct route is (socket, from).
    pub(crate) fn reverse(&self, socket: SocketId, from: SocketAddr) -> Option<SocketAddr> {
        let from = self.normalize(from);
        self.read().reverse.get(&(socket, from)).copied()
    }

    /// Whether any route is direct over the main socket.
    pub(crate) fn any_main_direct(&self) -> bool {
        self.main_direct.load(Acquire) != 0
    }

    /// Replace each source in `addrs` that a direct route over the main
    /// socket names by its virtual address; one read lock for the batch.
    pub(crate) fn rewrite_main<'a>(&self, addrs: impl Iterator<Item = &'a mut SocketAddr>) {
        let t = self.read();
        for a in addrs {
            if let Some(v) = t.reverse.get(&(SocketId::MAIN, self.normalize(*a))) {
                *a = *v;
            }
        }
    }
}

/// The `n`th virtual address (n ≥ 1) of a socket of the given family.
fn virtual_addr(v6: bool, n: u64) -> SocketAddr {
    if v6 {
        let [a, b, c, d] = VIRTUAL_V6_PREFIX;
        let ip = Ipv6Addr::new(
            a,
            b,
            c,
            d,
            (n >> 48) as u16,
            (n >> 32) as u16,
            (n >> 16) as u16,
            n as u16,
        );
        SocketAddr::new(IpAddr::V6(ip), 1)
    } else {
        // 0.0.0.1 ..= 0.255.255.255 on port 1, then the same on port 2, …
        const HOSTS: u64 = (1 << 24) - 1;
        let m = n.saturating_sub(1);
        let host = 1 + (m % HOSTS) as u32;
        let port = 1 + ((m / HOSTS) % u64::from(u16::MAX)) as u16;
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(host)), port)
    }
}

/// The datagrams of one transmit: `segment_size` bytes each (segmentation
/// offload), the last one maybe shorter; the whole of `contents` without it.
pub(crate) fn segments(
    contents: &[u8],
    segment_size: Option<usize>,
) -> impl Iterator<Item = &[u8]> {
    let size = match segment_size {
        Some(s) if s > 0 => s,
        _ => contents.len().max(1),
    };
    contents.chunks(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(socket: u16, addr: &str) -> Route {
        Route::Direct {
            socket: SocketId(socket),
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn virtual_addresses_are_fresh_and_in_range() {
        for v6 in [false, true] {
            let r = Routes::new(v6);
            let a = r.new_route();
            let b = r.new_route();
            assert_ne!(a, b);
            assert_eq!(a.is_ipv6(), v6);
            assert!(is_virtual(a) && r.is_ours(a) && !a.ip().is_unspecified());
        }
        assert_eq!(
            virtual_addr(false, 1),
            "0.0.0.1:1".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            virtual_addr(false, (1 << 24) - 1),
            "0.255.255.255:1".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            virtual_addr(false, 1 << 24),
            "0.0.0.1:2".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            virtual_addr(true, 0x1_0002),
            "[fd70:6f73:6861:7265::1:2]:1"
                .parse::<SocketAddr>()
                .unwrap()
        );
        for real in [
            "127.0.0.1:5",
            "[::1]:5",
            "[::ffff:10.0.0.1]:5",
            "[fd00::1]:5",
        ] {
            assert!(!is_virtual(real.parse().unwrap()), "{real}");
        }
        assert!(is_virtual("[::ffff:0.0.0.7]:1".parse().unwrap()));
    }

    #[test]
    fn table_keeps_paths_unique_and_reverse_in_step() {
        let r = Routes::new(false);
        let (v1, v2) = (r.new_route(), r.new_route());
        let b: SocketAddr = "10.0.0.2:7".parse().unwrap();
        r.set(v1, direct(0, "10.0.0.2:7")).unwrap();
        assert!(r.any_main_direct());
        assert_eq!(r.reverse(SocketId(0), b), Some(v1));
        // The mapped form is the same address.
        assert_eq!(
            r.reverse(SocketId(0), "[::ffff:10.0.0.2]:7".parse().unwrap()),
            Some(v1)
        );
        assert_eq!(
            r.set(v2, direct(0, "10.0.0.2:7")),
            Err(RouteError::PathInUse {
                socket: SocketId(0),
                addr: b,
                by: v1
            })
        );
        // The same pair on another socket is another path.
        r.set(v2, direct(3, "10.0.0.2:7")).unwrap();
        // Moving v1 frees its old path.
        r.set(v1, Route::Relay(RelaySender::new(|_| true))).unwrap();
        assert!(!r.any_main_direct());
        assert_eq!(r.reverse(SocketId(0), b), None);
        assert_eq!(r.reverse(SocketId(3), b), Some(v2));
        r.remove_on(|s| s == SocketId(3));
        assert!(r.get(v2).is_none());
        assert_eq!(r.reverse(SocketId(3), b), None);
        assert!(matches!(r.remove(v1), Some(Route::Relay(_))));
        assert_eq!(
            r.set(b, direct(0, "10.0.0.3:1")),
            Err(RouteError::NotVirtual(b))
        );
        assert_eq!(
            r.set(
                v1,
                Route::Direct {
                    socket: SocketId(0),
                    addr: v2
                }
            ),
            Err(RouteError::VirtualTarget(v2))
        );
    }

    #[test]
    fn table_is_bounded() {
        let r = Routes::new(true);
        let relay = RelaySender::new(|_| true);
        let first = r.new_route();
        r.set(first, Route::Relay(relay.clone())).unwrap();
        for _ in 1..MAX_ROUTES {
            r.set(r.new_route(), Route::Relay(relay.clone())).unwrap();
        }
        assert_eq!(
            r.set(r.new_route(), Route::Relay(relay.clone())),
            Err(RouteError::TooMany)
        );
        // Replacing an existing route is still fine.
        r.set(first, Route::Relay(relay)).unwrap();
    }

    #[test]
    fn segments_split_offloaded_transmits() {
        let c: Vec<u8> = (0..10).collect();
        let got: Vec<&[u8]> = segments(&c, Some(4)).collect();
        assert_eq!(got, vec![&c[0..4], &c[4..8], &c[8..10]]);
        let got: Vec<&[u8]> = segments(&c, None).collect();
        assert_eq!(got, vec![&c[..]]);
        let got: Vec<&[u8]> = segments(&c, Some(5)).collect();
        assert_eq!(got, vec![&c[0..5], &c[5..10]]);
        let got: Vec<&[u8]> = segments(&c, Some(64)).collect();
        assert_eq!(got, vec![&c[..]]);
    }
}
