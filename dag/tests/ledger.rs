//! The ledger rules, driven by hand through payload bytes, admission and
//! apply: transfers, conflicts, assets, items, peers, stake, certificates.

#[path = "ledger/world.rs"]
mod world;

use dag::committee::{Committee, Member, SNAPSHOT_INTERVAL};
use dag::identity::Signer;
use dag::ledger::apply::{Outcome, Rejection};
use dag::ledger::asset::{AssetClass, AssetDef};
use dag::ledger::checkpoint::{
    CertError, Certified, Checkpoint, CommitteeChain, Handover, Statement,
};
use dag::ledger::genesis::Genesis;
use dag::ledger::output::{output_id, Output, Value};
use dag::ledger::peers::PeerStatus;
use dag::ledger::state::{ItemState, Params};
use dag::ledger::transaction::{Action, FormError};
use dag::ledger::AssetId;
use proofs::smt::VersionedTree;
use proofs::Hash;
use rand_core::SeedableRng;
use world::*;

#[test]
fn genesis_is_checked_and_its_hash_is_the_chain_id() {
    let w = World::new(3, 6);
    let json = w.genesis.to_json();
    let back = Genesis::from_json(json.as_bytes()).unwrap();
    assert_eq!(back.chain_id(), w.chain);
    let reformatted = serde_json::to_string(&back).unwrap();
    assert_eq!(
        Genesis::from_json(reformatted.as_bytes())
            .unwrap()
            .chain_id(),
        w.chain,
        "whitespace does not change the chain id"
    );
    let mut other = w.genesis.clone();
    other.time_ms += 1;
    assert_ne!(other.chain_id(), w.chain);

    let bad = json.replace("\"peer1\"", "\"Peer1\"");
    let err = Genesis::from_json(bad.as_bytes()).unwrap_err().to_string();
    assert!(err.contains("peers[1].name"), "{err}");
    let bad = json.replacen("\"host\": \"peer0\"", "\"host\": \"nobody\"", 1);
    let err = Genesis::from_json(bad.as_bytes()).unwrap_err().to_string();
    assert!(err.contains("outputs[0].host"), "{err}");
    let bad = json.replacen("\"chain_name\"", "\"chain_nam\"", 1);
    assert!(Genesis::from_json(bad.as_bytes()).is_err());

    assert_eq!(w.ledger.height(), 0);
    assert_eq!(w.ledger.output_count(), 6);
    assert_eq!(
        w.ledger.asset(&AssetId::NATIVE).unwrap().supply,
        6 * GENESIS_AMOUNT
    );
    let c = w.ledger.stake_table().unwrap();
    assert_eq!(c.len(), 3);
    assert!(c.members().iter().all(|m| m.stake == c.members()[0].stake));
}

#[test]
fn transfer_then_double_spend_and_duplicate_are_rejected() {
    let mut w = World::new(2, 2);
    let (a, b, c) = (keypair(0), keypair(100), keypair(101));
    let input = w.genesis_output(0);
    let t1 = w.sign(
        w.body(
            vec![input],
            vec![w.native(&b, 400_000, 1), w.native(&c, 600_000, 0)],
            vec![],
        ),
        &[&a],
    );
    let t2 = w.sign(
        w.body(vec![input], vec![w.native(&c, 1_000_000, 0)], vec![]),
        &[&a],
    );
    let out = w.apply(&[t1.clone(), t2.clone(), t1.clone()]);
    assert_eq!(out.outcomes[0].1, Outcome::Applied);
    assert_eq!(
        out.outcomes[1].1,
        Outcome::Rejected(Rejection::InputSpent {
            input: 0,
            by: t1.id(),
            height: 1
        })
    );
    assert_eq!(out.outcomes[2].1, Outcome::Rejected(Rejection::Duplicate));
    assert_eq!((out.applied, out.rejected), (1, 2));

    let spent = w.ledger.output(&input).unwrap().unwrap();
    assert_eq!(spent.spent.unwrap().tx, t1.id());
    let o1 = w.ledger.output(&output_id(&t1.id(), 1)).unwrap().unwrap();
    assert_eq!(o1.output.value, Value::Amount(600_000));
    assert_eq!(o1.created_at, 1);
    // Stake moved with the outputs: peer 0 hosted 1e6 and now 6e5.
    assert_eq!(w.ledger.hosted(&w.peers[0].key()), 600_000);
    assert_eq!(w.ledger.hosted(&w.peers[1].key()), 1_400_000);

    // The tree commits the new state: the proof of the spent input shows it.
    let version = dag::ledger::Ledger::version_of(1);
    let (value, proof) = w
        .ledger
        .output_tree()
        .get_with_proof(&input, version)
        .unwrap();
    assert_eq!(value, Some(spent.leaf_value()));
    assert!(proof
        .verify(&w.ledger.roots().outputs, &input, value.as_ref())
        .is_ok());

    // The later output is spendable by its owner only.
    let o1_id = output_id(&t1.id(), 1);
    let wrong = w.sign(
        w.body(vec![o1_id], vec![w.native(&b, 600_000, 0)], vec![]),
        &[&b],
    );
    let out = w.apply(&[wrong]);
    assert_eq!(rejected(single(&out)), &Rejection::SignersMismatch);
    let right = w.sign(
        w.body(vec![o1_id], vec![w.native(&b, 600_000, 0)], vec![]),
        &[&c],
    );
    assert_eq!(single(&w.apply(&[right])), &Outcome::Applied);
}

