//! Test helpers: span batches built from opentelemetry-proto messages, encoded with prost and
//! scanned like received requests.

use bytes::Bytes;
use prost::Message;
use shardtel_config::{PolicyConfig, PolicyKind, TailSamplingConfig};
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::proto::common::v1::{any_value::Value, AnyValue, KeyValue};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use shardtel_protocol::scan::SpanBatch;
use shardtel_protocol::TraceId;

/// A distinct, unstructured-looking trace id for `n`.
pub(crate) fn trace_id(n: u64) -> TraceId {
    let mut id = [0; 16];
    id[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    id[8..].copy_from_slice(&(n ^ 0x5555_aaaa_1234_8765).to_be_bytes());
    id
}

pub(crate) fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub(crate) fn policy(name: &str, kind: PolicyKind) -> PolicyConfig {
    PolicyConfig {
        name: name.to_string(),
        kind,
    }
}

pub(crate) fn config(policies: Vec<PolicyConfig>) -> TailSamplingConfig {
    TailSamplingConfig::new(policies)
}

/// One span to encode.
#[derive(Clone, Debug)]
pub(crate) struct SpanSpec {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: u64,
    /// `None`: a root span.
    pub(crate) parent: Option<u64>,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) status: i32,
    pub(crate) attrs: Vec<KeyValue>,
    pub(crate) trace_state: String,
    /// Bytes of padding (in the span name), to vary sizes.
    pub(crate) pad: usize,
}

/// Span `n` of trace `trace`, a child span lasting 1 ms, status unset.
pub(crate) fn span(trace: u64, n: u64) -> SpanSpec {
    SpanSpec {
        trace_id: trace_id(trace),
        span_id: n,
        parent: Some(u64::MAX),
        start: 1_000_000_000,
        end: 1_001_000_000,
        status: 0,
        attrs: Vec::new(),
        trace_state: String::new(),
        pad: 0,
    }
}

impl SpanSpec {
    pub(crate) fn trace(mut self, id: TraceId) -> Self {
        self.trace_id = id;
        self
    }
    pub(crate) fn root(mut self) -> Self {
        self.parent = None;
        self
    }
    pub(crate) fn status(mut self, code: i32) -> Self {
        self.status = code;
        self
    }
    pub(crate) fn times(mut self, start: u64, end: u64) -> Self {
        self.start = start;
        self.end = end;
        self
    }
    pub(crate) fn with_attrs(mut self, attrs: Vec<(&str, Value)>) -> Self {
        self.attrs = attrs.into_iter().map(|(k, v)| kv(k, v)).collect();
        self
    }
    pub(crate) fn trace_state(mut self, ts: &str) -> Self {
        self.trace_state = ts.to_string();
        self
    }
    pub(crate) fn pad(mut self, bytes: usize) -> Self {
        self.pad = bytes;
        self
    }

    pub(crate) fn to_proto(&self) -> Span {
        Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_be_bytes().to_vec(),
            parent_span_id: self
                .parent
                .map(|p| p.to_be_bytes().to_vec())
                .unwrap_or_default(),
            trace_state: self.trace_state.clone(),
            name: format!("op{}", "x".repeat(self.pad)),
            start_time_unix_nano: self.start,
            end_time_unix_nano: self.end,
            attributes: self.attrs.clone(),
            status: (self.status != 0).then(|| Status {
                code: self.status,
                message: String::new(),
            }),
            ..Default::default()
        }
    }
}

/// Resource attributes of a group of spans.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResourceSpec {
    pub(crate) attrs: Vec<KeyValue>,
}

/// An encoded and scanned request: one ResourceSpans (with one ScopeSpans) per group.
pub(crate) fn batch_of(groups: &[(ResourceSpec, Vec<SpanSpec>)]) -> SpanBatch {
    let request = ExportTraceServiceRequest {
        resource_spans: groups
            .iter()
            .map(|(resource, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: resource.attrs.clone(),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: spans.iter().map(SpanSpec::to_proto).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    SpanBatch::scan(Bytes::from(request.encode_to_vec())).expect("test batch scans")
}

/// A batch of spans under one empty resource.
pub(crate) fn batch(spans: Vec<SpanSpec>) -> SpanBatch {
    batch_of(&[(ResourceSpec::default(), spans)])
}
