//! OTLP/JSON ↔ protobuf (slow path: OTLP/HTTP JSON requests, JSON file output). Reading
//! streams: JSON is written as protobuf token by token, with no document tree in between
//! (see [`to_protobuf_within`]); writing goes through the prost types.
//!
//! Follows the OTLP spec's JSON Protobuf Encoding: lowerCamelCase keys, trace and span ids as
//! hex, enums as integers, 64-bit integers as decimal strings on output (numbers or strings
//! accepted on input), other `bytes` as base64, unknown fields ignored on input.
//!
//! The mapping is written here rather than taken from `opentelemetry-proto`'s `with-serde`
//! derives, which (in 0.33) differ from the spec and from the Collector: they write every
//! default field (`"traceState":""`, `"droppedAttributesCount":0`, `"status":null`...), write
//! NaN doubles as `null` in attributes (read back as an empty value), reject an `arrayValue`
//! or `kvlistValue` without `values`, a `KeyValue` without `key` and a request without
//! `resourceSpans`, reject `null` for scalar fields, and accept only integer enums.
//!
//! Output matches the OpenTelemetry Collector's file exporter (pdata's JSON marshaler): one
//! line, fields in `.proto` declaration order, default scalars and empty lists left out,
//! while `resource`, `scope`, a span's `status`, a key-value's `value`, a log record's `body`,
//! an exponential histogram point's `positive`/`negative` and every trace/span id field are
//! always written (ids as `""` when empty).

mod read;

use base64::Engine as _;
use bytes::Bytes;
use prost::Message;

pub use read::{to_protobuf_within, ToProtobufError};

use crate::proto::collector::logs::v1::ExportLogsServiceRequest;
use crate::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use crate::proto::collector::trace::v1::ExportTraceServiceRequest;
use crate::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use crate::proto::logs::v1::LogRecord;
use crate::proto::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric, number_data_point, Exemplar,
    ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint,
};
use crate::proto::resource::v1::Resource;
use crate::proto::trace::v1::Span;
use crate::Signal;

/// Invalid OTLP/JSON (or, for [`from_protobuf`], invalid protobuf). The message names the
/// problem: the JSON syntax error with its line and column, or the path of the bad field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JsonError {
    /// What is wrong, e.g. `resourceSpans[0].scopeSpans[0].spans[2].traceId: expected 32 hex
    /// digits, got 31`.
    pub message: String,
}

impl JsonError {
    /// The gRPC status for a request with invalid JSON: `INVALID_ARGUMENT` (HTTP 400).
    pub fn code(&self) -> crate::grpc::Code {
        crate::grpc::Code::InvalidArgument
    }
}

/// Converts an OTLP/JSON `Export*ServiceRequest` to its protobuf encoding (streaming: see
/// [`to_protobuf_within`], which also bounds the output).
pub fn to_protobuf(signal: Signal, json: &[u8]) -> Result<Bytes, JsonError> {
    match to_protobuf_within(signal, json, usize::MAX) {
        Ok(pb) => Ok(Bytes::from(pb)),
        Err(ToProtobufError::Invalid(e)) => Err(e),
        Err(e @ ToProtobufError::TooLarge { .. }) => Err(JsonError {
            message: e.to_string(),
        }),
    }
}

/// Converts a protobuf `Export*ServiceRequest` to OTLP/JSON: one object on one line (no
/// newline), as the Collector's file exporter writes it (`{"resourceSpans":[...]}`).
pub fn from_protobuf(signal: Signal, pb: &[u8]) -> Result<Vec<u8>, JsonError> {
    let bad = |e: prost::DecodeError| JsonError {
        message: format!("invalid protobuf: {e}"),
    };
    let mut w = Writer {
        out: Vec::with_capacity(pb.len() * 2 + 16),
        comma: false,
        bad_id: None,
    };
    match signal {
        Signal::Traces => w.traces(&ExportTraceServiceRequest::decode(pb).map_err(bad)?),
        Signal::Metrics => w.metrics(&ExportMetricsServiceRequest::decode(pb).map_err(bad)?),
        Signal::Logs => w.logs(&ExportLogsServiceRequest::decode(pb).map_err(bad)?),
    }
    // OTLP/JSON ids are 32 or 16 hex digits: an id of another length would be written as JSON
    // no reader (ours or the Collector's) accepts. The scanner refuses such ids at ingest, so
    // only bytes that did not come through it can have one.
    if let Some(message) = w.bad_id {
        return Err(JsonError {
            message: format!("invalid protobuf: {message}"),
        });
    }
    Ok(w.out)
}

