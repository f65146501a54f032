//! Events: the signed vertices of the blockdag, and their validation.
//!
//! An event's id is the domain-separated hash of its body (everything but
//! the signature); the creator signs the id. Validation here is everything
//! that can be checked from the event and the committees alone; whether the
//! parents exist is the DAG's business.

use crate::committee::{Committee, Round};
use crate::identity::{
    verify_digest, Bytes64, CryptoError, EventSigner, PeerKey, VrfTicket, EVENT_CONTEXT,
};
use proofs::{Domain, Hash};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use thiserror::Error;

pub type EventId = Hash;

/// Domain of event ids.
pub const EVENT_DOMAIN: Domain = Domain::new("pos/dag/event/v1");

/// A reference to a parent: its round and author (index in the committee
/// of that round) travel with its id, so quorum and authorship rules can be
/// checked before the parent itself has arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventRef {
    pub round: Round,
    pub author: u32,
    pub id: EventId,
}

/// The signed content of an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBody {
    /// The chain id (genesis hash): an event of another chain never validates.
    pub chain: Hash,
    pub creator: PeerKey,
    pub round: Round,
    /// Sorted by (round, author), strictly increasing.
    pub parents: Vec<EventRef>,
    /// Opaque to consensus (transactions or batch references). Written as
    /// bytes, not as a sequence of u8: the same postcard encoding, copied
    /// in one piece instead of byte by byte.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub ticket: VrfTicket,
    /// Creation time, milliseconds since the Unix epoch (informational).
    pub time_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub body: EventBody,
    pub signature: Bytes64,
}

impl EventBody {
    pub fn id(&self) -> EventId {
        Hash::of(EVENT_DOMAIN, &proofs::encode(self))
    }
}

impl Event {
    /// Build and sign an event; returns it with its ticket value.
    /// `parents` are sorted here into their canonical order.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        signer: &mut dyn EventSigner,
        chain: Hash,
        seed: &Hash,
        round: Round,
        mut parents: Vec<EventRef>,
        payload: Vec<u8>,
        time_ms: u64,
    ) -> (Event, u64) {
        parents.sort_by_key(|p| (p.round, p.author));
        let (ticket, ticket_value) = signer.vrf_ticket(seed, round);
        let body = EventBody {
            chain,
            creator: signer.key(),
            round,
            parents,
            payload,
            ticket,
            time_ms,
        };
        let signature = signer.sign_event(&body.id());
        (Event { body, signature }, ticket_value)
    }

    /// Decode an event from untrusted bytes (canonical encoding only).
    pub fn decode(bytes: &[u8], limits: &EventLimits) -> Result<Event, EventError> {
        // Body overhead (keys, ticket, a full parent list) stays far below this.
        let limit = limits.max_payload_bytes + 64 * 1024;
        proofs::decode(bytes, limit).map_err(|e| EventError::Decode(e.to_string()))
    }

    pub fn encode(&self) -> Vec<u8> {
        proofs::encode(self)
    }

    pub fn id(&self) -> EventId {
        self.body.id()
    }

    /// The event's encoding and its id from one serialization: postcard
    /// writes a struct as its fields in order and the signature as 64 bytes
    /// without a length, so the encoding is the body's followed by the
    /// signature, and the id hashes that prefix.
    pub fn encode_with_id(&self) -> (Vec<u8>, EventId) {
        let bytes = proofs::encode(self);
        let body = &bytes[..bytes.len().saturating_sub(64)];
        let id = Hash::of(EVENT_DOMAIN, body);
        debug_assert_eq!(id, self.id());
        (bytes, id)
    }

    pub fn round(&self) -> Round {
        self.body.round
    }
}

/// Limits that every peer applies identically (part of the chain's parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLimits {
    pub max_payload_bytes: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits {
            max_payload_bytes: 512 * 1024,
        }
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EventError {
    #[error("event of another chain")]
    WrongChain,
    #[error("creator {0:?} is not in the committee of round {1}")]
    NotInCommittee(PeerKey, Round),
    #[error("payload of {len} bytes exceeds {max}")]
    PayloadTooLarge { len: usize, max: usize },
    #[error("{0} parents is more than the committee allows")]
    TooManyParents(usize),
    #[error("round-0 events have no parents")]
    GenesisWithParents,
    #[error("parents are not sorted by (round, author) without repeats")]
    ParentsNotCanonical,
    #[error("parent in round {parent} is not below the event's round {round} minus one")]
    WrongParentRound { parent: Round, round: Round },
    #[error("parent author index {0} is outside its committee")]
    UnknownParentAuthor(u32),
    #[error("an older parent must be the creator's own previous event")]
    ForeignOlderParent,
    #[error("parents of the previous round carry too little stake")]
    ParentsBelowQuorum,
    #[error("no committee known for round {0}")]
    UnknownCommittee(Round),
    #[error("bad signature: {0}")]
    Signature(CryptoError),
    #[error("bad VRF ticket: {0}")]
    Vrf(CryptoError),
    #[error("parent {0:?} does not match its reference (round or author)")]
    ParentMismatch(EventId),
    #[error("parent {0:?} is not in the DAG")]
    MissingParent(EventId),
    #[error("round {round} is below the pruning horizon {horizon}")]
    BelowHorizon { round: Round, horizon: Round },
    #[error("encoded event exceeds its size limit or is malformed: {0}")]
    Decode(String),
}

