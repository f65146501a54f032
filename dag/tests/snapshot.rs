//! State snapshots: a ledger exported at height k, encoded, decoded and
//! restored goes on exactly like the original (same outcomes, same roots
//! after every later height), and a snapshot that is tampered with, out of
//! canonical order, or not the certified one is refused with the error
//! that names the problem, never a panic.

#[path = "ledger/world.rs"]
mod world;

use dag::identity::PeerKey;
use dag::ledger::apply::{HeightOutcome, Outcome, Rejection};
use dag::ledger::asset::{AssetClass, AssetDef};
use dag::ledger::checkpoint::Checkpoint;
use dag::ledger::output::{output_id, Output, OutputState, Spend, Value};
use dag::ledger::snapshot::{Inconsistency, LedgerSnapshot, SnapshotError, SNAPSHOT_FORMAT};
use dag::ledger::state::{ItemState, Ledger};
use dag::ledger::transaction::{Action, Transaction};
use dag::ledger::LedgerStores;
use dag::ledger::{encode_payload_item, AssetId};
use proofs::key_index::Entry;
use proofs::key_index::{IndexKey, IndexValue};
use proofs::smt::{StoreKey, StoreValue, VersionedTree};
use proofs::MemStore;
use proofs::{CodecError, Hash, SmtError};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use schnorrkel::Keypair;
use std::collections::HashMap;
use std::sync::Arc;
use world::*;

const PEERS: usize = 3;
const WALLETS: u64 = 8;

/// Generous: the test snapshots are tens of kilobytes.
const MAX_SNAPSHOT: usize = 16 << 20;

/// Drives a world through random heights: transfers (some with a fee),
/// conflicting spends, issues, mints and burns of fungible assets, issues,
/// transfers and burns of unique items, and peer registrations, moves and
/// retirements. Each height is built from the state of `w.ledger`; its
/// payloads are returned so they can be applied to a second ledger too.
struct Driver {
    w: World,
    wallets: Vec<Keypair>,
    by_key: HashMap<PeerKey, usize>,
    /// Issued assets: id → issuer wallet.
    issuers: HashMap<AssetId, usize>,
    /// Peers this driver registered: (key pair, still active).
    new_peers: Vec<(Keypair, bool)>,
    rng: ChaCha20Rng,
    next_item: u64,
}

impl Driver {
    fn new(seed: u64) -> Driver {
        let wallets: Vec<Keypair> = (0..WALLETS).map(keypair).collect();
        let by_key = wallets
            .iter()
            .enumerate()
            .map(|(i, k)| (pk(k), i))
            .collect();
        Driver {
            w: World::new(PEERS, WALLETS),
            wallets,
            by_key,
            issuers: HashMap::new(),
            new_peers: Vec::new(),
            rng: ChaCha20Rng::seed_from_u64(seed),
            next_item: 0,
        }
    }

    fn pick(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng.next_u64() % 100 < percent
    }

    fn wallet(&mut self) -> usize {
        self.pick(self.wallets.len())
    }

    fn active_hosts(&self) -> Vec<PeerKey> {
        self.w
            .ledger
            .peers()
            .filter(|p| p.is_active())
            .map(|p| p.key)
            .collect()
    }

    fn native_to(&mut self, wallet: usize, amount: u128) -> Output {
        let hosts = self.active_hosts();
        let host = hosts[self.pick(hosts.len())];
        Output {
            owner: pk(&self.wallets[wallet]),
            asset: AssetId::NATIVE,
            value: Value::Amount(amount),
            host: Some(host),
        }
    }

    fn coin_to(&self, wallet: usize, asset: AssetId, value: Value) -> Output {
        Output {
            owner: pk(&self.wallets[wallet]),
            asset,
            value,
            host: None,
        }
    }

    /// Sign with each distinct key once.
    fn sign(
        &self,
        body: dag::ledger::TxBody,
        signers: &[usize],
        extra: &[&Keypair],
    ) -> Transaction {
        let mut ks: Vec<&Keypair> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for k in signers
            .iter()
            .map(|&i| &self.wallets[i])
            .chain(extra.iter().copied())
        {
            if seen.insert(pk(k)) {
                ks.push(k);
            }
        }
        self.w.sign(body, &ks)
    }

    /// The payloads (one per event) of the next height.
    fn next_height(&mut self) -> Vec<Vec<u8>> {
        let mut unspent: Vec<(Hash, OutputState)> = self
            .w
            .ledger
            .outputs()
            .unwrap()
            .into_iter()
            .filter(|(_, st)| st.spent.is_none())
            .collect();
        let mut txs = Vec::new();
        let count = 1 + self.pick(5);
        for _ in 0..count.min(unspent.len()) {
            let i = self.pick(unspent.len());
            let (id, st) = unspent.swap_remove(i);
            txs.extend(self.spend(id, &st));
        }
        // Split the height into one or two events.
        let cut = if txs.len() > 1 && self.chance(50) {
            1 + self.pick(txs.len() - 1)
        } else {
            txs.len()
        };
        let payload =
            |t: &[Transaction]| -> Vec<u8> { t.iter().flat_map(encode_payload_item).collect() };
        let mut events = vec![payload(&txs[..cut])];
        if cut < txs.len() {
            events.push(payload(&txs[cut..]));
        }
        events
    }

