//! The light client's sync: a peer's honest answer verifies, and every lie
//! (a hidden output, a wrong amount or spend, a root without a quorum, a
//! rewritten or rolled-back past, an answer to another question) is caught
//! with the error that names it.

#[path = "ledger/world.rs"]
mod world;

use dag::identity::PeerKey;
use dag::ledger::checkpoint::{Certified, Checkpoint, CommitteeChain, Statement};
use dag::ledger::light::{verify_sync, LightError, SyncAnswer, SyncRequest};
use dag::ledger::output::{output_id, Value};
use world::*;

/// The committee of the first 4096 rounds: genesis's stake table.
fn genesis_committee(w: &World) -> dag::committee::Committee {
    w.genesis.ledger().unwrap().stake_table().unwrap()
}

/// A checkpoint of the world's current state signed by the first `n` peers.
fn certify(w: &mut World, n: usize) -> Certified<Checkpoint> {
    let committee = genesis_committee(w);
    let cp = Checkpoint {
        chain: w.chain,
        height: w.ledger.height(),
        round: w.ledger.round(),
        roots: w.ledger.roots().clone(),
    };
    let mut cert = Certified::new(cp.clone());
    for p in w.peers.iter_mut().take(n) {
        let i = committee.index_of(&p.key()).unwrap();
        cert.add(i, cp.sign(p));
    }
    cert
}

fn committees(w: &World) -> CommitteeChain {
    CommitteeChain::new(w.chain, genesis_committee(w))
}

/// Key 0 pays 300 to key 7 (keeping the change) at height 1.
fn pay(w: &mut World) -> (PeerKey, PeerKey) {
    let (k0, k7) = (keypair(0), keypair(7));
    let body = w.body(
        vec![w.genesis_output(0)],
        vec![
            w.native(&k7, 300, 1),
            w.native(&k0, GENESIS_AMOUNT - 300, 0),
        ],
        vec![],
    );
    let tx = w.sign(body, &[&k0]);
    let out = w.apply(&[tx]);
    assert!(matches!(single(&out), dag::ledger::Outcome::Applied));
    (pk(&k0), pk(&k7))
}

fn request(keys: Vec<PeerKey>, from: u64, w: &World, known: u64) -> SyncRequest {
    SyncRequest {
        keys,
        from,
        watch: vec![w.genesis_output(0), w.genesis_output(1)],
        known_leaves: known,
    }
}

#[test]
fn an_honest_answer_verifies_and_says_what_the_wallet_holds() {
    let mut w = World::new(4, 4);
    let (k0, k7) = pay(&mut w);
    let cert = certify(&mut w, 3);
    let req = request(vec![k7, k0], 0, &w, 0);
    let answer = w.ledger.prove_sync(&req, &cert).unwrap();
    let v = verify_sync(&req, &answer, &committees(&w), None).unwrap();
    assert_eq!(v.checkpoint, cert.statement);
    let (key, to, outs) = &v.keys[0];
    assert_eq!((*key, *to), (k7, 1));
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].1.output.value, Value::Amount(300));
    assert_eq!(outs[0].1.created_at, 1);
    // Key 0: its genesis output (height 0) and its change (height 1).
    let heights: Vec<u64> = v.keys[1].2.iter().map(|(_, s)| s.created_at).collect();
    assert_eq!(heights, vec![0, 1]);
    // The spent genesis output is proven spent at height 1; output 1 not.
    assert_eq!(v.watched[0].1.as_ref().unwrap().spent.unwrap().height, 1);
    assert!(v.watched[1].1.as_ref().unwrap().spent.is_none());

    // A later sync from the next height proves the new root extends the
    // accepted one, and lists nothing new.
    let k8 = keypair(8);
    let body = w.body(
        vec![w.genesis_output(1)],
        vec![w.native(&k8, GENESIS_AMOUNT, 2)],
        vec![],
    );
    let tx = w.sign(body, &[&keypair(1)]);
    w.apply(&[tx]);
    let cert2 = certify(&mut w, 4);
    let req2 = request(vec![k7, k0], 2, &w, cert.statement.roots.history_leaves);
    let answer2 = w.ledger.prove_sync(&req2, &cert2).unwrap();
    let v2 = verify_sync(&req2, &answer2, &committees(&w), Some(&cert.statement)).unwrap();
    assert!(v2
        .keys
        .iter()
        .all(|(_, to, outs)| *to == 2 && outs.is_empty()));
    assert_eq!(v2.watched[1].1.as_ref().unwrap().spent.unwrap().height, 2);
}

