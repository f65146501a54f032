//! Invitations into rooms, without a peer: a member M of room R invites a
//! wallet C it is linked with (`RoomInvite`, carrying the owner O's
//! voucher); C accepts with its half of a link attempt to O and its own
//! voucher (`RoomInviteAccept`), which M passes on to O over the M–O link;
//! O answers with its half (`RoomInviteAnswer`), which M passes back. Both
//! then punch as after a peer's introduction, C dials O expecting the key
//! O's peer vouched for, and joins R over the new link. Every message goes
//! over links between wallets: no peer sees any of it, so none can relay
//! the link either (see `specs/nat.md`, "Invites without a peer").

use super::{fail, path_json, Attempt, Online, CONNECT_TIMEOUT};
use dag::hex;
use dag::identity::PeerKey;
use dag::ledger::names::NameVoucher;
use dag::rendezvous::{IntroAnswer, LinkOffer};
use dag::wire::DirectMessage;
use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{info, warn};

/// How long an invitation stays valid, at both ends.
pub(super) const INVITE_TTL: Duration = Duration::from_secs(600);
/// Most invitations kept each way (received; sent); the oldest goes.
pub(super) const MAX_INVITES: usize = 64;
/// Most attempts an owner runs at once, and a member passes on.
const MAX_INVITE_ATTEMPTS: usize = 64;

/// An invitation this wallet received and may accept.
struct Received {
    room: u64,
    owner: NameVoucher,
    /// The owner's name, `login@peer`, as its voucher says.
    owner_name: String,
    from: String,
    from_key: PeerKey,
    at: Instant,
}

/// An invitation this wallet sent: only the wallet it went to may use it,
/// once.
struct Sent {
    room: u64,
    to: PeerKey,
    at: Instant,
}

/// An attempt this member passes on between the invited wallet and the
/// owner (by attempt id): the answer goes back only from that owner to
/// that wallet.
struct Forward {
    invited: PeerKey,
    owner: PeerKey,
    at: Instant,
}

#[derive(Default)]
pub(super) struct Invites {
    received: HashMap<[u8; 16], Received>,
    sent: HashMap<[u8; 16], Sent>,
    forwards: HashMap<[u8; 16], Forward>,
}

/// What a link attempt made by accepting an invitation does once up.
pub(super) struct Joining {
    pub(super) room: u64,
    pub(super) room_name: String,
    pub(super) owner: String,
    /// The inviter, whose link carries the attempt's messages.
    via: String,
    via_key: PeerKey,
}

/// Insert into a map bounded to `max` entries, dropping the oldest first.
fn insert_bounded<V>(
    map: &mut HashMap<[u8; 16], V>,
    id: [u8; 16],
    v: V,
    max: usize,
    at: impl Fn(&V) -> Instant,
) {
    while map.len() >= max {
        let Some(oldest) = map.iter().min_by_key(|(_, v)| at(v)).map(|(k, _)| *k) else {
            break;
        };
        map.remove(&oldest);
    }
    map.insert(id, v);
}

impl Invites {
    fn prune(&mut self, now: Instant) {
        self.received
            .retain(|_, r| now.duration_since(r.at) < INVITE_TTL);
        self.sent
            .retain(|_, s| now.duration_since(s.at) < INVITE_TTL);
        self.forwards
            .retain(|_, f| now.duration_since(f.at) < CONNECT_TIMEOUT);
    }
}

