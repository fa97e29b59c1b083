//! The map from trace id to a `u32` (a trace table index, a decision cache position) behind
//! the tail sampler's per-span lookups.
//!
//! With millions of traces pending, every lookup is a cache miss, and the sampler wants to ask
//! for the slot before it needs it (`shardtel_protocol::prefetch`) so that the misses of a
//! batch overlap. A `std` `HashMap` gives no slot address to ask for, so this is our own
//! open-addressed table, small and safe:
//!
//! - a slot is the key's full 64-bit keyed hash and the value (12 bytes, no key): the hash
//!   places it, finds it and moves it, so growing and removing never read the ids, which live
//!   where the caller keeps them (the trace's entry, the cache's ring);
//! - lookups compare hashes, and confirm a match through the caller's `is` (the ids differ on
//!   a full 64-bit match about once in 2^64 probes, but a merge of two traces is never
//!   acceptable);
//! - linear probing at most 3/4 full, removal by backward shift (no tombstones, so a table
//!   with constant churn never degrades), grown by doubling;
//! - the hash is keyed per sampler ([`TraceIdHashBuilder`]), so ids crafted to collide cannot
//!   aim at one run of slots.

use std::hash::BuildHasher;

use shardtel_protocol::hash::TraceIdHashBuilder;
use shardtel_protocol::TraceId;

/// One slot: a hash (0 when empty) and its value, as three `u32`s so that a slot is 12 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Slot {
    hash_lo: u32,
    hash_hi: u32,
    value: u32,
}

impl Slot {
    #[inline]
    fn hash(self) -> u64 {
        u64::from(self.hash_lo) | (u64::from(self.hash_hi) << 32)
    }
}

/// The hash of an id, as [`IdMap::hash`] makes it: never 0 (the empty slot).
pub(crate) type IdHash = u64;

/// Bytes of one slot, for the memory charge of a map entry.
pub(crate) const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// Trace id → `u32`, keyed by the id's hash (see the module docs).
#[derive(Clone, Debug, Default)]
pub(crate) struct IdMap {
    /// A power of two long, or empty.
    slots: Vec<Slot>,
    len: usize,
    hasher: TraceIdHashBuilder,
}

impl IdMap {
    /// An empty map hashing with `hasher` (maps sharing a hasher share hashes).
    pub(crate) fn with_hasher(hasher: TraceIdHashBuilder) -> Self {
        IdMap {
            slots: Vec::new(),
            len: 0,
            hasher,
        }
    }

