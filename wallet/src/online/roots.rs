//! Before two wallets take anything from each other they agree that they
//! stand on one chain. Each sends the certified checkpoint it accepted
//! last (`Root`). Equal heights must be the same statement. Otherwise the
//! wallet with the newer root asks its own peer to prove that its
//! certified history extends the older root (a sync answer for no keys,
//! with a history consistency proof from the older size), checks that
//! itself, and sends it on (`Extends`, with the committee hand-overs the
//! other may lack); the other checks it against its own committee chain.
//! Whatever fails names the peers whose roots are not on one chain, the
//! link closes, and nothing held for the link is ever handled.

use super::{fail, Note, Online};
use crate::chain::{ChainState, GENESIS_FILE};
use bytes::Bytes;
use dag::committee::snapshot_of;
use dag::identity::PeerKey;
use dag::ledger::checkpoint::{Certified, Checkpoint, CommitteeChain, Handover};
use dag::ledger::light::{verify_sync, SyncAnswer, SyncRequest};
use dag::wire::{DirectMessage, MAX_WALLET_HANDOVERS};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{info, warn};

/// How long a new link may take to agree on roots.
pub(super) const ROOTS_TIMEOUT: Duration = Duration::from_secs(15);
/// Messages held for a link until its roots agree, at most.
const MAX_HELD: usize = 256;

/// Where a link stands on roots.
pub(super) enum LinkRoots {
    Pending(Box<Pending>),
    Agreed { height: u64 },
}

/// A link whose roots do not agree yet.
pub(super) struct Pending {
    since: Instant,
    /// Ours, as sent.
    ours: Option<Checkpoint>,
    /// Theirs, once received.
    theirs: Option<Checkpoint>,
    /// Messages that came before agreement, handled after it.
    held: Vec<DirectMessage>,
    /// A `connect` whose ping came back, answered after agreement.
    waiter: Option<(oneshot::Sender<Value>, Value)>,
}

impl Drop for Pending {
    /// A link that goes before its roots agree (closed by the other side,
    /// replaced, timed out) still answers the `connect` waiting on it.
    fn drop(&mut self) {
        if let Some((w, _)) = self.waiter.take() {
            let _ = w.send(fail(
                "the link closed before the two wallets agreed on the chain",
            ));
        }
    }
}

/// Proofs our peer gave that its history extends older roots, by the
/// older root's history size: a proof stays true, and links to the same
/// wallets (whose roots rarely move) would otherwise cost the peer a sync
/// each.
#[derive(Default)]
pub(super) struct ProofCache(std::collections::HashMap<u64, Box<SyncAnswer>>);

/// Proofs kept at most.
const MAX_CACHED_PROOFS: usize = 64;

/// Our peer's proof that our root extends a linked wallet's: for that
/// wallet's key and link id, and its root.
pub(super) type Proof = (PeerKey, usize, Checkpoint, Result<Box<SyncAnswer>, String>);

impl LinkRoots {
    pub(super) fn new() -> Self {
        LinkRoots::Pending(Box::new(Pending {
            since: Instant::now(),
            ours: None,
            theirs: None,
            held: Vec::new(),
            waiter: None,
        }))
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            LinkRoots::Pending(p) => Some(p.since + ROOTS_TIMEOUT),
            LinkRoots::Agreed { .. } => None,
        }
    }

    pub(super) fn json(&self) -> Value {
        match self {
            LinkRoots::Pending(_) => json!("pending"),
            LinkRoots::Agreed { height } => json!({"agreed_at": height}),
        }
    }
}

fn ask(known_leaves: u64) -> SyncRequest {
    SyncRequest {
        keys: Vec::new(),
        from: 0,
        watch: Vec::new(),
        known_leaves,
    }
}

impl Online {
    /// What this wallet has accepted, and the committees it derived.
    fn our_chain(&self) -> Result<(ChainState, CommitteeChain), String> {
        let state = ChainState::load(&self.dir).map_err(|e| e.to_string())?;
        let genesis = self
            .genesis
            .committee()
            .map_err(|e| format!("{GENESIS_FILE}: {e}"))?;
        let committees = state.committees(genesis).map_err(|e| e.to_string())?;
        Ok((state, committees))
    }

