//! OTLP/JSON → protobuf, streaming: the JSON is parsed token by token (serde_json's
//! deserializer, no document tree) and each field is written as protobuf as soon as it is read,
//! following a table of the OTLP messages ([`Msg`]). Nothing is built in between: converting a
//! request costs its output (which is at most [`to_protobuf_within`]'s bound) and serde_json's
//! scratch for escaped strings, whatever the JSON holds (a million `{}` spans cost two bytes
//! each, not a document node and a prost struct each).
//!
//! A nested message's length is not known before its end: one byte is set aside for it, and
//! the rare message of 128 bytes or more is moved up by the missing bytes when it ends.
//!
//! The mapping is the one documented in the parent module: lowerCamelCase or proto field names,
//! `null` for an absent field, 64-bit integers as numbers or strings, enums as numbers or their
//! proto names, ids as hex, other bytes as base64, unknown fields ignored. Fields are written in
//! the order they come; a field given twice is written twice (protobuf keeps the last value of
//! a scalar or a oneof, and joins lists).

use std::fmt;

use base64::Engine as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::JsonError;
use crate::proto::logs::v1::SeverityNumber;
use crate::proto::metrics::v1::AggregationTemporality;
use crate::proto::trace::v1::span::SpanKind;
use crate::proto::trace::v1::status::StatusCode;
use crate::Signal;

/// Why a conversion failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ToProtobufError {
    /// The JSON is not a valid OTLP/JSON request.
    #[error(transparent)]
    Invalid(#[from] JsonError),
    /// The protobuf would be larger than the bound.
    #[error("the converted request would be larger than {max_len} bytes")]
    TooLarge {
        /// The bound.
        max_len: usize,
    },
}

