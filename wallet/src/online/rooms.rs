//! Rooms and swaps in `wallet online`: the room owner keeps its members
//! (wallets linked to it) and their offers, and runs the swap's
//! [`Coordinator`] when the offers balance; every party (the owner too, if
//! it offers) runs its [`Party`] over its link to the owner. The protocol
//! itself is in [`crate::swap`]; this is the glue to links, the control
//! socket and the peer.

use super::{fail, path_json, Online};
use crate::chain::ChainState;
use crate::state_lock::StateLock;
use crate::swap::{Coordinator, Party, PartyStep, Step};
use bytes::Bytes;
use dag::identity::PeerKey;
use dag::ledger::asset::AssetId;
use dag::ledger::owner_keys::KeyPurpose;
use dag::ledger::swap::{balance, spends, Offer};
use dag::wire::{DirectMessage, WalletMessage, MAX_ROOM_MEMBERS};
use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::{info, warn};

/// A room this wallet owns.
#[derive(Default)]
pub(super) struct OwnedRoom {
    /// Members other than the owner: name and login key.
    pub(super) members: Vec<(String, PeerKey)>,
    offers: Vec<(PeerKey, Offer)>,
    swap: Option<Coordinator>,
}

/// This wallet's offer in a swap, waiting for the swap to end.
pub(super) struct Pending {
    party: Party,
    /// The room's owner (our own key if we own it).
    owner: PeerKey,
    waiter: oneshot::Sender<Value>,
}

#[derive(Default)]
pub(super) struct Rooms {
    pub(super) owned: HashMap<u64, OwnedRoom>,
    /// Rooms joined at other wallets: the owner's name and key.
    pub(super) joined: HashMap<u64, (String, PeerKey)>,
    /// Joins and member lists asked of owners, by room.
    waiting: HashMap<u64, oneshot::Sender<Value>>,
    /// Joins of accepted invitations, by room, with what the answer
    /// tells besides (the link's path).
    pub(super) joining: HashMap<u64, (oneshot::Sender<Value>, Value)>,
    pending: Option<Pending>,
    /// The swap transaction the owner submitted: room and id.
    submitted: Option<(u64, proofs::Hash)>,
    /// A swap request is syncing the wallet before it makes its offer.
    pub(super) preparing: bool,
}

/// `NAME@PEER/ID` (ID: 16 hex digits).
pub(super) fn parse_room(s: &str) -> Result<(String, u64), String> {
    let (owner, id) = s
        .rsplit_once('/')
        .ok_or_else(|| format!("{s:?} is not a room (NAME@PEER/ID)"))?;
    dag::ledger::names::WalletName::parse(owner).map_err(|e| e.to_string())?;
    let id = u64::from_str_radix(id, 16).map_err(|_| format!("{id:?} is not a room id"))?;
    Ok((owner.to_string(), id))
}

/// `AMOUNT:ASSET`, ASSET a 64-hex-digit id or `native`.
pub(super) fn parse_terms(s: &str) -> Result<(AssetId, u128), String> {
    let (amount, asset) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not AMOUNT:ASSET"))?;
    let amount: u128 = amount
        .parse()
        .map_err(|_| format!("{amount:?} is not an amount"))?;
    let asset = if asset == "native" {
        AssetId::NATIVE
    } else {
        AssetId(proofs::Hash(
            dag::hex::decode_array(asset).map_err(|_| format!("{asset:?} is not an asset id"))?,
        ))
    };
    Ok((asset, amount))
}

fn label(a: &AssetId) -> String {
    if *a == AssetId::NATIVE {
        "native".into()
    } else {
        a.0.to_string()
    }
}

