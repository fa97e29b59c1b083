//! The shardtel engine: one glommio reactor pinned to each configured core, receivers on every
//! core, a bounded channel mesh between cores, and the per-core pipelines that route, process,
//! sample and export.
//!
//! Layers, top down; each module uses only the layers below it (`layers::tests` checks every
//! `crate::` path in `src/` against this list):
//!
//! - [`process`]: the process: data-directory lock, memory fitted to the limit, telemetry
//!   endpoints, one pinned reactor per core, signals, configuration reloads on SIGHUP (validated,
//!   compared, then prepared and committed on every core), and a non-zero exit when a reactor
//!   dies.
//! - [`reactor`]: one core's state ([`reactor::Core`]: pipeline, intake, receivers, where it
//!   publishes) and its lifecycle: start, serve, drain, as separate steps.
//! - [`receivers`]: OTLP/gRPC, OTLP/HTTP and Kafka (connection timeouts, decoding charged
//!   before it allocates); each gets the core's narrow [`receivers::Intake`] handle, never the
//!   core.
//! - [`pipeline`]: ingest (checks, scan, the durability hand-off), routing of spans by trace
//!   and metrics by series over the mesh, processors and tail sampler (the
//!   `shardtel-processors` and `shardtel-sampler` crates), exporters.
//! - [`memory_limiter`]: the process-wide memory limit: per-core buffers fitted to it at
//!   start-up, the admission check the intake asks, the monitor thread.
//! - [`durability`]: each core's ingest log (its checkpoints frozen once a reactor died), logs
//!   of cores that no longer exist, the data directory (its lock; created private).
//! - [`telemetry`]: core states and published snapshots, the one Prometheus text renderer (every
//!   component hands it metric families), the health and metrics endpoints, the log. Imports no
//!   component.
//!
//! Depends on `shardtel-protocol` (wire format), `shardtel-config` (configuration),
//! `shardtel-wal` (write-ahead logs), `shardtel-sinks` (exporters), `shardtel-tls` (TLS and
//! bearer tokens at the edges), `shardtel-processors` and `shardtel-sampler`.
//!
//! ```no_run
//! let config = shardtel_config::Config::embedded_default();
//! shardtel_engine::process::run(config, None).expect("shardtel failed");
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod durability;
pub mod memory_limiter;
pub mod pipeline;
pub mod process;
pub mod reactor;
pub mod receivers;
pub mod telemetry;

#[cfg(test)]
mod layers;
