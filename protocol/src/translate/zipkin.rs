//! Zipkin v2 spans (JSON, or protobuf `zipkin.proto3.ListOfSpans`) → an OTLP
//! `ExportTraceServiceRequest`, as the OpenTelemetry specification maps them and, where it is
//! silent, as the Collector's `zipkinreceiver` (contrib `pkg/translator/zipkin`, v0.165.0 with
//! its default feature gates) does:
//!
//! - Spans are grouped into one resource per `localEndpoint.serviceName` (`service.name`; no
//!   resource attributes without one) and one scope per `otel.scope.name` /
//!   `otel.library.name` tag. Resource-convention tags (`host.name`, `k8s.*`, ...) of a group's
//!   first span become resource attributes; on later spans they are dropped, as the Collector
//!   does.
//! - Ids: a trace id of 1–32 hex digits (zero-padded on the left), span ids of 1–16; a parent
//!   id equal to the span's own id is no parent.
//! - `kind` → span kind (`span.kind = internal` tag for INTERNAL); `otel.status_code` /
//!   `otel.status_description` tags and an `error` tag → status; `w3c.tracestate` → trace
//!   state; `otlp.link.N` tags → links; annotations → events (`name|{json attributes}|dropped`
//!   decoded); endpoints → `network.local.address`, `net.host.port`, `service.peer.name`,
//!   `network.peer.address`, `net.peer.port`; `http.status_code` → `http.response.status_code`;
//!   other tags → string attributes (or typed ones with `parse_string_tags`).
//! - `timestamp`/`duration` in microseconds → start and end in nanoseconds; a JSON span without
//!   `timestamp` starts at 0 with the attribute `otel.zipkin.absentField.startTime = true`.
//!
//! Where shardtel differs, and why: spans keep their order within a scope (the Collector's
//! unstable sort may reorder them), and attributes follow the order of the tags (the
//! Collector's follow Go's random map order); an annotation or `otlp.link.N` tag whose encoded
//! attributes do not parse stays as it was (an event named by the whole value, a string
//! attribute) where the Collector refuses the whole request; a protobuf trace id of 8 bytes is
//! accepted (Zipkin allows 64-bit trace ids), where the Collector's decoder requires 16; and
//! `otel.status_code` values `OK` and `ERROR` (what the specification's Zipkin exporters write)
//! set the status, where the Collector only knows `Ok`/`Error`/`STATUS_CODE_*` and leaves
//! the status unset.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::otlp::{
    encode_traces, Attributes, Event, Link, ResourceSpans, Scope, ScopeSpans, Span, SpanKind,
    StatusCode, Value,
};
use super::Translated;
use crate::wire::{Reader, Value as WireValue, WireError};

/// Options of the translation.
#[derive(Clone, Copy, Debug, Default)]
pub struct ZipkinOptions {
    /// Tags that look like integers, doubles or booleans become attributes of that type (the
    /// Collector's `parse_string_tags`).
    pub parse_string_tags: bool,
}

/// Why a Zipkin request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ZipkinError {
    /// Not a JSON array of Zipkin v2 spans.
    #[error("invalid zipkin json: {0}")]
    Json(String),
    /// Not a protobuf `ListOfSpans`.
    #[error("invalid zipkin protobuf: {0}")]
    Protobuf(#[from] WireError),
    /// A span with a bad field: which span and what.
    #[error("span {index}: {problem}")]
    Span {
        /// The span's position in the request.
        index: usize,
        /// What is wrong.
        problem: String,
    },
}

/// The attribute a span without `timestamp` gets.
pub const START_TIME_ABSENT: &str = "otel.zipkin.absentField.startTime";
const NO_SERVICE_NAME: &str = "OTLPResourceNoServiceName";
const SERVICE_NAME_SOURCE: &str = "otlp.service.name.source";

/// Translates a JSON array of Zipkin v2 spans (`POST /api/v2/spans`).
pub fn json_v2_to_otlp(body: &[u8], options: ZipkinOptions) -> Result<Translated, ZipkinError> {
    let spans: Vec<JsonSpan<'_>> =
        serde_json::from_slice(body).map_err(|e| ZipkinError::Json(e.to_string()))?;
    let spans = spans
        .into_iter()
        .enumerate()
        .map(|(index, s)| {
            s.into_model()
                .map_err(|problem| ZipkinError::Span { index, problem })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(translate(spans, options))
}

/// Translates a protobuf `zipkin.proto3.ListOfSpans` (`application/x-protobuf`).
pub fn proto_to_otlp(body: &[u8], options: ZipkinOptions) -> Result<Translated, ZipkinError> {
    let mut spans = Vec::new();
    let mut r = Reader::new(body);
    while let Some(field) = r.next_field() {
        let (key, value) = field?;
        if let (1, WireValue::Len(range)) = (key.field, value) {
            let index = spans.len();
            let span =
                proto_span(body, range).map_err(|problem| ZipkinError::Span { index, problem })?;
            spans.push(span);
        }
    }
    Ok(translate(spans, options))
}

// ---------------------------------------------------------------------------------------------
// The model both formats decode into.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Client,
    Server,
    Producer,
    Consumer,
    Other,
}

#[derive(Debug, Default)]
struct Endpoint<'a> {
    service_name: Cow<'a, str>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: u16,
}

