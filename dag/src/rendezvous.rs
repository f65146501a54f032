//! What two wallets' peers pass between them so that the wallets can punch
//! a hole to each other: each side's candidate addresses, how its NAT maps,
//! and the attempt's id and key (see `nat::punch`, which runs the attempt,
//! and `specs/nat.md`). The messages that carry these are in [`crate::wire`].

use crate::ledger::names::NameVoucher;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use thiserror::Error;

/// Longest failure reason carried.
pub const MAX_REASON: usize = 256;

/// Most candidates in one offer.
pub const MAX_CANDIDATES: usize = 8;

/// Where a candidate address comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CandidateKind {
    /// An address of one of the wallet's own interfaces.
    Local,
    /// The public address a peer saw the wallet's datagrams come from.
    Reflexive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Candidate {
    pub addr: SocketAddr,
    pub kind: CandidateKind,
}

/// How a NAT maps one internal socket, as the address echo of two peers
/// tells: the same public address for every destination, or one per
/// destination (a "symmetric" NAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mapping {
    /// The same public address toward every destination (or no NAT).
    Independent,
    /// A different public port per destination.
    Dependent,
    /// Not measured (fewer than two peers answered).
    Unknown,
}

/// One side's half of a link attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkOffer {
    /// Chosen by the wallet that asks; the answer repeats it.
    pub attempt: [u8; 16],
    /// The key of the introductions' tags, chosen by the wallet that asks
    /// (the answer's is ignored). The peers see it: it keeps off-path
    /// senders out, not the peers; the channel's own authentication does.
    pub key: [u8; 32],
    pub candidates: Vec<Candidate>,
    pub mapping: Mapping,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum OfferError {
    #[error("{0} candidates (at most {MAX_CANDIDATES})")]
    TooMany(usize),
    #[error("no candidate address")]
    Empty,
    #[error("candidate {0} is not an address anyone can send to")]
    Unusable(SocketAddr),
    #[error("candidate {0} appears twice")]
    Duplicate(SocketAddr),
}

impl LinkOffer {
    /// The checks every receiver applies (the decoder does too).
    pub fn check(&self) -> Result<(), OfferError> {
        if self.candidates.len() > MAX_CANDIDATES {
            return Err(OfferError::TooMany(self.candidates.len()));
        }
        if self.candidates.is_empty() {
            return Err(OfferError::Empty);
        }
        for (i, c) in self.candidates.iter().enumerate() {
            let ip = c.addr.ip();
            if c.addr.port() == 0 || ip.is_unspecified() || ip.is_multicast() {
                return Err(OfferError::Unusable(c.addr));
            }
            if self.candidates[..i].iter().any(|d| d.addr == c.addr) {
                return Err(OfferError::Duplicate(c.addr));
            }
        }
        Ok(())
    }
}

/// Peer → the wallet asked for: another wallet wants a link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introduction {
    /// The asking wallet's name and login key, vouched for by its peer.
    pub from: NameVoucher,
    pub offer: LinkOffer,
    /// Start punching this long after answering: about when the answer
    /// reaches the asking wallet (half the round trips of the links on
    /// the way, as the peers measure them).
    pub start_in_ms: u32,
}

/// Peer → the asking wallet: the other wallet answered. The asking wallet
/// starts punching at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reached {
    /// The answering wallet's name and login key, vouched for by its peer.
    pub to: NameVoucher,
    pub offer: LinkOffer,
}

/// The asking wallet's peer → the other wallet's peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerIntroduce {
    pub from: NameVoucher,
    /// The login name, at the receiving peer, of the wallet asked for.
    pub to: String,
    pub offer: LinkOffer,
    /// Round trip between the asking wallet and its peer.
    pub rtt_ms: u32,
}

/// The other wallet's peer → the asking wallet's peer (boxed in the
/// message, so the small failure variant costs nothing).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntroAnswer {
    Accepted {
        voucher: NameVoucher,
        offer: LinkOffer,
    },
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(addrs: &[&str]) -> LinkOffer {
        LinkOffer {
            attempt: [1; 16],
            key: [2; 32],
            candidates: addrs
                .iter()
                .map(|a| Candidate {
                    addr: a.parse().unwrap(),
                    kind: CandidateKind::Local,
                })
                .collect(),
            mapping: Mapping::Unknown,
        }
    }

    #[test]
    fn offers_are_checked() {
        assert_eq!(
            offer(&["192.168.1.2:5000", "203.0.113.20:5000"]).check(),
            Ok(())
        );
        assert_eq!(offer(&[]).check(), Err(OfferError::Empty));
        assert!(matches!(
            offer(&["0.0.0.0:1"]).check(),
            Err(OfferError::Unusable(_))
        ));
        assert!(matches!(
            offer(&["10.0.0.1:0"]).check(),
            Err(OfferError::Unusable(_))
        ));
        assert!(matches!(
            offer(&["224.0.0.1:9"]).check(),
            Err(OfferError::Unusable(_))
        ));
        assert!(matches!(
            offer(&["10.0.0.1:9", "10.0.0.1:9"]).check(),
            Err(OfferError::Duplicate(_))
        ));
        let nine: Vec<String> = (1..=9).map(|i| format!("10.0.0.{i}:9")).collect();
        let nine: Vec<&str> = nine.iter().map(|s| s.as_str()).collect();
        assert_eq!(offer(&nine).check(), Err(OfferError::TooMany(9)));
    }
}