#[test]
fn value_signature_and_form_rules() {
    let mut w = World::with_params(
        1,
        3,
        Params {
            min_fee: 10,
            ..Params::default()
        },
    );
    let a = keypair(0);
    let input = w.genesis_output(0);

    let cases: Vec<(Vec<Output>, u128, Rejection)> = vec![
        (
            vec![w.native(&a, GENESIS_AMOUNT, 0)],
            0,
            Rejection::FeeTooLow { min: 10 },
        ),
        (
            vec![w.native(&a, GENESIS_AMOUNT, 0)],
            10,
            Rejection::ValueMismatch(AssetId::NATIVE),
        ),
        (
            vec![w.native(&a, u128::MAX, 0), w.native(&a, 2, 0)],
            10,
            Rejection::Overflow,
        ),
    ];
    for (outputs, fee, want) in cases {
        let mut body = w.body(vec![input], outputs, vec![]);
        body.fee = fee;
        let t = w.sign(body, &[&a]);
        assert_eq!(rejected(single(&w.apply(&[t]))), &want);
    }
    // Unknown input; an output to an unregistered host.
    let t = w.sign(
        w.body(vec![Hash([7; 32])], vec![w.native(&a, 1, 0)], vec![]),
        &[&a],
    );
    assert_eq!(
        rejected(single(&w.apply(&[t]))),
        &Rejection::UnknownInput(0)
    );
    let mut o = w.native(&a, GENESIS_AMOUNT - 10, 0);
    o.host = Some(dag::identity::PeerKey([3; 32]));
    let mut body = w.body(vec![input], vec![o], vec![]);
    body.fee = 10;
    let t = w.sign(body, &[&a]);
    assert_eq!(rejected(single(&w.apply(&[t]))), &Rejection::UnknownHost(0));

    // A tampered signature, and a transaction of another chain.
    let mut body = w.body(
        vec![input],
        vec![w.native(&a, GENESIS_AMOUNT - 10, 0)],
        vec![],
    );
    body.fee = 10;
    let mut t = w.sign(body.clone(), &[&a]);
    t.signature.0[5] ^= 1;
    assert_eq!(rejected(single(&w.apply(&[t]))), &Rejection::BadSignature);
    let mut t = w.sign(body.clone(), &[&a]);
    t.body.fee = 11; // changes the id the signature was made for
    assert_eq!(rejected(single(&w.apply(&[t]))), &Rejection::BadSignature);
    let mut other = body.clone();
    other.chain = Hash([1; 32]);
    let t = w.sign(other, &[&a]);
    assert_eq!(
        rejected(single(&w.apply(&[t]))),
        &Rejection::Form(FormError::WrongChain)
    );
    // Malformed bytes among good ones: each item gets its own outcome.
    let good = w.sign(body, &[&a]);
    let mut payload = proofs::encode(&vec![1u8, 2, 3]);
    payload.extend(dag::ledger::encode_payload_item(&good));
    let out = w.apply_payloads(&[payload]);
    assert_eq!(out.outcomes[0].1, Outcome::Rejected(Rejection::Malformed));
    assert_eq!(out.outcomes[1].1, Outcome::Applied);
    // The fee left the supply.
    assert_eq!(
        w.ledger.asset(&AssetId::NATIVE).unwrap().supply,
        3 * GENESIS_AMOUNT - 10
    );
}

