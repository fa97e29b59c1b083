//! A fixed workload for `valgrind --tool=callgrind` (benches/e2e/sampler-callgrind.sh): the
//! instructions the owner cores spend per span on tail sampling, against the receiving core's
//! scan that every span pays on the plain path too. Instruction counts do not depend on the
//! load of a shared machine, unlike wall time.
//!
//!   sampler_path MODE REQUESTS [COMPRESSION]
//!
//! COMPRESSION is the samplers' `buffer_compression`: `none` (the default) or `lz4`.
//!
//! Workload (built in every mode): REQUESTS requests of 100 spans, copies of
//! `benches/data/traces-00{0,1}.pb` whose trace ids are rewritten so that every copy holds new
//! traces. Each copy's traces are split in 3 pieces (spans by index mod 3) that arrive in 3
//! consecutive requests, each request a buffer of its own holding pieces of 3 copies, as
//! loadgen's `--split-traces 3` sends them; a simulated
//! clock advances 5 ms per request (`SAMPLER_PATH_STEP_US` sets it), so `decision_wait = 10s`
//! holds 2,000 requests and most of a run is decided by the timer, as at steady state.
//!
//! Modes (what is counted on top of building the workload):
//! - `none`: nothing more;
//! - `scan`: every piece scanned (what the receiving core does for any span);
//! - `route`: `scan` and the pieces partitioned by owner core on 2 cores (what sampling adds
//!   on the receiving core);
//! - `sample`: `route`, the request body copied into the receiving core's chunks as the engine
//!   does for a sampler without compression (`shardtel_sampler::arena`), each part added to its
//!   core's sampler (the reference policies, `decision_wait = 10s`, the bounds of
//!   benches/e2e/blackhole-sampling.base.toml), the timer
//!   ticked every request and the kept spans re-framed (`encode_trace_spans`) as the owner
//!   core exports them; at the end every pending trace is decided.
//!
//! Prints `spans N kept K`, and in `sample` mode, at the peak of spans buffered: the samplers'
//! charge per buffered span and the heap it takes (bytes allocated and not freed, counted by
//! this binary's allocator, over the heap before the first request), against the spans' wire
//! size; and over the run, the CPU time the samplers' `add` and `tick` took per span (noisy on a
//! shared machine, unlike callgrind's counts, but it sees cache misses). Like the engine, it
//! turns transparent huge pages off at start unless `MIMALLOC_ALLOW_THP` is set
//! (`MIMALLOC_ALLOW_THP=1` measures RSS with them).

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardtel_config::{BufferCompression, Config, ProcessorConfig, TailSamplingConfig};
use shardtel_protocol::reframe::{encode_trace_spans, Encoded};
use shardtel_protocol::route::owner_core;
use shardtel_protocol::scan::{SpanBatch, TracesIndex};
use shardtel_protocol::span::SpanView;
use shardtel_sampler::arena::BodyArena;
use shardtel_sampler::{CoreShare, Kept, Sampler};

/// Heap bytes allocated and not freed (requested sizes), for the heap per buffered span.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The engine's allocator (mimalloc), counting live bytes in [`LIVE`].
struct Counting;