    /// One or two transactions spending `id`.
    fn spend(&mut self, id: Hash, st: &OutputState) -> Vec<Transaction> {
        let owner = self.by_key[&st.output.owner];
        let asset = st.output.asset;
        let roll = self.pick(100);
        match st.output.value {
            Value::Amount(v) if asset.is_native() => {
                if roll < 10 {
                    // Issue a fungible asset and mint some of it at once.
                    let issuer = self.wallet();
                    let new = AssetId::issued(&id, 0);
                    let amount = 1 + self.rng.next_u64() as u128 % 10_000;
                    let mintable = self.chance(50);
                    self.issuers.insert(new, issuer);
                    let to = self.wallet();
                    let outputs = vec![
                        self.native_to(owner, v),
                        self.coin_to(to, new, Value::Amount(amount)),
                    ];
                    let def = AssetDef {
                        name: format!("coin{}", self.next_item),
                        class: AssetClass::Fungible { precision: 2 },
                        issuer: pk(&self.wallets[issuer]),
                        mintable,
                    };
                    self.next_item += 1;
                    let body = self.w.body(
                        vec![id],
                        outputs,
                        vec![Action::Issue(def), Action::Mint { asset: new, amount }],
                    );
                    vec![self.sign(body, &[owner, issuer], &[])]
                } else if roll < 20 {
                    // Issue a unique asset with two items.
                    let issuer = self.wallet();
                    let new = AssetId::issued(&id, 0);
                    self.issuers.insert(new, issuer);
                    let items: Vec<Hash> = (0..2)
                        .map(|_| {
                            self.next_item += 1;
                            Hash::of(
                                proofs::Domain::new("test/item"),
                                &self.next_item.to_le_bytes(),
                            )
                        })
                        .collect();
                    let mut outputs = vec![self.native_to(owner, v)];
                    let mut actions = vec![Action::Issue(AssetDef {
                        name: format!("tickets{}", self.next_item),
                        class: AssetClass::Unique,
                        issuer: pk(&self.wallets[issuer]),
                        mintable: true,
                    })];
                    for item in &items {
                        let to = self.wallet();
                        outputs.push(self.coin_to(to, new, Value::Item(*item)));
                        actions.push(Action::MintItem {
                            asset: new,
                            item: *item,
                        });
                    }
                    let body = self.w.body(vec![id], outputs, actions);
                    vec![self.sign(body, &[owner, issuer], &[])]
                } else if roll < 27 {
                    // Register a peer and host this stake with it.
                    let n = self.new_peers.len() as u64;
                    let kp = keypair(1_000 + n);
                    let key = pk(&kp);
                    let mut out = self.native_to(owner, v);
                    out.host = Some(key);
                    let body = self.w.body(
                        vec![id],
                        vec![out],
                        vec![Action::RegisterPeer {
                            name: format!("new{n}"),
                            key,
                            addr: format!("127.0.0.1:{}", 8000 + n).parse().unwrap(),
                        }],
                    );
                    let tx = self.sign(body, &[owner], &[&kp]);
                    self.new_peers.push((kp, true));
                    vec![tx]
                } else if roll < 34 && self.new_peers.iter().any(|(_, active)| *active) {
                    // Move or retire a registered peer (this stake moves to a
                    // genesis peer, which never retires).
                    let active: Vec<usize> = (0..self.new_peers.len())
                        .filter(|&i| self.new_peers[i].1)
                        .collect();
                    let p = active[self.pick(active.len())];
                    let key = pk(&self.new_peers[p].0);
                    let retire = self.chance(50);
                    let action = if retire {
                        Action::RetirePeer { key }
                    } else {
                        Action::UpdatePeer {
                            key,
                            addr: format!("127.0.0.1:{}", 9000 + self.next_item)
                                .parse()
                                .unwrap(),
                        }
                    };
                    self.next_item += 1;
                    let mut out = self.native_to(owner, v);
                    let g = self.pick(PEERS);
                    out.host = Some(self.w.peers[g].key());
                    let body = self.w.body(vec![id], vec![out], vec![action]);
                    let kp = self.new_peers[p].0.clone();
                    if retire {
                        self.new_peers[p].1 = false;
                    }
                    vec![self.sign(body, &[owner], &[&kp])]
                } else if roll < 40 {
                    // Two spends of one output: the second is rejected.
                    let (a, b) = (self.wallet(), self.wallet());
                    let first = self.native_to(a, v);
                    let second = self.native_to(b, v);
                    let t1 = self.sign(self.w.body(vec![id], vec![first], vec![]), &[owner], &[]);
                    let t2 = self.sign(self.w.body(vec![id], vec![second], vec![]), &[owner], &[]);
                    vec![t1, t2]
                } else {
                    // A transfer in one or two parts, sometimes paying a fee.
                    let fee = if v > 10 && self.chance(20) { 3 } else { 0 };
                    let rest = v - fee;
                    let mut outputs = Vec::new();
                    if rest > 1 && self.chance(60) {
                        let part = 1 + self.rng.next_u64() as u128 % (rest - 1);
                        let (a, b) = (self.wallet(), self.wallet());
                        outputs.push(self.native_to(a, part));
                        outputs.push(self.native_to(b, rest - part));
                    } else {
                        let a = self.wallet();
                        outputs.push(self.native_to(a, rest));
                    }
                    let mut body = self.w.body(vec![id], outputs, vec![]);
                    body.fee = fee;
                    vec![self.sign(body, &[owner], &[])]
                }
            }
            Value::Amount(v) => {
                let issuer = self.issuers[&asset];
                let mintable = self.w.ledger.asset(&asset).unwrap().def.mintable;
                let to = self.wallet();
                let (body, signers) = if mintable && roll < 30 {
                    let m = 1 + self.rng.next_u64() as u128 % 500;
                    let out = self.coin_to(to, asset, Value::Amount(v + m));
                    let act = Action::Mint { asset, amount: m };
                    (
                        self.w.body(vec![id], vec![out], vec![act]),
                        vec![owner, issuer],
                    )
                } else if roll < 60 {
                    let b = 1 + self.rng.next_u64() as u128 % v;
                    let outputs = if b < v {
                        vec![self.coin_to(to, asset, Value::Amount(v - b))]
                    } else {
                        vec![]
                    };
                    let act = Action::Burn { asset, amount: b };
                    (self.w.body(vec![id], outputs, vec![act]), vec![owner])
                } else {
                    let out = self.coin_to(to, asset, Value::Amount(v));
                    (self.w.body(vec![id], vec![out], vec![]), vec![owner])
                };
                vec![self.sign(body, &signers, &[])]
            }
            Value::Item(item) => {
                let body = if roll < 30 {
                    let act = Action::BurnItem { asset, item };
                    self.w.body(vec![id], vec![], vec![act])
                } else {
                    let to = self.wallet();
                    let out = self.coin_to(to, asset, Value::Item(item));
                    self.w.body(vec![id], vec![out], vec![])
                };
                vec![self.sign(body, &[owner], &[])]
            }
        }
    }
}