impl Online {
    /// `room_invite {room, to}`: invite linked wallet `to` into `room`,
    /// which this wallet owns or has joined.
    pub(super) fn invite_request(&mut self, req: &Value, tx: oneshot::Sender<Value>) {
        let r = (|| -> Result<Value, String> {
            let room_name = req["room"].as_str().unwrap_or_default();
            let (owner, room) = super::rooms::parse_room(room_name)?;
            let to = req["to"].as_str().ok_or("invite needs \"to\"")?;
            let own = owner == self.name.to_string();
            let owner_voucher = if own {
                if !self.rooms.owned.contains_key(&room) {
                    return Err("no such room".into());
                }
                self.voucher
                    .clone()
                    .ok_or("this wallet has no voucher from its peer: log in again")?
            } else {
                let (_, key) = self
                    .rooms
                    .joined
                    .get(&room)
                    .ok_or("not in that room: join it first")?;
                self.links
                    .get(key)
                    .and_then(|l| l.voucher.clone())
                    .ok_or("no voucher for the room's owner")?
            };
            if to == owner {
                return Err(format!("{to} owns that room"));
            }
            let to_key = self.link_named(to).ok_or_else(|| {
                format!("no link to {to}: connect first (the invitation goes over that link)")
            })?;
            let mut invite = [0u8; 16];
            OsRng.fill_bytes(&mut invite);
            let now = Instant::now();
            self.invites.prune(now);
            let sent = Sent {
                room,
                to: to_key,
                at: now,
            };
            insert_bounded(&mut self.invites.sent, invite, sent, MAX_INVITES, |s| s.at);
            self.send_direct(
                &to_key,
                DirectMessage::RoomInvite {
                    invite,
                    room,
                    owner: Box::new(owner_voucher),
                    from: self.name.to_string(),
                },
            );
            info!(%to, room = room_name, "invited");
            Ok(json!({"ok": true, "id": hex::encode(&invite), "room": room_name, "to": to}))
        })();
        let _ = tx.send(r.unwrap_or_else(|e| fail(&e)));
    }

    /// `room_invites`: the invitations received and not yet taken.
    pub(super) fn invites_request(&mut self, tx: oneshot::Sender<Value>) {
        self.invites.prune(Instant::now());
        let mut list: Vec<(&[u8; 16], &Received)> = self.invites.received.iter().collect();
        list.sort_by_key(|(_, r)| r.at);
        let invites: Vec<Value> = list
            .into_iter()
            .map(|(id, r)| {
                json!({
                    "id": hex::encode(id),
                    "room": format!("{}/{:016x}", r.owner_name, r.room),
                    "from": r.from,
                    "owner": r.owner_name,
                    "age_s": r.at.elapsed().as_secs(),
                })
            })
            .collect();
        let _ = tx.send(json!({"ok": true, "invites": invites}));
    }

    /// `room_accept {id}`: link to the room's owner, introduced over the
    /// inviter's links, and join; answered once joined (or failed).
    pub(super) fn accept_request(&mut self, req: &Value, tx: oneshot::Sender<Value>) {
        let text = req["id"].as_str().unwrap_or_default();
        let Ok(id) = hex::decode_array::<16>(text) else {
            let _ = tx.send(fail(&format!(
                "{text:?} is not an invitation id (32 hex digits)"
            )));
            return;
        };
        self.invites.prune(Instant::now());
        let Some(inv) = self.invites.received.remove(&id) else {
            let _ = tx.send(fail(&format!(
                "no invitation {text} (expired, taken, or never received; \
                 `wallet room invites` lists them)"
            )));
            return;
        };
        let room_name = format!("{}/{:016x}", inv.owner_name, inv.room);
        if self.rooms.joined.contains_key(&inv.room) {
            let _ = tx.send(fail(&format!("already in {room_name}")));
            return;
        }
        // Already linked to the owner (always so when the owner invited):
        // join over that link.
        if let Some(l) = self.links.get(&inv.owner.login) {
            let mut info = path_json(&l.path);
            info["room"] = json!(room_name);
            info["reused"] = json!(true);
            self.rooms.joining.insert(inv.room, (tx, info));
            let owner = inv.owner.login;
            self.send_direct(&owner, DirectMessage::RoomJoin { room: inv.room });
            return;
        }
        let Some(mine) = self.voucher.clone() else {
            let _ = tx.send(fail(
                "this wallet has no voucher from its peer: log in again",
            ));
            return;
        };
        if !self.links.contains_key(&inv.from_key) {
            let _ = tx.send(fail(&format!(
                "the link to {} that brought the invitation is gone",
                inv.from
            )));
            return;
        }
        if self.candidates.is_empty() {
            let _ = tx.send(fail("this wallet knows no address of its own yet"));
            return;
        }
        let mut attempt = [0u8; 16];
        OsRng.fill_bytes(&mut attempt);
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        let vaddr = self.transport.new_route();
        let mut a = Attempt::new(vaddr, key, Some(tx));
        a.other = Some((inv.owner_name.clone(), inv.owner.login));
        a.voucher = Some(inv.owner.clone());
        a.joining = Some(Joining {
            room: inv.room,
            room_name,
            owner: inv.owner_name.clone(),
            via: inv.from.clone(),
            via_key: inv.from_key,
        });
        self.attempts.insert(attempt, a);
        info!(owner = %inv.owner_name, via = %inv.from, "accepting an invitation");
        self.send_direct(
            &inv.from_key,
            DirectMessage::RoomInviteAccept {
                invite: id,
                room: inv.room,
                from: Box::new(mine),
                offer: self.offer(attempt, key),
            },
        );
    }

