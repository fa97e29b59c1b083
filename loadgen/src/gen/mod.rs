//! Request generation from pre-built variations.
//!
//! At start-up [`TemplateSet::build`] encodes K template groups once with prost (see
//! [`traces`], [`metrics`], [`logs`]). A [`Generator`] then produces each request by
//! copying a template and patching ids, sequence numbers and timestamps in place at
//! recorded byte offsets ([`patch`]); [`BodyEncoder`] adds compression, gRPC framing or
//! OTLP/JSON. No protobuf encoding happens per request (JSON is the exception: it is
//! converted from the patched protobuf).
//!
//! A *group* is `pieces` consecutive requests that together hold whole traces. Without
//! `--split-traces` a group is one request. With it, each trace's spans are cut into
//! pieces spread over the group's requests (which go out on different connections), and
//! each request mixes pieces of many traces.
//!
//! Span ids carry the run id, the worker and a per-worker sequence number
//! ([`IdScheme`]), which is how `--verify` recognises what arrived.

pub mod json;
pub mod logs;
pub mod metrics;
pub mod patch;
pub mod traces;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use bytes::{BufMut, Bytes, BytesMut};

use crate::rng::{mix64, LatencyDistribution, Rng};
use crate::wire::{self, Compression, Signal};
use patch::{write_seq_varint, TimePatch, NO_OFFSET};

/// What generated requests look like.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Which signal.
    pub signal: Signal,
    /// Items (spans, points or records) per request.
    pub items_per_request: u32,
    /// Spans per trace, inclusive range.
    pub spans_per_trace: (u32, u32),
    /// Requests a trace group is spread over (1 = whole traces per request).
    pub pieces: u32,
    /// Descriptive attributes per span, point or record.
    pub attributes: u32,
    /// Length of generated string attribute values, in bytes.
    pub attribute_size: u32,
    /// Share of spans with status ERROR (logs: share of ERROR records).
    pub error_ratio: f64,
    /// Span durations.
    pub latency: LatencyDistribution,
    /// Share of traces whose spans all carry `user.id = "vip"`.
    pub vip_share: f64,
    /// Number of template groups (pre-built variations).
    pub templates: u32,
    /// Seed for everything random in the templates.
    pub seed: u64,
    /// Also build OTLP/JSON templates (for `--protocol http-json`).
    pub json: bool,
}

impl Shape {
    /// Spans (items) in one group.
    pub fn items_per_group(&self) -> u32 {
        self.items_per_request * self.pieces
    }
}

/// One pre-encoded request with its patch sites.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    /// The encoded `Export*ServiceRequest` holding placeholders.
    pub protobuf: Vec<u8>,
    /// Items in this request.
    pub items: u32,
    /// Timestamps to rewrite.
    pub times: Vec<TimePatch>,
    /// Spans to give ids and sequence numbers (traces only).
    pub spans: Vec<SpanPatch>,
    /// The same request in OTLP/JSON, when JSON bodies were asked for.
    pub json: Option<json::JsonTemplate>,
}

impl RequestTemplate {
    /// Adds the OTLP/JSON form of this template, given its placeholder values.
    pub fn with_json(
        mut self,
        signal: Signal,
        values: &json::PlaceholderValues<'_>,
    ) -> Result<Self> {
        let text = wire::protobuf_to_json(signal, &self.protobuf)?;
        self.json = Some(json::locate(text, values)?);
        Ok(self)
    }
}

/// Patch sites of one span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanPatch {
    /// Offset of the 16-byte trace id.
    pub trace_id_at: u32,
    /// Offset of the 8-byte span id.
    pub span_id_at: u32,
    /// Offset of the 8-byte parent span id, [`NO_OFFSET`] for a root.
    pub parent_span_id_at: u32,
    /// Offset of the 7-byte varint of the `loadgen.seq` attribute.
    pub seq_at: u32,
    /// Index of the span's trace within its group.
    pub trace: u32,
    /// Index of the span within its group: its sequence number offset.
    pub slot: u32,
    /// Slot of the parent span (meaningless for a root).
    pub parent_slot: u32,
}

