//! Jaeger spans → an OTLP `ExportTraceServiceRequest`, as the OpenTelemetry specification maps
//! them and, where it is silent, as the Collector's `jaegerreceiver` (contrib
//! `pkg/translator/jaeger`, v0.165.0 with its default feature gates) does. Two inputs:
//!
//! - [`proto_to_otlp`]: a `jaeger.api_v2.PostSpansRequest` (gRPC `CollectorService/PostSpans`,
//!   model.proto of jaeger-idl), read in place with the protobuf wire reader. Spans are grouped
//!   by process (a span's own process, else the batch's) and by scope (`otel.scope.name` /
//!   `otel.scope.version` tags); the `w3c.tracestate` tag is the trace state.
//! - [`thrift_to_otlp`]: a `jaeger.thrift` `Batch` in Thrift's binary protocol (`POST
//!   /api/traces`): one resource, one empty scope (the Collector's thrift path reads neither
//!   scope nor trace state tags, and neither does this one).
//!
//! Both: the process's service name → `service.name`, its tags → resource attributes
//! (`hostname` → `host.name`, `jaeger.version` → `opencensus.exporterversion = Jaeger-<v>`);
//! tags → attributes of their type (`http.status_code` → `http.response.status_code`);
//! `span.kind` → kind; `error`, `otel.status_code`, `otel.status_description`, the HTTP status
//! code and `http.status_message` → status, as the Collector decides it; the sampled flag →
//! span flags 1; the parent from the first `CHILD_OF` reference of the same trace (else the
//! first `FOLLOWS_FROM`), other references → links with `opentracing.ref_type`; logs → events
//! named by their `event` field.
//!
//! Where shardtel differs: resources keep the order in which their processes first appear
//! (the Collector's follow Go's random map order); a Thrift string that is not UTF-8 is read
//! with replacement characters (OTLP strings must be UTF-8; the Collector passes the bytes
//! through as an invalid string).

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use super::otlp::{
    encode_traces, Attributes, Event, Link, ResourceSpans, Scope, ScopeSpans, Span, SpanKind,
    StatusCode, Value,
};
use super::thrift::{self, ThriftError, Type};
use super::Translated;
use crate::wire::{Reader, Value as WireValue, WireError};

/// Why a Jaeger request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JaegerError {
    /// Not a protobuf `PostSpansRequest`.
    #[error("invalid jaeger protobuf: {0}")]
    Protobuf(#[from] WireError),
    /// Not a Thrift `Batch`.
    #[error("invalid jaeger thrift: {0}")]
    Thrift(#[from] ThriftError),
    /// A well-formed message with a bad value (names it).
    #[error("invalid jaeger batch: {0}")]
    Invalid(String),
}

// ---------------------------------------------------------------------------------------------
// The model both formats decode into.

#[derive(Clone, Debug, PartialEq)]
enum JValue<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    Double(f64),
    Binary(&'a [u8]),
    /// An unknown value type, as the Collector writes it.
    Unknown(String),
}

type Tags<'a> = Vec<(Cow<'a, str>, JValue<'a>)>;

#[derive(Clone, Debug, Default, PartialEq)]
struct Process<'a> {
    service_name: Cow<'a, str>,
    /// `None`: the message had no tags (the Collector tells nil from empty for Thrift).
    tags: Option<Tags<'a>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ref {
    child_of: bool,
    trace_high: u64,
    trace_low: u64,
    span_id: u64,
}

#[derive(Debug, Default)]
struct JSpan<'a> {
    trace_high: u64,
    trace_low: u64,
    span_id: u64,
    /// Thrift's `parentSpanId` (0: none; then the references tell).
    parent_span_id: u64,
    name: Cow<'a, str>,
    refs: Vec<Ref>,
    flags: u32,
    start: u64,
    end: u64,
    tags: Tags<'a>,
    /// (time, fields).
    logs: Vec<(u64, Tags<'a>)>,
    /// The bytes of the span's own process message (protobuf only), decoded once per distinct
    /// byte string when spans are grouped.
    process: Option<Range<usize>>,
}

impl JSpan<'_> {
    fn parent(&self) -> u64 {
        if self.parent_span_id != 0 {
            return self.parent_span_id;
        }
        let same_trace =
            |r: &&Ref| r.trace_high == self.trace_high && r.trace_low == self.trace_low;
        self.refs
            .iter()
            .filter(same_trace)
            .find(|r| r.child_of)
            .or_else(|| self.refs.iter().filter(same_trace).find(|r| !r.child_of))
            .map_or(0, |r| r.span_id)
    }
}

// ---------------------------------------------------------------------------------------------
// Model → OTLP.

fn attributes_of<'a>(tags: Tags<'a>, out: &mut Attributes<'a>) {
    for (key, value) in tags {
        let key = if key == "http.status_code" || key == "http.response.status_code" {
            Cow::Borrowed("http.response.status_code")
        } else {
            key
        };
        let value = match value {
            JValue::Str(s) => Value::Str(s),
            JValue::Bool(b) => Value::Bool(b),
            JValue::Int(i) => Value::Int(i),
            JValue::Double(d) => Value::Double(d),
            JValue::Binary(b) => Value::Bytes(Cow::Borrowed(b)),
            JValue::Unknown(s) => Value::Str(Cow::Owned(s)),
        };
        out.put(key, value);
    }
}

/// `Str()` of a value: the string, or "" for any other type.
fn str_of<'v>(v: Option<&'v Value<'_>>) -> &'v str {
    v.and_then(Value::as_str).unwrap_or("")
}

fn resource_of<'a>(process: Option<Process<'a>>, skip_no_service: bool) -> Attributes<'a> {
    let mut attrs = Attributes::default();
    let Some(process) = process else { return attrs };
    if skip_no_service && process.service_name == "OTLPResourceNoServiceName" {
        return attrs;
    }
    if process.service_name.is_empty() && process.tags.is_none() {
        return attrs;
    }
    if !process.service_name.is_empty() {
        attrs.put("service.name", Value::Str(process.service_name));
    }
    attributes_of(process.tags.unwrap_or_default(), &mut attrs);
    if attrs.get("hostname").is_some() && attrs.get("host.name").is_none() {
        if let Some(h) = attrs.remove("hostname") {
            attrs.put("host.name", h);
        }
    }
    if attrs.get("jaeger.version").is_some() && attrs.get("opencensus.exporterversion").is_none() {
        let v = format!("Jaeger-{}", str_of(attrs.get("jaeger.version")));
        attrs.put("opencensus.exporterversion", Value::Str(Cow::Owned(v)));
        attrs.remove("jaeger.version");
    }
    attrs
}

