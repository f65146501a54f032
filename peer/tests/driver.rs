//! Four drivers in one process, messages passed by hand: they commit the
//! same heights with the same roots, a submitted transfer reaches every
//! ledger, checkpoints get certified, and a restarted driver does not sign
//! a round it signed before.

use dag::identity::{PeerKey, Signer};
use dag::ledger::checkpoint::{Certified, Checkpoint, Handover, Statement};
use dag::ledger::genesis::{Genesis, GenesisOutput, GenesisPeer, NativeAsset};
use dag::ledger::multisig::sign_local;
use dag::ledger::output::{output_id, Output, Value};
use dag::ledger::state::Params;
use dag::ledger::transaction::{Transaction, TxBody};
use dag::ledger::AssetId;
use dag::wire::PeerMessage;
use dag::OwnProgress;
use peer::driver::{Driver, Effect, HeightRecord, PeerSnapshot};
use schnorrkel::{ExpansionMode, Keypair, MiniSecretKey};
use std::collections::BTreeMap;

fn wallet(i: u8) -> Keypair {
    MiniSecretKey::from_bytes(&[100 + i; 32])
        .unwrap()
        .expand_to_keypair(ExpansionMode::Ed25519)
}

fn genesis(n: u8) -> Genesis {
    Genesis {
        chain_name: "drivers".into(),
        time_ms: 1,
        native: NativeAsset {
            name: "SHARE".into(),
            precision: 0,
        },
        params: Params::default(),
        peers: (0..n)
            .map(|i| GenesisPeer {
                name: format!("p{i}"),
                key: Signer::from_seed([i + 1; 32], [0; 32]).key(),
                addr: format!("127.0.0.1:{}", 7000 + i as u16).parse().unwrap(),
            })
            .collect(),
        outputs: (0..n)
            .map(|i| GenesisOutput {
                owner: PeerKey(wallet(i).public.to_bytes()),
                amount: 1000,
                host: format!("p{i}"),
            })
            .collect(),
    }
}

fn driver(g: &Genesis, i: u8, own: OwnProgress) -> Driver {
    let mut cp_signer = Signer::from_seed([i + 1; 32], [7; 32]);
    Driver::new(
        g,
        Box::new(Signer::from_seed([i + 1; 32], [i; 32])),
        Box::new(move |ctx, digest| cp_signer.sign_digest(ctx, digest)),
        own,
        [i; 32],
        0,
    )
    .unwrap()
}

struct Net {
    drivers: Vec<Driver>,
    now: u64,
    /// Heights each driver committed.
    records: Vec<Vec<HeightRecord>>,
    /// Own events each driver persisted, by round.
    persisted: Vec<BTreeMap<u64, dag::EventId>>,
    /// Every event each driver persisted or received (its event store).
    stored: Vec<Vec<dag::Event>>,
    /// Snapshots each driver took (height, bytes) and the certificates of
    /// their heights.
    snapshots: Vec<Vec<(u64, Vec<u8>)>>,
    certified: Vec<Vec<Certified<Checkpoint>>>,
    handovers: Vec<Vec<Certified<Handover>>>,
    diverged: Vec<Vec<Certified<Checkpoint>>>,
}

impl Net {
    fn new(drivers: Vec<Driver>) -> Net {
        let n = drivers.len();
        Net {
            drivers,
            now: 0,
            records: vec![Vec::new(); n],
            persisted: vec![BTreeMap::new(); n],
            stored: vec![Vec::new(); n],
            snapshots: vec![Vec::new(); n],
            certified: vec![Vec::new(); n],
            handovers: vec![Vec::new(); n],
            diverged: vec![Vec::new(); n],
        }
    }
}