#[derive(Debug)]
struct ZSpan<'a> {
    trace_id: [u8; 16],
    id: u64,
    parent_id: Option<u64>,
    name: Cow<'a, str>,
    kind: Kind,
    /// Microseconds; `None`: absent (JSON only).
    timestamp: Option<u64>,
    duration: u64,
    local: Option<Endpoint<'a>>,
    remote: Option<Endpoint<'a>>,
    /// (microseconds, value).
    annotations: Vec<(u64, Cow<'a, str>)>,
    /// Unique keys, in the order first seen (a repeated key keeps its last value).
    tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> ZSpan<'a> {
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    fn service(&self) -> &str {
        match &self.local {
            Some(e) if !e.service_name.is_empty() => &e.service_name,
            _ => NO_SERVICE_NAME,
        }
    }

    fn scope_name(&self) -> &str {
        self.tag("otel.scope.name")
            .or_else(|| self.tag("otel.library.name"))
            .unwrap_or("")
    }
}

fn put_tag<'a>(tags: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>, k: Cow<'a, str>, v: Cow<'a, str>) {
    match tags.iter_mut().find(|(key, _)| *key == k) {
        Some((_, value)) => *value = v,
        None => tags.push((k, v)),
    }
}

/// The tags of a span being translated: looked up and removed by key.
struct Tags<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> Tags<'a> {
    fn get(&self, key: &str) -> Option<&Cow<'a, str>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn take(&mut self, key: &str) -> Option<Cow<'a, str>> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }
}

/// Tags that are not span attributes: the resource conventions the Collector lists, and the
/// keys it reads for the resource and the scope.
fn is_non_span_attribute(key: &str) -> bool {
    RESOURCE_CONVENTIONS.contains(&key)
        || matches!(
            key,
            SERVICE_NAME_SOURCE
                | "otel.library.name"
                | "otel.library.version"
                | "otel.scope.name"
                | "otel.scope.version"
                | "opencensus.starttime"
                | "opencensus.exporterversion"
                | "opencensus.resourcetype"
        )
}

/// The resource attribute names of the Collector's translator (semantic conventions v1.43 with
/// a few older names).
const RESOURCE_CONVENTIONS: &[&str] = &[
    "cloud.provider",
    "cloud.account.id",
    "cloud.region",
    "cloud.availability_zone",
    "cloud.platform",
    "aws.ecs.container.arn",
    "aws.ecs.cluster.arn",
    "aws.ecs.launchtype",
    "aws.ecs.task.arn",
    "aws.ecs.task.family",
    "aws.ecs.task.revision",
    "aws.eks.cluster.arn",
    "aws.log.group.names",
    "aws.log.group.arns",
    "aws.log.stream.names",
    "aws.log.stream.arns",
    "container.name",
    "container.id",
    "container.runtime",
    "container.image.name",
    "container.image.tag",
    "deployment.environment",
    "device.id",
    "device.model.identifier",
    "device.model.name",
    "device.manufacturer",
    "faas.name",
    "faas.id",
    "cloud.resource_id",
    "faas.version",
    "faas.instance",
    "faas.max_memory",
    "host.id",
    "host.name",
    "host.type",
    "host.arch",
    "host.image.name",
    "host.image.id",
    "host.image.version",
    "k8s.cluster.name",
    "k8s.node.name",
    "k8s.node.uid",
    "k8s.namespace.name",
    "k8s.pod.uid",
    "k8s.pod.name",
    "k8s.container.name",
    "k8s.container.restart_count",
    "k8s.replicaset.uid",
    "k8s.replicaset.name",
    "k8s.deployment.uid",
    "k8s.deployment.name",
    "k8s.statefulset.uid",
    "k8s.statefulset.name",
    "k8s.daemonset.uid",
    "k8s.daemonset.name",
    "k8s.job.uid",
    "k8s.job.name",
    "k8s.cronjob.uid",
    "k8s.cronjob.name",
    "os.type",
    "os.description",
    "os.name",
    "os.version",
    "process.pid",
    "process.executable.name",
    "process.executable.path",
    "process.command",
    "process.command_line",
    "process.command_args",
    "process.owner",
    "process.runtime.name",
    "process.runtime.version",
    "process.runtime.description",
    "service.name",
    "service.namespace",
    "service.instance.id",
    "service.version",
    "telemetry.sdk.name",
    "telemetry.sdk.language",
    "telemetry.sdk.version",
    "telemetry.auto.version",
    "webengine.name",
    "webengine.version",
    "webengine.description",
];

// ---------------------------------------------------------------------------------------------
// Model → OTLP.

fn translate(mut spans: Vec<ZSpan<'_>>, options: ZipkinOptions) -> Translated {
    let count = spans.len();
    // Grouped by service, then scope (stable: spans keep their order within a scope).
    spans.sort_by(|a, b| {
        a.service()
            .cmp(b.service())
            .then_with(|| a.scope_name().cmp(b.scope_name()))
    });
    let mut resources: Vec<ResourceSpans<'_>> = Vec::new();
    // The service and scope of the group being filled.
    let mut current: Option<(String, String)> = None;
    for mut zspan in spans {
        let new_resource = current.as_ref().is_none_or(|(s, _)| s != zspan.service());
        let new_scope = new_resource
            || current
                .as_ref()
                .is_none_or(|(_, s)| s != zspan.scope_name());
        if new_scope {
            current = Some((zspan.service().to_string(), zspan.scope_name().to_string()));
        }
        let (service, scope_name) = current.as_ref().expect("set above");
        let mut tags = Tags(std::mem::take(&mut zspan.tags));
        if new_resource {
            resources.push(ResourceSpans {
                resource: resource_of(&mut tags, service),
                scope_spans: Vec::new(),
            });
        }
        let rs = resources.last_mut().expect("a resource was pushed");
        if new_scope {
            rs.scope_spans.push(ScopeSpans {
                scope: scope_of(&mut tags, scope_name),
                spans: Vec::new(),
            });
        }
        let span = span_of(zspan, tags, options);
        rs.scope_spans
            .last_mut()
            .expect("a scope was pushed")
            .spans
            .push(span);
    }
    let mut request = Vec::new();
    encode_traces(&resources, &mut request);
    Translated {
        request,
        items: count,
    }
}

