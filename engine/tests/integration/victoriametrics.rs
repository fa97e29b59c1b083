//! `prometheusremotewrite` against a real VictoriaMetrics (single-node `victoria-metrics`
//! v1.151.0 built from the Go module proxy, started by `tests/peers/backends.sh`), in the Mimir
//! role: remote write in, PromQL out. The same kinds of cases as `prometheus.rs` (delta sums
//! and histograms accumulated to cumulative, cumulative sums, gauges with unit suffixes,
//! classic histograms, summaries, `job`/`instance`/scope labels, `target_info`) go through a
//! real shardtel on every core, and VictoriaMetrics' `/api/v1/query`, `/api/v1/query_range`
//! and `/api/v1/series` are asked what it stored. Exponential histograms go both ways: as
//! classic buckets, and as native histograms, which VictoriaMetrics turns into its own
//! `vmrange` buckets (it has no Prometheus native histograms).

use std::collections::BTreeMap;

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

use crate::backends::{now_ns, unique, VICTORIAMETRICS};
use crate::gen::{kv, s};
use crate::harness::{base_config, wait_until, Shardtel};

/// An instant query at `at_ms`: the `result` array.
fn query(q: &str, at_ms: i64) -> Vec<Value> {
    let at = format!("{:.3}", at_ms as f64 / 1000.0);
    VICTORIAMETRICS.get_json("/api/v1/query", &[("query", q), ("time", &at)])["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The single float value of an instant query, if there is exactly one series.
fn value(q: &str, at_ms: i64) -> Option<f64> {
    match query(q, at_ms).as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// Raw samples of `q[10m]` at `at_ms`: (ms, value).
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

/// `query_range` from `start_ms` to `end_ms` by `step_ms`: (ms, value) of the single series.
fn range(q: &str, start_ms: i64, end_ms: i64, step_ms: i64) -> Vec<(i64, f64)> {
    let secs = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
    let json = VICTORIAMETRICS.get_json(
        "/api/v1/query_range",
        &[
            ("query", q),
            ("start", &secs(start_ms)),
            ("end", &secs(end_ms)),
            ("step", &format!("{}ms", step_ms)),
        ],
    );
    let result = json["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default();
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

fn exponential_histogram(t: u64) -> Metric {
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
    )
}

/// One step of the test's service at `t` (ns): delta `jobs.done` and `batch.size` buckets,
/// cumulative `http.requests`; the first step also carries a gauge, a cumulative classic
/// histogram, an exponential histogram and a summary.
fn request(service: &str, t: u64, jobs_done: f64, batch: [u64; 3], total: f64) -> Vec<u8> {
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
        metrics.extend([
            metric(
                "room.temperature",
                "Cel",
                metric::Data::Gauge(Gauge {
                    data_points: vec![number(t, 21.5, vec![kv("room", s("lab"))])],
                }),
            ),
            metric(
                "disk.usage",
                "By",
                metric::Data::Gauge(Gauge {
                    data_points: vec![number(t, 4096.0, vec![kv("device", s("sda"))])],
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
            exponential_histogram(t),
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
    encode(service, metrics)
}

fn encode(service: &str, metrics: Vec<Metric>) -> Vec<u8> {
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

/// Posts over a new connection (a new client), so the kernel may pick any core.
fn post(shardtel: &Shardtel, body: Vec<u8>) {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/v1/metrics", shardtel.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A shardtel remote-writing its metrics pipeline to VictoriaMetrics as exporter `vm`, with
/// `extra` keys in the exporter's table.
fn remote_writer(extra: &'static str) -> Shardtel {
    let url = VICTORIAMETRICS.url();
    Shardtel::start(move |dir, ports| {
        base_config(dir, ports, "")
            + &format!(
                r#"
[exporters.vm]
type = "prometheusremotewrite"
endpoint = "{url}/api/v1/write"
batch = {{ timeout = "50ms" }}
retry = {{ initial_interval = "50ms", max_interval = "500ms" }}
{extra}

[pipelines.metrics]
receivers = ["otlp"]
exporters = ["vm"]
"#
            )
    })
}

/// Bucket label `le` → value of the `*_bucket` series of `name` at `at_ms`.
fn buckets(name: &str, sel: &str, at_ms: i64) -> BTreeMap<String, f64> {
    query(&format!("{name}{{{sel}}}"), at_ms)
        .iter()
        .map(|r| {
            (
                r["metric"]["le"].as_str().unwrap().to_string(),
                r["value"][1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn remote_write_to_victoriametrics() {
    if !VICTORIAMETRICS.available("remote_write_to_victoriametrics") {
        return;
    }
    let shardtel = remote_writer("exponential_histograms = \"classic\"");
    let nanos = now_ns();
    let service = unique("vm");
    let sel = format!("job=\"shop/{service}\"");
    // A minute ago, on a whole millisecond; each step one second later.
    let t0_ms = (nanos / 1_000_000) as i64 - 60_000;
    let t = |step: i64| ((t0_ms + step * 1000) as u64) * 1_000_000;
    let at = t0_ms + 2000;

    // Delta steps: jobs.done 5, 7, 1; batch.size buckets [1,1,0], [0,2,1], [1,0,0]. Each is
    // sent on a new connection once the previous one is in VictoriaMetrics.
    let steps = [
        (5.0, [1, 1, 0], 10.0),
        (7.0, [0, 2, 1], 15.0),
        (1.0, [1, 0, 0], 16.0),
    ];
    let expected_jobs = [5.0, 12.0, 13.0];
    for (i, (jobs, batch, total)) in steps.into_iter().enumerate() {
        post(
            &shardtel,
            request(&service, t(i as i64), jobs, batch, total),
        );
        let want = expected_jobs[i];
        let at_step = t0_ms + i as i64 * 1000;
        assert!(
            wait_until(30, || value(&format!("jobs_done_total{{{sel}}}"), at_step)
                == Some(want)),
            "step {i}: jobs_done_total is {:?}, want {want}; shardtel log:\n{}\n{}",
            value(&format!("jobs_done_total{{{sel}}}"), at_step),
            shardtel.log(),
            shardtel.metrics()
        );
    }

    // Delta → cumulative, sample by sample, raw and through query_range.
    assert_eq!(
        samples(&format!("jobs_done_total{{{sel}}}"), at),
        [(t0_ms, 5.0), (t0_ms + 1000, 12.0), (t0_ms + 2000, 13.0)]
    );
    assert_eq!(
        range(
            &format!("jobs_done_total{{{sel}}}"),
            t0_ms,
            t0_ms + 2000,
            1000
        ),
        [(t0_ms, 5.0), (t0_ms + 1000, 12.0), (t0_ms + 2000, 13.0)]
    );
    assert_eq!(
        buckets("batch_size_bucket", &sel, at),
        BTreeMap::from([
            ("1".to_string(), 2.0),
            ("10".to_string(), 5.0),
            ("+Inf".to_string(), 6.0)
        ])
    );
    assert_eq!(value(&format!("batch_size_count{{{sel}}}"), at), Some(6.0));
    assert_eq!(value(&format!("batch_size_sum{{{sel}}}"), at), Some(24.0));
    // Cumulative sums as they are.
    assert_eq!(
        samples(&format!("http_requests_total{{{sel}}}"), at),
        [(t0_ms, 10.0), (t0_ms + 1000, 15.0), (t0_ms + 2000, 16.0)]
    );
    assert_eq!(
        range(
            &format!("increase(http_requests_total{{{sel}}}[2s])"),
            t0_ms + 2000,
            t0_ms + 2000,
            1000
        ),
        [(t0_ms + 2000, 6.0)]
    );

    // Gauges with unit suffixes, labels job, instance, scope, attribute.
    let gauge = query(&format!("room_temperature_celsius{{{sel}}}"), at);
    assert_eq!(gauge.len(), 1, "{gauge:?}");
    let labels = &gauge[0]["metric"];
    assert_eq!(labels["job"], format!("shop/{service}"));
    assert_eq!(labels["instance"], "i-1");
    assert_eq!(labels["room"], "lab");
    assert_eq!(labels["otel_scope_name"], "checkout");
    assert_eq!(labels["otel_scope_version"], "1.0");
    assert_eq!(gauge[0]["value"][1], "21.5");
    assert_eq!(
        value(&format!("disk_usage_bytes{{{sel},device=\"sda\"}}"), at),
        Some(4096.0)
    );

    // Classic histogram buckets.
    assert_eq!(
        buckets("http_server_duration_milliseconds_bucket", &sel, at),
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
    assert_eq!(
        value(
            &format!("histogram_quantile(0.5, http_server_duration_milliseconds_bucket{{{sel}}})"),
            at
        ),
        Some(100.0)
    );

    // The exponential histogram as classic buckets: zero bucket at 0, then base^(i+1).
    assert_eq!(
        buckets("rpc_latency_seconds_bucket", &sel, at),
        BTreeMap::from([
            ("0".to_string(), 1.0),
            ("2".to_string(), 3.0),
            ("4".to_string(), 3.0),
            ("8".to_string(), 6.0),
            ("+Inf".to_string(), 6.0)
        ])
    );
    assert_eq!(
        value(&format!("rpc_latency_seconds_count{{{sel}}}"), at),
        Some(6.0)
    );
    assert_eq!(
        value(&format!("rpc_latency_seconds_sum{{{sel}}}"), at),
        Some(12.5)
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

    // target_info with the other resource attributes, once; stamped at conversion time.
    let now_ms = (now_ns() / 1_000_000) as i64;
    let info = query(&format!("target_info{{{sel}}}"), now_ms + 1000);
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0]["metric"]["host_name"], "node-7");
    assert_eq!(info[0]["metric"]["instance"], "i-1");

    // The series API sees exactly the expected names for this job.
    let series = VICTORIAMETRICS.get_json("/api/v1/series", &[("match[]", &format!("{{{sel}}}"))]);
    let mut names: Vec<String> = series["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{series}"))
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
            "disk_usage_bytes",
            "gc_pause_milliseconds",
            "gc_pause_milliseconds_count",
            "gc_pause_milliseconds_sum",
            "http_requests_total",
            "http_server_duration_milliseconds_bucket",
            "http_server_duration_milliseconds_count",
            "http_server_duration_milliseconds_sum",
            "jobs_done_total",
            "room_temperature_celsius",
            "rpc_latency_seconds_bucket",
            "rpc_latency_seconds_count",
            "rpc_latency_seconds_sum",
            "target_info",
        ]
    );

    // Every point was sent, nothing dropped or refused.
    assert!(
        wait_until(10, || shardtel.metric_sum(
            "shardtel_exporter_sent_metric_points_total",
            "exporter=\"vm\""
        ) == 3 * 3 + 5),
        "{}",
        shardtel.metrics()
    );
    assert_eq!(
        shardtel.metric_sum("shardtel_exporter_send_failed_metric_points_total", ""),
        0
    );
}

/// With the default `exponential_histograms = "native"`: VictoriaMetrics has no Prometheus
/// native histograms, and turns each into its own `vmrange` buckets (a count per bucket, not
/// cumulative), `_count` and `_sum`; its `histogram_quantile` reads those.
#[test]
fn native_histograms_become_victoriametrics_vmrange_buckets() {
    if !VICTORIAMETRICS.available("native_histograms_become_victoriametrics_vmrange_buckets") {
        return;
    }
    let shardtel = remote_writer("");
    let service = unique("vm-native");
    let sel = format!("job=\"shop/{service}\"");
    let t_ms = (now_ns() / 1_000_000) as i64 - 10_000;
    let t = (t_ms as u64) * 1_000_000;
    post(
        &shardtel,
        encode(
            &service,
            vec![
                exponential_histogram(t),
                metric(
                    "room.temperature",
                    "Cel",
                    metric::Data::Gauge(Gauge {
                        data_points: vec![number(t, 19.0, vec![])],
                    }),
                ),
            ],
        ),
    );
    assert!(
        wait_until(30, || value(
            &format!("rpc_latency_seconds_count{{{sel}}}"),
            t_ms
        ) == Some(6.0)),
        "the native histogram did not arrive; shardtel log:\n{}\n{}",
        shardtel.log(),
        shardtel.metrics()
    );
    assert_eq!(
        value(&format!("room_temperature_celsius{{{sel}}}"), t_ms),
        Some(19.0)
    );
    assert_eq!(
        value(&format!("rpc_latency_seconds_sum{{{sel}}}"), t_ms),
        Some(12.5)
    );
    let vmrange: BTreeMap<String, f64> =
        query(&format!("rpc_latency_seconds_bucket{{{sel}}}"), t_ms)
            .iter()
            .map(|r| {
                (
                    r["metric"]["vmrange"].as_str().unwrap().to_string(),
                    r["value"][1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect();
    // The zero bucket, (1, 2] and (4, 8] of scale 0.
    assert_eq!(
        vmrange,
        BTreeMap::from([
            ("-0.000e+00...0.000e+00".to_string(), 1.0),
            ("1.000e+00...2.000e+00".to_string(), 2.0),
            ("4.000e+00...8.000e+00".to_string(), 3.0),
        ])
    );
    // Half of the 6 observations lie at or below 2.
    let median = value(
        &format!("histogram_quantile(0.5, rpc_latency_seconds_bucket{{{sel}}})"),
        t_ms,
    )
    .unwrap();
    assert!((1.0..=2.0).contains(&median), "median {median}");
    assert!(
        wait_until(10, || shardtel.metric_sum(
            "shardtel_exporter_sent_metric_points_total",
            "exporter=\"vm\""
        ) == 2),
        "{}",
        shardtel.metrics()
    );
}
