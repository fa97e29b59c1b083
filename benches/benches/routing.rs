//! Cost of the `routing`, `transform` and `spanmetrics` processors on the owner core's path
//! (scan a request, process, re-frame), beside the same path without them (issue 20's speed
//! targets: an idle routing with two routes plus a transform that touches nothing under 10 %
//! per span over `baseline`; spanmetrics under 20 %):
//!
//! - `baseline`: scan + re-frame;
//! - `idle_routing`: two routes (a resource attribute and a span attribute no span has) →
//!   every trace to the default exporters, one re-framed piece;
//! - `routing_errors`: one route, `trace.has_error` (the payloads have error traces): traces
//!   split between two destination sets, two pieces per request;
//! - `noop_transform`: statements whose conditions hold for no span (nothing is rewritten);
//! - `routing_and_transform`: both;
//! - `spanmetrics`: every span counted (service, name, kind, status, one dimension);
//! - `routing_walk`, `transform_walk`, `routing_and_transform_walk`: idle as above, but with
//!   conditions that must be evaluated on every span (a route under `not`; a statement whose
//!   condition's string, "GET", occurs in the spans' bytes), so no span can be skipped by the
//!   key search.
//!
//! Run: `cargo bench -p shardtel-benches --bench routing`.
#![forbid(unsafe_code)]

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardtel_benches::routing_path::{cases, trip};
use shardtel_benches::trace_payloads;
use shardtel_protocol::scan::SpanBatch;

fn bench_routing(c: &mut Criterion) {
    let payloads: Vec<Bytes> = trace_payloads().into_iter().map(Bytes::from).collect();
    let spans: usize = payloads
        .iter()
        .map(|p| SpanBatch::scan(p.clone()).unwrap().index.spans.len())
        .sum();
    let cases = cases();
    // The idle cases change nothing and keep every span on one route.
    for (p, both) in payloads
        .iter()
        .flat_map(|p| [(p, &cases[3].1), (p, &cases[8].1)])
    {
        let mut groups = Vec::new();
        let mut batch = SpanBatch::scan(p.clone()).unwrap();
        assert!(
            !both
                .traces_before
                .as_ref()
                .unwrap()
                .process_traces(&mut batch)
                .changed
        );
        trip(p, both, &mut groups);
        assert_eq!(groups.len(), 1);
    }
    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(spans as u64));
    for (name, p) in &cases {
        g.bench_function(*name, |b| {
            let mut groups = Vec::new();
            b.iter(|| {
                for buf in &payloads {
                    black_box(trip(black_box(buf), p, &mut groups));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_routing);
criterion_main!(benches);
