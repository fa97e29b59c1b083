//! A growable bitmap over sequence numbers: one bit per span or request.

/// Bits indexed by `u64`, growing on demand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    /// Sets bit `i`; returns whether it was already set.
    #[inline]
    pub fn insert(&mut self, i: u64) -> bool {
        let w = (i / 64) as usize;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let mask = 1u64 << (i % 64);
        let was = self.words[w] & mask != 0;
        self.words[w] |= mask;
        was
    }

    /// Whether bit `i` is set.
    #[inline]
    pub fn contains(&self, i: u64) -> bool {
        self.words
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    /// Number of set bits.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_count() {
        let mut b = BitSet::default();
        assert!(!b.contains(1000));
        assert!(!b.insert(1000));
        assert!(b.insert(1000));
        assert!(!b.insert(3));
        assert!(b.contains(3) && b.contains(1000) && !b.contains(4));
        assert_eq!(b.count(), 2);
    }
}
