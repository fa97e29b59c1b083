//! Serving: the core reports ready and runs its periodic tasks until the process asks for
//! shutdown. Requests, mesh traffic and recovery run as tasks started by [`super::start`].

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use glommio::task::JoinHandle;

use super::reload::ReloadInbox;
use super::start::Started;
use super::{Core, CoreStartError};
use crate::memory_limiter;
use crate::telemetry::CoreState;

/// A serving core and its tasks.
pub(super) struct Serving {
    pub(super) core: Rc<Core>,
    pub(super) tasks: Tasks,
}

/// The tasks a serving core runs besides its receivers.
pub(super) struct Tasks {
    /// One consumer per peer's channel into this core.
    pub(super) consumers: Vec<JoinHandle<()>>,
    /// With durability: replays the ingest log, then moves its checkpoint.
    pub(super) recovery: Option<JoinHandle<()>>,
    /// Publishes the core's snapshot every second.
    pub(super) publisher: JoinHandle<()>,
    /// While the process is above its soft limit, returns freed memory to the OS.
    pub(super) allocator: Option<JoinHandle<()>>,
    /// The sampler's decision timer, and its stop flag. Stopped through the flag, never
    /// cancelled: a cancel while it waits for exporter room would lose the kept spans it is
    /// pushing.
    pub(super) ticker: Option<(JoinHandle<()>, Rc<Cell<bool>>)>,
    /// Hands the span metrics to the metrics pipeline every flush interval; stopped through
    /// its flag like the ticker.
    pub(super) spanmetrics: Option<(JoinHandle<()>, Rc<Cell<bool>>)>,
}

/// Reports the core ready, starts its periodic tasks, and waits until `shutdown` is set.
pub(super) async fn serve(
    started: Started,
    ready: &mpsc::Sender<Result<usize, CoreStartError>>,
    shutdown: &AtomicBool,
    reload: Option<ReloadInbox>,
) -> Serving {
    let Started {
        core,
        consumers,
        recovery,
    } = started;
    core.set_state(CoreState::Serving);
    core.publish();
    let _ = ready.send(Ok(core.id));
    let publisher = {
        let core = core.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_secs(1)).await;
                core.publish();
            }
        })
        .detach()
    };
    let allocator = core.intake.memory().map(|m| {
        glommio::spawn_local(memory_limiter::return_freed_memory_while_limited(m.gauge())).detach()
    });
    let ticker = core.pipeline.samples().then(|| {
        let stop = Rc::new(Cell::new(false));
        let (pipeline, flag) = (core.pipeline.clone(), stop.clone());
        let task = glommio::spawn_local(async move {
            while !flag.get() {
                let wait = pipeline.sampler_tick().await;
                glommio::timer::sleep(wait).await;
            }
        })
        .detach();
        (task, stop)
    });
    let mut prepared = None;
    let spanmetrics = core.pipeline.spanmetrics_interval().map(|interval| {
        let stop = Rc::new(Cell::new(false));
        let (pipeline, flag) = (core.pipeline.clone(), stop.clone());
        let task = glommio::spawn_local(async move {
            while !flag.get() {
                glommio::timer::sleep(interval).await;
                pipeline.flush_spanmetrics().await;
            }
        })
        .detach();
        (task, stop)
    });
    while !shutdown.load(Ordering::Acquire) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
        if let Some(inbox) = &reload {
            inbox.handle_waiting(&core, &mut prepared).await;
        }
    }
    Serving {
        core,
        tasks: Tasks {
            consumers,
            recovery,
            publisher,
            allocator,
            ticker,
            spanmetrics,
        },
    }
}