fn def(name: &str, class: AssetClass, issuer: &schnorrkel::Keypair, mintable: bool) -> AssetDef {
    AssetDef {
        name: name.into(),
        class,
        issuer: pk(issuer),
        mintable,
    }
}

#[test]
fn fungible_assets_issue_mint_transfer_burn() {
    let mut w = World::new(1, 2);
    let (a, issuer, b) = (keypair(0), keypair(50), keypair(51));
    let g = w.genesis_output(0);
    let fixed = AssetId::issued(&g, 0);
    let coin = |asset: AssetId, owner: &schnorrkel::Keypair, v: u128| Output {
        owner: pk(owner),
        asset,
        value: Value::Amount(v),
        host: None,
    };
    // Issue a fixed-supply asset and mint all of it in the same transaction.
    let t = w.sign(
        w.body(
            vec![g],
            vec![w.native(&a, GENESIS_AMOUNT, 0), coin(fixed, &b, 500)],
            vec![
                Action::Issue(def(
                    "USD",
                    AssetClass::Fungible { precision: 2 },
                    &issuer,
                    false,
                )),
                Action::Mint {
                    asset: fixed,
                    amount: 500,
                },
            ],
        ),
        &[&a, &issuer],
    );
    assert_eq!(
        single(&w.apply(std::slice::from_ref(&t))),
        &Outcome::Applied
    );
    let st = w.ledger.asset(&fixed).unwrap();
    assert_eq!((st.supply, st.def.name.as_str()), (500, "USD"));

    // Minting later is refused; the issuer's signature is required anyway.
    let native_out = output_id(&t.id(), 0);
    let usd_out = output_id(&t.id(), 1);
    let t = w.sign(
        w.body(
            vec![native_out],
            vec![w.native(&a, GENESIS_AMOUNT, 0), coin(fixed, &a, 1)],
            vec![Action::Mint {
                asset: fixed,
                amount: 1,
            }],
        ),
        &[&a, &issuer],
    );
    assert_eq!(rejected(single(&w.apply(&[t]))), &Rejection::NotMintable(0));

    // Transfer 200, burn 100, keep 200: supply drops to 400.
    let t = w.sign(
        w.body(
            vec![usd_out],
            vec![coin(fixed, &a, 200), coin(fixed, &b, 200)],
            vec![Action::Burn {
                asset: fixed,
                amount: 100,
            }],
        ),
        &[&b],
    );
    assert_eq!(single(&w.apply(&[t])), &Outcome::Applied);
    assert_eq!(w.ledger.asset(&fixed).unwrap().supply, 400);

    // A mintable asset: the issuer mints later; without its signature the
    // transaction is refused.
    let g1 = w.genesis_output(1);
    let m = AssetId::issued(&native_out, 0);
    let t = w.sign(
        w.body(
            vec![native_out],
            vec![w.native(&a, GENESIS_AMOUNT, 0)],
            vec![Action::Issue(def(
                "PTS",
                AssetClass::Fungible { precision: 0 },
                &issuer,
                true,
            ))],
        ),
        &[&a, &issuer],
    );
    let native2 = output_id(&t.id(), 0);
    assert_eq!(single(&w.apply(&[t])), &Outcome::Applied);
    let without = w.sign(
        w.body(
            vec![g1],
            vec![w.native(&b, GENESIS_AMOUNT, 0), coin(m, &b, 9)],
            vec![Action::Mint {
                asset: m,
                amount: 9,
            }],
        ),
        &[&keypair(1)],
    );
    assert_eq!(
        rejected(single(&w.apply(&[without]))),
        &Rejection::SignersMismatch
    );
    let with = w.sign(
        w.body(
            vec![native2],
            vec![w.native(&a, GENESIS_AMOUNT, 0), coin(m, &b, 9)],
            vec![Action::Mint {
                asset: m,
                amount: 9,
            }],
        ),
        &[&a, &issuer],
    );
    assert_eq!(single(&w.apply(&[with])), &Outcome::Applied);
    assert_eq!(w.ledger.asset(&m).unwrap().supply, 9);
}