/// `pieces` template requests that together hold whole traces.
#[derive(Debug, Clone)]
pub struct GroupTemplate {
    /// The group's requests, sent in this order.
    pub requests: Vec<RequestTemplate>,
    /// For each span slot of the group, the index of its trace (traces only).
    pub trace_of_slot: Vec<u32>,
    /// Number of traces in the group.
    pub traces: u32,
}

/// All pre-built variations of one run, shared by the workers.
#[derive(Debug)]
pub struct TemplateSet {
    /// The shape they were built for.
    pub shape: Shape,
    /// K groups; a generator picks one at random per group it emits.
    pub groups: Vec<GroupTemplate>,
}

impl TemplateSet {
    /// Encodes `shape.templates` groups and checks that patching them yields valid
    /// messages carrying the patched values.
    pub fn build(shape: &Shape) -> Result<Arc<Self>> {
        if shape.items_per_request == 0 {
            bail!("items per request must be at least 1");
        }
        if shape.pieces == 0 || shape.pieces > shape.items_per_request {
            bail!("--split-traces pieces must be between 1 and the items per request");
        }
        let mut rng = Rng::new(shape.seed);
        let mut groups = Vec::with_capacity(shape.templates.max(1) as usize);
        for k in 0..shape.templates.max(1) {
            let group_seed = rng.next_u64();
            let group = match shape.signal {
                Signal::Traces => traces::build_group(shape, group_seed)?,
                Signal::Metrics => metrics::build_group(shape, group_seed)?,
                Signal::Logs => logs::build_group(shape, group_seed)?,
            };
            debug_assert_eq!(group.requests.len() as u32, shape.pieces, "template {k}");
            groups.push(group);
        }
        let set = Self {
            shape: shape.clone(),
            groups,
        };
        set.self_check()?;
        Ok(Arc::new(set))
    }

    /// Patches every template with known values and decodes the result with prost.
    fn self_check(&self) -> Result<()> {
        let ids = IdScheme {
            run_id: 0xBEEF,
            worker: 3,
        };
        for (k, group) in self.groups.iter().enumerate() {
            let group_index = 5 + k as u64;
            let trace_ids = ids.trace_ids(group_index, self.shape.items_per_group(), group.traces);
            let base = 1_700_000_000_000_000_000;
            for req in &group.requests {
                let mut buf = req.protobuf.clone();
                let seq_base = group_index * u64::from(self.shape.items_per_group());
                patch_request(&mut buf, req, base, &ids, seq_base, &trace_ids);
                match self.shape.signal {
                    Signal::Traces => traces::check_patched(&buf, req, &ids, seq_base, &trace_ids)?,
                    Signal::Metrics => metrics::check_patched(&buf, req.items, base)?,
                    Signal::Logs => logs::check_patched(&buf, req.items, base)?,
                }
                if let Some(j) = &req.json {
                    let mut text = j.text.clone();
                    json::patch(&mut text, j, base, &ids, seq_base, &trace_ids);
                    let from_json = wire::json_to_protobuf(self.shape.signal, &text)?;
                    if !same_message(self.shape.signal, &from_json, &buf)? {
                        bail!("json template {k} does not match its protobuf template");
                    }
                }
            }
        }
        Ok(())
    }

    /// Items per request.
    pub fn items_per_request(&self) -> u32 {
        self.shape.items_per_request
    }
}

/// Whether two encodings hold the same `Export*ServiceRequest`.
fn same_message(signal: Signal, a: &[u8], b: &[u8]) -> Result<bool> {
    use opentelemetry_proto::tonic::collector::{logs, metrics, trace};
    use prost::Message;
    Ok(match signal {
        Signal::Traces => {
            // OTLP/JSON writers emit an empty status as `"status":{}`, read back as
            // `Some(Status::default())`: the same thing as no status.
            let normal = |buf: &[u8]| -> Result<trace::v1::ExportTraceServiceRequest> {
                let mut m = trace::v1::ExportTraceServiceRequest::decode(buf)?;
                for span in m
                    .resource_spans
                    .iter_mut()
                    .flat_map(|r| r.scope_spans.iter_mut().flat_map(|s| s.spans.iter_mut()))
                {
                    if span.status == Some(Default::default()) {
                        span.status = None;
                    }
                }
                Ok(m)
            };
            normal(a)? == normal(b)?
        }
        Signal::Metrics => {
            metrics::v1::ExportMetricsServiceRequest::decode(a)?
                == metrics::v1::ExportMetricsServiceRequest::decode(b)?
        }
        Signal::Logs => {
            logs::v1::ExportLogsServiceRequest::decode(a)?
                == logs::v1::ExportLogsServiceRequest::decode(b)?
        }
    })
}

