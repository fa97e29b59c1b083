//! Conversion tests: each metric type, delta → cumulative, labels, `target_info`, staleness.

use std::collections::BTreeMap;

use prost::Message;
use shardtel_config::{ExponentialHistograms, PrometheusRemoteWriteExporterConfig};
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use shardtel_protocol::proto::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric, number_data_point,
    summary_data_point::ValueAtQuantile, ExponentialHistogram, ExponentialHistogramDataPoint,
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum, Summary, SummaryDataPoint,
};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::series::{key_owner, resource_key};

use super::convert::{InvalidReason, MAX_BUCKETS};
use super::prompb::{TimeSeries, WriteRequest, STALE_NAN};
use super::RemoteWriteConverter;

const T: u64 = 1_700_000_000_000_000_000;
const MS: i64 = 1_700_000_000_000;

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(k: &str, v: &str) -> KeyValue {
    kv(k, any_value::Value::StringValue(v.into()))
}

fn config() -> PrometheusRemoteWriteExporterConfig {
    PrometheusRemoteWriteExporterConfig::new("http://p:9090/api/v1/write".parse().unwrap())
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn service() -> Vec<KeyValue> {
    vec![
        s("service.name", "api"),
        s("service.namespace", "shop"),
        s("service.instance.id", "i-1"),
        s("host.name", "h1"),
    ]
}

fn number(t: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn metric(name: &str, unit: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    }
}

/// Converts and decodes: series as (labels rendered `name{a="b",...}`, samples).
fn convert(c: &mut RemoteWriteConverter, req: &[u8]) -> (Vec<TimeSeries>, u64) {
    let (body, dropped) = c.convert(req).unwrap();
    if body.is_empty() {
        return (Vec::new(), dropped);
    }
    let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
    (
        WriteRequest::decode(raw.as_slice()).unwrap().timeseries,
        dropped,
    )
}

fn render(ts: &TimeSeries) -> String {
    let name = &ts
        .labels
        .iter()
        .find(|l| l.name == "__name__")
        .unwrap()
        .value;
    // `le` and `quantile` last, so expectations read `{BASE},le="10"`.
    let mut rest: Vec<(bool, String)> = ts
        .labels
        .iter()
        .filter(|l| l.name != "__name__")
        .map(|l| {
            (
                l.name == "le" || l.name == "quantile",
                format!("{}={:?}", l.name, l.value),
            )
        })
        .collect();
    rest.sort_by_key(|(last, _)| *last);
    let rest: Vec<String> = rest.into_iter().map(|(_, l)| l).collect();
    format!("{name}{{{}}}", rest.join(","))
}

fn samples(series: &[TimeSeries]) -> BTreeMap<String, Vec<(i64, f64)>> {
    let mut out: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for ts in series {
        let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "labels sorted and unique");
        out.entry(render(ts))
            .or_default()
            .extend(ts.samples.iter().map(|s| (s.timestamp, s.value)));
    }
    out
}

const BASE: &str =
    "instance=\"i-1\",job=\"shop/api\",otel_scope_name=\"lib\",otel_scope_version=\"1.2\"";

#[test]
fn gauges_sums_and_target_info() {
    let mut c = RemoteWriteConverter::new(&config(), 0, 1);
    let req = request(
        service(),
        vec![
            metric(
                "system.memory.usage",
                "By",
                metric::Data::Gauge(Gauge {
                    data_points: vec![number(T, 1024.0, vec![s("state", "used")])],
                }),
            ),
            metric(
                "http.requests",
                "{request}",
                metric::Data::Sum(Sum {
                    data_points: vec![number(T, 7.0, vec![])],
                    aggregation_temporality: 2,
                    is_monotonic: true,
                }),
            ),
            metric(
                "queue.depth",
                "1",
                metric::Data::Sum(Sum {
                    data_points: vec![number(T, -3.0, vec![])],
                    aggregation_temporality: 2,
                    is_monotonic: false,
                }),
            ),
            metric(
                "cpu.utilization",
                "1",
                metric::Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint {
                        time_unix_nano: T,
                        value: Some(number_data_point::Value::AsInt(1)),
                        ..Default::default()
                    }],
                }),
            ),
        ],
    );
    let (series, dropped) = convert(&mut c, &req);
    assert_eq!(dropped, 0);
    let got = samples(&series);
    let info = got
        .iter()
        .find(|(k, _)| k.starts_with("target_info"))
        .unwrap();
    assert_eq!(
        info.0,
        "target_info{host_name=\"h1\",instance=\"i-1\",job=\"shop/api\"}"
    );
    assert_eq!(info.1[0].1, 1.0);
    assert_eq!(
        got[&format!("system_memory_usage_bytes{{{BASE},state=\"used\"}}")],
        [(MS, 1024.0)]
    );
    assert_eq!(got[&format!("http_requests_total{{{BASE}}}")], [(MS, 7.0)]);
    assert_eq!(got[&format!("queue_depth{{{BASE}}}")], [(MS, -3.0)]);
    assert_eq!(
        got[&format!("cpu_utilization_ratio{{{BASE}}}")],
        [(MS, 1.0)]
    );
    assert_eq!(got.len(), 5);
}

