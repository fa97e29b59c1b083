//! One core's data path, from a decoded request to the export queues: the ingest step (checks,
//! the durability hand-off, the scan), routing (spans by trace ID and, when an exporter keeps
//! per-series state, metrics by series, to their owner cores over the [`mesh`]), the
//! processors (`shardtel-processors`; a `routing` processor's choice of exporters per trace,
//! log record or data point), the tail sampler (`shardtel-sampler`) and the exporters
//! (`shardtel-sinks`).
//!
//! A [`Pipeline`] is built per core ([`Pipeline::build`]) and groups its state in a few parts:
//! the exporters, the mesh's sending ends, the routing scratch, the processors,
//! the sampler and the ingest log. The receivers reach it only through their intake
//! (`crate::receivers::Intake`): [`Pipeline::ingest`] is the one entry for new data;
//! [`Pipeline::deliver`] takes what other cores route here.
//!
//! Uses the durability layer (ingest log) and telemetry (metric families); knows nothing of
//! receivers, reactors or the process.

mod error;
mod exporters;
mod ingest;
pub mod mesh;
mod metric_routing;
mod processing;
mod reload;
mod route;
mod route_items;
pub(crate) mod sampling;
mod scratch;

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use shardtel_config::{Config, Durability, ProcessorConfig};
use shardtel_processors::{ProcessorError, Processors};
use shardtel_protocol::scan::TracesIndex;
use shardtel_sampler::arena::BodyArena;
use shardtel_sampler::{CoreShare, Sampler, SamplerError};
use shardtel_sinks::{DiskQueueSettings, SinkError};

use crate::durability::{Checkpoints, IngestLog, IngestLogSnapshot, OpenError};
use exporters::Exporters;
use mesh::Mesh;
use metric_routing::MetricsRouter;

pub use error::{FailReason, IngestError, Overload, TokenProblem};
pub use exporters::{exporter_tls, queue_charge, ExporterSnapshot, ExporterTls};
pub use ingest::{Partial, Rejected};
pub use mesh::{MeshEnds, MeshMessage, MeshSnapshot};
pub use reload::{PreparedReload, ReloadError};

