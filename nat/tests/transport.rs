//! The transport over real sockets on 127.0.0.1: authentication both ways,
//! refusals, framing limits, raw datagrams and a junk flood.

use bytes::Bytes;
use dag::identity::Bytes64;
use dag::{PeerKey, Signer};
use nat::transport::{
    close_code, AuthError, LinkSigner, RawDatagrams, SocketId, Transport, TransportConfig,
    TransportError, LINK_CONTEXT, MAX_RAW_LEN,
};
use proofs::Hash;
use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CHAIN: Hash = Hash([0x5a; 32]);

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn signer(seed: u8) -> Arc<Mutex<Signer>> {
    Arc::new(Mutex::new(Signer::from_seed([seed; 32], [seed ^ 0x77; 32])))
}

fn key_of(seed: u8) -> PeerKey {
    Signer::from_seed([seed; 32], [0; 32]).key()
}

fn allow_all() -> nat::transport::Authorize {
    Arc::new(|_: &PeerKey| true)
}

async fn node_with(
    cfg: TransportConfig,
    identity: Arc<dyn LinkSigner>,
    authorize: nat::transport::Authorize,
) -> (Transport, RawDatagrams) {
    Transport::bind(cfg, identity, authorize).await.unwrap()
}

async fn node(seed: u8) -> (Transport, RawDatagrams) {
    node_with(
        TransportConfig::new(local(), CHAIN),
        signer(seed),
        allow_all(),
    )
    .await
}

/// Every test step is bounded so a hang fails fast instead of stalling CI.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(8), f)
        .await
        .expect("step took too long")
}

