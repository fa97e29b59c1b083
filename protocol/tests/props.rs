//! Property tests: the scanner agrees with a full prost decode, re-framed output decodes to the
//! same spans, and no input (random or a damaged valid encoding) makes anything panic.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::proto::common::v1::{
    any_value, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use shardtel_protocol::proto::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric, number_data_point,
    summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::proto::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use shardtel_protocol::reframe::{encode_items, encode_trace_spans, encode_traces, Encoded};
use shardtel_protocol::route::owner_core;
use shardtel_protocol::scan::{scan_logs, scan_metrics, SpanBatch, TracesIndex};
use shardtel_protocol::{grpc, json, Signal};

// ---- generators ------------------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-z._]{0,12}", 1 => any::<String>().prop_map(|s| s.chars().take(8).collect())]
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    use any_value::Value as V;
    let leaf = prop_oneof![
        text().prop_map(V::StringValue),
        any::<bool>().prop_map(V::BoolValue),
        any::<i64>().prop_map(V::IntValue),
        // No NaN: prost messages compare with PartialEq.
        prop_oneof![-1e12..1e12f64, Just(f64::INFINITY), Just(-0.0)].prop_map(V::DoubleValue),
        proptest::collection::vec(any::<u8>(), 0..6).prop_map(V::BytesValue),
    ]
    .prop_map(|v| AnyValue { value: Some(v) });
    let leaf = prop_oneof![5 => leaf, 1 => Just(AnyValue { value: None })];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(|values| AnyValue {
                value: Some(V::ArrayValue(ArrayValue { values }))
            }),
            proptest::collection::vec((text(), proptest::option::of(inner)), 0..3).prop_map(
                |kvs| AnyValue {
                    value: Some(V::KvlistValue(KeyValueList {
                        values: kvs
                            .into_iter()
                            .map(|(key, value)| KeyValue {
                                key,
                                value,
                                ..Default::default()
                            })
                            .collect(),
                    })),
                }
            ),
        ]
    })
}

fn attributes(max: usize) -> impl Strategy<Value = Vec<KeyValue>> {
    proptest::collection::vec(
        (text(), proptest::option::weighted(0.9, any_value())).prop_map(|(key, value)| KeyValue {
            key,
            value,
            ..Default::default()
        }),
        0..max,
    )
}

fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), len..=len)
}

fn maybe_id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), id(len)]
}

fn gen_span() -> impl Strategy<Value = Span> {
    let ids = (
        id(16),
        id(8),
        maybe_id(8),
        text(),
        text(),
        0..6i32,
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    );
    let events = proptest::collection::vec(
        (any::<u64>(), text(), attributes(3), any::<u32>()).prop_map(|(t, name, attributes, d)| {
            span::Event {
                time_unix_nano: t,
                name,
                attributes,
                dropped_attributes_count: d,
            }
        }),
        0..3,
    );
    let links = proptest::collection::vec(
        (
            maybe_id(16),
            maybe_id(8),
            text(),
            attributes(2),
            any::<u32>(),
        )
            .prop_map(|(t, s, ts, attributes, flags)| span::Link {
                trace_id: t,
                span_id: s,
                trace_state: ts,
                attributes,
                dropped_attributes_count: 1,
                flags,
            }),
        0..2,
    );
    let status = proptest::option::of(
        (text(), 0..3i32).prop_map(|(message, code)| Status { message, code }),
    );
    (
        ids,
        attributes(6),
        events,
        links,
        status,
        any::<(u32, u32, u32)>(),
    )
        .prop_map(
            |(
                (t, s, p, ts, name, kind, start, end, flags),
                attributes,
                events,
                links,
                status,
                (da, de, dl),
            )| Span {
                trace_id: t,
                span_id: s,
                parent_span_id: p,
                trace_state: ts,
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                flags,
                attributes,
                dropped_attributes_count: da,
                events,
                dropped_events_count: de,
                links,
                dropped_links_count: dl,
                status,
            },
        )
}

fn gen_resource() -> impl Strategy<Value = Option<Resource>> {
    proptest::option::of(
        (attributes(4), any::<u32>(), proptest::bool::weighted(0.2)).prop_map(|(a, d, e)| {
            Resource {
                attributes: a,
                dropped_attributes_count: d,
                entity_refs: if e {
                    vec![EntityRef {
                        schema_url: "u".into(),
                        r#type: "service".into(),
                        id_keys: vec!["service.name".into()],
                        description_keys: vec![],
                    }]
                } else {
                    vec![]
                },
            }
        }),
    )
}

fn gen_scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
    proptest::option::of((text(), text(), attributes(2), any::<u32>()).prop_map(
        |(name, version, attributes, d)| InstrumentationScope {
            name,
            version,
            attributes,
            dropped_attributes_count: d,
        },
    ))
}

fn gen_traces() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope = (
        gen_scope(),
        proptest::collection::vec(gen_span(), 0..6),
        text(),
    )
        .prop_map(|(scope, spans, schema_url)| ScopeSpans {
            scope,
            spans,
            schema_url,
        });
    let resource = (
        gen_resource(),
        proptest::collection::vec(scope, 0..3),
        text(),
    )
        .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        });
    proptest::collection::vec(resource, 0..4)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

fn gen_exemplars() -> impl Strategy<Value = Vec<Exemplar>> {
    proptest::collection::vec(
        (
            attributes(2),
            any::<u64>(),
            any::<bool>(),
            maybe_id(8),
            maybe_id(16),
        )
            .prop_map(|(a, t, int, s, tr)| Exemplar {
                filtered_attributes: a,
                time_unix_nano: t,
                value: Some(if int {
                    exemplar::Value::AsInt(t as i64)
                } else {
                    exemplar::Value::AsDouble(1.5)
                }),
                span_id: s,
                trace_id: tr,
            }),
        0..2,
    )
}