#[test]
fn cumulative_points_out_of_order_are_dropped_and_counted() {
    let mut c = RemoteWriteConverter::new(&config(), 0, 1);
    let cumulative = |t: u64, v: f64| {
        request(
            service(),
            vec![metric(
                "requests",
                "",
                metric::Data::Sum(Sum {
                    data_points: vec![number(t, v, vec![s("path", "/a")])],
                    aggregation_temporality: 2,
                    is_monotonic: true,
                }),
            )],
        )
    };
    let name = format!("requests_total{{{BASE},path=\"/a\"}}");
    let (a, _) = convert(&mut c, &cumulative(T + 1_000_000_000, 5.0));
    assert_eq!(samples(&a)[&name], [(MS + 1000, 5.0)]);
    for late in [T, T + 1_000_000_000] {
        let (out, dropped) = convert(&mut c, &cumulative(late, 9.0));
        assert_eq!(dropped, 1);
        assert!(samples(&out).keys().all(|k| !k.starts_with("requests")));
    }
    assert_eq!(c.stats().dropped_out_of_order, 2);
}

#[test]
fn delta_sums_accumulate_per_series_even_out_of_order() {
    let mut c = RemoteWriteConverter::new(&config(), 0, 1);
    let delta = |t: u64, v: f64, path: &str| {
        request(
            service(),
            vec![metric(
                "requests",
                "",
                metric::Data::Sum(Sum {
                    data_points: vec![number(t, v, vec![s("path", path)])],
                    aggregation_temporality: 1,
                    is_monotonic: true,
                }),
            )],
        )
    };
    let name = |path: &str| format!("requests_total{{{BASE},path=\"{path}\"}}");
    let (a, _) = convert(&mut c, &delta(T, 5.0, "/a"));
    let (b, _) = convert(&mut c, &delta(T + 1_000_000_000, 7.0, "/a"));
    let (other, _) = convert(&mut c, &delta(T + 1_000_000_000, 1.0, "/b"));
    assert_eq!(samples(&a)[&name("/a")], [(MS, 5.0)]);
    assert_eq!(samples(&b)[&name("/a")], [(MS + 1000, 12.0)]);
    assert_eq!(samples(&other)[&name("/b")], [(MS + 1000, 1.0)]);
    // A delta older than (or as old as) the last one written (another core's spanmetrics
    // flush, say) still adds up; it is written 1 ms after the last sample.
    let (late, dropped) = convert(&mut c, &delta(T + 500_000_000, 100.0, "/a"));
    assert_eq!(dropped, 0);
    assert_eq!(samples(&late)[&name("/a")], [(MS + 1001, 112.0)]);
    let (same, _) = convert(&mut c, &delta(T + 1_000_000_000, 1.0, "/a"));
    assert_eq!(samples(&same)[&name("/a")], [(MS + 1002, 113.0)]);
    let (next, _) = convert(&mut c, &delta(T + 2_000_000_000, 1.0, "/a"));
    assert_eq!(samples(&next)[&name("/a")], [(MS + 2000, 114.0)]);
    assert_eq!(c.stats().dropped_out_of_order, 0);
    // Unspecified temporality is invalid.
    let bad = request(
        service(),
        vec![metric(
            "x",
            "",
            metric::Data::Sum(Sum {
                data_points: vec![number(T, 1.0, vec![])],
                aggregation_temporality: 0,
                is_monotonic: true,
            }),
        )],
    );
    assert_eq!(convert(&mut c, &bad).1, 1);
    assert_eq!(c.stats().dropped_invalid, 1);
}