/// Why a core's pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The ingest log could not be opened.
    #[error(transparent)]
    IngestLog(#[from] OpenError),
    /// A pipeline lists an exporter that `[exporters]` does not define.
    #[error("exporter {name} is not defined")]
    UndefinedExporter {
        /// The exporter's name.
        name: String,
    },
    /// An exporter failed to start.
    #[error("exporter {name}: {source}")]
    Exporter {
        /// The exporter's name.
        name: String,
        /// Why.
        #[source]
        source: SinkError,
    },
    /// The traces pipeline lists a processor that `[processors]` does not define.
    #[error("processor {name} is not defined")]
    UndefinedProcessor {
        /// The processor's name.
        name: String,
    },
    /// The tail sampler could not be built.
    #[error("processor {name}: {source}")]
    Sampler {
        /// The processor's name.
        name: String,
        /// Why.
        #[source]
        source: SamplerError,
    },
    /// The attributes, resource or filter processors could not be compiled.
    #[error(transparent)]
    Processors(#[from] ProcessorError),
}

/// One core's data path (see the module docs). `!Send`: it never leaves its core.
pub struct Pipeline {
    /// Core index, `0..cores`.
    core: usize,
    /// Number of cores.
    cores: usize,
    exporters: Exporters,
    mesh: Mesh,
    routing: Routing,
    /// The attributes, resource and filter processors of every pipeline; a reload swaps in
    /// new ones ([`Pipeline::processors`] lends them).
    processors: RefCell<Rc<Processors>>,
    /// The tail sampler of the traces pipeline, when it has one. Spans owned by this core pass
    /// through it before any exporter.
    sampler: Option<RefCell<Sampler>>,
    /// This core's ingest log, with `durability = "ack_after_sync"`.
    ingest_log: Option<IngestLog>,
    /// Frozen when a reactor of the process dies (see [`Checkpoints`]).
    checkpoints: Checkpoints,
}

/// Scratch for routing, reused request after request.
struct Routing {
    /// Indexes of the trace requests between their scan and their routing.
    indexes: scratch::Pool<TracesIndex>,
    /// Its spans per owner core.
    parts: RefCell<Vec<TracesIndex>>,
    /// Splits metrics by series owner when the metrics pipeline keeps per-series state.
    metrics: Option<MetricsRouter>,
    /// With a tail sampler: where this core copies the trace request bodies it receives, so
    /// that the sampler holds them in memory sized to them (see `shardtel_sampler::arena`).
    bodies: RefCell<BodyArena>,
}

impl Pipeline {
    /// Builds core `core`'s pipeline (of `cores`): opens its ingest log under `data_dir` (with
    /// durability; it checkpoints until `checkpoints` is frozen), starts its exporters (disk queues as `disk_queues` says), builds its tail
    /// sampler and compiles its processors. The mesh is connected later
    /// ([`Pipeline::connect_mesh`]).
    pub async fn build(
        core: usize,
        cores: usize,
        config: &Config,
        data_dir: &Path,
        disk_queues: &DiskQueueSettings,
        checkpoints: Checkpoints,
        exporter_tls: &ExporterTls,
    ) -> Result<Pipeline, BuildError> {
        let ingest_log = if config.engine.durability == Durability::AckAfterSync {
            let log = IngestLog::open(data_dir, core, &config.engine.wal, checkpoints.clone());
            Some(log.await?)
        } else {
            None
        };
        let exporters = Exporters::start(config, core, cores, disk_queues, exporter_tls).await?;
        let mut sampler = None;
        if let Some(traces) = &config.pipelines.traces {
            for name in &traces.processors {
                match config.processors.get(name) {
                    Some(ProcessorConfig::TailSampling(cfg)) => {
                        let s = Sampler::new(cfg, CoreShare { core, cores }).map_err(|source| {
                            BuildError::Sampler {
                                name: name.clone(),
                                source,
                            }
                        })?;
                        sampler = Some(RefCell::new(s));
                    }
                    Some(_) => {}
                    None => return Err(BuildError::UndefinedProcessor { name: name.clone() }),
                }
            }
        }
        let processors = Processors::build(config)?;
        Ok(Pipeline {
            core,
            cores,
            exporters,
            mesh: Mesh::new(cores),
            routing: Routing {
                indexes: scratch::Pool::default(),
                parts: RefCell::new(Vec::new()),
                metrics: (cores > 1 && metric_routing::needed(config)).then(MetricsRouter::default),
                bodies: RefCell::new(BodyArena::default()),
            },
            processors: RefCell::new(Rc::new(processors)),
            sampler,
            ingest_log,
            checkpoints,
        })
    }

    /// The processors now (a reload may swap them).
    fn processors(&self) -> Rc<Processors> {
        self.processors.borrow().clone()
    }

    /// The core this pipeline runs on.
    pub fn core(&self) -> usize {
        self.core
    }

    /// True when requests are acknowledged only once on disk.
    pub fn durable(&self) -> bool {
        self.ingest_log.is_some()
    }

    /// With an ingest log: its next LSN and its first unreleased one, after moving the
    /// watermark over what was released so far (the Kafka receiver commits an offset once the
    /// frame of its message is released).
    pub fn ingest_log_position(&self) -> Option<(u64, u64)> {
        self.ingest_log.as_ref().map(|log| {
            log.advance();
            log.position()
        })
    }

    /// Data this pipeline holds in memory now: its export queues' bytes and its tail
    /// sampler's charge (with the requests in flight, what the memory limiter counts).
    pub fn buffered_bytes(&self) -> u64 {
        let sampled = self
            .sampler
            .as_ref()
            .map_or(0, |s| s.borrow().stats().buffered_bytes);
        self.exporters.queued_bytes() as u64 + sampled
    }

    /// Moves each orphaned export queue (`(exporter, directory)`, see
    /// [`crate::durability::orphans_of`]) into this core's queue of the same exporter, in the
    /// background.
    pub fn adopt_orphaned_queues(&self, orphans: Vec<(String, std::path::PathBuf)>) {
        crate::durability::adopt_orphaned_queues(self.exporters.by_name(), orphans);
    }

    /// Sends what the export queues hold until `deadline`; true when all of them drained.
    pub async fn drain_exporters(&self, deadline: std::time::Instant) -> bool {
        self.exporters.drain(deadline).await
    }

    /// The drain ran out of time with data undelivered: with durability, no ingest log of the
    /// process checkpoints any more (see [`Checkpoints`]), so that the next start replays it.
    pub fn keep_undelivered_for_replay(&self) {
        if self.ingest_log.is_some() && !self.checkpoints.frozen() {
            log::warn!(
                "core {}: shutdown_timeout passed with data undelivered; the ingest logs keep \
                 it for the next start",
                self.core
            );
            self.checkpoints.freeze();
        }
    }

    /// Checkpoints what was released and closes the ingest log, if there is one.
    pub async fn close_ingest_log(&self) {
        if let Some(log) = &self.ingest_log {
            log.close().await;
        }
    }

    /// Statistics of every exporter, for telemetry.
    pub fn exporter_snapshot(&self) -> Vec<ExporterSnapshot> {
        self.exporters.snapshot()
    }

    /// The mesh counters, for telemetry.
    pub fn mesh_snapshot(&self) -> MeshSnapshot {
        self.mesh.snapshot()
    }

    /// The ingest log's counters, for telemetry.
    pub fn ingest_log_snapshot(&self) -> Option<IngestLogSnapshot> {
        self.ingest_log.as_ref().map(IngestLog::snapshot)
    }
}