#[test]
fn unique_items_exist_once() {
    let mut w = World::new(1, 1);
    let (a, issuer) = (keypair(0), keypair(60));
    let g = w.genesis_output(0);
    let tickets = AssetId::issued(&g, 0);
    let item = |owner: &schnorrkel::Keypair, id: u8| Output {
        owner: pk(owner),
        asset: tickets,
        value: Value::Item(Hash([id; 32])),
        host: None,
    };
    let t = w.sign(
        w.body(
            vec![g],
            vec![w.native(&a, GENESIS_AMOUNT, 0), item(&a, 1), item(&a, 2)],
            vec![
                Action::Issue(def("tickets", AssetClass::Unique, &issuer, true)),
                Action::MintItem {
                    asset: tickets,
                    item: Hash([1; 32]),
                },
                Action::MintItem {
                    asset: tickets,
                    item: Hash([2; 32]),
                },
            ],
        ),
        &[&a, &issuer],
    );
    assert_eq!(
        single(&w.apply(std::slice::from_ref(&t))),
        &Outcome::Applied
    );
    let (n, i1, i2) = (
        output_id(&t.id(), 0),
        output_id(&t.id(), 1),
        output_id(&t.id(), 2),
    );
    assert_eq!(w.ledger.asset(&tickets).unwrap().supply, 2);

    // Minting item 1 again fails; so does duplicating it in outputs.
    let again = w.sign(
        w.body(
            vec![n],
            vec![w.native(&a, GENESIS_AMOUNT, 0), item(&a, 1)],
            vec![Action::MintItem {
                asset: tickets,
                item: Hash([1; 32]),
            }],
        ),
        &[&a, &issuer],
    );
    assert_eq!(
        rejected(single(&w.apply(&[again]))),
        &Rejection::ItemExists(0)
    );
    let dup = w.sign(
        w.body(vec![i1], vec![item(&a, 1), item(&a, 1)], vec![]),
        &[&a],
    );
    assert_eq!(
        rejected(single(&w.apply(&[dup]))),
        &Rejection::ValueMismatch(tickets)
    );
    // An item cannot turn into another.
    let swap = w.sign(w.body(vec![i1], vec![item(&a, 3)], vec![]), &[&a]);
    assert_eq!(
        rejected(single(&w.apply(&[swap]))),
        &Rejection::ValueMismatch(tickets)
    );
    // Burn item 2; it can never be minted again.
    let burn = w.sign(
        w.body(
            vec![i2],
            vec![],
            vec![Action::BurnItem {
                asset: tickets,
                item: Hash([2; 32]),
            }],
        ),
        &[&a],
    );
    assert_eq!(single(&w.apply(&[burn])), &Outcome::Applied);
    assert!(matches!(
        w.ledger.item(&tickets, &Hash([2; 32])),
        Some(ItemState::Burned { .. })
    ));
    assert_eq!(w.ledger.asset(&tickets).unwrap().supply, 1);
    let remint = w.sign(
        w.body(
            vec![n],
            vec![w.native(&a, GENESIS_AMOUNT, 0), item(&a, 2)],
            vec![Action::MintItem {
                asset: tickets,
                item: Hash([2; 32]),
            }],
        ),
        &[&a, &issuer],
    );
    assert_eq!(
        rejected(single(&w.apply(&[remint]))),
        &Rejection::ItemExists(0)
    );
}