/// Each lie is caught, with the error that names it.
#[test]
fn every_lie_is_caught_and_named() {
    let mut w = World::new(4, 4);
    let (k0, k7) = pay(&mut w);
    let cert = certify(&mut w, 3);
    let req = request(vec![k7, k0], 0, &w, 0);
    let honest = w.ledger.prove_sync(&req, &cert).unwrap();
    let c = committees(&w);
    let check = |a: &SyncAnswer| verify_sync(&req, a, &c, None);

    // A hidden output.
    let mut a = honest.clone();
    a.keys[1].outputs.remove(1);
    assert!(matches!(check(&a), Err(LightError::Incomplete { key, .. }) if key == k0));
    // A completeness proof for fewer heights than claimed.
    let mut a = honest.clone();
    a.keys[1].completeness = w
        .ledger
        .prove_sync(&request(vec![k0], 0, &w, 0), &cert)
        .ok()
        .and_then(|x| x.keys[0].completeness.clone())
        .map(|mut p| {
            p.entries.pop();
            p
        });
    assert!(matches!(check(&a), Err(LightError::Incomplete { .. })));
    // A wrong amount.
    let mut a = honest.clone();
    a.keys[0].outputs[0].state.as_mut().unwrap().output.value = Value::Amount(3000);
    assert!(matches!(check(&a), Err(LightError::WrongOutput { .. })));
    // A spent output shown unspent.
    let mut a = honest.clone();
    a.watched[0].state.as_mut().unwrap().spent = None;
    assert!(
        matches!(check(&a), Err(LightError::WrongOutput { id, .. }) if id == w.genesis_output(0))
    );
    // An existing output said never to exist.
    let mut a = honest.clone();
    a.watched[1].state = None;
    assert!(matches!(check(&a), Err(LightError::WrongOutput { .. })));
    // Another key's outputs answered.
    let mut a = honest.clone();
    a.keys.swap(0, 1);
    assert!(matches!(check(&a), Err(LightError::Shape(_))));
    // A checkpoint without a quorum, and a forged one.
    let mut a = honest.clone();
    a.checkpoint = certify(&mut w, 2);
    assert!(matches!(check(&a), Err(LightError::NotCertified(_))));
    let mut a = honest.clone();
    a.checkpoint.statement.roots.outputs = proofs::Hash([1; 32]);
    assert!(matches!(check(&a), Err(LightError::NotCertified(_))));
    assert!(check(&honest).is_ok());
}

/// A certified state that does not extend the accepted one is refused: a
/// rewritten past (another history at the same or a later height), or an
/// older checkpoint.
#[test]
fn a_rewritten_or_older_past_is_refused() {
    let mut w = World::new(4, 4);
    let (_, k7) = pay(&mut w);
    let accepted = certify(&mut w, 3).statement;

    // Another world with the same genesis where key 0 paid someone else.
    let mut fork = World::new(4, 4);
    let (k0, k9) = (keypair(0), keypair(9));
    let body = fork.body(
        vec![fork.genesis_output(0)],
        vec![fork.native(&k9, GENESIS_AMOUNT, 1)],
        vec![],
    );
    let tx = fork.sign(body, &[&k0]);
    fork.apply(&[tx]);
    fork.apply(&[]);
    let forged = certify(&mut fork, 4);
    let req = request(vec![k7], 2, &fork, accepted.roots.history_leaves);
    let a = fork.ledger.prove_sync(&req, &forged).unwrap();
    let err = verify_sync(&req, &a, &committees(&fork), Some(&accepted)).unwrap_err();
    assert!(matches!(err, LightError::RewrittenPast(_)), "{err}");

    // The peer sends an older checkpoint than the one accepted.
    let older = World::new(4, 4);
    let mut older = older;
    let old_cert = certify(&mut older, 4);
    let req = SyncRequest {
        keys: vec![k7],
        from: 2,
        watch: vec![],
        known_leaves: accepted.roots.history_leaves,
    };
    let a = SyncAnswer {
        checkpoint: old_cert,
        consistency: None,
        keys: vec![],
        watched: vec![],
    };
    let err = verify_sync(&req, &a, &committees(&older), Some(&accepted)).unwrap_err();
    assert!(
        matches!(err, LightError::WentBack { old: 1, new: 0 }),
        "{err}"
    );
}

