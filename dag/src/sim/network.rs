//! The simulated network: a time-ordered queue of messages and timers.

use crate::event::{Event, EventId, EventRef};
use crate::identity::PeerKey;
use crate::pending::Millis;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

pub enum Msg {
    /// An event with the ticket value its one-time verification computed.
    Event {
        ev: Arc<Event>,
        id: EventId,
        ticket: u64,
    },
    Fetch(Vec<EventRef>),
    /// The asker's frontier, and its horizon (its DAG's lowest round).
    Sync(
        Vec<(PeerKey, crate::committee::Round)>,
        crate::committee::Round,
    ),
}

pub enum Item {
    Deliver { to: usize, from: usize, msg: Msg },
    Timer { peer: usize },
    SyncTick { peer: usize },
}

struct Entry {
    at: Millis,
    seq: u64,
    item: Item,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        // Min-heap on (time, sequence): ties keep insertion order.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
pub struct Queue {
    heap: BinaryHeap<Entry>,
    seq: u64,
}

impl Queue {
    pub fn push(&mut self, at: Millis, item: Item) {
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            item,
        });
    }

    pub fn pop(&mut self) -> Option<(Millis, Item)> {
        self.heap.pop().map(|e| (e.at, e.item))
    }
}
