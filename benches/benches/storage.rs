//! Storage exporters' conversions and metric routing, per core: OTLP metrics → remote-write
//! `WriteRequest` (snappy), OTLP logs → Loki push (snappy protobuf), and splitting a metrics
//! request by series owner (scan + re-frame) on the receiving core.
//!
//! Run: `cargo bench -p shardtel-benches --bench storage`
#![forbid(unsafe_code)]

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prost::Message;
use shardtel_config::{LokiExporterConfig, PrometheusRemoteWriteExporterConfig};
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::common::v1::{any_value, AnyValue, KeyValue};
use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use shardtel_protocol::proto::metrics::v1::{
    metric, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::series::{MetricsPart, MetricsRouting};
use shardtel_sinks::loki::LokiConverter;
use shardtel_sinks::prometheus::RemoteWriteConverter;

const T: u64 = 1_700_000_000_000_000_000;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn resource(i: usize) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", &format!("svc-{i}")),
            kv("service.instance.id", &format!("i-{i}")),
            kv("host.name", "node-1"),
        ],
        ..Default::default()
    }
}

/// 2 resources × 20 metrics (gauges, delta sums, cumulative histograms) × 5 points: 200
/// points, each with 3 attributes.
fn metrics_request() -> (Bytes, u64) {
    let point = |m: usize, p: usize| NumberDataPoint {
        attributes: vec![
            kv("http.method", "GET"),
            kv("http.route", &format!("/api/{p}")),
            kv("status", "200"),
        ],
        time_unix_nano: T,
        value: Some(number_data_point::Value::AsDouble((m * p) as f64)),
        ..Default::default()
    };
    let metric = |m: usize| Metric {
        name: format!("app.metric.{m}"),
        unit: "ms".into(),
        data: Some(match m % 3 {
            0 => metric::Data::Gauge(Gauge {
                data_points: (0..5).map(|p| point(m, p)).collect(),
            }),
            1 => metric::Data::Sum(Sum {
                data_points: (0..5).map(|p| point(m, p)).collect(),
                aggregation_temporality: 1,
                is_monotonic: true,
            }),
            _ => metric::Data::Histogram(Histogram {
                data_points: (0..5)
                    .map(|p| HistogramDataPoint {
                        attributes: point(m, p).attributes,
                        time_unix_nano: T,
                        count: 10,
                        sum: Some(50.0),
                        bucket_counts: vec![1, 2, 3, 4, 0],
                        explicit_bounds: vec![1.0, 5.0, 10.0, 50.0],
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: 2,
            }),
        }),
        ..Default::default()
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: (0..2)
            .map(|r| ResourceMetrics {
                resource: Some(resource(r)),
                scope_metrics: vec![ScopeMetrics {
                    metrics: (0..20).map(metric).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    (Bytes::from(request.encode_to_vec()), 200)
}

fn logs_request() -> (Bytes, u64) {
    let record = |i: usize| LogRecord {
        time_unix_nano: T + i as u64,
        severity_text: "INFO".into(),
        severity_number: 9,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(format!(
                "request {i} served in 12ms for user u-{i}"
            ))),
        }),
        attributes: vec![kv("http.route", "/api/items"), kv("user.id", "u-1")],
        trace_id: vec![7; 16],
        span_id: vec![8; 8],
        ..Default::default()
    };
    let request = ExportLogsServiceRequest {
        resource_logs: (0..2)
            .map(|r| ResourceLogs {
                resource: Some(resource(r)),
                scope_logs: vec![ScopeLogs {
                    log_records: (0..100).map(record).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    (Bytes::from(request.encode_to_vec()), 200)
}

fn bench_storage(c: &mut Criterion) {
    let (metrics, points) = metrics_request();
    let prw = PrometheusRemoteWriteExporterConfig::new(
        "http://127.0.0.1:9090/api/v1/write".parse().unwrap(),
    );
    let mut g = c.benchmark_group("storage");
    g.throughput(Throughput::Elements(points));
    // A fresh converter per request: every series is new (state insertion included).
    g.bench_function("prometheus_convert_200_points", |b| {
        b.iter_batched(
            || RemoteWriteConverter::new(&prw, 0, 1),
            |mut converter| black_box(converter.convert(black_box(&metrics)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    for cores in [2, 4] {
        let mut routing = MetricsRouting::default();
        let mut parts: Vec<MetricsPart> = Vec::new();
        g.bench_function(format!("metrics_split_{cores}_cores_200_points"), |b| {
            b.iter(|| {
                routing.scan(black_box(&metrics)).unwrap();
                routing.split(&metrics, cores, &mut parts);
                black_box(&parts);
            })
        });
    }
    let (logs, records) = logs_request();
    let loki = LokiConverter::new(&LokiExporterConfig::new(
        "http://127.0.0.1:3100/loki/api/v1/push".parse().unwrap(),
    ));
    g.throughput(Throughput::Elements(records));
    g.bench_function("loki_convert_200_records", |b| {
        b.iter(|| black_box(loki.convert(black_box(&logs)).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench_storage);
criterion_main!(benches);