impl Net {
    fn step(&mut self) {
        self.now += 10;
        let keys: Vec<PeerKey> = self.drivers.iter().map(|d| d.key()).collect();
        let mut mail: Vec<(usize, PeerKey, PeerMessage)> = Vec::new();
        for (i, d) in self.drivers.iter_mut().enumerate() {
            if d.poll_timeout().is_some_and(|t| t <= self.now) {
                d.handle_timeout(self.now);
            }
            while let Some(e) = d.poll_effect() {
                match e {
                    Effect::PersistOwnThenBroadcast { round, event } => {
                        self.stored[i].push((*event).clone());
                        let prev = self.persisted[i].insert(round, event.id());
                        assert!(prev.is_none(), "driver {i} signed round {round} twice");
                        for (j, _) in keys.iter().enumerate().filter(|(j, _)| *j != i) {
                            mail.push((j, keys[i], PeerMessage::Events(vec![(*event).clone()])));
                        }
                    }
                    Effect::Send { to, msg } => {
                        let j = keys.iter().position(|k| *k == to).unwrap();
                        mail.push((j, keys[i], msg));
                    }
                    Effect::Broadcast(msg) => {
                        for j in (0..keys.len()).filter(|j| *j != i) {
                            mail.push((j, keys[i], msg.clone()));
                        }
                    }
                    Effect::Committed(r) => self.records[i].push(*r),
                    Effect::Finalized { .. } => {}
                    Effect::Snapshot { height, .. } => {
                        // Asked for now, before the next input.
                        self.snapshots[i].push((height, d.encode_snapshot().unwrap()))
                    }
                    Effect::SnapshotCertified(c) => self.certified[i].push(*c),
                    Effect::HandoverCertified(h) => self.handovers[i].push(*h),
                    Effect::Diverged { certified, .. } => self.diverged[i].push(*certified),
                }
            }
        }
        for (j, from, msg) in mail {
            // Every message crosses the wire encoding.
            let msg = PeerMessage::decode(&msg.encode()).unwrap();
            if let PeerMessage::Events(evs) = &msg {
                self.stored[j].extend(evs.iter().cloned());
            }
            self.drivers[j].handle_message(from, msg, self.now);
        }
    }
}

#[test]
fn four_drivers_agree_apply_a_transfer_and_certify() {
    let g = genesis(4);
    let chain = g.chain_id();
    let mut net = Net::new(
        (0..4)
            .map(|i| driver(&g, i, OwnProgress::default()))
            .collect(),
    );
    for _ in 0..50 {
        net.step();
    }
    // A transfer from wallet 0 to wallet 1, submitted to driver 2 only.
    let (a, b) = (wallet(0), wallet(1));
    let mut body = TxBody {
        chain,
        inputs: vec![output_id(&chain, 0)],
        outputs: vec![Output {
            owner: PeerKey(b.public.to_bytes()),
            asset: AssetId::NATIVE,
            value: Value::Amount(1000),
            host: Some(g.peers[3].key),
        }],
        actions: vec![],
        fee: 0,
        memo: None,
        signers: vec![],
        aggregate: PeerKey([0; 32]),
    };
    body.set_signers([PeerKey(a.public.to_bytes())]).unwrap();
    let (_, _, signature) = sign_local(&[&a], &body.id()).unwrap();
    let tx = Transaction { body, signature };
    assert_eq!(net.drivers[2].submit(tx.clone(), true), Ok(true));
    assert_eq!(
        net.drivers[2].submit(tx.clone(), true),
        Ok(false),
        "a repeat"
    );
    let mut bad = tx.clone();
    bad.signature.0[3] ^= 1;
    assert!(net.drivers[1].submit(bad, true).is_err());
    for _ in 0..150 {
        net.step();
    }
    let heights: Vec<usize> = net.records.iter().map(|r| r.len()).collect();
    assert!(heights.iter().all(|h| *h >= 10), "heights {heights:?}");
    let common = *heights.iter().min().unwrap();
    for r in &net.records[1..] {
        assert_eq!(
            r[..common],
            net.records[0][..common],
            "same heights and roots"
        );
    }
    for d in &net.drivers {
        let spent = d.ledger().output(&output_id(&chain, 0)).unwrap().unwrap();
        assert_eq!(
            spent.spent.map(|s| s.tx),
            Some(tx.id()),
            "applied everywhere"
        );
        assert!(d.stats().checkpoints_certified > 0);
        let cert = d.last_certified().unwrap();
        // Rounds this early are governed by the genesis committee.
        cert.verify(&chain, &g.committee().unwrap()).unwrap();
    }

    // Restart driver 3 from its own progress and its event store, as the
    // daemon does after a crash: it must not sign again any round it
    // signed, it re-derives the same heights, and it goes on with the others.
    let last = *net.persisted[3].keys().next_back().unwrap();
    let own = OwnProgress {
        last_proposed: Some(last),
        own_last: None,
    };
    net.drivers[3] = driver(&g, 3, own);
    net.records[3].clear();
    let mut log = std::mem::take(&mut net.stored[3]);
    log.sort_by_key(|e| e.body.round);
    net.drivers[3].replay(log);
    for _ in 0..200 {
        net.step();
    }
    assert!(
        net.persisted[3].keys().next_back().unwrap() > &last,
        "the restarted driver proposes again, above its old rounds"
    );
    let n = net.records[3].len().min(net.records[0].len());
    assert!(n > 10, "the restarted driver re-derived the heights");
    assert_eq!(net.records[3][..n], net.records[0][..n]);
}