impl Online {
    pub(super) fn room_request(&mut self, op: &str, req: &Value, tx: oneshot::Sender<Value>) {
        let room = req["room"].as_str().unwrap_or_default();
        match op {
            "room_create" => {
                let id = OsRng.next_u64();
                self.rooms.owned.insert(id, OwnedRoom::default());
                let _ = tx.send(json!({"ok": true, "room": format!("{}/{id:016x}", self.name)}));
            }
            "room_join" => match parse_room(room) {
                Err(e) => {
                    let _ = tx.send(fail(&e));
                }
                Ok((owner, _)) if owner == self.name.to_string() => {
                    let _ = tx.send(fail("this wallet owns that room"));
                }
                Ok((owner, id)) => match self.link_named(&owner) {
                    None => {
                        let _ = tx.send(fail(&format!("no link to {owner}: connect first")));
                    }
                    Some(key) => {
                        self.rooms.waiting.insert(id, tx);
                        self.send_direct(&key, DirectMessage::RoomJoin { room: id });
                    }
                },
            },
            "room_members" => match parse_room(room) {
                Err(e) => {
                    let _ = tx.send(fail(&e));
                }
                Ok((_, id)) => {
                    if let Some(r) = self.rooms.owned.get(&id) {
                        let members = self.members_json(r);
                        let _ = tx.send(json!({"ok": true, "room": room, "members": members}));
                    } else if let Some((_, key)) = self.rooms.joined.get(&id).cloned() {
                        self.rooms.waiting.insert(id, tx);
                        self.send_direct(&key, DirectMessage::RoomMembersAsk { room: id });
                    } else {
                        let _ = tx.send(fail("not in that room"));
                    }
                }
            },
            "room_leave" => match parse_room(room) {
                Err(e) => {
                    let _ = tx.send(fail(&e));
                }
                Ok((_, id)) => {
                    if let Some((_, key)) = self.rooms.joined.remove(&id) {
                        self.send_direct(&key, DirectMessage::RoomLeave { room: id });
                    } else if self.rooms.owned.remove(&id).is_none() {
                        let _ = tx.send(fail("not in that room"));
                        return;
                    }
                    let _ = tx.send(json!({"ok": true, "room": room}));
                }
            },
            "swap" => self.swap_request(req, tx),
            _ => {
                let _ = tx.send(fail("unknown request"));
            }
        }
    }

    fn members_json(&self, r: &OwnedRoom) -> Vec<Value> {
        let mut out = vec![json!({"name": self.name.to_string(), "path": "owner"})];
        for (name, key) in &r.members {
            let mut v = self
                .links
                .get(key)
                .map(|l| path_json(&l.path))
                .unwrap_or_else(|| json!({"path": "gone"}));
            v["name"] = json!(name);
            out.push(v);
        }
        out
    }

    pub(super) fn link_named(&self, name: &str) -> Option<PeerKey> {
        self.links
            .iter()
            .find(|(_, l)| l.name == name)
            .map(|(k, _)| *k)
    }

    pub(super) fn send_direct(&self, key: &PeerKey, msg: DirectMessage) {
        if let Some(l) = self.links.get(key) {
            if let Err(e) = l.link.send(Bytes::from(msg.encode())) {
                warn!(wallet = %l.name, "send: {e}");
            }
        }
    }

    /// A swap request: the wallet's proven state is brought up to date
    /// first (outputs received since the last sync can be offered), in a
    /// task, then [`Online::swap_synced`] makes the offer.
    fn swap_request(&mut self, req: &Value, tx: oneshot::Sender<Value>) {
        // A swap whose command gave up (it waits no more) is over here.
        if self
            .rooms
            .pending
            .as_ref()
            .is_some_and(|p| p.waiter.is_closed())
        {
            self.rooms.pending = None;
        }
        if self.rooms.pending.is_some() || self.rooms.preparing {
            let _ = tx.send(fail("this wallet is already in a swap"));
            return;
        }
        self.rooms.preparing = true;
        let (dir, keys, genesis) = (self.dir.clone(), self.keys.clone(), self.genesis.clone());
        let notes = self.notes_tx.clone();
        let req = req.clone();
        tokio::spawn(async move {
            let r = super::locked_sync(&dir, &keys, &genesis).await.map(|_| ());
            let _ = notes
                .send(super::Note::Synced(Box::new((req, tx, r))))
                .await;
        });
    }