fn resource_of<'a>(tags: &mut Tags<'a>, service: &str) -> Attributes<'a> {
    let mut attrs = Attributes::default();
    if service == NO_SERVICE_NAME {
        return attrs;
    }
    let service = Value::Str(Cow::Owned(service.to_string()));
    match tags.take(SERVICE_NAME_SOURCE).filter(|s| !s.is_empty()) {
        Some(source) => attrs.put(Cow::Owned(source.into_owned()), service),
        None => attrs.put("service.name", service),
    }
    let mut i = 0;
    while i < tags.0.len() {
        let key = tags.0[i].0.as_ref();
        if is_non_span_attribute(key)
            && !matches!(
                key,
                "otel.library.name"
                    | "otel.library.version"
                    | "otel.scope.name"
                    | "otel.scope.version"
            )
        {
            let (k, v) = tags.0.remove(i);
            let k = if k == "faas.id" {
                Cow::Borrowed("cloud.resource_id")
            } else {
                k
            };
            attrs.put(k, Value::Str(v));
        } else {
            i += 1;
        }
    }
    attrs
}

fn scope_of<'a>(tags: &mut Tags<'a>, name: &str) -> Scope<'a> {
    let mut scope = Scope::default();
    if name.is_empty() {
        return scope;
    }
    for key in ["otel.library.name", "otel.scope.name"] {
        if let Some(v) = tags.take(key) {
            scope.name = v;
        }
    }
    for key in ["otel.library.version", "otel.scope.version"] {
        if let Some(v) = tags.take(key) {
            scope.version = v;
        }
    }
    scope
}

fn span_of<'a>(z: ZSpan<'a>, mut tags: Tags<'a>, options: ZipkinOptions) -> Span<'a> {
    let mut span = Span {
        trace_id: z.trace_id,
        span_id: z.id.to_be_bytes(),
        name: z.name,
        ..Default::default()
    };
    if let Some(ts) = tags.take("w3c.tracestate") {
        span.trace_state = ts;
    }
    if let Some(parent) = z.parent_id.filter(|p| *p != z.id) {
        span.parent_span_id = parent.to_be_bytes();
    }
    span.kind = match z.kind {
        Kind::Client => SpanKind::Client,
        Kind::Server => SpanKind::Server,
        Kind::Producer => SpanKind::Producer,
        Kind::Consumer => SpanKind::Consumer,
        Kind::Other => match tags.take("span.kind") {
            Some(k) if k == "internal" => SpanKind::Internal,
            _ => SpanKind::Unspecified,
        },
    };
    if let Some(code) = tags.take("otel.status_code") {
        span.status_code = match code.as_ref() {
            // The Collector knows the first two spellings; "OK" and "ERROR" are what the
            // specification's Zipkin exporters write (shardtel reads them too).
            "STATUS_CODE_OK" | "Ok" | "OK" => StatusCode::Ok,
            "STATUS_CODE_ERROR" | "Error" | "ERROR" => StatusCode::Error,
            _ => StatusCode::Unset,
        };
        if let Some(message) = tags.take("otel.status_description") {
            span.status_message = message;
        }
    }
    if let Some(error) = tags.get("error") {
        span.status_code = StatusCode::Error;
        if error == "true" {
            tags.take("error");
        }
    }
    for i in 0..128 {
        let key = format!("otlp.link.{i}");
        let Some(value) = tags.get(&key) else { break };
        match link_of(value) {
            LinkTag::Link(link) => {
                span.links.push(link);
                tags.take(&key);
            }
            LinkTag::Dropped => {
                tags.take(&key);
            }
            LinkTag::Invalid => {}
        }
    }
    let mut attrs = Attributes::with_capacity(tags.0.len() + 4);
    for (key, value) in tags.0 {
        if is_non_span_attribute(&key) {
            continue;
        }
        let key = if key == "http.status_code" {
            Cow::Borrowed("http.response.status_code")
        } else {
            key
        };
        let value = if options.parse_string_tags {
            typed_tag(value)
        } else {
            Value::Str(value)
        };
        attrs.put(key, value);
    }
    if let Some(local) = &z.local {
        if let Some(ip) = &local.ipv4 {
            attrs.put("network.local.address", Value::Str(Cow::Owned(ip.clone())));
        }
        if let Some(ip) = &local.ipv6 {
            attrs.put("network.local.address", Value::Str(Cow::Owned(ip.clone())));
        }
        if local.port > 0 {
            attrs.put("net.host.port", Value::Int(i64::from(local.port)));
        }
    }
    if let Some(remote) = z.remote {
        if !remote.service_name.is_empty() {
            attrs.put("service.peer.name", Value::Str(remote.service_name));
        }
        if let Some(ip) = remote.ipv4 {
            attrs.put("network.peer.address", Value::Str(Cow::Owned(ip)));
        }
        if let Some(ip) = remote.ipv6 {
            attrs.put("network.peer.address", Value::Str(Cow::Owned(ip)));
        }
        if remote.port > 0 {
            attrs.put("net.peer.port", Value::Int(i64::from(remote.port)));
        }
    }
    let duration = z.duration.wrapping_mul(1000);
    match z.timestamp {
        None => {
            span.start_time_unix_nano = 0;
            span.end_time_unix_nano = duration;
            attrs.put(START_TIME_ABSENT, Value::Bool(true));
        }
        Some(ts) => {
            let start = ts.wrapping_mul(1000);
            span.start_time_unix_nano = start;
            span.end_time_unix_nano = start.wrapping_add(duration);
        }
    }
    span.attributes = attrs;
    span.events = z
        .annotations
        .into_iter()
        .map(|(ts, value)| event_of(ts.wrapping_mul(1000), value))
        .collect();
    span
}

