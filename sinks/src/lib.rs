//! shardtel's exporters: where kept telemetry leaves the process.
//!
//! Each core runs its own instance of every configured exporter (shared
//! nothing): an [`ExportQueue`] batches encoded `Export*ServiceRequest` pieces
//! per signal (by item count, bytes and age), holds the batches in a queue
//! bounded by bytes, and sends them from a few sender tasks on the same
//! glommio executor, retrying retryable failures with exponential backoff.
//!
//! Main types:
//! - [`ExportQueue`]: one exporter on one core; [`ExportQueue::try_push`]
//!   refuses with [`QueueFull`] instead of growing, [`ExportQueue::drain`]
//!   flushes on shutdown, [`ExportQueue::stats`] gives an [`ExporterStats`]
//!   snapshot (per-signal arrays indexed by [`Signal::index`](shardtel_protocol::Signal::index)).
//! - The kinds behind it (chosen by `type` in `[exporters.NAME]`, one folder or file each):
//!   `otlp` (OTLP/gRPC over h2c or TLS, gzip by default), `otlphttp` (OTLP/HTTP protobuf over
//!   HTTP/1.1 keep-alive, plaintext or TLS), `file` (OTLP JSON lines, one file per core, rotated
//!   by size), `kafka` (one message per trace keyed by trace ID, librdkafka's threads beside
//!   the reactors), `prometheusremotewrite` (remote write v1 with per-series delta →
//!   cumulative state, see [`prometheus`]), `loki` (push API, see [`loki`]) and `blackhole`
//!   (counts and drops).
//! - [`ExportError`] with [`ExportError::disposition`]: the single place that
//!   decides whether a failure is retried; permanent failures are counted and
//!   logged at most once per [`REPORT_INTERVAL`] per exporter per core.
//! - [`net`]: hyper 1.x over glommio sockets, shared with the engine's receivers.
//! - [`panics`]: a conversion or export that panics fails its batch (counted) instead of its
//!   core; shared with the engine's receivers.
//! - [`net`]: hyper 1.x over glommio sockets (plaintext or TLS), shared with the engine's
//!   receivers.
//! - [`client_tls`]: an exporter's `https://` settings (`[exporters.NAME.tls]`), built before
//!   the reactors start and handed to every core's queue.
//!
//! Modules, bottom up (each uses only those above it):
//! - `net`, `retry` (backoff, `Retry-After`, `google.rpc.Status`), `offload`, `notify`,
//!   `threads`, `report`, `attributes` (attribute values as text): helpers that know no
//!   exporter.
//! - `error`: what an attempt returns ([`ExportError`], `ExportReply`) and its classification;
//!   data only.
//! - `transport`: the HTTP transport of every network exporter: targets built from
//!   endpoints, the one place connections are opened (`Target::connect`, where TLS goes), an
//!   HTTP/1.1 keep-alive pool, a shared HTTP/2 connection, request and response bodies.
//! - `batch`: batches and the per-signal batcher.
//! - The kinds, one folder or file each: `file`, `kafka`, `otlp` (on `transport`), `push`
//!   (what the storage kinds share, on `transport`), `prometheus` (on `push`), `loki` (on
//!   `push`, and on `prometheus`'s label naming, which Loki's labels follow).
//! - `stats` (the snapshot, with a slot for each kind's counters), `exporter` (the dispatch
//!   over the kinds, built from their configuration), `disk_queue`.
//! - `queue`: [`ExportQueue`], batching, the bounded queue and the sender tasks.
//!
//! Crates below: `shardtel-protocol` (wire format: [`shardtel_protocol::reframe::Encoded`]
//! pieces, [`shardtel_protocol::Signal`], compression, OTLP JSON), `shardtel-config`
//! (exporter settings), `shardtel-wal` (disk queues) and `shardtel-tls` (rustls client settings,
//! re-read on change); the engine above owns the executors
//! and calls [`ExportQueue::start`] once per core and exporter. Runtime: glommio (timers,
//! io_uring files and sockets), hyper (HTTP/1.1 and HTTP/2 clients), rdkafka, `log` for
//! messages.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::Bytes;
//! use shardtel_config::{ExporterConfig, ExporterKind};
//! use shardtel_protocol::{reframe::Encoded, Signal};
//! use shardtel_sinks::{DrainOutcome, ExportQueue};
//!
//! let cfg = ExporterConfig { name: "blackhole".into(), kind: ExporterKind::Blackhole };
//! glommio::LocalExecutorBuilder::default()
//!     .spawn(move || async move {
//!         // One instance per core; the engine calls this inside each core's executor.
//!         let queue = ExportQueue::start(&cfg, 0).expect("valid exporter");
//!         // An encoded ExportTraceServiceRequest (here: one empty ResourceSpans).
//!         let mut piece = Encoded::new();
//!         piece.push(Bytes::from_static(&[0x0a, 0x00]));
//!         if queue.try_push(Signal::Traces, piece, 1).is_err() {
//!             // QueueFull: refuse the client's request with a retryable error.
//!         }
//!         let outcome = queue.drain(Instant::now() + Duration::from_secs(5)).await;
//!         assert_eq!(outcome, DrainOutcome::Drained);
//!         assert_eq!(queue.stats().signal(Signal::Traces).sent_items, 1);
//!     })
//!     .unwrap()
//!     .join()
//!     .unwrap();
//! ```

// net.rs implements hyper's read trait with one audited `unsafe` block (`#[allow]`ed there,
// with its `// SAFETY:` note); nothing else may.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod attributes;
mod batch;
mod disk_queue;
mod error;
mod exporter;
mod file;
mod kafka;
pub mod loki;
pub mod net;
mod notify;
mod offload;
mod otlp;
pub mod panics;
pub mod prometheus;
mod push;
mod queue;
mod report;
mod retry;
mod stats;
pub mod threads;
mod transport;

pub use disk_queue::{queue_dir, DiskQueueSettings};
pub use error::{Disposition, ExportError, QueueFull, SinkError};
pub use exporter::{client_tls, senders_of, NETWORK_SENDERS};
pub use file::{backup_path, core_file_path};
pub use kafka::{KafkaProducerStats, TraceMessages};
pub use queue::{DrainOutcome, ExportQueue, PreparedSettings};
pub use report::{Throttle, REPORT_INTERVAL};
pub use retry::{RetryPolicy, MULTIPLIER, RANDOMIZATION};
pub use stats::{ExporterStats, SignalStats};

/// `user-agent` of every request.
pub(crate) const USER_AGENT: &str = concat!("shardtel/", env!("CARGO_PKG_VERSION"));