fn checkpoint(l: &Ledger) -> Checkpoint {
    Checkpoint {
        chain: l.chain(),
        height: l.height(),
        round: l.round(),
        roots: l.roots().clone(),
    }
}

/// A driver run for `heights` heights, with the payloads it applied.
fn run(seed: u64, heights: usize) -> (Driver, Vec<Vec<Vec<u8>>>) {
    let mut d = Driver::new(seed);
    let mut all = Vec::new();
    for _ in 0..heights {
        let payloads = d.next_height();
        d.w.apply_payloads(&payloads);
        all.push(payloads);
    }
    (d, all)
}

/// Apply the driver's next height to it and to every twin, which must
/// decide and commit exactly as it does.
fn in_step(d: &mut Driver, twins: &mut [World]) -> HeightOutcome {
    let payloads = d.next_height();
    let a = d.w.apply_payloads(&payloads);
    for twin in twins {
        let b = twin.apply_payloads(&payloads);
        assert_eq!(a.outcomes, b.outcomes, "height {}", a.height);
        assert_eq!(a.roots, b.roots, "height {}", a.height);
    }
    a
}

/// Export at the driver's height, encode, decode, restore as a joining
/// peer would, continue both for `more` heights, and compare throughout.
fn snapshot_and_continue(d: &mut Driver, more: usize) {
    let snap = d.w.ledger.export_snapshot().unwrap();
    let bytes = snap.encode();
    let decoded = LedgerSnapshot::decode(&bytes, MAX_SNAPSHOT).unwrap();
    assert_eq!(decoded, snap);
    let restored =
        Ledger::from_checkpoint(decoded, &d.w.genesis, &checkpoint(&d.w.ledger)).unwrap();
    assert_eq!(restored.roots(), d.w.ledger.roots());
    assert_eq!(
        restored.export_snapshot().unwrap().encode(),
        bytes,
        "a restored ledger exports the very same snapshot"
    );
    assert_eq!(d.w.ledger.encode_snapshot().unwrap(), bytes);
    // A second copy restored with its trees built as parallel jobs (and
    // kept so for later heights).
    let parallel = Ledger::from_snapshot_with(
        LedgerSnapshot::decode(&bytes, MAX_SNAPSHOT).unwrap(),
        Some((Arc::new(ScopedThreads), 3)),
    )
    .unwrap();
    // A third whose growing structures are moved into stores.
    let mut stored =
        Ledger::from_snapshot(LedgerSnapshot::decode(&bytes, MAX_SNAPSHOT).unwrap()).unwrap();
    stored.use_stores(mem_stores()).unwrap();
    assert_eq!(stored.roots(), d.w.ledger.roots());
    let mut twins = [
        World::new(PEERS, WALLETS),
        World::new(PEERS, WALLETS),
        World::new(PEERS, WALLETS),
    ];
    twins[0].ledger = restored;
    twins[1].ledger = parallel;
    twins[2].ledger = stored;
    for _ in 0..more {
        in_step(d, &mut twins);
    }
    for twin in &twins {
        assert_eq!(
            twin.ledger.export_snapshot().unwrap(),
            d.w.ledger.export_snapshot().unwrap()
        );
    }
}

