//! Rendezvous: a peer introduces its online wallets to other wallets, on
//! this peer or through the other wallet's peer, and then gets out of the
//! way (what the wallets say to each other never passes through it).
//!
//! `A@P` sends `Reach { to: B@Q }` with its half of a link attempt (its
//! candidate addresses, its NAT's mapping, the attempt's id and key). `P`
//! vouches for A's name and login key and passes it to `Q` (or handles it
//! itself when `Q` is `P`); `Q` introduces it to `B` if B is online
//! (`Listen`), B answers with its half, and the answer goes back the same
//! way with `Q`'s voucher for B. Both wallets then punch (`nat::punch`).
//! Only wallets that are online here (registered name, `Listen` on a live
//! link) may ask or be asked; attempts are bounded in number and forgotten
//! after [`ATTEMPT_TIMEOUT`]. Pure state: the node's loop feeds it and sends
//! what it returns.

use crate::wallet_service::WalletAt;
use dag::identity::{PeerKey, Signer};
use dag::ledger::names::{NameVoucher, WalletName};
use dag::rendezvous::{IntroAnswer, Introduction, LinkOffer, PeerIntroduce, Reached, MAX_REASON};
use dag::wire::{PeerMessage, WalletMessage};
use proofs::Hash;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// An attempt not answered within this is failed and forgotten.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts in flight at once, each way.
pub const MAX_ATTEMPTS: usize = 4096;
/// Online wallets at once.
pub const MAX_LISTENING: usize = 65_536;

/// A message to send.
#[derive(Debug, PartialEq)]
// Returned and sent at once, never stored: the size difference is moot.
#[allow(clippy::large_enum_variant)]
pub enum Out {
    Wallet(WalletAt, WalletMessage),
    Peer(PeerKey, PeerMessage),
    /// Open the relay session of an accepted attempt (see `relay`).
    OpenRelay {
        attempt: [u8; 16],
        wallets: Vec<WalletAt>,
        peer: Option<PeerKey>,
    },
}

/// What the rendezvous asks of the node around it.
pub trait Node {
    /// A peer's key by its registered name.
    fn peer_by_name(&self, name: &str) -> Option<PeerKey>;
    /// Whether the link to this peer is up.
    fn peer_linked(&self, key: &PeerKey) -> bool;
    /// Whether this link of a wallet is up.
    fn wallet_linked(&self, at: WalletAt) -> bool;
    /// Round trips of links, in milliseconds.
    fn peer_rtt_ms(&self, key: &PeerKey) -> u32;
    fn wallet_rtt_ms(&self, at: WalletAt) -> u32;
}

/// Borrowed for one call.
pub struct Ctx<'a> {
    pub chain: Hash,
    pub own_name: &'a str,
    pub signer: &'a mut Signer,
    pub node: &'a dyn Node,
    /// Tests only: vouch for a key other than the wallet's in answers.
    pub substitute_key: bool,
}

struct Asked {
    wallet: WalletAt,
    /// The other wallet's peer (`None`: this one).
    via: Option<PeerKey>,
    at: Instant,
}

struct Introduced {
    wallet: WalletAt,
    name: String,
    /// The asking wallet's peer (`None`: this one, and the asking wallet).
    from_peer: Option<PeerKey>,
    asker: Option<WalletAt>,
    at: Instant,
}

#[derive(Default)]
pub struct Rendezvous {
    /// Online wallets: the link each said `Listen` on, by login name.
    listening: HashMap<String, WalletAt>,
    asked: HashMap<[u8; 16], Asked>,
    introduced: HashMap<[u8; 16], Introduced>,
    /// Requests to reach a wallet, from our wallets and from other peers
    /// (`peer status`: `rendezvous_requests`).
    pub requests: u64,
}

impl Rendezvous {
    /// Wallet link `at` is online as `name` (already checked to own it).
    pub fn listen(&mut self, name: &str, at: WalletAt) -> Result<(), String> {
        if self.listening.len() >= MAX_LISTENING && !self.listening.contains_key(name) {
            return Err("too many wallets online here".into());
        }
        self.listening.insert(name.to_string(), at);
        Ok(())
    }

    fn name_of(&self, at: WalletAt) -> Option<String> {
        self.listening
            .iter()
            .find(|(_, k)| **k == at)
            .map(|(n, _)| n.clone())
    }

