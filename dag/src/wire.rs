//! The messages peers send each other over their authenticated links.
//!
//! They live here, not in the daemon, so that anything speaking the
//! protocol (the peer, test harnesses, later the wallet for its own
//! messages) shares one definition and one decoder. Every message is one
//! canonical postcard value in one frame of the transport; the decoder
//! bounds the frame and every list inside it before anything else looks at
//! it, so a hostile frame costs at most its own size.

use crate::committee::{Round, MAX_COMMITTEE};
use crate::event::{Event, EventRef};
use crate::identity::{Bytes64, PeerKey};
use crate::ledger::apply::Outcome;
use crate::ledger::checkpoint::{Certified, Checkpoint, Handover};
use crate::ledger::light::{Inclusion, SyncAnswer, SyncRequest, MAX_SYNC_KEYS, MAX_SYNC_WATCH};
use crate::ledger::multisig::{Commitment, Cosignature, Reveal};
use crate::ledger::names::{NameVoucher, PayTo, ReceiveKey, WalletName, MAX_RECEIVE_KEYS};
use crate::ledger::peers::check_name;
use crate::ledger::swap::Offer;
use crate::ledger::transaction::{TxBody, TxId};
use crate::rendezvous::{IntroAnswer, Introduction, LinkOffer, PeerIntroduce, Reached, MAX_REASON};
use proofs::Hash;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The largest frame a peer accepts (a batch of events or transactions).
pub const MAX_PEER_MESSAGE: usize = 4 << 20;
/// Most events in one `Events` message.
pub const MAX_EVENTS_PER_MESSAGE: usize = 1024;
/// Most references in one `Fetch`.
pub const MAX_FETCH: usize = 1024;
/// Most transactions in one `Transactions` message.
pub const MAX_TXS_PER_MESSAGE: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// The highest round the sender holds per creator. The receiver answers
    /// with the events the sender lacks (the core's `events_missing_from`).
    Frontier(Vec<(PeerKey, Round)>),
    /// Events, oldest round first: new ones, or answers to a frontier or a
    /// fetch.
    Events(Vec<Event>),
    /// Events the sender lacks (parents of something it received).
    Fetch(Vec<EventRef>),
    /// Encoded transactions for the receiver's mempool: a transaction
    /// submitted to one peer reaches every proposer.
    Transactions(#[serde(with = "byte_lists")] Vec<Vec<u8>>),
    /// The sender's signature on the checkpoint after a height.
    CheckpointVote {
        checkpoint: Box<Checkpoint>,
        signature: Bytes64,
    },
    /// The sender's signature on the committee of a snapshot.
    HandoverVote {
        handover: Box<Handover>,
        signature: Bytes64,
    },
    /// "I hold the state at this certified height": sent to a peer whose
    /// frontier lies below what the sender's event log still holds. The
    /// hand-overs (oldest first) let the receiver walk from the genesis
    /// committee to the one that certified the checkpoint.
    SnapshotOffer(Box<SnapshotOffer>),
    /// Ask for the next chunk of the offered snapshot of `height`, from
    /// byte `offset`.
    SnapshotFetch { height: u64, offset: u64 },
    /// Part of a snapshot, answering a fetch: at most [`SNAPSHOT_CHUNK`]
    /// bytes.
    SnapshotChunk {
        height: u64,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Rendezvous: a wallet of the sender asks for a link to a wallet of
    /// the receiver.
    Introduce(Box<PeerIntroduce>),
    /// Rendezvous: the answer, for the attempt it names.
    IntroduceAnswer {
        attempt: [u8; 16],
        answer: Box<IntroAnswer>,
    },
    /// Relay: a datagram of the wallets' channel of `attempt` (opaque,
    /// encrypted end to end), on its way to the other wallet.
    Relay {
        attempt: [u8; 16],
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

/// A state snapshot a peer can send (see [`PeerMessage::SnapshotOffer`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotOffer {
    pub checkpoint: Certified<Checkpoint>,
    pub handovers: Vec<Certified<Handover>>,
    /// The encoded snapshot's length.
    pub bytes: u64,
}

/// Most bytes in one `SnapshotChunk`.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;
/// Most hand-overs in one offer (one per 4096 rounds: years of chain).
pub const MAX_HANDOVERS: usize = 1 << 14;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    #[error("message of {0} bytes exceeds {MAX_PEER_MESSAGE}")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("a list of {len} exceeds its limit of {max}")]
    ListTooLong { len: usize, max: usize },
}

impl PeerMessage {
    pub fn encode(&self) -> Vec<u8> {
        proofs::encode(self)
    }

    /// Decode one frame, canonical only, with every list bounded.
    pub fn decode(bytes: &[u8]) -> Result<PeerMessage, WireError> {
        if bytes.len() > MAX_PEER_MESSAGE {
            return Err(WireError::TooLarge(bytes.len()));
        }
        let msg: PeerMessage = proofs::decode(bytes, MAX_PEER_MESSAGE)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        let (len, max) = match &msg {
            PeerMessage::Frontier(f) => (f.len(), MAX_COMMITTEE),
            PeerMessage::Events(e) => (e.len(), MAX_EVENTS_PER_MESSAGE),
            PeerMessage::Fetch(f) => (f.len(), MAX_FETCH),
            PeerMessage::Transactions(t) => (t.len(), MAX_TXS_PER_MESSAGE),
            PeerMessage::CheckpointVote { .. }
            | PeerMessage::HandoverVote { .. }
            | PeerMessage::SnapshotFetch { .. } => (0, 0),
            PeerMessage::SnapshotOffer(o) => (o.handovers.len(), MAX_HANDOVERS),
            PeerMessage::SnapshotChunk { data, .. } => (data.len(), SNAPSHOT_CHUNK),
            PeerMessage::Introduce(i) => {
                i.offer.check().map_err(malformed)?;
                check_name(&i.to).map_err(malformed)?;
                check_name(&i.from.name).map_err(malformed)?;
                (0, 0)
            }
            PeerMessage::IntroduceAnswer { answer, .. } => {
                check_answer(answer)?;
                (0, 0)
            }
            PeerMessage::Relay { data, .. } => (data.len(), MAX_RELAYED),
        };
        if len > max {
            return Err(WireError::ListTooLong { len, max });
        }
        Ok(msg)
    }

    /// A short name for logs and per-kind counters.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::Frontier(_) => "frontier",
            PeerMessage::Events(_) => "events",
            PeerMessage::Fetch(_) => "fetch",
            PeerMessage::Transactions(_) => "transactions",
            PeerMessage::CheckpointVote { .. } => "checkpoint_vote",
            PeerMessage::HandoverVote { .. } => "handover_vote",
            PeerMessage::SnapshotOffer(_) => "snapshot_offer",
            PeerMessage::SnapshotFetch { .. } => "snapshot_fetch",
            PeerMessage::SnapshotChunk { .. } => "snapshot_chunk",
            PeerMessage::Introduce(_) => "introduce",
            PeerMessage::IntroduceAnswer { .. } => "introduce_answer",
            PeerMessage::Relay { .. } => "relay",
        }
    }
}