/// A tag's value typed as the Collector's `parse_string_tags` does.
fn typed_tag(value: Cow<'_, str>) -> Value<'_> {
    let v = value.as_ref();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = v.strip_prefix('-').unwrap_or(v);
    if digits(unsigned) {
        return Value::Int(v.parse().unwrap_or(0));
    }
    if let Some((int, frac)) = unsigned.split_once('.') {
        if digits(int) && digits(frac) {
            return Value::Double(v.parse().unwrap_or(0.0));
        }
    }
    match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::Str(value),
    }
}

/// An annotation: `name`, or `name|{json attributes}|dropped count` as the Collector's
/// exporter encodes an event with attributes.
fn event_of(time_unix_nano: u64, value: Cow<'_, str>) -> Event<'_> {
    let parts: Vec<&str> = value.split('|').collect();
    if parts.len() < 3 {
        let name = Cow::Owned(parts[0].to_string());
        return Event {
            time_unix_nano,
            name,
            ..Default::default()
        };
    }
    let json = parts[1..parts.len() - 1].join("|");
    let decoded = json_attributes(&json).and_then(|attributes| {
        let dropped = parts[parts.len() - 1].parse::<u32>().ok()?;
        Some((attributes, dropped))
    });
    match decoded {
        Some((attributes, dropped_attributes_count)) => Event {
            time_unix_nano,
            name: Cow::Owned(parts[0].to_string()),
            attributes,
            dropped_attributes_count,
        },
        None => Event {
            time_unix_nano,
            name: value,
            ..Default::default()
        },
    }
}

enum LinkTag<'a> {
    Link(Link<'a>),
    /// Fewer than 5 parts: the Collector drops it.
    Dropped,
    /// Unparsable: kept as an attribute.
    Invalid,
}

/// An `otlp.link.N` tag: `traceid|spanid|tracestate|{json attributes}|dropped count`.
fn link_of(value: &str) -> LinkTag<'static> {
    let parts: Vec<&str> = value.split('|').collect();
    if parts.len() < 5 {
        return LinkTag::Dropped;
    }
    let id = |s: &str, out: &mut [u8]| -> Option<()> {
        let s = s
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(s);
        if s.is_empty() {
            return Some(());
        }
        if s.len() != out.len() * 2 {
            return None;
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(())
    };
    let mut link = Link::default();
    let n = parts.len();
    let parsed = (|| {
        id(parts[0], &mut link.trace_id)?;
        id(parts[1], &mut link.span_id)?;
        link.trace_state = Cow::Owned(parts[2].to_string());
        link.attributes = json_attributes(&parts[3..n - 1].join("|"))?;
        link.dropped_attributes_count = parts[n - 1].parse().ok()?;
        Some(())
    })();
    match parsed {
        Some(()) => LinkTag::Link(link),
        None => LinkTag::Invalid,
    }
}

/// A JSON object's strings, numbers (integral ones as ints) and booleans as attributes; other
/// values are left out, as the Collector does.
fn json_attributes(json: &str) -> Option<Attributes<'static>> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).ok()?;
    let mut attrs = Attributes::with_capacity(map.len());
    for (k, v) in map {
        let value = match v {
            serde_json::Value::String(s) => Value::Str(Cow::Owned(s)),
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => {
                let d = n.as_f64().unwrap_or(0.0);
                if d.fract() == 0.0 {
                    Value::Int(d as i64)
                } else {
                    Value::Double(d)
                }
            }
            _ => continue,
        };
        attrs.put(Cow::Owned(k), value);
    }
    Some(attrs)
}

/// An IP address as Go's `net.IP.String()` writes it (IPv4-mapped IPv6 as IPv4).
fn ip_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
    }
}

/// A hex id of at most `max` digits (nothing but ASCII hex digits).
fn hex_id(s: &str, max: usize) -> Option<u64> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// A trace id of at most 32 hex digits (the high 64 bits from the digits before the last 16).
/// Checked to be ASCII hex digits before it is split: a split by bytes inside a multi-byte
/// character would panic.
fn trace_id_from_hex(s: &str) -> Option<[u8; 16]> {
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let split = s.len().saturating_sub(16);
    let high = if split > 0 {
        hex_id(&s[..split], 16)?
    } else {
        0
    };
    let low = hex_id(&s[split..], 16)?;
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&high.to_be_bytes());
    id[8..].copy_from_slice(&low.to_be_bytes());
    Some(id)
}

// ---------------------------------------------------------------------------------------------
// JSON.