    /// The hash that places `id`.
    #[inline]
    pub(crate) fn hash(&self, id: &TraceId) -> IdHash {
        self.hasher.hash_one(id) | 1 << 63
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Asks the CPU for the slot where a lookup of `hash` starts (a hint).
    #[inline]
    pub(crate) fn prefetch(&self, hash: IdHash) {
        if let Some(slot) = self.slots.get(hash as usize & self.mask()) {
            shardtel_protocol::prefetch::prefetch(slot);
        }
    }

    /// The value of the first entry with this hash, not confirmed (see [`IdMap::get`]).
    #[inline]
    pub(crate) fn candidate(&self, hash: IdHash) -> Option<u32> {
        self.get(hash, |_| true)
    }

    /// The value stored for `hash` for which `is` confirms the id.
    #[inline]
    pub(crate) fn get(&self, hash: IdHash, is: impl FnMut(u32) -> bool) -> Option<u32> {
        self.position(hash, is).map(|at| self.slots[at].value)
    }

    /// The slot of the first entry with this hash whose value `is` accepts.
    #[inline]
    fn position(&self, hash: IdHash, mut is: impl FnMut(u32) -> bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut at = hash as usize & mask;
        loop {
            let slot = self.slots[at];
            if slot.hash() == hash && is(slot.value) {
                return Some(at);
            }
            if slot.hash() == 0 {
                return None;
            }
            at = (at + 1) & mask;
        }
    }

    /// Adds `value` under `hash` (the caller knows its id is not in the map).
    pub(crate) fn insert(&mut self, hash: IdHash, value: u32) {
        debug_assert_ne!(hash, 0);
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        self.place(hash, value);
        self.len += 1;
    }

    fn place(&mut self, hash: IdHash, value: u32) {
        let mask = self.mask();
        let mut at = hash as usize & mask;
        while self.slots[at].hash() != 0 {
            at = (at + 1) & mask;
        }
        self.slots[at] = Slot {
            hash_lo: hash as u32,
            hash_hi: (hash >> 32) as u32,
            value,
        };
    }

    fn grow(&mut self) {
        let slots = vec![Slot::default(); (self.slots.len() * 2).max(16)];
        let old = std::mem::replace(&mut self.slots, slots);
        for slot in old {
            if slot.hash() != 0 {
                self.place(slot.hash(), slot.value);
            }
        }
    }

    /// Removes the entry `(hash, value)`; false if there is none.
    pub(crate) fn remove(&mut self, hash: IdHash, value: u32) -> bool {
        let Some(mut hole) = self.position(hash, |v| v == value) else {
            return false;
        };
        let mask = self.mask();
        // Backward shift: every entry after the hole, up to the next empty slot, that may live
        // at the hole (its home is not between the hole and itself) moves into it.
        let mut at = (hole + 1) & mask;
        loop {
            let slot = self.slots[at];
            if slot.hash() == 0 {
                break;
            }
            let home = slot.hash() as usize & mask;
            if at.wrapping_sub(home) & mask >= at.wrapping_sub(hole) & mask {
                self.slots[hole] = slot;
                hole = at;
            }
            at = (at + 1) & mask;
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
        true
    }

    /// Bytes the slots take.
    #[cfg(test)]
    pub(crate) fn slot_bytes(&self) -> usize {
        self.slots.len() * SLOT_BYTES
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn slots_are_twelve_bytes_and_at_most_three_quarters_full() {
        assert_eq!(SLOT_BYTES, 12);
        let mut m = IdMap::default();
        for v in 0..1000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&v.to_le_bytes());
            m.insert(m.hash(&id), v);
            assert!(m.len() * 4 <= m.slots.len() * 3);
        }
        assert_eq!(m.slot_bytes(), 2048 * 12);
    }

    #[test]
    fn colliding_hashes_are_told_apart_by_is() {
        let mut m = IdMap::default();
        // Two values under one hash: the caller's confirmation picks.
        m.insert(5, 1);
        m.insert(5, 2);
        assert_eq!(m.get(5, |v| v == 2), Some(2));
        assert_eq!(m.get(5, |v| v == 1), Some(1));
        assert_eq!(m.get(5, |_| false), None);
        assert!(m.remove(5, 1));
        assert!(!m.remove(5, 1));
        assert_eq!(m.candidate(5), Some(2));
    }

    /// A hash for `key` among few: never 0, and low bits (the home slot) in a narrow range.
    fn squeezed(key: u64) -> IdHash {
        (1 << 63) | ((key % 37) * 0x9E37_79B9) | ((key % 5) << 40)
    }

    proptest! {
        /// Random inserts and removals, with hashes squeezed into few home slots so that runs
        /// wrap around and backward shifts cross them, against a `HashMap`.
        #[test]
        fn agrees_with_a_hash_map(ops in prop::collection::vec((any::<bool>(), 0u64..200), 1..600)) {
            let mut m = IdMap::default();
            let mut model: HashMap<u64, u32> = HashMap::new();
            for (n, (insert, key)) in ops.into_iter().enumerate() {
                // Few distinct hashes, high bits set so never 0, low bits in a narrow range.
                let hash = squeezed(key);
                let value = key as u32;
                let present = model.get(&key).copied();
                if insert && present.is_none() {
                    m.insert(hash, value);
                    model.insert(key, value);
                } else if !insert {
                    prop_assert_eq!(m.remove(hash, value), present.is_some());
                    model.remove(&key);
                }
                prop_assert_eq!(m.len(), model.len());
                if n % 7 == 0 {
                    for k in 0..200u64 {
                        let h = squeezed(k);
                        prop_assert_eq!(m.get(h, |v| v == k as u32), model.get(&k).copied());
                    }
                }
            }
        }
    }
}
