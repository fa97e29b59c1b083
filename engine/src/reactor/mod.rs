//! One reactor: the [`Core`] value built inside its glommio executor, and its lifecycle as
//! three steps, each a function of its own:
//!
//! - `start` (`start.rs`): build the core's pipeline and intake, connect the mesh, recover what
//!   the ingest log holds, bind the receivers (everything that can fail, with a typed
//!   [`StartError`]);
//! - `serve` (`serve.rs`): report ready, publish snapshots, run the sampler's timer, apply
//!   configuration reloads sent to this core ([`reload`]), until the process asks for shutdown
//!   (the receivers and the mesh run as tasks meanwhile);
//! - `drain` (`drain.rs`): refuse new data, let in-flight requests and mesh traffic finish,
//!   decide what the sampler holds, drain the exporters, commit Kafka offsets, close the log.
//!
//! A reactor that dies of a panic fails loudly ([`failure`]): its core is marked failed at once
//! and the ingest logs stop checkpointing; the process above drains the others and exits.
//!
//! A core's state is grouped into a few parts: the [`Pipeline`] (data path), the [`Intake`]
//! (the narrow handle its receivers get), the running receivers, and where it publishes
//! ([`snapshot`]). Uses every layer below it; the process above builds one per CPU.

mod drain;
pub mod failure;
pub mod reload;
mod serve;
pub mod snapshot;
mod start;

use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use shardtel_config::Config;

use crate::durability::Checkpoints;
use crate::memory_limiter::MemorySetup;
use crate::pipeline::{BuildError, ExporterTls, MeshEnds, Pipeline};
use crate::receivers::fluentforward::FluentForwardServer;
use crate::receivers::jaeger::JaegerServer;
use crate::receivers::kafka::{KafkaReceiverError, KafkaReceiverHandle};
use crate::receivers::otlp::{BindError, OtlpServer};
use crate::receivers::prometheus::{PrometheusReceiverHandle, TargetError};
use crate::receivers::security::ServerSecurity;
use crate::receivers::zipkin::ZipkinServer;
use crate::receivers::Intake;
use crate::telemetry::{Board, CoreState};
use snapshot::CoreSnapshot;

/// Everything a core needs to start; built on the main thread, moved into the executor.
pub struct CoreSetup {
    /// Core index, `0..cores`.
    pub id: usize,
    /// CPU the executor is pinned to.
    pub cpu: usize,
    /// Number of cores.
    pub cores: usize,
    /// The validated configuration.
    pub config: Arc<Config>,
    /// This core's ends of the mesh.
    pub mesh: MeshEnds,
    /// Where state and snapshots are published.
    pub board: Arc<Board<CoreSnapshot>>,
    /// Set by the signal thread to start draining.
    pub shutdown: Arc<AtomicBool>,
    /// Start-up outcome, read by the main thread.
    pub ready: mpsc::Sender<Result<usize, CoreStartError>>,
    /// The memory limiter, when a pipeline lists one.
    pub memory: Option<MemorySetup>,
    /// Frozen when a reactor dies (see [`Checkpoints`]).
    pub checkpoints: Checkpoints,
    /// The server receivers' TLS and bearer tokens (read before the reactors start).
    pub security: ServerSecurity,
    /// The TLS settings of the exporters with `https://` endpoints, by name.
    pub exporter_tls: Arc<ExporterTls>,
    /// Where reloads reach this core (none: the configuration never changes).
    pub reload: Option<reload::ReloadInbox>,
}

/// Why a core could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `engine.data_dir` has no absolute form.
    #[error("engine.data_dir: {0}")]
    DataDir(#[source] std::io::Error),
    /// The pipeline (ingest log, exporters, sampler, processors) could not be built.
    #[error(transparent)]
    Pipeline(#[from] BuildError),
    /// An OTLP listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The Kafka consumer could not start.
    #[error(transparent)]
    Kafka(#[from] KafkaReceiverError),
    /// A Prometheus scrape target could not be set up.
    #[error(transparent)]
    Prometheus(#[from] TargetError),
    /// A zipkin, jaeger or fluentforward listener could not be bound.
    #[error(transparent)]
    Listener(#[from] crate::receivers::listener::BindError),
}

/// A core that failed to start: which one, and why.
#[derive(Debug, thiserror::Error)]
#[error("core {core} (cpu {cpu}): {source}")]
pub struct CoreStartError {
    /// The core.
    pub core: usize,
    /// Its CPU.
    pub cpu: usize,
    /// Why.
    #[source]
    pub source: StartError,
}

/// One reactor's state. `!Send`: it never leaves its core.
pub struct Core {
    /// Core index, `0..cores`.
    id: usize,
    /// The data path: exporters, mesh, routing, processors, sampler, ingest log.
    pipeline: Rc<Pipeline>,
    /// What the receivers get of this core.
    intake: Rc<Intake>,
    /// The receivers running on this core.
    receivers: Receivers,
    /// Where this core publishes its state and snapshots.
    board: Arc<Board<CoreSnapshot>>,
    /// How long draining may take.
    shutdown_timeout: Duration,
}

/// The receivers running on one core.
struct Receivers {
    otlp: Option<OtlpServer>,
    kafka: Option<KafkaReceiverHandle>,
    prometheus: Option<PrometheusReceiverHandle>,
    zipkin: Option<ZipkinServer>,
    jaeger: Option<JaegerServer>,
    fluentforward: Option<FluentForwardServer>,
}

impl Core {
    /// Publishes this core's snapshot.
    fn publish(&self) {
        self.board.publish(self.id, snapshot::take(self));
    }

    fn set_state(&self, state: CoreState) {
        self.board.set_state(self.id, state);
    }
}

/// Runs one core until shutdown completes: `start`, then `serve` until `shutdown` is set, then
/// `drain`. Called inside its executor.
pub async fn run(mut setup: CoreSetup) {
    let (core, cpu) = (setup.id, setup.cpu);
    let reload = setup.reload.take();
    failure::watch_this_reactor(core, setup.board.clone(), setup.checkpoints.clone());
    let ready = setup.ready.clone();
    let shutdown = setup.shutdown.clone();
    let started = match start::start(setup).await {
        Ok(started) => started,
        Err(source) => {
            let _ = ready.send(Err(CoreStartError { core, cpu, source }));
            return;
        }
    };
    let serving = serve::serve(started, &ready, &shutdown, reload).await;
    drain::drain(serving).await;
}
