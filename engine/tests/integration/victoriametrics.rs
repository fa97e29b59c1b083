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

use serde_json::Value;

use shardtel_protocol::Signal;

use crate::backends::{now_ns, unique, VICTORIAMETRICS};
use crate::harness::{wait_until, Shardtel};
use crate::test_config::{millis, Batch, Component, Pipeline, Retry};
// The requests of the Prometheus test: one copy of the cases for both backends.
use crate::prometheus::request;

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

/// The (ms, value) pairs of a series' `values`.
fn values_of(series: Option<&Value>) -> Vec<(i64, f64)> {
    series
        .and_then(|one| one["values"].as_array())
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

/// Raw samples of `q[10m]` at `at_ms`: (ms, value).
fn samples(q: &str, at_ms: i64) -> Vec<(i64, f64)> {
    values_of(query(&format!("{q}[10m]"), at_ms).first())
}

/// `query_range` from `start_ms` to `end_ms` by `step_ms`: (ms, value) of the first series.
fn range(q: &str, start_ms: i64, end_ms: i64, step_ms: i64) -> Vec<(i64, f64)> {
    let secs = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
    let json = VICTORIAMETRICS.get_json(
        "/api/v1/query_range",
        &[
            ("query", q),
            ("start", &secs(start_ms)),
            ("end", &secs(end_ms)),
            ("step", &format!("{step_ms}ms")),
        ],
    );
    values_of(json["data"]["result"].as_array().and_then(|r| r.first()))
}

/// A shardtel remote-writing its metrics pipeline to VictoriaMetrics as exporter `vm`, with
/// `exponential_histograms` set when given.
fn remote_writer(exponential_histograms: Option<&str>) -> Shardtel {
    let mut exporter =
        Component::prometheus_remote_write(&format!("{}/api/v1/write", VICTORIAMETRICS.url()))
            .batch(Batch::timeout(millis(50)))
            .retry(Retry::backoff(millis(50), millis(500)));
    if let Some(mode) = exponential_histograms {
        exporter = exporter.set("exponential_histograms", mode);
    }
    Shardtel::start_config(|c| {
        c.exporter("vm", exporter)
            .metrics(Pipeline::otlp_to(&["vm"]))
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
    let shardtel = remote_writer(Some("classic"));
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
        // Over a new connection, so the kernel may pick any core.
        shardtel.post_accepted(
            Signal::Metrics,
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

    // Series are routed to owner cores, and each core writes its own requests: wait until the
    // last step of every series is in, then check each value exactly.
    let names = || -> Vec<String> {
        let series =
            VICTORIAMETRICS.get_json("/api/v1/series", &[("match[]", &format!("{{{sel}}}"))]);
        let mut names: Vec<String> = series["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some(s["__name__"].as_str()?.to_string()))
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let expected_names = [
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
        "rpc_latency_seconds_bucket",
        "rpc_latency_seconds_count",
        "rpc_latency_seconds_sum",
        "target_info",
    ];
    assert!(
        wait_until(30, || names() == expected_names
            && value(&format!("batch_size_count{{{sel}}}"), at) == Some(6.0)
            && value(&format!("http_requests_total{{{sel}}}"), at)
                == Some(16.0)),
        "the last step did not arrive whole: {:?}; shardtel log:\n{}\n{}",
        names(),
        shardtel.log(),
        shardtel.metrics()
    );

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

    // A gauge with its unit suffix, labels job, instance, scope, attribute.
    let gauge = query(&format!("room_temperature_celsius{{{sel}}}"), at);
    assert_eq!(gauge.len(), 1, "{gauge:?}");
    let labels = &gauge[0]["metric"];
    assert_eq!(labels["job"], format!("shop/{service}"));
    assert_eq!(labels["instance"], "i-1");
    assert_eq!(labels["room"], "lab");
    assert_eq!(labels["otel_scope_name"], "checkout");
    assert_eq!(labels["otel_scope_version"], "1.0");
    assert_eq!(gauge[0]["value"][1], "21.5");

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
    assert_eq!(names(), expected_names);

    // Every point was sent, nothing dropped or refused.
    assert!(
        wait_until(10, || shardtel.metric_sum(
            "shardtel_exporter_sent_metric_points_total",
            "exporter=\"vm\""
        ) == 3 * 3 + 4),
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
/// cumulative), `_count` and `_sum`; its `histogram_quantile` reads those. The request's other
/// points arrive beside it.
#[test]
fn native_histograms_become_victoriametrics_vmrange_buckets() {
    if !VICTORIAMETRICS.available("native_histograms_become_victoriametrics_vmrange_buckets") {
        return;
    }
    let shardtel = remote_writer(None);
    let service = unique("vm-native");
    let sel = format!("job=\"shop/{service}\"");
    let t_ms = (now_ns() / 1_000_000) as i64 - 10_000;
    shardtel.post_accepted(
        Signal::Metrics,
        request(&service, (t_ms as u64) * 1_000_000, 5.0, [1, 1, 0], 10.0),
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
        Some(21.5)
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
        ) == 7),
        "{}",
        shardtel.metrics()
    );
}