fn histogram(t: u64, temporality: i32, counts: Vec<u64>, sum: Option<f64>) -> Vec<u8> {
    let count = counts.iter().sum();
    request(
        service(),
        vec![metric(
            "http.server.duration",
            "ms",
            metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    time_unix_nano: t,
                    count,
                    sum,
                    bucket_counts: counts,
                    explicit_bounds: vec![10.0, 100.0],
                    ..Default::default()
                }],
                aggregation_temporality: temporality,
            }),
        )],
    )
}

#[test]
fn histograms_have_cumulative_buckets_sum_and_count() {
    let mut c = RemoteWriteConverter::new(&config(), 0, 1);
    let (series, _) = convert(&mut c, &histogram(T, 2, vec![1, 2, 3], Some(150.0)));
    let got = samples(&series);
    let n = "http_server_duration_milliseconds";
    assert_eq!(got[&format!("{n}_bucket{{{BASE},le=\"10\"}}")], [(MS, 1.0)]);
    assert_eq!(
        got[&format!("{n}_bucket{{{BASE},le=\"100\"}}")],
        [(MS, 3.0)]
    );
    assert_eq!(
        got[&format!("{n}_bucket{{{BASE},le=\"+Inf\"}}")],
        [(MS, 6.0)]
    );
    assert_eq!(got[&format!("{n}_sum{{{BASE}}}")], [(MS, 150.0)]);
    assert_eq!(got[&format!("{n}_count{{{BASE}}}")], [(MS, 6.0)]);
    // Without a sum there is no _sum series.
    let (series, _) = convert(&mut c, &histogram(T + 1_000_000, 2, vec![1, 0, 0], None));
    assert!(samples(&series).keys().all(|k| !k.contains("_sum")));

    // Delta histograms accumulate per bucket.
    let mut c = RemoteWriteConverter::new(&config(), 0, 1);
    convert(&mut c, &histogram(T, 1, vec![1, 2, 3], Some(10.0)));
    let (series, _) = convert(
        &mut c,
        &histogram(T + 1_000_000_000, 1, vec![1, 1, 1], Some(5.0)),
    );
    let got = samples(&series);
    assert_eq!(
        got[&format!("{n}_bucket{{{BASE},le=\"10\"}}")],
        [(MS + 1000, 2.0)]
    );
    assert_eq!(
        got[&format!("{n}_bucket{{{BASE},le=\"100\"}}")],
        [(MS + 1000, 5.0)]
    );
    assert_eq!(
        got[&format!("{n}_bucket{{{BASE},le=\"+Inf\"}}")],
        [(MS + 1000, 9.0)]
    );
    assert_eq!(got[&format!("{n}_sum{{{BASE}}}")], [(MS + 1000, 15.0)]);
}

fn exponential(t: u64, temporality: i32, scale: i32, offset: i32, counts: Vec<u64>) -> Vec<u8> {
    let count: u64 = counts.iter().sum::<u64>() + 1;
    request(
        service(),
        vec![metric(
            "latency",
            "s",
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    time_unix_nano: t,
                    count,
                    sum: Some(4.5),
                    scale,
                    zero_count: 1,
                    positive: Some(Buckets {
                        offset,
                        bucket_counts: counts,
                    }),
                    ..Default::default()
                }],
                aggregation_temporality: temporality,
            }),
        )],
    )
}