    /// The other wallet's peer (its name's `@` part).
    fn their_peer(&self, key: &PeerKey) -> String {
        self.links
            .get(key)
            .and_then(|l| l.name.split_once('@').map(|(_, p)| p.to_string()))
            .unwrap_or_else(|| "(unknown)".into())
    }

    /// Send our root on a new link.
    pub(super) fn send_root(&mut self, key: PeerKey) {
        let cp = match self.our_chain() {
            Ok((state, _)) => state.checkpoint,
            Err(e) => return self.roots_failed(key, &format!("cannot read our root: {e}"), false),
        };
        let Some(cp) = cp else {
            return self.roots_failed(key, "this wallet has accepted no root yet", false);
        };
        let Some(l) = self.links.get_mut(&key) else {
            return;
        };
        if let LinkRoots::Pending(p) = &mut l.roots {
            p.ours = Some(cp.statement.clone());
        }
        let _ = l
            .link
            .send(Bytes::from(DirectMessage::Root(Box::new(cp)).encode()));
        self.maybe_agree(key);
    }

    /// A frame on a link: roots messages here, the rest held until the
    /// roots agree (and handled by `handle`, then).
    pub(super) fn on_roots_message(&mut self, key: PeerKey, m: DirectMessage) {
        match m {
            DirectMessage::Root(theirs) => self.on_root(key, *theirs),
            DirectMessage::Extends { answer, handovers } => {
                self.on_extends(key, *answer, handovers)
            }
            DirectMessage::RootsDisagree(reason) => {
                let who = self.links.get(&key).map(|l| l.name.clone());
                let why = format!(
                    "{} says our roots are not on one chain: {reason}",
                    who.as_deref().unwrap_or("the other wallet")
                );
                self.roots_failed(key, &why, false);
            }
            other => {
                let Some(l) = self.links.get_mut(&key) else {
                    return;
                };
                match &mut l.roots {
                    LinkRoots::Agreed { .. } => {
                        let name = l.name.clone();
                        self.on_linked_message(key, name, other);
                    }
                    LinkRoots::Pending(p) if p.held.len() < MAX_HELD => p.held.push(other),
                    LinkRoots::Pending(_) => {
                        warn!(wallet = %l.name, "too much before the roots agree; dropped")
                    }
                }
            }
        }
    }

    fn on_root(&mut self, key: PeerKey, theirs: Certified<Checkpoint>) {
        let Some(l) = self.links.get(&key) else {
            return;
        };
        let LinkRoots::Pending(p) = &l.roots else {
            return;
        };
        // Compare with what we sent (a background sync may have moved the
        // stored root since).
        let (Some(ours), None) = (p.ours.clone(), &p.theirs) else {
            return;
        };
        let name = l.name.clone();
        let their_peer = self.their_peer(&key);
        let (state, committees) = match self.our_chain() {
            Ok(c) => c,
            Err(e) => return self.roots_failed(key, &format!("cannot read our root: {e}"), false),
        };
        let t = &theirs.statement;
        // A newer root may be certified by a committee we do not know yet:
        // its proof brings the hand-overs. Anything else must verify now.
        let unknown_committee = committees.committee_for(t.round).is_err();
        if !(unknown_committee && t.height > ours.height) {
            if let Err(e) = committees.verify_checkpoint(&theirs) {
                let why = format!(
                    "{name} sent a root for height {} that is not certified ({e}); it came from \
                     its peer {their_peer}",
                    t.height
                );
                return self.roots_failed(key, &why, true);
            }
        }
        if t.height == ours.height && *t != ours {
            let why = format!(
                "peer {} (ours) and peer {their_peer} ({name}'s) both certify height {} with \
                 different roots: the chain forked, or one of them serves another chain",
                self.name.peer, t.height
            );
            return self.roots_failed(key, &why, true);
        }
        let older = t.height < ours.height;
        if let Some(LinkRoots::Pending(p)) = self.links.get_mut(&key).map(|l| &mut l.roots) {
            p.theirs = Some(t.clone());
        }
        if older {
            // Ours is newer: our peer proves it extends theirs.
            let (keys, notes, their_cp) = (self.keys.clone(), self.notes_tx.clone(), t.clone());
            let link_id = self.links.get(&key).map_or(0, |l| l.link.id());
            if let Some(a) = self.proofs.0.get(&their_cp.roots.history_leaves) {
                let a = a.clone();
                return self.roots_proof(key, link_id, their_cp, Ok(a));
            }
            tokio::spawn(async move {
                let r = crate::session::prove_extends(&keys, &state, their_cp.roots.history_leaves)
                    .await
                    .map_err(|e| e.to_string());
                let _ = notes
                    .send(Note::RootsProof(Box::new((key, link_id, their_cp, r))))
                    .await;
            });
        } else {
            self.maybe_agree(key);
        }
    }