/// A span's status from its attributes, removing the ones read (the Collector's
/// `setInternalSpanStatus`).
fn set_status(attrs: &mut Attributes<'_>, span: &mut Span<'_>) {
    let mut code = StatusCode::Unset;
    let mut message = String::new();
    let mut exists = false;
    if let Some(Value::Bool(true)) = attrs.get("error") {
        code = StatusCode::Error;
        attrs.remove("error");
        exists = true;
        if let Some(desc) = attrs.remove("otel.status_description") {
            message = str_of(Some(&desc)).to_string();
        } else if let Some(msg) = attrs.get("http.status_message") {
            message = str_of(Some(msg)).to_string();
        }
    }
    if attrs.get("otel.status_code").is_some() {
        if !exists {
            exists = true;
            match str_of(attrs.get("otel.status_code"))
                .to_ascii_uppercase()
                .as_str()
            {
                "OK" => code = StatusCode::Ok,
                "ERROR" => code = StatusCode::Error,
                _ => {}
            }
            if let Some(desc) = attrs.remove("otel.status_description") {
                message = str_of(Some(&desc)).to_string();
            }
        }
        attrs.remove("otel.status_code");
    } else if !exists {
        let http = attrs
            .get("http.status_code")
            .or_else(|| attrs.get("http.response.status_code"));
        let value = match http {
            Some(Value::Int(i)) => Some(*i),
            Some(Value::Str(s)) => s.parse::<i64>().ok(),
            _ => None,
        };
        if let Some(status) = value {
            let client_error = (400..500).contains(&status);
            let from_http = match span.kind {
                SpanKind::Client if client_error => StatusCode::Error,
                SpanKind::Server if client_error => StatusCode::Unset,
                _ if (100..399).contains(&status) => StatusCode::Unset,
                _ => StatusCode::Error,
            };
            if from_http != StatusCode::Unset {
                exists = true;
                code = from_http;
            }
            if let Some(msg) = attrs.get("http.status_message") {
                message = str_of(Some(msg)).to_string();
            }
        }
    }
    if exists {
        span.status_code = code;
        span.status_message = Cow::Owned(message);
    }
}

fn span_of<'a>(j: JSpan<'a>, trace_state_tag: bool) -> Span<'a> {
    let parent = j.parent();
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&j.trace_high.to_be_bytes());
    trace_id[8..].copy_from_slice(&j.trace_low.to_be_bytes());
    let mut span = Span {
        trace_id,
        span_id: j.span_id.to_be_bytes(),
        name: j.name,
        start_time_unix_nano: j.start,
        end_time_unix_nano: j.end,
        flags: j.flags & 1,
        ..Default::default()
    };
    if parent != 0 {
        span.parent_span_id = parent.to_be_bytes();
    }
    let mut attrs = Attributes::with_capacity(j.tags.len());
    attributes_of(j.tags, &mut attrs);
    if let Some(kind) = attrs.remove("span.kind") {
        span.kind = match str_of(Some(&kind)) {
            "client" => SpanKind::Client,
            "server" => SpanKind::Server,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            "internal" => SpanKind::Internal,
            _ => SpanKind::Unspecified,
        };
    }
    set_status(&mut attrs, &mut span);
    if trace_state_tag {
        if let Some(ts) = attrs.remove("w3c.tracestate") {
            span.trace_state = Cow::Owned(str_of(Some(&ts)).to_string());
        }
    }
    span.attributes = attrs;
    span.events = j
        .logs
        .into_iter()
        .map(|(time, fields)| {
            let mut attributes = Attributes::with_capacity(fields.len());
            attributes_of(fields, &mut attributes);
            let name = attributes
                .remove("event")
                .map(|n| Cow::Owned(str_of(Some(&n)).to_string()))
                .unwrap_or_default();
            Event {
                time_unix_nano: time,
                name,
                attributes,
                dropped_attributes_count: 0,
            }
        })
        .collect();
    let only_parent = j.refs.len() == 1 && j.refs[0].span_id == parent && j.refs[0].child_of;
    if !j.refs.is_empty() && !only_parent {
        for r in &j.refs {
            if r.span_id == parent && r.child_of {
                continue;
            }
            let mut link = Link::default();
            link.trace_id[..8].copy_from_slice(&r.trace_high.to_be_bytes());
            link.trace_id[8..].copy_from_slice(&r.trace_low.to_be_bytes());
            link.span_id = r.span_id.to_be_bytes();
            let ref_type = if r.child_of {
                "child_of"
            } else {
                "follows_from"
            };
            link.attributes
                .put("opentracing.ref_type", Value::Str(Cow::Borrowed(ref_type)));
            span.links.push(link);
        }
    }
    span
}

fn finish(resources: Vec<ResourceSpans<'_>>, items: usize) -> Translated {
    let mut request = Vec::new();
    encode_traces(&resources, &mut request);
    Translated { request, items }
}

// ---------------------------------------------------------------------------------------------
// Protobuf: jaeger.api_v2.PostSpansRequest.

