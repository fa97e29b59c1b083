//! The `spanmetrics` processor: calls and a duration histogram per (service, span name, kind,
//! status, configured dimensions), aggregated on each span's owner core and handed to the
//! metrics pipeline as one OTLP request per flush (delta sums and histograms). The histogram has
//! explicit bounds, or base-2 exponential buckets ([`ExpHistogram`]: the highest scale at which
//! a window's durations fit in `max_size` buckets, as the OpenTelemetry SDKs aggregate).
//!
//! A span costs one pass over its fields and a hash lookup with a reused key buffer; a series is
//! allocated only when it first appears. At most `max_series` series per core: the spans of
//! any further series count in one `otel.metric.overflow="true"` series (and in
//! [`SpanMetricsSnapshot::overflow_spans`]).
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

/// One series' labels and aggregates.
#[derive(Debug, Clone)]
struct Series {
    /// Its key in [`State::index`] (empty for the overflow series).
    key: Box<[u8]>,
    /// Unix ns of its first span (the start of its cumulative points).
    start_ns: u64,
    /// Unix ns of the end of the last window in which it had a span.
    last_seen_ns: u64,
    /// A span was counted since the last flush.
    updated: bool,
    service: String,
    /// Point labels (span.name, span.kind, status.code, dimensions), or the overflow label.
    labels: Vec<(String, String)>,
    calls: u64,
    sum_ms: f64,
    /// Explicit histogram: a count per bucket (empty with an exponential histogram).
    counts: Vec<u64>,
    /// Exponential histogram (with `histogram = "exponential"`).
    exp: Option<ExpHistogram>,
}

