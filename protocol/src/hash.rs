//! A keyed hash for trace ids, for the per-core maps keyed by them (the tail sampler's trace
//! table and decision cache, the Kafka exporter's grouping of spans by trace). It hashes any
//! short byte key the same way (16 bytes at a time, the slice's length mixed in), so the span
//! metrics' series index uses it too.

use std::hash::{BuildHasher, Hasher, RandomState};

/// Builds [`TraceIdHasher`]s with keys drawn once per map from the standard library's random
/// source.
#[derive(Clone, Debug)]
pub struct TraceIdHashBuilder {
    k0: u64,
    k1: u64,
}

impl Default for TraceIdHashBuilder {
    fn default() -> Self {
        let random = RandomState::new();
        TraceIdHashBuilder {
            k0: random.hash_one(0x5eed_u64),
            k1: random.hash_one(0xf00d_u64) | 1,
        }
    }
}

impl BuildHasher for TraceIdHashBuilder {
    type Hasher = TraceIdHasher;

    fn build_hasher(&self) -> TraceIdHasher {
        TraceIdHasher {
            k0: self.k0,
            k1: self.k1,
            h: 0,
        }
    }
}

/// Hashes trace ids for the per-core maps: the two 64-bit halves, xor-ed with random keys,
/// multiplied into 128 bits and folded (the construction of foldhash and aHash). Several
/// times cheaper than SipHash on 16 bytes; the random keys keep crafted ids from aiming at one
/// bucket. Map order is never observable, so decisions stay deterministic.
#[derive(Debug)]
pub struct TraceIdHasher {
    k0: u64,
    k1: u64,
    h: u64,
}

#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for TraceIdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(16) {
            let mut block = [0u8; 16];
            block[..chunk.len()].copy_from_slice(chunk);
            let (lo, hi) = block.split_at(8);
            let lo = u64::from_le_bytes(lo.try_into().unwrap_or_default());
            let hi = u64::from_le_bytes(hi.try_into().unwrap_or_default());
            self.h = folded_multiply(lo ^ self.k0 ^ self.h, hi ^ self.k1);
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        // The length prefix of a slice; the same (16) for every trace id.
        self.h ^= n as u64;
    }

    #[inline]
    fn finish(&self) -> u64 {
        // A second round spreads bits that varied only in one half over the low bits (the
        // bucket index).
        folded_multiply(self.h, self.k0 | 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_hash_depends_on_every_byte_and_the_keys() {
        let builder = TraceIdHashBuilder::default();
        let base = builder.hash_one([7u8; 16]);
        assert_eq!(base, builder.hash_one([7u8; 16]));
        for i in 0..16 {
            let mut id = [7u8; 16];
            id[i] ^= 1;
            assert_ne!(builder.hash_one(id), base, "byte {i}");
        }
        assert_ne!(TraceIdHashBuilder::default().hash_one([7u8; 16]), base);
        // Ids differing in one byte only spread over the low bits (the bucket index), whatever
        // the keys and the byte.
        for _ in 0..20 {
            let builder = TraceIdHashBuilder::default();
            for byte in [0, 7, 8, 15] {
                let buckets: std::collections::BTreeSet<u64> = (0..=255u8)
                    .map(|n| {
                        let mut id = [0u8; 16];
                        id[byte] = n;
                        builder.hash_one(id) & 63
                    })
                    .collect();
                // 256 ids into 64 buckets: about 63 distinct when well mixed.
                assert!(buckets.len() >= 56, "byte {byte}: {}", buckets.len());
            }
        }
    }
}