/// Translates a `jaeger.api_v2.PostSpansRequest` (the gRPC message, unframed).
pub fn proto_to_otlp(body: &[u8]) -> Result<Translated, JaegerError> {
    let mut batch_process: Option<Process<'_>> = None;
    let mut spans: Vec<JSpan<'_>> = Vec::new();
    let mut r = Reader::new(body);
    while let Some(field) = r.next_field() {
        let (key, value) = field?;
        let (1, WireValue::Len(batch)) = (key.field, value) else {
            continue;
        };
        let mut b = Reader::nested(body, batch);
        while let Some(field) = b.next_field() {
            match field? {
                (k, WireValue::Len(range)) if k.field == 1 => {
                    if range.is_empty() {
                        continue; // a blank span: skipped, as the Collector does
                    }
                    spans.push(proto_span(body, range)?);
                }
                (k, WireValue::Len(range)) if k.field == 2 => {
                    batch_process = Some(proto_process(body, range)?);
                }
                _ => {}
            }
        }
    }
    let items = spans.len();
    // Regroup by process: a span's own process, else the batch's. An exporter that gives every
    // span its process (the OpenTelemetry SDKs' Jaeger exporters do) repeats the same bytes:
    // each distinct byte string is decoded and compared once.
    let mut groups: Vec<(Option<Process<'_>>, Vec<JSpan<'_>>)> = vec![(batch_process, Vec::new())];
    let mut decoded: HashMap<&[u8], usize> = HashMap::new();
    let mut last: Option<(&[u8], usize)> = None;
    for mut span in spans {
        let group = match span.process.take() {
            None => 0,
            Some(raw) => match last.filter(|(bytes, _)| *bytes == &body[raw.clone()]) {
                Some((_, g)) => g,
                None => {
                    let g = match decoded.get(&body[raw.clone()]) {
                        Some(&g) => g,
                        None => {
                            let p = Some(proto_process(body, raw.clone())?);
                            let g = match groups.iter().position(|(g, _)| same_process(g, &p)) {
                                Some(i) => i,
                                None => {
                                    groups.push((p, Vec::new()));
                                    groups.len() - 1
                                }
                            };
                            decoded.insert(&body[raw.clone()], g);
                            g
                        }
                    };
                    last = Some((&body[raw], g));
                    g
                }
            },
        };
        groups[group].1.push(span);
    }
    let mut resources = Vec::with_capacity(groups.len());
    for (process, spans) in groups {
        if process.is_none() && spans.is_empty() {
            continue;
        }
        let mut rs = ResourceSpans {
            resource: resource_of(process, true),
            scope_spans: Vec::new(),
        };
        for mut span in spans {
            let scope = take_scope(&mut span.tags);
            let i = match rs.scope_spans.iter().position(|s| s.scope == scope) {
                Some(i) => i,
                None => {
                    rs.scope_spans.push(ScopeSpans {
                        scope,
                        spans: Vec::new(),
                    });
                    rs.scope_spans.len() - 1
                }
            };
            rs.scope_spans[i].spans.push(span_of(span, true));
        }
        resources.push(rs);
    }
    Ok(finish(resources, items))
}

/// Whether two processes are one (the Collector groups by a hash of the service name and
/// tags; no process and an empty one hash alike).
fn same_process(a: &Option<Process<'_>>, b: &Option<Process<'_>>) -> bool {
    fn parts<'p>(p: &'p Option<Process<'_>>) -> (&'p str, &'p [(Cow<'p, str>, JValue<'p>)]) {
        match p {
            Some(p) => (p.service_name.as_ref(), p.tags.as_deref().unwrap_or(&[])),
            None => ("", &[]),
        }
    }
    parts(a) == parts(b)
}

/// The scope from the `otel.scope.name` / `otel.scope.version` tags (the first of each),
/// removed from `tags`; the version only with a name.
fn take_scope<'a>(tags: &mut Tags<'a>) -> Scope<'a> {
    let mut take = |key: &str| {
        let i = tags.iter().position(|(k, _)| k == key)?;
        Some(match tags.remove(i).1 {
            JValue::Str(s) => s,
            _ => Cow::Borrowed(""),
        })
    };
    let mut scope = Scope::default();
    if let Some(name) = take("otel.scope.name") {
        scope.name = name;
        if let Some(version) = take("otel.scope.version") {
            scope.version = version;
        }
    }
    scope
}

fn invalid(message: impl Into<String>) -> JaegerError {
    JaegerError::Invalid(message.into())
}

fn proto_str<'a>(buf: &'a [u8], range: Range<usize>, what: &str) -> Result<&'a str, JaegerError> {
    std::str::from_utf8(&buf[range]).map_err(|_| invalid(format!("{what} is not valid UTF-8")))
}

/// Go's `time.Unix(seconds, nanos).UnixNano()` of a validated `google.protobuf.Timestamp`
/// (absent: Go's zero time, year 1), plus `duration_ns`, as a wrapping `u64`.
fn unix_nano(seconds: i64, nanos: i64, duration_ns: i128) -> u64 {
    (i128::from(seconds) * 1_000_000_000 + i128::from(nanos) + duration_ns) as u64
}

/// Seconds of Go's zero `time.Time` (0001-01-01) since the Unix epoch.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// (seconds, nanos) of a `google.protobuf.Timestamp` or `Duration` message.
fn seconds_nanos(buf: &[u8], range: Range<usize>) -> Result<(i64, i64), JaegerError> {
    let (mut s, mut n) = (0i64, 0i64);
    let mut r = Reader::nested(buf, range);
    while let Some(field) = r.next_field() {
        match field? {
            (k, WireValue::Varint(v)) if k.field == 1 => s = v as i64,
            (k, WireValue::Varint(v)) if k.field == 2 => n = i64::from(v as i32),
            _ => {}
        }
    }
    Ok((s, n))
}

fn timestamp(buf: &[u8], range: Range<usize>, what: &str) -> Result<(i64, i64), JaegerError> {
    let (s, n) = seconds_nanos(buf, range)?;
    if !(GO_ZERO_TIME_SECONDS..253_402_300_800).contains(&s) || !(0..1_000_000_000).contains(&n) {
        return Err(invalid(format!(
            "{what}: timestamp out of range ({s} s, {n} ns)"
        )));
    }
    Ok((s, n))
}

fn duration(buf: &[u8], range: Range<usize>) -> Result<i128, JaegerError> {
    let (s, n) = seconds_nanos(buf, range)?;
    let bad = !(-315_576_000_000..=315_576_000_000).contains(&s)
        || n <= -1_000_000_000
        || n >= 1_000_000_000
        || (s < 0 && n > 0)
        || (s > 0 && n < 0);
    let total = i128::from(s) * 1_000_000_000 + i128::from(n);
    if bad || i64::try_from(total).is_err() {
        return Err(invalid(format!("duration out of range ({s} s, {n} ns)")));
    }
    Ok(total)
}