/// Most transactions one `Submit` carries.
pub const MAX_SUBMIT: usize = 1024;

/// Messages between a wallet (any key that is not a registered peer) and
/// the peer it is linked to. Both directions use this one enum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalletMessage {
    /// Wallet → peer: encoded transactions to check and propose.
    Submit(#[serde(with = "byte_lists")] Vec<Vec<u8>>),
    /// Peer → wallet: each submitted transaction's id and, if it was not
    /// taken, why (bad signature, mempool full…).
    Submitted(Vec<(TxId, Option<String>)>),
    /// Peer → wallet: transactions this wallet submitted that are now final,
    /// with their height and outcome.
    Finalized(Vec<(TxId, u64, Outcome)>),
    /// Wallet → peer: register login `name` for this link's key (or confirm
    /// it, if it already is).
    Register { name: String },
    /// Peer → wallet: the peer vouches for the name.
    Registered(NameVoucher),
    /// Wallet → peer: new outputs of keys and states of outputs, proven.
    Sync(SyncRequest),
    /// Peer → wallet: the proven answer (see `ledger::light`).
    Synced(Box<SyncAnswer>),
    /// Wallet → peer: the certified committee hand-overs after snapshot
    /// round `after`.
    GetHandovers { after: Round },
    /// Peer → wallet: up to [`MAX_WALLET_HANDOVERS`] of them, oldest first.
    Handovers(Vec<Certified<Handover>>),
    /// Peer → wallet: the last request (`what`: its variant) was refused.
    Refused { what: String, reason: String },
    /// Wallet → peer: receive keys for payers of login `name` (which must
    /// be this link's), replacing the stock the peer kept.
    PutReceiveKeys { name: String, keys: Vec<ReceiveKey> },
    /// Peer → wallet: how many receive keys it now keeps for the name.
    Stocked(u32),
    /// Wallet → peer: a key to pay login `name` of this peer.
    GetPayTo { name: String },
    /// Peer → wallet: the voucher and one receive key (handed out once).
    PayTo(PayTo),
    /// Wallet → peer: where transaction `tx`, final at `height`, sits in
    /// the history, proven against the latest certified checkpoint.
    GetInclusion { tx: Hash, height: u64 },
    /// Peer → wallet: the answer.
    Inclusion(Box<Inclusion>),
    /// Wallet → peer: this wallet (the link's key, registered as `name`)
    /// is online: introduce other wallets that ask for it.
    Listen { name: String },
    /// Peer → wallet: it will.
    Listening,
    /// Wallet → peer: introduce this wallet to wallet `to` (`login@peer`).
    Reach { to: String, offer: LinkOffer },
    /// Peer → wallet (unasked): another wallet wants a link; answer with
    /// [`WalletMessage::Answer`].
    Introduced(Box<Introduction>),
    /// Wallet → peer: this wallet's half for the attempt, or `None` to
    /// decline.
    Answer {
        attempt: [u8; 16],
        offer: Option<LinkOffer>,
    },
    /// Peer → wallet: the wallet asked for answered; punch now.
    Reached(Box<Reached>),
    /// Peer → wallet: the attempt cannot go on (unknown name, offline,
    /// declined, timed out).
    ReachFailed { attempt: [u8; 16], reason: String },
    /// Both ways: a datagram of the channel of `attempt` between this
    /// wallet and the other, relayed by the peers (opaque to them).
    Relay {
        attempt: [u8; 16],
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Wallet → peer: tell this link when a final height creates outputs
    /// for any of `keys` (replaces the link's earlier set; empty: stop).
    Subscribe { keys: Vec<PeerKey> },
    /// Peer → wallet: how many keys the link is now subscribed to.
    Subscribed(u32),
    /// Peer → wallet (unasked): final height `height` created outputs for
    /// these subscribed keys. A hint only: the wallet syncs to learn, with
    /// proofs, what they are.
    Incoming { height: u64, keys: Vec<PeerKey> },
}

/// Most keys one wallet link may subscribe to (as many as one sync asks
/// about).
pub const MAX_SUBSCRIBED: usize = MAX_SYNC_KEYS;

/// Longest relayed datagram.
pub const MAX_RELAYED: usize = 2048;

/// Most hand-overs in one `Handovers` message.
pub const MAX_WALLET_HANDOVERS: usize = 256;
/// Longest reason or request name in a `Refused`.
pub const MAX_REFUSAL: usize = 512;

impl WalletMessage {
    pub fn encode(&self) -> Vec<u8> {
        proofs::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<WalletMessage, WireError> {
        if bytes.len() > MAX_PEER_MESSAGE {
            return Err(WireError::TooLarge(bytes.len()));
        }
        let msg: WalletMessage = proofs::decode(bytes, MAX_PEER_MESSAGE)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        let len = match &msg {
            WalletMessage::Submit(t) => t.len(),
            WalletMessage::Submitted(t) => t.len(),
            WalletMessage::Finalized(t) => t.len(),
            WalletMessage::Register { name } => name.len().min(1),
            WalletMessage::Registered(v) => v.name.len().min(1),
            WalletMessage::Sync(r) => {
                r.check().map_err(|e| WireError::Malformed(e.to_string()))?;
                0
            }
            WalletMessage::Synced(a) => {
                if a.keys.len() > MAX_SYNC_KEYS || a.watched.len() > MAX_SYNC_WATCH {
                    return Err(WireError::Malformed("answer too large".into()));
                }
                0
            }
            WalletMessage::GetHandovers { .. } => 0,
            WalletMessage::Handovers(h) => {
                if h.len() > MAX_WALLET_HANDOVERS {
                    return Err(WireError::ListTooLong {
                        len: h.len(),
                        max: MAX_WALLET_HANDOVERS,
                    });
                }
                0
            }
            WalletMessage::PutReceiveKeys { name, keys } => {
                check_name(name).map_err(|e| WireError::Malformed(e.to_string()))?;
                if keys.len() > MAX_RECEIVE_KEYS {
                    return Err(WireError::ListTooLong {
                        len: keys.len(),
                        max: MAX_RECEIVE_KEYS,
                    });
                }
                0
            }
            WalletMessage::Stocked(_)
            | WalletMessage::GetInclusion { .. }
            | WalletMessage::Inclusion(_) => 0,
            WalletMessage::GetPayTo { name } => {
                check_name(name).map_err(|e| WireError::Malformed(e.to_string()))?;
                0
            }
            WalletMessage::PayTo(p) => {
                check_name(&p.voucher.name).map_err(|e| WireError::Malformed(e.to_string()))?;
                0
            }
            WalletMessage::Listen { name } => {
                check_name(name).map_err(malformed)?;
                0
            }
            WalletMessage::Listening => 0,
            WalletMessage::Reach { to, offer } => {
                WalletName::parse(to).map_err(malformed)?;
                offer.check().map_err(malformed)?;
                0
            }
            WalletMessage::Introduced(i) => {
                check_name(&i.from.name).map_err(malformed)?;
                i.offer.check().map_err(malformed)?;
                0
            }
            WalletMessage::Answer { offer, .. } => {
                if let Some(o) = offer {
                    o.check().map_err(malformed)?;
                }
                0
            }
            WalletMessage::Reached(r) => {
                check_name(&r.to.name).map_err(malformed)?;
                r.offer.check().map_err(malformed)?;
                0
            }
            WalletMessage::Relay { data, .. } => {
                if data.len() > MAX_RELAYED {
                    return Err(WireError::ListTooLong {
                        len: data.len(),
                        max: MAX_RELAYED,
                    });
                }
                0
            }
            WalletMessage::ReachFailed { reason, .. } => {
                if reason.len() > MAX_REASON {
                    return Err(WireError::Malformed("reason too long".into()));
                }
                0
            }
            WalletMessage::Refused { what, reason } => {
                if what.len() + reason.len() > MAX_REFUSAL {
                    return Err(WireError::Malformed("refusal too long".into()));
                }
                0
            }
            WalletMessage::Subscribed(_) => 0,
            WalletMessage::Subscribe { keys } | WalletMessage::Incoming { keys, .. } => {
                if keys.len() > MAX_SUBSCRIBED {
                    return Err(WireError::ListTooLong {
                        len: keys.len(),
                        max: MAX_SUBSCRIBED,
                    });
                }
                0
            }
        };
        if let WalletMessage::Register { name }
        | WalletMessage::Registered(NameVoucher { name, .. }) = &msg
        {
            check_name(name).map_err(|e| WireError::Malformed(e.to_string()))?;
        }
        if len > MAX_SUBMIT.max(MAX_TXS_PER_MESSAGE) {
            return Err(WireError::ListTooLong {
                len,
                max: MAX_SUBMIT.max(MAX_TXS_PER_MESSAGE),
            });
        }
        Ok(msg)
    }
}

/// Messages between two wallets over their own channel (direct or
/// relayed, end-to-end encrypted either way); no peer reads them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectMessage {
    /// Are you there? (The answer echoes the number.)
    Ping(u64),
    Pong(u64),
    /// Member → owner: let me into room `room`.
    RoomJoin {
        room: u64,
    },
    /// Owner → member: you are in; the members' names.
    RoomJoined {
        room: u64,
        members: Vec<String>,
    },
    /// Owner → member: no (no such room).
    RoomRefused {
        room: u64,
        reason: String,
    },
    /// Member → owner: the room's members and each one's link to the
    /// owner (`direct` or `relay`; the owner's own: `owner`).
    RoomMembersAsk {
        room: u64,
    },
    RoomMembers {
        room: u64,
        members: Vec<(String, String)>,
    },
    /// Member → owner: I leave.
    RoomLeave {
        room: u64,
    },
    /// Party → owner: my terms for a swap in the room.
    SwapOffer {
        room: u64,
        offer: Box<Offer>,
    },
    /// Owner → party: the one transaction of the room's balanced offers.
    SwapPropose {
        swap: [u8; 16],
        body: Box<TxBody>,
    },
    /// Party → owner, then owner → every party (all of them): the MuSig
    /// rounds for the proposed transaction.
    SwapCommit {
        swap: [u8; 16],
        commitments: Vec<Commitment>,
    },
    SwapReveal {
        swap: [u8; 16],
        reveals: Vec<Reveal>,
    },
    SwapCosign {
        swap: [u8; 16],
        cosignatures: Vec<Cosignature>,
    },
    /// Party → owner: the combined signature (checked by the party).
    SwapSigned {
        swap: [u8; 16],
        signature: Bytes64,
    },
    /// Party → owner: it will not sign this (the reason).
    SwapRefuse {
        swap: [u8; 16],
        reason: String,
    },
    /// Owner → party: the swap is off, nothing was submitted (the reason
    /// names who failed). `swap` all zero: the party's pending offer.
    SwapAbort {
        swap: [u8; 16],
        reason: String,
    },
    /// Owner → party: submitted and final.
    SwapDone {
        swap: [u8; 16],
        tx: TxId,
        height: u64,
        parties: u32,
    },
    /// Member → a wallet it is linked with: come into room `room`, owned
    /// by the wallet `owner` (its peer's voucher, so the invited wallet
    /// knows the owner's login key). `from`: the inviter, `login@peer`,
    /// which must be the link's own name.
    RoomInvite {
        invite: [u8; 16],
        room: u64,
        owner: Box<NameVoucher>,
        from: String,
    },
    /// Invited wallet → inviter, then inviter → owner: the invitation is
    /// taken. `offer` is the invited wallet's half of a link attempt to
    /// the owner (its key is the attempt's), `from` its peer's voucher.
    RoomInviteAccept {
        invite: [u8; 16],
        room: u64,
        from: Box<NameVoucher>,
        offer: LinkOffer,
    },
    /// Owner → inviter, then inviter → invited wallet: the owner's half
    /// of the attempt with its voucher, or why not.
    RoomInviteAnswer {
        attempt: [u8; 16],
        answer: Box<IntroAnswer>,
    },
    /// Both ways, first on a new link: the certified checkpoint this
    /// wallet accepted last (nothing else is taken before the two agree).
    Root(Box<Certified<Checkpoint>>),
    /// The wallet with the newer root → the other: its peer's proof that
    /// its certified history extends the other's root (a sync answer for
    /// no keys from the other's history size), and the committee
    /// hand-overs the other may lack to check it.
    Extends {
        answer: Box<SyncAnswer>,
        handovers: Vec<Certified<Handover>>,
    },
    /// Either way: the roots are not on one chain (the reason names the
    /// peers); the link closes.
    RootsDisagree(String),
    /// Payer → payee: a fresh key to pay you to (`ask` pairs the answer).
    PayKeyAsk {
        ask: u64,
    },
    /// Payee → payer: a receive key used for nothing else, signed by the
    /// payee's login key as its prekeys are (`ReceiveKey::sign`).
    PayKey {
        ask: u64,
        key: ReceiveKey,
    },
    /// Payee → payer: no key (the reason); the payer falls back to a
    /// prekey from the payee's peer.
    PayKeyRefused {
        ask: u64,
        reason: String,
    },
    /// Payer → payee: the payment to the key of `ask`, final at `height`:
    /// the transaction (its canonical encoding) and its inclusion in the
    /// history under a certified checkpoint.
    Paid {
        ask: u64,
        height: u64,
        tx: Vec<u8>,
        inclusion: Box<Inclusion>,
    },
    /// Payee → payer: the payment checked and held (`refused`: why not).
    PaidAck {
        ask: u64,
        refused: Option<String>,
    },
}

/// Most hashes in an MMR inclusion proof carried between wallets (one per
/// level of a history of up to 2^64 leaves, and the peaks).
pub const MAX_INCLUSION_HASHES: usize = 128;

/// Most members of a room.
pub const MAX_ROOM_MEMBERS: usize = 64;

/// The largest frame between two wallets.
pub const MAX_DIRECT_MESSAGE: usize = 1 << 20;

impl DirectMessage {
    pub fn encode(&self) -> Vec<u8> {
        proofs::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<DirectMessage, WireError> {
        if bytes.len() > MAX_DIRECT_MESSAGE {
            return Err(WireError::TooLarge(bytes.len()));
        }
        let msg: DirectMessage = proofs::decode(bytes, MAX_DIRECT_MESSAGE).map_err(malformed)?;
        let long = |len: usize, max: usize| {
            if len > max {
                Err(WireError::ListTooLong { len, max })
            } else {
                Ok(())
            }
        };
        let most_keys = crate::ledger::multisig::MAX_SIGNERS;
        match &msg {
            DirectMessage::RoomJoined { members, .. } => long(members.len(), MAX_ROOM_MEMBERS)?,
            DirectMessage::RoomMembers { members, .. } => long(members.len(), MAX_ROOM_MEMBERS)?,
            DirectMessage::RoomRefused { reason, .. }
            | DirectMessage::SwapRefuse { reason, .. }
            | DirectMessage::SwapAbort { reason, .. } => long(reason.len(), MAX_REASON)?,
            DirectMessage::SwapOffer { offer, .. } => long(
                offer.inputs.len(),
                crate::ledger::swap::MAX_INPUTS_PER_PARTY,
            )?,
            DirectMessage::SwapCommit { commitments, .. } => long(commitments.len(), most_keys)?,
            DirectMessage::SwapReveal { reveals, .. } => long(reveals.len(), most_keys)?,
            DirectMessage::SwapCosign { cosignatures, .. } => long(cosignatures.len(), most_keys)?,
            DirectMessage::RootsDisagree(reason) => long(reason.len(), MAX_REASON)?,
            DirectMessage::Root(c) => long(c.signatures.len(), MAX_COMMITTEE)?,
            DirectMessage::Extends { answer, handovers } => {
                long(handovers.len(), MAX_WALLET_HANDOVERS)?;
                long(answer.checkpoint.signatures.len(), MAX_COMMITTEE)?;
                // A proof for no keys carries no outputs.
                long(answer.keys.len() + answer.watched.len(), 0)?;
            }
            DirectMessage::RoomInvite { owner, from, .. } => {
                check_name(&owner.name).map_err(malformed)?;
                WalletName::parse(from).map_err(malformed)?;
            }
            DirectMessage::RoomInviteAccept { from, offer, .. } => {
                check_name(&from.name).map_err(malformed)?;
                offer.check().map_err(malformed)?;
            }
            DirectMessage::RoomInviteAnswer { answer, .. } => check_answer(answer)?,
            DirectMessage::PayKeyRefused { reason, .. }
            | DirectMessage::PaidAck {
                refused: Some(reason),
                ..
            } => long(reason.len(), MAX_REASON)?,
            DirectMessage::Paid { inclusion, .. } => {
                long(inclusion.proof.hashes.len(), MAX_INCLUSION_HASHES)?;
                long(inclusion.checkpoint.signatures.len(), MAX_COMMITTEE)?;
            }
            _ => {}
        }
        Ok(msg)
    }
}

fn malformed(e: impl std::fmt::Display) -> WireError {
    WireError::Malformed(e.to_string())
}

fn check_answer(a: &IntroAnswer) -> Result<(), WireError> {
    match a {
        IntroAnswer::Accepted { voucher, offer } => {
            check_name(&voucher.name).map_err(malformed)?;
            offer.check().map_err(malformed)
        }
        IntroAnswer::Failed(reason) if reason.len() > MAX_REASON => {
            Err(WireError::Malformed("reason too long".into()))
        }
        IntroAnswer::Failed(_) => Ok(()),
    }
}

/// Lists of byte strings, each written with `serialize_bytes`: in postcard
/// that is the same encoding as a sequence of u8 (a length, then the
/// bytes), but copied in one piece instead of through one call per byte,
/// which profiling showed costing about a microsecond per transaction.
mod byte_lists {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|b| Bytes::new(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let list: Vec<ByteBuf> = Vec::deserialize(d)?;
        Ok(list.into_iter().map(ByteBuf::into_vec).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proofs::Hash;

    /// The byte-string fields encode exactly as the plain `Vec<u8>` fields
    /// they replaced, so the wire format did not change.
    #[test]
    fn byte_strings_encode_as_sequences_of_u8() {
        #[derive(Serialize)]
        enum Plain {
            #[allow(dead_code)]
            Frontier(Vec<(PeerKey, Round)>),
            #[allow(dead_code)]
            Events(Vec<Event>),
            #[allow(dead_code)]
            Fetch(Vec<EventRef>),
            Transactions(Vec<Vec<u8>>),
        }
        let txs = vec![vec![], vec![1, 2, 3], vec![0xff; 300]];
        assert_eq!(
            PeerMessage::Transactions(txs.clone()).encode(),
            proofs::encode(&Plain::Transactions(txs.clone()))
        );
        let m = PeerMessage::Transactions(txs.clone());
        assert_eq!(PeerMessage::decode(&m.encode()), Ok(m));
        let m = WalletMessage::Submit(txs);
        assert_eq!(WalletMessage::decode(&m.encode()), Ok(m));
        let chunk = PeerMessage::SnapshotChunk {
            height: 5,
            offset: 9,
            data: vec![7; 200],
        };
        let mut plain = proofs::encode(&8u32); // the variant's index
        plain.extend(proofs::encode(&(5u64, 9u64, vec![7u8; 200])));
        assert_eq!(chunk.encode(), plain);
        assert_eq!(PeerMessage::decode(&chunk.encode()), Ok(chunk));
    }

    #[test]
    fn round_trip_and_limits() {
        let m = PeerMessage::Fetch(vec![EventRef {
            round: 3,
            author: 1,
            id: Hash([4; 32]),
        }]);
        assert_eq!(PeerMessage::decode(&m.encode()), Ok(m));
        let big = PeerMessage::Fetch(vec![
            EventRef {
                round: 0,
                author: 0,
                id: Hash::ZERO
            };
            MAX_FETCH + 1
        ]);
        assert_eq!(
            PeerMessage::decode(&big.encode()),
            Err(WireError::ListTooLong {
                len: MAX_FETCH + 1,
                max: MAX_FETCH
            })
        );
        let mut bytes = PeerMessage::Transactions(vec![vec![1, 2]]).encode();
        bytes.push(0);
        assert!(matches!(
            PeerMessage::decode(&bytes),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            PeerMessage::decode(&[9, 9, 9]),
            Err(WireError::Malformed(_))
        ));
        assert_eq!(
            PeerMessage::decode(&vec![0; MAX_PEER_MESSAGE + 1]),
            Err(WireError::TooLarge(MAX_PEER_MESSAGE + 1))
        );
    }

    #[test]
    fn wallet_messages_round_trip_and_are_bounded() {
        use crate::ledger::apply::{Outcome, Rejection};
        let m = WalletMessage::Finalized(vec![
            (Hash([1; 32]), 7, Outcome::Applied),
            (Hash([2; 32]), 7, Outcome::Rejected(Rejection::Duplicate)),
        ]);
        assert_eq!(WalletMessage::decode(&m.encode()), Ok(m));
        let m = WalletMessage::Submitted(vec![(Hash([3; 32]), Some("mempool full".into()))]);
        assert_eq!(WalletMessage::decode(&m.encode()), Ok(m));
        let big = WalletMessage::Submit(vec![vec![]; MAX_TXS_PER_MESSAGE + 1]);
        assert!(matches!(
            WalletMessage::decode(&big.encode()),
            Err(WireError::ListTooLong { .. })
        ));
        let mut bytes = WalletMessage::Submit(vec![vec![1]]).encode();
        bytes.push(0);
        assert!(matches!(
            WalletMessage::decode(&bytes),
            Err(WireError::Malformed(_))
        ));
        let m = WalletMessage::Incoming {
            height: 9,
            keys: vec![PeerKey([4; 32]); MAX_SUBSCRIBED],
        };
        assert_eq!(WalletMessage::decode(&m.encode()), Ok(m));
        let big = WalletMessage::Subscribe {
            keys: vec![PeerKey([4; 32]); MAX_SUBSCRIBED + 1],
        };
        assert!(matches!(
            WalletMessage::decode(&big.encode()),
            Err(WireError::ListTooLong { .. })
        ));
    }

    /// The invitation messages come after the others (older encodings
    /// stay) and their names, offers and reasons are bounded.
    #[test]
    fn room_invitations_round_trip_and_are_bounded() {
        use crate::rendezvous::{Candidate, CandidateKind, Mapping};
        let voucher = |name: &str| {
            Box::new(NameVoucher {
                chain: Hash([1; 32]),
                peer: PeerKey([2; 32]),
                name: name.into(),
                login: PeerKey([3; 32]),
                signature: Bytes64([4; 64]),
            })
        };
        let offer = |n: u8| LinkOffer {
            attempt: [5; 16],
            key: [6; 32],
            candidates: (1..=n)
                .map(|i| Candidate {
                    addr: format!("10.0.0.{i}:9").parse().expect("address"),
                    kind: CandidateKind::Local,
                })
                .collect(),
            mapping: Mapping::Independent,
        };
        let done = DirectMessage::SwapDone {
            swap: [0; 16],
            tx: Hash::ZERO,
            height: 0,
            parties: 0,
        };
        let invite = DirectMessage::RoomInvite {
            invite: [7; 16],
            room: 9,
            owner: voucher("alice"),
            from: "bob@peer-1".into(),
        };
        // One variant index after `SwapDone`.
        assert_eq!(invite.encode()[0], done.encode()[0] + 1);
        let ok = [
            invite,
            DirectMessage::RoomInviteAccept {
                invite: [7; 16],
                room: 9,
                from: voucher("carol"),
                offer: offer(2),
            },
            DirectMessage::RoomInviteAnswer {
                attempt: [5; 16],
                answer: Box::new(IntroAnswer::Accepted {
                    voucher: *voucher("alice"),
                    offer: offer(1),
                }),
            },
            DirectMessage::RoomInviteAnswer {
                attempt: [5; 16],
                answer: Box::new(IntroAnswer::Failed("no such room".into())),
            },
        ];
        for m in ok {
            assert_eq!(DirectMessage::decode(&m.encode()), Ok(m));
        }
        let bad = [
            DirectMessage::RoomInvite {
                invite: [7; 16],
                room: 9,
                owner: voucher(&"a".repeat(1000)),
                from: "bob@peer-1".into(),
            },
            DirectMessage::RoomInvite {
                invite: [7; 16],
                room: 9,
                owner: voucher("alice"),
                from: "bob".into(),
            },
            DirectMessage::RoomInviteAccept {
                invite: [7; 16],
                room: 9,
                from: voucher("carol"),
                offer: offer(9),
            },
            DirectMessage::RoomInviteAnswer {
                attempt: [5; 16],
                answer: Box::new(IntroAnswer::Failed("x".repeat(MAX_REASON + 1))),
            },
        ];
        for m in bad {
            assert!(DirectMessage::decode(&m.encode()).is_err(), "{m:?}");
        }
    }

    #[test]
    fn direct_payment_messages_round_trip_and_are_bounded() {
        use crate::ledger::checkpoint::StateRoots;
        let inclusion = |hashes: usize, signatures: usize| {
            Box::new(Inclusion {
                leaf_index: 5,
                outcome: Outcome::Applied,
                proof: proofs::InclusionProof {
                    hashes: vec![Hash([7; 32]); hashes],
                },
                checkpoint: Certified {
                    statement: Checkpoint {
                        chain: Hash([1; 32]),
                        height: 9,
                        round: 40,
                        roots: StateRoots {
                            history: Hash([2; 32]),
                            history_leaves: 12,
                            outputs: Hash([3; 32]),
                            keys: Hash([4; 32]),
                            registry: Hash([5; 32]),
                        },
                    },
                    signatures: (0..signatures as u32)
                        .map(|i| (i, Bytes64([9; 64])))
                        .collect(),
                },
            })
        };
        for m in [
            DirectMessage::PayKeyAsk { ask: 3 },
            DirectMessage::PayKey {
                ask: 3,
                key: ReceiveKey {
                    key: PeerKey([6; 32]),
                    signature: Bytes64([8; 64]),
                },
            },
            DirectMessage::PayKeyRefused {
                ask: 3,
                reason: "too many unpaid keys".into(),
            },
            DirectMessage::Paid {
                ask: 3,
                height: 9,
                tx: vec![1, 2, 3],
                inclusion: inclusion(4, 3),
            },
            DirectMessage::PaidAck {
                ask: 3,
                refused: None,
            },
        ] {
            assert_eq!(DirectMessage::decode(&m.encode()), Ok(m));
        }
        let long = [
            DirectMessage::PayKeyRefused {
                ask: 1,
                reason: "x".repeat(MAX_REASON + 1),
            },
            DirectMessage::PaidAck {
                ask: 1,
                refused: Some("x".repeat(MAX_REASON + 1)),
            },
            DirectMessage::Paid {
                ask: 1,
                height: 9,
                tx: Vec::new(),
                inclusion: inclusion(MAX_INCLUSION_HASHES + 1, 1),
            },
            DirectMessage::Paid {
                ask: 1,
                height: 9,
                tx: Vec::new(),
                inclusion: inclusion(1, MAX_COMMITTEE + 1),
            },
        ];
        for m in long {
            assert!(
                matches!(
                    DirectMessage::decode(&m.encode()),
                    Err(WireError::ListTooLong { .. })
                ),
                "{m:?}"
            );
        }
    }
}
