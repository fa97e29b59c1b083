//! Wake-all notification between tasks of one core.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Tasks wait on [`Notify::notified`]; [`Notify::notify_all`] wakes every waiter.
///
/// A `Notified` future completes once `notify_all` was called after the future
/// was created, so "check the condition, then await" loses no wake-up as long as
/// the future is created before the check (nothing runs in between on one core).
#[derive(Debug, Default)]
pub struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    /// Wakes every task waiting now.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }

    /// A future that completes at the next `notify_all`.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            generation: self.generation.get(),
        }
    }
}

/// Returned by [`Notify::notified`].
#[derive(Debug)]
pub struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut waiters = self.notify.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    #[test]
    fn completes_only_after_notify() {
        let notify = Notify::default();
        let mut waiting = Box::pin(notify.notified());
        assert!(future::block_on(future::poll_once(&mut waiting)).is_none());
        assert!(future::block_on(future::poll_once(&mut waiting)).is_none());
        assert_eq!(
            notify.waiters.borrow().len(),
            1,
            "repeated polls register once"
        );
        notify.notify_all();
        assert!(future::block_on(future::poll_once(&mut waiting)).is_some());
        // A future created after the notification waits for the next one.
        let mut later = Box::pin(notify.notified());
        assert!(future::block_on(future::poll_once(&mut later)).is_none());
    }
}
