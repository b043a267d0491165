//! Seeded random streams. Every random choice in the project derives from an
//! experiment seed through [`stream`], so results are reproducible and
//! independent of thread scheduling (each item gets its own stream).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// SplitMix64 finaliser: a cheap, well-mixed hash of one 64-bit word.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Stable 64-bit hash of a string (FNV-1a, then mixed), used to derive
/// per-machine and per-purpose seeds that do not change between releases.
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

/// A ChaCha8 stream keyed by a base seed and a list of words. ChaCha8 is used
/// because its output is specified, unlike `StdRng`, which may change.
pub fn stream(seed: u64, words: &[u64]) -> ChaCha8Rng {
    let mut s = mix64(seed);
    for &w in words {
        s = mix64(s ^ w);
    }
    ChaCha8Rng::seed_from_u64(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: u64 = stream(7, &[1, 2]).random();
        let b: u64 = stream(7, &[1, 2]).random();
        let c: u64 = stream(7, &[2, 1]).random();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(hash_str("fan"), hash_str("ToyCar"));
    }
}
