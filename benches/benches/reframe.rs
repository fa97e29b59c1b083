//! Re-framing throughput: encode each destination's part of a scanned request as an
//! `ExportTraceServiceRequest` chunk chain (what an owner core does before export), and the
//! contiguous copy a sink makes when it needs one buffer.
#![forbid(unsafe_code)]

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardtel_benches::trace_payloads;
use shardtel_protocol::reframe::{encode_traces, Encoded};
use shardtel_protocol::route::owner_core;
use shardtel_protocol::scan::{SpanBatch, TracesIndex};

fn payloads() -> Vec<Bytes> {
    trace_payloads().into_iter().map(Bytes::from).collect()
}

fn bench_reframe(c: &mut Criterion) {
    let mut batches = Vec::new();
    for p in payloads() {
        let mut index = TracesIndex::default();
        index.scan(&p).expect("payload scans");
        let mut parts = Vec::new();
        index.partition(2, |t| owner_core(t, 2), &mut parts);
        batches.extend(parts.into_iter().map(|index| SpanBatch {
            buf: p.clone(),
            index,
            release_token: None,
        }));
    }
    let spans: usize = batches.iter().map(|b| b.index.spans.len()).sum();
    let mut g = c.benchmark_group("reframe");
    g.throughput(Throughput::Elements(spans as u64));
    g.bench_function("encode_traces", |b| {
        b.iter(|| {
            for batch in &batches {
                let mut out = Encoded::default();
                encode_traces(black_box(batch), &mut out);
                black_box(out);
            }
        })
    });
    g.bench_function("encode_traces_to_bytes", |b| {
        b.iter(|| {
            for batch in &batches {
                let mut out = Encoded::default();
                encode_traces(black_box(batch), &mut out);
                black_box(out.to_bytes());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_reframe);
criterion_main!(benches);
