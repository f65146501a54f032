//! Routed links over real sockets on 127.0.0.1: QUIC links to virtual
//! addresses whose path moves between the main socket, an extra socket and a
//! relay underneath quinn; raw datagrams on extra sockets; what extra
//! sockets drop; closing them.

use bytes::Bytes;
use dag::{PeerKey, Signer};
use nat::transport::{
    is_virtual, Link, RawDatagrams, RelaySender, Route, RouteError, SocketId, Transport,
    TransportConfig, MAX_EXTRA_SOCKETS,
};
use proofs::Hash;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const CHAIN: Hash = Hash([0x5a; 32]);

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn signer(seed: u8) -> Arc<Mutex<Signer>> {
    Arc::new(Mutex::new(Signer::from_seed([seed; 32], [seed ^ 0x77; 32])))
}

async fn node(seed: u8) -> (Transport, RawDatagrams) {
    Transport::bind(
        TransportConfig::new(local(), CHAIN),
        signer(seed),
        Arc::new(|_: &PeerKey| true),
    )
    .await
    .unwrap()
}

/// Every test step is bounded so a hang fails fast instead of stalling CI.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(8), f)
        .await
        .expect("step took too long")
}

/// Waits until `cond` holds, polling; panics after a few seconds.
async fn eventually(mut cond: impl FnMut() -> bool) {
    within(async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

fn direct(socket: SocketId, addr: SocketAddr) -> Route {
    Route::Direct { socket, addr }
}

/// A dials B at `va` (A's virtual address for B); B accepts. Both links.
async fn linked_via(a: &Transport, b: &Transport, va: SocketAddr) -> (Link, Link) {
    let (la, lb) = within(async { tokio::join!(a.connect(va, b.key()), b.accept()) }).await;
    (la.unwrap(), lb.unwrap())
}

/// Frames go both ways; `tag` tells the rounds apart.
async fn exchange(la: &Link, lb: &Link, tag: &str) {
    let (to_b, to_a) = (format!("{tag} a->b"), format!("{tag} b->a"));
    la.send(Bytes::from(to_b.clone())).unwrap();
    lb.send(Bytes::from(to_a.clone())).unwrap();
    assert_eq!(within(lb.recv()).await.unwrap(), Bytes::from(to_b));
    assert_eq!(within(la.recv()).await.unwrap(), Bytes::from(to_a));
}

/// Two transports with direct routes over their main sockets: A's `va`
/// leads to B, B's `vb` to A.
async fn direct_pair() -> (Transport, Transport, SocketAddr, SocketAddr) {
    let (a, _) = node(1).await;
    let (b, _) = node(2).await;
    let va = a.new_route();
    let vb = b.new_route();
    a.set_route(va, direct(SocketId::MAIN, b.local_addr()))
        .unwrap();
    b.set_route(vb, direct(SocketId::MAIN, a.local_addr()))
        .unwrap();
    (a, b, va, vb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_to_virtual_addresses_carry_frames() {
    let (a, b, va, vb) = direct_pair().await;
    // quinn refuses IPv6 remotes on an IPv4 endpoint: the range follows
    // the socket's family. Each transport counts its own (here both 0.0.0.1).
    assert!(va.is_ipv4() && is_virtual(va) && is_virtual(vb));
    let (la, lb) = linked_via(&a, &b, va).await;
    assert_eq!(la.remote_addr(), va);
    assert_eq!(lb.remote_addr(), vb);
    exchange(&la, &lb, "first").await;
    let big: Bytes = (0..300_000)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    la.send(big.clone()).unwrap();
    assert_eq!(within(lb.recv()).await.unwrap(), big);
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.no_route_dropped + sb.no_route_dropped, 0);
    assert_eq!(sa.unrouted_dropped + sb.unrouted_dropped, 0);
    assert_eq!(sa.extra_socket_sent + sa.relay_sent, 0);

    // Without a route, nothing gets through, and the drop is counted.
    assert!(a.remove_route(va).is_some());
    la.send(Bytes::from_static(b"lost")).unwrap();
    eventually(|| a.stats().no_route_dropped > 0).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), lb.recv())
            .await
            .is_err(),
        "nothing arrives without a route"
    );
    // Back on the route, QUIC delivers what it had to retransmit.
    a.set_route(va, direct(SocketId::MAIN, b.local_addr()))
        .unwrap();
    assert_eq!(&within(lb.recv()).await.unwrap()[..], b"lost");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_moves_to_an_extra_socket_unnoticed() {
    let (a, b, va, vb) = direct_pair().await;
    let (la, lb) = linked_via(&a, &b, va).await;
    exchange(&la, &lb, "on main").await;

    let ids = a.open_sockets(3).unwrap();
    assert_eq!(ids, vec![SocketId(1), SocketId(2), SocketId(3)]);
    let k = ids[1];
    let a_k = a.socket_addr(k).unwrap();
    assert_ne!(a_k, a.local_addr());
    assert_eq!(a_k.ip(), a.local_addr().ip());

    // The dialler moves first. Until the acceptor's route follows, its
    // datagrams from the new address reach the acceptor's quinn under their
    // real source, and it drops them: a link accepted from a virtual
    // address does not migrate (with quinn's default it would, and leave
    // the route table for good).
    let sent_before = a.stats().extra_socket_sent;
    a.set_route(va, direct(k, b.local_addr())).unwrap();
    la.send(Bytes::from_static(b"across the switch")).unwrap();
    eventually(|| a.stats().extra_socket_sent > sent_before).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), lb.recv())
            .await
            .is_err(),
        "not taken by a path the acceptor's route does not name"
    );
    assert_eq!(lb.remote_addr(), vb);
    b.set_route(vb, direct(SocketId::MAIN, a_k)).unwrap();
    assert_eq!(&within(lb.recv()).await.unwrap()[..], b"across the switch");
    exchange(&la, &lb, "on socket k").await;
    let big: Bytes = vec![0x5c; 200_000].into();
    lb.send(big.clone()).unwrap();
    assert_eq!(within(la.recv()).await.unwrap(), big);

    // quinn never saw an address change.
    assert_eq!(la.remote_addr(), va);
    assert_eq!(lb.remote_addr(), vb);
    assert!(la.close_reason().is_none() && lb.close_reason().is_none());
    // The datagrams really left through socket k, and B's came in there.
    let sa = a.stats();
    assert!(sa.extra_socket_sent > sent_before + 10, "{sa:?}");
    assert_eq!(sa.routed_send_failed, 0);

    // Closing the other extra sockets leaves the link alone.
    a.close_sockets(&[k]);
    exchange(&la, &lb, "after closing the others").await;
    a.close().await;
    b.close().await;
}

