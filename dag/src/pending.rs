//! Events waiting for missing parents, and the fetch requests for those
//! parents. Bounded: past the limit new arrivals are refused (the sender or
//! a later sync will offer them again).

use crate::committee::Round;
use crate::event::{EventId, EventRef, VerifiedEvent};
use crate::id_map::IdMap;
use crate::identity::PeerKey;

pub type Millis = u64;

struct Waiting {
    ev: VerifiedEvent,
    missing: usize,
}

struct Wanted {
    r: EventRef,
    asked_at: Millis,
    hint: Option<PeerKey>,
    /// Children waiting for it.
    children: Vec<EventId>,
}

#[derive(Default)]
pub struct Pending {
    waiting: IdMap<EventId, Waiting>,
    wanted: IdMap<EventId, Wanted>,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn contains(&self, id: &EventId) -> bool {
        self.waiting.contains_key(id)
    }

    /// Whether `id` is a parent someone is waiting for (so it is welcome even
    /// past the per-slot limit).
    pub fn is_wanted(&self, id: &EventId) -> bool {
        self.wanted.contains_key(id)
    }

    pub fn wanted_len(&self) -> usize {
        self.wanted.len()
    }

    /// Park `ev` until `missing` (parents neither in the DAG nor parked) and
    /// `parked` (parents parked here themselves) arrive. Returns the
    /// references to request now (the ones not requested before).
    pub fn park(
        &mut self,
        ev: VerifiedEvent,
        missing: Vec<EventRef>,
        from: Option<PeerKey>,
        now: Millis,
    ) -> Vec<EventRef> {
        let id = ev.id;
        let mut to_ask = Vec::new();
        for r in &missing {
            let parked = self.waiting.contains_key(&r.id);
            let w = self.wanted.entry(r.id).or_insert_with(|| {
                if !parked {
                    to_ask.push(*r);
                }
                Wanted {
                    r: *r,
                    asked_at: now,
                    hint: from,
                    children: Vec::new(),
                }
            });
            w.children.push(id);
        }
        self.waiting.insert(
            id,
            Waiting {
                ev,
                missing: missing.len(),
            },
        );
        to_ask
    }

    /// `id` is now in the DAG: return the parked children it completed.
    pub fn arrived(&mut self, id: &EventId) -> Vec<VerifiedEvent> {
        let Some(w) = self.wanted.remove(id) else {
            return Vec::new();
        };
        let mut ready = Vec::new();
        for c in w.children {
            let done = match self.waiting.get_mut(&c) {
                Some(cw) => {
                    cw.missing -= 1;
                    cw.missing == 0
                }
                None => false,
            };
            if done {
                if let Some(cw) = self.waiting.remove(&c) {
                    ready.push(cw.ev);
                }
            }
        }
        ready
    }

    /// An arrival that could not be inserted (invalid): its waiting children
    /// can never be completed, so drop them too. Returns how many were dropped.
    pub fn failed(&mut self, id: &EventId) -> usize {
        let Some(w) = self.wanted.remove(id) else {
            return 0;
        };
        let mut dropped = 0;
        for c in w.children {
            if self.waiting.remove(&c).is_some() {
                dropped += 1;
                dropped += self.failed(&c);
            }
        }
        dropped
    }

    /// Requests older than `retry` that are still unanswered, grouped by hint;
    /// their clocks restart.
    pub fn due(&mut self, now: Millis, retry: Millis) -> Vec<(Option<PeerKey>, Vec<EventRef>)> {
        let mut by_hint: Vec<(Option<PeerKey>, Vec<EventRef>)> = Vec::new();
        for w in self.wanted.values_mut() {
            if now >= w.asked_at + retry && !self.waiting.contains_key(&w.r.id) {
                w.asked_at = now;
                match by_hint.iter_mut().find(|(h, _)| *h == w.hint) {
                    Some((_, v)) => v.push(w.r),
                    None => by_hint.push((w.hint, vec![w.r])),
                }
            }
        }
        by_hint
    }

    /// The earliest time a request becomes due.
    pub fn next_due(&self, retry: Millis) -> Option<Millis> {
        self.wanted.values().map(|w| w.asked_at + retry).min()
    }

    /// Forget everything below `horizon`. Parents below it are no longer
    /// needed (the DAG accepts events without them), so parked events whose
    /// last missing parents were among them are returned, ready to insert.
    pub fn prune_below(&mut self, horizon: Round) -> Vec<VerifiedEvent> {
        self.waiting.retain(|_, w| w.ev.round() >= horizon);
        let gone: Vec<EventId> = self
            .wanted
            .iter()
            .filter(|(_, w)| w.r.round < horizon)
            .map(|(id, _)| *id)
            .collect();
        let mut ready = Vec::new();
        for id in gone {
            ready.extend(self.arrived(&id));
        }
        ready
    }
}
