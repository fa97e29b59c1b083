//! The shardtel engine: one glommio reactor pinned to each configured core,
//! OTLP receivers on every core, a bounded channel mesh between cores, and
//! the per-core pipelines that batch and export.
//!
//! Layers, bottom up (each uses only those above it in this list):
//! - [`telemetry`]: per-core counters, published snapshots, health and
//!   Prometheus endpoints (a plain thread, never a reactor).
//! - [`mesh`]: the full mesh of bounded single-producer channels, made
//!   before start-up.
//! - [`memory_limiter`]: the process-wide memory limit: a monitor thread, admission checks,
//!   per-core buffer bounds fitted to the limit at start-up.
//! - [`ingest`]: request failures and how they map to gRPC codes and HTTP
//!   statuses.
//! - [`sampler`]: the per-core tail sampler (pure state machine: trace table,
//!   policies, decision cache), fed by the owner core.
//! - [`processors`]: the `attributes`, `resource` and `filter` processors of each pipeline,
//!   compiled per core; they rewrite only the spans, records and points they change.
//! - [`metric_routing`]: splitting metrics requests by series owner core, when an
//!   exporter keeps per-series state (`prometheusremotewrite`).
//! - [`durability`]: each core's ingest log (`durability = "ack_after_sync"`), the release of
//!   its frames once their spans are safe downstream, replay after a restart, WAL metrics.
//! - [`core`]: the per-core [`core::Core`] value, routing spans by trace ID
//!   (and metrics by series) to their owner core, and the core's lifecycle.
//! - [`receiver`]: OTLP/gRPC and OTLP/HTTP servers (hyper on glommio).
//! - [`kafka_receiver`]: one Kafka consumer per core in a consumer group; the consecutive
//!   messages of one signal a poll finds are ingested as one request (`kafka_group`) like an
//!   OTLP request, offsets committed only once their data was handed on (`kafka_offsets`: the
//!   request's ingest-log frame released, or, without durability, a delay passed).
//! - [`engine`]: start-up and shutdown of the whole process.
//!
//! Depends on `shardtel-protocol` (wire format), `shardtel-config`
//! (configuration), `shardtel-wal` (write-ahead logs) and `shardtel-sinks` (exporters).
//!
//! ```no_run
//! let config = shardtel_config::Config::embedded_default();
//! shardtel_engine::engine::run(config).expect("shardtel failed");
//! ```
#![deny(missing_docs)]

pub mod core;
pub mod durability;
pub mod engine;
pub mod ingest;
mod kafka_group;
mod kafka_offsets;
pub mod kafka_receiver;
pub mod logging;
pub mod memory_limiter;
pub mod mesh;
pub mod metric_routing;
pub mod processors;
pub mod receiver;
pub mod sampler;
pub mod telemetry;
