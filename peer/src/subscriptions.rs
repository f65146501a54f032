//! Which wallet links asked to hear of new outputs for which keys, and the
//! notices a final height gives them. A notice is a hint, not a proof: the
//! wallet then syncs and checks what it gets. Pure (no links, no clock):
//! the driver loop owns it and drops links that are gone.

use dag::identity::PeerKey;
use dag::wire::{WalletMessage, MAX_SUBSCRIBED};
use proofs::Hash;
use std::collections::{HashMap, HashSet};
use std::hash::Hash as StdHash;

/// Keys subscribed over all links at most (a few dozen bytes each in two
/// maps); a subscription beyond is refused.
pub const MAX_SUBSCRIBED_TOTAL: usize = 262_144;

/// The subscriptions of a peer's wallet links `W`.
pub struct Subscriptions<W> {
    by_link: HashMap<W, HashSet<PeerKey>>,
    by_key: HashMap<PeerKey, HashSet<W>>,
    total: usize,
}

impl<W> Default for Subscriptions<W> {
    fn default() -> Self {
        Subscriptions {
            by_link: HashMap::new(),
            by_key: HashMap::new(),
            total: 0,
        }
    }
}

impl<W: Copy + Eq + StdHash> Subscriptions<W> {
    /// Replace `link`'s keys with `keys`; how many it now has. Refused
    /// (and the old set kept) when the link asks for more than
    /// [`MAX_SUBSCRIBED`] or all links together would exceed
    /// [`MAX_SUBSCRIBED_TOTAL`].
    pub fn set(&mut self, link: W, keys: &[PeerKey]) -> Result<u32, String> {
        let keys: HashSet<PeerKey> = keys.iter().copied().collect();
        if keys.len() > MAX_SUBSCRIBED {
            return Err(format!("more than {MAX_SUBSCRIBED} keys"));
        }
        let old = self.by_link.get(&link).map_or(0, HashSet::len);
        if self.total - old + keys.len() > MAX_SUBSCRIBED_TOTAL {
            return Err("this peer holds all the subscriptions it can".into());
        }
        self.remove(link);
        let n = keys.len();
        if n > 0 {
            for k in &keys {
                self.by_key.entry(*k).or_default().insert(link);
            }
            self.total += n;
            self.by_link.insert(link, keys);
        }
        Ok(n as u32)
    }

    /// Forget `link` (gone, or unsubscribed).
    pub fn remove(&mut self, link: W) {
        let Some(keys) = self.by_link.remove(&link) else {
            return;
        };
        self.total -= keys.len();
        for k in keys {
            if let Some(links) = self.by_key.get_mut(&k) {
                links.remove(&link);
                if links.is_empty() {
                    self.by_key.remove(&k);
                }
            }
        }
    }

    /// Forget every link for which `live` says no.
    pub fn retain(&mut self, live: impl Fn(&W) -> bool) {
        let dead: Vec<W> = self.by_link.keys().filter(|w| !live(w)).copied().collect();
        for w in dead {
            self.remove(w);
        }
    }

