//! The `spanmetrics` processor: calls and a duration histogram per (service, span name, kind,
//! status, configured dimensions), aggregated on each span's owner core and handed to the
//! metrics pipeline as one OTLP request per flush (delta sums and histograms). The histogram has
//! explicit bounds, or base-2 exponential buckets ([`ExpHistogram`]: the highest scale at which
//! a window's durations fit in `max_size` buckets, as the OpenTelemetry SDKs aggregate).
//!
//! A span costs one pass over its fields and a hash lookup with a reused key buffer; a series is
//! allocated only when it first appears. At most `max_series` series per core: the spans of
//! any further series count in one `otel.metric.overflow="true"` series (and in
//! [`SpanMetricsSnapshot::overflow_spans`]). A series' labels are its key, stored once, each
//! label cut to [`MAX_LABEL_BYTES`]: one core's series hold at most
//! [`SpanMetrics::max_held_bytes`] (counted in [`SpanMetricsSnapshot::held_bytes`]).
//!
//! With `aggregation_temporality` cumulative, a series' counts are never reset: each flush
//! sends every series, from the time of its first span (its `start_time_unix_nano`, fixed) to
//! now. Each core's series are a stream of their own, so every point carries the core's
//! `collector.instance.id` (a random id per core and start, as the Collector has one per
//! process): two cores' cumulative counts of one series are two series downstream, never one
//! that jumps between them. With `metrics_expiration`, a series with no span for that long is
//! forgotten at a flush (in either temporality), which frees its place under `max_series`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;
use shardtel_config::{SpanHistogram, SpanMetricsConfig, SpanTemporality};
use shardtel_protocol::hash::TraceIdHashBuilder;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::common::v1::{any_value, AnyValue, KeyValue};
use shardtel_protocol::proto::metrics::v1::{
    exponential_histogram_data_point, metric, number_data_point, AggregationTemporality,
    ExponentialHistogram, ExponentialHistogramDataPoint, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::scan::SpanBatch;
use shardtel_protocol::span::{AnyValueRef, SpanView};

use crate::condition::raw_attribute;
use crate::resource_body;

const KINDS: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUS: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

/// The longest service name, span name or dimension value a series keeps, in bytes: a longer
/// one is cut at the last UTF-8 character boundary at or before it (spans that differ only
/// after it count in one series). The Collector's `span_metrics` connector keeps them whole and
/// bounds only the number of series; here a series' bytes are bounded too (a span name can be
/// as long as `max_recv_msg_size`).
pub const MAX_LABEL_BYTES: usize = 1024;

/// The key of an absent dimension (a part's length is at most [`MAX_LABEL_BYTES`]).
const ABSENT: u16 = u16::MAX;

/// One series' aggregates; its labels are its key in [`State::series`], stored once.
#[derive(Debug, Clone)]
struct Series {
    /// Unix ns of its first span (the start of its cumulative points).
    start_ns: u64,
    /// Unix ns of the end of the last window in which it had a span.
    last_seen_ns: u64,
    /// A span was counted since the last flush.
    updated: bool,
    /// Spans of the `calls` sum.
    calls: u64,
    /// Spans of the duration histogram: `calls`, unless only one of the two metrics of a
    /// refused flush was queued (they may go to different cores).
    count: u64,
    sum_ms: f64,
    /// Explicit histogram: a count per bucket (empty with an exponential histogram).
    counts: Vec<u64>,
    /// Exponential histogram (with `histogram = "exponential"`).
    exp: Option<ExpHistogram>,
}

impl Series {
    fn new(histogram: &Hist) -> Series {
        let now = unix_now_ns();
        Series {
            start_ns: now,
            last_seen_ns: now,
            updated: false,
            calls: 0,
            count: 0,
            sum_ms: 0.0,
            counts: match histogram {
                Hist::Explicit(bounds) => vec![0; bounds.len() + 1],
                Hist::Exponential(_) => Vec::new(),
            },
            exp: matches!(histogram, Hist::Exponential(_)).then(ExpHistogram::default),
        }
    }

    /// Starts a new window.
    fn reset(&mut self) {
        self.calls = 0;
        self.count = 0;
        self.sum_ms = 0.0;
        self.counts.iter_mut().for_each(|c| *c = 0);
        if let Some(e) = &mut self.exp {
            *e = ExpHistogram::default();
        }
    }
}

/// The wall clock in unix ns.
fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A random id for one core's cumulative streams, formatted as a UUID (version 4): random keys
/// of the standard library's hasher (seeded from the OS per thread), the time and the process
/// id.
fn new_instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(unix_now_ns());
        h.write_u32(std::process::id());
        h.write_u64(salt);
        h.finish()
    };
    let (a, b) = (half(1), half(2));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// The histogram a processor builds.
#[derive(Debug, Clone)]
enum Hist {
    /// Upper bounds in ms.
    Explicit(Vec<f64>),
    /// `max_size`.
    Exponential(usize),
}

/// OTLP's highest exponential histogram scale (where a window starts).
const MAX_SCALE: i32 = 20;

/// A base-2 exponential histogram of durations (ms) in one window: bucket `i` counts values in
/// (2^(i·2^-scale), 2^((i+1)·2^-scale)], as OTLP defines it; zero durations count in
/// `zero_count`. It starts at scale 20 and lowers the scale (merging neighbouring buckets) when
/// the values seen would need more than `max_size` buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpHistogram {
    /// The scale.
    pub scale: i32,
    /// The index of `counts[0]`.
    pub offset: i32,
    /// Counts of consecutive buckets.
    pub counts: Vec<u64>,
    /// Values that were zero.
    pub zero_count: u64,
    /// Smallest and largest value (`f64::INFINITY` and `-INFINITY` while empty).
    pub min: f64,
    /// See `min`.
    pub max: f64,
}

