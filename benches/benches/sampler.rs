//! Tail sampler throughput on one core: add realistic batches, let the decision timer fire,
//! decide every trace, with the seed's policy set (errors, slower than 1 s, user.id = "vip",
//! 10% of the rest: `tests/fixtures/reference-sampling.toml`) and `decision_wait = 10s`.
//!
//! Payloads are `benches/data/traces-00{0,1}.pb` (100 spans, ~10 traces, 355 bytes/span), copied
//! into many variants whose trace ids are rewritten in place so that every variant holds new
//! traces. Scenarios (throughput in spans):
//! - `whole`: each request holds whole traces (the generator's shape);
//! - `pieces`: each request is split in two batches (even and odd spans) and the second half of
//!   every trace arrives 64 requests later, so most spans join a pending trace;
//! - `evicting`: `whole` with `max_traces_per_core = 256`, so nearly every trace is decided early
//!   by the bound instead of the timer;
//! - `two_cores`: each request partitioned by owner core as the engine does on 2 cores, each
//!   part added to its core's sampler (both run here, one after the other), so buffers are
//!   shared and charged by share (the partition, done by the receiving core, is included);
//! - `scan_only` and `scan_then_sample`: each request is scanned (as the receiving core does)
//!   right before it is added, so its bytes are in cache as they are in the engine; the
//!   difference between the two is what the sampler adds to a span's cost. The first three
//!   read pre-scanned requests from memory (28 MB, more than the caches), a pessimistic case.
//!
//! Before the benchmarks it prints the memory charge per buffered span at the peak of a `whole`,
//! a `pieces` and a `two_cores` run, against the spans' wire size. Each span's summary (times,
//! status, parent, the policies' attribute matches) is computed once, as it is added; a
//! decision reads only the trace's summary.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shardtel_benches::{trace_payloads, REFERENCE_SAMPLING};
use shardtel_config::{Config, ProcessorConfig, TailSamplingConfig};
use shardtel_protocol::route::owner_core;
use shardtel_protocol::scan::{SpanBatch, TracesIndex};
use shardtel_protocol::span::SpanView;
use shardtel_sampler::{CoreShare, Kept, Sampler};

const VARIANTS: u32 = 400;

/// `VARIANTS` copies of each payload, the last 4 bytes of every trace id xor-ed with the
/// variant number, scanned.
fn requests() -> Vec<SpanBatch> {
    let mut out = Vec::new();
    for variant in 1..=VARIANTS {
        for payload in trace_payloads() {
            let scanned = SpanBatch::scan(Bytes::from(payload.clone())).expect("payload scans");
            let mut bytes = payload;
            for e in &scanned.index.spans {
                let body = &scanned.buf[e.range.start as usize..e.range.end as usize];
                let id = SpanView::new(body).trace_id();
                let at = id.as_ptr() as usize - scanned.buf.as_ptr() as usize;
                for (i, b) in variant.to_le_bytes().iter().enumerate() {
                    bytes[at + 12 + i] ^= b;
                }
            }
            out.push(SpanBatch::scan(Bytes::from(bytes)).expect("variant scans"));
        }
    }
    out
}

/// The even (`half = 0`) or odd spans of `batch`, sharing its buffer.
fn half(batch: &SpanBatch, half: usize) -> SpanBatch {
    let mut index = TracesIndex {
        resources: batch.index.resources.clone(),
        scopes: batch.index.scopes.clone(),
        spans: Vec::new(),
        headers: batch.index.headers.clone(),
        rewrites: Default::default(),
        span_prefixes_minimal: batch.index.span_prefixes_minimal,
    };
    index.spans = batch
        .index
        .spans
        .iter()
        .skip(half)
        .step_by(2)
        .cloned()
        .collect();
    SpanBatch {
        buf: batch.buf.clone(),
        index,
        release_token: None,
    }
}

