//! Routing: which core owns a trace.
//!
//! [`owner_core`] is a pure function of the trace id and the number of cores: every core of
//! every node computes the same owner, before and after a restart. It hashes all 16 bytes
//! (trace ids from some SDKs are not random in their high half) with a fixed, seedless mix.
//! Samplers that hash trace ids must use a different function so that the sampling decision
//! is not correlated with the owner core.

use crate::TraceId;

/// The core (in `0..cores`) that owns `trace_id`. Returns 0 when `cores` is 0 or 1.
///
/// Stable: the result for a given input never changes between versions of this crate.
#[inline]
pub fn owner_core(trace_id: &TraceId, cores: usize) -> usize {
    if cores <= 1 {
        return 0;
    }
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&trace_id[..8]);
    hi.copy_from_slice(&trace_id[8..]);
    let h = mix(u64::from_le_bytes(lo) ^ mix(u64::from_le_bytes(hi) ^ 0x9e37_79b9_7f4a_7c15));
    // Lemire's multiply-shift range reduction: uniform for any `cores`, no division.
    ((u128::from(h) * cores as u128) >> 64) as usize
}

/// The splitmix64 finaliser.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize, f: impl Fn(u64) -> TraceId) -> Vec<TraceId> {
        (0..n as u64).map(f).collect()
    }

    /// Chi-squared test of the owner distribution at p ~ 0.001.
    fn assert_uniform(ids: &[TraceId], cores: usize) {
        let mut counts = vec![0usize; cores];
        for id in ids {
            let c = owner_core(id, cores);
            assert!(c < cores);
            counts[c] += 1;
        }
        let expected = ids.len() as f64 / cores as f64;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        // Critical values of chi-squared at p = 0.001 for df = cores - 1 (1..=15).
        const CRIT: [f64; 15] = [
            10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26, 32.91,
            34.53, 36.12, 37.70,
        ];
        assert!(
            chi2 < CRIT[cores - 2],
            "cores {cores}: chi2 {chi2} counts {counts:?}"
        );
    }

    #[test]
    fn uniform_for_random_and_sequential_ids() {
        // Random-looking ids (splitmix stream), sequential low halves, and ids varying only in
        // the high half (all must spread evenly).
        let random = ids(100_000, |i| {
            let a = mix(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes();
            let b = mix(i ^ 0xdead_beef).to_le_bytes();
            let mut t = [0u8; 16];
            t[..8].copy_from_slice(&a);
            t[8..].copy_from_slice(&b);
            t
        });
        let low = ids(100_000, |i| {
            let mut t = [0u8; 16];
            t[8..].copy_from_slice(&i.to_be_bytes());
            t
        });
        let high = ids(100_000, |i| {
            let mut t = [0u8; 16];
            t[..8].copy_from_slice(&i.to_le_bytes());
            t
        });
        for cores in 2..=16 {
            assert_uniform(&random, cores);
            assert_uniform(&low, cores);
            assert_uniform(&high, cores);
        }
    }

    #[test]
    fn stable() {
        let id: TraceId = *b"0123456789abcdef";
        // Pinned values: changing them re-routes every trace of a running cluster.
        let got: Vec<usize> = (1..=8).map(|c| owner_core(&id, c)).collect();
        assert_eq!(got, PINNED.to_vec());
        assert_eq!(owner_core(&id, 0), 0);
        assert_eq!(owner_core(&[0; 16], 7), owner_core(&[0; 16], 7));
    }

    const PINNED: [usize; 8] = [0, 0, 0, 1, 1, 1, 1, 2];
}