// SAFETY: every call is forwarded to `MiMalloc` with the same arguments; the counter has no
// effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const CORES: usize = 2;
const PIECES: usize = 3;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn config(compression: BufferCompression) -> TailSamplingConfig {
    let policies = std::fs::read_to_string(root().join("tests/fixtures/reference-sampling.toml"))
        .expect("reading tests/fixtures/reference-sampling.toml");
    let text = format!(
        "{policies}
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
    c.max_traces_per_core = 1_000_000;
    c.max_buffered_bytes_per_core = 4 << 30;
    // A small decision cache, so that the heap measured is what buffered spans take (at 1M
    // spans/s the default cache is a few bytes per buffered span; here it would be 20).
    c.decision_cache.sampled_cache_size = 1000;
    c.decision_cache.non_sampled_cache_size = 1000;
    c.buffer_compression = compression;
    c
}

/// Request `n`: payload `n % 2` with the last 4 bytes of each trace id xor-ed with `n + 1`.
fn request(payloads: &[(Vec<u8>, Vec<usize>)], n: usize) -> Vec<u8> {
    let (payload, id_offsets) = &payloads[n % payloads.len()];
    let mut bytes = payload.clone();
    let variant = (n as u32 + 1).to_le_bytes();
    for &at in id_offsets {
        for (i, b) in variant.iter().enumerate() {
            bytes[at + 12 + i] ^= b;
        }
    }
    bytes
}

/// This process's resident memory in bytes (`VmRSS`).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// This thread's CPU time in nanoseconds (what the samplers take of it is timed with this: it
/// does not count the time the thread waits for a CPU on a loaded machine, as wall time would).
fn cpu_nanos() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec for the duration of the call.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t);
    }
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn main() {
    // As the engine's `main` does (engine/src/main.rs): transparent huge pages off unless
    // MIMALLOC_ALLOW_THP is set, so that RSS per buffered span is the engine's.
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: plain integer arguments; no memory of ours is touched.
        unsafe {
            libc::prctl(
                libc::PR_SET_THP_DISABLE,
                1 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            );
        }
    }
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "sample".into());
    let requests: usize = args.next().map_or(6000, |n| n.parse().expect("REQUESTS"));
    let compression = match args.next().as_deref() {
        None | Some("none") => BufferCompression::None,
        Some("lz4") => BufferCompression::Lz4,
        Some(other) => panic!("COMPRESSION: none or lz4, not {other}"),
    };
    assert!(
        ["none", "scan", "route", "sample"].contains(&mode.as_str()),
        "mode: none, scan, route or sample"
    );
    let payloads: Vec<(Vec<u8>, Vec<usize>)> = ["traces-000.pb", "traces-001.pb"]
        .iter()
        .map(|f| {
            let p = std::fs::read(root().join("benches/data").join(f)).expect("payload");
            let scanned = SpanBatch::scan(Bytes::from(p.clone())).expect("payload scans");
            let offsets = scanned
                .index
                .spans
                .iter()
                .map(|e| {
                    let body = &scanned.buf[e.range.start as usize..e.range.end as usize];
                    SpanView::new(body).trace_id().as_ptr() as usize - scanned.buf.as_ptr() as usize
                })
                .collect();
            (p, offsets)
        })
        .collect();
    // The workload: request k holds the first piece of the traces of copy k, the second of
    // copy k - 1 and the third of copy k - 2, in a buffer of its own (as loadgen sends them).
    // Requests are made as they are due (every mode pays for it), so that the heap holds only
    // what the samplers retain.
    let mut copies: VecDeque<SpanBatch> = VecDeque::new();
    let mut arrival = |k: usize| {
        if k < requests {
            copies.push_front(
                SpanBatch::scan(Bytes::from(request(&payloads, k))).expect("variant scans"),
            );
        }
        copies.truncate(PIECES);
        let mut enc = Encoded::default();
        for p in 0..PIECES {
            if k >= p && k - p < requests {
                let copy = &copies[p - (k.saturating_sub(requests - 1)).min(p)];
                let spans: Vec<u32> = (0..copy.index.spans.len() as u32)
                    .filter(|i| *i as usize % PIECES == p)
                    .collect();
                encode_trace_spans(copy, &spans, &mut enc);
            }
        }
        SpanBatch::scan(enc.to_bytes()).expect("request scans")
    };
    let mut spans = 0usize;

    let config = config(compression);
    let mut samplers: Vec<Sampler> = (0..CORES)
        .map(|core| Sampler::new(&config, CoreShare { core, cores: CORES }).expect("config"))
        .collect();
    let start = Instant::now();
    let mut out: Vec<Kept> = Vec::new();
    let mut parts: Vec<TracesIndex> = Vec::new();
    let mut enc = Encoded::default();
    let mut bodies = BodyArena::default();
    let (mut kept, mut scanned) = (0usize, 0usize);
    let mut peak = (0u64, 0u64, 0u64);
    let mut peak_heap = 0usize;
    let idle_heap = LIVE.load(Ordering::Relaxed);
    let idle_rss = rss();
    let mut peak_rss = 0;
    let mut now = start;
    // CPU time inside the samplers' `add` and `tick`.
    let mut sampler_ns = 0u64;
    // SAMPLER_PATH_STEP_US: the simulated time between requests (5 ms by default). Shorter
    // steps hold more requests in `decision_wait` (200 µs holds 50,000 requests, 5 million
    // spans), for the cache misses of tables as large as the engine's at 1M spans/s, which
    // `perf stat` sees and callgrind does not.
    let step = Duration::from_micros(
        std::env::var("SAMPLER_PATH_STEP_US").map_or(5_000, |s| s.parse().expect("STEP_US")),
    );
    for k in 0..requests + PIECES - 1 {
        let batch = arrival(k);
        spans += batch.index.spans.len();
        now += step;
        if mode != "none" {
            // The receiving core's scan of what it received (the index built above is used
            // below; this is the cost).
            let again = SpanBatch::scan(batch.buf.clone()).expect("scans");
            scanned += again.index.spans.len();
        }
        if mode == "route" || mode == "sample" {
            batch
                .index
                .partition(CORES, |t| owner_core(t, CORES), &mut parts);
            // As engine/src/pipeline/route.rs hands the parts over: the body copied into the
            // receiving core's chunks (with a sampler that holds request buffers, i.e. without
            // compression), and copies of the reused scratch (vectors with exactly the room
            // they use).
            let buf = if mode == "sample" && samplers[0].holds_request_buffers() {
                bodies.copy(&batch.buf)
            } else {
                batch.buf.clone()
            };
            for (core, index) in parts.iter().enumerate() {
                let index = index.clone();
                if mode == "sample" {
                    let part = SpanBatch {
                        buf: buf.clone(),
                        index,
                        release_token: None,
                    };
                    let t0 = cpu_nanos();
                    samplers[core].add(part, now, &mut out);
                    sampler_ns += cpu_nanos() - t0;
                }
            }
        }
        if mode != "sample" {
            continue;
        }
        let t0 = cpu_nanos();
        for s in &mut samplers {
            s.tick(now, &mut out);
        }
        sampler_ns += cpu_nanos() - t0;
        for k in out.drain(..) {
            encode_trace_spans(&k.batch, &k.spans, &mut enc);
            kept += k.spans.len();
        }
        enc = Encoded::default();
        let total = samplers.iter().map(|s| s.stats()).fold((0, 0, 0), |t, s| {
            (
                t.0 + s.buffered_bytes,
                t.1 + s.buffered_span_bytes,
                t.2 + s.buffered_spans,
            )
        });
        if total.2 > peak.2 {
            peak = total;
            peak_heap = LIVE.load(Ordering::Relaxed);
            peak_rss = rss();
        }
    }
    if mode == "sample" {
        for s in &mut samplers {
            s.shutdown(now + Duration::from_secs(11), &mut out);
        }
        for k in out.drain(..) {
            encode_trace_spans(&k.batch, &k.spans, &mut enc);
            kept += k.spans.len();
        }
        let (charge, wire, buffered) = peak;
        let heap = peak_heap.saturating_sub(idle_heap) as f64;
        println!(
            "mode {mode} spans {spans} kept {kept} scanned {scanned} peak_buffered_spans {buffered} charged_per_span {:.0} wire_per_span {:.0} charge_vs_wire {:.2} heap_per_span {:.0} heap_vs_wire {:.2} rss_per_span {:.0} rss_vs_wire {:.2} sampler_cpu_ns_per_span {:.0}",
            charge as f64 / buffered.max(1) as f64,
            wire as f64 / buffered.max(1) as f64,
            charge as f64 / wire.max(1) as f64,
            heap / buffered.max(1) as f64,
            heap / wire.max(1) as f64,
            peak_rss.saturating_sub(idle_rss) as f64 / buffered.max(1) as f64,
            peak_rss.saturating_sub(idle_rss) as f64 / wire.max(1) as f64,
            sampler_ns as f64 / spans.max(1) as f64,
        );
        if compression != BufferCompression::None {
            let sum = |f: fn(&shardtel_sampler::SamplerStats) -> u64| -> u64 {
                samplers.iter().map(|s| f(s.stats())).sum()
            };
            let (cin, cout, cns) = (
                sum(|s| s.compression_in_bytes),
                sum(|s| s.compression_out_bytes),
                sum(|s| s.compression_nanos),
            );
            let (dn, dbytes, dns, hits) = (
                sum(|s| s.decompressions),
                sum(|s| s.decompressed_bytes),
                sum(|s| s.decompression_nanos),
                sum(|s| s.decompression_cache_hits),
            );
            println!(
                "compression batches {} in {cin} out {cout} ratio {:.3} ns_per_span {:.0} decompressions {dn} bytes {dbytes} ns_per_kept_span {:.0} cache_hits {hits}",
                sum(|s| s.compressed_batches),
                cout as f64 / cin.max(1) as f64,
                cns as f64 / spans.max(1) as f64,
                dns as f64 / kept.max(1) as f64,
            );
        }
    } else {
        println!("mode {mode} spans {spans} kept {kept} scanned {scanned}");
    }
}