fn number_points() -> impl Strategy<Value = Vec<NumberDataPoint>> {
    proptest::collection::vec(
        (attributes(3), any::<u64>(), any::<bool>(), gen_exemplars()).prop_map(
            |(a, t, int, exemplars)| NumberDataPoint {
                attributes: a,
                start_time_unix_nano: t / 2,
                time_unix_nano: t,
                exemplars,
                flags: 0,
                value: Some(if int {
                    number_data_point::Value::AsInt(t as i64)
                } else {
                    number_data_point::Value::AsDouble(t as f64)
                }),
            },
        ),
        0..4,
    )
}

fn gen_metric() -> impl Strategy<Value = Metric> {
    let hist_points = proptest::collection::vec(
        (
            attributes(2),
            proptest::collection::vec(any::<u64>(), 0..5),
            gen_exemplars(),
        )
            .prop_map(|(a, b, exemplars)| HistogramDataPoint {
                attributes: a,
                count: b.iter().fold(0u64, |x, y| x.wrapping_add(*y)),
                explicit_bounds: b.iter().skip(1).map(|x| *x as f64).collect(),
                bucket_counts: b,
                sum: Some(3.0),
                min: None,
                max: Some(9.0),
                exemplars,
                ..Default::default()
            }),
        0..3,
    );
    let exp_points = proptest::collection::vec(
        (
            attributes(2),
            proptest::collection::vec(any::<u64>(), 0..4),
            -10..10i32,
        )
            .prop_map(|(a, b, scale)| ExponentialHistogramDataPoint {
                attributes: a,
                scale,
                positive: Some(Buckets {
                    offset: scale,
                    bucket_counts: b,
                }),
                negative: None,
                zero_threshold: 0.5,
                ..Default::default()
            }),
        0..3,
    );
    let summary_points = proptest::collection::vec(
        (attributes(2), any::<u64>()).prop_map(|(a, c)| SummaryDataPoint {
            attributes: a,
            count: c,
            sum: 2.0,
            quantile_values: vec![ValueAtQuantile {
                quantile: 0.5,
                value: 1.0,
            }],
            ..Default::default()
        }),
        0..3,
    );
    let data = prop_oneof![
        Just(None),
        number_points().prop_map(|data_points| Some(metric::Data::Gauge(Gauge { data_points }))),
        (number_points(), any::<bool>()).prop_map(|(data_points, m)| Some(metric::Data::Sum(
            Sum {
                data_points,
                aggregation_temporality: 2,
                is_monotonic: m
            }
        ))),
        hist_points.prop_map(|data_points| Some(metric::Data::Histogram(Histogram {
            data_points,
            aggregation_temporality: 1
        }))),
        exp_points.prop_map(|data_points| Some(metric::Data::ExponentialHistogram(
            ExponentialHistogram {
                data_points,
                aggregation_temporality: 1
            }
        ))),
        summary_points.prop_map(|data_points| Some(metric::Data::Summary(Summary { data_points }))),
    ];
    (text(), text(), data, attributes(2)).prop_map(|(name, unit, data, metadata)| Metric {
        name,
        description: String::new(),
        unit,
        metadata,
        data,
    })
}

fn gen_metrics() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    let scope = (
        gen_scope(),
        proptest::collection::vec(gen_metric(), 0..4),
        text(),
    )
        .prop_map(|(scope, metrics, schema_url)| ScopeMetrics {
            scope,
            metrics,
            schema_url,
        });
    let resource = (
        gen_resource(),
        proptest::collection::vec(scope, 0..3),
        text(),
    )
        .prop_map(|(resource, scope_metrics, schema_url)| ResourceMetrics {
            resource,
            scope_metrics,
            schema_url,
        });
    proptest::collection::vec(resource, 0..3)
        .prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
}

fn gen_logs() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let record = (
        any::<u64>(),
        0..25i32,
        text(),
        proptest::option::of(any_value()),
        attributes(4),
        maybe_id(16),
        maybe_id(8),
    )
        .prop_map(
            |(t, sev, st, body, attributes, trace_id, span_id)| LogRecord {
                time_unix_nano: t,
                observed_time_unix_nano: t,
                severity_number: sev,
                severity_text: st,
                body,
                attributes,
                trace_id,
                span_id,
                flags: 1,
                ..Default::default()
            },
        );
    let scope = (gen_scope(), proptest::collection::vec(record, 0..4), text()).prop_map(
        |(scope, log_records, schema_url)| ScopeLogs {
            scope,
            log_records,
            schema_url,
        },
    );
    let resource = (
        gen_resource(),
        proptest::collection::vec(scope, 0..3),
        text(),
    )
        .prop_map(|(resource, scope_logs, schema_url)| ResourceLogs {
            resource,
            scope_logs,
            schema_url,
        });
    proptest::collection::vec(resource, 0..3)
        .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
}

/// Damages a valid encoding: truncation, bit flips, byte insertions or deletions.
fn damaged(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        valid,
        proptest::collection::vec((0..4u8, any::<usize>(), any::<u8>()), 1..4),
    )
        .prop_map(|(mut b, edits)| {
            for (kind, at, byte) in edits {
                if b.is_empty() {
                    break;
                }
                let at = at % b.len();
                match kind {
                    0 => b.truncate(at),
                    1 => b[at] ^= 1 << (byte % 8),
                    2 => b.insert(at, byte),
                    _ => {
                        b.remove(at);
                    }
                }
            }
            b
        })
}