    /// An invitation message from linked wallet `key` (named `name`).
    pub(super) fn on_invite_message(&mut self, key: PeerKey, name: String, msg: DirectMessage) {
        let now = Instant::now();
        self.invites.prune(now);
        match msg {
            DirectMessage::RoomInvite {
                invite,
                room,
                owner,
                from,
            } => {
                if from != name {
                    warn!(wallet = %name, "an invitation that names {from} as its sender");
                    return;
                }
                let owner_name = match self.check_voucher(&owner) {
                    Ok(n) => n,
                    Err(e) => {
                        warn!(wallet = %name, "an invitation with a bad owner voucher: {e}");
                        return;
                    }
                };
                if owner.login == self.login_key || self.invites.received.contains_key(&invite) {
                    return;
                }
                info!(from = %name, owner = %owner_name, "invited into a room");
                let r = Received {
                    room,
                    owner: *owner,
                    owner_name,
                    from,
                    from_key: key,
                    at: now,
                };
                insert_bounded(&mut self.invites.received, invite, r, MAX_INVITES, |r| r.at);
            }
            DirectMessage::RoomInviteAccept {
                invite,
                room,
                from,
                offer,
            } => self.invite_accepted(key, &name, invite, room, *from, offer),
            DirectMessage::RoomInviteAnswer { attempt, answer } => {
                self.invite_answered(key, &name, attempt, *answer)
            }
            _ => {}
        }
    }

    fn refuse_invited(&self, to: &PeerKey, attempt: [u8; 16], reason: String) {
        self.send_direct(
            to,
            DirectMessage::RoomInviteAnswer {
                attempt,
                answer: Box::new(IntroAnswer::Failed(reason)),
            },
        );
    }

    /// An acceptance from `key`: the invited wallet itself (we invited
    /// it) or a member passing it on (we own the room).
    fn invite_accepted(
        &mut self,
        key: PeerKey,
        name: &str,
        invite: [u8; 16],
        room: u64,
        from: NameVoucher,
        offer: LinkOffer,
    ) {
        let attempt = offer.attempt;
        // Our own invitation: only the wallet it went to takes it, once,
        // with a voucher for the key of the link it came on.
        let ours = match self.invites.sent.get(&invite) {
            Some(s) if s.to == key && s.room == room => {
                self.invites.sent.remove(&invite);
                if from.login != key {
                    let why = format!("the voucher names another key than {name}'s");
                    return self.refuse_invited(&key, attempt, why);
                }
                true
            }
            _ => false,
        };
        let me = self.name.to_string();
        if let Some(r) = self.rooms.owned.get(&room) {
            if !ours && !r.members.iter().any(|(_, k)| *k == key) {
                let why = format!("{name} is not in the room");
                return self.refuse_invited(&key, attempt, why);
            }
            return self.answer_invited(key, from, offer);
        }
        if !ours {
            let why = format!("{me} sent no such invitation to {name}");
            return self.refuse_invited(&key, attempt, why);
        }
        let owner = match self.rooms.joined.get(&room) {
            Some((_, k)) if self.links.contains_key(k) => *k,
            _ => {
                let why = format!("{me} is no longer linked to the room's owner");
                return self.refuse_invited(&key, attempt, why);
            }
        };
        if self.invites.forwards.contains_key(&attempt) {
            return;
        }
        if self.invites.forwards.len() >= MAX_INVITE_ATTEMPTS {
            let why = format!("{me} passes on too many invitations at once");
            return self.refuse_invited(&key, attempt, why);
        }
        let f = Forward {
            invited: key,
            owner,
            at: Instant::now(),
        };
        self.invites.forwards.insert(attempt, f);
        info!(invited = %name, "passing an accepted invitation on to the room's owner");
        self.send_direct(
            &owner,
            DirectMessage::RoomInviteAccept {
                invite,
                room,
                from: Box::new(from),
                offer,
            },
        );
    }

