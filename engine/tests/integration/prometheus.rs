//! `prometheusremotewrite` against a real Prometheus (Debian's 2.42, started by test.sh with
//! `--web.enable-remote-write-receiver --enable-feature=native-histograms` on
//! `SHARDTEL_PROMETHEUS_URL`, default `http://127.0.0.1:19090`): OTLP metrics of every type go
//! through a real shardtel on every core, then Prometheus's HTTP API is asked what it stored.
//!
//! Without a Prometheus these tests fail, unless `SHARDTEL_PROMETHEUS_OPTIONAL=1`, which makes
//! them skip with a loud message.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use serde_json::Value;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::common::v1::{InstrumentationScope, KeyValue};
use shardtel_protocol::proto::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric, number_data_point,
    summary_data_point::ValueAtQuantile, ExponentialHistogram, ExponentialHistogramDataPoint,
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum, Summary, SummaryDataPoint,
};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::Signal;

use crate::gen::{kv, s};
use crate::harness::{wait_until, Shardtel};
use crate::test_config::{millis, Batch, Component, Pipeline, Retry};

pub(crate) fn prometheus_url() -> String {
    std::env::var("SHARDTEL_PROMETHEUS_URL").unwrap_or_else(|_| "http://127.0.0.1:19090".into())
}

/// True when Prometheus answers; false (after a loud message) when it does not and
/// `SHARDTEL_PROMETHEUS_OPTIONAL=1`; panics otherwise.
pub(crate) fn prometheus_available(test: &str) -> bool {
    let url = prometheus_url();
    let ready = reqwest::blocking::Client::new()
        .get(format!("{url}/-/ready"))
        .timeout(Duration::from_secs(5))
        .send()
        .is_ok_and(|r| r.status().is_success());
    if ready {
        return true;
    }
    if std::env::var("SHARDTEL_PROMETHEUS_OPTIONAL").as_deref() == Ok("1") {
        eprintln!(
            "\n!!!!!!!! SKIPPED {test}: no Prometheus at {url} (SHARDTEL_PROMETHEUS_OPTIONAL=1) !!!!!!!!\n"
        );
        return false;
    }
    panic!(
        "no Prometheus at {url}: run ./test.sh (it starts one), or set SHARDTEL_PROMETHEUS_OPTIONAL=1 to skip"
    );
}

/// A Prometheus instant query at `at_ms`: the `result` array.
pub(crate) fn query(q: &str, at_ms: i64) -> Vec<Value> {
    let response: Value = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/query", prometheus_url()))
        .query(&[
            ("query", q),
            ("time", &format!("{:.3}", at_ms as f64 / 1000.0)),
        ])
        .timeout(Duration::from_secs(10))
        .send()
        .and_then(|r| r.text())
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    response["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The single float value of an instant query, if there is exactly one series.
fn value(q: &str, at_ms: i64) -> Option<f64> {
    let result = query(q, at_ms);
    match result.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// Raw samples of a range query `q[10m]` at `at_ms`: (ms, value).
fn samples(q: &str, at_ms: i64) -> Vec<(i64, f64)> {
    let result = query(&format!("{q}[10m]"), at_ms);
    let Some(one) = result.first() else {
        return Vec::new();
    };
    one["values"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                (v[0].as_f64().unwrap() * 1000.0).round() as i64,
                v[1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
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

/// One request of the test's service at `t` (ns); `delta` is the delta step's values
/// (jobs.done, batch.size buckets), `total` the cumulative http.requests.
pub(crate) fn request(
    service: &str,
    t: u64,
    jobs_done: f64,
    batch: [u64; 3],
    total: f64,
) -> Vec<u8> {
    let mut metrics = vec![
        metric(
            "jobs.done",
            "{job}",
            metric::Data::Sum(Sum {
                data_points: vec![number(t, jobs_done, vec![kv("queue", s("q1"))])],
                aggregation_temporality: 1,
                is_monotonic: true,
            }),
        ),
        metric(
            "batch.size",
            "",
            metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    time_unix_nano: t,
                    count: batch.iter().sum(),
                    sum: Some(batch.iter().sum::<u64>() as f64 * 4.0),
                    bucket_counts: batch.to_vec(),
                    explicit_bounds: vec![1.0, 10.0],
                    ..Default::default()
                }],
                aggregation_temporality: 1,
            }),
        ),
        metric(
            "http.requests",
            "",
            metric::Data::Sum(Sum {
                data_points: vec![number(t, total, vec![kv("http.method", s("GET"))])],
                aggregation_temporality: 2,
                is_monotonic: true,
            }),
        ),
    ];
    if jobs_done == 5.0 {
        // The first request also carries one point of every other type.
        metrics.extend([
            metric(
                "room.temperature",
                "Cel",
                metric::Data::Gauge(Gauge {
                    data_points: vec![number(t, 21.5, vec![kv("room", s("lab"))])],
                }),
            ),
            metric(
                "http.server.duration",
                "ms",
                metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        time_unix_nano: t,
                        count: 6,
                        sum: Some(150.0),
                        bucket_counts: vec![1, 2, 3],
                        explicit_bounds: vec![10.0, 100.0],
                        ..Default::default()
                    }],
                    aggregation_temporality: 2,
                }),
            ),
            metric(
                "rpc.latency",
                "s",
                metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![ExponentialHistogramDataPoint {
                        time_unix_nano: t,
                        count: 6,
                        sum: Some(12.5),
                        scale: 0,
                        zero_count: 1,
                        positive: Some(Buckets {
                            offset: 0,
                            bucket_counts: vec![2, 0, 3],
                        }),
                        ..Default::default()
                    }],
                    aggregation_temporality: 2,
                }),
            ),
            metric(
                "gc.pause",
                "ms",
                metric::Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        time_unix_nano: t,
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
            ),
        ]);
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s(service)),
                    kv("service.namespace", s("shop")),
                    kv("service.instance.id", s("i-1")),
                    kv("host.name", s("node-7")),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "checkout".into(),
                    version: "1.0".into(),
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

