//! Stake-weighted priority of VRF tickets.
//!
//! A ticket value `x` (64 uniform bits from the VRF) stands for
//! `u = (x + 1) / 2^64` in `(0, 1]`. Its priority is `−log2(u) / stake`,
//! lower wins: the minimum of independent exponential clocks with rates
//! proportional to stake, so an author's chance of the best ticket equals its
//! share of the stake. The logarithm is computed in integer fixed point so
//! every machine ranks tickets identically (floating point `ln` is not
//! guaranteed bit-identical across platforms).

use crate::committee::Stake;
use crate::identity::PeerKey;
use std::cmp::Ordering;

/// Fractional bits of the fixed-point `−log2(u)`.
const FRAC_BITS: u32 = 48;

/// `−log2((x + 1) / 2^64)` in fixed point with [`FRAC_BITS`] fractional bits;
/// at most `64 << FRAC_BITS`, so it times a stake below 2^63 fits in u128.
pub fn neg_log2_fixed(x: u64) -> u128 {
    let y: u128 = x as u128 + 1; // in [1, 2^64]
    let int_part = 127 - y.leading_zeros(); // floor(log2 y), 0..=64
                                            // Mantissa in [1, 2) as Q1.63.
    let mut m: u128 = (y << 63) >> int_part;
    let mut frac: u128 = 0;
    for _ in 0..FRAC_BITS {
        m = (m * m) >> 63;
        frac <<= 1;
        if m >= 1u128 << 64 {
            m >>= 1;
            frac |= 1;
        }
    }
    let log2_y = ((int_part as u128) << FRAC_BITS) | frac;
    (64u128 << FRAC_BITS) - log2_y
}

/// A ticket ready for ranking: its `−log2(u)`, the author's stake and key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priority {
    pub neg_log: u128,
    pub stake: Stake,
    pub key: PeerKey,
}

impl Priority {
    pub fn new(ticket_value: u64, stake: Stake, key: PeerKey) -> Self {
        Priority {
            neg_log: neg_log2_fixed(ticket_value),
            stake,
            key,
        }
    }
}

impl Ord for Priority {
    /// `Less` means better (smaller `neg_log / stake`); ties go to the
    /// smaller key, so the order is total.
    fn cmp(&self, other: &Self) -> Ordering {
        let a = self.neg_log * other.stake.max(1) as u128;
        let b = other.neg_log * self.stake.max(1) as u128;
        a.cmp(&b).then_with(|| self.key.cmp(&other.key))
    }
}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::{RngCore, SeedableRng};

    #[test]
    fn log_matches_float_closely() {
        for &x in &[
            0u64,
            1,
            2,
            1000,
            1 << 32,
            u64::MAX / 3,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let u = (x as f64 + 1.0) / 18446744073709551616.0;
            let want = -u.log2();
            let got = neg_log2_fixed(x) as f64 / (1u64 << FRAC_BITS) as f64;
            assert!((want - got).abs() < 1e-9, "x={x} want {want} got {got}");
        }
        assert_eq!(neg_log2_fixed(u64::MAX), 0);
        assert_eq!(neg_log2_fixed(0), 64u128 << FRAC_BITS);
    }

    #[test]
    fn win_rate_follows_stake() {
        // Three authors with stakes 1, 2, 5 draw uniform tickets; the share
        // of wins must approach 1/8, 2/8, 5/8.
        let stakes = [1u64, 2, 5];
        let mut wins = [0u32; 3];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 40_000;
        for _ in 0..n {
            let best = (0..3)
                .map(|i| Priority::new(rng.next_u64(), stakes[i], PeerKey([i as u8; 32])))
                .enumerate()
                .min_by(|a, b| a.1.cmp(&b.1))
                .unwrap()
                .0;
            wins[best] += 1;
        }
        for i in 0..3 {
            let share = wins[i] as f64 / n as f64;
            let want = stakes[i] as f64 / 8.0;
            assert!(
                (share - want).abs() < 0.015,
                "author {i}: {share} vs {want}"
            );
        }
    }
}
