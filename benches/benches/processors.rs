//! Cost of the attributes processor on the owner core's path: scan a request, run the chain on
//! its spans, re-frame them for export. Compared with the same path without a processor:
//!
//! - `baseline`: scan + re-frame (no processor);
//! - `untouched`: the DESIGN.md redaction actions (hash `http.url`, delete `user.email`, mask
//!   `log.body`), whose keys no span of the payload has — the target is under 5% over baseline;
//! - `rewrite_all`: an `upsert` that changes every span (each span is re-encoded);
//! - `filter_none`: a health-check filter that drops nothing.
//!
//! Group `after_sampler`: processors listed after `tail_sampling`, on the kept spans of a
//! buffered batch, one trace at a time (each trace decided in its own call, the case where a
//! batch's traces are decided at different ticks):
//!
//! - `copy/*`: what `export_kept` did before — copy the batch's index, cut it down to the kept
//!   spans, run the chain on the copy, re-frame it (the index copy is per trace);
//! - `in_place/*`: what it does now — run the chain on the kept spans of the shared batch
//!   (`Chain::process_trace_spans`) and apply its changes while re-framing
//!   (`encode_trace_spans_rewritten`);
//! - `*/untouched` with the redaction chain (changes nothing here), `*/rewrite_all` with the
//!   upsert (re-encodes every span).
//!
//! Run: `cargo bench -p shardtel-benches --bench processors` (both groups), or add
//! `-- after_sampler` for the second one.
#![forbid(unsafe_code)]

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardtel_benches::{trace_payloads, REDACTION};
use shardtel_config::Config;
use shardtel_processors::Chain;
use shardtel_protocol::reframe::{
    encode_trace_spans, encode_trace_spans_rewritten, encode_traces, Encoded,
};
use shardtel_protocol::scan::SpanBatch;
use shardtel_protocol::Signal;

fn payloads() -> Vec<Bytes> {
    trace_payloads().into_iter().map(Bytes::from).collect()
}

/// The other processors and the pipeline, after [`REDACTION`].
const PROCESSORS: &str = r#"
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
    let config =
        Config::from_str(&format!("{REDACTION}{PROCESSORS}"), "bench.toml").expect("bench config");
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

/// Span indices of each trace of `batch`, in order of first appearance (ascending within).
fn traces_of(batch: &SpanBatch) -> Vec<Vec<u32>> {
    let mut order: Vec<[u8; 16]> = Vec::new();
    let mut groups: Vec<Vec<u32>> = Vec::new();
    for (i, s) in batch.index.spans.iter().enumerate() {
        let id: [u8; 16] = s.trace_id;
        match order.iter().position(|t| *t == id) {
            Some(g) => groups[g].push(i as u32),
            None => {
                order.push(id);
                groups.push(vec![i as u32]);
            }
        }
    }
    groups
}

/// The former `export_kept` path: copy the index, keep `spans`, run the chain, re-frame.
fn kept_by_copy(batch: &SpanBatch, spans: &[u32], chain: &Chain, out: &mut Encoded) {
    let mut sub = SpanBatch {
        buf: batch.buf.clone(),
        index: batch.index.clone(),
        release_token: batch.release_token.clone(),
    };
    let mut cursor = 0;
    sub.index.retain_spans(|i| {
        let keep = spans.get(cursor) == Some(&i);
        cursor += usize::from(keep);
        keep
    });
    chain.process_traces(&mut sub);
    let all: Vec<u32> = (0..sub.index.spans.len() as u32).collect();
    encode_trace_spans(&sub, &all, out);
}

/// The current path: the chain on the kept spans in place, changes applied while re-framing.
fn kept_in_place(batch: &SpanBatch, spans: &[u32], chain: &Chain, out: &mut Encoded) {
    let changes = chain.process_trace_spans(batch, spans);
    if changes.dropped.is_empty() {
        encode_trace_spans_rewritten(batch, spans, Some(&changes.rewrites), out);
    } else {
        let left: Vec<u32> = spans
            .iter()
            .copied()
            .filter(|i| !changes.dropped.contains(i))
            .collect();
        encode_trace_spans_rewritten(batch, &left, Some(&changes.rewrites), out);
    }
}

fn bench_after_sampler(c: &mut Criterion) {
    let batches: Vec<SpanBatch> = payloads()
        .into_iter()
        .map(|p| SpanBatch::scan(p).unwrap())
        .collect();
    let traces: Vec<Vec<Vec<u32>>> = batches.iter().map(traces_of).collect();
    let spans: usize = batches.iter().map(|b| b.index.spans.len()).sum();
    let redact = chain("redact");
    let tag = chain("tag");
    // Both paths give the same request, trace by trace.
    for (batch, traces) in batches.iter().zip(&traces) {
        for t in traces {
            let (mut a, mut b) = (Encoded::default(), Encoded::default());
            kept_by_copy(batch, t, &tag, &mut a);
            kept_in_place(batch, t, &tag, &mut b);
            assert_eq!(a.to_bytes(), b.to_bytes());
        }
    }
    let mut g = c.benchmark_group("after_sampler");
    g.throughput(Throughput::Elements(spans as u64));
    type Path = fn(&SpanBatch, &[u32], &Chain, &mut Encoded);
    for (path, run) in [
        ("copy", kept_by_copy as Path),
        ("in_place", kept_in_place as Path),
    ] {
        for (name, chain) in [("untouched", &redact), ("rewrite_all", &tag)] {
            g.bench_function(format!("{path}/{name}"), |b| {
                b.iter(|| {
                    for (batch, traces) in batches.iter().zip(&traces) {
                        for t in traces {
                            let mut out = Encoded::default();
                            run(batch, t, chain, &mut out);
                            black_box(out);
                        }
                    }
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_processors, bench_after_sampler);
criterion_main!(benches);