/// What the committees of an event's round and of its parents' rounds say
/// about it: passed in by the caller, which owns the snapshots.
pub struct ValidationContext<'a> {
    pub chain: Hash,
    pub limits: EventLimits,
    /// Committee of the event's round.
    pub committee: &'a Committee,
    /// Committee of the previous round (ignored at round 0).
    pub prev_committee: Option<&'a Committee>,
    /// Epoch seed of the event's round.
    pub seed: &'a Hash,
}

/// An event whose structure, signature and VRF ticket have been checked,
/// with what the checks computed.
#[derive(Clone, Debug)]
pub struct VerifiedEvent {
    pub event: Arc<Event>,
    pub id: EventId,
    pub author: u32,
    pub ticket_value: u64,
}

impl VerifiedEvent {
    /// Structure, signature and VRF proof.
    pub fn verify(event: Event, ctx: &ValidationContext) -> Result<Self, EventError> {
        let id = event.id();
        Self::verify_identified(event, id, ctx)
    }

    /// [`VerifiedEvent::verify`] of an event whose id the caller computed
    /// already (`id` must be `event.id()`: hashing a large payload twice is
    /// what this saves).
    pub(crate) fn verify_identified(
        event: Event,
        id: EventId,
        ctx: &ValidationContext,
    ) -> Result<Self, EventError> {
        debug_assert_eq!(id, event.id());
        let author = check_structure(&event.body, ctx)?;
        let key = event
            .body
            .creator
            .to_public()
            .map_err(EventError::Signature)?;
        verify_digest(&key, EVENT_CONTEXT, &id, &event.signature).map_err(EventError::Signature)?;
        let ticket_value = event
            .body
            .ticket
            .verify(&key, ctx.seed, event.body.round)
            .map_err(EventError::Vrf)?;
        Ok(VerifiedEvent {
            event: Arc::new(event),
            id,
            author,
            ticket_value,
        })
    }

    /// Structure only, trusting a signature and VRF check done earlier by the
    /// caller (the simulator checks each event once, when it is created,
    /// because every core's check is the same pure function).
    pub fn with_checked_crypto(
        event: Arc<Event>,
        id: EventId,
        ticket_value: u64,
        ctx: &ValidationContext,
    ) -> Result<Self, EventError> {
        let author = check_structure(&event.body, ctx)?;
        Ok(VerifiedEvent {
            event,
            id,
            author,
            ticket_value,
        })
    }

    pub fn round(&self) -> Round {
        self.event.body.round
    }

    pub fn as_ref(&self) -> EventRef {
        EventRef {
            round: self.round(),
            author: self.author,
            id: self.id,
        }
    }
}

/// Everything that needs no cryptography and no other events; returns the
/// creator's index in the committee of the event's round.
fn check_structure(body: &EventBody, ctx: &ValidationContext) -> Result<u32, EventError> {
    if body.chain != ctx.chain {
        return Err(EventError::WrongChain);
    }
    let author = ctx
        .committee
        .index_of(&body.creator)
        .ok_or(EventError::NotInCommittee(body.creator, body.round))?;
    if body.payload.len() > ctx.limits.max_payload_bytes {
        return Err(EventError::PayloadTooLarge {
            len: body.payload.len(),
            max: ctx.limits.max_payload_bytes,
        });
    }
    if body.round == 0 {
        if !body.parents.is_empty() {
            return Err(EventError::GenesisWithParents);
        }
        return Ok(author);
    }
    let prev = ctx
        .prev_committee
        .ok_or(EventError::UnknownCommittee(body.round - 1))?;
    if body.parents.len() > prev.len() + 1 {
        return Err(EventError::TooManyParents(body.parents.len()));
    }
    if body
        .parents
        .windows(2)
        .any(|w| (w[0].round, w[0].author) >= (w[1].round, w[1].author))
    {
        return Err(EventError::ParentsNotCanonical);
    }
    let mut stake = 0u64;
    let mut older = 0;
    for p in &body.parents {
        if p.round + 1 == body.round {
            if p.author as usize >= prev.len() {
                return Err(EventError::UnknownParentAuthor(p.author));
            }
            stake += prev.stake(p.author);
        } else if p.round + 1 < body.round {
            // The creator's own previous event, when it lies further back
            // (the creator missed rounds). Its author index is in an older
            // committee, which the DAG checks when it has that parent.
            older += 1;
            if older > 1 {
                return Err(EventError::ForeignOlderParent);
            }
        } else {
            return Err(EventError::WrongParentRound {
                parent: p.round,
                round: body.round,
            });
        }
    }
    if !prev.is_quorum(stake) {
        return Err(EventError::ParentsBelowQuorum);
    }
    Ok(author)
}

/// Two signed events of one creator and round: proof of equivocation that
/// anyone can check with the creator's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EquivocationEvidence {
    pub first: Event,
    pub second: Event,
}

impl EquivocationEvidence {
    /// True when both events verify under the creator's key, share creator
    /// and round, and differ.
    pub fn is_valid(&self) -> bool {
        let (a, b) = (&self.first, &self.second);
        if a.body.creator != b.body.creator
            || a.body.round != b.body.round
            || a.body.chain != b.body.chain
        {
            return false;
        }
        let (ia, ib) = (a.id(), b.id());
        if ia == ib {
            return false;
        }
        let Ok(key) = a.body.creator.to_public() else {
            return false;
        };
        verify_digest(&key, EVENT_CONTEXT, &ia, &a.signature).is_ok()
            && verify_digest(&key, EVENT_CONTEXT, &ib, &b.signature).is_ok()
    }
}
