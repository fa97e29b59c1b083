//! Scratch indexes reused request after request. The scan of a request runs before its
//! ingest-log append and its index is used by the routing after it, so a request holds its
//! index across the group commit; a core keeps a few indexes for the requests that wait at
//! once, and lends a fresh one beyond that.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

use shardtel_protocol::scan::TracesIndex;
use shardtel_protocol::series::MetricsRouting;

/// Spare indexes a core keeps for reuse; more requests waiting at once get new ones.
const KEPT: usize = 16;
/// Spans (metrics) an index kept beyond the first keeps room for: one index grows to the
/// largest request, the others stay small.
const KEPT_SPANS: usize = 1024;

/// A value that can be emptied for the next request.
pub(super) trait Recycle: Default {
    /// Empties `self`; `small`: also gives back capacity beyond a small request's.
    fn recycle(&mut self, small: bool);
}

impl Recycle for TracesIndex {
    fn recycle(&mut self, small: bool) {
        self.clear();
        if small {
            self.resources.shrink_to(KEPT_SPANS / 16);
            self.scopes.shrink_to(KEPT_SPANS / 16);
            self.spans.shrink_to(KEPT_SPANS);
            self.headers.shrink_to(KEPT_SPANS / 8);
        }
    }
}

impl Recycle for MetricsRouting {
    fn recycle(&mut self, small: bool) {
        // Its vectors are private: a large one is dropped rather than kept.
        if small {
            *self = MetricsRouting::default();
        }
    }
}

/// Values of type `T` lent to one request at a time. `!Send`: one per core.
///
/// The primary value keeps the capacity the largest request gave it; spares (lent while the
/// primary is out) keep a small request's.
pub(super) struct Pool<T: Recycle> {
    primary: RefCell<Option<T>>,
    spares: RefCell<Vec<T>>,
}

impl<T: Recycle> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            primary: RefCell::new(Some(T::default())),
            spares: RefCell::new(Vec::new()),
        }
    }
}

impl<T: Recycle> Pool<T> {
    /// A value for one request, given back when the loan is dropped.
    pub(super) fn lend(&self) -> Loan<'_, T> {
        let value = self.primary.borrow_mut().take();
        let value = value.unwrap_or_else(|| self.spares.borrow_mut().pop().unwrap_or_default());
        Loan {
            pool: self,
            value: Some(value),
        }
    }
}

/// A value lent by a [`Pool`]; returns to it when dropped.
pub(super) struct Loan<'a, T: Recycle> {
    pool: &'a Pool<T>,
    value: Option<T>,
}

impl<T: Recycle> Deref for Loan<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value
            .as_ref()
            .expect("a loan holds its value until dropped")
    }
}

impl<T: Recycle> DerefMut for Loan<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
            .as_mut()
            .expect("a loan holds its value until dropped")
    }
}

impl<T: Recycle> Drop for Loan<'_, T> {
    fn drop(&mut self) {
        let Some(mut value) = self.value.take() else {
            return;
        };
        let mut primary = self.pool.primary.borrow_mut();
        if primary.is_none() {
            value.recycle(false);
            *primary = Some(value);
            return;
        }
        let mut spares = self.pool.spares.borrow_mut();
        if spares.len() < KEPT {
            value.recycle(true);
            spares.push(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_index_keeps_its_capacity_and_spares_are_shrunk() {
        let pool = Pool::<TracesIndex>::default();
        {
            let mut a = pool.lend();
            a.spans.reserve(100_000);
            let mut b = pool.lend();
            b.spans.reserve(100_000);
            drop(a);
        }
        // `a` went back first, as the primary; `b` became a small spare.
        assert!(pool.primary.borrow().as_ref().unwrap().spans.capacity() >= 100_000);
        assert!(pool.spares.borrow()[0].spans.capacity() <= KEPT_SPANS);
        // One request at a time gets the primary again.
        let c = pool.lend();
        assert!(c.spans.capacity() >= 100_000);
        assert!(c.spans.is_empty());
    }
}
