//! Small, fast, seedable random numbers and the latency distributions drawn from them.
//!
//! Generation only needs cheap, reproducible randomness (template shapes, ids), not
//! cryptographic quality, so a SplitMix64 stream is enough and keeps the crate free of
//! an extra dependency.

use std::time::Duration;

/// A SplitMix64 pseudo-random stream: one add and three multiply/xor-shift rounds per value.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A stream seeded with `seed` (equal seeds give equal streams).
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// A uniform value in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform value in `[low, high]` (inclusive).
    pub fn range_inclusive(&mut self, low: u64, high: u64) -> u64 {
        debug_assert!(low <= high);
        let span = high - low + 1;
        if span == 0 {
            return self.next_u64();
        }
        low + self.next_u64() % span
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// A standard normal value (Box-Muller).
    pub fn standard_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// `n` random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The SplitMix64 finaliser: a good 64-bit mixing (hash) function.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The z-score of the 99th percentile of a standard normal distribution.
const Z_P99: f64 = 2.326_347_874_040_841;

/// How long a generated span takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatencyDistribution {
    /// Every span takes exactly this long.
    Fixed(Duration),
    /// Log-normal, given by its median and 99th percentile.
    LogNormal {
        /// The median duration (`exp(mu)`).
        median: Duration,
        /// The 99th percentile duration (`exp(mu + 2.326 sigma)`).
        p99: Duration,
    },
}

impl LatencyDistribution {
    /// Draws one duration in nanoseconds (at least 1 µs).
    pub fn sample_nanos(&self, rng: &mut Rng) -> u64 {
        match *self {
            LatencyDistribution::Fixed(d) => (d.as_nanos() as u64).max(1_000),
            LatencyDistribution::LogNormal { median, p99 } => {
                let median = median.as_nanos().max(1) as f64;
                let p99 = (p99.as_nanos() as f64).max(median);
                let mu = median.ln();
                let sigma = (p99 / median).ln() / Z_P99;
                let v = (mu + sigma * rng.standard_normal()).exp();
                // Clip the far tail at 10x p99 so one sample cannot span hours.
                (v.min(p99 * 10.0) as u64).max(1_000)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn range_and_unit_interval_stay_in_bounds() {
        let mut r = Rng::new(1);
        for _ in 0..10_000 {
            let v = r.range_inclusive(5, 15);
            assert!((5..=15).contains(&v));
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
    }

    #[test]
    fn lognormal_hits_median_and_p99() {
        let dist = LatencyDistribution::LogNormal {
            median: Duration::from_millis(20),
            p99: Duration::from_secs(2),
        };
        let mut r = Rng::new(42);
        let mut v: Vec<u64> = (0..200_000).map(|_| dist.sample_nanos(&mut r)).collect();
        v.sort_unstable();
        let median = v[v.len() / 2] as f64 / 1e6;
        let p99 = v[v.len() * 99 / 100] as f64 / 1e6;
        assert!((18.0..22.0).contains(&median), "median {median} ms");
        assert!((1700.0..2300.0).contains(&p99), "p99 {p99} ms");
    }

    #[test]
    fn fixed_is_fixed() {
        let dist = LatencyDistribution::Fixed(Duration::from_millis(3));
        let mut r = Rng::new(0);
        assert_eq!(dist.sample_nanos(&mut r), 3_000_000);
    }
}