fn proto_span(buf: &[u8], range: Range<usize>) -> Result<JSpan<'_>, JaegerError> {
    let mut span = JSpan::default();
    let mut start = (GO_ZERO_TIME_SECONDS, 0);
    let mut dur = 0i128;
    let mut r = Reader::nested(buf, range);
    while let Some(field) = r.next_field() {
        match field? {
            (k, WireValue::Len(b)) if k.field == 1 => {
                (span.trace_high, span.trace_low) = trace_id(&buf[b])?;
            }
            (k, WireValue::Len(b)) if k.field == 2 => span.span_id = span_id(&buf[b])?,
            (k, WireValue::Len(b)) if k.field == 3 => {
                span.name = Cow::Borrowed(proto_str(buf, b, "operation_name")?)
            }
            (k, WireValue::Len(b)) if k.field == 4 => {
                let mut reference = Ref {
                    child_of: true,
                    trace_high: 0,
                    trace_low: 0,
                    span_id: 0,
                };
                let mut rr = Reader::nested(buf, b);
                while let Some(field) = rr.next_field() {
                    match field? {
                        (k, WireValue::Len(b)) if k.field == 1 => {
                            (reference.trace_high, reference.trace_low) = trace_id(&buf[b])?;
                        }
                        (k, WireValue::Len(b)) if k.field == 2 => {
                            reference.span_id = span_id(&buf[b])?
                        }
                        (k, WireValue::Varint(t)) if k.field == 3 => {
                            reference.child_of = t as i32 == 0
                        }
                        _ => {}
                    }
                }
                span.refs.push(reference);
            }
            (k, WireValue::Varint(f)) if k.field == 5 => span.flags = f as u32,
            (k, WireValue::Len(b)) if k.field == 6 => start = timestamp(buf, b, "start_time")?,
            (k, WireValue::Len(b)) if k.field == 7 => dur = duration(buf, b)?,
            (k, WireValue::Len(b)) if k.field == 8 => span.tags.push(proto_kv(buf, b)?),
            (k, WireValue::Len(b)) if k.field == 9 => {
                let mut time = (GO_ZERO_TIME_SECONDS, 0);
                let mut fields = Vec::new();
                let mut lr = Reader::nested(buf, b);
                while let Some(field) = lr.next_field() {
                    match field? {
                        (k, WireValue::Len(b)) if k.field == 1 => {
                            time = timestamp(buf, b, "log timestamp")?
                        }
                        (k, WireValue::Len(b)) if k.field == 2 => fields.push(proto_kv(buf, b)?),
                        _ => {}
                    }
                }
                span.logs.push((unix_nano(time.0, time.1, 0), fields));
            }
            (k, WireValue::Len(b)) if k.field == 10 => span.process = Some(b),
            _ => {}
        }
    }
    span.start = unix_nano(start.0, start.1, 0);
    span.end = unix_nano(start.0, start.1, dur);
    Ok(span)
}

fn trace_id(b: &[u8]) -> Result<(u64, u64), JaegerError> {
    match b.len() {
        16 => Ok((
            u64::from_be_bytes(b[..8].try_into().unwrap_or_default()),
            u64::from_be_bytes(b[8..].try_into().unwrap_or_default()),
        )),
        8 => Ok((0, u64::from_be_bytes(b.try_into().unwrap_or_default()))),
        n => Err(invalid(format!(
            "trace_id has {n} bytes (expected 16 or 8)"
        ))),
    }
}

fn span_id(b: &[u8]) -> Result<u64, JaegerError> {
    match b.len() {
        8 => Ok(u64::from_be_bytes(b.try_into().unwrap_or_default())),
        n => Err(invalid(format!("span_id has {n} bytes (expected 8)"))),
    }
}

fn proto_process(buf: &[u8], range: Range<usize>) -> Result<Process<'_>, JaegerError> {
    let mut p = Process::default();
    let mut r = Reader::nested(buf, range);
    while let Some(field) = r.next_field() {
        match field? {
            (k, WireValue::Len(b)) if k.field == 1 => {
                p.service_name = Cow::Borrowed(proto_str(buf, b, "service_name")?)
            }
            (k, WireValue::Len(b)) if k.field == 2 => {
                p.tags.get_or_insert_with(Vec::new).push(proto_kv(buf, b)?)
            }
            _ => {}
        }
    }
    Ok(p)
}

fn proto_kv(buf: &[u8], range: Range<usize>) -> Result<(Cow<'_, str>, JValue<'_>), JaegerError> {
    let mut key = "";
    let mut v_type = 0i32;
    let (mut s, mut b, mut i, mut d, mut bin) = ("", false, 0i64, 0f64, &buf[..0]);
    let mut r = Reader::nested(buf, range);
    while let Some(field) = r.next_field() {
        match field? {
            (k, WireValue::Len(x)) if k.field == 1 => key = proto_str(buf, x, "tag key")?,
            (k, WireValue::Varint(t)) if k.field == 2 => v_type = t as i32,
            (k, WireValue::Len(x)) if k.field == 3 => s = proto_str(buf, x, "tag value")?,
            (k, WireValue::Varint(x)) if k.field == 4 => b = x != 0,
            (k, WireValue::Varint(x)) if k.field == 5 => i = x as i64,
            (k, WireValue::I64(x)) if k.field == 6 => d = f64::from_bits(x),
            (k, WireValue::Len(x)) if k.field == 7 => bin = &buf[x],
            _ => {}
        }
    }
    let value = match v_type {
        0 => JValue::Str(Cow::Borrowed(s)),
        1 => JValue::Bool(b),
        2 => JValue::Int(i),
        3 => JValue::Double(d),
        4 => JValue::Binary(bin),
        t => JValue::Unknown(format!("<Unknown Jaeger TagType \"{t}\">")),
    };
    Ok((Cow::Borrowed(key), value))
}

// ---------------------------------------------------------------------------------------------
// Thrift: jaeger.thrift Batch, binary protocol.

