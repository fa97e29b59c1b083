//! Hostile data that used to crash or exhaust a core is dropped and counted while the process
//! keeps serving, and what shardtel writes to disk is private to its user.
//!
//! The `prometheusremotewrite` test needs a Prometheus as `prometheus.rs` does
//! (`SHARDTEL_PROMETHEUS_URL`, started by test.sh; `SHARDTEL_PROMETHEUS_OPTIONAL=1` skips it).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use serde_json::Value;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric, number_data_point, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::gen::{kv, s};
use crate::harness::{http_get, wait_until, Shardtel};
use crate::test_config::{Batch, Component, Pipeline, Retry};

fn prometheus_url() -> String {
    std::env::var("SHARDTEL_PROMETHEUS_URL").unwrap_or_else(|_| "http://127.0.0.1:19090".into())
}

/// True when Prometheus answers; false (after a loud message) when it does not and
/// `SHARDTEL_PROMETHEUS_OPTIONAL=1`; panics otherwise.
fn prometheus_available(test: &str) -> bool {
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
        eprintln!("\n!!!!!!!! SKIPPED {test}: no Prometheus at {url} !!!!!!!!\n");
        return false;
    }
    panic!("no Prometheus at {url}: run ./test.sh, or set SHARDTEL_PROMETHEUS_OPTIONAL=1 to skip");
}

