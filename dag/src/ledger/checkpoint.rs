//! State roots, the checkpoints peers sign, and the certificates a wallet
//! checks alone.
//!
//! After every height the ledger has [`StateRoots`]. Peers sign
//! `Checkpoint { chain, height, round, roots }`; signatures from more than
//! 2/3 of the stake of the committee that governs `round` make a
//! [`Certified`] checkpoint. The committee changes only at snapshots: the
//! committee of snapshot `S − 4096` certifies a [`Handover`] naming the
//! committee of snapshot `S`, so a wallet that knows the genesis committee
//! walks to today's with one certificate per 4096 rounds
//! ([`CommitteeChain`]).

use crate::committee::{snapshot_of, Committee, Member, Round, SNAPSHOT_INTERVAL};
use crate::identity::{verify_digest, Bytes64, CryptoError, PeerKey, Signer};
use proofs::{Domain, Hash, Hasher};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Signing context of checkpoints.
pub const CHECKPOINT_CONTEXT: &[u8] = b"pos/ledger/checkpoint/v1";
/// Signing context of committee hand-overs.
pub const HANDOVER_CONTEXT: &[u8] = b"pos/ledger/handover/v1";
pub const CHECKPOINT_DOMAIN: Domain = Domain::new("pos/ledger/checkpoint/v1");
pub const HANDOVER_DOMAIN: Domain = Domain::new("pos/ledger/handover/v1");

/// The roots that commit the state after a height.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRoots {
    /// Root of the history (every ordered event and item outcome).
    pub history: Hash,
    /// Leaves in the history: a consistency proof needs the size.
    pub history_leaves: u64,
    /// Root of the output set.
    pub outputs: Hash,
    /// Root of the key index.
    pub keys: Hash,
    /// Root of the registry (assets, items, peers).
    pub registry: Hash,
}

/// What peers sign after each height.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub chain: Hash,
    pub height: u64,
    /// The height's leader round: its committee certifies.
    pub round: Round,
    pub roots: StateRoots,
}

/// The committee of snapshot `snapshot`, stated by the committee before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub chain: Hash,
    pub snapshot: Round,
    /// Sorted by key, as [`Committee`] orders them.
    pub members: Vec<Member>,
}

/// A statement peers sign.
pub trait Statement: Serialize + Sized {
    const CONTEXT: &'static [u8];
    const DOMAIN: Domain;
    fn chain(&self) -> Hash;
    /// The round whose committee certifies the statement.
    fn certifying_round(&self) -> Round;

    fn digest(&self) -> Hash {
        let mut h = Hasher::new(Self::DOMAIN);
        h.update(&proofs::encode(self));
        h.finalize()
    }

    fn sign(&self, signer: &mut Signer) -> Bytes64 {
        signer.sign_digest(Self::CONTEXT, &self.digest())
    }
}

impl Statement for Checkpoint {
    const CONTEXT: &'static [u8] = CHECKPOINT_CONTEXT;
    const DOMAIN: Domain = CHECKPOINT_DOMAIN;
    fn chain(&self) -> Hash {
        self.chain
    }
    fn certifying_round(&self) -> Round {
        self.round
    }
}

impl Statement for Handover {
    const CONTEXT: &'static [u8] = HANDOVER_CONTEXT;
    const DOMAIN: Domain = HANDOVER_DOMAIN;
    fn chain(&self) -> Hash {
        self.chain
    }
    /// The snapshot round itself: the committee governing it is that of
    /// snapshot `S − 4096`.
    fn certifying_round(&self) -> Round {
        self.snapshot
    }
}

/// A statement with signatures, each by the committee member at that index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certified<T> {
    pub statement: T,
    /// Strictly increasing member indices.
    pub signatures: Vec<(u32, Bytes64)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("the statement is for another chain")]
    WrongChain,
    #[error("signer indices are not strictly increasing or out of range")]
    BadSigners,
    #[error("signature of member {index} ({key:?}) does not verify: {error}")]
    BadSignature {
        index: u32,
        key: PeerKey,
        error: CryptoError,
    },
    #[error("signers hold {signed} of {total} stake: not more than 2/3")]
    NoQuorum { signed: u64, total: u64 },
    #[error("no committee known for snapshot {0}")]
    UnknownCommittee(Round),
    #[error("hand-over to snapshot {got} but {expected} is next")]
    OutOfOrder { got: Round, expected: Round },
    #[error("the hand-over's committee is not valid: {0}")]
    BadCommittee(String),
}

