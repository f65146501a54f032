//! The relay: when two wallets find no direct path (both behind NATs that
//! map by destination, or UDP blocked except to peers), their QUIC packets
//! travel through their peers, still encrypted end to end: a peer sees
//! ciphertext, sizes and timing only.
//!
//! A relay session is opened by the rendezvous when an introduction is
//! accepted, for that attempt only: at the asking wallet's peer between it
//! and the other peer, at the other peer between that peer and its wallet
//! (or, on one peer, between its two wallets). Frames of other attempts,
//! or from other links, are dropped. Each session has a byte rate (a token
//! bucket) and a total; excess is dropped and counted, and QUIC above slows
//! down. Sessions idle for [`IDLE`] are forgotten. The table is shared by
//! the link tasks, so relayed frames never wait for the driver thread.

use crate::wallet_service::WalletAt;
use dag::identity::PeerKey;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Sessions at once, at most; a new one beyond evicts the idlest.
pub const MAX_SESSIONS: usize = 4096;
/// Bytes per second one session may relay on average…
pub const RATE: u64 = 2 << 20;
/// …in bursts of this many.
pub const BURST: u64 = 4 << 20;
/// Bytes one session may relay in all.
pub const TOTAL: u64 = 1 << 30;
/// A session with no frame for this long is forgotten.
pub const IDLE: Duration = Duration::from_secs(120);
/// Longest relayed datagram (QUIC's are at most about 1452 bytes).
pub const MAX_FRAME: usize = 2048;

/// Where a relayed frame goes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    Wallet(WalletAt),
    Peer(PeerKey),
}

struct Session {
    /// Our wallets in the session (one, or both when on one peer).
    wallets: Vec<WalletAt>,
    /// The other wallet's peer, if it is not us.
    peer: Option<PeerKey>,
    tokens: f64,
    refilled: Instant,
    total: u64,
    last: Instant,
}

#[derive(Default)]
pub struct RelayTable {
    sessions: HashMap<[u8; 16], Session>,
    /// Bytes relayed (`peer status`: `relayed_bytes`).
    pub relayed_bytes: u64,
    /// Frames dropped: unknown attempt or sender, over the rate or total,
    /// too long.
    pub dropped: u64,
}

impl RelayTable {
    /// Open the session of `attempt` (replacing one of the same id).
    pub fn open(
        &mut self,
        attempt: [u8; 16],
        wallets: Vec<WalletAt>,
        peer: Option<PeerKey>,
        now: Instant,
    ) {
        self.sessions
            .retain(|_, s| now.duration_since(s.last) < IDLE);
        if self.sessions.len() >= MAX_SESSIONS && !self.sessions.contains_key(&attempt) {
            if let Some(idlest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| *k)
            {
                self.sessions.remove(&idlest);
            }
        }
        self.sessions.insert(
            attempt,
            Session {
                wallets,
                peer,
                tokens: BURST as f64,
                refilled: now,
                total: 0,
                last: now,
            },
        );
    }

    /// A frame from our wallet `from`: where it goes, if anywhere.
    pub fn from_wallet(
        &mut self,
        attempt: &[u8; 16],
        from: WalletAt,
        len: usize,
        now: Instant,
    ) -> Option<Hop> {
        let hop = self.sessions.get(attempt).and_then(|s| {
            if !s.wallets.contains(&from) {
                return None;
            }
            match s.wallets.iter().find(|w| **w != from) {
                Some(other) => Some(Hop::Wallet(*other)),
                None => s.peer.map(Hop::Peer),
            }
        });
        self.charge(attempt, hop, len, now)
    }

    /// A frame from peer `from`: the wallet it goes to, if any.
    pub fn from_peer(
        &mut self,
        attempt: &[u8; 16],
        from: PeerKey,
        len: usize,
        now: Instant,
    ) -> Option<WalletAt> {
        let hop = self
            .sessions
            .get(attempt)
            .filter(|s| s.peer == Some(from))
            .and_then(|s| s.wallets.first().copied())
            .map(Hop::Wallet);
        match self.charge(attempt, hop, len, now) {
            Some(Hop::Wallet(w)) => Some(w),
            _ => None,
        }
    }