    /// As the room's owner: answer the invited wallet's half (which came
    /// over `via`'s link) with ours, and punch toward it. It joins by
    /// `RoomJoin` once the link is up, as any member does.
    fn answer_invited(&mut self, via: PeerKey, from: NameVoucher, offer: LinkOffer) {
        let attempt = offer.attempt;
        let name = match self.check_voucher(&from) {
            Ok(n) => n,
            Err(e) => return self.refuse_invited(&via, attempt, e),
        };
        if from.login == self.login_key {
            let why = "the invited wallet is the room's owner".to_string();
            return self.refuse_invited(&via, attempt, why);
        }
        if self.attempts.contains_key(&attempt) {
            return;
        }
        if self.attempts.len() >= MAX_INVITE_ATTEMPTS {
            let why = "the room's owner has too many link attempts under way".to_string();
            return self.refuse_invited(&via, attempt, why);
        }
        let Some(mine) = self.voucher.clone() else {
            let why = "the room's owner has no voucher from its peer".to_string();
            return self.refuse_invited(&via, attempt, why);
        };
        if self.candidates.is_empty() {
            let why = "the room's owner knows no address of its own yet".to_string();
            return self.refuse_invited(&via, attempt, why);
        }
        let vaddr = self.transport.new_route();
        self.attempts
            .insert(attempt, Attempt::new(vaddr, offer.key, None));
        self.send_direct(
            &via,
            DirectMessage::RoomInviteAnswer {
                attempt,
                answer: Box::new(IntroAnswer::Accepted {
                    voucher: mine,
                    offer: self.offer(attempt, [0; 32]),
                }),
            },
        );
        info!(invited = %name, "answering an accepted invitation");
        // Started on sending, as the invited wallet starts on receipt: no
        // peer measures the links' round trips to time both starts, and
        // punching tolerates the offset (it resends every 100 ms).
        self.start_punch(
            attempt,
            &from,
            name,
            offer.key,
            &offer,
            Instant::now(),
            false,
        );
    }

    /// The owner's answer: passed on if we forward that attempt, else
    /// ours (we accepted an invitation that came over `key`'s link).
    fn invite_answered(
        &mut self,
        key: PeerKey,
        name: &str,
        attempt: [u8; 16],
        answer: IntroAnswer,
    ) {
        if let Some(f) = self.invites.forwards.get(&attempt) {
            if f.owner == key {
                let invited = f.invited;
                self.invites.forwards.remove(&attempt);
                self.send_direct(
                    &invited,
                    DirectMessage::RoomInviteAnswer {
                        attempt,
                        answer: Box::new(answer),
                    },
                );
            }
            return;
        }
        let Some(a) = self.attempts.get(&attempt) else {
            return;
        };
        let Some(j) = a.joining.as_ref().filter(|j| j.via_key == key) else {
            return;
        };
        if a.punch.is_some() {
            return;
        }
        let (via, owner) = (j.via.clone(), j.owner.clone());
        let expected = a.voucher.as_ref().map(|v| v.login);
        let key_of_attempt = a.key;
        match answer {
            IntroAnswer::Failed(reason) => {
                self.end_attempt(attempt, Err(format!("{via} passed on: {reason}")));
            }
            IntroAnswer::Accepted { voucher, offer } => {
                let checked = self.check_voucher(&voucher).and_then(|n| {
                    if n != owner || Some(voucher.login) != expected {
                        Err(format!(
                            "{name} passed on an answer from {n} ({}), not from the room's owner {owner}",
                            voucher.login
                        ))
                    } else if offer.attempt != attempt {
                        Err(format!("{name} passed on an answer for another attempt"))
                    } else {
                        Ok(n)
                    }
                });
                match checked {
                    Ok(n) => self.start_punch(
                        attempt,
                        &voucher,
                        n,
                        key_of_attempt,
                        &offer,
                        Instant::now(),
                        false,
                    ),
                    Err(e) => self.end_attempt(attempt, Err(e)),
                }
            }
        }
    }

    /// Our accepted invitation's link is up: join the room over it; the
    /// `accept` command is answered by the owner's `RoomJoined`.
    pub(super) fn join_invited(
        &mut self,
        owner: PeerKey,
        j: &Joining,
        waiter: oneshot::Sender<Value>,
        mut info: Value,
    ) {
        info["room"] = json!(j.room_name);
        info["via"] = json!(j.via);
        self.rooms.joining.insert(j.room, (waiter, info));
        self.send_direct(&owner, DirectMessage::RoomJoin { room: j.room });
    }
}
