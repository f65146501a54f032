//! Event validation: every rule rejects with its own typed error.

use dag::event::{EquivocationEvidence, EventLimits, ValidationContext};
use dag::identity::Bytes64;
use dag::{Committee, Event, EventError, EventRef, Member, Signer, VerifiedEvent};
use proofs::Hash;

struct Net {
    signers: Vec<Signer>,
    committee: Committee,
    chain: Hash,
    seed: Hash,
}

fn net(n: u8) -> Net {
    let signers: Vec<Signer> = (0..n)
        .map(|i| Signer::from_seed([i + 1; 32], [i; 32]))
        .collect();
    let committee = Committee::new(
        signers
            .iter()
            .map(|s| Member {
                key: s.key(),
                stake: 10,
            })
            .collect(),
    )
    .unwrap();
    Net {
        signers,
        committee,
        chain: Hash([1; 32]),
        seed: Hash([2; 32]),
    }
}

impl Net {
    fn ctx(&self) -> ValidationContext<'_> {
        ValidationContext {
            chain: self.chain,
            limits: EventLimits {
                max_payload_bytes: 100,
            },
            committee: &self.committee,
            prev_committee: Some(&self.committee),
            seed: &self.seed,
        }
    }

    fn author(&self, i: usize) -> u32 {
        self.committee.index_of(&self.signers[i].key()).unwrap()
    }

    fn genesis(&mut self, i: usize) -> Event {
        let (chain, seed) = (self.chain, self.seed);
        Event::create(&mut self.signers[i], chain, &seed, 0, vec![], vec![], 0).0
    }

    fn event(&mut self, i: usize, round: u64, parents: Vec<EventRef>, payload: Vec<u8>) -> Event {
        let (chain, seed) = (self.chain, self.seed);
        Event::create(
            &mut self.signers[i],
            chain,
            &seed,
            round,
            parents,
            payload,
            0,
        )
        .0
    }

    fn refs(&mut self, who: &[usize]) -> Vec<EventRef> {
        who.iter()
            .map(|&i| {
                let e = self.genesis(i);
                EventRef {
                    round: 0,
                    author: self.author(i),
                    id: e.id(),
                }
            })
            .collect()
    }
}

#[test]
fn a_good_event_verifies_and_round_trips() {
    let mut n = net(4);
    let parents = n.refs(&[0, 1, 2]);
    let e = n.event(0, 1, parents, vec![7; 10]);
    let bytes = e.encode();
    let back = Event::decode(&bytes, &EventLimits::default()).unwrap();
    assert_eq!(back, e);
    let v = VerifiedEvent::verify(e, &n.ctx()).unwrap();
    assert_eq!(v.author, n.author(0));
}

/// One serialization gives both the encoding and the id, for events with
/// and without parents and payloads of several sizes (a length prefix of
/// one, two and three bytes).
#[test]
fn encoding_and_id_from_one_serialization() {
    let mut n = net(4);
    let parents = n.refs(&[0, 1, 2]);
    for (parents, len) in [(vec![], 0), (parents.clone(), 10), (parents, 300)] {
        let e = n.event(1, u64::from(!parents.is_empty()), parents, vec![9; len]);
        assert_eq!(e.encode_with_id(), (e.encode(), e.id()));
    }
    let mut big = n.event(2, 0, vec![], vec![]);
    big.body.payload = vec![3; 70_000];
    assert_eq!(big.encode_with_id(), (big.encode(), big.id()));
}

/// The payload is written as one byte string; the encoding is still the
/// body's fields in order with the payload as a sequence of u8, as before.
#[test]
fn the_payload_encodes_as_a_sequence_of_u8() {
    let mut n = net(4);
    let parents = n.refs(&[0, 1, 2]);
    for len in [0usize, 1, 127, 128, 70_000] {
        let e = n.event(1, 1, parents.clone(), vec![5; len]);
        let b = &e.body;
        let plain = proofs::encode(&(
            (b.chain, b.creator, b.round, &b.parents, &b.payload),
            (b.ticket, b.time_ms),
            e.signature,
        ));
        assert_eq!(e.encode(), plain, "payload of {len} bytes");
    }
}

#[test]
fn decoder_rejects_trailing_and_truncated_bytes() {
    let mut n = net(4);
    let e = n.genesis(1);
    let mut bytes = e.encode();
    bytes.push(0);
    assert!(matches!(
        Event::decode(&bytes, &EventLimits::default()),
        Err(EventError::Decode(_))
    ));
    bytes.truncate(bytes.len() - 5);
    assert!(matches!(
        Event::decode(&bytes, &EventLimits::default()),
        Err(EventError::Decode(_))
    ));
}

#[test]
fn bad_signature_is_rejected() {
    let mut n = net(4);
    let mut e = n.genesis(0);
    e.signature = Bytes64([0; 64]);
    assert!(matches!(
        VerifiedEvent::verify(e.clone(), &n.ctx()),
        Err(EventError::Signature(_))
    ));
    // A valid signature over different content.
    let other = n.genesis(1);
    e.signature = other.signature;
    assert!(matches!(
        VerifiedEvent::verify(e, &n.ctx()),
        Err(EventError::Signature(_))
    ));
}

