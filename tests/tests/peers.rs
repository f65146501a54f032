//! Real `peer` processes on 127.0.0.1: they agree on the committed sequence
//! and roots, and a peer killed with `kill -9` under way restarts and
//! rejoins with no lost or divergent height.

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
    net.start_all();
    let all = [0, 1, 2, 3];
    assert!(
        net.wait_height(&all, 10, Duration::from_secs(60)),
        "no progress; peer 0 log:\n{}",
        net.log_tail(0)
    );
    same_roots(&net, &all, 10);

    // kill -9 peer 3; the other three (3/4 of the stake) keep committing.
    net.kill(3);
    let h = net.height(0);
    assert!(
        net.wait_height(&[0, 1, 2], h + 10, Duration::from_secs(60)),
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
    same_roots(&net, &all, target);
    same_roots(&net, &all, h);
}