    fn charge(
        &mut self,
        attempt: &[u8; 16],
        hop: Option<Hop>,
        len: usize,
        now: Instant,
    ) -> Option<Hop> {
        let ok = hop.is_some()
            && len <= MAX_FRAME
            && self.sessions.get_mut(attempt).is_some_and(|s| {
                let dt = now.saturating_duration_since(s.refilled).as_secs_f64();
                s.tokens = (s.tokens + dt * RATE as f64).min(BURST as f64);
                s.refilled = now;
                if s.tokens < len as f64 || s.total + len as u64 > TOTAL {
                    return false;
                }
                s.tokens -= len as f64;
                s.total += len as u64;
                s.last = now;
                true
            });
        if ok {
            self.relayed_bytes += len as u64;
            hop
        } else {
            self.dropped += 1;
            None
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(k: u8, link: usize) -> WalletAt {
        WalletAt {
            key: PeerKey([k; 32]),
            link,
        }
    }

    #[test]
    fn frames_go_only_where_the_session_says() {
        let now = Instant::now();
        let mut t = RelayTable::default();
        let q = PeerKey([9; 32]);
        t.open([1; 16], vec![w(1, 1)], Some(q), now);
        t.open([2; 16], vec![w(2, 2), w(3, 3)], None, now);
        assert_eq!(
            t.from_wallet(&[1; 16], w(1, 1), 100, now),
            Some(Hop::Peer(q))
        );
        assert_eq!(t.from_peer(&[1; 16], q, 100, now), Some(w(1, 1)));
        assert_eq!(
            t.from_wallet(&[2; 16], w(2, 2), 100, now),
            Some(Hop::Wallet(w(3, 3)))
        );
        assert_eq!(
            t.from_wallet(&[2; 16], w(3, 3), 100, now),
            Some(Hop::Wallet(w(2, 2)))
        );
        assert_eq!(t.relayed_bytes, 400);
        // Strangers, other links of the same key, other peers, unknown
        // attempts, oversized frames: dropped.
        assert_eq!(t.from_wallet(&[1; 16], w(4, 4), 100, now), None);
        assert_eq!(t.from_wallet(&[1; 16], w(1, 5), 100, now), None);
        assert_eq!(t.from_peer(&[1; 16], PeerKey([8; 32]), 100, now), None);
        assert_eq!(t.from_peer(&[2; 16], q, 100, now), None);
        assert_eq!(t.from_wallet(&[7; 16], w(1, 1), 100, now), None);
        assert_eq!(t.from_wallet(&[1; 16], w(1, 1), MAX_FRAME + 1, now), None);
        assert_eq!(t.dropped, 6);
        assert_eq!(t.relayed_bytes, 400);
    }

    #[test]
    fn the_rate_and_idle_limits_hold() {
        let now = Instant::now();
        let mut t = RelayTable::default();
        t.open([1; 16], vec![w(1, 1), w(2, 2)], None, now);
        let mut sent = 0u64;
        while t.from_wallet(&[1; 16], w(1, 1), 1500, now).is_some() {
            sent += 1500;
        }
        assert!(sent <= BURST && sent > BURST - 1500, "{sent}");
        // A second later a second's worth more.
        let later = now + Duration::from_secs(1);
        let mut more = 0u64;
        while t.from_wallet(&[1; 16], w(1, 1), 1500, later).is_some() {
            more += 1500;
        }
        assert!(more <= RATE && more > RATE - 1500, "{more}");
        // Idle sessions are forgotten when the next one opens.
        t.open(
            [2; 16],
            vec![w(3, 3)],
            None,
            later + IDLE + Duration::from_secs(1),
        );
        assert_eq!(t.len(), 1);
    }
}