/// How span and trace ids are made: run id, worker and sequence number.
///
/// span_id = run id (2 bytes) ‖ worker (1 byte) ‖ per-worker sequence number (5 bytes),
/// all big-endian. The `loadgen.seq` attribute carries `worker << 40 | sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdScheme {
    /// Distinguishes this run's spans from other runs'.
    pub run_id: u16,
    /// Worker index.
    pub worker: u8,
}

/// The highest per-worker sequence number (40 bits).
pub const MAX_LOCAL_SEQ: u64 = (1 << 40) - 1;

impl IdScheme {
    /// The span id of per-worker sequence number `seq`.
    #[inline]
    pub fn span_id(&self, seq: u64) -> [u8; 8] {
        debug_assert!(seq <= MAX_LOCAL_SEQ);
        let v = (u64::from(self.run_id) << 48) | (u64::from(self.worker) << 40) | seq;
        v.to_be_bytes()
    }

    /// The `loadgen.seq` attribute value of per-worker sequence number `seq`.
    #[inline]
    pub fn attribute_seq(&self, seq: u64) -> u64 {
        (u64::from(self.worker) << 40) | seq
    }

    /// Splits a span id into (run id, worker, sequence number).
    pub fn parse_span_id(id: &[u8; 8]) -> (u16, u8, u64) {
        let v = u64::from_be_bytes(*id);
        ((v >> 48) as u16, (v >> 40) as u8, v & MAX_LOCAL_SEQ)
    }

    /// The trace ids of group `group`: unique per (run, worker, group, trace) and
    /// random-looking in their last 8 bytes.
    pub fn trace_ids(&self, group: u64, items_per_group: u32, traces: u32) -> Vec<[u8; 16]> {
        let mut out = Vec::with_capacity(traces as usize);
        self.fill_trace_ids(group, items_per_group, traces, &mut out);
        out
    }

    /// Like [`IdScheme::trace_ids`], reusing `out`.
    pub fn fill_trace_ids(
        &self,
        group: u64,
        items_per_group: u32,
        traces: u32,
        out: &mut Vec<[u8; 16]>,
    ) {
        out.clear();
        let first = group * u64::from(items_per_group);
        let head = (u64::from(self.run_id) << 48) | (u64::from(self.worker) << 40);
        for t in 0..u64::from(traces) {
            let hi = head | ((first + t) & MAX_LOCAL_SEQ);
            let lo = mix64(hi ^ 0x7261_6e64_6f6d_2121);
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&hi.to_be_bytes());
            id[8..].copy_from_slice(&lo.to_be_bytes());
            out.push(id);
        }
    }
}

/// Rewrites the per-request fields of a copy of `tpl` held in `buf`.
#[inline]
pub fn patch_request(
    buf: &mut [u8],
    tpl: &RequestTemplate,
    base_ns: u64,
    ids: &IdScheme,
    seq_base: u64,
    trace_ids: &[[u8; 16]],
) {
    patch::patch_times(buf, &tpl.times, base_ns);
    for s in &tpl.spans {
        let seq = seq_base + u64::from(s.slot);
        let t = s.trace_id_at as usize;
        buf[t..t + 16].copy_from_slice(&trace_ids[s.trace as usize]);
        let a = s.span_id_at as usize;
        buf[a..a + 8].copy_from_slice(&ids.span_id(seq));
        if s.parent_span_id_at != NO_OFFSET {
            let p = s.parent_span_id_at as usize;
            buf[p..p + 8].copy_from_slice(&ids.span_id(seq_base + u64::from(s.parent_slot)));
        }
        write_seq_varint(buf, s.seq_at as usize, ids.attribute_seq(seq));
    }
}

