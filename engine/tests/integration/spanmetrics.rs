//! The `spanmetrics` processor end to end: spans from the OpenTelemetry SDK, counted on their
//! owner cores before tail sampling (which drops every trace here), handed to the metrics
//! pipeline and written to a real Prometheus through remote write; what Prometheus stores
//! equals the calls, errors and durations sent: explicit histograms as `_bucket` series,
//! exponential ones as native histograms.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Span as _, Status, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use crate::harness::{spans_in, wait_until, Shardtel};
use crate::prometheus::{prometheus_available, prometheus_url, query};
use crate::test_config::{millis, Batch, Component, Pipeline, Policy, TailSampling};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The sum over the series of an instant query now (None when there is none).
fn total(q: &str) -> Option<f64> {
    let result = query(q, now_ms());
    if result.is_empty() {
        return None;
    }
    Some(
        result
            .iter()
            .map(|r| r["value"][1].as_str().unwrap().parse::<f64>().unwrap())
            .sum(),
    )
}

#[test]
fn span_metrics_reach_prometheus_equal_to_what_was_sent_even_for_dropped_traces() {
    if !prometheus_available("span_metrics_reach_prometheus") {
        return;
    }
    span_metrics_reach_prometheus(false);
}

#[test]
fn exponential_span_metrics_reach_prometheus_as_native_histograms() {
    if !prometheus_available("exponential_span_metrics_reach_prometheus") {
        return;
    }
    span_metrics_reach_prometheus(true);
}

fn span_metrics_reach_prometheus(exponential: bool) {
    let service = format!(
        "spanmetrics-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let st = Shardtel::start_config(|c| {
        c.file_exporters()
            .exporter(
                "prom",
                Component::prometheus_remote_write(&format!("{}/api/v1/write", prometheus_url()))
                    .batch(Batch::timeout(millis(50))),
            )
            .processor("spanmetrics", {
                let sm = Component::of_type("spanmetrics")
                    .set("dimensions", vec!["http.route".to_string()])
                    .set("flush_interval", "200ms");
                if exponential {
                    sm.set("histogram", "exponential").set("max_size", 20)
                } else {
                    sm.set("buckets", vec!["10ms".to_string(), "100ms".to_string()])
                }
            })
            // Keeps only traces with a span named "never": every trace here is dropped.
            .processor(
                "tail_sampling",
                TailSampling::new(
                    millis(100),
                    vec![Policy::string_attribute_regex(
                        "none",
                        "never",
                        &["^never$"],
                    )],
                ),
            )
            .traces(
                Pipeline::otlp_to(&["file_traces"]).processors(&["spanmetrics", "tail_sampling"]),
            )
            .metrics(Pipeline::otlp_to(&["prom"]))
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // 30 spans on route /a: durations 5, 50, 500 ms in turn; every 5th fails.
    let mut sent_ms = 0.0;
    let mut errors = 0;
    let mut under_10 = 0;
    let mut under_100 = 0;
    rt.block_on(async {
        let provider = tracer_provider(&st, &service);
        let tracer = provider.tracer("spanmetrics-test");
        let t0 = SystemTime::now();
        for i in 0..30u64 {
            let ms = [5u64, 50, 500][i as usize % 3];
            let mut span = tracer
                .span_builder("GET /a")
                .with_kind(opentelemetry::trace::SpanKind::Server)
                .with_start_time(t0)
                .start(&tracer);
            span.set_attribute(KeyValue::new("http.route", "/a"));
            if i % 5 == 0 {
                span.set_status(Status::error("boom"));
                errors += 1;
            }
            span.end_with_timestamp(t0 + Duration::from_millis(ms));
            sent_ms += ms as f64;
            under_10 += usize::from(ms <= 10);
            under_100 += usize::from(ms <= 100);
        }
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    });
    let sel = format!("job=\"{service}\",span_name=\"GET /a\",http_route=\"/a\"");
    let calls = format!("traces_span_metrics_calls_total{{{sel}}}");
    assert!(
        wait_until(30, || total(&calls) == Some(30.0)),
        "calls: {:?}; log:\n{}\n{}",
        total(&calls),
        st.log(),
        st.metrics()
    );
    assert_eq!(
        total(&format!(
            "traces_span_metrics_calls_total{{{sel},status_code=\"STATUS_CODE_ERROR\"}}"
        )),
        Some(errors as f64)
    );
    assert_eq!(
        total(&format!(
            "traces_span_metrics_calls_total{{{sel},span_kind=\"SPAN_KIND_SERVER\"}}"
        )),
        Some(30.0)
    );
    if exponential {
        // Native histogram series (one per status code): their count, sum and the share of
        // durations up to 10 ms
        // and 100 ms (bucket bounds of scale >= 0 fall on powers of two: 8 < 10 < 16 and
        // 64 < 100 < 128, so the fractions at 16 and 128 count exactly the spans sent below 10
        // and 100 ms).
        let native = format!("traces_span_metrics_duration_milliseconds{{{sel}}}");
        assert_eq!(total(&format!("histogram_count({native})")), Some(30.0));
        let sum = total(&format!("histogram_sum({native})")).unwrap();
        assert!((sum - sent_ms).abs() < 1.0, "sum {sum} != {sent_ms}");
        let below = |ms: u32| total(&format!("histogram_fraction(0, {ms}, sum({native}))"));
        assert_eq!(below(16).map(|f| (f * 30.0).round()), Some(under_10 as f64));
        assert_eq!(
            below(128).map(|f| (f * 30.0).round()),
            Some(under_100 as f64)
        );
        assert_eq!(
            total(&format!(
                "traces_span_metrics_duration_milliseconds_bucket{{{sel}}}"
            )),
            None,
            "no classic buckets"
        );
    } else {
        let hist = |suffix: &str, extra: &str| {
            total(&format!(
                "traces_span_metrics_duration_milliseconds_{suffix}{{{sel}{extra}}}"
            ))
        };
        assert_eq!(hist("count", ""), Some(30.0));
        let sum = hist("sum", "").unwrap();
        assert!((sum - sent_ms).abs() < 1.0, "sum {sum} != {sent_ms}");
        assert_eq!(hist("bucket", ",le=\"10\""), Some(under_10 as f64));
        assert_eq!(hist("bucket", ",le=\"100\""), Some(under_100 as f64));
        assert_eq!(hist("bucket", ",le=\"+Inf\""), Some(30.0));
    }
    // The traces themselves were all dropped by the sampler.
    std::thread::sleep(Duration::from_millis(300));
    assert!(spans_in(&st.out()).is_empty());
    // The counters are published once a second.
    assert!(
        wait_until(10, || st.metric_sum("shardtel_spanmetrics_spans_total", "")
            == 30),
        "{}",
        st.metrics()
    );
    assert_eq!(
        st.metric_sum("shardtel_spanmetrics_overflow_spans_total", ""),
        0
    );
}

/// The OpenTelemetry SDK's tracer provider exporting the spans of `service` to `st` over
/// OTLP/gRPC (in batches). Call it inside the Tokio runtime the exporter runs on.
fn tracer_provider(st: &Shardtel, service: &str) -> SdkTracerProvider {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(st.grpc_url())
        .build()
        .unwrap();
    SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .with_batch_exporter(exporter)
        .build()
}

/// Sends `n` SDK spans of `service` (route /a, 5 ms each, every 5th an error) to `st`.
fn send_spans(st: &Shardtel, service: &str, n: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let provider = tracer_provider(st, service);
        let tracer = provider.tracer("spanmetrics-test");
        let t0 = SystemTime::now();
        for i in 0..n {
            let mut span = tracer
                .span_builder("GET /a")
                .with_kind(opentelemetry::trace::SpanKind::Server)
                .with_start_time(t0)
                .start(&tracer);
            span.set_attribute(KeyValue::new("http.route", "/a"));
            if i % 5 == 0 {
                span.set_status(Status::error("boom"));
            }
            span.end_with_timestamp(t0 + Duration::from_millis(5));
        }
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    });
}

