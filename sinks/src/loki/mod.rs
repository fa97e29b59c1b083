//! `loki`: OTLP logs to Loki's push API (`/loki/api/v1/push`).
//!
//! Each log record becomes one entry of the stream named by its labels: the configured
//! resource attributes (`labels.resource`, by default the ones Loki's own OTLP endpoint
//! indexes) and record attributes (`labels.attributes`), names sanitised like Prometheus labels
//! (`service.name` → `service_name`); a record with none gets `service_name="unknown_service"`,
//! as Loki does. What is not a label goes, with `line_format = "body"`, into structured
//! metadata (the other resource and record attributes, `scope_name`, `scope_version`,
//! `trace_id`, `span_id`, `severity_text`, `severity_number`, Loki's OTLP names) and the line is
//! the body; with `"json"` or `"logfmt"` it all goes into the line. Entries of a stream are
//! sorted by time within a request. The timestamp is the record's time, else its observed
//! time, else the time of conversion.
//!
//! Bodies: `logproto.PushRequest` protobuf, snappy-compressed (`encoding = "protobuf"`), or
//! Loki's JSON. The batch is converted once before its first attempt, so retries resend the
//! same bytes. Responses: 2xx success; 429 and 5xx retried; other 4xx permanent.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ::http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use bytes::Bytes;
use prost::Message;
use shardtel_config::{LokiEncoding, LokiExporterConfig, LokiLineFormat};
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::common::v1::KeyValue;
use shardtel_protocol::proto::logs::v1::LogRecord;
use shardtel_protocol::reframe::Encoded;