    /// Our peer's proof that our history extends the other's older root.
    pub(super) fn roots_proof(
        &mut self,
        key: PeerKey,
        link_id: usize,
        theirs: Checkpoint,
        r: Result<Box<SyncAnswer>, String>,
    ) {
        if self.links.get(&key).is_none_or(|l| l.link.id() != link_id) {
            return;
        }
        let name = self.links[&key].name.clone();
        let their_peer = self.their_peer(&key);
        let answer = match r {
            Ok(a) => a,
            Err(e) => {
                let why = format!(
                    "our peer {} could not prove its history: {e}",
                    self.name.peer
                );
                return self.roots_failed(key, &why, false);
            }
        };
        let (state, committees) = match self.our_chain() {
            Ok(c) => c,
            Err(e) => return self.roots_failed(key, &format!("cannot read our root: {e}"), false),
        };
        if let Err(e) = verify_sync(
            &ask(theirs.roots.history_leaves),
            &answer,
            &committees,
            Some(&theirs),
        ) {
            let why = format!(
                "the history peer {} (ours) certifies does not extend the root peer \
                 {their_peer} certified for {name} at height {}: {e}",
                self.name.peer, theirs.height
            );
            return self.roots_failed(key, &why, true);
        }
        if self.proofs.0.len() >= MAX_CACHED_PROOFS {
            self.proofs.0.clear();
        }
        self.proofs
            .0
            .insert(theirs.roots.history_leaves, answer.clone());
        let handovers: Vec<Certified<Handover>> = state
            .handovers
            .iter()
            .filter(|h| h.statement.snapshot > snapshot_of(theirs.round))
            .take(MAX_WALLET_HANDOVERS)
            .cloned()
            .collect();
        if let Some(l) = self.links.get(&key) {
            let _ = l.link.send(Bytes::from(
                DirectMessage::Extends { answer, handovers }.encode(),
            ));
        }
        // The two agree up to the older root.
        self.agree(key, theirs.height);
    }

    fn on_extends(
        &mut self,
        key: PeerKey,
        answer: SyncAnswer,
        handovers: Vec<Certified<Handover>>,
    ) {
        let Some(l) = self.links.get(&key) else {
            return;
        };
        let LinkRoots::Pending(p) = &l.roots else {
            return;
        };
        let (Some(ours), Some(theirs)) = (&p.ours, &p.theirs) else {
            return;
        };
        if theirs.height <= ours.height {
            return;
        }
        let (ours, name) = (ours.clone(), l.name.clone());
        let their_peer = self.their_peer(&key);
        let mut committees = match self.our_chain() {
            Ok((_, c)) => c,
            Err(e) => return self.roots_failed(key, &format!("cannot read our root: {e}"), false),
        };
        let checked = (|| {
            for h in &handovers {
                if h.statement.snapshot > committees.latest() {
                    committees
                        .extend(h)
                        .map_err(|e| format!("a hand-over: {e}"))?;
                }
            }
            verify_sync(
                &ask(ours.roots.history_leaves),
                &answer,
                &committees,
                Some(&ours),
            )
            .map_err(|e| e.to_string())
        })();
        match checked {
            Ok(v) => self.agree(key, v.checkpoint.height.min(ours.height)),
            Err(e) => {
                let why = format!(
                    "the history peer {their_peer} certifies (sent by {name}) does not extend \
                     the root peer {} certified for us at height {}: {e}",
                    self.name.peer, ours.height
                );
                self.roots_failed(key, &why, true)
            }
        }
    }

