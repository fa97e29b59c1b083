//! Other formats → OTLP protobuf, once, on the receiving core: pure functions from the bytes a
//! client sent to an encoded `Export*ServiceRequest` that enters the same intake as OTLP.
//!
//! - [`zipkin`]: Zipkin v2 JSON and protobuf spans.
//! - [`jaeger`]: Jaeger `PostSpansRequest` (protobuf, gRPC) and `Batch` (Thrift binary).
//! - [`fluent`]: Fluent Forward events (MessagePack) → log records.
//!
//! Below them: [`otlp`] (the OTLP messages they build and the encoder that writes them),
//! [`thrift`] and [`msgpack`] (bounded readers). Every reader checks each length against what
//! is left of its input and bounds nesting, so hostile bytes get an error, never a panic or
//! an allocation larger than the input.

pub mod fluent;
pub mod jaeger;
pub mod msgpack;
pub mod otlp;
pub mod thrift;
pub mod zipkin;

/// A translated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Translated {
    /// The encoded `ExportTraceServiceRequest` (or logs request).
    pub request: Vec<u8>,
    /// Spans (or log records) it holds.
    pub items: usize,
}