/// The `result` array of a Prometheus instant query at `at_ms`.
fn query(q: &str, at_ms: i64) -> Vec<Value> {
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

fn exponential(t: u64, scale: i32, offset: i32, counts: Vec<u64>) -> ExponentialHistogramDataPoint {
    ExponentialHistogramDataPoint {
        time_unix_nano: t,
        count: counts.iter().sum(),
        sum: Some(1.0),
        scale,
        positive: Some(Buckets {
            offset,
            bucket_counts: counts,
        }),
        ..Default::default()
    }
}

/// One request of `service`: an exponential histogram metric `name` with `temporality` and
/// `points`, and a gauge `up` at `t`.
fn request(
    service: &str,
    name: &str,
    temporality: i32,
    points: Vec<ExponentialHistogramDataPoint>,
    t: u64,
) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s(service))],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: name.into(),
                        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: points,
                            aggregation_temporality: temporality,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "up".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                time_unix_nano: t,
                                value: Some(number_data_point::Value::AsDouble(1.0)),
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn post_metrics(shardtel: &Shardtel, body: Vec<u8>) {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/v1/metrics", shardtel.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// The points of issue 16 item 3: scale 9 with positive.offset near i32::MAX (an i32 overflow
/// in bucket downscaling: a negative length, then a panic that took the core), and delta
/// points at offsets -1e9 and +1e9 (a 16 GB vector). The first is dropped and counted; the
/// others are merged at a coarser scale and reach Prometheus; the process serves throughout,
/// and again after a restart on the same data directory (nothing poisonous replays).
#[test]
fn hostile_exponential_histograms_are_dropped_and_counted_while_serving() {
    if !prometheus_available("hostile_exponential_histograms_are_dropped_and_counted_while_serving")
    {
        return;
    }
    let url = prometheus_url();
    let mut shardtel = Shardtel::start_config(|c| {
        c.exporter(
            "prom",
            Component::prometheus_remote_write(&format!("{url}/api/v1/write"))
                .batch(Batch::timeout(Duration::from_millis(50)))
                .retry(Retry::backoff(
                    Duration::from_millis(50),
                    Duration::from_millis(500),
                )),
        )
        .metrics(Pipeline::otlp_to(&["prom"]))
    });
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let service = format!("harden-{}-{nanos}", std::process::id());
    let t0_ms = (nanos / 1_000_000) as i64 - 60_000;
    let t = |step: i64| ((t0_ms + step * 1000) as u64) * 1_000_000;

    // Scale 9, offset near i32::MAX (cumulative).
    post_metrics(
        &shardtel,
        request(
            &service,
            "overflow",
            2,
            vec![exponential(t(0), 9, i32::MAX - 2, vec![1, 1, 1])],
            t(0),
        ),
    );
    // Delta points at -1e9 and +1e9 (scale 20, where both are reachable values).
    for (step, offset) in [(1, -1_000_000_000), (2, 1_000_000_000)] {
        post_metrics(
            &shardtel,
            request(
                &service,
                "spread",
                1,
                vec![exponential(t(step), 20, offset, vec![1])],
                t(step),
            ),
        );
    }
    let dropped = |shardtel: &Shardtel| {
        shardtel.metric_sum(
            "shardtel_exporter_prometheus_dropped_invalid_points_total",
            "exporter=\"prom\"",
        )
    };
    let sel = format!("job=\"{service}\"");
    assert!(
        wait_until(30, || dropped(&shardtel) == 1
            && query(&format!("up{{{sel}}}"), t0_ms + 2000).len() == 1
            && query(&format!("spread{{{sel}}}"), t0_ms + 2000).len() == 1),
        "dropped {}; log:\n{}\n{}",
        dropped(&shardtel),
        shardtel.log(),
        shardtel.metrics()
    );
    // Counted under its reason: bucket indices out of range for the scale.
    assert_eq!(
        shardtel.metric_sum(
            "shardtel_exporter_prometheus_dropped_invalid_points_total",
            "reason=\"bucket_index\"",
        ),
        1,
        "{}",
        shardtel.metrics()
    );
    // The two delta points summed, at a scale where both fit.
    let spread = query(&format!("spread{{{sel}}}"), t0_ms + 2000);
    assert_eq!(spread[0]["histogram"][1]["count"], "2", "{spread:?}");
    assert!(query(&format!("overflow{{{sel}}}"), t0_ms + 2000).is_empty());
    assert_eq!(
        shardtel.metric_sum(
            "shardtel_exporter_send_failed_metric_points_total",
            "exporter=\"prom\""
        ),
        1,
        "only the invalid point failed"
    );
    // Still serving: another request is accepted, health is 200.
    post_metrics(
        &shardtel,
        request(&format!("{service}-b"), "spread", 2, vec![], t(2)),
    );
    assert_eq!(
        http_get(shardtel.ports.health, "/").map(|(c, _)| c),
        Some(200)
    );

    // A restart on the same data directory recovers the disk queue and serves; nothing fails.
    assert_eq!(shardtel.stop(), 0, "log:\n{}", shardtel.log());
    shardtel.spawn();
    post_metrics(
        &shardtel,
        request(
            &service,
            "spread",
            1,
            vec![exponential(t(3), 20, 0, vec![1])],
            t(3),
        ),
    );
    // The newest `up` sample is the one sent after the restart.
    let newest_up = || {
        query(&format!("timestamp(up{{{sel}}})"), t0_ms + 3000)
            .first()
            .and_then(|r| r["value"][1].as_str()?.parse::<f64>().ok())
    };
    assert!(
        wait_until(30, || newest_up() == Some((t0_ms + 3000) as f64 / 1000.0)),
        "log:\n{}\n{}",
        shardtel.log(),
        shardtel.metrics()
    );
    assert_eq!(dropped(&shardtel), 0, "{}", shardtel.metrics());
    assert!(!shardtel.log().contains("panicked"), "{}", shardtel.log());
}

fn trace_request() -> shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest {
    shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![7; 16],
                    span_id: vec![1; 8],
                    name: "after".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Every file under `dir` is 0600 and every directory 0700, except the ones listed (the
/// engine's own: see the test below).
fn modes_under(dir: &Path, out: &mut Vec<(String, u32)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((
            path.display().to_string(),
            meta.permissions().mode() & 0o777,
        ));
        if meta.is_dir() {
            modes_under(&path, out);
        }
    }
}

/// What the process writes under `data_dir` (ingest logs, disk queues, files the file
/// exporter writes) is private: directories 0700, files 0600.
///
/// Left out: the config file and log this harness writes into the directory.
#[test]
fn files_in_data_dir_are_private() {
    let mut shardtel = Shardtel::start_config(|c| c.file_pipelines());
    shardtel.post_traces(&trace_request());
    let out = shardtel.out();
    assert!(
        wait_until(10, || crate::harness::read_traces(&out).len() == 1),
        "log:\n{}",
        shardtel.log()
    );
    assert_eq!(shardtel.stop(), 0);
    let mut modes = Vec::new();
    modes_under(shardtel.dir.path(), &mut modes);
    let root = shardtel.dir.path().display().to_string();
    let harness = [
        format!("{root}/shardtel.toml"),
        format!("{root}/shardtel.log"),
    ];
    let checked: Vec<_> = modes.iter().filter(|(p, _)| !harness.contains(p)).collect();
    for want in [
        "/LOCK",
        "/ingest/core0/",
        "/queues/file_traces/core",
        "/out/traces.core",
    ] {
        assert!(
            checked.iter().any(|(p, _)| p.contains(want)),
            "{want} missing: {checked:?}"
        );
    }
    let wrong: Vec<_> = checked
        .iter()
        .filter(|(p, mode)| {
            let dir = Path::new(p).is_dir();
            *mode != if dir { 0o700 } else { 0o600 }
        })
        .collect();
    assert!(wrong.is_empty(), "not private: {wrong:?}");
}