#[test]
fn a_driver_started_from_a_certified_snapshot_goes_on_with_the_others() {
    let g = genesis(4);
    let mut net = Net::new(
        (0..4)
            .map(|i| {
                let mut d = driver(&g, i, OwnProgress::default());
                d.set_snapshot_interval(15);
                d
            })
            .collect(),
    );
    for _ in 0..300 {
        net.step();
        if !net.certified[0].is_empty() {
            break;
        }
    }
    let cert = net.certified[0]
        .first()
        .cloned()
        .expect("a snapshot got certified");
    let cp = cert.statement.clone();
    assert!(cp.height >= 15);
    cert.verify(&g.chain_id(), &g.committee().unwrap()).unwrap();
    let (_, bytes) = net.snapshots[0]
        .iter()
        .find(|(h, _)| *h == cp.height)
        .cloned()
        .expect("the certified snapshot");
    // Every driver took the same snapshot of that height, byte for byte
    // except what only the driver knows (none: the core state is shared).
    for i in 1..4 {
        let theirs = net.snapshots[i].iter().find(|(h, _)| *h == cp.height);
        if let Some((_, b)) = theirs {
            let a: PeerSnapshot = proofs::decode(&bytes, usize::MAX).unwrap();
            let b: PeerSnapshot = proofs::decode(b, usize::MAX).unwrap();
            assert_eq!(a.ledger, b.ledger, "ledger snapshot of driver {i}");
        }
    }
    // A snapshot written piece by piece is the encoding of the exported one.
    let d0 = &net.drivers[0];
    assert_eq!(
        d0.encode_snapshot().unwrap(),
        proofs::encode(&d0.export_snapshot().unwrap())
    );
    // Wrong certified roots are refused.
    let snap: PeerSnapshot = proofs::decode(&bytes, usize::MAX).unwrap();
    let mut wrong = cp.clone();
    wrong.roots.outputs.0[0] ^= 1;
    let mut signer = Signer::from_seed([4; 32], [9; 32]);
    assert!(Driver::from_snapshot(
        &g,
        snap.clone(),
        Some(&wrong),
        Box::new(Signer::from_seed([4; 32], [3; 32])),
        Box::new(move |ctx, digest| signer.sign_digest(ctx, digest)),
        OwnProgress::default(),
        [3; 32],
        net.now,
    )
    .is_err());
    // Driver 3 is replaced by one started from driver 0's snapshot (keeping
    // its own last round, as the daemon does): it goes on with the others.
    let last = net.persisted[3].keys().next_back().copied();
    let mut signer = Signer::from_seed([4; 32], [9; 32]);
    net.drivers[3] = Driver::from_snapshot(
        &g,
        snap,
        Some(&cp),
        Box::new(Signer::from_seed([4; 32], [3; 32])),
        Box::new(move |ctx, digest| signer.sign_digest(ctx, digest)),
        OwnProgress {
            last_proposed: last,
            own_last: None,
        },
        [3; 32],
        net.now,
    )
    .expect("a certified snapshot restores");
    assert_eq!(net.drivers[3].ledger().height(), cp.height);
    net.records[3].clear();
    for _ in 0..200 {
        net.step();
    }
    let mine = &net.records[3];
    assert!(
        mine.len() > 10,
        "the restored driver commits: {}",
        mine.len()
    );
    assert_eq!(
        mine[0].height,
        cp.height + 1,
        "it goes on right after the snapshot"
    );
    for r in mine {
        let theirs = net.records[0].iter().find(|x| x.height == r.height);
        if let Some(t) = theirs {
            assert_eq!(t, r, "height {}", r.height);
        }
    }
}