    /// Whether `name` is online here (its link up).
    fn online(&self, ctx: &Ctx, name: &str) -> Option<WalletAt> {
        self.listening
            .get(name)
            .copied()
            .filter(|k| ctx.node.wallet_linked(*k))
    }

    /// Wallet `from` asks to reach `to`.
    pub fn reach(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        from: WalletAt,
        to: &str,
        offer: LinkOffer,
    ) -> Vec<Out> {
        self.requests += 1;
        let attempt = offer.attempt;
        let fail = |reason: String| {
            vec![Out::Wallet(
                from,
                WalletMessage::ReachFailed {
                    attempt,
                    reason: clip(reason),
                },
            )]
        };
        let Some(name) = self.name_of(from) else {
            return fail("this wallet is not online here (send Listen first)".into());
        };
        let Ok(to) = WalletName::parse(to) else {
            return fail(format!("{to:?} is not a wallet name"));
        };
        if self.asked.len() >= MAX_ATTEMPTS || self.introduced.len() >= MAX_ATTEMPTS {
            return fail("too many link attempts in flight here".into());
        }
        if self.asked.contains_key(&attempt) || self.introduced.contains_key(&attempt) {
            return fail("attempt id already in use".into());
        }
        let voucher = NameVoucher::sign(ctx.chain, ctx.signer, &name, from.key);
        if to.peer == ctx.own_name {
            let Some(wallet) = self.online(ctx, &to.login) else {
                return fail(format!("{to} is not online"));
            };
            let start_in_ms = (ctx.node.wallet_rtt_ms(from) + ctx.node.wallet_rtt_ms(wallet)) / 2;
            self.introduced.insert(
                attempt,
                Introduced {
                    wallet,
                    name: to.login.clone(),
                    from_peer: None,
                    asker: Some(from),
                    at: now,
                },
            );
            return vec![Out::Wallet(
                wallet,
                WalletMessage::Introduced(Box::new(Introduction {
                    from: voucher,
                    offer,
                    start_in_ms,
                })),
            )];
        }
        let Some(peer) = ctx.node.peer_by_name(&to.peer) else {
            return fail(format!("no peer named {} on this chain", to.peer));
        };
        if !ctx.node.peer_linked(&peer) {
            return fail(format!(
                "peer {} is not reachable from {}",
                to.peer, ctx.own_name
            ));
        }
        self.asked.insert(
            attempt,
            Asked {
                wallet: from,
                via: Some(peer),
                at: now,
            },
        );
        vec![Out::Peer(
            peer,
            PeerMessage::Introduce(Box::new(PeerIntroduce {
                from: voucher,
                to: to.login,
                offer,
                rtt_ms: ctx.node.wallet_rtt_ms(from),
            })),
        )]
    }

    /// Peer `from_peer` introduces one of its wallets to one of ours.
    pub fn introduce(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        from_peer: PeerKey,
        intro: PeerIntroduce,
    ) -> Vec<Out> {
        self.requests += 1;
        let attempt = intro.offer.attempt;
        let fail = |reason: String| {
            vec![Out::Peer(
                from_peer,
                PeerMessage::IntroduceAnswer {
                    attempt,
                    answer: Box::new(IntroAnswer::Failed(clip(reason))),
                },
            )]
        };
        // The asking wallet is vouched for by the peer that sends it.
        if intro.from.verify(&ctx.chain, &from_peer).is_err() {
            return fail("the introduction's voucher is not the sending peer's".into());
        }
        if self.introduced.len() >= MAX_ATTEMPTS || self.introduced.contains_key(&attempt) {
            return fail("too many link attempts in flight (or a reused id)".into());
        }
        let Some(wallet) = self.online(ctx, &intro.to) else {
            return fail(format!("{}@{} is not online", intro.to, ctx.own_name));
        };
        let start_in_ms = (intro.rtt_ms.min(10_000)
            + ctx.node.peer_rtt_ms(&from_peer)
            + ctx.node.wallet_rtt_ms(wallet))
            / 2;
        self.introduced.insert(
            attempt,
            Introduced {
                wallet,
                name: intro.to,
                from_peer: Some(from_peer),
                asker: None,
                at: now,
            },
        );
        vec![Out::Wallet(
            wallet,
            WalletMessage::Introduced(Box::new(Introduction {
                from: intro.from,
                offer: intro.offer,
                start_in_ms,
            })),
        )]
    }

