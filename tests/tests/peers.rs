//! Real `peer` processes on 127.0.0.1: they agree on the committed sequence
//! and roots; a peer killed with `kill -9` while wallets keep transacting
//! restarts and rejoins with no lost or divergent height; seven peers keep
//! going with two stopped; junk floods and partitions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use system_tests::LocalNet;

fn same_roots(net: &LocalNet, peers: &[usize], height: u64) {
    let first = net
        .roots_at(peers[0], height)
        .unwrap_or_else(|| panic!("peer {} has no height {height}", peers[0]));
    for &i in &peers[1..] {
        let r = net
            .roots_at(i, height)
            .unwrap_or_else(|| panic!("peer {i} has no height {height}"));
        assert_eq!(
            r, first,
            "peers {} and {i} differ at height {height}",
            peers[0]
        );
    }
}

#[test]
fn four_peers_agree_and_a_killed_peer_rejoins() {
    let mut net = LocalNet::prepare(4);
    // Peer 3 keeps its ledger state on disk from the start (the others
    // hold their small states in memory): both must reach the same roots,
    // before and after its kill -9.
    net.configure(3, "state_cache_mb = 0");
    net.start_all();
    let all = [0, 1, 2, 3];
    assert!(
        net.wait_height(&all, 10, Duration::from_secs(60)),
        "no progress; peer 0 log:\n{}",
        net.log_tail(0)
    );
    same_roots(&net, &all, 10);
    // Load: the test wallets keep moving their money through peer 0.
    let stop = Arc::new(AtomicBool::new(false));
    let load = system_tests::self_transfers(&net, 0, stop.clone());
    std::thread::sleep(Duration::from_secs(2));

    // kill -9 peer 3; the other three (3/4 of the stake) keep committing,
    // far past the rounds they keep in memory (50), so peer 3 must catch up
    // from their event logs.
    net.kill(3);
    let h = net.height(0);
    assert!(
        net.wait_height(&[0, 1, 2], h + 1000, Duration::from_secs(90)),
        "three peers stalled; peer 0 log:\n{}",
        net.log_tail(0)
    );
    // Restart it: it replays its store and catches up.
    net.start(3);
    let target = net.height(0) + 5;
    assert!(
        net.wait_height(&all, target, Duration::from_secs(90)),
        "the restarted peer did not catch up; its log:\n{}",
        net.log_tail(3)
    );
    stop.store(true, Ordering::Relaxed);
    let applied = load.join().expect("load thread");
    assert!(applied > 20, "the load applied only {applied} transfers");
    let target = net.height(0) + 3;
    assert!(net.wait_height(&all, target, Duration::from_secs(60)));
    same_roots(&net, &all, target);
    same_roots(&net, &all, h);
    let s = net.status(3).unwrap();
    assert!(
        s["txs_applied"].as_u64().unwrap() >= applied as u64,
        "the restarted peer re-applied the transfers: {s}"
    );
    assert_eq!(s["state_on_disk"], true, "{s}");
    assert_eq!(net.status(0).unwrap()["state_on_disk"], false);
    // Its links come back (dead ones time out in 5 s) and checkpoints get
    // certified again (votes once per sequenced round).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = net.status(3).unwrap();
        let certified = s["last_certified_height"].as_u64().unwrap_or(0);
        if s["peers_connected"] == 3 && certified + 50 >= s["height"].as_u64().unwrap() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "links or certification did not recover: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_peer_started_late_catches_up_from_a_certified_snapshot() {
    let mut net = LocalNet::prepare(4);
    // Snapshots every 100 heights and a short event log: the others prune
    // their logs long before peer 3 starts, so it cannot replay the chain.
    for i in 0..4 {
        net.configure(i, "snapshot_interval = 100\nevent_log_rounds = 100\n");
    }
    for i in 0..3 {
        net.start(i);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = system_tests::self_transfers(&net, 0, stop.clone());
    assert!(
        net.wait_height(&[0, 1, 2], 600, Duration::from_secs(90)),
        "three peers stalled; peer 0 log:\n{}",
        net.log_tail(0)
    );
    // Their logs no longer reach back to round 0.
    let pruned = |net: &LocalNet| {
        net.status(0)
            .and_then(|s| s["event_log_from_round"].as_u64())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pruned(&net) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "peer 0 never pruned its event log: {:?}",
            net.status(0)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    net.start(3);
    let target = net.height(0) + 20;
    assert!(
        net.wait_height(&[0, 1, 2, 3], target, Duration::from_secs(90)),
        "the late peer did not catch up; its log:\n{}",
        net.log_tail(3)
    );
    stop.store(true, Ordering::Relaxed);
    let applied = load.join().expect("load thread");
    assert!(applied > 20, "the load applied only {applied} transfers");
    let log = std::fs::read_to_string(net.dirs[3].join("peer.log")).unwrap();
    assert!(
        log.contains("snapshot verified against the certified roots"),
        "peer 3 did not install a snapshot:\n{}",
        net.log_tail(3)
    );
    // It holds no early heights (it never replayed them) yet agrees on the
    // ones after its snapshot.
    assert!(net.roots_at(3, 5).is_none());
    let after = net.height(3) + 5;
    assert!(
        net.wait_height(&[0, 1, 2, 3], after, Duration::from_secs(60)),
        "no progress after the catch-up; peer 0 log:\n{}\npeer 3 log:\n{}",
        net.log_tail(0),
        net.log_tail(3)
    );
    same_roots(&net, &[0, 1, 2, 3], after);
    // kill -9 and restart: it resumes from its own stored snapshot.
    net.kill(3);
    net.start(3);
    let target = net.height(0) + 10;
    assert!(
        net.wait_height(&[0, 1, 2, 3], target, Duration::from_secs(60)),
        "the restarted late peer did not go on; its log:\n{}",
        net.log_tail(3)
    );
    same_roots(&net, &[0, 1, 2, 3], target);

    // A peer with a history of its own, down until the others' logs no
    // longer reach back to it, catches up the same way on restart (and
    // keeps its own last round: it never signs a round twice).
    net.kill(2);
    let h = net.height(0);
    assert!(
        net.wait_height(&[0, 1, 3], h + 600, Duration::from_secs(90)),
        "three peers stalled; peer 0 log:\n{}",
        net.log_tail(0)
    );
    net.start(2);
    let after = net.height(0) + 10;
    assert!(
        net.wait_height(&[0, 1, 2, 3], after, Duration::from_secs(90)),
        "the peer far behind did not catch up; its log:\n{}",
        net.log_tail(2)
    );
    let log = std::fs::read_to_string(net.dirs[2].join("peer.log")).unwrap();
    assert!(
        log.contains("snapshot verified against the certified roots"),
        "peer 2 did not install a snapshot:\n{}",
        net.log_tail(2)
    );
    // Its old heights are still there, and it agrees on the new ones.
    assert!(net.roots_at(2, 5).is_some());
    same_roots(&net, &[0, 1, 2, 3], after);
    for i in [0, 2] {
        let s = net.status(i).unwrap();
        assert_eq!(s["equivocations"], 0, "peer {i}: {s}");
    }
}

#[test]
fn seven_peers_keep_committing_with_two_stopped() {
    let mut net = LocalNet::prepare(7);
    // Peers 5 and 6 hold 2/8 of the stake (the 8 test wallets are hosted
    // round-robin, so peer 0 holds two): the other five hold 3/4 > 2/3.
    for i in 0..5 {
        net.start(i);
    }
    let live = [0, 1, 2, 3, 4];
    assert!(
        net.wait_height(&live, 15, Duration::from_secs(90)),
        "five of seven did not commit; peer 0 log:\n{}",
        net.log_tail(0)
    );
    same_roots(&net, &live, 15);
    // The stopped two start late and catch up from the others' events.
    net.start(5);
    net.start(6);
    let target = net.height(0) + 5;
    assert!(
        net.wait_height(&[0, 1, 2, 3, 4, 5, 6], target, Duration::from_secs(90)),
        "the late peers did not catch up; peer 6 log:\n{}",
        net.log_tail(6)
    );
    same_roots(&net, &[0, 1, 2, 3, 4, 5, 6], target);
}

#[test]
fn a_junk_flood_does_not_stop_commits_or_grow_memory() {
    let mut net = LocalNet::prepare(4);
    net.start_all();
    assert!(
        net.wait_height(&[0, 1, 2, 3], 5, Duration::from_secs(60)),
        "no progress; peer 0 log:\n{}",
        net.log_tail(0)
    );
    let target: std::net::SocketAddr = net.status(0).unwrap()["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let pid = net.children[0].as_ref().unwrap().id();
    let rss_before = system_tests::rss_kb(pid);
    let h_before = net.height(0);
    // 200,000 datagrams of junk from loopback: QUIC-looking (first byte
    // with the fixed bit set) and raw (first byte below 0x40), random sizes.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = [0u8; 1400];
    for i in 0..200_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % 1400) as usize;
        for (j, b) in buf[..len].iter_mut().enumerate() {
            *b = (x >> ((j % 8) * 8)) as u8 ^ j as u8;
        }
        buf[0] = if i % 2 == 0 { 0xc3 } else { 0x11 };
        let _ = sock.send_to(&buf[..len], target);
    }
    assert!(
        net.wait_height(&[0, 1, 2, 3], h_before + 10, Duration::from_secs(60)),
        "commits stopped under the flood; peer 0 log:\n{}",
        net.log_tail(0)
    );
    let rss_after = system_tests::rss_kb(pid);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "peer 0 grew from {rss_before} kB to {rss_after} kB under the flood"
    );
    let s = net.status(0).unwrap();
    assert!(
        s["dropped_datagrams"].as_u64().unwrap() > 0
            || s["drops"]["raw_invalid"].as_u64().unwrap_or(0) > 0,
        "the junk is counted: {s}"
    );
    // After the flood the peer still echoes a wallet's address: the reply
    // names the socket the request came from, and is no larger than it.
    let wallet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    wallet
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut reply = [0u8; 64];
    let mut echoed = None;
    for _ in 0..10 {
        wallet
            .send_to(&nat::echo::request([7; 16]), target)
            .unwrap();
        if let Ok((n, from)) = wallet.recv_from(&mut reply) {
            assert_eq!(from, target);
            assert!(n <= nat::echo::REQUEST_LEN);
            echoed = nat::echo::parse_reply(&reply[..n]);
            break;
        }
    }
    assert_eq!(echoed, Some(([7; 16], wallet.local_addr().unwrap())));
}