/// The reference policies with this bench's bounds: `decision_wait = 10s`, the default 100 000
/// traces per core (as the figures in BENCHMARKS.md were measured) and 1 GiB of buffers.
fn seed_config() -> TailSamplingConfig {
    let text = format!(
        "{REFERENCE_SAMPLING}
[receivers.otlp]
[exporters.blackhole]
[pipelines.traces]
receivers = [\"otlp\"]
processors = [\"tail_sampling\"]
exporters = [\"blackhole\"]
"
    );
    let config = Config::from_str(&text, "reference-sampling.toml").expect("valid reference");
    let Some(ProcessorConfig::TailSampling(mut c)) =
        config.processors.get("tail_sampling").cloned()
    else {
        panic!("reference-sampling.toml defines no tail_sampling processor");
    };
    c.decision_wait = Duration::from_secs(10);
    c.max_traces_per_core = 100_000;
    c.max_buffered_bytes_per_core = 1 << 30;
    c
}

/// Feeds `batches` 1 ms apart, ticking every 100 batches, then decides the rest; returns the
/// spans kept.
fn run(
    config: &TailSamplingConfig,
    batches: impl IntoIterator<Item = SpanBatch>,
    start: Instant,
) -> (usize, Sampler) {
    let mut sampler = Sampler::new(config, CoreShare::SINGLE).expect("valid config");
    let mut out: Vec<Kept> = Vec::new();
    let mut kept = 0;
    let mut now = start;
    for (i, batch) in batches.into_iter().enumerate() {
        now += Duration::from_millis(1);
        sampler.add(batch, now, &mut out);
        if i % 100 == 99 {
            sampler.tick(now, &mut out);
            kept += out.iter().map(|k| k.spans.len()).sum::<usize>();
            out.clear();
        }
    }
    sampler.tick(now + Duration::from_secs(11), &mut out);
    kept += out.iter().map(|k| k.spans.len()).sum::<usize>();
    (kept, sampler)
}

fn pieces(requests: &[SpanBatch]) -> Vec<SpanBatch> {
    let mut out = Vec::new();
    let lag = 64;
    for (i, r) in requests.iter().enumerate() {
        out.push(half(r, 0));
        if i >= lag {
            out.push(half(&requests[i - lag], 1));
        }
    }
    for r in &requests[requests.len().saturating_sub(lag)..] {
        out.push(half(r, 1));
    }
    out
}

/// The parts of `batch` for each of `cores` owner cores (empty parts included).
fn partition(batch: &SpanBatch, cores: usize) -> Vec<SpanBatch> {
    let mut parts = Vec::new();
    batch
        .index
        .partition(cores, |t| owner_core(t, cores), &mut parts);
    parts
        .into_iter()
        .map(|index| SpanBatch {
            buf: batch.buf.clone(),
            index,
            release_token: None,
        })
        .collect()
}

/// Feeds each request's parts to the samplers of 2 cores, like `run`; returns the spans kept.
fn run_two_cores(
    config: &TailSamplingConfig,
    requests: impl IntoIterator<Item = SpanBatch>,
    start: Instant,
) -> usize {
    let mut samplers: Vec<Sampler> = (0..2)
        .map(|core| Sampler::new(config, CoreShare { core, cores: 2 }).expect("valid config"))
        .collect();
    let mut out: Vec<Kept> = Vec::new();
    let mut kept = 0;
    let mut now = start;
    for (i, request) in requests.into_iter().enumerate() {
        now += Duration::from_millis(1);
        for (core, part) in partition(&request, 2).into_iter().enumerate() {
            samplers[core].add(part, now, &mut out);
            if i % 100 == 99 {
                samplers[core].tick(now, &mut out);
            }
        }
        kept += out.iter().map(|k| k.spans.len()).sum::<usize>();
        out.clear();
    }
    for s in &mut samplers {
        s.tick(now + Duration::from_secs(11), &mut out);
    }
    kept + out.iter().map(|k| k.spans.len()).sum::<usize>()
}

/// Feeds `batches[i]` to the sampler of core `cores_of(i)`, all at the same instant, and prints
/// the peak of the charge summed over cores, per buffered span.
fn report_memory(
    what: &str,
    config: &TailSamplingConfig,
    batches: &[SpanBatch],
    cores: usize,
    core_of: impl Fn(usize) -> usize,
) {
    let mut samplers: Vec<Sampler> = (0..cores)
        .map(|core| Sampler::new(config, CoreShare { core, cores }).expect("valid config"))
        .collect();
    let mut out = Vec::new();
    let now = Instant::now();
    let mut peak = (0, 0, 0);
    for (i, batch) in batches.iter().enumerate() {
        samplers[core_of(i)].add(batch.clone(), now, &mut out);
        out.clear();
        let total = samplers.iter().map(|s| s.stats()).fold((0, 0, 0), |t, s| {
            (
                t.0 + s.buffered_bytes,
                t.1 + s.buffered_span_bytes,
                t.2 + s.buffered_spans,
            )
        });
        if total.0 > peak.0 {
            peak = total;
        }
    }
    let (charge, wire, spans) = peak;
    eprintln!(
        "sampler memory charge at peak ({what}): {spans} spans buffered, {:.0} bytes charged per span, {:.0} wire bytes per span: {:.2}x",
        charge as f64 / spans as f64,
        wire as f64 / spans as f64,
        charge as f64 / wire as f64
    );
}

fn bench_sampler(c: &mut Criterion) {
    let requests = requests();
    let spans: usize = requests.iter().map(|r| r.index.spans.len()).sum();
    let config = seed_config();
    let split = pieces(&requests);
    report_memory("whole", &config, &requests, 1, |_| 0);
    // Both halves of a request share its buffer; each is charged its share of it.
    report_memory("pieces", &config, &split, 1, |_| 0);
    let parts: Vec<SpanBatch> = requests.iter().flat_map(|r| partition(r, 2)).collect();
    report_memory("two_cores", &config, &parts, 2, |i| i % 2);
    let (kept, _) = run(&config, requests.clone(), Instant::now());
    eprintln!(
        "seed policies keep {kept} of {spans} spans ({:.0}%)",
        100.0 * kept as f64 / spans as f64
    );

    let mut g = c.benchmark_group("sampler");
    g.throughput(Throughput::Elements(spans as u64));
    g.sample_size(20);
    g.bench_function("whole", |b| {
        b.iter_batched(
            || requests.clone(),
            |batches| black_box(run(&config, batches, Instant::now())),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("pieces", |b| {
        b.iter_batched(
            || split.clone(),
            |batches| black_box(run(&config, batches, Instant::now())),
            BatchSize::LargeInput,
        )
    });
    let raw: Vec<Bytes> = requests.iter().map(|r| r.buf.clone()).collect();
    g.bench_function("scan_only", |b| {
        b.iter(|| {
            for buf in &raw {
                black_box(SpanBatch::scan(buf.clone()).expect("scans"));
            }
        })
    });
    g.bench_function("scan_then_sample", |b| {
        b.iter(|| {
            let batches = raw
                .iter()
                .map(|buf| SpanBatch::scan(buf.clone()).expect("scans"));
            black_box(run(&config, batches, Instant::now()))
        })
    });
    g.bench_function("two_cores", |b| {
        b.iter_batched(
            || requests.clone(),
            |batches| black_box(run_two_cores(&config, batches, Instant::now())),
            BatchSize::LargeInput,
        )
    });
    let mut evicting = config.clone();
    evicting.max_traces_per_core = 256;
    g.bench_function("evicting", |b| {
        b.iter_batched(
            || requests.clone(),
            |batches| black_box(run(&evicting, batches, Instant::now())),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_sampler);
criterion_main!(benches);