// ---- helpers ---------------------------------------------------------------------------------

fn metric_points(req: &ExportMetricsServiceRequest) -> u32 {
    let mut n = 0;
    for rm in &req.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                n += match &m.data {
                    None => 0,
                    Some(metric::Data::Gauge(g)) => g.data_points.len(),
                    Some(metric::Data::Sum(s)) => s.data_points.len(),
                    Some(metric::Data::Histogram(h)) => h.data_points.len(),
                    Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(metric::Data::Summary(s)) => s.data_points.len(),
                } as u32;
            }
        }
    }
    n
}

fn log_records(req: &ExportLogsServiceRequest) -> u32 {
    req.resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len() as u32)
        .sum()
}

/// Each span with its resource and scope, as sortable encoded keys.
fn span_multiset(req: &ExportTraceServiceRequest) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let r = ResourceSpans {
            scope_spans: vec![],
            ..rs.clone()
        }
        .encode_to_vec();
        for ss in &rs.scope_spans {
            let s = ScopeSpans {
                spans: vec![],
                ..ss.clone()
            }
            .encode_to_vec();
            for sp in &ss.spans {
                out.push((r.clone(), s.clone(), sp.encode_to_vec()));
            }
        }
    }
    out.sort();
    out
}

fn concat(buf: &[u8], ranges: impl Iterator<Item = std::ops::Range<usize>>) -> Vec<u8> {
    ranges.flat_map(|r| buf[r].iter().copied()).collect()
}

/// The scanner must be at least as strict as prost: whatever it accepts, prost decodes, with
/// the same spans and trace ids.
fn check_traces_input(bytes: &[u8]) {
    let mut idx = TracesIndex::default();
    if idx.scan(bytes).is_ok() {
        let req =
            ExportTraceServiceRequest::decode(bytes).expect("scan accepted what prost rejects");
        let spans: Vec<&Span> = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        assert_eq!(idx.spans.len(), spans.len());
        for (e, s) in idx.spans.iter().zip(spans) {
            assert_eq!(&e.trace_id[..], &s.trace_id[..]);
        }
    }
}

fn check_metrics_input(bytes: &[u8]) {
    // The indexing scan (routing) accepts and counts exactly what the counting scan does.
    let indexed = TracesIndex::default().scan_items(bytes, Signal::Metrics);
    assert_eq!(
        indexed.as_ref().ok(),
        scan_metrics(bytes)
            .ok()
            .map(|c| u64::from(c.items))
            .as_ref()
    );
    if let Ok(c) = scan_metrics(bytes) {
        let req = ExportMetricsServiceRequest::decode(bytes)
            .expect("scan_metrics accepted what prost rejects");
        assert_eq!(c.resources as usize, req.resource_metrics.len());
        assert_eq!(c.items, metric_points(&req));
    }
}

fn check_logs_input(bytes: &[u8]) {
    let indexed = TracesIndex::default().scan_items(bytes, Signal::Logs);
    assert_eq!(
        indexed.as_ref().ok(),
        scan_logs(bytes).ok().map(|c| u64::from(c.items)).as_ref()
    );
    if let Ok(c) = scan_logs(bytes) {
        let req =
            ExportLogsServiceRequest::decode(bytes).expect("scan_logs accepted what prost rejects");
        assert_eq!(c.resources as usize, req.resource_logs.len());
        assert_eq!(c.items, log_records(&req));
    }
}