#[test]
fn a_partition_stops_commits_and_healing_resumes_them() {
    let ns = match system_tests::Netns::create("part") {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let mut net = LocalNet::prepare(4);
    net.netns = Some(ns);
    net.start_all();
    let all = [0, 1, 2, 3];
    assert!(
        net.wait_height(&all, 5, Duration::from_secs(60)),
        "no progress; peer 0 log:\n{}",
        net.log_tail(0)
    );
    // Cut {0,1} from {2,3} (equal stake: neither side has a quorum).
    let port = |i: u16| (net.base_port + i).to_string();
    let rules: Vec<Vec<String>> = [(0, 2), (0, 3), (1, 2), (1, 3)]
        .iter()
        .flat_map(|&(a, b)| {
            [(a, b), (b, a)].map(|(x, y)| {
                [
                    "-p",
                    "udp",
                    "--sport",
                    &port(x),
                    "--dport",
                    &port(y),
                    "-j",
                    "DROP",
                ]
                .map(String::from)
                .to_vec()
            })
        })
        .collect();
    let ns = net.netns.as_ref().unwrap();
    for r in &rules {
        let mut args = vec!["-I", "INPUT"];
        args.extend(r.iter().map(String::as_str));
        ns.iptables(&args);
    }
    std::thread::sleep(Duration::from_secs(2));
    let stalled = net.height(0);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        net.height(0) <= stalled + 1,
        "a side without a quorum kept committing ({stalled} → {})",
        net.height(0)
    );
    // Heal.
    for r in &rules {
        let mut args = vec!["-D", "INPUT"];
        args.extend(r.iter().map(String::as_str));
        net.netns.as_ref().unwrap().iptables(&args);
    }
    let target = stalled + 10;
    assert!(
        net.wait_height(&all, target, Duration::from_secs(60)),
        "commits did not resume after healing; peer 0 log:\n{}",
        net.log_tail(0)
    );
    same_roots(&net, &all, target);
}

#[test]
fn the_whole_network_killed_and_restarted_goes_on() {
    let mut net = LocalNet::prepare(4);
    net.start_all();
    let all = [0, 1, 2, 3];
    assert!(
        net.wait_height(&all, 300, Duration::from_secs(60)),
        "no progress; peer 0 log:\n{}",
        net.log_tail(0)
    );
    // kill -9 everyone at once, then start them again: each replays its own
    // event log, re-derives its heights, and none may sign a round twice,
    // so they can only go on if their logs are complete.
    for i in all {
        net.kill(i);
    }
    net.start_all();
    assert!(
        net.wait_height(&all, 300, Duration::from_secs(60)),
        "replay did not restore the heights; peer 0 log:\n{}",
        net.log_tail(0)
    );
    let h = net.height(0);
    assert!(
        net.wait_height(&all, h + 50, Duration::from_secs(60)),
        "the restarted network did not go on; peer 0 log:\n{}",
        net.log_tail(0)
    );
    same_roots(&net, &all, 300);
    same_roots(&net, &all, h + 50);
}