impl Default for ExpHistogram {
    fn default() -> Self {
        ExpHistogram {
            scale: MAX_SCALE,
            offset: 0,
            counts: Vec::new(),
            zero_count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

/// The bucket of a positive, finite `v` at `scale`: `ceil(log2(v) · 2^scale) − 1`, exact for
/// powers of two (the exponent of the float, not a logarithm).
pub fn exp_index(v: f64, scale: i32) -> i32 {
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let mantissa = bits & ((1u64 << 52) - 1);
    if biased != 0 && mantissa == 0 {
        // An exact power of two, 2^e: the upper bound of bucket (e << scale) − 1.
        let e = biased - 1023;
        return if scale >= 0 {
            (e << scale) - 1
        } else {
            (e - 1) >> -scale
        };
    }
    if scale <= 0 && biased != 0 {
        // floor(log2 v) for v that is not a power of two is the unbiased exponent.
        return (biased - 1023) >> -scale;
    }
    (v.log2() * 2f64.powi(scale)).ceil() as i32 - 1
}

impl ExpHistogram {
    /// Counts one value (a duration in ms, `>= 0`).
    pub fn record(&mut self, v: f64, max_size: usize) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if v.is_nan() || v <= 0.0 {
            self.zero_count += 1;
            return;
        }
        let index = exp_index(v, self.scale);
        self.add(index, 1, max_size);
    }

    /// Adds `n` to bucket `index` at the current scale, lowering the scale first when the
    /// buckets would span more than `max_size`.
    fn add(&mut self, index: i32, n: u64, max_size: usize) {
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(n);
            return;
        }
        let last = self.offset + self.counts.len() as i32 - 1;
        let (lo, hi) = (self.offset.min(index), last.max(index));
        let mut shift = 0;
        while i64::from(hi >> shift) - i64::from(lo >> shift) + 1 > max_size as i64 {
            shift += 1;
        }
        self.downscale(shift);
        let index = index >> shift;
        if index < self.offset {
            let grow = (self.offset - index) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = index;
        }
        let at = (index - self.offset) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += n;
    }

    /// Lowers the scale by `shift`: every 2^shift neighbouring buckets become one.
    fn downscale(&mut self, shift: i32) {
        if shift == 0 {
            return;
        }
        let offset = self.offset >> shift;
        let last = (self.offset + self.counts.len() as i32 - 1) >> shift;
        let mut counts = vec![0u64; (last - offset + 1) as usize];
        for (i, c) in self.counts.iter().enumerate() {
            counts[(((self.offset + i as i32) >> shift) - offset) as usize] += c;
        }
        self.scale -= shift;
        self.offset = offset;
        self.counts = counts;
    }

    /// Adds the buckets of a point at `scale` (a refused flush put back).
    fn merge(&mut self, scale: i32, offset: i32, counts: &[u64], max_size: usize) {
        if scale < self.scale {
            self.downscale(self.scale - scale);
        }
        for (i, &n) in counts.iter().enumerate() {
            if n > 0 {
                // At or below the point's scale (adding may lower it further).
                let shift = scale - self.scale;
                self.add((offset + i as i32) >> shift, n, max_size);
            }
        }
    }
}

/// The `service.name` of a `Resource` body ("" when absent or not a string).
fn service_of(resource: &[u8]) -> &str {
    match raw_attribute(resource, 1, b"service.name") {
        Some(AnyValueRef::String(s)) => s,
        _ => "",
    }
}

#[derive(Default)]
struct State {
    /// Series by key (keyed hash: the keys are made of span names and attribute values). A key
    /// is the series' labels, each cut to [`MAX_LABEL_BYTES`]: service name and span name
    /// (each a little-endian `u16` length and the bytes), kind and status code (a byte each),
    /// then each configured dimension (a length and the bytes, or [`ABSENT`]).
    series: HashMap<Box<[u8]>, Series, TraceIdHashBuilder>,
    overflow: Option<Series>,
    /// The key being built (reused).
    key: Vec<u8>,
    /// Bytes the series hold (see [`SpanMetrics::series_bytes`]).
    held_bytes: u64,
}

/// Published counters of one core's span metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpanMetricsSnapshot {
    /// Spans counted.
    pub spans: u64,
    /// Spans counted in the overflow series.
    pub overflow_spans: u64,
    /// Series now held.
    pub series: u64,
    /// Flushes the metrics pipeline refused (their counts are kept for the next flush).
    pub refused_flushes: u64,
    /// Series forgotten after `metrics_expiration`.
    pub expired_series: u64,
    /// Bytes the series hold (keys, aggregates, histogram buckets), at most
    /// [`SpanMetrics::max_held_bytes`].
    pub held_bytes: u64,
}

/// One core's span metrics.
pub struct SpanMetrics {
    dimensions: Vec<String>,
    histogram: Hist,
    max_series: usize,
    namespace: String,
    /// Cumulative points (series never reset), or delta.
    cumulative: bool,
    /// `metrics_expiration` in ns (0: never).
    expiration_ns: u64,
    /// `collector.instance.id` of this core's cumulative points.
    instance_id: Option<String>,
    state: RefCell<State>,
    /// Start of the current delta window (unix ns).
    window_start: Cell<u64>,
    spans: Cell<u64>,
    overflow_spans: Cell<u64>,
    refused: Cell<u64>,
    /// Series forgotten after `metrics_expiration`.
    expired: Cell<u64>,
}

fn label(v: Option<AnyValueRef<'_>>) -> Option<String> {
    Some(match v? {
        AnyValueRef::String(s) => s.to_string(),
        AnyValueRef::Int(i) => i.to_string(),
        AnyValueRef::Double(d) => d.to_string(),
        AnyValueRef::Bool(b) => b.to_string(),
        _ => return None,
    })
}

/// `s` cut to at most [`MAX_LABEL_BYTES`], at a character boundary.
fn truncated(s: &str) -> &str {
    if s.len() <= MAX_LABEL_BYTES {
        return s;
    }
    let mut end = MAX_LABEL_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends one label value (cut to [`MAX_LABEL_BYTES`]) to a series key.
fn push_part(key: &mut Vec<u8>, part: &str) {
    let part = truncated(part);
    key.extend_from_slice(&(part.len() as u16).to_le_bytes());
    key.extend_from_slice(part.as_bytes());
}

/// Appends an absent dimension to a series key.
fn push_absent(key: &mut Vec<u8>) {
    key.extend_from_slice(&ABSENT.to_le_bytes());
}

/// Reads a series key back, part by part (see [`State::series`]).
struct KeyReader<'a>(&'a [u8]);

impl<'a> KeyReader<'a> {
    /// The next length-prefixed part (`None`: an absent dimension, or the end).
    fn part(&mut self) -> Option<&'a str> {
        let (len, rest) = self.0.split_first_chunk::<2>()?;
        let len = u16::from_le_bytes(*len);
        if len == ABSENT {
            self.0 = rest;
            return None;
        }
        let (part, rest) = rest.split_at(usize::from(len).min(rest.len()));
        self.0 = rest;
        // Parts are made from `&str`s cut at character boundaries.
        Some(std::str::from_utf8(part).unwrap_or_default())
    }

    /// The next byte (kind or status code).
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *b
    }
}

/// The service name a series key starts with.
fn service_of_key(key: &[u8]) -> &str {
    KeyReader(key).part().unwrap_or_default()
}

/// A series' entry in a flush: its key (`None`: the overflow series) and aggregates.
type Entry<'a> = (Option<&'a [u8]>, &'a Series);

/// What a series of `key_len` key bytes holds: its key, its map entry and its histogram
/// buckets at their most (an estimate for an exponential histogram's vector).
fn series_bytes(histogram: &Hist, key_len: usize) -> u64 {
    let buckets = match histogram {
        Hist::Explicit(bounds) => (bounds.len() + 1) * 8,
        Hist::Exponential(max_size) => max_size * 8,
    };
    (key_len + std::mem::size_of::<(Box<[u8]>, Series)>() + buckets) as u64
}

/// The string value of attribute `name`.
fn string_attr<'a>(attributes: &'a [KeyValue], name: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == name).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(v) => Some(v.as_str()),
            _ => None,
        }
    })
}

fn string_kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

impl SpanMetrics {
    /// From a validated configuration; `now_ns`: the start of the first window.
    pub fn new(config: &SpanMetricsConfig, now_ns: u64) -> SpanMetrics {
        SpanMetrics {
            dimensions: config.dimensions.clone(),
            histogram: Self::hist_of(config),
            max_series: config.max_series,
            namespace: config.namespace.clone(),
            cumulative: config.aggregation_temporality == SpanTemporality::Cumulative,
            expiration_ns: config
                .metrics_expiration
                .as_nanos()
                .min(u128::from(u64::MAX)) as u64,
            instance_id: (config.aggregation_temporality == SpanTemporality::Cumulative)
                .then(new_instance_id),
            state: RefCell::new(State::default()),
            window_start: Cell::new(now_ns),
            spans: Cell::new(0),
            overflow_spans: Cell::new(0),
            refused: Cell::new(0),
            expired: Cell::new(0),
        }
    }

