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
use shardtel_benches::trace_payloads;
use shardtel_config::Config;
use shardtel_processors::Processors;
use shardtel_protocol::reframe::{encode_trace_spans, encode_traces, Encoded};
use shardtel_protocol::scan::SpanBatch;

const CONFIG: &str = r#"
[processors.route]
type = "routing"
default = ["a"]
[[processors.route.routes]]
condition = 'resource.attributes["deployment.environment"] == "dev"'
exporters = ["b"]
[[processors.route.routes]]
condition = 'attributes["debug"] == true'
exporters = ["a", "b"]

[processors.route_errors]
type = "routing"
default = ["a"]
[[processors.route_errors.routes]]
condition = 'trace.has_error'
exporters = ["a", "b"]

[processors.tidy]
type = "transform"
[[processors.tidy.trace_statements]]
context = "span"
statements = [
  'set(attributes["tier"], "gold") where name == "never-this-name"',
  'delete_key(attributes, "absent.key")',
]

[processors.route_walk]
type = "routing"
default = ["a"]
[[processors.route_walk.routes]]
condition = 'resource.attributes["deployment.environment"] == "dev"'
exporters = ["b"]
[[processors.route_walk.routes]]
condition = 'not (attributes["user.id"] != "u-0")'
exporters = ["a", "b"]

[processors.tidy_walk]
type = "transform"
[[processors.tidy_walk.trace_statements]]
context = "span"
statements = [
  'set(attributes["tier"], "gold") where name == "GET"',
  'delete_key(attributes, "absent.key")',
]

[processors.spanmetrics]
type = "spanmetrics"
dimensions = ["http.route"]

[receivers.otlp]
[exporters.a]
type = "blackhole"
[exporters.b]
type = "blackhole"
[pipelines.metrics]
receivers = ["otlp"]
exporters = ["a"]
"#;

fn processors(list: &[&str]) -> Processors {
    let names: Vec<String> = list.iter().map(|n| format!("{n:?}")).collect();
    let text = format!(
        "{CONFIG}[pipelines.traces]\nreceivers = [\"otlp\"]\nprocessors = [{}]\nexporters = [\"a\", \"b\"]\n",
        names.join(", ")
    );
    let config = Config::from_str(&text, "bench.toml").expect("bench config");
    Processors::build(&config).expect("processors")
}

/// One request's trip through an owner core with `p`.
fn trip(buf: &Bytes, p: &Processors, groups: &mut shardtel_processors::SpanGroups) -> usize {
    let mut batch = SpanBatch::scan(buf.clone()).expect("payload scans");
    if let Some(chain) = &p.traces_before {
        chain.process_traces(&mut batch);
    }
    if let Some(m) = &p.spanmetrics_before {
        m.record_batch(&batch, None);
    }
    match &p.traces_router {
        None => {
            let mut out = Encoded::default();
            encode_traces(&batch, &mut out);
            out.len
        }
        Some(router) => {
            let spans: Vec<u32> = (0..batch.index.spans.len() as u32).collect();
            router.route_spans(&batch, &spans, None, groups);
            let mut len = 0;
            for (_, group) in groups.iter() {
                let mut out = Encoded::default();
                encode_trace_spans(&batch, group, &mut out);
                len += out.len;
            }
            len
        }
    }
}

fn bench_routing(c: &mut Criterion) {
    let payloads: Vec<Bytes> = trace_payloads().into_iter().map(Bytes::from).collect();
    let spans: usize = payloads
        .iter()
        .map(|p| SpanBatch::scan(p.clone()).unwrap().index.spans.len())
        .sum();
    let cases = [
        ("baseline", processors(&[])),
        ("idle_routing", processors(&["route"])),
        ("noop_transform", processors(&["tidy"])),
        ("routing_and_transform", processors(&["tidy", "route"])),
        ("spanmetrics", processors(&["spanmetrics"])),
        ("routing_errors", processors(&["route_errors"])),
        ("routing_walk", processors(&["route_walk"])),
        ("transform_walk", processors(&["tidy_walk"])),
        (
            "routing_and_transform_walk",
            processors(&["tidy_walk", "route_walk"]),
        ),
    ];
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