/// Dial b from a and accept on b; both ends' links.
async fn linked(a: &Transport, b: &Transport) -> (nat::transport::Link, nat::transport::Link) {
    let (la, lb) =
        within(async { tokio::join!(a.connect(b.local_addr(), b.key()), b.accept()) }).await;
    (la.unwrap(), lb.unwrap())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_authenticate_and_carry_frames_both_ways() {
    let (a, _) = node(1).await;
    let (b, _) = node(2).await;
    let (la, lb) = linked(&a, &b).await;
    assert_eq!(la.peer(), key_of(2));
    assert_eq!(lb.peer(), key_of(1));
    assert_eq!(la.remote_addr(), b.local_addr());
    assert_eq!(lb.remote_addr(), a.local_addr());

    let big: Bytes = (0..1 << 20)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    la.send(Bytes::from_static(b"hello b")).unwrap();
    la.send(big.clone()).unwrap();
    la.send(Bytes::new()).unwrap();
    lb.send(Bytes::from_static(b"hello a")).unwrap();
    lb.send(big.clone()).unwrap();

    assert_eq!(
        within(lb.recv()).await.unwrap(),
        Bytes::from_static(b"hello b")
    );
    assert_eq!(within(lb.recv()).await.unwrap(), big);
    assert_eq!(within(lb.recv()).await.unwrap(), Bytes::new());
    assert_eq!(
        within(la.recv()).await.unwrap(),
        Bytes::from_static(b"hello a")
    );
    assert_eq!(within(la.recv()).await.unwrap(), big);

    // The writers count a frame once QUIC took it, which may be just after
    // the other end already read it.
    eventually(|| a.stats().frames_sent == 3 && b.stats().frames_sent == 2).await;
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.links_authenticated, 1);
    assert_eq!(sb.links_authenticated, 1);
    assert_eq!(sa.auth_failures + sb.auth_failures, 0);
    assert_eq!(sa.frames_sent, 3);
    assert_eq!(sb.frames_received, 3);
    assert_eq!(sb.frames_sent, 2);
    assert_eq!(sa.frames_received, 2);
    assert!(sa.quic_datagrams > 0 && sb.quic_datagrams > 0);
    assert_eq!(sb.raw_received, 0);

    // Closing one end ends the other's receive side.
    la.close("done");
    assert_eq!(within(lb.recv()).await, None);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialler_refuses_a_node_with_another_key() {
    let (a, _) = node(1).await;
    let (b, _) = node(2).await;
    let err = within(a.connect(b.local_addr(), key_of(3)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Auth(AuthError::UnexpectedKey { got, .. }) if got == key_of(2)),
        "{err}"
    );
    assert_eq!(a.stats().auth_failures, 1);
    assert_eq!(a.stats().links_authenticated, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_keys_are_refused_both_ways() {
    let one = key_of(1);
    let not_one: nat::transport::Authorize = Arc::new(move |k: &PeerKey| *k != one);

    // The acceptor refuses the dialler.
    let (a, _) = node(1).await;
    let (b, _) = node_with(
        TransportConfig::new(local(), CHAIN),
        signer(2),
        not_one.clone(),
    )
    .await;
    let err = within(a.connect(b.local_addr(), b.key()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Refused { code } if code == close_code::UNAUTHORIZED.into_inner()),
        "{err}"
    );
    assert_eq!(b.stats().auth_failures, 1);
    assert_eq!(b.stats().links_authenticated, 0);

    // The dialler refuses the acceptor.
    let (c, _) = node_with(TransportConfig::new(local(), CHAIN), signer(3), not_one).await;
    let err = within(c.connect(a.local_addr(), a.key()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Auth(AuthError::Unauthorized(k)) if k == one),
        "{err}"
    );
    assert_eq!(c.stats().auth_failures, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_for_another_chain_is_refused() {
    let (a, _) = node_with(
        TransportConfig::new(local(), Hash([0x01; 32])),
        signer(1),
        allow_all(),
    )
    .await;
    let (b, _) = node(2).await;
    let err = within(a.connect(b.local_addr(), b.key()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Refused { code } if code == close_code::WRONG_CHAIN.into_inner()),
        "{err}"
    );
    assert_eq!(b.stats().auth_failures, 1);
}

/// Signs something other than the session's exporter value, as a relay that
/// forwards a Hello from another session would.
struct WrongExporter(Mutex<Signer>);

impl LinkSigner for WrongExporter {
    fn key(&self) -> PeerKey {
        self.0.lock().unwrap().key()
    }
    fn sign_link(&self, exporter: &[u8; 32]) -> Bytes64 {
        let mut other = *exporter;
        other[0] ^= 1;
        self.0
            .lock()
            .unwrap()
            .sign_digest(LINK_CONTEXT, &Hash(other))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_over_another_exporter_is_refused_both_ways() {
    let bad = || {
        Arc::new(WrongExporter(Mutex::new(Signer::from_seed(
            [9; 32], [1; 32],
        ))))
    };
    let (good, _) = node(1).await;
    let (liar, _) = node_with(TransportConfig::new(local(), CHAIN), bad(), allow_all()).await;

    let err = within(liar.connect(good.local_addr(), good.key()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Refused { code } if code == close_code::BAD_SIGNATURE.into_inner()),
        "{err}"
    );
    assert_eq!(good.stats().auth_failures, 1);

    let err = within(good.connect(liar.local_addr(), key_of(9)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Auth(AuthError::Signature(_))),
        "{err}"
    );
    assert_eq!(good.stats().auth_failures, 2);
    assert_eq!(good.stats().links_authenticated, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_the_link() {
    let (a, _) = node(1).await;
    let mut small = TransportConfig::new(local(), CHAIN);
    small.max_frame = 1024;
    let (b, _) = node_with(small, signer(2), allow_all()).await;
    let (la, lb) = linked(&a, &b).await;

    la.send(Bytes::from(vec![7u8; 1024])).unwrap();
    assert_eq!(within(lb.recv()).await.unwrap().len(), 1024);
    la.send(Bytes::from(vec![7u8; 1025])).unwrap();
    assert_eq!(within(lb.recv()).await, None);
    let reason = within(la.closed()).await;
    assert!(
        matches!(TransportError::from(reason.clone()), TransportError::Refused { code } if code == close_code::FRAME_TOO_LARGE.into_inner()),
        "{reason}"
    );
    assert_eq!(b.stats().frames_too_large, 1);
    // Our own limit is enforced before queueing.
    assert!(lb.send(Bytes::from(vec![0u8; 1025])).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_drops_and_counts_the_excess() {
    let (a, _) = node(1).await;
    let mut slow = TransportConfig::new(local(), CHAIN);
    slow.max_msgs_per_sec = 10;
    let (b, _) = node_with(slow, signer(2), allow_all()).await;
    let (la, lb) = linked(&a, &b).await;

    for i in 0..100u32 {
        la.send_wait(Bytes::copy_from_slice(&i.to_be_bytes()))
            .await
            .unwrap();
    }
    eventually(|| {
        let s = b.stats();
        s.frames_received + s.frames_dropped_rate == 100
    })
    .await;
    let s = b.stats();
    // A burst of one second's allowance, plus what refilled meanwhile.
    assert!(s.frames_received >= 10 && s.frames_received < 40, "{s:?}");
    assert!(s.frames_dropped_rate > 60, "{s:?}");
    // The link survives the excess.
    let mut got = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), lb.recv()).await {
        got += 1;
    }
    assert_eq!(got as u64, s.frames_received);
    assert!(lb.close_reason().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_datagrams_reach_the_raw_queue_not_quic() {
    let (a, _) = node(1).await;
    let (b, mut raw_b) = node(2).await;

    a.send_raw(b.local_addr(), &[0x01, 2, 3]).unwrap();
    let d = within(raw_b.recv()).await.unwrap();
    assert_eq!(d.from, a.local_addr());
    assert_eq!(d.socket, SocketId::MAIN);
    assert_eq!(&d.bytes[..], &[0x01, 2, 3]);

    let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
    plain.send_to(&[0x3f, 9, 9, 9], b.local_addr()).unwrap();
    let d = within(raw_b.recv()).await.unwrap();
    assert_eq!(d.from, plain.local_addr().unwrap());
    assert_eq!(&d.bytes[..], &[0x3f, 9, 9, 9]);

    let s = b.stats();
    assert_eq!(s.raw_received, 2);
    assert_eq!(s.quic_datagrams, 0);
    assert_eq!(a.stats().raw_sent, 1);

    // What the receiver would take for QUIC, or oversized, is never sent raw.
    assert!(a.send_raw(b.local_addr(), &[0x40, 0]).is_err());
    assert!(a.send_raw(b.local_addr(), &[]).is_err());
    assert!(a
        .send_raw(b.local_addr(), &vec![0u8; MAX_RAW_LEN + 1])
        .is_err());
    assert_eq!(a.stats().raw_sent, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_flood_leaves_links_working_and_raw_queue_bounded() {
    let (a, _) = node(1).await;
    let (b, raw_b) = node(2).await;
    let (la, lb) = linked(&a, &b).await;
    la.send(Bytes::from_static(b"before")).unwrap();
    assert_eq!(&within(lb.recv()).await.unwrap()[..], b"before");

    const FLOOD: usize = 100_000;
    let target = b.local_addr();
    let sent_raw = tokio::task::spawn_blocking(move || {
        let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
        // xorshift: random enough for junk, no dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut buf = [0u8; 1300];
        let mut raw = 0;
        for _ in 0..FLOOD {
            let len = 1 + (next() % 1300) as usize;
            for chunk in buf[..len].chunks_mut(8) {
                let r = next().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
            if buf[0] <= 0x3f {
                raw += 1;
            }
            // A full kernel buffer only means this datagram is lost.
            let _ = junk.send_to(&buf[..len], target);
        }
        raw
    });
    let sent_raw = within(sent_raw).await.unwrap();
    assert!(sent_raw > FLOOD / 10);

    // Frames still flow both ways after the flood.
    la.send(Bytes::from_static(b"after a")).unwrap();
    lb.send(Bytes::from_static(b"after b")).unwrap();
    assert_eq!(&within(lb.recv()).await.unwrap()[..], b"after a");
    assert_eq!(&within(la.recv()).await.unwrap()[..], b"after b");
    assert!(la.close_reason().is_none() && lb.close_reason().is_none());

    let s = b.stats();
    assert!(raw_b.len() <= 1024, "queue stays bounded");
    assert_eq!(s.raw_received, raw_b.len() as u64);
    assert!(s.raw_dropped_queue_full > 0, "{s:?}");
    assert!(
        s.raw_received + s.raw_dropped_queue_full + s.raw_dropped_invalid <= sent_raw as u64,
        "{s:?}"
    );
    assert!(s.quic_datagrams > 0);
}