#[test]
fn bad_vrf_proof_is_rejected() {
    let mut n = net(4);
    // A ticket for another round, re-signed so only the VRF is wrong.
    let good = n.event(0, 5, vec![], vec![]);
    let mut body = n.genesis(0).body;
    body.ticket = good.body.ticket;
    let sig = n.signers[0].sign_digest(dag::identity::EVENT_CONTEXT, &body.id());
    let e = Event {
        body,
        signature: sig,
    };
    assert!(matches!(
        VerifiedEvent::verify(e, &n.ctx()),
        Err(EventError::Vrf(_))
    ));
}

#[test]
fn parents_below_quorum_are_rejected() {
    let mut n = net(4);
    let parents = n.refs(&[0, 1]); // 20 of 40 stake: not more than 2/3
    let e = n.event(0, 1, parents, vec![]);
    assert_eq!(
        VerifiedEvent::verify(e, &n.ctx()).unwrap_err(),
        EventError::ParentsBelowQuorum
    );
}

#[test]
fn wrong_rounds_are_rejected() {
    let mut n = net(4);
    // Parents two rounds down that are not the creator's own.
    let mut parents = n.refs(&[0, 1, 2]);
    let e = n.event(3, 2, parents.clone(), vec![]);
    assert!(matches!(
        VerifiedEvent::verify(e, &n.ctx()),
        Err(EventError::ForeignOlderParent) | Err(EventError::ParentsBelowQuorum)
    ));
    // A parent from the same round.
    parents[0].round = 1;
    let e = n.event(0, 1, parents, vec![]);
    assert!(matches!(
        VerifiedEvent::verify(e, &n.ctx()),
        Err(EventError::WrongParentRound { .. }) | Err(EventError::ParentsNotCanonical)
    ));
    // Genesis events have no parents.
    let parents = n.refs(&[0, 1, 2]);
    let e = n.event(0, 0, parents, vec![]);
    assert_eq!(
        VerifiedEvent::verify(e, &n.ctx()).unwrap_err(),
        EventError::GenesisWithParents
    );
}

#[test]
fn duplicate_or_unsorted_parents_are_rejected() {
    let mut n = net(4);
    let mut parents = n.refs(&[0, 1, 2]);
    let e = n.event(0, 1, parents.clone(), vec![]);
    let mut body = e.body.clone();
    body.parents.swap(0, 1);
    let sig = n.signers[0].sign_digest(dag::identity::EVENT_CONTEXT, &body.id());
    let e = Event {
        body,
        signature: sig,
    };
    assert_eq!(
        VerifiedEvent::verify(e, &n.ctx()).unwrap_err(),
        EventError::ParentsNotCanonical
    );
    parents[2] = parents[1];
    let e = n.event(0, 1, parents, vec![]);
    assert_eq!(
        VerifiedEvent::verify(e, &n.ctx()).unwrap_err(),
        EventError::ParentsNotCanonical
    );
}

#[test]
fn oversized_payload_is_rejected() {
    let mut n = net(4);
    let parents = n.refs(&[0, 1, 2]);
    let e = n.event(0, 1, parents, vec![0; 101]);
    assert_eq!(
        VerifiedEvent::verify(e, &n.ctx()).unwrap_err(),
        EventError::PayloadTooLarge { len: 101, max: 100 }
    );
}

#[test]
fn strangers_and_other_chains_are_rejected() {
    let mut n = net(4);
    let mut stranger = Signer::from_seed([99; 32], [0; 32]);
    let e = Event::create(&mut stranger, n.chain, &n.seed, 0, vec![], vec![], 0).0;
    assert!(matches!(
        VerifiedEvent::verify(e, &n.ctx()),
        Err(EventError::NotInCommittee(..))
    ));
    let e = Event::create(
        &mut n.signers[0],
        Hash([9; 32]),
        &Hash([2; 32]),
        0,
        vec![],
        vec![],
        0,
    )
    .0;
    assert_eq!(
        VerifiedEvent::verify(e, &n.ctx()).unwrap_err(),
        EventError::WrongChain
    );
}

#[test]
fn equivocation_evidence_checks_itself() {
    let mut n = net(4);
    let a = n.event(2, 0, vec![], vec![1]);
    let b = n.event(2, 0, vec![], vec![2]);
    assert!(EquivocationEvidence {
        first: a.clone(),
        second: b.clone()
    }
    .is_valid());
    assert!(!EquivocationEvidence {
        first: a.clone(),
        second: a.clone()
    }
    .is_valid());
    let c = n.event(1, 0, vec![], vec![2]);
    assert!(!EquivocationEvidence {
        first: a,
        second: c
    }
    .is_valid());
}