// ---- properties ------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn scan_agrees_with_prost(req in gen_traces()) {
        let buf = req.encode_to_vec();
        let decoded = ExportTraceServiceRequest::decode(&buf[..]).unwrap();
        let mut idx = TracesIndex::default();
        idx.scan(&buf).unwrap();
        prop_assert_eq!(idx.resources.len(), decoded.resource_spans.len());
        let mut span_i = 0usize;
        let mut scope_i = 0usize;
        for (ri, rs) in decoded.resource_spans.iter().enumerate() {
            let header = ResourceSpans::decode(&concat(&buf, idx.resource_headers(ri as u32))[..]).unwrap();
            prop_assert_eq!(&header, &ResourceSpans { scope_spans: vec![], ..rs.clone() });
            for ss in &rs.scope_spans {
                prop_assert_eq!(idx.scopes[scope_i].resource as usize, ri);
                let header = ScopeSpans::decode(&concat(&buf, idx.scope_headers(scope_i as u32))[..]).unwrap();
                prop_assert_eq!(&header, &ScopeSpans { spans: vec![], ..ss.clone() });
                for sp in &ss.spans {
                    let e = &idx.spans[span_i];
                    prop_assert_eq!(e.scope as usize, scope_i);
                    prop_assert_eq!(&e.trace_id[..], &sp.trace_id[..]);
                    let body = &buf[e.range.start as usize..e.range.end as usize];
                    prop_assert_eq!(&Span::decode(body).unwrap(), sp);
                    span_i += 1;
                }
                scope_i += 1;
            }
        }
        prop_assert_eq!(idx.spans.len(), span_i);
        prop_assert_eq!(idx.scopes.len(), scope_i);
        prop_assert_eq!(idx.span_bytes(), decoded.resource_spans.iter().flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans).map(|s| s.encoded_len()).sum::<usize>());
        // The structural scan (for batches validated before) builds the same index.
        let mut structural = TracesIndex::default();
        structural.scan_structure(&buf).unwrap();
        prop_assert_eq!(&structural, &idx);
    }

    #[test]
    fn partition_and_reframe_keep_every_span(req in gen_traces(), n in 1usize..6, salt in any::<u8>()) {
        let buf = Bytes::from(req.encode_to_vec());
        let decoded = ExportTraceServiceRequest::decode(buf.clone()).unwrap();
        let batch = SpanBatch::scan(buf.clone()).unwrap();
        let mut parts = Vec::new();
        batch.index.partition(n, |t| owner_core(&{ let mut x = *t; x[0] ^= salt; x }, n), &mut parts);
        prop_assert_eq!(parts.len(), n);
        let mut all = Encoded::default();
        for (d, part) in parts.into_iter().enumerate() {
            for s in &part.spans {
                prop_assert_eq!(owner_core(&{ let mut x = s.trace_id; x[0] ^= salt; x }, n), d);
            }
            let part_batch = SpanBatch { buf: buf.clone(), index: part, release_token: None };
            let mut one = Encoded::default();
            encode_traces(&part_batch, &mut one);
            // Each part alone is a valid request holding exactly its spans.
            let alone = ExportTraceServiceRequest::decode(one.to_bytes()).unwrap();
            prop_assert_eq!(
                alone.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum::<usize>(),
                part_batch.index.spans.len()
            );
            encode_traces(&part_batch, &mut all);
        }
        let merged = ExportTraceServiceRequest::decode(all.to_bytes()).unwrap();
        prop_assert_eq!(span_multiset(&merged), span_multiset(&decoded));
    }

    #[test]
    fn reframe_subsets(req in gen_traces(), picks in proptest::collection::vec(any::<bool>(), 0..40)) {
        let buf = Bytes::from(req.encode_to_vec());
        let batch = SpanBatch::scan(buf.clone()).unwrap();
        let chosen: Vec<u32> = (0..batch.index.spans.len() as u32)
            .filter(|i| picks.get(*i as usize).copied().unwrap_or(false))
            .collect();
        let mut out = Encoded::default();
        encode_trace_spans(&batch, &chosen, &mut out);
        let got = ExportTraceServiceRequest::decode(out.to_bytes()).unwrap();
        let bodies: Vec<Vec<u8>> = got.resource_spans.iter().flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans).map(|s| s.encode_to_vec()).collect();
        let want: Vec<Vec<u8>> = chosen.iter().map(|&i| batch.span_body(i as usize).to_vec()).collect();
        prop_assert_eq!(bodies, want);
        // The whole batch re-encodes to the same request.
        let mut whole = Encoded::default();
        encode_traces(&batch, &mut whole);
        prop_assert_eq!(
            ExportTraceServiceRequest::decode(whole.to_bytes()).unwrap(),
            ExportTraceServiceRequest::decode(buf).unwrap()
        );
    }

    #[test]
    fn metrics_counts_agree(req in gen_metrics()) {
        let buf = req.encode_to_vec();
        let c = scan_metrics(&buf).unwrap();
        prop_assert_eq!(c.resources as usize, req.resource_metrics.len());
        prop_assert_eq!(c.items, metric_points(&req));
    }

    #[test]
    fn logs_counts_agree(req in gen_logs()) {
        let buf = req.encode_to_vec();
        let c = scan_logs(&buf).unwrap();
        prop_assert_eq!(c.resources as usize, req.resource_logs.len());
        prop_assert_eq!(c.items, log_records(&req));
    }

    /// A logs request indexed by `scan_items` re-frames any subset of its records (routing):
    /// exactly those records, in order, and the whole set re-frames to the same request.
    #[test]
    fn log_subsets_reframe(req in gen_logs(), picks in proptest::collection::vec(any::<bool>(), 0..40)) {
        let buf = Bytes::from(req.encode_to_vec());
        let mut index = TracesIndex::default();
        let items = index.scan_items(&buf, Signal::Logs).unwrap();
        prop_assert_eq!(items, u64::from(log_records(&req)));
        let chosen: Vec<u32> = (0..index.spans.len() as u32)
            .filter(|i| picks.get(*i as usize).copied().unwrap_or(false))
            .collect();
        let mut out = Encoded::default();
        encode_items(&buf, &index, &chosen, None, &mut out);
        let got = ExportLogsServiceRequest::decode(out.to_bytes()).unwrap();
        // (Compared encoded: values may hold NaN.) Each record under its own resource and scope.
        let with_parents = |r: &ExportLogsServiceRequest| -> Vec<Vec<u8>> {
            r.resource_logs.iter().flat_map(|rl| rl.scope_logs.iter().flat_map(move |sl| {
                sl.log_records.iter().map(move |rec| {
                    let mut b = rl.resource.as_ref().map(|r| r.encode_to_vec()).unwrap_or_default();
                    b.extend(rl.schema_url.as_bytes());
                    b.extend(sl.scope.as_ref().map(|s| s.encode_to_vec()).unwrap_or_default());
                    b.extend(sl.schema_url.as_bytes());
                    b.extend(rec.encode_to_vec());
                    b
                })
            })).collect()
        };
        let all = with_parents(&req);
        let want: Vec<Vec<u8>> = chosen.iter().map(|&i| all[i as usize].clone()).collect();
        prop_assert_eq!(with_parents(&got), want);
        let every: Vec<u32> = (0..index.spans.len() as u32).collect();
        let mut whole = Encoded::default();
        encode_items(&buf, &index, &every, None, &mut whole);
        let whole = ExportLogsServiceRequest::decode(whole.to_bytes()).unwrap();
        prop_assert_eq!(with_parents(&whole), all);
    }

    /// The same for metrics: any subset of the `Metric`s, and the points they hold.
    #[test]
    fn metric_subsets_reframe(req in gen_metrics(), picks in proptest::collection::vec(any::<bool>(), 0..40)) {
        let buf = Bytes::from(req.encode_to_vec());
        let mut index = TracesIndex::default();
        let points = index.scan_items(&buf, Signal::Metrics).unwrap();
        prop_assert_eq!(points, u64::from(metric_points(&req)));
        let chosen: Vec<u32> = (0..index.spans.len() as u32)
            .filter(|i| picks.get(*i as usize).copied().unwrap_or(false))
            .collect();
        let mut out = Encoded::default();
        encode_items(&buf, &index, &chosen, None, &mut out);
        let got = ExportMetricsServiceRequest::decode(out.to_bytes()).unwrap();
        let encoded = |r: &ExportMetricsServiceRequest| -> Vec<Vec<u8>> {
            r.resource_metrics.iter().flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics).map(|m| m.encode_to_vec()).collect()
        };
        let all = encoded(&req);
        let want: Vec<Vec<u8>> = chosen.iter().map(|&i| all[i as usize].clone()).collect();
        prop_assert_eq!(encoded(&got), want);
    }

    #[test]
    fn json_round_trips(t in gen_traces(), m in gen_metrics(), l in gen_logs()) {
        for (signal, pb) in [(Signal::Traces, t.encode_to_vec()), (Signal::Metrics, m.encode_to_vec()), (Signal::Logs, l.encode_to_vec())] {
            let text = json::from_protobuf(signal, &pb).unwrap();
            prop_assert!(!text.contains(&b'\n'));
            let back = json::to_protobuf(signal, &text).unwrap();
            prop_assert_eq!(json::from_protobuf(signal, &back).unwrap(), text);
        }
        // Span content survives exactly (ids, times, attributes).
        let back = json::to_protobuf(Signal::Traces, &json::from_protobuf(Signal::Traces, &t.encode_to_vec()).unwrap()).unwrap();
        let back = ExportTraceServiceRequest::decode(back).unwrap();
        let spans = |r: &ExportTraceServiceRequest| -> Vec<Span> {
            r.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans)
                .map(|s| Span { status: None, ..s.clone() }).collect()
        };
        let normalise = |mut s: Vec<Span>| {
            for sp in &mut s {
                for kv in sp.attributes.iter_mut().chain(sp.events.iter_mut().flat_map(|e| &mut e.attributes))
                    .chain(sp.links.iter_mut().flat_map(|l| &mut l.attributes)) {
                    if kv.value.is_none() { kv.value = Some(AnyValue::default()); }
                }
            }
            s
        };
        prop_assert_eq!(normalise(spans(&back)).len(), spans(&t).len());
        for (a, b) in normalise(spans(&back)).iter().zip(spans(&t)) {
            prop_assert_eq!(&a.trace_id, &b.trace_id);
            prop_assert_eq!(&a.name, &b.name);
            prop_assert_eq!(a.start_time_unix_nano, b.start_time_unix_nano);
            prop_assert_eq!(a.attributes.len(), b.attributes.len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_traces_input(&bytes);
        let _ = TracesIndex::default().scan_structure(&bytes);
        check_metrics_input(&bytes);
        check_logs_input(&bytes);
        let _ = grpc::decode_message(&Bytes::from(bytes.clone()));
        for s in Signal::ALL {
            let _ = json::from_protobuf(s, &bytes);
            let _ = json::to_protobuf(s, &bytes);
        }
    }

    #[test]
    fn damaged_traces_never_panic(bytes in damaged(gen_traces().prop_map(|r| r.encode_to_vec()))) {
        check_traces_input(&bytes);
        // The structural scan accepts whatever the validating scan accepts, with the same index.
        let (mut full, mut structural) = (TracesIndex::default(), TracesIndex::default());
        let structure = structural.scan_structure(&bytes);
        if full.scan(&bytes).is_ok() {
            prop_assert!(structure.is_ok());
            prop_assert_eq!(&structural, &full);
        }
        // Whatever scans re-frames into something prost decodes.
        if let Ok(batch) = SpanBatch::scan(Bytes::from(bytes)) {
            let mut out = Encoded::default();
            encode_traces(&batch, &mut out);
            prop_assert!(ExportTraceServiceRequest::decode(out.to_bytes()).is_ok());
        }
    }

    #[test]
    fn damaged_metrics_never_panic(bytes in damaged(gen_metrics().prop_map(|r| r.encode_to_vec()))) {
        check_metrics_input(&bytes);
    }

    #[test]
    fn damaged_logs_never_panic(bytes in damaged(gen_logs().prop_map(|r| r.encode_to_vec()))) {
        check_logs_input(&bytes);
    }
}