#[test]
fn exponential_histograms_become_native_histograms() {
    let mut c = RemoteWriteConverter::new(&config(), 0, 1);
    let (series, _) = convert(&mut c, &exponential(T, 2, 0, 0, vec![2, 0, 3]));
    let native: Vec<&TimeSeries> = series.iter().filter(|t| !t.histograms.is_empty()).collect();
    assert_eq!(native.len(), 1);
    assert_eq!(render(native[0]), format!("latency_seconds{{{BASE}}}"));
    let h = &native[0].histograms[0];
    assert_eq!(
        (h.count_int, h.zero_count_int, h.sum, h.schema),
        (6, 1, 4.5, 0)
    );
    assert_eq!(h.timestamp, MS);
    // OTLP buckets 0 and 2 are Prometheus buckets 1 and 3: two spans, deltas 2 then +1.
    let spans: Vec<(i32, u32)> = h
        .positive_spans
        .iter()
        .map(|s| (s.offset, s.length))
        .collect();
    assert_eq!(spans, [(1, 1), (1, 1)]);
    assert_eq!(h.positive_deltas, [2, 1]);
    // Scale 10 is lowered to 8 (buckets merged by 4).
    let (series, _) = convert(
        &mut c,
        &exponential(T + 1_000_000, 2, 10, 8, vec![1, 1, 1, 1]),
    );
    let h = &series
        .iter()
        .find(|t| !t.histograms.is_empty())
        .unwrap()
        .histograms[0];
    assert_eq!(h.schema, 8);
    assert_eq!(h.positive_deltas, [4]);
    // Below -4 there is no native schema.
    let (_, dropped) = convert(&mut c, &exponential(T + 2_000_000, 2, -5, 0, vec![1]));
    assert_eq!(dropped, 1);
    // Delta points accumulate across scales.
    let mut c = RemoteWriteConverter::new(&config(), 0, 1);
    convert(&mut c, &exponential(T, 1, 1, 0, vec![1, 1]));
    let (series, _) = convert(&mut c, &exponential(T + 1_000_000_000, 1, 0, 0, vec![1]));
    let h = &series
        .iter()
        .find(|t| !t.histograms.is_empty())
        .unwrap()
        .histograms[0];
    assert_eq!(
        (h.schema, h.count_int, h.zero_count_int, h.sum),
        (0, 5, 2, 9.0)
    );
    assert_eq!(h.positive_deltas, [3]);
}

#[test]
fn exponential_histograms_as_classic_buckets() {
    let mut cfg = config();
    cfg.exponential_histograms = ExponentialHistograms::Classic;
    let mut c = RemoteWriteConverter::new(&cfg, 0, 1);
    let (series, _) = convert(&mut c, &exponential(T, 2, 0, 0, vec![2, 0, 3]));
    let got = samples(&series);
    let b = |le: &str| got[&format!("latency_seconds_bucket{{{BASE},le=\"{le}\"}}")][0].1;
    // Zero bucket (le = threshold 0), then (1,2], (2,4], (4,8].
    assert_eq!(b("0"), 1.0);
    assert_eq!(b("2"), 3.0);
    assert_eq!(b("4"), 3.0);
    assert_eq!(b("8"), 6.0);
    assert_eq!(b("+Inf"), 6.0);
    assert_eq!(got[&format!("latency_seconds_count{{{BASE}}}")][0].1, 6.0);
    assert_eq!(got[&format!("latency_seconds_sum{{{BASE}}}")][0].1, 4.5);
}

#[test]
fn summaries_have_quantile_labels() {
    let mut c = RemoteWriteConverter::new(&config(), 0, 1);
    let req = request(
        service(),
        vec![metric(
            "rpc.latency",
            "ms",
            metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    time_unix_nano: T,
                    count: 10,
                    sum: 55.0,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 4.0,
                        },
                        ValueAtQuantile {
                            quantile: 0.99,
                            value: 9.5,
                        },
                    ],
                    ..Default::default()
                }],
            }),
        )],
    );
    let got = samples(&convert(&mut c, &req).0);
    let n = "rpc_latency_milliseconds";
    assert_eq!(got[&format!("{n}{{{BASE},quantile=\"0.5\"}}")], [(MS, 4.0)]);
    assert_eq!(
        got[&format!("{n}{{{BASE},quantile=\"0.99\"}}")],
        [(MS, 9.5)]
    );
    assert_eq!(got[&format!("{n}_sum{{{BASE}}}")], [(MS, 55.0)]);
    assert_eq!(got[&format!("{n}_count{{{BASE}}}")], [(MS, 10.0)]);
}

#[test]
fn label_sanitising_collisions_and_precedence() {
    let mut cfg = config();
    cfg.scope_labels = false;
    cfg.promote_resource_attributes = vec!["host.name".into(), "k8s.pod.name".into()];
    let mut c = RemoteWriteConverter::new(&cfg, 0, 1);
    let mut resource = service();
    resource.push(s("k8s.pod.name", "pod-1"));
    let req = request(
        resource,
        vec![metric(
            "g",
            "",
            metric::Data::Gauge(Gauge {
                data_points: vec![number(
                    T,
                    1.0,
                    vec![
                        s("a.b", "1"),
                        s("a_b", "2"),
                        s("job", "spoofed"),
                        s("__name__", "x"),
                        s("1st", "y"),
                        kv("ok", any_value::Value::BoolValue(true)),
                        s("empty", ""),
                        s("host.name", "from-point"),
                    ],
                )],
            }),
        )],
    );
    let got = samples(&convert(&mut c, &req).0);
    let key = got.keys().find(|k| k.starts_with("g{")).unwrap();
    assert_eq!(
        key,
        "g{a_b=\"1;2\",host_name=\"from-point\",instance=\"i-1\",job=\"shop/api\",k8s_pod_name=\"pod-1\",key_1st=\"y\",key_name_=\"x\",ok=\"true\"}"
    );
}