#[test]
fn peers_register_host_stake_and_retire() {
    let mut w = World::new(2, 3);
    let a = keypair(0);
    let newcomer = Signer::from_seed([77; 32], [1; 32]);
    let newkey = newcomer.key();
    let nk = schnorrkel::MiniSecretKey::from_bytes(&[77; 32])
        .unwrap()
        .expand_to_keypair(schnorrkel::ExpansionMode::Ed25519);
    let g = w.genesis_output(0);
    let register = |name: &str| Action::RegisterPeer {
        name: name.into(),
        key: newkey,
        addr: "127.0.0.1:7100".parse().unwrap(),
    };
    // Name taken; then a valid registration that also hosts stake with it.
    let taken = w.sign(
        w.body(
            vec![g],
            vec![w.native(&a, GENESIS_AMOUNT, 0)],
            vec![register("peer1")],
        ),
        &[&a, &nk],
    );
    assert_eq!(
        rejected(single(&w.apply(&[taken]))),
        &Rejection::NameTaken(0)
    );
    let mut stake = w.native(&a, GENESIS_AMOUNT, 0);
    stake.host = Some(newkey);
    let t = w.sign(
        w.body(vec![g], vec![stake], vec![register("gamma")]),
        &[&a, &nk],
    );
    assert_eq!(
        single(&w.apply(std::slice::from_ref(&t))),
        &Outcome::Applied
    );
    assert_eq!(w.ledger.peer_by_name("gamma").unwrap().key, newkey);
    assert_eq!(w.ledger.hosted(&newkey), GENESIS_AMOUNT);
    let table = w.ledger.stake_table().unwrap();
    assert_eq!(table.len(), 3);
    assert!(table.index_of(&newkey).is_some());

    // The same key cannot register twice.
    let g1 = w.genesis_output(1);
    let twice = w.sign(
        w.body(
            vec![g1],
            vec![w.native(&keypair(1), GENESIS_AMOUNT, 0)],
            vec![Action::RegisterPeer {
                name: "delta".into(),
                key: newkey,
                addr: "127.0.0.1:7101".parse().unwrap(),
            }],
        ),
        &[&keypair(1), &nk],
    );
    assert_eq!(
        rejected(single(&w.apply(&[twice]))),
        &Rejection::KeyRegistered(0)
    );

    // Move the address, then retire: out of the committee, name kept.
    let out = output_id(&t.id(), 0);
    let mv = w.sign(
        w.body(
            vec![out],
            vec![w.native(&a, GENESIS_AMOUNT, 0)],
            vec![Action::UpdatePeer {
                key: newkey,
                addr: "127.0.0.1:7200".parse().unwrap(),
            }],
        ),
        &[&a, &nk],
    );
    assert_eq!(
        single(&w.apply(std::slice::from_ref(&mv))),
        &Outcome::Applied
    );
    assert_eq!(w.ledger.peer(&newkey).unwrap().addr.port(), 7200);
    let out = output_id(&mv.id(), 0);
    let mut restake = w.native(&a, GENESIS_AMOUNT, 1);
    restake.host = Some(w.peers[1].key());
    let retire = w.sign(
        w.body(
            vec![out],
            vec![restake],
            vec![Action::RetirePeer { key: newkey }],
        ),
        &[&a, &nk],
    );
    assert_eq!(single(&w.apply(&[retire])), &Outcome::Applied);
    assert!(matches!(
        w.ledger.peer(&newkey).unwrap().status,
        PeerStatus::Retired(_)
    ));
    assert_eq!(w.ledger.stake_table().unwrap().len(), 2);
    assert!(
        w.ledger.peer_by_name("gamma").is_some(),
        "the name stays taken"
    );
}

#[test]
fn min_share_leaves_small_peers_out() {
    let w = World::with_params(
        3,
        4,
        Params {
            min_share_ppm: 300_000,
            ..Params::default()
        },
    );
    // Hosted: peer0 2e6 (wallets 0, 3), peer1 1e6, peer2 1e6 of 4e6: all
    // at least 25%, but only peer0 reaches 30%.
    let c = w.ledger.stake_table().unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c.key(0), Some(&w.peers[0].key()));
}

#[test]
fn two_appliers_agree_on_roots_and_roots_move() {
    let mut w1 = World::new(2, 4);
    let mut w2 = World::new(2, 4);
    assert_eq!(w1.ledger.roots(), w2.ledger.roots());
    let a = keypair(0);
    let before = w1.ledger.roots().clone();
    let t = w1.sign(
        w1.body(
            vec![w1.genesis_output(0)],
            vec![w1.native(&a, GENESIS_AMOUNT, 1)],
            vec![],
        ),
        &[&a],
    );
    let o1 = w1.apply(std::slice::from_ref(&t));
    let o2 = w2.apply(&[t]);
    assert_eq!(o1.roots, o2.roots);
    assert_ne!(o1.roots.outputs, before.outputs);
    assert_ne!(o1.roots.history, before.history);
    assert_eq!(
        o1.roots.registry, before.registry,
        "no asset or peer changed"
    );
    // The history proves the earlier root is a prefix of the later one.
    let proof = w1
        .ledger
        .history()
        .consistency_proof(before.history_leaves)
        .unwrap();
    assert!(proof
        .verify(
            &before.history,
            before.history_leaves,
            &o1.roots.history,
            o1.roots.history_leaves
        )
        .is_ok());
}