/// A shardtel remote-writing its metrics pipeline to Prometheus (as exporter `prom`).
fn remote_writer(retry: Option<Retry>) -> Shardtel {
    let mut exporter =
        Component::prometheus_remote_write(&format!("{}/api/v1/write", prometheus_url()))
            .batch(Batch::timeout(millis(50)));
    if let Some(retry) = retry {
        exporter = exporter.retry(retry);
    }
    Shardtel::start_config(|c| {
        c.exporter("prom", exporter)
            .metrics(Pipeline::otlp_to(&["prom"]))
    })
}

#[test]
fn remote_write_to_real_prometheus() {
    if !prometheus_available("remote_write_to_real_prometheus") {
        return;
    }
    let shardtel = remote_writer(Some(Retry::backoff(millis(50), millis(500))));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let service = format!("prw-{}-{nanos}", std::process::id());
    let job = format!("shop/{service}");
    let sel = format!("job=\"{job}\"");
    // A minute ago, on a whole millisecond; each step one second later.
    let t0_ms = (nanos / 1_000_000) as i64 - 60_000;
    let t = |step: i64| ((t0_ms + step * 1000) as u64) * 1_000_000;
    let at = t0_ms + 2000;

    // Delta steps: jobs.done 5, 7, 1; batch.size buckets [1,1,0], [0,2,1], [1,0,0].
    // Each is sent on a new connection once the previous one is in Prometheus.
    let steps = [
        (5.0, [1, 1, 0], 10.0),
        (7.0, [0, 2, 1], 15.0),
        (1.0, [1, 0, 0], 16.0),
    ];
    let expected_jobs = [5.0, 12.0, 13.0];
    for (i, (jobs, batch, total)) in steps.into_iter().enumerate() {
        // Over a new connection, so the kernel may pick any core.
        shardtel.post_accepted(
            Signal::Metrics,
            request(&service, t(i as i64), jobs, batch, total),
        );
        let want = expected_jobs[i];
        assert!(
            wait_until(30, || value(
                &format!("jobs_done_total{{{sel}}}"),
                t0_ms + i as i64 * 1000
            ) == Some(want)),
            "step {i}: jobs_done_total is {:?}, want {want}; shardtel log:\n{}\n{}",
            value(
                &format!("jobs_done_total{{{sel}}}"),
                t0_ms + i as i64 * 1000
            ),
            shardtel.log(),
            shardtel.metrics()
        );
    }

    // Series are routed to owner cores, and each core writes its own requests: jobs_done being
    // in says nothing of the other series. Wait until the last write of every series is in,
    // then check each value exactly.
    let whole = || {
        value(&format!("batch_size_count{{{sel}}}"), at) == Some(6.0)
            && value(&format!("http_requests_total{{{sel}}}"), at) == Some(16.0)
            && value(&format!("room_temperature_celsius{{{sel}}}"), at).is_some()
            && value(
                &format!("http_server_duration_milliseconds_sum{{{sel}}}"),
                at,
            )
            .is_some()
            && value(&format!("gc_pause_milliseconds_count{{{sel}}}"), at).is_some()
            && !query(&format!("rpc_latency_seconds{{{sel}}}"), at).is_empty()
    };
    assert!(
        wait_until(30, whole),
        "not every series arrived; shardtel log:\n{}\n{}",
        shardtel.log(),
        shardtel.metrics()
    );

    // Delta → cumulative, sample by sample.
    assert_eq!(
        samples(&format!("jobs_done_total{{{sel}}}"), at),
        [(t0_ms, 5.0), (t0_ms + 1000, 12.0), (t0_ms + 2000, 13.0)]
    );
    let bucket = |le: &str| value(&format!("batch_size_bucket{{{sel},le=\"{le}\"}}"), at);
    assert_eq!(bucket("1"), Some(2.0));
    assert_eq!(bucket("10"), Some(5.0));
    assert_eq!(bucket("+Inf"), Some(6.0));
    assert_eq!(value(&format!("batch_size_count{{{sel}}}"), at), Some(6.0));
    assert_eq!(value(&format!("batch_size_sum{{{sel}}}"), at), Some(24.0));
    // Cumulative sums as they are.
    assert_eq!(
        samples(&format!("http_requests_total{{{sel}}}"), at),
        [(t0_ms, 10.0), (t0_ms + 1000, 15.0), (t0_ms + 2000, 16.0)]
    );

    // Gauge with unit suffix, labels job, instance, scope, attribute.
    let gauge = query(&format!("room_temperature_celsius{{{sel}}}"), at);
    assert_eq!(gauge.len(), 1, "{gauge:?}");
    let labels = &gauge[0]["metric"];
    assert_eq!(labels["instance"], "i-1");
    assert_eq!(labels["room"], "lab");
    assert_eq!(labels["otel_scope_name"], "checkout");
    assert_eq!(labels["otel_scope_version"], "1.0");
    assert_eq!(gauge[0]["value"][1], "21.5");

    // Classic histogram buckets.
    let buckets: BTreeMap<String, f64> = query(
        &format!("http_server_duration_milliseconds_bucket{{{sel}}}"),
        at,
    )
    .iter()
    .map(|r| {
        (
            r["metric"]["le"].as_str().unwrap().to_string(),
            r["value"][1].as_str().unwrap().parse().unwrap(),
        )
    })
    .collect();
    assert_eq!(
        buckets,
        BTreeMap::from([
            ("10".to_string(), 1.0),
            ("100".to_string(), 3.0),
            ("+Inf".to_string(), 6.0)
        ])
    );
    assert_eq!(
        value(
            &format!("http_server_duration_milliseconds_sum{{{sel}}}"),
            at
        ),
        Some(150.0)
    );

    // Exponential histogram as a native histogram.
    let native = query(&format!("rpc_latency_seconds{{{sel}}}"), at);
    assert_eq!(native.len(), 1, "{native:?}");
    let h = &native[0]["histogram"][1];
    assert_eq!(h["count"], "6", "{native:?}");
    assert_eq!(h["sum"], "12.5");
    // Buckets: [boundary rule, lower, upper, count]: the zero bucket [-0, 0], (1,2], (4,8].
    let counts: Vec<(String, String, String)> = h["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b[1].as_str().unwrap().to_string(),
                b[2].as_str().unwrap().to_string(),
                b[3].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("-0".into(), "0".into(), "1".into()),
            ("1".into(), "2".into(), "2".into()),
            ("4".into(), "8".into(), "3".into())
        ],
        "{native:?}"
    );

    // Summary quantiles.
    assert_eq!(
        value(
            &format!("gc_pause_milliseconds{{{sel},quantile=\"0.99\"}}"),
            at
        ),
        Some(9.5)
    );
    assert_eq!(
        value(&format!("gc_pause_milliseconds_count{{{sel}}}"), at),
        Some(10.0)
    );

    // target_info with the other resource attributes, once.
    // It is stamped at conversion time (now), not with the points' time.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let info = query(&format!("target_info{{{sel}}}"), now_ms + 1000);
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0]["metric"]["host_name"], "node-7");
    assert_eq!(info[0]["metric"]["instance"], "i-1");

    // The series API sees exactly the expected names for this job.
    let series: Value = serde_json::from_str(
        &reqwest::blocking::Client::new()
            .get(format!("{}/api/v1/series", prometheus_url()))
            .query(&[("match[]", format!("{{{sel}}}"))])
            .send()
            .unwrap()
            .text()
            .unwrap(),
    )
    .unwrap();
    let mut names: Vec<String> = series["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["__name__"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names,
        [
            "batch_size_bucket",
            "batch_size_count",
            "batch_size_sum",
            "gc_pause_milliseconds",
            "gc_pause_milliseconds_count",
            "gc_pause_milliseconds_sum",
            "http_requests_total",
            "http_server_duration_milliseconds_bucket",
            "http_server_duration_milliseconds_count",
            "http_server_duration_milliseconds_sum",
            "jobs_done_total",
            "room_temperature_celsius",
            "rpc_latency_seconds",
            "target_info",
        ]
    );

    // Every point was sent, nothing dropped; with several cores, metrics crossed the mesh.
    let sent = || {
        shardtel.metric_sum(
            "shardtel_exporter_sent_metric_points_total",
            "exporter=\"prom\"",
        )
    };
    assert!(
        wait_until(10, || sent() == 3 * 3 + 4),
        "{}",
        shardtel.metrics()
    );
    assert_eq!(
        shardtel.metric_sum(
            "shardtel_exporter_prometheus_dropped_out_of_order_points_total",
            ""
        ),
        0
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores > 1 {
        assert!(shardtel.metric_sum("shardtel_mesh_sent_batches_total", "") > 0);
    }
}