#[test]
fn stale_points_and_target_info_ownership() {
    let req = request(
        service(),
        vec![metric(
            "g",
            "",
            metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint {
                    time_unix_nano: T,
                    flags: 1,
                    ..Default::default()
                }],
            }),
        )],
    );
    let cores = 4;
    let owner = key_owner(resource_key(b"shop", b"api", b"i-1"), cores);
    for core in 0..cores {
        let mut c = RemoteWriteConverter::new(&config(), core, cores);
        let got = samples(&convert(&mut c, &req).0);
        assert_eq!(got[&format!("g{{{BASE}}}")][0].1.to_bits(), STALE_NAN);
        assert_eq!(
            got.keys().any(|k| k.starts_with("target_info")),
            core == owner,
            "core {core}"
        );
    }
    let mut cfg = config();
    cfg.target_info = false;
    cfg.add_metric_suffixes = false;
    let mut c = RemoteWriteConverter::new(&cfg, 0, 1);
    let got = samples(&convert(&mut c, &req).0);
    assert_eq!(got.len(), 1);
}

#[test]
fn series_state_is_bounded() {
    let mut cfg = config();
    cfg.max_series_per_core = 8;
    let mut c = RemoteWriteConverter::new(&cfg, 0, 1);
    for i in 0..20 {
        let req = request(
            vec![s("service.name", "a")],
            vec![metric(
                "g",
                "",
                metric::Data::Gauge(Gauge {
                    data_points: vec![number(T, 1.0, vec![s("i", &i.to_string())])],
                }),
            )],
        );
        convert(&mut c, &req);
    }
    let stats = c.stats();
    assert!(stats.series_active <= 8, "{stats:?}");
    assert!(stats.series_evicted >= 12, "{stats:?}");
}

/// A metric of this name makes the converter panic (test builds only), to show that a panic in
/// conversion fails its batch for good instead of taking the core or coming back.
pub(super) const PANIC_METRIC: &str = "shardtel.test.panic";

fn exponential_point(
    t: u64,
    scale: i32,
    positive: (i32, Vec<u64>),
    attrs: Vec<KeyValue>,
) -> ExponentialHistogramDataPoint {
    ExponentialHistogramDataPoint {
        attributes: attrs,
        time_unix_nano: t,
        count: positive.1.iter().fold(0u64, |a, b| a.saturating_add(*b)),
        sum: Some(1.0),
        scale,
        positive: Some(Buckets {
            offset: positive.0,
            bucket_counts: positive.1,
        }),
        ..Default::default()
    }
}

fn exponential_request(temporality: i32, points: Vec<ExponentialHistogramDataPoint>) -> Vec<u8> {
    request(
        service(),
        vec![metric(
            "latency",
            "s",
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: points,
                aggregation_temporality: temporality,
            }),
        )],
    )
}

fn invalid(c: &RemoteWriteConverter, reason: InvalidReason) -> u64 {
    c.stats().dropped_invalid_by_reason[reason as usize]
}

fn histograms(series: &[TimeSeries]) -> Vec<&super::prompb::Histogram> {
    series.iter().flat_map(|t| &t.histograms).collect()
}