/// Translates a `jaeger.thrift` `Batch` in Thrift's binary protocol (`POST /api/traces`,
/// `application/x-thrift`).
pub fn thrift_to_otlp(body: &[u8]) -> Result<Translated, JaegerError> {
    let mut r = thrift::Reader::new(body);
    let mut process = None;
    let mut spans = None;
    r.enter()?;
    while let Some((ty, id)) = r.read_field()? {
        match (id, ty) {
            (1, Type::Struct) => process = Some(thrift_process(&mut r)?),
            (2, Type::List) => {
                let (ty, n) = r.read_list()?;
                r.enter()?;
                let mut list = Vec::with_capacity(n.min(4096));
                for _ in 0..n {
                    if ty != Type::Struct {
                        r.skip(ty)?;
                        continue;
                    }
                    if let Some(span) = thrift_span(&mut r)? {
                        list.push(span);
                    }
                }
                r.leave();
                spans = Some((n, list));
            }
            (_, ty) => r.skip(ty)?,
        }
    }
    r.leave();
    let process = process.ok_or(ThriftError::MissingField {
        message: "Batch",
        field: "process",
    })?;
    let (count, spans) = spans.ok_or(ThriftError::MissingField {
        message: "Batch",
        field: "spans",
    })?;
    let mut rs = ResourceSpans {
        resource: resource_of(Some(process), false),
        scope_spans: Vec::new(),
    };
    if count > 0 {
        rs.scope_spans.push(ScopeSpans {
            scope: Scope::default(),
            spans: spans.into_iter().map(|s| span_of(s, false)).collect(),
        });
    }
    Ok(finish(vec![rs], count))
}

fn thrift_str<'a>(r: &mut thrift::Reader<'a>) -> Result<Cow<'a, str>, JaegerError> {
    Ok(String::from_utf8_lossy(r.read_binary()?))
}

fn thrift_process<'a>(r: &mut thrift::Reader<'a>) -> Result<Process<'a>, JaegerError> {
    let mut p = Process::default();
    let mut name = false;
    r.enter()?;
    while let Some((ty, id)) = r.read_field()? {
        match (id, ty) {
            (1, Type::String) => {
                p.service_name = thrift_str(r)?;
                name = true;
            }
            (2, Type::List) => p.tags = Some(thrift_tags(r)?),
            (_, ty) => r.skip(ty)?,
        }
    }
    r.leave();
    if !name {
        return Err(missing("Process", "serviceName"));
    }
    Ok(p)
}

fn missing(message: &'static str, field: &'static str) -> JaegerError {
    JaegerError::Thrift(ThriftError::MissingField { message, field })
}

fn thrift_tags<'a>(r: &mut thrift::Reader<'a>) -> Result<Tags<'a>, JaegerError> {
    let (ty, n) = r.read_list()?;
    let mut tags = Vec::with_capacity(n.min(1024));
    r.enter()?;
    for _ in 0..n {
        if ty != Type::Struct {
            r.skip(ty)?;
            continue;
        }
        tags.push(thrift_tag(r)?);
    }
    r.leave();
    Ok(tags)
}

fn thrift_tag<'a>(r: &mut thrift::Reader<'a>) -> Result<(Cow<'a, str>, JValue<'a>), JaegerError> {
    let mut key = None;
    let mut v_type = None;
    let (mut s, mut d, mut b, mut l, mut bin) = (Cow::Borrowed(""), 0f64, false, 0i64, &[][..]);
    r.enter()?;
    while let Some((ty, id)) = r.read_field()? {
        match (id, ty) {
            (1, Type::String) => key = Some(thrift_str(r)?),
            (2, Type::I32) => v_type = Some(r.read_i32()?),
            (3, Type::String) => s = thrift_str(r)?,
            (4, Type::Double) => d = r.read_double()?,
            (5, Type::Bool) => b = r.read_bool()?,
            (6, Type::I64) => l = r.read_i64()?,
            (7, Type::String) => bin = r.read_binary()?,
            (_, ty) => r.skip(ty)?,
        }
    }
    r.leave();
    let key = key.ok_or_else(|| missing("Tag", "key"))?;
    let value = match v_type.ok_or_else(|| missing("Tag", "vType"))? {
        0 => JValue::Str(s),
        1 => JValue::Double(d),
        2 => JValue::Bool(b),
        3 => JValue::Int(l),
        4 => JValue::Binary(bin),
        _ => JValue::Unknown("<Unknown Jaeger TagType \"<UNSET>\">".to_string()),
    };
    Ok((key, value))
}

/// One span; `None` for a blank one (every field zero), which the Collector skips.
fn thrift_span<'a>(r: &mut thrift::Reader<'a>) -> Result<Option<JSpan<'a>>, JaegerError> {
    let mut span = JSpan::default();
    let mut seen = [false; 8];
    let (mut start, mut duration) = (0i64, 0i64);
    let mut other_fields = false;
    r.enter()?;
    while let Some((ty, id)) = r.read_field()? {
        match (id, ty) {
            (1, Type::I64) => (span.trace_low, seen[0]) = (r.read_i64()? as u64, true),
            (2, Type::I64) => (span.trace_high, seen[1]) = (r.read_i64()? as u64, true),
            (3, Type::I64) => (span.span_id, seen[2]) = (r.read_i64()? as u64, true),
            (4, Type::I64) => (span.parent_span_id, seen[3]) = (r.read_i64()? as u64, true),
            (5, Type::String) => (span.name, seen[4]) = (thrift_str(r)?, true),
            (6, Type::List) => {
                other_fields = true;
                let (ty, n) = r.read_list()?;
                r.enter()?;
                for _ in 0..n {
                    if ty != Type::Struct {
                        r.skip(ty)?;
                        continue;
                    }
                    span.refs.push(thrift_ref(r)?);
                }
                r.leave();
            }
            (7, Type::I32) => (span.flags, seen[5]) = (r.read_i32()? as u32, true),
            (8, Type::I64) => (start, seen[6]) = (r.read_i64()?, true),
            (9, Type::I64) => (duration, seen[7]) = (r.read_i64()?, true),
            (10, Type::List) => {
                other_fields = true;
                span.tags = thrift_tags(r)?;
            }
            (11, Type::List) => {
                other_fields = true;
                let (ty, n) = r.read_list()?;
                r.enter()?;
                for _ in 0..n {
                    if ty != Type::Struct {
                        r.skip(ty)?;
                        continue;
                    }
                    span.logs.push(thrift_log(r)?);
                }
                r.leave();
            }
            (12, Type::Bool) => {
                other_fields = true;
                r.read_bool()?;
            }
            (_, ty) => r.skip(ty)?,
        }
    }
    r.leave();
    const NAMES: [&str; 8] = [
        "traceIdLow",
        "traceIdHigh",
        "spanId",
        "parentSpanId",
        "operationName",
        "flags",
        "startTime",
        "duration",
    ];
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(missing("Span", NAMES[i]));
    }
    let blank = !other_fields
        && span.trace_low == 0
        && span.trace_high == 0
        && span.span_id == 0
        && span.parent_span_id == 0
        && span.name.is_empty()
        && span.flags == 0
        && start == 0
        && duration == 0;
    if blank {
        return Ok(None);
    }
    span.start = (start as u64).wrapping_mul(1000);
    span.end = (start.wrapping_add(duration) as u64).wrapping_mul(1000);
    Ok(Some(span))
}