use proofs::ScopedThreads;

/// Stores in memory, boxed as the peer's LMDB stores are.
fn mem_stores() -> LedgerStores {
    LedgerStores {
        output_tree: Box::new(MemStore::<StoreKey, StoreValue>::new()),
        index_tree: Box::new(MemStore::<StoreKey, StoreValue>::new()),
        index_lists: Box::new(MemStore::<IndexKey, IndexValue>::new()),
        spent: Box::new(MemStore::<Hash, OutputState>::new()),
    }
}

/// A ledger whose trees, key index and spent outputs live in stores from
/// genesis on decides and commits exactly what one in memory does, reads
/// spent outputs back from its store (to name the transaction that spent
/// them), and keeps only unspent outputs in memory.
#[test]
fn a_ledger_in_stores_goes_on_like_one_in_memory() {
    let mut d = Driver::new(7);
    let mut twin = World::new(PEERS, WALLETS);
    twin.ledger.use_stores(mem_stores()).unwrap();
    assert!(twin.ledger.use_stores(mem_stores()).is_err(), "only once");
    let mut spent_refusals = 0;
    for _ in 0..40 {
        let a = in_step(&mut d, std::slice::from_mut(&mut twin));
        spent_refusals += a
            .outcomes
            .iter()
            .filter(|(_, o)| {
                matches!(
                    o,
                    Outcome::Rejected(Rejection::InputSpent { .. } | Rejection::Duplicate)
                )
            })
            .count();
    }
    assert!(spent_refusals > 0, "the stream spent some output twice");
    let all = d.w.ledger.outputs().unwrap();
    assert_eq!(twin.ledger.outputs().unwrap(), all);
    let unspent = all.iter().filter(|(_, st)| st.spent.is_none()).count();
    assert!(unspent < all.len());
    assert_eq!(twin.ledger.outputs_in_memory(), unspent);
    assert_eq!(twin.ledger.output_count(), all.len());
    for (id, st) in &all {
        assert_eq!(twin.ledger.output(id).unwrap().as_ref(), Some(st));
        let v = Ledger::version_of(twin.ledger.height());
        assert_eq!(
            twin.ledger.output_tree().get_with_proof(id, v).unwrap(),
            d.w.ledger.output_tree().get_with_proof(id, v).unwrap()
        );
    }
    let snap = d.w.ledger.export_snapshot().unwrap();
    assert_eq!(twin.ledger.export_snapshot().unwrap(), snap);
    // Written piece by piece, from memory or from the stores, the snapshot
    // is the same bytes.
    assert_eq!(d.w.ledger.encode_snapshot().unwrap(), snap.encode());
    assert_eq!(twin.ledger.encode_snapshot().unwrap(), snap.encode());
    // In small pieces, from either: the same bytes, each piece but the last
    // at least the size asked for; a failing sink stops the export.
    for ledger in [&d.w.ledger, &twin.ledger] {
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        ledger
            .encode_snapshot_with(1000, &mut |p| {
                pieces.push(p.to_vec());
                Ok(())
            })
            .unwrap();
        assert!(pieces.len() > 3, "{} pieces", pieces.len());
        assert!(pieces[..pieces.len() - 1].iter().all(|p| p.len() >= 1000));
        assert_eq!(pieces.concat(), snap.encode());
        let mut calls = 0;
        let err = ledger
            .encode_snapshot_with(1000, &mut |_| {
                calls += 1;
                if calls == 2 {
                    Err("disk full".into())
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(calls, 2);
    }
}

#[test]
fn a_restored_ledger_goes_on_like_the_original() {
    let (mut d, payloads) = run(1, 30);
    let k = d.w.ledger.height();
    assert_eq!(k, 30);
    // The run exercised what it should have.
    let snap = d.w.ledger.export_snapshot().unwrap();
    let kinds = |class: AssetClass| {
        snap.assets
            .iter()
            .filter(|(_, a)| a.def.class == class)
            .count()
    };
    assert!(kinds(AssetClass::Unique) > 0, "unique assets were issued");
    assert!(
        kinds(AssetClass::Fungible { precision: 2 }) > 0,
        "fungible assets were issued"
    );
    assert!(snap
        .items
        .iter()
        .any(|(_, _, s)| matches!(s, ItemState::Burned { .. })));
    assert!(snap.peers.len() > PEERS, "peers were registered");
    assert!(snap.outputs.iter().any(|(_, o)| o.spent.is_some()));
    let native = d.w.ledger.asset(&AssetId::NATIVE).unwrap().supply;
    assert!(
        native < WALLETS as u128 * GENESIS_AMOUNT,
        "fees were burned"
    );
    assert!(
        payloads.iter().flatten().count() > 30,
        "some heights had two events"
    );

    let bytes = snap.encode();
    let restored = Ledger::from_checkpoint(
        LedgerSnapshot::decode(&bytes, bytes.len()).unwrap(),
        &d.w.genesis,
        &checkpoint(&d.w.ledger),
    )
    .unwrap();
    let (orig, back) = (&d.w.ledger, &restored);
    assert_eq!((back.height(), back.round()), (orig.height(), orig.round()));
    assert_eq!(back.output_count(), orig.output_count());
    for p in orig.peers() {
        assert_eq!(back.peer_by_name(&p.name), Some(p));
        assert_eq!(back.hosted(&p.key), orig.hosted(&p.key));
    }
    assert_eq!(back.stake_table().unwrap(), orig.stake_table().unwrap());

    // Versions: the latest is the state after k; nothing older exists.
    let v = Ledger::version_of(k);
    assert_eq!(back.output_tree().latest_version(), v);
    assert_eq!(back.output_tree().oldest_version(), v);
    assert_eq!(back.registry().latest_version(), v);
    assert_eq!(back.key_index().latest_version(), v);
    assert!(matches!(
        back.output_tree().root(v - 1),
        Err(SmtError::Pruned { .. })
    ));
    // Proofs as of height k are the original's.
    for (id, st) in snap.outputs.iter().step_by(7) {
        let (value, proof) = back.output_tree().get_with_proof(id, v).unwrap();
        assert_eq!(value, Some(st.leaf_value()));
        assert_eq!(
            (value, proof.clone()),
            orig.output_tree().get_with_proof(id, v).unwrap()
        );
        assert!(proof
            .verify(&orig.roots().outputs, id, value.as_ref())
            .is_ok());
    }
    let owner = Hash(pk(&keypair(0)).0);
    let p = back.key_index().prove(&owner, 0, k, v).unwrap();
    assert_eq!(p, orig.key_index().prove(&owner, 0, k, v).unwrap());
    assert!(!p
        .verify(&orig.roots().keys, &owner, 0, k)
        .unwrap()
        .is_empty());
    // The history is resumed from its peaks: its root is there, the nodes
    // below the peaks are not (a restarting peer has them in its store).
    assert_eq!(back.history().root(), orig.history().root());
    assert_eq!(back.history().peaks(), orig.history().peaks());
    assert!(back.history().inclusion_proof(0).is_err());

    // The same later heights give the same outcomes and roots.
    let mut twin = World::new(PEERS, WALLETS);
    twin.ledger = restored;
    let mut applied_later = 0;
    for _ in 0..30 {
        let a = in_step(&mut d, std::slice::from_mut(&mut twin));
        applied_later += a.applied;
        assert_eq!(
            twin.ledger.stake_table().unwrap(),
            d.w.ledger.stake_table().unwrap()
        );
    }
    assert!(applied_later > 30);
    assert!(d
        .w
        .ledger
        .outputs()
        .unwrap()
        .iter()
        .any(|(_, o)| o.spent.is_some_and(|s| s.height > k) && o.created_at <= k));
    assert_eq!(
        twin.ledger.export_snapshot().unwrap(),
        d.w.ledger.export_snapshot().unwrap()
    );
}

#[test]
fn snapshots_at_genesis_and_of_a_restored_ledger() {
    // At height 0, and a snapshot of a ledger that was itself restored.
    let mut d = Driver::new(5);
    snapshot_and_continue(&mut d, 3);
    snapshot_and_continue(&mut d, 5);
}

// ------------------------------------------------------------- tampering

/// A run and its snapshot at the end, for the tampering tests.
fn base() -> (Driver, LedgerSnapshot) {
    let (d, _) = run(2, 25);
    let snap = d.w.ledger.export_snapshot().unwrap();
    (d, snap)
}

fn restore(snap: &LedgerSnapshot) -> SnapshotError {
    Ledger::from_snapshot(snap.clone()).expect_err("a tampered snapshot is refused")
}

fn index_of(snap: &LedgerSnapshot, pred: impl Fn(&OutputState) -> bool) -> usize {
    snap.outputs
        .iter()
        .position(|(_, st)| pred(st))
        .expect("the run made such an output")
}

#[test]
fn changed_outputs_are_refused() {
    let (_, snap) = base();
    // A spend moved to another transaction: only the root can tell.
    let mut s = snap.clone();
    let i = index_of(&s, |st| st.spent.is_some());
    s.outputs[i].1.spent.as_mut().unwrap().tx = Hash([9; 32]);
    assert!(matches!(
        restore(&s),
        SnapshotError::RootMismatch { which: "outputs" }
    ));
    // Another creating transaction.
    let mut s = snap.clone();
    s.outputs[3].1.created_by = Hash([9; 32]);
    assert!(matches!(
        restore(&s),
        SnapshotError::RootMismatch { which: "outputs" }
    ));
    // An unspent native output marked spent: the supply no longer adds up.
    let mut s = snap.clone();
    let i = index_of(&s, |st| st.spent.is_none() && st.output.asset.is_native());
    s.outputs[i].1.spent = Some(Spend {
        tx: Hash([9; 32]),
        height: s.height,
    });
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::Supply(a)) if a == AssetId::NATIVE
    ));
    // More value in an output than the supply holds.
    let mut s = snap.clone();
    let i = index_of(&s, |st| st.spent.is_none() && st.output.asset.is_native());
    s.outputs[i].1.output.value = Value::Amount(u128::MAX);
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::Supply(_))
    ));
    // Spent after the snapshot's height, and created after it.
    let mut s = snap.clone();
    let i = index_of(&s, |st| st.spent.is_some());
    s.outputs[i].1.spent.as_mut().unwrap().height = s.height + 1;
    let id = s.outputs[i].0;
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::OutputHeight(x)) if x == id
    ));
    let mut s = snap.clone();
    s.outputs[0].1.created_at = s.height + 5;
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::OutputHeight(_))
    ));
    // A host that is no peer; an asset that does not exist.
    let mut s = snap.clone();
    let i = index_of(&s, |st| st.output.asset.is_native());
    s.outputs[i].1.output.host = Some(PeerKey([3; 32]));
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::OutputHost(_))
    ));
    let mut s = snap.clone();
    let i = index_of(&s, |st| !st.output.asset.is_native());
    s.outputs[i].1.output.asset = AssetId(Hash([4; 32]));
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::OutputAsset(_))
    ));
    // An unspent item whose registry entry says burned.
    let mut s = snap.clone();
    let i = index_of(&s, |st| {
        st.spent.is_none() && matches!(st.output.value, Value::Item(_))
    });
    let Value::Item(item) = s.outputs[i].1.output.value else {
        unreachable!()
    };
    let asset = s.outputs[i].1.output.asset;
    let j = s
        .items
        .iter()
        .position(|(a, it, _)| (*a, *it) == (asset, item))
        .unwrap();
    s.items[j].2 = ItemState::Burned {
        minted_at: 1,
        burned_at: 2,
    };
    let id = s.outputs[i].0;
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::OutputItem(x)) if x == id
    ));
}