#[test]
fn exponential_points_that_overflow_or_exhaust_memory_are_dropped_and_counted() {
    for mode in [
        ExponentialHistograms::Native,
        ExponentialHistograms::Classic,
    ] {
        let mut cfg = config();
        cfg.exponential_histograms = mode;
        let mut c = RemoteWriteConverter::new(&cfg, 0, 1);
        // Scale 9 with positive.offset near i32::MAX: offset + length overflowed i32 (a
        // negative length in release builds, a panic in debug ones). No float64 reaches those
        // buckets at scale 9: the point is dropped.
        let near_max = exponential_point(T, 9, (i32::MAX - 2, vec![1, 1, 1]), vec![]);
        let (series, dropped) = convert(&mut c, &exponential_request(2, vec![near_max]));
        assert_eq!(dropped, 1, "{mode:?}");
        assert!(histograms(&series).is_empty());
        assert!(
            !series.iter().any(|t| render(t).starts_with("latency")),
            "{mode:?}"
        );
        assert_eq!(invalid(&c, InvalidReason::BucketIndex), 1);
        // Scales outside OTLP's -10..=20.
        for scale in [21, -11, i32::MAX, i32::MIN] {
            let p = exponential_point(T + 1_000_000, scale, (0, vec![1]), vec![]);
            assert_eq!(convert(&mut c, &exponential_request(2, vec![p])).1, 1);
        }
        assert_eq!(invalid(&c, InvalidReason::Scale), 4);
        // More buckets than a point may have.
        let p = exponential_point(T + 2_000_000, 0, (0, vec![1; MAX_BUCKETS + 1]), vec![]);
        assert_eq!(convert(&mut c, &exponential_request(2, vec![p])).1, 1);
        assert_eq!(invalid(&c, InvalidReason::TooManyBuckets), 1);
        let stats = c.stats();
        assert_eq!(
            stats.dropped_invalid,
            stats.dropped_invalid_by_reason.iter().sum::<u64>()
        );
        assert_eq!(stats.dropped_invalid, 6);
        // The converter still converts good points.
        let good = exponential_point(T + 3_000_000, 0, (0, vec![1]), vec![]);
        let (series, dropped) = convert(&mut c, &exponential_request(2, vec![good]));
        assert_eq!(dropped, 0);
        assert!(series.iter().any(|t| render(t).starts_with("latency")));
    }
}

#[test]
fn far_apart_delta_exponential_points_stay_bounded() {
    // Delta points at offsets -1e9 and +1e9 (scale 20, both reachable): summed at scale 20
    // they would need 2e9 buckets (16 GB). The sum is lowered to scale 1, where 3816 buckets
    // cover both.
    let mut c = RemoteWriteConverter::new(&config(), 0, 1);
    let low = exponential_point(T, 20, (-1_000_000_000, vec![1]), vec![]);
    let high = exponential_point(T + 1_000_000, 20, (1_000_000_000, vec![1]), vec![]);
    let (series, dropped) = convert(&mut c, &exponential_request(1, vec![low]));
    assert_eq!((dropped, histograms(&series)[0].schema), (0, 8));
    let (series, dropped) = convert(&mut c, &exponential_request(1, vec![high]));
    assert_eq!(dropped, 0);
    let h = histograms(&series)[0];
    assert_eq!((h.schema, h.count_int), (1, 2));
    // OTLP buckets -1908 and 1907 at scale 1 (the indices >> 19) are Prometheus buckets
    // -1907 and 1908.
    let spans: Vec<(i32, u32)> = h
        .positive_spans
        .iter()
        .map(|s| (s.offset, s.length))
        .collect();
    assert_eq!(spans, [(-1907, 1), (1908 - (-1906), 1)]);
    assert_eq!(h.positive_deltas, [1, 0]);

    // As classic buckets: 3816 bucket series of a few hundred label bytes each, within bounds.
    let mut cfg = config();
    cfg.exponential_histograms = ExponentialHistograms::Classic;
    let mut c = RemoteWriteConverter::new(&cfg, 0, 1);
    let low = exponential_point(T, 20, (-1_000_000_000, vec![1]), vec![]);
    let high = exponential_point(T + 1_000_000, 20, (1_000_000_000, vec![1]), vec![]);
    convert(&mut c, &exponential_request(1, vec![low]));
    let (series, dropped) = convert(&mut c, &exponential_request(1, vec![high]));
    assert_eq!(dropped, 0);
    let got = samples(&series);
    let buckets = got
        .keys()
        .filter(|k| k.starts_with("latency_seconds_bucket"))
        .count();
    // The positive buckets, the zero bucket and +Inf.
    assert_eq!(buckets, 3816 + 2);
    assert_eq!(
        got[&format!("latency_seconds_bucket{{{BASE},le=\"+Inf\"}}")][0].1,
        2.0
    );
}