// ---------------------------------------------------------------------------------------------
// Output: prost messages -> one line of JSON.

struct Writer {
    out: Vec<u8>,
    /// A value was written at the current level: the next key needs a comma.
    comma: bool,
    /// The first id that was neither empty nor of its length (16 bytes for a trace id, 8 for
    /// a span id).
    bad_id: Option<String>,
}

impl Writer {
    fn open(&mut self) {
        self.out.push(b'{');
        self.comma = false;
    }
    fn close(&mut self) {
        self.out.push(b'}');
        self.comma = true;
    }
    fn key(&mut self, k: &str) {
        if self.comma {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.comma = true;
    }
    fn string_value(&mut self, s: &str) {
        serde_json::to_writer(&mut self.out, s).expect("writing to a Vec cannot fail");
        self.comma = true;
    }
    fn str_field(&mut self, k: &str, s: &str) {
        if !s.is_empty() {
            self.key(k);
            self.string_value(s);
        }
    }
    fn raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
        self.comma = true;
    }
    /// 64-bit integers are strings.
    fn u64_field(&mut self, k: &str, v: u64) {
        if v != 0 {
            self.key(k);
            self.raw(&format!("\"{v}\""));
        }
    }
    fn num_field(&mut self, k: &str, v: i64) {
        if v != 0 {
            self.key(k);
            self.raw(&v.to_string());
        }
    }
    fn bool_field(&mut self, k: &str, v: bool) {
        if v {
            self.key(k);
            self.raw("true");
        }
    }
    fn double_value(&mut self, v: f64) {
        let s = format_double(v);
        self.raw(&s);
    }
    fn double_field(&mut self, k: &str, v: f64) {
        if v != 0.0 || v.is_sign_negative() {
            self.key(k);
            self.double_value(v);
        }
    }
    fn opt_double_field(&mut self, k: &str, v: Option<f64>) {
        if let Some(v) = v {
            self.key(k);
            self.double_value(v);
        }
    }
    /// Ids are always written, as hex (`""` when empty).
    fn id_field(&mut self, k: &str, id: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let len = if k == "traceId" { 16 } else { 8 };
        if !id.is_empty() && id.len() != len && self.bad_id.is_none() {
            self.bad_id = Some(format!("{k} is {} bytes, expected {len}", id.len()));
        }
        self.key(k);
        self.out.push(b'"');
        for b in id {
            self.out.push(HEX[(b >> 4) as usize]);
            self.out.push(HEX[(b & 15) as usize]);
        }
        self.out.push(b'"');
        self.comma = true;
    }
    fn list<T>(&mut self, k: &str, items: &[T], mut item: impl FnMut(&mut Self, &T)) {
        if items.is_empty() {
            return;
        }
        self.key(k);
        self.out.push(b'[');
        for (i, x) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.comma = false;
            item(self, x);
        }
        self.out.push(b']');
        self.comma = true;
    }

    fn traces(&mut self, m: &ExportTraceServiceRequest) {
        self.open();
        self.list("resourceSpans", &m.resource_spans, |w, rs| {
            w.open();
            w.resource(rs.resource.as_ref());
            w.list("scopeSpans", &rs.scope_spans, |w, ss| {
                w.open();
                w.scope(ss.scope.as_ref());
                w.list("spans", &ss.spans, Self::span);
                w.str_field("schemaUrl", &ss.schema_url);
                w.close();
            });
            w.str_field("schemaUrl", &rs.schema_url);
            w.close();
        });
        self.close();
    }

    fn span(&mut self, s: &Span) {
        self.open();
        self.id_field("traceId", &s.trace_id);
        self.id_field("spanId", &s.span_id);
        self.str_field("traceState", &s.trace_state);
        self.id_field("parentSpanId", &s.parent_span_id);
        self.num_field("flags", i64::from(s.flags));
        self.str_field("name", &s.name);
        self.num_field("kind", i64::from(s.kind));
        self.u64_field("startTimeUnixNano", s.start_time_unix_nano);
        self.u64_field("endTimeUnixNano", s.end_time_unix_nano);
        self.attributes("attributes", &s.attributes);
        self.num_field(
            "droppedAttributesCount",
            i64::from(s.dropped_attributes_count),
        );
        self.list("events", &s.events, |w, e| {
            w.open();
            w.u64_field("timeUnixNano", e.time_unix_nano);
            w.str_field("name", &e.name);
            w.attributes("attributes", &e.attributes);
            w.num_field(
                "droppedAttributesCount",
                i64::from(e.dropped_attributes_count),
            );
            w.close();
        });
        self.num_field("droppedEventsCount", i64::from(s.dropped_events_count));
        self.list("links", &s.links, |w, l| {
            w.open();
            w.id_field("traceId", &l.trace_id);
            w.id_field("spanId", &l.span_id);
            w.str_field("traceState", &l.trace_state);
            w.attributes("attributes", &l.attributes);
            w.num_field(
                "droppedAttributesCount",
                i64::from(l.dropped_attributes_count),
            );
            w.num_field("flags", i64::from(l.flags));
            w.close();
        });
        self.num_field("droppedLinksCount", i64::from(s.dropped_links_count));
        self.key("status");
        self.open();
        if let Some(st) = &s.status {
            self.str_field("message", &st.message);
            self.num_field("code", i64::from(st.code));
        }
        self.close();
        self.close();
    }

    fn resource(&mut self, r: Option<&Resource>) {
        self.key("resource");
        self.open();
        if let Some(r) = r {
            self.attributes("attributes", &r.attributes);
            self.num_field(
                "droppedAttributesCount",
                i64::from(r.dropped_attributes_count),
            );
            self.list("entityRefs", &r.entity_refs, |w, e| {
                w.open();
                w.str_field("schemaUrl", &e.schema_url);
                w.str_field("type", &e.r#type);
                w.list("idKeys", &e.id_keys, |w, k| w.string_value(k));
                w.list("descriptionKeys", &e.description_keys, |w, k| {
                    w.string_value(k)
                });
                w.close();
            });
        }
        self.close();
    }

    fn scope(&mut self, s: Option<&InstrumentationScope>) {
        self.key("scope");
        self.open();
        if let Some(s) = s {
            self.str_field("name", &s.name);
            self.str_field("version", &s.version);
            self.attributes("attributes", &s.attributes);
            self.num_field(
                "droppedAttributesCount",
                i64::from(s.dropped_attributes_count),
            );
        }
        self.close();
    }

    fn attributes(&mut self, k: &str, kvs: &[KeyValue]) {
        self.list(k, kvs, Self::key_value);
    }

    fn key_value(&mut self, kv: &KeyValue) {
        self.open();
        self.str_field("key", &kv.key);
        self.key("value");
        self.any_value(kv.value.as_ref());
        self.close();
    }

    fn any_value(&mut self, v: Option<&AnyValue>) {
        use any_value::Value as V;
        self.open();
        match v.and_then(|v| v.value.as_ref()) {
            None => {}
            Some(V::StringValue(s)) => {
                self.key("stringValue");
                self.string_value(s);
            }
            Some(V::BoolValue(b)) => {
                self.key("boolValue");
                self.raw(if *b { "true" } else { "false" });
            }
            Some(V::IntValue(i)) => {
                self.key("intValue");
                self.raw(&format!("\"{i}\""));
            }
            Some(V::DoubleValue(d)) => {
                self.key("doubleValue");
                self.double_value(*d);
            }
            Some(V::ArrayValue(a)) => {
                self.key("arrayValue");
                self.open();
                self.list("values", &a.values, |w, x| w.any_value(Some(x)));
                self.close();
            }
            Some(V::KvlistValue(l)) => {
                self.key("kvlistValue");
                self.open();
                self.list("values", &l.values, Self::key_value);
                self.close();
            }
            Some(V::BytesValue(b)) => {
                self.key("bytesValue");
                let s = base64::engine::general_purpose::STANDARD.encode(b);
                self.string_value(&s);
            }
            Some(V::StringValueStrindex(i)) => {
                self.key("stringValueStrindex");
                self.raw(&i.to_string());
            }
        }
        self.close();
    }

    fn metrics(&mut self, m: &ExportMetricsServiceRequest) {
        self.open();
        self.list("resourceMetrics", &m.resource_metrics, |w, rm| {
            w.open();
            w.resource(rm.resource.as_ref());
            w.list("scopeMetrics", &rm.scope_metrics, |w, sm| {
                w.open();
                w.scope(sm.scope.as_ref());
                w.list("metrics", &sm.metrics, Self::metric);
                w.str_field("schemaUrl", &sm.schema_url);
                w.close();
            });
            w.str_field("schemaUrl", &rm.schema_url);
            w.close();
        });
        self.close();
    }

    fn metric(&mut self, m: &Metric) {
        self.open();
        self.str_field("name", &m.name);
        self.str_field("description", &m.description);
        self.str_field("unit", &m.unit);
        match &m.data {
            None => {}
            Some(metric::Data::Gauge(g)) => {
                self.key("gauge");
                self.open();
                self.list("dataPoints", &g.data_points, Self::number_point);
                self.close();
            }
            Some(metric::Data::Sum(s)) => {
                self.key("sum");
                self.open();
                self.list("dataPoints", &s.data_points, Self::number_point);
                self.num_field(
                    "aggregationTemporality",
                    i64::from(s.aggregation_temporality),
                );
                self.bool_field("isMonotonic", s.is_monotonic);
                self.close();
            }
            Some(metric::Data::Histogram(h)) => {
                self.key("histogram");
                self.open();
                self.list("dataPoints", &h.data_points, Self::histogram_point);
                self.num_field(
                    "aggregationTemporality",
                    i64::from(h.aggregation_temporality),
                );
                self.close();
            }
            Some(metric::Data::ExponentialHistogram(h)) => {
                self.key("exponentialHistogram");
                self.open();
                self.list("dataPoints", &h.data_points, Self::exp_histogram_point);
                self.num_field(
                    "aggregationTemporality",
                    i64::from(h.aggregation_temporality),
                );
                self.close();
            }
            Some(metric::Data::Summary(s)) => {
                self.key("summary");
                self.open();
                self.list("dataPoints", &s.data_points, Self::summary_point);
                self.close();
            }
        }
        self.attributes("metadata", &m.metadata);
        self.close();
    }

    fn u64_list(&mut self, k: &str, v: &[u64]) {
        self.list(k, v, |w, x| w.raw(&format!("\"{x}\"")));
    }

    fn number_point(&mut self, p: &NumberDataPoint) {
        self.open();
        self.attributes("attributes", &p.attributes);
        self.u64_field("startTimeUnixNano", p.start_time_unix_nano);
        self.u64_field("timeUnixNano", p.time_unix_nano);
        match p.value {
            None => {}
            Some(number_data_point::Value::AsDouble(d)) => {
                self.key("asDouble");
                self.double_value(d);
            }
            Some(number_data_point::Value::AsInt(i)) => {
                self.key("asInt");
                self.raw(&format!("\"{i}\""));
            }
        }
        self.list("exemplars", &p.exemplars, Self::exemplar);
        self.num_field("flags", i64::from(p.flags));
        self.close();
    }

    fn histogram_point(&mut self, p: &HistogramDataPoint) {
        self.open();
        self.attributes("attributes", &p.attributes);
        self.u64_field("startTimeUnixNano", p.start_time_unix_nano);
        self.u64_field("timeUnixNano", p.time_unix_nano);
        self.u64_field("count", p.count);
        self.opt_double_field("sum", p.sum);
        self.u64_list("bucketCounts", &p.bucket_counts);
        self.list("explicitBounds", &p.explicit_bounds, |w, x| {
            w.double_value(*x)
        });
        self.list("exemplars", &p.exemplars, Self::exemplar);
        self.num_field("flags", i64::from(p.flags));
        self.opt_double_field("min", p.min);
        self.opt_double_field("max", p.max);
        self.close();
    }

    fn buckets(&mut self, k: &str, b: Option<&Buckets>) {
        self.key(k);
        self.open();
        if let Some(b) = b {
            self.num_field("offset", i64::from(b.offset));
            self.u64_list("bucketCounts", &b.bucket_counts);
        }
        self.close();
    }

    fn exp_histogram_point(&mut self, p: &ExponentialHistogramDataPoint) {
        self.open();
        self.attributes("attributes", &p.attributes);
        self.u64_field("startTimeUnixNano", p.start_time_unix_nano);
        self.u64_field("timeUnixNano", p.time_unix_nano);
        self.u64_field("count", p.count);
        self.opt_double_field("sum", p.sum);
        self.num_field("scale", i64::from(p.scale));
        self.u64_field("zeroCount", p.zero_count);
        self.buckets("positive", p.positive.as_ref());
        self.buckets("negative", p.negative.as_ref());
        self.num_field("flags", i64::from(p.flags));
        self.list("exemplars", &p.exemplars, Self::exemplar);
        self.opt_double_field("min", p.min);
        self.opt_double_field("max", p.max);
        self.double_field("zeroThreshold", p.zero_threshold);
        self.close();
    }

    fn summary_point(&mut self, p: &SummaryDataPoint) {
        self.open();
        self.attributes("attributes", &p.attributes);
        self.u64_field("startTimeUnixNano", p.start_time_unix_nano);
        self.u64_field("timeUnixNano", p.time_unix_nano);
        self.u64_field("count", p.count);
        self.double_field("sum", p.sum);
        self.list("quantileValues", &p.quantile_values, |w, q| {
            w.open();
            w.double_field("quantile", q.quantile);
            w.double_field("value", q.value);
            w.close();
        });
        self.num_field("flags", i64::from(p.flags));
        self.close();
    }

    fn exemplar(&mut self, e: &Exemplar) {
        self.open();
        self.attributes("filteredAttributes", &e.filtered_attributes);
        self.u64_field("timeUnixNano", e.time_unix_nano);
        match e.value {
            None => {}
            Some(exemplar::Value::AsDouble(d)) => {
                self.key("asDouble");
                self.double_value(d);
            }
            Some(exemplar::Value::AsInt(i)) => {
                self.key("asInt");
                self.raw(&format!("\"{i}\""));
            }
        }
        self.id_field("spanId", &e.span_id);
        self.id_field("traceId", &e.trace_id);
        self.close();
    }

    fn logs(&mut self, m: &ExportLogsServiceRequest) {
        self.open();
        self.list("resourceLogs", &m.resource_logs, |w, rl| {
            w.open();
            w.resource(rl.resource.as_ref());
            w.list("scopeLogs", &rl.scope_logs, |w, sl| {
                w.open();
                w.scope(sl.scope.as_ref());
                w.list("logRecords", &sl.log_records, Self::log_record);
                w.str_field("schemaUrl", &sl.schema_url);
                w.close();
            });
            w.str_field("schemaUrl", &rl.schema_url);
            w.close();
        });
        self.close();
    }

    fn log_record(&mut self, r: &LogRecord) {
        self.open();
        self.u64_field("timeUnixNano", r.time_unix_nano);
        self.u64_field("observedTimeUnixNano", r.observed_time_unix_nano);
        self.num_field("severityNumber", i64::from(r.severity_number));
        self.str_field("severityText", &r.severity_text);
        self.key("body");
        self.any_value(r.body.as_ref());
        self.attributes("attributes", &r.attributes);
        self.num_field(
            "droppedAttributesCount",
            i64::from(r.dropped_attributes_count),
        );
        self.num_field("flags", i64::from(r.flags));
        self.id_field("traceId", &r.trace_id);
        self.id_field("spanId", &r.span_id);
        self.str_field("eventName", &r.event_name);
        self.close();
    }
}