    /// Keys subscribed over all links.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The notices for final height `height`, which created outputs for
    /// `created_for` (owner keys, repeats allowed): one `Incoming` per
    /// subscribed link that has any, naming each of its keys once.
    pub fn notices(&self, height: u64, created_for: &[Hash]) -> Vec<(W, WalletMessage)> {
        if self.by_key.is_empty() {
            return Vec::new();
        }
        let mut per_link: HashMap<W, Vec<PeerKey>> = HashMap::new();
        let mut seen = HashSet::new();
        for h in created_for {
            let key = PeerKey(h.0);
            if !seen.insert(key) {
                continue;
            }
            for w in self.by_key.get(&key).into_iter().flatten() {
                // At most MAX_SUBSCRIBED per link: each is one of its keys.
                per_link.entry(*w).or_default().push(key);
            }
        }
        per_link
            .into_iter()
            .map(|(w, keys)| (w, WalletMessage::Incoming { height, keys }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn k(n: u8) -> PeerKey {
        PeerKey([n; 32])
    }

    #[test]
    fn a_height_tells_each_subscribed_link_its_keys_once() {
        let mut s = Subscriptions::default();
        assert_eq!(s.set(1u32, &[k(1), k(2), k(2)]), Ok(2));
        assert_eq!(s.set(2u32, &[k(2), k(3)]), Ok(2));
        let mut n = s.notices(
            7,
            &[Hash([2; 32]), Hash([9; 32]), Hash([2; 32]), Hash([1; 32])],
        );
        n.sort_by_key(|(w, _)| *w);
        assert_eq!(
            n,
            vec![
                (
                    1,
                    WalletMessage::Incoming {
                        height: 7,
                        keys: vec![k(2), k(1)]
                    }
                ),
                (
                    2,
                    WalletMessage::Incoming {
                        height: 7,
                        keys: vec![k(2)]
                    }
                ),
            ]
        );
        assert!(s.notices(8, &[Hash([9; 32])]).is_empty());
    }

    #[test]
    fn a_new_set_replaces_the_old_and_gone_links_are_forgotten() {
        let mut s = Subscriptions::default();
        s.set(1u32, &[k(1), k(2)]).unwrap();
        s.set(1u32, &[k(3)]).unwrap();
        assert!(s.notices(1, &[Hash([1; 32])]).is_empty());
        assert_eq!(s.notices(1, &[Hash([3; 32])]).len(), 1);
        s.set(2u32, &[k(3)]).unwrap();
        s.retain(|w| *w != 1);
        assert_eq!(s.total(), 1);
        assert_eq!(s.notices(1, &[Hash([3; 32])])[0].0, 2);
        s.set(2u32, &[]).unwrap();
        assert_eq!(s.total(), 0);
        assert!(s.by_key.is_empty() && s.by_link.is_empty());
    }

    #[test]
    fn limits_refuse_and_keep_the_old_set() {
        let mut s = Subscriptions::default();
        let too_many: Vec<PeerKey> = (0..=MAX_SUBSCRIBED as u32)
            .map(|i| {
                let mut b = [0; 32];
                b[..4].copy_from_slice(&i.to_le_bytes());
                PeerKey(b)
            })
            .collect();
        s.set(1u32, &[k(1)]).unwrap();
        assert!(s.set(1u32, &too_many).is_err());
        assert_eq!(s.notices(1, &[Hash([1; 32])]).len(), 1);
        s.total = MAX_SUBSCRIBED_TOTAL;
        assert!(s.set(2u32, &[k(2)]).is_err());
        // Replacing a link's own set within the total is fine.
        assert_eq!(s.set(1u32, &[k(5)]), Ok(1));
    }

    proptest! {
        /// The two maps always agree with each other and with the total.
        #[test]
        fn the_index_stays_consistent(ops in proptest::collection::vec(
            (0u8..4, proptest::collection::vec(0u8..8, 0..6), any::<bool>()), 0..40)
        ) {
            let mut s = Subscriptions::default();
            for (link, keys, drop) in ops {
                if drop {
                    s.remove(link);
                } else {
                    let keys: Vec<PeerKey> = keys.into_iter().map(k).collect();
                    s.set(link, &keys).unwrap();
                }
                let sum: usize = s.by_link.values().map(HashSet::len).sum();
                prop_assert_eq!(sum, s.total);
                for (w, keys) in &s.by_link {
                    prop_assert!(!keys.is_empty());
                    for key in keys {
                        prop_assert!(s.by_key[key].contains(w));
                    }
                }
                for (key, links) in &s.by_key {
                    prop_assert!(!links.is_empty());
                    for w in links {
                        prop_assert!(s.by_link[w].contains(key));
                    }
                }
            }
        }
    }
}