/// A string borrowed from the input when it has no escapes.
#[derive(Debug, Default)]
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Str::default())
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// `tags`: an object of strings, in order (a repeated key keeps its last value).
#[derive(Debug, Default)]
struct JsonTags<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for JsonTags<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = JsonTags<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(JsonTags::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut tags = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some((k, v)) = map.next_entry::<Str<'a>, Str<'a>>()? {
                    put_tag(&mut tags, k.0, v.0);
                }
                Ok(JsonTags(tags))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan<'a> {
    #[serde(borrow)]
    trace_id: Option<Str<'a>>,
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    parent_id: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    kind: Option<Str<'a>>,
    timestamp: Option<u64>,
    duration: Option<u64>,
    #[serde(borrow)]
    local_endpoint: Option<JsonEndpoint<'a>>,
    #[serde(borrow)]
    remote_endpoint: Option<JsonEndpoint<'a>>,
    #[serde(borrow)]
    annotations: Option<Vec<JsonAnnotation<'a>>>,
    #[serde(borrow)]
    tags: Option<JsonTags<'a>>,
    #[allow(dead_code)]
    debug: Option<bool>,
    #[allow(dead_code)]
    shared: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonEndpoint<'a> {
    #[serde(borrow)]
    service_name: Option<Str<'a>>,
    #[serde(borrow)]
    ipv4: Option<Str<'a>>,
    #[serde(borrow)]
    ipv6: Option<Str<'a>>,
    port: Option<u16>,
}

#[derive(Deserialize)]
struct JsonAnnotation<'a> {
    timestamp: Option<u64>,
    #[serde(borrow)]
    value: Option<Str<'a>>,
}

impl<'a> JsonSpan<'a> {
    fn into_model(self) -> Result<ZSpan<'a>, String> {
        let trace_id = self.trace_id.unwrap_or_default().0;
        let trace_id = trace_id_from_hex(&trace_id)
            .ok_or_else(|| format!("invalid traceId {trace_id:?} (expected 1 to 32 hex digits)"))?;
        let id = self.id.unwrap_or_default().0;
        let id = match hex_id(&id, 16) {
            Some(id) if id != 0 => id,
            _ => {
                return Err(format!(
                    "invalid id {id:?} (expected 1 to 16 hex digits, not 0)"
                ))
            }
        };
        let parent_id = match self.parent_id {
            None => None,
            Some(p) if p.0.is_empty() => Some(0),
            Some(p) => Some(hex_id(&p.0, 16).ok_or_else(|| {
                format!("invalid parentId {:?} (expected 1 to 16 hex digits)", p.0)
            })?),
        };
        let kind = match self.kind.as_ref().map(|k| k.0.as_ref()) {
            Some("CLIENT") => Kind::Client,
            Some("SERVER") => Kind::Server,
            Some("PRODUCER") => Kind::Producer,
            Some("CONSUMER") => Kind::Consumer,
            _ => Kind::Other,
        };
        let mut annotations = Vec::new();
        for (i, a) in self.annotations.unwrap_or_default().into_iter().enumerate() {
            let ts = a.timestamp.unwrap_or(0);
            if ts < 1 {
                return Err(format!("annotation {i}: a timestamp is required"));
            }
            annotations.push((ts, a.value.unwrap_or_default().0));
        }
        Ok(ZSpan {
            trace_id,
            id,
            parent_id,
            name: self.name.unwrap_or_default().0,
            kind,
            timestamp: self.timestamp.filter(|t| *t > 0),
            duration: self.duration.unwrap_or(0),
            local: self
                .local_endpoint
                .map(|e| e.into_model("localEndpoint"))
                .transpose()?,
            remote: self
                .remote_endpoint
                .map(|e| e.into_model("remoteEndpoint"))
                .transpose()?,
            annotations,
            tags: self.tags.unwrap_or_default().0,
        })
    }
}

impl<'a> JsonEndpoint<'a> {
    fn into_model(self, which: &str) -> Result<Endpoint<'a>, String> {
        let ip = |field: &str, s: Option<Str<'a>>| -> Result<Option<String>, String> {
            match s {
                Some(s) if !s.0.is_empty() => {
                    s.0.parse::<IpAddr>()
                        .map(|ip| Some(ip_string(ip)))
                        .map_err(|_| format!("{which}.{field}: invalid IP address {:?}", s.0))
                }
                _ => Ok(None),
            }
        };
        Ok(Endpoint {
            service_name: self.service_name.unwrap_or_default().0,
            ipv4: ip("ipv4", self.ipv4)?,
            ipv6: ip("ipv6", self.ipv6)?,
            port: self.port.unwrap_or(0),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Protobuf (zipkin.proto3).

fn utf8<'a>(buf: &'a [u8], range: std::ops::Range<usize>, what: &str) -> Result<&'a str, String> {
    std::str::from_utf8(&buf[range]).map_err(|_| format!("{what} is not valid UTF-8"))
}

