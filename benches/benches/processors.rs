//! Cost of the attributes processor on the owner core's path: scan a request, run the chain on
//! its spans, re-frame them for export. Compared with the same path without a processor:
//!
//! - `baseline`: scan + re-frame (no processor);
//! - `untouched`: the DESIGN.md redaction actions (hash `http.url`, delete `user.email`, mask
//!   `log.body`), whose keys no span of the payload has — the target is under 5% over baseline;
//! - `rewrite_all`: an `upsert` that changes every span (each span is re-encoded);
//! - `filter_none`: a health-check filter that drops nothing.
//!
//! Run: `cargo bench -p shardtel-benches --bench processors`.

use std::path::PathBuf;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardtel_config::Config;
use shardtel_engine::processors::Chain;
use shardtel_protocol::reframe::{encode_traces, Encoded};
use shardtel_protocol::scan::SpanBatch;
use shardtel_protocol::Signal;

fn payloads() -> Vec<Bytes> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    ["traces-000.pb", "traces-001.pb"]
        .iter()
        .map(|f| {
            Bytes::from(std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("reading {f}: {e}")))
        })
        .collect()
}

const PROCESSORS: &str = r#"
[processors.redact]
type = "attributes"
[[processors.redact.actions]]
key = "http.url"
action = "hash"
[[processors.redact.actions]]
key = "user.email"
action = "delete"
[[processors.redact.actions]]
key = "log.body"
action = "mask"
pattern = '\d{4}-\d{4}-\d{4}-\d{4}'
replacement = "[REDACTED]"

[processors.tag]
type = "attributes"
actions = [{ key = "deployment.environment.name", action = "upsert", value = "prod" }]

[processors.health]
type = "filter"
[processors.health.spans.exclude]
match_type = "regexp"
attributes = [{ key = "http.route", value = "^/(health|ready)" }]

[receivers.otlp]
[exporters.blackhole]
[pipelines.traces]
receivers = ["otlp"]
processors = ["redact", "tag", "health"]
exporters = ["blackhole"]
"#;

fn chain(name: &str) -> Chain {
    let config = Config::from_str(PROCESSORS, "bench.toml").expect("bench config");
    Chain::build(&config, Signal::Traces, &[name.to_string()])
        .expect("chain")
        .expect("non-empty chain")
}

/// Scan, optionally process, re-frame: one request's trip through an owner core.
fn trip(buf: &Bytes, chain: Option<&Chain>) -> Encoded {
    let mut batch = SpanBatch::scan(buf.clone()).expect("payload scans");
    if let Some(chain) = chain {
        chain.process_traces(&mut batch);
    }
    let mut out = Encoded::default();
    encode_traces(&batch, &mut out);
    out
}

fn bench_processors(c: &mut Criterion) {
    let payloads = payloads();
    let spans: usize = payloads
        .iter()
        .map(|p| SpanBatch::scan(p.clone()).unwrap().index.spans.len())
        .sum();
    let redact = chain("redact");
    let tag = chain("tag");
    let health = chain("health");
    // The redaction chain touches no span of these payloads; the upsert touches all.
    for p in &payloads {
        let mut b = SpanBatch::scan(p.clone()).unwrap();
        assert!(!redact.process_traces(&mut b).changed);
        let mut b = SpanBatch::scan(p.clone()).unwrap();
        tag.process_traces(&mut b);
        assert_eq!(b.index.rewrites.spans.len(), b.index.spans.len());
    }
    let mut g = c.benchmark_group("processors");
    g.throughput(Throughput::Elements(spans as u64));
    for (name, chain) in [
        ("baseline", None),
        ("untouched", Some(&redact)),
        ("rewrite_all", Some(&tag)),
        ("filter_none", Some(&health)),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for p in &payloads {
                    black_box(trip(black_box(p), chain));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_processors);
criterion_main!(benches);