#[test]
fn checkpoints_need_a_quorum_of_valid_signatures() {
    let w = World::new(4, 4);
    let committee = w.ledger.stake_table().unwrap();
    let cp = Checkpoint {
        chain: w.chain,
        height: 0,
        round: 0,
        roots: w.ledger.roots().clone(),
    };
    let mut peers: Vec<Signer> = (0..4)
        .map(|i| Signer::from_seed([i as u8 + 1; 32], [9; 32]))
        .collect();
    let mut cert = Certified::new(cp.clone());
    for p in peers.iter_mut().take(2) {
        let i = committee.index_of(&p.key()).unwrap();
        cert.add(i, cp.sign(p));
    }
    let chain = CommitteeChain::new(w.chain, committee.clone());
    assert!(matches!(
        chain.verify_checkpoint(&cert),
        Err(CertError::NoQuorum {
            signed: _,
            total: _
        })
    ));
    let i = committee.index_of(&peers[2].key()).unwrap();
    cert.add(i, cp.sign(&mut peers[2]));
    assert_eq!(chain.verify_checkpoint(&cert), Ok(()));

    let mut tampered = cert.clone();
    tampered.statement.height = 1;
    assert!(matches!(
        chain.verify_checkpoint(&tampered),
        Err(CertError::BadSignature { .. })
    ));
    let mut junk = cert.clone();
    junk.signatures.push((99, junk.signatures[0].1));
    assert_eq!(chain.verify_checkpoint(&junk), Err(CertError::BadSigners));
    let mut foreign = cert.clone();
    foreign.statement.chain = Hash([5; 32]);
    assert_eq!(
        chain.verify_checkpoint(&foreign),
        Err(CertError::WrongChain)
    );
}

#[test]
fn committee_hand_overs_walk_from_genesis() {
    let chain_id = Hash([4; 32]);
    let mut signers: Vec<Signer> = (0..6)
        .map(|i| Signer::from_seed([i as u8 + 10; 32], [9; 32]))
        .collect();
    let members = |range: std::ops::Range<usize>, signers: &[Signer]| {
        let c = Committee::new(
            signers[range]
                .iter()
                .map(|s| Member {
                    key: s.key(),
                    stake: 10,
                })
                .collect(),
        )
        .unwrap();
        c
    };
    let genesis = members(0..4, &signers);
    let next = members(2..6, &signers);
    let mut chain = CommitteeChain::new(chain_id, genesis.clone());
    let h = Handover {
        chain: chain_id,
        snapshot: SNAPSHOT_INTERVAL,
        members: next.members().to_vec(),
    };
    let mut cert = Certified::new(h.clone());
    // Signed by the new committee's own members 4 and 5 plus member 2:
    // only one of those (2) is in the genesis committee.
    for s in signers.iter_mut().skip(4) {
        if let Some(i) = genesis.index_of(&s.key()) {
            cert.add(i, h.sign(s));
        }
    }
    assert!(chain.extend(&cert).is_err(), "no genesis signatures");
    for s in signers.iter_mut().take(3) {
        let i = genesis.index_of(&s.key()).unwrap();
        cert.add(i, h.sign(s));
    }
    chain.extend(&cert).unwrap();
    assert_eq!(chain.latest(), SNAPSHOT_INTERVAL);
    assert_eq!(chain.committee_for(5096).unwrap(), &next);
    assert_eq!(chain.committee_for(5095).unwrap(), &genesis);
    // The same hand-over again is out of order.
    assert!(matches!(
        chain.extend(&cert),
        Err(CertError::OutOfOrder { .. })
    ));
}

