//! Cache prefetch hints for code that walks data it knows it will read soon.
//!
//! A tail sampler looks up a trace table of millions of entries and reads span bytes that left
//! the cache while their request waited in the owner core's queue: each is a cache miss that
//! the CPU otherwise takes one after another. Asking for the lines ahead lets the misses
//! overlap. A prefetch is only a hint: it never faults, never changes memory, and reads of the
//! same bytes behave exactly as without it.

/// Asks for the cache line holding `value` (and the next one, for values that straddle two).
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    let p = std::ptr::from_ref(value).cast::<u8>();
    line(p);
    line(p.wrapping_add(64));
}

/// Asks for every cache line of `bytes`.
#[inline(always)]
pub fn prefetch_bytes(bytes: &[u8]) {
    let p = bytes.as_ptr();
    let mut at = 0;
    while at < bytes.len() {
        line(p.wrapping_add(at));
        at += 64;
    }
}

#[inline(always)]
#[allow(unsafe_code)]
fn line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is a hint that neither faults nor writes, whatever the address
    // (the pointer is never dereferenced); SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_change_nothing() {
        let v: Vec<u8> = (0..=255).collect();
        prefetch_bytes(&v);
        prefetch_bytes(&v[..0]);
        prefetch(&v[255]);
        prefetch(&0u64);
        assert_eq!(v, (0..=255).collect::<Vec<u8>>());
    }
}