fn thrift_ref(r: &mut thrift::Reader<'_>) -> Result<Ref, JaegerError> {
    let mut reference = Ref {
        child_of: true,
        trace_high: 0,
        trace_low: 0,
        span_id: 0,
    };
    let mut seen = [false; 4];
    r.enter()?;
    while let Some((ty, id)) = r.read_field()? {
        match (id, ty) {
            (1, Type::I32) => (reference.child_of, seen[0]) = (r.read_i32()? == 0, true),
            (2, Type::I64) => (reference.trace_low, seen[1]) = (r.read_i64()? as u64, true),
            (3, Type::I64) => (reference.trace_high, seen[2]) = (r.read_i64()? as u64, true),
            (4, Type::I64) => (reference.span_id, seen[3]) = (r.read_i64()? as u64, true),
            (_, ty) => r.skip(ty)?,
        }
    }
    r.leave();
    const NAMES: [&str; 4] = ["refType", "traceIdLow", "traceIdHigh", "spanId"];
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(missing("SpanRef", NAMES[i]));
    }
    Ok(reference)
}

fn thrift_log<'a>(r: &mut thrift::Reader<'a>) -> Result<(u64, Tags<'a>), JaegerError> {
    let mut time = None;
    let mut fields = None;
    r.enter()?;
    while let Some((ty, id)) = r.read_field()? {
        match (id, ty) {
            (1, Type::I64) => time = Some(r.read_i64()?),
            (2, Type::List) => fields = Some(thrift_tags(r)?),
            (_, ty) => r.skip(ty)?,
        }
    }
    r.leave();
    let time = time.ok_or_else(|| missing("Log", "timestamp"))?;
    let fields = fields.ok_or_else(|| missing("Log", "fields"))?;
    Ok(((time as u64).wrapping_mul(1000), fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::collector::trace::v1::ExportTraceServiceRequest;
    use crate::proto::common::v1::{any_value, AnyValue, KeyValue};
    use prost::Message;

    /// jaeger-idl model.proto and collector.proto, for the tests.
    pub(crate) mod jpb {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct PostSpansRequest {
            #[prost(message, optional, tag = "1")]
            pub batch: Option<Batch>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Batch {
            #[prost(message, repeated, tag = "1")]
            pub spans: Vec<Span>,
            #[prost(message, optional, tag = "2")]
            pub process: Option<Process>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Process {
            #[prost(string, tag = "1")]
            pub service_name: String,
            #[prost(message, repeated, tag = "2")]
            pub tags: Vec<KeyValue>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct KeyValue {
            #[prost(string, tag = "1")]
            pub key: String,
            #[prost(int32, tag = "2")]
            pub v_type: i32,
            #[prost(string, tag = "3")]
            pub v_str: String,
            #[prost(bool, tag = "4")]
            pub v_bool: bool,
            #[prost(int64, tag = "5")]
            pub v_int64: i64,
            #[prost(double, tag = "6")]
            pub v_float64: f64,
            #[prost(bytes = "vec", tag = "7")]
            pub v_binary: Vec<u8>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct SpanRef {
            #[prost(bytes = "vec", tag = "1")]
            pub trace_id: Vec<u8>,
            #[prost(bytes = "vec", tag = "2")]
            pub span_id: Vec<u8>,
            #[prost(int32, tag = "3")]
            pub ref_type: i32,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Log {
            #[prost(message, optional, tag = "1")]
            pub timestamp: Option<prost_types_lite::Timestamp>,
            #[prost(message, repeated, tag = "2")]
            pub fields: Vec<KeyValue>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Span {
            #[prost(bytes = "vec", tag = "1")]
            pub trace_id: Vec<u8>,
            #[prost(bytes = "vec", tag = "2")]
            pub span_id: Vec<u8>,
            #[prost(string, tag = "3")]
            pub operation_name: String,
            #[prost(message, repeated, tag = "4")]
            pub references: Vec<SpanRef>,
            #[prost(uint32, tag = "5")]
            pub flags: u32,
            #[prost(message, optional, tag = "6")]
            pub start_time: Option<prost_types_lite::Timestamp>,
            #[prost(message, optional, tag = "7")]
            pub duration: Option<prost_types_lite::Timestamp>,
            #[prost(message, repeated, tag = "8")]
            pub tags: Vec<KeyValue>,
            #[prost(message, repeated, tag = "9")]
            pub logs: Vec<Log>,
            #[prost(message, optional, tag = "10")]
            pub process: Option<Process>,
        }
        pub mod prost_types_lite {
            /// `google.protobuf.Timestamp` and `Duration` (the same two fields).
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct Timestamp {
                #[prost(int64, tag = "1")]
                pub seconds: i64,
                #[prost(int32, tag = "2")]
                pub nanos: i32,
            }
        }

        pub fn s(key: &str, v: &str) -> KeyValue {
            KeyValue {
                key: key.into(),
                v_str: v.into(),
                ..Default::default()
            }
        }
        pub fn b(key: &str, v: bool) -> KeyValue {
            KeyValue {
                key: key.into(),
                v_type: 1,
                v_bool: v,
                ..Default::default()
            }
        }
        pub fn i(key: &str, v: i64) -> KeyValue {
            KeyValue {
                key: key.into(),
                v_type: 2,
                v_int64: v,
                ..Default::default()
            }
        }
    }

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn sv(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    fn decode(t: &Translated) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest::decode(&t.request[..]).unwrap()
    }

    fn ts(seconds: i64, nanos: i32) -> Option<jpb::prost_types_lite::Timestamp> {
        Some(jpb::prost_types_lite::Timestamp { seconds, nanos })
    }

    fn sample_request() -> jpb::PostSpansRequest {
        let trace = [7u8; 16].to_vec();
        let root = jpb::Span {
            trace_id: trace.clone(),
            span_id: 1u64.to_be_bytes().to_vec(),
            operation_name: "GET /cart".into(),
            flags: 1,
            start_time: ts(1_700_000_000, 5),
            duration: ts(0, 2_000_000),
            tags: vec![
                jpb::s("span.kind", "server"),
                jpb::i("http.status_code", 500),
                jpb::s("otel.scope.name", "cart-lib"),
                jpb::s("otel.scope.version", "0.9"),
                jpb::s("w3c.tracestate", "a=b"),
            ],
            logs: vec![jpb::Log {
                timestamp: ts(1_700_000_000, 1_000),
                fields: vec![jpb::s("event", "cache miss"), jpb::i("size", 3)],
            }],
            ..Default::default()
        };
        let child = jpb::Span {
            trace_id: trace.clone(),
            span_id: 2u64.to_be_bytes().to_vec(),
            operation_name: "SELECT".into(),
            references: vec![
                jpb::SpanRef {
                    trace_id: trace.clone(),
                    span_id: 1u64.to_be_bytes().to_vec(),
                    ref_type: 0,
                },
                jpb::SpanRef {
                    trace_id: [9u8; 16].to_vec(),
                    span_id: 3u64.to_be_bytes().to_vec(),
                    ref_type: 1,
                },
            ],
            start_time: ts(1_700_000_000, 500),
            duration: ts(0, 100),
            tags: vec![
                jpb::b("error", true),
                jpb::s("otel.status_description", "deadlock"),
                jpb::s("db.system", "mysql"),
            ],
            process: Some(jpb::Process {
                service_name: "db".into(),
                tags: vec![
                    jpb::s("hostname", "db-1"),
                    jpb::s("jaeger.version", "Go-2.30"),
                ],
            }),
            ..Default::default()
        };
        jpb::PostSpansRequest {
            batch: Some(jpb::Batch {
                spans: vec![root, child],
                process: Some(jpb::Process {
                    service_name: "cart".into(),
                    tags: vec![jpb::s("ip", "10.0.0.1")],
                }),
            }),
        }
    }

    #[test]
    fn protobuf_batches_map_as_the_collector_maps_them() {
        let t = proto_to_otlp(&sample_request().encode_to_vec()).unwrap();
        assert_eq!(t.items, 2);
        let req = decode(&t);
        assert_eq!(req.resource_spans.len(), 2);
        let cart = &req.resource_spans[0];
        assert_eq!(
            cart.resource.as_ref().unwrap().attributes,
            [kv("service.name", sv("cart")), kv("ip", sv("10.0.0.1"))]
        );
        let scope = cart.scope_spans[0].scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("cart-lib", "0.9")
        );
        let root = &cart.scope_spans[0].spans[0];
        assert_eq!(root.kind, 2);
        assert_eq!(root.flags, 1);
        assert_eq!(root.trace_state, "a=b");
        assert_eq!(root.start_time_unix_nano, 1_700_000_000_000_000_005);
        assert_eq!(root.end_time_unix_nano, 1_700_000_000_002_000_005);
        assert_eq!(root.status.as_ref().unwrap().code, 2, "HTTP 500");
        assert_eq!(
            root.attributes,
            [kv(
                "http.response.status_code",
                any_value::Value::IntValue(500)
            )]
        );
        assert_eq!(root.events[0].name, "cache miss");
        assert_eq!(
            root.events[0].attributes,
            [kv("size", any_value::Value::IntValue(3))]
        );
        let db = &req.resource_spans[1];
        assert_eq!(
            db.resource.as_ref().unwrap().attributes,
            [
                kv("service.name", sv("db")),
                kv("host.name", sv("db-1")),
                kv("opencensus.exporterversion", sv("Jaeger-Go-2.30")),
            ]
        );
        let child = &db.scope_spans[0].spans[0];
        assert_eq!(child.parent_span_id, 1u64.to_be_bytes());
        let status = child.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "deadlock"));
        assert_eq!(child.attributes, [kv("db.system", sv("mysql"))]);
        assert_eq!(child.links.len(), 1);
        assert_eq!(child.links[0].trace_id, vec![9u8; 16]);
        assert_eq!(
            child.links[0].attributes,
            [kv("opentracing.ref_type", sv("follows_from"))]
        );
    }

    #[test]
    fn spans_carrying_their_process_group_by_process_whatever_its_bytes() {
        // As the SDK exporters send them: every span with its own copy of a process. Three
        // copies of "db" (two with the same bytes, one with its tags in another order: processes
        // compare by service name and tags in order, so it is a resource of its own) and one of
        // "cart" equal to the batch's process.
        let mut req = sample_request();
        let batch = req.batch.as_mut().unwrap();
        let db = batch.spans[1].clone();
        let mut reordered = db.clone();
        reordered.span_id = 4u64.to_be_bytes().to_vec();
        reordered.process.as_mut().unwrap().tags.reverse();
        let mut again = db.clone();
        again.span_id = 5u64.to_be_bytes().to_vec();
        let mut cart = batch.spans[0].clone();
        cart.span_id = 6u64.to_be_bytes().to_vec();
        cart.process = batch.process.clone();
        batch.spans.extend([reordered, again, cart]);
        let t = proto_to_otlp(&req.encode_to_vec()).unwrap();
        assert_eq!(t.items, 5);
        let req = decode(&t);
        let services: Vec<(String, usize)> = req
            .resource_spans
            .iter()
            .map(|rs| {
                let attrs = &rs.resource.as_ref().unwrap().attributes;
                let spans = rs.scope_spans.iter().map(|s| s.spans.len()).sum();
                (format!("{:?}", attrs[0].value), spans)
            })
            .collect();
        assert_eq!(services.len(), 3, "{services:?}");
        assert_eq!(
            services.iter().map(|s| s.1).collect::<Vec<_>>(),
            [2, 2, 1],
            "cart (batch and own), db twice with the same bytes, db with other tag order"
        );
        // A bad process is refused wherever it is.
        let mut bytes = sample_request().encode_to_vec();
        let at = bytes
            .windows(4)
            .position(|w| w == b"db-1")
            .expect("the hostname tag");
        bytes[at] = 0xff;
        assert!(
            proto_to_otlp(&bytes).is_err(),
            "invalid UTF-8 in a process tag"
        );
    }

    #[test]
    fn bad_protobuf_values_are_named() {
        let mut req = sample_request();
        req.batch.as_mut().unwrap().spans[0].span_id = vec![1, 2, 3];
        let err = proto_to_otlp(&req.encode_to_vec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid jaeger batch: span_id has 3 bytes (expected 8)"
        );
        let mut req = sample_request();
        req.batch.as_mut().unwrap().spans[0].start_time = ts(0, -1);
        assert!(proto_to_otlp(&req.encode_to_vec()).is_err());
        assert!(proto_to_otlp(&[0x0a, 0x80]).is_err());
    }

    /// A Thrift binary-protocol writer for the tests.
    pub(crate) struct TWriter(pub Vec<u8>);

    impl TWriter {
        pub fn field(&mut self, ty: u8, id: i16) -> &mut Self {
            self.0.push(ty);
            self.0.extend_from_slice(&id.to_be_bytes());
            self
        }
        pub fn stop(&mut self) -> &mut Self {
            self.0.push(0);
            self
        }
        pub fn i64(&mut self, id: i16, v: i64) -> &mut Self {
            self.field(10, id);
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        pub fn i32(&mut self, id: i16, v: i32) -> &mut Self {
            self.field(8, id);
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        pub fn string(&mut self, id: i16, v: &[u8]) -> &mut Self {
            self.field(11, id);
            self.0.extend_from_slice(&(v.len() as i32).to_be_bytes());
            self.0.extend_from_slice(v);
            self
        }
        pub fn list(&mut self, id: i16, elem: u8, n: i32) -> &mut Self {
            self.field(15, id);
            self.0.push(elem);
            self.0.extend_from_slice(&n.to_be_bytes());
            self
        }
        pub fn tag_str(&mut self, key: &str, v: &str) -> &mut Self {
            self.string(1, key.as_bytes())
                .i32(2, 0)
                .string(3, v.as_bytes())
                .stop()
        }
        pub fn tag_bool(&mut self, key: &str, v: bool) -> &mut Self {
            self.string(1, key.as_bytes()).i32(2, 2).field(2, 5);
            self.0.push(u8::from(v));
            self.stop()
        }
    }

    fn thrift_batch(with_parent: bool) -> Vec<u8> {
        let mut w = TWriter(Vec::new());
        w.field(12, 1) // process
            .string(1, b"payments")
            .list(2, 12, 1)
            .tag_str("hostname", "pay-1")
            .stop();
        w.list(2, 12, 2);
        // span 1
        w.i64(1, 0x1111).i64(2, 0x2222).i64(3, 5).i64(4, 0);
        w.string(5, b"charge")
            .i32(7, 1)
            .i64(8, 1_700_000_000_000_000)
            .i64(9, 1500);
        w.list(10, 12, 3)
            .tag_str("span.kind", "client")
            .tag_bool("error", true)
            .tag_str("otel.scope.name", "stays-an-attribute");
        w.list(11, 12, 1)
            .i64(1, 1_700_000_000_000_100)
            .list(2, 12, 1)
            .tag_str("event", "retry")
            .stop();
        w.stop();
        // span 2: child of span 1 by parentSpanId or by reference.
        w.i64(1, 0x1111)
            .i64(2, 0x2222)
            .i64(3, 6)
            .i64(4, if with_parent { 5 } else { 0 });
        w.string(5, b"ledger write")
            .i32(7, 0)
            .i64(8, 1_700_000_000_000_200)
            .i64(9, 10);
        w.list(6, 12, 1)
            .i32(1, 0)
            .i64(2, 0x1111)
            .i64(3, 0x2222)
            .i64(4, 5)
            .stop();
        w.stop();
        w.stop(); // batch
        w.0
    }

    #[test]
    fn thrift_batches_map_as_the_collector_maps_them() {
        for with_parent in [true, false] {
            let t = thrift_to_otlp(&thrift_batch(with_parent)).unwrap();
            assert_eq!(t.items, 2);
            let req = decode(&t);
            let rs = &req.resource_spans[0];
            assert_eq!(
                rs.resource.as_ref().unwrap().attributes,
                [
                    kv("service.name", sv("payments")),
                    kv("host.name", sv("pay-1"))
                ]
            );
            assert_eq!(rs.scope_spans.len(), 1);
            assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "");
            let [charge, ledger] = &rs.scope_spans[0].spans[..] else {
                panic!()
            };
            assert_eq!(charge.trace_id[..8], 0x2222u64.to_be_bytes());
            assert_eq!(charge.trace_id[8..], 0x1111u64.to_be_bytes());
            assert_eq!(charge.kind, 3);
            assert_eq!(charge.flags, 1);
            assert_eq!(charge.status.as_ref().unwrap().code, 2);
            assert_eq!(charge.start_time_unix_nano, 1_700_000_000_000_000_000);
            assert_eq!(charge.end_time_unix_nano, 1_700_000_000_001_500_000);
            assert_eq!(
                charge.attributes,
                [kv("otel.scope.name", sv("stays-an-attribute"))]
            );
            assert_eq!(charge.events[0].name, "retry");
            assert_eq!(ledger.parent_span_id, 5u64.to_be_bytes());
            assert!(ledger.links.is_empty(), "the parent's reference is no link");
        }
    }

    #[test]
    fn bad_thrift_is_refused_with_the_field_named() {
        // A batch without spans.
        let mut w = TWriter(Vec::new());
        w.field(12, 1).string(1, b"x").stop().stop();
        assert_eq!(
            thrift_to_otlp(&w.0).unwrap_err().to_string(),
            "invalid jaeger thrift: required field spans of Batch is not set"
        );
        let good = thrift_batch(true);
        for cut in 0..good.len() {
            assert!(thrift_to_otlp(&good[..cut]).is_err(), "cut at {cut}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = proto_to_otlp(&bytes);
            let _ = thrift_to_otlp(&bytes);
        }

        #[test]
        fn corrupted_batches_never_panic(flips in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..8)) {
            let mut thrift = thrift_batch(true);
            let mut proto = sample_request().encode_to_vec();
            for (at, b) in &flips {
                let n = thrift.len();
                thrift[at % n] = *b;
                let n = proto.len();
                proto[at % n] = *b;
            }
            let _ = thrift_to_otlp(&thrift);
            let _ = proto_to_otlp(&proto);
        }
    }
}
