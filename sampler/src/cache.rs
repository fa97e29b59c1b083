//! The decision cache: recently decided trace ids and their outcome, two bounded FIFOs.

use shardtel_protocol::TraceId;

use super::idmap::{IdHash, IdMap};

/// Sampled and not-sampled trace ids, each kind in its own ring of fixed capacity (the oldest
/// id is forgotten first). A capacity of 0 turns that kind off.
///
/// Memory: 16 bytes per remembered id in its ring plus its map slot (12 bytes, the map 3/8 to
/// 3/4 full), about 32–48 bytes per id, so the default 100 000 + 100 000 costs 6–10 MiB per
/// core.
#[derive(Debug)]
pub(crate) struct DecisionCache {
    /// Id → `kind << 31 | position in that kind's ring`.
    map: IdMap,
    /// Not sampled (0) and sampled (1).
    rings: [Ring; 2],
}

/// A kind's ids: appended until full, then each new id takes the oldest one's place.
#[derive(Debug)]
struct Ring {
    ids: Vec<TraceId>,
    /// The oldest id's position once full.
    head: usize,
    capacity: usize,
}

/// Positions take the low 31 bits of a map value.
const MAX_CAPACITY: usize = (1 << 31) - 1;

impl DecisionCache {
    /// A cache whose maps hash as `map` does (the trace table's, so a span's hash serves both).
    pub(crate) fn new(map: IdMap, sampled_capacity: usize, not_sampled_capacity: usize) -> Self {
        let ring = |capacity: usize| Ring {
            ids: Vec::new(),
            head: 0,
            capacity: capacity.min(MAX_CAPACITY),
        };
        DecisionCache {
            map,
            rings: [ring(not_sampled_capacity), ring(sampled_capacity)],
        }
    }

    /// The remembered decision for `id` (whose hash is `hash`): `Some(true)` sampled,
    /// `Some(false)` not sampled.
    #[inline]
    pub(crate) fn get(&self, hash: IdHash, id: &TraceId) -> Option<bool> {
        if self.map.len() == 0 {
            return None;
        }
        let rings = &self.rings;
        self.map
            .get(hash, |v| {
                rings[(v >> 31) as usize].ids[(v & MAX_CAPACITY as u32) as usize] == *id
            })
            .map(|v| v >> 31 == 1)
    }

    /// Asks the CPU for what [`DecisionCache::get`] of `hash` reads first (a hint).
    #[inline]
    pub(crate) fn prefetch_get(&self, hash: IdHash) {
        if self.map.len() != 0 {
            self.map.prefetch(hash);
        }
    }

    /// Asks the CPU for what [`DecisionCache::insert`] of `hash` will touch: its slot, and the
    /// slots of the ids it may forget (a hint).
    #[inline]
    pub(crate) fn prefetch_insert(&self, hash: IdHash) {
        self.map.prefetch(hash);
        for ring in &self.rings {
            if ring.capacity != 0 && ring.ids.len() == ring.capacity {
                self.map.prefetch(self.map.hash(&ring.ids[ring.head]));
            }
        }
    }

    /// Remembers the decision for `id` (whose hash is `hash`), forgetting the oldest id of the
    /// same kind when full. `id` must not be remembered already (a trace is only decided while
    /// not in the cache).
    pub(crate) fn insert(&mut self, hash: IdHash, id: TraceId, sampled: bool) {
        debug_assert!(
            self.get(hash, &id).is_none(),
            "a cached trace was decided again"
        );
        let kind = usize::from(sampled);
        let ring = &mut self.rings[kind];
        if ring.capacity == 0 {
            return;
        }
        let at = if ring.ids.len() < ring.capacity {
            if ring.ids.len() == ring.ids.capacity() {
                // Doubling, but never past the capacity.
                let more = ring.ids.len().max(64).min(ring.capacity - ring.ids.len());
                ring.ids.reserve_exact(more);
            }
            ring.ids.push(id);
            ring.ids.len() - 1
        } else {
            let at = ring.head;
            let oldest = std::mem::replace(&mut ring.ids[at], id);
            ring.head = (at + 1) % ring.capacity;
            let forgotten = self.map.remove(self.map.hash(&oldest), value(kind, at));
            debug_assert!(forgotten);
            at
        };
        self.map.insert(hash, value(kind, at));
    }

    /// Remembered ids of one kind.
    pub(crate) fn len(&self, sampled: bool) -> usize {
        self.rings[usize::from(sampled)].ids.len()
    }
}

fn value(kind: usize, at: usize) -> u32 {
    (kind as u32) << 31 | at as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TraceId {
        [n; 16]
    }

    struct Cache(DecisionCache);

    impl Cache {
        fn new(sampled: usize, not_sampled: usize) -> Self {
            Cache(DecisionCache::new(IdMap::default(), sampled, not_sampled))
        }
        fn insert(&mut self, id: TraceId, sampled: bool) {
            let hash = self.0.map.hash(&id);
            self.0.insert(hash, id, sampled);
        }
        fn get(&self, id: &TraceId) -> Option<bool> {
            self.0.get(self.0.map.hash(id), id)
        }
        fn len(&self, sampled: bool) -> usize {
            self.0.len(sampled)
        }
    }

    #[test]
    fn each_kind_forgets_its_oldest_first() {
        let mut c = Cache::new(2, 1);
        c.insert(id(1), true);
        c.insert(id(2), false);
        c.insert(id(3), true);
        assert_eq!(c.get(&id(1)), Some(true));
        assert_eq!(c.get(&id(2)), Some(false));
        c.insert(id(4), true);
        assert_eq!(c.get(&id(1)), None);
        assert_eq!(c.get(&id(3)), Some(true));
        c.insert(id(5), false);
        assert_eq!(c.get(&id(2)), None);
        assert_eq!(c.get(&id(5)), Some(false));
        assert_eq!((c.len(true), c.len(false)), (2, 1));
        // Many times round the rings: each remembers exactly its last `capacity` ids.
        let mut c = Cache::new(3, 5);
        for n in 0..=255u8 {
            c.insert(id(n), n % 2 == 0);
        }
        for n in 0..=255u8 {
            let expected = match (n % 2 == 0, n) {
                (true, 250..) | (false, 247..) => Some(n % 2 == 0),
                _ => None,
            };
            assert_eq!(c.get(&id(n)), expected, "{n}");
        }
        assert_eq!(c.0.map.len(), 8);
    }

    #[test]
    fn zero_capacity_remembers_nothing() {
        let mut c = Cache::new(0, 3);
        c.insert(id(1), true);
        c.insert(id(2), false);
        assert_eq!(c.get(&id(1)), None);
        assert_eq!(c.get(&id(2)), Some(false));
        assert_eq!(c.len(true), 0);
    }
}