    /// Our wallet `from` answers an introduction.
    pub fn answer(
        &mut self,
        ctx: &mut Ctx,
        from: WalletAt,
        attempt: [u8; 16],
        offer: Option<LinkOffer>,
    ) -> Vec<Out> {
        let Some(i) = self.introduced.get(&attempt) else {
            return Vec::new();
        };
        if i.wallet != from {
            return Vec::new();
        }
        let i = self.introduced.remove(&attempt).expect("just found");
        let answer = match offer {
            Some(mut offer) if offer.attempt == attempt => {
                let login = if ctx.substitute_key {
                    // Tests only: a man in the middle vouches for a key of
                    // its own making.
                    let mut k = from.key.0;
                    k[0] ^= 0xff;
                    PeerKey(k)
                } else {
                    from.key
                };
                offer.key = [0; 32]; // the asking side's key is the one used
                IntroAnswer::Accepted {
                    voucher: NameVoucher::sign(ctx.chain, ctx.signer, &i.name, login),
                    offer,
                }
            }
            Some(_) => IntroAnswer::Failed("the answer names another attempt".into()),
            None => IntroAnswer::Failed(format!("{}@{} declined", i.name, ctx.own_name)),
        };
        let accepted = matches!(answer, IntroAnswer::Accepted { .. });
        let mut out = match (i.from_peer, i.asker) {
            (Some(peer), _) => vec![Out::Peer(
                peer,
                PeerMessage::IntroduceAnswer {
                    attempt,
                    answer: Box::new(answer),
                },
            )],
            (None, Some(asker)) => vec![to_asker(asker, attempt, answer)],
            (None, None) => Vec::new(),
        };
        if accepted {
            out.push(Out::OpenRelay {
                attempt,
                wallets: i.asker.into_iter().chain([from]).collect(),
                peer: i.from_peer,
            });
        }
        out
    }

    /// The other wallet's peer answers an introduction we passed on.
    pub fn introduce_answer(
        &mut self,
        ctx: &Ctx,
        from_peer: PeerKey,
        attempt: [u8; 16],
        answer: IntroAnswer,
    ) -> Vec<Out> {
        match self.asked.get(&attempt) {
            Some(a) if a.via == Some(from_peer) => {}
            _ => return Vec::new(),
        }
        let a = self.asked.remove(&attempt).expect("just found");
        let answer = match answer {
            IntroAnswer::Accepted { voucher, .. }
                if voucher.verify(&ctx.chain, &from_peer).is_err() =>
            {
                IntroAnswer::Failed("the answering peer's voucher does not verify".into())
            }
            other => other,
        };
        let accepted = matches!(answer, IntroAnswer::Accepted { .. });
        let mut out = vec![to_asker(a.wallet, attempt, answer)];
        if accepted {
            out.push(Out::OpenRelay {
                attempt,
                wallets: vec![a.wallet],
                peer: Some(from_peer),
            });
        }
        out
    }

    /// Fail and forget attempts older than [`ATTEMPT_TIMEOUT`], and
    /// wallets whose link is gone.
    pub fn expire(&mut self, ctx: &Ctx, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        let old = |at: &Instant| now.duration_since(*at) > ATTEMPT_TIMEOUT;
        self.asked.retain(|attempt, a| {
            if old(&a.at) {
                out.push(Out::Wallet(
                    a.wallet,
                    WalletMessage::ReachFailed {
                        attempt: *attempt,
                        reason: "no answer in time".into(),
                    },
                ));
                return false;
            }
            true
        });
        self.introduced.retain(|attempt, i| {
            if !old(&i.at) {
                return true;
            }
            let failed = IntroAnswer::Failed(format!("{} did not answer in time", i.name));
            match (i.from_peer, i.asker) {
                (Some(peer), _) => out.push(Out::Peer(
                    peer,
                    PeerMessage::IntroduceAnswer {
                        attempt: *attempt,
                        answer: Box::new(failed),
                    },
                )),
                (None, Some(asker)) => out.push(to_asker(asker, *attempt, failed)),
                (None, None) => {}
            }
            false
        });
        self.listening.retain(|_, k| ctx.node.wallet_linked(*k));
        out
    }
}