/// Formats a double as Go's `encoding/json` does: shortest round-trip digits, no exponent for
/// 1e-6 <= |v| < 1e21 (and no `.0` for integral values), `1e-07` style otherwise (as `1e-7`,
/// `1e+21`); NaN and infinities as the strings the protobuf JSON mapping uses.
fn format_double(v: f64) -> String {
    if v.is_nan() {
        return "\"NaN\"".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "\"Infinity\"".into()
        } else {
            "\"-Infinity\"".into()
        };
    }
    let a = v.abs();
    if a == 0.0 || (1e-6..1e21).contains(&a) {
        return format!("{v}");
    }
    let s = format!("{v:e}");
    match s.split_once('e') {
        Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

    fn spec_example(name: &str) -> Vec<u8> {
        std::fs::read(format!("{SPEC_DIR}/{name}")).unwrap()
    }

    fn round_trip(signal: Signal, json: &[u8]) -> (Bytes, Vec<u8>) {
        let pb = to_protobuf(signal, json).unwrap();
        let out = from_protobuf(signal, &pb).unwrap();
        assert!(!out.contains(&b'\n'));
        // Our own output reads back to the same data: the same JSON again. (The protobuf bytes
        // may differ: `"status":{}` reads back as an empty status where the original had none,
        // which OTLP treats the same.)
        let pb2 = to_protobuf(signal, &out).unwrap();
        assert_eq!(from_protobuf(signal, &pb2).unwrap(), out);
        (pb, out)
    }

    #[test]
    fn spec_trace_example() {
        let (pb, out) = round_trip(Signal::Traces, &spec_example("trace.json"));
        let req = ExportTraceServiceRequest::decode(pb).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            span.trace_id,
            [
                0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f,
                0xc6, 0x0c
            ]
        );
        assert_eq!(span.kind, 2);
        assert_eq!(span.start_time_unix_nano, 1544712660000000000);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},"scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0","#), "{text}");
        assert!(text.contains(r#""traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b173","name":"I'm a server span","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000""#), "{text}");
        assert!(text.ends_with(r#""status":{}}]}]}]}"#), "{text}");
    }

    #[test]
    fn spec_metrics_example() {
        let (pb, out) = round_trip(Signal::Metrics, &spec_example("metrics.json"));
        let req = ExportMetricsServiceRequest::decode(pb.clone()).unwrap();
        assert_eq!(req.resource_metrics[0].scope_metrics[0].metrics.len(), 4);
        assert_eq!(crate::scan::scan_metrics(&pb).unwrap().items, 4);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""sum":{"dataPoints":[{"attributes":[{"key":"my.counter.attr","value":{"stringValue":"some value"}}],"startTimeUnixNano":"1544712660300000000","timeUnixNano":"1544712660300000000","asDouble":5}],"aggregationTemporality":1,"isMonotonic":true}"#), "{text}");
        assert!(text.contains(r#""count":"2","sum":2,"bucketCounts":["1","1"],"explicitBounds":[1],"min":0,"max":2"#), "{text}");
        assert!(
            text.contains(r#""positive":{"offset":1,"bucketCounts":["0","2"]},"negative":{}"#),
            "{text}"
        );
    }

    #[test]
    fn spec_logs_example() {
        let (pb, out) = round_trip(Signal::Logs, &spec_example("logs.json"));
        let req = ExportLogsServiceRequest::decode(pb.clone()).unwrap();
        let rec = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(rec.severity_number, 10);
        assert_eq!(rec.attributes.len(), 6);
        assert_eq!(crate::scan::scan_logs(&pb).unwrap().items, 1);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#"{"key":"int.attribute","value":{"intValue":"10"}},{"key":"double.attribute","value":{"doubleValue":637.704}}"#), "{text}");
        assert!(
            text.contains(
                r#""arrayValue":{"values":[{"stringValue":"many"},{"stringValue":"values"}]}"#
            ),
            "{text}"
        );
    }

    #[test]
    fn numbers_and_strings_accepted() {
        let json = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"000102030405060708090a0b0c0d0e0f","spanId":"0001020304050607","startTimeUnixNano":1544712660000000000,"endTimeUnixNano":"1544712661000000000","kind":"SPAN_KIND_CLIENT","droppedAttributesCount":"3","attributes":[{"key":"i","value":{"intValue":42}},{"key":"d","value":{"doubleValue":"NaN"}},{"key":"b","value":{"bytesValue":"AAEC"}},{"key":"n"},{"key":"e","value":{"arrayValue":{}}}],"unknownField":{"x":[1,2]},"status":{"code":2}}]}]}]}"#;
        let pb = to_protobuf(Signal::Traces, json).unwrap();
        let req = ExportTraceServiceRequest::decode(pb.clone()).unwrap();
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.start_time_unix_nano, 1544712660000000000);
        assert_eq!(s.end_time_unix_nano, 1544712661000000000);
        assert_eq!(s.kind, 3);
        assert_eq!(s.dropped_attributes_count, 3);
        assert_eq!(
            s.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(42))
        );
        assert!(
            matches!(s.attributes[1].value.as_ref().unwrap().value, Some(any_value::Value::DoubleValue(d)) if d.is_nan())
        );
        assert_eq!(
            s.attributes[2].value.as_ref().unwrap().value,
            Some(any_value::Value::BytesValue(vec![0, 1, 2]))
        );
        assert_eq!(s.attributes[3].value, None);
        let out = String::from_utf8(from_protobuf(Signal::Traces, &pb).unwrap()).unwrap();
        assert!(
            out.contains(r#"{"key":"d","value":{"doubleValue":"NaN"}}"#),
            "{out}"
        );
        assert!(out.contains(r#"{"key":"n","value":{}}"#), "{out}");
        assert!(
            out.contains(r#"{"key":"e","value":{"arrayValue":{}}}"#),
            "{out}"
        );
        assert!(out.contains(r#""status":{"code":2}"#), "{out}");
        // Reading our output back gives the same JSON again.
        let pb2 = to_protobuf(Signal::Traces, out.as_bytes()).unwrap();
        assert_eq!(from_protobuf(Signal::Traces, &pb2).unwrap(), out.as_bytes());
    }

    #[test]
    fn errors_name_the_problem() {
        let e = to_protobuf(Signal::Traces, b"{\"resourceSpans\": [").unwrap_err();
        assert!(e.message.contains("line 1 column"), "{e}");
        let e = to_protobuf(
            Signal::Traces,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{},{"traceId":"abc"}]}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "invalid otlp json: resourceSpans[0].scopeSpans[0].spans[1].traceId: expected 32 hex digits, got 3"
        );
        let e = to_protobuf(
            Signal::Logs,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"soon"}]}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "invalid otlp json: resourceLogs[0].scopeLogs[0].logRecords[0].timeUnixNano: expected an unsigned 64-bit integer, got \"soon\""
        );
        let e = to_protobuf(Signal::Metrics, br#"{"resourceMetrics":{}}"#).unwrap_err();
        assert_eq!(
            e.message,
            "invalid otlp json: resourceMetrics: expected an array, got an object"
        );
        let e = to_protobuf(Signal::Traces, b"[]").unwrap_err();
        assert_eq!(
            e.message,
            "invalid otlp json: expected an object, got an array"
        );
        assert!(from_protobuf(Signal::Traces, &[0xff])
            .unwrap_err()
            .message
            .starts_with("invalid protobuf"));
    }

    /// A traces request with one span whose one attribute is `value` (JSON).
    fn span_with_attribute(value: &str) -> String {
        format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"attributes":[{{"key":"k","value":{value}}}]}}]}}]}}]}}"#
        )
    }

    /// Regression: hostile nesting gets a clean error, never a stack overflow: 65-deep kvlists
    /// pass serde_json's recursion limit; array nesting that JSON allows but OTLP's depth limit
    /// does not is refused by the scanner the receivers run next.
    #[test]
    fn deep_nesting_gets_clean_errors() {
        let nest = |depth: usize, open: &str, close: &str| {
            format!(
                "{}{{\"intValue\":1}}{}",
                open.repeat(depth),
                close.repeat(depth)
            )
        };
        let kvlists = nest(
            65,
            r#"{"kvlistValue":{"values":[{"key":"k","value":"#,
            "}]}}",
        );
        let e = to_protobuf(Signal::Traces, span_with_attribute(&kvlists).as_bytes()).unwrap_err();
        assert!(
            e.message
                .starts_with("invalid json: recursion limit exceeded"),
            "{e}"
        );
        let arrays = nest(35, r#"{"arrayValue":{"values":["#, "]}}");
        let pb = to_protobuf(Signal::Traces, span_with_attribute(&arrays).as_bytes()).unwrap();
        assert_eq!(
            crate::scan::TracesIndex::default().scan(&pb),
            Err(crate::scan::ScanError::TooDeep)
        );
    }

    /// Regression: out-of-range numbers and protobuf with 11-byte varints or huge length
    /// prefixes get clean errors from both directions of the conversion.
    #[test]
    fn hostile_numbers_and_lengths_get_clean_errors() {
        for value in [
            r#"{"intValue":"99999999999999999999"}"#,
            r#"{"intValue":1e300}"#,
            r#"{"intValue":"-9223372036854775809"}"#,
        ] {
            let e = to_protobuf(Signal::Traces, span_with_attribute(value).as_bytes()).unwrap_err();
            assert!(
                e.message.contains("expected a 64-bit integer"),
                "{value}: {e}"
            );
        }
        let e = to_protobuf(Signal::Traces, span_with_attribute("1e999").as_bytes()).unwrap_err();
        assert!(
            e.message.starts_with("invalid json: number out of range"),
            "{e}"
        );
        let eleven = [
            0x0a, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x01,
        ];
        let mut huge = vec![0x0a];
        crate::wire::put_varint(&mut huge, u64::MAX);
        for pb in [&eleven[..], &huge[..]] {
            for s in Signal::ALL {
                let e = from_protobuf(s, pb).unwrap_err();
                assert!(e.message.starts_with("invalid protobuf"), "{e}");
            }
        }
    }

    #[test]
    fn empty_requests() {
        for s in Signal::ALL {
            assert!(to_protobuf(s, b"{}").unwrap().is_empty());
            assert_eq!(from_protobuf(s, &[]).unwrap(), b"{}");
        }
    }

    #[test]
    fn doubles_like_go() {
        assert_eq!(format_double(5.0), "5");
        assert_eq!(format_double(637.704), "637.704");
        assert_eq!(format_double(-0.5), "-0.5");
        assert_eq!(format_double(1e-7), "1e-7");
        assert_eq!(format_double(1.5e21), "1.5e+21");
        assert_eq!(format_double(1e20), "100000000000000000000");
        assert_eq!(format_double(0.0), "0");
        assert_eq!(format_double(f64::INFINITY), "\"Infinity\"");
    }

    #[test]
    fn ids_of_the_wrong_length_are_refused_not_written() {
        // Found by the json fuzz target: a 2-byte trace id was written as 4 hex digits, which
        // no OTLP/JSON reader accepts. (The scanner refuses such ids at ingest.)
        use crate::proto::collector::trace::v1::ExportTraceServiceRequest;
        use crate::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let request = |trace_id: Vec<u8>, span_id: Vec<u8>| {
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span {
                            trace_id,
                            span_id,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        };
        let err = from_protobuf(Signal::Traces, &request(vec![1, 2], vec![3; 8])).unwrap_err();
        assert_eq!(
            err.message,
            "invalid protobuf: traceId is 2 bytes, expected 16"
        );
        let err = from_protobuf(Signal::Traces, &request(vec![1; 16], vec![3; 9])).unwrap_err();
        assert_eq!(
            err.message,
            "invalid protobuf: spanId is 9 bytes, expected 8"
        );
        // Empty ids and ids of their length are written, and read back.
        for (t, sp) in [(vec![], vec![]), (vec![1; 16], vec![3; 8])] {
            let json = from_protobuf(Signal::Traces, &request(t, sp)).unwrap();
            to_protobuf(Signal::Traces, &json).unwrap();
        }
    }
}
