//! The columns the Spark job computed, bit for bit, so that its users' queries run unchanged on
//! our table: `user_hash_bucket` is Spark SQL's `abs(hash(user_id)) % N`, and `session_date` the
//! UTC day of the session's start.
//!
//! Spark's `hash` is Murmur3 x86 32-bit with seed 42 over the UTF-8 bytes, except for the last
//! 1–3 bytes: Spark mixes each of them on its own, sign-extended, as a whole block (its
//! `hashUnsafeBytes`), where the reference Murmur3 packs them into one block. `abs` of the most
//! negative hash stays negative in Spark (it wraps), and `%` keeps the dividend's sign, as Rust's
//! does.
//!
//! ```
//! use sessionize::sink::spark::{spark_hash, user_hash_bucket};
//! assert_eq!(spark_hash(b"user_000042"), 447_360_947);
//! assert_eq!(user_hash_bucket("user_000042", 100), 47);
//! ```

use super::murmur3::{finish, mix_h1, mix_k1};

/// The seed of Spark SQL's `hash`.
const SPARK_HASH_SEED: u32 = 42;

/// Spark SQL's `hash(s)` of a string whose UTF-8 bytes are `bytes`.
pub fn spark_hash(bytes: &[u8]) -> i32 {
    let whole_blocks = bytes.len() - bytes.len() % 4;
    let (blocks, tail) = bytes.split_at(whole_blocks);
    let mut h1 = SPARK_HASH_SEED;
    for block in blocks.chunks_exact(4) {
        let word = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        h1 = mix_h1(h1, mix_k1(word));
    }
    for &byte in tail {
        h1 = mix_h1(h1, mix_k1(byte as i8 as i32 as u32));
    }
    finish(h1, bytes.len()) as i32
}

/// Spark SQL's `abs(hash(user_id)) % buckets`: the Spark job's `user_hash_bucket`, negative (as
/// in Spark) only for the one hash whose absolute value wraps.
pub fn user_hash_bucket(user_id: &str, buckets: u32) -> i32 {
    spark_hash(user_id.as_bytes()).wrapping_abs() % buckets.max(1) as i32
}

/// The UTC day of an epoch-millisecond time, in days since 1970-01-01 (Iceberg's and Arrow's
/// `date`), which is what Spark's `to_date` and `date_format(.., 'yyyy-MM-dd')` give under a UTC
/// session time zone.
pub fn utc_day(epoch_ms: u64) -> i32 {
    (epoch_ms / 86_400_000) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hash(uuid)` and `abs(hash(uuid)) % 100` as Spark 3.5.8 computed them (`select hash(uuid),
    /// abs(hash(uuid)) % 100 from t`): every tail length, non-ASCII, and an empty id.
    const SPARK: &[(&str, i32, i32)] = &[
        ("", 142_593_372, 72),
        ("a", 1_485_273_170, 70),
        ("ab", -97_053_317, 17),
        ("abc", 1_322_437_556, 56),
        ("abcd", -396_302_900, 0),
        ("abcde", 814_637_928, 28),
        ("user_000042", 447_360_947, 47),
        ("user-1", -802_825_514, 14),
        ("ü", -1_098_725_648, 48),
        ("日本語", -1_143_049_834, 34),
        ("émilie", 1_532_943_272, 72),
        ("🙂x", -19_712_022, 22),
        ("550e8400-e29b-41d4-a716-446655440000", 1_800_323_756, 56),
        ("uéèê", -195_070_578, 78),
        ("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", -2_040_163_806, 6),
    ];

    #[test]
    fn hashes_and_buckets_equal_sparks() {
        for &(user, hash, bucket) in SPARK {
            assert_eq!(spark_hash(user.as_bytes()), hash, "hash({user:?})");
            assert_eq!(user_hash_bucket(user, 100), bucket, "bucket of {user:?}");
        }
    }

    #[test]
    fn the_wrapping_absolute_value_is_sparks() {
        // Spark: abs(-2147483648) = -2147483648 and -2147483648 % 100 = -48.
        assert_eq!(i32::MIN.wrapping_abs() % 100, -48);
    }

    #[test]
    fn days_are_utc_days() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(86_399_999), 0);
        assert_eq!(utc_day(1_772_323_200_000), 20_513); // 2026-03-01
    }
}