/// Wall-clock now in nanoseconds since the Unix epoch.
pub fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// How request bodies go on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyEncoder {
    /// Signal (needed for JSON conversion).
    pub signal: Signal,
    /// Prefix each body with the 5-byte gRPC frame header.
    pub grpc: bool,
    /// Send OTLP/JSON instead of protobuf.
    pub json: bool,
    /// Body compression.
    pub compression: Compression,
    /// Compression level.
    pub level: i32,
}

/// One request ready to send.
#[derive(Debug, Clone)]
pub struct GeneratedRequest {
    /// The encoded body.
    pub body: Bytes,
    /// Items (spans, points, records) in it.
    pub items: u32,
    /// The worker-local request index (group × pieces + piece).
    pub index: u64,
}

/// Emits requests for one worker from a shared [`TemplateSet`].
pub struct Generator {
    set: Arc<TemplateSet>,
    ids: IdScheme,
    encoder: BodyEncoder,
    rng: Rng,
    next_group: u64,
    current_template: usize,
    next_piece: u32,
    base_ns: u64,
    trace_ids: Vec<[u8; 16]>,
    scratch: Vec<u8>,
    compressed: Vec<u8>,
    compressor: wire::Compressor,
    /// For each emitted group, the index of the template it used (the verify ledger
    /// derives trace membership from it).
    group_templates: Vec<u16>,
}

impl Generator {
    /// A generator for worker `ids.worker`.
    pub fn new(
        set: Arc<TemplateSet>,
        ids: IdScheme,
        encoder: BodyEncoder,
        seed: u64,
    ) -> Result<Self> {
        let pieces = set.shape.pieces;
        Ok(Self {
            compressor: wire::Compressor::new(encoder.compression, encoder.level)?,
            set,
            ids,
            encoder,
            rng: Rng::new(seed ^ (u64::from(ids.worker) << 32) ^ 0x6765_6e65_7261_7465),
            next_group: 0,
            current_template: 0,
            next_piece: pieces,
            base_ns: 0,
            trace_ids: Vec::new(),
            scratch: Vec::new(),
            compressed: Vec::new(),
            group_templates: Vec::new(),
        })
    }

    /// Gives up the group ledger.
    pub fn into_group_templates(self) -> Vec<u16> {
        self.group_templates
    }

    /// Patches a copy of `tpl` (its JSON text when JSON bodies are on and it has one).
    fn patch_into(&self, buf: &mut [u8], tpl: &RequestTemplate, base_ns: u64, seq_base: u64) {
        match (self.encoder.json, &tpl.json) {
            (true, Some(j)) => json::patch(buf, j, base_ns, &self.ids, seq_base, &self.trace_ids),
            _ => patch_request(buf, tpl, base_ns, &self.ids, seq_base, &self.trace_ids),
        }
    }

