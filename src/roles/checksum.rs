//! The exact `(count, Σ i·m_i)` both gossip and ring report.
//!
//! A message's number is carried as a `u32` value `v` standing for `m = (v + 1) / 2^32`, which
//! lies in (0, 1]. The checksum is accumulated as the integer `S = Σ i·(v_i + 1)` in a `u128`
//! (no rounding, no dependence on summation order beyond `i`), and printed as `S / 2^32` with
//! `DIGITS` decimals, truncated. Equal message sequences therefore print byte-identical lines on
//! every node. `u128` holds `S` for up to about 4·10^14 messages.

use std::fmt;

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};

use crate::node::NodeId;

/// Decimals printed after the point.
pub const DIGITS: u32 = 9;
/// Values folded per inner loop: keeps the weighted partial sum inside a `u64`
/// (`CHUNK^2/2 · 2^32 < 2^64`).
const CHUNK: usize = 4096;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksum {
    pub count: u64,
    /// Σ i·(v_i + 1), i from 1.
    pub sum: u128,
}

impl Checksum {
    /// Appends `values` to the sequence, in order.
    pub fn fold(&mut self, values: &[u32]) {
        for chunk in values.chunks(CHUNK) {
            // Σ (first + j)·(v_j + 1) = first·(Σ v_j + n) + Σ j·v_j + Σ j, with j·v_j a
            // u32 × u32 product (which vectorises) rather than a u64 one.
            let mut plain: u64 = 0;
            let mut weighted: u64 = 0;
            for (offset, &value) in chunk.iter().enumerate() {
                plain += value as u64;
                weighted += (offset as u32 as u64) * value as u64;
            }
            let n = chunk.len() as u64;
            let offsets = n * (n - 1) / 2;
            let first = self.count as u128 + 1;
            self.sum += first * (plain + n) as u128 + (weighted + offsets) as u128;
            self.count += chunk.len() as u64;
        }
    }

    /// The number a value stands for, for display and cross-checks only.
    pub fn number(value: u32) -> f64 {
        (value as f64 + 1.0) / 4_294_967_296.0
    }
}

/// The checksum alone, `S / 2^32` with `DIGITS` decimals (truncated).
pub struct Decimal(pub u128);

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 >> 32;
        let fraction = ((self.0 & 0xFFFF_FFFF) * 10u128.pow(DIGITS)) >> 32;
        write!(f, "{whole}.{fraction:0width$}", width = DIGITS as usize)
    }
}

impl fmt::Display for Checksum {
    /// `(COUNT, CHECKSUM)`, chatterbox's output line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.sum >> 32;
        let fraction = ((self.sum & 0xFFFF_FFFF) * 10u128.pow(DIGITS)) >> 32;
        write!(
            f,
            "({}, {whole}.{fraction:0width$})",
            self.count,
            width = DIGITS as usize
        )
    }
}

/// The generator of origin `node`'s stream: Xoshiro256++ seeded with `seed`, jumped `node` times.
pub fn stream_rng(seed: u64, node: NodeId) -> Xoshiro256PlusPlus {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    for _ in 0..node {
        rng.jump();
    }
    rng
}

/// The next values of a stream: both halves of each 64-bit output, low half first (half the
/// generator calls of `next_u32`). `values.len()` must be even.
pub fn fill_stream_values(rng: &mut Xoshiro256PlusPlus, values: &mut [u32]) {
    assert!(values.len().is_multiple_of(2));
    for pair in values.chunks_exact_mut(2) {
        let bits = rng.next_u64();
        pair[0] = bits as u32;
        pair[1] = (bits >> 32) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_direct_sum() {
        let values: Vec<u32> = (0..10_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let mut whole = Checksum::default();
        whole.fold(&values);
        let mut pieces = Checksum::default();
        for piece in values.chunks(777) {
            pieces.fold(piece);
        }
        assert_eq!(whole, pieces);
        let direct: u128 = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as u128 + 1) * (v as u128 + 1))
            .sum();
        assert_eq!(whole.sum, direct);
        let float: f64 = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i + 1) as f64 * Checksum::number(v))
            .sum();
        let printed: f64 = whole
            .to_string()
            .split(", ")
            .nth(1)
            .unwrap()
            .trim_end_matches(')')
            .parse()
            .unwrap();
        assert!((printed - float).abs() / float < 1e-12);
    }

    /// Three million values — runs of the extremes, a counter and a xorshift stream — folded in
    /// pieces of awkward sizes (around `CHUNK`), against a sum done the plain way: one
    /// `(i + 1)·(v + 1)` product per value, added in a `u128`, and against an `f64` sum of
    /// `i·m_i` within its rounding bound.
    #[test]
    fn matches_a_plain_sum_over_three_million_values() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let values: Vec<u32> = (0..3_000_000u64)
            .map(|i| match (i / 100_000) % 4 {
                0 => u32::MAX,
                1 => (i % 7) as u32,
                _ => {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u32
                }
            })
            .collect();
        let mut folded = Checksum::default();
        let pieces = [1, 4095, 4096, 4097, 10_007, 65_536, 3];
        let mut at = 0;
        for size in pieces.iter().cycle() {
            if at == values.len() {
                break;
            }
            let end = (at + size).min(values.len());
            folded.fold(&values[at..end]);
            at = end;
        }
        let mut plain: u128 = 0;
        let mut float = 0.0f64;
        for (i, &v) in values.iter().enumerate() {
            plain += (i as u128 + 1) * (v as u128 + 1);
            float += (i + 1) as f64 * ((v as f64 + 1.0) / 4_294_967_296.0);
        }
        assert_eq!(folded.count, values.len() as u64);
        assert_eq!(folded.sum, plain);
        let printed: f64 = Decimal(folded.sum).to_string().parse().unwrap();
        // 3·10^6 additions of terms below 3·10^6 each: relative error far below 1e-9.
        assert!(
            (printed - float).abs() / float < 1e-9,
            "{printed} vs {float}"
        );
    }

    #[test]
    fn prints_exact_fixed_digits() {
        let mut checksum = Checksum::default();
        checksum.fold(&[u32::MAX, (1 << 31) - 1]); // 1·1.0 + 2·0.5
        assert_eq!(checksum.to_string(), "(2, 2.000000000)");
        let mut tiny = Checksum::default();
        tiny.fold(&[0]); // 2^-32
        assert_eq!(tiny.to_string(), "(1, 0.000000000)");
        assert_eq!(Checksum::default().to_string(), "(0, 0.000000000)");
    }
}