use crate::attributes::{json_string, value_text, write_json_any, write_json_object};
use crate::batch::Batch;
use crate::error::ExportError;
use crate::prometheus::naming::label_name;
use crate::push::{snappy, StorageEndpoint};
use crate::transport::Route;

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    /// One entry per stream.
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct StreamAdapter {
    /// The label set, `{name="value", ...}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    /// Entries, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    /// Unused by the push API.
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct EntryAdapter {
    /// When the line was logged.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// The log line.
    #[prost(string, tag = "2")]
    pub line: String,
    /// Structured metadata.
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelPairAdapter {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, Message)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// One `loki` exporter on one core.
pub(crate) struct LokiExporter {
    endpoint: StorageEndpoint,
    /// Shared with the core's blocking thread, where large batches are converted.
    converter: Arc<LokiConverter>,
}

impl LokiExporter {
    /// `headers` already holds the configured headers.
    pub(crate) fn new(
        route: Route,
        mut headers: HeaderMap,
        cfg: &LokiExporterConfig,
        senders: usize,
    ) -> Self {
        let content_type = match cfg.encoding {
            LokiEncoding::Protobuf => "application/x-protobuf",
            LokiEncoding::Json => "application/json",
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(tenant) = &cfg.tenant_id {
            if let Ok(value) = HeaderValue::from_str(tenant) {
                headers.insert(HeaderName::from_static("x-scope-orgid"), value);
            }
        }
        Self {
            endpoint: StorageEndpoint::new(route, headers, cfg.timeout, senders),
            converter: Arc::new(LokiConverter::new(cfg)),
        }
    }

    /// Converts a batch of OTLP logs into the push body (decode, convert, encode, compress:
    /// on the core's blocking thread for a large batch, see [`crate::offload`]).
    pub(crate) async fn prepare(&self, batch: &Batch) -> Result<Batch, ExportError> {
        let buf = Encoded {
            chunks: batch.chunks.clone(),
            len: batch.bytes,
        };
        let converter = self.converter.clone();
        let body = crate::offload::run(batch.bytes, move || {
            let request =
                ExportLogsServiceRequest::decode(buf).map_err(|e| ExportError::Encode {
                    reason: format!("invalid ExportLogsServiceRequest: {e}"),
                })?;
            Ok::<_, ExportError>(converter.convert_decoded(&request))
        })
        .await?;
        Ok(Batch {
            signal: batch.signal,
            bytes: body.len(),
            held: body.len(),
            chunks: if body.is_empty() {
                Vec::new()
            } else {
                vec![body]
            },
            items: batch.items,
            traces: Vec::new(),
        })
    }

    /// POSTs a prepared batch.
    pub(crate) async fn export(&self, worker: usize, batch: &Batch) -> Result<(), ExportError> {
        self.endpoint.push(worker, batch.chunks.clone()).await
    }
}

/// One stream before encoding.
struct Stream {
    labels: Vec<(String, String)>,
    entries: Vec<Entry>,
}

/// One entry before encoding.
struct Entry {
    nanos: u64,
    line: String,
    metadata: Vec<(String, String)>,
}

/// OTLP logs → Loki push bodies. Public for benchmarks.
pub struct LokiConverter {
    resource_labels: Vec<String>,
    attribute_labels: Vec<String>,
    line_format: LokiLineFormat,
    encoding: LokiEncoding,
}

impl LokiConverter {
    /// A converter with the exporter's settings.
    pub fn new(cfg: &LokiExporterConfig) -> Self {
        Self {
            resource_labels: cfg.resource_labels.clone(),
            attribute_labels: cfg.attribute_labels.clone(),
            line_format: cfg.line_format,
            encoding: cfg.encoding,
        }
    }

    /// Converts an encoded `ExportLogsServiceRequest` into a push body (snappy protobuf or
    /// JSON); empty when there is no record.
    pub fn convert(&self, otlp: &[u8]) -> Result<Bytes, String> {
        let request = ExportLogsServiceRequest::decode(otlp).map_err(|e| e.to_string())?;
        Ok(self.convert_decoded(&request))
    }

    fn convert_decoded(&self, request: &ExportLogsServiceRequest) -> Bytes {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // Streams by their rendered label set (sorted, so the output is deterministic).
        let mut streams: BTreeMap<String, Stream> = BTreeMap::new();
        for rl in &request.resource_logs {
            let resource: &[KeyValue] = rl
                .resource
                .as_ref()
                .map_or(&[], |r| r.attributes.as_slice());
            // The resource's labels and the rest of its attributes: once per resource.
            let mut resource_labels: Vec<(String, String)> = Vec::new();
            let resource_rest = pick_labels(resource, &self.resource_labels, &mut resource_labels);
            for sl in &rl.scope_logs {
                let (scope_name, scope_version) = sl
                    .scope
                    .as_ref()
                    .map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()));
                for record in &sl.log_records {
                    let mut labels = resource_labels.clone();
                    let attributes_rest =
                        pick_labels(&record.attributes, &self.attribute_labels, &mut labels);
                    if labels.is_empty() {
                        labels.push(("service_name".into(), "unknown_service".into()));
                    }
                    // Two keys that make the same label name: a record attribute wins over a
                    // resource attribute, and the later of two attributes of one record (not
                    // whichever value sorts first).
                    labels.reverse();
                    labels.sort_by(|a, b| a.0.cmp(&b.0));
                    labels.dedup_by(|a, b| a.0 == b.0);
                    let nanos = [record.time_unix_nano, record.observed_time_unix_nano, now]
                        .into_iter()
                        .find(|t| *t != 0)
                        .unwrap_or(0);
                    let context = RecordContext {
                        record,
                        resource_rest: &resource_rest,
                        attributes_rest: &attributes_rest,
                        scope_name,
                        scope_version,
                    };
                    let (line, metadata) = match self.line_format {
                        LokiLineFormat::Body => {
                            (value_text(record.body.as_ref()), context.metadata())
                        }
                        LokiLineFormat::Json => (context.json_line(), Vec::new()),
                        LokiLineFormat::Logfmt => (context.logfmt_line(), Vec::new()),
                    };
                    streams
                        .entry(render_labels(&labels))
                        .or_insert_with(|| Stream {
                            labels,
                            entries: Vec::new(),
                        })
                        .entries
                        .push(Entry {
                            nanos,
                            line,
                            metadata,
                        });
                }
            }
        }
        if streams.is_empty() {
            return Bytes::new();
        }
        for stream in streams.values_mut() {
            stream.entries.sort_by_key(|e| e.nanos);
        }
        match self.encoding {
            LokiEncoding::Protobuf => protobuf_body(streams),
            LokiEncoding::Json => json_body(&streams),
        }
    }
}

/// Moves the attributes named in `keys` into `labels` (sanitised names, non-empty values);
/// returns the others.
fn pick_labels<'a>(
    attributes: &'a [KeyValue],
    keys: &[String],
    labels: &mut Vec<(String, String)>,
) -> Vec<&'a KeyValue> {
    let mut rest = Vec::with_capacity(attributes.len());
    for kv in attributes {
        if keys.contains(&kv.key) {
            let value = value_text(kv.value.as_ref());
            if let Some(name) = label_name(&kv.key).filter(|_| !value.is_empty()) {
                labels.push((name.into_owned(), value));
                continue;
            }
        }
        rest.push(kv);
    }
    rest
}

/// `{a="x", b="y"}` with Prometheus's escaping of `\`, `"` and newlines.
fn render_labels(labels: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// What a record carries besides its labels.
struct RecordContext<'a> {
    record: &'a LogRecord,
    resource_rest: &'a [&'a KeyValue],
    attributes_rest: &'a [&'a KeyValue],
    scope_name: &'a str,
    scope_version: &'a str,
}

