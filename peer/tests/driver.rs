//! Four drivers in one process, messages passed by hand: they commit the
//! same heights with the same roots, a submitted transfer reaches every
//! ledger, checkpoints get certified, and a restarted driver does not sign
//! a round it signed before.

use dag::identity::{PeerKey, Signer};
use dag::ledger::checkpoint::Statement;
use dag::ledger::genesis::{Genesis, GenesisOutput, GenesisPeer, NativeAsset};
use dag::ledger::multisig::sign_local;
use dag::ledger::output::{output_id, Output, Value};
use dag::ledger::state::Params;
use dag::ledger::transaction::{Transaction, TxBody};
use dag::ledger::AssetId;
use dag::wire::PeerMessage;
use dag::OwnProgress;
use peer::driver::{Driver, Effect, HeightRecord};
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
        Box::new(move |cp| cp.sign(&mut cp_signer)),
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
                    Effect::Finalized(..) => {}
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
    let mut net = Net {
        drivers: (0..4)
            .map(|i| driver(&g, i, OwnProgress::default()))
            .collect(),
        now: 0,
        records: vec![Vec::new(); 4],
        persisted: vec![BTreeMap::new(); 4],
        stored: vec![Vec::new(); 4],
    };
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
        let spent = d.ledger().output(&output_id(&chain, 0)).unwrap();
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