/// `aggregation_temporality = "AGGREGATION_TEMPORALITY_CUMULATIVE"`: each core sends its
/// series' totals at every flush (one stream per core, told apart by `collector.instance.id`),
/// and `prometheusremotewrite` writes them as they are. Spans sent in two rounds, several
/// flush intervals apart: Prometheus holds the sum of both rounds, not a multiple of it (the
/// same totals sent again at every flush are not added up).
#[test]
fn cumulative_span_metrics_count_every_span_across_flushes() {
    if !prometheus_available("cumulative_span_metrics_count_every_span_across_flushes") {
        return;
    }
    let service = format!(
        "spanmetrics-cumulative-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let st = Shardtel::start_config(|c| {
        c.file_exporters()
            .exporter(
                "prom",
                Component::prometheus_remote_write(&format!("{}/api/v1/write", prometheus_url()))
                    .batch(Batch::timeout(millis(50))),
            )
            .processor(
                "spanmetrics",
                Component::of_type("spanmetrics")
                    .set("dimensions", vec!["http.route".to_string()])
                    .set("buckets", vec!["10ms".to_string(), "100ms".to_string()])
                    .set("flush_interval", "200ms")
                    .set(
                        "aggregation_temporality",
                        "AGGREGATION_TEMPORALITY_CUMULATIVE",
                    ),
            )
            .traces(Pipeline::otlp_to(&["file_traces"]).processors(&["spanmetrics"]))
            .metrics(Pipeline::otlp_to(&["prom"]))
    });
    let sel = format!("job=\"{service}\",span_name=\"GET /a\",http_route=\"/a\"");
    let calls = format!("traces_span_metrics_calls_total{{{sel}}}");
    let count = format!("traces_span_metrics_duration_milliseconds_count{{{sel}}}");
    let errors =
        format!("traces_span_metrics_calls_total{{{sel},status_code=\"STATUS_CODE_ERROR\"}}");
    send_spans(&st, &service, 30);
    assert!(
        wait_until(30, || total(&calls) == Some(30.0)),
        "calls after the first round: {:?}; log:\n{}",
        total(&calls),
        st.log()
    );
    // Five more flushes of the same totals: still 30.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(total(&calls), Some(30.0));
    send_spans(&st, &service, 20);
    assert!(
        wait_until(30, || total(&calls) == Some(50.0)),
        "calls after the second round: {:?}; log:\n{}",
        total(&calls),
        st.log()
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(total(&calls), Some(50.0));
    assert_eq!(total(&count), Some(50.0));
    assert_eq!(total(&errors), Some(10.0));
    let le10 = format!("traces_span_metrics_duration_milliseconds_bucket{{{sel},le=\"10\"}}");
    assert_eq!(total(&le10), Some(50.0));
    // Every series carries its core's instance id; no two cores share one.
    let series = query(&calls, now_ms());
    let ids: std::collections::BTreeSet<String> = series
        .iter()
        .map(|r| {
            r["metric"]["collector_instance_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no collector_instance_id: {r}"))
                .to_string()
        })
        .collect();
    assert!(!ids.is_empty(), "{series:?}");
    assert!(
        wait_until(10, || st.metric_sum("shardtel_spanmetrics_spans_total", "")
            == 50),
        "{}",
        st.metrics()
    );
}