    /// Counts spans `spans` of `batch` (every span of it when `None`).
    pub fn record_batch(&self, batch: &SpanBatch, spans: Option<&[u32]>) {
        let index = &batch.index;
        // The spans of a resource come one after another: its body and service are read once.
        let mut last: Option<(u32, &[u8], &str)> = None;
        let mut each = |i: u32| {
            let r = index.scopes[index.spans[i as usize].scope as usize].resource;
            let (resource, service) = match last {
                Some((lr, resource, service)) if lr == r => (resource, service),
                _ => {
                    let resource = resource_body(index, &batch.buf, r);
                    let service = service_of(resource);
                    last = Some((r, resource, service));
                    (resource, service)
                }
            };
            self.record_in(batch.span(i as usize), resource, service);
        };
        match spans {
            Some(list) => list.iter().copied().for_each(&mut each),
            None => (0..index.spans.len() as u32).for_each(&mut each),
        }
    }

    /// Counts one span (a `Span` body) of the resource `resource` (a `Resource` body).
    pub fn record(&self, span: &[u8], resource: &[u8]) {
        self.record_in(span, resource, service_of(resource));
    }

    /// [`SpanMetrics::record`] with the resource's `service.name` already read.
    fn record_in(&self, span: &[u8], resource: &[u8], service: &str) {
        let f = SpanView::new(span).fields();
        let mut state = self.state.borrow_mut();
        let State {
            series,
            overflow,
            key,
            held_bytes,
        } = &mut *state;
        key.clear();
        push_part(key, service);
        // Borrowed unless the name is not UTF-8 (the label is what the key holds).
        push_part(key, &String::from_utf8_lossy(f.name));
        key.push(f.kind.clamp(0, 5) as u8);
        key.push(f.status_code.clamp(0, 2) as u8);
        for d in &self.dimensions {
            let v = raw_attribute(span, 9, d.as_bytes())
                .or_else(|| raw_attribute(resource, 1, d.as_bytes()));
            match v {
                Some(AnyValueRef::String(s)) => push_part(key, s),
                other => match label(other) {
                    Some(l) => push_part(key, &l),
                    None => push_absent(key),
                },
            }
        }
        let duration_ms = f.end_time_unix_nano.saturating_sub(f.start_time_unix_nano) as f64 / 1e6;
        if let Some(s) = series.get_mut(&key[..]) {
            self.count(s, duration_ms);
        } else if series.len() < self.max_series {
            let mut s = Series::new(&self.histogram);
            self.count(&mut s, duration_ms);
            *held_bytes += series_bytes(&self.histogram, key.len());
            series.insert(key.as_slice().into(), s);
        } else {
            self.overflow_spans.set(self.overflow_spans.get() + 1);
            self.count(
                overflow.get_or_insert_with(|| Series::new(&self.histogram)),
                duration_ms,
            );
        }
        self.spans.set(self.spans.get() + 1);
    }

    /// Counts one span of `duration_ms` in `s`.
    fn count(&self, s: &mut Series, duration_ms: f64) {
        s.updated = true;
        s.calls += 1;
        s.count += 1;
        s.sum_ms += duration_ms;
        match &self.histogram {
            Hist::Explicit(bounds) => s.counts[bounds.partition_point(|b| *b < duration_ms)] += 1,
            Hist::Exponential(max_size) => {
                if let Some(e) = &mut s.exp {
                    e.record(duration_ms, *max_size);
                }
            }
        }
    }

    /// The most bytes one core's series can hold with `config` (an estimate of the map's
    /// entries, not of its spare capacity): `max_series` series whose labels are all
    /// [`MAX_LABEL_BYTES`] long, and the overflow series.
    pub fn max_held_bytes(config: &SpanMetricsConfig) -> u64 {
        let histogram = Self::hist_of(config);
        let key = 2 * (2 + MAX_LABEL_BYTES) + 2 + config.dimensions.len() * (2 + MAX_LABEL_BYTES);
        (config.max_series as u64 + 1) * series_bytes(&histogram, key)
    }

    /// The histogram `config` asks for.
    fn hist_of(config: &SpanMetricsConfig) -> Hist {
        match config.histogram {
            SpanHistogram::Explicit => Hist::Explicit(
                config
                    .buckets
                    .iter()
                    .map(|d| d.as_secs_f64() * 1000.0)
                    .collect(),
            ),
            SpanHistogram::Exponential { max_size } => Hist::Exponential(max_size as usize),
        }
    }

    /// The counts as an `ExportMetricsServiceRequest` ending at `now_ns` and its number of
    /// data points: delta, the counts since the last flush (which restart); cumulative, every
    /// series' counts since its first span. Series not updated for `metrics_expiration` are
    /// forgotten first. `None` when there is nothing to send.
    pub fn flush(&self, now_ns: u64) -> Option<(Bytes, u64)> {
        let mut state = self.state.borrow_mut();
        self.expire(&mut state, now_ns);
        let State {
            series, overflow, ..
        } = &mut *state;
        // A key starts with its service: sorted keys group each service's series.
        let mut sent: Vec<Entry<'_>> = series
            .iter()
            .filter(|(_, s)| s.calls > 0 || s.count > 0)
            .map(|(k, s)| (Some(&**k), s))
            .collect();
        sent.sort_unstable_by_key(|e| e.0);
        let mut by_service: Vec<(&str, &[Entry<'_>])> = sent
            .chunk_by(|a, b| {
                service_of_key(a.0.unwrap_or_default()) == service_of_key(b.0.unwrap_or_default())
            })
            .map(|group| (service_of_key(group[0].0.unwrap_or_default()), group))
            .collect();
        // The overflow series has no service: with the series without one, if any.
        let overflow_entry = overflow
            .as_ref()
            .filter(|o| o.calls > 0 || o.count > 0)
            .map(|o| (None, o));
        let mut with_overflow: Vec<Entry<'_>> = Vec::new();
        if let Some(o) = overflow_entry {
            match by_service.first() {
                Some(("", group)) => {
                    with_overflow.extend_from_slice(group);
                    with_overflow.push(o);
                    by_service.remove(0);
                }
                _ => with_overflow.push(o),
            }
        }
        if !with_overflow.is_empty() {
            by_service.insert(0, ("", &with_overflow));
        }
        if by_service.is_empty() {
            return None;
        }
        let window_start = self.window_start.replace(now_ns);
        let start_of = |s: &Series| {
            if self.cumulative {
                s.start_ns
            } else {
                window_start
            }
        };
        let mut points = 0u64;
        let resource_metrics = by_service
            .into_iter()
            .map(|(service, series)| {
                let attrs = |e: &Entry<'_>| -> Vec<KeyValue> {
                    let labels = self.labels_of(e.0);
                    let instance = self
                        .instance_id
                        .as_deref()
                        .map(|id| string_kv("collector.instance.id", id));
                    labels.into_iter().chain(instance).collect()
                };
                let calls = Metric {
                    name: format!("{}.calls", self.namespace),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: series
                            .iter()
                            .filter(|e| e.1.calls > 0)
                            .map(|e| NumberDataPoint {
                                attributes: attrs(e),
                                start_time_unix_nano: start_of(e.1),
                                time_unix_nano: now_ns,
                                value: Some(number_data_point::Value::AsInt(e.1.calls as i64)),
                                ..Default::default()
                            })
                            .collect(),
                        aggregation_temporality: self.temporality(),
                        is_monotonic: true,
                    })),
                    ..Default::default()
                };
                let duration = Metric {
                    name: format!("{}.duration", self.namespace),
                    unit: "ms".into(),
                    data: Some(self.duration_data(series, now_ns, &start_of, &attrs)),
                    ..Default::default()
                };
                points += (series.iter().filter(|e| e.1.calls > 0).count()
                    + series.iter().filter(|e| e.1.count > 0).count())
                    as u64;
                ResourceMetrics {
                    resource: Some(Resource {
                        attributes: if service.is_empty() {
                            Vec::new()
                        } else {
                            vec![string_kv("service.name", service)]
                        },
                        ..Default::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(shardtel_protocol::proto::common::v1::InstrumentationScope {
                            name: "shardtel.spanmetrics".into(),
                            ..Default::default()
                        }),
                        metrics: vec![calls, duration],
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }
            })
            .collect();
        drop(with_overflow);
        drop(sent);
        if !self.cumulative {
            series
                .values_mut()
                .filter(|s| s.calls > 0 || s.count > 0)
                .for_each(Series::reset);
            *overflow = None;
        }
        let req = ExportMetricsServiceRequest { resource_metrics };
        Some((Bytes::from(req.encode_to_vec()), points))
    }