impl RecordContext<'_> {
    /// Trace context and severity as (Loki OTLP name, value), empty ones left out.
    fn record_fields(&self) -> Vec<(&'static str, String)> {
        let r = self.record;
        let mut out = Vec::new();
        if !r.trace_id.is_empty() {
            out.push(("trace_id", hex(&r.trace_id)));
        }
        if !r.span_id.is_empty() {
            out.push(("span_id", hex(&r.span_id)));
        }
        if !r.severity_text.is_empty() {
            out.push(("severity_text", r.severity_text.clone()));
        }
        if r.severity_number != 0 {
            out.push(("severity_number", r.severity_number.to_string()));
        }
        out
    }

    /// Structured metadata for `line_format = "body"`: the first occurrence of a name wins.
    fn metadata(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut add = |name: String, value: String| {
            if !value.is_empty() && !out.iter().any(|(n, _)| *n == name) {
                out.push((name, value));
            }
        };
        for kv in self.attributes_rest.iter().chain(self.resource_rest) {
            if let Some(name) = label_name(&kv.key) {
                add(name.into_owned(), value_text(kv.value.as_ref()));
            }
        }
        add("scope_name".into(), self.scope_name.to_string());
        add("scope_version".into(), self.scope_version.to_string());
        for (name, value) in self.record_fields() {
            add(name.to_string(), value);
        }
        out
    }

    /// The Collector's JSON line: body, trace context, severity, attributes, resources, scope.
    fn json_line(&self) -> String {
        let mut out = String::from("{\"body\":");
        write_json_any(self.record.body.as_ref(), &mut out);
        for (name, value) in self.record_fields() {
            out.push(',');
            json_string(name, &mut out);
            out.push(':');
            json_string(&value, &mut out);
        }
        for (key, rest) in [
            ("attributes", self.attributes_rest),
            ("resources", self.resource_rest),
        ] {
            if !rest.is_empty() {
                let owned: Vec<KeyValue> = rest.iter().map(|kv| (*kv).clone()).collect();
                let _ = write!(out, ",\"{key}\":");
                write_json_object(&owned, &mut out);
            }
        }
        if !self.scope_name.is_empty() {
            out.push_str(",\"instrumentation_scope\":{\"name\":");
            json_string(self.scope_name, &mut out);
            if !self.scope_version.is_empty() {
                out.push_str(",\"version\":");
                json_string(self.scope_version, &mut out);
            }
            out.push('}');
        }
        out.push('}');
        out
    }

    /// `key=value` pairs: the body first, then record fields, attributes, `resource_*` and
    /// `scope_*`; values quoted when needed.
    fn logfmt_line(&self) -> String {
        let mut out = String::new();
        let mut pair = |key: &str, value: &str| {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(key);
            out.push('=');
            if value.is_empty() || value.contains([' ', '=', '"', '\n', '\\']) {
                json_string(value, &mut out);
            } else {
                out.push_str(value);
            }
        };
        pair("body", &value_text(self.record.body.as_ref()));
        for (name, value) in self.record_fields() {
            pair(name, &value);
        }
        for kv in self.attributes_rest {
            if let Some(name) = label_name(&kv.key) {
                pair(&name, &value_text(kv.value.as_ref()));
            }
        }
        for kv in self.resource_rest {
            if let Some(name) = label_name(&kv.key) {
                pair(&format!("resource_{name}"), &value_text(kv.value.as_ref()));
            }
        }
        if !self.scope_name.is_empty() {
            pair("scope_name", self.scope_name);
        }
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn protobuf_body(streams: BTreeMap<String, Stream>) -> Bytes {
    let request = PushRequest {
        streams: streams
            .into_iter()
            .map(|(labels, stream)| StreamAdapter {
                labels,
                entries: stream
                    .entries
                    .into_iter()
                    .map(|e| EntryAdapter {
                        timestamp: Some(Timestamp {
                            seconds: (e.nanos / 1_000_000_000) as i64,
                            nanos: (e.nanos % 1_000_000_000) as i32,
                        }),
                        line: e.line,
                        structured_metadata: e
                            .metadata
                            .into_iter()
                            .map(|(name, value)| LabelPairAdapter { name, value })
                            .collect(),
                    })
                    .collect(),
                hash: 0,
            })
            .collect(),
    };
    snappy(&request.encode_to_vec())
}

/// Loki's JSON push body: `{"streams":[{"stream":{...},"values":[["ns","line",{...}]]}]}`.
fn json_body(streams: &BTreeMap<String, Stream>) -> Bytes {
    let mut out = String::from("{\"streams\":[");
    for (i, stream) in streams.values().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"stream\":{");
        for (j, (name, value)) in stream.labels.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            json_string(name, &mut out);
            out.push(':');
            json_string(value, &mut out);
        }
        out.push_str("},\"values\":[");
        for (j, e) in stream.entries.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "[\"{}\",", e.nanos);
            json_string(&e.line, &mut out);
            if !e.metadata.is_empty() {
                out.push_str(",{");
                for (k, (name, value)) in e.metadata.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    json_string(name, &mut out);
                    out.push(':');
                    json_string(value, &mut out);
                }
                out.push('}');
            }
            out.push(']');
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    Bytes::from(out)
}

#[cfg(test)]
mod tests;