    /// Produces the next request.
    pub fn next_request(&mut self) -> Result<GeneratedRequest> {
        let pieces = self.set.shape.pieces;
        let per_group = self.set.shape.items_per_group();
        if self.next_piece >= pieces {
            let group = self.next_group;
            if (group + 1) * u64::from(per_group) > MAX_LOCAL_SEQ {
                bail!("sequence numbers exhausted for worker {}", self.ids.worker);
            }
            self.next_group += 1;
            self.next_piece = 0;
            self.current_template = (self.rng.next_u64() % self.set.groups.len() as u64) as usize;
            self.group_templates.push(self.current_template as u16);
            self.base_ns = unix_nanos_now();
            if self.set.shape.signal == Signal::Traces {
                let traces = self.set.groups[self.current_template].traces;
                self.ids
                    .fill_trace_ids(group, per_group, traces, &mut self.trace_ids);
            }
        }
        let group = self.next_group - 1;
        let piece = self.next_piece;
        self.next_piece += 1;
        let seq_base = group * u64::from(per_group);
        let tpl = &self.set.groups[self.current_template].requests[piece as usize];
        let enc = self.encoder;
        // Metrics and logs: timestamps follow each request, not its group.
        let base_ns = if enc.signal == Signal::Traces {
            self.base_ns
        } else {
            unix_nanos_now()
        };
        let prefix = if enc.grpc { 5 } else { 0 };
        let body = if enc.compression == Compression::None {
            let text = match (enc.json, &tpl.json) {
                (true, Some(j)) => &j.text,
                _ => &tpl.protobuf,
            };
            let mut out = BytesMut::with_capacity(prefix + text.len());
            if enc.grpc {
                out.put_slice(&wire::grpc_frame_header(false, text.len()));
            }
            out.put_slice(text);
            self.patch_into(&mut out[prefix..], tpl, base_ns, seq_base);
            if enc.json && tpl.json.is_none() {
                Bytes::from(wire::protobuf_to_json(enc.signal, &out)?)
            } else {
                out.freeze()
            }
        } else {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            match (enc.json, &tpl.json) {
                (true, Some(j)) => scratch.extend_from_slice(&j.text),
                _ => scratch.extend_from_slice(&tpl.protobuf),
            }
            self.patch_into(&mut scratch, tpl, base_ns, seq_base);
            if enc.json && tpl.json.is_none() {
                scratch = wire::protobuf_to_json(enc.signal, &scratch)?;
            }
            self.compressed.clear();
            self.compressed.resize(prefix, 0);
            self.compressor.compress(&scratch, &mut self.compressed)?;
            if enc.grpc {
                let header = wire::grpc_frame_header(true, self.compressed.len() - 5);
                self.compressed[..5].copy_from_slice(&header);
            }
            self.scratch = scratch;
            Bytes::copy_from_slice(&self.compressed)
        };
        Ok(GeneratedRequest {
            body,
            items: tpl.items,
            index: group * u64::from(pieces) + u64::from(piece),
        })
    }
}

/// Realistic words for names and values.
pub(crate) mod vocabulary {
    /// Services, versions and SDK languages for resources.
    pub const SERVICES: &[(&str, &str, &str)] = &[
        ("frontend", "2.14.3", "nodejs"),
        ("checkout", "1.8.0", "go"),
        ("orders", "3.2.1", "java"),
        ("payments", "0.9.7", "rust"),
        ("inventory", "5.0.2", "python"),
        ("shipping", "1.1.4", "dotnet"),
    ];
    /// HTTP routes for SERVER spans.
    pub const ROUTES: &[&str] = &[
        "/api/v1/orders/{id}",
        "/api/v1/cart",
        "/api/v1/checkout",
        "/api/v1/products/{sku}",
        "/api/v1/users/{id}/profile",
        "/healthz",
    ];
    /// Names of child spans.
    pub const CHILD_NAMES: &[&str] = &[
        "SELECT orders",
        "INSERT order_items",
        "HTTP GET",
        "HTTP POST",
        "cache.get",
        "cache.set",
        "kafka.produce",
        "render",
        "authorize",
        "serialize",
    ];
    /// HTTP methods.
    pub const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
    /// Characters for generated string values.
    pub const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
}

/// A string of exactly `len` bytes: `prefix` (cut if longer) then random characters.
pub(crate) fn sized_string(rng: &mut Rng, prefix: &str, len: usize) -> String {
    let mut s: String = prefix.chars().take(len).collect();
    while s.len() < len {
        let c = vocabulary::ALNUM[(rng.next_u64() % vocabulary::ALNUM.len() as u64) as usize];
        s.push(c as char);
    }
    s
}

/// Builds the resource of service `index` (service.name and a few more attributes).
pub(crate) fn resource(
    rng: &mut Rng,
    service: usize,
) -> opentelemetry_proto::tonic::resource::v1::Resource {
    let (name, version, lang) = vocabulary::SERVICES[service % vocabulary::SERVICES.len()];
    let instance = format!("{name}-{:08x}", rng.next_u64() as u32);
    opentelemetry_proto::tonic::resource::v1::Resource {
        attributes: vec![
            kv_str("service.name", name),
            kv_str("service.version", version),
            kv_str("service.instance.id", &instance),
            kv_str("host.name", &format!("node-{:02}", rng.next_u64() % 32)),
            kv_str("deployment.environment.name", "production"),
            kv_str("telemetry.sdk.language", lang),
        ],
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    }
}

/// The instrumentation scope every template uses.
pub(crate) fn scope() -> opentelemetry_proto::tonic::common::v1::InstrumentationScope {
    opentelemetry_proto::tonic::common::v1::InstrumentationScope {
        name: "shardtel-loadgen".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    }
}