/// A relay: each datagram into a channel, a task feeds it to the other
/// transport's `inject` as coming from `vaddr`, dropping every
/// `drop_every`th (0: none).
fn relay_to(other: Transport, vaddr: SocketAddr, drop_every: u64) -> RelaySender {
    let (tx, mut rx) = mpsc::channel::<Bytes>(1024);
    tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(d) = rx.recv().await {
            n += 1;
            if drop_every != 0 && n.is_multiple_of(drop_every) {
                continue;
            }
            other.inject(vaddr, d);
        }
    });
    RelaySender::channel(tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_starts_on_the_relay_and_moves_direct_unnoticed() {
    let (a, _) = node(1).await;
    let (b, _) = node(2).await;
    let va = a.new_route();
    let vb = b.new_route();
    a.set_route(va, Route::Relay(relay_to(b.clone(), vb, 10)))
        .unwrap();
    b.set_route(vb, Route::Relay(relay_to(a.clone(), va, 10)))
        .unwrap();

    let (la, lb) = linked_via(&a, &b, va).await;
    assert_eq!(la.remote_addr(), va);
    assert_eq!(lb.remote_addr(), vb);
    exchange(&la, &lb, "relayed").await;
    // Enough data that the dropped tenth must be recovered.
    let big: Bytes = (0..400_000)
        .map(|i| (i % 241) as u8)
        .collect::<Vec<_>>()
        .into();
    la.send(big.clone()).unwrap();
    lb.send(big.clone()).unwrap();
    assert_eq!(within(lb.recv()).await.unwrap(), big);
    assert_eq!(within(la.recv()).await.unwrap(), big);
    let (sa, sb) = (a.stats(), b.stats());
    assert!(sa.relay_sent > 100 && sb.relay_sent > 100, "{sa:?} {sb:?}");
    assert!(sa.injected > 0 && sb.injected > 0);
    // Nothing of the link touched the sockets.
    assert_eq!(sa.quic_datagrams, sa.injected);
    assert_eq!(sb.quic_datagrams, sb.injected);

    // Both move to the direct path in the middle of the link.
    a.set_route(va, direct(SocketId::MAIN, b.local_addr()))
        .unwrap();
    b.set_route(vb, direct(SocketId::MAIN, a.local_addr()))
        .unwrap();
    let relayed = (a.stats().relay_sent, b.stats().relay_sent);
    let (id_a, id_b) = (la.id(), lb.id());
    exchange(&la, &lb, "direct").await;
    la.send(big.clone()).unwrap();
    assert_eq!(within(lb.recv()).await.unwrap(), big);
    assert_eq!((a.stats().relay_sent, b.stats().relay_sent), relayed);
    assert!(b.stats().quic_datagrams > b.stats().injected);
    assert_eq!((la.id(), lb.id()), (id_a, id_b));
    assert_eq!(la.remote_addr(), va);
    assert_eq!(lb.remote_addr(), vb);
    assert!(la.close_reason().is_none() && lb.close_reason().is_none());
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_datagrams_use_and_name_any_socket() {
    let (a, mut raw_a) = node(1).await;
    let (b, mut raw_b) = node(2).await;
    let ids = a.open_sockets(2).unwrap();
    let k = ids[1];
    let a_k = a.socket_addr(k).unwrap();

    a.send_raw_from(k, b.local_addr(), &[0x01, 7]).unwrap();
    let d = within(raw_b.recv()).await.unwrap();
    assert_eq!(
        (d.socket, d.from, &d.bytes[..]),
        (SocketId::MAIN, a_k, &[0x01, 7][..])
    );

    b.send_raw(a_k, &[0x02, 8]).unwrap();
    let d = within(raw_a.recv()).await.unwrap();
    assert_eq!(
        (d.socket, d.from, &d.bytes[..]),
        (k, b.local_addr(), &[0x02, 8][..])
    );
    b.send_raw(a.local_addr(), &[0x02, 9]).unwrap();
    let d = within(raw_a.recv()).await.unwrap();
    assert_eq!((d.socket, &d.bytes[..]), (SocketId::MAIN, &[0x02, 9][..]));
    assert_eq!(a.stats().raw_sent, 1);
    assert_eq!(a.stats().raw_received, 2);

    // The raw rules hold on every socket, and virtual addresses are not
    // destinations for raw datagrams.
    let kind = |r: io::Result<()>| r.unwrap_err().kind();
    assert_eq!(
        kind(a.send_raw_from(k, b.local_addr(), &[0x40])),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(a.send_raw(a.new_route(), &[0x01])),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(a.send_raw_from(SocketId(9), b.local_addr(), &[0x01])),
        io::ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_sockets_drop_quic_from_unknown_sources() {
    let (a, _raw_a) = node(1).await;
    let k = a.open_sockets(1).unwrap()[0];
    let a_k = a.socket_addr(k).unwrap();
    // A route that names another address on socket k does not let these in.
    let va = a.new_route();
    a.set_route(va, direct(k, "127.0.0.1:9".parse().unwrap()))
        .unwrap();
    let stranger = UdpSocket::bind(local()).unwrap();
    for i in 0..50u8 {
        // Short and long headers alike.
        let first = if i % 2 == 0 { 0x40 | (i & 0x3f) } else { 0xc0 };
        let mut d = vec![i; 1200];
        d[0] = first;
        stranger.send_to(&d, a_k).unwrap();
    }
    eventually(|| a.stats().unrouted_dropped == 50).await;
    let s = a.stats();
    assert_eq!(s.quic_datagrams, 0, "{s:?}");
    assert_eq!(s.injected, 0);
    // The main socket still hands unknown QUIC to quinn, as before.
    stranger.send_to(&[0x40; 1200], a.local_addr()).unwrap();
    eventually(|| a.stats().quic_datagrams == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_sockets_keeps_only_the_kept_ones() {
    let (a, _) = node(1).await;
    let (b, _) = node(2).await;
    let ids = a.open_sockets(3).unwrap();
    assert_eq!(ids, vec![SocketId(1), SocketId(2), SocketId(3)]);
    let va = a.new_route();
    let vc = a.new_route();
    a.set_route(va, direct(SocketId(1), b.local_addr()))
        .unwrap();
    a.set_route(vc, direct(SocketId(2), b.local_addr()))
        .unwrap();

    a.close_sockets(&[SocketId(2), SocketId::MAIN]);
    assert_eq!(a.socket_addr(SocketId(1)), None);
    assert!(a.socket_addr(SocketId(2)).is_some());
    assert_eq!(a.socket_addr(SocketId(3)), None);
    assert!(a.socket_addr(SocketId::MAIN).is_some());
    let err = a
        .send_raw_from(SocketId(1), b.local_addr(), &[0x01])
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    a.send_raw_from(SocketId(2), b.local_addr(), &[0x01])
        .unwrap();
    // Routes over a closed socket went with it; the others stay.
    assert!(a.route(va).is_none());
    assert!(matches!(
        a.route(vc),
        Some(Route::Direct {
            socket: SocketId(2),
            ..
        })
    ));
    assert_eq!(
        a.set_route(va, direct(SocketId(1), b.local_addr()))
            .unwrap_err(),
        RouteError::NoSuchSocket(SocketId(1))
    );
    // Two routes never share a path.
    assert!(matches!(
        a.set_route(va, direct(SocketId(2), b.local_addr())),
        Err(RouteError::PathInUse { by, .. }) if by == vc
    ));

    // Freed ids are reused, lowest first; the limit counts open sockets.
    assert_eq!(a.open_sockets(2).unwrap(), vec![SocketId(1), SocketId(3)]);
    let err = a.open_sockets((MAX_EXTRA_SOCKETS - 2) as u16).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(a.socket_addr(SocketId(4)), None, "nothing half-opened");
    a.close_sockets(&[]);
    assert_eq!(a.socket_addr(SocketId(2)), None);
    assert!(a.route(vc).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inject_takes_only_quic_for_virtual_addresses_and_is_bounded() {
    let (a, _) = node(1).await;
    let va = a.new_route();
    assert!(!a.inject(a.local_addr(), Bytes::from_static(&[0x40; 40])));
    assert!(!a.inject(va, Bytes::from_static(&[0x01; 40])));
    assert!(!a.inject(va, Bytes::new()));
    assert_eq!(a.stats().inject_dropped, 3);

    // A burst larger than the queue: what is taken reaches quinn, the rest
    // is counted.
    const BURST: u64 = 5000;
    let mut taken = 0;
    for i in 0..BURST {
        let mut d = vec![0x41u8; 60];
        d[1..9].copy_from_slice(&i.to_be_bytes());
        if a.inject(va, d.into()) {
            taken += 1;
        }
    }
    let s = a.stats();
    assert_eq!(s.injected, taken);
    assert_eq!(s.inject_dropped, 3 + BURST - taken);
    eventually(|| a.stats().quic_datagrams == taken).await;
}