fn to_asker(wallet: WalletAt, attempt: [u8; 16], answer: IntroAnswer) -> Out {
    Out::Wallet(
        wallet,
        match answer {
            IntroAnswer::Accepted { voucher, offer } => WalletMessage::Reached(Box::new(Reached {
                to: voucher,
                offer: LinkOffer { attempt, ..offer },
            })),
            IntroAnswer::Failed(reason) => WalletMessage::ReachFailed { attempt, reason },
        },
    )
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use dag::rendezvous::{Candidate, CandidateKind, Mapping};
    use std::cell::RefCell;
    use std::collections::HashSet;

    struct Net {
        peers: HashMap<String, PeerKey>,
        up: RefCell<HashSet<PeerKey>>,
    }

    impl Node for Net {
        fn peer_by_name(&self, name: &str) -> Option<PeerKey> {
            self.peers.get(name).copied()
        }
        fn peer_linked(&self, key: &PeerKey) -> bool {
            self.up.borrow().contains(key)
        }
        fn wallet_linked(&self, at: WalletAt) -> bool {
            self.up.borrow().contains(&at.key)
        }
        fn peer_rtt_ms(&self, _: &PeerKey) -> u32 {
            20
        }
        fn wallet_rtt_ms(&self, _: WalletAt) -> u32 {
            20
        }
    }

    struct Peer {
        name: &'static str,
        signer: Signer,
        r: Rendezvous,
        lie: bool,
    }

    impl Peer {
        fn new(name: &'static str, seed: u8) -> Peer {
            Peer {
                name,
                signer: Signer::from_seed([seed; 32], [seed; 32]),
                r: Rendezvous::default(),
                lie: false,
            }
        }
        fn key(&self) -> PeerKey {
            self.signer.key()
        }
        fn ctx<'a>(&'a mut self, net: &'a Net) -> (Ctx<'a>, &'a mut Rendezvous) {
            (
                Ctx {
                    chain: CHAIN,
                    own_name: self.name,
                    signer: &mut self.signer,
                    node: net,
                    substitute_key: self.lie,
                },
                &mut self.r,
            )
        }
    }

    const CHAIN: Hash = Hash([7; 32]);

    fn offer(attempt: u8) -> LinkOffer {
        LinkOffer {
            attempt: [attempt; 16],
            key: [9; 32],
            candidates: vec![Candidate {
                addr: "203.0.113.21:5000".parse().unwrap(),
                kind: CandidateKind::Reflexive,
            }],
            mapping: Mapping::Independent,
        }
    }

    fn setup() -> (Peer, Peer, Net, WalletAt, WalletAt) {
        let p = Peer::new("peer-p", 1);
        let q = Peer::new("peer-q", 2);
        let alice = WalletAt {
            key: PeerKey([0xa; 32]),
            link: 1,
        };
        let bob = WalletAt {
            key: PeerKey([0xb; 32]),
            link: 2,
        };
        let net = Net {
            peers: [
                ("peer-p".to_string(), p.key()),
                ("peer-q".to_string(), q.key()),
            ]
            .into(),
            up: RefCell::new([p.key(), q.key(), alice.key, bob.key].into()),
        };
        (p, q, net, alice, bob)
    }

    /// An accepted answer, and the relay session it opens here.
    fn relayed(out: Vec<Out>, wallets: Vec<WalletAt>, peer: Option<PeerKey>) -> Out {
        assert_eq!(out.len(), 2, "{out:?}");
        let mut out = out.into_iter();
        let first = out.next().unwrap();
        match out.next().unwrap() {
            Out::OpenRelay {
                wallets: w,
                peer: p,
                ..
            } => {
                assert_eq!(w, wallets);
                assert_eq!(p, peer);
            }
            other => panic!("{other:?}"),
        }
        first
    }

    fn one(out: Vec<Out>) -> Out {
        assert_eq!(out.len(), 1, "{out:?}");
        out.into_iter().next().unwrap()
    }

    #[test]
    fn two_wallets_on_two_peers_meet_with_each_others_vouchers() {
        let (mut p, mut q, net, alice, bob) = setup();
        let (pk, qk) = (p.key(), q.key());
        let now = Instant::now();
        p.r.listen("alice", alice).unwrap();
        q.r.listen("bob", bob).unwrap();
        let (mut ctx, r) = p.ctx(&net);
        let Out::Peer(to, PeerMessage::Introduce(intro)) =
            one(r.reach(&mut ctx, now, alice, "bob@peer-q", offer(1)))
        else {
            panic!()
        };
        assert_eq!(to, qk);
        assert_eq!(intro.from.login, alice.key);
        let (mut ctx, r) = q.ctx(&net);
        let Out::Wallet(w, WalletMessage::Introduced(i)) =
            one(r.introduce(&mut ctx, now, pk, *intro))
        else {
            panic!()
        };
        assert_eq!(w, bob);
        i.from.verify(&CHAIN, &pk).unwrap();
        assert_eq!(i.from.name, "alice");
        assert_eq!(i.start_in_ms, 30);
        let mut mine = offer(1);
        mine.candidates[0].addr = "203.0.113.22:6000".parse().unwrap();
        let Out::Peer(to, PeerMessage::IntroduceAnswer { attempt, answer }) = relayed(
            r.answer(&mut ctx, bob, [1; 16], Some(mine.clone())),
            vec![bob],
            Some(pk),
        ) else {
            panic!()
        };
        assert_eq!(to, pk);
        let (ctx, r) = p.ctx(&net);
        let Out::Wallet(w, WalletMessage::Reached(reached)) = relayed(
            r.introduce_answer(&ctx, qk, attempt, *answer),
            vec![alice],
            Some(qk),
        ) else {
            panic!()
        };
        assert_eq!(w, alice);
        reached.to.verify(&CHAIN, &qk).unwrap();
        assert_eq!(reached.to.login, bob.key);
        assert_eq!(reached.to.name, "bob");
        assert_eq!(reached.offer.candidates, mine.candidates);
        assert_eq!(p.r.requests, 1);
        assert_eq!(q.r.requests, 1);
    }

    #[test]
    fn wallets_on_one_peer_meet_without_another_peer() {
        let (mut p, _, net, alice, bob) = setup();
        let now = Instant::now();
        p.r.listen("alice", alice).unwrap();
        p.r.listen("bob", bob).unwrap();
        let (mut ctx, r) = p.ctx(&net);
        let Out::Wallet(w, WalletMessage::Introduced(_)) =
            one(r.reach(&mut ctx, now, alice, "bob@peer-p", offer(2)))
        else {
            panic!()
        };
        assert_eq!(w, bob);
        let Out::Wallet(w, WalletMessage::Reached(reached)) = relayed(
            r.answer(&mut ctx, bob, [2; 16], Some(offer(2))),
            vec![alice, bob],
            None,
        ) else {
            panic!()
        };
        assert_eq!(w, alice);
        assert_eq!(reached.to.login, bob.key);
    }

    #[test]
    fn strangers_offline_wallets_and_forgeries_get_nothing() {
        let (mut p, mut q, net, alice, bob) = setup();
        let (pk, qk) = (p.key(), q.key());
        let now = Instant::now();
        let failed = |o: Out| match o {
            Out::Wallet(_, WalletMessage::ReachFailed { reason, .. }) => reason,
            Out::Peer(_, PeerMessage::IntroduceAnswer { answer, .. }) => match *answer {
                IntroAnswer::Failed(r) => r,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        // Not online here: may not ask.
        let (mut ctx, r) = p.ctx(&net);
        let why = failed(one(r.reach(&mut ctx, now, alice, "bob@peer-q", offer(3))));
        assert!(why.contains("not online here"), "{why}");
        r.listen("alice", alice).unwrap();
        // Unknown peer, bad name.
        let why = failed(one(r.reach(&mut ctx, now, alice, "bob@peer-z", offer(3))));
        assert!(why.contains("no peer named peer-z"), "{why}");
        let why = failed(one(r.reach(&mut ctx, now, alice, "bob", offer(3))));
        assert!(why.contains("not a wallet name"), "{why}");
        // Bob is not online at Q.
        let Out::Peer(_, PeerMessage::Introduce(intro)) =
            one(r.reach(&mut ctx, now, alice, "bob@peer-q", offer(3)))
        else {
            panic!()
        };
        let (mut qctx, qr) = q.ctx(&net);
        let why = failed(one(qr.introduce(&mut qctx, now, pk, (*intro).clone())));
        assert!(why.contains("bob@peer-q is not online"), "{why}");
        // An introduction vouched for by another peer than the sender.
        qr.listen("bob", bob).unwrap();
        let why = failed(one(qr.introduce(&mut qctx, now, qk, (*intro).clone())));
        assert!(why.contains("voucher"), "{why}");
        // Someone else answering the attempt is ignored; a decline is passed on.
        let Out::Wallet(..) = one(qr.introduce(&mut qctx, now, pk, *intro)) else {
            panic!()
        };
        assert!(qr
            .answer(&mut qctx, alice, [3; 16], Some(offer(3)))
            .is_empty());
        let why = failed(one(qr.answer(&mut qctx, bob, [3; 16], None)));
        assert!(why.contains("declined"), "{why}");
        // An answer from a peer that was not asked is ignored.
        let (ctx, r) = p.ctx(&net);
        let forged = IntroAnswer::Failed("x".into());
        assert!(r.introduce_answer(&ctx, pk, [3; 16], forged).is_empty());
        // A wallet whose link went down is no longer online.
        net.up.borrow_mut().remove(&bob.key);
        let (mut qctx, qr) = q.ctx(&net);
        let intro2 = PeerIntroduce {
            from: NameVoucher::sign(CHAIN, &mut p.signer, "alice", alice.key),
            to: "bob".into(),
            offer: offer(4),
            rtt_ms: 5,
        };
        let why = failed(one(qr.introduce(&mut qctx, now, pk, intro2)));
        assert!(why.contains("not online"), "{why}");
    }

    #[test]
    fn unanswered_attempts_fail_after_the_timeout() {
        let (mut p, mut q, net, alice, bob) = setup();
        let pk = p.key();
        let now = Instant::now();
        p.r.listen("alice", alice).unwrap();
        q.r.listen("bob", bob).unwrap();
        let (mut ctx, r) = p.ctx(&net);
        let Out::Peer(_, PeerMessage::Introduce(intro)) =
            one(r.reach(&mut ctx, now, alice, "bob@peer-q", offer(5)))
        else {
            panic!()
        };
        let (mut qctx, qr) = q.ctx(&net);
        one(qr.introduce(&mut qctx, now, pk, *intro));
        assert!(qr.expire(&qctx, now + Duration::from_secs(1)).is_empty());
        let later = now + ATTEMPT_TIMEOUT + Duration::from_secs(1);
        let Out::Peer(to, PeerMessage::IntroduceAnswer { .. }) = one(qr.expire(&qctx, later))
        else {
            panic!()
        };
        assert_eq!(to, pk);
        let (ctx, r) = p.ctx(&net);
        let Out::Wallet(w, WalletMessage::ReachFailed { reason, .. }) = one(r.expire(&ctx, later))
        else {
            panic!()
        };
        assert_eq!(w, alice);
        assert!(reason.contains("in time"));
    }

    #[test]
    fn a_lying_peer_vouches_for_another_key() {
        let (mut p, mut q, net, alice, bob) = setup();
        q.lie = true;
        let (pk, qk) = (p.key(), q.key());
        let now = Instant::now();
        p.r.listen("alice", alice).unwrap();
        q.r.listen("bob", bob).unwrap();
        let (mut ctx, r) = p.ctx(&net);
        let Out::Peer(_, PeerMessage::Introduce(intro)) =
            one(r.reach(&mut ctx, now, alice, "bob@peer-q", offer(6)))
        else {
            panic!()
        };
        let (mut qctx, qr) = q.ctx(&net);
        one(qr.introduce(&mut qctx, now, pk, *intro));
        let Out::Peer(_, PeerMessage::IntroduceAnswer { answer, .. }) = relayed(
            qr.answer(&mut qctx, bob, [6; 16], Some(offer(6))),
            vec![bob],
            Some(pk),
        ) else {
            panic!()
        };
        let IntroAnswer::Accepted { voucher, .. } = *answer else {
            panic!()
        };
        // Properly signed by Q, but not bob's key: only the link's own
        // authentication can tell.
        voucher.verify(&CHAIN, &qk).unwrap();
        assert_ne!(voucher.login, bob.key);
    }
}
