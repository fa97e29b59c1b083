//! Tail sampling under far more traces and bytes than its bounds allow, through the real
//! process: shardtel-loadgen sends traces in pieces over several gRPC connections to a
//! 2-core-or-more shardtel whose sampler may hold 200 traces and 1 MiB per core and waits
//! 10 minutes to decide, so every decision during the run is forced early by a bound. Checks:
//!
//! - peak RSS (`VmHWM`) stays under a bound derived from the configured limits (below);
//! - every trace is accounted for: `traces_received` = Σ `decisions_total` + shutdown drops
//!   + `buffered_traces`, and here every decision is an early one, by a bound;
//! - every span reached the sampler, and the exporter got exactly the kept ones.
//!
//! # The RSS bound
//!
//! With `C` cores, `B` = `max_buffered_bytes_per_core`, `T` = `max_traces_per_core`, `S` =
//! decision cache ids per core, `Q` = mesh `channel_capacity`, `M` = `max_recv_msg_size`, `R` =
//! requests in flight from the client, and `A` = 2 (a request body that arrived in one frame is
//! a slice of the connection's receive buffer, which may be larger):
//!
//! ```text
//! peak RSS ≤ idle RSS + 4·A·C·B          retained request buffers: at most 4 × the charge
//!                     + C·(170·T + 60·S)  trace table slab and decision cache
//!                     + C·(C−1)·Q·A·M     span batches in the mesh channels
//!                     + R·A·M             requests being received
//!                     + 64 MiB            allocator caches (freed pages are returned after a
//!                                         delay), runtime and connection buffers
//! ```
//!
//! Not timing-sensitive: closed-loop load, counts read once the metrics have settled, generous
//! timeouts.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{metric_sum_in, proc_status_kib, wait_until, Shardtel};
use crate::loadgen::{loadgen_bin, output_text};
use crate::test_config::{Component, OnShutdown, Pipeline, Policy, TailSampling};

const MAX_TRACES: u64 = 200;
const MAX_BYTES: u64 = 1 << 20;
const CACHE: u64 = 5_000;
const CHANNEL: u64 = 16;
const MAX_MSG: u64 = 256 << 10;
const CONNECTIONS: u64 = 4;
const CONCURRENCY: u64 = 4;
const REQUESTS: u64 = 10_000;
const SPANS_PER_REQUEST: u64 = 100;
const MIB: u64 = 1 << 20;

fn collector() -> Shardtel {
    let sampler = TailSampling {
        max_traces_per_core: Some(MAX_TRACES),
        max_buffered_bytes_per_core: Some(MAX_BYTES),
        decision_cache: Some(CACHE),
        on_shutdown: Some(OnShutdown::Drop),
        ..TailSampling::new(
            Duration::from_secs(600),
            vec![
                Policy::status_code("errors", &["ERROR"]),
                Policy::probabilistic("baseline", 10),
            ],
        )
    };
    Shardtel::start_config(|c| {
        c.with(|c| {
            c.engine.channel_capacity = Some(CHANNEL);
            c.otlp.max_recv_msg_size = Some(MAX_MSG);
        })
        .processor("tail_sampling", sampler)
        .exporter("blackhole", Component::blackhole())
        .traces(Pipeline::otlp_to(&["blackhole"]).processors(&["tail_sampling"]))
    })
}

