//! OTLP wire format for shardtel: scan, route and re-frame OTLP requests without decoding them.
//!
//! This crate is a leaf: it knows nothing of executors, sockets or files, and no engine types.
//! Its layers, bottom up:
//!
//! - [`Signal`] ([`signal`]): traces, metrics or logs, with [`Signal::index`] for per-signal
//!   arrays, the name and the OTLP/HTTP and gRPC paths. The one signal type of the workspace:
//!   `shardtel-config` re-exports it, sinks, the engine and loadgen use it.
//! - [`wire`]: a zero-copy protobuf reader (varints, keys, length-delimited fields) with small
//!   `Copy` errors carrying absolute offsets.
//! - [`scan`]: the validating scanner. [`scan::TracesIndex`] indexes an
//!   `ExportTraceServiceRequest` in place (resources, scopes, spans with their trace ids) and
//!   splits it per destination ([`scan::TracesIndex::partition`]); [`scan::scan_metrics`] and
//!   [`scan::scan_logs`] validate and count the other signals, and
//!   [`scan::TracesIndex::scan_items`] also indexes their log records or metrics in the same
//!   index (for a routing processor). A [`scan::SpanBatch`] (buffer + index) is what crosses
//!   cores.
//! - [`span`]: lazy field access to one span or resource ([`span::SpanView`],
//!   [`span::AnyValueRef`]) for routing and sampling decisions.
//! - [`reframe`]: writes an `ExportTraceServiceRequest` for a batch or a subset of its spans
//!   (and a logs or metrics request for a subset of its items) as an [`reframe::Encoded`] chain
//!   of `Bytes` — new length prefixes plus slices of the original buffer, never a copy of a
//!   span.
//! - [`rewrite`]: processors' wire-level edits: a new encoding of just the span, log record,
//!   data point or resource an action changes ([`rewrite::write_message`]), metrics and logs
//!   requests re-framed around the changed items ([`rewrite::rewrite_request`]); rewritten spans
//!   ride in the index ([`scan::Rewrites`]) until [`reframe`] substitutes them.
//! - [`route`]: [`route::owner_core`], the pure trace-id → core function.
//! - [`series`]: routing metrics by series identity (`job`, `instance`, metric name) to an
//!   owner core, and [`series::MetricsRouting`], which splits a metrics request per owner with
//!   the same re-framing encoder.
//! - [`exposition`]: the Prometheus text and OpenMetrics scrape formats, parsed and translated
//!   to OTLP metrics protobuf (the `prometheus` scrape receiver's pure part).
//! - [`grpc`], [`compression`], [`json`], [`status`]: gRPC framing and status codes, bounded
//!   gzip/zstd, OTLP/JSON ↔ protobuf, and response bodies.
//! - [`translate`]: other formats to OTLP protobuf, once, on the receiving core — Zipkin
//!   (JSON, protobuf), Jaeger (protobuf, Thrift), Fluent Forward (MessagePack) — on bounded
//!   readers of their own ([`translate::thrift`], [`translate::msgpack`]).
//!
//! The hot path (scan, partition, re-frame) never decodes into message structs; the `prost`
//! types of `opentelemetry-proto` (re-exported as [`proto`]) serve the slow paths (JSON) and
//! tests.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use prost::Message;
//! use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
//! use shardtel_protocol::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
//! use shardtel_protocol::reframe::{encode_traces, Encoded};
//! use shardtel_protocol::route::owner_core;
//! use shardtel_protocol::scan::{SpanBatch, TracesIndex};
//! use shardtel_protocol::span::SpanView;
//!
//! // A request as a client would send it.
//! let spans = (0..4u8)
//!     .map(|i| Span { trace_id: vec![i; 16], span_id: vec![1; 8], name: format!("op{i}"), ..Default::default() })
//!     .collect();
//! let request = ExportTraceServiceRequest {
//!     resource_spans: vec![ResourceSpans {
//!         scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
//!         ..Default::default()
//!     }],
//! };
//! let buf = Bytes::from(request.encode_to_vec());
//!
//! // Receiving core: validate and index, then split by owner core.
//! let mut index = TracesIndex::default();
//! index.scan(&buf)?;
//! let mut parts = Vec::new();
//! index.partition(2, |trace_id| owner_core(trace_id, 2), &mut parts);
//!
//! // Owner core: read fields lazily, then re-frame its spans for export (zero copy).
//! let mut out = Encoded::default();
//! for part in parts {
//!     let batch = SpanBatch { buf: buf.clone(), index: part, release_token: None };
//!     for s in &batch.index.spans {
//!         let view = SpanView::new(&batch.buf[s.range.start as usize..s.range.end as usize]);
//!         assert!(view.name().starts_with(b"op"));
//!     }
//!     encode_traces(&batch, &mut out);
//! }
//! let merged = ExportTraceServiceRequest::decode(out.to_bytes())?;
//! let total: usize = merged.resource_spans.iter().map(|r| r.scope_spans[0].spans.len()).sum();
//! assert_eq!(total, 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
// Unsafe code is denied everywhere but `prefetch`'s one hint instruction.
#![deny(unsafe_code)]

pub use opentelemetry_proto::tonic as proto;

pub mod compression;
pub mod exposition;
pub mod grpc;
pub mod hash;
pub mod json;
pub mod prefetch;
pub mod reframe;
pub mod rewrite;
pub mod route;
pub mod scan;
pub mod series;
pub mod signal;
pub mod span;
pub mod status;
pub mod translate;
pub mod wire;

pub use signal::Signal;

/// A trace id: 16 bytes.
pub type TraceId = [u8; 16];