    /// The point labels of the series with key `key` (`None`: the overflow series).
    fn labels_of(&self, key: Option<&[u8]>) -> Vec<KeyValue> {
        let Some(key) = key else {
            return vec![string_kv("otel.metric.overflow", "true")];
        };
        let mut r = KeyReader(key);
        let service = r.part().unwrap_or_default();
        let name = r.part().unwrap_or_default();
        let kind = KINDS[usize::from(r.byte()).min(5)];
        let status = STATUS[usize::from(r.byte()).min(2)];
        let mut labels = vec![
            string_kv("service.name", service),
            string_kv("span.name", name),
            string_kv("span.kind", kind),
            string_kv("status.code", status),
        ];
        for d in &self.dimensions {
            if let Some(v) = r.part() {
                labels.push(string_kv(d, v));
            }
        }
        labels
    }

    /// The temporality of the points, as OTLP numbers it.
    fn temporality(&self) -> i32 {
        if self.cumulative {
            AggregationTemporality::Cumulative as i32
        } else {
            AggregationTemporality::Delta as i32
        }
    }

    /// Forgets the series (and the overflow series) with no span in the last
    /// `metrics_expiration`; notes `now_ns` as the last time of those with one.
    fn expire(&self, state: &mut State, now_ns: u64) {
        let expiration = self.expiration_ns;
        let live = |s: &mut Series| {
            if s.updated {
                s.updated = false;
                s.last_seen_ns = now_ns;
            }
            expiration == 0 || now_ns.saturating_sub(s.last_seen_ns) < expiration
        };
        if state.overflow.as_mut().is_some_and(|o| !live(o)) {
            state.overflow = None;
        }
        let State {
            series, held_bytes, ..
        } = state;
        let before = series.len();
        series.retain(|k, s| {
            let keep = live(s);
            if !keep {
                *held_bytes -= series_bytes(&self.histogram, k.len());
            }
            keep
        });
        self.expired
            .set(self.expired.get() + (before - series.len()) as u64);
    }