#[test]
fn three_party_swap_is_one_transaction_with_one_signature() {
    let mut w = World::new(1, 3);
    let parties = [keypair(0), keypair(1), keypair(2)];
    // Each party issues its own asset from its genesis output.
    let mut holdings = Vec::new();
    for (i, p) in parties.iter().enumerate() {
        let g = w.genesis_output(i as u32);
        let asset = AssetId::issued(&g, 0);
        let t = w.sign(
            w.body(
                vec![g],
                vec![
                    w.native(p, GENESIS_AMOUNT, 0),
                    Output {
                        owner: pk(p),
                        asset,
                        value: Value::Amount(100 * (i as u128 + 1)),
                        host: None,
                    },
                ],
                vec![
                    Action::Issue(def(
                        &format!("A{i}"),
                        AssetClass::Fungible { precision: 0 },
                        p,
                        false,
                    )),
                    Action::Mint {
                        asset,
                        amount: 100 * (i as u128 + 1),
                    },
                ],
            ),
            &[p],
        );
        assert_eq!(
            single(&w.apply(std::slice::from_ref(&t))),
            &Outcome::Applied
        );
        holdings.push((asset, output_id(&t.id(), 1), 100 * (i as u128 + 1)));
    }
    // Party i's asset goes to party i+1.
    let outputs: Vec<Output> = holdings
        .iter()
        .enumerate()
        .map(|(i, (asset, _, v))| Output {
            owner: pk(&parties[(i + 1) % 3]),
            asset: *asset,
            value: Value::Amount(*v),
            host: None,
        })
        .collect();
    let inputs: Vec<Hash> = holdings.iter().map(|(_, o, _)| *o).collect();
    let body = w.body(inputs.clone(), outputs.clone(), vec![]);
    let swap = w.sign(body.clone(), &[&parties[0], &parties[1], &parties[2]]);
    assert_eq!(swap.body.signers.len(), 3);
    assert!(
        dag::ledger::multisig::verify_claim(&dag::ledger::multisig::SignatureClaim {
            signers: swap.body.signers.clone(),
            aggregate: swap.body.aggregate,
            digest: swap.id(),
            signature: swap.signature,
        })
        .is_ok()
    );

    // Tampering with any input, output or the signature fails.
    let mut t = swap.clone();
    t.body.inputs.swap(0, 1);
    let mut t2 = swap.clone();
    t2.body.outputs[2].value = Value::Amount(301);
    let mut t3 = swap.clone();
    t3.body.outputs[0].owner = pk(&parties[2]);
    let mut t4 = swap.clone();
    t4.signature.0[40] ^= 0x10;
    let mut t5 = swap.clone();
    t5.body.aggregate = pk(&parties[0]);
    for bad in [t, t2, t3, t4, t5] {
        assert_eq!(rejected(single(&w.apply(&[bad]))), &Rejection::BadSignature);
    }
    // Two of the three cannot sign for all three inputs.
    let partial = w.sign(body, &[&parties[0], &parties[1]]);
    assert_eq!(
        rejected(single(&w.apply(&[partial]))),
        &Rejection::SignersMismatch
    );

    assert_eq!(
        single(&w.apply(std::slice::from_ref(&swap))),
        &Outcome::Applied
    );
    for (i, (asset, _, v)) in holdings.iter().enumerate() {
        let o = w
            .ledger
            .output(&output_id(&swap.id(), i as u32))
            .unwrap()
            .unwrap();
        assert_eq!(o.output.owner, pk(&parties[(i + 1) % 3]));
        assert_eq!(
            (o.output.asset, o.output.value),
            (*asset, Value::Amount(*v))
        );
    }
}

#[test]
fn trusted_admission_trusts_only_the_exact_transaction() {
    use dag::ledger::admission::{authorize_batch_trusting, decode_payload, Admitted};
    let w = World::new(1, 1);
    let a = keypair(0);
    let good = w.sign(
        w.body(
            vec![w.genesis_output(0)],
            vec![w.native(&a, GENESIS_AMOUNT, 0)],
            vec![],
        ),
        &[&a],
    );
    let mut forged = good.clone();
    forged.signature.0[9] ^= 1; // same id (the body), another signature
    assert_eq!(forged.id(), good.id());
    let payload: Vec<u8> = [&good, &forged]
        .iter()
        .flat_map(|t| dag::ledger::encode_payload_item(t))
        .collect();
    let items = decode_payload(&payload, 65536);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
    let trusted = |tx: &dag::ledger::Transaction, id: &Hash| {
        *id == good.id() && tx.signature == good.signature
    };
    let out = authorize_batch_trusting(&items, &w.chain, &mut rng, &trusted);
    assert!(matches!(out[0], Admitted::Ok(_)));
    assert!(matches!(
        out[1],
        Admitted::Rejected {
            reason: Rejection::BadSignature,
            ..
        }
    ));
}
