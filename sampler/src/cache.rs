//! The decision cache: recently decided trace ids and their outcome, two bounded FIFOs.

use std::collections::{HashMap, VecDeque};

use shardtel_protocol::TraceId;

use shardtel_protocol::hash::TraceIdHashBuilder;

/// Sampled and not-sampled trace ids, each kind in its own FIFO of fixed capacity (the oldest
/// id is forgotten first). A capacity of 0 turns that kind off.
///
/// Memory: about 60 bytes per remembered id (map entry plus ring slot), so the default
/// 100 000 + 100 000 costs about 12 MiB per core.
#[derive(Debug)]
pub(crate) struct DecisionCache {
    map: HashMap<TraceId, bool, TraceIdHashBuilder>,
    sampled: VecDeque<TraceId>,
    not_sampled: VecDeque<TraceId>,
    sampled_capacity: usize,
    not_sampled_capacity: usize,
}

impl DecisionCache {
    pub(crate) fn new(sampled_capacity: usize, not_sampled_capacity: usize) -> Self {
        DecisionCache {
            map: HashMap::default(),
            sampled: VecDeque::new(),
            not_sampled: VecDeque::new(),
            sampled_capacity,
            not_sampled_capacity,
        }
    }

    /// The remembered decision for `id`: `Some(true)` sampled, `Some(false)` not sampled.
    #[inline]
    pub(crate) fn get(&self, id: &TraceId) -> Option<bool> {
        if self.map.is_empty() {
            return None;
        }
        self.map.get(id).copied()
    }

    /// Remembers the decision for `id`, forgetting the oldest id of the same kind when full.
    /// `id` must not be remembered already (a trace is only decided while not in the cache).
    pub(crate) fn insert(&mut self, id: TraceId, sampled: bool) {
        let (ring, capacity) = if sampled {
            (&mut self.sampled, self.sampled_capacity)
        } else {
            (&mut self.not_sampled, self.not_sampled_capacity)
        };
        if capacity == 0 {
            return;
        }
        if ring.len() == capacity {
            if let Some(oldest) = ring.pop_front() {
                self.map.remove(&oldest);
            }
        }
        ring.push_back(id);
        let previous = self.map.insert(id, sampled);
        debug_assert!(previous.is_none(), "a cached trace was decided again");
    }

    /// Remembered ids of one kind.
    pub(crate) fn len(&self, sampled: bool) -> usize {
        if sampled {
            self.sampled.len()
        } else {
            self.not_sampled.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TraceId {
        [n; 16]
    }

    #[test]
    fn each_kind_forgets_its_oldest_first() {
        let mut c = DecisionCache::new(2, 1);
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
    }

    #[test]
    fn zero_capacity_remembers_nothing() {
        let mut c = DecisionCache::new(0, 3);
        c.insert(id(1), true);
        c.insert(id(2), false);
        assert_eq!(c.get(&id(1)), None);
        assert_eq!(c.get(&id(2)), Some(false));
        assert_eq!(c.len(true), 0);
    }
}