    /// The duration histogram of `series` for the window `start..now_ns`.
    fn duration_data(
        &self,
        series: &[Entry<'_>],
        now_ns: u64,
        start_of: &dyn Fn(&Series) -> u64,
        attrs: &dyn Fn(&Entry<'_>) -> Vec<KeyValue>,
    ) -> metric::Data {
        let temporality = self.temporality();
        match &self.histogram {
            Hist::Explicit(bounds) => metric::Data::Histogram(Histogram {
                data_points: series
                    .iter()
                    .filter(|e| e.1.count > 0)
                    .map(|e| HistogramDataPoint {
                        attributes: attrs(e),
                        start_time_unix_nano: start_of(e.1),
                        time_unix_nano: now_ns,
                        count: e.1.count,
                        sum: Some(e.1.sum_ms),
                        bucket_counts: e.1.counts.clone(),
                        explicit_bounds: bounds.clone(),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: temporality,
            }),
            Hist::Exponential(_) => metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: series
                    .iter()
                    .filter(|e| e.1.count > 0)
                    .map(|e| {
                        let s = e.1;
                        let x = s.exp.clone().unwrap_or_default();
                        ExponentialHistogramDataPoint {
                            attributes: attrs(e),
                            start_time_unix_nano: start_of(s),
                            time_unix_nano: now_ns,
                            count: s.count,
                            sum: Some(s.sum_ms),
                            scale: x.scale,
                            zero_count: x.zero_count,
                            positive: Some(exponential_histogram_data_point::Buckets {
                                offset: x.offset,
                                bucket_counts: x.counts,
                            }),
                            min: Some(x.min),
                            max: Some(x.max),
                            ..Default::default()
                        }
                    })
                    .collect(),
                aggregation_temporality: temporality,
            }),
        }
    }

    /// Puts back the counts of a flush (or of the parts of one) the metrics pipeline refused
    /// (cumulative: nothing to put back, the next flush carries the totals). Each point goes
    /// back to its series, found by the key its labels make (a hash lookup); a point whose
    /// series is gone goes to the overflow series.
    pub fn refused(&self, body: &[u8], window_start_ns: u64) {
        self.refused_parts([body], window_start_ns);
    }

    /// [`SpanMetrics::refused`] for a flush of which only `parts` (requests of their own, the
    /// parts of a flush split among cores) were refused: the others were queued and are not
    /// counted again.
    pub fn refused_parts<'a>(
        &self,
        parts: impl IntoIterator<Item = &'a [u8]>,
        window_start_ns: u64,
    ) {
        self.refused.set(self.refused.get() + 1);
        if self.cumulative {
            return;
        }
        self.window_start.set(window_start_ns);
        for body in parts {
            self.put_back(body);
        }
    }

    /// Adds the counts of a refused request to their series.
    fn put_back(&self, body: &[u8]) {
        let Ok(req) = ExportMetricsServiceRequest::decode(body) else {
            return;
        };
        let mut state = self.state.borrow_mut();
        let State {
            series,
            overflow,
            key,
            ..
        } = &mut *state;
        for rm in req.resource_metrics {
            let service = rm
                .resource
                .as_ref()
                .and_then(|r| string_attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for m in rm.scope_metrics.into_iter().flat_map(|sm| sm.metrics) {
                match m.data {
                    Some(metric::Data::Sum(sum)) => {
                        for p in sum.data_points {
                            let t = self.target(series, overflow, key, service, &p.attributes);
                            if let Some(number_data_point::Value::AsInt(n)) = p.value {
                                t.calls += n.max(0) as u64;
                            }
                        }
                    }
                    Some(metric::Data::Histogram(h)) => {
                        for p in h.data_points {
                            let t = self.target(series, overflow, key, service, &p.attributes);
                            t.count += p.count;
                            t.sum_ms += p.sum.unwrap_or(0.0);
                            for (c, n) in t.counts.iter_mut().zip(&p.bucket_counts) {
                                *c += n;
                            }
                        }
                    }
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        let Hist::Exponential(max_size) = self.histogram else {
                            continue;
                        };
                        for p in h.data_points {
                            let t = self.target(series, overflow, key, service, &p.attributes);
                            t.count += p.count;
                            t.sum_ms += p.sum.unwrap_or(0.0);
                            let e = t.exp.get_or_insert_with(ExpHistogram::default);
                            e.zero_count += p.zero_count;
                            e.min = e.min.min(p.min.unwrap_or(f64::INFINITY));
                            e.max = e.max.max(p.max.unwrap_or(f64::NEG_INFINITY));
                            if let Some(b) = &p.positive {
                                e.merge(p.scale, b.offset, &b.bucket_counts, max_size);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The series a refused point of `service` with `attributes` came from (its key rebuilt in
    /// `key`), or the overflow series.
    fn target<'a>(
        &self,
        series: &'a mut HashMap<Box<[u8]>, Series, TraceIdHashBuilder>,
        overflow: &'a mut Option<Series>,
        key: &mut Vec<u8>,
        service: &str,
        attributes: &[KeyValue],
    ) -> &'a mut Series {
        let get = |name: &str| string_attr(attributes, name);
        if get("otel.metric.overflow").is_none() {
            key.clear();
            push_part(key, service);
            push_part(key, get("span.name").unwrap_or_default());
            let kind = get("span.kind").and_then(|k| KINDS.iter().position(|x| *x == k));
            key.push(kind.unwrap_or(0) as u8);
            let status = get("status.code").and_then(|c| STATUS.iter().position(|x| *x == c));
            key.push(status.unwrap_or(0) as u8);
            for d in &self.dimensions {
                match get(d) {
                    Some(v) => push_part(key, v),
                    None => push_absent(key),
                }
            }
            if let Some(s) = series.get_mut(&key[..]) {
                return s;
            }
        }
        overflow.get_or_insert_with(|| Series::new(&self.histogram))
    }

    /// The start of the current window (to hand back to [`SpanMetrics::refused`]).
    pub fn window_start(&self) -> u64 {
        self.window_start.get()
    }

    /// The counters.
    pub fn snapshot(&self) -> SpanMetricsSnapshot {
        SpanMetricsSnapshot {
            spans: self.spans.get(),
            overflow_spans: self.overflow_spans.get(),
            series: self.state.borrow().series.len() as u64,
            refused_flushes: self.refused.get(),
            expired_series: self.expired.get(),
            held_bytes: self.state.borrow().held_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardtel_protocol::proto::trace::v1::{Span, Status};
    use std::collections::{BTreeMap, BTreeSet};

    fn config(max_series: usize) -> SpanMetricsConfig {
        SpanMetricsConfig {
            dimensions: vec!["http.method".into()],
            buckets: vec![
                std::time::Duration::from_millis(10),
                std::time::Duration::from_millis(100),
            ],
            max_series,
            flush_interval: std::time::Duration::from_secs(1),
            namespace: "traces.span.metrics".into(),
            histogram: SpanHistogram::Explicit,
            aggregation_temporality: SpanTemporality::Delta,
            metrics_expiration: std::time::Duration::ZERO,
        }
    }

    fn span(name: &str, ms: u64, error: bool, method: &str) -> Vec<u8> {
        Span {
            name: name.into(),
            kind: 2,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_000_000_000 + ms * 1_000_000,
            attributes: vec![string_kv("http.method", method)],
            status: error.then(|| Status {
                code: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn resource(service: &str) -> Vec<u8> {
        Resource {
            attributes: vec![string_kv("service.name", service)],
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// (labels, count, sum, bucket counts) of each histogram point.
    type Point = (Vec<(String, String)>, u64, f64, Vec<u64>);

    fn points(body: &Bytes) -> Vec<Point> {
        let req = ExportMetricsServiceRequest::decode(body.as_ref()).unwrap();
        let mut out = Vec::new();
        for rm in req.resource_metrics {
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    if let Some(metric::Data::Histogram(h)) = m.data {
                        for p in h.data_points {
                            let labels: Vec<(String, String)> = p
                                .attributes
                                .iter()
                                .map(|kv| {
                                    let v = match kv.value.as_ref().unwrap().value.as_ref() {
                                        Some(any_value::Value::StringValue(s)) => s.clone(),
                                        _ => panic!(),
                                    };
                                    (kv.key.clone(), v)
                                })
                                .collect();
                            out.push((labels, p.count, p.sum.unwrap(), p.bucket_counts));
                        }
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn counts_durations_and_labels_per_series_then_restarts() {
        let m = SpanMetrics::new(&config(10), 0);
        let r = resource("shop");
        m.record(&span("GET /", 5, false, "GET"), &r);
        m.record(&span("GET /", 50, false, "GET"), &r);
        m.record(&span("GET /", 500, true, "GET"), &r);
        m.record(&span("POST /", 5, false, "POST"), &resource("cart"));
        let (body, n) = m.flush(10).unwrap();
        assert_eq!(n, 6);
        let p = points(&body);
        let lbl = |svc: &str, name: &str, status: &str, method: &str| {
            vec![
                ("service.name".to_string(), svc.to_string()),
                ("span.name".to_string(), name.to_string()),
                ("span.kind".to_string(), "SPAN_KIND_SERVER".to_string()),
                ("status.code".to_string(), status.to_string()),
                ("http.method".to_string(), method.to_string()),
            ]
        };
        let mut want = vec![
            (
                lbl("shop", "GET /", "STATUS_CODE_UNSET", "GET"),
                2,
                55.0,
                vec![1, 1, 0],
            ),
            (
                lbl("shop", "GET /", "STATUS_CODE_ERROR", "GET"),
                1,
                500.0,
                vec![0, 0, 1],
            ),
            (
                lbl("cart", "POST /", "STATUS_CODE_UNSET", "POST"),
                1,
                5.0,
                vec![1, 0, 0],
            ),
        ];
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(p, want);
        // Delta: nothing new, nothing flushed; the series stay.
        assert!(m.flush(20).is_none());
        m.record(&span("GET /", 5, false, "GET"), &r);
        let p = points(&m.flush(30).unwrap().0);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].1, 1);
        assert_eq!(m.snapshot().series, 3);
    }

    #[test]
    fn series_beyond_the_bound_count_in_the_overflow_series() {
        let m = SpanMetrics::new(&config(2), 0);
        let r = resource("shop");
        for i in 0..5 {
            m.record(&span(&format!("op{i}"), 1, false, "GET"), &r);
        }
        m.record(&span("op0", 1, false, "GET"), &r);
        let s = m.snapshot();
        assert_eq!((s.spans, s.overflow_spans, s.series), (6, 3, 2));
        let (body, _) = m.flush(1).unwrap();
        let p = points(&body);
        let overflow: Vec<_> = p
            .iter()
            .filter(|x| x.0 == [("otel.metric.overflow".to_string(), "true".to_string())])
            .collect();
        assert_eq!(overflow.len(), 1);
        assert_eq!(overflow[0].1, 3);
        assert_eq!(p.iter().map(|x| x.1).sum::<u64>(), 6);
        // A refused flush is counted again next time.
        let start = m.window_start();
        m.refused(&body, start);
        let (again, _) = m.flush(2).unwrap();
        assert_eq!(points(&again), p);
    }

    /// A series' bytes are bounded: 1000 spans with unique 1 MiB names (and a 1 MiB service
    /// name and dimension value) hold at most `max_series` series of [`MAX_LABEL_BYTES`]
    /// labels, not 1000 × 3 MiB; labels are cut at a character boundary; normal names keep
    /// their own series.
    #[test]
    fn long_names_are_cut_and_held_bytes_stay_bounded() {
        let cfg = config(1000);
        let m = SpanMetrics::new(&cfg, 0);
        let long = "x".repeat(1 << 20);
        let r = resource(&format!("svc{long}"));
        for i in 0..1000 {
            m.record(&span(&format!("{i:04}{long}"), 1, false, &long), &r);
        }
        let s = m.snapshot();
        assert_eq!((s.series, s.overflow_spans), (1000, 0));
        assert!(s.held_bytes <= SpanMetrics::max_held_bytes(&cfg), "{s:?}");
        // Three labels of at most 1 KiB and the aggregates: far below one name.
        assert!(s.held_bytes <= 1000 * 4 * 1024, "{s:?}");
        let (body, _) = m.flush(1).unwrap();
        let p = points(&body);
        assert_eq!(p.len(), 1000);
        for (labels, count, _, _) in &p {
            assert_eq!(*count, 1);
            for (k, v) in labels {
                assert!(v.len() <= MAX_LABEL_BYTES, "{k}: {} bytes", v.len());
            }
            assert_eq!(labels[1].1.len(), MAX_LABEL_BYTES);
        }
        let names: BTreeSet<&str> = p.iter().map(|x| x.0[1].1.as_str()).collect();
        assert_eq!(names.len(), 1000);
        // Names that differ only after the limit are one series; a multi-byte character across
        // the limit is left out whole.
        let m = SpanMetrics::new(&config(10), 0);
        let r = resource("shop");
        let cut = format!("{}é", "a".repeat(MAX_LABEL_BYTES - 1));
        m.record(&span(&format!("{cut}1"), 1, false, "GET"), &r);
        m.record(&span(&format!("{cut}2"), 1, false, "GET"), &r);
        m.record(&span("GET /a", 1, false, "GET"), &r);
        m.record(&span("GET /b", 1, false, "GET"), &r);
        m.record(&span("GET /a", 1, false, "POST"), &r);
        m.record(&span("GET /a", 1, false, "GET"), &r);
        let p = points(&m.flush(1).unwrap().0);
        let calls: BTreeMap<(String, String), u64> = p
            .into_iter()
            .map(|(l, n, _, _)| ((l[1].1.clone(), l[4].1.clone()), n))
            .collect();
        let a = "a".repeat(MAX_LABEL_BYTES - 1);
        let want: BTreeMap<(String, String), u64> = [
            (a.as_str(), "GET", 2),
            ("GET /a", "GET", 2),
            ("GET /a", "POST", 1),
            ("GET /b", "GET", 1),
        ]
        .into_iter()
        .map(|(n, d, c)| ((n.to_string(), d.to_string()), c))
        .collect();
        assert_eq!(calls, want);
    }

    /// A refused flush of 100 000 series puts every point back into its own series (one hash
    /// lookup per point; the speed itself is `benches/benches/routing.rs`' concern).
    #[test]
    fn a_refused_flush_of_many_series_goes_back_to_each_series() {
        let n = 100_000;
        let m = SpanMetrics::new(&config(n), 0);
        let r = resource("shop");
        let other = resource("cart");
        for i in 0..n {
            let r = if i % 3 == 0 { &other } else { &r };
            m.record(
                &span(&format!("op{i}"), (i % 200) as u64, i % 7 == 0, "GET"),
                r,
            );
        }
        let (body, points_sent) = m.flush(10).unwrap();
        assert_eq!(points_sent, 2 * n as u64);
        m.refused(&body, m.window_start());
        m.record(&span("op1", 5, false, "GET"), &r);
        let (again, _) = m.flush(20).unwrap();
        let mut before = points(&body);
        let mut after = points(&again);
        before.sort_by(|a, b| a.0.cmp(&b.0));
        after.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(after.len(), n);
        let op1 = |p: &[Point]| p.iter().position(|x| x.0[1].1 == "op1").unwrap();
        let (i, j) = (op1(&before), op1(&after));
        assert_eq!(
            (after[j].1, &after[j].3),
            (before[i].1 + 1, &vec![before[i].3[0] + 1, 0, 0])
        );
        after.remove(j);
        before.remove(i);
        assert_eq!(after, before);
        assert_eq!(m.snapshot().overflow_spans, 0);
    }

    fn cumulative(max_series: usize, expiration: std::time::Duration) -> SpanMetricsConfig {
        SpanMetricsConfig {
            aggregation_temporality: SpanTemporality::Cumulative,
            metrics_expiration: expiration,
            ..config(max_series)
        }
    }

    /// (labels without the instance id, start, time, temporality, instance id) of a point.
    type Stamp = (Vec<String>, u64, u64, i32, Option<String>);

    /// The [`Stamp`] of every point.
    fn stamps(body: &Bytes) -> Vec<Stamp> {
        let req = ExportMetricsServiceRequest::decode(body.as_ref()).unwrap();
        let mut out = Vec::new();
        for m in req
            .resource_metrics
            .into_iter()
            .flat_map(|rm| rm.scope_metrics)
            .flat_map(|sm| sm.metrics)
        {
            let mut push = |attrs: &[KeyValue], start, time, temporality| {
                let mut id = None;
                let mut labels = Vec::new();
                for kv in attrs {
                    let Some(any_value::Value::StringValue(v)) =
                        kv.value.as_ref().and_then(|v| v.value.as_ref())
                    else {
                        panic!()
                    };
                    if kv.key == "collector.instance.id" {
                        id = Some(v.clone());
                    } else {
                        labels.push(format!("{}={v}", kv.key));
                    }
                }
                out.push((labels, start, time, temporality, id));
            };
            match m.data {
                Some(metric::Data::Sum(s)) => {
                    assert!(s.is_monotonic);
                    for p in &s.data_points {
                        push(
                            &p.attributes,
                            p.start_time_unix_nano,
                            p.time_unix_nano,
                            s.aggregation_temporality,
                        );
                    }
                }
                Some(metric::Data::Histogram(h)) => {
                    for p in &h.data_points {
                        push(
                            &p.attributes,
                            p.start_time_unix_nano,
                            p.time_unix_nano,
                            h.aggregation_temporality,
                        );
                    }
                }
                Some(metric::Data::ExponentialHistogram(h)) => {
                    for p in &h.data_points {
                        push(
                            &p.attributes,
                            p.start_time_unix_nano,
                            p.time_unix_nano,
                            h.aggregation_temporality,
                        );
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        out
    }

    /// Without the `collector.instance.id` label.
    fn plain(mut p: Vec<Point>) -> Vec<Point> {
        for x in &mut p {
            x.0.retain(|(k, _)| k != "collector.instance.id");
        }
        p
    }

    /// Cumulative: every flush sends every series from its first span, counts only growing;
    /// the start stays the time of the series' first span; each core has its own instance id.
    #[test]
    fn cumulative_counts_accumulate_across_flushes() {
        let before = unix_now_ns();
        let m = SpanMetrics::new(&cumulative(10, std::time::Duration::ZERO), 0);
        let r = resource("shop");
        m.record(&span("GET /", 5, false, "GET"), &r);
        m.record(&span("GET /", 50, false, "GET"), &r);
        let (first, n) = m.flush(before + 10).unwrap();
        assert_eq!(n, 2);
        let p = plain(points(&first));
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].1, p[0].2, &p[0].3), (2, 55.0, &vec![1, 1, 0]));
        // Nothing new: the same totals again, at the new time.
        let (second, _) = m.flush(before + 20).unwrap();
        assert_eq!(plain(points(&second)), p);
        m.record(&span("GET /", 500, false, "GET"), &r);
        m.record(&span("POST /", 5, true, "POST"), &r);
        let (third, n) = m.flush(before + 30).unwrap();
        assert_eq!(n, 4);
        let p = plain(points(&third));
        let get = p.iter().find(|x| x.0[1].1 == "GET /").unwrap();
        assert_eq!((get.1, get.2, &get.3), (3, 555.0, &vec![1, 1, 1]));
        let post = p.iter().find(|x| x.0[1].1 == "POST /").unwrap();
        assert_eq!((post.1, &post.3), (1, &vec![1, 0, 0]));
        // Start: when the series' first span was counted, the same in every flush.
        let s1 = stamps(&first);
        let s3 = stamps(&third);
        let start_of = |s: &[Stamp], name: &str| {
            let starts: BTreeSet<u64> = s
                .iter()
                .filter(|x| x.0.iter().any(|l| l == &format!("span.name={name}")))
                .map(|x| x.1)
                .collect();
            assert_eq!(starts.len(), 1, "{s:?}");
            starts.into_iter().next().unwrap()
        };
        let get_start = start_of(&s1, "GET /");
        assert!(get_start >= before && get_start <= unix_now_ns());
        assert_eq!(start_of(&s3, "GET /"), get_start);
        assert!(start_of(&s3, "POST /") >= get_start);
        for (_, _, time, temporality, id) in &s3 {
            assert_eq!(*time, before + 30);
            assert_eq!(*temporality, AggregationTemporality::Cumulative as i32);
            assert_eq!(id.as_deref().map(str::len), Some(36), "{id:?}");
        }
        let ids: BTreeSet<_> = s1.iter().chain(&s3).map(|x| x.4.clone()).collect();
        assert_eq!(ids.len(), 1);
        // Another core (another instance): another id.
        let other = SpanMetrics::new(&cumulative(10, std::time::Duration::ZERO), 0);
        other.record(&span("GET /", 5, false, "GET"), &r);
        let (o, _) = other.flush(before + 10).unwrap();
        assert_ne!(stamps(&o)[0].4, s1[0].4);
        // A refused flush changes nothing: the next one carries the totals.
        m.refused(&third, m.window_start());
        assert_eq!(plain(points(&m.flush(before + 40).unwrap().0)), p);
        assert_eq!(m.snapshot().refused_flushes, 1);
    }

    /// Cumulative and bounded: series past `max_series` count in the overflow series, which
    /// accumulates too; with `metrics_expiration`, series without spans are forgotten (in
    /// both temporalities) and their places taken by new series.
    #[test]
    fn cumulative_overflow_and_expiry() {
        let sec = 1_000_000_000u64;
        let m = SpanMetrics::new(&cumulative(2, std::time::Duration::from_secs(5)), 0);
        let r = resource("shop");
        for name in ["a", "b", "c", "d"] {
            m.record(&span(name, 1, false, "GET"), &r);
        }
        let overflow_label = vec![("otel.metric.overflow".to_string(), "true".to_string())];
        let calls_of = |body: &Bytes| -> BTreeMap<String, u64> {
            plain(points(body))
                .into_iter()
                .map(|(labels, count, _, _)| {
                    let name = if labels == overflow_label {
                        "overflow".to_string()
                    } else {
                        labels[1].1.clone()
                    };
                    (name, count)
                })
                .collect()
        };
        let t0 = 1_000 * sec;
        let got = calls_of(&m.flush(t0).unwrap().0);
        assert_eq!(
            got,
            BTreeMap::from([("a".into(), 1), ("b".into(), 1), ("overflow".into(), 2)])
        );
        m.record(&span("a", 1, false, "GET"), &r);
        m.record(&span("e", 1, false, "GET"), &r);
        let got = calls_of(&m.flush(t0 + 3 * sec).unwrap().0);
        assert_eq!(
            got,
            BTreeMap::from([("a".into(), 2), ("b".into(), 1), ("overflow".into(), 3)])
        );
        // At t0 + 6 s: b had no span for 6 s ≥ 5 s (forgotten), a and the overflow series for 3 s.
        let got = calls_of(&m.flush(t0 + 6 * sec).unwrap().0);
        assert_eq!(
            got,
            BTreeMap::from([("a".into(), 2), ("overflow".into(), 3)])
        );
        let s = m.snapshot();
        assert_eq!((s.series, s.expired_series, s.overflow_spans), (1, 1, 3));
        // The freed place goes to a new series (c, which counted in the overflow series
        // before); the overflow series keeps growing.
        m.record(&span("c", 1, false, "GET"), &r);
        m.record(&span("b", 1, false, "GET"), &r);
        m.record(&span("z", 1, false, "GET"), &r);
        let got = calls_of(&m.flush(t0 + 7 * sec).unwrap().0);
        assert_eq!(
            got,
            BTreeMap::from([("a".into(), 2), ("c".into(), 1), ("overflow".into(), 5)])
        );
        // Everything expired: nothing to send.
        assert!(m.flush(t0 + 20 * sec).is_none());
        assert_eq!((m.snapshot().series, m.snapshot().held_bytes), (0, 0));

        // Delta with expiration: expired series free their places too.
        let d = SpanMetrics::new(
            &SpanMetricsConfig {
                metrics_expiration: std::time::Duration::from_secs(5),
                ..config(1)
            },
            0,
        );
        d.record(&span("a", 1, false, "GET"), &r);
        d.flush(t0).unwrap();
        d.record(&span("b", 1, false, "GET"), &r);
        assert_eq!(d.snapshot().overflow_spans, 1);
        d.flush(t0 + sec).unwrap();
        assert!(d.flush(t0 + 10 * sec).is_none());
        assert_eq!(d.snapshot().series, 0);
        d.record(&span("b", 1, false, "GET"), &r);
        let p = points(&d.flush(t0 + 11 * sec).unwrap().0);
        assert_eq!((p.len(), p[0].0[1].1.as_str(), p[0].1), (1, "b", 1));
    }

    /// Cumulative exponential histograms: bucket counts only grow, across a change of scale.
    #[test]
    fn cumulative_exponential_histograms_are_monotonic() {
        let mut c = cumulative(10, std::time::Duration::ZERO);
        c.histogram = SpanHistogram::Exponential { max_size: 8 };
        let m = SpanMetrics::new(&c, 0);
        let r = resource("shop");
        let point = |body: &Bytes| {
            ExportMetricsServiceRequest::decode(body.as_ref())
                .unwrap()
                .resource_metrics
                .into_iter()
                .flat_map(|rm| rm.scope_metrics)
                .flat_map(|sm| sm.metrics)
                .find_map(|m| match m.data {
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        assert_eq!(
                            h.aggregation_temporality,
                            AggregationTemporality::Cumulative as i32
                        );
                        Some(h.data_points[0].clone())
                    }
                    _ => None,
                })
                .unwrap()
        };
        let mut last: Option<ExponentialHistogramDataPoint> = None;
        let mut sent = 0u64;
        for (round, values) in [vec![3, 3, 4], vec![0, 5], vec![1000, 2], vec![]]
            .into_iter()
            .enumerate()
        {
            for ms in &values {
                m.record(&span("GET /", *ms, false, "GET"), &r);
            }
            sent += values.len() as u64;
            let p = point(&m.flush(10 + round as u64).unwrap().0);
            let b = p.positive.clone().unwrap();
            assert_eq!(p.count, sent);
            assert_eq!(b.bucket_counts.iter().sum::<u64>() + p.zero_count, sent);
            assert!(b.bucket_counts.len() <= 8);
            if let Some(prev) = &last {
                // Every earlier bucket's count fits in the bucket that covers it now.
                assert!(
                    p.scale <= prev.scale && p.start_time_unix_nano == prev.start_time_unix_nano
                );
                let pb = prev.positive.clone().unwrap();
                let shift = prev.scale - p.scale;
                let mut folded = std::collections::BTreeMap::<i32, u64>::new();
                for (i, n) in pb.bucket_counts.iter().enumerate() {
                    *folded.entry((pb.offset + i as i32) >> shift).or_default() += n;
                }
                for (index, n) in folded {
                    let now = b
                        .bucket_counts
                        .get((index - b.offset) as usize)
                        .copied()
                        .unwrap_or(0);
                    assert!(now >= n, "bucket {index}: {now} < {n}");
                }
                assert!(p.zero_count >= prev.zero_count && p.sum >= prev.sum);
            }
            last = Some(p);
        }
    }

    /// The lower and upper bound of bucket `index` at `scale`.
    fn bounds(index: i32, scale: i32) -> (f64, f64) {
        let at = |i: i32| (f64::from(i) * 2f64.powi(-scale)).exp2();
        (at(index), at(index + 1))
    }

    #[test]
    fn exponential_indices_follow_the_otlp_bucket_bounds() {
        for scale in [-4, -1, 0, 1, 3, 8, 20] {
            // Exact powers of two are the upper bound of their bucket.
            for e in [-20, -1, 0, 1, 10, 30] {
                let v = 2f64.powi(e);
                let i = exp_index(v, scale);
                let (lo, hi) = bounds(i, scale);
                assert!(
                    lo < v * (1.0 + 1e-12) && v <= hi * (1.0 + 1e-12),
                    "{v} in {i} at {scale}"
                );
                if scale >= 0 {
                    assert!(exp_index(v * 1.000_001, scale) > i, "{v} ends bucket {i}");
                }
            }
            let mut x = 0.000_37_f64;
            while x < 1e7 {
                let i = exp_index(x, scale);
                let (lo, hi) = bounds(i, scale);
                assert!(
                    lo <= x * (1.0 + 1e-9) && x <= hi * (1.0 + 1e-9),
                    "{x} in {i} ({lo}, {hi}] at {scale}"
                );
                x *= 1.37;
            }
        }
    }

    #[test]
    fn an_exponential_histogram_keeps_every_value_within_max_size_buckets() {
        let mut h = ExpHistogram::default();
        let mut values = Vec::new();
        let mut x = 0.002_f64;
        for i in 0..5_000 {
            // Spread over nine decades, in no particular order.
            x = (x * 1.618_033_988_7) % 1e6 + 0.001;
            values.push(if i % 97 == 0 { 0.0 } else { x });
        }
        for &v in &values {
            h.record(v, 160);
        }
        assert!(h.counts.len() <= 160, "{} buckets", h.counts.len());
        assert!(h.scale < MAX_SCALE);
        assert_eq!(
            h.zero_count,
            values.iter().filter(|v| **v == 0.0).count() as u64
        );
        // Every value is in the bucket its index at the final scale names.
        let mut want = vec![0u64; h.counts.len()];
        for &v in values.iter().filter(|v| **v > 0.0) {
            let i = exp_index(v, h.scale) - h.offset;
            want[usize::try_from(i).expect("within the buckets")] += 1;
        }
        assert_eq!(h.counts, want);
        assert_eq!(h.min, 0.0);
        assert_eq!(h.max, values.iter().cloned().fold(0.0, f64::max));
        // A narrow range keeps the highest scale that fits.
        let mut narrow = ExpHistogram::default();
        for v in [100.0, 100.5, 101.0] {
            narrow.record(v, 160);
        }
        // log2(101 / 100) · 2^13 = 117.6 buckets; at scale 14 it would be 235.
        assert_eq!(narrow.scale, 13, "{narrow:?}");
        assert!(narrow.counts.len() <= 160);
    }

    #[test]
    fn exponential_points_count_every_span_and_survive_a_refused_flush() {
        let mut c = config(10);
        c.histogram = SpanHistogram::Exponential { max_size: 20 };
        let m = SpanMetrics::new(&c, 0);
        let r = resource("shop");
        for ms in [0, 1, 2, 5, 50, 500, 5000, 7, 7, 7] {
            m.record(&span("GET /", ms, false, "GET"), &r);
        }
        let (body, n) = m.flush(10).unwrap();
        assert_eq!(n, 2);
        let exp_points = |body: &Bytes| -> Vec<ExponentialHistogramDataPoint> {
            ExportMetricsServiceRequest::decode(body.as_ref())
                .unwrap()
                .resource_metrics
                .into_iter()
                .flat_map(|rm| rm.scope_metrics)
                .flat_map(|sm| sm.metrics)
                .filter_map(|m| match m.data {
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        assert_eq!(
                            h.aggregation_temporality,
                            AggregationTemporality::Delta as i32
                        );
                        Some(h.data_points)
                    }
                    _ => None,
                })
                .flatten()
                .collect()
        };
        let p = exp_points(&body);
        assert_eq!(p.len(), 1);
        let p = &p[0];
        assert_eq!(p.count, 10);
        assert_eq!(p.zero_count, 1);
        assert_eq!(p.sum, Some(5579.0));
        assert_eq!((p.min, p.max), (Some(0.0), Some(5000.0)));
        let b = p.positive.as_ref().unwrap();
        assert!(b.bucket_counts.len() <= 20);
        assert_eq!(b.bucket_counts.iter().sum::<u64>(), 9);
        // Refused: put back, and flushed again the same.
        m.refused(&body, m.window_start());
        let (again, _) = m.flush(20).unwrap();
        assert_eq!(
            exp_points(&again),
            exp_points(&body)
                .into_iter()
                .map(|mut p| {
                    p.start_time_unix_nano = 10;
                    p.time_unix_nano = 20;
                    p
                })
                .collect::<Vec<_>>()
        );
        // Put back into a window that already has other values: they add up.
        m.record(&span("GET /", 3, false, "GET"), &r);
        m.refused(&again, m.window_start());
        let (merged, _) = m.flush(30).unwrap();
        let p = &exp_points(&merged)[0];
        assert_eq!(p.count, 11);
        let b = p.positive.as_ref().unwrap();
        assert_eq!(b.bucket_counts.iter().sum::<u64>() + p.zero_count, 11);
    }
}