#[test]
fn dropped_or_added_outputs_are_refused() {
    let (_, snap) = base();
    // Dropped: the key index still lists it.
    let mut s = snap.clone();
    let (id, _) = s.outputs.remove(5);
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::IndexEntry(x)) if x == id
    ));
    // Dropped with its key index entry (a spent one, so supplies add up):
    // only the output root tells.
    let mut s = snap.clone();
    let i = index_of(&s, |st| st.spent.is_some());
    let (id, _) = s.outputs.remove(i);
    for (_, list) in &mut s.key_index {
        list.retain(|e| e.output != id);
    }
    s.key_index.retain(|(_, l)| !l.is_empty());
    assert!(matches!(
        restore(&s),
        SnapshotError::RootMismatch { which: "outputs" }
    ));
    // Added, spent, and indexed: still only the root tells.
    let mut s = snap.clone();
    let mut extra = s.outputs[i].1.clone();
    extra.created_by = Hash([7; 32]);
    let new_id = output_id(&Hash([7; 32]), 0);
    let pos = s.outputs.partition_point(|(x, _)| *x < new_id);
    s.outputs.insert(pos, (new_id, extra.clone()));
    let key = Hash(extra.output.owner.0);
    let list = &mut s.key_index.iter_mut().find(|(k, _)| *k == key).unwrap().1;
    let at = list.partition_point(|e| e.height <= extra.created_at);
    list.insert(
        at,
        Entry {
            height: extra.created_at,
            output: new_id,
        },
    );
    assert!(matches!(
        restore(&s),
        SnapshotError::RootMismatch { which: "outputs" }
    ));
}