fn proto_span(buf: &[u8], range: std::ops::Range<usize>) -> Result<ZSpan<'_>, String> {
    let mut span = ZSpan {
        trace_id: [0; 16],
        id: 0,
        parent_id: None,
        name: Cow::Borrowed(""),
        kind: Kind::Other,
        timestamp: Some(0),
        duration: 0,
        local: None,
        remote: None,
        annotations: Vec::new(),
        tags: Vec::new(),
    };
    let mut trace_id_len = 0;
    let mut id_seen = false;
    let mut r = Reader::nested(buf, range);
    while let Some(field) = r.next_field() {
        let (key, value) = field.map_err(|e| e.to_string())?;
        match (key.field, value) {
            (1, WireValue::Len(b)) => {
                trace_id_len = b.len();
                match b.len() {
                    16 => span.trace_id.copy_from_slice(&buf[b]),
                    8 => span.trace_id[8..].copy_from_slice(&buf[b]),
                    n => return Err(format!("trace_id has {n} bytes (expected 16 or 8)")),
                }
            }
            (2, WireValue::Len(b)) => match b.len() {
                0 => span.parent_id = None,
                8 => {
                    span.parent_id = Some(u64::from_be_bytes(buf[b].try_into().unwrap_or_default()))
                }
                n => return Err(format!("parent_id has {n} bytes (expected 8)")),
            },
            (3, WireValue::Len(b)) => match b.len() {
                0 => id_seen = false,
                8 => {
                    id_seen = true;
                    span.id = u64::from_be_bytes(buf[b].try_into().unwrap_or_default());
                }
                n => return Err(format!("id has {n} bytes (expected 8)")),
            },
            (4, WireValue::Varint(k)) => {
                span.kind = match k {
                    1 => Kind::Client,
                    2 => Kind::Server,
                    3 => Kind::Producer,
                    4 => Kind::Consumer,
                    _ => Kind::Other,
                }
            }
            (5, WireValue::Len(b)) => span.name = Cow::Borrowed(utf8(buf, b, "name")?),
            (6, WireValue::I64(t)) => span.timestamp = Some(t),
            (7, WireValue::Varint(d)) => span.duration = d,
            (8, WireValue::Len(b)) => span.local = Some(proto_endpoint(buf, b)?),
            (9, WireValue::Len(b)) => span.remote = Some(proto_endpoint(buf, b)?),
            (10, WireValue::Len(b)) => {
                let mut ts = 0;
                let mut value = "";
                let mut a = Reader::nested(buf, b);
                while let Some(field) = a.next_field() {
                    match field.map_err(|e| e.to_string())? {
                        (k, WireValue::I64(t)) if k.field == 1 => ts = t,
                        (k, WireValue::Len(v)) if k.field == 2 => {
                            value = utf8(buf, v, "annotation value")?
                        }
                        _ => {}
                    }
                }
                span.annotations.push((ts, Cow::Borrowed(value)));
            }
            (11, WireValue::Len(b)) => {
                let (mut k, mut v) = ("", "");
                let mut e = Reader::nested(buf, b);
                while let Some(field) = e.next_field() {
                    match field.map_err(|e| e.to_string())? {
                        (key, WireValue::Len(r)) if key.field == 1 => k = utf8(buf, r, "tag key")?,
                        (key, WireValue::Len(r)) if key.field == 2 => {
                            v = utf8(buf, r, "tag value")?
                        }
                        _ => {}
                    }
                }
                put_tag(&mut span.tags, Cow::Borrowed(k), Cow::Borrowed(v));
            }
            _ => {}
        }
    }
    if trace_id_len == 0 {
        return Err("trace_id is missing".into());
    }
    if !id_seen {
        return Err("id is missing".into());
    }
    Ok(span)
}