/// Converts an OTLP/JSON `Export*ServiceRequest` to protobuf of at most `max_len` bytes (its
/// output is allocated up to that bound and no further).
pub fn to_protobuf_within(
    signal: Signal,
    json: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, ToProtobufError> {
    let mut t = Transcoder {
        out: Vec::with_capacity((json.len() / 2).clamp(64, max_len.max(64))),
        max_len,
        path: Vec::new(),
        failure: None,
    };
    let mut de = serde_json::Deserializer::from_slice(json);
    let request = match signal {
        Signal::Traces => &TRACES_REQUEST,
        Signal::Metrics => &METRICS_REQUEST,
        Signal::Logs => &LOGS_REQUEST,
    };
    let parsed = MessageSeed {
        t: &mut t,
        msg: request,
        framed: None,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (parsed, t.failure.take()) {
        (Ok(()), _) => {
            let mut out = t.out;
            if out.capacity() - out.len() > out.len() / 8 {
                out.shrink_to_fit();
            }
            Ok(out)
        }
        (Err(_), Some(Failure::TooLarge)) => Err(ToProtobufError::TooLarge { max_len }),
        (Err(_), Some(Failure::Invalid(message))) => {
            let path = t.path_text();
            let message = if path.is_empty() {
                message
            } else {
                format!("{path}: {message}")
            };
            Err(JsonError {
                message: format!("invalid otlp json: {message}"),
            }
            .into())
        }
        (Err(e), None) => Err(JsonError {
            message: format!("invalid json: {e}"),
        }
        .into()),
    }
}

// ---------------------------------------------------------------------------------------------
// The OTLP messages, as the reader needs them.

/// What a field holds in JSON and how it is written in protobuf.
#[derive(Clone, Copy)]
enum Kind {
    /// A nested message (a JSON object; `null` is absent).
    Msg(&'static Msg),
    /// `string`.
    Str,
    /// `bytes` as base64.
    Base64,
    /// `bytes` as hex: a trace id (16) or span id (8); empty is absent.
    Hex(usize),
    /// `uint32` (varint).
    UInt32,
    /// `fixed32`.
    Fixed32,
    /// `uint64` (varint).
    UInt64,
    /// `fixed64`.
    Fixed64,
    /// `sfixed64`.
    SFixed64,
    /// `int64` (varint).
    Int64,
    /// `sint32` (zigzag varint).
    SInt32,
    /// An enum (`int32` varint), a number or its proto name.
    Enum(fn(&str) -> Option<i32>),
    /// `bool`.
    Bool,
    /// `double`.
    Double,
}

/// One field of a message.
struct Field {
    /// lowerCamelCase name (also the name in error paths).
    json: &'static str,
    /// The proto name (also accepted).
    proto: &'static str,
    number: u32,
    kind: Kind,
    /// `repeated`: a JSON array (scalars are packed, strings are not).
    repeated: bool,
    /// Written even when it holds the default (a member of a oneof, an `optional` scalar).
    presence: bool,
}

/// A message: its fields.
struct Msg {
    fields: &'static [Field],
}

impl Msg {
    fn field(&self, key: &str) -> Option<&'static Field> {
        // `self` is one of the statics below.
        let fields: &'static [Field] = self.fields;
        fields.iter().find(|f| f.json == key || f.proto == key)
    }
}

const fn field(json: &'static str, proto: &'static str, number: u32, kind: Kind) -> Field {
    Field {
        json,
        proto,
        number,
        kind,
        repeated: false,
        presence: false,
    }
}

const fn list(json: &'static str, proto: &'static str, number: u32, kind: Kind) -> Field {
    Field {
        repeated: true,
        ..field(json, proto, number, kind)
    }
}

const fn present(json: &'static str, proto: &'static str, number: u32, kind: Kind) -> Field {
    Field {
        presence: true,
        ..field(json, proto, number, kind)
    }
}

fn span_kind(s: &str) -> Option<i32> {
    SpanKind::from_str_name(s).map(|e| e as i32)
}
fn status_code(s: &str) -> Option<i32> {
    StatusCode::from_str_name(s).map(|e| e as i32)
}
fn temporality(s: &str) -> Option<i32> {
    AggregationTemporality::from_str_name(s).map(|e| e as i32)
}
fn severity(s: &str) -> Option<i32> {
    SeverityNumber::from_str_name(s).map(|e| e as i32)
}

static ANY_VALUE: Msg = Msg {
    fields: &[
        present("stringValue", "string_value", 1, Kind::Str),
        present("boolValue", "bool_value", 2, Kind::Bool),
        present("intValue", "int_value", 3, Kind::Int64),
        present("doubleValue", "double_value", 4, Kind::Double),
        field("arrayValue", "array_value", 5, Kind::Msg(&ARRAY_VALUE)),
        field("kvlistValue", "kvlist_value", 6, Kind::Msg(&KEY_VALUE_LIST)),
        present("bytesValue", "bytes_value", 7, Kind::Base64),
    ],
};
static ARRAY_VALUE: Msg = Msg {
    fields: &[list("values", "values", 1, Kind::Msg(&ANY_VALUE))],
};
static KEY_VALUE_LIST: Msg = Msg {
    fields: &[list("values", "values", 1, Kind::Msg(&KEY_VALUE))],
};
static KEY_VALUE: Msg = Msg {
    fields: &[
        field("key", "key", 1, Kind::Str),
        field("value", "value", 2, Kind::Msg(&ANY_VALUE)),
    ],
};
static SCOPE: Msg = Msg {
    fields: &[
        field("name", "name", 1, Kind::Str),
        field("version", "version", 2, Kind::Str),
        list("attributes", "attributes", 3, Kind::Msg(&KEY_VALUE)),
        field(
            "droppedAttributesCount",
            "dropped_attributes_count",
            4,
            Kind::UInt32,
        ),
    ],
};
static ENTITY_REF: Msg = Msg {
    fields: &[
        field("schemaUrl", "schema_url", 1, Kind::Str),
        field("type", "type", 2, Kind::Str),
        list("idKeys", "id_keys", 3, Kind::Str),
        list("descriptionKeys", "description_keys", 4, Kind::Str),
    ],
};
static RESOURCE: Msg = Msg {
    fields: &[
        list("attributes", "attributes", 1, Kind::Msg(&KEY_VALUE)),
        field(
            "droppedAttributesCount",
            "dropped_attributes_count",
            2,
            Kind::UInt32,
        ),
        list("entityRefs", "entity_refs", 3, Kind::Msg(&ENTITY_REF)),
    ],
};

static TRACES_REQUEST: Msg = Msg {
    fields: &[list(
        "resourceSpans",
        "resource_spans",
        1,
        Kind::Msg(&RESOURCE_SPANS),
    )],
};
static RESOURCE_SPANS: Msg = Msg {
    fields: &[
        field("resource", "resource", 1, Kind::Msg(&RESOURCE)),
        list("scopeSpans", "scope_spans", 2, Kind::Msg(&SCOPE_SPANS)),
        field("schemaUrl", "schema_url", 3, Kind::Str),
    ],
};
static SCOPE_SPANS: Msg = Msg {
    fields: &[
        field("scope", "scope", 1, Kind::Msg(&SCOPE)),
        list("spans", "spans", 2, Kind::Msg(&SPAN)),
        field("schemaUrl", "schema_url", 3, Kind::Str),
    ],
};
static SPAN: Msg = Msg {
    fields: &[
        field("traceId", "trace_id", 1, Kind::Hex(16)),
        field("spanId", "span_id", 2, Kind::Hex(8)),
        field("traceState", "trace_state", 3, Kind::Str),
        field("parentSpanId", "parent_span_id", 4, Kind::Hex(8)),
        field("flags", "flags", 16, Kind::Fixed32),
        field("name", "name", 5, Kind::Str),
        field("kind", "kind", 6, Kind::Enum(span_kind)),
        field(
            "startTimeUnixNano",
            "start_time_unix_nano",
            7,
            Kind::Fixed64,
        ),
        field("endTimeUnixNano", "end_time_unix_nano", 8, Kind::Fixed64),
        list("attributes", "attributes", 9, Kind::Msg(&KEY_VALUE)),
        field(
            "droppedAttributesCount",
            "dropped_attributes_count",
            10,
            Kind::UInt32,
        ),
        list("events", "events", 11, Kind::Msg(&EVENT)),
        field(
            "droppedEventsCount",
            "dropped_events_count",
            12,
            Kind::UInt32,
        ),
        list("links", "links", 13, Kind::Msg(&LINK)),
        field("droppedLinksCount", "dropped_links_count", 14, Kind::UInt32),
        field("status", "status", 15, Kind::Msg(&STATUS)),
    ],
};
static EVENT: Msg = Msg {
    fields: &[
        field("timeUnixNano", "time_unix_nano", 1, Kind::Fixed64),
        field("name", "name", 2, Kind::Str),
        list("attributes", "attributes", 3, Kind::Msg(&KEY_VALUE)),
        field(
            "droppedAttributesCount",
            "dropped_attributes_count",
            4,
            Kind::UInt32,
        ),
    ],
};
static LINK: Msg = Msg {
    fields: &[
        field("traceId", "trace_id", 1, Kind::Hex(16)),
        field("spanId", "span_id", 2, Kind::Hex(8)),
        field("traceState", "trace_state", 3, Kind::Str),
        list("attributes", "attributes", 4, Kind::Msg(&KEY_VALUE)),
        field(
            "droppedAttributesCount",
            "dropped_attributes_count",
            5,
            Kind::UInt32,
        ),
        field("flags", "flags", 6, Kind::Fixed32),
    ],
};
static STATUS: Msg = Msg {
    fields: &[
        field("message", "message", 2, Kind::Str),
        field("code", "code", 3, Kind::Enum(status_code)),
    ],
};

static METRICS_REQUEST: Msg = Msg {
    fields: &[list(
        "resourceMetrics",
        "resource_metrics",
        1,
        Kind::Msg(&RESOURCE_METRICS),
    )],
};
static RESOURCE_METRICS: Msg = Msg {
    fields: &[
        field("resource", "resource", 1, Kind::Msg(&RESOURCE)),
        list(
            "scopeMetrics",
            "scope_metrics",
            2,
            Kind::Msg(&SCOPE_METRICS),
        ),
        field("schemaUrl", "schema_url", 3, Kind::Str),
    ],
};
static SCOPE_METRICS: Msg = Msg {
    fields: &[
        field("scope", "scope", 1, Kind::Msg(&SCOPE)),
        list("metrics", "metrics", 2, Kind::Msg(&METRIC)),
        field("schemaUrl", "schema_url", 3, Kind::Str),
    ],
};
static METRIC: Msg = Msg {
    fields: &[
        field("name", "name", 1, Kind::Str),
        field("description", "description", 2, Kind::Str),
        field("unit", "unit", 3, Kind::Str),
        field("gauge", "gauge", 5, Kind::Msg(&GAUGE)),
        field("sum", "sum", 7, Kind::Msg(&SUM)),
        field("histogram", "histogram", 9, Kind::Msg(&HISTOGRAM)),
        field(
            "exponentialHistogram",
            "exponential_histogram",
            10,
            Kind::Msg(&EXPONENTIAL_HISTOGRAM),
        ),
        field("summary", "summary", 11, Kind::Msg(&SUMMARY)),
        list("metadata", "metadata", 12, Kind::Msg(&KEY_VALUE)),
    ],
};
static GAUGE: Msg = Msg {
    fields: &[list(
        "dataPoints",
        "data_points",
        1,
        Kind::Msg(&NUMBER_POINT),
    )],
};
static SUM: Msg = Msg {
    fields: &[
        list("dataPoints", "data_points", 1, Kind::Msg(&NUMBER_POINT)),
        field(
            "aggregationTemporality",
            "aggregation_temporality",
            2,
            Kind::Enum(temporality),
        ),
        field("isMonotonic", "is_monotonic", 3, Kind::Bool),
    ],
};
static HISTOGRAM: Msg = Msg {
    fields: &[
        list("dataPoints", "data_points", 1, Kind::Msg(&HISTOGRAM_POINT)),
        field(
            "aggregationTemporality",
            "aggregation_temporality",
            2,
            Kind::Enum(temporality),
        ),
    ],
};
static EXPONENTIAL_HISTOGRAM: Msg = Msg {
    fields: &[
        list(
            "dataPoints",
            "data_points",
            1,
            Kind::Msg(&EXPONENTIAL_HISTOGRAM_POINT),
        ),
        field(
            "aggregationTemporality",
            "aggregation_temporality",
            2,
            Kind::Enum(temporality),
        ),
    ],
};
static SUMMARY: Msg = Msg {
    fields: &[list(
        "dataPoints",
        "data_points",
        1,
        Kind::Msg(&SUMMARY_POINT),
    )],
};
static NUMBER_POINT: Msg = Msg {
    fields: &[
        list("attributes", "attributes", 7, Kind::Msg(&KEY_VALUE)),
        field(
            "startTimeUnixNano",
            "start_time_unix_nano",
            2,
            Kind::Fixed64,
        ),
        field("timeUnixNano", "time_unix_nano", 3, Kind::Fixed64),
        present("asDouble", "as_double", 4, Kind::Double),
        present("asInt", "as_int", 6, Kind::SFixed64),
        list("exemplars", "exemplars", 5, Kind::Msg(&EXEMPLAR)),
        field("flags", "flags", 8, Kind::UInt32),
    ],
};
static HISTOGRAM_POINT: Msg = Msg {
    fields: &[
        list("attributes", "attributes", 9, Kind::Msg(&KEY_VALUE)),
        field(
            "startTimeUnixNano",
            "start_time_unix_nano",
            2,
            Kind::Fixed64,
        ),
        field("timeUnixNano", "time_unix_nano", 3, Kind::Fixed64),
        field("count", "count", 4, Kind::Fixed64),
        present("sum", "sum", 5, Kind::Double),
        list("bucketCounts", "bucket_counts", 6, Kind::Fixed64),
        list("explicitBounds", "explicit_bounds", 7, Kind::Double),
        list("exemplars", "exemplars", 8, Kind::Msg(&EXEMPLAR)),
        field("flags", "flags", 10, Kind::UInt32),
        present("min", "min", 11, Kind::Double),
        present("max", "max", 12, Kind::Double),
    ],
};
static BUCKETS: Msg = Msg {
    fields: &[
        field("offset", "offset", 1, Kind::SInt32),
        list("bucketCounts", "bucket_counts", 2, Kind::UInt64),
    ],
};
static EXPONENTIAL_HISTOGRAM_POINT: Msg = Msg {
    fields: &[
        list("attributes", "attributes", 1, Kind::Msg(&KEY_VALUE)),
        field(
            "startTimeUnixNano",
            "start_time_unix_nano",
            2,
            Kind::Fixed64,
        ),
        field("timeUnixNano", "time_unix_nano", 3, Kind::Fixed64),
        field("count", "count", 4, Kind::Fixed64),
        present("sum", "sum", 5, Kind::Double),
        field("scale", "scale", 6, Kind::SInt32),
        field("zeroCount", "zero_count", 7, Kind::Fixed64),
        field("positive", "positive", 8, Kind::Msg(&BUCKETS)),
        field("negative", "negative", 9, Kind::Msg(&BUCKETS)),
        field("flags", "flags", 10, Kind::UInt32),
        list("exemplars", "exemplars", 11, Kind::Msg(&EXEMPLAR)),
        present("min", "min", 12, Kind::Double),
        present("max", "max", 13, Kind::Double),
        field("zeroThreshold", "zero_threshold", 14, Kind::Double),
    ],
};
static SUMMARY_POINT: Msg = Msg {
    fields: &[
        list("attributes", "attributes", 7, Kind::Msg(&KEY_VALUE)),
        field(
            "startTimeUnixNano",
            "start_time_unix_nano",
            2,
            Kind::Fixed64,
        ),
        field("timeUnixNano", "time_unix_nano", 3, Kind::Fixed64),
        field("count", "count", 4, Kind::Fixed64),
        field("sum", "sum", 5, Kind::Double),
        list(
            "quantileValues",
            "quantile_values",
            6,
            Kind::Msg(&VALUE_AT_QUANTILE),
        ),
        field("flags", "flags", 8, Kind::UInt32),
    ],
};
static VALUE_AT_QUANTILE: Msg = Msg {
    fields: &[
        field("quantile", "quantile", 1, Kind::Double),
        field("value", "value", 2, Kind::Double),
    ],
};
static EXEMPLAR: Msg = Msg {
    fields: &[
        list(
            "filteredAttributes",
            "filtered_attributes",
            7,
            Kind::Msg(&KEY_VALUE),
        ),
        field("timeUnixNano", "time_unix_nano", 2, Kind::Fixed64),
        present("asDouble", "as_double", 3, Kind::Double),
        present("asInt", "as_int", 6, Kind::SFixed64),
        field("spanId", "span_id", 4, Kind::Hex(8)),
        field("traceId", "trace_id", 5, Kind::Hex(16)),
    ],
};

static LOGS_REQUEST: Msg = Msg {
    fields: &[list(
        "resourceLogs",
        "resource_logs",
        1,
        Kind::Msg(&RESOURCE_LOGS),
    )],
};
static RESOURCE_LOGS: Msg = Msg {
    fields: &[
        field("resource", "resource", 1, Kind::Msg(&RESOURCE)),
        list("scopeLogs", "scope_logs", 2, Kind::Msg(&SCOPE_LOGS)),
        field("schemaUrl", "schema_url", 3, Kind::Str),
    ],
};
static SCOPE_LOGS: Msg = Msg {
    fields: &[
        field("scope", "scope", 1, Kind::Msg(&SCOPE)),
        list("logRecords", "log_records", 2, Kind::Msg(&LOG_RECORD)),
        field("schemaUrl", "schema_url", 3, Kind::Str),
    ],
};
static LOG_RECORD: Msg = Msg {
    fields: &[
        field("timeUnixNano", "time_unix_nano", 1, Kind::Fixed64),
        field(
            "observedTimeUnixNano",
            "observed_time_unix_nano",
            11,
            Kind::Fixed64,
        ),
        field("severityNumber", "severity_number", 2, Kind::Enum(severity)),
        field("severityText", "severity_text", 3, Kind::Str),
        field("body", "body", 5, Kind::Msg(&ANY_VALUE)),
        list("attributes", "attributes", 6, Kind::Msg(&KEY_VALUE)),
        field(
            "droppedAttributesCount",
            "dropped_attributes_count",
            7,
            Kind::UInt32,
        ),
        field("flags", "flags", 8, Kind::Fixed32),
        field("traceId", "trace_id", 9, Kind::Hex(16)),
        field("spanId", "span_id", 10, Kind::Hex(8)),
        field("eventName", "event_name", 12, Kind::Str),
    ],
};

// ---------------------------------------------------------------------------------------------
// The writer.

/// Why the conversion stopped (serde's error only carries text).
enum Failure {
    Invalid(String),
    TooLarge,
}

/// A segment of the path of the value being read, for error messages.
enum Seg {
    Key(&'static str),
    Index(usize),
}

/// The conversion's state: the protobuf written so far, its bound, where in the JSON it is.
struct Transcoder {
    out: Vec<u8>,
    max_len: usize,
    path: Vec<Seg>,
    failure: Option<Failure>,
}

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_FIXED32: u32 = 5;

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

impl Transcoder {
    /// Fails the conversion with `message` (at the current path).
    fn invalid<E: de::Error>(&mut self, message: String) -> E {
        self.failure = Some(Failure::Invalid(message));
        E::custom("invalid otlp json")
    }

    /// Room for `n` more bytes, within the bound.
    fn reserve<E: de::Error>(&mut self, n: usize) -> Result<(), E> {
        let need = self.out.len() + n;
        if need > self.max_len {
            self.failure = Some(Failure::TooLarge);
            return Err(E::custom("too large"));
        }
        if need > self.out.capacity() {
            let grown = (self.out.capacity() * 2).max(need).min(self.max_len);
            self.out.reserve_exact(grown - self.out.len());
        }
        Ok(())
    }

    fn put<E: de::Error>(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.reserve(bytes.len())?;
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    fn varint<E: de::Error>(&mut self, mut v: u64) -> Result<(), E> {
        let mut buf = [0u8; 10];
        let mut n = 0;
        while v >= 0x80 {
            buf[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        buf[n] = v as u8;
        self.put(&buf[..=n])
    }

    fn key<E: de::Error>(&mut self, number: u32, wire: u32) -> Result<(), E> {
        self.varint(u64::from(number << 3 | wire))
    }

    /// Starts a length-delimited value (after its key, if any): returns where its length goes.
    fn open<E: de::Error>(&mut self) -> Result<usize, E> {
        self.put(&[0])?;
        Ok(self.out.len() - 1)
    }

    /// Ends the length-delimited value opened at `at`: writes its length, moving the value up
    /// when the length takes more than the byte set aside.
    fn close<E: de::Error>(&mut self, at: usize) -> Result<(), E> {
        let end = self.out.len();
        let len = (end - at - 1) as u64;
        if len < 0x80 {
            self.out[at] = len as u8;
            return Ok(());
        }
        let width = varint_len(len);
        self.reserve(width - 1)?;
        self.out.resize(end + width - 1, 0);
        self.out.copy_within(at + 1..end, at + width);
        let mut v = len;
        for b in &mut self.out[at..at + width] {
            *b = (v as u8 & 0x7f) | 0x80;
            v >>= 7;
        }
        self.out[at + width - 1] &= 0x7f;
        Ok(())
    }

    fn path_text(&self) -> String {
        let mut path = String::new();
        for seg in &self.path {
            match seg {
                Seg::Key(k) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                }
                Seg::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        path
    }
}

// ---------------------------------------------------------------------------------------------
// JSON values, as the errors describe them.

/// A JSON value seen where another was expected, as error messages show it.
enum Seen<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(&'a str),
    Array,
    Object,
}

impl Seen<'_> {
    /// "a string", "an object", ...
    fn kind(&self) -> &'static str {
        match self {
            Seen::Null => "null",
            Seen::Bool(_) => "a boolean",
            Seen::U64(_) | Seen::I64(_) | Seen::F64(_) => "a number",
            Seen::Str(_) => "a string",
            Seen::Array => "an array",
            Seen::Object => "an object",
        }
    }
}

impl fmt::Display for Seen<'_> {
    /// Scalars as JSON text, others by kind.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seen::Bool(b) => write!(f, "{b}"),
            Seen::U64(n) => write!(f, "{n}"),
            Seen::I64(n) => write!(f, "{n}"),
            Seen::F64(n) => write!(
                f,
                "{}",
                serde_json::Number::from_f64(*n).map_or_else(|| n.to_string(), |n| n.to_string())
            ),
            Seen::Str(s) => write!(f, "{}", serde_json::Value::from(*s)),
            other => f.write_str(other.kind()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Messages.

/// Reads a message (a JSON object, or `null` for an empty one) into its fields. `framed`:
/// the key to write before it (then its length follows), or `None` for the request itself.
/// As a list element, `null` is written as an empty message.
struct MessageSeed<'t> {
    t: &'t mut Transcoder,
    msg: &'static Msg,
    framed: Option<u32>,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl MessageSeed<'_> {
    fn wrong<E: de::Error>(self, seen: Seen<'_>) -> Result<(), E> {
        Err(self
            .t
            .invalid(format!("expected an object, got {}", seen.kind())))
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        if let Some(number) = self.framed {
            self.t.key(number, WIRE_LEN)?;
            self.t.put(&[0])?;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let t = self.t;
        let at = match self.framed {
            Some(number) => {
                t.key(number, WIRE_LEN)?;
                Some(t.open()?)
            }
            None => None,
        };
        while let Some(field) = map.next_key_seed(KeySeed(self.msg))? {
            match field {
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some(field) => {
                    t.path.push(Seg::Key(field.json));
                    map.next_value_seed(FieldSeed { t, field })?;
                    t.path.pop();
                }
            }
        }
        if let Some(at) = at {
            t.close(at)?;
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.wrong(Seen::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.wrong(Seen::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.wrong(Seen::I64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.wrong(Seen::F64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.wrong(Seen::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.wrong(Seen::Array)
    }
}

/// Reads an object key: the field it names, or `None` for an unknown one.
struct KeySeed(&'static Msg);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<&'static Field>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Option<&'static Field>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.field(v))
    }
}

// ---------------------------------------------------------------------------------------------
// Fields.

/// Reads the value of one field (`null`: absent) and writes it.
struct FieldSeed<'t> {
    t: &'t mut Transcoder,
    field: &'static Field,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl FieldSeed<'_> {
    /// A scalar value: written (or refused) as the field's kind says.
    fn scalar<E: de::Error>(self, seen: Seen<'_>) -> Result<(), E> {
        let Field {
            number,
            kind,
            repeated,
            ..
        } = *self.field;
        if repeated {
            return Err(self
                .t
                .invalid(format!("expected an array, got {}", seen.kind())));
        }
        if let Kind::Msg(_) = kind {
            return Err(self
                .t
                .invalid(format!("expected an object, got {}", seen.kind())));
        }
        write_scalar(self.t, number, kind, self.field.presence, seen, true)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an OTLP field value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Seen::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Seen::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Seen::I64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Seen::F64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Seen::Str(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        match self.field.kind {
            Kind::Msg(msg) if !self.field.repeated => MessageSeed {
                t: self.t,
                msg,
                framed: Some(self.field.number),
            }
            .visit_map(map),
            _ => self.scalar(Seen::Object),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Field {
            number,
            kind,
            repeated,
            ..
        } = *self.field;
        if !repeated {
            return match kind {
                Kind::Msg(_) => Err(self.t.invalid("expected an object, got an array".into())),
                _ => self.scalar(Seen::Array),
            };
        }
        let t = self.t;
        let mut i = 0;
        match kind {
            Kind::Msg(msg) => loop {
                t.path.push(Seg::Index(i));
                let seed = MessageSeed {
                    t: &mut *t,
                    msg,
                    framed: Some(number),
                };
                if seq.next_element_seed(seed)?.is_none() {
                    t.path.pop();
                    return Ok(());
                }
                t.path.pop();
                i += 1;
            },
            // Not packable: one field each.
            Kind::Str | Kind::Base64 | Kind::Hex(_) => loop {
                t.path.push(Seg::Index(i));
                let seed = ElementSeed {
                    t: &mut *t,
                    number,
                    kind,
                    keyed: true,
                };
                if seq.next_element_seed(seed)?.is_none() {
                    t.path.pop();
                    return Ok(());
                }
                t.path.pop();
                i += 1;
            },
            // Packed: one length-delimited field, left out when empty.
            _ => {
                let start = t.out.len();
                t.key(number, WIRE_LEN)?;
                let at = t.open()?;
                loop {
                    t.path.push(Seg::Index(i));
                    let seed = ElementSeed {
                        t: &mut *t,
                        number,
                        kind,
                        keyed: false,
                    };
                    if seq.next_element_seed(seed)?.is_none() {
                        t.path.pop();
                        break;
                    }
                    t.path.pop();
                    i += 1;
                }
                if i == 0 {
                    t.out.truncate(start);
                    return Ok(());
                }
                t.close(at)
            }
        }
    }
}

/// Reads one scalar element of a list (`keyed`: with its own key; else packed).
struct ElementSeed<'t> {
    t: &'t mut Transcoder,
    number: u32,
    kind: Kind,
    keyed: bool,
}

impl<'de> DeserializeSeed<'de> for ElementSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl ElementSeed<'_> {
    fn scalar<E: de::Error>(self, seen: Seen<'_>) -> Result<(), E> {
        write_scalar(self.t, self.number, self.kind, true, seen, self.keyed)
    }
}

impl<'de> Visitor<'de> for ElementSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an OTLP list element")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar(Seen::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Seen::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Seen::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Seen::I64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Seen::F64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Seen::Str(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.scalar(Seen::Object)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.scalar(Seen::Array)
    }
}

// ---------------------------------------------------------------------------------------------
// Scalars.

/// An integer given as a JSON number or a decimal string.
fn integer(seen: &Seen<'_>) -> Option<i128> {
    match *seen {
        Seen::U64(n) => Some(i128::from(n)),
        Seen::I64(n) => Some(i128::from(n)),
        Seen::F64(f) if f.fract() == 0.0 && f.abs() < 1.9e19 => Some(f as i128),
        Seen::Str(s) => s.trim().parse::<i128>().ok(),
        _ => None,
    }
}

/// An integer of type `T`, or an error naming `what` was expected.
fn int_of<T: TryFrom<i128>>(seen: &Seen<'_>, what: &str) -> Result<T, String> {
    integer(seen)
        .and_then(|w| T::try_from(w).ok())
        .ok_or_else(|| format!("expected {what}, got {seen}"))
}

fn double(seen: &Seen<'_>) -> Result<f64, String> {
    match *seen {
        Seen::U64(n) => Ok(n as f64),
        Seen::I64(n) => Ok(n as f64),
        Seen::F64(f) => Ok(f),
        Seen::Str("NaN") => Ok(f64::NAN),
        Seen::Str("Infinity") => Ok(f64::INFINITY),
        Seen::Str("-Infinity") => Ok(f64::NEG_INFINITY),
        Seen::Str(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("expected a number, got {seen}")),
        _ => Err(format!("expected a number, got {}", seen.kind())),
    }
}

/// A hex id of `len` bytes (or empty), into `buf`; returns the bytes.
fn hex<'b>(seen: &Seen<'_>, len: usize, buf: &'b mut [u8; 16]) -> Result<&'b [u8], String> {
    let Seen::Str(s) = *seen else {
        return Err(format!("expected a hex string, got {}", seen.kind()));
    };
    if s.is_empty() {
        return Ok(&buf[..0]);
    }
    if s.len() != len * 2 {
        return Err(format!("expected {} hex digits, got {}", len * 2, s.len()));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    for (out, pair) in buf.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        *out = match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => h << 4 | l,
            _ => return Err(format!("invalid hex id {s:?}")),
        };
    }
    Ok(&buf[..len])
}

fn base64(seen: &Seen<'_>) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let Seen::Str(s) = *seen else {
        return Err(format!("expected a string, got {}", seen.kind()));
    };
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        if let Ok(b) = engine.decode(s.as_bytes()) {
            return Ok(b);
        }
    }
    Err("invalid base64".into())
}

/// Writes a scalar of `kind` (field `number`): with its key when `keyed` (else as an element
/// of a packed list), left out when it holds the default unless `presence`.
fn write_scalar<E: de::Error>(
    t: &mut Transcoder,
    number: u32,
    kind: Kind,
    presence: bool,
    seen: Seen<'_>,
    keyed: bool,
) -> Result<(), E> {
    // What to write: (wire type, value) or bytes.
    enum Value<'a> {
        Varint(u64),
        Fixed32(u32),
        Fixed64(u64),
        Bytes(&'a [u8]),
    }
    let mut hex_buf = [0u8; 16];
    let decoded: Vec<u8>;
    let value = match kind {
        Kind::Str => match seen {
            Seen::Str(s) => Value::Bytes(s.as_bytes()),
            other => return Err(t.invalid(format!("expected a string, got {}", other.kind()))),
        },
        Kind::Base64 => match base64(&seen) {
            Ok(b) => {
                decoded = b;
                Value::Bytes(&decoded)
            }
            Err(m) => return Err(t.invalid(m)),
        },
        Kind::Hex(len) => match hex(&seen, len, &mut hex_buf) {
            Ok(b) => Value::Bytes(b),
            Err(m) => return Err(t.invalid(m)),
        },
        Kind::Bool => match seen {
            Seen::Bool(b) => Value::Varint(u64::from(b)),
            other => return Err(t.invalid(format!("expected a boolean, got {}", other.kind()))),
        },
        Kind::Double => match double(&seen) {
            Ok(d) if d == 0.0 && !presence => return Ok(()),
            Ok(d) => Value::Fixed64(d.to_bits()),
            Err(m) => return Err(t.invalid(m)),
        },
        Kind::UInt32 | Kind::Fixed32 => match int_of::<u32>(&seen, "an unsigned 32-bit integer") {
            Ok(v) if matches!(kind, Kind::UInt32) => Value::Varint(u64::from(v)),
            Ok(v) => Value::Fixed32(v),
            Err(m) => return Err(t.invalid(m)),
        },
        Kind::UInt64 | Kind::Fixed64 => match int_of::<u64>(&seen, "an unsigned 64-bit integer") {
            Ok(v) if matches!(kind, Kind::UInt64) => Value::Varint(v),
            Ok(v) => Value::Fixed64(v),
            Err(m) => return Err(t.invalid(m)),
        },
        Kind::Int64 | Kind::SFixed64 => match int_of::<i64>(&seen, "a 64-bit integer") {
            Ok(v) if matches!(kind, Kind::Int64) => Value::Varint(v as u64),
            Ok(v) => Value::Fixed64(v as u64),
            Err(m) => return Err(t.invalid(m)),
        },
        Kind::SInt32 => match int_of::<i32>(&seen, "a 32-bit integer") {
            Ok(v) => Value::Varint(u64::from(((v << 1) ^ (v >> 31)) as u32)),
            Err(m) => return Err(t.invalid(m)),
        },
        Kind::Enum(by_name) => {
            let named = match seen {
                Seen::Str(s) => by_name(s),
                _ => None,
            };
            match named.map_or_else(|| int_of::<i32>(&seen, "an enum number"), Ok) {
                Ok(v) => Value::Varint(i64::from(v) as u64),
                Err(m) => return Err(t.invalid(m)),
            }
        }
        Kind::Msg(_) => return Err(t.invalid(format!("expected an object, got {}", seen.kind()))),
    };
    let is_default = match value {
        Value::Varint(v) | Value::Fixed64(v) => v == 0,
        Value::Fixed32(v) => v == 0,
        Value::Bytes(b) => b.is_empty(),
    };
    if is_default && !presence && keyed {
        return Ok(());
    }
    match value {
        Value::Varint(v) => {
            if keyed {
                t.key(number, WIRE_VARINT)?;
            }
            t.varint(v)
        }
        Value::Fixed32(v) => {
            if keyed {
                t.key(number, WIRE_FIXED32)?;
            }
            t.put(&v.to_le_bytes())
        }
        Value::Fixed64(v) => {
            if keyed {
                t.key(number, WIRE_FIXED64)?;
            }
            t.put(&v.to_le_bytes())
        }
        Value::Bytes(b) => {
            t.key(number, WIRE_LEN)?;
            t.varint(b.len() as u64)?;
            t.put(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_of_any_width_are_written_in_place() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 2_097_152] {
            let mut t = Transcoder {
                out: vec![9],
                max_len: usize::MAX,
                path: Vec::new(),
                failure: None,
            };
            let at = t.open::<serde_json::Error>().unwrap();
            t.out.extend(std::iter::repeat_n(7u8, len));
            t.close::<serde_json::Error>(at).unwrap();
            let mut expect = vec![9];
            prost::encoding::encode_varint(len as u64, &mut expect);
            expect.extend(std::iter::repeat_n(7u8, len));
            assert_eq!(t.out, expect, "length {len}");
            assert_eq!(varint_len(len as u64), expect.len() - 1 - len);
        }
    }

    #[test]
    fn the_output_never_passes_its_bound() {
        let json = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
            vec!["{}"; 10_000].join(",")
        );
        let full = to_protobuf_within(Signal::Traces, json.as_bytes(), usize::MAX).unwrap();
        // Two bytes per empty span, plus the containers.
        assert!(full.len() < 20_010, "{}", full.len());
        assert_eq!(
            to_protobuf_within(Signal::Traces, json.as_bytes(), full.len()).unwrap(),
            full
        );
        assert_eq!(
            to_protobuf_within(Signal::Traces, json.as_bytes(), full.len() - 1),
            Err(ToProtobufError::TooLarge {
                max_len: full.len() - 1
            })
        );
    }
}