impl Series {
    fn new(
        key: Box<[u8]>,
        service: String,
        labels: Vec<(String, String)>,
        histogram: &Hist,
    ) -> Series {
        let now = unix_now_ns();
        Series {
            key,
            start_ns: now,
            last_seen_ns: now,
            updated: false,
            service,
            labels,
            calls: 0,
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
    /// Series by key (keyed hash: the keys are made of span names and attribute values).
    index: HashMap<Box<[u8]>, usize, TraceIdHashBuilder>,
    series: Vec<Series>,
    overflow: Option<Series>,
    key: Vec<u8>,
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

fn push_key(key: &mut Vec<u8>, part: &[u8]) {
    key.extend_from_slice(&(part.len() as u32).to_le_bytes());
    key.extend_from_slice(part);
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
            histogram: match config.histogram {
                SpanHistogram::Explicit => Hist::Explicit(
                    config
                        .buckets
                        .iter()
                        .map(|d| d.as_secs_f64() * 1000.0)
                        .collect(),
                ),
                SpanHistogram::Exponential { max_size } => Hist::Exponential(max_size as usize),
            },
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
            index,
            series,
            overflow,
            key,
        } = &mut *state;
        key.clear();
        push_key(key, service.as_bytes());
        push_key(key, f.name);
        key.push(f.kind.clamp(0, 5) as u8);
        key.push(f.status_code.clamp(0, 2) as u8);
        for d in &self.dimensions {
            let v = raw_attribute(span, 9, d.as_bytes())
                .or_else(|| raw_attribute(resource, 1, d.as_bytes()));
            match v {
                Some(AnyValueRef::String(s)) => push_key(key, s.as_bytes()),
                Some(other) => push_key(key, label(Some(other)).unwrap_or_default().as_bytes()),
                None => key.push(0xff),
            }
        }
        let duration_ms = f.end_time_unix_nano.saturating_sub(f.start_time_unix_nano) as f64 / 1e6;
        let s = match index.get(&key[..]) {
            Some(&i) => &mut series[i],
            None if series.len() < self.max_series => {
                let mut labels = vec![
                    ("service.name".to_string(), service.to_string()),
                    (
                        "span.name".to_string(),
                        String::from_utf8_lossy(f.name).into_owned(),
                    ),
                    (
                        "span.kind".to_string(),
                        KINDS[f.kind.clamp(0, 5) as usize].to_string(),
                    ),
                    (
                        "status.code".to_string(),
                        STATUS[f.status_code.clamp(0, 2) as usize].to_string(),
                    ),
                ];
                for d in &self.dimensions {
                    let v = raw_attribute(span, 9, d.as_bytes())
                        .or_else(|| raw_attribute(resource, 1, d.as_bytes()));
                    if let Some(v) = label(v) {
                        labels.push((d.clone(), v));
                    }
                }
                let boxed = key.clone().into_boxed_slice();
                index.insert(boxed.clone(), series.len());
                series.push(Series::new(
                    boxed,
                    service.to_string(),
                    labels,
                    &self.histogram,
                ));
                series.last_mut().expect("just pushed")
            }
            None => {
                self.overflow_spans.set(self.overflow_spans.get() + 1);
                overflow.get_or_insert_with(|| self.overflow_series())
            }
        };
        s.updated = true;
        s.calls += 1;
        s.sum_ms += duration_ms;
        match &self.histogram {
            Hist::Explicit(bounds) => s.counts[bounds.partition_point(|b| *b < duration_ms)] += 1,
            Hist::Exponential(max_size) => {
                if let Some(e) = &mut s.exp {
                    e.record(duration_ms, *max_size);
                }
            }
        }
        self.spans.set(self.spans.get() + 1);
    }

    /// The counts as an `ExportMetricsServiceRequest` ending at `now_ns` and its number of
    /// data points: delta, the counts since the last flush (which restart); cumulative, every
    /// series' counts since its first span. Series not updated for `metrics_expiration` are
    /// forgotten first. `None` when there is nothing to send.
    pub fn flush(&self, now_ns: u64) -> Option<(Bytes, u64)> {
        let mut state = self.state.borrow_mut();
        self.expire(&mut state, now_ns);
        let mut all: Vec<Series> = if self.cumulative {
            let State {
                series, overflow, ..
            } = &*state;
            series.iter().chain(overflow.as_ref()).cloned().collect()
        } else {
            let mut all: Vec<Series> = state
                .series
                .iter_mut()
                .filter(|s| s.calls > 0)
                .map(|s| {
                    let out = s.clone();
                    s.reset();
                    out
                })
                .collect();
            all.extend(state.overflow.take());
            all
        };
        drop(state);
        all.retain(|s| s.calls > 0);
        if all.is_empty() {
            return None;
        }
        let window_start = self.window_start.replace(now_ns);
        if !self.cumulative {
            for s in &mut all {
                s.start_ns = window_start;
            }
        }
        let mut by_service: Vec<(String, Vec<Series>)> = Vec::new();
        for s in all {
            match by_service.iter_mut().find(|(svc, _)| *svc == s.service) {
                Some((_, v)) => v.push(s),
                None => by_service.push((s.service.clone(), vec![s])),
            }
        }
        let mut points = 0u64;
        let resource_metrics = by_service
            .into_iter()
            .map(|(service, series)| {
                let attrs = |s: &Series| -> Vec<KeyValue> {
                    let labels = s.labels.iter().map(|(k, v)| string_kv(k, v));
                    let instance = self
                        .instance_id
                        .as_deref()
                        .map(|id| string_kv("collector.instance.id", id));
                    labels.chain(instance).collect()
                };
                points += 2 * series.len() as u64;
                let calls = Metric {
                    name: format!("{}.calls", self.namespace),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: series
                            .iter()
                            .map(|s| NumberDataPoint {
                                attributes: attrs(s),
                                start_time_unix_nano: s.start_ns,
                                time_unix_nano: now_ns,
                                value: Some(number_data_point::Value::AsInt(s.calls as i64)),
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
                    data: Some(self.duration_data(&series, now_ns, &attrs)),
                    ..Default::default()
                };
                ResourceMetrics {
                    resource: Some(Resource {
                        attributes: if service.is_empty() {
                            Vec::new()
                        } else {
                            vec![string_kv("service.name", &service)]
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
        let req = ExportMetricsServiceRequest { resource_metrics };
        Some((Bytes::from(req.encode_to_vec()), points))
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
        let mut live = |s: &mut Series| {
            if s.updated {
                s.updated = false;
                s.last_seen_ns = now_ns;
            }
            expiration == 0 || now_ns.saturating_sub(s.last_seen_ns) < expiration
        };
        if state.overflow.as_mut().is_some_and(|o| !live(o)) {
            state.overflow = None;
        }
        let before = state.series.len();
        state.series.retain_mut(&mut live);
        if state.series.len() != before {
            self.expired
                .set(self.expired.get() + (before - state.series.len()) as u64);
            let State { index, series, .. } = state;
            index.clear();
            index.extend(series.iter().enumerate().map(|(i, s)| (s.key.clone(), i)));
        }
    }

    /// The series that counts spans past `max_series`.
    fn overflow_series(&self) -> Series {
        Series::new(
            Box::default(),
            String::new(),
            vec![("otel.metric.overflow".to_string(), "true".to_string())],
            &self.histogram,
        )
    }

    /// The duration histogram of `series` for the window `start..now_ns`.
    fn duration_data(
        &self,
        series: &[Series],
        now_ns: u64,
        attrs: &dyn Fn(&Series) -> Vec<KeyValue>,
    ) -> metric::Data {
        let temporality = self.temporality();
        match &self.histogram {
            Hist::Explicit(bounds) => metric::Data::Histogram(Histogram {
                data_points: series
                    .iter()
                    .map(|s| HistogramDataPoint {
                        attributes: attrs(s),
                        start_time_unix_nano: s.start_ns,
                        time_unix_nano: now_ns,
                        count: s.calls,
                        sum: Some(s.sum_ms),
                        bucket_counts: s.counts.clone(),
                        explicit_bounds: bounds.clone(),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: temporality,
            }),
            Hist::Exponential(_) => metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: series
                    .iter()
                    .map(|s| {
                        let e = s.exp.clone().unwrap_or_default();
                        ExponentialHistogramDataPoint {
                            attributes: attrs(s),
                            start_time_unix_nano: s.start_ns,
                            time_unix_nano: now_ns,
                            count: s.calls,
                            sum: Some(s.sum_ms),
                            scale: e.scale,
                            zero_count: e.zero_count,
                            positive: Some(exponential_histogram_data_point::Buckets {
                                offset: e.offset,
                                bucket_counts: e.counts,
                            }),
                            min: (s.calls > 0).then_some(e.min),
                            max: (s.calls > 0).then_some(e.max),
                            ..Default::default()
                        }
                    })
                    .collect(),
                aggregation_temporality: temporality,
            }),
        }
    }

    /// Puts back the counts of a flush the metrics pipeline refused (cumulative: nothing to put
    /// back, the next flush carries the totals).
    pub fn refused(&self, body: &Bytes, window_start_ns: u64) {
        self.refused.set(self.refused.get() + 1);
        if self.cumulative {
            return;
        }
        self.window_start.set(window_start_ns);
        let Ok(req) = ExportMetricsServiceRequest::decode(body.as_ref()) else {
            return;
        };
        let labels_of = |attributes: &[KeyValue]| -> Vec<(String, String)> {
            attributes
                .iter()
                .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(v) => Some((kv.key.clone(), v.clone())),
                    _ => None,
                })
                .collect()
        };
        let mut state = self.state.borrow_mut();
        let State {
            series, overflow, ..
        } = &mut *state;
        // The series a point of `labels` came from, or the overflow series.
        fn target<'a>(
            series: &'a mut [Series],
            overflow: &'a mut Option<Series>,
            labels: Vec<(String, String)>,
            make: impl FnOnce() -> Series,
        ) -> &'a mut Series {
            match series.iter().position(|s| s.labels == labels) {
                Some(i) => &mut series[i],
                None => overflow.get_or_insert_with(make),
            }
        }
        for m in req
            .resource_metrics
            .into_iter()
            .flat_map(|rm| rm.scope_metrics)
            .flat_map(|sm| sm.metrics)
        {
            match m.data {
                Some(metric::Data::Histogram(h)) => {
                    for p in h.data_points {
                        let t = target(series, overflow, labels_of(&p.attributes), || {
                            self.overflow_series()
                        });
                        t.calls += p.count;
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
                        let t = target(series, overflow, labels_of(&p.attributes), || {
                            self.overflow_series()
                        });
                        t.calls += p.count;
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
        assert_eq!(m.snapshot().series, 0);

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
