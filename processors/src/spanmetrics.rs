//! The `spanmetrics` processor: calls and a duration histogram per (service, span name, kind,
//! status, configured dimensions), aggregated on each span's owner core and handed to the
//! metrics pipeline as one OTLP request per flush (delta sums and histograms).
//!
//! A span costs one pass over its fields and a hash lookup with a reused key buffer; a series is
//! allocated only when it first appears. At most `max_series` series per core: the spans of
//! any further series count in one `otel.metric.overflow="true"` series (and in
//! [`SpanMetricsSnapshot::overflow_spans`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;
use shardtel_config::SpanMetricsConfig;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::common::v1::{any_value, AnyValue, KeyValue};
use shardtel_protocol::proto::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint, Metric,
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
    service: String,
    /// Point labels (span.name, span.kind, status.code, dimensions), or the overflow label.
    labels: Vec<(String, String)>,
    calls: u64,
    sum_ms: f64,
    counts: Vec<u64>,
}

#[derive(Default)]
struct State {
    index: HashMap<Box<[u8]>, usize>,
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
}

/// One core's span metrics.
pub struct SpanMetrics {
    dimensions: Vec<String>,
    bounds_ms: Vec<f64>,
    max_series: usize,
    namespace: String,
    state: RefCell<State>,
    /// Start of the current delta window (unix ns).
    window_start: Cell<u64>,
    spans: Cell<u64>,
    overflow_spans: Cell<u64>,
    refused: Cell<u64>,
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
            bounds_ms: config
                .buckets
                .iter()
                .map(|d| d.as_secs_f64() * 1000.0)
                .collect(),
            max_series: config.max_series,
            namespace: config.namespace.clone(),
            state: RefCell::new(State::default()),
            window_start: Cell::new(now_ns),
            spans: Cell::new(0),
            overflow_spans: Cell::new(0),
            refused: Cell::new(0),
        }
    }

    /// Counts spans `spans` of `batch` (every span of it when `None`).
    pub fn record_batch(&self, batch: &SpanBatch, spans: Option<&[u32]>) {
        let index = &batch.index;
        let mut each = |i: u32| {
            let r = index.scopes[index.spans[i as usize].scope as usize].resource;
            self.record(batch.span(i as usize), resource_body(index, &batch.buf, r));
        };
        match spans {
            Some(list) => list.iter().copied().for_each(&mut each),
            None => (0..index.spans.len() as u32).for_each(&mut each),
        }
    }

    /// Counts one span (a `Span` body) of the resource `resource` (a `Resource` body).
    pub fn record(&self, span: &[u8], resource: &[u8]) {
        let f = SpanView::new(span).fields();
        let service = match raw_attribute(resource, 1, b"service.name") {
            Some(AnyValueRef::String(s)) => s,
            _ => "",
        };
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
        let bucket = self.bounds_ms.partition_point(|b| *b < duration_ms);
        let n_buckets = self.bounds_ms.len() + 1;
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
                index.insert(key.clone().into_boxed_slice(), series.len());
                series.push(Series {
                    service: service.to_string(),
                    labels,
                    calls: 0,
                    sum_ms: 0.0,
                    counts: vec![0; n_buckets],
                });
                series.last_mut().expect("just pushed")
            }
            None => {
                self.overflow_spans.set(self.overflow_spans.get() + 1);
                overflow.get_or_insert_with(|| Series {
                    service: String::new(),
                    labels: vec![("otel.metric.overflow".to_string(), "true".to_string())],
                    calls: 0,
                    sum_ms: 0.0,
                    counts: vec![0; n_buckets],
                })
            }
        };
        s.calls += 1;
        s.sum_ms += duration_ms;
        s.counts[bucket] += 1;
        self.spans.set(self.spans.get() + 1);
    }

    /// The counts since the last flush as an `ExportMetricsServiceRequest` (delta sums and
    /// histograms ending at `now_ns`) and its number of data points; the counts restart.
    /// `None` when no span was counted.
    pub fn flush(&self, now_ns: u64) -> Option<(Bytes, u64)> {
        let mut state = self.state.borrow_mut();
        let mut all: Vec<Series> = state
            .series
            .iter_mut()
            .filter(|s| s.calls > 0)
            .map(|s| {
                let out = s.clone();
                s.calls = 0;
                s.sum_ms = 0.0;
                s.counts.iter_mut().for_each(|c| *c = 0);
                out
            })
            .collect();
        all.extend(state.overflow.take());
        drop(state);
        if all.is_empty() {
            return None;
        }
        let start = self.window_start.replace(now_ns);
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
                    s.labels.iter().map(|(k, v)| string_kv(k, v)).collect()
                };
                points += 2 * series.len() as u64;
                let calls = Metric {
                    name: format!("{}.calls", self.namespace),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: series
                            .iter()
                            .map(|s| NumberDataPoint {
                                attributes: attrs(s),
                                start_time_unix_nano: start,
                                time_unix_nano: now_ns,
                                value: Some(number_data_point::Value::AsInt(s.calls as i64)),
                                ..Default::default()
                            })
                            .collect(),
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                };
                let duration = Metric {
                    name: format!("{}.duration", self.namespace),
                    unit: "ms".into(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: series
                            .iter()
                            .map(|s| HistogramDataPoint {
                                attributes: attrs(s),
                                start_time_unix_nano: start,
                                time_unix_nano: now_ns,
                                count: s.calls,
                                sum: Some(s.sum_ms),
                                bucket_counts: s.counts.clone(),
                                explicit_bounds: self.bounds_ms.clone(),
                                ..Default::default()
                            })
                            .collect(),
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                    })),
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

    /// Puts back the counts of a flush the metrics pipeline refused.
    pub fn refused(&self, body: &Bytes, window_start_ns: u64) {
        self.refused.set(self.refused.get() + 1);
        self.window_start.set(window_start_ns);
        let Ok(req) = ExportMetricsServiceRequest::decode(body.as_ref()) else {
            return;
        };
        let mut state = self.state.borrow_mut();
        for rm in req.resource_metrics {
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let Some(metric::Data::Histogram(h)) = m.data else {
                        continue;
                    };
                    for p in h.data_points {
                        let labels: Vec<(String, String)> = p
                            .attributes
                            .iter()
                            .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                                any_value::Value::StringValue(v) => {
                                    Some((kv.key.clone(), v.clone()))
                                }
                                _ => None,
                            })
                            .collect();
                        let n_buckets = p.bucket_counts.len();
                        let State {
                            series, overflow, ..
                        } = &mut *state;
                        let target = match series.iter_mut().find(|s| s.labels == labels) {
                            Some(s) => s,
                            None => overflow.get_or_insert_with(|| Series {
                                service: String::new(),
                                labels: vec![(
                                    "otel.metric.overflow".to_string(),
                                    "true".to_string(),
                                )],
                                calls: 0,
                                sum_ms: 0.0,
                                counts: vec![0; n_buckets],
                            }),
                        };
                        target.calls += p.count;
                        target.sum_ms += p.sum.unwrap_or(0.0);
                        for (c, n) in target.counts.iter_mut().zip(&p.bucket_counts) {
                            *c += n;
                        }
                    }
                }
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardtel_protocol::proto::trace::v1::{Span, Status};

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
}
