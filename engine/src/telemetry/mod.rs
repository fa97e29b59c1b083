//! Self-telemetry: the lifecycle state and published snapshots of every core, the one
//! Prometheus text renderer, the health (:13133) and metrics (:8888) endpoints, the log, and
//! systemd's readiness notifications.
//!
//! Counters live on their core as `Cell<u64>`; once a second (and on every state change) each
//! core publishes a snapshot into its own slot of a [`Board`]. The telemetry threads only read
//! snapshots, so the hot path never shares a cache line with them.
//!
//! Telemetry imports no component. Each component describes its counters as metric families
//! ([`Families`]: one function from the snapshots of every core to an [`Exposition`]); the
//! reactor's snapshot type calls them all; [`Board::render_metrics`] adds the cores' states and
//! renders the text once, escaping label values in one place ([`exposition`]).

pub mod exposition;
pub mod logging;
pub mod sd_notify;
mod server;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

pub use exposition::{
    label_values, Column, Exposition, LabelValues, Labels, MetricFamily, MetricType, SampleValue,
};
pub use server::{serve, Endpoint};

/// A component's published counters, described as metric families.
pub trait Families {
    /// Adds the families of this component on every core (`(core, snapshot)`, in core order)
    /// to `out`.
    fn families(cores: &[(usize, &Self)], out: &mut Exposition);
}

/// Lifecycle of one core, as the health endpoint sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CoreState {
    /// Building exporters, connecting the mesh, binding listeners.
    Starting = 0,
    /// Accepting requests.
    Serving = 1,
    /// Refusing new work and flushing what it holds.
    Draining = 2,
    /// Done.
    Stopped = 3,
    /// Stopped by a panic: the process drains the other cores and exits non-zero.
    Failed = 4,
}

impl CoreState {
    fn name(state: u8) -> &'static str {
        match state {
            0 => "starting",
            1 => "serving",
            2 => "draining",
            3 => "stopped",
            _ => "failed",
        }
    }
}

/// How a configuration reload ended (`shardtel_config_reloads_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new configuration runs.
    Success = 0,
    /// The new file had problems, or a core could not build what it needs: nothing changed.
    Failure = 1,
    /// The new file changes keys that only a restart can change: nothing changed.
    Refused = 2,
}

impl ReloadOutcome {
    const NAMES: [&'static str; 3] = ["success", "failure", "refused"];
}

/// Where cores publish their state and snapshots (of type `S`); read by the telemetry threads.
pub struct Board<S> {
    cpus: Vec<usize>,
    states: Vec<AtomicU8>,
    snapshots: Vec<ArcSwapOption<S>>,
    /// Configuration reloads by [`ReloadOutcome`] (written by the reload thread only).
    reloads: [AtomicU64; 3],
    /// The outcome of the last reload (`Success` before any).
    last_reload: AtomicU8,
}

impl<S: Families + Send + Sync + 'static> Board<S> {
    /// A board for one core per CPU of `cpus`, all `Starting`.
    pub fn new(cpus: &[usize]) -> Arc<Self> {
        Arc::new(Self {
            cpus: cpus.to_vec(),
            states: cpus
                .iter()
                .map(|_| AtomicU8::new(CoreState::Starting as u8))
                .collect(),
            snapshots: cpus.iter().map(|_| ArcSwapOption::empty()).collect(),
            reloads: Default::default(),
            last_reload: AtomicU8::new(ReloadOutcome::Success as u8),
        })
    }

    /// Counts a configuration reload.
    pub fn count_reload(&self, outcome: ReloadOutcome) {
        self.reloads[outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.last_reload.store(outcome as u8, Ordering::Relaxed);
    }

    /// Records a core's lifecycle state. A failed core stays failed.
    pub fn set_state(&self, core: usize, state: CoreState) {
        let _ = self.states[core].fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
            (s != CoreState::Failed as u8).then_some(state as u8)
        });
    }

    /// Publishes a core's snapshot.
    pub fn publish(&self, core: usize, snapshot: S) {
        self.snapshots[core].store(Some(Arc::new(snapshot)));
    }

    /// True once every core serves and none drains (or failed).
    pub fn healthy(&self) -> bool {
        self.health().0
    }

    /// Whether every core serves, and the name of each core's state, read once.
    pub(super) fn health(&self) -> (bool, Vec<&'static str>) {
        let states: Vec<u8> = self
            .states
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .collect();
        let healthy = states.iter().all(|s| *s == CoreState::Serving as u8);
        (healthy, states.into_iter().map(CoreState::name).collect())
    }

    fn state_names(&self) -> Vec<&'static str> {
        self.states
            .iter()
            .map(|s| CoreState::name(s.load(Ordering::Acquire)))
            .collect()
    }

    /// Renders the snapshots of every core that published one, and their states, in the
    /// Prometheus text exposition format.
    pub fn render_metrics(&self) -> String {
        let snaps: Vec<(usize, Arc<S>)> = self
            .snapshots
            .iter()
            .enumerate()
            .filter_map(|(core, s)| s.load_full().map(|s| (core, s)))
            .collect();
        let rows: Vec<(usize, &S)> = snaps.iter().map(|(core, s)| (*core, &**s)).collect();
        let mut out = Exposition::default();
        S::families(&rows, &mut out);
        let states = self.state_names();
        let info = out.gauge(
            "shardtel_core_info",
            "One series per core: its CPU and state.",
        );
        for (core, _) in &rows {
            info.sample(
                &[
                    ("core", core),
                    ("cpu", &self.cpus[*core]),
                    ("state", &states[*core]),
                ],
                1u64,
            );
        }
        let reloads = out.counter(
            "shardtel_config_reloads_total",
            "Configuration reloads (SIGHUP, shardtel reload) by result: success, failure (a problem in the file or in building it; nothing changed), refused (keys that change only at a restart; nothing changed).",
        );
        for (i, result) in ReloadOutcome::NAMES.iter().enumerate() {
            reloads.sample(
                &[("result", result)],
                self.reloads[i].load(Ordering::Relaxed),
            );
        }
        let last_ok = u64::from(self.last_reload.load(Ordering::Relaxed) == 0);
        out.gauge(
            "shardtel_config_last_reload_successful",
            "1 when the last configuration reload (or the start) succeeded, 0 when it failed or was refused.",
        )
        .sample(&[], last_ok);
        out.render()
    }
}