    pub(super) fn swap_synced(&mut self, req: &Value, tx: oneshot::Sender<Value>) {
        self.rooms.preparing = false;
        type Terms = (AssetId, u128);
        let parsed = (|| -> Result<(String, u64, Terms, Terms, u128), String> {
            let (owner, id) = parse_room(req["room"].as_str().unwrap_or_default())?;
            let give = parse_terms(req["give"].as_str().unwrap_or_default())?;
            let want = parse_terms(req["want"].as_str().unwrap_or_default())?;
            let fee = match req["fee"].as_str() {
                None => 0,
                Some(f) => f.parse().map_err(|_| format!("bad fee {f:?}"))?,
            };
            Ok((owner, id, give, want, fee))
        })();
        let (owner, room, give, want, fee) = match parsed {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(fail(&e));
                return;
            }
        };
        if self.rooms.pending.is_some() {
            let _ = tx.send(fail("this wallet is already in a swap"));
            return;
        }
        let own = owner == self.name.to_string();
        let owner_key = if own {
            if !self.rooms.owned.contains_key(&room) {
                let _ = tx.send(fail("no such room"));
                return;
            }
            self.login_key
        } else {
            match self.rooms.joined.get(&room) {
                Some((_, k)) => *k,
                None => {
                    let _ = tx.send(fail("join the room first"));
                    return;
                }
            }
        };
        let (offer, keys) = match self.make_offer(give, want, fee) {
            Ok(x) => x,
            Err(e) => {
                let _ = tx.send(fail(&e));
                return;
            }
        };
        info!(
            room = format!("{room:016x}"),
            "offering: give {give:?}, want {want:?}"
        );
        self.rooms.pending = Some(Pending {
            party: Party::new(room, offer.clone(), keys),
            owner: owner_key,
            waiter: tx,
        });
        if own {
            let me = self.login_key;
            self.take_offer(room, me, offer);
        } else {
            self.send_direct(
                &owner_key,
                DirectMessage::SwapOffer {
                    room,
                    offer: Box::new(offer),
                },
            );
        }
    }

    /// Our terms: outputs of the given asset (proven in our state), fresh
    /// keys for what we get and our change (taken before anything leaves).
    fn make_offer(
        &mut self,
        give: (AssetId, u128),
        want: (AssetId, u128),
        fee: u128,
    ) -> Result<(Offer, Vec<schnorrkel::Keypair>), String> {
        // The event loop must not wait: a command holding the state is
        // asked to finish first.
        let _lock = StateLock::try_take(&self.dir).map_err(|e| e.to_string())?;
        let mut state = ChainState::load(&self.dir).map_err(|e| e.to_string())?;
        // The given asset, and native money for the fee share (the same
        // outputs when the given asset is native).
        let need = spends(give, fee).ok_or("the fee overflows")?;
        let mut held = Vec::new();
        for (asset, amount) in &need {
            let (h, _) = state.select(asset, *amount).ok_or_else(|| {
                format!(
                    "not enough {} to give {amount} (fee share included)",
                    label(asset)
                )
            })?;
            held.extend(h.into_iter().cloned());
        }
        let inputs: Vec<_> = held
            .iter()
            .map(|h| (h.id, h.state.output.clone()))
            .collect();
        let keys: Vec<_> = held
            .iter()
            .map(|h| self.keys.derive(h.purpose, h.index))
            .collect();
        let (receive, change) = (state.change_next, state.change_next + 1);
        state.change_next += 2;
        state.save(&self.dir).map_err(|e| e.to_string())?;
        let offer = Offer {
            party: self.name.to_string(),
            give,
            want,
            inputs,
            receive: self.keys.public(KeyPurpose::Change, receive),
            receive_host: (want.0 == AssetId::NATIVE).then_some(self.peer_key),
            change: self.keys.public(KeyPurpose::Change, change),
            fee,
        };
        offer.check().map_err(|e| e.to_string())?;
        Ok((offer, keys))
    }

    /// The owner takes `from`'s offer; a swap starts when the room's
    /// offers balance.
    fn take_offer(&mut self, room: u64, from: PeerKey, offer: Offer) {
        let Some(r) = self.rooms.owned.get_mut(&room) else {
            return;
        };
        // Kept while a swap runs: it may balance with the next offers.
        r.offers.retain(|(k, _)| *k != from);
        r.offers.push((from, offer));
        self.try_swap(room);
    }

    /// Start a swap of the room's offers if none runs and they balance.
    fn try_swap(&mut self, room: u64) {
        let Some(r) = self.rooms.owned.get_mut(&room) else {
            return;
        };
        if r.swap.as_ref().is_some_and(|s| !s.is_over()) {
            return;
        }
        let only: Vec<Offer> = r.offers.iter().map(|(_, o)| o.clone()).collect();
        if r.offers.len() < 2 || balance(&only).is_err() {
            return;
        }
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let offers = std::mem::take(&mut r.offers);
        match Coordinator::start(id, self.chain, &offers, Instant::now()) {
            Ok((c, steps)) => {
                info!(parties = c.parties(), "swap proposed");
                r.swap = Some(c);
                self.run_steps(room, steps);
            }
            Err(e) => {
                // Balanced but unbuildable (a bad input): everyone is told.
                for (k, _) in &offers {
                    self.deliver_to_party(
                        room,
                        k,
                        DirectMessage::SwapAbort {
                            swap: [0; 16],
                            reason: e.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Carry out the coordinator's steps (messages to ourselves as a party
    /// are handled in process, and may produce more).
    fn run_steps(&mut self, room: u64, steps: Vec<Step>) {
        let mut queue: std::collections::VecDeque<Step> = steps.into();
        while let Some(step) = queue.pop_front() {
            match step {
                Step::Send(to, msg) if to == self.login_key => {
                    if let Some(reply) = self.as_party(msg) {
                        let me = self.login_key;
                        if let Some(c) = self.coordinator(room) {
                            queue.extend(c.on_message(&me, reply, Instant::now()));
                        }
                    }
                }
                Step::Send(to, msg) => self.send_direct(&to, msg),
                Step::Submit(tx) => {
                    info!(tx = %tx.id(), "submitting the swap");
                    self.rooms.submitted = Some((room, tx.id()));
                    let m = WalletMessage::Submit(vec![tx.encode()]);
                    if let Err(e) = self.peer.send(Bytes::from(m.encode())) {
                        let reason = format!("could not submit to peer {}: {e}", self.name.peer);
                        if let Some(c) = self.coordinator(room) {
                            queue.extend(c.abort(reason));
                        }
                    }
                }
                // The aborted swap's offers were taken when it started;
                // those that came meanwhile stay for the next.
                Step::Aborted(reason) => warn!("swap aborted: {reason}"),
            }
        }
    }

    fn coordinator(&mut self, room: u64) -> Option<&mut Coordinator> {
        self.rooms.owned.get_mut(&room)?.swap.as_mut()
    }

    /// Deliver `msg` to a party: in process if it is us, else over its link.
    fn deliver_to_party(&mut self, _room: u64, key: &PeerKey, msg: DirectMessage) {
        if *key == self.login_key {
            let _ = self.as_party(msg);
        } else {
            self.send_direct(key, msg);
        }
    }

    /// A swap message from the owner to us as a party: our reply, if any.
    /// Ends our pending swap on abort or done.
    fn as_party(&mut self, msg: DirectMessage) -> Option<DirectMessage> {
        match msg {
            DirectMessage::SwapAbort { reason, .. } => {
                if let Some(p) = self.rooms.pending.take() {
                    let _ = p.waiter.send(fail(&format!("swap aborted: {reason}")));
                }
                None
            }
            DirectMessage::SwapDone {
                tx,
                height,
                parties,
                ..
            } => {
                if let Some(p) = self.rooms.pending.take() {
                    let o = &p.party.offer;
                    let _ = p.waiter.send(json!({
                        "ok": true,
                        "txid": tx.to_string(),
                        "height": height,
                        "parties": parties,
                        "gave": format!("{}:{}", o.give.1, label(&o.give.0)),
                        "fee": o.fee.to_string(),
                        "got": format!("{}:{}", o.want.1, label(&o.want.0)),
                    }));
                }
                None
            }
            other => match self.rooms.pending.as_mut()?.party.on_message(other) {
                PartyStep::Reply(r) => Some(r),
                PartyStep::None => None,
            },
        }
    }

    /// A direct message about rooms or swaps from linked wallet `key`.
    pub(super) fn on_room_message(&mut self, key: PeerKey, name: String, msg: DirectMessage) {
        match msg {
            DirectMessage::RoomJoin { room } => {
                let reply = match self.rooms.owned.get_mut(&room) {
                    Some(r) if r.members.len() + 1 < MAX_ROOM_MEMBERS => {
                        if !r.members.iter().any(|(_, k)| *k == key) {
                            r.members.push((name.clone(), key));
                        }
                        info!(member = %name, "joined a room");
                        let mut members = vec![self.name.to_string()];
                        members.extend(r.members.iter().map(|(n, _)| n.clone()));
                        DirectMessage::RoomJoined { room, members }
                    }
                    Some(_) => DirectMessage::RoomRefused {
                        room,
                        reason: "the room is full".into(),
                    },
                    None => DirectMessage::RoomRefused {
                        room,
                        reason: "no such room".into(),
                    },
                };
                self.send_direct(&key, reply);
            }
            DirectMessage::RoomJoined { room, members } => {
                if let Some(w) = self.rooms.waiting.remove(&room) {
                    self.rooms.joined.insert(room, (name, key));
                    let _ = w.send(json!({"ok": true, "members": members}));
                } else if let Some((w, mut info)) = self.rooms.joining.remove(&room) {
                    self.rooms.joined.insert(room, (name, key));
                    info["ok"] = json!(true);
                    info["joined"] = json!(true);
                    info["members"] = json!(members);
                    let _ = w.send(info);
                }
            }
            DirectMessage::RoomRefused { room, reason } => {
                let w = self
                    .rooms
                    .waiting
                    .remove(&room)
                    .or_else(|| self.rooms.joining.remove(&room).map(|(w, _)| w));
                if let Some(w) = w {
                    let _ = w.send(fail(&format!("{name} refused: {reason}")));
                }
            }
            DirectMessage::RoomMembersAsk { room } => {
                let members = match self.rooms.owned.get(&room) {
                    Some(r) if r.members.iter().any(|(_, k)| *k == key) => self
                        .members_json(r)
                        .into_iter()
                        .map(|v| {
                            (
                                v["name"].as_str().unwrap_or("").to_string(),
                                v["path"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                self.send_direct(&key, DirectMessage::RoomMembers { room, members });
            }
            DirectMessage::RoomMembers { room, members } => {
                if let Some(w) = self.rooms.waiting.remove(&room) {
                    let list: Vec<Value> = members
                        .into_iter()
                        .map(|(n, p)| json!({"name": n, "path": p}))
                        .collect();
                    let _ = w.send(json!({"ok": true, "members": list}));
                }
            }
            DirectMessage::RoomLeave { room } => self.member_left(room, &key),
            DirectMessage::SwapOffer { room, offer } => {
                let member = self
                    .rooms
                    .owned
                    .get(&room)
                    .is_some_and(|r| r.members.iter().any(|(_, k)| *k == key));
                if !member {
                    return;
                }
                if offer.party != name {
                    let reason = format!("the offer names {}, the link {name}", offer.party);
                    self.send_direct(
                        &key,
                        DirectMessage::SwapAbort {
                            swap: [0; 16],
                            reason,
                        },
                    );
                    return;
                }
                self.take_offer(room, key, *offer);
            }
            // Rounds of a swap we coordinate, from a party.
            m @ (DirectMessage::SwapCommit { .. }
            | DirectMessage::SwapReveal { .. }
            | DirectMessage::SwapCosign { .. }
            | DirectMessage::SwapSigned { .. }
            | DirectMessage::SwapRefuse { .. })
                if self.coordinating(&m) =>
            {
                let room = self.room_of_swap(&m);
                if let Some(room) = room {
                    let steps = self
                        .coordinator(room)
                        .map(|c| c.on_message(&key, m, Instant::now()))
                        .unwrap_or_default();
                    self.run_steps(room, steps);
                }
            }
            // From the owner to us as a party.
            m => {
                let from_owner = self.rooms.pending.as_ref().is_some_and(|p| p.owner == key);
                if from_owner {
                    if let Some(reply) = self.as_party(m) {
                        self.send_direct(&key, reply);
                    }
                }
            }
        }
    }

    fn swap_id(m: &DirectMessage) -> Option<[u8; 16]> {
        match m {
            DirectMessage::SwapCommit { swap, .. }
            | DirectMessage::SwapReveal { swap, .. }
            | DirectMessage::SwapCosign { swap, .. }
            | DirectMessage::SwapSigned { swap, .. }
            | DirectMessage::SwapRefuse { swap, .. } => Some(*swap),
            _ => None,
        }
    }

    fn room_of_swap(&self, m: &DirectMessage) -> Option<u64> {
        let id = Self::swap_id(m)?;
        self.rooms
            .owned
            .iter()
            .find(|(_, r)| r.swap.as_ref().is_some_and(|c| c.id == id))
            .map(|(k, _)| *k)
    }

    /// Whether `m` is a round message of a swap we coordinate (and not
    /// one the owner relays to us as a party).
    fn coordinating(&self, m: &DirectMessage) -> bool {
        self.room_of_swap(m).is_some()
            && !self
                .rooms
                .pending
                .as_ref()
                .is_some_and(|p| p.owner != self.login_key && p.party.swap() == Self::swap_id(m))
    }

    /// A member left the room (or its link closed).
    pub(super) fn member_left(&mut self, room: u64, key: &PeerKey) {
        let Some(r) = self.rooms.owned.get_mut(&room) else {
            return;
        };
        r.members.retain(|(_, k)| k != key);
        r.offers.retain(|(k, _)| k != key);
        let steps = r.swap.as_mut().map(|c| c.on_left(key)).unwrap_or_default();
        self.run_steps(room, steps);
    }

    /// Wallet `key`'s link closed: it leaves our rooms; if it owned the
    /// room of our pending swap, that swap is off.
    pub(super) fn link_gone(&mut self, key: &PeerKey, name: &str) {
        self.pay_link_gone(key, name);
        let rooms: Vec<u64> = self.rooms.owned.keys().copied().collect();
        for room in rooms {
            self.member_left(room, key);
        }
        self.rooms.joined.retain(|_, (_, k)| k != key);
        if self.rooms.pending.as_ref().is_some_and(|p| p.owner == *key) {
            if let Some(p) = self.rooms.pending.take() {
                let _ = p
                    .waiter
                    .send(fail(&format!("swap aborted: the room's owner {name} left")));
            }
        }
    }

    /// Our peer's word on a submitted swap transaction.
    pub(super) fn swap_final(&mut self, msg: &WalletMessage) {
        let Some((room, txid)) = self.rooms.submitted else {
            return;
        };
        let steps = match msg {
            WalletMessage::Submitted(list) => match list.iter().find(|(t, _)| *t == txid) {
                Some((_, Some(why))) => {
                    let reason = format!("peer {} refused the transaction: {why}", self.name.peer);
                    self.rooms.submitted = None;
                    self.coordinator(room)
                        .map(|c| c.abort(reason))
                        .unwrap_or_default()
                }
                _ => Vec::new(),
            },
            WalletMessage::Finalized(list) => match list.iter().find(|(t, _, _)| *t == txid) {
                Some((_, height, outcome)) => {
                    self.rooms.submitted = None;
                    if matches!(outcome, dag::ledger::apply::Outcome::Applied) {
                        info!(height, "swap final");
                        self.coordinator(room)
                            .map(|c| c.on_final(*height))
                            .unwrap_or_default()
                    } else {
                        let reason = format!("the chain rejected the transaction: {outcome:?}");
                        self.coordinator(room)
                            .map(|c| c.abort(reason))
                            .unwrap_or_default()
                    }
                }
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        self.run_steps(room, steps);
        self.try_swap(room);
    }

    /// Round deadlines of swaps we coordinate.
    pub(super) fn swap_timeouts(&mut self, now: Instant) -> Option<Instant> {
        let rooms: Vec<u64> = self.rooms.owned.keys().copied().collect();
        let mut next = None::<Instant>;
        for room in rooms {
            let steps = self
                .coordinator(room)
                .map(|c| c.on_timeout(now))
                .unwrap_or_default();
            self.run_steps(room, steps);
            if let Some(d) = self.coordinator(room).and_then(|c| c.deadline()) {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        next
    }

    pub(super) fn next_swap_deadline(&self) -> Option<Instant> {
        self.rooms
            .owned
            .values()
            .filter_map(|r| r.swap.as_ref().and_then(|c| c.deadline()))
            .min()
    }
}