impl<T: Statement> Certified<T> {
    /// Collect signatures; call [`Certified::add`] for each.
    pub fn new(statement: T) -> Self {
        Certified {
            statement,
            signatures: Vec::new(),
        }
    }

    /// Add member `index`'s signature, keeping indices sorted; a second
    /// signature of one member replaces the first.
    pub fn add(&mut self, index: u32, sig: Bytes64) {
        match self.signatures.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(at) => self.signatures[at].1 = sig,
            Err(at) => self.signatures.insert(at, (index, sig)),
        }
    }

    /// Accept only with valid signatures of more than 2/3 of `committee`'s
    /// stake. Every listed signature must verify, so a certificate carries
    /// no junk.
    pub fn verify(&self, chain: &Hash, committee: &Committee) -> Result<(), CertError> {
        if self.statement.chain() != *chain {
            return Err(CertError::WrongChain);
        }
        if self.signatures.windows(2).any(|w| w[0].0 >= w[1].0)
            || self
                .signatures
                .last()
                .is_some_and(|(i, _)| *i as usize >= committee.len())
        {
            return Err(CertError::BadSigners);
        }
        let digest = self.statement.digest();
        let mut signed: u64 = 0;
        for (index, sig) in &self.signatures {
            let key = *committee.key(*index).expect("checked: in range");
            let public = key.to_public().map_err(|error| CertError::BadSignature {
                index: *index,
                key,
                error,
            })?;
            verify_digest(&public, T::CONTEXT, &digest, sig).map_err(|error| {
                CertError::BadSignature {
                    index: *index,
                    key,
                    error,
                }
            })?;
            signed += committee.stake(*index);
        }
        if !committee.is_quorum(signed) {
            return Err(CertError::NoQuorum {
                signed,
                total: committee.total(),
            });
        }
        Ok(())
    }
}

/// The committees a light client has verified, from genesis on.
#[derive(Clone, Debug)]
pub struct CommitteeChain {
    chain: Hash,
    committees: BTreeMap<Round, Committee>,
}

impl CommitteeChain {
    /// Start from the genesis committee (snapshot 0), which the genesis
    /// file fixes.
    pub fn new(chain: Hash, genesis: Committee) -> Self {
        let mut committees = BTreeMap::new();
        committees.insert(0, genesis);
        CommitteeChain { chain, committees }
    }

    /// The latest snapshot known.
    pub fn latest(&self) -> Round {
        *self
            .committees
            .keys()
            .next_back()
            .expect("genesis is always there")
    }

    pub fn committee_at(&self, snapshot: Round) -> Option<&Committee> {
        self.committees.get(&snapshot)
    }

    /// The committee governing `round`, if its snapshot is known.
    pub fn committee_for(&self, round: Round) -> Result<&Committee, CertError> {
        let s = snapshot_of(round);
        self.committees
            .get(&s)
            .ok_or(CertError::UnknownCommittee(s))
    }

    /// Take the next hand-over (snapshot `latest + 4096`), checked against
    /// the committee that governs its snapshot round.
    pub fn extend(&mut self, h: &Certified<Handover>) -> Result<(), CertError> {
        let expected = self.latest() + SNAPSHOT_INTERVAL;
        if h.statement.snapshot != expected {
            return Err(CertError::OutOfOrder {
                got: h.statement.snapshot,
                expected,
            });
        }
        let signers = self.committee_for(h.statement.certifying_round())?;
        h.verify(&self.chain, signers)?;
        let next = Committee::new(h.statement.members.clone())
            .map_err(|e| CertError::BadCommittee(e.to_string()))?;
        if next.members() != h.statement.members.as_slice() {
            return Err(CertError::BadCommittee(
                "members are not sorted by key".into(),
            ));
        }
        self.committees.insert(expected, next);
        Ok(())
    }

    /// Check a certified checkpoint against the committee of its round.
    pub fn verify_checkpoint(&self, c: &Certified<Checkpoint>) -> Result<(), CertError> {
        let committee = self.committee_for(c.statement.round)?;
        c.verify(&self.chain, committee)
    }
}
