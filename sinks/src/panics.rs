//! Panics contained to the work that raised them: a conversion or export that panics fails
//! its request or batch (counted by the caller) instead of taking its core down.
//!
//! [`contain`] and [`Contained`] catch a panic of a closure or a future; while they run, the
//! thread is marked ([`is_contained`]), so that a process-wide panic hook can tell a contained
//! panic (log it) from one that unwinds a reactor (fail loudly). Work offloaded to a blocking
//! thread is contained there and resumed on the reactor (see `offload`).

use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    /// How many containments are running on this thread.
    static CONTAINING: Cell<u32> = const { Cell::new(0) };
}

/// A contained panic: its message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("internal error (a panic: {message})")]
pub struct Panicked {
    /// The panic's message (its payload when that is a string).
    pub message: String,
}

impl Panicked {
    /// The panic of `payload`.
    pub fn of(payload: &(dyn Any + Send)) -> Panicked {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string payload".to_string());
        Panicked { message }
    }
}

/// True while a containment runs on this thread: a panic now is caught.
pub fn is_contained() -> bool {
    CONTAINING.with(|c| c.get() > 0)
}

/// Marks the thread as containing until dropped.
struct Marker;

impl Marker {
    fn new() -> Marker {
        CONTAINING.with(|c| c.set(c.get() + 1));
        Marker
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        CONTAINING.with(|c| c.set(c.get() - 1));
    }
}

/// Runs `f`, turning a panic into [`Panicked`]. `f` must leave nothing half-changed that
/// outlives it (a pure conversion of its inputs).
pub fn contain<R>(f: impl FnOnce() -> R) -> Result<R, Panicked> {
    let _marker = Marker::new();
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| Panicked::of(&*payload))
}

/// Runs `f`, turning a panic into its payload (to be resumed elsewhere, see
/// [`std::panic::resume_unwind`]).
pub(crate) fn contain_payload<R>(f: impl FnOnce() -> R) -> Result<R, Box<dyn Any + Send>> {
    let _marker = Marker::new();
    catch_unwind(AssertUnwindSafe(f))
}

/// A future whose panics (in any poll) become [`Panicked`]; see [`contain`]. `F` is `Unpin`:
/// box a future that is not (`Box::pin`).
pub struct Contained<F> {
    inner: F,
}

impl<F: Future + Unpin> Contained<F> {
    /// `inner`, contained.
    pub fn new(inner: F) -> Contained<F> {
        Contained { inner }
    }
}

impl<F: Future + Unpin> Future for Contained<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.inner;
        match contain(|| Pin::new(inner).poll(cx)) {
            Ok(poll) => poll.map(Ok),
            Err(panicked) => Poll::Ready(Err(panicked)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_are_contained_and_marked() {
        assert!(!is_contained());
        assert_eq!(contain(|| 7), Ok(7));
        let e = contain(|| -> u8 {
            assert!(is_contained());
            panic!("boom {}", 1)
        })
        .unwrap_err();
        assert_eq!(e.message, "boom 1");
        assert!(!is_contained());
        let fut = Contained::new(Box::pin(async { panic!("in a future") }));
        let e: Result<(), Panicked> = futures_lite::future::block_on(fut);
        assert_eq!(
            e.unwrap_err().to_string(),
            "internal error (a panic: in a future)"
        );
    }
}