#[test]
fn key_index_changes_are_refused() {
    let (_, snap) = base();
    // An entry dropped: its output is no longer indexed.
    let mut s = snap.clone();
    let list = s.key_index.iter_mut().find(|(_, l)| l.len() > 1).unwrap();
    let gone = list.1.remove(0);
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::IndexMissing(x)) if x == gone.output
    ));
    // An entry added twice, or for an output that does not exist, or at
    // another height, or under another key.
    let mut s = snap.clone();
    let e = s.key_index[0].1[0];
    s.key_index[0].1.insert(0, e);
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::IndexEntry(x)) if x == e.output
    ));
    let mut s = snap.clone();
    s.key_index[0].1.push(Entry {
        height: s.height,
        output: Hash([5; 32]),
    });
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::IndexEntry(_))
    ));
    let mut s = snap.clone();
    let last = s.key_index[0].1.len() - 1;
    s.key_index[0].1[last].height += 1;
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::IndexEntry(_))
    ));
    let mut s = snap.clone();
    let moved = s.key_index[0].1.pop().unwrap();
    s.key_index[1].1.push(moved);
    assert!(matches!(restore(&s), SnapshotError::Inconsistent(_)));
    // Heights out of order within a list; an empty list.
    let mut s = snap.clone();
    let (key, list) = s
        .key_index
        .iter_mut()
        .find(|(_, l)| l.windows(2).any(|w| w[0].height < w[1].height))
        .unwrap();
    list.reverse();
    let key = *key;
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::IndexList(k)) if k == key
    ));
    let mut s = snap.clone();
    s.key_index.insert(0, (Hash::ZERO, vec![]));
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::IndexList(_))
    ));
    // Two entries of one height swapped: the list's own order, which only
    // its root commits.
    let mut s = snap.clone();
    let (list, at) = s
        .key_index
        .iter_mut()
        .find_map(|(_, l)| {
            let at = l.windows(2).position(|w| w[0].height == w[1].height)?;
            Some((l, at))
        })
        .expect("some key got two outputs at one height");
    list.swap(at, at + 1);
    assert!(matches!(
        restore(&s),
        SnapshotError::RootMismatch { which: "keys" }
    ));
}