/// The benchmark payloads scan, and every span of them lands on exactly one of N cores.
#[test]
fn bench_payloads_partition() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/data");
    for f in ["traces-000.pb", "traces-001.pb"] {
        let buf = Bytes::from(std::fs::read(format!("{dir}/{f}")).unwrap());
        let batch = SpanBatch::scan(buf.clone()).unwrap();
        assert_eq!(batch.index.spans.len(), 100);
        assert_eq!(batch.index.resources.len(), 2);
        let mut parts = Vec::new();
        batch.index.partition(4, |t| owner_core(t, 4), &mut parts);
        let mut per_core = BTreeMap::new();
        for (d, p) in parts.iter().enumerate() {
            per_core.insert(d, p.spans.len());
        }
        assert_eq!(per_core.values().sum::<usize>(), 100);
        let decoded = ExportTraceServiceRequest::decode(buf.clone()).unwrap();
        let mut all = Encoded::default();
        for p in parts {
            encode_traces(
                &SpanBatch {
                    buf: buf.clone(),
                    index: p,
                    release_token: None,
                },
                &mut all,
            );
        }
        assert_eq!(
            span_multiset(&ExportTraceServiceRequest::decode(all.to_bytes()).unwrap()),
            span_multiset(&decoded)
        );
    }
}