#[test]
fn counts_beyond_i64_and_repeated_deltas_saturate() {
    let mut c = RemoteWriteConverter::new(&config(), 0, 1);
    // A count above i64::MAX in a native histogram: delta-encoded with wrapping, no panic.
    let p = exponential_point(T, 0, (0, vec![u64::MAX, 1]), vec![]);
    let (series, dropped) = convert(&mut c, &exponential_request(2, vec![p]));
    assert_eq!(dropped, 0);
    let h = histograms(&series)[0];
    assert_eq!(h.positive_deltas, [-1, 2]);
    // Delta explicit histograms and delta exponential histograms at u64::MAX, twice.
    for t in [T + 1_000_000, T + 2_000_000] {
        let explicit = request(
            service(),
            vec![metric(
                "size",
                "",
                metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        time_unix_nano: t,
                        count: u64::MAX,
                        bucket_counts: vec![u64::MAX, u64::MAX],
                        explicit_bounds: vec![1.0],
                        ..Default::default()
                    }],
                    aggregation_temporality: 1,
                }),
            )],
        );
        let (series, dropped) = convert(&mut c, &explicit);
        assert_eq!(dropped, 0);
        let got = samples(&series);
        let le = |b: &str| got[&format!("size_bucket{{{BASE},le=\"{b}\"}}")][0].1;
        assert_eq!((le("1"), le("+Inf")), (u64::MAX as f64, u64::MAX as f64));
        let p = exponential_point(t, 0, (0, vec![u64::MAX]), vec![]);
        let (_, dropped) = convert(&mut c, &exponential_request(1, vec![p]));
        assert_eq!(dropped, 0);
    }
}

#[test]
fn bucket_and_label_bounds_of_histograms_and_summaries() {
    let mut c = RemoteWriteConverter::new(&config(), 0, 1);
    let histogram = |t: u64, buckets: usize, attrs: Vec<KeyValue>| {
        request(
            service(),
            vec![metric(
                "size",
                "",
                metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        attributes: attrs,
                        time_unix_nano: t,
                        count: 1,
                        bucket_counts: vec![0; buckets + 1],
                        explicit_bounds: (0..buckets).map(|i| i as f64).collect(),
                        ..Default::default()
                    }],
                    aggregation_temporality: 2,
                }),
            )],
        )
    };
    assert_eq!(convert(&mut c, &histogram(T, MAX_BUCKETS, vec![])).1, 1);
    assert_eq!(invalid(&c, InvalidReason::TooManyBuckets), 1);
    // 4000 buckets, each a series repeating a 4 KiB label: 16 MB of labels for one point.
    let big = vec![s("blob", &"x".repeat(4096))];
    assert_eq!(convert(&mut c, &histogram(T, 4000, big.clone())).1, 1);
    assert_eq!(invalid(&c, InvalidReason::LabelBytes), 1);
    // The same label on a few buckets is fine.
    let (series, dropped) = convert(&mut c, &histogram(T + 1, 10, big.clone()));
    let size_series = series
        .iter()
        .filter(|t| render(t).starts_with("size"))
        .count();
    // Ten buckets, +Inf and _count (no sum was set).
    assert_eq!((dropped, size_series), (0, 12));

    let summary = |quantiles: usize, attrs: Vec<KeyValue>| {
        request(
            service(),
            vec![metric(
                "rpc",
                "",
                metric::Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        attributes: attrs,
                        time_unix_nano: T,
                        quantile_values: (0..quantiles)
                            .map(|i| ValueAtQuantile {
                                quantile: i as f64 / quantiles as f64,
                                value: 1.0,
                            })
                            .collect(),
                        ..Default::default()
                    }],
                }),
            )],
        )
    };
    assert_eq!(convert(&mut c, &summary(MAX_BUCKETS + 1, vec![])).1, 1);
    assert_eq!(invalid(&c, InvalidReason::TooManyBuckets), 2);
    assert_eq!(convert(&mut c, &summary(3000, big)).1, 1);
    assert_eq!(invalid(&c, InvalidReason::LabelBytes), 2);
    assert_eq!(c.stats().dropped_invalid, 4);
}

#[test]
fn invalid_points_are_counted_by_reason() {
    let mut c = RemoteWriteConverter::new(&config(), 0, 1);
    let sum = |name: &str, temporality| {
        request(
            service(),
            vec![metric(
                name,
                "",
                metric::Data::Sum(Sum {
                    data_points: vec![number(T, 1.0, vec![]), number(T + 1, 1.0, vec![])],
                    aggregation_temporality: temporality,
                    is_monotonic: true,
                }),
            )],
        )
    };
    assert_eq!(convert(&mut c, &sum("ok", 0)).1, 2);
    assert_eq!(invalid(&c, InvalidReason::Temporality), 2);
    // A gauge's empty name leaves nothing (a counter's would still be `total`).
    let unnamed = request(
        service(),
        vec![metric(
            "",
            "",
            metric::Data::Gauge(Gauge {
                data_points: vec![number(T, 1.0, vec![]), number(T + 1_000_000, 1.0, vec![])],
            }),
        )],
    );
    assert_eq!(convert(&mut c, &unnamed).1, 2);
    assert_eq!(invalid(&c, InvalidReason::Name), 2);
    let names: Vec<&str> = InvalidReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        names,
        [
            "name",
            "temporality",
            "bucket_layout",
            "scale",
            "bucket_index",
            "too_many_buckets",
            "label_bytes"
        ]
    );
    for (i, reason) in InvalidReason::ALL.into_iter().enumerate() {
        assert_eq!(reason as usize, i);
    }
}

