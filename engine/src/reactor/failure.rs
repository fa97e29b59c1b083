//! A reactor that panics fails loudly: the process-wide panic hook logs every panic, and one
//! that is not contained (see `shardtel_sinks::panics`) on a reactor's thread marks that core
//! failed at once (health turns 503) and freezes the ingest logs' checkpoints before its
//! unwinding drops anything (see [`Checkpoints`]). The process then drains the other cores and
//! exits non-zero.

use std::cell::RefCell;
use std::sync::{Arc, Once};

use crate::durability::Checkpoints;
use crate::telemetry::{Board, CoreState};

use super::snapshot::CoreSnapshot;

thread_local! {
    /// What the panic hook does for an uncontained panic on this thread (set on reactors).
    static ON_PANIC: RefCell<Option<Box<dyn Fn()>>> = const { RefCell::new(None) };
}

/// Installs the process-wide panic hook (once): every panic is logged with its thread and
/// location; an uncontained one on a reactor runs the action its reactor registered.
pub fn install_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("unnamed");
            let message = shardtel_sinks::panics::Panicked::of(info.payload()).message;
            let location = info
                .location()
                .map(|l| l.to_string())
                .unwrap_or_default();
            if shardtel_sinks::panics::is_contained() {
                log::error!(
                    "thread {name} panicked at {location}: {message} (contained: its request or batch failed)"
                );
                return;
            }
            // First the core's action (health, checkpoints): logging a backtrace can take a
            // second (symbols).
            let _ = ON_PANIC.try_with(|action| {
                if let Some(action) = action.borrow().as_ref() {
                    action();
                }
            });
            log::error!("thread {name} panicked at {location}: {message}");
            let backtrace = std::backtrace::Backtrace::capture();
            if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
                log::error!("backtrace:\n{backtrace}");
            }
        }));
    });
}

/// Makes an uncontained panic on this thread (the reactor of core `core`) mark the core failed
/// and freeze `checkpoints`.
pub(super) fn watch_this_reactor(
    core: usize,
    board: Arc<Board<CoreSnapshot>>,
    checkpoints: Checkpoints,
) {
    ON_PANIC.with(|action| {
        *action.borrow_mut() = Some(Box::new(move || {
            checkpoints.freeze();
            board.set_state(core, CoreState::Failed);
        }));
    });
}