// ---- rewrites (processors) -------------------------------------------------------------------

mod rewrites {
    use super::*;
    use bytes::BytesMut;
    use shardtel_protocol::rewrite::{
        fields, read_attributes, rewrite_metric_points, rewrite_request, write_message, Attr,
        AttrValue, ItemOutcome, RequestRewriter, RequestScratch,
    };

    /// One edit of an attribute list: keep, delete, or set a string value, at an index.
    #[derive(Clone, Debug)]
    pub enum Edit {
        Keep,
        Delete(usize),
        Set(usize, String),
    }

    pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
        proptest::collection::vec(
            prop_oneof![
                Just(Edit::Keep),
                any::<usize>().prop_map(Edit::Delete),
                (any::<usize>(), text()).prop_map(|(i, s)| Edit::Set(i, s)),
            ],
            0..6,
        )
    }

    fn string_value(s: &str) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::StringValue(s.into())),
        }
    }

    /// Applies `edits` and `added` to the wire list and to the prost list alike.
    pub fn apply(
        msg: &[u8],
        field: u32,
        edits: &[Edit],
        added: &[KeyValue],
        reference: &mut Vec<KeyValue>,
    ) -> Vec<Attr> {
        let mut attrs = Vec::new();
        read_attributes(msg, field, &mut attrs);
        assert_eq!(attrs.len(), reference.len());
        for e in edits {
            match e {
                Edit::Keep => {}
                Edit::Delete(i) if !attrs.is_empty() => {
                    let i = i % attrs.len();
                    attrs.remove(i);
                    reference.remove(i);
                }
                Edit::Set(i, s) if !attrs.is_empty() => {
                    let i = i % attrs.len();
                    attrs[i].set_value(AttrValue::String(s.clone()));
                    reference[i].value = Some(string_value(s));
                }
                _ => {}
            }
        }
        for kv in added {
            let value = match &kv.value {
                Some(v) => AttrValue::Encoded(Bytes::from(v.encode_to_vec())),
                None => AttrValue::Absent,
            };
            attrs.push(Attr::new(Bytes::from(kv.key.clone()), value));
            reference.push(kv.clone());
        }
        attrs
    }

    /// Ranges of `out`'s chunks that are slices of `buf`.
    fn slices_of(buf: &Bytes, out: &Encoded) -> Vec<std::ops::Range<usize>> {
        let base = buf.as_ptr() as usize;
        out.chunks
            .iter()
            .filter_map(|c| {
                let p = c.as_ptr() as usize;
                (p >= base && p + c.len() <= base + buf.len()).then(|| p - base..p - base + c.len())
            })
            .collect()
    }

    fn covered(slices: &[std::ops::Range<usize>], r: std::ops::Range<usize>) -> bool {
        slices.iter().any(|s| s.start <= r.start && r.end <= s.end)
    }

    /// Decides items by a list of picks: 0 keep, 1 drop, 2 add an attribute `rw`.
    pub struct Picks<'a> {
        pub picks: &'a [u8],
        pub n: usize,
        pub resource_rewrite: bool,
        pub metrics: bool,
    }

    impl Picks<'_> {
        fn next(&mut self) -> u8 {
            let p = self
                .picks
                .get(self.n % self.picks.len().max(1))
                .copied()
                .unwrap_or(0)
                % 3;
            self.n += 1;
            p
        }
    }

    fn add_rw(msg: &[u8], field: u32) -> Bytes {
        let mut attrs = Vec::new();
        read_attributes(msg, field, &mut attrs);
        attrs.push(Attr::new(
            Bytes::from_static(b"rw"),
            AttrValue::String("1".into()),
        ));
        let mut out = BytesMut::new();
        write_message(msg, field, &attrs, None, &mut out);
        out.freeze()
    }

    impl RequestRewriter for Picks<'_> {
        fn resource(&mut self, resource: &[u8]) -> Option<Bytes> {
            self.resource_rewrite
                .then(|| add_rw(resource, fields::RESOURCE_ATTRIBUTES))
        }

        fn item(&mut self, item: &[u8]) -> ItemOutcome {
            if self.metrics {
                let mut arena = BytesMut::new();
                return rewrite_metric_points(item, &mut arena, |p, field| match self.next() {
                    0 => ItemOutcome::Keep,
                    1 => ItemOutcome::Drop,
                    _ => ItemOutcome::Replace(add_rw(p, field)),
                });
            }
            match self.next() {
                0 => ItemOutcome::Keep,
                1 => ItemOutcome::Drop,
                _ => ItemOutcome::Replace(add_rw(item, fields::LOG_ATTRIBUTES)),
            }
        }
    }

    pub fn rw_kv() -> KeyValue {
        KeyValue {
            key: "rw".into(),
            value: Some(string_value("1")),
            ..Default::default()
        }
    }

    pub fn picks_at(picks: &[u8], n: &mut usize) -> u8 {
        let p = picks.get(*n % picks.len().max(1)).copied().unwrap_or(0) % 3;
        *n += 1;
        p
    }

    pub fn expected_traces(
        req: &ExportTraceServiceRequest,
        picks: &[u8],
        resource_rewrite: bool,
    ) -> ExportTraceServiceRequest {
        let mut n = 0;
        let mut out = Vec::new();
        for rs in &req.resource_spans {
            let mut rs = rs.clone();
            if resource_rewrite {
                let r = rs.resource.get_or_insert_with(Default::default);
                r.attributes.push(rw_kv());
            }
            let had: usize = rs.scope_spans.iter().map(|s| s.spans.len()).sum();
            let mut scopes = Vec::new();
            for mut ss in std::mem::take(&mut rs.scope_spans) {
                let had_spans = !ss.spans.is_empty();
                let mut spans = Vec::new();
                for mut sp in std::mem::take(&mut ss.spans) {
                    match picks_at(picks, &mut n) {
                        0 => spans.push(sp),
                        1 => {}
                        _ => {
                            sp.attributes.push(rw_kv());
                            spans.push(sp);
                        }
                    }
                }
                if !spans.is_empty() || !had_spans {
                    ss.spans = spans;
                    scopes.push((had_spans, ss));
                }
            }
            let kept_any = scopes.iter().any(|(had, _)| *had);
            if had == 0 || kept_any {
                rs.scope_spans = scopes.into_iter().map(|(_, s)| s).collect();
                out.push(rs);
            }
        }
        ExportTraceServiceRequest {
            resource_spans: out,
        }
    }

    pub fn check_traces(req: &ExportTraceServiceRequest, picks: &[u8], resource_rewrite: bool) {
        let buf = Bytes::from(req.encode_to_vec());
        let mut batch = SpanBatch::scan(buf.clone()).unwrap();
        let mut n = 0;
        let mut drop = Vec::new();
        for i in 0..batch.index.spans.len() {
            match picks_at(picks, &mut n) {
                1 => drop.push(i as u32),
                2 => {
                    let body = add_rw(batch.span(i), fields::SPAN_ATTRIBUTES);
                    batch.index.rewrites.spans.push((i as u32, body));
                }
                _ => {}
            }
        }
        if resource_rewrite {
            for r in 0..batch.index.resources.len() as u32 {
                // The resource (changed) and the other header fields (copied).
                let mut resource: &[u8] = &[];
                let mut others = Vec::new();
                for h in batch.index.resource_headers(r) {
                    let field = &buf[h];
                    if field[0] == 0x0a {
                        let mut rr = shardtel_protocol::wire::Reader::new(field);
                        rr.read_key().unwrap();
                        let b = rr.read_len().unwrap();
                        resource = &field[b];
                    } else {
                        others.extend_from_slice(field);
                    }
                }
                let body = add_rw(resource, fields::RESOURCE_ATTRIBUTES);
                let mut fields_out = Vec::new();
                shardtel_protocol::wire::put_len_field(&mut fields_out, 1, &body);
                fields_out.extend_from_slice(&others);
                batch
                    .index
                    .rewrites
                    .resources
                    .push((r, Bytes::from(fields_out)));
            }
        }
        let untouched: Vec<std::ops::Range<usize>> = (0..batch.index.spans.len())
            .filter(|i| {
                !drop.contains(&(*i as u32)) && batch.index.rewrites.span(*i as u32).is_none()
            })
            .map(|i| {
                let r = &batch.index.spans[i].range;
                r.start as usize..r.end as usize
            })
            .collect();
        let removed = batch.index.retain_spans(|i| !drop.contains(&i));
        assert_eq!(removed, drop.len());
        let mut out = Encoded::default();
        encode_traces(&batch, &mut out);
        let got = ExportTraceServiceRequest::decode(out.to_bytes()).unwrap();
        assert_eq!(got, expected_traces(req, picks, resource_rewrite));
        // Untouched spans are slices of the original buffer, not copies.
        let slices = slices_of(&buf, &out);
        for r in untouched {
            assert!(covered(&slices, r), "an untouched span was copied");
        }
        // The resource attribute lookup sees rewritten resources.
        if resource_rewrite {
            for r in 0..batch.index.resources.len() as u32 {
                assert!(batch
                    .index
                    .resource_attribute(&batch.buf, r, b"rw")
                    .is_some());
            }
        }
    }

    /// (resources, scopes, items) of a request as nested vectors, for the reference.
    pub fn expected_logs(
        req: &ExportLogsServiceRequest,
        picks: &[u8],
        resource_rewrite: bool,
    ) -> ExportLogsServiceRequest {
        let mut n = 0;
        let mut out = Vec::new();
        for rl in &req.resource_logs {
            let mut rl = rl.clone();
            if resource_rewrite {
                rl.resource
                    .get_or_insert_with(Default::default)
                    .attributes
                    .push(rw_kv());
            }
            let had: usize = rl.scope_logs.iter().map(|s| s.log_records.len()).sum();
            let mut scopes = Vec::new();
            let mut kept_any = false;
            for mut sl in std::mem::take(&mut rl.scope_logs) {
                let had_items = !sl.log_records.is_empty();
                let mut recs = Vec::new();
                for mut rec in std::mem::take(&mut sl.log_records) {
                    match picks_at(picks, &mut n) {
                        0 => recs.push(rec),
                        1 => {}
                        _ => {
                            rec.attributes.push(rw_kv());
                            recs.push(rec);
                        }
                    }
                }
                kept_any |= !recs.is_empty();
                if !recs.is_empty() || !had_items {
                    sl.log_records = recs;
                    scopes.push(sl);
                }
            }
            if had == 0 || kept_any {
                rl.scope_logs = scopes;
                out.push(rl);
            }
        }
        ExportLogsServiceRequest { resource_logs: out }
    }

    pub fn rewrite(buf: &Bytes, rw: &mut Picks<'_>) -> (bool, Encoded) {
        let mut out = Encoded::default();
        let mut scratch = RequestScratch::default();
        let changed = rewrite_request(buf, rw, &mut scratch, &mut out).unwrap();
        (changed, out)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn message_rewrite_agrees_with_prost(
        span in gen_span(),
        edits in rewrites::edits(),
        added in attributes(3),
        body in proptest::option::of(any_value()),
    ) {
        use shardtel_protocol::rewrite::{fields, write_message, AttrValue, FieldEdit};
        let msg = span.encode_to_vec();
        let mut want = span.clone();
        let attrs = rewrites::apply(&msg, fields::SPAN_ATTRIBUTES, &edits, &added, &mut want.attributes);
        let mut out = bytes::BytesMut::new();
        write_message(&msg, fields::SPAN_ATTRIBUTES, &attrs, None, &mut out);
        prop_assert_eq!(Span::decode(out.freeze()).unwrap(), want);

        // A log record's attributes and body.
        let rec = LogRecord { attributes: span.attributes.clone(), severity_text: span.name.clone(), ..Default::default() };
        let msg = rec.encode_to_vec();
        let mut want = rec.clone();
        let attrs = rewrites::apply(&msg, fields::LOG_ATTRIBUTES, &edits, &added, &mut want.attributes);
        let value = match &body {
            Some(v) => AttrValue::Encoded(Bytes::from(v.encode_to_vec())),
            None => AttrValue::Absent,
        };
        want.body = body.clone();
        let mut out = bytes::BytesMut::new();
        write_message(&msg, fields::LOG_ATTRIBUTES, &attrs, Some(FieldEdit { field: fields::LOG_BODY, value: &value }), &mut out);
        prop_assert_eq!(LogRecord::decode(out.freeze()).unwrap(), want);
    }

    #[test]
    fn trace_rewrites_and_drops_agree_with_prost(
        req in gen_traces(),
        picks in proptest::collection::vec(any::<u8>(), 1..30),
        resource_rewrite in any::<bool>(),
    ) {
        rewrites::check_traces(&req, &picks, resource_rewrite);
    }

    #[test]
    fn logs_request_rewrite_agrees_with_prost(
        req in gen_logs(),
        picks in proptest::collection::vec(any::<u8>(), 1..30),
        resource_rewrite in any::<bool>(),
    ) {
        let buf = Bytes::from(req.encode_to_vec());
        let mut rw = rewrites::Picks { picks: &picks, n: 0, resource_rewrite, metrics: false };
        let (changed, out) = rewrites::rewrite(&buf, &mut rw);
        let want = rewrites::expected_logs(&req, &picks, resource_rewrite);
        prop_assert_eq!(ExportLogsServiceRequest::decode(out.to_bytes()).unwrap(), want);
        // Nothing to change: the output is the input, byte for byte.
        let mut keep = rewrites::Picks { picks: &[0], n: 0, resource_rewrite: false, metrics: false };
        let (changed_none, same) = rewrites::rewrite(&buf, &mut keep);
        prop_assert!(!changed_none);
        prop_assert_eq!(same.to_bytes(), buf.clone());
        prop_assert_eq!(same.chunks.len() <= 1, true);
        let _ = changed;
    }

    #[test]
    fn metrics_request_rewrite_keeps_points_consistent(
        req in gen_metrics(),
        picks in proptest::collection::vec(any::<u8>(), 1..30),
    ) {
        let buf = Bytes::from(req.encode_to_vec());
        let mut rw = rewrites::Picks { picks: &picks, n: 0, resource_rewrite: false, metrics: true };
        let (_, out) = rewrites::rewrite(&buf, &mut rw);
        let got = ExportMetricsServiceRequest::decode(out.to_bytes()).unwrap();
        // Scanning still works, and the points are those kept.
        let counts = scan_metrics(&out.to_bytes()).unwrap();
        let kept = picks_kept(&picks, metric_points(&req) as usize);
        prop_assert_eq!(counts.items as usize, kept);
        prop_assert_eq!(metric_points(&got) as usize, kept);
        for rm in &got.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    for attrs in point_attributes(m) {
                        // A rewritten point carries rw last; no other point has it.
                        prop_assert!(attrs.iter().filter(|kv| kv.key == "rw").count() <= 1);
                    }
                }
            }
        }
    }
}

fn picks_kept(picks: &[u8], points: usize) -> usize {
    let mut n = 0;
    (0..points)
        .filter(|_| rewrites::picks_at(picks, &mut n) != 1)
        .count()
}

fn point_attributes(m: &Metric) -> Vec<Vec<KeyValue>> {
    match &m.data {
        Some(metric::Data::Gauge(g)) => {
            g.data_points.iter().map(|p| p.attributes.clone()).collect()
        }
        Some(metric::Data::Sum(s)) => s.data_points.iter().map(|p| p.attributes.clone()).collect(),
        Some(metric::Data::Histogram(h)) => {
            h.data_points.iter().map(|p| p.attributes.clone()).collect()
        }
        Some(metric::Data::ExponentialHistogram(h)) => {
            h.data_points.iter().map(|p| p.attributes.clone()).collect()
        }
        Some(metric::Data::Summary(s)) => {
            s.data_points.iter().map(|p| p.attributes.clone()).collect()
        }
        None => Vec::new(),
    }
}