#[test]
fn drivers_certify_the_committee_handover_at_the_first_snapshot() {
    let g = genesis(4);
    let chain = g.chain_id();
    let mut net = Net::new(
        (0..4)
            .map(|i| driver(&g, i, OwnProgress::default()))
            .collect(),
    );
    // Snapshot 4096's table is known once every leader up to round 4096 is
    // sequenced; the committee governing round 4096 (genesis) certifies it.
    let mut steps = 0;
    while net.handovers.iter().any(|h| h.is_empty()) {
        net.step();
        steps += 1;
        assert!(
            steps < 20_000,
            "no hand-over by round {}",
            net.drivers[0].core().next_round()
        );
    }
    let mut walk = dag::ledger::checkpoint::CommitteeChain::new(chain, g.committee().unwrap());
    let h = &net.handovers[0][0];
    assert_eq!(h.statement.snapshot, dag::committee::SNAPSHOT_INTERVAL);
    walk.extend(h)
        .expect("a hand-over certified by the genesis committee");
    assert_eq!(
        walk.committee_at(dag::committee::SNAPSHOT_INTERVAL)
            .unwrap()
            .members(),
        g.committee().unwrap().members(),
        "nobody moved stake: the same committee"
    );
    for other in &net.handovers[1..] {
        assert_eq!(other[0].statement, h.statement);
    }
    // A hand-over with a forged signature does not extend the walk.
    let mut forged = h.clone();
    forged.signatures[0].1 .0[5] ^= 1;
    let mut walk = dag::ledger::checkpoint::CommitteeChain::new(chain, g.committee().unwrap());
    assert!(walk.extend(&forged).is_err());
}

#[test]
fn a_quorum_signing_other_roots_is_reported_as_divergence() {
    let g = genesis(4);
    let mut net = Net::new(
        (0..4)
            .map(|i| driver(&g, i, OwnProgress::default()))
            .collect(),
    );
    for _ in 0..60 {
        net.step();
    }
    let ours = net.drivers[0]
        .last_voted()
        .cloned()
        .expect("driver 0 voted");
    let mut other = ours.clone();
    other.roots.outputs.0[0] ^= 1;
    let keys: Vec<PeerKey> = net.drivers.iter().map(|d| d.key()).collect();
    let vote = |i: u8, cp: &Checkpoint| {
        let mut s = Signer::from_seed([i + 1; 32], [5; 32]);
        PeerMessage::CheckpointVote {
            checkpoint: Box::new(cp.clone()),
            signature: s.sign_digest(Checkpoint::CONTEXT, &cp.digest()),
        }
    };
    let now = net.now;
    // One member, then two, sign other roots: not yet a quorum (3 of 4).
    net.drivers[0].handle_message(keys[1], vote(1, &other), now);
    net.drivers[0].handle_message(keys[2], vote(2, &other), now);
    // A forged vote (wrong signer) counts for nothing.
    net.drivers[0].handle_message(keys[3], vote(1, &other), now);
    let drained: Vec<Effect> = std::iter::from_fn(|| net.drivers[0].poll_effect()).collect();
    assert!(
        !drained.iter().any(|e| matches!(e, Effect::Diverged { .. })),
        "two of four members are not a quorum"
    );
    net.drivers[0].handle_message(keys[3], vote(3, &other), now);
    let diverged: Vec<Effect> = std::iter::from_fn(|| net.drivers[0].poll_effect())
        .filter(|e| matches!(e, Effect::Diverged { .. }))
        .collect();
    match diverged.as_slice() {
        [Effect::Diverged { ours: o, certified }] => {
            assert_eq!(**o, ours);
            assert_eq!(certified.statement, other);
            certified
                .verify(&g.chain_id(), &g.committee().unwrap())
                .expect("the evidence is a valid certificate");
        }
        other => panic!("expected one divergence, got {other:?}"),
    }
    assert!(net.drivers[0].stats().conflicting_votes >= 4);
}