/// A string attribute.
pub(crate) fn kv_str(key: &str, value: &str) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An integer attribute.
pub(crate) fn kv_int(key: &str, value: i64) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// `count` descriptive attributes: semantic-convention keys first, then `attr.N`.
/// String values are `size` bytes long, except short enumerations (methods).
pub(crate) fn descriptive_attributes(
    rng: &mut Rng,
    count: u32,
    size: u32,
    error: bool,
) -> Vec<opentelemetry_proto::tonic::common::v1::KeyValue> {
    let size = size as usize;
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let pick = |rng: &mut Rng, list: &[&'static str]| {
            list[(rng.next_u64() % list.len() as u64) as usize]
        };
        let kv = match i {
            0 => kv_str("http.request.method", pick(rng, vocabulary::METHODS)),
            1 => {
                let route = pick(rng, vocabulary::ROUTES);
                kv_str("http.route", &sized_string(rng, route, size))
            }
            2 => kv_int("http.response.status_code", if error { 500 } else { 200 }),
            3 => kv_str("server.address", &sized_string(rng, "svc-", size)),
            4 => kv_int("server.port", 8080),
            5 => kv_str(
                "user_agent.original",
                &sized_string(rng, "Mozilla/5.0 ", size),
            ),
            6 => kv_str("network.peer.address", &sized_string(rng, "10.0.", size)),
            7 => kv_int("http.request.body.size", (rng.next_u64() % 65_536) as i64),
            _ => kv_str(&format!("attr.{i}"), &sized_string(rng, "", size)),
        };
        out.push(kv);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn shape(signal: Signal) -> Shape {
        Shape {
            signal,
            items_per_request: 100,
            spans_per_trace: (5, 15),
            pieces: 1,
            attributes: 8,
            attribute_size: 16,
            error_ratio: 0.03,
            latency: LatencyDistribution::LogNormal {
                median: Duration::from_millis(20),
                p99: Duration::from_secs(2),
            },
            vip_share: 0.01,
            templates: 4,
            seed: 1,
            json: true,
        }
    }

    #[test]
    fn span_id_round_trips() {
        let ids = IdScheme {
            run_id: 0x1234,
            worker: 7,
        };
        let id = ids.span_id(123_456);
        assert_eq!(IdScheme::parse_span_id(&id), (0x1234, 7, 123_456));
        assert_eq!(ids.attribute_seq(5), (7 << 40) | 5);
    }

    #[test]
    fn trace_ids_are_unique_across_groups_and_workers() {
        let mut seen = std::collections::HashSet::new();
        for worker in 0..3 {
            let ids = IdScheme { run_id: 9, worker };
            for g in 0..50 {
                for id in ids.trace_ids(g, 100, 12) {
                    assert!(seen.insert(id));
                }
            }
        }
    }

    #[test]
    fn every_encoding_builds_and_emits() {
        for signal in [Signal::Traces, Signal::Metrics, Signal::Logs] {
            let set = TemplateSet::build(&shape(signal)).unwrap();
            for (grpc, json, compression) in [
                (true, false, Compression::None),
                (true, false, Compression::Gzip),
                (false, false, Compression::Zstd),
                (false, true, Compression::None),
                (false, false, Compression::None),
            ] {
                let enc = BodyEncoder {
                    signal,
                    grpc,
                    json,
                    compression,
                    level: compression.default_level(),
                };
                let ids = IdScheme {
                    run_id: 1,
                    worker: 0,
                };
                let mut g = Generator::new(set.clone(), ids, enc, 3).unwrap();
                for i in 0..5 {
                    let r = g.next_request().unwrap();
                    assert_eq!(r.index, i);
                    assert_eq!(r.items, 100);
                    let mut body = &r.body[..];
                    if grpc {
                        assert_eq!(body[0] == 1, compression != Compression::None);
                        body = &body[5..];
                    }
                    let plain =
                        wire::decompress(compression.header_value().unwrap_or(""), body).unwrap();
                    if json {
                        let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
                        assert!(v.is_object());
                    }
                }
            }
        }
    }
}