/// Outputs created for a key at heights below `from` are not sent again,
/// and an output id the chain never had is proven absent.
#[test]
fn ranges_and_absent_outputs() {
    let mut w = World::new(4, 4);
    let (k0, _) = pay(&mut w);
    let cert = certify(&mut w, 3);
    let req = SyncRequest {
        keys: vec![k0],
        from: 1,
        watch: vec![output_id(&proofs::Hash([42; 32]), 0)],
        known_leaves: 0,
    };
    let a = w.ledger.prove_sync(&req, &cert).unwrap();
    let v = verify_sync(&req, &a, &committees(&w), None).unwrap();
    assert_eq!(v.keys[0].2.len(), 1, "only the change of height 1");
    assert_eq!(v.watched[0].1, None);
    // Asking beyond the checkpoint: an empty, proof-less answer.
    let req = SyncRequest {
        from: 5,
        watch: vec![],
        ..req
    };
    let a = w.ledger.prove_sync(&req, &cert).unwrap();
    assert!(a.keys[0].completeness.is_none());
    let v = verify_sync(&req, &a, &committees(&w), None).unwrap();
    assert!(v.keys[0].2.is_empty());
}

/// `item_leaf_index` (what a peer uses to prove a receipt) finds the leaf
/// the ledger really appended for each item, rejected ones included.
#[test]
fn item_leaf_index_matches_the_history() {
    use dag::ledger::admission::encode_payload_item;
    use dag::ledger::apply::{item_leaf, item_leaf_index};
    let mut w = World::new(4, 4);
    let (k0, k1, k7) = (keypair(0), keypair(1), keypair(7));
    let pay = |w: &World, input: u32, from: &schnorrkel::Keypair| {
        let body = w.body(
            vec![w.genesis_output(input)],
            vec![w.native(&k7, GENESIS_AMOUNT, 1)],
            vec![],
        );
        w.sign(body, &[from])
    };
    let a = pay(&w, 0, &k0);
    let b = pay(&w, 1, &k1);
    let double = pay(&w, 0, &k0); // another spend of output 0: rejected
    let mut conflicting = double.clone();
    conflicting.body.memo = Some(proofs::Hash([3; 32]));
    let conflicting = w.sign(conflicting.body, &[&k0]);
    let payloads: Vec<Vec<u8>> = vec![
        [a.clone(), b.clone()]
            .iter()
            .flat_map(encode_payload_item)
            .collect(),
        encode_payload_item(&conflicting),
    ];
    let before = w.ledger.roots().history_leaves;
    let out = w.apply_payloads(&payloads);
    let events: Vec<(proofs::Hash, Vec<u8>)> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| (proofs::Hash([i as u8; 32]), p.clone()))
        .collect();
    let max = w.ledger.params().max_tx_bytes as usize;
    for (id, outcome) in &out.outcomes {
        let at = item_leaf_index(before, &events, max, id).expect("in the height");
        assert_eq!(
            w.ledger.history().leaf_node(at).unwrap(),
            proofs::mmr::leaf_hash(&item_leaf(id, outcome)),
            "item {id}"
        );
    }
    assert_eq!(out.outcomes.len(), 3);
    assert!(matches!(
        out.outcomes[2].1,
        dag::ledger::Outcome::Rejected(_)
    ));
    assert_eq!(
        item_leaf_index(before, &events, max, &proofs::Hash([9; 32])),
        None
    );
}
