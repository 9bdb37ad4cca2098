//! Murmur3's x86 32-bit hash, the one Iceberg's `bucket[n]` transform and Spark SQL's `hash` are
//! built on, over a byte slice. Ours rather than the `murmur3` crate's, which hashes through
//! `io::Read` a few bytes at a time: every event is hashed where it is parsed, and the crate took
//! 65 ns a user id against 13 here (docs/PERFORMANCE.md).
//!
//! ```
//! use sessionize::sink::murmur3::murmur3_32;
//! // The Iceberg table spec's example of its bucket hash.
//! assert_eq!(murmur3_32(b"iceberg", 0) as i32, 1_210_000_089);
//! ```

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// The reference Murmur3 x86 32-bit hash of `bytes` with `seed`: the last 1–3 bytes are packed
/// into one little-endian block.
pub fn murmur3_32(bytes: &[u8], seed: u32) -> u32 {
    let mut blocks = bytes.chunks_exact(4);
    let mut h1 = seed;
    for block in &mut blocks {
        h1 = mix_h1(
            h1,
            mix_k1(u32::from_le_bytes([block[0], block[1], block[2], block[3]])),
        );
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        h1 ^= mix_k1(tail.iter().rev().fold(0, |k, &b| (k << 8) | u32::from(b)));
    }
    finish(h1, bytes.len())
}

/// One 4-byte block, scrambled.
pub(super) fn mix_k1(k1: u32) -> u32 {
    k1.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

/// The running hash after a scrambled block.
pub(super) fn mix_h1(h1: u32, k1: u32) -> u32 {
    (h1 ^ k1)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// The final avalanche, with the input's length (modulo 2^32, as the reference takes it).
pub(super) fn finish(mut h1: u32, length: usize) -> u32 {
    h1 ^= length as u32;
    h1 ^= h1 >> 16;
    h1 = h1.wrapping_mul(0x85eb_ca6b);
    h1 ^= h1 >> 13;
    h1 = h1.wrapping_mul(0xc2b2_ae35);
    h1 ^ (h1 >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_hash_is_the_one_the_iceberg_spec_gives_examples_of() {
        assert_eq!(murmur3_32(b"iceberg", 0) as i32, 1_210_000_089);
        assert_eq!(murmur3_32(&[0, 1, 2, 3], 0) as i32, -188_683_207);
    }

    proptest! {
        #[test]
        fn the_hash_agrees_with_the_murmur3_crate(
            bytes in prop::collection::vec(any::<u8>(), 0..80),
            seed in any::<u32>(),
        ) {
            let reference = murmur3::murmur3_32(&mut bytes.as_slice(), seed).unwrap();
            prop_assert_eq!(murmur3_32(&bytes, seed), reference);
        }
    }
}