/// Through the OpenTelemetry SDK's own OTLP metric exporter (OTLP/HTTP protobuf): a counter and
/// a histogram recorded by the SDK reach Prometheus by remote write, with their values, the
/// `job`/`instance` labels from the SDK's resource and the spec's names.
#[test]
fn sdk_metrics_reach_prometheus() {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};

    if !prometheus_available("sdk_metrics_reach_prometheus") {
        return;
    }
    let shardtel = remote_writer(None);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let service = format!("sdk-{}-{nanos}", std::process::id());
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/metrics", shardtel.http_url()))
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.clone())
                .with_attribute(opentelemetry::KeyValue::new("service.instance.id", "sdk-1"))
                .build(),
        )
        .with_periodic_exporter(exporter)
        .build();
    let meter = provider.meter("sdk-test");
    let requests = meter.u64_counter("sdk.requests").build();
    let latency = meter
        .f64_histogram("sdk.latency")
        .with_unit("ms")
        .with_boundaries(vec![10.0, 100.0])
        .build();
    let route = [opentelemetry::KeyValue::new("route", "/a")];
    requests.add(7, &route);
    for ms in [5.0, 50.0, 500.0] {
        latency.record(ms, &route);
    }
    provider.force_flush().unwrap();

    let sel = format!("job=\"{service}\",instance=\"sdk-1\",route=\"/a\"");
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    assert!(
        wait_until(30, || value(&format!("sdk_requests_total{{{sel}}}"), now())
            == Some(7.0)),
        "sdk_requests_total is {:?}; shardtel log:\n{}\n{}",
        value(&format!("sdk_requests_total{{{sel}}}"), now()),
        shardtel.log(),
        shardtel.metrics()
    );
    // The counter and the histogram are different series: series routing may put them on
    // different cores, which write them to Prometheus in separate requests, so the histogram
    // is waited for too rather than expected with the counter.
    let count = format!("sdk_latency_milliseconds_count{{{sel}}}");
    assert!(
        wait_until(30, || value(&count, now()) == Some(3.0)),
        "{count} is {:?}",
        value(&count, now())
    );
    let bucket = format!("sdk_latency_milliseconds_bucket{{{sel},le=\"100\"}}");
    assert!(
        wait_until(30, || value(&bucket, now()) == Some(2.0)),
        "{bucket} is {:?}",
        value(&bucket, now())
    );
    provider.shutdown().unwrap();
}
