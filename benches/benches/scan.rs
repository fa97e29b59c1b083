//! Scan + partition throughput on realistic requests (100 spans, ~355 bytes/span, 8
//! attributes, 2 resources), the receiving core's per-request work before routing.
//!
//! Payloads come from `benches/data/` (copies of two of `shared/bench/payloads/`).
//! Criterion measures wall time: on a busy 2-core machine other processes' CPU use shows up
//! as lower throughput (`perf stat -e task-clock` on a fixed loop gives the CPU-time rate).
#![forbid(unsafe_code)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardtel_benches::trace_payloads;
use shardtel_protocol::route::owner_core;
use shardtel_protocol::scan::TracesIndex;

fn bench_scan(c: &mut Criterion) {
    let payloads = trace_payloads();
    let mut index = TracesIndex::default();
    let spans: usize = payloads
        .iter()
        .map(|p| {
            index.scan(p).expect("payload scans");
            index.spans.len()
        })
        .sum();
    let mut g = c.benchmark_group("traces");
    g.throughput(Throughput::Elements(spans as u64));

    g.bench_function("scan", |b| {
        b.iter(|| {
            for p in &payloads {
                index.scan(black_box(p)).unwrap();
            }
        })
    });

    // The exporters' re-scan of a batch validated on its way in (Kafka trace messages).
    g.bench_function("scan_structure", |b| {
        b.iter(|| {
            for p in &payloads {
                index.scan_structure(black_box(p)).unwrap();
            }
        })
    });

    let mut parts = Vec::new();
    g.bench_function("scan_partition_2", |b| {
        b.iter(|| {
            for p in &payloads {
                index.scan(black_box(p)).unwrap();
                index.partition(2, |t| owner_core(t, 2), &mut parts);
            }
            black_box(&parts);
        })
    });

    g.bench_function("scan_partition_8", |b| {
        b.iter(|| {
            for p in &payloads {
                index.scan(black_box(p)).unwrap();
                index.partition(8, |t| owner_core(t, 8), &mut parts);
            }
            black_box(&parts);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);