    /// Equal roots agree at once.
    fn maybe_agree(&mut self, key: PeerKey) {
        let Some(l) = self.links.get(&key) else {
            return;
        };
        if let LinkRoots::Pending(p) = &l.roots {
            if let (Some(o), Some(t)) = (&p.ours, &p.theirs) {
                if o == t {
                    let h = o.height;
                    self.agree(key, h);
                }
            }
        }
    }

    fn agree(&mut self, key: PeerKey, height: u64) {
        let Some(l) = self.links.get_mut(&key) else {
            return;
        };
        let was = std::mem::replace(&mut l.roots, LinkRoots::Agreed { height });
        let name = l.name.clone();
        info!(wallet = %name, height, "roots agree");
        let LinkRoots::Pending(mut p) = was else {
            return;
        };
        let (held, waiter) = (std::mem::take(&mut p.held), p.waiter.take());
        if let Some((w, mut info)) = waiter {
            info["ok"] = json!(true);
            info["roots_agreed_at"] = json!(height);
            let _ = w.send(info);
        }
        for m in held {
            self.on_linked_message(key, name.clone(), m);
        }
    }

    /// A `connect` whose ping came back: answered once the roots agree.
    pub(super) fn answer_when_agreed(
        &mut self,
        key: PeerKey,
        w: oneshot::Sender<Value>,
        mut info: Value,
    ) {
        match self.links.get_mut(&key).map(|l| &mut l.roots) {
            Some(LinkRoots::Pending(p)) => p.waiter = Some((w, info)),
            Some(LinkRoots::Agreed { height }) => {
                info["ok"] = json!(true);
                info["roots_agreed_at"] = json!(*height);
                let _ = w.send(info);
            }
            None => {
                let _ = w.send(fail("the link closed"));
            }
        }
    }

    /// Links whose roots did not agree in time.
    pub(super) fn roots_timeouts(&mut self, now: Instant) {
        let late: Vec<PeerKey> = self
            .links
            .iter()
            .filter(|(_, l)| l.roots.deadline().is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            let why = format!(
                "no agreement on certified roots within {} s",
                ROOTS_TIMEOUT.as_secs()
            );
            self.roots_failed(key, &why, false);
        }
    }

    /// The link ends: tell the other side why (when it is about the
    /// chain), answer a waiting `connect`, close it.
    fn roots_failed(&mut self, key: PeerKey, why: &str, tell: bool) {
        let Some(mut l) = self.links.remove(&key) else {
            return;
        };
        warn!(wallet = %l.name, "link closed: {why}");
        if tell {
            let _ = l.link.send(Bytes::from(
                DirectMessage::RootsDisagree(why.into()).encode(),
            ));
        }
        if let LinkRoots::Pending(p) = &mut l.roots {
            if let Some((w, _)) = p.waiter.take() {
                let _ = w.send(fail(why));
            }
        }
        // Pings waiting on this link get the reason, not a timeout.
        let waiting: Vec<u64> = self
            .pings
            .iter()
            .filter(|(_, p)| p.0 == key)
            .map(|(n, _)| *n)
            .collect();
        for n in waiting {
            if let Some((_, _, w, _)) = self.pings.remove(&n) {
                let _ = w.send(fail(why));
            }
        }
        let reason: String = why.chars().take(64).collect();
        if tell {
            // Give the reason a moment to arrive before the close.
            let (link, transport, vaddr) = (l.link.clone(), self.transport.clone(), l.vaddr);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                link.close(&reason);
                let _ = tokio::time::timeout(Duration::from_secs(3), link.closed()).await;
                transport.remove_route(vaddr);
            });
        } else {
            self.close_link(&l, &reason);
        }
        self.link_gone(&key, &l.name);
        self.refresh_expected();
    }
}