#[test]
fn history_changes_are_refused() {
    let (_, snap) = base();
    assert!(snap.history.len() >= 2, "a history of several peaks");
    let mut s = snap.clone();
    s.history[1].0[0] ^= 1;
    assert!(matches!(
        restore(&s),
        SnapshotError::RootMismatch { which: "history" }
    ));
    let mut s = snap.clone();
    s.history.swap(0, 1);
    assert!(matches!(
        restore(&s),
        SnapshotError::RootMismatch { which: "history" }
    ));
    let mut s = snap.clone();
    s.history.pop();
    assert!(matches!(
        restore(&s),
        SnapshotError::RootMismatch {
            which: "history_leaves"
        }
    ));
}

#[test]
fn registry_changes_are_refused() {
    let (_, snap) = base();
    let mut s = snap.clone();
    s.assets[0].1.def.name = "other".into();
    assert!(matches!(
        restore(&s),
        SnapshotError::RootMismatch { which: "registry" }
    ));
    let mut s = snap.clone();
    let last = s.peers.len() - 1;
    s.peers[last].addr = "127.0.0.1:1".parse().unwrap();
    assert!(matches!(
        restore(&s),
        SnapshotError::RootMismatch { which: "registry" }
    ));
    let mut s = snap.clone();
    s.assets[0].1.supply += 1;
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::Supply(_))
    ));
    let mut s = snap.clone();
    s.peers[1].name = s.peers[0].name.clone();
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::PeerName(_))
    ));
    let mut s = snap.clone();
    s.peers[0].registered_at = s.height + 1;
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::AfterHeight(_))
    ));
    // A burned item brought back to life: no output holds it.
    let mut s = snap.clone();
    let j = s
        .items
        .iter()
        .position(|(_, _, st)| matches!(st, ItemState::Burned { .. }))
        .unwrap();
    s.items[j].2 = ItemState::Live { minted_at: 1 };
    let (a, it, _) = s.items[j];
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::Item(x, y)) if (x, y) == (a, it)
    ));
    // An item of a fungible asset.
    let mut s = snap.clone();
    s.items[0].0 = AssetId::NATIVE;
    s.items.sort_by_key(|(a, i, _)| (*a, *i));
    assert!(matches!(
        restore(&s),
        SnapshotError::Inconsistent(Inconsistency::Item(..))
    ));
}

#[test]
fn non_canonical_order_is_refused() {
    let (_, snap) = base();
    let mut s = snap.clone();
    s.outputs.swap(0, 1);
    assert!(matches!(
        restore(&s),
        SnapshotError::Unsorted { what: "outputs" }
    ));
    let mut s = snap.clone();
    let dup = s.outputs[4].clone();
    s.outputs.insert(4, dup);
    assert!(matches!(
        restore(&s),
        SnapshotError::Duplicate { what: "outputs" }
    ));
    let mut s = snap.clone();
    s.assets.reverse();
    assert!(matches!(
        restore(&s),
        SnapshotError::Unsorted { what: "assets" }
    ));
    let mut s = snap.clone();
    let dup = s.items[0];
    s.items.insert(0, dup);
    assert!(matches!(
        restore(&s),
        SnapshotError::Duplicate { what: "items" }
    ));
    let mut s = snap.clone();
    s.items.reverse();
    assert!(matches!(
        restore(&s),
        SnapshotError::Unsorted { what: "items" }
    ));
    let mut s = snap.clone();
    s.peers.swap(0, 2);
    assert!(matches!(
        restore(&s),
        SnapshotError::Unsorted { what: "peers" }
    ));
    let mut s = snap.clone();
    s.key_index.swap(0, 1);
    assert!(matches!(
        restore(&s),
        SnapshotError::Unsorted {
            what: "key index keys"
        }
    ));
}