/// A conversion that panics fails its batch for good (counted), the queue carries on, and a
/// disk queue does not give the batch back after a restart.
#[test]
fn a_panicking_conversion_fails_its_batch_for_good_and_does_not_come_back() {
    use std::time::{Duration, Instant};

    use shardtel_config::{ExporterConfig, ExporterKind, QueueStorage};
    use shardtel_protocol::Signal;

    use crate::{DiskQueueSettings, DrainOutcome, ExportQueue};

    let root = std::env::temp_dir().join(format!("shardtel-prw-panic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let settings = DiskQueueSettings {
        root: root.clone(),
        segment_size: 64 << 10,
        group_commit_interval: Duration::from_millis(1),
        group_commit_bytes: 1 << 20,
        memory_bytes: DiskQueueSettings::MEMORY_BYTES,
        cache_bytes: DiskQueueSettings::CACHE_BYTES,
    };
    // Nothing listens there: a batch that got past conversion would be retried, not lost.
    let mut prw = PrometheusRemoteWriteExporterConfig::new(
        "http://127.0.0.1:9/api/v1/write".parse().unwrap(),
    );
    prw.queue.storage = QueueStorage::Disk;
    prw.batch.max_items = 1;
    prw.batch.timeout = Duration::from_millis(1);
    let cfg = ExporterConfig {
        name: "prw".into(),
        kind: ExporterKind::PrometheusRemoteWrite(prw),
    };
    let poison = request(
        service(),
        vec![metric(
            PANIC_METRIC,
            "",
            metric::Data::Gauge(Gauge {
                data_points: vec![number(T, 1.0, vec![])],
            }),
        )],
    );
    let wait = |what: &'static str,
                queue: std::rc::Rc<ExportQueue>,
                f: fn(&crate::ExporterStats) -> bool| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f(&queue.stats()) {
            assert!(Instant::now() < deadline, "{what}: {:?}", queue.stats());
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    };
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let queue = ExportQueue::start_with_storage(&cfg, 0, 1, Some(&settings), None)
                .await
                .unwrap();
            let piece = || {
                let mut piece = shardtel_protocol::reframe::Encoded::default();
                piece.push(bytes::Bytes::from(poison.clone()));
                piece
            };
            queue.try_push(Signal::Metrics, piece(), 1).unwrap();
            wait("first panic", queue.clone(), |s| s.conversion_panics == 1).await;
            // The sender survived: the next batch is taken and fails the same way.
            queue.try_push(Signal::Metrics, piece(), 1).unwrap();
            wait("second panic", queue.clone(), |s| {
                s.conversion_panics == 2 && s.disk.is_some_and(|d| d.unconsumed_frames == 0)
            })
            .await;
            let stats = queue.stats().signal(Signal::Metrics);
            assert_eq!((stats.failed_requests, stats.failed_items), (2, 2));
            assert_eq!(stats.retries, 0, "a panic is not retried");
            assert_eq!(
                queue.drain(Instant::now() + Duration::from_secs(5)).await,
                DrainOutcome::Drained
            );
            // Past the disk queue's checkpoint interval: the checkpoint is on disk.
            glommio::timer::sleep(Duration::from_millis(600)).await;
            drop(queue);
            glommio::timer::sleep(Duration::from_millis(100)).await;

            // Restarted on the same directory: nothing to replay, nothing panics again.
            let queue = ExportQueue::start_with_storage(&cfg, 0, 1, Some(&settings), None)
                .await
                .unwrap();
            let disk = queue.stats().disk.unwrap();
            assert_eq!(disk.recovery.recovered_frames, 0, "{disk:?}");
            glommio::timer::sleep(Duration::from_millis(200)).await;
            assert_eq!(queue.stats().conversion_panics, 0);
        })
        .unwrap()
        .join()
        .unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}
