//! Cost of putting back a refused `spanmetrics` flush (the metrics pipeline full, exactly when
//! the core is overloaded): 100 000 series in one flush, each point found again by its series
//! key (one hash lookup per point; a scan of the series per point took ~5·10⁹ label
//! comparisons at this size), beside the flush that made it.
//!
//! Run: `cargo bench -p shardtel-benches --bench spanmetrics`.
#![forbid(unsafe_code)]

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prost::Message;
use shardtel_config::{SpanHistogram, SpanMetricsConfig, SpanTemporality};
use shardtel_processors::SpanMetrics;
use shardtel_protocol::proto::common::v1::{any_value, AnyValue, KeyValue};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::proto::trace::v1::Span;

const SERIES: usize = 100_000;

/// A delta span metrics processor holding `SERIES` series (10 services), each with one span.
fn filled() -> SpanMetrics {
    let m = SpanMetrics::new(
        &SpanMetricsConfig {
            dimensions: vec!["http.method".into()],
            buckets: [2, 10, 100, 1000].map(Duration::from_millis).to_vec(),
            max_series: SERIES,
            flush_interval: Duration::from_secs(15),
            namespace: "traces.span.metrics".into(),
            histogram: SpanHistogram::Explicit,
            aggregation_temporality: SpanTemporality::Delta,
            metrics_expiration: Duration::ZERO,
        },
        0,
    );
    let string = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    };
    let resources: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            Resource {
                attributes: vec![string("service.name", format!("service-{i}"))],
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect();
    for i in 0..SERIES {
        let span = Span {
            name: format!("GET /api/v1/items/{i}"),
            kind: 2,
            end_time_unix_nano: (i as u64 % 500) * 1_000_000,
            attributes: vec![string("http.method", "GET".into())],
            ..Default::default()
        };
        m.record(&span.encode_to_vec(), &resources[i % 10]);
    }
    m
}

fn bench_refused(c: &mut Criterion) {
    let mut g = c.benchmark_group("spanmetrics");
    g.sample_size(10);
    g.throughput(Throughput::Elements(SERIES as u64));
    g.bench_function("flush_100k_series", |b| {
        b.iter_batched(filled, |m| black_box(m.flush(1)), BatchSize::LargeInput)
    });
    g.bench_function("refused_100k_series", |b| {
        b.iter_batched(
            || {
                let m = filled();
                let start = m.window_start();
                let (body, _) = m.flush(1).expect("series to flush");
                (m, body, start)
            },
            |(m, body, start)| m.refused(black_box(&body), start),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_refused);
criterion_main!(benches);