#[test]
fn only_the_certified_snapshot_is_accepted() {
    let (d, snap) = base();
    let cp = checkpoint(&d.w.ledger);
    let g = &d.w.genesis;
    let refused = |s: &LedgerSnapshot, cp: &Checkpoint| {
        Ledger::from_checkpoint(s.clone(), g, cp).expect_err("not the certified state")
    };
    assert!(Ledger::from_checkpoint(snap.clone(), g, &cp).is_ok());
    // Another height, other roots, another round, chain or parameters.
    let mut other = cp.clone();
    other.height -= 1;
    assert!(matches!(
        refused(&snap, &other),
        SnapshotError::NotCertified { which: "height" }
    ));
    let mut other = cp.clone();
    other.roots.keys = Hash([1; 32]);
    assert!(matches!(
        refused(&snap, &other),
        SnapshotError::NotCertified { which: "keys" }
    ));
    let mut other = cp.clone();
    other.round += 1;
    assert!(matches!(
        refused(&snap, &other),
        SnapshotError::NotCertified { which: "round" }
    ));
    let mut s = snap.clone();
    s.params.min_fee = 1;
    assert!(matches!(
        refused(&s, &cp),
        SnapshotError::NotCertified { which: "params" }
    ));
    let mut s = snap.clone();
    s.chain = Hash([1; 32]);
    let mut other = cp.clone();
    other.chain = s.chain;
    assert!(matches!(
        refused(&s, &other),
        SnapshotError::NotCertified { which: "chain" }
    ));
    // A snapshot claiming other roots than it holds: refused uncertified
    // too, by the rebuilt root.
    let mut s = snap.clone();
    s.roots.registry = Hash([2; 32]);
    assert!(matches!(
        refused(&s, &cp),
        SnapshotError::NotCertified { which: "registry" }
    ));
    assert!(matches!(
        restore(&s),
        SnapshotError::RootMismatch { which: "registry" }
    ));
    assert!(matches!(
        Ledger::from_snapshot_certified(s, &cp.roots, cp.height),
        Err(SnapshotError::NotCertified { which: "registry" })
    ));
    // Another format, and a height with no next one.
    let mut s = snap.clone();
    s.format = SNAPSHOT_FORMAT + 1;
    assert!(matches!(restore(&s), SnapshotError::Format(f) if f == SNAPSHOT_FORMAT + 1));
    let mut s = snap.clone();
    s.height = u64::MAX;
    assert!(matches!(restore(&s), SnapshotError::HeightTooLarge(_)));
}

#[test]
fn decoding_is_bounded_canonical_and_never_panics() {
    let (d, snap) = base();
    let bytes = snap.encode();
    assert!(matches!(
        LedgerSnapshot::decode(&bytes, bytes.len() - 1),
        Err(SnapshotError::Decode(CodecError::TooLong { .. }))
    ));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        LedgerSnapshot::decode(&longer, MAX_SNAPSHOT),
        Err(SnapshotError::Decode(CodecError::Trailing(1)))
    ));
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(LedgerSnapshot::decode(&bytes[..cut], MAX_SNAPSHOT).is_err());
    }
    // Any changed byte fails to decode or fails the checks against the
    // certified checkpoint: no byte of a snapshot goes unchecked.
    let cp = checkpoint(&d.w.ledger);
    let stride = (bytes.len() / 400).max(1);
    for i in (0..bytes.len()).step_by(stride) {
        let mut bad = bytes.clone();
        bad[i] ^= 0x41;
        if let Ok(s) = LedgerSnapshot::decode(&bad, MAX_SNAPSHOT) {
            assert!(
                Ledger::from_checkpoint(s, &d.w.genesis, &cp).is_err(),
                "byte {i} changed and the snapshot was accepted"
            );
        }
    }
}

proptest! {
    // A few cases by default (each signs and applies tens of heights);
    // PROPTEST_CASES=N for a longer sweep.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(6),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_worlds_restore_to_the_same_future(seed: u64, k in 0usize..12, more in 1usize..12) {
        let (mut d, _) = run(seed, k);
        snapshot_and_continue(&mut d, more);
        prop_assert_eq!(d.w.ledger.height() as usize, k + more);
    }
}

#[test]
fn applying_a_height_on_a_restored_ledger_checks_order() {
    let (d, snap) = base();
    let mut restored = Ledger::from_snapshot(snap).unwrap();
    let input = dag::ledger::HeightInput {
        height: d.w.ledger.height() + 2,
        round: 0,
        leader: Hash::ZERO,
        events: vec![],
    };
    assert!(restored.apply_height(&input).is_err());
    // The next height with no events still moves the versions on.
    let input = dag::ledger::HeightInput {
        height: d.w.ledger.height() + 1,
        ..input
    };
    let out = restored.apply_height(&input).unwrap();
    assert_eq!(out.outcomes, Vec::<(Hash, Outcome)>::new());
    assert_eq!(
        restored.output_tree().latest_version(),
        Ledger::version_of(d.w.ledger.height() + 1)
    );
    assert_eq!(out.roots.outputs, d.w.ledger.roots().outputs);
}
