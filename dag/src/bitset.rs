//! A fixed-size set of committee indices.

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bitset(Vec<u64>);

impl Bitset {
    pub fn new(bits: usize) -> Self {
        Bitset(vec![0; bits.div_ceil(64)])
    }

    /// Insert `i` (growing the set if needed); true when it was not there before.
    pub fn insert(&mut self, i: u32) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        if w >= self.0.len() {
            self.0.resize(w + 1, 0);
        }
        let word = &mut self.0[w];
        let new = *word & (1 << b) == 0;
        *word |= 1 << b;
        new
    }

    pub fn contains(&self, i: u32) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        self.0.get(w).is_some_and(|word| word & (1 << b) != 0)
    }

    pub fn clear(&mut self) {
        self.0.iter_mut().for_each(|w| *w = 0);
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros();
                w &= w - 1;
                Some(wi as u32 * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec(0u32..200, 0..100)) {
            let mut b = Bitset::new(150);
            let mut model = BTreeSet::new();
            for i in ops {
                prop_assert_eq!(b.insert(i), model.insert(i));
                prop_assert!(b.contains(i));
            }
            prop_assert_eq!(b.iter().collect::<Vec<_>>(), model.into_iter().collect::<Vec<_>>());
        }
    }
}