fn proto_endpoint(buf: &[u8], range: std::ops::Range<usize>) -> Result<Endpoint<'_>, String> {
    let mut e = Endpoint::default();
    let ip = |b: &[u8]| -> Option<String> {
        match b.len() {
            0 => None,
            4 => Some(ip_string(IpAddr::from(<[u8; 4]>::try_from(b).ok()?))),
            16 => Some(ip_string(IpAddr::from(<[u8; 16]>::try_from(b).ok()?))),
            // Go's net.IP.String() of a malformed address.
            _ => Some(format!(
                "?{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            )),
        }
    };
    let mut r = Reader::nested(buf, range);
    while let Some(field) = r.next_field() {
        match field.map_err(|e| e.to_string())? {
            (k, WireValue::Len(b)) if k.field == 1 => {
                e.service_name = Cow::Borrowed(utf8(buf, b, "service_name")?)
            }
            (k, WireValue::Len(b)) if k.field == 2 => e.ipv4 = ip(&buf[b]),
            (k, WireValue::Len(b)) if k.field == 3 => e.ipv6 = ip(&buf[b]),
            (k, WireValue::Varint(p)) if k.field == 4 => e.port = p as u16,
            _ => {}
        }
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::collector::trace::v1::ExportTraceServiceRequest;
    use crate::proto::common::v1::{any_value, AnyValue, KeyValue};
    use prost::Message;

    const SPEC_EXAMPLE: &[u8] = include_bytes!("../../../tests/fixtures/zipkin/spec-example.json");
    const FEATURES: &[u8] = include_bytes!("../../../tests/fixtures/zipkin/features.json");

    fn decode(t: &Translated) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest::decode(&t.request[..]).unwrap()
    }

    fn s(v: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        })
    }

    fn i(v: i64) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        })
    }

    fn kv(key: &str, value: Option<AnyValue>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn the_spec_example_maps_as_the_collector_maps_it() {
        let t = json_v2_to_otlp(SPEC_EXAMPLE, ZipkinOptions::default()).unwrap();
        assert_eq!(t.items, 1);
        let req = decode(&t);
        let rs = &req.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes,
            [kv("service.name", s("backend"))]
        );
        let span = &rs.scope_spans[0].spans[0];
        assert_eq!(hex(&span.trace_id), "00000000000000005af7183fb1d4cf5f");
        assert_eq!(hex(&span.span_id), "352bff9a74ca9ad2");
        assert_eq!(hex(&span.parent_span_id), "6b221d5bc9e6496c");
        assert_eq!(span.name, "get /api");
        assert_eq!(span.kind, 2);
        assert_eq!(span.start_time_unix_nano, 1_556_604_172_355_737_000);
        assert_eq!(span.end_time_unix_nano, 1_556_604_172_357_168_000);
        assert_eq!(
            span.attributes,
            [
                kv("http.method", s("GET")),
                kv("http.path", s("/api")),
                kv("network.local.address", s("192.168.99.1")),
                kv("net.host.port", i(3306)),
                kv("network.peer.address", s("172.19.0.2")),
                kv("net.peer.port", i(58648)),
            ]
        );
        assert_eq!(span.status.as_ref().unwrap().code, 0);
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn resources_scopes_status_links_and_events() {
        let t = json_v2_to_otlp(FEATURES, ZipkinOptions::default()).unwrap();
        assert_eq!(t.items, 4);
        let req = decode(&t);
        // Sorted by service: "OTLPResourceNoServiceName" < "frontend" < "orders".
        let services: Vec<_> = req
            .resource_spans
            .iter()
            .map(|rs| rs.resource.as_ref().unwrap().attributes.clone())
            .collect();
        assert_eq!(services[0], []);
        assert_eq!(services[1][0], kv("service.name", s("frontend")));
        // The first frontend span (scope ""), is "cache get": its resource has no host.name.
        assert_eq!(services[1].len(), 1);
        assert_eq!(services[2], [kv("service.name", s("orders"))]);
        let frontend = &req.resource_spans[1];
        assert_eq!(frontend.scope_spans.len(), 2);
        assert_eq!(frontend.scope_spans[0].scope.as_ref().unwrap().name, "");
        let scope = frontend.scope_spans[1].scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("orders-client", "1.2.0")
        );
        let cache = &frontend.scope_spans[0].spans[0];
        assert_eq!(cache.name, "cache get");
        assert!(
            cache.parent_span_id.is_empty(),
            "a parent equal to the span id is none"
        );
        assert_eq!(hex(&cache.trace_id), "00000000000000004d1df8d1d2fd7b3d");
        assert_eq!(cache.kind, 4);
        assert_eq!(cache.status.as_ref().unwrap().code, 2);
        assert_eq!(cache.attributes, [kv("cache.hit", s("true"))]);

        let post = &frontend.scope_spans[1].spans[0];
        assert_eq!(post.kind, 3);
        assert_eq!(post.trace_state, "vendor=1");
        let status = post.status.as_ref().unwrap();
        assert_eq!(
            (status.code, status.message.as_str()),
            (2, "upstream unavailable")
        );
        // host.name is a resource convention: not a span attribute (dropped after the group's
        // first span, as the Collector does).
        assert_eq!(
            post.attributes,
            [
                kv("http.response.status_code", s("503")),
                kv("user.id", s("u-17")),
                kv("network.local.address", s("2001:db8::1")),
                kv("net.host.port", i(8080)),
                kv("service.peer.name", s("orders")),
                kv("network.peer.address", s("10.0.0.7")),
                kv("net.peer.port", i(443)),
            ]
        );
        assert_eq!(post.links.len(), 1);
        let link = &post.links[0];
        assert_eq!(hex(&link.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(link.trace_state, "k=v");
        assert_eq!(link.attributes, [kv("link.kind", s("retry"))]);
        assert_eq!(post.events.len(), 2);
        assert_eq!(post.events[0].name, "wire send");
        assert_eq!(post.events[0].time_unix_nano, 1_700_000_000_000_100_000);
        let retry = &post.events[1];
        assert_eq!(retry.name, "retry");
        assert_eq!(retry.dropped_attributes_count, 1);
        assert_eq!(
            retry.attributes,
            [
                kv("attempt", i(2)),
                kv(
                    "ok",
                    Some(AnyValue {
                        value: Some(any_value::Value::BoolValue(false))
                    })
                ),
                kv(
                    "ratio",
                    Some(AnyValue {
                        value: Some(any_value::Value::DoubleValue(0.5))
                    })
                ),
                kv("why", s("timeout")),
            ]
        );

        let db = &req.resource_spans[2].scope_spans[0].spans[0];
        assert_eq!(db.kind, 1, "span.kind=internal");
        assert_eq!(db.start_time_unix_nano, 0);
        assert_eq!(db.end_time_unix_nano, 300_000);
        let status = db.status.as_ref().unwrap();
        assert_eq!(status.code, 2, "an error tag of any value is an error");
        assert_eq!(
            db.attributes,
            [
                kv("error", s("timeout")),
                kv("db.system", s("postgresql")),
                kv(
                    START_TIME_ABSENT,
                    Some(AnyValue {
                        value: Some(any_value::Value::BoolValue(true))
                    })
                ),
            ]
        );
        let anonymous = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(anonymous.status.as_ref().unwrap().code, 1);
        assert_eq!(anonymous.kind, 5);
    }

    #[test]
    fn typed_tags_follow_the_collectors_patterns() {
        let body = br#"[{"traceId":"1","id":"2","timestamp":1,"tags":{"a":"42","b":"-1.5","c":"true","d":"1e3","e":"","f":"99999999999999999999"}}]"#;
        let t = json_v2_to_otlp(
            body,
            ZipkinOptions {
                parse_string_tags: true,
            },
        )
        .unwrap();
        let span = &decode(&t).resource_spans[0].scope_spans[0].spans[0];
        let values: Vec<_> = span
            .attributes
            .iter()
            .map(|kv| kv.value.clone().unwrap().value.unwrap())
            .collect();
        assert_eq!(
            values,
            [
                any_value::Value::IntValue(42),
                any_value::Value::DoubleValue(-1.5),
                any_value::Value::BoolValue(true),
                any_value::Value::StringValue("1e3".into()),
                any_value::Value::StringValue("".into()),
                // Out of range: 0, as Go's ignored parse error leaves it.
                any_value::Value::IntValue(0),
            ]
        );
    }

    #[test]
    fn bad_spans_are_named_in_the_error() {
        let cases: [(&[u8], &str); 10] = [
            (b"{}", "invalid zipkin json"),
            (
                b"[{\"traceId\":\"xyz\",\"id\":\"1\"}]",
                "span 0: invalid traceId",
            ),
            // A multi-byte character where a 17-32 digit id is split (this panicked).
            (
                "[{\"traceId\":\"\u{e9}23456789abcdef0\",\"id\":\"1\"}]".as_bytes(),
                "span 0: invalid traceId",
            ),
            (
                "[{\"traceId\":\"123456789abcdef0\u{e9}\",\"id\":\"1\"}]".as_bytes(),
                "span 0: invalid traceId",
            ),
            (
                b"[{\"traceId\":\"+1\",\"id\":\"1\"}]",
                "span 0: invalid traceId",
            ),
            (
                b"[{\"traceId\":\"1\",\"id\":\"1\"},{\"traceId\":\"1\"}]",
                "span 1: invalid id",
            ),
            (b"[{\"traceId\":\"1\",\"id\":\"0\"}]", "span 0: invalid id"),
            (
                b"[{\"traceId\":\"1\",\"id\":\"1\",\"localEndpoint\":{\"ipv4\":\"300.1.1.1\"}}]",
                "localEndpoint.ipv4: invalid IP address",
            ),
            (
                b"[{\"traceId\":\"1\",\"id\":\"1\",\"annotations\":[{\"value\":\"x\"}]}]",
                "annotation 0: a timestamp is required",
            ),
            (
                b"[{\"traceId\":\"1\",\"id\":\"1\",\"tags\":{\"a\":1}}]",
                "invalid zipkin json",
            ),
        ];
        for (body, expected) in cases {
            let err = json_v2_to_otlp(body, ZipkinOptions::default()).unwrap_err();
            assert!(
                err.to_string().contains(expected),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
        // An annotation whose attributes do not parse keeps its whole value as its name.
        let body = br#"[{"traceId":"1","id":"1","annotations":[{"timestamp":5,"value":"a|b|c"}]}]"#;
        let t = json_v2_to_otlp(body, ZipkinOptions::default()).unwrap();
        let span = &decode(&t).resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.events[0].name, "a|b|c");
    }

    /// zipkin.proto3, for the tests.
    mod zpb {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct ListOfSpans {
            #[prost(message, repeated, tag = "1")]
            pub spans: Vec<Span>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Span {
            #[prost(bytes = "vec", tag = "1")]
            pub trace_id: Vec<u8>,
            #[prost(bytes = "vec", tag = "2")]
            pub parent_id: Vec<u8>,
            #[prost(bytes = "vec", tag = "3")]
            pub id: Vec<u8>,
            #[prost(int32, tag = "4")]
            pub kind: i32,
            #[prost(string, tag = "5")]
            pub name: String,
            #[prost(fixed64, tag = "6")]
            pub timestamp: u64,
            #[prost(uint64, tag = "7")]
            pub duration: u64,
            #[prost(message, optional, tag = "8")]
            pub local_endpoint: Option<Endpoint>,
            #[prost(message, optional, tag = "9")]
            pub remote_endpoint: Option<Endpoint>,
            #[prost(message, repeated, tag = "10")]
            pub annotations: Vec<Annotation>,
            #[prost(btree_map = "string, string", tag = "11")]
            pub tags: std::collections::BTreeMap<String, String>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Endpoint {
            #[prost(string, tag = "1")]
            pub service_name: String,
            #[prost(bytes = "vec", tag = "2")]
            pub ipv4: Vec<u8>,
            #[prost(bytes = "vec", tag = "3")]
            pub ipv6: Vec<u8>,
            #[prost(int32, tag = "4")]
            pub port: i32,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Annotation {
            #[prost(fixed64, tag = "1")]
            pub timestamp: u64,
            #[prost(string, tag = "2")]
            pub value: String,
        }
    }

    #[test]
    fn protobuf_spans_translate_like_their_json() {
        let proto = zpb::ListOfSpans {
            spans: vec![zpb::Span {
                trace_id: [
                    0, 0, 0, 0, 0, 0, 0, 0, 0x5a, 0xf7, 0x18, 0x3f, 0xb1, 0xd4, 0xcf, 0x5f,
                ]
                .to_vec(),
                parent_id: 0x6b22_1d5b_c9e6_496cu64.to_be_bytes().to_vec(),
                id: 0x352b_ff9a_74ca_9ad2u64.to_be_bytes().to_vec(),
                kind: 2,
                name: "get /api".into(),
                timestamp: 1_556_604_172_355_737,
                duration: 1431,
                local_endpoint: Some(zpb::Endpoint {
                    service_name: "backend".into(),
                    ipv4: vec![192, 168, 99, 1],
                    port: 3306,
                    ..Default::default()
                }),
                remote_endpoint: Some(zpb::Endpoint {
                    ipv4: vec![172, 19, 0, 2],
                    port: 58648,
                    ..Default::default()
                }),
                annotations: Vec::new(),
                tags: [("http.method", "GET"), ("http.path", "/api")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }],
        };
        let from_proto = proto_to_otlp(&proto.encode_to_vec(), ZipkinOptions::default()).unwrap();
        let from_json = json_v2_to_otlp(SPEC_EXAMPLE, ZipkinOptions::default()).unwrap();
        assert_eq!(decode(&from_proto), decode(&from_json));

        let mut bad = proto.clone();
        bad.spans[0].trace_id = vec![1; 5];
        let err = proto_to_otlp(&bad.encode_to_vec(), ZipkinOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "span 0: trace_id has 5 bytes (expected 16 or 8)"
        );
        let err = proto_to_otlp(&[0x0a, 0x05, 1], ZipkinOptions::default()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = json_v2_to_otlp(&bytes, ZipkinOptions::default());
            let _ = proto_to_otlp(&bytes, ZipkinOptions { parse_string_tags: true });
        }
    }
}