#[test]
fn tail_sampling_memory_stays_bounded_and_every_trace_is_accounted_for() {
    let mut st = collector();
    let pid = st.child.as_ref().unwrap().id();
    let cores = {
        let m = st.metrics();
        m.lines()
            .filter(|l| l.starts_with("shardtel_core_info{"))
            .count() as u64
    };
    assert!(cores >= 1, "no cores in /metrics");
    // Transparent huge pages are off in the process (engine/src/main.rs): with them, a touched
    // byte of a buffer held for decision_wait makes a whole 2 MiB page resident.
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(thp) = status.lines().find_map(|l| l.strip_prefix("THP_enabled:")) {
            assert_eq!(thp.trim(), "0", "transparent huge pages are on in shardtel");
        }
    }
    let idle_kib = proc_status_kib(pid, "VmRSS");

    // Sample VmRSS while the load runs (VmHWM gives the peak; the samples go in the message).
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let running = running.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while running.load(Ordering::Relaxed) {
                samples.push(proc_status_kib(pid, "VmRSS") / 1024);
                std::thread::sleep(Duration::from_millis(250));
            }
            samples
        })
    };
    let out = Command::new(loadgen_bin())
        .args(["-p", "grpc", "-e", &st.grpc_url()])
        .args(["--connections", &CONNECTIONS.to_string()])
        .args(["--concurrency", &CONCURRENCY.to_string()])
        .args(["--count", &REQUESTS.to_string()])
        .args(["--spans-per-request", &SPANS_PER_REQUEST.to_string()])
        .args(["--split-traces", "--timeout", "60s", "-q"])
        .output()
        .unwrap();
    running.store(false, Ordering::Relaxed);
    let rss_samples = sampler.join().unwrap();
    let report = output_text(&out);
    assert!(
        out.status.success(),
        "loadgen failed:\n{report}\nshardtel log:\n{}",
        st.log()
    );
    let sent = REQUESTS * SPANS_PER_REQUEST;
    assert!(
        report.contains(&format!("acknowledged {sent}")),
        "not every span was acknowledged:\n{report}"
    );

    // Counters settle once every core has published after the last span (once a second).
    let mut metrics = String::new();
    assert!(
        wait_until(60, || {
            metrics = st.metrics();
            metric_sum_in(&metrics, "shardtel_sampler_spans_received_total", "") == sent
        }),
        "the sampler saw {} of {sent} spans; log:\n{}",
        metric_sum_in(&metrics, "shardtel_sampler_spans_received_total", ""),
        st.log()
    );
    std::thread::sleep(Duration::from_millis(2500));
    let m = st.metrics();
    let hwm_kib = proc_status_kib(pid, "VmHWM");

    // Every trace is accounted for, and every decision was forced by a bound.
    let received = metric_sum_in(&m, "shardtel_sampler_traces_received_total", "");
    let decided = metric_sum_in(&m, "shardtel_sampler_decisions_total", "");
    let by = |reason: &str| {
        metric_sum_in(
            &m,
            "shardtel_sampler_decisions_total",
            &format!("reason=\"{reason}\""),
        )
    };
    let early = by("max_traces")
        + by("max_buffered_bytes")
        + by("max_spans_per_trace")
        + by("max_bytes_per_trace");
    let buffered = metric_sum_in(&m, "shardtel_sampler_buffered_traces", "");
    let dropped = metric_sum_in(&m, "shardtel_sampler_shutdown_dropped_traces_total", "");
    assert_eq!(
        received,
        decided + dropped + buffered,
        "traces unaccounted for:\n{m}"
    );
    assert_eq!(
        early + buffered,
        received,
        "every decision is early here:\n{m}"
    );
    assert!(
        received > 10 * cores * MAX_TRACES,
        "only {received} traces: the test must drive far more than max_traces_per_core"
    );
    assert!(
        by("max_traces") + by("max_buffered_bytes") > 10 * cores * MAX_TRACES,
        "the per-core bounds should have forced most decisions:\n{m}"
    );
    for line in m
        .lines()
        .filter(|l| l.starts_with("shardtel_sampler_buffered_bytes{"))
    {
        let v: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(v <= MAX_BYTES, "over max_buffered_bytes_per_core: {line}");
    }
    // The exporter got the kept spans: sampled at decision time plus late ones forwarded.
    let kept = metric_sum_in(&m, "shardtel_sampler_spans_total", "decision=\"sampled\"")
        + metric_sum_in(
            &m,
            "shardtel_sampler_late_spans_total",
            "decision=\"forwarded\"",
        );
    assert!(kept > 0);
    assert_eq!(
        metric_sum_in(
            &m,
            "shardtel_exporter_sent_spans_total",
            "exporter=\"blackhole\""
        ),
        kept,
        "exported spans differ from the kept ones:\n{m}"
    );

    // The RSS bound (see the module docs).
    let a = 2;
    let retained = 4 * a * cores * MAX_BYTES;
    let tables = cores * (170 * MAX_TRACES + 60 * 2 * CACHE);
    let mesh = cores * cores.saturating_sub(1) * CHANNEL * a * MAX_MSG;
    let receiving = CONNECTIONS * CONCURRENCY * a * MAX_MSG;
    let bound_kib = idle_kib + (retained + tables + mesh + receiving + 64 * MIB) / 1024;
    // loadgen's default spans are about 400 bytes on the wire.
    let driven_mib = sent * 400 / MIB;
    eprintln!(
        "sampling memory: {cores} cores, idle {} MiB, peak {} MiB, bound {} MiB \
         ({driven_mib} MiB of spans driven, {received} traces, decided early: {} by \
         max_traces, {} by max_buffered_bytes)",
        idle_kib / 1024,
        hwm_kib / 1024,
        bound_kib / 1024,
        by("max_traces"),
        by("max_buffered_bytes"),
    );
    assert!(
        hwm_kib <= bound_kib,
        "peak RSS {} MiB over the bound {} MiB (idle {} MiB; samples {:?} MiB)",
        hwm_kib / 1024,
        bound_kib / 1024,
        idle_kib / 1024,
        rss_samples
    );
    // The load was far more than the bound: a sampler that kept what it was sent would break it.
    assert!(driven_mib * 1024 > 2 * (bound_kib - idle_kib));
    assert_eq!(st.stop(), 0);
}
